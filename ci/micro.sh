#!/usr/bin/env bash
# The compare/ micro benches, one allocator and group per process.
#
#   bash ci/micro.sh                 then: python3 ci/micro_table.py
#
# A plain `cargo bench --bench micro` runs every allocator of a group in one
# process, in the table's order (system, jemalloc, mimalloc, poolmalloc), so
# the last one runs where the others have left their memory mapped: on the
# 1.6 GiB batch that decided the result (poolmalloc 89 ms in the full suite,
# 19-21 ms alone; mimalloc 27 and 22-26). Here each (group, allocator) pair
# starts in a fresh process, and the order of the allocators rotates from
# group to group. Environment: MICRO_GROUPS, a space-separated subset of
# the groups.
set -euo pipefail
cd "$(dirname "$0")/.."

GROUPS_TO_RUN=${MICRO_GROUPS:-"pair batch_8_512 batch_1_32768 replace_16_1024 realloc"}
ALLOCATORS=(system jemalloc mimalloc poolmalloc)

cargo bench -p poolmalloc-compare --bench micro --no-run
shift=0
for group in $GROUPS_TO_RUN; do
    for ((i = 0; i < ${#ALLOCATORS[@]}; i++)); do
        alloc=${ALLOCATORS[$(((i + shift) % ${#ALLOCATORS[@]}))]}
        echo "== $group / $alloc"
        # Criterion's filter is a regex over the id: "group/allocator[/input]"
        # or, for realloc, "group/input/allocator".
        cargo bench -p poolmalloc-compare --bench micro -- "^$group/(.*/)?$alloc(/|\$)" 2>&1 | grep -E "time:|^[a-z_0-9]+/" || true
    done
    shift=$((shift + 1))
done
