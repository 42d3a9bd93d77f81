#define _GNU_SOURCE /* memmem */
/* test_tokenizer.c - core/tokenizer.c against independent results:
 *   - the known values of ../shared/assets/README.md;
 *   - tests/fixtures/tokenizer_cases.tsv, made by tests/fixtures/gen_tokenizer.py (GPT-2's published
 *     encoder algorithm and Hugging Face's added-token splitting in Python, with the `regex` module
 *     and unicodedata): ids and decoded bytes for 721 inputs per tokenizer, GPT-2 and GPT-NeoX-20B;
 *   - tiny tokenizers written here whose ids are worked out by hand in the comments;
 *   - round trips decode(encode(s)) == s on random text (random bytes too, for GPT-2);
 *   - a tokenizer.json written by core/bpe_train.c (trained here on random text) loads, and encodes
 *     as the plain quadratic BPE algorithm written in this file does;
 *   - broken files: each error names the file and the field.
 * The real tokenizer files live in ../shared/assets (or $MIWB_SHARED/assets); tests that need them
 * print "SKIP" when they are absent.
 */
#include <stdlib.h>

#include <unistd.h>

#include "bpe_train.h"
#include "mw_tensor.h"
#include "mwtest.h"
#include "tokenizer.h"

static char gpt2_json[1024], gpt2_vocab[1024], gpt2_merges[1024], neox_json[1024];
static int have_assets;

static int file_ok(const char *p) {
    FILE *f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static void find_assets(void) {
    const char *shared = getenv("MIWB_SHARED");
    if (!shared || !*shared) shared = "../shared";
    snprintf(gpt2_json, sizeof gpt2_json, "%s/assets/gpt2/tokenizer.json", shared);
    snprintf(gpt2_vocab, sizeof gpt2_vocab, "%s/assets/gpt2/vocab.json", shared);
    snprintf(gpt2_merges, sizeof gpt2_merges, "%s/assets/gpt2/merges.txt", shared);
    snprintf(neox_json, sizeof neox_json, "%s/assets/neox/20B_tokenizer.json", shared);
    have_assets = file_ok(gpt2_json) && file_ok(gpt2_vocab) && file_ok(gpt2_merges) && file_ok(neox_json);
}

static mw_tokenizer *gpt2, *gpt2_txt, *neox; /* tokenizer.json, vocab.json + merges.txt, NeoX */

/* encodes s and compares with the n expected ids */
static int encodes_to(mw_tokenizer *t, const char *s, size_t len, const int64_t *want, size_t n) {
    int64_t *ids;
    size_t m;
    if (mw_tokenizer_encode(&ids, &m, t, s, len)) {
        printf("  encode failed: %s\n", mw_error());
        return 0;
    }
    int same = m == n && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!same) {
        printf("  got [");
        for (size_t i = 0; i < m; i++) printf(i ? " %lld" : "%lld", (long long)ids[i]);
        printf("], expected [");
        for (size_t i = 0; i < n; i++) printf(i ? " %lld" : "%lld", (long long)want[i]);
        printf("]\n");
    }
    free(ids);
    return same;
}
#define ENCODES(t, s, ...) do { const int64_t _w[] = {__VA_ARGS__}; \
    CHECK(encodes_to((t), (s), strlen(s), _w, sizeof _w / sizeof _w[0])); } while (0)

/* ---------------------------------------------------------------- real files */

