//! The pool descriptor and its block free lists. No thread logic lives here:
//! the heap decides who may call what; this module keeps the counts right.
//!
//! # Two free lists
//! The owner allocates from `free` and frees to `local_free` (mimalloc's
//! sharding). In an alloc/free loop the two ends then never wait on each
//! other's stores: the pop reads a head the previous pop wrote, the push one
//! the previous push wrote. When `free` runs dry the refill path moves
//! `local_free` over, which also brings recently freed, cache-hot blocks
//! back first. Blocks other threads free arrive on `remote` and are moved to
//! `local_free` by the owner.
//!
//! # The free-path counter
//! `used` is not a plain count. It is
//!
//! ```text
//! used == blocks_out + |free| + (1 if Active) + (i32::MIN if Full)
//! ```
//!
//! where `blocks_out` counts blocks handed out and not yet back on a local
//! list (a block freed by another thread stays out until the owner takes it
//! back). Counting the whole `free` list in advance means a pop changes
//! nothing: the counter moves only when a list is installed (carve, or
//! `local_free` moved over) and on frees. Only the Active pool has a
//! non-empty `free` list, so for every other pool `used` is `blocks_out`
//! plus the state's bias, and after a local free `used <= 0` exactly when
//! the pool needs the slow path: a Full pool got a free block (negative), or
//! a pool that is not Active has no block out (zero). The Active pool never
//! reaches zero, so an alloc/free pair loop stays on the fast path. One
//! decrement and one branch cover both cases.
//!
//! # Invariant
//! For a pool in use, with `remote` the blocks on its remote list:
//!
//! ```text
//! blocks_out + |free| + |local_free| + (capacity - carved) == capacity
//! |remote| <= blocks_out
//! ```

use crate::size_class::{self, Class};
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use core::cell::Cell;
use core::ptr;

/// A free block: its first word links to the next free block.
#[repr(C)]
pub struct Block {
    pub(crate) next: *mut Block,
}

/// A remote list's word (`Pool::remote`): the head block's address, with
/// the number of blocks on the list in the bits above `REMOTE_LEN_SHIFT`
/// (addresses use the low 47), so the owner learns the length from the swap
/// that takes the list. 0 is the empty list. The low three bits (blocks are
/// 8-aligned) say whether every block of the pool is on it, for the
/// purger's stranded-pool pass (see [`Pool::mark_stranded`]).
const REMOTE_LEN_SHIFT: u32 = 48;
const _: () = assert!(crate::config::ADDRESS_BITS <= REMOTE_LEN_SHIFT as usize);

/// `remote` flag: the push that set it made the list hold every block of
/// the pool. With a null head: the purger purged the blocks' pages, and
/// the list is gone (every block is back all the same).
const REMOTE_COMPLETE: usize = 1;
/// `remote` flag: the purger has seen the list complete on one pass.
const REMOTE_SEEN: usize = 2;
/// `remote` flag: the purger claimed the blocks and is purging their pages.
const REMOTE_PURGING: usize = 4;
const REMOTE_FLAGS: usize = REMOTE_COMPLETE | REMOTE_SEEN | REMOTE_PURGING;
const _: () = {
    let mut c = 0;
    while c < size_class::CLASS_COUNT {
        assert!(size_class::class_size(c) % (REMOTE_FLAGS + 1) == 0, "blocks are aligned past the flag bits");
        c += 1;
    }
};

fn remote_head(word: usize) -> *mut Block {
    (word & ((1 << REMOTE_LEN_SHIFT) - 1) & !REMOTE_FLAGS) as *mut Block
}

fn remote_len(word: usize) -> usize {
    word >> REMOTE_LEN_SHIFT
}

/// Where a pool is in its life; see the pool states in the crate docs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum PoolState {
    /// Not in use: its pages belong to the arena.
    Free = 0,
    /// A heap allocates from it (the heap's `active[class]`).
    Active = 1,
    /// On its heap's available list for its class: it has free blocks.
    Available = 2,
    /// On no list: it had no free block when last looked at.
    Full = 3,
    /// On its heap's kept list for its class: no block out and none carved,
    /// kept for the heap to carve afresh instead of going back to the arena.
    /// The purger may purge its pages in place (see [`Pool::keep`]).
    Kept = 4,
}

