//! Loom models of the crate's lock-free code (run by `ci/loom.sh`).
//!
//! - [`remote_frees_come_back_exactly_once`]: the remote-free protocol, real
//!   [`Pool`]s and [`PendingList`], freers racing the owner's take and reuse.
//! - [`exited_heap_is_adopted`]: thread exit hands the heap record to an idle
//!   list while remote frees go on; another thread adopts it.
//! - [`remote_frees_to_an_exited_heap_wake_the_purger`]: the same, but the
//!   purger's pass takes the record: no remote free is left behind unless the
//!   purger is told to run again.
//! - [`lock_excludes`]: the crate's [`Lock`].
//! - [`kept_pages_are_purged_or_reused_never_both`]: the hand-over of a kept
//!   pool's pages between its owner and the purger (`Pool::keep`).
//! - [`stranded_pool_is_purged_or_reused_never_both`]: the purger's purge of
//!   a stranded pool (`stranded.rs`) against its freers and its owner's take.
//! - [`purger_wake_up_is_never_lost`]: the purger's sleep/wake handshake.
//! - [`slot_mapping_has_one_holder_and_reaches_the_purger`]: a heap's large
//!   slot (`slot.rs`), its owner's plain stores against the purger's steals.
//!
//! `heap.rs` and `decay.rs` need the OS, statics and thread-locals, so loom
//! cannot build them: the models copy the few lines of them that drive the
//! real protocol (`push_remote_chain`, `put_pending`, `take_pending`, the
//! idle list, the purger state machine), marked "copy of" below. Keep the
//! copies in step.
//!
//! Loom checks only its own atomics and cells: the pool's plain fields and
//! the blocks' link words are not race-checked. Each block therefore has a
//! loom cell standing for its contents, written by whoever holds the block,
//! so a missing happens-before between a free and the block's reuse is
//! reported as a data race.

use super::PendingList;
use crate::config::POOL_SIZE;
use crate::pool::{Block, Pool, PoolState, PurgeClaim};
use crate::size_class::{Class, class_blocks_per_span, class_of_size, class_size, class_span_pools};
use crate::slot::{LargeSlot, ModelFence, SlotGate};
use crate::sync::{AtomicBool, AtomicUsize, Lock, Ordering};
use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU32;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// Blocks of 16 KiB: four to a span (of four pools), so a handful of blocks
/// fills a span and reuse comes only from frees.
/// ("Pool" below means the span a descriptor serves.)
const BLOCK_SIZE: usize = 16384;
const BLOCKS_PER_POOL: usize = 4;
const SPAN_BYTES: usize = BLOCK_SIZE * BLOCKS_PER_POOL;

/// The class of `BLOCK_SIZE`, checked to have the shape the models count on.
fn class() -> Class {
    let class = class_of_size(BLOCK_SIZE).unwrap();
    assert_eq!(class_size(class), BLOCK_SIZE);
    assert_eq!(class_span_pools(class) * POOL_SIZE, SPAN_BYTES);
    assert_eq!(class_blocks_per_span(class), BLOCKS_PER_POOL);
    class
}

/// Runs `f` under loom, with at most two preemptions unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise (unbounded takes hours), and prints
/// how many executions it explored (`--nocapture` shows it).
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    let bound = *builder.preemption_bound.get_or_insert(2);
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = executions.clone();
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    let count = executions.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{name}: {count} executions, at most {bound} preemptions");
}

// ---------------------------------------------------------------------------
// The purger's state machine: a copy of decay.rs (`note_dirty`,
// `purger_begin_pass`, `purger_wait(None)`), the futex replaced by a mutex
// and condition variable with the futex's semantics.

const RUNNING: u32 = 1;
const IDLE: u32 = 2;

struct Purger {
    state: AtomicU32,
    futex_lock: Mutex<()>,
    futex: Condvar,
}

impl Purger {
    /// Started and awake, as when a pass is due.
    fn new() -> Self {
        Self { state: AtomicU32::new(RUNNING), futex_lock: Mutex::new(()), futex: Condvar::new() }
    }

