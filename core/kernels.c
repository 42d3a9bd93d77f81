/* kernels.c - forward and backward kernels of the transformer (see kernels.h for the legend:
 * N rows, C channels, k/n inner/outer sizes, P positions, V vocabulary). Each forward kernel is
 * followed by its backward kernel; every matrix product goes to cblas_sgemm. */
#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ================================================================ matrix products */

/* C [M,N] = alpha op(A) [M,K] @ op(B) [K,N] + beta C. One row (M == 1: a generation step of
 * one position) is a matrix-vector product, which OpenBLAS's sgemv does 2-4x faster than its sgemm
 * (measured: [1,768] @ [768,50257] 7.3 ms vs 16.2 ms, one thread). */
void mw_sgemm(float *C, int64_t ldc, const float *A, int64_t lda, int ta, const float *B, int64_t ldb, int tb,
              int64_t M, int64_t N, int64_t K, float alpha, float beta) {
    if (M == 1 && N > 1 && K > 0) {
        /* C[0,:] = alpha op(B)^T a + beta C[0,:]; a = row 0 of op(A): stride 1, or lda when A is
         * stored transposed ([K,1]) */
        cblas_sgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, (int)(tb ? N : K), (int)(tb ? K : N), alpha, B,
                    (int)ldb, A, ta ? (int)lda : 1, beta, C, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N,
                (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* out [N,n] rows (row stride ld) = bias [n] */
void mw_fill_rows(float *out, int64_t ld, const float *bias, int64_t N, int64_t n) {
    for (int64_t i = 0; i < N; i++) {
        float *o = out + i * ld;
        if (bias) memcpy(o, bias, (size_t)n * sizeof(float));
        else memset(o, 0, (size_t)n * sizeof(float));
    }
}

/* out [N,n] = in [N,k] @ W [k,n] + b [n] */
void mw_linear_forward(float *out, const float *in, const float *W, const float *b, int64_t N, int64_t k,
                       int64_t n) {
    if (b) mw_fill_rows(out, n, b, N, n);
    mw_sgemm(out, n, in, k, 0, W, n, 0, N, n, k, 1.0f, b ? 1.0f : 0.0f);
}

/* out [N,n] += b [n] on every row; its backward is mw_colsum_backward */
void mw_bias_add_forward(float *out, const float *b, int64_t N, int64_t n) {
    for (int64_t i = 0; i < N; i++) {
        float *r = out + i * n;
        for (int64_t j = 0; j < n; j++) r[j] += b[j];
    }
}

/* db [n] += colsum(dout [N,n]) */
void mw_colsum_backward(float *db, const float *dout, int64_t N, int64_t n) {
    for (int64_t i = 0; i < N; i++) {
        const float *r = dout + i * n;
        for (int64_t j = 0; j < n; j++) db[j] += r[j];
    }
}

/* dW [k,n] += in^T @ dout; db [n] += colsum(dout); din [N,k] (=/+=) dout [N,n] @ W^T */
void mw_linear_backward(float *din, int acc, float *dW, float *db, const float *dout, const float *in,
                        const float *W, int64_t N, int64_t k, int64_t n) {
    if (dW) mw_sgemm(dW, n, in, k, 1, dout, n, 0, k, n, N, 1.0f, 1.0f);
    if (db) mw_colsum_backward(db, dout, N, n);
    if (din) mw_sgemm(din, k, dout, n, 0, W, n, 1, N, k, n, 1.0f, acc ? 1.0f : 0.0f);
}

/* out [n] = x + y */
void mw_add_forward(float *out, const float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = x[i] + y[i];
}

/* ================================================================ LayerNorm */

/* out [N,C] = x - mean, scale [N] = sqrt(var + eps), mean [N] (optional) */
void mw_layernorm_center_forward(float *out, float *scale, float *mean, const float *x, int64_t N, int64_t C,
                                 double eps) {
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * C;
        float *oi = out + i * C;
        double mu = 0;
        for (int64_t j = 0; j < C; j++) mu += xi[j];
        mu /= (double)C;
        double var = 0;
        for (int64_t j = 0; j < C; j++) {
            float v = (float)(xi[j] - mu);
            oi[j] = v;
            var += (double)v * v;
        }
        scale[i] = (float)sqrt(var / (double)C + eps);
        if (mean) mean[i] = (float)mu;
    }
}

/* out [N,C] = out / scale [N] * w [C] + b [C] in place */
void mw_rmsnorm_scale_forward(float *out, float *scale, const float *x, int64_t N, int64_t C, double eps) {
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * C;
        double ss = 0;
        for (int64_t j = 0; j < C; j++) ss += (double)xi[j] * xi[j];
        scale[i] = (float)sqrt(ss / (double)C + eps);
        if (out != x) memcpy(out + i * C, xi, (size_t)C * sizeof(float));
    }
}

void mw_scale_rows_forward(float *out, const float *w, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < C; j++) out[i * C + j] *= w[j];
}

