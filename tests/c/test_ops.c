/* test_ops.c - element-wise ops, reductions, softmax, cumsum, sort, topk (core/ops.c).
 * Expected values: tests/fixtures/ops.txt, written by PyTorch (tests/fixtures/gen_ops.py), and
 * closed forms worked out in the comments. */
#include "mw_tensor.h"
#include "mwfixture.h"
#include "mwtest.h"

#include <stdint.h>
#include <stdlib.h>

#define TOL_A 1e-6
#define TOL_R 2e-6

/* r = op(fixture a, fixture b), compared with fixture want */
static void bin_case(const char *want, const char *a, const char *b, mw_binop op)
{
    const mw_tensor *A = fx(a), *B = fx(b), *W = fx(want);
    if (!A || !B || !W) return;
    mw_tensor r;
    CHECK_OK(mw_binary(&r, A, B, op));
    close_to(want, &r, W, TOL_A, TOL_R);
    mw_tensor_release(&r);
}

static void un_case(const char *want, const char *a, mw_unop op)
{
    const mw_tensor *A = fx(a), *W = fx(want);
    if (!A || !W) return;
    mw_tensor r;
    CHECK_OK(mw_unary(&r, A, op));
    close_to(want, &r, W, TOL_A, TOL_R);
    mw_tensor_release(&r);
}

static void red_case(const char *want, const char *a, mw_redop op, uint32_t dims, int keepdim, int unbiased)
{
    const mw_tensor *A = fx(a), *W = fx(want);
    if (!A || !W) return;
    mw_tensor r;
    CHECK_OK(mw_reduce(&r, A, op, dims, keepdim, unbiased));
    close_to(want, &r, W, 1e-5, 1e-5);
    mw_tensor_release(&r);
}

/* X.permute(2,0,1): a [4,2,3] view with strides (1,12,4) */
static void permuted_X(mw_tensor *out)
{
    int perm[3] = {2, 0, 1};
    CHECK_OK(mw_tensor_permute(out, fx("in_X"), perm));
}

static mw_tensor f32_vec(int n, const float *v)
{
    mw_tensor t;
    int64_t shape[1] = {n};
    if (mw_tensor_from_data(&t, MW_F32, 1, shape, v)) memset(&t, 0, sizeof t);
    return t;
}

static double at1(const mw_tensor *t, int64_t i) { return mw_tensor_get(t, &i); }

/* ---------------------------------------------------------------- element-wise */

static void test_binary_broadcast(void)
{
    bin_case("add_XY", "in_X", "in_Y", MW_ADD);
    bin_case("sub_XY", "in_X", "in_Y", MW_SUB);
    bin_case("mul_XY", "in_X", "in_Y", MW_MUL);
    bin_case("div_XY", "in_X", "in_Y", MW_DIV);
    bin_case("maximum_XY", "in_X", "in_Y", MW_MAXIMUM);
    bin_case("minimum_XY", "in_X", "in_Y", MW_MINIMUM);
    bin_case("pow_PQ", "in_P", "in_Q", MW_POW);
    bin_case("lt_XZ", "in_X", "in_Z", MW_LT);
    bin_case("ge_XZ", "in_X", "in_Z", MW_GE);
}

static void test_binary_dtypes(void)
{
    bin_case("add_IJ", "in_I", "in_J", MW_ADD); /* i64 + i64 -> i64 */
    bin_case("mul_IJ", "in_I", "in_J", MW_MUL);
    bin_case("div_IJ", "in_I", "in_J", MW_DIV); /* true division -> f32 */
    bin_case("eq_IJ", "in_I", "in_J", MW_EQ);   /* -> bool */
    bin_case("add_XI", "in_X", "in_I", MW_ADD); /* f32 + i64 -> f32 */
    /* logical and/or of bools: closed form truth table */
    uint8_t a[4] = {0, 0, 1, 1}, b[4] = {0, 1, 0, 1};
    int64_t shape[1] = {4};
    mw_tensor ta, tb, r;
    CHECK_OK(mw_tensor_from_data(&ta, MW_BOOL, 1, shape, a));
    CHECK_OK(mw_tensor_from_data(&tb, MW_BOOL, 1, shape, b));
    CHECK_OK(mw_binary(&r, &ta, &tb, MW_AND));
    CHECK(r.dtype == MW_BOOL);
    for (int i = 0; i < 4; i++) CHECK(at1(&r, i) == (a[i] && b[i]));
    mw_tensor_release(&r);
    CHECK_OK(mw_binary(&r, &ta, &tb, MW_OR));
    for (int i = 0; i < 4; i++) CHECK(at1(&r, i) == (a[i] || b[i]));
    mw_tensor_release(&r);
    /* bool + bool is arithmetic: i64 */
    CHECK_OK(mw_binary(&r, &ta, &tb, MW_ADD));
    CHECK(r.dtype == MW_I64);
    for (int i = 0; i < 4; i++) CHECK(at1(&r, i) == a[i] + b[i]);
    mw_tensor_release(&r);
    mw_tensor_release(&ta);
    mw_tensor_release(&tb);
    /* long mixed rows (past the 256-element conversion chunk), broadcast both ways:
     * ii [2,600] i64 = k (flat index), ff [600] f32 = 0.25 j, mm [2,1] bool = (1, 0) */
    int64_t s2[2] = {2, 600}, s1[1] = {600}, sm[2] = {2, 1};
    int64_t *iv = malloc(1200 * sizeof *iv);
    float fv[600];
    uint8_t mv[2] = {1, 0};
    for (int k = 0; k < 1200; k++) iv[k] = k;
    for (int j = 0; j < 600; j++) fv[j] = 0.25f * j;
    mw_tensor ii, ff, mm;
    CHECK_OK(mw_tensor_from_data(&ii, MW_I64, 2, s2, iv));
    CHECK_OK(mw_tensor_from_data(&ff, MW_F32, 1, s1, fv));
    CHECK_OK(mw_tensor_from_data(&mm, MW_BOOL, 2, sm, mv));
    mw_tensor r1, r2, r3;
    CHECK_OK(mw_binary(&r1, &ii, &ff, MW_SUB));      /* k - 0.25 j, f32 */
    CHECK_OK(mw_binary(&r2, &ff, &ii, MW_GT));       /* 0.25 j > k: never (j <= k) */
    CHECK_OK(mw_binary(&r3, &ff, &mm, MW_MUL));      /* [2,600]: row 0 = ff, row 1 = 0 */
    CHECK(r1.dtype == MW_F32 && r2.dtype == MW_BOOL && r3.dtype == MW_F32);
    int bad = 0;
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 600; j++) {
            int64_t ij[2] = {i, j};
            double k = i * 600 + j;
            bad += mw_tensor_get(&r1, ij) != (float)(k - 0.25 * j);
            bad += mw_tensor_get(&r2, ij) != 0;
            bad += mw_tensor_get(&r3, ij) != (i == 0 ? 0.25 * j : 0.0);
        }
    CHECK_MSG(bad == 0, "%d wrong elements in mixed-dtype rows", bad);
    mw_tensor_release(&r1);
    mw_tensor_release(&r2);
    mw_tensor_release(&r3);
    mw_tensor_release(&ii);
    mw_tensor_release(&ff);
    mw_tensor_release(&mm);
    free(iv);
}

