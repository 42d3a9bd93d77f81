/* fuzz_tokenizer.c - libFuzzer target for core/tokenizer.c: the tokenizer.json loader, the
 * vocab.json + merges.txt loader, and the encoder/decoder.
 *
 * The first input byte picks what the rest is:
 *   0: a tokenizer.json text. When it loads, a few fixed strings and the input itself are encoded
 *      and the ids decoded again (any id the encoder gives must decode).
 *   1: vocab.json and merges.txt, split at the first NUL byte; then as for 0.
 *   2: a SentencePiece tokenizer.model (bytes of a ModelProto); then as for 0.
 *   3+: text for three built-in tokenizers: two over the full 256-byte alphabet with some merges
 *      and added tokens, one without normalizer, for which decode(encode(text)) == text must hold
 *      (aborts otherwise), and one with NFC; and fuzz/seeds/tokenizer_steps.json's kind (every
 *      normalizer, pre-tokenizer, decoder and post-processor step, byte_fallback), which must
 *      not crash and whose ids must decode.
 *
 * Build and run by hand (or through `make fuzz` where the Makefile has it):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore fuzz/fuzz_tokenizer.c \
 *         core/tokenizer.c core/tensor.c -lcjson -lutf8proc -lm -o fuzz_tokenizer
 *   ./fuzz_tokenizer -max_total_time=60 fuzz/corpus/tokenizer
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mw_tensor.h"
#include "tokenizer.h"

static mw_tokenizer *plain, *nfc, *steps;

/* checks that every id decodes; with must_match, that the text comes back unchanged */
static void check(mw_tokenizer *t, const uint8_t *s, size_t n, int must_match) {
    int64_t *ids;
    size_t m;
    if (mw_tokenizer_encode(&ids, &m, t, (const char *)s, n)) abort(); /* only OOM may fail */
    char *back;
    size_t bl;
    if (mw_tokenizer_decode(&back, &bl, t, ids, m)) abort();
    if (must_match && (bl != n || memcmp(back, s, n) != 0)) abort();
    free(back);
    free(ids);
}

/* Writes a tokenizer.json whose vocabulary is the 256 byte symbols plus merges of common pairs,
 * with added tokens "<|endoftext|>" (not normalized) and "  " / "e\u0301x" (normalized). */
static char *builtin_json(int with_nfc) {
    size_t cap = 1 << 16, o = 0;
    char *j = malloc(cap);
    o += (size_t)snprintf(j + o, cap - o,
        "{\"normalizer\": %s, \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
        " \"decoder\": {\"type\": \"ByteLevel\"}, \"added_tokens\": ["
        "{\"id\": 300, \"content\": \"<|endoftext|>\", \"special\": true, \"normalized\": false},"
        "{\"id\": 301, \"content\": \"  \", \"special\": false, \"normalized\": true},"
        "{\"id\": 302, \"content\": \"e\\u0301x\", \"special\": false, \"normalized\": true}],"
        " \"model\": {\"type\": \"BPE\", \"vocab\": {", with_nfc ? "{\"type\": \"NFC\"}" : "null");
    /* the byte-level alphabet: printable bytes are themselves, the rest U+0100.. in order */
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = printable ? b : 256 + n++;
        o += (size_t)snprintf(j + o, cap - o, "%s\"\\u%04x\": %d", b ? ", " : "", cp, b);
    }
    /* merged tokens 256..: "th", "the", "\u0120t", "\u0120the", "in", "ing", "ee", "eee" */
    o += (size_t)snprintf(j + o, cap - o,
        ", \"th\": 256, \"the\": 257, \"\\u0120t\": 258, \"\\u0120the\": 259, \"in\": 260, "
        "\"ing\": 261, \"ee\": 262, \"eee\": 263}, \"merges\": [\"t h\", \"th e\", \"\\u0120 t\", "
        "\"\\u0120 the\", \"i n\", \"in g\", \"e e\", \"ee e\"]}}");
    return j;
}

static void setup(void) {
    if (plain) return;
    char *a = builtin_json(0), *b = builtin_json(1);
    if (mw_tokenizer_from_json(&plain, a, strlen(a), "builtin") ||
        mw_tokenizer_from_json(&nfc, b, strlen(b), "builtin-nfc")) {
        fprintf(stderr, "fuzz_tokenizer: built-in tokenizer: %s\n", mw_error());
        abort();
    }
    free(a);
    free(b);
    /* the steps tokenizer: its file next to this one (fuzz/run.sh runs from the repository) */
    if (mw_tokenizer_load_json(&steps, "fuzz/seeds/tokenizer_steps.json")) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", mw_error());
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    if (size == 0) return 0;
    const uint8_t *s = data + 1;
    size_t n = size - 1;
    mw_tokenizer *t = NULL;
    if (data[0] == 0) {
        if (mw_tokenizer_from_json(&t, (const char *)s, n, "fuzz.json")) return 0;
    } else if (data[0] == 1) {
        const uint8_t *z = memchr(s, 0, n);
        size_t vl = z ? (size_t)(z - s) : n;
        const char *m = z ? (const char *)z + 1 : "";
        size_t ml = z ? n - vl - 1 : 0;
        if (mw_tokenizer_from_gpt2(&t, (const char *)s, vl, m, ml, "fuzz")) return 0;
    } else if (data[0] == 2) {
        if (mw_tokenizer_from_spm(&t, (const char *)s, n, "fuzz.model")) return 0;
    } else {
        check(plain, s, n, 1);
        check(nfc, s, n, 0);
        check(steps, s, n, 0);
        return 0;
    }
    static const char *texts[] = {"", "hello world", "  a   b\t\n", "caf\xc3\xa9 cafe\xcc\x81",
                                  "<|endoftext|>x", "\xff\xfe\x80", "'s 'll 12 3.4"};
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++)
        check(t, (const uint8_t *)texts[k], strlen(texts[k]), 0);
    check(t, s, n < 4096 ? n : 4096, 0);
    for (int64_t id = 0; id < mw_tokenizer_vocab_size(t) && id < 64; id++) {
        const char *tok = mw_tokenizer_id_to_token(t, id);
        if (tok && mw_tokenizer_token_to_id(t, tok, strlen(tok)) < 0) abort();
    }
    mw_tokenizer_free(t);
    return 0;
}
