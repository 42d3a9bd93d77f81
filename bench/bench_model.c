/* bench_model.c - speed and memory of the HookedTransformer forward pass (core/model.c).
 *
 * Models with random weights: GPT-2 small's shape (12 layers, d_model 768, 12 heads, d_mlp 3072,
 * vocab 50257) at batch x pos = 1x128, 1x1024, 8x128, and the seed notebook's attention-only
 * 2-layer shape (d_model 768, 12 heads, vocab 50278, no normalization, shortformer,
 * use_attn_result) at 10x101, and a Llama-style model of TinyLlama's layer shapes at 2 layers
 * (d_model 2048, 32 heads of 64 with 4 key/value heads, gated silu MLP of 5632, RMSNorm, rotary,
 * vocab 32000) at 1x128 and 4x128, also forward + backward.
 *
 * Each time is reported as a ratio to a bound measured in the same run: the same matrix
 * products the forward pass performs (per layer: x@W_Q, x@W_K, x@W_V, per (batch, head)
 * q@k^T and pattern@v, the output projection (per head when use_attn_result), the two MLP
 * products; then the unembedding) issued straight to cblas_sgemm on preallocated buffers.
 * Times are the minimum over several runs, as wall time and as process CPU time (user + system
 * of every thread, page faults included): on a machine shared with other jobs the CPU time does
 * not count waiting for a core, so its ratios are the stable ones (run with OPENBLAS_NUM_THREADS=1
 * so that idle BLAS threads spinning between calls do not count either).
 * Goals: forward <= 1.3x, run_with_cache of every hook <= 1.6x, and a forward keeping its
 * activations plus the backward pass of the loss, with every activation and gradient cached
 * (run_with_cache{incl_bwd = true}), <= 3.5x the forward's bound.
 *
 * Every shape runs once per thread count (threads=1,2 by default: mw_set_num_threads, which sets
 * OpenBLAS's count too); with 2 threads read the wall ratios (CPU time then also counts OpenBLAS's
 * threads spinning between calls). "forward, last logits held" is a forward while the previous
 * call's logits are still alive (what a Lua loop does until the collector reaches them): a fresh
 * [B,P,V] buffer each call. "init" times mw_model_new (random weights) against writing a fresh
 * buffer of the same size once (memory speed).
 *
 * "cache" here is what run_with_cache does in C: every delivered activation is cloned into a
 * new tensor kept until the pass ends. Memory: the bytes a cache holds for the full set of hooks,
 * for the patterns only, and for one hook, against the growth of live tensor memory.
 */
#include <cblas.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_clock.h"
#include "model.h"
#include "parallel.h"

static double last_cpu; /* CPU seconds of the last timed call */

/* ---------------------------------------------------------------- the bound: bare sgemms */
typedef struct { float *x, *q, *k, *v, *s, *z, *o, *h1, *h2, *lg; } bound_bufs;

static void gemm(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K, int tb) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, 0.0f,
                C, ldc);
}