static void test_binary_strided(void)
{
    /* permuted operand */
    mw_tensor xp, r;
    permuted_X(&xp);
    CHECK(!mw_tensor_is_contiguous(&xp));
    CHECK_OK(mw_binary(&r, &xp, fx("in_W"), MW_ADD));
    close_to("add_XpW", &r, fx("add_XpW"), TOL_A, TOL_R);
    mw_tensor_release(&r);
    /* an expanded (stride 0) operand gives the same as broadcasting */
    mw_tensor ye;
    int64_t shape[3] = {2, 3, 4};
    CHECK_OK(mw_tensor_expand(&ye, fx("in_Y"), 3, shape));
    CHECK_OK(mw_binary(&r, fx("in_X"), &ye, MW_ADD));
    close_to("add_XY via expand", &r, fx("add_XY"), TOL_A, TOL_R);
    mw_tensor_release(&r);
    /* in place through a permuted view of a copy of X: the copy then holds permute(X + W') */
    mw_tensor c, cp;
    int perm[3] = {2, 0, 1};
    CHECK_OK(mw_binary_scalar(&c, fx("in_X"), 0.0, MW_ADD, 0)); /* fresh contiguous copy */
    CHECK_OK(mw_tensor_permute(&cp, &c, perm));
    CHECK_OK(mw_binary_(&cp, fx("in_W"), MW_ADD));
    close_to("add_ through view", &cp, fx("add_XpW"), TOL_A, TOL_R);
    /* and the in-place form refuses to write into an expanded view */
    CHECK_ERR(mw_binary_(&ye, fx("in_X"), MW_ADD), "expanded");
    mw_tensor_release(&cp);
    mw_tensor_release(&c);
    mw_tensor_release(&ye);
    mw_tensor_release(&xp);
}

static void test_binary_scalar(void)
{
    mw_tensor r;
    CHECK_OK(mw_binary_scalar(&r, fx("in_X"), 2.0, MW_SUB, 1)); /* 2 - X */
    close_to("rsub_2_X", &r, fx("rsub_2_X"), TOL_A, TOL_R);
    mw_tensor_release(&r);
    CHECK_OK(mw_binary_scalar(&r, fx("in_X"), 3.0, MW_MUL, 0));
    close_to("mul_X_3", &r, fx("mul_X_3"), TOL_A, TOL_R);
    mw_tensor_release(&r);
    CHECK_OK(mw_binary_scalar(&r, fx("in_I"), 2.0, MW_ADD, 0)); /* stays i64 */
    close_to("add_I_2", &r, fx("add_I_2"), 0, 0);
    mw_tensor_release(&r);
    CHECK_OK(mw_binary_scalar(&r, fx("in_I"), 0.5, MW_MUL, 0)); /* becomes f32 */
    close_to("mul_I_half", &r, fx("mul_I_half"), TOL_A, TOL_R);
    mw_tensor_release(&r);
    CHECK_OK(mw_binary_scalar(&r, fx("in_X"), 0.0, MW_GT, 0));
    close_to("gt_X_0", &r, fx("gt_X_0"), 0, 0);
    mw_tensor_release(&r);
    /* integer power: 3^4 = 81, (-2)^3 = -8, 2^0 = 1; a negative exponent is an error (torch) */
    int64_t v[3] = {3, -2, 2}, e[3] = {4, 3, 0}, shape[1] = {3};
    mw_tensor tv, te;
    CHECK_OK(mw_tensor_from_data(&tv, MW_I64, 1, shape, v));
    CHECK_OK(mw_tensor_from_data(&te, MW_I64, 1, shape, e));
    CHECK_OK(mw_binary(&r, &tv, &te, MW_POW));
    CHECK(r.dtype == MW_I64);
    CHECK(at1(&r, 0) == 81 && at1(&r, 1) == -8 && at1(&r, 2) == 1);
    mw_tensor_release(&r);
    CHECK_ERR(mw_binary_scalar(&r, &tv, -1.0, MW_POW, 0), "integers to negative integer powers");
    mw_tensor_release(&tv);
    mw_tensor_release(&te);
}

static void test_binary_inplace(void)
{
    mw_tensor c;
    CHECK_OK(mw_binary_scalar(&c, fx("in_X"), 0.0, MW_ADD, 0));
    CHECK_OK(mw_binary_(&c, fx("in_Y"), MW_MUL));
    close_to("mul_ in place", &c, fx("mul_XY"), TOL_A, TOL_R);
    /* the result shape must be the first operand's */
    mw_tensor y;
    CHECK_OK(mw_binary_scalar(&y, fx("in_Y"), 0.0, MW_ADD, 0));
    CHECK_ERR(mw_binary_(&y, &c, MW_ADD), "add_: [3,1] and [2,3,4]");
    /* and so must the dtype: i64 += f32 would be f32 */
    mw_tensor i;
    CHECK_OK(mw_binary_scalar(&i, fx("in_I"), 0.0, MW_ADD, 0));
    CHECK_ERR(mw_binary_(&i, fx("in_X"), MW_ADD), "can't be stored in a int64");
    CHECK_ERR(mw_binary_(&c, fx("in_X"), MW_LT), "lt_");
    /* i64 += i64 is fine */
    CHECK_OK(mw_binary_(&i, fx("in_J"), MW_ADD));
    close_to("add_ i64", &i, fx("add_IJ"), 0, 0);
    mw_tensor_release(&i);
    mw_tensor_release(&y);
    mw_tensor_release(&c);
}

