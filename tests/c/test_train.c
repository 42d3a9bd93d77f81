/* test_train.c - the training core (core/train.c) against PyTorch autograd (float64 fixtures from
 * tests/fixtures/gen_train.py), finite differences, and properties of checkpoints and datasets. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../fixtures/train_expected.h"
#include "mw_tensor.h"
#include "checkpoint.h"
#include "model.h"
#include "mwtest.h"
#include "train.h"

#include "dataset.h"

static void family_cfg(mw_config *c, int fam) {
    mw_config_default(c);
    c->d_model = TRX_D; c->d_head = TRX_DH; c->n_heads = TRX_H; c->n_layers = TRX_L; c->n_ctx = TRX_C;
    c->d_vocab = TRX_V; c->d_mlp = fam == 1 ? TRX_M : -1; c->seed = 7;
    c->attn_only = fam != 1;
    if (fam == 1) c->act_fn = MW_ACT_GELU_NEW;
    c->normalization_type = fam == 0 ? MW_NORM_NONE : fam == 1 ? MW_NORM_LN : MW_NORM_LNPRE;
    c->positional_embedding_type = fam == 0 ? MW_POS_SHORTFORMER : MW_POS_STANDARD;
}

/* the fixture's flat order (gen_train.py's ORDER); within a parameter the layout is the
 * model's storage layout (W_Q [L,d,H*dh] ...) */
static const int fx_order[] = {MW_PARAM_W_E, MW_PARAM_W_pos, MW_PARAM_ln1_w, MW_PARAM_ln1_b, MW_PARAM_W_Q,
                               MW_PARAM_W_K, MW_PARAM_W_V, MW_PARAM_b_Q, MW_PARAM_b_K, MW_PARAM_b_V,
                               MW_PARAM_W_O, MW_PARAM_b_O, MW_PARAM_ln2_w, MW_PARAM_ln2_b, MW_PARAM_W_in,
                               MW_PARAM_b_in, MW_PARAM_W_out, MW_PARAM_b_out, MW_PARAM_ln_final_w,
                               MW_PARAM_ln_final_b, MW_PARAM_W_U, MW_PARAM_b_U,
                               MW_PARAM_W_gate /* no fixture family has a gated MLP */,
                               MW_PARAM_mlp_ln_w, MW_PARAM_mlp_ln_b /* nor solu_ln */};
_Static_assert(sizeof fx_order / sizeof fx_order[0] == MW_PARAM_COUNT, "every parameter once");

/* offset of parameter pid in the fixture's arrays */
static int64_t fx_offset(const mw_model *m, int pid) {
    int64_t off = 0;
    for (int i = 0; fx_order[i] != pid; i++) off += mw_model_param_numel(m, fx_order[i]);
    return off;
}

static const int64_t *tokens64(void) {
    static int64_t t[TRX_B * TRX_T];
    for (int i = 0; i < TRX_B * TRX_T; i++) t[i] = trx_tokens[i];
    return t;
}

static const double *fx_params0[3] = {trx_params0_0, trx_params0_1, trx_params0_2};
static const size_t fx_n[3] = {sizeof trx_params0_0 / sizeof(double), sizeof trx_params0_1 / sizeof(double),
                               sizeof trx_params0_2 / sizeof(double)};
static const double *fx_grads[3] = {trx_grads_0, trx_grads_1, trx_grads_2};
static const double *fx_params2[3] = {trx_params2_0, trx_params2_1, trx_params2_2};
static const double *fx_loss[3] = {trx_loss_0, trx_loss_1, trx_loss_2};
static const double fx_clip[3] = {trx_clip_0, trx_clip_1, trx_clip_2};

