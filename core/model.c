/* model.c - the HookedTransformer forward pass (see model.h for the scope, the dimension legend
 * B P d H dh m L V Vo C, and the weight layout).
 *
 * Layout of this file: hook tables (from hooks.def) -> config -> weights (creation, state-dict
 * names) -> kernels (free functions over raw float pointers, output first, each opened by the
 * shapes it works on; every matrix product goes to cblas_sgemm) -> activation buffers -> the
 * forward pass, which reads as the TransformerLens module tree does.
 */
#include "model.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================ hook tables */
static const struct {
    const char *suffix;
    int stage;
    mw_hook_kind kind;
} hook_info[] = {
#define MW_HOOK(ID, suffix, stage, kind) {suffix, stage, MW_HK_##kind},
#include "hooks.def"
#undef MW_HOOK
};
_Static_assert(sizeof hook_info / sizeof hook_info[0] == MW_HOOK_COUNT,
               "hook_info must have one row per hooks.def entry");
_Static_assert(MW_HOOK_COUNT == 22, "hooks.def lists the 22 hook points of TL-CONVENTIONS.md");

const char *mw_hook_suffix(int id) {
    return id >= 0 && id < MW_HOOK_COUNT ? hook_info[id].suffix : NULL;
}
int mw_hook_stage(int id) { return id >= 0 && id < MW_HOOK_COUNT ? hook_info[id].stage : -1; }
mw_hook_kind mw_hook_kind_of(int id) { return hook_info[id].kind; }

int mw_hook_name(char *buf, size_t n, int id, int layer) {
    if (id < 0 || id >= MW_HOOK_COUNT) return snprintf(buf, n, "?");
    if (hook_info[id].stage == 1) return snprintf(buf, n, "blocks.%d.%s", layer, hook_info[id].suffix);
    return snprintf(buf, n, "%s", hook_info[id].suffix);
}

int mw_hook_parse(const char *name, int *id, int *layer) {
    int l = -1;
    const char *rest = name;
    if (strncmp(name, "blocks.", 7) == 0) {
        char *end;
        long v = strtol(name + 7, &end, 10);
        if (end == name + 7 || *end != '.' || v < 0 || v > 1000000) return -1;
        l = (int)v;
        rest = end + 1;
    }
    for (int i = 0; i < MW_HOOK_COUNT; i++) {
        if ((hook_info[i].stage == 1) != (l >= 0)) continue;
        if (strcmp(rest, hook_info[i].suffix) == 0) {
            *id = i;
            *layer = l;
            return 0;
        }
    }
    return -1;
}

/* ================================================================ weights */
static const struct {
    const char *name;
    int per_block;
    mw_dim dims[3];
} param_info[] = {
#define MW_X(field, name, per_block, d0, d1, d2) {name, per_block, {d0, d1, d2}},
    MW_PARAMS(MW_X)
#undef MW_X
};
_Static_assert(sizeof param_info / sizeof param_info[0] == MW_PARAM_COUNT, "one row per MW_PARAMS entry");

const char *mw_param_name(int pid) { return pid >= 0 && pid < MW_PARAM_COUNT ? param_info[pid].name : NULL; }
int mw_param_per_block(int pid) { return param_info[pid].per_block; }

static mw_tensor *param_tensor(mw_weights *w, int pid) {
    switch (pid) {
#define MW_X(field, name, per_block, d0, d1, d2) case MW_PARAM_##field: return &w->field;
        MW_PARAMS(MW_X)
#undef MW_X
    }
    return NULL;
}

int mw_model_param_exists(const mw_model *m, int pid) {
    const mw_config *c = &m->cfg;
    switch (pid) {
    case MW_PARAM_ln1_w: case MW_PARAM_ln1_b: case MW_PARAM_ln_final_w: case MW_PARAM_ln_final_b:
        return c->normalization_type == MW_NORM_LN;
    case MW_PARAM_ln2_w: case MW_PARAM_ln2_b:
        return c->normalization_type == MW_NORM_LN && !c->attn_only;
    case MW_PARAM_W_in: case MW_PARAM_b_in: case MW_PARAM_W_out: case MW_PARAM_b_out:
        return !c->attn_only;
    default:
        return pid >= 0 && pid < MW_PARAM_COUNT;
    }
}

static int64_t dim_size(const mw_config *c, mw_dim d) {
    switch (d) {
    case MW_DIM_D: return c->d_model;
    case MW_DIM_H: return c->n_heads;
    case MW_DIM_DH: return c->d_head;
    case MW_DIM_M: return c->d_mlp;
    case MW_DIM_V: return c->d_vocab;
    case MW_DIM_VO: return c->d_vocab_out;
    case MW_DIM_CTX: return c->n_ctx;
    default: return 0;
    }
}

int mw_model_param_shape(const mw_model *m, int pid, int64_t *shape) {
    int nd = 0;
    for (int i = 0; i < 3 && param_info[pid].dims[i] != MW_DIM_NONE; i++)
        shape[nd++] = dim_size(&m->cfg, param_info[pid].dims[i]);
    return nd;
}

static int is_qkv(int pid) { return pid == MW_PARAM_W_Q || pid == MW_PARAM_W_K || pid == MW_PARAM_W_V; }

/* allocates one stacked parameter: storage [L, d, H, dh] + permuted header for W_Q/K/V,
 * contiguous [L, ...] for other per-block params, the plain shape for global ones */
static int param_alloc(mw_model *m, int pid) {
    mw_tensor *t = param_tensor(&m->w, pid);
    int64_t shape[4];
    int nd = 0;
    const mw_config *c = &m->cfg;
    if (param_info[pid].per_block) shape[nd++] = c->n_layers;
    if (is_qkv(pid)) {
        int64_t st[4] = {c->n_layers, c->d_model, c->n_heads, c->d_head};
        mw_tensor raw = {0};
        if (mw_tensor_zeros(&raw, MW_F32, 4, st)) return -1;
        const int perm[4] = {0, 2, 1, 3};
        int rc = mw_tensor_permute(t, &raw, perm);
        mw_tensor_release(&raw);
        return rc;
    }
    nd += mw_model_param_shape(m, pid, shape + nd);
    return mw_tensor_zeros(t, MW_F32, nd, shape);
}

