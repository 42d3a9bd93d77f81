/* tokenizer.c - BPE tokenizers, id for id with Hugging Face `tokenizers` and SentencePiece.
 * See tokenizer.h for the pipeline and the treatment of invalid UTF-8; bpe.c holds the byte-level
 * alphabet, GPT-2's pre-tokenizer and the merge loop (shared with the BPE trainer).
 *
 * Data layout
 *   tok[V], tok_len[V]  the token text as written in the file (byte-level form), V = vocab_size;
 *                       NULL where no token has that id
 *   dec[V], dec_len[V]  the bytes each id decodes to under ByteLevel
 *   vocab               hash: token text -> id (model vocabulary only)
 *   merges              hash: (left id, right id) -> (rank, merged id)
 *   byte_id[256]        id of the one-byte symbol of each byte value, -1 when absent
 *   added[NA]           the added tokens, cut out of the text before BPE, found with two byte tries
 *                       (raw: "normalized": false; norm: "normalized": true, matched normalized)
 *   norms, pres, decs   the file's normalizer, pre-tokenizer and decoder steps, in order
 *   cache               hash: pre-token bytes -> its ids, for words up to CACHE_MAXWORD bytes
 * Strings live in arenas (one malloc per large block), so loading 50k tokens costs few mallocs. */
#define _GNU_SOURCE /* memmem */
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
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "bpe.h"
#include "mw_tensor.h"
#include "spm.h"

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
/* the bytes at off in a piece list's text; a list of empty pieces has no text buffer at all, and
 * offsetting a null pointer is undefined, so it gives "" */
static const char *piece_at(const buf_t *text, size_t off) { return text->p ? text->p + off : ""; }

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

/* The steps of a tokenizer.json's normalizer, pre-tokenizer and decoder, in file order. */
typedef enum { NORM_NFC, NORM_NFKC, NORM_PREPEND, NORM_REPLACE } norm_kind;
typedef enum { PRE_BYTELEVEL, PRE_SPLIT, PRE_DIGITS, PRE_PUNCT, PRE_METASPACE } pre_kind;
typedef enum { DEC_BYTELEVEL, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE } dec_kind;
/* what a split does with the pieces its pattern matched (Hugging Face's SplitDelimiterBehavior) */
typedef enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS } split_kind;
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

typedef struct {
    int kind;                 /* norm_kind, pre_kind or dec_kind */
    const char *pat, *with;   /* Prepend, Metaspace, Strip: pat; Replace: pat -> with (arena) */
    size_t pat_len, with_len;
    pcre2_code *re;           /* Split and Replace with {"Regex": ...} */
    split_kind behavior;      /* Split, Digits, Punctuation */
    int invert, add_prefix_space, use_regex, split, scheme, start, stop;
} step;

/* A list of pieces of text (pre-tokenization works on one). lead[k]: how many bytes at the start
 * of piece k come from the first character of the text (0: none) - Hugging Face's "original
 * offset 0", which decides Metaspace's prepend_scheme "first". */
typedef struct { buf_t text; size_t *off, *len, *lead; size_t n, cap; } plist;

/* a stretch of a piece, matched by a pattern or not */
typedef struct { size_t a, b; int match; } seg;


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
    /* beyond byte-level BPE (generic = 1): the steps of the file, symbols from characters */
    int generic;                  /* 0: the byte-level path of GPT-2 and NeoX (NFC at most) */
    int sym_bytes;                /* symbols are bytes through byte_id; else characters in vocab */
    int byte_fallback;
    int32_t byte_tok[256];        /* id of "<0xXX>" per byte (byte_fallback), -1 when absent */
    step *norms, *pres, *decs;
    int nnorm, npre, ndec;
    int64_t *prefix, *suffix;     /* the post-processor's ids around the text */
    int nprefix, nsuffix;
    size_t chunk_lead;            /* the piece being encoded: its bytes from the text's first character */
    pcre2_match_data *md;
    mw_spm *spm;                  /* a SentencePiece model: encode and decode go through it */
    int64_t special[MW_TOK_NSPECIAL];
    /* scratch, reused across calls (shapes grow to the largest piece seen) */
    buf_t norm;                   /* NFC text of one piece, bytes */
    buf_t word;                   /* one piece with its prefix space, bytes */
    buf_t blw;                    /* one pre-token in byte-level form (ignore_merges), bytes */
    buf_t clean, norm2;           /* the text with invalid UTF-8 replaced; normalizer scratch */
    plist pa, pb;                 /* pre-tokenization: pieces in, pieces out */
    seg *segs;
    size_t nsegs, segs_cap;
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

/* one symbol for BPE: unknown ones become unk (fused with an unk before it when fuse_unk) or,
 * with no unk token, are dropped, as Hugging Face does */
static inline void push_sym(mw_tokenizer *t, size_t *m, int32_t id) {
    if (id < 0) {
        if (t->unk_id < 0) return;
        if (t->fuse_unk && *m > 0 && t->sym[*m - 1] == t->unk_id) return;
        id = t->unk_id;
    }
    t->sym[(*m)++] = id;
}

