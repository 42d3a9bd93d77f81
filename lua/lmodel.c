/* lmodel.c - the Lua binding of core/model.c: a model userdata ("miwb.Model") with the raw
 * operations lua/miwb/model.lua builds HookedTransformer on.
 *
 *   core.model_new(cfg)          cfg: TransformerLens field names (numbers, booleans, strings)
 *   m:config()                   the finished numeric config as a table
 *   m:param(name)                a state-dict entry as a view ("blocks.0.attn.W_Q")
 *   m:weight(field)              a stacked weight as a view ("W_Q" [L,H,d,dh]), nil if absent
 *   m:param_names()              state-dict names, TransformerLens order
 *   m:set_param(name, t)         copy t into the entry; false for ignored buffers (attn.mask)
 *   m:hook_names()               hook names that fire for this config, in firing order
 *   m:forward(opts)              -> {logits=, loss=, loss_per_token=, residual=}
 *       opts.tokens, attention_mask, residual, start_at_layer, stop_at_layer, logits, last_only, loss,
 *       loss_from, loss_to (the predicted positions counted in the loss),
 *       keep_activations (training: for a backward pass, see core/train.h),
 *       cache_names = {name = true}, cache = table receiving clones by full name,
 *       hooks = {name = {{fn, hookobj}, ...}}
 *   m:backward(opts)             after a forward with keep_activations: grad_logits (nil: the
 *       mean loss), cache_names + cache (keys name .. "_grad"), hooks (backward hooks)
 *   m:generate(opts)             -> tokens i64 [B, P + steps]: core/generate.h's loop
 *       opts.tokens [B,P] (left padded), attention_mask, max_new_tokens, do_sample, temperature,
 *       top_k, top_p, freq_penalty, seed (nil: the default generator), use_past_kv_cache,
 *       stop_at_eos, eos = {ids}, eos_pad, hooks (as forward), progress = function(step, n)
 *   m:buffer_bytes(), m:trim()
 *   core._sample_logits(logits [B,V], opts) -> i64 [B]: mw_sample on each row (do_sample,
 *       temperature, top_k, top_p, freq_penalty, tokens [B,P] for the counts, seed)
 *
 * Hooks run Lua code in the middle of the C forward pass. No Lua error may longjmp through
 * model.c's frames, so every delivery runs in lua_pcall (deliver_protected); an error is kept in
 * the registry, the delivery returns -1, the core unwinds normally, and l_forward re-raises the
 * kept error (with the traceback added by the message handler) once the core has returned.
 */
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "model.h"
#include "mwl.h"

#define MWL_MODEL "miwb.Model"

typedef struct {
    mw_model *m;
    int busy;     /* inside forward: a hook must not run this model again (shared buffers) */
    int borrowed; /* m belongs to another object (a trainer), kept alive as user value 1 */
    int64_t out_bytes; /* bytes of the tensors the last call handed out (collect_last_outputs) */
} lmodel;

/* The outputs of this model's last call (logits, a cache, gradients) are usually garbage the
 * collector has not reached yet (`local logits, cache = model:run_with_cache(t)` in a loop):
 * collecting first lets this call reuse their memory (the model's logits buffer; freed large
 * tensors, which core/tensor.c keeps for reuse) instead of faulting in fresh memory of that size.
 * Done when the last call handed out 8 MB or more and a full collection (about the Lua heap's
 * size of work) is cheaper than the fault-in. */
static void collect_last_outputs(lua_State *L, lmodel *u) {
    if (u->out_bytes >= ((int64_t)8 << 20) && (int64_t)lua_gc(L, LUA_GCCOUNT) * 1024 * 2 < u->out_bytes)
        lua_gc(L, LUA_GCCOLLECT);
    u->out_bytes = 0;
}

/* after a call: add what it handed out (tensors, cache entries) */
static void note_outputs(lmodel *u, int64_t cached_bytes, const mw_tensor **outs, int n) {
    u->out_bytes += cached_bytes;
    for (int i = 0; i < n; i++)
        if (outs[i] && outs[i]->storage) u->out_bytes += mw_tensor_numel(outs[i]) * (int64_t)mw_dtype_size(outs[i]->dtype);
}

static mw_model *checkmodel(lua_State *L, int idx) {
    lmodel *u = luaL_checkudata(L, idx, MWL_MODEL);
    if (!u->m) luaL_error(L, "model: already freed");
    return u->m;
}

