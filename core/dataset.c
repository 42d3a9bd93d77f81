/* dataset.c - token datasets: the MWTOKENS file (see dataset.h), memory-mapped, and the batches
 * drawn from it. */
#include "dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file.h"
#include "mw_tensor.h"

int mw_dataset_write(const char *path, const int64_t *ids, int64_t n, int64_t vocab, int64_t eot) {
    if (vocab <= 0 || vocab > 0x7fffffff) return mw_seterr("dataset_write: vocab_size %lld out of range", (long long)vocab);
    if (n < 0) return mw_seterr("dataset_write: %lld tokens", (long long)n);
    int width = vocab <= 65536 ? 2 : 4;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return mw_seterr("dataset_write: id %lld at %lld outside [0,%lld)", (long long)ids[i], (long long)i,
                             (long long)vocab);
    /* a unique temporary name beside the target, renamed into place (file.h): two writers of
     * one path never tear each other's file */
    mw_file out;
    if (mw_file_begin(&out, path, "dataset_write")) return -1;
    FILE *f = out.f;
    unsigned char h[32] = "MWTOKENS";
    uint32_t u[2] = {1, (uint32_t)width};
    uint64_t nn = (uint64_t)n;
    uint32_t w[2] = {(uint32_t)vocab, (uint32_t)(eot < 0 ? 0xffffffffu : (uint32_t)eot)};
    /* little-endian machines only (x86-64, arm64): the fields are stored as they are in memory */
    memcpy(h + 8, u, 8); memcpy(h + 16, &nn, 8); memcpy(h + 24, w, 8);
    int ok = fwrite(h, 1, 32, f) == 32;
    enum { CH = 65536 };
    static __thread uint32_t chunk[CH];
    for (int64_t i = 0; i < n && ok; i += CH) {
        int64_t k = n - i < CH ? n - i : CH;
        if (width == 2) {
            uint16_t *c16 = (uint16_t *)chunk;
            for (int64_t j = 0; j < k; j++) c16[j] = (uint16_t)ids[i + j];
        } else {
            for (int64_t j = 0; j < k; j++) chunk[j] = (uint32_t)ids[i + j];
        }
        ok = fwrite(chunk, (size_t)width, (size_t)k, f) == (size_t)k;
    }
    if (!ok) {
        mw_file_abort(&out);
        return mw_seterr("dataset_write: %s: write failed", path);
    }
    return mw_file_commit(&out, "dataset_write");
}

int mw_dataset_open(mw_dataset *d, const char *path) {
    memset(d, 0, sizeof *d);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mw_seterr("dataset_open: %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 32) {
        close(fd);
        return mw_seterr("dataset_open: %s: shorter than its 32-byte header", path);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return mw_seterr("dataset_open: %s: cannot map", path);
    const unsigned char *h = map;
    uint32_t u[2], w[2];
    uint64_t n;
    memcpy(u, h + 8, 8); memcpy(&n, h + 16, 8); memcpy(w, h + 24, 8);
    const char *bad = NULL;
    if (memcmp(h, "MWTOKENS", 8)) bad = "not a miwb token file (magic MWTOKENS)";
    else if (u[0] != 1) bad = "unknown version";
    else if (u[1] != 2 && u[1] != 4) bad = "bytes per id must be 2 or 4";
    else if (n > ((uint64_t)st.st_size - 32) / u[1] || 32 + n * u[1] != (uint64_t)st.st_size) bad = "size does not match n_tokens";
    if (bad) {
        munmap(map, (size_t)st.st_size);
        return mw_seterr("dataset_open: %s: %s", path, bad);
    }
    d->map = map; d->map_size = (size_t)st.st_size;
    d->ids = h + 32; d->width = (int)u[1]; d->n = (int64_t)n; d->vocab = w[0];
    d->eot = w[1] == 0xffffffffu ? -1 : (int64_t)w[1];
    return 0;
}

void mw_dataset_close(mw_dataset *d) {
    if (d->map) munmap((void *)d->map, d->map_size);
    memset(d, 0, sizeof *d);
}

void mw_dataset_batch(const mw_dataset *d, uint64_t *state, int64_t *tokens, int64_t B, int64_t T, int64_t bos) {
    int64_t take = bos >= 0 ? T - 1 : T;
    int64_t span = d->n - take + 1;
    for (int64_t b = 0; b < B; b++) {
        int64_t o = span > 0 ? (int64_t)(mw_splitmix64(state) % (uint64_t)span) : 0;
        int64_t *row = tokens + b * T;
        int64_t j = 0;
        if (bos >= 0) row[j++] = bos;
        for (int64_t i = 0; j < T; i++, j++) row[j] = o + i < d->n ? mw_dataset_get(d, o + i) : (bos >= 0 ? bos : 0);
    }
}

void mw_dataset_batch_repeat(const mw_dataset *d, uint64_t *state, int64_t *tokens, int64_t B, int64_t T,
                             int64_t bos, double repeat_frac, double random_frac) {
    mw_dataset_batch(d, state, tokens, B, T, bos);
    int64_t s0 = bos >= 0 ? 1 : 0, body = T - s0;
    if (body < 16 || (repeat_frac <= 0 && random_frac <= 0)) return;
    for (int64_t b = 0; b < B; b++) {
        double u = (double)(mw_splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
        if (u >= repeat_frac + random_frac) continue;
        int64_t a = 8 + (int64_t)(mw_splitmix64(state) % (uint64_t)(body / 2 - 8 + 1));
        int64_t *row = tokens + b * T + s0;
        /* shift the window right by a (from the end, in place) */
        int64_t shift = u < repeat_frac ? a : 2 * a;
        for (int64_t i = body - 1; i >= shift; i--) row[i] = row[i - shift];
        if (u >= repeat_frac)
            for (int64_t i = 0; i < a; i++)
                row[i] = 1 + (int64_t)(mw_splitmix64(state) % (uint64_t)(d->vocab > 1 ? d->vocab - 1 : 1));
        for (int64_t i = 0; i < a && a + i < body; i++) row[a + i] = row[i];
    }
}
