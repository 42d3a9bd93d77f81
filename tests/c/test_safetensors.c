/* test_safetensors.c - vendor/safetensors.h on its own (no miwb types): reading a file laid out by
 * tests/fixtures/gen_checkpoints.py (struct + json + numpy, an independent writer), the expected
 * values from that script's JSON dump; f16 conversion against the compiler's _Float16; the writer's
 * layout rules checked byte by byte and by tests/fixtures/check_safetensors.py (numpy, following
 * the Python library's validation); malformed headers, truncations and byte flips. */
#define SAFETENSORS_IMPLEMENTATION
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mwtest.h"

#define FIX "tests/fixtures/ckpt/"
static char err[512];
static char tmpdir[] = "/tmp/mwtest_st_XXXXXX";


/* element i of a tensor as a double, read with plain memcpy per dtype */
static double elem(const st_tensor *t, int64_t i) {
    const unsigned char *p = (const unsigned char *)t->data + (size_t)i * st_dtype_size(t->dtype);
    union { double f64; float f32; int64_t i64; int32_t i32; int16_t i16; int8_t i8; uint8_t u8; uint16_t u16; } u;
    memcpy(&u, p, st_dtype_size(t->dtype));
    switch (t->dtype) {
    case ST_F64: return u.f64;
    case ST_F32: return u.f32;
    case ST_F16: return st_f16_to_f32(u.u16);
    case ST_BF16: return st_bf16_to_f32(u.u16);
    case ST_I64: return (double)u.i64;
    case ST_I32: return u.i32;
    case ST_I16: return u.i16;
    case ST_I8: return u.i8;
    case ST_U8: case ST_BOOL: return u.u8;
    default: return NAN;
    }
}

