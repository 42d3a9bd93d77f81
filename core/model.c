/* model.c - the HookedTransformer forward pass (see model.h for the scope, the dimension legend
 * B P d H dh m L V Vo C, and the weight layout).
 *
 * Layout of this file: hook tables (from hooks.def) -> config -> weights (creation, state-dict
 * names) -> kernels (free functions over raw float pointers, output first, each opened by the
 * shapes it works on; every matrix product goes to cblas_sgemm) -> activation buffers -> the
 * forward pass, which reads as the TransformerLens module tree does.
 */
#include "model.h"

#include "kernels.h"
#include "parallel.h"

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
_Static_assert(MW_HOOK_COUNT == 28, "hooks.def lists 28 hook points: a new one needs its cases below");

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

/* TransformerLens's GroupedQueryAttention keeps the key/value weights as _W_K, _W_V, _b_K, _b_V */
const char *mw_model_param_name(const mw_model *m, int pid) {
    if (m->cfg.n_key_value_heads > 0) switch (pid) {
        case MW_PARAM_W_K: return "attn._W_K";
        case MW_PARAM_W_V: return "attn._W_V";
        case MW_PARAM_b_K: return "attn._b_K";
        case MW_PARAM_b_V: return "attn._b_V";
        default: break;
        }
    return mw_param_name(pid);
}

mw_tensor *mw_weights_param(mw_weights *w, int pid) {
    switch (pid) {
#define MW_X(field, name, per_block, d0, d1, d2) case MW_PARAM_##field: return &w->field;
        MW_PARAMS(MW_X)
#undef MW_X
    }
    return NULL;
}

