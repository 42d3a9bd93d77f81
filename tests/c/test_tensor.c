/* test_tensor.c - unit tests for core/tensor.c and core/rng.c: errors, storage, creation,
 * random numbers, views, copies, indexing, joining and printing.
 *
 * Expected values are worked out by hand in the comments (shapes, strides, offsets, element
 * values), come from published test vectors, or from fixtures generated once by committed
 * scripts: tests/fixtures/gen_rng.py (an independent Python xoshiro256** and splitmix64) and
 * tests/fixtures/gen_format.py (PyTorch's own printing of the same tensors).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mw_tensor.h"
#include "parallel.h"
#include "mwtest.h"

#include "../fixtures/format_expected.h"
#include "../fixtures/rng_expected.h"
#include "../fixtures/tensor_expected.h"

/* ---------------------------------------------------------------- helpers */

static char shbuf[4][256];
static int shnext;
static const char *shape_of(const mw_tensor *t)
{
    char *b = shbuf[shnext++ % 4];
    return mw_tensor_shape_str(b, 256, t);
}
static const char *stride_of(const mw_tensor *t)
{
    char *b = shbuf[shnext++ % 4];
    return mw_shape_str(b, 256, t->ndim, t->stride);
}
#define CHECK_SHAPE(t, s) CHECK_MSG(strcmp(shape_of(t), (s)) == 0, "shape %s, expected %s", shape_of(t), (s))
#define CHECK_STRIDE(t, s) CHECK_MSG(strcmp(stride_of(t), (s)) == 0, "stride %s, expected %s", stride_of(t), (s))
#define CHECK_ZEROED(t) CHECK_MSG(is_zeroed(&(t)), "output not zeroed after failure")

static int is_zeroed(const mw_tensor *t)
{
    static const mw_tensor z;
    return memcmp(t, &z, sizeof z) == 0;
}

/* element at a multi-index given as varargs-free small arrays */
static double at1(const mw_tensor *t, int64_t i) { return mw_tensor_get(t, &i); }
static double at2(const mw_tensor *t, int64_t i, int64_t j)
{
    int64_t ix[2] = {i, j};
    return mw_tensor_get(t, ix);
}
static double at3(const mw_tensor *t, int64_t i, int64_t j, int64_t k)
{
    int64_t ix[3] = {i, j, k};
    return mw_tensor_get(t, ix);
}

/* a float tensor of the given shape holding 0, 1, 2, ... in row-major order */
static mw_tensor iota_f(int ndim, const int64_t *shape)
{
    mw_tensor t;
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = (float)i;
    if (mw_tensor_from_data(&t, MW_F32, ndim, shape, v)) memset(&t, 0, sizeof t);
    free(v);
    return t;
}

/* checks that t (any strides) holds exactly the row-major values want[numel] */
static int values_are(const mw_tensor *t, const double *want)
{
    int64_t n = mw_tensor_numel(t), idx[MW_MAXDIM] = {0};
    for (int64_t i = 0; i < n; i++) {
        double v = mw_tensor_get(t, idx);
        if (!(v == want[i] || (isnan(v) && isnan(want[i])))) {
            printf("  element %" PRId64 " is %.9g, expected %.9g\n", i, v, want[i]);
            return 0;
        }
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    return 1;
}
#define CHECK_VALUES(t, ...) do { static const double _w[] = {__VA_ARGS__}; \
    CHECK_MSG(mw_tensor_numel(&(t)) == (int64_t)(sizeof _w / sizeof _w[0]), "numel %lld, expected %d", \
              (long long)mw_tensor_numel(&(t)), (int)(sizeof _w / sizeof _w[0])); \
    if (mw_tensor_numel(&(t)) == (int64_t)(sizeof _w / sizeof _w[0])) CHECK(values_are(&(t), _w)); } while (0)

/* ---------------------------------------------------------------- errors, dtypes */

static void test_errors(void)
{
    CHECK(mw_seterr("op: %d and %s", 3, "x") == -1);
    CHECK(strcmp(mw_error(), "op: 3 and x") == 0);
    /* a message built from the previous one */
    mw_seterr("outer: %s", mw_error());
    CHECK(strcmp(mw_error(), "outer: op: 3 and x") == 0);

    char buf[64];
    int64_t s3[3] = {2, 3, 4};
    CHECK(strcmp(mw_shape_str(buf, sizeof buf, 3, s3), "[2,3,4]") == 0);
    CHECK(strcmp(mw_shape_str(buf, sizeof buf, 0, NULL), "[]") == 0);
    char small[5];
    mw_shape_str(small, sizeof small, 3, s3); /* truncated, still terminated */
    CHECK(strlen(small) == 4 && strncmp(small, "[2,3", 4) == 0);
    int64_t big[8] = {INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN};
    char huge[8 * MW_MAXDIM * 21];
    mw_shape_str(huge, sizeof huge, 8, big);
    CHECK(strlen(huge) == 2 + 8 * 20 + 7);

    CHECK(mw_dtype_size(MW_F32) == 4 && mw_dtype_size(MW_I64) == 8 && mw_dtype_size(MW_BOOL) == 1);
    CHECK(strcmp(mw_dtype_name(MW_F32), "float32") == 0);
    CHECK(strcmp(mw_dtype_name(MW_I64), "int64") == 0);
    CHECK(strcmp(mw_dtype_name(MW_BOOL), "bool") == 0);
    CHECK(mw_dtype_size((mw_dtype)7) == 0);
}

/* ---------------------------------------------------------------- storage */

static int released_count;
static void count_release(mw_storage *s)
{
    released_count++;
    free(s->owner);
}

static void test_storage(void)
{
    int64_t before = mw_storage_live_bytes();
    mw_storage *s = mw_storage_new(MW_I64, 10);
    CHECK(s != NULL);
    if (!s) return;
    CHECK(s->refcount == 1 && s->numel == 10 && s->dtype == MW_I64);
    int64_t *p = s->data;
    int zero = 1;
    for (int i = 0; i < 10; i++) zero &= p[i] == 0;
    CHECK(zero);
    CHECK(mw_storage_live_bytes() - before == 80);
    mw_storage_retain(s);
    CHECK(s->refcount == 2);
    mw_storage_release(s);
    CHECK(mw_storage_live_bytes() - before == 80);
    mw_storage_release(s);
    CHECK(mw_storage_live_bytes() == before);

    mw_storage *e = mw_storage_new(MW_F32, 0); /* empty storages exist too */
    CHECK(e != NULL && e->data != NULL);
    mw_storage_release(e);

    CHECK(mw_storage_new(MW_F32, -1) == NULL);
    CHECK(strstr(mw_error(), "storage: negative") != NULL);
    CHECK(mw_storage_new(MW_F32, (int64_t)1 << 62) == NULL);
    CHECK(strstr(mw_error(), "exceed the limit") != NULL);
    CHECK(mw_storage_new(MW_I64, INT64_MAX) == NULL);
    CHECK(mw_storage_new((mw_dtype)9, 4) == NULL);
    CHECK(strstr(mw_error(), "invalid dtype") != NULL);
    CHECK(mw_storage_live_bytes() == before);

    /* wrapped foreign memory: release() runs once at refcount 0, live bytes untouched */
    float *mem = calloc(4, sizeof *mem);
    released_count = 0;
    mw_storage *w = mw_storage_wrap(MW_F32, 4, mem, count_release, mem);
    CHECK(w != NULL && w->data == mem);
    CHECK(mw_storage_live_bytes() == before);
    mw_tensor t = {.storage = w, .dtype = MW_F32, .ndim = 1, .shape = {4}, .stride = {1}};
    mw_tensor v;
    CHECK_OK(mw_tensor_narrow(&v, &t, 0, 1, 2));
    mw_tensor_release(&t);
    CHECK(released_count == 0);
    CHECK(is_zeroed(&t));
    mw_tensor_release(&v);
    CHECK(released_count == 1);
    mw_tensor_release(&v); /* releasing a zeroed header is harmless */
    CHECK(released_count == 1);
    CHECK(mw_storage_wrap(MW_F32, 4, NULL, NULL, NULL) == NULL);

    /* wrapped memory without a callback stays the caller's: stack memory, never freed */
    float local[6] = {1, 2, 3, 4, 5, 6};
    mw_storage *ws = mw_storage_wrap(MW_F32, 6, local, NULL, NULL);
    CHECK(ws != NULL);
    mw_tensor lt = {.storage = ws, .dtype = MW_F32, .ndim = 2, .shape = {2, 3}, .stride = {3, 1}}, ls;
    CHECK_OK(mw_tensor_select(&ls, &lt, 1, 2));
    CHECK(mw_tensor_get(&ls, (int64_t[]){1}) == 6);
    mw_tensor_release(&ls);
    /* a hand-built header reaching past its storage is refused, not read */
    lt.shape[0] = 3;
    CHECK_ERR(mw_tensor_select(&ls, &lt, 0, 0), "select: tensor [3,3] (strides [3,1], offset 0) lies outside its storage of 6 float32 elements");
    lt.shape[0] = 2;
    lt.offset = 1;
    CHECK_ERR(mw_tensor_clone(&ls, &lt), "clone: tensor [2,3] (strides [3,1], offset 1) lies outside");
    lt.offset = -1;
    CHECK_ERR(mw_tensor_clone(&ls, &lt), "lies outside");
    lt.offset = 0;
    lt.stride[0] = INT64_MAX;
    CHECK_ERR(mw_tensor_clone(&ls, &lt), "lies outside");
    /* viewed as another dtype, counted in bytes: 6 floats hold 3 int64 */
    mw_tensor li = {.storage = ws, .dtype = MW_I64, .ndim = 1, .shape = {3}, .stride = {1}};
    CHECK_OK(mw_tensor_clone(&ls, &li));
    mw_tensor_release(&ls);
    li.shape[0] = 4;
    CHECK_ERR(mw_tensor_clone(&ls, &li), "lies outside its storage of 6 float32 elements");
    CHECK_ZEROED(ls);
    mw_storage_release(ws);
    CHECK(local[5] == 6);
}

static void test_header(void)
{
    int64_t sh[3] = {2, 3, 4};
    mw_tensor t;
    CHECK_OK(mw_tensor_zeros(&t, MW_F32, 3, sh));
    CHECK(mw_tensor_numel(&t) == 24);
    CHECK(mw_tensor_is_contiguous(&t));
    CHECK_STRIDE(&t, "[12,4,1]");
    char buf[32];
    CHECK(strcmp(mw_tensor_shape_str(buf, sizeof buf, &t), "[2,3,4]") == 0);
    mw_tensor s;
    mw_tensor_share(&s, &t);
    CHECK(s.storage == t.storage && t.storage->refcount == 2);
    mw_tensor tr;
    CHECK_OK(mw_tensor_transpose(&tr, &t, 0, 2));
    CHECK(!mw_tensor_is_contiguous(&tr));
    mw_tensor n;
    CHECK_OK(mw_tensor_narrow(&n, &t, 1, 1, 1)); /* [2,1,4] strides [12,4,1]: offset 4, not contiguous */
    CHECK(!mw_tensor_is_contiguous(&n));
    CHECK(mw_tensor_data(&n) == (char *)t.storage->data + 16);
    mw_tensor n0;
    CHECK_OK(mw_tensor_narrow(&n0, &t, 0, 1, 1)); /* [1,3,4] at offset 12: contiguous */
    CHECK(mw_tensor_is_contiguous(&n0));
    CHECK(n0.offset == 12);
    CHECK(t.storage->refcount == 5);
    mw_tensor_release(&n0);
    mw_tensor_release(&n);
    mw_tensor_release(&tr);
    mw_tensor_release(&s);
    CHECK(t.storage->refcount == 1);
    mw_tensor_release(&t);
    mw_tensor sc;
    CHECK_OK(mw_tensor_scalar(&sc, MW_F32, 2.5));
    CHECK(sc.ndim == 0 && mw_tensor_numel(&sc) == 1 && mw_tensor_is_contiguous(&sc));
    CHECK(mw_tensor_get(&sc, NULL) == 2.5);
    mw_tensor_release(&sc);
}

/* ---------------------------------------------------------------- creation */

