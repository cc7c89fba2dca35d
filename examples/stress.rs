//! Stress test for poolmalloc as the global allocator. Not a benchmark: the
//! time goes into filling and checking memory, and the output is a verdict.
//!
//! Each thread runs its share of random operations: allocate (sizes skewed
//! toward small, alignments up to 4 KiB sometimes), free, realloc, or hand a
//! block to another thread, which later frees or reallocs it. Every block is
//! filled with a pattern derived from its unique id and checked in full when
//! freed, after each realloc (the kept prefix) and at the end. Exits nonzero
//! if any block was corrupted or misaligned. Each thread keeps at most 2048
//! live blocks (64 MiB) and each inbox at most 256, so memory stays bounded.
//!
//! ```text
//! cargo run --release -p poolmalloc --example stress -- [--threads N] [--ops N] [--seed S] [--max-size BYTES]
//! ```
//!
//! The seed fixes each thread's random stream; which blocks arrive through
//! the inboxes, and when, depends on scheduling, so two runs with one seed do
//! the same kinds of work but not the identical sequence.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error, realloc};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

#[global_allocator]
static GLOBAL: poolmalloc::PoolMalloc = poolmalloc::PoolMalloc;

/// Live blocks a thread keeps at most; beyond it an allocation replaces one.
const MAX_LIVE: usize = 2048;
/// Live bytes a thread keeps at most, so `--max-size` cannot blow up memory.
const MAX_LIVE_BYTES: usize = 64 << 20;
/// Blocks waiting in one thread's inbox at most; a full inbox makes the
/// sender free the block itself.
const INBOX_CAP: usize = 256;
/// A thread empties its inbox every this many operations.
const DRAIN_EVERY: u64 = 32;
/// Corruption reports printed in detail; the rest are only counted.
const MAX_REPORTS: usize = 20;

struct Config {
    threads: usize,
    ops: u64,
    seed: u64,
    max_size: usize,
}

const USAGE: &str = "usage: stress [--threads N] [--ops N] [--seed S] [--max-size BYTES]\n\
    defaults: --threads 8 --ops 50000000 --seed 0x5eed --max-size 1048576";

fn parse_num(flag: &str, value: Option<String>) -> Result<u64, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    let digits = value.replace('_', "");
    let parsed = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse(),
    };
    parsed.map_err(|_| format!("{flag}: not a number: {value}"))
}

fn parse_args() -> Result<Config, String> {
    let mut config = Config { threads: 8, ops: 50_000_000, seed: 0x5eed, max_size: 1 << 20 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--threads" => config.threads = parse_num(&flag, args.next())? as usize,
            "--ops" => config.ops = parse_num(&flag, args.next())?,
            "--seed" => config.seed = parse_num(&flag, args.next())?,
            "--max-size" => config.max_size = parse_num(&flag, args.next())? as usize,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument: {flag}")),
        }
    }
    if config.threads == 0 || config.max_size == 0 {
        return Err("--threads and --max-size must be at least 1".into());
    }
    // Block ids keep the thread number in 16 bits.
    if config.threads > 1 << 16 {
        return Err("--threads: at most 65536".into());
    }
    if config.max_size > isize::MAX as usize / 2 {
        return Err("--max-size too large".into());
    }
    Ok(config)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// xorshift64*: small, fast, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(splitmix64(seed) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64 + 1) as usize
    }
}