static mw_trainer *fixture_trainer(int fam) {
    mw_config c;
    family_cfg(&c, fam);
    mw_trainer *t = mw_trainer_new(&c);
    if (!t) return NULL;
    int64_t n;
    float *p = mw_trainer_params(t, &n);
    if ((size_t)n != fx_n[fam]) { printf("  family %d: %lld params, fixture has %zu\n", fam, (long long)n, fx_n[fam]); mw_trainer_free(t); return NULL; }
    const mw_model *m = mw_trainer_model(t);
    for (int pid = 0; pid < MW_PARAM_COUNT; pid++) {
        int64_t a = mw_model_param_offset(m, pid), f = fx_offset(m, pid);
        for (int64_t i = 0; i < mw_model_param_numel(m, pid); i++) p[a + i] = (float)fx_params0[fam][f + i];
    }
    return t;
}

/* max |a - b| / (max |b| + tiny): gradients of different tensors have different scales, so compare
 * each parameter tensor against its own largest entry */
static void check_grads(mw_trainer *t, int fam) {
    int64_t n;
    const float *g = mw_trainer_grads(t, &n);
    const mw_model *m = mw_trainer_model(t);
    for (int id = 0; id < MW_PARAM_COUNT; id++) {
        int64_t numel = mw_model_param_numel(m, id), a = mw_model_param_offset(m, id), f = fx_offset(m, id);
        if (!numel) continue;
        double mx = 0, err = 0;
        for (int64_t i = 0; i < numel; i++) {
            double e = fx_grads[fam][f + i];
            if (fabs(e) > mx) mx = fabs(e);
            double dd = fabs(g[a + i] - e);
            if (dd > err) err = dd;
        }
        CHECK_MSG(err <= 2e-5 + 1e-4 * mx, "family %d: grad %s: max error %g (largest entry %g)", fam, mw_param_name(id), err, mx);
        CHECK_MSG(mx > 0, "family %d: grad %s: the fixture's gradient is all zero", fam, mw_param_name(id));
    }
}

static void test_loss_and_grads_vs_torch(void) {
    for (int fam = 0; fam < 3; fam++) {
        mw_trainer *t = fixture_trainer(fam);
        CHECK(t != NULL);
        if (!t) continue;
        double loss;
        CHECK_OK(mw_trainer_forward(t, tokens64(), TRX_B, TRX_T, 1, &loss));
        CHECK_NEAR(loss, fx_loss[fam][0], 1e-5);
        check_grads(t, fam);
        mw_trainer_free(t);
    }
}

static void test_adamw_vs_torch(void) {
    mw_adamw_opts o;
    mw_adamw_default(&o);
    o.lr = TRX_LR; o.min_lr = TRX_MIN_LR; o.warmup = TRX_WARMUP; o.steps = TRX_STEPS;
    o.beta1 = TRX_BETA1; o.beta2 = TRX_BETA2; o.eps = TRX_EPS; o.weight_decay = TRX_WD;
    for (int s = 0; s < (int)(sizeof trx_sched / sizeof(double)); s++)
        CHECK_NEAR(mw_adamw_lr(&o, s), trx_sched[s], 1e-12);
    for (int fam = 0; fam < 3; fam++) {
        mw_trainer *t = fixture_trainer(fam);
        CHECK(t != NULL);
        if (!t) continue;
        o.clip = fx_clip[fam];
        double loss, gn;
        CHECK_OK(mw_trainer_forward(t, tokens64(), TRX_B, TRX_T, 1, &loss));
        CHECK_OK(mw_trainer_step(t, &o, &gn));
        CHECK(gn > o.clip); /* the fixture made sure clipping acts */
        CHECK_OK(mw_trainer_forward(t, tokens64(), TRX_B, TRX_T, 1, &loss));
        CHECK_NEAR(loss, fx_loss[fam][1], 1e-4);
        CHECK_OK(mw_trainer_step(t, &o, &gn));
        CHECK(mw_trainer_nsteps(t) == 2);
        int64_t n;
        const float *p = mw_trainer_params(t, &n);
        const mw_model *m = mw_trainer_model(t);
        /* two steps of at most ~lr each: errors well below lr mean the update itself matches.
         * b_K is left out: its exact gradient is 0 (a key bias adds the same q.b_K to every
         * score of a row, which softmax ignores), so Adam's m/sqrt(v) turns float32 rounding
         * noise (~1e-9) into steps of +-lr while float64 noise gives other +-lr steps. */
        for (int id = 0; id < MW_PARAM_COUNT; id++) {
            int64_t numel = mw_model_param_numel(m, id), a = mw_model_param_offset(m, id), f = fx_offset(m, id);
            if (!numel || id == MW_PARAM_b_K) continue;
            double err = 0;
            for (int64_t i = 0; i < numel; i++) {
                double dd = fabs(p[a + i] - fx_params2[fam][f + i]);
                if (dd > err) err = dd;
            }
            CHECK_MSG(err < 2e-5, "family %d: %s after 2 AdamW steps differs by %g", fam, mw_param_name(id), err);
        }
        mw_trainer_free(t);
    }
}