    /// Copy of `decay::note_dirty` for a started purger.
    fn note_dirty(&self) {
        if self.state.load(Ordering::SeqCst) == IDLE
            && self.state.compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            let _futex = self.futex_lock.lock().unwrap();
            self.futex.notify_all();
        }
    }

    /// Copy of `decay::purger_begin_pass`.
    fn begin_pass(&self) -> bool {
        self.state.swap(IDLE, Ordering::SeqCst) == RUNNING
    }

    /// Copy of `decay::purger_wait(None)`: `futex_wait(&state, IDLE)`, which
    /// sleeps only if the state is still IDLE, atomically with respect to
    /// wakes. A lost wake-up leaves the purger asleep: loom reports a deadlock.
    fn wait_until_woken(&self) {
        let futex = self.futex_lock.lock().unwrap();
        if self.state.load(Ordering::SeqCst) == IDLE {
            drop(self.futex.wait(futex).unwrap());
        }
    }
}

// ---------------------------------------------------------------------------
// A heap's pools over a real buffer, and the heap record's shared part.

/// What other threads touch of heap.rs's `Heap` (which loom cannot build):
/// the pending list and the idle flag; and a cell standing for the owner's
/// fields (its lists, its pools' `Cell`s), used by every owner-only step, so
/// loom reports two owners at once (say, a record listed idle too early).
struct HeapRecord {
    pending: PendingList,
    idle: AtomicBool,
    owned: UnsafeCell<()>,
}

impl HeapRecord {
    /// Claims, for one owner-only step, the fields only the owner may use.
    fn own(&self) {
        self.owned.with_mut(|_| ());
    }
}

/// One heap's pools over a real, pool-aligned buffer.
struct World {
    _memory: Vec<u8>,
    start: usize,
    pools: Vec<Pool>,
    heap: HeapRecord,
    purger: Purger,
    /// Stands for each block's contents: written by whoever holds the block.
    contents: Vec<UnsafeCell<usize>>,
}

// SAFETY: as for heap.rs's `Heap`: a pool's `Cell`s are used only by its
// owner (one thread at a time, handed over through the idle list or a join);
// other threads touch only atomics (`remote`, `owner`, `next_pending`, the
// record) and the blocks they hold.
unsafe impl Sync for World {}
// SAFETY: as above; the buffer and pools never move (they are behind an Arc).
unsafe impl Send for World {}

impl World {
    /// `pool_count` pools owned by the record, every block handed out to the
    /// owner (returned as addresses).
    fn new(pool_count: usize) -> (Arc<World>, Vec<usize>) {
        let class = class();
        let mut memory = vec![0u8; pool_count * SPAN_BYTES + POOL_SIZE];
        let start = (memory.as_mut_ptr() as usize).next_multiple_of(POOL_SIZE);
        let world = Arc::new(World {
            _memory: memory,
            start,
            pools: (0..pool_count).map(|_| Pool::unused()).collect(),
            heap: HeapRecord { pending: PendingList::new(), idle: AtomicBool::new(false), owned: UnsafeCell::new(()) },
            purger: Purger::new(),
            contents: (0..pool_count * BLOCKS_PER_POOL).map(|_| UnsafeCell::new(0)).collect(),
        });
        let owner = core::ptr::from_ref(&world.heap) as usize;
        let mut held = Vec::new();
        for (i, pool) in world.pools.iter().enumerate() {
            pool.init(
                class,
                (start + i * SPAN_BYTES) as *mut u8,
                class_blocks_per_span(class),
                class_span_pools(class),
                owner,
            );
            // Every block of the span, whatever the carve batches.
            while !pool.free.get().is_null() || pool.carve() {
                // SAFETY: the free list is not empty (checked or carved).
                let block = unsafe { pool.pop() } as usize;
                world.touch(block);
                held.push(block);
            }
        }
        (world, held)
    }

    fn block_id(&self, block: usize) -> usize {
        let id = (block - self.start) / BLOCK_SIZE;
        assert!(id < self.contents.len() && (block - self.start) % BLOCK_SIZE == 0, "not a block");
        id
    }

    fn pool_of(&self, block: usize) -> &Pool {
        &self.pools[self.block_id(block) / BLOCKS_PER_POOL]
    }

    fn pool_index(&self, pool: *mut Pool) -> usize {
        let index = self.pools.iter().position(|p| core::ptr::eq(p, pool));
        index.expect("a pending pool that is not the heap's")
    }

