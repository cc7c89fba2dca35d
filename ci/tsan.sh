#!/usr/bin/env bash
# ThreadSanitizer over the multi-threaded integration tests.
#
# Needs the nightly toolchain with rust-src: std is rebuilt with the
# sanitizer (-Zbuild-std), otherwise TSan cannot see std's own locks and
# reports false races inside std. No suppressions.
set -euxo pipefail
cd "$(dirname "$0")/.."
# poolmalloc_tsan: no mremap, which TSan does not intercept (see os::remap).
export RUSTFLAGS="-Zsanitizer=thread --cfg poolmalloc_tsan"
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
# The sanitizer slows everything ~10x; fewer random operations keep it short.
export POOLMALLOC_TEST_OPS="${POOLMALLOC_TEST_OPS:-50000}"
cargo +nightly test -p poolmalloc -Zbuild-std --target x86_64-unknown-linux-gnu --release \
    --test threads --test producer_consumer --test thread_exit --test std_collections --test large_cache --test large_slot \
    --test stranded