/* finite differences on the float32 code itself, for a few entries of every tensor */
static void test_grads_finite_differences(void) {
    for (int fam = 0; fam < 3; fam++) {
        mw_trainer *t = fixture_trainer(fam);
        CHECK(t != NULL);
        if (!t) continue;
        double loss, lp, lm;
        CHECK_OK(mw_trainer_forward(t, tokens64(), TRX_B, TRX_T, 1, &loss));
        int64_t n;
        float *g0 = mw_trainer_grads(t, &n);
        float *g = malloc(sizeof *g * (size_t)n);
        memcpy(g, g0, sizeof *g * (size_t)n);
        float *p = mw_trainer_params(t, &n);
        const mw_model *m = mw_trainer_model(t);
        for (int id = 0; id < MW_PARAM_COUNT; id++) {
            int64_t numel = mw_model_param_numel(m, id), off = mw_model_param_offset(m, id);
            if (!numel) continue;
            /* the entry with the largest gradient, and two spread-out ones */
            int64_t picks[3] = {0, numel / 3, (2 * numel) / 3};
            for (int64_t i = 0; i < numel; i++)
                if (fabsf(g[off + i]) > fabsf(g[off + picks[0]])) picks[0] = i;
            for (int k = 0; k < 3; k++) {
                int64_t j = off + picks[k];
                float keep = p[j];
                const float h = 1e-2f;
                p[j] = keep + h;
                mw_trainer_forward(t, tokens64(), TRX_B, TRX_T, 0, &lp);
                p[j] = keep - h;
                mw_trainer_forward(t, tokens64(), TRX_B, TRX_T, 0, &lm);
                p[j] = keep;
                double fd = (lp - lm) / (2 * h);
                CHECK_MSG(fabs(fd - g[j]) <= 2e-3 + 2e-2 * fabs(fd), "family %d: %s[%lld]: analytic %g, finite difference %g",
                          fam, mw_param_name(id), (long long)picks[k], g[j], fd);
            }
        }
        free(g);
        mw_trainer_free(t);
    }
}

static void test_errors(void) {
    mw_config c;
    family_cfg(&c, 0);
    c.d_model = 0;
    CHECK(mw_trainer_new(&c) == NULL);
    CHECK(strstr(mw_error(), "d_model") != NULL);
    family_cfg(&c, 0);
    mw_trainer *t = mw_trainer_new(&c);
    CHECK(t != NULL);
    if (!t) return;
    int64_t bad[2 * (TRX_C + 1)] = {0, 1, 2, TRX_V, 0, 0, 0, 0};
    double loss;
    CHECK_ERR(mw_trainer_forward(t, bad, 2, 4, 1, &loss), "outside the vocabulary");
    CHECK_ERR(mw_trainer_forward(t, bad + 4, 2, TRX_C + 1, 1, &loss), "exceed n_ctx");
    CHECK_ERR(mw_trainer_load(t, "/nonexistent/ckpt.safetensors"), "cannot open");
    mw_trainer_free(t);
}

/* a checkpoint restores everything that the next step depends on: resuming gives the same
 * parameters as never stopping */