void mw_layernorm_apply_forward(float *out, const float *scale, const float *w, const float *b, int64_t N,
                                int64_t C) {
    for (int64_t i = 0; i < N; i++) {
        float *oi = out + i * C;
        float s = scale[i];
        if (w) for (int64_t j = 0; j < C; j++) oi[j] = oi[j] / s * w[j] + b[j];
        else for (int64_t j = 0; j < C; j++) oi[j] = oi[j] / s;
    }
}

/* dw [C] += dy h, db [C] += dy; g [N,C] = dy w */
void mw_norm_weight_backward(float *g, float *dw, float *db, const float *dy, const float *x, const float *mean,
                             const float *scale, const float *w, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) {
        const float *dyi = dy + i * C, *xi = x + i * C;
        float *gi = g + i * C;
        float mu = mean ? mean[i] : 0.0f, r = 1.0f / scale[i];
        for (int64_t j = 0; j < C; j++) {
            float v = dyi[j];
            if (dw) dw[j] += v * (xi[j] - mu) * r;
            if (db) db[j] += v;
            gi[j] = v * w[j];
        }
    }
}

/* dscale [N] = -sum_j g h / scale */
void mw_norm_scale_backward(float *dscale, const float *g, const float *x, const float *mean, const float *scale,
                            int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) {
        const float *gi = g + i * C, *xi = x + i * C;
        float mu = mean ? mean[i] : 0.0f, r = 1.0f / scale[i];
        double s = 0;
        for (int64_t j = 0; j < C; j++) s += (double)gi[j] * ((xi[j] - mu) * r);
        dscale[i] = (float)(-s * r);
    }
}

/* dx [N,C] += c - mean(c) (mean NULL: += c), c = g / scale + dscale h / C. Through h the scale
 * depends on x: d scale / d x_j = h_j / C, which is where dscale enters. */
void mw_norm_input_backward(float *dx, const float *g, const float *dscale, const float *x, const float *mean,
                            const float *scale, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) {
        const float *gi = g + i * C, *xi = x + i * C;
        float *dxi = dx + i * C;
        float mu = mean ? mean[i] : 0.0f, r = 1.0f / scale[i], k = dscale[i] / (float)C;
        double sc = 0;
        if (mean)
            for (int64_t j = 0; j < C; j++) sc += (double)gi[j] * r + (double)k * ((xi[j] - mu) * r);
        float mc = (float)(sc / (double)C);
        for (int64_t j = 0; j < C; j++) dxi[j] += gi[j] * r + k * ((xi[j] - mu) * r) - mc;
    }
}

