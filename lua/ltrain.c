/* ltrain.c - training from Lua: tokenizer training, token datasets, and the trainer (core/train.h).
 *
 *   core.train_tokenizer(files, vocab_size, min_frequency, out)  -> vocab size, merges
 *   core.encode_dataset(tokenizer_json, files, out)              -> number of tokens written
 *   core.Dataset(path)   userdata: ds:batch(B, T [, bos [, repeat_frac [, random_frac]]]) -> int64 [B,T]; ds:seed(s);
 *                        ds.n, ds.vocab, ds.eot (repeat_frac: see mw_dataset_batch_repeat)
 *   core.Trainer(cfg, maxB, maxT)  userdata over mw_trainer; cfg uses HookedTransformerConfig
 *     names (d_model, d_head, n_heads, n_layers, n_ctx, d_vocab, d_mlp, attn_only,
 *     normalization_type = nil | "LN" | "LNPre", positional_embedding_type, seed,
 *     initializer_range). Methods: forward(tokens, grads) -> loss; step(opts) -> grad norm, lr;
 *     lr(opts, step); steps(); nparams(); save(path); load(path); export(path);
 *     induction(seq_len, batch, seed) -> [L,H] scores, first-half and second-half log-prob;
 *     prev_token(tokens) -> [L,H]; pattern_of(tokens, layer) -> [B,H,T,T] (a copy).
 * The trainer and dataset userdata free their memory in __gc / __close.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bpe_train.h"
#include "mwl.h"
#include "tokenizer.h"
#include "train.h"

#define MWL_TRAINER "miwb.Trainer"
#define MWL_DATASET "miwb.Dataset"

typedef struct { mw_trainer *t; } ud_trainer;
typedef struct { mw_dataset d; uint64_t state; int open; } ud_dataset;

/* core.monotonic(): wall-clock seconds from an arbitrary origin (for tokens/s and ETAs) */
static int l_monotonic(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec);
    return 1;
}

/* ---------------------------------------------------------------- tokenizer and datasets */

static int l_train_tokenizer(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int vocab = (int)luaL_checkinteger(L, 2);
    lua_Integer minf = luaL_optinteger(L, 3, 2);
    const char *out = luaL_checkstring(L, 4);
    mw_bpe_trainer *t = mw_bpe_trainer_new();
    if (!t) return mwl_coreerror(L);
    lua_Integer n = luaL_len(L, 1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        const char *f = lua_tostring(L, -1);
        if (!f) { mw_bpe_trainer_free(t); return luaL_error(L, "train_tokenizer: files[%d] is not a path", (int)i); }
        if (mw_bpe_trainer_feed_file(t, f)) { mw_bpe_trainer_free(t); return mwl_coreerror(L); }
        lua_pop(L, 1);
    }
    mw_bpe *b = NULL;
    int rc = mw_bpe_train(&b, t, vocab, minf);
    mw_bpe_trainer_free(t);
    if (rc) return mwl_coreerror(L);
    if (mw_bpe_save(b, out)) { mw_bpe_free(b); return mwl_coreerror(L); }
    lua_pushinteger(L, mw_bpe_vocab_size(b));
    lua_pushinteger(L, mw_bpe_nmerges(b));
    mw_bpe_free(b);
    return 2;
}

static int l_encode_dataset(lua_State *L) {
    const char *tok = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *out = luaL_checkstring(L, 3);
    mw_tokenizer *t = NULL;
    if (mw_tokenizer_load(&t, tok)) return mwl_coreerror(L);
    int32_t *all = NULL;
    size_t nall = 0;
    lua_Integer n = luaL_len(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        const char *f = lua_tostring(L, -1);
        int64_t *ids = NULL;
        size_t nids = 0;
        int32_t *na = NULL;
        if (!f || mw_tokenizer_encode_file(&ids, &nids, t, f) ||
            !(na = realloc(all, sizeof *na * (nall + nids + 1)))) {
            if (!f) mw_seterr("encode_dataset: files[%d] is not a path", (int)i);
            else if (!na && ids) mw_seterr("encode_dataset: out of memory");
            free(ids); free(all); mw_tokenizer_free(t);
            return mwl_coreerror(L);
        }
        all = na;
        for (size_t k = 0; k < nids; k++) all[nall + k] = (int32_t)ids[k];
        nall += nids;
        free(ids);
        lua_pop(L, 1);
    }
    int rc = mw_dataset_write(out, all, (int64_t)nall, mw_tokenizer_vocab_size(t),
                              mw_tokenizer_special_id(t, MW_TOK_EOS));
    mw_tokenizer_free(t);
    free(all);
    if (rc) return mwl_coreerror(L);
    lua_pushinteger(L, (lua_Integer)nall);
    return 1;
}

