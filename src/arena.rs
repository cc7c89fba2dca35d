//! Arenas: 256 KiB regions mapped from the OS, aligned to their size, cut
//! into 16 KiB pools. Pool 0 holds this header (the pool descriptors); pools
//! 1..16 hold blocks. Spans of several pools serve the medium classes.
//!
//! All arena bookkeeping is behind one lock taken only on slow paths (a heap
//! needing a fresh pool, or giving one back). Arenas are kept in buckets by
//! their count of free pools, and a new pool comes from the fullest arena
//! that can hold it (pymalloc's `usable_arenas` order) so that nearly empty
//! arenas drain and can be unmapped.

use crate::config::{
    ADDRESS_BITS, ARENA_MASK, ARENA_SHIFT, ARENA_SIZE, ARENA_SPARES, FIRST_POOL, POOL_SHIFT, POOL_SIZE,
    POOLS_PER_ARENA, USABLE_POOLS,
};
use crate::os;
use crate::pool::Pool;
use crate::size_class::{self, Class};
use crate::stats::OS_COUNTERS;
use crate::sync::{AtomicPtr, AtomicU64, Ordering, SpinLock};
use core::cell::Cell;
use core::ptr;

/// The header at the start of every arena.
#[repr(C)]
pub struct Arena {
    /// Descriptors, indexed by pool number; a span uses its first pool's.
    pools: [Pool; POOLS_PER_ARENA],
    /// For each pool number, the byte offset from the arena base of its
    /// span's descriptor (an offset, not an index, to save the multiply on
    /// the free path). Written when a span is handed out; read by frees.
    span_head: [Cell<u16>; POOLS_PER_ARENA],
    // Guarded by the arena lock:
    /// Bit `i` set: pool `i` is free.
    free_mask: Cell<u16>,
    /// Links in the bucket of arenas with the same number of free pools.
    prev: Cell<*mut Arena>,
    next: Cell<*mut Arena>,
}

const ALL_POOLS_FREE: u16 = (((1u32 << POOLS_PER_ARENA) - 1) as u16) & !((1u16 << FIRST_POOL) - 1);

const _: () = assert!(core::mem::size_of::<Arena>() <= POOL_SIZE, "the arena header fits in pool 0");

impl Arena {
    fn free_count(&self) -> usize {
        self.free_mask.get().count_ones() as usize
    }
}

/// The pool descriptor of the block at `p`.
///
/// # Safety
/// `p` points into a pool span that is in use.
#[inline(always)]
pub unsafe fn pool_of(p: *const u8) -> *mut Pool {
    let arena = (p as usize & !ARENA_MASK) as *mut Arena;
    let index = (p as usize >> POOL_SHIFT) & (POOLS_PER_ARENA - 1);
    // SAFETY: the caller guarantees `p` lies in a live arena, whose header is
    // at its aligned base; `index < POOLS_PER_ARENA` by the mask; the offset
    // names a descriptor in that header.
    unsafe {
        let offset = (*arena).span_head.get_unchecked(index).get() as usize;
        arena.cast::<u8>().add(offset).cast::<Pool>()
    }
}

/// The arena-level state behind the lock.
struct Arenas {
    /// `buckets[n]`: arenas with exactly `n` free pools (doubly linked).
    buckets: [*mut Arena; USABLE_POOLS + 1],
}

// SAFETY: the raw pointers are only followed under the lock.
unsafe impl Send for Arenas {}

static ARENAS: SpinLock<Arenas> = SpinLock::new(Arenas { buckets: [ptr::null_mut(); USABLE_POOLS + 1] });

impl Arenas {
    fn unlink(&mut self, arena: &Arena, count: usize) {
        let (prev, next) = (arena.prev.get(), arena.next.get());
        if prev.is_null() {
            self.buckets[count] = next;
        } else {
            // SAFETY: linked arenas are live headers.
            unsafe { (*prev).next.set(next) };
        }
        if !next.is_null() {
            // SAFETY: as above.
            unsafe { (*next).prev.set(prev) };
        }
    }

    fn link(&mut self, arena: *mut Arena, count: usize) {
        // SAFETY: `arena` is a live header; bucket heads are live headers.
        unsafe {
            let head = self.buckets[count];
            (*arena).prev.set(ptr::null_mut());
            (*arena).next.set(head);
            if !head.is_null() {
                (*head).prev.set(arena);
            }
        }
        self.buckets[count] = arena;
    }

    /// Finds the fullest arena with a run of `pools` free pools; returns it
    /// and the first pool of the run.
    fn find_run(&self, pools: usize) -> Option<(*mut Arena, usize)> {
        for count in pools..=USABLE_POOLS {
            let mut arena = self.buckets[count];
            while !arena.is_null() {
                // SAFETY: linked arenas are live headers.
                let a = unsafe { &*arena };
                if let Some(first) = find_free_run(a.free_mask.get(), pools) {
                    return Some((arena, first));
                }
                arena = a.next.get();
            }
        }
        None
    }

