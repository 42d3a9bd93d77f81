/* ljson.c - mi.json: JSON text <-> Lua values, through cJSON.
 *
 *   mi.json.decode(str)            objects -> tables, arrays -> 1-based lists, null -> mi.json.null,
 *                                  integral numbers within 2^53 -> Lua integers
 *   mi.json.encode(v [, opts])     opts.indent = true (2 spaces) or a number of spaces;
 *                                  object keys come out sorted, so the text is reproducible
 *   mi.json.null                   the value standing for JSON null
 *   mi.json.object([t])            marks t (default {}) to encode as an object even when empty
 *
 * A Lua table is an array when its keys are exactly 1..n (an empty table is []), otherwise an
 * object whose keys must be strings or integers (integers become their decimal text). Anything
 * with a `totable` method (tensors) is encoded as what totable() returns. NaN and infinities,
 * strings holding a zero byte, functions and cycles are errors that say where: "$.a[2]".
 * Invalid JSON text is an error giving line and column.
 *
 * The cJSON trees live in a userdata with __gc, so a Lua error in the middle frees them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "mwl.h"

#define JSON_MAXDEPTH 500
#define JSON_BOX "miwb.json.box"

static const char NULL_KEY = 'n';   /* registry: the json.null sentinel */
static const char OBJECT_KEY = 'o'; /* registry: the metatable marking "encode as object" */

typedef struct { cJSON *root; } json_box;

static int box_gc(lua_State *L) {
    json_box *b = (json_box *)luaL_checkudata(L, 1, JSON_BOX);
    if (b->root) cJSON_Delete(b->root);
    b->root = NULL;
    return 0;
}

static json_box *new_box(lua_State *L) {
    json_box *b = (json_box *)lua_newuserdatauv(L, sizeof *b, 0);
    b->root = NULL;
    luaL_setmetatable(L, JSON_BOX);
    return b;
}

/* ------------------------------------------------------------ decode */

static void push_json(lua_State *L, const cJSON *j, int depth) {
    luaL_checkstack(L, 4, "json.decode: nesting too deep");
    if (cJSON_IsNull(j)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &NULL_KEY);
    } else if (cJSON_IsFalse(j)) {
        lua_pushboolean(L, 0);
    } else if (cJSON_IsTrue(j)) {
        lua_pushboolean(L, 1);
    } else if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) <= 9007199254740992.0) lua_pushinteger(L, (lua_Integer)d);
        else lua_pushnumber(L, d);
    } else if (cJSON_IsString(j)) {
        lua_pushstring(L, j->valuestring);
    } else if (cJSON_IsArray(j)) {
        lua_createtable(L, cJSON_GetArraySize(j), 0);
        lua_Integer i = 1;
        for (const cJSON *c = j->child; c; c = c->next) {
            push_json(L, c, depth + 1);
            lua_rawseti(L, -2, i++);
        }
    } else if (cJSON_IsObject(j)) {
        lua_createtable(L, 0, cJSON_GetArraySize(j));
        for (const cJSON *c = j->child; c; c = c->next) {
            lua_pushstring(L, c->string);
            push_json(L, c, depth + 1);
            lua_rawset(L, -3);
        }
        if (j->child == NULL) { /* keep {} an object when encoded again */
            lua_rawgetp(L, LUA_REGISTRYINDEX, &OBJECT_KEY);
            lua_setmetatable(L, -2);
        }
    } else {
        luaL_error(L, "json.decode: unexpected cJSON node type %d", j->type);
    }
}

