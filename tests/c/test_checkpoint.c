/* test_checkpoint.c - core/checkpoint.c: PyTorch zip checkpoints and safetensors into mw_tensor.
 * Expected values come from tests/fixtures/gen_checkpoints.py (torch.save, and the tensors' own
 * tolist() dumped to JSON). Elements are read here straight from shape/stride/offset, not through
 * the core's accessors. Hand-made zips (a tiny stored-zip writer below) feed lying pickles. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "mw_tensor.h"
#include "mwtest.h"

#define FIX "tests/fixtures/ckpt/"
static char tmpdir[] = "/tmp/mwtest_ck_XXXXXX";


/* logical element i (row-major) of t, from its strides */
static double at(const mw_tensor *t, int64_t i) {
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    switch (t->dtype) {
    case MW_F32: return ((const float *)t->storage->data)[off];
    case MW_I64: return (double)((const int64_t *)t->storage->data)[off];
    case MW_BOOL: return ((const uint8_t *)t->storage->data)[off];
    }
    return NAN;
}

static double jval(const cJSON *v) { return cJSON_IsString(v) ? strtod(v->valuestring, NULL) : v->valuedouble; }

/* every tensor of the JSON expectation is in sd with that shape, the mapped dtype and the values
 * (floats rounded to f32 as miwb stores them) */
