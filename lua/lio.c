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
 *   mi.load(path, {copy = true})   reads every tensor into private memory and unmaps the file
 *
 * Loaded float32/int64 tensors view the mapped file (copy-on-write, MAP_PRIVATE); it stays mapped
 * until the last of them is collected. The contract (README "Files"): while they live, the file
 * must not change; one truncated underneath kills the process with SIGBUS when a tensor is
 * touched, one rewritten in place changes the tensors. {copy = true} avoids both. The C state
 * dict lives in a userdata with __gc while the result table is built, so a Lua error (out of
 * memory) part way frees what is left.
 *
 * File helpers for the Lua library (mi.utils.write_file, file_exists, check_name; mkdir_p is
 * mi.sys.mkdir in lsys.c):
 * no path ever goes through a shell, and every path or name with a zero byte is refused
 * (mwl_checkname) instead of reaching C cut short.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "mwl.h"

#define SD_BOX "miwb.io.statedict"

static int sd_gc(lua_State *L) {
    mw_state_dict *sd = (mw_state_dict *)luaL_checkudata(L, 1, SD_BOX);
    mw_state_dict_free(sd);
    return 0;
}

/* the check of mwl_checkname, its error raised at the position of stack level `level` */
static const char *checkname_at(lua_State *L, int idx, const char *fname, const char *what, int level) {
    size_t n;
    int ty = lua_type(L, idx);
    const char *s = (ty == LUA_TSTRING || ty == LUA_TNUMBER) ? lua_tolstring(L, idx, &n) : NULL;
    if (s && strlen(s) == n) return s;
    const char *tname = luaL_typename(L, idx);   /* before anything is pushed: idx may be past the top */
    luaL_where(L, level);
    if (!s) lua_pushfstring(L, "%s: %s must be a string, got %s", fname, what, tname);
    else lua_pushfstring(L, "%s: %s holds a zero byte (at byte %d)", fname, what, (int)strlen(s) + 1);
    lua_concat(L, 2);
    lua_error(L);
    return NULL;
}

const char *mwl_checkname(lua_State *L, int idx, const char *fname, const char *what) {
    return checkname_at(L, idx, fname, what, 1);
}

/* mi.utils.check_name(fname, what, s): mwl_checkname from Lua code of the library, whose
 * caller is the user: the error is raised at the caller's line (level 2); returns s */
static int io_check_name(lua_State *L) {
    const char *fname = luaL_checkstring(L, 1), *what = luaL_checkstring(L, 2);
    checkname_at(L, 3, fname, what, 2);
    lua_settop(L, 3);
    return 1;
}

/* nil, "what path: strerror" with errno saved by the caller */
static int io_fail(lua_State *L, const char *what, const char *path, int err) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s %s: %s", what, path, strerror(err));
    return 2;
}

/* mi.utils.write_file(path, data): atomic: data goes to a new temporary file in path's directory
 * (a unique name from mkstemp), is flushed to the disk (fsync) and renamed over path. Returns
 * true, or nil + a message naming the step that failed (a full disk shows at write, fsync or
 * close); path is then unchanged and no temporary is left. */
