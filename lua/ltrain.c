/* ltrain.c - training from Lua: tokenizer training, token datasets, and the trainer (core/train.h).
 *
 *   core.train_tokenizer(files, vocab_size, min_frequency, out)  -> vocab size, merges
 *   core.encode_dataset(tokenizer_json, files, out)              -> number of tokens written
 *   core.Dataset(path)   userdata: ds:batch(B, T [, bos [, repeat_frac [, random_frac]]]) -> int64 [B,T]; ds:seed(s);
 *                        ds.n, ds.vocab, ds.eot (repeat_frac: see mw_dataset_batch_repeat)
 *   core.Trainer(cfg)    userdata over mw_trainer; cfg is a HookedTransformerConfig table read as
 *     the model reads it (mwl_toconfig, then mw_config_finish in mw_model_new). Methods:
 *     forward(tokens, grads [, {hooks = {[hook name] = fn(act, hook)}}]) -> loss (tokens int64
 *     [B,T]; hooks fire during the training forward, hook.name is the name); step(opts) -> grad
 *     norm, lr; lr(opts, step); steps(); nparams(); config() -> the finished config
 *     (mwl_pushconfig); model() -> the model being trained (a core model userdata);
 *     save(path); load(path); export(path); induction(seq_len, batch, seed) -> [L,H] scores,
 *     first-half and second-half log-prob; prev_token(tokens) -> [L,H]; pattern_of(tokens, layer)
 *     -> [B,H,T,T].
 * The trainer and dataset userdata free their memory in __gc / __close. Every C buffer a method
 * needs is a Lua userdata made before anything can raise, so an error leaks nothing.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bpe_train.h"
#include "dataset.h"
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

/* the paths of the list at idx, copied into a new plain table (pushed): reading the list may run
 * metamethods (__len, __index) that raise, so it is done before any C resource exists */
static lua_Integer path_list(lua_State *L, int idx, const char *who) {
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer n = luaL_len(L, idx);
    lua_createtable(L, n > 0 && n < 1000000 ? (int)n : 0, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: files[%d] is not a path", who, (int)i);
        lua_rawseti(L, -2, i);
    }
    return n;
}

static int l_train_tokenizer(lua_State *L) {
    int vocab = (int)luaL_checkinteger(L, 2);
    lua_Integer minf = luaL_optinteger(L, 3, 2);
    const char *out = mwl_checkname(L, 4, "train_tokenizer", "the output path");
    lua_Integer n = path_list(L, 1, "train_tokenizer");
    int files = lua_gettop(L);
    mw_bpe_trainer *t = mw_bpe_trainer_new();
    if (!t) return mwl_coreerror(L);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, files, i);
        const char *f = lua_tostring(L, -1);
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
    const char *tok = mwl_checkname(L, 1, "encode_dataset", "the tokenizer path");
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *out = mwl_checkname(L, 3, "encode_dataset", "the output path");
    mw_tokenizer *t = NULL;
    if (mw_tokenizer_load(&t, tok)) return mwl_coreerror(L);
    int64_t *all = NULL;
    size_t nall = 0;
    lua_Integer n = luaL_len(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 2, i);
        const char *f = lua_tostring(L, -1);
        int64_t *ids = NULL;
        size_t nids = 0;
        int64_t *na = NULL;
        if (!f || mw_tokenizer_encode_file(&ids, &nids, t, f) ||
            !(na = realloc(all, sizeof *na * (nall + nids + 1)))) {
            if (!f) mw_seterr("encode_dataset: files[%d] is not a path", (int)i);
            else if (!na && ids) mw_seterr("encode_dataset: out of memory");
            free(ids); free(all); mw_tokenizer_free(t);
            return mwl_coreerror(L);
        }
        all = na;
        memcpy(all + nall, ids, sizeof *ids * nids);
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
    const char *path = mwl_checkname(L, 1, "Dataset", "the path");
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
    mw_tensor *t = mwl_newtensor(L);
    int64_t sh[2] = {B, T};
    if (mw_tensor_empty(t, MW_I64, 2, sh)) return mwl_coreerror(L);
    mw_dataset_batch_repeat(&u->d, &u->state, mw_tensor_data(t), B, T, bos, rep, rnd);
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

