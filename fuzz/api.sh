#!/bin/sh
# fuzz/api.sh [CALLS] [SEEDS...]: `make fuzz-api`. Runs fuzz/api.lua (random misuse of every
# mi.*, tensor, model and cache function) under the AddressSanitizer + UndefinedBehaviorSanitizer
# build (build-asan, made by `make fuzz-api`), CALLS calls (default $FUZZ_API_CALLS or 2000) for
# each seed (default $FUZZ_API_SEEDS or "1 2"), each run in a fresh temporary folder with a time
# limit. A crash, a sanitizer report or a hang stops with status 1 and prints the call that did it
# (the last line of the run's log); keep it as a regression test in tests/fuzz/api/ (a Lua
# snippet that must finish; make test runs them all).
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
B=${BUILD:-build-asan}
CALLS=${1:-${FUZZ_API_CALLS:-2000}}
[ $# -gt 1 ] && shift && SEEDS="$*"
SEEDS=${SEEDS:-${FUZZ_API_SEEDS:-1 2}}
# big allocations fail as in a normal build (NULL, then a clean error) instead of stopping ASan
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:max_allocation_size_mb=2048:detect_leaks=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for seed in $SEEDS; do
  dir=$(mktemp -d)
  (cd "$dir" && timeout -k 10 ${FUZZ_API_TIMEOUT:-600} "$ROOT/$B/miwb" "$ROOT/fuzz/api.lua" "$seed" "$CALLS" "$dir/log" \
     >"$dir/out" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] || ! grep -q '^done$' "$dir/log"; then
    echo "fuzz-api: seed $seed: FAILED (exit $rc) at call: $(grep -v '^done$' "$dir/log" | tail -1)"
    tail -30 "$dir/out"
    echo "replay: (cd \$(mktemp -d) && $ROOT/$B/miwb $ROOT/fuzz/api.lua $seed $CALLS log)"
    status=1
  else
    tail -1 "$dir/out"
  fi
  rm -rf "$dir"
done
exit $status
