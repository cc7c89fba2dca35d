//! Process-wide counters kept by the slow paths (mapping, unmapping, thread
//! start and exit), and the `Stats` snapshot read from them. They cost nothing
//! on the fast paths, so they exist in every build.

use crate::config::ARENA_SIZE;
use crate::sync::{AtomicUsize, Ordering};
use core::fmt;

/// OS-level totals, updated with atomic read-modify-writes on slow paths only.
pub(crate) struct OsCounters {
    arena_count: AtomicUsize,
    arena_peak: AtomicUsize,
    arenas_reclaimed: AtomicUsize,
    large_count: AtomicUsize,
    large_bytes: AtomicUsize,
    large_remaps: AtomicUsize,
    thread_count: AtomicUsize,
    dirty_pool_bytes: AtomicUsize,
    large_cache_bytes: AtomicUsize,
    large_cache_hits: AtomicUsize,
    purged_bytes: AtomicUsize,
}

pub(crate) static OS_COUNTERS: OsCounters = OsCounters {
    arena_count: AtomicUsize::new(0),
    arena_peak: AtomicUsize::new(0),
    arenas_reclaimed: AtomicUsize::new(0),
    large_count: AtomicUsize::new(0),
    large_bytes: AtomicUsize::new(0),
    large_remaps: AtomicUsize::new(0),
    thread_count: AtomicUsize::new(0),
    dirty_pool_bytes: AtomicUsize::new(0),
    large_cache_bytes: AtomicUsize::new(0),
    large_cache_hits: AtomicUsize::new(0),
    purged_bytes: AtomicUsize::new(0),
};

impl OsCounters {
    pub(crate) fn arena_mapped(&self) {
        let now = self.arena_count.fetch_add(1, Ordering::Relaxed) + 1;
        self.arena_peak.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn arena_unmapped(&self) {
        self.arena_count.fetch_sub(1, Ordering::Relaxed);
        self.arenas_reclaimed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn large_mapped(&self, bytes: usize) {
        self.large_count.fetch_add(1, Ordering::Relaxed);
        self.large_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn large_unmapped(&self, bytes: usize) {
        self.large_count.fetch_sub(1, Ordering::Relaxed);
        self.large_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub(crate) fn large_remapped(&self, old_bytes: usize, new_bytes: usize) {
        self.large_bytes.fetch_add(new_bytes, Ordering::Relaxed);
        self.large_bytes.fetch_sub(old_bytes, Ordering::Relaxed);
        self.large_remaps.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dirty_pools_released(&self, bytes: usize) {
        self.dirty_pool_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn dirty_pools_reused(&self, bytes: usize) {
        self.dirty_pool_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub(crate) fn dirty_pools_purged(&self, bytes: usize) {
        self.dirty_pool_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.purged_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A freed large mapping of `bytes` went into the cache.
    pub(crate) fn large_cached(&self, bytes: usize) {
        self.large_unmapped(bytes);
        self.large_cache_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A cached mapping of `bytes` served a new large block.
    pub(crate) fn large_cache_hit(&self, bytes: usize) {
        self.large_cache_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.large_cache_hits.fetch_add(1, Ordering::Relaxed);
        self.large_mapped(bytes);
    }

    /// A cached mapping of `bytes` was unmapped.
    pub(crate) fn large_cache_purged(&self, bytes: usize) {
        self.large_cache_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.purged_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn thread_started(&self) {
        self.thread_count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn thread_exited(&self) {
        self.thread_count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A snapshot of the allocator's OS-level state, taken without allocating.
///
/// The counters are read one by one while other threads run, so a snapshot
/// taken during heavy mapping activity may mix moments; each field is exact
/// on its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes mapped from the OS for arenas and large allocations.
    pub mapped_bytes: usize,
    /// Arenas mapped now.
    pub arena_count: usize,
    /// The most arenas mapped at once.
    pub arena_peak: usize,
    /// Arenas returned to the OS so far.
    pub arenas_reclaimed: usize,
    /// Live large allocations (each its own mapping).
    pub large_count: usize,
    /// Bytes mapped for live large allocations, headers included.
    pub large_bytes: usize,
    /// Large reallocations done by `mremap` (moved or resized without a copy).
    pub large_remaps: usize,
    /// Live thread heaps.
    pub thread_count: usize,
    /// Free memory held for reuse: free pools not yet purged plus cached
    /// large mappings. It is returned to the OS after the purge delay.
    pub cached_bytes: usize,
    /// Large allocations served from the cache of freed mappings.
    pub large_cache_hits: usize,
    /// Bytes returned to the OS by purging or unmapping freed memory, in
    /// total since the start.
    pub purged_bytes: usize,
}

/// Reads the allocator's counters. Never allocates; cheap enough to poll.
pub fn stats() -> Stats {
    let c = &OS_COUNTERS;
    let arena_count = c.arena_count.load(Ordering::Relaxed);
    let large_bytes = c.large_bytes.load(Ordering::Relaxed);
    let large_cache_bytes = c.large_cache_bytes.load(Ordering::Relaxed);
    Stats {
        mapped_bytes: arena_count * ARENA_SIZE + large_bytes + large_cache_bytes,
        arena_count,
        arena_peak: c.arena_peak.load(Ordering::Relaxed),
        arenas_reclaimed: c.arenas_reclaimed.load(Ordering::Relaxed),
        large_count: c.large_count.load(Ordering::Relaxed),
        large_bytes,
        large_remaps: c.large_remaps.load(Ordering::Relaxed),
        thread_count: c.thread_count.load(Ordering::Relaxed),
        cached_bytes: c.dirty_pool_bytes.load(Ordering::Relaxed) + large_cache_bytes,
        large_cache_hits: c.large_cache_hits.load(Ordering::Relaxed),
        purged_bytes: c.purged_bytes.load(Ordering::Relaxed),
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mapped bytes      {:>14}", self.mapped_bytes)?;
        writeln!(
            f,
            "arenas            {:>14} (peak {}, reclaimed {})",
            self.arena_count, self.arena_peak, self.arenas_reclaimed
        )?;
        writeln!(
            f,
            "large allocations {:>14} ({} bytes, {} remapped, {} from cache)",
            self.large_count, self.large_bytes, self.large_remaps, self.large_cache_hits
        )?;
        writeln!(f, "cached bytes      {:>14} (free, kept for reuse)", self.cached_bytes)?;
        writeln!(f, "purged bytes      {:>14} (returned to the OS so far)", self.purged_bytes)?;
        write!(f, "thread heaps      {:>14}", self.thread_count)
    }
}