impl PoolState {
    /// What the state adds to the free-path counter.
    const fn bias(self) -> i32 {
        match self {
            PoolState::Active => 1,
            PoolState::Full => i32::MIN,
            PoolState::Free | PoolState::Available | PoolState::Kept => 0,
        }
    }
}

/// The first carve of a span: about one OS page, so a fresh pool touches
/// memory a page at a time ("touch nothing before it is needed").
const CARVE_BYTES: usize = 4096;

/// Blocks in a span's first carve, per class (a table rather than a
/// division on the refill path).
const CARVE_BLOCKS: [u16; size_class::CLASS_COUNT] = {
    let mut blocks = [0u16; size_class::CLASS_COUNT];
    let mut c = 0;
    while c < size_class::CLASS_COUNT {
        let n = CARVE_BYTES / size_class::class_size(c);
        blocks[c] = if n == 0 { 1 } else { n as u16 };
        c += 1;
    }
    blocks
};

/// One pool (or span of pools) descriptor. It lives in the arena header, not
/// in the pool, so the blocks start on the pool boundary (after the header,
/// for a span at the header pool) and stay aligned.
/// 128 bytes: the owner's fields fill the first cache line, the fields other
/// threads write sit in the second, so remote frees do not bounce the line
/// the owner's fast paths use.
#[repr(C, align(128))]
pub struct Pool {
    // Owner-only fields, read and written by the fast paths (the first cache
    // line, packed to fit).
    /// Head of the list the owner allocates from.
    pub(crate) free: Cell<*mut Block>,
    /// The free-path counter (see the module docs).
    pub(crate) used: Cell<i32>,
    /// `used + |local_free|`: the value `used` takes when `local_free` moves
    /// to the (empty) allocation list, so the move needs no walk. Frees and
    /// remote blocks taken back leave it alone; carving and state changes
    /// move it with `used`.
    local_mark: Cell<i32>,
    /// The owning heap's identity (its address); 0 when free. Read by other
    /// threads to decide whether a free is remote.
    pub(crate) owner: AtomicUsize,
    /// Blocks carved from the span so far (the rest is untouched memory).
    carved: Cell<u16>,
    /// Blocks in the span.
    capacity: Cell<u16>,
    /// The class the pool serves.
    class: Cell<u8>,
    /// Pools joined in this span.
    span_pools: Cell<u8>,
    state: Cell<PoolState>,
    /// `SPAN_ZERO` and `FREE_ZERO` (what is known to read as zero).
    zero: Cell<u8>,
    /// Links on the owning heap's available list for the class.
    pub(crate) next_available: Cell<*mut Pool>,
    pub(crate) prev_available: Cell<*mut Pool>,
    /// First block of the span.
    start: Cell<*mut u8>,
    /// Blocks the owner freed, waiting to be moved to `free`.
    pub(crate) local_free: Cell<*mut Block>,
    // Fields other threads write.
    /// Blocks freed by other threads (a Treiber stack: pushes only; the owner
    /// takes the whole list at once, so there is no ABA): the head block's
    /// address, the list's length and the stranded-pool flags in one word
    /// (`REMOTE_LEN_SHIFT`). The purger also writes it, with a CAS, to mark
    /// and claim a list that holds every block (`mark_stranded`).
    pub(crate) remote: AtomicUsize,
    /// Link on the owning heap's pending list (pools with remote frees).
    pub(crate) next_pending: AtomicPtr<Pool>,
    /// For a Kept pool, when it was kept (ms) and who may touch its pages:
    /// `(ms << 2) | KEPT_*`; 0 otherwise. The owner and the purger hand the
    /// pages over with it (see [`Pool::keep`]).
    kept: AtomicU64,
}

/// `zero`: the span's blocks not carved yet read as zero (its memory is
/// untouched since it was mapped).
const SPAN_ZERO: u8 = 1;
/// `zero`: every block on `free` reads as zero past its link word, so
/// `alloc_zeroed` need only clear the link.
const FREE_ZERO: u8 = 2;
/// `zero`: the purger purged the span's pages when its blocks were
/// stranded (`take_remote`), and nothing has been carved since, so a pool
/// kept now is kept clean. (Not counted as zero: purges skip partial
/// pages.)
const PAGES_PURGED: u8 = 4;

