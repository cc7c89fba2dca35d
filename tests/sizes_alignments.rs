//! Every size and alignment: blocks fit, are aligned, keep their contents
//! through realloc across classes and into large allocations.

mod common;
use common::{fill, holds};
use poolmalloc::PoolMalloc;
use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

/// Sizes 1..=4096 one by one, then a dense sample up to 65536.
fn sizes() -> impl Iterator<Item = usize> {
    (1..=4096).chain((4097..=65536).step_by(61)).chain([8192, 16384, 32767, 32768, 32769, 65535, 65536])
}

/// Reallocates `p` (holding `old` bytes of pattern `seed`) to `new` bytes and
/// checks the kept prefix, then refills it.
unsafe fn resize(p: *mut u8, old: usize, new: usize, align: usize, seed: u64) -> *mut u8 {
    let layout = Layout::from_size_align(old, align).unwrap();
    let q = unsafe { A.realloc(p, layout, new) };
    assert!(!q.is_null(), "realloc {old} -> {new} (align {align}) failed");
    assert_eq!(q as usize % align, 0, "realloc {old} -> {new} misaligned for {align}");
    assert!(unsafe { holds(q, old.min(new), seed) }, "realloc {old} -> {new} (align {align}) lost data");
    assert!(unsafe { poolmalloc::usable_size(q) } >= new);
    unsafe { fill(q, new, seed) };
    q
}

#[test]
fn every_size_every_alignment_with_realloc() {
    for align_shift in 0..=12 {
        let align = 1usize << align_shift;
        for size in sizes() {
            let layout = Layout::from_size_align(size, align).unwrap();
            let seed = (size as u64) << 16 | align as u64;
            unsafe {
                let p = A.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                assert!(poolmalloc::usable_size(p) >= size);
                fill(p, size, seed);
                assert!(holds(p, size, seed));
                // Up across classes, down again, into a large block and back.
                let p = resize(p, size, size * 3, align, seed);
                let p = resize(p, size * 3, (size / 3).max(1), align, seed);
                let p = resize(p, (size / 3).max(1), 40_000 + size, align, seed);
                let p = resize(p, 40_000 + size, size, align, seed);
                A.dealloc(p, layout);
            }
        }
    }
}

#[test]
fn zeroed_allocations_of_every_class_are_zero() {
    for align in [1usize, 16, 64, 4096] {
        for size in sizes().step_by(7) {
            let layout = Layout::from_size_align(size, align).unwrap();
            unsafe {
                let dirty = A.alloc(layout);
                std::ptr::write_bytes(dirty, 0xEE, size);
                A.dealloc(dirty, layout);
                let p = A.alloc_zeroed(layout);
                assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0), "size {size}");
                A.dealloc(p, layout);
            }
        }
    }
}

/// `alloc_zeroed` after every way a block comes back: freed by its own
/// thread, by another thread, with its pool kept and carved afresh, and with
/// its pool given back to its arena (`collect`) and handed out again.
#[test]
fn zeroed_allocations_are_zero_after_every_kind_of_reuse() {
    const COUNT: usize = 64;
    fn zeroed(layout: Layout) -> Vec<usize> {
        (0..COUNT)
            .map(|_| unsafe {
                let p = A.alloc_zeroed(layout);
                assert!(!p.is_null());
                let bytes = std::slice::from_raw_parts(p, layout.size());
                assert!(bytes.iter().all(|&b| b == 0), "size {} not zero", layout.size());
                p as usize
            })
            .collect()
    }
    fn dirty(layout: Layout) -> Vec<usize> {
        (0..COUNT)
            .map(|_| unsafe {
                let p = A.alloc(layout);
                std::ptr::write_bytes(p, 0xEE, layout.size());
                p as usize
            })
            .collect()
    }
    fn free(blocks: Vec<usize>, layout: Layout) {
        blocks.into_iter().for_each(|p| unsafe { A.dealloc(p as *mut u8, layout) });
    }
    for size in sizes().step_by(13).chain([8, 16, 1024, 2048, 32768]) {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // Freed here: on the pools' local lists, or the pools kept.
        free(dirty(layout), layout);
        free(zeroed(layout), layout);
        // Freed by another thread, taken back by this one.
        let blocks = dirty(layout);
        std::thread::spawn(move || free(blocks, layout)).join().unwrap();
        free(zeroed(layout), layout);
        // Pools back to their arenas (purged or not), then handed out again.
        free(dirty(layout), layout);
        poolmalloc::collect();
        free(zeroed(layout), layout);
    }
}

#[test]
fn huge_alignments_small_and_large() {
    for align_shift in 13..=30 {
        let align = 1usize << align_shift;
        for size in [1usize, 100, 4096, 32768, 100_000, 3 << 20] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let seed = align as u64 ^ size as u64;
            unsafe {
                let p = A.alloc(layout);
                assert!(!p.is_null(), "size {size} align {align}");
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                fill(p, size, seed);
                let q = resize(p, size, size * 2, align, seed);
                assert!(holds(q, size * 2, seed));
                A.dealloc(q, Layout::from_size_align(size * 2, align).unwrap());
            }
        }
    }
}

#[test]
fn impossible_requests_return_null() {
    let max = isize::MAX as usize;
    for (size, align) in [(max - 4096, 8), (max - (1 << 20), 4096), (max / 2, 1 << 30), (1 << 62, 16), (max - 15, 16)] {
        let Ok(layout) = Layout::from_size_align(size, align) else { continue };
        unsafe {
            assert!(A.alloc(layout).is_null(), "size {size} align {align}");
            assert!(A.alloc_zeroed(layout).is_null(), "zeroed size {size} align {align}");
        }
    }
    // A failed realloc leaves the block intact.
    let layout = Layout::from_size_align(1000, 8).unwrap();
    unsafe {
        let p = A.alloc(layout);
        fill(p, 1000, 5);
        assert!(A.realloc(p, layout, max - 4096).is_null());
        assert!(holds(p, 1000, 5));
        let big = Layout::from_size_align(1 << 20, 8).unwrap();
        let q = A.realloc(p, layout, 1 << 20);
        assert!(A.realloc(q, big, max - 8192).is_null());
        assert!(holds(q, 1000, 5));
        A.dealloc(q, big);
    }
}

#[test]
fn vec_growth_by_push_keeps_contents() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..(8u64 << 20) {
        v.push(i);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    let remaps = poolmalloc::stats().large_remaps;
    assert!(remaps > 0, "large growth never used mremap");
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v, (0..10).collect::<Vec<u64>>());
}
