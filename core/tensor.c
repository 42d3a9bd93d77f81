/* tensor.c - errors, storage, tensor headers, creation, views, copies, indexing, joining and
 * printing for the miwb tensor core (the API is in mw_tensor.h; element-wise ops and
 * reductions are in ops.c, linear algebra in linalg.c, random numbers in rng.c).
 *
 * Legend: a tensor of ndim dims has shape[d] and stride[d] (in elements) for d < ndim, and an
 * element offset into its storage. "Contiguous" means row-major with no gaps (dims of size 1
 * may have any stride). Every function validates its arguments and fails with a message that
 * names the op and the shapes ("narrow: dim 3 out of range for [2,3]").
 *
 * Outputs: results are built in a local header and written to *out only on success; on failure
 * *out is zeroed. An output may also be one of the inputs (x = narrow(x)): the input's old
 * reference is then dropped on success and left alone on failure.
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "mw_tensor.h"
#include "parallel.h"

/* ================================================================ errors */

static _Thread_local char err_buf[1024];

volatile sig_atomic_t mw_interrupt_flag = 0;

const char *mw_error(void) { return err_buf; }

int mw_seterr(const char *fmt, ...)
{
    /* format into a temporary first: callers may pass mw_error() itself as an argument */
    char tmp[sizeof err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(err_buf, tmp, sizeof tmp);
    return -1;
}

char *mw_shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    if (!buf || n == 0) return buf;
    size_t k = 0;
    buf[0] = 0;
    int w = snprintf(buf, n, "[");
    k = w > 0 ? (size_t)w : 0;
    for (int d = 0; d < ndim && k < n; d++) {
        w = snprintf(buf + k, n - k, d ? ",%lld" : "%lld", (long long)shape[d]);
        if (w < 0) break;
        k += (size_t)w;
    }
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

int mw_size_mul(const char *op, int64_t a, int64_t b, int64_t *r)
{
    int64_t v;
    if (__builtin_mul_overflow(a, b, &v)) {
        if (op) mw_seterr("%s: size arithmetic overflows (%lld * %lld)", op, (long long)a, (long long)b);
        return -1;
    }
    *r = v;
    return 0;
}

int mw_size_add(const char *op, int64_t a, int64_t b, int64_t *r)
{
    int64_t v;
    if (__builtin_add_overflow(a, b, &v)) {
        if (op) mw_seterr("%s: size arithmetic overflows (%lld + %lld)", op, (long long)a, (long long)b);
        return -1;
    }
    *r = v;
    return 0;
}

size_t mw_dtype_size(mw_dtype dt)
{
    switch (dt) {
    case MW_F32: return 4;
    case MW_I64: return 8;
    case MW_BOOL: return 1;
    }
    return 0;
}

const char *mw_dtype_name(mw_dtype dt)
{
    switch (dt) {
    case MW_F32: return "float32";
    case MW_I64: return "int64";
    case MW_BOOL: return "bool";
    }
    return "invalid";
}

/* Shape strings for error messages: rotating thread-local buffers so that one message can show
 * several shapes. 256 bytes hold 8 dims of 20 digits, 7 commas and the brackets. */
#define SHBUF 256
static const char *shp_n(int ndim, const int64_t *shape)
{
    static _Thread_local char bufs[6][SHBUF];
    static _Thread_local int next;
    char *b = bufs[next];
    next = (next + 1) % 6;
    if (ndim < 0 || ndim > MW_MAXDIM) {
        snprintf(b, SHBUF, "<ndim %d>", ndim);
        return b;
    }
    return mw_shape_str(b, SHBUF, ndim, shape);
}
static const char *shp(const mw_tensor *t) { return shp_n(t->ndim, t->shape); }

/* ================================================================ storage */

/* Largest storage we agree to allocate: far above the machine's memory, so that a request past
 * it is a bug (a negative size cast, a shape product gone wrong), reported clearly. */
#define MW_MAX_BYTES ((int64_t)1 << 40)

static int64_t live_bytes; /* updated with __atomic builtins */

/* Large storages (model weights, logits, cache entries of attention patterns) are their own
 * anonymous mappings, 2 MB aligned and marked for transparent huge pages: fresh memory is
 * faulted in 2 MB at a time instead of 4 kB (512 times fewer page faults, which dominate filling
 * hundreds of MB on a virtual machine). Zero-filled by the kernel.
 * Freed mappings go back to the system at once, unless mw_storage_keep_freed set a budget: then
 * they are kept (up to that many bytes, the oldest unmapped first) and handed to the next request
 * of about their size (at most a quarter larger), zeroed here when the caller needs zeros.
 * Faulting fresh memory in costs 5-30x more than writing memory the process already has on these
 * machines (measured: 0.3-11 GB/s against 16-18 GB/s), and a loop of forward passes or
 * run_with_cache calls asks for the same sizes every time.
 * Under AddressSanitizer they stay calloc'd so that its checks see them. */
#define HUGE_MIN ((int64_t)8 << 20)
#define HUGE_ALIGN ((size_t)2 << 20)
#if defined(__SANITIZE_ADDRESS__)
#define USE_HUGE 0
#else
#define USE_HUGE 1
#endif

static size_t huge_len(int64_t bytes) { return ((size_t)bytes + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1); }

#define POOL_SLOTS 64
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { char *p; size_t len; uint64_t when; } pool[POOL_SLOTS];
static int pool_n;
static size_t pool_bytes, pool_budget;
static uint64_t pool_clock;

/* pool entry i out (pool_mu held) */
static void pool_take(int i)
{
    pool_bytes -= pool[i].len;
    pool[i] = pool[--pool_n];
}

/* a kept mapping of len..len*5/4 bytes (the smallest), or NULL; its length in *got */
static char *pool_get(size_t len, size_t *got)
{
    if (!__atomic_load_n(&pool_n, __ATOMIC_RELAXED)) return NULL; /* a peek: a miss costs a fresh mapping */
    pthread_mutex_lock(&pool_mu);
    int best = -1;
    for (int i = 0; i < pool_n; i++)
        if (pool[i].len >= len && pool[i].len - len <= len / 4 && (best < 0 || pool[i].len < pool[best].len)) best = i;
    char *p = NULL;
    if (best >= 0) {
        p = pool[best].p;
        *got = pool[best].len;
        pool_take(best);
    }
    pthread_mutex_unlock(&pool_mu);
    return p;
}

/* takes kept mappings out, the oldest first, until `room` more bytes and one more entry fit in
 * `budget` (pool_mu held; the caller unmaps them after unlocking) */
static int pool_evict(size_t room, size_t budget, char **drop, size_t *drop_len)
{
    int nd = 0;
    while (pool_n && (pool_n == POOL_SLOTS || pool_bytes + room > budget)) {
        int old = 0;
        for (int i = 1; i < pool_n; i++)
            if (pool[i].when < pool[old].when) old = i;
        drop[nd] = pool[old].p, drop_len[nd++] = pool[old].len;
        pool_take(old);
    }
    return nd;
}

static void unmap_all(char **drop, size_t *drop_len, int nd)
{
    for (int i = 0; i < nd; i++) munmap(drop[i], drop_len[i]);
}

/* keeps a freed mapping if the budget allows (making room by unmapping the oldest), else unmaps */
static void pool_put(char *p, size_t len)
{
    char *drop[POOL_SLOTS];
    size_t drop_len[POOL_SLOTS];
    int nd = 0;
    pthread_mutex_lock(&pool_mu);
    int keep = len <= pool_budget;
    if (keep) {
        nd = pool_evict(len, pool_budget, drop, drop_len);
        pool[pool_n].p = p, pool[pool_n].len = len, pool[pool_n].when = ++pool_clock;
        pool_n++;
        pool_bytes += len;
    }
    pthread_mutex_unlock(&pool_mu);
    unmap_all(drop, drop_len, nd);
    if (!keep) munmap(p, len);
}

void mw_storage_keep_freed(int64_t max_bytes)
{
    char *drop[POOL_SLOTS];
    size_t drop_len[POOL_SLOTS];
    pthread_mutex_lock(&pool_mu);
    pool_budget = max_bytes > 0 ? (size_t)max_bytes : 0;
    int nd = pool_evict(0, pool_budget, drop, drop_len);
    pthread_mutex_unlock(&pool_mu);
    unmap_all(drop, drop_len, nd);
}

int64_t mw_storage_kept_bytes(void)
{
    pthread_mutex_lock(&pool_mu);
    size_t b = pool_bytes;
    pthread_mutex_unlock(&pool_mu);
    return (int64_t)b;
}

void mw_storage_trim(void)
{
    char *drop[POOL_SLOTS];
    size_t drop_len[POOL_SLOTS];
    pthread_mutex_lock(&pool_mu);
    int nd = pool_evict(0, 0, drop, drop_len);
    pthread_mutex_unlock(&pool_mu);
    unmap_all(drop, drop_len, nd);
}

/* a 2 MB-aligned mapping of at least `bytes`, its length in *len; zeroed when zero != 0 */
static void *huge_alloc(int64_t bytes, size_t *plen, int zero)
{
    size_t len = huge_len(bytes), got;
    char *a = pool_get(len, &got);
    if (a) {
        if (zero) memset(a, 0, (size_t)bytes);
        *plen = got;
        return a;
    }
    char *p = mmap(NULL, len + HUGE_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED && mw_storage_kept_bytes() > 0) {
        /* out of memory (or address space) while holding freed memory: give it back, try again */
        mw_storage_trim();
        p = mmap(NULL, len + HUGE_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (p == MAP_FAILED) return NULL;
    a = (char *)(((uintptr_t)p + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
    if (a > p) munmap(p, (size_t)(a - p));
    if (a + len < p + len + HUGE_ALIGN) munmap(a + len, (size_t)(p + len + HUGE_ALIGN - (a + len)));
#ifdef MADV_HUGEPAGE
    madvise(a, len, MADV_HUGEPAGE); /* a hint: without it (THP off) the memory is ordinary */
#endif
    *plen = len;
    return a;
}

/* the mapping's length is kept in owner (a pooled mapping may be longer than the storage) */
static void release_huge(mw_storage *s)
{
    int64_t bytes = s->numel * (int64_t)mw_dtype_size(s->dtype);
    __atomic_sub_fetch(&live_bytes, bytes, __ATOMIC_RELAXED);
    pool_put(s->data, (size_t)(uintptr_t)s->owner);
}

/* a new storage: zero-filled, or (zero == 0) with any contents, for callers that write every
 * element before anything reads it */
static mw_storage *storage_alloc(mw_dtype dt, int64_t numel, int zero)
{
    size_t es = mw_dtype_size(dt);
    if (!es) {
        mw_seterr("storage: invalid dtype %d", (int)dt);
        return NULL;
    }
    if (numel < 0) {
        mw_seterr("storage: negative number of elements %lld", (long long)numel);
        return NULL;
    }
    if (numel > MW_MAX_BYTES / (int64_t)es) {
        mw_seterr("storage: %lld elements of %s exceed the limit of 2^40 bytes", (long long)numel,
                  mw_dtype_name(dt));
        return NULL;
    }
    int64_t bytes = numel * (int64_t)es;
    mw_storage *s = calloc(1, sizeof *s);
    int huge = USE_HUGE && bytes >= HUGE_MIN;
    size_t maplen = 0;
    void *data = !s ? NULL : huge ? huge_alloc(bytes, &maplen, zero) : calloc(bytes ? (size_t)bytes : 1, 1);
    if (!s || !data) {
        free(s);
        if (!huge) free(data);
        mw_seterr("storage: out of memory allocating %lld bytes", (long long)bytes);
        return NULL;
    }
    s->refcount = 1;
    s->dtype = dt;
    s->numel = numel;
    s->data = data;
    if (huge) {
        s->release = release_huge;
        s->owner = (void *)(uintptr_t)maplen;
    }
    __atomic_add_fetch(&live_bytes, bytes, __ATOMIC_RELAXED);
    return s;
}

mw_storage *mw_storage_new(mw_dtype dt, int64_t numel) { return storage_alloc(dt, numel, 1); }

static void release_nothing(mw_storage *s) { (void)s; }

mw_storage *mw_storage_wrap(mw_dtype dt, int64_t numel, void *data,
                            void (*release)(mw_storage *), void *owner)
{
    if (!mw_dtype_size(dt)) {
        mw_seterr("storage_wrap: invalid dtype %d", (int)dt);
        return NULL;
    }
    if (numel < 0 || (numel > 0 && !data)) {
        mw_seterr("storage_wrap: %lld elements at %p", (long long)numel, data);
        return NULL;
    }
    mw_storage *s = calloc(1, sizeof *s);
    if (!s) {
        mw_seterr("storage_wrap: out of memory");
        return NULL;
    }
    s->refcount = 1;
    s->dtype = dt;
    s->numel = numel;
    s->data = data;
    /* release == NULL marks mw_storage_new's own memory: wrapped memory without a callback
     * stays the caller's and is never freed here */
    s->release = release ? release : release_nothing;
    s->owner = owner;
    return s;
}

void mw_storage_retain(mw_storage *s)
{
    if (s) __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
}

/* At refcount 0: a wrapped storage's release() frees the foreign memory (data, owner); the
 * mw_storage struct itself is always freed here. */
void mw_storage_release(mw_storage *s)
{
    if (!s || __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (s->release) {
        s->release(s);
    } else {
        __atomic_sub_fetch(&live_bytes, s->numel * (int64_t)mw_dtype_size(s->dtype),
                           __ATOMIC_RELAXED);
        free(s->data);
    }
    free(s);
}

int64_t mw_storage_live_bytes(void) { return __atomic_load_n(&live_bytes, __ATOMIC_RELAXED); }

/* ================================================================ tensor header */

void mw_tensor_release(mw_tensor *t)
{
    if (!t) return;
    mw_storage_release(t->storage);
    memset(t, 0, sizeof *t);
}

void mw_tensor_share(mw_tensor *out, const mw_tensor *t)
{
    mw_tensor r = *t;
    mw_storage_retain(r.storage);
    *out = r;
}

int64_t mw_tensor_numel(const mw_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

int mw_tensor_is_contiguous(const mw_tensor *t)
{
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] == 0) return 1;
        if (t->shape[d] != 1 && t->stride[d] != expect) return 0;
        expect *= t->shape[d];
    }
    return 1;
}

void *mw_tensor_data(const mw_tensor *t)
{
    if (!t->storage) return NULL;
    return (char *)t->storage->data + t->offset * (int64_t)mw_dtype_size(t->dtype);
}

char *mw_tensor_shape_str(char *buf, size_t n, const mw_tensor *t)
{
    return mw_shape_str(buf, n, t->ndim, t->shape);
}

/* [lo, hi) byte addresses spanned by t's elements; 0 when t has none. Valid headers only:
 * check_in guarantees the extents fit. */
static int byte_span(const mw_tensor *t, uintptr_t *lo, uintptr_t *hi)
{
    if (!t->storage || mw_tensor_numel(t) == 0) return 0;
    int64_t es = (int64_t)mw_dtype_size(t->dtype), neg = 0, pos = 0;
    for (int d = 0; d < t->ndim; d++) {
        int64_t ext = (t->shape[d] - 1) * t->stride[d] * es;
        if (ext < 0) neg += ext; else pos += ext;
    }
    uintptr_t base = (uintptr_t)mw_tensor_data(t);
    *lo = base + (uintptr_t)neg; /* wraps as intended: neg <= 0 */
    *hi = base + (uintptr_t)pos + (uintptr_t)es;
    return 1;
}

mw_overlap mw_tensor_overlap(const mw_tensor *a, const mw_tensor *b)
{
    uintptr_t alo, ahi, blo, bhi;
    if (!byte_span(a, &alo, &ahi) || !byte_span(b, &blo, &bhi)) return MW_OVERLAP_NONE;
    if (ahi <= blo || bhi <= alo) return MW_OVERLAP_NONE;
    int same = a->dtype == b->dtype && a->ndim == b->ndim && mw_tensor_data(a) == mw_tensor_data(b);
    for (int d = 0; same && d < a->ndim; d++)
        same = a->shape[d] == b->shape[d] && (a->shape[d] == 1 || a->stride[d] == b->stride[d]);
    return same ? MW_OVERLAP_SAME : MW_OVERLAP_PARTIAL;
}

/* ---------------------------------------------------------------- internal helpers */

/* Validates an input tensor header: present, with storage, sane ndim and dtype, non-negative
 * sizes. */
static int check_in(const char *op, const mw_tensor *a)
{
    if (!a) return mw_seterr("%s: NULL tensor", op);
    if (!a->storage) return mw_seterr("%s: tensor has no storage (released or never created)", op);
    if (a->ndim < 0 || a->ndim > MW_MAXDIM)
        return mw_seterr("%s: tensor has ndim %d (max %d)", op, a->ndim, MW_MAXDIM);
    if (!mw_dtype_size(a->dtype)) return mw_seterr("%s: tensor has invalid dtype %d", op, (int)a->dtype);
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] < 0) return mw_seterr("%s: tensor has negative size in %s", op, shp(a));
    /* every element must lie inside the storage (a header built by hand, e.g. over an mmap,
     * could point past it). Counted in bytes: a storage may be viewed with another dtype. */
    if (mw_tensor_numel(a) > 0) {
        int64_t lo = a->offset, hi = a->offset, ext, es = (int64_t)mw_dtype_size(a->dtype);
        int64_t sbytes = a->storage->numel * (int64_t)mw_dtype_size(a->storage->dtype);
        int bad = 0;
        for (int d = 0; d < a->ndim && !bad; d++) {
            if (mw_size_mul(NULL, a->shape[d] - 1, a->stride[d], &ext)) bad = 1;
            else if (ext < 0 ? mw_size_add(NULL, lo, ext, &lo) : mw_size_add(NULL, hi, ext, &hi)) bad = 1;
        }
        if (!bad && (lo < 0 || hi >= sbytes / es)) bad = 1;
        if (bad) {
            char sb[SHBUF];
            mw_shape_str(sb, sizeof sb, a->ndim, a->stride);
            return mw_seterr("%s: tensor %s (strides %s, offset %lld) lies outside its storage of "
                             "%lld %s elements", op, shp(a), sb, (long long)a->offset,
                             (long long)a->storage->numel, mw_dtype_name(a->storage->dtype));
        }
    }
    return 0;
}

/* In-place writes need every element at its own address: an expanded view (stride 0 on a dim
 * of size > 1) would be written many times over (and, 2^36 times expanded, for minutes). */
static int check_writable(const char *op, const mw_tensor *a)
{
    for (int d = 0; d < a->ndim; d++)
        if (a->stride[d] == 0 && a->shape[d] > 1)
            return mw_seterr("%s: %s is an expanded view (stride 0 in dim %d): its elements share "
                             "memory; clone it first", op, shp(a), d);
    return 0;
}

/* Normalizes dim (negative from the end) against a tensor of ndim dims. */
static int norm_dim(const char *op, int *dim, int ndim, const int64_t *shape)
{
    int d = *dim;
    int lim = ndim > 0 ? ndim : 0;
    if (d < -lim || d >= lim || lim == 0) {
        if (lim == 0) return mw_seterr("%s: dim %d out of range for a 0-dim tensor", op, d);
        return mw_seterr("%s: dim %d out of range for %s", op, d, shp_n(ndim, shape));
    }
    *dim = d < 0 ? d + ndim : d;
    return 0;
}

/* Row-major strides of shape[ndim] (a dim of size 0 counts as 1, as in torch). Fails when a
 * stride overflows int64, which an empty shape such as [2, 0, 2^62] can ask for. */
static int contiguous_strides(const char *op, int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        stride[d] = s;
        if (d > 0 && mw_size_mul(NULL, s, shape[d] > 0 ? shape[d] : 1, &s))
            return mw_seterr("%s: shape %s is too large: its strides overflow int64", op,
                             shp_n(ndim, shape));
    }
    return 0;
}

/* Checks ndim and sizes of a new shape, its element count (no overflow past the storage limit)
 * and that its row-major strides fit. */
static int check_shape(const char *op, int ndim, const int64_t *shape, int64_t *numel)
{
    if (ndim < 0 || ndim > MW_MAXDIM)
        return mw_seterr("%s: %d dims requested (max %d)", op, ndim, MW_MAXDIM);
    if (ndim > 0 && !shape) return mw_seterr("%s: NULL shape", op);
    int64_t n = 1, st[MW_MAXDIM];
    int zero = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return mw_seterr("%s: negative size in %s", op, shp_n(ndim, shape));
        if (shape[d] == 0) zero = 1;
    }
    for (int d = 0; d < ndim && !zero; d++)
        if (mw_size_mul(NULL, n, shape[d], &n) || n > MW_MAX_BYTES)
            return mw_seterr("%s: shape %s has too many elements", op, shp_n(ndim, shape));
    if (contiguous_strides(op, ndim, shape, st)) return -1;
    if (numel) *numel = zero ? 0 : n;
    return 0;
}