static void bound_run(const mw_model *m, bound_bufs *b, int B, int P) {
    const mw_config *c = &m->cfg;
    int d = (int)c->d_model, H = (int)c->n_heads, dh = (int)c->d_head, Hd = H * dh, M = (int)c->d_mlp,
        V = (int)c->d_vocab_out, N = B * P;
    int G = c->n_key_value_heads > 0 ? (int)c->n_key_value_heads : H, Gd = G * dh, per = H / G;
    for (int l = 0; l < c->n_layers; l++) {
        const float *Wq = (const float *)m->w.W_Q.storage->data + (size_t)l * d * Hd;
        const float *Wk = (const float *)m->w.W_K.storage->data + (size_t)l * d * Gd;
        const float *Wv = (const float *)m->w.W_V.storage->data + (size_t)l * d * Gd;
        const float *Wo = (const float *)m->w.W_O.storage->data + (size_t)l * Hd * d;
        gemm(b->q, Hd, b->x, d, Wq, Hd, N, Hd, d, 0);
        gemm(b->k, Gd, b->x, d, Wk, Gd, N, Gd, d, 0);
        gemm(b->v, Gd, b->x, d, Wv, Gd, N, Gd, d, 0);
        for (int bb = 0; bb < B; bb++)
            for (int h = 0; h < H; h++) {
                gemm(b->s, P, b->q + (size_t)bb * P * Hd + h * dh, Hd, b->k + (size_t)bb * P * Gd + h / per * dh, Gd, P, P,
                     dh, 1);
                gemm(b->z + (size_t)bb * P * Hd + h * dh, Hd, b->s, P, b->v + (size_t)bb * P * Gd + h / per * dh, Gd, P, dh,
                     P, 0);
            }
        if (c->use_attn_result) {
            for (int h = 0; h < H; h++) gemm(b->o + h * d, H * d, b->z + h * dh, Hd, Wo + (size_t)h * dh * d, d, N, d, dh, 0);
        } else {
            gemm(b->o, d, b->z, Hd, Wo, d, N, d, Hd, 0);
        }
        if (!c->attn_only) {
            if (c->gated_mlp)
                gemm(b->h1, M, b->x, d, (const float *)m->w.W_gate.storage->data + (size_t)l * d * M, M, N, M, d, 0);
            gemm(b->h1, M, b->x, d, (const float *)m->w.W_in.storage->data + (size_t)l * d * M, M, N, M, d, 0);
            gemm(b->x, d, b->h1, M, (const float *)m->w.W_out.storage->data + (size_t)l * M * d, d, N, d, M, 0);
        }
    }
    gemm(b->lg, V, b->x, d, m->w.W_U.storage->data, V, N, V, (int)d, 0);
}

/* ---------------------------------------------------------------- the cache's deliver */
typedef struct { mw_tensor t[4096]; int n; int64_t bytes; } cache;

static int cache_deliver(void *ud, int id, int layer, mw_tensor *act) {
    (void)id; (void)layer;
    cache *c = ud;
    if (c->n >= 4096) return mw_seterr("bench cache full");
    if (mw_tensor_clone(&c->t[c->n], act)) return -1;
    c->bytes += mw_tensor_numel(act) * 4;
    c->n++;
    return 0;
}
static void cache_clear(cache *c) {
    for (int i = 0; i < c->n; i++) mw_tensor_release(&c->t[i]);
    c->n = 0;
    c->bytes = 0;
}

static double time_forward(mw_model *m, const mw_tensor *tok, const uint8_t *want, cache *c, int64_t *peak) {
    mw_forward_opts o;
    mw_forward_opts_default(&o, m);
    o.tokens = tok;
    o.want = want;
    o.deliver = want ? cache_deliver : NULL;
    o.ud = c;
    mw_forward_out out;
    double t0 = now(), c0 = cpu();
    if (mw_model_forward(m, &o, &out)) { fprintf(stderr, "forward: %s\n", mw_error()); exit(1); }
    if (peak) *peak = mw_storage_live_bytes();
    mw_forward_out_release(&out);
    if (c) cache_clear(c); /* dropping the cache is part of its cost */
    last_cpu = cpu() - c0;
    return now() - t0;
}

/* a forward while the previous call's logits are still held (released after the call) */
static double time_forward_held(mw_model *m, const mw_tensor *tok, mw_forward_out *prev) {
    mw_forward_opts o;
    mw_forward_opts_default(&o, m);
    o.tokens = tok;
    mw_forward_out out;
    double t0 = now(), c0 = cpu();
    if (mw_model_forward(m, &o, &out)) { fprintf(stderr, "forward: %s\n", mw_error()); exit(1); }
    mw_forward_out_release(prev);
    *prev = out;
    last_cpu = cpu() - c0;
    return now() - t0;
}

/* forward keeping its activations + backward of the mean loss, every activation and every
 * gradient (want) cloned into the cache, as run_with_cache{incl_bwd = true} does */
