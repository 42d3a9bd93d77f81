#!/bin/sh
# Builds and runs every benchmark bench/bench_*.c against the core library (make builds it first;
# `make bench` calls this). BUILD selects the build folder. Extra arguments go to each benchmark.
# Benchmarks print ratios against a bound measured in the same run; they do not pass or fail.
# bench_tensor runs twice: as the library allocates today, and with malloc keeping freed memory
# (see the comment at the top of bench/bench_tensor.c).
set -e
BUILD=${BUILD:-build}
CC=${CC:-cc}
# the Makefile's link libraries (the core uses all of them)
LIBS="-lopenblas -llapacke -lcjson -lutf8proc -lpcre2-8 -lsentencepiece -lstdc++ -lm -pthread"
mkdir -p "$BUILD/bench"
for src in bench/bench_*.c; do
  [ -f "$src" ] || continue
  exe="$BUILD/bench/$(basename "$src" .c)"
  $CC -O2 -g -std=gnu11 -Wall -Wextra -pthread -Icore -I/usr/include/x86_64-linux-gnu \
      -o "$exe" "$src" "$BUILD/libmwcore.a" $LIBS
  echo "== $exe $*"
  nice "$exe" "$@"
  if [ "$(basename "$src")" = bench_tensor.c ] || [ "$(basename "$src")" = bench_model.c ]; then
    echo "== $exe keep-heap threads=1 $*"
    nice "$exe" keep-heap threads=1 "$@"
  fi
done
# Lua benchmarks (bench/bench_*.lua) run in the miwb program, one BLAS thread unless they set their own
# (bench_workloads.lua runs 1 and 2 threads through mi.set_num_threads)
for src in bench/bench_*.lua; do
  [ -f "$src" ] || continue
  echo "== $BUILD/miwb $src"
  OPENBLAS_NUM_THREADS=1 nice "$BUILD/miwb" "$src"
done
