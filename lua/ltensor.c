/* ltensor.c - tensors in Lua: the userdata, its methods and metamethods, creation functions,
 * indexing, and the functions of mwl.h that the other binding files share.
 *
 * A tensor userdata holds one mw_tensor header (and so one storage reference). Every function
 * allocates its result userdata first and lets the core fill it (mwl_newtensor), so a core error
 * or a Lua error in between leaves only empty, collectable objects: nothing leaks. Temporaries
 * are userdata on the Lua stack for the same reason.
 *
 * Conventions visible from Lua (see README "Using miwb from Lua"):
 *   - dims, indices and positions are 0-based, negative counts from the end; ranges half-open;
 *   - shapes come as varargs numbers or one table: mi.zeros(2, 3) == mi.zeros({2, 3});
 *   - misuse raises a Lua error carrying the core's message (op name and shapes);
 *   - tensor memory is reported to Lua's GC (mwl_account) so loops do not grow without bound.
 */
#include <limits.h>
#include <stdarg.h>
#include <malloc.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mwl.h"
#include "parallel.h"

void mwl_open_json(lua_State *L); /* ljson.c */

#define MWL_GENERATOR "miwb.Generator"

/* ================================================================ mwl.h */

mw_tensor *mwl_newtensor(lua_State *L) {
    mw_tensor *t = (mw_tensor *)lua_newuserdatauv(L, sizeof(mw_tensor), 0);
    memset(t, 0, sizeof *t);
    luaL_setmetatable(L, MWL_TENSOR);
    return t;
}

void mwl_pushtensor(lua_State *L, mw_tensor *t) {
    mw_tensor *u = mwl_newtensor(L);
    *u = *t;
    memset(t, 0, sizeof *t);
}

mw_tensor *mwl_totensor(lua_State *L, int idx) {
    return (mw_tensor *)luaL_testudata(L, idx, MWL_TENSOR);
}

mw_tensor *mwl_checktensor(lua_State *L, int idx) {
    mw_tensor *t = (mw_tensor *)luaL_checkudata(L, idx, MWL_TENSOR);
    if (t->storage == NULL) luaL_argerror(L, idx, "tensor has been closed or was never filled");
    return t;
}

/* The name the user called the running C function by, pushed (or NULL, nothing pushed):
 * x:exp() and mi.exp(x) give "exp"; called where Lua sees no such name (pcall(f, x), a local
 * alias), its key in the method table mi.Tensor (package.loaded["miwb.Tensor"]) or in mi
 * (package.loaded["miwb"]). Error paths only. */
static const char *called_name(lua_State *L) {
    lua_Debug ar;
    if (!lua_getstack(L, 0, &ar)) return NULL;
    lua_getinfo(L, "nf", &ar);   /* pushes the function */
    int fn = lua_gettop(L);
    if (ar.name && (strcmp(ar.namewhat, "method") == 0 || strcmp(ar.namewhat, "field") == 0)) {
        lua_pushstring(L, ar.name);
        lua_replace(L, fn);
        return lua_tostring(L, fn);
    }
    static const char *const tables[] = {"miwb.Tensor", "miwb"};
    for (int i = 0; i < 2; i++) {
        lua_settop(L, fn);
        if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) != LUA_TTABLE ||
            lua_getfield(L, -1, tables[i]) != LUA_TTABLE) continue;
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, fn)) {
                lua_copy(L, -2, fn);
                lua_settop(L, fn);
                return lua_tostring(L, fn);
            }
            lua_pop(L, 1);
        }
    }
    lua_settop(L, fn - 1);
    return NULL;
}

/* The core's message names the core operation that failed ("empty: storage: out of memory
 * ..."); when the user called something else (x:exp() of a huge expanded tensor), the name of
 * their call goes in front: "exp: empty: storage: ...". The library's own _helpers are not named. */
int mwl_coreerror(lua_State *L) {
    const char *msg = mw_error();
    if (!msg || !*msg) msg = "miwb: unknown error in the tensor core";
    const char *name = called_name(L);
    size_t n = name ? strlen(name) : 0;
    if (n && name[0] != '_' && !(strncmp(msg, name, n) == 0 && msg[n] == ':'))
        return luaL_error(L, "%s: %s", name, msg);
    return luaL_error(L, "%s", msg);
}

/* Bytes of tensor storage seen at the last call. The GC is told only about growth: a step with
 * that many KB makes the collector work as if Lua itself had allocated them, so dead tensors
 * are found before memory runs away. */
static int64_t accounted_bytes = 0;

void mwl_account(lua_State *L) {
    int64_t live = mw_storage_live_bytes();
    int64_t grown = live - accounted_bytes;
    accounted_bytes = live;
    if (grown >= 1024) {
        int64_t kb = grown / 1024;
        lua_gc(L, LUA_GCSTEP, kb > INT_MAX ? INT_MAX : (int)kb);
    }
}

/* ================================================================ small helpers */

#define CHECK(call) do { if ((call) != 0) mwl_coreerror(L); } while (0)

/* returns n results after telling the GC about new tensor memory */
static int ret(lua_State *L, int n) {
    mwl_account(L);
    return n;
}

static const char *shape_str(char *buf, size_t n, const mw_tensor *t) {
    return mw_tensor_shape_str(buf, n, t);
}
#define SHAPEBUF 8 * MW_MAXDIM * 21

static int check_int(lua_State *L, int idx, const char *op, const char *what) {
    int isnum;
    lua_Integer v = lua_tointegerx(L, idx, &isnum);
    if (!isnum) {
        if (lua_type(L, idx) == LUA_TNUMBER)
            return luaL_error(L, "%s: %s must be an integer, got %s", op, what, lua_tostring(L, idx));
        return luaL_error(L, "%s: %s must be an integer, got %s", op, what, luaL_typename(L, idx));
    }
    if (v < INT_MIN || v > INT_MAX) return luaL_error(L, "%s: %s %I is out of range", op, what, v);
    return (int)v;
}

static int64_t check_i64(lua_State *L, int idx, const char *op, const char *what) {
    int isnum;
    lua_Integer v = lua_tointegerx(L, idx, &isnum);
    if (!isnum) {
        if (lua_type(L, idx) == LUA_TNUMBER)
            return luaL_error(L, "%s: %s must be an integer, got %s", op, what, lua_tostring(L, idx));
        return luaL_error(L, "%s: %s must be an integer, got %s", op, what, luaL_typename(L, idx));
    }
    return (int64_t)v;
}

static int opt_dim(lua_State *L, int idx, int def, const char *op) {
    if (lua_isnoneornil(L, idx)) return def;
    return check_int(L, idx, op, "dim");
}

static double check_num(lua_State *L, int idx, const char *op, const char *what) {
    if (lua_isboolean(L, idx)) return lua_toboolean(L, idx);
    int isnum;
    double v = lua_tonumberx(L, idx, &isnum);
    if (!isnum) return luaL_error(L, "%s: %s must be a number, got %s", op, what, luaL_typename(L, idx));
    return v;
}

/* dtype from a name: "float32"/"float"/"f32", "int64"/"long"/"i64", "bool" */
static int parse_dtype(const char *s, mw_dtype *dt) {
    if (!strcmp(s, "float32") || !strcmp(s, "float") || !strcmp(s, "f32")) *dt = MW_F32;
    else if (!strcmp(s, "int64") || !strcmp(s, "long") || !strcmp(s, "i64")) *dt = MW_I64;
    else if (!strcmp(s, "bool")) *dt = MW_BOOL;
    else return 0;
    return 1;
}

static mw_dtype check_dtype(lua_State *L, int idx, const char *op) {
    const char *s = mwl_checkname(L, idx, op, "dtype name");
    mw_dtype dt = MW_F32;
    if (!parse_dtype(s, &dt))
        luaL_error(L, "%s: unknown dtype '%s' (float32, int64 or bool)", op, s);
    return dt;
}

/* Reads a shape at idx: one table {2, 3}, or consecutive numbers. Returns the index of the
 * first argument after it. allow_neg lets -1 through (view, reshape, expand). */
static int get_shape(lua_State *L, int idx, const char *op, int allow_neg, int *ndim,
                     int64_t *shape) {
    int n = 0;
    if (lua_type(L, idx) == LUA_TTABLE && !mwl_totensor(L, idx)) {
        lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
        if (len > MW_MAXDIM) return luaL_error(L, "%s: %I dims is more than %d", op, len, MW_MAXDIM);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_rawgeti(L, idx, i);
            shape[n++] = check_i64(L, -1, op, "a size");
            lua_pop(L, 1);
        }
        idx++;
    } else {
        while (lua_type(L, idx) == LUA_TNUMBER) {
            if (n == MW_MAXDIM) return luaL_error(L, "%s: more than %d dims", op, MW_MAXDIM);
            shape[n++] = check_i64(L, idx, op, "a size");
            idx++;
        }
    }
    for (int i = 0; i < n; i++)
        if (shape[i] < 0 && !(allow_neg && shape[i] == -1))
            return luaL_error(L, "%s: size %d is %I (sizes must be >= 0)", op, i, (lua_Integer)shape[i]);
    *ndim = n;
    return idx;
}

typedef struct { mw_rng rng; uint64_t seed; } lgen;

/* ================================================================ options and keyword arguments */

/* names as "a, b, c" into a buffer (for messages) */
static void push_name_list(lua_State *L, const char *const *names) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; names[i]; i++) {
        if (i) luaL_addstring(&b, ", ");
        luaL_addstring(&b, names[i]);
    }
    luaL_pushresult(&b);
}

/* luaL_error with the position of the function `level` calls up: 1 is whoever called the C
 * function (user code for a method), 2 its caller (user code for a Lua library function that
 * checks its options through mi.utils.check_opts or mi._kwargs) */
static int raise_at(lua_State *L, int level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    luaL_where(L, level);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

static void check_opts_at(lua_State *L, int idx, const char *op, const char *const *names, int level) {
    if (lua_isnoneornil(L, idx)) return;
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE)
        raise_at(L, level, "%s: options must be a table, got %s", op, luaL_typename(L, idx));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; names[i] && !known; i++) known = strcmp(names[i], lua_tostring(L, -1)) == 0;
        if (!known) {
            push_name_list(L, names);
            if (lua_type(L, -2) == LUA_TSTRING)
                raise_at(L, level, "%s: unknown option '%s' (options: %s)", op, lua_tostring(L, -2), lua_tostring(L, -1));
            raise_at(L, level, "%s: options take names as keys, got a %s key (options: %s)", op,
                     luaL_typename(L, -2), lua_tostring(L, -1));
        }
    }
}

void mwl_check_opts(lua_State *L, int idx, const char *op, const char *const *names) {
    check_opts_at(L, idx, op, names, 1);
}

/* mi.utils.check_opts(fname, opts, allowed): the same check from Lua; allowed is a list of
 * names {"seed", "dtype"} or a set {seed = true, dtype = true} */
static int l_check_opts(lua_State *L) {
    const char *op = luaL_checkstring(L, 1);
    luaL_checktype(L, 3, LUA_TTABLE);
    const char *names[64];
    int n = 0;
    if (lua_rawlen(L, 3) > 0) {
        for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, 3) && n < 63; i++) {
            lua_rawgeti(L, 3, i);
            if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "check_opts: allowed names must be strings");
            names[n++] = lua_tostring(L, -1); /* anchored by the list */
            lua_pop(L, 1);
        }
    } else {
        lua_pushnil(L);
        while (lua_next(L, 3) && n < 63) {
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TSTRING) names[n++] = lua_tostring(L, -1);
        }
    }
    names[n] = NULL;
    /* a sorted list reads better in the message and does not depend on table order */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            const char *t = names[j]; names[j] = names[j - 1]; names[j - 1] = t;
        }
    check_opts_at(L, 2, op, names, 2);
    lua_settop(L, 2);
    return 1;
}

/* an options table: a plain table (no metatable) with at least one key and nothing at [1] */
static int is_opts_table(lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TTABLE || lua_rawlen(L, idx) > 0) return 0;
    if (lua_getmetatable(L, idx)) { lua_pop(L, 1); return 0; }
    lua_pushnil(L);
    if (!lua_next(L, idx)) return 0;
    lua_pop(L, 2);
    return 1;
}

