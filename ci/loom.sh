#!/usr/bin/env bash
# Loom model checks of the lock-free code (src/remote/loom_tests.rs): the
# remote-free protocol on real pools and pending lists, the thread-exit
# hand-over of a heap record (adopted by a new thread, or collected by the
# purger, which must be woken for frees that land after its pass), the
# slow-path Lock (its futex modelled by a loom Mutex and Condvar), the
# purger's sleep/wake handshake, the hand-over of a kept pool's pages
# between its owner and the purger, and the purge of a stranded pool (every
# block freed by other threads) against its owner's take. Loom runs each
# model under every interleaving up to LOOM_MAX_PREEMPTIONS preemptions, with
# the stale reads the atomics' orderings allow, and reports lost or
# duplicated blocks, races on blocks handed between threads, and lost
# wake-ups (as deadlocks).
#
# About a minute of checking here (2 cores) at 3 preemptions, plus 40 s to
# build loom the first time; 2 preemptions take 5 s, 4 ten times more. Its
# own target directory keeps `--cfg loom` from thrashing the normal build.
set -euxo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
# --nocapture shows how many executions each model explored.
cargo test -p poolmalloc --release --lib loom -- --nocapture