static void test_load_real(void) {
    CHECK_OK(mw_tokenizer_load(&gpt2, gpt2_json));
    CHECK_OK(mw_tokenizer_load_gpt2(&gpt2_txt, gpt2_vocab, gpt2_merges));
    CHECK_OK(mw_tokenizer_load(&neox, neox_json));
    if (!gpt2 || !gpt2_txt || !neox) return;
    /* README: GPT-2 has 50257 entries (50256 = <|endoftext|>); NeoX 50254 BPE entries + 23
     * space-run tokens 50254..50276 = 50277 */
    CHECK(mw_tokenizer_vocab_size(gpt2) == 50257);
    CHECK(mw_tokenizer_vocab_size(gpt2_txt) == 50257);
    CHECK(mw_tokenizer_vocab_size(neox) == 50277);
    for (mw_tokenizer *t = gpt2; t; t = t == gpt2 ? gpt2_txt : NULL) {
        CHECK(mw_tokenizer_special_id(t, MW_TOK_BOS) == 50256);
        CHECK(mw_tokenizer_special_id(t, MW_TOK_EOS) == 50256);
        CHECK(mw_tokenizer_special_id(t, MW_TOK_PAD) == -1);
        CHECK(mw_tokenizer_special_id(t, MW_TOK_UNK) == -1);
        CHECK(mw_tokenizer_is_special(t, 50256) && !mw_tokenizer_is_special(t, 262));
    }
    CHECK(mw_tokenizer_special_id(neox, MW_TOK_BOS) == 0);
    CHECK(mw_tokenizer_special_id(neox, MW_TOK_EOS) == 0);
    CHECK(mw_tokenizer_special_id(neox, MW_TOK_PAD) == 1);
    CHECK(mw_tokenizer_is_special(neox, 1) && !mw_tokenizer_is_special(neox, 50274));
}

static void test_known_values(void) {
    if (!gpt2 || !gpt2_txt || !neox) { CHECK(0); return; }
    /* ../shared/assets/README.md */
    ENCODES(gpt2, "gpt2", 70, 457, 17);
    ENCODES(gpt2_txt, "gpt2", 70, 457, 17);
    ENCODES(gpt2, "The the the the the the the the the", 464, 262, 262, 262, 262, 262, 262, 262, 262);
    ENCODES(neox, "a    b", 66, 50274, 67);
    /* the token texts: " the" is "\xc4\xa0the" (U+0120 stands for the space byte) */
    CHECK(strcmp(mw_tokenizer_id_to_token(gpt2, 262), "\xc4\xa0the") == 0);
    CHECK(mw_tokenizer_token_to_id(gpt2, "\xc4\xa0the", 5) == 262);
    CHECK(strcmp(mw_tokenizer_id_to_token(gpt2, 50256), "<|endoftext|>") == 0);
    CHECK(strcmp(mw_tokenizer_id_to_token(neox, 1), "<|padding|>") == 0);
    CHECK(strcmp(mw_tokenizer_id_to_token(neox, 50274), "    ") == 0); /* 50254 + (24 - 4) */
    CHECK(mw_tokenizer_token_to_id(neox, "    ", 4) == 50274);
    CHECK(mw_tokenizer_token_to_id(gpt2, "no such token", 13) == -1);
    CHECK(mw_tokenizer_id_to_token(gpt2, 50257) == NULL && mw_tokenizer_id_to_token(gpt2, -1) == NULL);
}