/* Keyword arguments, torch style. When the last argument is an options table, each of its
 * keys names one of the parameters names[0], names[1], ..., which take the positions first,
 * first + 1, ...; the values move into those positions and the table goes, so the function
 * goes on reading positional arguments: x:sum{dim = 1, keepdim = true} is x:sum(1, true) and
 * x:sum(1, {keepdim = true}) too. Unknown keys, and a parameter given both ways, raise. */
static void kwargs_at(lua_State *L, int first, const char *op, const char *const *names, int level) {
    int top = lua_gettop(L);
    if (top < first || !is_opts_table(L, top)) return;
    int n = 0;
    while (names[n]) n++;
    if (top - first > n) {
        push_name_list(L, names);
        raise_at(L, level, "%s: %d arguments before the options table, at most %d (%s)", op, top - first, n,
                 lua_tostring(L, -1));
    }
    check_opts_at(L, top, op, names, level);
    int t = first + n; /* >= top */
    luaL_checkstack(L, t - top + 3, op);
    lua_settop(L, t);
    if (t != top) {
        lua_copy(L, top, t);
        lua_pushnil(L);
        lua_replace(L, top);
    }
    lua_pushnil(L);
    while (lua_next(L, t)) {
        const char *k = lua_tostring(L, -2);
        int j = 0;
        while (strcmp(names[j], k) != 0) j++;
        if (!lua_isnil(L, first + j))
            raise_at(L, level, "%s: '%s' given both by position and by name", op, k);
        lua_copy(L, -1, first + j);
        lua_pop(L, 1);
    }
    lua_settop(L, t - 1);
}

static void kwargs(lua_State *L, int first, const char *op, const char *const *names) {
    kwargs_at(L, first, op, names, 1);
}

/* mi._kwargs(fname, {names...}, ...): kwargs() for the Lua-side library; returns the
 * positional arguments (#names of them) */
static int l_kwargs(lua_State *L) {
    const char *op = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *names[32];
    int n = (int)lua_rawlen(L, 2);
    if (n > 31) return luaL_error(L, "_kwargs: at most 31 names");
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        names[i] = luaL_checkstring(L, -1); /* anchored by the list */
        lua_pop(L, 1);
    }
    names[n] = NULL;
    int given = lua_gettop(L) - 2;
    if (given > n && !is_opts_table(L, lua_gettop(L))) {
        push_name_list(L, names);
        return raise_at(L, 2, "%s: %d arguments, at most %d (%s)", op, given, n, lua_tostring(L, -1));
    }
    kwargs_at(L, 3, op, names, 2);
    lua_settop(L, 2 + n);
    return n;
}

/* Options after a shape, in any order: a dtype name, a Generator, or a table
 * {dtype = ..., generator = ..., seed = ...} (seed: a fresh generator seeded so, kept on the
 * stack). Unknown keys raise. */
static void get_opts(lua_State *L, int idx, const char *op, mw_dtype *dt, mw_rng **gen) {
    static const char *const D[] = {"dtype", NULL}, *const G[] = {"generator", "seed", NULL},
                             *const DG[] = {"dtype", "generator", "seed", NULL};
    int top = lua_gettop(L);
    for (int i = idx; i <= top; i++) {
        int t = lua_type(L, i);
        if (t == LUA_TNIL) continue;
        if (t == LUA_TSTRING && dt) {
            *dt = check_dtype(L, i, op);
        } else if (t == LUA_TUSERDATA && gen && luaL_testudata(L, i, MWL_GENERATOR)) {
            *gen = &((lgen *)lua_touserdata(L, i))->rng;
        } else if (t == LUA_TTABLE && !mwl_totensor(L, i)) {
            mwl_check_opts(L, i, op, dt && gen ? DG : dt ? D : G);
            if (dt) {
                if (lua_getfield(L, i, "dtype") != LUA_TNIL) *dt = check_dtype(L, -1, op);
                lua_pop(L, 1);
            }
            if (!gen) continue;
            int has_gen = lua_getfield(L, i, "generator") != LUA_TNIL;
            if (has_gen) {
                lgen *g = (lgen *)luaL_testudata(L, -1, MWL_GENERATOR);
                if (!g) luaL_error(L, "%s: generator must be a mi.Generator, got %s", op, luaL_typename(L, -1));
                *gen = &g->rng;
            }
            lua_pop(L, 1);
            if (lua_getfield(L, i, "seed") != LUA_TNIL) {
                if (has_gen) luaL_error(L, "%s: give a generator or a seed, not both", op);
                int64_t s = check_i64(L, -1, op, "seed");
                lua_pop(L, 1);
                lgen *g = (lgen *)lua_newuserdatauv(L, sizeof(lgen), 0); /* lives on the stack */
                mw_rng_seed(&g->rng, (uint64_t)s);
                *gen = &g->rng;
            } else {
                lua_pop(L, 1);
            }
        } else {
            luaL_error(L, "%s: unexpected argument #%d (%s)", op, i, luaL_typename(L, i));
        }
    }
}

/* Normalizes a dim for a tensor of ndim dims; raises naming op and the shape. */
static int norm_dim(lua_State *L, const mw_tensor *t, int d, const char *op) {
    int nd = t->ndim;
    int r = d < 0 ? d + nd : d;
    if (r < 0 || r >= nd) {
        char b[SHAPEBUF];
        luaL_error(L, "%s: dim %d out of range for a tensor of shape %s", op, d, shape_str(b, sizeof b, t));
    }
    return r;
}

/* Dims for a reduction: nil = all (mask 0), a number, or a list of numbers. */
static uint32_t get_dims(lua_State *L, int idx, const mw_tensor *t, const char *op) {
    if (lua_isnoneornil(L, idx)) return 0;
    uint32_t mask = 0;
    if (lua_type(L, idx) == LUA_TTABLE) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            int d = norm_dim(L, t, check_int(L, -1, op, "dim"), op);
            lua_pop(L, 1);
            mask |= 1u << d;
        }
        if (n == 0) return luaL_error(L, "%s: empty list of dims", op);
    } else {
        mask = 1u << norm_dim(L, t, check_int(L, idx, op, "dim"), op);
    }
    return mask;
}

/* ================================================================ elements */

/* pointer to the element at linear row-major position k of t */
static char *elem_ptr(const mw_tensor *t, int64_t k) {
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t n = t->shape[d];
        off += (k % n) * t->stride[d];
        k /= n;
    }
    return (char *)mw_tensor_data(t) + off * (int64_t)mw_dtype_size(t->dtype);
}

static void push_elem(lua_State *L, mw_dtype dt, const char *p) {
    switch (dt) {
    case MW_F32: lua_pushnumber(L, *(const float *)p); break;
    case MW_I64: lua_pushinteger(L, *(const int64_t *)p); break;
    case MW_BOOL: lua_pushboolean(L, *(const uint8_t *)p != 0); break;
    }
}

static int elem_true(mw_dtype dt, const char *p) {
    switch (dt) {
    case MW_F32: return *(const float *)p != 0;
    case MW_I64: return *(const int64_t *)p != 0;
    case MW_BOOL: return *(const uint8_t *)p != 0;
    }
    return 0;
}

/* nested Lua lists of dims d.. of t, starting at element offset off (elements) */
static void push_nested(lua_State *L, const mw_tensor *t, int d, int64_t off) {
    luaL_checkstack(L, 3, "totable");
    size_t es = mw_dtype_size(t->dtype);
    const char *base = (const char *)t->storage->data;
    if (d == t->ndim) {
        push_elem(L, t->dtype, base + off * (int64_t)es);
        return;
    }
    int64_t n = t->shape[d];
    lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        push_nested(L, t, d + 1, off + i * t->stride[d]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* ================================================================ creation */

/* mi.tensor(data [, dtype | {dtype=}]): data is a number, a boolean, nested lists, or a tensor
 * (copied). Numbers give float32 unless a dtype is given; all-boolean data gives bool. */
static void nested_shape(lua_State *L, int idx, int *ndim, int64_t *shape, int *all_bool) {
    int n = 0;
    lua_pushvalue(L, idx);
    while (lua_type(L, -1) == LUA_TTABLE) {
        if (n == MW_MAXDIM) luaL_error(L, "tensor: nested more than %d deep", MW_MAXDIM);
        shape[n++] = (int64_t)lua_rawlen(L, -1);
        if (shape[n - 1] == 0) break;
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
    }
    *all_bool = lua_type(L, -1) == LUA_TBOOLEAN;
    lua_pop(L, 1);
    *ndim = n;
}

static void path_str(char *buf, size_t n, const int64_t *pos, int depth) {
    size_t p = 0;
    p += (size_t)snprintf(buf, n, "t");
    for (int i = 0; i < depth && p < n; i++) p += (size_t)snprintf(buf + p, n - p, "[%lld]", (long long)pos[i] + 1);
}

static void fill_nested(lua_State *L, int idx, int d, int ndim, const int64_t *shape, mw_dtype dt,
                        char **out, int64_t *pos) {
    luaL_checkstack(L, 3, "tensor");
    char where[128];
    if (d == ndim) {
        int t = lua_type(L, idx);
        if (t == LUA_TBOOLEAN) {
            int b = lua_toboolean(L, idx);
            if (dt == MW_F32) *(float *)*out = (float)b;
            else if (dt == MW_I64) *(int64_t *)*out = b;
            else *(uint8_t *)*out = (uint8_t)b;
        } else if (t == LUA_TNUMBER) {
            if (dt == MW_F32) {
                *(float *)*out = (float)lua_tonumber(L, idx);
            } else if (dt == MW_I64) {
                int isint;
                lua_Integer v = lua_tointegerx(L, idx, &isint);
                if (!isint) {
                    path_str(where, sizeof where, pos, d);
                    luaL_error(L, "tensor: %s = %s is not an integer (dtype int64)", where, lua_tostring(L, idx));
                }
                *(int64_t *)*out = v;
            } else {
                *(uint8_t *)*out = lua_tonumber(L, idx) != 0;
            }
        } else {
            path_str(where, sizeof where, pos, d);
            luaL_error(L, "tensor: %s is a %s, expected a number%s", where, luaL_typename(L, idx),
                       t == LUA_TTABLE ? " (the nesting is deeper here than in t[1]...)" : "");
        }
        *out += mw_dtype_size(dt);
        return;
    }
    if (lua_type(L, idx) != LUA_TTABLE) {
        path_str(where, sizeof where, pos, d);
        luaL_error(L, "tensor: %s is a %s, expected a list of %I (ragged nested lists)", where,
                   luaL_typename(L, idx), (lua_Integer)shape[d]);
    }
    int64_t len = (int64_t)lua_rawlen(L, idx);
    if (len != shape[d]) {
        path_str(where, sizeof where, pos, d);
        luaL_error(L, "tensor: %s has %I items, expected %I (ragged nested lists)", where,
                   (lua_Integer)len, (lua_Integer)shape[d]);
    }
    for (int64_t i = 0; i < len; i++) {
        pos[d] = i;
        lua_rawgeti(L, idx, i + 1);
        fill_nested(L, lua_gettop(L), d + 1, ndim, shape, dt, out, pos);
        lua_pop(L, 1);
    }
}

static int l_tensor(lua_State *L) {
    mw_dtype dt = MW_F32;
    int have_dt = 0;
    if (!lua_isnoneornil(L, 2)) {
        get_opts(L, 2, "tensor", &dt, NULL);
        have_dt = 1;
    }
    mw_tensor *src = mwl_totensor(L, 1);
    if (src) {
        mwl_checktensor(L, 1);
        mw_tensor *out = mwl_newtensor(L);
        CHECK(mw_tensor_to_dtype(out, src, have_dt ? dt : src->dtype));
        return ret(L, 1);
    }
    int t = lua_type(L, 1);
    if (t == LUA_TNUMBER || t == LUA_TBOOLEAN) {
        if (!have_dt && t == LUA_TBOOLEAN) dt = MW_BOOL;
        if (dt == MW_I64 && t == LUA_TNUMBER && !lua_isinteger(L, 1) &&
            lua_tonumber(L, 1) != floor(lua_tonumber(L, 1)))
            return luaL_error(L, "tensor: %s is not an integer (dtype int64)", lua_tostring(L, 1));
        double v = t == LUA_TBOOLEAN ? lua_toboolean(L, 1) : lua_tonumber(L, 1);
        mw_tensor *out = mwl_newtensor(L);
        if (dt == MW_I64 && lua_isinteger(L, 1)) {
            int64_t iv = (int64_t)lua_tointeger(L, 1);
            CHECK(mw_tensor_from_data(out, MW_I64, 0, NULL, &iv));
        } else {
            CHECK(mw_tensor_scalar(out, dt, v));
        }
        return ret(L, 1);
    }
    if (t != LUA_TTABLE)
        return luaL_error(L, "tensor: expected nested lists of numbers, a number or a tensor, got %s",
                          luaL_typename(L, 1));
    int ndim, all_bool;
    int64_t shape[MW_MAXDIM], pos[MW_MAXDIM] = {0};
    nested_shape(L, 1, &ndim, shape, &all_bool);
    if (!have_dt && all_bool) dt = MW_BOOL;
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_empty(out, dt, ndim, shape));
    char *p = (char *)mw_tensor_data(out);
    if (mw_tensor_numel(out) > 0) fill_nested(L, 1, 0, ndim, shape, dt, &p, pos);
    return ret(L, 1);
}

static int l_zeros_ones(lua_State *L, double v, const char *op) {
    int ndim;
    int64_t shape[MW_MAXDIM];
    int next = get_shape(L, 1, op, 0, &ndim, shape);
    mw_dtype dt = MW_F32;
    get_opts(L, next, op, &dt, NULL);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_full(out, dt, ndim, shape, v));
    return ret(L, 1);
}
static int l_zeros(lua_State *L) { return l_zeros_ones(L, 0, "zeros"); }
static int l_ones(lua_State *L) { return l_zeros_ones(L, 1, "ones"); }

