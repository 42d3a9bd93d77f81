/* checkpoint.c - .safetensors and PyTorch zip checkpoints into mw_tensor (see checkpoint.h).
 *
 * Pieces, in file order:
 *   the mapping   a reference-counted holder of the file's bytes (an mmap, or caller memory);
 *                 every storage wrapping those bytes holds one reference, so the map goes away
 *                 with the last tensor.
 *   conversion    file dtypes into mw dtypes (zero-copy where possible).
 *   safetensors   through vendor/safetensors.h.
 *   zip           the end-of-central-directory record (zip64 too), the central directory, local
 *                 headers; stored entries only.
 *   pickle        a restricted pickle machine: values live in an arena freed at the end; the
 *                 memo holds references (a dict memoized and then filled by SETITEMS is the same
 *                 object everywhere); REDUCE runs only our own re-implementations of the allowed
 *                 torch globals.
 *   flattening    the unpickled dict into (dotted name, tensor) pairs.
 */
#define SAFETENSORS_IMPLEMENTATION
#include "safetensors.h"

#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ================================================================ the mapping */

typedef struct ck_map {
    int64_t refs;
    void *map;                 /* mmap base, or NULL for caller memory */
    size_t map_size;
    const unsigned char *bytes;
    size_t size;
} ck_map;

static void ck_map_unref(ck_map *m) {
    if (!m || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    if (m->map) munmap(m->map, m->map_size);
    free(m);
}

static void ck_storage_release(mw_storage *s) { ck_map_unref((ck_map *)s->owner); }

/* a storage of numel elements of dt viewing bytes inside m (one more reference on m) */
static mw_storage *ck_wrap(ck_map *m, mw_dtype dt, int64_t numel, const void *p) {
    mw_storage *s = mw_storage_wrap(dt, numel, (void *)p, ck_storage_release, m);
    if (s) __atomic_add_fetch(&m->refs, 1, __ATOMIC_ACQ_REL);
    return s;
}

/* opens and maps path; MW_CKPT_NOFILE when it cannot be opened */
static int ck_map_file(ck_map **out, const char *path) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        mw_seterr("%s: cannot open: %s", path, strerror(errno));
        return MW_CKPT_NOFILE;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        mw_seterr("%s: cannot open: %s", path, strerror(e));
        return MW_CKPT_NOFILE;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        mw_seterr("%s: cannot open: %s", path, S_ISDIR(sb.st_mode) ? "is a directory" : "not a regular file");
        return MW_CKPT_NOFILE;
    }
    ck_map *m = calloc(1, sizeof *m);
    if (!m) {
        close(fd);
        return mw_seterr("%s: out of memory", path);
    }
    m->refs = 1;
    m->size = (size_t)sb.st_size;
    if (m->size) {
        /* writable but private (copy-on-write): tensors viewing the map may be changed in place
         * (x:add_(1)) without touching the file and without a fault */
        void *p = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(m);
            return mw_seterr("%s: cannot map: %s", path, strerror(e));
        }
        m->map = p;
        m->map_size = m->size;
        m->bytes = p;
    } else {
        m->bytes = (const unsigned char *)"";
    }
    close(fd);
    *out = m;
    return 0;
}

/* ================================================================ state dict bookkeeping */

void mw_state_dict_free(mw_state_dict *sd) {
    if (!sd) return;
    for (int i = 0; i < sd->n; i++) {
        free(sd->items[i].name);
        mw_tensor_release(&sd->items[i].t);
    }
    free(sd->items);
    for (int i = 0; i < sd->n_meta; i++) {
        free(sd->meta_keys[i]);
        free(sd->meta_values[i]);
    }
    free(sd->meta_keys);
    free(sd->meta_values);
    memset(sd, 0, sizeof *sd);
}

const mw_tensor *mw_state_dict_get(const mw_state_dict *sd, const char *name) {
    for (int i = 0; i < sd->n; i++)
        if (strcmp(sd->items[i].name, name) == 0) return &sd->items[i].t;
    return NULL;
}

/* appends (a copy of name, t with one more reference) */
static int sd_push(mw_state_dict *sd, int *cap, const char *name, size_t name_len, const mw_tensor *t) {
    if (sd->n == *cap) {
        int nc = *cap ? *cap * 2 : 32;
        mw_named_tensor *p = realloc(sd->items, (size_t)nc * sizeof *p);
        if (!p) return mw_seterr("out of memory");
        sd->items = p;
        *cap = nc;
    }
    char *nm = malloc(name_len + 1);
    if (!nm) return mw_seterr("out of memory");
    memcpy(nm, name, name_len);
    nm[name_len] = 0;
    sd->items[sd->n].name = nm;
    mw_tensor_share(&sd->items[sd->n].t, t);
    sd->n++;
    return 0;
}