static int l_model_new(lua_State *L) {
    mw_config c;
    mwl_toconfig(L, 1, &c);
    lmodel *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->m = NULL;
    u->busy = 0;
    u->borrowed = 0;
    luaL_setmetatable(L, MWL_MODEL);
    u->m = mw_model_new(&c);
    if (!u->m) return mwl_coreerror(L);
    mwl_account(L);
    return 1;
}

static int l_gc(lua_State *L) {
    lmodel *u = luaL_checkudata(L, 1, MWL_MODEL);
    /* only __close can come here mid-pass (a hook closing its model): the pass owns the buffers */
    if (u->busy) return luaL_error(L, "close: not while a forward pass is running (called from a hook?)");
    if (!u->borrowed) mw_model_free(u->m);
    u->m = NULL;
    return 0;
}

void mwl_push_model_of(lua_State *L, mw_model *m, int owner) {
    owner = lua_absindex(L, owner);
    lmodel *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->m = m;
    u->busy = 0;
    u->borrowed = 1;
    luaL_setmetatable(L, MWL_MODEL);
    lua_pushvalue(L, owner);
    lua_setiuservalue(L, -2, 1);
}

static int l_config(lua_State *L) {
    mwl_pushconfig(L, &checkmodel(L, 1)->cfg);
    return 1;
}

static int l_param(lua_State *L) {
    mw_model *m = checkmodel(L, 1);
    const char *name = mwl_checkname(L, 2, "param", "parameter name");
    int pid, layer;
    int rc = mw_model_param_lookup(m, name, &pid, &layer);
    if (rc < 0) return mwl_coreerror(L);
    if (rc > 0) return 0;
    mw_tensor *t = mwl_newtensor(L);
    if (mw_model_param_view(t, m, pid, layer)) return mwl_coreerror(L);
    return 1;
}

static int l_weight(lua_State *L) {
    mw_model *m = checkmodel(L, 1);
    const char *f = mwl_checkname(L, 2, "weight", "weight name");
    for (int pid = 0; pid < MW_PARAM_COUNT; pid++) {
        const char *n = mw_param_name(pid), *dot = strrchr(n, '.');
        const char *field = dot ? dot + 1 : n;
        /* "W_Q" -> attn.W_Q; "ln_final_w" -> ln_final.w; "ln1_w" -> ln1.w */
        char alt[64];
        snprintf(alt, sizeof alt, "%s", n);
        for (char *p = alt; *p; p++) if (*p == '.') *p = '_';
        if (strcmp(f, field) != 0 && strcmp(f, alt) != 0) continue;
        if (strcmp(f, "w") == 0 || strcmp(f, "b") == 0) continue;
        if (!mw_model_param_exists(m, pid)) return 0;
        mw_tensor *t = mwl_newtensor(L);
        if (!mw_param_per_block(pid)) {
            if (mw_model_param_view(t, m, pid, -1)) return mwl_coreerror(L);
            return 1;
        }
        /* per-block: the whole stacked tensor [L, ...] */
        switch (pid) {
#define MW_X(fld, name, per_block, d0, d1, d2) case MW_PARAM_##fld: mw_tensor_share(t, &m->w.fld); break;
            MW_PARAMS(MW_X)
#undef MW_X
        }
        return 1;
    }
    return 0;
}