    /// Uses a held block: loom reports a race if the block's previous holder
    /// did not hand it over with a happens-before edge.
    fn touch(&self, block: usize) {
        // SAFETY: the caller holds the block, so it is the cell's only user.
        self.contents[self.block_id(block)].with_mut(|c| unsafe { *c = block });
    }

    /// Frees a block the calling thread holds but does not own (heap.rs's
    /// `free_remote` without the outbox: a chain of one).
    fn free_remote(&self, block: usize) {
        self.free_remote_chain(&[block]);
    }

    /// Frees blocks of one pool the calling thread holds but does not own,
    /// as one chain. Copy of heap.rs's `push_remote_chain`, except that it
    /// returns `complete` for the caller to report (heap.rs calls
    /// `stranded::note_complete`, whose ring is a static).
    fn free_remote_chain(&self, blocks: &[usize]) -> bool {
        for (i, &block) in blocks.iter().enumerate() {
            self.touch(block);
            let next = blocks.get(i + 1).map_or(core::ptr::null_mut(), |&n| n as *mut Block);
            // SAFETY: the caller holds the block: its link word is ours.
            unsafe { (*(block as *mut Block)).next = next };
        }
        let pool = self.pool_of(blocks[0]);
        let (head, tail) = (blocks[0] as *mut Block, blocks[blocks.len() - 1] as *mut Block);
        // SAFETY: the blocks were handed out by `pool`, are freed once, and
        // are linked from `head` to `tail` above.
        let pushed = unsafe { pool.push_remote_chain(head, tail, blocks.len()) }.expect("double free");
        if pushed.was_empty {
            self.put_pending(pool);
        }
        pushed.complete
    }

    /// Puts `pool`, whose remote list just filled, on its owner's pending
    /// list. Copy of heap.rs's `put_pending`.
    fn put_pending(&self, pool: &Pool) {
        let owner = pool.owner.load(Ordering::Relaxed) as *const HeapRecord;
        // SAFETY: heap records outlive their pools (here: both in `self`).
        let owner = unsafe { &*owner };
        owner.pending.push(pool);
        if owner.idle.load(Ordering::Relaxed) {
            self.purger.note_dirty();
        }
    }

    /// Takes back the remote frees. Copy of heap.rs's `take_pending` (without
    /// `settle`, which needs the arenas). Owner only. Checks that no pool was
    /// on the pending list twice.
    fn take_pending(&self) {
        self.heap.own();
        let mut seen = Vec::new();
        for pool in self.heap.pending.take_all() {
            let index = self.pool_index(pool);
            assert!(!seen.contains(&index), "pool {index} on the pending list twice");
            seen.push(index);
            self.pools[index].take_remote();
        }
    }

    /// Allocates every free block again, as the owner would. Owner only.
    fn pop_all(&self, held: &mut Vec<usize>) {
        self.heap.own();
        for pool in &self.pools {
            pool.take_local();
            while !pool.free.get().is_null() {
                // SAFETY: the free list is not empty.
                let block = unsafe { pool.pop() } as usize;
                self.touch(block);
                held.push(block);
            }
        }
    }

    /// Allocates every block `pool` can hand out, as the refill path would:
    /// its free list, then (copy of heap.rs's `refill_block`)
    /// `take_local() || carve()`, which carves a pool that forgot its blocks
    /// afresh. Writes each block it gets. Owner only. Returns the blocks and
    /// whether it carved.
    fn alloc_all(&self, pool: &Pool) -> (Vec<usize>, bool) {
        self.heap.own();
        let (mut got, mut carved) = (Vec::new(), false);
        loop {
            if pool.free.get().is_null() && !pool.take_local() {
                if !pool.carve() {
                    break;
                }
                carved = true;
            }
            // SAFETY: the free list is not empty (checked, moved or carved).
            let block = unsafe { pool.pop() } as usize;
            assert!(!got.contains(&block), "block {} handed out twice", self.block_id(block));
            self.touch(block);
            got.push(block);
        }
        (got, carved)
    }

