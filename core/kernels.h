/* kernels.h - the numeric kernels of the transformer, each forward kernel beside its backward
 * kernel. model.c's one forward pass and its backward pass (mw_model_backward) are written with
 * these and nothing else; no other file carries a copy.
 *
 * Free functions over raw float pointers, row-major, output first, each opened by the shapes it
 * works on. Dimension legend: N rows (B*P token positions), C channels, d d_model, k and n the
 * inner and outer sizes of a linear map, P positions, V vocabulary. Backward kernels ACCUMULATE
 * (+=) into parameter gradients (dW, db), so one zeroing per step serves every layer; where a
 * kernel writes an input gradient the comment says whether it overwrites (=) or adds (+=).
 */
#ifndef MW_KERNELS_H
#define MW_KERNELS_H

#include <stdint.h>

#include "model.h"

/* ---------------------------------------------------------------- matrix products */
/* C [M,N] (row stride ldc) = alpha op(A) [M,K] @ op(B) [K,N] + beta C; op(A) = A or, with ta, the
 * transpose of A stored [K,M] (row stride lda); likewise op(B) with tb. One cblas_sgemm. */
void mw_sgemm(float *C, int64_t ldc, const float *A, int64_t lda, int ta, const float *B, int64_t ldb, int tb,
              int64_t M, int64_t N, int64_t K, float alpha, float beta);

/* out [N,n] = in [N,k] @ W [k,n] + b [n] (b NULL: no bias) */
void mw_linear_forward(float *out, const float *in, const float *W, const float *b, int64_t N, int64_t k,
                       int64_t n);
/* dW [k,n] += in^T @ dout, db [n] += colsum(dout) (dW, db NULL: skipped);
 * din [N,k] = dout @ W^T (+= when acc; din NULL: skipped); dout [N,n] */
void mw_linear_backward(float *din, int acc, float *dW, float *db, const float *dout, const float *in,
                        const float *W, int64_t N, int64_t k, int64_t n);

/* out [N,n] = bias [n] broadcast over rows with row stride ld (bias NULL: zeros) */
void mw_fill_rows(float *out, int64_t ld, const float *bias, int64_t N, int64_t n);
/* out [n] = x + y (out may alias x or y) */
void mw_add_forward(float *out, const float *x, const float *y, int64_t n);
/* db [n] += sum over the N rows of dout [N,n] */
void mw_bias_add_forward(float *out, const float *b, int64_t N, int64_t n);
void mw_colsum_backward(float *db, const float *dout, int64_t N, int64_t n);

/* ---------------------------------------------------------------- LayerNorm
 * In two halves so that hook_scale can be delivered between them, as TransformerLens does:
 *   center: out [N,C] = x - mean(x), scale [N] = sqrt(var(x) + eps) (biased var), mean [N]
 *           (mean NULL: not kept; training keeps it for the backward pass)
 *   apply:  out [N,C] = out / scale * w [C] + b [C] in place (w, b NULL: LNPre)  */
void mw_layernorm_center_forward(float *out, float *scale, float *mean, const float *x, int64_t N, int64_t C,
                                 double eps);
void mw_layernorm_apply_forward(float *out, const float *scale, const float *w, const float *b, int64_t N,
                                int64_t C);
/* RMSNorm's first half: out [N,C] = x, scale [N] = sqrt(mean(x^2) + eps); then
 * mw_layernorm_apply_forward(out, scale, NULL, NULL) divides (TransformerLens's hook_normalized is
 * that, before the weight), and mw_scale_rows_forward multiplies by w (RMS; RMSPre has none) */
void mw_rmsnorm_scale_forward(float *out, float *scale, const float *x, int64_t N, int64_t C, double eps);
/* out [N,C] *= w [C] */
void mw_scale_rows_forward(float *out, const float *w, int64_t N, int64_t C);

/* The backward pass of LayerNorm / RMSNorm in TransformerLens's three steps, so that the gradients
 * at hook_normalized and hook_scale can be delivered (and edited) between them. h = (x - mean) /
 * scale is recomputed from the forward's x, mean and scale (mean NULL: RMSNorm, h = x / scale).
 *   weight: dw [C] += dy h, db [C] += dy (dw, db NULL: skipped); g [N,C] = dy w (may alias dy)
 *   scale:  dscale [N] = d/d scale of sum_j g h = -sum_j g h / scale
 *   input:  dx [N,C] += c - mean(c) (LayerNorm; RMSNorm: += c), c = g / scale + dscale h / C */
void mw_norm_weight_backward(float *g, float *dw, float *db, const float *dy, const float *x, const float *mean,
                             const float *scale, const float *w, int64_t N, int64_t C);
void mw_norm_scale_backward(float *dscale, const float *g, const float *x, const float *mean, const float *scale,
                            int64_t N, int64_t C);
void mw_norm_input_backward(float *dx, const float *g, const float *dscale, const float *x, const float *mean,
                            const float *scale, int64_t N, int64_t C);

/* ---------------------------------------------------------------- activations */
/* out [n] = act(x [n]): gelu_new = gelu_pytorch_tanh = gelu_fast (tanh approximation), gelu (erf),
 * relu, silu (x sigmoid(x)); solu and solu_ln are not element-wise: mw_solu_forward */