static void test_binary_errors(void)
{
    mw_tensor r = {0};
    CHECK_ERR(mw_binary(&r, fx("in_X"), fx("in_W"), MW_ADD), "add: [2,3,4] and [2,3]: shapes cannot be broadcast");
    CHECK(r.storage == NULL);
    CHECK_ERR(mw_binary(&r, fx("in_X"), fx("in_W"), MW_LT), "lt: [2,3,4] and [2,3]");
    CHECK_ERR(mw_where(&r, fx("in_X"), fx("in_X"), fx("in_W")), "where: [2,3,4] and [2,3,4] and [2,3]");
    CHECK_ERR(mw_binary(&r, fx("in_X"), fx("in_X"), (mw_binop)99), "unknown op");
    CHECK_ERR(mw_unary(&r, fx("in_X"), (mw_unop)99), "unknown op");
}

static void test_zero_dim_and_empty(void)
{
    /* a 0-dim tensor is a scalar: [4] + () */
    mw_tensor s, r, e;
    CHECK_OK(mw_tensor_scalar(&s, MW_F32, 10.0));
    CHECK_OK(mw_binary(&r, fx("in_Z"), &s, MW_ADD));
    CHECK(r.ndim == 1 && r.shape[0] == 4);
    for (int i = 0; i < 4; i++) CHECK_NEAR(at1(&r, i), at1(fx("in_Z"), i) + 10.0, 1e-6);
    mw_tensor_release(&r);
    /* () + () stays 0-dim */
    CHECK_OK(mw_binary(&r, &s, &s, MW_MUL));
    CHECK(r.ndim == 0);
    CHECK_NEAR(mw_tensor_get(&r, NULL), 100.0, 0);
    mw_tensor_release(&r);
    /* empty: [0,3] + [3] -> [0,3] */
    int64_t shape[2] = {0, 3};
    CHECK_OK(mw_tensor_zeros(&e, MW_F32, 2, shape));
    CHECK_ERR(mw_binary(&r, &e, fx("in_Y"), MW_ADD), "add: [0,3] and [3,1]: shapes cannot be broadcast");
    mw_tensor ones3;
    float o[3] = {1, 1, 1};
    ones3 = f32_vec(3, o);
    CHECK_OK(mw_binary(&r, &e, &ones3, MW_ADD));
    CHECK(r.ndim == 2 && r.shape[0] == 0 && r.shape[1] == 3);
    mw_tensor_release(&r);
    /* sum over an empty dim is 0, prod 1, amax an error */
    CHECK_OK(mw_reduce(&r, &e, MW_SUM, 1u << 0, 0, 0));
    CHECK(r.ndim == 1 && r.shape[0] == 3 && at1(&r, 0) == 0 && at1(&r, 2) == 0);
    mw_tensor_release(&r);
    CHECK_OK(mw_reduce(&r, &e, MW_PROD, 1u << 0, 0, 0));
    CHECK(at1(&r, 1) == 1);
    mw_tensor_release(&r);
    CHECK_ERR(mw_reduce(&r, &e, MW_AMAX, 1u << 0, 0, 0), "amax: cannot reduce over a zero-size dimension of [0,3]");
    CHECK_ERR(mw_argmax(&r, &e, 0, 0), "argmax: cannot reduce over a zero-size dimension");
    mw_tensor_release(&ones3);
    mw_tensor_release(&e);
    mw_tensor_release(&s);
}

static void test_unary(void)
{
    un_case("exp_X", "in_X", MW_EXP);
    un_case("log_P", "in_P", MW_LOG);
    un_case("sqrt_P", "in_P", MW_SQRT);
    un_case("abs_X", "in_X", MW_ABS);
    un_case("tanh_X", "in_X", MW_TANH);
    un_case("relu_X", "in_X", MW_RELU);
    un_case("gelu_new_X", "in_X", MW_GELU_NEW);
    un_case("sigmoid_X", "in_X", MW_SIGMOID);
    un_case("sin_X", "in_X", MW_SIN);
    un_case("cos_X", "in_X", MW_COS);
    un_case("neg_X", "in_X", MW_NEG);
    un_case("floor_H", "in_H", MW_FLOOR);
    un_case("ceil_H", "in_H", MW_CEIL);
    un_case("round_H", "in_H", MW_ROUND); /* half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2 */
    un_case("sign_X", "in_X", MW_SIGN);
    un_case("neg_I", "in_I", MW_NEG);
    un_case("abs_I", "in_I", MW_ABS);
    un_case("exp_I", "in_I", MW_EXP); /* i64 -> f32 */
    mw_tensor xp, r;
    permuted_X(&xp);
    CHECK_OK(mw_unary(&r, &xp, MW_GELU_NEW));
    close_to("gelu_new_Xp", &r, fx("gelu_new_Xp"), TOL_A, TOL_R);
    mw_tensor_release(&r);
    /* in place, through the permuted view of a copy */
    mw_tensor c, cp;
    int perm[3] = {2, 0, 1};
    CHECK_OK(mw_binary_scalar(&c, fx("in_X"), 0.0, MW_ADD, 0));
    CHECK_OK(mw_tensor_permute(&cp, &c, perm));
    CHECK_OK(mw_unary_(&cp, MW_GELU_NEW));
    close_to("gelu_new_ in place", &cp, fx("gelu_new_Xp"), TOL_A, TOL_R);
    /* not: bool result, x == 0 */
    CHECK_OK(mw_unary(&r, fx("in_I"), MW_NOT));
    CHECK(r.dtype == MW_BOOL);
    int64_t n = mw_tensor_numel(&r), idx[3] = {0};
    for (int64_t i = 0; i < n; i++) {
        CHECK(mw_tensor_get(&r, idx) == (mw_tensor_get(fx("in_I"), idx) == 0));
        for (int d = 2; d >= 0; d--) { if (++idx[d] < r.shape[d]) break; idx[d] = 0; }
    }
    mw_tensor_release(&r);
    /* exp_ on i64 would need f32 */
    mw_tensor i;
    CHECK_OK(mw_binary_scalar(&i, fx("in_I"), 0.0, MW_ADD, 0));
    CHECK_ERR(mw_unary_(&i, MW_EXP), "exp_: result type float32 can't be stored in a int64 tensor [2,3,4]");
    mw_tensor_release(&i);
    mw_tensor_release(&cp);
    mw_tensor_release(&c);
    mw_tensor_release(&xp);
}

