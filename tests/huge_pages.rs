//! `POOLMALLOC_HUGE_PAGES`: once the heap passes 16 MiB, the 2 MiB chunks
//! arenas come from are advised for transparent huge pages, always (`2`) or
//! while their first faults stay fast (unset, the default), and the chunks
//! mapped before with small pages are collapsed into huge pages; large
//! mappings from 4 MiB are advised too (by the same probe in the default
//! mode), and against huge pages with the setting `0`. No harness: the
//! setting is read once per process, so `main` runs each mode in a child
//! process of this binary with its own environment. Skipped where the kernel
//! has no transparent huge pages.

use poolmalloc::PoolMalloc;
use std::process::Command;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

/// One mapping of `/proc/self/smaps`: its range, its `AnonHugePages`
/// bytes and its `VmFlags` line.
struct Mapping {
    start: usize,
    end: usize,
    anon_huge: usize,
    flags: String,
}

impl Mapping {
    fn holds(&self, p: *const u8) -> bool {
        (self.start..self.end).contains(&(p as usize))
    }

    /// True if `VmFlags` has `flag` (`hg`: advised for huge pages; `nh`:
    /// advised against them).
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.split_whitespace().any(|f| f == flag)
    }
}

/// Every mapping of this process.
fn mappings() -> Vec<Mapping> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
        {
            mappings.push(Mapping { start, end, anon_huge: 0, flags: String::new() });
        } else if let Some(mapping) = mappings.last_mut() {
            if first == "AnonHugePages:" {
                mapping.anon_huge = line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() << 10;
            } else if first == "VmFlags:" {
                mapping.flags = line.to_string();
            }
        }
    }
    mappings
}

/// The mappings that hold part of `blocks`.
fn mappings_holding(blocks: &[Box<[u8; 256]>]) -> Vec<Mapping> {
    mappings().into_iter().filter(|m| blocks.iter().any(|b| m.holds(b.as_ptr()))).collect()
}

/// Bytes of the mappings holding `blocks` with `MADV_HUGEPAGE` set (`hg`).
fn advised_bytes(mappings: &[Mapping]) -> usize {
    mappings.iter().filter(|m| m.has_flag("hg")).map(|m| m.end - m.start).sum()
}

/// Huge-page bytes in the mappings holding `blocks` that are advised
/// against huge pages (`nh`): the chunks mapped before the heap passed
/// 16 MiB, where only a collapse makes huge pages.
fn collapsed_bytes(mappings: &[Mapping]) -> usize {
    mappings.iter().filter(|m| m.has_flag("nh")).map(|m| m.anon_huge).sum()
}

/// Whether this kernel collapses small pages into a huge page on request
/// (`MADV_COLLAPSE`, Linux 6.1) right now: tried on a mapping of our own.
fn kernel_collapses() -> bool {
    const HUGE: usize = 2 << 20;
    // SAFETY: a fresh private mapping, unmapped below; only its aligned
    // 2 MiB inside is touched and advised.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            2 * HUGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(map, libc::MAP_FAILED);
        let aligned = (map as usize).next_multiple_of(HUGE) as *mut u8;
        libc::madvise(aligned.cast(), HUGE, libc::MADV_NOHUGEPAGE);
        aligned.write_bytes(1, HUGE);
        libc::madvise(aligned.cast(), HUGE, libc::MADV_HUGEPAGE);
        let collapsed = libc::madvise(aligned.cast(), HUGE, libc::MADV_COLLAPSE) == 0;
        libc::munmap(map, 2 * HUGE);
        collapsed
    }
}

/// Whether the mapping that holds `p` has `MADV_HUGEPAGE` set, and
/// whether it has `MADV_NOHUGEPAGE`.
fn mapping_advice(p: *const u8) -> (bool, bool) {
    let all = mappings();
    let m = all.iter().find(|m| m.holds(p)).unwrap_or_else(|| panic!("no mapping holds {p:?}"));
    (m.has_flag("hg"), m.has_flag("nh"))
}

/// What `fill_and_check` found.
struct Found {
    /// Bytes of the advised mappings that hold the blocks.
    advised: usize,
    /// Huge-page bytes in the mappings of the small-page chunks.
    collapsed_bytes: usize,
    /// The statistics' counts: chunks advised, slow faults or collapses,
    /// chunks collapsed.
    chunks: usize,
    slow: usize,
    collapsed: usize,
    /// Whether a 16 MiB large block's mapping is advised for huge pages,
    /// and whether against them.
    large_advised: bool,
    large_unadvised: bool,
    /// The statistics' count of large mappings whose first huge-page fault
    /// was timed for the probe (the 16 MiB block's included), and of those
    /// that were slow.
    large_probes: usize,
    large_slow: usize,
}