static double time_backward(mw_model *m, const mw_tensor *tok, const uint8_t *want, const uint8_t *gwant, cache *c) {
    mw_forward_opts o;
    mw_forward_opts_default(&o, m);
    o.tokens = tok;
    o.want_logits = 0;
    o.want_loss = 1;
    o.keep_activations = 1;
    o.want = want;
    o.deliver = cache_deliver;
    o.ud = c;
    mw_forward_out out;
    double t0 = now(), c0 = cpu();
    if (mw_model_forward(m, &o, &out)) { fprintf(stderr, "forward: %s\n", mw_error()); exit(1); }
    mw_backward_opts b;
    memset(&b, 0, sizeof b);
    b.want = gwant;
    b.deliver = cache_deliver;
    b.ud = c;
    if (mw_model_backward(m, &b)) { fprintf(stderr, "backward: %s\n", mw_error()); exit(1); }
    mw_forward_out_release(&out);
    cache_clear(c);
    last_cpu = cpu() - c0;
    return now() - t0;
}

static const char *only; /* argv[2]: run only this "BxP" shape */

static void bench_shape(mw_model *m, const char *label, int B, int P, int reps) {
    const mw_config *c = &m->cfg;
    char tag[32];
    snprintf(tag, sizeof tag, "%dx%d", B, P);
    if (only && strcmp(only, tag) != 0) return;
    int64_t sh[2] = {B, P};
    mw_tensor tok;
    mw_tensor_randint(&tok, NULL, 0, c->d_vocab, 2, sh);
    size_t N = (size_t)B * P, d = c->d_model, Hd = c->n_heads * c->d_head, V = c->d_vocab_out;
    bound_bufs b;
    b.x = calloc(N * d, 4); b.q = calloc(N * Hd, 4); b.k = calloc(N * Hd, 4); b.v = calloc(N * Hd, 4);
    b.z = calloc(N * Hd, 4); b.s = calloc((size_t)P * P, 4); b.o = calloc(N * c->n_heads * d, 4);
    b.h1 = calloc(N * (c->d_mlp ? c->d_mlp : 1), 4); b.h2 = NULL; b.lg = calloc(N * V, 4);
    for (size_t i = 0; i < N * d; i++) b.x[i] = 0.01f * (float)(i % 97);

    uint8_t *all = malloc((size_t)mw_hook_slots(m));
    memset(all, 1, (size_t)mw_hook_slots(m));
    uint8_t *pat = calloc((size_t)mw_hook_slots(m), 1);
    for (int l = 0; l < c->n_layers; l++) pat[mw_hook_slot(m, MW_HOOK_PATTERN, l)] = 1;
    uint8_t *one = calloc((size_t)mw_hook_slots(m), 1);
    one[mw_hook_slot(m, MW_HOOK_RESID_POST, 0)] = 1;
    static cache cc;

    /* every hook point has a gradient */
    uint8_t *gall = malloc((size_t)mw_hook_slots(m));
    memset(gall, 1, (size_t)mw_hook_slots(m));

    /* warm up: buffers sized, pages touched, for every path */
    int bwd = mw_model_backward_supported(c) == 0;
    time_forward(m, &tok, NULL, NULL, NULL);
    time_forward(m, &tok, all, &cc, NULL);
    if (bwd) time_backward(m, &tok, all, gall, &cc);
    bound_run(m, &b, B, P);
    double tb = 1e30, tf = 1e30, tc = 1e30, cb = 1e30, cf = 1e30, ccc = 1e30, tg = 1e30, cg = 1e30, th = 1e30, ch = 1e30;
    mw_forward_out held;
    memset(&held, 0, sizeof held);
    for (int r = 0; r < reps; r++) {
        double t = time_forward_held(m, &tok, &held);
        if (r > 0 && t < th) th = t;                     /* the first call has nothing held */
        if (r > 0 && last_cpu < ch) ch = last_cpu;
    }
    mw_forward_out_release(&held);
    for (int r = 0; r < reps; r++) {
        double t0 = now(), c0 = cpu();
        bound_run(m, &b, B, P);
        double t = now() - t0, u = cpu() - c0;
        if (t < tb) tb = t;
        if (u < cb) cb = u;
        t = time_forward(m, &tok, NULL, NULL, NULL);
        if (t < tf) tf = t;
        if (last_cpu < cf) cf = last_cpu;
        t = time_forward(m, &tok, all, &cc, NULL);
        if (t < tc) tc = t;
        if (last_cpu < ccc) ccc = last_cpu;
        if (!bwd) continue;
        t = time_backward(m, &tok, all, gall, &cc);
        if (t < tg) tg = t;
        if (last_cpu < cg) cg = last_cpu;
    }
    printf("model %-20s %2dx%-4d %d thr | wall: bound %7.1f ms, forward %.2fx, run_with_cache(all) %.2fx | "
           "cpu: bound %7.1f ms, forward %.2fx (goal <= 1.3), run_with_cache(all) %.2fx (goal <= 1.6)\n",
           label, B, P, mw_get_num_threads(), tb * 1e3, tf / tb, tc / tb, cb * 1e3, cf / cb, ccc / cb);
    if (reps > 1)
        printf("  forward, last logits held: wall %.2fx, cpu %.2fx\n", th / tb, ch / cb);
    if (bwd)
        printf("  forward + backward, every activation and gradient cached (run_with_cache{incl_bwd}): "
               "wall %.2fx, cpu %.2fx the forward's bound (goal <= 3.5)\n", tg / tb, cg / cb);
    else
        printf("  forward + backward: not measured (%s)\n", mw_error());
    free(gall);

    /* memory: live tensor bytes at the end of a pass (model buffers + cache + outputs), minus
     * what a pass without cache holds */
    int64_t base, full, pats, single;
    mw_model_trim(m);
    time_forward(m, &tok, NULL, NULL, &base);
    int64_t bytes_full, bytes_pat, bytes_one;
    mw_forward_opts o;
    (void)o;
    mw_model_trim(m);
    {
        mw_forward_opts_default(&o, m);
        o.tokens = &tok; o.want = all; o.deliver = cache_deliver; o.ud = &cc;
        mw_forward_out out;
        mw_model_forward(m, &o, &out);
        full = mw_storage_live_bytes(); bytes_full = cc.bytes;
        mw_forward_out_release(&out); cache_clear(&cc);
    }
    mw_model_trim(m);
    {
        mw_forward_opts_default(&o, m);
        o.tokens = &tok; o.want = pat; o.deliver = cache_deliver; o.ud = &cc;
        mw_forward_out out;
        mw_model_forward(m, &o, &out);
        pats = mw_storage_live_bytes(); bytes_pat = cc.bytes;
        mw_forward_out_release(&out); cache_clear(&cc);
    }
    mw_model_trim(m);
    {
        mw_forward_opts_default(&o, m);
        o.tokens = &tok; o.want = one; o.deliver = cache_deliver; o.ud = &cc;
        mw_forward_out out;
        mw_model_forward(m, &o, &out);
        single = mw_storage_live_bytes(); bytes_one = cc.bytes;
        mw_forward_out_release(&out); cache_clear(&cc);
    }
    printf("  memory over a pass without cache (%.1f MB live): full cache +%.1f MB (holds %.1f MB), "
           "patterns only +%.1f MB (holds %.1f MB), one resid_post +%.2f MB (holds %.2f MB)\n",
           base / 1e6, (full - base) / 1e6, bytes_full / 1e6, (pats - base) / 1e6, bytes_pat / 1e6,
           (single - base) / 1e6, bytes_one / 1e6);
    free(all); free(pat); free(one);
    free(b.x); free(b.q); free(b.k); free(b.v); free(b.z); free(b.s); free(b.o); free(b.h1); free(b.lg);
    mw_tensor_release(&tok);
}