static int cmp_named(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int sd_check_unique(const mw_state_dict *sd, const char *file) {
    if (sd->n < 2) return 0;
    char **names = malloc((size_t)sd->n * sizeof *names);
    if (!names) return mw_seterr("%s: out of memory", file);
    for (int i = 0; i < sd->n; i++) names[i] = sd->items[i].name;
    qsort(names, (size_t)sd->n, sizeof *names, cmp_named);
    for (int i = 1; i < sd->n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) {
            mw_seterr("%s: tensor '%s' appears twice", file, names[i]);
            free(names);
            return -1;
        }
    free(names);
    return 0;
}

/* ================================================================ dtype conversion */

/* file element types, whatever the container */
typedef enum { FT_F32, FT_F64, FT_F16, FT_BF16, FT_I64, FT_I32, FT_I16, FT_I8, FT_U8, FT_U16, FT_U32,
               FT_U64, FT_BOOL } ck_ftype;
static const int ft_size[] = {4, 8, 2, 2, 8, 4, 2, 1, 1, 2, 4, 8, 1};
static const char *const ft_name[] = {"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16",
                                      "int8", "uint8", "uint16", "uint32", "uint64", "bool"};

static mw_dtype ft_target(ck_ftype ft) {
    switch (ft) {
    case FT_F32: case FT_F64: case FT_F16: case FT_BF16: return MW_F32;
    case FT_BOOL: return MW_BOOL;
    default: return MW_I64;
    }
}

/* A storage of numel elements of file type ft at p (inside m), as miwb's dtype: a view of the map
 * when the bytes already are that dtype and aligned, else a converted copy. what names the tensor
 * or storage in messages. */
static mw_storage *ck_storage(ck_map *m, ck_ftype ft, int64_t numel, const unsigned char *p,
                              const char *file, const char *what) {
    mw_dtype dt = ft_target(ft);
    size_t es = (size_t)ft_size[ft];
    if (ft == FT_BOOL) {
        for (int64_t i = 0; i < numel; i++)
            if (p[i] > 1) {
                mw_seterr("%s: %s: bool element %lld holds byte %d (not 0 or 1)", file, what, (long long)i, p[i]);
                return NULL;
            }
        return ck_wrap(m, dt, numel, numel ? p : NULL);
    }
    if ((ft == FT_F32 || ft == FT_I64) && ((uintptr_t)p % es) == 0)
        return ck_wrap(m, dt, numel, numel ? p : NULL);
    mw_storage *s = mw_storage_new(dt, numel);
    if (!s) {
        mw_seterr("%s: %s: cannot allocate %lld elements: %s", file, what, (long long)numel, mw_error());
        return NULL;
    }
    float *f = s->data;
    int64_t *q = s->data;
    for (int64_t i = 0; i < numel; i++) {
        const unsigned char *e = p + (size_t)i * es;
        union { float f32; double f64; int64_t i64; int32_t i32; int16_t i16; int8_t i8; uint8_t u8;
                uint16_t u16; uint32_t u32; uint64_t u64; } u;
        memcpy(&u, e, es); /* unaligned-safe */
        switch (ft) {
        case FT_F32: f[i] = u.f32; break;
        case FT_F64: f[i] = (float)u.f64; break;
        case FT_F16: f[i] = st_f16_to_f32(u.u16); break;
        case FT_BF16: f[i] = st_bf16_to_f32(u.u16); break;
        case FT_I64: q[i] = u.i64; break;
        case FT_I32: q[i] = u.i32; break;
        case FT_I16: q[i] = u.i16; break;
        case FT_I8: q[i] = u.i8; break;
        case FT_U8: q[i] = u.u8; break;
        case FT_U16: q[i] = u.u16; break;
        case FT_U32: q[i] = u.u32; break;
        case FT_U64:
            if (u.u64 > (uint64_t)INT64_MAX) {
                mw_seterr("%s: %s: uint64 element %lld = %llu does not fit int64", file, what, (long long)i,
                          (unsigned long long)u.u64);
                mw_storage_release(s);
                return NULL;
            }
            q[i] = (int64_t)u.u64;
            break;
        case FT_BOOL: break;
        }
    }
    return s;
}

/* ================================================================ safetensors */

static int load_safetensors(mw_state_dict *out, ck_map *m, const char *file) {
    st_file f;
    char err[512];
    if (st_open_memory(&f, m->bytes, m->size, file, err, sizeof err) != 0) return mw_seterr("%s", err);
    int cap = 0, rc = 0;
    for (size_t i = 0; i < f.n_tensors && rc == 0; i++) {
        const st_tensor *t = &f.tensors[i];
        static const ck_ftype from_st[ST_NDTYPES] = {
            [ST_F64] = FT_F64, [ST_F32] = FT_F32, [ST_F16] = FT_F16, [ST_BF16] = FT_BF16, [ST_I64] = FT_I64,
            [ST_I32] = FT_I32, [ST_I16] = FT_I16, [ST_I8] = FT_I8, [ST_U64] = FT_U64, [ST_U32] = FT_U32,
            [ST_U16] = FT_U16, [ST_U8] = FT_U8, [ST_BOOL] = FT_BOOL};
        if (t->ndim > MW_MAXDIM) {
            rc = mw_seterr("%s: tensor '%s': %d dims, more than miwb's %d", file, t->name, t->ndim, MW_MAXDIM);
            break;
        }
        char what[300];
        snprintf(what, sizeof what, "tensor '%s'", t->name);
        mw_storage *s = ck_storage(m, from_st[t->dtype], t->numel, t->data, file, what);
        if (!s) { rc = -1; break; }
        mw_tensor x = {.storage = s, .dtype = s->dtype, .ndim = t->ndim};
        int64_t stride = 1;
        for (int d = t->ndim - 1; d >= 0; d--) {
            x.shape[d] = t->shape[d];
            x.stride[d] = stride;
            stride *= t->shape[d] ? t->shape[d] : 1;
        }
        rc = sd_push(out, &cap, t->name, strlen(t->name), &x);
        mw_tensor_release(&x); /* sd_push took its own reference */
    }
    if (rc == 0 && f.n_metadata) {
        out->meta_keys = calloc(f.n_metadata, sizeof(char *));
        out->meta_values = calloc(f.n_metadata, sizeof(char *));
        if (!out->meta_keys || !out->meta_values) rc = mw_seterr("%s: out of memory", file);
        for (size_t i = 0; rc == 0 && i < f.n_metadata; i++) {
            out->meta_keys[i] = strdup(f.metadata[i].key);
            out->meta_values[i] = strdup(f.metadata[i].value);
            out->n_meta++;
            if (!out->meta_keys[i] || !out->meta_values[i]) rc = mw_seterr("%s: out of memory", file);
        }
    }
    st_close(&f);
    out->format = "safetensors";
    return rc;
}

/* ================================================================ zip */

typedef struct zip_entry {
    const char *name;          /* not NUL-terminated: name_len bytes inside the file */
    size_t name_len;
    uint64_t data_off;         /* of the entry's bytes in the file */
    uint64_t size;             /* compressed == uncompressed for stored entries */
    int method, flags;
} zip_entry;

static uint64_t rd16(const unsigned char *p) { return (uint64_t)p[0] | (uint64_t)p[1] << 8; }
static uint64_t rd32(const unsigned char *p) { return rd16(p) | rd16(p + 2) << 16; }
static uint64_t rd64(const unsigned char *p) { return rd32(p) | rd32(p + 4) << 32; }

/* the entries of the zip in b[0, n): central directory, with each local header checked */
static int zip_read(const unsigned char *b, size_t n, const char *file, zip_entry **out, size_t *count) {
    *out = NULL;
    *count = 0;
    if (n < 22) return mw_seterr("%s: truncated zip archive (%zu bytes)", file, n);
    /* the end-of-central-directory record: 22 bytes + a comment of at most 65535 */
    size_t eocd = (size_t)-1;
    size_t lo = n - 22 > 65535 ? n - 22 - 65535 : 0;
    for (size_t i = n - 22 + 1; i-- > lo;)
        if (rd32(b + i) == 0x06054b50) { eocd = i; break; }
    if (eocd == (size_t)-1)
        return mw_seterr("%s: zip end-of-central-directory record not found (truncated file?)", file);
    uint64_t entries = rd16(b + eocd + 10), cd_size = rd32(b + eocd + 12), cd_off = rd32(b + eocd + 16);
    if (entries == 0xffff || cd_size == 0xffffffff || cd_off == 0xffffffff) {
        /* zip64: a locator just before the record points at the zip64 end record */
        if (eocd < 20 || rd32(b + eocd - 20) != 0x07064b50)
            return mw_seterr("%s: zip64 locator missing", file);
        uint64_t z = rd64(b + eocd - 20 + 8);
        if (z > n || n - z < 56 || rd32(b + z) != 0x06064b50)
            return mw_seterr("%s: zip64 end-of-central-directory record out of range", file);
        entries = rd64(b + z + 32);
        cd_size = rd64(b + z + 40);
        cd_off = rd64(b + z + 48);
    }
    if (cd_off > n || cd_size > n - cd_off)
        return mw_seterr("%s: zip central directory [%llu, +%llu) lies outside the file (%zu bytes)", file,
                         (unsigned long long)cd_off, (unsigned long long)cd_size, n);
    if (entries > cd_size / 46)
        return mw_seterr("%s: zip claims %llu entries in a %llu-byte central directory", file,
                         (unsigned long long)entries, (unsigned long long)cd_size);
    zip_entry *es = calloc(entries ? entries : 1, sizeof *es);
    if (!es) return mw_seterr("%s: out of memory", file);
    const unsigned char *p = b + cd_off, *end = b + cd_off + cd_size;
    for (uint64_t k = 0; k < entries; k++) {
        if (end - p < 46 || rd32(p) != 0x02014b50) {
            free(es);
            return mw_seterr("%s: zip central directory entry %llu is malformed", file, (unsigned long long)k);
        }
        uint64_t flags = rd16(p + 8), method = rd16(p + 10), csize = rd32(p + 20), usize = rd32(p + 24);
        uint64_t nlen = rd16(p + 28), xlen = rd16(p + 30), clen = rd16(p + 32), lho = rd32(p + 42);
        if ((uint64_t)(end - p) < 46 + nlen + xlen + clen) {
            free(es);
            return mw_seterr("%s: zip central directory entry %llu runs past the directory", file,
                             (unsigned long long)k);
        }
        /* zip64 extra field (id 1): 8-byte values for the fields that hold 0xffffffff, in order */
        const unsigned char *x = p + 46 + nlen, *xe = x + xlen;
        while (xe - x >= 4) {
            uint64_t id = rd16(x), sz = rd16(x + 2);
            if ((uint64_t)(xe - x - 4) < sz) break;
            if (id == 1) {
                const unsigned char *v = x + 4, *ve = v + sz;
                if (usize == 0xffffffff && ve - v >= 8) { usize = rd64(v); v += 8; }
                if (csize == 0xffffffff && ve - v >= 8) { csize = rd64(v); v += 8; }
                if (lho == 0xffffffff && ve - v >= 8) { lho = rd64(v); v += 8; }
            }
            x += 4 + sz;
        }
        const char *nm = (const char *)p + 46; /* for messages: es is freed before they are made */
        zip_entry *e = &es[k];
        e->name = nm;
        e->name_len = nlen;
        e->method = (int)method;
        e->flags = (int)flags;
        e->size = csize;
        if (method == 0 && csize != usize) {
            free(es);
            return mw_seterr("%s: zip entry '%.*s': stored with sizes %llu and %llu", file, (int)nlen, nm,
                             (unsigned long long)csize, (unsigned long long)usize);
        }
        if (lho > n || n - lho < 30 || rd32(b + lho) != 0x04034b50) {
            free(es);
            return mw_seterr("%s: zip entry '%.*s': local header at %llu is missing or outside the file", file,
                             (int)nlen, nm, (unsigned long long)lho);
        }
        uint64_t doff = lho + 30 + rd16(b + lho + 26) + rd16(b + lho + 28);
        if (doff > n || csize > n - doff) {
            free(es);
            return mw_seterr("%s: zip entry '%.*s': %llu bytes at %llu run past the end of the file (%zu bytes)",
                             file, (int)nlen, nm, (unsigned long long)csize, (unsigned long long)doff, n);
        }
        e->data_off = doff;
        p += 46 + nlen + xlen + clen;
    }
    *out = es;
    *count = entries;
    return 0;
}

static const zip_entry *zip_find(const zip_entry *es, size_t n, const char *prefix, size_t plen,
                                 const char *suffix, size_t slen) {
    for (size_t i = 0; i < n; i++)
        if (es[i].name_len == plen + slen && memcmp(es[i].name, prefix, plen) == 0 &&
            memcmp(es[i].name + plen, suffix, slen) == 0)
            return &es[i];
    return NULL;
}

/* ================================================================ the pickle machine */

typedef enum { PV_NONE, PV_BOOL, PV_INT, PV_FLOAT, PV_STR, PV_TUPLE, PV_LIST, PV_DICT, PV_GLOBAL,
               PV_STORAGE, PV_TENSOR } pv_kind;
static const char *const pv_kind_name[] = {"None", "bool", "int", "float", "str", "tuple", "list", "dict",
                                           "global", "storage", "tensor"};

/* the only globals a checkpoint may name */
typedef enum { G_ODICT, G_REBUILD_TENSOR, G_REBUILD_PARAM, G_REBUILD_PARAM_STATE, G_STORAGE } pg_kind;
static const struct { const char *module, *name; pg_kind kind; ck_ftype ft; } allowed[] = {
    {"collections", "OrderedDict", G_ODICT, 0},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR, 0},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAM, 0},
    {"torch._utils", "_rebuild_parameter_with_state", G_REBUILD_PARAM_STATE, 0},
    {"torch", "FloatStorage", G_STORAGE, FT_F32},
    {"torch", "DoubleStorage", G_STORAGE, FT_F64},
    {"torch", "HalfStorage", G_STORAGE, FT_F16},
    {"torch", "BFloat16Storage", G_STORAGE, FT_BF16},
    {"torch", "LongStorage", G_STORAGE, FT_I64},
    {"torch", "IntStorage", G_STORAGE, FT_I32},
    {"torch", "ShortStorage", G_STORAGE, FT_I16},
    {"torch", "CharStorage", G_STORAGE, FT_I8},
    {"torch", "ByteStorage", G_STORAGE, FT_U8},
    {"torch", "BoolStorage", G_STORAGE, FT_BOOL},
};
#define N_ALLOWED ((int)(sizeof allowed / sizeof allowed[0]))

