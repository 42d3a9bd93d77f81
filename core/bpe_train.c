/* bpe_train.c - byte-level BPE training and tokenizer.json writing (encoding: tokenizer.c).
 * See bpe_train.h for the algorithm and the id layout. */
#include "bpe_train.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "file.h"
#include "mw_tensor.h"

#define PAIR_KEY(a, b) (((uint64_t)(uint32_t)(a) << 32) | (uint32_t)(b))

/* ------------------------------------------------------------------ trainer: pre-token counts */

typedef struct {
    uint64_t hash;
    int64_t off;   /* into bytes */
    int32_t len;
    int64_t count;
} word_slot;        /* count == 0: empty slot */

struct mw_bpe_trainer {
    word_slot *slots;
    int64_t cap, used;
    unsigned char *bytes; /* all distinct pre-tokens, concatenated */
    int64_t nbytes, bytes_cap;
};

mw_bpe_trainer *mw_bpe_trainer_new(void) {
    mw_bpe_trainer *t = calloc(1, sizeof *t);
    if (!t) { mw_seterr("bpe_train: out of memory"); return NULL; }
    t->cap = 1 << 16;
    t->slots = calloc((size_t)t->cap, sizeof *t->slots);
    t->bytes_cap = 1 << 20;
    t->bytes = malloc((size_t)t->bytes_cap);
    if (!t->slots || !t->bytes) { mw_bpe_trainer_free(t); mw_seterr("bpe_train: out of memory"); return NULL; }
    return t;
}

void mw_bpe_trainer_free(mw_bpe_trainer *t) {
    if (!t) return;
    free(t->slots);
    free(t->bytes);
    free(t);
}

int64_t mw_bpe_trainer_nwords(const mw_bpe_trainer *t) { return t->used; }

