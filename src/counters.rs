//! Per-heap counters for the instrumentation layer (feature `stats`).
//!
//! Each heap counts, per class, the blocks it handed out and took back, the
//! pools it holds and the most blocks it had out, plus the requested bytes
//! its thread allocated and freed. Only the heap's owner writes them, with a
//! plain load and store of a relaxed atomic (an ordinary `mov` on x86, no
//! locked instruction); other threads read them to merge a snapshot. Blocks
//! freed by another thread are counted when the owner takes them back.
//!
//! Without the feature, [`HeapCounters`] is an empty type whose methods do
//! nothing, so the fast paths compile to the same code as without the layer.
//!
//! The process-wide [`OsCounters`] (mappings, threads, purging) are kept by
//! slow paths in every build: they cost nothing on the fast paths.

#[cfg(feature = "stats")]
use crate::size_class::CLASS_COUNT;
use crate::size_class::Class;
#[cfg(feature = "stats")]
use crate::sync::AtomicU64;
use crate::sync::{AtomicUsize, Ordering};

/// A request's size, carried for the instrumentation only. Zero-sized
/// without the feature, so passing it through the fast paths costs no
/// register and no instruction.
#[derive(Clone, Copy)]
pub struct Requested {
    #[cfg(feature = "stats")]
    bytes: usize,
}

impl Requested {
    /// Carries `size` (or nothing, without the feature).
    #[inline(always)]
    pub fn new(size: usize) -> Self {
        let _ = size;
        Self {
            #[cfg(feature = "stats")]
            bytes: size,
        }
    }

    /// The size, if the feature keeps it.
    #[cfg(feature = "stats")]
    #[inline(always)]
    fn bytes(self) -> u64 {
        self.bytes as u64
    }
}

/// Adds `by` to a counter only its owner writes: no read-modify-write.
#[cfg(feature = "stats")]
#[inline(always)]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
}

/// One class's counters in one heap.
#[cfg(feature = "stats")]
pub struct ClassCounters {
    allocs: AtomicU64,
    frees: AtomicU64,
    /// Spans in use, the pools they join, and the blocks they hold (a
    /// thread's first span of a class may be smaller than the others).
    pools: AtomicU64,
    span_pools: AtomicU64,
    capacity: AtomicU64,
    peak_live: AtomicU64,
}

/// A heap's counters (feature `stats`; empty without it).
pub struct HeapCounters {
    #[cfg(feature = "stats")]
    classes: [ClassCounters; CLASS_COUNT],
    #[cfg(feature = "stats")]
    requested_allocated: AtomicU64,
    #[cfg(feature = "stats")]
    requested_freed: AtomicU64,
}

/// What one heap's counters say about one class, read by another thread.
#[cfg(feature = "stats")]
#[derive(Clone, Copy, Default)]
pub struct ClassReading {
    pub allocs: u64,
    pub frees: u64,
    pub pools: u64,
    pub span_pools: u64,
    pub capacity: u64,
    pub peak_live: u64,
}

impl HeapCounters {
    /// All zero.
    pub const fn new() -> Self {
        Self {
            #[cfg(feature = "stats")]
            classes: [const {
                ClassCounters {
                    allocs: AtomicU64::new(0),
                    frees: AtomicU64::new(0),
                    pools: AtomicU64::new(0),
                    span_pools: AtomicU64::new(0),
                    capacity: AtomicU64::new(0),
                    peak_live: AtomicU64::new(0),
                }
            }; CLASS_COUNT],
            #[cfg(feature = "stats")]
            requested_allocated: AtomicU64::new(0),
            #[cfg(feature = "stats")]
            requested_freed: AtomicU64::new(0),
        }
    }

    /// A block of `class` was handed out for a request of `size` bytes.
    #[inline(always)]
    pub fn on_alloc(&self, class: Class, size: Requested) {
        #[cfg(feature = "stats")]
        {
            bump(&self.classes[class].allocs, 1);
            bump(&self.requested_allocated, size.bytes());
        }
        let _ = (class, size);
    }

    /// The owner freed a block of `class`.
    #[inline(always)]
    pub fn on_local_free(&self, class: Class, size: Requested) {
        #[cfg(feature = "stats")]
        {
            bump(&self.classes[class].frees, 1);
            bump(&self.requested_freed, size.bytes());
        }
        let _ = (class, size);
    }