static void test_creation(void)
{
    mw_tensor t;
    int64_t sh[2] = {2, 3};
    CHECK_OK(mw_tensor_full(&t, MW_F32, 2, sh, 1.5));
    CHECK_VALUES(t, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_full(&t, MW_F32, 2, sh, -0.0)); /* -0 is written, +0 comes from calloc */
    CHECK(signbit(((float *)t.storage->data)[5]) && ((float *)t.storage->data)[5] == 0);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_full(&t, MW_F32, 2, sh, 0.0));
    CHECK_VALUES(t, 0, 0, 0, 0, 0, 0);
    CHECK(!signbit(((float *)t.storage->data)[5]));
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_full(&t, MW_I64, 2, sh, -2.9)); /* truncation toward zero, as torch */
    CHECK_VALUES(t, -2, -2, -2, -2, -2, -2);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_full(&t, MW_BOOL, 1, sh, 3));
    CHECK(t.dtype == MW_BOOL && ((uint8_t *)t.storage->data)[0] == 1);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_empty(&t, MW_I64, 2, sh));
    CHECK_VALUES(t, 0, 0, 0, 0, 0, 0);
    mw_tensor_release(&t);

    int64_t iv[6] = {1, -2, 3, INT64_MAX, INT64_MIN, 0};
    CHECK_OK(mw_tensor_from_data(&t, MW_I64, 2, sh, iv));
    CHECK(((int64_t *)t.storage->data)[3] == INT64_MAX && ((int64_t *)t.storage->data)[4] == INT64_MIN);
    CHECK(at2(&t, 0, 1) == -2 && at2(&t, 1, 0) == (double)INT64_MAX);
    mw_tensor_release(&t);
    uint8_t bv[3] = {0, 7, 1};
    int64_t s3 = 3;
    CHECK_OK(mw_tensor_from_data(&t, MW_BOOL, 1, &s3, bv)); /* normalized to 0/1 */
    CHECK(((uint8_t *)t.storage->data)[1] == 1);
    mw_tensor_release(&t);

    /* arange: ceil((end-start)/step) values */
    CHECK_OK(mw_tensor_arange(&t, MW_I64, 0, 5, 1));
    CHECK(t.dtype == MW_I64);
    CHECK_SHAPE(&t, "[5]");
    CHECK_VALUES(t, 0, 1, 2, 3, 4);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_arange(&t, MW_F32, 1, 2, 0.25)); /* 1, 1.25, 1.5, 1.75 */
    CHECK_VALUES(t, 1, 1.25, 1.5, 1.75);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_arange(&t, MW_F32, 1, 2.1, 0.5)); /* ceil(2.2) = 3: 1, 1.5, 2 */
    CHECK_VALUES(t, 1, 1.5, 2);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_arange(&t, MW_I64, 5, 0, -2)); /* 5, 3, 1 */
    CHECK_VALUES(t, 5, 3, 1);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_arange(&t, MW_I64, 3, 3, 1));
    CHECK_SHAPE(&t, "[0]");
    mw_tensor_release(&t);

    /* linspace(0, 1, 5) = 0, .25, .5, .75, 1 */
    CHECK_OK(mw_tensor_linspace(&t, 0, 1, 5));
    CHECK(t.dtype == MW_F32);
    CHECK_VALUES(t, 0, 0.25, 0.5, 0.75, 1);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_linspace(&t, 2, -2, 3));
    CHECK_VALUES(t, 2, 0, -2);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_linspace(&t, -1, 1, 1));
    CHECK_VALUES(t, -1);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_linspace(&t, -1, 1, 0));
    CHECK_SHAPE(&t, "[0]");
    mw_tensor_release(&t);

    CHECK_OK(mw_tensor_eye(&t, 2, 3));
    CHECK_SHAPE(&t, "[2,3]");
    CHECK_VALUES(t, 1, 0, 0, 0, 1, 0);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_eye(&t, 3, 2));
    CHECK_VALUES(t, 1, 0, 0, 1, 0, 0);
    mw_tensor_release(&t);
}

static void test_tril_triu(void)
{
    int64_t sh[2] = {3, 4};
    mw_tensor a = iota_f(2, sh), t;
    /* a = [[0,1,2,3],[4,5,6,7],[8,9,10,11]]; tril keeps j - i <= k */
    CHECK_OK(mw_tensor_tril(&t, &a, 0));
    CHECK_VALUES(t, 0, 0, 0, 0, 4, 5, 0, 0, 8, 9, 10, 0);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_tril(&t, &a, 1));
    CHECK_VALUES(t, 0, 1, 0, 0, 4, 5, 6, 0, 8, 9, 10, 11);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_tril(&t, &a, -1));
    CHECK_VALUES(t, 0, 0, 0, 0, 4, 0, 0, 0, 8, 9, 0, 0);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_triu(&t, &a, 0));
    CHECK_VALUES(t, 0, 1, 2, 3, 0, 5, 6, 7, 0, 0, 10, 11);
    mw_tensor_release(&t);
    CHECK_OK(mw_tensor_triu(&t, &a, 2));
    CHECK_VALUES(t, 0, 0, 2, 3, 0, 0, 0, 7, 0, 0, 0, 0);
    mw_tensor_release(&t);
    /* batched, and on a transposed view: tril of a^T [4,3] with k = 0 */
    mw_tensor at;
    CHECK_OK(mw_tensor_transpose(&at, &a, 0, 1));
    CHECK_OK(mw_tensor_tril(&t, &at, 0));
    CHECK_VALUES(t, 0, 0, 0, 1, 5, 0, 2, 6, 10, 3, 7, 11);
    mw_tensor_release(&t);
    int64_t sh3[3] = {2, 2, 2};
    mw_tensor b = iota_f(3, sh3);
    CHECK_OK(mw_tensor_triu(&t, &b, 1));
    CHECK_VALUES(t, 0, 1, 0, 0, 0, 5, 0, 0);
    mw_tensor_release(&t);
    mw_tensor_release(&b);
    mw_tensor_release(&at);
    mw_tensor_release(&a);
}

static void test_creation_errors(void)
{
    mw_tensor t;
    int64_t neg[2] = {2, -1};
    memset(&t, 0xab, sizeof t);
    CHECK_ERR(mw_tensor_zeros(&t, MW_F32, 2, neg), "zeros: negative size in [2,-1]");
    CHECK_ZEROED(t);
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_ERR(mw_tensor_zeros(&t, MW_F32, 9, nine), "max 8");
    CHECK_ERR(mw_tensor_empty(&t, MW_F32, -1, nine), "empty");
    int64_t huge[3] = {1 << 30, 1 << 30, 1 << 30};
    CHECK_ERR(mw_tensor_zeros(&t, MW_F32, 3, huge), "too many elements");
    int64_t ovf[2] = {INT64_MAX, 3};
    CHECK_ERR(mw_tensor_full(&t, MW_F32, 2, ovf, 1), "full: shape [9223372036854775807,3]");
    int64_t big[2] = {1 << 20, 1 << 20}; /* 2^40 floats = 2^42 bytes: past the limit */
    CHECK_ERR(mw_tensor_zeros(&t, MW_F32, 2, big), "exceed the limit");
    CHECK_ZEROED(t);
    int64_t sh[1] = {2};
    CHECK_ERR(mw_tensor_full(&t, MW_I64, 1, sh, NAN), "full: value nan does not fit int64");
    CHECK_ERR(mw_tensor_full(&t, MW_I64, 1, sh, 1e19), "does not fit int64");
    CHECK_ERR(mw_tensor_zeros(&t, (mw_dtype)5, 1, sh), "invalid dtype");
    CHECK_ERR(mw_tensor_from_data(&t, MW_F32, 1, sh, NULL), "from_data: NULL data for shape [2]");
    CHECK_ERR(mw_tensor_arange(&t, MW_F32, 0, 1, 0), "arange: step must be nonzero");
    CHECK_ERR(mw_tensor_arange(&t, MW_F32, 0, 5, -1), "different signs");
    CHECK_ERR(mw_tensor_arange(&t, MW_BOOL, 0, 5, 1), "arange: dtype bool");
    CHECK_ERR(mw_tensor_arange(&t, MW_F32, 0, INFINITY, 1), "must be finite");
    CHECK_ERR(mw_tensor_arange(&t, MW_F32, 0, 1e300, 1e-300), "too many");
    CHECK_ERR(mw_tensor_linspace(&t, 0, 1, -2), "linspace: number of steps -2");
    CHECK_ERR(mw_tensor_eye(&t, -1, 2), "eye: sizes n = -1");
    CHECK_ZEROED(t);
    int64_t s1 = 3;
    mw_tensor v = iota_f(1, &s1);
    CHECK_ERR(mw_tensor_tril(&t, &v, 0), "tril: input must have at least 2 dims, got [3]");
    CHECK_ERR(mw_tensor_triu(&t, &v, 0), "triu");
    mw_tensor none = {0};
    CHECK_ERR(mw_tensor_tril(&t, &none, 0), "tril: tensor has no storage");
    CHECK_ZEROED(t);
    mw_tensor_release(&v);
}

/* ---------------------------------------------------------------- random numbers */

static void test_rng(void)
{
    mw_rng g;
    /* the state words are the first four splitmix64 outputs (published vector, seed 1234567) */
    mw_rng_seed(&g, 1234567);
    for (int i = 0; i < 4; i++) CHECK(g.s[i] == RNG_SPLITMIX_1234567[i]);
    mw_rng_seed(&g, 0);
    for (int i = 0; i < 8; i++) CHECK(mw_rng_next(&g) == RNG_NEXT_SEED0[i]);
    mw_rng_seed(&g, 42);
    for (int i = 0; i < 8; i++) CHECK(mw_rng_next(&g) == RNG_NEXT_SEED42[i]);
    mw_rng_seed(&g, 7);
    for (int i = 0; i < 8; i++) CHECK(mw_rng_uniform(&g) == RNG_UNIFORM_SEED7[i]);
    mw_rng_seed(&g, 7);
    for (int i = 0; i < 9; i++) CHECK_NEAR(mw_rng_normal(&g), RNG_NORMAL_SEED7[i], 1e-12);
    /* reseeding forgets the spare normal */
    mw_rng_seed(&g, 7);
    CHECK_NEAR(mw_rng_normal(&g), RNG_NORMAL_SEED7[0], 1e-12);
    mw_rng_seed(&g, 7);
    CHECK(!g.has_spare);

    /* tensors: row-major fill, float32 of the same draws */
    int64_t sh[2] = {2, 4};
    mw_tensor t;
    mw_rng_seed(&g, 7);
    CHECK_OK(mw_tensor_rand(&t, &g, 2, sh));
    CHECK(t.dtype == MW_F32);
    for (int i = 0; i < 8; i++) CHECK(((float *)t.storage->data)[i] == (float)RNG_UNIFORM_SEED7[i]);
    mw_tensor_release(&t);
    mw_rng_seed(&g, 7);
    int64_t s9 = 9;
    CHECK_OK(mw_tensor_randn(&t, &g, 1, &s9));
    for (int i = 0; i < 9; i++) CHECK(((float *)t.storage->data)[i] == (float)RNG_NORMAL_SEED7[i]);
    mw_tensor_release(&t);
    mw_rng_seed(&g, 11);
    int64_t sh34[2] = {3, 4};
    CHECK_OK(mw_tensor_randint(&t, &g, -3, 5, 2, sh34));
    CHECK(t.dtype == MW_I64);
    for (int i = 0; i < 12; i++) CHECK(((int64_t *)t.storage->data)[i] == RNG_RANDINT_SEED11_M3_5[i]);
    mw_tensor_release(&t);
    /* a range of 3*2^62-1: the Python reference rejected some draws; we must skip the same ones */
    mw_rng_seed(&g, 5);
    int64_t s24 = 24;
    CHECK_OK(mw_tensor_randint(&t, &g, -((int64_t)1 << 62), INT64_MAX, 1, &s24));
    for (int i = 0; i < 24; i++) CHECK(((int64_t *)t.storage->data)[i] == RNG_RANDINT_SEED5_WIDE[i]);
    mw_tensor_release(&t);
    /* the full int64 range: every draw accepted */
    mw_rng_seed(&g, 0);
    int64_t s1 = 1;
    CHECK_OK(mw_tensor_randint(&t, &g, INT64_MIN, INT64_MAX, 1, &s1));
    mw_tensor_release(&t);

    /* the default generator: reseeding it repeats its numbers */
    mw_rng_seed(mw_rng_default(), 42);
    CHECK_OK(mw_tensor_randint(&t, NULL, 0, 10, 1, &s9));
    mw_rng_seed(mw_rng_default(), 42);
    mw_tensor t2;
    CHECK_OK(mw_tensor_randint(&t2, NULL, 0, 10, 1, &s9));
    CHECK(memcmp(t.storage->data, t2.storage->data, 9 * 8) == 0);
    mw_tensor_release(&t);
    mw_tensor_release(&t2);

    /* a coarse statistical sanity check of uniform and normal over 20000 draws:
     * mean 1/2 and variance 1/12 for U[0,1), mean 0 and variance 1 for N(0,1) (5 sigma bounds) */
    mw_rng_seed(&g, 123);
    double su = 0, su2 = 0, sn = 0, sn2 = 0;
    for (int i = 0; i < 20000; i++) {
        double u = mw_rng_uniform(&g), z = mw_rng_normal(&g);
        CHECK(u >= 0 && u < 1);
        su += u, su2 += u * u, sn += z, sn2 += z * z;
    }
    CHECK_NEAR(su / 20000, 0.5, 5 * sqrt(1.0 / 12 / 20000));
    CHECK_NEAR(su2 / 20000 - (su / 20000) * (su / 20000), 1.0 / 12, 0.003);
    CHECK_NEAR(sn / 20000, 0, 5 * sqrt(1.0 / 20000));
    CHECK_NEAR(sn2 / 20000, 1, 0.05);

    memset(&t, 0x5a, sizeof t);
    CHECK_ERR(mw_tensor_randint(&t, &g, 5, 5, 1, &s1), "randint: empty range [5, 5)");
    CHECK_ZEROED(t);
    int64_t neg = -3;
    CHECK_ERR(mw_tensor_rand(&t, &g, 1, &neg), "rand: negative size in [-3]");
    CHECK_ERR(mw_tensor_randn(&t, &g, 1, &neg), "randn: negative size in [-3]");
    int64_t huge[2] = {(int64_t)1 << 40, 8};
    CHECK_ERR(mw_tensor_randint(&t, &g, 0, 2, 2, huge), "randint: shape [1099511627776,8] has too many elements");
    CHECK_ZEROED(t);
}