static int json_decode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    json_box *b = new_box(L);
    const char *end = NULL;
    b->root = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (b->root == NULL) {
        /* end points at (or near) the offending character */
        size_t pos = (end && end >= s && end <= s + len) ? (size_t)(end - s) : 0;
        int line = 1, col = 1;
        for (size_t i = 0; i < pos; i++) {
            if (s[i] == '\n') { line++; col = 1; }
            else col++;
        }
        if (len == 0) return luaL_error(L, "json.decode: empty input");
        char near[24];
        size_t n = len - pos < 16 ? len - pos : 16;
        memcpy(near, s + pos, n);
        near[n] = '\0';
        for (size_t i = 0; i < n; i++)
            if (near[i] == '\n' || near[i] == '\r' || near[i] == '\t') near[i] = ' ';
        return luaL_error(L, "json.decode: invalid JSON at line %d, column %d (byte %d) near '%s'",
                          line, col, (int)pos + 1, near);
    }
    /* trailing text after the value (other than white space) is an error too */
    const char *p = end;
    while (p < s + len && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    if (p < s + len && *p != '\0') {
        int line = 1, col = 1;
        for (const char *q = s; q < p; q++) {
            if (*q == '\n') { line++; col = 1; }
            else col++;
        }
        return luaL_error(L, "json.decode: unexpected text after the value at line %d, column %d",
                          line, col);
    }
    push_json(L, b->root, 0);
    cJSON_Delete(b->root);
    b->root = NULL;
    return 1;
}

/* ------------------------------------------------------------ encode */

/* the path of the value being encoded, for error messages: "$", "$.name", "$[3]" */
typedef struct {
    char buf[160];
    size_t len;
} json_path;

static void path_push(json_path *p, lua_State *L, int key_idx) {
    char part[96];
    if (lua_type(L, key_idx) == LUA_TNUMBER)
        snprintf(part, sizeof part, "[%lld]", (long long)lua_tointeger(L, key_idx));
    else
        snprintf(part, sizeof part, ".%.80s", lua_tostring(L, key_idx));
    size_t n = strlen(part);
    if (p->len + n < sizeof p->buf) {
        memcpy(p->buf + p->len, part, n + 1);
    }
    p->len += n; /* kept even when truncated so that pop restores the right length */
}

static void path_pop(json_path *p, size_t len) {
    p->len = len;
    if (len < sizeof p->buf) p->buf[len] = '\0';
}

static int encode_error(lua_State *L, json_path *p, const char *what) {
    return luaL_error(L, "json.encode: %s at %s%s", what, p->buf,
                      p->len >= sizeof p->buf ? "..." : "");
}

static int is_object_marked(lua_State *L, int idx) {
    if (!lua_getmetatable(L, idx)) return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &OBJECT_KEY);
    int r = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return r;
}

typedef struct { const char *name; lua_Integer i; } json_key;

static int cmp_keys(const void *a, const void *b) {
    return strcmp(((const json_key *)a)->name, ((const json_key *)b)->name);
}

static cJSON *to_json(lua_State *L, int idx, json_path *path, int depth);

/* attaches child to parent, or frees it and raises (no leak: parent hangs from the box) */
static void attach(lua_State *L, cJSON *parent, const char *key, cJSON *child) {
    if (child == NULL) luaL_error(L, "json.encode: out of memory");
    cJSON_bool ok = key ? cJSON_AddItemToObject(parent, key, child)
                        : cJSON_AddItemToArray(parent, child);
    if (!ok) {
        cJSON_Delete(child);
        luaL_error(L, "json.encode: out of memory");
    }
}