/* mi.full(shape, value [, dtype]): the shape as a table, or numbers whose last one is the
 * value: mi.full({2, 3}, 0.5) == mi.full(2, 3, 0.5). A boolean value gives a bool tensor. */
static int l_full(lua_State *L) {
    int ndim = 0, vidx;
    int64_t shape[MW_MAXDIM];
    if (lua_type(L, 1) == LUA_TTABLE) {
        vidx = get_shape(L, 1, "full", 0, &ndim, shape);
    } else {
        int top = lua_gettop(L);
        vidx = 1;
        while (vidx < top && lua_type(L, vidx + 1) == LUA_TNUMBER) vidx++;
        if (vidx > MW_MAXDIM + 1) return luaL_error(L, "full: more than %d dims", MW_MAXDIM);
        for (int i = 1; i < vidx; i++) {
            shape[ndim] = check_i64(L, i, "full", "a size");
            if (shape[ndim] < 0)
                return luaL_error(L, "full: size %d is %I (sizes must be >= 0)", ndim, (lua_Integer)shape[ndim]);
            ndim++;
        }
    }
    if (lua_isnoneornil(L, vidx)) return luaL_error(L, "full: expected a shape and a fill value");
    double v = check_num(L, vidx, "full", "the fill value");
    mw_dtype dt = lua_type(L, vidx) == LUA_TBOOLEAN ? MW_BOOL : MW_F32;
    get_opts(L, vidx + 1, "full", &dt, NULL);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_full(out, dt, ndim, shape, v));
    return ret(L, 1);
}

/* mi.arange(end) / (start, end [, step]) [, dtype]: int64 when every bound is an integer, as
 * torch does, else float32 */
static int l_arange(lua_State *L) {
    int n = 0;
    while (n < 3 && lua_type(L, n + 1) == LUA_TNUMBER) n++;
    if (n == 0) return luaL_error(L, "arange: expected (end) or (start, end [, step])");
    int all_int = 1;
    for (int i = 1; i <= n; i++) all_int &= lua_isinteger(L, i);
    double start = 0, end, step = 1;
    if (n == 1) end = lua_tonumber(L, 1);
    else {
        start = lua_tonumber(L, 1);
        end = lua_tonumber(L, 2);
        if (n == 3) step = lua_tonumber(L, 3);
    }
    mw_dtype dt = all_int ? MW_I64 : MW_F32;
    get_opts(L, n + 1, "arange", &dt, NULL);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_arange(out, dt, start, end, step));
    return ret(L, 1);
}

static int l_linspace(lua_State *L) {
    static const char *const NAMES[] = {"start", "end", "steps", NULL};
    kwargs(L, 1, "linspace", NAMES);
    double a = check_num(L, 1, "linspace", "start"), b = check_num(L, 2, "linspace", "end");
    int64_t steps = check_i64(L, 3, "linspace", "steps");
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_linspace(out, a, b, steps));
    return ret(L, 1);
}

static int l_eye(lua_State *L) {
    static const char *const NAMES[] = {"n", "m", NULL};
    kwargs(L, 1, "eye", NAMES);
    int64_t n = check_i64(L, 1, "eye", "n");
    int64_t m = lua_isnoneornil(L, 2) ? n : check_i64(L, 2, "eye", "m");
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_eye(out, n, m));
    return ret(L, 1);
}

static int l_tril(lua_State *L) {
    static const char *const NAMES[] = {"diagonal", NULL};
    kwargs(L, 2, "tril", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int64_t k = lua_isnoneornil(L, 2) ? 0 : check_i64(L, 2, "tril", "diagonal");
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_tril(out, a, k));
    return ret(L, 1);
}

static int l_triu(lua_State *L) {
    static const char *const NAMES[] = {"diagonal", NULL};
    kwargs(L, 2, "triu", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int64_t k = lua_isnoneornil(L, 2) ? 0 : check_i64(L, 2, "triu", "diagonal");
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_triu(out, a, k));
    return ret(L, 1);
}

static int l_rand_common(lua_State *L, int normal) {
    const char *op = normal ? "randn" : "rand";
    int ndim;
    int64_t shape[MW_MAXDIM];
    int next = get_shape(L, 1, op, 0, &ndim, shape);
    mw_rng *g = NULL;
    mw_dtype dt = MW_F32;
    get_opts(L, next, op, &dt, &g);
    if (dt != MW_F32) return luaL_error(L, "%s: only float32 is supported", op);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(normal ? mw_tensor_randn(out, g, ndim, shape) : mw_tensor_rand(out, g, ndim, shape));
    return ret(L, 1);
}
static int l_rand(lua_State *L) { return l_rand_common(L, 0); }
static int l_randn(lua_State *L) { return l_rand_common(L, 1); }

/* mi.randint(lo, hi, shape...) or mi.randint(hi, {shape}) */
static int l_randint(lua_State *L) {
    int64_t lo = 0, hi;
    int first;
    if (lua_type(L, 2) == LUA_TTABLE) {
        hi = check_i64(L, 1, "randint", "high");
        first = 2;
    } else {
        lo = check_i64(L, 1, "randint", "low");
        hi = check_i64(L, 2, "randint", "high");
        first = 3;
    }
    int ndim;
    int64_t shape[MW_MAXDIM];
    int next = get_shape(L, first, "randint", 0, &ndim, shape);
    mw_rng *g = NULL;
    mw_dtype dt = MW_I64;
    get_opts(L, next, "randint", &dt, &g);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_randint(out, g, lo, hi, ndim, shape));
    if (dt != MW_I64) {
        mw_tensor *conv = mwl_newtensor(L);
        CHECK(mw_tensor_to_dtype(conv, out, dt));
    }
    return ret(L, 1);
}

static int l_manual_seed(lua_State *L) {
    lua_Integer s = luaL_checkinteger(L, 1);
    mw_rng_seed(mw_rng_default(), (uint64_t)s);
    return 0;
}

/* ---------------------------------------------------------------- Generator */

static int l_generator(lua_State *L) {
    lua_Integer s = luaL_optinteger(L, 1, 0);
    lgen *g = (lgen *)lua_newuserdatauv(L, sizeof(lgen), 0);
    mw_rng_seed(&g->rng, (uint64_t)s);
    g->seed = (uint64_t)s;
    luaL_setmetatable(L, MWL_GENERATOR);
    return 1;
}

static int gen_manual_seed(lua_State *L) {
    lgen *g = (lgen *)luaL_checkudata(L, 1, MWL_GENERATOR);
    lua_Integer s = luaL_checkinteger(L, 2);
    mw_rng_seed(&g->rng, (uint64_t)s);
    g->seed = (uint64_t)s;
    lua_settop(L, 1);
    return 1;
}

static int gen_initial_seed(lua_State *L) {
    lgen *g = (lgen *)luaL_checkudata(L, 1, MWL_GENERATOR);
    lua_pushinteger(L, (lua_Integer)g->seed);
    return 1;
}

static int gen_tostring(lua_State *L) {
    lgen *g = (lgen *)luaL_checkudata(L, 1, MWL_GENERATOR);
    lua_pushfstring(L, "Generator(seed=%I)", (lua_Integer)g->seed);
    return 1;
}

/* ================================================================ basic methods */

