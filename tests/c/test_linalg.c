/* test_linalg.c - matmul, outer, einsum, svd, eigvals (core/linalg.c).
 * Expected values: tests/fixtures/linalg.txt (PyTorch / numpy, tests/fixtures/gen_ops.py) and
 * closed forms (orthogonality, reconstruction). */
#include "mw_tensor.h"
#include "mwfixture.h"
#include "mwtest.h"

#include <stdlib.h>

#define ATOL 1e-5
#define RTOL 1e-5

static void mm_case(const char *want, const mw_tensor *a, const mw_tensor *b)
{
    mw_tensor r;
    if (!a || !b || !fx(want)) return;
    CHECK_OK(mw_matmul(&r, a, b));
    close_to(want, &r, fx(want), ATOL, RTOL);
    mw_tensor_release(&r);
}

static void test_matmul_basic(void)
{
    mm_case("mm_AB", fx("in_A"), fx("in_B"));
    mm_case("mm_A3B", fx("in_A3"), fx("in_B"));   /* [2,5,7] @ [7,3]: folded into one sgemm */
    mm_case("mm_A4B4", fx("in_A4"), fx("in_B4")); /* [2,1,5,7] @ [3,7,4]: batch broadcast */
    mm_case("mv_Av", fx("in_A"), fx("in_v"));     /* 1-D right: [5] */
    mm_case("vm_vB", fx("in_v"), fx("in_B"));     /* 1-D left: [3] */
    mm_case("dot_vv", fx("in_v"), fx("in_v"));    /* 0-dim */
    mm_case("mv_A3v", fx("in_A3"), fx("in_v"));   /* batched @ 1-D: [2,5] */
    mm_case("vm_vB4", fx("in_v"), fx("in_B4"));   /* 1-D @ batched: [3,4] */
    mw_tensor r;
    CHECK_OK(mw_matmul(&r, fx("in_v"), fx("in_v")));
    CHECK(r.ndim == 0);
    mw_tensor_release(&r);
}

static void test_matmul_strided(void)
{
    /* A @ C^T with C^T a transposed view: CblasTrans, no copy needed */
    mw_tensor ct, r;
    CHECK_OK(mw_tensor_transpose(&ct, fx("in_C"), 0, 1));
    mm_case("mm_ACt", fx("in_A"), &ct);
    mm_case("mm_CtC", &ct, fx("in_C"));
    /* batched transposed left operand */
    mw_tensor a3t;
    CHECK_OK(mw_tensor_transpose(&a3t, fx("in_A3"), 1, 2));
    mm_case("mm_A3tA3", &a3t, fx("in_A3"));
    /* a view with neither dim of unit stride (every other column of a wider matrix): copied.
     * Build W [5,14] with W[:, 2j] = A[:, j], then W[:, ::2] is narrow of a [5,7,2] view. */
    const mw_tensor *A = fx("in_A");
    int64_t wshape[3] = {5, 7, 2};
    mw_tensor w, w0;
    CHECK_OK(mw_tensor_zeros(&w, MW_F32, 3, wshape));
    CHECK_OK(mw_tensor_select(&w0, &w, 2, 0)); /* [5,7] strides (14,2) */
    CHECK(w0.stride[1] == 2);
    CHECK_OK(mw_tensor_copy_(&w0, A));
    mm_case("mm_AB", &w0, fx("in_B"));
    /* a row-broadcast (stride 0) left operand: every row equals v, so each row is v @ B */
    mw_tensor ve;
    int64_t eshape[2] = {4, 7};
    CHECK_OK(mw_tensor_expand(&ve, fx("in_v"), 2, eshape));
    CHECK_OK(mw_matmul(&r, &ve, fx("in_B")));
    CHECK(r.ndim == 2 && r.shape[0] == 4 && r.shape[1] == 3);
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 3; j++) {
            int64_t ij[2] = {i, j};
            CHECK_NEAR(mw_tensor_get(&r, ij), mw_tensor_get(fx("vm_vB"), &j), 1e-5);
        }
    mw_tensor_release(&r);
    mw_tensor_release(&ve);
    mw_tensor_release(&w0);
    mw_tensor_release(&w);
    mw_tensor_release(&a3t);
    mw_tensor_release(&ct);
}