static cJSON *table_to_json(lua_State *L, int idx, json_path *path, int depth) {
    /* count keys and see whether they are exactly 1..n */
    lua_Integer n = 0, maxint = 0;
    int only_ints = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        n++;
        if (lua_isinteger(L, -1)) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k > maxint) maxint = k;
            if (k < 1) only_ints = 0;
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            only_ints = 0;
        } else {
            lua_pushvalue(L, -1);
            const char *what = lua_pushfstring(L, "table key of type %s (keys must be strings or "
                                                  "integers)", luaL_typename(L, -1));
            encode_error(L, path, what);
        }
    }
    int as_array = only_ints && maxint == n && !is_object_marked(L, idx);
    size_t saved = path->len;
    if (as_array) {
        cJSON *arr = cJSON_CreateArray();
        if (arr == NULL) luaL_error(L, "json.encode: out of memory");
        /* arr is linked into its parent only when complete: keep it in a box meanwhile */
        json_box *b = new_box(L);
        b->root = arr;
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            lua_pushinteger(L, i - 1); /* paths use 0-based positions as JSON tools do */
            path_push(path, L, -1);
            lua_pop(L, 1);
            cJSON *c = to_json(L, lua_gettop(L), path, depth + 1);
            path_pop(path, saved);
            attach(L, arr, NULL, c);
            lua_pop(L, 1);
        }
        b->root = NULL;
        lua_pop(L, 1);
        return arr;
    }
    /* an object: the keys as strings, sorted, encoded in that order */
    lua_createtable(L, (int)n, 0); /* i -> the original key */
    int keys = lua_gettop(L);
    json_key *names = (json_key *)lua_newuserdatauv(L, sizeof(json_key) * (size_t)(n ? n : 1), 0);
    lua_createtable(L, (int)n, 0); /* i -> the key's text, anchoring names[].name */
    int texts = lua_gettop(L);
    lua_Integer k = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        k++;
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, k);
        if (lua_isinteger(L, -1)) lua_pushfstring(L, "%I", lua_tointeger(L, -1));
        else lua_pushvalue(L, -1);
        size_t len;
        names[k - 1].name = lua_tolstring(L, -1, &len);
        names[k - 1].i = k;
        lua_rawseti(L, texts, k);
        if (strlen(names[k - 1].name) != len) encode_error(L, path, "key holding a zero byte");
    }
    qsort(names, (size_t)n, sizeof *names, cmp_keys);
    for (lua_Integer i = 1; i < n; i++)
        if (strcmp(names[i - 1].name, names[i].name) == 0) {
            lua_pushstring(L, names[i].name);
            path_push(path, L, -1);
            encode_error(L, path, "two keys (an integer and a string) with the same text");
        }
    cJSON *obj = cJSON_CreateObject();
    if (obj == NULL) luaL_error(L, "json.encode: out of memory");
    json_box *b = new_box(L);
    b->root = obj;
    for (lua_Integer i = 0; i < n; i++) {
        lua_pushstring(L, names[i].name);
        path_push(path, L, -1);
        lua_pop(L, 1);
        lua_rawgeti(L, keys, names[i].i);
        lua_rawget(L, idx);
        cJSON *c = to_json(L, lua_gettop(L), path, depth + 1);
        path_pop(path, saved);
        attach(L, obj, names[i].name, c);
        lua_pop(L, 1);
    }
    b->root = NULL;
    lua_pop(L, 4); /* box, texts, names, keys */
    return obj;
}

static cJSON *to_json(lua_State *L, int idx, json_path *path, int depth) {
    if (depth > JSON_MAXDEPTH) encode_error(L, path, "nesting deeper than 500 (a cycle?)");
    luaL_checkstack(L, 8, "json.encode: nesting too deep");
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return cJSON_CreateNull();
    case LUA_TBOOLEAN:
        return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            /* raw text keeps 64-bit integers exact (a double would round past 2^53) */
            char num[32];
            snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, idx));
            return cJSON_CreateRaw(num);
        } else {
            double d = lua_tonumber(L, idx);
            if (isnan(d)) encode_error(L, path, "cannot encode NaN (JSON has no NaN)");
            if (isinf(d)) encode_error(L, path, "cannot encode an infinity (JSON has none)");
            /* the shortest of 15, 16, 17 digits that reads back as the same double (cJSON's own
             * printer accepts a 15-digit text within an epsilon, which loses the last bits) */
            char num[32];
            for (int prec = 15; prec <= 17; prec++) {
                snprintf(num, sizeof num, "%.*g", prec, d);
                if (strtod(num, NULL) == d) break;
            }
            return cJSON_CreateRaw(num);
        }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (strlen(s) != len) encode_error(L, path, "string holding a zero byte");
        return cJSON_CreateString(s);
    }
    case LUA_TTABLE:
        return table_to_json(L, idx, path, depth);
    case LUA_TUSERDATA: {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &NULL_KEY);
        int isnull = lua_rawequal(L, -1, idx);
        lua_pop(L, 1);
        if (isnull) return cJSON_CreateNull();
        /* tensors and anything else with a totable method (indexing a userdata without
         * __index would raise, so look first) */
        if (luaL_getmetafield(L, idx, "__index") != LUA_TNIL) lua_pop(L, 1);
        else break;
        if (lua_getfield(L, idx, "totable") == LUA_TFUNCTION) {
            lua_pushvalue(L, idx);
            lua_call(L, 1, 1);
            cJSON *r = to_json(L, lua_gettop(L), path, depth + 1);
            lua_pop(L, 1);
            return r;
        }
        lua_pop(L, 1);
        break;
    }
    default:
        break;
    }
    const char *what = lua_pushfstring(L, "cannot encode a value of type %s", luaL_typename(L, idx));
    encode_error(L, path, what);
    return NULL;
}