    fn empty_arena_count(&self) -> usize {
        let mut count = 0;
        let mut arena = self.buckets[USABLE_POOLS];
        while !arena.is_null() {
            count += 1;
            // SAFETY: linked arenas are live headers.
            arena = unsafe { (*arena).next.get() };
        }
        count
    }
}

/// The lowest pool `i` such that pools `i..i + pools` are all free.
fn find_free_run(free_mask: u16, pools: usize) -> Option<usize> {
    let mut run = free_mask as u32;
    for shift in 1..pools {
        run &= (free_mask as u32) >> shift;
    }
    (run != 0).then(|| run.trailing_zeros() as usize)
}

fn run_mask(first: usize, pools: usize) -> u16 {
    (((1u32 << pools) - 1) << first) as u16
}

/// Hands out a span for `class`, owned by `owner`: the span's descriptor,
/// initialised, or null if the OS has no memory. Slow path.
pub fn acquire_pool(class: Class, owner: usize) -> *mut Pool {
    let pools = size_class::class_span_pools(class);
    let mut arenas = ARENAS.lock();
    let (arena, first) = match arenas.find_run(pools) {
        Some(found) => found,
        None => {
            let arena = map_arena();
            if arena.is_null() {
                return ptr::null_mut();
            }
            arenas.link(arena, USABLE_POOLS);
            (arena, FIRST_POOL)
        }
    };
    // SAFETY: `arena` is a live header and the lock is held.
    let a = unsafe { &*arena };
    let before = a.free_count();
    arenas.unlink(a, before);
    a.free_mask.set(a.free_mask.get() & !run_mask(first, pools));
    arenas.link(arena, before - pools);
    drop(arenas);
    let pool = &a.pools[first];
    let offset = ptr::from_ref(pool) as usize - arena as usize;
    for i in first..first + pools {
        a.span_head[i].set(offset as u16);
    }
    let start = (arena as usize + first * POOL_SIZE) as *mut u8;
    pool.init(class, start, owner);
    ptr::from_ref(pool).cast_mut()
}

/// Gives a span back to its arena. The pool must be unused and off every
/// list. If the arena becomes empty and enough spares are kept, the arena is
/// unmapped. Slow path.
///
/// # Safety
/// `pool` is a live descriptor in use, with no block handed out.
pub unsafe fn release_pool(pool: *mut Pool) {
    // SAFETY: the caller guarantees a live descriptor.
    let pool = unsafe { &*pool };
    let pools = pool.span_pools();
    pool.retire();
    let arena = (ptr::from_ref(pool) as usize & !ARENA_MASK) as *mut Arena;
    // SAFETY: descriptors live in their arena's header.
    let a = unsafe { &*arena };
    let first = (ptr::from_ref(pool) as usize - a.pools.as_ptr() as usize) / core::mem::size_of::<Pool>();
    let mut arenas = ARENAS.lock();
    let before = a.free_count();
    arenas.unlink(a, before);
    a.free_mask.set(a.free_mask.get() | run_mask(first, pools));
    let after = before + pools;
    if after == USABLE_POOLS && arenas.empty_arena_count() >= ARENA_SPARES {
        drop(arenas);
        // SAFETY: the arena is unlinked and has no pool in use.
        unsafe { unmap_arena(arena) };
    } else {
        arenas.link(arena, after);
    }
}

/// Unmaps every fully empty arena beyond the spares. Returns how many.
pub fn release_empty_arenas() -> usize {
    let mut released = 0;
    loop {
        let mut arenas = ARENAS.lock();
        if arenas.empty_arena_count() <= ARENA_SPARES {
            return released;
        }
        let arena = arenas.buckets[USABLE_POOLS];
        // SAFETY: a bucket head is a live header.
        arenas.unlink(unsafe { &*arena }, USABLE_POOLS);
        drop(arenas);
        // SAFETY: the arena is unlinked and has no pool in use.
        unsafe { unmap_arena(arena) };
        released += 1;
    }
}

