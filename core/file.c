/* file.c - files written whole or not at all (see file.h). */
#include "file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mw_tensor.h"

int mw_file_begin(mw_file *w, const char *path, const char *op) {
    size_t n = strlen(path);
    w->f = NULL;
    w->path = path;
    w->tmp = malloc(n + 12);
    if (!w->tmp) return mw_seterr("%s: %s: out of memory", op, path);
    memcpy(w->tmp, path, n);
    memcpy(w->tmp + n, ".tmp.XXXXXX", 12);
    int fd = mkstemp(w->tmp);
    if (fd < 0) {
        int e = errno;
        free(w->tmp);
        w->tmp = NULL;
        return mw_seterr("%s: %s: cannot create a file beside it: %s", op, path, strerror(e));
    }
    mode_t mask = umask(0);   /* mkstemp makes 0600; a finished file gets fopen's mode */
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0 || !(w->f = fdopen(fd, "wb"))) {
        int e = errno;
        close(fd);
        mw_file_abort(w);
        return mw_seterr("%s: %s: cannot open a file beside it: %s", op, path, strerror(e));
    }
    return 0;
}

void mw_file_abort(mw_file *w) {
    if (w->f) fclose(w->f);
    if (w->tmp) remove(w->tmp);
    free(w->tmp);
    w->f = NULL;
    w->tmp = NULL;
}

int mw_file_commit(mw_file *w, const char *op) {
    int bad = ferror(w->f);
    int closed = fclose(w->f) == 0;
    int e = errno;
    w->f = NULL;
    if (bad || !closed) {
        mw_file_abort(w);
        return mw_seterr("%s: %s: write failed: %s", op, w->path, bad ? "I/O error" : strerror(e));
    }
    if (rename(w->tmp, w->path) != 0) {
        e = errno;
        mw_file_abort(w);
        return mw_seterr("%s: %s: cannot rename into place: %s", op, w->path, strerror(e));
    }
    free(w->tmp);
    w->tmp = NULL;
    return 0;
}