static int io_write_file(lua_State *L) {
    const char *path = mwl_checkname(L, 1, "write_file", "path");
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    const char *tmp = lua_pushfstring(L, "%s.tmpXXXXXX", path);
    char *name = (char *)lua_newuserdatauv(L, strlen(tmp) + 1, 0); /* mkstemp writes into it */
    memcpy(name, tmp, strlen(tmp) + 1);
    int fd = mkstemp(name);
    if (fd < 0) return io_fail(L, "cannot create a temporary file for", path, errno);
    mode_t mask = umask(0);
    umask(mask);
    const char *step = NULL;
    int err = 0;
    if (fchmod(fd, 0666 & ~mask) != 0) step = "cannot set the mode of";
    for (size_t done = 0; !step && done < n;) {
        ssize_t w = write(fd, data + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) step = "cannot write";
        else done += (size_t)w;
    }
    if (!step && fsync(fd) != 0) step = "cannot flush";
    if (step) err = errno;
    if (close(fd) != 0 && !step) { step = "cannot close"; err = errno; }
    if (!step && rename(name, path) != 0) { step = "cannot rename the temporary file to"; err = errno; }
    if (step) {
        unlink(name);
        return io_fail(L, step, path, err ? err : EIO);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* mi.utils.file_exists(path): whether path names an existing file or directory */
static int io_file_exists(lua_State *L) {
    const char *path = mwl_checkname(L, 1, "file_exists", "path");
    struct stat st;
    lua_pushboolean(L, stat(path, &st) == 0);
    return 1;
}

/* the name the function was called by (upvalue 1: "mi.load", or its alias "mi.load_safetensors") */
#define IO_NAME lua_tostring(L, lua_upvalueindex(1))

static int io_load(lua_State *L) {
    const char *fn = IO_NAME;
    const char *path = mwl_checkname(L, 1, fn, "path");
    static const char *const opts[] = {"copy", NULL};
    mwl_check_opts(L, 2, fn, opts);
    int copy = 0;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "copy");
        copy = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
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
    if (rc != 0) return luaL_error(L, "%s: %s", fn, mw_error());
    lua_createtable(L, 0, sd->n);
    for (int i = 0; i < sd->n; i++) {
        mw_tensor *t = mwl_newtensor(L);
        if (copy) { /* private memory: the map goes when the state dict is freed below */
            if (mw_tensor_clone(t, &sd->items[i].t)) return luaL_error(L, "%s: %s", fn, mw_error());
            mw_tensor_release(&sd->items[i].t);
        } else {
            *t = sd->items[i].t; /* the userdata takes over the reference */
            memset(&sd->items[i].t, 0, sizeof sd->items[i].t);
        }
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
    const char *fn = IO_NAME;
    const char *path = mwl_checkname(L, 1, fn, "path");
    if (!lua_istable(L, 2))
        return luaL_error(L, "%s: state_dict must be a table {name = tensor}, got %s", fn, luaL_typename(L, 2));
    int has_meta = !lua_isnoneornil(L, 3);
    if (has_meta && !lua_istable(L, 3))
        return luaL_error(L, "%s: metadata must be a table {key = string}, got %s", fn, luaL_typename(L, 3));
    lua_settop(L, 3);
    /* count and check the tensors; arrays live in userdata, collected on any error */
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "%s: %s: keys must be tensor names (strings), got a %s", fn, path,
                              luaL_typename(L, -2));
        if (!mwl_totensor(L, -1))
            return luaL_error(L, "%s: %s: value of '%s' is a %s, not a tensor", fn, path, lua_tostring(L, -2),
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
        lua_pushvalue(L, -2);
        names[i] = mwl_checkname(L, -1, fn, "a tensor name"); /* safetensors names are C strings */
        lua_pop(L, 1);
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
                return luaL_error(L, "%s: %s: metadata must map strings to strings", fn, path);
            lua_pushvalue(L, -2);
            mk[j] = mwl_checkname(L, -1, fn, "a metadata key");
            lua_rawseti(L, keep, 2 * j + 1);
            lua_pushvalue(L, -1);
            lua_tostring(L, -1); /* a number becomes its text here, in the copy */
            mv[j] = mwl_checkname(L, -1, fn, "a metadata value");
            lua_rawseti(L, keep, 2 * j + 2);
            j++;
            lua_pop(L, 1);
        }
    }
    if (mw_checkpoint_save(path, n, names, ts, nm, mk, mv) != 0) return luaL_error(L, "%s: %s", fn, mw_error());
    lua_pushboolean(L, 1);
    return 1;
}

void mwl_open_io(lua_State *L) {
    /* load / save and their aliases: one closure each, knowing the name it was called by */
    static const struct { const char *key, *name; lua_CFunction f; } named[] = {
        {"load", "mi.load", io_load}, {"save", "mi.save", io_save},
        {"load_safetensors", "mi.load_safetensors", io_load}, {"save_safetensors", "mi.save_safetensors", io_save},
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        lua_pushstring(L, named[i].name);
        lua_pushcclosure(L, named[i].f, 1);
        lua_setfield(L, -2, named[i].key);
    }
    static const luaL_Reg fns[] = {
        {"_check_name", io_check_name},
        {"_write_file", io_write_file},
        {"_file_exists", io_file_exists},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0);
}