static int l_param_names(lua_State *L) {
    mw_model *m = checkmodel(L, 1);
    lua_newtable(L);
    int n = 0;
    char buf[128];
    /* TransformerLens order: embed, pos_embed, then block by block, then ln_final, unembed */
    for (int pid = 0; pid < MW_PARAM_COUNT; pid++) {
        if (mw_param_per_block(pid) || !mw_model_param_exists(m, pid) || pid >= MW_PARAM_ln_final_w) continue;
        lua_pushstring(L, mw_model_param_name(m, pid));
        lua_rawseti(L, -2, ++n);
    }
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int pid = 0; pid < MW_PARAM_COUNT; pid++) {
            if (!mw_param_per_block(pid) || !mw_model_param_exists(m, pid)) continue;
            snprintf(buf, sizeof buf, "blocks.%d.%s", l, mw_model_param_name(m, pid));
            lua_pushstring(L, buf);
            lua_rawseti(L, -2, ++n);
        }
    for (int pid = MW_PARAM_ln_final_w; pid < MW_PARAM_COUNT; pid++) {
        if (mw_param_per_block(pid) || !mw_model_param_exists(m, pid)) continue;
        lua_pushstring(L, mw_model_param_name(m, pid));
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static int l_set_param(lua_State *L) {
    mw_model *m = checkmodel(L, 1);
    const char *name = mwl_checkname(L, 2, "set_param", "parameter name");
    mw_tensor *t = mwl_checktensor(L, 3);
    int pid, layer;
    int rc = mw_model_param_lookup(m, name, &pid, &layer);
    if (rc < 0) return mwl_coreerror(L);
    if (rc > 0) { lua_pushboolean(L, 0); return 1; }
    if (mw_model_param_set(m, name, t)) return mwl_coreerror(L);
    lua_pushboolean(L, 1);
    return 1;
}

/* m:hook_names([all]): with all, also the hook points this config never fires */
static int l_hook_names(lua_State *L) {
    mw_model *m = checkmodel(L, 1);
    int all = lua_toboolean(L, 2);
    lua_newtable(L);
    int n = 0;
    char buf[128];
    for (int stage = 0; stage < 3; stage++)
        for (int l = 0; l < (stage == 1 ? m->cfg.n_layers : 1); l++)
            for (int id = 0; id < MW_HOOK_COUNT; id++) {
                if (mw_hook_stage(id) != stage || (!all && !mw_model_hook_exists(m, id))) continue;
                mw_hook_name(buf, sizeof buf, id, stage == 1 ? l : -1);
                lua_pushstring(L, buf);
                lua_rawseti(L, -2, ++n);
            }
    return 1;
}

static int l_buffer_bytes(lua_State *L) {
    lua_pushinteger(L, mw_model_buffer_bytes(checkmodel(L, 1)));
    return 1;
}
/* a running pass (a hook calling this) owns the buffers: freeing them would pull them from under it */
static int l_trim(lua_State *L) {
    mw_model *m = checkmodel(L, 1);
    if (((lmodel *)lua_touserdata(L, 1))->busy)
        return luaL_error(L, "trim_buffers: not while a forward pass is running (called from a hook?)");
    mw_model_trim(m);
    return 0;
}

/* ---------------------------------------------------------------- forward with hooks */
typedef struct {
    lua_State *L;
    int cache_names, cache, hooks, msgh; /* stack indices (0 = absent) */
    int err_ref;                         /* the Lua error of a hook, kept for re-raising */
    int id, layer;
    mw_tensor *act;
    const char *suffix;                  /* appended to cache keys: "_grad" in the backward pass */
    int64_t cached_bytes;                /* bytes of the cache entries made (collect_last_outputs) */
} deliver_ctx;

/* adds a traceback to string errors; other error values pass unchanged */
static int msgh(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg && lua_type(L, 1) == LUA_TSTRING) luaL_traceback(L, L, msg, 1);
    else lua_settop(L, 1);
    return 1;
}

static int same_shape(const mw_tensor *a, const mw_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++) if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

/* runs under lua_pcall with (ctx, cache_names, cache, hooks) as arguments (the tables, or nil):
 * the cache clone, then each hook function of this point in order */
