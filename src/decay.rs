//! When freed memory goes back to the OS: the settings, the clock, and the
//! wake-up of the background purger.
//!
//! Freed memory is not returned at once (that would make every phase change
//! pay `madvise` and page faults again). Free pools, pools heaps keep and
//! cached large mappings are marked dirty with the time; once they have
//! stayed unused for the purge delay they are purged (`MADV_DONTNEED`) or
//! unmapped. Who purges:
//! - the background purger, a thread started the first time memory becomes
//!   dirty, which sleeps on a futex while nothing is dirty (an idle process
//!   with nothing to return costs no wake-ups), and otherwise wakes when the
//!   oldest dirty memory comes due;
//! - without it (`POOLMALLOC_BACKGROUND_PURGE=0`, or if the thread could not
//!   start), the arena and large-allocation slow paths, which check the clock
//!   and purge what is due; an idle process then keeps its memory until its
//!   next slow path or [`collect`](crate::collect).
//!
//! Stranded pools (every block freed by other threads while their owner is
//! away; see [`stranded`](crate::stranded)) are purged by the purger only,
//! after a shorter delay: a freer's report wakes it unless it is watching
//! already ([`note_stranded`]).
//!
//! The purger's loop is in [`purger`](crate::purger); this module only knows
//! its entry point, to start it.
//!
//! Settings are read once from the environment with `getenv` (no allocation):
//! - `POOLMALLOC_PURGE_DELAY_MS` (default 1000): how long memory stays unused
//!   before it is returned;
//! - `POOLMALLOC_LARGE_CACHE_MB` (default 64): the most bytes of freed large
//!   mappings kept for reuse in the shared cache (0 disables it and the
//!   per-thread slots); each thread may also keep one mapping of up to half
//!   that in its slot;
//! - `POOLMALLOC_BACKGROUND_PURGE` (default 1): 0 disables the purger thread;
//! - `POOLMALLOC_HUGE_PAGES` (default 1): once the heap passes 16 MiB, the
//!   2 MiB chunks arenas are cut from are advised for transparent huge pages
//!   while their first faults stay fast (1), always (2), or never (0); with
//!   1 and 2 the chunks mapped before are collapsed into huge pages then,
//!   and large mappings from 4 MiB are advised too (with 1, by the same
//!   probe); 0 advises chunks and fresh or grown large mappings from 4 MiB
//!   against them.

use crate::os;
use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Default purge delay. mimalloc v2 uses 10 ms, v3 1 s; jemalloc decays over
/// 10 s. At 100 ms a program that allocates and frees 1.6 GiB in a loop
/// (compare/ micro, batch_1_32768) had its arenas purged between rounds and
/// paid the page faults every round: 222 ms a round against mimalloc's 26.
/// At 1 s it runs in 28 ms, and an idle process still shrinks within about
/// a second.
const DEFAULT_PURGE_DELAY_MS: u64 = 1000;
const DEFAULT_LARGE_CACHE_MB: u64 = 64;

/// The settings, read once.
pub struct Settings {
    /// Milliseconds memory stays unused before it is purged.
    pub purge_delay_ms: u64,
    /// Bytes of freed large mappings the cache may hold.
    pub large_cache_bytes: usize,
    /// Whether to run the background purger.
    pub background: bool,
    /// Whether big heaps get arenas in huge-page chunks (see `arena`).
    pub huge_pages: HugePages,
}

static PURGE_DELAY_MS: AtomicU64 = AtomicU64::new(u64::MAX);
static LARGE_CACHE_BYTES: AtomicUsize = AtomicUsize::new(0);
static BACKGROUND: AtomicU32 = AtomicU32::new(0);
static HUGE_PAGES: AtomicU32 = AtomicU32::new(0);

