/* model.h - a TransformerLens-style HookedTransformer in C: config, weights, one forward pass
 * with every hook point of hooks.def, parameterized by the config for both model families.
 *
 * Families (one code path, switched by the config):
 *   - GPT-2: pre-LayerNorm blocks (ln1 -> attention -> ln2 -> MLP), gelu_new MLP, learned
 *     positions added to the residual stream.
 *   - attention-only (the seed notebook's toy models): any n_layers, normalization None / LN /
 *     LNPre, positions 'standard' or 'shortformer' (W_pos added to the inputs of Q and K only),
 *     use_attn_result.
 *
 * Dimension legend used in every shape comment:
 *   B batch, P positions, d d_model, H n_heads, dh d_head, m d_mlp, L n_layers,
 *   V d_vocab, Vo d_vocab_out, C n_ctx.
 *
 * Weights are stored STACKED over layers, one mw_tensor per kind (W_Q [L,H,d,dh], ...), so the
 * model-level accessors of TransformerLens (model.W_Q) are the tensors themselves and the
 * state-dict entries ("blocks.3.attn.W_Q") are select(0, 3) views: no copies anywhere.
 *
 * Storage layout (what a backward pass over raw pointers needs to know):
 *   - W_Q, W_K, W_V: storage is [L, d, H, dh] contiguous (so that one layer is a plain
 *     [d, H*dh] matrix and one sgemm computes every head); the mw_tensor in mw_weights is the
 *     permuted view [L, H, d, dh] with strides (d*H*dh, dh, H*dh, 1).
 *   - every other weight is contiguous in the shape shown by MW_PARAMS below, with a leading L
 *     for per-block weights: W_O [L,H,dh,d] (one layer = a [H*dh, d] matrix), b_Q [L,H,dh],
 *     b_O [L,d], ln1_w [L,d], W_in [L,d,m], b_in [L,m], W_out [L,m,d], b_out [L,d],
 *     W_E [V,d], W_pos [C,d], W_U [d,Vo], b_U [Vo], ln_final_w [d].
 *   - weights a config does not use (MLP for attn_only, LN weights unless 'LN') are empty
 *     tensors (storage == NULL).
 *
 * Hooks: the caller says, before the pass, which (hook point, layer) pairs it wants (a byte per
 * slot, see mw_hook_slot); only those are materialized and handed to deliver(). The attention
 * pattern of a layer nobody asked for is computed one (batch, head) block at a time and never
 * stored whole. deliver() receives a BORROWED view over the model's activation buffer: it may
 * read it, copy it (mw_tensor_clone) or edit it in place; the pass continues from the edited
 * values, exactly where TransformerLens would use the hook's output. The view is only valid
 * during the call (the buffers are reused), so keep a clone, not the view. Returning -1 from
 * deliver stops the pass: mw_model_forward returns -1 and keeps the message deliver set.
 *
 * Activation buffers belong to the model, are sized for the largest [B, P] seen and reused:
 * a steady-state forward allocates only its outputs (logits, per-token loss, residual). A
 * training forward (keep_activations) keeps one set per block instead, for mw_model_backward.
 * A model is therefore not reentrant: one forward at a time per model.
 */
#ifndef MW_MODEL_H
#define MW_MODEL_H

#include <stdint.h>

#include "config.h"
#include "mw_tensor.h"

/* ---------------------------------------------------------------- hook points */
typedef enum {
#define MW_HOOK(ID, suffix, stage, kind) MW_HOOK_##ID,
#include "hooks.def"
#undef MW_HOOK
    MW_HOOK_COUNT
} mw_hook_id;

/* shape kinds of hooks.def */
typedef enum { MW_HK_BPD, MW_HK_BP1, MW_HK_BPHK, MW_HK_BHPP, MW_HK_BPHD, MW_HK_BPM, MW_HK_BPGK } mw_hook_kind;

const char *mw_hook_suffix(int id);   /* "attn.hook_pattern" (NULL when id is out of range) */
int mw_hook_stage(int id);            /* 0 before the blocks, 1 per block, 2 after */
mw_hook_kind mw_hook_kind_of(int id);
/* full name: "hook_embed", "blocks.3.attn.hook_pattern"; returns the length (snprintf) */
int mw_hook_name(char *buf, size_t n, int id, int layer);
/* parses a full name; layer is -1 for stage 0/2 hooks. -1 (no message) when not a hook name. */
int mw_hook_parse(const char *name, int *id, int *layer);

/* ---------------------------------------------------------------- config: config.h */

/* ---------------------------------------------------------------- weights
 * MW_PARAMS(X): every parameter once, in TransformerLens's state_dict order within a block.
 *   X(field, tl_name, per_block, d0, d1, d2)  with dims as MW_DIM_* (MW_DIM_NONE ends).
 * tl_name is the state-dict name without the "blocks.L." prefix for per-block params. */
