//! `POOLMALLOC_HUGE_PAGES`: once the heap passes 16 MiB, the 2 MiB chunks
//! arenas come from are advised for transparent huge pages, always (`2`) or
//! while their first faults stay fast (unset, the default). No harness: the
//! setting is read once per process, so `main` runs each mode in a child
//! process of this binary with its own environment. Skipped where the kernel
//! has no transparent huge pages.

use poolmalloc::PoolMalloc;
use std::process::Command;

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

/// 64 MiB of 256-byte blocks (past the 16 MiB threshold), checked; then
/// `check` gets the advised bytes that hold them and the chunks the
/// statistics count as advised and as slow.
fn fill_and_check(check: impl FnOnce(usize, usize, usize)) {
    let blocks: Vec<Box<[u8; 256]>> = (0..256 * 1024).map(|i| Box::new([i as u8; 256])).collect();
    assert!(blocks.iter().enumerate().all(|(i, b)| b.iter().all(|&x| x == i as u8)));
    let advised = advised_bytes_holding(&blocks);
    let stats = poolmalloc::stats();
    check(advised, stats.huge_page_chunks, stats.slow_huge_page_faults);
    drop(blocks);
    poolmalloc::collect();
}

fn main() {
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.is_empty() || thp.contains("[never]") {
        println!("huge_pages: skipped (no transparent huge pages on this kernel: {:?})", thp.trim());
        return;
    }
    match std::env::args().nth(1).as_deref() {
        Some("always") => fill_and_check(|advised, chunks, _| {
            // Everything past the first 64 arenas (16 MiB) is in advised chunks.
            assert!(advised >= 32 << 20, "only {advised} bytes of the blocks' mappings are advised for huge pages");
            assert!(chunks >= 16, "{chunks} chunks counted as advised");
            println!("always: {} MiB of advised mappings held the blocks", advised >> 20);
        }),
        Some("probed") => fill_and_check(|advised, chunks, slow| {
            // The first chunk past 16 MiB is always tried; how many more get
            // huge pages depends on how fast the kernel gives them.
            assert!(chunks >= 1 && slow <= chunks, "{chunks} chunks advised, {slow} slow");
            assert!(advised >= 2 << 20, "only {advised} bytes of the blocks' mappings are advised for huge pages");
            assert!(advised <= chunks * (2 << 20), "{advised} bytes advised, but {chunks} chunks counted");
            println!("probed: {} chunks advised, {slow} slow, {} MiB held the blocks", chunks, advised >> 20);
        }),
        Some(other) => panic!("unknown mode {other}"),
        None => {
            let exe = std::env::current_exe().unwrap();
            for (mode, setting) in [("always", Some("2")), ("probed", None)] {
                let mut child = Command::new(&exe);
                child.arg(mode);
                match setting {
                    Some(value) => child.env("POOLMALLOC_HUGE_PAGES", value),
                    None => child.env_remove("POOLMALLOC_HUGE_PAGES"),
                };
                let out = child.output().unwrap();
                assert!(out.status.success(), "{mode}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
                print!("huge_pages: {}", String::from_utf8_lossy(&out.stdout));
            }
        }
    }
}