static int hexval(int c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

static size_t unhex(unsigned char *out, const char *hex, size_t n) {
    for (size_t i = 0; i + 1 < n; i += 2) out[i / 2] = (unsigned char)(hexval(hex[i]) * 16 + hexval(hex[i + 1]));
    return n / 2;
}

/* every line of the fixture: ids and decoded bytes */
static void test_fixture_cases(void) {
    if (!gpt2 || !gpt2_txt || !neox) { CHECK(0); return; }
    FILE *f = fopen("tests/fixtures/tokenizer_cases.tsv", "r");
    CHECK(f != NULL);
    if (!f) return;
    size_t cap = 1 << 20;
    char *line = malloc(cap);
    unsigned char *in = malloc(cap), *dec_want = malloc(cap);
    int64_t *want = malloc(cap * sizeof *want);
    int cases = 0, bad = 0;
    while (fgets(line, (int)cap, f)) {
        if (line[0] == '#') continue;
        /* name \t hex \t ids \t decode-hex; the ids and decode columns may be empty */
        char *name = line, *hex = strchr(line, '\t');
        if (!hex) continue;
        *hex++ = 0;
        size_t hl = strcspn(hex, "\t\n");
        size_t n = unhex(in, hex, hl);
        size_t nw = 0, nd = 0;
        char *p = hex + hl, *end;
        if (*p == '\t') p++;
        while (*p && *p != '\t' && *p != '\n') {
            want[nw++] = strtoll(p, &end, 10);
            p = end;
            while (*p == ' ') p++;
        }
        if (*p == '\t') nd = unhex(dec_want, p + 1, strcspn(p + 1, "\n"));
        int is_gpt2 = strcmp(name, "gpt2") == 0;
        mw_tokenizer *ts[2] = {is_gpt2 ? gpt2 : neox, is_gpt2 ? gpt2_txt : NULL};
        for (int k = 0; k < 2 && ts[k]; k++) {
            if (!encodes_to(ts[k], (const char *)in, n, want, nw)) {
                if (bad++ < 10) printf("  case %d (%s, %s): input %.80s\n", cases, name, k ? "vocab.json" : "tokenizer.json", hex);
                mwt_cur_failed = 1;
            }
        }
        char *text;
        size_t tl;
        if (mw_tokenizer_decode(&text, &tl, ts[0], want, nw) != 0 || tl != nd || memcmp(text, dec_want, nd) != 0) {
            if (bad++ < 10) printf("  case %d (%s): decode differs (input %.80s)\n", cases, name, hex);
            mwt_cur_failed = 1;
        }
        free(text);
        cases++;
    }
    fclose(f);
    CHECK_MSG(cases == 2 * 721, "%d cases read", cases);
    CHECK_MSG(bad == 0, "%d cases differ", bad);
    free(line);
    free(in);
    free(dec_want);
    free(want);
}

/* ---------------------------------------------------------------- round trips */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static size_t put_utf8(unsigned char *o, uint32_t c) {
    if (c < 0x80) { o[0] = (unsigned char)c; return 1; }
    if (c < 0x800) { o[0] = (unsigned char)(0xC0 | c >> 6); o[1] = (unsigned char)(0x80 | (c & 63)); return 2; }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | c >> 12); o[1] = (unsigned char)(0x80 | (c >> 6 & 63));
        o[2] = (unsigned char)(0x80 | (c & 63)); return 3;
    }
    o[0] = (unsigned char)(0xF0 | c >> 18); o[1] = (unsigned char)(0x80 | (c >> 12 & 63));
    o[2] = (unsigned char)(0x80 | (c >> 6 & 63)); o[3] = (unsigned char)(0x80 | (c & 63)); return 4;
}

static int round_trips(mw_tokenizer *t, const unsigned char *s, size_t n) {
    int64_t *ids;
    size_t m;
    char *back;
    size_t bl;
    if (mw_tokenizer_encode(&ids, &m, t, (const char *)s, n)) return 0;
    int rc = mw_tokenizer_decode(&back, &bl, t, ids, m);
    free(ids);
    if (rc) return 0;
    int same = bl == n && memcmp(back, s, n) == 0;
    free(back);
    return same;
}

/* Random text from code points that are NFC-stable and not combining (ASCII, Latin-1, Cyrillic,
 * CJK, emoji, Unicode spaces; not U+2000/U+2001, which NFC maps to U+2002/U+2003), so decode(encode(s)) == s holds for NeoX's NFC too; random bytes,
 * invalid UTF-8 included, for GPT-2 (whose alphabet covers all 256 bytes). */
