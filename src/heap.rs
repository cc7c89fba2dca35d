//! Per-thread heaps: the fast paths, remote frees, thread start and exit.
//!
//! A heap is a record in allocator-owned memory (never freed, reused), so
//! that other threads can always push to its pending list, even after its
//! thread has exited. A thread finds its heap through a const-initialised
//! thread-local pointer without destructor; before the first allocation that
//! pointer names `EMPTY_HEAP`, whose classes all point at `EMPTY_POOL` (no
//! free block), so "not initialised" costs the same branch as "pool empty".
//!
//! Contents: statics and the thread-local; fast paths; the refill slow path;
//! remote frees; thread start and exit; the idle-heap list; collect; fork.

use crate::arena;
use crate::counters::OS_COUNTERS;
use crate::counters::{HeapCounters, Requested};
use crate::decay;
use crate::large;
use crate::os;
use crate::pool::{Block, Pool, PoolState};
use crate::remote::PendingList;
use crate::size_class::{self, CLASS_COUNT, Class};
use crate::slot::LargeSlot;
use crate::stranded;
use crate::sync::{AtomicBool, AtomicPtr, Lock, Ordering};
use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use crossbeam_utils::CachePadded;

/// A heap: for each class, the pool it allocates from (`active`), the
/// pools with free blocks (`available`) and the unused pools it keeps
/// (`kept`); and the pools other threads have freed blocks to (`pending`).
#[repr(C)]
pub struct Heap {
    active: [Cell<*mut Pool>; CLASS_COUNT],
    /// Per class, Available pools, oldest first, and sorted by address at
    /// each sweep (see the crate docs).
    available: [Cell<*mut Pool>; CLASS_COUNT],
    available_tail: [Cell<*mut Pool>; CLASS_COUNT],
    /// Per class, Kept pools (singly linked by `next_available`).
    kept: [Cell<*mut Pool>; CLASS_COUNT],
    /// Pools in the spans on the kept lists.
    kept_pools: Cell<usize>,
    /// Most pools the heap keeps now (see `keep_pool`), and whether going
    /// over it sent kept pools back since the heap last took a fresh one.
    kept_cap: Cell<usize>,
    released_over_cap: Cell<bool>,
    /// Bit `c` set: the heap's thread has taken its first span of class `c`
    /// from the arenas (see `size_class::class_first_span_pools`). Cleared
    /// when a thread adopts the heap.
    first_spans_taken: Cell<u64>,
    /// Link on the idle list while no thread owns the heap.
    next_idle: Cell<*mut Heap>,
    /// True while the heap is on the idle list: a remote free to it then
    /// wakes the purger, which takes such blocks back.
    idle: AtomicBool,
    /// The next heap record ever made (the registry the stats merge walks).
    next_record: AtomicPtr<Heap>,
    /// Instrumentation (feature `stats`; empty without it).
    counters: HeapCounters,
    /// Blocks this heap's thread freed to one other heap's pool, not yet
    /// pushed (see `free_remote`).
    outbox: Outbox,
    /// One freed large mapping kept for this heap's thread (see `large`).
    large_slot: LargeSlot,
    /// Pools whose remote list went from empty to non-empty (Treiber stack,
    /// pushed by other threads, taken whole by the owner).
    pending: CachePadded<PendingList>,
}

// SAFETY: the `Cell` fields are touched only by the heap's owner: its thread,
// or whoever holds the heap off the idle list, or the holder of the shared
// heap's lock. Other threads touch only `pending`, an atomic.
unsafe impl Sync for Heap {}

/// A pool descriptor with no blocks, shared by every class of a heap that has
/// no pool for it yet. Never written.
struct StaticPool(Pool);
// SAFETY: never written: every path that would write to a pool first checks
// `has_room`/`free`, which are false/null here, or compares it to EMPTY_POOL.
unsafe impl Sync for StaticPool {}
static EMPTY_POOL: StaticPool = StaticPool(Pool::unused());

#[inline(always)]
fn empty_pool() -> *mut Pool {
    ptr::from_ref(&EMPTY_POOL.0).cast_mut()
}

impl Heap {
    const fn new() -> Self {
        Self {
            active: [const { Cell::new(ptr::from_ref(&EMPTY_POOL.0).cast_mut()) }; CLASS_COUNT],
            available: [const { Cell::new(ptr::null_mut()) }; CLASS_COUNT],
            available_tail: [const { Cell::new(ptr::null_mut()) }; CLASS_COUNT],
            kept: [const { Cell::new(ptr::null_mut()) }; CLASS_COUNT],
            kept_pools: Cell::new(0),
            kept_cap: Cell::new(MIN_KEPT_POOLS),
            released_over_cap: Cell::new(false),
            first_spans_taken: Cell::new(0),
            next_idle: Cell::new(ptr::null_mut()),
            idle: AtomicBool::new(false),
            next_record: AtomicPtr::new(ptr::null_mut()),
            counters: HeapCounters::new(),
            outbox: Outbox::new(),
            large_slot: LargeSlot::new(),
            pending: CachePadded::new(PendingList::new()),
        }
    }

    /// The value pools store in `owner` for this heap.
    #[inline(always)]
    fn id(&self) -> usize {
        ptr::from_ref(self) as usize
    }
}

/// The heap of threads that have not allocated yet. Never owns a pool.
static EMPTY_HEAP: Heap = Heap::new();

/// The heap for allocations made while a thread has no heap of its own (in
/// the middle of setting one up, or after it was handed back at thread
/// exit). Guarded by `SHARED_LOCK`.
static SHARED_HEAP: Heap = Heap::new();
static SHARED_LOCK: Lock<()> = Lock::new(());

/// Where the calling thread is in its life with a heap.
const PHASE_NEW: u8 = 0;
const PHASE_STARTING: u8 = 1;
const PHASE_LIVE: u8 = 2;
const PHASE_EXITED: u8 = 3;

thread_local! {
    /// The calling thread's heap; `EMPTY_HEAP` until its first slow path.
    static CURRENT: Cell<*const Heap> = const { Cell::new(&raw const EMPTY_HEAP) };
    static PHASE: Cell<u8> = const { Cell::new(PHASE_NEW) };
}

