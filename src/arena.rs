//! Arenas: 256 KiB regions mapped from the OS, aligned to their size, cut
//! into 16 KiB pools. The first 4 KiB of one pool, the *header pool*, hold
//! this header (the pool descriptors); every pool holds blocks, a span that
//! starts at the header pool after the header. Where the header sits varies
//! from arena to arena (see `header_at`). Spans of several pools serve the
//! medium classes.
//!
//! All arena bookkeeping is behind one lock taken only on slow paths (a heap
//! needing a fresh pool, or giving one back). Arenas are kept in lists by
//! their number of free pools and, within that, by the longest run of free
//! pools a new span can take. A new span comes from the fullest arena with
//! a run that fits it (pymalloc's `usable_arenas` order, so nearly empty
//! arenas drain and can be unmapped), and finding it looks at list heads
//! only (see `Arenas::find_run`).

use crate::config::{
    ADDRESS_BITS, ARENA_MASK, ARENA_SHIFT, ARENA_SIZE, ARENA_SPARES, HEADER_BYTES, HUGE_PAGE_SIZE, MAX_SPAN_POOLS,
    POOL_SHIFT, POOL_SIZE, POOLS_PER_ARENA,
};
use crate::counters::{HeapCounters, OS_COUNTERS};
use crate::decay::{self, HugePages};
use crate::os;
use crate::pool::{Pool, PurgeClaim};
use crate::size_class::{self, Class};
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Lock, LockGuard, Ordering};
use crate::{heap, stranded};
use core::cell::Cell;
use core::ptr;

/// The header of every arena, in its header pool (see `header_at`).
#[repr(C)]
pub struct Arena {
    /// Descriptors, indexed by pool number; a span uses its first pool's.
    pools: [Pool; POOLS_PER_ARENA],
    /// For each pool number, the byte offset from this header of its
    /// span's descriptor (an offset, not an index, to save the multiply on
    /// the free path). Written when a span is handed out; read by frees.
    span_head: [Cell<u16>; POOLS_PER_ARENA],
    // Guarded by the arena lock:
    /// Bit `i` set: pool `i` is free.
    free_mask: Cell<u16>,
    /// Bit `i` set: pool `i` is free and its pages may be resident (it was
    /// used since it was last purged).
    dirty_mask: Cell<u16>,
    /// Bit `i` set: a purge pass holds free pool `i` (off the free mask)
    /// while it purges it with the lock dropped. Kept here, not only on the
    /// pass's stack, so that a forked child, where the pass does not go on,
    /// can take the pools back (`abandon_purge_claims`).
    reserved_mask: Cell<u16>,
    /// Bit `i` set: pool `i` has been handed out since the arena was mapped,
    /// so its memory may not read as zero (purging is not counted on: it
    /// skips partial pages).
    touched_mask: Cell<u16>,
    /// When a pool of this arena was last released (ms, monotonic): dirty
    /// pools are purged once the arena has been quiet for the purge delay.
    released_at: Cell<u64>,
    /// The class of the span that starts at the header pool, or `NO_CLASS`
    /// (for the stats, which take the header's bytes off that class's
    /// pools, and for `check`).
    header_span_class: Cell<u8>,
    /// Links in the arena's list (`Arena::list`).
    prev: Cell<*mut Arena>,
    next: Cell<*mut Arena>,
}

const ALL_POOLS_FREE: u16 = ((1u32 << POOLS_PER_ARENA) - 1) as u16;
/// Run lists per free count: runs 0..=MAX_SPAN_POOLS (longer runs count as
/// `MAX_SPAN_POOLS`, which holds any span).
const RUN_LISTS: usize = MAX_SPAN_POOLS + 1;
/// The arena lists, indexed by `list_of`: free count, then run.
const LISTS: usize = (POOLS_PER_ARENA + 1) * RUN_LISTS;
/// The list of empty arenas (all pools free, so the longest run is capped).
const EMPTY_LIST: usize = POOLS_PER_ARENA * RUN_LISTS + MAX_SPAN_POOLS;
const _: () = assert!(RUN_LISTS <= 16, "a count's run lists fit a u16 mask");
const NO_CLASS: u8 = u8::MAX;

const _: () = assert!(core::mem::size_of::<Arena>() <= HEADER_BYTES, "the arena header fits before its pool's blocks");
/// Pools that may hold the header (a power of two); see `header_at`.
const HEADER_POOLS: usize = 8;
const _: () = assert!(HEADER_POOLS + MAX_SPAN_POOLS <= POOLS_PER_ARENA, "a span fits after any header pool");

impl Arena {
    /// The header of a fresh arena: every pool free and clean, unlinked.
    const fn empty() -> Self {
        Self {
            pools: [const { Pool::unused() }; POOLS_PER_ARENA],
            span_head: [const { Cell::new(0) }; POOLS_PER_ARENA],
            free_mask: Cell::new(ALL_POOLS_FREE),
            dirty_mask: Cell::new(0),
            reserved_mask: Cell::new(0),
            touched_mask: Cell::new(0),
            released_at: Cell::new(0),
            header_span_class: Cell::new(NO_CLASS),
            prev: Cell::new(ptr::null_mut()),
            next: Cell::new(ptr::null_mut()),
        }
    }

    #[cfg(feature = "stats")]
    fn free_count(&self) -> usize {
        self.free_mask.get().count_ones() as usize
    }

    /// The arena's list (see [`list_of`]).
    fn list(&self) -> usize {
        list_of(self.free_mask.get(), header_pool(self.base()))
    }

    /// The arena's base address.
    fn base(&self) -> usize {
        ptr::from_ref(self) as usize & !ARENA_MASK
    }

    /// The first pool of a free run for a new span (see [`span_in`]).
    fn find_span(&self, pools: usize, from_header: bool) -> Option<usize> {
        span_in(self.free_mask.get(), header_pool(self.base()), pools, from_header)
    }
}

/// The list of an arena with free pools `free` and header pool `header`:
/// `count * RUN_LISTS + run`, where `count` is its number of free pools and
/// `run` the longest run a span can take (`span_in`), at most
/// `MAX_SPAN_POOLS`: a run outside the header pool, or one that starts at
/// it. A class that may not start at the header pool may find no room in
/// an arena whose only such run starts there (`Arenas::find_run`).
fn list_of(free: u16, header: usize) -> usize {
    let outside = longest_run(free & !(1 << header));
    let at_header = (free >> header).trailing_ones() as usize;
    let run = outside.max(at_header).min(MAX_SPAN_POOLS);
    free.count_ones() as usize * RUN_LISTS + run
}

/// The first pool of a free run of `pools` pools for a new span in an arena
/// with free pools `free` and header pool `header`, if any: at the header
/// pool when `from_header` allows it and it is free (as pymalloc fills an
/// arena from its start), else the lowest run that does not contain the
/// header pool.
fn span_in(free: u16, header: usize, pools: usize, from_header: bool) -> Option<usize> {
    let run = run_mask(header, pools);
    if from_header && free & run == run {
        return Some(header);
    }
    find_free_run(free & !(1 << header), pools)
}

/// The header pool of the arena at `base`.
#[inline(always)]
fn header_pool(base: usize) -> usize {
    (base >> ARENA_SHIFT) & (HEADER_POOLS - 1)
}

/// Where the header of the arena at `base` sits: in its header pool, which
/// consecutive arenas take in turn, at one of `HEADER_COLORS` offsets
/// within the pool's first page, which the next bits of the arena's address
/// pick. Computed from the address, so finding it costs no load.
///
/// Why not at the base: arenas are aligned to 256 KiB, so headers at their
/// bases put every arena's descriptors in the same 32 cache sets of L2
/// (1 MiB, 8-way here: sets repeat every 128 KiB). A free reads a
/// descriptor and the span-head table. Callgrind, simulating this L2, on
/// compare/'s 100k-block batch of 8..512 bytes (about 100 arenas, 5
/// rounds): 891k L2 read misses in the frees with headers at the base,
/// 369k spread over 8 pools, 96k with 16 colors within the page as well,
/// mimalloc's frees 6k. The pools alone cost 4 instructions per alloc+free
/// pair (56.6 to 60.6); the colors 3 more (62.6 to 65.6).
///
/// The colors were left out at first for those 3 instructions. They went in
/// when hashmap showed what the conflicts cost at 220 arenas: cachegrind
/// (scale 0.3, 32 KiB L1 and 1 MiB L2, both 8-way) counted an L1 miss on the
/// span-head table in 92% of frees and an L2 miss in 46%; with colors, L2
/// misses there fell from 285k to 50k, and all L2 read misses from 2.28M to
/// 2.01M (jemalloc, whose frees touch no metadata: 1.75M). btree at scale
/// 0.2: 3.92M to 3.78M.
#[inline(always)]
fn header_at(base: usize) -> *mut Arena {
    (base + header_pool(base) * POOL_SIZE + header_color(base) * HEADER_COLOR_STEP) as *mut Arena
}