int mw_model_param_exists(const mw_model *m, int pid) {
    const mw_config *c = &m->cfg;
    int ln = c->normalization_type == MW_NORM_LN, rms = c->normalization_type == MW_NORM_RMS;
    switch (pid) {
    case MW_PARAM_ln1_w: case MW_PARAM_ln_final_w: return ln || rms;
    case MW_PARAM_ln1_b: case MW_PARAM_ln_final_b: return ln;   /* RMSNorm has no bias */
    case MW_PARAM_ln2_w: return (ln || rms) && !c->attn_only;
    case MW_PARAM_ln2_b: return ln && !c->attn_only;
    case MW_PARAM_W_in: case MW_PARAM_b_in: case MW_PARAM_W_out: case MW_PARAM_b_out:
        return !c->attn_only;
    case MW_PARAM_W_gate: return !c->attn_only && c->gated_mlp;
    case MW_PARAM_mlp_ln_w: case MW_PARAM_mlp_ln_b:   /* solu_ln's LayerNorm; LNPre unless "LN" */
        return !c->attn_only && c->act_fn == MW_ACT_SOLU_LN && ln;
    case MW_PARAM_W_pos: return c->positional_embedding_type != MW_POS_ROTARY;
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
    case MW_DIM_KVH: return c->n_key_value_heads > 0 ? c->n_key_value_heads : c->n_heads;
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

/* numel of one stacked parameter (0 when the config has no such parameter) */
int64_t mw_model_param_numel(const mw_model *m, int pid) {
    if (!mw_model_param_exists(m, pid)) return 0;
    int64_t shape[3], n = param_info[pid].per_block ? m->cfg.n_layers : 1;
    int nd = mw_model_param_shape(m, pid, shape);
    for (int i = 0; i < nd; i++) n *= shape[i];
    return n;
}

int64_t mw_model_param_offset(const mw_model *m, int pid) {
    int64_t off = 0;
    for (int i = 0; i < pid; i++) off += mw_model_param_numel(m, i);
    return off;
}

int64_t mw_model_nparams(const mw_model *m) { return mw_model_param_offset(m, MW_PARAM_COUNT); }

/* one stacked parameter as a view of s at its offset: storage [L, d, H, dh] + permuted header
 * for W_Q/K/V, contiguous [L, ...] for other per-block params, the plain shape for global ones */
static int param_view(mw_tensor *t, const mw_model *m, int pid, mw_storage *s, int64_t off) {
    const mw_config *c = &m->cfg;
    mw_tensor raw;
    memset(&raw, 0, sizeof raw);
    memset(t, 0, sizeof *t);
    raw.storage = s;
    raw.dtype = MW_F32;
    raw.offset = off;
    if (param_info[pid].per_block) raw.shape[raw.ndim++] = c->n_layers;
    if (is_qkv(pid)) {
        raw.shape[raw.ndim++] = c->d_model;
        raw.shape[raw.ndim++] = dim_size(c, param_info[pid].dims[0]);
        raw.shape[raw.ndim++] = c->d_head;
    } else {
        raw.ndim += mw_model_param_shape(m, pid, raw.shape + raw.ndim);
    }
    int64_t st = 1;
    for (int i = raw.ndim - 1; i >= 0; i--) { raw.stride[i] = st; st *= raw.shape[i]; }
    if (!is_qkv(pid)) {
        mw_storage_retain(s);
        *t = raw;
        return 0;
    }
    const int perm[4] = {0, 2, 1, 3};
    return mw_tensor_permute(t, &raw, perm);
}

int mw_weights_over(mw_weights *w, const mw_model *m, mw_storage *s) {
    memset(w, 0, sizeof *w);
    if (s->dtype != MW_F32 || s->numel < mw_model_nparams(m))
        return mw_seterr("weights: a buffer of %lld floats cannot hold the %lld parameters", (long long)s->numel,
                         (long long)mw_model_nparams(m));
    int64_t off = 0;
    for (int pid = 0; pid < MW_PARAM_COUNT; pid++) {
        if (!mw_model_param_exists(m, pid)) continue;
        if (param_view(mw_weights_param(w, pid), m, pid, s, off)) {
            mw_weights_release(w);
            return -1;
        }
        off += mw_model_param_numel(m, pid);
    }
    return 0;
}

void mw_weights_release(mw_weights *w) {
    for (int pid = 0; pid < MW_PARAM_COUNT; pid++) mw_tensor_release(mw_weights_param(w, pid));
}

float *mw_model_flat(const mw_model *m, int64_t *n) {
    *n = mw_model_nparams(m);
    return (float *)m->w.W_E.storage->data;
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
    /* every parameter is a view of one flat buffer (llm.c's params buffer): an optimizer is one
     * loop over it, and gradients / moments are buffers of the same layout (mw_weights_over) */
    mw_storage *s = mw_storage_new(MW_F32, mw_model_nparams(m));
    if (!s) { free(m); return NULL; }
    int rc = mw_weights_over(&m->w, m, s);
    mw_storage_release(s);
    if (rc) { free(m); return NULL; }
    /* the counter-based normal stream (rng.c) keyed by the seed, or by the next word of the
     * default generator (mi.manual_seed) when the config has none */
    uint64_t key = m->cfg.seed >= 0 ? (uint64_t)m->cfg.seed : mw_rng_next(mw_rng_default());
    float *flat = (float *)s->data;
    for (int pid = 0; pid < MW_PARAM_COUNT; pid++) {
        /* TransformerLens init_weights: normal(std = initializer_range) for names with "W_",
         * LayerNorm weights 1, every bias 0. Element i of the flat buffer is number i of the
         * stream, so each parameter's numbers depend only on the seed and its offset. */
        int64_t off = mw_model_param_offset(m, pid);
        float *p = flat + off;
        int64_t n = mw_model_param_numel(m, pid);
        if (param_info[pid].name[0] == 'W' || strstr(param_info[pid].name, ".W_")) {
            mw_fill_normal(p, n, key, (uint64_t)off, 0.0, m->cfg.initializer_range);
        } else if (pid == MW_PARAM_ln1_w || pid == MW_PARAM_ln2_w || pid == MW_PARAM_ln_final_w || pid == MW_PARAM_mlp_ln_w) {
            for (int64_t i = 0; i < n; i++) p[i] = 1.0f;
        }
    }
    return m;
}

static void run_free(mw_run *r);

void mw_model_free(mw_model *m) {
    if (!m) return;
    mw_weights_release(&m->w);
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
        if (param_info[i].per_block != (l >= 0) || strcmp(rest, mw_model_param_name(m, i)) != 0) continue;
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
    mw_tensor *t = mw_weights_param((mw_weights *)&m->w, pid);
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

/* ================================================================ activation buffers */
typedef struct { mw_storage *s; int64_t cap; } mw_buf;

/* The activations of one block. Inference reuses one set for every block (resid is resid_pre,
 * then resid_post in place; ln2 and ln_final use the ln1 buffers). A training forward
 * (keep_activations) keeps one set per block for the backward pass, plus one after the last
 * block whose resid is the final residual and whose ln1_* are ln_final's. Inference after training
 * uses the first set (the others stay allocated until mw_model_trim). */
typedef struct {
    mw_buf resid;                          /* [B,P,d] resid_pre */
    mw_buf ln1_scale, ln1_mean, ln1_out;   /* [B,P,1], [B,P], [B,P,d] */
    mw_buf qk_in;                          /* [B,P,d] shortformer: normalized + pos, input of Q and K */
    mw_buf q, k, v, z;                     /* [B,P,H,dh] */
    mw_buf scores;                         /* [B,H,P,P] the pattern (training, or scores/pattern hooked) */
    mw_buf result;                         /* [B,P,H,d] (use_attn_result) */
    mw_buf attn_out;                       /* [B,P,d] */
    mw_buf resid_mid;                      /* [B,P,d] */
    mw_buf ln2_scale, ln2_mean, ln2_out;   /* as ln1 (training only) */
    mw_buf mlp_pre, mlp_post, mlp_out;     /* [B,P,m], [B,P,m], [B,P,d] */
    mw_buf mlp_lin;                        /* [B,P,m] gated MLP: pre_linear */
    mw_buf mlp_mid, mlp_ln_scale, mlp_ln_mean; /* solu_ln: solu(pre) [B,P,m], its LayerNorm's [B,P] */
    int causal;                            /* the softmax read keys <= query only (scores not hooked) */
} mw_acts;

#define ACT_BUFS(X) X(resid) X(ln1_scale) X(ln1_mean) X(ln1_out) X(qk_in) X(q) X(k) X(v) X(z) X(scores) \
    X(result) X(attn_out) X(resid_mid) X(ln2_scale) X(ln2_mean) X(ln2_out) X(mlp_pre) X(mlp_post) X(mlp_out) X(mlp_lin) \
    X(mlp_mid) X(mlp_ln_scale) X(mlp_ln_mean)

/* gradients of the backward pass, each [B,P,...] like its activation, reused across blocks */
#define GRAD_BUFS(X) X(g_resid) X(g_norm) X(g_copy) X(g_q) X(g_k) X(g_v) X(g_z) X(g_mlp) X(g_scores) X(g_block) \
    X(g_scale) X(g_lin) X(g_post) X(g_mid) X(g_result) X(g_pos)

struct mw_run {
    mw_acts *acts;          /* [nacts]: 1 for inference, n_layers + 1 after a training forward */
    int nacts;
    mw_buf embed, pos;      /* [B,P,d] */
    mw_buf block;           /* [P,P] scratch: one (b, h) block of scores */
    mw_buf logit_rows;      /* [R,Vo] rows of logits when only the loss is wanted */
    mw_buf loss_in;         /* [R,d] the final residual rows they come from */
    mw_buf logits;          /* [B,P,Vo] storage of the last logits handed out (see logits_out) */
    mw_buf head;            /* [B,P,Vo] training: the logits, then softmax(logits) once the loss ran */
#define X(b) mw_buf b;
    GRAD_BUFS(X)
#undef X
    int64_t *tok;           /* [B*P] token ids (copied from any i64 view) */
    uint8_t *mask;          /* [B*P] 1 = real token */
    int64_t *posid;         /* [B*P] position ids (position_ids), -1 = padding */
    uint8_t *valid;         /* [B*P] next-token prediction counted in the loss */
    struct xent_row *xr;    /* [B*P] the loss's predicting rows (xent_rows) */
    int64_t tok_cap;
    /* what the last forward kept for mw_model_backward */
    int saved;              /* 1 after a full training forward */
    int have_probs;         /* head holds probabilities (the loss was computed) */
    int64_t B, P, count;    /* batch, positions, predictions counted in the loss */
};

#define RUN_BUFS(X) X(embed) X(pos) X(block) X(logit_rows) X(loss_in) X(logits) X(head) GRAD_BUFS(X)

static void buf_free(mw_buf *b) {
    if (b->s) mw_storage_release(b->s);
    b->s = NULL;
    b->cap = 0;
}

static void acts_free(mw_run *r) {
    for (int i = 0; i < r->nacts; i++) {
#define X(b) buf_free(&r->acts[i].b);
        ACT_BUFS(X)
#undef X
    }
    free(r->acts);
    r->acts = NULL;
    r->nacts = 0;
}

static void run_free(mw_run *r) {
    if (!r) return;
    acts_free(r);
#define X(b) buf_free(&r->b);
    RUN_BUFS(X)
#undef X
    free(r->tok);
    free(r->mask);
    free(r->posid);
    free(r->valid);
    free(r->xr);
    free(r);
}

int64_t mw_model_buffer_bytes(const mw_model *m) {
    int64_t n = 0;
    const mw_run *r = m->run;
    if (!r) return 0;
#define X(b) n += r->b.cap * 4;
    RUN_BUFS(X)
#undef X
    for (int i = 0; i < r->nacts; i++) {
#define X(b) n += r->acts[i].b.cap * 4;
        ACT_BUFS(X)
#undef X
    }
    return n;
}

void mw_model_trim(mw_model *m) {
    run_free(m->run);
    m->run = NULL;
}

/* grows b to hold n floats (never shrinks: steady state allocates nothing) */
static float *buf(mw_buf *b, int64_t n) {
    if (b->cap < n) {
        buf_free(b);
        b->s = mw_storage_new(MW_F32, n);
        b->cap = b->s ? n : 0;
        if (!b->s) return NULL;
    }
    return (float *)b->s->data;
}

static float *data(const mw_buf *b) { return (float *)b->s->data; }

/* t = a contiguous [B, P, C] view of b (no reference taken: valid while b is) */
static void buf_view3(mw_tensor *t, const mw_buf *b, int64_t B, int64_t P, int64_t C) {
    memset(t, 0, sizeof *t);
    t->storage = b->s;
    t->dtype = MW_F32;
    t->ndim = 3;
    t->shape[0] = B; t->shape[1] = P; t->shape[2] = C;
    t->stride[0] = P * C; t->stride[1] = C; t->stride[2] = 1;
}

/* out = a new [B,P,Vo] tensor for the logits. Its storage is the previous call's when the caller
 * has released that (refcount 1: only the model still holds it): a steady-state loop that drops
 * its logits then reuses the same memory instead of faulting in hundreds of MB per call. */
static int logits_out(mw_run *r, mw_tensor *out, int64_t B, int64_t P, int64_t Vo) {
    int64_t n = B * P * Vo;
    if (!r->logits.s || r->logits.s->refcount != 1 || r->logits.cap < n) {
        buf_free(&r->logits);
        r->logits.s = mw_storage_new(MW_F32, n);
        if (!r->logits.s) return -1;
        r->logits.cap = n;
    }
    buf_view3(out, &r->logits, B, P, Vo);
    mw_storage_retain(r->logits.s);
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
    case MW_HOOK_RESID_MID:
        return !c->attn_only && !c->parallel_attn_mlp;
    case MW_HOOK_MLP_PRE: case MW_HOOK_MLP_POST: case MW_HOOK_MLP_OUT:
        return !c->attn_only;
    case MW_HOOK_MLP_PRE_LINEAR:
        return !c->attn_only && c->gated_mlp;
    case MW_HOOK_MLP_MID: case MW_HOOK_MLP_LN_SCALE: case MW_HOOK_MLP_LN_NORMALIZED:
        return !c->attn_only && c->act_fn == MW_ACT_SOLU_LN;
    case MW_HOOK_ROT_Q: case MW_HOOK_ROT_K:
        return c->positional_embedding_type == MW_POS_ROTARY;
    case MW_HOOK_POS_EMBED:
        return c->positional_embedding_type != MW_POS_ROTARY;
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
    case MW_HK_BPGK: s[0] = B; s[1] = P; s[2] = dim_size(c, MW_DIM_KVH); s[3] = c->d_head; return 4;
    }
    return 0;
}

/* one pass (forward or backward): the model, the shape, and who wants which hook point */
typedef struct {
    mw_model *m;
    int64_t B, P;
    int train;                 /* keep one mw_acts per block */
    const uint8_t *want;
    mw_deliver_fn deliver;
    void *ud;
    mw_kv_cache *kv;           /* generation: keys and values of earlier positions (NULL: none) */
    int64_t Pk;                /* key positions the attention reads (P, or kv->len + P) */
} pass_ctx;

static int wanted(const pass_ctx *x, int id, int layer) {
    return x->want && x->deliver && mw_model_hook_exists(x->m, id) && x->want[mw_hook_slot(x->m, id, layer)];
}

/* hands the buffer b (holding hook point id of layer `layer`, or its gradient) to deliver() as a
 * borrowed view */
static int emit(const pass_ctx *x, int id, int layer, mw_buf *b) {
    if (!wanted(x, id, layer)) return 0;
    mw_tensor t;
    memset(&t, 0, sizeof t);
    t.storage = b->s;
    t.dtype = MW_F32;
    t.ndim = mw_model_hook_shape(x->m, id, x->B, x->P, t.shape);
    if (hook_info[id].kind == MW_HK_BHPP && x->Pk) t.shape[3] = x->Pk; /* [B,H,P,Pk] with a kv cache */
    int64_t st = 1;
    for (int i = t.ndim - 1; i >= 0; i--) { t.stride[i] = st; st *= t.shape[i]; }
    return x->deliver(x->ud, id, hook_info[id].stage == 1 ? layer : -1, &t) ? -1 : 0;
}

/* the activations block l uses (l == n_layers: the slot after the last block) */
static mw_acts *acts_of(const pass_ctx *x, int l) { return x->m->run->acts + (x->train ? l : 0); }

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

/* pointer to layer l's slice of a stacked parameter (l < 0: a global one); NULL when absent */
static float *pw(const mw_tensor *t, int64_t per_layer, int l) {
    if (!t->storage) return NULL;
    return (float *)mw_tensor_data(t) + (l >= 0 ? (int64_t)l * per_layer : 0);
}

/* ---------------------------------------------------------------- both cores
 * The work between matrix products runs in pieces on mw_parallel_for's threads (parallel.h): over
 * rows (LayerNorm, activations, the residual stream's additions, the sum of use_attn_result's
 * per-head results) or over (batch, head) blocks of attention. Every piece computes
 * whole rows or blocks exactly as one thread would, so the numbers do not depend on the thread
 * count. Grains keep pieces above ~64k floats of work, so small inputs stay on one thread. */
typedef struct {
    int op;
    float *out, *s, *mu;
    const float *in, *w, *b, *b2;
    int64_t C, heads;
    double eps;
    mw_actfn fn;
} rows_ctx;
enum { ROWS_LN_CENTER, ROWS_LN_APPLY, ROWS_RMS_SCALE, ROWS_SCALE, ROWS_ACT, ROWS_GATE, ROWS_ADD, ROWS_HEAD_SUM };

static void rows_piece(void *vc, int64_t lo, int64_t hi, int tid) {
    (void)tid;
    const rows_ctx *c = vc;
    int64_t n = hi - lo, C = c->C;
    switch (c->op) {
    case ROWS_LN_CENTER:
        mw_layernorm_center_forward(c->out + lo * C, c->s + lo, c->mu ? c->mu + lo : NULL, c->in + lo * C, n, C, c->eps);
        break;
    case ROWS_LN_APPLY: mw_layernorm_apply_forward(c->out + lo * C, c->s + lo, c->w, c->b, n, C); break;
    case ROWS_RMS_SCALE: mw_rmsnorm_scale_forward(c->out + lo * C, c->s + lo, c->in + lo * C, n, C, c->eps); break;
    case ROWS_SCALE: mw_scale_rows_forward(c->out + lo * C, c->w, n, C); break;
    case ROWS_ACT: mw_act_forward(c->out + lo, c->in + lo, n, c->fn); break;        /* C = 1: elements */
    case ROWS_GATE: mw_gate_forward(c->out + lo, c->in + lo, c->b2 + lo, n, c->fn); break;
    case ROWS_ADD: mw_add_forward(c->out + lo, c->in + lo, c->b2 + lo, n); break; /* C = 1: elements */
    case ROWS_HEAD_SUM: /* out [N, C] += in [N, heads, C] summed over the heads, in order */
        for (int64_t i = lo; i < hi; i++)
            for (int64_t h = 0; h < c->heads; h++)
                mw_add_forward(c->out + i * C, c->out + i * C, c->in + (i * c->heads + h) * C, C);
        break;
    }
}

static void rows_run(rows_ctx *c, int64_t N) {
    int64_t per = c->C > 0 ? c->C : 1;
    mw_parallel_for(N, (65536 + per - 1) / per, rows_piece, c);
}

/* The cross-entropy of the loss's predicting rows, in pieces over rows on the core's threads.
 * Row i reads logits row xr[i].row of lg [., V], targets xr[i].tgt, is counted when xr[i].valid,
 * and writes its loss to nll[xr[i].at]; the rows' sum and count are added to *sum / *count in row
 * order, as one thread would (the same double whatever the thread count). */
struct xent_row {
    int64_t row, tgt, at;
    double part;               /* -log p of the target, when counted */
    uint8_t valid, counted;
};

typedef struct {
    float *nll;
    const float *lg;
    struct xent_row *xr;
    int64_t V;
} xent_ctx;

static void xent_piece(void *vc, int64_t lo, int64_t hi, int tid) {
    (void)tid;
    const xent_ctx *c = vc;
    for (int64_t i = lo; i < hi; i++) {
        struct xent_row *x = c->xr + i;
        double s = 0;
        int64_t k = 0;
        mw_crossentropy_forward(c->nll + x->at, &s, &k, c->lg + x->row * c->V, c->V, &x->tgt, &x->valid, 1);
        x->part = s;
        x->counted = k > 0;
    }
}

static void xent_rows(float *nll, double *sum, int64_t *count, const float *lg, int64_t V, struct xent_row *xr,
                      int64_t n) {
    xent_ctx c = {nll, lg, xr, V};
    mw_parallel_for(n, (65536 + V - 1) / V, xent_piece, &c);
    for (int64_t i = 0; i < n; i++)
        if (xr[i].counted) {
            *sum += xr[i].part;
            *count += 1;
        }
}

/* out [n] = x [n] + y [n] (the residual stream's additions), in pieces */
static void add_run(float *out, const float *x, const float *y, int64_t n) {
    rows_ctx rc = {.op = ROWS_ADD, .out = out, .in = x, .b2 = y, .C = 1};
    rows_run(&rc, n);
}

/* LayerNorm of the [N, d] rows of in into out, delivering scale and normalized; mean is kept
 * when mean != NULL (training) */
static int layernorm(const pass_ctx *x, const float *in, const mw_tensor *w, const mw_tensor *b, int l,
                     mw_buf *scale, mw_buf *mean, mw_buf *out, int id_scale, int id_norm) {
    int64_t N = x->B * x->P, d = x->m->cfg.d_model;
    mw_norm kind = x->m->cfg.normalization_type;
    float *o = buf(out, N * d), *s = buf(scale, N), *mu = mean ? buf(mean, N) : NULL;
    if (!o || !s || (mean && !mu)) return -1;
    rows_ctx rc = {.out = o, .s = s, .mu = mu, .in = in, .C = d, .eps = x->m->cfg.eps};
    if (kind == MW_NORM_RMS || kind == MW_NORM_RMSPRE) {
        /* TransformerLens's RMSNorm: hook_normalized is x / scale, before the weight */
        rc.op = ROWS_RMS_SCALE;
        rows_run(&rc, N);
        if (emit(x, id_scale, l, scale)) return -1;
        rc.op = ROWS_LN_APPLY;
        rows_run(&rc, N);
        if (emit(x, id_norm, l, out)) return -1;
        if (kind == MW_NORM_RMS) {
            rc.op = ROWS_SCALE;
            rc.w = pw(w, d, l);
            rows_run(&rc, N);
        }
        return 0;
    }
    rc.op = ROWS_LN_CENTER;
    rows_run(&rc, N);
    if (emit(x, id_scale, l, scale)) return -1;
    rc.op = ROWS_LN_APPLY;
    rc.w = pw(w, d, l);
    rc.b = pw(b, d, l);
    rows_run(&rc, N);
    return emit(x, id_norm, l, out);
}

/* the (batch, head) blocks of one attention layer, in pieces over bh = b * H + h: P queries, Pk
 * keys (Pk > P with a key/value cache); row b's keys and values at K + b * kst, its key padding
 * at km + b * kmst */
typedef struct {
    int stage;                      /* ATT_FUSED, ATT_SCORES, ATT_SOFTMAX, ATT_Z */
    const float *q, *K, *V;
    float *z, *S, *scratch;         /* S [B,H,P,Pk] (staged); scratch [threads, P, Pk] (fused) */
    const uint8_t *km;
    int64_t H, P, Pk, dh, Hd, Gd, per, kst, kmst;
    float alpha;
    int causal;
} attn_ctx;
enum { ATT_FUSED, ATT_SCORES, ATT_SOFTMAX, ATT_Z };

static void attn_piece(void *vc, int64_t lo, int64_t hi, int tid) {
    const attn_ctx *c = vc;
    int64_t P = c->P, Pk = c->Pk, H = c->H, dh = c->dh, Hd = c->Hd, Gd = c->Gd;
    for (int64_t bh = lo; bh < hi; bh++) {
        int64_t b = bh / H, h = bh % H;
        const float *qb = c->q + b * P * Hd + h * dh, *kb = c->K + b * c->kst + h / c->per * dh,
                    *vb = c->V + b * c->kst + h / c->per * dh;
        const uint8_t *km = c->km ? c->km + b * c->kmst : NULL;
        float *s = c->stage == ATT_FUSED ? c->scratch + (int64_t)tid * P * Pk : c->S + bh * P * Pk;
        /* scores [P,Pk] = q[b,:,h] [P,dh] (row stride H*dh) @ K[b,:,h]^T / attn_scale */
        if (c->stage == ATT_FUSED || c->stage == ATT_SCORES) {
            mw_sgemm(s, Pk, qb, Hd, 0, kb, Gd, 1, P, Pk, dh, c->alpha, 0.0f);
            mw_attn_mask_forward(s, Pk, P, Pk, km);
        }
        if (c->stage == ATT_FUSED || c->stage == ATT_SOFTMAX) mw_softmax_forward(s, Pk, P, Pk, c->causal);
        /* z[b,:,h] [P,dh] = pattern[b,h] [P,Pk] @ V[b,:,h] [Pk,dh] */
        if (c->stage == ATT_FUSED || c->stage == ATT_Z)
            mw_sgemm(c->z + b * P * Hd + h * dh, Hd, s, Pk, 0, vb, Gd, 0, P, dh, Pk, 1.0f, 0.0f);
    }
}

static void attn_run(attn_ctx *c, int stage, int64_t nblocks) {
    c->stage = stage;
    int64_t work = c->P * c->Pk * (stage == ATT_FUSED ? 2 * c->dh + 8 : stage == ATT_SOFTMAX ? 8 : c->dh);
    mw_parallel_for(nblocks, (65536 + work - 1) / work, attn_piece, c);
}

/* one attention layer: reads its input (normalized resid, or resid) at `in`, the Q/K input at
 * qkin (== in unless shortformer), writes a->attn_out */
static int attention(const pass_ctx *x, int l, mw_acts *a, const float *in, const float *qkin,
                     const uint8_t *mask) {
    mw_model *m = x->m;
    mw_run *r = m->run;
    const mw_config *c = &m->cfg;
    const mw_weights *w = &m->w;
    int64_t B = x->B, P = x->P, N = B * P, d = c->d_model, H = c->n_heads, dh = c->d_head, Hd = H * dh;
    /* grouped-query attention: G key/value heads, query head h reads key/value head h / (H / G) */
    int64_t G = c->n_key_value_heads > 0 ? c->n_key_value_heads : H, Gd = G * dh, per = H / G;
    float *q = buf(&a->q, N * Hd), *k = buf(&a->k, N * Gd), *v = buf(&a->v, N * Gd), *z = buf(&a->z, N * Hd);
    float *ao = buf(&a->attn_out, N * d);
    if (!q || !k || !v || !z || !ao) return -1;

    /* q, k, v [N, H*dh] = input [N, d] @ W_l [d, H*dh] + b_l [H*dh]: one sgemm each, the
     * stacked storage of W_Q/K/V being [L, d, H, dh] */
    mw_linear_forward(q, qkin, pw(&w->W_Q, d * Hd, l), pw(&w->b_Q, Hd, l), N, d, Hd);
    if (emit(x, MW_HOOK_Q, l, &a->q)) return -1;
    mw_linear_forward(k, qkin, pw(&w->W_K, d * Gd, l), pw(&w->b_K, Gd, l), N, d, Gd);
    if (emit(x, MW_HOOK_K, l, &a->k)) return -1;
    mw_linear_forward(v, in, pw(&w->W_V, d * Gd, l), pw(&w->b_V, Gd, l), N, d, Gd);
    if (emit(x, MW_HOOK_V, l, &a->v)) return -1;
    if (c->positional_embedding_type == MW_POS_ROTARY) {
        /* in place: hook_q / hook_k saw q and k before the rotation (TransformerLens's order) */
        mw_rotary_forward(q, r->posid, N, H, dh, c->rotary_dim, c->rotary_base, c->rotary_adjacent_pairs);
        if (emit(x, MW_HOOK_ROT_Q, l, &a->q)) return -1;
        mw_rotary_forward(k, r->posid, N, G, dh, c->rotary_dim, c->rotary_base, c->rotary_adjacent_pairs);
        if (emit(x, MW_HOOK_ROT_K, l, &a->k)) return -1;
    }
    /* the keys and values attention reads: row b's are [Pk, G*dh] at K + b*kst, their padding
     * km + b*kmst. Without a kv cache those are k and v; with one, k and v are appended to the
     * cache first and the keys are every cached position of the row. */
    const float *K = k, *V = v;
    const uint8_t *km = mask;
    int64_t Pk = P, kst = P * Gd, kmst = P;
    if (x->kv) {
        mw_kv_cache *kv = x->kv;
        float *kc = kv->k + l * B * kv->cap * Gd, *vc = kv->v + l * B * kv->cap * Gd;
        for (int64_t b = 0; b < B; b++) {
            memcpy(kc + (b * kv->cap + kv->len) * Gd, k + b * P * Gd, (size_t)(P * Gd) * sizeof(float));
            memcpy(vc + (b * kv->cap + kv->len) * Gd, v + b * P * Gd, (size_t)(P * Gd) * sizeof(float));
        }
        K = kc, V = vc, km = kv->mask;
        Pk = kv->len + P, kst = kv->cap * Gd, kmst = kv->cap;
    }

    /* scores[b,h] [P,Pk] = q[b,:,h] [P,dh] (row stride H*dh) @ K[b,:,h]^T / attn_scale.
     * When a hook wants the scores or the pattern, or training keeps the pattern, the whole
     * [B,H,P,Pk] is built (edits then feed the softmax and z); otherwise each (b, h) block lives
     * in a [P,Pk] scratch only as long as it takes to make its part of z. */
    float alpha = c->use_attn_scale ? (float)(1.0 / c->attn_scale) : 1.0f;
    a->causal = !wanted(x, MW_HOOK_ATTN_SCORES, l); /* edited scores may unmask keys: full rows */
    attn_ctx ac = {0, q, K, V, z, NULL, NULL, km, H, P, Pk, dh, Hd, Gd, per, kst, kmst, alpha, a->causal};
    if (x->train || wanted(x, MW_HOOK_ATTN_SCORES, l) || wanted(x, MW_HOOK_PATTERN, l)) {
        ac.S = buf(&a->scores, B * H * P * Pk);
        if (!ac.S) return -1;
        attn_run(&ac, ATT_SCORES, B * H);
        if (emit(x, MW_HOOK_ATTN_SCORES, l, &a->scores)) return -1;
        attn_run(&ac, ATT_SOFTMAX, B * H);
        if (emit(x, MW_HOOK_PATTERN, l, &a->scores)) return -1;
        attn_run(&ac, ATT_Z, B * H);
    } else {
        /* each thread's (b, h) block lives in its own [P,Pk] scratch */
        ac.scratch = buf(&r->block, (int64_t)mw_get_num_threads() * P * Pk);
        if (!ac.scratch) return -1;
        ac.causal = 1;
        attn_run(&ac, ATT_FUSED, B * H);
    }
    if (emit(x, MW_HOOK_Z, l, &a->z)) return -1;

    const float *Wo = pw(&w->W_O, Hd * d, l), *bo = pw(&w->b_O, d, l);
    if (c->use_attn_result) {
        /* result[:, h] [N, d] (row stride H*d) = z[:, h] [N, dh] @ W_O[l, h] [dh, d]; no bias */
        float *res = buf(&a->result, N * H * d);
        if (!res) return -1;
        for (int64_t h = 0; h < H; h++)
            mw_sgemm(res + h * d, H * d, z + h * dh, Hd, 0, Wo + h * dh * d, d, 0, N, d, dh, 1.0f, 0.0f);
        if (emit(x, MW_HOOK_RESULT, l, &a->result)) return -1;
        /* attn_out [N, d] = sum_h result[:, h] + b_O */
        mw_fill_rows(ao, d, bo, N, d);
        rows_ctx rc = {.op = ROWS_HEAD_SUM, .out = ao, .in = res, .C = d, .heads = H};
        rows_run(&rc, N);
    } else {
        /* attn_out [N, d] = z [N, H*dh] @ W_O[l] [H*dh, d] + b_O */
        mw_linear_forward(ao, z, Wo, bo, N, Hd, d);
    }
    return emit(x, MW_HOOK_ATTN_OUT, l, &a->attn_out);
}

/* one MLP: in [N, d] -> a->mlp_out [N, d] */
static int mlp(const pass_ctx *x, int l, mw_acts *a, const float *in) {
    const mw_config *c = &x->m->cfg;
    const mw_weights *w = &x->m->w;
    int64_t N = x->B * x->P, d = c->d_model, M = c->d_mlp;
    float *pre = buf(&a->mlp_pre, N * M), *post = buf(&a->mlp_post, N * M), *out = buf(&a->mlp_out, N * d);
    if (!pre || !post || !out) return -1;
    if (c->gated_mlp) {
        /* pre [N, m] = in @ W_gate; pre_linear [N, m] = in @ W_in (no biases);
         * post = act(pre) * pre_linear + b_in (TransformerLens's GatedMLP adds b_in after the gate) */
        float *lin = buf(&a->mlp_lin, N * M);
        const float *b_in = pw(&w->b_in, M, l);
        if (!lin) return -1;
        mw_linear_forward(pre, in, pw(&w->W_gate, d * M, l), NULL, N, d, M);
        if (emit(x, MW_HOOK_MLP_PRE, l, &a->mlp_pre)) return -1;
        mw_linear_forward(lin, in, pw(&w->W_in, d * M, l), NULL, N, d, M);
        if (emit(x, MW_HOOK_MLP_PRE_LINEAR, l, &a->mlp_lin)) return -1;
        rows_ctx rc = {.op = ROWS_GATE, .out = post, .in = pre, .b2 = lin, .C = 1, .fn = c->act_fn};
        rows_run(&rc, N * M);
        if (b_in) mw_bias_add_forward(post, b_in, N, M);
    } else {
        /* pre [N, m] = in [N, d] @ W_in [d, m] + b_in */
        mw_linear_forward(pre, in, pw(&w->W_in, d * M, l), pw(&w->b_in, M, l), N, d, M);
        if (emit(x, MW_HOOK_MLP_PRE, l, &a->mlp_pre)) return -1;
        if (c->act_fn == MW_ACT_SOLU_LN) {
            /* mid = solu(pre); post = LayerNorm over d_mlp of mid (TransformerLens's mlp.ln: with
             * w and b when normalization_type is "LN", else LNPre) */
            float *mid = buf(&a->mlp_mid, N * M), *s = buf(&a->mlp_ln_scale, N);
            float *mu = x->train ? buf(&a->mlp_ln_mean, N) : NULL;
            if (!mid || !s || (x->train && !mu)) return -1;
            mw_solu_forward(mid, pre, N, M);
            if (emit(x, MW_HOOK_MLP_MID, l, &a->mlp_mid)) return -1;
            mw_layernorm_center_forward(post, s, mu, mid, N, M, c->eps);
            if (emit(x, MW_HOOK_MLP_LN_SCALE, l, &a->mlp_ln_scale)) return -1;
            mw_layernorm_apply_forward(post, s, pw(&w->mlp_ln_w, M, l), pw(&w->mlp_ln_b, M, l), N, M);
            if (emit(x, MW_HOOK_MLP_LN_NORMALIZED, l, &a->mlp_post)) return -1;
        } else if (c->act_fn == MW_ACT_SOLU) {
            mw_solu_forward(post, pre, N, M);
        } else {
            rows_ctx rc = {.op = ROWS_ACT, .out = post, .in = pre, .C = 1, .fn = c->act_fn};
            rows_run(&rc, N * M);
        }
    }
    if (emit(x, MW_HOOK_MLP_POST, l, &a->mlp_post)) return -1;
    /* out [N, d] = post [N, m] @ W_out [m, d] + b_out */
    mw_linear_forward(out, post, pw(&w->W_out, M * d, l), pw(&w->b_out, d, l), N, M, d);
    return emit(x, MW_HOOK_MLP_OUT, l, &a->mlp_out);
}

/* TransformerLens's position ids (get_offset_position_ids): a real token's position is the number
 * of real tokens before it in its row, cached positions included (so left padding shifts the
 * positions and they start at 0 on the first real token); -1 for padding (PosEmbed zeroes it). */
static void position_ids(int64_t *pos, const uint8_t *mask, const mw_kv_cache *kv, int64_t B, int64_t P) {
    for (int64_t b = 0; b < B; b++) {
        int64_t c = 0;
        for (int64_t j = 0; kv && j < kv->len; j++) c += kv->mask[b * kv->cap + j];
        for (int64_t p = 0; p < P; p++) pos[b * P + p] = mask[b * P + p] ? c++ : -1;
    }
}

/* reads [B, P] tokens / mask of any dtype and layout into the run's arrays, and the position ids */
static int read_inputs(const pass_ctx *x, const mw_forward_opts *o) {
    mw_model *m = x->m;
    mw_run *r = m->run;
    int64_t n = x->B * x->P;
    if (r->tok_cap < n) {
        free(r->tok); free(r->mask); free(r->valid); free(r->posid); free(r->xr);
        r->tok = malloc((size_t)n * sizeof(int64_t));
        r->mask = malloc((size_t)n);
        r->valid = malloc((size_t)n);
        r->posid = malloc((size_t)n * sizeof(int64_t));
        r->xr = malloc((size_t)n * sizeof *r->xr);
        r->tok_cap = (r->tok && r->mask && r->valid && r->posid && r->xr) ? n : 0;
        if (!r->tok_cap) return mw_seterr("forward: out of memory");
    }
    int64_t idx[2];
    for (idx[0] = 0; idx[0] < x->B; idx[0]++)
        for (idx[1] = 0; idx[1] < x->P; idx[1]++) {
            int64_t i = idx[0] * x->P + idx[1];
            if (o->tokens) {
                int64_t t = (int64_t)mw_tensor_get(o->tokens, idx);
                if (t < 0 || t >= m->cfg.d_vocab)
                    return mw_seterr("forward: token %lld at [%lld,%lld] is out of range: outside the vocabulary [0, %lld)", (long long)t,
                                     (long long)idx[0], (long long)idx[1], (long long)m->cfg.d_vocab);
                r->tok[i] = t;
            }
            r->mask[i] = o->attention_mask ? mw_tensor_get(o->attention_mask, idx) != 0 : 1;
        }
    position_ids(r->posid, r->mask, o->kv, x->B, x->P);
    if (o->kv)
        for (int64_t b = 0; b < x->B; b++)
            memcpy(o->kv->mask + b * o->kv->cap + o->kv->len, r->mask + b * x->P, (size_t)x->P);
    return 0;
}

/* checks the options against the model; fills start, stop, B, P */
static int check_opts(const mw_model *m, const mw_forward_opts *o, int *start, int *stop, int64_t *B, int64_t *P) {
    const mw_config *c = &m->cfg;
    int L = (int)c->n_layers;
    char s1[256], s2[256];
    *start = o->start_at_layer < 0 ? o->start_at_layer + L : o->start_at_layer;
    *stop = o->stop_at_layer < 0 ? o->stop_at_layer + L : o->stop_at_layer;
    if (*start < 0 || *start > L)
        return mw_seterr("forward: start_at_layer %d out of range for %d layers", o->start_at_layer, L);
    if (*stop < *start || *stop > L)
        return mw_seterr("forward: stop_at_layer %d out of range (start_at_layer %d, %d layers)", o->stop_at_layer,
                         *start, L);
    if (o->keep_activations && (*start != 0 || *stop != L || o->return_residual))
        return mw_seterr("forward: keep_activations (training) runs the whole model: start_at_layer 0, "
                         "stop_at_layer n_layers, no return_residual");
    if (o->tokens) {
        if (o->tokens->ndim != 2 || o->tokens->dtype != MW_I64)
            return mw_seterr("forward: tokens must be int64 [batch, pos], got %s %s",
                             mw_dtype_name(o->tokens->dtype), mw_tensor_shape_str(s1, sizeof s1, o->tokens));
        *B = o->tokens->shape[0];
        *P = o->tokens->shape[1];
    } else if (*start > 0 && o->residual) {
        *B = o->residual->shape[0];
        *P = o->residual->shape[1];
    } else {
        return mw_seterr("forward: no tokens given (start_at_layer > 0 needs a residual)");
    }
    if (*start > 0) {
        if (!o->residual)
            return mw_seterr("forward: start_at_layer %d needs a residual stream [batch, pos, d_model]", *start);
        if (o->residual->ndim != 3 || o->residual->shape[0] != *B || o->residual->shape[1] != *P ||
            o->residual->shape[2] != c->d_model)
            return mw_seterr("forward: residual %s does not match [%lld,%lld,%lld]",
                             mw_tensor_shape_str(s1, sizeof s1, o->residual), (long long)*B, (long long)*P,
                             (long long)c->d_model);
    }
    if (*B <= 0 || *P <= 0) return mw_seterr("forward: empty input [%lld,%lld]", (long long)*B, (long long)*P);
    if (*P > c->n_ctx) return mw_seterr("forward: %lld positions exceed n_ctx %lld", (long long)*P, (long long)c->n_ctx);
    if (o->attention_mask) {
        const mw_tensor *am = o->attention_mask;
        if (am->ndim != 2 || am->shape[0] != *B || am->shape[1] != *P)
            return mw_seterr("forward: attention_mask %s does not match tokens [%lld,%lld]",
                             mw_tensor_shape_str(s2, sizeof s2, am), (long long)*B, (long long)*P);
    }
    if (o->kv) {
        const mw_kv_cache *kv = o->kv;
        if (*start != 0 || *stop != L || o->return_residual || o->want_loss || o->keep_activations || !o->tokens)
            return mw_seterr("forward: a key/value cache step runs the whole model from tokens to logits "
                             "(no start_at_layer, stop_at_layer, loss or keep_activations)");
        if (kv->B != *B || kv->G != (c->n_key_value_heads > 0 ? c->n_key_value_heads : c->n_heads) || kv->dh != c->d_head)
            return mw_seterr("forward: the key/value cache was made for another model or batch (%lld rows, tokens have %lld)",
                             (long long)kv->B, (long long)*B);
        if (kv->len + *P > kv->cap)
            return mw_seterr("forward: the key/value cache holds %lld positions: %lld cached + %lld new do not fit",
                             (long long)kv->cap, (long long)kv->len, (long long)*P);
        if (kv->len + *P > c->n_ctx)
            return mw_seterr("forward: %lld positions (%lld cached) exceed n_ctx %lld", (long long)(kv->len + *P),
                             (long long)kv->len, (long long)c->n_ctx);
    }
    int to_end = *stop == L && !o->return_residual;
    if (o->last_only && (o->want_loss || o->keep_activations || !to_end))
        return mw_seterr("forward: last_only returns the last position's logits of an inference pass: not with "
                         "the loss, training or stop_at_layer");
    if (o->want_loss && to_end && !o->tokens) return mw_seterr("forward: the loss needs tokens");
    if (o->want_loss && to_end && *P < 2) return mw_seterr("forward: the loss needs at least 2 positions");
    if ((o->loss_from || o->loss_to) && (o->loss_from < 0 || o->loss_to <= o->loss_from || o->loss_to > *P - 1))
        return mw_seterr("forward: loss positions [%lld, %lld) outside the %lld predictions", (long long)o->loss_from,
                         (long long)o->loss_to, (long long)(*P - 1));
    return 0;
}

/* makes room for n activation sets (1 for inference, L + 1 for training); never shrinks, so
 * alternating training steps and inference probes reuse the same buffers */
static int ensure_acts(mw_run *r, int n) {
    if (r->nacts >= n) return 0;
    mw_acts *a = realloc(r->acts, (size_t)n * sizeof *a);
    if (!a) return mw_seterr("forward: out of memory");
    memset(a + r->nacts, 0, (size_t)(n - r->nacts) * sizeof *a);
    r->acts = a;
    r->nacts = n;
    return 0;
}

/* out->logits [B,1,Vo]: each row's last real position (the last one mask marks; P-1 without a
 * mask) of fin [B,P,d], those B rows gathered into the embedding buffer (free once the blocks
 * ran) and unembedded in one product (last_only, and generation with a key/value cache) */
static int last_logits(const pass_ctx *x, const float *fin, const uint8_t *mask, mw_forward_out *out) {
    mw_run *r = x->m->run;
    const mw_weights *w = &x->m->w;
    int64_t B = x->B, P = x->P, d = x->m->cfg.d_model, Vo = x->m->cfg.d_vocab_out;
    float *rows = buf(&r->embed, B * d);
    if (!rows) return -1;
    for (int64_t b = 0; b < B; b++) {
        int64_t t = P - 1;
        while (mask && t > 0 && !mask[b * P + t]) t--;
        memcpy(rows + b * d, fin + (b * P + t) * d, (size_t)d * sizeof(float));
    }
    if (logits_out(r, &out->logits, B, 1, Vo)) return -1;
    mw_linear_forward(mw_tensor_data(&out->logits), rows, mw_tensor_data(&w->W_U), mw_tensor_data(&w->b_U), B, d, Vo);
    return 0;
}

int mw_model_forward(mw_model *m, const mw_forward_opts *o, mw_forward_out *out) {
    memset(out, 0, sizeof *out);
    const mw_config *c = &m->cfg;
    int L = (int)c->n_layers, start, stop;
    int64_t B = 0, P = 0;
    if (check_opts(m, o, &start, &stop, &B, &P)) return -1;
    int to_end = stop == L && !o->return_residual;
    int want_loss = o->want_loss && to_end;
    if (!m->run) {
        m->run = calloc(1, sizeof *m->run);
        if (!m->run) return mw_seterr("forward: out of memory");
    }
    mw_run *r = m->run;
    r->saved = 0;
    r->have_probs = 0;
    if (ensure_acts(r, o->keep_activations ? L + 1 : 1)) return -1;
    pass_ctx xc = {m, B, P, o->keep_activations, o->want, o->deliver, o->ud, o->kv, o->kv ? o->kv->len + P : P},
             *x = &xc;
    int64_t N = B * P, d = c->d_model;
    const mw_weights *w = &m->w;
    int shortformer = c->positional_embedding_type == MW_POS_SHORTFORMER;
    int rotary = c->positional_embedding_type == MW_POS_ROTARY; /* no W_pos: q and k rotate */
    int norm = c->normalization_type != MW_NORM_NONE;
    TRY(read_inputs(x, o));
    const uint8_t *mask = o->attention_mask ? r->mask : NULL; /* after read_inputs: it may move r->mask */

    mw_acts *a0 = acts_of(x, start);
    float *resid = buf(&a0->resid, N * d), *pos = NULL;
    NEED(resid);
    if (start == 0) {
        /* embed [N, d] = W_E[tokens]; pos [N, d] = W_pos[positions] */
        float *emb = buf(&r->embed, N * d);
        NEED(emb);
        mw_embed_forward(emb, r->tok, mw_tensor_data(&w->W_E), N, d);
        TRY(emit(x, MW_HOOK_EMBED, -1, &r->embed));
        if (!rotary) {
            pos = buf(&r->pos, N * d);
            NEED(pos);
            mw_pos_forward(pos, mw_tensor_data(&w->W_pos), r->posid, N, d);
            TRY(emit(x, MW_HOOK_POS_EMBED, -1, &r->pos));
        }
        /* standard: the residual stream starts as embed + pos; shortformer: embed alone, pos
         * joins the Q and K inputs of every block; rotary: embed alone */
        if (shortformer || rotary) memcpy(resid, emb, (size_t)(N * d) * sizeof(float));
        else add_run(resid, emb, pos, N * d);
    } else {
        mw_tensor rv;
        buf_view3(&rv, &a0->resid, B, P, d);
        TRY(mw_tensor_copy_(&rv, o->residual));
        if (shortformer) {
            /* no embedding ran: positions 0..P-1 (or from the mask) feed Q and K */
            pos = buf(&r->pos, N * d);
            NEED(pos);
            mw_pos_forward(pos, mw_tensor_data(&w->W_pos), r->posid, N, d);
        }
    }

    for (int l = start; l < stop; l++) {
        mw_acts *a = acts_of(x, l), *next = acts_of(x, l + 1);
        /* resid_pre is a->resid; resid_post goes to next->resid (the same buffer in inference) */
        resid = data(&a->resid);
        float *post = buf(&next->resid, N * d);
        NEED(post);
        TRY(emit(x, MW_HOOK_RESID_PRE, l, &a->resid));
        const float *in = resid;
        if (norm) {
            TRY(layernorm(x, resid, &w->ln1_w, &w->ln1_b, l, &a->ln1_scale, x->train ? &a->ln1_mean : NULL,
                          &a->ln1_out, MW_HOOK_LN1_SCALE, MW_HOOK_LN1_NORMALIZED));
            in = data(&a->ln1_out);
        }
        const float *qkin = in;
        if (shortformer) {
            float *qi = buf(&a->qk_in, N * d);
            NEED(qi);
            add_run(qi, in, pos, N * d);
            qkin = qi;
        }
        TRY(attention(x, l, a, in, qkin, mask));
        const float *ao = data(&a->attn_out);
        if (c->attn_only) {
            add_run(post, resid, ao, N * d);
        } else if (c->parallel_attn_mlp) {
            /* GPT-J / GPT-NeoX: the MLP reads resid_pre through ln2; no resid_mid */
            const float *min = resid;
            if (norm) {
                TRY(layernorm(x, resid, &w->ln2_w, &w->ln2_b, l, x->train ? &a->ln2_scale : &a->ln1_scale,
                              x->train ? &a->ln2_mean : NULL, x->train ? &a->ln2_out : &a->ln1_out,
                              MW_HOOK_LN2_SCALE, MW_HOOK_LN2_NORMALIZED));
                min = data(x->train ? &a->ln2_out : &a->ln1_out);
            }
            TRY(mlp(x, l, a, min));
            add_run(post, resid, ao, N * d);
            add_run(post, post, data(&a->mlp_out), N * d);
        } else {
            float *mid = buf(&a->resid_mid, N * d);
            NEED(mid);
            add_run(mid, resid, ao, N * d);
            TRY(emit(x, MW_HOOK_RESID_MID, l, &a->resid_mid));
            const float *min = mid;
            if (norm) {
                /* inference: ln2 reuses ln1's buffers */
                TRY(layernorm(x, mid, &w->ln2_w, &w->ln2_b, l, x->train ? &a->ln2_scale : &a->ln1_scale,
                              x->train ? &a->ln2_mean : NULL, x->train ? &a->ln2_out : &a->ln1_out,
                              MW_HOOK_LN2_SCALE, MW_HOOK_LN2_NORMALIZED));
                min = data(x->train ? &a->ln2_out : &a->ln1_out);
            }
            TRY(mlp(x, l, a, min));
            add_run(post, mid, data(&a->mlp_out), N * d);
        }
        TRY(emit(x, MW_HOOK_RESID_POST, l, &next->resid));
    }

    mw_acts *fa = acts_of(x, stop); /* final residual; its ln1_* serve ln_final */
    resid = data(&fa->resid);
    if (!to_end) {
        int64_t sh[3] = {B, P, d};
        TRY(mw_tensor_empty(&out->residual, MW_F32, 3, sh));
        memcpy(mw_tensor_data(&out->residual), resid, (size_t)(N * d) * sizeof(float));
        return 0;
    }
    const float *fin = resid;
    if (norm) {
        TRY(layernorm(x, resid, &w->ln_final_w, &w->ln_final_b, -1, &fa->ln1_scale, x->train ? &fa->ln1_mean : NULL,
                      &fa->ln1_out, MW_HOOK_LNF_SCALE, MW_HOOK_LNF_NORMALIZED));
        fin = data(&fa->ln1_out);
    }
    r->B = B;
    r->P = P;
    r->saved = x->train;
    if (x->kv) {
        /* generation: logits [B,1,Vo] of each row's last position only (left-padded prompts: P-1) */
        if (o->want_logits) TRY(last_logits(x, fin, mask, out));
        x->kv->len += P;
        return 0;
    }
    if (!o->want_logits && !want_loss && !x->train) return 0;

    /* logits [N, Vo] = fin [N, d] @ W_U [d, Vo] + b_U */
    int64_t Vo = c->d_vocab_out;
    const float *WU = mw_tensor_data(&w->W_U), *bU = mw_tensor_data(&w->b_U);
    if (want_loss) {
        int64_t sh[2] = {B, P - 1};
        TRY(mw_tensor_empty(&out->loss_per_token, MW_F32, 2, sh));
        if (c->d_vocab_out != c->d_vocab) {
            /* targets index the output vocabulary */
            for (int64_t i = 0; i < N; i++)
                if (r->tok[i] >= Vo) {
                    mw_seterr("forward: loss: token %lld >= d_vocab_out %lld", (long long)r->tok[i], (long long)Vo);
                    goto fail;
                }
        }
        int64_t lf = o->loss_from, lt = o->loss_to ? o->loss_to : P - 1;
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t + 1 < P; t++)
                r->valid[b * P + t] = r->mask[b * P + t] && r->mask[b * P + t + 1] && t >= lf && t < lt;
    }
    double lsum = 0;
    int64_t lcount = 0;
    float *nll = want_loss ? mw_tensor_data(&out->loss_per_token) : NULL;
    if (x->train) {
        /* training keeps the logits [N, Vo] whole; with the loss they become probabilities in
         * place (what the backward pass of the cross-entropy reads) */
        float *hd = buf(&r->head, N * Vo);
        NEED(hd);
        mw_linear_forward(hd, fin, WU, bU, N, d, Vo);
        if (o->want_logits) {
            TRY(logits_out(r, &out->logits, B, P, Vo));
            memcpy(mw_tensor_data(&out->logits), hd, (size_t)(N * Vo) * sizeof(float));
        }
        if (want_loss) {
            for (int64_t b = 0; b < B; b++)
                mw_softmax_crossentropy_forward(hd + b * P * Vo, nll + b * (P - 1), &lsum, &lcount, Vo,
                                                r->tok + b * P + 1, r->valid + b * P, P - 1);
            r->have_probs = 1;
        }
    } else if (o->want_logits && o->last_only) {
        TRY(last_logits(x, fin, mask, out));
    } else if (o->want_logits) {
        TRY(logits_out(r, &out->logits, B, P, Vo));
        float *lg = mw_tensor_data(&out->logits);
        mw_linear_forward(lg, fin, WU, bU, N, d, Vo);
        if (want_loss) {
            int64_t n = 0;
            for (int64_t b = 0; b < B; b++)
                for (int64_t t = 0; t + 1 < P; t++, n++)
                    r->xr[n] = (struct xent_row){.row = b * P + t, .tgt = r->tok[b * P + t + 1],
                                                 .at = b * (P - 1) + t, .valid = r->valid[b * P + t]};
            xent_rows(nll, &lsum, &lcount, lg, Vo, r->xr, n);
        }
    } else {
        /* loss only: the predicting rows of every batch row (those in the loss window) are
         * gathered into blocks of R rows, unembedded and scored block by block: about 64 MB of
         * logits at a time, never [B,P,Vo] whole, but enough rows for the unembedding product to
         * run at matrix-product speed (64-row blocks ran it at 0.7x, streaming W_U per block) */
        int64_t R = ((int64_t)64 << 20) / (Vo * (int64_t)sizeof(float));
        if (R < 64) R = 64;
        if (R > 512) R = 512;
        int64_t lf = o->loss_from, lt = o->loss_to ? o->loss_to : P - 1;
        if (R > B * (lt - lf)) R = B * (lt - lf) > 0 ? B * (lt - lf) : 1; /* no bigger than needed */
        float *rows = buf(&r->logit_rows, R * Vo), *in = buf(&r->loss_in, R * d);
        NEED(rows && in);
        int64_t n = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = lf; t < lt; t++) {
                memcpy(in + n * d, fin + (b * P + t) * d, (size_t)d * sizeof(float));
                r->xr[n] = (struct xent_row){.row = n, .tgt = r->tok[b * P + t + 1], .at = b * (P - 1) + t,
                                             .valid = r->valid[b * P + t]};
                if (++n == R || (b == B - 1 && t == lt - 1)) {
                    mw_linear_forward(rows, in, WU, bU, n, d, Vo);
                    xent_rows(nll, &lsum, &lcount, rows, Vo, r->xr, n);
                    n = 0;
                }
            }
    }
    if (want_loss) out->loss = lcount ? lsum / (double)lcount : NAN;
    r->count = lcount;
    return 0;
fail:
    r->saved = 0;
    mw_forward_out_release(out);
    return -1;
}

