/* ops.c - element-wise ops with numpy broadcasting, reductions, softmax, cumsum, sort and topk.
 *
 * Everything here walks tensors through one strided iterator: the operands' shapes are broadcast,
 * size-1 dims dropped and adjacent dims merged where every operand is contiguous across them, and
 * the innermost (merged) dim becomes a "row" handed to a kernel with one stride per operand. The
 * float32 kernels have a branch for unit strides (and for a broadcast scalar) that the compiler
 * turns into a plain loop over contiguous memory; other dtype mixes go through a generic per-element
 * path that loads each value by dtype.
 *
 * dtype rules (the header's, plus what it leaves open):
 *   arithmetic  F32 if either operand is F32, else I64 (BOOL counts as I64); DIV always F32.
 *               I64 add/sub/mul wrap around on overflow; I64 pow with a negative exponent is an
 *               error, as in torch ("integers to negative integer powers are not allowed").
 *   compare, AND, OR   MW_BOOL, computed in float32 when either operand is F32, else in int64.
 *   scalar forms       the scalar is I64 when the tensor is I64/BOOL and the scalar is integral
 *               (so x + 1 stays I64 as in torch), else F32.
 *   unary       F32 -> F32. On I64/BOOL: NEG ABS RELU SIGN FLOOR CEIL ROUND give I64, NOT gives
 *               BOOL, the rest convert to F32 first. NOT is logical (x == 0) for every dtype.
 *   reductions  F32 -> F32 with sums, products and means accumulated in double. On I64/BOOL:
 *               SUM and PROD give I64, AMAX/AMIN keep the dtype, the rest give F32.
 *   softmax, log_softmax, sort, topk   float32 input (sort/topk also take I64).
 */
#include "mw_tensor.h"
#include "parallel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHAPE_BUF (8 * MW_MAXDIM * 21)
#define MAXOP 4

static const char *const binop_name[] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or"};
static const char *const unop_name[] = {
    "neg", "exp", "log", "sqrt", "abs", "tanh", "relu", "gelu_new", "sigmoid",
    "logical_not", "sin", "cos", "floor", "ceil", "round", "sign"};
static const char *const redop_name[] = {
    "sum", "mean", "prod", "amax", "amin", "norm", "logsumexp", "var", "std"};
_Static_assert(sizeof binop_name / sizeof *binop_name == MW_OR + 1, "binop names");
_Static_assert(sizeof unop_name / sizeof *unop_name == MW_SIGN + 1, "unop names");
_Static_assert(sizeof redop_name / sizeof *redop_name == MW_STD + 1, "redop names");

/* ================================================================ strided iteration */

/* Up to MAXOP operands walked over one (broadcast) shape. stride[k][d] is operand k's stride for
 * dim d in elements, 0 where it is broadcast. After iter_init, ndim >= 1 and the last dim is the
 * row that kernels loop over. */
typedef struct {
    int ndim, nop;
    int64_t shape[MW_MAXDIM];
    int64_t stride[MAXOP][MW_MAXDIM];
    int64_t rep; /* reductions: each element stands for rep copies (stride-0 dims left out) */
} iter;

/* shape/stride: ndim entries each; drops size-1 dims, merges dims that are contiguous for every
 * operand (stride[d] == stride[d+1] * shape[d+1]). */
static void iter_init(iter *it, int nop, int ndim, const int64_t *shape,
                      int64_t (*stride)[MW_MAXDIM])
{
    it->nop = nop;
    it->ndim = 0;
    it->rep = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        int n = it->ndim;
        if (n > 0) {
            int merge = 1;
            for (int k = 0; k < nop; k++) {
                int64_t span;
                if (mw_size_mul(NULL, stride[k][d], shape[d], &span) || it->stride[k][n - 1] != span)
                    merge = 0;
            }
            if (merge) {
                it->shape[n - 1] *= shape[d];
                for (int k = 0; k < nop; k++) it->stride[k][n - 1] = stride[k][d];
                continue;
            }
        }
        it->shape[n] = shape[d];
        for (int k = 0; k < nop; k++) it->stride[k][n] = stride[k][d];
        it->ndim++;
    }
    if (it->ndim == 0) { /* a single element */
        it->ndim = 1;
        it->shape[0] = 1;
        for (int k = 0; k < nop; k++) it->stride[k][0] = 0;
    }
}

static int64_t iter_rows(const iter *it)
{
    int64_t r = 1;
    for (int d = 0; d < it->ndim - 1; d++) r *= it->shape[d];
    return r;
}

/* advances idx (ndim-1 counters) and the operands' element offsets to the next row */
static void iter_next(const iter *it, int64_t *idx, int64_t *off)
{
    for (int d = it->ndim - 2; d >= 0; d--) {
        for (int k = 0; k < it->nop; k++) off[k] += it->stride[k][d];
        if (++idx[d] < it->shape[d]) return;
        for (int k = 0; k < it->nop; k++) off[k] -= it->stride[k][d] * it->shape[d];
        idx[d] = 0;
    }
}

/* numpy broadcasting of n shapes; the message names the op and every shape */
static int broadcast_shapes(const char *op, int n, const mw_tensor *const *ts, int *ndim,
                            int64_t *shape)
{
    int nd = 0;
    for (int i = 0; i < n; i++) if (ts[i]->ndim > nd) nd = ts[i]->ndim;
    for (int d = 0; d < nd; d++) {
        int64_t s = 1;
        for (int i = 0; i < n; i++) {
            int j = d - (nd - ts[i]->ndim);
            if (j < 0) continue;
            int64_t si = ts[i]->shape[j];
            if (si == 1) continue;
            if (s != 1 && s != si) {
                char msg[4 * SHAPE_BUF] = "";
                size_t len = 0;
                for (int q = 0; q < n; q++) {
                    char b[SHAPE_BUF];
                    mw_tensor_shape_str(b, sizeof b, ts[q]);
                    len += snprintf(msg + len, sizeof msg - len, "%s%s", q ? " and " : "", b);
                    if (len >= sizeof msg) break;
                }
                return mw_seterr("%s: %s: shapes cannot be broadcast (dim %d)", op, msg, d);
            }
            s = si;
        }
        shape[d] = s;
    }
    *ndim = nd;
    return 0;
}

/* t's strides seen through the broadcast shape [ndim] (0 on broadcast and leading dims) */
static void broadcast_strides(const mw_tensor *t, int ndim, const int64_t *shape, int64_t *st)
{
    for (int d = 0; d < ndim; d++) {
        int j = d - (ndim - t->ndim);
        st[d] = (j < 0 || (t->shape[j] == 1 && shape[d] != 1)) ? 0 : t->stride[j];
    }
}

static int normdim(const char *op, const mw_tensor *a, int *dim)
{
    int nd = a->ndim ? a->ndim : 1; /* a 0-dim tensor accepts dim 0 / -1 as torch does */
    if (*dim < -nd || *dim >= nd) {
        char b[SHAPE_BUF];
        return mw_seterr("%s: dim %d out of range for %s", op, *dim,
                         mw_tensor_shape_str(b, sizeof b, a));
    }
    if (*dim < 0) *dim += nd;
    return 0;
}

/* ================================================================ typed loads and stores */

static inline float ldf(const void *p, mw_dtype dt, int64_t i)
{
    switch (dt) {
    case MW_F32: return ((const float *)p)[i];
    case MW_I64: return (float)((const int64_t *)p)[i];
    default: return ((const uint8_t *)p)[i];
    }
}
static inline double ldd(const void *p, mw_dtype dt, int64_t i)
{
    switch (dt) {
    case MW_F32: return ((const float *)p)[i];
    case MW_I64: return (double)((const int64_t *)p)[i];
    default: return ((const uint8_t *)p)[i];
    }
}
static inline int64_t ldi(const void *p, mw_dtype dt, int64_t i)
{
    switch (dt) {
    case MW_F32: return (int64_t)((const float *)p)[i];
    case MW_I64: return ((const int64_t *)p)[i];
    default: return ((const uint8_t *)p)[i];
    }
}
static inline void stf(void *p, mw_dtype dt, int64_t i, double v)
{
    switch (dt) {
    case MW_F32: ((float *)p)[i] = (float)v; break;
    case MW_I64: ((int64_t *)p)[i] = (int64_t)v; break;
    default: ((uint8_t *)p)[i] = v != 0; break;
    }
}
static inline void sti(void *p, mw_dtype dt, int64_t i, int64_t v)
{
    switch (dt) {
    case MW_F32: ((float *)p)[i] = (float)v; break;
    case MW_I64: ((int64_t *)p)[i] = v; break;
    default: ((uint8_t *)p)[i] = v != 0; break;
    }
}

/* ================================================================ binary ops */

static inline float fmax_nan(float x, float y) { return (x > y || isnan(x)) ? x : y; }
static inline float fmin_nan(float x, float y) { return (x < y || isnan(x)) ? x : y; }

