/* train.h - training miwb's transformers: forward with saved activations, backward, AdamW,
 * token datasets, checkpoints.
 *
 * The model is the HookedTransformer of model.h (both families: GPT-2-like blocks with LayerNorm
 * and a gelu_new MLP, and attention-only blocks with normalization None / LN / LNPre, standard or
 * shortformer positions), in one flat float buffer so that the optimizer is one loop.
 *
 * Dimension legend: B batch, T positions, d d_model, H n_heads, dh d_head, HD = H*dh,
 * m d_mlp, L n_layers, V d_vocab, C n_ctx.
 *
 * Parameter layout (mw_train_param_info gives each one's offset and shape), stacked over layers
 * like model.h's storage: W_E [V,d], W_pos [C,d], ln1_w/ln1_b [L,d], W_Q/W_K/W_V [L,d,HD]
 * (one layer is the [d, H*dh] matrix whose columns h*dh..(h+1)*dh-1 are head h, i.e. TL's
 * W_Q[h] = [d,dh]), b_Q/b_K/b_V [L,HD], W_O [L,HD,d], b_O [L,d], ln2_w/ln2_b [L,d],
 * W_in [L,d,m], b_in [L,m], W_out [L,m,d], b_out [L,d], ln_final_w/b [d], W_U [d,V], b_U [V].
 * Parameters a config does not use have size 0.
 *
 * Loss: mean next-token cross-entropy over the B*(T-1) predictions of tokens[:, 1:] from
 * positions 0..T-2, as TransformerLens's return_type="loss".
 * Determinism: the same seed, data and thread count give the same numbers; the only threads are
 * OpenBLAS's (set its count with openblas_set_num_threads or OPENBLAS_NUM_THREADS).
 */
#ifndef MW_TRAIN_H
#define MW_TRAIN_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MW_TNORM_NONE = 0, MW_TNORM_LN, MW_TNORM_LNPRE } mw_tnorm;

typedef struct mw_train_config {
    int64_t d_model, d_head, n_heads, n_layers, n_ctx, d_vocab, d_mlp;
    int attn_only;        /* no MLP (d_mlp ignored) */
    mw_tnorm norm;        /* normalization_type */
    int shortformer;      /* positional_embedding_type 'shortformer' (else 'standard') */
    double eps;           /* LayerNorm epsilon (1e-5) */
    double init_range;    /* std of W_* at init; <= 0: 0.8/sqrt(d_model) as TransformerLens */
    uint64_t seed;        /* initialization */
} mw_train_config;

/* parameter ids, in the order of the flat buffer */
#define MW_TPARAMS(X) \
    X(W_E) X(W_pos) X(ln1_w) X(ln1_b) X(W_Q) X(W_K) X(W_V) X(b_Q) X(b_K) X(b_V) X(W_O) X(b_O) \
    X(ln2_w) X(ln2_b) X(W_in) X(b_in) X(W_out) X(b_out) X(ln_final_w) X(ln_final_b) X(W_U) X(b_U)
typedef enum {
#define MW_X(name) MW_TP_##name,
    MW_TPARAMS(MW_X)
#undef MW_X
    MW_TP_COUNT
} mw_tparam;

typedef struct mw_train_param {
    const char *name;     /* "W_Q" */
    size_t offset, numel; /* in floats, into the flat buffer; numel 0 = unused by this config */
    int ndim;
    int64_t shape[3];     /* stacked storage shape, e.g. [L,d,HD] */
    int decay;            /* gets weight decay: the W_* matrices (embeddings too), not biases nor LayerNorm */
} mw_train_param;

typedef struct mw_trainer mw_trainer;

/* Allocates parameters (initialized as TransformerLens: W_* ~ N(0, init_range^2) in the order
 * of the flat buffer from a generator seeded with cfg->seed, biases 0, LayerNorm w 1), gradients,
 * optimizer state, and activations for batches up to [maxB, maxT]. NULL + message on failure. */
mw_trainer *mw_trainer_new(const mw_train_config *cfg, int64_t maxB, int64_t maxT);
void mw_trainer_free(mw_trainer *t);
const mw_train_config *mw_trainer_config(const mw_trainer *t);
float *mw_trainer_params(mw_trainer *t, size_t *n);   /* [n] the flat buffer (writable) */
float *mw_trainer_grads(mw_trainer *t, size_t *n);
const mw_train_param *mw_trainer_param(const mw_trainer *t, int id);

/* Forward pass on tokens [B,T] (ids < V), keeping activations; *loss = mean cross-entropy.
 * When grads is nonzero, also runs the backward pass and sets the gradients (overwritten). */
int mw_trainer_forward(mw_trainer *t, const int32_t *tokens, int64_t B, int64_t T, int grads,
                       double *loss);
/* after a forward: the attention pattern of layer l, [B,H,T,T] (row q: softmax over keys <= q) */
const float *mw_trainer_pattern(const mw_trainer *t, int64_t l);
/* after a forward: log-probs are not stored; this gives -log p(tokens[b,t+1]) per position,
 * [B,T-1] into out */
int mw_trainer_token_losses(const mw_trainer *t, float *out);

