//! A heap's large slot: the one freed large mapping its owner keeps for its
//! next large allocation (see [`crate::large`]), and the handshake that lets
//! other threads steal it.
//!
//! The owner takes and puts with plain loads and stores. A thread that
//! steals (the purger on each full pass, or a `collect`) pays instead, with the
//! heavy side of an asymmetric fence: `membarrier(2)`, which makes every
//! running thread of the process pass a full memory barrier before it
//! returns. The owner's side of the fence is a compiler fence: it keeps the
//! owner's accesses in program order against that barrier and costs nothing
//! at run time. With an atomic swap on the owner's every take and put, a
//! 64 KiB or 1 MiB alloc/free pair took 16.2 ns on the Intel VM, against
//! glibc's 15.4; an uncontended swap costs 6 ns there.
//!
//! ```text
//! take (owner)                          steal (any thread)
//!   busy = true                           gate += CLAIM
//!   light fence                           heavy fence
//!   if gate == 0:                         seen = slot
//!       base = slot; slot = 0             wait while busy
//!   else: base = swap(slot, 0)            cas(slot, seen -> 0)
//!   busy = false                          gate -= CLAIM
//! ```
//!
//! Dekker's argument, with a fence between each side's store and its load:
//! either the stealer sees `busy` and waits for the take to end, or the
//! owner sees the claim and swaps, so both sides empty the slot with
//! read-modify-writes and only one gets the mapping. Only the owner fills
//! a slot and stealers only empty it, so the owner's put is a plain store
//! that no steal can lose. What a put must not lose is the purger's
//! attention: the owner stores the mapping, fences (light), and loads the
//! purger's state (`decay::note_dirty`); the purger stores IDLE before its
//! pass, and a steal's heavy fence comes between that store and its look
//! at the slot. So either the pass sees the mapping, or the owner sees the
//! purger idle and wakes it.
//!
//! Where `membarrier` is refused (a kernel before 4.14, a seccomp filter, an
//! emulator) the gate stays closed and owners swap, the put's swap SeqCst
//! against the purger's SeqCst store and load. The first steal's answer
//! stands (seccomp filters may differ from thread to thread). If
//! `membarrier` fails after it has worked (`ENOMEM` on some kernels, or a
//! filter installed since), the stealer closes the gate for good and waits
//! a millisecond before it looks at a slot, for the owners that read the
//! gate open just before to finish their takes: a practical bound, not a
//! formal one. `tests/large_slot.rs` reaches that path with a seccomp
//! filter installed after registration. A forked child closes the gate
//! until its first steal registers the process again.
//!
//! Loom models the handshake (`remote/loom_tests.rs`) with the gate open,
//! refused, and opened by the first steal, `membarrier` as a SeqCst fence on
//! each side: what it guarantees between the light and the heavy side
//! (loom's SeqCst fence is stronger than the compiler fence against other
//! fences, which the protocol does not rely on). Loom orders a location's
//! stores as they execute, so it cannot catch a missing Release or Acquire
//! on `busy` (tried: Relaxed on both passes); that pair is checked by
//! argument only: the stealer's compare-and-swap must come after the
//! owner's `slot = 0` in the slot's modification order.

use crate::sync::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// One freed mapping's base (0 when empty), and what the statistics read.
pub struct LargeSlot {
    /// The mapping's base, or 0 when empty.
    base: AtomicUsize,
    /// The owner is inside [`take`](Self::take): stealers wait.
    busy: AtomicBool,
    /// A copy of the mapping's size, for the statistics only (a reader
    /// racing a take and a put may pair it with the other mapping's base).
    map_size: AtomicUsize,
    /// Allocations the slot served. Written by the owner alone.
    hits: AtomicUsize,
}

impl LargeSlot {
    #[cfg(not(all(test, loom)))]
    pub const fn new() -> Self {
        Self {
            base: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            map_size: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
        }
    }

    #[cfg(all(test, loom))]
    pub fn new() -> Self {
        Self {
            base: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            map_size: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
        }
    }