/// `kept` low bits: the pages may be resident, and the owner may claim them.
const KEPT_DIRTY: u64 = 1;
/// The purger is purging them; the owner must leave the pool alone.
const KEPT_PURGING: u64 = 2;
/// Purged; the owner may claim them.
const KEPT_CLEAN: u64 = 3;
const KEPT_BITS: u64 = 3;

/// What a remote push did ([`Pool::push_remote_chain`]).
pub struct RemotePush {
    /// The list was empty: the pool must go on its owner's pending list.
    pub was_empty: bool,
    /// The list now holds every block of the pool.
    pub complete: bool,
}

/// A remote push found every block of the pool free already: the block
/// pushed was freed twice.
#[derive(Debug)]
pub struct AlreadyAllFree;

/// What [`Pool::claim_for_purge`] found.
pub enum PurgeClaim {
    /// Not kept, or already purged (or being purged).
    Nothing,
    /// Kept dirty, but not for the purge delay yet: due at this time (ms).
    NotDue(u64),
    /// Claimed: purge the span's pages, then call `end_purge` with this.
    Claimed(u64),
}

// Loom's atomics are bigger than the real ones; the layout matters only for real.
#[cfg(not(all(test, loom)))]
const _: () = assert!(core::mem::size_of::<Pool>() == 128);
const _: () = assert!(size_class::class_blocks_per_span(0) <= u16::MAX as usize, "block counts fit in u16");
#[cfg(not(all(test, loom)))]
const _: () = assert!(core::mem::offset_of!(Pool, remote) == 64, "remote fields start the second line");

/// Blocks on a free list (a walk; slow paths only).
fn list_len(mut block: *mut Block) -> usize {
    let mut count = 0;
    while !block.is_null() {
        count += 1;
        // SAFETY: free-list blocks are free blocks linked by their first word.
        block = unsafe { (*block).next };
    }
    count
}

impl Pool {
    /// A descriptor of no pool: no free block, nothing to carve. The static
    /// empty pool is built from this so a fresh heap needs no init check.
    #[cfg(not(all(test, loom)))]
    pub const fn unused() -> Self {
        Self {
            free: Cell::new(ptr::null_mut()),
            used: Cell::new(0),
            carved: Cell::new(0),
            capacity: Cell::new(0),
            local_mark: Cell::new(0),
            owner: AtomicUsize::new(0),
            class: Cell::new(0),
            span_pools: Cell::new(0),
            state: Cell::new(PoolState::Free),
            zero: Cell::new(0),
            next_available: Cell::new(ptr::null_mut()),
            prev_available: Cell::new(ptr::null_mut()),
            start: Cell::new(ptr::null_mut()),
            local_free: Cell::new(ptr::null_mut()),
            remote: AtomicUsize::new(0),
            next_pending: AtomicPtr::new(ptr::null_mut()),
            kept: AtomicU64::new(0),
        }
    }

    /// A descriptor of no pool (loom's atomics have no `const fn`).
    #[cfg(all(test, loom))]
    pub fn unused() -> Self {
        Self {
            free: Cell::new(ptr::null_mut()),
            used: Cell::new(0),
            carved: Cell::new(0),
            capacity: Cell::new(0),
            local_mark: Cell::new(0),
            owner: AtomicUsize::new(0),
            class: Cell::new(0),
            span_pools: Cell::new(0),
            state: Cell::new(PoolState::Free),
            zero: Cell::new(0),
            next_available: Cell::new(ptr::null_mut()),
            prev_available: Cell::new(ptr::null_mut()),
            start: Cell::new(ptr::null_mut()),
            local_free: Cell::new(ptr::null_mut()),
            remote: AtomicUsize::new(0),
            next_pending: AtomicPtr::new(ptr::null_mut()),
            kept: AtomicU64::new(0),
        }
    }

    /// Prepares a free descriptor to serve `class` from the `blocks` blocks
    /// at `start`, in a span of `pools` pools, owned by `owner`, as its
    /// heap's Active pool. Touches none of the span's memory.
    pub fn init(&self, class: Class, start: *mut u8, blocks: usize, pools: usize, owner: usize) {
        debug_assert_eq!(self.state.get(), PoolState::Free);
        self.forget_blocks(PoolState::Active);
        self.start.set(start);
        debug_assert!(blocks > 0 && blocks <= size_class::class_blocks_per_span(class));
        self.capacity.set(blocks as u16);
        self.class.set(class as u8);
        debug_assert!(blocks * size_class::class_size(class) <= pools * crate::config::POOL_SIZE);
        self.span_pools.set(pools as u8);
        self.next_available.set(ptr::null_mut());
        self.prev_available.set(ptr::null_mut());
        debug_assert!(self.remote.load(Ordering::Relaxed) == 0);
        self.owner.store(owner, Ordering::Relaxed);
    }