static void test_checkpoint_resume(void) {
    mw_adamw_opts o;
    mw_adamw_default(&o);
    o.lr = 1e-2; o.warmup = 1; o.steps = 6;
    char path[] = "/tmp/mw_test_train_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    mw_trainer *a = fixture_trainer(1), *b = fixture_trainer(1);
    CHECK(a && b);
    if (!a || !b) { mw_trainer_free(a); mw_trainer_free(b); return; }
    double loss;
    for (int s = 0; s < 3; s++) {
        mw_trainer_forward(a, tokens64(), TRX_B, TRX_T, 1, &loss);
        mw_trainer_step(a, &o, NULL);
    }
    CHECK_OK(mw_trainer_save(a, path));
    CHECK_OK(mw_trainer_load(b, path));
    CHECK(mw_trainer_nsteps(b) == 3);
    for (int s = 0; s < 2; s++) {
        mw_trainer_forward(a, tokens64(), TRX_B, TRX_T, 1, &loss);
        mw_trainer_step(a, &o, NULL);
        mw_trainer_forward(b, tokens64(), TRX_B, TRX_T, 1, &loss);
        mw_trainer_step(b, &o, NULL);
    }
    int64_t n;
    const float *pa = mw_trainer_params(a, &n), *pb = mw_trainer_params(b, &n);
    CHECK(memcmp(pa, pb, sizeof(float) * (size_t)n) == 0);
    /* a checkpoint of another shape is refused with the field named */
    mw_config c;
    family_cfg(&c, 1);
    c.d_vocab = TRX_V + 1;
    mw_trainer *other = mw_trainer_new(&c);
    CHECK(other != NULL);
    if (other) CHECK_ERR(mw_trainer_load(other, path), "d_vocab");
    mw_trainer_free(other);
    mw_trainer_free(a);
    mw_trainer_free(b);
    remove(path);
}

static void test_dataset(void) {
    char path[] = "/tmp/mw_test_ds_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    int64_t ids[10] = {5, 1, 2, 3, 4, 0, 7, 8, 9, 6};
    CHECK_OK(mw_dataset_write(path, ids, 10, 10, 0));
    mw_dataset d;
    CHECK_OK(mw_dataset_open(&d, path));
    CHECK(d.n == 10 && d.width == 2 && d.vocab == 10 && d.eot == 0);
    for (int i = 0; i < 10; i++) CHECK(mw_dataset_get(&d, i) == ids[i]);
    /* each row is BOS then 3 consecutive ids of the stream */
    uint64_t st = 42;
    int64_t tok[4 * 5];
    mw_dataset_batch(&d, &st, tok, 5, 4, 0);
    for (int b = 0; b < 5; b++) {
        CHECK(tok[b * 4] == 0);
        int o = -1;
        for (int i = 0; i + 3 <= 10; i++)
            if (ids[i] == tok[b * 4 + 1] && ids[i + 1] == tok[b * 4 + 2] && ids[i + 2] == tok[b * 4 + 3]) o = i;
        CHECK_MSG(o >= 0, "row %d is not a window of the stream", b);
    }
    mw_dataset_close(&d);
    /* repeated rows: a stream of distinct ids 1..999 makes every copy and window recognisable */
    enum { NS = 999, TT = 40 };
    int64_t *stream = malloc(sizeof *stream * NS);
    for (int i = 0; i < NS; i++) stream[i] = i + 1;
    CHECK_OK(mw_dataset_write(path, stream, NS, 1000, 0));
    CHECK_OK(mw_dataset_open(&d, path));
    for (int kind = 0; kind < 2; kind++) {
        int64_t rows[6 * TT];
        uint64_t st2 = 7 + (uint64_t)kind;
        mw_dataset_batch_repeat(&d, &st2, rows, 6, TT, 0, kind == 0 ? 1.0 : 0.0, kind == 1 ? 1.0 : 0.0);
        for (int b = 0; b < 6; b++) {
            int64_t *r = rows + b * TT;
            CHECK(r[0] == 0);
            int a = 0; /* the copy length: the smallest a >= 8 with r[1..a] == r[a+1..2a] */
            for (int c = 8; 2 * c < TT && !a; c++) {
                int same = 1;
                for (int i = 0; i < c; i++) same &= r[1 + i] == r[1 + c + i];
                if (same) a = c;
            }
            CHECK_MSG(a >= 8 && a <= (TT - 1) / 2, "kind %d row %d: no repeated opening", kind, b);
            if (!a) continue;
            /* after the copies, the stream goes on: consecutive ids (from x_a, or from anywhere) */
            for (int i = 2 * a + 2; i < TT; i++) CHECK(r[i] == r[i - 1] + 1);
            if (kind == 0) {
                for (int i = 2; i <= a; i++) CHECK(r[i] == r[i - 1] + 1);
                if (2 * a + 1 < TT) CHECK(r[2 * a + 1] == r[a] + 1);
            }
        }
    }
    mw_dataset_close(&d);
    free(stream);
    CHECK_ERR(mw_dataset_write(path, ids, 10, 9, 0), "outside");
    FILE *f = fopen(path, "wb");
    fputs("MWTOKENS but truncated", f);
    fclose(f);
    CHECK_ERR(mw_dataset_open(&d, path), "");
    remove(path);
}