/* ================================================================ the backward pass
 * The forward in reverse over the activations a training forward kept. g_resid carries
 * d(output)/d(residual stream) at the current depth; each step reads the kept activation of the
 * same name and writes the gradient of its input. Hook deliveries hand over the gradient buffer
 * of that hook point: edits change what flows further back. */

/* the gradient at hook id arrives in `g`; when a hook wants it, a copy in r->g_copy is
 * delivered and returned instead (so that edits reach only this branch) */
static float *emit_branch(const pass_ctx *x, int id, int layer, float *g, int64_t n) {
    mw_run *r = x->m->run;
    if (!wanted(x, id, layer)) return g;
    float *c = buf(&r->g_copy, n);
    if (!c) return NULL;
    memcpy(c, g, (size_t)n * sizeof(float));
    return emit(x, id, layer, &r->g_copy) ? NULL : c;
}

/* gradient pointer of layer l's slice of stacked parameter `field`, NULL when not wanted (no
 * grads given) or absent */
#define GW(field, per_layer, l) (g ? pw(&g->field, per_layer, l) : NULL)

/* attention backward of one layer: from g_z, into g_q, g_k, g_v (d of the rotated q and k when
 * rotary). Grouped-query attention: key/value head h / per serves query heads h .. h + per - 1,
 * so its gradients are the sums over them (the first of a group writes, the others add). */
