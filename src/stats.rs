//! The `Stats` snapshot: read from the process-wide counters in every build,
//! and with the feature `stats` also merged from every heap's per-class
//! counters and an arena census; printed as a table and a byte accounting
//! that adds up to the mapped memory, or as JSON.

use crate::config::ARENA_SIZE;
use crate::counters::OS_COUNTERS;
#[cfg(feature = "stats")]
use crate::size_class::CLASS_COUNT;
use crate::sync::Ordering;
use core::fmt;

/// A snapshot of the allocator, taken without allocating.
///
/// The OS-level fields exist in every build; the per-class table and the byte
/// accounting need the cargo feature `stats`. Counters are read one by one
/// while other threads run, so a snapshot taken during heavy activity may
/// mix moments; taken while the threads that allocate are quiet (or after
/// they exit, or after each called [`collect`](crate::collect)), it is exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Bytes mapped from the OS: arenas, live large blocks, cached mappings
    /// (not the part of the current 2 MiB arena chunk not yet handed out,
    /// nor a spare chunk: at most 3.75 MiB of address space, resident only
    /// where the chunk got a huge page).
    pub mapped_bytes: usize,
    /// Arenas mapped now.
    pub arena_count: usize,
    /// The most arenas mapped at once.
    pub arena_peak: usize,
    /// Arenas returned to the OS so far.
    pub arenas_reclaimed: usize,
    /// Live large allocations (each its own range of pages).
    pub large_count: usize,
    /// Bytes mapped for live large allocations, headers included.
    pub large_bytes: usize,
    /// Large reallocations done by `mremap` (moved or resized without a copy).
    pub large_remaps: usize,
    /// True if threads reuse their last freed large mapping (their large
    /// slot) with plain loads and stores: `membarrier(2)` is registered.
    /// False before the purger's first pass, and where the kernel or a
    /// seccomp filter refuses it; the threads then use atomic swaps.
    pub large_slots_plain: bool,
    /// Live thread heaps.
    pub thread_count: usize,
    /// Free memory held for reuse: free pools in arenas not yet purged plus
    /// cached large mappings. It is returned to the OS after the purge delay.
    /// Pools heaps keep for reuse are not in it: they count as pools in use
    /// (their blocks as free blocks) until they go back to their arena.
    pub cached_bytes: usize,
    /// Bytes of freed large mappings kept for reuse (part of `cached_bytes`).
    pub large_cache_bytes: usize,
    /// Large allocations served from the cache of freed mappings.
    pub large_cache_hits: usize,
    /// Bytes returned to the OS by purging or unmapping freed memory, in
    /// total since the start.
    pub purged_bytes: usize,
    /// Arena chunks (2 MiB) advised for transparent huge pages so far.
    pub huge_page_chunks: usize,
    /// Huge-page faults (of those chunks) and collapses (of these) that
    /// took over a millisecond, after which the next chunks got small pages
    /// for a while (`POOLMALLOC_HUGE_PAGES`; see the crate docs).
    pub slow_huge_page_faults: usize,
    /// Chunks mapped with small pages and collapsed into huge pages when
    /// the heap passed 16 MiB.
    pub collapsed_chunks: usize,
    /// Large mappings (4 MiB and up) advised for huge pages whose first
    /// huge-page fault was timed, for the same probe as the chunks.
    pub large_huge_page_probes: usize,
    /// Those of them whose fault took over a millisecond.
    pub slow_large_huge_page_faults: usize,
    /// Pools whose every block other threads freed while their owner did
    /// not come back for them, purged in place by the purger (see the crate
    /// docs, remote frees).
    pub stranded_pools_purged: usize,
    /// Sum of the requested sizes of live blocks, large ones included.
    #[cfg(feature = "stats")]
    pub allocated_bytes: u64,
    /// Live pool blocks times their block size.
    #[cfg(feature = "stats")]
    pub in_blocks_bytes: u64,
    /// Bytes of pools in use plus live large mappings (like jemalloc's
    /// `stats.active`).
    #[cfg(feature = "stats")]
    pub active_bytes: u64,
    /// Estimated resident memory: one header page per arena, pools in use
    /// (counted whole, though their uncarved tails may be untouched), free
    /// pools not yet purged, large mappings live or cached. An upper bound
    /// of what the allocator holds in RAM, but for the chunk parts
    /// `mapped_bytes` leaves out when they got huge pages.
    #[cfg(feature = "stats")]
    pub resident_bytes: u64,
    /// Free blocks in pools in use, times their block size.
    #[cfg(feature = "stats")]
    pub free_block_bytes: u64,
    /// Free pools in arenas (dirty, purged or spare).
    #[cfg(feature = "stats")]
    pub unused_pool_bytes: u64,
    /// Arena headers (the first `HEADER_BYTES` of every arena's header pool).
    #[cfg(feature = "stats")]
    pub header_bytes: u64,
    /// Tails of pool spans too small for one more block.
    #[cfg(feature = "stats")]
    pub quantization_bytes: u64,
    #[cfg(feature = "stats")]
    classes: [ClassStats; CLASS_COUNT],
}

