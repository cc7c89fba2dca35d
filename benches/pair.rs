//! Alloc+free pairs and batches through each allocator's `GlobalAlloc`
//! methods, side by side in one run. Peers that need a C toolchain
//! (jemalloc, mimalloc) are added by the comparison benches.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use poolmalloc::PoolMalloc;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

static POOLMALLOC: PoolMalloc = PoolMalloc::new();

fn allocators() -> [(&'static str, &'static dyn GlobalAlloc); 2] {
    [("poolmalloc", &POOLMALLOC), ("system", &System)]
}

fn pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("pair");
    for size in [16usize, 64, 256, 1024, 4096, 16384, 65536, 1 << 20] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for (name, allocator) in allocators() {
            group.bench_with_input(BenchmarkId::new(name, size), &layout, |b, &layout| {
                b.iter(|| unsafe {
                    let p = allocator.alloc(black_box(layout));
                    *p = 1;
                    allocator.dealloc(black_box(p), layout);
                })
            });
        }
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_8_512");
    group.sample_size(20);
    // Fixed sizes and free order (xorshift), the same for every allocator.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let sizes: Vec<usize> = (0..100_000).map(|_| 8 + (next() % 505) as usize).collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    for (name, allocator) in allocators() {
        group.bench_function(name, |b| {
            let mut blocks = vec![std::ptr::null_mut::<u8>(); sizes.len()];
            b.iter(|| unsafe {
                for (slot, &size) in blocks.iter_mut().zip(&sizes) {
                    *slot = allocator.alloc(Layout::from_size_align_unchecked(size, 8));
                    **slot = 1;
                }
                for &i in &order {
                    allocator.dealloc(blocks[i], Layout::from_size_align_unchecked(sizes[i], 8));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pair, batch);
criterion_main!(benches);
