//! fork() from a process whose other threads are allocating: the child can
//! allocate and free, and exits 0.

mod common;
use common::Block;
use poolmalloc::PoolMalloc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

/// Runs in the child: allocate across classes and large sizes, verify, free.
/// Returns the exit status. No printing: std's locks may be held.
fn child_work(round: usize) -> i32 {
    let blocks: Vec<Block> = (0..300).map(|i| Block::new(1 + (i * 211 + round) % 70_000, 8, i as u64)).collect();
    if !blocks.iter().all(Block::intact) {
        return 1;
    }
    drop(blocks);
    let s: String = (0..100).map(|i| i.to_string()).collect();
    if s.len() != 190 {
        return 2;
    }
    // Cross-thread work in the child too.
    let handle = std::thread::spawn(|| (0..1000).map(|i| vec![i as u8; i % 500]).collect::<Vec<_>>());
    let vs = handle.join().map_err(|_| ()).unwrap_or_default();
    if vs.len() != 1000 {
        return 3;
    }
    0
}

#[test]
fn fork_while_threads_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut i = 0u64;
                let mut keep = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let b = Block::new(1 + (i as usize * 131 + t) % 50_000, 8, i);
                    keep.push(b);
                    if keep.len() > 200 {
                        keep.drain(..100);
                    }
                    if i % 1000 == 0 {
                        poolmalloc::collect();
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for round in 0..200 {
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = child_work(round);
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child {round} did not exit normally (status {status:#x})");
        assert_eq!(libc::WEXITSTATUS(status), 0, "child {round} failed");
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
}