/// Header offsets within the header pool's first page (see `header_at`),
/// as many as fit beside the header.
const HEADER_COLORS: usize = 16;
const HEADER_COLOR_STEP: usize = core::mem::align_of::<Arena>();
const _: () = assert!(
    core::mem::size_of::<Arena>() + (HEADER_COLORS - 1) * HEADER_COLOR_STEP <= HEADER_BYTES,
    "every color of the header fits in the header page"
);

#[inline(always)]
fn header_color(base: usize) -> usize {
    (base >> (ARENA_SHIFT + HEADER_POOLS.trailing_zeros() as usize)) & (HEADER_COLORS - 1)
}

/// The pool descriptor of the block at `p`: the header from the address
/// (`header_at`), then one load from its span-head table.
///
/// # Safety
/// `p` points into a pool span that is in use.
#[inline(always)]
pub unsafe fn pool_of(p: *const u8) -> *mut Pool {
    let base = p as usize & !ARENA_MASK;
    let arena = header_at(base);
    let index = (p as usize >> POOL_SHIFT) & (POOLS_PER_ARENA - 1);
    // SAFETY: the caller guarantees `p` lies in a live arena, whose header is
    // at `header_at` of its aligned base; `index < POOLS_PER_ARENA` by the
    // mask; the offset (from the header) names a descriptor in it.
    unsafe {
        let offset = (*arena).span_head.get_unchecked(index).get() as usize;
        arena.cast::<u8>().add(offset).cast::<Pool>()
    }
}

/// The arena-level state behind the lock.
struct Arenas {
    /// `lists[n]`: the arenas whose `Arena::list` is `n` (doubly linked).
    lists: [*mut Arena; LISTS],
    /// Bit `run` of `nonempty[count]` set: list `count * RUN_LISTS + run`
    /// has arenas.
    nonempty: [u16; POOLS_PER_ARENA + 1],
    /// Address space for arenas in the current chunk, not yet handed out:
    /// `[chunk_next, chunk_end)` (see `map_chunk`).
    chunk_next: usize,
    chunk_end: usize,
    /// A whole chunk mapped while another thread was mapping one too, to
    /// use when the current one is used up; 0 if none.
    spare_chunk: usize,
    /// Whether the next chunks may be advised for huge pages.
    huge_pages: HugePageProbe,
    /// The chunks mapped with small pages, for the collapse when the heap
    /// passes `HUGE_PAGE_AFTER_ARENAS`.
    small_chunks: ChunkList,
    collapse: Collapse,
    /// Stranded pools marked for a second look (`purge_stranded`).
    stranded: stranded::Seen,
}

// SAFETY: the raw pointers are only followed under the lock.
unsafe impl Send for Arenas {}

static ARENAS: Lock<Arenas> = Lock::new(Arenas::new());

impl Arenas {
    /// No arenas and no chunks.
    const fn new() -> Self {
        Arenas {
            lists: [ptr::null_mut(); LISTS],
            nonempty: [0; POOLS_PER_ARENA + 1],
            chunk_next: 0,
            chunk_end: 0,
            spare_chunk: 0,
            huge_pages: HugePageProbe::new(),
            small_chunks: ChunkList::new(),
            collapse: Collapse::Waiting,
            stranded: stranded::Seen::new(),
        }
    }

    /// Takes `arena` out of its list. Call before changing its free mask.
    fn unlink(&mut self, arena: &Arena) {
        let (prev, next) = (arena.prev.get(), arena.next.get());
        if prev.is_null() {
            let list = arena.list();
            self.lists[list] = next;
            if next.is_null() {
                self.nonempty[list / RUN_LISTS] &= !(1 << (list % RUN_LISTS));
            }
        } else {
            // SAFETY: linked arenas are live headers.
            unsafe { (*prev).next.set(next) };
        }
        if !next.is_null() {
            // SAFETY: as above.
            unsafe { (*next).prev.set(prev) };
        }
    }

    /// Puts `arena` at the head of the list its free mask puts it in.
    fn link(&mut self, arena: *mut Arena) {
        // SAFETY: `arena` is a live header.
        let list = unsafe { (*arena).list() };
        // SAFETY: `arena` is a live header; list heads are live headers.
        unsafe {
            let head = self.lists[list];
            (*arena).prev.set(ptr::null_mut());
            (*arena).next.set(head);
            if !head.is_null() {
                (*head).prev.set(arena);
            }
        }
        self.lists[list] = arena;
        self.nonempty[list / RUN_LISTS] |= 1 << (list % RUN_LISTS);
    }

    /// Sets `arena`'s free mask, moving it to the list that goes with it.
    fn set_free_mask(&mut self, arena: &Arena, free: u16) {
        self.unlink(arena);
        arena.free_mask.set(free);
        self.link(ptr::from_ref(arena).cast_mut());
    }

    /// Calls `visit` with every linked arena and its list, list by list,
    /// in list order.
    fn for_each(&self, mut visit: impl FnMut(usize, &Arena)) {
        for (list, &head) in self.lists.iter().enumerate() {
            let mut arena = head;
            while !arena.is_null() {
                // SAFETY: linked arenas are live headers, and `self` is
                // only reached through the lock's guard.
                let a = unsafe { &*arena };
                visit(list, a);
                arena = a.next.get();
            }
        }
    }

    /// Finds the fullest arena with a free run for a span of `pools` pools
    /// (see [`Arena::find_span`]); returns it and the span's first pool.
    /// Lists by free count, fullest first; within a count, the shortest run
    /// that fits. The head of a list whose run fits has room, so this looks
    /// at list heads only, found from the `nonempty` masks: one arena, or a
    /// few for a class that may not start at the header pool (a head whose
    /// only fitting run starts there is passed over, with its list).
    ///
    /// Why two levels: with lists by free count only (as before), an arena
    /// with enough free pools but no run long enough was walked past, and
    /// on compare/'s batch of 100k blocks of 1..32 KiB (6400 arenas, spans
    /// of up to 8 pools) that walk was 80% of the instructions, each arena a
    /// cache and TLB miss. Lists by run only made the search one look, but
    /// put nearly empty arenas with a busy pool in the middle ahead of full
    /// ones with a free tail, so fewer arenas drained.
    fn find_run(&self, pools: usize, from_header: bool) -> Option<(*mut Arena, usize)> {
        for count in pools..=POOLS_PER_ARENA {
            let mut runs = self.nonempty[count] & !((1u16 << pools) - 1);
            while runs != 0 {
                let run = runs.trailing_zeros() as usize;
                runs &= runs - 1;
                let arena = self.lists[count * RUN_LISTS + run];
                // SAFETY: the list is not empty; linked arenas are live headers.
                if let Some(first) = unsafe { (*arena).find_span(pools, from_header) } {
                    return Some((arena, first));
                }
            }
        }
        None
    }
}