static void test_matmul_errors(void)
{
    mw_tensor r = {0}, s;
    CHECK_ERR(mw_matmul(&r, fx("in_A"), fx("in_C")), "matmul: [5,7] @ [3,7]: inner dimensions differ");
    CHECK(r.storage == NULL);
    CHECK_ERR(mw_matmul(&r, fx("in_A3"), fx("in_B4")), "matmul: [2,5,7] @ [3,7,4]: batch dimensions cannot be broadcast");
    CHECK_ERR(mw_matmul(&r, fx("in_v"), fx("in_w")), "matmul: [7] @ [5]: inner dimensions differ");
    CHECK_OK(mw_tensor_scalar(&s, MW_F32, 2.0));
    CHECK_ERR(mw_matmul(&r, &s, fx("in_A")), "matmul: [] @ [5,7]: both operands need at least 1 dimension");
    mw_tensor i;
    int64_t shape[2] = {7, 3};
    CHECK_OK(mw_tensor_zeros(&i, MW_I64, 2, shape));
    CHECK_ERR(mw_matmul(&r, fx("in_A"), &i), "matmul: [5,7] @ [7,3]: float32 and int64 operands");
    CHECK_ERR(mw_outer(&r, fx("in_A"), fx("in_v")), "outer: float32 [5,7] and float32 [7]: expected two 1-D");
    mw_tensor_release(&i);
    mw_tensor_release(&s);
}

static void test_matmul_empty(void)
{
    /* [3,0] @ [0,4] is a sum over nothing: zeros [3,4] */
    int64_t s1[2] = {3, 0}, s2[2] = {0, 4};
    mw_tensor a, b, r;
    CHECK_OK(mw_tensor_zeros(&a, MW_F32, 2, s1));
    CHECK_OK(mw_tensor_zeros(&b, MW_F32, 2, s2));
    CHECK_OK(mw_matmul(&r, &a, &b));
    CHECK(r.ndim == 2 && r.shape[0] == 3 && r.shape[1] == 4);
    int64_t ij[2] = {2, 3};
    CHECK(mw_tensor_get(&r, ij) == 0);
    mw_tensor_release(&r);
    mw_tensor_release(&a);
    mw_tensor_release(&b);
}

static void test_outer(void)
{
    mw_tensor r;
    CHECK_OK(mw_outer(&r, fx("in_v"), fx("in_w")));
    close_to("outer_vw", &r, fx("outer_vw"), ATOL, RTOL);
    mw_tensor_release(&r);
}

static void ein_case(const char *want, const char *spec, int n, const char *n0, const char *n1, const char *n2)
{
    const mw_tensor *ts[3] = {fx(n0), n > 1 ? fx(n1) : NULL, n > 2 ? fx(n2) : NULL};
    for (int i = 0; i < n; i++) if (!ts[i]) return;
    mw_tensor r;
    CHECK_OK(mw_einsum(&r, spec, n, ts));
    close_to(spec, &r, fx(want), ATOL, RTOL);
    mw_tensor_release(&r);
}

static void test_einsum_notebook(void)
{
    /* the seed notebook's specs */
    ein_case("ein_qk", "seqQ nhead dhead, seqK nhead dhead -> nhead seqQ seqK", 2, "in_q", "in_k", NULL);
    ein_case("ein_e_wu", "seq d_model, d_model seq -> seq", 2, "in_e", "in_wu", NULL);
    ein_case("ein_res_wl", "seq nheads d_model, d_model seq -> seq nheads", 2, "in_res", "in_wl", NULL);
    ein_case("ein_hsd_WQ", "head seq dmodel, dmodel dhead -> head seq dhead", 2, "in_hsd", "in_WQ", NULL);
    ein_case("ein_dq_dk", "nQ seqQ dhead, nK seqK dhead -> nQ nK seqQ seqK", 2, "in_dq", "in_dk", NULL);
}

