/* mw_tensor.h - the tensor core of miwb: storage, views, creation, ops, linear algebra.
 *
 * A tensor is a small header (dtype, ndim, shape, strides, offset) over a reference-counted
 * storage. Views (narrow, select, transpose, permute, view, expand, diagonal, ...) share the
 * storage and cost no allocation. Strides and offsets are in elements, not bytes.
 *
 * Conventions
 *   - Every function that can fail returns int: 0 on success, -1 on failure with a message set
 *     (read it with mw_error()). Messages name the operation and the shapes, e.g.
 *     "matmul: [4,768] @ [512,768]: inner dimensions differ". Nothing here prints, exits or
 *     aborts on bad input.
 *   - Outputs come first. An output mw_tensor is written only on success; it then owns one
 *     reference to its storage, released with mw_tensor_release(). On failure the output is
 *     left zeroed (storage == NULL), so releasing it is always safe.
 *   - Dims are 0-based; negative dims and indices count from the end (-1 is the last) and are
 *     normalized by the callee. Ranges are half-open.
 *   - dtypes: MW_F32 for values, MW_I64 for token ids and indices, MW_BOOL (one byte, 0 or 1) for
 *     masks and comparison results. Conversions are explicit (mw_tensor_to_dtype).
 *   - Functions named *_ work in place on their first argument.
 */
#ifndef MW_TENSOR_H
#define MW_TENSOR_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#define MW_MAXDIM 8

typedef enum { MW_F32 = 0, MW_I64 = 1, MW_BOOL = 2 } mw_dtype;

size_t mw_dtype_size(mw_dtype dt);
const char *mw_dtype_name(mw_dtype dt); /* "float32", "int64", "bool" */

/* ---------------------------------------------------------------- errors */
const char *mw_error(void);                    /* last message of this thread */
int mw_seterr(const char *fmt, ...)            /* sets the message, returns -1 */
    __attribute__((format(printf, 1, 2)));
/* formats a shape as "[2,3,4]" into buf (at least 8*MW_MAXDIM*21 bytes is always enough) */
char *mw_shape_str(char *buf, size_t n, int ndim, const int64_t *shape);

/* ---------------------------------------------------------------- checked size arithmetic
 * Every size computed from user numbers (shapes, strides, element counts, lengths, offsets)
 * goes through these: *r = a * b or a + b in int64. On overflow they return -1 and, when op is
 * not NULL, set "op: size arithmetic overflows (a * b)"; *r is then left unchanged. */
int mw_size_mul(const char *op, int64_t a, int64_t b, int64_t *r);
int mw_size_add(const char *op, int64_t a, int64_t b, int64_t *r);

/* ---------------------------------------------------------------- interrupts
 * A SIGINT handler calls mw_interrupt() (async-signal-safe); the long loops of the core poll
 * mw_interrupted() and fail with "op: interrupted" (results are then discarded). The flag stays
 * set until mw_interrupt_clear(), which whoever runs a new computation calls first. */
extern volatile sig_atomic_t mw_interrupt_flag;
static inline void mw_interrupt(void) { mw_interrupt_flag = 1; }
static inline int mw_interrupted(void) { return mw_interrupt_flag != 0; }
static inline void mw_interrupt_clear(void) { mw_interrupt_flag = 0; }

/* ---------------------------------------------------------------- storage */
typedef struct mw_storage mw_storage;
struct mw_storage {
    int64_t refcount;
    mw_dtype dtype;
    int64_t numel;
    void *data;
    /* Called when refcount reaches 0. NULL means data came from mw_storage_new (freed here; its
     * large storages set their own, which unmaps them).
     * Storages that wrap foreign memory (an mmap of a model file) set their own: it frees the
     * foreign memory (data, owner) only; mw_storage_release frees the struct itself. A wrap
     * with release == NULL leaves the memory to the caller. */
    void (*release)(mw_storage *s);
    void *owner; /* for release(): e.g. the mmap handle */
};

mw_storage *mw_storage_new(mw_dtype dt, int64_t numel); /* zero-filled; NULL + error on failure */
mw_storage *mw_storage_wrap(mw_dtype dt, int64_t numel, void *data,
                            void (*release)(mw_storage *), void *owner); /* refcount 1 */
