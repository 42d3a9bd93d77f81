/* parallel.c - a small pool of worker threads for the core's non-GEMM loops (see parallel.h) */
#include "parallel.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>

#define MAXT 64

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER; /* one parallel_for at a time */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int nworkers;            /* started workers (threads 1..nworkers) */
static int want_threads;        /* 0: follow OpenBLAS */
static uint64_t generation;     /* bumped for each job */
static int pending;             /* pieces not finished yet */
static struct { mw_range_fn fn; void *ctx; int64_t n; int pieces; } job;
static __thread int in_piece;   /* this thread is running a piece: nested calls run serially */

static void piece_range(int i, int64_t *lo, int64_t *hi) {
    *lo = job.n * i / job.pieces;
    *hi = job.n * (i + 1) / job.pieces;
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t seen = 0;
    in_piece = 1;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (generation == seen) pthread_cond_wait(&go, &mu);
        seen = generation;
        if (id >= job.pieces) continue;
        pthread_mutex_unlock(&mu);
        int64_t lo, hi;
        piece_range(id, &lo, &hi);
        job.fn(job.ctx, lo, hi, id);
        pthread_mutex_lock(&mu);
        if (--pending == 0) pthread_cond_signal(&done);
    }
    return NULL;
}

int mw_get_num_threads(void) {
    int n = want_threads > 0 ? want_threads : openblas_get_num_threads();
    return n < 1 ? 1 : n > MAXT ? MAXT : n;
}

void mw_set_num_threads(int n) {
    if (n < 1) n = 1;
    if (n > MAXT) n = MAXT;
    want_threads = n;
    openblas_set_num_threads(n);
}

void mw_parallel_for(int64_t n, int64_t grain, mw_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int t = mw_get_num_threads();
    int64_t most = n / grain;
    int pieces = most < t ? (int)most : t;
    if (pieces < 2 || in_piece || pthread_mutex_trylock(&pool_lock) != 0) {
        fn(ctx, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&mu);
    while (nworkers < pieces - 1) {
        pthread_t th;
        if (pthread_create(&th, NULL, worker, (void *)(intptr_t)(nworkers + 1)) != 0) break;
        pthread_detach(th);
        nworkers++;
    }
    if (pieces > nworkers + 1) pieces = nworkers + 1;
    if (pieces < 2) {
        pthread_mutex_unlock(&mu);
        pthread_mutex_unlock(&pool_lock);
        fn(ctx, 0, n, 0);
        return;
    }
    job.fn = fn; job.ctx = ctx; job.n = n; job.pieces = pieces;
    pending = pieces - 1;
    generation++;
    pthread_cond_broadcast(&go);
    pthread_mutex_unlock(&mu);
    /* a matrix product inside a piece runs on that piece's thread alone */
    int blas = openblas_get_num_threads();
    if (blas > 1) openblas_set_num_threads(1);
    int64_t lo, hi;
    in_piece = 1;
    piece_range(0, &lo, &hi);
    fn(ctx, lo, hi, 0);
    in_piece = 0;
    pthread_mutex_lock(&mu);
    while (pending > 0) pthread_cond_wait(&done, &mu);
    pthread_mutex_unlock(&mu);
    if (blas > 1) openblas_set_num_threads(blas);
    pthread_mutex_unlock(&pool_lock);
}
