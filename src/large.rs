//! Large allocations: each its own mapping, with a small header just before
//! the block so `free(p)` finds the mapping from the pointer alone.
//!
//! ```text
//! mapping: | ... header | block ................ | tail of the last page |
//!          ^ base       ^ base + offset (aligned)
//! ```
//!
//! `offset` is 64 bytes for alignments up to 64, the alignment itself up to
//! the page size, and one page above it (the mapping is then placed so that
//! `base + page` is aligned). Growing a block with alignment up to a page
//! takes cached pages if it can (below), and otherwise uses `mremap`, which
//! moves pages, not bytes.
//!
//! Freed mappings (up to half the cache size each) go into a small cache
//! instead of back to the OS, so alloc/free loops of large blocks reuse
//! them without a system call; a range stays there until it is reused,
//! evicted by newer ones, or purged (unmapped) after the purge delay.
//! The cache holds page ranges rather than whole mappings: a request may
//! take the head of a bigger range, the pieces merge again when freed, and
//! a growing block takes the cached range that follows it, or moves into
//! one elsewhere, before it asks `mremap` for fresh pages (see `realloc`).
//! A block's "mapping" below is its range: part of a kernel mapping, or
//! (after merges) pieces of adjacent ones. `mremap` refuses a range that
//! spans two kernel mappings; `realloc` then copies. Memory the arenas map
//! is taken out of the cache's share (see [`note_arena_growth`]).
//!
//! In front of that shared cache each heap keeps one freed mapping of its
//! own, a [`LargeSlot`]: a thread that frees and allocates large blocks in
//! turn reuses its mapping with plain loads and stores and no lock (see
//! [`crate::slot`] for why that is safe against the threads that steal it).
//! The shared path took 253 instructions and nine atomic read-modify-writes
//! per 1 MiB pair (the lock twice, the process-wide counters seven times),
//! which left the pair behind glibc's, whose single-threaded path takes no
//! atomics. A slot changes no counter: its mapping still counts as a live
//! large allocation, and [`crate::stats`] moves it to the cache when it
//! reads. The purger steals every slot on each full pass into the shared cache,
//! where the purge delay applies, so a thread that goes to sleep holding one
//! gives it back all the same.

use crate::arena::LargeAdvice;
use crate::config::HUGE_PAGE_SIZE;
use crate::counters::OS_COUNTERS;
use crate::decay;
use crate::os;
use crate::slot::{LargeSlot, SlotGate};
use crate::sync::{AtomicUsize, Lock, LockGuard, Ordering};
use core::ptr;
use crossbeam_utils::CachePadded;

#[repr(C)]
struct LargeHeader {
    /// Start of the mapping.
    base: usize,
    /// Bytes mapped.
    map_size: usize,
    /// `LARGE_MAGIC ^ base`: a cheap check that a pointer is one of ours.
    magic: usize,
}

const HEADER_SIZE: usize = core::mem::size_of::<LargeHeader>();

/// Mappings at least this big ask for transparent huge pages (while the
/// probe finds them fast, see `advise_pages`): they are filled 2 MiB per
/// fault instead of 4 KiB, and big buffers are usually written whole.
const HUGE_PAGE_THRESHOLD: usize = 4 << 20;
const MIN_OFFSET: usize = 64;
const LARGE_MAGIC: usize = 0x706f_6f6c_6c61_7267;

const _: () = assert!(HEADER_SIZE <= MIN_OFFSET);

/// Whether owners use their slots with plain stores (see [`crate::slot`]).
/// Its own cache line: every large take and put reads it, and each steal
/// writes it twice.
static SLOT_GATE: CachePadded<SlotGate> = CachePadded::new(SlotGate::new());

fn block_offset(align: usize, page: usize) -> usize {
    if align <= MIN_OFFSET {
        MIN_OFFSET
    } else if align <= page {
        align
    } else {
        page
    }
}

/// Bytes to map for `size` bytes at `offset`, or `None` on overflow.
/// `page` is a power of two: a mask, not a division.
fn map_size_for(size: usize, offset: usize, page: usize) -> Option<usize> {
    debug_assert!(page.is_power_of_two());
    Some(size.checked_add(offset)?.checked_add(page - 1)? & !(page - 1))
}

