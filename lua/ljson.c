/* ljson.c - mi.json: JSON text <-> Lua values. Parsing goes through cJSON (the one JSON parser
 * of miwb, also used by the core); writing is done here, straight into a byte buffer.
 *
 *   mi.json.decode(str)            objects -> tables, arrays -> 1-based lists, null -> mi.json.null,
 *                                  integral numbers -> Lua integers (exact up to int64; an integer
 *                                  literal beyond int64 is an error), strings keep every byte
 *                                  ("p\u0000q" decodes to 3 bytes)
 *   mi.json.encode(v [, opts])     opts.indent = true (2 spaces) or a number of spaces;
 *                                  object keys come out sorted, so the text is reproducible
 *   mi.json.null                   the value standing for JSON null
 *   mi.json.object([t])            marks t (default {}) to encode as an object even when empty
 *
 * A Lua table is an array when its keys are exactly 1..n (an empty table is []), otherwise an
 * object whose keys must be strings or integers (integers become their decimal text). Anything
 * with a `totable` method (tensors) is encoded as what totable() returns. Zero bytes and other
 * control characters in strings are written as \u00XX escapes, bytes that are not UTF-8 as
 * \udcXX (see write_string): every Lua string round-trips. NaN and infinities, functions and
 * cycles are errors that say where: "$.a[2]". Invalid JSON text (also anything after the value,
 * a zero byte included) is an error giving line and column.
 *
 * cJSON's strings are C strings, so before parsing, the text is rewritten where cJSON would
 * lose something (json_prepare): inside strings the escapes \u0000 and \u0001 become
 * \u0001 followed by '0' or '1', a lone \udcXX becomes \u0001 'B' XX, and integer literals too long for a double become the string
 * "\u0001I<digits>"; push_json undoes both. The cJSON tree lives in a userdata with __gc, so a
 * Lua error in the middle frees it.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

#include "mwl.h"

#define JSON_MAXDEPTH 500
#define JSON_BOX "miwb.json.box"
#define JSON_BUF "miwb.json.buf"

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

/* A growable byte buffer in a userdata (freed by __gc, so a Lua error cannot leak it; Lua's
 * luaL_Buffer cannot be used across the recursive stack work of the encoder). */
typedef struct { char *s; size_t len, cap; } json_buf;

static int buf_gc(lua_State *L) {
    json_buf *b = (json_buf *)luaL_checkudata(L, 1, JSON_BUF);
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
    return 0;
}

static json_buf *new_buf(lua_State *L) {
    json_buf *b = (json_buf *)lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, JSON_BUF);
    return b;
}

static void buf_add(lua_State *L, json_buf *b, const char *s, size_t n) {
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > ((size_t)-1) / 2) luaL_error(L, "json: text too large");
            cap *= 2;
        }
        char *p = (char *)realloc(b->s, cap);
        if (p == NULL) luaL_error(L, "json: out of memory");
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
}
static void buf_str(lua_State *L, json_buf *b, const char *s) { buf_add(L, b, s, strlen(s)); }
static void buf_char(lua_State *L, json_buf *b, char c) { buf_add(L, b, &c, 1); }

/* ------------------------------------------------------------ decode */

/* line and column (1-based) of byte pos of s */
static void line_col(const char *s, size_t pos, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < pos; i++) {
        if (s[i] == '\n') { (*line)++; *col = 1; }
        else (*col)++;
    }
}

/* The text handed to cJSON (see the top of the file) into b; returns 0, or raises for an integer
 * literal beyond int64. Leaves everything else alone: cJSON judges the syntax. */
