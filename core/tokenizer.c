/* tokenizer.c - byte-level BPE (GPT-2, GPT-NeoX), id for id with Hugging Face `tokenizers`.
 * See tokenizer.h for the pipeline and the treatment of invalid UTF-8.
 *
 * Data layout
 *   tok[V], tok_len[V]  the token text as written in the file (byte-level form), V = vocab_size;
 *                       NULL where no token has that id
 *   dec[V], dec_len[V]  the bytes each id decodes to
 *   vocab               hash: token text -> id (model vocabulary only)
 *   merges              hash: (left id << 32 | right id) -> (rank, merged id)
 *   byte_id[256]        id of the one-byte symbol of each byte value, -1 when absent
 *   added[NA]           the added tokens, cut out of the text before BPE, found with two byte tries
 *                       (raw: "normalized": false; norm: "normalized": true, matched after NFC)
 *   cache               hash: pre-token bytes -> its ids, for words up to CACHE_MAXWORD bytes
 * Strings live in arenas (one malloc per large block), so loading 50k tokens costs few mallocs.
 */
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "bpe.h"
#include "mw_tensor.h"

#define MAX_IDS (1 << 21)      /* ids at or above this are refused: a lying file, not a vocabulary
                                 * (the largest real BPE vocabularies have ~256k entries) */
#define CACHE_MAXWORD 256      /* longer pre-tokens are not cached */
#define CACHE_MAXENTRIES 65536 /* the cache is emptied when it holds this many words */

/* ------------------------------------------------------------------ errors */