static inline float fbin(mw_binop op, float x, float y)
{
    switch (op) {
    case MW_ADD: return x + y;
    case MW_SUB: return x - y;
    case MW_MUL: return x * y;
    case MW_DIV: return x / y;
    case MW_POW: return powf(x, y);
    case MW_MAXIMUM: return fmax_nan(x, y);
    case MW_MINIMUM: return fmin_nan(x, y);
    case MW_EQ: return x == y;
    case MW_NE: return x != y;
    case MW_LT: return x < y;
    case MW_LE: return x <= y;
    case MW_GT: return x > y;
    case MW_GE: return x >= y;
    case MW_AND: return x != 0 && y != 0;
    case MW_OR: return x != 0 || y != 0;
    }
    return 0;
}

static int64_t ipow(int64_t b, int64_t e)
{
    if (e < 0) return b == 1 ? 1 : b == -1 ? ((e & 1) ? -1 : 1) : 0;
    uint64_t r = 1, x = (uint64_t)b; /* unsigned: wraps instead of undefined overflow */
    while (e) {
        if (e & 1) r *= x;
        x *= x;
        e >>= 1;
    }
    return (int64_t)r;
}

static inline int64_t ibin(mw_binop op, int64_t x, int64_t y)
{
    switch (op) {
    case MW_ADD: return (int64_t)((uint64_t)x + (uint64_t)y);
    case MW_SUB: return (int64_t)((uint64_t)x - (uint64_t)y);
    case MW_MUL: return (int64_t)((uint64_t)x * (uint64_t)y);
    case MW_DIV: return 0; /* never: DIV is computed in float */
    case MW_POW: return ipow(x, y);
    case MW_MAXIMUM: return x > y ? x : y;
    case MW_MINIMUM: return x < y ? x : y;
    case MW_EQ: return x == y;
    case MW_NE: return x != y;
    case MW_LT: return x < y;
    case MW_LE: return x <= y;
    case MW_GT: return x > y;
    case MW_GE: return x >= y;
    case MW_AND: return x != 0 && y != 0;
    case MW_OR: return x != 0 || y != 0;
    }
    return 0;
}

/* One row of n elements: o[i*so] = EXPR(x = a[i*sa], y = b[i*sb]). The unit-stride and scalar
 * branches are plain loops the compiler vectorizes. */
#define ROW2(EXPR) do { \
    if (so == 1 && sa == 1 && sb == 1) { \
        for (int64_t i = 0; i < n; i++) { float x = a[i], y = b[i]; o[i] = (EXPR); } \
    } else if (so == 1 && sa == 1 && sb == 0) { \
        float y = b[0]; for (int64_t i = 0; i < n; i++) { float x = a[i]; o[i] = (EXPR); } \
    } else if (so == 1 && sa == 0 && sb == 1) { \
        float x = a[0]; for (int64_t i = 0; i < n; i++) { float y = b[i]; o[i] = (EXPR); } \
    } else { \
        for (int64_t i = 0; i < n; i++) { float x = a[i * sa], y = b[i * sb]; o[i * so] = (EXPR); } \
    } } while (0)

/* float32 op float32 -> float32, one row */
static void f32_binary_row(mw_binop op, float *o, const float *a, const float *b, int64_t n,
                           int64_t so, int64_t sa, int64_t sb)
{
    switch (op) {
    case MW_ADD: ROW2(x + y); break;
    case MW_SUB: ROW2(x - y); break;
    case MW_MUL: ROW2(x * y); break;
    case MW_DIV: ROW2(x / y); break;
    case MW_POW: ROW2(powf(x, y)); break;
    case MW_MAXIMUM: ROW2(fmax_nan(x, y)); break;
    case MW_MINIMUM: ROW2(fmin_nan(x, y)); break;
    default: ROW2(fbin(op, x, y)); break;
    }
}

/* float32 cmp float32 -> bool, one row */
static void f32_compare_row(mw_binop op, uint8_t *o, const float *a, const float *b, int64_t n,
                            int64_t so, int64_t sa, int64_t sb)
{
    switch (op) {
    case MW_EQ: ROW2(x == y); break;
    case MW_NE: ROW2(x != y); break;
    case MW_LT: ROW2(x < y); break;
    case MW_LE: ROW2(x <= y); break;
    case MW_GT: ROW2(x > y); break;
    case MW_GE: ROW2(x >= y); break;
    default: ROW2(fbin(op, x, y) != 0); break;
    }
}

#define CHUNK 256

/* dst [c] = float(src[off + j*s]) for an I64 or BOOL source */
static void to_f32(float *dst, const void *src, mw_dtype dt, int64_t off, int64_t s, int64_t c)
{
    if (dt == MW_I64) {
        const int64_t *p = (const int64_t *)src + off;
        for (int64_t j = 0; j < c; j++) dst[j] = (float)p[j * s];
    } else {
        const uint8_t *p = (const uint8_t *)src + off;
        for (int64_t j = 0; j < c; j++) dst[j] = p[j * s];
    }
}

static mw_dtype binary_dtype(mw_binop op, mw_dtype a, mw_dtype b)
{
    if (op >= MW_EQ) return MW_BOOL;
    if (op == MW_DIV || a == MW_F32 || b == MW_F32) return MW_F32;
    return MW_I64;
}

static int has_internal_overlap(const mw_tensor *a)
{
    for (int d = 0; d < a->ndim; d++)
        if (a->stride[d] == 0 && a->shape[d] > 1) return 1;
    return 0;
}

/* the first negative element of an I64/BOOL tensor b, if any (*v gets it) */
static int find_negative(const mw_tensor *b, int64_t *v)
{
    if (b->dtype != MW_I64 || mw_tensor_numel(b) == 0) return 0;
    int64_t st[1][MW_MAXDIM];
    memcpy(st[0], b->stride, sizeof st[0]);
    iter it;
    iter_init(&it, 1, b->ndim, b->shape, st);
    const int64_t *p = mw_tensor_data(b);
    int64_t rows = iter_rows(&it), n = it.shape[it.ndim - 1], s = it.stride[0][it.ndim - 1];
    int64_t idx[MW_MAXDIM] = {0}, off[1] = {0};
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < n; i++)
            if (p[off[0] + i * s] < 0) { *v = p[off[0] + i * s]; return 1; }
        iter_next(&it, idx, off);
    }
    return 0;
}

/* out = a op b (inplace: into a). name is the op's name for messages. */
static int binary_impl(const char *name, mw_tensor *out, const mw_tensor *a, const mw_tensor *b,
                       mw_binop op, int inplace)
{
    const mw_tensor *ab[2] = {a, b};
    int nd;
    int64_t shape[MW_MAXDIM];
    if ((unsigned)op > MW_OR) return mw_seterr("binary: unknown op %d", (int)op);
    if (broadcast_shapes(name, 2, ab, &nd, shape)) return -1;
    mw_dtype rt = binary_dtype(op, a->dtype, b->dtype);
    /* float domain: any F32 operand, or DIV */
    int fdom = a->dtype == MW_F32 || b->dtype == MW_F32 || op == MW_DIV;
    int64_t neg;
    if (op == MW_POW && !fdom && find_negative(b, &neg))
        return mw_seterr("pow: integers to negative integer powers are not allowed (exponent %lld); "
                         "use a float tensor (x:float())", (long long)neg);
    mw_tensor r;
    if (inplace) {
        char sa[SHAPE_BUF], sb[SHAPE_BUF];
        int same = nd == a->ndim;
        for (int d = 0; same && d < nd; d++) same = shape[d] == a->shape[d];
        if (!same)
            return mw_seterr("%s_: %s and %s: result shape differs from the first operand's", name,
                             mw_tensor_shape_str(sa, sizeof sa, a), mw_tensor_shape_str(sb, sizeof sb, b));
        if (rt != a->dtype)
            return mw_seterr("%s_: result type %s can't be stored in a %s tensor %s", name,
                             mw_dtype_name(rt), mw_dtype_name(a->dtype),
                             mw_tensor_shape_str(sa, sizeof sa, a));
        if (has_internal_overlap(a))
            return mw_seterr("%s_: %s is an expanded view (stride 0); clone it first", name,
                             mw_tensor_shape_str(sa, sizeof sa, a));
        r = *a;
    } else if (mw_tensor_empty(&r, rt, nd, shape)) {
        return -1;
    }
    if (mw_tensor_numel(&r) == 0) {
        if (!inplace) *out = r;
        return 0;
    }
    /* x:add_(x:t()): b's elements would be read after the loop has overwritten them */
    mw_tensor bcopy = {0};
    if (inplace && mw_tensor_overlap(a, b) == MW_OVERLAP_PARTIAL) {
        if (mw_tensor_clone(&bcopy, b)) return -1;
        b = &bcopy;
    }
    int64_t st[3][MW_MAXDIM];
    broadcast_strides(&r, nd, shape, st[0]);
    broadcast_strides(a, nd, shape, st[1]);
    broadcast_strides(b, nd, shape, st[2]);
    iter it;
    iter_init(&it, 3, nd, shape, st);
    char *po = mw_tensor_data(&r);
    const char *pa = mw_tensor_data(a), *pb = mw_tensor_data(b);
    int64_t rows = iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t so = it.stride[0][it.ndim - 1], sa = it.stride[1][it.ndim - 1], sb = it.stride[2][it.ndim - 1];
    int64_t idx[MW_MAXDIM] = {0}, off[3] = {0, 0, 0};
    int fast = a->dtype == MW_F32 && b->dtype == MW_F32;
    for (int64_t row = 0; row < rows && !mw_interrupted(); row++) {
        if (fast && rt == MW_F32) {
            f32_binary_row(op, (float *)po + off[0], (const float *)pa + off[1],
                           (const float *)pb + off[2], n, so, sa, sb);
        } else if (fast) {
            f32_compare_row(op, (uint8_t *)po + off[0], (const float *)pa + off[1],
                            (const float *)pb + off[2], n, so, sa, sb);
        } else if (fdom) {
            /* mixed dtypes computed in float: chunks of the non-f32 operand are converted into
             * ta / tb [CHUNK] and go through the f32 kernels */
            float ta[CHUNK], tb[CHUNK];
            for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
                int64_t c = n - i0 < CHUNK ? n - i0 : CHUNK, ssa = sa, ssb = sb;
                const float *xa = (const float *)pa + off[1] + i0 * sa, *xb = (const float *)pb + off[2] + i0 * sb;
                if (a->dtype != MW_F32) { to_f32(ta, pa, a->dtype, off[1] + i0 * sa, sa, c); xa = ta; ssa = 1; }
                if (b->dtype != MW_F32) { to_f32(tb, pb, b->dtype, off[2] + i0 * sb, sb, c); xb = tb; ssb = 1; }
                if (rt == MW_F32)
                    f32_binary_row(op, (float *)po + off[0] + i0 * so, xa, xb, c, so, ssa, ssb);
                else
                    f32_compare_row(op, (uint8_t *)po + off[0] + i0 * so, xa, xb, c, so, ssa, ssb);
            }
        } else {
            for (int64_t i = 0; i < n; i++)
                sti(po, rt, off[0] + i * so,
                    ibin(op, ldi(pa, a->dtype, off[1] + i * sa), ldi(pb, b->dtype, off[2] + i * sb)));
        }
        iter_next(&it, idx, off);
    }
    mw_tensor_release(&bcopy);
    if (mw_interrupted()) {
        if (!inplace) mw_tensor_release(&r);
        return mw_seterr("%s: interrupted", name);
    }
    if (!inplace) *out = r;
    return 0;
}