static int m_shape(lua_State *L) {
    mw_tensor *t = mwl_checktensor(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int m_size(lua_State *L) {
    static const char *const NAMES[] = {"dim", NULL};
    kwargs(L, 2, "size", NAMES);
    mw_tensor *t = mwl_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) return m_shape(L);
    int d = norm_dim(L, t, check_int(L, 2, "size", "dim"), "size");
    lua_pushinteger(L, t->shape[d]);
    return 1;
}

static int m_stride(lua_State *L) {
    mw_tensor *t = mwl_checktensor(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        int d = norm_dim(L, t, check_int(L, 2, "stride", "dim"), "stride");
        lua_pushinteger(L, t->stride[d]);
        return 1;
    }
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->stride[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int m_storage_offset(lua_State *L) {
    lua_pushinteger(L, mwl_checktensor(L, 1)->offset);
    return 1;
}

/* t:data_ptr(): torch's name; the address of the first element (0 without storage), to tell
 * whether two tensors share memory */
static int m_data_ptr(lua_State *L) {
    mw_tensor *t = mwl_checktensor(L, 1);
    if (lua_gettop(L) > 1) return luaL_error(L, "data_ptr: takes no arguments (write t:data_ptr())");
    lua_pushinteger(L, t->storage && mw_tensor_numel(t) > 0 ? (lua_Integer)(uintptr_t)mw_tensor_data(t) : 0);
    return 1;
}

static int m_dim(lua_State *L) {
    lua_pushinteger(L, mwl_checktensor(L, 1)->ndim);
    return 1;
}

static int m_numel(lua_State *L) {
    lua_pushinteger(L, mw_tensor_numel(mwl_checktensor(L, 1)));
    return 1;
}

static int m_dtype(lua_State *L) {
    lua_pushstring(L, mw_dtype_name(mwl_checktensor(L, 1)->dtype));
    return 1;
}

static int m_is_contiguous(lua_State *L) {
    lua_pushboolean(L, mw_tensor_is_contiguous(mwl_checktensor(L, 1)));
    return 1;
}

static int m_shares_storage(lua_State *L) {
    lua_pushboolean(L, mwl_checktensor(L, 1)->storage == mwl_checktensor(L, 2)->storage);
    return 1;
}

static int m_item(lua_State *L) {
    mw_tensor *t = mwl_checktensor(L, 1);
    if (mw_tensor_numel(t) != 1) {
        char b[SHAPEBUF];
        return luaL_error(L, "item: tensor of shape %s has %I elements, expected 1",
                          shape_str(b, sizeof b, t), (lua_Integer)mw_tensor_numel(t));
    }
    push_elem(L, t->dtype, elem_ptr(t, 0));
    return 1;
}

static int m_totable(lua_State *L) {
    mw_tensor *t = mwl_checktensor(L, 1);
    push_nested(L, t, 0, t->offset);
    return 1;
}

static int m_tostring(lua_State *L) {
    mw_tensor *t = (mw_tensor *)luaL_checkudata(L, 1, MWL_TENSOR);
    if (t->storage == NULL) {
        lua_pushliteral(L, "tensor(<closed>)");
        return 1;
    }
    char *s = mw_tensor_format(t);
    if (s == NULL) return mwl_coreerror(L);
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static int m_gc(lua_State *L) {
    mw_tensor *t = (mw_tensor *)luaL_checkudata(L, 1, MWL_TENSOR);
    mw_tensor_release(t);
    return 0;
}

static int m_len(lua_State *L) {
    mw_tensor *t = mwl_checktensor(L, 1);
    if (t->ndim == 0) return luaL_error(L, "len: a 0-dim tensor has no length");
    lua_pushinteger(L, t->shape[0]);
    return 1;
}

static int to_dtype(lua_State *L, mw_dtype dt) {
    mw_tensor *t = mwl_checktensor(L, 1);
    if (t->dtype == dt) {
        lua_settop(L, 1);
        return 1;
    }
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_to_dtype(out, t, dt));
    return ret(L, 1);
}
static int m_float(lua_State *L) { return to_dtype(L, MW_F32); }
static int m_long(lua_State *L) { return to_dtype(L, MW_I64); }
static int m_bool(lua_State *L) { return to_dtype(L, MW_BOOL); }
/* x:to(dtype); x:to("cpu") is x (TransformerLens code moves tensors to devices) */
static int m_to(lua_State *L) {
    static const char *const NAMES[] = {"dtype", NULL};
    kwargs(L, 2, "to", NAMES);
    mwl_checktensor(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "cpu") == 0) {
        lua_settop(L, 1);
        return 1;
    }
    return to_dtype(L, check_dtype(L, 2, "to"));
}

/* x:any() / x:all(): over every element (true when nonzero) a Lua boolean, for `if`;
 * x:any(dim, keepdim) / x:all(dim, keepdim) (dim a number or a list): a bool tensor, as torch */
static int reduce_truth(lua_State *L, int want_all) {
    static const char *const NAMES[] = {"dim", "keepdim", NULL};
    const char *op = want_all ? "all" : "any";
    kwargs(L, 2, op, NAMES);
    mw_tensor *t = mwl_checktensor(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        /* count the elements that decide: zeros for all, nonzeros for any (NaN counts as nonzero) */
        uint32_t dims = get_dims(L, 2, t, op);
        int keepdim = lua_toboolean(L, 3);
        mw_tensor *z = mwl_newtensor(L);
        CHECK(mw_unary(z, t, MW_NOT));
        if (!want_all) {
            mw_tensor *nz = mwl_newtensor(L);
            CHECK(mw_unary(nz, z, MW_NOT));
            z = nz;
        }
        mw_tensor *zi = mwl_newtensor(L);
        CHECK(mw_tensor_to_dtype(zi, z, MW_I64));
        mw_tensor *count = mwl_newtensor(L);
        CHECK(mw_reduce(count, zi, MW_SUM, dims, keepdim, 0));
        mw_tensor *out = mwl_newtensor(L);
        CHECK(mw_binary_scalar(out, count, 0, want_all ? MW_EQ : MW_GT, 0));
        return ret(L, 1);
    }
    /* an expanded dim (stride 0) repeats the same elements: look at them once */
    mw_tensor u = *t;
    for (int d = 0; d < u.ndim; d++)
        if (u.stride[d] == 0 && u.shape[d] > 1) u.shape[d] = 1;
    int64_t n = mw_tensor_numel(t) == 0 ? 0 : mw_tensor_numel(&u);
    for (int64_t k = 0; k < n; k++) {
        int b = elem_true(u.dtype, elem_ptr(&u, k));
        if (want_all && !b) { lua_pushboolean(L, 0); return 1; }
        if (!want_all && b) { lua_pushboolean(L, 1); return 1; }
    }
    lua_pushboolean(L, want_all);
    return 1;
}
static int m_all(lua_State *L) { return reduce_truth(L, 1); }
static int m_any(lua_State *L) { return reduce_truth(L, 0); }

/* ================================================================ views */

static int m_narrow(lua_State *L) {
    static const char *const NAMES[] = {"dim", "start", "length", NULL};
    kwargs(L, 2, "narrow", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int d = check_int(L, 2, "narrow", "dim");
    int64_t start = check_i64(L, 3, "narrow", "start"), len = check_i64(L, 4, "narrow", "length");
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_narrow(out, a, d, start, len));
    return 1;
}

static int m_select(lua_State *L) {
    static const char *const NAMES[] = {"dim", "index", NULL};
    kwargs(L, 2, "select", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int d = check_int(L, 2, "select", "dim");
    int64_t i = check_i64(L, 3, "select", "index");
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_select(out, a, d, i));
    return 1;
}

static int m_transpose(lua_State *L) {
    static const char *const NAMES[] = {"dim0", "dim1", NULL};
    kwargs(L, 2, "transpose", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int d0 = check_int(L, 2, "transpose", "dim0"), d1 = check_int(L, 3, "transpose", "dim1");
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_transpose(out, a, d0, d1));
    return 1;
}

/* x:t(): the transpose of a 2-D tensor (a 0-D or 1-D tensor comes back as it is) */
static int m_t(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    if (a->ndim < 2) { lua_settop(L, 1); return 1; }
    if (a->ndim > 2) {
        char b[SHAPEBUF];
        return luaL_error(L, "t: expects a tensor of at most 2 dims, got %s (use transpose or permute)",
                          shape_str(b, sizeof b, a));
    }
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_transpose(out, a, 0, 1));
    return 1;
}

/* x.T: all dims reversed (for 2-D, the transpose), as torch's Tensor.T */
static int prop_T(lua_State *L, int idx) {
    mw_tensor *a = mwl_checktensor(L, idx);
    int perm[MW_MAXDIM];
    for (int i = 0; i < a->ndim; i++) perm[i] = a->ndim - 1 - i;
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_permute(out, a, perm));
    return 1;
}

/* dims as varargs from idx or one table */
static int get_dim_list(lua_State *L, int idx, const char *op, int *dims) {
    int n = 0;
    if (lua_type(L, idx) == LUA_TTABLE) {
        lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
        if (len > MW_MAXDIM) return luaL_error(L, "%s: more than %d dims", op, MW_MAXDIM);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_rawgeti(L, idx, i);
            dims[n++] = check_int(L, -1, op, "dim");
            lua_pop(L, 1);
        }
    } else {
        int top = lua_gettop(L);
        for (int i = idx; i <= top; i++) {
            if (n == MW_MAXDIM) return luaL_error(L, "%s: more than %d dims", op, MW_MAXDIM);
            dims[n++] = check_int(L, i, op, "dim");
        }
    }
    return n;
}

static int m_permute(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    int perm[MW_MAXDIM];
    int n = get_dim_list(L, 2, "permute", perm);
    if (n != a->ndim) {
        char b[SHAPEBUF];
        return luaL_error(L, "permute: %d dims given for a tensor of shape %s", n, shape_str(b, sizeof b, a));
    }
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_permute(out, a, perm));
    return 1;
}

static int shape_method(lua_State *L, const char *op,
                        int (*fn)(mw_tensor *, const mw_tensor *, int, const int64_t *)) {
    mw_tensor *a = mwl_checktensor(L, 1);
    int ndim;
    int64_t shape[MW_MAXDIM];
    int next = get_shape(L, 2, op, 1, &ndim, shape);
    if (!lua_isnone(L, next)) return luaL_error(L, "%s: unexpected argument #%d", op, next - 1);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(fn(out, a, ndim, shape));
    return ret(L, 1);
}
static int m_view(lua_State *L) { return shape_method(L, "view", mw_tensor_view); }
static int m_reshape(lua_State *L) { return shape_method(L, "reshape", mw_tensor_reshape); }
static int m_expand(lua_State *L) { return shape_method(L, "expand", mw_tensor_expand); }

static int m_unsqueeze(lua_State *L) {
    static const char *const NAMES[] = {"dim", NULL};
    kwargs(L, 2, "unsqueeze", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int d = check_int(L, 2, "unsqueeze", "dim");
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_unsqueeze(out, a, d));
    return 1;
}

static int m_squeeze(lua_State *L) {
    static const char *const NAMES[] = {"dim", NULL};
    kwargs(L, 2, "squeeze", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *out;
    if (lua_isnoneornil(L, 2)) {
        out = mwl_newtensor(L);
        CHECK(mw_tensor_squeeze_all(out, a));
    } else {
        int d = check_int(L, 2, "squeeze", "dim");
        out = mwl_newtensor(L);
        CHECK(mw_tensor_squeeze(out, a, d));
    }
    return 1;
}

static int m_diagonal(lua_State *L) {
    static const char *const NAMES[] = {"offset", "dim1", "dim2", NULL};
    kwargs(L, 2, "diagonal", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int64_t off = lua_isnoneornil(L, 2) ? 0 : check_i64(L, 2, "diagonal", "offset");
    int d1 = opt_dim(L, 3, 0, "diagonal"), d2 = opt_dim(L, 4, 1, "diagonal");
    /* an offset past the matrix gives an empty diagonal; clamping it keeps the core's
     * offset * stride arithmetic far from overflow (offsets near 2^62 came from fuzzing) */
    int n = a->ndim, e1 = d1 < 0 ? d1 + n : d1, e2 = d2 < 0 ? d2 + n : d2;
    if (e1 >= 0 && e1 < n && e2 >= 0 && e2 < n) {
        if (off > a->shape[e2]) off = a->shape[e2];
        if (off < -a->shape[e1]) off = -a->shape[e1];
    }
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_diagonal(out, a, off, d1, d2));
    return 1;
}

/* x:split(size, dim) -> list of views of `size` along dim (the last may be shorter);
 * x:split({s1, s2, ...}, dim) -> views of those sizes, which must add up to the dim's size */
static int m_split(lua_State *L) {
    static const char *const NAMES[] = {"split_size_or_sections", "dim", NULL};
    kwargs(L, 2, "split", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int dim = norm_dim(L, a, opt_dim(L, 3, 0, "split"), "split");
    int64_t total = a->shape[dim];
    lua_newtable(L);
    int list = lua_gettop(L);
    char b[SHAPEBUF];
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
        int64_t start = 0;
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, 2, i);
            int64_t len = check_i64(L, -1, "split", "a size");
            lua_pop(L, 1);
            if (len < 0 || start + len > total) break;
            mw_tensor *out = mwl_newtensor(L);
            CHECK(mw_tensor_narrow(out, a, dim, start, len));
            lua_rawseti(L, list, i);
            start += len;
        }
        if (start != total || (lua_Integer)lua_rawlen(L, list) != n)
            return luaL_error(L, "split: sizes do not add up to %I (dim %d of %s)", (lua_Integer)total,
                              dim, shape_str(b, sizeof b, a));
    } else {
        int64_t size = check_i64(L, 2, "split", "size");
        if (size <= 0) return luaL_error(L, "split: size must be positive, got %I", (lua_Integer)size);
        lua_Integer i = 1;
        for (int64_t start = 0; start < total; start += size) {
            mw_tensor *out = mwl_newtensor(L);
            CHECK(mw_tensor_narrow(out, a, dim, start, start + size <= total ? size : total - start));
            lua_rawseti(L, list, i++);
        }
    }
    return 1;
}

static int m_contiguous(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_contiguous(out, a));
    return ret(L, 1);
}

static int m_clone(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_clone(out, a));
    return ret(L, 1);
}

/* ================================================================ element-wise */

/* a tensor operand, or a number/boolean at idx turned into a 0-dim tensor (pushed) */
static mw_tensor *operand(lua_State *L, int idx, const char *op, mw_dtype like) {
    mw_tensor *t = mwl_totensor(L, idx);
    if (t) return mwl_checktensor(L, idx);
    if (lua_type(L, idx) != LUA_TNUMBER && lua_type(L, idx) != LUA_TBOOLEAN)
        luaL_error(L, "%s: expected a tensor or a number, got %s", op, luaL_typename(L, idx));
    double v = check_num(L, idx, op, "operand");
    mw_dtype dt = like;
    if (lua_type(L, idx) == LUA_TNUMBER && !lua_isinteger(L, idx) && v != floor(v)) dt = MW_F32;
    if (lua_type(L, idx) == LUA_TBOOLEAN && like != MW_BOOL) dt = like;
    mw_tensor *s = mwl_newtensor(L);
    CHECK(mw_tensor_scalar(s, dt, v));
    return s;
}

static const char *const BINOP_NAMES[] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or"};

/* binary op with either side a number (metamethods get number + tensor too) */
/* When one operand is not a tensor but an object of another kind (a FactoredMatrix), its own
 * metamethod `event` decides, called with the operands in their order, as Lua itself would have
 * done had that object been on the left. Returns 1 with the result pushed, 0 when there is none. */