    /// Records that the span's memory is untouched since it was mapped, so
    /// the blocks carved from it read as zero. Called after `init` only.
    pub fn mark_untouched(&self) {
        debug_assert_eq!(self.carved.get(), 0);
        self.zero.set(SPAN_ZERO);
    }

    /// True if the purger purged the span's pages as stranded and nothing
    /// has been carved since (so the span holds no resident page).
    pub fn pages_purged(&self) -> bool {
        self.zero.get() & PAGES_PURGED != 0
    }

    /// True if every block on the free list reads as zero past its link
    /// word (all carved from untouched memory).
    #[inline(always)]
    pub fn free_is_zero(&self) -> bool {
        self.zero.get() & FREE_ZERO != 0
    }

    /// Puts the pool in `state` with no block out and none carved: its free
    /// lists dropped, the span to be carved from its start. Owner only.
    fn forget_blocks(&self, state: PoolState) {
        // The span will be carved afresh from memory it has used.
        self.zero.set(0);
        self.free.set(ptr::null_mut());
        self.local_free.set(ptr::null_mut());
        self.carved.set(0);
        self.state.set(state);
        self.used.set(state.bias());
        self.local_mark.set(state.bias());
    }

    /// Keeps the unused pool for its heap (state Kept) at time `now_ms`: its
    /// blocks are forgotten, so it carves afresh from its start when used
    /// again (carving writes the free list in address order, which the
    /// prefetcher follows; the list the frees left is in their order). Owner
    /// only; touches none of the span.
    ///
    /// The pages of a kept pool may stay resident, so the purger may purge
    /// them in place once the pool has been kept for the purge delay. The
    /// two sides hand the pages over through `kept`: the purger claims them
    /// with a compare-and-swap from dirty to purging
    /// ([`claim_for_purge`](Self::claim_for_purge)) and gives them back as
    /// clean ([`end_purge`](Self::end_purge), Release); the owner claims the
    /// pool back ([`claim_kept`](Self::claim_kept)) with a compare-and-swap
    /// from dirty or clean to 0 (Acquire), never from purging. So the purge
    /// happens before the owner's next write, or not at all.
    pub fn keep(&self, now_ms: u64) {
        debug_assert_eq!(self.blocks_out(), 0);
        debug_assert!(self.remote.load(Ordering::Relaxed) == 0);
        // Purged as stranded and not carved since: nothing to purge again.
        let pages = if self.pages_purged() { KEPT_CLEAN } else { KEPT_DIRTY };
        self.forget_blocks(PoolState::Kept);
        // SeqCst, as the load in `decay::note_dirty` that follows and the
        // purger's side (`purger_begin_pass`, then `claim_for_purge`): either
        // the purger's pass sees this pool, or the owner sees the purger
        // idle and wakes it (no lock orders the two here). It also
        // releases the span's extent, which the purger reads once claimed.
        self.kept.store(now_ms << 2 | pages, Ordering::SeqCst);
    }

    /// Takes a Kept pool back from the purger's reach, for its owner to use
    /// or release: `Some(true)` if its pages were purged, `Some(false)` if
    /// they may be resident. `None` while the purger is purging it: the owner
    /// must then leave it kept (or wait). Owner only.
    pub fn claim_kept(&self) -> Option<bool> {
        let kept = self.kept.load(Ordering::Relaxed);
        debug_assert_ne!(kept, 0, "claiming a pool that is not kept");
        if kept & KEPT_BITS == KEPT_PURGING
            || self.kept.compare_exchange(kept, 0, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            return None;
        }
        Some(kept & KEPT_BITS == KEPT_CLEAN)
    }