/* A new contiguous tensor, zero-filled unless zero == 0 (the caller writes every element). */
static int tensor_alloc_as(const char *op, mw_tensor *r, mw_dtype dt, int ndim, const int64_t *shape, int zero)
{
    int64_t n;
    memset(r, 0, sizeof *r);
    if (!mw_dtype_size(dt)) return mw_seterr("%s: invalid dtype %d", op, (int)dt);
    if (check_shape(op, ndim, shape, &n)) return -1;
    mw_storage *s = storage_alloc(dt, n, zero);
    if (!s) return mw_seterr("%s: %s", op, mw_error());
    r->storage = s;
    r->dtype = dt;
    r->ndim = ndim;
    for (int d = 0; d < ndim; d++) r->shape[d] = shape[d];
    contiguous_strides(op, ndim, shape, r->stride); /* checked by check_shape */
    r->offset = 0;
    return 0;
}

static int tensor_alloc(const char *op, mw_tensor *r, mw_dtype dt, int ndim, const int64_t *shape)
{
    return tensor_alloc_as(op, r, dt, ndim, shape, 1);
}

/* Writes the result r into out. If out is also an input, the input's old reference is dropped
 * (r holds its own). */
static void put_out(mw_tensor *out, const mw_tensor *r, int out_is_input)
{
    mw_storage *old = out_is_input ? out->storage : NULL;
    *out = *r;
    mw_storage_release(old);
}

/* On failure: zero the output unless it is also an input (which stays as it was). */
static int fail_out(mw_tensor *out, int out_is_input)
{
    if (out && !out_is_input) memset(out, 0, sizeof *out);
    return -1;
}