/// One size class, merged over every heap (feature `stats`).
#[cfg(feature = "stats")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClassStats {
    /// Block size of the class.
    pub block_size: u64,
    /// Blocks handed out and not yet taken back (a block freed by another
    /// thread counts until its owner takes it back).
    pub live_blocks: u64,
    /// The most blocks each heap had out, summed over heaps (sampled when a
    /// heap moves to another pool: within a pool's blocks per heap).
    pub peak_live_blocks: u64,
    /// Blocks handed out so far.
    pub allocs: u64,
    /// Blocks taken back so far.
    pub frees: u64,
    /// Pool spans in use for the class.
    pub pools: u64,
    /// Free blocks in those pools, uncarved ones included.
    pub free_blocks: u64,
}

#[cfg(feature = "stats")]
impl Stats {
    /// The per-class table, one entry per class.
    pub fn classes(&self) -> &[ClassStats] {
        &self.classes
    }

    /// The lines of the byte accounting, which add up to `mapped_bytes`
    /// (pymalloc's identity): `(label, bytes)`.
    pub fn accounting(&self) -> [(&'static str, u64); 7] {
        [
            ("bytes in live blocks", self.in_blocks_bytes),
            ("bytes in free blocks", self.free_block_bytes),
            ("unused pools", self.unused_pool_bytes),
            ("arena headers", self.header_bytes),
            ("quantization", self.quantization_bytes),
            ("large allocations", self.large_bytes as u64),
            ("large mapping cache", self.large_cache_bytes as u64),
        ]
    }
}

/// Reads the allocator's counters. Never allocates. With the feature `stats`
/// it also walks every heap record and the arena lists (one lock), so it
/// costs microseconds, not nanoseconds.
pub fn stats() -> Stats {
    #[cfg(feature = "stats")]
    return crate::arena::with_census(|census| {
        let mut stats = os_level(census.arenas);
        merge_heaps(&mut stats, census);
        stats
    });
    #[cfg(not(feature = "stats"))]
    os_level(OS_COUNTERS.arena_count.load(Ordering::Relaxed))
}

/// The fields every build has, with `arena_count` arenas mapped.
fn os_level(arena_count: usize) -> Stats {
    let c = &OS_COUNTERS;
    // Mappings in the heaps' large slots count as live large allocations in
    // the process-wide counters (see `large`); this moves them to the cache.
    let (large_count, large_bytes, large_cache_bytes, large_cache_hits) = crate::large::counts();
    Stats {
        mapped_bytes: arena_count * ARENA_SIZE + large_bytes + large_cache_bytes,
        arena_count,
        arena_peak: c.arena_peak.load(Ordering::Relaxed),
        arenas_reclaimed: c.arenas_reclaimed.load(Ordering::Relaxed),
        large_count,
        large_bytes,
        large_remaps: c.large_remaps.load(Ordering::Relaxed),
        large_slots_plain: crate::large::slots_use_plain_stores(),
        thread_count: c.thread_count.load(Ordering::Relaxed),
        cached_bytes: c.dirty_pool_bytes.load(Ordering::Relaxed) + large_cache_bytes,
        large_cache_bytes,
        large_cache_hits,
        purged_bytes: c.purged_bytes.load(Ordering::Relaxed),
        huge_page_chunks: c.huge_page_chunks.load(Ordering::Relaxed),
        slow_huge_page_faults: c.slow_huge_page_faults.load(Ordering::Relaxed),
        collapsed_chunks: c.collapsed_chunks.load(Ordering::Relaxed),
        large_huge_page_probes: c.large_huge_page_probes.load(Ordering::Relaxed),
        slow_large_huge_page_faults: c.slow_large_huge_page_faults.load(Ordering::Relaxed),
        stranded_pools_purged: c.stranded_pools_purged.load(Ordering::Relaxed),
        #[cfg(feature = "stats")]
        allocated_bytes: 0,
        #[cfg(feature = "stats")]
        in_blocks_bytes: 0,
        #[cfg(feature = "stats")]
        active_bytes: 0,
        #[cfg(feature = "stats")]
        resident_bytes: 0,
        #[cfg(feature = "stats")]
        free_block_bytes: 0,
        #[cfg(feature = "stats")]
        unused_pool_bytes: 0,
        #[cfg(feature = "stats")]
        header_bytes: 0,
        #[cfg(feature = "stats")]
        quantization_bytes: 0,
        #[cfg(feature = "stats")]
        classes: [ClassStats::default(); CLASS_COUNT],
    }
}

/// Adds every heap's class counters and derives the byte accounting.
#[cfg(feature = "stats")]
fn merge_heaps(stats: &mut Stats, census: crate::arena::Census) {
    use crate::config::{HEADER_BYTES, POOL_SIZE};
    use crate::counters::REQUESTED_ELSEWHERE;
    use crate::size_class::{CLASS_COUNT, class_size};

    let mut requested_allocated = REQUESTED_ELSEWHERE.allocated.load(Ordering::Relaxed);
    let mut requested_freed = REQUESTED_ELSEWHERE.freed.load(Ordering::Relaxed);
    // Per class, the pools joined in the spans in use and their blocks.
    let mut span_pools = [0u64; CLASS_COUNT];
    let mut capacity = [0u64; CLASS_COUNT];
    crate::heap::for_each_counters(|heap| {
        for (class, merged) in stats.classes.iter_mut().enumerate() {
            let r = heap.read_class(class);
            merged.allocs += r.allocs;
            merged.frees += r.frees;
            merged.pools = merged.pools.wrapping_add(r.pools);
            span_pools[class] = span_pools[class].wrapping_add(r.span_pools);
            capacity[class] = capacity[class].wrapping_add(r.capacity);
            merged.peak_live_blocks += r.peak_live;
        }
        let (allocated, freed) = heap.read_requested();
        requested_allocated = requested_allocated.wrapping_add(allocated);
        requested_freed = requested_freed.wrapping_add(freed);
    });
    let mut pool_bytes_in_use = 0u64;
    let mut header_spans_total = 0usize;
    for (class, merged) in stats.classes.iter_mut().enumerate() {
        let block_size = class_size(class) as u64;
        // Spans that start at a header pool lose the header's bytes (their
        // capacity already counts the blocks they hold).
        let header_spans = census.header_spans[class] as u64;
        let bytes = (span_pools[class] * POOL_SIZE as u64).wrapping_sub(header_spans * HEADER_BYTES as u64);
        let blocks = capacity[class];
        merged.block_size = block_size;
        merged.live_blocks = merged.allocs - merged.frees;
        merged.free_blocks = blocks.saturating_sub(merged.live_blocks);
        stats.in_blocks_bytes += merged.live_blocks * block_size;
        stats.free_block_bytes += merged.free_blocks * block_size;
        stats.quantization_bytes += bytes.wrapping_sub(blocks * block_size);
        pool_bytes_in_use += bytes;
        header_spans_total += header_spans as usize;
    }
    stats.allocated_bytes = requested_allocated.saturating_sub(requested_freed);
    // A free header pool is the pool less the header.
    let free_header_pools = census.arenas.saturating_sub(header_spans_total);
    stats.unused_pool_bytes = (census.free_pools * POOL_SIZE).saturating_sub(free_header_pools * HEADER_BYTES) as u64;
    stats.header_bytes = (census.arenas * HEADER_BYTES) as u64;
    let large = (stats.large_bytes + stats.large_cache_bytes) as u64;
    stats.active_bytes = pool_bytes_in_use + stats.large_bytes as u64;
    // A dirty header pool's header page is already in the first term.
    stats.resident_bytes = (census.arenas * crate::os::page_size()) as u64
        + pool_bytes_in_use
        + (census.dirty_pools * POOL_SIZE - census.dirty_header_pools * HEADER_BYTES) as u64
        + large;
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(feature = "stats")]
        {
            writeln!(f, "class  block   pools       live       peak       free       allocs        frees")?;
            for (class, c) in self.classes.iter().enumerate() {
                if c.allocs == 0 && c.pools == 0 {
                    continue;
                }
                writeln!(
                    f,
                    "{class:>5} {:>6} {:>7} {:>10} {:>10} {:>10} {:>12} {:>12}",
                    c.block_size, c.pools, c.live_blocks, c.peak_live_blocks, c.free_blocks, c.allocs, c.frees
                )?;
            }
            writeln!(f)?;
            let mut total = 0u64;
            for (label, bytes) in self.accounting() {
                writeln!(f, "{label:<22} {bytes:>14}")?;
                total += bytes;
            }
            let check = if total == self.mapped_bytes as u64 { "=" } else { "!=" };
            writeln!(f, "{:<22} {total:>14} {check} mapped bytes", "total")?;
            writeln!(f)?;
            writeln!(f, "allocated bytes   {:>14} (requested, live)", self.allocated_bytes)?;
            writeln!(f, "active bytes      {:>14}", self.active_bytes)?;
            writeln!(f, "resident bytes    {:>14} (estimate, upper bound)", self.resident_bytes)?;
        }
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
        let slot_reuse = if self.large_slots_plain { "plain stores" } else { "atomic swaps" };
        writeln!(f, "large slots       {slot_reuse:>14} (how a thread reuses its last freed mapping)")?;
        writeln!(f, "cached bytes      {:>14} (free, kept for reuse)", self.cached_bytes)?;
        writeln!(f, "purged bytes      {:>14} (returned to the OS so far)", self.purged_bytes)?;
        writeln!(
            f,
            "stranded pools    {:>14} (every block freed by other threads, owner away: purged)",
            self.stranded_pools_purged
        )?;
        writeln!(
            f,
            "huge-page chunks  {:>14} ({} more collapsed from small pages; {} slow)",
            self.huge_page_chunks, self.collapsed_chunks, self.slow_huge_page_faults
        )?;
        writeln!(
            f,
            "huge-page large   {:>14} (first faults timed; {} slow)",
            self.large_huge_page_probes, self.slow_large_huge_page_faults
        )?;
        write!(f, "thread heaps      {:>14}", self.thread_count)
    }
}