#[inline(always)]
fn current() -> *const Heap {
    CURRENT.with(Cell::get)
}

// ---------------------------------------------------------------------------
// Fast paths. Each is a handful of instructions with one unlikely branch.

/// Allocates a block of `class` on the calling thread's heap.
///
/// Expected: TLS load, two dependent loads, a test, and the pop (load next,
/// store head, increment used): about 10 instructions after inlining.
/// `size` is the requested size, for the instrumentation only.
#[inline(always)]
pub fn alloc(class: Class, size: Requested) -> *mut u8 {
    let heap = current();
    // SAFETY: `heap` is EMPTY_HEAP or the thread's live heap; `active` always
    // holds EMPTY_POOL or a pool this heap owns.
    unsafe {
        let pool = (*heap).active.get_unchecked(class).get();
        if (*pool).free.get().is_null() {
            return alloc_slow(heap, class, size);
        }
        (*heap).counters.on_alloc(class, size);
        (*pool).pop()
    }
}

/// [`alloc`], the block cleared to `bytes` zero bytes. A block carved from
/// memory untouched since it was mapped is zero already but for its link
/// word (`Pool::free_is_zero`): only that is cleared, so the pages of a
/// fresh `vec![0; n]` stay untouched until used, as with a fresh mapping.
#[inline(always)]
pub fn alloc_zeroed(class: Class, size: Requested, bytes: usize) -> *mut u8 {
    let heap = current();
    // SAFETY: as in `alloc`.
    unsafe {
        let pool = (*heap).active.get_unchecked(class).get();
        if (*pool).free.get().is_null() {
            return alloc_zeroed_slow(heap, class, size, bytes);
        }
        (*heap).counters.on_alloc(class, size);
        let only_link = (*pool).free_is_zero();
        let block = (*pool).pop();
        clear(block, bytes, only_link);
        block
    }
}

#[cold]
#[inline(never)]
fn alloc_zeroed_slow(heap: *const Heap, class: Class, size: Requested, bytes: usize) -> *mut u8 {
    let block = alloc_slow(heap, class, size);
    if block.is_null() {
        return block;
    }
    // A refill pops from the active pool of the thread's heap right after
    // installing its list, so that pool's flag still describes the block;
    // the shared heap's blocks (not the current heap's) are cleared in full.
    // SAFETY: `block` is a live pool block; `current()` is EMPTY_HEAP or
    // this thread's heap, whose active pools are live.
    unsafe {
        let pool = arena::pool_of(block);
        let only_link = ptr::eq(pool, (*current()).active[class].get()) && (*pool).free_is_zero();
        clear(block, bytes, only_link);
    }
    block
}

/// Zeroes `bytes` bytes of `block`, or only its link word if the rest is
/// known to be zero.
///
/// # Safety
/// `block` is a block this thread was just handed, of at least `bytes` bytes.
#[inline(always)]
unsafe fn clear(block: *mut u8, bytes: usize, only_link: bool) {
    // SAFETY: a block holds its link word (8 bytes or more) and `bytes`.
    unsafe {
        if only_link {
            block.cast::<*mut Block>().write(ptr::null_mut());
        } else {
            ptr::write_bytes(block, 0, bytes);
        }
    }
}

/// Frees a block from a pool.
///
/// Expected: find the pool (mask, shift, one load), compare its owner with
/// the thread's heap, push, decrement the counter and branch: about 15
/// instructions after inlining.
///
/// # Safety
/// `p` was returned by [`alloc`] (of any thread) and not freed since; `size`
/// is its requested size (for the instrumentation only).
#[inline(always)]
pub unsafe fn free(p: *mut u8, size: Requested) {
    #[cfg(feature = "checked")]
    check_free(p);
    // SAFETY: `p` is a live pool block (caller), so its arena and pool exist.
    unsafe {
        let pool = arena::pool_of(p);
        let heap = current();
        if (*pool).owner.load(Ordering::Relaxed) != (*heap).id() {
            return free_remote(pool, p, size);
        }
        (*heap).counters.on_local_free((*pool).class(), size);
        if (*pool).push_local(p) {
            settle(&*heap, &*pool);
        }
    }
}

/// Block size of the live pool block `p`.
///
/// # Safety
/// `p` points into a live pool block.
pub unsafe fn block_size(p: *const u8) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { (*arena::pool_of(p)).block_size() }
}

// ---------------------------------------------------------------------------
// Slow paths.

#[cold]
#[inline(never)]
fn alloc_slow(heap: *const Heap, class: Class, size: Requested) -> *mut u8 {
    if ptr::eq(heap, &EMPTY_HEAP) {
        return match start_thread() {
            // SAFETY: a started heap is owned by this thread.
            Some(heap) => unsafe { refill(&*heap, class, size) },
            None => alloc_shared(class, size),
        };
    }
    // SAFETY: a heap other than EMPTY_HEAP in CURRENT is owned by this thread.
    unsafe { refill(&*heap, class, size) }
}

/// [`refill_block`], counted.
///
/// # Safety
/// The caller owns `heap`.
unsafe fn refill(heap: &Heap, class: Class, size: Requested) -> *mut u8 {
    // SAFETY: forwarded from the caller.
    let block = unsafe { refill_block(heap, class) };
    if !block.is_null() {
        heap.counters.on_alloc(class, size);
    }
    block
}

