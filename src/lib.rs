//! poolmalloc: a pure-Rust general-purpose allocator in the line of CPython's
//! pymalloc. 256 KiB arenas are cut into 16 KiB pools; each pool serves one
//! size class and belongs to one thread at a time, so the common path takes
//! no lock and no atomic read-modify-write. Requests above 32 KiB get their
//! own mapping.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: poolmalloc::PoolMalloc = poolmalloc::PoolMalloc;
//! # fn main() {}
//! ```
//!
//! # Design
//!
//! ## Glossary
//! - **OS page**: the kernel's page, read at run time (`sysconf`).
//! - **arena**: 256 KiB mapped from the OS (eight at a time, in 2 MiB
//!   chunks), aligned to 256 KiB, so `p & !(ARENA_SIZE - 1)` is its base.
//!   The header (the pool descriptors and the arena's free-pool mask) takes
//!   the first 4 KiB of one of the first eight pools, the *header pool*,
//!   which consecutive arenas take in turn, at one of 16 offsets within
//!   the pool's first page, so that their headers do not all compete for
//!   the same cache sets (`arena::header_at`); a span that
//!   starts at the header pool puts its blocks after it. Why not leave a
//!   whole pool to the header, as before: on huge pages an arena is
//!   resident whole, and the idle 12 KiB of every header pool raised
//!   btree's peak RSS by 5% (140.2 to 147.5 MiB).
//! - **pool**: 16 KiB of an arena (pools 0..16) serving blocks of one class.
//!   Medium classes use a **span** of up to 8 contiguous pools, described by
//!   its first pool's descriptor.
//! - **block**: what the user gets.
//! - **class**: a size-class index; [`size_class`] maps requests to classes.
//! - **heap**: a thread's state: per class, the pool it allocates from
//!   (`active`), the pools with free blocks (`available`), and the pools
//!   other threads freed blocks to (`pending`).
//! - **large allocation**: above 32 KiB (or aligned above 16 KiB): its own
//!   mapping, with a header just before the block.
//!
//! ## Size classes
//! 8 bytes, 16-byte steps to 128 bytes, then four classes per doubling to
//! 32 KiB:
//!
//! ```text
//! 8 | 16 32 48 64 80 96 112 128 | 160 192 224 256 | 320 384 448 512 | 640 768 896 1024
//! 1280 1536 1792 2048 | 2560 3072 3584 4096 | 5120 6144 7168 8192
//! 10240 12288 14336 16384 | 20480 24576 28672 32768
//! ```
//!
//! A request of `n` bytes with alignment `a` up to 16 maps to a class by one
//! load from a 4 KiB table indexed by `(max(n, a) + 7) / 8`: the `max` keeps
//! 16-aligned requests of 8 bytes or less out of the 8-byte class. Why an
//! 8-byte class (pymalloc and jemalloc have one; mimalloc too): short
//! strings and tiny vectors are common in Rust, whose layouts ask for
//! alignment 1 to 8. compare/'s strings workload (words of 2 to 12 bytes)
//! peaked at 20.5 MiB against 21.7, and btree at 141.5 MiB against 143.5
//! (five runs each); it costs the `max`, 2 instructions per allocation with
//! a layout not known at compile time. A block of class `c` is
//! aligned to the largest power of two dividing its size (at most 16 KiB),
//! because spans start on pool boundaries (classes aligned above 4 KiB never
//! start at the header pool, whose blocks start after the header); an over-aligned
//! request takes the smallest class that is both big enough and aligned
//! enough. Spans join the fewest pools that hold 64 blocks (or as many as 4
//! pools hold) for blocks up to 1 KiB, and at least four blocks above, with
//! at most 1/16 lost (a span at the header pool loses the header's 4 KiB on
//! top, so it may hold three blocks, or lose up to 1/8). Why
//! 64: a heap allocates from one span per class while frees land in all of
//! them, so small spans send a random-free workload down the slow paths
//! often. Why not above 1 KiB: there a long-lived block pins more memory
//! (see `size_class`). For the same reason a thread's first span of each
//! class up to 1 KiB is a single pool: a thread that uses a class a little
//! and leaves a few blocks behind pins 16 KiB, not 32-64, while a thread
//! that keeps allocating the class gets full spans from its second on
//! (`size_class::class_first_span_pools`).
//!
//! ## Finding metadata from a pointer
//! For a pool block: arena base = `p & !(ARENA_SIZE - 1)`; its header sits
//! in pool `(base >> 18) & 7`, `((base >> 21) & 15) * 128` bytes in (shifts
//! and masks of the address); pool number = `(p >> 14) & 15`; `span_head[number]` names the
//! descriptor. Two loads, no search. For the Rust API the `Layout` says which kind a block is: a layout
//! of at most 32 KiB and alignment at most 16 KiB is a pool block, anything
//! else is large. `realloc` keeps that true (it never leaves a block in place
//! across the boundary). Without a layout ([`usable_size`], checked mode), a
//! bitmap over the address space, one bit per 256 KiB, says whether `p` is
//! in an arena; if not, the large header sits just before `p` and carries a
//! magic value tied to its address.
//!
//! ## Pool states
//! A pool is, for its owning heap, in one of five states:
//!
//! ```text
//!            acquire (arena lock)
//!   Free ------------------------> Active --(exhausted)--> Full
//!    ^                             ^   ^                    |
//!    |                      refill |   | refill             | a block comes back
//!    |                             |   | (carves afresh)    | (local free or remote
//!    |                        Available <-------------------+  frees taken back)
//!    |                             |   |
//!    |             last block back v   |
//!    +---------------------------- Kept
//!      swept, or over the heap's cap
//! ```
//!
//! - **Active**: `heap.active[class]`; the fast path pops from it.
//! - **Available**: on `heap.available[class]` (doubly linked), with free
//!   blocks, oldest first: a pool joins at the tail when its first block
//!   comes back, and the refill takes the head, which has had the longest
//!   to gather free blocks. Taking the newest instead (pymalloc's order)
//!   took a pool with one or two free blocks: in compare/'s hashmap 0.98M of
//!   2M allocations went to the refill path, against 0.33M oldest first.
//!   When a heap is swept (its thread exits, or calls [`collect`]), the
//!   lists are sorted by address, so that the next thread (or the next
//!   refills) fills the lowest pools first and the others can drain
//!   (`heap::sort_available`); kept sorted all the time, the lists cost
//!   hashmap, larson and workqueue 5-9% (refills again took pools with few
//!   free blocks).
//! - **Full**: on no list (pymalloc's full pools).
//! - **Kept**: on `heap.kept[class]`, every block free and forgotten: when
//!   the heap needs a pool of the class again it carves this one afresh,
//!   without the arena lock. A pool that is not Active is kept the moment its
//!   last block comes back. pymalloc instead returns it to the arena at
//!   once, which made a program that frees and reallocates its working set
//!   give it all back and take it again (see `heap::keep_pool` for the
//!   measurements). Kept pages do not stay resident for ever: the purger
//!   purges them in place after the purge delay (see below).
//! - **Free**: back in its arena. Kept pools go back when their heap is swept
//!   (thread exit, [`collect`]; a sweep waits for a purge in progress on one)
//!   or when the heap keeps more than its cap, all of them at once (those
//!   being purged at that moment stay); an Active pool goes back when its
//!   heap is swept. The cap starts at 128 KiB and doubles, up to 64 MiB,
//!   each time the heap needs a fresh pool after going over it: a heap
//!   keeps about what it turns over.
//!
//! Both transitions a free can cause hang on one counter. `used` is
//! `blocks_out + (1 if Active) + (i32::MIN if Full)`, so after a local free
//! `used <= 0` exactly when the slow path has work: a Full pool got a block
//! (negative), or a pool that is not Active became unused (zero). The Active
//! pool's bias keeps a pair loop off the slow path. The pool invariant is
//! `blocks_out + |free| + (capacity - carved) == capacity`, where blocks
//! freed remotely count as out until their owner takes them back. Blocks are
//! carved lazily, an OS page first and then as many as are carved already
//! (4, 4, 8, 16 KiB...), so a fresh pool touches memory only as it is used
//! and a busy one refills rarely.
//!
//! ## Arenas
//! One lock guards the arena lists, taken only when a heap needs or returns a
//! pool, and by the purger's passes. Arenas sit in lists by their number of
//! free pools and, within that, by the longest run of free pools a span can
//! take; a new span comes from the fullest arena with a run that fits
//! (pymalloc's ordering), so emptier arenas drain. A bit mask per free count
//! says which run lists are non-empty, and the head of any list whose run
//! fits has room, so the search looks at list heads only. Before, the lists
//! went by free count alone, and a span search walked past every arena with
//! enough free pools but no run long enough: on compare/'s 1.6 GiB batch of
//! 1..32 KiB blocks (6400 arenas) that walk was 80% of the instructions
//! (465M of 3 rounds; 129M now), and a cache and TLB miss per arena. The
//! criterion median went from 204 ms to 91 ms (mimalloc 22 ms, with huge
//! pages); what remains is first-touch page faults, see below. Lists by run
//! alone, tried first, looked at one arena, but put a nearly empty arena
//! with a busy pool in its middle ahead of a full one with a free tail.
//!
//! ## Giving memory back
//! A pool returned to its arena is *dirty*: its pages stay resident, so a
//! program that frees and allocates in waves reuses them without faults.
//! Once an arena has had no pool returned for the purge delay (1 s by
//! default), its dirty free pools are purged with `MADV_DONTNEED` and an
//! empty arena is unmapped, except for one spare (`ARENA_SPARES`), whose
//! pages are purged instead. Freed large mappings wait in a bounded cache
//! (64 MiB, 32 entries) for reuse and are unmapped after the same delay.
//! Pools a heap keeps (state Kept) are purged in place after the same delay,
//! and stay with their heap: the purger and the owner hand a kept pool's
//! pages over with a compare-and-swap on the descriptor (`Pool::keep`;
//! modelled under loom), so a thread that frees its heap and goes idle gets
//! its RSS back without ever running again. Pools whose every block other
//! threads freed while their owner stays away are purged in place sooner,
//! after 10 ms (stranded pools; see the remote frees).
//!
//! Small heaps use 4 KiB pages; big ones use transparent huge pages while
//! the kernel hands them out fast. On a big heap freed in random order
//! small pages cost TLB misses and page faults (on the AMD VM of earlier
//! sessions a 1.6 GiB batch of 1..32 KiB blocks ran 2.3x slower than with
//! huge pages, and mimalloc, which maps huge pages, beat it; on the Intel
//! VM btree spent 4% more user time than with them). Once the heap passes
//! 16 MiB, each new 2 MiB chunk arenas are cut from is advised for huge
//! pages and its first fault is timed, outside the arena lock. At that
//! point the eight chunks mapped before, in small pages, are collapsed
//! into huge pages (`MADV_COLLAPSE`, `arena::collapse_chunks`): what a
//! program allocated first often stays in use, and on small pages it cost
//! hashmap 7% and btree 9% (TLB misses). A chunk less than a quarter
//! resident is left alone, the free pools of a collapsed one count as
//! dirty so the purger returns what the collapse made resident, and the
//! chunks stay advised against huge pages so khugepaged leaves them alone
//! once purges split them. On the Intel VM that fault takes 0.22-0.35 ms when the kernel has a huge page
//! free (512 small-page faults take 0.6-1.4 ms) and 4.6-5.2 ms when it
//! comes from memory the host has taken back, which happens once the
//! memory other processes freed recently is used up. After a fault over 1
//! ms the next 128 chunks (256 MiB) get small pages, twice as many after
//! each further slow one (at most 1 GiB); a fast one halves the count, and
//! one chunk is tried at a time (`arena::HugePageProbe`: a slow fault
//! stalls the other threads too, so it is worth few tries). Before the
//! probe, on the AMD VM, advising every chunk made the idle workload's
//! 4-thread fill of 1 GiB take 2.75 s against 0.42, with each first fault
//! made under the arena lock, and btree 10% slower in a balanced run.
//! `POOLMALLOC_HUGE_PAGES=0` turns huge pages off, `2` advises every chunk
//! past 16 MiB. The probe's cost: huge pages hold memory in 2 MiB units
//! (hashmap's peak RSS 58.3 MiB against 55.1 with small pages), and in the
//! slow state each probe costs about 4 ms more than small pages would have
//! (the idle workload's 1 GiB fill: 0.34 s against 0.32 with small pages,
//! 3-4 slow faults).
//! (An older cost, btree's peak RSS +5% from the unused rest of every
//! header pool, went when that pool began to hold blocks.) Huge pages are
//! part of what mimalloc has over poolmalloc on the 100k-block batch of
//! 8..512 bytes (26 MB): in a trial build advising every chunk (no 16 MiB
//! threshold), rounds took 2.61-2.80 ms, against 2.75-2.98 without and
//! mimalloc's 2.39-2.96 (5 interleaved fresh-process runs).
//!
//! Purging runs in a background thread, started by `pthread_create` the first
//! time memory becomes dirty. It sleeps on a futex while nothing is dirty, so
//! an idle process with nothing to return costs no wake-ups; otherwise it
//! wakes when the oldest dirty memory comes due (passes woken only to look
//! at stranded pools, see the remote frees, do nothing else). Each full
//! pass also takes back
//! blocks freed to the heaps of exited threads. Without it
//! (`POOLMALLOC_BACKGROUND_PURGE=0`), the slow paths that release or keep
//! pools or cache large mappings check the clock and purge what is due. Nothing purges on a fast path.
//! Settings are read once with `getenv`; see the `decay` module.
//!
//! A live thread's heap is touched only by that thread, so three things wait
//! for it: its Active pools (at most one per class), its Kept pools (whose
//! pages are purged, but whose address space stays the heap's), and blocks
//! other threads freed to its pools, which it takes back on its next slow
//! path. [`collect`] does all three for the calling thread at once.
//!
//! ## Fast paths
//! Allocation: thread-local heap pointer, `active[class]`, pop its `free`
//! list; nothing is written but the list head. A thread that never allocated
//! points at a static empty heap whose pools have no free block, so
//! initialisation hides behind the "list empty" branch. Free: find the pool,
//! compare its owner with the thread's heap, push on `local_free`, decrement
//! `used`. One unlikely branch each to a cold slow path. The thread-local is
//! const-initialised and has no destructor, so reading it is one `mov`; the
//! class table is a `const`, reached RIP-relative from the inlined code.
//! x86-64, counted in the disassembly up to `ret`: 18 instructions for
//! alloc and 26 for free, each including the 4 that check the layout (and
//! alloc the 2 of `max(size, align)`, see the size classes; free the 3 of
//! the header color, see `arena::header_at`); callgrind counts 65.6 per
//! 64-byte pair with the benchmark loop and its dynamic calls.
//!
//! Why two lists: with one list, alloc and free in a loop pop and push the
//! same head and bump the same counter, so each waits for the other's
//! stores to forward. That cost 6.7 ns per pair against mimalloc's 5.0
//! despite fewer instructions. With `free` and `local_free` (mimalloc's
//! sharding), and `used` counting the `free` list in advance so that a pop
//! writes no counter, the pair takes 4.5 ns. When `free` runs dry, refill
//! moves `local_free` over in O(1) (`local_mark` holds the counter's next
//! value), which brings the cache-hot blocks back first.
//!
//! `alloc_zeroed` has its own copy of the allocation fast path. A pool
//! records whether every block on its `free` list was carved from memory
//! untouched since its arena was mapped (`Pool::free_is_zero`; arenas mark
//! the pools they have ever handed out, and purging is not counted on, as
//! it skips partial pages). Such a block needs only its link word cleared,
//! so a fresh `vec![0; 32768]` touches one page, not eight, as a fresh
//! mapping would (jemalloc, mimalloc and glibc skip the clear for fresh
//! memory too). Blocks freed and reused are cleared in full.
//!
//! ## Remote frees
//! A block freed by a thread other than its pool's owner goes on the pool's
//! `remote` list (an atomic stack, pushed with a CAS). The push that makes
//! the list non-empty also puts the pool on the owner heap's `pending` stack,
//! so each pool is there at most once. The owner swaps `pending` out whole in
//! its refill slow path and splices each pool's remote list into its free
//! list. The list's word carries its length above the address bits, so when
//! the pool has no local frees waiting the splice walks nothing: before, a
//! producer whose consumer frees every block chased one link per block, each
//! in a line the other core had just written (compare/'s prodcons: 0.36 s
//! against 0.28 now, six alternating runs). A block on a remote list still counts as out, so its pool cannot be
//! retired (and its owner cannot change) while a remote free is under way.
//! The `remote` module holds this protocol's code. A thread with a heap
//! batches: frees to the same foreign pool collect in its outbox (one entry
//! per class, each up to 256 blocks or 32 KiB, owner-only) and go over with
//! one CAS when the class's next remote free is to another pool, the entry
//! fills, or the thread takes a slow path, calls [`collect`] or exits;
//! producer/consumer programs then pay one contended CAS per run of blocks
//! instead of one per block, even when consecutive blocks differ in size.
//! The cap was 64 blocks until 9c35eb0; at 256 compare/'s prodcons flushes
//! half as often (99k against 196k times) and runs in 0.22 s against 0.28
//! (jemalloc 0.21-0.22), with the same bound on the bytes an entry holds.
//!
//! Only the owner takes remote frees back, so a thread that hands its
//! blocks to others and then blocks (in `join`, on a channel) would keep
//! them all resident while it waits. The purger purges such *stranded*
//! pools in place (the `stranded` module): the push that makes a pool's
//! remote list hold every block marks the list complete and reports the
//! pool in a ring; the purger marks a complete list seen, and if nobody
//! has taken it one stranded delay (10 ms; longer while its second looks
//! find every pool taken back) later, it claims the list with
//! a compare-and-swap on the remote word, purges the span's pages and
//! leaves the word saying "every block back, no list". The owner, when it
//! comes back, forgets the blocks and carves the pool afresh. An owner that
//! takes its list while the purge runs takes nothing, and the purger puts
//! the pool back on its pending list when done (modelled under loom). The
//! pool never changes owner, so no owner can be surprised. Why twice, 10
//! ms apart: a producer whose consumer frees everything finds its pools
//! complete all the time and takes them back within microseconds; purging
//! those would make it fault their pages in again. For the same program the
//! purger waits longer between looks (up to 160 ms) while its second looks
//! find nothing to purge, so that it does not wake 100 times a second for
//! nothing. compare/'s larson, whose four chain threads hand 1000 blocks
//! each to a thread that frees them and wait in `join` for the rest of the
//! run: peak RSS 10200 KiB against 11560 before and jemalloc's 10860
//! (medians of ten alternating runs; about 50 pools purged, 1.6 MB).
//!
//! ## Threads starting and exiting
//! Heaps are records in allocator-owned memory, never freed. A thread's first
//! slow path takes an idle record (left by an exited thread, with its pools)
//! or cuts a new one, and arms a pthread key whose destructor runs at thread
//! exit. That destructor takes back remote frees, returns unused pools to
//! their arenas and puts the record, with its remaining pools, on the idle
//! list, where a new thread adopts it, the heap idle longest first: as a
//! stack, heaps below the top were adopted rarely, and the blocks other
//! threads freed to them pinned their pools meanwhile (see "Survivors pin
//! pools" below). Other threads may keep freeing
//! to its pools meanwhile: their pushes land on the record's pending stack,
//! and the purger takes them back. Allocations made while a thread has no
//! heap (during set-up, or in other thread-exit destructors after ours) go to
//! a shared heap behind a lock.
//!
//! ## Fork
//! `pthread_atfork` handlers take the shared-heap, idle-list, arena and
//! large-cache locks before `fork` and release them on both sides, so a child
//! can allocate whatever the parent's other threads were doing. The purger
//! thread does not survive a fork; the child starts its own on demand,
//! drops the claims the old one held on kept pools in the middle of a purge,
//! and gives its arenas back the free pools a purge pass had reserved (each
//! arena marks them, so the child knows which), as dirty.
//!
//! ## Large allocations
//! Each is one range of pages (a mapping of its own, or a piece of a cached
//! range), with a header just before the block. Growing one (alignment up
//! to a page) takes cached pages when there are some (below), and otherwise
//! uses `mremap`, reserving a quarter more address space: a doubling `Vec`
//! grown that way does not copy, and a buffer grown in small steps moves
//! pages once per quarter, not once per page; shrinking
//! unmaps the tail only when it is a quarter of the mapping. Mappings of
//! 4 MiB and more, fresh or grown, are advised for transparent huge pages
//! or against them as the arena chunks' probe says (`large::advise_pages`):
//! each asks it, and when the probe wants a measurement the first whole
//! huge page of the fresh part is advised alone and written once, timed;
//! the rest of the mapping gets huge pages only if that was fast, so a
//! slow state costs one slow fault, not a growth's worth. When
//! they were advised with no probe, compare/'s vecgrow (a `Vec` grown to
//! 64 MiB eight times) ran 0.45-0.59 s in the rounds where huge-page
//! faults were slow, against 0.34-0.39 in the others and glibc's 0.43-0.47.
//! Freed mappings go into a
//! cache (32 entries, 64 MiB) of page ranges, jemalloc's extents in small:
//! a request takes the best fit, or the head of a bigger range whose tail
//! stays cached; a freed range merges with cached neighbours. A growing
//! block takes, before any `mremap`, the cached range that follows it, and
//! else moves (copies) into a cached range big enough. So a buffer rebuilt
//! by growing from small, as a `Vec` collected in a loop is, grows back
//! into its predecessor's resident pages instead of faulting fresh ones.
//! That was the gap on the `strings` workload: the old cache handed out the
//! head of the old 6 MiB buffer and unmapped the rest, and the regrowth
//! faulted every page again (13.8k minor faults against jemalloc's 5.0k,
//! 3.2k now). Keeping the tails without the merges and the moves (tried in
//! session 5) halved the faults but raised peak RSS from 20 to 30-39 MiB:
//! the buffer then grew by `mremap` into fresh pages beside resident tails
//! nothing used. With both, strings' peak RSS fell to 16.6 MiB. Merged
//! ranges made the byte budget, not the 32 entries, the cache's bound: the
//! demo kept 56 MiB of freed hash tables cached while its arenas mapped
//! fresh memory, and peaked 30% higher. Every arena mapped beyond the
//! arenas' peak now makes the cache unmap as much of its oldest ranges
//! (`large::note_arena_growth`). Merged ranges keep the older stamp, so the
//! purge delay still bounds how long idle pages stay cached. A 16 MiB budget also fixed the demo, but
//! cost the 8 MiB pair (38 ns against 8.6) and the doubling realloc (209 us
//! against 1.3), whose buffers no longer fit.
//!
//! In front of the cache, each heap keeps one freed mapping of its own (its
//! *large slot*, the `slot` module): a thread that frees and allocates large
//! blocks in turn reuses it with no lock and no shared counter. Through
//! the shared cache a 1 MiB pair took 253 instructions and nine atomic
//! read-modify-writes and ran 1% behind glibc (19.9 against 19.7 ns); through
//! the slot with two atomic swaps it took 161 instructions and two, 9.3 ns
//! against glibc's 19.2 on the AMD VM. On the Intel VM an uncontended swap
//! costs 6 ns, and the pair took 16.2 ns against glibc's 15.4. The owner
//! now takes and puts with plain loads and stores, and the threads that
//! steal slots (the purger on each full pass, `collect`) pay instead: they close
//! a gate the owners read and issue `membarrier(2)`, which puts a full
//! barrier in every running thread of the process, the heavy side of an
//! asymmetric fence whose light side, in the owner, is a compiler fence.
//! Dekker's argument then holds with the barrier on one side only: either
//! the stealer sees the owner busy in a take, or the owner sees the gate
//! closed and swaps as before; and a put either is seen by the purger's
//! pass or sees the purger idle and wakes it. The pair now takes 8.8-9.2 ns
//! against glibc's 15.2-15.4. Where the kernel refuses `membarrier` the
//! gate stays closed and owners swap, the put's swap SeqCst. The purger
//! moves every slot's mapping to the shared cache on each full pass, so a mapping
//! a sleeping thread holds is unmapped within about two purge delays.
//!
//! ## Instrumentation
//! With the feature `stats`, each heap counts per class its allocations,
//! frees, pools and a sampled peak, and its thread's requested bytes, in
//! relaxed atomics that only the owner writes, with a plain load and store
//! (the `counters` module; LLVM folds each update into one `inc`/`add`).
//! The request size travels through the fast paths as a type that is
//! zero-sized without the feature, so without it the machine code is what
//! it was before the layer existed (callgrind, 64-byte pair: 57 instructions
//! before and after the layer landed). At 1cfd113: 62.6 without the
//! feature, 73.7 with it; with header colors, 65.6 and 76.7. [`stats`] merges every heap record ever made with an arena
//! census and derives the byte accounting, whose lines add up to the mapped
//! bytes: pools counted by heaps and free pools counted by the arenas must
//! together fill the arenas, so the identity is a check, not a remainder.
//!
//! ## Where the design falls short
//! In the last full run (f4ac76b, 20 rounds, each allocator following
//! every other equally often, on a 2-vCPU AMD EPYC VM; BENCHMARKS.md has
//! the numbers) poolmalloc is first on all nine whole programs, the
//! closest vecgrow (0.472 s against glibc's 0.493), with peak RSS within
//! jemalloc's + 5% on all nine; so was it in the run before (2f04883).
//! Among the micro benches it is behind on the 1.6 GiB batch of 1..32 KiB
//! blocks (46.3 ms against mimalloc's 39.7: huge pages, below) and
//! glibc's doubling realloc. The five
//! sessions before ran on an Intel Xeon VM, where the last run (9c2fce1)
//! had it behind jemalloc on prodcons (0.224 s against 0.209) and
//! mimalloc on workqueue (0.254 against 0.260, its rounds split in two),
//! and level with glibc on vecgrow; earlier runs there also had it behind
//! on vecgrow (e419737) and hashmap (da5e527). Callgrind counts fewer
//! instructions for poolmalloc on these (prodcons' producer 180M against
//! jemalloc's 301M at scale 0.2), so what separates them is memory and
//! scheduling, which that model does not time. What explains the
//! margins:
//! - **Frees touch metadata and the block.** A free reads the span-head
//!   table and the pool descriptor, and writes the free-list link into the
//!   block. jemalloc's sized free puts the pointer in a per-thread array and
//!   touches neither, which is most of its lead on hashmap in earlier runs
//!   (0.456 s against 0.480 at fdbe63d). A thread cache was
//!   built in full on c8c1dd7 (per class a stack of freed pointers, filed
//!   by the layout's class, bounded by count and bytes, drained half at a
//!   time to the pools, at thread exit and in `collect`, with its own line
//!   in the statistics) and not kept. It ran hashmap 7-18% faster but
//!   larson 6-14% and strings 4-10% slower, and churn's peak RSS went over
//!   jemalloc's by 8%; no bin size or class range removed the losses
//!   without the gain (BENCHMARKS.md has the runs). The losses are not in
//!   instructions (larson ran 8% fewer, with as many remote frees); the
//!   likely cause, consistent with callgrind's cache counts but not proven,
//!   is where blocks come from: a pool hands out the blocks of one span at a
//!   time, while the cache hands back whichever blocks were freed last,
//!   scattered over the heap, and the few it holds keep their pools from
//!   going unused and being carved afresh. hashmap would gain because its
//!   freed blocks were just read, so reusing them first reuses cache-hot
//!   lines; larson frees blocks it has not touched for a long time.
//!   Allocation from one span at a time is the locality this design is
//!   built on, so the cache went.
//! - **prodcons is paced by its channel.** The link write above is not
//!   what keeps jemalloc ahead there: with the consumer writing the first
//!   word of each block before freeing it (a temporary change to the
//!   workload), jemalloc ran 2% slower (0.2114 s against 0.2070, six
//!   alternating runs each), less than its 5-6% lead. The workload's
//!   per-thread fields (367aa0a) show what is: the producer sets the pace,
//!   and its CPU time is about the same under both (0.221 s against 0.208,
//!   medians of 20 rounds, the difference about the system time of
//!   wake-ups); poolmalloc's consumer spends 0.135 s against jemalloc's
//!   0.188, so it empties the channel and parks on it 4676 times against
//!   1123, and each park costs the producer a futex wake in its next send.
//!   With 3 us more work per 1000-block batch in the consumer (temporary),
//!   poolmalloc ran prodcons in 0.209 s and jemalloc in 0.238 (six
//!   alternating runs each). Pinned to one CPU, poolmalloc runs it in
//!   0.16-0.17 s and jemalloc in 0.26-0.27. A per-pool bitmap of remote
//!   frees, which would take the link out of the block, was the candidate
//!   fix until these measurements; it is not built, and they say it would
//!   not close this gap. (A remote push publishes its blocks and the
//!   pool's "non-empty" transition, which pins the pool, in one CAS of one
//!   word; a bitmap of more than 64 blocks would need a second protocol.)
//!   All of this is the Intel VM's: on the AMD VM of 2026-12-07 jemalloc's
//!   producer spent more CPU than poolmalloc's (219 ms against 150,
//!   medians of 20 rounds, f4ac76b) and poolmalloc ran prodcons in 0.158
//!   s against 0.226.
//! - **Remote frees wait for their owner.** Only a heap's thread takes
//!   back the blocks other threads free to its pools, in its slow paths,
//!   so a thread that stops allocating while it waits keeps them.
//!   larson's four chain threads each allocate 1000 blocks, hand them to a
//!   thread that frees them, and block in `join` for the rest of the run.
//!   With each chain thread taking its remote frees back after each
//!   `join` (its own heap's part of [`collect`], a temporary change to the
//!   workload), larson's peak RSS was 9410 KiB against 11528 without and
//!   jemalloc's 11106 (medians of 8 alternating runs), at the same speed.
//!   jemalloc has no owners: a freed block goes back to its arena's bin,
//!   for any thread of that arena. No cheap signal tells a heap that its
//!   thread has stopped (the fast paths publish nothing), and no other
//!   thread may take over a heap whose thread can run again at any moment,
//!   so larson's peak stayed over jemalloc's (by 3.7-5.4% in the runs
//!   from b624e88 to e419737). What was missing was not the blocks but
//!   their pages: stranded pools are now purged in place (see the remote
//!   frees above), which takes back the pools whose every block came back,
//!   and larson's peak fell under jemalloc's. What it cannot take back: a
//!   pool with one block still out; the owner's Active pool while blocks
//!   of it were never carved; a pool whose owner took some of its blocks
//!   back (in a refill) before the rest came, since its list then never
//!   holds them all (a producer that blocks after running for a while
//!   keeps most of its pools so); and pools whose reports are lost (see
//!   the `stranded` module). A program that hands its memory off and then
//!   blocks for long can still call [`collect`], which takes everything
//!   back for reuse.
//! - **Survivors pin pools.** churn's threads each leave 4 of their 200
//!   blocks alive in a ring of 1000, and each survivor keeps its pool, in
//!   the heap its exited thread left, from going back. Before d45b0c9,
//!   between 10% and 100% of its threads the free blocks in pools in use
//!   grew from 1.45 to 1.96 MB and the arenas from 14 to 16 (one run with
//!   the `stats` feature), RSS grew by 1.0-1.4 MiB against jemalloc's 0.3,
//!   and its peak was 5-7% over jemalloc's. A 10 ms purge delay barely
//!   changed it (6270 KiB against 6372), so it is not memory kept for
//!   reuse, and neither did taking the most recently available pool first
//!   instead of the oldest (6266 against 6358; 8 alternating runs each, a
//!   trial build). Lowest address first helps: sorted at thread exit
//!   (d45b0c9), the RSS of the arenas' mappings (thread stacks included,
//!   from smaps) fell by about 110 KiB (3762 against 3870, 12 alternating
//!   runs), and by about 230 in a trial that kept the lists sorted all the
//!   time, which cost other workloads 5-9%. In the five full runs since,
//!   churn's peak was 1.7-5.0% over jemalloc's (6212-6326 KiB against
//!   6026-6122; the run with 5.0% is also jemalloc's lowest), and the
//!   median of each run's own growth 0.75-1.15 MiB (jemalloc's
//!   0.27-0.33; between the medians, 0.75-1.2 MiB), so its growth is
//!   still at the 1 MiB line. Taking exited threads' remote frees back on
//!   every purger pass, not only on full ones, made it worse (a trial:
//!   6442 KiB against 6316, 12 alternating runs): the sweep that follows
//!   returns the heap's unused pools, and the next thread takes fresh ones.
//!   Most of the growth was not the survivors but their deaths: the
//!   idle heaps were a stack, and once there were more of them than a
//!   wave of churn's threads used at once (five idle records in a stats
//!   build, where a wave's first thread often exits before its last
//!   starts), the bottom ones were adopted rarely, so
//!   the survivors the main thread freed to them stayed counted out and
//!   kept their pools from refilling anyone (one heap held 3317 blocks
//!   out for 12.5k threads at scale 10, where the ring turns over every
//!   2.5k). As a queue (164d55a) every idle heap is adopted in turn: at
//!   scale 1 peak RSS 5636 KiB against 6220 and jemalloc's 6074, growth
//!   0.31 MiB against 0.82 (jemalloc 0.20); at scale 10 (50k threads,
//!   10k survivors) 17.8 MiB against 22.5 and jemalloc's 16.8, growth 0.9
//!   MiB against 3.7 (jemalloc 0.1; medians of 6 alternating runs on the
//!   AMD VM). What is left: a heap holds one pool for each
//!   class its threads leave a survivor of (15 pools of classes up to 512
//!   bytes, holding under 25 blocks each, in each of churn's three heaps;
//!   a stats build), where jemalloc's threads share their arena's slabs,
//!   and a pool cannot change owner while blocks in it are out.
//! - **Huge pages come late.** mimalloc advises its whole 1 GiB
//!   reservation for huge pages; when the VM's huge-page faults are cheap
//!   its btree runs with fewer TLB misses (1.363 s against 1.453 with 0.03
//!   s of system time in the 6d619b7 run, when poolmalloc had small pages
//!   only). Huge pages while their faults are fast (above) took most of
//!   that back: in an 8-round balanced run btree took 0.985 s against 1.147
//!   with small pages and mimalloc's 0.946, hashmap 0.317 against 0.337 and
//!   0.303. The first 16 MiB stayed in small pages so small programs stay
//!   small, and cost hashmap and btree most of the rest; da5e527 collapses
//!   them when the heap passes them (above). With huge pages past 16 MiB
//!   in both builds (`POOLMALLOC_HUGE_PAGES=2`, six alternating runs),
//!   btree took 0.910 s against 1.088, and hashmap 0.312 against 0.347
//!   once chunks a quarter resident were collapsed too (0.333 with half:
//!   its values come from `alloc_zeroed`, and most of their pages are
//!   never touched, so only four of its eight chunks were half resident
//!   when the heap passed 16 MiB). The collapse's cost: spans that live
//!   threads hold in those chunks become resident whole, and owners do not
//!   purge spans they hold (the idle workload: 4.7-4.8 MiB after freeing
//!   everything, against 4.2). When the faults turn slow, the probe pays one and falls
//!   back to small pages, where mimalloc keeps paying them (its btree:
//!   1.161 s against poolmalloc's 1.005 in the da5e527 run, 0.23-0.33 s of
//!   system time in 15 of 20 rounds). Large mappings from 4 MiB were then
//!   advised for huge pages without a probe; vecgrow's slow rounds in that
//!   run (0.45-0.59 s with 0.15-0.32 s of system time, against 0.34-0.39
//!   with 0.06-0.13) were likely slow faults there. They ask the same probe
//!   now (see the large allocations). In the 8e0888e run vecgrow took
//!   0.416 s against glibc's 0.465, but 9 of its 20 rounds were slow
//!   (0.47-0.52 s, glibc 0.44-0.48 in the same rounds): 9 of the 10 that
//!   ran right after a jemalloc run, and none of the others; in the
//!   e419737 run 10 were slow (9 after jemalloc) and glibc's median won,
//!   0.452 against 0.455. In those the
//!   probe found slow faults and gave small pages to most of the growth,
//!   and the rounds were still slower than glibc's. A temporary trace of
//!   every huge page after a jemalloc run showed two reasons: a growth's
//!   first page can be fast and its later ones slow (11 fast, then 4 over
//!   1 ms, in one growth to 64 MiB), and after a slow probe the back-off
//!   keeps small pages for later repeats, which would have found the
//!   program's own freed huge pages fast. The probe decides at the first
//!   touch and never again, which a program that keeps reusing a big heap
//!   pays for: on the AMD VM of 2026-12-07, where a fresh huge page took
//!   5.2 ms to fault when the host had taken the memory back (0.09 ms
//!   when just freed; 512 small pages 0.71 ms), compare/'s 1.6 GiB batch
//!   of 1..32 KiB blocks kept small pages, and its rounds kept faulting
//!   pages no round had touched (pools that go back to the arenas come
//!   back to other classes, at other offsets): 46.3 ms a round against
//!   mimalloc's 39.7, which paid 5.8 s in its first round in a fresh
//!   process and takes no fault after. With `POOLMALLOC_HUGE_PAGES=2` a
//!   scratch loop of the same rounds ran 22.5 ms against mimalloc's 25.9.
//!   Not built: collapsing, from the purger, the small-page chunks a heap
//!   has kept mostly resident for a while (the start-up collapse above,
//!   later and for any chunk), so that the first touch stays cheap and a
//!   long-lived heap still ends up in huge pages.
//! - **The work queue's time is a scheduling mode** (sleeps in std's
//!   channel and mutex on 2 CPUs). In the 20-round run, the same build
//!   under two names (the huge-page setting does nothing below 64 arenas)
//!   took 0.187 s and 0.290 s; within the fast mode mimalloc spent 7% less
//!   user CPU in an earlier run, which callgrind's instruction counts
//!   (lower for poolmalloc in every thread) do not explain. In the 8e0888e
//!   run mimalloc's rounds split (13 in 0.216-0.273 s, 7 in 0.321-0.497)
//!   and its median, 0.246, beat poolmalloc's 0.256 (0.233-0.304 over all
//!   20 rounds).
//!
//! ## Modules
//! `config` (geometry) and `size_class` (pure class math) at the bottom;
//! `os` is the only caller of libc; `sync` holds the atomics and the
//! slow-path lock (swapped for loom's in the model checks); `pool` the descriptor and
//! its lists; `remote` the lock-free pending list; `stranded` the reports
//! of pools whose every block came back remotely; `arena` arenas, their
//! lists and purging (stranded pools included); `large` large blocks and their cache; `slot` each
//! heap's cached large mapping and the handshake that steals it; `decay` the
//! settings and the purger's wake-up; `counters` the per-heap and OS-level
//! counters; `heap` the thread heaps and fast paths; `purger` the background
//! thread; `stats` the snapshot and report; this file the `GlobalAlloc`
//! routing.
//!
//! ## Rules inside the allocator
//! Nothing allocates, panics, formats or unwinds on an allocation path. A
//! detected corruption ends in `os::fatal`: a message written with
//! `write(2)`, then `abort`. Debug builds keep Rust's overflow checks and
//! the crate's debug assertions; one that fails under an allocator lock
//! panics, the panic allocates, and its allocation may need that lock. The
//! lock records its holder, so a thread that takes a lock it holds aborts
//! with a message (`sync::Lock`) instead of waiting for itself.