/* BPE of one pre-token w[0..n): appends its ids to out. Symbols are w's bytes (byte-level
 * models) or its characters looked up in the vocabulary, a character missing from it becoming
 * its bytes' "<0xXX>" tokens under byte_fallback. Each step merges the pair of lowest rank, the
 * leftmost among equal ranks (Hugging Face's order). */
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
    if (t->sym_bytes) {
        for (size_t i = 0; i < n; i++) push_sym(t, &m, t->byte_id[w[i]]);
    } else {
        /* Hugging Face holds an unknown character back until the next character found in the
         * vocabulary or the next unknown one (then fused or not), so "<0xXX>" tokens of a byte
         * fallback come out before an unk that precedes them */
        int pending = 0;
        for (size_t i = 0; i < n;) {
            int32_t cp;
            int l = mw_utf8_next(w + i, n - i, &cp);
            if (!l) l = 1;
            int32_t *id = smap_find(&t->vocab, (const char *)w + i, (size_t)l);
            i += (size_t)l;
            if (id) {
                if (pending) t->sym[m++] = t->unk_id;
                pending = 0;
                t->sym[m++] = *id;
                continue;
            }
            int fell = t->byte_fallback;
            for (int k = 0; fell && k < l; k++) fell = t->byte_tok[w[i - (size_t)l + (size_t)k]] >= 0;
            for (int k = 0; fell && k < l; k++) t->sym[m++] = t->byte_tok[w[i - (size_t)l + (size_t)k]];
            if (fell || t->unk_id < 0) continue;
            if (pending && !t->fuse_unk) t->sym[m++] = t->unk_id;
            pending = 1;
        }
        if (pending) t->sym[m++] = t->unk_id;
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
    if (t->ignore_merges && !t->sym_bytes) {
        int32_t *id = smap_find(&t->vocab, (const char *)w, n);
        if (id) return ids_push(out, *id);
    } else if (t->ignore_merges) {
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

/* ------------------------------------------------------------------ beyond byte-level BPE */

/* out = s[0..n) with each byte that starts no well-formed UTF-8 sequence replaced by U+FFFD */
static int clean_utf8(buf_t *out, const unsigned char *s, size_t n) {
    out->n = 0;
    size_t from = 0, i = 0;
    while (i < n) {
        int32_t cp;
        int l = s[i] < 0x80 ? 1 : mw_utf8_next(s + i, n - i, &cp);
        if (l) {
            i += (size_t)l;
            continue;
        }
        if (buf_add(out, s + from, i - from) || buf_add(out, "\xEF\xBF\xBD", 3)) return -1;
        from = ++i;
    }
    return buf_add(out, s + from, n - from) || buf_reserve(out, 1);
}

static int utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int32_t cp;
        int l = mw_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

/* the next match of re in s[from..n) (valid UTF-8): 1 and [*a, *b), 0 when none, -1 on error */
static int re_next(pcre2_match_data *md, const pcre2_code *re, const unsigned char *s, size_t n,
                   size_t from, size_t *a, size_t *b) {
    int rc = pcre2_match(re, s, n, from, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return -1;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *a = ov[0];
    *b = ov[1];
    return 1;
}

/* out = s with every match of the step's pattern (a string, or a regex) replaced by its "with".
 * lead (may be NULL): the length of a prefix of s, moved to the length of what it became. */
static int replace_all(mw_tokenizer *t, const step *st, buf_t *out, const unsigned char *s, size_t n,
                       size_t *lead) {
    size_t from = 0, i = 0, base = out->n;
    int done = !lead || !*lead;
    while (i <= n) {
        size_t a, b;
        if (st->re) {
            int r = re_next(t->md, st->re, s, n, i, &a, &b);
            if (r < 0) return -1;
            if (!r) break;
        } else {
            const unsigned char *q = st->pat_len ? memmem(s + i, n - i, st->pat, st->pat_len) : NULL;
            if (!q) break;
            a = (size_t)(q - s);
            b = a + st->pat_len;
        }
        if (b == a) { /* an empty match replaces nothing; step over one character */
            int32_t cp;
            int l = a < n ? mw_utf8_next(s + a, n - a, &cp) : 1;
            i = a + (size_t)(l ? l : 1);
            continue;
        }
        if (!done && *lead <= a) {
            *lead = out->n - base + (*lead - from);
            done = 1;
        }
        if (buf_add(out, s + from, a - from) || buf_add(out, st->with, st->with_len)) return -1;
        if (!done && *lead <= b) { /* the prefix ends inside the match: it takes the replacement */
            *lead = out->n - base;
            done = 1;
        }
        from = i = b;
    }
    if (!done) *lead = out->n - base + (*lead - from);
    return buf_add(out, s + from, n - from);
}

/* NFC or NFKC of s[0..n) appended to b */
static int unicode_form(buf_t *b, const unsigned char *s, size_t n, int compat) {
    if (!compat) return nfc_append(b, s, n);
    if (!n) return 0;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t m = utf8proc_map(s, (utf8proc_ssize_t)n, &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    int rc = m < 0 || buf_add(b, dst, (size_t)m);
    free(dst);
    return rc ? -1 : 0;
}

/* out = the normalizer's steps applied to s[0..n) (valid UTF-8). lead (may be NULL): the bytes of
 * s that come from the text's first character, moved to what they became (Prepend's text joins
 * them, as Hugging Face aligns it with the first character). */
static int normalize(mw_tokenizer *t, buf_t *out, const unsigned char *s, size_t n, size_t *lead) {
    out->n = 0;
    if (buf_add(out, s, n)) return -1;
    for (int k = 0; k < t->nnorm; k++) {
        const step *st = &t->norms[k];
        buf_t *b = &t->norm2;
        const unsigned char *a = (const unsigned char *)out->p;
        size_t an = out->n;
        b->n = 0;
        int rc = 0;
        switch ((norm_kind)st->kind) {
        case NORM_NFC:
        case NORM_NFKC:
            rc = unicode_form(b, a, an, st->kind == NORM_NFKC);
            if (!rc && lead && *lead) { /* the prefix's own normal form, measured apart */
                size_t mark = b->n;
                rc = unicode_form(b, a, *lead < an ? *lead : an, st->kind == NORM_NFKC);
                *lead = b->n - mark;
                b->n = mark;
            }
            break;
        case NORM_PREPEND:
            if (an) rc = buf_add(b, st->pat, st->pat_len) || buf_add(b, a, an);
            if (an && lead && *lead) *lead += st->pat_len;
            break;
        case NORM_REPLACE:
            rc = replace_all(t, st, b, a, an, lead);
            break;
        }
        if (rc) return -1;
        buf_t tmp = *out; /* the result becomes out; out's old buffer the next scratch */
        *out = *b;
        *b = tmp;
    }
    return 0;
}

static void plist_clear(plist *p) {
    p->n = 0;
    p->text.n = 0;
}

static int plist_add(plist *p, const void *s, size_t n, size_t lead) {
    if (n == 0) return 0;
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        size_t *o = realloc(p->off, cap * sizeof *o);
        if (!o) return -1;
        p->off = o;
        if (!(o = realloc(p->len, cap * sizeof *o))) return -1;
        p->len = o;
        if (!(o = realloc(p->lead, cap * sizeof *o))) return -1;
        p->lead = o;
        p->cap = cap;
    }
    p->off[p->n] = p->text.n;
    p->len[p->n] = n;
    p->lead[p->n] = lead < n ? lead : n;
    if (buf_add(&p->text, s, n)) return -1;
    p->n++;
    return 0;
}

static void plist_free(plist *p) {
    free(p->text.p);
    free(p->off);
    free(p->len);
    free(p->lead);
}

static int segs_push(mw_tokenizer *t, size_t a, size_t b, int match) {
    if (t->nsegs == t->segs_cap) {
        size_t cap = t->segs_cap ? 2 * t->segs_cap : 64;
        seg *g = realloc(t->segs, cap * sizeof *g);
        if (!g) return -1;
        t->segs = g;
        t->segs_cap = cap;
    }
    t->segs[t->nsegs++] = (seg){a, b, match};
    return 0;
}

/* segments of s: the matches of re (or of the string pat), and the stretches between them */
static int segs_pattern(mw_tokenizer *t, const pcre2_code *re, const char *pat, size_t pat_len,
                        const unsigned char *s, size_t n) {
    t->nsegs = 0;
    size_t prev = 0, from = 0;
    while (from <= n) {
        size_t a, b;
        if (re) {
            int r = re_next(t->md, re, s, n, from, &a, &b);
            if (r < 0) return -1;
            if (!r) break;
        } else {
            const unsigned char *q = memmem(s + from, n - from, pat, pat_len);
            if (!q) break;
            a = (size_t)(q - s);
            b = a + pat_len;
        }
        if (b == a) { /* empty matches split nothing */
            int32_t cp;
            int l = a < n ? mw_utf8_next(s + a, n - a, &cp) : 1;
            from = a + (size_t)(l ? l : 1);
            continue;
        }
        if (prev != a && segs_push(t, prev, a, 0)) return -1;
        if (segs_push(t, a, b, 1)) return -1;
        prev = from = b;
    }
    return prev != n ? segs_push(t, prev, n, 0) : 0;
}

static int is_numeric_cp(int32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t k = utf8proc_category(cp);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* Rust's is_ascii_punctuation or a Unicode punctuation category (Hugging Face's is_punc) */
static int is_punct_cp(int32_t cp) {
    if (cp < 0x80) return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) ||
                          (cp >= 0x5B && cp <= 0x60) || (cp >= 0x7B && cp <= 0x7E);
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return 1;
    default:
        return 0;
    }
}

/* segments of s: each character for which pred holds is a match of its own */
static int segs_chars(mw_tokenizer *t, int (*pred)(int32_t), const unsigned char *s, size_t n) {
    t->nsegs = 0;
    size_t prev = 0;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        int l = mw_utf8_next(s + i, n - i, &cp);
        if (!l) { /* not reached: the text is valid UTF-8 here */
            l = 1;
            cp = -1;
        }
        if (cp >= 0 && pred(cp)) {
            if (prev < i && segs_push(t, prev, i, 0)) return -1;
            if (segs_push(t, i, i + (size_t)l, 1)) return -1;
            prev = i + (size_t)l;
        }
        i += (size_t)l;
    }
    return prev < n ? segs_push(t, prev, n, 0) : 0;
}