/* A view result: same storage as a, one more reference. */
static void put_view(mw_tensor *out, const mw_tensor *a, mw_tensor *r)
{
    r->storage = a->storage;
    r->dtype = a->dtype;
    mw_storage_retain(r->storage);
    put_out(out, r, out == a);
}

/* ---------------------------------------------------------------- element conversions */

/* float -> int64 without undefined behaviour: truncation toward zero as in torch; NaN and
 * values outside the int64 range give INT64_MIN (what x86 hardware and torch there give). */
static inline int64_t f2i(double v)
{
    if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return INT64_MIN;
    return (int64_t)v;
}

static inline double load_d(const char *p, mw_dtype dt)
{
    switch (dt) {
    case MW_F32: return *(const float *)p;
    case MW_I64: return (double)*(const int64_t *)p;
    case MW_BOOL: return *(const uint8_t *)p ? 1.0 : 0.0;
    }
    return 0;
}

static inline void store_d(char *p, mw_dtype dt, double v)
{
    switch (dt) {
    case MW_F32: *(float *)p = (float)v; break;
    case MW_I64: *(int64_t *)p = f2i(v); break;
    case MW_BOOL: *(uint8_t *)p = v != 0; break;
    }
}

/* Whether value can be stored in dtype dt (explicitly: I64 needs a finite value in range;
 * fractions truncate toward zero as in torch). */
static int check_fits(const char *op, mw_dtype dt, double v)
{
    if (dt == MW_I64 && !(v >= -9223372036854775808.0 && v < 9223372036854775808.0))
        return mw_seterr("%s: value %g does not fit int64", op, v);
    return 0;
}

/* ---------------------------------------------------------------- strided iteration
 * Walks the index space shape[ndim] for nop <= 3 operands, each given by a base pointer and
 * byte strides [ndim]. Dims of size 1 are dropped and neighbouring dims that are contiguous
 * for every operand are merged, so that fn sees rows as long as possible:
 * fn(p[nop], row byte strides[nop], row length, ctx). Nothing is called for 0 elements. */
typedef void (*row_fn)(char *const *p, const int64_t *st, int64_t n, void *ctx);

/* Drops dims of size 1 and merges neighbours contiguous for every operand: sh[nd], s[nop][nd]
 * (byte strides). Returns nd, or -1 when there are no elements. */
static int collapse_dims(int ndim, const int64_t *shape, int nop, int64_t (*bst)[MW_MAXDIM],
                         int64_t *sh, int64_t (*s)[MW_MAXDIM])
{
    int nd = 0;
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) return -1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        int merge = nd > 0;
        for (int k = 0; k < nop && merge; k++) {
            int64_t span;
            if (mw_size_mul(NULL, bst[k][d], shape[d], &span) || s[k][nd - 1] != span) merge = 0;
        }
        if (merge) {
            sh[nd - 1] *= shape[d];
            for (int k = 0; k < nop; k++) s[k][nd - 1] = bst[k][d];
        } else {
            sh[nd] = shape[d];
            for (int k = 0; k < nop; k++) s[k][nd] = bst[k][d];
            nd++;
        }
    }
    return nd;
}

static void strided_rows(int ndim, const int64_t *shape, int nop, char *const *base,
                         int64_t (*bst)[MW_MAXDIM], row_fn fn, void *ctx)
{
    int64_t sh[MW_MAXDIM], s[3][MW_MAXDIM];
    int nd = collapse_dims(ndim, shape, nop, bst, sh, s);
    if (nd < 0) return;
    char *p[3] = {0};
    int64_t inner[3] = {0};
    for (int k = 0; k < nop; k++) p[k] = base[k];
    if (nd == 0) {
        fn(p, inner, 1, ctx);
        return;
    }
    for (int k = 0; k < nop; k++) inner[k] = s[k][nd - 1];
    int64_t idx[MW_MAXDIM] = {0};
    for (;;) {
        fn(p, inner, sh[nd - 1], ctx);
        int d = nd - 2;
        for (; d >= 0; d--) {
            idx[d]++;
            for (int k = 0; k < nop; k++) p[k] += s[k][d];
            if (idx[d] < sh[d]) break;
            for (int k = 0; k < nop; k++) p[k] -= s[k][d] * sh[d];
            idx[d] = 0;
        }
        if (d < 0) break;
    }
}

static void byte_strides(const mw_tensor *t, int64_t *bst)
{
    int64_t es = (int64_t)mw_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) bst[d] = t->stride[d] * es;
}

/* Row kernel: copy with dtype conversion. p[0] = dst, p[1] = src. */
typedef struct { mw_dtype dd, sd; } conv_ctx;

#define CONV_LOOP(TD, TS, EXPR) \
    for (int64_t i = 0; i < n; i++) { \
        TS v = *(const TS *)(s + i * ss); \
        *(TD *)(d + i * ds) = (EXPR); \
    }

static void row_convert(char *const *p, const int64_t *st, int64_t n, void *vctx)
{
    const conv_ctx *c = vctx;
    char *d = p[0];
    const char *s = p[1];
    int64_t ds = st[0], ss = st[1];
    int64_t es = (int64_t)mw_dtype_size(c->dd);
    if (c->dd == c->sd && c->dd != MW_BOOL && ds == es && ss == es) {
        memcpy(d, s, (size_t)(n * es));
        return;
    }
    switch (c->dd * 3 + c->sd) {
    case MW_F32 * 3 + MW_F32: CONV_LOOP(float, float, v); break;
    case MW_F32 * 3 + MW_I64: CONV_LOOP(float, int64_t, (float)v); break;
    case MW_F32 * 3 + MW_BOOL: CONV_LOOP(float, uint8_t, v ? 1.0f : 0.0f); break;
    case MW_I64 * 3 + MW_F32: CONV_LOOP(int64_t, float, f2i(v)); break;
    case MW_I64 * 3 + MW_I64: CONV_LOOP(int64_t, int64_t, v); break;
    case MW_I64 * 3 + MW_BOOL: CONV_LOOP(int64_t, uint8_t, v ? 1 : 0); break;
    case MW_BOOL * 3 + MW_F32: CONV_LOOP(uint8_t, float, v != 0); break;
    case MW_BOOL * 3 + MW_I64: CONV_LOOP(uint8_t, int64_t, v != 0); break;
    case MW_BOOL * 3 + MW_BOOL: CONV_LOOP(uint8_t, uint8_t, v != 0); break;
    }
}

/* dst[shape] = src viewed with strides sst (elements, 0 for broadcast dims), converted. Both
 * headers valid; shapes agree (src strides are given for dst's dims). */
/* contiguous copies of 4 MB and more are split over the core's threads (parallel.h): one thread
 * does not reach the memory bandwidth two have */
#define PAR_COPY_MIN ((int64_t)4 << 20)
typedef struct { char *dst; const char *src; } par_copy_ctx;

static void par_copy_piece(void *vc, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    const par_copy_ctx *c = vc;
    memcpy(c->dst + lo, c->src + lo, (size_t)(hi - lo));
}

static void copy_strided(const mw_tensor *dst, const mw_tensor *src, const int64_t *sst)
{
    int64_t bst[2][MW_MAXDIM];
    byte_strides(dst, bst[0]);
    int64_t es = (int64_t)mw_dtype_size(src->dtype);
    for (int d = 0; d < dst->ndim; d++) bst[1][d] = sst[d] * es;
    char *base[2] = {mw_tensor_data(dst), mw_tensor_data(src)};
    conv_ctx c = {dst->dtype, src->dtype};
    /* A source read across its unit-stride dim (a transpose) is copied in tiles of the
     * innermost dim and the source's unit-stride dim k, so that both stay in cache. */
    int64_t sh[MW_MAXDIM], s[2][MW_MAXDIM];
    int nd = collapse_dims(dst->ndim, dst->shape, 2, bst, sh, s), k = -1;
    if (nd < 0) return;
    if (nd >= 2 && s[1][nd - 1] != es && sh[nd - 1] >= 8)
        for (int d = nd - 2; d >= 0 && k < 0; d--)
            if (s[1][d] == es && sh[d] >= 8) k = d;
    if (nd == 1 && dst->dtype == src->dtype && s[0][0] == es && s[1][0] == es && sh[0] * es >= PAR_COPY_MIN) {
        /* one contiguous run (a cache entry's clone): memcpy in pieces on the core's threads */
        par_copy_ctx pc = {base[0], base[1]};
        mw_parallel_for(sh[0] * es, PAR_COPY_MIN / 2, par_copy_piece, &pc);
        return;
    }
    if (k < 0) {
        strided_rows(dst->ndim, dst->shape, 2, base, bst, row_convert, &c);
        return;
    }
    enum { TILE = 32 };
    int no = 0, j = nd - 1;
    int64_t osh[MW_MAXDIM], os[2][MW_MAXDIM], idx[MW_MAXDIM] = {0};
    for (int d = 0; d < j; d++)
        if (d != k) {
            osh[no] = sh[d];
            os[0][no] = s[0][d];
            os[1][no] = s[1][d];
            no++;
        }
    char *p0 = base[0], *p1 = base[1];
    int64_t rst[2] = {s[0][j], s[1][j]};
    for (;;) {
        for (int64_t kb = 0; kb < sh[k]; kb += TILE)
            for (int64_t jb = 0; jb < sh[j]; jb += TILE) {
                int64_t ke = kb + TILE < sh[k] ? kb + TILE : sh[k];
                int64_t jn = jb + TILE < sh[j] ? TILE : sh[j] - jb;
                for (int64_t kk = kb; kk < ke; kk++) {
                    char *p[2] = {p0 + kk * s[0][k] + jb * s[0][j], p1 + kk * s[1][k] + jb * s[1][j]};
                    row_convert(p, rst, jn, &c);
                }
            }
        int d = no - 1;
        for (; d >= 0; d--) {
            idx[d]++;
            p0 += os[0][d];
            p1 += os[1][d];
            if (idx[d] < osh[d]) break;
            p0 -= os[0][d] * osh[d];
            p1 -= os[1][d] * osh[d];
            idx[d] = 0;
        }
        if (d < 0) break;
    }
}

/* A new contiguous tensor of dtype dt holding a's values. */
static int clone_as(const char *op, mw_tensor *r, const mw_tensor *a, mw_dtype dt)
{
    if (tensor_alloc_as(op, r, dt, a->ndim, a->shape, 0)) return -1;
    copy_strided(r, a, a->stride);
    return 0;
}

/* ================================================================ creation */

int mw_tensor_empty(mw_tensor *out, mw_dtype dt, int ndim, const int64_t *shape)
{
    mw_tensor r;
    if (tensor_alloc("empty", &r, dt, ndim, shape)) return fail_out(out, 0);
    *out = r;
    return 0;
}

int mw_tensor_zeros(mw_tensor *out, mw_dtype dt, int ndim, const int64_t *shape)
{
    mw_tensor r;
    if (tensor_alloc("zeros", &r, dt, ndim, shape)) return fail_out(out, 0);
    *out = r;
    return 0;
}

/* Fills a contiguous buffer of n elements of dtype dt with v. */
static void fill_contig(void *p, mw_dtype dt, int64_t n, double v)
{
    switch (dt) {
    case MW_F32: {
        float f = (float)v, *q = p;
        for (int64_t i = 0; i < n; i++) q[i] = f;
        break;
    }
    case MW_I64: {
        int64_t x = f2i(v), *q = p;
        for (int64_t i = 0; i < n; i++) q[i] = x;
        break;
    }
    case MW_BOOL: memset(p, v != 0, (size_t)n); break;
    }
}