mw_model *mw_model_new(const mw_config *cfg) {
    mw_model *m = calloc(1, sizeof *m);
    if (!m) { mw_seterr("HookedTransformer: out of memory"); return NULL; }
    m->cfg = *cfg;
    if (mw_config_finish(&m->cfg)) { free(m); return NULL; }
    if (m->cfg.d_vocab == -1) {
        mw_seterr("HookedTransformerConfig: d_vocab is required (a positive integer; TransformerLens takes it from the tokenizer)");
        free(m);
        return NULL;
    }
    mw_rng g;
    mw_rng *gen = NULL;
    if (m->cfg.seed >= 0) { mw_rng_seed(&g, (uint64_t)m->cfg.seed); gen = &g; }
    else gen = mw_rng_default();
    for (int pid = 0; pid < MW_PARAM_COUNT; pid++) {
        if (!mw_model_param_exists(m, pid)) continue;
        if (param_alloc(m, pid)) { mw_model_free(m); return NULL; }
        mw_tensor *t = param_tensor(&m->w, pid);
        /* TransformerLens init_weights: normal(std = initializer_range) for names with "W_",
         * LayerNorm weights 1, every bias 0. Filled in storage order. */
        float *p = (float *)t->storage->data;
        int64_t n = t->storage->numel;
        if (param_info[pid].name[0] == 'W' || strstr(param_info[pid].name, ".W_")) {
            for (int64_t i = 0; i < n; i++) p[i] = (float)(m->cfg.initializer_range * mw_rng_normal(gen));
        } else if (pid == MW_PARAM_ln1_w || pid == MW_PARAM_ln2_w || pid == MW_PARAM_ln_final_w) {
            for (int64_t i = 0; i < n; i++) p[i] = 1.0f;
        }
    }
    return m;
}

static void run_free(mw_run *r);

void mw_model_free(mw_model *m) {
    if (!m) return;
    for (int pid = 0; pid < MW_PARAM_COUNT; pid++) mw_tensor_release(param_tensor(&m->w, pid));
    run_free(m->run);
    free(m);
}

int mw_model_param_lookup(const mw_model *m, const char *name, int *pid, int *layer) {
    const char *rest = name;
    int l = -1;
    if (strncmp(name, "blocks.", 7) == 0) {
        char *end;
        long v = strtol(name + 7, &end, 10);
        if (end == name + 7 || *end != '.' || v < 0)
            return mw_seterr("state_dict: '%s' is not a parameter name", name);
        if (v >= m->cfg.n_layers)
            return mw_seterr("state_dict: '%s': layer %ld out of range (n_layers %lld)", name, v,
                             (long long)m->cfg.n_layers);
        l = (int)v;
        rest = end + 1;
        if (strcmp(rest, "attn.mask") == 0 || strcmp(rest, "attn.IGNORE") == 0) return 1;
    }
    for (int i = 0; i < MW_PARAM_COUNT; i++) {
        if (param_info[i].per_block != (l >= 0) || strcmp(rest, param_info[i].name) != 0) continue;
        if (!mw_model_param_exists(m, i))
            return mw_seterr("state_dict: '%s' is not a parameter of this model (%s)", name,
                             m->cfg.attn_only && strncmp(rest, "mlp.", 4) == 0 ? "attn_only"
                                                                              : "normalization_type");
        *pid = i;
        *layer = l;
        return 0;
    }
    return mw_seterr("state_dict: '%s' is not a parameter name", name);
}

int mw_model_param_view(mw_tensor *out, const mw_model *m, int pid, int layer) {
    memset(out, 0, sizeof *out);
    if (!mw_model_param_exists(m, pid)) return mw_seterr("param %s: not in this model", mw_param_name(pid));
    mw_tensor *t = param_tensor((mw_weights *)&m->w, pid);
    if (!param_info[pid].per_block) { mw_tensor_share(out, t); return 0; }
    return mw_tensor_select(out, t, 0, layer);
}

int mw_model_param_set(mw_model *m, const char *name, const mw_tensor *src) {
    int pid, layer;
    int rc = mw_model_param_lookup(m, name, &pid, &layer);
    if (rc) return rc < 0 ? -1 : 0;
    mw_tensor dst;
    if (mw_model_param_view(&dst, m, pid, layer)) return -1;
    int same = dst.ndim == src->ndim;
    for (int i = 0; same && i < dst.ndim; i++) same = dst.shape[i] == src->shape[i];
    if (!same) {
        char a[256], b[256];
        mw_tensor_shape_str(a, sizeof a, &dst);
        mw_tensor_shape_str(b, sizeof b, src);
        mw_tensor_release(&dst);
        return mw_seterr("load_state_dict: '%s' has shape %s, the model expects %s", name, b, a);
    }
    rc = mw_tensor_copy_(&dst, src);
    mw_tensor_release(&dst);
    return rc;
}

/* ================================================================ kernels
 * Free functions over raw float pointers; output first. Row-major throughout. */

/* C[M,N] (row stride ldc) = alpha A[M,K] (lda) @ op(B) + beta C, op(B) = B[K,N] (ldb) or,
 * with transB, B[N,K]^T */
static void matmul(float *C, int64_t ldc, const float *A, int64_t lda, const float *Bm, int64_t ldb,
                   int64_t M, int64_t N, int64_t K, float alpha, float beta, int transB) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                alpha, A, (int)lda, Bm, (int)ldb, beta, C, (int)ldc);
}

/* out[N, ld] rows (first n columns) = bias[n] broadcast; bias NULL = 0 */
static void fill_rows(float *out, int64_t ld, const float *bias, int64_t N, int64_t n) {
    for (int64_t i = 0; i < N; i++) {
        float *o = out + i * ld;
        if (bias) memcpy(o, bias, (size_t)n * sizeof(float));
        else memset(o, 0, (size_t)n * sizeof(float));
    }
}

/* out [N, C] = x + y, all [N, C] (out may alias x) */
static void add_fw(float *out, const float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = x[i] + y[i];
}

