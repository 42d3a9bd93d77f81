/* test_model.c - core/model.c against the files of tests/fixtures/model/, written by
 * tests/fixtures/gen_model.py (an independent float64 PyTorch implementation of the same
 * architectures). For each fixture model: every hook activation (and the firing order), logits,
 * loss and per-token loss; the same with padding; a hook edit (head ablation at hook_z)
 * against the script's ablated run; filtered delivery; start/stop_at_layer; a hook that stops
 * the pass leaving the model usable; bad inputs rejected with messages.
 *
 * Error measure: max |a - b| / max |b| over a tensor (positions that are -inf in both agree);
 * the bar is 1e-4. */
#define SAFETENSORS_IMPLEMENTATION
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

#include "model.h"
#include "mwtest.h"

#define FIX "tests/fixtures/model/"
static const char *MODELS[] = {"gpt2", "attn2", "lnpre", "attnln", "solu_ln", "solu_lnpre", "solu"};

typedef struct {
    st_file f;
    mw_model *m;
    cJSON *order; /* hook names in firing order */
    int ablate_head;
} fixture;

/* max |a - b| / max |b|; a is a float tensor (any layout), b raw float32 data */
static double rel_err(const mw_tensor *a, const st_tensor *b) {
    if (!b || b->dtype != ST_F32 || mw_tensor_numel(a) != b->numel || a->ndim != b->ndim) return INFINITY;
    for (int i = 0; i < a->ndim; i++) if (a->shape[i] != b->shape[i]) return INFINITY;
    double mx = 0, md = 0;
    int64_t idx[MW_MAXDIM] = {0};
    for (int64_t n = 0; n < b->numel; n++) {
        float bv;
        memcpy(&bv, (const char *)b->data + 4 * n, 4);
        double av = mw_tensor_get(a, idx);
        for (int d = a->ndim - 1; d >= 0; d--) { if (++idx[d] < a->shape[d]) break; idx[d] = 0; }
        if (isinf(bv) || isinf(av)) {
            if (av != bv) return INFINITY;
            continue;
        }
        if (isnan(av) || isnan(bv)) return INFINITY;
        if (fabs(bv) > mx) mx = fabs(bv);
        if (fabs(av - bv) > md) md = fabs(av - bv);
    }
    return md / (mx > 1e-30 ? mx : 1e-30);
}

static int tensor_of(mw_tensor *out, const st_tensor *t) {
    mw_dtype dt = t->dtype == ST_I64 ? MW_I64 : MW_F32;
    return mw_tensor_from_data(out, dt, t->ndim, t->shape, t->data);
}

static int load_fixture(fixture *fx, const char *name) {
    char path[256], err[512];
    memset(fx, 0, sizeof *fx);
    snprintf(path, sizeof path, FIX "%s.safetensors", name);
    if (st_open(&fx->f, path, err, sizeof err)) { printf("  %s\n", err); return -1; }
    cJSON *c = cJSON_Parse(st_metadata_get(&fx->f, "config"));
    fx->order = cJSON_Parse(st_metadata_get(&fx->f, "hook_order"));
    fx->ablate_head = atoi(st_metadata_get(&fx->f, "ablate_head"));
    mw_config cfg;
    if (mw_config_from_json(&cfg, c)) { printf("  %s: %s\n", path, mw_error()); cJSON_Delete(c); return -1; }
    cfg.seed = 7;
    cJSON_Delete(c);
    fx->m = mw_model_new(&cfg);
    if (!fx->m) { printf("  mw_model_new: %s\n", mw_error()); return -1; }
    /* every fixture param goes in; every model param must come from the fixture */
    int loaded = 0, expected = 0;
    for (size_t i = 0; i < fx->f.n_tensors; i++) {
        const st_tensor *t = &fx->f.tensors[i];
        if (strncmp(t->name, "param.", 6) != 0) continue;
        mw_tensor src;
        if (tensor_of(&src, t)) return -1;
        int rc = mw_model_param_set(fx->m, t->name + 6, &src);
        mw_tensor_release(&src);
        if (rc) { printf("  %s\n", mw_error()); return -1; }
        loaded++;
    }
    for (int p = 0; p < MW_PARAM_COUNT; p++)
        if (mw_model_param_exists(fx->m, p)) expected += mw_param_per_block(p) ? (int)cfg.n_layers : 1;
    if (loaded != expected) { printf("  loaded %d params, model has %d\n", loaded, expected); return -1; }
    return 0;
}

