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
//! size. Reports are lost in three cases, each leaving its pool resident
//! until its owner comes back: a ring crowded around a report's slot
//! ([`note_complete`]), two freers storing to one slot at once, and a pool
//! that never becomes complete because its owner took some of its blocks
//! back before the others came (a producer that allocates, takes remote
//! frees back and allocates again before it blocks). Reports the seen list
//! has no room for stay in the ring for the next pass.

use crate::pool::Pool;
use crate::sync::{AtomicPtr, Ordering};
use core::ptr;

/// Reports the ring holds.
const RING_BITS: u32 = 11;
const RING_SLOTS: usize = 1 << RING_BITS;
/// Slots a report tries, from its hashed one, for an empty one (or its own).
const RING_PROBES: usize = 8;
/// Pools marked seen that the purger looks at again on its next pass.
const SEEN_SLOTS: usize = 1024;

static RING: [AtomicPtr<Pool>; RING_SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; RING_SLOTS];

/// Reports `pool`, whose remote list a push just made complete, to the
/// purger: plain loads and a plain store to the ring, and a plain load of
/// the purger's flag (see `decay::note_stranded`). The slot is the first
/// empty one (or the pool's own, from an earlier report) of a few from a
/// hash of the descriptor's address, so freers share no counter; if all
/// are taken the report overwrites the first, and the pool it held goes
/// unreported. Two freers that store to one slot at once lose one report
/// too.
pub fn note_complete(pool: &Pool) {
    let pool = ptr::from_ref(pool).cast_mut();
    // Descriptors are 128 bytes apart: hash from bit 7 up.
    let home = (((pool as usize >> 7) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RING_BITS)) as usize;
    let slot = (0..RING_PROBES)
        .map(|i| &RING[(home + i) & (RING_SLOTS - 1)])
        .find(|slot| {
            let held = slot.load(Ordering::Relaxed);
            held.is_null() || held == pool
        })
        .unwrap_or(&RING[home]);
    slot.store(pool, Ordering::Relaxed);
    crate::decay::note_stranded();
}

/// The purger's state between passes, kept under the arena lock: the
/// pools it marked seen, and whether it is watching.
pub struct Seen {
    pools: [*const Pool; SEEN_SLOTS],
    len: usize,
    /// Whether the purger looks at the reports every stranded delay
    /// (`decay::watch_stranded`).
    watching: bool,
    /// How long the purger waits between looks while it watches (ms; see
    /// `plan_next_look`).
    interval_ms: u64,
}

/// The most the interval between looks grows, as a multiple of the
/// stranded delay (10 ms to 160 ms by default).
///
/// Why it grows: a producer whose consumer frees everything reports a pool
/// every 100 or so blocks, and takes each back within microseconds, so
/// every pool the purger marks is gone by its second look, and the purger
/// would wake 100 times a second for nothing, taking a CPU from one of the
/// two (under strace, 84 timed sleeps in a prodcons run against 19 with
/// the back-off). On time the evidence is weak: with a fixed 10 ms,
/// compare/'s prodcons took 0.2142 s against 0.2065 before stranded pools
/// (medians of 40 alternating runs), but 0.2145 against 0.2149 in the
/// next 30. A fixed 50 ms gave 0.2046 in the first set, but left larson's
/// peak RSS at 11036 KiB against 10196 (10 runs each); with the back-off,
/// larson's purges keep the 10 ms (its second looks purge).
const MAX_BACK_OFF: u64 = 16;

/// What the purger does next about stranded pools.
pub struct NextLook {
    /// When to look again, if at all.
    pub next_look: Option<u64>,
    /// Whether freers' reports need not wake it meanwhile.
    pub watching: bool,
}

impl Seen {
    pub const fn new() -> Self {
        Self { pools: [ptr::null(); SEEN_SLOTS], len: 0, watching: false, interval_ms: 0 }
    }

    /// Takes the freers' reports off the ring while the list has room,
    /// listing each pool `mark` marks seen; the rest wait in the ring for
    /// the next pass. Returns how many it took. The pointers may be stale:
    /// `mark` checks that each is still a live descriptor before it looks.
    pub fn take_reports(&mut self, mut mark: impl FnMut(*const Pool) -> bool) -> usize {
        crate::decay::acquire_stranded_reports();
        let mut reports = 0;
        for slot in &RING {
            if self.is_full() {
                break;
            }
            // A load first: most slots are empty, and a swap would write
            // every line of the ring.
            if slot.load(Ordering::Relaxed).is_null() {
                continue;
            }
            let pool = slot.swap(ptr::null_mut(), Ordering::Relaxed);
            if pool.is_null() {
                continue;
            }
            reports += 1;
            if mark(pool) {
                self.push(pool);
            }
        }
        reports
    }

    /// After a pass that looked again at `seen` pools (purging `purged`)
    /// and took `reports` reports: when to look next, and whether to watch
    /// meanwhile (telling freers through `decay::watch_stranded`).
    ///
    /// While reports come or pools wait for a second look, the purger
    /// watches: it looks again one interval later (the stranded delay,
    /// doubled after each look at seen pools that purged none, up to
    /// `MAX_BACK_OFF` times; a new episode starts short again), and freers
    /// do not wake it. When a look finds neither, it stops watching, and
    /// looks once more an interval later, for the reports of freers that
    /// read the flag still set.
    pub fn plan_next_look(&mut self, now: u64, seen: usize, purged: usize, reports: usize) -> NextLook {
        let delay = crate::decay::stranded_delay_ms();
        self.interval_ms = if purged > 0 || self.interval_ms == 0 || !self.watching {
            delay
        } else if seen > 0 {
            (self.interval_ms * 2).min(delay * MAX_BACK_OFF)
        } else {
            self.interval_ms
        };
        let look_again = Some(now.saturating_add(self.interval_ms));
        let was_watching = self.watching;
        self.watching = reports > 0 || !self.is_empty();
        let next_look = if self.watching {
            crate::decay::watch_stranded(true);
            look_again
        } else if crate::decay::stop_watching_stranded() && !was_watching {
            // A freer set the flag since the drain (its report may have
            // come after it): look again at once.
            Some(now)
        } else if was_watching {
            // Freers that read the flag still set did not wake the purger.
            look_again
        } else {
            None
        };
        NextLook { next_look, watching: self.watching }
    }

    /// In a forked child: its purger starts afresh, so freers must wake it.
    pub fn stop_watching(&mut self) {
        self.watching = false;
    }

    /// Takes up to `BATCH` pools off the list (the last ones): the purger
    /// looks at them in the same hold of the arena lock, so a fork never
    /// sees a pool off the list but not yet looked at.
    pub fn take_batch<const BATCH: usize>(&mut self) -> ([*const Pool; BATCH], usize) {
        let mut batch = [ptr::null(); BATCH];
        let mut taken = 0;
        while taken < BATCH && self.len > 0 {
            self.len -= 1;
            if let (Some(slot), Some(&pool)) = (batch.get_mut(taken), self.pools.get(self.len)) {
                *slot = pool;
                taken += 1;
            }
        }
        (batch, taken)
    }

    /// Adds a pool to a list with room (a list without drops it).
    fn push(&mut self, pool: *const Pool) {
        if let Some(slot) = self.pools.get_mut(self.len) {
            *slot = pool;
            self.len += 1;
        }
    }

    /// True if no pool waits for a second look.
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if the list has no room.
    fn is_full(&self) -> bool {
        self.len == SEEN_SLOTS
    }
}
