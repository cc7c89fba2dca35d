//! `collect()` returns empty arenas to the OS. One test in its own binary, so
//! no other test's allocations move the counters.

use poolmalloc::PoolMalloc;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

#[test]
fn collect_unmaps_the_arenas_of_freed_blocks() {
    let before = poolmalloc::stats();
    let many: Vec<Box<[u8; 64]>> = (0..100_000).map(|i| Box::new([i as u8; 64])).collect();
    let during = poolmalloc::stats();
    // 100,000 blocks of 64 bytes fill at least 25 arenas of 15 usable pools.
    assert!(during.arena_count >= before.arena_count + 25, "{during:?}");
    assert!(many.iter().enumerate().all(|(i, b)| b.iter().all(|&x| x == i as u8)));
    drop(many);
    poolmalloc::collect();
    let after = poolmalloc::stats();
    assert!(after.arena_count <= before.arena_count + 2, "before {before:?}\nafter {after:?}");
    assert!(after.arenas_reclaimed >= before.arenas_reclaimed + 23);
    assert_eq!(after.mapped_bytes, after.arena_count * poolmalloc::config::ARENA_SIZE + after.large_bytes);
}
