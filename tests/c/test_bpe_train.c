/* test_bpe_train.c - the byte-level BPE trainer (core/bpe_train.c) against a plain Python
 * reference (tests/fixtures/gen_bpe_train.py: GPT-2's pattern through the regex module, the
 * quadratic training loop, encoding by merge rank). Encoding goes through core/tokenizer.c, which
 * reads the tokenizer.json the trainer writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../fixtures/bpe_train_expected.h"
#include "bpe_train.h"
#include "mw_tensor.h"
#include "mwtest.h"
#include "tokenizer.h"

static void test_pretokenizer_matches_gpt2_pattern(void) {
    const char *eot = strstr(bpx_text, MW_BPE_EOT);
    size_t n = (size_t)(eot - bpx_text), i = 0;
    int k = 0, nb = (int)(sizeof bpx_bounds / sizeof bpx_bounds[0]);
    while (i < n && k < nb) {
        i += mw_bpe_pretoken_len((const unsigned char *)bpx_text + i, n - i);
        CHECK_MSG((int)i == bpx_bounds[k], "pre-token %d ends at %zu, expected %d", k, i, bpx_bounds[k]);
        if ((int)i != bpx_bounds[k]) break;
        k++;
    }
    CHECK(k == nb && i == n);
}

static mw_bpe *trained(void) {
    mw_bpe_trainer *t = mw_bpe_trainer_new();
    if (!t) return NULL;
    mw_bpe *b = NULL;
    if (mw_bpe_trainer_feed(t, bpx_text, strlen(bpx_text)) == 0) mw_bpe_train(&b, t, BPX_VOCAB, 2);
    mw_bpe_trainer_free(t);
    return b;
}

static void test_merges_match_reference(void) {
    mw_bpe *b = trained();
    CHECK(b != NULL);
    if (!b) return;
    CHECK(mw_bpe_nmerges(b) == BPX_NMERGES);
    CHECK(mw_bpe_vocab_size(b) == 257 + BPX_NMERGES);
    int n = mw_bpe_nmerges(b) < BPX_NMERGES ? mw_bpe_nmerges(b) : BPX_NMERGES;
    for (int k = 0; k < n; k++) {
        int l, r, res;
        mw_bpe_merge(b, k, &l, &r, &res);
        CHECK_MSG(l == bpx_merges[2 * k] && r == bpx_merges[2 * k + 1] && res == 257 + k,
                  "merge %d: (%d,%d)->%d, expected (%d,%d)->%d", k, l, r, res, bpx_merges[2 * k],
                  bpx_merges[2 * k + 1], 257 + k);
        if (l != bpx_merges[2 * k]) break;
    }
    /* a token's bytes are its two parts' bytes */
    size_t la, lb, lc;
    int l, r, res;
    mw_bpe_merge(b, n - 1, &l, &r, &res);
    const unsigned char *a = mw_bpe_token_bytes(b, l, &la), *bb = mw_bpe_token_bytes(b, r, &lb),
                        *c = mw_bpe_token_bytes(b, res, &lc);
    CHECK(lc == la + lb && !memcmp(c, a, la) && !memcmp(c + la, bb, lb));
    mw_bpe_free(b);
}