/// The settings (read from the environment on first use).
pub fn settings() -> Settings {
    let mut delay = PURGE_DELAY_MS.load(Ordering::Acquire);
    if delay == u64::MAX {
        // Racing first readers compute the same values; the last store wins.
        let cache_mb = os::env_u64(c"POOLMALLOC_LARGE_CACHE_MB").unwrap_or(DEFAULT_LARGE_CACHE_MB);
        LARGE_CACHE_BYTES.store((cache_mb.min(1 << 20) as usize) << 20, Ordering::Relaxed);
        let background = os::env_u64(c"POOLMALLOC_BACKGROUND_PURGE").unwrap_or(1) != 0;
        BACKGROUND.store(u32::from(background), Ordering::Relaxed);
        let huge_pages = os::env_u64(c"POOLMALLOC_HUGE_PAGES").unwrap_or(1).min(2) as u32;
        HUGE_PAGES.store(huge_pages, Ordering::Relaxed);
        delay = os::env_u64(c"POOLMALLOC_PURGE_DELAY_MS").unwrap_or(DEFAULT_PURGE_DELAY_MS).min(u64::MAX / 4);
        PURGE_DELAY_MS.store(delay, Ordering::Release);
    }
    Settings {
        purge_delay_ms: delay,
        large_cache_bytes: LARGE_CACHE_BYTES.load(Ordering::Relaxed),
        background: BACKGROUND.load(Ordering::Relaxed) != 0,
        huge_pages: match HUGE_PAGES.load(Ordering::Relaxed) {
            0 => HugePages::Off,
            1 => HugePages::Probed,
            _ => HugePages::Always,
        },
    }
}

/// When the chunks arenas come from are advised for transparent huge pages
/// (`POOLMALLOC_HUGE_PAGES`; see `arena::map_chunk`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HugePages {
    /// Never: 4 KiB pages.
    Off,
    /// Past 16 MiB, while huge-page faults stay fast.
    Probed,
    /// Past 16 MiB, always.
    Always,
}

/// `settings().large_cache_bytes`, with one load once the settings are read
/// (the large free path asks on every free).
#[inline]
pub fn large_cache_bytes() -> usize {
    if PURGE_DELAY_MS.load(Ordering::Acquire) == u64::MAX {
        return settings().large_cache_bytes;
    }
    LARGE_CACHE_BYTES.load(Ordering::Relaxed)
}

/// Milliseconds on the monotonic clock.
pub fn now_ms() -> u64 {
    os::now_ms()
}

/// The earlier of two optional due times (ms); `None` means never.
pub fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Purger state: 0 = not started, 1 = running or sleeping with a deadline,
/// 2 = sleeping until woken (nothing dirty), 3 = cannot run (disabled or
/// failed to start; slow paths purge instead).
static PURGER: AtomicU32 = AtomicU32::new(0);
const NOT_STARTED: u32 = 0;
const RUNNING: u32 = 1;
const IDLE: u32 = 2;
const UNAVAILABLE: u32 = 3;

/// Records that some memory became dirty: wakes the purger if it sleeps
/// without a deadline, and starts it the first time. Cheap when the purger is
/// already running (one load).
#[inline]
pub fn note_dirty() {
    // The purger is usually already awake (or absent): one load. SeqCst (a
    // plain load on x86) pairs with `purger_begin_pass`; see `crate::slot`.
    if !matches!(PURGER.load(Ordering::SeqCst), RUNNING | UNAVAILABLE) {
        wake_purger();
    }
}

#[cold]
fn wake_purger() {
    match PURGER.load(Ordering::Acquire) {
        RUNNING | UNAVAILABLE => {}
        IDLE => {
            if PURGER.compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                os::futex_wake(&PURGER);
            }
        }
        _ => {
            if !settings().background {
                PURGER.store(UNAVAILABLE, Ordering::Release);
                return;
            }
            let won = PURGER.compare_exchange(NOT_STARTED, RUNNING, Ordering::AcqRel, Ordering::Relaxed).is_ok();
            if won && !os::spawn_detached(crate::purger::thread_main) {
                PURGER.store(UNAVAILABLE, Ordering::Release);
            }
        }
    }
}

/// True if slow paths must purge themselves (no background purger).
pub fn purge_inline() -> bool {
    PURGER.load(Ordering::Relaxed) == UNAVAILABLE
}

/// The purger is about to look at everything dirty. Called before its pass:
/// memory made dirty after this call finds the purger IDLE and wakes it, and
/// memory made dirty before it is seen by the pass: for arenas and the shared
/// cache because both sides take the same lock between their store and load;
/// for kept pools, which take no lock, because the pool's store, this store
/// and both loads are SeqCst; for the heaps' large slots because the pass's
/// steal issues `membarrier` between this store and its look at the slots
/// (or, where that is refused, as for kept pools; see [`crate::slot`]).
///
/// Returns true if memory was dirtied while the purger slept without a
/// deadline (a dirtier set it running), or if it is the purger's first
/// pass.
pub fn purger_begin_pass() -> bool {
    PURGER.swap(IDLE, Ordering::SeqCst) == RUNNING
}