/// # Safety
/// `block` is a live large block.
unsafe fn header(block: *mut u8) -> *mut LargeHeader {
    // SAFETY: the header sits just before every large block, in its mapping.
    let h = unsafe { block.sub(HEADER_SIZE).cast::<LargeHeader>() };
    // SAFETY: as above, the header is initialised.
    let (base, magic) = unsafe { ((*h).base, (*h).magic) };
    if magic != LARGE_MAGIC ^ base {
        os::fatal("free or realloc of a pointer that is not a live poolmalloc block");
    }
    h
}

/// Maps a block of `size` bytes aligned to `align` (a power of two); null if
/// the request cannot be met. With `zeroed` the block reads as zero.
pub fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let page = os::page_size();
    let offset = block_offset(align, page);
    let Some(map_size) = map_size_for(size, offset, page) else {
        return ptr::null_mut();
    };
    if map_size > isize::MAX as usize {
        return ptr::null_mut();
    }
    if align <= page
        && let Some((base, cached_size)) = take_cached(map_size)
    {
        // SAFETY: the cached range is now ours, page-aligned, and fits
        // `map_size` (so `offset < map_size`); `align <= page` keeps the
        // block aligned.
        unsafe {
            let block = (base as *mut u8).add(offset);
            write_header(block, base, cached_size);
            if zeroed {
                ptr::write_bytes(block, 0, size);
            }
            return block;
        }
    }
    let base = if align <= page { os::map(map_size) } else { os::map_aligned(map_size, align, offset) };
    if base.is_null() {
        return base;
    }
    // SAFETY: `offset < map_size`, inside the fresh mapping.
    let block = unsafe { base.add(offset) };
    // SAFETY: the fresh mapping is ours, page-aligned and untouched; the
    // header page and the block are about to be written.
    unsafe { advise_pages(base as usize, map_size, map_size, Some((base as usize, block as usize + size))) };
    // SAFETY: the header lies in `[base, block)`, which the mapping covers.
    unsafe { write_header(block, base as usize, map_size) };
    OS_COUNTERS.large_mapped(map_size);
    block
}

/// A freed range for a block needing `map_size` bytes, from the calling
/// thread's slot or else the shared cache: `(base, size)`, page-aligned,
/// `size >= map_size`, counted as a live large allocation.
#[inline(always)]
fn take_cached(map_size: usize) -> Option<(usize, usize)> {
    if let Some(slot) = crate::heap::current_or_new_large_slot()
        && let Some(taken) = take_from_slot(slot, map_size)
    {
        return Some(taken);
    }
    let (base, size) = CACHE.take(map_size)?;
    OS_COUNTERS.large_cache_hit(size);
    Some((base, size))
}

/// The slot's mapping, `(base, map_size)`, if it fits a block needing
/// `map_size` bytes (at most a quarter bigger). A mapping that does not fit
/// goes to the shared cache. Owner only.
///
/// A slot's mapping keeps its size in its own first word (never part of a
/// block: blocks start at least `MIN_OFFSET` in), so whoever empties the
/// slot reads the size that goes with the base it got.
#[inline(always)]
fn take_from_slot(slot: &LargeSlot, map_size: usize) -> Option<(usize, usize)> {
    let base = slot.take(&SLOT_GATE);
    if base == 0 {
        return None;
    }
    // SAFETY: emptying the slot made the mapping ours; its first word holds
    // its size.
    let cached = unsafe { *(base as *const usize) };
    if cached >= map_size && cached - map_size <= map_size / 4 {
        slot.note_hit();
        return Some((base, cached));
    }
    // SAFETY: the whole mapping, unused (and counted as live while in the
    // slot).
    unsafe { cache_or_unmap(base, cached) };
    None
}

/// # Safety
/// `[base, base + map_size)` is this block's mapping and `block - HEADER_SIZE
/// >= base`.
unsafe fn write_header(block: *mut u8, base: usize, map_size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe {
        block.sub(HEADER_SIZE).cast::<LargeHeader>().write(LargeHeader { base, map_size, magic: LARGE_MAGIC ^ base });
    }
}

