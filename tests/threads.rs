//! Many threads on poolmalloc: random operations with blocks handed between
//! threads over channels and freed by a thread other than their allocator;
//! every block's contents verified before it is freed.

mod common;
use common::{Block, Rng};
use poolmalloc::PoolMalloc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

const THREADS: usize = 16;

/// Operations per thread: 1,000,000 unless `POOLMALLOC_TEST_OPS` says less.
fn ops_per_thread() -> usize {
    std::env::var("POOLMALLOC_TEST_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// A size: mostly small, sometimes medium, rarely large.
fn random_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=79 => 1 + rng.below(256) as usize,
        80..=97 => 1 + rng.below(32 << 10) as usize,
        _ => (32 << 10) + rng.below(1 << 20) as usize,
    }
}

fn worker(id: usize, inbox: Receiver<Vec<Block>>, peers: Vec<Sender<Vec<Block>>>, freed_remotely: &AtomicUsize) {
    let mut rng = Rng(0x1234_5678 + id as u64 * 7919);
    let mut slots: Vec<Option<Block>> = (0..512).map(|_| None).collect();
    let mut outgoing: Vec<Block> = Vec::new();
    for op in 0..ops_per_thread() {
        let slot = rng.below(slots.len() as u64) as usize;
        match rng.below(10) {
            // Replace a slot: the old block (if any) is verified and freed.
            0..=5 => {
                let align = 1usize << rng.below(7);
                let seed = rng.next_u64();
                slots[slot] = Some(Block::new(random_size(&mut rng), align, seed));
            }
            // Free a slot.
            6 => slots[slot] = None,
            // Resize a slot.
            7 => {
                if let Some(block) = slots[slot].as_mut() {
                    let size = random_size(&mut rng);
                    block.resize(size);
                }
            }
            // Hand a block to another thread.
            _ => {
                if let Some(block) = slots[slot].take() {
                    outgoing.push(block);
                }
            }
        }
        if outgoing.len() >= 32 {
            let peer = &peers[rng.below(peers.len() as u64) as usize];
            // A peer that already finished drops the batch here: freed locally.
            let _ = peer.send(std::mem::take(&mut outgoing));
        }
        if op % 64 == 0 {
            while let Ok(batch) = inbox.try_recv() {
                freed_remotely.fetch_add(batch.len(), Ordering::Relaxed);
                drop(batch);
            }
        }
    }
    drop(peers);
    // Drain until every sender is gone.
    for batch in inbox {
        freed_remotely.fetch_add(batch.len(), Ordering::Relaxed);
    }
    for block in slots.iter().flatten() {
        assert!(block.intact());
    }
}

#[test]
fn sixteen_threads_random_operations_with_cross_thread_frees() {
    let freed_remotely = Arc::new(AtomicUsize::new(0));
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| channel::<Vec<Block>>()).unzip();
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(id, inbox)| {
            let peers: Vec<_> = senders.iter().enumerate().filter(|&(j, _)| j != id).map(|(_, s)| s.clone()).collect();
            let freed = Arc::clone(&freed_remotely);
            std::thread::spawn(move || worker(id, inbox, peers, &freed))
        })
        .collect();
    drop(senders);
    for h in handles {
        h.join().unwrap();
    }
    assert!(freed_remotely.load(Ordering::Relaxed) > 0);
}
