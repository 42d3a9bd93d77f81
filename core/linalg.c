/* linalg.c - matmul (torch.matmul semantics on cblas_sgemm), outer, einsum with named axes,
 * batched SVD (sgesdd) and eigenvalues (sgeev). float32 only.
 *
 * matmul never copies an operand whose matrix dims [rows, cols] have a unit stride on one side:
 * a row-major matrix (cols stride 1) is passed as CblasNoTrans with lda = rows stride, a
 * column-major one (a transposed view, rows stride 1) as CblasTrans with lda = cols stride. Batch
 * dims broadcast by giving each sgemm call its own pointers; when the right operand has no batch
 * (x @ W, the common case in a transformer) and the left one's batch dims are contiguous over its
 * rows, all batches go to one sgemm call with rows = batch * m.
 */
#include "mw_tensor.h"

#include <cblas.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SHAPE_BUF (8 * MW_MAXDIM * 21)

/* ================================================================ matmul */

/* How sgemm can read a [rows, cols] matrix with strides (srow, scol), if at all. */
typedef struct {
    CBLAS_TRANSPOSE trans;
    int64_t ld;
} gemm_view;

static int gemm_layout(int64_t rows, int64_t cols, int64_t srow, int64_t scol, gemm_view *g)
{
    int64_t r1 = rows > 1 ? rows : 1, c1 = cols > 1 ? cols : 1;
    /* a size-1 dim's stride is never used, so any value works for it */
    if ((cols == 1 || scol == 1) && (rows == 1 || srow >= c1)) {
        g->trans = CblasNoTrans;
        g->ld = rows == 1 ? c1 : srow;
        return g->ld <= INT_MAX;
    }
    if ((rows == 1 || srow == 1) && (cols == 1 || scol >= r1)) {
        g->trans = CblasTrans;
        g->ld = cols == 1 ? r1 : scol;
        return g->ld <= INT_MAX;
    }
    return 0;
}

/* an operand seen as [batch..., rows, cols] (1-D promoted); only the header, no reference */
typedef struct {
    int nb;                    /* batch dims */
    int64_t bshape[MW_MAXDIM], bstride[MW_MAXDIM];
    int64_t rows, cols, srow, scol;
} matview;

/* 1-D a is [1, k] on the left (is_left) and [k, 1] on the right */
static void matview_init(matview *v, const mw_tensor *t, int is_left)
{
    if (t->ndim == 1) {
        v->nb = 0;
        if (is_left) { v->rows = 1; v->cols = t->shape[0]; v->srow = 0; v->scol = t->stride[0]; }
        else { v->rows = t->shape[0]; v->cols = 1; v->srow = t->stride[0]; v->scol = 0; }
        return;
    }
    v->nb = t->ndim - 2;
    for (int d = 0; d < v->nb; d++) { v->bshape[d] = t->shape[d]; v->bstride[d] = t->stride[d]; }
    v->rows = t->shape[t->ndim - 2];
    v->cols = t->shape[t->ndim - 1];
    v->srow = t->stride[t->ndim - 2];
    v->scol = t->stride[t->ndim - 1];
}

static int matmul_err(const mw_tensor *a, const mw_tensor *b, const char *what)
{
    char sa[SHAPE_BUF], sb[SHAPE_BUF];
    return mw_seterr("matmul: %s @ %s: %s", mw_tensor_shape_str(sa, sizeof sa, a),
                     mw_tensor_shape_str(sb, sizeof sb, b), what);
}