#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
// Under loom most callers of the protocol's helpers are not built.
#![cfg_attr(all(test, loom), allow(dead_code))]

pub mod config;
mod pool;
mod remote;
pub mod size_class;
mod slot;
mod sync;

// The loom models (ci/loom.sh: the lib's tests under `--cfg loom`) build only
// the modules above, the lock-free protocol and what it stands on: loom
// replaces the atomics in `sync` but cannot model what the rest needs (system
// calls, statics, thread-locals), so the rest and the allocator API are left
// out. Loom is a dev-dependency, hence `test`: other builds stay whole.
#[cfg(not(all(test, loom)))]
mod arena;
#[cfg(not(all(test, loom)))]
mod counters;
#[cfg(not(all(test, loom)))]
mod decay;
#[cfg(not(all(test, loom)))]
mod heap;
#[cfg(not(all(test, loom)))]
mod large;
#[cfg(not(all(test, loom)))]
mod os;
#[cfg(not(all(test, loom)))]
mod purger;
#[cfg(not(all(test, loom)))]
mod stats;
#[cfg(not(all(test, loom)))]
mod stranded;

#[cfg(all(feature = "stats", not(all(test, loom))))]
pub use stats::ClassStats;
#[cfg(not(all(test, loom)))]
pub use stats::{Stats, stats};

