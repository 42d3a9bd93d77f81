/* mwtest.h - a minimal C test harness. Each check that fails prints "FAIL - test: message";
 * each test prints "ok - name" or "FAIL - name". MW_TEST_MAIN ends with "N passed, N failed".
 * tests/run.sh adds up the ok/FAIL lines of every test program. */
#ifndef MWTEST_H
#define MWTEST_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int mwt_passed, mwt_failed, mwt_cur_failed;
static const char *mwt_cur;

#define CHECK(cond) do { if (!(cond)) { \
    printf("  check failed %s:%d: %s\n", __FILE__, __LINE__, #cond); mwt_cur_failed = 1; } } while (0)
#define CHECK_MSG(cond, ...) do { if (!(cond)) { \
    printf("  check failed %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); \
    mwt_cur_failed = 1; } } while (0)
#define CHECK_NEAR(a, b, tol) do { double _a = (a), _b = (b); \
    if (!(fabs(_a - _b) <= (tol))) { printf("  check failed %s:%d: %s = %.9g, %s = %.9g (tol %g)\n", \
        __FILE__, __LINE__, #a, _a, #b, _b, (double)(tol)); mwt_cur_failed = 1; } } while (0)
/* an mw_* call expected to succeed (returns 0) */
#define CHECK_OK(call) do { if ((call) != 0) { \
    printf("  check failed %s:%d: %s: %s\n", __FILE__, __LINE__, #call, mw_error()); \
    mwt_cur_failed = 1; } } while (0)
/* an mw_* call expected to fail with a message containing substr */
#define CHECK_ERR(call, substr) do { if ((call) == 0) { \
    printf("  check failed %s:%d: %s succeeded, expected an error\n", __FILE__, __LINE__, #call); \
    mwt_cur_failed = 1; } else if (!strstr(mw_error(), (substr))) { \
    printf("  check failed %s:%d: error \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, mw_error(), substr); \
    mwt_cur_failed = 1; } } while (0)

#define RUN(fn) do { mwt_cur = #fn; mwt_cur_failed = 0; fn(); \
    if (mwt_cur_failed) { mwt_failed++; printf("FAIL - %s\n", mwt_cur); } \
    else { mwt_passed++; printf("ok - %s\n", mwt_cur); } fflush(stdout); } while (0)

/* a whole file, NUL-terminated, malloc'd (length in *n); NULL when it cannot be read */
static inline char *mwt_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) { free(buf); fclose(f); return NULL; }
    buf[len] = 0;
    fclose(f);
    *n = (size_t)len;
    return buf;
}

#define MW_TEST_MAIN_END() do { printf("%d passed, %d failed\n", mwt_passed, mwt_failed); \
    return mwt_failed ? 1 : 0; } while (0)
#endif