static double field_num(lua_State *L, int idx, const char *k, double dflt) {
    lua_getfield(L, idx, k);
    double v = dflt;
    if (!lua_isnil(L, -1)) {
        if (!lua_isnumber(L, -1)) luaL_error(L, "trainer: %s must be a number", k);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static int l_trainer(lua_State *L) {
    mw_config c;
    mwl_toconfig(L, 1, &c);
    if (!lua_isnone(L, 2))
        return luaL_error(L, "Trainer: takes only the config (its buffers grow with the batch); write mi.Trainer(cfg)");
    /* user value 1: the model userdata over the trainer's model (made on first use) */
    ud_trainer *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->t = NULL;
    luaL_setmetatable(L, MWL_TRAINER);
    u->t = mw_trainer_new(&c);
    if (!u->t) return mwl_coreerror(L);
    mwl_account(L);
    return 1;
}

static int tr_gc(lua_State *L) {
    ud_trainer *u = luaL_checkudata(L, 1, MWL_TRAINER);
    mw_trainer_free(u->t);
    u->t = NULL;
    return 0;
}

/* tokens: an int64 [B,T] tensor -> a contiguous int64 buffer owned by Lua (a userdata pushed on
 * the stack), so that a later error leaks nothing */
static int64_t *tokens_arg(lua_State *L, int i, int64_t *B, int64_t *T, const char *who) {
    mw_tensor *t = mwl_checktensor(L, i);
    char s[256];
    if (t->ndim != 2 || t->dtype != MW_I64)
        luaL_error(L, "trainer:%s: tokens must be int64 [batch, pos], got %s %s", who, mw_dtype_name(t->dtype),
                   mw_tensor_shape_str(s, sizeof s, t));
    *B = t->shape[0];
    *T = t->shape[1];
    int64_t *tok = lua_newuserdatauv(L, sizeof *tok * (size_t)(*B * *T) + 1, 0);
    int64_t idx[2];
    for (idx[0] = 0; idx[0] < *B; idx[0]++)
        for (idx[1] = 0; idx[1] < *T; idx[1]++) tok[idx[0] * *T + idx[1]] = (int64_t)mw_tensor_get(t, idx);
    return tok;
}

/* pushes the model userdata over the trainer's model at idx (one per trainer, kept as its user value) */
static void push_model(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    if (lua_getiuservalue(L, idx, 1) != LUA_TNIL) return;
    lua_pop(L, 1);
    mwl_push_model_of(L, mw_trainer_model(check_tr(L, idx)), idx);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, 1);
}

static int tr_model(lua_State *L) {
    check_tr(L, 1);
    push_model(L, 1);
    return 1;
}

/* pushes model.forward, the trainer's model and a new options table {tokens = arg 2, logits =
 * false}: the call's function and arguments, for the caller to complete the table and lua_call */
static void begin_model_forward(lua_State *L) {
    push_model(L, 1);
    lua_getfield(L, -1, "forward");
    lua_insert(L, -2);
    lua_createtable(L, 0, 5);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "tokens");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "logits");
}

/* forward(tokens, grads [, {hooks = {[name] = fn}}]): without hooks the C trainer runs alone;
 * with hooks the model's own Lua forward runs them (model:forward with keep_activations), then
 * the backward pass */
static int tr_forward(lua_State *L) {
    mw_trainer *t = check_tr(L, 1);
    int grads = lua_toboolean(L, 3);
    if (lua_isnoneornil(L, 4)) {
        int64_t B, T;
        int64_t *tok = tokens_arg(L, 2, &B, &T, "forward");
        double loss;
        if (mw_trainer_forward(t, tok, B, T, grads, &loss)) return mwl_coreerror(L);
        lua_pushnumber(L, loss);
        return 1;
    }
    static const char *const known[] = {"hooks", NULL};
    mwl_check_opts(L, 4, "trainer:forward", known);
    mw_tensor *tk = mwl_checktensor(L, 2);
    if (tk->dtype != MW_I64) return luaL_error(L, "trainer:forward: tokens must be int64, got %s", mw_dtype_name(tk->dtype));
    lua_getfield(L, 4, "hooks");
    luaL_checktype(L, -1, LUA_TTABLE);
    int hooks = lua_gettop(L);
    /* the model's forward takes hooks as {name = {{fn, hookobj}, ...}}; hookobj = {name = name} */
    lua_newtable(L);
    int conv = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, hooks)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isfunction(L, -1))
            return luaL_error(L, "trainer:forward: hooks must map hook names to functions");
        lua_createtable(L, 1, 0);      /* {{fn, hookobj}} */
        lua_createtable(L, 2, 0);      /* {fn, hookobj} */
        lua_pushvalue(L, -3);
        lua_rawseti(L, -2, 1);
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, -5);
        lua_setfield(L, -2, "name");
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, -3);
        lua_insert(L, -2);
        lua_settable(L, conv);         /* conv[name] = {{fn, hookobj}} */
        lua_pop(L, 1);
    }
    begin_model_forward(L);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "loss");
    lua_pushboolean(L, grads);
    lua_setfield(L, -2, "keep_activations");
    lua_pushvalue(L, conv);
    lua_setfield(L, -2, "hooks");
    lua_call(L, 2, 1);
    lua_getfield(L, -1, "loss");
    if (grads && mw_trainer_backward(t)) return mwl_coreerror(L);
    return 1;
}

