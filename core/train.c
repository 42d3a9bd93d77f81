/* train.c - forward with saved activations, backward, AdamW, checkpoints and token datasets for
 * miwb's transformers. See train.h for the layout and the dimension legend
 * (B batch, T positions, N = B*T rows, d, H, dh, HD = H*dh, m, L, V, C). */
#include "train.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mw_tensor.h"

static const char *const g_pnames[MW_TP_COUNT] = {
#define MW_X(name) #name,
    MW_TPARAMS(MW_X)
#undef MW_X
};

/* activations of one block, each [N, ...] row-major (NULL when the config has no such stage) */
typedef struct {
    float *x;            /* [N,d] resid_pre */
    float *xn1;          /* [N,d] ln1 output (normed) */
    float *mean1, *rstd1;/* [N] */
    float *qk;           /* [N,d] input of Q and K: xn1 + W_pos (shortformer only) */
    float *q, *k, *v;    /* [N,HD] */
    float *att;          /* [B,H,T,T] pattern, zeros above the diagonal */
    float *z;            /* [N,HD] */
    float *mid;          /* [N,d] resid_mid (MLP configs) */
    float *xn2, *mean2, *rstd2;
    float *pre, *post;   /* [N,m] */
} layer_acts;

struct mw_trainer {
    mw_train_config cfg;
    int64_t maxB, maxT, B, T;
    size_t nparams;
    mw_train_param p[MW_TP_COUNT];
    float *params, *grads, *m, *v;  /* [nparams] each */
    int64_t step;
    layer_acts *la;                 /* [L] */
    float *xf;                      /* [N,d] final residual (resid_post of the last block) */
    float *xnf, *meanf, *rstdf;     /* ln_final */
    float *logits;                  /* [N,V]; becomes dlogits during backward */
    float *tokloss;                 /* [N] -log p(next) (0 at t = T-1) */
    int32_t *tokens;                /* [N] copy of the input */
    /* backward scratch */
    float *dx, *dx2;                /* [N,d] */
    float *dq, *dk, *dv, *dz;       /* [N,HD] */
    float *dpre;                    /* [N,m] */
    float *datt;                    /* [T,T] */
    int have_acts;
};

static float *P(const mw_trainer *t, int id) { return t->params + t->p[id].offset; }
static float *G(const mw_trainer *t, int id) { return t->grads + t->p[id].offset; }

/* ------------------------------------------------------------------ small kernels */

/* C[M,N] = alpha * op(A) @ op(B) + beta * C, row-major with leading dims */
static void mm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
               const float *Bm, int64_t ldb, float beta, float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, alpha, A, (int)lda, Bm, (int)ldb, beta, C, (int)ldc);
}

/* out [N,n] = in [N,k] @ W [k,n] + b [n] (b may be NULL) */
static void linear(float *out, const float *in, const float *W, const float *b, int64_t N, int64_t k, int64_t n) {
    if (b) {
        for (int64_t i = 0; i < N; i++) memcpy(out + i * n, b, sizeof(float) * (size_t)n);
        mm(0, 0, N, n, k, 1.f, in, k, W, n, 1.f, out, n);
    } else {
        mm(0, 0, N, n, k, 1.f, in, k, W, n, 0.f, out, n);
    }
}

/* backward of linear: dW += in^T @ dout, db += colsum(dout), din (=, or += when acc) dout @ W^T */
static void linear_back(float *din, int acc, float *dW, float *db, const float *dout, const float *in,
                        const float *W, int64_t N, int64_t k, int64_t n) {
    mm(1, 0, k, n, N, 1.f, in, k, dout, n, 1.f, dW, n);
    if (db)
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < n; j++) db[j] += dout[i * n + j];
    if (din) mm(0, 1, N, k, n, 1.f, dout, n, W, n, acc ? 1.f : 0.f, din, k);
}

/* LayerNorm over rows of [N,d]: y = (x - mean) / sqrt(var + eps) * w + b (w, b NULL for LNPre) */
static void ln_fwd(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b,
                   int64_t N, int64_t d, double eps) {
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * d;
        double s = 0, s2 = 0;
        for (int64_t j = 0; j < d; j++) s += xi[j];
        double mu = s / (double)d;
        for (int64_t j = 0; j < d; j++) { double c = xi[j] - mu; s2 += c * c; }
        double r = 1.0 / sqrt(s2 / (double)d + eps);
        mean[i] = (float)mu; rstd[i] = (float)r;
        for (int64_t j = 0; j < d; j++) {
            float h = (float)((xi[j] - mu) * r);
            y[i * d + j] = w ? h * w[j] + b[j] : h;
        }
    }
}

/* dx += LayerNorm backward of dy; dw, db accumulate (NULL for LNPre) */
static void ln_back(float *dx, float *dw, float *db, const float *dy, const float *x, const float *mean,
                    const float *rstd, const float *w, int64_t N, int64_t d) {
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * d, *dyi = dy + i * d;
        float mu = mean[i], r = rstd[i];
        double sg = 0, sgh = 0;
        for (int64_t j = 0; j < d; j++) {
            float h = (xi[j] - mu) * r;
            float g = w ? dyi[j] * w[j] : dyi[j];
            sg += g; sgh += g * h;
            if (dw) { dw[j] += dyi[j] * h; db[j] += dyi[j]; }
        }
        float mg = (float)(sg / (double)d), mgh = (float)(sgh / (double)d);
        for (int64_t j = 0; j < d; j++) {
            float h = (xi[j] - mu) * r;
            float g = w ? dyi[j] * w[j] : dyi[j];
            dx[i * d + j] += r * (g - mg - h * mgh);
        }
    }
}

#define GELU_C 0.7978845608028654 /* sqrt(2/pi) */
static float gelu_new(float x) {
    return 0.5f * x * (1.f + tanhf((float)GELU_C * (x + 0.044715f * x * x * x)));
}
static float gelu_new_grad(float x) {
    float u = (float)GELU_C * (x + 0.044715f * x * x * x);
    float th = tanhf(u);
    return 0.5f * (1.f + th) + 0.5f * x * (1.f - th * th) * (float)GELU_C * (1.f + 3.f * 0.044715f * x * x);
}

/* ------------------------------------------------------------------ generator (init, batches) */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
/* xoshiro256** seeded through splitmix64, normals by Box-Muller using both outputs: the algorithm
 * mw_tensor.h documents for mw_rng */
typedef struct { uint64_t s[4]; int has; double spare; } rng_t;
static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static void rng_seed(rng_t *g, uint64_t seed) {
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++) g->s[i] = splitmix64(&sm);
    g->has = 0;
}
static uint64_t rng_next(rng_t *g) {
    uint64_t *s = g->s, r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return r;
}
static double rng_uniform(rng_t *g) { return (double)(rng_next(g) >> 40) * (1.0 / 16777216.0); }
static double rng_normal(rng_t *g) {
    if (g->has) { g->has = 0; return g->spare; }
    double u1 = 1.0 - rng_uniform(g), u2 = rng_uniform(g);
    double r = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
    g->spare = r * sin(th); g->has = 1;
    return r * cos(th);
}