static int defer_to_other(lua_State *L, int other, const char *event) {
    int t = lua_type(L, other);
    if ((t != LUA_TTABLE && t != LUA_TUSERDATA) || mwl_totensor(L, other)) return 0;
    if (luaL_getmetafield(L, other, event) == LUA_TNIL) return 0;
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

static const char *const BINOP_EVENTS[] = {[MW_ADD] = "__add", [MW_SUB] = "__sub", [MW_MUL] = "__mul",
                                           [MW_DIV] = "__div", [MW_POW] = "__pow"};

static int binary_any(lua_State *L, mw_binop op) {
    const char *name = BINOP_NAMES[op];
    const char *event = (size_t)op < sizeof BINOP_EVENTS / sizeof *BINOP_EVENTS ? BINOP_EVENTS[op] : NULL;
    if (event && (defer_to_other(L, 1, event) || defer_to_other(L, 2, event))) return 1;
    mw_tensor *a = mwl_totensor(L, 1), *b = mwl_totensor(L, 2);
    if (a && b) {
        mwl_checktensor(L, 1);
        mwl_checktensor(L, 2);
        mw_tensor *out = mwl_newtensor(L);
        CHECK(mw_binary(out, a, b, op));
    } else if (a) {
        mwl_checktensor(L, 1);
        if (lua_type(L, 2) != LUA_TNUMBER && lua_type(L, 2) != LUA_TBOOLEAN)
            return luaL_error(L, "%s: expected a tensor or a number, got %s", name, luaL_typename(L, 2));
        double s = check_num(L, 2, name, "operand");
        mw_tensor *out = mwl_newtensor(L);
        CHECK(mw_binary_scalar(out, a, s, op, 0));
    } else if (b) {
        mwl_checktensor(L, 2);
        if (lua_type(L, 1) != LUA_TNUMBER && lua_type(L, 1) != LUA_TBOOLEAN)
            return luaL_error(L, "%s: expected a tensor or a number, got %s", name, luaL_typename(L, 1));
        double s = check_num(L, 1, name, "operand");
        mw_tensor *out = mwl_newtensor(L);
        CHECK(mw_binary_scalar(out, b, s, op, 1));
    } else {
        return luaL_error(L, "%s: expected a tensor operand", name);
    }
    return ret(L, 1);
}

static int l_binary(lua_State *L) {
    return binary_any(L, (mw_binop)lua_tointeger(L, lua_upvalueindex(1)));
}

static int l_binary_(lua_State *L) {
    mw_binop op = (mw_binop)lua_tointeger(L, lua_upvalueindex(1));
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *b = operand(L, 2, lua_tostring(L, lua_upvalueindex(2)), a->dtype);
    CHECK(mw_binary_(a, b, op));
    lua_settop(L, 1);
    return 1;
}

static int mm_unm(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_unary(out, a, MW_NEG));
    return ret(L, 1);
}

static int l_unary(lua_State *L) {
    mw_unop op = (mw_unop)lua_tointeger(L, lua_upvalueindex(1));
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_unary(out, a, op));
    return ret(L, 1);
}

static int l_unary_(lua_State *L) {
    mw_unop op = (mw_unop)lua_tointeger(L, lua_upvalueindex(1));
    mw_tensor *a = mwl_checktensor(L, 1);
    CHECK(mw_unary_(a, op));
    lua_settop(L, 1);
    return 1;
}

/* clamp(lo, hi): nil means no bound on that side; op names clamp or clamp_ in messages */
static void clamp_bounds(lua_State *L, double *lo, double *hi, const char *op) {
    *lo = lua_isnoneornil(L, 2) ? NAN : check_num(L, 2, op, "min");
    *hi = lua_isnoneornil(L, 3) ? NAN : check_num(L, 3, op, "max");
}

static int m_clamp(lua_State *L) {
    static const char *const NAMES[] = {"min", "max", NULL};
    kwargs(L, 2, "clamp", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    double lo, hi;
    clamp_bounds(L, &lo, &hi, "clamp");
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_clamp(out, a, lo, hi));
    return ret(L, 1);
}

static int m_clamp_(lua_State *L) {
    static const char *const NAMES[] = {"min", "max", NULL};
    kwargs(L, 2, "clamp_", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    double lo, hi;
    clamp_bounds(L, &lo, &hi, "clamp_");
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_clamp(out, a, lo, hi));
    CHECK(mw_tensor_copy_(a, out));
    lua_settop(L, 1);
    return ret(L, 1);
}

/* mi.where(cond, a, b); a and b may be numbers */
static int l_where(lua_State *L) {
    mw_tensor *c = mwl_checktensor(L, 1);
    mw_tensor *ta = mwl_totensor(L, 2), *tb = mwl_totensor(L, 3);
    mw_dtype like = ta ? ta->dtype : tb ? tb->dtype : MW_F32;
    mw_tensor *a = operand(L, 2, "where", like);
    mw_tensor *b = operand(L, 3, "where", like);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_where(out, c, a, b));
    return ret(L, 1);
}

/* x:where(cond, other) = mi.where(cond, x, other), as torch's Tensor.where */
static int m_where(lua_State *L) {
    mwl_checktensor(L, 1);
    lua_settop(L, 3);
    lua_pushcfunction(L, l_where);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 3);
    lua_call(L, 3, 1);
    return 1;
}