/// 64 MiB of 256-byte blocks (past the 16 MiB threshold), their contents
/// checked after the collapse of the first chunks; then `check` gets what
/// the mappings and the statistics say.
fn fill_and_check(check: impl FnOnce(Found)) {
    let blocks: Vec<Box<[u8; 256]>> = (0..256 * 1024).map(|i| Box::new([i as u8; 256])).collect();
    assert!(blocks.iter().enumerate().all(|(i, b)| b.iter().all(|&x| x == i as u8)));
    let mappings = mappings_holding(&blocks);
    let stats = poolmalloc::stats();
    let large = vec![7u8; 16 << 20];
    let (large_advised, large_unadvised) = mapping_advice(large.as_ptr());
    let after = poolmalloc::stats();
    let (large_probes, large_slow) = (after.large_huge_page_probes, after.slow_large_huge_page_faults);
    assert!(large.iter().all(|&x| x == 7));
    check(Found {
        advised: advised_bytes(&mappings),
        collapsed_bytes: collapsed_bytes(&mappings),
        chunks: stats.huge_page_chunks,
        slow: stats.slow_huge_page_faults,
        collapsed: stats.collapsed_chunks,
        large_advised,
        large_unadvised,
        large_probes,
        large_slow,
    });
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
        Some("always") => fill_and_check(|found| {
            let Found { advised, collapsed_bytes, chunks, collapsed, large_advised, large_probes, .. } = found;
            assert!(large_advised, "a 16 MiB block's mapping is not advised for huge pages");
            assert_eq!(large_probes, 0, "large mappings probed with huge pages always on");
            // Everything past the first 64 arenas (16 MiB) is in advised chunks.
            assert!(advised >= 32 << 20, "only {advised} bytes of the blocks' mappings are advised for huge pages");
            assert!(chunks >= 16, "{chunks} chunks counted as advised");
            // The eight chunks before are full of blocks, so each is tried;
            // each collapse the statistics count is a huge page in them.
            assert_eq!(collapsed_bytes, collapsed * (2 << 20), "{collapsed} chunks counted as collapsed");
            assert!(collapsed <= 8, "{collapsed} chunks counted as collapsed");
            if collapsed == 0 {
                // Only where the kernel would not collapse for us either.
                assert!(!kernel_collapses(), "the kernel collapses, but no chunk was collapsed");
                println!("always: this kernel did not collapse (no MADV_COLLAPSE or no huge page free)");
            }
            println!("always: {} MiB of advised mappings held the blocks, {collapsed} chunks collapsed", advised >> 20);
        }),
        Some("probed") => fill_and_check(|found| {
            let Found {
                advised,
                collapsed_bytes,
                chunks,
                slow,
                collapsed,
                large_advised,
                large_unadvised,
                large_probes,
                large_slow,
            } = found;
            // The large block asks the probe the chunks use: unless the
            // probe is backing off, its first huge page is faulted, timed,
            // and the mapping gets huge pages if that was fast.
            assert!(
                large_advised != large_unadvised,
                "the 16 MiB block's mapping: hg {large_advised}, nh {large_unadvised}"
            );
            assert!(large_probes <= 1 && large_slow <= large_probes, "{large_probes} probes, {large_slow} slow");
            assert_eq!(large_advised, large_probes == 1 && large_slow == 0, "{large_probes} probes, {large_slow} slow");
            // The first chunk past 16 MiB is always tried; how many more get
            // huge pages depends on how fast the kernel gives them, and so
            // does how many of the first eight are collapsed.
            assert!(chunks >= 1 && slow <= chunks + collapsed, "{chunks} chunks advised, {slow} slow");
            assert!(advised >= 2 << 20, "only {advised} bytes of the blocks' mappings are advised for huge pages");
            assert!(advised <= chunks * (2 << 20), "{advised} bytes advised, but {chunks} chunks counted");
            assert_eq!(collapsed_bytes, collapsed * (2 << 20), "{collapsed} chunks counted as collapsed");
            println!(
                "probed: {chunks} chunks advised, {collapsed} collapsed, {slow} slow, {} MiB held the blocks, \
                 16 MiB block advised: {large_advised}",
                advised >> 20
            );
        }),
        Some("off") => fill_and_check(|found| {
            let Found {
                advised,
                collapsed_bytes,
                chunks,
                slow,
                collapsed,
                large_advised,
                large_unadvised,
                large_probes,
                ..
            } = found;
            assert_eq!((advised, collapsed_bytes), (0, 0), "huge pages in the blocks' mappings with the setting off");
            assert!(
                large_unadvised && large_probes == 0,
                "the 16 MiB block's mapping is not advised against huge pages"
            );
            assert_eq!((chunks, slow, collapsed), (0, 0, 0), "huge-page chunks counted with the setting off");
            assert!(!large_advised, "a 16 MiB block's mapping is advised for huge pages with the setting off");
            println!("off: no mapping advised, nothing collapsed");
        }),
        Some(other) => panic!("unknown mode {other}"),
        None => {
            let exe = std::env::current_exe().unwrap();
            for (mode, setting) in [("always", Some("2")), ("probed", None), ("off", Some("0"))] {
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
