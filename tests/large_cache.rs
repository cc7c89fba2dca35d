//! Large blocks: alloc/free loops reuse cached mappings instead of paying an
//! mmap/munmap pair per iteration; growth uses mremap. Its own binary, so
//! the mapping counts see nothing else, and its tests take turns: the cache
//! is process-wide, and one test's large allocations would take another's
//! cached mappings.

mod common;
use common::Block;
use poolmalloc::PoolMalloc;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn mapping_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

#[test]
fn large_loops_reuse_mappings() {
    let _turn = TURN.lock().unwrap();
    for size in [256 << 10, 1 << 20, 8 << 20] {
        // Warm up: the first block maps, its free fills the cache (and starts
        // the purger thread, whose stack is a mapping of its own).
        drop(Block::new(size, 8, 1));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let hits_before = poolmalloc::stats().large_cache_hits;
        let maps_before = mapping_count();
        let mut max_maps = maps_before;
        for i in 0..200u64 {
            let block = Block::new(size, 8, i);
            assert!(block.intact());
            drop(block);
            if i % 20 == 0 {
                max_maps = max_maps.max(mapping_count());
            }
        }
        let hits = poolmalloc::stats().large_cache_hits - hits_before;
        assert_eq!(hits, 200, "size {size}: {hits} of 200 allocations came from the cache");
        assert!(max_maps <= maps_before + 2, "size {size}: mappings grew from {maps_before} to {max_maps}");
    }
}

#[test]
fn zeroed_large_blocks_from_the_cache_are_zero() {
    let _turn = TURN.lock().unwrap();
    for _ in 0..10 {
        let mut v = vec![0u8; 3 << 20];
        assert!(v.iter().all(|&b| b == 0));
        v.fill(0xAA);
    }
}

#[test]
#[cfg_attr(poolmalloc_tsan, ignore = "no mremap under ThreadSanitizer (see os::remap)")]
fn vec_growth_to_256_mib_uses_mremap() {
    let _turn = TURN.lock().unwrap();
    let remaps_before = poolmalloc::stats().large_remaps;
    let mut v: Vec<u32> = Vec::new();
    for i in 0..(64u32 << 20) {
        v.push(i);
    }
    assert_eq!(v.len() * 4, 256 << 20);
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    let remaps = poolmalloc::stats().large_remaps - remaps_before;
    // Doubling from 32 KiB to 256 MiB: 13 growths, each one an mremap.
    assert!(remaps >= 12, "only {remaps} growths used mremap");
}

/// A thread keeps its last freed large mapping for itself (its heap's
/// slot); the statistics count it as cached, and the purger takes it back
/// while the thread sleeps, so it is unmapped after the purge delay and the
/// RSS it held goes away.
#[test]
fn a_sleeping_threads_freed_mapping_is_returned() {
    let _turn = TURN.lock().unwrap();
    // Start with empty caches: a mapping another test left there could
    // expire between the two readings below.
    poolmalloc::collect();
    let size = 12 << 20;
    let (freed_tx, freed_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let sleeper = std::thread::spawn(move || {
        let before = poolmalloc::stats();
        // Every page written, so the mapping is resident.
        let block = vec![7u8; size];
        assert!(block.iter().all(|&b| b == 7));
        drop(block);
        let after = poolmalloc::stats();
        // Only the numbers: a channel block of whole `Stats` values would
        // itself be a large allocation, served from the head of the mapping.
        let counts = |s: &poolmalloc::Stats| (s.large_count, s.large_cache_bytes, s.purged_bytes);
        freed_tx.send((counts(&before), counts(&after))).unwrap();
        // Sleep without touching the allocator until the main thread is done.
        done_rx.recv().unwrap();
    });
    let ((count_before, cached_before, _), (count_after, cached_after, purged_after)) = freed_rx.recv().unwrap();
    assert_eq!(count_after, count_before, "the freed block still counts as live");
    assert!(cached_after >= cached_before + size, "cached bytes went from {cached_before} to {cached_after}");
    let rss_cached = common::rss_bytes();
    let start = std::time::Instant::now();
    let mut now = poolmalloc::stats();
    while now.large_cache_bytes >= size && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        now = poolmalloc::stats();
    }
    let waited = start.elapsed();
    let rss_returned = common::rss_bytes();
    done_tx.send(()).unwrap();
    sleeper.join().unwrap();
    assert!(now.large_cache_bytes < size, "still cached after {waited:?}: {now:?}");
    // Unmapped, but for what another allocation meanwhile may have taken
    // from its head (a request reuses the head of a bigger cached mapping).
    assert!(now.purged_bytes + (1 << 20) >= purged_after + size, "{purged_after} then {now:?}");
    // Default purge delay 1 s; the purger's passes may add up to one more.
    assert!(waited < std::time::Duration::from_secs(4), "returned only after {waited:?}");
    assert!(
        rss_cached >= rss_returned + size - (1 << 20),
        "RSS went from {rss_cached} to {rss_returned} bytes; the freed block had {size}"
    );
}
