//! Size classes: pure, safe arithmetic from a request to a class.
//!
//! An 8-byte class, then classes step by 16 bytes up to 128, then four per
//! doubling up to 32 KiB
//! (the rounding waste of a block is at most 25% above 128 bytes, at most
//! 20% past the first class of each doubling). All tables are built by
//! `const` code here and checked exhaustively in the tests.

use crate::config::{HEADER_BYTES, MAX_SMALL_SIZE, MAX_SPAN_POOLS, MIN_ALIGN, POOL_SIZE};

/// A size-class index, `0..CLASS_COUNT`.
pub type Class = usize;

/// The 8-byte class (class 0), for requests of at most 8 bytes aligned to
/// at most 8: callers look up `max(size, align)` (see `class_of_size`).
const TINY_CLASSES: usize = 1;
/// The smallest block size, and the step of the lookup table.
pub const TINY_SIZE: usize = 8;
/// Classes of 16-byte steps (16..=128).
const LINEAR_CLASSES: usize = 8;
/// Classes per doubling above 128 bytes.
const CLASSES_PER_DOUBLING: usize = 4;
/// 128 B -> 32 KiB is 8 doublings.
const DOUBLINGS: usize = 8;

/// Number of size classes.
pub const CLASS_COUNT: usize = TINY_CLASSES + LINEAR_CLASSES + CLASSES_PER_DOUBLING * DOUBLINGS;

/// Block size of every class.
pub const CLASS_SIZE: [u32; CLASS_COUNT] = build_sizes();

const fn build_sizes() -> [u32; CLASS_COUNT] {
    let mut sizes = [0u32; CLASS_COUNT];
    sizes[0] = TINY_SIZE as u32;
    let mut c = TINY_CLASSES;
    while c < TINY_CLASSES + LINEAR_CLASSES {
        sizes[c] = ((c + 1 - TINY_CLASSES) * MIN_ALIGN) as u32;
        c += 1;
    }
    let mut base = LINEAR_CLASSES * MIN_ALIGN;
    while c < CLASS_COUNT {
        let step = base / CLASSES_PER_DOUBLING;
        let mut k = 1;
        while k <= CLASSES_PER_DOUBLING {
            sizes[c] = (base + k * step) as u32;
            c += 1;
            k += 1;
        }
        base *= 2;
    }
    sizes
}

/// Granules (8 bytes) in the largest class, the size of the lookup table.
const GRANULES: usize = MAX_SMALL_SIZE / TINY_SIZE;

/// `CLASS_BY_GRANULE[(size + 7) / 8]` is the smallest class holding `size`
/// bytes. One byte per granule: 4 KiB, of which a program touches the lines
/// of the sizes it uses. A `const`, not a `static`: the fast path is inlined
/// into the user's crate, and a constant array is emitted there and reached
/// RIP-relative, where a `static` of this crate costs a GOT load in
/// position-independent executables.
const CLASS_BY_GRANULE: [u8; GRANULES + 1] = build_granule_table();

const fn build_granule_table() -> [u8; GRANULES + 1] {
    let mut table = [0u8; GRANULES + 1];
    let mut g = 0;
    let mut c = 0;
    while g <= GRANULES {
        while (CLASS_SIZE[c] as usize) < g * TINY_SIZE {
            c += 1;
        }
        table[g] = c as u8;
        g += 1;
    }
    table
}

/// Block size of class `c`.
#[inline(always)]
pub const fn class_size(c: Class) -> usize {
    CLASS_SIZE[c] as usize
}

/// Alignment every block of class `c` has: the largest power of two dividing
/// its size, capped by the pool size (spans start on pool boundaries; see
/// `class_blocks_per_header_span` for the header pool).
pub const fn class_align(c: Class) -> usize {
    let size = class_size(c);
    let pow2 = 1usize << size.trailing_zeros();
    if pow2 < POOL_SIZE { pow2 } else { POOL_SIZE }
}

