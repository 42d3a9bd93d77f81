/* lio.c - model files in Lua: state dicts from .safetensors and PyTorch zip checkpoints.
 *
 *   mi.load(path)                  -> {name = tensor, ...}, metadata
 *       .safetensors or a PyTorch .pth/.pt/.bin zip, told apart by content; metadata is the
 *       safetensors "__metadata__" table (empty for torch files). A file that cannot be opened
 *       gives nil, message; a malformed one raises an error naming the file and the tensor.
 *   mi.save(path, tensors [, metadata])
 *       writes {name = tensor} (float32, int64, bool; any strides) as .safetensors; metadata is a
 *       table of strings (numbers are converted). Returns true; raises on bad arguments or when
 *       the file cannot be written.
 *   mi.load_safetensors, mi.save_safetensors: the same functions.
 *
 * Loaded float32/int64 tensors view the mapped file; it stays mapped until the last of them is
 * collected. The C state dict lives in a userdata with __gc while the result table is built, so
 * a Lua error (out of memory) part way frees what is left.
 */
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "mwl.h"

#define SD_BOX "miwb.io.statedict"

static int sd_gc(lua_State *L) {
    mw_state_dict *sd = (mw_state_dict *)luaL_checkudata(L, 1, SD_BOX);
    mw_state_dict_free(sd);
    return 0;
}

static int io_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    mw_state_dict *sd = (mw_state_dict *)lua_newuserdatauv(L, sizeof *sd, 0);
    memset(sd, 0, sizeof *sd);
    if (luaL_newmetatable(L, SD_BOX)) {
        lua_pushcfunction(L, sd_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    int rc = mw_checkpoint_load(sd, path);
    if (rc == MW_CKPT_NOFILE) {
        luaL_pushfail(L);
        lua_pushstring(L, mw_error());
        return 2;
    }
    if (rc != 0) return luaL_error(L, "mi.load: %s", mw_error());
    lua_createtable(L, 0, sd->n);
    for (int i = 0; i < sd->n; i++) {
        mw_tensor *t = mwl_newtensor(L);
        *t = sd->items[i].t; /* the userdata takes over the reference */
        memset(&sd->items[i].t, 0, sizeof sd->items[i].t);
        lua_setfield(L, -2, sd->items[i].name);
    }
    lua_createtable(L, 0, sd->n_meta);
    for (int i = 0; i < sd->n_meta; i++) {
        lua_pushstring(L, sd->meta_values[i]);
        lua_setfield(L, -2, sd->meta_keys[i]);
    }
    mw_state_dict_free(sd);
    mwl_account(L);
    return 2;
}

static int io_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int has_meta = !lua_isnoneornil(L, 3);
    if (has_meta) luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    /* count and check the tensors; arrays live in userdata, collected on any error */
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "mi.save: %s: keys must be tensor names (strings), got a %s", path,
                              luaL_typename(L, -2));
        if (!mwl_totensor(L, -1))
            return luaL_error(L, "mi.save: %s: value of '%s' is a %s, not a tensor", path, lua_tostring(L, -2),
                              luaL_typename(L, -1));
        n++;
        lua_pop(L, 1);
    }
    const char **names = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    const mw_tensor **ts = (const mw_tensor **)lua_newuserdatauv(L, sizeof(mw_tensor *) * (size_t)(n + 1), 0);
    int i = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        /* the key strings and tensor userdata stay referenced by the table during the write */
        names[i] = lua_tostring(L, -2);
        ts[i] = mwl_totensor(L, -1);
        i++;
        lua_pop(L, 1);
    }
    int nm = 0;
    if (has_meta) {
        lua_pushnil(L);
        while (lua_next(L, 3)) { nm++; lua_pop(L, 1); }
    }
    const char **mk = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(nm + 1), 0);
    const char **mv = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(nm + 1), 0);
    if (nm) {
        /* converted values are kept in a table so their strings stay alive */
        lua_createtable(L, nm, 0);
        int keep = lua_gettop(L), j = 0;
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
                return luaL_error(L, "mi.save: %s: metadata must map strings to strings", path);
            lua_pushvalue(L, -2);
            mk[j] = lua_tostring(L, -1);
            lua_rawseti(L, keep, 2 * j + 1);
            lua_pushvalue(L, -1);
            mv[j] = lua_tostring(L, -1); /* a number becomes its text here, in the copy */
            lua_rawseti(L, keep, 2 * j + 2);
            j++;
            lua_pop(L, 1);
        }
    }
    if (mw_checkpoint_save(path, n, names, ts, nm, mk, mv) != 0) return luaL_error(L, "mi.save: %s", mw_error());
    lua_pushboolean(L, 1);
    return 1;
}

void mwl_open_io(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"load", io_load},
        {"save", io_save},
        {"load_safetensors", io_load},
        {"save_safetensors", io_save},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}
