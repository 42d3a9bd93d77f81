/* bench_tensor.c - speed of the tensor core against the bound it is built on, in the same run.
 *
 *   matmul     mw_matmul (allocates its output) vs cblas_sgemm called directly on the same
 *              buffers into a preallocated output. Goal: ratio <= 1.1.
 *   element-wise / softmax on [12,1024,1024] f32 vs a plain C loop over contiguous memory.
 *              Goal: ratio <= 2. Two baselines: the loop writing into a preallocated buffer, and
 *              the loop writing into a buffer malloc'd and freed around it (the same work as an op
 *              that returns a new tensor: on this machine a fresh 48 MB buffer costs page faults).
 *              The in-place forms (mw_binary_) are measured against the in-place loop.
 *   sum over the last dim and over dim 0 of [12,1024,1024] vs plain loops accumulating in double.
 * With the argument keep-heap the process first tells malloc never to use mmap and never to trim
 * (mallopt), so freed big buffers are reused instead of being faulted in again: this shows what
 * a storage cache would give; without it the figures are what the library does today.
 * Every figure is the median of REPS (REPS_MM for matmul) runs; mw and baseline runs alternate so that load from other
 * processes hits both alike. Not a test: it prints numbers, it does not judge them.
 */
#include "mw_tensor.h"

#include <cblas.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPS 7     /* element-wise and softmax: 0.01 to 1 s each */
#define REPS_MM 21 /* matmul: milliseconds each, noisier on a shared machine */
#define MAXREPS 21

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, mw_error());
    exit(1);
}

/* one benchmark = two closures run alternately */
typedef struct bench bench;
struct bench {
    void (*mw)(bench *);
    void (*base)(bench *);
    mw_tensor a, b, bt;  /* operands (bt: the tensor b is a view of, when transposed) */
    float *pa, *pb, *pc; /* raw buffers for the baseline */
    int64_t m, n, k, batch;
    int transb;
};

static void report(const char *name, const char *against, bench *B, int reps)
{
    double tm[MAXREPS], tb[MAXREPS];
    B->mw(B); /* warm-up: page faults of buffers, BLAS thread start */
    B->base(B);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        B->mw(B);
        double t1 = now();
        B->base(B);
        double t2 = now();
        tm[r] = t1 - t0;
        tb[r] = t2 - t1;
    }
    double mm = median(tm, reps), mb = median(tb, reps);
    printf("%-44s mw %8.3f ms  %-22s %8.3f ms  ratio %5.2f\n", name, mm * 1e3, against, mb * 1e3, mm / mb);
    fflush(stdout);
}

/* ---------------------------------------------------------------- matmul */

static void mw_mm(bench *B)
{
    mw_tensor c;
    if (mw_matmul(&c, &B->a, &B->b)) die("matmul");
    mw_tensor_release(&c);
}

/* the same products straight through cblas_sgemm: per-batch pointers, no copies */
static void blas_mm(bench *B)
{
    int64_t m = B->m, n = B->n, k = B->k;
    for (int64_t t = 0; t < B->batch; t++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, B->transb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                    (int)k, 1.0f, B->pa + t * m * k, (int)k, B->pb + t * k * n, B->transb ? (int)k : (int)n,
                    0.0f, B->pc + t * m * n, (int)n);
}

/* a [batch, m, k] @ b [batch, k, n] (batch 0: 2-D); transb: b is a transposed view of [.., n, k];
 * fold: a is [batch, m, k] but b is a single [k, n] (x @ W), the baseline is one sgemm */