int mw_tensor_full(mw_tensor *out, mw_dtype dt, int ndim, const int64_t *shape, double value)
{
    mw_tensor r;
    if (mw_dtype_size(dt) && check_fits("full", dt, value)) return fail_out(out, 0);
    if (tensor_alloc("full", &r, dt, ndim, shape)) return fail_out(out, 0);
    /* the storage is already zero-filled (and its pages untouched): +0 needs no writes */
    if (!(value == 0 && !signbit(value))) fill_contig(r.storage->data, dt, mw_tensor_numel(&r), value);
    *out = r;
    return 0;
}

int mw_tensor_from_data(mw_tensor *out, mw_dtype dt, int ndim, const int64_t *shape,
                        const void *data)
{
    mw_tensor r;
    if (tensor_alloc("from_data", &r, dt, ndim, shape)) return fail_out(out, 0);
    int64_t n = mw_tensor_numel(&r);
    if (n > 0 && !data) {
        mw_tensor_release(&r);
        mw_seterr("from_data: NULL data for shape %s", shp_n(ndim, shape));
        return fail_out(out, 0);
    }
    if (n > 0) memcpy(r.storage->data, data, (size_t)n * mw_dtype_size(dt));
    if (dt == MW_BOOL) { /* masks hold exactly 0 or 1 */
        uint8_t *b = r.storage->data;
        for (int64_t i = 0; i < n; i++) b[i] = b[i] != 0;
    }
    *out = r;
    return 0;
}

int mw_tensor_scalar(mw_tensor *out, mw_dtype dt, double value)
{
    mw_tensor r;
    if (mw_dtype_size(dt) && check_fits("scalar", dt, value)) return fail_out(out, 0);
    if (tensor_alloc("scalar", &r, dt, 0, NULL)) return fail_out(out, 0);
    store_d(r.storage->data, dt, value);
    *out = r;
    return 0;
}

/* torch.arange: ceil((end - start) / step) values start + i * step (computed in double). */
int mw_tensor_arange(mw_tensor *out, mw_dtype dt, double start, double end, double step)
{
    if (dt != MW_F32 && dt != MW_I64) {
        mw_seterr("arange: dtype %s not supported (float32 or int64)", mw_dtype_name(dt));
        return fail_out(out, 0);
    }
    if (!isfinite(start) || !isfinite(end) || !isfinite(step)) {
        mw_seterr("arange: start %g, end %g, step %g must be finite", start, end, step);
        return fail_out(out, 0);
    }
    if (step == 0) {
        mw_seterr("arange: step must be nonzero");
        return fail_out(out, 0);
    }
    if ((end > start && step < 0) || (end < start && step > 0)) {
        mw_seterr("arange: end - start = %g and step = %g have different signs", end - start, step);
        return fail_out(out, 0);
    }
    double nd = ceil((end - start) / step);
    if (!(nd < 9e15)) {
        mw_seterr("arange: %g values is too many", nd);
        return fail_out(out, 0);
    }
    int64_t n = (int64_t)nd;
    if (dt == MW_I64 && n > 0 &&
        (check_fits("arange", dt, start) || check_fits("arange", dt, start + (double)(n - 1) * step)))
        return fail_out(out, 0);
    mw_tensor r;
    if (tensor_alloc("arange", &r, dt, 1, &n)) return fail_out(out, 0);
    for (int64_t i = 0; i < n; i++)
        store_d((char *)r.storage->data + i * (int64_t)mw_dtype_size(dt), dt, start + (double)i * step);
    *out = r;
    return 0;
}

/* torch.linspace for float32, with torch's arithmetic (in float): step = (end - start) /
 * (steps - 1); the first half counts up from start, the second half down from end, each
 * value with one rounding (fused multiply-add, as torch's FMA builds). torch's vectorized
 * loop can differ from this in the last bit for some lengths. */
int mw_tensor_linspace(mw_tensor *out, double start, double end, int64_t steps)
{
    if (steps < 0) {
        mw_seterr("linspace: number of steps %lld must be non-negative", (long long)steps);
        return fail_out(out, 0);
    }
    mw_tensor r;
    if (tensor_alloc("linspace", &r, MW_F32, 1, &steps)) return fail_out(out, 0);
    float *p = r.storage->data; /* [steps] */
    float fs = (float)start, fe = (float)end;
    if (steps == 1) {
        p[0] = fs;
    } else if (steps > 1) {
        float step = (fe - fs) / (float)(steps - 1);
        int64_t half = steps / 2;
        for (int64_t i = 0; i < steps; i++)
            p[i] = i < half ? fmaf(step, (float)i, fs) : fmaf(-step, (float)(steps - i - 1), fe);
    }
    *out = r;
    return 0;
}

int mw_tensor_eye(mw_tensor *out, int64_t n, int64_t m)
{
    if (n < 0 || m < 0) {
        mw_seterr("eye: sizes n = %lld, m = %lld must be non-negative", (long long)n, (long long)m);
        return fail_out(out, 0);
    }
    int64_t shape[2] = {n, m};
    mw_tensor r;
    if (tensor_alloc("eye", &r, MW_F32, 2, shape)) return fail_out(out, 0);
    float *p = r.storage->data; /* [n, m] */
    for (int64_t i = 0; i < n && i < m; i++) p[i * m + i] = 1.0f;
    *out = r;
    return 0;
}

/* out = a with elements outside the band zeroed; keep(j - i) decides over the last two dims. */
static int tri(const char *op, mw_tensor *out, const mw_tensor *a, int64_t k, int lower)
{
    mw_tensor r;
    if (check_in(op, a)) return fail_out(out, 0);
    if (a->ndim < 2) {
        mw_seterr("%s: input must have at least 2 dims, got %s", op, shp(a));
        return fail_out(out, out == a);
    }
    if (clone_as(op, &r, a, a->dtype)) return fail_out(out, out == a);
    int64_t R = r.shape[r.ndim - 2], C = r.shape[r.ndim - 1];
    int64_t nmat = (R > 0 && C > 0) ? mw_tensor_numel(&r) / (R * C) : 0;
    size_t es = mw_dtype_size(r.dtype);
    char *base = r.storage->data; /* [nmat, R, C] contiguous */
    for (int64_t b = 0; b < nmat; b++)
        for (int64_t i = 0; i < R; i++)
            for (int64_t j = 0; j < C; j++) {
                int keep = lower ? (j - i <= k) : (j - i >= k);
                if (!keep) memset(base + ((b * R + i) * C + j) * es, 0, es);
            }
    put_out(out, &r, out == a);
    return 0;
}

int mw_tensor_tril(mw_tensor *out, const mw_tensor *a, int64_t k) { return tri("tril", out, a, k, 1); }
int mw_tensor_triu(mw_tensor *out, const mw_tensor *a, int64_t k) { return tri("triu", out, a, k, 0); }

/* ================================================================ views */

int mw_tensor_narrow(mw_tensor *out, const mw_tensor *a, int dim, int64_t start, int64_t len)
{
    int al = out == a;
    if (check_in("narrow", a) || norm_dim("narrow", &dim, a->ndim, a->shape)) return fail_out(out, al);
    int64_t size = a->shape[dim];
    if (start < -size || start > size) {
        mw_seterr("narrow: start %lld out of range for dim %d of %s", (long long)start, dim, shp(a));
        return fail_out(out, al);
    }
    if (start < 0) start += size;
    if (len < 0 || len > size - start) {
        mw_seterr("narrow: start %lld + length %lld exceeds size %lld of dim %d of %s",
                  (long long)start, (long long)len, (long long)size, dim, shp(a));
        return fail_out(out, al);
    }
    mw_tensor r = *a;
    r.shape[dim] = len;
    if (len > 0) r.offset += start * a->stride[dim];
    put_view(out, a, &r);
    return 0;
}

int mw_tensor_select(mw_tensor *out, const mw_tensor *a, int dim, int64_t index)
{
    int al = out == a;
    if (check_in("select", a) || norm_dim("select", &dim, a->ndim, a->shape)) return fail_out(out, al);
    int64_t size = a->shape[dim];
    if (index < -size || index >= size) {
        mw_seterr("select: index %lld out of range for dim %d of %s", (long long)index, dim, shp(a));
        return fail_out(out, al);
    }
    if (index < 0) index += size;
    mw_tensor r = *a;
    r.offset += index * a->stride[dim];
    for (int d = dim; d < a->ndim - 1; d++) {
        r.shape[d] = a->shape[d + 1];
        r.stride[d] = a->stride[d + 1];
    }
    r.ndim--;
    r.shape[r.ndim] = 0;
    r.stride[r.ndim] = 0;
    put_view(out, a, &r);
    return 0;
}

int mw_tensor_transpose(mw_tensor *out, const mw_tensor *a, int d0, int d1)
{
    int al = out == a;
    if (check_in("transpose", a) || norm_dim("transpose", &d0, a->ndim, a->shape) ||
        norm_dim("transpose", &d1, a->ndim, a->shape))
        return fail_out(out, al);
    mw_tensor r = *a;
    r.shape[d0] = a->shape[d1];
    r.stride[d0] = a->stride[d1];
    r.shape[d1] = a->shape[d0];
    r.stride[d1] = a->stride[d0];
    put_view(out, a, &r);
    return 0;
}

int mw_tensor_permute(mw_tensor *out, const mw_tensor *a, const int *perm)
{
    int al = out == a;
    if (check_in("permute", a)) return fail_out(out, al);
    if (a->ndim > 0 && !perm) {
        mw_seterr("permute: NULL permutation for %s", shp(a));
        return fail_out(out, al);
    }
    int seen[MW_MAXDIM] = {0};
    mw_tensor r = *a;
    for (int i = 0; i < a->ndim; i++) {
        int d = perm[i];
        if (norm_dim("permute", &d, a->ndim, a->shape)) return fail_out(out, al);
        if (seen[d]) {
            mw_seterr("permute: dim %d repeated in the permutation of %s", d, shp(a));
            return fail_out(out, al);
        }
        seen[d] = 1;
        r.shape[i] = a->shape[d];
        r.stride[i] = a->stride[d];
    }
    put_view(out, a, &r);
    return 0;
}

/* Resolves one -1 in shape[ndim] against numel elements (torch's infer_size). */
static int infer_shape(const char *op, const mw_tensor *a, int ndim, const int64_t *shape,
                       int64_t *res)
{
    if (ndim < 0 || ndim > MW_MAXDIM)
        return mw_seterr("%s: %d dims requested for %s (max %d)", op, ndim, shp(a), MW_MAXDIM);
    if (ndim > 0 && !shape) return mw_seterr("%s: NULL shape", op);
    int infer = -1;
    int64_t prod = 1;
    for (int d = 0; d < ndim; d++) {
        res[d] = shape[d];
        if (shape[d] == -1) {
            if (infer >= 0)
                return mw_seterr("%s: %s as %s: only one dim can be -1", op, shp(a), shp_n(ndim, shape));
            infer = d;
        } else if (shape[d] < 0) {
            return mw_seterr("%s: %s as %s: invalid size %lld", op, shp(a), shp_n(ndim, shape),
                             (long long)shape[d]);
        } else if (mw_size_mul(NULL, prod, shape[d], &prod)) {
            return mw_seterr("%s: %s as %s: too many elements", op, shp(a), shp_n(ndim, shape));
        }
    }
    int64_t numel = mw_tensor_numel(a);
    if (infer >= 0) {
        if (prod == 0)
            return mw_seterr("%s: %s as %s: the -1 is ambiguous with 0 elements", op, shp(a),
                             shp_n(ndim, shape));
        if (numel % prod != 0)
            return mw_seterr("%s: %s (%lld elements) as %s: sizes do not match", op, shp(a),
                             (long long)numel, shp_n(ndim, shape));
        res[infer] = numel / prod;
    } else if (prod != numel) {
        return mw_seterr("%s: %s (%lld elements) as %s (%lld elements): sizes do not match", op,
                         shp(a), (long long)numel, shp_n(ndim, shape), (long long)prod);
    }
    int64_t st[MW_MAXDIM];
    return contiguous_strides(op, ndim, res, st);
}

