//! Whole-structure checks (feature `debug-invariants`): after random work on
//! several threads, every pool of each heap balances its accounting and the
//! arena lists match their free masks.
#![cfg(feature = "debug-invariants")]

mod common;
use common::{Block, Rng};
use poolmalloc::PoolMalloc;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

#[test]
fn heaps_and_arenas_keep_their_invariants() {
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng(t + 1);
                let mut live: Vec<Option<Block>> = (0..2000).map(|_| None).collect();
                let mut handed: Vec<Block> = Vec::new();
                for step in 0..200_000 {
                    let slot = rng.below(live.len() as u64) as usize;
                    if rng.below(3) == 0 {
                        if let Some(b) = live[slot].take() {
                            handed.push(b);
                        }
                    } else {
                        live[slot] = Some(Block::new(1 + rng.below(40_000) as usize, 1 << rng.below(8), step));
                    }
                    if step % 10_000 == 0 {
                        // Now and then send this heap's unused (kept) pools
                        // back, so the arena checks see pools being returned.
                        if step % 50_000 == 0 {
                            poolmalloc::collect();
                        }
                        poolmalloc::check_invariants();
                    }
                }
                poolmalloc::check_invariants();
                (live, handed)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        let (live, handed) = h.join().unwrap();
        all.extend(live.into_iter().flatten());
        all.extend(handed);
    }
    // Free everything on this thread (remote frees to exited heaps), then
    // collect and check again.
    drop(all);
    poolmalloc::collect();
    assert!(poolmalloc::check_invariants() >= 1);
}
