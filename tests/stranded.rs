//! A thread that hands its blocks to another thread and then blocks does
//! not keep their pages resident: once every block of a pool has been freed
//! remotely and the owner has not come back for a while, the purger purges
//! the pool in place (`stranded` module). When the owner comes back, the
//! pools serve it again. One test in its own binary, so the stats and the
//! page residency it reads see nothing else.

mod common;
use common::{fill, holds};
use poolmalloc::PoolMalloc;
use std::alloc::{Layout, alloc, dealloc};
use std::sync::mpsc;
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

fn layout() -> Layout {
    Layout::from_size_align(BLOCK, 8).unwrap()
}

/// Allocates the owner's blocks, each filled with its own pattern.
fn allocate_blocks(round: u64) -> Vec<usize> {
    (0..BLOCKS)
        .map(|i| {
            // SAFETY: a valid layout; the block is filled before use.
            let p = unsafe { alloc(layout()) };
            assert!(!p.is_null());
            // SAFETY: `p` is a fresh block of BLOCK bytes.
            unsafe { fill(p, BLOCK, round * 1000 + i as u64) };
            p as usize
        })
        .collect()
}

/// Pages of the blocks' memory that are resident.
fn resident_pages(blocks: &[usize]) -> usize {
    let page = 4096;
    let mut pages: Vec<usize> = blocks.iter().flat_map(|&b| [b / page, (b + BLOCK - 1) / page]).collect();
    pages.sort_unstable();
    pages.dedup();
    pages
        .iter()
        .filter(|&&p| {
            let mut vec = 0u8;
            // SAFETY: the page lies in an arena mapping, which stays mapped
            // (its pools are in use by the owner); `vec` has room for one page.
            let r = unsafe { libc::mincore((p * page) as *mut libc::c_void, page, &mut vec) };
            assert_eq!(r, 0, "mincore failed");
            vec & 1 != 0
        })
        .count()
}

#[test]
fn blocks_freed_to_a_waiting_thread_are_purged_and_serve_it_again() {
    let purged_before = poolmalloc::stats().stranded_pools_purged;
    let (blocks_tx, blocks_rx) = mpsc::channel::<Vec<usize>>();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<Vec<usize>>();

    // The owner allocates, hands its blocks over and waits.
    let owner = std::thread::spawn(move || {
        blocks_tx.send(allocate_blocks(1)).unwrap();
        resume_rx.recv().unwrap();
        // Back: the same heap serves the class again, from the purged pools.
        let again = allocate_blocks(2);
        for (i, &p) in again.iter().enumerate() {
            // SAFETY: live blocks of BLOCK bytes filled above.
            assert!(unsafe { holds(p as *const u8, BLOCK, 2000 + i as u64) }, "block {i} lost its contents");
        }
        done_tx.send(again).unwrap();
    });

    // Another thread checks and frees every block, then exits.
    let blocks = blocks_rx.recv().unwrap();
    let to_free = blocks.clone();
    std::thread::spawn(move || {
        for (i, &p) in to_free.iter().enumerate() {
            // SAFETY: live blocks of BLOCK bytes filled by the owner.
            assert!(unsafe { holds(p as *const u8, BLOCK, 1000 + i as u64) }, "block {i} lost its contents");
            // SAFETY: allocated with this layout, freed once.
            unsafe { dealloc(p as *mut u8, layout()) };
        }
    })
    .join()
    .unwrap();

    let resident_after_free = resident_pages(&blocks);
    let started = Instant::now();
    let (mut purged, mut resident) = (0, resident_after_free);
    while started.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(20));
        purged = poolmalloc::stats().stranded_pools_purged - purged_before;
        resident = resident_pages(&blocks);
        if purged >= 4 && resident <= ACTIVE_SPAN_PAGES {
            break;
        }
    }
    assert!(resident_after_free >= BLOCKS * BLOCK / 4096, "the blocks' pages were not resident: {resident_after_free}");
    assert!(purged >= 4, "only {purged} of the spans, every block free, were purged");
    assert!(resident <= ACTIVE_SPAN_PAGES, "{resident} pages of the blocks are still resident");

    // The owner comes back: its pools serve it, without new arenas.
    let mapped_before = poolmalloc::stats().arena_count;
    resume_tx.send(()).unwrap();
    let again = done_rx.recv().unwrap();
    owner.join().unwrap();
    assert!(poolmalloc::stats().arena_count <= mapped_before, "the purged pools were not reused");
    for p in again {
        // SAFETY: allocated with this layout, freed once.
        unsafe { dealloc(p as *mut u8, layout()) };
    }
}
