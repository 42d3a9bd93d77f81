/* parallel.h - the core's own worker threads for the work between matrix products.
 *
 * mw_parallel_for(n, grain, fn, ctx) runs fn(ctx, lo, hi, tid) over [0, n) cut into at most
 * mw_get_num_threads() contiguous pieces of at least `grain` items each; piece 0 runs on the
 * calling thread, the others on sleeping workers (a condition variable, no spinning), and the
 * call returns when every piece is done. Work smaller than two grains, a call from inside a
 * piece, or a call while another thread is using the pool runs whole on the caller.
 *
 * The count follows OpenBLAS's (openblas_get_num_threads(), so OPENBLAS_NUM_THREADS applies) until
 * mw_set_num_threads(n) sets both. The two never run at once: a parallel piece that calls
 * cblas_sgemm runs it single-threaded (mw_parallel_for lowers OpenBLAS to one thread for the
 * duration of the call and restores it), and between pieces our workers sleep while OpenBLAS's run.
 * Results must not depend on the count: pieces own disjoint outputs, and a kernel that sums
 * across items must not sum across pieces.
 */
#ifndef MW_PARALLEL_H
#define MW_PARALLEL_H

#include <stdint.h>

typedef void (*mw_range_fn)(void *ctx, int64_t lo, int64_t hi, int tid);

int mw_get_num_threads(void);
void mw_set_num_threads(int n);  /* n >= 1; also sets OpenBLAS's count */
void mw_parallel_for(int64_t n, int64_t grain, mw_range_fn fn, void *ctx);

#endif