int mw_matmul(mw_tensor *out, const mw_tensor *a, const mw_tensor *b)
{
    memset(out, 0, sizeof *out);
    if (a->dtype != MW_F32 || b->dtype != MW_F32) {
        char msg[64];
        snprintf(msg, sizeof msg, "%s and %s operands, float32 required", mw_dtype_name(a->dtype),
                 mw_dtype_name(b->dtype));
        return matmul_err(a, b, msg);
    }
    if (a->ndim == 0 || b->ndim == 0) return matmul_err(a, b, "both operands need at least 1 dimension");
    matview A, B;
    matview_init(&A, a, 1);
    matview_init(&B, b, 0);
    if (A.cols != B.rows) return matmul_err(a, b, "inner dimensions differ");
    int64_t m = A.rows, k = A.cols, n = B.cols;
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX) return matmul_err(a, b, "dimensions too large for BLAS");

    /* broadcast batch dims, right-aligned */
    int nb = A.nb > B.nb ? A.nb : B.nb;
    int64_t bshape[MW_MAXDIM], sta[MW_MAXDIM], stb[MW_MAXDIM];
    for (int d = 0; d < nb; d++) {
        int ja = d - (nb - A.nb), jb = d - (nb - B.nb);
        int64_t da = ja >= 0 ? A.bshape[ja] : 1, db = jb >= 0 ? B.bshape[jb] : 1;
        if (da != db && da != 1 && db != 1) return matmul_err(a, b, "batch dimensions cannot be broadcast");
        bshape[d] = da == 1 ? db : da;
        sta[d] = (ja < 0 || da == 1) ? 0 : A.bstride[ja];
        stb[d] = (jb < 0 || db == 1) ? 0 : B.bstride[jb];
    }
    int ond = 0;
    int64_t oshape[MW_MAXDIM];
    for (int d = 0; d < nb; d++) oshape[ond++] = bshape[d];
    if (a->ndim > 1) oshape[ond++] = m;
    if (b->ndim > 1) oshape[ond++] = n;
    if (ond > MW_MAXDIM) return matmul_err(a, b, "result has too many dims");
    mw_tensor r;
    if (mw_tensor_empty(&r, MW_F32, ond, oshape)) return -1;
    int64_t nbatch = 1;
    for (int d = 0; d < nb; d++) nbatch *= bshape[d];
    if (nbatch == 0 || m == 0 || n == 0 || k == 0) { /* empty, or a sum over nothing: zeros */
        *out = r;
        return 0;
    }
    float *pc = mw_tensor_data(&r);

    /* m == n == 1: dot products, any strides */
    if (m == 1 && n == 1) {
        int64_t idx[MW_MAXDIM] = {0}, oa = 0, ob = 0;
        const float *pa = mw_tensor_data(a), *pb = mw_tensor_data(b);
        for (int64_t t = 0; t < nbatch; t++) {
            const float *x = pa + oa, *y = pb + ob;
            double s = 0;
            if (A.scol <= INT_MAX && B.srow <= INT_MAX && A.scol > 0 && B.srow > 0)
                s = cblas_sdot((int)k, x, (int)A.scol, y, (int)B.srow);
            else
                for (int64_t i = 0; i < k; i++) s += (double)x[i * A.scol] * y[i * B.srow];
            pc[t] = (float)s;
            for (int d = nb - 1; d >= 0; d--) {
                oa += sta[d]; ob += stb[d];
                if (++idx[d] < bshape[d]) break;
                oa -= sta[d] * bshape[d]; ob -= stb[d] * bshape[d]; idx[d] = 0;
            }
        }
        *out = r;
        return 0;
    }

    /* operands that sgemm cannot read in place are copied to contiguous memory */
    mw_tensor ca = {0}, cb = {0};
    const mw_tensor *ua = a, *ub = b;
    gemm_view ga, gb;
    if (!gemm_layout(A.rows, A.cols, A.srow, A.scol, &ga)) {
        if (mw_tensor_contiguous(&ca, a)) { mw_tensor_release(&r); return -1; }
        ua = &ca;
        matview_init(&A, ua, 1);
        gemm_layout(A.rows, A.cols, A.srow, A.scol, &ga);
        for (int d = 0; d < nb; d++) {
            int ja = d - (nb - A.nb);
            sta[d] = (ja < 0 || A.bshape[ja] == 1) ? 0 : A.bstride[ja];
        }
    }
    if (!gemm_layout(B.rows, B.cols, B.srow, B.scol, &gb)) {
        if (mw_tensor_contiguous(&cb, b)) { mw_tensor_release(&r); mw_tensor_release(&ca); return -1; }
        ub = &cb;
        matview_init(&B, ub, 0);
        gemm_layout(B.rows, B.cols, B.srow, B.scol, &gb);
        for (int d = 0; d < nb; d++) {
            int jb = d - (nb - B.nb);
            stb[d] = (jb < 0 || B.bshape[jb] == 1) ? 0 : B.bstride[jb];
        }
    }
    const float *pa = mw_tensor_data(ua), *pb = mw_tensor_data(ub);

    /* one call when B is shared by every batch and A's batches stack up as more rows */
    int fold = nb > 0 && ga.trans == CblasNoTrans;
    int64_t expect = m * ga.ld;
    for (int d = nb - 1; fold && d >= 0; d--) {
        if (stb[d] != 0 || (bshape[d] > 1 && sta[d] != expect)) fold = 0;
        expect *= bshape[d];
    }
    if (fold && nbatch * m <= INT_MAX) {
        cblas_sgemm(CblasRowMajor, ga.trans, gb.trans, (int)(nbatch * m), (int)n, (int)k, 1.0f,
                    pa, (int)ga.ld, pb, (int)gb.ld, 0.0f, pc, (int)n);
    } else {
        int64_t idx[MW_MAXDIM] = {0}, oa = 0, ob = 0;
        for (int64_t t = 0; t < nbatch; t++) {
            cblas_sgemm(CblasRowMajor, ga.trans, gb.trans, (int)m, (int)n, (int)k, 1.0f, pa + oa,
                        (int)ga.ld, pb + ob, (int)gb.ld, 0.0f, pc + t * m * n, (int)n);
            for (int d = nb - 1; d >= 0; d--) {
                oa += sta[d]; ob += stb[d];
                if (++idx[d] < bshape[d]) break;
                oa -= sta[d] * bshape[d]; ob -= stb[d] * bshape[d]; idx[d] = 0;
            }
        }
    }
    mw_tensor_release(&ca);
    mw_tensor_release(&cb);
    *out = r;
    return 0;
}

