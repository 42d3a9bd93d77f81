/* dataset.h - token datasets for training: a memory-mapped file of token ids and the batches
 * drawn from it. Ids are int64 in memory, as everywhere in miwb (the model's tokens); on disk
 * they take 2 or 4 bytes each.
 *
 * File format (little-endian): a 32-byte header
 *   "MWTOKENS" | uint32 version (1) | uint32 bytes per id (2 or 4) | uint64 n_tokens |
 *   uint32 vocab_size | uint32 eot id (0xffffffff: none)
 * followed by n_tokens ids. Written through a temporary file renamed into place.
 *
 * Random offsets come from a splitmix64 stream (mw_splitmix64) whose state the caller keeps, so
 * that a run's data order is a function of its seed.
 */
#ifndef MW_DATASET_H
#define MW_DATASET_H

#include <stddef.h>
#include <stdint.h>

typedef struct mw_dataset {
    const void *map; size_t map_size;
    const void *ids; int width; int64_t n; int64_t vocab; int64_t eot;
} mw_dataset;

/* ids [n], each in [0, vocab); eot < 0: none */
int mw_dataset_write(const char *path, const int64_t *ids, int64_t n, int64_t vocab, int64_t eot);
int mw_dataset_open(mw_dataset *d, const char *path);
void mw_dataset_close(mw_dataset *d);
static inline int64_t mw_dataset_get(const mw_dataset *d, int64_t i) {
    return d->width == 2 ? (int64_t)((const uint16_t *)d->ids)[i] : (int64_t)((const uint32_t *)d->ids)[i];
}
/* fills tokens [B,T]: each row is [bos, ids[o], ..., ids[o+T-2]] at a random offset o drawn
 * from the stream *state; bos < 0 takes T ids with no BOS */
void mw_dataset_batch(const mw_dataset *d, uint64_t *state, int64_t *tokens, int64_t B, int64_t T, int64_t bos);
/* as mw_dataset_batch, with two kinds of rows that reward induction heads:
 *  - with probability repeat_frac, a row repeats its own opening: after BOS, the first a ids of
 *    the window (a uniform in [8, (T-1)/2]) appear twice, then the window goes on
 *    ([bos, x0..x(a-1), x0..x(a-1), xa, ...], cut to T): English text quoting itself;
 *  - with probability random_frac, a row opens with a sequence R of a ids drawn uniformly from
 *    1..vocab-1 (a uniform in [8, (T-1)/2]), repeated once: [bos, R, R, x0, x1, ...] (the
 *    repeated-random-tokens pattern of the seed notebook, as a curriculum);
 *  - the other rows are plain windows.
 * A small model trained on a few million tokens of plain text does not form induction heads (it
 * sees too few long repeats); these rows make them form within a short run. */
void mw_dataset_batch_repeat(const mw_dataset *d, uint64_t *state, int64_t *tokens, int64_t B, int64_t T,
                             int64_t bos, double repeat_frac, double random_frac);

#endif