/* ================================================================ exp, 4 floats at a time
 * GCC vector extensions (SSE2 on any x86-64, no libm call), relative error ~2e-7: Cody-Waite
 * reduction x = k ln2 + r, |r| <= ln2/2, exp(r) by the degree-6 polynomial of Cephes' expf, 2^k
 * put in the exponent bits. -inf (and anything below -87.3) gives exactly 0, as masked attention
 * scores need. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f exp4(v4f x) {
    const v4f hi = {88.3762626647949f, 88.3762626647949f, 88.3762626647949f, 88.3762626647949f};
    const v4f lo = {-87.3f, -87.3f, -87.3f, -87.3f};
    v4i under = x < lo, over = x > hi; /* lanes: -1 where true */
    x = (v4f)((over & (v4i)hi) | (~over & (v4i)x));
    x = (v4f)((under & (v4i)lo) | (~under & (v4i)x));
    const v4f magic = {12582912.0f, 12582912.0f, 12582912.0f, 12582912.0f}; /* 1.5 * 2^23: rounds */
    v4f k = (x * 1.44269504088896341f + magic) - magic;
    v4f r = x - k * 0.693359375f + k * 2.12194440e-4f;
    v4f p = 1.9875691500E-4f * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    v4i e = (__builtin_convertvector(k, v4i) + 127) << 23;
    v4f y = p * (v4f)e;
    return (v4f)((v4i)y & ~under);
}

/* sum of exp(x[i] - shift) over n floats; out [n] receives the exps unless NULL. The sum is
 * formed the same way with or without out, so loss-only and training passes agree bit for bit. */
static double exp_shift_sum(float *out, const float *x, int64_t n, float shift) {
    double sum = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v;
        memcpy(&v, x + i, sizeof v);
        v = exp4(v - shift);
        if (out) memcpy(out + i, &v, sizeof v);
        sum += (double)v[0] + v[1] + v[2] + v[3];
    }
    if (i < n) {
        v4f v = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        for (int64_t j = i; j < n; j++) v[j - i] = x[j];
        v = exp4(v - shift);
        for (int64_t j = i; j < n; j++) {
            if (out) out[j] = v[j - i];
            sum += v[j - i];
        }
    }
    return sum;
}

/* ================================================================ activations */
#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */

/* out [n] = act(x [n]) */
void mw_act_forward(float *out, const float *x, int64_t n, mw_actfn fn) {
    switch (fn) {
    case MW_ACT_GELU_NEW: case MW_ACT_GELU_PYTORCH_TANH: case MW_ACT_GELU_FAST: {
        /* gelu_pytorch_tanh (torch's approximate="tanh") and gelu_fast (x (1 + 0.044715 x^2) inside
         * the tanh) are the same function as gelu_new */
        /* 0.5 v (1 + tanh(y)) = v (1 - 1 / (exp(2y) + 1)), y = k (v + 0.044715 v^3); exp4 saturates
         * cleanly at both ends (exp -> 0 gives 0, exp -> 3e38 gives v) */
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
            v4f v;
            memcpy(&v, x + i, sizeof v);
            v4f e = exp4(2.0f * GELU_K * (v + 0.044715f * v * v * v));
            v4f o = v - v / (e + 1.0f);
            memcpy(out + i, &o, sizeof o);
        }
        for (; i < n; i++) {
            float v = x[i];
            out[i] = 0.5f * v * (1.0f + tanhf(GELU_K * (v + 0.044715f * v * v * v)));
        }
        break;
    }
    case MW_ACT_GELU:
        for (int64_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
        break;
    case MW_ACT_RELU:
        for (int64_t i = 0; i < n; i++) out[i] = x[i] > 0 ? x[i] : 0;
        break;
    case MW_ACT_SILU:
        for (int64_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + expf(-x[i]));
        break;
    default: /* MW_ACT_NONE: only attention-only models, which have no MLP */
        break;
    }
}

