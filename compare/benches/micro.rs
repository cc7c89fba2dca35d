//! Micro benchmarks of poolmalloc against System (glibc), jemalloc and
//! mimalloc, side by side in one run. Every allocator is called through its
//! `GlobalAlloc` methods from one table, so the loops are identical.
//!
//! `cargo bench -p poolmalloc-compare --bench micro` takes about 5 minutes;
//! a filter picks groups, e.g. `-- 'pair/'` or `-- realloc`.

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use mimalloc::MiMalloc;
use poolmalloc::PoolMalloc;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Duration;
use tikv_jemallocator::Jemalloc;

const ALLOCATORS: [(&str, &dyn GlobalAlloc); 4] =
    [("system", &System), ("jemalloc", &Jemalloc), ("mimalloc", &MiMalloc), ("poolmalloc", &PoolMalloc)];

/// Alignment of every request: what `Box<u64>`-like types ask for.
const ALIGN: usize = 8;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, ALIGN).unwrap()
}

/// xorshift64 with a fixed seed, so every allocator gets the same sequence.
fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

fn pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("pair");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for size in [16usize, 64, 256, 1024, 4096, 16384, 65536, 1 << 20, 8 << 20] {
        let layout = layout(size);
        for (name, allocator) in ALLOCATORS {
            group.bench_with_input(BenchmarkId::new(name, size), &layout, |b, &layout| {
                // SAFETY: a non-zero layout; the block is live until freed with it.
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

/// Allocates 100k blocks of sizes in `min..=max`, writing a byte into each,
/// then frees them in a shuffled order; sizes and order are fixed.
fn batch(c: &mut Criterion, min: usize, max: usize) {
    const BLOCK_COUNT: usize = 100_000;
    let mut group = c.benchmark_group(format!("batch_{min}_{max}"));
    // One iteration is milliseconds (up to 1.6 GiB of blocks at 1..=32768):
    // flat sampling keeps the iteration count, and so the run time, small.
    group.sampling_mode(SamplingMode::Flat).sample_size(20);
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
    let layouts: Vec<Layout> =
        (0..BLOCK_COUNT).map(|_| layout(min + (next() % (max - min + 1) as u64) as usize)).collect();
    let mut order: Vec<usize> = (0..BLOCK_COUNT).collect();
    for i in (1..BLOCK_COUNT).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    for (name, allocator) in ALLOCATORS {
        let mut blocks = vec![std::ptr::null_mut::<u8>(); BLOCK_COUNT];
        group.bench_function(name, |b| {
            // SAFETY: non-zero layouts; each block is freed once, with its layout.
            b.iter(|| unsafe {
                for (slot, &layout) in blocks.iter_mut().zip(&layouts) {
                    *slot = allocator.alloc(layout);
                    **slot = 1;
                }
                for &i in &order {
                    allocator.dealloc(blocks[i], layouts[i]);
                }
            })
        });
    }
    group.finish();
}

fn batch_small(c: &mut Criterion) {
    batch(c, 8, 512);
}

fn batch_mixed(c: &mut Criterion) {
    batch(c, 1, 32768);
}

/// Larson's inner loop on one thread: 1000 live blocks of 16..=1024 bytes;
/// each step frees a random one and puts a new block of a random size in its
/// place, writing a byte. A time per replacement (100k steps per iteration).
/// This is the pattern where a free lands in a span other than the one the
/// heap allocates from.
fn replace(c: &mut Criterion) {
    const SLOTS: usize = 1000;
    const STEPS: usize = 100_000;
    let mut group = c.benchmark_group("replace_16_1024");
    group.sampling_mode(SamplingMode::Flat).sample_size(20);
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.throughput(criterion::Throughput::Elements(STEPS as u64));
    let mut next = xorshift(0xD1B5_4A32_D192_ED03);
    let steps: Vec<(usize, Layout)> =
        (0..STEPS).map(|_| ((next() % SLOTS as u64) as usize, layout(16 + (next() % 1009) as usize))).collect();
    for (name, allocator) in ALLOCATORS {
        // SAFETY: non-zero layouts; every block is freed once, with its layout.
        let mut slots: Vec<(*mut u8, Layout)> = (0..SLOTS)
            .map(|i| {
                let layout = layout(16 + i % 1009);
                (unsafe { allocator.alloc(layout) }, layout)
            })
            .collect();
        group.bench_function(name, |b| {
            // SAFETY: as above; each slot holds a live block and its layout.
            b.iter(|| unsafe {
                for &(i, layout) in &steps {
                    let (old, old_layout) = slots[i];
                    allocator.dealloc(old, old_layout);
                    let p = allocator.alloc(layout);
                    *p = 1;
                    slots[i] = (p, layout);
                }
            })
        });
        for (p, layout) in slots {
            // SAFETY: as above.
            unsafe { allocator.dealloc(p, layout) };
        }
    }
    group.finish();
}

/// Grows one block from 8 bytes to `max_size` by `step` (adding `step` bytes
/// each time, or doubling when `step` is `None`), writing its last byte after
/// each `realloc`, then frees it.
///
/// # Safety
/// `allocator` is a working allocator.
unsafe fn grow(allocator: &dyn GlobalAlloc, max_size: usize, step: Option<usize>) {
    let mut layout = layout(8);
    // SAFETY: `layout` has a non-zero size; the pointer stays the live block.
    unsafe {
        let mut p = allocator.alloc(layout);
        *p = 1;
        while layout.size() < max_size {
            let new_size = step.map_or(layout.size() * 2, |s| layout.size() + s);
            p = allocator.realloc(black_box(p), layout, new_size);
            *p.add(new_size - 1) = 1;
            layout = Layout::from_size_align_unchecked(new_size, ALIGN);
        }
        allocator.dealloc(p, layout);
    }
}

fn realloc(c: &mut Criterion) {
    let mut group = c.benchmark_group("realloc");
    // An iteration of the +8 growth is 2M reallocs, 20 to 200 ms here.
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    for (name, allocator) in ALLOCATORS {
        group.bench_function(BenchmarkId::new("double_8_to_16MiB", name), |b| {
            // SAFETY: the allocators in the table work.
            b.iter(|| unsafe { grow(allocator, 16 << 20, None) })
        });
    }
    for (name, allocator) in ALLOCATORS {
        group.bench_function(BenchmarkId::new("plus8_8_to_16MiB", name), |b| {
            // SAFETY: as above.
            b.iter(|| unsafe { grow(allocator, 16 << 20, Some(8)) })
        });
    }
    group.finish();
}

criterion_group!(benches, pair, batch_small, batch_mixed, replace, realloc);
criterion_main!(benches);
