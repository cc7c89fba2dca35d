//! Checked mode (feature `checked`): invalid and double frees abort with a
//! message instead of corrupting the heap. Each bad free runs in a child
//! process (this test binary re-run with a selector), and the parent checks
//! that the child aborted and what it wrote to stderr.
#![cfg(feature = "checked")]

use poolmalloc::PoolMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

const SELECTOR: &str = "POOLMALLOC_CHECKED_CASE";

fn bad_free(case: &str) {
    let layout = Layout::from_size_align(48, 8).unwrap();
    unsafe {
        match case {
            "double" => {
                let p = A.alloc(layout);
                A.dealloc(p, layout);
                A.dealloc(p, layout);
            }
            "interior" => {
                let p = A.alloc(layout);
                A.dealloc(p.add(8), layout);
            }
            "foreign" => {
                let mut on_stack = [0u8; 64];
                A.dealloc(on_stack.as_mut_ptr(), layout);
            }
            "large" => {
                let big = Layout::from_size_align(1 << 20, 8).unwrap();
                let p = A.alloc(big);
                A.dealloc(p.add(4096), big);
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn bad_frees_abort_with_a_message() {
    if let Ok(case) = std::env::var(SELECTOR) {
        bad_free(&case);
        // Reaching here means the bad free went unnoticed.
        std::process::exit(0);
    }
    let me = std::env::current_exe().unwrap();
    for (case, message) in [
        ("double", "double free"),
        ("interior", "not the start of a block"),
        ("foreign", "not a poolmalloc block"),
        ("large", "not a live poolmalloc block"),
    ] {
        let out = Command::new(&me)
            .args(["bad_frees_abort_with_a_message", "--exact", "--nocapture", "--test-threads=1"])
            .env(SELECTOR, case)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {case}: the child survived a bad free");
        assert!(stderr.contains("poolmalloc: fatal:") && stderr.contains(message), "case {case}: stderr was {stderr}");
    }
}