    /// Frees blocks the owner holds, as the owner would (`push_local`).
    /// Owner only.
    fn free_local(&self, blocks: &[usize]) {
        self.heap.own();
        for &block in blocks {
            self.touch(block);
            // SAFETY: a block of this pool, handed out and freed once.
            unsafe { self.pool_of(block).push_local(block as *mut u8) };
        }
    }

    /// True if some block is on a remote list: freed, not yet taken back.
    fn has_remote_frees(&self) -> bool {
        self.pools.iter().any(|p| p.remote.load(Ordering::Acquire) != 0)
    }

    /// After every thread is done and the owner took its pending list one
    /// last time: nothing is left on a remote list, and each block is exactly
    /// once either held or free, with the pool counters to match.
    fn check_accounting(&self, held: &[usize]) {
        assert!(!self.has_remote_frees(), "blocks left on a remote list: a pool missed the pending list");
        assert!(self.heap.pending.take_all().next().is_none(), "a pool left on the pending list");
        let mut count = vec![0usize; self.contents.len()];
        for &block in held {
            count[self.block_id(block)] += 1;
        }
        for (i, pool) in self.pools.iter().enumerate() {
            let held_here = held.iter().filter(|&&b| self.block_id(b) / BLOCKS_PER_POOL == i).count();
            assert_eq!(pool.blocks_out() as usize, held_here, "pool {i}: blocks_out is off");
            for head in [pool.free.get(), pool.local_free.get()] {
                let mut block = head;
                let mut walked = 0;
                while !block.is_null() {
                    walked += 1;
                    assert!(walked <= BLOCKS_PER_POOL, "pool {i}: free list has a cycle");
                    count[self.block_id(block as usize)] += 1;
                    // SAFETY: free-list blocks are free blocks of this pool.
                    block = unsafe { (*block).next };
                }
            }
            pool.check();
        }
        for (id, &n) in count.iter().enumerate() {
            assert!(n == 1, "block {id} is {n} times held or free (lost or handed out twice)");
        }
    }
}

// ---------------------------------------------------------------------------
// The models.

/// Three threads free blocks of two pools (the owner is the main thread)
/// while the owner takes its pending list and reuses what came back. Two
/// pools, so that a pool pushed again while the owner walks the list could
/// cut the other one off.
#[test]
fn remote_frees_come_back_exactly_once() {
    model("remote_frees_come_back_exactly_once", || {
        let (world, mut held) = World::new(2);
        // Blocks 0..3 of each pool go to the freers; the owner keeps block 3.
        let given = [[held[0], held[4]], [held[1], held[5]], [held[2], held[6]]];
        held.retain(|b| !given.iter().flatten().any(|g| g == b));
        let freers: Vec<_> = given
            .into_iter()
            .map(|blocks| {
                let world = world.clone();
                thread::spawn(move || blocks.into_iter().for_each(|b| world.free_remote(b)))
            })
            .collect();
        world.take_pending();
        world.pop_all(&mut held);
        for freer in freers {
            freer.join().unwrap();
        }
        world.take_pending();
        world.check_accounting(&held);
    });
}

/// The idle list of heap records: a copy of heap.rs's `IdleList` (its lock
/// is the crate's Lock) holding at most our one record.
struct IdleList(Lock<bool>);

impl IdleList {
    /// Copy of `IdleList::release`.
    fn release(&self, heap: &HeapRecord) {
        let mut listed = self.0.lock();
        heap.idle.store(true, Ordering::Relaxed);
        *listed = true;
    }

    /// Copy of `IdleList::acquire` when a record is idle; true if the caller
    /// now owns the record.
    fn acquire(&self, heap: &HeapRecord) -> bool {
        let mut listed = self.0.lock();
        let adopted = core::mem::replace(&mut *listed, false);
        if adopted {
            heap.idle.store(false, Ordering::Relaxed);
        }
        adopted
    }

    /// Copy of `IdleList::take_with_pending` (the purger's pass): takes the
    /// record if other threads freed blocks to it; the caller then owns it,
    /// still marked idle.
    fn take_with_pending(&self, heap: &HeapRecord) -> bool {
        let mut listed = self.0.lock();
        let taken = *listed && !heap.pending.is_empty();
        if taken {
            *listed = false;
        }
        taken
    }
}

