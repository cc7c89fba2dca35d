//! One realistic workload on poolmalloc, then its statistics: the per-class
//! table, the byte accounting that adds up to the mapped memory, and the
//! JSON form for tools.
//!
//! ```text
//! cargo run --release -p poolmalloc --features stats --example stats
//! ```

use poolmalloc::PoolMalloc;
use std::collections::{BTreeMap, HashMap};

#[global_allocator]
static GLOBAL: PoolMalloc = PoolMalloc;

/// What the workload keeps: a word index, titles and document bodies.
type Documents = (BTreeMap<String, Vec<u32>>, HashMap<u64, String>, Vec<Vec<u8>>);

/// An in-memory index of generated documents: strings, maps, vectors of
/// every size, a few big buffers; part of it is dropped again.
fn workload() -> Documents {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut index: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut titles: HashMap<u64, String> = HashMap::new();
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for doc in 0..20_000u32 {
        let words = 5 + next() % 40;
        let mut title = String::new();
        for w in 0..words {
            let word = format!("w{}", next() % 5000);
            index.entry(word.clone()).or_default().push(doc);
            if w < 6 {
                title.push_str(&word);
                title.push(' ');
            }
        }
        titles.insert(u64::from(doc), title);
        let body_size = if doc % 500 == 0 { 200_000 + next() % 300_000 } else { 16 + next() % 3000 };
        bodies.push(vec![doc as u8; body_size as usize]);
    }
    // Drop every third body and title: free blocks spread over the pools.
    for doc in (0..20_000u64).step_by(3) {
        titles.remove(&doc);
        bodies[doc as usize] = Vec::new();
    }
    (index, titles, bodies)
}

fn main() {
    let kept = workload();
    let stats = poolmalloc::stats();
    println!("{stats}");
    let total: u64 = stats.accounting().iter().map(|&(_, b)| b).sum();
    println!("\naccounting total {total} = mapped {} : {}", stats.mapped_bytes, total == stats.mapped_bytes as u64);
    let mut json = String::new();
    stats.write_json(&mut json).unwrap();
    println!("\nJSON ({} bytes): {}...", json.len(), &json[..json.len().min(160)]);
    println!("\nkept: {} index words, {} titles, {} bodies", kept.0.len(), kept.1.len(), kept.2.len());
}
