/* fuzz_bodies.h - what each fuzz target does with one input, shared by the libFuzzer programs
 * (fuzz/fuzz_*.c, run by `make fuzz`; fuzz_tokenizer.c has its own, richer body) and the regression test over the kept corpus
 * (tests/c/test_fuzz_corpus.c, run by `make test`).
 *
 * Each body feeds the input to a parser and, when it is accepted, touches what came out (the
 * first and last element of every tensor, an encode/decode round), so that a wrong bound shows
 * as an out-of-bounds read under AddressSanitizer. Each returns 0 when the input was accepted,
 * -1 when it was refused with a message naming the input (anything else is a bug: 1). */
#ifndef MW_FUZZ_BODIES_H
#define MW_FUZZ_BODIES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "mw_tensor.h"
#include "safetensors.h"
#include "tokenizer.h"

static volatile unsigned char mw_fuzz_sink;

static int mw_fuzz_touch(const mw_state_dict *sd) {
    for (int i = 0; i < sd->n; i++) {
        const mw_tensor *t = &sd->items[i].t;
        int64_t n = mw_tensor_numel(t), last = t->offset;
        if (n == 0) continue;
        for (int d = 0; d < t->ndim; d++) last += (t->shape[d] - 1) * t->stride[d];
        if (last >= t->storage->numel || t->offset < 0) return 1;
        size_t es = mw_dtype_size(t->dtype);
        mw_fuzz_sink ^= ((const unsigned char *)t->storage->data)[(size_t)t->offset * es];
        mw_fuzz_sink ^= ((const unsigned char *)t->storage->data)[(size_t)last * es + es - 1];
    }
    return 0;
}

static int mw_fuzz_refused(const char *name) { return strstr(mw_error(), name) ? -1 : 1; }

/* the vendor parser on its own */
static int mw_fuzz_safetensors(const uint8_t *data, size_t size) {
    st_file f;
    char err[512];
    /* a copy of exactly size bytes, so that reads past the end are caught */
    uint8_t *buf = malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
    int rc = st_open_memory(&f, buf, size, "fuzz.safetensors", err, sizeof err);
    if (rc == 0) {
        for (size_t i = 0; i < f.n_tensors; i++) {
            const st_tensor *t = &f.tensors[i];
            if (t->end > f.data_size || t->begin > t->end) rc = 1;
            else if (t->end > t->begin) {
                mw_fuzz_sink ^= ((const uint8_t *)t->data)[0];
                mw_fuzz_sink ^= ((const uint8_t *)t->data)[t->end - t->begin - 1];
            }
        }
        st_close(&f);
    } else {
        rc = strstr(err, "fuzz.safetensors") ? -1 : 1;
    }
    free(buf);
    return rc;
}

/* a whole model file: safetensors or a torch zip */
static int mw_fuzz_checkpoint(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
    mw_state_dict sd;
    int rc = mw_checkpoint_load_memory(&sd, buf, size, "fuzz.pt");
    if (rc == 0) {
        rc = mw_fuzz_touch(&sd);
        mw_state_dict_free(&sd);
    } else {
        rc = mw_fuzz_refused("fuzz.pt");
    }
    free(buf);
    return rc;
}

/* the pickle machine: the input becomes archive/data.pkl of a stored zip that also holds
 * storages "0" (64 bytes) and "1" (7 bytes), so that fuzzing reaches deep pickle states */