static void free_fixture(fixture *fx) {
    mw_model_free(fx->m);
    cJSON_Delete(fx->order);
    st_close(&fx->f);
}

/* ---------------------------------------------------------------- deliver callbacks */
typedef struct {
    fixture *fx;
    const char *prefix; /* "act." or "masked.act." */
    int n;              /* deliveries so far */
    int order_ok;
    double worst;
    char worst_name[128];
    int ablate_layer, ablate_head; /* zero z of this head at this layer (-1: none) */
    int stop_at;        /* return -1 at the delivery with this index (-1: never) */
} check_ctx;

static int check_deliver(void *ud, int id, int layer, mw_tensor *act) {
    check_ctx *c = ud;
    char name[128], key[160];
    mw_hook_name(name, sizeof name, id, layer);
    if (c->stop_at == c->n) { c->n++; return mw_seterr("test hook stops at %s", name); }
    cJSON *want = cJSON_GetArrayItem(c->fx->order, c->n);
    if (!want || strcmp(want->valuestring, name) != 0) {
        if (c->order_ok) printf("  delivery %d: %s, fixture fires %s\n", c->n, name, want ? want->valuestring : "(end)");
        c->order_ok = 0;
    }
    c->n++;
    if (c->prefix) {
        snprintf(key, sizeof key, "%s%s", c->prefix, name);
        double e = rel_err(act, st_find(&c->fx->f, key));
        if (e > c->worst) { c->worst = e; snprintf(c->worst_name, sizeof c->worst_name, "%s", name); }
    }
    if (id == MW_HOOK_Z && layer == c->ablate_layer) {
        /* act [b, p, H, dh]: zero head ablate_head in place */
        mw_tensor h;
        if (mw_tensor_select(&h, act, 2, c->ablate_head)) return -1;
        mw_tensor_fill_(&h, 0.0);
        mw_tensor_release(&h);
    }
    return 0;
}

static uint8_t *want_all(const mw_model *m) {
    uint8_t *w = malloc((size_t)mw_hook_slots(m));
    memset(w, 1, (size_t)mw_hook_slots(m));
    return w;
}

static void run_full(const char *name, int masked) {
    fixture fx;
    if (load_fixture(&fx, name)) { CHECK(0); free_fixture(&fx); return; }
    const char *pre = masked ? "masked." : "";
    char key[64];
    mw_tensor tok = {0}, mask = {0};
    snprintf(key, sizeof key, "%stokens", pre);
    CHECK_OK(tensor_of(&tok, st_find(&fx.f, key)));
    if (masked) CHECK_OK(tensor_of(&mask, st_find(&fx.f, "masked.attention_mask")));
    mw_forward_opts o;
    mw_forward_opts_default(&o, fx.m);
    o.tokens = &tok;
    o.attention_mask = masked ? &mask : NULL;
    o.want_loss = 1;
    uint8_t *w = want_all(fx.m);
    check_ctx c = {&fx, masked ? "masked.act." : "act.", 0, 1, 0, "", -1, 0, -1};
    o.want = w;
    o.deliver = check_deliver;
    o.ud = &c;
    mw_forward_out out;
    /* twice: the second pass reuses the buffers and must give the same numbers */
    for (int rep = 0; rep < 2; rep++) {
        c.n = 0; c.worst = 0;
        CHECK_OK(mw_model_forward(fx.m, &o, &out));
        CHECK_MSG(c.order_ok && c.n == cJSON_GetArraySize(fx.order), "%s: %d deliveries, fixture has %d",
                  name, c.n, cJSON_GetArraySize(fx.order));
        CHECK_MSG(c.worst <= 1e-4, "%s%s: worst activation %s rel err %g", pre, name, c.worst_name, c.worst);
        if (getenv("MWTEST_VERBOSE")) printf("  %s%s: worst %s %g\n", pre, name, c.worst_name, c.worst);
        snprintf(key, sizeof key, "%slogits", pre);
        double e = rel_err(&out.logits, st_find(&fx.f, key));
        CHECK_MSG(e <= 1e-4, "%s%s: logits rel err %g", pre, name, e);
        snprintf(key, sizeof key, "%sloss_per_token", pre);
        e = rel_err(&out.loss_per_token, st_find(&fx.f, key));
        CHECK_MSG(e <= 1e-4, "%s%s: loss_per_token rel err %g", pre, name, e);
        snprintf(key, sizeof key, "%sloss", pre);
        float ref;
        memcpy(&ref, st_find(&fx.f, key)->data, 4);
        CHECK_NEAR(out.loss, ref, 1e-4 * fabs(ref));
        mw_forward_out_release(&out);
    }
    /* loss without logits goes through the row-block path: same loss */
    o.want_logits = 0;
    o.want = NULL;
    CHECK_OK(mw_model_forward(fx.m, &o, &out));
    CHECK(out.logits.storage == NULL);
    snprintf(key, sizeof key, "%sloss", pre);
    float ref;
    memcpy(&ref, st_find(&fx.f, key)->data, 4);
    CHECK_NEAR(out.loss, ref, 1e-4 * fabs(ref));
    mw_forward_out_release(&out);
    free(w);
    mw_tensor_release(&tok);
    mw_tensor_release(&mask);
    free_fixture(&fx);
}