static int trainer_grow(mw_bpe_trainer *t) {
    int64_t ncap = t->cap * 2;
    word_slot *ns = calloc((size_t)ncap, sizeof *ns);
    if (!ns) return mw_seterr("bpe_train: out of memory");
    for (int64_t i = 0; i < t->cap; i++) {
        if (!t->slots[i].count) continue;
        int64_t j = (int64_t)(t->slots[i].hash & (uint64_t)(ncap - 1));
        while (ns[j].count) j = (j + 1) & (ncap - 1);
        ns[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    return 0;
}

static int trainer_add(mw_bpe_trainer *t, const unsigned char *w, size_t n) {
    uint64_t h = mw_hash_bytes(w, n);
    int64_t j = (int64_t)(h & (uint64_t)(t->cap - 1));
    while (t->slots[j].count) {
        word_slot *s = &t->slots[j];
        if (s->hash == h && s->len == (int32_t)n && !memcmp(t->bytes + s->off, w, n)) {
            s->count++;
            return 0;
        }
        j = (j + 1) & (t->cap - 1);
    }
    if (t->nbytes + (int64_t)n > t->bytes_cap) {
        int64_t nc = t->bytes_cap * 2 + (int64_t)n;
        unsigned char *nb = realloc(t->bytes, (size_t)nc);
        if (!nb) return mw_seterr("bpe_train: out of memory");
        t->bytes = nb;
        t->bytes_cap = nc;
    }
    memcpy(t->bytes + t->nbytes, w, n);
    t->slots[j] = (word_slot){h, t->nbytes, (int32_t)n, 1};
    t->nbytes += (int64_t)n;
    if (++t->used * 2 > t->cap) return trainer_grow(t);
    return 0;
}

/* calls fn on each piece of text between occurrences of <|endoftext|> */
static const char *find_eot(const char *s, size_t n) {
    static const size_t L = sizeof(MW_BPE_EOT) - 1;
    const char *end = s + n;
    while ((size_t)(end - s) >= L) {
        const char *p = memchr(s, '<', (size_t)(end - s) - L + 1);
        if (!p) return NULL;
        if (!memcmp(p, MW_BPE_EOT, L)) return p;
        s = p + 1;
    }
    return NULL;
}

int mw_bpe_trainer_feed(mw_bpe_trainer *t, const char *text, size_t n) {
    const size_t L = sizeof(MW_BPE_EOT) - 1;
    while (n > 0) {
        const char *e = find_eot(text, n);
        size_t m = e ? (size_t)(e - text) : n;
        const unsigned char *s = (const unsigned char *)text;
        size_t i = 0;
        while (i < m) {
            size_t l = mw_bpe_pretoken_len(s + i, m - i);
            if (l > m - i) l = m - i;
            if (l > 0x7fffffff) l = 0x7fffffff;
            if (trainer_add(t, s + i, l)) return -1;
            i += l;
        }
        if (!e) break;
        text = e + L;
        n -= m + L;
    }
    return 0;
}

int mw_bpe_trainer_feed_file(mw_bpe_trainer *t, const char *path) {
    char *buf;
    size_t n;
    if (mw_read_file(&buf, &n, path, "bpe_train")) return -1;
    int rc = mw_bpe_trainer_feed(t, buf, n);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ the tokenizer */

typedef struct { int32_t l, r, res; } merge_t;

struct mw_bpe {
    int vocab;
    int32_t eot;            /* -1 when absent */
    unsigned char **tok;    /* [vocab] bytes of each token (NULL for ids never defined) */
    int32_t *tok_len;       /* [vocab] */
    merge_t *merges;        /* [nmerges], by rank */
    int nmerges;
};

void mw_bpe_free(mw_bpe *b) {
    if (!b) return;
    if (b->tok) for (int i = 0; i < b->vocab; i++) free(b->tok[i]);
    free(b->tok);
    free(b->tok_len);
    free(b->merges);
    free(b);
}

int mw_bpe_vocab_size(const mw_bpe *b) { return b->vocab; }
int mw_bpe_nmerges(const mw_bpe *b) { return b->nmerges; }
int mw_bpe_eot_id(const mw_bpe *b) { return b->eot; }
void mw_bpe_merge(const mw_bpe *b, int k, int *left, int *right, int *result) {
    *left = b->merges[k].l; *right = b->merges[k].r; *result = b->merges[k].res;
}
const unsigned char *mw_bpe_token_bytes(const mw_bpe *b, int id, size_t *len) {
    if (id < 0 || id >= b->vocab || !b->tok[id]) { *len = 0; return NULL; }
    *len = (size_t)b->tok_len[id];
    return b->tok[id];
}

static mw_bpe *bpe_alloc(int vocab, int nmerges_cap) {
    mw_bpe *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->vocab = vocab;
    b->eot = -1;
    b->tok = calloc((size_t)vocab, sizeof *b->tok);
    b->tok_len = calloc((size_t)vocab, sizeof *b->tok_len);
    b->merges = malloc(sizeof *b->merges * (size_t)(nmerges_cap > 0 ? nmerges_cap : 1));
    if (!b->tok || !b->tok_len || !b->merges) { mw_bpe_free(b); return NULL; }
    return b;
}

static int set_token(mw_bpe *b, int id, const unsigned char *s, size_t n) {
    b->tok[id] = malloc(n ? n : 1);
    if (!b->tok[id]) return mw_seterr("bpe: out of memory");
    memcpy(b->tok[id], s, n);
    b->tok_len[id] = (int32_t)n;
    return 0;
}

/* ------------------------------------------------------------------ training */

typedef struct { int64_t count; int32_t *w; int32_t nw, capw, pushed; } pair_t; /* w: words holding it */
typedef struct { int64_t count; int32_t a, b; } heap_e;

typedef struct {
    uint64_t *keys; int32_t *idx; int64_t cap, used; /* key -> index into pairs; idx < 0 empty */
    pair_t *pairs; int64_t npairs, pcap;
    heap_e *heap; int64_t nheap, hcap;
} pstate;

static int heap_less(const heap_e *x, const heap_e *y) { /* x ranks below y */
    if (x->count != y->count) return x->count < y->count;
    if (x->a != y->a) return x->a > y->a;
    return x->b > y->b;
}

static int heap_push(pstate *p, heap_e e) {
    if (p->nheap == p->hcap) {
        int64_t nc = p->hcap ? p->hcap * 2 : 1024;
        heap_e *nh = realloc(p->heap, sizeof *nh * (size_t)nc);
        if (!nh) return mw_seterr("bpe_train: out of memory");
        p->heap = nh; p->hcap = nc;
    }
    int64_t i = p->nheap++;
    while (i > 0) {
        int64_t par = (i - 1) / 2;
        if (!heap_less(&p->heap[par], &e)) break;
        p->heap[i] = p->heap[par];
        i = par;
    }
    p->heap[i] = e;
    return 0;
}

static heap_e heap_pop(pstate *p) {
    heap_e top = p->heap[0], last = p->heap[--p->nheap];
    int64_t i = 0, n = p->nheap;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&p->heap[c], &p->heap[c + 1])) c++;
        if (!heap_less(&last, &p->heap[c])) break;
        p->heap[i] = p->heap[c];
        i = c;
    }
    if (n > 0) p->heap[i] = last;
    return top;
}