    /// Empties the slot: its mapping's base, or 0. Owner only.
    #[inline]
    pub fn take(&self, gate: &SlotGate) -> usize {
        // Look first: a miss then writes nothing.
        if self.base.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.busy.store(true, Ordering::Relaxed);
        light_fence();
        let base = if gate.is_open() {
            // No stealer swaps until `busy` clears (module docs).
            let base = self.base.load(Ordering::Relaxed);
            self.base.store(0, Ordering::Relaxed);
            base
        } else {
            self.base.swap(0, Ordering::Acquire)
        };
        // Release: a stealer that sees the take over sees the slot empty.
        self.busy.store(false, Ordering::Release);
        base
    }

    /// Fills the empty slot with the mapping at `base` (`map_size` bytes);
    /// false if the slot is full. The caller then calls
    /// `decay::note_dirty`, whose load of the purger's state this orders
    /// after the store. Owner only.
    #[inline]
    pub fn put(&self, gate: &SlotGate, base: usize, map_size: usize) -> bool {
        debug_assert_ne!(base, 0);
        if self.base.load(Ordering::Relaxed) != 0 {
            return false;
        }
        self.map_size.store(map_size, Ordering::Relaxed);
        if gate.is_open() {
            // Release: a stealer reads the mapping's first word.
            self.base.store(base, Ordering::Release);
        } else {
            self.base.swap(base, Ordering::SeqCst);
        }
        // Closed for a steal under way, the gate still has the fence
        // registered, so the heavy fence orders the swap as it would the
        // store (and the swap is SeqCst for when it is not registered).
        light_fence();
        true
    }

    /// Empties the slot with a swap, for its owner outside `take` (at thread
    /// exit): 0 if it was empty.
    pub fn take_own(&self) -> usize {
        self.base.swap(0, Ordering::Acquire)
    }

    /// Counts an allocation the slot served. Owner only.
    #[inline]
    pub fn note_hit(&self) {
        self.hits.store(self.hits.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// For the statistics: the bytes the slot holds now (0 or one mapping's
    /// size, possibly a moment old) and the allocations it served.
    pub fn read(&self) -> (usize, usize) {
        let held = if self.base.load(Ordering::Acquire) != 0 { self.map_size.load(Ordering::Relaxed) } else { 0 };
        (held, self.hits.load(Ordering::Relaxed))
    }

    /// In a forked child: the parent's other threads, whose takes may have
    /// been under way, do not exist here.
    pub fn reset_after_fork(&self) {
        self.busy.store(false, Ordering::Relaxed);
    }
}

/// The gate's word: `UNREADY`, plus `CLAIM` per steal under way. Owners use
/// plain stores only when it is 0.
const UNREADY: u32 = 1;
const CLAIM: u32 = 2;

/// `membarrier` registration, tried by the first steal. The first answer
/// stands.
const FENCE_UNTRIED: u32 = 0;
const FENCE_READY: u32 = 1;
const FENCE_REFUSED: u32 = 2;

/// What decides between the owners' plain path and their swaps: closed
/// while `membarrier` is not registered, and while a steal is under way.
pub struct SlotGate {
    word: AtomicU32,
    fence: AtomicU32,
}

/// How a model's gate starts.
#[cfg(all(test, loom))]
#[derive(Clone, Copy, Debug)]
pub enum ModelFence {
    /// Registered, the gate open.
    Registered,
    /// Refused for good, the gate closed.
    Refused,
    /// Not tried: the first steal registers and opens the gate.
    AtFirstSteal,
}

impl SlotGate {
    /// Closed, `membarrier` not yet tried.
    #[cfg(not(all(test, loom)))]
    pub const fn new() -> Self {
        Self { word: AtomicU32::new(UNREADY), fence: AtomicU32::new(FENCE_UNTRIED) }
    }

    #[cfg(all(test, loom))]
    pub fn new(fence: ModelFence) -> Self {
        let (word, fence) = match fence {
            ModelFence::Registered => (0, FENCE_READY),
            ModelFence::Refused => (UNREADY, FENCE_REFUSED),
            ModelFence::AtFirstSteal => (UNREADY, FENCE_UNTRIED),
        };
        Self { word: AtomicU32::new(word), fence: AtomicU32::new(fence) }
    }

    /// Acquire (a plain load on x86): an owner that sees a steal's claim
    /// dropped sees what the steal did to its slot.
    #[inline]
    fn is_open(&self) -> bool {
        self.word.load(Ordering::Acquire) == 0
    }

    /// Closes the gate for a steal (see the module docs); the claim reopens
    /// it when dropped. Slow path: a system call.
    pub fn claim(&self) -> Claim<'_> {
        self.word.fetch_add(CLAIM, Ordering::SeqCst);
        if self.fence_state() == FENCE_READY {
            // Owners see the claim, not an open gate, until it is dropped.
            if self.word.load(Ordering::Relaxed) & UNREADY != 0 {
                self.word.fetch_and(!UNREADY, Ordering::Relaxed);
            }
            if !heavy_fence() {
                self.give_up_fence();
            }
        }
        Claim { gate: self }
    }

    /// The registration's outcome; the first call registers. A racing call
    /// that got another answer takes the first one.
    fn fence_state(&self) -> u32 {
        let state = self.fence.load(Ordering::Acquire);
        if state != FENCE_UNTRIED {
            return state;
        }
        let tried = if register_fence() { FENCE_READY } else { FENCE_REFUSED };
        match self.fence.compare_exchange(FENCE_UNTRIED, tried, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => tried,
            Err(first) => first,
        }
    }

    /// `membarrier` failed after it had worked: closes the gate for good
    /// and gives owners that read it open a moment to finish (module docs).
    #[cold]
    fn give_up_fence(&self) {
        self.fence.store(FENCE_REFUSED, Ordering::Release);
        self.word.fetch_or(UNREADY, Ordering::SeqCst);
        #[cfg(not(all(test, loom)))]
        crate::os::sleep_ms(1);
    }

    /// True once `membarrier` is registered and has not failed since: the
    /// gate opens between steals, so owners take and put with plain stores.
    pub fn fence_registered(&self) -> bool {
        self.fence.load(Ordering::Relaxed) == FENCE_READY
    }

    /// In a forked child (one thread, no steal under way): closed until the
    /// next steal registers the child's `membarrier`. Every slot's
    /// [`LargeSlot::reset_after_fork`] goes with it.
    #[cfg(not(all(test, loom)))]
    pub fn reset_after_fork(&self) {
        self.word.store(UNREADY, Ordering::Relaxed);
        self.fence.store(FENCE_UNTRIED, Ordering::Relaxed);
    }
}

/// A steal under way; dropping it reopens the gate.
pub struct Claim<'a> {
    gate: &'a SlotGate,
}