/// The refill slow path: finds a block of `class` for `heap` when its active
/// pool's allocation list is empty. In order: the blocks this thread freed
/// to the active pool (cache-hot), more carved from it, blocks other threads
/// freed, an available pool, a kept pool (carved afresh), a fresh pool from
/// the arenas. Null if the OS has no memory.
///
/// # Safety
/// The caller owns `heap`.
unsafe fn refill_block(heap: &Heap, class: Class) -> *mut u8 {
    flush_outbox(heap);
    let slot = &heap.active[class];
    // SAFETY: active pools are EMPTY_POOL (never written: `carve` and the
    // free check fail on it first) or pools this heap owns.
    let active = unsafe { &*slot.get() };
    // A thread's first allocation found EMPTY_POOL's empty list, then
    // adopted an idle heap whose active pool may still have blocks.
    if !active.free.get().is_null() {
        // SAFETY: the free list is not empty.
        return unsafe { active.pop() };
    }
    if active.take_local() || active.carve() {
        // SAFETY: either call put blocks on the free list.
        return unsafe { active.pop() };
    }
    take_pending(heap);
    // Carve too: if the purger purged the pool's stranded blocks, taking
    // them back made it forget them (`Pool::take_remote`).
    if active.take_local() || active.carve() {
        // SAFETY: remote frees taken back put blocks on the free list.
        return unsafe { active.pop() };
    }
    if !ptr::eq(active, empty_pool()) {
        active.set_state(PoolState::Full);
        slot.set(empty_pool());
    }
    loop {
        let candidate = heap.available[class].get();
        if candidate.is_null() {
            break;
        }
        // SAFETY: available pools are live pools this heap owns.
        let pool = unsafe { &*candidate };
        unlink_available(heap, pool);
        if !pool.take_local() && !pool.carve() {
            pool.set_state(PoolState::Full);
            continue;
        }
        pool.set_state(PoolState::Active);
        slot.set(candidate);
        heap.counters.sample_peak(class);
        // SAFETY: the free list is not empty (checked or carved above).
        return unsafe { pool.pop() };
    }
    let mut fresh = take_kept(heap, class);
    if fresh.is_null() {
        // The heap sent kept pools back and now needs fresh ones: it keeps
        // too few for its turnover.
        if heap.released_over_cap.replace(false) {
            heap.kept_cap.set((heap.kept_cap.get() * 2).min(MAX_KEPT_POOLS));
        }
        let first_span = heap.first_spans_taken.get() & 1 << class == 0;
        let pools =
            if first_span { size_class::class_first_span_pools(class) } else { size_class::class_span_pools(class) };
        fresh = arena::acquire_pool(class, pools, heap.id(), &heap.counters);
        if fresh.is_null() {
            return ptr::null_mut();
        }
        heap.first_spans_taken.set(heap.first_spans_taken.get() | 1 << class);
    }
    slot.set(fresh);
    // SAFETY: a fresh or kept pool is ours and carves from its start.
    unsafe {
        (*fresh).carve();
        (*fresh).pop()
    }
}

/// The most a heap's cap on kept pools grows to (64 MiB). Going over the
/// cap sends every kept pool back to the arenas, in one lock hold.
const MAX_KEPT_POOLS: usize = 4096;
/// What a heap keeps at first (128 KiB); see `keep_pool`.
const MIN_KEPT_POOLS: usize = 8;

/// Keeps an unused pool, off the available list, for the heap to carve
/// afresh ([`Pool::keep`]) instead of giving it back to its arena.
///
/// Why: pymalloc's rule, every pool back to its arena the moment it is
/// unused, made compare/'s batch (100k blocks of 8..512 bytes, freed in
/// random order: about 1600 pools a round) give its whole working set back
/// and take it again in every round. Keeping them: 1.86-1.96 ms a round
/// against 2.61-2.79 with the rule, mimalloc 2.04-2.12 (400 rounds a
/// process, median round, four interleaved runs each). Why the rule cost
/// that much is not understood: callgrind counts the same instructions and
/// simulated cache misses both ways (an unbounded prototype: 89.0M against
/// 89.1M for 10 rounds), and trials that took the arena lock once per 32
/// spans, or kept at most 64 pools a heap, did not help beyond the noise.
/// The cost of keeping: a heap's kept pools serve only its own thread and
/// their class, so a program whose threads or classes take turns holds more
/// (compare/'s workqueue peak RSS: 10.1-11.5 MiB before, 13.4-13.9 with a
/// fixed 64 MiB cap, 11.7-13.5 with the growing cap below, four runs each;
/// jemalloc's is 14.8-17.1).
///
/// Keeping a pool with its free list instead was tried in an earlier
/// session: the allocation phase went from 1.4-1.5 ms to 2.3-2.6 ms,
/// because refilling from that list follows the random order of the frees,
/// one dependent cache miss per block.
///
/// Kept pages do not stay resident for ever: the purger purges them in
/// place once kept for the purge delay (`arena::purge`), as it purges free
/// pools in the arenas.
///
/// How much to keep: a heap's cap starts at `MIN_KEPT_POOLS` and doubles,
/// up to `MAX_KEPT_POOLS`, whenever the heap needs a fresh pool from the
/// arenas after going over the cap sent kept pools back: it then keeps
/// about what it turns over. With a fixed 64 MiB cap, compare/'s churn
/// workload (short threads, 4 at a time) grew its RSS by more (median of 8
/// alternating runs: 1030 KiB from 10% to 100% of its threads, against 634
/// with pymalloc's rule and 728 with the growing cap), and after the idle
/// workload (four threads free 1 GiB and stay) the kept pools' arenas held
/// 6.5 MiB resident (4.5 with the growing cap, 4.2 with the rule). The batch
/// keeps its gain: its heap goes over the cap in the first rounds only.
fn keep_pool(heap: &Heap, pool: &Pool) {
    let now = decay::now_ms();
    pool.keep(now);
    let list = &heap.kept[pool.class()];
    pool.next_available.set(list.get());
    list.set(ptr::from_ref(pool).cast_mut());
    heap.kept_pools.set(heap.kept_pools.get() + pool.span_pools());
    decay::note_dirty();
    if heap.kept_pools.get() > heap.kept_cap.get() {
        release_kept(heap, false);
        heap.released_over_cap.set(true);
    }
    arena::purge_inline_if_due(now);
}

/// A Kept pool of `class`, made Active; null if there is none the purger is
/// not purging right now.
fn take_kept(heap: &Heap, class: Class) -> *mut Pool {
    let list = &heap.kept[class];
    let head = list.get();
    // SAFETY: pools on the kept list are live pools this heap owns.
    if head.is_null() || unsafe { (*head).claim_kept() }.is_none() {
        return ptr::null_mut();
    }
    // SAFETY: as above.
    let pool = unsafe { &*head };
    list.set(pool.next_available.replace(ptr::null_mut()));
    heap.kept_pools.set(heap.kept_pools.get() - pool.span_pools());
    pool.set_state(PoolState::Active);
    heap.counters.sample_peak(class);
    head
}