static void test_einsum_general(void)
{
    ein_case("ein_chain", "a b, b c, c d -> a d", 3, "in_m1", "in_m2", "in_m3");
    ein_case("ein_one", "a b c -> c a", 1, "in_x3", NULL, NULL);
    ein_case("ein_outer", "i, j -> i j", 2, "in_v", "in_w", NULL);
    ein_case("ein_total", "a b c ->", 1, "in_x3", NULL, NULL);
    ein_case("ein_qk", "seqQ nhead dhead,seqK nhead dhead->nhead seqQ seqK", 2, "in_q", "in_k", NULL);
    /* transposed operand: k given as a [dhead, nhead, seqK] view permuted back is the same k */
    mw_tensor kt, r;
    int p[3] = {2, 1, 0};
    CHECK_OK(mw_tensor_permute(&kt, fx("in_k"), p)); /* [3,2,5] */
    const mw_tensor *ts[2] = {fx("in_q"), &kt};
    CHECK_OK(mw_einsum(&r, "seqQ nhead dhead, dhead nhead seqK -> nhead seqQ seqK", 2, ts));
    close_to("einsum with a permuted operand", &r, fx("ein_qk"), ATOL, RTOL);
    mw_tensor_release(&r);
    /* an operand whose kept axes cannot merge into one dim without a copy */
    mw_tensor xp;
    int p2[3] = {1, 0, 2};
    CHECK_OK(mw_tensor_permute(&xp, fx("in_x3"), p2)); /* [3,2,4] */
    const mw_tensor *ts2[2] = {&xp, fx("in_m3")};
    CHECK_OK(mw_einsum(&r, "b a c, c d -> a b d", 2, ts2));
    close_to("einsum needing a copy", &r, fx("ein_perm"), ATOL, RTOL);
    mw_tensor_release(&r);
    mw_tensor_release(&xp);
    mw_tensor_release(&kt);
}

static void test_einsum_errors(void)
{
    mw_tensor r = {0};
    const mw_tensor *qk[2] = {fx("in_q"), fx("in_k")};
    const mw_tensor *qq[2] = {fx("in_q"), fx("in_e")};
    CHECK_ERR(mw_einsum(&r, "a b c, d b c", 2, qk), "missing \"->\"");
    CHECK_ERR(mw_einsum(&r, "a b c, d b c -> a z", 2, qk), "output axis 'z' is in no input");
    CHECK_ERR(mw_einsum(&r, "a b c, d b c -> a a", 2, qk), "output axis 'a' repeated");
    CHECK_ERR(mw_einsum(&r, "a b, d b c -> a d", 2, qk), "operand 0 has shape [4,2,3] but its term names 2 axes");
    CHECK_ERR(mw_einsum(&r, "a b c -> a", 2, qk), "1 terms for 2 operands");
    CHECK_ERR(mw_einsum(&r, "a b c, a b -> a", 2, qq), "axis 'b' has size 2 in one operand and 6 in operand 1 (shape [4,6])");
    CHECK(r.storage == NULL);
    const mw_tensor *qe[2] = {fx("in_q"), fx("in_wu")}; /* [4,2,3] and [6,4] */
    CHECK_ERR(mw_einsum(&r, "a b c, c a -> b", 2, qe), "axis 'c' has size 3 in one operand and 6 in operand 1");
    CHECK_ERR(mw_einsum(&r, "a a c, d b c -> a", 2, qk), "axis 'a' repeated in operand 0");
    CHECK_ERR(mw_einsum(&r, "a b c, d b c -> a+d", 2, qk), "unexpected character '+'");
}

/* |U S Vh - M| small, U^T U = I, singular values as numpy's */
static void check_svd(const mw_tensor *M, const mw_tensor *want_s)
{
    mw_tensor U, S, Vh, us, r, ut, utu;
    CHECK_OK(mw_svd(&U, &S, &Vh, M));
    close_to("singular values", &S, want_s, 1e-5, 1e-5);
    /* U * S (S broadcast over rows) @ Vh */
    mw_tensor s1;
    CHECK_OK(mw_tensor_unsqueeze(&s1, &S, -2));
    CHECK_OK(mw_binary(&us, &U, &s1, MW_MUL));
    CHECK_OK(mw_matmul(&r, &us, &Vh));
    close_to("U S Vh", &r, M, 1e-5, 1e-4);
    CHECK_OK(mw_tensor_transpose(&ut, &U, -1, -2));
    CHECK_OK(mw_matmul(&utu, &ut, &U));
    int nd = utu.ndim;
    int64_t n = mw_tensor_numel(&utu), idx[MW_MAXDIM] = {0};
    for (int64_t i = 0; i < n; i++) {
        double want = idx[nd - 1] == idx[nd - 2] ? 1.0 : 0.0;
        CHECK_NEAR(mw_tensor_get(&utu, idx), want, 1e-5);
        for (int d = nd - 1; d >= 0; d--) { if (++idx[d] < utu.shape[d]) break; idx[d] = 0; }
    }
    mw_tensor_release(&utu);
    mw_tensor_release(&ut);
    mw_tensor_release(&r);
    mw_tensor_release(&us);
    mw_tensor_release(&s1);
    mw_tensor_release(&U);
    mw_tensor_release(&S);
    mw_tensor_release(&Vh);
}