static int attention_backward(const pass_ctx *x, int l, const mw_acts *a) {
    mw_run *r = x->m->run;
    const mw_config *c = &x->m->cfg;
    int64_t B = x->B, P = x->P, H = c->n_heads, dh = c->d_head, Hd = H * dh;
    int64_t G = dim_size(c, MW_DIM_KVH), Gd = G * dh, per = H / G;
    float alpha = c->use_attn_scale ? (float)(1.0 / c->attn_scale) : 1.0f;
    const float *A = data(&a->scores), *q = data(&a->q), *k = data(&a->k), *v = data(&a->v);
    float *dz = data(&r->g_z), *dq = data(&r->g_q), *dk = data(&r->g_k), *dv = data(&r->g_v);
    /* with a hook on the gradient of the pattern or scores, [B,H,P,P] is built whole */
    int full = wanted(x, MW_HOOK_PATTERN, l) || wanted(x, MW_HOOK_ATTN_SCORES, l);
    float *dS = full ? buf(&r->g_scores, B * H * P * P) : buf(&r->g_block, P * P);
    if (!dS) return -1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            int64_t o = b * P * Hd + h * dh, ok = b * P * Gd + h / per * dh;
            float acc = h % per ? 1.0f : 0.0f;
            const float *Abh = A + (b * H + h) * P * P;
            float *s = full ? dS + (b * H + h) * P * P : dS;
            /* d pattern [P,P] = dz [P,dh] @ v^T; dv [P,dh] (+)= pattern^T @ dz */
            mw_sgemm(s, P, dz + o, Hd, 0, v + ok, Gd, 1, P, P, dh, 1.0f, 0.0f);
            mw_sgemm(dv + ok, Gd, Abh, P, 1, dz + o, Hd, 0, P, dh, P, 1.0f, acc);
            if (full) continue;
            /* d scores = softmax backward; dq = alpha dS @ k, dk (+)= alpha dS^T @ q */
            mw_softmax_backward(s, Abh, P, P, P, a->causal);
            mw_sgemm(dq + o, Hd, s, P, 0, k + ok, Gd, 0, P, dh, P, alpha, 0.0f);
            mw_sgemm(dk + ok, Gd, s, P, 1, q + o, Hd, 0, P, dh, P, alpha, acc);
        }
    if (!full) return 0;
    if (emit(x, MW_HOOK_PATTERN, l, &r->g_scores)) return -1;
    for (int64_t bh = 0; bh < B * H; bh++) mw_softmax_backward(dS + bh * P * P, A + bh * P * P, P, P, P, a->causal);
    if (emit(x, MW_HOOK_ATTN_SCORES, l, &r->g_scores)) return -1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            int64_t o = b * P * Hd + h * dh, ok = b * P * Gd + h / per * dh;
            const float *s = dS + (b * H + h) * P * P;
            mw_sgemm(dq + o, Hd, s, P, 0, k + ok, Gd, 0, P, dh, P, alpha, 0.0f);
            mw_sgemm(dk + ok, Gd, s, P, 1, q + o, Hd, 0, P, dh, P, alpha, h % per ? 1.0f : 0.0f);
        }
    return 0;
}