static void json_prepare(lua_State *L, json_buf *b, const char *s, size_t len) {
    size_t i = 0;
    int in_str = 0, high = 0; /* high: the last escape was a high surrogate \ud800-\udbff */
    while (i < len) {
        char c = s[i];
        if (in_str) {
            int was_high = high;
            high = 0;
            if (c == '\\' && i + 6 <= len && s[i + 1] == 'u') {
                char h[5] = {s[i + 2], s[i + 3], s[i + 4], s[i + 5], 0};
                char *e;
                long v = strtol(h, &e, 16);
                if (e == h + 4 && v >= 0xd800 && v <= 0xdbff) high = 1;
                if (e == h + 4 && v >= 0xdc80 && v <= 0xdcff && !was_high) {
                    /* a lone low surrogate from write_string: the raw byte it stands for */
                    buf_str(L, b, "\\u0001B");
                    buf_add(L, b, s + i + 4, 2);
                    i += 6;
                    continue;
                }
            }
            if (c == '"') {
                in_str = 0;
            } else if (c == '\\' && i + 1 < len && s[i + 1] == 'u' && i + 6 <= len &&
                       (memcmp(s + i + 2, "0000", 4) == 0 || memcmp(s + i + 2, "0001", 4) == 0)) {
                buf_str(L, b, s[i + 5] == '0' ? "\\u00010" : "\\u00011");
                i += 6;
                continue;
            } else if (c == '\\' && i + 1 < len) {
                buf_add(L, b, s + i, 2);
                i += 2;
                continue;
            } else if (c == '\0' || c == '\1') {
                buf_str(L, b, c ? "\\u00011" : "\\u00010");
                i++;
                continue;
            }
            buf_char(L, b, c);
            i++;
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i + (c == '-'), digits = 0;
            while (j < len && s[j] >= '0' && s[j] <= '9') { j++; digits++; }
            int integral = !(j < len && (s[j] == '.' || s[j] == 'e' || s[j] == 'E'));
            /* the rest of the token (fraction, exponent) goes along unchanged */
            while (!integral && j < len && ((s[j] >= '0' && s[j] <= '9') || s[j] == '.' || s[j] == 'e' ||
                                            s[j] == 'E' || s[j] == '+' || s[j] == '-'))
                j++;
            if (integral && digits > 15) { /* a double could round it: keep the digits */
                char num[64];
                size_t n = j - i;
                if (n >= sizeof num || (errno = 0, strtoll((memcpy(num, s + i, n), num[n] = 0, num), NULL, 10),
                                        errno == ERANGE)) {
                    int line, col;
                    line_col(s, i, &line, &col);
                    luaL_error(L, "json.decode: integer at line %d, column %d does not fit int64 "
                                  "(JSON numbers are kept exactly up to 2^63-1)", line, col);
                }
                buf_str(L, b, "\"\\u0001I");
                buf_add(L, b, num, n);
                buf_char(L, b, '"');
                i = j;
                continue;
            }
            buf_add(L, b, s + i, j - i);
            i = j;
            continue;
        }
        buf_char(L, b, c);
        i++;
    }
}

/* pushes the bytes of a string from the prepared text with the \x01 escapes undone */
static void push_unstuffed(lua_State *L, const char *s) {
    if (strchr(s, '\1') == NULL) {
        lua_pushstring(L, s);
        return;
    }
    luaL_Buffer B;
    luaL_buffinit(L, &B);
    for (; *s; s++) {
        if (*s == '\1' && (s[1] == '0' || s[1] == '1')) {
            luaL_addchar(&B, s[1] == '0' ? '\0' : '\1');
            s++;
        } else if (*s == '\1' && s[1] == 'B' && s[2] && s[3]) {
            char h[3] = {s[2], s[3], 0};
            luaL_addchar(&B, (char)strtol(h, NULL, 16));
            s += 3;
        } else {
            luaL_addchar(&B, *s);
        }
    }
    luaL_pushresult(&B);
}

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
        const char *v = j->valuestring;
        if (v[0] == '\1' && v[1] == 'I') lua_pushinteger(L, (lua_Integer)strtoll(v + 2, NULL, 10));
        else push_unstuffed(L, v);
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
            push_unstuffed(L, c->string);
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

/* Parses s[len] with cJSON into b->root; on failure raises with the line and column in s.
 * Anything after the value but white space is an error too (a zero byte included). */