static void test_gelu_closed_form(void)
{
    /* gelu_new(0) = 0; gelu_new(x) - gelu_new(-x) = x (the 0.5 x (1 + tanh) form is odd + x/2);
     * far tails: gelu_new(10) = 10, gelu_new(-10) = -0 */
    float v[5] = {0.0f, 1.0f, -1.0f, 10.0f, -10.0f};
    mw_tensor t = f32_vec(5, v), r;
    CHECK_OK(mw_unary(&r, &t, MW_GELU_NEW));
    CHECK_NEAR(at1(&r, 0), 0.0, 0);
    CHECK_NEAR(at1(&r, 1) - at1(&r, 2), 1.0, 1e-6);
    /* gelu_new(1) = 0.5 (1 + tanh(sqrt(2/pi) * 1.044715)) = 0.841191990607... */
    CHECK_NEAR(at1(&r, 1), 0.5 * (1 + tanh(sqrt(2 / M_PI) * 1.044715)), 1e-6);
    CHECK_NEAR(at1(&r, 3), 10.0, 1e-5);
    CHECK_NEAR(at1(&r, 4), 0.0, 1e-5);
    mw_tensor_release(&r);
    mw_tensor_release(&t);
    /* 801 points on [-20, 20] against the tanh form in double */
    float xs[801];
    for (int i = 0; i < 801; i++) xs[i] = -20.0f + 0.05f * i;
    t = f32_vec(801, xs);
    CHECK_OK(mw_unary(&r, &t, MW_GELU_NEW));
    int bad = 0;
    for (int i = 0; i < 801; i++) {
        double x = xs[i], want = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
        if (fabs(at1(&r, i) - want) > 1e-7 + 2e-6 * fabs(want)) bad++;
    }
    CHECK_MSG(bad == 0, "gelu_new off at %d of 801 points", bad);
    mw_tensor_release(&r);
    mw_tensor_release(&t);
}

static void test_clamp_where(void)
{
    mw_tensor r;
    CHECK_OK(mw_clamp(&r, fx("in_X"), -0.5, 0.7));
    close_to("clamp_X", &r, fx("clamp_X"), 0, 0);
    mw_tensor_release(&r);
    CHECK_OK(mw_clamp(&r, fx("in_X"), -0.3, NAN)); /* NAN: no upper bound */
    close_to("clamp_lo_X", &r, fx("clamp_lo_X"), 0, 0);
    mw_tensor_release(&r);
    CHECK_OK(mw_clamp(&r, fx("in_I"), -2, 3));
    close_to("clamp_I", &r, fx("clamp_I"), 0, 0);
    mw_tensor_release(&r);
    /* infinite and fractional bounds on i64: -inf is no bound, 2.5 clamps to 2 */
    CHECK_OK(mw_clamp(&r, fx("in_I"), -INFINITY, 2.5));
    int64_t n = mw_tensor_numel(&r), idx[3] = {0};
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = mw_tensor_get(fx("in_I"), idx);
        bad += mw_tensor_get(&r, idx) != (x > 2 ? 2 : x);
        for (int d = 2; d >= 0; d--) { if (++idx[d] < r.shape[d]) break; idx[d] = 0; }
    }
    CHECK_MSG(bad == 0, "%d wrong", bad);
    mw_tensor_release(&r);
    mw_tensor cond;
    CHECK_OK(mw_binary_scalar(&cond, fx("in_X"), 0.0, MW_GT, 0));
    CHECK_OK(mw_where(&r, &cond, fx("in_X"), fx("in_Y")));
    close_to("where_X_Y", &r, fx("where_X_Y"), 0, 0);
    mw_tensor_release(&r);
    mw_tensor_release(&cond);
}

static void test_nan_inf(void)
{
    float v[4] = {1.0f, NAN, -INFINITY, 2.0f};
    float w[4] = {0.0f, 0.0f, 0.0f, NAN};
    mw_tensor a = f32_vec(4, v), b = f32_vec(4, w), r;
    /* maximum / minimum propagate NaN from either side */
    CHECK_OK(mw_binary(&r, &a, &b, MW_MAXIMUM));
    CHECK(at1(&r, 0) == 1 && isnan(at1(&r, 1)) && at1(&r, 2) == 0 && isnan(at1(&r, 3)));
    mw_tensor_release(&r);
    CHECK_OK(mw_binary(&r, &a, &b, MW_MINIMUM));
    CHECK(at1(&r, 0) == 0 && isnan(at1(&r, 1)) && isinf(at1(&r, 2)) && isnan(at1(&r, 3)));
    mw_tensor_release(&r);
    /* comparisons with NaN are false, NE true */
    CHECK_OK(mw_binary(&r, &a, &a, MW_EQ));
    CHECK(at1(&r, 0) == 1 && at1(&r, 1) == 0 && at1(&r, 2) == 1);
    mw_tensor_release(&r);
    CHECK_OK(mw_binary(&r, &a, &a, MW_NE));
    CHECK(at1(&r, 1) == 1 && at1(&r, 0) == 0);
    mw_tensor_release(&r);
    /* relu and clamp keep NaN */
    CHECK_OK(mw_unary(&r, &a, MW_RELU));
    CHECK(isnan(at1(&r, 1)) && at1(&r, 2) == 0);
    mw_tensor_release(&r);
    CHECK_OK(mw_clamp(&r, &a, 0, 1));
    CHECK(isnan(at1(&r, 1)) && at1(&r, 2) == 0 && at1(&r, 3) == 1);
    mw_tensor_release(&r);
    /* amax / argmax see the NaN */
    CHECK_OK(mw_reduce(&r, &a, MW_AMAX, 0, 0, 0));
    CHECK(isnan(mw_tensor_get(&r, NULL)));
    mw_tensor_release(&r);
    CHECK_OK(mw_argmax(&r, &a, 0, 0));
    CHECK(mw_tensor_get(&r, NULL) == 1);
    mw_tensor_release(&r);
    /* sort puts NaN last ascending, first descending */
    mw_tensor sv, si;
    CHECK_OK(mw_sort(&sv, &si, &a, 0, 0));
    CHECK(isinf(at1(&sv, 0)) && at1(&sv, 1) == 1 && at1(&sv, 2) == 2 && isnan(at1(&sv, 3)));
    CHECK(at1(&si, 0) == 2 && at1(&si, 3) == 1);
    mw_tensor_release(&sv);
    mw_tensor_release(&si);
    CHECK_OK(mw_sort(&sv, &si, &a, 0, 1));
    CHECK(isnan(at1(&sv, 0)) && at1(&sv, 1) == 2 && at1(&si, 0) == 1);
    mw_tensor_release(&sv);
    mw_tensor_release(&si);
    mw_tensor_release(&a);
    mw_tensor_release(&b);
}