/* "tokenizer: <name>: <message>"; returns -1 */
static int tok_err(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int tok_err(const char *name, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mw_seterr("tokenizer: %s: %s", name ? name : "(memory)", msg);
}

static int oom(const char *name) { return tok_err(name, "out of memory"); }

/* ------------------------------------------------------------------ small containers */

/* Growable byte buffer. */
typedef struct { char *p; size_t n, cap; } buf_t;

static int buf_reserve(buf_t *b, size_t extra) {
    if (b->n + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(buf_t *b, const void *s, size_t n) {
    if (n == 0) return 0;
    if (buf_reserve(b, n)) return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

/* Growable id list (the output of encode). */
typedef struct { int64_t *p; size_t n, cap; } ids_t;

static int ids_reserve(ids_t *v, size_t extra) {
    if (v->n + extra <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < v->n + extra) cap *= 2;
    int64_t *p = realloc(v->p, cap * sizeof *p);
    if (!p) return -1;
    v->p = p;
    v->cap = cap;
    return 0;
}

static inline int ids_push(ids_t *v, int64_t id) {
    if (v->n == v->cap && ids_reserve(v, 1)) return -1;
    v->p[v->n++] = id;
    return 0;
}

/* String arena: blocks of at least 64 KiB; strings are NUL-terminated and never move. */
typedef struct arena_block { struct arena_block *next; size_t used, cap; char data[]; } arena_block;

static char *arena_dup(arena_block **a, const char *s, size_t n) {
    if (!*a || (*a)->cap - (*a)->used < n + 1) {
        size_t cap = n + 1 > 65536 ? n + 1 : 65536;
        arena_block *b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = *a;
        b->used = 0;
        b->cap = cap;
        *a = b;
    }
    char *p = (*a)->data + (*a)->used;
    memcpy(p, s, n);
    p[n] = 0;
    (*a)->used += n + 1;
    return p;
}

static void arena_free(arena_block *a) {
    while (a) {
        arena_block *next = a->next;
        free(a);
        a = next;
    }
}

/* String -> int32 map, open addressing; keys point into an arena owned elsewhere. */
typedef struct { const char *key; uint32_t len; int32_t val; } smap_slot;
typedef struct { smap_slot *slots; size_t cap, n; } smap_t;

static int smap_grow(smap_t *m);

static int32_t *smap_find(const smap_t *m, const char *key, size_t len) {
    if (!m->cap) return NULL;
    size_t mask = m->cap - 1, i = mw_hash_bytes(key, len) & mask;
    for (;; i = (i + 1) & mask) {
        smap_slot *s = &m->slots[i];
        if (!s->key) return NULL;
        if (s->len == len && memcmp(s->key, key, len) == 0) return &s->val;
    }
}

/* inserts or overwrites; key must outlive the map */
static int smap_put(smap_t *m, const char *key, size_t len, int32_t val) {
    if ((m->n + 1) * 2 > m->cap && smap_grow(m)) return -1;
    size_t mask = m->cap - 1, i = mw_hash_bytes(key, len) & mask;
    for (;; i = (i + 1) & mask) {
        smap_slot *s = &m->slots[i];
        if (!s->key) {
            s->key = key;
            s->len = (uint32_t)len;
            s->val = val;
            m->n++;
            return 0;
        }
        if (s->len == len && memcmp(s->key, key, len) == 0) {
            s->val = val;
            return 0;
        }
    }
}

static int smap_grow(smap_t *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    smap_slot *old = m->slots;
    size_t oldcap = m->cap;
    m->slots = calloc(cap, sizeof *m->slots);
    if (!m->slots) {
        m->slots = old;
        return -1;
    }
    m->cap = cap;
    m->n = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key) smap_put(m, old[i].key, old[i].len, old[i].val);
    free(old);
    return 0;
}


/* ------------------------------------------------------------------ added-token trie */

/* Node 0 is the root; root children are found through root_next[byte]. Other nodes keep their
 * children as a sibling list (added tokens are few and share prefixes, e.g. runs of spaces). */
typedef struct { int32_t child, sibling, token; unsigned char byte; } trie_node;
typedef struct {
    trie_node *nodes;
    int32_t n, cap;
    int32_t root_next[256];
    int ntokens;
} trie_t;

static int trie_init(trie_t *tr) {
    memset(tr, 0, sizeof *tr);
    for (int i = 0; i < 256; i++) tr->root_next[i] = -1;
    return 0;
}

static int32_t trie_newnode(trie_t *tr, unsigned char byte) {
    if (tr->n == tr->cap) {
        int32_t cap = tr->cap ? tr->cap * 2 : 64;
        trie_node *p = realloc(tr->nodes, (size_t)cap * sizeof *p);
        if (!p) return -1;
        tr->nodes = p;
        tr->cap = cap;
    }
    tr->nodes[tr->n] = (trie_node){-1, -1, -1, byte};
    return tr->n++;
}

/* adds s (len > 0) meaning added token number tok; an existing identical string keeps the first */
static int trie_add(trie_t *tr, const char *s, size_t len, int32_t tok) {
    const unsigned char *u = (const unsigned char *)s;
    int32_t node = tr->root_next[u[0]];
    if (node < 0) {
        if ((node = trie_newnode(tr, u[0])) < 0) return -1;
        tr->root_next[u[0]] = node;
    }
    for (size_t i = 1; i < len; i++) {
        int32_t c = tr->nodes[node].child;
        while (c >= 0 && tr->nodes[c].byte != u[i]) c = tr->nodes[c].sibling;
        if (c < 0) {
            if ((c = trie_newnode(tr, u[i])) < 0) return -1;
            tr->nodes[c].sibling = tr->nodes[node].child;
            tr->nodes[node].child = c;
        }
        node = c;
    }
    if (tr->nodes[node].token < 0) tr->nodes[node].token = tok;
    tr->ntokens++;
    return 0;
}

/* longest token that starts at s[0]; returns its length and sets *tok, or 0 */
static size_t trie_match(const trie_t *tr, const unsigned char *s, size_t n, int32_t *tok) {
    int32_t node = tr->root_next[s[0]];
    size_t best = 0;
    for (size_t i = 1; node >= 0; i++) {
        if (tr->nodes[node].token >= 0) {
            best = i;
            *tok = tr->nodes[node].token;
        }
        if (i == n) break;
        int32_t c = tr->nodes[node].child;
        while (c >= 0 && tr->nodes[c].byte != s[i]) c = tr->nodes[c].sibling;
        node = c;
    }
    return best;
}

/* ------------------------------------------------------------------ the tokenizer */

typedef struct {
    const char *orig;    /* the content as written, in the tokenizer's arena */
    size_t orig_len;
    const char *content; /* what is matched: for normalized tokens, the NFC form of orig */
    size_t len;
    int32_t id;
    unsigned special : 1, normalized : 1, lstrip : 1, rstrip : 1, single_word : 1;
} added_tok;

typedef struct { uint64_t hash; uint32_t key_off, key_len, ids_off, ids_n; } cache_slot;

struct mw_tokenizer {
    char *name;                   /* the file, for messages */
    int64_t vocab_size;           /* max id + 1 */
    const char **tok;             /* [vocab_size] */
    uint32_t *tok_len;            /* [vocab_size] */
    const char **dec;             /* [vocab_size] */
    uint32_t *dec_len;            /* [vocab_size] */
    unsigned char *is_special;    /* [vocab_size] */
    arena_block *arena;
    smap_t vocab;                 /* model vocabulary: text -> id */
    smap_t added_map;             /* added tokens: content (as written) -> id */
    mw_bpe_merges merges;
    int32_t byte_id[256];
    added_tok *added;             /* [nadded] */
    int nadded;
    trie_t trie_raw, trie_norm;
    int nfc, add_prefix_space, use_regex, ignore_merges, fuse_unk;
    int32_t unk_id;
    int64_t special[MW_TOK_NSPECIAL];
    /* scratch, reused across calls (shapes grow to the largest piece seen) */
    buf_t norm;                   /* NFC text of one piece, bytes */
    buf_t word;                   /* one piece with its prefix space, bytes */
    buf_t blw;                    /* one pre-token in byte-level form (ignore_merges), bytes */
    int32_t *sym;                 /* [sym_cap] the symbols of one word, merged in place */
    size_t sym_cap;
    mw_bpe_scratch bpe;
    /* the word cache */
    cache_slot *cache;            /* [2 * CACHE_MAXENTRIES] */
    size_t cache_n;
    buf_t cache_keys;             /* bytes of the cached words */
    ids_t cache_ids;              /* their ids */
};

/* Appends the NFC form of s[0..n) to out. Only the stretches that can change are normalized:
 * a run of non-ASCII characters together with the ASCII character before it (which may compose
 * with a following mark). The text can be cut before any ASCII character, because ASCII
 * characters are starters that compose with nothing before them, and at invalid bytes, which
 * compose with nothing at all (they are copied as they are). */
static int nfc_append(buf_t *out, const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] < 0x80) j++;
        if (j == n) return buf_add(out, s + i, n - i);
        size_t a = j > i ? j - 1 : j; /* keep the ASCII character before the run with it */
        if (a > i && buf_add(out, s + i, a - i)) return -1;
        size_t e = j;
        int32_t cp;
        int l = 0;
        while (e < n && s[e] >= 0x80 && (l = mw_utf8_next(s + e, n - e, &cp)) > 0) e += (size_t)l;
        if (e == j) { /* the run starts with an invalid byte: nothing to normalize */
            if (buf_add(out, s + a, j - a)) return -1;
        } else {
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t m = utf8proc_map(s + a, (utf8proc_ssize_t)(e - a), &dst,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (m < 0) return -1;
            int rc = buf_add(out, dst, (size_t)m);
            free(dst);
            if (rc) return -1;
        }
        if (e < n && s[e] >= 0x80) { /* an invalid byte */
            if (buf_add(out, s + e, 1)) return -1;
            e++;
        }
        i = e;
    }
    return 0;
}

/* ------------------------------------------------------------------ BPE */

/* Byte-level BPE of one pre-token w[0..n): appends its ids to out. Each step merges the pair of
 * lowest rank, the leftmost among equal ranks (Hugging Face's order). */
static int bpe_word(mw_tokenizer *t, const unsigned char *w, size_t n, ids_t *out) {
    if (n > t->sym_cap) {
        size_t cap = t->sym_cap ? t->sym_cap : 64;
        while (cap < n) cap *= 2;
        int32_t *p = realloc(t->sym, cap * sizeof *p);
        if (!p) return -1;
        t->sym = p;
        t->sym_cap = cap;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[w[i]];
        if (id < 0) {
            if (t->unk_id < 0) continue; /* no symbol, no unk: dropped, as Hugging Face does */
            if (t->fuse_unk && m > 0 && t->sym[m - 1] == t->unk_id) continue;
            id = t->unk_id;
        }
        t->sym[m++] = id;
    }
    long k = mw_bpe_apply(&t->merges, &t->bpe, t->sym, m);
    if (k < 0 || ids_reserve(out, (size_t)k)) return -1;
    for (long i = 0; i < k; i++) out->p[out->n++] = t->sym[i];
    return 0;
}

static void cache_clear(mw_tokenizer *t) {
    if (t->cache) memset(t->cache, 0, 2 * CACHE_MAXENTRIES * sizeof *t->cache);
    t->cache_n = 0;
    t->cache_keys.n = 0;
    t->cache_ids.n = 0;
}

/* BPE of one pre-token through the cache */
static int encode_word(mw_tokenizer *t, const unsigned char *w, size_t n, ids_t *out) {
    if (t->ignore_merges) {
        /* the whole word, in byte-level form, may be a token of its own */
        buf_t *b = &t->blw;
        size_t keep = b->n = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char u[4];
            int l = mw_utf8_put(u, mw_bpe_byte_cp(w[i]));
            if (buf_add(b, u, (size_t)l)) return -1;
        }
        int32_t *id = smap_find(&t->vocab, b->p + keep, b->n - keep);
        b->n = keep;
        if (id) return ids_push(out, *id);
    }
    if (n > CACHE_MAXWORD) return bpe_word(t, w, n, out);
    if (!t->cache) {
        t->cache = calloc(2 * CACHE_MAXENTRIES, sizeof *t->cache);
        if (!t->cache) return -1;
    }
    uint64_t h = mw_hash_bytes(w, n) | 1; /* hash 0 marks an empty slot */
    size_t mask = 2 * CACHE_MAXENTRIES - 1, i = h & mask;
    for (;; i = (i + 1) & mask) {
        cache_slot *s = &t->cache[i];
        if (!s->hash) break;
        if (s->hash == h && s->key_len == n && memcmp(t->cache_keys.p + s->key_off, w, n) == 0) {
            for (uint32_t k = 0; k < s->ids_n; k++)
                if (ids_push(out, t->cache_ids.p[s->ids_off + k])) return -1;
            return 0;
        }
    }
    size_t start = out->n;
    if (bpe_word(t, w, n, out)) return -1;
    if (t->cache_n >= CACHE_MAXENTRIES) {
        cache_clear(t);
        i = h & mask;
    }
    cache_slot s = {h, (uint32_t)t->cache_keys.n, (uint32_t)n, (uint32_t)t->cache_ids.n,
                    (uint32_t)(out->n - start)};
    if (buf_add(&t->cache_keys, w, n)) return -1;
    for (size_t k = start; k < out->n; k++)
        if (ids_push(&t->cache_ids, out->p[k])) return -1;
    t->cache[i] = s;
    t->cache_n++;
    return 0;
}