/* Appends the pieces of s that the segments make under behavior b (Hugging Face's
 * NormalizedString::split): merged, isolated or removed matches. */
static int emit_segs(mw_tokenizer *t, plist *out, const unsigned char *s, size_t lead, split_kind b,
                     int invert) {
    seg *g = t->segs;
    size_t ng = t->nsegs, o = 0;
    if (invert)
        for (size_t k = 0; k < ng; k++) g[k].match = !g[k].match;
    int prev = 0;
    if (b == SPLIT_MERGED_NEXT) { /* folded from the right, then put back in order */
        for (size_t k = ng; k-- > 0;) {
            seg x = g[k];
            if (x.match && !prev && o > 0) g[ng - o].a = x.a;
            else g[ng - ++o] = (seg){x.a, x.b, 0};
            prev = x.match;
        }
        g += ng - o;
    } else {
        for (size_t k = 0; k < ng; k++) {
            seg x = g[k];
            int keep = b == SPLIT_REMOVED ? x.match : 0; /* "match" now means "remove" */
            if (b == SPLIT_CONTIGUOUS && x.match == prev && o > 0) g[o - 1].b = x.b;
            else if (b == SPLIT_MERGED_PREV && x.match && !prev && o > 0) g[o - 1].b = x.b;
            else g[o++] = (seg){x.a, x.b, keep};
            prev = x.match;
        }
    }
    for (size_t k = 0; k < o; k++)
        if (!g[k].match && plist_add(out, s + g[k].a, g[k].b - g[k].a, lead > g[k].a ? lead - g[k].a : 0))
            return -1;
    return 0;
}

/* One pre-tokenizer step over the pieces of in, the resulting pieces into out. last: no step
 * follows (a ByteLevel step then leaves the bytes as they are: BPE reads them directly). */
static int pre_step(mw_tokenizer *t, const step *st, int last, const plist *in, plist *out) {
    for (size_t k = 0; k < in->n; k++) {
        const unsigned char *s = (const unsigned char *)piece_at(&in->text, in->off[k]);
        size_t n = in->len[k];
        size_t lead = in->lead[k];
        switch ((pre_kind)st->kind) {
        case PRE_BYTELEVEL: {
            if (st->add_prefix_space && s[0] != ' ') {
                t->word.n = 0;
                if (buf_add(&t->word, " ", 1) || buf_add(&t->word, s, n)) return -1;
                s = (const unsigned char *)t->word.p;
                n = t->word.n;
                if (lead) lead++;
            }
            for (size_t i = 0; i < n;) {
                size_t l = st->use_regex ? mw_bpe_pretoken_len(s + i, n - i) : n - i;
                size_t sub = lead > i ? lead - i : 0;
                if (last) {
                    if (plist_add(out, s + i, l, sub)) return -1;
                } else { /* later steps see the byte-level characters, as in Hugging Face */
                    t->blw.n = 0;
                    size_t spelled_lead = 0;
                    for (size_t j = 0; j < l; j++) {
                        const char *c = mw_bpe_byte_char(s[i + j]);
                        if (buf_add(&t->blw, c, strlen(c))) return -1;
                        if (j < sub) spelled_lead = t->blw.n;
                    }
                    if (plist_add(out, t->blw.p, t->blw.n, spelled_lead)) return -1;
                }
                i += l;
            }
            break;
        }
        case PRE_SPLIT:
            if (segs_pattern(t, st->re, st->pat, st->pat_len, s, n) || emit_segs(t, out, s, lead, st->behavior, st->invert))
                return -1;
            break;
        case PRE_DIGITS:
        case PRE_PUNCT:
            if (segs_chars(t, st->kind == PRE_DIGITS ? is_numeric_cp : is_punct_cp, s, n) ||
                emit_segs(t, out, s, lead, st->behavior, 0))
                return -1;
            break;
        case PRE_METASPACE: {
            buf_t *b = &t->word;
            b->n = 0;
            int pre = st->scheme == PREPEND_ALWAYS || (st->scheme == PREPEND_FIRST && lead);
            if (pre && !(n >= st->pat_len && memcmp(s, st->pat, st->pat_len) == 0) &&
                !(s[0] == ' ')) { /* a leading space becomes the replacement itself */
                if (buf_add(b, st->pat, st->pat_len)) return -1;
                if (lead) lead += st->pat_len;
            }
            for (size_t i = 0; i < n; i++)
                if (s[i] == ' ' ? buf_add(b, st->pat, st->pat_len) : buf_add(b, s + i, 1)) return -1;
            if (!st->split) {
                if (plist_add(out, b->p, b->n, lead)) return -1;
            } else if (segs_pattern(t, NULL, st->pat, st->pat_len, (const unsigned char *)b->p, b->n) ||
                       emit_segs(t, out, (const unsigned char *)b->p, lead, SPLIT_MERGED_NEXT, 0)) {
                return -1;
            }
            break;
        }
        }
    }
    return 0;
}

