#!/bin/sh
# train_attn_only_2L_8k.sh - the recipe of the second bundled model, models/attn_only_2L_8k (its card:
# models/attn_only_2L_8k/README.md): the corpus of tools/make_corpus.sh, an 8,192-token byte-level
# BPE trained on it, and a 2-layer attention-only shortformer transformer trained by mwtrain (the
# project's training core) with induction probes every 250 steps.
#
#   sh tools/train_attn_only_2L_8k.sh [WORK [OUT]]   (defaults data/attn_only_2L_8k, models/attn_only_2L_8k_new)
#
# Three phases, as the model was trained, each resuming from the checkpoint of the one before (an
# interrupted run continues from WORK/checkpoint.safetensors); one cosine learning-rate schedule over
# 8,000 steps for all three:
#   steps     0-2,500  rows of 64 tokens, each opening with a repeated random sequence
#   steps 2,500-5,000  rows of 128 tokens, 80% of them opening with a repeated random sequence (the
#                      induction heads form here, between steps 3,500 and 4,500)
#   steps 5,000-5,750  rows of 256 tokens: 40% repeated random, 20% repeating their own opening, the
#                      rest plain text
# About 35 minutes on one core of the 2-core machine it was trained on. Never writes the bundled model
# unless OUT names it.
set -eu
WORK=${1:-data/attn_only_2L_8k}
OUT=${2:-models/attn_only_2L_8k_new}
case "$WORK$OUT" in
  *[[:space:]]*) echo "train_attn_only_2L_8k.sh: WORK and OUT must not contain white space" >&2; exit 2 ;;
esac
[ -f data/corpus/train.txt ] || sh tools/make_corpus.sh data/corpus
make build/tools/mwtrain
ARGS="corpus=data/corpus work=$WORK out=$OUT name=attn_only_2L_8k vocab=8192 d_model=128 n_heads=8 d_head=16
  n_layers=2 attn_only=1 norm=none pos=shortformer n_ctx=256 batch=8 steps=8000 warmup=100 lr=5e-3 min_lr=3e-4
  wd=0.05 repeat=0.2 random=0.4 eval_every=250 log_every=50 ckpt_every=250 threads=1 resume=1"
# shellcheck disable=SC2086 # ARGS is a list of key=value words
build/tools/mwtrain $ARGS short_T=64 short_steps=2500 short_repeat=0 short_random=1.0 stop=2500
# shellcheck disable=SC2086
build/tools/mwtrain $ARGS short_T=128 short_steps=5000 short_repeat=0 short_random=0.8 stop=5000
# shellcheck disable=SC2086
build/tools/mwtrain $ARGS stop=5750