static void parse_or_raise(lua_State *L, json_box *b, const char *s, size_t len) {
    const char *end = NULL;
    b->root = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    int line, col;
    if (b->root == NULL) {
        /* end points at (or near) the offending character */
        size_t pos = (end && end >= s && end <= s + len) ? (size_t)(end - s) : 0;
        if (len == 0) luaL_error(L, "json.decode: empty input");
        line_col(s, pos, &line, &col);
        char near[24];
        size_t n = len - pos < 16 ? len - pos : 16;
        memcpy(near, s + pos, n);
        near[n] = '\0';
        for (size_t i = 0; i < n; i++)
            if (near[i] == '\n' || near[i] == '\r' || near[i] == '\t' || near[i] == '\0') near[i] = ' ';
        luaL_error(L, "json.decode: invalid JSON at line %d, column %d (byte %d) near '%s'",
                   line, col, (int)pos + 1, near);
    }
    const char *p = end;
    while (p < s + len && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    if (p < s + len) {
        line_col(s, (size_t)(p - s), &line, &col);
        luaL_error(L, "json.decode: unexpected %s after the value at line %d, column %d",
                   *p ? "text" : "zero byte", line, col);
    }
}

static int json_decode(lua_State *L) {
    size_t len;
    if (lua_type(L, 1) != LUA_TSTRING) {   /* a tensor or other userdata by its __name */
        const char *what = luaL_getmetafield(L, 1, "__name") == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, 1);
        return luaL_error(L, "json.decode: expected a string of JSON text, got %s", what);
    }
    const char *s = lua_tolstring(L, 1, &len);
    json_buf *pre = new_buf(L);
    json_prepare(L, pre, s, len);
    json_box *b = new_box(L);
    const char *end = NULL;
    b->root = cJSON_ParseWithLengthOpts(pre->s ? pre->s : "", pre->len, &end, 0);
    int bad = b->root == NULL;
    if (!bad) {
        const char *p = end, *e = pre->s + pre->len;
        while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
        bad = p < e;
    }
    if (bad) { /* the message, with positions, comes from the original text */
        cJSON_Delete(b->root);
        b->root = NULL;
        parse_or_raise(L, b, s, len);
        return luaL_error(L, "json.decode: invalid JSON");
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
    if (lua_type(L, key_idx) == LUA_TNUMBER) {
        snprintf(part, sizeof part, "[%lld]", (long long)lua_tointeger(L, key_idx));
    } else { /* a key may hold any byte: show it with control bytes as '?' */
        size_t n;
        const char *k = lua_tolstring(L, key_idx, &n);
        size_t m = n < 80 ? n : 80;
        part[0] = '.';
        for (size_t i = 0; i < m; i++) part[i + 1] = (unsigned char)k[i] < 0x20 ? '?' : k[i];
        part[m + 1] = '\0';
    }
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

/* A JSON string literal for s[n]: ", \ and control bytes escaped (\u0000 too). A byte that is
 * not part of valid UTF-8 (a token string holding half a character, say) is written as the lone
 * surrogate \udcXX, Python's "surrogateescape" convention; decode turns it back into the byte, so
 * any Lua string round-trips. */
static void write_string(lua_State *L, json_buf *b, const char *s, size_t n) {
    buf_char(L, b, '"');
    size_t run = 0; /* bytes copied as they are, flushed before each escape */
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        size_t step = 1;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", c);
                esc = u;
            } else if (c >= 0x80) {
                utf8proc_int32_t cp;
                utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)s + i,
                                                      (utf8proc_ssize_t)(n - i), &cp);
                if (r > 0) step = (size_t)r;
                else {
                    snprintf(u, sizeof u, "\\udc%02x", c);
                    esc = u;
                }
            }
        }
        if (esc) {
            buf_add(L, b, s + run, i - run);
            buf_str(L, b, esc);
            run = i + 1;
        }
        i += step;
    }
    buf_add(L, b, s + run, n - run);
    buf_char(L, b, '"');
}

static void write_indent(lua_State *L, json_buf *b, int indent, int depth) {
    buf_char(L, b, '\n');
    for (int i = 0; i < indent * depth; i++) buf_char(L, b, ' ');
}

typedef struct { const char *name; size_t len; lua_Integer i; } json_key;

static int cmp_keys(const void *a, const void *b) {
    const json_key *x = (const json_key *)a, *y = (const json_key *)b;
    int c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static void to_json(lua_State *L, json_buf *b, int idx, json_path *path, int depth, int indent);

static void table_to_json(lua_State *L, json_buf *b, int idx, json_path *path, int depth, int indent) {
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
        buf_char(L, b, '[');
        for (lua_Integer i = 1; i <= n; i++) {
            if (i > 1) buf_str(L, b, indent ? ", " : ",");
            lua_rawgeti(L, idx, i);
            lua_pushinteger(L, i - 1); /* paths use 0-based positions as JSON tools do */
            path_push(path, L, -1);
            lua_pop(L, 1);
            to_json(L, b, lua_gettop(L), path, depth + 1, indent);
            path_pop(path, saved);
            lua_pop(L, 1);
        }
        buf_char(L, b, ']');
        return;
    }
    /* an object: the keys as strings, sorted, written in that order */
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
        names[k - 1].name = lua_tolstring(L, -1, &names[k - 1].len);
        names[k - 1].i = k;
        lua_rawseti(L, texts, k);
    }
    qsort(names, (size_t)n, sizeof *names, cmp_keys);
    for (lua_Integer i = 1; i < n; i++)
        if (cmp_keys(&names[i - 1], &names[i]) == 0) {
            lua_pushlstring(L, names[i].name, names[i].len);
            path_push(path, L, -1);
            encode_error(L, path, "two keys (an integer and a string) with the same text");
        }
    buf_char(L, b, '{');
    for (lua_Integer i = 0; i < n; i++) {
        if (i > 0) buf_char(L, b, ',');
        if (indent) write_indent(L, b, indent, depth + 1);
        lua_pushlstring(L, names[i].name, names[i].len);
        path_push(path, L, -1);
        lua_pop(L, 1);
        write_string(L, b, names[i].name, names[i].len);
        buf_str(L, b, indent ? ": " : ":");
        lua_rawgeti(L, keys, names[i].i);
        lua_rawget(L, idx);
        to_json(L, b, lua_gettop(L), path, depth + 1, indent);
        path_pop(path, saved);
        lua_pop(L, 1);
    }
    if (indent && n > 0) write_indent(L, b, indent, depth);
    buf_char(L, b, '}');
    lua_pop(L, 3); /* texts, names, keys */
}