int mw_outer(mw_tensor *out, const mw_tensor *a, const mw_tensor *b)
{
    char sa[SHAPE_BUF], sb[SHAPE_BUF];
    memset(out, 0, sizeof *out);
    if (a->ndim != 1 || b->ndim != 1 || a->dtype != MW_F32 || b->dtype != MW_F32)
        return mw_seterr("outer: %s %s and %s %s: expected two 1-D float32 tensors",
                         mw_dtype_name(a->dtype), mw_tensor_shape_str(sa, sizeof sa, a),
                         mw_dtype_name(b->dtype), mw_tensor_shape_str(sb, sizeof sb, b));
    int64_t shape[2] = {a->shape[0], b->shape[0]};
    mw_tensor r;
    if (mw_tensor_empty(&r, MW_F32, 2, shape)) return -1;
    const float *x = mw_tensor_data(a), *y = mw_tensor_data(b);
    float *o = mw_tensor_data(&r);
    /* o [n, m] */
    for (int64_t i = 0; i < shape[0]; i++) {
        float xi = x[i * a->stride[0]];
        for (int64_t j = 0; j < shape[1]; j++) o[i * shape[1] + j] = xi * y[j * b->stride[0]];
    }
    *out = r;
    return 0;
}

/* ================================================================ einsum */

#define EIN_MAXLAB 32
#define EIN_MAXOP 16
#define EIN_NAMELEN 32

typedef struct {
    int nlab;
    char name[EIN_MAXLAB][EIN_NAMELEN];
    int64_t size[EIN_MAXLAB];
} labels;

/* an operand during the contraction: owns one reference; lab[d] names dim d */
typedef struct {
    mw_tensor t;
    int lab[MW_MAXDIM];
} eop;

static int lab_find(labels *L, const char *name, int add)
{
    for (int i = 0; i < L->nlab; i++) if (!strcmp(L->name[i], name)) return i;
    if (!add || L->nlab == EIN_MAXLAB) return -1;
    snprintf(L->name[L->nlab], EIN_NAMELEN, "%s", name);
    L->size[L->nlab] = -1;
    return L->nlab++;
}

