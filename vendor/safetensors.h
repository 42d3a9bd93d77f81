/* safetensors.h - a standalone single-header reader and writer of .safetensors files.
 *
 * Usage: in exactly one C file,
 *     #define SAFETENSORS_IMPLEMENTATION
 *     #include "safetensors.h"
 * and include it plainly everywhere else. No dependencies beyond libc and POSIX mmap.
 *
 * The format (as written by the Python `safetensors` library):
 *     [8 bytes]  N, the header length, unsigned little-endian
 *     [N bytes]  a UTF-8 JSON object, padded at the end with spaces:
 *                  {"__metadata__": {"key": "value", ...},          (optional, strings only)
 *                   "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 *     [rest]     the data section; a tensor's bytes are data[begin, end), row-major, little-endian.
 *
 * Reading maps the file (mmap) and never copies tensor data: st_tensor.data points into the map.
 * Every header field is checked before use: header inside the file, JSON well formed, dtype known,
 * shape entries non-negative and their product not overflowing, offsets inside the data section,
 * end - begin == numel x dtype size, no two tensors overlapping, no duplicate names. Errors go to
 * a caller buffer as "FILE: tensor 'NAME': what is wrong"; nothing is printed, nothing aborts.
 *
 * Writing produces what the Python library produces: the header padded with spaces to a multiple
 * of 8 bytes, "__metadata__" first, tensors laid out sorted by dtype size (largest first), then
 * by name, so that every tensor starts aligned to its element size.
 */
#ifndef SAFETENSORS_H
#define SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAXDIM 16
/* the Python library refuses headers past 100 MB; so do we */
#define ST_MAX_HEADER 100000000ull

typedef enum {
    ST_F64, ST_F32, ST_F16, ST_BF16, ST_I64, ST_I32, ST_I16, ST_I8,
    ST_U64, ST_U32, ST_U16, ST_U8, ST_BOOL, ST_NDTYPES
} st_dtype;

typedef struct st_tensor {
    char *name;                  /* NUL-terminated UTF-8 (JSON escapes decoded) */
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAXDIM];
    int64_t numel;
    uint64_t begin, end;         /* byte offsets into the data section */
    const void *data;            /* = data section + begin; not necessarily aligned */
} st_tensor;

typedef struct st_kv { char *key, *value; } st_kv;

typedef struct st_file {
    char *path;                  /* for messages */
    void *map;                   /* the whole file (mmap), or NULL for st_open_memory */
    size_t map_size;
    const unsigned char *bytes;  /* the file's bytes (the map or the caller's buffer) */
    size_t size;
    uint64_t header_len;
    const unsigned char *data;   /* data section: bytes + 8 + header_len */
    uint64_t data_size;
    st_tensor *tensors;          /* in header order */
    size_t n_tensors;
    st_kv *metadata;             /* "__metadata__" entries, in header order */
    size_t n_metadata;
} st_file;

/* element size in bytes, and names as they appear in headers ("F32", ...) */
size_t st_dtype_size(st_dtype dt);
const char *st_dtype_name(st_dtype dt);
int st_dtype_from_name(const char *name, st_dtype *out); /* 0 on success, -1 if unknown */

/* Opens and checks a file. 0 on success; -1 with a message in err (f is then empty and need
 * not be closed, though closing it is harmless). */
int st_open(st_file *f, const char *path, char *err, size_t errlen);
/* The same checks over a buffer the caller keeps alive while f is used (tests, fuzzing). */
int st_open_memory(st_file *f, const void *buf, size_t len, const char *name, char *err,
                   size_t errlen);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_metadata_get(const st_file *f, const char *key);

/* One tensor to write: data holds numel(shape) elements of dtype, row-major, little-endian. */
typedef struct st_write_tensor {
    const char *name;
    st_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data;
} st_write_tensor;

/* Writes n tensors and n_meta metadata pairs (meta_keys[i] -> meta_values[i]) to path, through a
 * temporary file renamed into place. 0 on success, -1 with a message in err. */
int st_write(const char *path, const st_write_tensor *ts, size_t n, const char *const *meta_keys,
             const char *const *meta_values, size_t n_meta, char *err, size_t errlen);

/* conversions of 16-bit floats (exact: every f16 and bf16 value is an f32 value) */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);

#endif /* SAFETENSORS_H */