/// The owner (main thread) exits while another thread frees two of its
/// blocks: it takes its pending list and puts its record on the idle list
/// (copy of heap.rs's `thread_exit`, without the sweep, which needs the
/// arenas). A new thread adopts the record if it is idle by then, takes the
/// pending list and reuses the blocks; the frees may land before, during or
/// after all that.
#[test]
fn exited_heap_is_adopted() {
    model("exited_heap_is_adopted", || {
        let (world, mut held) = World::new(2);
        let idle = Arc::new(IdleList(Lock::new(false)));
        let given = [held[0], held[4]];
        held.retain(|b| !given.contains(b));
        let freer = {
            let world = world.clone();
            thread::spawn(move || given.into_iter().for_each(|b| world.free_remote(b)))
        };
        let adopter = {
            let (world, idle) = (world.clone(), idle.clone());
            thread::spawn(move || {
                // Not yet idle: the thread would cut a new record instead.
                // (Waiting here would let loom starve the owner forever.)
                let mut reused = Vec::new();
                if idle.acquire(&world.heap) {
                    world.take_pending();
                    world.pop_all(&mut reused);
                }
                reused
            })
        };
        world.take_pending();
        idle.release(&world.heap);
        freer.join().unwrap();
        held.extend(adopter.join().unwrap());
        // The adopter (or, if it found nothing, the idle list) is done: take
        // the pending list as the record's next owner.
        world.take_pending();
        world.check_accounting(&held);
    });
}

/// As above, but no thread adopts the record: the purger's pass takes it
/// off the idle list if it has pending frees, takes them and puts it back. A
/// remote free left behind must have woken the purger (its freer saw the
/// record idle), or the owner's exit did (a free landing between the
/// owner's take and its release sees the record live), so the purger runs
/// another pass instead of sleeping. Checks heap.rs's `idle` flag, read
/// after the pending push, and `PendingList::is_empty` against the purger's
/// state machine.
#[test]
fn remote_frees_to_an_exited_heap_wake_the_purger() {
    model("remote_frees_to_an_exited_heap_wake_the_purger", || {
        let (world, mut held) = World::new(2);
        let idle = Arc::new(IdleList(Lock::new(false)));
        let given = [held[0], held[4]];
        held.retain(|b| !given.contains(b));
        let freer = {
            let world = world.clone();
            thread::spawn(move || given.into_iter().for_each(|b| world.free_remote(b)))
        };
        // One pass of purger.rs's loop, as far as it concerns idle heaps.
        let purger = {
            let (world, idle) = (world.clone(), idle.clone());
            thread::spawn(move || {
                world.purger.begin_pass();
                if idle.take_with_pending(&world.heap) {
                    world.take_pending();
                    idle.release(&world.heap);
                }
            })
        };
        // Copy of heap.rs's `thread_exit`.
        world.take_pending();
        idle.release(&world.heap);
        if !world.heap.pending.is_empty() {
            world.purger.note_dirty();
        }
        freer.join().unwrap();
        purger.join().unwrap();
        if world.has_remote_frees() {
            assert_eq!(world.purger.state.load(Ordering::Acquire), RUNNING, "remote frees stranded, purger asleep");
        }
        world.take_pending();
        world.check_accounting(&held);
    });
}

/// Two threads increment a counter under the crate's Lock, reading and
/// writing it in two steps: without mutual exclusion, or without the lock's
/// Acquire/Release, an increment is lost or two holders meet inside; a
/// waiter whose wake-up is lost (the unlock skipping the wake, or a
/// contended acquire taking the word as LOCKED) shows as a deadlock, as
/// the futex is modelled (see `sync::Lock`). All four mutations were tried.
#[test]
fn lock_excludes() {
    model("lock_excludes", || {
        let lock = Arc::new(Lock::new(()));
        let counter = Arc::new(AtomicUsize::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let increment = {
            let (lock, counter, inside) = (lock.clone(), counter.clone(), inside.clone());
            move || {
                let _guard = lock.lock();
                assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0, "two holders");
                let value = counter.load(Ordering::Relaxed);
                counter.store(value + 1, Ordering::Relaxed);
                inside.fetch_sub(1, Ordering::Relaxed);
            }
        };
        let other = thread::spawn(increment.clone());
        increment();
        other.join().unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 2);
    });
}