/// Sends the heap's Kept pools back to their arenas in one lock hold (see
/// [`claim_all_kept`] for `wait`).
fn release_kept(heap: &Heap, wait: bool) {
    let (dirty, clean) = claim_all_kept(heap, wait);
    // SAFETY: unused, claimed back from the purger, off the heap's lists
    // (linked only to each other), and this heap's.
    unsafe { arena::release_pools(dirty, clean, &heap.counters) };
}

/// Takes the heap's Kept pools off its kept lists and claims them back from
/// the purger, as two lists linked by `next_available`: those whose pages
/// may be resident, and those the purger purged. A pool the purger is
/// purging at this moment is waited for if `wait` (the heap is being swept:
/// at thread exit it would otherwise stay kept on an idle heap), else left
/// kept. Waiting is safe: a purge claim lasts a few `madvise` calls, and
/// the purger never waits for a heap.
fn claim_all_kept(heap: &Heap, wait: bool) -> (*mut Pool, *mut Pool) {
    let (mut dirty, mut clean): (*mut Pool, *mut Pool) = (ptr::null_mut(), ptr::null_mut());
    let mut still_kept = 0;
    for list in &heap.kept {
        let mut pool = list.replace(ptr::null_mut());
        while !pool.is_null() {
            // SAFETY: pools on the kept list are live pools this heap owns.
            let p = unsafe { &*pool };
            let next = p.next_available.get();
            let mut claim = p.claim_kept();
            while wait && claim.is_none() {
                os::yield_now();
                claim = p.claim_kept();
            }
            let target = match claim {
                Some(true) => &mut clean,
                Some(false) => &mut dirty,
                None => {
                    still_kept += p.span_pools();
                    p.next_available.set(list.get());
                    list.set(pool);
                    pool = next;
                    continue;
                }
            };
            p.next_available.set(*target);
            *target = pool;
            pool = next;
        }
    }
    heap.kept_pools.set(still_kept);
    (dirty, clean)
}

/// The slow path after a free (local, or remote ones taken back) drove the
/// pool's counter to zero or below: a Full pool rejoins its class's
/// available list; a pool that is not Active and has no block out is kept
/// for reuse (`keep_pool`).
#[cold]
#[inline(never)]
fn settle(heap: &Heap, pool: &Pool) {
    if pool.state() == PoolState::Full {
        make_available(heap, pool);
    }
    if pool.state() == PoolState::Available && pool.is_unused() {
        unlink_available(heap, pool);
        keep_pool(heap, pool);
    }
}

fn make_available(heap: &Heap, pool: &Pool) {
    let tail = &heap.available_tail[pool.class()];
    let last = tail.get();
    let this = ptr::from_ref(pool).cast_mut();
    pool.next_available.set(ptr::null_mut());
    pool.prev_available.set(last);
    if last.is_null() {
        heap.available[pool.class()].set(this);
    } else {
        // SAFETY: listed pools are live pools this heap owns.
        unsafe { (*last).next_available.set(this) };
    }
    pool.set_state(PoolState::Available);
    tail.set(this);
}

fn unlink_available(heap: &Heap, pool: &Pool) {
    let (prev, next) = (pool.prev_available.get(), pool.next_available.get());
    if prev.is_null() {
        heap.available[pool.class()].set(next);
    } else {
        // SAFETY: listed pools are live pools this heap owns.
        unsafe { (*prev).next_available.set(next) };
    }
    if next.is_null() {
        heap.available_tail[pool.class()].set(prev);
    } else {
        // SAFETY: as above.
        unsafe { (*next).prev_available.set(prev) };
    }
    pool.next_available.set(ptr::null_mut());
    pool.prev_available.set(ptr::null_mut());
}

/// Blocks freed by this thread to other heaps' pools, collected so that a
/// run of frees to the same pool costs one CAS instead of one each (the
/// pool's remote list is a cache line the owner also writes). One entry per
/// class, so frees that alternate between classes (a consumer freeing a
/// producer's mixed-size blocks in order) still batch; with a single entry
/// they flushed almost every block. Owner-only fields of the freeing
/// thread's heap. An entry holds at most `OUTBOX_BLOCKS` blocks or
/// `OUTBOX_BYTES`, still counted as out in their pool, until the thread frees
/// a block of the same class to another pool, the entry fills, or the thread
/// takes a slow path, calls `collect`, or exits.
struct Outbox {
    entries: [OutboxEntry; CLASS_COUNT],
    /// Bit `c` set: entry `c` holds blocks.
    in_use: Cell<u64>,
}

struct OutboxEntry {
    pool: Cell<*mut Pool>,
    head: Cell<*mut Block>,
    tail: Cell<*mut Block>,
    len: Cell<u32>,
}

/// Blocks an outbox entry holds before it is pushed. 64 until 9c35eb0:
/// compare/'s prodcons (blocks of 16 to 256 bytes, all freed by the
/// consumer) then flushed 196k times a run and took 0.28 s (median of 6
/// alternating runs); at 256, 99k flushes and 0.22 s (jemalloc 0.21-0.22).
/// The bytes cap is unchanged, so an entry holds no more memory than
/// before; only classes up to 128 bytes hold more blocks.
const OUTBOX_BLOCKS: usize = 256;
/// Bytes an outbox entry holds before it is pushed (at least one block).
const OUTBOX_BYTES: usize = 32 << 10;
const _: () = assert!(CLASS_COUNT <= 64, "the outbox's in-use mask and `first_spans_taken` are u64 masks");

/// Per class, the blocks an outbox entry holds before it is pushed.
const OUTBOX_CAPACITY: [u32; CLASS_COUNT] = {
    let mut capacity = [0u32; CLASS_COUNT];
    let mut c = 0;
    while c < CLASS_COUNT {
        let by_bytes = OUTBOX_BYTES / crate::size_class::class_size(c);
        let blocks = if by_bytes < OUTBOX_BLOCKS { by_bytes } else { OUTBOX_BLOCKS };
        capacity[c] = if blocks == 0 { 1 } else { blocks as u32 };
        c += 1;
    }
    capacity
};

