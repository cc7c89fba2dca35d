//! 10,000 short-lived threads, some of whose blocks outlive them: memory of
//! exited threads is reused, so RSS stays flat. One test in its own binary so
//! that the RSS readings see nothing else.

mod common;
use common::{Block, rss_bytes};
use poolmalloc::PoolMalloc;
use std::collections::VecDeque;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

#[test]
fn ten_thousand_threads_keep_rss_flat() {
    let mut survivors: VecDeque<Block> = VecDeque::new();
    let mut rss_at_1000 = 0;
    for t in 0..10_000u64 {
        let handle = std::thread::spawn(move || {
            let mut local: Vec<Block> =
                (0..200).map(|i| Block::new(8 + (i * 37 + t as usize) % 2000, 8, t ^ i as u64)).collect();
            let text: String = (0..100).map(|i| format!("{t}-{i};")).collect();
            assert!(text.starts_with(&format!("{t}-0;")));
            // A few blocks outlive the thread; the rest die with it.
            let keep: Vec<Block> = local.drain(..5).collect();
            drop(local);
            keep
        });
        survivors.extend(handle.join().unwrap());
        // Free old survivors on this thread: remote frees to exited heaps.
        while survivors.len() > 500 {
            survivors.pop_front();
        }
        if t == 999 {
            rss_at_1000 = rss_bytes();
        }
    }
    let rss_at_10000 = rss_bytes();
    let growth = rss_at_10000.saturating_sub(rss_at_1000);
    assert!(growth < 4 << 20, "RSS grew {growth} bytes from thread 1,000 ({rss_at_1000}) to 10,000 ({rss_at_10000})");
    let stats = poolmalloc::stats();
    assert!(stats.thread_count <= 2, "{stats:?}");
}
