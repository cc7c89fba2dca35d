//! Large blocks: alloc/free loops reuse cached mappings instead of paying an
//! mmap/munmap pair per iteration; growth uses mremap. Its own binary, so
//! the mapping counts see nothing else, and its tests take turns: the cache
//! is process-wide, and one test's large allocations would take another's
//! cached mappings.

mod common;
use common::Block;
use poolmalloc::PoolMalloc;
use std::hint::black_box;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

// Taken poisoned too: one failed test should not fail the ones after it.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn mapping_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

#[test]
fn large_loops_reuse_mappings() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..10 {
        let mut v = vec![0u8; 3 << 20];
        assert!(v.iter().all(|&b| b == 0));
        v.fill(0xAA);
    }
}

#[test]
#[cfg_attr(poolmalloc_tsan, ignore = "no mremap under ThreadSanitizer (see os::remap)")]
fn vec_growth_to_256_mib_uses_mremap() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // An empty cache: growth prefers cached pages to mremap.
    poolmalloc::collect();
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
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Both within the slot's limit (half the cache, 32 MiB): the purger
    // moves the mapping from the slot to the cache and unmaps it from there.
    for size in [6 << 20, 24 << 20] {
        // Start with empty caches: a mapping another test left there could
        // expire between the two readings below.
        poolmalloc::collect();
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
}

// The buffers freed below are passed through `black_box`: the compiler may
// otherwise drop the writes to a buffer freed right after, and its pages
// would not be resident.

/// Minor page faults of the calling thread so far.
fn thread_minor_faults() -> i64 {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid and writable.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) }, 0);
    usage.ru_minflt
}

/// `work`'s result and the minor page faults the calling thread took in it.
fn faults_during<R>(work: impl FnOnce() -> R) -> (R, i64) {
    let before = thread_minor_faults();
    let result = work();
    (result, thread_minor_faults() - before)
}

/// Sizes below the one that asks for huge pages (4 MiB), so fresh pages
/// fault one 4 KiB page at a time: 512 faults per 2 MiB.
const RESIDENT_TEST_SIZE: usize = 3 << 20;

/// A buffer rebuilt by growing from small takes the head of its old, cached
/// mapping and grows back into the rest, whose pages are resident.
#[test]
#[cfg_attr(poolmalloc_tsan, ignore = "page faults counted here include ThreadSanitizer's shadow memory")]
fn a_buffer_rebuilt_grows_into_its_old_pages() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    poolmalloc::collect();
    for round in 0..3u8 {
        let mut old: Vec<u8> = Vec::with_capacity(RESIDENT_TEST_SIZE);
        old.resize(RESIDENT_TEST_SIZE, round);
        drop(black_box(old));
        let (v, faults) = faults_during(|| {
            let mut v: Vec<u8> = Vec::new();
            // Vec doubles its capacity: 2 MiB is its last step, within 3 MiB.
            for i in 0..2 << 20 {
                v.push(i as u8 ^ round);
            }
            v
        });
        assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8 ^ round));
        assert!(faults < 64, "round {round}: {faults} page faults growing into cached pages");
    }
}

/// A buffer growing while another, bigger one lies freed moves into the
/// freed one's resident pages (or grows into them if they happen to follow
/// it) rather than faulting fresh pages.
#[test]
#[cfg_attr(poolmalloc_tsan, ignore = "page faults counted here include ThreadSanitizer's shadow memory")]
fn a_growing_buffer_moves_into_freed_pages() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    poolmalloc::collect();
    for round in 1..4u8 {
        // Non-zero fills: `vec![0; n]` maps fresh pages and writes none.
        // Both buffers are resident.
        let mut growing = vec![round; 256 << 10];
        drop(black_box(vec![0xEEu8; RESIDENT_TEST_SIZE]));
        let ((), faults) = faults_during(|| growing.resize(2 << 20, round ^ 0x55));
        assert!(growing[..256 << 10].iter().all(|&b| b == round));
        assert!(growing[256 << 10..].iter().all(|&b| b == round ^ 0x55));
        assert!(faults < 64, "round {round}: {faults} page faults growing to 2 MiB beside 3 MiB of freed pages");
    }
}