static void test_softmax_masked_rows(void)
{
    /* [3,3]: a causal-masked pattern, a row fully -inf, a row with one finite entry */
    float v[9] = {0.0f, -INFINITY, -INFINITY,
                  -INFINITY, -INFINITY, -INFINITY,
                  logf(1.0f), logf(2.0f), logf(3.0f)};
    int64_t shape[2] = {3, 3};
    mw_tensor a, r;
    CHECK_OK(mw_tensor_from_data(&a, MW_F32, 2, shape, v));
    CHECK_OK(mw_softmax(&r, &a, -1));
    int64_t i00[2] = {0, 0}, i01[2] = {0, 1}, i10[2] = {1, 0}, i12[2] = {1, 2};
    int64_t i20[2] = {2, 0}, i21[2] = {2, 1}, i22[2] = {2, 2}, i11[2] = {1, 1};
    CHECK(mw_tensor_get(&r, i00) == 1 && mw_tensor_get(&r, i01) == 0);
    CHECK(mw_tensor_get(&r, i10) == 0 && mw_tensor_get(&r, i12) == 0); /* zeros, not NaN */
    CHECK_NEAR(mw_tensor_get(&r, i20), 1.0 / 6, 1e-7); /* softmax(log 1, log 2, log 3) = (1,2,3)/6 */
    CHECK_NEAR(mw_tensor_get(&r, i21), 2.0 / 6, 1e-7);
    CHECK_NEAR(mw_tensor_get(&r, i22), 3.0 / 6, 1e-7);
    mw_tensor_release(&r);
    CHECK_OK(mw_log_softmax(&r, &a, 1));
    CHECK(mw_tensor_get(&r, i00) == 0 && isinf(mw_tensor_get(&r, i01)));
    CHECK(isinf(mw_tensor_get(&r, i10)) && mw_tensor_get(&r, i10) < 0); /* log of probability 0 */
    CHECK_NEAR(mw_tensor_get(&r, i22), log(0.5), 1e-6);
    mw_tensor_release(&r);
    /* the same along dim 0 of the transpose (strided path) */
    mw_tensor t;
    CHECK_OK(mw_tensor_transpose(&t, &a, 0, 1));
    CHECK_OK(mw_softmax(&r, &t, 0));
    CHECK(mw_tensor_get(&r, i01) == 0 && mw_tensor_get(&r, i00) == 1);
    CHECK_NEAR(mw_tensor_get(&r, i12), 2.0 / 6, 1e-7);
    CHECK(mw_tensor_get(&r, i10) == 0 && mw_tensor_get(&r, i11) == 0); /* the all -inf column */
    mw_tensor_release(&r);
    CHECK_OK(mw_log_softmax(&r, &t, 0));
    CHECK(isinf(mw_tensor_get(&r, i10)) && mw_tensor_get(&r, i10) < 0);
    CHECK_NEAR(mw_tensor_get(&r, i22), log(0.5), 1e-6);
    CHECK_NEAR(mw_tensor_get(&r, i00), 0.0, 0);
    mw_tensor_release(&r);
    /* logsumexp over dim 0 of the transpose (memory-order path): -inf, 0, log 6 */
    CHECK_OK(mw_reduce(&r, &t, MW_LOGSUMEXP, 1u << 0, 0, 0));
    CHECK(isinf(at1(&r, 1)) && at1(&r, 1) < 0);
    CHECK_NEAR(at1(&r, 0), 0.0, 0);
    CHECK_NEAR(at1(&r, 2), log(6.0), 1e-6);
    mw_tensor_release(&r);
    /* amax / amin over dim 0 see a NaN in the middle of a column */
    float nv[6] = {1, 2, NAN, 5, 3, 0};
    int64_t s23[2] = {3, 2};
    mw_tensor nn;
    CHECK_OK(mw_tensor_from_data(&nn, MW_F32, 2, s23, nv));
    CHECK_OK(mw_reduce(&r, &nn, MW_AMAX, 1u << 0, 0, 0));
    CHECK(isnan(at1(&r, 0)) && at1(&r, 1) == 5);
    mw_tensor_release(&r);
    CHECK_OK(mw_reduce(&r, &nn, MW_AMIN, 1u << 0, 0, 0));
    CHECK(isnan(at1(&r, 0)) && at1(&r, 1) == 0);
    mw_tensor_release(&r);
    mw_tensor_release(&nn);
    /* logsumexp of an all -inf row is -inf; of (log 1, log 2, log 3) is log 6 */
    CHECK_OK(mw_reduce(&r, &a, MW_LOGSUMEXP, 1u << 1, 0, 0));
    CHECK(isinf(at1(&r, 1)) && at1(&r, 1) < 0);
    CHECK_NEAR(at1(&r, 2), log(6.0), 1e-6);
    CHECK_NEAR(at1(&r, 0), 0.0, 0);
    mw_tensor_release(&r);
    /* large logits do not overflow: softmax(1000, 1000) = (0.5, 0.5) */
    float big[2] = {1000.0f, 1000.0f};
    mw_tensor bt = f32_vec(2, big);
    CHECK_OK(mw_softmax(&r, &bt, 0));
    CHECK_NEAR(at1(&r, 0), 0.5, 1e-7);
    mw_tensor_release(&r);
    mw_tensor_release(&bt);
    mw_tensor_release(&t);
    mw_tensor_release(&a);
}