/* Strides for viewing a as shape[ndim] (same element count) without copying, following torch's
 * computeStride: groups of a's dims that are contiguous among themselves ("chunks") must each
 * be covered by whole dims of the new shape. Returns 0 and fills st, or 1 if impossible. */
static int view_strides(const mw_tensor *a, int ndim, const int64_t *shape, int64_t *st)
{
    int64_t numel = mw_tensor_numel(a);
    if (numel == 0 || a->ndim == 0 || mw_tensor_is_contiguous(a))
        return contiguous_strides("view", ndim, shape, st); /* checked by infer_shape */
    int view_d = ndim - 1;
    int64_t chunk_base = a->stride[a->ndim - 1];
    int64_t tensor_numel = 1, view_numel = 1;
    for (int td = a->ndim - 1; td >= 0; td--) {
        tensor_numel *= a->shape[td];
        if (td == 0 || (a->shape[td - 1] != 1 && a->stride[td - 1] != tensor_numel * chunk_base)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                st[view_d] = view_numel * chunk_base;
                view_numel *= shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return 1;
            if (td > 0) {
                chunk_base = a->stride[td - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d != -1;
}

int mw_tensor_view(mw_tensor *out, const mw_tensor *a, int ndim, const int64_t *shape)
{
    int al = out == a;
    int64_t res[MW_MAXDIM], st[MW_MAXDIM];
    if (check_in("view", a) || infer_shape("view", a, ndim, shape, res)) return fail_out(out, al);
    if (view_strides(a, ndim, res, st)) {
        char sb[SHBUF];
        mw_shape_str(sb, sizeof sb, a->ndim, a->stride);
        mw_seterr("view: %s (strides %s) as %s: the strides do not allow a view; use reshape "
                  "(copies) or contiguous first", shp(a), sb, shp_n(ndim, res));
        return fail_out(out, al);
    }
    mw_tensor r = *a;
    r.ndim = ndim;
    memset(r.shape, 0, sizeof r.shape);
    memset(r.stride, 0, sizeof r.stride);
    for (int d = 0; d < ndim; d++) {
        r.shape[d] = res[d];
        r.stride[d] = st[d];
    }
    put_view(out, a, &r);
    return 0;
}

int mw_tensor_reshape(mw_tensor *out, const mw_tensor *a, int ndim, const int64_t *shape)
{
    int al = out == a;
    int64_t res[MW_MAXDIM], st[MW_MAXDIM];
    if (check_in("reshape", a) || infer_shape("reshape", a, ndim, shape, res)) return fail_out(out, al);
    mw_tensor r;
    if (view_strides(a, ndim, res, st) == 0) {
        r = *a;
        r.ndim = ndim;
        memset(r.shape, 0, sizeof r.shape);
        memset(r.stride, 0, sizeof r.stride);
        for (int d = 0; d < ndim; d++) {
            r.shape[d] = res[d];
            r.stride[d] = st[d];
        }
        put_view(out, a, &r);
        return 0;
    }
    /* not viewable: a contiguous copy, then its row-major view */
    if (clone_as("reshape", &r, a, a->dtype)) return fail_out(out, al);
    r.ndim = ndim;
    memset(r.shape, 0, sizeof r.shape);
    memset(r.stride, 0, sizeof r.stride);
    for (int d = 0; d < ndim; d++) r.shape[d] = res[d];
    contiguous_strides("reshape", ndim, res, r.stride); /* checked by infer_shape */
    put_out(out, &r, al);
    return 0;
}

int mw_tensor_unsqueeze(mw_tensor *out, const mw_tensor *a, int dim)
{
    int al = out == a;
    if (check_in("unsqueeze", a)) return fail_out(out, al);
    if (a->ndim >= MW_MAXDIM) {
        mw_seterr("unsqueeze: %s already has the maximum of %d dims", shp(a), MW_MAXDIM);
        return fail_out(out, al);
    }
    if (dim < -(a->ndim + 1) || dim > a->ndim) {
        mw_seterr("unsqueeze: dim %d out of range for %s (allowed %d..%d)", dim, shp(a),
                  -(a->ndim + 1), a->ndim);
        return fail_out(out, al);
    }
    if (dim < 0) dim += a->ndim + 1;
    mw_tensor r = *a;
    for (int d = a->ndim; d > dim; d--) {
        r.shape[d] = a->shape[d - 1];
        r.stride[d] = a->stride[d - 1];
    }
    r.shape[dim] = 1;
    r.stride[dim] = dim < a->ndim ? a->shape[dim] * a->stride[dim] : 1;
    r.ndim = a->ndim + 1;
    put_view(out, a, &r);
    return 0;
}

/* removes dims where drop[d] is set */
static void drop_dims(mw_tensor *r, const mw_tensor *a, const int *drop)
{
    int k = 0;
    for (int d = 0; d < a->ndim; d++) {
        if (drop[d]) continue;
        r->shape[k] = a->shape[d];
        r->stride[k] = a->stride[d];
        k++;
    }
    for (int d = k; d < MW_MAXDIM; d++) r->shape[d] = r->stride[d] = 0;
    r->ndim = k;
}

int mw_tensor_squeeze(mw_tensor *out, const mw_tensor *a, int dim)
{
    int al = out == a;
    if (check_in("squeeze", a)) return fail_out(out, al);
    mw_tensor r = *a;
    if (a->ndim == 0 && (dim == 0 || dim == -1)) { /* torch: squeezing a 0-dim tensor is a no-op */
        put_view(out, a, &r);
        return 0;
    }
    if (norm_dim("squeeze", &dim, a->ndim, a->shape)) return fail_out(out, al);
    int drop[MW_MAXDIM] = {0};
    drop[dim] = a->shape[dim] == 1;
    drop_dims(&r, a, drop);
    put_view(out, a, &r);
    return 0;
}

int mw_tensor_squeeze_all(mw_tensor *out, const mw_tensor *a)
{
    int al = out == a;
    if (check_in("squeeze", a)) return fail_out(out, al);
    mw_tensor r = *a;
    int drop[MW_MAXDIM] = {0};
    for (int d = 0; d < a->ndim; d++) drop[d] = a->shape[d] == 1;
    drop_dims(&r, a, drop);
    put_view(out, a, &r);
    return 0;
}

/* Strides (elements) of a broadcast to shape[ndim] (aligned at the right), 0 on broadcast dims.
 * Fails when a size differs and is not 1. */
static int broadcast_strides(const char *op, const mw_tensor *a, int ndim, const int64_t *shape,
                             int64_t *st)
{
    if (a->ndim > ndim)
        return mw_seterr("%s: %s cannot be broadcast to %s (more dims)", op, shp(a), shp_n(ndim, shape));
    int lead = ndim - a->ndim;
    for (int d = 0; d < ndim; d++) {
        if (d < lead) {
            st[d] = 0;
            continue;
        }
        int64_t s = a->shape[d - lead];
        if (s == shape[d]) st[d] = s == 1 ? 0 : a->stride[d - lead];
        else if (s == 1) st[d] = 0;
        else
            return mw_seterr("%s: %s cannot be broadcast to %s (size %lld at dim %d)", op, shp(a),
                             shp_n(ndim, shape), (long long)s, d - lead);
    }
    return 0;
}

int mw_tensor_expand(mw_tensor *out, const mw_tensor *a, int ndim, const int64_t *shape)
{
    int al = out == a;
    if (check_in("expand", a)) return fail_out(out, al);
    if (ndim < a->ndim || ndim > MW_MAXDIM || (ndim > 0 && !shape)) {
        mw_seterr("expand: %s to %s: need between %d and %d dims", shp(a), shp_n(ndim, shape),
                  a->ndim, MW_MAXDIM);
        return fail_out(out, al);
    }
    int lead = ndim - a->ndim;
    int64_t res[MW_MAXDIM];
    for (int d = 0; d < ndim; d++) {
        int64_t want = shape[d];
        if (want == -1) {
            if (d < lead) {
                mw_seterr("expand: %s to %s: -1 not allowed in a new leading dim %d", shp(a),
                          shp_n(ndim, shape), d);
                return fail_out(out, al);
            }
            want = a->shape[d - lead];
        } else if (want < 0) {
            mw_seterr("expand: %s to %s: invalid size %lld", shp(a), shp_n(ndim, shape), (long long)want);
            return fail_out(out, al);
        }
        res[d] = want;
    }
    int64_t st[MW_MAXDIM], dummy;
    if (check_shape("expand", ndim, res, &dummy)) return fail_out(out, al);
    /* non-broadcast dims keep their stride even when of size 1 */
    for (int d = 0; d < ndim; d++) {
        if (d < lead) {
            st[d] = 0;
            continue;
        }
        int64_t s = a->shape[d - lead];
        if (s == res[d]) st[d] = a->stride[d - lead];
        else if (s == 1) st[d] = 0;
        else {
            mw_seterr("expand: %s to %s: size %lld at dim %d is not 1", shp(a), shp_n(ndim, res),
                      (long long)s, d - lead);
            return fail_out(out, al);
        }
    }
    mw_tensor r = *a;
    r.ndim = ndim;
    for (int d = 0; d < MW_MAXDIM; d++) {
        r.shape[d] = d < ndim ? res[d] : 0;
        r.stride[d] = d < ndim ? st[d] : 0;
    }
    put_view(out, a, &r);
    return 0;
}

/* torch.diagonal: the diagonal of dims d1, d2 (offset > 0 above, < 0 below) becomes the last
 * dim; d1 and d2 are removed. */
int mw_tensor_diagonal(mw_tensor *out, const mw_tensor *a, int64_t offset, int d1, int d2)
{
    int al = out == a;
    if (check_in("diagonal", a)) return fail_out(out, al);
    if (a->ndim < 2) {
        mw_seterr("diagonal: input must have at least 2 dims, got %s", shp(a));
        return fail_out(out, al);
    }
    if (norm_dim("diagonal", &d1, a->ndim, a->shape) || norm_dim("diagonal", &d2, a->ndim, a->shape))
        return fail_out(out, al);
    if (d1 == d2) {
        mw_seterr("diagonal: dims %d and %d of %s are the same", d1, d2, shp(a));
        return fail_out(out, al);
    }
    /* the shift is computed only for a non-empty diagonal, where |offset| < the dim's size,
     * so offset * stride stays within the storage and cannot overflow */
    int64_t n1 = a->shape[d1], n2 = a->shape[d2], len, shift = 0;
    if (offset >= 0) {
        len = offset >= n2 ? 0 : (n1 < n2 - offset ? n1 : n2 - offset);
        if (len > 0) shift = offset * a->stride[d2];
    } else {
        len = offset <= -n1 ? 0 : (n1 + offset < n2 ? n1 + offset : n2);
        if (len > 0) shift = -offset * a->stride[d1];
    }
    mw_tensor r = *a;
    int drop[MW_MAXDIM] = {0};
    drop[d1] = drop[d2] = 1;
    drop_dims(&r, a, drop);
    r.shape[r.ndim] = len;
    r.stride[r.ndim] = a->stride[d1] + a->stride[d2];
    r.ndim++;
    if (len > 0) r.offset += shift; /* an empty diagonal keeps the offset in bounds */
    put_view(out, a, &r);
    return 0;
}

/* ================================================================ copies */

int mw_tensor_contiguous(mw_tensor *out, const mw_tensor *a)
{
    int al = out == a;
    if (check_in("contiguous", a)) return fail_out(out, al);
    mw_tensor r;
    if (mw_tensor_is_contiguous(a)) {
        r = *a;
        put_view(out, a, &r);
        return 0;
    }
    if (clone_as("contiguous", &r, a, a->dtype)) return fail_out(out, al);
    put_out(out, &r, al);
    return 0;
}

int mw_tensor_clone(mw_tensor *out, const mw_tensor *a)
{
    int al = out == a;
    mw_tensor r;
    if (check_in("clone", a) || clone_as("clone", &r, a, a->dtype)) return fail_out(out, al);
    put_out(out, &r, al);
    return 0;
}

int mw_tensor_to_dtype(mw_tensor *out, const mw_tensor *a, mw_dtype dt)
{
    int al = out == a;
    mw_tensor r;
    if (check_in("to_dtype", a) || clone_as("to_dtype", &r, a, dt)) return fail_out(out, al);
    put_out(out, &r, al);
    return 0;
}

int mw_tensor_copy_(mw_tensor *dst, const mw_tensor *src)
{
    int64_t st[MW_MAXDIM];
    if (check_in("copy_", dst) || check_in("copy_", src) || check_writable("copy_", dst)) return -1;
    if (broadcast_strides("copy_", src, dst->ndim, dst->shape, st)) return -1;
    if (mw_tensor_numel(dst) == 0) return 0;
    mw_overlap ov = mw_tensor_overlap(dst, src);
    if (ov == MW_OVERLAP_SAME && dst->dtype == src->dtype) return 0; /* x:copy_(x) */
    if (ov != MW_OVERLAP_NONE) {
        /* the same memory may be read and written in an overlapping order: copy src first */
        mw_tensor tmp;
        if (clone_as("copy_", &tmp, src, src->dtype)) return -1;
        broadcast_strides("copy_", &tmp, dst->ndim, dst->shape, st);
        copy_strided(dst, &tmp, st);
        mw_tensor_release(&tmp);
        return 0;
    }
    copy_strided(dst, src, st);
    return 0;
}

/* Row kernel for fill_: p[0] = dst; ctx = one element of dst's dtype. */
typedef struct { mw_dtype dt; union { float f; int64_t i; uint8_t b; } v; } fill_ctx;

static void row_fill(char *const *p, const int64_t *st, int64_t n, void *vctx)
{
    const fill_ctx *c = vctx;
    char *d = p[0];
    int64_t s = st[0];
    switch (c->dt) {
    case MW_F32: for (int64_t i = 0; i < n; i++) *(float *)(d + i * s) = c->v.f; break;
    case MW_I64: for (int64_t i = 0; i < n; i++) *(int64_t *)(d + i * s) = c->v.i; break;
    case MW_BOOL: for (int64_t i = 0; i < n; i++) *(uint8_t *)(d + i * s) = c->v.b; break;
    }
}

static void fill_strided(mw_tensor *dst, double value)
{
    fill_ctx c = {.dt = dst->dtype};
    switch (dst->dtype) {
    case MW_F32: c.v.f = (float)value; break;
    case MW_I64: c.v.i = f2i(value); break;
    case MW_BOOL: c.v.b = value != 0; break;
    }
    int64_t bst[1][MW_MAXDIM];
    byte_strides(dst, bst[0]);
    char *base[1] = {mw_tensor_data(dst)};
    strided_rows(dst->ndim, dst->shape, 1, base, bst, row_fill, &c);
}

int mw_tensor_fill_(mw_tensor *dst, double value)
{
    if (check_in("fill_", dst) || check_writable("fill_", dst) || check_fits("fill_", dst->dtype, value))
        return -1;
    fill_strided(dst, value);
    return 0;
}

static int64_t elem_offset(const mw_tensor *a, const int64_t *index)
{
    int64_t off = a->offset;
    for (int d = 0; d < a->ndim; d++) off += index[d] * a->stride[d];
    return off;
}

double mw_tensor_get(const mw_tensor *a, const int64_t *index)
{
    return load_d((const char *)a->storage->data + elem_offset(a, index) * (int64_t)mw_dtype_size(a->dtype),
                  a->dtype);
}

void mw_tensor_set(mw_tensor *a, const int64_t *index, double v)
{
    store_d((char *)a->storage->data + elem_offset(a, index) * (int64_t)mw_dtype_size(a->dtype),
            a->dtype, v);
}

/* ================================================================ indexing and joining */

static int check_index_tensor(const char *op, const mw_tensor *idx)
{
    if (check_in(op, idx)) return -1;
    if (idx->dtype != MW_I64)
        return mw_seterr("%s: index must be int64, got %s %s", op, mw_dtype_name(idx->dtype), shp(idx));
    return 0;
}

/* index value v (negative from the end) checked against size; -1 on error */
static int norm_index(const char *op, int64_t *v, int64_t size, int dim, const mw_tensor *a)
{
    if (*v < -size || *v >= size)
        return mw_seterr("%s: index %lld out of range for dim %d of %s", op, (long long)*v, dim, shp(a));
    if (*v < 0) *v += size;
    return 0;
}

/* a with dim removed, positioned at index i of that dim (no reference taken) */
static mw_tensor select_raw(const mw_tensor *a, int dim, int64_t i)
{
    mw_tensor r = *a;
    int drop[MW_MAXDIM] = {0};
    drop[dim] = 1;
    drop_dims(&r, a, drop);
    r.offset = a->offset + i * a->stride[dim];
    return r;
}

int mw_tensor_index_select(mw_tensor *out, const mw_tensor *a, int dim, const mw_tensor *idx)
{
    const char *op = "index_select";
    int al = out == a || out == idx;
    if (check_in(op, a) || check_index_tensor(op, idx) || norm_dim(op, &dim, a->ndim, a->shape))
        return fail_out(out, al);
    if (idx->ndim > 1) {
        mw_seterr("%s: index must be 0-D or 1-D, got %s", op, shp(idx));
        return fail_out(out, al);
    }
    int64_t n = mw_tensor_numel(idx), size = a->shape[dim];
    int64_t shape[MW_MAXDIM];
    memcpy(shape, a->shape, sizeof shape);
    shape[dim] = n;
    /* check every index before allocating */
    int64_t ist = idx->ndim ? idx->stride[0] : 0;
    const int64_t *iv = mw_tensor_data(idx); /* [n] with stride ist */
    for (int64_t k = 0; k < n; k++) {
        int64_t v = iv[k * ist];
        if (norm_index(op, &v, size, dim, a)) return fail_out(out, al);
    }
    mw_tensor r;
    if (tensor_alloc(op, &r, a->dtype, a->ndim, shape)) return fail_out(out, al);
    for (int64_t k = 0; k < n; k++) {
        int64_t v = iv[k * ist];
        if (v < 0) v += size;
        mw_tensor src = select_raw(a, dim, v), dst = select_raw(&r, dim, k);
        copy_strided(&dst, &src, src.stride);
    }
    put_out(out, &r, al);
    return 0;
}

/* Offsets (elements) of idx's element and of the matching element of t with the index dim left
 * out, for gather and scatter_add: walks idx's multi-index in row-major order. */
typedef struct {
    int ndim;
    int64_t shape[MW_MAXDIM], pos[MW_MAXDIM];
} mindex;

static int mindex_next(mindex *m)
{
    for (int d = m->ndim - 1; d >= 0; d--) {
        if (++m->pos[d] < m->shape[d]) return 1;
        m->pos[d] = 0;
    }
    return 0;
}

static int64_t mindex_off(const mindex *m, const mw_tensor *t, int skip)
{
    int64_t off = t->offset;
    for (int d = 0; d < m->ndim; d++)
        if (d != skip) off += m->pos[d] * t->stride[d];
    return off;
}

/* gather/scatter shape rules: idx has a's ndim and idx.shape[d] <= a.shape[d] for d != dim */
static int check_gather_shapes(const char *op, const mw_tensor *a, int dim, const mw_tensor *idx,
                               const char *aname)
{
    if (idx->ndim != a->ndim)
        return mw_seterr("%s: index %s must have as many dims as %s %s", op, shp(idx), aname, shp(a));
    for (int d = 0; d < a->ndim; d++)
        if (d != dim && idx->shape[d] > a->shape[d])
            return mw_seterr("%s: index %s is larger than %s %s at dim %d", op, shp(idx), aname, shp(a), d);
    return 0;
}

int mw_tensor_gather(mw_tensor *out, const mw_tensor *a, int dim, const mw_tensor *idx)
{
    const char *op = "gather";
    int al = out == a || out == idx;
    if (check_in(op, a) || check_index_tensor(op, idx)) return fail_out(out, al);
    if (a->ndim == 0 && idx->ndim == 0 && (dim == 0 || dim == -1)) {
        /* torch treats a 0-dim input as one element: only index 0 (or -1) is valid */
        int64_t v = *(const int64_t *)mw_tensor_data(idx);
        if (v != 0 && v != -1) {
            mw_seterr("%s: index %lld out of range for a 0-dim tensor", op, (long long)v);
            return fail_out(out, al);
        }
        mw_tensor r;
        if (clone_as(op, &r, a, a->dtype)) return fail_out(out, al);
        put_out(out, &r, al);
        return 0;
    }
    if (norm_dim(op, &dim, a->ndim, a->shape) || check_gather_shapes(op, a, dim, idx, "input"))
        return fail_out(out, al);
    mw_tensor r;
    if (tensor_alloc(op, &r, a->dtype, idx->ndim, idx->shape)) return fail_out(out, al);
    int64_t n = mw_tensor_numel(idx), size = a->shape[dim];
    size_t es = mw_dtype_size(a->dtype);
    const int64_t *iv = idx->storage->data;
    const char *ad = a->storage->data;
    char *rd = r.storage->data; /* [numel(idx)] contiguous, row-major like idx */
    mindex m = {.ndim = idx->ndim};
    memcpy(m.shape, idx->shape, sizeof m.shape);
    for (int64_t k = 0; k < n; k++, mindex_next(&m)) {
        int64_t v = iv[mindex_off(&m, idx, -1)];
        if (norm_index(op, &v, size, dim, a)) {
            mw_tensor_release(&r);
            return fail_out(out, al);
        }
        memcpy(rd + k * (int64_t)es, ad + (mindex_off(&m, a, dim) + v * a->stride[dim]) * (int64_t)es, es);
    }
    put_out(out, &r, al);
    return 0;
}

int mw_tensor_scatter_add_(mw_tensor *a, int dim, const mw_tensor *idx, const mw_tensor *src)
{
    const char *op = "scatter_add_";
    if (check_in(op, a) || check_writable(op, a) || check_index_tensor(op, idx) || check_in(op, src)) return -1;
    if (a->dtype == MW_BOOL) return mw_seterr("%s: bool tensor %s cannot be added to", op, shp(a));
    if (src->dtype != a->dtype)
        return mw_seterr("%s: src is %s, self is %s", op, mw_dtype_name(src->dtype), mw_dtype_name(a->dtype));
    if (a->ndim == 0) return mw_seterr("%s: self %s is 0-dim", op, shp(a));
    if (norm_dim(op, &dim, a->ndim, a->shape) || check_gather_shapes(op, a, dim, idx, "self"))
        return -1;
    if (src->ndim != idx->ndim) return mw_seterr("%s: index %s and src %s differ in dims", op, shp(idx), shp(src));
    for (int d = 0; d < idx->ndim; d++)
        if (idx->shape[d] > src->shape[d])
            return mw_seterr("%s: index %s is larger than src %s at dim %d", op, shp(idx), shp(src), d);
    int64_t n = mw_tensor_numel(idx), size = a->shape[dim];
    const int64_t *iv = idx->storage->data;
    mindex m = {.ndim = idx->ndim};
    memcpy(m.shape, idx->shape, sizeof m.shape);
    /* all indices first, so that a failure leaves self unchanged */
    for (int64_t k = 0; k < n; k++, mindex_next(&m)) {
        int64_t v = iv[mindex_off(&m, idx, -1)];
        if (norm_index(op, &v, size, dim, a)) return -1;
    }
    mw_tensor s = *src, tmp = {0}, itmp = {0};
    if (mw_tensor_overlap(a, src)) { /* src read while self is written */
        if (clone_as(op, &tmp, src, src->dtype)) return -1;
        s = tmp;
    }
    if (mw_tensor_overlap(a, idx)) { /* an int64 self may share memory with the index too */
        if (clone_as(op, &itmp, idx, MW_I64)) {
            mw_tensor_release(&tmp);
            return -1;
        }
        idx = &itmp;
        iv = itmp.storage->data;
    }
    memset(m.pos, 0, sizeof m.pos);
    for (int64_t k = 0; k < n; k++, mindex_next(&m)) {
        int64_t v = iv[mindex_off(&m, idx, -1)];
        if (v < 0) v += size;
        int64_t ao = mindex_off(&m, a, dim) + v * a->stride[dim], so = mindex_off(&m, &s, -1);
        if (a->dtype == MW_F32)
            ((float *)a->storage->data)[ao] += ((const float *)s.storage->data)[so];
        else
            ((int64_t *)a->storage->data)[ao] = (int64_t)((uint64_t)((int64_t *)a->storage->data)[ao] +
                                                          (uint64_t)((const int64_t *)s.storage->data)[so]);
    }
    mw_tensor_release(&tmp);
    mw_tensor_release(&itmp);
    return 0;
}

/* numpy broadcast of two shapes into shape[*ndim] */
static int broadcast_shape(const char *op, const mw_tensor *a, const mw_tensor *b, int *ndim,
                           int64_t *shape)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < nd; d++) {
        int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
        int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
        if (sa != sb && sa != 1 && sb != 1)
            return mw_seterr("%s: shapes %s and %s cannot be broadcast (dim %d: %lld vs %lld)", op,
                             shp(a), shp(b), d, (long long)sa, (long long)sb);
        shape[d] = sa == 1 ? sb : sa;
    }
    *ndim = nd;
    return 0;
}

/* Row kernels for masked_select: p[0] = input, p[1] = mask; counting, then copying. */
typedef struct { int64_t count; char *dst; size_t es; } msel_ctx;

static void row_mask_count(char *const *p, const int64_t *st, int64_t n, void *vctx)
{
    msel_ctx *c = vctx;
    for (int64_t i = 0; i < n; i++) c->count += *(const uint8_t *)(p[1] + i * st[1]) != 0;
}

static void row_mask_copy(char *const *p, const int64_t *st, int64_t n, void *vctx)
{
    msel_ctx *c = vctx;
    for (int64_t i = 0; i < n; i++)
        if (*(const uint8_t *)(p[1] + i * st[1])) {
            memcpy(c->dst, p[0] + i * st[0], c->es);
            c->dst += c->es;
        }
}

static int check_mask(const char *op, const mw_tensor *mask)
{
    if (check_in(op, mask)) return -1;
    if (mask->dtype != MW_BOOL)
        return mw_seterr("%s: mask must be bool, got %s %s", op, mw_dtype_name(mask->dtype), shp(mask));
    return 0;
}

int mw_tensor_masked_select(mw_tensor *out, const mw_tensor *a, const mw_tensor *mask)
{
    const char *op = "masked_select";
    int al = out == a || out == mask;
    int nd = 0;
    int64_t shape[MW_MAXDIM], st[2][MW_MAXDIM];
    if (check_in(op, a) || check_mask(op, mask) || broadcast_shape(op, a, mask, &nd, shape))
        return fail_out(out, al);
    broadcast_strides(op, a, nd, shape, st[0]);
    broadcast_strides(op, mask, nd, shape, st[1]);
    size_t es = mw_dtype_size(a->dtype);
    for (int d = 0; d < nd; d++) {
        st[0][d] *= (int64_t)es;
        /* mask elements are 1 byte: element strides are byte strides */
    }
    char *base[2] = {mw_tensor_data(a), mw_tensor_data(mask)};
    msel_ctx c = {0, NULL, es};
    strided_rows(nd, shape, 2, base, st, row_mask_count, &c);
    mw_tensor r;
    if (tensor_alloc(op, &r, a->dtype, 1, &c.count)) return fail_out(out, al);
    c.dst = r.storage->data; /* [count] */
    strided_rows(nd, shape, 2, base, st, row_mask_copy, &c);
    put_out(out, &r, al);
    return 0;
}

/* Row kernel for masked_fill_: p[0] = self, p[1] = mask; ctx = the value as in fill_. */
static void row_mask_fill(char *const *p, const int64_t *st, int64_t n, void *vctx)
{
    const fill_ctx *c = vctx;
    char *d = p[0];
    const uint8_t *m = (const uint8_t *)p[1];
    int64_t ds = st[0], ms = st[1];
    switch (c->dt) {
    case MW_F32: for (int64_t i = 0; i < n; i++) if (m[i * ms]) *(float *)(d + i * ds) = c->v.f; break;
    case MW_I64: for (int64_t i = 0; i < n; i++) if (m[i * ms]) *(int64_t *)(d + i * ds) = c->v.i; break;
    case MW_BOOL: for (int64_t i = 0; i < n; i++) if (m[i * ms]) *(uint8_t *)(d + i * ds) = c->v.b; break;
    }
}

int mw_tensor_masked_fill_(mw_tensor *a, const mw_tensor *mask, double value)
{
    const char *op = "masked_fill_";
    int64_t st[2][MW_MAXDIM];
    if (check_in(op, a) || check_writable(op, a) || check_mask(op, mask)) return -1;
    if (broadcast_strides(op, mask, a->ndim, a->shape, st[1])) return -1;
    if (check_fits(op, a->dtype, value)) return -1;
    mw_tensor m = *mask, tmp = {0};
    if (mw_tensor_overlap(a, mask)) { /* the mask is read while self is written */
        if (clone_as(op, &tmp, mask, MW_BOOL)) return -1;
        m = tmp;
        broadcast_strides(op, &m, a->ndim, a->shape, st[1]);
    }
    byte_strides(a, st[0]);
    fill_ctx c = {.dt = a->dtype};
    switch (a->dtype) {
    case MW_F32: c.v.f = (float)value; break;
    case MW_I64: c.v.i = f2i(value); break;
    case MW_BOOL: c.v.b = value != 0; break;
    }
    char *base[2] = {mw_tensor_data(a), mw_tensor_data(&m)};
    strided_rows(a->ndim, a->shape, 2, base, st, row_mask_fill, &c);
    mw_tensor_release(&tmp);
    return 0;
}

int mw_tensor_nonzero(mw_tensor *out, const mw_tensor *a)
{
    const char *op = "nonzero";
    int al = out == a;
    if (check_in(op, a)) return fail_out(out, al);
    int64_t n = mw_tensor_numel(a), count = 0;
    size_t es = mw_dtype_size(a->dtype);
    const char *ad = a->storage->data;
    /* counting walks an expanded (stride 0) dim once: each value found there stands for rep
     * copies, so a huge expanded input costs nothing until its (huge) result is allocated */
    mw_tensor once = *a;
    int64_t rep = 1;
    for (int d = 0; d < a->ndim; d++)
        if (a->stride[d] == 0 && a->shape[d] > 1) { rep *= a->shape[d]; once.shape[d] = 1; }
    int64_t n_once = mw_tensor_numel(&once);
    mindex m = {.ndim = a->ndim};
    memcpy(m.shape, once.shape, sizeof m.shape);
    for (int64_t k = 0; k < n_once; k++, mindex_next(&m))
        count += load_d(ad + mindex_off(&m, a, -1) * (int64_t)es, a->dtype) != 0;
    if (mw_size_mul(op, count, rep, &count)) return fail_out(out, al);
    memcpy(m.shape, a->shape, sizeof m.shape);
    int64_t shape[2] = {count, a->ndim};
    mw_tensor r;
    if (tensor_alloc(op, &r, MW_I64, 2, shape)) return fail_out(out, al);
    int64_t *rd = r.storage->data, *end = rd + count * a->ndim; /* [count, ndim] */
    memset(m.pos, 0, sizeof m.pos);
    for (int64_t k = 0; k < n && (rd < end || (a->ndim == 0 && count)); k++, mindex_next(&m))
        if (load_d(ad + mindex_off(&m, a, -1) * (int64_t)es, a->dtype) != 0) {
            memcpy(rd, m.pos, (size_t)a->ndim * sizeof *rd);
            rd += a->ndim;
        }
    put_out(out, &r, al);
    return 0;
}

static int aliases_any(const mw_tensor *out, int n, const mw_tensor *const *ts)
{
    for (int i = 0; i < n; i++)
        if (ts && ts[i] == out) return 1;
    return 0;
}

/* torch.cat. As in torch, 1-D tensors of size 0 are skipped (so that a result can be grown
 * from an empty start); all others must agree in dtype, ndim and every size except dim's. */
int mw_tensor_cat(mw_tensor *out, int n, const mw_tensor *const *ts, int dim)
{
    const char *op = "cat";
    int al = aliases_any(out, n, ts);
    if (n < 1 || !ts) {
        mw_seterr("%s: needs at least one tensor, got %d", op, n);
        return fail_out(out, al);
    }
    for (int i = 0; i < n; i++)
        if (check_in(op, ts[i])) return fail_out(out, al);
    int ref = -1;
    for (int i = 0; i < n && ref < 0; i++)
        if (!(ts[i]->ndim == 1 && ts[i]->shape[0] == 0)) ref = i;
    if (ref < 0) ref = 0; /* all empty: the result is one of them */
    const mw_tensor *R = ts[ref];
    if (R->ndim == 0) {
        mw_seterr("%s: tensor %d is 0-dim and cannot be concatenated", op, ref);
        return fail_out(out, al);
    }
    if (norm_dim(op, &dim, R->ndim, R->shape)) return fail_out(out, al);
    int64_t shape[MW_MAXDIM];
    memcpy(shape, R->shape, sizeof shape);
    shape[dim] = 0;
    for (int i = 0; i < n; i++) {
        const mw_tensor *t = ts[i];
        if (i != ref && t->ndim == 1 && t->shape[0] == 0) continue;
        if (t->dtype != R->dtype) {
            mw_seterr("%s: tensor %d is %s, tensor %d is %s", op, i, mw_dtype_name(t->dtype), ref,
                      mw_dtype_name(R->dtype));
            return fail_out(out, al);
        }
        int same = t->ndim == R->ndim;
        for (int d = 0; d < R->ndim && same; d++)
            if (d != dim && t->shape[d] != R->shape[d]) same = 0;
        if (!same) {
            mw_seterr("%s: shapes %s (tensor %d) and %s (tensor %d) differ outside dim %d", op,
                      shp(R), ref, shp(t), i, dim);
            return fail_out(out, al);
        }
        if (mw_size_add(op, shape[dim], t->shape[dim], &shape[dim])) return fail_out(out, al);
    }
    mw_tensor r;
    if (tensor_alloc(op, &r, R->dtype, R->ndim, shape)) return fail_out(out, al);
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        const mw_tensor *t = ts[i];
        if (i != ref && t->ndim == 1 && t->shape[0] == 0) continue;
        mw_tensor dst = r;
        dst.shape[dim] = t->shape[dim];
        dst.offset = at * r.stride[dim];
        copy_strided(&dst, t, t->stride);
        at += t->shape[dim];
    }
    put_out(out, &r, al);
    return 0;
}

int mw_tensor_stack(mw_tensor *out, int n, const mw_tensor *const *ts, int dim)
{
    const char *op = "stack";
    int al = aliases_any(out, n, ts);
    if (n < 1 || !ts) {
        mw_seterr("%s: needs at least one tensor, got %d", op, n);
        return fail_out(out, al);
    }
    for (int i = 0; i < n; i++)
        if (check_in(op, ts[i])) return fail_out(out, al);
    const mw_tensor *R = ts[0];
    int nd = R->ndim;
    if (nd >= MW_MAXDIM) {
        mw_seterr("%s: tensors %s already have the maximum of %d dims", op, shp(R), MW_MAXDIM);
        return fail_out(out, al);
    }
    if (dim < -(nd + 1) || dim > nd) {
        mw_seterr("%s: dim %d out of range for stacking %s (allowed %d..%d)", op, dim, shp(R), -(nd + 1), nd);
        return fail_out(out, al);
    }
    if (dim < 0) dim += nd + 1;
    for (int i = 1; i < n; i++) {
        const mw_tensor *t = ts[i];
        int same = t->ndim == nd;
        for (int d = 0; d < nd && same; d++) same = t->shape[d] == R->shape[d];
        if (!same) {
            mw_seterr("%s: tensor %d has shape %s, tensor 0 has %s", op, i, shp(t), shp(R));
            return fail_out(out, al);
        }
        if (t->dtype != R->dtype) {
            mw_seterr("%s: tensor %d is %s, tensor 0 is %s", op, i, mw_dtype_name(t->dtype),
                      mw_dtype_name(R->dtype));
            return fail_out(out, al);
        }
    }
    int64_t shape[MW_MAXDIM];
    for (int d = 0, k = 0; d <= nd; d++) shape[d] = d == dim ? n : R->shape[k++];
    mw_tensor r;
    if (tensor_alloc(op, &r, R->dtype, nd + 1, shape)) return fail_out(out, al);
    for (int i = 0; i < n; i++) {
        mw_tensor dst = select_raw(&r, dim, i);
        copy_strided(&dst, ts[i], ts[i]->stride);
    }
    put_out(out, &r, al);
    return 0;
}

/* ================================================================ printing
 * A port of PyTorch's printing (torch/_tensor_str.py, default print options: precision 4,
 * threshold 1000, edgeitems 3, linewidth 80), so that output reads as in a notebook. One
 * formatter (int / fixed / scientific mode and a common width) is chosen from the elements
 * that are shown; suffixes: ", dtype=torch.int64" or "torch.bool" for non-float tensors and
 * ", shape=[2,3]" for ndim >= 1 (where torch prints neither), wrapped like torch's suffixes. */

#define PR_PRECISION 4
#define PR_THRESHOLD 1000
#define PR_EDGE 3
#define PR_LINEWIDTH 80

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }
static void sb_spaces(sbuf *b, int n)
{
    for (int i = 0; i < n; i++) sb_add(b, " ", 1);
}