static void test_encode_and_save_load(void) {
    mw_bpe *b = trained();
    CHECK(b != NULL);
    if (!b) return;
    /* tokenizer.json round trip: core/tokenizer.c reads the file and encodes the held-out text
     * as the Python reference does */
    char path[] = "/tmp/mw_test_bpe_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_OK(mw_bpe_save(b, path));
    mw_tokenizer *tk = NULL;
    CHECK_OK(mw_tokenizer_load_json(&tk, path));
    if (tk) {
        int64_t *ids64;
        size_t n;
        CHECK_OK(mw_tokenizer_encode(&ids64, &n, tk, bpx_held_out, strlen(bpx_held_out)));
        CHECK(n == BPX_NENC);
        for (size_t i = 0; i < n && i < BPX_NENC; i++)
            CHECK_MSG(ids64[i] == bpx_encoded[i], "tokenizer.c id %zu: %lld, expected %d", i, (long long)ids64[i], bpx_encoded[i]);
        CHECK(mw_tokenizer_vocab_size(tk) == BPX_VOCAB && mw_tokenizer_vocab_size(tk) == mw_bpe_vocab_size(b));
        CHECK(mw_tokenizer_special_id(tk, MW_TOK_BOS) == 0);
        free(ids64);
        mw_tokenizer_free(tk);
    }
    /* the file is JSON a reader can take apart: ByteLevel, BPE, "Ġ" for the space byte */
    FILE *f = fopen(path, "rb");
    char buf[4096];
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    buf[k] = 0;
    fclose(f);
    CHECK(strstr(buf, "\"type\": \"BPE\"") && strstr(buf, "\"type\": \"ByteLevel\"") && strstr(buf, "<|endoftext|>"));
    CHECK(strcmp(mw_bpe_byte_char(' '), "\xc4\xa0") == 0); /* U+0120 */
    remove(path);
    mw_bpe_free(b);
}

static void test_errors(void) {
    mw_bpe_trainer *t = mw_bpe_trainer_new();
    mw_bpe *b = NULL;
    CHECK_ERR(mw_bpe_train(&b, t, 100, 2), "vocab_size");
    CHECK_ERR(mw_bpe_trainer_feed_file(t, "/nonexistent/corpus.txt"), "/nonexistent/corpus.txt");
    mw_bpe_trainer_free(t);
    mw_tokenizer *tk = NULL;
    CHECK_ERR(mw_tokenizer_load_json(&tk, "/nonexistent/tokenizer.json"), "cannot open");
    char path[] = "/tmp/mw_test_bpe_XXXXXX";
    int fd = mkstemp(path);
    CHECK(write(fd, "{\"model\": {\"type\": \"WordPiece\"}}", 33) == 33);
    close(fd);
    CHECK_ERR(mw_tokenizer_load_json(&tk, path), "BPE");
    remove(path);
}

/* issue 20's torn-checkpoint class: the tokenizer file is written through a unique temporary name
 * (mkstemp) and renamed; a fixed "path.tmp" (the old name) that is in the way (here a folder, as
 * another writer's half-written file would be) changes nothing, and nothing is left beside it */
static void test_save_through_unique_temporary(void) {
    mw_bpe *b = trained();
    CHECK(b != NULL);
    if (!b) return;
    char dir[] = "/tmp/mw_test_bpe_dir_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], fixed[300];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    snprintf(fixed, sizeof fixed, "%s.tmp", path);
    CHECK(mkdir(fixed, 0700) == 0);
    CHECK_OK(mw_bpe_save(b, path));
    mw_tokenizer *tk = NULL;
    CHECK_OK(mw_tokenizer_load_json(&tk, path));
    if (tk) CHECK(mw_tokenizer_vocab_size(tk) == BPX_VOCAB);
    mw_tokenizer_free(tk);
    /* the folder holds the file and the folder that was in the way, nothing else */
    int entries = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) if (e->d_name[0] != '.') entries++;
    if (d) closedir(d);
    CHECK_MSG(entries == 2, "%d entries in %s, expected 2", entries, dir);
    /* a save that cannot happen (no such folder) fails with a message and leaves nothing */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/no/such/tokenizer.json", dir);
    CHECK_ERR(mw_bpe_save(b, bad), "bpe_save");
    rmdir(fixed);
    remove(path);
    CHECK(rmdir(dir) == 0);
    mw_bpe_free(b);
}

int main(void) {
    RUN(test_pretokenizer_matches_gpt2_pattern);
    RUN(test_merges_match_reference);
    RUN(test_encode_and_save_load);
    RUN(test_errors);
    RUN(test_save_through_unique_temporary);
    MW_TEST_MAIN_END();
}