/// Pools joined into one span for class `c`: the fewest (up to
/// `MAX_SPAN_POOLS`) that hold `TARGET_BLOCKS_PER_SPAN` blocks, or as many as
/// `TARGET_SPAN_POOLS` hold, and never fewer than four (blocks above
/// `TARGET_MAX_BLOCK_SIZE`: four), with at most 1/16 of the span lost to
/// rounding; failing that, the one losing the least.
pub const fn class_span_pools(c: Class) -> usize {
    SPAN_POOLS[c] as usize
}

const SPAN_POOLS: [u8; CLASS_COUNT] = build_span_pools();

pub(crate) const MIN_BLOCKS_PER_SPAN: usize = 4;
/// Blocks a span should hold. A heap allocates only from its active span,
/// while frees land in every span of the class, so with few blocks per span
/// a random-free workload keeps switching spans: at 16 blocks of 1 KiB,
/// compare/'s single-threaded larson loop took 30% of its allocations and
/// 21% of its frees down the slow paths (21 ns per replacement against
/// jemalloc's 15); at 64 blocks it takes 14 ns. 128 was a little faster but
/// raised larson's peak RSS by 10%; 32 was half-way.
pub(crate) const TARGET_BLOCKS_PER_SPAN: usize = 64;
/// The span size the target stops at (64 KiB, as in mimalloc's small
/// pages): chasing 64 blocks into 128 KiB spans for the 2 KiB classes and up
/// raised the hashmap workload's peak RSS from 56.7 to 61.0 MiB for no gain.
pub(crate) const TARGET_SPAN_POOLS: usize = 4;
/// The biggest class the target applies to; bigger ones keep the fewest
/// pools holding four blocks. With 64 KiB spans for 1280..2048 bytes too,
/// the thread-churn workload (16..2048 B, survivors pinning spans) peaked at
/// 6.8 MiB RSS against 6.5 and grew by 1.0 MiB against 0.8 (medians of 7).
pub(crate) const TARGET_MAX_BLOCK_SIZE: usize = 1024;

const fn build_span_pools() -> [u8; CLASS_COUNT] {
    let mut spans = [0u8; CLASS_COUNT];
    let mut c = 0;
    while c < CLASS_COUNT {
        let size = class_size(c);
        let mut best = 0;
        let mut best_waste = usize::MAX;
        let most = TARGET_SPAN_POOLS * POOL_SIZE / size;
        let want = if most < TARGET_BLOCKS_PER_SPAN { most } else { TARGET_BLOCKS_PER_SPAN };
        let want = if want < MIN_BLOCKS_PER_SPAN || size > TARGET_MAX_BLOCK_SIZE { MIN_BLOCKS_PER_SPAN } else { want };
        let mut n = 1;
        while n <= MAX_SPAN_POOLS {
            let bytes = n * POOL_SIZE;
            let blocks = bytes / size;
            if blocks >= want {
                let waste = bytes - blocks * size;
                // Compare waste as a fraction of the span: waste/bytes.
                if waste * 16 <= bytes {
                    best = n;
                    break;
                }
                if best == 0 || waste * (best * POOL_SIZE) < best_waste * bytes {
                    best = n;
                    best_waste = waste;
                }
            }
            n += 1;
        }
        assert!(best != 0, "a class fits no span");
        spans[c] = best as u8;
        c += 1;
    }
    spans
}

/// Blocks that fit in one span of class `c`.
pub const fn class_blocks_per_span(c: Class) -> usize {
    span_blocks(c, class_span_pools(c), false)
}

/// Blocks of class `c` in a span of `pools` pools, one that starts at the
/// header pool (after the arena header) if `at_header`; 0 if a span there
/// may not serve the class (see `class_blocks_per_header_span`).
pub const fn span_blocks(c: Class, pools: usize, at_header: bool) -> usize {
    if !at_header {
        return pools * POOL_SIZE / class_size(c);
    }
    if class_align(c) > HEADER_BYTES {
        return 0;
    }
    (pools * POOL_SIZE - HEADER_BYTES) / class_size(c)
}

