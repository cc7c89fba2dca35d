//! A thread that hands its blocks to another thread and then blocks does
//! not keep their pages resident: once every block of a pool has been freed
//! remotely and the owner has not come back for a while, the purger purges
//! the pool in place (`stranded` module). When the owner comes back, the
//! pools serve it again. The test runs in its own binary (its phases one
//! after the other), so the stats and the page residency it reads see
//! nothing else; the double-free case runs in a child process.

mod common;
use common::{fill, holds};
use poolmalloc::PoolMalloc;
use std::alloc::{Layout, alloc, dealloc};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

/// 1 KiB blocks: the first span of the class is one pool (16 blocks), the
/// next ones four pools (64 blocks, or 60 after an arena header), so this
/// is four or five whole spans and a part of one more, the owner's Active
/// span. That one is not purged unless its every block went out.
const BLOCK: usize = 1024;
const BLOCKS: usize = 16 + 4 * 64;
/// The most pages the Active span's blocks cover.
const ACTIVE_SPAN_PAGES: usize = 16;

/// Long past the stranded delay (10 ms, looked at twice) on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(5);

/// Allocates `count` blocks of `size` bytes, each filled with its own
/// pattern.
fn allocate_blocks(count: usize, size: usize, round: u64) -> Vec<usize> {
    let layout = Layout::from_size_align(size, 8).unwrap();
    (0..count)
        .map(|i| {
            // SAFETY: a valid layout; the block is filled before use.
            let p = unsafe { alloc(layout) };
            assert!(!p.is_null());
            // SAFETY: `p` is a fresh block of `size` bytes.
            unsafe { fill(p, size, round * 1_000_000 + i as u64) };
            p as usize
        })
        .collect()
}

/// Checks each block's pattern, then frees it (on the calling thread).
fn check_and_free(blocks: &[usize], size: usize, round: u64) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    for (i, &p) in blocks.iter().enumerate() {
        // SAFETY: live blocks of `size` bytes filled by `allocate_blocks`.
        assert!(unsafe { holds(p as *const u8, size, round * 1_000_000 + i as u64) }, "block {i} lost its contents");
        // SAFETY: allocated with this layout, freed once.
        unsafe { dealloc(p as *mut u8, layout) };
    }
}

const PAGE: usize = 4096;

/// The pages the blocks' memory lies on (each once).
fn pages_of(blocks: &[usize], size: usize) -> Vec<usize> {
    let mut pages: Vec<usize> = blocks.iter().flat_map(|&b| [b / PAGE, (b + size - 1) / PAGE]).collect();
    pages.sort_unstable();
    pages.dedup();
    pages
}

/// How many of `pages` are resident (allocates nothing).
fn resident(pages: &[usize]) -> usize {
    pages
        .iter()
        .filter(|&&p| {
            let mut vec = 0u8;
            // SAFETY: the page lies in an arena mapping, which stays mapped
            // (its pools are in use by the owner); `vec` has room for one page.
            let r = unsafe { libc::mincore((p * PAGE) as *mut libc::c_void, PAGE, &mut vec) };
            assert_eq!(r, 0, "mincore failed");
            vec & 1 != 0
        })
        .count()
}

/// Pages of the blocks' memory that are resident.
fn resident_pages(blocks: &[usize], size: usize) -> usize {
    resident(&pages_of(blocks, size))
}

/// Waits until at least `pools` stranded pools more than `before` were
/// purged and at most `resident_limit` pages of `blocks` are resident;
/// returns what it saw last.
fn wait_for_purge(before: usize, pools: usize, blocks: &[usize], size: usize, resident_limit: usize) -> (usize, usize) {
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let purged = poolmalloc::stats().stranded_pools_purged - before;
        let resident = resident_pages(blocks, size);
        if (purged >= pools && resident <= resident_limit) || started.elapsed() > PATIENCE {
            return (purged, resident);
        }
    }
}

/// An owner thread allocates `count` blocks of `size` bytes and hands them
/// to another thread, which checks and frees them all, and waits until
/// told to go on; returns the blocks, what was resident before the frees,
/// the flag that resumes it and the channel of its second round of blocks.
///
/// The owner waits without allocating: an allocation's slow path takes
/// remote frees back (as it should), and a channel's `recv` may allocate
/// the first time it blocks.
fn strand(count: usize, size: usize) -> (Vec<usize>, usize, Arc<AtomicBool>, mpsc::Receiver<Vec<usize>>) {
    let (blocks_tx, blocks_rx) = mpsc::channel::<Vec<usize>>();
    let resume = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<Vec<usize>>();
    let resumed = Arc::clone(&resume);
    std::thread::spawn(move || {
        blocks_tx.send(allocate_blocks(count, size, 1)).unwrap();
        while !resumed.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Back: the same heap serves the class again, from the purged pools.
        let again = allocate_blocks(count, size, 2);
        done_tx.send(again).unwrap();
    });
    let blocks = blocks_rx.recv().unwrap();
    // Before any free, so nothing can have been purged yet.
    let resident = resident_pages(&blocks, size);
    let to_free = blocks.clone();
    std::thread::spawn(move || check_and_free(&to_free, size, 1)).join().unwrap();
    (blocks, resident, resume, done_rx)
}