    /// This heap's thread freed another heap's block (the block itself is
    /// counted when its owner takes it back).
    #[inline(always)]
    pub fn on_remote_free(&self, size: Requested) {
        #[cfg(feature = "stats")]
        bump(&self.requested_freed, size.bytes());
        let _ = size;
    }

    /// A block changed its requested size in place (`realloc`).
    #[inline(always)]
    pub fn on_resize(&self, old_size: usize, new_size: usize) {
        #[cfg(feature = "stats")]
        if new_size >= old_size {
            bump(&self.requested_allocated, (new_size - old_size) as u64);
        } else {
            bump(&self.requested_freed, (old_size - new_size) as u64);
        }
        let _ = (old_size, new_size);
    }

    /// The owner took back `count` blocks of `class` freed by other threads.
    #[inline]
    pub fn on_remote_taken(&self, class: Class, count: usize) {
        #[cfg(feature = "stats")]
        bump(&self.classes[class].frees, count as u64);
        let _ = (class, count);
    }

    /// The heap took a span of `class` from an arena, of `pools` pools
    /// holding `blocks` blocks; also samples the class's live count for its
    /// peak (at pool granularity: the peak is within one pool's blocks of
    /// the true peak per heap).
    #[inline]
    pub fn on_pool_acquired(&self, class: Class, pools: usize, blocks: usize) {
        #[cfg(feature = "stats")]
        {
            let c = &self.classes[class];
            bump(&c.pools, 1);
            bump(&c.span_pools, pools as u64);
            bump(&c.capacity, blocks as u64);
            self.sample_peak(class);
        }
        let _ = (class, pools, blocks);
    }

    /// The heap took its next pool of `class` from its own lists: samples
    /// the live count for the peak.
    #[inline]
    pub fn sample_peak(&self, class: Class) {
        #[cfg(feature = "stats")]
        {
            let c = &self.classes[class];
            let live = c.allocs.load(Ordering::Relaxed).wrapping_sub(c.frees.load(Ordering::Relaxed));
            if live > c.peak_live.load(Ordering::Relaxed) {
                c.peak_live.store(live, Ordering::Relaxed);
            }
        }
        let _ = class;
    }

    /// The heap gave a span of `class` back to its arena (the sizes as
    /// given to `on_pool_acquired`).
    #[inline]
    pub fn on_pool_released(&self, class: Class, pools: usize, blocks: usize) {
        #[cfg(feature = "stats")]
        {
            let c = &self.classes[class];
            bump(&c.pools, u64::MAX);
            bump(&c.span_pools, (pools as u64).wrapping_neg());
            bump(&c.capacity, (blocks as u64).wrapping_neg());
        }
        let _ = (class, pools, blocks);
    }

    /// Reads one class (any thread).
    #[cfg(feature = "stats")]
    pub fn read_class(&self, class: Class) -> ClassReading {
        let c = &self.classes[class];
        // Frees first: a racing owner only makes the reading lag, never
        // show more frees than allocations.
        let frees = c.frees.load(Ordering::Relaxed);
        let allocs = c.allocs.load(Ordering::Relaxed).max(frees);
        ClassReading {
            frees,
            allocs,
            pools: c.pools.load(Ordering::Relaxed),
            span_pools: c.span_pools.load(Ordering::Relaxed),
            capacity: c.capacity.load(Ordering::Relaxed),
            // The sample is taken on pool changes; the live count now may be
            // higher.
            peak_live: c.peak_live.load(Ordering::Relaxed).max(allocs - frees),
        }
    }

    /// Requested bytes allocated and freed by this heap's thread (any thread
    /// may read).
    #[cfg(feature = "stats")]
    pub fn read_requested(&self) -> (u64, u64) {
        (self.requested_allocated.load(Ordering::Relaxed), self.requested_freed.load(Ordering::Relaxed))
    }
}