/* parses one term (axis names separated by spaces) from s[0..len); returns count or -1 */
static int parse_term(const char *spec, const char *s, size_t len, labels *L, int *lab)
{
    int n = 0;
    size_t i = 0;
    while (i < len) {
        if (s[i] == ' ' || s[i] == '\t') { i++; continue; }
        size_t j = i;
        while (j < len && (s[j] == '_' || (s[j] >= '0' && s[j] <= '9') || (s[j] >= 'a' && s[j] <= 'z') ||
                           (s[j] >= 'A' && s[j] <= 'Z')))
            j++;
        if (j == i) return mw_seterr("einsum: \"%s\": unexpected character '%c'", spec, s[i]);
        if (j - i >= EIN_NAMELEN) return mw_seterr("einsum: \"%s\": axis name too long", spec);
        if (n == MW_MAXDIM) return mw_seterr("einsum: \"%s\": more than %d axes in a term", spec, MW_MAXDIM);
        char name[EIN_NAMELEN];
        memcpy(name, s + i, j - i);
        name[j - i] = 0;
        int id = lab_find(L, name, 1);
        if (id < 0) return mw_seterr("einsum: \"%s\": more than %d distinct axes", spec, EIN_MAXLAB);
        lab[n++] = id;
        i = j;
    }
    return n;
}

static int has_lab(const eop *o, int id)
{
    for (int d = 0; d < o->t.ndim; d++) if (o->lab[d] == id) return 1;
    return 0;
}

/* sums away o's dims whose labels are not in keep */
static int sum_unkept(eop *o, const int *keep)
{
    uint32_t mask = 0;
    for (int d = 0; d < o->t.ndim; d++) if (!keep[o->lab[d]]) mask |= 1u << d;
    if (!mask) return 0;
    mw_tensor r;
    if (mw_reduce(&r, &o->t, MW_SUM, mask, 0, 0)) return -1;
    int nd = 0;
    for (int d = 0; d < o->t.ndim; d++) if (!(mask & (1u << d))) o->lab[nd++] = o->lab[d];
    mw_tensor_release(&o->t);
    o->t = r;
    return 0;
}

/* t [d0..] seen as 3-D [prod g0, prod g1, prod g2] where the groups take g[0], g[1], g[2]
 * consecutive dims; a view when strides allow, else over a contiguous copy. */
static int merge3(mw_tensor *out, const mw_tensor *t, const int *g)
{
    mw_tensor c;
    mw_tensor_share(&c, t);
    for (int attempt = 0; attempt < 2; attempt++) {
        mw_tensor v = c;
        v.ndim = 3;
        int d = 0, ok = 1;
        for (int q = 0; q < 3; q++) {
            int64_t size = 1, stride = 1, last = -1;
            for (int e = 0; e < g[q]; e++, d++) {
                if (c.shape[d] == 1) continue;
                if (last >= 0 && c.stride[last] != c.stride[d] * c.shape[d]) ok = 0;
                size *= c.shape[d];
                stride = c.stride[d];
                last = d;
            }
            v.shape[q] = size;
            v.stride[q] = stride;
        }
        if (ok) {
            *out = v; /* takes c's reference */
            return 0;
        }
        mw_tensor cc;
        if (mw_tensor_contiguous(&cc, &c)) { mw_tensor_release(&c); return -1; }
        mw_tensor_release(&c);
        c = cc;
    }
    mw_tensor_release(&c);
    return mw_seterr("einsum: internal error merging dims");
}

