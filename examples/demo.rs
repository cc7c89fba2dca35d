//! poolmalloc at work: a multi-threaded program that builds maps, strings and
//! vectors, hands results between threads, and prints what the allocator
//! holds from the OS at each stage.
//!
//! Run with `cargo run --release -p poolmalloc --features stats --example demo` (without
//! the feature the report has only the OS-level totals).

use poolmalloc::PoolMalloc;
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: PoolMalloc = PoolMalloc;

/// A document: words and their counts.
fn make_document(seed: u64, words: usize) -> String {
    let mut state = seed | 1;
    let mut text = String::new();
    for _ in 0..words {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = 2 + (state % 9) as usize;
        for k in 0..len {
            text.push((b'a' + ((state >> (k * 5)) % 26) as u8) as char);
        }
        text.push(' ');
    }
    text
}

fn word_counts(text: &str) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word.to_owned()).or_insert(0) += 1;
    }
    counts
}

fn report(stage: &str, start: Instant) {
    let s = poolmalloc::stats();
    println!(
        "{stage:<28} {:>8.1} ms  arenas {:>4} (peak {:>4}, reclaimed {:>4})  large {:>3} ({:>9} B)  mapped {:>6.1} MiB",
        start.elapsed().as_secs_f64() * 1e3,
        s.arena_count,
        s.arena_peak,
        s.arenas_reclaimed,
        s.large_count,
        s.large_bytes,
        s.mapped_bytes as f64 / (1 << 20) as f64,
    );
}

fn main() {
    let start = Instant::now();
    report("start", start);

    // Workers count words in documents and send their maps to the merger,
    // which frees them: blocks allocated on one thread, freed on another.
    let (tx, rx) = mpsc::channel::<HashMap<String, u32>>();
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for d in 0..200u64 {
                    let doc = make_document(w * 1000 + d, 2000);
                    tx.send(word_counts(&doc)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for counts in rx {
        for (word, n) in counts {
            *totals.entry(word).or_insert(0) += u64::from(n);
        }
    }
    for w in workers {
        w.join().unwrap();
    }
    report("word counts merged", start);

    // Vectors of every size, a large buffer grown by push (mremap).
    let mut buffers: Vec<Vec<u32>> = (0..20_000).map(|i| vec![i; i as usize % 700]).collect();
    let mut big: Vec<u64> = Vec::new();
    for i in 0..(4u64 << 20) {
        big.push(i);
    }
    report("vectors and a 32 MiB Vec", start);
    println!("\n--- poolmalloc::stats() at the peak ---\n{}\n", poolmalloc::stats());

    // Sort and join strings; then drop everything and give memory back.
    let mut words: Vec<&String> = totals.keys().collect();
    words.sort_by_key(|w| std::cmp::Reverse(totals[*w]));
    let top: Vec<String> = words.iter().take(5).map(|w| format!("{w}={}", totals[*w])).collect();
    buffers.retain(|b| b.len() % 2 == 0);
    let kept = buffers.len();
    drop(buffers);
    drop(big);
    report("buffers dropped", start);
    let distinct = totals.len();
    drop(totals);
    poolmalloc::collect();
    report("after collect()", start);

    println!("\n{distinct} distinct words, top: {}; {kept} buffers kept before the drop", top.join(" "));
    let end = poolmalloc::stats();
    println!(
        "at the end: {} arenas mapped, {} bytes mapped, {} bytes returned to the OS so far",
        end.arena_count, end.mapped_bytes, end.purged_bytes
    );
}