/* Pre-tokenizes s[0..n) (one piece: normalized, no added tokens in it) and encodes its words. */
static int encode_generic(mw_tokenizer *t, const unsigned char *s, size_t n, ids_t *out) {
    if (n == 0) return 0;
    plist *in = &t->pa, *o = &t->pb;
    plist_clear(in);
    if (plist_add(in, s, n, t->chunk_lead)) return -1;
    for (int k = 0; k < t->npre; k++) {
        plist_clear(o);
        if (pre_step(t, &t->pres[k], k == t->npre - 1, in, o)) return -1;
        plist *x = in;
        in = o;
        o = x;
    }
    for (size_t k = 0; k < in->n; k++)
        if (encode_word(t, (const unsigned char *)piece_at(&in->text, in->off[k]), in->len[k], out)) return -1;
    return 0;
}

/* ------------------------------------------------------------------ SentencePiece */

static void spm_free(mw_spm *s) {
    if (s) mw_spm_free(s);
}

/* SentencePiece's ids; add_special_tokens puts BOS first, as Hugging Face's LlamaTokenizer does */
static int spm_encode(mw_tokenizer *t, int64_t **ids, size_t *n, const char *text, size_t len, int add_special) {
    char err[256];
    if (mw_spm_encode(t->spm, text, len, ids, n, err, sizeof err)) return tok_err(t->name, "encode: %s", err);
    int64_t bos = t->special[MW_TOK_BOS];
    if (add_special && bos >= 0) {
        memmove(*ids + 1, *ids, *n * sizeof **ids); /* mw_spm_encode leaves room for one more */
        (*ids)[0] = bos;
        (*n)++;
    }
    if (!*n) {
        free(*ids);
        *ids = NULL;
    }
    return 0;
}

static int spm_decode(const mw_tokenizer *t, char **text, size_t *len, const int64_t *ids, size_t n) {
    char err[256];
    if (mw_spm_decode(t->spm, ids, n, text, len, err, sizeof err)) return tok_err(t->name, "decode: %s", err);
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
    size_t lead = t->chunk_lead; /* s's bytes from the text's first character: a piece there keeps them */
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
        t->chunk_lead = lead > from ? lead - from : 0;
        if (start > from && fn(t, s + from, start - from, out)) return -1;
        if (ids_push(out, a->id)) return -1;
        from = i = stop;
    }
    t->chunk_lead = lead > from ? lead - from : 0;
    if (n > from) return fn(t, s + from, n - from, out);
    return 0;
}

static int piece_normalized(mw_tokenizer *t, const unsigned char *s, size_t n, ids_t *out) {
    return split_added(t, &t->trie_norm, s, n, encode_pretokens, out);
}

