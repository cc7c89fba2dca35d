//! The same workload through poolmalloc and through jemalloc, and each
//! allocator's own view of its memory, side by side:
//!
//! ```text
//! cargo run --release -p poolmalloc-compare --features stats --bin stats_vs_jemalloc
//! ```
//!
//! jemalloc is called directly through its `GlobalAlloc` methods (not as the
//! global allocator) and read with tikv-jemalloc-ctl (`stats.allocated`,
//! `active`, `resident`, `mapped`); poolmalloc is the global allocator here
//! and is read with `poolmalloc::stats()`. The workload allocates through a
//! `&dyn GlobalAlloc`, so both see the same requests in the same order.

use poolmalloc::PoolMalloc;
use std::alloc::{GlobalAlloc, Layout};
use tikv_jemalloc_ctl::{epoch, stats};
use tikv_jemallocator::Jemalloc;

#[global_allocator]
static GLOBAL: PoolMalloc = PoolMalloc;

/// A cache of documents: 200,000 entries of mixed sizes (mostly small, some
/// pages, a few large), then a third evicted and replaced by bigger ones.
/// Returns the blocks still held, to be freed by the caller.
fn workload(allocator: &dyn GlobalAlloc) -> Vec<(*mut u8, Layout)> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let size = |r: u64| match r % 1000 {
        0..=699 => 8 + (r >> 10) % 248,
        700..=979 => 256 + (r >> 10) % 3840,
        980..=998 => 4096 + (r >> 10) % 28672,
        _ => 65536 + (r >> 10) % (2 << 20),
    };
    let mut blocks = Vec::with_capacity(200_000);
    for _ in 0..200_000 {
        let layout = Layout::from_size_align(size(next()) as usize, 8).unwrap();
        let p = unsafe { allocator.alloc(layout) };
        assert!(!p.is_null());
        unsafe { p.write_bytes(0x5A, layout.size()) };
        blocks.push((p, layout));
    }
    for i in (0..blocks.len()).step_by(3) {
        let (p, layout) = blocks[i];
        unsafe { allocator.dealloc(p, layout) };
        let layout = Layout::from_size_align((layout.size() * 3 / 2).max(8), 8).unwrap();
        let q = unsafe { allocator.alloc(layout) };
        unsafe { q.write_bytes(0xA5, layout.size()) };
        blocks[i] = (q, layout);
    }
    blocks
}

fn free_all(allocator: &dyn GlobalAlloc, blocks: Vec<(*mut u8, Layout)>) {
    for (p, layout) in blocks {
        unsafe { allocator.dealloc(p, layout) };
    }
}

fn mib(bytes: u64) -> String {
    format!("{:>9.2}", bytes as f64 / (1 << 20) as f64)
}

fn main() {
    // poolmalloc: the workload's blocks plus this program's own few
    // allocations, all through the global allocator.
    let before = poolmalloc::stats();
    let pool_blocks = workload(&PoolMalloc);
    let pool = poolmalloc::stats();

    epoch::advance().unwrap();
    let je_before = stats::allocated::read().unwrap();
    let je_blocks = workload(&Jemalloc);
    epoch::advance().unwrap();
    let je = [
        stats::allocated::read().unwrap(),
        stats::active::read().unwrap(),
        stats::resident::read().unwrap(),
        stats::mapped::read().unwrap(),
    ];

    let requested: u64 = pool_blocks.iter().map(|(_, l)| l.size() as u64).sum();
    println!("same workload, {} live blocks, {} MiB requested\n", pool_blocks.len(), mib(requested).trim());
    println!("{:<12} {:>12} {:>12}", "MiB", "poolmalloc", "jemalloc");
    let rows = [
        ("allocated", pool.allocated_bytes - before.allocated_bytes, je[0] as u64 - je_before as u64),
        ("active", pool.active_bytes, je[1] as u64),
        ("resident", pool.resident_bytes, je[2] as u64),
        ("mapped", pool.mapped_bytes as u64, je[3] as u64),
    ];
    for (name, p, j) in rows {
        println!("{name:<12} {:>12} {:>12}", mib(p), mib(j));
    }
    println!(
        "\npoolmalloc `allocated` is the requested bytes allocated during the workload (its blocks and\n\
         the vector holding them); jemalloc's counts its size-class bytes. `resident` for poolmalloc is an upper-bound estimate (pools in use counted\n\
         whole); jemalloc's counts its resident pages. Both include each allocator's metadata.\n"
    );
    println!("poolmalloc report:\n{pool}");
    free_all(&PoolMalloc, pool_blocks);
    free_all(&Jemalloc, je_blocks);
}