void mw_act_forward(float *out, const float *x, int64_t n, mw_actfn fn);
/* dx [n] = dy * act'(x) (dx may alias dy) */
void mw_act_backward(float *dx, const float *dy, const float *x, int64_t n, mw_actfn fn);
/* does mw_act_backward know fn's derivative (relu, gelu, the tanh gelus, silu) */
int mw_act_has_backward(mw_actfn fn);
/* gated MLP: post [n] = act(gate [n]) * lin [n] */
void mw_gate_forward(float *post, const float *gate, const float *lin, int64_t n, mw_actfn fn);
/* dlin [n] = dpost act(gate), dgate [n] = dpost lin act'(gate) (dgate may alias dpost) */
void mw_gate_backward(float *dgate, float *dlin, const float *dpost, const float *gate, const float *lin, int64_t n,
                      mw_actfn fn);

/* SoLU (act_fn solu / solu_ln), row-wise over d_mlp where the others are element-wise:
 * out [N,M] = x * softmax(x) of each row; out may alias x */
void mw_solu_forward(float *out, const float *x, int64_t N, int64_t M);
/* dx [N,M] = d(SoLU)/dx of dy [N,M], from the forward's x (dx may alias dy) */
void mw_solu_backward(float *dx, const float *dy, const float *x, int64_t N, int64_t M);

/* ---------------------------------------------------------------- attention */
/* s [P,Pk] (row stride ld) in place, the scores of the last P of Pk positions (P == Pk without a
 * key/value cache; query i is key position Pk - P + i): later keys (causal) and keys with
 * keymask[j] == 0 (padding) get -inf, as TransformerLens masks before hook_attn_scores.
 * keymask [Pk], NULL = no padding. */
void mw_attn_mask_forward(float *s, int64_t ld, int64_t P, int64_t Pk, const uint8_t *keymask);
/* softmax over every row of s [rows, cols] (row stride ld), in place. A row whose keys are all
 * -inf, or that holds a NaN (from an edit), becomes 0 (TransformerLens turns torch's NaN into 0).
 * causal: row i (key position cols - rows + i, as mw_attn_mask_forward) reads keys up to
 * that position only and writes 0 past them. */
void mw_softmax_forward(float *s, int64_t ld, int64_t rows, int64_t cols, int causal);
/* ds [rows, cols] = p * (dp - sum_j p dp) in place over dp (row stride ld), p the softmax
 * output [rows, cols]; causal: entries past the diagonal set to 0 */
void mw_softmax_backward(float *dp, const float *p, int64_t ld, int64_t rows, int64_t cols, int causal);

/* Rotary positions, in place on x [N,heads,dh] (row stride heads*dh): row n has position pos[n]
 * (model.c's position ids; padding, -1, rotates as 0); for i < rd/2 the pair (x[i], x[i + rd/2])
 * (GPT-NeoX, Llama) or (x[2i], x[2i+1]) (adjacent, GPT-J) of every head rotates by the angle
 * pos * base^(-2i/rd); dims past rd stay. */
void mw_rotary_forward(float *x, const int64_t *pos, int64_t N, int64_t heads, int64_t dh, int64_t rd, double base,
                       int adjacent);
/* its backward, in place on dx [N,heads,dh] (the same arguments): each pair rotates back by the
 * same angle (a rotation's transpose is its inverse) */
void mw_rotary_backward(float *dx, const int64_t *pos, int64_t N, int64_t heads, int64_t dh, int64_t rd, double base,
                        int adjacent);

/* ---------------------------------------------------------------- embeddings */
/* out [N,d] = W_E[tok[n]] */
void mw_embed_forward(float *out, const int64_t *tok, const float *W_E, int64_t N, int64_t d);
/* dW_E [V,d] += dout [N,d] scattered to rows tok[n] */
void mw_embed_backward(float *dW_E, const int64_t *tok, const float *dout, int64_t N, int64_t d);
/* out [N,d] = W_pos[pos[n]]; pos are model.c's position ids (TransformerLens's: p, or with a
 * padding mask cumsum(mask) - 1 counted from the first position, as its PosEmbed with
 * attention_mask), -1 for a padding position, whose row is 0 */
void mw_pos_forward(float *out, const float *W_pos, const int64_t *pos, int64_t N, int64_t d);
/* dW_pos [C,d] += dout [N,d] gathered by the same pos (padding rows add nothing) */
void mw_pos_backward(float *dW_pos, const float *dout, const int64_t *pos, int64_t N, int64_t d);

/* ---------------------------------------------------------------- cross-entropy
 * Next-token loss over n rows of logits [n,V] of one batch row: row r predicts tgt[r]; valid[r] = 0
 * (padding) gives nll 0 and no count (valid NULL: all count). */
/* nll [n] = -log softmax(logits)[tgt]; adds to *sum and *count. logits are left as they are. */
void mw_crossentropy_forward(float *nll, double *sum, int64_t *count, const float *logits, int64_t V,
                             const int64_t *tgt, const uint8_t *valid, int64_t n);
/* the same numbers (bit for bit), and logits [n,V] become the probabilities softmax(logits) in
 * place: the training forward keeps those for the backward pass */
void mw_softmax_crossentropy_forward(float *probs, float *nll, double *sum, int64_t *count, int64_t V,
                                     const int64_t *tgt, const uint8_t *valid, int64_t n);
/* dlogits [n,V] = (probs - onehot(tgt)) * dloss in place over probs; rows with valid[r] == 0
 * become 0 */
void mw_softmax_crossentropy_backward(float *probs, int64_t V, const int64_t *tgt, const uint8_t *valid,
                                      int64_t n, float dloss);

#endif
