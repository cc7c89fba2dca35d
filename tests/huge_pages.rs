//! `POOLMALLOC_HUGE_PAGES=1`: once the heap passes 16 MiB, the 2 MiB chunks
//! arenas come from are advised for transparent huge pages. No harness: the
//! setting is read once, so it is set at the top of `main`, before anything
//! reads the settings (a free back to an arena, a large free, a chunk mapped
//! past 16 MiB). Skipped where the kernel has no transparent huge pages.

use poolmalloc::PoolMalloc;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

/// Bytes of mappings with `MADV_HUGEPAGE` set (`hg` in their `VmFlags`) that
/// hold part of `blocks`.
fn advised_bytes_holding(blocks: &[Box<[u8; 256]>]) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut total = 0;
    let mut range = (0usize, 0usize);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
        {
            range = (start, end);
        } else if first == "VmFlags:" && line.split_whitespace().any(|flag| flag == "hg") {
            let (start, end) = range;
            if blocks.iter().any(|b| (start..end).contains(&(b.as_ptr() as usize))) {
                total += end - start;
            }
        }
    }
    total
}

fn main() {
    // SAFETY: no other thread runs yet.
    unsafe { std::env::set_var("POOLMALLOC_HUGE_PAGES", "1") };
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.is_empty() || thp.contains("[never]") {
        println!("huge_pages: skipped (no transparent huge pages on this kernel: {:?})", thp.trim());
        return;
    }
    // 64 MiB of 256-byte blocks: past the 16 MiB threshold.
    let blocks: Vec<Box<[u8; 256]>> = (0..256 * 1024).map(|i| Box::new([i as u8; 256])).collect();
    assert!(blocks.iter().enumerate().all(|(i, b)| b.iter().all(|&x| x == i as u8)));
    let advised = advised_bytes_holding(&blocks);
    // Everything past the first 64 arenas (16 MiB) is in advised chunks.
    assert!(advised >= 32 << 20, "only {advised} bytes of the blocks' mappings are advised for huge pages");
    drop(blocks);
    poolmalloc::collect();
    println!("huge_pages: ok ({} MiB of advised mappings held the blocks)", advised >> 20);
}