typedef enum {
    MW_DIM_NONE = 0, MW_DIM_D, MW_DIM_H, MW_DIM_DH, MW_DIM_M, MW_DIM_V, MW_DIM_VO, MW_DIM_CTX,
    MW_DIM_KVH   /* key/value heads: n_key_value_heads (grouped-query attention), else n_heads */
} mw_dim;

#define MW_PARAMS(X)                                                   \
    X(W_E,        "embed.W_E",       0, MW_DIM_V,  MW_DIM_D,  MW_DIM_NONE) \
    X(W_pos,      "pos_embed.W_pos", 0, MW_DIM_CTX, MW_DIM_D, MW_DIM_NONE) \
    X(ln1_w,      "ln1.w",           1, MW_DIM_D,  MW_DIM_NONE, MW_DIM_NONE) \
    X(ln1_b,      "ln1.b",           1, MW_DIM_D,  MW_DIM_NONE, MW_DIM_NONE) \
    X(ln2_w,      "ln2.w",           1, MW_DIM_D,  MW_DIM_NONE, MW_DIM_NONE) \
    X(ln2_b,      "ln2.b",           1, MW_DIM_D,  MW_DIM_NONE, MW_DIM_NONE) \
    X(W_Q,        "attn.W_Q",        1, MW_DIM_H,  MW_DIM_D,  MW_DIM_DH)   \
    X(W_K,        "attn.W_K",        1, MW_DIM_KVH, MW_DIM_D, MW_DIM_DH)   \
    X(W_V,        "attn.W_V",        1, MW_DIM_KVH, MW_DIM_D, MW_DIM_DH)   \
    X(W_O,        "attn.W_O",        1, MW_DIM_H,  MW_DIM_DH, MW_DIM_D)    \
    X(b_Q,        "attn.b_Q",        1, MW_DIM_H,  MW_DIM_DH, MW_DIM_NONE) \
    X(b_K,        "attn.b_K",        1, MW_DIM_KVH, MW_DIM_DH, MW_DIM_NONE) \
    X(b_V,        "attn.b_V",        1, MW_DIM_KVH, MW_DIM_DH, MW_DIM_NONE) \
    X(b_O,        "attn.b_O",        1, MW_DIM_D,  MW_DIM_NONE, MW_DIM_NONE) \
    X(W_in,       "mlp.W_in",        1, MW_DIM_D,  MW_DIM_M,  MW_DIM_NONE) \
    X(b_in,       "mlp.b_in",        1, MW_DIM_M,  MW_DIM_NONE, MW_DIM_NONE) \
    X(W_gate,     "mlp.W_gate",      1, MW_DIM_D,  MW_DIM_M,  MW_DIM_NONE) \
    X(W_out,      "mlp.W_out",       1, MW_DIM_M,  MW_DIM_D,  MW_DIM_NONE) \
    X(b_out,      "mlp.b_out",       1, MW_DIM_D,  MW_DIM_NONE, MW_DIM_NONE) \
    X(mlp_ln_w,   "mlp.ln.w",        1, MW_DIM_M,  MW_DIM_NONE, MW_DIM_NONE) \
    X(mlp_ln_b,   "mlp.ln.b",        1, MW_DIM_M,  MW_DIM_NONE, MW_DIM_NONE) \
    X(ln_final_w, "ln_final.w",      0, MW_DIM_D,  MW_DIM_NONE, MW_DIM_NONE) \
    X(ln_final_b, "ln_final.b",      0, MW_DIM_D,  MW_DIM_NONE, MW_DIM_NONE) \
    X(W_U,        "unembed.W_U",     0, MW_DIM_D,  MW_DIM_VO, MW_DIM_NONE) \
    X(b_U,        "unembed.b_U",     0, MW_DIM_VO, MW_DIM_NONE, MW_DIM_NONE)

typedef enum {
#define MW_X(field, name, per_block, d0, d1, d2) MW_PARAM_##field,
    MW_PARAMS(MW_X)
#undef MW_X
    MW_PARAM_COUNT
} mw_param_id;

/* per-block params carry a leading L dim (stacked); see the layout notes at the top */
typedef struct mw_weights {
#define MW_X(field, name, per_block, d0, d1, d2) mw_tensor field;
    MW_PARAMS(MW_X)
#undef MW_X
} mw_weights;

typedef struct mw_run mw_run; /* activation buffers (model.c) */

typedef struct mw_model {
    mw_config cfg;
    mw_weights w;
    mw_run *run;
} mw_model;

/* Every weight of a model is a view of ONE flat float buffer (llm.c's params buffer), the
 * parameters one after the other in MW_PARAMS order, each in the storage layout above (absent
 * ones take no room). A training optimizer is one loop over it; gradients and optimizer moments
 * are buffers of the same size with the same views (mw_weights_over). */