#ifdef SAFETENSORS_IMPLEMENTATION
#ifndef SAFETENSORS_IMPLEMENTED
#define SAFETENSORS_IMPLEMENTED

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct { const char *name; size_t size; } st__dtypes[ST_NDTYPES] = {
    [ST_F64] = {"F64", 8}, [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2},
    [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4}, [ST_I16] = {"I16", 2}, [ST_I8] = {"I8", 1},
    [ST_U64] = {"U64", 8}, [ST_U32] = {"U32", 4}, [ST_U16] = {"U16", 2}, [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1},
};

size_t st_dtype_size(st_dtype dt) { return (unsigned)dt < ST_NDTYPES ? st__dtypes[dt].size : 0; }
const char *st_dtype_name(st_dtype dt) { return (unsigned)dt < ST_NDTYPES ? st__dtypes[dt].name : "?"; }

int st_dtype_from_name(const char *name, st_dtype *out) {
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(name, st__dtypes[i].name) == 0) { *out = (st_dtype)i; return 0; }
    return -1;
}

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);          /* inf, nan (payload kept) */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);  /* normal: rebias 15 -> 127 */
    } else if (man == 0) {
        bits = sign;                                      /* signed zero */
    } else {                                              /* subnormal: normalize */
        int e = 113;
        while (!(man & 0x400)) { man <<= 1; e--; }
        bits = sign | ((uint32_t)e << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float st_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* ------------------------------------------------------------------ reading */

typedef struct {
    const char *p, *end, *start;
    const char *file;
    char *err;
    size_t errlen;
    int failed;
} st__parser;

static int st__fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void st__ws(st__parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int st__perr(st__parser *ps, const char *what) {
    if (!ps->failed) {
        ps->failed = 1;
        /* a file offset: the 8 length bytes come before the header */
        st__fail(ps->err, ps->errlen, "%s: malformed safetensors header at byte %zu: %s", ps->file,
                 (size_t)(ps->p - ps->start) + 8, what);
    }
    return -1;
}

static int st__expect(st__parser *ps, char c, const char *what) {
    st__ws(ps);
    if (ps->p >= ps->end || *ps->p != c) return st__perr(ps, what);
    ps->p++;
    return 0;
}

static int st__hex(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int st__u4(st__parser *ps, uint32_t *out) {
    if (ps->end - ps->p < 4) return st__perr(ps, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = st__hex((unsigned char)ps->p[i]);
        if (h < 0) return st__perr(ps, "bad \\u escape");
        v = v * 16 + (uint32_t)h;
    }
    ps->p += 4;
    *out = v;
    return 0;
}

/* Parses a JSON string at ps->p (after whitespace). With out != NULL, returns a malloc'd
 * NUL-terminated copy with escapes decoded; a decoded NUL byte is refused (names are C strings). */
static int st__string(st__parser *ps, char **out) {
    st__ws(ps);
    if (ps->p >= ps->end || *ps->p != '"') return st__perr(ps, "expected a string");
    ps->p++;
    /* the decoded string is never longer than the raw one */
    const char *q = ps->p;
    while (q < ps->end && *q != '"') q += (*q == '\\' && q + 1 < ps->end) ? 2 : 1;
    if (q >= ps->end) return st__perr(ps, "unterminated string");
    char *buf = NULL, *w = NULL;
    if (out) {
        buf = (char *)malloc((size_t)(q - ps->p) + 1);
        if (!buf) return st__perr(ps, "out of memory");
        w = buf;
    }
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p++;
        if (c < 0x20) { free(buf); return st__perr(ps, "control character in string"); }
        if (c != '\\') { if (w) *w++ = (char)c; continue; }
        c = (unsigned char)*ps->p++;
        uint32_t cp;
        switch (c) {
        case '"': case '\\': case '/': cp = c; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (st__u4(ps, &cp)) { free(buf); return -1; }
            if (cp >= 0xd800 && cp < 0xdc00) { /* a high surrogate needs its low half */
                uint32_t lo;
                if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
                    free(buf);
                    return st__perr(ps, "unpaired surrogate in string");
                }
                ps->p += 2;
                if (st__u4(ps, &lo)) { free(buf); return -1; }
                if (lo < 0xdc00 || lo > 0xdfff) { free(buf); return st__perr(ps, "unpaired surrogate in string"); }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                free(buf);
                return st__perr(ps, "unpaired surrogate in string");
            }
            break;
        default: free(buf); return st__perr(ps, "bad escape in string");
        }
        if (cp == 0) { free(buf); return st__perr(ps, "NUL character in string"); }
        if (!w) continue;
        /* UTF-8 encoding; 6 raw bytes (\uXXXX) always cover the at most 4 written */
        if (cp < 0x80) *w++ = (char)cp;
        else if (cp < 0x800) { *w++ = (char)(0xc0 | (cp >> 6)); *w++ = (char)(0x80 | (cp & 0x3f)); }
        else if (cp < 0x10000) {
            *w++ = (char)(0xe0 | (cp >> 12)); *w++ = (char)(0x80 | ((cp >> 6) & 0x3f));
            *w++ = (char)(0x80 | (cp & 0x3f));
        } else {
            *w++ = (char)(0xf0 | (cp >> 18)); *w++ = (char)(0x80 | ((cp >> 12) & 0x3f));
            *w++ = (char)(0x80 | ((cp >> 6) & 0x3f)); *w++ = (char)(0x80 | (cp & 0x3f));
        }
    }
    ps->p++; /* closing quote */
    if (out) {
        *w = 0;
        if (memchr(buf, 0, (size_t)(w - buf))) { free(buf); return st__perr(ps, "NUL byte in string"); }
        *out = buf;
    }
    return 0;
}

/* a non-negative JSON integer (no sign, fraction or exponent: shapes and offsets are counts) */
static int st__uint(st__parser *ps, uint64_t *out) {
    st__ws(ps);
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return st__perr(ps, "expected a non-negative integer");
    uint64_t v = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        uint64_t d = (uint64_t)(*ps->p - '0');
        if (v > (UINT64_MAX - d) / 10) return st__perr(ps, "integer too large");
        v = v * 10 + d;
        ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'))
        return st__perr(ps, "expected an integer, not a fraction");
    *out = v;
    return 0;
}

/* skips any JSON value, nesting at most `depth` more levels */
static int st__skip(st__parser *ps, int depth) {
    st__ws(ps);
    if (ps->p >= ps->end) return st__perr(ps, "expected a value");
    if (depth <= 0) return st__perr(ps, "nesting too deep");
    char c = *ps->p;
    if (c == '"') return st__string(ps, NULL);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        ps->p++;
        st__ws(ps);
        if (ps->p < ps->end && *ps->p == close) { ps->p++; return 0; }
        for (;;) {
            if (c == '{') {
                if (st__string(ps, NULL) || st__expect(ps, ':', "expected ':'")) return -1;
            }
            if (st__skip(ps, depth - 1)) return -1;
            st__ws(ps);
            if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
            return st__expect(ps, close, "expected ',' or the end of a list or object");
        }
    }
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, words[i], n) == 0) { ps->p += n; return 0; }
    }
    /* a number: -?digits(.digits)?([eE][+-]?digits)? */
    const char *s = ps->p;
    if (ps->p < ps->end && *ps->p == '-') ps->p++;
    int digits = 0;
    while (ps->p < ps->end && ((*ps->p >= '0' && *ps->p <= '9') || *ps->p == '.' || *ps->p == 'e' ||
                               *ps->p == 'E' || *ps->p == '+' || *ps->p == '-')) {
        digits += *ps->p >= '0' && *ps->p <= '9';
        ps->p++;
    }
    if (!digits) { ps->p = s; return st__perr(ps, "expected a value"); }
    return 0;
}

