/* bench_train.c - training throughput, and one training step against the matrix products it
 * contains, run as plain cblas_sgemm calls with the same shapes, transposes and leading dims in
 * the same run (the bound: a step cannot be faster than its products). Goal: ratio <= 2.
 *
 *   bench_train [B=8] [T=256]      the bundled model's shape: 2 layers, d 128, 8 heads of 16,
 *                                  vocabulary 4096, attention-only, shortformer
 * Reports the median of 5 steps (after 1 warm-up). OpenBLAS threads as the environment sets them.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mw_tensor.h"
#include "train.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void mm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.f, A, lda,
                B, ldb, 0.f, C, ldc);
}

int main(int argc, char **argv) {
    int B = 8, T = 256;
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "B=", 2)) B = atoi(argv[i] + 2);
        if (!strncmp(argv[i], "T=", 2)) T = atoi(argv[i] + 2);
    }
    const int d = 128, H = 8, dh = 16, HD = H * dh, L = 2, V = 4096, N = B * T;
    mw_config c;
    mw_config_default(&c);
    c.d_model = d; c.d_head = dh; c.n_heads = H; c.n_layers = L; c.n_ctx = T; c.d_vocab = V;
    c.attn_only = 1; c.normalization_type = MW_NORM_NONE; c.positional_embedding_type = MW_POS_SHORTFORMER; c.seed = 1;
    mw_trainer *t = mw_trainer_new(&c);
    if (!t) { printf("bench_train: %s\n", mw_error()); return 0; }
    int64_t *tok = malloc(sizeof *tok * (size_t)N);
    uint64_t s = 1;
    for (int i = 0; i < N; i++) { s = s * 6364136223846793005ull + 1442695040888963407ull; tok[i] = (int64_t)((s >> 33) % V); }
    mw_adamw_opts o;
    mw_adamw_default(&o);
    enum { R = 5 };
    double step_t[R], mm_t[R], loss, gn;
    /* buffers for the bare products: the largest operand of each role */
    size_t big = (size_t)N * V;
    float *X = calloc((size_t)N * (HD > d ? HD : d), sizeof(float)), *W = calloc((size_t)HD * V, sizeof(float));
    float *Y = calloc(big, sizeof(float)), *A = calloc((size_t)T * T, sizeof(float)), *Z = calloc((size_t)N * HD, sizeof(float));
    float *G = calloc(big, sizeof(float)), *S = calloc((size_t)T * T, sizeof(float));
    if (!X || !W || !Y || !A || !Z || !G || !S) { printf("bench_train: out of memory\n"); return 0; }
    for (int r = -1; r < R; r++) {
        double t0 = now();
        mw_trainer_forward(t, tok, B, T, 1, &loss);
        mw_trainer_step(t, &o, &gn);
        double t1 = now();
        /* the same products, as the forward and backward passes (model.c) issue them */
        for (int l = 0; l < L; l++) {
            for (int k = 0; k < 3; k++) mm(0, 0, N, HD, d, X, d, W, HD, Z, HD);          /* q, k, v */
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++) {
                    mm(0, 1, T, T, dh, Z + h * dh, HD, Z + h * dh, HD, S, T);          /* scores */
                    mm(0, 0, T, dh, T, S, T, Z + h * dh, HD, X + h * dh, HD);          /* z */
                }
            mm(0, 0, N, d, HD, Z, HD, W, d, X, d);                                     /* W_O */
        }
        mm(0, 0, N, V, d, X, d, W, V, Y, V);                                           /* unembed */
        mm(1, 0, d, V, N, X, d, G, V, W, V);                                           /* dW_U */
        mm(0, 1, N, d, V, G, V, W, V, X, d);                                           /* dx */
        for (int l = 0; l < L; l++) {
            mm(1, 0, HD, d, N, Z, HD, X, d, W, d);                                     /* dW_O */
            mm(0, 1, N, HD, d, X, d, W, d, Z, HD);                                     /* dz */
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++) {
                    mm(0, 1, T, T, dh, Z + h * dh, HD, Z + h * dh, HD, S, T);          /* dA */
                    mm(1, 0, T, dh, T, A, T, Z + h * dh, HD, X + h * dh, HD);          /* dv */
                    mm(0, 0, T, dh, T, S, T, Z + h * dh, HD, X + h * dh, HD);          /* dq */
                    mm(1, 0, T, dh, T, S, T, Z + h * dh, HD, X + h * dh, HD);          /* dk */
                }
            for (int k = 0; k < 3; k++) {
                mm(1, 0, d, HD, N, X, d, Z, HD, W, HD);                                /* dW_Q/K/V */
                mm(0, 1, N, d, HD, Z, HD, W, HD, X, d);                                /* dx */
            }
        }
        double t2 = now();
        if (r >= 0) { step_t[r] = t1 - t0; mm_t[r] = t2 - t1; }
    }
    qsort(step_t, R, sizeof(double), cmp);
    qsort(mm_t, R, sizeof(double), cmp);
    double st = step_t[R / 2], mt = mm_t[R / 2];
    printf("train step [B=%d, T=%d] 2L attn-only d=%d H=%d V=%d: %.1f ms (%.0f tokens/s); its sgemm products alone %.1f ms; "
           "ratio %.2f (goal <= 2)\n", B, T, d, H, V, st * 1e3, N / st, mt * 1e3, st / mt);
    free(X); free(W); free(Y); free(A); free(Z); free(G); free(S); free(tok);
    mw_trainer_free(t);
    return 0;
}