/* A, B -> their contraction over shared labels not in keep; result labels: batch, A-only, B-only */
static int contract(eop *res, eop *A, eop *B, const int *keep, const labels *L, const char *spec)
{
    int bt[MW_MAXDIM], nbt = 0, kk[MW_MAXDIM], nk = 0, mm[MW_MAXDIM], nm = 0, nn[MW_MAXDIM], nnn = 0;
    /* an axis in one operand only that nothing needs is summed before the product */
    int keepa[EIN_MAXLAB], keepb[EIN_MAXLAB];
    for (int id = 0; id < L->nlab; id++) {
        keepa[id] = keep[id] || has_lab(B, id);
        keepb[id] = keep[id] || has_lab(A, id);
    }
    if (sum_unkept(A, keepa) || sum_unkept(B, keepb)) return -1;
    /* groups in A's dim order (N in B's) so that common layouts merge without copies */
    for (int d = 0; d < A->t.ndim; d++) {
        int id = A->lab[d];
        if (has_lab(B, id)) { if (keep[id]) bt[nbt++] = id; else kk[nk++] = id; }
        else mm[nm++] = id;
    }
    for (int d = 0; d < B->t.ndim; d++) if (!has_lab(A, B->lab[d])) nn[nnn++] = B->lab[d];
    if (nbt + nm + nnn > MW_MAXDIM)
        return mw_seterr("einsum: \"%s\": an intermediate result has more than %d dims", spec, MW_MAXDIM);
    int pa[MW_MAXDIM], pb[MW_MAXDIM], q = 0;
    for (int i = 0; i < nbt; i++) for (int d = 0; d < A->t.ndim; d++) if (A->lab[d] == bt[i]) pa[q++] = d;
    for (int i = 0; i < nm; i++) for (int d = 0; d < A->t.ndim; d++) if (A->lab[d] == mm[i]) pa[q++] = d;
    for (int i = 0; i < nk; i++) for (int d = 0; d < A->t.ndim; d++) if (A->lab[d] == kk[i]) pa[q++] = d;
    q = 0;
    for (int i = 0; i < nbt; i++) for (int d = 0; d < B->t.ndim; d++) if (B->lab[d] == bt[i]) pb[q++] = d;
    for (int i = 0; i < nk; i++) for (int d = 0; d < B->t.ndim; d++) if (B->lab[d] == kk[i]) pb[q++] = d;
    for (int i = 0; i < nnn; i++) for (int d = 0; d < B->t.ndim; d++) if (B->lab[d] == nn[i]) pb[q++] = d;
    mw_tensor ap, bp, a3, b3, c3;
    int ga[3] = {nbt, nm, nk}, gb[3] = {nbt, nk, nnn};
    if (mw_tensor_permute(&ap, &A->t, pa)) return -1;
    int rc = merge3(&a3, &ap, ga);
    mw_tensor_release(&ap);
    if (rc) return -1;
    if (mw_tensor_permute(&bp, &B->t, pb)) { mw_tensor_release(&a3); return -1; }
    rc = merge3(&b3, &bp, gb);
    mw_tensor_release(&bp);
    if (rc) { mw_tensor_release(&a3); return -1; }
    rc = mw_matmul(&c3, &a3, &b3);
    mw_tensor_release(&a3);
    mw_tensor_release(&b3);
    if (rc) return -1;
    /* c3 [B, M, N] is contiguous: unfold it to [batch..., m..., n...] */
    mw_tensor r = c3;
    int nd = 0;
    for (int i = 0; i < nbt; i++) { r.shape[nd] = L->size[bt[i]]; res->lab[nd++] = bt[i]; }
    for (int i = 0; i < nm; i++) { r.shape[nd] = L->size[mm[i]]; res->lab[nd++] = mm[i]; }
    for (int i = 0; i < nnn; i++) { r.shape[nd] = L->size[nn[i]]; res->lab[nd++] = nn[i]; }
    r.ndim = nd;
    int64_t s = 1;
    for (int d = nd - 1; d >= 0; d--) { r.stride[d] = s; s *= r.shape[d]; }
    res->t = r;
    return 0;
}

