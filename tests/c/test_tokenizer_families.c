/* test_tokenizer_families.c - the tokenizer files of the model families in ../shared/assets
 * (GPT-2, GPT-NeoX, Llama 2 / TinyLlama, Mistral v0.3, Phi-3.5, Falcon, OLMo 2; SentencePiece models
 * of Llama 2 and Mistral), and two small files written here to reach every step kind
 * (fuzz/seeds/tokenizer_steps.json, tests/fixtures/tokenizer_metaspace.json), against the ids of
 * the reference implementations:
 *   - tests/fixtures/tokenizers_hf.json (tests/fixtures/gen_tokenizers.js: Hugging Face's Rust
 *     `tokenizers`): for each input, the ids without and with special tokens and the decoded text;
 *   - tests/fixtures/tokenizers_spm.json (tests/fixtures/gen_spm.py: SentencePiece 0.1.97): ids and
 *     the decoded text;
 *   - the known values of ../shared/assets/README.md;
 *   - documented behaviour where the references take no input: invalid UTF-8;
 *   - unsupported files: an error naming the file and the field.
 * Tests that need the real files print "SKIP" when ../shared (or $MIWB_SHARED) is absent.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <unistd.h>

#include "mw_tensor.h"
#include "mwtest.h"
#include "tokenizer.h"

static char shared[1024];

/* "repo:PATH" is a file of this repository, anything else one of ../shared/assets */
static int asset(char *out, size_t cap, const char *rel) {
    if (strncmp(rel, "repo:", 5) == 0) snprintf(out, cap, "%s", rel + 5);
    else snprintf(out, cap, "%s/assets/%s", shared, rel);
    return access(out, R_OK) == 0;
}

static cJSON *load_fixture(const char *path) {
    size_t n;
    char *s = mwt_slurp(path, &n);
    cJSON *j = s ? cJSON_ParseWithLength(s, n) : NULL;
    free(s);
    if (!j) printf("  cannot read fixture %s\n", path);
    return j;
}

/* hex -> bytes into out (cap >= strlen(hex) / 2 + 1); returns the length */
static size_t unhex(const char *hex, char *out) {
    size_t n = 0;
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        sscanf(hex, "%2x", &v);
        out[n++] = (char)v;
    }
    out[n] = 0;
    return n;
}

/* ids equal to the JSON list want; prints both when not */
static int same_ids(const int64_t *ids, size_t n, const cJSON *want, const char *what, const char *text) {
    int same = (int)n == cJSON_GetArraySize(want);
    for (size_t i = 0; same && i < n; i++) same = ids[i] == (int64_t)cJSON_GetArrayItem(want, (int)i)->valuedouble;
    if (!same) {
        printf("  %s of \"%.60s\": got [", what, text);
        for (size_t i = 0; i < n && i < 40; i++) printf(i ? " %lld" : "%lld", (long long)ids[i]);
        printf("], expected [");
        for (int i = 0; i < cJSON_GetArraySize(want) && i < 40; i++)
            printf(i ? " %lld" : "%lld", (long long)cJSON_GetArrayItem(want, i)->valuedouble);
        printf("]\n");
    }
    return same;
}

/* every input of the fixture encodes (both ways) and decodes as the reference does */
static void check_file(const cJSON *inputs, const char *rel, const cJSON *rows, int spm) {
    char path[1200];
    if (!asset(path, sizeof path, rel)) {
        printf("SKIP - %s: not found (set MIWB_SHARED)\n", path);
        return;
    }
    mw_tokenizer *t = NULL;
    CHECK_OK(mw_tokenizer_load(&t, path));
    if (!t) return;
    int bad = 0, k = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, rows) {
        const char *hex = cJSON_GetArrayItem(inputs, k++)->valuestring;
        const char *dhex = cJSON_GetArrayItem(row, spm ? 1 : 2)->valuestring;
        char text[4096], decoded[4096];
        size_t len = unhex(hex, text), dlen = unhex(dhex, decoded);
        int64_t *ids;
        size_t n;
        /* HF rows: [plain ids, ids with special tokens, decoded]; SentencePiece rows: [ids, decoded] */
        const cJSON *plain = cJSON_GetArrayItem(row, 0), *special = spm ? NULL : cJSON_GetArrayItem(row, 1);
        if (mw_tokenizer_encode_ex(&ids, &n, t, text, len, 0)) {
            printf("  %s\n", mw_error());
            bad++;
            continue;
        }
        int ok = same_ids(ids, n, plain, "ids", text);
        free(ids);
        if (special) {
            if (mw_tokenizer_encode_ex(&ids, &n, t, text, len, 1)) {
                bad++;
                continue;
            }
            ok &= same_ids(ids, n, special, "ids with special tokens", text);
        } else {
            if (mw_tokenizer_encode_ex(&ids, &n, t, text, len, 0)) {
                bad++;
                continue;
            }
        }
        char *back;
        size_t bl;
        if (mw_tokenizer_decode(&back, &bl, t, ids, n)) {
            printf("  decode of \"%.60s\": %s\n", text, mw_error());
            ok = 0;
        } else {
            if (bl != dlen || memcmp(back, decoded, bl) != 0) {
                printf("  decode of \"%.60s\": got \"%.80s\", expected \"%.80s\"\n", text, back, decoded);
                ok = 0;
            }
            free(back);
        }
        free(ids);
        bad += !ok;
    }
    CHECK_MSG(bad == 0, "%s: %d of %d inputs differ from the reference", rel, bad, cJSON_GetArraySize(rows));
    mw_tokenizer_free(t);
}

static void test_hf_files(void) {
    cJSON *j = load_fixture("tests/fixtures/tokenizers_hf.json");
    CHECK(j != NULL);
    if (!j) return;
    const cJSON *inputs = cJSON_GetObjectItem(j, "inputs"), *files = cJSON_GetObjectItem(j, "files"), *f;
    CHECK(cJSON_GetArraySize(files) == 9);
    cJSON_ArrayForEach(f, files) check_file(inputs, f->string, f, 0);
    cJSON_Delete(j);
}

static void test_spm_files(void) {
    cJSON *h = load_fixture("tests/fixtures/tokenizers_hf.json"), *j = load_fixture("tests/fixtures/tokenizers_spm.json");
    CHECK(h && j);
    if (h && j) {
        const cJSON *inputs = cJSON_GetObjectItem(h, "inputs"), *files = cJSON_GetObjectItem(j, "files"), *f;
        CHECK(cJSON_GetArraySize(files) == 3);
        cJSON_ArrayForEach(f, files) check_file(inputs, f->string, f, 1);
    }
    cJSON_Delete(h);
    cJSON_Delete(j);
}

int main(void) {
    const char *s = getenv("MIWB_SHARED");
    snprintf(shared, sizeof shared, "%s", s && *s ? s : "../shared");
    RUN(test_hf_files);
    RUN(test_spm_files);
    MW_TEST_MAIN_END();
}