/* ------------------------------------------------------------------ construction */

static int cfg_check(const mw_train_config *c) {
    if (c->d_model <= 0 || c->d_head <= 0 || c->n_heads <= 0 || c->n_layers <= 0 || c->n_ctx <= 0 ||
        c->d_vocab <= 0)
        return mw_seterr("train: config: d_model %lld, d_head %lld, n_heads %lld, n_layers %lld, n_ctx %lld "
                         "and d_vocab %lld must all be positive", (long long)c->d_model, (long long)c->d_head,
                         (long long)c->n_heads, (long long)c->n_layers, (long long)c->n_ctx, (long long)c->d_vocab);
    if (!c->attn_only && c->d_mlp <= 0)
        return mw_seterr("train: config: d_mlp %lld must be positive unless attn_only", (long long)c->d_mlp);
    if (c->norm < MW_TNORM_NONE || c->norm > MW_TNORM_LNPRE)
        return mw_seterr("train: config: normalization_type %d unknown", (int)c->norm);
    return 0;
}

static float *xalloc(size_t n) { return n ? calloc(n, sizeof(float)) : NULL; }

mw_trainer *mw_trainer_new(const mw_train_config *cfg, int64_t maxB, int64_t maxT) {
    if (cfg_check(cfg)) return NULL;
    if (maxB <= 0 || maxT <= 1 || maxT > cfg->n_ctx) {
        mw_seterr("train: batch [%lld,%lld]: need B >= 1 and 2 <= T <= n_ctx %lld", (long long)maxB,
                  (long long)maxT, (long long)cfg->n_ctx);
        return NULL;
    }
    mw_trainer *t = calloc(1, sizeof *t);
    if (!t) { mw_seterr("train: out of memory"); return NULL; }
    t->cfg = *cfg;
    mw_train_config *c = &t->cfg;
    if (c->eps <= 0) c->eps = 1e-5;
    if (c->init_range <= 0) c->init_range = 0.8 / sqrt((double)c->d_model);
    int64_t d = c->d_model, L = c->n_layers, HD = c->n_heads * c->d_head, m = c->attn_only ? 0 : c->d_mlp;
    int64_t V = c->d_vocab, C = c->n_ctx;
    int ln = c->norm == MW_TNORM_LN, nrm = c->norm != MW_TNORM_NONE;
    int64_t lnd = (ln ? d : 0);
    /* shapes per id: {ndim, s0, s1, s2, decay} */
    int64_t sh[MW_TP_COUNT][5] = {
        [MW_TP_W_E] = {2, V, d, 0, 1},       [MW_TP_W_pos] = {2, C, d, 0, 1},
        [MW_TP_ln1_w] = {2, L, lnd, 0, 0},   [MW_TP_ln1_b] = {2, L, lnd, 0, 0},
        [MW_TP_W_Q] = {3, L, d, HD, 1},      [MW_TP_W_K] = {3, L, d, HD, 1}, [MW_TP_W_V] = {3, L, d, HD, 1},
        [MW_TP_b_Q] = {2, L, HD, 0, 0},      [MW_TP_b_K] = {2, L, HD, 0, 0}, [MW_TP_b_V] = {2, L, HD, 0, 0},
        [MW_TP_W_O] = {3, L, HD, d, 1},      [MW_TP_b_O] = {2, L, d, 0, 0},
        [MW_TP_ln2_w] = {2, L, m ? lnd : 0, 0, 0}, [MW_TP_ln2_b] = {2, L, m ? lnd : 0, 0, 0},
        [MW_TP_W_in] = {3, L, d, m, 1},      [MW_TP_b_in] = {2, L, m, 0, 0},
        [MW_TP_W_out] = {3, L, m, d, 1},     [MW_TP_b_out] = {2, L, m ? d : 0, 0, 0},
        [MW_TP_ln_final_w] = {1, lnd, 0, 0, 0}, [MW_TP_ln_final_b] = {1, lnd, 0, 0, 0},
        [MW_TP_W_U] = {2, d, V, 0, 1},       [MW_TP_b_U] = {1, V, 0, 0, 0},
    };
    size_t off = 0;
    for (int i = 0; i < MW_TP_COUNT; i++) {
        mw_train_param *p = &t->p[i];
        p->name = g_pnames[i];
        p->ndim = (int)sh[i][0];
        size_t n = 1;
        for (int k = 0; k < p->ndim; k++) { p->shape[k] = sh[i][1 + k]; n *= (size_t)p->shape[k]; }
        p->numel = n;
        p->offset = off;
        p->decay = (int)sh[i][4];
        off += n;
    }
    t->nparams = off;
    t->params = xalloc(off); t->grads = xalloc(off); t->m = xalloc(off); t->v = xalloc(off);
    if (!t->params || !t->grads || !t->m || !t->v) goto oom;
    /* init: W_* normal in buffer order, LayerNorm weights 1, the rest 0 */
    rng_t g;
    rng_seed(&g, cfg->seed);
    for (int i = 0; i < MW_TP_COUNT; i++) {
        mw_train_param *p = &t->p[i];
        float *x = t->params + p->offset;
        if (p->decay) for (size_t j = 0; j < p->numel; j++) x[j] = (float)(rng_normal(&g) * c->init_range);
        else if (i == MW_TP_ln1_w || i == MW_TP_ln2_w || i == MW_TP_ln_final_w)
            for (size_t j = 0; j < p->numel; j++) x[j] = 1.f;
    }
    /* activations */
    int64_t N = maxB * maxT, H = c->n_heads;
    t->maxB = maxB; t->maxT = maxT;
    t->la = calloc((size_t)L, sizeof *t->la);
    if (!t->la) goto oom;
    for (int64_t l = 0; l < L; l++) {
        layer_acts *a = &t->la[l];
        a->x = xalloc((size_t)(N * d));
        if (nrm) { a->xn1 = xalloc((size_t)(N * d)); a->mean1 = xalloc((size_t)N); a->rstd1 = xalloc((size_t)N); }
        if (c->shortformer) a->qk = xalloc((size_t)(N * d));
        a->q = xalloc((size_t)(N * HD)); a->k = xalloc((size_t)(N * HD)); a->v = xalloc((size_t)(N * HD));
        a->att = xalloc((size_t)(maxB * H * maxT * maxT));
        a->z = xalloc((size_t)(N * HD));
        if (!a->x || (nrm && (!a->xn1 || !a->mean1 || !a->rstd1)) || (c->shortformer && !a->qk) || !a->q ||
            !a->k || !a->v || !a->att || !a->z) goto oom;
        if (m) {
            a->mid = xalloc((size_t)(N * d));
            if (nrm) { a->xn2 = xalloc((size_t)(N * d)); a->mean2 = xalloc((size_t)N); a->rstd2 = xalloc((size_t)N); }
            a->pre = xalloc((size_t)(N * m)); a->post = xalloc((size_t)(N * m));
            if (!a->mid || (nrm && (!a->xn2 || !a->mean2 || !a->rstd2)) || !a->pre || !a->post) goto oom;
        }
    }
    t->xf = xalloc((size_t)(N * d));
    if (nrm) { t->xnf = xalloc((size_t)(N * d)); t->meanf = xalloc((size_t)N); t->rstdf = xalloc((size_t)N); }
    t->logits = xalloc((size_t)(N * V));
    t->tokloss = xalloc((size_t)N);
    t->tokens = calloc((size_t)N, sizeof *t->tokens);
    t->dx = xalloc((size_t)(N * d)); t->dx2 = xalloc((size_t)(N * d));
    t->dq = xalloc((size_t)(N * HD)); t->dk = xalloc((size_t)(N * HD));
    t->dv = xalloc((size_t)(N * HD)); t->dz = xalloc((size_t)(N * HD));
    if (m) { t->dpre = xalloc((size_t)(N * m)); if (!t->dpre) goto oom; }
    t->datt = xalloc((size_t)(maxT * maxT));
    if (!t->xf || (nrm && (!t->xnf || !t->meanf || !t->rstdf)) || !t->logits || !t->tokloss || !t->tokens ||
        !t->dx || !t->dx2 || !t->dq || !t->dk || !t->dv || !t->dz || !t->datt) goto oom;
    return t;
oom:
    mw_trainer_free(t);
    mw_seterr("train: out of memory (model of %zu parameters, batch [%lld,%lld])", off, (long long)maxB,
              (long long)maxT);
    return NULL;
}