/// Pattern word `k` of the block with this id: the id's hash plus a
/// multiple of `k`, so swapped blocks and shifted contents both show.
#[inline(always)]
fn pattern_word(base: u64, k: usize) -> u64 {
    base.wrapping_add((k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

#[inline(always)]
fn pattern_byte(base: u64, i: usize) -> u8 {
    pattern_word(base, i / 8).to_le_bytes()[i % 8]
}

/// Writes the pattern over bytes `from..to` of the block: words where the
/// offset is a multiple of 8 (unaligned stores, the pointer may not be), bytes
/// at either end.
///
/// # Safety
/// `p..p + to` is writable.
unsafe fn fill(p: *mut u8, base: u64, from: usize, to: usize) {
    let mut i = from;
    while i < to && i % 8 != 0 {
        // SAFETY: i < to.
        unsafe { p.add(i).write(pattern_byte(base, i)) };
        i += 1;
    }
    while i + 8 <= to {
        // SAFETY: i + 8 <= to.
        unsafe { p.add(i).cast::<u64>().write_unaligned(pattern_word(base, i / 8).to_le()) };
        i += 8;
    }
    while i < to {
        // SAFETY: i < to.
        unsafe { p.add(i).write(pattern_byte(base, i)) };
        i += 1;
    }
}

/// The first offset in `0..len` that does not hold the pattern, if any. The
/// word loop folds differences with OR instead of branching, so it stays
/// fast; the exact offset is looked for only after a mismatch.
///
/// # Safety
/// `p..p + len` is readable.
unsafe fn first_mismatch(p: *const u8, base: u64, len: usize) -> Option<usize> {
    let words = len / 8;
    let mut diff = 0u64;
    for k in 0..words {
        // SAFETY: (k + 1) * 8 <= len.
        diff |= unsafe { p.add(k * 8).cast::<u64>().read_unaligned() } ^ pattern_word(base, k).to_le();
    }
    for i in words * 8..len {
        // SAFETY: i < len.
        diff |= u64::from(unsafe { p.add(i).read() } ^ pattern_byte(base, i));
    }
    if diff == 0 {
        return None;
    }
    // SAFETY: i < len.
    (0..len).find(|&i| unsafe { p.add(i).read() } != pattern_byte(base, i))
}

/// A live block. Raw pointer so blocks can change threads; each is owned by
/// exactly one thread (live set or inbox) at a time.
struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    id: u64,
    /// Already counted as corrupted, so one block counts once.
    bad: bool,
}

// SAFETY: a block is plain memory owned by whoever holds the struct; the
// allocator supports freeing on any thread.
unsafe impl Send for Block {}

impl Block {
    fn base(&self) -> u64 {
        splitmix64(self.id)
    }

    fn layout(&self) -> Layout {
        Layout::from_size_align(self.size, self.align).expect("valid layout")
    }
}

/// Counters shared by all threads.
struct Totals {
    verified: AtomicU64,
    corrupted: AtomicU64,
    reports: AtomicUsize,
    remote_frees: AtomicU64,
    handoffs: AtomicU64,
    inbox_full: AtomicU64,
}

static TOTALS: Totals = Totals {
    verified: AtomicU64::new(0),
    corrupted: AtomicU64::new(0),
    reports: AtomicUsize::new(0),
    remote_frees: AtomicU64::new(0),
    handoffs: AtomicU64::new(0),
    inbox_full: AtomicU64::new(0),
};

/// One thread's work and state.
struct Worker<'a> {
    tid: usize,
    rng: Rng,
    live: Vec<Block>,
    live_bytes: usize,
    next_id: u64,
    max_size: usize,
    inboxes: &'a [Mutex<Vec<Block>>],
    /// Swapped with the inbox on drain, so neither Vec reallocates.
    spare: Vec<Block>,
    // Local tallies, added to `TOTALS` at the end to keep atomics off the hot loop.
    verified: u64,
    remote_frees: u64,
    handoffs: u64,
    inbox_full: u64,
}

impl Worker<'_> {
    /// A size from 1 to `max_size`: ~80% up to 512 B, ~18% up to 64 KiB,
    /// ~2% up to `max_size`.
    fn random_size(&mut self) -> usize {
        let max = self.max_size;
        match self.rng.below(100) {
            0..=79 => self.rng.range(1, max.min(512)),
            80..=97 => self.rng.range(1, max.min(64 << 10)),
            _ => self.rng.range(1, max),
        }
    }

    /// Usually 8 (what most Rust types ask for), a quarter of the time any
    /// power of two from 1 to 4096.
    fn random_align(&mut self) -> usize {
        if self.rng.below(4) == 0 { 1 << self.rng.below(13) } else { 8 }
    }

    /// Checks `0..len` of the block against its pattern; counts and reports
    /// a mismatch once per block.
    fn verify(&mut self, block: &mut Block, len: usize, when: &str) {
        self.verified += 1;
        // SAFETY: the block is live and holds at least `len` bytes.
        let mismatch = unsafe { first_mismatch(block.ptr, block.base(), len) };
        if let Some(offset) = mismatch {
            // SAFETY: offset < len.
            let found = unsafe { block.ptr.add(offset).read() };
            let expected = pattern_byte(block.base(), offset);
            self.corrupt(block, &format!("{when}: byte {offset} of {len} is {found:#04x}, expected {expected:#04x}"));
        }
    }

    fn corrupt(&self, block: &mut Block, what: &str) {
        if block.bad {
            return;
        }
        block.bad = true;
        TOTALS.corrupted.fetch_add(1, Ordering::Relaxed);
        if TOTALS.reports.fetch_add(1, Ordering::Relaxed) < MAX_REPORTS {
            eprintln!(
                "CORRUPTED thread {} block id {:#x} (made by thread {}) ptr {:p} size {} align {}: {what}",
                self.tid,
                block.id,
                block.id >> 48,
                block.ptr,
                block.size,
                block.align
            );
        }
    }

    fn check_align(&self, block: &mut Block) {
        if block.ptr as usize & (block.align - 1) != 0 {
            self.corrupt(block, "misaligned");
        }
    }

    fn allocate(&mut self) {
        let (size, align) = (self.random_size(), self.random_align());
        let layout = Layout::from_size_align(size, align).expect("valid layout");
        // SAFETY: size > 0.
        let ptr = unsafe { alloc(layout) };
        if ptr.is_null() {
            handle_alloc_error(layout);
        }
        // The thread id in the top 16 bits keeps ids unique across threads.
        let id = ((self.tid as u64) << 48) | self.next_id;
        self.next_id += 1;
        let mut block = Block { ptr, size, align, id, bad: false };
        self.check_align(&mut block);
        // SAFETY: fresh block of `size` bytes.
        unsafe { fill(ptr, block.base(), 0, size) };
        self.live_bytes += size;
        self.live.push(block);
    }

    /// Verifies the whole block and frees it.
    fn free(&mut self, mut block: Block) {
        let len = block.size;
        self.verify(&mut block, len, "free");
        if block.id >> 48 != self.tid as u64 {
            self.remote_frees += 1;
        }
        // SAFETY: allocated with this layout and not freed since.
        unsafe { dealloc(block.ptr, block.layout()) };
    }

    fn take_random(&mut self) -> Option<Block> {
        if self.live.is_empty() {
            return None;
        }
        let i = self.below(self.live.len());
        let block = self.live.swap_remove(i);
        self.live_bytes -= block.size;
        Some(block)
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    fn free_random(&mut self) {
        if let Some(block) = self.take_random() {
            self.free(block);
        }
    }

    fn realloc_random(&mut self) {
        let Some(mut block) = self.take_random() else { return };
        let (old_size, new_size) = (block.size, self.random_size());
        // SAFETY: allocated with this layout; new_size > 0 and, rounded up to
        // the alignment, far below isize::MAX.
        let ptr = unsafe { realloc(block.ptr, block.layout(), new_size) };
        if ptr.is_null() {
            handle_alloc_error(Layout::from_size_align(new_size, block.align).expect("valid layout"));
        }
        block.ptr = ptr;
        block.size = new_size;
        self.check_align(&mut block);
        self.verify(&mut block, old_size.min(new_size), "realloc");
        if new_size > old_size {
            // SAFETY: the block now holds `new_size` bytes.
            unsafe { fill(ptr, block.base(), old_size, new_size) };
        }
        self.live_bytes += new_size;
        self.live.push(block);
    }

    /// Gives a random block to a random other thread; frees it here if that
    /// thread's inbox is full.
    fn hand_off(&mut self) {
        if self.inboxes.len() < 2 {
            return self.free_random();
        }
        let Some(block) = self.take_random() else { return };
        let mut to = self.below(self.inboxes.len() - 1);
        if to >= self.tid {
            to += 1;
        }
        let mut inbox = self.inboxes[to].lock().unwrap();
        if inbox.len() < INBOX_CAP {
            inbox.push(block);
            self.handoffs += 1;
        } else {
            drop(inbox);
            self.inbox_full += 1;
            self.free(block);
        }
    }

    /// Takes the blocks others sent into the live set, freeing what does not fit.
    fn drain_inbox(&mut self) {
        std::mem::swap(&mut *self.inboxes[self.tid].lock().unwrap(), &mut self.spare);
        let mut received = std::mem::take(&mut self.spare);
        for block in received.drain(..) {
            if self.live.len() < MAX_LIVE && self.live_bytes + block.size <= MAX_LIVE_BYTES {
                self.live_bytes += block.size;
                self.live.push(block);
            } else {
                self.free(block);
            }
        }
        self.spare = received;
    }

    fn run(&mut self, ops: u64) {
        for op in 0..ops {
            match self.rng.below(100) {
                0..=39 => {
                    // At a limit, an allocation replaces a block instead.
                    while self.live.len() >= MAX_LIVE || self.live_bytes > MAX_LIVE_BYTES {
                        self.free_random();
                    }
                    self.allocate();
                }
                40..=69 => self.free_random(),
                70..=84 => self.realloc_random(),
                _ => self.hand_off(),
            }
            if op % DRAIN_EVERY == 0 {
                self.drain_inbox();
            }
        }
    }

    /// Verifies and frees everything left; call once no thread sends any more.
    fn finish(&mut self) {
        self.drain_inbox();
        while let Some(block) = self.live.pop() {
            self.free(block);
        }
        self.live_bytes = 0;
        TOTALS.verified.fetch_add(self.verified, Ordering::Relaxed);
        TOTALS.remote_frees.fetch_add(self.remote_frees, Ordering::Relaxed);
        TOTALS.handoffs.fetch_add(self.handoffs, Ordering::Relaxed);
        TOTALS.inbox_full.fetch_add(self.inbox_full, Ordering::Relaxed);
    }
}

/// Peak resident memory from `/proc/self/status`, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("stress: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Config { threads, ops, seed, max_size } = config;
    println!("stress: threads={threads} ops={ops} seed={seed:#x} max_size={max_size}");
    let start = Instant::now();
    let inboxes: Vec<Mutex<Vec<Block>>> = (0..threads).map(|_| Mutex::new(Vec::with_capacity(INBOX_CAP))).collect();
    let finished = AtomicUsize::new(0);
    // Thread 0 samples mapped bytes now and then, to show memory stays bounded.
    let peak_mapped = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(threads);
        for tid in 0..threads {
            let share = ops / threads as u64 + u64::from((tid as u64) < ops % threads as u64);
            let (inboxes, finished, peak_mapped) = (&inboxes, &finished, &peak_mapped);
            handles.push(s.spawn(move || {
                let mut w = Worker {
                    tid,
                    rng: Rng::new(seed ^ (tid as u64).wrapping_mul(0xa076_1d64_78bd_642f)),
                    live: Vec::with_capacity(MAX_LIVE),
                    live_bytes: 0,
                    next_id: 0,
                    max_size,
                    inboxes,
                    spare: Vec::with_capacity(INBOX_CAP),
                    verified: 0,
                    remote_frees: 0,
                    handoffs: 0,
                    inbox_full: 0,
                };
                const CHUNK: u64 = 1 << 16;
                let mut left = share;
                while left > 0 {
                    let n = left.min(CHUNK);
                    w.run(n);
                    left -= n;
                    if tid == 0 {
                        peak_mapped.fetch_max(poolmalloc::stats().mapped_bytes, Ordering::Relaxed);
                    }
                }
                // Keep taking hand-offs until every thread is done sending, so
                // early finishers' inboxes do not turn into local frees.
                finished.fetch_add(1, Ordering::SeqCst);
                while finished.load(Ordering::SeqCst) < threads {
                    w.drain_inbox();
                    // Sleep rather than spin: the 2-core CI machine needs
                    // the time for the threads still running.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                w.finish();
            }));
        }
        // An explicit join waits for the thread's exit, heap hand-over
        // included; the scope's implicit one returns before that, and
        // `collect()` below would race with it.
        for handle in handles {
            handle.join().unwrap();
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let corrupted = TOTALS.corrupted.load(Ordering::Relaxed);
    poolmalloc::collect();
    println!(
        "handoffs={} inbox_full_local_frees={} remote_frees={} peak_mapped_mib={:.1} peak_rss_mib={}",
        TOTALS.handoffs.load(Ordering::Relaxed),
        TOTALS.inbox_full.load(Ordering::Relaxed),
        TOTALS.remote_frees.load(Ordering::Relaxed),
        peak_mapped.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        peak_rss_kib().map_or_else(|| "?".to_string(), |k| format!("{:.1}", k as f64 / 1024.0)),
    );
    println!("poolmalloc stats after collect():\n{}", poolmalloc::stats());
    println!(
        "ops={ops} threads={threads} seed={seed:#x} blocks_verified={} corrupted={corrupted} secs={secs:.1}",
        TOTALS.verified.load(Ordering::Relaxed)
    );
    if corrupted > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