impl Outbox {
    const fn new() -> Self {
        Self {
            entries: [const {
                OutboxEntry {
                    pool: Cell::new(ptr::null_mut()),
                    head: Cell::new(ptr::null_mut()),
                    tail: Cell::new(ptr::null_mut()),
                    len: Cell::new(0),
                }
            }; CLASS_COUNT],
            in_use: Cell::new(0),
        }
    }
}

/// Frees a block of a pool owned by another heap: into the thread's outbox
/// when the thread has a heap, otherwise straight onto the pool's remote
/// list.
///
/// # Safety
/// `p` is a live block of `pool`.
#[cold]
#[inline(never)]
unsafe fn free_remote(pool: *mut Pool, p: *mut u8, size: Requested) {
    let heap = current();
    if ptr::eq(heap, &EMPTY_HEAP) {
        crate::counters::count_orphan_block_free(size);
        let block = p.cast::<Block>();
        // SAFETY: `p` is a live block of `pool`, a chain of one.
        unsafe { push_remote_chain(&*pool, block, block, 1) };
        return;
    }
    // SAFETY: a heap in CURRENT other than EMPTY_HEAP is this thread's.
    let heap = unsafe { &*heap };
    heap.counters.on_remote_free(size);
    // SAFETY: `p` is live, so its pool is in use and its class fixed.
    let class = unsafe { (*pool).class() };
    let entry = &heap.outbox.entries[class];
    let block = p.cast::<Block>();
    if entry.pool.get() == pool && entry.len.get() < OUTBOX_CAPACITY[class] {
        // SAFETY: the block is ours until pushed.
        unsafe { (*block).next = entry.head.get() };
        entry.head.set(block);
        entry.len.set(entry.len.get() + 1);
        return;
    }
    flush_outbox_entry(heap, class);
    entry.pool.set(pool);
    entry.head.set(block);
    entry.tail.set(block);
    entry.len.set(1);
    heap.outbox.in_use.set(heap.outbox.in_use.get() | 1 << class);
}

/// Pushes the blocks of outbox entry `class` to their pool.
fn flush_outbox_entry(heap: &Heap, class: Class) {
    let entry = &heap.outbox.entries[class];
    if entry.len.get() == 0 {
        return;
    }
    // SAFETY: the entry holds a chain of live blocks of its pool.
    unsafe { push_remote_chain(&*entry.pool.get(), entry.head.get(), entry.tail.get(), entry.len.get() as usize) };
    entry.pool.set(ptr::null_mut());
    entry.len.set(0);
    heap.outbox.in_use.set(heap.outbox.in_use.get() & !(1 << class));
}

/// Pushes every block in the outbox to its pool.
fn flush_outbox(heap: &Heap) {
    let mut in_use = heap.outbox.in_use.get();
    while in_use != 0 {
        let class = in_use.trailing_zeros() as Class;
        in_use &= in_use - 1;
        flush_outbox_entry(heap, class);
    }
}

/// Pushes a chain of blocks to their pool's remote list; the push that makes
/// the list non-empty also puts the pool on its owner's pending list.
///
/// # Safety
/// The chain holds `len` live blocks of `pool`, linked from `head` to `tail`.
unsafe fn push_remote_chain(pool: &Pool, head: *mut Block, tail: *mut Block, len: usize) {
    // SAFETY: forwarded from the caller.
    let Ok(pushed) = (unsafe { pool.push_remote_chain(head, tail, len) }) else {
        os::fatal("double free of a block (its pool had every block free already)");
    };
    if pushed.complete {
        // The pool cannot be retired before the owner takes the list, and
        // the purger checks what it finds (`stranded`).
        stranded::note_complete(pool);
    }
    if pushed.was_empty {
        // The blocks we pushed keep the pool in use (they count as out
        // until the owner takes them), and the owner only takes them after
        // finding the pool on its pending list below, so the owner cannot
        // change meanwhile.
        put_pending(pool);
    }
}

/// Puts `pool`, whose remote list just filled, on its owner's pending list,
/// and wakes the purger if the owner's thread has exited (the purger takes
/// such heaps' remote frees back).
pub fn put_pending(pool: &Pool) {
    let owner = pool.owner.load(Ordering::Relaxed) as *const Heap;
    // SAFETY: heap records are never freed.
    let owner = unsafe { &*owner };
    owner.pending.push(pool);
    if owner.idle.load(Ordering::Relaxed) {
        decay::note_dirty();
    }
}

/// Takes back every block other threads freed to `heap`'s pools.
fn take_pending(heap: &Heap) {
    for pool in heap.pending.take_all() {
        // SAFETY: pools on the pending list are live pools this heap owns.
        let p = unsafe { &*pool };
        let taken = p.take_remote();
        heap.counters.on_remote_taken(p.class(), taken);
        if p.needs_attention() {
            settle(heap, p);
        }
    }
}

/// Returns every unused pool of `heap` to its arena: the Kept ones, and
/// Active ones with no block out (Available pools are kept as soon as they
/// are unused, see `settle`; `check_current` asserts it under
/// `debug-invariants`).
fn sweep(heap: &Heap) {
    // One lock hold for all: a thread's exit sweeps its heap, and with
    // short threads the arena lock is busy enough.
    let (mut dirty, mut clean) = claim_all_kept(heap, true);
    for class in 0..CLASS_COUNT {
        let active = heap.active[class].get();
        // SAFETY: active pools are EMPTY_POOL or pools this heap owns.
        if !ptr::eq(active, empty_pool()) && unsafe { (*active).is_unused() } {
            heap.active[class].set(empty_pool());
            // Purged as stranded and not carved since: clean.
            // SAFETY: as above.
            let list = if unsafe { (*active).pages_purged() } { &mut clean } else { &mut dirty };
            // SAFETY: as above; an Active pool is on no list, so its link
            // is free.
            unsafe { (*active).next_available.set(*list) };
            *list = active;
        }
    }
    // SAFETY: unused, claimed back or taken off the active slots, off every
    // other list, and this heap's.
    unsafe { arena::release_pools(dirty, clean, &heap.counters) };
    for class in 0..CLASS_COUNT {
        sort_available(heap, class);
    }
}