/* LayerNorm, first half: out [N, C] = x - mean(x), scale [N] = sqrt(var(x) + eps) (biased var) */
static void ln_center_fw(float *out, float *scale, const float *x, int64_t N, int64_t C, double eps) {
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * C;
        float *oi = out + i * C;
        double mean = 0;
        for (int64_t j = 0; j < C; j++) mean += xi[j];
        mean /= (double)C;
        double var = 0;
        for (int64_t j = 0; j < C; j++) {
            float v = (float)(xi[j] - mean);
            oi[j] = v;
            var += (double)v * v;
        }
        scale[i] = (float)sqrt(var / (double)C + eps);
    }
}

/* LayerNorm, second half (in place): out [N, C] = out / scale[N] * w[C] + b[C] (w, b NULL: LNPre) */
static void ln_apply_fw(float *out, const float *scale, const float *w, const float *b, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) {
        float *oi = out + i * C;
        float s = scale[i];
        if (w) for (int64_t j = 0; j < C; j++) oi[j] = oi[j] / s * w[j] + b[j];
        else for (int64_t j = 0; j < C; j++) oi[j] = oi[j] / s;
    }
}

/* out[i] = exp(x[i]) for n floats, 4 at a time with GCC vector extensions (SSE2 on any x86-64,
 * no libm call), relative error ~2e-7: Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2,
 * exp(r) by the degree-6 polynomial of Cephes' expf, 2^k put in the exponent bits. -inf (and
 * anything below -87.3) gives exactly 0, as masked attention scores need. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f exp4(v4f x) {
    const v4f hi = {88.3762626647949f, 88.3762626647949f, 88.3762626647949f, 88.3762626647949f};
    const v4f lo = {-87.3f, -87.3f, -87.3f, -87.3f};
    v4i under = x < lo, over = x > hi;  /* lanes: -1 where true */
    x = (v4f)((over & (v4i)hi) | (~over & (v4i)x));
    x = (v4f)((under & (v4i)lo) | (~under & (v4i)x));
    const v4f magic = {12582912.0f, 12582912.0f, 12582912.0f, 12582912.0f}; /* 1.5 * 2^23: rounds */
    v4f k = (x * 1.44269504088896341f + magic) - magic;
    v4f r = x - k * 0.693359375f + k * 2.12194440e-4f;
    v4f p = 1.9875691500E-4f * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    v4i e = (__builtin_convertvector(k, v4i) + 127) << 23;
    v4f y = p * (v4f)e;
    return (v4f)((v4i)y & ~under);
}

/* out[i] = exp(x[i] - shift), returns the sum (double) */
static double exp_shift_sum(float *out, const float *x, int64_t n, float shift) {
    double sum = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v;
        memcpy(&v, x + i, sizeof v);
        v = exp4(v - shift);
        memcpy(out + i, &v, sizeof v);
        sum += (double)v[0] + v[1] + v[2] + v[3];
    }
    if (i < n) {
        v4f v = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        for (int64_t j = i; j < n; j++) v[j - i] = x[j];
        v = exp4(v - shift);
        for (int64_t j = i; j < n; j++) { out[j] = v[j - i]; sum += v[j - i]; }
    }
    return sum;
}

/* sum of exp(x[i] - shift) over n floats */
static double exp_sum(const float *x, int64_t n, float shift) {
    double sum = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v;
        memcpy(&v, x + i, sizeof v);
        v = exp4(v - shift);
        sum += (double)v[0] + v[1] + v[2] + v[3];
    }
    for (; i < n; i++) sum += expf(x[i] - shift);
    return sum;
}

/* out [n] = act(x [n]) */
static void act_fw(float *out, const float *x, int64_t n, mw_actfn fn) {
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    switch (fn) {
    case MW_ACT_GELU_NEW: {
        /* 0.5 v (1 + tanh(y)) = v (1 - 1 / (exp(2y) + 1)), y = k (v + 0.044715 v^3); exp4 saturates
         * cleanly at both ends (exp -> 0 gives 0, exp -> 3e38 gives v) */
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
            v4f v;
            memcpy(&v, x + i, sizeof v);
            v4f e = exp4(2.0f * k * (v + 0.044715f * v * v * v));
            v4f o = v - v / (e + 1.0f);
            memcpy(out + i, &o, sizeof o);
        }
        for (; i < n; i++) {
            float v = x[i];
            out[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
        }
        break;
    }
    case MW_ACT_GELU:
        for (int64_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
        break;
    case MW_ACT_RELU:
        for (int64_t i = 0; i < n; i++) out[i] = x[i] > 0 ? x[i] : 0;
        break;
    default: /* MW_ACT_NONE: only attention-only models, which have no MLP */
        break;
    }
}

/* Masks one [P, P] block of scores in place (row stride ld), as TransformerLens does before
 * hook_attn_scores: keys j > i (causal) or with keymask[j] == 0 (padding) get -inf.
 * keymask NULL = no padding. */
static void attn_mask_fw(float *s, int64_t ld, int64_t P, const uint8_t *keymask) {
    for (int64_t i = 0; i < P; i++) {
        float *row = s + i * ld;
        for (int64_t j = i + 1; j < P; j++) row[j] = -INFINITY;
        if (keymask)
            for (int64_t j = 0; j <= i; j++)
                if (!keymask[j]) row[j] = -INFINITY;
    }
}
/* softmax over every row of s [rows, cols] (row stride ld), in place. A row whose keys are all
 * masked (-inf), or that holds a NaN (from an edit), becomes 0: torch gives NaN there and
 * TransformerLens turns NaN into 0. With causal, row i reads only keys j <= i (the others are
 * -inf before any hook could have edited them) and writes 0 past them. */
static void softmax_rows_fw(float *s, int64_t ld, int64_t rows, int64_t cols, int causal) {
    for (int64_t i = 0; i < rows; i++) {
        float *row = s + i * ld;
        int64_t n = causal && i + 1 < cols ? i + 1 : cols;
        float mx = -INFINITY;
        int nan = 0;
        for (int64_t j = 0; j < n; j++) {
            if (row[j] > mx) mx = row[j];
            nan |= isnan(row[j]);
        }
        if (nan || mx == -INFINITY || mx == INFINITY) {
            memset(row, 0, (size_t)cols * sizeof(float));
            continue;
        }
        double sum = exp_shift_sum(row, row, n, mx);
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < n; j++) row[j] *= inv;
        if (n < cols) memset(row + n, 0, (size_t)(cols - n) * sizeof(float));
    }
}