/* the backward pass of layernorm(): r->g_norm holds d(its output); d(its input `in`) is added
 * into dx. The gradients at hook_normalized (TransformerLens's: after the weight for LayerNorm,
 * before it for RMSNorm) and hook_scale are delivered between the steps, edits flowing on. */
static int layernorm_backward(const pass_ctx *x, float *dx, const float *in, const mw_buf *mean, const mw_buf *scale,
                              const float *w, float *dw, float *db, int l, int id_scale, int id_norm) {
    mw_run *r = x->m->run;
    int64_t N = x->B * x->P, d = x->m->cfg.d_model;
    mw_norm kind = x->m->cfg.normalization_type;
    const float *mu = kind == MW_NORM_LN || kind == MW_NORM_LNPRE ? data(mean) : NULL, *s = data(scale);
    float *gn = data(&r->g_norm), *ds = buf(&r->g_scale, N);
    if (!ds) return -1;
    if (kind != MW_NORM_RMS && emit(x, id_norm, l, &r->g_norm)) return -1;
    if (w) mw_norm_weight_backward(gn, dw, db, gn, in, mu, s, w, N, d);
    if (kind == MW_NORM_RMS && emit(x, id_norm, l, &r->g_norm)) return -1;
    mw_norm_scale_backward(ds, gn, in, mu, s, N, d);
    if (emit(x, id_scale, l, &r->g_scale)) return -1;
    mw_norm_input_backward(dx, gn, ds, in, mu, s, N, d);
    return 0;
}

