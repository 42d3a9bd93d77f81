/* test_generate.c - core/generate.c and the key/value cache step of core/model.c, against the
 * full forward pass (itself checked against float64 PyTorch in test_model.c and
 * tests/lua/test_families.lua) on random models of every family the forward runs:
 *   - a cached step's logits equal the full forward's logits at the last position (prompts of
 *     different lengths, left padded), step after step;
 *   - hooks of a cached step see the new positions only: hook_pattern [B,H,1,keys so far];
 *   - mw_generate's greedy tokens with the cache equal those without it, and an argmax loop over
 *     the full forward;
 *   - the sampler's greedy and top_k = 1 are the argmax; bad options and misuse are refused with
 *     messages naming generate. */
#include <stdlib.h>

#include "generate.h"
#include "model.h"
#include "mwtest.h"

enum { B = 2, P = 5, PAD = 2, STEPS = 4, V = 37 };

/* the families of the forward: GPT-2, attention-only shortformer, Llama-like (RMS, rotary,
 * grouped-query, gated silu), GPT-J-like (LN, partial adjacent rotary, parallel attention + MLP),
 * NeoX-like (partial rotary halves, parallel), LNPre with standard positions and results */
static mw_model *family(int i) {
    mw_config c;
    mw_config_default(&c);
    c.d_model = 32; c.d_head = 8; c.n_layers = 2; c.n_ctx = 24; c.d_vocab = V; c.seed = 10 + i;
    c.initializer_range = 0.4;
    c.act_fn = MW_ACT_GELU_NEW;
    switch (i) {
    case 0: break;
    case 1: c.attn_only = 1; c.normalization_type = MW_NORM_NONE; c.positional_embedding_type = MW_POS_SHORTFORMER;
            c.act_fn = MW_ACT_NONE; c.use_attn_result = 1; break;
    case 2: c.normalization_type = MW_NORM_RMS; c.positional_embedding_type = MW_POS_ROTARY; c.rotary_dim = 8;
            c.n_key_value_heads = 2; c.gated_mlp = 1; c.act_fn = MW_ACT_SILU; c.final_rms = 1; break;
    case 3: c.positional_embedding_type = MW_POS_ROTARY; c.rotary_dim = 4; c.rotary_adjacent_pairs = 1;
            c.parallel_attn_mlp = 1; break;
    case 4: c.positional_embedding_type = MW_POS_ROTARY; c.rotary_dim = 4; c.parallel_attn_mlp = 1;
            c.act_fn = MW_ACT_GELU; break;
    case 5: c.normalization_type = MW_NORM_LNPRE; c.use_attn_result = 1; c.act_fn = MW_ACT_RELU; break;
    }
    mw_model *m = mw_model_new(&c);
    if (!m) printf("  family %d: %s\n", i, mw_error());
    return m;
}
#define NFAM 6

/* prompts [B, P]: row 1 has PAD padding positions on the left */
static void prompts(mw_tensor *tok, mw_tensor *mask) {
    int64_t sh[2] = {B, P};
    mw_tensor_empty(tok, MW_I64, 2, sh);
    mw_tensor_full(mask, MW_I64, 2, sh, 1);
    int64_t *t = mw_tensor_data(tok), *m = mw_tensor_data(mask);
    for (int i = 0; i < B * P; i++) t[i] = (7 * i + 3) % V;
    for (int p = 0; p < PAD; p++) { t[P + p] = 0; m[P + p] = 0; }
}

/* max |a - b| / max |b| of two [n] float arrays */
static double rel(const float *a, const float *b, int64_t n) {
    double mx = 0, md = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
        if (fabs(a[i] - b[i]) > md) md = fabs(a[i] - b[i]);
    }
    return md / (mx > 0 ? mx : 1);
}