/// Frees a large block: its mapping goes to the thread's slot if empty, else
/// to the shared cache, or back to the OS.
///
/// # Safety
/// `block` was returned by [`alloc`] or [`realloc`] and not freed since.
pub unsafe fn free(block: *mut u8) {
    // SAFETY: forwarded from the caller.
    let (base, map_size) = unsafe {
        let h = header(block);
        (*h).magic = 0;
        ((*h).base, (*h).map_size)
    };
    if let Some(slot) = crate::heap::current_large_slot()
        && map_size <= largest_cached(decay::large_cache_bytes())
    {
        // SAFETY: the mapping is ours and no longer used; its first word is
        // outside every block and header (see `take_from_slot`). Writing it
        // into a full slot's loser does no harm.
        unsafe { *(base as *mut usize) = map_size };
        if slot.put(&SLOT_GATE, base, map_size) {
            // Orders after the put: see `crate::slot`.
            decay::note_dirty();
            return;
        }
    }
    // SAFETY: the block's whole mapping, no longer used.
    unsafe { cache_or_unmap(base, map_size) };
}

/// The biggest mapping the cache, or a heap's slot, keeps under a cache
/// budget of `budget` bytes: half of it, so one mapping never fills it.
fn largest_cached(budget: usize) -> usize {
    budget / 2
}

/// Puts a freed mapping, counted as a live large allocation until now, into
/// the shared cache, or unmaps it if the cache does not take it.
///
/// # Safety
/// `[base, base + map_size)` is a whole mapping of ours, no longer used.
unsafe fn cache_or_unmap(base: usize, map_size: usize) {
    if CACHE.put(base, map_size) {
        OS_COUNTERS.large_cached(map_size);
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { os::unmap(base as *mut u8, map_size) };
        OS_COUNTERS.large_unmapped(map_size);
    }
}

/// Moves every heap's slot mapping into the shared cache (or unmaps it if
/// the cache is full), where the purge delay applies to it.
fn steal_slots() {
    let claim = SLOT_GATE.claim();
    crate::heap::for_each_large_slot(|slot| move_to_cache(|| claim.steal(slot)));
}

/// Moves the calling thread's own slot mapping, if any, into the shared
/// cache (at thread exit).
pub fn release_slot(slot: &LargeSlot) {
    move_to_cache(|| slot.take_own());
}

/// Moves the mapping `empty_slot` takes out of a slot, if any, into the
/// shared cache, or unmaps it if the cache has no room. The take and the
/// counter move happen under the cache lock, so [`counts`] never sees the
/// mapping in both places or in neither, and a fork never splits them.
fn move_to_cache(empty_slot: impl FnOnce() -> usize) {
    let mut cache = CACHE.0.lock();
    let base = empty_slot();
    if base == 0 {
        return;
    }
    // SAFETY: emptying the slot made the mapping ours; its first word holds
    // its size (see `take_from_slot`).
    let map_size = unsafe { *(base as *const usize) };
    let budget = decay::large_cache_bytes();
    if cache.len < CACHE_SLOTS && cache.bytes + map_size <= budget && map_size <= largest_cached(budget) {
        cache.insert(Cached { base, map_size, freed_at: UNSTAMPED });
        OS_COUNTERS.large_cached(map_size);
        drop(cache);
        decay::note_dirty();
        return;
    }
    // The statistics showed the slot's mapping as cached: it is purged.
    OS_COUNTERS.large_slot_purged(map_size);
    drop(cache);
    // SAFETY: the whole mapping, no longer in any slot or list.
    unsafe { os::unmap(base as *mut u8, map_size) };
}

/// True if threads reuse their slot's mapping with plain stores (see
/// [`crate::slot`]); false before the first steal and where `membarrier` is
/// refused.
pub fn slots_use_plain_stores() -> bool {
    SLOT_GATE.fence_registered()
}

/// In a forked child: see [`SlotGate::reset_after_fork`].
pub fn reset_slots_after_fork() {
    SLOT_GATE.reset_after_fork();
    crate::heap::for_each_large_slot(LargeSlot::reset_after_fork);
}

