/* lconfig.c - HookedTransformerConfig fields between Lua tables and mw_config (core/config.h).
 *
 *   core._config_finish(t)  the finished numeric config of table t (TransformerLens's field
 *                           names): defaults and derived fields from mw_config_finish, the only
 *                           place that computes them. Python's None is nil in the result.
 *                           Second result: the list of the field names the core owns.
 *
 * mwl_toconfig is what every constructor that takes a config (the model, the trainer) uses, so
 * one table means the same model everywhere. In a table, Python's None is written false, "None"
 * or mi.json.null (a Lua nil cannot be told from a field left out, which gets the default).
 * Only the numeric fields of config.h are read here; the string fields (model_name,
 * tokenizer_name, ...) and the check for unknown names are lua/miwb/model.lua's.
 */
#include <string.h>

#include "config.h"
#include "mwl.h"

/* Python's None as a table value: false (not for booleans, where it is False), "None", json.null */
static int is_none(lua_State *L, int idx, mw_config_kind kind) {
    int ty = lua_type(L, idx);
    if (ty == LUA_TBOOLEAN) return kind != MW_CF_BOOL && !lua_toboolean(L, idx);
    if (ty == LUA_TSTRING) return strcmp(lua_tostring(L, idx), "None") == 0;
    return mwl_isjsonnull(L, idx);
}

static void read_field(lua_State *L, int t, const mw_config_field *f, mw_config *c) {
    int ty = lua_getfield(L, t, f->name);
    if (ty == LUA_TNIL) { lua_pop(L, 1); return; }
    if (is_none(L, -1, f->kind)) {
        if (mw_config_set_none(c, f)) mwl_coreerror(L);
        lua_pop(L, 1);
        return;
    }
    switch (f->kind) {
    case MW_CF_INT: {
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        if (!ok || ty != LUA_TNUMBER)
            luaL_error(L, "HookedTransformerConfig: %s must be an integer, got %s", f->name,
                       ty == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
        mw_config_set_int(c, f, v);
        break;
    }
    case MW_CF_FLOAT:
        if (ty != LUA_TNUMBER) luaL_error(L, "HookedTransformerConfig: %s must be a number, got %s", f->name, luaL_typename(L, -1));
        mw_config_set_float(c, f, lua_tonumber(L, -1));
        break;
    case MW_CF_BOOL: {
        int v = -1;
        if (ty == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
        else if (ty == LUA_TSTRING) {
            const char *s = mwl_checkname(L, -1, "HookedTransformerConfig", f->name);
            if (!strcmp(s, "True") || !strcmp(s, "true")) v = 1;
            else if (!strcmp(s, "False") || !strcmp(s, "false")) v = 0;
        }
        if (v < 0) luaL_error(L, "HookedTransformerConfig: %s must be a boolean, got %s", f->name, luaL_tolstring(L, -1, NULL));
        mw_config_set_int(c, f, v);
        break;
    }
    case MW_CF_ENUM: {
        if (ty != LUA_TSTRING) luaL_error(L, "HookedTransformerConfig: %s must be a string, got %s", f->name, luaL_typename(L, -1));
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        int v = strlen(s) == n ? mw_config_enum_parse(f, s) : mw_seterr("HookedTransformerConfig: %s holds a NUL byte", f->name);
        if (v < 0) mwl_coreerror(L);
        mw_config_set_int(c, f, v);
        break;
    }
    }
    lua_pop(L, 1);
}

void mwl_toconfig(lua_State *L, int idx, mw_config *c) {
    idx = lua_absindex(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    mw_config_default(c);
    for (const mw_config_field *f = mw_config_fields; f->name; f++) read_field(L, idx, f, c);
}

void mwl_pushconfig(lua_State *L, const mw_config *c) {
    lua_newtable(L);
    for (const mw_config_field *f = mw_config_fields; f->name; f++) {
        int64_t v = mw_config_get_int(c, f);
        switch (f->kind) {
        case MW_CF_INT:
            /* TransformerLens keeps -1 in n_heads/d_vocab/d_vocab_out until known; None elsewhere */
            if (v == -1 && strcmp(f->name, "d_vocab") && strcmp(f->name, "d_vocab_out")) continue;
            if (!strcmp(f->name, "d_mlp") && c->attn_only) continue; /* None for attention-only */
            lua_pushinteger(L, (lua_Integer)v);
            break;
        case MW_CF_BOOL: lua_pushboolean(L, (int)v); break;
        case MW_CF_FLOAT: lua_pushnumber(L, mw_config_get_float(c, f)); break;
        case MW_CF_ENUM:
            if ((int)v == f->none_value) continue; /* Python's None */
            lua_pushstring(L, mw_config_enum_name(f, (int)v));
            break;
        }
        lua_setfield(L, -2, f->name);
    }
}

static int l_config_finish(lua_State *L) {
    mw_config c;
    mwl_toconfig(L, 1, &c);
    if (mw_config_finish(&c)) return mwl_coreerror(L);
    mwl_pushconfig(L, &c);
    lua_newtable(L);
    int i = 1;
    for (const mw_config_field *f = mw_config_fields; f->name; f++) {
        lua_pushstring(L, f->name);
        lua_rawseti(L, -2, i++);
    }
    return 2;
}

void mwl_open_config(lua_State *L) {
    lua_pushcfunction(L, l_config_finish);
    lua_setfield(L, -2, "_config_finish"); /* internal: HookedTransformerConfig checks the names */
}