static int m_masked_fill_(lua_State *L) {
    static const char *const NAMES[] = {"mask", "value", NULL};
    kwargs(L, 2, "masked_fill_", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *m = mwl_checktensor(L, 2);
    double v = check_num(L, 3, "masked_fill_", "value");
    CHECK(mw_tensor_masked_fill_(a, m, v));
    lua_settop(L, 1);
    return 1;
}

static int m_masked_fill(lua_State *L) {
    static const char *const NAMES[] = {"mask", "value", NULL};
    kwargs(L, 2, "masked_fill", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *m = mwl_checktensor(L, 2);
    double v = check_num(L, 3, "masked_fill", "value");
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_clone(out, a));
    CHECK(mw_tensor_masked_fill_(out, m, v));
    return ret(L, 1);
}

static int m_fill_(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    CHECK(mw_tensor_fill_(a, check_num(L, 2, "fill_", "value")));
    lua_settop(L, 1);
    return 1;
}

static int m_zero_(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    CHECK(mw_tensor_fill_(a, 0));
    lua_settop(L, 1);
    return 1;
}

static int m_copy_(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *b = operand(L, 2, "copy_", a->dtype);
    CHECK(mw_tensor_copy_(a, b));
    lua_settop(L, 1);
    return 1;
}

/* ================================================================ reductions */

static const char *const REDOP_NAMES[] = {"sum", "mean", "prod", "amax", "amin", "norm",
                                          "logsumexp", "var", "std"};

/* x:sum(dim, keepdim) and the like; dim nil = all, a number, or a list.
 * x:var(dim, unbiased, keepdim) / x:std(...) in torch's order (x:std(0, false) is the biased
 * std, as in torch), or by name with torch's correction: the sum of squares over
 * N - correction (unbiased = true is correction 1, the default) */
static int l_reduce(lua_State *L) {
    static const char *const NAMES[] = {"dim", "keepdim", NULL},
                             *const VAR_NAMES[] = {"dim", "unbiased", "keepdim", "correction", NULL};
    mw_redop op = (mw_redop)lua_tointeger(L, lua_upvalueindex(1));
    const char *name = REDOP_NAMES[op];
    int is_var = op == MW_VAR || op == MW_STD;
    kwargs(L, 2, name, is_var ? VAR_NAMES : NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    uint32_t dims = get_dims(L, 2, a, name);
    int ub = is_var ? 3 : 4, kd = is_var ? 4 : 3; /* positions of unbiased and keepdim */
    int keepdim = lua_toboolean(L, kd);
    int unbiased = !is_var || lua_isnoneornil(L, ub) ? 1 : lua_toboolean(L, ub);
    if (!is_var && !lua_isnoneornil(L, 4))
        return luaL_error(L, "%s: unexpected argument #4 (%s takes dim, keepdim)", name, name);
    double correction = -1;
    if (is_var && !lua_isnoneornil(L, 5)) {
        if (!lua_isnoneornil(L, ub)) return luaL_error(L, "%s: give unbiased or correction, not both", name);
        correction = check_num(L, 5, name, "correction");
        if (correction == 0 || correction == 1) unbiased = correction == 1, correction = -1;
        else unbiased = 0;
    }
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_reduce(out, a, op, dims, keepdim, unbiased));
    if (correction >= 0) {
        /* from the biased (over N) result: var * N / (N - c), std * sqrt(N / (N - c)) */
        double n = 1;
        for (int d = 0; d < a->ndim; d++)
            if (dims == 0 || (dims & (1u << d))) n *= (double)a->shape[d];
        double f = n - correction > 0 ? n / (n - correction) : INFINITY;
        if (op == MW_STD) f = sqrt(f);
        mw_tensor *scaled = mwl_newtensor(L);
        CHECK(mw_binary_scalar(scaled, out, f, MW_MUL, 0));
    }
    return ret(L, 1);
}

/* x:norm(p, dim, keepdim): p = 2 (default), 1 or math.huge */
static int m_norm(lua_State *L) {
    static const char *const NAMES[] = {"p", "dim", "keepdim", NULL};
    kwargs(L, 2, "norm", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    double p = lua_isnoneornil(L, 2) ? 2 : check_num(L, 2, "norm", "p");
    uint32_t dims = get_dims(L, 3, a, "norm");
    int keepdim = lua_toboolean(L, 4);
    mw_tensor *out;
    if (p == 2) {
        out = mwl_newtensor(L);
        CHECK(mw_reduce(out, a, MW_NORM2, dims, keepdim, 0));
    } else if (p == 1 || p == HUGE_VAL) {
        mw_tensor *ab = mwl_newtensor(L);
        CHECK(mw_unary(ab, a, MW_ABS));
        out = mwl_newtensor(L);
        CHECK(mw_reduce(out, ab, p == 1 ? MW_SUM : MW_AMAX, dims, keepdim, 0));
    } else {
        return luaL_error(L, "norm: p = %f is not supported (1, 2 or math.huge)", p);
    }
    return ret(L, 1);
}

/* max() over everything; max(dim, keepdim) -> values, indices; max(other) -> maximum */
static int max_min(lua_State *L, int is_max) {
    static const char *const NAMES[] = {"dim", "keepdim", NULL};
    kwargs(L, 2, is_max ? "max" : "min", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    if (mwl_totensor(L, 2)) return binary_any(L, is_max ? MW_MAXIMUM : MW_MINIMUM);
    if (lua_isnoneornil(L, 2)) {
        mw_tensor *out = mwl_newtensor(L);
        CHECK(mw_reduce(out, a, is_max ? MW_AMAX : MW_AMIN, 0, 0, 0));
        return ret(L, 1);
    }
    int d = check_int(L, 2, is_max ? "max" : "min", "dim");
    int keepdim = lua_toboolean(L, 3);
    mw_tensor *v = mwl_newtensor(L);
    mw_tensor *i = mwl_newtensor(L);
    CHECK(is_max ? mw_max_dim(v, i, a, d, keepdim) : mw_min_dim(v, i, a, d, keepdim));
    return ret(L, 2);
}
static int m_max(lua_State *L) { return max_min(L, 1); }
static int m_min(lua_State *L) { return max_min(L, 0); }

static int arg_common(lua_State *L, int is_max) {
    static const char *const NAMES[] = {"dim", "keepdim", NULL};
    kwargs(L, 2, is_max ? "argmax" : "argmin", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int d = lua_isnoneornil(L, 2) ? INT32_MIN : check_int(L, 2, is_max ? "argmax" : "argmin", "dim");
    int keepdim = lua_toboolean(L, 3);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(is_max ? mw_argmax(out, a, d, keepdim) : mw_argmin(out, a, d, keepdim));
    return ret(L, 1);
}
static int m_argmax(lua_State *L) { return arg_common(L, 1); }
static int m_argmin(lua_State *L) { return arg_common(L, 0); }

static int dim_op(lua_State *L, const char *op, int (*fn)(mw_tensor *, const mw_tensor *, int)) {
    static const char *const NAMES[] = {"dim", NULL};
    kwargs(L, 2, op, NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int d = opt_dim(L, 2, -1, op);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(fn(out, a, d));
    return ret(L, 1);
}
static int m_softmax(lua_State *L) { return dim_op(L, "softmax", mw_softmax); }
static int m_log_softmax(lua_State *L) { return dim_op(L, "log_softmax", mw_log_softmax); }
static int m_cumsum(lua_State *L) {
    static const char *const NAMES[] = {"dim", NULL};
    kwargs(L, 2, "cumsum", NAMES);
    if (lua_isnoneornil(L, 2)) return luaL_error(L, "cumsum: dim is required");
    return dim_op(L, "cumsum", mw_cumsum);
}

/* x:topk(k, dim = -1, largest = true, sorted = true) -> values, indices */
static int m_topk(lua_State *L) {
    static const char *const NAMES[] = {"k", "dim", "largest", "sorted", NULL};
    kwargs(L, 2, "topk", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int64_t k = check_i64(L, 2, "topk", "k");
    int d = opt_dim(L, 3, -1, "topk");
    int largest = lua_isnoneornil(L, 4) ? 1 : lua_toboolean(L, 4);
    int sorted = lua_isnoneornil(L, 5) ? 1 : lua_toboolean(L, 5);
    mw_tensor *v = mwl_newtensor(L);
    mw_tensor *i = mwl_newtensor(L);
    CHECK(mw_topk(v, i, a, k, d, largest, sorted));
    return ret(L, 2);
}

/* x:sort(dim = -1, descending = false) -> values, indices */
static int m_sort(lua_State *L) {
    static const char *const NAMES[] = {"dim", "descending", NULL};
    kwargs(L, 2, "sort", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int d = opt_dim(L, 2, -1, "sort");
    int desc = lua_toboolean(L, 3);
    mw_tensor *v = mwl_newtensor(L);
    mw_tensor *i = mwl_newtensor(L);
    CHECK(mw_sort(v, i, a, d, desc));
    return ret(L, 2);
}

static int m_nonzero(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_nonzero(out, a));
    return ret(L, 1);
}

/* ================================================================ indexing and joining */

static int m_index_select(lua_State *L) {
    static const char *const NAMES[] = {"dim", "index", NULL};
    kwargs(L, 2, "index_select", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int d = check_int(L, 2, "index_select", "dim");
    mw_tensor *idx = mwl_checktensor(L, 3);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_index_select(out, a, d, idx));
    return ret(L, 1);
}

static int m_gather(lua_State *L) {
    static const char *const NAMES[] = {"dim", "index", NULL};
    kwargs(L, 2, "gather", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int d = check_int(L, 2, "gather", "dim");
    mw_tensor *idx = mwl_checktensor(L, 3);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_gather(out, a, d, idx));
    return ret(L, 1);
}

static int m_scatter_add_(lua_State *L) {
    static const char *const NAMES[] = {"dim", "index", "src", NULL};
    kwargs(L, 2, "scatter_add_", NAMES);
    mw_tensor *a = mwl_checktensor(L, 1);
    int d = check_int(L, 2, "scatter_add_", "dim");
    mw_tensor *idx = mwl_checktensor(L, 3);
    mw_tensor *src = mwl_checktensor(L, 4);
    CHECK(mw_tensor_scatter_add_(a, d, idx, src));
    lua_settop(L, 1);
    return 1;
}

static int m_masked_select(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *m = mwl_checktensor(L, 2);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_masked_select(out, a, m));
    return ret(L, 1);
}

/* a Lua list of tensors at idx (or the varargs from idx) as an array of pointers kept in a
 * userdata pushed on the stack */
static const mw_tensor **tensor_list(lua_State *L, int idx, const char *op, int *n) {
    lua_Integer len = (lua_Integer)luaL_len(L, idx);
    if (len < 1) luaL_error(L, "%s: expected a non-empty list of tensors", op);
    if (len > INT_MAX / 2) luaL_error(L, "%s: too many tensors", op);
    const mw_tensor **ts = (const mw_tensor **)lua_newuserdatauv(L, sizeof(mw_tensor *) * (size_t)len, 0);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, idx, i);
        mw_tensor *t = mwl_totensor(L, -1);
        if (!t || !t->storage)
            luaL_error(L, "%s: item %I of the list is a %s, expected a tensor", op, i - 1, luaL_typename(L, -1));
        ts[i - 1] = t; /* anchored by the list */
        lua_pop(L, 1);
    }
    *n = (int)len;
    return ts;
}

static int join(lua_State *L, int stack) {
    const char *op = stack ? "stack" : "cat";
    static const char *const NAMES[] = {"tensors", "dim", NULL};
    kwargs(L, 1, op, NAMES);
    luaL_checktype(L, 1, LUA_TTABLE);
    int d = opt_dim(L, 2, 0, op);
    int n;
    const mw_tensor **ts = tensor_list(L, 1, op, &n);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(stack ? mw_tensor_stack(out, n, (const mw_tensor *const *)ts, d)
                : mw_tensor_cat(out, n, (const mw_tensor *const *)ts, d));
    return ret(L, 1);
}
static int l_cat(lua_State *L) { return join(L, 0); }
static int l_stack(lua_State *L) { return join(L, 1); }

/* ---------------------------------------------------------------- x[key] */

/* Applies the index key at kidx to the tensor at tidx; pushes the result.
 *   number      selects along dim 0 (the dim goes away)
 *   tensor      int64: index_select along dim 0 (its shape replaces the dim); bool: masked
 *   table       one item per dim, left to right: a number selects, {} keeps the dim,
 *               {a, b} is the half-open range a..b, {a} is a..end, {a, b, step} strides,
 *               "..." stands for as many {} as needed, an int64 tensor index-selects.
 * For assignment (assign = 1) the result must be a view; a final tensor item is left for the
 * caller: *tdim receives its dim and the tensor is pushed after the view. */
static int apply_items(lua_State *L, int tidx, int kidx, int assign, int *tdim);

static void range_view(lua_State *L, int cur, int d, int item) {
    mw_tensor *t = mwl_checktensor(L, cur);
    int64_t size = t->shape[d];
    lua_Integer n = (lua_Integer)lua_rawlen(L, item);
    int64_t a = 0, b = size, step = 1;
    if (n >= 1) { lua_rawgeti(L, item, 1); a = check_i64(L, -1, "index", "range start"); lua_pop(L, 1); }
    if (n >= 2) { lua_rawgeti(L, item, 2); b = check_i64(L, -1, "index", "range end"); lua_pop(L, 1); }
    if (n >= 3) { lua_rawgeti(L, item, 3); step = check_i64(L, -1, "index", "range step"); lua_pop(L, 1); }
    if (n > 3) luaL_error(L, "index: a range has at most 3 items {start, end, step}, got %I", n);
    if (step <= 0) luaL_error(L, "index: range step must be positive, got %I", (lua_Integer)step);
    /* as Python slices: negatives count from the end, then clamp into [0, size] */
    if (a < 0) a += size;
    if (b < 0) b += size;
    if (a < 0) a = 0;
    if (a > size) a = size;
    if (b < a) b = a;
    if (b > size) b = size;
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_narrow(out, t, d, a, b - a));
    if (step > 1) { /* ceil((b - a) / step) items; with one item the stride does not matter */
        out->shape[d] = b == a ? 0 : 1 + (b - a - 1) / step;
        if (out->shape[d] > 1) out->stride[d] *= step; /* <= stride * (b - a): no overflow */
    }
    lua_replace(L, cur);
}

/* index_select with an index tensor of any shape: its shape replaces dim d */
static void tensor_index(lua_State *L, int cur, int d, int item) {
    mw_tensor *t = mwl_checktensor(L, cur);
    mw_tensor *idx = mwl_checktensor(L, item);
    if (idx->dtype != MW_I64) {
        char b[SHAPEBUF];
        luaL_error(L, "index: an index tensor must be int64 (bool masks index the whole tensor), got %s %s",
                   mw_dtype_name(idx->dtype), shape_str(b, sizeof b, idx));
    }
    if (idx->ndim == 0) {
        mw_tensor *out = mwl_newtensor(L);
        CHECK(mw_tensor_select(out, t, d, *(int64_t *)mw_tensor_data(idx)));
        lua_replace(L, cur);
        return;
    }
    if (t->ndim - 1 + idx->ndim > MW_MAXDIM) luaL_error(L, "index: result would have more than %d dims", MW_MAXDIM);
    mw_tensor *flat = mwl_newtensor(L);
    int64_t m = -1;
    CHECK(mw_tensor_reshape(flat, idx, 1, &m));
    mw_tensor *sel = mwl_newtensor(L);
    CHECK(mw_tensor_index_select(sel, t, d, flat));
    int64_t shape[MW_MAXDIM];
    int nd = 0;
    for (int i = 0; i < d; i++) shape[nd++] = t->shape[i];
    for (int i = 0; i < idx->ndim; i++) shape[nd++] = idx->shape[i];
    for (int i = d + 1; i < t->ndim; i++) shape[nd++] = t->shape[i];
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_tensor_view(out, sel, nd, shape));
    lua_replace(L, cur);
    lua_pop(L, 2);
}

static int apply_items(lua_State *L, int tidx, int kidx, int assign, int *tdim) {
    char b[SHAPEBUF];
    mw_tensor *x = mwl_checktensor(L, tidx);
    *tdim = -1;
    lua_pushvalue(L, tidx);
    int cur = lua_gettop(L);
    int kt = lua_type(L, kidx);
    if (kt == LUA_TNUMBER) {
        mw_tensor *out = mwl_newtensor(L);
        if (x->ndim == 0) return luaL_error(L, "index: cannot index a 0-dim tensor with a number");
        CHECK(mw_tensor_select(out, x, 0, check_i64(L, kidx, "index", "index")));
        lua_replace(L, cur);
        return cur;
    }
    if (kt == LUA_TUSERDATA && mwl_totensor(L, kidx)) {
        mw_tensor *k = mwl_checktensor(L, kidx);
        if (k->dtype == MW_BOOL) {
            if (assign) { *tdim = -2; return cur; } /* the caller handles masks */
            mw_tensor *out = mwl_newtensor(L);
            CHECK(mw_tensor_masked_select(out, x, k));
            lua_replace(L, cur);
            return cur;
        }
        if (x->ndim == 0) return luaL_error(L, "index: cannot index a 0-dim tensor with a tensor");
        if (assign) {
            *tdim = 0;
            lua_pushvalue(L, kidx);
            lua_newtable(L); /* the row key: nothing more */
            return cur;
        }
        tensor_index(L, cur, 0, kidx);
        return cur;
    }
    if (kt != LUA_TTABLE)
        return luaL_error(L, "index: a tensor is indexed by a number, a table of items or a tensor, got %s",
                          luaL_typename(L, kidx));
    lua_Integer n = (lua_Integer)lua_rawlen(L, kidx);
    /* count the items that consume a dim, to expand "..." */
    int consuming = 0, ellipsis = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, kidx, i);
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *it = lua_tostring(L, -1);
            if (strcmp(it, "None") == 0) { lua_pop(L, 1); continue; } /* a new axis consumes nothing */
            if (strcmp(it, "...") != 0)
                return luaL_error(L, "index: unknown item '%s' (\"...\" for all remaining dims, \"None\" for a new axis)", it);
            if (ellipsis++) return luaL_error(L, "index: only one \"...\" allowed");
        } else {
            consuming++;
        }
        lua_pop(L, 1);
    }
    if (consuming > x->ndim)
        return luaL_error(L, "index: %d items for a tensor of shape %s", consuming, shape_str(b, sizeof b, x));
    int d = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, kidx, i);
        int item = lua_gettop(L);
        int it = lua_type(L, item);
        mw_tensor *t = mwl_checktensor(L, cur);
        if (it == LUA_TNUMBER) {
            mw_tensor *out = mwl_newtensor(L);
            CHECK(mw_tensor_select(out, t, d, check_i64(L, item, "index", "index")));
            lua_replace(L, cur);
        } else if (it == LUA_TTABLE && !mwl_totensor(L, item)) {
            range_view(L, cur, d, item);
            d++;
        } else if (it == LUA_TSTRING && strcmp(lua_tostring(L, item), "None") == 0) {
            mw_tensor *out = mwl_newtensor(L);
            CHECK(mw_tensor_unsqueeze(out, t, d));
            lua_replace(L, cur);
            d++;
        } else if (it == LUA_TSTRING) {
            d += x->ndim - consuming;
        } else if (it == LUA_TUSERDATA && mwl_totensor(L, item)) {
            mw_tensor *k = mwl_checktensor(L, item);
            if (k->dtype == MW_BOOL)
                return luaL_error(L, "index: a bool mask must be the whole key (x[mask]), not an item");
            if (assign) {
                /* the caller assigns row by row along d; the items after this one are handed
                 * over as a key for each row: d x {} (the row keeps dims < d) + the rest */
                lua_createtable(L, (int)(d + n - i), 0);
                lua_Integer r = 0;
                for (int j = 0; j < d; j++) {
                    lua_newtable(L);
                    lua_rawseti(L, -2, ++r);
                }
                for (lua_Integer j = i + 1; j <= n; j++) {
                    lua_rawgeti(L, kidx, j);
                    if (lua_type(L, -1) == LUA_TSTRING) { /* "..." keeps its meaning in the row */
                        lua_pop(L, 1);
                        for (int e = 0; e < x->ndim - consuming; e++) {
                            lua_newtable(L);
                            lua_rawseti(L, -2, ++r);
                        }
                        continue;
                    }
                    lua_rawseti(L, -2, ++r);
                }
                *tdim = d;
                return cur; /* above the view: the index tensor (item), then the row key */
            }
            tensor_index(L, cur, d, item);
            d += k->ndim;
        } else {
            return luaL_error(L, "index: item %I is a %s (numbers, {ranges}, \"...\" or tensors)", i - 1,
                              luaL_typename(L, item));
        }
        lua_pop(L, 1); /* the item */
    }
    return cur;
}

