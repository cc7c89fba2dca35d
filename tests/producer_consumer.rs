//! Producer/consumer: one thread allocates, another frees. The producer gets
//! its blocks back through the remote-free path instead of growing without
//! bound. Its own binary, so the arena count sees nothing else.

mod common;
use common::{Block, Rng};
use poolmalloc::PoolMalloc;
use std::sync::mpsc::sync_channel;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

#[test]
fn producer_consumer_memory_is_reused() {
    // Bounded, so the blocks in flight stay few and growth would mean the
    // producer is not getting freed blocks back.
    let (tx, rx) = sync_channel::<Vec<Block>>(4);
    let consumer = std::thread::spawn(move || {
        let mut count = 0usize;
        for batch in rx {
            count += batch.len();
        }
        count
    });
    let mut rng = Rng(42);
    let mut peak_arenas = 0;
    for round in 0..2000 {
        let batch: Vec<Block> = (0..256).map(|i| Block::new(16 + rng.below(240) as usize, 8, i)).collect();
        tx.send(batch).unwrap();
        if round == 200 {
            peak_arenas = poolmalloc::stats().arena_count;
        }
    }
    drop(tx);
    assert_eq!(consumer.join().unwrap(), 2000 * 256);
    let arenas = poolmalloc::stats().arena_count;
    // 512,000 blocks of ~136 bytes would need ~290 arenas without reuse; at
    // most 6 batches (~210 KiB) are live at once.
    assert!(arenas <= peak_arenas + 2, "arenas grew from {peak_arenas} to {arenas}");
}