int64_t mw_model_nparams(const mw_model *m);               /* floats in the flat buffer */
float *mw_model_flat(const mw_model *m, int64_t *n);        /* the buffer and its size */
int64_t mw_model_param_offset(const mw_model *m, int pid);  /* where param pid starts in it */
int64_t mw_model_param_numel(const mw_model *m, int pid);   /* its floats (0 when absent) */
/* w = the views of the model's layout over s (F32, at least mw_model_nparams floats); each
 * view holds a reference to s. Release with mw_weights_release. */
int mw_weights_over(mw_weights *w, const mw_model *m, mw_storage *s);
void mw_weights_release(mw_weights *w);
/* the field of w holding parameter pid (MW_PARAM_*) */
mw_tensor *mw_weights_param(mw_weights *w, int pid);

/* Builds a model with initialized weights as TransformerLens's init_weights ("gpt2" mode):
 * every W_* ~ N(0, initializer_range^2) drawn in MW_PARAMS order (a generator seeded with
 * cfg.seed, else the default one), biases 0, LayerNorm w 1 and b 0.
 * cfg is finished (mw_config_finish) first. NULL + message on failure. */
mw_model *mw_model_new(const mw_config *cfg);
void mw_model_free(mw_model *m);

/* does this config have the param at all (e.g. no W_in when attn_only) */
int mw_model_param_exists(const mw_model *m, int pid);
const char *mw_param_name(int pid);
/* the state-dict name of this model (grouped-query attention: "attn._W_K" ...) */
const char *mw_model_param_name(const mw_model *m, int pid);     /* the TransformerLens name, without "blocks.L." */
int mw_param_per_block(int pid);
/* full shape of one entry of the state dict ([H,d,dh] for blocks.L.attn.W_Q) */
int mw_model_param_shape(const mw_model *m, int pid, int64_t *shape); /* returns ndim */
/* looks up a state-dict name ("blocks.1.attn.W_Q", "embed.W_E"). Returns 0 and sets *pid and
 * *layer (-1 for global params); 1 for the ignored buffers (blocks.L.attn.mask / IGNORE);
 * -1 with a message for anything else. */
int mw_model_param_lookup(const mw_model *m, const char *name, int *pid, int *layer);
/* out = the state-dict entry as a view (one more reference); layer -1 for global params */
int mw_model_param_view(mw_tensor *out, const mw_model *m, int pid, int layer);
/* copies src (any dtype convertible to f32, same shape) into the entry named name; errors name
 * the entry and both shapes */
int mw_model_param_set(mw_model *m, const char *name, const mw_tensor *src);

/* ---------------------------------------------------------------- forward */
/* Does hook point id fire for this config (layer-independent)? */
int mw_model_hook_exists(const mw_model *m, int id);
/* Slot of (id, layer) in a want[] array of mw_hook_slots(m) bytes; layer is ignored for
 * stage 0/2 hooks. */
static inline int64_t mw_hook_slot(const mw_model *m, int id, int layer) {
    return (int64_t)id * m->cfg.n_layers + (mw_hook_stage(id) == 1 ? layer : 0);
}
static inline int64_t mw_hook_slots(const mw_model *m) {
    return (int64_t)MW_HOOK_COUNT * m->cfg.n_layers;
}
/* shape of hook point id for a [B, P] input; returns ndim */
int mw_model_hook_shape(const mw_model *m, int id, int64_t B, int64_t P, int64_t *shape);

/* deliver(ud, id, layer, act): act is a borrowed view (see the top of this file); layer is -1
 * for stage 0/2 hooks. Return 0 to continue, -1 (message set) to stop the pass. */
typedef int (*mw_deliver_fn)(void *ud, int id, int layer, mw_tensor *act);

/* A key/value cache for generation (made by mw_kv_cache_new, core/generate.h): for each layer
 * the keys (after the rotation of rotary models) and values of every position run so far, and
 * which of those positions are real tokens. A forward given one (mw_forward_opts.kv) runs only the
 * NEW positions of each row: their keys and values are appended, attention reads every cached
 * position, positions continue from the cache, and only the last position is unembedded. */
typedef struct mw_kv_cache {
    int64_t L, B, cap;    /* layers; rows; positions it holds (prompt + new tokens, not n_ctx) */
    int64_t len;          /* positions filled, the same for every row (left padding makes them so) */
    int64_t G, dh;        /* key/value heads (n_key_value_heads, else n_heads), d_head */
    float *k, *v;         /* [L, B, cap, G*dh] each */
    uint8_t *mask;        /* [B, cap] 1 = a real token, 0 = padding */
} mw_kv_cache;