int mw_binary(mw_tensor *out, const mw_tensor *a, const mw_tensor *b, mw_binop op)
{
    memset(out, 0, sizeof *out);
    return binary_impl((unsigned)op <= MW_OR ? binop_name[op] : "binary", out, a, b, op, 0);
}

int mw_binary_(mw_tensor *a, const mw_tensor *b, mw_binop op)
{
    return binary_impl((unsigned)op <= MW_OR ? binop_name[op] : "binary", NULL, a, b, op, 1);
}

/* A 0-dim tensor over stack memory holding s: never released, so it needs no allocation. */
typedef struct {
    mw_storage st;
    union { float f; int64_t i; } v;
    mw_tensor t;
} stack_scalar;

static void stack_scalar_init(stack_scalar *sc, const mw_tensor *a, double s)
{
    memset(sc, 0, sizeof *sc);
    int integral = a->dtype != MW_F32 && isfinite(s) && s == floor(s) && fabs(s) < 9.2e18;
    sc->st.refcount = 1;
    sc->st.numel = 1;
    sc->st.data = &sc->v;
    if (integral) {
        sc->st.dtype = MW_I64;
        sc->v.i = (int64_t)s;
    } else {
        sc->st.dtype = MW_F32;
        sc->v.f = (float)s;
    }
    sc->t.storage = &sc->st;
    sc->t.dtype = sc->st.dtype;
    sc->t.ndim = 0;
}

int mw_binary_scalar(mw_tensor *out, const mw_tensor *a, double s, mw_binop op, int scalar_first)
{
    memset(out, 0, sizeof *out);
    const char *name = (unsigned)op <= MW_OR ? binop_name[op] : "binary";
    stack_scalar sc;
    stack_scalar_init(&sc, a, s);
    return scalar_first ? binary_impl(name, out, &sc.t, a, op, 0) : binary_impl(name, out, a, &sc.t, op, 0);
}

/* ================================================================ unary ops */

/* gelu_new(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed as the equal
 * x / (1 + exp(-2u)) (since 1 + tanh(u) = 2 / (1 + exp(-2u))): one expf instead of tanhf, which is
 * about 5x slower in glibc, and no cancellation. Tails: x -> +inf gives x, x -> -inf gives -0
 * (NaN at -inf itself, as the tanh form). */