/// Sorts the class's available list by address, lowest first, for the
/// next thread (or the next refills after [`collect`]) to fill the lowest
/// pools first.
///
/// Why: pools that the blocks a thread leaves behind pin stay with its
/// heap, and the next thread that adopts the heap allocates into their free
/// blocks. Oldest first, it rotates through all of them, and its own
/// survivors land in every one, so none drains; lowest first, new blocks
/// (and so new survivors) go to the same few pools and the others empty as
/// their survivors die (jemalloc takes the oldest, lowest slab first for
/// the same reason). compare/'s churn, 12 alternating runs: the RSS of the
/// arenas' mappings (thread stacks included) 3762 KiB against 3870, peak
/// RSS 6292 against 6394. Sorting on every insertion (bounded to 8 steps)
/// saved as much on churn but often took a pool with few free blocks at a
/// refill: hashmap, larson and workqueue ran 5-9% slower (six alternating
/// runs each).
fn sort_available(heap: &Heap, class: Class) {
    let head = heap.available[class].get();
    // SAFETY: listed pools are live pools this heap owns.
    if head.is_null() || unsafe { (*head).next_available.get() }.is_null() {
        return;
    }
    let sorted = merge_sort(head);
    let mut prev: *mut Pool = ptr::null_mut();
    let mut pool = sorted;
    while !pool.is_null() {
        // SAFETY: as above.
        unsafe {
            (*pool).prev_available.set(prev);
            prev = pool;
            pool = (*pool).next_available.get();
        }
    }
    heap.available[class].set(sorted);
    heap.available_tail[class].set(prev);
}

/// Merge sort of a list linked by `next_available`, by address (recursion
/// depth: log2 of the length).
fn merge_sort(head: *mut Pool) -> *mut Pool {
    // SAFETY: the list's pools are live pools the caller owns.
    unsafe {
        if head.is_null() || (*head).next_available.get().is_null() {
            return head;
        }
        // Split in halves, the first at least as long.
        let (mut slow, mut fast) = (head, (*head).next_available.get());
        while !fast.is_null() && !(*fast).next_available.get().is_null() {
            slow = (*slow).next_available.get();
            fast = (*(*fast).next_available.get()).next_available.get();
        }
        let second = (*slow).next_available.replace(ptr::null_mut());
        let (mut a, mut b) = (merge_sort(head), merge_sort(second));
        let mut merged: *mut Pool = ptr::null_mut();
        let mut last: *mut Pool = ptr::null_mut();
        while !a.is_null() || !b.is_null() {
            let take_a = b.is_null() || (!a.is_null() && (a as usize) < (b as usize));
            let node = if take_a { a } else { b };
            if take_a {
                a = (*a).next_available.get();
            } else {
                b = (*b).next_available.get();
            }
            if last.is_null() {
                merged = node;
            } else {
                (*last).next_available.set(node);
            }
            last = node;
        }
        (*last).next_available.set(ptr::null_mut());
        merged
    }
}

fn alloc_shared(class: Class, size: Requested) -> *mut u8 {
    let _guard = SHARED_LOCK.lock();
    // SAFETY: the lock makes this thread the shared heap's owner.
    unsafe {
        let pool = &*SHARED_HEAP.active[class].get();
        if pool.free.get().is_null() {
            return refill(&SHARED_HEAP, class, size);
        }
        SHARED_HEAP.counters.on_alloc(class, size);
        pool.pop()
    }
}

/// A block of the calling thread changed its requested size in place.
pub fn note_resize(old_size: usize, new_size: usize) {
    let heap = current();
    if ptr::eq(heap, &EMPTY_HEAP) {
        crate::counters::count_orphan_free(old_size);
        crate::counters::count_orphan_alloc(new_size);
    } else {
        // SAFETY: a heap in CURRENT other than EMPTY_HEAP is this thread's.
        unsafe { (*heap).counters.on_resize(old_size, new_size) };
    }
}

/// Calls `visit` with the counters of every heap record ever made (live,
/// idle, and the shared heap).
#[cfg(feature = "stats")]
pub fn for_each_counters(mut visit: impl FnMut(&HeapCounters)) {
    visit(&SHARED_HEAP.counters);
    for_each_record(|h| visit(&h.counters));
}

/// The calling thread's large-mapping slot, if it has a heap of its own.
#[inline]
pub fn current_large_slot() -> Option<&'static LargeSlot> {
    let heap = current();
    // SAFETY: a heap in CURRENT other than EMPTY_HEAP is this thread's live
    // record, and records are never freed.
    (!ptr::eq(heap, &EMPTY_HEAP)).then(|| unsafe { &(*heap).large_slot })
}

/// [`current_large_slot`], giving the thread a heap first if it has none
/// yet (a thread whose first allocation is large).
#[inline]
pub fn current_or_new_large_slot() -> Option<&'static LargeSlot> {
    current_large_slot().or_else(|| {
        let heap = start_thread()?;
        // SAFETY: a started heap is this thread's live record.
        Some(unsafe { &(*heap).large_slot })
    })
}

/// Calls `visit` with the large-mapping slot of every heap record (the
/// shared heap never uses its own).
pub fn for_each_large_slot(mut visit: impl FnMut(&LargeSlot)) {
    for_each_record(|h| visit(&h.large_slot));
}

/// Lock-free: records are never freed and the registry only grows.
fn for_each_record(mut visit: impl FnMut(&Heap)) {
    let mut heap = ALL_HEAPS.load(Ordering::Acquire);
    while !heap.is_null() {
        // SAFETY: registered records live for the whole program.
        let h = unsafe { &*heap };
        visit(h);
        heap = h.next_record.load(Ordering::Acquire);
    }
}

/// The head of the registry of heap records.
static ALL_HEAPS: AtomicPtr<Heap> = AtomicPtr::new(ptr::null_mut());

// ---------------------------------------------------------------------------
// Thread start and exit.

static EXIT_KEY: os::ThreadExitKey = os::ThreadExitKey::new();
static FORK_HANDLERS: AtomicBool = AtomicBool::new(false);

