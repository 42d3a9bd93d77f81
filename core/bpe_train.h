/* bpe_train.h - byte-level BPE: training a tokenizer from text (encoding: tokenizer.h).
 *
 * The tokenizer is GPT-2's kind: text is cut into pre-tokens by GPT-2's regular expression
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * each pre-token's bytes become symbols, and merges learnt here join adjacent symbols. The
 * special token "<|endoftext|>" (id 0) is never split nor merged: text is cut around it.
 * Ids: 0 = <|endoftext|>, 1..256 = the 256 bytes (in byte order), 257.. = merges in order.
 *
 * Training follows the usual greedy algorithm: count every distinct pre-token, then repeatedly
 * merge the adjacent pair with the highest count (weighted by pre-token counts), counting each
 * pre-token's non-overlapping occurrences left to right. Ties go to the pair with the smallest
 * (left id, right id), so the result depends only on the text fed. Pair counts are updated
 * incrementally (only the pre-tokens that hold the merged pair are visited) and a max-heap with
 * lazy deletion picks the next pair.
 *
 * The pre-tokenizer, byte-level alphabet and hashing are bpe.h's, shared with tokenizer.c.
 * mw_bpe_save writes a Hugging Face tokenizer.json (model BPE, ByteLevel pre-tokenizer and decoder,
 * <|endoftext|> as an added special token); mw_tokenizer_load (tokenizer.h) reads it and encodes
 * with it.
 */
#ifndef MW_BPE_TRAIN_H
#define MW_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "bpe.h"

#define MW_BPE_EOT "<|endoftext|>"


typedef struct mw_bpe_trainer mw_bpe_trainer;

mw_bpe_trainer *mw_bpe_trainer_new(void); /* NULL + error when out of memory */
void mw_bpe_trainer_free(mw_bpe_trainer *t);
/* counts the pre-tokens of text (any length; call as often as wanted) */
int mw_bpe_trainer_feed(mw_bpe_trainer *t, const char *text, size_t n);
/* reads a whole file and feeds it; errors name the file */
int mw_bpe_trainer_feed_file(mw_bpe_trainer *t, const char *path);
int64_t mw_bpe_trainer_nwords(const mw_bpe_trainer *t); /* distinct pre-tokens so far */

/* The learnt tokenizer. */
typedef struct mw_bpe mw_bpe;

/* Learns merges until the vocabulary has vocab_size ids (257 + merges) or no pair occurs at
 * least min_frequency times. The trainer can be freed afterwards. */
int mw_bpe_train(mw_bpe **out, mw_bpe_trainer *t, int vocab_size, int64_t min_frequency);
void mw_bpe_free(mw_bpe *b);
int mw_bpe_vocab_size(const mw_bpe *b);
int mw_bpe_nmerges(const mw_bpe *b);
/* merge k (0-based, by rank): left, right and result ids (result = 257 + k when trained here) */
void mw_bpe_merge(const mw_bpe *b, int k, int *left, int *right, int *result);
int mw_bpe_eot_id(const mw_bpe *b); /* id of <|endoftext|>, -1 when the vocabulary has none */
/* the bytes of token id (not NUL-terminated); NULL when id is out of range */
const unsigned char *mw_bpe_token_bytes(const mw_bpe *b, int id, size_t *len);

int mw_bpe_save(const mw_bpe *b, const char *path);

#endif