/// The large-allocation totals for the statistics, with the heaps' slot
/// mappings moved from live to cached: `(large_count, large_bytes,
/// cache_bytes, cache_hits)`. Read under the cache lock, which every move
/// between a slot and the counters takes (see [`release_slot`]).
pub fn counts() -> (usize, usize, usize, usize) {
    let _cache = CACHE.0.lock();
    let (mut slot_bytes, mut slot_count, mut slot_hits) = (0, 0, 0);
    crate::heap::for_each_large_slot(|slot| {
        let (held, hits) = slot.read();
        slot_bytes += held;
        slot_count += usize::from(held != 0);
        slot_hits += hits;
    });
    let c = &OS_COUNTERS;
    (
        c.large_count.load(Ordering::Relaxed).saturating_sub(slot_count),
        c.large_bytes.load(Ordering::Relaxed).saturating_sub(slot_bytes),
        c.large_cache_bytes.load(Ordering::Relaxed) + slot_bytes,
        c.large_cache_hits.load(Ordering::Relaxed) + slot_hits,
    )
}

/// A freed mapping kept for reuse.
#[derive(Clone, Copy)]
struct Cached {
    base: usize,
    map_size: usize,
    freed_at: u64,
}

const CACHE_SLOTS: usize = 32;

/// `freed_at` of an entry the purger has not seen yet (it stamps it with the
/// time of its next pass; the entry is then the newest of all).
const UNSTAMPED: u64 = u64::MAX;

/// The cache of freed mappings. A handful of entries, searched linearly under
/// a lock taken only by large allocations and frees (each otherwise a system
/// call pair).
struct MappingCache {
    entries: [Cached; CACHE_SLOTS],
    len: usize,
    bytes: usize,
    /// Without a background purger: when a free should purge next.
    inline_purge_due: u64,
}

impl MappingCache {
    /// Adds an entry; the caller made room.
    fn push(&mut self, entry: Cached) {
        let len = self.len;
        self.entries[len] = entry;
        self.len += 1;
        self.bytes += entry.map_size;
    }

    /// Takes entry `i` out (the last entry moves into its place).
    fn remove(&mut self, i: usize) -> Cached {
        let entry = self.entries[i];
        self.len -= 1;
        self.entries[i] = self.entries[self.len];
        self.bytes -= entry.map_size;
        entry
    }

    /// Takes `bytes` from the head of entry `i`, or all of it if no more
    /// than a quarter of `bytes` would be left; the rest stays cached (it
    /// ends where the entry ended, so it is adjacent to no other entry).
    fn take_head(&mut self, i: usize, bytes: usize) -> Cached {
        let entry = self.remove(i);
        if entry.map_size <= bytes + bytes / 4 {
            return entry;
        }
        // The removal made room. Page-aligned: both sizes are multiples of
        // the page size.
        self.push(Cached { base: entry.base + bytes, map_size: entry.map_size - bytes, ..entry });
        Cached { map_size: bytes, ..entry }
    }

    /// Adds a freed range, merged with the cached ranges right before and
    /// after it, so pieces of one buffer cut apart by [`Cache::take`] become
    /// one range again when they are all free. No two entries are ever
    /// adjacent, so there is at most one neighbour on each side. The caller
    /// made room for one entry.
    fn insert(&mut self, mut entry: Cached) {
        let mut i = 0;
        while i < self.len {
            let e = self.entries[i];
            if e.base + e.map_size == entry.base || entry.base + entry.map_size == e.base {
                self.remove(i);
                entry.base = entry.base.min(e.base);
                entry.map_size += e.map_size;
                // The older stamp: part of the range has been idle since
                // then, and the purge delay bounds how long idle pages stay
                // resident. (The newer one let a range whose neighbour kept
                // being freed and taken again stay cached for good.)
                entry.freed_at = entry.freed_at.min(e.freed_at);
                // `remove` moved the last entry to `i`: look at it too.
                continue;
            }
            i += 1;
        }
        self.push(entry);
    }
}

struct Cache(Lock<MappingCache>);

/// Bytes of fresh memory the arenas mapped that the cache has not yet given
/// back for (see [`note_arena_growth`]).
static ARENA_GROWTH: AtomicUsize = AtomicUsize::new(0);

