//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::alloc::{Layout, alloc, dealloc, realloc};

/// The byte at offset `i` of a block tagged `seed`.
#[inline]
pub fn pattern(seed: u64, i: usize) -> u8 {
    (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i as u64 * 0x2545_F491) >> 24) as u8
}

/// Fills `len` bytes at `p` with the pattern of `seed`.
///
/// # Safety
/// `p` is valid for `len` bytes of writes.
pub unsafe fn fill(p: *mut u8, len: usize, seed: u64) {
    let bytes = unsafe { std::slice::from_raw_parts_mut(p, len) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = pattern(seed, i);
    }
}

/// True if the first `len` bytes at `p` hold the pattern of `seed`.
///
/// # Safety
/// `p` is valid for `len` bytes of reads.
pub unsafe fn holds(p: *const u8, len: usize, seed: u64) -> bool {
    let bytes = unsafe { std::slice::from_raw_parts(p, len) };
    bytes.iter().enumerate().all(|(i, &b)| b == pattern(seed, i))
}

/// A raw block that checks its contents when dropped.
pub struct Block {
    pub ptr: *mut u8,
    pub layout: Layout,
    pub seed: u64,
}

// SAFETY: the block is exclusively owned by whoever holds this value.
unsafe impl Send for Block {}

impl Block {
    /// Allocates and fills a block (only the first and last 64 bytes for big
    /// ones, to keep the tests fast while still catching overlap).
    pub fn new(size: usize, align: usize, seed: u64) -> Block {
        let layout = Layout::from_size_align(size, align).unwrap();
        let ptr = unsafe { alloc(layout) };
        assert!(!ptr.is_null(), "allocation of {size} bytes (align {align}) failed");
        assert_eq!(ptr as usize % align, 0, "misaligned block");
        let block = Block { ptr, layout, seed };
        block.write();
        block
    }

    fn ranges(&self) -> [(usize, usize); 2] {
        let size = self.layout.size();
        if size <= 256 { [(0, size), (0, 0)] } else { [(0, 64), (size - 64, 64)] }
    }

    fn write(&self) {
        for (start, len) in self.ranges() {
            for i in start..start + len {
                unsafe { *self.ptr.add(i) = pattern(self.seed, i) };
            }
        }
    }

    /// True if the contents are intact.
    pub fn intact(&self) -> bool {
        self.ranges()
            .iter()
            .all(|&(start, len)| (start..start + len).all(|i| unsafe { *self.ptr.add(i) } == pattern(self.seed, i)))
    }

    /// Resizes the block, checking that the kept prefix survived.
    pub fn resize(&mut self, new_size: usize) {
        let keep = self.layout.size().min(new_size).min(64);
        let p = unsafe { realloc(self.ptr, self.layout, new_size) };
        assert!(!p.is_null());
        assert_eq!(p as usize % self.layout.align(), 0);
        for i in 0..keep {
            assert_eq!(unsafe { *p.add(i) }, pattern(self.seed, i), "realloc lost byte {i}");
        }
        self.ptr = p;
        self.layout = Layout::from_size_align(new_size, self.layout.align()).unwrap();
        self.write();
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        assert!(self.intact(), "block of {} bytes was corrupted", self.layout.size());
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

/// Resident set size of this process in bytes, from /proc/self/status.
pub fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A small deterministic generator (xorshift64*), so runs repeat exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