static void st__free_tensors(st_file *f) {
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < f->n_metadata; i++) { free(f->metadata[i].key); free(f->metadata[i].value); }
    free(f->metadata);
    f->tensors = NULL; f->metadata = NULL; f->n_tensors = f->n_metadata = 0;
}

static int st__grow(void **arr, size_t *cap, size_t n, size_t elt) {
    if (n < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, nc * elt);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

/* "__metadata__": {"k": "v", ...} */
static int st__metadata(st__parser *ps, st_file *f) {
    size_t cap = 0;
    if (st__expect(ps, '{', "__metadata__ must be an object of strings")) return -1;
    st__ws(ps);
    if (ps->p < ps->end && *ps->p == '}') { ps->p++; return 0; }
    for (;;) {
        char *k = NULL, *v = NULL;
        if (st__string(ps, &k)) return -1;
        if (st__expect(ps, ':', "expected ':'")) { free(k); return -1; }
        st__ws(ps);
        if (ps->p < ps->end && *ps->p != '"') {
            ps->failed = 1;
            st__fail(ps->err, ps->errlen, "%s: __metadata__ entry '%s': values must be strings", ps->file, k);
            free(k);
            return -1;
        }
        if (st__string(ps, &v)) { free(k); return -1; }
        if (st__grow((void **)&f->metadata, &cap, f->n_metadata, sizeof(st_kv))) {
            free(k); free(v);
            return st__perr(ps, "out of memory");
        }
        f->metadata[f->n_metadata].key = k;
        f->metadata[f->n_metadata].value = v;
        f->n_metadata++;
        st__ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        return st__expect(ps, '}', "expected ',' or '}' in __metadata__");
    }
}

/* {"dtype": "F32", "shape": [..], "data_offsets": [b, e]} for tensor t (name already set) */
static int st__tensor_info(st__parser *ps, st_tensor *t) {
    int have_dtype = 0, have_shape = 0, have_off = 0;
    if (st__expect(ps, '{', "a tensor entry must be an object")) return -1;
    st__ws(ps);
    if (ps->p < ps->end && *ps->p == '}') { ps->p++; goto check; }
    for (;;) {
        char *key = NULL;
        if (st__string(ps, &key)) return -1;
        if (st__expect(ps, ':', "expected ':'")) { free(key); return -1; }
        if (strcmp(key, "dtype") == 0) {
            char *dt = NULL;
            free(key);
            if (st__string(ps, &dt)) return -1;
            if (st_dtype_from_name(dt, &t->dtype)) {
                ps->failed = 1;
                st__fail(ps->err, ps->errlen, "%s: tensor '%s': unknown dtype '%s'", ps->file, t->name, dt);
                free(dt);
                return -1;
            }
            free(dt);
            have_dtype = 1;
        } else if (strcmp(key, "shape") == 0) {
            free(key);
            if (st__expect(ps, '[', "shape must be a list")) return -1;
            t->ndim = 0;
            st__ws(ps);
            if (ps->p < ps->end && *ps->p == ']') ps->p++;
            else for (;;) {
                uint64_t d;
                if (st__uint(ps, &d)) return -1;
                if (t->ndim >= ST_MAXDIM) {
                    ps->failed = 1;
                    return st__fail(ps->err, ps->errlen, "%s: tensor '%s': more than %d dims", ps->file,
                                    t->name, ST_MAXDIM);
                }
                if (d > (uint64_t)INT64_MAX) return st__perr(ps, "shape entry too large");
                t->shape[t->ndim++] = (int64_t)d;
                st__ws(ps);
                if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
                if (st__expect(ps, ']', "expected ',' or ']' in shape")) return -1;
                break;
            }
            have_shape = 1;
        } else if (strcmp(key, "data_offsets") == 0) {
            free(key);
            if (st__expect(ps, '[', "data_offsets must be a list of two integers") ||
                st__uint(ps, &t->begin) || st__expect(ps, ',', "data_offsets must be a list of two integers") ||
                st__uint(ps, &t->end) || st__expect(ps, ']', "data_offsets must be a list of two integers"))
                return -1;
            have_off = 1;
        } else {
            free(key); /* unknown fields are tolerated, as serde does by default */
            if (st__skip(ps, 64)) return -1;
        }
        st__ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        if (st__expect(ps, '}', "expected ',' or '}' in a tensor entry")) return -1;
        break;
    }
check:
    if (!have_dtype || !have_shape || !have_off) {
        ps->failed = 1;
        return st__fail(ps->err, ps->errlen, "%s: tensor '%s': missing field '%s'", ps->file, t->name,
                        !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    }
    return 0;
}

static int st__cmp_begin(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int st__cmp_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static int st__parse(st_file *f, char *err, size_t errlen) {
    const char *file = f->path;
    if (f->size < 8)
        return st__fail(err, errlen, "%s: not a safetensors file: %zu bytes, shorter than the 8-byte header length",
                        file, f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->bytes[i];
    if (n > ST_MAX_HEADER)
        return st__fail(err, errlen, "%s: safetensors header length %llu exceeds the limit of %llu bytes",
                        file, (unsigned long long)n, ST_MAX_HEADER);
    if (n > f->size - 8)
        return st__fail(err, errlen, "%s: safetensors header length %llu runs past the end of the file (%zu bytes)",
                        file, (unsigned long long)n, f->size);
    f->header_len = n;
    f->data = f->bytes + 8 + n;
    f->data_size = f->size - 8 - n;

    st__parser ps = {(const char *)f->bytes + 8, (const char *)f->bytes + 8 + n, (const char *)f->bytes + 8,
                     file, err, errlen, 0};
    size_t cap = 0;
    if (st__expect(&ps, '{', "the header must be a JSON object")) goto fail;
    st__ws(&ps);
    if (ps.p < ps.end && *ps.p == '}') ps.p++;
    else for (;;) {
        char *name = NULL;
        if (st__string(&ps, &name)) goto fail;
        if (st__expect(&ps, ':', "expected ':'")) { free(name); goto fail; }
        if (strcmp(name, "__metadata__") == 0) {
            free(name);
            if (f->n_metadata) { st__perr(&ps, "two __metadata__ entries"); goto fail; }
            if (st__metadata(&ps, f)) goto fail;
        } else {
            if (st__grow((void **)&f->tensors, &cap, f->n_tensors, sizeof(st_tensor))) {
                free(name);
                st__perr(&ps, "out of memory");
                goto fail;
            }
            st_tensor *t = &f->tensors[f->n_tensors++];
            memset(t, 0, sizeof *t);
            t->name = name;
            if (st__tensor_info(&ps, t)) goto fail;
        }
        st__ws(&ps);
        if (ps.p < ps.end && *ps.p == ',') { ps.p++; continue; }
        if (st__expect(&ps, '}', "expected ',' or '}' after an entry")) goto fail;
        break;
    }
    st__ws(&ps);
    if (ps.p != ps.end) { st__perr(&ps, "trailing bytes after the JSON object"); goto fail; }

    /* per-tensor checks: size and range */
    for (size_t i = 0; i < f->n_tensors; i++) {
        st_tensor *t = &f->tensors[i];
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            if (__builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel) || numel > (uint64_t)INT64_MAX) {
                st__fail(err, errlen, "%s: tensor '%s': shape too large", file, t->name);
                goto fail;
            }
        uint64_t bytes;
        if (__builtin_mul_overflow(numel, (uint64_t)st_dtype_size(t->dtype), &bytes)) {
            st__fail(err, errlen, "%s: tensor '%s': shape too large", file, t->name);
            goto fail;
        }
        t->numel = (int64_t)numel;
        if (t->end < t->begin) {
            st__fail(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", file,
                     t->name, (unsigned long long)t->begin, (unsigned long long)t->end);
            goto fail;
        }
        if (t->end > f->data_size) {
            st__fail(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] run past the data section (%llu bytes)",
                     file, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                     (unsigned long long)f->data_size);
            goto fail;
        }
        if (t->end - t->begin != bytes) {
            char sh[ST_MAXDIM * 22 + 3];
            size_t k = 0;
            sh[k++] = '[';
            for (int d = 0; d < t->ndim; d++)
                k += (size_t)snprintf(sh + k, sizeof sh - k, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            snprintf(sh + k, sizeof sh - k, "]");
            st__fail(err, errlen, "%s: tensor '%s': %llu bytes in data_offsets, but shape %s x %s needs %llu",
                     file, t->name, (unsigned long long)(t->end - t->begin), sh, st_dtype_name(t->dtype),
                     (unsigned long long)bytes);
            goto fail;
        }
        t->data = f->data + t->begin;
    }
    /* cross-tensor checks: no duplicate names, no overlapping byte ranges */
    if (f->n_tensors > 1) {
        const st_tensor **v = (const st_tensor **)malloc(f->n_tensors * sizeof *v);
        if (!v) { st__fail(err, errlen, "%s: out of memory", file); goto fail; }
        for (size_t i = 0; i < f->n_tensors; i++) v[i] = &f->tensors[i];
        qsort(v, f->n_tensors, sizeof *v, st__cmp_name);
        for (size_t i = 1; i < f->n_tensors; i++)
            if (strcmp(v[i - 1]->name, v[i]->name) == 0) {
                st__fail(err, errlen, "%s: tensor '%s' appears twice in the header", file, v[i]->name);
                free(v);
                goto fail;
            }
        qsort(v, f->n_tensors, sizeof *v, st__cmp_begin);
        /* sorted by begin: a range overlaps some earlier one iff it begins before the furthest end */
        const st_tensor *reach = NULL;
        for (size_t i = 0; i < f->n_tensors; i++) {
            if (v[i]->begin == v[i]->end) continue; /* empty tensors occupy nothing */
            if (reach && v[i]->begin < reach->end) {
                st__fail(err, errlen, "%s: tensor '%s' [%llu, %llu) overlaps tensor '%s' [%llu, %llu)", file,
                         v[i]->name, (unsigned long long)v[i]->begin, (unsigned long long)v[i]->end,
                         reach->name, (unsigned long long)reach->begin, (unsigned long long)reach->end);
                free(v);
                goto fail;
            }
            if (!reach || v[i]->end > reach->end) reach = v[i];
        }
        free(v);
    }
    return 0;
fail:
    st__free_tensors(f);
    return -1;
}

static int st__dup_path(st_file *f, const char *path, char *err, size_t errlen) {
    f->path = strdup(path ? path : "(memory)");
    if (!f->path) return st__fail(err, errlen, "%s: out of memory", path ? path : "(memory)");
    return 0;
}

int st_open_memory(st_file *f, const void *buf, size_t len, const char *name, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    if (st__dup_path(f, name, err, errlen)) return -1;
    f->bytes = (const unsigned char *)buf;
    f->size = len;
    if (st__parse(f, err, errlen)) { st_close(f); return -1; }
    return 0;
}

int st_open(st_file *f, const char *path, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return st__fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return st__fail(err, errlen, "%s: cannot open: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return st__fail(err, errlen, "%s: cannot open: %s", path,
                        S_ISDIR(sb.st_mode) ? "is a directory" : "not a regular file");
    }
    if (st__dup_path(f, path, err, errlen)) { close(fd); return -1; }
    f->size = (size_t)sb.st_size;
    if (f->size > 0) {
        void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(f->path);
            f->path = NULL;
            return st__fail(err, errlen, "%s: cannot map: %s", path, strerror(e));
        }
        f->map = m;
        f->map_size = f->size;
        f->bytes = (const unsigned char *)m;
    } else {
        f->bytes = (const unsigned char *)"";
    }
    close(fd); /* the map stays valid */
    if (st__parse(f, err, errlen)) { st_close(f); return -1; }
    return 0;
}

void st_close(st_file *f) {
    if (!f) return;
    st__free_tensors(f);
    if (f->map) munmap(f->map, f->map_size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *st_metadata_get(const st_file *f, const char *key) {
    for (size_t i = 0; i < f->n_metadata; i++)
        if (strcmp(f->metadata[i].key, key) == 0) return f->metadata[i].value;
    return NULL;
}

/* ------------------------------------------------------------------ writing */

typedef struct { char *s; size_t n, cap; int oom; } st__buf;

static void st__put(st__buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *p = (char *)realloc(b->s, nc);
        if (!p) { b->oom = 1; return; }
        b->s = p;
        b->cap = nc;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void st__puts(st__buf *b, const char *s) { st__put(b, s, strlen(s)); }

static void st__putq(st__buf *b, const char *s) {
    st__put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; st__put(b, esc, 2); }
        else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); st__put(b, esc, 6); }
        else st__put(b, (const char *)&c, 1);
    }
    st__put(b, "\"", 1);
}