static int ptab_grow(pstate *p) {
    int64_t nc = p->cap ? p->cap * 2 : 1 << 16;
    uint64_t *nk = malloc(sizeof *nk * (size_t)nc);
    int32_t *ni = malloc(sizeof *ni * (size_t)nc);
    if (!nk || !ni) { free(nk); free(ni); return mw_seterr("bpe_train: out of memory"); }
    for (int64_t i = 0; i < nc; i++) ni[i] = -1;
    for (int64_t i = 0; i < p->cap; i++) {
        if (p->idx[i] < 0) continue;
        int64_t j = (int64_t)(mw_hash_u64(p->keys[i]) & (uint64_t)(nc - 1));
        while (ni[j] >= 0) j = (j + 1) & (nc - 1);
        nk[j] = p->keys[i]; ni[j] = p->idx[i];
    }
    free(p->keys); free(p->idx);
    p->keys = nk; p->idx = ni; p->cap = nc;
    return 0;
}

/* index of pair (a, b), created with count 0 when absent; -1 on out of memory */
static int64_t pair_get(pstate *p, int32_t a, int32_t b) {
    if ((p->used + 1) * 2 > p->cap && ptab_grow(p)) return -1;
    uint64_t key = PAIR_KEY(a, b);
    int64_t j = (int64_t)(mw_hash_u64(key) & (uint64_t)(p->cap - 1));
    while (p->idx[j] >= 0) {
        if (p->keys[j] == key) return p->idx[j];
        j = (j + 1) & (p->cap - 1);
    }
    if (p->npairs == p->pcap) {
        int64_t nc = p->pcap ? p->pcap * 2 : 1 << 16;
        pair_t *np = realloc(p->pairs, sizeof *np * (size_t)nc);
        if (!np) { mw_seterr("bpe_train: out of memory"); return -1; }
        p->pairs = np; p->pcap = nc;
    }
    p->pairs[p->npairs] = (pair_t){0, NULL, 0, 0, -1};
    p->keys[j] = key; p->idx[j] = (int32_t)p->npairs;
    p->used++;
    return p->npairs++;
}

/* records that word w holds the pair (skips w when it was the last one added) */
static int pair_addword(pair_t *q, int32_t w) {
    if (q->nw > 0 && q->w[q->nw - 1] == w) return 0;
    if (q->nw == q->capw) {
        int32_t nc = q->capw ? q->capw * 2 : 4;
        int32_t *nw = realloc(q->w, sizeof *nw * (size_t)nc);
        if (!nw) return mw_seterr("bpe_train: out of memory");
        q->w = nw; q->capw = nc;
    }
    q->w[q->nw++] = w;
    return 0;
}