/* MLP backward of one layer: from dmo = d mlp_out, d(its input `in`) into din (= or, with acc,
 * +=), parameter gradients into g */
static int mlp_backward(const pass_ctx *x, int l, const mw_acts *a, const float *dmo, const float *in, float *din,
                        int acc, const mw_weights *g) {
    mw_run *r = x->m->run;
    const mw_config *c = &x->m->cfg;
    const mw_weights *w = &x->m->w;
    int64_t N = x->B * x->P, d = c->d_model, M = c->d_mlp;
    float *gm = data(&r->g_mlp);
    mw_linear_backward(gm, 0, GW(W_out, M * d, l), GW(b_out, d, l), dmo, data(&a->mlp_post), pw(&w->W_out, M * d, l),
                       N, M, d);
    if (emit(x, MW_HOOK_MLP_POST, l, &r->g_mlp)) return -1;
    if (c->gated_mlp) {
        /* post = act(pre) * pre_linear + b_in: the gate (pre = in @ W_gate) and the linear part
         * (pre_linear = in @ W_in) are two branches from the same input */
        float *gl = buf(&r->g_lin, N * M), *gb = GW(b_in, M, l);
        if (!gl) return -1;
        if (gb) mw_colsum_backward(gb, gm, N, M);
        mw_gate_backward(gm, gl, gm, data(&a->mlp_pre), data(&a->mlp_lin), N * M, c->act_fn);
        if (emit(x, MW_HOOK_MLP_PRE_LINEAR, l, &r->g_lin) || emit(x, MW_HOOK_MLP_PRE, l, &r->g_mlp)) return -1;
        mw_linear_backward(din, acc, GW(W_in, d * M, l), NULL, gl, in, pw(&w->W_in, d * M, l), N, d, M);
        mw_linear_backward(din, 1, GW(W_gate, d * M, l), NULL, gm, in, pw(&w->W_gate, d * M, l), N, d, M);
        return 0;
    }
    if (c->act_fn == MW_ACT_SOLU_LN) {
        /* post = mlp.ln(mid), a LayerNorm over d_mlp (LNPre unless "LN"): d mid, then SoLU's */
        const float *mid = data(&a->mlp_mid), *mu = data(&a->mlp_ln_mean), *s = data(&a->mlp_ln_scale);
        const float *lw = pw(&w->mlp_ln_w, M, l);
        float *ds = buf(&r->g_scale, N), *gmid = buf(&r->g_mid, N * M);
        if (!ds || !gmid) return -1;
        if (emit(x, MW_HOOK_MLP_LN_NORMALIZED, l, &r->g_mlp)) return -1;
        if (lw) mw_norm_weight_backward(gm, GW(mlp_ln_w, M, l), GW(mlp_ln_b, M, l), gm, mid, mu, s, lw, N, M);
        mw_norm_scale_backward(ds, gm, mid, mu, s, N, M);
        if (emit(x, MW_HOOK_MLP_LN_SCALE, l, &r->g_scale)) return -1;
        memset(gmid, 0, (size_t)(N * M) * sizeof(float));
        mw_norm_input_backward(gmid, gm, ds, mid, mu, s, N, M);
        if (emit(x, MW_HOOK_MLP_MID, l, &r->g_mid)) return -1;
        mw_solu_backward(gm, gmid, data(&a->mlp_pre), N, M);
    } else if (c->act_fn == MW_ACT_SOLU) {
        mw_solu_backward(gm, gm, data(&a->mlp_pre), N, M);
    } else {
        mw_act_backward(gm, gm, data(&a->mlp_pre), N * M, c->act_fn);
    }
    if (emit(x, MW_HOOK_MLP_PRE, l, &r->g_mlp)) return -1;
    mw_linear_backward(din, acc, GW(W_in, d * M, l), GW(b_in, M, l), gm, in, pw(&w->W_in, d * M, l), N, d, M);
    return 0;
}

