//! Whole-program workloads for comparing allocators.
//!
//! Each allocator gets its own binary (`src/bin/w_<allocator>.rs`) that sets
//! `#[global_allocator]` and calls [`main`]; everything else is shared here,
//! so the four binaries run exactly the same code. Usage:
//!
//! ```text
//! w_<allocator> <workload> [scale]
//! ```
//!
//! A run prints one line of `key=value` fields on stdout, for example
//!
//! ```text
//! workload=btree alloc=jemalloc scale=1 secs=1.234 peak_rss_kib=12345 end_rss_kib=2345 check=42
//! ```
//!
//! - `secs`: wall time of the workload (for `idle`, without the sleep);
//! - `peak_rss_kib`: `VmHWM` from `/proc/self/status` at the end;
//! - `end_rss_kib`: `VmRSS` at the end (for `idle`, after the sleep);
//! - `user_secs`, `sys_secs`, `minflt`: CPU times and minor page faults of
//!   the whole process (`getrusage`), which tell time spent in the allocator
//!   from time spent faulting pages in;
//! - `check`: a digest of the results; it must be equal for every allocator
//!   at the same scale, which shows that they all did the same work.
//!
//! Some workloads add fields (`churn`: `rss10_kib`, `rss100_kib`; `idle`:
//! `freed_rss_kib`; `prodcons`: each thread's CPU time and how often it
//! blocked on the channel) and some binaries describe their allocator (jemalloc's
//! version and background-thread setting).
//!
//! With `COMPARE_SMAPS=<file>` set, a run copies its `/proc/self/smaps` to
//! the file at the end, for a look at where its RSS lies.
//!
//! `scale` (default 1) multiplies the amount of work, for smoke tests (e.g.
//! 0.02). All randomness comes from fixed-seed xorshift generators.
//!
//! The workloads, at scale 1:
//!
//! | name        | what it does |
//! |-------------|--------------|
//! | `btree`     | `BTreeMap<String, Vec<u32>>` of 1M entries: build, read, drop |
//! | `hashmap`   | `HashMap<u64, Box<[u8]>>`: 4M random inserts/removes, values 8 B to 32 KiB |
//! | `strings`   | split, collect, reverse, join, sort and dedup over 200k words, 10 times |
//! | `workqueue` | 4 workers share a job queue; jobs are freed by workers, results by a collector thread |
//! | `prodcons`  | one thread allocates 10M blocks of 16..256 B, another frees them; batches over a bounded channel |
//! | `larson`    | 4 chains of 40 threads; each replaces 100k random slots of 1000 blocks (16..1024 B), then hands the array on |
//! | `churn`     | 5000 short threads, 4 at a time, 200 blocks each; 4 blocks of each outlive it in a ring of 1000 |
//! | `vecgrow`   | a `Vec<u8>` pushed byte by byte to 64 MiB, 8 times |
//! | `idle`      | 4 threads fill 1 GiB with 64..1024 B blocks and free them all; RSS after 2 s idle |

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::hint::black_box;
use std::sync::mpsc::{channel, sync_channel};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The workload names, in the order the runner uses.
pub const WORKLOADS: [&str; 9] =
    ["btree", "hashmap", "strings", "workqueue", "prodcons", "larson", "churn", "vecgrow", "idle"];

/// A small fixed-seed generator (xorshift64), so every allocator sees the
/// same sizes and orders without the `rand` crate.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed` (any value; zero is remapped).
    pub fn new(seed: u64) -> Self {
        // Mix the seed so that small neighbouring seeds give unrelated streams.
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        if s == 0 {
            s = 1;
        }
        XorShift(s)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`; the slight modulo bias does not matter here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`), or 0 if absent.
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU times and minor faults of the whole process so far.
pub struct Usage {
    pub user_secs: f64,
    pub sys_secs: f64,
    pub minflt: u64,
}