/// Gives the calling thread a heap: an idle one (left by an exited thread,
/// with its pools) or a new one. `None` while the thread is already starting
/// or has exited; it then uses the shared heap.
#[cold]
fn start_thread() -> Option<*const Heap> {
    if PHASE.with(Cell::get) != PHASE_NEW {
        return None;
    }
    PHASE.with(|p| p.set(PHASE_STARTING));
    if !FORK_HANDLERS.swap(true, Ordering::AcqRel) {
        os::at_fork(fork_prepare, fork_parent, fork_child);
        if os::env_u64(c"POOLMALLOC_SHOW_STATS") == Some(1) {
            // The report is the crate's top layer; the hook is only named here.
            os::at_exit(crate::stats::print_exit_report);
        }
    }
    let heap = IDLE.acquire();
    if heap.is_null() {
        PHASE.with(|p| p.set(PHASE_NEW));
        return None;
    }
    if !EXIT_KEY.arm(thread_exit, heap.cast()) {
        // Without an exit hook the heap would be lost at thread exit.
        IDLE.release(heap);
        PHASE.with(|p| p.set(PHASE_NEW));
        return None;
    }
    // SAFETY: taken off the idle list (or new), so this thread owns it.
    unsafe { (*heap).first_spans_taken.set(0) };
    CURRENT.with(|c| c.set(heap));
    PHASE.with(|p| p.set(PHASE_LIVE));
    OS_COUNTERS.thread_started();
    Some(heap)
}

/// The thread-exit hook: hands the heap back. Unused pools (kept ones
/// included) return to their arenas; pools with live blocks stay with the
/// heap on the idle list, for
/// the next thread to adopt. Later allocations of this thread (in other
/// destructors) use the shared heap; its later frees are remote frees.
unsafe extern "C" fn thread_exit(value: *mut c_void) {
    let heap = value.cast::<Heap>();
    CURRENT.with(|c| c.set(&raw const EMPTY_HEAP));
    PHASE.with(|p| p.set(PHASE_EXITED));
    // SAFETY: the key was armed with this thread's heap, which it still owns.
    let h = unsafe { &*heap };
    flush_outbox(h);
    take_pending(h);
    sweep(h);
    // The next thread to adopt the heap may never free a large block; the
    // shared cache ages the mapping even without a background purger.
    large::release_slot(&h.large_slot);
    IDLE.release(heap);
    // A free pushed since take_pending may have seen the heap live, and so
    // not woken the purger: wake it for that.
    if !h.pending.is_empty() {
        decay::note_dirty();
    }
    OS_COUNTERS.thread_exited();
}

/// Heaps no thread owns: a queue guarded by a lock (slow paths only), and
/// the bump region new heap records are cut from.
///
/// Why a queue, oldest idle heap adopted first: only a heap's owner takes
/// back the blocks other threads free to it, and an idle heap has none
/// until a thread adopts it (or the purger's next full pass). As a stack,
/// the heaps below the top few were adopted rarely once there were more
/// idle heaps than threads starting at a time, and the blocks freed to them
/// pinned their pools meanwhile (compare/'s churn; the measurements are in
/// the crate docs, "Survivors pin pools").
struct IdleHeaps {
    head: *mut Heap,
    tail: *mut Heap,
    chunk_next: *mut u8,
    chunk_end: *mut u8,
}

// SAFETY: the pointers are only followed under the lock.
unsafe impl Send for IdleHeaps {}

struct IdleList(Lock<IdleHeaps>);

static IDLE: IdleList = IdleList::new();

/// Heap records are cut from mappings of this size.
const HEAP_CHUNK_SIZE: usize = 64 << 10;

impl IdleList {
    /// An empty list with no chunk to cut records from yet.
    const fn new() -> Self {
        IdleList(Lock::new(IdleHeaps {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            chunk_next: ptr::null_mut(),
            chunk_end: ptr::null_mut(),
        }))
    }

    /// An idle heap, or a new one; null if the OS has no memory.
    fn acquire(&self) -> *mut Heap {
        let mut idle = self.0.lock();
        let heap = idle.head;
        if !heap.is_null() {
            // SAFETY: idle heaps are live records.
            unsafe {
                idle.head = (*heap).next_idle.replace(ptr::null_mut());
                if idle.head.is_null() {
                    idle.tail = ptr::null_mut();
                }
                (*heap).idle.store(false, Ordering::Relaxed);
            }
            return heap;
        }
        let size = core::mem::size_of::<Heap>().next_multiple_of(core::mem::align_of::<Heap>());
        if (idle.chunk_end as usize) - (idle.chunk_next as usize) < size {
            let chunk = os::map(HEAP_CHUNK_SIZE);
            if chunk.is_null() {
                return ptr::null_mut();
            }
            idle.chunk_next = chunk;
            // SAFETY: one past the end of the fresh mapping.
            idle.chunk_end = unsafe { chunk.add(HEAP_CHUNK_SIZE) };
        }
        let heap = idle.chunk_next.cast::<Heap>();
        // SAFETY: the record lies in the chunk (checked above), page-aligned
        // chunk plus multiples of the record size keep it aligned.
        unsafe {
            idle.chunk_next = idle.chunk_next.add(size);
            heap.write(Heap::new());
            // Registered under the idle lock, so pushes do not race; Release
            // publishes the initialised record to lock-free readers.
            (*heap).next_record.store(ALL_HEAPS.load(Ordering::Relaxed), Ordering::Relaxed);
            ALL_HEAPS.store(heap, Ordering::Release);
        }
        heap
    }

    /// Puts `heap` at the tail: the heap idle longest is adopted first.
    fn release(&self, heap: *mut Heap) {
        let mut idle = self.0.lock();
        // SAFETY: the caller owned the heap; it is now the list's.
        unsafe {
            (*heap).idle.store(true, Ordering::Relaxed);
            (*heap).next_idle.set(ptr::null_mut());
            if idle.tail.is_null() {
                idle.head = heap;
            } else {
                (*idle.tail).next_idle.set(heap);
            }
        }
        idle.tail = heap;
    }