static int json_encode(lua_State *L) {
    luaL_checkany(L, 1);
    int indent = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "indent");
        if (lua_isinteger(L, -1)) indent = (int)lua_tointeger(L, -1);
        else if (lua_toboolean(L, -1)) indent = 2;
        if (indent < 0 || indent > 16) return luaL_error(L, "json.encode: indent must be 0..16");
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    json_path path = {"$", 1};
    json_box *b = new_box(L); /* index 2 */
    b->root = to_json(L, 1, &path, 0);
    if (b->root == NULL) return luaL_error(L, "json.encode: out of memory");
    char *text = indent ? cJSON_Print(b->root) : cJSON_PrintUnformatted(b->root);
    cJSON_Delete(b->root);
    b->root = NULL;
    if (text == NULL) return luaL_error(L, "json.encode: out of memory");
    if (!indent) {
        lua_pushstring(L, text);
        free(text);
        return 1;
    }
    /* cJSON indents with tabs; a tab inside a string is escaped as \t, so every raw tab is
     * indentation and can become `indent` spaces. cJSON also writes "key":<tab>value. */
    luaL_Buffer out;
    luaL_buffinit(L, &out);
    for (const char *p = text; *p; p++) {
        if (*p != '\t') {
            luaL_addchar(&out, *p);
        } else if (p > text && p[-1] == ':') {
            luaL_addchar(&out, ' ');
        } else {
            for (int i = 0; i < indent; i++) luaL_addchar(&out, ' ');
        }
    }
    free(text); /* no Lua error can happen between the print and here except memory errors */
    luaL_pushresult(&out);
    return 1;
}

static int json_object(lua_State *L) {
    if (lua_isnoneornil(L, 1)) lua_newtable(L);
    else luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &OBJECT_KEY);
    lua_setmetatable(L, 1);
    return 1;
}

int mwl_isjsonnull(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &NULL_KEY);
    int r = lua_rawequal(L, -1, idx);
    lua_pop(L, 1);
    return r;
}

static int null_tostring(lua_State *L) {
    lua_pushliteral(L, "json.null");
    return 1;
}

/* adds the table `json` to the module table at the top of the stack */
void mwl_open_json(lua_State *L) {
    if (luaL_newmetatable(L, JSON_BOX)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    /* json.null: a full userdata, so it prints as json.null and cannot be confused with other
     * light userdata */
    lua_newuserdatauv(L, 1, 0);
    lua_newtable(L);
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &NULL_KEY);
    lua_newtable(L); /* the object marker metatable */
    lua_pushliteral(L, "json.object");
    lua_setfield(L, -2, "__name");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &OBJECT_KEY);

    static const luaL_Reg fns[] = {
        {"decode", json_decode}, {"encode", json_encode}, {"object", json_object}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_insert(L, -2);
    lua_setfield(L, -2, "null");
    lua_setfield(L, -2, "json");
}
