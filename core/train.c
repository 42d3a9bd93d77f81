/* train.c - the trainer: an mw_model trained with its own forward and backward passes
 * (model.c, kernels.c), AdamW over the flat parameter buffer, checkpoints and exports through
 * vendor/safetensors.h, and the seed notebook's probes run as hooks on the model's forward.
 * See train.h; dimension legend as model.h (B batch, T positions, L layers, H heads). */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_tensor.h"
#include "safetensors.h"

struct mw_trainer {
    mw_model *m;
    mw_storage *grad_s, *m_s, *v_s; /* [n] gradients, AdamW first and second moments */
    mw_weights grads;              /* the model's layout over grad_s (what mw_model_backward fills) */
    int64_t n;                     /* parameters */
    int64_t step;
};

/* field names of MW_PARAMS ("W_Q"): the tensor names of a checkpoint */
static const char *const field_name[MW_PARAM_COUNT] = {
#define MW_X(field, name, per_block, d0, d1, d2) #field,
    MW_PARAMS(MW_X)
#undef MW_X
};

mw_trainer *mw_trainer_new(const mw_config *cfg) {
    mw_trainer *t = calloc(1, sizeof *t);
    if (!t) { mw_seterr("train: out of memory"); return NULL; }
    t->m = mw_model_new(cfg);
    if (!t->m) { free(t); return NULL; }
    if (mw_model_backward_supported(&t->m->cfg)) { mw_model_free(t->m); free(t); return NULL; }
    t->n = mw_model_nparams(t->m);
    t->grad_s = mw_storage_new(MW_F32, t->n);
    t->m_s = mw_storage_new(MW_F32, t->n);
    t->v_s = mw_storage_new(MW_F32, t->n);
    if (!t->grad_s || !t->m_s || !t->v_s || mw_weights_over(&t->grads, t->m, t->grad_s)) {
        mw_trainer_free(t);
        return NULL;
    }
    return t;
}

void mw_trainer_free(mw_trainer *t) {
    if (!t) return;
    mw_weights_release(&t->grads);
    if (t->grad_s) mw_storage_release(t->grad_s);
    if (t->m_s) mw_storage_release(t->m_s);
    if (t->v_s) mw_storage_release(t->v_s);
    mw_model_free(t->m);
    free(t);
}

mw_model *mw_trainer_model(mw_trainer *t) { return t->m; }
const mw_config *mw_trainer_config(const mw_trainer *t) { return &t->m->cfg; }
float *mw_trainer_params(mw_trainer *t, int64_t *n) { return mw_model_flat(t->m, n); }
float *mw_trainer_grads(mw_trainer *t, int64_t *n) { *n = t->n; return (float *)t->grad_s->data; }
int64_t mw_trainer_nsteps(const mw_trainer *t) { return t->step; }

/* ------------------------------------------------------------------ forward and backward */

/* tok = an int64 [B,T] tensor over the caller's ids (no copy; valid while they are) */
static int wrap_tokens(mw_tensor *tok, const int64_t *tokens, int64_t B, int64_t T, const char *who) {
    memset(tok, 0, sizeof *tok);
    int64_t n;
    if (B <= 0 || T <= 0)
        return mw_seterr("train: %s: batch [%lld,%lld] must be positive", who, (long long)B, (long long)T);
    if (mw_size_mul(who, B, T, &n)) return -1;
    tok->storage = mw_storage_wrap(MW_I64, n, (void *)tokens, NULL, NULL);
    if (!tok->storage) return -1;
    tok->dtype = MW_I64;
    tok->ndim = 2;
    tok->shape[0] = B; tok->shape[1] = T;
    tok->stride[0] = T; tok->stride[1] = 1;
    return 0;
}

int mw_trainer_backward(mw_trainer *t) {
    memset(t->grad_s->data, 0, (size_t)t->n * sizeof(float));
    mw_backward_opts bo = {.grads = &t->grads};
    return mw_model_backward(t->m, &bo);
}