typedef struct mw_forward_opts {
    const mw_tensor *tokens;         /* i64 [B,P]; needed unless start_at_layer > 0 and no loss */
    const mw_tensor *attention_mask; /* [B,P] any dtype, nonzero = real token; NULL = no padding */
    const mw_tensor *residual;       /* f32 [B,P,d]: the input of block start_at_layer, used
                                        when start_at_layer > 0 */
    int start_at_layer;              /* first block to run (0 = from the tokens); negative from end */
    int stop_at_layer;               /* one past the last block (n_layers, or negative from end);
                                        < n_layers: out->residual is the result, no logits */
    int return_residual;             /* stop after block stop_at_layer - 1 and return the residual
                                        even when stop_at_layer == n_layers (no ln_final) */
    int want_logits;                 /* fill out->logits [B,P,Vo] */
    int want_loss;                   /* fill out->loss and out->loss_per_token [B,P-1] */
    int64_t loss_from, loss_to;      /* only the predictions of positions [loss_from, loss_to) of
                                        [B,P-1] count in the loss (0, 0: all); without the logits the
                                        others are never unembedded (ablation sweeps over a slice) */
    int last_only;                   /* logits [B,1,Vo] of each row's last real position only (the
                                        last one the attention_mask marks; P-1 without a mask);
                                        inference without the loss only */
    int keep_activations;            /* training: keep every block's activations (one buffer per
                                        block instead of the reused ones) for mw_model_backward;
                                        needs the whole model (start 0, stop n_layers) */
    mw_kv_cache *kv;                 /* generation: tokens [B,P] are the next P positions of the
                                        cached rows, attention_mask [B,P] their padding; appends
                                        to kv; hooks see these P positions (attn_scores and
                                        pattern [B,H,P,kv->len+P]); out->logits is [B,1,Vo], the
                                        last position. Whole model only, no loss. */
    const uint8_t *want;             /* mw_hook_slots(m) bytes, nonzero = deliver; NULL = none */
    mw_deliver_fn deliver;
    void *ud;
} mw_forward_opts;

typedef struct mw_forward_out {
    mw_tensor logits;          /* f32 [B,P,Vo], the caller's (the model keeps a reference to its
                                  storage and reuses it next call only once the caller has
                                  released it) */
    mw_tensor residual;        /* f32 [B,P,d] when stopped before the end (or return_residual),
                                  a new tensor */
    mw_tensor loss_per_token;  /* f32 [B,P-1]: -log p(token[t+1]); 0 where masked */
    double loss;               /* mean over the unmasked next-token predictions */
} mw_forward_out;

void mw_forward_opts_default(mw_forward_opts *o, const mw_model *m); /* all blocks, logits */
/* Runs the pass. out is zeroed first; on failure every output is released. */
int mw_model_forward(mw_model *m, const mw_forward_opts *o, mw_forward_out *out);
void mw_forward_out_release(mw_forward_out *out);

/* 0 when the backward pass covers this config, else -1 with a message naming what it lacks (an
 * act_fn without a derivative in mw_act_backward; every norm, position and block kind has one) */
int mw_model_backward_supported(const mw_config *c);
/* ---------------------------------------------------------------- backward
 * After a forward with keep_activations, mw_model_backward runs the pass in reverse (the
 * kernels of kernels.c, each beside its forward). The gradient starts from
 *   - grad_logits [B,P,Vo] when given (d metric / d logits, for any metric of the logits), else
 *   - the forward's mean next-token loss (it must have had want_loss).
 * Parameter gradients are ADDED into grads (views of the model's layout over another buffer,
 * see mw_weights_over; the caller zeroes them); grads NULL computes none (cheaper: only the
 * gradients at hook points). Hooks: deliver(ud, id, layer, grad) receives the gradient of the
 * output w.r.t. hook point (id, layer) as a borrowed view, in reverse order of the forward; edits
 * change what flows further back (an edit of attn_out's or mlp_out's gradient reaches only that
 * branch, not the residual stream). Every hook point has a gradient (attn.hook_result's edits
 * reach z through that head's W_O; shortformer's hook_pos_embed gets the sum over blocks of the
 * Q/K input's). One backward per forward: it consumes the kept logits. */
typedef struct mw_backward_opts {
    mw_weights *grads;
    const mw_tensor *grad_logits;
    const uint8_t *want;             /* mw_hook_slots(m) bytes, nonzero = deliver; NULL = none */
    mw_deliver_fn deliver;
    void *ud;
} mw_backward_opts;
int mw_model_backward(mw_model *m, const mw_backward_opts *o);

/* bytes currently held by the model's activation buffers (for the benchmark's memory report) */
int64_t mw_model_buffer_bytes(const mw_model *m);
/* frees the activation buffers (the next forward allocates them again) */
void mw_model_trim(mw_model *m);

#endif