/// OS-level totals, updated with atomic read-modify-writes on slow paths only.
pub(crate) struct OsCounters {
    pub(crate) arena_count: AtomicUsize,
    pub(crate) arena_peak: AtomicUsize,
    pub(crate) arenas_reclaimed: AtomicUsize,
    pub(crate) large_count: AtomicUsize,
    pub(crate) large_bytes: AtomicUsize,
    pub(crate) large_remaps: AtomicUsize,
    pub(crate) thread_count: AtomicUsize,
    pub(crate) dirty_pool_bytes: AtomicUsize,
    pub(crate) large_cache_bytes: AtomicUsize,
    pub(crate) large_cache_hits: AtomicUsize,
    pub(crate) purged_bytes: AtomicUsize,
    /// Arena chunks advised for huge pages.
    pub(crate) huge_page_chunks: AtomicUsize,
    /// Chunks advised for huge pages whose first fault was slow, and
    /// collapses that were slow (see `arena`).
    pub(crate) slow_huge_page_faults: AtomicUsize,
    /// Small-page chunks collapsed into huge pages.
    pub(crate) collapsed_chunks: AtomicUsize,
    /// Large mappings whose first huge-page fault was timed for the probe,
    /// and those of them that were slow.
    pub(crate) large_huge_page_probes: AtomicUsize,
    pub(crate) slow_large_huge_page_faults: AtomicUsize,
    /// Stranded pools purged in place (`crate::stranded`).
    pub(crate) stranded_pools_purged: AtomicUsize,
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
    huge_page_chunks: AtomicUsize::new(0),
    slow_huge_page_faults: AtomicUsize::new(0),
    collapsed_chunks: AtomicUsize::new(0),
    large_huge_page_probes: AtomicUsize::new(0),
    slow_large_huge_page_faults: AtomicUsize::new(0),
    stranded_pools_purged: AtomicUsize::new(0),
};

impl OsCounters {
    /// Counts a mapped arena; true if the count is a new peak.
    pub(crate) fn arena_mapped(&self) -> bool {
        let now = self.arena_count.fetch_add(1, Ordering::Relaxed) + 1;
        self.arena_peak.fetch_max(now, Ordering::Relaxed) < now
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

    /// Kept pools of `bytes` in all were purged in place (see `Pool::keep`).
    pub(crate) fn kept_pools_purged(&self, bytes: usize) {
        self.purged_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `pools` stranded pools of `bytes` in all were purged in place (see
    /// `crate::stranded`).
    pub(crate) fn stranded_pools_purged(&self, pools: usize, bytes: usize) {
        self.stranded_pools_purged.fetch_add(pools, Ordering::Relaxed);
        self.purged_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Dirty pools of `bytes` in all were purged, of which `kept` bytes (a
    /// header page) stayed resident.
    pub(crate) fn dirty_pools_purged(&self, bytes: usize, kept: usize) {
        self.dirty_pool_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.purged_bytes.fetch_add(bytes - kept, Ordering::Relaxed);
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

    /// `bytes` of cached pages joined the live large block in front of them.
    pub(crate) fn large_cache_absorbed(&self, bytes: usize) {
        self.large_cache_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.large_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A slot's mapping of `bytes`, counted as live (and shown as cached by
    /// the statistics), was unmapped without going through the cache.
    pub(crate) fn large_slot_purged(&self, bytes: usize) {
        self.large_unmapped(bytes);
        self.purged_bytes.fetch_add(bytes, Ordering::Relaxed);
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

/// Requested bytes of large blocks, and of pool blocks freed or resized by
/// threads without a heap: updated with read-modify-writes (slow paths
/// only). Feature `stats`.
#[cfg(feature = "stats")]
pub(crate) struct RequestedBytes {
    pub(crate) allocated: AtomicU64,
    pub(crate) freed: AtomicU64,
}

#[cfg(feature = "stats")]
pub(crate) static REQUESTED_ELSEWHERE: RequestedBytes =
    RequestedBytes { allocated: AtomicU64::new(0), freed: AtomicU64::new(0) };

/// A large block of `size` requested bytes was allocated.
#[inline]
pub fn count_large_alloc(size: usize) {
    count_orphan_alloc(size);
}

/// A large block of `size` requested bytes was freed.
#[inline]
pub fn count_large_free(size: usize) {
    count_orphan_free(size);
}

/// `size` requested bytes allocated outside any heap's counters.
#[inline]
pub fn count_orphan_alloc(size: usize) {
    #[cfg(feature = "stats")]
    REQUESTED_ELSEWHERE.allocated.fetch_add(size as u64, Ordering::Relaxed);
    let _ = size;
}

/// A block freed by a thread without a heap.
#[inline]
pub fn count_orphan_block_free(size: Requested) {
    #[cfg(feature = "stats")]
    count_orphan_free(size.bytes);
    let _ = size;
}

/// `size` requested bytes freed outside any heap's counters.
#[inline]
pub fn count_orphan_free(size: usize) {
    #[cfg(feature = "stats")]
    REQUESTED_ELSEWHERE.freed.fetch_add(size as u64, Ordering::Relaxed);
    let _ = size;
}
