/* tokenizer.h - byte-level BPE tokenizers (GPT-2, GPT-NeoX) that give the same ids as the
 * Hugging Face `tokenizers` library.
 *
 * Sources: a Hugging Face tokenizer.json (model.type "BPE", normalizer null or NFC, pre_tokenizer
 * ByteLevel, decoder ByteLevel), or GPT-2's vocab.json + merges.txt.
 *
 * Encoding, in the order Hugging Face applies it:
 *   1. added tokens with "normalized": false are cut out of the raw text (leftmost-longest match);
 *   2. each remaining piece is normalized (NFC when the file asks for it) and the added tokens with
 *      "normalized": true are cut out of it (NeoX's runs of 2..24 spaces are such tokens);
 *   3. each remaining piece is split by the GPT-2 pattern
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      (written out by hand over Unicode general categories; \s is Oniguruma's Unicode \s:
 *      U+0009..U+000D, U+0085 and the categories Zs, Zl, Zp);
 *   4. each piece's bytes become byte-level symbols and are merged by BPE, lowest merge rank first
 *      (leftmost among equal ranks).
 * Invalid UTF-8 is never rejected: each byte that is not part of a well-formed UTF-8 sequence is
 * one character of its own, of no letter/number/space class (so it groups with punctuation), and
 * becomes the byte-level symbol of that byte. This is what Python's "surrogateescape" decoding
 * followed by the same pattern gives; Hugging Face itself only accepts valid UTF-8. A byte whose
 * symbol is not in the vocabulary (NeoX lacks the never-valid bytes C0, C1, F5..FF) is dropped,
 * or becomes the unk token when the model defines one, as Hugging Face does for unknown symbols.
 *
 * Decoding maps each token's characters back through the byte-level alphabet and returns the raw
 * bytes (so decode(encode(x)) == x for any bytes under GPT-2; Hugging Face would in addition turn
 * invalid UTF-8 in the result into U+FFFD). Tokens with characters outside that alphabet (NeoX's
 * space-run tokens) decode to their own UTF-8 text, as in Hugging Face.
 *
 * Ids are 0-based. vocab_size is the largest id + 1 over the model vocabulary and the added
 * tokens (the rows an embedding needs). A tokenizer keeps a cache of encoded words, so one
 * tokenizer must not be used by two threads at once.
 *
 * Errors: functions returning int give 0 on success, -1 with a message (mw_error()) that names
 * the file and the field, e.g. "tokenizer: x/tokenizer.json: model.merges[12]: "ab" is not in
 * model.vocab".
 */
#ifndef MW_TOKENIZER_H
#define MW_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct mw_tokenizer mw_tokenizer;

typedef enum { MW_TOK_BOS = 0, MW_TOK_EOS, MW_TOK_PAD, MW_TOK_UNK, MW_TOK_NSPECIAL } mw_tok_special;

/* path: a tokenizer.json file, or a folder holding tokenizer.json or vocab.json + merges.txt.
 * A folder's tokenizer_config.json / special_tokens_map.json, when present, name the
 * bos/eos/pad/unk tokens; otherwise <|endoftext|> is bos and eos and <|padding|> is pad. */
int mw_tokenizer_load(mw_tokenizer **out, const char *path);
int mw_tokenizer_load_json(mw_tokenizer **out, const char *path);
int mw_tokenizer_load_gpt2(mw_tokenizer **out, const char *vocab_json, const char *merges_txt);
/* from the text of a tokenizer.json held in memory; name is used in error messages */
int mw_tokenizer_from_json(mw_tokenizer **out, const char *json, size_t len, const char *name);
/* from the texts of vocab.json and merges.txt held in memory */
int mw_tokenizer_from_gpt2(mw_tokenizer **out, const char *vocab, size_t vocab_len,
                           const char *merges, size_t merges_len, const char *name);
void mw_tokenizer_free(mw_tokenizer *t);

/* text: len bytes, any content (NUL and invalid UTF-8 included). *ids gets a malloc'd array of
 * *n ids (free() it; NULL when *n == 0). */
int mw_tokenizer_encode(int64_t **ids, size_t *n, mw_tokenizer *t, const char *text, size_t len);
/* encodes the whole file at path (errors name it) */
int mw_tokenizer_encode_file(int64_t **ids, size_t *n, mw_tokenizer *t, const char *path);
/* *text gets a malloc'd, NUL-terminated buffer of *len bytes (free() it). An id outside
 * [0, vocab_size) or naming no token is an error. */
int mw_tokenizer_decode(char **text, size_t *len, const mw_tokenizer *t, const int64_t *ids,
                        size_t n);

int64_t mw_tokenizer_vocab_size(const mw_tokenizer *t);
/* the token's text as written in the file (byte-level form, e.g. "\xc4\xa0the" for " the"),
 * NUL-terminated; NULL when no token has that id */
const char *mw_tokenizer_id_to_token(const mw_tokenizer *t, int64_t id);
/* -1 when s (len bytes) is not a token; added tokens are looked up first */
int64_t mw_tokenizer_token_to_id(const mw_tokenizer *t, const char *s, size_t len);
/* -1 when the tokenizer defines none */
int64_t mw_tokenizer_special_id(const mw_tokenizer *t, mw_tok_special which);
/* 1 when id is an added token flagged "special" */
int mw_tokenizer_is_special(const mw_tokenizer *t, int64_t id);

#endif
