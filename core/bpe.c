/* bpe.c - byte-pair-encoding pieces shared by tokenizer.c and bpe_train.c; see bpe.h. */
#include "bpe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <utf8proc.h>

#include "mw_tensor.h"

int mw_read_file(char **data, size_t *len, const char *path, const char *who) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return mw_seterr("%s: %s: cannot open: %s", who, path, strerror(errno));
    size_t cap = 65536, n = 0, r;
    char *p = malloc(cap);
    while (p && (r = fread(p + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *q = realloc(p, cap *= 2);
            if (!q) free(p);
            p = q;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (!p || err) {
        const char *why = p ? "read error" : "out of memory";
        free(p);
        return mw_seterr("%s: %s: %s", who, path, why);
    }
    p[n] = 0;
    *data = p;
    *len = n;
    return 0;
}

/* ------------------------------------------------------------------ UTF-8 and classes */

int mw_utf8_next(const unsigned char *s, size_t n, int32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = (int32_t)c;
        return 1;
    }
    if (c < 0xC2 || c > 0xF4) return 0;
    if (c < 0xE0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        *cp = (int32_t)(((c & 0x1F) << 6) | (s[1] & 0x3F));
        return 2;
    }
    unsigned lo = 0x80, hi = 0xBF;
    if (c == 0xE0) lo = 0xA0;
    else if (c == 0xED) hi = 0x9F;
    else if (c == 0xF0) lo = 0x90;
    else if (c == 0xF4) hi = 0x8F;
    if (n < 2 || s[1] < lo || s[1] > hi) return 0;
    if (c < 0xF0) {
        if (n < 3 || (s[2] & 0xC0) != 0x80) return 0;
        *cp = (int32_t)(((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F));
        return 3;
    }
    if (n < 4 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
    *cp = (int32_t)(((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F));
    return 4;
}

int mw_utf8_put(unsigned char *o, int32_t cp) {
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* classes of the ASCII characters, the common case */
static const unsigned char ascii_class[128] = {
#define O MW_BPE_OTHER
#define S MW_BPE_SPACE
#define N MW_BPE_NUMBER
#define L MW_BPE_LETTER
    O, O, O, O, O, O, O, O, O, S, S, S, S, S, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O,
    S, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, N, N, N, N, N, N, N, N, N, N, O, O, O, O, O, O,
    O, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, O, O, O, O, O,
    O, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, O, O, O, O, O,
#undef O
#undef S
#undef N
#undef L
};

int mw_bpe_cp_class(int32_t cp) {
    if (cp < 0) return MW_BPE_OTHER;
    if (cp < 0x80) return ascii_class[cp];
    if (cp == 0x85) return MW_BPE_SPACE;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return MW_BPE_LETTER;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return MW_BPE_NUMBER;
    case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP:
        return MW_BPE_SPACE;
    default:
        return MW_BPE_OTHER;
    }
}

int mw_bpe_char_class(const unsigned char *s, size_t n, int *clen) {
    if (s[0] < 0x80) {
        *clen = 1;
        return ascii_class[s[0]];
    }
    int32_t cp;
    int l = mw_utf8_next(s, n, &cp);
    *clen = l ? l : 1;
    return l ? mw_bpe_cp_class(cp) : MW_BPE_OTHER;
}

size_t mw_bpe_pretoken_len(const unsigned char *s, size_t n) {
    /* 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as in GPT-2) */
    if (s[0] == '\'' && n >= 2) {
        unsigned char c1 = s[1];
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
        if (n >= 3 && ((c1 == 'r' && s[2] == 'e') || (c1 == 'v' && s[2] == 'e') || (c1 == 'l' && s[2] == 'l')))
            return 3;
    }
    int l0, c0 = mw_bpe_char_class(s, n, &l0);
    /* ' ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+': the class after an optional space decides */
    size_t i = (size_t)l0;
    int c = c0;
    if (s[0] == ' ' && n > 1) {
        int l1, c1 = mw_bpe_char_class(s + 1, n - 1, &l1);
        if (c1 != MW_BPE_SPACE) {
            c = c1;
            i = 1 + (size_t)l1;
        }
    }
    if (c != MW_BPE_SPACE) {
        while (i < n) {
            int l;
            if (mw_bpe_char_class(s + i, n - i, &l) != c) break;
            i += (size_t)l;
        }
        return i;
    }
    /* '\s+(?!\S)|\s+': a run of two or more blanks leaves its last one to the word that follows */
    size_t last = 0;
    while (i < n) {
        int l;
        if (mw_bpe_char_class(s + i, n - i, &l) != MW_BPE_SPACE) break;
        last = i;
        i += (size_t)l;
    }
    if (i == n) return i;
    return last > 0 ? last : i;
}

/* ------------------------------------------------------------------ byte-level alphabet */

static int32_t byte_cp[256];
static int16_t cp_byte[324];
static char byte_char[256][3];
static int alphabet_ready;

static void alphabet_init(void) {
    if (alphabet_ready) return;
    for (int c = 0; c < 324; c++) cp_byte[c] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_cp[b] = printable ? b : 256 + n++;
        cp_byte[byte_cp[b]] = (int16_t)b;
        int l = mw_utf8_put((unsigned char *)byte_char[b], byte_cp[b]);
        byte_char[b][l] = 0;
    }
    alphabet_ready = 1;
}

int32_t mw_bpe_byte_cp(int byte) {
    alphabet_init();
    return byte_cp[byte & 255];
}

int mw_bpe_cp_byte(int32_t cp) {
    alphabet_init();
    return cp >= 0 && cp < 324 ? cp_byte[cp] : -1;
}

const char *mw_bpe_byte_char(int byte) {
    alphabet_init();
    return byte_char[byte & 255];
}

/* ------------------------------------------------------------------ merges */

/* key 0 marks an empty slot: ids are stored + 1, so no real pair has key 0 */
static inline uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
}

const mw_bpe_merge_slot *mw_bpe_merges_find(const mw_bpe_merges *m, int32_t left, int32_t right) {
    if (!m->cap) return NULL;
    uint64_t key = pair_key(left, right);
    size_t mask = m->cap - 1, i = mw_hash_u64(key) & mask;
    for (;; i = (i + 1) & mask) {
        const mw_bpe_merge_slot *s = &m->slots[i];
        if (s->key == key) return s;
        if (!s->key) return NULL;
    }
}

int mw_bpe_merges_put(mw_bpe_merges *m, int32_t left, int32_t right, uint32_t rank, int32_t id) {
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        mw_bpe_merge_slot *slots = calloc(cap, sizeof *slots);
        if (!slots) return -1;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->slots[i].key) continue;
            size_t j = mw_hash_u64(m->slots[i].key) & (cap - 1);
            while (slots[j].key) j = (j + 1) & (cap - 1);
            slots[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = slots;
        m->cap = cap;
    }
    uint64_t key = pair_key(left, right);
    size_t mask = m->cap - 1, i = mw_hash_u64(key) & mask;
    while (m->slots[i].key && m->slots[i].key != key) i = (i + 1) & mask;
    if (!m->slots[i].key) m->n++;
    m->slots[i] = (mw_bpe_merge_slot){key, rank, id};
    return 0;
}

void mw_bpe_merges_free(mw_bpe_merges *m) {
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

typedef struct mw_bpe_heap_item heap_item;

static int heap_less(const heap_item *a, const heap_item *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(heap_item *h, size_t *n, heap_item it) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&it, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static heap_item heap_pop(heap_item *h, size_t *n) {
    heap_item top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static int scratch_reserve(mw_bpe_scratch *s, size_t m) {
    if (m <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < m) cap *= 2;
    int32_t *a = realloc(s->prv, cap * sizeof *a);
    if (!a) return -1;
    s->prv = a;
    if (!(a = realloc(s->nxt, cap * sizeof *a))) return -1;
    s->nxt = a;
    /* the heap holds at most m initial pairs + 2 new pairs per merge (m - 1 merges) */
    heap_item *h = realloc(s->heap, 3 * cap * sizeof *h);
    if (!h) return -1;
    s->heap = h;
    s->cap = cap;
    return 0;
}

void mw_bpe_scratch_free(mw_bpe_scratch *s) {
    free(s->prv);
    free(s->nxt);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

/* pushes the merge of symbols pos and nxt[pos] when there is one */
static void candidate(const mw_bpe_merges *m, mw_bpe_scratch *s, const int32_t *sym, size_t *hn, int32_t pos) {
    int32_t r = s->nxt[pos];
    if (r < 0) return;
    const mw_bpe_merge_slot *mg = mw_bpe_merges_find(m, sym[pos], sym[r]);
    if (mg) heap_push(s->heap, hn, (heap_item){mg->rank, (uint32_t)pos, sym[pos], sym[r]});
}

/* A linked list over sym[] and a heap of candidate merges: each step pops the lowest (rank,
 * position), skips it when stale (its left symbol was merged away or its pair changed), merges,
 * and pushes the two new neighbour pairs. */
long mw_bpe_apply(const mw_bpe_merges *m, mw_bpe_scratch *s, int32_t *sym, size_t n) {
    if (n < 2 || !m->n) return (long)n;
    if (scratch_reserve(s, n)) return -1;
    for (size_t i = 0; i < n; i++) {
        s->prv[i] = (int32_t)i - 1;
        s->nxt[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) candidate(m, s, sym, &hn, (int32_t)i);
    while (hn) {
        heap_item it = heap_pop(s->heap, &hn);
        int32_t pos = (int32_t)it.pos, r = s->nxt[pos];
        if (sym[pos] != it.left || r < 0 || sym[r] != it.right) continue;
        sym[pos] = mw_bpe_merges_find(m, it.left, it.right)->id;
        sym[r] = -1;
        s->nxt[pos] = s->nxt[r];
        if (s->nxt[r] >= 0) s->prv[s->nxt[r]] = pos;
        if (s->prv[pos] >= 0) candidate(m, s, sym, &hn, s->prv[pos]);
        candidate(m, s, sym, &hn, pos);
    }
    size_t o = 0;
    for (int32_t i = 0; i >= 0; i = s->nxt[i]) sym[o++] = sym[i];
    return (long)o;
}