/* a piece of the raw text between non-normalized added tokens */
static int piece_raw(mw_tokenizer *t, const unsigned char *s, size_t n, ids_t *out) {
    if (t->generic) {
        if (t->nnorm) {
            if (normalize(t, &t->norm, s, n, &t->chunk_lead)) return -1;
            s = (const unsigned char *)t->norm.p;
            n = t->norm.n;
        }
        return split_added(t, &t->trie_norm, s, n, encode_generic, out);
    }
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

int mw_tokenizer_encode_ex(int64_t **ids, size_t *n, mw_tokenizer *t, const char *text, size_t len,
                          int add_special_tokens) {
    *ids = NULL;
    *n = 0;
    if (!t) return mw_seterr("tokenizer: encode: no tokenizer");
    if (!text && len) return mw_seterr("tokenizer: encode: NULL text");
    if (t->spm) return spm_encode(t, ids, n, text, len, add_special_tokens);
    ids_t out = {0};
    /* English text gives about one id per 4 bytes: reserve that much at once */
    int rc = ids_reserve(&out, len / 4 + 16);
    for (int k = 0; add_special_tokens && !rc && k < t->nprefix; k++) rc = ids_push(&out, t->prefix[k]);
    if (!rc && t->generic && len) { /* Hugging Face takes only valid UTF-8 */
        rc = clean_utf8(&t->clean, (const unsigned char *)text, len);
        text = t->clean.p;
        len = t->clean.n;
    }
    if (len) { /* the first character of the text */
        int32_t cp;
        int l = mw_utf8_next((const unsigned char *)text, len, &cp);
        t->chunk_lead = l ? (size_t)l : 1;
    }
    if (!rc && len) rc = split_added(t, &t->trie_raw, (const unsigned char *)text, len, piece_raw, &out);
    for (int k = 0; add_special_tokens && !rc && k < t->nsuffix; k++) rc = ids_push(&out, t->suffix[k]);
    if (rc) {
        free(out.p);
        return tok_err(t->name, "encode: out of memory or a regular-expression failure (%zu bytes of text)", len);
    }
    if (!out.n) {
        free(out.p);
        out.p = NULL;
    }
    *ids = out.p;
    *n = out.n;
    return 0;
}

int mw_tokenizer_encode(int64_t **ids, size_t *n, mw_tokenizer *t, const char *text, size_t len) {
    return mw_tokenizer_encode_ex(ids, n, t, text, len, 1);
}

/* ------------------------------------------------------------------ decoding and lookups */

/* A list of strings: the tokens as a decoder's steps see them. */
typedef struct { buf_t text; size_t *off, *len; size_t n; } slist;

static int slist_add(slist *l, const void *s, size_t n) {
    /* off/len hold as many entries as ids were decoded (allocated by the caller) */
    l->off[l->n] = l->text.n;
    l->len[l->n] = n;
    l->n++;
    return buf_add(&l->text, s, n);
}

/* the token "<0xXX>" (ByteFallback's byte tokens): its byte, else -1 */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        int c = (unsigned char)s[i], d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* One decoder step from in to out (Hugging Face's decode_chain of each decoder). */
static int dec_step(const mw_tokenizer *t, const step *st, const slist *in, slist *out) {
    buf_t tmp = {0};
    int rc = 0;
    size_t fb_start = 0, fb_n = 0; /* ByteFallback: a run of byte tokens waiting in tmp */
    for (size_t k = 0; k <= in->n && !rc; k++) {
        const char *s = k < in->n ? piece_at(&in->text, in->off[k]) : NULL;
        size_t n = k < in->n ? in->len[k] : 0;
        switch ((dec_kind)st->kind) {
        case DEC_BYTELEVEL: /* all tokens into one: each character back to its byte */
        case DEC_FUSE:
            if (k == in->n) {
                rc = slist_add(out, tmp.p ? tmp.p : "", tmp.n);
                break;
            }
            if (st->kind == DEC_FUSE) {
                rc = buf_add(&tmp, s, n);
                break;
            }
            {
                size_t mark = tmp.n;
                int ok = 1;
                for (size_t i = 0; i < n && ok && !rc;) {
                    int32_t cp;
                    int l = mw_utf8_next((const unsigned char *)s + i, n - i, &cp);
                    int by = l ? mw_bpe_cp_byte(cp) : -1;
                    if (by < 0) ok = 0;
                    else {
                        unsigned char c = (unsigned char)by;
                        rc = buf_add(&tmp, &c, 1);
                        i += (size_t)l;
                    }
                }
                if (!ok) { /* a character outside the alphabet: the token's own text */
                    tmp.n = mark;
                    rc = buf_add(&tmp, s, n);
                }
            }
            break;
        case DEC_REPLACE:
            if (k == in->n) break;
            tmp.n = 0;
            /* the match data is scratch of the tokenizer: decoding is not thread-safe either */
            rc = replace_all((mw_tokenizer *)t, st, &tmp, (const unsigned char *)s, n, NULL);
            if (!rc) rc = slist_add(out, tmp.p ? tmp.p : "", tmp.n);
            break;
        case DEC_BYTEFALLBACK: {
            int by = k < in->n ? byte_token(s, n) : -1;
            if (by >= 0) {
                unsigned char c = (unsigned char)by;
                if (!fb_n) fb_start = tmp.n = 0;
                fb_n++;
                rc = buf_add(&tmp, &c, 1);
                break;
            }
            if (fb_n) { /* the bytes as text when they are UTF-8, else U+FFFD for each */
                if (utf8_valid(tmp.p + fb_start, fb_n)) rc = slist_add(out, tmp.p + fb_start, fb_n);
                else
                    for (size_t i = 0; i < fb_n && !rc; i++) rc = slist_add(out, "\xEF\xBF\xBD", 3);
                fb_n = 0;
            }
            if (k < in->n && !rc) rc = slist_add(out, s, n);
            break;
        }
        case DEC_STRIP: {
            if (k == in->n) break;
            size_t a = 0, b = n, c = st->pat_len;
            for (int i = 0; i < st->start && b - a >= c && memcmp(s + a, st->pat, c) == 0; i++) a += c;
            for (int i = 0; i < st->stop && b - a >= c && memcmp(s + b - c, st->pat, c) == 0; i++) b -= c;
            rc = slist_add(out, s + a, b - a);
            break;
        }
        case DEC_METASPACE: {
            if (k == in->n) break;
            tmp.n = 0;
            int drop = k == 0 && st->scheme != PREPEND_NEVER;
            for (size_t i = 0; i < n && !rc;) {
                if (n - i >= st->pat_len && memcmp(s + i, st->pat, st->pat_len) == 0) {
                    if (!drop) rc = buf_add(&tmp, " ", 1);
                    i += st->pat_len;
                } else {
                    rc = buf_add(&tmp, s + i, 1);
                    i++;
                }
            }
            if (!rc) rc = slist_add(out, tmp.p ? tmp.p : "", tmp.n);
            break;
        }
        }
    }
    free(tmp.p);
    return rc;
}

/* Decoding through the file's decoder steps, on the list of the tokens' texts. */
static int decode_steps(const mw_tokenizer *t, buf_t *res, const int64_t *ids, size_t n) {
    slist a = {0}, b = {0};
    size_t cap = n + 1;
    a.off = malloc(cap * sizeof *a.off);
    a.len = malloc(cap * sizeof *a.len);
    b.off = malloc(cap * sizeof *b.off);
    b.len = malloc(cap * sizeof *b.len);
    int rc = !a.off || !a.len || !b.off || !b.len;
    for (size_t i = 0; i < n && !rc; i++) rc = slist_add(&a, t->tok[ids[i]], t->tok_len[ids[i]]);
    for (int k = 0; k < t->ndec && !rc; k++) {
        b.n = 0;
        b.text.n = 0;
        rc = dec_step(t, &t->decs[k], &a, &b);
        slist x = a;
        a = b;
        b = x;
    }
    /* no decoder: Hugging Face joins the tokens with spaces */
    for (size_t i = 0; i < a.n && !rc; i++)
        rc = (t->ndec == 0 && i > 0 && buf_add(res, " ", 1)) || buf_add(res, piece_at(&a.text, a.off[i]), a.len[i]);
    free(a.text.p);
    free(a.off);
    free(a.len);
    free(b.text.p);
    free(b.off);
    free(b.len);
    return rc;
}

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
    if (t->spm) return spm_decode(t, text, len, ids, n);
    if (t->generic) {
        buf_t b = {0};
        if (decode_steps(t, &b, ids, n) || buf_reserve(&b, 1)) {
            free(b.p);
            return oom(t->name);
        }
        b.p[b.n] = 0;
        *text = b.p;
        *len = b.n;
        return 0;
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
    step *lists[3] = {t->norms, t->pres, t->decs};
    int counts[3] = {t->nnorm, t->npre, t->ndec};
    for (int l = 0; l < 3; l++) {
        for (int k = 0; k < counts[l]; k++) pcre2_code_free(lists[l][k].re);
        free(lists[l]);
    }
    pcre2_match_data_free(t->md);
    free(t->prefix);
    free(t->suffix);
    free(t->clean.p);
    free(t->norm2.p);
    plist_free(&t->pa);
    plist_free(&t->pb);
    free(t->segs);
    spm_free(t->spm);
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
    if (normalized && t->nnorm) { /* matched in normalized text, so normalized too */
        buf_t b = {0}, c = {0};
        int rc = t->generic ? clean_utf8(&c, (const unsigned char *)content, len) ||
                                  normalize(t, &b, (const unsigned char *)c.p, c.n, NULL)
                            : nfc_append(&b, (const unsigned char *)content, len);
        free(c.p);
        if (rc) {
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
    for (int b = 0; b < 256; b++) { /* byte_fallback's "<0xXX>" tokens */
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int32_t *id = smap_find(&t->vocab, name, 6);
        t->byte_tok[b] = id ? *id : -1;
    }
    for (int k = 0; k < t->nprefix + t->nsuffix; k++) {
        int64_t id = k < t->nprefix ? t->prefix[k] : t->suffix[k - t->nprefix];
        if (id >= t->vocab_size || !t->tok[id])
            return tok_err(t->name, "post_processor: id %lld is not a token (vocab_size %lld)", (long long)id,
                           (long long)t->vocab_size);
    }
    for (int i = 0; i < t->nadded; i++)
        if (t->added[i].special) t->is_special[t->added[i].id] = 1;
    /* conventional special tokens, overridable by a folder's tokenizer_config.json */
    int64_t eot = mw_tokenizer_token_to_id(t, "<|endoftext|>", 13);
    /* else (Llama, Mistral): the one token the post-processor puts first, and "</s>" */
    int64_t eos = mw_tokenizer_token_to_id(t, "</s>", 4);
    t->special[MW_TOK_BOS] = eot >= 0 ? eot : t->nprefix == 1 ? t->prefix[0] : -1;
    t->special[MW_TOK_EOS] = eot >= 0 ? eot : eos >= 0 && mw_tokenizer_is_special(t, eos) ? eos : -1;
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

/* a string field copied into the arena (valid UTF-8 required: the regex engine relies on it) */
static int get_str(mw_tokenizer *t, const cJSON *obj, const char *key, const char *where, const char **out,
                   size_t *len) {
    const cJSON *v = get_field(obj, key);
    if (!cJSON_IsString(v)) return tok_err(t->name, "%s.%s: expected a string, got %s", where, key, type_of(v));
    size_t n = strlen(v->valuestring);
    if (!utf8_valid(v->valuestring, n)) return tok_err(t->name, "%s.%s: not valid UTF-8", where, key);
    if (!(*out = arena_dup(&t->arena, v->valuestring, n))) return oom(t->name);
    *len = n;
    return 0;
}

/* {"String": s} (a literal) or {"Regex": r} (compiled with PCRE2, Unicode properties on) */
static int get_pattern(mw_tokenizer *t, const cJSON *obj, const char *where, step *st) {
    const cJSON *p = get_field(obj, "pattern");
    char field[160];
    snprintf(field, sizeof field, "%s.pattern", where);
    if (cJSON_IsObject(p) && get_field(p, "String")) {
        if (get_str(t, p, "String", field, &st->pat, &st->pat_len)) return -1;
        if (!st->pat_len) return tok_err(t->name, "%s.String: empty", field);
        return 0;
    }
    if (!cJSON_IsObject(p) || !cJSON_IsString(get_field(p, "Regex")))
        return tok_err(t->name, "%s: expected {\"String\": ...} or {\"Regex\": ...}", field);
    const char *re = get_field(p, "Regex")->valuestring;
    int err;
    PCRE2_SIZE off;
    st->re = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!st->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return tok_err(t->name, "%s.Regex: the regular expression fails at offset %zu: %s", field, (size_t)off,
                       (const char *)msg);
    }
    pcre2_jit_compile(st->re, PCRE2_JIT_COMPLETE); /* without JIT, PCRE2 interprets: slower, same matches */
    if (!t->md && !(t->md = pcre2_match_data_create(1, NULL))) return oom(t->name);
    return 0;
}

/* appends a zeroed step to *list; NULL when out of memory */
static step *new_step(step **list, int *n, int kind) {
    step *p = realloc(*list, (size_t)(*n + 1) * sizeof *p);
    if (!p) return NULL;
    *list = p;
    p += (*n)++;
    memset(p, 0, sizeof *p);
    p->kind = kind;
    return p;
}

/* the type of a normalizer / pre-tokenizer / decoder / post-processor object */
static const char *get_type(mw_tokenizer *t, const cJSON *o, const char *where) {
    const cJSON *ty = get_field(o, "type");
    if (!cJSON_IsObject(o) || !cJSON_IsString(ty)) {
        tok_err(t->name, "%s: expected null or an object with a string \"type\" (got %s)", where, type_of(o));
        return NULL;
    }
    return ty->valuestring;
}

static int get_int(mw_tokenizer *t, const cJSON *o, const char *key, int dflt, const char *where, int *out) {
    const cJSON *v = get_field(o, key);
    *out = dflt;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e6 || v->valuedouble != (int)v->valuedouble)
        return tok_err(t->name, "%s.%s: expected a small non-negative integer", where, key);
    *out = (int)v->valuedouble;
    return 0;
}

typedef int (*parse_fn)(mw_tokenizer *t, const cJSON *o, const char *where);

/* the index of ty among names[0..n); else -1 and an error listing them (and Sequence) */
static int find_kind(mw_tokenizer *t, const char *ty, const char *const *names, int n, const char *what,
                     const char *where) {
    for (int k = 0; k < n; k++)
        if (strcmp(ty, names[k]) == 0) return k;
    char list[256] = "";
    for (int k = 0; k < n; k++) {
        strncat(list, names[k], sizeof list - strlen(list) - 1);
        strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    tok_err(t->name, "%s.type: %s \"%.40s\" is not supported (supported: %sSequence)", where, what, ty, list);
    return -1;
}

/* a "Sequence": each element of its list (field key) parsed by fn, in order */
static int parse_sequence(mw_tokenizer *t, const cJSON *o, const char *key, const char *where, parse_fn fn) {
    const cJSON *list = get_field(o, key);
    if (!cJSON_IsArray(list)) return tok_err(t->name, "%s.%s: expected an array", where, key);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, list) {
        char w[160];
        snprintf(w, sizeof w, "%s.%s[%d]", where, key, i++);
        if (fn(t, e, w)) return -1;
    }
    return 0;
}

static int parse_normalizer(mw_tokenizer *t, const cJSON *n, const char *where) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *ty = get_type(t, n, where);
    if (!ty) return -1;
    if (strcmp(ty, "Sequence") == 0) return parse_sequence(t, n, "normalizers", where, parse_normalizer);
    static const char *const kinds[] = {"NFC", "NFKC", "Prepend", "Replace"};
    int k = find_kind(t, ty, kinds, 4, "normalizer", where);
    if (k < 0) return -1;
    step *st = new_step(&t->norms, &t->nnorm, k);
    if (!st) return oom(t->name);
    if (k == NORM_PREPEND) return get_str(t, n, "prepend", where, &st->pat, &st->pat_len);
    if (k == NORM_REPLACE)
        return get_pattern(t, n, where, st) || get_str(t, n, "content", where, &st->with, &st->with_len) ? -1 : 0;
    return 0;
}

/* SplitDelimiterBehavior by name; -1 (and an error) for another */
static int get_behavior(mw_tokenizer *t, const cJSON *o, const char *where, split_kind dflt, split_kind *out) {
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    const cJSON *v = get_field(o, "behavior");
    *out = dflt;
    if (!v) return 0;
    for (int k = 0; cJSON_IsString(v) && k < 5; k++)
        if (strcmp(v->valuestring, names[k]) == 0) {
            *out = (split_kind)k;
            return 0;
        }
    return tok_err(t->name, "%s.behavior: expected one of Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                   "Contiguous", where);
}

/* Metaspace's prepend_scheme, or the older add_prefix_space flag */
static int get_scheme(mw_tokenizer *t, const cJSON *o, const char *where, int *out) {
    const cJSON *v = get_field(o, "prepend_scheme");
    if (!v) {
        int a = get_bool(t, o, "add_prefix_space", 1, where);
        if (a < 0) return -1;
        *out = a ? PREPEND_ALWAYS : PREPEND_NEVER;
        return 0;
    }
    static const char *const names[] = {"always", "first", "never"};
    for (int k = 0; cJSON_IsString(v) && k < 3; k++)
        if (strcmp(v->valuestring, names[k]) == 0) {
            *out = k;
            return 0;
        }
    return tok_err(t->name, "%s.prepend_scheme: expected \"always\", \"first\" or \"never\"", where);
}

static int parse_pretokenizer(mw_tokenizer *t, const cJSON *p, const char *where) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *ty = get_type(t, p, where);
    if (!ty) return -1;
    if (strcmp(ty, "Sequence") == 0) return parse_sequence(t, p, "pretokenizers", where, parse_pretokenizer);
    static const char *const kinds[] = {"ByteLevel", "Split", "Digits", "Punctuation", "Metaspace"};
    int k = find_kind(t, ty, kinds, 5, "pre-tokenizer", where);
    if (k < 0) return -1;
    step *st = new_step(&t->pres, &t->npre, k);
    if (!st) return oom(t->name);
    switch ((pre_kind)k) {
    case PRE_BYTELEVEL:
        if ((st->add_prefix_space = get_bool(t, p, "add_prefix_space", 1, where)) < 0) return -1;
        if ((st->use_regex = get_bool(t, p, "use_regex", 1, where)) < 0) return -1;
        return 0;
    case PRE_SPLIT:
        if ((st->invert = get_bool(t, p, "invert", 0, where)) < 0) return -1;
        return get_pattern(t, p, where, st) || get_behavior(t, p, where, SPLIT_REMOVED, &st->behavior) ? -1 : 0;
    case PRE_DIGITS: {
        int ind = get_bool(t, p, "individual_digits", 0, where);
        if (ind < 0) return -1;
        st->behavior = ind ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS;
        return 0;
    }
    case PRE_PUNCT:
        return get_behavior(t, p, where, SPLIT_ISOLATED, &st->behavior);
    case PRE_METASPACE:
        if ((st->split = get_bool(t, p, "split", 1, where)) < 0) return -1;
        if (get_str(t, p, "replacement", where, &st->pat, &st->pat_len) || get_scheme(t, p, where, &st->scheme))
            return -1;
        if (!st->pat_len) return tok_err(t->name, "%s.replacement: empty", where);
        return 0;
    }
    return 0;
}

static int parse_decoder(mw_tokenizer *t, const cJSON *d, const char *where) {
    if (!d || cJSON_IsNull(d)) return 0;
    const char *ty = get_type(t, d, where);
    if (!ty) return -1;
    if (strcmp(ty, "Sequence") == 0) return parse_sequence(t, d, "decoders", where, parse_decoder);
    static const char *const kinds[] = {"ByteLevel", "Replace", "ByteFallback", "Fuse", "Strip", "Metaspace"};
    int k = find_kind(t, ty, kinds, 6, "decoder", where);
    if (k < 0) return -1;
    step *st = new_step(&t->decs, &t->ndec, k);
    if (!st) return oom(t->name);
    switch ((dec_kind)k) {
    case DEC_REPLACE:
        return get_pattern(t, d, where, st) || get_str(t, d, "content", where, &st->with, &st->with_len) ? -1 : 0;
    case DEC_STRIP:
        if (get_str(t, d, "content", where, &st->pat, &st->pat_len)) return -1;
        if (!st->pat_len) return tok_err(t->name, "%s.content: empty", where);
        return get_int(t, d, "start", 0, where, &st->start) || get_int(t, d, "stop", 0, where, &st->stop) ? -1 : 0;
    case DEC_METASPACE:
        if (get_str(t, d, "replacement", where, &st->pat, &st->pat_len) || get_scheme(t, d, where, &st->scheme))
            return -1;
        return st->pat_len ? 0 : tok_err(t->name, "%s.replacement: empty", where);
    default:
        return 0;
    }
}

static int push_id(mw_tokenizer *t, int64_t **list, int *n, double id) {
    if (id < 0 || id >= MAX_IDS || id != (double)(int64_t)id)
        return tok_err(t->name, "post_processor: id %g is not an integer in [0, %d)", id, MAX_IDS);
    int64_t *p = realloc(*list, (size_t)(*n + 1) * sizeof *p);
    if (!p) return oom(t->name);
    *list = p;
    p[(*n)++] = (int64_t)id;
    return 0;
}

/* ids of one special-token entry of a TemplateProcessing, appended to *list */
static int add_ids(mw_tokenizer *t, int64_t **list, int *n, const cJSON *ids, const char *where) {
    if (!cJSON_IsArray(ids)) return tok_err(t->name, "%s.ids: expected an array of ids", where);
    const cJSON *e;
    cJSON_ArrayForEach(e, ids) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= MAX_IDS ||
            e->valuedouble != (double)(int64_t)e->valuedouble)
            return tok_err(t->name, "%s.ids: expected integers in [0, %d)", where, MAX_IDS);
        if (push_id(t, list, n, e->valuedouble)) return -1;
    }
    return 0;
}