typedef struct {
    mw_dtype dt;
    int int_mode, sci_mode, width;
    /* first pass over the float elements shown */
    int any;
    double amin, amax;
} pr_fmt;

/* the text of one element without padding; buf holds at least 400 bytes ("%.0f" of 3.4e38 has
 * 39 digits) */
static int pr_elem(const pr_fmt *f, const char *p, char *buf, size_t n)
{
    switch (f->dt) {
    case MW_I64: return snprintf(buf, n, "%lld", (long long)*(const int64_t *)p);
    case MW_BOOL: return snprintf(buf, n, "%s", *(const uint8_t *)p ? "True" : "False");
    case MW_F32: break;
    }
    double v = *(const float *)p;
    if (isnan(v)) return snprintf(buf, n, "nan"); /* C would print "-nan" for some NaNs */
    if (f->sci_mode) return snprintf(buf, n, "%.*e", PR_PRECISION, v);
    if (f->int_mode) return snprintf(buf, n, isinf(v) ? "%.0f" : "%.0f.", v);
    return snprintf(buf, n, "%.*f", PR_PRECISION, v);
}

/* visits every element that will be shown (all, or the edge items of each dim when summarizing) */
typedef void (*pr_visit)(pr_fmt *f, const char *p);
static void pr_walk(const mw_tensor *a, int d, int64_t off, int summarize, pr_fmt *f, pr_visit fn)
{
    size_t es = mw_dtype_size(a->dtype);
    if (d == a->ndim) {
        fn(f, (const char *)a->storage->data + off * (int64_t)es);
        return;
    }
    int64_t n = a->shape[d];
    for (int64_t i = 0; i < n; i++) {
        if (summarize && n > 2 * PR_EDGE && i == PR_EDGE) i = n - PR_EDGE;
        pr_walk(a, d + 1, off + i * a->stride[d], summarize, f, fn);
    }
}