/// The length of the longest run of set bits in `mask`.
fn longest_run(mut mask: u16) -> usize {
    let mut len = 0;
    while mask != 0 {
        mask &= mask >> 1;
        len += 1;
    }
    len
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

/// Hands out a span of `pools` pools for `class` (its usual span or a
/// thread's first, `size_class::class_first_span_pools`), owned by `owner`:
/// the span's descriptor, initialised, or null if the OS has no memory. The
/// owner's pool count goes up under the arena lock, so a census always
/// agrees with it. Slow path.
pub fn acquire_pool(class: Class, pools: usize, owner: usize, counters: &HeapCounters) -> *mut Pool {
    debug_assert!(pools >= 1 && pools <= size_class::class_span_pools(class));
    let header_blocks = size_class::span_blocks(class, pools, true);
    let mut arenas = ARENAS.lock();
    let (arena, first) = loop {
        if let Some(found) = arenas.find_run(pools, header_blocks != 0) {
            break found;
        }
        if arenas.out_of_chunks() {
            // Then look again: other threads may have made room while the
            // lock was dropped.
            match add_next_chunk(arenas) {
                Some(relocked) => arenas = relocked,
                None => return ptr::null_mut(),
            }
            continue;
        }
        let arena = map_arena(&mut arenas);
        if arena.is_null() {
            return ptr::null_mut();
        }
        arenas.link(arena);
        // SAFETY: just mapped and linked; the lock is held.
        match unsafe { (*arena).find_span(pools, header_blocks != 0) } {
            Some(first) => break (arena, first),
            // Unreachable: a span fits in an empty arena (asserted above).
            None => return ptr::null_mut(),
        }
    };
    // SAFETY: `arena` is a live header and the lock is held.
    let a = unsafe { &*arena };
    let run = run_mask(first, pools);
    arenas.set_free_mask(a, a.free_mask.get() & !run);
    let reused_dirty = a.dirty_mask.get() & run;
    a.dirty_mask.set(a.dirty_mask.get() & !run);
    let untouched = a.touched_mask.get() & run == 0;
    a.touched_mask.set(a.touched_mask.get() | run);
    let base = a.base();
    let at_header = first == header_pool(base);
    if at_header {
        a.header_span_class.set(class as u8);
    }
    let blocks = if at_header { header_blocks } else { size_class::span_blocks(class, pools, false) };
    counters.on_pool_acquired(class, pools, blocks);
    // Under the lock, as in `release_pools`: the dirty-byte count moves in
    // the order the masks do, so it never goes below zero for a moment.
    OS_COUNTERS.dirty_pools_reused(reused_dirty.count_ones() as usize * POOL_SIZE);
    drop(arenas);
    let pool = &a.pools[first];
    let offset = ptr::from_ref(pool) as usize - arena as usize;
    for i in first..first + pools {
        a.span_head[i].set(offset as u16);
    }
    let start = base + first * POOL_SIZE + if at_header { HEADER_BYTES } else { 0 };
    pool.init(class, start as *mut u8, blocks, pools, owner);
    if untouched {
        pool.mark_untouched();
    }
    ptr::from_ref(pool).cast_mut()
}

/// Gives spans back to their arenas in one hold of the arena lock: the
/// lists `dirty` and `clean`, each linked by `next_available` (either may be
/// null; with both null it takes no lock). Pools on `dirty` may have
/// resident pages; those on `clean` the purger purged (while they were
/// kept, or as stranded, with nothing carved since). Dirty pages stay
/// resident until the
/// arena has been quiet for the purge delay. Empty arenas stay mapped until
/// then too, so a program that frees and reallocates in waves does not pay
/// for mappings and page faults in every wave. Slow path.
///
/// The owner's pool count goes down under the arena lock (see
/// [`acquire_pool`]).
///
/// # Safety
/// Every pool on the lists is a live descriptor in use, with no block handed
/// out, not kept (or claimed back), owned by the heap whose `counters` these
/// are, and on no other list.
pub unsafe fn release_pools(dirty: *mut Pool, clean: *mut Pool, counters: &HeapCounters) {
    if dirty.is_null() && clean.is_null() {
        return;
    }
    let now = decay::now_ms();
    let mut released_dirty = 0;
    let mut arenas = ARENAS.lock();
    for (head, is_dirty) in [(dirty, true), (clean, false)] {
        let mut next = head;
        while !next.is_null() {
            // SAFETY: the caller guarantees live descriptors.
            let pool = unsafe { &*next };
            next = pool.next_available.replace(ptr::null_mut());
            let pools = pool.span_pools();
            let class = pool.class();
            let blocks = pool.capacity();
            pool.retire();
            let arena = header_at(ptr::from_ref(pool) as usize & !ARENA_MASK);
            // SAFETY: descriptors live in their arena's header.
            let a = unsafe { &*arena };
            let first = (ptr::from_ref(pool) as usize - a.pools.as_ptr() as usize) / core::mem::size_of::<Pool>();
            let run = run_mask(first, pools);
            arenas.set_free_mask(a, a.free_mask.get() | run);
            if is_dirty {
                a.dirty_mask.set(a.dirty_mask.get() | run);
                released_dirty += pools;
            }
            a.released_at.set(now);
            if first == header_pool(a.base()) {
                a.header_span_class.set(NO_CLASS);
            }
            counters.on_pool_released(class, pools, blocks);
        }
    }
    // Under the lock: counted after it, a thread taking one of these pools
    // again, or the purger purging it, could subtract first, and the count
    // would wrap below zero for a moment (a snapshot then showed a huge
    // `cached_bytes`).
    if released_dirty != 0 {
        OS_COUNTERS.dirty_pools_released(released_dirty * POOL_SIZE);
    }
    decay::note_dirty();
    drop(arenas);
    purge_inline_if_due(now);
}

/// Without a background purger, when slow paths purge next (ms).
static INLINE_PURGE_DUE: AtomicU64 = AtomicU64::new(0);

/// Without a background purger (`decay::purge_inline`): purges what is due,
/// at most every half purge delay. Called on the slow paths that make pool
/// memory dirty (releasing or keeping pools).
pub fn purge_inline_if_due(now: u64) {
    if !decay::purge_inline() {
        return;
    }
    let due = INLINE_PURGE_DUE.load(Ordering::Relaxed);
    let next = now.saturating_add(decay::settings().purge_delay_ms / 2);
    // One thread wins each turn; the others go on.
    if due <= now && INLINE_PURGE_DUE.compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        purge(now, false);
    }
}

/// Most arena runs purged per lock hold of `purge_arenas`, so other threads
/// wait for at most a short pass over the lists.
const PURGE_BATCH: usize = 32;

/// Returns memory to the OS: the free pools of quiet arenas (below) and,
/// in place, the pools heaps have kept for the purge delay (`purge_kept`).
/// Returns when the next dirty memory comes due, if any.
///
/// Arenas: dirty free pools of arenas
/// whose last release is at least the purge delay old (all of them if
/// `force`) are purged with `MADV_DONTNEED`; empty arenas beyond
/// `ARENA_SPARES` are unmapped (spares are purged instead). Returns when the
/// next arena comes due, if any is still dirty.
///
/// The pools being purged are marked in use while the lock is dropped for
/// the system calls, so no heap can take them meanwhile.
pub fn purge(now: u64, force: bool) -> Option<u64> {
    decay::earliest(purge_arenas(now, force), purge_kept(now, force))
}

/// The free pools of quiet arenas and the empty arenas (see [`purge`]).
fn purge_arenas(now: u64, force: bool) -> Option<u64> {
    let delay = decay::settings().purge_delay_ms;
    let mut next_due: Option<u64> = None;
    loop {
        let mut runs = [(ptr::null_mut::<Arena>(), 0u16); PURGE_BATCH];
        let mut run_count = 0;
        let mut doomed = [ptr::null_mut::<Arena>(); PURGE_BATCH];
        let mut doomed_count = 0;
        let mut arenas = ARENAS.lock();
        'walk: for list in (0..LISTS).rev() {
            let mut arena = arenas.lists[list];
            let mut index_in_list = 0;
            while !arena.is_null() {
                // SAFETY: linked arenas are live headers; the lock is held.
                let a = unsafe { &*arena };
                let next = a.next.get();
                let due_at = a.released_at.get().saturating_add(delay);
                let due = force || due_at <= now;
                let empty = list == EMPTY_LIST;
                let spare = empty && index_in_list < ARENA_SPARES;
                index_in_list += 1;
                if !due {
                    if a.dirty_mask.get() != 0 || (empty && !spare) {
                        next_due = decay::earliest(next_due, Some(due_at));
                    }
                } else if empty && !spare && arenas.collapse == Collapse::Running {
                    // The collapse needs its chunks mapped: next pass.
                    next_due = decay::earliest(next_due, Some(now.saturating_add(delay)));
                } else if empty && !spare {
                    if doomed_count == PURGE_BATCH {
                        break 'walk;
                    }
                    arenas.unlink(a);
                    // Out of the map under the lock, so a collapse that
                    // finds all of a chunk's arenas in it knows none is
                    // being unmapped.
                    ARENA_MAP.remove(a.base());
                    // Uncounted as it leaves the lists (see `check`).
                    OS_COUNTERS.dirty_pools_purged(a.dirty_mask.get().count_ones() as usize * POOL_SIZE, 0);
                    doomed[doomed_count] = arena;
                    doomed_count += 1;
                } else if a.dirty_mask.get() != 0 {
                    if run_count == PURGE_BATCH {
                        break 'walk;
                    }
                    // Reserve the dirty pools: in use while we purge them.
                    let dirty = a.dirty_mask.replace(0);
                    arenas.set_free_mask(a, a.free_mask.get() & !dirty);
                    a.reserved_mask.set(a.reserved_mask.get() | dirty);
                    runs[run_count] = (arena, dirty);
                    run_count += 1;
                }
                arena = next;
            }
        }
        drop(arenas);
        if run_count == 0 && doomed_count == 0 {
            return next_due;
        }
        for &(arena, mask) in &runs[..run_count] {
            // SAFETY: reserved pools keep their arena mapped.
            let base = unsafe { (*arena).base() };
            let header = header_pool(base);
            let mut bits = mask;
            while bits != 0 {
                let first = bits.trailing_zeros() as usize;
                let len = (bits >> first).trailing_ones() as usize;
                bits &= !run_mask(first, len);
                let (start, end) = (base + first * POOL_SIZE, base + (first + len) * POOL_SIZE);
                // The header pool's pages past the header only.
                let header_start = base + header * POOL_SIZE;
                let (before, after) = if (first..first + len).contains(&header) {
                    ((start, header_start), (header_start + HEADER_BYTES, end))
                } else {
                    ((start, end), (end, end))
                };
                // SAFETY: both ranges lie in reserved free pools of a live
                // arena, outside its header: nobody uses them until they are
                // given back below.
                unsafe {
                    purge_pages(before.0, before.1);
                    purge_pages(after.0, after.1);
                }
            }
        }
        for &arena in &doomed[..doomed_count] {
            // SAFETY: an unlinked empty arena: no pool of it is in use.
            unsafe { unmap_arena(arena) };
        }
        let mut arenas = ARENAS.lock();
        for &(arena, mask) in &runs[..run_count] {
            // SAFETY: reserved above, so still a live arena.
            let a = unsafe { &*arena };
            arenas.set_free_mask(a, a.free_mask.get() | mask);
            a.reserved_mask.set(a.reserved_mask.get() & !mask);
            // In the same hold as the masks, so the dirty count always
            // equals the dirty and reserved pools (`check`); a fork child
            // that returns reserved pools as dirty keeps them counted.
            let header_kept = if mask & (1 << header_pool(a.base())) != 0 { HEADER_BYTES } else { 0 };
            OS_COUNTERS.dirty_pools_purged(mask.count_ones() as usize * POOL_SIZE, header_kept);
        }
    }
}