/// A kept pool's pages, between its owner and the purger (`Pool::keep`):
/// the owner keeps the pool, then claims it back to carve it (twice, as the
/// first claim may find the purger at work); the purger claims the pages
/// for a purge. A loom cell stands for the pages: the purge writes it, and
/// so does the owner's carving, so a purge not ordered before the owner's
/// reuse is reported as a data race, and the owner reusing pages while they
/// are purged too. Afterwards the pool is either the owner's again or
/// still kept, and the purger's claim was given back; a claim that says
/// "clean" finds the pages purged. Mutations tried: the owner claiming a
/// purging pool (a swap instead of the check: it reads the pages while the
/// purge writes them, or calls them clean before the purge), and
/// `end_purge` with Relaxed (a race); the model fails on both.
#[test]
fn kept_pages_are_purged_or_reused_never_both() {
    model("kept_pages_are_purged_or_reused_never_both", || {
        let pool = Arc::new(Pool::unused());
        let pages = Arc::new(UnsafeCell::new(1u8));
        let purger = {
            let (pool, pages) = (pool.clone(), pages.clone());
            thread::spawn(move || match pool.claim_for_purge(10, 5, false) {
                PurgeClaim::Claimed(claim) => {
                    // SAFETY (model): the claim gives the purger the pages.
                    pages.with_mut(|p| unsafe { *p = 0 });
                    pool.end_purge(claim);
                    true
                }
                PurgeClaim::NotDue(_) => unreachable!("kept at 0, delay 5, now 10"),
                PurgeClaim::Nothing => false,
            })
        };
        pool.keep(0);
        let mut reused = false;
        for _ in 0..2 {
            if let Some(clean) = pool.claim_kept() {
                // SAFETY (model): the owner's claim gives it the pages.
                assert_eq!(clean, pages.with(|p| unsafe { *p }) == 0, "clean means purged");
                pages.with_mut(|p| unsafe { *p = 1 });
                reused = true;
                break;
            }
            thread::yield_now();
        }
        let purged = purger.join().unwrap();
        if !reused {
            // The purger held the pages through both tries: it purged them.
            assert!(purged);
            assert_eq!(pool.claim_kept(), Some(true), "the purge is over, so the owner gets the pool clean");
        }
    });
}