/* out [N, d] = W_E[tok[n]] for n < N */
static void embed_fw(float *out, const int64_t *tok, const float *W_E, int64_t N, int64_t d) {
    for (int64_t n = 0; n < N; n++) memcpy(out + n * d, W_E + tok[n] * d, (size_t)d * sizeof(float));
}

/* out [B, P, d] = W_pos[pos_id(b, p)], with pos_id = p (no mask) or, with a padding mask,
 * cumsum(mask) - 1 clipped at 0 and the rows of padding positions set to 0 (TransformerLens's
 * PosEmbed with attention_mask) */
static void pos_fw(float *out, const float *W_pos, const uint8_t *mask, int64_t B, int64_t P, int64_t d) {
    for (int64_t b = 0; b < B; b++) {
        int64_t c = 0;
        for (int64_t p = 0; p < P; p++) {
            float *o = out + (b * P + p) * d;
            if (!mask) { memcpy(o, W_pos + p * d, (size_t)d * sizeof(float)); continue; }
            c += mask[b * P + p] != 0;
            if (!mask[b * P + p]) { memset(o, 0, (size_t)d * sizeof(float)); continue; }
            int64_t id = c - 1 < 0 ? 0 : c - 1;
            memcpy(o, W_pos + id * d, (size_t)d * sizeof(float));
        }
    }
}

/* cross-entropy over a block of rows: logits [n, V] (row r is position t0 + r of one batch row
 * with targets tgt, valid[t] = both t and t+1 unmasked). Writes nll[t] for t < P-1 and adds
 * to *sum / *count. */
static void xent_rows(float *nll, double *sum, int64_t *count, const float *logits, int64_t V,
                      const int64_t *tgt_next, const uint8_t *valid, int64_t n) {
    for (int64_t r = 0; r < n; r++) {
        const float *row = logits + r * V;
        float mx = -INFINITY;
        for (int64_t j = 0; j < V; j++) if (row[j] > mx) mx = row[j];
        double s = exp_sum(row, V, mx);
        double lp = row[tgt_next[r]] - mx - log(s);
        if (valid && !valid[r]) { nll[r] = 0.0f; continue; }
        nll[r] = (float)-lp;
        *sum += -lp;
        *count += 1;
    }
}

/* ================================================================ activation buffers */
typedef struct { mw_storage *s; int64_t cap; } mw_buf;

struct mw_run {
    mw_buf embed, pos;      /* [B,P,d] */
    mw_buf resid;           /* [B,P,d] resid_pre of the current block, then its resid_post */
    mw_buf resid_mid;       /* [B,P,d] */
    mw_buf ln_scale;        /* [B,P,1] ln1 / ln2 / ln_final (used one after the other) */
    mw_buf ln_out;          /* [B,P,d] */
    mw_buf qk_in;           /* [B,P,d] shortformer: normalized + pos, the input of Q and K */
    mw_buf q, k, v, z;      /* [B,P,H,dh] */
    mw_buf scores;          /* [B,H,P,P], only for layers whose scores or pattern is wanted */
    mw_buf block;           /* [P,P] scratch: one (b, h) block of scores otherwise */
    mw_buf result;          /* [B,P,H,d] (use_attn_result) */
    mw_buf attn_out;        /* [B,P,d] */
    mw_buf mlp_pre, mlp_post; /* [B,P,m] */
    mw_buf mlp_out;         /* [B,P,d] */
    mw_buf logit_rows;      /* [R,Vo] rows of logits when only the loss is wanted */
    mw_buf logits;          /* [B,P,Vo] storage of the last logits handed out (see logits_out) */
    int64_t *tok;           /* [B*P] token ids (copied from any i64 view) */
    uint8_t *mask;          /* [B*P] 1 = real token */
    uint8_t *valid;         /* [B*P] next-token prediction counted in the loss */
    int64_t tok_cap;
};

#define RUN_BUFS(X) X(embed) X(pos) X(resid) X(resid_mid) X(ln_scale) X(ln_out) X(qk_in) X(q) X(k) \
    X(v) X(z) X(scores) X(block) X(result) X(attn_out) X(mlp_pre) X(mlp_post) X(mlp_out) X(logit_rows) X(logits)

static void run_free(mw_run *r) {
    if (!r) return;
#define X(b) if (r->b.s) mw_storage_release(r->b.s);
    RUN_BUFS(X)
#undef X
    free(r->tok);
    free(r->mask);
    free(r->valid);
    free(r);
}

int64_t mw_model_buffer_bytes(const mw_model *m) {
    int64_t n = 0;
    if (!m->run) return 0;
#define X(b) n += m->run->b.cap * 4;
    RUN_BUFS(X)
#undef X
    return n;
}

void mw_model_trim(mw_model *m) {
    run_free(m->run);
    m->run = NULL;
}

/* grows b to hold n floats (never shrinks: steady state allocates nothing) */
static float *buf(mw_buf *b, int64_t n) {
    if (b->cap < n) {
        if (b->s) mw_storage_release(b->s);
        b->s = mw_storage_new(MW_F32, n);
        b->cap = b->s ? n : 0;
        if (!b->s) return NULL;
    }
    return (float *)b->s->data;
}

/* out = a new [B,P,Vo] tensor for the logits. Its storage is the previous call's when the caller
 * has released that (refcount 1: only the model still holds it): a steady-state loop that drops
 * its logits then reuses the same memory instead of faulting in hundreds of MB per call. */
static int logits_out(mw_run *r, mw_tensor *out, int64_t B, int64_t P, int64_t Vo) {
    int64_t n = B * P * Vo;
    if (!r->logits.s || r->logits.s->refcount != 1 || r->logits.cap < n) {
        if (r->logits.s) mw_storage_release(r->logits.s);
        r->logits.cap = 0;
        r->logits.s = mw_storage_new(MW_F32, n);
        if (!r->logits.s) return -1;
        r->logits.cap = n;
    }
    memset(out, 0, sizeof *out);
    mw_storage_retain(r->logits.s);
    out->storage = r->logits.s;
    out->dtype = MW_F32;
    out->ndim = 3;
    out->shape[0] = B; out->shape[1] = P; out->shape[2] = Vo;
    out->stride[0] = P * Vo; out->stride[1] = Vo; out->stride[2] = 1;
    return 0;
}