/* ------------------------------------------------------------------ pre-tokenization */

/* Splits s[0..n) (one piece, no added tokens in it) by the GPT-2 pattern and encodes each part. */
static int encode_pretokens(mw_tokenizer *t, const unsigned char *s, size_t n, ids_t *out) {
    if (n == 0) return 0;
    if (t->add_prefix_space && s[0] != ' ') {
        t->word.n = 0;
        if (buf_add(&t->word, " ", 1) || buf_add(&t->word, s, n)) return -1;
        s = (const unsigned char *)t->word.p;
        n = t->word.n;
    }
    if (!t->use_regex) return encode_word(t, s, n, out);
    for (size_t i = 0; i < n;) {
        size_t l = mw_bpe_pretoken_len(s + i, n - i);
        if (encode_word(t, s + i, l, out)) return -1;
        i += l;
    }
    return 0;
}

/* ------------------------------------------------------------------ added tokens */

static int is_space_at(const unsigned char *s, size_t n, int *clen) {
    return mw_bpe_char_class(s, n, clen) == MW_BPE_SPACE;
}

/* byte length of the whitespace that ends s[0..n) (valid UTF-8 assumed where it matters) */
static size_t trailing_space(const unsigned char *s, size_t n) {
    size_t i = n;
    while (i > 0) {
        size_t j = i - 1;
        while (j > 0 && (s[j] & 0xC0) == 0x80 && i - j < 4) j--;
        int l;
        if (!is_space_at(s + j, i - j, &l) || (size_t)l != i - j) break;
        i = j;
    }
    return n - i;
}

static size_t leading_space(const unsigned char *s, size_t n) {
    size_t i = 0;
    int l;
    while (i < n && is_space_at(s + i, n - i, &l)) i += (size_t)l;
    return i;
}

static int is_word_at(const unsigned char *s, size_t n) {
    int l, c = mw_bpe_char_class(s, n, &l);
    return c == MW_BPE_LETTER || c == MW_BPE_NUMBER || s[0] == '_';
}

typedef int (*piece_fn)(mw_tokenizer *t, const unsigned char *s, size_t n, ids_t *out);

/* Cuts the tokens of trie tr out of s[0..n) (leftmost-longest), emits their ids, and hands the
 * text between them to fn. */
