//! Whole-structure checks (feature `debug-invariants`): after random work on
//! several threads, every pool of each heap balances its accounting, the
//! arena lists match their free masks, and the large cache's ranges are
//! disjoint, never adjacent, and add up.
#![cfg(feature = "debug-invariants")]

mod common;
use common::{Block, Rng};
use poolmalloc::PoolMalloc;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

/// A thread's blocks at its end: its live slots and the blocks it handed on.
type ThreadBlocks<B> = (Vec<Option<B>>, Vec<B>);

/// Runs `work(t)` on `threads` threads; each returns its live and handed-on
/// blocks, which come back here, so the caller frees them on its own thread
/// (remote frees, to the heaps of exited threads).
fn on_threads<B: Send + 'static>(threads: u64, work: fn(u64) -> ThreadBlocks<B>) -> Vec<B> {
    let handles: Vec<_> = (0..threads).map(|t| std::thread::spawn(move || work(t))).collect();
    let mut all = Vec::new();
    for h in handles {
        let (live, handed) = h.join().unwrap();
        all.extend(live.into_iter().flatten());
        all.extend(handed);
    }
    all
}

#[test]
fn heaps_and_arenas_keep_their_invariants() {
    let all = on_threads(4, |t| {
        let mut rng = Rng(t + 1);
        let mut live: Vec<Option<Block>> = (0..2000).map(|_| None).collect();
        let mut handed: Vec<Block> = Vec::new();
        for step in 0..200_000 {
            let slot = rng.below(live.len() as u64) as usize;
            if rng.below(3) == 0 {
                if let Some(b) = live[slot].take() {
                    handed.push(b);
                }
            } else {
                live[slot] = Some(Block::new(1 + rng.below(40_000) as usize, 1 << rng.below(8), step));
            }
            if step % 10_000 == 0 {
                // Now and then send this heap's unused (kept) pools
                // back, so the arena checks see pools being returned.
                if step % 50_000 == 0 {
                    poolmalloc::collect();
                }
                poolmalloc::check_invariants();
            }
        }
        poolmalloc::check_invariants();
        (live, handed)
    });
    // Free everything on this thread (remote frees to exited heaps), then
    // collect and check again.
    drop(all);
    poolmalloc::collect();
    assert!(poolmalloc::check_invariants() >= 1);
}

/// A large block whose every page carries a mark: one word per 4 KiB page
/// (and the last word), derived from a seed and the offset, so a page moved
/// to the wrong place by a split, merge, absorb, copy or `mremap` shows.
struct Marked {
    ptr: *mut u8,
    size: usize,
    seed: u64,
}

const MARK_STEP: usize = 4096;

fn mark(seed: u64, offset: usize) -> u64 {
    (seed ^ offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

impl Marked {
    fn new(size: usize, seed: u64) -> Marked {
        let ptr = unsafe { std::alloc::alloc(std::alloc::Layout::from_size_align(size, 8).unwrap()) };
        assert!(!ptr.is_null());
        let m = Marked { ptr, size, seed };
        m.write(0);
        m
    }

    fn offsets(&self, from: usize) -> impl Iterator<Item = usize> {
        let last = self.size / 8 * 8 - 8;
        (from.next_multiple_of(MARK_STEP)..=last).step_by(MARK_STEP).chain(std::iter::once(last))
    }

    fn write(&self, from: usize) {
        for off in self.offsets(from) {
            unsafe { self.ptr.add(off).cast::<u64>().write(mark(self.seed, off)) };
        }
    }

    fn intact(&self) -> bool {
        self.offsets(0).all(|off| unsafe { self.ptr.add(off).cast::<u64>().read() } == mark(self.seed, off))
    }

    /// Resizes; the marks of the kept part must survive (the last word moves).
    fn resize(&mut self, new_size: usize) {
        let layout = std::alloc::Layout::from_size_align(self.size, 8).unwrap();
        let kept = self.size.min(new_size) / 8 * 8 - 8;
        let p = unsafe { std::alloc::realloc(self.ptr, layout, new_size) };
        assert!(!p.is_null());
        for off in (0..kept).step_by(MARK_STEP) {
            assert_eq!(unsafe { p.add(off).cast::<u64>().read() }, mark(self.seed, off), "realloc lost offset {off}");
        }
        self.ptr = p;
        self.size = new_size;
        self.write(0);
    }
}

impl Drop for Marked {
    fn drop(&mut self) {
        assert!(self.intact(), "large block of {} bytes was corrupted", self.size);
        unsafe { std::alloc::dealloc(self.ptr, std::alloc::Layout::from_size_align(self.size, 8).unwrap()) };
    }
}

// Raw pointers, each owned by one `Marked`.
unsafe impl Send for Marked {}

/// Random large allocations, growths, shrinks and frees on several threads
/// (frees partly on another thread), with the large cache checked as it
/// goes: its ranges split, merge, and are grown into or moved into.
#[test]
fn the_large_cache_keeps_its_invariants() {
    let all = on_threads(3, |t| {
        let mut rng = Rng(t + 100);
        let mut live: Vec<Option<Marked>> = (0..24).map(|_| None).collect();
        let mut handed = Vec::new();
        for step in 0..3000u64 {
            let slot = rng.below(live.len() as u64) as usize;
            let size = (32 << 10) + 1 + rng.below(1 << 20) as usize;
            match (rng.below(4), live[slot].take()) {
                (0, Some(b)) => handed.push(b),
                (1 | 2, Some(mut b)) => {
                    b.resize(size);
                    live[slot] = Some(b);
                }
                _ => live[slot] = Some(Marked::new(size, step ^ t << 32)),
            }
            if step % 100 == 0 {
                poolmalloc::check_invariants();
            }
        }
        (live, handed)
    });
    poolmalloc::check_invariants();
    drop(all);
    poolmalloc::check_invariants();
}
