#!/bin/sh
# Runs every C test program (build/tests/test_*) and every Lua test file (tests/lua/test_*.lua,
# run by the miwb program), then prints the total as "N passed, N failed".
# A program that crashes or exits non-zero without reporting a failure counts as one failure.
BUILD=${BUILD:-build}
log=$(mktemp); trap 'rm -f "$log"' EXIT
passed=0; failed=0
run() {
  name=$1; shift
  echo "== $name"
  "$@" >"$log" 2>&1; rc=$?
  cat "$log"
  p=$(grep -c '^ok - ' "$log"); f=$(grep -c '^FAIL - ' "$log")
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAIL - $name exited with status $rc"; f=1
  fi
  passed=$((passed + p)); failed=$((failed + f))
}
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] && run "$t" "$t"
done
for t in tests/lua/test_*.lua; do
  [ -f "$t" ] && LUA_PATH="tests/lua/?.lua;;" MIWB_BUILD="$BUILD" run "$t" "$BUILD/miwb" "$t"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