static void test_round_trip(void) {
    if (!gpt2 || !neox) { CHECK(0); return; }
    static const uint32_t ranges[][2] = {{0x00, 0x7F}, {0x20, 0x7E}, {0x20, 0x7E}, {0x0A, 0x0A},
                                         {0xA0, 0xFF}, {0x400, 0x45F}, {0x4E00, 0x9FFF},
                                         {0x1F600, 0x1F64F}, {0x3000, 0x3000}, {0x2002, 0x200A}};
    unsigned char s[1024];
    int fails = 0;
    for (int it = 0; it < 400; it++) {
        size_t n = 0, len = rnd() % 200;
        for (size_t i = 0; i < len; i++) {
            const uint32_t *r = ranges[rnd() % (sizeof ranges / sizeof ranges[0])];
            n += put_utf8(s + n, r[0] + (uint32_t)(rnd() % (r[1] - r[0] + 1)));
        }
        int g = round_trips(gpt2, s, n), x = round_trips(neox, s, n);
        if (!g || !x) {
            if (fails++ < 3) {
                printf("  text round trip failed (%s) at iteration %d: ", g ? "neox" : "gpt2", it);
                for (size_t i = 0; i < n && i < 64; i++) printf("%02x", s[i]);
                printf("\n");
            }
        }
    }
    for (int it = 0; it < 400; it++) {
        size_t n = rnd() % 300;
        for (size_t i = 0; i < n; i++) s[i] = (unsigned char)rnd();
        if (!round_trips(gpt2, s, n)) {
            if (fails++ < 6) printf("  byte round trip failed at iteration %d\n", it);
        }
    }
    CHECK_MSG(fails == 0, "%d round trips failed", fails);
    /* a 200 000-letter word (one pre-token, no cache) and a 100 000-space run */
    size_t big = 200000;
    unsigned char *w = malloc(big);
    for (size_t i = 0; i < big; i++) w[i] = (unsigned char)('a' + rnd() % 3);
    CHECK(round_trips(gpt2, w, big));
    memset(w, ' ', 100000);
    CHECK(round_trips(neox, w, 100000));
    free(w);
}

/* The plain BPE algorithm, written here as the reference: text cut at <|endoftext|> (id 0), each
 * pre-token's bytes as ids 1 + byte, then the lowest-ranked merge applied to all its occurrences
 * left to right until none applies (quadratic, as GPT-2's published encoder). The pre-token
 * boundaries come from mw_bpe_pretoken_len, checked against Python's regex module in
 * test_bpe_train. Returns the number of ids written to out. */
static size_t ref_encode(const mw_bpe *b, const char *text, size_t n, int64_t *out) {
    size_t nout = 0, i = 0;
    int nm = mw_bpe_nmerges(b);
    int32_t *w = malloc((n + 1) * sizeof *w);
    while (i < n) {
        if (n - i >= 13 && memcmp(text + i, "<|endoftext|>", 13) == 0) {
            out[nout++] = 0;
            i += 13;
            continue;
        }
        const char *e = memmem(text + i, n - i, "<|endoftext|>", 13);
        size_t end = e ? (size_t)(e - text) : n;
        size_t l = mw_bpe_pretoken_len((const unsigned char *)text + i, end - i);
        size_t m = 0;
        for (size_t k = 0; k < l; k++) w[m++] = 1 + (unsigned char)text[i + k];
        for (;;) {
            int best = -1, bl = 0, br = 0, bres = 0;
            for (size_t k = 0; k + 1 < m; k++)
                for (int r = 0; r < nm && (best < 0 || r < best); r++) {
                    int a, c, res;
                    mw_bpe_merge(b, r, &a, &c, &res);
                    if (a == w[k] && c == w[k + 1]) { best = r; bl = a; br = c; bres = res; }
                }
            if (best < 0) break;
            size_t o = 0;
            for (size_t k = 0; k < m; k++) {
                if (k + 1 < m && w[k] == bl && w[k + 1] == br) { w[o++] = bres; k++; }
                else w[o++] = w[k];
            }
            m = o;
        }
        for (size_t k = 0; k < m; k++) out[nout++] = w[k];
        i += l;
    }
    free(w);
    return nout;
}

/* A tokenizer trained by core/bpe_train.c and saved as tokenizer.json (what miwb's own model
 * folders hold) loads here and gives the ids of the plain algorithm above. */