impl Claim<'_> {
    /// Empties `slot`, whoever owns it: its mapping's base, or 0.
    pub fn steal(&self, slot: &LargeSlot) -> usize {
        // SeqCst: the gate-closed side of the put's wake-up (module docs).
        let mut base = slot.base.load(Ordering::SeqCst);
        while base != 0 {
            if slot.busy.load(Ordering::Acquire) {
                wait_for_owner();
                base = slot.base.load(Ordering::Relaxed);
                continue;
            }
            // A compare-and-swap, not a swap: a steal that finds the slot
            // emptied meanwhile writes nothing.
            match slot.base.compare_exchange(base, 0, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return base,
                Err(now) => base = now,
            }
        }
        0
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.gate.word.fetch_sub(CLAIM, Ordering::Release);
    }
}

/// The owner's side of the asymmetric fence.
#[inline(always)]
fn light_fence() {
    #[cfg(not(all(test, loom)))]
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    #[cfg(all(test, loom))]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// The stealer's side; false if `membarrier` failed.
fn heavy_fence() -> bool {
    #[cfg(not(all(test, loom)))]
    return crate::os::membarrier();
    #[cfg(all(test, loom))]
    {
        loom::sync::atomic::fence(Ordering::SeqCst);
        true
    }
}

fn register_fence() -> bool {
    #[cfg(not(all(test, loom)))]
    return crate::os::membarrier_register();
    // The models that start untried register at the first steal.
    #[cfg(all(test, loom))]
    true
}

/// A take is a handful of instructions, but its thread may be preempted.
fn wait_for_owner() {
    #[cfg(not(all(test, loom)))]
    crate::os::yield_now();
    #[cfg(all(test, loom))]
    loom::thread::yield_now();
}