int mw_trainer_forward(mw_trainer *t, const int64_t *tokens, int64_t B, int64_t T, int grads, double *loss) {
    mw_tensor tok;
    if (wrap_tokens(&tok, tokens, B, T, "forward")) return -1;
    mw_forward_opts o;
    mw_forward_opts_default(&o, t->m);
    o.tokens = &tok;
    o.want_logits = 0;
    o.want_loss = 1;
    o.keep_activations = grads;
    mw_forward_out out;
    int rc = mw_model_forward(t->m, &o, &out);
    mw_tensor_release(&tok);
    if (rc) return -1;
    *loss = out.loss;
    mw_forward_out_release(&out);
    return grads ? mw_trainer_backward(t) : 0;
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
    int64_t n;
    float *w = mw_model_flat(t->m, &n), *g = t->grad_s->data, *m1 = t->m_s->data, *m2 = t->v_s->data;
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    double norm = sqrt(ss);
    if (gnorm) *gnorm = norm;
    if (!isfinite(norm)) return mw_seterr("train: step %lld: gradient norm is not finite", (long long)t->step);
    float gs = (o->clip > 0 && norm > o->clip) ? (float)(o->clip / norm) : 1.f;
    double lr = mw_adamw_lr(o, t->step);
    t->step++;
    double bc1 = 1 - pow(o->beta1, (double)t->step), bc2 = 1 - pow(o->beta2, (double)t->step);
    float b1 = (float)o->beta1, b2 = (float)o->beta2;
    for (int pid = 0; pid < MW_PARAM_COUNT; pid++) {
        if (!mw_model_param_exists(t->m, pid)) continue;
        int64_t a = mw_model_param_offset(t->m, pid), e = a + mw_model_param_numel(t->m, pid);
        /* weight decay on the W_* matrices (embeddings too), not on biases nor LayerNorm */
        float wd = strstr(mw_param_name(pid), "W_") ? (float)(lr * o->weight_decay) : 0.f;
        for (int64_t i = a; i < e; i++) {
            float gi = g[i] * gs;
            m1[i] = b1 * m1[i] + (1 - b1) * gi;
            m2[i] = b2 * m2[i] + (1 - b2) * gi * gi;
            double mh = m1[i] / bc1, vh = m2[i] / bc2;
            w[i] -= (float)(lr * mh / (sqrt(vh) + o->eps)) + wd * w[i];
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ probes */

/* per-head sums of one diagonal of every layer's pattern, gathered by a hook */
typedef struct {
    int64_t offset;   /* diagonal: key = query + offset (offset <= 0) */
    int64_t H;
    double *sum;      /* [L*H] */
} diag_ctx;

static int diag_deliver(void *ud, int id, int layer, mw_tensor *act) {
    diag_ctx *x = ud;
    (void)id;
    /* act: the pattern [B,H,P,P], contiguous */
    int64_t B = act->shape[0], H = act->shape[1], P = act->shape[2];
    const float *A = mw_tensor_data(act);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            const float *M = A + (b * H + h) * P * P;
            double s = 0;
            for (int64_t q = -x->offset; q < P; q++) s += M[q * P + q + x->offset];
            x->sum[layer * x->H + h] += s;
        }
    return 0;
}

/* forward on tokens [B,T] with the pattern of every layer delivered to diag_deliver; the
 * per-token losses [B,T-1] into out (when out != NULL) */
static int diag_forward(mw_trainer *t, const int64_t *tokens, int64_t B, int64_t T, diag_ctx *dx,
                        mw_forward_out *out) {
    mw_model *m = t->m;
    mw_tensor tok;
    if (wrap_tokens(&tok, tokens, B, T, "probe")) return -1;
    uint8_t *want = calloc((size_t)mw_hook_slots(m), 1);
    if (!want) { mw_tensor_release(&tok); return mw_seterr("train: probe: out of memory"); }
    for (int l = 0; l < m->cfg.n_layers; l++) want[mw_hook_slot(m, MW_HOOK_PATTERN, l)] = 1;
    mw_forward_opts o;
    mw_forward_opts_default(&o, m);
    o.tokens = &tok;
    o.want_logits = 0;
    o.want_loss = 1;
    o.want = want;
    o.deliver = diag_deliver;
    o.ud = dx;
    int rc = mw_model_forward(m, &o, out);
    free(want);
    mw_tensor_release(&tok);
    return rc;
}

int mw_trainer_induction(mw_trainer *t, int64_t seq_len, int64_t batch, uint64_t seed, double *ind,
                         double *first, double *second) {
    const mw_config *c = &t->m->cfg;
    /* compared before any arithmetic: 2 seq_len + 1 cannot overflow past this check */
    if (seq_len < 2 || batch < 1 || seq_len > (c->n_ctx - 1) / 2)
        return mw_seterr("train: induction: [%lld, 2*%lld+1] repeated tokens do not fit n_ctx %lld (seq_len >= 2, "
                         "batch >= 1)", (long long)batch, (long long)seq_len, (long long)c->n_ctx);
    int64_t T = 2 * seq_len + 1, H = c->n_heads, L = c->n_layers, bytes;
    if (mw_size_mul("train: induction", batch, T * (int64_t)sizeof(int64_t), &bytes)) return -1;
    if (c->d_vocab < 2) return mw_seterr("train: induction: the vocabulary needs at least 2 ids");
    int64_t *tok = malloc((size_t)bytes);
    if (!tok) return mw_seterr("train: induction: out of memory");
    uint64_t s = seed;
    for (int64_t b = 0; b < batch; b++) {
        tok[b * T] = 0;
        for (int64_t i = 0; i < seq_len; i++) {
            int64_t id = 1 + (int64_t)(mw_splitmix64(&s) % (uint64_t)(c->d_vocab - 1));
            tok[b * T + 1 + i] = tok[b * T + 1 + seq_len + i] = id;
        }
    }
    for (int64_t i = 0; i < L * H; i++) ind[i] = 0;
    diag_ctx dx = {1 - seq_len, H, ind};
    mw_forward_out out;
    int rc = diag_forward(t, tok, batch, T, &dx, &out);
    free(tok);
    if (rc) return -1;
    /* the diagonal at offset 1 - seq_len holds T - (seq_len - 1) entries per row */
    for (int64_t i = 0; i < L * H; i++) ind[i] /= (double)(batch * (T - seq_len + 1));
    const float *tl = mw_tensor_data(&out.loss_per_token);
    double f = 0, sc = 0;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < T - 1; i++) {
            if (i < seq_len) f -= tl[b * (T - 1) + i];
            else sc -= tl[b * (T - 1) + i];
        }
    if (first) *first = f / (double)(batch * seq_len);
    if (second) *second = sc / (double)(batch * seq_len);
    mw_forward_out_release(&out);
    return 0;
}

int mw_trainer_prev_token(mw_trainer *t, const int64_t *tokens, int64_t B, int64_t T, double *prev) {
    int64_t H = t->m->cfg.n_heads, L = t->m->cfg.n_layers;
    if (T < 2) return mw_seterr("train: prev_token: needs at least 2 positions");
    for (int64_t i = 0; i < L * H; i++) prev[i] = 0;
    diag_ctx dx = {-1, H, prev};
    mw_forward_out out;
    if (diag_forward(t, tokens, B, T, &dx, &out)) return -1;
    mw_forward_out_release(&out);
    for (int64_t i = 0; i < L * H; i++) prev[i] /= (double)(B * (T - 1));
    return 0;
}

/* ------------------------------------------------------------------ checkpoints and exports */

/* the config fields kept in a checkpoint's metadata; loading checks that they match */
#define CKPT_FIELDS(X) X(d_model) X(d_head) X(n_heads) X(n_layers) X(n_ctx) X(d_vocab) X(d_mlp) X(d_vocab_out) \
    X(attn_only) X(normalization_type) X(positional_embedding_type) X(act_fn) X(use_attn_scale) X(use_attn_result) \
    X(gated_mlp) X(n_key_value_heads) X(parallel_attn_mlp) X(rotary_dim) X(rotary_adjacent_pairs) X(final_rms)

/* writes ts [n] and the metadata pairs to path through st_write (atomic) */
static int write_file(const char *path, const char *what, const st_write_tensor *ts, size_t n, const char *const *keys,
                      const char *const *vals, size_t nmeta) {
    char err[512];
    if (st_write(path, ts, n, keys, vals, nmeta, err, sizeof err)) return mw_seterr("train: %s: %s", what, err);
    return 0;
}

int mw_trainer_save(const mw_trainer *t, const char *path) {
    const mw_model *m = t->m;
    const mw_config *c = &m->cfg;
    enum { NMETA = 24 };
    const char *keys[NMETA];
    char vals[NMETA][32];
    const char *vp[NMETA];
    size_t nm = 0;
    keys[nm] = "format"; snprintf(vals[nm], sizeof vals[nm], "miwb-train"); nm++;
    keys[nm] = "step"; snprintf(vals[nm], sizeof vals[nm], "%lld", (long long)t->step); nm++;
#define MW_X(f) keys[nm] = #f; snprintf(vals[nm], sizeof vals[nm], "%lld", (long long)c->f); nm++;
    CKPT_FIELDS(MW_X)
#undef MW_X
    for (size_t i = 0; i < nm; i++) vp[i] = vals[i];
    st_write_tensor ts[3 * MW_PARAM_COUNT];
    char names[3 * MW_PARAM_COUNT][32];
    int64_t shapes[3 * MW_PARAM_COUNT][4];
    static const char *const kinds[3] = {"", "adam_m.", "adam_v."};
    int64_t nflat;
    const float *bufs[3] = {mw_model_flat(m, &nflat), t->m_s->data, t->v_s->data};
    size_t n = 0;
    for (int k = 0; k < 3; k++)
        for (int pid = 0; pid < MW_PARAM_COUNT; pid++) {
            if (!mw_model_param_exists(m, pid)) continue;
            snprintf(names[n], sizeof names[n], "%s%s", kinds[k], field_name[pid]);
            /* the stacked storage shape: [L] + the entry's shape, W_Q/K/V as [L, d, heads, dh]
             * (W_K/V: the key/value heads) */
            int nd = 0;
            if (mw_param_per_block(pid)) shapes[n][nd++] = c->n_layers;
            if (pid == MW_PARAM_W_Q || pid == MW_PARAM_W_K || pid == MW_PARAM_W_V) {
                int64_t entry[3];
                mw_model_param_shape(m, pid, entry);
                shapes[n][nd++] = c->d_model;
                shapes[n][nd++] = entry[0];
                shapes[n][nd++] = c->d_head;
            } else {
                nd += mw_model_param_shape(m, pid, shapes[n] + nd);
            }
            ts[n] = (st_write_tensor){names[n], ST_F32, nd, shapes[n], bufs[k] + mw_model_param_offset(m, pid)};
            n++;
        }
    return write_file(path, "save", ts, n, keys, vp, nm);
}

/* d_model ... d_mlp are in every checkpoint; the other fields only in those written since the
 * trainer became the model's */
static int ckpt_required(const char *field) {
    static const char *const req[] = {"d_model", "d_head", "n_heads", "n_layers", "n_ctx", "d_vocab", "d_mlp"};
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if (!strcmp(field, req[i])) return 1;
    return 0;
}

int mw_trainer_load(mw_trainer *t, const char *path) {
    mw_model *m = t->m;
    const mw_config *c = &m->cfg;
    st_file f;
    char err[512];
    if (st_open(&f, path, err, sizeof err)) return mw_seterr("train: load: %s", err);
    int rc = -1;
    const char *step = st_metadata_get(&f, "step");
    if (!step) { mw_seterr("train: load: %s: no __metadata__.step (not a miwb training checkpoint)", path); goto done; }
    /* every field must match; d_model ... d_mlp must be present (older checkpoints lack the rest) */
#define MW_X(fl) { const char *v_ = st_metadata_get(&f, #fl); \
        if ((v_ || ckpt_required(#fl)) && (!v_ || atoll(v_) != (long long)c->fl)) { \
            mw_seterr("train: load: %s: " #fl " is %s in the file, %lld in the model", path, v_ ? v_ : "missing", \
                      (long long)c->fl); goto done; } }
    CKPT_FIELDS(MW_X)
#undef MW_X
    float *bufs[3];
    int64_t nflat;
    bufs[0] = mw_model_flat(m, &nflat);
    bufs[1] = t->m_s->data;
    bufs[2] = t->v_s->data;
    static const char *const kinds[3] = {"", "adam_m.", "adam_v."};
    for (int k = 0; k < 3; k++)
        for (int pid = 0; pid < MW_PARAM_COUNT; pid++) {
            if (!mw_model_param_exists(m, pid)) continue;
            char name[64];
            snprintf(name, sizeof name, "%s%s", kinds[k], field_name[pid]);
            const st_tensor *e = st_find(&f, name);
            int64_t numel = mw_model_param_numel(m, pid);
            if (!e || e->dtype != ST_F32 || e->numel != numel) {
                mw_seterr("train: load: %s: tensor '%s' missing, not F32, or not of %lld values", path, name,
                          (long long)numel);
                goto done;
            }
            memcpy(bufs[k] + mw_model_param_offset(m, pid), e->data, (size_t)numel * sizeof(float));
        }
    t->step = atoll(step);
    rc = 0;
done:
    st_close(&f);
    return rc;
}

int mw_trainer_export(const mw_trainer *t, const char *path) {
    const mw_model *m = t->m;
    int L = (int)m->cfg.n_layers;
    size_t cap = (size_t)MW_PARAM_COUNT * (size_t)(L + 1), n = 0;
    st_write_tensor *ts = calloc(cap, sizeof *ts);
    mw_tensor *vs = calloc(cap, sizeof *vs);
    char (*names)[64] = calloc(cap, sizeof *names);
    int rc = -1;
    if (!ts || !vs || !names) { mw_seterr("train: export: out of memory"); goto done; }
    for (int pid = 0; pid < MW_PARAM_COUNT; pid++) {
        if (!mw_model_param_exists(m, pid)) continue;
        int per = mw_param_per_block(pid);
        for (int l = per ? 0 : -1; l < (per ? L : 0); l++) {
            /* the state-dict entry, contiguous (W_Q [H,d,dh] is a permuted view of the storage) */
            mw_tensor v;
            if (mw_model_param_view(&v, m, pid, l)) goto done;
            int r2 = mw_tensor_contiguous(&vs[n], &v);
            mw_tensor_release(&v);
            if (r2) goto done;
            /* TransformerLens's names (grouped-query attention: attn._W_K ...) */
            if (per) snprintf(names[n], sizeof names[n], "blocks.%d.%s", l, mw_model_param_name(m, pid));
            else snprintf(names[n], sizeof names[n], "%s", mw_model_param_name(m, pid));
            ts[n] = (st_write_tensor){names[n], ST_F32, vs[n].ndim, vs[n].shape, mw_tensor_data(&vs[n])};
            n++;
        }
    }
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)t->step);
    const char *keys[2] = {"format", "step"}, *vals[2] = {"pt", step};
    rc = write_file(path, "export", ts, n, keys, vals, 2);
done:
    for (size_t i = 0; vs && i < n; i++) mw_tensor_release(&vs[i]);
    free(ts);
    free(vs);
    free(names);
    return rc;
}