/* The exported TransformerLens-named file, loaded by core/checkpoint.c into core/model.c (an
 * independent forward pass), gives the loss the trainer computed; the probes agree with the
 * model's patterns computed by hand here. */
static void test_export_runs_in_model_c(void) {
    for (int fam = 0; fam < 3; fam++) {
        mw_trainer *t = fixture_trainer(fam);
        CHECK(t != NULL);
        if (!t) continue;
        char path[] = "/tmp/mw_test_export_XXXXXX";
        int fd = mkstemp(path);
        close(fd);
        CHECK_OK(mw_trainer_export(t, path));
        double loss; /* a training step's loss (forward with the backward pass) */
        CHECK_OK(mw_trainer_forward(t, tokens64(), TRX_B, TRX_T, 1, &loss));
        mw_config c;
        mw_config_default(&c);
        c.d_model = TRX_D; c.d_head = TRX_DH; c.n_heads = TRX_H; c.n_layers = TRX_L; c.n_ctx = TRX_C;
        c.d_vocab = TRX_V; c.d_mlp = fam == 1 ? TRX_M : -1; c.attn_only = fam != 1;
        if (fam == 1) c.act_fn = MW_ACT_GELU_NEW;
        c.normalization_type = fam == 0 ? MW_NORM_NONE : fam == 1 ? MW_NORM_LN : MW_NORM_LNPRE;
        c.positional_embedding_type = fam == 0 ? MW_POS_SHORTFORMER : MW_POS_STANDARD;
        c.act_fn = MW_ACT_GELU_NEW;
        c.seed = 1;
        mw_model *m = mw_model_new(&c);
        CHECK(m != NULL);
        mw_state_dict sd = {0};
        CHECK_OK(mw_checkpoint_load(&sd, path));
        int nset = 0;
        for (int i = 0; m && i < sd.n; i++) {
            CHECK_MSG(mw_model_param_set(m, sd.items[i].name, &sd.items[i].t) == 0, "%s: %s", sd.items[i].name, mw_error());
            nset++;
        }
        CHECK(nset > 0);
        if (m) {
            int64_t sh[2] = {TRX_B, TRX_T};
            mw_tensor tok = {0};
            int64_t t64[TRX_B * TRX_T];
            for (int i = 0; i < TRX_B * TRX_T; i++) t64[i] = trx_tokens[i];
            CHECK_OK(mw_tensor_from_data(&tok, MW_I64, 2, sh, t64));
            mw_forward_opts o;
            mw_forward_opts_default(&o, m);
            o.tokens = &tok;
            o.want_logits = 0;
            o.want_loss = 1;
            mw_forward_out out;
            CHECK_OK(mw_model_forward(m, &o, &out));
            CHECK_MSG(fabs(out.loss - loss) <= 1e-6 * fabs(out.loss), "family %d: training loss %.9g, model loss %.9g",
                      fam, loss, out.loss);
            CHECK_NEAR(out.loss, fx_loss[fam][0], 1e-5);
            mw_forward_out_release(&out);
            mw_tensor_release(&tok);
        }
        mw_state_dict_free(&sd);
        mw_model_free(m);
        mw_trainer_free(t);
        remove(path);
    }
}