    /// Takes off the list the idle heaps that other threads have freed
    /// blocks to (the caller then owns them, linked by `next_idle`). The
    /// others stay for new threads to adopt.
    ///
    /// They come in list order, so that released again one by one they
    /// keep their turns among themselves.
    fn take_with_pending(&self) -> *mut Heap {
        let mut idle = self.0.lock();
        let mut taken: *mut Heap = ptr::null_mut();
        let mut taken_end: *mut *mut Heap = &mut taken;
        let mut link: *mut *mut Heap = &mut idle.head;
        let mut last: *mut Heap = ptr::null_mut();
        // SAFETY: idle heaps are live records, linked under the lock held;
        // `taken_end` points at `taken` or at the link of the last heap
        // taken, which this loop alone holds.
        unsafe {
            while !(*link).is_null() {
                let heap = *link;
                if (*heap).pending.is_empty() {
                    last = heap;
                    link = (*heap).next_idle.as_ptr();
                } else {
                    *link = (*heap).next_idle.replace(ptr::null_mut());
                    *taken_end = heap;
                    taken_end = (*heap).next_idle.as_ptr();
                }
            }
        }
        idle.tail = last;
        taken
    }
}

// ---------------------------------------------------------------------------
// collect and fork.

/// Takes back remote frees and returns unused pools: for the calling thread's
/// heap, every idle heap, and the shared heap.
pub fn collect() {
    let heap = current();
    if !ptr::eq(heap, &EMPTY_HEAP) {
        // SAFETY: a heap in CURRENT other than EMPTY_HEAP is ours.
        let h = unsafe { &*heap };
        flush_outbox(h);
        take_pending(h);
        sweep(h);
    }
    collect_idle();
    let _guard = SHARED_LOCK.lock();
    take_pending(&SHARED_HEAP);
    sweep(&SHARED_HEAP);
}

/// Takes back remote frees to the heaps of exited threads and returns the
/// pools that left unused (the rest went back when their threads exited).
/// The purger runs this; it owns each heap while it works on it.
pub fn collect_idle() {
    let mut idle = IDLE.take_with_pending();
    while !idle.is_null() {
        // SAFETY: taken off the list, so this thread owns it until released.
        let h = unsafe { &*idle };
        let next = h.next_idle.replace(ptr::null_mut());
        take_pending(h);
        sweep(h);
        IDLE.release(idle);
        idle = next;
    }
}

unsafe extern "C" fn fork_prepare() {
    SHARED_LOCK.lock_raw();
    IDLE.0.lock_raw();
    arena::lock_for_fork();
    large::lock_for_fork();
}

unsafe extern "C" fn fork_parent() {
    // SAFETY: taken in fork_prepare by this thread.
    unsafe {
        large::unlock_after_fork();
        arena::unlock_after_fork();
        IDLE.0.unlock_raw();
        SHARED_LOCK.unlock_raw();
    }
}

unsafe extern "C" fn fork_child() {
    // SAFETY: taken in fork_prepare by the thread that is the child's only
    // thread. Heaps of the parent's other threads stay owned by threads that
    // do not exist here; their pools are not reused in the child (their
    // large slots are: the purger steals those).
    unsafe { fork_parent() };
    // The purger thread did not survive the fork, nor its claims.
    decay::reset_after_fork();
    arena::abandon_purge_claims();
    large::reset_slots_after_fork();
}

// ---------------------------------------------------------------------------
// Checked mode.

/// Validates a pool free and aborts with a message on an invalid or double
/// free. Only with the `checked` feature.
#[cfg(feature = "checked")]
#[cold]
fn check_free(p: *mut u8) {
    if !arena::contains(p) {
        os::fatal("free of a pointer that is not a poolmalloc block (not in any arena)");
    }
    // SAFETY: `p` is in a mapped arena, so its header and descriptors exist.
    let pool = unsafe { &*arena::pool_of(p) };
    if matches!(pool.state(), PoolState::Free | PoolState::Kept) {
        os::fatal("free of a block in an unused pool (double free or invalid pointer)");
    }
    if pool.block_index(p).is_none() {
        os::fatal("free of a pointer that is not the start of a block");
    }
    // SAFETY: `current` is EMPTY_HEAP or this thread's heap.
    if pool.owner.load(Ordering::Relaxed) == unsafe { (*current()).id() } && pool.free_list_contains(p) {
        os::fatal("double free of a block");
    }
}

/// Checks every pool of the calling thread's heap (`debug-invariants`).
#[cfg(feature = "debug-invariants")]
pub fn check_current() {
    let heap = current();
    // SAFETY: CURRENT is EMPTY_HEAP or this thread's heap.
    let h = unsafe { &*heap };
    let mut kept_pools = 0;
    for class in 0..CLASS_COUNT {
        let active = h.active[class].get();
        if !ptr::eq(active, empty_pool()) {
            // SAFETY: active pools of a live heap are pools it owns.
            let a = unsafe { &*active };
            assert_eq!(a.class(), class);
            assert_eq!(a.state(), PoolState::Active);
            a.check();
        }
        let mut pool = h.kept[class].get();
        while !pool.is_null() {
            // SAFETY: kept pools are pools this heap owns.
            let p = unsafe { &*pool };
            assert_eq!(p.state(), PoolState::Kept);
            assert_eq!(p.class(), class);
            assert!(p.is_unused());
            p.check();
            kept_pools += p.span_pools();
            pool = p.next_available.get();
        }
        let mut pool = h.available[class].get();
        let mut last = ptr::null_mut();
        while !pool.is_null() {
            // SAFETY: available pools are pools this heap owns.
            let p = unsafe { &*pool };
            assert_eq!(p.state(), PoolState::Available);
            assert_eq!(p.class(), class);
            assert!(!p.is_unused());
            p.check();
            let next = p.next_available.get();
            if !next.is_null() {
                // SAFETY: as above.
                assert_eq!(unsafe { (*next).prev_available.get() }, pool);
            }
            last = pool;
            pool = next;
        }
        assert_eq!(h.available_tail[class].get(), last, "available list tail");
    }
    assert_eq!(kept_pools, h.kept_pools.get(), "kept pool count");
}

// The unit tests use real atomics; under loom only the models run.
#[cfg(all(test, not(loom)))]
mod tests;