/* a name (method or field) rather than a subscript; "None" is a subscript */
static int is_name(const char *k) {
    if (!(*k == '_' || (*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z'))) return 0;
    for (const char *p = k; *p; p++)
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) return 0;
    return strcmp(k, "None") != 0;
}

/* an optional integer in s[0..n) (spaces around allowed); 0 when empty, 1 when read, -1 when bad */
static int subscript_int(const char *s, size_t n, int64_t *v) {
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (n == 0) return 0;
    size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (i == n || n - i > 18) return -1; /* 18 digits stay far from int64 overflow */
    int64_t r = 0;
    for (size_t j = i; j < n; j++) {
        if (s[j] < '0' || s[j] > '9') return -1;
        r = r * 10 + (s[j] - '0');
    }
    *v = s[0] == '-' ? -r : r;
    return 1;
}

/* Python's subscript grammar, as torch reads it, turned into the table key of apply_items:
 * x[":, 1:"], x["0, ..., -1"], x["::2"], x["None, 2"]. Items: an integer (selects), start:stop
 * or start:stop:step with any part left out (step > 0), "...", None. Pushes the table. */
static void parse_subscript(lua_State *L, const char *s) {
    lua_newtable(L);
    int key = lua_gettop(L);
    lua_Integer n = 0;
    const char *p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *a = p;
        size_t m = len;
        while (m && (*a == ' ' || *a == '\t')) a++, m--;
        while (m && (a[m - 1] == ' ' || a[m - 1] == '\t')) m--;
        if (m == 0) {
            if (!end && n > 0) break; /* x["0,"] is x[0, ] in Python */
            luaL_error(L, "index: empty item in the subscript \"%s\"", s);
        }
        int64_t v;
        const char *c1 = memchr(a, ':', m);
        if (m == 3 && memcmp(a, "...", 3) == 0) {
            lua_pushliteral(L, "...");
        } else if (m == 4 && memcmp(a, "None", 4) == 0) {
            lua_pushliteral(L, "None");
        } else if (!c1) {
            if (subscript_int(a, m, &v) != 1)
                luaL_error(L, "index: cannot read '%s' in the subscript \"%s\" (integers, start:stop:step, ..., None)",
                           lua_pushlstring(L, a, m), s);
            lua_pushinteger(L, v);
        } else {
            /* start:stop[:step] */
            const char *c2 = memchr(c1 + 1, ':', (size_t)(a + m - c1 - 1));
            const char *e2 = c2 ? c2 : a + m;
            int64_t start = 0, stop = INT64_MAX, step = 1;
            int r1 = subscript_int(a, (size_t)(c1 - a), &start);
            int r2 = subscript_int(c1 + 1, (size_t)(e2 - c1 - 1), &stop);
            int r3 = c2 ? subscript_int(c2 + 1, (size_t)(a + m - c2 - 1), &step) : 0;
            if (r1 < 0 || r2 < 0 || r3 < 0 || (c2 && memchr(c2 + 1, ':', (size_t)(a + m - c2 - 1))))
                luaL_error(L, "index: cannot read '%s' in the subscript \"%s\" (integers, start:stop:step, ..., None)",
                           lua_pushlstring(L, a, m), s);
            if (step <= 0)
                luaL_error(L, "index: step must be greater than zero in '%s' of the subscript \"%s\"",
                           lua_pushlstring(L, a, m), s);
            lua_createtable(L, 3, 0);
            lua_pushinteger(L, start);
            lua_rawseti(L, -2, 1);
            lua_pushinteger(L, stop);
            lua_rawseti(L, -2, 2);
            lua_pushinteger(L, step);
            lua_rawseti(L, -2, 3);
        }
        lua_rawseti(L, key, ++n);
        if (!end) break;
        p = end + 1;
    }
}

static int m_index(lua_State *L) {
    int kt = lua_type(L, 2);
    if (kt == LUA_TSTRING) {
        const char *k = lua_tostring(L, 2);
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
        if (strcmp(k, "T") == 0) return prop_T(L, 1);
        if (is_name(k)) return 1; /* nil: unknown method name, as a table would answer */
        lua_pop(L, 1);
        parse_subscript(L, k);
        lua_replace(L, 2);
    }
    int tdim;
    int cur = apply_items(L, 1, 2, 0, &tdim);
    lua_settop(L, cur);
    return ret(L, 1);
}

/* the value v at vidx broadcast into the view at cur */
static void assign_into(lua_State *L, int cur, int vidx) {
    mw_tensor *dst = mwl_checktensor(L, cur);
    if (mwl_totensor(L, vidx)) CHECK(mw_tensor_copy_(dst, mwl_checktensor(L, vidx)));
    else CHECK(mw_tensor_fill_(dst, check_num(L, vidx, "index assignment", "value")));
}

/* x[mask] = v: a number fills; a tensor gives its elements in order to the true positions */
static void assign_masked(lua_State *L, int cur, int midx, int vidx) {
    mw_tensor *x = mwl_checktensor(L, cur);
    mw_tensor *m = mwl_checktensor(L, midx);
    char b1[SHAPEBUF], b2[SHAPEBUF];
    if (!mwl_totensor(L, vidx)) {
        CHECK(mw_tensor_masked_fill_(x, m, check_num(L, vidx, "index assignment", "value")));
        return;
    }
    if (m->ndim != x->ndim || memcmp(m->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim) != 0)
        luaL_error(L, "index assignment: mask %s does not match the tensor %s", shape_str(b1, sizeof b1, m),
                   shape_str(b2, sizeof b2, x));
    int64_t n = mw_tensor_numel(x), count = 0;
    for (int64_t k = 0; k < n; k++) count += elem_true(m->dtype, elem_ptr(m, k));
    mw_tensor *v = mwl_checktensor(L, vidx);
    mw_tensor *vc = mwl_newtensor(L);
    CHECK(mw_tensor_to_dtype(vc, v, x->dtype)); /* contiguous, x's dtype */
    int64_t nv = mw_tensor_numel(vc);
    if (nv != count && nv != 1)
        luaL_error(L, "index assignment: mask has %I true elements, value %s has %I",
                   (lua_Integer)count, shape_str(b1, sizeof b1, v), (lua_Integer)nv);
    size_t es = mw_dtype_size(x->dtype);
    const char *src = (const char *)mw_tensor_data(vc);
    int64_t j = 0;
    for (int64_t k = 0; k < n; k++) {
        if (!elem_true(m->dtype, elem_ptr(m, k))) continue;
        memcpy(elem_ptr(x, k), src + (nv == 1 ? 0 : j) * (int64_t)es, es);
        j++;
    }
    lua_pop(L, 1);
}

/* x[{..., idx, rest...}] = v: for each k, the row view[..., idx[k], ...] narrowed by the rest
 * of the key (at ridx) gets slice k (along dim d) of v broadcast to the whole target */
static void assign_indexed(lua_State *L, int cur, int d, int iidx, int ridx, int vidx) {
    mw_tensor *idx = mwl_checktensor(L, iidx);
    char b[SHAPEBUF];
    if (idx->dtype != MW_I64 || idx->ndim > 1)
        luaL_error(L, "index assignment: the index must be a 0-D or 1-D int64 tensor, got %s %s",
                   mw_dtype_name(idx->dtype), shape_str(b, sizeof b, idx));
    int64_t n = mw_tensor_numel(idx);
    const int64_t *ip = (const int64_t *)mw_tensor_data(idx);
    int vt = mwl_totensor(L, vidx) != NULL;
    int vexp = 0;
    for (int64_t k = 0; k < n; k++) {
        int top = lua_gettop(L);
        int64_t i = ip[k * (idx->ndim ? idx->stride[0] : 0)];
        mw_tensor *row = mwl_newtensor(L);
        CHECK(mw_tensor_select(row, mwl_checktensor(L, cur), d, i));
        int tdim;
        int sub = apply_items(L, lua_gettop(L), ridx, 1, &tdim);
        if (tdim != -1) luaL_error(L, "index assignment: only one index tensor (or mask) per key");
        mw_tensor *target = mwl_checktensor(L, sub);
        if (vt && vexp == 0) {
            /* v broadcast to the target's shape with n inserted at d, computed once */
            mw_tensor *v = mwl_checktensor(L, vidx);
            int nd = target->ndim + 1;
            int64_t shape[MW_MAXDIM];
            if (nd > MW_MAXDIM || v->ndim > nd)
                luaL_error(L, "index assignment: value %s does not fit the target", shape_str(b, sizeof b, v));
            for (int j = 0, t = 0; j < nd; j++) shape[j] = j == d ? n : target->shape[t++];
            mw_tensor *vv = mwl_newtensor(L);
            mw_tensor_share(vv, v);
            while (vv->ndim < nd) {
                mw_tensor *u = mwl_newtensor(L);
                CHECK(mw_tensor_unsqueeze(u, vv, 0));
                lua_replace(L, -2);
                vv = u;
            }
            mw_tensor *e = mwl_newtensor(L);
            CHECK(mw_tensor_expand(e, vv, nd, shape));
            lua_remove(L, -2);
            lua_replace(L, vidx); /* the expanded value takes the value's slot */
            vexp = vidx;
        }
        if (vt) {
            mw_tensor *vrow = mwl_newtensor(L);
            CHECK(mw_tensor_select(vrow, mwl_checktensor(L, vexp), d, k));
            CHECK(mw_tensor_copy_(target, vrow));
        } else {
            CHECK(mw_tensor_fill_(target, check_num(L, vidx, "index assignment", "value")));
        }
        lua_settop(L, top);
    }
}

static int m_newindex(lua_State *L) {
    if (lua_type(L, 2) == LUA_TSTRING) {
        if (is_name(lua_tostring(L, 2))) return luaL_error(L, "cannot set field '%s' of a tensor", lua_tostring(L, 2));
        parse_subscript(L, lua_tostring(L, 2));
        lua_replace(L, 2);
    }
    mwl_checktensor(L, 1);
    if (!mwl_totensor(L, 3) && lua_type(L, 3) != LUA_TNUMBER && lua_type(L, 3) != LUA_TBOOLEAN)
        return luaL_error(L, "index assignment: value must be a number or a tensor, got %s", luaL_typename(L, 3));
    /* x[k] = x:t(), x[x] = v: a value or key sharing memory with x is read from a copy (torch) */
    for (int i = 3; i >= 2; i--) {
        mw_tensor *v = mwl_totensor(L, i);
        if (v && v->storage && mw_tensor_overlap(mwl_checktensor(L, 1), v)) {
            mw_tensor *c = mwl_newtensor(L);
            CHECK(mw_tensor_clone(c, v));
            lua_replace(L, i);
        }
    }
    int tdim;
    int cur = apply_items(L, 1, 2, 1, &tdim);
    if (tdim == -2) assign_masked(L, cur, 2, 3);
    else if (tdim >= 0) assign_indexed(L, cur, tdim, cur + 1, cur + 2, 3);
    else assign_into(L, cur, 3);
    return 0;
}

/* ================================================================ linear algebra */

static int l_matmul(lua_State *L) {
    /* Lua has no matmul event; objects that take part in matmul (FactoredMatrix) say so with a
     * __matmul metafield */
    if (defer_to_other(L, 1, "__matmul") || defer_to_other(L, 2, "__matmul")) return 1;
    mw_tensor *a = mwl_checktensor(L, 1), *b = mwl_checktensor(L, 2);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_matmul(out, a, b));
    return ret(L, 1);
}

