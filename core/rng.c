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
 * The normal fill (mw_fill_normal: model weights) is counter-based, so that any piece of it can
 * be computed alone and pieces run in parallel with the same numbers on any thread count:
 *   - element j of a fill with key K reads w = the (j >> 1)-th output (0-based) of the splitmix64
 *     stream started at K: mix(K + (j/2 + 1) * 0x9e3779b97f4a7c15);
 *   - u1 = ((w >> 32) + 1) * 2^-32 in (0, 1], u2 = (w & 0xffffffff) * 2^-32 in [0, 1);
 *   - r = sqrt(-2 log u1); element j is mean + std * r * cos(2 pi u2) when j is even,
 *     mean + std * r * sin(2 pi u2) when odd, computed in double and rounded to float32.
 *   log, cos and sin here are our own polynomials in plain double arithmetic (no libm, no fused
 *   multiply-add: this file is compiled with fp-contract off), accurate to ~1e-14, so every
 *   machine computes the same bits and the float32 results equal a libm computation except in
 *   rare rounding ties.
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
#include "parallel.h"

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

/* ---------------------------------------------------------------- the counter-based normal fill */

/* One block of up to FILL_BLOCK pairs, in loops the compiler vectorizes (element-wise double
 * arithmetic only, so every vector width computes the same bits as the scalar code):
 *   log u1: u1 = m 2^e with m in [sqrt(1/2), sqrt(2)) read from the double's bits,
 *           log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, the series to s^15;
 *   cos and sin of 2 pi u2: quadrant q = top 2 bits of the 32, the rest f in [0, 1) gives
 *           t = (f - 1/2) pi/2 in [-pi/4, pi/4); angle = q pi/2 + pi/4 + t; Taylor series of t
 *           to t^14 and t^13, rotated by pi/4 and by the quadrant. */
#define FILL_BLOCK 256

typedef struct { float *p; uint64_t key, first; double mean, std; } fill_ctx;

static inline double as_f64(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }
static inline uint64_t as_u64(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }
/* x < 2^52 as a double, exactly, without an int -> double conversion (which would not vectorize) */
/* mask all ones: a, all zeros: b (a bit select, branch-free) */
static inline double pick(uint64_t mask, double a, double b) { return as_f64((as_u64(a) & mask) | (as_u64(b) & ~mask)); }
static inline double small_u64(uint64_t x) { return as_f64(0x4330000000000000ULL | x) - 4503599627370496.0; }

__attribute__((target_clones("avx512f", "avx2", "default")))
static void fill_pairs(double *restrict out_c, double *restrict out_s, const uint64_t *restrict w, int n) {
    for (int i = 0; i < n; i++) {
        /* u1 = ((w >> 32) + 1) 2^-32 in (0, 1], exact */
        double u1 = small_u64((w[i] >> 32) + 1) * (1.0 / 4294967296.0);
        uint64_t bits = as_u64(u1);
        double m = as_f64((bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL); /* [1, 2) */
        double e = small_u64(bits >> 52) - 1023.0;
        uint64_t big = 0 - (uint64_t)(m >= 1.4142135623730951);  /* all ones when m >= sqrt(2) */
        m = pick(big, m * 0.5, m);
        e = pick(big, e + 1.0, e);
        double s = (m - 1.0) / (m + 1.0), s2 = s * s;
        double p = 1.0 / 15;
        p = p * s2 + 1.0 / 13;
        p = p * s2 + 1.0 / 11;
        p = p * s2 + 1.0 / 9;
        p = p * s2 + 1.0 / 7;
        p = p * s2 + 1.0 / 5;
        p = p * s2 + 1.0 / 3;
        p = p * s2 + 1.0;
        double lg = 2.0 * s * p + e * 0.6931471805599453;
        double r = sqrt(-2.0 * lg);
        uint64_t b = w[i] & 0xffffffffULL;
        double t = (small_u64(b & 0x3fffffffULL) * (1.0 / 1073741824.0) - 0.5) * 1.5707963267948966, t2 = t * t;
        double cs = 1.0 / 87178291200.0;                 /* 1/14! */
        cs = cs * -t2 + 1.0 / 479001600.0;
        cs = cs * -t2 + 1.0 / 3628800.0;
        cs = cs * -t2 + 1.0 / 40320.0;
        cs = cs * -t2 + 1.0 / 720.0;
        cs = cs * -t2 + 1.0 / 24.0;
        cs = cs * -t2 + 0.5;
        cs = cs * -t2 + 1.0;                             /* cos t */
        double sn = 1.0 / 6227020800.0;                  /* 1/13! */
        sn = sn * -t2 + 1.0 / 39916800.0;
        sn = sn * -t2 + 1.0 / 362880.0;
        sn = sn * -t2 + 1.0 / 5040.0;
        sn = sn * -t2 + 1.0 / 120.0;
        sn = sn * -t2 + 1.0 / 6.0;
        sn = sn * -t2 + 1.0;
        sn = sn * t;                                     /* sin t */
        double C = (cs - sn) * 0.7071067811865476, S = (cs + sn) * 0.7071067811865476; /* pi/4 + t */
        /* + q pi/2: an odd q turns (C, S) into (-S, C); q >= 2 negates both (a sign bit flip) */
        uint64_t odd = 0 - ((b >> 30) & 1), neg = (b >> 31) << 63;
        double c1 = pick(odd, -S, C), s1 = pick(odd, C, S);
        out_c[i] = r * as_f64(as_u64(c1) ^ neg);
        out_s[i] = r * as_f64(as_u64(s1) ^ neg);
    }
}

/* elements [lo, hi) of the fill (element i of p is number first + i of the stream) */
static void fill_piece(void *vctx, int64_t lo, int64_t hi, int tid) {
    (void)tid;
    const fill_ctx *f = vctx;
    uint64_t w[FILL_BLOCK];
    double c[FILL_BLOCK], s[FILL_BLOCK];
    int64_t i = lo;
    while (i < hi) {
        uint64_t j0 = f->first + (uint64_t)i, k0 = j0 >> 1;
        uint64_t jend = f->first + (uint64_t)hi, kend = (jend + 1) >> 1; /* pairs k0 .. kend-1 */
        int n = kend - k0 > FILL_BLOCK ? FILL_BLOCK : (int)(kend - k0);
        for (int t = 0; t < n; t++) {
            uint64_t z = f->key + (k0 + (uint64_t)t + 1) * 0x9e3779b97f4a7c15ULL;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
            w[t] = z ^ (z >> 31);
        }
        fill_pairs(c, s, w, n);
        for (int t = 0; t < n && i < hi; t++) {
            uint64_t j = (k0 + (uint64_t)t) << 1;
            if (j >= j0) f->p[i++] = (float)(f->mean + f->std * c[t]);
            if (i < hi) f->p[i++] = (float)(f->mean + f->std * s[t]);
        }
    }
}

void mw_fill_normal(float *p, int64_t n, uint64_t key, uint64_t first, double mean, double std) {
    fill_ctx f = {p, key, first, mean, std};
    mw_parallel_for(n, 1 << 16, fill_piece, &f);
}