/// A stranded pool (`stranded.rs`): every block of it freed by other
/// threads, the purger purging it in place while its owner may come back
/// for the blocks. One Full pool (four blocks), all handed out. Two freers
/// each free two blocks as one chain (an outbox flush); the second push
/// completes the list, unless the owner took the first. The purger makes two passes, as arena.rs's
/// `purge_stranded` does: marks the pool seen (as on a report, which may be
/// stale, so it learns of the blocks through the pool's word alone), then
/// claims it, purges its span (zeroes the memory and writes every block's
/// cell), ends the purge and puts the pool back on the pending list if the
/// owner took the word meanwhile. The owner (the main thread) takes its
/// pending list twice, checks the pool's counts, allocates whatever it can
/// (copy of `refill_block`: `take_local() || carve()`, so a pool that forgot
/// its purged blocks carves afresh) and frees that locally. A purge not
/// ordered after the frees, or before the owner's reuse, or the owner
/// reusing blocks while they are purged, is reported as a data race; a
/// purged pool left off the pending list strands its word, and a take that
/// misreads the purge's word loses blocks or hands them out twice. The
/// claim, a purge ended with the word taken, and the owner's fresh carve
/// are each reached in some execution (counted across them). Not modelled:
/// `settle` (the heap's lists; the owner allocates from the pool whatever
/// its state), the ring, and a pool completed again after a take. Mutations
/// tried, each failing the model: `take_remote` taking a purging word as
/// purged (a race with the purge) or as a list (the counts), never putting
/// the pool back after a purge (the word stranded) or always (the pool
/// twice on the pending list), a Relaxed claim, an `end_stranded_purge`
/// without Release, and a `take_remote` without Acquire (each a race).
#[test]
fn stranded_pool_is_purged_or_reused_never_both() {
    use std::sync::atomic::{AtomicUsize as Count, Ordering::Relaxed};
    // Across executions, so that the model cannot pass without reaching
    // them: claims, purges that ended with the word taken, and fresh carves
    // of a purged pool by the owner before it joins the purger.
    static CLAIMED: Count = Count::new(0);
    static TAKEN_WHILE_PURGING: Count = Count::new(0);
    static CARVED_AFRESH: Count = Count::new(0);
    model("stranded_pool_is_purged_or_reused_never_both", || {
        let (world, given) = World::new(1);
        world.pools[0].set_state(PoolState::Full);
        let freers: Vec<_> = given
            .chunks(2)
            .map(|chain| {
                let (world, chain) = (world.clone(), chain.to_vec());
                thread::spawn(move || world.free_remote_chain(&chain))
            })
            .collect();
        let purger = {
            let world = world.clone();
            thread::spawn(move || {
                let pool = &world.pools[0];
                // First pass, on a report (which may be stale): no
                // happens-before with the freers but through the pool.
                if !pool.mark_stranded() {
                    return false;
                }
                // Second pass: copy of `arena::purge_stranded`'s claim.
                if !pool.claim_stranded() {
                    return false;
                }
                CLAIMED.fetch_add(1, Relaxed);
                let (start, end) = pool.span_extent();
                assert_eq!((start, end - start), (world.start, SPAN_BYTES));
                // SAFETY: the claim gives the purger the span (in the model,
                // this is what `purge_pages`, MADV_DONTNEED, leaves).
                unsafe { core::ptr::write_bytes(start as *mut u8, 0, end - start) };
                for cell in &world.contents {
                    // SAFETY: as above.
                    cell.with_mut(|c| unsafe { *c = 0 });
                }
                if pool.end_stranded_purge() {
                    TAKEN_WHILE_PURGING.fetch_add(1, Relaxed);
                    world.put_pending(pool);
                }
                true
            })
        };
        let pool = &world.pools[0];
        for _ in 0..2 {
            world.take_pending();
            // The blocks on the remote list, or being purged, count as out.
            pool.check();
            let (got, carved) = world.alloc_all(pool);
            if carved {
                CARVED_AFRESH.fetch_add(1, Relaxed);
            }
            world.free_local(&got);
            thread::yield_now();
        }
        let completes = freers.into_iter().map(|f| f.join().unwrap()).filter(|&c| c).count();
        assert!(completes <= 1, "two pushes completed the list");
        if purger.join().unwrap() {
            assert_eq!(completes, 1, "the purger claimed a list no push completed");
        }
        // Every block came back, purged or not, exactly once.
        world.take_pending();
        assert_eq!(pool.remote.load(Ordering::Relaxed), 0, "a remote list (or a purge's word) left untaken");
        assert!(world.heap.pending.take_all().next().is_none(), "a pool left on the pending list");
        let (mut got, _) = world.alloc_all(pool);
        got.sort_unstable();
        let all: Vec<usize> = (0..BLOCKS_PER_POOL).map(|i| world.start + i * BLOCK_SIZE).collect();
        assert_eq!(got, all, "blocks lost");
        assert_eq!(pool.blocks_out() as usize, BLOCKS_PER_POOL);
        world.free_local(&got);
        assert!(pool.is_unused(), "blocks_out is off");
        pool.check();
    });
    let counts = [&CLAIMED, &TAKEN_WHILE_PURGING, &CARVED_AFRESH].map(|c| c.load(Relaxed));
    eprintln!(
        "stranded: claimed {}, taken while purging {}, carved afresh by the owner {}",
        counts[0], counts[1], counts[2]
    );
    assert!(counts.iter().all(|&n| n > 0), "the model missed a branch: {counts:?}");
}