static void test_fixture_activations(void) {
    for (size_t i = 0; i < sizeof MODELS / sizeof *MODELS; i++) run_full(MODELS[i], 0);
}
static void test_fixture_padding(void) {
    for (size_t i = 0; i < sizeof MODELS / sizeof *MODELS; i++) run_full(MODELS[i], 1);
}

/* zeroing one head's z at layer 0 in place changes the logits exactly as the script's
 * recomputation with that head removed */
static void test_hook_edit_ablation(void) {
    for (size_t i = 0; i < sizeof MODELS / sizeof *MODELS; i++) {
        fixture fx;
        if (load_fixture(&fx, MODELS[i])) { CHECK(0); free_fixture(&fx); continue; }
        mw_tensor tok;
        CHECK_OK(tensor_of(&tok, st_find(&fx.f, "tokens")));
        mw_forward_opts o;
        mw_forward_opts_default(&o, fx.m);
        o.tokens = &tok;
        uint8_t *w = calloc((size_t)mw_hook_slots(fx.m), 1);
        w[mw_hook_slot(fx.m, MW_HOOK_Z, 0)] = 1;
        check_ctx c = {&fx, NULL, 0, 0, 0, "", 0, fx.ablate_head, -1};
        o.want = w;
        o.deliver = check_deliver;
        o.ud = &c;
        mw_forward_out out;
        CHECK_OK(mw_model_forward(fx.m, &o, &out));
        CHECK(c.n == 1);
        double e = rel_err(&out.logits, st_find(&fx.f, "ablate.logits"));
        CHECK_MSG(e <= 1e-4, "%s: ablated logits rel err %g", MODELS[i], e);
        double e0 = rel_err(&out.logits, st_find(&fx.f, "logits"));
        CHECK_MSG(e0 > 1e-3, "%s: ablation changed nothing (%g)", MODELS[i], e0);
        mw_forward_out_release(&out);
        free(w);
        mw_tensor_release(&tok);
        free_fixture(&fx);
    }
}

/* only the asked-for slots are delivered, and asking changes no number */
static int count_deliver(void *ud, int id, int layer, mw_tensor *act) {
    (void)act;
    int *n = ud;
    n[0]++;
    n[1] = id;
    n[2] = layer;
    return 0;
}

static void test_filtered_delivery(void) {
    fixture fx;
    if (load_fixture(&fx, "gpt2")) { CHECK(0); free_fixture(&fx); return; }
    mw_tensor tok;
    CHECK_OK(tensor_of(&tok, st_find(&fx.f, "tokens")));
    mw_forward_opts o;
    mw_forward_opts_default(&o, fx.m);
    o.tokens = &tok;
    uint8_t *w = calloc((size_t)mw_hook_slots(fx.m), 1);
    w[mw_hook_slot(fx.m, MW_HOOK_PATTERN, 1)] = 1;
    int n[3] = {0, -1, -1};
    o.want = w;
    o.deliver = count_deliver;
    o.ud = n;
    mw_forward_out out;
    CHECK_OK(mw_model_forward(fx.m, &o, &out));
    CHECK(n[0] == 1 && n[1] == MW_HOOK_PATTERN && n[2] == 1);
    CHECK(rel_err(&out.logits, st_find(&fx.f, "logits")) <= 1e-4);
    mw_forward_out_release(&out);
    /* a slot of a hook this config lacks is never delivered */
    fixture fa;
    if (load_fixture(&fa, "attn2")) { CHECK(0); free_fixture(&fa); }
    else {
        uint8_t *wa = calloc((size_t)mw_hook_slots(fa.m), 1);
        wa[mw_hook_slot(fa.m, MW_HOOK_MLP_OUT, 0)] = 1;
        wa[mw_hook_slot(fa.m, MW_HOOK_LN1_SCALE, 0)] = 1;
        wa[mw_hook_slot(fa.m, MW_HOOK_RESID_MID, 1)] = 1;
        mw_forward_opts_default(&o, fa.m);
        mw_tensor ta;
        CHECK_OK(tensor_of(&ta, st_find(&fa.f, "tokens")));
        o.tokens = &ta;
        o.want = wa;
        o.deliver = count_deliver;
        n[0] = 0;
        o.ud = n;
        CHECK_OK(mw_model_forward(fa.m, &o, &out));
        CHECK(n[0] == 0);
        mw_forward_out_release(&out);
        mw_tensor_release(&ta);
        free(wa);
        free_fixture(&fa);
    }
    free(w);
    mw_tensor_release(&tok);
    free_fixture(&fx);
}