void mw_trainer_free(mw_trainer *t) {
    if (!t) return;
    if (t->la)
        for (int64_t l = 0; l < t->cfg.n_layers; l++) {
            layer_acts *a = &t->la[l];
            free(a->x); free(a->xn1); free(a->mean1); free(a->rstd1); free(a->qk); free(a->q); free(a->k);
            free(a->v); free(a->att); free(a->z); free(a->mid); free(a->xn2); free(a->mean2); free(a->rstd2);
            free(a->pre); free(a->post);
        }
    free(t->la);
    free(t->xf); free(t->xnf); free(t->meanf); free(t->rstdf); free(t->logits); free(t->tokloss); free(t->tokens);
    free(t->dx); free(t->dx2); free(t->dq); free(t->dk); free(t->dv); free(t->dz); free(t->dpre); free(t->datt);
    free(t->params); free(t->grads); free(t->m); free(t->v);
    free(t);
}

const mw_train_config *mw_trainer_config(const mw_trainer *t) { return &t->cfg; }
float *mw_trainer_params(mw_trainer *t, size_t *n) { *n = t->nparams; return t->params; }
float *mw_trainer_grads(mw_trainer *t, size_t *n) { *n = t->nparams; return t->grads; }
const mw_train_param *mw_trainer_param(const mw_trainer *t, int id) {
    return id >= 0 && id < MW_TP_COUNT ? &t->p[id] : NULL;
}
int64_t mw_trainer_nsteps(const mw_trainer *t) { return t->step; }
const float *mw_trainer_pattern(const mw_trainer *t, int64_t l) {
    return t->have_acts && l >= 0 && l < t->cfg.n_layers ? t->la[l].att : NULL;
}

/* ------------------------------------------------------------------ forward and backward */

/* causal attention of one layer: att [B,H,T,T], z [N,HD] from q, k, v [N,HD] */
static void attn_fwd(const mw_trainer *t, layer_acts *a, int64_t B, int64_t T) {
    int64_t H = t->cfg.n_heads, dh = t->cfg.d_head, HD = H * dh;
    float scale = (float)(1.0 / sqrt((double)dh));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            const float *q = a->q + b * T * HD + h * dh, *k = a->k + b * T * HD + h * dh;
            const float *v = a->v + b * T * HD + h * dh;
            float *S = a->att + (b * H + h) * T * T;
            mm(0, 1, T, T, dh, scale, q, HD, k, HD, 0.f, S, T);
            for (int64_t i = 0; i < T; i++) {
                float *row = S + i * T, mx = row[0];
                for (int64_t j = 1; j <= i; j++) if (row[j] > mx) mx = row[j];
                float s = 0;
                for (int64_t j = 0; j <= i; j++) { row[j] = expf(row[j] - mx); s += row[j]; }
                float inv = 1.f / s;
                for (int64_t j = 0; j <= i; j++) row[j] *= inv;
                for (int64_t j = i + 1; j < T; j++) row[j] = 0.f;
            }
            mm(0, 0, T, dh, T, 1.f, S, T, v, HD, 0.f, a->z + b * T * HD + h * dh, HD);
        }
}

/* from dz [N,HD]: dq, dk, dv [N,HD] (overwritten) */
static void attn_back(mw_trainer *t, const layer_acts *a, int64_t B, int64_t T) {
    int64_t H = t->cfg.n_heads, dh = t->cfg.d_head, HD = H * dh;
    float scale = (float)(1.0 / sqrt((double)dh));
    float *dS = t->datt;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            size_t o = (size_t)(b * T * HD + h * dh);
            const float *A = a->att + (b * H + h) * T * T;
            mm(0, 1, T, T, dh, 1.f, t->dz + o, HD, a->v + o, HD, 0.f, dS, T);       /* dA = dz v^T */
            mm(1, 0, T, dh, T, 1.f, A, T, t->dz + o, HD, 0.f, t->dv + o, HD);       /* dv = A^T dz */
            for (int64_t i = 0; i < T; i++) {                                       /* softmax back */
                float *r = dS + i * T;
                const float *ar = A + i * T;
                float s = 0;
                for (int64_t j = 0; j <= i; j++) s += ar[j] * r[j];
                for (int64_t j = 0; j <= i; j++) r[j] = ar[j] * (r[j] - s);
                for (int64_t j = i + 1; j < T; j++) r[j] = 0.f;
            }
            mm(0, 0, T, dh, T, scale, dS, T, a->k + o, HD, 0.f, t->dq + o, HD);     /* dq = s dS k */
            mm(1, 0, T, dh, T, scale, dS, T, a->q + o, HD, 0.f, t->dk + o, HD);     /* dk = s dS^T q */
        }
}