static void bench_models(int reps);

int main(int argc, char **argv) {
    /* arguments (bench/run.sh passes the same ones to every benchmark; unknown ones are ignored):
     *   reps=N      runs per measurement (minimum taken), default 3
     *   only=BxP    just that shape, e.g. only=1x128
     *   threads=1,2 the thread counts to run (mw_set_num_threads), default 1,2
     *   keep-heap   freed memory stays in the process, as in the miwb program (lmodule.c's
     *               keep_heap): malloc never returns it, and storages of 8 MB and more are kept
     *               for reuse (up to 4 GB); shows what cache clones cost without re-faulting pages */
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines appear as each shape finishes */
    int reps = 3, keep_heap = 0;
    const char *threads = "1,2";
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "reps=", 5)) reps = atoi(argv[i] + 5);
        else if (!strncmp(argv[i], "threads=", 8)) threads = argv[i] + 8;
        else if (!strncmp(argv[i], "only=", 5)) only = argv[i] + 5;
        else if (!strcmp(argv[i], "keep-heap")) keep_heap = 1;
    }
    if (reps < 1) reps = 1;
    if (keep_heap && !(mallopt(M_MMAP_MAX, 0) && mallopt(M_TRIM_THRESHOLD, INT32_MAX))) {
        fprintf(stderr, "bench_model: mallopt failed\n");
        return 1;
    }
    if (keep_heap) mw_storage_keep_freed((int64_t)4 << 30);
    printf("bench_model: min of %d runs%s\n", reps, keep_heap ? "; malloc keeps freed memory (keep-heap)" : "");
    for (const char *tp = threads; *tp;) {
        int t = atoi(tp);
        if (t < 1) t = 1;
        mw_set_num_threads(t);
        bench_models(reps);
        tp = strchr(tp, ',');
        if (!tp) break;
        tp++;
    }
    return 0;
}