/// Pools in a thread's first span of class `c`: one pool for the classes
/// whose span joins several to hold `TARGET_BLOCKS_PER_SPAN` blocks (blocks
/// up to `TARGET_MAX_BLOCK_SIZE`, so one pool holds 16 or more), else the
/// class's usual span. The thread's later spans of the class are usual ones.
///
/// Why: the big spans pay off for a thread that allocates and frees many
/// blocks of the class (see `TARGET_BLOCKS_PER_SPAN`), but a thread that
/// uses a few, and leaves some alive when it exits, pins the whole span's
/// carved pages. compare/'s churn workload (5000 short threads, 4 at a
/// time, survivors of 16..2048 bytes) ended with 61 pools in the tails of
/// multi-pool spans, 165 of their pages resident. Its peak RSS, medians of
/// 11 interleaved runs: 6548 KiB with usual spans only, 6292 KiB with
/// one-pool first spans, jemalloc 6160 (a second set: 6204 against
/// jemalloc's 6036). larson's time did not move beyond the noise (five runs
/// each, 0.198-0.220 s against 0.201-0.238 s), nor did the instruction count
/// of hashmap at scale 0.25 (724.3M both ways). Halving
/// `TARGET_BLOCKS_PER_SPAN` instead saved less on churn and made larson 15%
/// slower (0.233-0.267 s against 0.197-0.218).
pub const fn class_first_span_pools(c: Class) -> usize {
    FIRST_SPAN_POOLS[c] as usize
}

const FIRST_SPAN_POOLS: [u8; CLASS_COUNT] = {
    let mut pools = [0u8; CLASS_COUNT];
    let mut c = 0;
    while c < CLASS_COUNT {
        pools[c] = if class_size(c) <= TARGET_MAX_BLOCK_SIZE { 1 } else { SPAN_POOLS[c] };
        c += 1;
    }
    pools
};

/// Blocks in a span of class `c` that starts at the header pool, after the arena
/// header; 0 if such a span may not serve the class. Its blocks start
/// `HEADER_BYTES` into the header pool, so they are aligned to no more than that:
/// classes that promise more (`class_align`) never start there.
pub const fn class_blocks_per_header_span(c: Class) -> usize {
    span_blocks(c, class_span_pools(c), true)
}

/// The class for a request of `size` bytes aligned to at most 8, or `None`
/// if it is a large allocation. For alignments up to `MIN_ALIGN`, pass
/// `max(size, align)`: every class but the 8-byte one is 16-aligned, so
/// that keeps 16-aligned requests out of it. The fast path: after the
/// caller's own `size <= MAX_SMALL_SIZE` test it is one load.
#[inline(always)]
pub fn class_of_size(size: usize) -> Option<Class> {
    if size <= MAX_SMALL_SIZE {
        // No overflow: size <= MAX_SMALL_SIZE; the index is <= GRANULES.
        Some(CLASS_BY_GRANULE[size.div_ceil(TINY_SIZE)] as Class)
    } else {
        None
    }
}

/// The smallest class whose blocks hold `size` bytes aligned to `align` (a
/// power of two), or `None` if no class does (a large allocation). Up to
/// `MIN_ALIGN` (the allocation fast path) it is one `max` and one load.
#[inline(always)]
pub fn class_for(size: usize, align: usize) -> Option<Class> {
    if align <= MIN_ALIGN {
        return class_of_size(size.max(align));
    }
    class_for_aligned(size, align)
}

#[cold]
fn class_for_aligned(size: usize, align: usize) -> Option<Class> {
    if align > POOL_SIZE {
        return None;
    }
    let mut c = class_of_size(size.max(align))?;
    while c < CLASS_COUNT {
        if class_align(c) >= align {
            return Some(c);
        }
        c += 1;
    }
    None
}

const _: () = assert!(CLASS_SIZE[CLASS_COUNT - 1] as usize == MAX_SMALL_SIZE);
const _: () = assert!(CLASS_COUNT <= u8::MAX as usize);

#[cfg(test)]
mod tests;