static int deliver_protected(lua_State *L) {
    deliver_ctx *x = lua_touserdata(L, 1);
    char name[128];
    mw_hook_name(name, sizeof name, x->id, x->layer);
    if (x->cache_names && lua_getfield(L, 2, name) != LUA_TNIL && lua_toboolean(L, -1)) {
        mw_tensor *c = mwl_newtensor(L);
        if (mw_tensor_clone(c, x->act)) return mwl_coreerror(L);
        x->cached_bytes += mw_tensor_numel(c) * (int64_t)mw_dtype_size(c->dtype);
        if (x->suffix) {
            lua_pushfstring(L, "%s%s", name, x->suffix);
            lua_insert(L, -2);
            lua_settable(L, 3);
        } else {
            lua_setfield(L, 3, name);
        }
        mwl_account(L);
    }
    lua_settop(L, 4);
    if (!x->hooks || lua_getfield(L, 4, name) != LUA_TTABLE) return 0;
    int list = lua_gettop(L);
    /* act: a fresh copy of the activation. In-place edits and returned tensors go into it and are
     * copied back into the pass's buffer after the last hook, so that nothing a hook keeps (act
     * itself, act[0], act:view(-1)) aliases the buffer, which the next pass reuses. */
    mw_tensor *a = mwl_newtensor(L);
    if (mw_tensor_clone(a, x->act)) return mwl_coreerror(L);
    int ua = lua_gettop(L);
    lua_Integer n = luaL_len(L, list);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, list, i);      /* {fn, hookobj} */
        lua_geti(L, -1, 1);
        lua_pushvalue(L, ua);
        lua_geti(L, -3, 2);
        lua_call(L, 2, 1);
        if (!lua_isnil(L, -1)) {
            mw_tensor *r = mwl_totensor(L, -1);
            if (!r) return luaL_error(L, "hook on %s returned a %s, expected nil or a tensor", name, luaL_typename(L, -1));
            if (!same_shape(r, x->act)) {
                char s1[256], s2[256];
                return luaL_error(L, "hook on %s returned a tensor of shape %s, expected %s", name,
                                  mw_tensor_shape_str(s1, sizeof s1, r), mw_tensor_shape_str(s2, sizeof s2, x->act));
            }
            /* a view of act with other strides (a transpose, an expand) is a new value too:
             * copy_ reads an overlapping source from a copy */
            if (mw_tensor_overlap(r, a) != MW_OVERLAP_SAME)
                if (mw_tensor_copy_(a, r)) return mwl_coreerror(L);
        }
        lua_pop(L, 2);
    }
    if (mw_tensor_copy_(x->act, a)) return mwl_coreerror(L);
    mwl_account(L);
    return 0;
}

static int deliver(void *ud, int id, int layer, mw_tensor *act) {
    deliver_ctx *x = ud;
    lua_State *L = x->L;
    x->id = id;
    x->layer = layer;
    x->act = act;
    /* the stack indices in x belong to l_forward's frame, where this runs */
    lua_pushcfunction(L, deliver_protected);
    lua_pushlightuserdata(L, x);
    if (x->cache_names) lua_pushvalue(L, x->cache_names); else lua_pushnil(L);
    if (x->cache) lua_pushvalue(L, x->cache); else lua_pushnil(L);
    if (x->hooks) lua_pushvalue(L, x->hooks); else lua_pushnil(L);
    if (lua_pcall(L, 4, 0, x->msgh) != LUA_OK) {
        x->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        return mw_seterr("hook raised an error");
    }
    return 0;
}

static mw_tensor *opt_tensor(lua_State *L, int opts, const char *k) {
    lua_getfield(L, opts, k); /* stays on the stack: keeps the userdata alive */
    if (lua_isnil(L, -1)) return NULL;
    mw_tensor *t = mwl_totensor(L, -1);
    if (!t) luaL_error(L, "forward: %s must be a tensor, got %s", k, luaL_typename(L, -1));
    return t;
}

/* marks want[] from the keys of the table at idx (hook names); unknown names are errors */
static void mark_want(lua_State *L, mw_model *m, int idx, uint8_t *want, const char *fname) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) continue;
        int id, layer;
        const char *name = mwl_checkname(L, -1, "forward", "hook name");
        if (mw_hook_parse(name, &id, &layer) || (layer >= m->cfg.n_layers))
            luaL_error(L, "%s: '%s' is not a hook point of this model", fname, name);
        if (mw_model_hook_exists(m, id)) want[mw_hook_slot(m, id, layer < 0 ? 0 : layer)] = 1;
    }
}

/* reads opts.cache_names, opts.cache and opts.hooks (opts at index 2) into x, pushes the want[]
 * userdata (marked from both; collected even if something below raises) and the message
 * handler; returns want */
static uint8_t *hook_setup(lua_State *L, mw_model *m, deliver_ctx *x, const char *fname) {
    memset(x, 0, sizeof *x);
    x->L = L;
    x->err_ref = LUA_NOREF;
    lua_getfield(L, 2, "cache_names");
    if (lua_istable(L, -1)) x->cache_names = lua_gettop(L);
    lua_getfield(L, 2, "cache");
    if (lua_istable(L, -1)) x->cache = lua_gettop(L);
    lua_getfield(L, 2, "hooks");
    if (lua_istable(L, -1)) x->hooks = lua_gettop(L);
    if (x->cache_names && !x->cache) luaL_error(L, "%s: cache_names needs a cache table", fname);
    uint8_t *want = lua_newuserdatauv(L, (size_t)mw_hook_slots(m), 0);
    memset(want, 0, (size_t)mw_hook_slots(m));
    if (x->cache_names) mark_want(L, m, x->cache_names, want, fname);
    if (x->hooks) mark_want(L, m, x->hooks, want, fname);
    lua_pushcfunction(L, msgh);
    x->msgh = lua_gettop(L);
    return want;
}