static int l_outer(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1), *b = mwl_checktensor(L, 2);
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_outer(out, a, b));
    return ret(L, 1);
}

/* mi.einsum(spec, t1, t2, ...) or mi.einsum(spec, {t1, t2, ...}) */
static int l_einsum(lua_State *L) {
    const char *spec = mwl_checkname(L, 1, "einsum", "pattern");
    int n;
    const mw_tensor **ts;
    if (lua_type(L, 2) == LUA_TTABLE && !mwl_totensor(L, 2)) {
        ts = tensor_list(L, 2, "einsum", &n);
    } else {
        n = lua_gettop(L) - 1;
        if (n < 1) return luaL_error(L, "einsum: expected tensors after the spec");
        ts = (const mw_tensor **)lua_newuserdatauv(L, sizeof(mw_tensor *) * (size_t)n, 0);
        for (int i = 0; i < n; i++) ts[i] = mwl_checktensor(L, i + 2);
    }
    mw_tensor *out = mwl_newtensor(L);
    CHECK(mw_einsum(out, spec, n, (const mw_tensor *const *)ts));
    return ret(L, 1);
}

static int l_svd(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *u = mwl_newtensor(L), *s = mwl_newtensor(L), *vh = mwl_newtensor(L);
    CHECK(mw_svd(u, s, vh, a));
    return ret(L, 3);
}

static int l_eigvals(lua_State *L) {
    mw_tensor *a = mwl_checktensor(L, 1);
    mw_tensor *re = mwl_newtensor(L), *im = mwl_newtensor(L);
    CHECK(mw_eigvals(re, im, a));
    return ret(L, 2);
}

/* bytes held by tensor storages allocated by the core (not counting mmapped weights) */
static int l_live_tensor_bytes(lua_State *L) {
    lua_pushinteger(L, mw_storage_live_bytes());
    return 1;
}

/* mi.release_memory(): gives back the memory kept for reuse (freed large tensors, the heap's free
 * blocks: see keep_heap in lmodule.c); returns the bytes of large tensors that were kept */
static int l_release_memory(lua_State *L) {
    if (lua_gettop(L) != 0) return luaL_error(L, "release_memory: takes no arguments (write mi.release_memory())");
    int64_t kept = mw_storage_kept_bytes();
    mw_storage_trim();
    malloc_trim(0);
    lua_pushinteger(L, kept);
    return 1;
}

/* mi.set_num_threads(n) / mi.get_num_threads(): torch's names; the threads of the matrix
 * products (OpenBLAS) and of the work between them (core/parallel.h) */
static int l_set_num_threads(lua_State *L) {
    if (lua_gettop(L) != 1) return luaL_error(L, "set_num_threads: takes one number (write mi.set_num_threads(n))");
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 1 || n > 64) return luaL_error(L, "set_num_threads: n must be 1 to 64, got %I", n);
    mw_set_num_threads((int)n);
    return 0;
}
static int l_get_num_threads(lua_State *L) {
    if (lua_gettop(L) != 0) return luaL_error(L, "get_num_threads: takes no arguments (write mi.get_num_threads())");
    lua_pushinteger(L, mw_get_num_threads());
    return 1;
}

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, mwl_totensor(L, 1) != NULL);
    return 1;
}

/* ================================================================ registration */

typedef struct { const char *name; int op; } named_op;

static const named_op BINOPS[] = {
    {"add", MW_ADD}, {"sub", MW_SUB}, {"mul", MW_MUL}, {"div", MW_DIV}, {"pow", MW_POW},
    {"maximum", MW_MAXIMUM}, {"minimum", MW_MINIMUM}, {"eq", MW_EQ}, {"ne", MW_NE},
    {"lt", MW_LT}, {"le", MW_LE}, {"gt", MW_GT}, {"ge", MW_GE},
    {"logical_and", MW_AND}, {"logical_or", MW_OR}, {NULL, 0}};

static const named_op UNOPS[] = {
    {"neg", MW_NEG}, {"exp", MW_EXP}, {"log", MW_LOG}, {"sqrt", MW_SQRT}, {"abs", MW_ABS},
    {"tanh", MW_TANH}, {"relu", MW_RELU}, {"gelu_new", MW_GELU_NEW}, {"sigmoid", MW_SIGMOID},
    {"logical_not", MW_NOT}, {"sin", MW_SIN}, {"cos", MW_COS}, {"floor", MW_FLOOR},
    {"ceil", MW_CEIL}, {"round", MW_ROUND}, {"sign", MW_SIGN}, {NULL, 0}};

static const named_op REDOPS[] = {
    {"sum", MW_SUM}, {"mean", MW_MEAN}, {"prod", MW_PROD}, {"amax", MW_AMAX}, {"amin", MW_AMIN},
    {"logsumexp", MW_LOGSUMEXP}, {"var", MW_VAR}, {"std", MW_STD}, {NULL, 0}};

static const luaL_Reg METHODS[] = {
    {"shape", m_shape}, {"size", m_size}, {"stride", m_stride}, {"storage_offset", m_storage_offset}, {"data_ptr", m_data_ptr},
    {"dim", m_dim}, {"numel", m_numel}, {"dtype", m_dtype}, {"is_contiguous", m_is_contiguous},
    {"shares_storage", m_shares_storage}, {"item", m_item}, {"totable", m_totable},
    {"float", m_float}, {"long", m_long}, {"bool", m_bool}, {"to", m_to},
    {"all", m_all}, {"any", m_any},
    {"narrow", m_narrow}, {"select", m_select}, {"transpose", m_transpose}, {"t", m_t},
    {"permute", m_permute}, {"view", m_view}, {"reshape", m_reshape}, {"expand", m_expand},
    {"unsqueeze", m_unsqueeze}, {"squeeze", m_squeeze}, {"diagonal", m_diagonal},
    {"split", m_split}, {"contiguous", m_contiguous}, {"clone", m_clone},
    {"tril", l_tril}, {"triu", l_triu},
    {"clamp", m_clamp}, {"clamp_", m_clamp_}, {"where", m_where},
    {"masked_fill", m_masked_fill}, {"masked_fill_", m_masked_fill_},
    {"fill_", m_fill_}, {"zero_", m_zero_}, {"copy_", m_copy_},
    {"norm", m_norm}, {"max", m_max}, {"min", m_min}, {"argmax", m_argmax}, {"argmin", m_argmin},
    {"softmax", m_softmax}, {"log_softmax", m_log_softmax}, {"cumsum", m_cumsum},
    {"topk", m_topk}, {"sort", m_sort}, {"nonzero", m_nonzero},
    {"index_select", m_index_select}, {"gather", m_gather}, {"scatter_add_", m_scatter_add_},
    {"masked_select", m_masked_select},
    {"matmul", l_matmul}, {"outer", l_outer},
    {NULL, NULL}};

static const luaL_Reg FUNCTIONS[] = {
    {"tensor", l_tensor}, {"zeros", l_zeros}, {"ones", l_ones}, {"full", l_full},
    {"arange", l_arange}, {"linspace", l_linspace}, {"eye", l_eye}, {"tril", l_tril},
    {"triu", l_triu}, {"rand", l_rand}, {"randn", l_randn}, {"randint", l_randint},
    {"manual_seed", l_manual_seed}, {"Generator", l_generator}, {"is_tensor", l_is_tensor},
    {"matmul", l_matmul}, {"outer", l_outer}, {"einsum", l_einsum}, {"cat", l_cat},
    {"stack", l_stack}, {"svd", l_svd}, {"eigvals", l_eigvals}, {"where", l_where},
    {"live_tensor_bytes", l_live_tensor_bytes}, {"release_memory", l_release_memory}, {"_check_opts", l_check_opts}, {"_kwargs", l_kwargs},
    {"set_num_threads", l_set_num_threads}, {"get_num_threads", l_get_num_threads},
    {NULL, NULL}};

/* x < y, x <= y (and so x > y, x >= y, which Lua turns into y < x, y <= x) must give a Lua
 * boolean, which a tensor comparison is not: say which method to write. Lua has swapped the
 * operands of > and >=, so a number on the left means the tensor was on the left in the source. */
static int compare_error(lua_State *L, const char *op, const char *method, const char *swapped,
                         const char *swapped_method) {
    int tensor_first = mwl_totensor(L, 1) != NULL;
    int other = tensor_first ? 2 : 1;
    const char *o = lua_type(L, other) == LUA_TNUMBER ? lua_tostring(L, other) : "y";
    if (!tensor_first) op = swapped, method = swapped_method;
    return luaL_error(L, "tensor comparison: Lua cannot return a tensor from %s; write x:%s(%s) for x %s %s "
                      "(methods lt, le, gt, ge, eq, ne give bool tensors)", op, method, o, op, o);
}
static int mm_lt(lua_State *L) { return compare_error(L, "<", "lt", ">", "gt"); }
static int mm_le(lua_State *L) { return compare_error(L, "<=", "le", ">=", "ge"); }

static int mm_add(lua_State *L) { return binary_any(L, MW_ADD); }
static int mm_sub(lua_State *L) { return binary_any(L, MW_SUB); }
static int mm_mul(lua_State *L) { return binary_any(L, MW_MUL); }
static int mm_div(lua_State *L) { return binary_any(L, MW_DIV); }
static int mm_pow(lua_State *L) { return binary_any(L, MW_POW); }

static void add_ops(lua_State *L, const named_op *ops, lua_CFunction fn, lua_CFunction fn_) {
    for (const named_op *o = ops; o->name; o++) {
        lua_pushinteger(L, o->op);
        lua_pushcclosure(L, fn, 1);
        lua_setfield(L, -2, o->name);
        if (fn_) {   /* upvalues: the op, and the in-place name for messages ("add_") */
            lua_pushfstring(L, "%s_", o->name);
            lua_pushinteger(L, o->op);
            lua_pushvalue(L, -2);
            lua_pushcclosure(L, fn_, 2);
            lua_settable(L, -3);
        }
    }
}

void mwl_open_tensor(lua_State *L) {
    int mod = lua_gettop(L);
    /* the methods table: also the module's `Tensor`, so Lua code can add methods */
    lua_newtable(L);
    luaL_setfuncs(L, METHODS, 0);
    add_ops(L, BINOPS, l_binary, l_binary_);
    add_ops(L, UNOPS, l_unary, l_unary_);
    add_ops(L, REDOPS, l_reduce, NULL);
    int methods = lua_gettop(L);

    luaL_newmetatable(L, MWL_TENSOR);
    static const luaL_Reg META[] = {
        {"__tostring", m_tostring}, {"__gc", m_gc}, {"__close", m_gc}, {"__len", m_len},
        {"__newindex", m_newindex}, {"__add", mm_add}, {"__sub", mm_sub}, {"__mul", mm_mul},
        {"__div", mm_div}, {"__pow", mm_pow}, {"__unm", mm_unm}, {"__lt", mm_lt}, {"__le", mm_le},
        {NULL, NULL}};
    luaL_setfuncs(L, META, 0);
    lua_pushvalue(L, methods);
    lua_pushcclosure(L, m_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_setfield(L, mod, "Tensor");

    luaL_newmetatable(L, MWL_GENERATOR);
    static const luaL_Reg GEN[] = {{"manual_seed", gen_manual_seed}, {"initial_seed", gen_initial_seed},
                                   {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, GEN, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gen_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_setfuncs(L, FUNCTIONS, 0);
    lua_pushliteral(L, "float32");
    lua_setfield(L, mod, "float32");
    lua_pushliteral(L, "int64");
    lua_setfield(L, mod, "int64");
    lua_pushliteral(L, "bool");
    lua_setfield(L, mod, "bool");

    mwl_open_json(L);
}
