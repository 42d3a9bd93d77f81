/* ltokenizer.c - byte-level BPE tokenizers in Lua (core/tokenizer.h).
 *
 *   local tok = assert(mi.load_tokenizer(path))  -- tokenizer.json, a SentencePiece tokenizer.model,
 *                                                -- or a folder holding one of them or vocab.json +
 *                                                -- merges.txt; nil, msg on failure
 *   tok:encode(text [, {add_special_tokens = true}])
 *                           1-D int64 tensor of ids (0-based, as in Hugging Face); with
 *                           add_special_tokens (the default) the file's post-processor adds its
 *                           tokens (BOS for Llama's files), as Hugging Face's encode does
 *   tok:encode_list(text [, opts])   the same ids as a Lua list
 *   tok:decode(ids)         ids: a tensor (any shape, integral values, read in row-major order),
 *                           a list, or one integer -> the text (raw bytes)
 *   tok:tokens(x [, opts])  x: text (opts as for encode), tensor or list -> list of each token's
 *                           decoded text
 *                           (what TransformerLens's to_str_tokens shows)
 *   tok:id_to_token(i)      the token as written in the file ("Ġthe"), nil if none
 *   tok:token_to_id(s)      its id, nil if s is not a token
 *   tok:vocab_size()        largest id + 1
 *   tok:bos_token_id(), :eos_token_id(), :pad_token_id(), :unk_token_id()   id or nil
 *   tok:is_special(i)       true for added tokens flagged special (<|endoftext|>)
 * Bad arguments (an id out of range, a non-string text) raise errors naming the method.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mwl.h"
#include "tokenizer.h"

#define MWL_TOKENIZER "miwb.Tokenizer"

typedef struct { mw_tokenizer *t; } tok_box;

static mw_tokenizer *check_tok(lua_State *L) {
    tok_box *b = (tok_box *)luaL_checkudata(L, 1, MWL_TOKENIZER);
    if (!b->t) luaL_argerror(L, 1, "tokenizer has been closed");
    return b->t;
}

static int l_load_tokenizer(lua_State *L) {
    const char *path = mwl_checkname(L, 1, "load_tokenizer", "path");
    /* the userdata first: an error afterwards leaves an empty, collectable box */
    tok_box *b = (tok_box *)lua_newuserdatauv(L, sizeof *b, 1);
    b->t = NULL;
    luaL_setmetatable(L, MWL_TOKENIZER);
    if (mw_tokenizer_load(&b->t, path)) {
        lua_pushnil(L);
        lua_pushstring(L, mw_error());
        return 2;
    }
    lua_pushvalue(L, 1); /* keep the path for __tostring */
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static int m_gc(lua_State *L) {
    tok_box *b = (tok_box *)luaL_checkudata(L, 1, MWL_TOKENIZER);
    mw_tokenizer_free(b->t);
    b->t = NULL;
    return 0;
}

static int m_tostring(lua_State *L) {
    tok_box *b = (tok_box *)luaL_checkudata(L, 1, MWL_TOKENIZER);
    if (!b->t) {
        lua_pushliteral(L, "Tokenizer(closed)");
        return 1;
    }
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, "Tokenizer(vocab_size=%I, %s)", (lua_Integer)mw_tokenizer_vocab_size(b->t),
                    lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
    return 1;
}

/* malloc'd results of the core are held by a userdata on the stack until they are pushed, so a
 * Lua error in between (memory, a bad list element) cannot leak them. */
typedef struct { int64_t *ids; char *text; } ids_box;

static int box_gc(lua_State *L) {
    ids_box *b = (ids_box *)lua_touserdata(L, 1);
    free(b->ids);
    free(b->text);
    b->ids = NULL;
    b->text = NULL;
    return 0;
}

static ids_box *new_box(lua_State *L) {
    ids_box *b = (ids_box *)lua_newuserdatauv(L, sizeof *b, 0);
    b->ids = NULL;
    b->text = NULL;
    if (luaL_newmetatable(L, "miwb.tokenizer.box")) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return b;
}