/* after a failed core call: the kept Lua error of a hook, else the core's message */
static int hook_error(lua_State *L, deliver_ctx *x) {
    if (x->err_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, x->err_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, x->err_ref);
        return lua_error(L);
    }
    return mwl_coreerror(L);
}

static int l_forward(lua_State *L) {
    mw_model *m = checkmodel(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    mw_forward_opts o;
    mw_forward_opts_default(&o, m);
    o.tokens = opt_tensor(L, 2, "tokens");
    o.attention_mask = opt_tensor(L, 2, "attention_mask");
    o.residual = opt_tensor(L, 2, "residual");
    lua_getfield(L, 2, "start_at_layer");
    o.start_at_layer = (int)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 2, "stop_at_layer");
    o.stop_at_layer = (int)luaL_optinteger(L, -1, m->cfg.n_layers);
    lua_getfield(L, 2, "return_residual");
    o.return_residual = lua_toboolean(L, -1);
    lua_getfield(L, 2, "logits");
    o.want_logits = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_getfield(L, 2, "loss");
    o.want_loss = lua_toboolean(L, -1);
    lua_getfield(L, 2, "keep_activations");
    o.keep_activations = lua_toboolean(L, -1);
    lua_getfield(L, 2, "last_only");
    o.last_only = lua_toboolean(L, -1);
    lua_getfield(L, 2, "loss_from");
    o.loss_from = luaL_optinteger(L, -1, 0);
    lua_getfield(L, 2, "loss_to");
    o.loss_to = luaL_optinteger(L, -1, 0);
    deliver_ctx x;
    uint8_t *want = hook_setup(L, m, &x, "forward");
    o.want = want;
    o.deliver = deliver;
    o.ud = &x;
    /* results table and output userdata first, so nothing can fail between the core's return and
     * handing its tensors over */
    lua_createtable(L, 0, 4);
    int res = lua_gettop(L);
    mw_tensor *ul = mwl_newtensor(L), *ur = mwl_newtensor(L), *up = mwl_newtensor(L);
    int top = lua_gettop(L);
    lmodel *u = lua_touserdata(L, 1);
    if (u->busy) return luaL_error(L, "forward: this model is already running (called from one of its own hooks?)");
    collect_last_outputs(L, u);
    mw_forward_out out;
    u->busy = 1;
    int rc = mw_model_forward(m, &o, &out);
    u->busy = 0;
    if (rc) return hook_error(L, &x);
    *ul = out.logits;
    *ur = out.residual;
    *up = out.loss_per_token;
    if (ul->storage) { lua_pushvalue(L, top - 2); lua_setfield(L, res, "logits"); }
    if (ur->storage) { lua_pushvalue(L, top - 1); lua_setfield(L, res, "residual"); }
    if (up->storage) {
        lua_pushvalue(L, top);
        lua_setfield(L, res, "loss_per_token");
        lua_pushnumber(L, out.loss);
        lua_setfield(L, res, "loss");
    }
    mwl_account(L);
    const mw_tensor *outs[3] = {ul, ur, up};
    note_outputs(u, x.cached_bytes, outs, 3);
    lua_pushvalue(L, res);
    return 1;
}

/* m:backward(opts): the backward pass of the last forward made with keep_activations.
 * opts.grad_logits [B,P,Vo] (d metric / d logits; nil: the forward's mean loss), cache_names =
 * {name = true} and cache (receiving clones as name .. "_grad"), hooks = {name = {{fn, hookobj}}}
 * (backward hooks: fn(grad, hook) may edit the gradient or return a replacement) */