static void test_svd(void)
{
    check_svd(fx("in_M"), fx("svd_M_S")); /* batched [2,5,3]: tall */
    check_svd(fx("in_N"), fx("svd_N_S")); /* [3,6]: wide */
    /* a transposed view of N is [6,3] with the same singular values */
    mw_tensor nt;
    CHECK_OK(mw_tensor_transpose(&nt, fx("in_N"), 0, 1));
    check_svd(&nt, fx("svd_N_S"));
    mw_tensor_release(&nt);
    mw_tensor U, S, Vh;
    CHECK_ERR(mw_svd(&U, &S, &Vh, fx("in_v")), "svd: [7]: expected a matrix");
}

static void test_eigvals(void)
{
    mw_tensor re, im;
    CHECK_OK(mw_eigvals(&re, &im, fx("in_E")));
    /* sort by (real rounded, imag) as the generator did */
    int64_t n = re.shape[0];
    double zr[16], zi[16];
    for (int64_t i = 0; i < n; i++) { zr[i] = mw_tensor_get(&re, &i); zi[i] = mw_tensor_get(&im, &i); }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) {
            double ri = round(zr[i] * 1e4), rj = round(zr[j] * 1e4);
            if (rj < ri || (rj == ri && zi[j] < zi[i])) {
                double t = zr[i]; zr[i] = zr[j]; zr[j] = t;
                t = zi[i]; zi[i] = zi[j]; zi[j] = t;
            }
        }
    for (int64_t i = 0; i < n; i++) {
        CHECK_NEAR(zr[i], mw_tensor_get(fx("eig_E_re"), &i), 1e-4);
        CHECK_NEAR(zi[i], mw_tensor_get(fx("eig_E_im"), &i), 1e-4);
    }
    mw_tensor_release(&re);
    mw_tensor_release(&im);
    /* closed form: a rotation by 90 degrees has eigenvalues +-i; diag(2, 3) has 2 and 3 */
    float rot[8] = {0, -1, 1, 0, 2, 0, 0, 3};
    int64_t shape[3] = {2, 2, 2};
    mw_tensor t;
    CHECK_OK(mw_tensor_from_data(&t, MW_F32, 3, shape, rot));
    CHECK_OK(mw_eigvals(&re, &im, &t));
    int64_t i00[2] = {0, 0}, i01[2] = {0, 1}, i10[2] = {1, 0}, i11[2] = {1, 1};
    CHECK_NEAR(mw_tensor_get(&re, i00), 0, 1e-6);
    CHECK_NEAR(fabs(mw_tensor_get(&im, i00)), 1, 1e-6);
    CHECK_NEAR(mw_tensor_get(&im, i00) + mw_tensor_get(&im, i01), 0, 1e-6);
    CHECK_NEAR(mw_tensor_get(&re, i10) + mw_tensor_get(&re, i11), 5, 1e-6);
    CHECK_NEAR(mw_tensor_get(&re, i10) * mw_tensor_get(&re, i11), 6, 1e-5);
    mw_tensor_release(&re);
    mw_tensor_release(&im);
    mw_tensor_release(&t);
    CHECK_ERR(mw_eigvals(&re, &im, fx("in_A")), "eigvals: [5,7]: expected square matrices");
}

int main(void)
{
    if (fx_load("tests/fixtures/linalg.txt") <= 0) {
        printf("FAIL - load tests/fixtures/linalg.txt\n");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    RUN(test_matmul_basic);
    RUN(test_matmul_strided);
    RUN(test_matmul_errors);
    RUN(test_matmul_empty);
    RUN(test_outer);
    RUN(test_einsum_notebook);
    RUN(test_einsum_general);
    RUN(test_einsum_errors);
    RUN(test_svd);
    RUN(test_eigvals);
    fx_free();
    MW_TEST_MAIN_END();
}
