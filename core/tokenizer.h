/* tokenizer.h - BPE tokenizers that give the same ids as Hugging Face `tokenizers` (tokenizer.json)
 * or SentencePiece (tokenizer.model).
 *
 * Sources: a Hugging Face tokenizer.json with a BPE model; GPT-2's vocab.json + merges.txt; a
 * SentencePiece tokenizer.model (through Debian's libsentencepiece, spm.h: its own ids).
 *
 * Encoding a tokenizer.json, in the order Hugging Face applies it:
 *   1. added tokens with "normalized": false are cut out of the raw text (leftmost-longest match,
 *      with their lstrip / rstrip / single_word flags);
 *   2. each remaining piece goes through the normalizer (NFC, NFKC, Prepend, Replace, Sequence)
 *      and the added tokens with "normalized": true are cut out of it (NeoX's runs of spaces);
 *   3. the pre-tokenizer cuts each piece into words (ByteLevel with GPT-2's pattern
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      written out by hand in bpe.c; Split with the file's regex through PCRE2; Digits,
 *      Punctuation, Metaspace; Sequence);
 *   4. each word becomes symbols - its bytes (byte-level files) or its characters looked up in the
 *      vocabulary, with byte_fallback's "<0xXX>" tokens or unk for the missing ones - merged by BPE,
 *      lowest merge rank first (leftmost among equal ranks); ignore_merges takes a word that is a
 *      token as it is;
 *   5. with add_special_tokens, the post-processor's tokens (TemplateProcessing: Llama's BOS).
 * GPT-2's and NeoX's kind of file (NFC at most, one ByteLevel pre-tokenizer) takes a path written
 * for speed; other files run the steps above as listed in the file.
 * Metaspace's prepend_scheme "first" prepends to a piece that holds the text's first character;
 * the normalizer's steps carry that prefix along (Prepend's text joins it). Where a Replace
 * rewrites the first character itself, Hugging Face's offset alignment may decide otherwise (no
 * real file combines the two: Mistral's Metaspace comes with no normalizer).
 *
 * Invalid UTF-8 is never rejected. Byte-level files (GPT-2, NeoX): each byte that is not part of a
 * well-formed UTF-8 sequence is one character of its own, of no letter/number/space class (so it
 * groups with punctuation), and becomes the byte-level symbol of that byte (what Python's
 * "surrogateescape" decoding followed by the same pattern gives). Other files: each such byte is
 * read as U+FFFD first (Hugging Face only accepts valid UTF-8). A byte or character with no symbol
 * in the vocabulary is dropped, or becomes the unk token when the model defines one, as in
 * Hugging Face.
 *
 * Decoding runs the file's decoder (ByteLevel, ByteFallback, Metaspace, Replace, Fuse, Strip,
 * Sequence; no decoder: the tokens joined by spaces, as Hugging Face does). ByteLevel returns the
 * raw bytes (so decode(encode(x)) == x for any bytes under GPT-2; Hugging Face would in addition
 * turn invalid UTF-8 in the result into U+FFFD); tokens with characters outside the byte-level
 * alphabet (NeoX's space-run tokens) decode to their own text. Special tokens are kept.
 *
 * Ids are 0-based. vocab_size is the largest id + 1 over the model vocabulary and the added
 * tokens (the rows an embedding needs). A tokenizer keeps a cache of encoded words and scratch
 * buffers, so one tokenizer must not be used by two threads at once.
 *
 * Errors: functions returning int give 0 on success, -1 with a message (mw_error()) that names
 * the file and the field, e.g. "tokenizer: x/tokenizer.json: model.merges[12]: "ab" is not in
 * model.vocab", or "...: pre_tokenizer.type: pre-tokenizer "Whitespace" is not supported (...)".
 */
#ifndef MW_TOKENIZER_H
#define MW_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct mw_tokenizer mw_tokenizer;

typedef enum { MW_TOK_BOS = 0, MW_TOK_EOS, MW_TOK_PAD, MW_TOK_UNK, MW_TOK_NSPECIAL } mw_tok_special;

/* path: a tokenizer.json or tokenizer.model file, or a folder holding tokenizer.json,
 * tokenizer.model or vocab.json + merges.txt (in that order of preference). A folder's
 * tokenizer_config.json / special_tokens_map.json, when present, name the bos/eos/pad/unk tokens;
 * otherwise <|endoftext|> is bos and eos (else the one token the post-processor puts first is bos
 * and a special "</s>" eos; a SentencePiece model's own ids), and <|padding|> is pad. */
int mw_tokenizer_load(mw_tokenizer **out, const char *path);
int mw_tokenizer_load_json(mw_tokenizer **out, const char *path);
int mw_tokenizer_load_gpt2(mw_tokenizer **out, const char *vocab_json, const char *merges_txt);
int mw_tokenizer_load_spm(mw_tokenizer **out, const char *path); /* a SentencePiece tokenizer.model */
int mw_tokenizer_from_spm(mw_tokenizer **out, const char *data, size_t len, const char *name);
/* from the text of a tokenizer.json held in memory; name is used in error messages */
int mw_tokenizer_from_json(mw_tokenizer **out, const char *json, size_t len, const char *name);
/* from the texts of vocab.json and merges.txt held in memory */
int mw_tokenizer_from_gpt2(mw_tokenizer **out, const char *vocab, size_t vocab_len,
                           const char *merges, size_t merges_len, const char *name);
void mw_tokenizer_free(mw_tokenizer *t);

/* text: len bytes, any content (NUL and invalid UTF-8 included). *ids gets a malloc'd array of
 * *n ids (free() it; NULL when *n == 0). add_special_tokens: let the post-processor add its
 * tokens (BOS for Llama's files), as Hugging Face's default; mw_tokenizer_encode does. */
int mw_tokenizer_encode_ex(int64_t **ids, size_t *n, mw_tokenizer *t, const char *text, size_t len,
                           int add_special_tokens);
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