#[cfg(not(all(test, loom)))]
use config::{MAX_SMALL_SIZE, MIN_ALIGN, POOL_SIZE};
#[cfg(not(all(test, loom)))]
use core::alloc::{GlobalAlloc, Layout};
#[cfg(not(all(test, loom)))]
use core::ptr;

/// The allocator. Install it with
/// `#[global_allocator] static GLOBAL: PoolMalloc = PoolMalloc;`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolMalloc;

impl PoolMalloc {
    /// The allocator (it has no state of its own).
    pub const fn new() -> Self {
        PoolMalloc
    }
}

/// True if a block of this size and alignment lives in a pool.
#[cfg(not(all(test, loom)))]
#[inline(always)]
fn is_pool_block(size: usize, align: usize) -> bool {
    size <= MAX_SMALL_SIZE && align <= POOL_SIZE
}

#[cfg(not(all(test, loom)))]
#[cold]
#[inline(never)]
fn alloc_aligned_or_large(size: usize, align: usize) -> *mut u8 {
    match size_class::class_for(size, align) {
        Some(class) => heap::alloc(class, counters::Requested::new(size)),
        None => {
            counters::count_large_alloc(size);
            large::alloc(size, align, false)
        }
    }
}

/// # Safety
/// As for `GlobalAlloc::dealloc`.
#[cfg(not(all(test, loom)))]
#[cold]
#[inline(never)]
unsafe fn dealloc_aligned_or_large(ptr: *mut u8, layout: Layout) {
    if is_pool_block(layout.size(), layout.align()) {
        // SAFETY: the layout says a pool block, and `realloc` keeps the kind
        // of a block in step with its layout.
        unsafe { heap::free(ptr, counters::Requested::new(layout.size())) }
    } else {
        counters::count_large_free(layout.size());
        // SAFETY: as above, a large block.
        unsafe { large::free(ptr) }
    }
}