fn map_arena() -> *mut Arena {
    let base = os::map_aligned(ARENA_SIZE, ARENA_SIZE, 0);
    if base.is_null() {
        return ptr::null_mut();
    }
    if !ARENA_MAP.insert(base as usize) {
        // SAFETY: freshly mapped, not handed out.
        unsafe { os::unmap(base, ARENA_SIZE) };
        return ptr::null_mut();
    }
    let arena = base.cast::<Arena>();
    // SAFETY: the mapping is fresh, zeroed and large enough for the header;
    // zeroed memory is not a valid `Arena` for every field, so write it.
    unsafe {
        arena.write(Arena {
            pools: [const { Pool::unused() }; POOLS_PER_ARENA],
            span_head: [const { Cell::new(0) }; POOLS_PER_ARENA],
            free_mask: Cell::new(ALL_POOLS_FREE),
            prev: Cell::new(ptr::null_mut()),
            next: Cell::new(ptr::null_mut()),
        });
    }
    OS_COUNTERS.arena_mapped();
    arena
}

/// # Safety
/// The arena is off every list and none of its pools is in use.
unsafe fn unmap_arena(arena: *mut Arena) {
    ARENA_MAP.remove(arena as usize);
    // SAFETY: the caller owns the whole arena.
    unsafe { os::unmap(arena.cast(), ARENA_SIZE) };
    OS_COUNTERS.arena_unmapped();
}

/// True if `p` lies in a mapped arena (a pool block or an arena header).
/// O(1): one bit in a sparse bitmap over the address space.
pub fn contains(p: *const u8) -> bool {
    ARENA_MAP.contains(p as usize)
}

/// One bit per arena-sized slot of the address space: 2^29 bits, 64 MiB of
/// address space mapped without reserve; a page of it is touched only when an
/// arena in its 8 GiB range exists.
struct ArenaMap {
    bits: AtomicPtr<AtomicU64>,
}

static ARENA_MAP: ArenaMap = ArenaMap { bits: AtomicPtr::new(ptr::null_mut()) };

const MAP_SLOTS: usize = 1 << (ADDRESS_BITS - ARENA_SHIFT);

impl ArenaMap {
    /// Marks the arena at `base`; false if the map cannot cover it. Called
    /// with the arena lock held, so initialisation does not race.
    fn insert(&self, base: usize) -> bool {
        let slot = base >> ARENA_SHIFT;
        if slot >= MAP_SLOTS {
            return false;
        }
        let mut bits = self.bits.load(Ordering::Acquire);
        if bits.is_null() {
            bits = os::map_sparse(MAP_SLOTS / 8).cast();
            if bits.is_null() {
                return false;
            }
            self.bits.store(bits, Ordering::Release);
        }
        // SAFETY: `slot / 64 < MAP_SLOTS / 64`, inside the mapping.
        unsafe { (*bits.add(slot / 64)).fetch_or(1 << (slot % 64), Ordering::Release) };
        true
    }

    fn remove(&self, base: usize) {
        let slot = base >> ARENA_SHIFT;
        let bits = self.bits.load(Ordering::Acquire);
        // SAFETY: the arena was inserted, so the map exists and covers it.
        unsafe { (*bits.add(slot / 64)).fetch_and(!(1 << (slot % 64)), Ordering::Release) };
    }

    fn contains(&self, addr: usize) -> bool {
        let slot = addr >> ARENA_SHIFT;
        let bits = self.bits.load(Ordering::Acquire);
        if bits.is_null() || slot >= MAP_SLOTS {
            return false;
        }
        // SAFETY: `slot < MAP_SLOTS`, inside the mapping.
        unsafe { (*bits.add(slot / 64)).load(Ordering::Acquire) & (1 << (slot % 64)) != 0 }
    }
}

/// Fork support: the lock is taken before `fork` and released on both sides.
pub fn lock_for_fork() {
    ARENAS.lock_raw();
}

/// # Safety
/// Called after [`lock_for_fork`] in the same thread (or its forked child).
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded from the caller.
    unsafe { ARENAS.unlock_raw() };
}

/// Checks the bucket lists against the free masks (`debug-invariants`).
/// Returns the number of arenas.
#[cfg(feature = "debug-invariants")]
pub fn check() -> usize {
    let arenas = ARENAS.lock();
    let mut total = 0;
    for (count, &head) in arenas.buckets.iter().enumerate() {
        let mut arena = head;
        let mut prev = ptr::null_mut();
        while !arena.is_null() {
            // SAFETY: linked arenas are live headers.
            let a = unsafe { &*arena };
            assert_eq!(a.free_count(), count);
            assert_eq!(a.prev.get(), prev);
            assert!(contains(arena.cast()));
            prev = arena;
            arena = a.next.get();
            total += 1;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_runs() {
        assert_eq!(find_free_run(ALL_POOLS_FREE, 1), Some(1));
        assert_eq!(find_free_run(ALL_POOLS_FREE, 8), Some(1));
        assert_eq!(find_free_run(0b1011_0110, 2), Some(1));
        assert_eq!(find_free_run(0b1011_0110, 3), None);
        assert_eq!(find_free_run(0, 1), None);
        assert_eq!(run_mask(3, 2), 0b1_1000);
    }
}