/* ---------------------------------------------------------------- reductions */

static void test_reduce(void)
{
    red_case("sum_X_02_keep", "in_X", MW_SUM, (1u << 0) | (1u << 2), 1, 0);
    red_case("sum_X_all", "in_X", MW_SUM, 0, 0, 0);
    red_case("mean_X_1", "in_X", MW_MEAN, 1u << 1, 0, 0);
    red_case("prod_X_2", "in_X", MW_PROD, 1u << 2, 0, 0);
    red_case("amax_X_0", "in_X", MW_AMAX, 1u << 0, 0, 0);
    red_case("amin_X_12", "in_X", MW_AMIN, (1u << 1) | (1u << 2), 0, 0);
    red_case("norm_X_2", "in_X", MW_NORM2, 1u << 2, 0, 0);
    red_case("logsumexp_X_1", "in_X", MW_LOGSUMEXP, 1u << 1, 0, 0);
    red_case("var_X_01", "in_X", MW_VAR, 3, 0, 1);
    red_case("var_X_2_biased", "in_X", MW_VAR, 1u << 2, 0, 0);
    red_case("std_X_all", "in_X", MW_STD, 0, 0, 1);
    red_case("sum_I_1", "in_I", MW_SUM, 1u << 1, 0, 0);   /* i64 stays i64 */
    red_case("amax_I_2", "in_I", MW_AMAX, 1u << 2, 0, 0);
    mw_tensor xp, r;
    permuted_X(&xp);
    CHECK_OK(mw_reduce(&r, &xp, MW_SUM, 1u << 0, 0, 0));
    close_to("sum_Xp_0", &r, fx("sum_Xp_0"), 1e-5, 1e-5);
    mw_tensor_release(&r);
    CHECK_ERR(mw_reduce(&r, &xp, MW_SUM, 1u << 3, 0, 0), "sum: dims mask 0x8 out of range for [4,2,3]");
    CHECK_ERR(mw_reduce(&r, &xp, (mw_redop)42, 0, 0, 0), "unknown op");
    mw_tensor_release(&xp);
}

static void test_reduce_accuracy(void)
{
    /* 2^20 copies of 0.1f: the sum is 2^20 * 0.1f = 104857.60156... exactly in double; a float
     * accumulator drifts by ~1e-3 relative. mean must be 0.1f. */
    int64_t n = 1 << 20, shape[1] = {n};
    mw_tensor t, r;
    CHECK_OK(mw_tensor_full(&t, MW_F32, 1, shape, 0.1));
    CHECK_OK(mw_reduce(&r, &t, MW_SUM, 0, 0, 0));
    CHECK_NEAR(mw_tensor_get(&r, NULL), (double)n * (double)0.1f, 0.02);
    mw_tensor_release(&r);
    CHECK_OK(mw_reduce(&r, &t, MW_MEAN, 0, 0, 0));
    CHECK(mw_tensor_get(&r, NULL) == (double)0.1f);
    mw_tensor_release(&r);
    mw_tensor_release(&t);
    /* variance of 10000 +- 1 (alternating, 8 values): biased 1, unbiased 8/7 */
    float v[8];
    for (int i = 0; i < 8; i++) v[i] = i % 2 ? 10001.0f : 9999.0f;
    t = f32_vec(8, v);
    CHECK_OK(mw_reduce(&r, &t, MW_VAR, 0, 0, 0));
    CHECK_NEAR(mw_tensor_get(&r, NULL), 1.0, 1e-9);
    mw_tensor_release(&r);
    CHECK_OK(mw_reduce(&r, &t, MW_STD, 0, 1, 1));
    CHECK(r.ndim == 1 && r.shape[0] == 1);
    CHECK_NEAR(at1(&r, 0), sqrt(8.0 / 7.0), 1e-7);
    mw_tensor_release(&r);
    mw_tensor_release(&t);
    /* cumsum of the same 0.1f in double: element k is (k+1) * 0.1f to float precision */
    CHECK_OK(mw_tensor_full(&t, MW_F32, 1, shape, 0.1));
    CHECK_OK(mw_cumsum(&r, &t, 0));
    CHECK_NEAR(at1(&r, n - 1), (double)n * (double)0.1f, 0.02);
    mw_tensor_release(&r);
    mw_tensor_release(&t);
}