static void test_trained_file(void) {
    static const char *words[] = {"the", "cat", "sat", "on", "mat", " ", "  ", "\n", "'s", "42",
                                  "caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", ",", ".", "<|endoftext|>",
                                  "\xff", "don't", "\t"};
    size_t nw = sizeof words / sizeof words[0];
    char *text = malloc(200000);
    size_t n = 0;
    while (n < 190000) {
        const char *w = words[rnd() % nw];
        memcpy(text + n, w, strlen(w));
        n += strlen(w);
        if (rnd() % 3) text[n++] = ' ';
    }
    mw_bpe_trainer *tr = mw_bpe_trainer_new();
    mw_bpe *b = NULL;
    CHECK(tr != NULL);
    if (!tr) { free(text); return; }
    CHECK_OK(mw_bpe_trainer_feed(tr, text, n));
    CHECK_OK(mw_bpe_train(&b, tr, 400, 2));
    mw_bpe_trainer_free(tr);
    if (!b) { free(text); return; }
    char path[] = "/tmp/mwtest_tok_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    mw_tokenizer *t = NULL;
    CHECK_OK(mw_bpe_save(b, path));
    CHECK_OK(mw_tokenizer_load(&t, path));
    unlink(path);
    if (t) {
        CHECK(mw_tokenizer_vocab_size(t) == mw_bpe_vocab_size(b));
        int bad = 0;
        for (int it = 0; it < 200; it++) {
            size_t off = rnd() % (n - 2000), len = rnd() % 2000;
            int64_t *w64 = malloc((len + 1) * sizeof *w64);
            size_t nwant = ref_encode(b, text + off, len, w64);
            if (!encodes_to(t, text + off, len, w64, nwant)) bad++;
            free(w64);
        }
        CHECK_MSG(bad == 0, "%d of 200 slices encode differently", bad);
    }
    mw_tokenizer_free(t);
    mw_bpe_free(b);
    free(text);
}

/* NeoX's NFC: decomposed and composed accents give the same ids; GPT-2 keeps them apart. */
static void test_nfc(void) {
    if (!gpt2 || !neox) { CHECK(0); return; }
    int64_t *a, *b;
    size_t na, nb;
    CHECK_OK(mw_tokenizer_encode(&a, &na, neox, "caf\xc3\xa9", 5));      /* U+00E9 */
    CHECK_OK(mw_tokenizer_encode(&b, &nb, neox, "cafe\xcc\x81", 6));     /* e + U+0301 */
    CHECK(na == nb && memcmp(a, b, na * sizeof *a) == 0);
    free(a);
    free(b);
    CHECK_OK(mw_tokenizer_encode(&a, &na, gpt2, "caf\xc3\xa9", 5));
    CHECK_OK(mw_tokenizer_encode(&b, &nb, gpt2, "cafe\xcc\x81", 6));
    CHECK(!(na == nb && memcmp(a, b, na * sizeof *a) == 0));
    free(a);
    free(b);
    /* invalid bytes: NeoX has no symbol for 0xFF (it never occurs in UTF-8): dropped */
    ENCODES(neox, "a\xff", 66); /* a = 66 (README: "a    b") */
    CHECK(encodes_to(neox, "\xff", 1, NULL, 0));
}

/* ---------------------------------------------------------------- tiny hand-made tokenizers */

/* Byte-level alphabet for these: a b c d stand for themselves, U+0120 (\xc4\xa0) is the space. */
static const char *tiny_vocab =
    "{\"a\": 0, \"b\": 1, \"c\": 2, \"\\u0120\": 3, \"ab\": 4, \"abc\": 5, \"\\u0120a\": 6, "
    "\"bc\": 7, \"<s>\": 8, \"aa\": 9, \"b\\u0120\": 10, \"<unk>\": 11}";

static mw_tokenizer *tiny(const char *merges, const char *extra, const char *pre) {
    char json[4096];
    snprintf(json, sizeof json,
             "{\"added_tokens\": [{\"id\": 8, \"content\": \"<s>\", \"special\": true, \"normalized\": false}],"
             " \"normalizer\": null, \"pre_tokenizer\": %s, \"decoder\": {\"type\": \"ByteLevel\"},"
             " \"model\": {\"type\": \"BPE\", \"vocab\": %s, \"merges\": %s %s}}",
             pre ? pre : "{\"type\": \"ByteLevel\", \"add_prefix_space\": false}", tiny_vocab, merges,
             extra ? extra : "");
    mw_tokenizer *t = NULL;
    if (mw_tokenizer_from_json(&t, json, strlen(json), "tiny.json")) printf("  load: %s\n", mw_error());
    return t;
}

