/* lmodule.c - the entry point of the Lua module: `require "miwb"` (build/miwb.so) and the
 * preloaded module of the miwb program.
 *
 * luaopen_miwb builds the C table "miwb.core" from every binding file linked in, registers the
 * embedded Lua library (the files of lua/miwb, see tools/embed.lua) in package.preload, then runs the
 * embedded lua/miwb/init.lua and returns what it returns. With MIWB_LUA_DIR set, Lua files are
 * read from that folder instead (edit without rebuilding).
 */
#include <limits.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mwl.h"

typedef struct { const char *name, *chunkname; const unsigned char *src; size_t len; } mw_lua_module;
extern const mw_lua_module mw_lua_modules[];

static int load_embedded(lua_State *L, const mw_lua_module *m) {
    const char *dir = getenv("MIWB_LUA_DIR");
    if (dir && *dir) {
        /* chunkname is "@lua/miwb/x.lua": swap the "lua/" prefix for dir */
        const char *rel = m->chunkname + 1;
        if (strncmp(rel, "lua/", 4) == 0) rel += 4;
        lua_pushfstring(L, "%s/%s", dir, rel);
        const char *path = lua_tostring(L, -1);
        int st = luaL_loadfile(L, path);
        lua_remove(L, -2);
        return st;
    }
    return luaL_loadbufferx(L, (const char *)m->src, m->len, m->chunkname, "t");
}

static int preload_loader(lua_State *L) {
    const mw_lua_module *m = (const mw_lua_module *)lua_touserdata(L, lua_upvalueindex(1));
    if (load_embedded(L, m) != LUA_OK) return lua_error(L);
    lua_pushstring(L, m->name);
    lua_call(L, 1, 1);
    return 1;
}

/* mi.isatty(fd): whether file descriptor fd (default 1, stdout) is a terminal; used to show
 * progress bars on terminals only. */
static int l_isatty(lua_State *L) {
    int fd = (int)luaL_optinteger(L, 1, 1);
    lua_pushboolean(L, isatty(fd));
    return 1;
}

/* mi.lua_source(path): the text of an embedded Lua file by its path ("lua/miwb/model.lua"), or nil;
 * help(f) in the REPL reads a function's signature and doc comment from it. */
static int l_lua_source(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    for (const mw_lua_module *m = mw_lua_modules; m->name; m++) {
        if (strcmp(m->chunkname + 1, path) == 0) {
            lua_pushlstring(L, (const char *)m->src, m->len);
            return 1;
        }
    }
    lua_pushnil(L);
    return 1;
}

static int open_core(lua_State *L) {
    lua_newtable(L);
    lua_pushcfunction(L, l_isatty);
    lua_setfield(L, -2, "isatty");
    lua_pushcfunction(L, l_lua_source);
    lua_setfield(L, -2, "lua_source");
    mwl_open_tensor(L);
    mwl_open_io(L);
    mwl_open_tokenizer(L);
    mwl_open_config(L);
    mwl_open_model(L);
    mwl_open_train(L);
    mwl_open_sys(L);
    mwl_open_kernel(L);
    return 1;
}

/* Keep freed memory in the process: big tensors (activations, logits, caches) come and go on
 * every forward pass, and on these machines faulting freshly mapped pages in again costs far
 * more than the arithmetic (measured: a [12,1024,1024] add 26x slower than into a reused buffer;
 * a GPT-2 1x1024 full cache 3.4x the sgemm bound instead of 1.45x). So blocks under 8 MB come
 * from the heap, not from mmap, and the heap is not trimmed back to the system; tensors of 8 MB
 * and more (their own huge-page mappings, core/tensor.c) are kept for reuse up to an eighth of
 * the machine's memory. mi.release_memory() gives both back. MIWB_RETURN_MEMORY=1 keeps
 * glibc's defaults and unmaps large tensors when they are freed. */
static void keep_heap(void) {
    const char *e = getenv("MIWB_RETURN_MEMORY");
    if (e && *e && strcmp(e, "0") != 0) return;
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, INT_MAX);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    mw_storage_keep_freed(pages > 0 && page > 0 ? (int64_t)pages * page / 8 : (int64_t)1 << 30);
}

int luaopen_miwb(lua_State *L) {
    keep_heap();
    luaL_requiref(L, "miwb.core", open_core, 0);
    lua_pop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    const mw_lua_module *init = NULL;
    for (const mw_lua_module *m = mw_lua_modules; m->name; m++) {
        if (strcmp(m->name, "miwb") == 0) { init = m; continue; }
        lua_pushlightuserdata(L, (void *)m);
        lua_pushcclosure(L, preload_loader, 1);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
    if (!init) return luaL_error(L, "miwb: the module was built without lua/miwb/init.lua");
    if (load_embedded(L, init) != LUA_OK) return lua_error(L);
    lua_pushstring(L, "miwb");
    lua_call(L, 1, 1);
    return 1;
}