/* start_at_layer from the fixture's resid_pre of block 1 gives the fixture's logits; stopping
 * at block 1 returns the fixture's resid_post of block 0 */
static void test_start_stop(void) {
    for (size_t i = 0; i < sizeof MODELS / sizeof *MODELS; i++) {
        fixture fx;
        if (load_fixture(&fx, MODELS[i])) { CHECK(0); free_fixture(&fx); continue; }
        if (fx.m->cfg.n_layers < 2) { free_fixture(&fx); continue; }
        mw_tensor tok, res;
        CHECK_OK(tensor_of(&tok, st_find(&fx.f, "tokens")));
        CHECK_OK(tensor_of(&res, st_find(&fx.f, "act.blocks.1.hook_resid_pre")));
        mw_forward_opts o;
        mw_forward_opts_default(&o, fx.m);
        o.tokens = &tok;
        o.residual = &res;
        o.start_at_layer = 1;
        o.want_loss = 1;
        mw_forward_out out;
        CHECK_OK(mw_model_forward(fx.m, &o, &out));
        CHECK_MSG(rel_err(&out.logits, st_find(&fx.f, "logits")) <= 1e-4, "%s: start_at_layer 1", MODELS[i]);
        mw_forward_out_release(&out);
        mw_forward_opts_default(&o, fx.m);
        o.tokens = &tok;
        o.stop_at_layer = -1;
        CHECK_OK(mw_model_forward(fx.m, &o, &out));
        int64_t last = fx.m->cfg.n_layers - 1;
        char key[64];
        snprintf(key, sizeof key, "act.blocks.%lld.hook_resid_pre", (long long)last);
        CHECK(out.logits.storage == NULL);
        CHECK_MSG(rel_err(&out.residual, st_find(&fx.f, key)) <= 1e-4, "%s: stop_at_layer -1", MODELS[i]);
        mw_forward_out_release(&out);
        mw_tensor_release(&tok);
        mw_tensor_release(&res);
        free_fixture(&fx);
    }
}

/* a deliver returning -1 stops the pass with its message; the next pass is unaffected */
static void test_hook_stops(void) {
    fixture fx;
    if (load_fixture(&fx, "gpt2")) { CHECK(0); free_fixture(&fx); return; }
    mw_tensor tok;
    CHECK_OK(tensor_of(&tok, st_find(&fx.f, "tokens")));
    mw_forward_opts o;
    mw_forward_opts_default(&o, fx.m);
    o.tokens = &tok;
    uint8_t *w = want_all(fx.m);
    check_ctx c = {&fx, NULL, 0, 1, 0, "", -1, 0, 5};
    o.want = w;
    o.deliver = check_deliver;
    o.ud = &c;
    mw_forward_out out;
    CHECK_ERR(mw_model_forward(fx.m, &o, &out), "test hook stops at blocks.0.attn.hook_q");
    CHECK(out.logits.storage == NULL);
    CHECK(c.n == 6);
    o.want = NULL;
    CHECK_OK(mw_model_forward(fx.m, &o, &out));
    CHECK(rel_err(&out.logits, st_find(&fx.f, "logits")) <= 1e-4);
    mw_forward_out_release(&out);
    free(w);
    mw_tensor_release(&tok);
    free_fixture(&fx);
}

