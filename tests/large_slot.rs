//! A heap's large slot (one freed large mapping its thread reuses with plain
//! stores) against the steals of other threads: `collect` and the purger
//! take every slot's mapping while the owners alloc and free large blocks in
//! a loop. A mapping held twice shows as a block whose pattern changed, or
//! as a fault when the steal unmaps it under its owner.

mod common;
use common::Block;
use poolmalloc::PoolMalloc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

/// 64 KiB and 1 MiB (both above the pool sizes), and one between, so a
/// mapping sometimes does not fit the next request and leaves the slot.
const SIZES: [usize; 3] = [64 << 10, 1 << 20, 80 << 10];

/// Allocates, fills, checks and frees large blocks until `stop`; two blocks
/// live at a time, so the slot keeps one while the other goes to the cache.
fn churn(t: usize, sizes: &[usize], stop: &AtomicBool, pairs: &AtomicUsize) {
    let mut i = 0u64;
    let mut held: Option<Block> = None;
    while !stop.load(Ordering::Relaxed) {
        let size = sizes[(i as usize + t) % sizes.len()];
        let block = Block::new(size, 8, (t as u64) << 32 | i);
        assert!(block.intact(), "a large block changed under its owner (thread {t}, pair {i})");
        if let Some(old) = held.replace(block) {
            assert!(old.intact(), "a large block changed while held (thread {t}, pair {i})");
        }
        i += 1;
    }
    pairs.fetch_add(i as usize, Ordering::Relaxed);
}

/// Threads running [`churn`] until stopped.
struct Owners {
    stop: Arc<AtomicBool>,
    pairs: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Owners {
    fn start(count: usize, sizes: &'static [usize]) -> Owners {
        let stop = Arc::new(AtomicBool::new(false));
        let pairs = Arc::new(AtomicUsize::new(0));
        let threads = (0..count)
            .map(|t| {
                let (stop, pairs) = (Arc::clone(&stop), Arc::clone(&pairs));
                std::thread::spawn(move || churn(t, sizes, &stop, &pairs))
            })
            .collect();
        Owners { stop, pairs, threads }
    }

    /// Stops and joins the threads; the pairs they made.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        self.pairs.load(Ordering::Relaxed)
    }
}

#[test]
fn slot_mappings_have_one_holder_while_collect_steals() {
    let owners = Owners::start(3, &SIZES);
    let start = Instant::now();
    let mut collects = 0;
    while start.elapsed() < Duration::from_secs(2) {
        poolmalloc::collect();
        collects += 1;
    }
    let pairs = owners.stop();
    // Both sides did run: steals landed among a great many takes and puts.
    assert!(collects > 100, "only {collects} collects");
    assert!(pairs > 10_000, "only {pairs} pairs");
    let stats = poolmalloc::stats();
    assert!(stats.large_cache_hits > 0, "the slots and the cache served no allocation");
    // collect's steals registered membarrier where the kernel offers it.
    assert_eq!(stats.large_slots_plain, private_expedited_membarrier(), "large_slots_plain");
}

/// True if the kernel offers `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (asked
/// with `MEMBARRIER_CMD_QUERY`, which registers nothing).
fn private_expedited_membarrier() -> bool {
    const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    // SAFETY: a query passes no memory.
    let commands = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0) };
    commands > 0 && commands & MEMBARRIER_CMD_PRIVATE_EXPEDITED != 0
}

/// Forks while other threads are inside their slots' takes and puts; the
/// child, whose only thread is the forking one, steals every slot (which
/// waits while an owner is mid-take: the child must not wait for threads
/// that did not survive the fork), then allocates large blocks itself.
#[test]
#[cfg_attr(
    poolmalloc_tsan,
    ignore = "ThreadSanitizer stops a child that starts a thread (the purger) after a multi-threaded fork"
)]
fn a_forked_child_steals_the_slots_of_threads_it_lost() {
    // One size: every take finds its mapping in the slot, and no thread
    // waits on the cache lock the fork holds.
    let owners = Owners::start(2, &SIZES[..1]);
    for round in 0..200 {
        // SAFETY: the child only allocates, frees and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            poolmalloc::collect();
            let blocks: Vec<Block> = (0..8).map(|i| Block::new(SIZES[i % SIZES.len()], 8, i as u64)).collect();
            let intact = blocks.iter().all(Block::intact);
            drop(blocks);
            poolmalloc::collect();
            // SAFETY: ends the child without running the parent's handlers.
            unsafe { libc::_exit(if intact { 0 } else { 1 }) };
        }
        let status = wait_at_most(pid, Duration::from_secs(20));
        assert!(libc::WIFEXITED(status), "child {round} did not exit normally (status {status:#x})");
        assert_eq!(libc::WEXITSTATUS(status), 0, "child {round}'s blocks changed");
    }
    owners.stop();
}

/// The child's exit status; kills it and fails if it hangs.
fn wait_at_most(pid: libc::pid_t, limit: Duration) -> i32 {
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(done >= 0, "waitpid failed");
        if done == pid {
            return status;
        }
        if start.elapsed() > limit {
            // SAFETY: our child, still running.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the child hung (a steal waiting for a thread the fork did not copy?)");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A seccomp filter installed after the allocator registered `membarrier`
/// makes the next steal's `membarrier` fail. The steal must not abort: it
/// closes the slot gate for good, and owners use atomic swaps from then on.
/// In a forked child, which installs the filter for all its threads.
#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(
    poolmalloc_tsan,
    ignore = "ThreadSanitizer stops a child that starts a thread (the purger) after a multi-threaded fork"
)]
fn membarrier_refused_after_registration_closes_the_gate() {
    // SAFETY: the child allocates, frees, makes system calls and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = refuse_membarrier_then_churn();
        // SAFETY: ends the child.
        unsafe { libc::_exit(code) };
    }
    let status = wait_at_most(pid, Duration::from_secs(30));
    assert!(libc::WIFEXITED(status), "the child did not exit normally (status {status:#x}; an abort?)");
    assert_eq!(libc::WEXITSTATUS(status), 0, "the child failed a step (its exit code names it)");
}

/// The child's steps; 0 if all went as expected, else the failing step.
#[cfg(target_arch = "x86_64")]
fn refuse_membarrier_then_churn() -> i32 {
    const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
    let churn_and_collect = |seed: u64| {
        for i in 0..2000u64 {
            let block = Block::new(SIZES[0], 8, seed + i);
            if !block.intact() {
                return false;
            }
        }
        poolmalloc::collect();
        true
    };
    // The first steal (collect's, or the purger's) registers membarrier.
    if !churn_and_collect(0) {
        return 1;
    }
    if !private_expedited_membarrier() || !poolmalloc::stats().large_slots_plain {
        return 2; // no membarrier here, or not registered: nothing to refuse
    }
    // Fail membarrier with EPERM; allow everything else.
    let mut filter = [
        libc::sock_filter { code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, jt: 0, jf: 0, k: 0 },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_membarrier as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: plain prctl and seccomp calls; `program` outlives them.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return 3;
        }
        let flags = libc::SECCOMP_FILTER_FLAG_TSYNC;
        if libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, &raw const program) != 0 {
            return 4;
        }
        if libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0) != -1 {
            return 5; // the filter did not take
        }
    }
    // The next steals meet the refusal; large blocks keep working.
    if !churn_and_collect(10_000) || !churn_and_collect(20_000) {
        return 6;
    }
    if poolmalloc::stats().large_slots_plain {
        return 7; // the gate should have closed for good
    }
    0
}