static int check_against(const mw_state_dict *sd, const char *json_path) {
    size_t n;
    char *js = mwt_slurp(json_path, &n);
    cJSON *exp = js ? cJSON_Parse(js) : NULL;
    free(js);
    CHECK_MSG(exp != NULL, "cannot read %s", json_path);
    if (!exp) return 0;
    int count = 0;
    for (cJSON *e = exp->child; e; e = e->next, count++) {
        const mw_tensor *t = mw_state_dict_get(sd, e->string);
        CHECK_MSG(t != NULL, "%s: tensor %s missing", json_path, e->string);
        if (!t) continue;
        const char *dt = cJSON_GetObjectItem(e, "dtype")->valuestring;
        mw_dtype want = strstr(dt, "float") || strstr(dt, "F") == dt || strstr(dt, "BF") == dt ? MW_F32
                        : strcmp(dt, "bool") == 0 || strcmp(dt, "BOOL") == 0 ? MW_BOOL : MW_I64;
        CHECK_MSG(t->dtype == want, "%s: dtype %d, expected %d (%s)", e->string, t->dtype, want, dt);
        CHECK(t->storage->dtype == t->dtype);
        cJSON *shape = cJSON_GetObjectItem(e, "shape"), *vals = cJSON_GetObjectItem(e, "values");
        CHECK_MSG(t->ndim == cJSON_GetArraySize(shape), "%s: ndim %d", e->string, t->ndim);
        for (int d = 0; d < t->ndim && d < cJSON_GetArraySize(shape); d++)
            CHECK(t->shape[d] == (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble);
        CHECK(mw_tensor_numel(t) == cJSON_GetArraySize(vals));
        int64_t i = 0;
        int bad = 0;
        for (cJSON *v = vals->child; v && i < mw_tensor_numel(t); v = v->next, i++) {
            double w = jval(v), g = at(t, i);
            if (want == MW_F32) w = (float)w;
            if (!(g == w || (isnan(g) && isnan(w)))) {
                if (bad++ < 3) printf("  %s[%lld] = %.9g, expected %.9g\n", e->string, (long long)i, g, w);
            }
        }
        CHECK_MSG(bad == 0, "%s: %d values differ", e->string, bad);
    }
    CHECK_MSG(count == sd->n, "%s: %d tensors expected, %d loaded", json_path, count, sd->n);
    cJSON_Delete(exp);
    return count;
}

static int is_wrapped_in(const mw_tensor *t, const void *lo, size_t n) {
    const char *p = t->storage->data;
    return t->storage->release != NULL && p >= (const char *)lo && p < (const char *)lo + n;
}

static void test_torch_basic(void) {
    mw_state_dict sd;
    CHECK_OK(mw_checkpoint_load(&sd, FIX "torch_basic.pt"));
    CHECK(sd.format && strcmp(sd.format, "torch") == 0);
    CHECK(check_against(&sd, FIX "torch_basic.json") == 16);
    const mw_tensor *tr = mw_state_dict_get(&sd, "transposed"), *na = mw_state_dict_get(&sd, "narrowed"),
                    *co = mw_state_dict_get(&sd, "column"), *pl = mw_state_dict_get(&sd, "plain");
    if (tr && na && co && pl) {
        /* torch's own view geometry, and one shared storage for the three views */
        CHECK(tr->stride[0] == 1 && tr->stride[1] == 6 && tr->offset == 0);
        CHECK(na->offset == 8 && na->stride[0] == 6 && na->stride[1] == 1);
        CHECK(co->offset == 3 && co->ndim == 1 && co->stride[0] == 6);
        CHECK(tr->storage == na->storage && na->storage == co->storage);
        CHECK(tr->storage != pl->storage);
        /* float32 is zero-copy: a wrapped storage (release callback set) */
        CHECK(pl->storage->release != NULL);
    }
    const mw_tensor *h = mw_state_dict_get(&sd, "half");
    if (h) CHECK(h->storage->release == NULL); /* converted copy */
    const mw_tensor *s = mw_state_dict_get(&sd, "scalar");
    if (s) CHECK(s->ndim == 0 && at(s, 0) == 3.25);
    mw_state_dict_free(&sd);
    CHECK(sd.n == 0 && sd.items == NULL);
}

static void test_torch_module_and_nested(void) {
    mw_state_dict sd;
    CHECK_OK(mw_checkpoint_load(&sd, FIX "torch_module.pth"));
    CHECK(check_against(&sd, FIX "torch_module.json") == 6);
    /* OrderedDict order is kept */
    if (sd.n == 6) CHECK(strcmp(sd.items[0].name, "mask") == 0 && strcmp(sd.items[1].name, "embed.weight") == 0);
    mw_state_dict_free(&sd);
    CHECK_OK(mw_checkpoint_load(&sd, FIX "torch_nested.pt"));
    CHECK(check_against(&sd, FIX "torch_nested.json") == 2);
    mw_state_dict_free(&sd);
}

static void test_safetensors_load(void) {
    mw_state_dict sd;
    size_t n;
    char *raw = mwt_slurp(FIX "st_basic.safetensors", &n);
    CHECK_OK(mw_checkpoint_load(&sd, FIX "st_basic.safetensors"));
    CHECK(sd.format && strcmp(sd.format, "safetensors") == 0);
    CHECK(check_against(&sd, FIX "st_basic.json") == 13);
    CHECK(sd.n_meta == 2);
    for (int i = 0; i < sd.n_meta; i++)
        if (strcmp(sd.meta_keys[i], "format") == 0) CHECK(strcmp(sd.meta_values[i], "pt") == 0);
    mw_state_dict_free(&sd);
    /* from memory: aligned float32 data is used in place */
    CHECK_OK(mw_checkpoint_load_memory(&sd, raw, n, "mem.safetensors"));
    const mw_tensor *f = mw_state_dict_get(&sd, "f32");
    if (f) {
        /* the fixture packs tensors without alignment: in place exactly when the source is aligned */
        st_file sf;
        char err[200];
        CHECK(st_open_memory(&sf, raw, n, "mem", err, sizeof err) == 0);
        const st_tensor *src = st_find(&sf, "f32");
        int aligned = src && ((uintptr_t)src->data % 4) == 0;
        CHECK(aligned == is_wrapped_in(f, raw, n));
        if (aligned) CHECK(f->storage->data == src->data);
        st_close(&sf);
    }
    mw_state_dict_free(&sd);
    free(raw);
}

/* a tensor outlives the state dict and the map stays valid until it goes */
static void test_lifetime(void) {
    mw_state_dict sd;
    mw_tensor keep = {0};
    CHECK_OK(mw_checkpoint_load(&sd, FIX "torch_basic.pt"));
    const mw_tensor *t = mw_state_dict_get(&sd, "narrowed");
    CHECK(t != NULL);
    if (!t) { mw_state_dict_free(&sd); return; }
    mw_tensor_share(&keep, t);
    double before = at(&keep, 5);
    mw_state_dict_free(&sd);
    CHECK(at(&keep, 5) == before); /* would fault if the file were unmapped */
    CHECK_NEAR(before, 16.0 / 7.0, 1e-6); /* shared[2, 4] = 16/7 */
    mw_tensor_release(&keep);
}

static void test_refused_files(void) {
    mw_state_dict sd;
    unlink("/tmp/miwb_evil_ran");
    CHECK_ERR(mw_checkpoint_load(&sd, FIX "torch_evil.pt"), "forbidden global 'posix.system'");
    CHECK(strstr(mw_error(), "torch_evil.pt") != NULL);
    CHECK(access("/tmp/miwb_evil_ran", F_OK) != 0);
    CHECK(sd.n == 0);
    CHECK_ERR(mw_checkpoint_load(&sd, FIX "torch_legacy.pt"), "legacy torch format");
    CHECK(strstr(mw_error(), "_use_new_zipfile_serialization=True") != NULL);
    CHECK_ERR(mw_checkpoint_load(&sd, FIX "torch_deflated.pt"), "compressed");
    CHECK(mw_checkpoint_load(&sd, FIX "does_not_exist.pt") == MW_CKPT_NOFILE);
    CHECK(strstr(mw_error(), "does_not_exist.pt: cannot open") != NULL);
    CHECK(mw_checkpoint_load(&sd, FIX) == MW_CKPT_NOFILE);
    CHECK_ERR(mw_checkpoint_load(&sd, FIX "torch_basic.json"), "neither a safetensors file nor");
    CHECK_ERR(mw_checkpoint_load_memory(&sd, "", 0, "empty.safetensors"), "empty.safetensors");
}

/* ------------------------------------------------------------ hand-made zips */

typedef struct { unsigned char *b; size_t n, cap; } buf;
static void put(buf *o, const void *p, size_t n) {
    if (o->n + n > o->cap) { o->cap = (o->n + n) * 2 + 64; o->b = realloc(o->b, o->cap); }
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void put16(buf *o, unsigned v) { unsigned char c[2] = {v & 255, (v >> 8) & 255}; put(o, c, 2); }
static void put32(buf *o, uint32_t v) { put16(o, v & 0xffff); put16(o, v >> 16); }

static void put64(buf *o, uint64_t v) { put32(o, (uint32_t)v); put32(o, (uint32_t)(v >> 32)); }

/* a stored zip of nent entries: names[i], data[i] of lens[i] bytes. With zip64, every size and
 * offset goes into zip64 extra fields and records (0xffffffff in the classic ones), as writers do
 * for archives past 4 GiB (torch for GPT-2 XL's pytorch_model.bin). */
static buf make_zip_ex(int nent, const char *const *names, const void *const *data, const size_t *lens, int zip64) {
    buf z = {0}, cd = {0};
    for (int i = 0; i < nent; i++) {
        uint32_t off = (uint32_t)z.n;
        size_t nl = strlen(names[i]);
        put32(&z, 0x04034b50); put16(&z, zip64 ? 45 : 20); put16(&z, 0); put16(&z, 0); put16(&z, 0); put16(&z, 0);
        put32(&z, 0); put32(&z, zip64 ? 0xffffffff : (uint32_t)lens[i]); put32(&z, zip64 ? 0xffffffff : (uint32_t)lens[i]);
        put16(&z, (unsigned)nl); put16(&z, zip64 ? 20 : 0);
        put(&z, names[i], nl);
        if (zip64) { put16(&z, 1); put16(&z, 16); put64(&z, lens[i]); put64(&z, lens[i]); }
        put(&z, data[i], lens[i]);
        put32(&cd, 0x02014b50); put16(&cd, 45); put16(&cd, zip64 ? 45 : 20); put16(&cd, 0); put16(&cd, 0); put16(&cd, 0); put16(&cd, 0);
        put32(&cd, 0); put32(&cd, zip64 ? 0xffffffff : (uint32_t)lens[i]); put32(&cd, zip64 ? 0xffffffff : (uint32_t)lens[i]);
        put16(&cd, (unsigned)nl); put16(&cd, zip64 ? 28 : 0); put16(&cd, 0); put16(&cd, 0); put16(&cd, 0); put32(&cd, 0);
        put32(&cd, zip64 ? 0xffffffff : off);
        put(&cd, names[i], nl);
        if (zip64) { put16(&cd, 1); put16(&cd, 24); put64(&cd, lens[i]); put64(&cd, lens[i]); put64(&cd, off); }
    }
    uint64_t cdoff = z.n;
    put(&z, cd.b, cd.n);
    if (zip64) {
        uint64_t z64 = z.n;
        put32(&z, 0x06064b50); put64(&z, 44); put16(&z, 45); put16(&z, 45); put32(&z, 0); put32(&z, 0);
        put64(&z, (uint64_t)nent); put64(&z, (uint64_t)nent); put64(&z, cd.n); put64(&z, cdoff);
        put32(&z, 0x07064b50); put32(&z, 0); put64(&z, z64); put32(&z, 1);
    }
    put32(&z, 0x06054b50); put16(&z, 0); put16(&z, 0);
    put16(&z, zip64 ? 0xffff : (unsigned)nent); put16(&z, zip64 ? 0xffff : (unsigned)nent);
    put32(&z, zip64 ? 0xffffffff : (uint32_t)cd.n); put32(&z, zip64 ? 0xffffffff : (uint32_t)cdoff); put16(&z, 0);
    free(cd.b);
    return z;
}


static int zip64_mode;

/* loads a zip holding archive/data.pkl = pkl (len bytes) and archive/data/0 = 16 float32s */
static int load_pickle(mw_state_dict *sd, const void *pkl, size_t len) {
    static float st[16];
    for (int i = 0; i < 16; i++) st[i] = (float)i;
    const char *names[] = {"archive/data.pkl", "archive/data/0"};
    const void *data[] = {pkl, st};
    size_t lens[] = {len, sizeof st};
    buf z = make_zip_ex(2, names, data, lens, zip64_mode);
    int rc = mw_checkpoint_load_memory(sd, z.b, z.n, "hand.pt");
    if (rc == 0) {
        /* the tensors may view z's bytes: copy what the caller checks before freeing z */
        for (int i = 0; i < sd->n; i++) {
            mw_tensor c;
            if (mw_tensor_clone(&c, &sd->items[i].t) == 0) { mw_tensor_release(&sd->items[i].t); sd->items[i].t = c; }
        }
    }
    free(z.b);
    return rc;
}

/* pickle pieces: {'w': _rebuild_tensor_v2(storage0 Float 16, off, size, stride, False, OrderedDict())} */
#define P_REBUILD "ctorch._utils\n_rebuild_tensor_v2\n"
#define P_STORAGE(n) "(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK" n "tQ"
#define PK(s) s, sizeof(s) - 1

static void test_hand_pickles(void) {
    mw_state_dict sd;
    /* a valid one first: w = storage[2:2+6] viewed as [2,3] with strides (4,1) -> values 2,3,4,6,7,8 */
    static const char ok1[] = "\x80\x02}q\x00(X\x01\x00\x00\x00w" P_REBUILD "(" P_STORAGE("\x10")
                              "K\x02K\x02K\x03\x86K\x04K\x01\x86\x89" "ccollections\nOrderedDict\n)RtRu.";
    CHECK_OK(load_pickle(&sd, PK(ok1)));
    if (sd.n == 1) {
        const mw_tensor *w = &sd.items[0].t;
        CHECK(strcmp(sd.items[0].name, "w") == 0 && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3);
        double want[6] = {2, 3, 4, 6, 7, 8};
        for (int i = 0; i < 6; i++) CHECK(at(w, i) == want[i]);
    }
    mw_state_dict_free(&sd);
    /* the same archive in zip64 form: sizes and offsets from the zip64 extra fields and records */
    zip64_mode = 1;
    CHECK_OK(load_pickle(&sd, PK(ok1)));
    CHECK(sd.n == 1 && sd.items[0].t.shape[1] == 3 && at(&sd.items[0].t, 5) == 8);
    mw_state_dict_free(&sd);
    zip64_mode = 0;
    /* the storage holds 16 floats: a view reaching element 16 is refused, naming the tensor */
    static const char past[] = "\x80\x02}q\x00(X\x01\x00\x00\x00w" P_REBUILD "(" P_STORAGE("\x10")
                               "K\x02K\x02K\x08\x86K\x08K\x01\x86\x89" "ccollections\nOrderedDict\n)RtRu.";
    CHECK_ERR(load_pickle(&sd, PK(past)), "tensor 'w': shape [2,8] at offset 2");
    /* the pickle claims more elements than the archive entry holds */
    static const char big[] = "\x80\x02}q\x00(X\x01\x00\x00\x00w" P_REBUILD "(" P_STORAGE("\x11")
                              "K\x00K\x02\x85K\x01\x85\x89" "ccollections\nOrderedDict\n)RtRu.";
    CHECK_ERR(load_pickle(&sd, PK(big)), "17 float32 elements need 68 bytes, the archive entry has 64");
    /* other globals, by GLOBAL and by STACK_GLOBAL */
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02" "cbuiltins\neval\nX\x01\x00\x00\x00" "1\x85R.")), "forbidden global 'builtins.eval'");
    CHECK_ERR(load_pickle(&sd, PK("\x80\x04\x8c\x02os\x8c\x06system\x93.")), "forbidden global 'os.system'");
    /* calling a storage class is not a rebuild */
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02" "ctorch\nFloatStorage\n)R.")), "calling torch.FloatStorage is not allowed");
    /* memo lies */
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02}r\xff\xff\xff\xff.")), "memo index 4294967295 out of range");
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02h\x05.")), "memo index 5 was never stored");
    /* truncated and lying lengths */
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02X\xff\xff\xff\x7f" "abc")), "truncated pickle");
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02}")), "no STOP opcode");
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02\x8a\x09" "123456789.")), "does not fit int64");
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02" "0.")), "stack underflow");
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02(u.")), "SETITEMS without a dict");
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02" "K\x01.")), "holds a int, not a dict");
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02" "c\x00\x01")), "truncated GLOBAL");
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02i.")), "opcode 'i' at byte 2: opcode not allowed");
    /* a dict containing itself: the walk stops */
    CHECK_ERR(load_pickle(&sd, PK("\x80\x02}q\x00X\x01\x00\x00\x00" "ah\x00s.")), "hand.pt");
    /* a DAG: d0 = {}, d1 = {a: d0, b: d0}, ..., 40 levels: 2^40 paths, refused quickly */
    {
        buf p = {0};
        put(&p, "\x80\x02}q\x00", 5);
        for (int i = 1; i <= 40; i++) {
            unsigned char s[40];
            int k = 0;
            s[k++] = '}'; s[k++] = '('; s[k++] = 0x8c; s[k++] = 1; s[k++] = 'a'; s[k++] = 'h'; s[k++] = (unsigned char)(i - 1);
            s[k++] = 0x8c; s[k++] = 1; s[k++] = 'b'; s[k++] = 'h'; s[k++] = (unsigned char)(i - 1);
            s[k++] = 'u'; s[k++] = 'q'; s[k++] = (unsigned char)i; s[k++] = '0';
            put(&p, s, (size_t)k);
        }
        put(&p, "h\x28.", 3);
        CHECK_ERR(load_pickle(&sd, p.b, p.n), "shared dicts or lists");
        free(p.b);
    }
    /* 200000 MARKs: memory grows with the input only, then a clean error */
    {
        size_t n = 200000;
        char *p = malloc(n + 3);
        p[0] = (char)0x80; p[1] = 2;
        memset(p + 2, '(', n);
        p[n + 2] = '.';
        CHECK_ERR(load_pickle(&sd, p, n + 3), "stack underflow");
        free(p);
    }
    /* a persistent id naming a storage that is not in the archive */
    static const char missing[] = "\x80\x02}(X\x01\x00\x00\x00w" P_REBUILD
                                  "((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "7X\x03\x00\x00\x00" "cpuK\x01tQ"
                                  "K\x00K\x01\x85K\x01\x85\x89" "ccollections\nOrderedDict\n)RtRu.";
    CHECK_ERR(load_pickle(&sd, PK(missing)), "storage '7' has no entry archive/data/7");
    /* a key that is a path is not a storage name */
    static const char path_key[] = "\x80\x02}(X\x01\x00\x00\x00w" P_REBUILD
                                   "((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x04\x00\x00\x00../0X\x03\x00\x00\x00" "cpuK\x01tQ"
                                   "K\x00K\x01\x85K\x01\x85\x89" "ccollections\nOrderedDict\n)RtRu.";
    CHECK_ERR(load_pickle(&sd, PK(path_key)), "storage key of 4 bytes is not a plain name");
}

