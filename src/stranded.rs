//! Stranded pools: pools whose every block other threads have freed while
//! their owner is not coming back for them.
//!
//! Only a pool's owner takes back the blocks other threads free to it (see
//! `remote`), in its slow paths. A thread that hands its blocks to others
//! and then blocks (in `join`, on a channel, on a lock) keeps them all,
//! free and resident, for as long as it waits: compare/'s larson has four
//! such threads, which held about 2 MiB so. No other thread may take the
//! pool over, since its owner can run again at any moment; but its pages
//! hold nothing anyone needs, so the purger purges them in place and the
//! pool stays with its owner, which carves it afresh when it comes back.
//!
//! How the purger finds them: the freer whose push makes a pool's remote
//! list hold every block marks the list complete and reports the pool in
//! a ring ([`note_complete`]), which the purger drains. It marks a
//! complete list seen, and purges the pool on a later pass if the list is
//! still untaken then, one stranded delay (10 ms) or more after (see
//! `Pool::mark_stranded` for why twice). The claim, the purge and the
//! hand-back happen under the arena lock (`arena::purge_stranded`), which
//! keeps a reported pool's arena mapped while the purger looks, and which
//! `fork` takes, so a child never inherits a purge half done.
//!
//! A ring, not a walk over every arena: a producer whose consumer frees
//! everything makes its pools complete all the time, so the purger keeps
//! looking while it runs, and each look must cost little whatever the heap's
//! size. A report the ring overwrites before the purger drains it is lost:
//! that pool stays resident until its owner comes back.

use crate::pool::Pool;
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};
use core::ptr;

/// Reports the ring holds (a power of two).
const RING_SLOTS: usize = 512;
/// Pools marked seen that the purger looks at again on its next pass.
pub const SEEN_SLOTS: usize = 256;

static RING: [AtomicPtr<Pool>; RING_SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; RING_SLOTS];
static RING_NEXT: AtomicUsize = AtomicUsize::new(0);

/// Reports `pool`, whose remote list a push just made complete, to the
/// purger.
pub fn note_complete(pool: &Pool) {
    let slot = RING_NEXT.fetch_add(1, Ordering::Relaxed) % RING_SLOTS;
    // SeqCst: see `decay::note_stranded`.
    RING[slot].store(ptr::from_ref(pool).cast_mut(), Ordering::SeqCst);
    crate::decay::note_stranded();
}

/// Takes every report off the ring, passing each pool to `visit`. The
/// pointers may be stale: the caller checks that each is still a live
/// descriptor before it looks at it.
pub fn drain_reports(mut visit: impl FnMut(*const Pool)) {
    for slot in &RING {
        // SeqCst: see `decay::note_stranded`. A load first: most slots are
        // empty, and a swap would write every line of the ring.
        if slot.load(Ordering::SeqCst).is_null() {
            continue;
        }
        let pool = slot.swap(ptr::null_mut(), Ordering::SeqCst);
        if !pool.is_null() {
            visit(pool);
        }
    }
}

/// The pools the purger marked seen, for its next pass. Kept under the
/// arena lock.
pub struct Seen {
    pools: [*const Pool; SEEN_SLOTS],
    len: usize,
}

impl Seen {
    pub const fn new() -> Self {
        Self { pools: [ptr::null(); SEEN_SLOTS], len: 0 }
    }

    /// Takes the list, leaving it empty.
    pub fn take(&mut self) -> ([*const Pool; SEEN_SLOTS], usize) {
        (self.pools, core::mem::replace(&mut self.len, 0))
    }

    /// Adds a pool; false if the list is full.
    pub fn push(&mut self, pool: *const Pool) -> bool {
        if self.len == SEEN_SLOTS {
            return false;
        }
        self.pools[self.len] = pool;
        self.len += 1;
        true
    }

    /// True if no pool waits for a second look.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if the list has no room.
    pub fn is_full(&self) -> bool {
        self.len == SEEN_SLOTS
    }
}
