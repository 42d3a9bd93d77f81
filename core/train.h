/* train.h - training miwb's HookedTransformer: the trainer owns an mw_model (model.h) and runs
 * its one forward pass with keep_activations, its backward pass (mw_model_backward), AdamW over
 * the flat parameter buffer, checkpoints, exports and the probes of the seed notebook.
 *
 * Everything the model honours, the trainer trains: both families, normalization None / LN /
 * LNPre, standard or shortformer positions, act_fn (gelu_new, gelu, relu), use_attn_scale,
 * use_attn_result, d_vocab_out. The parameters are the model's flat buffer (MW_PARAMS order, the
 * storage layout of model.h: W_Q [L,d,H,dh] ...); gradients and the AdamW moments are buffers of
 * the same layout.
 *
 * Loss: mean next-token cross-entropy over the B*(T-1) predictions of tokens[:, 1:] from
 * positions 0..T-2, as TransformerLens's return_type="loss" (the same code computes both).
 * Determinism: the same seed, data and thread count give the same numbers; the only threads are
 * OpenBLAS's (set its count with openblas_set_num_threads or OPENBLAS_NUM_THREADS).
 */
#ifndef MW_TRAIN_H
#define MW_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

typedef struct mw_trainer mw_trainer;

/* Builds the model (mw_model_new: TransformerLens's init from cfg->seed, the default generator
 * when seed < 0), zeroed gradients and AdamW moments. NULL + message on failure. */
mw_trainer *mw_trainer_new(const mw_config *cfg);
void mw_trainer_free(mw_trainer *t);
mw_model *mw_trainer_model(mw_trainer *t);              /* the model being trained (owned by t) */
const mw_config *mw_trainer_config(const mw_trainer *t); /* the finished config */
float *mw_trainer_params(mw_trainer *t, int64_t *n);    /* [n] the model's flat buffer (writable) */
float *mw_trainer_grads(mw_trainer *t, int64_t *n);     /* [n] same layout */

/* Training forward on tokens [B,T] (ids < d_vocab): *loss = the mean cross-entropy. With grads,
 * also the backward pass: the gradients are overwritten. */
int mw_trainer_forward(mw_trainer *t, const int64_t *tokens, int64_t B, int64_t T, int grads, double *loss);
/* The backward half alone, after a forward of mw_trainer_model(t) with keep_activations and
 * want_loss (how a caller runs a training forward with its own hooks): zeroes the gradients,
 * then mw_model_backward into them. */
int mw_trainer_backward(mw_trainer *t);

/* ---------------------------------------------------------------- probes of the circuits
 * Both run the model's forward with a hook on every layer's pattern (no pattern is stored).
 * Induction: a forward pass on [BOS, R, R] (R: seq_len ids drawn uniformly from 1..V-1 by the
 * splitmix64 stream seeded with seed; BOS = 0), batch rows; score of head (l, h) = the mean over
 * rows of the pattern's diagonal at offset 1 - seq_len (torch.diagonal(pattern, 1 - seq_len)),
 * as the seed notebook's induction_score_hook. first/second: mean log-prob of the tokens of the
 * first and second copy of R (predictions from positions 0..seq_len-1 and seq_len..2 seq_len-1).
 * ind: [L*H]. Needs 2 seq_len + 1 <= n_ctx. */
int mw_trainer_induction(mw_trainer *t, int64_t seq_len, int64_t batch, uint64_t seed, double *ind,
                         double *first, double *second);
/* Previous-token score of every head on tokens [B,T]: the mean of the pattern's diagonal at
 * offset -1 (the seed notebook's prev_attn_detector). prev: [L*H]. */
int mw_trainer_prev_token(mw_trainer *t, const int64_t *tokens, int64_t B, int64_t T, double *prev);

/* Writes the weights as a safetensors file with TransformerLens's state-dict names and shapes
 * (embed.W_E [V,d], blocks.L.attn.W_Q [H,d,dh], ... as mw_model_param_view gives them); metadata
 * format "pt" and step. Atomic (a unique temporary file renamed into place). */
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
 * A safetensors file with the parameters ("W_Q" ... in the stacked storage layout, W_Q as
 * [L,d,H,dh]), the AdamW moments ("adam_m.W_Q", "adam_v.W_Q"), and metadata: format
 * "miwb-train", step, and the config fields. Atomic, as the export. */
int mw_trainer_save(const mw_trainer *t, const char *path);
/* restores parameters, moments and step into t (whose config must match the file's) */
int mw_trainer_load(mw_trainer *t, const char *path);

#endif