/* every truncation and many byte flips of a real checkpoint fail cleanly or load consistently */
static void test_truncations_and_flips(void) {
    size_t n;
    char *good = mwt_slurp(FIX "torch_basic.pt", &n);
    CHECK(good != NULL);
    if (!good) return;
    int accepted = 0;
    for (size_t len = 0; len < n; len++) {
        char *cut = malloc(len ? len : 1);
        memcpy(cut, good, len);
        mw_state_dict sd;
        if (mw_checkpoint_load_memory(&sd, cut, len, "cut.pt") == 0) { accepted++; mw_state_dict_free(&sd); }
        else CHECK(strstr(mw_error(), "cut.pt") != NULL);
        free(cut);
    }
    CHECK_MSG(accepted == 0, "%d truncated copies loaded", accepted);
    uint64_t s = 7;
    int ok = 0;
    for (int it = 0; it < 3000; it++) {
        char *m = malloc(n);
        memcpy(m, good, n);
        for (int k = 0; k < 2; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            m[(s >> 33) % n] = (char)(s >> 20);
        }
        mw_state_dict sd;
        if (mw_checkpoint_load_memory(&sd, m, n, "flip.pt") == 0) {
            ok++;
            for (int i = 0; i < sd.n; i++) {
                const mw_tensor *t = &sd.items[i].t;
                /* the farthest element is inside its storage */
                int64_t last = t->offset;
                for (int d = 0; d < t->ndim; d++) last += (t->shape[d] - 1) * t->stride[d];
                CHECK(mw_tensor_numel(t) == 0 || last < t->storage->numel);
            }
            mw_state_dict_free(&sd);
        } else {
            CHECK(strstr(mw_error(), "flip.pt") != NULL);
        }
        free(m);
    }
    printf("  %d of 3000 flipped copies still loaded\n", ok);
    free(good);
}