/* dx [n] = dy * act'(x) */
void mw_act_backward(float *dx, const float *dy, const float *x, int64_t n, mw_actfn fn) {
    switch (fn) {
    case MW_ACT_GELU_NEW: case MW_ACT_GELU_PYTORCH_TANH: case MW_ACT_GELU_FAST:
        /* one function (see mw_act_forward), one derivative */
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            float th = tanhf(GELU_K * (v + 0.044715f * v * v * v));
            float g = 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * 0.044715f * v * v);
            dx[i] = dy[i] * g;
        }
        break;
    case MW_ACT_GELU:
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            float g = 0.5f * (1.0f + erff(v * 0.70710678118654752f)) + v * 0.3989422804014327f * expf(-0.5f * v * v);
            dx[i] = dy[i] * g;
        }
        break;
    case MW_ACT_RELU:
        for (int64_t i = 0; i < n; i++) dx[i] = x[i] > 0 ? dy[i] : 0.0f;
        break;
    case MW_ACT_SILU:
        /* (x s(x))' = s (1 + x (1 - s)), s the sigmoid */
        for (int64_t i = 0; i < n; i++) {
            float sg = 1.0f / (1.0f + expf(-x[i]));
            dx[i] = dy[i] * sg * (1.0f + x[i] * (1.0f - sg));
        }
        break;
    default: /* MW_ACT_NONE: no MLP */
        break;
    }
}

int mw_act_has_backward(mw_actfn fn) {
    switch (fn) {
    case MW_ACT_GELU_NEW: case MW_ACT_GELU_PYTORCH_TANH: case MW_ACT_GELU_FAST: case MW_ACT_GELU: case MW_ACT_RELU:
    case MW_ACT_SILU:
        return 1;
    default:
        return 0;
    }
}

void mw_gate_forward(float *post, const float *gate, const float *lin, int64_t n, mw_actfn fn) {
    mw_act_forward(post, gate, n, fn);
    for (int64_t i = 0; i < n; i++) post[i] *= lin[i];
}

/* dlin = dpost act(gate) (before dgate overwrites dpost when they alias), dgate = dpost lin act'(gate) */
void mw_gate_backward(float *dgate, float *dlin, const float *dpost, const float *gate, const float *lin, int64_t n,
                      mw_actfn fn) {
    mw_act_forward(dlin, gate, n, fn);
    for (int64_t i = 0; i < n; i++) {
        float dp = dpost[i];
        dlin[i] *= dp;
        dgate[i] = dp * lin[i];
    }
    mw_act_backward(dgate, dgate, gate, n, fn);
}

/* rotates every pair of x [N,heads,dh] by sign * its angle (mw_rotary_forward's comment): row n
 * by its position pos[n] (padding, -1, as 0) */
static void rotate(float *x, const int64_t *pos, int64_t N, int64_t heads, int64_t dh, int64_t rd, double base,
                   int adjacent, double sign) {
    int64_t half = rd / 2;
    for (int64_t n = 0; n < N; n++) {
        int64_t at = pos[n] < 0 ? 0 : pos[n];
        for (int64_t i = 0; i < half; i++) {
            double ang = sign * (double)at * pow(base, -2.0 * (double)i / (double)rd);
            float cs = (float)cos(ang), sn = (float)sin(ang);
            int64_t i1 = adjacent ? 2 * i : i, i2 = adjacent ? 2 * i + 1 : i + half;
            for (int64_t h = 0; h < heads; h++) {
                float *v = x + (n * heads + h) * dh;
                float x1 = v[i1], x2 = v[i2];
                v[i1] = x1 * cs - x2 * sn;
                v[i2] = x2 * cs + x1 * sn;
            }
        }
    }
}

void mw_rotary_forward(float *x, const int64_t *pos, int64_t N, int64_t heads, int64_t dh, int64_t rd, double base,
                       int adjacent) {
    rotate(x, pos, N, heads, dh, rd, base, adjacent, 1.0);
}

void mw_rotary_backward(float *dx, const int64_t *pos, int64_t N, int64_t heads, int64_t dh, int64_t rd, double base,
                        int adjacent) {
    rotate(dx, pos, N, heads, dh, rd, base, adjacent, -1.0);
}

