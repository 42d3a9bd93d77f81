#!/bin/sh
# fuzz/run.sh [SECONDS_PER_TARGET]: builds every fuzz target (fuzz/fuzz_*.c) with clang's
# libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer into build-fuzz/, then runs each for
# SECONDS_PER_TARGET (default $FUZZ_SECONDS or 6; 6 targets = 36 s) with fuzz/TARGET.dict when
# there is one, starting from seeds taken from
# the test fixtures and the kept corpus (tests/fuzz/TARGET/). A crash stops the run with status 1
# and leaves the input in fuzz/out/TARGET-crash-*; keep it as a regression test by copying it to
# tests/fuzz/TARGET/ (make test replays that folder: tests/c/test_fuzz_corpus.c and
# tests/lua/test_pretrained.lua for config).
set -e
cd "$(dirname "$0")/.."
SECS=${1:-${FUZZ_SECONDS:-6}}
CLANG=${FUZZ_CC:-clang-14}
CLANGXX=${FUZZ_CXX:-clang++-14}
B=build-fuzz
command -v "$CLANG" >/dev/null || { echo "fuzz: $CLANG not found (Debian package clang-14)"; exit 1; }
mkdir -p $B/obj $B/corpus fuzz/out
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-O1 -g -std=gnu11 -I/usr/include/lua5.4 -I/usr/include/x86_64-linux-gnu -Icore -Ivendor -Ilua -Ifuzz $SAN"
LIBS="-lopenblas -llapacke -lcjson -lutf8proc -lzmq -lcrypto -lpcre2-8 -lsentencepiece -lstdc++ -lm -pthread"

# the library and the Lua binding, instrumented for coverage
objs=""
for src in core/*.c lua/*.c; do
  [ "$src" = lua/main.c ] && continue
  o=$B/obj/$(echo "$src" | tr / _ | sed 's/\.c$/.o/')
  if [ ! -f "$o" ] || [ "$src" -nt "$o" ]; then
    $CLANG $CFLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$o"
  fi
  objs="$objs $o"
done
for src in core/*.cc; do # SentencePiece's C interface (C++)
  o=$B/obj/$(echo "$src" | tr / _ | sed 's/\.cc$/.o/')
  if [ ! -f "$o" ] || [ "$src" -nt "$o" ]; then
    $CLANGXX -O1 -g -std=c++17 -Icore $SAN -fno-sanitize=vptr -fsanitize=fuzzer-no-link -c "$src" -o "$o"
  fi
  objs="$objs $o"
done
lua5.4 tools/embed.lua $B/lua_embed.c lua/miwb/*.lua
$CLANG $CFLAGS -c $B/lua_embed.c -o $B/obj/lua_embed.o
objs="$objs $B/obj/lua_embed.o"

# seeds: fixtures and the kept corpus
mkdir -p $B/seeds/safetensors $B/seeds/checkpoint $B/seeds/pickle $B/seeds/tokenizer $B/seeds/config $B/seeds/kernel
cp tests/fixtures/ckpt/*.safetensors $B/seeds/safetensors/
cp tests/fixtures/ckpt/*.safetensors tests/fixtures/ckpt/*.pt tests/fixtures/ckpt/*.pth $B/seeds/checkpoint/
/usr/bin/python3 - "$B/seeds/pickle" tests/fixtures/ckpt/*.pt tests/fixtures/ckpt/*.pth <<'EOF'
import os, sys, zipfile
out = sys.argv[1]
for p in sys.argv[2:]:
    try:
        z = zipfile.ZipFile(p)
    except zipfile.BadZipFile:
        continue
    for n in z.namelist():
        if n.endswith("/data.pkl"):
            open(os.path.join(out, os.path.basename(p) + ".pkl"), "wb").write(z.read(n))
EOF
# fuzz_tokenizer.c reads a first byte 0 as "the rest is a tokenizer.json"
{ printf '\000'; cat fuzz/seeds/tokenizer_small.json; } > $B/seeds/tokenizer/small.json
{ printf '\000'; cat fuzz/seeds/tokenizer_steps.json; } > $B/seeds/tokenizer/steps.json
cp fuzz/seeds/tokenizer_tiny.spm $B/seeds/tokenizer/tiny.spm
cp tests/fixtures/hf_gpt2/config.json $B/seeds/config/hf.json
[ -f ../shared/assets/gpt2/config.json ] && cp ../shared/assets/gpt2/config.json $B/seeds/config/gpt2.json
printf '{"d_model": 768, "d_head": 64, "n_heads": 12, "n_layers": 2, "n_ctx": 2048, "d_vocab": 50278, "attn_only": true, "normalization_type": null}' > $B/seeds/config/tl.json

status=0
for src in fuzz/fuzz_*.c; do
  t=$(basename "$src" .c); t=${t#fuzz_}
  bin=$B/fuzz_$t
  $CLANG $CFLAGS -fsanitize=fuzzer "$src" $objs -o "$bin" -llua5.4 $LIBS
  mkdir -p $B/corpus/$t tests/fuzz/$t
  echo "== fuzz $t for ${SECS}s"
  dict=""; [ -f fuzz/$t.dict ] && dict="-dict=fuzz/$t.dict"
  if ! "$bin" $dict -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix=fuzz/out/$t- $B/corpus/$t $B/seeds/$t tests/fuzz/$t \
        $( [ -d fuzz/corpus/$t ] && echo fuzz/corpus/$t ) >$B/fuzz_$t.log 2>&1; then
    tail -40 $B/fuzz_$t.log
    echo "fuzz $t: FAILED (input kept in fuzz/out/; copy it to tests/fuzz/$t/ once fixed)"
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::new_units_added" $B/fuzz_$t.log | tr '\n' ' '
    echo
  fi
done
exit $status
