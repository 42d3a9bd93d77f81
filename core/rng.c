/* rng.c - the seedable random generator of miwb and the random tensor constructors.
 *
 * One documented algorithm so that a seed gives the same numbers on every machine:
 *   - state: xoshiro256** (Blackman & Vigna, 2018), 4 x 64-bit words;
 *   - seeding: the 4 words are the first 4 outputs of splitmix64 started at the seed;
 *   - uniform: (next() >> 40) * 2^-24, a multiple of 2^-24 in [0, 1) that float32 holds exactly;
 *   - normal: Box-Muller on two uniforms u1, u2 drawn in that order, u1 replaced by 1 - u1
 *     (in (0, 1], so log never sees 0): r = sqrt(-2 log u1), the outputs r cos(2 pi u2) and
 *     r sin(2 pi u2) are returned in that order (the second is kept as the spare);
 *   - randint(lo, hi): range = hi - lo as uint64; draws x = next() until x < 2^64 - (2^64 mod
 *     range) (rejects the biased tail), returns lo + x mod range.
 * tests/fixtures/gen_rng.py is an independent Python implementation of the same definitions.
 * Tensors are filled in row-major order of the output. uniform and randint are pure integer
 * arithmetic, identical everywhere; normal goes through libm's log, sqrt, cos and sin, whose
 * last-bit differences between libm versions vanish in the float32 results except in rare
 * rounding ties.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "mw_tensor.h"

uint64_t mw_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void mw_rng_seed(mw_rng *g, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) g->s[i] = mw_splitmix64(&x);
    g->has_spare = 0;
    g->spare = 0;
}

uint64_t mw_rng_next(mw_rng *g)
{
    uint64_t *s = g->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double mw_rng_uniform(mw_rng *g)
{
    return (double)(mw_rng_next(g) >> 40) * (1.0 / 16777216.0);
}

double mw_rng_normal(mw_rng *g)
{
    if (g->has_spare) {
        g->has_spare = 0;
        return g->spare;
    }
    double u1 = 1.0 - mw_rng_uniform(g); /* (0, 1] */
    double u2 = mw_rng_uniform(g);
    double r = sqrt(-2.0 * log(u1));
    double a = 2.0 * M_PI * u2;
    g->spare = r * sin(a);
    g->has_spare = 1;
    return r * cos(a);
}

/* lo + x mod range with the biased tail of x rejected; range = hi - lo > 0 */
static int64_t rng_randint(mw_rng *g, int64_t lo, uint64_t range)
{
    uint64_t rem = (UINT64_MAX % range + 1) % range; /* 2^64 mod range */
    uint64_t limit = 0 - rem;                        /* 2^64 - rem (0 = accept all) */
    uint64_t x;
    do x = mw_rng_next(g);
    while (rem != 0 && x >= limit);
    return (int64_t)((uint64_t)lo + x % range);
}

/* the shape error of mw_tensor_empty, re-labelled with the caller's op */
static int shape_error(const char *op)
{
    const char *m = mw_error();
    if (strncmp(m, "empty: ", 7) == 0) m += 7;
    return mw_seterr("%s: %s", op, m);
}

static mw_rng default_rng;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static void default_init(void) { mw_rng_seed(&default_rng, 0); }

/* The process-wide generator starts from seed 0 (the same numbers in every run until reseeded).
 * It is not locked: scripts drive it from one thread. */
mw_rng *mw_rng_default(void)
{
    pthread_once(&default_once, default_init);
    return &default_rng;
}

int mw_tensor_rand(mw_tensor *out, mw_rng *g, int ndim, const int64_t *shape)
{
    mw_tensor r;
    if (mw_tensor_empty(&r, MW_F32, ndim, shape)) {
        memset(out, 0, sizeof *out);
        return shape_error("rand");
    }
    if (!g) g = mw_rng_default();
    float *p = r.storage->data; /* [numel], contiguous */
    for (int64_t i = 0, n = mw_tensor_numel(&r); i < n; i++) p[i] = (float)mw_rng_uniform(g);
    *out = r;
    return 0;
}

int mw_tensor_randn(mw_tensor *out, mw_rng *g, int ndim, const int64_t *shape)
{
    mw_tensor r;
    if (mw_tensor_empty(&r, MW_F32, ndim, shape)) {
        memset(out, 0, sizeof *out);
        return shape_error("randn");
    }
    if (!g) g = mw_rng_default();
    float *p = r.storage->data; /* [numel], contiguous */
    for (int64_t i = 0, n = mw_tensor_numel(&r); i < n; i++) p[i] = (float)mw_rng_normal(g);
    *out = r;
    return 0;
}

int mw_tensor_randint(mw_tensor *out, mw_rng *g, int64_t lo, int64_t hi, int ndim,
                      const int64_t *shape)
{
    mw_tensor r;
    if (hi <= lo) {
        memset(out, 0, sizeof *out);
        return mw_seterr("randint: empty range [%lld, %lld)", (long long)lo, (long long)hi);
    }
    if (mw_tensor_empty(&r, MW_I64, ndim, shape)) {
        memset(out, 0, sizeof *out);
        return shape_error("randint");
    }
    if (!g) g = mw_rng_default();
    uint64_t range = (uint64_t)hi - (uint64_t)lo;
    int64_t *p = r.storage->data; /* [numel], contiguous */
    for (int64_t i = 0, n = mw_tensor_numel(&r); i < n; i++) p[i] = rng_randint(g, lo, range);
    *out = r;
    return 0;
}
