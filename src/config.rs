//! Compile-time geometry. Every size derives from a shift so that masks and
//! divisions stay single instructions; the asserts at the bottom keep the
//! relations the rest of the crate relies on.

/// log2 of the arena size.
pub const ARENA_SHIFT: usize = 18;
/// Bytes in an arena: 256 KiB, mapped from the OS and aligned to its size.
pub const ARENA_SIZE: usize = 1 << ARENA_SHIFT;
/// `ptr & ARENA_MASK` is the offset of `ptr` inside its arena.
pub const ARENA_MASK: usize = ARENA_SIZE - 1;

/// log2 of the pool size.
pub const POOL_SHIFT: usize = 14;
/// Bytes in a pool: 16 KiB.
pub const POOL_SIZE: usize = 1 << POOL_SHIFT;
/// Pools per arena. All of them hold blocks: the arena header takes only the
/// first `HEADER_BYTES` of one pool (the header pool), and a span that starts there starts
/// its blocks after it.
pub const POOLS_PER_ARENA: usize = ARENA_SIZE / POOL_SIZE;
/// The arena header's share of its pool (the header itself is about 2 KiB;
/// a whole page so that purging the pool can leave it resident).
pub const HEADER_BYTES: usize = 4 << 10;

/// A transparent huge page (x86-64): arenas are mapped in chunks of this
/// size (`arena`), and large mappings are probed and advised in its units
/// (`large`).
pub const HUGE_PAGE_SIZE: usize = 2 << 20;

/// The alignment every block of 16 bytes or more has (and the step of the
/// classes up to 128 bytes); the 8-byte class is aligned to 8, and serves
/// only requests aligned to at most 8 (`size_class`).
pub const MIN_ALIGN: usize = 16;
/// Largest block served from pools; larger requests are large allocations.
pub const MAX_SMALL_SIZE: usize = 32 << 10;
/// The most pools one span may join for a medium class.
pub const MAX_SPAN_POOLS: usize = 8;

/// Fully empty arenas kept mapped as spares (pymalloc keeps one) to avoid
/// map/unmap thrash when a program oscillates around an arena boundary.
pub const ARENA_SPARES: usize = 1;

/// Bytes of address space the arena map covers (x86-64 and AArch64 user space
/// without 5-level paging hints). Arenas mapped above it are refused.
pub const ADDRESS_BITS: usize = 47;

/// Largest OS page we assume when placing the large-allocation header; the
/// real page size is read at run time and must not exceed this.
pub const MAX_OS_PAGE_SIZE: usize = 64 << 10;

const _: () = assert!(POOL_SIZE.is_power_of_two() && ARENA_SIZE.is_power_of_two());
const _: () = assert!(POOLS_PER_ARENA <= 16, "free-pool masks are u16");
const _: () = assert!(MAX_SPAN_POOLS <= POOLS_PER_ARENA);
const _: () = assert!(HEADER_BYTES < POOL_SIZE && HEADER_BYTES.is_power_of_two());
const _: () = assert!(MAX_SMALL_SIZE <= MAX_SPAN_POOLS * POOL_SIZE / 2);
const _: () = assert!(MAX_SMALL_SIZE % MIN_ALIGN == 0);