/// [`Usage`] from `getrusage(RUSAGE_SELF)`; zeros if the call fails.
pub fn process_usage() -> Usage {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` for the call to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Usage { user_secs: 0.0, sys_secs: 0.0, minflt: 0 };
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Usage { user_secs: secs(ru.ru_utime), sys_secs: secs(ru.ru_stime), minflt: ru.ru_minflt as u64 }
}

/// The calling thread's CPU time (user plus system, microseconds) and its
/// voluntary context switches (how often it blocked), from
/// `getrusage(RUSAGE_THREAD)`; zeros if the call fails.
pub fn thread_usage() -> (u64, u64) {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` for the call to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (0, 0);
    }
    let micros = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    (micros(ru.ru_utime) + micros(ru.ru_stime), ru.ru_nvcsw as u64)
}

/// What a workload reports besides its wall time.
#[derive(Debug, Default)]
pub struct Report {
    /// Digest of the results; equal across allocators at the same scale.
    pub check: u64,
    /// Wall time, when the workload measures it itself (`idle` leaves out its sleep).
    pub secs: Option<f64>,
    /// End RSS, when the workload measures it itself.
    pub end_rss_kib: Option<u64>,
    /// Extra `key=value` fields.
    pub fields: Vec<(&'static str, u64)>,
}

/// `n` times `scale`, at least `min`.
fn scaled(n: usize, scale: f64, min: usize) -> usize {
    ((n as f64 * scale) as usize).max(min)
}

/// Runs the workload named `name` at `scale`, or returns `None` for an unknown name.
pub fn run_workload(name: &str, scale: f64) -> Option<Report> {
    let run: fn(f64) -> Report = match name {
        "btree" => btree,
        "hashmap" => hashmap,
        "strings" => strings,
        "workqueue" => workqueue,
        "prodcons" => prodcons,
        "larson" => larson,
        "churn" => churn,
        "vecgrow" => vecgrow,
        "idle" => idle,
        _ => return None,
    };
    Some(run(scale))
}

/// The shared `main` of the `w_<allocator>` binaries: parses
/// `<workload> [scale]`, runs the workload and prints one result line.
/// `extra` adds allocator-specific fields to the line (may be empty).
pub fn main(alloc_name: &str, extra: fn() -> String) {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        eprintln!("usage: {} <workload> [scale]\nworkloads: {}", args[0], WORKLOADS.join(" "));
        std::process::exit(2);
    };
    let Some(name) = args.get(1) else { usage() };
    let scale = match args.get(2).map(|s| s.parse::<f64>()) {
        None => 1.0,
        Some(Ok(s)) if s > 0.0 && s.is_finite() => s,
        Some(_) => usage(),
    };
    let start = Instant::now();
    let Some(report) = run_workload(name, scale) else { usage() };
    let secs = report.secs.unwrap_or_else(|| start.elapsed().as_secs_f64());
    let end_rss_kib = report.end_rss_kib.unwrap_or_else(|| status_kib("VmRSS"));
    let peak_rss_kib = status_kib("VmHWM");
    if let Some(path) = std::env::var_os("COMPARE_SMAPS") {
        // Where the end RSS lies, mapping by mapping, for a closer look.
        std::fs::copy("/proc/self/smaps", path).expect("copy /proc/self/smaps");
    }
    let usage = process_usage();
    let mut line = format!(
        "workload={name} alloc={alloc_name} scale={scale} secs={secs:.4} peak_rss_kib={peak_rss_kib} \
         end_rss_kib={end_rss_kib} user_secs={:.3} sys_secs={:.3} minflt={} check={}",
        usage.user_secs, usage.sys_secs, usage.minflt, report.check
    );
    for (key, value) in &report.fields {
        line.push_str(&format!(" {key}={value}"));
    }
    let extra = extra();
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(&extra);
    }
    println!("{line}");
}

/// A block of `size` bytes, every byte set to `fill`, so the memory is touched.
fn block(size: usize, fill: u8) -> Box<[u8]> {
    // Not `vec![fill; size]`: with a zero fill that is `alloc_zeroed`, which
    // may skip touching fresh memory.
    let mut v = Vec::with_capacity(size);
    v.resize(size, fill);
    v.into_boxed_slice()
}