/// Most kept pools claimed per lock hold of `purge_kept`.
const KEPT_PURGE_BATCH: usize = 128;

/// Purges in place the pages of pools heaps keep (`PoolState::Kept`) that
/// have been kept for the purge delay (all of them if `force`): the pools
/// stay with their heaps. Returns when the next kept pool comes due, if any
/// is still dirty. The claims on the pages (see `Pool::keep`) are taken
/// under the arena lock, which keeps the arenas linked while they are
/// walked; a claimed pool is in use, so its arena stays mapped after the
/// lock is dropped for the system calls.
fn purge_kept(now: u64, force: bool) -> Option<u64> {
    const _: () = assert!(POOLS_PER_ARENA < KEPT_PURGE_BATCH, "an arena's claims fit in a batch");
    let delay = decay::settings().purge_delay_ms;
    let mut next_due: Option<u64> = None;
    // Each lock hold claims at most a batch; the next one starts again at
    // the head of the list where the last stopped (lists change while the
    // lock is dropped). Pools purged already are clean and skipped.
    let mut list = 0;
    loop {
        let mut claims = [(ptr::null::<Pool>(), 0u64); KEPT_PURGE_BATCH];
        let mut claimed = 0;
        {
            let arenas = ARENAS.lock();
            'walk: while list < LISTS {
                let mut arena = arenas.lists[list];
                while !arena.is_null() {
                    // SAFETY: linked arenas are live headers; the lock is held.
                    let a = unsafe { &*arena };
                    if claimed + POOLS_PER_ARENA > KEPT_PURGE_BATCH {
                        break 'walk;
                    }
                    for pool in &a.pools {
                        match pool.claim_for_purge(now, delay, force) {
                            PurgeClaim::Nothing => {}
                            PurgeClaim::NotDue(due) => next_due = decay::earliest(next_due, Some(due)),
                            PurgeClaim::Claimed(claim) => {
                                claims[claimed] = (ptr::from_ref(pool), claim);
                                claimed += 1;
                            }
                        }
                    }
                    arena = a.next.get();
                }
                list += 1;
            }
        }
        let mut bytes = 0;
        for &(pool, claim) in &claims[..claimed] {
            // SAFETY: a claimed kept pool stays live and in use (its owner
            // cannot claim it back) until `end_purge`.
            let p = unsafe { &*pool };
            let (start, end) = p.span_extent();
            // SAFETY: the claim gives the purger the span's pages: none of
            // its blocks is out or carved, and the owner waits for the claim.
            unsafe { purge_pages(start, end) };
            bytes += end - start;
            p.end_purge(claim);
        }
        if claimed > 0 {
            OS_COUNTERS.kept_pools_purged(bytes);
        }
        if list == LISTS {
            return next_due;
        }
        // Arenas that moved to a list already walked while the lock was
        // dropped were missed: look again within the delay.
        next_due = decay::earliest(next_due, Some(now.saturating_add(delay)));
    }
}

/// Purges stranded pools (see [`crate::stranded`]), under the arena lock
/// (in short holds): claims each pool marked seen on the last pass whose list
/// nobody has taken since, purges its pages and gives it back to its owner
/// with every block free; then marks the pools reported since.
/// When to look again is `stranded::Seen::plan_next_look`'s to say.
///
/// The lock keeps every arena in the arena map mapped, so a reported or
/// seen pool, which may have been retired since, is looked at only if its
/// arena is in the map (a descriptor's place is fixed by its arena's
/// base, so an arena mapped again there holds a descriptor at it too).
pub fn purge_stranded(now: u64) -> stranded::NextLook {
    let (mut seen_count, mut purged, mut bytes) = (0, 0, 0);
    // Each `madvise` takes about 20 us here: a few per lock hold, so that
    // other threads wait for short holds only. Each batch is taken off the
    // seen list and purged in one hold, so that a fork never sees a purge
    // half done, nor a seen pool off the list and not yet looked at (it
    // could never be reported again). The list holds only the pools marked
    // on earlier passes here: this pass marks its own after the batches.
    loop {
        let mut arenas = ARENAS.lock();
        let (batch, count) = arenas.stranded.take_batch::<STRANDED_PURGE_BATCH>();
        if count == 0 {
            break;
        }
        seen_count += count;
        for &pool in batch.iter().take(count) {
            if !ARENA_MAP.contains(pool as usize) {
                continue;
            }
            // SAFETY: a descriptor in a mapped arena (above; the lock is
            // held).
            let p = unsafe { &*pool };
            if !p.claim_stranded() {
                continue;
            }
            let (start, end) = p.span_extent();
            // SAFETY: the claim gives the purger the span's blocks, all
            // free, and keeps the pool in use until `end_stranded_purge`;
            // the span's extent lies outside the arena header.
            unsafe { purge_pages(start, end) };
            bytes += end - start;
            purged += 1;
            if p.end_stranded_purge() {
                heap::put_pending(p);
            }
        }
        drop(arenas);
    }
    if purged > 0 {
        OS_COUNTERS.stranded_pools_purged(purged, bytes);
    }
    let mut arenas = ARENAS.lock();
    let seen = &mut arenas.stranded;
    let reports = seen.take_reports(|pool| {
        // SAFETY: a descriptor in a mapped arena (checked first; the lock
        // is held).
        ARENA_MAP.contains(pool as usize) && unsafe { (*pool).mark_stranded() }
    });
    seen.plan_next_look(now, seen_count, purged, reports)
}

/// Stranded pools purged per hold of the arena lock (see `purge_stranded`).
const STRANDED_PURGE_BATCH: usize = 8;

/// Arenas are mapped in chunks of this size (aligned to it: one transparent
/// huge page) and handed out one at a time.
const CHUNK_SIZE: usize = HUGE_PAGE_SIZE;
/// The heap size (in arenas) from which new chunks may be advised for
/// transparent huge pages.
const HUGE_PAGE_AFTER_ARENAS: usize = 64;
const _: () = assert!(CHUNK_SIZE % ARENA_SIZE == 0);

/// Why chunks: every `mmap` and `munmap` takes the process's memory-map lock
/// for writing, which stalls the page faults of every other thread, and an
/// aligned arena of its own costs three such calls (a map and two trims).
/// A chunk costs three per eight arenas, made with the arena lock dropped
/// (`acquire_pool`). The statistics count an arena as mapped once handed
/// out; the rest of the current chunk and a spare one (at most 3.75 MiB of
/// address space) are not counted.
///
/// Huge pages (`POOLMALLOC_HUGE_PAGES`, default 1): chunks mapped once the
/// program has `HUGE_PAGE_AFTER_ARENAS` arenas are advised for transparent
/// huge pages while their first faults stay fast (`HugePageProbe`); all
/// others are advised against them (`MADV_NOHUGEPAGE`), so small heaps use
/// small pages whatever the system-wide THP mode. The first fault of an
/// advised chunk happens here, timed, outside the arena lock.
///
/// Why probe (measured on the 2-vCPU Intel VM of BENCHMARKS.md, THP in
/// `madvise` mode): a huge page the kernel has free takes 0.22-0.35 ms to
/// fault, against 0.6-1.4 ms for 512 small-page faults, and takes the TLB
/// misses away (btree's user time -4%). But once the memory freed recently
/// is used up, each one comes from memory the host has taken back and
/// takes 4.6-5.2 ms (one btree run: 26 chunks fast, then 34 slow). On the
/// AMD VM of earlier sessions, advising every chunk ran compare/'s 1.6 GiB
/// batch of 1..32 KiB blocks in 19-23 ms a round against 48-55, and made
/// the idle workload's 4-thread fill of 1 GiB take 2.75 s against 0.42
/// (faulting under the arena lock, as it then did).
fn map_chunk(huge: bool) -> (*mut u8, u64) {
    let chunk = os::map_aligned(CHUNK_SIZE, CHUNK_SIZE, 0);
    if chunk.is_null() {
        return (chunk, 0);
    }
    let mut first_fault_ns = 0;
    // SAFETY: the fresh chunk is ours.
    unsafe {
        if huge {
            os::advise_huge_pages(chunk, CHUNK_SIZE);
            // The first touch: with a huge page free, the kernel clears all
            // 2 MiB here. It writes a zero to a fresh (zero) byte where the
            // first arena's header goes, so no content changes.
            let start = os::now_ns();
            ptr::write_volatile(header_at(chunk as usize).cast::<u8>(), 0);
            first_fault_ns = os::now_ns().saturating_sub(start);
        } else {
            // A chunk is one aligned huge page: where THP is "always", the
            // first touch of an arena would make the whole 2 MiB resident.
            os::advise_no_huge_pages(chunk, CHUNK_SIZE);
        }
    }
    (chunk, first_fault_ns)
}