void mw_storage_retain(mw_storage *s);
void mw_storage_release(mw_storage *s);
/* Bytes currently held by storages created with mw_storage_new (for Lua GC accounting). */
int64_t mw_storage_live_bytes(void);
/* Freed large storages (8 MB and more) are unmapped at once by default. With a budget, up to
 * max_bytes of them are kept and reused by later requests of about their size (0: none kept,
 * the default). mw_storage_kept_bytes: what is kept now; mw_storage_trim: unmap it all. */
void mw_storage_keep_freed(int64_t max_bytes);
int64_t mw_storage_kept_bytes(void);
void mw_storage_trim(void);

/* ---------------------------------------------------------------- tensor header */
typedef struct mw_tensor {
    mw_storage *storage;
    mw_dtype dtype;
    int ndim;
    int64_t shape[MW_MAXDIM];
    int64_t stride[MW_MAXDIM]; /* elements */
    int64_t offset;            /* elements */
} mw_tensor;

void mw_tensor_release(mw_tensor *t);                  /* drops the reference, zeroes t */
void mw_tensor_share(mw_tensor *out, const mw_tensor *t); /* out = t, one more reference */
int64_t mw_tensor_numel(const mw_tensor *t);
int mw_tensor_is_contiguous(const mw_tensor *t);
void *mw_tensor_data(const mw_tensor *t);             /* pointer to element 0 (storage + offset) */
char *mw_tensor_shape_str(char *buf, size_t n, const mw_tensor *t);
/* How the memory of a and b overlaps, by address (two storages over one mapping count too).
 * In-place ops read an operand that overlaps PARTIAL from a copy, as torch does. */
typedef enum {
    MW_OVERLAP_NONE = 0, /* disjoint (or either is empty) */
    MW_OVERLAP_SAME,     /* the same elements in the same positions: element-wise ops are safe */
    MW_OVERLAP_PARTIAL   /* anything else sharing memory (x and x:t(), a row and the matrix) */
} mw_overlap;
mw_overlap mw_tensor_overlap(const mw_tensor *a, const mw_tensor *b);

/* ---------------------------------------------------------------- creation */
int mw_tensor_empty(mw_tensor *out, mw_dtype dt, int ndim, const int64_t *shape); /* zeroed */
int mw_tensor_zeros(mw_tensor *out, mw_dtype dt, int ndim, const int64_t *shape);
int mw_tensor_full(mw_tensor *out, mw_dtype dt, int ndim, const int64_t *shape, double value);
/* copies numel(shape) values of dtype dt from data */
int mw_tensor_from_data(mw_tensor *out, mw_dtype dt, int ndim, const int64_t *shape,
                        const void *data);
int mw_tensor_scalar(mw_tensor *out, mw_dtype dt, double value); /* 0-dim */
int mw_tensor_arange(mw_tensor *out, mw_dtype dt, double start, double end, double step);
int mw_tensor_linspace(mw_tensor *out, double start, double end, int64_t steps);
int mw_tensor_eye(mw_tensor *out, int64_t n, int64_t m);
/* tril keeps j - i <= k, triu keeps j - i >= k, over the last two dims */
int mw_tensor_tril(mw_tensor *out, const mw_tensor *a, int64_t k);
int mw_tensor_triu(mw_tensor *out, const mw_tensor *a, int64_t k);

/* ---------------------------------------------------------------- random numbers
 * One documented algorithm, the same numbers on every machine: a generator is xoshiro256**
 * seeded from a 64-bit seed through splitmix64. uniform = (next() >> 40) * 2^-24 in [0, 1);
 * normal = Box-Muller on two uniforms (u1 replaced by 1-u1 to avoid log(0)), using both
 * outputs in order; randint(lo, hi) = lo + (next() % (hi - lo)) with rejection of the biased
 * tail. Fill order is row-major over the output. */
typedef struct mw_rng {
    uint64_t s[4];
    int has_spare;
    double spare;
} mw_rng;
void mw_rng_seed(mw_rng *g, uint64_t seed);
uint64_t mw_rng_next(mw_rng *g);
double mw_rng_uniform(mw_rng *g);
double mw_rng_normal(mw_rng *g);
mw_rng *mw_rng_default(void); /* the process-wide generator used when g == NULL */
/* one step of the splitmix64 stream at *state (also seeds mw_rng): for callers that keep a bare
 * 64-bit state, such as a dataset's batch order */
uint64_t mw_splitmix64(uint64_t *state);
/* p[i] = mean + std * normal number (first + i) of the counter-based stream with this key (rng.c
 * documents it): any piece computes alone, so the fill runs on mw_parallel_for's threads with the
 * same numbers for every thread count. Model weights are filled this way. */
