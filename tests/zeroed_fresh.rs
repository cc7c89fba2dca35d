//! `alloc_zeroed` from memory untouched since it was mapped clears only the
//! link word carving wrote, so a fresh `vec![0; n]` leaves its pages alone
//! until they are used, as a fresh mapping would. (One test in this file:
//! it measures the process's RSS.)

mod common;
use poolmalloc::PoolMalloc;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

#[test]
fn fresh_zeroed_blocks_leave_their_pages_untouched() {
    const BLOCK: usize = 32 * 1024;
    const COUNT: usize = 256;
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(COUNT);
    let before = common::rss_bytes();
    for _ in 0..COUNT {
        blocks.push(vec![0u8; BLOCK]);
    }
    let grown = common::rss_bytes().saturating_sub(before);
    // Cleared in full, the blocks would add 8 MiB. Carving touches one page
    // a block (its link word) and the arenas' headers: about 1.5 MiB.
    assert!(grown < 4 << 20, "{COUNT} fresh zeroed blocks of {BLOCK} bytes grew RSS by {grown} bytes");
    for (i, block) in blocks.iter_mut().enumerate() {
        assert!(block.iter().all(|&b| b == 0), "block {i} is not zero");
        block.fill(i as u8);
    }
    for (i, block) in blocks.iter().enumerate() {
        assert!(block.iter().all(|&b| b == i as u8), "block {i} lost its contents");
    }
}