int mw_trainer_forward(mw_trainer *t, const int32_t *tokens, int64_t B, int64_t T, int grads, double *loss) {
    const mw_train_config *c = &t->cfg;
    if (B <= 0 || T < 2 || B > t->maxB || T > t->maxT)
        return mw_seterr("train: forward: batch [%lld,%lld] does not fit the trainer's [%lld,%lld] (T >= 2)",
                         (long long)B, (long long)T, (long long)t->maxB, (long long)t->maxT);
    int64_t d = c->d_model, HD = c->n_heads * c->d_head, m = c->attn_only ? 0 : c->d_mlp, V = c->d_vocab;
    int64_t N = B * T, L = c->n_layers;
    int ln = c->norm == MW_TNORM_LN, nrm = c->norm != MW_TNORM_NONE;
    for (int64_t i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return mw_seterr("train: forward: token %d at [%lld,%lld] is outside the vocabulary [0,%lld)",
                             tokens[i], (long long)(i / T), (long long)(i % T), (long long)V);
    t->B = B; t->T = T;
    memcpy(t->tokens, tokens, sizeof *tokens * (size_t)N);
    const float *WE = P(t, MW_TP_W_E), *Wpos = P(t, MW_TP_W_pos);

    /* embedding (+ positions for 'standard') */
    float *x = t->la[0].x;
    for (int64_t i = 0; i < N; i++) {
        const float *e = WE + (int64_t)tokens[i] * d, *p = Wpos + (i % T) * d;
        for (int64_t j = 0; j < d; j++) x[i * d + j] = c->shortformer ? e[j] : e[j] + p[j];
    }
    for (int64_t l = 0; l < L; l++) {
        layer_acts *a = &t->la[l];
        float *xout = l + 1 < L ? t->la[l + 1].x : t->xf;
        const float *in1 = a->x;
        if (nrm) {
            ln_fwd(a->xn1, a->mean1, a->rstd1, a->x, ln ? P(t, MW_TP_ln1_w) + l * d : NULL,
                   ln ? P(t, MW_TP_ln1_b) + l * d : NULL, N, d, c->eps);
            in1 = a->xn1;
        }
        const float *qkin = in1;
        if (c->shortformer) {
            for (int64_t i = 0; i < N; i++)
                for (int64_t j = 0; j < d; j++) a->qk[i * d + j] = in1[i * d + j] + Wpos[(i % T) * d + j];
            qkin = a->qk;
        }
        linear(a->q, qkin, P(t, MW_TP_W_Q) + l * d * HD, P(t, MW_TP_b_Q) + l * HD, N, d, HD);
        linear(a->k, qkin, P(t, MW_TP_W_K) + l * d * HD, P(t, MW_TP_b_K) + l * HD, N, d, HD);
        linear(a->v, in1, P(t, MW_TP_W_V) + l * d * HD, P(t, MW_TP_b_V) + l * HD, N, d, HD);
        attn_fwd(t, a, B, T);
        float *after = m ? a->mid : xout;
        linear(after, a->z, P(t, MW_TP_W_O) + l * HD * d, P(t, MW_TP_b_O) + l * d, N, HD, d);
        for (int64_t i = 0; i < N * d; i++) after[i] += a->x[i];
        if (m) {
            const float *in2 = a->mid;
            if (nrm) {
                ln_fwd(a->xn2, a->mean2, a->rstd2, a->mid, ln ? P(t, MW_TP_ln2_w) + l * d : NULL,
                       ln ? P(t, MW_TP_ln2_b) + l * d : NULL, N, d, c->eps);
                in2 = a->xn2;
            }
            linear(a->pre, in2, P(t, MW_TP_W_in) + l * d * m, P(t, MW_TP_b_in) + l * m, N, d, m);
            for (int64_t i = 0; i < N * m; i++) a->post[i] = gelu_new(a->pre[i]);
            linear(xout, a->post, P(t, MW_TP_W_out) + l * m * d, P(t, MW_TP_b_out) + l * d, N, m, d);
            for (int64_t i = 0; i < N * d; i++) xout[i] += a->mid[i];
        }
    }
    const float *fin = t->xf;
    if (nrm) {
        ln_fwd(t->xnf, t->meanf, t->rstdf, t->xf, ln ? P(t, MW_TP_ln_final_w) : NULL,
               ln ? P(t, MW_TP_ln_final_b) : NULL, N, d, c->eps);
        fin = t->xnf;
    }
    linear(t->logits, fin, P(t, MW_TP_W_U), P(t, MW_TP_b_U), N, d, V);

    /* cross-entropy; with grads the logits become dloss/dlogits = (softmax - onehot) / count */
    double total = 0;
    double inv = 1.0 / (double)(B * (T - 1));
    for (int64_t i = 0; i < N; i++) {
        float *row = t->logits + i * V;
        if (i % T == T - 1) {
            t->tokloss[i] = 0;
            if (grads) memset(row, 0, sizeof(float) * (size_t)V);
            continue;
        }
        int32_t y = tokens[i + 1];
        float mx = row[0];
        for (int64_t j = 1; j < V; j++) if (row[j] > mx) mx = row[j];
        float zy = row[y] - mx;
        /* exp once, in float (the sum in double): the softmax over V dominates this loop */
        double s = 0;
        for (int64_t j = 0; j < V; j++) { row[j] = expf(row[j] - mx); s += row[j]; }
        double li = log(s) - (double)zy;
        t->tokloss[i] = (float)li;
        total += li;
        if (grads) {
            float sc = (float)(inv / s);
            for (int64_t j = 0; j < V; j++) row[j] *= sc;
            row[y] -= (float)inv;
        }
    }
    *loss = total * inv;
    t->have_acts = 1;
    if (!grads) return 0;

    /* ---------------- backward */
    memset(t->grads, 0, sizeof(float) * t->nparams);
    float *dx = t->dx;     /* dloss/d(residual stream) at the current depth */
    if (nrm) {
        linear_back(t->dx2, 0, G(t, MW_TP_W_U), G(t, MW_TP_b_U), t->logits, t->xnf, P(t, MW_TP_W_U), N, d, V);
        memset(dx, 0, sizeof(float) * (size_t)(N * d));
        ln_back(dx, ln ? G(t, MW_TP_ln_final_w) : NULL, ln ? G(t, MW_TP_ln_final_b) : NULL, t->dx2, t->xf,
                t->meanf, t->rstdf, ln ? P(t, MW_TP_ln_final_w) : NULL, N, d);
    } else {
        linear_back(dx, 0, G(t, MW_TP_W_U), G(t, MW_TP_b_U), t->logits, t->xf, P(t, MW_TP_W_U), N, d, V);
    }
    float *dWpos = G(t, MW_TP_W_pos);
    for (int64_t l = L - 1; l >= 0; l--) {
        layer_acts *a = &t->la[l];
        if (m) {
            /* MLP: dx is d(resid_post); it flows to resid_mid unchanged plus through the MLP */
            const float *in2 = nrm ? a->xn2 : a->mid;
            /* dpre = (dx @ W_out^T) * gelu'(pre) */
            mm(0, 1, N, m, d, 1.f, dx, d, P(t, MW_TP_W_out) + l * m * d, d, 0.f, t->dpre, m);
            mm(1, 0, m, d, N, 1.f, a->post, m, dx, d, 1.f, G(t, MW_TP_W_out) + l * m * d, d);
            float *dbo = G(t, MW_TP_b_out) + l * d;
            for (int64_t i = 0; i < N; i++) for (int64_t j = 0; j < d; j++) dbo[j] += dx[i * d + j];
            for (int64_t i = 0; i < N * m; i++) t->dpre[i] *= gelu_new_grad(a->pre[i]);
            if (nrm) {
                linear_back(t->dx2, 0, G(t, MW_TP_W_in) + l * d * m, G(t, MW_TP_b_in) + l * m, t->dpre, in2,
                            P(t, MW_TP_W_in) + l * d * m, N, d, m);
                ln_back(dx, ln ? G(t, MW_TP_ln2_w) + l * d : NULL, ln ? G(t, MW_TP_ln2_b) + l * d : NULL, t->dx2,
                        a->mid, a->mean2, a->rstd2, ln ? P(t, MW_TP_ln2_w) + l * d : NULL, N, d);
            } else {
                linear_back(dx, 1, G(t, MW_TP_W_in) + l * d * m, G(t, MW_TP_b_in) + l * m, t->dpre, in2,
                            P(t, MW_TP_W_in) + l * d * m, N, d, m);
            }
        }
        /* attention: dx is d(resid_mid) (or d(resid_post) without MLP) */
        linear_back(t->dz, 0, G(t, MW_TP_W_O) + l * HD * d, G(t, MW_TP_b_O) + l * d, dx, a->z,
                    P(t, MW_TP_W_O) + l * HD * d, N, HD, d);
        attn_back(t, a, B, T);
        const float *in1 = nrm ? a->xn1 : a->x;
        const float *qkin = c->shortformer ? a->qk : in1;
        /* d(qk input) into dx2, then the V path adds its part when the inputs are the same */
        linear_back(t->dx2, 0, G(t, MW_TP_W_Q) + l * d * HD, G(t, MW_TP_b_Q) + l * HD, t->dq, qkin,
                    P(t, MW_TP_W_Q) + l * d * HD, N, d, HD);
        linear_back(t->dx2, 1, G(t, MW_TP_W_K) + l * d * HD, G(t, MW_TP_b_K) + l * HD, t->dk, qkin,
                    P(t, MW_TP_W_K) + l * d * HD, N, d, HD);
        if (c->shortformer)
            for (int64_t i = 0; i < N; i++)
                for (int64_t j = 0; j < d; j++) dWpos[(i % T) * d + j] += t->dx2[i * d + j];
        linear_back(t->dx2, 1, G(t, MW_TP_W_V) + l * d * HD, G(t, MW_TP_b_V) + l * HD, t->dv, in1,
                    P(t, MW_TP_W_V) + l * d * HD, N, d, HD);
        if (nrm) {
            ln_back(dx, ln ? G(t, MW_TP_ln1_w) + l * d : NULL, ln ? G(t, MW_TP_ln1_b) + l * d : NULL, t->dx2,
                    a->x, a->mean1, a->rstd1, ln ? P(t, MW_TP_ln1_w) + l * d : NULL, N, d);
        } else {
            for (int64_t i = 0; i < N * d; i++) dx[i] += t->dx2[i];
        }
    }
    float *dWE = G(t, MW_TP_W_E);
    for (int64_t i = 0; i < N; i++) {
        float *e = dWE + (int64_t)tokens[i] * d;
        for (int64_t j = 0; j < d; j++) e[j] += dx[i * d + j];
        if (!c->shortformer)
            for (int64_t j = 0; j < d; j++) dWpos[(i % T) * d + j] += dx[i * d + j];
    }
    return 0;
}

int mw_trainer_token_losses(const mw_trainer *t, float *out) {
    if (!t->have_acts) return mw_seterr("train: token_losses: no forward pass yet");
    for (int64_t b = 0; b < t->B; b++)
        memcpy(out + b * (t->T - 1), t->tokloss + b * t->T, sizeof(float) * (size_t)(t->T - 1));
    return 0;
}

/* ------------------------------------------------------------------ AdamW */

void mw_adamw_default(mw_adamw_opts *o) {
    *o = (mw_adamw_opts){.lr = 1e-3, .min_lr = 1e-4, .warmup = 0, .steps = 0, .beta1 = 0.9, .beta2 = 0.95,
                         .eps = 1e-8, .weight_decay = 0.1, .clip = 1.0};
}

double mw_adamw_lr(const mw_adamw_opts *o, int64_t step) {
    if (o->warmup > 0 && step < o->warmup) return o->lr * (double)(step + 1) / (double)o->warmup;
    if (o->steps <= o->warmup) return o->lr;
    double p = (double)(step - o->warmup) / (double)(o->steps - o->warmup);
    if (p > 1) p = 1;
    return o->min_lr + 0.5 * (o->lr - o->min_lr) * (1 + cos(M_PI * p));
}

int mw_trainer_step(mw_trainer *t, const mw_adamw_opts *o, double *gnorm) {
    double ss = 0;
    for (size_t i = 0; i < t->nparams; i++) ss += (double)t->grads[i] * t->grads[i];
    double norm = sqrt(ss);
    if (gnorm) *gnorm = norm;
    if (!isfinite(norm)) return mw_seterr("train: step %lld: gradient norm is not finite", (long long)t->step);
    float gs = (o->clip > 0 && norm > o->clip) ? (float)(o->clip / norm) : 1.f;
    double lr = mw_adamw_lr(o, t->step);
    t->step++;
    double bc1 = 1 - pow(o->beta1, (double)t->step), bc2 = 1 - pow(o->beta2, (double)t->step);
    float b1 = (float)o->beta1, b2 = (float)o->beta2;
    for (int id = 0; id < MW_TP_COUNT; id++) {
        const mw_train_param *p = &t->p[id];
        float *w = t->params + p->offset, *g = t->grads + p->offset, *m = t->m + p->offset, *v = t->v + p->offset;
        float wd = p->decay ? (float)(lr * o->weight_decay) : 0.f;
        for (size_t i = 0; i < p->numel; i++) {
            float gi = g[i] * gs;
            m[i] = b1 * m[i] + (1 - b1) * gi;
            v[i] = b2 * v[i] + (1 - b2) * gi * gi;
            double mh = m[i] / bc1, vh = v[i] / bc2;
            w[i] -= (float)(lr * mh / (sqrt(vh) + o->eps)) + wd * w[i];
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ checkpoints (safetensors) */

/* One tensor of a safetensors file being written: F32, row-major. */
typedef struct { char name[96]; int ndim; int64_t shape[3]; const float *data; size_t numel; } st_out;

/* writes the tensors in the order given (a valid layout: F32 only, so every offset is aligned),
 * header padded with spaces to a multiple of 8, through a temporary file renamed into place */
static int write_st(const char *path, const char *meta_json, const st_out *ts, int n) {
    size_t cap = 4096 + strlen(meta_json), len = 0;
    char *hdr = malloc(cap);
    if (!hdr) return mw_seterr("%s: out of memory", path);
#define APPEND(...) do { \
        int need_ = snprintf(NULL, 0, __VA_ARGS__); \
        if (len + (size_t)need_ + 1 > cap) { \
            cap = (cap + (size_t)need_) * 2; char *n_ = realloc(hdr, cap); \
            if (!n_) { free(hdr); return mw_seterr("%s: out of memory", path); } hdr = n_; } \
        len += (size_t)snprintf(hdr + len, cap - len, __VA_ARGS__); } while (0)
    APPEND("{\"__metadata__\":%s", meta_json);
    size_t off = 0;
    for (int k = 0; k < n; k++) {
        APPEND(",\"%s\":{\"dtype\":\"F32\",\"shape\":[", ts[k].name);
        for (int i = 0; i < ts[k].ndim; i++) APPEND("%s%lld", i ? "," : "", (long long)ts[k].shape[i]);
        APPEND("],\"data_offsets\":[%zu,%zu]}", off, off + 4 * ts[k].numel);
        off += 4 * ts[k].numel;
    }
    APPEND("}");
    while (len % 8) APPEND(" ");
#undef APPEND
    char *tmp = malloc(strlen(path) + 8);
    if (!tmp) { free(hdr); return mw_seterr("%s: out of memory", path); }
    sprintf(tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) { free(hdr); mw_seterr("%s: cannot open: %s", tmp, strerror(errno)); free(tmp); return -1; }
    uint64_t hl = len;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hl >> (8 * i));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(hdr, 1, len, f) == len;
    for (int k = 0; k < n && ok; k++) ok = fwrite(ts[k].data, 4, ts[k].numel, f) == ts[k].numel;
    if (fclose(f) != 0) ok = 0;
    free(hdr);
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        mw_seterr("%s: write failed", path);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

/* the config fields kept in a checkpoint's metadata, so that loading checks them */
#define CFG_FIELDS(X) X(d_model) X(d_head) X(n_heads) X(n_layers) X(n_ctx) X(d_vocab) X(d_mlp)

int mw_trainer_save(const mw_trainer *t, const char *path) {
    char meta[1024];
    int k = snprintf(meta, sizeof meta, "{\"format\":\"miwb-train\",\"step\":\"%lld\",\"attn_only\":\"%d\","
                     "\"normalization\":\"%d\",\"shortformer\":\"%d\"", (long long)t->step, t->cfg.attn_only,
                     (int)t->cfg.norm, t->cfg.shortformer);
#define MW_X(f) k += snprintf(meta + k, sizeof meta - (size_t)k, ",\"" #f "\":\"%lld\"", (long long)t->cfg.f);
    CFG_FIELDS(MW_X)
#undef MW_X
    snprintf(meta + k, sizeof meta - (size_t)k, "}");
    st_out ts[3 * MW_TP_COUNT];
    int n = 0;
    static const char *const kinds[3] = {"", "adam_m.", "adam_v."};
    const float *bufs[3] = {t->params, t->m, t->v};
    for (int kk = 0; kk < 3; kk++)
        for (int id = 0; id < MW_TP_COUNT; id++) {
            const mw_train_param *p = &t->p[id];
            if (!p->numel) continue;
            st_out *o = &ts[n++];
            snprintf(o->name, sizeof o->name, "%s%s", kinds[kk], p->name);
            o->ndim = p->ndim;
            memcpy(o->shape, p->shape, sizeof o->shape);
            o->data = bufs[kk] + p->offset;
            o->numel = p->numel;
        }
    if (write_st(path, meta, ts, n)) return mw_seterr("train: save: %s", mw_error());
    return 0;
}

int mw_trainer_export(const mw_trainer *t, const char *path) {
    const mw_train_config *c = &t->cfg;
    int64_t L = c->n_layers, H = c->n_heads, d = c->d_model, dh = c->d_head, HD = H * dh;
    /* W_Q/W_K/W_V are the only ones whose memory order differs ([d, H, dh] -> [H, d, dh]) */
    float *perm = malloc(sizeof(float) * (size_t)(3 * L * d * HD));
    st_out *ts = calloc((size_t)(MW_TP_COUNT * L + 8), sizeof *ts);
    if (!perm || !ts) { free(perm); free(ts); return mw_seterr("train: export: out of memory"); }
    int n = 0;
#define OUT(nm_fmt, lay, ptr, nd, s0, s1, s2) do { st_out *o_ = &ts[n++]; \
        snprintf(o_->name, sizeof o_->name, nm_fmt, (long long)(lay)); o_->ndim = nd; \
        o_->shape[0] = s0; o_->shape[1] = s1; o_->shape[2] = s2; o_->data = ptr; \
        o_->numel = (size_t)(s0) * (size_t)((nd) > 1 ? (s1) : 1) * (size_t)((nd) > 2 ? (s2) : 1); } while (0)
    OUT("embed.W_E%.0lld", 0, P(t, MW_TP_W_E), 2, c->d_vocab, d, 0);
    OUT("pos_embed.W_pos%.0lld", 0, P(t, MW_TP_W_pos), 2, c->n_ctx, d, 0);
    int ln = c->norm == MW_TNORM_LN, mlp = !c->attn_only;
    int64_t m = c->d_mlp;
    for (int64_t l = 0; l < L; l++) {
        if (ln) {
            OUT("blocks.%lld.ln1.w", l, P(t, MW_TP_ln1_w) + l * d, 1, d, 0, 0);
            OUT("blocks.%lld.ln1.b", l, P(t, MW_TP_ln1_b) + l * d, 1, d, 0, 0);
            if (mlp) {
                OUT("blocks.%lld.ln2.w", l, P(t, MW_TP_ln2_w) + l * d, 1, d, 0, 0);
                OUT("blocks.%lld.ln2.b", l, P(t, MW_TP_ln2_b) + l * d, 1, d, 0, 0);
            }
        }
        static const int qkv[3] = {MW_TP_W_Q, MW_TP_W_K, MW_TP_W_V};
        static const char *const qn[3] = {"blocks.%lld.attn.W_Q", "blocks.%lld.attn.W_K", "blocks.%lld.attn.W_V"};
        static const int bqkv[3] = {MW_TP_b_Q, MW_TP_b_K, MW_TP_b_V};
        static const char *const bn[3] = {"blocks.%lld.attn.b_Q", "blocks.%lld.attn.b_K", "blocks.%lld.attn.b_V"};
        for (int k = 0; k < 3; k++) {
            const float *W = P(t, qkv[k]) + l * d * HD;
            float *dst = perm + ((size_t)k * (size_t)L + (size_t)l) * (size_t)(d * HD);
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < d; i++)
                    memcpy(dst + (h * d + i) * dh, W + i * HD + h * dh, sizeof(float) * (size_t)dh);
            OUT(qn[k], l, dst, 3, H, d, dh);
        }
        OUT("blocks.%lld.attn.W_O", l, P(t, MW_TP_W_O) + l * HD * d, 3, H, dh, d);
        for (int k = 0; k < 3; k++) OUT(bn[k], l, P(t, bqkv[k]) + l * HD, 2, H, dh, 0);
        OUT("blocks.%lld.attn.b_O", l, P(t, MW_TP_b_O) + l * d, 1, d, 0, 0);
        if (mlp) {
            OUT("blocks.%lld.mlp.W_in", l, P(t, MW_TP_W_in) + l * d * m, 2, d, m, 0);
            OUT("blocks.%lld.mlp.b_in", l, P(t, MW_TP_b_in) + l * m, 1, m, 0, 0);
            OUT("blocks.%lld.mlp.W_out", l, P(t, MW_TP_W_out) + l * m * d, 2, m, d, 0);
            OUT("blocks.%lld.mlp.b_out", l, P(t, MW_TP_b_out) + l * d, 1, d, 0, 0);
        }
    }
    if (ln) {
        OUT("ln_final.w%.0lld", 0, P(t, MW_TP_ln_final_w), 1, d, 0, 0);
        OUT("ln_final.b%.0lld", 0, P(t, MW_TP_ln_final_b), 1, d, 0, 0);
    }
    OUT("unembed.W_U%.0lld", 0, P(t, MW_TP_W_U), 2, d, c->d_vocab, 0);
    OUT("unembed.b_U%.0lld", 0, P(t, MW_TP_b_U), 1, c->d_vocab, 0, 0);
#undef OUT
    char meta[64];
    snprintf(meta, sizeof meta, "{\"format\":\"pt\",\"step\":\"%lld\"}", (long long)t->step);
    int rc = write_st(path, meta, ts, n);
    free(perm);
    free(ts);
    if (rc) return mw_seterr("train: export: %s", mw_error());
    return 0;
}

/* ------------------------------------------------------------------ probes */

int mw_trainer_induction(mw_trainer *t, int64_t seq_len, int64_t batch, uint64_t seed, double *ind,
                         double *first, double *second) {
    const mw_train_config *c = &t->cfg;
    int64_t T = 2 * seq_len + 1, H = c->n_heads;
    if (seq_len < 2 || batch < 1 || T > t->maxT || batch > t->maxB)
        return mw_seterr("train: induction: [%lld, 2*%lld+1] repeated tokens do not fit the trainer's batch [%lld,%lld]",
                         (long long)batch, (long long)seq_len, (long long)t->maxB, (long long)t->maxT);
    if (c->d_vocab < 2) return mw_seterr("train: induction: the vocabulary needs at least 2 ids");
    int32_t *tok = malloc(sizeof *tok * (size_t)(batch * T));
    float *tl = malloc(sizeof *tl * (size_t)(batch * (T - 1)));
    if (!tok || !tl) { free(tok); free(tl); return mw_seterr("train: induction: out of memory"); }
    uint64_t s = seed;
    for (int64_t b = 0; b < batch; b++) {
        tok[b * T] = 0;
        for (int64_t i = 0; i < seq_len; i++) {
            int32_t id = 1 + (int32_t)(splitmix64(&s) % (uint64_t)(c->d_vocab - 1));
            tok[b * T + 1 + i] = tok[b * T + 1 + seq_len + i] = id;
        }
    }
    double loss;
    int rc = mw_trainer_forward(t, tok, batch, T, 0, &loss);
    if (!rc) {
        for (int64_t l = 0; l < c->n_layers; l++) {
            const float *A = t->la[l].att;
            for (int64_t h = 0; h < H; h++) {
                double sum = 0;
                int64_t cnt = 0;
                for (int64_t b = 0; b < batch; b++) {
                    const float *M = A + (b * H + h) * T * T;
                    for (int64_t i = 0; i + seq_len - 1 < T; i++, cnt++) sum += M[(i + seq_len - 1) * T + i];
                }
                ind[l * H + h] = sum / (double)cnt;
            }
        }
        mw_trainer_token_losses(t, tl);
        double f = 0, sc = 0;
        for (int64_t b = 0; b < batch; b++)
            for (int64_t i = 0; i < T - 1; i++) {
                if (i < seq_len) f -= tl[b * (T - 1) + i];
                else sc -= tl[b * (T - 1) + i];
            }
        if (first) *first = f / (double)(batch * seq_len);
        if (second) *second = sc / (double)(batch * seq_len);
    }
    free(tok);
    free(tl);
    return rc;
}

int mw_trainer_prev_token(mw_trainer *t, const int32_t *tokens, int64_t B, int64_t T, double *prev) {
    double loss;
    if (mw_trainer_forward(t, tokens, B, T, 0, &loss)) return -1;
    int64_t H = t->cfg.n_heads;
    for (int64_t l = 0; l < t->cfg.n_layers; l++)
        for (int64_t h = 0; h < H; h++) {
            double sum = 0;
            for (int64_t b = 0; b < B; b++) {
                const float *M = t->la[l].att + (b * H + h) * T * T;
                for (int64_t i = 1; i < T; i++) sum += M[i * T + i - 1];
            }
            prev[l * H + h] = sum / (double)(B * (T - 1));
        }
    return 0;
}

int mw_trainer_load(mw_trainer *t, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mw_seterr("train: load: %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 8) { close(fd); return mw_seterr("train: load: %s: too short", path); }
    size_t size = (size_t)st.st_size;
    unsigned char *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return mw_seterr("train: load: %s: cannot map", path);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)map[i] << (8 * i);
    cJSON *root = NULL;
    int rc = -1;
    if (hl > size - 8) { mw_seterr("train: load: %s: header length %llu past the end", path, (unsigned long long)hl); goto done; }
    root = cJSON_ParseWithLength((const char *)map + 8, (size_t)hl);
    if (!root) { mw_seterr("train: load: %s: header is not valid JSON", path); goto done; }
    const unsigned char *data = map + 8 + hl;
    size_t dsize = size - 8 - (size_t)hl;
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    cJSON *js = meta ? cJSON_GetObjectItemCaseSensitive(meta, "step") : NULL;
    if (!cJSON_IsString(js)) { mw_seterr("train: load: %s: no __metadata__.step (not a miwb training checkpoint)", path); goto done; }
#define MW_X(f) { cJSON *e_ = cJSON_GetObjectItemCaseSensitive(meta, #f); \
        if (!cJSON_IsString(e_) || atoll(e_->valuestring) != (long long)t->cfg.f) { \
            mw_seterr("train: load: %s: " #f " is %s in the file, %lld in the model", path, \
                      cJSON_IsString(e_) ? e_->valuestring : "missing", (long long)t->cfg.f); goto done; } }
    CFG_FIELDS(MW_X)
#undef MW_X
    float *bufs[3] = {t->params, t->m, t->v};
    static const char *const kinds[3] = {"", "adam_m.", "adam_v."};
    for (int k = 0; k < 3; k++)
        for (int id = 0; id < MW_TP_COUNT; id++) {
            const mw_train_param *p = &t->p[id];
            if (!p->numel) continue;
            char name[64];
            snprintf(name, sizeof name, "%s%s", kinds[k], p->name);
            cJSON *e = cJSON_GetObjectItemCaseSensitive(root, name);
            cJSON *dt = e ? cJSON_GetObjectItemCaseSensitive(e, "dtype") : NULL;
            cJSON *offs = e ? cJSON_GetObjectItemCaseSensitive(e, "data_offsets") : NULL;
            if (!cJSON_IsString(dt) || strcmp(dt->valuestring, "F32") || cJSON_GetArraySize(offs) != 2) {
                mw_seterr("train: load: %s: tensor '%s' missing or not F32", path, name);
                goto done;
            }
            double b0 = cJSON_GetArrayItem(offs, 0)->valuedouble, b1 = cJSON_GetArrayItem(offs, 1)->valuedouble;
            if (b0 < 0 || b1 > (double)dsize || b1 - b0 != 4.0 * (double)p->numel) {
                mw_seterr("train: load: %s: tensor '%s' has %g bytes at [%g,%g), expected %zu inside %zu",
                          path, name, b1 - b0, b0, b1, 4 * p->numel, dsize);
                goto done;
            }
            memcpy(bufs[k] + p->offset, data + (size_t)b0, 4 * p->numel);
        }
    t->step = atoll(js->valuestring);
    t->have_acts = 0;
    rc = 0;
done:
    cJSON_Delete(root);
    munmap(map, size);
    return rc;
}