/* out [N,M] = x * softmax(x) over each row (SoLU); out may alias x */
void mw_solu_forward(float *out, const float *x, int64_t N, int64_t M) {
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * M;
        float *oi = out + i * M, mx = -INFINITY;
        for (int64_t j = 0; j < M; j++) mx = xi[j] > mx ? xi[j] : mx;
        double sum = 0;
        for (int64_t j = 0; j < M; j++) sum += expf(xi[j] - mx);
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < M; j++) oi[j] = xi[j] * (expf(xi[j] - mx) * inv);
    }
}

/* dx [N,M] = s (dy (1 + x) - sum_j dy x s), s = softmax(x) of each row (dx may alias dy) */
void mw_solu_backward(float *dx, const float *dy, const float *x, int64_t N, int64_t M) {
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * M, *dyi = dy + i * M;
        float *dxi = dx + i * M, mx = -INFINITY;
        for (int64_t j = 0; j < M; j++) mx = xi[j] > mx ? xi[j] : mx;
        double sum = 0, dot = 0;
        for (int64_t j = 0; j < M; j++) {
            double e = expf(xi[j] - mx);
            sum += e;
            dot += (double)dyi[j] * xi[j] * e;
        }
        float inv = (float)(1.0 / sum), c = (float)(dot / sum);
        for (int64_t j = 0; j < M; j++) dxi[j] = expf(xi[j] - mx) * inv * (dyi[j] * (1.0f + xi[j]) - c);
    }
}

/* ================================================================ attention */

/* s [P,Pk] (row stride ld): query i is key position Pk - P + i; -inf at later keys and at padded keys */
void mw_attn_mask_forward(float *s, int64_t ld, int64_t P, int64_t Pk, const uint8_t *keymask) {
    for (int64_t i = 0; i < P; i++) {
        float *row = s + i * ld;
        int64_t at = Pk - P + i;
        for (int64_t j = at + 1; j < Pk; j++) row[j] = -INFINITY;
        if (keymask)
            for (int64_t j = 0; j <= at; j++)
                if (!keymask[j]) row[j] = -INFINITY;
    }
}

/* s [rows, cols] (row stride ld) = softmax over each row, in place */
void mw_softmax_forward(float *s, int64_t ld, int64_t rows, int64_t cols, int causal) {
    for (int64_t i = 0; i < rows; i++) {
        float *row = s + i * ld;
        int64_t n = causal && cols - rows + i + 1 < cols ? cols - rows + i + 1 : cols;
        float mx = -INFINITY;
        int nan = 0;
        for (int64_t j = 0; j < n; j++) {
            if (row[j] > mx) mx = row[j];
            nan |= isnan(row[j]);
        }
        if (nan || mx == -INFINITY || mx == INFINITY) {
            memset(row, 0, (size_t)cols * sizeof(float));
            continue;
        }
        double sum = exp_shift_sum(row, row, n, mx);
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < n; j++) row[j] *= inv;
        if (n < cols) memset(row + n, 0, (size_t)(cols - n) * sizeof(float));
    }
}

/* dp [rows, cols] (row stride ld) = p * (dp - sum_j p dp) in place */
void mw_softmax_backward(float *dp, const float *p, int64_t ld, int64_t rows, int64_t cols, int causal) {
    for (int64_t i = 0; i < rows; i++) {
        float *g = dp + i * ld;
        const float *pr = p + i * ld;
        int64_t n = causal && i + 1 < cols ? i + 1 : cols;
        float s = 0;
        for (int64_t j = 0; j < n; j++) s += pr[j] * g[j];
        for (int64_t j = 0; j < n; j++) g[j] = pr[j] * (g[j] - s);
        if (n < cols) memset(g + n, 0, (size_t)(cols - n) * sizeof(float));
    }
}