    /// The purger's claim on a Kept pool's pages, if it has been kept dirty
    /// for `delay_ms` by `now_ms` (or at all, if `force`).
    pub fn claim_for_purge(&self, now_ms: u64, delay_ms: u64, force: bool) -> PurgeClaim {
        // SeqCst: see `keep`; it also acquires the span's extent.
        let kept = self.kept.load(Ordering::SeqCst);
        if kept & KEPT_BITS != KEPT_DIRTY {
            return PurgeClaim::Nothing;
        }
        let (kept_at, due) = (kept >> 2, (kept >> 2).saturating_add(delay_ms));
        // Forced, all pools kept by `now_ms`: later ones cannot keep the
        // caller looping.
        if if force { kept_at > now_ms } else { due > now_ms } {
            return PurgeClaim::NotDue(due);
        }
        let purging = kept & !KEPT_BITS | KEPT_PURGING;
        match self.kept.compare_exchange(kept, purging, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => PurgeClaim::Claimed(purging),
            Err(_) => PurgeClaim::Nothing,
        }
    }

    /// Gives purged pages back to the owner. `claim` is what
    /// [`claim_for_purge`](Self::claim_for_purge) returned.
    pub fn end_purge(&self, claim: u64) {
        // Only the purger changes a purging value, so a plain store will do.
        self.kept.store(claim & !KEPT_BITS | KEPT_CLEAN, Ordering::Release);
    }

    /// Drops a purge claim whose purger is gone (in a forked child, where
    /// only the forking thread survives): the pages go back to the owner as
    /// dirty, purged or not.
    pub fn abandon_purge(&self) {
        let kept = self.kept.load(Ordering::Relaxed);
        if kept & KEPT_BITS == KEPT_PURGING {
            self.kept.store(kept & !KEPT_BITS | KEPT_DIRTY, Ordering::Relaxed);
        }
    }

    /// The bytes of the span: from its first block to the end of its last
    /// pool. Read by the purger only while it holds a claim on the pages.
    pub fn span_extent(&self) -> (usize, usize) {
        let start = self.start.get() as usize;
        let end = (start & !(crate::config::POOL_SIZE - 1)) + self.span_pools() * crate::config::POOL_SIZE;
        (start, end)
    }

    /// Marks the descriptor free again (its span goes back to the arena).
    pub fn retire(&self) {
        debug_assert_eq!(self.blocks_out(), 0);
        debug_assert_eq!(self.kept.load(Ordering::Relaxed), 0, "retiring a kept pool not claimed back");
        debug_assert!(self.remote.load(Ordering::Relaxed) == 0);
        self.set_state(PoolState::Free);
        self.free.set(ptr::null_mut());
        self.local_free.set(ptr::null_mut());
        self.owner.store(0, Ordering::Relaxed);
    }