static void adamw_opts(lua_State *L, int i, mw_adamw_opts *o) {
    mw_adamw_default(o);
    if (lua_isnoneornil(L, i)) return;
    static const char *const known[] = {"lr", "min_lr", "warmup", "steps", "beta1", "beta2", "eps", "weight_decay",
                                        "clip", NULL};
    mwl_check_opts(L, i, "trainer:step", known);
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
    int64_t n;
    mw_trainer_params(check_tr(L, 1), &n);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* the finished config (TransformerLens field names; Python's None is nil) */
static int tr_config(lua_State *L) {
    mwl_pushconfig(L, mw_trainer_config(check_tr(L, 1)));
    return 1;
}

static int tr_save(lua_State *L) {
    if (mw_trainer_save(check_tr(L, 1), mwl_checkname(L, 2, "save", "the path"))) return mwl_coreerror(L);
    return 0;
}
static int tr_load(lua_State *L) {
    if (mw_trainer_load(check_tr(L, 1), mwl_checkname(L, 2, "load", "the path"))) return mwl_coreerror(L);
    return 0;
}
static int tr_export(lua_State *L) {
    if (mw_trainer_export(check_tr(L, 1), mwl_checkname(L, 2, "export", "the path"))) return mwl_coreerror(L);
    return 0;
}

/* a new f32 tensor [L,H] on the stack, and its data */
static float *push_lh(lua_State *L, const mw_config *c) {
    mw_tensor *t = mwl_newtensor(L);
    int64_t sh[2] = {c->n_layers, c->n_heads};
    if (mw_tensor_empty(t, MW_F32, 2, sh)) mwl_coreerror(L);
    return mw_tensor_data(t);
}

static int tr_induction(lua_State *L) {
    mw_trainer *t = check_tr(L, 1);
    const mw_config *c = mw_trainer_config(t);
    int64_t sl = luaL_optinteger(L, 2, 50), B = luaL_optinteger(L, 3, 10);
    uint64_t seed = (uint64_t)luaL_optinteger(L, 4, 0);
    int64_t LH = c->n_layers * c->n_heads;
    double *ind = lua_newuserdatauv(L, sizeof *ind * (size_t)LH, 0), first, second;
    float *out = push_lh(L, c);
    if (mw_trainer_induction(t, sl, B, seed, ind, &first, &second)) return mwl_coreerror(L);
    for (int64_t i = 0; i < LH; i++) out[i] = (float)ind[i];
    lua_pushnumber(L, first);
    lua_pushnumber(L, second);
    return 3;
}

static int tr_prev_token(lua_State *L) {
    mw_trainer *t = check_tr(L, 1);
    const mw_config *c = mw_trainer_config(t);
    int64_t B, T, LH = c->n_layers * c->n_heads;
    int64_t *tok = tokens_arg(L, 2, &B, &T, "prev_token");
    double *prev = lua_newuserdatauv(L, sizeof *prev * (size_t)LH, 0);
    float *out = push_lh(L, c);
    if (mw_trainer_prev_token(t, tok, B, T, prev)) return mwl_coreerror(L);
    for (int64_t i = 0; i < LH; i++) out[i] = (float)prev[i];
    return 1;
}

/* pattern_of(tokens, layer): the model's forward with the pattern of that layer cached */
static int tr_pattern_of(lua_State *L) {
    mw_trainer *t = check_tr(L, 1);
    const mw_config *c = mw_trainer_config(t);
    mw_tensor *tk = mwl_checktensor(L, 2);
    lua_Integer l = luaL_checkinteger(L, 3);
    if (tk->dtype != MW_I64) return luaL_error(L, "trainer:pattern_of: tokens must be int64, got %s", mw_dtype_name(tk->dtype));
    if (l < 0) l += c->n_layers;
    if (l < 0 || l >= c->n_layers) return luaL_error(L, "trainer:pattern_of: layer %d outside [0,%d)", (int)l, (int)c->n_layers);
    char name[64];
    snprintf(name, sizeof name, "blocks.%d.attn.hook_pattern", (int)l);
    lua_newtable(L);
    int cache = lua_gettop(L);
    begin_model_forward(L);
    lua_createtable(L, 0, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, name);
    lua_setfield(L, -2, "cache_names");
    lua_pushvalue(L, cache);
    lua_setfield(L, -2, "cache");
    lua_call(L, 2, 0);
    lua_getfield(L, cache, name);
    return 1;
}

static const luaL_Reg tr_methods[] = {
    {"forward", tr_forward}, {"step", tr_step}, {"lr", tr_lr}, {"steps", tr_steps}, {"nparams", tr_nparams},
    {"config", tr_config}, {"model", tr_model},
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
