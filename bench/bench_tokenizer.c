/* bench_tokenizer.c - speed of core/tokenizer.c on 10 MB of English text, one core.
 *
 *   bench_tokenizer          (bench/run.sh builds and runs it; arguments are ignored, they
 *                             belong to other benchmarks)
 *   environment: MIWB_CORPUS (text file), MIWB_BENCH_MB (default 10), MIWB_BENCH_TOKENIZER
 *                (gpt2, neox, llama2 or olmo2: only that one)
 *
 * The text: $MIWB_CORPUS, else data/corpus/train.txt (tools/make_corpus.sh), else
 * a fallback made from /usr/share/dict/words (wamerican): words drawn with Zipf-like frequencies
 * into sentences, which has many more distinct words than real prose (a harder case for the
 * word cache). The first MB megabytes are used (repeated if the file is shorter).
 * Tokenizers: ../shared/assets (or $MIWB_SHARED/assets) GPT-2, GPT-NeoX-20B, Llama 2, OLMo 2.
 *
 * Reports, for each tokenizer: CPU seconds (and wall seconds) to encode the text with a fresh tokenizer (cold word
 * cache), MB/s, tokens, the ratio to the bound (2 s for 10 MB, scaled to MB), and the
 * ratio to a plain pass over the same text measured in this run (UTF-8 decoding plus a hash of
 * each space-separated word: a floor for any tokenizer that reads every byte and every word).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mw_tensor.h"
#include "tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU time of this process: what one core spent, less disturbed by a busy machine */
static double cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* at most max bytes of the file */
static char *slurp(const char *path, size_t *n, size_t max) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, len = 0;
    char *p = malloc(cap);
    size_t r;
    while (p && len < max && (r = fread(p + len, 1, (cap < max ? cap : max) - len, f)) > 0) {
        len += r;
        if (len == cap) {
            char *q = realloc(p, cap *= 2);
            if (!q) { free(p); p = NULL; }
            else p = q;
        }
    }
    fclose(f);
    *n = len;
    return p;
}

/* Zipf-like English from the word list: word rank r drawn with probability ~ 1/(r+10) */
static char *fallback_text(size_t want, size_t *n) {
    size_t wl;
    char *words = slurp("/usr/share/dict/words", &wl, SIZE_MAX);
    if (!words) return NULL;
    size_t nw = 0;
    for (size_t i = 0; i < wl; i++) if (words[i] == '\n') { words[i] = 0; nw++; }
    char **list = malloc(nw * sizeof *list);
    size_t k = 0;
    for (size_t i = 0; i < wl && k < nw; i += strlen(words + i) + 1) list[k++] = words + i;
    char *out = malloc(want + 64);
    size_t o = 0;
    uint64_t s = 42;
    int inword = 0;
    while (o < want) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) / 9007199254740992.0;
        size_t r = (size_t)(10.0 * (exp2(u * log2((double)nw / 10.0 + 1.0)) - 1.0)) % k;
        const char *w = list[r];
        size_t l = strlen(w);
        if (o + l + 2 > want + 60) break;
        if (inword) out[o++] = ' ';
        memcpy(out + o, w, l);
        o += l;
        inword = 1;
        if ((s >> 20) % 12 == 0) { out[o++] = (s >> 30) % 3 ? '.' : ','; }
        if ((s >> 24) % 80 == 0) { out[o++] = '\n'; inword = 0; }
    }
    free(list);
    free(words);
    *n = o;
    return out;
}

/* the floor: decode UTF-8 and hash every space-separated word */
static uint64_t plain_pass(const unsigned char *s, size_t n) {
    uint64_t h = 0, acc = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (c == ' ' || c == '\n') {
            acc += h;
            h = 0;
        } else {
            h = (h ^ c) * 0x100000001b3ull;
        }
        i += l;
    }
    return acc + h;
}

int main(void) {
    const char *env_mb = getenv("MIWB_BENCH_MB"), *only = getenv("MIWB_BENCH_TOKENIZER");
    double mb = env_mb && atof(env_mb) > 0 ? atof(env_mb) : 10.0;
    size_t want = (size_t)(mb * 1e6);
    const char *path = getenv("MIWB_CORPUS");
    if (!path || !*path) path = "data/corpus/train.txt";
    size_t n = 0;
    char *src = slurp(path, &n, want);
    const char *what = path;
    if (!src || n == 0) {
        free(src);
        src = fallback_text(want, &n);
        what = "synthetic English from /usr/share/dict/words (no corpus found)";
        if (!src) {
            printf("SKIP - bench_tokenizer: no text (no corpus and no /usr/share/dict/words)\n");
            return 0;
        }
    }
    char *text = malloc(want);
    for (size_t o = 0; o < want; o += n < want - o ? n : want - o)
        memcpy(text + o, src, n < want - o ? n : want - o);
    free(src);

    const char *shared = getenv("MIWB_SHARED");
    if (!shared || !*shared) shared = "../shared";
    /* GPT-2 and NeoX take the byte-level path; the others run their files' steps (Llama: Prepend,
     * Replace, no pre-tokenizer - the whole text is one word, as in Hugging Face -, characters with
     * byte_fallback; OLMo 2: a PCRE2 Split) */
    enum { NTOK = 4 };
    const char *names[NTOK] = {"gpt2", "neox", "llama2", "olmo2"};
    const char *files[NTOK] = {"gpt2/tokenizer.json", "neox/20B_tokenizer.json", "llama2/tokenizer.json",
                               "olmo2/tokenizer.json"};
    char paths[NTOK][1024];
    for (int k = 0; k < NTOK; k++) snprintf(paths[k], sizeof paths[k], "%s/assets/%s", shared, files[k]);

    double t0 = cpu();
    uint64_t sink = 0;
    for (int r = 0; r < 3; r++) sink += plain_pass((const unsigned char *)text, want);
    double floor_s = (cpu() - t0) / 3;
    printf("bench_tokenizer: %.1f MB of %s\n", want / 1e6, what);
    printf("  plain pass (UTF-8 + word hash): %.3f s  (checksum %llu)\n", floor_s,
           (unsigned long long)(sink & 0xffff));
    for (int k = 0; k < NTOK; k++) {
        if (only && *only && strcmp(only, names[k]) != 0) continue;
        mw_tokenizer *t;
        double l0 = now();
        if (mw_tokenizer_load(&t, paths[k])) {
            printf("SKIP - bench_tokenizer %s: %s\n", names[k], mw_error());
            continue;
        }
        double load_s = now() - l0;
        int64_t *ids;
        size_t nids;
        double e0 = now(), c0 = cpu();
        if (mw_tokenizer_encode(&ids, &nids, t, text, want)) {
            printf("encode failed - %s: %s\n", names[k], mw_error());
            mw_tokenizer_free(t);
            continue;
        }
        double enc_s = cpu() - c0, wall_s = now() - e0;
        double bound = 2.0 * want / 10e6;
        printf("  %s: load %.3f s; encode %.3f s CPU (%.3f s wall) = %.1f MB/s, %zu tokens "
               "(%.2f bytes/token); %.2fx the bound of %.2f s (%s); %.1fx the plain pass\n",
               names[k], load_s, enc_s, wall_s, want / 1e6 / enc_s, nids, (double)want / (double)nids,
               enc_s / bound, bound, enc_s < bound ? "under" : "OVER", enc_s / floor_s);
        free(ids);
        mw_tokenizer_free(t);
    }
    free(text);
    return 0;
}