void mw_fill_normal(float *p, int64_t n, uint64_t key, uint64_t first, double mean, double std);
int mw_tensor_rand(mw_tensor *out, mw_rng *g, int ndim, const int64_t *shape);  /* U[0,1) f32 */
int mw_tensor_randn(mw_tensor *out, mw_rng *g, int ndim, const int64_t *shape); /* N(0,1) f32 */
int mw_tensor_randint(mw_tensor *out, mw_rng *g, int64_t lo, int64_t hi, int ndim,
                      const int64_t *shape); /* i64 in [lo, hi) */

/* ---------------------------------------------------------------- views (share storage) */
int mw_tensor_narrow(mw_tensor *out, const mw_tensor *a, int dim, int64_t start, int64_t len);
int mw_tensor_select(mw_tensor *out, const mw_tensor *a, int dim, int64_t index);
int mw_tensor_transpose(mw_tensor *out, const mw_tensor *a, int d0, int d1);
int mw_tensor_permute(mw_tensor *out, const mw_tensor *a, const int *perm); /* a->ndim entries */
/* shape may hold one -1; fails when strides do not allow a view */
int mw_tensor_view(mw_tensor *out, const mw_tensor *a, int ndim, const int64_t *shape);
int mw_tensor_reshape(mw_tensor *out, const mw_tensor *a, int ndim, const int64_t *shape); /* view or copy */
int mw_tensor_unsqueeze(mw_tensor *out, const mw_tensor *a, int dim);
int mw_tensor_squeeze(mw_tensor *out, const mw_tensor *a, int dim); /* dim: that one if size 1 */
int mw_tensor_squeeze_all(mw_tensor *out, const mw_tensor *a);
int mw_tensor_expand(mw_tensor *out, const mw_tensor *a, int ndim, const int64_t *shape); /* -1 keeps */
int mw_tensor_diagonal(mw_tensor *out, const mw_tensor *a, int64_t offset, int d1, int d2);

/* ---------------------------------------------------------------- copies */
int mw_tensor_contiguous(mw_tensor *out, const mw_tensor *a); /* shares when already contiguous */
int mw_tensor_clone(mw_tensor *out, const mw_tensor *a);      /* always a new storage */
int mw_tensor_copy_(mw_tensor *dst, const mw_tensor *src);    /* src broadcast to dst, dtype converted */
int mw_tensor_fill_(mw_tensor *dst, double value);
int mw_tensor_to_dtype(mw_tensor *out, const mw_tensor *a, mw_dtype dt); /* new storage */
double mw_tensor_get(const mw_tensor *a, const int64_t *index);         /* no checks: caller's job */
void mw_tensor_set(mw_tensor *a, const int64_t *index, double v);

/* ---------------------------------------------------------------- indexing and joining */
int mw_tensor_index_select(mw_tensor *out, const mw_tensor *a, int dim, const mw_tensor *idx);
int mw_tensor_gather(mw_tensor *out, const mw_tensor *a, int dim, const mw_tensor *idx);
int mw_tensor_scatter_add_(mw_tensor *a, int dim, const mw_tensor *idx, const mw_tensor *src);
int mw_tensor_masked_select(mw_tensor *out, const mw_tensor *a, const mw_tensor *mask); /* 1-D */
int mw_tensor_masked_fill_(mw_tensor *a, const mw_tensor *mask, double value); /* mask broadcast */
int mw_tensor_nonzero(mw_tensor *out, const mw_tensor *a); /* i64 [n, ndim] */
int mw_tensor_cat(mw_tensor *out, int n, const mw_tensor *const *ts, int dim);
int mw_tensor_stack(mw_tensor *out, int n, const mw_tensor *const *ts, int dim);

/* ---------------------------------------------------------------- element-wise (broadcasting)
 * Binary ops follow numpy broadcasting. Arithmetic on two MW_I64 stays MW_I64 (DIV too gives
 * F32, as torch's true division); mixing I64/BOOL with F32 gives F32. Comparisons give MW_BOOL.
 * A 0-dim tensor acts as a scalar. In-place forms (_) require the result shape and dtype to be
 * the first argument's. */