static void pstate_free(pstate *p) {
    for (int64_t i = 0; i < p->npairs; i++) free(p->pairs[i].w);
    free(p->pairs); free(p->keys); free(p->idx); free(p->heap);
}

int mw_bpe_train(mw_bpe **out, mw_bpe_trainer *t, int vocab_size, int64_t min_frequency) {
    *out = NULL;
    if (vocab_size < 257 || vocab_size > (1 << 24))
        return mw_seterr("bpe_train: vocab_size %d must be in [257, 16777216] (256 bytes + <|endoftext|> + merges)",
                         vocab_size);
    if (min_frequency < 1) min_frequency = 1;
    int nm_max = vocab_size - 257;
    int32_t *newpairs = NULL; /* [nnew, 2] pairs holding the new id, seen during one merge */
    int64_t nnew = 0, capnew = 0;
    int64_t *wcount = NULL, *woff = NULL;
    int32_t *wlen = NULL, *sym = NULL, *stamp = NULL;
    pstate p = {0};
    mw_bpe *b = bpe_alloc(vocab_size, nm_max);
    if (!b) return mw_seterr("bpe_train: out of memory");
    b->eot = 0;
    if (set_token(b, 0, (const unsigned char *)MW_BPE_EOT, sizeof(MW_BPE_EOT) - 1)) goto fail;
    for (int i = 0; i < 256; i++) {
        unsigned char c = (unsigned char)i;
        if (set_token(b, 1 + i, &c, 1)) goto fail;
    }

    /* words: symbols of every distinct pre-token, [sum of lengths], and their counts */
    int64_t nw = t->used;
    wcount = malloc(sizeof *wcount * (size_t)(nw ? nw : 1));
    woff = malloc(sizeof *woff * (size_t)(nw ? nw : 1));
    wlen = malloc(sizeof *wlen * (size_t)(nw ? nw : 1));
    sym = malloc(sizeof *sym * (size_t)(t->nbytes ? t->nbytes : 1));
    stamp = malloc(sizeof *stamp * (size_t)(nw ? nw : 1));
    if (!wcount || !woff || !wlen || !sym || !stamp) { mw_seterr("bpe_train: out of memory"); goto fail; }
    {
        /* words in first-byte-offset order, which is the order they were first seen */
        int64_t *order = malloc(sizeof *order * (size_t)(nw ? nw : 1));
        if (!order) { mw_seterr("bpe_train: out of memory"); goto fail; }
        /* a word's bytes were appended when first seen, so ordering slots by offset gives the
         * first-seen order, independent of the hash table's layout */
        int64_t m = 0;
        for (int64_t i = 0; i < t->cap; i++) if (t->slots[i].count) order[m++] = i;
        int64_t *byoff = malloc(sizeof *byoff * (size_t)(t->nbytes + 1));
        if (!byoff) { free(order); mw_seterr("bpe_train: out of memory"); goto fail; }
        for (int64_t i = 0; i <= t->nbytes; i++) byoff[i] = -1;
        for (int64_t i = 0; i < m; i++) byoff[t->slots[order[i]].off] = order[i];
        int64_t w = 0;
        for (int64_t o = 0; o < t->nbytes; o++) {
            if (byoff[o] < 0) continue;
            word_slot *s = &t->slots[byoff[o]];
            wcount[w] = s->count; woff[w] = s->off; wlen[w] = s->len;
            for (int32_t i = 0; i < s->len; i++) sym[s->off + i] = 1 + t->bytes[s->off + i];
            w++;
        }
        free(byoff); free(order);
    }
    for (int64_t w = 0; w < nw; w++) {
        stamp[w] = -1;
        int32_t *s = sym + woff[w];
        for (int32_t i = 0; i + 1 < wlen[w]; i++) {
            int64_t q = pair_get(&p, s[i], s[i + 1]);
            if (q < 0) goto fail;
            p.pairs[q].count += wcount[w];
            if (pair_addword(&p.pairs[q], (int32_t)w)) goto fail;
        }
    }
    /* the heap starts with every pair; the table keys are read back through the slots */
    for (int64_t j = 0; j < p.cap; j++) {
        if (p.idx[j] < 0) continue;
        pair_t *q = &p.pairs[p.idx[j]];
        heap_e e = {q->count, (int32_t)(p.keys[j] >> 32), (int32_t)(uint32_t)p.keys[j]};
        if (heap_push(&p, e)) goto fail;
    }

    while (b->nmerges < nm_max && p.nheap > 0) {
        heap_e e = heap_pop(&p);
        int64_t qi = pair_get(&p, e.a, e.b);
        if (qi < 0) goto fail;
        int64_t cur = p.pairs[qi].count;
        if (cur != e.count) { /* stale entry: put it back with its current count */
            if (cur > 0 && heap_push(&p, (heap_e){cur, e.a, e.b})) goto fail;
            continue;
        }
        if (cur < min_frequency) break;
        int32_t id = 257 + b->nmerges;
        b->merges[b->nmerges++] = (merge_t){e.a, e.b, id};
        size_t la = (size_t)b->tok_len[e.a], lb = (size_t)b->tok_len[e.b];
        b->tok[id] = malloc(la + lb);
        if (!b->tok[id]) { mw_seterr("bpe_train: out of memory"); goto fail; }
        memcpy(b->tok[id], b->tok[e.a], la);
        memcpy(b->tok[id] + la, b->tok[e.b], lb);
        b->tok_len[id] = (int32_t)(la + lb);

        /* take the word list: merging may append to other pairs' lists (and realloc p.pairs) */
        int32_t *wl = p.pairs[qi].w;
        int32_t nwl = p.pairs[qi].nw;
        p.pairs[qi].w = NULL; p.pairs[qi].nw = p.pairs[qi].capw = 0;
        nnew = 0;
        for (int32_t k = 0; k < nwl; k++) {
            int32_t w = wl[k];
            if (stamp[w] == id) continue;
            stamp[w] = id;
            int32_t *s = sym + woff[w];
            int32_t n = wlen[w];
            int found = 0;
            for (int32_t i = 0; i + 1 < n; i++) if (s[i] == e.a && s[i + 1] == e.b) { found = 1; break; }
            if (!found) continue;
            int64_t c = wcount[w];
            for (int32_t i = 0; i + 1 < n; i++) {
                int64_t q = pair_get(&p, s[i], s[i + 1]);
                if (q < 0) { free(wl); goto fail; }
                p.pairs[q].count -= c;
            }
            int32_t o = 0;
            for (int32_t i = 0; i < n; i++) {
                if (i + 1 < n && s[i] == e.a && s[i + 1] == e.b) { s[o++] = id; i++; }
                else s[o++] = s[i];
            }
            wlen[w] = n = o;
            for (int32_t i = 0; i + 1 < n; i++) {
                int64_t q = pair_get(&p, s[i], s[i + 1]);
                if (q < 0) { free(wl); goto fail; }
                p.pairs[q].count += c;
                if (s[i] == id || s[i + 1] == id) {
                    if (pair_addword(&p.pairs[q], w)) { free(wl); goto fail; }
                    if (nnew == capnew) {
                        int64_t nc = capnew ? capnew * 2 : 256;
                        int32_t *nn = realloc(newpairs, sizeof *nn * (size_t)nc * 2);
                        if (!nn) { free(wl); mw_seterr("bpe_train: out of memory"); goto fail; }
                        newpairs = nn; capnew = nc;
                    }
                    newpairs[2 * nnew] = s[i]; newpairs[2 * nnew + 1] = s[i + 1]; nnew++;
                }
            }
        }
        free(wl);
        /* pairs holding the new id only gained counts: give each one heap entry with its
         * final count (the stamp skips repeats within this merge) */
        for (int64_t k = 0; k < nnew; k++) {
            int64_t q = pair_get(&p, newpairs[2 * k], newpairs[2 * k + 1]);
            if (q < 0) goto fail;
            if (p.pairs[q].pushed == id) continue;
            p.pairs[q].pushed = id;
            if (p.pairs[q].count > 0 &&
                heap_push(&p, (heap_e){p.pairs[q].count, newpairs[2 * k], newpairs[2 * k + 1]})) goto fail;
        }
    }
    /* ids beyond the merges learnt are not part of the vocabulary */
    b->vocab = 257 + b->nmerges;
    free(newpairs);
    pstate_free(&p);
    free(wcount); free(woff); free(wlen); free(sym); free(stamp);
    *out = b;
    return 0;
fail:
    free(newpairs);
    pstate_free(&p);
    free(wcount); free(woff); free(wlen); free(sym); free(stamp);
    mw_bpe_free(b);
    return -1;
}