/* ================================================================ embeddings */

/* out [N,d] = W_E[tok] */
void mw_embed_forward(float *out, const int64_t *tok, const float *W_E, int64_t N, int64_t d) {
    for (int64_t n = 0; n < N; n++) memcpy(out + n * d, W_E + tok[n] * d, (size_t)d * sizeof(float));
}

/* dW_E [V,d] += dout [N,d] at rows tok */
void mw_embed_backward(float *dW_E, const int64_t *tok, const float *dout, int64_t N, int64_t d) {
    for (int64_t n = 0; n < N; n++) mw_add_forward(dW_E + tok[n] * d, dW_E + tok[n] * d, dout + n * d, d);
}

/* out [N,d] = W_pos[pos[n]], a row of 0 where pos[n] is -1 (padding) */
void mw_pos_forward(float *out, const float *W_pos, const int64_t *pos, int64_t N, int64_t d) {
    for (int64_t n = 0; n < N; n++) {
        float *o = out + n * d;
        if (pos[n] < 0) memset(o, 0, (size_t)d * sizeof(float));
        else memcpy(o, W_pos + pos[n] * d, (size_t)d * sizeof(float));
    }
}

/* dW_pos [C,d] += dout [N,d] at rows pos[n] (padding adds nothing) */
void mw_pos_backward(float *dW_pos, const float *dout, const int64_t *pos, int64_t N, int64_t d) {
    for (int64_t n = 0; n < N; n++)
        if (pos[n] >= 0) mw_add_forward(dW_pos + pos[n] * d, dW_pos + pos[n] * d, dout + n * d, d);
}

/* ================================================================ cross-entropy */

/* nll [n] from logits [n,V] (unchanged) */
void mw_crossentropy_forward(float *nll, double *sum, int64_t *count, const float *logits, int64_t V,
                             const int64_t *tgt, const uint8_t *valid, int64_t n) {
    for (int64_t r = 0; r < n; r++) {
        const float *row = logits + r * V;
        float mx = -INFINITY;
        for (int64_t j = 0; j < V; j++) if (row[j] > mx) mx = row[j];
        double s = exp_shift_sum(NULL, row, V, mx);
        double lp = row[tgt[r]] - mx - log(s);
        if (valid && !valid[r]) { nll[r] = 0.0f; continue; }
        nll[r] = (float)-lp;
        *sum += -lp;
        *count += 1;
    }
}

/* nll [n] as mw_crossentropy_forward; probs [n,V] = softmax(logits) in place */
void mw_softmax_crossentropy_forward(float *probs, float *nll, double *sum, int64_t *count, int64_t V,
                                     const int64_t *tgt, const uint8_t *valid, int64_t n) {
    for (int64_t r = 0; r < n; r++) {
        float *row = probs + r * V;
        float mx = -INFINITY;
        for (int64_t j = 0; j < V; j++) if (row[j] > mx) mx = row[j];
        float zy = row[tgt[r]];
        double s = exp_shift_sum(row, row, V, mx);
        double lp = zy - mx - log(s);
        float inv = (float)(1.0 / s);
        for (int64_t j = 0; j < V; j++) row[j] *= inv;
        if (valid && !valid[r]) { nll[r] = 0.0f; continue; }
        nll[r] = (float)-lp;
        *sum += -lp;
        *count += 1;
    }
}

/* dlogits [n,V] = (probs - onehot(tgt)) * dloss, in place */
void mw_softmax_crossentropy_backward(float *probs, int64_t V, const int64_t *tgt, const uint8_t *valid,
                                      int64_t n, float dloss) {
    for (int64_t r = 0; r < n; r++) {
        float *row = probs + r * V;
        if (valid && !valid[r]) { memset(row, 0, (size_t)V * sizeof(float)); continue; }
        for (int64_t j = 0; j < V; j++) row[j] *= dloss;
        row[tgt[r]] -= dloss;
    }
}