int mw_einsum(mw_tensor *out, const char *spec, int n, const mw_tensor *const *ts)
{
    memset(out, 0, sizeof *out);
    labels L = {0};
    int tl[EIN_MAXOP][MW_MAXDIM], tn[EIN_MAXOP], ol[MW_MAXDIM], on;
    const char *arrow = strstr(spec, "->");
    if (!arrow) return mw_seterr("einsum: \"%s\": missing \"->\"", spec);
    if (strstr(arrow + 2, "->")) return mw_seterr("einsum: \"%s\": more than one \"->\"", spec);
    if (n < 1 || n > EIN_MAXOP) return mw_seterr("einsum: \"%s\": %d operands (1 to %d supported)", spec, n, EIN_MAXOP);
    /* input terms, comma separated */
    int nt = 0;
    const char *s = spec;
    for (;;) {
        const char *comma = memchr(s, ',', (size_t)(arrow - s));
        const char *end = comma ? comma : arrow;
        if (nt == n) return mw_seterr("einsum: \"%s\": more terms than the %d operands given", spec, n);
        if ((tn[nt] = parse_term(spec, s, (size_t)(end - s), &L, tl[nt])) < 0) return -1;
        nt++;
        if (!comma) break;
        s = comma + 1;
    }
    if (nt != n) return mw_seterr("einsum: \"%s\": %d terms for %d operands", spec, nt, n);
    int nin = L.nlab;
    if ((on = parse_term(spec, arrow + 2, strlen(arrow + 2), &L, ol)) < 0) return -1;
    for (int i = 0; i < on; i++) {
        if (ol[i] >= nin) return mw_seterr("einsum: \"%s\": output axis '%s' is in no input", spec, L.name[ol[i]]);
        for (int j = 0; j < i; j++)
            if (ol[j] == ol[i]) return mw_seterr("einsum: \"%s\": output axis '%s' repeated", spec, L.name[ol[i]]);
    }
    /* operands against their terms */
    for (int t = 0; t < n; t++) {
        char b[SHAPE_BUF];
        if (ts[t]->dtype != MW_F32)
            return mw_seterr("einsum: \"%s\": operand %d is %s, float32 required", spec, t, mw_dtype_name(ts[t]->dtype));
        if (ts[t]->ndim != tn[t])
            return mw_seterr("einsum: \"%s\": operand %d has shape %s but its term names %d axes", spec, t,
                             mw_tensor_shape_str(b, sizeof b, ts[t]), tn[t]);
        for (int d = 0; d < tn[t]; d++) {
            int id = tl[t][d];
            for (int e = 0; e < d; e++)
                if (tl[t][e] == id)
                    return mw_seterr("einsum: \"%s\": axis '%s' repeated in operand %d (diagonals are not supported)",
                                     spec, L.name[id], t);
            if (L.size[id] >= 0 && L.size[id] != ts[t]->shape[d])
                return mw_seterr("einsum: \"%s\": axis '%s' has size %lld in one operand and %lld in operand %d (shape %s)",
                                 spec, L.name[id], (long long)L.size[id], (long long)ts[t]->shape[d], t,
                                 mw_tensor_shape_str(b, sizeof b, ts[t]));
            L.size[id] = ts[t]->shape[d];
        }
    }
    /* left to right pairwise contraction; keep[id]: needed by the output or a later operand */
    eop cur;
    mw_tensor_share(&cur.t, ts[0]);
    memcpy(cur.lab, tl[0], sizeof cur.lab);
    int keep[EIN_MAXLAB];
    for (int t = 1; t <= n; t++) {
        memset(keep, 0, sizeof keep);
        for (int i = 0; i < on; i++) keep[ol[i]] = 1;
        for (int u = t + 1; u < n; u++) for (int d = 0; d < tn[u]; d++) keep[tl[u][d]] = 1;
        if (t == n) { /* last: sum what the output does not name */
            if (sum_unkept(&cur, keep)) { mw_tensor_release(&cur.t); return -1; }
            break;
        }
        /* what operand t needs of cur must survive until the contraction */
        int keepc[EIN_MAXLAB];
        memcpy(keepc, keep, sizeof keepc);
        for (int d = 0; d < tn[t]; d++) keepc[tl[t][d]] = 1;
        if (sum_unkept(&cur, keepc)) { mw_tensor_release(&cur.t); return -1; }
        eop B, res;
        mw_tensor_share(&B.t, ts[t]);
        memcpy(B.lab, tl[t], sizeof B.lab);
        int rc = contract(&res, &cur, &B, keep, &L, spec);
        mw_tensor_release(&cur.t);
        mw_tensor_release(&B.t);
        if (rc) return -1;
        cur = res;
    }
    /* permute cur's dims into the output order */
    int perm[MW_MAXDIM];
    for (int i = 0; i < on; i++)
        for (int d = 0; d < cur.t.ndim; d++) if (cur.lab[d] == ol[i]) perm[i] = d;
    int rc = mw_tensor_permute(out, &cur.t, perm);
    mw_tensor_release(&cur.t);
    return rc;
}

/* ================================================================ SVD, eigenvalues */