/* the options table at idx ({add_special_tokens = bool}, Hugging Face's name and default true) */
static int add_special_opt(lua_State *L, int idx, const char *method) {
    static const char *const names[] = {"add_special_tokens", NULL};
    char op[64];
    snprintf(op, sizeof op, "tokenizer:%s", method);
    mwl_check_opts(L, idx, op, names);
    if (lua_isnoneornil(L, idx)) return 1;
    int type = lua_getfield(L, idx, "add_special_tokens");
    if (type != LUA_TNIL && type != LUA_TBOOLEAN)
        luaL_error(L, "%s: add_special_tokens must be true or false, got %s", op, luaL_typename(L, -1));
    int v = type == LUA_TNIL ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* text at idx, options at idx + 1 */
static ids_box *encode_arg(lua_State *L, mw_tokenizer *t, int idx, const char *method, size_t *n) {
    size_t len;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "tokenizer:%s: bad argument #1 (string expected, got %s)", method, luaL_typename(L, idx));
    const char *s = lua_tolstring(L, idx, &len);
    int special = add_special_opt(L, idx + 1, method);
    ids_box *b = new_box(L);
    if (mw_tokenizer_encode_ex(&b->ids, n, t, s, len, special)) luaL_error(L, "tokenizer:%s: %s", method, mw_error());
    return b;
}

static int m_encode(lua_State *L) {
    mw_tokenizer *t = check_tok(L);
    size_t n;
    ids_box *b = encode_arg(L, t, 2, "encode", &n);
    mw_tensor *out = mwl_newtensor(L);
    int64_t shape[1] = {(int64_t)n};
    if (mw_tensor_from_data(out, MW_I64, 1, shape, b->ids)) return mwl_coreerror(L);
    mwl_account(L);
    return 1;
}