static int split_added(mw_tokenizer *t, const trie_t *tr, const unsigned char *s, size_t n,
                       piece_fn fn, ids_t *out) {
    if (!tr->ntokens) return fn(t, s, n, out);
    size_t from = 0, i = 0;
    while (i < n) {
        int32_t k;
        size_t len = trie_match(tr, s + i, n - i, &k);
        if (!len) {
            i++;
            continue;
        }
        const added_tok *a = &t->added[k];
        size_t start = i, stop = i + len;
        if (a->single_word) {
            /* only as a word of its own: no letter, digit or '_' touches it */
            int before = 0;
            if (start > 0) {
                size_t q = start - 1;
                while (q > 0 && (s[q] & 0xC0) == 0x80 && start - q < 4) q--;
                before = is_word_at(s + q, n - q);
            }
            int after = stop < n && is_word_at(s + stop, n - stop);
            if (before || after) {
                i = stop;
                continue;
            }
        }
        if (a->lstrip) start -= trailing_space(s + from, start - from);
        if (a->rstrip) stop += leading_space(s + stop, n - stop);
        if (start > from && fn(t, s + from, start - from, out)) return -1;
        if (ids_push(out, a->id)) return -1;
        from = i = stop;
    }
    if (n > from) return fn(t, s + from, n - from, out);
    return 0;
}

static int piece_normalized(mw_tokenizer *t, const unsigned char *s, size_t n, ids_t *out) {
    return split_added(t, &t->trie_norm, s, n, encode_pretokens, out);
}

/* a piece of the raw text between non-normalized added tokens */
static int piece_raw(mw_tokenizer *t, const unsigned char *s, size_t n, ids_t *out) {
    if (t->nfc) {
        size_t i = 0;
        while (i < n && s[i] < 0x80) i++;
        if (i < n) { /* not all ASCII: normalize (ASCII text is already NFC) */
            t->norm.n = 0;
            if (nfc_append(&t->norm, s, n)) return -1;
            return piece_normalized(t, (const unsigned char *)t->norm.p, t->norm.n, out);
        }
    }
    return piece_normalized(t, s, n, out);
}

int mw_tokenizer_encode(int64_t **ids, size_t *n, mw_tokenizer *t, const char *text, size_t len) {
    *ids = NULL;
    *n = 0;
    if (!t) return mw_seterr("tokenizer: encode: no tokenizer");
    if (!text && len) return mw_seterr("tokenizer: encode: NULL text");
    ids_t out = {0};
    /* English text gives about one id per 4 bytes: reserve that much at once */
    if (len && ids_reserve(&out, len / 4 + 16)) return oom(t->name);
    if (len && split_added(t, &t->trie_raw, (const unsigned char *)text, len, piece_raw, &out)) {
        free(out.p);
        return tok_err(t->name, "encode: out of memory (%zu bytes of text)", len);
    }
    *ids = out.p;
    *n = out.n;
    return 0;
}

/* ------------------------------------------------------------------ decoding and lookups */

int mw_tokenizer_decode(char **text, size_t *len, const mw_tokenizer *t, const int64_t *ids,
                        size_t n) {
    *text = NULL;
    *len = 0;
    if (!t) return mw_seterr("tokenizer: decode: no tokenizer");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab_size || !t->tok[ids[i]])
            return tok_err(t->name, "decode: id %lld at position %zu is not a token (vocab_size %lld)",
                           (long long)ids[i], i, (long long)t->vocab_size);
        total += t->dec_len[ids[i]];
    }
    char *p = malloc(total + 1);
    if (!p) return oom(t->name);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(p + o, t->dec[ids[i]], t->dec_len[ids[i]]);
        o += t->dec_len[ids[i]];
    }
    p[o] = 0;
    *text = p;
    *len = o;
    return 0;
}

int64_t mw_tokenizer_vocab_size(const mw_tokenizer *t) { return t ? t->vocab_size : 0; }

const char *mw_tokenizer_id_to_token(const mw_tokenizer *t, int64_t id) {
    if (!t || id < 0 || id >= t->vocab_size) return NULL;
    return t->tok[id];
}

int64_t mw_tokenizer_token_to_id(const mw_tokenizer *t, const char *s, size_t len) {
    if (!t || !s) return -1;
    int32_t *id = smap_find(&t->added_map, s, len);
    if (!id) id = smap_find(&t->vocab, s, len);
    return id ? *id : -1;
}

int64_t mw_tokenizer_special_id(const mw_tokenizer *t, mw_tok_special which) {
    if (!t || (int)which < 0 || which >= MW_TOK_NSPECIAL) return -1;
    return t->special[which];
}

int mw_tokenizer_is_special(const mw_tokenizer *t, int64_t id) {
    return t && id >= 0 && id < t->vocab_size && t->is_special[id];
}

void mw_tokenizer_free(mw_tokenizer *t) {
    if (!t) return;
    free(t->name);
    free(t->tok);
    free(t->tok_len);
    free(t->dec);
    free(t->dec_len);
    free(t->is_special);
    arena_free(t->arena);
    free(t->vocab.slots);
    free(t->added_map.slots);
    mw_bpe_merges_free(&t->merges);
    free(t->added);
    free(t->trie_raw.nodes);
    free(t->trie_norm.nodes);
    free(t->norm.p);
    free(t->word.p);
    free(t->blw.p);
    free(t->sym);
    mw_bpe_scratch_free(&t->bpe);
    free(t->cache);
    free(t->cache_keys.p);
    free(t->cache_ids.p);
    free(t);
}

/* ------------------------------------------------------------------ building */

/* A token list as read from a file, before the tables are built. */
typedef struct { const char *s; size_t len; int32_t id; } entry;

static mw_tokenizer *tok_new(const char *name) {
    mw_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->name = strdup(name ? name : "(memory)");
    if (!t->name) {
        free(t);
        return NULL;
    }
    t->use_regex = 1;
    t->unk_id = -1;
    for (int i = 0; i < MW_TOK_NSPECIAL; i++) t->special[i] = -1;
    trie_init(&t->trie_raw);
    trie_init(&t->trie_norm);
    return t;
}