static void test_step_logits_equal_full_forward(void) {
    for (int f = 0; f < NFAM; f++) {
        mw_model *m = family(f);
        if (!m) { CHECK(0); continue; }
        mw_tensor tok, mask, seq, smask, step, v1, v2;
        prompts(&tok, &mask);
        /* seq / smask [B, P + STEPS]: the prompts, then tokens fed one per step */
        int64_t sh[2] = {B, P + STEPS};
        mw_tensor_empty(&seq, MW_I64, 2, sh);
        mw_tensor_full(&smask, MW_I64, 2, sh, 1);
        int64_t *sd = mw_tensor_data(&seq), *md = mw_tensor_data(&smask);
        for (int b = 0; b < B; b++)
            for (int p = 0; p < P + STEPS; p++) {
                sd[b * (P + STEPS) + p] = p < P ? ((int64_t *)mw_tensor_data(&tok))[b * P + p] : (5 * p + b) % V;
                if (p < P) md[b * (P + STEPS) + p] = ((int64_t *)mw_tensor_data(&mask))[b * P + p];
            }
        mw_kv_cache *kv = mw_kv_cache_new(m, B, P + STEPS);
        CHECK(kv != NULL);
        double worst = 0;
        for (int s = 0; kv && s <= STEPS; s++) {
            int64_t from = s ? P + s - 1 : 0, len = s ? 1 : P;
            mw_forward_opts o;
            mw_forward_opts_default(&o, m);
            mw_forward_out cached, full;
            mw_tensor_narrow(&step, &seq, 1, from, len);
            mw_tensor_narrow(&v1, &smask, 1, from, len);
            o.tokens = &step;
            o.attention_mask = &v1;
            o.kv = kv;
            CHECK_OK(mw_model_forward(m, &o, &cached));
            CHECK(cached.logits.ndim == 3 && cached.logits.shape[0] == B && cached.logits.shape[1] == 1);
            CHECK(kv->len == from + len);
            mw_tensor_release(&step);
            mw_tensor_release(&v1);
            /* the full forward over everything so far, its last position */
            mw_tensor_narrow(&step, &seq, 1, 0, from + len);
            mw_tensor_narrow(&v2, &smask, 1, 0, from + len);
            mw_forward_opts_default(&o, m);
            o.tokens = &step;
            o.attention_mask = &v2;
            CHECK_OK(mw_model_forward(m, &o, &full));
            for (int b = 0; b < B && cached.logits.storage && full.logits.storage; b++) {
                const float *a = (const float *)mw_tensor_data(&cached.logits) + b * V;
                const float *w = (const float *)mw_tensor_data(&full.logits) + (b * (from + len) + from + len - 1) * V;
                double e = rel(a, w, V);
                if (e > worst) worst = e;
            }
            mw_tensor_release(&step);
            mw_tensor_release(&v2);
            mw_forward_out_release(&cached);
            mw_forward_out_release(&full);
        }
        CHECK_MSG(worst < 1e-5, "family %d: cached step logits differ from the full forward by %g", f, worst);
        mw_kv_cache_free(kv);
        mw_tensor_release(&tok); mw_tensor_release(&mask); mw_tensor_release(&seq); mw_tensor_release(&smask);
        mw_model_free(m);
    }
}

/* a hook on the pattern of a cached step: records its shape */
typedef struct { int64_t shape[4]; int calls; } seen;
static int on_pattern(void *ud, int id, int layer, mw_tensor *act) {
    (void)id; (void)layer;
    seen *s = ud;
    for (int i = 0; i < 4; i++) s->shape[i] = act->shape[i];
    s->calls++;
    return 0;
}

static void test_step_hooks_and_errors(void) {
    mw_model *m = family(0);
    if (!m) { CHECK(0); return; }
    mw_tensor tok, mask, one;
    prompts(&tok, &mask);
    mw_kv_cache *kv = mw_kv_cache_new(m, B, P + 1);
    uint8_t *want = calloc((size_t)mw_hook_slots(m), 1);
    want[mw_hook_slot(m, MW_HOOK_PATTERN, 1)] = 1;
    seen s = {{0}, 0};
    mw_forward_opts o;
    mw_forward_opts_default(&o, m);
    o.tokens = &tok; o.attention_mask = &mask; o.kv = kv;
    o.want = want; o.deliver = on_pattern; o.ud = &s;
    mw_forward_out out;
    CHECK_OK(mw_model_forward(m, &o, &out));
    CHECK(s.calls == 1 && s.shape[0] == B && s.shape[1] == 4 && s.shape[2] == P && s.shape[3] == P);
    mw_forward_out_release(&out);
    int64_t sh[2] = {B, 1};
    mw_tensor_full(&one, MW_I64, 2, sh, 3);
    o.tokens = &one; o.attention_mask = NULL;
    CHECK_OK(mw_model_forward(m, &o, &out));
    CHECK(s.calls == 2 && s.shape[2] == 1 && s.shape[3] == P + 1);
    mw_forward_out_release(&out);
    /* full: nothing appended, the cache unchanged */
    CHECK_ERR(mw_model_forward(m, &o, &out), "do not fit");
    CHECK(kv->len == P + 1);
    o.want_loss = 1;
    CHECK_ERR(mw_model_forward(m, &o, &out), "key/value cache step");
    mw_kv_cache_free(kv);
    kv = mw_kv_cache_new(m, 3, 8);
    o.want_loss = 0; o.kv = kv;
    CHECK_ERR(mw_model_forward(m, &o, &out), "another model or batch");
    mw_kv_cache_free(kv);
    /* generate's own checks */
    mw_generate_opts g;
    memset(&g, 0, sizeof g);
    g.tokens = &tok; g.max_new_tokens = 3; g.sample.do_sample = 1; g.sample.temperature = 1;
    g.sample.top_p = 1.5;
    CHECK_ERR(mw_generate(m, &g, &out.logits), "generate: top_p must be in (0, 1]");
    g.sample.top_p = 0; g.sample.temperature = -1;
    CHECK_ERR(mw_generate(m, &g, &out.logits), "generate: temperature");
    g.sample.temperature = 1; g.max_new_tokens = 100;
    CHECK_ERR(mw_generate(m, &g, &out.logits), "exceed n_ctx");
    g.max_new_tokens = 2; g.stop_at_eos = 1;
    CHECK_ERR(mw_generate(m, &g, &out.logits), "generate: stop_at_eos needs an eos token id");
    free(want);
    mw_tensor_release(&tok); mw_tensor_release(&mask); mw_tensor_release(&one);
    mw_model_free(m);
}