/// The arenas grew past their peak by `bytes`. On its next take, put or
/// purge the cache unmaps as many bytes from its oldest ranges (their
/// tails), if it holds any.
///
/// Why: freed ranges merge, so the byte budget, not the 32 entries, bounds
/// the cache. The demo frees 56 MiB of hash tables, then builds 30 MiB of
/// small vectors: the cache kept the tables resident while the arenas
/// mapped fresh memory, and the demo peaked at 165-169 MiB against 127-128
/// before the merges. Pools cannot use the cache's ranges (arenas are
/// aligned chunks), so memory the pools need is taken from the cache's
/// share instead: idle large memory goes back as pool memory grows, and a
/// buffer rebuilt while the arenas stay put keeps its pages. Only growth
/// past the peak counts, so arenas unmapped and mapped again in waves do
/// not drain the cache each time. An atomic counter, not a call from the
/// arena code: that runs under the arena lock.
pub fn note_arena_growth(bytes: usize) {
    ARENA_GROWTH.fetch_add(bytes, Ordering::Relaxed);
}

/// Gives back what [`note_arena_growth`] asked for, oldest ranges first.
#[inline]
fn give_back_for_arenas(cache: LockGuard<'_, MappingCache>) -> LockGuard<'_, MappingCache> {
    if ARENA_GROWTH.load(Ordering::Relaxed) == 0 {
        return cache;
    }
    give_back_for_arenas_slow(cache)
}

#[cold]
fn give_back_for_arenas_slow(mut cache: LockGuard<'_, MappingCache>) -> LockGuard<'_, MappingCache> {
    // A multiple of the arena size, so of the page size.
    let mut owed = ARENA_GROWTH.swap(0, Ordering::Relaxed);
    while owed > 0 && cache.len > 0 {
        let unmapped;
        (cache, unmapped) = evict_oldest(cache, owed);
        owed -= unmapped;
    }
    cache
}

static CACHE: Cache = Cache(Lock::new(MappingCache {
    entries: [Cached { base: 0, map_size: 0, freed_at: 0 }; CACHE_SLOTS],
    len: 0,
    bytes: 0,
    inline_purge_due: 0,
}));

impl Cache {
    /// A cached range for a block needing `map_size` bytes, taken out of
    /// the cache: the best fit if it is at most a quarter bigger; otherwise
    /// the head of the smallest bigger one, whose tail stays cached. The
    /// tail's pages stay resident: a buffer rebuilt by growing from small,
    /// such as a `Vec` collected in a loop, grows back into them
    /// ([`Cache::take_following`]) instead of faulting fresh pages, and the
    /// pieces merge again when freed ([`MappingCache::insert`]).
    fn take(&self, map_size: usize) -> Option<(usize, usize)> {
        let mut cache = give_back_for_arenas(self.0.lock());
        let mut best: Option<usize> = None;
        for (i, e) in cache.entries[..cache.len].iter().enumerate() {
            if e.map_size >= map_size && best.is_none_or(|b| e.map_size < cache.entries[b].map_size) {
                best = Some(i);
            }
        }
        let taken = cache.take_head(best?, map_size);
        Some((taken.base, taken.map_size))
    }

    /// For a block whose mapping ends at `at`, growing by at least `need`
    /// bytes: the cached range that starts at `at`, if it holds `need`
    /// bytes, is taken: `want` bytes of it, or all of it if no more than a
    /// quarter of `want` would be left (the rest stays cached).
    /// Returns the bytes taken, 0 if none.
    fn take_following(&self, at: usize, need: usize, want: usize) -> usize {
        let mut cache = self.0.lock();
        let Some(i) = (0..cache.len).find(|&i| cache.entries[i].base == at && cache.entries[i].map_size >= need) else {
            return 0;
        };
        cache.take_head(i, want).map_size
    }

    /// Keeps a freed mapping; false if it does not fit the cache's budget.
    /// Older entries are evicted (unmapped) to make room.
    fn put(&self, base: usize, map_size: usize) -> bool {
        let settings = decay::settings();
        let budget = settings.large_cache_bytes;
        if map_size > largest_cached(budget) {
            return false;
        }
        // With a purger, the entry is stamped on the purger's next pass: no
        // clock read on this path (it costs as much as the rest of a free).
        let inline = decay::purge_inline();
        let now = if inline { decay::now_ms() } else { UNSTAMPED };
        let mut cache = give_back_for_arenas(self.0.lock());
        while cache.len == CACHE_SLOTS || cache.bytes + map_size > budget {
            (cache, _) = evict_oldest(cache, usize::MAX);
        }
        cache.insert(Cached { base, map_size, freed_at: now });
        decay::note_dirty();
        let purge_now = inline && cache.inline_purge_due <= now;
        if purge_now {
            cache.inline_purge_due = now.saturating_add(settings.purge_delay_ms / 2);
        }
        drop(cache);
        if purge_now {
            purge(now, false);
        }
        true
    }
}

/// [`unmap_tail`] of the oldest cached range. The cache is not empty.
#[cold]
fn evict_oldest(cache: LockGuard<'_, MappingCache>, bytes: usize) -> (LockGuard<'_, MappingCache>, usize) {
    // Unstamped entries are the newest.
    let oldest = (0..cache.len).min_by_key(|&i| cache.entries[i].freed_at).unwrap_or(0);
    unmap_tail(cache, oldest, bytes)
}

/// Unmaps at most `bytes` (a multiple of the page size) from the tail of
/// entry `i`, all of it if it is no bigger, with the lock dropped for the
/// system call. Returns the lock again and the bytes unmapped.
///
/// The counters move before the lock is dropped, with the range: [`counts`]
/// reads them under the lock, so a snapshot never shows a range that is
/// out of the cache as still cached. (Counted after the unmap, a `collect`
/// racing the purger's unmap found the cache empty and the statistics
/// still counting the range.)
fn unmap_tail(mut cache: LockGuard<'_, MappingCache>, i: usize, bytes: usize) -> (LockGuard<'_, MappingCache>, usize) {
    let victim = cache.remove(i);
    let unmapped = bytes.min(victim.map_size);
    if unmapped < victim.map_size {
        // The removal made room; the head keeps the range's start.
        cache.push(Cached { map_size: victim.map_size - unmapped, ..victim });
    }
    OS_COUNTERS.large_cache_purged(unmapped);
    drop(cache);
    // SAFETY: the range's tail, out of the cache, is ours and unused.
    unsafe { os::unmap((victim.base + victim.map_size - unmapped) as *mut u8, unmapped) };
    (CACHE.0.lock(), unmapped)
}

/// Unmaps cached mappings freed at least the purge delay ago (all if
/// `force`). Returns when the next one comes due, if any remain.
pub fn purge(now: u64, force: bool) -> Option<u64> {
    steal_slots();
    let delay = decay::settings().purge_delay_ms;
    let mut next_due: Option<u64> = None;
    let mut cache = give_back_for_arenas(CACHE.0.lock());
    let mut i = 0;
    while i < cache.len {
        if cache.entries[i].freed_at == UNSTAMPED {
            cache.entries[i].freed_at = now;
        }
        let due_at = cache.entries[i].freed_at.saturating_add(delay);
        if force || due_at <= now {
            (cache, _) = unmap_tail(cache, i, usize::MAX);
            // Entries may have moved meanwhile: start over (at most 32).
            i = 0;
            next_due = None;
        } else {
            next_due = decay::earliest(next_due, Some(due_at));
            i += 1;
        }
    }
    next_due
}

/// Checks the shared cache (feature `debug-invariants`): its ranges are
/// page-aligned, disjoint and never adjacent (a freed range merges with its
/// neighbours), and add up to its byte count. Aborts with a message on a
/// broken invariant (a panic would allocate, maybe a large block, and need
/// this lock).
#[cfg(feature = "debug-invariants")]
pub fn check() {
    fn require(ok: bool, message: &str) {
        if !ok {
            os::fatal(message);
        }
    }
    let page = os::page_size();
    let cache = CACHE.0.lock();
    let entries = &cache.entries[..cache.len];
    let mut sum = 0;
    for (i, a) in entries.iter().enumerate() {
        require(
            a.map_size > 0 && a.base % page == 0 && a.map_size % page == 0,
            "large cache check: a range not whole pages",
        );
        sum += a.map_size;
        for b in &entries[i + 1..] {
            require(
                a.base + a.map_size < b.base || b.base + b.map_size < a.base,
                "large cache check: two ranges overlap or touch",
            );
        }
    }
    require(sum == cache.bytes, "large cache check: the byte count is off");
}

/// Fork support: the cache lock is taken before `fork`, released after.
pub fn lock_for_fork() {
    CACHE.0.lock_raw();
}

/// # Safety
/// Called after [`lock_for_fork`] in the same thread (or its forked child).
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded from the caller.
    unsafe { CACHE.0.unlock_raw() };
}

/// The bytes usable from `block` to the end of its mapping.
///
/// # Safety
/// `block` is a live large block.
pub unsafe fn usable_size(block: *mut u8) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe {
        let h = header(block);
        (*h).base + (*h).map_size - block as usize
    }
}