/* ------------------------------------------------------------------ token datasets */

int mw_dataset_write(const char *path, const int32_t *ids, int64_t n, int64_t vocab, int64_t eot) {
    if (vocab <= 0 || vocab > 0x7fffffff) return mw_seterr("dataset_write: vocab_size %lld out of range", (long long)vocab);
    int width = vocab <= 65536 ? 2 : 4;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return mw_seterr("dataset_write: id %d at %lld outside [0,%lld)", ids[i], (long long)i, (long long)vocab);
    FILE *f = fopen(path, "wb");
    if (!f) return mw_seterr("dataset_write: %s: cannot open: %s", path, strerror(errno));
    unsigned char h[32] = "MWTOKENS";
    uint32_t u[2] = {1, (uint32_t)width};
    uint64_t nn = (uint64_t)n;
    uint32_t w[2] = {(uint32_t)vocab, (uint32_t)(eot < 0 ? 0xffffffffu : (uint32_t)eot)};
    /* little-endian machines only (x86-64, arm64): the fields are stored as they are in memory */
    memcpy(h + 8, u, 8); memcpy(h + 16, &nn, 8); memcpy(h + 24, w, 8);
    int ok = fwrite(h, 1, 32, f) == 32;
    enum { CH = 65536 };
    static __thread uint16_t b16[CH];
    for (int64_t i = 0; i < n && ok; i += CH) {
        int64_t k = n - i < CH ? n - i : CH;
        if (width == 2) {
            for (int64_t j = 0; j < k; j++) b16[j] = (uint16_t)ids[i + j];
            ok = fwrite(b16, 2, (size_t)k, f) == (size_t)k;
        } else {
            ok = fwrite(ids + i, 4, (size_t)k, f) == (size_t)k;
        }
    }
    if (fclose(f) != 0) ok = 0;
    if (!ok) return mw_seterr("dataset_write: %s: write failed", path);
    return 0;
}