static void test_max_min_arg(void)
{
    mw_tensor v, i, r;
    CHECK_OK(mw_max_dim(&v, &i, fx("in_T"), 1, 0)); /* ties: the first index, as torch */
    close_to("max_T_1_values", &v, fx("max_T_1_values"), 0, 0);
    close_to("max_T_1_indices", &i, fx("max_T_1_indices"), 0, 0);
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    CHECK_OK(mw_min_dim(&v, &i, fx("in_X"), 0, 1));
    close_to("min_X_0_values", &v, fx("min_X_0_values"), 0, 0);
    close_to("min_X_0_indices", &i, fx("min_X_0_indices"), 0, 0);
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    CHECK_OK(mw_argmax(&r, fx("in_X"), INT32_MIN, 0));
    close_to("argmax_X_flat", &r, fx("argmax_X_flat"), 0, 0);
    mw_tensor_release(&r);
    CHECK_OK(mw_argmax(&r, fx("in_X"), INT32_MIN, 1)); /* keepdim: [1,1,1] */
    CHECK(r.ndim == 3 && r.shape[0] == 1 && r.shape[2] == 1);
    int64_t z[3] = {0, 0, 0};
    CHECK(mw_tensor_get(&r, z) == mw_tensor_get(fx("argmax_X_flat"), NULL));
    mw_tensor_release(&r);
    CHECK_OK(mw_argmin(&r, fx("in_T"), 0, 0));
    close_to("argmin_T_0", &r, fx("argmin_T_0"), 0, 0);
    mw_tensor_release(&r);
    CHECK_OK(mw_argmax(&r, fx("in_T"), -1, 0));
    close_to("argmax_T_1", &r, fx("argmax_T_1"), 0, 0);
    mw_tensor_release(&r);
    /* argmax over the flattened permuted view: the same element as in X */
    mw_tensor xp;
    permuted_X(&xp);
    CHECK_OK(mw_argmax(&r, &xp, INT32_MIN, 0));
    int64_t k = (int64_t)mw_tensor_get(&r, NULL); /* index into xp's [4,2,3] row-major order */
    int64_t pidx[3] = {k / 6, (k / 3) % 2, k % 3}, xidx[3] = {pidx[1], pidx[2], pidx[0]};
    int64_t fl = (int64_t)mw_tensor_get(fx("argmax_X_flat"), NULL);
    int64_t want[3] = {fl / 12, (fl / 4) % 3, fl % 4};
    CHECK(xidx[0] == want[0] && xidx[1] == want[1] && xidx[2] == want[2]);
    mw_tensor_release(&r);
    CHECK_ERR(mw_argmax(&r, &xp, 3, 0), "argmax: dim 3 out of range for [4,2,3]");
    CHECK_ERR(mw_max_dim(&v, &i, &xp, -4, 0), "max: dim -4 out of range for [4,2,3]");
    mw_tensor_release(&xp);
}

static void test_softmax(void)
{
    mw_tensor r, xp;
    CHECK_OK(mw_softmax(&r, fx("in_X"), -1));
    close_to("softmax_X_-1", &r, fx("softmax_X_-1"), 1e-7, 1e-5);
    mw_tensor_release(&r);
    CHECK_OK(mw_softmax(&r, fx("in_X"), 0));
    close_to("softmax_X_0", &r, fx("softmax_X_0"), 1e-7, 1e-5);
    mw_tensor_release(&r);
    CHECK_OK(mw_log_softmax(&r, fx("in_X"), 1));
    close_to("log_softmax_X_1", &r, fx("log_softmax_X_1"), 1e-6, 1e-5);
    mw_tensor_release(&r);
    permuted_X(&xp);
    CHECK_OK(mw_softmax(&r, &xp, -1));
    close_to("softmax_Xp_-1", &r, fx("softmax_Xp_-1"), 1e-7, 1e-5);
    mw_tensor_release(&r);
    CHECK_OK(mw_softmax(&r, fx("in_S"), -1));
    close_to("softmax_S_-1", &r, fx("softmax_S_-1"), 1e-7, 1e-5);
    mw_tensor_release(&r);
    CHECK_OK(mw_log_softmax(&r, fx("in_S"), -1));
    close_to("log_softmax_S_-1", &r, fx("log_softmax_S_-1"), 1e-5, 1e-5);
    mw_tensor_release(&r);
    CHECK_ERR(mw_softmax(&r, &xp, 3), "softmax: dim 3 out of range for [4,2,3]");
    CHECK_ERR(mw_log_softmax(&r, fx("in_I"), 0), "log_softmax: int64 tensor [2,3,4], expected float32");
    mw_tensor_release(&xp);
}

static void test_cumsum(void)
{
    mw_tensor r;
    CHECK_OK(mw_cumsum(&r, fx("in_X"), 1));
    close_to("cumsum_X_1", &r, fx("cumsum_X_1"), 1e-6, 1e-5);
    mw_tensor_release(&r);
    CHECK_OK(mw_cumsum(&r, fx("in_I"), 2));
    close_to("cumsum_I_2", &r, fx("cumsum_I_2"), 0, 0);
    mw_tensor_release(&r);
    CHECK_ERR(mw_cumsum(&r, fx("in_I"), -5), "cumsum: dim -5 out of range");
}

static void test_sort_topk(void)
{
    mw_tensor v, i;
    CHECK_OK(mw_sort(&v, &i, fx("in_T"), 1, 0));
    close_to("sort_T_asc_values", &v, fx("sort_T_asc_values"), 0, 0);
    close_to("sort_T_asc_indices", &i, fx("sort_T_asc_indices"), 0, 0);
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    CHECK_OK(mw_sort(&v, &i, fx("in_T"), -1, 1));
    close_to("sort_T_desc_values", &v, fx("sort_T_desc_values"), 0, 0);
    close_to("sort_T_desc_indices", &i, fx("sort_T_desc_indices"), 0, 0);
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    CHECK_OK(mw_sort(&v, &i, fx("in_X"), 0, 0));
    close_to("sort_X_0_values", &v, fx("sort_X_0_values"), 0, 0);
    close_to("sort_X_0_indices", &i, fx("sort_X_0_indices"), 0, 0);
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    CHECK_OK(mw_topk(&v, &i, fx("in_D"), 3, 1, 1, 1));
    close_to("topk_D_3_values", &v, fx("topk_D_3_values"), 0, 0);
    close_to("topk_D_3_indices", &i, fx("topk_D_3_indices"), 0, 0);
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    CHECK_OK(mw_topk(&v, &i, fx("in_D"), 2, 0, 0, 1));
    close_to("topk_D_2_small_values", &v, fx("topk_D_2_small_values"), 0, 0);
    close_to("topk_D_2_small_indices", &i, fx("topk_D_2_small_indices"), 0, 0);
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    CHECK_OK(mw_topk(&v, &i, fx("in_S"), 4, -1, 1, 1)); /* k*8 <= 50: the selection path */
    close_to("topk_S_4_values", &v, fx("topk_S_4_values"), 0, 0);
    close_to("topk_S_4_indices", &i, fx("topk_S_4_indices"), 0, 0);
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    CHECK_ERR(mw_topk(&v, &i, fx("in_D"), 7, 1, 1, 1), "topk: k = 7 out of range for dim 1 of [3,6]");
    CHECK(v.storage == NULL && i.storage == NULL);
    /* selection and full sort agree on a long row with ties (stable: lower index first) */
    int64_t n = 1000, shape[1] = {n};
    float *buf = malloc(n * sizeof *buf);
    for (int64_t k = 0; k < n; k++) buf[k] = (float)((k * 37) % 101);
    mw_tensor t, sv, si;
    CHECK_OK(mw_tensor_from_data(&t, MW_F32, 1, shape, buf));
    CHECK_OK(mw_topk(&v, &i, &t, 10, 0, 1, 1));
    CHECK_OK(mw_sort(&sv, &si, &t, 0, 1));
    for (int64_t k = 0; k < 10; k++) {
        CHECK(at1(&v, k) == 100); /* the value 100 occurs 10 times among 1000 */
        CHECK(at1(&i, k) == at1(&si, k));
        if (k > 0) CHECK(at1(&i, k) > at1(&i, k - 1));
    }
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    mw_tensor_release(&sv);
    mw_tensor_release(&si);
    mw_tensor_release(&t);
    free(buf);
}