/* fresh memory of n floats written once, as the bound of filling it with random weights */
static double time_touch(int64_t n) {
    double t0 = now();
    mw_storage *s = mw_storage_new(MW_F32, n);
    float *p = s->data;
    for (int64_t i = 0; i < n; i++) p[i] = 1.0f;
    mw_storage_release(s);
    return now() - t0;
}

static void bench_models(int reps) {
    mw_config c;
    mw_config_default(&c);
    c.d_model = 768; c.d_head = 64; c.n_heads = 12; c.n_layers = 12; c.n_ctx = 1024; c.d_vocab = 50257;
    c.act_fn = MW_ACT_GELU_NEW; c.seed = 1;
    double ti = now();
    mw_model *m = mw_model_new(&c);
    ti = now() - ti;
    if (!m) { fprintf(stderr, "%s\n", mw_error()); exit(1); }
    {
        double tt = time_touch(mw_model_nparams(m));
        printf("init gpt2-small (random, %lld parameters) %d thr: %.0f ms, %.2fx writing fresh memory of that size once (%.0f ms)\n",
               (long long)mw_model_nparams(m), mw_get_num_threads(), ti * 1e3, ti / tt, tt * 1e3);
    }
    bench_shape(m, "gpt2-small (random)", 1, 128, reps);
    bench_shape(m, "gpt2-small (random)", 8, 128, reps);
    bench_shape(m, "gpt2-small (random)", 1, 1024, reps > 2 ? 2 : reps);
    mw_model_free(m);
    mw_config_default(&c);
    c.d_model = 768; c.d_head = 64; c.n_heads = 12; c.n_layers = 2; c.n_ctx = 2048; c.d_vocab = 50278;
    c.attn_only = 1; c.normalization_type = MW_NORM_NONE; c.positional_embedding_type = MW_POS_SHORTFORMER;
    c.use_attn_result = 1; c.seed = 398;
    m = mw_model_new(&c);
    if (!m) { fprintf(stderr, "%s\n", mw_error()); exit(1); }
    bench_shape(m, "attn-only 2L (seed)", 10, 101, reps);
    mw_model_free(m);
    mw_config_default(&c);
    c.d_model = 2048; c.d_head = 64; c.n_heads = 32; c.n_key_value_heads = 4; c.n_layers = 2; c.n_ctx = 2048;
    c.d_vocab = 32000; c.d_mlp = 5632; c.act_fn = MW_ACT_SILU; c.gated_mlp = 1; c.normalization_type = MW_NORM_RMS;
    c.final_rms = 1; c.positional_embedding_type = MW_POS_ROTARY; c.seed = 1;
    m = mw_model_new(&c);
    if (!m) { fprintf(stderr, "%s\n", mw_error()); exit(1); }
    bench_shape(m, "llama-style 2L", 1, 128, reps);
    bench_shape(m, "llama-style 2L", 4, 128, reps);
    mw_model_free(m);
}