fn btree(scale: f64) -> Report {
    let n = scaled(1_000_000, scale, 1000);
    let mut rng = XorShift::new(1);
    let mut map: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for i in 0..n {
        // Random hex first so inserts land all over the tree; the index keeps keys unique.
        let key = format!("{:012x}-{i}", rng.next_u64() >> 16);
        let len = rng.range(1, 8);
        map.insert(key, (0..len as u32).map(|j| j ^ i as u32).collect());
    }
    let mut check = 0u64;
    for (key, value) in &map {
        check = check.wrapping_mul(31).wrapping_add(key.len() as u64 + value.iter().map(|&v| v as u64).sum::<u64>());
    }
    drop(black_box(map));
    Report { check, ..Report::default() }
}

fn hashmap(scale: f64) -> Report {
    let ops = scaled(4_000_000, scale, 10_000);
    const KEY_COUNT: usize = 1 << 16;
    let mut rng = XorShift::new(2);
    // SipHash with fixed keys, so the table behaves the same in every run.
    let mut map: HashMap<u64, Box<[u8]>, BuildHasherDefault<DefaultHasher>> = HashMap::default();
    let mut check = 0u64;
    for _ in 0..ops {
        let key = rng.below(KEY_COUNT) as u64;
        match map.entry(key) {
            Entry::Occupied(e) => check = check.wrapping_add(e.remove()[0] as u64),
            Entry::Vacant(e) => {
                // Mostly small values, some medium, a few up to the 32 KiB class limit.
                let size = match rng.below(100) {
                    0..70 => rng.range(8, 128),
                    70..95 => rng.range(129, 2048),
                    _ => rng.range(2049, 32768),
                };
                // `vec![0; n]` goes through `alloc_zeroed`, as it does in real programs.
                let mut value = vec![0u8; size].into_boxed_slice();
                value[0] = key as u8;
                e.insert(value);
            }
        }
    }
    check = check.wrapping_add(map.len() as u64);
    drop(black_box(map));
    Report { check, ..Report::default() }
}

/// Pseudo-English text of `word_count` words, about 12 words a line.
fn generate_text(word_count: usize, rng: &mut XorShift) -> String {
    const SYLLABLES: [&str; 16] =
        ["ka", "lo", "mi", "ten", "ra", "su", "vor", "en", "di", "pa", "qu", "is", "nor", "be", "ex", "ul"];
    let mut text = String::new();
    for i in 0..word_count {
        for _ in 0..rng.range(1, 5) {
            text.push_str(SYLLABLES[rng.below(SYLLABLES.len())]);
        }
        text.push(if i % 12 == 11 { '\n' } else { ' ' });
    }
    text
}

fn strings(scale: f64) -> Report {
    const REPEATS: usize = 10;
    let mut rng = XorShift::new(3);
    let text = generate_text(scaled(200_000, scale, 1000), &mut rng);
    let mut check = 0u64;
    for _ in 0..REPEATS {
        // Line by line: words collected, reversed and joined again.
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                let mut words: Vec<String> = line.split(' ').map(str::to_uppercase).collect();
                words.reverse();
                words.join(" ")
            })
            .collect();
        let document = lines.join("\n");
        // The vocabulary: every word owned, sorted, deduplicated, joined.
        let mut words: Vec<String> = document.split_whitespace().map(|w| w.to_lowercase()).collect();
        words.sort_unstable();
        words.dedup();
        let vocabulary = words.join(",");
        check = check.wrapping_add(document.len() as u64).wrapping_add(vocabulary.len() as u64);
    }
    Report { check, ..Report::default() }
}

/// Input of a `workqueue` job: allocated by the dispatcher, freed by a worker.
struct Job {
    sizes: Vec<u16>,
    fill: u8,
}

