/* bpe.h - the pieces of byte-pair encoding shared by the tokenizer (tokenizer.c) and the BPE
 * trainer (bpe_train.c), written once:
 *   - hashing of byte strings and of 64-bit keys;
 *   - UTF-8 decoding (well-formed sequences only) and the character classes of GPT-2's pattern;
 *   - GPT-2's pre-tokenizer: the length of the next pre-token of
 *       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *     written out over Unicode general categories (\s: U+0009..U+000D, U+0085, Zs, Zl, Zp);
 *   - GPT-2's byte-level alphabet (bytes_to_unicode);
 *   - the merge table (pair of ids -> rank and merged id) and the merge loop that applies it to a
 *     sequence of symbols, lowest rank first, leftmost among equal ranks (Hugging Face's order).
 * Invalid UTF-8: a byte that starts no well-formed sequence is one character of its own, of no
 * letter/number/space class (so it groups with punctuation), as Python's "surrogateescape"
 * decoding followed by the same pattern gives.
 */
#ifndef MW_BPE_H
#define MW_BPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Reads the whole file at path: *len bytes, NUL-terminated, malloc'd. Errors read
 * "<who>: <path>: cannot open: <reason>". */
int mw_read_file(char **data, size_t *len, const char *path, const char *who);

/* ------------------------------------------------------------------ hashing */

static inline uint64_t mw_hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static inline uint64_t mw_hash_bytes(const void *data, size_t n) {
    const unsigned char *s = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, s, 8);
        h = (h ^ (k * 0xbf58476d1ce4e5b9ull)) * 0x94d049bb133111ebull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t k = 0;
    memcpy(&k, s, n);
    h = (h ^ (k * 0xbf58476d1ce4e5b9ull)) * 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

/* ------------------------------------------------------------------ UTF-8 and classes */

/* Length (1..4) of the well-formed UTF-8 sequence at s[0] (n > 0 bytes left; Unicode Table 3-7:
 * no overlongs, no surrogates, nothing past U+10FFFF), its code point in *cp; 0 when s[0] starts
 * none. */
int mw_utf8_next(const unsigned char *s, size_t n, int32_t *cp);
/* appends the UTF-8 form of cp (< 0x110000) to out; returns its length 1..4 */
int mw_utf8_put(unsigned char *out, int32_t cp);

/* the classes of GPT-2's pattern */
enum { MW_BPE_LETTER, MW_BPE_NUMBER, MW_BPE_SPACE, MW_BPE_OTHER };
int mw_bpe_cp_class(int32_t cp); /* cp < 0: an invalid byte (OTHER) */
/* class of the character at s[0] (n > 0); *clen gets its byte length (1 for an invalid byte) */
int mw_bpe_char_class(const unsigned char *s, size_t n, int *clen);

/* Length in bytes of GPT-2's pre-token that starts at s (n > 0 bytes left); always >= 1. */
size_t mw_bpe_pretoken_len(const unsigned char *s, size_t n);

/* ------------------------------------------------------------------ byte-level alphabet */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 byte values
 * map to U+0100.. in byte order (space is 'Ġ' U+0120). */
int32_t mw_bpe_byte_cp(int byte);
int mw_bpe_cp_byte(int32_t cp); /* the inverse; -1 for a code point outside the alphabet */
/* the byte's character as UTF-8, NUL-terminated (1 or 2 bytes) */
const char *mw_bpe_byte_char(int byte);

/* ------------------------------------------------------------------ merges */

/* pair (left id, right id) -> (rank, merged id), open addressing */
typedef struct { uint64_t key; uint32_t rank; int32_t id; } mw_bpe_merge_slot;
typedef struct { mw_bpe_merge_slot *slots; size_t cap, n; } mw_bpe_merges;

/* A repeated pair keeps its later rank (as a dict built in file order does). -1: out of memory. */
int mw_bpe_merges_put(mw_bpe_merges *m, int32_t left, int32_t right, uint32_t rank, int32_t id);
const mw_bpe_merge_slot *mw_bpe_merges_find(const mw_bpe_merges *m, int32_t left, int32_t right);
void mw_bpe_merges_free(mw_bpe_merges *m);

/* Scratch of the merge loop, reused across calls (grows to the longest word seen). */
typedef struct {
    int32_t *prv, *nxt;
    struct mw_bpe_heap_item { uint32_t rank, pos; int32_t left, right; } *heap;
    size_t cap;
} mw_bpe_scratch;

/* Merges sym[0..n) in place: repeatedly the adjacent pair of lowest rank (leftmost among equal
 * ranks). Returns the new length, or -1 when out of memory. */
long mw_bpe_apply(const mw_bpe_merges *m, mw_bpe_scratch *s, int32_t *sym, size_t n);
void mw_bpe_scratch_free(mw_bpe_scratch *s);

#endif