/* Post-processors: ids added around the text by encode(..., add_special_tokens). */
static int parse_post(mw_tokenizer *t, const cJSON *p, const char *where) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *ty = get_type(t, p, where);
    if (!ty) return -1;
    if (strcmp(ty, "ByteLevel") == 0) return 0; /* it changes offsets only */
    if (strcmp(ty, "Sequence") == 0) return parse_sequence(t, p, "processors", where, parse_post);
    if (strcmp(ty, "BertProcessing") == 0 || strcmp(ty, "RobertaProcessing") == 0) {
        const cJSON *cls = get_field(p, "cls"), *sep = get_field(p, "sep");
        if (!cJSON_IsArray(cls) || !cJSON_IsArray(sep) || !cJSON_IsNumber(cJSON_GetArrayItem(cls, 1)) ||
            !cJSON_IsNumber(cJSON_GetArrayItem(sep, 1)))
            return tok_err(t->name, "%s: expected \"cls\" and \"sep\" as [token, id]", where);
        return push_id(t, &t->prefix, &t->nprefix, cJSON_GetArrayItem(cls, 1)->valuedouble) ||
               push_id(t, &t->suffix, &t->nsuffix, cJSON_GetArrayItem(sep, 1)->valuedouble) ? -1 : 0;
    }
    if (strcmp(ty, "TemplateProcessing") != 0)
        return tok_err(t->name, "%s.type: post-processor \"%.40s\" is not supported (supported: TemplateProcessing, "
                       "ByteLevel, BertProcessing, RobertaProcessing, Sequence)", where, ty);
    const cJSON *single = get_field(p, "single"), *specials = get_field(p, "special_tokens");
    if (!cJSON_IsArray(single)) return tok_err(t->name, "%s.single: expected an array", where);
    int seen_a = 0, i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, single) {
        char w[160];
        snprintf(w, sizeof w, "%s.single[%d]", where, i++);
        const cJSON *sp = get_field(e, "SpecialToken"), *sq = get_field(e, "Sequence");
        if (cJSON_IsObject(sq)) {
            const cJSON *id = get_field(sq, "id");
            if (!cJSON_IsString(id) || strcmp(id->valuestring, "A") != 0 || seen_a)
                return tok_err(t->name, "%s.Sequence: only one sequence \"A\" is supported", w);
            seen_a = 1;
        } else if (cJSON_IsObject(sp) && cJSON_IsString(get_field(sp, "id"))) {
            const char *name = get_field(sp, "id")->valuestring;
            const cJSON *entry = get_field(specials, name);
            if (!cJSON_IsObject(entry))
                return tok_err(t->name, "%s: \"%.60s\" is not in %s.special_tokens", w, name, where);
            if (seen_a ? add_ids(t, &t->suffix, &t->nsuffix, get_field(entry, "ids"), w)
                       : add_ids(t, &t->prefix, &t->nprefix, get_field(entry, "ids"), w))
                return -1;
        } else {
            return tok_err(t->name, "%s: expected {\"SpecialToken\": ...} or {\"Sequence\": ...}", w);
        }
    }
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
        return tok_err(t->name, "model.type: only \"BPE\" models are supported (got %s%.40s)",
                       cJSON_IsString(ty) ? "" : type_of(ty), cJSON_IsString(ty) ? ty->valuestring : "");
    const cJSON *v;
    if ((v = get_field(m, "dropout")) && !cJSON_IsNull(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0))
        return tok_err(t->name, "model.dropout: BPE dropout is not supported");
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++)
        if ((v = get_field(m, affix[i])) && !cJSON_IsNull(v) &&
            !(cJSON_IsString(v) && v->valuestring[0] == 0))
            return tok_err(t->name, "model.%s: only empty or null is supported", affix[i]);
    int fu = get_bool(t, m, "fuse_unk", 0, "model"), im = get_bool(t, m, "ignore_merges", 0, "model");
    int bf = get_bool(t, m, "byte_fallback", 0, "model");
    if (fu < 0 || im < 0 || bf < 0) return -1;
    t->byte_fallback = bf;
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