static void bench_matmul(const char *name, int64_t batch, int64_t m, int64_t k, int64_t n, int transb, int fold)
{
    bench B = {0};
    B.mw = mw_mm;
    B.base = blas_mm;
    B.m = m; B.n = n; B.k = k;
    B.batch = batch ? batch : 1;
    B.transb = transb;
    int64_t sa[3] = {batch, m, k}, sb[3] = {batch, transb ? n : k, transb ? k : n};
    int nd = batch ? 3 : 2;
    int bnd = fold ? 2 : nd;
    if (mw_tensor_randn(&B.a, NULL, nd, batch ? sa : sa + 1)) die("randn");
    if (mw_tensor_randn(&B.bt, NULL, bnd, bnd == 3 ? sb : sb + 1)) die("randn");
    if (transb) {
        if (mw_tensor_transpose(&B.b, &B.bt, -1, -2)) die("transpose");
    } else {
        mw_tensor_share(&B.b, &B.bt);
    }
    B.pa = mw_tensor_data(&B.a);
    B.pb = mw_tensor_data(&B.bt);
    B.pc = malloc((size_t)(B.batch * m * n) * sizeof(float));
    if (fold) { /* baseline: one call with rows = batch * m */
        B.m = B.batch * m;
        B.batch = 1;
    }
    report(name, "cblas_sgemm", &B, REPS_MM);
    free(B.pc);
    mw_tensor_release(&B.a);
    mw_tensor_release(&B.b);
    mw_tensor_release(&B.bt);
}

/* ---------------------------------------------------------------- element-wise, softmax */

#define N_EL (12LL * 1024 * 1024)
static mw_tensor X, Y;   /* [12,1024,1024] */
static float *px, *py, *po;
static int which;        /* 0 add, 1 mul, 2 gelu, 3 softmax (reductions: see mw_sum) */

/* the same formula as ops.c (x / (1 + exp(-2u)), equal to 0.5 x (1 + tanh u)): the ratio measures
 * the op's overhead, not a choice of formula */