/* the model's forward on tokens for the loss (no logits), keeping activations when keep, with
 * hooks when want != NULL */
static int loss_forward(mw_model *m, const mw_tensor *tok, int keep, const uint8_t *want, mw_deliver_fn deliver,
                        void *ud, mw_forward_out *out) {
    mw_forward_opts o;
    mw_forward_opts_default(&o, m);
    o.tokens = tok;
    o.want_logits = 0;
    o.want_loss = 1;
    o.keep_activations = keep;
    o.want = want;
    o.deliver = deliver;
    o.ud = ud;
    return mw_model_forward(m, &o, out);
}

/* keeps a clone of every layer's pattern delivered by a forward */
typedef struct { mw_tensor pat[TRX_L]; } pat_keep;
static int keep_pattern(void *ud, int id, int layer, mw_tensor *act) {
    (void)id;
    pat_keep *k = ud;
    mw_tensor_release(&k->pat[layer]);
    return mw_tensor_clone(&k->pat[layer], act);
}

/* induction probe on a model state: checks the diagonal bookkeeping by recomputing the score
 * from the pattern of a plain forward pass (hooked here) on the same [BOS, R, R] tokens */
static void test_probes_by_hand(void) {
    mw_config c;
    family_cfg(&c, 0);
    mw_trainer *t = mw_trainer_new(&c);
    CHECK(t != NULL);
    if (!t) return;
    mw_model *m = mw_trainer_model(t);
    int64_t sl = 3, T = 2 * sl + 1, B = 2, H = TRX_H;
    double ind[TRX_L * TRX_H], first, second, prev[TRX_L * TRX_H];
    CHECK_OK(mw_trainer_induction(t, sl, B, 99, ind, &first, &second));
    /* rebuild the same tokens: splitmix64 from the seed, ids 1..V-1 */
    uint64_t s = 99;
    int64_t tok[2 * 7];
    for (int b = 0; b < B; b++) {
        tok[b * T] = 0;
        for (int i = 0; i < sl; i++) {
            uint64_t z = (s += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull; z = (z ^ (z >> 27)) * 0x94d049bb133111ebull; z ^= z >> 31;
            tok[b * T + 1 + i] = tok[b * T + 1 + sl + i] = 1 + (int64_t)(z % (TRX_V - 1));
        }
    }
    mw_tensor tt = {0};
    int64_t sh[2] = {B, T};
    CHECK_OK(mw_tensor_from_data(&tt, MW_I64, 2, sh, tok));
    uint8_t want[MW_HOOK_COUNT * TRX_L] = {0};
    for (int l = 0; l < TRX_L; l++) want[mw_hook_slot(m, MW_HOOK_PATTERN, l)] = 1;
    pat_keep keep;
    memset(&keep, 0, sizeof keep);
    mw_forward_out out;
    CHECK_OK(loss_forward(m, &tt, 0, want, keep_pattern, &keep, &out));
    for (int l = 0; l < TRX_L; l++) {
        const float *A = mw_tensor_data(&keep.pat[l]);
        for (int h = 0; h < H; h++) {
            /* offset 1 - sl = -2 on a 7x7 pattern: entries (2,0), (3,1), ..., (6,4): 5 of them */
            double sum = 0;
            for (int b = 0; b < B; b++)
                for (int i = 0; i < 5; i++) sum += A[((b * H + h) * T + i + 2) * T + i];
            CHECK_NEAR(ind[l * H + h], sum / 10, 1e-6);
        }
    }
    const float *tl = mw_tensor_data(&out.loss_per_token);
    double f = 0, sc = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < 6; i++) { if (i < 3) f -= tl[b * 6 + i]; else sc -= tl[b * 6 + i]; }
    CHECK_NEAR(first, f / 6, 1e-6);
    CHECK_NEAR(second, sc / 6, 1e-6);
    mw_forward_out_release(&out);
    CHECK_OK(mw_trainer_prev_token(t, tok, B, T, prev));
    const float *A = mw_tensor_data(&keep.pat[1]);
    double sum = 0;
    for (int b = 0; b < B; b++)
        for (int i = 1; i < T; i++) sum += A[((b * H + 1) * T + i) * T + i - 1];
    CHECK_NEAR(prev[1 * H + 1], sum / (B * (T - 1)), 1e-6);
    CHECK_ERR(mw_trainer_induction(t, 50, 10, 1, ind, NULL, NULL), "do not fit");
    /* issue 20: 2 * seq_len + 1 overflowed for seq_len near 2^62 */
    CHECK_ERR(mw_trainer_induction(t, (int64_t)1 << 62, 1, 1, ind, NULL, NULL), "do not fit");
    for (int l = 0; l < TRX_L; l++) mw_tensor_release(&keep.pat[l]);
    mw_tensor_release(&tt);
    mw_trainer_free(t);
}