/* ================================================================ hook plumbing */
int mw_model_hook_exists(const mw_model *m, int id) {
    const mw_config *c = &m->cfg;
    int norm = c->normalization_type != MW_NORM_NONE;
    switch (id) {
    case MW_HOOK_LN1_SCALE: case MW_HOOK_LN1_NORMALIZED:
    case MW_HOOK_LNF_SCALE: case MW_HOOK_LNF_NORMALIZED:
        return norm;
    case MW_HOOK_LN2_SCALE: case MW_HOOK_LN2_NORMALIZED:
        return norm && !c->attn_only;
    case MW_HOOK_RESID_MID: case MW_HOOK_MLP_PRE: case MW_HOOK_MLP_POST: case MW_HOOK_MLP_OUT:
        return !c->attn_only;
    case MW_HOOK_RESULT:
        return c->use_attn_result;
    default:
        return id >= 0 && id < MW_HOOK_COUNT;
    }
}

int mw_model_hook_shape(const mw_model *m, int id, int64_t B, int64_t P, int64_t *s) {
    const mw_config *c = &m->cfg;
    switch (hook_info[id].kind) {
    case MW_HK_BPD: s[0] = B; s[1] = P; s[2] = c->d_model; return 3;
    case MW_HK_BP1: s[0] = B; s[1] = P; s[2] = 1; return 3;
    case MW_HK_BPHK: s[0] = B; s[1] = P; s[2] = c->n_heads; s[3] = c->d_head; return 4;
    case MW_HK_BHPP: s[0] = B; s[1] = c->n_heads; s[2] = P; s[3] = P; return 4;
    case MW_HK_BPHD: s[0] = B; s[1] = P; s[2] = c->n_heads; s[3] = c->d_model; return 4;
    case MW_HK_BPM: s[0] = B; s[1] = P; s[2] = c->d_mlp; return 3;
    }
    return 0;
}

typedef struct {
    mw_model *m;
    const mw_forward_opts *o;
    int64_t B, P;
} fwd_ctx;

static int wanted(const fwd_ctx *x, int id, int layer) {
    return x->o->want && x->o->deliver && mw_model_hook_exists(x->m, id) &&
           x->o->want[mw_hook_slot(x->m, id, layer)];
}

/* hands the buffer b (holding hook point id of layer `layer`) to deliver() as a borrowed view */
static int emit(const fwd_ctx *x, int id, int layer, mw_buf *b) {
    if (!wanted(x, id, layer)) return 0;
    mw_tensor t;
    memset(&t, 0, sizeof t);
    t.storage = b->s;
    t.dtype = MW_F32;
    t.ndim = mw_model_hook_shape(x->m, id, x->B, x->P, t.shape);
    int64_t st = 1;
    for (int i = t.ndim - 1; i >= 0; i--) { t.stride[i] = st; st *= t.shape[i]; }
    return x->o->deliver(x->o->ud, id, hook_info[id].stage == 1 ? layer : -1, &t) ? -1 : 0;
}

/* ================================================================ the forward pass */
void mw_forward_opts_default(mw_forward_opts *o, const mw_model *m) {
    memset(o, 0, sizeof *o);
    o->stop_at_layer = (int)m->cfg.n_layers;
    o->want_logits = 1;
}

void mw_forward_out_release(mw_forward_out *out) {
    mw_tensor_release(&out->logits);
    mw_tensor_release(&out->residual);
    mw_tensor_release(&out->loss_per_token);
    out->loss = 0;
}

#define TRY(e) do { if ((e) != 0) goto fail; } while (0)
#define NEED(p) do { if (!(p)) goto fail; } while (0)

/* layer norm of the [N, d] rows of in into r->ln_out, delivering scale and normalized */
static int layernorm(const fwd_ctx *x, const float *in, const float *w, const float *b, int id_scale,
                     int id_norm, int layer) {
    mw_run *r = x->m->run;
    int64_t N = x->B * x->P, d = x->m->cfg.d_model;
    float *out = buf(&r->ln_out, N * d), *scale = buf(&r->ln_scale, N);
    if (!out || !scale) return -1;
    ln_center_fw(out, scale, in, N, d, x->m->cfg.eps);
    if (emit(x, id_scale, layer, &r->ln_scale)) return -1;
    ln_apply_fw(out, scale, w, b, N, d);
    return emit(x, id_norm, layer, &r->ln_out);
}

/* one attention layer: reads its input (normalized resid, or resid) at `in`, the Q/K input at
 * qk_in (== in unless shortformer), writes r->attn_out */
