#!/bin/sh
# train_gelu_2L_8k.sh - the recipe of the second bundled model, models/gelu_2L_8k (its card:
# models/gelu_2L_8k/README.md): the corpus of tools/make_corpus.sh, an 8,192-token byte-level BPE
# trained on it, and a 2-layer transformer with MLPs (gelu_new) and LayerNorm, shortformer
# positions, trained by mwtrain (the project's training core) with induction probes every 250 steps.
#
#   sh tools/train_gelu_2L_8k.sh [WORK [OUT]]     (defaults data/gelu_2L_8k, models/gelu_2L_8k_new)
#
# It resumes from WORK/checkpoint.safetensors when one is there (an interrupted run continues), and
# exports the model to OUT every 250 steps. Never writes the bundled model unless OUT names it.
# About 70 minutes on one core of the 2-core machine it was trained on (about 4,300 tokens/s).
set -eu
WORK=${1:-data/gelu_2L_8k}
OUT=${2:-models/gelu_2L_8k_new}
case "$WORK$OUT" in
  *[[:space:]]*) echo "train_gelu_2L_8k.sh: WORK and OUT must not contain white space" >&2; exit 2 ;;
esac
[ -f data/corpus/train.txt ] || sh tools/make_corpus.sh data/corpus
make build/tools/mwtrain
# Two phases, as the model was trained: steps 0-2,750 with 30% of rows opening with repeated random
# ids, then (resumed from the step-2,750 checkpoint) 40%, to hasten the induction heads. The
# learning-rate schedule (cosine over 10,000 steps) is the same in both.
ARGS="corpus=data/corpus work=$WORK out=$OUT name=gelu_2L_8k vocab=8192 d_model=128 n_heads=8 d_head=16
  n_layers=2 attn_only=0 d_mlp=512 norm=LN pos=shortformer n_ctx=256 batch=8 steps=10000 warmup=200
  lr=3e-3 min_lr=3e-4 wd=0.05 repeat=0.2 eval_every=250 log_every=50 ckpt_every=250 threads=1 resume=1"
# shellcheck disable=SC2086 # ARGS is a list of key=value words
build/tools/mwtrain $ARGS random=0.3 stop=2750
# shellcheck disable=SC2086
build/tools/mwtrain $ARGS random=0.4