static void pr_scan(pr_fmt *f, const char *p)
{
    double v = *(const float *)p;
    if (!isfinite(v) || v == 0) return;
    double av = fabs(v);
    if (!f->any || av < f->amin) f->amin = av;
    if (!f->any || av > f->amax) f->amax = av;
    f->any = 1;
    if (ceilf((float)v) != (float)v) f->int_mode = 0;
}

static void pr_width(pr_fmt *f, const char *p)
{
    char buf[400];
    int w;
    if (f->dt == MW_F32) {
        double v = *(const float *)p;
        if (!isfinite(v) || v == 0) return; /* torch sizes the columns by finite nonzero values */
        w = pr_elem(f, p, buf, sizeof buf);
    } else {
        w = pr_elem(f, p, buf, sizeof buf);
    }
    if (w > f->width) f->width = w;
}

static void pr_padded(sbuf *b, const pr_fmt *f, const char *p)
{
    char buf[400];
    int w = pr_elem(f, p, buf, sizeof buf);
    sb_spaces(b, f->width - w);
    sb_add(b, buf, (size_t)w);
}

static void pr_tensor(sbuf *b, const mw_tensor *a, int d, int64_t off, int indent, int summarize,
                      const pr_fmt *f)
{
    size_t es = mw_dtype_size(a->dtype);
    const char *data = a->storage->data;
    int dims = a->ndim - d;
    if (dims == 0) {
        pr_padded(b, f, data + off * (int64_t)es);
        return;
    }
    int64_t n = a->shape[d];
    int skip = summarize && n > 2 * PR_EDGE;
    sb_str(b, "[");
    if (dims == 1) {
        int per_line = (PR_LINEWIDTH - indent) / (f->width + 2);
        if (per_line < 1) per_line = 1;
        int64_t k = 0; /* items written, " ..." counts as one */
        for (int64_t i = 0; i < n; i++, k++) {
            if (k > 0) {
                if (k % per_line == 0) {
                    sb_str(b, ",\n");
                    sb_spaces(b, indent + 1);
                } else {
                    sb_str(b, ", ");
                }
            }
            if (skip && i == PR_EDGE) {
                sb_str(b, " ...");
                i = n - PR_EDGE - 1;
                continue;
            }
            pr_padded(b, f, data + (off + i * a->stride[d]) * (int64_t)es);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            if (i > 0) {
                sb_str(b, ",");
                for (int k = 0; k < dims - 1; k++) sb_str(b, "\n");
                sb_spaces(b, indent + 1);
            }
            if (skip && i == PR_EDGE) {
                sb_str(b, "...");
                i = n - PR_EDGE - 1;
                continue;
            }
            pr_tensor(b, a, d + 1, off + i * a->stride[d], indent + 1, summarize, f);
        }
    }
    sb_str(b, "]");
}

