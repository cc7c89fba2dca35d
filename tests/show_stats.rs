//! `POOLMALLOC_SHOW_STATS=1` prints the statistics to stderr at exit. The
//! test re-runs its own binary with the variable set and reads the child's
//! stderr.

use poolmalloc::PoolMalloc;
use std::process::Command;

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

const CHILD: &str = "POOLMALLOC_SHOW_STATS_CHILD";

#[test]
fn the_report_is_printed_at_exit() {
    if std::env::var(CHILD).is_ok() {
        // The child: allocate something and exit normally.
        let v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        assert_eq!(v.len(), 1000);
        return;
    }
    let me = std::env::current_exe().unwrap();
    let run = |show: &str| {
        Command::new(&me)
            .args(["the_report_is_printed_at_exit", "--exact", "--test-threads=1"])
            .env(CHILD, "1")
            .env("POOLMALLOC_SHOW_STATS", show)
            .output()
            .unwrap()
    };
    let shown = run("1");
    assert!(shown.status.success());
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(stderr.contains("poolmalloc statistics at exit:"), "stderr: {stderr}");
    assert!(stderr.contains("mapped bytes") && stderr.contains("thread heaps"), "stderr: {stderr}");
    let quiet = run("0");
    assert!(quiet.status.success());
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("poolmalloc statistics"));
}