static int m_encode_list(lua_State *L) {
    mw_tokenizer *t = check_tok(L);
    size_t n;
    ids_box *b = encode_arg(L, t, 2, "encode_list", &n);
    lua_createtable(L, (int)(n < 1u << 30 ? n : 0), 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, (lua_Integer)b->ids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* Reads ids from a tensor, a list or one integer at idx into a userdata-held buffer. */
static ids_box *ids_arg(lua_State *L, int idx, const char *method, size_t *n) {
    ids_box *b = new_box(L);
    mw_tensor *tt = mwl_totensor(L, idx);
    if (tt) {
        if (!tt->storage) luaL_error(L, "tokenizer:%s: the tensor has been closed", method);
        int64_t m = mw_tensor_numel(tt);
        b->ids = malloc((size_t)(m ? m : 1) * sizeof *b->ids);
        if (!b->ids) luaL_error(L, "tokenizer:%s: out of memory", method);
        int64_t index[MW_MAXDIM] = {0};
        for (int64_t k = 0; k < m; k++) {
            double v = mw_tensor_get(tt, index);
            if (v != floor(v) || fabs(v) > 9e15)
                luaL_error(L, "tokenizer:%s: element %I of the tensor is %f, not an id", method, (lua_Integer)k, v);
            b->ids[k] = (int64_t)v;
            for (int d = tt->ndim - 1; d >= 0; d--) { /* row-major: advance the last index */
                if (++index[d] < tt->shape[d]) break;
                index[d] = 0;
            }
        }
        *n = (size_t)m;
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        lua_Integer m = luaL_len(L, idx);
        b->ids = malloc((size_t)(m > 0 ? m : 1) * sizeof *b->ids);
        if (!b->ids) luaL_error(L, "tokenizer:%s: out of memory", method);
        for (lua_Integer k = 1; k <= m; k++) {
            lua_geti(L, idx, k);
            int isint;
            lua_Integer v = lua_tointegerx(L, -1, &isint);
            if (!isint) luaL_error(L, "tokenizer:%s: ids[%I] is %s, not an integer", method, k, luaL_typename(L, -1));
            b->ids[k - 1] = (int64_t)v;
            lua_pop(L, 1);
        }
        *n = (size_t)m;
    } else if (lua_isinteger(L, idx)) {
        b->ids = malloc(sizeof *b->ids);
        if (!b->ids) luaL_error(L, "tokenizer:%s: out of memory", method);
        b->ids[0] = (int64_t)lua_tointeger(L, idx);
        *n = 1;
    } else {
        luaL_error(L, "tokenizer:%s: bad argument #1 (tensor, list of ids or integer expected, got %s)",
                   method, luaL_typename(L, idx));
    }
    return b;
}

static int m_decode(lua_State *L) {
    mw_tokenizer *t = check_tok(L);
    size_t n, len;
    ids_box *b = ids_arg(L, 2, "decode", &n);
    if (mw_tokenizer_decode(&b->text, &len, t, b->ids, n)) return luaL_error(L, "tokenizer:decode: %s", mw_error());
    lua_pushlstring(L, b->text, len);
    return 1;
}

static int m_tokens(lua_State *L) {
    mw_tokenizer *t = check_tok(L);
    size_t n;
    if (lua_type(L, 2) != LUA_TSTRING && !lua_isnoneornil(L, 3))
        return luaL_error(L, "tokenizer:tokens: options apply to text only; for ids write tok:tokens(ids)");
    ids_box *b = lua_type(L, 2) == LUA_TSTRING ? encode_arg(L, t, 2, "tokens", &n) : ids_arg(L, 2, "tokens", &n);
    lua_createtable(L, (int)(n < 1u << 30 ? n : 0), 0);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        free(b->text);
        b->text = NULL;
        if (mw_tokenizer_decode(&b->text, &len, t, &b->ids[i], 1)) return luaL_error(L, "tokenizer:tokens: %s", mw_error());
        lua_pushlstring(L, b->text, len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int m_id_to_token(lua_State *L) {
    mw_tokenizer *t = check_tok(L);
    const char *s = mw_tokenizer_id_to_token(t, (int64_t)luaL_checkinteger(L, 2));
    if (s) lua_pushstring(L, s);
    else lua_pushnil(L);
    return 1;
}

static int m_token_to_id(lua_State *L) {
    mw_tokenizer *t = check_tok(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    int64_t id = mw_tokenizer_token_to_id(t, s, len);
    if (id >= 0) lua_pushinteger(L, (lua_Integer)id);
    else lua_pushnil(L);
    return 1;
}

static int m_vocab_size(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)mw_tokenizer_vocab_size(check_tok(L)));
    return 1;
}

static int push_special(lua_State *L, mw_tok_special which) {
    int64_t id = mw_tokenizer_special_id(check_tok(L), which);
    if (id >= 0) lua_pushinteger(L, (lua_Integer)id);
    else lua_pushnil(L);
    return 1;
}
static int m_bos(lua_State *L) { return push_special(L, MW_TOK_BOS); }
static int m_eos(lua_State *L) { return push_special(L, MW_TOK_EOS); }
static int m_pad(lua_State *L) { return push_special(L, MW_TOK_PAD); }
static int m_unk(lua_State *L) { return push_special(L, MW_TOK_UNK); }

static int m_is_special(lua_State *L) {
    mw_tokenizer *t = check_tok(L);
    lua_pushboolean(L, mw_tokenizer_is_special(t, (int64_t)luaL_checkinteger(L, 2)));
    return 1;
}

void mwl_open_tokenizer(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"encode", m_encode}, {"encode_list", m_encode_list}, {"decode", m_decode},
        {"tokens", m_tokens}, {"id_to_token", m_id_to_token}, {"token_to_id", m_token_to_id},
        {"vocab_size", m_vocab_size}, {"bos_token_id", m_bos}, {"eos_token_id", m_eos},
        {"pad_token_id", m_pad}, {"unk_token_id", m_unk}, {"is_special", m_is_special},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", m_gc}, {"__close", m_gc}, {"__tostring", m_tostring},
                                    {NULL, NULL}};
    if (luaL_newmetatable(L, MWL_TOKENIZER)) {
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_load_tokenizer);
    lua_setfield(L, -2, "load_tokenizer");
}