typedef struct pv pv;
struct pv {
    pv_kind kind;
    union {
        int64_t i;                               /* BOOL, INT */
        double f;                                /* FLOAT */
        struct { const char *s; size_t n; } str; /* STR: bytes inside the pickle, not copied */
        struct { pv **v; size_t n, cap; } seq;   /* TUPLE, LIST; DICT: key, value, key, value, ... */
        int global;                              /* GLOBAL: index into allowed[] */
        struct { ck_ftype ft; const zip_entry *entry; int64_t numel; mw_storage *st; } storage;
        mw_tensor t;                             /* TENSOR: one reference, dropped with the arena */
    } u;
};

/* limits beyond those the pickle's length implies */
#define PK_MAX_DEPTH 64   /* nesting of dicts/lists when flattening */

typedef struct pk {
    const char *file;
    const unsigned char *p, *start, *end;    /* the pickle bytes */
    ck_map *map;
    const zip_entry *entries;
    size_t n_entries;
    const char *prefix;                      /* "archive" in "archive/data.pkl" */
    size_t plen;
    pv **arena;                              /* every value allocated, freed at the end */
    size_t n_arena, cap_arena;
    pv **stack;
    size_t sp, cap_stack;
    size_t *marks;                           /* stack heights at each MARK */
    size_t n_marks, cap_marks;
    pv **memo;                               /* index -> value (NULL: unset) */
    size_t cap_memo;
    size_t n_memo;                           /* for MEMOIZE: next index */
    pv **storages;                           /* the PV_STORAGE values, one per archive entry */
    size_t n_storages, cap_storages;
    size_t n_edges, visits;                  /* flattening budget: see flatten() */
    int op;                                  /* current opcode, offset, for messages */
    size_t op_at;
    pv none;                                 /* the shared None/True/False */
    pv true_, false_;
} pk;