/* gradients at hook points (mw_model_backward's deliver) against finite differences of the
 * forward pass alone: the activation is nudged by a forward hook, +h and -h */
typedef struct { int id, layer; int64_t at; float h; mw_tensor grad; } nudge_ctx;
static int nudge(void *ud, int id, int layer, mw_tensor *act) {
    nudge_ctx *x = ud;
    if (id == x->id && layer == x->layer) ((float *)mw_tensor_data(act))[x->at] += x->h;
    return 0;
}
static int keep_grad(void *ud, int id, int layer, mw_tensor *g) {
    nudge_ctx *x = ud;
    if (id != x->id || layer != x->layer) return 0;
    return mw_tensor_clone(&x->grad, g);
}

/* metric: the loss (logit < 0) or logits[0, 3, logit] */
static double metric_of(mw_model *m, const mw_tensor *tok, nudge_ctx *x, int logit) {
    uint8_t want[MW_HOOK_COUNT * TRX_L] = {0};
    want[mw_hook_slot(m, x->id, x->layer < 0 ? 0 : x->layer)] = 1;
    mw_forward_opts o;
    mw_forward_opts_default(&o, m);
    o.tokens = tok;
    o.want_logits = logit >= 0;
    o.want_loss = logit < 0;
    o.want = want;
    o.deliver = nudge;
    o.ud = x;
    mw_forward_out out;
    if (mw_model_forward(m, &o, &out)) return NAN;
    double v = logit < 0 ? out.loss : ((const float *)mw_tensor_data(&out.logits))[3 * TRX_V + logit];
    mw_forward_out_release(&out);
    return v;
}