/* the counter-based normal fill (model weights): numbers against the Python reference (libm's
 * log / cos / sin, tests/fixtures/gen_rng.py), any piece equal to the same slice of a whole fill,
 * the same bits on 1 and 2 threads, and the distribution: moments and a Kolmogorov-Smirnov test
 * against the normal CDF */
static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void test_fill_normal(void)
{
    float v[16];
    mw_fill_normal(v, 13, 398, 0, 0.0, 1.0);
    /* equal but for a rare float32 rounding tie between our polynomials and libm: 1 ulp */
    for (int i = 0; i < 13; i++) CHECK_NEAR(v[i], FILL_KEY398_FIRST0[i], 1.2e-7 * fabs(FILL_KEY398_FIRST0[i]) + 1e-30);
    mw_fill_normal(v, 6, 1, 7, 0.5, 2.0); /* starts on an odd number (a sine) */
    for (int i = 0; i < 6; i++) CHECK_NEAR(v[i], FILL_KEY1_FIRST7_M05_S2[i], 1.2e-7 * fabs(FILL_KEY1_FIRST7_M05_S2[i]));

    int64_t n = 400000;
    float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
    int saved = mw_get_num_threads();
    mw_set_num_threads(1);
    mw_fill_normal(a, n, 5, 0, 0.0, 1.0);
    mw_set_num_threads(2);
    mw_fill_normal(b, n, 5, 0, 0.0, 1.0);
    CHECK(memcmp(a, b, (size_t)n * 4) == 0);
    /* pieces at odd and even starts, of odd and even lengths */
    int64_t cuts[] = {0, 1, 2, 333, 1000, 1001, 65537, 199999};
    for (int i = 0; i < 8; i++) {
        int64_t len = i % 2 ? 777 : 1000;
        mw_fill_normal(b, len, 5, (uint64_t)cuts[i], 0.0, 1.0);
        CHECK(memcmp(a + cuts[i], b, (size_t)len * 4) == 0);
    }
    mw_set_num_threads(saved);

    double m1 = 0, m2 = 0, m3 = 0, m4 = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = a[i];
        m1 += x, m2 += x * x, m3 += x * x * x, m4 += x * x * x * x;
    }
    m1 /= n, m2 /= n, m3 /= n, m4 /= n;
    /* standard errors over n draws: mean 1/sqrt(n), E x^2 sqrt(2/n), E x^3 sqrt(15/n), E x^4 sqrt(96/n); 5 sigma */
    CHECK_NEAR(m1, 0, 5 / sqrt(n));
    CHECK_NEAR(m2, 1, 5 * sqrt(2.0 / n));
    CHECK_NEAR(m3, 0, 5 * sqrt(15.0 / n));
    CHECK_NEAR(m4, 3, 5 * sqrt(96.0 / n));
    qsort(a, (size_t)n, 4, cmp_float);
    double D = 0;
    for (int64_t i = 0; i < n; i++) {
        double F = 0.5 * erfc(-a[i] / sqrt(2.0));
        double d1 = fabs(F - (double)i / n), d2 = fabs((double)(i + 1) / n - F);
        if (d1 > D) D = d1;
        if (d2 > D) D = d2;
    }
    /* the Kolmogorov distribution: P(sqrt(n) D > 1.95) = 0.001 */
    CHECK(sqrt((double)n) * D < 1.95);
    /* a shifted, scaled fill is the same numbers moved */
    mw_fill_normal(b, 100, 5, 0, 3.0, 0.02);
    mw_fill_normal(a, 100, 5, 0, 0.0, 1.0);
    for (int i = 0; i < 100; i++) CHECK_NEAR(b[i], 3.0 + 0.02 * a[i], 1e-6);
    free(a);
    free(b);
}

/* ---------------------------------------------------------------- views */

static void test_narrow_select(void)
{
    int64_t sh[2] = {3, 4};
    mw_tensor a = iota_f(2, sh), n, s;
    /* narrow(dim 1, start 1, len 2): [3,2], strides [4,1], offset 1 */
    CHECK_OK(mw_tensor_narrow(&n, &a, 1, 1, 2));
    CHECK_SHAPE(&n, "[3,2]");
    CHECK_STRIDE(&n, "[4,1]");
    CHECK(n.offset == 1 && n.storage == a.storage);
    CHECK_VALUES(n, 1, 2, 5, 6, 9, 10);
    /* negative dim and start: narrow(-2, -2, 2) = rows 1..2, offset 4 */
    mw_tensor n2;
    CHECK_OK(mw_tensor_narrow(&n2, &a, -2, -2, 2));
    CHECK_SHAPE(&n2, "[2,4]");
    CHECK(n2.offset == 4);
    CHECK_OK(mw_tensor_narrow(&n2, &n2, 1, 3, 0)); /* in place, empty */
    CHECK_SHAPE(&n2, "[2,0]");
    mw_tensor_release(&n2);

    /* select(dim 1, index -1) = column 3: [3], stride [4], offset 3 */
    CHECK_OK(mw_tensor_select(&s, &a, 1, -1));
    CHECK_SHAPE(&s, "[3]");
    CHECK_STRIDE(&s, "[4]");
    CHECK(s.offset == 3);
    CHECK_VALUES(s, 3, 7, 11);
    /* writes through a view are seen by the base and the other views */
    int64_t i1 = 1;
    mw_tensor_set(&s, &i1, 70);
    CHECK(at2(&a, 1, 3) == 70 && at1(&s, 1) == 70);
    mw_tensor_set(&n, (int64_t[]){2, 1}, -10);
    CHECK(at2(&a, 2, 2) == -10);
    /* select down to a 0-dim tensor */
    mw_tensor z;
    CHECK_OK(mw_tensor_select(&z, &s, 0, 2));
    CHECK(z.ndim == 0 && z.offset == 11 && mw_tensor_get(&z, NULL) == 11);

    mw_tensor t;
    memset(&t, 0x11, sizeof t);
    CHECK_ERR(mw_tensor_narrow(&t, &a, 2, 0, 1), "narrow: dim 2 out of range for [3,4]");
    CHECK_ZEROED(t);
    CHECK_ERR(mw_tensor_narrow(&t, &a, -3, 0, 1), "narrow: dim -3 out of range for [3,4]");
    CHECK_ERR(mw_tensor_narrow(&t, &a, 1, 3, 2), "narrow: start 3 + length 2 exceeds size 4 of dim 1 of [3,4]");
    CHECK_ERR(mw_tensor_narrow(&t, &a, 1, 5, 0), "narrow: start 5 out of range");
    CHECK_ERR(mw_tensor_narrow(&t, &a, 1, 0, -1), "narrow");
    CHECK_ERR(mw_tensor_select(&t, &a, 0, 3), "select: index 3 out of range for dim 0 of [3,4]");
    CHECK_ERR(mw_tensor_select(&t, &a, 0, -4), "select: index -4");
    CHECK_ERR(mw_tensor_select(&t, &z, 0, 0), "select: dim 0 out of range for a 0-dim tensor");
    CHECK_ZEROED(t);
    /* a failing in-place call leaves its input alone */
    mw_tensor keep;
    mw_tensor_share(&keep, &a);
    CHECK_ERR(mw_tensor_select(&keep, &keep, 5, 0), "select");
    CHECK(keep.storage == a.storage && keep.ndim == 2);
    mw_tensor_release(&keep);

    mw_tensor_release(&z);
    mw_tensor_release(&s);
    mw_tensor_release(&n);
    CHECK(a.storage->refcount == 1);
    mw_tensor_release(&a);
}

static void test_transpose_permute(void)
{
    int64_t sh[3] = {2, 3, 4};
    mw_tensor a = iota_f(3, sh), t, p;
    CHECK_OK(mw_tensor_transpose(&t, &a, 0, -1)); /* [4,3,2], strides [1,4,12] */
    CHECK_SHAPE(&t, "[4,3,2]");
    CHECK_STRIDE(&t, "[1,4,12]");
    CHECK(at3(&t, 3, 1, 1) == 1 * 12 + 1 * 4 + 3);
    int perm[3] = {1, -1, 0}; /* [3,4,2], strides [4,1,12] */
    CHECK_OK(mw_tensor_permute(&p, &a, perm));
    CHECK_SHAPE(&p, "[3,4,2]");
    CHECK_STRIDE(&p, "[4,1,12]");
    CHECK(at3(&p, 2, 3, 1) == 12 + 2 * 4 + 3);
    mw_tensor_set(&p, (int64_t[]){0, 0, 1}, 99);
    CHECK(at3(&a, 1, 0, 0) == 99);
    mw_tensor x;
    CHECK_ERR(mw_tensor_transpose(&x, &a, 0, 3), "transpose: dim 3 out of range for [2,3,4]");
    int bad[3] = {0, 0, 1};
    CHECK_ERR(mw_tensor_permute(&x, &a, bad), "permute: dim 0 repeated");
    int bad2[3] = {0, 1, 5};
    CHECK_ERR(mw_tensor_permute(&x, &a, bad2), "permute: dim 5 out of range for [2,3,4]");
    CHECK_ZEROED(x);
    mw_tensor_release(&p);
    mw_tensor_release(&t);
    mw_tensor_release(&a);
}

