/* bench_generate.c - speed of generation (core/generate.c over core/model.c's forward pass).
 *
 * GPT-2 small's shape with random weights (12 layers, d_model 768, 12 heads, d_mlp 3072, vocab
 * 50257): greedy generation of 64 new tokens from a 16-token prompt, batch 1, with the key/value
 * cache and without it (the whole sequence again for every token), in tokens per second.
 *
 * Each time is also reported as a ratio to a bound measured in the same run: the same matrix
 * products the generation performs, issued straight to cblas_sgemm on preallocated buffers. With
 * the cache: the prompt's forward, then per token one position through every layer (x@W_Q, x@W_K,
 * x@W_V, per head q@K^T and pattern@V against every cached position, the output projection, the
 * two MLP products) and the unembedding of that one position. Without it: per token the whole
 * forward over the sequence so far, unembedding every position (as a forward returning logits).
 * Times are wall and process CPU (every thread; see bench_model.c), for 1 and 2 OpenBLAS threads.
 * With the cache a token's products are one row each, so two more bounds are printed: the same
 * products as cblas_sgemv (OpenBLAS's matrix-vector product, 2-4x faster than its sgemm for one row),
 * and the memory floor: the bytes of every weight matrix, read once per token, over this machine's
 * read bandwidth measured in the same run (an sgemv over 512 MB, more than the last-level cache).
 *
 * Arguments: tokens=N (new tokens, default 64), prompt=N (default 16), reps=N (minimum taken,
 * default 1), no-uncached (skip the slow path). bench/run.sh passes its arguments to every
 * benchmark; unknown ones are ignored.
 */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "generate.h"
#include "bench_clock.h"
#include "model.h"

void openblas_set_num_threads(int n); /* OpenBLAS's own; not in every cblas.h */


/* ---------------------------------------------------------------- the bound: bare sgemms */
typedef struct { float *x, *q, *k, *v, *s, *z, *o, *h1, *lg; } bufs;

static int use_gemv; /* the bound's one-row products as cblas_sgemv (what OpenBLAS does fastest) */

static void gemm(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K, int tb) {
    if (use_gemv && M == 1) {
        cblas_sgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? N : K, tb ? K : N, 1.0f, B, ldb, A, 1, 0.0f,
                    C, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, 0.0f,
                C, ldc);
}

/* the products of one forward over P new positions of each of B rows reading Pk keys (Pk == P
 * without a cache), unembedding R rows */
static void bound_pass(const mw_model *m, bufs *b, int B, int P, int Pk, int R) {
    const mw_config *c = &m->cfg;
    int d = (int)c->d_model, H = (int)c->n_heads, dh = (int)c->d_head, Hd = H * dh, M = (int)c->d_mlp,
        V = (int)c->d_vocab_out, N = B * P;
    for (int l = 0; l < c->n_layers; l++) {
        gemm(b->q, Hd, b->x, d, (const float *)m->w.W_Q.storage->data + (size_t)l * d * Hd, Hd, N, Hd, d, 0);
        gemm(b->k, Hd, b->x, d, (const float *)m->w.W_K.storage->data + (size_t)l * d * Hd, Hd, N, Hd, d, 0);
        gemm(b->v, Hd, b->x, d, (const float *)m->w.W_V.storage->data + (size_t)l * d * Hd, Hd, N, Hd, d, 0);
        for (int bb = 0; bb < B; bb++)
            for (int h = 0; h < H; h++) {
                gemm(b->s, Pk, b->q + (size_t)bb * P * Hd + h * dh, Hd, b->k + (size_t)bb * Pk * Hd + h * dh, Hd, P, Pk,
                     dh, 1);
                gemm(b->z + (size_t)bb * P * Hd + h * dh, Hd, b->s, Pk, b->v + (size_t)bb * Pk * Hd + h * dh, Hd, P, dh,
                     Pk, 0);
            }
        gemm(b->o, d, b->z, Hd, (const float *)m->w.W_O.storage->data + (size_t)l * Hd * d, d, N, d, Hd, 0);
        gemm(b->h1, M, b->x, d, (const float *)m->w.W_in.storage->data + (size_t)l * d * M, M, N, M, d, 0);
        gemm(b->x, d, b->h1, M, (const float *)m->w.W_out.storage->data + (size_t)l * M * d, d, N, d, M, 0);
    }
    gemm(b->lg, V, b->x, d, m->w.W_U.storage->data, V, R, V, d, 0);
}

static void bound_generate(const mw_model *m, bufs *b, int P, int n, int cached) {
    for (int t = 0; t < n; t++) {
        if (cached) bound_pass(m, b, 1, t ? 1 : P, P + t, 1);
        else bound_pass(m, b, 1, P + t, P + t, P + t);
    }
}

/* the floor no float32 implementation can pass: every weight matrix is read from memory once per
 * token (the model is ~10x the last-level cache), at the read bandwidth of this machine, measured
 * here as the best of 3 sums of a buffer larger than the cache by `threads` threads' sgemv */
static double read_bandwidth(int threads) {
    size_t rows = 4096, cols = 32768; /* 512 MB */
    float *a = malloc(rows * cols * sizeof(float)), *x = malloc(rows * sizeof(float)), *y = malloc(cols * sizeof(float));
    if (!a || !x || !y) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (size_t i = 0; i < rows * cols; i++) a[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < rows; i++) x[i] = 1.0f;
    openblas_set_num_threads(threads);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)rows, (int)cols, 1.0f, a, (int)cols, x, 1, 0.0f, y, 1);
        double t = now() - t0;
        if (t < best) best = t;
    }
    free(a); free(x); free(y);
    return rows * cols * sizeof(float) / best;
}