static inline float gelu_ref(float x)
{
    float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

/* the plain loops: o [N_EL] from x, y [N_EL]; softmax over rows of 1024 */
static void loop_into(float *o)
{
    const float *x = px, *y = py;
    switch (which) {
    case 0: for (int64_t i = 0; i < N_EL; i++) o[i] = x[i] + y[i]; break;
    case 1: for (int64_t i = 0; i < N_EL; i++) o[i] = x[i] * y[i]; break;
    case 2: for (int64_t i = 0; i < N_EL; i++) o[i] = gelu_ref(x[i]); break;
    case 3:
        for (int64_t r = 0; r < N_EL / 1024; r++) {
            const float *xr = x + r * 1024;
            float *orow = o + r * 1024, m = -INFINITY, s = 0;
            for (int i = 0; i < 1024; i++) m = xr[i] > m ? xr[i] : m;
            for (int i = 0; i < 1024; i++) { orow[i] = expf(xr[i] - m); s += orow[i]; }
            float inv = 1.0f / s;
            for (int i = 0; i < 1024; i++) orow[i] *= inv;
        }
        break;
    }
}

static void base_prealloc(bench *B) { (void)B; loop_into(po); }

static void base_malloc(bench *B)
{
    (void)B;
    float *o = malloc(N_EL * sizeof(float));
    loop_into(o);
    volatile float sink = o[N_EL - 1];
    (void)sink;
    free(o);
}

static void mw_op(bench *B)
{
    (void)B;
    mw_tensor o;
    int rc = which == 0 ? mw_binary(&o, &X, &Y, MW_ADD)
           : which == 1 ? mw_binary(&o, &X, &Y, MW_MUL)
           : which == 2 ? mw_unary(&o, &X, MW_GELU_NEW)
           : mw_softmax(&o, &X, -1);
    if (rc) die("op");
    mw_tensor_release(&o);
}

/* in place: x += y against the same loop in place (values drift, the work does not) */
static void mw_inplace(bench *B)
{
    (void)B;
    if (mw_binary_(&X, &Y, which == 0 ? MW_ADD : MW_MUL)) die("op_");
}

static void base_inplace(bench *B)
{
    (void)B;
    float *x = px;
    const float *y = py;
    if (which == 0) for (int64_t i = 0; i < N_EL; i++) x[i] += y[i];
    else for (int64_t i = 0; i < N_EL; i++) x[i] *= y[i];
}

/* reductions: which 0 = over the last dim (rows of 1024), 1 = over dim 0 (12 planes) */
static void mw_sum(bench *B)
{
    (void)B;
    mw_tensor o;
    if (mw_reduce(&o, &X, MW_SUM, which == 0 ? 1u << 2 : 1u << 0, 0, 0)) die("sum");
    mw_tensor_release(&o);
}

/* the plain loops, accumulating in double as the op does; out po [12*1024] or [1024*1024] */
static void base_sum(bench *B)
{
    (void)B;
    const float *x = px;
    if (which == 0) {
        for (int64_t r = 0; r < N_EL / 1024; r++) {
            double s = 0;
            for (int i = 0; i < 1024; i++) s += x[r * 1024 + i];
            po[r] = (float)s;
        }
    } else {
        const int64_t plane = N_EL / 12;
        double *acc = calloc(plane, sizeof *acc);
        for (int t = 0; t < 12; t++)
            for (int64_t i = 0; i < plane; i++) acc[i] += x[t * plane + i];
        for (int64_t i = 0; i < plane; i++) po[i] = (float)acc[i];
        free(acc);
    }
}

static void bench_elementwise(void)
{
    int64_t shape[3] = {12, 1024, 1024};
    if (mw_tensor_randn(&X, NULL, 3, shape) || mw_tensor_randn(&Y, NULL, 3, shape)) die("randn");
    px = mw_tensor_data(&X);
    py = mw_tensor_data(&Y);
    po = malloc(N_EL * sizeof(float));
    memset(po, 0, N_EL * sizeof(float));
    const char *names[4] = {"add [12,1024,1024]", "mul [12,1024,1024]", "gelu_new [12,1024,1024]",
                            "softmax(-1) [12,1024,1024]"};
    for (which = 0; which < 4; which++) {
        char name[96];
        bench B = {0};
        B.mw = mw_op;
        B.base = base_prealloc;
        report(names[which], "C loop, prealloc out", &B, REPS);
        snprintf(name, sizeof name, "%s", names[which]);
        B.base = base_malloc;
        report(name, "C loop, malloc'd out", &B, REPS);
        if (which < 2) {
            snprintf(name, sizeof name, "%s in place (mw_binary_)", which == 0 ? "add_" : "mul_");
            B.mw = mw_inplace;
            B.base = base_inplace;
            report(name, "C loop in place", &B, REPS);
        }
    }
    for (which = 0; which < 2; which++) {
        bench B = {0};
        B.mw = mw_sum;
        B.base = base_sum;
        report(which == 0 ? "sum(-1) [12,1024,1024]" : "sum(0) [12,1024,1024]", "C loop, double acc", &B, REPS);
    }
    free(po);
    mw_tensor_release(&X);
    mw_tensor_release(&Y);
}

int main(int argc, char **argv)
{
    int only_mm = 0, keep_heap = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "matmul")) only_mm = 1;
        else if (!strcmp(argv[i], "keep-heap")) keep_heap = 1;
    }
    if (keep_heap && !(mallopt(M_MMAP_MAX, 0) && mallopt(M_TRIM_THRESHOLD, INT32_MAX))) {
        fprintf(stderr, "bench: mallopt failed\n");
        return 1;
    }
    mw_rng_seed(mw_rng_default(), 1);
    printf("bench_tensor: median of %d runs (matmul %d), mw and baseline alternating%s\n", REPS, REPS_MM,
           keep_heap ? "; malloc keeps freed memory (keep-heap)" : "");
    bench_matmul("matmul [128,768] @ [768,3072]", 0, 128, 768, 3072, 0, 0);
    bench_matmul("matmul [128,768] @ [3072,768]^T (view)", 0, 128, 768, 3072, 1, 0);
    bench_matmul("matmul [12,128,64] @ [12,64,128]", 12, 128, 64, 128, 0, 0);
    bench_matmul("matmul [12,128,64] @ [12,128,64]^T (q k^T)", 12, 128, 64, 128, 1, 0);
    bench_matmul("matmul [4,128,768] @ [768,3072] (x @ W)", 4, 128, 768, 3072, 0, 1);
    if (!only_mm) bench_elementwise();
    return 0;
}