/* ---------------------------------------------------------------- probes of the circuits
 * Induction: a forward pass on [BOS, R, R] (R: seq_len ids drawn uniformly from 1..V-1 by a
 * splitmix64 stream seeded with seed; BOS = 0), batch rows; score of head (l, h) = the mean over
 * rows of the pattern's diagonal at offset 1 - seq_len (torch.diagonal(pattern, 1 - seq_len)),
 * as the seed notebook's induction_score_hook. first/second: mean log-prob of the tokens of the
 * first and second copy of R (predictions from positions 0..seq_len-1 and seq_len..2 seq_len-1).
 * ind: [L*H]. Needs a trainer built for at least [batch, 2 seq_len + 1]. */
int mw_trainer_induction(mw_trainer *t, int64_t seq_len, int64_t batch, uint64_t seed, double *ind,
                         double *first, double *second);
/* Previous-token score of every head on tokens [B,T]: the mean of the pattern's diagonal at
 * offset -1 (the seed notebook's prev_attn_detector). prev: [L*H]. */
int mw_trainer_prev_token(mw_trainer *t, const int32_t *tokens, int64_t B, int64_t T, double *prev);

/* Writes the weights as a safetensors file with TransformerLens's state-dict names and shapes
 * (embed.W_E [V,d], pos_embed.W_pos [C,d], blocks.L.attn.W_Q [H,d,dh], b_Q [H,dh], W_O [H,dh,d],
 * b_O [d], blocks.L.ln1.w ..., mlp.W_in [d,m] ..., ln_final.w/b, unembed.W_U [d,V], b_U [V]);
 * metadata format "pt". */
int mw_trainer_export(const mw_trainer *t, const char *path);

/* ---------------------------------------------------------------- optimizer */
typedef struct mw_adamw_opts {
    double lr, min_lr;       /* peak and final learning rate */
    int64_t warmup, steps;   /* linear warm-up from 0 over `warmup` steps, cosine to min_lr at `steps` */
    double beta1, beta2, eps, weight_decay, clip; /* clip: max global gradient norm (<= 0: none) */
} mw_adamw_opts;
void mw_adamw_default(mw_adamw_opts *o); /* lr 1e-3, min_lr 1e-4, betas (0.9, 0.95), eps 1e-8, wd 0.1, clip 1 */
double mw_adamw_lr(const mw_adamw_opts *o, int64_t step); /* the schedule at step (0-based) */
/* one AdamW update with the current gradients (clipped first); returns the gradient norm
 * before clipping in *gnorm. Decay applies to the W_* matrices only (not biases, LayerNorm). */
int mw_trainer_step(mw_trainer *t, const mw_adamw_opts *o, double *gnorm);
int64_t mw_trainer_nsteps(const mw_trainer *t); /* updates done so far */

/* ---------------------------------------------------------------- checkpoints
 * A safetensors file with the parameters ("W_Q" ... in the stacked layout above), the AdamW
 * moments ("adam_m.W_Q", "adam_v.W_Q"), and metadata: step, the config fields. */
int mw_trainer_save(const mw_trainer *t, const char *path);
/* restores parameters, moments and step into t (whose config must match the file's) */
int mw_trainer_load(mw_trainer *t, const char *path);

/* ---------------------------------------------------------------- token datasets
 * File format (little-endian): a 32-byte header
 *   "MWTOKENS" | uint32 version (1) | uint32 bytes per id (2 or 4) | uint64 n_tokens |
 *   uint32 vocab_size | uint32 eot id
 * followed by n_tokens ids. Opened with mmap. */
typedef struct mw_dataset {
    const void *map; size_t map_size;
    const void *ids; int width; int64_t n; int64_t vocab; int64_t eot;
} mw_dataset;
int mw_dataset_write(const char *path, const int32_t *ids, int64_t n, int64_t vocab, int64_t eot);
int mw_dataset_open(mw_dataset *d, const char *path);
void mw_dataset_close(mw_dataset *d);
static inline int32_t mw_dataset_get(const mw_dataset *d, int64_t i) {
    return d->width == 2 ? (int32_t)((const uint16_t *)d->ids)[i] : (int32_t)((const uint32_t *)d->ids)[i];
}
/* fills tokens [B,T]: each row is [bos, ids[o], ..., ids[o+T-2]] at a random offset o drawn
 * from a generator in *state (splitmix64); bos < 0 takes T ids with no BOS */
void mw_dataset_batch(const mw_dataset *d, uint64_t *state, int32_t *tokens, int64_t B, int64_t T,
                      int32_t bos);
/* as mw_dataset_batch, with two kinds of rows that reward induction heads:
 *  - with probability repeat_frac, a row repeats its own opening: after BOS, the first a ids of
 *    the window (a uniform in [8, (T-1)/2]) appear twice, then the window goes on
 *    ([bos, x0..x(a-1), x0..x(a-1), xa, ...], cut to T): English text quoting itself;
 *  - with probability random_frac, a row opens with a sequence R of a ids drawn uniformly from
 *    1..vocab-1 (a uniform in [8, (T-1)/2]), repeated once: [bos, R, R, x0, x1, ...] (the
 *    repeated-random-tokens pattern of the seed notebook, as a curriculum);
 *  - the other rows are plain windows.
 * A small model trained on a few million tokens of plain text does not form induction heads (it
 * sees too few long repeats); these rows make them form within a short run. */
void mw_dataset_batch_repeat(const mw_dataset *d, uint64_t *state, int32_t *tokens, int64_t B, int64_t T,
                             int32_t bos, double repeat_frac, double random_frac);

#endif