static void test_bad_inputs(void) {
    fixture fx;
    if (load_fixture(&fx, "gpt2")) { CHECK(0); free_fixture(&fx); return; }
    mw_forward_opts o;
    mw_forward_out out;
    int64_t sh[2] = {1, 3};
    int64_t bad[3] = {1, 999, 2};
    mw_tensor tok;
    CHECK_OK(mw_tensor_from_data(&tok, MW_I64, 2, sh, bad));
    mw_forward_opts_default(&o, fx.m);
    o.tokens = &tok;
    CHECK_ERR(mw_model_forward(fx.m, &o, &out), "out of range");
    mw_tensor_release(&tok);
    int64_t sh2[2] = {1, 17};
    CHECK_OK(mw_tensor_zeros(&tok, MW_I64, 2, sh2));
    o.tokens = &tok;
    CHECK_ERR(mw_model_forward(fx.m, &o, &out), "exceed n_ctx");
    mw_tensor_release(&tok);
    mw_tensor w;
    int64_t ws[2] = {3, 3};
    CHECK_OK(mw_tensor_zeros(&w, MW_F32, 2, ws));
    CHECK_ERR(mw_model_param_set(fx.m, "blocks.0.attn.W_Q", &w), "blocks.0.attn.W_Q");
    CHECK_ERR(mw_model_param_set(fx.m, "blocks.5.attn.W_Q", &w), "out of range");
    CHECK_ERR(mw_model_param_set(fx.m, "blocks.0.attn.W_X", &w), "not a parameter");
    CHECK_OK(mw_model_param_set(fx.m, "blocks.0.attn.mask", &w)); /* ignored buffer */
    mw_tensor_release(&w);
    mw_config cfg;
    mw_config_default(&cfg);
    CHECK(mw_model_new(&cfg) == NULL && strstr(mw_error(), "d_model"));
    free_fixture(&fx);
}

/* hook names: parse(name(id, layer)) round-trips, and names are unique */
static void test_hook_names(void) {
    char buf[128];
    for (int id = 0; id < MW_HOOK_COUNT; id++) {
        int layer = mw_hook_stage(id) == 1 ? 3 : -1, pid, pl;
        mw_hook_name(buf, sizeof buf, id, layer);
        CHECK(mw_hook_parse(buf, &pid, &pl) == 0 && pid == id && pl == layer);
    }
    int pid, pl;
    CHECK(mw_hook_parse("blocks.0.attn.hook_pattern", &pid, &pl) == 0 && pid == MW_HOOK_PATTERN && pl == 0);
    CHECK(mw_hook_parse("hook_pattern", &pid, &pl) == -1);
    CHECK(mw_hook_parse("blocks.x.attn.hook_q", &pid, &pl) == -1);
    CHECK(mw_hook_parse("blocks.1.hook_embed", &pid, &pl) == -1);
}

/* init: W_* ~ N(0, initializer_range^2) with the default 0.8/sqrt(d_model); biases 0, LN w 1 */
static void test_init(void) {
    mw_config c;
    mw_config_default(&c);
    c.d_model = 64; c.d_head = 16; c.n_layers = 2; c.n_ctx = 32; c.d_vocab = 100; c.act_fn = MW_ACT_GELU_NEW;
    c.seed = 42;
    mw_model *m = mw_model_new(&c);
    CHECK(m != NULL);
    if (!m) return;
    CHECK(m->cfg.n_heads == 4 && m->cfg.d_mlp == 256 && m->cfg.d_vocab_out == 100);
    CHECK_NEAR(m->cfg.initializer_range, 0.1, 1e-12);
    /* every weight is a view of the model's one flat buffer: W_in's storage order at its offset */
    const float *p = mw_tensor_data(&m->w.W_in);
    int64_t n = mw_tensor_numel(&m->w.W_in);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) { s += p[i]; s2 += p[i] * p[i]; }
    CHECK_NEAR(s / n, 0.0, 0.005);
    CHECK_NEAR(sqrt(s2 / n), 0.1, 0.005);
    CHECK(((float *)mw_tensor_data(&m->w.ln1_w))[5] == 1.0f && ((float *)mw_tensor_data(&m->w.b_Q))[5] == 0.0f);
    /* the same seed gives the same weights */
    mw_model *m2 = mw_model_new(&c);
    int64_t nflat;
    const float *flat = mw_model_flat(m, &nflat);
    CHECK(memcmp(mw_model_flat(m2, &nflat), flat, 4 * (size_t)nflat) == 0);
    CHECK(nflat == m->w.W_E.storage->numel && (const float *)mw_tensor_data(&m->w.W_U) ==
          flat + mw_model_param_offset(m, MW_PARAM_W_U));
    /* W_Q is the permuted view [L,H,d,dh] of storage [L,d,H,dh]: element [l,h,i,j] */
    int64_t ix[4] = {1, 2, 5, 3};
    float direct = ((float *)mw_tensor_data(&m->w.W_Q))[((1 * 64 + 5) * 4 + 2) * 16 + 3];
    CHECK(mw_tensor_get(&m->w.W_Q, ix) == direct);
    CHECK(m->w.W_Q.shape[0] == 2 && m->w.W_Q.shape[1] == 4 && m->w.W_Q.shape[2] == 64 && m->w.W_Q.shape[3] == 16);
    mw_model_free(m2);
    mw_model_free(m);
}