char *mw_tensor_format(const mw_tensor *a)
{
    if (check_in("format", a)) return NULL;
    const int indent = 7; /* strlen("tensor(") */
    sbuf b = {0};
    sb_str(&b, "tensor(");
    int64_t numel = mw_tensor_numel(a);
    if (numel == 0) {
        sb_str(&b, "[]");
    } else {
        int summarize = numel > PR_THRESHOLD;
        pr_fmt f = {.dt = a->dtype, .int_mode = 1, .width = 1};
        if (a->dtype == MW_F32) {
            pr_walk(a, 0, a->offset, summarize, &f, pr_scan);
            if (f.any) {
                if (f.int_mode) f.sci_mode = f.amax / f.amin > 1000.0 || f.amax > 1.0e8;
                else f.sci_mode = f.amax / f.amin > 1000.0 || f.amax > 1.0e8 || f.amin < 1.0e-4;
                /* (in int mode the width counts the "." appended to each number) */
                pr_walk(a, 0, a->offset, summarize, &f, pr_width);
            }
        } else {
            pr_walk(a, 0, a->offset, summarize, &f, pr_width);
        }
        pr_tensor(&b, a, 0, a->offset, indent, summarize, &f);
    }
    /* suffixes, moved to a new line when the last line would pass the line width */
    char suffixes[2][SHBUF + 16];
    int ns = 0;
    if (a->dtype != MW_F32) snprintf(suffixes[ns++], sizeof suffixes[0], "dtype=torch.%s", mw_dtype_name(a->dtype));
    if (a->ndim >= 1) snprintf(suffixes[ns++], sizeof suffixes[0], "shape=%s", shp(a));
    if (!b.oom) {
        const char *nl = strrchr(b.s, '\n');
        /* torch: len(s) - s.rfind("\n") + 1, rfind giving -1 when there is no newline */
        size_t last = nl ? b.len - (size_t)(nl - b.s) + 1 : b.len + 2;
        for (int i = 0; i < ns; i++) {
            size_t sl = strlen(suffixes[i]);
            if (last + sl + 2 > PR_LINEWIDTH) {
                sb_str(&b, ",\n");
                sb_spaces(&b, indent);
                last = indent + sl;
            } else {
                sb_str(&b, ", ");
                last += sl + 2;
            }
            sb_str(&b, suffixes[i]);
        }
    }
    sb_str(&b, ")");
    if (b.oom) {
        free(b.s);
        mw_seterr("format: out of memory formatting %s", shp(a));
        return NULL;
    }
    return b.s;
}