/// Advises a large block's mapping `[base, base + map_size)`, which grew by
/// `fresh_bytes` of fresh pages, for huge pages or against them, as the
/// huge-page probe shared with arena chunks says
/// (`arena::large_mapping_advice`); mappings under `HUGE_PAGE_THRESHOLD`,
/// and any while another probe is in flight, are left as they are. With
/// `touch` (fresh pages the caller is about to write) holding a whole huge
/// page, the probe may ask for a timed fault: that page alone is advised
/// and takes it (a zero written to its first byte), and the rest of the
/// mapping gets huge pages only if that was fast. The cost: that page is
/// resident from then on, whether or not the caller writes it. Without
/// such a page the mapping follows the probe's last verdict, untimed.
///
/// Why probe here too: on the VM of BENCHMARKS.md a huge-page fault takes
/// 0.2-0.4 ms while the kernel has huge pages free and 4.6-5.2 ms once it
/// must take them back from the host, against 0.6-1.4 ms for 512
/// small-page faults. compare/'s vecgrow, which grows a `Vec` to 64 MiB
/// eight times, took 0.37 s with huge pages in the fast state, 0.46 with
/// small pages, and 0.45-0.59 in the slow state (glibc 0.43-0.47).
///
/// # Safety
/// The mapping is the block's own and page-aligned; `touch` lies within it,
/// its pages are untouched since mapped (so they read as zero) and the
/// caller is about to write them.
unsafe fn advise_pages(base: usize, map_size: usize, fresh_bytes: usize, touch: Option<(usize, usize)>) {
    if map_size < HUGE_PAGE_THRESHOLD {
        return;
    }
    let probe_page = touch.and_then(|(from, to)| {
        let page = from.next_multiple_of(HUGE_PAGE_SIZE);
        (page + HUGE_PAGE_SIZE <= to).then_some(page)
    });
    let huge = match crate::arena::large_mapping_advice(fresh_bytes.div_ceil(HUGE_PAGE_SIZE), probe_page) {
        LargeAdvice::Keep => return,
        LargeAdvice::Small => false,
        LargeAdvice::Huge => true,
        LargeAdvice::Probe(page) => {
            // The probe page alone first: if its fault is slow, the rest
            // of the range gets small pages, so a slow state costs one
            // huge page, not a whole growth of them.
            // SAFETY: the page is in `touch`, fresh (zero), and the
            // caller's to write.
            let first_fault_ns = unsafe {
                os::advise_huge_pages(page as *mut u8, HUGE_PAGE_SIZE);
                let start = os::now_ns();
                ptr::write_volatile(page as *mut u8, 0);
                os::now_ns().saturating_sub(start)
            };
            !crate::arena::record_large_fault(first_fault_ns)
        }
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        if huge {
            os::advise_huge_pages(base as *mut u8, map_size);
        } else {
            os::advise_no_huge_pages(base as *mut u8, map_size);
        }
    }
}

