/* spm.h - SentencePiece models (tokenizer.model) through Debian's libsentencepiece, behind a C
 * interface (spm.cc is the only C++ file). Used by tokenizer.c; ids are SentencePiece's own.
 * Functions returning int give 0 on success, -1 with a message in err (errlen bytes). */
#ifndef MW_SPM_H
#define MW_SPM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mw_spm mw_spm;

/* from the bytes of a tokenizer.model (a serialized ModelProto) */
int mw_spm_load(mw_spm **out, const char *data, size_t len, char *err, size_t errlen);
void mw_spm_free(mw_spm *s);
int mw_spm_size(const mw_spm *s);
/* the piece of id (0 <= id < size) as a pointer into the model, its length in *len */
const char *mw_spm_piece(const mw_spm *s, int id, size_t *len);
/* 1 for control symbols (<s>, </s>) and the unknown token */
int mw_spm_is_special(const mw_spm *s, int id);
/* bos, eos, pad, unk: -1 when the model has none */
void mw_spm_special_ids(const mw_spm *s, int *bos, int *eos, int *pad, int *unk);
/* *ids: malloc'd, *n ids */
int mw_spm_encode(const mw_spm *s, const char *text, size_t len, int64_t **ids, size_t *n, char *err, size_t errlen);
/* *text: malloc'd, NUL-terminated, *len bytes; ids in range */
int mw_spm_decode(const mw_spm *s, const int64_t *ids, size_t n, char **text, size_t *len, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