/* bytes of the weights one generated token reads: every layer's matrices and the unembedding */
static double weight_bytes(const mw_model *m) {
    const mw_config *c = &m->cfg;
    double d = c->d_model, Hd = c->n_heads * c->d_head, M = c->d_mlp;
    return 4.0 * (c->n_layers * (4 * d * Hd + 2 * d * M) + d * c->d_vocab_out);
}

static int generate(mw_model *m, const mw_tensor *prompt, int n, int cached, int64_t *kv_bytes) {
    mw_generate_opts g;
    memset(&g, 0, sizeof g);
    g.tokens = prompt;
    g.max_new_tokens = n;
    g.use_past_kv_cache = cached;
    mw_tensor out;
    if (mw_generate(m, &g, &out)) { fprintf(stderr, "generate: %s\n", mw_error()); exit(1); }
    int got = (int)out.shape[1] - (int)prompt->shape[1];
    mw_tensor_release(&out);
    if (kv_bytes) {
        /* what the loop's cache holds: the same constructor, the same size */
        mw_kv_cache *kv = mw_kv_cache_new(m, prompt->shape[0], prompt->shape[1] + n);
        *kv_bytes = kv ? mw_kv_cache_bytes(kv) : -1;
        mw_kv_cache_free(kv);
    }
    return got;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int n = 64, P = 16, reps = 1, uncached = 1;
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "tokens=", 7)) n = atoi(argv[i] + 7);
        else if (!strncmp(argv[i], "prompt=", 7)) P = atoi(argv[i] + 7);
        else if (!strncmp(argv[i], "reps=", 5)) reps = atoi(argv[i] + 5);
        else if (!strcmp(argv[i], "no-uncached")) uncached = 0;
    }
    if (n < 1) n = 1;
    if (P < 1) P = 1;
    if (reps < 1) reps = 1;
    mw_config c;
    mw_config_default(&c);
    c.d_model = 768; c.d_head = 64; c.n_heads = 12; c.n_layers = 12; c.n_ctx = 1024; c.d_vocab = 50257;
    c.act_fn = MW_ACT_GELU_NEW; c.seed = 1;
    mw_model *m = mw_model_new(&c);
    if (!m) { fprintf(stderr, "%s\n", mw_error()); return 1; }
    int64_t sh[2] = {1, P};
    mw_tensor prompt;
    mw_rng g;
    mw_rng_seed(&g, 5);
    if (mw_tensor_randint(&prompt, &g, 0, c.d_vocab, 2, sh)) { fprintf(stderr, "%s\n", mw_error()); return 1; }
    size_t S = (size_t)P + n, d = 768, Hd = 768, V = 50257;
    bufs b;
    b.x = calloc(S * d, 4); b.q = calloc(S * Hd, 4); b.k = calloc(S * Hd, 4); b.v = calloc(S * Hd, 4);
    b.z = calloc(S * Hd, 4); b.s = calloc(S * S, 4); b.o = calloc(S * d, 4); b.h1 = calloc(S * 3072, 4);
    b.lg = calloc(S * V, 4);
    for (size_t i = 0; i < S * d; i++) b.x[i] = 0.01f * (float)(i % 97);
    printf("bench_generate: gpt2-small shape (random), greedy, %d new tokens from %d, batch 1, min of %d\n", n, P, reps);
    for (int threads = 1; threads <= 2; threads++) {
        openblas_set_num_threads(threads);
        for (int cached = 1; cached >= 0; cached--) {
            if (!cached && !uncached) continue;
            int64_t kvb = 0;
            generate(m, &prompt, cached ? n : 2, cached, cached ? &kvb : NULL); /* warm: buffers, pages */
            double tw = 1e30, tc = 1e30, bw = 1e30, bc = 1e30;
            int got = 0;
            for (int r = 0; r < reps; r++) {
                double t0 = now(), c0 = cpu();
                got = generate(m, &prompt, n, cached, NULL);
                double w = now() - t0, u = cpu() - c0;
                if (w < tw) tw = w;
                if (u < tc) tc = u;
                t0 = now(); c0 = cpu();
                bound_generate(m, &b, P, n, cached);
                w = now() - t0; u = cpu() - c0;
                if (w < bw) bw = w;
                if (u < bc) bc = u;
            }
            printf("  %d thread%s, %-13s %6.1f tokens/s (%.2f s) | wall %.2fx the bound (%.2f s) | cpu %.2fx (%.2f s)",
                   threads, threads > 1 ? "s" : " ", cached ? "with cache:" : "without cache:", got / tw, tw, tw / bw, bw,
                   tc / bc, bc);
            if (cached) printf(" | kv cache %.1f MB", kvb / 1e6);
            printf("\n");
            if (cached) {
                /* the same one-row products as cblas_sgemv, and the memory floor */
                use_gemv = 1;
                double gw = 1e30;
                for (int r = 0; r < reps; r++) {
                    double t0 = now();
                    bound_generate(m, &b, P, n, cached);
                    double w = now() - t0;
                    if (w < gw) gw = w;
                }
                use_gemv = 0;
                double bwidth = read_bandwidth(threads), floor_s = weight_bytes(m) * got / bwidth;
                openblas_set_num_threads(threads);
                printf("  %d thread%s, with cache:    wall %.2fx the same products as cblas_sgemv (%.2f s) | %.2fx the memory "
                       "floor (%.2f s: %.0f MB of weights per token at %.1f GB/s read)\n",
                       threads, threads > 1 ? "s" : " ", tw / gw, gw, tw / floor_s, floor_s, weight_bytes(m) / 1e6,
                       bwidth / 1e9);
            }
        }
    }
    free(b.x); free(b.q); free(b.k); free(b.v); free(b.z); free(b.s); free(b.o); free(b.h1); free(b.lg);
    mw_tensor_release(&prompt);
    mw_model_free(m);
    return 0;
}