static int l_backward(lua_State *L) {
    mw_model *m = checkmodel(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    mw_backward_opts b;
    memset(&b, 0, sizeof b);
    lua_getfield(L, 2, "grad_logits"); /* stays on the stack: keeps the userdata alive */
    if (!lua_isnil(L, -1)) {
        b.grad_logits = mwl_totensor(L, -1);
        if (!b.grad_logits) return luaL_error(L, "backward: grad_logits must be a tensor, got %s", luaL_typename(L, -1));
    }
    deliver_ctx x;
    b.want = hook_setup(L, m, &x, "backward");
    x.suffix = "_grad";
    b.deliver = deliver;
    b.ud = &x;
    lmodel *u = lua_touserdata(L, 1);
    if (u->busy) return luaL_error(L, "backward: this model is already running (called from one of its own hooks?)");
    u->busy = 1;
    int rc = mw_model_backward(m, &b);
    u->busy = 0;
    if (rc) return hook_error(L, &x);
    mwl_account(L);
    note_outputs(u, x.cached_bytes, NULL, 0); /* added to the forward's */
    return 0;
}

/* ---------------------------------------------------------------- generation */
/* the sampling options of opts (index 2) */
static void sample_opts(lua_State *L, mw_sample_opts *so, const char *fname) {
    lua_getfield(L, 2, "do_sample");
    so->do_sample = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_getfield(L, 2, "temperature");
    so->temperature = luaL_optnumber(L, -1, 1.0);
    lua_getfield(L, 2, "top_k");
    so->top_k = luaL_optinteger(L, -1, 0);
    lua_getfield(L, 2, "top_p");
    so->top_p = luaL_optnumber(L, -1, 0.0);
    lua_getfield(L, 2, "freq_penalty");
    so->freq_penalty = luaL_optnumber(L, -1, 0.0);
    lua_pop(L, 5);
    if (mw_sample_check(so, fname)) mwl_coreerror(L);
}

/* a generator seeded with opts.seed into g (returns g), or NULL (the default generator) */
static mw_rng *seed_opt(lua_State *L, mw_rng *g) {
    lua_getfield(L, 2, "seed");
    int has = !lua_isnil(L, -1);
    if (has) mw_rng_seed(g, (uint64_t)luaL_checkinteger(L, -1));
    lua_pop(L, 1);
    return has ? g : NULL;
}

typedef struct {
    deliver_ctx *x;
    int fn; /* stack index of the progress function */
} step_ctx;

static int on_step(void *ud, int64_t step, int64_t n) {
    step_ctx *s = ud;
    lua_State *L = s->x->L;
    lua_pushvalue(L, s->fn);
    lua_pushinteger(L, step);
    lua_pushinteger(L, n);
    if (lua_pcall(L, 2, 0, s->x->msgh) != LUA_OK) {
        s->x->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        return mw_seterr("progress raised an error");
    }
    return 0;
}

static int l_generate(lua_State *L) {
    mw_model *m = checkmodel(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    mw_generate_opts g;
    memset(&g, 0, sizeof g);
    g.tokens = opt_tensor(L, 2, "tokens");
    g.attention_mask = opt_tensor(L, 2, "attention_mask");
    lua_getfield(L, 2, "max_new_tokens");
    g.max_new_tokens = luaL_optinteger(L, -1, 10);
    sample_opts(L, &g.sample, "generate");
    mw_rng rng;
    g.rng = seed_opt(L, &rng);
    lua_getfield(L, 2, "use_past_kv_cache");
    g.use_past_kv_cache = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_getfield(L, 2, "stop_at_eos");
    g.stop_at_eos = lua_toboolean(L, -1);
    lua_getfield(L, 2, "eos_pad");
    g.eos_pad = luaL_optinteger(L, -1, 0);
    lua_getfield(L, 2, "eos");
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        int list = lua_gettop(L);
        lua_Integer n = luaL_len(L, list);
        if (n < 0 || n > 1024) return luaL_error(L, "generate: %d eos token ids (at most 1024)", (int)n);
        int64_t *eos = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof(int64_t), 0); /* collected */
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, list, i);
            eos[i - 1] = luaL_checkinteger(L, -1);
            lua_pop(L, 1);
        }
        g.eos = eos;
        g.n_eos = (int)n;
    }
    deliver_ctx x;
    g.want = hook_setup(L, m, &x, "generate");
    g.deliver = deliver;
    g.ud = &x;
    step_ctx sc = {&x, 0};
    lua_getfield(L, 2, "progress");
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TFUNCTION);
        sc.fn = lua_gettop(L);
        g.on_step = on_step;
        g.step_ud = &sc;
    }
    mw_tensor *out = mwl_newtensor(L);
    lmodel *u = lua_touserdata(L, 1);
    if (u->busy) return luaL_error(L, "generate: this model is already running (called from one of its own hooks?)");
    u->busy = 1;
    int rc = mw_generate(m, &g, out);
    u->busy = 0;
    if (rc) return hook_error(L, &x);
    mwl_account(L);
    return 1;
}