int mw_dataset_open(mw_dataset *d, const char *path) {
    memset(d, 0, sizeof *d);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mw_seterr("dataset_open: %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 32) { close(fd); return mw_seterr("dataset_open: %s: shorter than its 32-byte header", path); }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return mw_seterr("dataset_open: %s: cannot map", path);
    const unsigned char *h = map;
    uint32_t u[2], w[2];
    uint64_t n;
    memcpy(u, h + 8, 8); memcpy(&n, h + 16, 8); memcpy(w, h + 24, 8);
    const char *bad = NULL;
    if (memcmp(h, "MWTOKENS", 8)) bad = "not a miwb token file (magic MWTOKENS)";
    else if (u[0] != 1) bad = "unknown version";
    else if (u[1] != 2 && u[1] != 4) bad = "bytes per id must be 2 or 4";
    else if (n > ((uint64_t)st.st_size - 32) / u[1] || 32 + n * u[1] != (uint64_t)st.st_size) bad = "size does not match n_tokens";
    if (bad) { munmap(map, (size_t)st.st_size); return mw_seterr("dataset_open: %s: %s", path, bad); }
    d->map = map; d->map_size = (size_t)st.st_size;
    d->ids = h + 32; d->width = (int)u[1]; d->n = (int64_t)n; d->vocab = w[0];
    d->eot = w[1] == 0xffffffffu ? -1 : (int64_t)w[1];
    return 0;
}

void mw_dataset_close(mw_dataset *d) {
    if (d->map) munmap((void *)d->map, d->map_size);
    memset(d, 0, sizeof *d);
}

void mw_dataset_batch(const mw_dataset *d, uint64_t *state, int32_t *tokens, int64_t B, int64_t T, int32_t bos) {
    int64_t take = bos >= 0 ? T - 1 : T;
    int64_t span = d->n - take + 1;
    for (int64_t b = 0; b < B; b++) {
        int64_t o = span > 0 ? (int64_t)(splitmix64(state) % (uint64_t)span) : 0;
        int32_t *row = tokens + b * T;
        int64_t j = 0;
        if (bos >= 0) row[j++] = bos;
        for (int64_t i = 0; j < T; i++, j++) row[j] = o + i < d->n ? mw_dataset_get(d, o + i) : (bos >= 0 ? bos : 0);
    }
}

void mw_dataset_batch_repeat(const mw_dataset *d, uint64_t *state, int32_t *tokens, int64_t B, int64_t T,
                             int32_t bos, double repeat_frac, double random_frac) {
    mw_dataset_batch(d, state, tokens, B, T, bos);
    int64_t s0 = bos >= 0 ? 1 : 0, body = T - s0;
    if (body < 16 || (repeat_frac <= 0 && random_frac <= 0)) return;
    for (int64_t b = 0; b < B; b++) {
        double u = (double)(splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
        if (u >= repeat_frac + random_frac) continue;
        int64_t a = 8 + (int64_t)(splitmix64(state) % (uint64_t)(body / 2 - 8 + 1));
        int32_t *row = tokens + b * T + s0;
        /* shift the window right by a (from the end, in place) */
        int64_t shift = u < repeat_frac ? a : 2 * a;
        for (int64_t i = body - 1; i >= shift; i--) row[i] = row[i - shift];
        if (u >= repeat_frac)
            for (int64_t i = 0; i < a; i++)
                row[i] = 1 + (int32_t)(splitmix64(state) % (uint64_t)(d->vocab > 1 ? d->vocab - 1 : 1));
        for (int64_t i = 0; i < a && a + i < body; i++) row[a + i] = row[i];
    }
}