typedef enum {
    MW_ADD, MW_SUB, MW_MUL, MW_DIV, MW_POW, MW_MAXIMUM, MW_MINIMUM,
    MW_EQ, MW_NE, MW_LT, MW_LE, MW_GT, MW_GE, MW_AND, MW_OR
} mw_binop;
typedef enum {
    MW_NEG, MW_EXP, MW_LOG, MW_SQRT, MW_ABS, MW_TANH, MW_RELU, MW_GELU_NEW, MW_SIGMOID,
    MW_NOT, MW_SIN, MW_COS, MW_FLOOR, MW_CEIL, MW_ROUND, MW_SIGN
} mw_unop;
int mw_binary(mw_tensor *out, const mw_tensor *a, const mw_tensor *b, mw_binop op);
int mw_binary_(mw_tensor *a, const mw_tensor *b, mw_binop op);
int mw_binary_scalar(mw_tensor *out, const mw_tensor *a, double s, mw_binop op, int scalar_first);
int mw_unary(mw_tensor *out, const mw_tensor *a, mw_unop op);
int mw_unary_(mw_tensor *a, mw_unop op);
int mw_clamp(mw_tensor *out, const mw_tensor *a, double lo, double hi); /* NAN = no bound */
int mw_where(mw_tensor *out, const mw_tensor *cond, const mw_tensor *a, const mw_tensor *b);

/* ---------------------------------------------------------------- reductions
 * dims: a bit mask over a's dims (bit d set = reduce dim d); 0 means all dims.
 * keepdim keeps reduced dims with size 1. */
typedef enum {
    MW_SUM, MW_MEAN, MW_PROD, MW_AMAX, MW_AMIN, MW_NORM2, MW_LOGSUMEXP, MW_VAR, MW_STD
} mw_redop;
int mw_reduce(mw_tensor *out, const mw_tensor *a, mw_redop op, uint32_t dims, int keepdim,
              int unbiased /* for VAR, STD */);
/* values and indices (i64) along one dim */
int mw_max_dim(mw_tensor *values, mw_tensor *indices, const mw_tensor *a, int dim, int keepdim);
int mw_min_dim(mw_tensor *values, mw_tensor *indices, const mw_tensor *a, int dim, int keepdim);
int mw_argmax(mw_tensor *out, const mw_tensor *a, int dim, int keepdim); /* dim = INT32_MIN: flat */
int mw_argmin(mw_tensor *out, const mw_tensor *a, int dim, int keepdim);
int mw_softmax(mw_tensor *out, const mw_tensor *a, int dim);     /* rows of -inf give 0, not NaN */
int mw_log_softmax(mw_tensor *out, const mw_tensor *a, int dim);
int mw_cumsum(mw_tensor *out, const mw_tensor *a, int dim);
int mw_topk(mw_tensor *values, mw_tensor *indices, const mw_tensor *a, int64_t k, int dim,
            int largest, int sorted);
int mw_sort(mw_tensor *values, mw_tensor *indices, const mw_tensor *a, int dim, int descending);

/* ---------------------------------------------------------------- linear algebra (f32) */
/* torch.matmul semantics: 1-D operands promoted and demoted, batch dims broadcast. Routed to
 * cblas_sgemm without copies whenever each operand's last two dims have a unit stride on one
 * side (transposes become CblasTrans). */
int mw_matmul(mw_tensor *out, const mw_tensor *a, const mw_tensor *b);
int mw_outer(mw_tensor *out, const mw_tensor *a, const mw_tensor *b);
/* einops-style named axes: "seqQ nhead dhead, seqK nhead dhead -> nhead seqQ seqK" */
int mw_einsum(mw_tensor *out, const char *spec, int n, const mw_tensor *const *ts);
/* reduced SVD of the last two dims (batched): U [.., m, k], S [.., k], Vh [.., k, n] */
int mw_svd(mw_tensor *U, mw_tensor *S, mw_tensor *Vh, const mw_tensor *a);
/* eigenvalues of square matrices (batched): real and imaginary parts [.., n] */
int mw_eigvals(mw_tensor *re, mw_tensor *im, const mw_tensor *a);

/* ---------------------------------------------------------------- printing
 * PyTorch-like text: "tensor([[1., 2.],\n        [3., 4.]])" plus ", dtype=torch.int64" for
 * non-float and ", shape=[2,3]" for ndim >= 1; abbreviated with "..." past 1000 elements
 * (3 items at each edge). Returns a malloc'd string (NULL + error on failure). */
char *mw_tensor_format(const mw_tensor *a);

#endif