/// Room for the small-page chunks: those below `HUGE_PAGE_AFTER_ARENAS`,
/// and two more that racing threads may have mapped.
const SMALL_CHUNK_SLOTS: usize = HUGE_PAGE_AFTER_ARENAS * ARENA_SIZE / CHUNK_SIZE + 2;

/// Where the collapse of the small-page chunks is (see `collapse_chunks`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Collapse {
    /// The heap has not passed `HUGE_PAGE_AFTER_ARENAS` yet.
    Waiting,
    /// A thread is collapsing, with the lock dropped.
    Running,
    Done,
}

/// A short list of chunk bases: the small-page chunks, and those a
/// collapse works on, copied out of the lock.
#[derive(Clone, Copy)]
struct ChunkList {
    bases: [usize; SMALL_CHUNK_SLOTS],
    count: usize,
}

impl ChunkList {
    const fn new() -> Self {
        ChunkList { bases: [0; SMALL_CHUNK_SLOTS], count: 0 }
    }

    /// Adds `chunk`, if there is room.
    fn push(&mut self, chunk: usize) {
        if self.count < SMALL_CHUNK_SLOTS {
            self.bases[self.count] = chunk;
            self.count += 1;
        }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bases[..self.count].iter().copied()
    }
}

/// The base of every arena of the chunk at `chunk`.
fn arenas_of_chunk(chunk: usize) -> impl Iterator<Item = usize> {
    (chunk..chunk + CHUNK_SIZE).step_by(ARENA_SIZE)
}

/// A chunk is collapsed if at least this share of its pages is resident
/// (in 1/8ths): the collapse makes the rest resident too. At a half,
/// compare/'s hashmap got four of its eight chunks collapsed (its values
/// come from `alloc_zeroed`, and most of their pages are never touched)
/// and ran in 0.333 s; at a quarter all eight, 0.312 (default 0.347;
/// `POOLMALLOC_HUGE_PAGES=2`, six alternating runs each), with the same
/// peak RSS. At 7/8 none of its chunks qualified.
const COLLAPSE_MIN_RESIDENT_EIGHTHS: usize = 2;

/// Collapses the chunks that took small pages into huge pages, once, when
/// the heap passes `HUGE_PAGE_AFTER_ARENAS` and its next chunk is the
/// first advised for huge pages. Returns the chunks it collapsed, and
/// whether a collapse was slow (then the probe backs off, and with
/// `probed` the rest stay in small pages).
///
/// Why: the first 16 MiB hold what a program allocated first, and in many
/// programs that stays in use: compare/'s hashmap and btree ran 7% and 9%
/// slower with those chunks in small pages than with huge pages from the
/// first chunk (TLB misses: the user time moved as much), which was most
/// of mimalloc's lead on both. Advising huge pages from the first chunk
/// would do it too, but rounds every small heap up to whole 2 MiB chunks
/// (larson's peak RSS +10%, strings' +15%). The collapse costs a program
/// that stays small nothing, and one that grows about 0.3-0.5 ms a chunk
/// when the kernel has huge pages free (2.3-4.3 ms for the eight, measured
/// in hashmap and btree on the Intel VM of BENCHMARKS.md; one run in
/// eight, 12.7 ms). A chunk less than a quarter resident is left alone
/// (the collapse would make all of it resident), and so are chunks with an
/// arena unmapped. The free pools of a collapsed chunk count as dirty
/// afterwards (`Arenas::end_collapse`), so the purger returns what the
/// collapse made resident in them. The chunks stay advised against huge
/// pages, so khugepaged does not collapse them again once purges have
/// split them.
fn collapse_chunks(chunks: ChunkList, probed: bool) -> (ChunkList, bool) {
    let pages_per_chunk = CHUNK_SIZE / os::page_size();
    let mut collapsed_chunks = ChunkList::new();
    let mut slow = false;
    for chunk in chunks.iter() {
        // SAFETY: `begin_collapse` found every arena of the chunk mapped,
        // and none is unmapped until the collapse is `Done`.
        let resident = unsafe { os::resident_pages(chunk as *mut u8, CHUNK_SIZE) };
        if resident * 8 < pages_per_chunk * COLLAPSE_MIN_RESIDENT_EIGHTHS {
            continue;
        }
        let start = os::now_ns();
        // SAFETY: as above; the collapse keeps every byte's value, so the
        // blocks in use and the pools known to read as zero are unchanged.
        let collapsed = unsafe { os::collapse_to_huge_page(chunk as *mut u8, CHUNK_SIZE) };
        let nanos = os::now_ns().saturating_sub(start);
        if collapsed {
            OS_COUNTERS.collapsed_chunks.fetch_add(1, Ordering::Relaxed);
            collapsed_chunks.push(chunk);
        }
        if count_slow_huge_fault(nanos, &OS_COUNTERS.slow_huge_page_faults) {
            slow = true;
            if probed {
                break;
            }
        }
    }
    (collapsed_chunks, slow)
}

/// Maps the next chunk with the arena lock dropped (see `map_chunk`) and
/// adds it; the lock, taken again, or `None` if the OS has no memory.
fn add_next_chunk(mut arenas: LockGuard<'_, Arenas>) -> Option<LockGuard<'_, Arenas>> {
    let pages = arenas.next_chunk_pages();
    let collapse = if pages == ChunkPages::Small { None } else { arenas.begin_collapse() };
    drop(arenas);
    let collapsed = collapse.map(|chunks| collapse_chunks(chunks, pages == ChunkPages::Probed));
    let (chunk, first_fault_ns) = map_chunk(pages != ChunkPages::Small);
    let mut arenas = ARENAS.lock();
    if let Some((collapsed, slow)) = collapsed {
        arenas.end_collapse(collapsed, slow);
    }
    if pages == ChunkPages::Probed {
        arenas.huge_pages.record((!chunk.is_null()).then_some(first_fault_ns));
    }
    if chunk.is_null() {
        return None;
    }

    if pages != ChunkPages::Small {
        OS_COUNTERS.huge_page_chunks.fetch_add(1, Ordering::Relaxed);
        count_slow_huge_fault(first_fault_ns, &OS_COUNTERS.slow_huge_page_faults);
    }
    if arenas.add_chunk(chunk) && pages == ChunkPages::Small {
        arenas.small_chunks.push(chunk as usize);
    }
    Some(arenas)
}

impl Arenas {
    /// True if the next chunk has no address space to cut arenas from.
    fn out_of_chunks(&self) -> bool {
        self.chunk_next == self.chunk_end && self.spare_chunk == 0
    }

    /// What pages the chunk about to be mapped gets.
    fn next_chunk_pages(&mut self) -> ChunkPages {
        if OS_COUNTERS.arena_count.load(Ordering::Relaxed) < HUGE_PAGE_AFTER_ARENAS {
            return ChunkPages::Small;
        }
        match decay::settings().huge_pages {
            HugePages::Off => ChunkPages::Small,
            HugePages::Always => ChunkPages::Huge,
            HugePages::Probed if self.huge_pages.advise_next() => ChunkPages::Probed,
            HugePages::Probed => ChunkPages::Small,
        }
    }

    /// Takes a chunk mapped while the lock was dropped: as the current one
    /// if that is used up, else as the spare; unmapped if both are taken
    /// (threads raced to map). True if taken.
    fn add_chunk(&mut self, chunk: *mut u8) -> bool {
        if self.chunk_next == self.chunk_end {
            self.chunk_next = chunk as usize;
            self.chunk_end = chunk as usize + CHUNK_SIZE;
        } else if self.spare_chunk == 0 {
            self.spare_chunk = chunk as usize;
        } else {
            // SAFETY: the chunk is fresh and nothing was cut from it.
            unsafe { os::unmap(chunk, CHUNK_SIZE) };
            return false;
        }
        true
    }

    /// Ends the collapse: the probe backs off if it was slow, and the free
    /// pools of the collapsed chunks count as dirty from now, as the
    /// collapse made their pages resident (zeros) even where they had been
    /// purged or never used.
    fn end_collapse(&mut self, collapsed: ChunkList, slow: bool) {
        self.collapse = Collapse::Done;
        if slow {
            self.huge_pages.back_off();
        }
        let now = decay::now_ms();
        let mut newly_dirty = 0;
        for chunk in collapsed.iter() {
            for base in arenas_of_chunk(chunk) {
                // SAFETY: the chunk's arenas were all mapped when the
                // collapse began, and none is unmapped before it is `Done`
                // (set above, in this hold of the lock).
                let a = unsafe { &*header_at(base) };
                let clean = a.free_mask.get() & !a.dirty_mask.get();
                if clean != 0 {
                    a.dirty_mask.set(a.dirty_mask.get() | clean);
                    a.released_at.set(now);
                    newly_dirty += clean.count_ones() as usize;
                }
            }
        }
        if newly_dirty != 0 {
            OS_COUNTERS.dirty_pools_released(newly_dirty * POOL_SIZE);
            decay::note_dirty();
        }
    }

    /// Starts the collapse, once: the small-page chunks whose arenas are all
    /// still mapped. Until it is `Done` no arena is unmapped, so those
    /// chunks stay mapped while the lock is dropped.
    fn begin_collapse(&mut self) -> Option<ChunkList> {
        if self.collapse != Collapse::Waiting {
            return None;
        }
        self.collapse = Collapse::Running;
        let mut whole = ChunkList::new();
        for chunk in self.small_chunks.iter() {
            if arenas_of_chunk(chunk).all(|arena| ARENA_MAP.contains(arena)) {
                whole.push(chunk);
            }
        }
        Some(whole)
    }

    /// Address space for one more arena, cut from the current chunk (or the
    /// spare, once the current one is used up). The caller checked
    /// `out_of_chunks`.
    fn cut_arena(&mut self) -> *mut u8 {
        if self.chunk_next == self.chunk_end {
            debug_assert!(self.spare_chunk != 0);
            self.chunk_next = self.spare_chunk;
            self.chunk_end = self.spare_chunk + CHUNK_SIZE;
            self.spare_chunk = 0;
        }
        let base = self.chunk_next;
        self.chunk_next += ARENA_SIZE;
        base as *mut u8
    }
}

/// The pages a new chunk is advised for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ChunkPages {
    Small,
    Huge,
    /// Huge, and its first fault goes to the `HugePageProbe`.
    Probed,
}