/* the matrices of a [..., m, n]: copies matrix t into buf [m, n] row-major; returns 0 when an
 * element is inf or NaN. LAPACK is not defined on them: sgeev on a matrix of inf wrote past its
 * outputs (heap corruption, found by fuzz-api), and torch.linalg refuses them too. */
static int copy_matrix(float *buf, const mw_tensor *a, int64_t off, int64_t m, int64_t n)
{
    const float *p = (const float *)mw_tensor_data(a) + off;
    int64_t sr = a->stride[a->ndim - 2], sc = a->stride[a->ndim - 1];
    int finite = 1;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float v = p[i * sr + j * sc];
            finite &= isfinite(v) != 0;
            buf[i * n + j] = v;
        }
    return finite;
}

/* element offset of batch t (row-major over a's leading dims) */
static int64_t batch_offset(const mw_tensor *a, int64_t t)
{
    int64_t off = 0;
    for (int d = a->ndim - 3; d >= 0; d--) {
        off += (t % a->shape[d]) * a->stride[d];
        t /= a->shape[d];
    }
    return off;
}

static int check_matrices(const char *op, const mw_tensor *a)
{
    char b[SHAPE_BUF];
    if (a->dtype != MW_F32)
        return mw_seterr("%s: %s tensor %s, float32 required", op, mw_dtype_name(a->dtype),
                         mw_tensor_shape_str(b, sizeof b, a));
    if (a->ndim < 2)
        return mw_seterr("%s: %s: expected a matrix or a batch of matrices", op,
                         mw_tensor_shape_str(b, sizeof b, a));
    if (a->shape[a->ndim - 1] > INT_MAX || a->shape[a->ndim - 2] > INT_MAX)
        return mw_seterr("%s: %s: matrix too large", op, mw_tensor_shape_str(b, sizeof b, a));
    return 0;
}

/* Bytes sgesdd ('S') allocates for an [m, n] matrix: its workspace as a query reports it, the
 * integer workspace (8 min(m, n)) and, row-major, the transposed copies LAPACKE makes. */
static double svd_work_bytes(int64_t m, int64_t n)
{
    int64_t k = m < n ? m : n;
    float q = 0, dummy = 0;
    lapack_int iw = 0;
    double lwork = 0;
    if (LAPACKE_sgesdd_work(LAPACK_COL_MAJOR, 'S', (lapack_int)m, (lapack_int)n, &dummy, (lapack_int)m,
                            &dummy, &dummy, (lapack_int)m, &dummy, (lapack_int)k, &q, -1, &iw) == 0)
        lwork = q;
    return (lwork + 8.0 * (double)k + (double)(m * n + m * k + k * n)) * 4.0;
}