static int pk_err(pk *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int pk_err(pk *k, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char opname[8];
    if (k->op >= 0x21 && k->op < 0x7f) snprintf(opname, sizeof opname, "'%c'", k->op);
    else snprintf(opname, sizeof opname, "0x%02x", k->op);
    return mw_seterr("%s: %.*s/data.pkl: opcode %s at byte %zu: %s", k->file, (int)k->plen, k->prefix, opname,
                     k->op_at, msg);
}

static int grow(void **arr, size_t *cap, size_t need, size_t elt) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2;
    void *p = realloc(*arr, nc * elt);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

static pv *pv_new(pk *k, pv_kind kind) {
    if (grow((void **)&k->arena, &k->cap_arena, k->n_arena + 1, sizeof(pv *))) return NULL;
    pv *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    k->arena[k->n_arena++] = v;
    return v;
}

static int push(pk *k, pv *v) {
    if (!v) return pk_err(k, "out of memory");
    if (grow((void **)&k->stack, &k->cap_stack, k->sp + 1, sizeof(pv *))) return pk_err(k, "out of memory");
    k->stack[k->sp++] = v;
    return 0;
}

/* the stack floor: values below the last MARK are not visible to plain pops */
static size_t floor_(pk *k) { return k->n_marks ? k->marks[k->n_marks - 1] : 0; }

static pv *pop(pk *k) {
    if (k->sp <= floor_(k)) { pk_err(k, "stack underflow"); return NULL; }
    return k->stack[--k->sp];
}

static pv *top(pk *k) {
    if (k->sp <= floor_(k)) { pk_err(k, "stack underflow"); return NULL; }
    return k->stack[k->sp - 1];
}

/* pops to the last MARK: *base receives the index of the first value above it */
static int pop_mark(pk *k, size_t *base) {
    if (!k->n_marks) return pk_err(k, "no MARK on the stack");
    *base = k->marks[--k->n_marks];
    return 0;
}

static int seq_add(pk *k, pv *s, pv *v) {
    if (grow((void **)&s->u.seq.v, &s->u.seq.cap, s->u.seq.n + 1, sizeof(pv *))) return pk_err(k, "out of memory");
    s->u.seq.v[s->u.seq.n++] = v;
    k->n_edges++;
    return 0;
}

static int need(pk *k, size_t n) {
    if ((size_t)(k->end - k->p) < n) return pk_err(k, "truncated pickle: %zu more bytes expected, %zu left", n,
                                                   (size_t)(k->end - k->p));
    return 0;
}

static int memo_put(pk *k, uint64_t idx, pv *v) {
    /* valid pickles number memo entries from 0 upward, one per object: no index can exceed the
     * pickle's length; a larger one is a lie that would otherwise cost memory */
    if (idx > (uint64_t)(k->end - k->start)) return pk_err(k, "memo index %llu out of range", (unsigned long long)idx);
    if (idx >= k->cap_memo) {
        size_t old = k->cap_memo;
        if (grow((void **)&k->memo, &k->cap_memo, (size_t)idx + 1, sizeof(pv *))) return pk_err(k, "out of memory");
        memset(k->memo + old, 0, (k->cap_memo - old) * sizeof(pv *));
    }
    k->memo[idx] = v;
    return 0;
}

static int memo_get(pk *k, uint64_t idx) {
    if (idx >= k->cap_memo || !k->memo[idx]) return pk_err(k, "memo index %llu was never stored", (unsigned long long)idx);
    return push(k, k->memo[idx]);
}

static int str_is(const pv *v, const char *s) {
    return v->kind == PV_STR && v->u.str.n == strlen(s) && memcmp(v->u.str.s, s, v->u.str.n) == 0;
}

static int global_lookup(pk *k, const char *mod, size_t mlen, const char *name, size_t nlen) {
    for (int i = 0; i < N_ALLOWED; i++)
        if (strlen(allowed[i].module) == mlen && memcmp(allowed[i].module, mod, mlen) == 0 &&
            strlen(allowed[i].name) == nlen && memcmp(allowed[i].name, name, nlen) == 0) {
            pv *g = pv_new(k, PV_GLOBAL);
            if (!g) return pk_err(k, "out of memory");
            g->u.global = i;
            return push(k, g);
        }
    return pk_err(k, "forbidden global '%.*s.%.*s': only the globals that rebuild tensors are allowed "
                  "(miwb never runs code from a checkpoint)", (int)(mlen > 200 ? 200 : mlen), mod,
                  (int)(nlen > 200 ? 200 : nlen), name);
}

/* the name a tensor being rebuilt will get: the dict key just below the callable, if any */
static void tensor_label(pk *k, char *buf, size_t n) {
    snprintf(buf, n, "a tensor");
    if (k->sp >= 1) {
        pv *key = k->stack[k->sp - 1];
        if (key->kind == PV_STR) snprintf(buf, n, "tensor '%.*s'", (int)(key->u.str.n > 200 ? 200 : key->u.str.n), key->u.str.s);
    }
}

static int get_int_tuple(pk *k, pv *v, int64_t *out, int *n, const char *what, const char *label) {
    if (v->kind != PV_TUPLE) return pk_err(k, "%s: %s must be a tuple, got %s", label, what, pv_kind_name[v->kind]);
    if (v->u.seq.n > MW_MAXDIM) return pk_err(k, "%s: %zu dims, more than miwb's %d", label, v->u.seq.n, MW_MAXDIM);
    for (size_t i = 0; i < v->u.seq.n; i++) {
        pv *e = v->u.seq.v[i];
        if (e->kind != PV_INT || e->u.i < 0) return pk_err(k, "%s: %s must hold non-negative ints", label, what);
        out[i] = e->u.i;
    }
    *n = (int)v->u.seq.n;
    return 0;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) */
static int rebuild_tensor(pk *k, pv *args, const char *label) {
    if (args->u.seq.n != 6 && args->u.seq.n != 7)
        return pk_err(k, "%s: _rebuild_tensor_v2 takes 6 or 7 arguments, got %zu", label, args->u.seq.n);
    pv *sv = args->u.seq.v[0], *ov = args->u.seq.v[1];
    if (sv->kind != PV_STORAGE) return pk_err(k, "%s: first argument is a %s, not a storage", label, pv_kind_name[sv->kind]);
    if (ov->kind != PV_INT || ov->u.i < 0) return pk_err(k, "%s: storage offset must be a non-negative int", label);
    mw_tensor t = {0};
    int nd_size, nd_stride;
    if (get_int_tuple(k, args->u.seq.v[2], t.shape, &nd_size, "size", label) ||
        get_int_tuple(k, args->u.seq.v[3], t.stride, &nd_stride, "stride", label))
        return -1;
    if (nd_size != nd_stride) return pk_err(k, "%s: size has %d dims, stride %d", label, nd_size, nd_stride);
    t.ndim = nd_size;
    t.offset = ov->u.i;
    /* the last element reached must lie inside the storage */
    int64_t numel = 1, last = t.offset;
    for (int d = 0; d < t.ndim; d++) {
        int64_t ext;
        if (__builtin_mul_overflow(numel, t.shape[d], &numel)) return pk_err(k, "%s: shape too large", label);
        if (t.shape[d] > 0 && (__builtin_mul_overflow(t.shape[d] - 1, t.stride[d], &ext) ||
                               __builtin_add_overflow(last, ext, &last)))
            return pk_err(k, "%s: strides reach past any storage", label);
    }
    int64_t sn = sv->u.storage.numel;
    if (numel > 0 ? last >= sn : t.offset > sn) {
        char sh[200];
        mw_shape_str(sh, sizeof sh, t.ndim, t.shape);
        return pk_err(k, "%s: shape %s at offset %lld with its strides reaches element %lld of a %lld-element storage",
                      label, sh, (long long)t.offset, (long long)last, (long long)sn);
    }
    if (!sv->u.storage.st) {
        const zip_entry *e = sv->u.storage.entry;
        sv->u.storage.st = ck_storage(k->map, sv->u.storage.ft, sn, k->map->bytes + e->data_off, k->file, label);
        if (!sv->u.storage.st) return -1;
    }
    t.storage = sv->u.storage.st;
    t.dtype = t.storage->dtype;
    pv *tv = pv_new(k, PV_TENSOR);
    if (!tv) return pk_err(k, "out of memory");
    mw_tensor_share(&tv->u.t, &t);
    return push(k, tv);
}

/* ('storage', StorageClass, key, location, numel) */
static int persistent_load(pk *k, pv *pid) {
    if (pid->kind != PV_TUPLE || pid->u.seq.n != 5 || !str_is(pid->u.seq.v[0], "storage"))
        return pk_err(k, "persistent id is not ('storage', type, key, location, numel)");
    pv *ty = pid->u.seq.v[1], *key = pid->u.seq.v[2], *num = pid->u.seq.v[4];
    if (ty->kind != PV_GLOBAL || allowed[ty->u.global].kind != G_STORAGE)
        return pk_err(k, "persistent id: storage type is not a storage class");
    if (key->kind != PV_STR) return pk_err(k, "persistent id: storage key is not a string");
    if (num->kind != PV_INT || num->u.i < 0) return pk_err(k, "persistent id: element count is not a non-negative int");
    if (key->u.str.n == 0 || key->u.str.n > 200 || memchr(key->u.str.s, '/', key->u.str.n) ||
        memchr(key->u.str.s, 0, key->u.str.n))
        return pk_err(k, "persistent id: storage key of %zu bytes is not a plain name", key->u.str.n);
    char suffix[300];
    int sl = snprintf(suffix, sizeof suffix, "/data/%.*s", (int)key->u.str.n, key->u.str.s);
    const zip_entry *e = zip_find(k->entries, k->n_entries, k->prefix, k->plen, suffix, (size_t)sl);
    if (!e) return pk_err(k, "storage '%.*s' has no entry %.*s%s in the archive", (int)sl - 6, suffix + 6, (int)k->plen,
                          k->prefix, suffix);
    ck_ftype ft = allowed[ty->u.global].ft;
    if (e->method != 0 || (e->flags & 1))
        return pk_err(k, "storage '%s': archive entry is compressed or encrypted (method %d); torch writes "
                      "uncompressed entries: re-save the file with torch.save", suffix + 6, e->method);
    if ((uint64_t)num->u.i > e->size / (uint64_t)ft_size[ft])
        return pk_err(k, "storage '%s': %lld %s elements need %llu bytes, the archive entry has %llu", suffix + 6,
                      (long long)num->u.i, ft_name[ft], (unsigned long long)num->u.i * (unsigned long long)ft_size[ft],
                      (unsigned long long)e->size);
    /* one value per storage key, so that every view of a storage shares one mw_storage */
    for (size_t i = 0; i < k->n_storages; i++) {
        pv *o = k->storages[i];
        if (o->u.storage.entry == e) {
            if (o->u.storage.ft != ft || o->u.storage.numel != num->u.i)
                return pk_err(k, "storage '%s' is named with two different types or sizes", suffix + 6);
            return push(k, o);
        }
    }
    pv *s = pv_new(k, PV_STORAGE);
    if (!s) return pk_err(k, "out of memory");
    s->u.storage.ft = ft;
    s->u.storage.entry = e;
    s->u.storage.numel = num->u.i;
    if (grow((void **)&k->storages, &k->cap_storages, k->n_storages + 1, sizeof(pv *))) return pk_err(k, "out of memory");
    k->storages[k->n_storages++] = s;
    return push(k, s);
}

static int do_reduce(pk *k) {
    pv *args = pop(k), *fn;
    if (!args || !(fn = pop(k))) return -1;
    if (fn->kind != PV_GLOBAL) return pk_err(k, "REDUCE: cannot call a %s", pv_kind_name[fn->kind]);
    if (args->kind != PV_TUPLE) return pk_err(k, "REDUCE: arguments are a %s, not a tuple", pv_kind_name[args->kind]);
    char label[260];
    tensor_label(k, label, sizeof label);
    switch (allowed[fn->u.global].kind) {
    case G_ODICT:
        if (args->u.seq.n != 0) return pk_err(k, "OrderedDict called with arguments");
        return push(k, pv_new(k, PV_DICT));
    case G_REBUILD_TENSOR:
        return rebuild_tensor(k, args, label);
    case G_REBUILD_PARAM:
    case G_REBUILD_PARAM_STATE:
        /* (data, requires_grad, backward_hooks[, state]): the parameter is its data */
        if (args->u.seq.n < 3 || args->u.seq.n > 4 || args->u.seq.v[0]->kind != PV_TENSOR)
            return pk_err(k, "%s: _rebuild_parameter needs (tensor, requires_grad, hooks)", label);
        return push(k, args->u.seq.v[0]);
    case G_STORAGE:
        break;
    }
    return pk_err(k, "REDUCE: calling %s.%s is not allowed", allowed[fn->u.global].module, allowed[fn->u.global].name);
}

static int do_setitems(pk *k, size_t base) {
    /* stack: ... dict MARK k1 v1 k2 v2 ... (base = index of k1) */
    if ((k->sp - base) % 2) return pk_err(k, "SETITEMS with an odd number of values");
    if (base == 0 || base <= floor_(k)) return pk_err(k, "SETITEMS without a dict below the mark");
    pv *d = k->stack[base - 1];
    if (d->kind != PV_DICT) return pk_err(k, "SETITEMS on a %s", pv_kind_name[d->kind]);
    for (size_t i = base; i < k->sp; i++)
        if (seq_add(k, d, k->stack[i])) return -1;
    k->sp = base;
    return 0;
}

static int do_appends(pk *k, size_t base) {
    if (base == 0 || base <= floor_(k)) return pk_err(k, "APPENDS without a list below the mark");
    pv *l = k->stack[base - 1];
    if (l->kind != PV_LIST) return pk_err(k, "APPENDS on a %s", pv_kind_name[l->kind]);
    for (size_t i = base; i < k->sp; i++)
        if (seq_add(k, l, k->stack[i])) return -1;
    k->sp = base;
    return 0;
}

static int make_seq(pk *k, pv_kind kind, size_t base) {
    pv *t = pv_new(k, kind);
    if (!t) return pk_err(k, "out of memory");
    for (size_t i = base; i < k->sp; i++)
        if (seq_add(k, t, k->stack[i])) return -1;
    k->sp = base;
    return push(k, t);
}

static int read_str(pk *k, uint64_t n) {
    if (need(k, n)) return -1;
    pv *s = pv_new(k, PV_STR);
    if (!s) return pk_err(k, "out of memory");
    s->u.str.s = (const char *)k->p;
    s->u.str.n = (size_t)n;
    k->p += n;
    return push(k, s);
}

/* runs the pickle; on success *result is the value STOP returned */
static int pk_run(pk *k, pv **result) {
    k->none.kind = PV_NONE;
    k->true_.kind = PV_BOOL; k->true_.u.i = 1;
    k->false_.kind = PV_BOOL;
    for (;;) {
        k->op_at = (size_t)(k->p - k->start);
        k->op = -1;
        if (k->p >= k->end) return pk_err(k, "truncated pickle: no STOP opcode");
        int op = k->op = *k->p++;
        pv *v, *a, *b;
        size_t base = 0;
        switch (op) {
        case 0x80: /* PROTO */
            if (need(k, 1)) return -1;
            if (*k->p < 2 || *k->p > 5) return pk_err(k, "pickle protocol %d not supported", *k->p);
            k->p++;
            break;
        case 0x95: /* FRAME: an 8-byte length hint, nothing to do */
            if (need(k, 8)) return -1;
            k->p += 8;
            break;
        case '.': /* STOP */
            if (!(v = pop(k))) return -1;
            *result = v;
            return 0;
        case '(': /* MARK */
            if (grow((void **)&k->marks, &k->cap_marks, k->n_marks + 1, sizeof(size_t))) return pk_err(k, "out of memory");
            k->marks[k->n_marks++] = k->sp;
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const unsigned char *nl1 = memchr(k->p, '\n', (size_t)(k->end - k->p)), *nl2;
            if (!nl1 || !(nl2 = memchr(nl1 + 1, '\n', (size_t)(k->end - nl1 - 1))))
                return pk_err(k, "truncated GLOBAL");
            const char *mod = (const char *)k->p, *name = (const char *)nl1 + 1;
            k->p = nl2 + 1;
            if (global_lookup(k, mod, (size_t)((const char *)nl1 - mod), name, (size_t)((const char *)nl2 - name))) return -1;
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if (!(b = pop(k)) || !(a = pop(k))) return -1;
            if (a->kind != PV_STR || b->kind != PV_STR) return pk_err(k, "STACK_GLOBAL needs two strings");
            if (global_lookup(k, a->u.str.s, a->u.str.n, b->u.str.s, b->u.str.n)) return -1;
            break;
        case 'q': /* BINPUT */
            if (need(k, 1) || !(v = top(k))) return -1;
            if (memo_put(k, *k->p++, v)) return -1;
            break;
        case 'r': /* LONG_BINPUT */
            if (need(k, 4) || !(v = top(k))) return -1;
            if (memo_put(k, rd32(k->p), v)) return -1;
            k->p += 4;
            break;
        case 0x94: /* MEMOIZE */
            if (!(v = top(k)) || memo_put(k, k->n_memo++, v)) return -1;
            break;
        case 'h': /* BINGET */
            if (need(k, 1) || memo_get(k, *k->p++)) return -1;
            break;
        case 'j': /* LONG_BINGET */
            if (need(k, 4) || memo_get(k, rd32(k->p))) return -1;
            k->p += 4;
            break;
        case '}': /* EMPTY_DICT */
            if (push(k, pv_new(k, PV_DICT))) return -1;
            break;
        case ']': /* EMPTY_LIST */
            if (push(k, pv_new(k, PV_LIST))) return -1;
            break;
        case ')': /* EMPTY_TUPLE */
            if (push(k, pv_new(k, PV_TUPLE))) return -1;
            break;
        case 'd': /* DICT */
            if (pop_mark(k, &base)) return -1;
            if ((k->sp - base) % 2) return pk_err(k, "DICT with an odd number of values");
            if (make_seq(k, PV_DICT, base)) return -1;
            break;
        case 'l': /* LIST */
            if (pop_mark(k, &base) || make_seq(k, PV_LIST, base)) return -1;
            break;
        case 't': /* TUPLE */
            if (pop_mark(k, &base) || make_seq(k, PV_TUPLE, base)) return -1;
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1, TUPLE2, TUPLE3 */
            size_t n = (size_t)(op - 0x84);
            if (k->sp < floor_(k) + n) return pk_err(k, "stack underflow");
            if (make_seq(k, PV_TUPLE, k->sp - n)) return -1;
            break;
        }
        case 's': /* SETITEM */
            if (k->sp < floor_(k) + 3) return pk_err(k, "stack underflow");
            if (do_setitems(k, k->sp - 2)) return -1;
            break;
        case 'u': /* SETITEMS */
            if (pop_mark(k, &base) || do_setitems(k, base)) return -1;
            break;
        case 'a': /* APPEND */
            if (k->sp < floor_(k) + 2) return pk_err(k, "stack underflow");
            if (do_appends(k, k->sp - 1)) return -1;
            break;
        case 'e': /* APPENDS */
            if (pop_mark(k, &base) || do_appends(k, base)) return -1;
            break;
        case '0': /* POP */
            if (!pop(k)) return -1;
            break;
        case '1': /* POP_MARK */
            if (pop_mark(k, &base)) return -1;
            k->sp = base;
            break;
        case '2': /* DUP */
            if (!(v = top(k)) || push(k, v)) return -1;
            break;
        case 'J': /* BININT: 4-byte signed */
            if (need(k, 4)) return -1;
            if (!(v = pv_new(k, PV_INT))) return pk_err(k, "out of memory");
            v->u.i = (int32_t)rd32(k->p);
            k->p += 4;
            if (push(k, v)) return -1;
            break;
        case 'K': /* BININT1 */
            if (need(k, 1)) return -1;
            if (!(v = pv_new(k, PV_INT))) return pk_err(k, "out of memory");
            v->u.i = *k->p++;
            if (push(k, v)) return -1;
            break;
        case 'M': /* BININT2 */
            if (need(k, 2)) return -1;
            if (!(v = pv_new(k, PV_INT))) return pk_err(k, "out of memory");
            v->u.i = (int64_t)rd16(k->p);
            k->p += 2;
            if (push(k, v)) return -1;
            break;
        case 0x8a: { /* LONG1: n bytes, little-endian two's complement */
            if (need(k, 1)) return -1;
            size_t n = *k->p++;
            if (need(k, n)) return -1;
            if (n > 8) return pk_err(k, "integer of %zu bytes does not fit int64", n);
            uint64_t u = 0;
            for (size_t i = 0; i < n; i++) u |= (uint64_t)k->p[i] << (8 * i);
            if (n && n < 8 && (k->p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
            k->p += n;
            if (!(v = pv_new(k, PV_INT))) return pk_err(k, "out of memory");
            memcpy(&v->u.i, &u, 8);
            if (push(k, v)) return -1;
            break;
        }
        case 'G': { /* BINFLOAT: 8-byte big-endian double */
            if (need(k, 8)) return -1;
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = (u << 8) | k->p[i];
            k->p += 8;
            if (!(v = pv_new(k, PV_FLOAT))) return pk_err(k, "out of memory");
            memcpy(&v->u.f, &u, 8);
            if (push(k, v)) return -1;
            break;
        }
        case 'X': /* BINUNICODE: 4-byte length */
        case 'B': /* BINBYTES (kept as a string: never used as a name) */
            if (need(k, 4)) return -1;
            k->p += 4;
            if (read_str(k, rd32(k->p - 4))) return -1;
            break;
        case 0x8c: /* SHORT_BINUNICODE */
        case 'C':  /* SHORT_BINBYTES */
            if (need(k, 1)) return -1;
            k->p++;
            if (read_str(k, k->p[-1])) return -1;
            break;
        case 0x8d: /* BINUNICODE8 */
        case 0x8e: /* BINBYTES8 */
            if (need(k, 8)) return -1;
            k->p += 8;
            if (read_str(k, rd64(k->p - 8))) return -1;
            break;
        case 0x88: if (push(k, &k->true_)) return -1; break;  /* NEWTRUE */
        case 0x89: if (push(k, &k->false_)) return -1; break; /* NEWFALSE */
        case 'N': if (push(k, &k->none)) return -1; break;    /* NONE */
        case 'R': /* REDUCE */
            if (do_reduce(k)) return -1;
            break;
        case 'Q': /* BINPERSID */
            if (!(v = pop(k)) || persistent_load(k, v)) return -1;
            break;
        case 'b': /* BUILD: state for an OrderedDict (its _metadata) or a tensor; nothing to keep */
            if (!(b = pop(k)) || !(a = top(k))) return -1;
            if (a->kind != PV_DICT && a->kind != PV_TENSOR)
                return pk_err(k, "BUILD on a %s is not allowed", pv_kind_name[a->kind]);
            break;
        default:
            return pk_err(k, "opcode not allowed in a checkpoint");
        }
    }
}

/* ================================================================ flattening */

typedef struct { char *buf; size_t n, cap; } namebuf;

/* Walks v depth-first, naming tensors by their path. The memo lets a pickle refer to one dict from
 * many places (a DAG whose walk could take 2^depth steps), so the walk may visit at most as many
 * values as the pickle holds references, plus one: a tree-shaped state dict never needs more. */
static int flatten(pk *k, mw_state_dict *out, int *cap, pv *v, namebuf *nb, int depth) {
    if (++k->visits > k->n_edges + 1)
        return mw_seterr("%s: the pickle refers to shared dicts or lists more often than it holds values", k->file);
    if (depth > PK_MAX_DEPTH)
        return mw_seterr("%s: nesting deeper than %d at '%.*s' (a cycle?)", k->file, PK_MAX_DEPTH, (int)nb->n, nb->buf);
    if (v->kind == PV_TENSOR) {
        if (memchr(nb->buf, 0, nb->n)) return mw_seterr("%s: a tensor name contains a NUL byte", k->file);
        if (nb->n == 0) return mw_seterr("%s: a tensor has an empty name", k->file);
        return sd_push(out, cap, nb->buf, nb->n, &v->u.t);
    }
    if (v->kind != PV_DICT && v->kind != PV_LIST && v->kind != PV_TUPLE) return 0; /* ints, strings, None */
    int dict = v->kind == PV_DICT;
    size_t step = dict ? 2 : 1, keep = nb->n;
    for (size_t i = 0; i < v->u.seq.n; i += step) {
        char idx[32];
        const char *part;
        size_t plen;
        if (dict) {
            pv *key = v->u.seq.v[i];
            if (key->kind == PV_STR) { part = key->u.str.s; plen = key->u.str.n; }
            else if (key->kind == PV_INT) { plen = (size_t)snprintf(idx, sizeof idx, "%lld", (long long)key->u.i); part = idx; }
            else continue; /* keys of other kinds cannot name a tensor */
        } else {
            plen = (size_t)snprintf(idx, sizeof idx, "%zu", i);
            part = idx;
        }
        if (grow((void **)&nb->buf, &nb->cap, keep + plen + 2, 1)) return mw_seterr("%s: out of memory", k->file);
        nb->n = keep;
        if (keep) nb->buf[nb->n++] = '.';
        memcpy(nb->buf + nb->n, part, plen);
        nb->n += plen;
        nb->buf[nb->n] = 0;
        if (flatten(k, out, cap, v->u.seq.v[i + step - 1], nb, depth + 1)) return -1;
    }
    nb->n = keep;
    return 0;
}

static void pk_free(pk *k) {
    for (size_t i = 0; i < k->n_arena; i++) {
        pv *v = k->arena[i];
        if (v->kind == PV_TENSOR) mw_tensor_release(&v->u.t);
        if (v->kind == PV_STORAGE && v->u.storage.st) mw_storage_release(v->u.storage.st);
        if (v->kind == PV_TUPLE || v->kind == PV_LIST || v->kind == PV_DICT) free(v->u.seq.v);
        free(v);
    }
    free(k->arena);
    free(k->stack);
    free(k->marks);
    free(k->memo);
    free(k->storages);
}

static int load_torch_zip(mw_state_dict *out, ck_map *m, const char *file) {
    zip_entry *es;
    size_t n;
    if (zip_read(m->bytes, m->size, file, &es, &n)) return -1;
    /* data.pkl sits in one top folder, named after the file when torch wrote it */
    const zip_entry *pkl = NULL;
    for (size_t i = 0; i < n && !pkl; i++) {
        const char *slash = memchr(es[i].name, '/', es[i].name_len);
        if (slash && es[i].name_len - (size_t)(slash - es[i].name) == 9 && memcmp(slash, "/data.pkl", 9) == 0)
            pkl = &es[i];
    }
    if (!pkl) {
        free(es);
        return mw_seterr("%s: a zip archive without data.pkl: not a PyTorch checkpoint", file);
    }
    pk k = {.file = file, .map = m, .entries = es, .n_entries = n, .prefix = pkl->name,
            .plen = pkl->name_len - 9};
    if (pkl->method != 0 || (pkl->flags & 1)) {
        int method = pkl->method;
        free(es);
        return mw_seterr("%s: data.pkl is compressed or encrypted (zip method %d); torch writes uncompressed "
                         "entries: re-save the file with torch.save", file, method);
    }
    const zip_entry *bo = zip_find(es, n, k.prefix, k.plen, "/byteorder", 10);
    if (bo && bo->method == 0 && bo->size == 3 && memcmp(m->bytes + bo->data_off, "big", 3) == 0) {
        free(es);
        return mw_seterr("%s: big-endian checkpoints are not supported", file);
    }
    k.start = k.p = m->bytes + pkl->data_off;
    k.end = k.start + pkl->size;
    pv *result = NULL;
    int rc = pk_run(&k, &result);
    if (rc == 0) {
        if (result->kind != PV_DICT) {
            rc = mw_seterr("%s: the checkpoint holds a %s, not a dict of tensors", file, pv_kind_name[result->kind]);
        } else {
            int cap = 0;
            namebuf nb = {0};
            rc = flatten(&k, out, &cap, result, &nb, 0);
            free(nb.buf);
            if (rc == 0) rc = sd_check_unique(out, file);
        }
    }
    pk_free(&k);
    free(es);
    out->format = "torch";
    return rc;
}

/* ================================================================ entry points */

static int load_any(mw_state_dict *out, ck_map *m, const char *file) {
    const unsigned char *b = m->bytes;
    size_t n = m->size;
    int rc;
    if (n >= 4 && b[0] == 'P' && b[1] == 'K' && ((b[2] == 3 && b[3] == 4) || (b[2] == 5 && b[3] == 6)))
        rc = load_torch_zip(out, m, file);
    /* safetensors before the pickle test: a header of 128 + 256k bytes starts with 0x80 too */
    else if (n >= 9 && b[8] == '{')
        rc = load_safetensors(out, m, file);
    else if (n >= 2 && b[0] == 0x80 && b[1] <= 5)
        rc = mw_seterr("%s: legacy torch format (a bare pickle, not a zip archive) is not supported; re-save it "
                       "with torch.save(obj, path, _use_new_zipfile_serialization=True)", file);
    else if (strlen(file) > 12 && strcmp(file + strlen(file) - 12, ".safetensors") == 0)
        rc = load_safetensors(out, m, file);
    else
        rc = mw_seterr("%s: neither a safetensors file nor a PyTorch zip checkpoint", file);
    if (rc) mw_state_dict_free(out);
    return rc;
}

int mw_checkpoint_load(mw_state_dict *out, const char *path) {
    memset(out, 0, sizeof *out);
    ck_map *m;
    int rc = ck_map_file(&m, path);
    if (rc) return rc;
    rc = load_any(out, m, path);
    ck_map_unref(m); /* the storages keep it mapped */
    return rc;
}

int mw_checkpoint_load_memory(mw_state_dict *out, const void *buf, size_t len, const char *name) {
    memset(out, 0, sizeof *out);
    ck_map *m = calloc(1, sizeof *m);
    if (!m) return mw_seterr("%s: out of memory", name);
    m->refs = 1;
    m->bytes = len ? buf : (const unsigned char *)"";
    m->size = len;
    int rc = load_any(out, m, name);
    ck_map_unref(m);
    return rc;
}

int mw_checkpoint_save(const char *path, int n, const char *const *names, const mw_tensor *const *ts,
                       int n_meta, const char *const *meta_keys, const char *const *meta_values) {
    if (n < 0 || n_meta < 0) return mw_seterr("%s: save: negative count", path);
    st_write_tensor *w = calloc((size_t)n + 1, sizeof *w);
    mw_tensor *cont = calloc((size_t)n + 1, sizeof *cont);
    int rc = 0;
    if (!w || !cont) { rc = mw_seterr("%s: out of memory", path); goto done; }
    for (int i = 0; i < n && rc == 0; i++) {
        const mw_tensor *t = ts[i];
        if (!names[i] || !*names[i]) { rc = mw_seterr("%s: save: tensor #%d has an empty name", path, i); break; }
        if (t->dtype != MW_F32 && t->dtype != MW_I64 && t->dtype != MW_BOOL) {
            rc = mw_seterr("%s: save: tensor '%s' has dtype %d", path, names[i], (int)t->dtype);
            break;
        }
        if (mw_tensor_contiguous(&cont[i], t)) {
            rc = mw_seterr("%s: save: tensor '%s': %s", path, names[i], mw_error());
            break;
        }
        w[i].name = names[i];
        w[i].dtype = t->dtype == MW_F32 ? ST_F32 : t->dtype == MW_I64 ? ST_I64 : ST_BOOL;
        w[i].ndim = t->ndim;
        w[i].shape = t->shape;
        w[i].data = mw_tensor_numel(t) ? mw_tensor_data(&cont[i]) : NULL;
    }
    if (rc == 0) {
        char err[512];
        if (st_write(path, w, (size_t)n, meta_keys, meta_values, (size_t)n_meta, err, sizeof err))
            rc = mw_seterr("%s", err);
    }
done:
    for (int i = 0; cont && i < n; i++) mw_tensor_release(&cont[i]);
    free(cont);
    free(w);
    return rc;
}