static void test_view_reshape(void)
{
    int64_t sh[3] = {2, 3, 4};
    mw_tensor a = iota_f(3, sh), v, r;
    int64_t s1[2] = {6, -1};
    CHECK_OK(mw_tensor_view(&v, &a, 2, s1));
    CHECK_SHAPE(&v, "[6,4]");
    CHECK_STRIDE(&v, "[4,1]");
    CHECK(v.storage == a.storage);
    mw_tensor_release(&v);
    int64_t s0[1] = {-1};
    CHECK_OK(mw_tensor_view(&v, &a, 1, s0));
    CHECK_SHAPE(&v, "[24]");
    mw_tensor_release(&v);

    /* a non-contiguous tensor whose chunks still allow a view: narrow the last dim of [2,3,4] to
     * [2,3,2] (strides [12,4,1]); dims 0,1 merge into 6 only if stride0 == 3*stride1 = 12: yes.
     * view [6,2] -> strides [4,1] */
    mw_tensor n;
    CHECK_OK(mw_tensor_narrow(&n, &a, 2, 1, 2));
    int64_t s62[2] = {6, 2};
    CHECK_OK(mw_tensor_view(&v, &n, 2, s62));
    CHECK_STRIDE(&v, "[4,1]");
    CHECK(v.offset == 1);
    CHECK_VALUES(v, 1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22);
    mw_tensor_release(&v);
    /* splitting a dim of a strided tensor: [2,3,2] as [2,3,2,1] and [2,3,1,2] */
    int64_t s4[4] = {2, 3, 1, 2};
    CHECK_OK(mw_tensor_view(&v, &n, 4, s4));
    CHECK_SHAPE(&v, "[2,3,1,2]");
    CHECK(v.stride[0] == 12 && v.stride[1] == 4 && v.stride[3] == 1);
    mw_tensor_release(&v);
    /* but [12] needs the last dim merged with stride-4 rows: impossible */
    int64_t s12 = 12;
    CHECK_ERR(mw_tensor_view(&v, &n, 1, &s12), "view: [2,3,2] (strides [12,4,1]) as [12]: the strides do not allow a view");
    CHECK_ZEROED(v);
    /* a transposed matrix cannot be flattened by view; reshape copies */
    mw_tensor t;
    int64_t sh2[2] = {2, 3};
    mw_tensor m = iota_f(2, sh2);
    CHECK_OK(mw_tensor_transpose(&t, &m, 0, 1)); /* [3,2] strides [1,3] = [[0,3],[1,4],[2,5]] */
    int64_t s6 = 6;
    CHECK_ERR(mw_tensor_view(&v, &t, 1, &s6), "view: [3,2] (strides [1,3]) as [6]");
    CHECK_OK(mw_tensor_reshape(&r, &t, 1, &s6));
    CHECK(r.storage != m.storage && mw_tensor_is_contiguous(&r));
    CHECK_VALUES(r, 0, 3, 1, 4, 2, 5);
    mw_tensor_release(&r);
    /* transposed matrix viewed with a new size-1 dim: allowed ([3,1,2]) */
    int64_t s312[3] = {3, 1, 2};
    CHECK_OK(mw_tensor_view(&v, &t, 3, s312));
    CHECK(v.stride[0] == 1 && v.stride[2] == 3);
    mw_tensor_release(&v);
    /* reshape of a contiguous tensor is a view */
    int64_t s83[2] = {8, 3};
    CHECK_OK(mw_tensor_reshape(&r, &a, 2, s83));
    CHECK(r.storage == a.storage);
    CHECK_STRIDE(&r, "[3,1]");
    mw_tensor_release(&r);
    /* 0-dim <-> [1,1] */
    mw_tensor sc;
    CHECK_OK(mw_tensor_scalar(&sc, MW_F32, 4));
    int64_t s11[2] = {1, 1};
    CHECK_OK(mw_tensor_view(&v, &sc, 2, s11));
    CHECK_SHAPE(&v, "[1,1]");
    CHECK_OK(mw_tensor_view(&r, &v, 0, NULL));
    CHECK(r.ndim == 0 && mw_tensor_get(&r, NULL) == 4);
    mw_tensor_release(&r);
    mw_tensor_release(&v);
    mw_tensor_release(&sc);

    int64_t bad[2] = {5, -1};
    CHECK_ERR(mw_tensor_view(&v, &a, 2, bad), "view: [2,3,4] (24 elements) as [5,-1]: sizes do not match");
    int64_t bad2[2] = {-1, -1};
    CHECK_ERR(mw_tensor_reshape(&v, &a, 2, bad2), "reshape: [2,3,4] as [-1,-1]: only one dim can be -1");
    int64_t bad3[2] = {4, 5};
    CHECK_ERR(mw_tensor_reshape(&v, &a, 2, bad3), "reshape: [2,3,4] (24 elements) as [4,5] (20 elements)");
    int64_t bad4[2] = {-2, 12};
    CHECK_ERR(mw_tensor_view(&v, &a, 2, bad4), "invalid size -2");
    int64_t nine[9] = {24, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_ERR(mw_tensor_view(&v, &a, 9, nine), "view: 9 dims requested for [2,3,4] (max 8)");
    int64_t ez[2] = {0, 4};
    mw_tensor e;
    CHECK_OK(mw_tensor_zeros(&e, MW_F32, 2, ez));
    int64_t eb[2] = {0, -1};
    CHECK_ERR(mw_tensor_view(&v, &e, 2, eb), "ambiguous");
    CHECK_ZEROED(v);
    mw_tensor_release(&e);

    mw_tensor_release(&t);
    mw_tensor_release(&m);
    mw_tensor_release(&n);
    mw_tensor_release(&a);
}

static void test_unsqueeze_squeeze(void)
{
    int64_t sh[2] = {3, 4};
    mw_tensor a = iota_f(2, sh), u, s;
    CHECK_OK(mw_tensor_unsqueeze(&u, &a, 1)); /* [3,1,4], stride of new dim = 4*1 */
    CHECK_SHAPE(&u, "[3,1,4]");
    CHECK_STRIDE(&u, "[4,4,1]");
    mw_tensor_release(&u);
    CHECK_OK(mw_tensor_unsqueeze(&u, &a, -1)); /* [3,4,1] */
    CHECK_SHAPE(&u, "[3,4,1]");
    CHECK_STRIDE(&u, "[4,1,1]");
    mw_tensor_release(&u);
    CHECK_OK(mw_tensor_unsqueeze(&u, &a, 0)); /* [1,3,4], stride 3*4 */
    CHECK_STRIDE(&u, "[12,4,1]");
    CHECK_OK(mw_tensor_unsqueeze(&u, &u, 3)); /* in place: [1,3,4,1] */
    CHECK_SHAPE(&u, "[1,3,4,1]");
    CHECK(a.storage->refcount == 2);
    CHECK_OK(mw_tensor_squeeze(&s, &u, 0));
    CHECK_SHAPE(&s, "[3,4,1]");
    mw_tensor_release(&s);
    CHECK_OK(mw_tensor_squeeze(&s, &u, 1)); /* size 3: unchanged, as torch */
    CHECK_SHAPE(&s, "[1,3,4,1]");
    mw_tensor_release(&s);
    CHECK_OK(mw_tensor_squeeze(&s, &u, -1));
    CHECK_SHAPE(&s, "[1,3,4]");
    mw_tensor_release(&s);
    CHECK_OK(mw_tensor_squeeze_all(&s, &u));
    CHECK_SHAPE(&s, "[3,4]");
    CHECK_STRIDE(&s, "[4,1]");
    mw_tensor_release(&s);
    mw_tensor sc;
    CHECK_OK(mw_tensor_scalar(&sc, MW_F32, 1));
    CHECK_OK(mw_tensor_squeeze(&s, &sc, 0));
    CHECK(s.ndim == 0);
    mw_tensor_release(&s);
    CHECK_OK(mw_tensor_unsqueeze(&s, &sc, 0));
    CHECK_SHAPE(&s, "[1]");
    CHECK_STRIDE(&s, "[1]");
    mw_tensor_release(&s);
    mw_tensor_release(&sc);

    CHECK_ERR(mw_tensor_unsqueeze(&s, &a, 3), "unsqueeze: dim 3 out of range for [3,4] (allowed -3..2)");
    CHECK_ERR(mw_tensor_unsqueeze(&s, &a, -4), "unsqueeze: dim -4");
    CHECK_ERR(mw_tensor_squeeze(&s, &a, 2), "squeeze: dim 2 out of range for [3,4]");
    int64_t s8[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    mw_tensor m8;
    CHECK_OK(mw_tensor_zeros(&m8, MW_F32, 8, s8));
    CHECK_ERR(mw_tensor_unsqueeze(&s, &m8, 0), "unsqueeze: [1,1,1,1,1,1,1,1] already has the maximum of 8 dims");
    CHECK_ZEROED(s);
    mw_tensor_release(&m8);
    mw_tensor_release(&u);
    mw_tensor_release(&a);
}

static void test_expand(void)
{
    int64_t sh[2] = {3, 1};
    mw_tensor a = iota_f(2, sh), e;
    int64_t to[3] = {2, 3, 4}; /* [3,1] -> [2,3,4]: strides [0,1,0] */
    CHECK_OK(mw_tensor_expand(&e, &a, 3, to));
    CHECK_SHAPE(&e, "[2,3,4]");
    CHECK_STRIDE(&e, "[0,1,0]");
    CHECK(at3(&e, 1, 2, 3) == 2 && at3(&e, 0, 1, 0) == 1);
    /* a view: a write to a shows in every broadcast copy; contiguous materializes it */
    CHECK(e.storage == a.storage);
    mw_tensor_set(&a, (int64_t[]){1, 0}, 50);
    CHECK(at3(&e, 0, 1, 3) == 50 && at3(&e, 1, 1, 0) == 50);
    mw_tensor ec;
    CHECK_OK(mw_tensor_contiguous(&ec, &e));
    CHECK(ec.storage != a.storage && mw_tensor_numel(&ec) == 24);
    CHECK(at3(&ec, 1, 1, 2) == 50 && at3(&ec, 1, 2, 2) == 2);
    mw_tensor_release(&ec);
    mw_tensor_release(&e);
    int64_t keep[2] = {-1, 5};
    CHECK_OK(mw_tensor_expand(&e, &a, 2, keep));
    CHECK_SHAPE(&e, "[3,5]");
    CHECK_STRIDE(&e, "[1,0]");
    mw_tensor_release(&e);
    int64_t zero[2] = {3, 0}; /* size 1 may expand to 0 */
    CHECK_OK(mw_tensor_expand(&e, &a, 2, zero));
    CHECK(mw_tensor_numel(&e) == 0);
    mw_tensor_release(&e);
    int64_t bad[2] = {4, 2};
    CHECK_ERR(mw_tensor_expand(&e, &a, 2, bad), "expand: [3,1] to [4,2]: size 3 at dim 0 is not 1");
    int64_t bad2[3] = {-1, 3, 1};
    CHECK_ERR(mw_tensor_expand(&e, &a, 3, bad2), "expand: [3,1] to [-1,3,1]: -1 not allowed in a new leading dim 0");
    int64_t one[1] = {3};
    CHECK_ERR(mw_tensor_expand(&e, &a, 1, one), "expand: [3,1] to [3]: need between 2 and 8 dims");
    int64_t neg[2] = {3, -4};
    CHECK_ERR(mw_tensor_expand(&e, &a, 2, neg), "invalid size -4");
    CHECK_ZEROED(e);
    mw_tensor_release(&a);
}

static void test_diagonal(void)
{
    /* a = arange(12).view(3,4) = [[0,1,2,3],[4,5,6,7],[8,9,10,11]], strides [4,1]
     * torch.diagonal(a, 0) = [0,5,10]; offset 1 = [1,6,11]; offset 2 = [2,7]; offset -1 = [4,9];
     * offset -2 = [8]; offset 4 = []; offset -3 = []; dims (1,0) offset 1 = [4,9] */
    int64_t sh[2] = {3, 4};
    mw_tensor a = iota_f(2, sh), d;
    CHECK_OK(mw_tensor_diagonal(&d, &a, 0, 0, 1));
    CHECK_SHAPE(&d, "[3]");
    CHECK_STRIDE(&d, "[5]");
    CHECK_VALUES(d, 0, 5, 10);
    mw_tensor_release(&d);
    CHECK_OK(mw_tensor_diagonal(&d, &a, 1, 0, 1));
    CHECK(d.offset == 1);
    CHECK_VALUES(d, 1, 6, 11);
    mw_tensor_release(&d);
    CHECK_OK(mw_tensor_diagonal(&d, &a, 2, 0, 1));
    CHECK_VALUES(d, 2, 7);
    mw_tensor_release(&d);
    CHECK_OK(mw_tensor_diagonal(&d, &a, -1, 0, 1));
    CHECK(d.offset == 4);
    CHECK_VALUES(d, 4, 9);
    mw_tensor_release(&d);
    CHECK_OK(mw_tensor_diagonal(&d, &a, -2, 0, 1));
    CHECK_VALUES(d, 8);
    mw_tensor_release(&d);
    CHECK_OK(mw_tensor_diagonal(&d, &a, 4, 0, 1));
    CHECK_SHAPE(&d, "[0]");
    CHECK(d.offset == 0);
    mw_tensor_release(&d);
    CHECK_OK(mw_tensor_diagonal(&d, &a, -3, 0, 1));
    CHECK_SHAPE(&d, "[0]");
    mw_tensor_release(&d);
    CHECK_OK(mw_tensor_diagonal(&d, &a, 1, 1, 0));
    CHECK_VALUES(d, 4, 9);
    mw_tensor_release(&d);
    CHECK_OK(mw_tensor_diagonal(&d, &a, 0, -1, -2));
    CHECK_VALUES(d, 0, 5, 10);
    /* a view: writing the diagonal writes a */
    CHECK_OK(mw_tensor_fill_(&d, -1));
    CHECK(at2(&a, 1, 1) == -1 && at2(&a, 2, 2) == -1 && at2(&a, 1, 2) == 6);
    mw_tensor_release(&d);

    /* 3-D: b = arange(24).view(2,3,4), diagonal over dims (0,2) offset 1: the remaining dim 1 (3)
     * comes first, the diagonal last: out[j][k] = b[k][j][k+1], k < min(2, 4-1) = 2:
     * shape [3,2], strides [4, 12+1]; values j=0: b[0][0][1]=1, b[1][0][2]=14; j=1: 5, 18; j=2: 9, 22 */
    int64_t sh3[3] = {2, 3, 4};
    mw_tensor b = iota_f(3, sh3);
    CHECK_OK(mw_tensor_diagonal(&d, &b, 1, 0, 2));
    CHECK_SHAPE(&d, "[3,2]");
    CHECK_STRIDE(&d, "[4,13]");
    CHECK_VALUES(d, 1, 14, 5, 18, 9, 22);
    mw_tensor_release(&d);

    CHECK_ERR(mw_tensor_diagonal(&d, &a, 0, 1, 1), "diagonal: dims 1 and 1 of [3,4] are the same");
    CHECK_ERR(mw_tensor_diagonal(&d, &a, 0, 0, 2), "diagonal: dim 2 out of range for [3,4]");
    int64_t s1 = 3;
    mw_tensor v = iota_f(1, &s1);
    CHECK_ERR(mw_tensor_diagonal(&d, &v, 0, 0, 1), "diagonal: input must have at least 2 dims, got [3]");
    CHECK_ZEROED(d);
    /* offsets far past the matrix give empty diagonals (torch: shape [0]), with no overflow of
     * offset * stride (UBSan watches this in make asan) */
    CHECK_OK(mw_tensor_diagonal(&d, &a, INT64_MAX, 0, 1));
    CHECK_SHAPE(&d, "[0]");
    mw_tensor_release(&d);
    CHECK_OK(mw_tensor_diagonal(&d, &a, INT64_MIN, 0, 1));
    CHECK_SHAPE(&d, "[0]");
    mw_tensor_release(&d);
    mw_tensor_release(&v);
    mw_tensor_release(&b);
    mw_tensor_release(&a);
}

/* ---------------------------------------------------------------- copies */

static void test_copies(void)
{
    int64_t sh[2] = {2, 3};
    mw_tensor a = iota_f(2, sh), t, c;
    CHECK_OK(mw_tensor_contiguous(&c, &a)); /* already contiguous: shared */
    CHECK(c.storage == a.storage);
    mw_tensor_release(&c);
    CHECK_OK(mw_tensor_transpose(&t, &a, 0, 1));
    CHECK_OK(mw_tensor_contiguous(&c, &t)); /* [[0,3],[1,4],[2,5]] */
    CHECK(c.storage != a.storage && mw_tensor_is_contiguous(&c));
    CHECK_STRIDE(&c, "[2,1]");
    CHECK_VALUES(c, 0, 3, 1, 4, 2, 5);
    mw_tensor_release(&c);
    CHECK_OK(mw_tensor_clone(&c, &a));
    CHECK(c.storage != a.storage);
    CHECK_VALUES(c, 0, 1, 2, 3, 4, 5);
    mw_tensor_set(&c, (int64_t[]){0, 0}, 100);
    CHECK(at2(&a, 0, 0) == 0);
    mw_tensor_release(&c);

    /* to_dtype: float -> int64 truncates toward zero; -> bool is "nonzero" */
    float fv[4] = {-1.7f, 0.0f, 2.9f, 0.25f};
    int64_t s4 = 4;
    mw_tensor f;
    CHECK_OK(mw_tensor_from_data(&f, MW_F32, 1, &s4, fv));
    CHECK_OK(mw_tensor_to_dtype(&c, &f, MW_I64));
    CHECK(c.dtype == MW_I64);
    CHECK_VALUES(c, -1, 0, 2, 0);
    mw_tensor_release(&c);
    CHECK_OK(mw_tensor_to_dtype(&c, &f, MW_BOOL));
    CHECK(c.dtype == MW_BOOL);
    CHECK_VALUES(c, 1, 0, 1, 1);
    mw_tensor b2;
    CHECK_OK(mw_tensor_to_dtype(&b2, &c, MW_F32));
    CHECK_VALUES(b2, 1, 0, 1, 1);
    mw_tensor_release(&b2);
    mw_tensor_release(&c);
    CHECK_OK(mw_tensor_to_dtype(&c, &f, MW_F32)); /* a new storage even for the same dtype */
    CHECK(c.storage != f.storage);
    mw_tensor_release(&c);

    /* copy_ with broadcasting and conversion: int64 [3] row into the transposed float [3,2] view
     * of a fails (3 vs 2), a [3,1] column works: t[i][j] = col[i] */
    int64_t col[3] = {7, 8, 9};
    int64_t s31[2] = {3, 1};
    mw_tensor cl;
    CHECK_OK(mw_tensor_from_data(&cl, MW_I64, 2, s31, col));
    CHECK_OK(mw_tensor_copy_(&t, &cl)); /* a^T = [[7,7],[8,8],[9,9]] so a = [[7,8,9],[7,8,9]] */
    CHECK_VALUES(a, 7, 8, 9, 7, 8, 9);
    int64_t s3 = 3;
    mw_tensor row;
    CHECK_OK(mw_tensor_view(&row, &cl, 1, &s3));
    CHECK_ERR(mw_tensor_copy_(&t, &row), "copy_: [3] cannot be broadcast to [3,2] (size 3 at dim 0)");
    CHECK_OK(mw_tensor_copy_(&a, &row)); /* [3] broadcast over rows */
    CHECK_VALUES(a, 7, 8, 9, 7, 8, 9);
    CHECK_ERR(mw_tensor_copy_(&row, &a), "copy_: [2,3] cannot be broadcast to [3] (more dims)");
    /* overlapping copy: a^T's transpose into a itself (a = a^T^T, fine) and a row shifted onto
     * itself: a[0][1:3] = a[0][0:2] must read before writing */
    mw_tensor src, dst;
    mw_tensor_release(&f);
    CHECK_OK(mw_tensor_from_data(&f, MW_F32, 1, &s4, fv));
    mw_tensor f2 = f;
    CHECK_OK(mw_tensor_narrow(&src, &f2, 0, 0, 3)); /* -1.7, 0, 2.9 */
    CHECK_OK(mw_tensor_narrow(&dst, &f2, 0, 1, 3));
    CHECK_OK(mw_tensor_copy_(&dst, &src));
    CHECK_VALUES(f2, -1.7f, -1.7f, 0, 2.9f);
    mw_tensor_release(&src);
    mw_tensor_release(&dst);
    mw_tensor_release(&f2);

    /* fill_ through a strided view, get/set with conversion */
    CHECK_OK(mw_tensor_fill_(&t, 0.5)); /* all of a */
    CHECK_VALUES(a, .5, .5, .5, .5, .5, .5);
    mw_tensor i64;
    CHECK_OK(mw_tensor_zeros(&i64, MW_I64, 2, sh));
    mw_tensor_set(&i64, (int64_t[]){1, 2}, 3.99);
    CHECK(((int64_t *)i64.storage->data)[5] == 3);
    CHECK_ERR(mw_tensor_fill_(&i64, INFINITY), "fill_: value inf does not fit int64");
    mw_tensor bl;
    CHECK_OK(mw_tensor_zeros(&bl, MW_BOOL, 2, sh));
    mw_tensor_set(&bl, (int64_t[]){0, 1}, -2);
    CHECK(((uint8_t *)bl.storage->data)[1] == 1 && at2(&bl, 0, 1) == 1);
    /* copy_ from bool and from a 0-dim tensor */
    CHECK_OK(mw_tensor_copy_(&i64, &bl));
    CHECK_VALUES(i64, 0, 1, 0, 0, 0, 0);
    mw_tensor sc;
    CHECK_OK(mw_tensor_scalar(&sc, MW_F32, -3.5));
    CHECK_OK(mw_tensor_copy_(&i64, &sc));
    CHECK_VALUES(i64, -3, -3, -3, -3, -3, -3);
    /* float NaN to int64 is defined here: INT64_MIN (what torch gives on x86) */
    CHECK_OK(mw_tensor_fill_(&sc, NAN));
    CHECK_OK(mw_tensor_copy_(&i64, &sc));
    CHECK(((int64_t *)i64.storage->data)[0] == INT64_MIN);

    mw_tensor none = {0};
    CHECK_ERR(mw_tensor_copy_(&none, &a), "copy_: tensor has no storage");
    CHECK_ERR(mw_tensor_contiguous(&c, &none), "contiguous: tensor has no storage");
    CHECK_ERR(mw_tensor_fill_(&none, 1), "fill_: tensor has no storage");
    CHECK_ERR(mw_tensor_squeeze_all(&c, &none), "squeeze: tensor has no storage");
    CHECK_ERR(mw_tensor_scalar(&c, MW_I64, NAN), "scalar: value nan does not fit int64");
    CHECK_ERR(mw_tensor_scalar(&c, MW_BOOL + 1, 0), "scalar: invalid dtype 3");
    mw_tensor bad_nd = a;
    bad_nd.ndim = 9;
    CHECK_ERR(mw_tensor_clone(&c, &bad_nd), "clone: tensor has ndim 9 (max 8)");
    bad_nd.ndim = 2;
    bad_nd.shape[1] = -3;
    CHECK_ERR(mw_tensor_transpose(&c, &bad_nd, 0, 1), "transpose: tensor has negative size in [2,-3]");
    CHECK_ERR(mw_tensor_clone(&c, &none), "clone: tensor has no storage");
    CHECK_ZEROED(c);
    CHECK_ERR(mw_tensor_to_dtype(&c, &a, (mw_dtype)4), "to_dtype: invalid dtype 4");
    CHECK_ZEROED(c);

    mw_tensor_release(&sc);
    mw_tensor_release(&bl);
    mw_tensor_release(&i64);
    mw_tensor_release(&row);
    mw_tensor_release(&cl);
    mw_tensor_release(&t);
    mw_tensor_release(&a);
}


/* ---------------------------------------------------------------- indexing and joining */

static mw_tensor i64_tensor(int ndim, const int64_t *shape, const int64_t *v)
{
    mw_tensor t;
    if (mw_tensor_from_data(&t, MW_I64, ndim, shape, v)) memset(&t, 0, sizeof t);
    return t;
}

static void test_index_select(void)
{
    int64_t sh[2] = {3, 4};
    mw_tensor a = iota_f(2, sh), r;
    int64_t s4 = 4, iv[4] = {2, 0, -1, 2};
    mw_tensor idx = i64_tensor(1, &s4, iv);
    CHECK_OK(mw_tensor_index_select(&r, &a, 0, &idx)); /* rows 2, 0, 2, 2 */
    CHECK_SHAPE(&r, "[4,4]");
    CHECK(r.storage != a.storage);
    CHECK_VALUES(r, 8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11, 8, 9, 10, 11);
    mw_tensor_release(&r);
    int64_t s2 = 2, iv2[2] = {3, 1};
    mw_tensor idx2 = i64_tensor(1, &s2, iv2);
    CHECK_OK(mw_tensor_index_select(&r, &a, -1, &idx2)); /* columns 3, 1 */
    CHECK_SHAPE(&r, "[3,2]");
    CHECK_VALUES(r, 3, 1, 7, 5, 11, 9);
    mw_tensor_release(&r);
    /* on a transposed input, with a strided index (every other element of iv) */
    mw_tensor at, idx_s;
    CHECK_OK(mw_tensor_transpose(&at, &a, 0, 1)); /* [4,3]: at[i][j] = 4j + i */
    int64_t st2 = 2;
    mw_tensor idx_v;
    CHECK_OK(mw_tensor_view(&idx_v, &idx, 2, (int64_t[]){2, 2}));
    CHECK_OK(mw_tensor_select(&idx_s, &idx_v, 1, 0)); /* iv[0], iv[2] = 2, -1 */
    CHECK(idx_s.stride[0] == st2);
    CHECK_OK(mw_tensor_index_select(&r, &at, 1, &idx_s)); /* columns 2 and 2 of a^T */
    CHECK_VALUES(r, 8, 8, 9, 9, 10, 10, 11, 11);
    mw_tensor_release(&r);
    /* a 0-dim index keeps the dim with size 1 */
    mw_tensor i0;
    CHECK_OK(mw_tensor_scalar(&i0, MW_I64, 1));
    CHECK_OK(mw_tensor_index_select(&r, &a, 0, &i0));
    CHECK_SHAPE(&r, "[1,4]");
    CHECK_VALUES(r, 4, 5, 6, 7);
    mw_tensor_release(&r);

    int64_t bad[2] = {0, 3};
    mw_tensor ib = i64_tensor(1, &s2, bad);
    memset(&r, 0x22, sizeof r);
    CHECK_ERR(mw_tensor_index_select(&r, &a, 0, &ib), "index_select: index 3 out of range for dim 0 of [3,4]");
    CHECK_ZEROED(r);
    CHECK_ERR(mw_tensor_index_select(&r, &a, 2, &idx), "index_select: dim 2 out of range for [3,4]");
    CHECK_ERR(mw_tensor_index_select(&r, &a, 0, &a), "index_select: index must be int64, got float32 [3,4]");
    CHECK_ERR(mw_tensor_index_select(&r, &a, 0, &idx_v), "index_select: index must be 0-D or 1-D, got [2,2]");
    CHECK_ZEROED(r);
    mw_tensor_release(&ib);
    mw_tensor_release(&i0);
    mw_tensor_release(&idx_s);
    mw_tensor_release(&idx_v);
    mw_tensor_release(&at);
    mw_tensor_release(&idx2);
    mw_tensor_release(&idx);
    mw_tensor_release(&a);
}

static void test_gather_scatter(void)
{
    /* torch docs: gather([[1,2],[3,4]], 1, [[0,0],[1,0]]) = [[1,1],[4,3]] */
    float av[4] = {1, 2, 3, 4};
    int64_t s22[2] = {2, 2}, s12[2] = {1, 2}, s21[2] = {2, 1};
    mw_tensor a, r;
    CHECK_OK(mw_tensor_from_data(&a, MW_F32, 2, s22, av));
    mw_tensor idx = i64_tensor(2, s22, (int64_t[]){0, 0, 1, 0});
    CHECK_OK(mw_tensor_gather(&r, &a, 1, &idx));
    CHECK_SHAPE(&r, "[2,2]");
    CHECK_VALUES(r, 1, 1, 4, 3);
    mw_tensor_release(&r);
    /* dim 0, a smaller index: out[0][j] = a[idx[0][j]][j] = a[1][0], a[0][1] = 3, 2 */
    mw_tensor i12 = i64_tensor(2, s12, (int64_t[]){1, 0});
    CHECK_OK(mw_tensor_gather(&r, &a, 0, &i12));
    CHECK_SHAPE(&r, "[1,2]");
    CHECK_VALUES(r, 3, 2);
    mw_tensor_release(&r);
    /* dim -1, index [2,1] with a negative entry: [[a[0][-1]], [a[1][0]]] = [[2],[3]] */
    mw_tensor i21 = i64_tensor(2, s21, (int64_t[]){-1, 0});
    CHECK_OK(mw_tensor_gather(&r, &a, -1, &i21));
    CHECK_VALUES(r, 2, 3);
    mw_tensor_release(&r);
    /* dim 1 with the [1,2] index: [[a[0][1], a[0][0]]] = [[2,1]] */
    CHECK_OK(mw_tensor_gather(&r, &a, 1, &i12));
    CHECK_VALUES(r, 2, 1);
    mw_tensor_release(&r);
    mw_tensor i31 = i64_tensor(2, (int64_t[]){3, 1}, (int64_t[]){0, 0, 0});
    CHECK_ERR(mw_tensor_gather(&r, &a, 1, &i31), "gather: index [3,1] is larger than input [2,2] at dim 0");
    mw_tensor_release(&i31);
    mw_tensor big = i64_tensor(2, s22, (int64_t[]){0, 2, 0, 0});
    memset(&r, 0x33, sizeof r);
    CHECK_ERR(mw_tensor_gather(&r, &a, 1, &big), "gather: index 2 out of range for dim 1 of [2,2]");
    CHECK_ZEROED(r);
    int64_t s3 = 3;
    mw_tensor i1 = i64_tensor(1, &s3, (int64_t[]){0, 1, 0});
    CHECK_ERR(mw_tensor_gather(&r, &a, 0, &i1), "gather: index [3] must have as many dims as input [2,2]");
    CHECK_ERR(mw_tensor_gather(&r, &a, 0, &a), "gather: index must be int64");
    CHECK_ERR(mw_tensor_gather(&r, &a, 2, &idx), "gather: dim 2 out of range for [2,2]");
    CHECK_ZEROED(r);

    /* torch docs: zeros(3,5).scatter_add_(0, [[0,1,2,0,0],[0,1,2,2,2]], ones(2,5))
     * = [[2,0,0,1,1],[0,2,0,0,0],[0,0,2,1,1]] */
    int64_t s35[2] = {3, 5}, s25[2] = {2, 5};
    mw_tensor z, ones;
    CHECK_OK(mw_tensor_zeros(&z, MW_F32, 2, s35));
    CHECK_OK(mw_tensor_full(&ones, MW_F32, 2, s25, 1));
    mw_tensor si = i64_tensor(2, s25, (int64_t[]){0, 1, 2, 0, 0, 0, 1, 2, 2, 2});
    CHECK_OK(mw_tensor_scatter_add_(&z, 0, &si, &ones));
    CHECK_VALUES(z, 2, 0, 0, 1, 1, 0, 2, 0, 0, 0, 0, 0, 2, 1, 1);
    /* only the first row of the index: [[0,1,2,0,0]] adds one more row of ones */
    mw_tensor si1;
    CHECK_OK(mw_tensor_narrow(&si1, &si, 0, 0, 1));
    CHECK_OK(mw_tensor_scatter_add_(&z, 0, &si1, &ones));
    CHECK_VALUES(z, 3, 0, 0, 2, 2, 0, 3, 0, 0, 0, 0, 0, 3, 1, 1);
    /* int64 along dim 1: a [1,3] += src [1,2] at columns [2,2] -> [0,0,src0+src1] */
    int64_t s13[2] = {1, 3};
    mw_tensor zi, src = i64_tensor(2, s12, (int64_t[]){5, 6});
    CHECK_OK(mw_tensor_zeros(&zi, MW_I64, 2, s13));
    mw_tensor ci = i64_tensor(2, s12, (int64_t[]){2, -1});
    CHECK_OK(mw_tensor_scatter_add_(&zi, 1, &ci, &src));
    CHECK_VALUES(zi, 0, 0, 11);
    /* errors leave self unchanged */
    mw_tensor sb = i64_tensor(2, s12, (int64_t[]){0, 3});
    CHECK_ERR(mw_tensor_scatter_add_(&zi, 1, &sb, &src), "scatter_add_: index 3 out of range for dim 1 of [1,3]");
    CHECK_VALUES(zi, 0, 0, 11);
    CHECK_ERR(mw_tensor_scatter_add_(&z, 0, &si, &src), "scatter_add_: src is int64, self is float32");
    CHECK_ERR(mw_tensor_scatter_add_(&z, 0, &si, &a), "scatter_add_: index [2,5] is larger than src [2,2] at dim 1");
    CHECK_ERR(mw_tensor_scatter_add_(&z, 2, &si, &ones), "scatter_add_: dim 2 out of range for [3,5]");
    mw_tensor bl;
    CHECK_OK(mw_tensor_zeros(&bl, MW_BOOL, 2, s35));
    CHECK_ERR(mw_tensor_scatter_add_(&bl, 0, &si, &ones), "scatter_add_: bool tensor");

    mw_tensor_release(&bl);
    mw_tensor_release(&sb);
    mw_tensor_release(&ci);
    mw_tensor_release(&src);
    mw_tensor_release(&zi);
    mw_tensor_release(&si1);
    mw_tensor_release(&si);
    mw_tensor_release(&ones);
    mw_tensor_release(&z);
    mw_tensor_release(&i1);
    mw_tensor_release(&big);
    mw_tensor_release(&i21);
    mw_tensor_release(&i12);
    mw_tensor_release(&idx);
    mw_tensor_release(&a);
}

static mw_tensor bool_tensor(int ndim, const int64_t *shape, const uint8_t *v)
{
    mw_tensor t;
    if (mw_tensor_from_data(&t, MW_BOOL, ndim, shape, v)) memset(&t, 0, sizeof t);
    return t;
}

static void test_masks(void)
{
    int64_t sh[2] = {2, 3}, s3 = 3, s21[2] = {2, 1};
    mw_tensor a = iota_f(2, sh), r;
    /* mask [3] = [1,0,1] broadcast over rows: 0, 2, 3, 5 */
    mw_tensor m3 = bool_tensor(1, &s3, (uint8_t[]){1, 0, 1});
    CHECK_OK(mw_tensor_masked_select(&r, &a, &m3));
    CHECK_SHAPE(&r, "[4]");
    CHECK_VALUES(r, 0, 2, 3, 5);
    mw_tensor_release(&r);
    /* mask [2,1] = [[0],[1]]: row 1 */
    mw_tensor m21 = bool_tensor(2, s21, (uint8_t[]){0, 1});
    CHECK_OK(mw_tensor_masked_select(&r, &a, &m21));
    CHECK_VALUES(r, 3, 4, 5);
    mw_tensor_release(&r);
    /* input broadcast too: a row [3] against a [2,3] mask */
    mw_tensor row;
    CHECK_OK(mw_tensor_select(&row, &a, 0, 1)); /* [3,4,5] */
    mw_tensor m23 = bool_tensor(2, sh, (uint8_t[]){1, 1, 0, 0, 0, 1});
    CHECK_OK(mw_tensor_masked_select(&r, &row, &m23));
    CHECK_VALUES(r, 3, 4, 5);
    mw_tensor_release(&r);
    mw_tensor m0 = bool_tensor(1, &s3, (uint8_t[]){0, 0, 0});
    CHECK_OK(mw_tensor_masked_select(&r, &a, &m0));
    CHECK_SHAPE(&r, "[0]");
    mw_tensor_release(&r);
    CHECK_ERR(mw_tensor_masked_select(&r, &a, &a), "masked_select: mask must be bool, got float32 [2,3]");
    int64_t s2 = 2;
    mw_tensor m2 = bool_tensor(1, &s2, (uint8_t[]){1, 0});
    CHECK_ERR(mw_tensor_masked_select(&r, &a, &m2), "masked_select: shapes [2,3] and [2] cannot be broadcast");
    CHECK_ZEROED(r);

    /* masked_fill_: rows where m21 is set, through a transposed view */
    CHECK_OK(mw_tensor_masked_fill_(&a, &m21, -1)); /* [[0,1,2],[-1,-1,-1]] */
    CHECK_VALUES(a, 0, 1, 2, -1, -1, -1);
    mw_tensor at;
    CHECK_OK(mw_tensor_transpose(&at, &a, 0, 1)); /* [3,2] */
    mw_tensor m31 = bool_tensor(2, (int64_t[]){3, 1}, (uint8_t[]){0, 1, 0});
    CHECK_OK(mw_tensor_masked_fill_(&at, &m31, 9)); /* at row 1 = a column 1 */
    CHECK_VALUES(a, 0, 9, 2, -1, 9, -1);
    /* the causal mask of attention: fill j > i of a [3,3] with -inf */
    int64_t s33[2] = {3, 3};
    mw_tensor sc = iota_f(2, s33), ones, causal;
    CHECK_OK(mw_tensor_full(&ones, MW_BOOL, 2, s33, 1));
    CHECK_OK(mw_tensor_triu(&causal, &ones, 1));
    CHECK_OK(mw_tensor_masked_fill_(&sc, &causal, -INFINITY));
    CHECK_VALUES(sc, 0, -INFINITY, -INFINITY, 3, 4, -INFINITY, 6, 7, 8);
    /* int64 self and value checks */
    mw_tensor zi;
    CHECK_OK(mw_tensor_zeros(&zi, MW_I64, 1, &s3));
    CHECK_OK(mw_tensor_masked_fill_(&zi, &m3, 4.7));
    CHECK_VALUES(zi, 4, 0, 4);
    CHECK_ERR(mw_tensor_masked_fill_(&zi, &m3, NAN), "masked_fill_: value nan does not fit int64");
    CHECK_ERR(mw_tensor_masked_fill_(&a, &m2, 1), "masked_fill_: [2] cannot be broadcast to [2,3]");
    CHECK_ERR(mw_tensor_masked_fill_(&zi, &m23, 1), "masked_fill_: [2,3] cannot be broadcast to [3] (more dims)");
    CHECK_ERR(mw_tensor_masked_fill_(&a, &zi, 1), "masked_fill_: mask must be bool, got int64 [3]");
    /* a mask that is a view of self: self is a bool tensor masked by itself transposed */
    mw_tensor bb = bool_tensor(2, (int64_t[]){2, 2}, (uint8_t[]){1, 0, 1, 0}), bbt;
    CHECK_OK(mw_tensor_transpose(&bbt, &bb, 0, 1)); /* [[1,1],[0,0]] read before writing */
    CHECK_OK(mw_tensor_masked_fill_(&bb, &bbt, 0)); /* clears row 0: [[0,0],[1,0]] */
    CHECK_VALUES(bb, 0, 0, 1, 0);

    mw_tensor_release(&bbt);
    mw_tensor_release(&bb);
    mw_tensor_release(&zi);
    mw_tensor_release(&causal);
    mw_tensor_release(&ones);
    mw_tensor_release(&sc);
    mw_tensor_release(&m31);
    mw_tensor_release(&at);
    mw_tensor_release(&m2);
    mw_tensor_release(&m0);
    mw_tensor_release(&m23);
    mw_tensor_release(&row);
    mw_tensor_release(&m21);
    mw_tensor_release(&m3);
    mw_tensor_release(&a);
}

static void test_nonzero(void)
{
    /* [[0,1,0],[2,0,3]] -> [[0,1],[1,0],[1,2]] */
    float v[6] = {0, 1, 0, 2, 0, 3};
    int64_t sh[2] = {2, 3};
    mw_tensor a, r, at;
    CHECK_OK(mw_tensor_from_data(&a, MW_F32, 2, sh, v));
    CHECK_OK(mw_tensor_nonzero(&r, &a));
    CHECK(r.dtype == MW_I64);
    CHECK_SHAPE(&r, "[3,2]");
    CHECK_VALUES(r, 0, 1, 1, 0, 1, 2);
    mw_tensor_release(&r);
    /* transposed: [[0,2],[1,0],[0,3]] -> [[0,1],[1,0],[2,1]] */
    CHECK_OK(mw_tensor_transpose(&at, &a, 0, 1));
    CHECK_OK(mw_tensor_nonzero(&r, &at));
    CHECK_VALUES(r, 0, 1, 1, 0, 2, 1);
    mw_tensor_release(&r);
    /* NaN is nonzero; bool and int64 inputs; 0-dim gives [n,0] */
    float w[3] = {NAN, 0, -0.0f};
    int64_t s3 = 3;
    mw_tensor f;
    CHECK_OK(mw_tensor_from_data(&f, MW_F32, 1, &s3, w));
    CHECK_OK(mw_tensor_nonzero(&r, &f));
    CHECK_SHAPE(&r, "[1,1]");
    CHECK_VALUES(r, 0);
    mw_tensor_release(&r);
    mw_tensor b = bool_tensor(1, &s3, (uint8_t[]){0, 1, 1});
    CHECK_OK(mw_tensor_nonzero(&r, &b));
    CHECK_VALUES(r, 1, 2);
    mw_tensor_release(&r);
    mw_tensor s;
    CHECK_OK(mw_tensor_scalar(&s, MW_I64, 5));
    CHECK_OK(mw_tensor_nonzero(&r, &s));
    CHECK_SHAPE(&r, "[1,0]");
    mw_tensor_release(&r);
    mw_tensor_release(&s);
    CHECK_OK(mw_tensor_scalar(&s, MW_I64, 0));
    CHECK_OK(mw_tensor_nonzero(&r, &s));
    CHECK_SHAPE(&r, "[0,0]");
    mw_tensor_release(&r);
    mw_tensor none = {0};
    CHECK_ERR(mw_tensor_nonzero(&r, &none), "nonzero: tensor has no storage");
    CHECK_ZEROED(r);
    mw_tensor_release(&s);
    mw_tensor_release(&b);
    mw_tensor_release(&f);
    mw_tensor_release(&at);
    mw_tensor_release(&a);
}

static void test_cat_stack(void)
{
    int64_t sh[2] = {2, 3}, s13[2] = {1, 3}, s22[2] = {2, 2};
    mw_tensor a = iota_f(2, sh), b, c, r;
    CHECK_OK(mw_tensor_full(&b, MW_F32, 2, s13, 100));
    CHECK_OK(mw_tensor_full(&c, MW_F32, 2, s22, -1));
    const mw_tensor *ab[2] = {&a, &b};
    CHECK_OK(mw_tensor_cat(&r, 2, ab, 0));
    CHECK_SHAPE(&r, "[3,3]");
    CHECK_VALUES(r, 0, 1, 2, 3, 4, 5, 100, 100, 100);
    mw_tensor_release(&r);
    const mw_tensor *ac[3] = {&c, &a, &c};
    CHECK_OK(mw_tensor_cat(&r, 3, ac, -1));
    CHECK_SHAPE(&r, "[2,7]");
    CHECK_VALUES(r, -1, -1, 0, 1, 2, -1, -1, -1, -1, 3, 4, 5, -1, -1);
    mw_tensor_release(&r);
    /* strided input and the legacy empty [0] skipped */
    mw_tensor at, e;
    CHECK_OK(mw_tensor_transpose(&at, &a, 0, 1)); /* [3,2] = [[0,3],[1,4],[2,5]] */
    int64_t z = 0;
    CHECK_OK(mw_tensor_zeros(&e, MW_F32, 1, &z));
    const mw_tensor *eat[3] = {&e, &at, &c};
    CHECK_OK(mw_tensor_cat(&r, 3, eat, 0));
    CHECK_SHAPE(&r, "[5,2]");
    CHECK_VALUES(r, 0, 3, 1, 4, 2, 5, -1, -1, -1, -1);
    mw_tensor_release(&r);
    const mw_tensor *ee[2] = {&e, &e};
    CHECK_OK(mw_tensor_cat(&r, 2, ee, 0));
    CHECK_SHAPE(&r, "[0]");
    mw_tensor_release(&r);
    /* a single tensor: a copy */
    const mw_tensor *one[1] = {&a};
    CHECK_OK(mw_tensor_cat(&r, 1, one, 1));
    CHECK(r.storage != a.storage);
    CHECK_VALUES(r, 0, 1, 2, 3, 4, 5);
    mw_tensor_release(&r);

    memset(&r, 0x44, sizeof r);
    CHECK_ERR(mw_tensor_cat(&r, 2, ab, 1), "cat: shapes [2,3] (tensor 0) and [1,3] (tensor 1) differ outside dim 1");
    CHECK_ZEROED(r);
    CHECK_ERR(mw_tensor_cat(&r, 2, ab, 2), "cat: dim 2 out of range for [2,3]");
    CHECK_ERR(mw_tensor_cat(&r, 0, ab, 0), "cat: needs at least one tensor, got 0");
    mw_tensor bi, s;
    CHECK_OK(mw_tensor_to_dtype(&bi, &b, MW_I64));
    const mw_tensor *abi[2] = {&a, &bi};
    CHECK_ERR(mw_tensor_cat(&r, 2, abi, 0), "cat: tensor 1 is int64, tensor 0 is float32");
    CHECK_OK(mw_tensor_scalar(&s, MW_F32, 1));
    const mw_tensor *ss[2] = {&s, &s};
    CHECK_ERR(mw_tensor_cat(&r, 2, ss, 0), "cat: tensor 0 is 0-dim and cannot be concatenated");
    mw_tensor v3;
    CHECK_OK(mw_tensor_select(&v3, &a, 0, 0));
    const mw_tensor *av[2] = {&a, &v3};
    CHECK_ERR(mw_tensor_cat(&r, 2, av, 0), "cat: shapes [2,3] (tensor 0) and [3] (tensor 1)");
    CHECK_ZEROED(r);

    /* stack two rows [3]: dim 0 -> [2,3], dim 1 -> [3,2], dim -1 the same */
    mw_tensor r0, r1;
    CHECK_OK(mw_tensor_select(&r0, &a, 0, 0)); /* 0 1 2 */
    CHECK_OK(mw_tensor_select(&r1, &a, 1, 1)); /* column 1: 1 4 (a [2]) */
    const mw_tensor *rr[2] = {&r0, &v3};
    CHECK_OK(mw_tensor_stack(&r, 2, rr, 0));
    CHECK_SHAPE(&r, "[2,3]");
    CHECK_VALUES(r, 0, 1, 2, 0, 1, 2);
    mw_tensor_release(&r);
    mw_tensor r2;
    CHECK_OK(mw_tensor_select(&r2, &a, 0, 1)); /* 3 4 5 */
    const mw_tensor *r02[2] = {&r0, &r2};
    CHECK_OK(mw_tensor_stack(&r, 2, r02, 1));
    CHECK_SHAPE(&r, "[3,2]");
    CHECK_VALUES(r, 0, 3, 1, 4, 2, 5);
    mw_tensor_release(&r);
    CHECK_OK(mw_tensor_stack(&r, 2, r02, -1));
    CHECK_VALUES(r, 0, 3, 1, 4, 2, 5);
    mw_tensor_release(&r);
    CHECK_OK(mw_tensor_stack(&r, 2, ss, 0)); /* 0-dim tensors stack into [2] */
    CHECK_SHAPE(&r, "[2]");
    CHECK_VALUES(r, 1, 1);
    mw_tensor_release(&r);
    const mw_tensor *bad[2] = {&r0, &r1};
    CHECK_ERR(mw_tensor_stack(&r, 2, bad, 0), "stack: tensor 1 has shape [2], tensor 0 has [3]");
    CHECK_ERR(mw_tensor_stack(&r, 2, r02, 2), "stack: dim 2 out of range for stacking [3] (allowed -2..1)");
    CHECK_ERR(mw_tensor_stack(&r, 0, r02, 0), "stack: needs at least one tensor");
    mw_tensor bi0;
    CHECK_OK(mw_tensor_select(&bi0, &bi, 0, 0));
    const mw_tensor *mixed[2] = {&r0, &bi0};
    CHECK_ERR(mw_tensor_stack(&r, 2, mixed, 0), "stack: tensor 1 is int64, tensor 0 is float32");
    CHECK_ZEROED(r);

    mw_tensor_release(&bi0);
    mw_tensor_release(&r2);
    mw_tensor_release(&r1);
    mw_tensor_release(&r0);
    mw_tensor_release(&v3);
    mw_tensor_release(&s);
    mw_tensor_release(&bi);
    mw_tensor_release(&e);
    mw_tensor_release(&at);
    mw_tensor_release(&c);
    mw_tensor_release(&b);
    mw_tensor_release(&a);
}

/* ---------------------------------------------------------------- printing */

static void test_format(void)
{
    int n = (int)(sizeof FMT_CASES / sizeof FMT_CASES[0]);
    for (int k = 0; k < n; k++) {
        const struct fmt_case *c = &FMT_CASES[k];
        mw_tensor t, v;
        if (mw_tensor_zeros(&t, c->dtype, c->ndim, c->shape)) {
            CHECK_MSG(0, "%s: %s", c->name, mw_error());
            continue;
        }
        int64_t numel = mw_tensor_numel(&t);
        for (int64_t i = 0; i < numel; i++) {
            char *p = (char *)t.storage->data + i * (int64_t)mw_dtype_size(c->dtype);
            if (c->dtype == MW_I64) *(int64_t *)p = c->lin ? (int64_t)c->lin_a * i + (int64_t)c->lin_b : c->iv[i];
            else if (c->dtype == MW_F32) *(float *)p = (float)(c->lin ? c->lin_a * (double)i + c->lin_b : c->fv[i]);
            else *(uint8_t *)p = c->fv[i] != 0;
        }
        if (c->transpose) {
            CHECK_OK(mw_tensor_transpose(&v, &t, -2, -1));
        } else {
            mw_tensor_share(&v, &t);
        }
        char *s = mw_tensor_format(&v);
        CHECK_MSG(s && strcmp(s, c->expected) == 0, "%s:\n got:\n%s\n expected:\n%s", c->name, s ? s : mw_error(),
                  c->expected);
        free(s);
        mw_tensor_release(&v);
        mw_tensor_release(&t);
    }
    mw_tensor none = {0};
    CHECK(mw_tensor_format(&none) == NULL && strstr(mw_error(), "format: tensor has no storage"));
}


/* ---------------------------------------------------------------- against PyTorch */

/* torch.linspace and torch.arange (float32) give exactly these values */
static void test_creation_torch(void)
{
    for (size_t k = 0; k < sizeof LIN_CASES / sizeof LIN_CASES[0]; k++) {
        const struct lin_case *c = &LIN_CASES[k];
        mw_tensor t;
        CHECK_OK(mw_tensor_linspace(&t, c->start, c->end, c->steps));
        for (int64_t i = 0; i < c->steps; i++)
            CHECK_MSG(((float *)t.storage->data)[i] == (float)c->v[i], "linspace(%g, %g, %lld)[%lld] = %.9g, torch %.9g",
                      c->start, c->end, (long long)c->steps, (long long)i, ((float *)t.storage->data)[i], c->v[i]);
        mw_tensor_release(&t);
    }
    for (size_t k = 0; k < sizeof ARANGE_CASES / sizeof ARANGE_CASES[0]; k++) {
        const struct arange_case *c = &ARANGE_CASES[k];
        mw_tensor t;
        CHECK_OK(mw_tensor_arange(&t, MW_F32, c->start, c->end, c->step));
        CHECK_MSG(mw_tensor_numel(&t) == c->n, "arange(%g, %g, %g): %lld values, torch %lld", c->start, c->end, c->step,
                  (long long)mw_tensor_numel(&t), (long long)c->n);
        for (int64_t i = 0; i < c->n && i < mw_tensor_numel(&t); i++)
            CHECK_MSG(((float *)t.storage->data)[i] == (float)c->v[i], "arange(%g, %g, %g)[%lld] = %.9g, torch %.9g",
                      c->start, c->end, c->step, (long long)i, ((float *)t.storage->data)[i], c->v[i]);
        mw_tensor_release(&t);
    }
}

/* Random chains of views replayed: torch's shape, strides (of dims longer than 1, the others
 * carry no meaning), storage offset and sharing, or the op torch refused. */
static void test_views_torch(void)
{
    int n = (int)(sizeof VIEW_CASES / sizeof VIEW_CASES[0]);
    for (int k = 0; k < n; k++) {
        const struct view_case *c = &VIEW_CASES[k];
        mw_tensor base = iota_f(c->base_ndim, c->base_shape), t, r;
        mw_tensor_share(&t, &base);
        int failed_at = -1;
        for (int i = 0; i < c->nops && failed_at < 0; i++) {
            const int64_t *a = c->ops[i].a;
            int na = c->ops[i].nargs, rc = -1;
            int perm[MW_MAXDIM];
            switch (c->ops[i].op) {
            case VOP_NARROW: rc = mw_tensor_narrow(&r, &t, (int)a[0], a[1], a[2]); break;
            case VOP_SELECT: rc = mw_tensor_select(&r, &t, (int)a[0], a[1]); break;
            case VOP_TRANSPOSE: rc = mw_tensor_transpose(&r, &t, (int)a[0], (int)a[1]); break;
            case VOP_PERMUTE:
                for (int d = 0; d < na; d++) perm[d] = (int)a[d];
                rc = mw_tensor_permute(&r, &t, perm);
                break;
            case VOP_VIEW: rc = mw_tensor_view(&r, &t, na, a); break;
            case VOP_RESHAPE: rc = mw_tensor_reshape(&r, &t, na, a); break;
            case VOP_UNSQUEEZE: rc = mw_tensor_unsqueeze(&r, &t, (int)a[0]); break;
            case VOP_SQUEEZE: rc = mw_tensor_squeeze(&r, &t, (int)a[0]); break;
            case VOP_EXPAND: rc = mw_tensor_expand(&r, &t, na, a); break;
            case VOP_DIAGONAL: rc = mw_tensor_diagonal(&r, &t, a[0], (int)a[1], (int)a[2]); break;
            }
            if (rc) {
                failed_at = i;
                CHECK_MSG(is_zeroed(&r), "chain %d op %d: output not zeroed", k, i);
            } else {
                mw_tensor_release(&t);
                t = r;
            }
        }
        CHECK_MSG(failed_at == c->err_at, "chain %d: failed at op %d (%s), torch at %d", k, failed_at,
                  failed_at >= 0 ? mw_error() : "-", c->err_at);
        if (failed_at < 0 && c->err_at < 0) {
            char want[256];
            mw_shape_str(want, sizeof want, c->ndim, c->shape);
            CHECK_MSG(t.ndim == c->ndim && strcmp(shape_of(&t), want) == 0, "chain %d: shape %s, torch %s", k,
                      shape_of(&t), want);
            int64_t numel = mw_tensor_numel(&t);
            int same_strides = 1;
            for (int d = 0; d < t.ndim && d < c->ndim; d++)
                if (t.shape[d] > 1 && t.stride[d] != c->stride[d]) same_strides = 0;
            if (numel > 0) {
                mw_shape_str(want, sizeof want, c->ndim, c->stride);
                CHECK_MSG(same_strides, "chain %d: strides %s, torch %s", k, stride_of(&t), want);
                CHECK_MSG(t.offset == c->offset, "chain %d: offset %lld, torch %lld", k, (long long)t.offset,
                          (long long)c->offset);
            }
            CHECK_MSG((t.storage == base.storage) == c->shares, "chain %d: shares storage %d, torch %d", k,
                      t.storage == base.storage, c->shares);
        }
        mw_tensor_release(&t);
        mw_tensor_release(&base);
    }
}


/* copies that read across the source's unit-stride dim go through the tiled path: sizes past
 * one 32x32 tile, an outer dim, and a dtype conversion; values from the index formula */
static void test_copy_tiled(void)
{
    int64_t sh[3] = {3, 20, 37};
    mw_tensor a = iota_f(3, sh), t, c, ci; /* a[j][k][i] = 740 j + 37 k + i */
    int perm[3] = {2, 0, 1};
    CHECK_OK(mw_tensor_permute(&t, &a, perm)); /* t[i][j][k] = a[j][k][i], [37,3,20] */
    CHECK_OK(mw_tensor_contiguous(&c, &t));
    CHECK_OK(mw_tensor_to_dtype(&ci, &t, MW_I64));
    int bad = 0;
    for (int64_t i = 0; i < 37; i++)
        for (int64_t j = 0; j < 3; j++)
            for (int64_t k = 0; k < 20; k++) {
                int64_t want = 740 * j + 37 * k + i, off = (i * 3 + j) * 20 + k;
                bad += ((float *)c.storage->data)[off] != (float)want;
                bad += ((int64_t *)ci.storage->data)[off] != want;
            }
    CHECK_MSG(bad == 0, "%d wrong elements", bad);
    mw_tensor_release(&ci);
    mw_tensor_release(&c);
    mw_tensor_release(&t);
    /* a 2-D transpose of [70,45]: c[i][j] = a[j][i] = 45 j + i */
    int64_t s2[2] = {70, 45};
    mw_tensor m = iota_f(2, s2);
    CHECK_OK(mw_tensor_transpose(&t, &m, 0, 1));
    CHECK_OK(mw_tensor_clone(&c, &t));
    bad = 0;
    for (int64_t i = 0; i < 45; i++)
        for (int64_t j = 0; j < 70; j++) bad += ((float *)c.storage->data)[i * 70 + j] != (float)(45 * j + i);
    CHECK_MSG(bad == 0, "%d wrong elements", bad);
    mw_tensor_release(&c);
    mw_tensor_release(&t);
    mw_tensor_release(&m);
    mw_tensor_release(&a);
}


/* gather, scatter_add_, index_select, masked_select, masked_fill_, nonzero, cat and stack on
 * random shapes against PyTorch's results (tests/fixtures/gen_tensor.py) */
static void test_indexing_torch(void)
{
    int n = (int)(sizeof IDX_CASES / sizeof IDX_CASES[0]);
    static const char *names[] = {"gather", "scatter_add_", "index_select", "masked_select",
                                  "masked_fill_", "nonzero", "cat", "stack"};
    for (int k = 0; k < n; k++) {
        const struct idx_case *c = &IDX_CASES[k];
        mw_tensor base = iota_f(c->a_ndim, c->a_shape), a, idx = {0}, b = {0}, r = {0};
        if (c->transpose_a) CHECK_OK(mw_tensor_transpose(&a, &base, -1, -2));
        else mw_tensor_share(&a, &base);
        if (c->i_ndim) {
            int64_t ni = 1;
            for (int d = 0; d < c->i_ndim; d++) ni *= c->i_shape[d];
            if (c->op == IOP_MASKED_SELECT || c->op == IOP_MASKED_FILL || c->op == IOP_NONZERO) {
                uint8_t *m = malloc((size_t)ni + 1);
                for (int64_t i = 0; i < ni; i++) m[i] = (uint8_t)c->iv[i];
                CHECK_OK(mw_tensor_from_data(&idx, MW_BOOL, c->i_ndim, c->i_shape, m));
                free(m);
            } else {
                CHECK_OK(mw_tensor_from_data(&idx, MW_I64, c->i_ndim, c->i_shape, c->iv));
            }
        }
        if (c->b_ndim) { /* b = 100 + arange */
            b = iota_f(c->b_ndim, c->b_shape);
            float *bv = b.storage->data;
            for (int64_t i = 0; i < mw_tensor_numel(&b); i++) bv[i] += 100;
        }
        int rc = -1;
        const mw_tensor *ab[2] = {&a, &b};
        switch (c->op) {
        case IOP_GATHER: rc = mw_tensor_gather(&r, &a, c->dim, &idx); break;
        case IOP_SCATTER_ADD:
            if (mw_tensor_clone(&r, &a) == 0) rc = mw_tensor_scatter_add_(&r, c->dim, &idx, &b);
            break;
        case IOP_INDEX_SELECT: rc = mw_tensor_index_select(&r, &a, c->dim, &idx); break;
        case IOP_MASKED_SELECT: rc = mw_tensor_masked_select(&r, &a, &idx); break;
        case IOP_MASKED_FILL:
            if (mw_tensor_clone(&r, &a) == 0) rc = mw_tensor_masked_fill_(&r, &idx, -7.5);
            break;
        case IOP_NONZERO:
            /* torch's input: a with the elements of the given mask zeroed (a may be transposed) */
            if (mw_tensor_masked_fill_(&a, &idx, 0) == 0) rc = mw_tensor_nonzero(&r, &a);
            break;
        case IOP_CAT: rc = mw_tensor_cat(&r, 2, ab, c->dim); break;
        case IOP_STACK: rc = mw_tensor_stack(&r, 2, ab, c->dim); break;
        }
        if (c->err) {
            CHECK_MSG(rc != 0, "case %d (%s): succeeded, torch failed", k, names[c->op]);
        } else if (rc != 0) {
            CHECK_MSG(0, "case %d (%s): %s", k, names[c->op], mw_error());
        } else {
            char want[256];
            mw_shape_str(want, sizeof want, c->out_ndim, c->out_shape);
            CHECK_MSG(strcmp(shape_of(&r), want) == 0, "case %d (%s): shape %s, torch %s", k, names[c->op],
                      shape_of(&r), want);
            if (strcmp(shape_of(&r), want) == 0 && mw_tensor_numel(&r) > 0)
                CHECK_MSG(values_are(&r, c->out), "case %d (%s): values differ", k, names[c->op]);
        }
        mw_tensor_release(&r);
        mw_tensor_release(&b);
        mw_tensor_release(&idx);
        mw_tensor_release(&a);
        mw_tensor_release(&base);
    }
}

/* every storage created above was released */
/* Freed large storages kept for reuse (mw_storage_keep_freed): a request of about the same size
 * gets the same memory back, zeroed for mw_storage_new, holding the copy for a clone; the budget
 * bounds what is kept; trim and a zero budget give it back. Under ASan large storages are plain
 * calloc and nothing is kept. */
static void test_keep_freed(void)
{
#if defined(__SANITIZE_ADDRESS__)
    printf("  (AddressSanitizer build: large storages are calloc'd, nothing to keep)\n");
    CHECK(mw_storage_kept_bytes() == 0);
#else
    const int64_t n = 4 << 20, mb2 = 2 << 20; /* 16 MB of floats */
    CHECK(mw_storage_kept_bytes() == 0);
    /* no budget (the library's default): freed memory goes back at once */
    mw_storage *a = mw_storage_new(MW_F32, n);
    CHECK(a != NULL);
    mw_storage_release(a);
    CHECK(mw_storage_kept_bytes() == 0);

    mw_storage_keep_freed(40 << 20);
    int64_t big = n + n / 20, kept = (big * 4 + mb2 - 1) / mb2 * mb2; /* 16.8 MB: an 18 MB mapping */
    a = mw_storage_new(MW_F32, big);
    float *pa = a->data;
    for (int64_t i = 0; i < big; i++) pa[i] = 1.5f;
    mw_storage_release(a);
    CHECK(mw_storage_kept_bytes() == kept);
    /* 16 MB: served from the kept 18 MB mapping (at most a quarter larger), which comes back zeroed */
    mw_storage *b = mw_storage_new(MW_F32, n);
    CHECK(b && b->data == (void *)pa);
    CHECK(mw_storage_kept_bytes() == 0);
    int zeros = 1;
    for (int64_t i = 0; i < n; i++) zeros &= ((float *)b->data)[i] == 0.0f;
    CHECK(zeros);
    mw_storage_release(b); /* kept with its mapping's whole length */
    CHECK(mw_storage_kept_bytes() == kept);
    /* twice the size: not served from it (more than a quarter larger) */
    mw_storage *c = mw_storage_new(MW_F32, 2 * n);
    CHECK(c && c->data != (void *)pa && mw_storage_kept_bytes() == kept);
    /* freeing it would exceed the 40 MB budget: the oldest kept mapping is unmapped first */
    mw_storage_release(c);
    CHECK(mw_storage_kept_bytes() == 2 * n * 4);
    mw_storage_trim();
    CHECK(mw_storage_kept_bytes() == 0);
    /* a clone into kept memory holds the source's values, not the old contents */
    mw_tensor src, cl;
    int64_t shape[2] = {2, n / 2};
    CHECK_OK(mw_tensor_full(&src, MW_F32, 2, shape, 0.25));
    mw_storage *d = mw_storage_new(MW_F32, n);
    for (int64_t i = 0; i < n; i++) ((float *)d->data)[i] = 1.5f;
    void *pd = d->data;
    mw_storage_release(d);
    CHECK_OK(mw_tensor_clone(&cl, &src));
    CHECK(cl.storage->data == pd);
    int quarter = 1;
    for (int64_t i = 0; i < n; i++) quarter &= ((float *)cl.storage->data)[i] == 0.25f;
    CHECK(quarter);
    mw_tensor_release(&cl);
    mw_tensor_release(&src);
    CHECK(mw_storage_kept_bytes() == 2 * n * 4);
    mw_storage_trim();
    CHECK(mw_storage_kept_bytes() == 0);
    /* out of address space while memory is kept: it is given back and the request retried (in a
     * child process, whose address-space limit leaves room for the request only without the kept
     * 64 MB) */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        mw_storage_keep_freed(128 << 20);
        mw_storage *k = mw_storage_new(MW_F32, 16 << 20); /* 64 MB */
        mw_storage_release(k);
        if (mw_storage_kept_bytes() != 64 << 20) _exit(2);
        FILE *f = fopen("/proc/self/statm", "r");
        long vm_pages = 0;
        if (!f || fscanf(f, "%ld", &vm_pages) != 1) _exit(3);
        fclose(f);
        rlim_t limit = (rlim_t)vm_pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)40 << 20);
        struct rlimit rl = {limit, limit};
        if (setrlimit(RLIMIT_AS, &rl)) _exit(4);
        mw_storage *big = mw_storage_new(MW_F32, 22 << 20); /* 88 MB: more than a quarter above 64 MB */
        _exit(big && mw_storage_kept_bytes() == 0 ? 0 : 5);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child exit status %d", WEXITSTATUS(status));
    /* larger than the whole budget: never kept */
    a = mw_storage_new(MW_F32, 16 << 20);
    mw_storage_release(a);
    CHECK(mw_storage_kept_bytes() == 0);
    mw_storage_keep_freed(0);
#endif
}

static void test_no_leaks(void) { CHECK(mw_storage_live_bytes() == 0); }

int main(void)
{
    RUN(test_errors);
    RUN(test_storage);
    RUN(test_header);
    RUN(test_creation);
    RUN(test_tril_triu);
    RUN(test_creation_errors);
    RUN(test_rng);
    RUN(test_fill_normal);
    RUN(test_narrow_select);
    RUN(test_transpose_permute);
    RUN(test_view_reshape);
    RUN(test_unsqueeze_squeeze);
    RUN(test_expand);
    RUN(test_diagonal);
    RUN(test_copies);
    RUN(test_index_select);
    RUN(test_gather_scatter);
    RUN(test_masks);
    RUN(test_nonzero);
    RUN(test_cat_stack);
    RUN(test_format);
    RUN(test_creation_torch);
    RUN(test_views_torch);
    RUN(test_copy_tiled);
    RUN(test_indexing_torch);
    RUN(test_keep_freed);
    RUN(test_no_leaks);
    MW_TEST_MAIN_END();
}