/* well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF): readers parse the
 * header as UTF-8 JSON and refuse anything else */
static int st__utf8_ok(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, n, cp;
        if (c < 0x80) { p++; continue; }
        if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; }
        else return 0;
        for (unsigned i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        p += n + 1;
    }
    return 1;
}

typedef struct { const st_write_tensor *t; uint64_t bytes, begin; } st__wslot;

static int st__cmp_layout(const void *a, const void *b) {
    const st__wslot *x = (const st__wslot *)a, *y = (const st__wslot *)b;
    size_t sx = st_dtype_size(x->t->dtype), sy = st_dtype_size(y->t->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->t->name, y->t->name);
}

static int st__cmp_wname(const void *a, const void *b) {
    return strcmp(((const st__wslot *)a)->t->name, ((const st__wslot *)b)->t->name);
}

static int st__write_all(FILE *fp, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, fp) == n ? 0 : -1; }

int st_write(const char *path, const st_write_tensor *ts, size_t n, const char *const *meta_keys,
             const char *const *meta_values, size_t n_meta, char *err, size_t errlen) {
    st__wslot *slots = (st__wslot *)calloc(n ? n : 1, sizeof *slots);
    st__buf h = {0};
    char *tmp = NULL;
    FILE *fp = NULL;
    int rc = -1;
    if (!slots) { st__fail(err, errlen, "%s: out of memory", path); goto done; }
    for (size_t i = 0; i < n; i++) {
        const st_write_tensor *t = &ts[i];
        if (!t->name || !*t->name || strcmp(t->name, "__metadata__") == 0) {
            st__fail(err, errlen, "%s: tensor #%zu: invalid name '%s'", path, i, t->name ? t->name : "(null)");
            goto done;
        }
        if (!st__utf8_ok(t->name)) {
            st__fail(err, errlen, "%s: tensor #%zu: name is not valid UTF-8", path, i);
            goto done;
        }
        if ((unsigned)t->dtype >= ST_NDTYPES || t->ndim < 0 || t->ndim > ST_MAXDIM) {
            st__fail(err, errlen, "%s: tensor '%s': bad dtype or ndim", path, t->name);
            goto done;
        }
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel)) {
                st__fail(err, errlen, "%s: tensor '%s': bad shape", path, t->name);
                goto done;
            }
        slots[i].t = t;
        if (__builtin_mul_overflow(numel, (uint64_t)st_dtype_size(t->dtype), &slots[i].bytes)) {
            st__fail(err, errlen, "%s: tensor '%s': bad shape", path, t->name);
            goto done;
        }
        if (slots[i].bytes && !t->data) {
            st__fail(err, errlen, "%s: tensor '%s': no data", path, t->name);
            goto done;
        }
    }
    /* sorted by name, duplicates are neighbours; then into the layout order */
    qsort(slots, n, sizeof *slots, st__cmp_wname);
    for (size_t i = 1; i < n; i++)
        if (strcmp(slots[i - 1].t->name, slots[i].t->name) == 0) {
            st__fail(err, errlen, "%s: tensor '%s' given twice", path, slots[i].t->name);
            goto done;
        }
    qsort(slots, n, sizeof *slots, st__cmp_layout);
    for (size_t i = 0; i < n_meta; i++)
        if (!meta_keys[i] || !meta_values[i] || !st__utf8_ok(meta_keys[i]) || !st__utf8_ok(meta_values[i])) {
            st__fail(err, errlen, "%s: metadata entry #%zu is missing or not valid UTF-8", path, i);
            goto done;
        }
    uint64_t off = 0;
    st__puts(&h, "{");
    int first = 1;
    if (n_meta) {
        st__puts(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) st__puts(&h, ",");
            st__putq(&h, meta_keys[i]);
            st__puts(&h, ":");
            st__putq(&h, meta_values[i]);
        }
        st__puts(&h, "}");
        first = 0;
    }
    for (size_t i = 0; i < n; i++) {
        const st_write_tensor *t = slots[i].t;
        char num[64];
        if (!first) st__puts(&h, ",");
        first = 0;
        st__putq(&h, t->name);
        st__puts(&h, ":{\"dtype\":\"");
        st__puts(&h, st_dtype_name(t->dtype));
        st__puts(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            st__puts(&h, num);
        }
        slots[i].begin = off;
        off += slots[i].bytes;
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)slots[i].begin,
                 (unsigned long long)off);
        st__puts(&h, num);
    }
    st__puts(&h, "}");
    while (h.n % 8) st__puts(&h, " ");
    if (h.oom) { st__fail(err, errlen, "%s: out of memory", path); goto done; }

    tmp = (char *)malloc(strlen(path) + 16);
    if (!tmp) { st__fail(err, errlen, "%s: out of memory", path); goto done; }
    sprintf(tmp, "%s.tmp%ld", path, (long)getpid());
    fp = fopen(tmp, "wb");
    if (!fp) { st__fail(err, errlen, "%s: cannot write: %s", path, strerror(errno)); goto done; }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    if (st__write_all(fp, len8, 8) || st__write_all(fp, h.s, h.n)) goto werr;
    for (size_t i = 0; i < n; i++)
        if (st__write_all(fp, slots[i].t->data, (size_t)slots[i].bytes)) goto werr;
    if (fclose(fp) != 0) { fp = NULL; goto werr; }
    fp = NULL;
    if (rename(tmp, path) != 0) goto werr;
    rc = 0;
    goto done;
werr:
    st__fail(err, errlen, "%s: write failed: %s", path, strerror(errno));
    if (fp) fclose(fp);
    fp = NULL;
    remove(tmp);
done:
    if (fp) { fclose(fp); remove(tmp); }
    free(tmp);
    free(h.s);
    free(slots);
    return rc;
}

#endif /* SAFETENSORS_IMPLEMENTED */
#endif /* SAFETENSORS_IMPLEMENTATION */