static inline float gelu_new(float x)
{
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    float u = c * (x + 0.044715f * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

static inline float fun(mw_unop op, float x)
{
    switch (op) {
    case MW_NEG: return -x;
    case MW_EXP: return expf(x);
    case MW_LOG: return logf(x);
    case MW_SQRT: return sqrtf(x);
    case MW_ABS: return fabsf(x);
    case MW_TANH: return tanhf(x);
    case MW_RELU: return x > 0 ? x : (isnan(x) ? x : 0.0f);
    case MW_GELU_NEW: return gelu_new(x);
    case MW_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case MW_NOT: return x == 0;
    case MW_SIN: return sinf(x);
    case MW_COS: return cosf(x);
    case MW_FLOOR: return floorf(x);
    case MW_CEIL: return ceilf(x);
    case MW_ROUND: return nearbyintf(x); /* half to even, as torch.round */
    case MW_SIGN: return isnan(x) ? x : (float)((x > 0) - (x < 0));
    }
    return 0;
}

static inline int64_t iun(mw_unop op, int64_t x)
{
    switch (op) {
    case MW_NEG: return (int64_t)(0 - (uint64_t)x);
    case MW_ABS: return x < 0 ? (int64_t)(0 - (uint64_t)x) : x;
    case MW_RELU: return x > 0 ? x : 0;
    case MW_SIGN: return (x > 0) - (x < 0);
    case MW_NOT: return x == 0;
    default: return x; /* FLOOR CEIL ROUND */
    }
}

#define ROW1(EXPR) do { \
    if (so == 1 && sa == 1) { for (int64_t i = 0; i < n; i++) { float x = a[i]; o[i] = (EXPR); } } \
    else { for (int64_t i = 0; i < n; i++) { float x = a[i * sa]; o[i * so] = (EXPR); } } } while (0)

static void f32_unary_row(mw_unop op, float *o, const float *a, int64_t n, int64_t so, int64_t sa)
{
    switch (op) {
    case MW_NEG: ROW1(-x); break;
    case MW_EXP: ROW1(expf(x)); break;
    case MW_ABS: ROW1(fabsf(x)); break;
    case MW_TANH: ROW1(tanhf(x)); break;
    case MW_RELU: ROW1(x > 0 ? x : (isnan(x) ? x : 0.0f)); break;
    case MW_GELU_NEW: ROW1(gelu_new(x)); break;
    default: ROW1(fun(op, x)); break;
    }
}

static mw_dtype unary_dtype(mw_unop op, mw_dtype a)
{
    if (op == MW_NOT) return MW_BOOL;
    if (a == MW_F32) return MW_F32;
    switch (op) {
    case MW_NEG: case MW_ABS: case MW_RELU: case MW_SIGN: case MW_FLOOR: case MW_CEIL: case MW_ROUND:
        return MW_I64;
    default: return MW_F32;
    }
}

static int unary_impl(mw_tensor *out, const mw_tensor *a, mw_unop op, int inplace)
{
    if ((unsigned)op > MW_SIGN) return mw_seterr("unary: unknown op %d", (int)op);
    const char *name = unop_name[op];
    mw_dtype rt = unary_dtype(op, a->dtype);
    mw_tensor r;
    char sa_[SHAPE_BUF];
    if (inplace) {
        if (rt != a->dtype)
            return mw_seterr("%s_: result type %s can't be stored in a %s tensor %s", name,
                             mw_dtype_name(rt), mw_dtype_name(a->dtype),
                             mw_tensor_shape_str(sa_, sizeof sa_, a));
        if (has_internal_overlap(a))
            return mw_seterr("%s_: %s is an expanded view (stride 0); clone it first", name,
                             mw_tensor_shape_str(sa_, sizeof sa_, a));
        r = *a;
    } else if (mw_tensor_empty(&r, rt, a->ndim, a->shape)) {
        return -1;
    }
    if (mw_tensor_numel(&r) == 0) {
        if (!inplace) *out = r;
        return 0;
    }
    int64_t st[2][MW_MAXDIM];
    memcpy(st[0], r.stride, sizeof st[0]);
    memcpy(st[1], a->stride, sizeof st[1]);
    iter it;
    iter_init(&it, 2, a->ndim, a->shape, st);
    char *po = mw_tensor_data(&r);
    const char *pa = mw_tensor_data(a);
    int64_t rows = iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t so = it.stride[0][it.ndim - 1], sa = it.stride[1][it.ndim - 1];
    int64_t idx[MW_MAXDIM] = {0}, off[2] = {0, 0};
    int idom = a->dtype != MW_F32 && rt != MW_F32;
    for (int64_t row = 0; row < rows && !mw_interrupted(); row++) {
        if (a->dtype == MW_F32 && rt == MW_F32)
            f32_unary_row(op, (float *)po + off[0], (const float *)pa + off[1], n, so, sa);
        else if (idom)
            for (int64_t i = 0; i < n; i++)
                sti(po, rt, off[0] + i * so, iun(op, ldi(pa, a->dtype, off[1] + i * sa)));
        else
            for (int64_t i = 0; i < n; i++)
                stf(po, rt, off[0] + i * so, fun(op, ldf(pa, a->dtype, off[1] + i * sa)));
        iter_next(&it, idx, off);
    }
    if (mw_interrupted()) {
        if (!inplace) mw_tensor_release(&r);
        return mw_seterr("%s: interrupted", name);
    }
    if (!inplace) *out = r;
    return 0;
}

int mw_unary(mw_tensor *out, const mw_tensor *a, mw_unop op)
{
    memset(out, 0, sizeof *out);
    return unary_impl(out, a, op, 0);
}

int mw_unary_(mw_tensor *a, mw_unop op) { return unary_impl(NULL, a, op, 1); }

int mw_clamp(mw_tensor *out, const mw_tensor *a, double lo, double hi)
{
    memset(out, 0, sizeof *out);
    if (a->dtype == MW_BOOL) return mw_seterr("clamp: bool tensor not supported");
    mw_tensor r;
    if (mw_tensor_empty(&r, a->dtype, a->ndim, a->shape)) return -1;
    if (mw_tensor_numel(&r) == 0) { *out = r; return 0; }
    int64_t st[2][MW_MAXDIM];
    memcpy(st[0], r.stride, sizeof st[0]);
    memcpy(st[1], a->stride, sizeof st[1]);
    iter it;
    iter_init(&it, 2, a->ndim, a->shape, st);
    char *po = mw_tensor_data(&r);
    const char *pa = mw_tensor_data(a);
    int64_t rows = iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t so = it.stride[0][it.ndim - 1], sa = it.stride[1][it.ndim - 1];
    int64_t idx[MW_MAXDIM] = {0}, off[2] = {0, 0};
    int has_lo = !isnan(lo), has_hi = !isnan(hi);
    /* NaN inputs stay NaN: both comparisons are false for them */
    float flo = has_lo ? (float)lo : -INFINITY, fhi = has_hi ? (float)hi : INFINITY;
    /* integer bounds, saturated: a cast of an out-of-range double would be undefined */
    int64_t ilo = !has_lo || lo < -9.2e18 ? INT64_MIN : lo > 9.2e18 ? INT64_MAX : (int64_t)ceil(lo);
    int64_t ihi = !has_hi || hi > 9.2e18 ? INT64_MAX : hi < -9.2e18 ? INT64_MIN : (int64_t)floor(hi);
    for (int64_t row = 0; row < rows; row++) {
        if (a->dtype == MW_F32) {
            float *o = (float *)po + off[0];
            const float *x = (const float *)pa + off[1];
            for (int64_t i = 0; i < n; i++) {
                float v = x[i * sa];
                if (v < flo) v = flo;
                if (v > fhi) v = fhi;
                o[i * so] = v;
            }
        } else {
            int64_t *o = (int64_t *)po + off[0];
            const int64_t *x = (const int64_t *)pa + off[1];
            for (int64_t i = 0; i < n; i++) {
                int64_t v = x[i * sa];
                if (v < ilo) v = ilo;
                if (v > ihi) v = ihi;
                o[i * so] = v;
            }
        }
        iter_next(&it, idx, off);
    }
    *out = r;
    return 0;
}

int mw_where(mw_tensor *out, const mw_tensor *cond, const mw_tensor *a, const mw_tensor *b)
{
    memset(out, 0, sizeof *out);
    const mw_tensor *ts[3] = {cond, a, b};
    int nd;
    int64_t shape[MW_MAXDIM];
    if (broadcast_shapes("where", 3, ts, &nd, shape)) return -1;
    mw_dtype rt = (a->dtype == MW_F32 || b->dtype == MW_F32) ? MW_F32
                : (a->dtype == MW_I64 || b->dtype == MW_I64) ? MW_I64 : MW_BOOL;
    mw_tensor r;
    if (mw_tensor_empty(&r, rt, nd, shape)) return -1;
    if (mw_tensor_numel(&r) == 0) { *out = r; return 0; }
    int64_t st[4][MW_MAXDIM];
    broadcast_strides(&r, nd, shape, st[0]);
    for (int k = 0; k < 3; k++) broadcast_strides(ts[k], nd, shape, st[k + 1]);
    iter it;
    iter_init(&it, 4, nd, shape, st);
    char *po = mw_tensor_data(&r);
    const char *pc = mw_tensor_data(cond), *pa = mw_tensor_data(a), *pb = mw_tensor_data(b);
    int64_t rows = iter_rows(&it), n = it.shape[it.ndim - 1], idx[MW_MAXDIM] = {0}, off[4] = {0};
    int64_t s[4];
    for (int k = 0; k < 4; k++) s[k] = it.stride[k][it.ndim - 1];
    int fast = cond->dtype == MW_BOOL && a->dtype == MW_F32 && b->dtype == MW_F32;
    for (int64_t row = 0; row < rows; row++) {
        if (fast) { /* the common masking case: bool mask, float32 values */
            float *o = (float *)po + off[0];
            const uint8_t *c = (const uint8_t *)pc + off[1];
            const float *x = (const float *)pa + off[2], *y = (const float *)pb + off[3];
            for (int64_t i = 0; i < n; i++) o[i * s[0]] = c[i * s[1]] ? x[i * s[2]] : y[i * s[3]];
            iter_next(&it, idx, off);
            continue;
        }
        for (int64_t i = 0; i < n; i++) {
            int c = ldd(pc, cond->dtype, off[1] + i * s[1]) != 0;
            if (rt == MW_F32)
                stf(po, rt, off[0] + i * s[0],
                    c ? ldd(pa, a->dtype, off[2] + i * s[2]) : ldd(pb, b->dtype, off[3] + i * s[3]));
            else
                sti(po, rt, off[0] + i * s[0],
                    c ? ldi(pa, a->dtype, off[2] + i * s[2]) : ldi(pb, b->dtype, off[3] + i * s[3]));
        }
        iter_next(&it, idx, off);
    }
    *out = r;
    return 0;
}

/* ================================================================ reductions */

/* What one walk over the reduced elements computes. */
typedef enum { R_SUM, R_SUMSQ, R_PROD, R_MAX, R_MIN, R_SUMEXP, R_SUMSQDEV } rkind;

/* A walk's result over elements that each stand for rep equal copies (the reduced dims of
 * stride 0, i.e. expanded, are not walked): sums grow rep times, products take the rep-th
 * power, extrema stay. mi.ones(1):expand(2^40):sum() is one multiplication. */
static double scale_rep(double acc, rkind k, int64_t rep)
{
    if (rep == 1) return acc;
    switch (k) {
    case R_SUM: case R_SUMSQ: case R_SUMEXP: case R_SUMSQDEV: return acc * (double)rep;
    case R_PROD: return pow(acc, (double)rep);
    case R_MAX: case R_MIN: break;
    }
    return acc;
}

/* the same in int64 arithmetic, wrapping as the element-wise loop would */
static uint64_t scale_rep_i(uint64_t acc, rkind k, int64_t rep)
{
    if (k == R_SUM) return acc * (uint64_t)rep;
    if (k != R_PROD) return acc;
    uint64_t r = 1;
    for (uint64_t e = (uint64_t)rep; e; e >>= 1, acc *= acc)
        if (e & 1) r *= acc;
    return r;
}

/* Walks the reduced region of one output element: rows of it->shape[last] elements.
 * aux: the max for R_SUMEXP, the mean for R_SUMSQDEV. Float work is in double. */
static double reduce_region(const char *base, mw_dtype dt, const iter *it, rkind k, double aux)
{
    int64_t rows = iter_rows(it), n = it->shape[it->ndim - 1], s = it->stride[0][it->ndim - 1];
    int64_t idx[MW_MAXDIM] = {0}, off[1] = {0};
    double acc = (k == R_PROD) ? 1.0 : (k == R_MAX) ? -INFINITY : (k == R_MIN) ? INFINITY : 0.0;
    int seen_nan = 0;
    for (int64_t row = 0; row < rows && !mw_interrupted(); row++) {
        if (dt == MW_F32 && s == 1 && (k == R_SUM || k == R_SUMSQ || k == R_SUMSQDEV)) {
            /* contiguous row: four accumulators break the add dependency chain */
            const float *x = (const float *)base + off[0];
            double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            int64_t i = 0;
            if (k == R_SUM) {
                for (; i + 4 <= n; i += 4) { a0 += x[i]; a1 += x[i + 1]; a2 += x[i + 2]; a3 += x[i + 3]; }
                for (; i < n; i++) a0 += x[i];
            } else {
                double m = k == R_SUMSQDEV ? aux : 0.0;
                for (; i + 4 <= n; i += 4) {
                    double d0 = x[i] - m, d1 = x[i + 1] - m, d2 = x[i + 2] - m, d3 = x[i + 3] - m;
                    a0 += d0 * d0; a1 += d1 * d1; a2 += d2 * d2; a3 += d3 * d3;
                }
                for (; i < n; i++) { double d = x[i] - m; a0 += d * d; }
            }
            acc += (a0 + a1) + (a2 + a3);
        } else {
            for (int64_t i = 0; i < n; i++) {
                double x = ldd(base, dt, off[0] + i * s);
                switch (k) {
                case R_SUM: acc += x; break;
                case R_SUMSQ: acc += x * x; break;
                case R_PROD: acc *= x; break;
                case R_MAX: if (x > acc) acc = x; else if (isnan(x)) seen_nan = 1; break;
                case R_MIN: if (x < acc) acc = x; else if (isnan(x)) seen_nan = 1; break;
                case R_SUMEXP: acc += exp(x - aux); break;
                case R_SUMSQDEV: { double d = x - aux; acc += d * d; } break;
                }
            }
        }
        iter_next(it, idx, off);
    }
    return seen_nan ? NAN : scale_rep(acc, k, it->rep);
}

/* the same in int64 for SUM, PROD, MAX, MIN over I64/BOOL input */
static int64_t reduce_region_i(const char *base, mw_dtype dt, const iter *it, rkind k)
{
    int64_t rows = iter_rows(it), n = it->shape[it->ndim - 1], s = it->stride[0][it->ndim - 1];
    int64_t idx[MW_MAXDIM] = {0}, off[1] = {0};
    uint64_t acc = k == R_PROD ? 1 : 0;
    int64_t m = k == R_MAX ? INT64_MIN : INT64_MAX;
    for (int64_t row = 0; row < rows && !mw_interrupted(); row++) {
        for (int64_t i = 0; i < n; i++) {
            int64_t x = ldi(base, dt, off[0] + i * s);
            switch (k) {
            case R_SUM: acc += (uint64_t)x; break;
            case R_PROD: acc *= (uint64_t)x; break;
            case R_MAX: if (x > m) m = x; break;
            case R_MIN: if (x < m) m = x; break;
            default: break;
            }
        }
        iter_next(it, idx, off);
    }
    return (k == R_MAX || k == R_MIN) ? m : (int64_t)scale_rep_i(acc, k, it->rep);
}

/* Splits a's dims into kept (outer) and reduced (inner) ones.
 * oshape/ostride_a: kept dims with a's strides (nkeep entries); rit: iterator over reduced dims. */
static int reduce_setup(const char *name, const mw_tensor *a, uint32_t dims, int keepdim,
                        int *out_nd, int64_t *out_shape, int *nkeep, int64_t *kshape,
                        int64_t *kstride, iter *rit, int64_t *count)
{
    char b[SHAPE_BUF];
    if (a->ndim < 32 && (dims >> a->ndim) != 0)
        return mw_seterr("%s: dims mask 0x%x out of range for %s", name, (unsigned)dims,
                         mw_tensor_shape_str(b, sizeof b, a));
    if (dims == 0) dims = a->ndim ? (uint32_t)((1u << a->ndim) - 1) : 0;
    int nk = 0, nr = 0, no = 0;
    int64_t rshape[MW_MAXDIM] = {0}, rst[1][MW_MAXDIM] = {{0}};
    *count = 1;
    for (int d = 0; d < a->ndim; d++) {
        if (dims & (1u << d)) {
            rshape[nr] = a->shape[d];
            rst[0][nr++] = a->stride[d];
            *count *= a->shape[d];
            if (keepdim) out_shape[no++] = 1;
        } else {
            kshape[nk] = a->shape[d];
            kstride[nk++] = a->stride[d];
            out_shape[no++] = a->shape[d];
        }
    }
    iter_init(rit, 1, nr, rshape, rst);
    *out_nd = no;
    *nkeep = nk;
    return 0;
}

/* ---------------------------------------------------------------- reductions in memory order
 * When a's last dim is kept, walking each output's reduced elements would jump a whole row per
 * element (20x slower on [4096,4096] over dim 0). Instead a is walked once per pass in memory
 * order, every element adding into its output's accumulator: acc [nout] is addressed through
 * "output strides" ost (0 on reduced dims), so the inner loop runs along contiguous memory. */

/* ost[d]: a's dim d -> the element stride of a contiguous tensor over the kept dims (0 if reduced) */
static void kept_strides(const mw_tensor *a, uint32_t mask, int64_t *ost)
{
    int64_t s = 1;
    for (int d = a->ndim - 1; d >= 0; d--) {
        if (mask & (1u << d)) { ost[d] = 0; continue; }
        ost[d] = s;
        s *= a->shape[d];
    }
}

/* one pass over float32 a: acc[j] (+)= f(x) per kind; aux[j] is the max (R_SUMEXP) or mean
 * (R_SUMSQDEV) of output j */
static void outer_pass(const mw_tensor *a, const int64_t *ost, double *acc, const double *aux, rkind k)
{
    int64_t st[2][MW_MAXDIM];
    memcpy(st[0], a->stride, sizeof st[0]);
    memcpy(st[1], ost, sizeof st[1]);
    iter it;
    iter_init(&it, 2, a->ndim, a->shape, st);
    const float *pa = mw_tensor_data(a);
    int64_t rows = iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t sa = it.stride[0][it.ndim - 1], so = it.stride[1][it.ndim - 1];
    int64_t idx[MW_MAXDIM] = {0}, off[2] = {0, 0};
    for (int64_t r = 0; r < rows && !mw_interrupted(); r++) {
        const float *x = pa + off[0];
        double *c = acc + off[1];
        const double *m = aux ? aux + off[1] : NULL;
        switch (k) {
        case R_SUM: for (int64_t i = 0; i < n; i++) c[i * so] += x[i * sa]; break;
        case R_SUMSQ: for (int64_t i = 0; i < n; i++) { double v = x[i * sa]; c[i * so] += v * v; } break;
        case R_PROD: for (int64_t i = 0; i < n; i++) c[i * so] *= x[i * sa]; break;
        case R_MAX:
            for (int64_t i = 0; i < n; i++) { double v = x[i * sa]; if (v > c[i * so] || isnan(v)) c[i * so] = v; }
            break;
        case R_MIN:
            for (int64_t i = 0; i < n; i++) { double v = x[i * sa]; if (v < c[i * so] || isnan(v)) c[i * so] = v; }
            break;
        case R_SUMEXP: for (int64_t i = 0; i < n; i++) c[i * so] += exp(x[i * sa] - m[i * so]); break;
        case R_SUMSQDEV:
            for (int64_t i = 0; i < n; i++) { double v = x[i * sa] - m[i * so]; c[i * so] += v * v; }
            break;
        }
        iter_next(&it, idx, off);
    }
}

static void fill_d(double *v, int64_t n, double x) { for (int64_t i = 0; i < n; i++) v[i] = x; }

static void scale_rep_all(double *v, int64_t n, rkind k, int64_t rep)
{
    for (int64_t j = 0; j < n && rep != 1; j++) v[j] = scale_rep(v[j], k, rep);
}

/* float32 a, last dim kept: out (F32, nout elements, contiguous) = the reduction; each element
 * of a stands for rep copies (see scale_rep) */
static int reduce_outer(float *out, int64_t nout, const mw_tensor *a, mw_redop op, uint32_t mask,
                        int64_t count, int64_t rep, int unbiased)
{
    int64_t ost[MW_MAXDIM];
    kept_strides(a, mask, ost);
    int two = op == MW_LOGSUMEXP || op == MW_VAR || op == MW_STD; /* these need aux too */
    double *acc = malloc((size_t)(two ? 2 : 1) * (size_t)nout * sizeof *acc), *aux = acc + nout;
    if (!acc) return mw_seterr("%s: out of memory", redop_name[op]);
    switch (op) {
    case MW_SUM: case MW_MEAN:
        fill_d(acc, nout, 0); outer_pass(a, ost, acc, NULL, R_SUM); scale_rep_all(acc, nout, R_SUM, rep);
        break;
    case MW_PROD:
        fill_d(acc, nout, 1); outer_pass(a, ost, acc, NULL, R_PROD); scale_rep_all(acc, nout, R_PROD, rep);
        break;
    case MW_AMAX: fill_d(acc, nout, -INFINITY); outer_pass(a, ost, acc, NULL, R_MAX); break;
    case MW_AMIN: fill_d(acc, nout, INFINITY); outer_pass(a, ost, acc, NULL, R_MIN); break;
    case MW_NORM2:
        fill_d(acc, nout, 0); outer_pass(a, ost, acc, NULL, R_SUMSQ); scale_rep_all(acc, nout, R_SUMSQ, rep);
        break;
    case MW_LOGSUMEXP:
        fill_d(aux, nout, -INFINITY);
        outer_pass(a, ost, aux, NULL, R_MAX);
        fill_d(acc, nout, 0);
        outer_pass(a, ost, acc, aux, R_SUMEXP);
        scale_rep_all(acc, nout, R_SUMEXP, rep);
        break;
    case MW_VAR: case MW_STD:
        fill_d(aux, nout, 0);
        outer_pass(a, ost, aux, NULL, R_SUM);
        scale_rep_all(aux, nout, R_SUM, rep);
        for (int64_t j = 0; j < nout; j++) aux[j] /= (double)count;
        fill_d(acc, nout, 0);
        outer_pass(a, ost, acc, aux, R_SUMSQDEV);
        scale_rep_all(acc, nout, R_SUMSQDEV, rep);
        break;
    }
    for (int64_t j = 0; j < nout; j++) {
        double v = acc[j];
        switch (op) {
        case MW_MEAN: v /= (double)count; break;
        case MW_NORM2: v = sqrt(v); break;
        case MW_LOGSUMEXP: v = (isinf(aux[j]) || isnan(aux[j])) ? aux[j] : aux[j] + log(v); break;
        case MW_VAR: case MW_STD: {
            int64_t den = count - (unbiased ? 1 : 0);
            v = den > 0 ? v / (double)den : NAN;
            if (op == MW_STD) v = sqrt(v);
            break;
        }
        default: break;
        }
        out[j] = (float)v;
    }
    free(acc);
    return 0;
}

int mw_reduce(mw_tensor *out, const mw_tensor *a, mw_redop op, uint32_t dims, int keepdim,
              int unbiased)
{
    memset(out, 0, sizeof *out);
    if ((unsigned)op > MW_STD) return mw_seterr("reduce: unknown op %d", (int)op);
    const char *name = redop_name[op];
    int ond = 0, nk = 0;
    int64_t oshape[MW_MAXDIM], kshape[MW_MAXDIM], kst[MW_MAXDIM], count = 0;
    iter rit;
    if (reduce_setup(name, a, dims, keepdim, &ond, oshape, &nk, kshape, kst, &rit, &count)) return -1;
    int ipath = a->dtype != MW_F32 && (op == MW_SUM || op == MW_PROD || op == MW_AMAX || op == MW_AMIN);
    mw_dtype rt = !ipath ? MW_F32 : (op == MW_SUM || op == MW_PROD) ? MW_I64 : a->dtype;
    if (count == 0 && (op == MW_AMAX || op == MW_AMIN)) {
        char b[SHAPE_BUF];
        return mw_seterr("%s: cannot reduce over a zero-size dimension of %s", name,
                         mw_tensor_shape_str(b, sizeof b, a));
    }
    mw_tensor r;
    if (mw_tensor_empty(&r, rt, ond, oshape)) return -1;
    int64_t nout = mw_tensor_numel(&r);
    if (nout == 0) { *out = r; return 0; }
    if (count == 0) { /* a reduction over nothing, at once (mi.zeros(2^40, 0):sum()), as torch */
        double v = op == MW_PROD ? 1 : op == MW_LOGSUMEXP ? -INFINITY
                 : (op == MW_MEAN || op == MW_VAR || op == MW_STD) ? NAN : 0;
        if (mw_tensor_fill_(&r, v)) { mw_tensor_release(&r); return -1; }
        *out = r;
        return 0;
    }
    uint32_t mask = dims ? dims : (uint32_t)((1u << a->ndim) - 1);
    /* reduced dims of stride 0 (expanded) are not walked: each element stands for rep copies */
    mw_tensor a1 = *a;
    int64_t rep = 1;
    for (int d = 0; d < a->ndim; d++)
        if ((mask & (1u << d)) && a->stride[d] == 0 && a->shape[d] > 1) {
            rep *= a->shape[d]; /* <= count, which fits */
            a1.shape[d] = 1;
        }
    if (rep > 1) {
        int64_t c1;
        a = &a1;
        reduce_setup(name, a, mask, keepdim, &ond, oshape, &nk, kshape, kst, &rit, &c1);
        rit.rep = rep;
    }
    if (a->dtype == MW_F32 && a->ndim >= 2 && !(mask & (1u << (a->ndim - 1))) && a->shape[a->ndim - 1] > 1) {
        if (reduce_outer(mw_tensor_data(&r), nout, a, op, mask, count, rep, unbiased)) {
            mw_tensor_release(&r);
            return -1;
        }
        if (mw_interrupted()) {
            mw_tensor_release(&r);
            return mw_seterr("%s: interrupted", name);
        }
        *out = r;
        return 0;
    }
    /* kept dims of the output, contiguous in kept order: walk them with a's strides */
    int64_t kidx[MW_MAXDIM] = {0};
    const char *pa = mw_tensor_data(a);
    char *po = mw_tensor_data(&r);
    size_t esz = mw_dtype_size(a->dtype);
    int64_t aoff = 0;
    for (int64_t j = 0; j < nout && !mw_interrupted(); j++) {
        const char *base = pa + aoff * (int64_t)esz;
        if (ipath) {
            rkind k = op == MW_SUM ? R_SUM : op == MW_PROD ? R_PROD : op == MW_AMAX ? R_MAX : R_MIN;
            sti(po, rt, j, reduce_region_i(base, a->dtype, &rit, k));
        } else {
            double v = 0;
            switch (op) {
            case MW_SUM: v = reduce_region(base, a->dtype, &rit, R_SUM, 0); break;
            case MW_MEAN: v = reduce_region(base, a->dtype, &rit, R_SUM, 0) / (double)count; break;
            case MW_PROD: v = reduce_region(base, a->dtype, &rit, R_PROD, 0); break;
            case MW_AMAX: v = reduce_region(base, a->dtype, &rit, R_MAX, 0); break;
            case MW_AMIN: v = reduce_region(base, a->dtype, &rit, R_MIN, 0); break;
            case MW_NORM2: v = sqrt(reduce_region(base, a->dtype, &rit, R_SUMSQ, 0)); break;
            case MW_LOGSUMEXP: {
                double m = count ? reduce_region(base, a->dtype, &rit, R_MAX, 0) : -INFINITY;
                if (isinf(m) || isnan(m)) v = m; /* all -inf -> -inf; any +inf -> +inf; NaN -> NaN */
                else v = m + log(reduce_region(base, a->dtype, &rit, R_SUMEXP, m));
                break;
            }
            case MW_VAR: case MW_STD: {
                double mean = reduce_region(base, a->dtype, &rit, R_SUM, 0) / (double)count;
                double ss = reduce_region(base, a->dtype, &rit, R_SUMSQDEV, mean);
                int64_t den = count - (unbiased ? 1 : 0);
                v = den > 0 ? ss / (double)den : NAN;
                if (op == MW_STD) v = sqrt(v);
                break;
            }
            }
            stf(po, rt, j, v);
        }
        for (int d = nk - 1; d >= 0; d--) {
            aoff += kst[d];
            if (++kidx[d] < kshape[d]) break;
            aoff -= kst[d] * kshape[d];
            kidx[d] = 0;
        }
    }
    if (mw_interrupted()) {
        mw_tensor_release(&r);
        return mw_seterr("%s: interrupted", name);
    }
    *out = r;
    return 0;
}

/* ---------------------------------------------------------------- along one dim */

/* Sets up a walk over every 1-D line of a along dim: other dims of a and of the outputs are
 * iterated together (op 0 = a, op 1.. = outputs, which have a's shape with dim's extent lens[k]). */
typedef struct {
    iter it;       /* over the non-dim dims; nop = 1 + nout */
    int64_t rows;  /* lines */
    int64_t n;     /* extent of dim in a */
    int64_t sa;    /* a's stride along dim */
    int64_t so[MAXOP - 1]; /* outputs' strides along dim */
    int64_t idx[MW_MAXDIM], off[MAXOP];
} lines;

/* outs[k] has a->ndim dims (keepdim form). */
static void lines_init(lines *L, const mw_tensor *a, int dim, int nout, const mw_tensor *const *outs)
{
    int64_t shape[MW_MAXDIM] = {0}, st[MAXOP][MW_MAXDIM];
    int nd = 0;
    for (int d = 0; d < a->ndim; d++) {
        if (d == dim) continue;
        shape[nd] = a->shape[d];
        st[0][nd] = a->stride[d];
        for (int k = 0; k < nout; k++) st[k + 1][nd] = outs[k]->stride[d];
        nd++;
    }
    iter_init(&L->it, 1 + nout, nd, shape, st);
    /* every element of the iterator (not just every row) starts one line */
    L->rows = 1;
    for (int d = 0; d < L->it.ndim; d++) L->rows *= L->it.shape[d];
    L->n = a->ndim ? a->shape[dim] : 1;
    L->sa = a->ndim ? a->stride[dim] : 0;
    for (int k = 0; k < nout; k++) L->so[k] = a->ndim ? outs[k]->stride[dim] : 0;
    memset(L->idx, 0, sizeof L->idx);
    memset(L->off, 0, sizeof L->off);
}

/* next line: an element-wise step over all of it's dims */
static void lines_next(lines *L)
{
    const iter *it = &L->it;
    for (int d = it->ndim - 1; d >= 0; d--) {
        for (int k = 0; k < it->nop; k++) L->off[k] += it->stride[k][d];
        if (++L->idx[d] < it->shape[d]) return;
        for (int k = 0; k < it->nop; k++) L->off[k] -= it->stride[k][d] * it->shape[d];
        L->idx[d] = 0;
    }
}

/* output shape with dim's extent replaced by len */
static void shape_with(const mw_tensor *a, int dim, int64_t len, int64_t *shape)
{
    for (int d = 0; d < a->ndim; d++) shape[d] = d == dim ? len : a->shape[d];
}

/* drops dim from a keepdim result (a view: same storage) */
static void squeeze_dim(mw_tensor *t, int dim)
{
    for (int d = dim; d < t->ndim - 1; d++) {
        t->shape[d] = t->shape[d + 1];
        t->stride[d] = t->stride[d + 1];
    }
    t->ndim--;
}

static int argext(const char *name, mw_tensor *values, mw_tensor *indices, const mw_tensor *a,
                  int dim, int keepdim, int want_max)
{
    char b[SHAPE_BUF];
    if (normdim(name, a, &dim)) return -1;
    if (a->ndim && a->shape[dim] == 0)
        return mw_seterr("%s: cannot reduce over a zero-size dimension of %s", name,
                         mw_tensor_shape_str(b, sizeof b, a));
    int64_t shape[MW_MAXDIM];
    shape_with(a, dim, 1, shape);
    mw_tensor v = {0}, ix = {0};
    if (values && mw_tensor_empty(&v, a->dtype, a->ndim, shape)) return -1;
    if (mw_tensor_empty(&ix, MW_I64, a->ndim, shape)) { mw_tensor_release(&v); return -1; }
    const mw_tensor *outs[2] = {&ix, &v};
    lines L;
    lines_init(&L, a, dim, values ? 2 : 1, outs);
    const char *pa = mw_tensor_data(a);
    int64_t *pi = mw_tensor_data(&ix);
    char *pv = values ? mw_tensor_data(&v) : NULL;
    /* a reduced dim of stride 0 (expanded) holds one value L.n times: its first copy wins */
    int64_t n = L.sa == 0 ? 1 : L.n;
    if (mw_tensor_numel(&ix) > 0) {
        for (int64_t r = 0; r < L.rows; r++) {
            int64_t best = 0;
            if (a->dtype == MW_F32) {
                const float *x = (const float *)pa + L.off[0];
                float m = x[0];
                for (int64_t i = 1; i < n && !isnan(m); i++) {
                    float y = x[i * L.sa];
                    if ((want_max ? y > m : y < m) || isnan(y)) { m = y; best = i; }
                }
                if (pv) ((float *)pv)[L.off[2]] = m;
            } else {
                int64_t m = ldi(pa, a->dtype, L.off[0]);
                for (int64_t i = 1; i < n; i++) {
                    int64_t y = ldi(pa, a->dtype, L.off[0] + i * L.sa);
                    if (want_max ? y > m : y < m) { m = y; best = i; }
                }
                if (pv) sti(pv, a->dtype, L.off[2], m);
            }
            pi[L.off[1]] = best;
            lines_next(&L);
        }
    }
    if (!keepdim && a->ndim) {
        squeeze_dim(&ix, dim);
        if (values) squeeze_dim(&v, dim);
    }
    if (values) *values = v;
    *indices = ix;
    return 0;
}

int mw_max_dim(mw_tensor *values, mw_tensor *indices, const mw_tensor *a, int dim, int keepdim)
{
    memset(values, 0, sizeof *values);
    memset(indices, 0, sizeof *indices);
    return argext("max", values, indices, a, dim, keepdim, 1);
}

int mw_min_dim(mw_tensor *values, mw_tensor *indices, const mw_tensor *a, int dim, int keepdim)
{
    memset(values, 0, sizeof *values);
    memset(indices, 0, sizeof *indices);
    return argext("min", values, indices, a, dim, keepdim, 0);
}

static int argflat(const char *name, mw_tensor *out, const mw_tensor *a, int keepdim, int want_max)
{
    char b[SHAPE_BUF];
    int64_t n = mw_tensor_numel(a);
    if (n == 0)
        return mw_seterr("%s: empty tensor %s", name, mw_tensor_shape_str(b, sizeof b, a));
    mw_tensor c, flat, ix;
    if (mw_tensor_contiguous(&c, a)) return -1;
    flat = c;
    flat.ndim = 1;
    flat.shape[0] = n;
    flat.stride[0] = 1;
    int rc = argext(name, NULL, &ix, &flat, 0, 0, want_max);
    mw_tensor_release(&c);
    if (rc) return -1;
    if (keepdim) { /* all-ones shape of a's rank, as torch */
        ix.ndim = a->ndim;
        for (int d = 0; d < a->ndim; d++) { ix.shape[d] = 1; ix.stride[d] = 1; }
    }
    *out = ix;
    return 0;
}

int mw_argmax(mw_tensor *out, const mw_tensor *a, int dim, int keepdim)
{
    memset(out, 0, sizeof *out);
    if (dim == INT32_MIN) return argflat("argmax", out, a, keepdim, 1);
    return argext("argmax", NULL, out, a, dim, keepdim, 1);
}

int mw_argmin(mw_tensor *out, const mw_tensor *a, int dim, int keepdim)
{
    memset(out, 0, sizeof *out);
    if (dim == INT32_MIN) return argflat("argmin", out, a, keepdim, 0);
    return argext("argmin", NULL, out, a, dim, keepdim, 0);
}

/* ---------------------------------------------------------------- softmax */

/* One line of n values (strides sx, so): softmax or log-softmax, max-subtracted. A line whose max
 * is -inf (all -inf: a fully masked attention row) gives zeros (softmax) or -inf (log_softmax). */
static void softmax_line(float *o, const float *x, int64_t n, int64_t so, int64_t sx, int logsm)
{
    float m = -INFINITY;
    if (sx == 1) {
        for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    } else {
        for (int64_t i = 0; i < n; i++) m = x[i * sx] > m ? x[i * sx] : m;
    }
    for (int64_t i = 0; i < n && !isnan(m); i++) if (isnan(x[i * sx])) m = NAN;
    if (m == -INFINITY) {
        for (int64_t i = 0; i < n; i++) o[i * so] = logsm ? -INFINITY : 0.0f;
        return;
    }
    double sum = 0;
    if (!logsm) {
        if (sx == 1 && so == 1) {
            for (int64_t i = 0; i < n; i++) { float e = expf(x[i] - m); o[i] = e; sum += e; }
            float inv = (float)(1.0 / sum);
            for (int64_t i = 0; i < n; i++) o[i] *= inv;
        } else {
            for (int64_t i = 0; i < n; i++) { float e = expf(x[i * sx] - m); o[i * so] = e; sum += e; }
            float inv = (float)(1.0 / sum);
            for (int64_t i = 0; i < n; i++) o[i * so] *= inv;
        }
    } else {
        for (int64_t i = 0; i < n; i++) sum += expf(x[i * sx] - m);
        float lse = (float)((double)m + log(sum));
        for (int64_t i = 0; i < n; i++) o[i * so] = x[i * sx] - lse;
    }
}

/* softmax over a dim that is not a's last, in memory order (see reduce_outer): per line j,
 * mx[j] = max, sum[j] = sum of exp(x - max); then out from them. o [a's shape], contiguous. */
static int softmax_outer(float *o, const mw_tensor *a, int dim, int logsm)
{
    int64_t ost[MW_MAXDIM], nl = mw_tensor_numel(a) / a->shape[dim];
    kept_strides(a, 1u << dim, ost);
    double *mx = malloc(2 * (size_t)nl * sizeof *mx), *sum = mx + nl;
    if (!mx) return mw_seterr("%s: out of memory", logsm ? "log_softmax" : "softmax");
    fill_d(mx, nl, -INFINITY);
    outer_pass(a, ost, mx, NULL, R_MAX);
    fill_d(sum, nl, 0);
    outer_pass(a, ost, sum, mx, R_SUMEXP);
    /* out: operands a, o (contiguous strides), line index */
    int64_t st[3][MW_MAXDIM], s = 1;
    memcpy(st[0], a->stride, sizeof st[0]);
    for (int d = a->ndim - 1; d >= 0; d--) { st[1][d] = s; s *= a->shape[d]; }
    memcpy(st[2], ost, sizeof st[2]);
    iter it;
    iter_init(&it, 3, a->ndim, a->shape, st);
    const float *pa = mw_tensor_data(a);
    int64_t rows = iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t sa = it.stride[0][it.ndim - 1], so = it.stride[1][it.ndim - 1], sl = it.stride[2][it.ndim - 1];
    int64_t idx[MW_MAXDIM] = {0}, off[3] = {0, 0, 0};
    for (int64_t r = 0; r < rows; r++) {
        const float *x = pa + off[0];
        float *y = o + off[1];
        const double *m = mx + off[2], *z = sum + off[2];
        for (int64_t i = 0; i < n; i++) {
            double mi = m[i * sl];
            if (mi == -INFINITY) /* a fully masked line: 0 (log: -inf), never NaN */
                y[i * so] = logsm ? -INFINITY : 0.0f;
            else if (logsm)
                y[i * so] = (float)(x[i * sa] - (mi + log(z[i * sl])));
            else
                y[i * so] = (float)(exp(x[i * sa] - mi) / z[i * sl]);
        }
        iter_next(&it, idx, off);
    }
    free(mx);
    return 0;
}

/* rows of contiguous memory, in pieces over the core's threads (each row as one thread does it) */
typedef struct { float *o; const float *a; int64_t n; int logsm; } softmax_rows_ctx;

static void softmax_rows_piece(void *vc, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    const softmax_rows_ctx *c = vc;
    for (int64_t i = lo; i < hi; i++) softmax_line(c->o + i * c->n, c->a + i * c->n, c->n, 1, 1, c->logsm);
}

static int softmax_impl(const char *name, mw_tensor *out, const mw_tensor *a, int dim, int logsm)
{
    memset(out, 0, sizeof *out);
    char b[SHAPE_BUF];
    if (a->dtype != MW_F32)
        return mw_seterr("%s: %s tensor %s, expected float32", name, mw_dtype_name(a->dtype),
                         mw_tensor_shape_str(b, sizeof b, a));
    if (normdim(name, a, &dim)) return -1;
    mw_tensor r;
    if (mw_tensor_empty(&r, MW_F32, a->ndim, a->shape)) return -1;
    if (mw_tensor_numel(&r) == 0) { *out = r; return 0; }
    const float *pa = mw_tensor_data(a);
    float *po = mw_tensor_data(&r);
    if (a->ndim > 0 && dim == a->ndim - 1 && mw_tensor_is_contiguous(a)) {
        /* fast path: rows of contiguous memory */
        int64_t n = a->shape[dim], rows = mw_tensor_numel(a) / n;
        softmax_rows_ctx c = {po, pa, n, logsm};
        mw_parallel_for(rows, (65536 + n - 1) / n, softmax_rows_piece, &c);
    } else if (a->ndim >= 2 && dim < a->ndim - 1 && a->shape[a->ndim - 1] > 1) {
        if (softmax_outer(po, a, dim, logsm)) {
            mw_tensor_release(&r);
            return -1;
        }
    } else {
        const mw_tensor *outs[1] = {&r};
        lines L;
        lines_init(&L, a, dim, 1, outs);
        for (int64_t i = 0; i < L.rows; i++) {
            softmax_line(po + L.off[1], pa + L.off[0], L.n, L.so[0], L.sa, logsm);
            lines_next(&L);
        }
    }
    *out = r;
    return 0;
}

int mw_softmax(mw_tensor *out, const mw_tensor *a, int dim) { return softmax_impl("softmax", out, a, dim, 0); }
int mw_log_softmax(mw_tensor *out, const mw_tensor *a, int dim) { return softmax_impl("log_softmax", out, a, dim, 1); }

/* ---------------------------------------------------------------- cumsum */

int mw_cumsum(mw_tensor *out, const mw_tensor *a, int dim)
{
    memset(out, 0, sizeof *out);
    if (normdim("cumsum", a, &dim)) return -1;
    mw_dtype rt = a->dtype == MW_F32 ? MW_F32 : MW_I64;
    mw_tensor r;
    if (mw_tensor_empty(&r, rt, a->ndim, a->shape)) return -1;
    if (mw_tensor_numel(&r) == 0) { *out = r; return 0; }
    const mw_tensor *outs[1] = {&r};
    lines L;
    lines_init(&L, a, dim, 1, outs);
    const char *pa = mw_tensor_data(a);
    char *po = mw_tensor_data(&r);
    for (int64_t i = 0; i < L.rows; i++) {
        if (rt == MW_F32) {
            double acc = 0;
            for (int64_t j = 0; j < L.n; j++) {
                acc += ((const float *)pa)[L.off[0] + j * L.sa];
                ((float *)po)[L.off[1] + j * L.so[0]] = (float)acc;
            }
        } else {
            uint64_t acc = 0;
            for (int64_t j = 0; j < L.n; j++) {
                acc += (uint64_t)ldi(pa, a->dtype, L.off[0] + j * L.sa);
                ((int64_t *)po)[L.off[1] + j * L.so[0]] = (int64_t)acc;
            }
        }
        lines_next(&L);
    }
    *out = r;
    return 0;
}

/* ---------------------------------------------------------------- sort, topk */

/* A line's keys for ordering: float values as double (exact), I64/BOOL as int64. NaN orders
 * after every number (torch: the largest). "before(i, j)" is the order wanted; ties keep the
 * smaller index first in both directions (stable, as torch.sort(stable=True)). */
typedef struct {
    const char *base;
    mw_dtype dt;
    int64_t stride;
    int descending;
} keys;

static int key_cmp(const keys *K, int64_t i, int64_t j) /* -1, 0, 1 ascending */
{
    if (K->dt == MW_F32) {
        float x = ((const float *)K->base)[i * K->stride], y = ((const float *)K->base)[j * K->stride];
        int xn = isnan(x), yn = isnan(y);
        if (xn || yn) return xn - yn;
        return (x > y) - (x < y);
    }
    int64_t x = ldi(K->base, K->dt, i * K->stride), y = ldi(K->base, K->dt, j * K->stride);
    return (x > y) - (x < y);
}

static int before(const keys *K, int64_t i, int64_t j)
{
    int c = key_cmp(K, i, j);
    if (K->descending) c = -c;
    return c < 0 || (c == 0 && i < j);
}

/* stable merge sort of idx[0..n) by before(); tmp has n entries */
static void merge_sort(const keys *K, int64_t *idx, int64_t *tmp, int64_t n)
{
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) tmp[k++] = before(K, idx[j], idx[i]) ? idx[j++] : idx[i++];
            while (i < mid) tmp[k++] = idx[i++];
            while (j < hi) tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, (size_t)n * sizeof *idx);
    }
}