/* adds a model-vocabulary token; field names the place in the file for messages */
static int add_vocab(mw_tokenizer *t, const char *s, size_t len, double v, const char *field) {
    if (v != v || v < 0 || v >= MAX_IDS || v != (double)(int64_t)v)
        return tok_err(t->name, "%s[\"%.60s\"]: id %g is not an integer in [0, %d)", field, s, v, MAX_IDS);
    if (smap_find(&t->vocab, s, len))
        return tok_err(t->name, "%s: token \"%.60s\" appears twice", field, s);
    const char *copy = arena_dup(&t->arena, s, len);
    if (!copy || smap_put(&t->vocab, copy, len, (int32_t)v)) return oom(t->name);
    return 0;
}

/* Builds the id tables from the vocabulary and the added tokens: tok/dec per id, byte_id. */
static int build_tables(mw_tokenizer *t) {
    int64_t V = 0;
    for (size_t i = 0; i < t->vocab.cap; i++)
        if (t->vocab.slots[i].key && t->vocab.slots[i].val + 1 > V) V = t->vocab.slots[i].val + 1;
    for (int i = 0; i < t->nadded; i++)
        if (t->added[i].id + 1 > V) V = t->added[i].id + 1;
    if (V == 0) return tok_err(t->name, "model.vocab: the vocabulary is empty");
    t->vocab_size = V;
    t->tok = calloc((size_t)V, sizeof *t->tok);
    t->tok_len = calloc((size_t)V, sizeof *t->tok_len);
    t->dec = calloc((size_t)V, sizeof *t->dec);
    t->dec_len = calloc((size_t)V, sizeof *t->dec_len);
    t->is_special = calloc((size_t)V, 1);
    if (!t->tok || !t->tok_len || !t->dec || !t->dec_len || !t->is_special) return oom(t->name);
    for (size_t i = 0; i < t->vocab.cap; i++) {
        smap_slot *s = &t->vocab.slots[i];
        if (!s->key) continue;
        if (t->tok[s->val])
            return tok_err(t->name, "model.vocab: id %d is given to both \"%.60s\" and \"%.60s\"",
                           s->val, t->tok[s->val], s->key);
        t->tok[s->val] = s->key;
        t->tok_len[s->val] = s->len;
    }
    /* an added token's text wins over the model's for the same id, as in Hugging Face */
    for (int i = 0; i < t->nadded; i++) {
        t->tok[t->added[i].id] = t->added[i].orig;
        t->tok_len[t->added[i].id] = (uint32_t)t->added[i].orig_len;
    }
    for (int i = 0; i < 256; i++) {
        unsigned char u[4];
        size_t l = (size_t)mw_utf8_put(u, mw_bpe_byte_cp(i));
        int32_t *id = smap_find(&t->vocab, (const char *)u, l);
        t->byte_id[i] = id ? *id : -1;
    }
    return 0;
}

/* dec[id]: the token's characters mapped back through the byte-level alphabet; a token with a
 * character outside it decodes to its own UTF-8 text (Hugging Face's ByteLevel decoder). */
static int build_decode(mw_tokenizer *t) {
    buf_t b = {0};
    for (int64_t id = 0; id < t->vocab_size; id++) {
        const unsigned char *s = (const unsigned char *)t->tok[id];
        if (!s) continue;
        size_t n = t->tok_len[id];
        b.n = 0;
        int ok = 1;
        for (size_t i = 0; i < n && ok;) {
            int32_t cp;
            int l = mw_utf8_next(s + i, n - i, &cp);
            if (!l || mw_bpe_cp_byte(cp) < 0) {
                ok = 0;
                break;
            }
            unsigned char by = (unsigned char)mw_bpe_cp_byte(cp);
            if (buf_add(&b, &by, 1)) ok = -1;
            i += (size_t)l;
        }
        if (ok < 0) {
            free(b.p);
            return oom(t->name);
        }
        const char *src = ok ? b.p : (const char *)s;
        size_t len = ok ? b.n : n;
        const char *d = arena_dup(&t->arena, src ? src : "", len);
        if (!d) {
            free(b.p);
            return oom(t->name);
        }
        t->dec[id] = d;
        t->dec_len[id] = (uint32_t)len;
    }
    free(b.p);
    return 0;
}

/* Adds one merge "a b" (given as two strings) of rank r. */
static int add_merge(mw_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                     uint32_t r, const char *field, size_t idx) {
    int32_t *ia = smap_find(&t->vocab, a, alen), *ib = smap_find(&t->vocab, b, blen);
    if (!ia) return tok_err(t->name, "%s[%zu]: \"%.*s\" is not in model.vocab", field, idx, (int)(alen > 60 ? 60 : alen), a);
    if (!ib) return tok_err(t->name, "%s[%zu]: \"%.*s\" is not in model.vocab", field, idx, (int)(blen > 60 ? 60 : blen), b);
    char stack[256];
    char *ab = alen + blen <= sizeof stack ? stack : malloc(alen + blen);
    if (!ab) return oom(t->name);
    memcpy(ab, a, alen);
    memcpy(ab + alen, b, blen);
    int32_t *im = smap_find(&t->vocab, ab, alen + blen);
    int rc = 0;
    if (!im)
        rc = tok_err(t->name, "%s[%zu]: the merged token \"%.*s\" is not in model.vocab", field, idx,
                     (int)(alen + blen > 60 ? 60 : alen + blen), ab);
    else if (mw_bpe_merges_put(&t->merges, *ia, *ib, r, *im))
        rc = oom(t->name);
    if (ab != stack) free(ab);
    return rc;
}

/* Registers an added token (content as written) and puts it in its trie. */
static int add_added(mw_tokenizer *t, const char *content, size_t len, int32_t id, int special,
                     int normalized, int lstrip, int rstrip, int single_word, const char *field) {
    if (len == 0) return tok_err(t->name, "%s: empty \"content\"", field);
    if (id < 0 || id >= MAX_IDS) return tok_err(t->name, "%s: id %d out of range", field, id);
    added_tok *p = realloc(t->added, (size_t)(t->nadded + 1) * sizeof *p);
    if (!p) return oom(t->name);
    t->added = p;
    const char *orig = arena_dup(&t->arena, content, len);
    if (!orig || smap_put(&t->added_map, orig, len, id)) return oom(t->name);
    const char *match = orig;
    size_t mlen = len;
    if (normalized && t->nfc) { /* matched in normalized text, so normalized too */
        buf_t b = {0};
        if (nfc_append(&b, (const unsigned char *)content, len)) {
            free(b.p);
            return oom(t->name);
        }
        match = arena_dup(&t->arena, b.p ? b.p : "", b.n);
        mlen = b.n;
        free(b.p);
        if (!match) return oom(t->name);
    }
    int k = t->nadded++;
    t->added[k] = (added_tok){orig, len, match, mlen, id, special != 0, normalized != 0, lstrip != 0,
                              rstrip != 0, single_word != 0};
    if (mlen && trie_add(normalized ? &t->trie_norm : &t->trie_raw, match, mlen, k))
        return oom(t->name);
    return 0;
}