static void test_tiny_bpe(void) {
    /* merges a+b (rank 0), ab+c (1), Ġ+a (2).
     * "abc ab" -> pre-tokens "abc", " ab".
     * "abc": a b c -> (a,b) r0 -> ab c -> (ab,c) r1 -> abc = [5].
     * " ab": Ġ a b: (Ġ,a) r2, (a,b) r0 -> Ġ ab; (Ġ,ab) is no merge -> [3, 4]. */
    const char *m1[] = {"[\"a b\", \"ab c\", \"\\u0120 a\"]", "[[\"a\", \"b\"], [\"ab\", \"c\"], [\"\\u0120\", \"a\"]]"};
    for (int k = 0; k < 2; k++) { /* string form and pair form */
        mw_tokenizer *t = tiny(m1[k], NULL, NULL);
        CHECK(t != NULL);
        if (!t) continue;
        ENCODES(t, "abc ab", 5, 3, 4);
        ENCODES(t, "a<s>b", 0, 8, 1);     /* the added token is cut out first */
        ENCODES(t, "<s><s>", 8, 8);
        CHECK(encodes_to(t, "d", 1, NULL, 0)); /* no symbol for d, no unk: dropped */
        CHECK(mw_tokenizer_vocab_size(t) == 12);
        mw_tokenizer_free(t);
    }
    /* rank order: b+c (rank 0) before a+b (rank 1): "abc" -> a bc = [0, 7] */
    mw_tokenizer *t = tiny("[\"b c\", \"a b\", \"ab c\"]", NULL, NULL);
    if (t) ENCODES(t, "abc", 0, 7);
    mw_tokenizer_free(t);
    /* leftmost among equal ranks: "aaa" with a+a -> aa a = [9, 0] */
    t = tiny("[\"a a\"]", NULL, NULL);
    if (t) ENCODES(t, "aaa", 9, 0);
    if (t) ENCODES(t, "aaaa", 9, 9);
    mw_tokenizer_free(t);
    /* unk: d -> <unk> (11); fuse_unk merges consecutive unks */
    t = tiny("[]", ", \"unk_token\": \"<unk>\"", NULL);
    if (t) ENCODES(t, "dad", 11, 0, 11);
    if (t) ENCODES(t, "ddd", 11, 11, 11);
    mw_tokenizer_free(t);
    t = tiny("[]", ", \"unk_token\": \"<unk>\", \"fuse_unk\": true", NULL);
    if (t) ENCODES(t, "ddd", 11);
    mw_tokenizer_free(t);
    /* use_regex false: "b a" stays one word: b Ġ a; merges b+Ġ (r0), Ġ+a (r1) -> bĠ a = [10, 0];
     * with the pattern it is "b", " a" -> [1, 6] */
    const char *m2 = "[\"b \\u0120\", \"\\u0120 a\"]";
    t = tiny(m2, NULL, "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}");
    if (t) ENCODES(t, "b a", 10, 0);
    mw_tokenizer_free(t);
    t = tiny(m2, NULL, NULL);
    if (t) ENCODES(t, "b a", 1, 6);
    mw_tokenizer_free(t);
    /* add_prefix_space: "a" -> " a" -> Ġa = [6]; each piece between added tokens gets one */
    t = tiny(m2, NULL, "{\"type\": \"ByteLevel\", \"add_prefix_space\": true}");
    if (t) ENCODES(t, "a", 6);
    if (t) ENCODES(t, "a<s>a", 6, 8, 6);
    if (t) ENCODES(t, " a", 6);
    mw_tokenizer_free(t);
}

/* merges never cross the pattern's splits (one merge, b+c = 7; ' has no symbol: dropped) */
static void test_tiny_pretokenizer(void) {
    mw_tokenizer *t = tiny("[\"b c\"]", NULL, NULL);
    CHECK(t != NULL);
    if (!t) return;
    ENCODES(t, "bc bc", 7, 3, 7);   /* "bc", " bc" */
    ENCODES(t, "b c", 1, 3, 2);     /* "b", " c" */
    ENCODES(t, "b'c", 1, 2);        /* "b", "'", "c" */
    ENCODES(t, "bc'bc", 7, 7);      /* "bc", "'", "bc" */
    ENCODES(t, "b  c", 1, 3, 3, 2); /* "b", " ", " c": a space run leaves its last space */
    ENCODES(t, "b1c", 1, 2);        /* "b", "1" (no symbol), "c" */
    mw_tokenizer_free(t);
}