static int mw_fuzz_pickle(const uint8_t *data, size_t size) {
    static const char *names[3] = {"archive/data.pkl", "archive/data/0", "archive/data/1"};
    uint8_t st0[64], st1[7];
    for (int i = 0; i < 64; i++) st0[i] = (uint8_t)(i * 37);
    for (int i = 0; i < 7; i++) st1[i] = (uint8_t)(i & 1);
    const uint8_t *parts[3] = {data, st0, st1};
    size_t lens[3] = {size, sizeof st0, sizeof st1};
    size_t total = 22;
    for (int i = 0; i < 3; i++) total += 30 + 46 + 2 * strlen(names[i]) + lens[i];
    uint8_t *z = malloc(total), *p = z, *cd = NULL;
    size_t offs[3];
#define W16(v) do { *p++ = (uint8_t)(v); *p++ = (uint8_t)((v) >> 8); } while (0)
#define W32(v) do { W16((v) & 0xffff); W16((uint32_t)(v) >> 16); } while (0)
    for (int i = 0; i < 3; i++) {
        size_t nl = strlen(names[i]);
        offs[i] = (size_t)(p - z);
        W32(0x04034b50); W16(20); W16(0); W16(0); W16(0); W16(0); W32(0);
        W32(lens[i]); W32(lens[i]); W16(nl); W16(0);
        memcpy(p, names[i], nl); p += nl;
        if (lens[i]) memcpy(p, parts[i], lens[i]);
        p += lens[i];
    }
    cd = p;
    for (int i = 0; i < 3; i++) {
        size_t nl = strlen(names[i]);
        W32(0x02014b50); W16(20); W16(20); W16(0); W16(0); W16(0); W16(0); W32(0);
        W32(lens[i]); W32(lens[i]); W16(nl); W16(0); W16(0); W16(0); W16(0); W32(0); W32(offs[i]);
        memcpy(p, names[i], nl); p += nl;
    }
    size_t cdsize = (size_t)(p - cd), cdoff = (size_t)(cd - z);
    W32(0x06054b50); W16(0); W16(0); W16(3); W16(3); W32(cdsize); W32(cdoff); W16(0);
#undef W16
#undef W32
    mw_state_dict sd;
    int rc = mw_checkpoint_load_memory(&sd, z, (size_t)(p - z), "fuzz.pkl");
    if (rc == 0) {
        rc = mw_fuzz_touch(&sd);
        mw_state_dict_free(&sd);
    } else {
        rc = mw_fuzz_refused("fuzz.pkl");
    }
    free(z);
    return rc;
}

/* the tokenizer loaders, with fuzz/fuzz_tokenizer.c's convention for the first byte: 0 = the
 * rest is a tokenizer.json, 1 = vocab.json and merges.txt split at the first NUL, 2 = a
 * SentencePiece tokenizer.model; any other first byte: the whole input is a tokenizer.json. When it loads, a short text is encoded and
 * decoded and every id must lie in the vocabulary. */
static int mw_fuzz_tokenizer(const uint8_t *data, size_t size) {
    int mode = size && data[0] <= 2 ? data[0] : 3;
    const uint8_t *s = mode < 3 ? data + 1 : data;
    size_t n = mode < 3 ? size - 1 : size;
    char *buf = malloc(n + 1);
    if (n) memcpy(buf, s, n);
    buf[n] = 0;
    mw_tokenizer *t = NULL;
    int rc;
    if (mode == 1) {
        const char *z = memchr(buf, 0, n);
        size_t vl = z ? (size_t)(z - buf) : n;
        rc = mw_tokenizer_from_gpt2(&t, buf, vl, z ? z + 1 : "", z ? n - vl - 1 : 0, "fuzz.json");
    } else if (mode == 2) {
        rc = mw_tokenizer_from_spm(&t, buf, n, "fuzz.json");
    } else {
        rc = mw_tokenizer_from_json(&t, buf, n, "fuzz.json");
    }
    if (rc == 0) {
        static const char text[] = "Hello  world!\n caf\xc3\xa9 \xff\xfe <|endoftext|> 123";
        int64_t *ids = NULL;
        size_t m = 0;
        if (mw_tokenizer_encode(&ids, &m, t, text, sizeof text - 1) == 0) {
            char *out = NULL;
            size_t len = 0;
            int64_t V = mw_tokenizer_vocab_size(t);
            for (size_t i = 0; i < m; i++)
                if (ids[i] < 0 || ids[i] >= V) rc = 1;
            if (mw_tokenizer_decode(&out, &len, t, ids, m) == 0) free(out);
            else rc = 1; /* every id the encoder gives must decode */
            free(ids);
        }
        mw_tokenizer_free(t);
    } else {
        rc = mw_fuzz_refused("fuzz.json");
    }
    free(buf);
    return rc;
}

#endif