static int finish(mw_tokenizer *t) {
    if (build_tables(t) || build_decode(t)) return -1;
    for (int i = 0; i < t->nadded; i++)
        if (t->added[i].special) t->is_special[t->added[i].id] = 1;
    /* conventional special tokens, overridable by a folder's tokenizer_config.json */
    int64_t eot = mw_tokenizer_token_to_id(t, "<|endoftext|>", 13);
    t->special[MW_TOK_BOS] = eot;
    t->special[MW_TOK_EOS] = eot;
    t->special[MW_TOK_PAD] = mw_tokenizer_token_to_id(t, "<|padding|>", 11);
    t->special[MW_TOK_UNK] = t->unk_id;
    return 0;
}

/* ------------------------------------------------------------------ tokenizer.json */

static const cJSON *get_field(const cJSON *obj, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* bool field with a default; -1 (and an error) when it has another type */
static int get_bool(mw_tokenizer *t, const cJSON *obj, const char *key, int dflt, const char *where) {
    const cJSON *v = get_field(obj, key);
    if (!v || cJSON_IsNull(v)) return dflt;
    if (!cJSON_IsBool(v)) return tok_err(t->name, "%s.%s: expected true or false", where, key);
    return cJSON_IsTrue(v) ? 1 : 0;
}

static const char *type_of(const cJSON *v) {
    if (!v) return "missing";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    return "an object";
}

static int parse_normalizer(mw_tokenizer *t, const cJSON *n, const char *where) {
    if (!n || cJSON_IsNull(n)) return 0;
    const cJSON *ty = get_field(n, "type");
    if (!cJSON_IsObject(n) || !cJSON_IsString(ty))
        return tok_err(t->name, "%s: expected null or an object with a string \"type\"", where);
    if (strcmp(ty->valuestring, "NFC") == 0) {
        t->nfc = 1;
        return 0;
    }
    if (strcmp(ty->valuestring, "Sequence") == 0) {
        const cJSON *list = get_field(n, "normalizers");
        if (!cJSON_IsArray(list)) return tok_err(t->name, "%s.normalizers: expected an array", where);
        const cJSON *e;
        cJSON_ArrayForEach(e, list) if (parse_normalizer(t, e, "normalizer.normalizers[]")) return -1;
        return 0;
    }
    return tok_err(t->name, "%s.type: \"%.40s\" is not supported (only NFC or null)", where,
                   ty->valuestring);
}

static int parse_pretokenizer(mw_tokenizer *t, const cJSON *p) {
    const cJSON *ty = get_field(p, "type");
    if (!p || !cJSON_IsObject(p) || !cJSON_IsString(ty))
        return tok_err(t->name, "pre_tokenizer: expected an object with a string \"type\" (got %s)",
                       type_of(p));
    if (strcmp(ty->valuestring, "Sequence") == 0) {
        const cJSON *list = get_field(p, "pretokenizers");
        if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) != 1)
            return tok_err(t->name, "pre_tokenizer.pretokenizers: only a sequence of one ByteLevel is supported");
        return parse_pretokenizer(t, cJSON_GetArrayItem(list, 0));
    }
    if (strcmp(ty->valuestring, "ByteLevel") != 0)
        return tok_err(t->name, "pre_tokenizer.type: \"%.40s\" is not supported (only ByteLevel)",
                       ty->valuestring);
    int a = get_bool(t, p, "add_prefix_space", 1, "pre_tokenizer");
    int r = get_bool(t, p, "use_regex", 1, "pre_tokenizer");
    if (a < 0 || r < 0) return -1;
    t->add_prefix_space = a;
    t->use_regex = r;
    return 0;
}

static int parse_added(mw_tokenizer *t, const cJSON *list) {
    if (!list || cJSON_IsNull(list)) return 0;
    if (!cJSON_IsArray(list)) return tok_err(t->name, "added_tokens: expected an array, got %s", type_of(list));
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, list) {
        char field[64];
        snprintf(field, sizeof field, "added_tokens[%d]", i++);
        const cJSON *id = get_field(e, "id"), *content = get_field(e, "content");
        if (!cJSON_IsObject(e)) return tok_err(t->name, "%s: expected an object", field);
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= MAX_IDS ||
            id->valuedouble != (double)(int64_t)id->valuedouble)
            return tok_err(t->name, "%s.id: expected an integer in [0, %d), got %s", field, MAX_IDS, type_of(id));
        if (!cJSON_IsString(content))
            return tok_err(t->name, "%s.content: expected a string, got %s", field, type_of(content));
        int special = get_bool(t, e, "special", 0, field);
        int normalized = get_bool(t, e, "normalized", !special, field);
        int lstrip = get_bool(t, e, "lstrip", 0, field), rstrip = get_bool(t, e, "rstrip", 0, field);
        int single = get_bool(t, e, "single_word", 0, field);
        if (special < 0 || normalized < 0 || lstrip < 0 || rstrip < 0 || single < 0) return -1;
        if (add_added(t, content->valuestring, strlen(content->valuestring), (int32_t)id->valuedouble,
                      special, normalized, lstrip, rstrip, single, field))
            return -1;
    }
    return 0;
}

