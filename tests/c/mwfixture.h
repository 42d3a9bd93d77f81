/* mwfixture.h - reads the named-tensor text fixtures written by tests/fixtures/gen_ops.py and
 * compares tensors. File format, one tensor per two lines:
 *     <name> <f32|i64|bool> <ndim> <dims...>
 *     <values, row-major, space separated>
 * Fixtures are read relative to the repository root (tests run from there) or $MIWB_ROOT. */
#ifndef MWFIXTURE_H
#define MWFIXTURE_H
#include "mw_tensor.h"
#include "mwtest.h"
#include <stdlib.h>

#define FX_MAX 256
static struct { char name[64]; mw_tensor t; } fx_tab[FX_MAX];
static int fx_n;

/* loads path (relative to the repo root); returns the number of tensors or -1 */
static int fx_load(const char *path)
{
    char full[1024];
    const char *root = getenv("MIWB_ROOT");
    snprintf(full, sizeof full, "%s%s%s", root ? root : "", root ? "/" : "", path);
    FILE *f = fopen(full, "r");
    if (!f) { printf("  cannot open fixture %s\n", full); return -1; }
    char name[64], dt[8];
    int nd, count = 0;
    while (fx_n < FX_MAX && fscanf(f, "%63s %7s %d", name, dt, &nd) == 3) {
        int64_t shape[MW_MAXDIM], numel = 1;
        for (int d = 0; d < nd; d++) {
            long long s;
            if (fscanf(f, "%lld", &s) != 1) { fclose(f); return -1; }
            shape[d] = s;
            numel *= s;
        }
        mw_dtype t = !strcmp(dt, "f32") ? MW_F32 : !strcmp(dt, "i64") ? MW_I64 : MW_BOOL;
        mw_tensor x;
        if (mw_tensor_zeros(&x, t, nd, shape)) { fclose(f); return -1; }
        int64_t idx[MW_MAXDIM] = {0};
        for (int64_t i = 0; i < numel; i++) {
            char tok[64];
            if (fscanf(f, "%63s", tok) != 1) { fclose(f); mw_tensor_release(&x); return -1; }
            mw_tensor_set(&x, idx, strtod(tok, NULL));
            for (int d = nd - 1; d >= 0; d--) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
        }
        snprintf(fx_tab[fx_n].name, sizeof fx_tab[fx_n].name, "%s", name);
        fx_tab[fx_n++].t = x;
        count++;
    }
    fclose(f);
    return count;
}

static const mw_tensor *fx(const char *name)
{
    for (int i = 0; i < fx_n; i++) if (!strcmp(fx_tab[i].name, name)) return &fx_tab[i].t;
    printf("  fixture %s missing\n", name);
    mwt_cur_failed = 1;
    return NULL;
}

static void fx_free(void)
{
    for (int i = 0; i < fx_n; i++) mw_tensor_release(&fx_tab[i].t);
    fx_n = 0;
}

/* element-wise |got - want| <= atol + rtol |want|, NaN matching NaN, same shape and dtype;
 * where names the check in the failure message. Releases nothing. */
static int close_to(const char *where, const mw_tensor *got, const mw_tensor *want, double atol, double rtol)
{
    if (!got || !want || !got->storage) { printf("  %s: missing tensor\n", where); mwt_cur_failed = 1; return 0; }
    char a[256], b[256];
    if (got->ndim != want->ndim || memcmp(got->shape, want->shape, sizeof(int64_t) * got->ndim)) {
        printf("  %s: shape %s, expected %s\n", where, mw_tensor_shape_str(a, sizeof a, got),
               mw_tensor_shape_str(b, sizeof b, want));
        mwt_cur_failed = 1;
        return 0;
    }
    if (got->dtype != want->dtype) {
        printf("  %s: dtype %s, expected %s\n", where, mw_dtype_name(got->dtype), mw_dtype_name(want->dtype));
        mwt_cur_failed = 1;
        return 0;
    }
    int64_t n = mw_tensor_numel(got), idx[MW_MAXDIM] = {0};
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = mw_tensor_get(got, idx), y = mw_tensor_get(want, idx);
        int ok = (isnan(x) && isnan(y)) || x == y || fabs(x - y) <= atol + rtol * fabs(y);
        if (!ok && bad++ < 3) printf("  %s: element %lld: %.9g, expected %.9g\n", where, (long long)i, x, y);
        for (int d = got->ndim - 1; d >= 0; d--) { if (++idx[d] < got->shape[d]) break; idx[d] = 0; }
    }
    if (bad) { mwt_cur_failed = 1; return 0; }
    return 1;
}
#endif
