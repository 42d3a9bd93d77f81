/* test_fuzz_corpus.c - replays the kept fuzz corpus (tests/fuzz/TARGET/: inputs that once crashed
 * or misbehaved, kept as regressions) and the fuzz seeds through the same bodies the libFuzzer
 * targets run (fuzz/fuzz_bodies.h). Each input must be accepted consistently or refused with a
 * message naming it; under `make asan` any out-of-bounds access or leak fails the run. The config
 * target needs Lua: tests/lua/test_pretrained.lua replays tests/fuzz/config. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "../../fuzz/fuzz_bodies.h"
#include "mwtest.h"

typedef int (*body_fn)(const uint8_t *, size_t);

/* runs fn on every regular file of dir; returns how many */
static int replay(const char *dir, body_fn fn) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "README") == 0) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue; /* fixture folders */
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc((size_t)len + 1);
        size_t got = fread(buf, 1, (size_t)len, f);
        fclose(f);
        int rc = fn(buf, got);
        CHECK_MSG(rc <= 0, "%s: accepted but inconsistent", path);
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

static void test_safetensors_corpus(void) {
    int n = replay("tests/fuzz/safetensors", mw_fuzz_safetensors) + replay("tests/fixtures/ckpt", mw_fuzz_safetensors);
    printf("  %d inputs\n", n);
    CHECK(n >= 10);
}

static void test_checkpoint_corpus(void) {
    int n = replay("tests/fuzz/checkpoint", mw_fuzz_checkpoint) + replay("tests/fixtures/ckpt", mw_fuzz_checkpoint);
    printf("  %d inputs\n", n);
    CHECK(n >= 10);
    /* the seeds themselves: valid files are accepted */
    size_t len;
    FILE *f = fopen("tests/fixtures/ckpt/torch_basic.pt", "rb");
    CHECK(f != NULL);
    if (!f) return;
    uint8_t buf[1 << 14];
    len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    CHECK(mw_fuzz_checkpoint(buf, len) == 0);
}

static void test_pickle_corpus(void) {
    int n = replay("tests/fuzz/pickle", mw_fuzz_pickle);
    printf("  %d inputs\n", n);
    /* a valid pickle through the fuzz wrapper: {'w': tensor over storage 0} is accepted */
    static const char ok[] = "\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n"
                             "((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00"
                             "cpuK\x10tQK\x00K\x04\x85K\x01\x85\x89" "ccollections\nOrderedDict\n)RtRu.";
    CHECK(mw_fuzz_pickle((const uint8_t *)ok, sizeof ok - 1) == 0);
    CHECK(mw_fuzz_pickle((const uint8_t *)"\x80\x02}.", 4) == 0);
    CHECK(mw_fuzz_pickle((const uint8_t *)"\x80\x02", 2) == -1);
}

static void test_tokenizer_corpus(void) {
    int n = replay("tests/fuzz/tokenizer", mw_fuzz_tokenizer) + replay("fuzz/seeds", mw_fuzz_tokenizer) +
            replay("fuzz/corpus/tokenizer", mw_fuzz_tokenizer);
    printf("  %d inputs\n", n);
    CHECK(n >= 1);
    FILE *f = fopen("fuzz/seeds/tokenizer_small.json", "rb");
    CHECK(f != NULL);
    if (!f) return;
    uint8_t buf[1 << 14];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    CHECK(mw_fuzz_tokenizer(buf, len) == 0); /* the seed itself is a valid tokenizer */
}

int main(void) {
    RUN(test_safetensors_corpus);
    RUN(test_checkpoint_corpus);
    RUN(test_pickle_corpus);
    RUN(test_tokenizer_corpus);
    MW_TEST_MAIN_END();
}
