#!/usr/bin/env bash
# Whole-program comparison of poolmalloc with glibc, jemalloc and mimalloc.
#
#   bash ci/compare.sh [results-file]      (default target/compare/results.txt)
#
# Environment:
#   ROUNDS      rounds over every workload and allocator (default 4)
#   WORKLOADS   space-separated subset (default: all nine)
#   SCALE       work multiplier passed to each run (default 1; 0.02 for a smoke test)
#   RUN_TIMEOUT seconds before one run is killed and recorded as failed (default 600)
#   ALLOCATORS  space-separated (default: system jemalloc mimalloc poolmalloc);
#               also `poolmalloc-smallpages` (poolmalloc's binary run with
#               POOLMALLOC_HUGE_PAGES=0) and `poolmalloc-hugepages` (=2),
#               extra columns for judging the huge-page default
#
# Builds the `w_<allocator>` binaries of compare/ in release, runs them
# interleaved (for each round, each workload, every allocator one after
# another) so drift on the machine hits every allocator alike, appends one
# line per run to the results file, then prints a markdown table of medians
# (ci/compare_table.py) and writes bar charts of time and peak RSS next to the
# results (ci/chart.py).
# The order of the allocators changes each round along a Williams Latin
# square: with n allocators (n even), over n rounds each one runs once in
# each position and right after each of the others once. That matters here:
# on a VM that hands freed memory back to its host, a run's page faults
# (huge-page faults most) cost more or less depending on what ran just
# before it. (Until after 838c8c1 the order rotated by one place each round,
# which keeps the cyclic order, so within a workload each allocator nearly
# always followed the same peer.) For an odd n a square is not enough:
# rounds 1..n run its rows and rounds n+1..2n the same rows backwards, and
# the 2n rounds together are balanced (each ordered pair side by side
# twice). Use a multiple of n rounds (2n for odd n); the script warns
# otherwise.
# At scale 1 one round of the nine workloads takes about a minute on 2 cores
# with four allocators.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-4}
SCALE=${SCALE:-1}
WORKLOADS=${WORKLOADS:-"btree hashmap strings workqueue prodcons larson churn vecgrow idle"}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
ALLOCATORS=${ALLOCATORS:-"system jemalloc mimalloc poolmalloc"}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
ALLOCATOR_COUNT=$(wc -w <<<"$ALLOCATORS")
BALANCED_PERIOD=$((ALLOCATOR_COUNT % 2 == 1 ? 2 * ALLOCATOR_COUNT : ALLOCATOR_COUNT))
if ((ROUNDS % BALANCED_PERIOD != 0)); then
    echo "note: $ROUNDS rounds of $ALLOCATOR_COUNT allocators is not a balanced order (use a multiple of $BALANCED_PERIOD)" >&2
fi
RESULTS=${1:-$TARGET_DIR/compare/results.txt}

cargo build --release -p poolmalloc-compare --bins
BIN_DIR=$TARGET_DIR/release

mkdir -p "$(dirname "$RESULTS")"
STDERR_LOG=$(mktemp)
trap 'rm -f "$STDERR_LOG"' EXIT

# The machine and the versions measured, as comment lines the parsers skip.
{
    echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# machine: $(uname -srm), $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "# rustc: $(rustc --version)"
    echo "# commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
    echo "# rounds=$ROUNDS scale=$SCALE"
    echo "# workloads: $WORKLOADS"
} >"$RESULTS"

# The allocators in round $1's order: row (round-1) mod n of a Williams
# square, whose first row is 0, 1, n-1, 2, n-2, ... and each next row adds 1
# (mod n). For an even n every ordered pair of allocators is adjacent exactly
# once in n rows; for an odd n rounds n+1..2n run rows 1..n backwards, and
# every ordered pair is adjacent twice in 2n rounds.
round_order() {
    local -a all=($ALLOCATORS)
    local n=${#all[@]} period i first row
    period=$(((n % 2 == 1) ? 2 * n : n))
    row=$((($1 - 1) % period))
    local -a order=()
    for ((i = 0; i < n; i++)); do
        if ((i == 0)); then
            first=0
        elif ((i % 2 == 1)); then
            first=$(((i + 1) / 2))
        else
            first=$((n - i / 2))
        fi
        order+=("${all[(first + row) % n]}")
    done
    if ((row >= n)); then
        for ((i = n - 1; i >= 0; i--)); do echo "${order[i]}"; done
    else
        printf '%s\n' "${order[@]}"
    fi
}

for round in $(seq 1 "$ROUNDS"); do
    for workload in $WORKLOADS; do
        for alloc in $(round_order "$round"); do
            # The poolmalloc-* columns are poolmalloc's binary with a setting.
            bin=w_$alloc settings=()
            case $alloc in
            poolmalloc-smallpages) bin=w_poolmalloc settings=(POOLMALLOC_HUGE_PAGES=0) ;;
            poolmalloc-hugepages) bin=w_poolmalloc settings=(POOLMALLOC_HUGE_PAGES=2) ;;
            esac
            if line=$(env ${settings[@]+"${settings[@]}"} timeout "$RUN_TIMEOUT" "$BIN_DIR/$bin" "$workload" "$SCALE" 2>"$STDERR_LOG"); then
                line="round=$round ${line/alloc=poolmalloc /alloc=$alloc }"
            else
                rc=$?
                # Keep going: one crash should not cost the other results.
                line="round=$round workload=$workload alloc=$alloc status=failed rc=$rc"
                echo "FAILED: $alloc $workload $SCALE (exit $rc); stderr:" >&2
                tail -n 20 "$STDERR_LOG" | sed 's/^/    /' >&2
                tail -n 20 "$STDERR_LOG" | sed 's/^/# stderr: /' >>"$RESULTS"
            fi
            echo "$line" | tee -a "$RESULTS"
        done
    done
done

echo
echo "Results: $RESULTS"
echo
python3 ci/compare_table.py "$RESULTS"
python3 ci/chart.py "$RESULTS" "${RESULTS%.*}.svg"
python3 ci/chart.py --metric peak_rss_kib "$RESULTS" "${RESULTS%.*}-peak-rss.svg"