/// What a large mapping's huge-page advice becomes
/// (`large_mapping_advice`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum LargeAdvice {
    /// Leave it as it is: a probe is in flight, its verdict unknown.
    Keep,
    Small,
    Huge,
    /// Time the first fault of this huge page (the caller's), then
    /// `record_large_fault`.
    Probe(usize),
}

/// The huge-page advice for a large mapping that grew by `fresh_chunks`
/// 2 MiB units of fresh pages, from the probe arena chunks use: a slow
/// huge-page fault is the VM's state, whoever pays it. Small pages while
/// the probe backs off, the fresh units counted against the back-off as
/// chunks are; `Probe` only if the caller has a fresh huge page to time
/// (`probe_page`), else huge pages untimed while the last verdict was fast.
pub(crate) fn large_mapping_advice(fresh_chunks: usize, probe_page: Option<usize>) -> LargeAdvice {
    match decay::settings().huge_pages {
        HugePages::Off => LargeAdvice::Small,
        HugePages::Always => LargeAdvice::Huge,
        HugePages::Probed => {
            let chunks = u32::try_from(fresh_chunks).unwrap_or(u32::MAX);
            ARENAS.lock().huge_pages.large_advice(chunks, probe_page)
        }
    }
}

/// Records how long a large mapping's first huge-page fault took, after
/// `large_mapping_advice` said `Probe`; true if it was slow.
pub(crate) fn record_large_fault(first_fault_ns: u64) -> bool {
    ARENAS.lock().huge_pages.record(Some(first_fault_ns));
    OS_COUNTERS.large_huge_page_probes.fetch_add(1, Ordering::Relaxed);
    count_slow_huge_fault(first_fault_ns, &OS_COUNTERS.slow_large_huge_page_faults)
}

/// Huge pages while they come fast: after a huge-page chunk's first fault
/// took longer than `SLOW_HUGE_FAULT_NS`, the next `MIN_SMALL_PAGE_CHUNKS`
/// chunks (256 MiB) use small pages, twice as many after each further slow
/// fault (up to `MAX_SMALL_PAGE_CHUNKS`, 1 GiB); a fast one halves the
/// count. One chunk is tried at a time: threads mapping chunks together
/// would otherwise each pay a slow fault before the first is known. A fault
/// too fast to have cleared 2 MiB (`MIN_HUGE_FAULT_NS`: the kernel had no
/// huge page and mapped a small one) changes nothing.
///
/// Why so long a back-off: on the benchmark VM a slow fault stalls more
/// than its own thread (the idle workload's four threads lost about 4.5 ms
/// of wall time per slow fault, more than the fault's own 4-5 ms spread
/// over two CPUs; likely the next chunk's `mmap` waiting on the faulting
/// mapping, and the other threads' faults behind it, not checked). With a
/// back-off from 2 chunks that workload paid 10 slow faults a GiB and took
/// 0.36 s against 0.31 with small pages; from 128, one at a time, 3-4 and
/// 0.34 (jemalloc 0.34-0.36).
struct HugePageProbe {
    /// Chunks still to map with small pages.
    skip: u32,
    /// Chunks to skip after the next slow fault, less than doubled.
    backoff: u32,
    /// Advised chunks being mapped, their first fault not yet recorded.
    in_flight: u32,
}

/// About what faulting a chunk in 4 KiB pages costs (512 faults of 1.2-2.7
/// us on the 2-vCPU Intel VM of BENCHMARKS.md), and between the two kinds of
/// huge-page faults measured there (see `map_chunk`).
const SLOW_HUGE_FAULT_NS: u64 = 1_000_000;
fn is_slow_huge_fault(first_fault_ns: u64) -> bool {
    first_fault_ns > SLOW_HUGE_FAULT_NS
}

/// `is_slow_huge_fault`, counting a slow one in `slow_count` (statistics).
fn count_slow_huge_fault(first_fault_ns: u64, slow_count: &AtomicUsize) -> bool {
    let slow = is_slow_huge_fault(first_fault_ns);
    if slow {
        slow_count.fetch_add(1, Ordering::Relaxed);
    }
    slow
}

/// Clearing 2 MiB takes longer than this (a small-page fault much less).
const MIN_HUGE_FAULT_NS: u64 = 50_000;
const MIN_SMALL_PAGE_CHUNKS: u32 = 128;
const MAX_SMALL_PAGE_CHUNKS: u32 = 512;

impl HugePageProbe {
    const fn new() -> Self {
        HugePageProbe { skip: 0, backoff: 0, in_flight: 0 }
    }

    /// After a slow huge-page fault (or collapse): small pages for a while.
    fn back_off(&mut self) {
        self.backoff = (self.backoff * 2).clamp(MIN_SMALL_PAGE_CHUNKS, MAX_SMALL_PAGE_CHUNKS);
        self.skip = self.backoff;
    }