static void test_errors_misc(void)
{
    mw_tensor r = {0}, v = {0}, i = {0};
    mw_tensor b;
    int64_t shape[1] = {3};
    CHECK_OK(mw_tensor_zeros(&b, MW_BOOL, 1, shape));
    CHECK_ERR(mw_clamp(&r, &b, 0, 1), "clamp: bool tensor not supported");
    CHECK_ERR(mw_sort(&v, &i, fx("in_T"), 2, 0), "sort: dim 2 out of range for [3,6]");
    CHECK_ERR(mw_topk(&v, &i, fx("in_T"), -1, 1, 1, 1), "topk: k = -1 out of range");
    CHECK_ERR(mw_softmax(&r, fx("in_X"), -4), "softmax: dim -4 out of range for [2,3,4]");
    CHECK_ERR(mw_argmin(&r, fx("in_T"), 2, 1), "argmin: dim 2 out of range for [3,6]");
    CHECK_ERR(mw_min_dim(&v, &i, fx("in_T"), 5, 0), "min: dim 5 out of range");
    CHECK_ERR(mw_reduce(&r, fx("in_T"), MW_MEAN, 1u << 2, 0, 0), "mean: dims mask 0x4 out of range for [3,6]");
    /* failed calls leave their outputs empty, so releasing them is safe */
    CHECK(r.storage == NULL && v.storage == NULL && i.storage == NULL);
    mw_tensor_release(&r);
    mw_tensor_release(&b);
}

static void test_small_cases(void)
{
    mw_tensor v, i, r;
    /* topk with k = 0 gives empty results */
    CHECK_OK(mw_topk(&v, &i, fx("in_S"), 0, 1, 1, 1));
    CHECK(v.ndim == 2 && v.shape[0] == 4 && v.shape[1] == 0 && i.shape[1] == 0);
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    /* k = n is a full sort */
    CHECK_OK(mw_topk(&v, &i, fx("in_T"), 6, 1, 0, 1));
    close_to("topk k=n", &v, fx("sort_T_asc_values"), 0, 0);
    close_to("topk k=n indices", &i, fx("sort_T_asc_indices"), 0, 0);
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    /* i64 sort and argmax: [3, -1, 7, -1] */
    int64_t d[4] = {3, -1, 7, -1}, shape[1] = {4};
    mw_tensor t;
    CHECK_OK(mw_tensor_from_data(&t, MW_I64, 1, shape, d));
    CHECK_OK(mw_sort(&v, &i, &t, 0, 0));
    CHECK(v.dtype == MW_I64 && at1(&v, 0) == -1 && at1(&v, 1) == -1 && at1(&v, 3) == 7);
    CHECK(at1(&i, 0) == 1 && at1(&i, 1) == 3 && at1(&i, 2) == 0);
    mw_tensor_release(&v);
    mw_tensor_release(&i);
    CHECK_OK(mw_argmax(&r, &t, 0, 0));
    CHECK(r.ndim == 0 && mw_tensor_get(&r, NULL) == 2);
    mw_tensor_release(&r);
    CHECK_OK(mw_argmin(&r, &t, 0, 1)); /* first of the tied minima */
    CHECK(r.ndim == 1 && r.shape[0] == 1 && at1(&r, 0) == 1);
    mw_tensor_release(&r);
    /* mean of i64 is f32 */
    CHECK_OK(mw_reduce(&r, &t, MW_MEAN, 0, 0, 0));
    CHECK(r.dtype == MW_F32 && mw_tensor_get(&r, NULL) == 2.0);
    mw_tensor_release(&r);
    mw_tensor_release(&t);
    /* a 0-dim input: softmax gives 1, sum gives itself */
    mw_tensor s;
    CHECK_OK(mw_tensor_scalar(&s, MW_F32, -3.5));
    CHECK_OK(mw_softmax(&r, &s, 0));
    CHECK(r.ndim == 0 && mw_tensor_get(&r, NULL) == 1.0);
    mw_tensor_release(&r);
    CHECK_OK(mw_reduce(&r, &s, MW_SUM, 0, 0, 0));
    CHECK(r.ndim == 0 && mw_tensor_get(&r, NULL) == -3.5);
    mw_tensor_release(&r);
    mw_tensor_release(&s);
}

int main(void)
{
    if (fx_load("tests/fixtures/ops.txt") <= 0) {
        printf("FAIL - load tests/fixtures/ops.txt\n");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_binary_broadcast);
    RUN(test_binary_dtypes);
    RUN(test_binary_strided);
    RUN(test_binary_scalar);
    RUN(test_binary_inplace);
    RUN(test_binary_errors);
    RUN(test_zero_dim_and_empty);
    RUN(test_unary);
    RUN(test_gelu_closed_form);
    RUN(test_clamp_where);
    RUN(test_nan_inf);
    RUN(test_softmax_masked_rows);
    RUN(test_reduce);
    RUN(test_reduce_accuracy);
    RUN(test_max_min_arg);
    RUN(test_softmax);
    RUN(test_cumsum);
    RUN(test_sort_topk);
    RUN(test_errors_misc);
    RUN(test_small_cases);
    fx_free();
    MW_TEST_MAIN_END();
}