static void to_json(lua_State *L, json_buf *b, int idx, json_path *path, int depth, int indent) {
    if (depth > JSON_MAXDEPTH) encode_error(L, path, "nesting deeper than 500 (a cycle?)");
    luaL_checkstack(L, 8, "json.encode: nesting too deep");
    char num[64];
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        buf_str(L, b, "null");
        return;
    case LUA_TBOOLEAN:
        buf_str(L, b, lua_toboolean(L, idx) ? "true" : "false");
        return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) { /* exact, all 64 bits */
            snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, idx));
        } else {
            double d = lua_tonumber(L, idx);
            if (isnan(d)) encode_error(L, path, "cannot encode NaN (JSON has no NaN)");
            if (isinf(d)) encode_error(L, path, "cannot encode an infinity (JSON has none)");
            /* the shortest of 15, 16, 17 digits that reads back as the same double */
            for (int prec = 15; prec <= 17; prec++) {
                snprintf(num, sizeof num, "%.*g", prec, d);
                if (strtod(num, NULL) == d) break;
            }
        }
        buf_str(L, b, num);
        return;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        write_string(L, b, s, len);
        return;
    }
    case LUA_TTABLE:
        table_to_json(L, b, idx, path, depth, indent);
        return;
    case LUA_TUSERDATA: {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &NULL_KEY);
        int isnull = lua_rawequal(L, -1, idx);
        lua_pop(L, 1);
        if (isnull) {
            buf_str(L, b, "null");
            return;
        }
        /* tensors and anything else with a totable method (indexing a userdata without
         * __index would raise, so look first) */
        if (luaL_getmetafield(L, idx, "__index") != LUA_TNIL) lua_pop(L, 1);
        else break;
        if (lua_getfield(L, idx, "totable") == LUA_TFUNCTION) {
            lua_pushvalue(L, idx);
            lua_call(L, 1, 1);
            to_json(L, b, lua_gettop(L), path, depth + 1, indent);
            lua_pop(L, 1);
            return;
        }
        lua_pop(L, 1);
        break;
    }
    default:
        break;
    }
    const char *what = lua_pushfstring(L, "cannot encode a value of type %s", luaL_typename(L, idx));
    encode_error(L, path, what);
}

static int json_encode(lua_State *L) {
    luaL_checkany(L, 1);
    int indent = 0;
    static const char *const opts[] = {"indent", NULL};
    mwl_check_opts(L, 2, "json.encode", opts);
    if (!lua_isnoneornil(L, 2)) {
        lua_getfield(L, 2, "indent");
        if (lua_isinteger(L, -1)) indent = (int)lua_tointeger(L, -1);
        else if (lua_toboolean(L, -1)) indent = 2;
        if (indent < 0 || indent > 16) return luaL_error(L, "json.encode: indent must be 0..16");
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    json_path path = {"$", 1};
    json_buf *b = new_buf(L); /* index 2 */
    to_json(L, b, 1, &path, 0, indent);
    lua_pushlstring(L, b->s ? b->s : "", b->len);
    return 1;
}

static int json_object(lua_State *L) {
    if (lua_isnoneornil(L, 1)) lua_newtable(L);
    else if (!lua_istable(L, 1)) return luaL_error(L, "json.object: expected a table, got %s", luaL_typename(L, 1));
    lua_settop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &OBJECT_KEY);
    /* the mark is a metatable: one that is already there (a model's, a cache's) is not replaced */
    if (lua_getmetatable(L, 1)) {
        if (!lua_rawequal(L, -1, -2)) {
            const char *name = lua_getfield(L, -1, "__name") == LUA_TSTRING ? lua_tostring(L, -1) : "a metatable";
            return luaL_error(L, "json.object: the table already has a metatable (%s); mark a plain table", name);
        }
        lua_pop(L, 1);
    }
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
    if (luaL_newmetatable(L, JSON_BUF)) {
        lua_pushcfunction(L, buf_gc);
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