impl Stats {
    /// Writes the snapshot as one JSON object, for tools. Never allocates.
    pub fn write_json(&self, out: &mut impl fmt::Write) -> fmt::Result {
        write!(
            out,
            "{{\"mapped_bytes\":{},\"arena_count\":{},\"arena_peak\":{},\"arenas_reclaimed\":{},\
             \"large_count\":{},\"large_bytes\":{},\"large_remaps\":{},\"thread_count\":{},\
             \"cached_bytes\":{},\"large_cache_bytes\":{},\"large_cache_hits\":{},\"purged_bytes\":{},\
             \"huge_page_chunks\":{},\"slow_huge_page_faults\":{},\"collapsed_chunks\":{},\"large_huge_page_probes\":{},\"slow_large_huge_page_faults\":{},\
             \"stranded_pools_purged\":{},\"large_slots_plain\":{}",
            self.mapped_bytes,
            self.arena_count,
            self.arena_peak,
            self.arenas_reclaimed,
            self.large_count,
            self.large_bytes,
            self.large_remaps,
            self.thread_count,
            self.cached_bytes,
            self.large_cache_bytes,
            self.large_cache_hits,
            self.purged_bytes,
            self.huge_page_chunks,
            self.slow_huge_page_faults,
            self.collapsed_chunks,
            self.large_huge_page_probes,
            self.slow_large_huge_page_faults,
            self.stranded_pools_purged,
            self.large_slots_plain
        )?;
        #[cfg(feature = "stats")]
        {
            write!(
                out,
                ",\"allocated_bytes\":{},\"in_blocks_bytes\":{},\"active_bytes\":{},\"resident_bytes\":{},\
                 \"free_block_bytes\":{},\"unused_pool_bytes\":{},\"header_bytes\":{},\"quantization_bytes\":{},\
                 \"classes\":[",
                self.allocated_bytes,
                self.in_blocks_bytes,
                self.active_bytes,
                self.resident_bytes,
                self.free_block_bytes,
                self.unused_pool_bytes,
                self.header_bytes,
                self.quantization_bytes
            )?;
            for (class, c) in self.classes.iter().enumerate() {
                if class > 0 {
                    out.write_char(',')?;
                }
                write!(
                    out,
                    "{{\"class\":{class},\"block_size\":{},\"live_blocks\":{},\"peak_live_blocks\":{},\
                     \"allocs\":{},\"frees\":{},\"pools\":{},\"free_blocks\":{}}}",
                    c.block_size, c.live_blocks, c.peak_live_blocks, c.allocs, c.frees, c.pools, c.free_blocks
                )?;
            }
            out.write_char(']')?;
        }
        out.write_char('}')
    }
}

/// Writes formatted text straight to stderr in small pieces: no allocation.
struct StderrWriter;

impl fmt::Write for StderrWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::os::write_stderr(s.as_bytes());
        Ok(())
    }
}

/// The `atexit` hook for `POOLMALLOC_SHOW_STATS=1`: prints the report to
/// stderr.
pub extern "C" fn print_exit_report() {
    use fmt::Write;
    let _ = writeln!(StderrWriter, "poolmalloc statistics at exit:\n{}", stats());
}
