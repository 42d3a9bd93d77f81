/* generate.h - sampling text from a model, as TransformerLens's HookedTransformer.generate and
 * utils.sample_logits: a key/value cache (mw_kv_cache, declared in model.h beside the forward
 * pass that fills it), the sampler, and the generation loop over the one forward pass.
 *
 * Dimension legend as model.h: B batch rows, P prompt positions, n new tokens, V (= Vo) the
 * output vocabulary, L layers, G key/value heads, dh d_head.
 */
#ifndef MW_GENERATE_H
#define MW_GENERATE_H

#include <stdint.h>

#include "model.h"

/* A cache for B rows of up to cap positions: keys and values [L, B, cap, G*dh] and the padding
 * mask [B, cap] (cap is the prompt plus the new tokens, never n_ctx). NULL + message on failure. */
mw_kv_cache *mw_kv_cache_new(const mw_model *m, int64_t B, int64_t cap);
void mw_kv_cache_free(mw_kv_cache *kv);
int64_t mw_kv_cache_bytes(const mw_kv_cache *kv);

/* TransformerLens's sample_logits: with do_sample 0 or temperature 0 the argmax (the first of
 * equal maxima); else z = logits / temperature - freq_penalty * counts (freq_penalty > 0 and
 * counts given: each token's count in the row so far), then top_k (logits below the k-th largest
 * go; ties with it stay) or else top_p (in descending order, a token stays when the probability
 * of the tokens before it is <= top_p: the first always stays), and one draw from softmax(z) of
 * what stayed. Draws use the one generator (mw_rng_next, 53 bits per draw): the same seed gives
 * the same tokens on every machine. */
typedef struct mw_sample_opts {
    int do_sample;          /* 0: greedy */
    double temperature;     /* >= 0; 0: greedy */
    int64_t top_k;          /* 0: none, else >= 1 */
    double top_p;           /* 0: none, else in (0, 1] */
    double freq_penalty;    /* >= 0 */
} mw_sample_opts;

/* 0, or -1 with a message naming fname and the option ("generate: top_k must be ...") */
int mw_sample_check(const mw_sample_opts *o, const char *fname);

/* scratch of a sampler for a vocabulary of V (reused across rows and steps) */
typedef struct mw_sampler {
    int64_t V;
    double *z, *w;          /* [V] the adjusted logits; a copy for selection / probabilities */
    int64_t *idx;           /* [V] token ids in descending order (top_p) */
} mw_sampler;
int mw_sampler_init(mw_sampler *s, int64_t V);
void mw_sampler_free(mw_sampler *s);
/* one token id from logits [V] (counts [V] or NULL); -1 with a message when no token can be drawn
 * (every logit -inf or NaN) */
int64_t mw_sample(mw_sampler *s, const float *logits, const mw_sample_opts *o, const int64_t *counts, mw_rng *g);

/* ---------------------------------------------------------------- the generation loop */
typedef struct mw_generate_opts {
    const mw_tensor *tokens;         /* i64 [B,P]: the prompts, shorter ones padded on the LEFT */
    const mw_tensor *attention_mask; /* [B,P] nonzero = real token; NULL = no padding */
    int64_t max_new_tokens;          /* n >= 0 */
    mw_sample_opts sample;
    mw_rng *rng;                     /* draws; NULL: the default generator */
    int use_past_kv_cache;           /* 1: one forward of the prompt, then one position per token;
                                        0: the whole sequence every step (TransformerLens's
                                        use_past_kv_cache = False) */
    int stop_at_eos;                 /* a row stops at any token of eos[]; the loop ends when
                                        every row has stopped */
    const int64_t *eos;              /* [n_eos] stop tokens */
    int n_eos;
    int64_t eos_pad;                 /* what a stopped row gets from then on */
    /* hooks, as mw_forward_opts: with the cache they see the prompt's positions, then the one
     * new position of each step (attn_scores / pattern [B,H,1,keys so far]); without it the
     * whole sequence every step */
    const uint8_t *want;
    mw_deliver_fn deliver;
    void *ud;
    /* called after each new token (step 1..n); -1 (message set) stops generation; NULL: none */
    int (*on_step)(void *ud, int64_t step, int64_t n);
    void *step_ud;
} mw_generate_opts;

/* out = i64 [B, P + steps]: the prompts and the new tokens (steps <= n: fewer when every row
 * stopped at EOS). -1 with a message (out released) on failure or interrupt. */
int mw_generate(mw_model *m, const mw_generate_opts *o, mw_tensor *out);

#endif
