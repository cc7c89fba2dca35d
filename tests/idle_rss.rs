//! A process that frees its heap and goes idle gets its RSS back without
//! calling anything: the purger returns memory once it has been free for the
//! purge delay. One test in its own binary, so RSS readings see nothing else.

mod common;
use common::rss_bytes;
use poolmalloc::PoolMalloc;
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

const THREADS: usize = 4;
const TOTAL_BYTES: usize = 1 << 30;
const MIB: usize = 1 << 20;

/// Well past the default purge delay (1 s) and the purger's pass.
const SETTLE: Duration = Duration::from_millis(2500);

/// Small blocks (64..=1024 bytes), each written so its pages are resident.
fn allocate(bytes: usize, seed: usize) -> Vec<Box<[u8]>> {
    let mut blocks = Vec::with_capacity(bytes / 500);
    let mut total = 0;
    let mut i = seed;
    while total < bytes {
        let size = 64 + (i * 7919) % 961;
        blocks.push(vec![(i % 251) as u8; size].into_boxed_slice());
        total += size;
        i += 1;
    }
    blocks
}

#[test]
fn idle_process_returns_memory_without_help() {
    let start = rss_bytes();

    // Phase 1: four threads allocate 1 GiB together, free it themselves, and
    // stay alive but idle.
    let allocated = Arc::new(Barrier::new(THREADS + 1));
    let freed = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (allocated, freed, done) = (Arc::clone(&allocated), Arc::clone(&freed), Arc::clone(&done));
            std::thread::spawn(move || {
                let blocks = allocate(TOTAL_BYTES / THREADS, t * 1_000_003);
                allocated.wait();
                assert!(blocks.iter().all(|b| b.iter().all(|&x| x == b[0])));
                drop(blocks);
                freed.wait();
                done.wait();
            })
        })
        .collect();
    allocated.wait();
    let peak = rss_bytes();
    assert!(peak >= start + TOTAL_BYTES * 9 / 10, "the workload did not allocate: {peak}");
    freed.wait();
    std::thread::sleep(SETTLE);
    let idle = rss_bytes();
    assert!(idle < start + 16 * MIB, "idle RSS {} MiB, start {} MiB", idle / MIB, start / MIB);
    done.wait();
    for w in workers {
        w.join().unwrap();
    }

    // Phase 2: threads allocate again and exit; this thread frees their
    // blocks (remote frees to the heaps they left behind), then idles.
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || tx.send(allocate(TOTAL_BYTES / 4 / THREADS, t)).unwrap())
        })
        .collect();
    drop(tx);
    let handed: Vec<Vec<Box<[u8]>>> = rx.iter().collect();
    for w in workers {
        w.join().unwrap();
    }
    assert!(rss_bytes() >= start + TOTAL_BYTES / 5);
    drop(handed);
    std::thread::sleep(SETTLE);
    let idle = rss_bytes();
    assert!(idle < start + 16 * MIB, "idle RSS after remote frees {} MiB, start {} MiB", idle / MIB, start / MIB);

    poolmalloc::collect();
    let collected = rss_bytes();
    assert!(collected < start + 4 * MIB, "RSS after collect {} MiB, start {} MiB", collected / MIB, start / MIB);
    let stats = poolmalloc::stats();
    assert!(stats.purged_bytes >= TOTAL_BYTES, "{stats:?}");
}
