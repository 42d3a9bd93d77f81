/* file.h - files written whole or not at all. A writer creates a unique temporary file beside the
 * target (mkstemp: two writers of one path never share it; mode 0666 less the umask, as fopen),
 * writes into w.f, then commits: close, rename over the target. On any failure the temporary is
 * removed and the old file stays whole. Used by the dataset and tokenizer writers; lua/lio.c's
 * mi.utils.write_file is the same rule for Lua strings (plus fsync), and vendor/safetensors.h
 * keeps its own so that it stays a standalone header.
 *
 *   mw_file w;
 *   if (mw_file_begin(&w, path, "bpe_save")) return -1;     // message set
 *   fprintf(w.f, ...);
 *   if (failed) { mw_file_abort(&w); return mw_seterr(...); }
 *   return mw_file_commit(&w, "bpe_save");                  // 0, or -1 with a message
 */
#ifndef MW_FILE_H
#define MW_FILE_H

#include <stdio.h>

typedef struct mw_file {
    FILE *f;           /* the temporary file, open for writing */
    char *tmp;         /* its name */
    const char *path;  /* the target */
} mw_file;

int mw_file_begin(mw_file *w, const char *path, const char *op);
int mw_file_commit(mw_file *w, const char *op);
void mw_file_abort(mw_file *w);

#endif