/// The purger's handshake with threads that make memory dirty (arena.rs and
/// large.rs: dirty under the arena or cache lock, `note_dirty` under it).
/// Two dirtiers race the purger, which loops as purger.rs does until its
/// passes have seen both: if a dirtier's memory is missed by a pass and its
/// `note_dirty` does not stop the purger's sleep, the purger sleeps forever
/// and loom reports a deadlock.
#[test]
fn purger_wake_up_is_never_lost() {
    model("purger_wake_up_is_never_lost", || {
        let purger = Arc::new(Purger::new());
        // The dirty memory, under the arena lock: how many dirtied it.
        let dirty = Arc::new(Mutex::new(0usize));
        let dirtiers: Vec<_> = (0..2)
            .map(|_| {
                let (purger, dirty) = (purger.clone(), dirty.clone());
                thread::spawn(move || {
                    let mut dirty = dirty.lock().unwrap();
                    *dirty += 1;
                    purger.note_dirty();
                })
            })
            .collect();
        let mut seen = 0;
        loop {
            purger.begin_pass();
            // The pass: purge whatever is dirty (here, due at once).
            seen += core::mem::take(&mut *dirty.lock().unwrap());
            if seen == 2 {
                break;
            }
            purger.wait_until_woken();
        }
        for dirtier in dirtiers {
            dirtier.join().unwrap();
        }
        assert_eq!(*dirty.lock().unwrap(), 0);
    });
}

/// A heap's large slot (`slot.rs`). The owner puts its mapping, takes it
/// back and puts it again, with plain stores where the gate is open; the
/// purger, as purger.rs does, marks itself idle, steals, and sleeps unless
/// it got the mapping. A cell stands for the mapping: whoever empties the
/// slot writes it, so two holders at once are reported as a data race.
/// With the fence registered (from the start, or by the first steal, which
/// opens the gate), the purger loops until it has the mapping: a put that
/// its pass misses and that does not wake it leaves it asleep for good, and
/// loom reports a deadlock. Loom models `membarrier` as a SeqCst fence on
/// each side. With the fence refused the owners swap and the handshake
/// rests on SeqCst loads and stores, which loom does not model (it treats
/// them as acquire/release), so there the purger makes one pass and the
/// model checks the single holder only. Mutations tried, each failing the
/// model: a take that ignores the gate, a steal that does not wait while
/// the owner is busy, and a Relaxed load of the gate (each a race on the
/// mapping); a put without its light fence, a claim without the heavy
/// one, and a first claim that registers and opens the gate without it
/// (each a lost wake-up). Not covered (see `slot.rs`): the orderings on
/// `busy`, two stealers at once, and `membarrier` failing after it worked.
#[test]
fn slot_mapping_has_one_holder_and_reaches_the_purger() {
    const BASE: usize = 0x10000;
    const SIZE: usize = 0x4000;
    for fence in [ModelFence::Registered, ModelFence::AtFirstSteal, ModelFence::Refused] {
        let fence_ready = !matches!(fence, ModelFence::Refused);
        model(&format!("slot, fence {fence:?}"), move || {
            let gate = Arc::new(SlotGate::new(fence));
            let slot = Arc::new(LargeSlot::new());
            let mapping = Arc::new(UnsafeCell::new(0usize));
            let purger = Arc::new(Purger::new());
            let owner = {
                let (gate, slot, mapping, purger) = (gate.clone(), slot.clone(), mapping.clone(), purger.clone());
                thread::spawn(move || {
                    // SAFETY (model): the owner holds the mapping it frees.
                    mapping.with_mut(|m| unsafe { *m = 1 });
                    assert!(slot.put(&gate, BASE, SIZE));
                    purger.note_dirty();
                    let base = slot.take(&gate);
                    if base != 0 {
                        assert_eq!(base, BASE);
                        // SAFETY (model): the take gave the mapping back.
                        mapping.with_mut(|m| unsafe { *m = 2 });
                        assert!(slot.put(&gate, BASE, SIZE));
                        purger.note_dirty();
                    }
                })
            };
            let mut stolen = false;
            loop {
                purger.begin_pass();
                let claim = gate.claim();
                let base = claim.steal(&slot);
                drop(claim);
                if base != 0 {
                    assert_eq!(base, BASE);
                    // SAFETY (model): the steal gave the purger the mapping.
                    mapping.with_mut(|m| unsafe { *m = 3 });
                    stolen = true;
                    break;
                }
                if !fence_ready {
                    break;
                }
                purger.wait_until_woken();
            }
            owner.join().unwrap();
            if stolen {
                assert_eq!(slot.read().0, 0, "the purger took the mapping: the slot is empty");
            } else {
                assert_eq!(slot.read().0, SIZE, "missed by the one pass, so still in the slot");
            }
        });
    }
}