static void test_read_fixture(void) {
    st_file f;
    size_t n;
    char *js = mwt_slurp(FIX "st_basic.json", &n);
    CHECK(js != NULL);
    if (!js) return;
    cJSON *exp = cJSON_Parse(js);
    free(js);
    CHECK(exp != NULL);
    if (!exp) return;
    CHECK_MSG(st_open(&f, FIX "st_basic.safetensors", err, sizeof err) == 0, "%s", err);
    CHECK(f.n_tensors == (size_t)cJSON_GetArraySize(exp));
    CHECK(f.header_len % 8 == 0);
    int checked = 0;
    for (cJSON *e = exp->child; e; e = e->next) {
        const st_tensor *t = st_find(&f, e->string);
        CHECK_MSG(t != NULL, "tensor %s missing", e->string);
        if (!t) continue;
        CHECK_MSG(strcmp(st_dtype_name(t->dtype), cJSON_GetObjectItem(e, "dtype")->valuestring) == 0,
                  "%s: dtype %s", e->string, st_dtype_name(t->dtype));
        cJSON *shape = cJSON_GetObjectItem(e, "shape"), *vals = cJSON_GetObjectItem(e, "values");
        CHECK(t->ndim == cJSON_GetArraySize(shape));
        for (int d = 0; d < t->ndim && d < cJSON_GetArraySize(shape); d++)
            CHECK(t->shape[d] == (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble);
        CHECK(t->numel == cJSON_GetArraySize(vals));
        int64_t i = 0;
        for (cJSON *v = vals->child; v && i < t->numel; v = v->next, i++) {
            double a = elem(t, i), b = cJSON_IsString(v) ? strtod(v->valuestring, NULL) : v->valuedouble;
            if (isinf(b)) CHECK(a == b);
            else CHECK_MSG(a == b || fabs(a - b) <= 1e-12 * fabs(b), "%s[%lld] = %.17g, expected %.17g",
                           e->string, (long long)i, a, b);
        }
        checked++;
    }
    CHECK(checked == 13);
    /* -0.0 in f16 keeps its sign */
    const st_tensor *h = st_find(&f, "f16");
    if (h) CHECK(signbit(elem(h, 5)) && elem(h, 5) == 0);
    CHECK(f.n_metadata == 2);
    const char *note = st_metadata_get(&f, "note");
    CHECK(note && strcmp(note, "quote \" backslash \\ caf\xc3\xa9") == 0);
    CHECK(st_metadata_get(&f, "format") && strcmp(st_metadata_get(&f, "format"), "pt") == 0);
    CHECK(st_find(&f, "nope") == NULL);
    st_close(&f);
    cJSON_Delete(exp);
}

static void test_f16_exhaustive(void) {
#ifdef __FLT16_MAX__
    int bad = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        uint16_t h = (uint16_t)b;
        _Float16 x;
        memcpy(&x, &h, 2);
        float want = (float)x, got = st_f16_to_f32(h);
        if (isnan(want) ? !isnan(got) : memcmp(&want, &got, 4) != 0) bad++;
    }
    CHECK_MSG(bad == 0, "%d of 65536 f16 patterns convert differently from the compiler", bad);
#else
    printf("  SKIP: compiler has no _Float16; checking a few values by hand\n");
#endif
    CHECK(st_f16_to_f32(0x3c00) == 1.0f);
    CHECK(st_f16_to_f32(0xc000) == -2.0f);
    CHECK(st_f16_to_f32(0x0001) == ldexpf(1, -24)); /* smallest subnormal */
    CHECK(st_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(st_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(st_bf16_to_f32(0xc0a0) == -5.0f);
}

/* writes, reads back, and checks the layout rules of the Python library */
static void test_write_roundtrip(void) {
    char path[128], cmd[512];
    snprintf(path, sizeof path, "%s/w.safetensors", tmpdir);
    float a[6] = {1, 2, 3, 4, 5, 6};
    int64_t b[2] = {-5, 1LL << 50};
    uint8_t c[3] = {1, 0, 1};
    uint16_t d[1] = {0x3c00};
    double e[1] = {0.125};
    int64_t sa[2] = {2, 3}, sb[1] = {2}, sc[1] = {3}, sd[1] = {1}, sz[2] = {0, 5};
    st_write_tensor ts[] = {
        {"z.bool", ST_BOOL, 1, sc, c}, {"a.f32", ST_F32, 2, sa, a}, {"b.i64", ST_I64, 1, sb, b},
        {"h", ST_F16, 1, sd, d}, {"scalar", ST_F64, 0, NULL, e}, {"empty", ST_F32, 2, sz, NULL},
        {"wei\"rd\n", ST_F32, 1, sd, a},
    };
    const char *mk[] = {"format", "k\"ey"}, *mv[] = {"pt", "v\\al\x01"};
    CHECK_MSG(st_write(path, ts, 7, mk, mv, 2, err, sizeof err) == 0, "%s", err);
    size_t n;
    unsigned char *raw = (unsigned char *)mwt_slurp(path, &n);
    CHECK(raw != NULL);
    if (!raw) return;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | raw[i];
    CHECK(hl % 8 == 0);
    CHECK(8 + hl <= n);
    CHECK(raw[8] == '{');
    /* padding: only spaces after the closing brace */
    size_t last = 8 + hl - 1;
    while (last > 8 && raw[last] == ' ') last--;
    CHECK(raw[last] == '}');
    /* the header is JSON cJSON accepts, with __metadata__ first */
    char *hdr = strndup((char *)raw + 8, hl);
    cJSON *j = cJSON_Parse(hdr);
    CHECK(j && j->child && strcmp(j->child->string, "__metadata__") == 0);
    /* data section fully covered, each tensor aligned to its element size */
    uint64_t covered = 0;
    for (cJSON *t = j ? j->child : NULL; t; t = t->next) {
        if (strcmp(t->string, "__metadata__") == 0) continue;
        st_dtype dt;
        CHECK(st_dtype_from_name(cJSON_GetObjectItem(t, "dtype")->valuestring, &dt) == 0);
        cJSON *off = cJSON_GetObjectItem(t, "data_offsets");
        uint64_t b0 = (uint64_t)cJSON_GetArrayItem(off, 0)->valuedouble, e0 = (uint64_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        CHECK_MSG(b0 % st_dtype_size(dt) == 0, "%s at %llu not aligned", t->string, (unsigned long long)b0);
        covered += e0 - b0;
    }
    CHECK(covered == n - 8 - hl);
    cJSON_Delete(j);
    free(hdr);
    free(raw);

    st_file f;
    CHECK_MSG(st_open(&f, path, err, sizeof err) == 0, "%s", err);
    CHECK(f.n_tensors == 7);
    const st_tensor *t = st_find(&f, "a.f32");
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && memcmp(t->data, a, 24) == 0);
    t = st_find(&f, "b.i64");
    CHECK(t && memcmp(t->data, b, 16) == 0);
    t = st_find(&f, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1 && elem(t, 0) == 0.125);
    t = st_find(&f, "empty");
    CHECK(t && t->numel == 0 && t->shape[1] == 5);
    t = st_find(&f, "wei\"rd\n");
    CHECK(t && elem(t, 0) == 1);
    CHECK(st_metadata_get(&f, "k\"ey") && strcmp(st_metadata_get(&f, "k\"ey"), "v\\al\x01") == 0);
    st_close(&f);

    /* the numpy checker that follows the Python library's validation rules */
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/fixtures/check_safetensors.py %s "
             "'a.f32=1,2,3,4,5,6' 'b.i64=-5,1125899906842624' 'z.bool=1,0,1' 'h=1' 'scalar=0.125' > %s/log 2>&1",
             path, tmpdir);
    int rc = system(cmd);
    if (rc != 0) {
        snprintf(cmd, sizeof cmd, "%s/log", tmpdir);
        char *log = mwt_slurp(cmd, &n);
        printf("  %s\n", log ? log : "(no log)");
        free(log);
    }
    CHECK_MSG(rc == 0, "check_safetensors.py rejected the written file");

    /* bad writes */
    st_write_tensor dup[] = {{"x", ST_F32, 1, sd, a}, {"x", ST_I64, 1, sd, b}};
    CHECK(st_write(path, dup, 2, NULL, NULL, 0, err, sizeof err) != 0 && strstr(err, "'x' given twice"));
    st_write_tensor bad8[] = {{"caf\xe9", ST_F32, 1, sd, a}}, ok8[] = {{"caf\xc3\xa9 \xf0\x9f\x98\x80", ST_F32, 1, sd, a}};
    CHECK(st_write(path, bad8, 1, NULL, NULL, 0, err, sizeof err) != 0 && strstr(err, "not valid UTF-8"));
    CHECK_MSG(st_write(path, ok8, 1, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    const char *badk[] = {"k"}, *badv[] = {"\xed\xa0\x80"}; /* an encoded surrogate */
    CHECK(st_write(path, ok8, 1, badk, badv, 1, err, sizeof err) != 0 && strstr(err, "metadata entry #0"));
    st_write_tensor meta[] = {{"__metadata__", ST_F32, 1, sd, a}};
    CHECK(st_write(path, meta, 1, NULL, NULL, 0, err, sizeof err) != 0 && strstr(err, "invalid name"));
    CHECK(st_write("/nonexistent-dir/x.safetensors", ts, 1, NULL, NULL, 0, err, sizeof err) != 0 &&
          strstr(err, "cannot write"));
}

/* a file from a header string and a data section of `data` bytes (value i at byte i) */
static int open_with(st_file *f, const char *header, size_t data, int64_t hl_override) {
    size_t hl = strlen(header);
    size_t n = 8 + hl + data;
    static unsigned char buf[1 << 16];
    uint64_t v = hl_override >= 0 ? (uint64_t)hl_override : hl;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(v >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data; i++) buf[8 + hl + i] = (unsigned char)i;
    return st_open_memory(f, buf, n, "bad.safetensors", err, sizeof err);
}

#define BAD(header, data, substr) do { st_file f_; \
    if (open_with(&f_, header, data, -1) == 0) { CHECK_MSG(0, "accepted: %s", header); st_close(&f_); } \
    else CHECK_MSG(strstr(err, substr) && strstr(err, "bad.safetensors"), "error \"%s\" lacks \"%s\"", err, substr); \
} while (0)

static void test_malformed(void) {
    st_file f;
    CHECK(st_open_memory(&f, "abc", 3, "bad.safetensors", err, sizeof err) != 0 && strstr(err, "shorter than"));
    CHECK(open_with(&f, "{}", 0, 1000) != 0 && strstr(err, "runs past the end"));
    CHECK(open_with(&f, "{}", 0, (int64_t)1 << 40) != 0 && strstr(err, "exceeds the limit"));
    CHECK_MSG(open_with(&f, "{}", 0, -1) == 0, "%s", err);
    CHECK(f.n_tensors == 0);
    st_close(&f);
    BAD("{bad", 0, "malformed safetensors header");
    BAD("[1,2]", 0, "must be a JSON object");
    BAD("", 0, "must be a JSON object");
    BAD("{\"a\":{\"dtype\":\"F8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor 'a': unknown dtype 'F8'");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "tensor 'a': data_offsets [0, 8] run past");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "tensor 'a': data_offsets [8, 0] end before");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24, "tensor 'a': 20 bytes in data_offsets, but shape [2,3] x F32 needs 24");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlaps");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 16, "tensor 'b' [4, 8) overlaps tensor 'a'");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor 'a' appears twice");
    BAD("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing field 'shape'");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative integer");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "not a fraction");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}}", 4, "tensor 'a': shape too large");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4, "integer too large");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "more than 16 dims");
    BAD("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ entry 'k': values must be strings");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4, "trailing bytes");
    BAD("{\"a\\u0000b\":{}}", 0, "NUL character");
    BAD("{\"a\\ud800\":{}}", 0, "unpaired surrogate");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}", 4, "nesting too deep");
    /* tolerated: unknown fields, escapes, empty tensors at any offset, holes between tensors */
    CHECK_MSG(open_with(&f, "{\"x\\u00e9\\ud83d\\ude00\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[2,4],\"extra\":{\"q\":[1,-2.5e3,null]}},"
                        "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[3,3]}}", 4, -1) == 0, "%s", err);
    const st_tensor *t = st_find(&f, "x\xc3\xa9\xf0\x9f\x98\x80");
    CHECK(t && ((const int8_t *)t->data)[0] == 2 && ((const int8_t *)t->data)[1] == 3);
    st_close(&f);
    /* files that cannot be opened */
    CHECK(st_open(&f, FIX "no_such_file.safetensors", err, sizeof err) != 0 && strstr(err, "no_such_file.safetensors: cannot open"));
    CHECK(st_open(&f, FIX, err, sizeof err) != 0 && strstr(err, "is a directory"));
}