// SAFETY: blocks are disjoint and live until freed; each meets its layout
// (classes are checked to fit and align; large mappings are placed aligned).
#[cfg(not(all(test, loom)))]
unsafe impl GlobalAlloc for PoolMalloc {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size();
        if size <= MAX_SMALL_SIZE && layout.align() <= MIN_ALIGN {
            // `size <= MAX_SMALL_SIZE`, so the class exists.
            return match size_class::class_for(size, layout.align()) {
                Some(class) => heap::alloc(class, counters::Requested::new(size)),
                None => ptr::null_mut(),
            };
        }
        alloc_aligned_or_large(size, layout.align())
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() <= MAX_SMALL_SIZE && layout.align() <= MIN_ALIGN {
            // SAFETY: the layout says a pool block, and `realloc` keeps the
            // kind of a block in step with its layout.
            unsafe { heap::free(ptr, counters::Requested::new(layout.size())) }
        } else {
            // SAFETY: forwarded from the caller.
            unsafe { dealloc_aligned_or_large(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        if size <= MAX_SMALL_SIZE && align <= MIN_ALIGN {
            // As in `alloc`; fresh blocks are not cleared twice.
            return match size_class::class_for(size, align) {
                Some(class) => heap::alloc_zeroed(class, counters::Requested::new(size), size),
                None => ptr::null_mut(),
            };
        }
        if is_pool_block(size, align) {
            // SAFETY: forwarded from the caller.
            let p = unsafe { self.alloc(layout) };
            if !p.is_null() {
                // SAFETY: the block holds at least `size` bytes.
                unsafe { ptr::write_bytes(p, 0, size) };
            }
            p
        } else {
            counters::count_large_alloc(size);
            // Fresh mappings are zero already; cached ones are cleared.
            large::alloc(size, align, true)
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old_size, align) = (layout.size(), layout.align());
        let old_in_pool = is_pool_block(old_size, align);
        if old_in_pool && is_pool_block(new_size, align) {
            // SAFETY: a live pool block.
            let block_size = unsafe { heap::block_size(ptr) };
            // In place while it fits, unless it shrinks below half the block.
            // `max(align)`: the class a shrink would move to (see `alloc`).
            if new_size <= block_size && (new_size.max(align) * 2 > block_size || block_size == size_class::TINY_SIZE) {
                heap::note_resize(old_size, new_size);
                return ptr;
            }
        } else if !old_in_pool && !is_pool_block(new_size, align) {
            // SAFETY: a live large block of `old_size` bytes.
            let moved = unsafe { large::realloc(ptr, old_size, new_size, align) };
            if !moved.is_null() {
                counters::count_large_free(old_size);
                counters::count_large_alloc(new_size);
            }
            return moved;
        }
        // SAFETY: the caller guarantees `new_size` rounded up to `align` does
        // not overflow isize, which is all `Layout` requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        // SAFETY: forwarded from the caller.
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: distinct live blocks, each holding the bytes copied.
            unsafe {
                ptr::copy_nonoverlapping(ptr, moved, old_size.min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        moved
    }
}

/// The capacity of a live block: at least the size it was allocated with.
///
/// # Safety
/// `ptr` was returned by this allocator and not freed since.
#[cfg(not(all(test, loom)))]
pub unsafe fn usable_size(ptr: *const u8) -> usize {
    if arena::contains(ptr) {
        // SAFETY: a live block in an arena is a pool block.
        unsafe { heap::block_size(ptr) }
    } else {
        // SAFETY: a live block outside every arena is a large block.
        unsafe { large::usable_size(ptr.cast_mut()) }
    }
}

/// Returns memory to the OS now, without waiting for the purge delay (the
/// analogue of `gc.collect()` or `malloc_trim`):
/// - takes back blocks other threads freed to the calling thread's heap, to
///   heaps of exited threads, and to the shared heap, and returns their
///   unused pools to the arenas (the calling thread's own current and kept
///   pools included);
/// - purges every free pool (`MADV_DONTNEED`) and unmaps every empty arena
///   beyond one spare (whose pages are purged), and purges in place the
///   pools other live heaps keep;
/// - unmaps every cached large mapping.
///
/// It costs a walk over those heaps' pools and the arena lists, and one
/// system call per run of free pools and per mapping; call it after freeing
/// a lot, not in a loop. Blocks freed to *other live* threads' pools come
/// back when those threads next need memory, exit, or call `collect`.
#[cfg(not(all(test, loom)))]
pub fn collect() {
    heap::collect();
    let now = decay::now_ms();
    arena::purge(now, true);
    large::purge(now, true);
}

/// Checks the calling thread's heap (every pool's accounting and state),
/// the arena lists and the large-mapping cache. A broken invariant panics
/// in the heap's check and aborts with a message in the others, which hold
/// a lock the panic's allocation could need. For tests and debugging, with
/// the `debug-invariants` feature. Returns the arena count.
#[cfg(all(feature = "debug-invariants", not(all(test, loom))))]
pub fn check_invariants() -> usize {
    heap::check_current();
    large::check();
    arena::check()
}