/* The parameter gradients of the loss (mw_model_backward with grads) of the SoLU models equal
 * PyTorch autograd's (pgrad.* of tests/fixtures/grads/NAME.safetensors, gen_grads.py) */
static void test_solu_param_grads(void) {
    static const char *names[] = {"solu_ln", "solu_lnpre", "solu"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        fixture fx;
        st_file gf;
        char path[256], err[512];
        if (load_fixture(&fx, names[i])) { CHECK(0); free_fixture(&fx); continue; }
        snprintf(path, sizeof path, "tests/fixtures/grads/%s.safetensors", names[i]);
        if (st_open(&gf, path, err, sizeof err)) { printf("  %s\n", err); CHECK(0); free_fixture(&fx); continue; }
        mw_tensor tok;
        CHECK(tensor_of(&tok, st_find(&fx.f, "tokens")) == 0);
        mw_forward_opts o;
        mw_forward_opts_default(&o, fx.m);
        o.tokens = &tok;
        o.want_loss = 1;
        o.want_logits = 0;
        o.keep_activations = 1;
        mw_forward_out out;
        CHECK(mw_model_forward(fx.m, &o, &out) == 0);
        mw_storage *gs = mw_storage_new(MW_F32, mw_model_nparams(fx.m));
        memset(gs->data, 0, (size_t)mw_model_nparams(fx.m) * sizeof(float));
        mw_weights gw;
        CHECK(mw_weights_over(&gw, fx.m, gs) == 0);
        mw_backward_opts b = {.grads = &gw};
        CHECK_MSG(mw_model_backward(fx.m, &b) == 0, "%s: %s", names[i], mw_error());
        int n = 0;
        double worst = 0;
        for (size_t k = 0; k < gf.n_tensors; k++) {
            const st_tensor *t = &gf.tensors[k];
            if (strncmp(t->name, "pgrad.", 6) != 0) continue;
            int pid, layer;
            CHECK(mw_model_param_lookup(fx.m, t->name + 6, &pid, &layer) == 0);
            mw_weights saved = fx.m->w; /* the same view over the gradient buffer */
            fx.m->w = gw;
            mw_tensor v;
            int rc = mw_model_param_view(&v, fx.m, pid, layer);
            fx.m->w = saved;
            CHECK(rc == 0);
            /* b_K's gradient is 0 in exact arithmetic (a softmax ignores what every key adds
             * alike): there the absolute error counts */
            double e = rel_err(&v, t), mx = 0;
            for (int64_t j = 0; j < t->numel; j++) {
                float f;
                memcpy(&f, (const char *)t->data + 4 * j, 4);
                if (fabs(f) > mx) mx = fabs(f);
            }
            if (mx < 1e-6) e *= mx > 1e-30 ? mx : 1e-30;
            CHECK_MSG(e <= 1e-4, "%s: %s error %g", names[i], t->name, e);
            if (e > worst) worst = e;
            mw_tensor_release(&v);
            n++;
        }
        /* every parameter of the model has its reference */
        int expected = 0;
        for (int p = 0; p < MW_PARAM_COUNT; p++)
            if (mw_model_param_exists(fx.m, p)) expected += mw_param_per_block(p) ? (int)fx.m->cfg.n_layers : 1;
        CHECK_MSG(n == expected, "%s: %d parameter gradients, model has %d", names[i], n, expected);
        printf("  %s: %d parameter gradients, worst rel err %.2g\n", names[i], n, worst);
        mw_weights_release(&gw);
        mw_storage_release(gs);
        mw_forward_out_release(&out);
        mw_tensor_release(&tok);
        st_close(&gf);
        free_fixture(&fx);
    }
}

int main(void) {
    RUN(test_hook_names);
    RUN(test_init);
    RUN(test_fixture_activations);
    RUN(test_fixture_padding);
    RUN(test_hook_edit_ablation);
    RUN(test_filtered_delivery);
    RUN(test_start_stop);
    RUN(test_hook_stops);
    RUN(test_bad_inputs);
    RUN(test_solu_param_grads);
    MW_TEST_MAIN_END();
}