    /// Blocks in the span.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity.get() as usize
    }

    /// The class this pool serves.
    #[inline]
    pub fn class(&self) -> Class {
        self.class.get() as Class
    }

    /// Block size of this pool's class.
    #[inline]
    pub fn block_size(&self) -> usize {
        size_class::class_size(self.class())
    }

    /// Pools in this span.
    pub fn span_pools(&self) -> usize {
        self.span_pools.get() as usize
    }

    /// The pool's state.
    #[inline]
    pub fn state(&self) -> PoolState {
        self.state.get()
    }

    /// Sets the pool's state (the heap moves pools between its lists),
    /// moving the state's bias in the free-path counter with it.
    #[inline]
    pub fn set_state(&self, state: PoolState) {
        let old = self.state.replace(state);
        let delta = state.bias().wrapping_sub(old.bias());
        self.used.set(self.used.get().wrapping_add(delta));
        self.local_mark.set(self.local_mark.get().wrapping_add(delta));
    }

    /// Blocks handed out and not yet back on the free list.
    #[inline]
    pub fn blocks_out(&self) -> u32 {
        let counted = self.used.get().wrapping_sub(self.state.get().bias()) as u32;
        counted - list_len(self.free.get()) as u32
    }

    /// True if every block is free (none handed out, none pending remotely).
    #[inline]
    pub fn is_unused(&self) -> bool {
        self.blocks_out() == 0
    }

    /// True after a free if the pool needs the slow path: a Full pool got a
    /// free block, or a pool that is not Active became unused.
    #[inline(always)]
    pub fn needs_attention(&self) -> bool {
        self.used.get() <= 0
    }

    /// Pops a block from the free list. Owner only.
    ///
    /// # Safety
    /// The free list is not empty.
    #[inline(always)]
    pub unsafe fn pop(&self) -> *mut u8 {
        let block = self.free.get();
        debug_assert!(!block.is_null());
        // SAFETY: blocks on the free list are free blocks of this pool, whose
        // first word is the link.
        let next = unsafe { (*block).next };
        // The next block's line, fetched for writing: a block freed by
        // another thread is in that core's cache, written (its link), and
        // the pop reads it and the user then writes it. `prefetchw` asks for
        // it once, exclusive; a plain prefetch would ask for a shared copy
        // and the write for ownership again (that one was tried: no gain).
        // compare/'s prodcons, six alternating runs: 0.243-0.275 s against
        // 0.257-0.289; larson 1.7% faster, hashmap and strings unchanged.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults, whatever the address (null at the
        // list's end included); it changes no memory.
        unsafe {
            core::arch::asm!("prefetchw [{}]", in(reg) next, options(nostack, preserves_flags, readonly))
        };
        self.free.set(next);
        block.cast()
    }

    /// Pushes a block the owner frees. Returns true if the pool needs the
    /// slow path ([`needs_attention`](Self::needs_attention)).
    ///
    /// # Safety
    /// `block` is a block of this pool handed out and not yet freed.
    #[inline(always)]
    pub unsafe fn push_local(&self, block: *mut u8) -> bool {
        let block = block.cast::<Block>();
        // SAFETY: the block is ours to reuse; a block (8 bytes or more,
        // aligned to 8) holds the link.
        unsafe { (*block).next = self.local_free.get() };
        self.local_free.set(block);
        self.used.set(self.used.get().wrapping_sub(1));
        self.needs_attention()
    }

    /// Carves the next batch of untouched blocks onto the free list. Returns
    /// false if the span is fully carved. Owner only.
    pub fn carve(&self) -> bool {
        let carved = self.carved.get() as usize;
        let capacity = self.capacity.get() as usize;
        if carved == capacity {
            return false;
        }
        let size = self.block_size();
        // A page's worth first, then as many blocks as are carved already:
        // a span in use keeps doubling what it has touched (4, 4, 8, 16 KiB),
        // so it has touched at most twice what it has handed out, while a busy
        // class refills less often. On compare/'s 100k-block batch of 8..512
        // bytes the allocation phase went from 1.42-1.53 to 1.25-1.31 ms
        // (five interleaved runs each; mimalloc 1.20-1.61). Carving a whole
        // 16 KiB pool at once was faster still (1.10-1.26) but raised the
        // churn and larson workloads' peak RSS by 5-10%.
        // Carving at least 8 blocks of the bigger classes was tried and
        // reverted: compare/'s batch of 1..32 KiB blocks took 49.8 ms against
        // 27.5 (each alone in its process), and larson gained nothing clear.
        // The list stays all-zero if it was (or was empty) and the span is.
        let zero = self.zero.get();
        let list_zero = zero & SPAN_ZERO != 0 && (self.free.get().is_null() || zero & FREE_ZERO != 0);
        self.zero.set(if list_zero { SPAN_ZERO | FREE_ZERO } else { zero & !(FREE_ZERO | PAGES_PURGED) });
        // SAFETY: a pool's class is below CLASS_COUNT (set from a Class).
        let first_batch = unsafe { *CARVE_BLOCKS.get_unchecked(self.class()) } as usize;
        let batch = first_batch.max(carved).min(capacity - carved);
        // SAFETY: blocks carved..carved+batch lie inside the span, which this
        // pool owns; none of them has been handed out.
        unsafe {
            let first = self.start.get().add(carved * size);
            let mut block = first;
            for _ in 1..batch {
                let next = block.add(size);
                (*block.cast::<Block>()).next = next.cast();
                block = next;
            }
            (*block.cast::<Block>()).next = self.free.get();
            self.free.set(first.cast());
        }
        self.carved.set((carved + batch) as u16);
        self.used.set(self.used.get().wrapping_add(batch as i32));
        self.local_mark.set(self.local_mark.get().wrapping_add(batch as i32));
        true
    }

    /// Moves the blocks the owner freed (and remote frees taken back) onto
    /// the allocation list, which must be empty. Returns false if there were
    /// none. Owner only. O(1): `local_mark` already holds the counter's new
    /// value.
    pub fn take_local(&self) -> bool {
        debug_assert!(self.free.get().is_null());
        // Read before writing: the refill path calls this on the shared,
        // never-written EMPTY_POOL too.
        let head = self.local_free.get();
        if head.is_null() {
            return false;
        }
        self.local_free.set(ptr::null_mut());
        self.free.set(head);
        // Freed blocks hold whatever their users wrote.
        self.zero.set(self.zero.get() & !FREE_ZERO);
        self.used.set(self.local_mark.get());
        true
    }

    /// Pushes a block freed by a thread that does not own the pool; see
    /// [`push_remote_chain`](Self::push_remote_chain).
    ///
    /// # Safety
    /// `block` is a block of this pool handed out and not yet freed.
    #[cfg(test)]
    pub unsafe fn push_remote(&self, block: *mut u8) -> Result<RemotePush, AlreadyAllFree> {
        // SAFETY: forwarded; a single block is a chain from itself to itself.
        unsafe { self.push_remote_chain(block.cast(), block.cast(), 1) }
    }

    /// Pushes a chain of `len` blocks (linked through their first word from
    /// `head` to `tail`) freed by a thread that does not own the pool, with
    /// one CAS. If the list was empty the caller must put the pool on its
    /// owner's pending list (exactly once per such push); if the push made
    /// the list hold every block of the pool, the caller may tell the
    /// purger (the pool is stranded until its owner comes back). Fails,
    /// pushing nothing, if every block was free already: a double free.
    ///
    /// # Safety
    /// The chain's blocks are blocks of this pool, linked from `head` to
    /// `tail`, `len` of them; handed out and not yet freed, unless the
    /// caller has a double free to report.
    pub unsafe fn push_remote_chain(
        &self,
        head: *mut Block,
        tail: *mut Block,
        len: usize,
    ) -> Result<RemotePush, AlreadyAllFree> {
        // The capacity is fixed while a block of the pool is out (the
        // caller holds some), and it was set before they were handed out.
        let capacity = self.capacity.get() as usize;
        let mut old = self.remote.load(Ordering::Relaxed);
        loop {
            // A complete list (or its purged pages) holds every block: any
            // further block is freed twice.
            if old & REMOTE_FLAGS != 0 {
                return Err(AlreadyAllFree);
            }
            // SAFETY: the chain is the freeing thread's until published.
            unsafe { (*tail).next = remote_head(old) };
            // Fits: the list holds blocks out of this pool, at most its
            // capacity (a u16).
            let new_len = remote_len(old) + len;
            let complete = if new_len == capacity { REMOTE_COMPLETE } else { 0 };
            let new = head as usize | new_len << REMOTE_LEN_SHIFT | complete;
            // AcqRel: Release publishes the links; Acquire orders this push
            // after the owner's last take, so the caller's write of
            // `next_pending` cannot race the owner's read of it.
            match self.remote.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(RemotePush { was_empty: old == 0, complete: complete != 0 }),
                Err(actual) => old = actual,
            }
        }
    }

    /// Takes every remotely freed block onto the owner's free list. Owner
    /// only. Returns the number of blocks taken.
    ///
    /// Two cases take no list. While the purger purges a complete list's
    /// pages, nothing is taken (the swap leaves the word empty, and the
    /// purger, finding it so, puts the pool back on the pending list when
    /// done). Once it has purged them, every block is back but none is
    /// listed: the pool forgets its blocks and carves afresh.
    pub fn take_remote(&self) -> usize {
        let word = self.remote.swap(0, Ordering::AcqRel);
        if word == 0 || word & REMOTE_PURGING != 0 {
            return 0;
        }
        let (head, count) = (remote_head(word), remote_len(word));
        if head.is_null() {
            debug_assert!(word & REMOTE_COMPLETE != 0 && count == self.capacity());
            // Every block is back: none is on a local list (each was freed
            // once, remotely), so forgetting them all leaves the counts right.
            self.forget_blocks(self.state.get());
            self.zero.set(PAGES_PURGED);
            return count;
        }
        // The list's last block links to null (it was pushed onto an empty
        // list) and its length came with it, so with no local frees waiting
        // there is no walk over blocks another core just wrote, one
        // dependent miss each. A producer whose consumer frees everything
        // never walks.
        let local = self.local_free.get();
        if !local.is_null() {
            let mut tail = head;
            // SAFETY: the remote list holds freed blocks of this pool linked
            // by their first word; the swap's Acquire made the links visible.
            unsafe {
                while !(*tail).next.is_null() {
                    tail = (*tail).next;
                }
                (*tail).next = local;
            }
        }
        self.local_free.set(head);
        self.used.set(self.used.get().wrapping_sub(count as i32));
        count
    }

    /// The purger's first look at a pool a freer reported complete
    /// ([`push_remote_chain`](Self::push_remote_chain)): marks the list seen
    /// if it still holds every block and is not marked yet. True if this
    /// call marked it, so [`claim_stranded`](Self::claim_stranded) may take
    /// it on a later pass.
    ///
    /// Why two looks: a pool is purged only if its owner has left it
    /// complete for a whole purger interval. A producer whose consumer frees
    /// everything finds its pools complete all the time, and takes them
    /// back within microseconds; purging those would make it fault their
    /// pages in again.
    pub fn mark_stranded(&self) -> bool {
        let word = self.remote.load(Ordering::Relaxed);
        if word & REMOTE_FLAGS != REMOTE_COMPLETE || remote_head(word).is_null() {
            return false;
        }
        self.remote.compare_exchange(word, word | REMOTE_SEEN, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// The purger's claim on a pool it marked seen on an earlier pass whose
    /// list nobody has taken since: every block of the pool is free, and
    /// its owner has not come back for them. True if claimed: purge the
    /// span's pages, then call [`end_stranded_purge`](Self::end_stranded_purge).
    /// The pool stays in use, and its owner fixed, until then (its blocks
    /// count as out).
    pub fn claim_stranded(&self) -> bool {
        let word = self.remote.load(Ordering::Relaxed);
        if word & REMOTE_FLAGS != REMOTE_COMPLETE | REMOTE_SEEN {
            return false;
        }
        let purging = word & !((1 << REMOTE_LEN_SHIFT) - 1) | REMOTE_PURGING;
        // Acquire: the freers' writes to the blocks (and the owner's, before
        // it handed them out) happen before the purge.
        self.remote.compare_exchange(word, purging, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Ends a stranded purge: the blocks are back, their pages purged, and
    /// no list holds them. Returns true if the owner swapped the word while
    /// the purge ran (taking nothing): the caller must then put the pool on
    /// its owner's pending list again, as the push that fills an empty list
    /// would.
    pub fn end_stranded_purge(&self) -> bool {
        let capacity = self.capacity.get() as usize;
        // Release: the purge happens before the owner carves the span again.
        let old = self.remote.swap(capacity << REMOTE_LEN_SHIFT | REMOTE_COMPLETE, Ordering::AcqRel);
        debug_assert!(old == 0 || old & REMOTE_PURGING != 0);
        old == 0
    }

    /// The block containing `p`, if `p` is exactly the start of a block of
    /// this pool that has been carved.
    #[cfg(any(test, feature = "checked", feature = "debug-invariants"))]
    pub fn block_index(&self, p: *const u8) -> Option<usize> {
        let offset = (p as usize).checked_sub(self.start.get() as usize)?;
        let size = self.block_size();
        let index = offset / size;
        (offset % size == 0 && index < self.carved.get() as usize).then_some(index)
    }

    /// True if `p` is on the owner's free list. O(free blocks); for checked
    /// mode and tests.
    #[cfg(any(test, feature = "checked"))]
    pub fn free_list_contains(&self, p: *const u8) -> bool {
        for head in [self.free.get(), self.local_free.get()] {
            let mut block = head;
            while !block.is_null() {
                if block as *const u8 == p {
                    return true;
                }
                // SAFETY: free-list blocks are free blocks of this pool.
                block = unsafe { (*block).next };
            }
        }
        false
    }

    /// Checks the pool invariant (see the module docs). Owner only; the
    /// remote list is left alone.
    #[cfg(any(test, feature = "debug-invariants"))]
    pub fn check(&self) {
        let mut free_count = 0usize;
        for head in [self.free.get(), self.local_free.get()] {
            let mut block = head;
            while !block.is_null() {
                assert!(self.block_index(block.cast()).is_some(), "free block outside the carved span");
                free_count += 1;
                // SAFETY: free-list blocks are free blocks of this pool.
                block = unsafe { (*block).next };
            }
        }
        let capacity = self.capacity.get() as usize;
        let carved = self.carved.get() as usize;
        assert!(carved <= capacity);
        assert_eq!(self.blocks_out() as usize + free_count + (capacity - carved), capacity, "pool accounting");
    }
}

// The unit tests use real atomics; under loom only the models run.
#[cfg(all(test, not(loom)))]
mod tests;