fn workqueue(scale: f64) -> Report {
    const WORKERS: usize = 4;
    const BLOCKS_PER_JOB: usize = 16;
    let job_count = scaled(200_000, scale, 500);
    let (job_tx, job_rx) = sync_channel::<Job>(256);
    let (result_tx, result_rx) = sync_channel::<Vec<Box<[u8]>>>(256);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let job_rx = Arc::clone(&job_rx);
            let result_tx = result_tx.clone();
            thread::spawn(move || {
                loop {
                    let job = job_rx.lock().unwrap().recv();
                    let Ok(job) = job else { break };
                    let result: Vec<Box<[u8]>> = job.sizes.iter().map(|&s| block(s as usize, job.fill)).collect();
                    drop(job);
                    result_tx.send(result).unwrap();
                }
            })
        })
        .collect();
    drop(result_tx);
    // The collector frees results allocated by the workers.
    let collector = thread::spawn(move || {
        let mut check = 0u64;
        for result in result_rx {
            check = check.wrapping_add(result.iter().map(|b| b[b.len() - 1] as u64 + b.len() as u64).sum::<u64>());
        }
        check
    });
    let mut rng = XorShift::new(4);
    for i in 0..job_count {
        let sizes = (0..BLOCKS_PER_JOB).map(|_| rng.range(16, 1024) as u16).collect();
        job_tx.send(Job { sizes, fill: i as u8 }).unwrap();
    }
    drop(job_tx);
    for worker in workers {
        worker.join().unwrap();
    }
    Report { check: collector.join().unwrap(), ..Report::default() }
}

fn prodcons(scale: f64) -> Report {
    const BATCH: usize = 1000;
    let block_count = scaled(10_000_000, scale, 10 * BATCH);
    // Bounded, so the producer cannot run far ahead: memory in flight stays small.
    let (tx, rx) = sync_channel::<Vec<Box<[u8]>>>(8);
    let consumer = thread::spawn(move || {
        let mut check = 0u64;
        for batch in rx {
            check = check.wrapping_add(batch.iter().map(|b| b[0] as u64 + b.len() as u64).sum::<u64>());
        }
        (check, thread_usage())
    });
    let mut rng = XorShift::new(5);
    for start in (0..block_count).step_by(BATCH) {
        let batch = (start..(start + BATCH).min(block_count)).map(|i| block(rng.range(16, 256), i as u8)).collect();
        tx.send(batch).unwrap();
    }
    drop(tx);
    let (producer_cpu_us, producer_waits) = thread_usage();
    let (check, (consumer_cpu_us, consumer_waits)) = consumer.join().unwrap();
    // Which side sets the pace, and how often each blocked on the channel
    // (an empty channel parks the consumer, and the producer's next send
    // pays the wake-up); see BENCHMARKS.md.
    let fields = vec![
        ("producer_cpu_us", producer_cpu_us),
        ("consumer_cpu_us", consumer_cpu_us),
        ("producer_waits", producer_waits),
        ("consumer_waits", consumer_waits),
    ];
    Report { check, fields, ..Report::default() }
}

fn larson(scale: f64) -> Report {
    const CHAINS: usize = 4;
    const SLOTS: usize = 1000;
    const OPS_PER_GENERATION: usize = 100_000;
    let generations = scaled(40, scale, 2);
    let chains: Vec<_> = (0..CHAINS)
        .map(|chain| {
            thread::spawn(move || {
                let mut rng = XorShift::new(600 + chain as u64);
                let mut slots: Vec<Box<[u8]>> = (0..SLOTS).map(|_| block(rng.range(16, 1024), 0)).collect();
                // Each generation runs on a fresh thread that frees what the
                // previous (now exited) thread allocated.
                for generation in 0..generations {
                    let seed = (chain * 1_000_000 + generation) as u64;
                    slots = thread::spawn(move || {
                        let mut rng = XorShift::new(seed);
                        for _ in 0..OPS_PER_GENERATION {
                            let i = rng.below(slots.len());
                            slots[i] = block(rng.range(16, 1024), generation as u8);
                        }
                        slots
                    })
                    .join()
                    .unwrap();
                }
                slots.iter().map(|b| b[0] as u64 + b.len() as u64).sum::<u64>()
            })
        })
        .collect();
    let check = chains.into_iter().map(|c| c.join().unwrap()).fold(0u64, u64::wrapping_add);
    Report { check, ..Report::default() }
}