/* every truncation and many byte flips of a valid file fail cleanly or parse consistently
 * (the sanitizer build turns any out-of-bounds read into a failure) */
static void test_truncations_and_flips(void) {
    size_t n;
    char *good = mwt_slurp(FIX "st_basic.safetensors", &n);
    CHECK(good != NULL);
    if (!good) return;
    int accepted_short = 0;
    for (size_t len = 0; len < n; len++) {
        char *cut = malloc(len ? len : 1); /* its own allocation so ASan sees reads past len */
        memcpy(cut, good, len);
        st_file f;
        if (st_open_memory(&f, cut, len, "cut", err, sizeof err) == 0) { accepted_short++; st_close(&f); }
        free(cut);
    }
    CHECK_MSG(accepted_short == 0, "%d truncated copies were accepted", accepted_short);
    uint64_t s = 42;
    int ok = 0;
    for (int it = 0; it < 3000; it++) {
        char *m = malloc(n);
        memcpy(m, good, n);
        for (int k = 0; k < 3; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t pos = (size_t)(s >> 33) % (8 + 400 < n ? 8 + 400 : n); /* mostly the header */
            m[pos] = (char)(s >> 20);
        }
        st_file f;
        if (st_open_memory(&f, m, n, "flip", err, sizeof err) == 0) {
            ok++;
            /* whatever was accepted must be in range */
            for (size_t i = 0; i < f.n_tensors; i++)
                CHECK(f.tensors[i].end <= f.data_size && (size_t)((const char *)f.tensors[i].data - m) + (f.tensors[i].end - f.tensors[i].begin) <= n);
            st_close(&f);
        } else {
            CHECK(strstr(err, "flip") != NULL);
        }
        free(m);
    }
    printf("  %d of 3000 flipped copies still parsed\n", ok);
    free(good);
}

int main(void) {
    if (!mkdtemp(tmpdir)) { printf("FAIL - mkdtemp\n"); return 1; }
    RUN(test_read_fixture);
    RUN(test_f16_exhaustive);
    RUN(test_write_roundtrip);
    RUN(test_malformed);
    RUN(test_truncations_and_flips);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("  (could not remove %s)\n", tmpdir);
    MW_TEST_MAIN_END();
}