static ud_dataset *check_ds(lua_State *L, int i) {
    ud_dataset *u = luaL_checkudata(L, i, MWL_DATASET);
    if (!u->open) luaL_error(L, "dataset: already closed");
    return u;
}

static int l_dataset(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    ud_dataset *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, MWL_DATASET);
    if (mw_dataset_open(&u->d, path)) return mwl_coreerror(L);
    u->open = 1;
    u->state = 0;
    return 1;
}

static int ds_gc(lua_State *L) {
    ud_dataset *u = luaL_checkudata(L, 1, MWL_DATASET);
    if (u->open) mw_dataset_close(&u->d);
    u->open = 0;
    return 0;
}

static int ds_batch(lua_State *L) {
    ud_dataset *u = check_ds(L, 1);
    int64_t B = luaL_checkinteger(L, 2), T = luaL_checkinteger(L, 3);
    lua_Integer bos = luaL_optinteger(L, 4, u->d.eot >= 0 ? u->d.eot : -1);
    double rep = luaL_optnumber(L, 5, 0), rnd = luaL_optnumber(L, 6, 0);
    if (B <= 0 || T <= 0) return luaL_error(L, "dataset:batch: [%d,%d] must be positive", (int)B, (int)T);
    int32_t *tok = malloc(sizeof *tok * (size_t)(B * T));
    if (!tok) return luaL_error(L, "dataset:batch: out of memory");
    mw_dataset_batch_repeat(&u->d, &u->state, tok, B, T, (int32_t)bos, rep, rnd);
    mw_tensor *t = mwl_newtensor(L);
    int64_t sh[2] = {B, T};
    if (mw_tensor_empty(t, MW_I64, 2, sh)) { free(tok); return mwl_coreerror(L); }
    int64_t *d = mw_tensor_data(t);
    for (int64_t i = 0; i < B * T; i++) d[i] = tok[i];
    free(tok);
    mwl_account(L);
    return 1;
}

static int ds_seed(lua_State *L) {
    check_ds(L, 1)->state = (uint64_t)luaL_checkinteger(L, 2);
    return 0;
}

static int ds_index(lua_State *L) {
    ud_dataset *u = check_ds(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "n")) lua_pushinteger(L, u->d.n);
    else if (!strcmp(k, "vocab")) lua_pushinteger(L, u->d.vocab);
    else if (!strcmp(k, "eot")) lua_pushinteger(L, u->d.eot);
    else {
        luaL_getmetatable(L, MWL_DATASET);
        lua_getfield(L, -1, "methods");
        lua_getfield(L, -1, k);
    }
    return 1;
}

static int ds_len(lua_State *L) {
    lua_pushinteger(L, check_ds(L, 1)->d.n);
    return 1;
}

/* ---------------------------------------------------------------- trainer */

static mw_trainer *check_tr(lua_State *L, int i) {
    ud_trainer *u = luaL_checkudata(L, i, MWL_TRAINER);
    if (!u->t) luaL_error(L, "trainer: already freed");
    return u->t;
}

static lua_Integer field_int(lua_State *L, int idx, const char *k, lua_Integer dflt) {
    lua_getfield(L, idx, k);
    lua_Integer v = dflt;
    if (!lua_isnil(L, -1)) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok) luaL_error(L, "Trainer: cfg.%s must be an integer", k);
    }
    lua_pop(L, 1);
    return v;
}