/* core._sample_logits(logits [B,V], opts) -> i64 [B] (TransformerLens's utils.sample_logits) */
static int l_sample_logits(lua_State *L) {
    mw_tensor *lg = mwl_checktensor(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    char s1[256];
    if (lg->ndim != 2 || lg->dtype != MW_F32 || lg->shape[1] <= 0)
        return luaL_error(L, "sample_logits: final_logits must be float32 [batch, d_vocab], got %s %s",
                          mw_dtype_name(lg->dtype), mw_tensor_shape_str(s1, sizeof s1, lg));
    int64_t B = lg->shape[0], V = lg->shape[1];
    mw_sample_opts so;
    sample_opts(L, &so, "sample_logits");
    mw_rng rng;
    mw_rng *g = seed_opt(L, &rng);
    if (!g) g = mw_rng_default();
    mw_tensor *tk = opt_tensor(L, 2, "tokens");
    if (tk && (tk->ndim != 2 || tk->dtype != MW_I64 || tk->shape[0] != B))
        return luaL_error(L, "sample_logits: tokens must be int64 [%lld, pos], got %s", (long long)B,
                          mw_tensor_shape_str(s1, sizeof s1, tk));
    if (so.freq_penalty > 0 && !tk) return luaL_error(L, "sample_logits: freq_penalty needs the tokens");
    /* Lua-owned scratch first (collected whatever happens): contiguous logits, counts, output */
    mw_tensor *c = mwl_newtensor(L), *out = mwl_newtensor(L), *cnt = mwl_newtensor(L);
    int64_t sh[2] = {B, V};
    if (mw_tensor_contiguous(c, lg) || mw_tensor_zeros(out, MW_I64, 1, sh) ||
        (tk && mw_tensor_zeros(cnt, MW_I64, 2, sh)))
        return mwl_coreerror(L);
    int64_t *cd = tk ? mw_tensor_data(cnt) : NULL;
    for (int64_t idx[2] = {0, 0}; tk && idx[0] < B; idx[0]++)
        for (idx[1] = 0; idx[1] < tk->shape[1]; idx[1]++) {
            int64_t t = (int64_t)mw_tensor_get(tk, idx);
            if (t >= 0 && t < V) cd[idx[0] * V + t]++;
        }
    mw_sampler smp;
    if (mw_sampler_init(&smp, V)) return mwl_coreerror(L);
    const float *ld = mw_tensor_data(c);
    int64_t *od = mw_tensor_data(out);
    for (int64_t b = 0; b < B; b++) {
        od[b] = mw_sample(&smp, ld + b * V, &so, cd ? cd + b * V : NULL, g);
        if (od[b] < 0) {
            mw_sampler_free(&smp);
            return mwl_coreerror(L);
        }
    }
    mw_sampler_free(&smp);
    lua_pushvalue(L, -2);
    mwl_account(L);
    return 1;
}

/* ---------------------------------------------------------------- registration */
static const luaL_Reg model_methods[] = {
    {"config", l_config},       {"param", l_param},           {"weight", l_weight},
    {"param_names", l_param_names}, {"set_param", l_set_param}, {"hook_names", l_hook_names},
    {"forward", l_forward},     {"backward", l_backward},     {"buffer_bytes", l_buffer_bytes},
    {"trim", l_trim},           {"generate", l_generate},
    {NULL, NULL}};
static const luaL_Reg model_meta[] = {{"__gc", l_gc}, {"__close", l_gc}, {NULL, NULL}};

void mwl_open_model(lua_State *L) {
    if (luaL_newmetatable(L, MWL_MODEL)) {
        luaL_setfuncs(L, model_meta, 0);
        luaL_newlib(L, model_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_model_new);
    lua_setfield(L, -2, "model_new");
    lua_pushcfunction(L, l_sample_logits);
    lua_setfield(L, -2, "_sample_logits");
}