/* greedy tokens: cached == uncached == an argmax loop over the full forward */
static void test_greedy_cached_uncached_loop(void) {
    for (int f = 0; f < NFAM; f++) {
        mw_model *m = family(f);
        if (!m) { CHECK(0); continue; }
        mw_tensor tok, mask, a = {0}, u = {0};
        prompts(&tok, &mask);
        mw_generate_opts g;
        memset(&g, 0, sizeof g);
        g.tokens = &tok; g.attention_mask = &mask; g.max_new_tokens = 8;
        g.use_past_kv_cache = 1;
        CHECK_OK(mw_generate(m, &g, &a));
        g.use_past_kv_cache = 0;
        CHECK_OK(mw_generate(m, &g, &u));
        CHECK(a.storage && u.storage && a.shape[1] == P + 8 && u.shape[1] == P + 8);
        if (a.storage && u.storage)
            CHECK_MSG(memcmp(mw_tensor_data(&a), mw_tensor_data(&u), sizeof(int64_t) * B * (P + 8)) == 0,
                      "family %d: cached and uncached greedy tokens differ", f);
        /* the argmax loop, row by row without padding */
        for (int b = 0; b < B && a.storage; b++) {
            int start = b == 1 ? PAD : 0, n = P - start;
            int64_t row[P + 8];
            for (int p = 0; p < n; p++) row[p] = ((int64_t *)mw_tensor_data(&tok))[b * P + start + p];
            for (int s = 0; s < 8; s++) {
                mw_tensor t;
                int64_t sh[2] = {1, n + s};
                mw_tensor_from_data(&t, MW_I64, 2, sh, row);
                mw_forward_opts o;
                mw_forward_opts_default(&o, m);
                o.tokens = &t;
                mw_forward_out out;
                CHECK_OK(mw_model_forward(m, &o, &out));
                const float *l = (const float *)mw_tensor_data(&out.logits) + (n + s - 1) * V;
                int64_t best = 0;
                for (int i = 1; i < V; i++) if (l[i] > l[best]) best = i;
                row[n + s] = best;
                mw_forward_out_release(&out);
                mw_tensor_release(&t);
            }
            CHECK_MSG(memcmp(row + n, (int64_t *)mw_tensor_data(&a) + b * (P + 8) + P, 8 * sizeof(int64_t)) == 0,
                      "family %d row %d: generate differs from the argmax loop", f, b);
        }
        mw_tensor_release(&a); mw_tensor_release(&u);
        mw_tensor_release(&tok); mw_tensor_release(&mask);
        mw_model_free(m);
    }
}

static void test_sampler_argmax(void) {
    mw_sampler s;
    CHECK_OK(mw_sampler_init(&s, 6));
    float l[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f, -INFINITY};
    mw_sample_opts o = {0, 1.0, 0, 0, 0};
    mw_rng g;
    mw_rng_seed(&g, 1);
    CHECK(mw_sample(&s, l, &o, NULL, &g) == 1); /* the first of equal maxima, as torch.argmax */
    o.do_sample = 1;
    o.top_k = 1; /* ties with the k-th largest stay: 1 and 3 */
    for (int i = 0; i < 50; i++) {
        int64_t t = mw_sample(&s, l, &o, NULL, &g);
        CHECK(t == 1 || t == 3);
    }
    o.top_k = 0;
    o.temperature = 0;
    CHECK(mw_sample(&s, l, &o, NULL, &g) == 1);
    float bad[6] = {-INFINITY, -INFINITY, NAN, -INFINITY, -INFINITY, -INFINITY};
    o.temperature = 1;
    CHECK(mw_sample(&s, bad, &o, NULL, &g) == -1 && strstr(mw_error(), "cannot sample"));
    mw_sampler_free(&s);
}

int main(void) {
    RUN(test_step_logits_equal_full_forward);
    RUN(test_step_hooks_and_errors);
    RUN(test_greedy_cached_uncached_loop);
    RUN(test_sampler_argmax);
    MW_TEST_MAIN_END();
}