static int parse_model(mw_tokenizer *t, const cJSON *m) {
    if (!cJSON_IsObject(m)) return tok_err(t->name, "model: expected an object, got %s", type_of(m));
    const cJSON *ty = get_field(m, "type");
    if (ty && !(cJSON_IsString(ty) && strcmp(ty->valuestring, "BPE") == 0))
        return tok_err(t->name, "model.type: only \"BPE\" is supported (got %s%.40s)",
                       cJSON_IsString(ty) ? "" : type_of(ty), cJSON_IsString(ty) ? ty->valuestring : "");
    const cJSON *v;
    if ((v = get_field(m, "dropout")) && !cJSON_IsNull(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0))
        return tok_err(t->name, "model.dropout: BPE dropout is not supported");
    if ((v = get_field(m, "byte_fallback")) && cJSON_IsTrue(v))
        return tok_err(t->name, "model.byte_fallback: not supported");
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++)
        if ((v = get_field(m, affix[i])) && !cJSON_IsNull(v) &&
            !(cJSON_IsString(v) && v->valuestring[0] == 0))
            return tok_err(t->name, "model.%s: only empty or null is supported", affix[i]);
    int fu = get_bool(t, m, "fuse_unk", 0, "model"), im = get_bool(t, m, "ignore_merges", 0, "model");
    if (fu < 0 || im < 0) return -1;
    t->fuse_unk = fu;
    t->ignore_merges = im;

    const cJSON *vocab = get_field(m, "vocab");
    if (!cJSON_IsObject(vocab)) return tok_err(t->name, "model.vocab: expected an object, got %s", type_of(vocab));
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e))
            return tok_err(t->name, "model.vocab[\"%.60s\"]: expected an integer id, got %s", e->string, type_of(e));
        if (add_vocab(t, e->string, strlen(e->string), e->valuedouble, "model.vocab")) return -1;
    }
    const cJSON *merges = get_field(m, "merges");
    if (!cJSON_IsArray(merges)) return tok_err(t->name, "model.merges: expected an array, got %s", type_of(merges));
    size_t i = 0;
    cJSON_ArrayForEach(e, merges) {
        if (cJSON_IsString(e)) {
            const char *sp = strchr(e->valuestring, ' ');
            if (!sp) return tok_err(t->name, "model.merges[%zu]: \"%.60s\" is not two tokens separated by a space", i, e->valuestring);
            if (add_merge(t, e->valuestring, (size_t)(sp - e->valuestring), sp + 1, strlen(sp + 1), (uint32_t)i, "model.merges", i)) return -1;
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            const char *a = e->child->valuestring, *b = e->child->next->valuestring;
            if (add_merge(t, a, strlen(a), b, strlen(b), (uint32_t)i, "model.merges", i)) return -1;
        } else {
            return tok_err(t->name, "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"], got %s", i, type_of(e));
        }
        i++;
    }
    const cJSON *unk = get_field(m, "unk_token");
    if (unk && !cJSON_IsNull(unk)) {
        if (!cJSON_IsString(unk)) return tok_err(t->name, "model.unk_token: expected a string or null");
        int32_t *id = smap_find(&t->vocab, unk->valuestring, strlen(unk->valuestring));
        if (!id) return tok_err(t->name, "model.unk_token: \"%.60s\" is not in model.vocab", unk->valuestring);
        t->unk_id = *id;
    }
    return 0;
}