/// After a pass: sleep until the earlier of `deadline_ms` (dirty memory not
/// yet due) and `stranded_ms` (the next look at stranded pools), or until
/// woken by [`note_dirty`] if neither is set. Unless `watching` (see
/// [`watch_stranded`]), a freer's report of a stranded pool cuts a timed
/// sleep short.
pub fn purger_wait(deadline_ms: Option<u64>, stranded_ms: Option<u64>, watching: bool) {
    match earliest(deadline_ms, stranded_ms) {
        Some(deadline) => {
            // With no dirty memory due, dirtiers must still tell the purger
            // (it stays IDLE): they set it RUNNING, which the next pass
            // reads (`purger_begin_pass`), up to one stranded look later.
            if deadline_ms.is_some() {
                PURGER.store(RUNNING, Ordering::Release);
            }
            let now = now_ms();
            if deadline > now {
                // Returns at once if a report came since the pass (the
                // word is 1 and the purger not watching).
                os::futex_wait(&STRANDED_WATCH, u32::from(watching), Some(deadline - now));
            }
        }
        // Returns at once if a dirtier flipped the state back to RUNNING.
        None => os::futex_wait(&PURGER, IDLE, None),
    }
}

/// How long a stranded pool (every block freed by other threads, its owner
/// not back for them) stays resident at least: mimalloc v2's purge delay,
/// or the purge delay if shorter (but at least 1 ms, so that a watching
/// purger sleeps). The purger looks twice (see `Pool::mark_stranded`), one
/// interval apart: this delay, or up to 16 times it while its looks find
/// owners coming back (`stranded::MAX_BACK_OFF`).
const STRANDED_DELAY_MS: u64 = 10;

/// The stranded-pool delay (see `STRANDED_DELAY_MS`).
pub fn stranded_delay_ms() -> u64 {
    settings().purge_delay_ms.clamp(1, STRANDED_DELAY_MS)
}

/// 1 while the purger looks at the freers' reports of stranded pools every
/// stranded delay anyway, 0 when a report must wake it. It is also the
/// futex the purger's timed sleeps wait on.
static STRANDED_WATCH: AtomicU32 = AtomicU32::new(0);

/// A freer reported a stranded pool (`stranded::note_complete`): wakes the
/// purger unless it is watching, and starts it the first time. One plain
/// load while it watches, as it does while the program keeps reporting:
/// no fence, because a producer/consumer program reports a pool every 100
/// or so blocks. (The first version stored the report SeqCst and took its
/// slot with a locked add: compare/'s prodcons took 0.217 s against 0.211
/// before the change, 20 alternating runs, though later sets of runs
/// moved by as much either way.) A report whose load raced the purger's
/// stop is seen by its last look (`arena::purge_stranded`).
#[inline]
pub fn note_stranded() {
    if STRANDED_WATCH.load(Ordering::Relaxed) == 0 && STRANDED_WATCH.swap(1, Ordering::Release) == 0 {
        os::futex_wake(&STRANDED_WATCH);
        note_dirty();
    }
}

/// Before the purger drains the reports: Acquire, so that the report of a
/// freer that set the flag (and woke it) is visible to the drain.
pub fn acquire_stranded_reports() {
    STRANDED_WATCH.load(Ordering::Acquire);
}

/// The purger watches for stranded pools: freers need not wake it.
pub fn watch_stranded(on: bool) {
    STRANDED_WATCH.store(u32::from(on), Ordering::Relaxed);
}

/// The purger stops watching for stranded pools; true if the flag was set,
/// by the purger itself or by a freer that reported a pool (Acquire: then
/// its report is visible to the next drain).
pub fn stop_watching_stranded() -> bool {
    STRANDED_WATCH.swap(0, Ordering::Acquire) != 0
}

/// In a forked child the purger thread does not exist: start it again on
/// demand.
pub fn reset_after_fork() {
    if PURGER.load(Ordering::Relaxed) != UNAVAILABLE {
        PURGER.store(NOT_STARTED, Ordering::Relaxed);
    }
    // Not watching: the first report starts the child's purger.
    STRANDED_WATCH.store(0, Ordering::Relaxed);
}
