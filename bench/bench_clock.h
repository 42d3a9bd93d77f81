/* bench_clock.h - the two clocks the benchmarks read (included by bench_*.c; header-only). */
#ifndef MW_BENCH_CLOCK_H
#define MW_BENCH_CLOCK_H
#include <time.h>

/* wall time, seconds */
static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
/* CPU time of the whole process (every thread, user + system, page faults included): on a
 * machine shared with other jobs it does not count the time spent waiting for a core */
static inline double cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
#endif
