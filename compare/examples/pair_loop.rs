//! Not a benchmark: a fixed number of alloc+free pairs through
//! `&dyn GlobalAlloc`, for instruction counts under
//! `valgrind --tool=callgrind`. Run it with two pair counts and divide the
//! difference in instructions by the difference in pairs, which leaves out
//! start-up and each allocator's first refill:
//!
//! ```text
//! cargo build --release -p poolmalloc-compare --example pair_loop
//! valgrind --tool=callgrind target/release/examples/pair_loop jemalloc 64 1000000
//! valgrind --tool=callgrind target/release/examples/pair_loop jemalloc 64 2000000
//! ```
//!
//! Allocators: `system`, `jemalloc`, `mimalloc`, `poolmalloc` (the default).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

static POOLMALLOC: poolmalloc::PoolMalloc = poolmalloc::PoolMalloc::new();

#[inline(never)]
fn pairs(allocator: &dyn GlobalAlloc, layout: Layout, count: usize) {
    for _ in 0..count {
        // SAFETY: a non-zero layout; the block is written inside its bounds
        // and freed once, with its layout.
        unsafe {
            let p = allocator.alloc(black_box(layout));
            *p = 1;
            allocator.dealloc(black_box(p), layout);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("poolmalloc", String::as_str);
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let count: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let allocator: &dyn GlobalAlloc = match name {
        "system" => &System,
        "jemalloc" => &tikv_jemallocator::Jemalloc,
        "mimalloc" => &mimalloc::MiMalloc,
        "poolmalloc" => &POOLMALLOC,
        other => panic!("unknown allocator {other}: system, jemalloc, mimalloc or poolmalloc"),
    };
    let layout = Layout::from_size_align(size, 8).unwrap();
    let start = std::time::Instant::now();
    pairs(allocator, layout, count);
    let elapsed = start.elapsed();
    println!("{name} {size} B: {count} pairs, {:.2} ns/pair", elapsed.as_nanos() as f64 / count as f64);
}