/* ------------------------------------------------------------------ tokenizer.json */

/* writes s as a JSON string (the byte-level characters need escapes only for '"' and '\\') */
static void put_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') { fputc('\\', f); fputc(*p, f); }
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

/* the byte-level spelling of token id into buf (at most 2 bytes per token byte + NUL) */
static char *token_str(const mw_bpe *b, int id, char *buf) {
    char *o = buf;
    for (int32_t i = 0; i < b->tok_len[id]; i++) {
        const char *c = mw_bpe_byte_char(b->tok[id][i]);
        while (*c) *o++ = *c++;
    }
    *o = 0;
    return buf;
}

/* writes a unique temporary file next to path and renames it over path once complete (file.h) */
int mw_bpe_save(const mw_bpe *b, const char *path) {
    mw_file w;
    if (mw_file_begin(&w, path, "bpe_save")) return -1;
    FILE *f = w.f;
    int32_t maxlen = 1;
    for (int i = 0; i < b->vocab; i++) if (b->tok[i] && b->tok_len[i] > maxlen) maxlen = b->tok_len[i];
    char *buf = malloc((size_t)maxlen * 2 + 1), *buf2 = malloc((size_t)maxlen * 2 + 1);
    if (!buf || !buf2) { free(buf); free(buf2); mw_file_abort(&w); return mw_seterr("bpe_save: out of memory"); }
    fprintf(f, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    if (b->eot >= 0)
        fprintf(f, "\n    {\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, "
                   "\"rstrip\": false, \"normalized\": false, \"special\": true}\n  ", b->eot, MW_BPE_EOT);
    fprintf(f, "],\n  \"normalizer\": null,\n"
               "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true},\n"
               "  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": false, \"use_regex\": true},\n"
               "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true},\n"
               "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
               "    \"continuing_subword_prefix\": \"\",\n    \"end_of_word_suffix\": \"\",\n"
               "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n"
               "    \"vocab\": {");
    int first = 1;
    for (int i = 0; i < b->vocab; i++) {
        if (!b->tok[i]) continue;
        fputs(first ? "\n      " : ",\n      ", f);
        first = 0;
        if (i == b->eot) put_json_str(f, MW_BPE_EOT);
        else put_json_str(f, token_str(b, i, buf));
        fprintf(f, ": %d", i);
    }
    fprintf(f, "\n    },\n    \"merges\": [");
    for (int k = 0; k < b->nmerges; k++) {
        fputs(k ? ",\n      " : "\n      ", f);
        /* "left right": byte-level spellings never hold a space (space is spelt U+0120) */
        token_str(b, b->merges[k].l, buf);
        token_str(b, b->merges[k].r, buf2);
        size_t la = strlen(buf);
        char *both = malloc(la + strlen(buf2) + 2);
        if (!both) { free(buf); free(buf2); mw_file_abort(&w); return mw_seterr("bpe_save: out of memory"); }
        memcpy(both, buf, la);
        both[la] = ' ';
        strcpy(both + la + 1, buf2);
        put_json_str(f, both);
        free(both);
    }
    fprintf(f, "\n    ]\n  }\n}\n");
    free(buf); free(buf2);
    return mw_file_commit(&w, "bpe_save");
}