#[test]
fn blocks_freed_to_a_waiting_thread_are_purged_and_serve_it_again() {
    // A few spans of 1 KiB blocks.
    let before = poolmalloc::stats().stranded_pools_purged;
    let (blocks, resident_before, resume, done) = strand(BLOCKS, BLOCK);
    assert!(resident_before >= BLOCKS * BLOCK / 4096, "the blocks' pages were not resident: {resident_before}");
    let (purged, resident) = wait_for_purge(before, 4, &blocks, BLOCK, ACTIVE_SPAN_PAGES);
    assert!(purged >= 4, "only {purged} of the spans, every block free, were purged");
    assert!(resident <= ACTIVE_SPAN_PAGES, "{resident} pages of the blocks are still resident");
    // The owner comes back: its pools serve it, without new arenas.
    let arenas_before = poolmalloc::stats().arena_count;
    resume.store(true, Ordering::Release);
    let again = done.recv().unwrap();
    assert!(poolmalloc::stats().arena_count <= arenas_before, "the purged pools were not reused");
    check_and_free(&again, BLOCK, 2);

    // More pools than the purger marks in one pass (1024): 12 MiB of 64-byte
    // blocks, about 770 single-pool spans, all but the Active one purged.
    let before = poolmalloc::stats().stranded_pools_purged;
    let (size, count) = (64, (12 << 20) / 64);
    let (blocks, resident_before, resume, done) = strand(count, size);
    let mut pools: Vec<usize> = blocks.iter().map(|&b| b >> 14).collect();
    pools.dedup();
    // All but the Active pool, and the few that hold other blocks of the
    // class the owner thread allocated (std's own, say).
    let expected = pools.len() - 4;
    assert!(resident_before >= count * size / 4096, "the blocks' pages were not resident: {resident_before}");
    let (purged, resident) = wait_for_purge(before, expected, &blocks, size, 16);
    assert!(purged >= expected, "only {purged} of {expected} pools, every block free, were purged");
    assert!(resident <= 16, "{resident} pages of the blocks (four pools' worth) are still resident");
    resume.store(true, Ordering::Release);
    check_and_free(&done.recv().unwrap(), size, 2);

    // Fork while the purger watches (it looks again for a while after the
    // reports of a new strand): a child's purger starts when its first
    // freer reports a pool. The parent's purger thread does not exist in
    // the child, so a child that kept the parent's "watching" would never
    // start one. Not under ThreadSanitizer, which stops a child that starts
    // a thread after a multi-threaded fork.
    if cfg!(poolmalloc_tsan) {
        return;
    }
    let (blocks, _, resume, done) = strand(BLOCKS, BLOCK);
    // SAFETY: the child only allocates, frees, spawns a thread and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = child_strands_and_waits();
        // SAFETY: ends the child without running the parent's test harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    resume.store(true, Ordering::Release);
    check_and_free(&done.recv().unwrap(), BLOCK, 2);
    drop(blocks);
    assert!(libc::WIFEXITED(status), "the child did not exit: status {status}");
    let code = libc::WEXITSTATUS(status);
    assert_eq!(
        code, 0,
        "the child's stranded pools were not purged (code {code}: 1 not purged, 2 its freer failed, 3 never resident)"
    );
}

/// In a forked child: strands a few spans of the child's own (its main
/// thread allocates, a new thread frees) and waits, without allocating,
/// for its purger to purge them. Exit code 0 if it did. It reads the
/// pages of its own blocks, not the count of purged pools: the child's
/// purger also purges the parent's stranded pools it inherited.
fn child_strands_and_waits() -> i32 {
    let blocks = allocate_blocks(BLOCKS, BLOCK, 3);
    let pages = pages_of(&blocks, BLOCK);
    if resident(&pages) < BLOCKS * BLOCK / PAGE {
        return 3;
    }
    let freer = std::thread::spawn(move || check_and_free(&blocks, BLOCK, 3));
    if freer.join().is_err() {
        return 2;
    }
    let started = Instant::now();
    while started.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(20));
        if resident(&pages) <= ACTIVE_SPAN_PAGES {
            return 0;
        }
    }
    1
}

/// Set in the child process that frees a block twice.
const DOUBLE_FREE_CHILD: &str = "POOLMALLOC_STRANDED_DOUBLE_FREE";

#[test]
fn a_remote_double_free_into_a_complete_pool_aborts() {
    if std::env::var_os(DOUBLE_FREE_CHILD).is_some() {
        // 32 KiB blocks, a few to a span: the first span's every block is
        // freed by another thread, and then its first block again. The
        // owner waits meanwhile (had it exited, the purger could take the
        // list back before the second free, which would then go unnoticed).
        let size = 32 << 10;
        let (blocks_tx, blocks_rx) = mpsc::channel();
        std::thread::spawn(move || {
            blocks_tx.send(allocate_blocks(16, size, 1)).unwrap();
            // Wait without allocating (see `strand`), until the abort.
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let blocks = blocks_rx.recv().unwrap();
        std::thread::spawn(move || {
            check_and_free(&blocks, size, 1);
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: none; this is the double free under test.
            unsafe { dealloc(blocks[0] as *mut u8, layout) };
        })
        .join()
        .unwrap();
        // Reaching here means the double free went unnoticed.
        std::process::exit(0);
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["a_remote_double_free_into_a_complete_pool_aborts", "--exact", "--nocapture"])
        .env(DOUBLE_FREE_CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived a double free");
    assert!(stderr.contains("poolmalloc: fatal: double free"), "stderr was {stderr}");
}