static void test_save(void) {
    mw_state_dict sd;
    CHECK_OK(mw_checkpoint_load(&sd, FIX "torch_basic.pt"));
    const char *names[3] = {"t", "long", "mask"};
    const mw_tensor *ts[3] = {mw_state_dict_get(&sd, "transposed"), mw_state_dict_get(&sd, "long"),
                              mw_state_dict_get(&sd, "bool")};
    if (!ts[0] || !ts[1] || !ts[2]) { CHECK(0); mw_state_dict_free(&sd); return; }
    char path[128], cmd[1200];
    snprintf(path, sizeof path, "%s/saved.safetensors", tmpdir);
    const char *mk[] = {"format"}, *mv[] = {"pt"};
    CHECK_OK(mw_checkpoint_save(path, 3, names, ts, 1, mk, mv));
    /* the transposed view is written in its logical order: t[i][j] = shared[j][i] = (6j + i) / 7 */
    char vals[400] = "t=";
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 4; j++) {
            char v[40];
            snprintf(v, sizeof v, "%s%.9g", i + j ? "," : "", (double)(float)((6 * j + i) / 7.0));
            strcat(vals, v);
        }
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/fixtures/check_safetensors.py %s '%s' "
             "'long=1,-2,3,1099511627776,0,-34359738368' 'mask=1,0,0,1' >%s/log 2>&1", path, vals, tmpdir);
    int rc = system(cmd);
    if (rc) { snprintf(cmd, sizeof cmd, "cat %s/log", tmpdir); if (system(cmd)) {} }
    CHECK_MSG(rc == 0, "check_safetensors.py rejected the saved file");
    mw_state_dict back;
    CHECK_OK(mw_checkpoint_load(&back, path));
    const mw_tensor *t = mw_state_dict_get(&back, "t");
    CHECK(t && t->ndim == 2 && t->shape[0] == 6 && t->shape[1] == 4 && at(t, 5) == at(ts[0], 5));
    /* our writer aligns every tensor, so float32 loads in place */
    CHECK(t && t->storage->release != NULL);
    mw_state_dict_free(&back);
    /* refused saves */
    const char *dup[2] = {"a", "a"};
    CHECK_ERR(mw_checkpoint_save(path, 2, dup, ts, 0, NULL, NULL), "given twice");
    const char *empty[1] = {""};
    CHECK_ERR(mw_checkpoint_save(path, 1, empty, ts, 0, NULL, NULL), "empty name");
    mw_state_dict_free(&sd);
}

int main(void) {
    if (!mkdtemp(tmpdir)) { printf("FAIL - mkdtemp\n"); return 1; }
    RUN(test_torch_basic);
    RUN(test_torch_module_and_nested);
    RUN(test_safetensors_load);
    RUN(test_lifetime);
    RUN(test_refused_files);
    RUN(test_hand_pickles);
    RUN(test_truncations_and_flips);
    RUN(test_save);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("  (could not remove %s)\n", tmpdir);
    MW_TEST_MAIN_END();
}