static double field_num(lua_State *L, int idx, const char *k, double dflt) {
    lua_getfield(L, idx, k);
    double v = dflt;
    if (!lua_isnil(L, -1)) {
        if (!lua_isnumber(L, -1)) luaL_error(L, "%s must be a number", k);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static int l_trainer(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    mw_train_config c;
    memset(&c, 0, sizeof c);
    c.d_model = field_int(L, 1, "d_model", 0);
    c.d_head = field_int(L, 1, "d_head", 0);
    c.n_heads = field_int(L, 1, "n_heads", c.d_head > 0 ? c.d_model / c.d_head : 0);
    c.n_layers = field_int(L, 1, "n_layers", 0);
    c.n_ctx = field_int(L, 1, "n_ctx", 0);
    c.d_vocab = field_int(L, 1, "d_vocab", 0);
    lua_getfield(L, 1, "attn_only");
    c.attn_only = lua_toboolean(L, -1);
    lua_pop(L, 1);
    c.d_mlp = field_int(L, 1, "d_mlp", c.attn_only ? 0 : 4 * c.d_model);
    lua_getfield(L, 1, "normalization_type");
    const char *nt = lua_tostring(L, -1);
    c.norm = !nt ? MW_TNORM_NONE : !strcmp(nt, "LN") ? MW_TNORM_LN : !strcmp(nt, "LNPre") ? MW_TNORM_LNPRE : (mw_tnorm)-1;
    lua_pop(L, 1);
    if ((int)c.norm < 0) return luaL_error(L, "Trainer: cfg.normalization_type '%s' is not nil, 'LN' or 'LNPre'", nt);
    lua_getfield(L, 1, "positional_embedding_type");
    const char *pt = lua_tostring(L, -1);
    if (pt && strcmp(pt, "standard") && strcmp(pt, "shortformer"))
        return luaL_error(L, "Trainer: cfg.positional_embedding_type '%s' is not 'standard' or 'shortformer'", pt);
    c.shortformer = pt && !strcmp(pt, "shortformer");
    lua_pop(L, 1);
    c.seed = (uint64_t)field_int(L, 1, "seed", 0);
    c.init_range = field_num(L, 1, "initializer_range", 0);
    c.eps = field_num(L, 1, "eps", 1e-5);
    int64_t B = luaL_checkinteger(L, 2), T = luaL_optinteger(L, 3, c.n_ctx);
    ud_trainer *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->t = NULL;
    luaL_setmetatable(L, MWL_TRAINER);
    u->t = mw_trainer_new(&c, B, T);
    if (!u->t) return mwl_coreerror(L);
    return 1;
}

static int tr_gc(lua_State *L) {
    ud_trainer *u = luaL_checkudata(L, 1, MWL_TRAINER);
    mw_trainer_free(u->t);
    u->t = NULL;
    return 0;
}

/* int64 [B,T] tensor -> int32 buffer (malloc'd) */
static int32_t *tokens_arg(lua_State *L, int i, int64_t *B, int64_t *T) {
    mw_tensor *t = mwl_checktensor(L, i);
    if (t->ndim != 2) luaL_error(L, "trainer: tokens must be [batch, pos], got %d dims", t->ndim);
    *B = t->shape[0];
    *T = t->shape[1];
    int32_t *tok = malloc(sizeof *tok * (size_t)(*B * *T) + 1);
    if (!tok) luaL_error(L, "trainer: out of memory");
    int64_t idx[2];
    for (idx[0] = 0; idx[0] < *B; idx[0]++)
        for (idx[1] = 0; idx[1] < *T; idx[1]++) tok[idx[0] * *T + idx[1]] = (int32_t)mw_tensor_get(t, idx);
    return tok;
}

static int tr_forward(lua_State *L) {
    mw_trainer *t = check_tr(L, 1);
    int64_t B, T;
    int32_t *tok = tokens_arg(L, 2, &B, &T);
    double loss;
    int rc = mw_trainer_forward(t, tok, B, T, lua_toboolean(L, 3), &loss);
    free(tok);
    if (rc) return mwl_coreerror(L);
    lua_pushnumber(L, loss);
    return 1;
}

static void adamw_opts(lua_State *L, int i, mw_adamw_opts *o) {
    mw_adamw_default(o);
    if (lua_isnoneornil(L, i)) return;
    luaL_checktype(L, i, LUA_TTABLE);
    o->lr = field_num(L, i, "lr", o->lr);
    o->min_lr = field_num(L, i, "min_lr", o->lr / 10);
    o->warmup = (int64_t)field_num(L, i, "warmup", 0);
    o->steps = (int64_t)field_num(L, i, "steps", 0);
    o->beta1 = field_num(L, i, "beta1", o->beta1);
    o->beta2 = field_num(L, i, "beta2", o->beta2);
    o->eps = field_num(L, i, "eps", o->eps);
    o->weight_decay = field_num(L, i, "weight_decay", o->weight_decay);
    o->clip = field_num(L, i, "clip", o->clip);
}

static int tr_step(lua_State *L) {
    mw_trainer *t = check_tr(L, 1);
    mw_adamw_opts o;
    adamw_opts(L, 2, &o);
    double lr = mw_adamw_lr(&o, mw_trainer_nsteps(t)), gn;
    if (mw_trainer_step(t, &o, &gn)) return mwl_coreerror(L);
    lua_pushnumber(L, gn);
    lua_pushnumber(L, lr);
    return 2;
}

static int tr_lr(lua_State *L) {
    check_tr(L, 1);
    mw_adamw_opts o;
    adamw_opts(L, 2, &o);
    lua_pushnumber(L, mw_adamw_lr(&o, luaL_checkinteger(L, 3)));
    return 1;
}

static int tr_steps(lua_State *L) {
    lua_pushinteger(L, mw_trainer_nsteps(check_tr(L, 1)));
    return 1;
}

static int tr_nparams(lua_State *L) {
    size_t n;
    mw_trainer_params(check_tr(L, 1), &n);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int tr_save(lua_State *L) {
    if (mw_trainer_save(check_tr(L, 1), luaL_checkstring(L, 2))) return mwl_coreerror(L);
    return 0;
}
static int tr_load(lua_State *L) {
    if (mw_trainer_load(check_tr(L, 1), luaL_checkstring(L, 2))) return mwl_coreerror(L);
    return 0;
}
static int tr_export(lua_State *L) {
    if (mw_trainer_export(check_tr(L, 1), luaL_checkstring(L, 2))) return mwl_coreerror(L);
    return 0;
}

/* pushes a new f32 tensor [L,H] from doubles */
static void push_lh(lua_State *L, const mw_train_config *c, const double *v) {
    mw_tensor *t = mwl_newtensor(L);
    int64_t sh[2] = {c->n_layers, c->n_heads};
    if (mw_tensor_empty(t, MW_F32, 2, sh)) mwl_coreerror(L);
    float *d = mw_tensor_data(t);
    for (int64_t i = 0; i < c->n_layers * c->n_heads; i++) d[i] = (float)v[i];
}

static int tr_induction(lua_State *L) {
    mw_trainer *t = check_tr(L, 1);
    const mw_train_config *c = mw_trainer_config(t);
    int64_t sl = luaL_optinteger(L, 2, 50), B = luaL_optinteger(L, 3, 10);
    uint64_t seed = (uint64_t)luaL_optinteger(L, 4, 0);
    double *ind = malloc(sizeof *ind * (size_t)(c->n_layers * c->n_heads)), first, second;
    if (!ind) return luaL_error(L, "trainer:induction: out of memory");
    if (mw_trainer_induction(t, sl, B, seed, ind, &first, &second)) { free(ind); return mwl_coreerror(L); }
    push_lh(L, c, ind);
    free(ind);
    lua_pushnumber(L, first);
    lua_pushnumber(L, second);
    return 3;
}

static int tr_prev_token(lua_State *L) {
    mw_trainer *t = check_tr(L, 1);
    const mw_train_config *c = mw_trainer_config(t);
    int64_t B, T;
    int32_t *tok = tokens_arg(L, 2, &B, &T);
    double *prev = malloc(sizeof *prev * (size_t)(c->n_layers * c->n_heads));
    int rc = prev ? mw_trainer_prev_token(t, tok, B, T, prev) : mw_seterr("trainer:prev_token: out of memory");
    free(tok);
    if (rc) { free(prev); return mwl_coreerror(L); }
    push_lh(L, c, prev);
    free(prev);
    return 1;
}

/* runs a forward pass on tokens and returns layer l's pattern [B,H,T,T] as a new tensor */
static int tr_pattern_of(lua_State *L) {
    mw_trainer *t = check_tr(L, 1);
    const mw_train_config *c = mw_trainer_config(t);
    int64_t B, T;
    int32_t *tok = tokens_arg(L, 2, &B, &T);
    lua_Integer l = luaL_checkinteger(L, 3);
    if (l < 0) l += c->n_layers;
    if (l < 0 || l >= c->n_layers) { free(tok); return luaL_error(L, "trainer:pattern_of: layer %d outside [0,%d)", (int)l, (int)c->n_layers); }
    double loss;
    int rc = mw_trainer_forward(t, tok, B, T, 0, &loss);
    free(tok);
    if (rc) return mwl_coreerror(L);
    mw_tensor *out = mwl_newtensor(L);
    int64_t sh[4] = {B, c->n_heads, T, T};
    if (mw_tensor_empty(out, MW_F32, 4, sh)) return mwl_coreerror(L);
    memcpy(mw_tensor_data(out), mw_trainer_pattern(t, l), sizeof(float) * (size_t)(B * c->n_heads * T * T));
    mwl_account(L);
    return 1;
}

static const luaL_Reg tr_methods[] = {
    {"forward", tr_forward}, {"step", tr_step}, {"lr", tr_lr}, {"steps", tr_steps}, {"nparams", tr_nparams},
    {"save", tr_save}, {"load", tr_load}, {"export", tr_export}, {"induction", tr_induction},
    {"prev_token", tr_prev_token}, {"pattern_of", tr_pattern_of}, {NULL, NULL}};
static const luaL_Reg ds_methods[] = {{"batch", ds_batch}, {"seed", ds_seed}, {NULL, NULL}};

void mwl_open_train(lua_State *L) {
    luaL_newmetatable(L, MWL_TRAINER);
    luaL_newlib(L, tr_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, tr_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, tr_gc);
    lua_setfield(L, -2, "__close");
    lua_pushliteral(L, "miwb.Trainer");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    luaL_newmetatable(L, MWL_DATASET);
    luaL_newlib(L, ds_methods);
    lua_setfield(L, -2, "methods");
    lua_pushcfunction(L, ds_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ds_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, ds_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, ds_gc);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {{"train_tokenizer", l_train_tokenizer}, {"encode_dataset", l_encode_dataset},
                                   {"Dataset", l_dataset}, {"Trainer", l_trainer},
                                   {"monotonic", l_monotonic}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
