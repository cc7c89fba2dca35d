#!/usr/bin/env bash
# Seeded multi-threaded stress run of poolmalloc (examples/stress.rs): random
# allocs, frees, reallocs and cross-thread hand-offs, every block's contents
# verified. Exits nonzero on any corrupted block. Not a benchmark.
#
#   bash ci/stress.sh                  # full run: 8 threads x 50M ops
#   bash ci/stress.sh --ops 2000000    # short form, for CI
#
# On the 2-vCPU development VM (shared, so rough): the short form takes 5-10 s,
# the full run 139 s (user 75 s, sys 66 s), peak RSS 353 MiB; RSS stays flat
# through the run, so a climbing RSS means a leak.
#
# Other options: --threads N, --seed S, --max-size BYTES.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -p poolmalloc --release --example stress -- "$@"