static void test_hook_gradients_finite_differences(void) {
    static const struct { int fam, id, layer, logit; } cases[] = {
        {1, MW_HOOK_RESID_MID, 0, -1}, {1, MW_HOOK_MLP_POST, 0, -1}, {1, MW_HOOK_Z, 1, -1},
        {1, MW_HOOK_PATTERN, 1, -1}, {1, MW_HOOK_ATTN_SCORES, 0, -1}, {1, MW_HOOK_EMBED, -1, -1},
        {1, MW_HOOK_LN1_NORMALIZED, 1, -1}, {0, MW_HOOK_Q, 0, -1}, {0, MW_HOOK_RESID_PRE, 1, 4},
        {2, MW_HOOK_ATTN_OUT, 0, 7}, {2, MW_HOOK_POS_EMBED, -1, -1}, {1, MW_HOOK_LN1_SCALE, 1, -1},
        {2, MW_HOOK_LN1_SCALE, 0, 5}, {1, MW_HOOK_LN2_SCALE, 0, 2}, {1, MW_HOOK_LNF_SCALE, -1, -1},
        {0, MW_HOOK_POS_EMBED, -1, -1} /* shortformer: the positions feed every block's Q/K input */,
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        mw_trainer *t = fixture_trainer(cases[ci].fam);
        CHECK(t != NULL);
        if (!t) continue;
        mw_model *m = mw_trainer_model(t);
        mw_tensor tok = {0};
        int64_t sh[2] = {TRX_B, TRX_T};
        CHECK_OK(mw_tensor_from_data(&tok, MW_I64, 2, sh, tokens64()));
        nudge_ctx x;
        memset(&x, 0, sizeof x);
        x.id = cases[ci].id;
        x.layer = cases[ci].layer;
        int logit = cases[ci].logit;
        /* the analytic gradient: training forward, backward from the loss or a one-hot grad_logits */
        mw_forward_out out;
        CHECK_OK(loss_forward(m, &tok, 1, NULL, NULL, NULL, &out));
        mw_forward_out_release(&out);
        uint8_t want[MW_HOOK_COUNT * TRX_L] = {0};
        want[mw_hook_slot(m, x.id, x.layer < 0 ? 0 : x.layer)] = 1;
        mw_tensor gl = {0};
        int64_t gsh[3] = {TRX_B, TRX_T, TRX_V};
        CHECK_OK(mw_tensor_zeros(&gl, MW_F32, 3, gsh));
        if (logit >= 0) ((float *)mw_tensor_data(&gl))[3 * TRX_V + logit] = 1.0f;
        mw_backward_opts bo = {.grads = NULL, .grad_logits = logit >= 0 ? &gl : NULL, .want = want,
                               .deliver = keep_grad, .ud = &x};
        CHECK_OK(mw_model_backward(m, &bo));
        CHECK(x.grad.storage != NULL);
        if (x.grad.storage) {
            const float *g = mw_tensor_data(&x.grad);
            int64_t n = mw_tensor_numel(&x.grad), best = 0;
            for (int64_t i = 0; i < n; i++) if (fabsf(g[i]) > fabsf(g[best])) best = i;
            int64_t picks[2] = {best, n / 3};
            for (int k = 0; k < 2; k++) {
                x.at = picks[k];
                x.h = 1e-2f;
                double lp = metric_of(m, &tok, &x, logit);
                x.h = -1e-2f;
                double lm = metric_of(m, &tok, &x, logit);
                double fd = (lp - lm) / 2e-2;
                char name[128];
                mw_hook_name(name, sizeof name, x.id, x.layer);
                CHECK_MSG(fabs(fd - g[x.at]) <= 2e-3 + 2e-2 * fabs(fd), "family %d %s [%lld]: gradient %g, finite difference %g",
                          cases[ci].fam, name, (long long)x.at, g[x.at], fd);
            }
        }
        mw_tensor_release(&x.grad);
        mw_tensor_release(&gl);
        mw_tensor_release(&tok);
        mw_trainer_free(t);
    }
    /* a backward needs a training forward just before, of the whole model */
    mw_trainer *t = fixture_trainer(0);
    if (!t) return;
    mw_model *m = mw_trainer_model(t);
    double loss;
    CHECK_OK(mw_trainer_forward(t, tokens64(), TRX_B, TRX_T, 0, &loss));
    mw_backward_opts bo = {0};
    CHECK_ERR(mw_model_backward(m, &bo), "keep_activations");
    mw_tensor tok = {0};
    int64_t sh[2] = {TRX_B, TRX_T};
    CHECK_OK(mw_tensor_from_data(&tok, MW_I64, 2, sh, tokens64()));
    mw_forward_out out;
    mw_forward_opts o;
    mw_forward_opts_default(&o, m);
    o.tokens = &tok;
    o.keep_activations = 1;
    o.start_at_layer = 1;
    CHECK_ERR(mw_model_forward(m, &o, &out), "keep_activations");
    mw_tensor_release(&tok);
    mw_trainer_free(t);
}

int main(void) {
    RUN(test_loss_and_grads_vs_torch);
    RUN(test_adamw_vs_torch);
    RUN(test_grads_finite_differences);
    RUN(test_errors);
    RUN(test_checkpoint_resume);
    RUN(test_dataset);
    RUN(test_export_runs_in_model_c);
    RUN(test_probes_by_hand);
    RUN(test_hook_gradients_finite_differences);
    MW_TEST_MAIN_END();
}