static int attention(const fwd_ctx *x, int l, const float *in, const float *qkin) {
    mw_model *m = x->m;
    mw_run *r = m->run;
    const mw_config *c = &m->cfg;
    const mw_weights *w = &m->w;
    int64_t B = x->B, P = x->P, N = B * P, d = c->d_model, H = c->n_heads, dh = c->d_head, Hd = H * dh;
    float *q = buf(&r->q, N * Hd), *k = buf(&r->k, N * Hd), *v = buf(&r->v, N * Hd), *z = buf(&r->z, N * Hd);
    float *ao = buf(&r->attn_out, N * d);
    if (!q || !k || !v || !z || !ao) return -1;

    /* q, k, v [N, H*dh] = input [N, d] @ W_l [d, H*dh] + b_l [H*dh]: one sgemm each, the
     * stacked storage of W_Q/K/V being [L, d, H, dh] */
    const float *Wq = (const float *)w->W_Q.storage->data + (int64_t)l * d * Hd;
    const float *Wk = (const float *)w->W_K.storage->data + (int64_t)l * d * Hd;
    const float *Wv = (const float *)w->W_V.storage->data + (int64_t)l * d * Hd;
    const float *bq = (const float *)mw_tensor_data(&w->b_Q) + (int64_t)l * Hd;
    const float *bk = (const float *)mw_tensor_data(&w->b_K) + (int64_t)l * Hd;
    const float *bv = (const float *)mw_tensor_data(&w->b_V) + (int64_t)l * Hd;
    fill_rows(q, Hd, bq, N, Hd);
    matmul(q, Hd, qkin, d, Wq, Hd, N, Hd, d, 1.0f, 1.0f, 0);
    if (emit(x, MW_HOOK_Q, l, &r->q)) return -1;
    fill_rows(k, Hd, bk, N, Hd);
    matmul(k, Hd, qkin, d, Wk, Hd, N, Hd, d, 1.0f, 1.0f, 0);
    if (emit(x, MW_HOOK_K, l, &r->k)) return -1;
    fill_rows(v, Hd, bv, N, Hd);
    matmul(v, Hd, in, d, Wv, Hd, N, Hd, d, 1.0f, 1.0f, 0);
    if (emit(x, MW_HOOK_V, l, &r->v)) return -1;

    /* scores[b,h] [P,P] = q[b,:,h] [P,dh] (row stride H*dh) @ k[b,:,h]^T / attn_scale.
     * When a hook wants the scores or the pattern, the whole [B,H,P,P] is built and handed over
     * (edits then feed the softmax and z); otherwise each (b, h) block lives in a [P,P]
     * scratch only as long as it takes to make its part of z. */
    const uint8_t *mask = x->o->attention_mask ? r->mask : NULL;
    float alpha = c->use_attn_scale ? (float)(1.0 / c->attn_scale) : 1.0f;
    int full = wanted(x, MW_HOOK_ATTN_SCORES, l) || wanted(x, MW_HOOK_PATTERN, l);
    if (full) {
        float *S = buf(&r->scores, B * H * P * P);
        if (!S) return -1;
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++) {
                float *s = S + (b * H + h) * P * P;
                matmul(s, P, q + b * P * Hd + h * dh, Hd, k + b * P * Hd + h * dh, Hd, P, P, dh, alpha, 0.0f, 1);
                attn_mask_fw(s, P, P, mask ? mask + b * P : NULL);
            }
        if (emit(x, MW_HOOK_ATTN_SCORES, l, &r->scores)) return -1;
        int causal = !wanted(x, MW_HOOK_ATTN_SCORES, l); /* edited scores may unmask keys: full rows */
        for (int64_t bh = 0; bh < B * H; bh++) softmax_rows_fw(S + bh * P * P, P, P, P, causal);
        if (emit(x, MW_HOOK_PATTERN, l, &r->scores)) return -1;
        /* z[b,:,h] [P,dh] = pattern[b,h] [P,P] @ v[b,:,h] [P,dh] */
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++)
                matmul(z + b * P * Hd + h * dh, Hd, S + (b * H + h) * P * P, P, v + b * P * Hd + h * dh, Hd,
                       P, dh, P, 1.0f, 0.0f, 0);
    } else {
        float *s = buf(&r->block, P * P);
        if (!s) return -1;
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++) {
                matmul(s, P, q + b * P * Hd + h * dh, Hd, k + b * P * Hd + h * dh, Hd, P, P, dh, alpha, 0.0f, 1);
                attn_mask_fw(s, P, P, mask ? mask + b * P : NULL);
                softmax_rows_fw(s, P, P, P, 1);
                matmul(z + b * P * Hd + h * dh, Hd, s, P, v + b * P * Hd + h * dh, Hd, P, dh, P, 1.0f, 0.0f, 0);
            }
    }
    if (emit(x, MW_HOOK_Z, l, &r->z)) return -1;

    const float *Wo = (const float *)mw_tensor_data(&w->W_O) + (int64_t)l * Hd * d;
    const float *bo = (const float *)mw_tensor_data(&w->b_O) + (int64_t)l * d;
    if (c->use_attn_result) {
        /* result[:, h] [N, d] (row stride H*d) = z[:, h] [N, dh] @ W_O[l, h] [dh, d]; no bias */
        float *res = buf(&r->result, N * H * d);
        if (!res) return -1;
        for (int64_t h = 0; h < H; h++)
            matmul(res + h * d, H * d, z + h * dh, Hd, Wo + h * dh * d, d, N, d, dh, 1.0f, 0.0f, 0);
        if (emit(x, MW_HOOK_RESULT, l, &r->result)) return -1;
        /* attn_out [N, d] = sum_h result[:, h] + b_O */
        for (int64_t n = 0; n < N; n++) {
            float *o = ao + n * d;
            memcpy(o, bo, (size_t)d * sizeof(float));
            for (int64_t h = 0; h < H; h++) {
                const float *rr = res + (n * H + h) * d;
                for (int64_t j = 0; j < d; j++) o[j] += rr[j];
            }
        }
    } else {
        /* attn_out [N, d] = z [N, H*dh] @ W_O[l] [H*dh, d] + b_O */
        fill_rows(ao, d, bo, N, d);
        matmul(ao, d, z, Hd, Wo, d, N, d, Hd, 1.0f, 1.0f, 0);
    }
    return emit(x, MW_HOOK_ATTN_OUT, l, &r->attn_out);
}

/* one MLP: in [N, d] -> r->mlp_out [N, d] */
static int mlp(const fwd_ctx *x, int l, const float *in) {
    mw_model *m = x->m;
    mw_run *r = m->run;
    const mw_config *c = &m->cfg;
    int64_t N = x->B * x->P, d = c->d_model, M = c->d_mlp;
    float *pre = buf(&r->mlp_pre, N * M), *post = buf(&r->mlp_post, N * M), *out = buf(&r->mlp_out, N * d);
    if (!pre || !post || !out) return -1;
    const float *Win = (const float *)mw_tensor_data(&m->w.W_in) + (int64_t)l * d * M;
    const float *bin = (const float *)mw_tensor_data(&m->w.b_in) + (int64_t)l * M;
    const float *Wout = (const float *)mw_tensor_data(&m->w.W_out) + (int64_t)l * M * d;
    const float *bout = (const float *)mw_tensor_data(&m->w.b_out) + (int64_t)l * d;
    /* pre [N, m] = in [N, d] @ W_in [d, m] + b_in */
    fill_rows(pre, M, bin, N, M);
    matmul(pre, M, in, d, Win, M, N, M, d, 1.0f, 1.0f, 0);
    if (emit(x, MW_HOOK_MLP_PRE, l, &r->mlp_pre)) return -1;
    act_fw(post, pre, N * M, c->act_fn);
    if (emit(x, MW_HOOK_MLP_POST, l, &r->mlp_post)) return -1;
    /* out [N, d] = post [N, m] @ W_out [m, d] + b_out */
    fill_rows(out, d, bout, N, d);
    matmul(out, d, post, M, Wout, d, N, d, M, 1.0f, 1.0f, 0);
    return emit(x, MW_HOOK_MLP_OUT, l, &r->mlp_out);
}