/// Advises a block's mapping that grew from `old_size` to `new_size` bytes
/// with pages from the cache (touched before, so nothing is timed, and
/// nothing counts against the probe's back-off) when it crossed
/// `HUGE_PAGE_THRESHOLD`: a cached range keeps the advice it was mapped
/// with, and a system call on every growth cost the doubling `realloc`
/// bench a fifth more time.
///
/// # Safety
/// The mapping is the block's own and page-aligned.
unsafe fn advise_cached_pages(base: usize, old_size: usize, new_size: usize) {
    if old_size < HUGE_PAGE_THRESHOLD {
        // SAFETY: forwarded from the caller.
        unsafe { advise_pages(base, new_size, 0, None) };
    }
}

/// Resizes a large block to `new_size` (still large) keeping its contents:
/// shrinks in place; grows in place when the mapping already has room or a
/// cached range follows it; else moves into a cached range big enough
/// (copying), or moves the pages with `mremap` (alignment up to a page)
/// with a quarter more room, or allocates and copies. Null on failure, with
/// the old block untouched.
///
/// # Safety
/// `block` is a live large block allocated with `align`, holding `old_size`
/// bytes the caller cares about.
pub unsafe fn realloc(block: *mut u8, old_size: usize, new_size: usize, align: usize) -> *mut u8 {
    let page = os::page_size();
    // SAFETY: forwarded from the caller.
    let h = unsafe { header(block) };
    // SAFETY: the header is live.
    let (base, map_size) = unsafe { ((*h).base, (*h).map_size) };
    let offset = block as usize - base;
    let Some(new_map_size) = map_size_for(new_size, offset, page) else {
        return ptr::null_mut();
    };
    if new_size <= old_size {
        // Shrink in place; give the tail back only when it is worth a
        // system call (a quarter of the mapping or more).
        if (map_size - new_map_size.min(map_size)) * 4 >= map_size {
            // SAFETY: the tail past the new size is ours and page-aligned.
            unsafe { os::unmap((base + new_map_size) as *mut u8, map_size - new_map_size) };
            // SAFETY: the header is live.
            unsafe { (*h).map_size = new_map_size };
            OS_COUNTERS.large_remapped(map_size, new_map_size);
        }
        return block;
    }
    if new_map_size <= map_size {
        // Grows into room the mapping already has.
        return block;
    }
    // Grow by at least a quarter: the extra is address space, resident only
    // once written, and a buffer grown in small steps then moves pages once
    // per quarter instead of once per page.
    let reserve = new_map_size.max((map_size + map_size / 4).next_multiple_of(page));
    // Resident cached pages before fresh ones. First those right after the
    // mapping (the rest of a range this block was cut from): in place, no
    // system call.
    let absorbed = CACHE.take_following(base + map_size, new_map_size - map_size, reserve - map_size);
    if absorbed != 0 {
        // SAFETY: the header is live; the pages after the mapping, out of
        // the cache now, are this block's.
        unsafe { (*h).map_size = map_size + absorbed };
        OS_COUNTERS.large_cache_absorbed(absorbed);
        // SAFETY: the block's whole range, ours and page-aligned.
        unsafe { advise_cached_pages(base, map_size, map_size + absorbed) };
        return block;
    }
    // Then a cached range elsewhere, copied into: copying a buffer costs
    // less than faulting in its growth afresh (a page fault and the
    // kernel's zeroing per 4 KiB), and the cached range would otherwise sit
    // resident, unused, beside the grown buffer.
    if align <= page
        && let Some((new_base, new_map_size)) = take_cached(new_map_size)
    {
        // SAFETY: the cached range is ours, page-aligned and at least
        // `map_size_for(new_size, offset)` long; `align <= page` keeps the
        // block aligned; the old block is live and does not overlap it.
        unsafe {
            let moved = (new_base as *mut u8).add(offset);
            write_header(moved, new_base, new_map_size);
            advise_cached_pages(new_base, map_size, new_map_size);
            ptr::copy_nonoverlapping(block, moved, old_size);
            free(block);
            return moved;
        }
    }
    if align <= page && reserve <= isize::MAX as usize {
        // SAFETY: the block's whole range is its own (`os::remap` takes a
        // piece of a kernel mapping too).
        let new_base = unsafe { os::remap(base as *mut u8, map_size, reserve) };
        if !new_base.is_null() {
            let new_map_size = reserve;
            let moved_end = new_base as usize + offset + new_size;
            // SAFETY: the moved mapping is ours and page-aligned; its pages
            // past the old `map_size` are fresh, and the caller grows the
            // block to write them.
            unsafe {
                advise_pages(
                    new_base as usize,
                    new_map_size,
                    new_map_size - map_size,
                    Some((new_base as usize + map_size, moved_end)),
                )
            };
            // SAFETY: the mapping moved intact; `offset` is within it and the
            // page-aligned base keeps `base + offset` aligned to `align`.
            unsafe {
                let moved = new_base.add(offset);
                write_header(moved, new_base as usize, new_map_size);
                OS_COUNTERS.large_remapped(map_size, new_map_size);
                return moved;
            }
        }
    }
    let moved = alloc(new_size, align, false);
    if !moved.is_null() {
        // SAFETY: both blocks are live and distinct; `old_size < new_size`.
        unsafe {
            ptr::copy_nonoverlapping(block, moved, old_size.min(new_size));
            free(block);
        }
    }
    moved
}