/* ---------------------------------------------------------------- broken files */

static void expect_error(const char *json, const char *field) {
    mw_tokenizer *t = (mw_tokenizer *)1;
    int rc = mw_tokenizer_from_json(&t, json, strlen(json), "bad.json");
    CHECK_MSG(rc == -1 && t == NULL, "accepted: %s", json);
    if (rc == 0) { mw_tokenizer_free(t); return; }
    CHECK_MSG(strstr(mw_error(), "bad.json") && strstr(mw_error(), field),
              "error \"%s\" lacks \"bad.json\" or \"%s\"", mw_error(), field);
}

#define PRE "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}, "
#define VOC "\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}"

static void test_bad_json(void) {
    expect_error("not json", "not valid JSON");
    expect_error("[1, 2]", "JSON object");
    expect_error("{" PRE "\"x\": 1}", "model");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", \"vocab\": [], \"merges\": []}}", "model.vocab");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", " VOC "}}", "model.merges");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", " VOC ", \"merges\": [\"a z\"]}}", "model.merges[0]");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", " VOC ", \"merges\": [\"a b\", \"b a\"]}}", "model.merges[1]");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", " VOC ", \"merges\": [\"ab\"]}}", "model.merges[0]");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", " VOC ", \"merges\": [5]}}", "model.merges[0]");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", " VOC ", \"merges\": [[\"a\"]]}}", "model.merges[0]");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}", "model.vocab[\"a\"]");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1.5}, \"merges\": []}}", "model.vocab[\"a\"]");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"0\"}, \"merges\": []}}", "model.vocab[\"a\"]");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1e12}, \"merges\": []}}", "model.vocab[\"a\"]");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}", "model.vocab: id 0");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", "empty");
    expect_error("{" PRE "\"model\": {\"type\": \"WordPiece\", " VOC ", \"merges\": []}}", "model.type");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", " VOC ", \"merges\": [], \"unk_token\": \"zz\"}}", "model.unk_token");
    expect_error("{" PRE "\"model\": {\"type\": \"BPE\", " VOC ", \"merges\": [], \"dropout\": 0.1}}", "model.dropout");
    expect_error("{\"pre_tokenizer\": 5, \"model\": {\"type\": \"BPE\", " VOC ", \"merges\": []}}", "pre_tokenizer");
    expect_error("{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\", " VOC ", \"merges\": []}}", "pre_tokenizer.type");
    expect_error("{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"use_regex\": 3}, \"model\": {\"type\": \"BPE\", " VOC ", \"merges\": []}}", "pre_tokenizer.use_regex");
    expect_error("{" PRE "\"normalizer\": {\"type\": \"Lowercase\"}, \"model\": {\"type\": \"BPE\", " VOC ", \"merges\": []}}", "normalizer.type");
    expect_error("{" PRE "\"decoder\": {\"type\": \"WordPiece\"}, \"model\": {\"type\": \"BPE\", " VOC ", \"merges\": []}}", "decoder");
    expect_error("{" PRE "\"added_tokens\": [{\"id\": 3}], \"model\": {\"type\": \"BPE\", " VOC ", \"merges\": []}}", "added_tokens[0].content");
    expect_error("{" PRE "\"added_tokens\": [{\"id\": -3, \"content\": \"x\"}], \"model\": {\"type\": \"BPE\", " VOC ", \"merges\": []}}", "added_tokens[0].id");
    expect_error("{" PRE "\"added_tokens\": {}, \"model\": {\"type\": \"BPE\", " VOC ", \"merges\": []}}", "added_tokens");
    expect_error("{" PRE "\"added_tokens\": [{\"id\": 3, \"content\": \"x\", \"special\": \"yes\"}], \"model\": {\"type\": \"BPE\", " VOC ", \"merges\": []}}", "added_tokens[0].special");
    /* truncated at every length: an error, never a crash */
    const char *good = "{" PRE "\"model\": {\"type\": \"BPE\", " VOC ", \"merges\": [\"a b\"]}}";
    mw_tokenizer *t;
    for (size_t n = 0; n < strlen(good); n++) {
        CHECK(mw_tokenizer_from_json(&t, good, n, "cut.json") == -1 && t == NULL);
        if (t) mw_tokenizer_free(t);
    }
    CHECK_OK(mw_tokenizer_from_json(&t, good, strlen(good), "good.json"));
    if (t) ENCODES(t, "ab", 2);
    mw_tokenizer_free(t);
}