static const float *ln_w(const mw_model *m, const mw_tensor *t, int l) {
    if (m->cfg.normalization_type != MW_NORM_LN) return NULL;
    return (const float *)mw_tensor_data(t) + (l >= 0 ? (int64_t)l * m->cfg.d_model : 0);
}

/* reads [B, P] tokens / mask of any dtype and layout into the run's arrays */
static int read_inputs(fwd_ctx *x) {
    mw_model *m = x->m;
    mw_run *r = m->run;
    const mw_forward_opts *o = x->o;
    int64_t n = x->B * x->P;
    if (r->tok_cap < n) {
        free(r->tok); free(r->mask); free(r->valid);
        r->tok = malloc((size_t)n * sizeof(int64_t));
        r->mask = malloc((size_t)n);
        r->valid = malloc((size_t)n);
        r->tok_cap = (r->tok && r->mask && r->valid) ? n : 0;
        if (!r->tok_cap) return mw_seterr("forward: out of memory");
    }
    int64_t idx[2];
    for (idx[0] = 0; idx[0] < x->B; idx[0]++)
        for (idx[1] = 0; idx[1] < x->P; idx[1]++) {
            int64_t i = idx[0] * x->P + idx[1];
            if (o->tokens) {
                int64_t t = (int64_t)mw_tensor_get(o->tokens, idx);
                if (t < 0 || t >= m->cfg.d_vocab)
                    return mw_seterr("forward: token %lld at [%lld,%lld] is out of range [0, %lld)", (long long)t,
                                     (long long)idx[0], (long long)idx[1], (long long)m->cfg.d_vocab);
                r->tok[i] = t;
            }
            r->mask[i] = o->attention_mask ? mw_tensor_get(o->attention_mask, idx) != 0 : 1;
        }
    return 0;
}