/* GPT-2's and NeoX's kind (NFC at most, one ByteLevel pre-tokenizer, ByteLevel or no decoder)
 * takes the byte-level path written for speed; anything else the steps of the file. */
static int choose_path(mw_tokenizer *t) {
    int nfc_only = t->nnorm == 0 || (t->nnorm == 1 && t->norms[0].kind == NORM_NFC);
    int bl = t->npre == 1 && t->pres[0].kind == PRE_BYTELEVEL;
    int bl_dec = t->ndec == 0 || (t->ndec == 1 && t->decs[0].kind == DEC_BYTELEVEL);
    t->generic = !(nfc_only && bl && bl_dec && !t->byte_fallback);
    t->sym_bytes = t->npre > 0 && t->pres[t->npre - 1].kind == PRE_BYTELEVEL;
    if (!t->generic) {
        t->nfc = t->nnorm == 1;
        t->add_prefix_space = t->pres[0].add_prefix_space;
        t->use_regex = t->pres[0].use_regex;
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
        if (!get_field(root, "model"))
            rc = tok_err(t->name, "model: missing");
        else
            rc = parse_model(t, get_field(root, "model"));
        /* the normalizer before the added tokens: normalized added tokens are matched normalized */
        if (!rc) rc = parse_normalizer(t, get_field(root, "normalizer"), "normalizer");
        if (!rc) rc = parse_pretokenizer(t, get_field(root, "pre_tokenizer"), "pre_tokenizer");
        if (!rc) rc = parse_post(t, get_field(root, "post_processor"), "post_processor");
        if (!rc) rc = parse_decoder(t, get_field(root, "decoder"), "decoder");
        if (!rc) rc = choose_path(t);
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
    t->sym_bytes = 1;
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

int mw_tokenizer_from_spm(mw_tokenizer **out, const char *data, size_t len, const char *name) {
    *out = NULL;
    mw_tokenizer *t = tok_new(name);
    if (!t) return oom(name);
    char err[512];
    int rc = 0;
    if (mw_spm_load(&t->spm, data, len, err, sizeof err)) {
        rc = tok_err(t->name, "%s", err);
    } else {
        int V = mw_spm_size(t->spm);
        for (int id = 0; id < V && !rc; id++) {
            size_t l;
            const char *piece = mw_spm_piece(t->spm, id, &l);
            const char *copy = arena_dup(&t->arena, piece, l);
            /* a repeated piece (not in real models) keeps its first id for token_to_id */
            if (!copy || (!smap_find(&t->vocab, copy, l) && smap_put(&t->vocab, copy, l, id))) rc = oom(t->name);
        }
        if (!rc) rc = build_tables(t) || build_decode(t);
        for (int id = 0; id < V && !rc; id++) t->is_special[id] = (unsigned char)mw_spm_is_special(t->spm, id);
        int sp[MW_TOK_NSPECIAL];
        mw_spm_special_ids(t->spm, &sp[MW_TOK_BOS], &sp[MW_TOK_EOS], &sp[MW_TOK_PAD], &sp[MW_TOK_UNK]);
        for (int k = 0; k < MW_TOK_NSPECIAL; k++) t->special[k] = sp[k] >= 0 && sp[k] < V ? sp[k] : -1;
    }
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

int mw_tokenizer_load_spm(mw_tokenizer **out, const char *path) {
    *out = NULL;
    char *data;
    size_t len;
    if (read_file(&data, &len, path)) return -1;
    int rc = mw_tokenizer_from_spm(out, data, len, path);
    free(data);
    return rc;
}

/* a file: JSON (tokenizer.json) when it starts with '{', else a SentencePiece model */
static int load_file(mw_tokenizer **out, const char *path) {
    char *data;
    size_t len, i = 0;
    if (read_file(&data, &len, path)) return -1;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r')) i++;
    int rc = i < len && data[i] == '{' ? mw_tokenizer_from_json(out, data, len, path)
                                       : mw_tokenizer_from_spm(out, data, len, path);
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
    if (!S_ISDIR(st.st_mode)) return load_file(out, path);
    char a[4096], b[4096];
    int rc;
    snprintf(a, sizeof a, "%s/tokenizer.json", path);
    snprintf(b, sizeof b, "%s/tokenizer.model", path);
    if (file_exists(a)) {
        rc = mw_tokenizer_load_json(out, a);
    } else if (file_exists(b)) {
        rc = mw_tokenizer_load_spm(out, b);
    } else {
        snprintf(a, sizeof a, "%s/vocab.json", path);
        snprintf(b, sizeof b, "%s/merges.txt", path);
        if (!file_exists(a) || !file_exists(b))
            return tok_err(path, "the folder holds none of tokenizer.json, tokenizer.model, vocab.json + merges.txt");
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