    /// Whether the chunk being mapped gets huge pages; if so, `record`
    /// must follow.
    fn advise_next(&mut self) -> bool {
        if self.in_flight > 0 {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        self.in_flight += 1;
        true
    }

    /// A large mapping's advice (see `large_mapping_advice`); `Probe`
    /// counts as in flight until `record`.
    fn large_advice(&mut self, chunks: u32, probe_page: Option<usize>) -> LargeAdvice {
        if self.in_flight > 0 {
            return LargeAdvice::Keep;
        }
        if self.skip > 0 {
            self.skip = self.skip.saturating_sub(chunks);
            return LargeAdvice::Small;
        }
        let Some(page) = probe_page else {
            return LargeAdvice::Huge;
        };
        self.in_flight += 1;
        LargeAdvice::Probe(page)
    }

    /// Records how long an advised chunk's (or a large mapping's probe
    /// page's) first touch took (`None`: the chunk could not be mapped, or
    /// nothing was timed).
    fn record(&mut self, first_fault_ns: Option<u64>) {
        self.in_flight -= 1;
        let Some(nanos) = first_fault_ns else {
            return;
        };
        if is_slow_huge_fault(nanos) {
            self.back_off();
        } else if nanos >= MIN_HUGE_FAULT_NS {
            self.backoff /= 2;
        }
    }
}

/// A new arena, cut from the chunks (the caller checked `out_of_chunks`);
/// null if the arena map has no room for it.
fn map_arena(arenas: &mut Arenas) -> *mut Arena {
    let base = arenas.cut_arena();
    if !ARENA_MAP.insert(base as usize) {
        // SAFETY: freshly mapped, not handed out.
        unsafe { os::unmap(base, ARENA_SIZE) };
        return ptr::null_mut();
    }
    let arena = header_at(base as usize);
    // SAFETY: the mapping is fresh, zeroed and holds the header where
    // `header_at` puts it;
    // zeroed memory is not a valid `Arena` for every field, so write it.
    unsafe { arena.write(Arena::empty()) };
    if OS_COUNTERS.arena_mapped() {
        // Beyond the arenas' peak: memory the large cache gives back for.
        crate::large::note_arena_growth(ARENA_SIZE);
    }
    arena
}

/// Purges the whole OS pages in `[start, end)` (pools are smaller than
/// pages only on 64 KiB-page systems).
///
/// # Safety
/// The range is mapped and holds nothing anyone needs.
unsafe fn purge_pages(start: usize, end: usize) {
    let page = os::page_size();
    let (start, end) = (start.next_multiple_of(page), end / page * page);
    if end > start {
        // SAFETY: forwarded from the caller.
        unsafe { os::purge(start as *mut u8, end - start) };
    }
}

/// # Safety
/// The arena is off every list, out of the arena map, and none of its pools
/// is in use.
unsafe fn unmap_arena(arena: *mut Arena) {
    // SAFETY: the caller's arena is mapped until the unmap below.
    let base = unsafe { (*arena).base() };
    // SAFETY: the caller owns the whole arena.
    unsafe { os::unmap(base as *mut u8, ARENA_SIZE) };
    OS_COUNTERS.arena_unmapped();
}

/// Arena totals counted under the arena lock, for the stats accounting.
#[cfg(feature = "stats")]
#[derive(Clone, Copy)]
pub struct Census {
    /// Arenas mapped.
    pub arenas: usize,
    /// Free pools in them (spare and dirty ones included).
    pub free_pools: usize,
    /// Free pools whose pages may still be resident.
    pub dirty_pools: usize,
    /// Those of them that are header pools (their header page is counted
    /// with the headers).
    pub dirty_header_pools: usize,
    /// Per class, the spans that start at a header pool (after the header).
    pub header_spans: [usize; crate::size_class::CLASS_COUNT],
}

/// Counts arenas and their free pools, and calls `read` with the count while
/// the arena lock is held: pool counts change only under that lock, so what
/// `read` reads of them agrees with the census.
#[cfg(feature = "stats")]
pub fn with_census<R>(read: impl FnOnce(Census) -> R) -> R {
    let arenas = ARENAS.lock();
    let mut census = Census {
        arenas: 0,
        free_pools: 0,
        dirty_pools: 0,
        dirty_header_pools: 0,
        header_spans: [0; crate::size_class::CLASS_COUNT],
    };
    arenas.for_each(|_, a| {
        census.arenas += 1;
        // Pools a purge pass holds are free too.
        census.free_pools += a.free_count() + a.reserved_mask.get().count_ones() as usize;
        census.dirty_pools += a.dirty_mask.get().count_ones() as usize;
        census.dirty_header_pools += (a.dirty_mask.get() >> header_pool(a.base())) as usize & 1;
        if let Some(spans) = census.header_spans.get_mut(a.header_span_class.get() as usize) {
            *spans += 1;
        }
    });
    read(census)
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

/// In a forked child: drops the claims the parent's purge passes held on
/// kept pools' pages when the fork happened (they did not survive the
/// fork), so their owner, if it is the child's thread, can use them again,
/// and gives the arenas back the free pools those passes had reserved.
/// Also forgets huge-page probes other threads had in flight (mapping a
/// chunk with the lock dropped): they will never record, and the probe
/// would wait for them for good.
pub fn abandon_purge_claims() {
    let mut arenas = ARENAS.lock();
    arenas.stranded.stop_watching();
    arenas.for_each(|_, a| a.pools.iter().for_each(Pool::abandon_purge));
    arenas.return_reserved();
    arenas.huge_pages.in_flight = 0;
    // A collapse another thread was running is abandoned with it.
    if arenas.collapse == Collapse::Running {
        arenas.collapse = Collapse::Done;
    }
}

impl Arenas {
    /// Gives every reserved pool back to its arena's free pools, as dirty:
    /// the pass that reserved it may have purged part of it or none.
    /// Giving one back moves its arena to another list, so each is found by
    /// a fresh walk (a fork child's slow path; few arenas have any).
    fn return_reserved(&mut self) {
        loop {
            let mut found: *mut Arena = ptr::null_mut();
            self.for_each(|_, a| {
                if found.is_null() && a.reserved_mask.get() != 0 {
                    found = ptr::from_ref(a).cast_mut();
                }
            });
            if found.is_null() {
                return;
            }
            // SAFETY: a linked arena is a live header; the lock is held.
            let a = unsafe { &*found };
            let reserved = a.reserved_mask.replace(0);
            self.set_free_mask(a, a.free_mask.get() | reserved);
            a.dirty_mask.set(a.dirty_mask.get() | reserved);
        }
    }
}

/// Checks the arena lists against the free masks and the `nonempty` masks,
/// the free masks and the header-pool class against each other, and the
/// dirty byte count against the dirty and reserved pools
/// (`debug-invariants`): only values written under the lock held here.
/// Returns the number of arenas.
#[cfg(feature = "debug-invariants")]
pub fn check() -> usize {
    // Failures abort with a message rather than panic: a panic allocates,
    // and the allocation may need the arena lock this check holds.
    fn require(ok: bool, message: &str) {
        if !ok {
            os::fatal(message);
        }
    }
    let arenas = ARENAS.lock();
    let mut total = 0;
    let mut dirty_or_reserved = 0;
    for (list, head) in arenas.lists.iter().enumerate() {
        let listed = arenas.nonempty[list / RUN_LISTS] & 1 << (list % RUN_LISTS) != 0;
        require(listed != head.is_null(), "arena check: a nonempty mask out of step with its list");
    }
    // The arena walked before, and its list: a list's first arena has no
    // `prev`, every other one the arena before it.
    let mut before: (usize, *mut Arena) = (usize::MAX, ptr::null_mut());
    arenas.for_each(|list, a| {
        let arena = ptr::from_ref(a).cast_mut();
        let prev = if before.0 == list { before.1 } else { ptr::null_mut() };
        before = (list, arena);
        require(a.list() == list, "arena check: an arena in the wrong list");
        require(a.prev.get() == prev, "arena check: a broken list link");
        require(contains(arena.cast()), "arena check: a linked arena missing from the arena map");
        let (free, dirty) = (a.free_mask.get(), a.dirty_mask.get());
        require(dirty & !free == 0, "arena check: a dirty pool that is not free");
        require(a.reserved_mask.get() & free == 0, "arena check: a reserved pool on the free mask");
        dirty_or_reserved += (dirty | a.reserved_mask.get()).count_ones() as usize;
        // A span starts at the header pool exactly when that pool is in
        // use: no other span may contain it (`find_span`). A header pool a
        // purge has reserved looks in use too, so only check when it is not.
        let header = 1 << header_pool(a.base());
        let header_in_use = free & header == 0;
        let class = a.header_span_class.get();
        if a.reserved_mask.get() & header == 0 {
            require(header_in_use == (class != NO_CLASS), "arena check: header pool in use without a header span");
        }
        if class != NO_CLASS {
            require(header_in_use, "arena check: a header span in a free header pool");
            require(
                size_class::class_blocks_per_header_span(class as usize) != 0,
                "arena check: a class at a header pool that cannot start there",
            );
        }
        total += 1;
    });
    // Pools a purge pass has reserved stay counted until it gives them back.
    require(
        OS_COUNTERS.dirty_pool_bytes.load(Ordering::Relaxed) == dirty_or_reserved * POOL_SIZE,
        "arena check: the dirty byte count differs from the dirty and reserved pools",
    );
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers lie in the first page of their header pools, and the headers
    /// of 128 consecutive arenas land in 128 different places modulo
    /// 128 KiB, where L2 sets repeat.
    #[test]
    fn headers_spread_over_cache_sets() {
        let mut offsets = std::collections::BTreeSet::new();
        for i in 0..4 * HEADER_POOLS * HEADER_COLORS {
            let base = (1 << 40) + i * ARENA_SIZE;
            let header = header_at(base) as usize;
            let pool_start = base + header_pool(base) * POOL_SIZE;
            assert!(header >= pool_start);
            assert!(header - pool_start + core::mem::size_of::<Arena>() <= HEADER_BYTES);
            assert_eq!(header % core::mem::align_of::<Arena>(), 0);
            offsets.insert(header % (128 << 10));
        }
        assert_eq!(offsets.len(), HEADER_POOLS * HEADER_COLORS);
    }

    #[test]
    fn free_runs() {
        assert_eq!(find_free_run(ALL_POOLS_FREE, 1), Some(0));
        assert_eq!(find_free_run(ALL_POOLS_FREE, 16), Some(0));
        assert_eq!(find_free_run(ALL_POOLS_FREE & !1, 8), Some(1));
        assert_eq!(find_free_run(0b1011_0110, 2), Some(1));
        assert_eq!(find_free_run(0b1011_0110, 3), None);
        assert_eq!(find_free_run(0, 1), None);
        assert_eq!(run_mask(3, 2), 0b1_1000);
    }

    #[test]
    fn longest_runs() {
        assert_eq!(longest_run(0), 0);
        assert_eq!(longest_run(ALL_POOLS_FREE), 16);
        assert_eq!(longest_run(0b1011_0110), 2);
        assert_eq!(longest_run(0b1110_1111_0000_0001), 4);
    }

    /// What `find_run` relies on: an arena in a list of run `pools` or more
    /// has room for a span of `pools` pools of a class that may start at
    /// the header pool, and for any class when its run lies outside the
    /// header pool; one in a list of a shorter run has room for none. A
    /// span found is free, and contains the header pool only if it starts
    /// there. Empty arenas, and only they, are in `EMPTY_LIST`.
    #[test]
    fn an_arena_holds_every_span_its_list_promises() {
        for free in 0..=u16::MAX {
            for header in 0..HEADER_POOLS {
                let list = list_of(free, header);
                assert!(list < LISTS);
                assert_eq!(list / RUN_LISTS, free.count_ones() as usize);
                assert_eq!(list == EMPTY_LIST, free == ALL_POOLS_FREE);
                let run = list % RUN_LISTS;
                let outside = longest_run(free & !(1 << header));
                for pools in 1..=MAX_SPAN_POOLS {
                    for from_header in [false, true] {
                        let found = span_in(free, header, pools, from_header);
                        let promised = run >= pools && (from_header || outside >= pools);
                        assert_eq!(found.is_some(), promised, "free {free:#b}, header {header}, {pools} pools");
                        if let Some(first) = found {
                            let span = run_mask(first, pools);
                            assert_eq!(free & span, span, "a span over pools in use");
                            assert!(first == header || span & (1 << header) == 0, "a span over the header pool");
                            assert!(from_header || first != header);
                        }
                    }
                }
            }
        }
    }

    /// Arena headers built by hand in real arena-aligned memory, and an
    /// arena-level state of their own, for tests of the lists.
    struct HandBuilt {
        memory: usize,
        layout: std::alloc::Layout,
        arenas: Arenas,
    }

    impl HandBuilt {
        fn new(count: usize) -> Self {
            let layout = std::alloc::Layout::from_size_align(count * ARENA_SIZE, ARENA_SIZE).unwrap();
            // SAFETY: a non-zero size.
            let memory = unsafe { std::alloc::alloc(layout) } as usize;
            assert_ne!(memory, 0);
            let arenas = Arenas::new();
            Self { memory, layout, arenas }
        }

        fn header_pool(&self, i: usize) -> usize {
            header_pool(self.memory + i * ARENA_SIZE)
        }

        /// Writes arena `i`'s header with free pools `free`, unlinked.
        fn make(&self, i: usize, free: u16) -> *mut Arena {
            let arena = header_at(self.memory + i * ARENA_SIZE);
            // SAFETY: `arena` lies in the block, aligned, with room (see
            // `header_at`); written before use.
            unsafe { arena.write(Arena { free_mask: Cell::new(free), ..Arena::empty() }) };
            arena
        }
    }

    impl Drop for HandBuilt {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.memory as *mut u8, self.layout) };
        }
    }

    /// The lists' order on arenas built by hand: the fullest arena that
    /// fits wins over an emptier one with a shorter fitting run, an arena
    /// whose only free pool is its header pool still serves one-pool spans,
    /// and the `nonempty` masks follow links and unlinks.
    #[test]
    fn find_run_takes_the_fullest_arena_that_fits() {
        let mut t = HandBuilt::new(2);
        // Nearly empty: only the pool after the header pool busy.
        let emptier = t.make(0, ALL_POOLS_FREE & !(1 << (t.header_pool(0) + 1)));
        // Fuller: only its header pool free.
        let fuller = t.make(1, 1 << t.header_pool(1));
        let first_at_header = t.header_pool(1);
        let arenas = &mut t.arenas;
        arenas.link(emptier);
        arenas.link(fuller);
        assert_eq!(arenas.find_run(1, true).map(|(a, _)| a), Some(fuller));
        assert_eq!(arenas.find_run(1, true).map(|(_, first)| first), Some(first_at_header));
        // A class that may not start at the header pool cannot use it.
        assert_eq!(arenas.find_run(1, false).map(|(a, _)| a), Some(emptier));
        // Once the fuller arena is full, its list empties.
        // SAFETY: a live, linked header.
        arenas.set_free_mask(unsafe { &*fuller }, 0);
        assert_eq!(arenas.find_run(1, true).map(|(a, _)| a), Some(emptier));
        assert_eq!(arenas.nonempty[1], 0);
        assert_eq!(arenas.nonempty[0], 1);
        // SAFETY: as above.
        unsafe {
            arenas.unlink(&*fuller);
            arenas.unlink(&*emptier);
        }
        assert!(arenas.nonempty.iter().all(|&m| m == 0));
        assert_eq!(arenas.find_run(1, true), None);
    }

    /// What a forked child does with pools a purge pass had reserved when
    /// the fork happened: they go back on their arenas' free masks as
    /// dirty, the arenas move to the lists that go with their masks, and
    /// no pool stays reserved.
    #[test]
    fn reserved_pools_go_back_to_their_arenas() {
        let mut t = HandBuilt::new(2);
        let a0 = t.make(0, ALL_POOLS_FREE);
        let a1 = t.make(1, 0b1111_0000_0000_0000);
        let arenas = &mut t.arenas;
        arenas.link(a0);
        arenas.link(a1);
        // Reserve as `purge_arenas` does.
        for (arena, mask) in [(a0, 0b0000_0000_1111_0110u16), (a1, 0b0011_0000_0000_0000)] {
            // SAFETY: live, linked headers.
            let a = unsafe { &*arena };
            arenas.set_free_mask(a, a.free_mask.get() & !mask);
            a.reserved_mask.set(mask);
        }
        arenas.return_reserved();
        // SAFETY: live headers.
        let (r0, r1) = unsafe { (&*a0, &*a1) };
        assert_eq!((r0.free_mask.get(), r0.dirty_mask.get(), r0.reserved_mask.get()), (ALL_POOLS_FREE, 0b1111_0110, 0));
        assert_eq!(
            (r1.free_mask.get(), r1.dirty_mask.get(), r1.reserved_mask.get()),
            (0b1111_0000_0000_0000, 0b0011_0000_0000_0000, 0)
        );
        let mut seen = 0;
        arenas.for_each(|list, a| {
            assert_eq!(list, a.list());
            seen += 1;
        });
        assert_eq!(seen, 2);
        assert_eq!(arenas.lists[EMPTY_LIST], a0);
    }

    /// The huge-page back-off: every chunk while first faults are fast,
    /// one at a time; after a slow one, `MIN_SMALL_PAGE_CHUNKS`, twice
    /// that, ... (at most `MAX_SMALL_PAGE_CHUNKS`) small-page chunks before
    /// the next try; a fast fault halves that, and one too fast to be a
    /// huge page changes nothing.
    #[test]
    fn slow_huge_page_faults_back_off_and_fast_ones_halve_it() {
        const FAST: Option<u64> = Some(MIN_HUGE_FAULT_NS * 4);
        const SLOW: Option<u64> = Some(SLOW_HUGE_FAULT_NS + 1);
        let mut probe = HugePageProbe::new();
        /// Small-page chunks until the next advised one (which it takes).
        fn skipped(probe: &mut HugePageProbe) -> usize {
            (0..).take_while(|_| !probe.advise_next()).count()
        }
        for _ in 0..3 {
            assert_eq!(skipped(&mut probe), 0);
            probe.record(FAST);
        }
        // One at a time: a chunk mapped meanwhile gets small pages, and
        // does not count as skipped.
        assert!(probe.advise_next() && !probe.advise_next());
        probe.record(Some(SLOW_HUGE_FAULT_NS));
        assert_eq!(skipped(&mut probe), 0, "exactly the threshold is not slow");
        let mut expected = MIN_SMALL_PAGE_CHUNKS as usize;
        for _ in 0..10 {
            probe.record(SLOW);
            assert_eq!(skipped(&mut probe), expected);
            expected = (expected * 2).min(MAX_SMALL_PAGE_CHUNKS as usize);
        }
        assert_eq!(expected, MAX_SMALL_PAGE_CHUNKS as usize);
        // The skip count waits for the record of the chunk in flight.
        assert!(!probe.advise_next() && !probe.advise_next());
        // A small page mapped instead of a huge one is no sign either way;
        // neither is a chunk that could not be mapped.
        probe.record(Some(MIN_HUGE_FAULT_NS / 2));
        assert_eq!(skipped(&mut probe), 0);
        probe.record(None);
        assert_eq!(skipped(&mut probe), 0);
        probe.record(SLOW);
        assert_eq!(skipped(&mut probe), MAX_SMALL_PAGE_CHUNKS as usize);
        // Fast faults halve the back-off.
        for halved in [256, 128, 64, 32, 16, 8, 4, 2, 1, 0] {
            probe.record(FAST);
            assert_eq!(probe.backoff, halved);
            assert_eq!(skipped(&mut probe), 0);
        }
        probe.record(SLOW);
        assert_eq!(skipped(&mut probe), MIN_SMALL_PAGE_CHUNKS as usize);
        probe.record(FAST);
        assert_eq!(probe.in_flight, 0);
        // A large mapping: its fresh 2 MiB units count against the
        // back-off; while a probe is in flight its advice stays as it is;
        // with nothing to time it follows the last verdict.
        const PAGE: usize = 3 * HUGE_PAGE_SIZE;
        assert!(probe.advise_next());
        assert_eq!(probe.large_advice(1, Some(PAGE)), LargeAdvice::Keep);
        probe.record(SLOW);
        assert_eq!(probe.large_advice(100, Some(PAGE)), LargeAdvice::Small);
        assert_eq!(probe.skip, MIN_SMALL_PAGE_CHUNKS - 100);
        assert_eq!(probe.large_advice(0, Some(PAGE)), LargeAdvice::Small);
        assert_eq!(probe.skip, MIN_SMALL_PAGE_CHUNKS - 100);
        assert_eq!(probe.large_advice(1000, None), LargeAdvice::Small);
        assert_eq!(probe.large_advice(1000, None), LargeAdvice::Huge);
        assert_eq!(probe.in_flight, 0);
        assert_eq!(probe.large_advice(1000, Some(PAGE)), LargeAdvice::Probe(PAGE));
        assert!(!probe.advise_next(), "a chunk waits for the large mapping's probe");
        probe.record(FAST);
        assert_eq!(probe.in_flight, 0);
    }
}