int mw_model_forward(mw_model *m, const mw_forward_opts *o, mw_forward_out *out) {
    memset(out, 0, sizeof *out);
    const mw_config *c = &m->cfg;
    int L = (int)c->n_layers;
    int start = o->start_at_layer < 0 ? o->start_at_layer + L : o->start_at_layer;
    int stop = o->stop_at_layer < 0 ? o->stop_at_layer + L : o->stop_at_layer;
    if (start < 0 || start > L) return mw_seterr("forward: start_at_layer %d out of range for %d layers", o->start_at_layer, L);
    if (stop < start || stop > L)
        return mw_seterr("forward: stop_at_layer %d out of range (start_at_layer %d, %d layers)", o->stop_at_layer, start, L);
    int64_t B, P;
    char s1[256], s2[256];
    if (o->tokens) {
        if (o->tokens->ndim != 2 || o->tokens->dtype != MW_I64)
            return mw_seterr("forward: tokens must be int64 [batch, pos], got %s %s",
                             mw_dtype_name(o->tokens->dtype), mw_tensor_shape_str(s1, sizeof s1, o->tokens));
        B = o->tokens->shape[0];
        P = o->tokens->shape[1];
    } else if (start > 0 && o->residual) {
        B = o->residual->shape[0];
        P = o->residual->shape[1];
    } else {
        return mw_seterr("forward: no tokens given (start_at_layer > 0 needs a residual)");
    }
    if (start > 0) {
        if (!o->residual) return mw_seterr("forward: start_at_layer %d needs a residual stream [batch, pos, d_model]", start);
        if (o->residual->ndim != 3 || o->residual->shape[0] != B || o->residual->shape[1] != P ||
            o->residual->shape[2] != c->d_model)
            return mw_seterr("forward: residual %s does not match [%lld,%lld,%lld]",
                             mw_tensor_shape_str(s1, sizeof s1, o->residual), (long long)B, (long long)P,
                             (long long)c->d_model);
    }
    if (B <= 0 || P <= 0) return mw_seterr("forward: empty input [%lld,%lld]", (long long)B, (long long)P);
    if (P > c->n_ctx) return mw_seterr("forward: %lld positions exceed n_ctx %lld", (long long)P, (long long)c->n_ctx);
    if (o->attention_mask) {
        const mw_tensor *am = o->attention_mask;
        if (am->ndim != 2 || am->shape[0] != B || am->shape[1] != P)
            return mw_seterr("forward: attention_mask %s does not match tokens [%lld,%lld]",
                             mw_tensor_shape_str(s2, sizeof s2, am), (long long)B, (long long)P);
    }
    int to_end = stop == L && !o->return_residual;
    int want_loss = o->want_loss && to_end;
    if (want_loss && !o->tokens) return mw_seterr("forward: the loss needs tokens");
    if (want_loss && P < 2) return mw_seterr("forward: the loss needs at least 2 positions");

    if (!m->run) {
        m->run = calloc(1, sizeof *m->run);
        if (!m->run) return mw_seterr("forward: out of memory");
    }
    mw_run *r = m->run;
    fwd_ctx xc = {m, o, B, P}, *x = &xc;
    int64_t N = B * P, d = c->d_model;
    const mw_weights *w = &m->w;
    int shortformer = c->positional_embedding_type == MW_POS_SHORTFORMER;
    TRY(read_inputs(x));

    float *resid = buf(&r->resid, N * d), *pos = NULL;
    NEED(resid);
    if (start == 0) {
        /* embed [N, d] = W_E[tokens]; pos [N, d] = W_pos[positions] */
        float *emb = buf(&r->embed, N * d);
        pos = buf(&r->pos, N * d);
        NEED(emb && pos);
        embed_fw(emb, r->tok, mw_tensor_data(&w->W_E), N, d);
        TRY(emit(x, MW_HOOK_EMBED, -1, &r->embed));
        pos_fw(pos, mw_tensor_data(&w->W_pos), o->attention_mask ? r->mask : NULL, B, P, d);
        TRY(emit(x, MW_HOOK_POS_EMBED, -1, &r->pos));
        /* standard: the residual stream starts as embed + pos; shortformer: embed alone, pos
         * joins the Q and K inputs of every block */
        if (shortformer) memcpy(resid, emb, (size_t)(N * d) * sizeof(float));
        else add_fw(resid, emb, pos, N * d);
    } else {
        mw_tensor rv;
        memset(&rv, 0, sizeof rv);
        rv.storage = r->resid.s;
        rv.dtype = MW_F32;
        rv.ndim = 3;
        rv.shape[0] = B; rv.shape[1] = P; rv.shape[2] = d;
        rv.stride[0] = P * d; rv.stride[1] = d; rv.stride[2] = 1;
        TRY(mw_tensor_copy_(&rv, o->residual));
        if (shortformer) {
            /* no embedding ran: positions 0..P-1 (or from the mask) feed Q and K */
            pos = buf(&r->pos, N * d);
            NEED(pos);
            pos_fw(pos, mw_tensor_data(&w->W_pos), o->attention_mask ? r->mask : NULL, B, P, d);
        }
    }

    for (int l = start; l < stop; l++) {
        TRY(emit(x, MW_HOOK_RESID_PRE, l, &r->resid));
        const float *in = resid;
        if (c->normalization_type != MW_NORM_NONE) {
            TRY(layernorm(x, resid, ln_w(m, &w->ln1_w, l), ln_w(m, &w->ln1_b, l), MW_HOOK_LN1_SCALE,
                          MW_HOOK_LN1_NORMALIZED, l));
            in = r->ln_out.s->data;
        }
        const float *qkin = in;
        if (shortformer) {
            float *qi = buf(&r->qk_in, N * d);
            NEED(qi);
            add_fw(qi, in, pos, N * d);
            qkin = qi;
        }
        TRY(attention(x, l, in, qkin));
        const float *ao = r->attn_out.s->data;
        if (c->attn_only) {
            add_fw(resid, resid, ao, N * d); /* resid_post, in place of resid_pre */
        } else {
            float *mid = buf(&r->resid_mid, N * d);
            NEED(mid);
            add_fw(mid, resid, ao, N * d);
            TRY(emit(x, MW_HOOK_RESID_MID, l, &r->resid_mid));
            const float *min = mid;
            if (c->normalization_type != MW_NORM_NONE) {
                TRY(layernorm(x, mid, ln_w(m, &w->ln2_w, l), ln_w(m, &w->ln2_b, l), MW_HOOK_LN2_SCALE,
                              MW_HOOK_LN2_NORMALIZED, l));
                min = r->ln_out.s->data;
            }
            TRY(mlp(x, l, min));
            add_fw(resid, mid, r->mlp_out.s->data, N * d);
        }
        TRY(emit(x, MW_HOOK_RESID_POST, l, &r->resid));
    }

    if (!to_end) {
        int64_t sh[3] = {B, P, d};
        TRY(mw_tensor_empty(&out->residual, MW_F32, 3, sh));
        memcpy(mw_tensor_data(&out->residual), resid, (size_t)(N * d) * sizeof(float));
        return 0;
    }
    const float *fin = resid;
    if (c->normalization_type != MW_NORM_NONE) {
        TRY(layernorm(x, resid, ln_w(m, &w->ln_final_w, -1), ln_w(m, &w->ln_final_b, -1), MW_HOOK_LNF_SCALE,
                      MW_HOOK_LNF_NORMALIZED, -1));
        fin = r->ln_out.s->data;
    }
    if (!o->want_logits && !want_loss) return 0;

    /* logits [N, Vo] = fin [N, d] @ W_U [d, Vo] + b_U */
    int64_t Vo = c->d_vocab_out;
    const float *WU = mw_tensor_data(&w->W_U), *bU = mw_tensor_data(&w->b_U);
    if (want_loss) {
        int64_t sh[2] = {B, P - 1};
        TRY(mw_tensor_empty(&out->loss_per_token, MW_F32, 2, sh));
        if (c->d_vocab_out != c->d_vocab) {
            /* targets index the output vocabulary */
            for (int64_t i = 0; i < N; i++)
                if (r->tok[i] >= Vo) { mw_seterr("forward: loss: token %lld >= d_vocab_out %lld", (long long)r->tok[i], (long long)Vo); goto fail; }
        }
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t + 1 < P; t++)
                r->valid[b * P + t] = r->mask[b * P + t] && r->mask[b * P + t + 1];
    }
    double lsum = 0;
    int64_t lcount = 0;
    float *nll = want_loss ? mw_tensor_data(&out->loss_per_token) : NULL;
    if (o->want_logits) {
        int64_t sh[3] = {B, P, Vo};
        (void)sh;
        TRY(logits_out(r, &out->logits, B, P, Vo));
        float *lg = mw_tensor_data(&out->logits);
        fill_rows(lg, Vo, bU, N, Vo);
        matmul(lg, Vo, fin, d, WU, Vo, N, Vo, d, 1.0f, 1.0f, 0);
        if (want_loss)
            for (int64_t b = 0; b < B; b++)
                xent_rows(nll + b * (P - 1), &lsum, &lcount, lg + b * P * Vo, Vo, r->tok + b * P + 1,
                          r->valid + b * P, P - 1);
    } else {
        /* loss only: the logits go through a small reused block of rows, never [B,P,Vo] whole */
        const int64_t R = 64;
        float *rows = buf(&r->logit_rows, R * Vo);
        NEED(rows);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t0 = 0; t0 < P - 1; t0 += R) {
                int64_t n = P - 1 - t0 < R ? P - 1 - t0 : R;
                fill_rows(rows, Vo, bU, n, Vo);
                matmul(rows, Vo, fin + (b * P + t0) * d, d, WU, Vo, n, Vo, d, 1.0f, 1.0f, 0);
                xent_rows(nll + b * (P - 1) + t0, &lsum, &lcount, rows, Vo, r->tok + b * P + t0 + 1,
                          r->valid + b * P + t0, n);
            }
    }
    if (want_loss) out->loss = lcount ? lsum / (double)lcount : NAN;
    return 0;
fail:
    mw_forward_out_release(out);
    return -1;
}