fn churn(scale: f64) -> Report {
    const CONCURRENT: usize = 4;
    const BLOCKS_PER_THREAD: usize = 200;
    const KEPT_PER_THREAD: usize = 4;
    let thread_count = scaled(5000, scale, 10 * CONCURRENT);
    // Survivors live in a ring that the first 5% of threads fill (1000 blocks
    // at scale 1), so the live set is constant from there and RSS should be
    // flat between 10% and 100% of the threads.
    let kept_count = (thread_count / 20).max(1) * KEPT_PER_THREAD;
    let mut kept: Vec<Box<[u8]>> = Vec::with_capacity(kept_count);
    let mut kept_next = 0;
    let mut check = 0u64;
    let mut rss10_kib = 0;
    let mut started = 0;
    while started < thread_count {
        let wave = CONCURRENT.min(thread_count - started);
        let handles: Vec<_> = (started..started + wave)
            .map(|t| {
                thread::spawn(move || {
                    let mut rng = XorShift::new(7_000_000 + t as u64);
                    let mut blocks: Vec<Option<Box<[u8]>>> =
                        (0..BLOCKS_PER_THREAD).map(|_| Some(block(rng.range(16, 2048), t as u8))).collect();
                    // Free in random order, keeping the last few alive past the thread's exit.
                    for _ in 0..BLOCKS_PER_THREAD - KEPT_PER_THREAD {
                        let mut i = rng.below(BLOCKS_PER_THREAD);
                        while blocks[i].is_none() {
                            i = (i + 1) % BLOCKS_PER_THREAD;
                        }
                        blocks[i] = None;
                    }
                    blocks.into_iter().flatten().collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            for b in handle.join().unwrap() {
                check = check.wrapping_add(b.len() as u64);
                if kept.len() < kept_count {
                    kept.push(b);
                } else {
                    kept[kept_next] = b;
                    kept_next = (kept_next + 1) % kept_count;
                }
            }
        }
        let before = started;
        started += wave;
        if before < thread_count / 10 && started >= thread_count / 10 {
            rss10_kib = status_kib("VmRSS");
        }
    }
    let rss100_kib = status_kib("VmRSS");
    Report { check, fields: vec![("rss10_kib", rss10_kib), ("rss100_kib", rss100_kib)], ..Report::default() }
}

fn vecgrow(scale: f64) -> Report {
    const REPEATS: usize = 8;
    let target_size = scaled(64 << 20, scale, 1 << 20);
    let mut check = 0u64;
    for r in 0..REPEATS {
        let mut v = Vec::new();
        for i in 0..target_size {
            v.push((i + r) as u8);
        }
        let v = black_box(v);
        check = check.wrapping_add(v.len() as u64 + v[v.len() / 2] as u64);
    }
    Report { check, ..Report::default() }
}

fn idle(scale: f64) -> Report {
    const THREADS: usize = 4;
    let bytes_per_thread = scaled(1 << 30, scale, 4 << 20) / THREADS;
    let start = Instant::now();
    // The threads stay alive while the process idles, as a server's workers
    // would: an allocator cannot rely on thread exit to give memory back.
    let grown = Arc::new(Barrier::new(THREADS));
    let freed = Arc::new(Barrier::new(THREADS + 1));
    let measured = Arc::new(Barrier::new(THREADS + 1));
    let (check_tx, check_rx) = channel::<u64>();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (grown, freed, measured) = (Arc::clone(&grown), Arc::clone(&freed), Arc::clone(&measured));
            let check_tx = check_tx.clone();
            thread::spawn(move || {
                let mut rng = XorShift::new(800 + t as u64);
                let mut blocks = Vec::new();
                let mut total = 0;
                while total < bytes_per_thread {
                    let size = rng.range(64, 1024);
                    blocks.push(block(size, t as u8));
                    total += size;
                }
                check_tx.send(blocks.len() as u64).unwrap();
                // Every thread holds its share at once, so the whole 1 GiB is live.
                grown.wait();
                drop(blocks);
                freed.wait();
                measured.wait();
            })
        })
        .collect();
    drop(check_tx);
    freed.wait();
    let secs = start.elapsed().as_secs_f64();
    let freed_rss_kib = status_kib("VmRSS");
    // No `poolmalloc::collect()` or purge call: what the allocator does on its own.
    thread::sleep(Duration::from_secs(2));
    let end_rss_kib = status_kib("VmRSS");
    measured.wait();
    for t in threads {
        t.join().unwrap();
    }
    let check = check_rx.iter().fold(0, u64::wrapping_add);
    Report { check, secs: Some(secs), end_rss_kib: Some(end_rss_kib), fields: vec![("freed_rss_kib", freed_rss_kib)] }
}