int mw_model_backward_supported(const mw_config *c) {
    if (c->attn_only || mw_act_has_backward(c->act_fn) || c->act_fn == MW_ACT_SOLU || c->act_fn == MW_ACT_SOLU_LN)
        return 0;
    return mw_seterr("backward: act_fn '%s' has no backward pass (training and gradients need relu, gelu, gelu_new, "
                     "gelu_pytorch_tanh, gelu_fast, silu, solu or solu_ln)",
                     mw_config_enum_name(mw_config_field_find("act_fn"), c->act_fn));
}

int mw_model_backward(mw_model *m, const mw_backward_opts *o) {
    if (mw_model_backward_supported(&m->cfg)) return -1;
    mw_run *r = m->run;
    if (!r || !r->saved)
        return mw_seterr("backward: needs a forward with keep_activations that ran to the logits just before");
    const mw_config *c = &m->cfg;
    const mw_weights *w = &m->w, *g = o->grads;
    int L = (int)c->n_layers;
    pass_ctx xc = {m, r->B, r->P, 1, o->want, o->deliver, o->ud, NULL, r->P}, *x = &xc;
    int64_t B = r->B, P = r->P, N = B * P, d = c->d_model, H = c->n_heads, dh = c->d_head, Hd = H * dh, M = c->d_mlp;
    int64_t Gd = dim_size(c, MW_DIM_KVH) * dh, Vo = c->d_vocab_out;
    int norm = c->normalization_type != MW_NORM_NONE, shortformer = c->positional_embedding_type == MW_POS_SHORTFORMER;
    int rotary = c->positional_embedding_type == MW_POS_ROTARY, parallel = c->parallel_attn_mlp && !c->attn_only;
    float *head = data(&r->head);
    if (o->grad_logits) {
        const mw_tensor *gl = o->grad_logits;
        if (gl->ndim != 3 || gl->shape[0] != B || gl->shape[1] != P || gl->shape[2] != Vo) {
            char s1[256];
            return mw_seterr("backward: grad_logits %s does not match the logits [%lld,%lld,%lld]",
                             mw_tensor_shape_str(s1, sizeof s1, gl), (long long)B, (long long)P, (long long)Vo);
        }
        mw_tensor hv;
        buf_view3(&hv, &r->head, B, P, Vo);
        if (mw_tensor_copy_(&hv, gl)) return -1;
        r->have_probs = 0;
    } else {
        if (!r->have_probs) return mw_seterr("backward: the forward computed no loss (and no grad_logits was given)");
        /* d mean loss / d logits = (softmax - onehot) / count; the last position predicts nothing */
        float dl = r->count ? (float)(1.0 / (double)r->count) : 0.0f;
        for (int64_t b = 0; b < B; b++) {
            mw_softmax_crossentropy_backward(head + b * P * Vo, Vo, r->tok + b * P + 1, r->valid + b * P, P - 1, dl);
            memset(head + (b * P + P - 1) * Vo, 0, (size_t)Vo * sizeof(float));
        }
        r->have_probs = 0;
    }
    r->saved = 0; /* the head buffer now holds gradients: one backward per forward */
    float *gr = buf(&r->g_resid, N * d), *gn = buf(&r->g_norm, N * d), *gp = parallel ? buf(&r->g_post, N * d) : NULL;
    float *gq = buf(&r->g_q, N * Hd), *gk = buf(&r->g_k, N * Gd), *gv = buf(&r->g_v, N * Gd), *gz = buf(&r->g_z, N * Hd);
    float *gm = M > 0 ? buf(&r->g_mlp, N * M) : NULL;
    /* shortformer: d hook_pos_embed, the sum over blocks of d(Q/K input) */
    float *gpos = shortformer ? buf(&r->g_pos, N * d) : NULL;
    if (!gr || !gn || !gq || !gk || !gv || !gz || (M > 0 && !gm) || (parallel && !gp) || (shortformer && !gpos))
        return -1;
    if (gpos) memset(gpos, 0, (size_t)(N * d) * sizeof(float));

    /* unembed and ln_final */
    mw_acts *fa = r->acts + L;
    if (norm) {
        mw_linear_backward(gn, 0, GW(W_U, 0, -1), GW(b_U, 0, -1), head, data(&fa->ln1_out),
                           mw_tensor_data(&w->W_U), N, d, Vo);
        memset(gr, 0, (size_t)(N * d) * sizeof(float));
        if (layernorm_backward(x, gr, data(&fa->resid), &fa->ln1_mean, &fa->ln1_scale, pw(&w->ln_final_w, 0, -1),
                               GW(ln_final_w, 0, -1), GW(ln_final_b, 0, -1), -1, MW_HOOK_LNF_SCALE,
                               MW_HOOK_LNF_NORMALIZED))
            return -1;
    } else {
        mw_linear_backward(gr, 0, GW(W_U, 0, -1), GW(b_U, 0, -1), head, data(&fa->resid),
                           mw_tensor_data(&w->W_U), N, d, Vo);
    }

    for (int l = L - 1; l >= 0; l--) {
        mw_acts *a = r->acts + l;
        if (emit(x, MW_HOOK_RESID_POST, l, &r->g_resid)) return -1;
        /* parallel blocks: attn_out gets d resid_post as it is, before the MLP's input gradient
         * joins the residual stream's (gr then becomes d resid_pre) */
        if (parallel) memcpy(gp, gr, (size_t)(N * d) * sizeof(float));
        if (!c->attn_only) {
            /* gr = d resid_post: flows to resid_mid (resid_pre when parallel) unchanged, and
             * through the MLP, whose input is ln2 of that */
            const float *dmo = emit_branch(x, MW_HOOK_MLP_OUT, l, gr, N * d);
            if (!dmo) return -1;
            const float *min = data(parallel ? &a->resid : &a->resid_mid);
            if (norm) {
                if (mlp_backward(x, l, a, dmo, data(&a->ln2_out), gn, 0, g) ||
                    layernorm_backward(x, gr, min, &a->ln2_mean, &a->ln2_scale, pw(&w->ln2_w, d, l),
                                       GW(ln2_w, d, l), GW(ln2_b, d, l), l, MW_HOOK_LN2_SCALE, MW_HOOK_LN2_NORMALIZED))
                    return -1;
            } else if (mlp_backward(x, l, a, dmo, min, gr, 1, g)) {
                return -1;
            }
            if (emit(x, MW_HOOK_RESID_MID, l, &r->g_resid)) return -1;
        }
        /* attention: from d resid_mid (d resid_post without an MLP, or in a parallel block) */
        const float *dao = emit_branch(x, MW_HOOK_ATTN_OUT, l, parallel ? gp : gr, N * d);
        if (!dao) return -1;
        if (wanted(x, MW_HOOK_RESULT, l)) {
            /* result[:, h] = z[:, h] @ W_O[h], attn_out = sum_h result + b_O: every head's result
             * gets d attn_out, and an edit of head h's reaches z through W_O[h] only */
            float *gres = buf(&r->g_result, N * H * d), *dWo = GW(W_O, Hd * d, l), *dbo = GW(b_O, d, l);
            const float *Wo = pw(&w->W_O, Hd * d, l), *z = data(&a->z);
            if (!gres) return -1;
            for (int64_t n = 0; n < N; n++)
                for (int64_t h = 0; h < H; h++) memcpy(gres + (n * H + h) * d, dao + n * d, (size_t)d * sizeof(float));
            if (dbo) mw_colsum_backward(dbo, dao, N, d);
            if (emit(x, MW_HOOK_RESULT, l, &r->g_result)) return -1;
            for (int64_t h = 0; h < H; h++) {
                /* dz[:, h] [N, dh] = d result[:, h] [N, d] @ W_O[h]^T; dW_O[h] [dh, d] += z[:, h]^T @ d result[:, h] */
                mw_sgemm(gz + h * dh, Hd, gres + h * d, H * d, 0, Wo + h * dh * d, d, 1, N, dh, d, 1.0f, 0.0f);
                if (dWo) mw_sgemm(dWo + h * dh * d, d, z + h * dh, Hd, 1, gres + h * d, H * d, 0, dh, d, N, 1.0f, 1.0f);
            }
        } else {
            mw_linear_backward(gz, 0, GW(W_O, Hd * d, l), GW(b_O, d, l), dao, data(&a->z),
                               pw(&w->W_O, Hd * d, l), N, Hd, d);
        }
        if (emit(x, MW_HOOK_Z, l, &r->g_z)) return -1;
        if (attention_backward(x, l, a)) return -1;
        if (rotary) {
            /* g_q, g_k are d of the rotated q and k (hook_rot_q/k); rotating back gives d hook_q/k */
            if (emit(x, MW_HOOK_ROT_K, l, &r->g_k) || emit(x, MW_HOOK_ROT_Q, l, &r->g_q)) return -1;
            mw_rotary_backward(gq, r->posid, N, H, dh, c->rotary_dim, c->rotary_base, c->rotary_adjacent_pairs);
            mw_rotary_backward(gk, r->posid, N, Gd / dh, dh, c->rotary_dim, c->rotary_base, c->rotary_adjacent_pairs);
        }
        if (emit(x, MW_HOOK_Q, l, &r->g_q) || emit(x, MW_HOOK_K, l, &r->g_k) || emit(x, MW_HOOK_V, l, &r->g_v))
            return -1;
        const float *in = data(norm ? &a->ln1_out : &a->resid), *qkin = shortformer ? data(&a->qk_in) : in;
        /* gn = d(input of Q and K), then + d(input of V): with shortformer the first part is
         * also the gradient of the positions added to the Q/K input */
        mw_linear_backward(gn, 0, GW(W_Q, d * Hd, l), GW(b_Q, Hd, l), gq, qkin, pw(&w->W_Q, d * Hd, l),
                           N, d, Hd);
        mw_linear_backward(gn, 1, GW(W_K, d * Gd, l), GW(b_K, Gd, l), gk, qkin, pw(&w->W_K, d * Gd, l),
                           N, d, Gd);
        if (gpos) mw_add_forward(gpos, gpos, gn, N * d);
        mw_linear_backward(gn, 1, GW(W_V, d * Gd, l), GW(b_V, Gd, l), gv, in, pw(&w->W_V, d * Gd, l),
                           N, d, Gd);
        if (norm) {
            if (layernorm_backward(x, gr, data(&a->resid), &a->ln1_mean, &a->ln1_scale, pw(&w->ln1_w, d, l),
                                   GW(ln1_w, d, l), GW(ln1_b, d, l), l, MW_HOOK_LN1_SCALE, MW_HOOK_LN1_NORMALIZED))
                return -1;
        } else {
            mw_add_forward(gr, gr, gn, N * d);
        }
        if (emit(x, MW_HOOK_RESID_PRE, l, &r->g_resid)) return -1;
    }
    /* embeddings: the residual stream started as embed (+ pos when standard) */
    const float *de = emit_branch(x, MW_HOOK_EMBED, -1, gr, N * d);
    if (!de) return -1;
    if (g) mw_embed_backward(mw_tensor_data(&g->W_E), r->tok, de, N, d);
    if (shortformer) {
        if (emit(x, MW_HOOK_POS_EMBED, -1, &r->g_pos)) return -1;
        if (g) mw_pos_backward(mw_tensor_data(&g->W_pos), gpos, r->posid, N, d);
    } else if (!rotary) {
        const float *dp = emit_branch(x, MW_HOOK_POS_EMBED, -1, gr, N * d);
        if (!dp) return -1;
        if (g) mw_pos_backward(mw_tensor_data(&g->W_pos), dp, r->posid, N, d);
    }
    return 0;
}