/// A freed buffer cut in two by a smaller request is whole again once the
/// piece is freed: a request for all of it is served from the cache, with
/// its pages resident.
#[test]
#[cfg_attr(poolmalloc_tsan, ignore = "page faults counted here include ThreadSanitizer's shadow memory")]
fn pieces_of_a_freed_mapping_merge_again() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    poolmalloc::collect();
    for round in 1..4u8 {
        // Non-zero fills: `vec![0; n]` maps fresh pages and writes none.
        drop(black_box(vec![round; RESIDENT_TEST_SIZE]));
        // The head of the freed mapping; the rest stays cached.
        let piece = vec![round ^ 1; 128 << 10];
        assert!(piece.iter().all(|&b| b == round ^ 1));
        drop(piece);
        let hits_before = poolmalloc::stats().large_cache_hits;
        let (whole, faults) = faults_during(|| vec![round ^ 2; RESIDENT_TEST_SIZE]);
        assert!(whole.iter().all(|&b| b == round ^ 2));
        let hits = poolmalloc::stats().large_cache_hits - hits_before;
        assert!(hits >= 1, "round {round}: the whole mapping was not served from the cache");
        assert!(faults < 64, "round {round}: {faults} page faults for the reassembled mapping");
    }
}

/// Memory the arenas map beyond their peak takes its share from the cache:
/// after freed buffers are cached, building enough small blocks to map
/// fresh arenas makes the cache give back as many bytes, and no more
/// (`large::note_arena_growth`).
#[test]
fn arena_growth_takes_back_cached_memory() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    poolmalloc::collect();
    let size = 24 << 20;
    // Two buffers: the thread's slot keeps the first freed, so the second
    // goes to the shared cache. 24 MiB cached at least, more than the arenas
    // will take.
    let first = black_box(vec![1u8; size]);
    let second = black_box(vec![2u8; size]);
    drop(first);
    drop(second);
    let before = poolmalloc::stats();
    assert!(before.large_cache_bytes >= 2 * size, "{} bytes cached", before.large_cache_bytes);
    // 16 MiB of 1 KiB blocks: arenas beyond any peak this test binary
    // reached before (its other tests allocate large blocks).
    let small: Vec<Box<[u8; 1024]>> = (0..16 << 10).map(|i| Box::new([i as u8; 1024])).collect();
    // The next large operation settles what the arenas took.
    drop(black_box(vec![3u8; 64 << 10]));
    let now = poolmalloc::stats();
    assert!(small.iter().enumerate().all(|(i, b)| b[1023] == i as u8));
    // Each arena is 256 KiB; only arenas beyond the old peak are owed.
    let owed = (now.arena_peak - before.arena_peak) * (256 << 10);
    let purged = now.purged_bytes - before.purged_bytes;
    assert!(owed >= 8 << 20, "the arenas grew by only {owed} bytes");
    assert!(
        purged >= owed && purged <= owed + (1 << 20),
        "arenas grew past their peak by {owed} bytes; the cache gave back {purged}"
    );
}

/// A cached range whose neighbours keep being taken and freed again is
/// still unmapped after the purge delay: a merge keeps the older stamp.
#[test]
fn a_cached_range_beside_busy_neighbours_is_purged() {
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    poolmalloc::collect();
    let size = 24 << 20;
    drop(black_box(vec![5u8; size]));
    let purged_before = poolmalloc::stats().purged_bytes;
    let start = std::time::Instant::now();
    let mut purged = 0;
    // Default purge delay 1 s; allow four.
    while start.elapsed() < std::time::Duration::from_secs(4) {
        // Two at once: one goes to the thread's slot, the other back to the
        // shared cache, next to (and merged with) what is left of the 24 MiB.
        let a = black_box(vec![6u8; 1 << 20]);
        let b = black_box(vec![7u8; 1 << 20]);
        assert!(a[a.len() - 1] == 6 && b[b.len() - 1] == 7);
        drop(a);
        drop(b);
        purged = poolmalloc::stats().purged_bytes - purged_before;
        if purged >= size - (4 << 20) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(purged >= size - (4 << 20), "only {purged} bytes purged in {:?}", start.elapsed());
}