/* the first k of line (in before() order) into best[0..k): insertion into a sorted buffer,
 * cheap when k is small because most elements fail the comparison with the current last */
static void select_k(const keys *K, int64_t n, int64_t k, int64_t *best)
{
    int64_t have = 0;
    for (int64_t i = 0; i < n; i++) {
        if (have == k && !before(K, i, best[k - 1])) continue;
        int64_t p = have < k ? have++ : k - 1;
        while (p > 0 && before(K, i, best[p - 1])) { best[p] = best[p - 1]; p--; }
        best[p] = i;
    }
}

static int sort_impl(const char *name, mw_tensor *values, mw_tensor *indices, const mw_tensor *a,
                     int64_t k, int dim, int descending, int topk)
{
    char b[SHAPE_BUF];
    memset(values, 0, sizeof *values);
    memset(indices, 0, sizeof *indices);
    if (normdim(name, a, &dim)) return -1;
    int64_t n = a->ndim ? a->shape[dim] : 1;
    if (!topk) k = n;
    if (k < 0 || k > n)
        return mw_seterr("%s: k = %lld out of range for dim %d of %s", name, (long long)k, dim,
                         mw_tensor_shape_str(b, sizeof b, a));
    int64_t shape[MW_MAXDIM];
    shape_with(a, dim, k, shape);
    mw_tensor v, ix;
    if (mw_tensor_empty(&v, a->dtype, a->ndim, shape)) return -1;
    if (mw_tensor_empty(&ix, MW_I64, a->ndim, shape)) { mw_tensor_release(&v); return -1; }
    int64_t *work = malloc(2 * (size_t)(n ? n : 1) * sizeof *work);
    if (!work) {
        mw_tensor_release(&v);
        mw_tensor_release(&ix);
        return mw_seterr("%s: out of memory", name);
    }
    const mw_tensor *outs[2] = {&v, &ix};
    lines L;
    lines_init(&L, a, dim, 2, outs);
    const char *pa = mw_tensor_data(a);
    char *pv = mw_tensor_data(&v);
    int64_t *pi = mw_tensor_data(&ix);
    size_t esz = mw_dtype_size(a->dtype);
    if (mw_tensor_numel(&v) > 0) {
        for (int64_t r = 0; r < L.rows; r++) {
            keys K = {pa + L.off[0] * (int64_t)esz, a->dtype, L.sa, descending};
            if (topk && k > 0 && k <= 64 && k * 8 <= n) {
                select_k(&K, n, k, work);
            } else {
                for (int64_t i = 0; i < n; i++) work[i] = i;
                merge_sort(&K, work, work + n, n);
            }
            for (int64_t i = 0; i < k; i++) {
                int64_t src = work[i];
                memcpy(pv + (L.off[1] + i * L.so[0]) * (int64_t)esz, K.base + src * K.stride * (int64_t)esz, esz);
                pi[L.off[2] + i * L.so[1]] = src;
            }
            lines_next(&L);
        }
    }
    free(work);
    *values = v;
    *indices = ix;
    return 0;
}

int mw_topk(mw_tensor *values, mw_tensor *indices, const mw_tensor *a, int64_t k, int dim,
            int largest, int sorted)
{
    (void)sorted; /* always sorted: a valid order for sorted = 0 too */
    return sort_impl("topk", values, indices, a, k, dim, largest, 1);
}

int mw_sort(mw_tensor *values, mw_tensor *indices, const mw_tensor *a, int dim, int descending)
{
    return sort_impl("sort", values, indices, a, 0, dim, descending, 0);
}