int mw_svd(mw_tensor *U, mw_tensor *S, mw_tensor *Vh, const mw_tensor *a)
{
    memset(U, 0, sizeof *U);
    memset(S, 0, sizeof *S);
    memset(Vh, 0, sizeof *Vh);
    if (check_matrices("svd", a)) return -1;
    int nd = a->ndim;
    int64_t m = a->shape[nd - 2], n = a->shape[nd - 1], k = m < n ? m : n;
    int64_t shape[MW_MAXDIM], nbatch = 1;
    for (int d = 0; d < nd - 2; d++) { shape[d] = a->shape[d]; nbatch *= a->shape[d]; }
    mw_tensor u = {0}, s = {0}, vh = {0};
    shape[nd - 2] = m; shape[nd - 1] = k;
    if (mw_tensor_empty(&u, MW_F32, nd, shape)) return -1;
    shape[nd - 2] = k;
    if (mw_tensor_empty(&s, MW_F32, nd - 1, shape)) goto fail;
    shape[nd - 2] = k; shape[nd - 1] = n;
    if (mw_tensor_empty(&vh, MW_F32, nd, shape)) goto fail;
    if (k > 0 && nbatch > 0) {
        float *buf = malloc((size_t)(m * n) * sizeof *buf);
        if (!buf) { mw_seterr("svd: out of memory"); goto fail; }
        float *pu = mw_tensor_data(&u), *ps = mw_tensor_data(&s), *pv = mw_tensor_data(&vh);
        for (int64_t t = 0; t < nbatch; t++) {
            if (!copy_matrix(buf, a, batch_offset(a, t), m, n)) {
                char b[SHAPE_BUF];
                free(buf);
                mw_seterr("svd: %s: the input holds inf or NaN", mw_tensor_shape_str(b, sizeof b, a));
                goto fail;
            }
            /* row-major: A [m, n] lda n, U [m, k] ldu k, Vt [k, n] ldvt n */
            lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m, (lapack_int)n, buf,
                                             (lapack_int)n, ps + t * k, pu + t * m * k, (lapack_int)k,
                                             pv + t * k * n, (lapack_int)n);
            if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR) {
                char b[SHAPE_BUF];
                free(buf);
                mw_seterr("svd: %s: out of memory: LAPACK's sgesdd needs about %.0f MB of workspace "
                          "beyond the %.0f MB of the input copy and results",
                          mw_tensor_shape_str(b, sizeof b, a), svd_work_bytes(m, n) / 1e6,
                          (double)(m * n + m * k + k + k * n) * 4 / 1e6);
                goto fail;
            }
            if (info != 0) {
                char b[SHAPE_BUF];
                free(buf);
                mw_seterr("svd: %s: LAPACK sgesdd failed (info %d%s)", mw_tensor_shape_str(b, sizeof b, a),
                          (int)info, info > 0 ? ", did not converge" : "");
                goto fail;
            }
        }
        free(buf);
    }
    *U = u;
    *S = s;
    *Vh = vh;
    return 0;
fail:
    mw_tensor_release(&u);
    mw_tensor_release(&s);
    mw_tensor_release(&vh);
    return -1;
}

int mw_eigvals(mw_tensor *re, mw_tensor *im, const mw_tensor *a)
{
    memset(re, 0, sizeof *re);
    memset(im, 0, sizeof *im);
    if (check_matrices("eigvals", a)) return -1;
    int nd = a->ndim;
    int64_t n = a->shape[nd - 1], shape[MW_MAXDIM], nbatch = 1;
    if (a->shape[nd - 2] != n) {
        char b[SHAPE_BUF];
        return mw_seterr("eigvals: %s: expected square matrices", mw_tensor_shape_str(b, sizeof b, a));
    }
    for (int d = 0; d < nd - 2; d++) { shape[d] = a->shape[d]; nbatch *= a->shape[d]; }
    shape[nd - 2] = n;
    mw_tensor wr = {0}, wi = {0};
    if (mw_tensor_empty(&wr, MW_F32, nd - 1, shape)) return -1;
    if (mw_tensor_empty(&wi, MW_F32, nd - 1, shape)) { mw_tensor_release(&wr); return -1; }
    if (n > 0 && nbatch > 0) {
        float *buf = malloc((size_t)(n * n) * sizeof *buf);
        if (!buf) { mw_tensor_release(&wr); mw_tensor_release(&wi); return mw_seterr("eigvals: out of memory"); }
        float *pr = mw_tensor_data(&wr), *pi = mw_tensor_data(&wi);
        for (int64_t t = 0; t < nbatch; t++) {
            if (!copy_matrix(buf, a, batch_offset(a, t), n, n)) {
                char b[SHAPE_BUF];
                free(buf);
                mw_tensor_release(&wr);
                mw_tensor_release(&wi);
                return mw_seterr("eigvals: %s: the input holds inf or NaN", mw_tensor_shape_str(b, sizeof b, a));
            }
            lapack_int info = LAPACKE_sgeev(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)n, buf, (lapack_int)n,
                                            pr + t * n, pi + t * n, NULL, 1, NULL, 1);
            if (info != 0) {
                char b[SHAPE_BUF];
                free(buf);
                mw_tensor_release(&wr);
                mw_tensor_release(&wi);
                return mw_seterr("eigvals: %s: LAPACK sgeev failed (info %d%s)",
                                 mw_tensor_shape_str(b, sizeof b, a), (int)info,
                                 info > 0 ? ", did not converge" : "");
            }
        }
        free(buf);
    }
    *re = wr;
    *im = wi;
    return 0;
}