static void test_bad_gpt2_files(void) {
    mw_tokenizer *t;
    const char *v = "{\"a\": 0, \"b\": 1, \"ab\": 2}";
    CHECK_ERR(mw_tokenizer_from_gpt2(&t, v, strlen(v), "#version: 0.2\na b c\n", 20, "g"), "merges.txt line 2");
    CHECK_ERR(mw_tokenizer_from_gpt2(&t, v, strlen(v), "a z\n", 4, "g"), "merges.txt line");
    CHECK_ERR(mw_tokenizer_from_gpt2(&t, "[]", 2, "", 0, "g"), "vocab.json");
    CHECK_ERR(mw_tokenizer_from_gpt2(&t, "{\"a\": null}", 11, "", 0, "g"), "vocab.json[\"a\"]");
    CHECK_OK(mw_tokenizer_from_gpt2(&t, v, strlen(v), "#version: 0.2\r\na b\r\n\r\n", 22, "g"));
    if (t) ENCODES(t, "ab", 2);
    mw_tokenizer_free(t);
    CHECK_ERR(mw_tokenizer_load(&t, "/nonexistent/tokenizer.json"), "/nonexistent/tokenizer.json");
    CHECK_ERR(mw_tokenizer_load(&t, "/tmp"), "none of tokenizer.json, tokenizer.model, vocab.json");
    CHECK_ERR(mw_tokenizer_load_gpt2(&t, "/nonexistent/vocab.json", "/nonexistent/merges.txt"), "cannot open");
}

static void test_decode_errors(void) {
    if (!gpt2) { CHECK(0); return; }
    char *s;
    size_t n;
    int64_t ids[] = {464, 50257};
    CHECK_ERR(mw_tokenizer_decode(&s, &n, gpt2, ids, 2), "id 50257 at position 1");
    ids[1] = -1;
    CHECK_ERR(mw_tokenizer_decode(&s, &n, gpt2, ids, 2), "id -1");
    CHECK_OK(mw_tokenizer_decode(&s, &n, gpt2, ids, 0));
    CHECK(n == 0 && s && s[0] == 0);
    free(s);
    /* decode of GPT-2 ids worked out from the vocabulary: 464 "The", 262 "Ġthe", 50256 */
    int64_t ok[] = {464, 262, 50256};
    CHECK_OK(mw_tokenizer_decode(&s, &n, gpt2, ok, 3));
    CHECK(n == 20 && strcmp(s, "The the<|endoftext|>") == 0);
    free(s);
}

/* a test that needs the real files: without them, a SKIP line that counts as neither */
#define RUN_ASSETS(fn) do { if (have_assets) RUN(fn); \
    else printf("SKIP - %s: tokenizer files not found in ../shared/assets (set MIWB_SHARED)\n", #fn); } while (0)

int main(void) {
    find_assets();
    RUN_ASSETS(test_load_real);
    RUN_ASSETS(test_known_values);
    RUN_ASSETS(test_fixture_cases);
    RUN_ASSETS(test_round_trip);
    RUN_ASSETS(test_nfc);
    RUN(test_tiny_bpe);
    RUN(test_tiny_pretokenizer);
    RUN(test_trained_file);
    RUN(test_bad_json);
    RUN(test_bad_gpt2_files);
    RUN_ASSETS(test_decode_errors);
    mw_tokenizer_free(gpt2);
    mw_tokenizer_free(gpt2_txt);
    mw_tokenizer_free(neox);
    MW_TEST_MAIN_END();
}
