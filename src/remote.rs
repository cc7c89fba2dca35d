//! The cross-thread free protocol's shared structure: a heap's pending list,
//! the pools whose remote lists went from empty to non-empty since the owner
//! last looked. Together with [`Pool::push_remote_chain`],
//! [`Pool::take_remote`] and the purger's claim on a stranded pool's list
//! (`Pool::claim_stranded`) this is the lock-free code of the remote frees,
//! kept small so that it can be model-checked (see `ci/loom.sh`).
//!
//! Protocol, for a block `b` of pool `P` owned by heap `H`:
//! 1. a non-owner pushes `b` on `P.remote` (CAS); if the list was empty it
//!    pushes `P` on `H.pending` (CAS). So `P` is on `H.pending` at most once
//!    for each time its remote list fills.
//! 2. the owner takes `H.pending` whole (swap); for each pool it reads the
//!    link first, then takes `P.remote` whole (swap). From then on a freer
//!    may push `P` again, which rewrites the link the owner already read.
//!
//! 3. if a push makes `P.remote` hold every block of `P`, the purger may
//!    claim the list on a later pass (`Pool::claim_stranded`), purge the
//!    blocks' pages and leave a list-less word that says every block is
//!    back; an owner swap that finds the claim takes nothing, and the
//!    purger then pushes `P` on `H.pending` again itself, as a push to an
//!    empty list would (see the `stranded` module).
//!
//! `b` counts as out of `P` until step 2, so `P` cannot be retired, and its
//! owner cannot change, while a free of one of its blocks is under way.

use crate::pool::Pool;
use crate::sync::{AtomicPtr, Ordering};
use core::ptr;

/// A Treiber stack of pools linked through `Pool::next_pending`; pushed by
/// any thread, taken whole by the owner (so there is no ABA).
pub struct PendingList {
    head: AtomicPtr<Pool>,
}

impl PendingList {
    /// An empty list.
    #[cfg(not(all(test, loom)))]
    pub const fn new() -> Self {
        Self { head: AtomicPtr::new(ptr::null_mut()) }
    }

    /// An empty list.
    #[cfg(all(test, loom))]
    pub fn new() -> Self {
        Self { head: AtomicPtr::new(ptr::null_mut()) }
    }

    /// Pushes `pool`, whose remote list just went from empty to non-empty.
    pub fn push(&self, pool: &Pool) {
        let pool_ptr = ptr::from_ref(pool).cast_mut();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            pool.next_pending.store(head, Ordering::Relaxed);
            // AcqRel: Release publishes the link; Acquire orders whatever the
            // caller reads next after an owner's earlier take of this list.
            match self.head.compare_exchange_weak(head, pool_ptr, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// True if no pool is on the list. A read-modify-write, not a load: a
    /// push it misses comes after it in the list's order and so sees what
    /// the caller wrote before (an idle heap's flag), which a plain load
    /// would not guarantee (see the loom model of the hand-over).
    pub fn is_empty(&self) -> bool {
        self.head.compare_exchange(ptr::null_mut(), ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Takes every pool off the list. Owner only.
    pub fn take_all(&self) -> TakenPools {
        // A load first: the list is mostly empty when the refill path looks,
        // and on x86 the swap is a full barrier that waits for every store in
        // flight, such as a memset of a cold block just handed out. A push
        // the load misses is taken next time; the idle hand-over does not
        // rely on this (see `is_empty`).
        if self.head.load(Ordering::Relaxed).is_null() {
            return TakenPools { next: ptr::null_mut() };
        }
        TakenPools { next: self.head.swap(ptr::null_mut(), Ordering::AcqRel) }
    }
}

/// The pools taken by [`PendingList::take_all`]. Each pool's link is read
/// before the pool is yielded, so the caller may take its remote list (after
/// which other threads may push the pool again) before asking for the next.
pub struct TakenPools {
    next: *mut Pool,
}

impl Iterator for TakenPools {
    type Item = *mut Pool;

    fn next(&mut self) -> Option<*mut Pool> {
        let pool = self.next;
        if pool.is_null() {
            return None;
        }
        // SAFETY: pools on a pending list are live pools of the list's heap.
        self.next = unsafe { (*pool).next_pending.load(Ordering::Relaxed) };
        Some(pool)
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