int mw_tokenizer_from_json(mw_tokenizer **out, const char *json, size_t len, const char *name) {
    *out = NULL;
    mw_tokenizer *t = tok_new(name);
    if (!t) return oom(name);
    cJSON *root = cJSON_ParseWithLength(json, len);
    int rc = 0;
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= json && at <= json + len ? (long)(at - json) : -1;
        rc = tok_err(t->name, "not valid JSON (near byte %ld)", off);
    } else if (!cJSON_IsObject(root)) {
        rc = tok_err(t->name, "expected a JSON object at the top");
    } else {
        const cJSON *dec = get_field(root, "decoder"), *post = get_field(root, "post_processor");
        const cJSON *dty = dec ? get_field(dec, "type") : NULL, *pty = post ? get_field(post, "type") : NULL;
        if (dec && !cJSON_IsNull(dec) && !(cJSON_IsString(dty) && strcmp(dty->valuestring, "ByteLevel") == 0))
            rc = tok_err(t->name, "decoder: only ByteLevel (or null) is supported");
        else if (post && !cJSON_IsNull(post) && !(cJSON_IsString(pty) && strcmp(pty->valuestring, "ByteLevel") == 0))
            rc = tok_err(t->name, "post_processor: only ByteLevel (or null) is supported");
        else if (!get_field(root, "model"))
            rc = tok_err(t->name, "model: missing");
        else
            rc = parse_model(t, get_field(root, "model"));
        /* normalizer before the added tokens: normalized added tokens are matched in NFC form */
        if (!rc) rc = parse_normalizer(t, get_field(root, "normalizer"), "normalizer");
        if (!rc) rc = parse_pretokenizer(t, get_field(root, "pre_tokenizer"));
        if (!rc) rc = parse_added(t, get_field(root, "added_tokens"));
        if (!rc) rc = finish(t);
    }
    cJSON_Delete(root);
    if (rc) {
        mw_tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

/* ------------------------------------------------------------------ vocab.json + merges.txt */

int mw_tokenizer_from_gpt2(mw_tokenizer **out, const char *vocab, size_t vocab_len,
                           const char *merges, size_t merges_len, const char *name) {
    *out = NULL;
    mw_tokenizer *t = tok_new(name);
    if (!t) return oom(name);
    /* GPT-2's own settings: no normalizer, ByteLevel without prefix space, with the pattern */
    t->add_prefix_space = 0;
    cJSON *root = cJSON_ParseWithLength(vocab, vocab_len);
    int rc = 0;
    if (!root || !cJSON_IsObject(root)) {
        rc = tok_err(t->name, "vocab.json: expected a JSON object token -> id");
    } else {
        const cJSON *e;
        cJSON_ArrayForEach(e, root) {
            if (!cJSON_IsNumber(e)) {
                rc = tok_err(t->name, "vocab.json[\"%.60s\"]: expected an integer id, got %s", e->string, type_of(e));
                break;
            }
            if ((rc = add_vocab(t, e->string, strlen(e->string), e->valuedouble, "vocab.json"))) break;
        }
    }
    cJSON_Delete(root);
    /* merges.txt: an optional "#version" line, then one "a b" per line */
    size_t i = 0, line = 0, rank = 0;
    while (!rc && i < merges_len) {
        size_t j = i;
        while (j < merges_len && merges[j] != '\n') j++;
        size_t e = j;
        if (e > i && merges[e - 1] == '\r') e--;
        line++;
        if (e > i && !(e - i >= 8 && memcmp(merges + i, "#version", 8) == 0)) {
            const char *sp = memchr(merges + i, ' ', e - i);
            if (!sp || memchr(sp + 1, ' ', (size_t)(merges + e - sp - 1)))
                rc = tok_err(t->name, "merges.txt line %zu: expected two tokens separated by one space", line);
            else if (memchr(merges + i, 0, e - i))
                rc = tok_err(t->name, "merges.txt line %zu: NUL byte", line);
            else
                rc = add_merge(t, merges + i, (size_t)(sp - merges - i), sp + 1, (size_t)(merges + e - sp - 1),
                               (uint32_t)rank, "merges.txt line", line);
            rank++;
        }
        i = j + 1;
    }
    /* <|endoftext|> is GPT-2's one special token, cut out of text as the Hugging Face loader does */
    if (!rc) {
        int32_t *eot = smap_find(&t->vocab, "<|endoftext|>", 13);
        if (eot) rc = add_added(t, "<|endoftext|>", 13, *eot, 1, 0, 0, 0, 0, "vocab.json");
    }
    if (!rc) rc = finish(t);
    if (rc) {
        mw_tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

/* ------------------------------------------------------------------ files */

static int read_file(char **data, size_t *len, const char *path) {
    return mw_read_file(data, len, path, "tokenizer");
}

int mw_tokenizer_encode_file(int64_t **ids, size_t *n, mw_tokenizer *t, const char *path) {
    *ids = NULL;
    *n = 0;
    char *data;
    size_t len;
    if (read_file(&data, &len, path)) return -1;
    int rc = mw_tokenizer_encode(ids, n, t, data, len);
    free(data);
    return rc;
}

int mw_tokenizer_load_json(mw_tokenizer **out, const char *path) {
    *out = NULL;
    char *data;
    size_t len;
    if (read_file(&data, &len, path)) return -1;
    int rc = mw_tokenizer_from_json(out, data, len, path);
    free(data);
    return rc;
}

int mw_tokenizer_load_gpt2(mw_tokenizer **out, const char *vocab_json, const char *merges_txt) {
    *out = NULL;
    char *v, *m;
    size_t vl, ml;
    if (read_file(&v, &vl, vocab_json)) return -1;
    if (read_file(&m, &ml, merges_txt)) {
        free(v);
        return -1;
    }
    /* messages name the folder's two files */
    char name[1024];
    snprintf(name, sizeof name, "%s + %s", vocab_json, merges_txt);
    int rc = mw_tokenizer_from_gpt2(out, v, vl, m, ml, name);
    free(v);
    free(m);
    return rc;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* the token text named by a config value: "text" or {"content": "text"}; NULL otherwise */
static const char *config_token(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = get_field(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

/* bos/eos/pad/unk from a folder's special_tokens_map.json, then tokenizer_config.json */
static int read_special_config(mw_tokenizer *t, const char *dir) {
    const char *files[] = {"special_tokens_map.json", "tokenizer_config.json"};
    const char *keys[MW_TOK_NSPECIAL] = {"bos_token", "eos_token", "pad_token", "unk_token"};
    for (int f = 0; f < 2; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        if (!file_exists(path)) continue;
        char *data;
        size_t len;
        if (read_file(&data, &len, path)) return -1;
        cJSON *root = cJSON_ParseWithLength(data, len);
        free(data);
        if (!root || !cJSON_IsObject(root)) {
            cJSON_Delete(root);
            return tok_err(path, "not a JSON object");
        }
        for (int k = 0; k < MW_TOK_NSPECIAL; k++) {
            const cJSON *v = get_field(root, keys[k]);
            if (!v) continue;
            if (cJSON_IsNull(v)) {
                t->special[k] = -1;
                continue;
            }
            const char *s = config_token(v);
            int64_t id = s ? mw_tokenizer_token_to_id(t, s, strlen(s)) : -1;
            if (!s || id < 0) {
                int rc = tok_err(path, "%s: %s%.60s%s is not a token of the tokenizer", keys[k],
                                 s ? "\"" : "", s ? s : "(not a string)", s ? "\"" : "");
                cJSON_Delete(root);
                return rc;
            }
            t->special[k] = id;
        }
        cJSON_Delete(root);
    }
    return 0;
}

int mw_tokenizer_load(mw_tokenizer **out, const char *path) {
    *out = NULL;
    struct stat st;
    if (!path || stat(path, &st) != 0)
        return tok_err(path, "cannot open: %s", path ? strerror(errno) : "no path");
    if (!S_ISDIR(st.st_mode)) return mw_tokenizer_load_json(out, path);
    char a[4096], b[4096];
    int rc;
    snprintf(a, sizeof a, "%s/tokenizer.json", path);
    if (file_exists(a)) {
        rc = mw_tokenizer_load_json(out, a);
    } else {
        snprintf(a, sizeof a, "%s/vocab.json", path);
        snprintf(b, sizeof b, "%s/merges.txt", path);
        if (!file_exists(a) || !file_exists(b))
            return tok_err(path, "the folder holds neither tokenizer.json nor vocab.json + merges.txt");
        rc = mw_tokenizer_load_gpt2(out, a, b);
    }
    if (rc) return -1;
    if (read_special_config(*out, path)) {
        mw_tokenizer_free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}
