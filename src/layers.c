// layers.c - see layers.h. Matmuls through cblas_sgemm (OpenBLAS); element-wise loops are
// OpenMP-parallel over rows; reductions over rows (weight gradients of LayerNorm, biases)
// keep per-thread partial sums so the result does not depend on scheduling races.
#include "layers.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "rng.h"

#define GELU_K 0.7978845608028654f  // sqrt(2/pi)

void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C) {
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            const float *we = wte + (size_t)inp[b * T + t] * C;
            const float *wp = wpe + (size_t)t * C;
            for (int c = 0; c < C; c++) o[c] = we[c] + wp[c];
        }
}

void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C) {
    // Parallel over channels: two positions may hold the same token, so rows would race.
    #pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += 16) {
        int c1 = c0 + 16 < C ? c0 + 16 : C;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                const float *d = dout + ((size_t)b * T + t) * C;
                float *dwe = dwte + (size_t)inp[b * T + t] * C;
                float *dwp = dwpe + (size_t)t * C;
                for (int c = c0; c < c1; c++) {
                    dwe[c] += d[c];
                    dwp[c] += d[c];
                }
            }
    }
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, size_t N, int C) {
    #pragma omp parallel for
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float m = 0.0f;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        float v = 0.0f;
        for (int c = 0; c < C; c++) {
            float d = x[c] - m;
            v += d * d;
        }
        v /= C;
        float s = 1.0f / sqrtf(v + 1e-5f);
        float *o = out + n * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = s;
    }
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, size_t N, int C) {
    #pragma omp parallel
    {
        float *pdw = gt_calloc(2 * (size_t)C, sizeof(float), "layernorm backward scratch");
        float *pdb = pdw + C;
        #pragma omp for
        for (size_t n = 0; n < N; n++) {
            const float *x = inp + n * C, *d = dout + n * C;
            float m = mean[n], s = rstd[n];
            float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
            for (int c = 0; c < C; c++) {
                float norm = (x[c] - m) * s;
                float dnorm = w[c] * d[c];
                dnorm_mean += dnorm;
                dnorm_norm_mean += dnorm * norm;
                pdw[c] += norm * d[c];
                pdb[c] += d[c];
            }
            dnorm_mean /= C;
            dnorm_norm_mean /= C;
            float *di = dinp + n * C;
            for (int c = 0; c < C; c++) {
                float norm = (x[c] - m) * s;
                di[c] += (w[c] * d[c] - dnorm_mean - norm * dnorm_norm_mean) * s;
            }
        }
        #pragma omp critical
        for (int c = 0; c < C; c++) {
            dw[c] += pdw[c];
            db[c] += pdb[c];
        }
        free(pdw);
    }
}

void matmul_forward(float *out, const float *inp, const float *w, const float *bias, size_t N, int C, int OC) {
    if (N == 0) return;
    float beta = 0.0f;
    if (bias) {
        #pragma omp parallel for
        for (size_t n = 0; n < N; n++) memcpy(out + n * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    // (N,C) @ (OC,C)^T: w stays in PyTorch's nn.Linear layout.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, OC, C, 1.0f, inp, C, w, C, beta, out, OC);
}

void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                     const float *w, size_t N, int C, int OC) {
    if (N == 0) return;
    if (dinp)  // (N,OC) @ (OC,C)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, C, OC, 1.0f, dout, OC, w, C, 1.0f, dinp, C);
    if (dw)  // (N,OC)^T @ (N,C)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, (int)N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    if (dbias) {
        #pragma omp parallel
        {
            float *part = gt_calloc((size_t)OC, sizeof(float), "bias gradient scratch");
            #pragma omp for
            for (size_t n = 0; n < N; n++) {
                const float *d = dout + n * OC;
                for (int o = 0; o < OC; o++) part[o] += d[o];
            }
            #pragma omp critical
            for (int o = 0; o < OC; o++) dbias[o] += part[o];
            free(part);
        }
    }
}

// expf by range reduction and Cephes' polynomial (about 1 ulp), written without branches or
// library calls so the compiler vectorizes the loops that use it (libm's expf/tanhf are
// scalar calls at our -march). Inputs are clamped to expf's finite range.
static inline float exp_approx(float x) {
    x = x > -87.3f ? x : -87.3f;  // two plain selects: these vectorize (min/max)
    x = x < 88.3f ? x : 88.3f;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float q = 1.9875691500E-4f;
    q = q * r + 1.3981999507E-3f;
    q = q * r + 8.3334519073E-3f;
    q = q * r + 4.1665795894E-2f;
    q = q * r + 1.6666665459E-1f;
    q = q * r + 5.0000001201E-1f;
    q = q * r * r + r + 1.0f;
    union { int32_t i; float f; } scale = {.i = ((int32_t)n + 127) << 23};
    return q * scale.f;
}

// tanh(u) = 1 - 2 / (exp(2u) + 1): absolute error ~1e-7, which is what GELU needs.
static inline float tanh_approx(float u) { return 1.0f - 2.0f / (exp_approx(2.0f * u) + 1.0f); }

void gelu_forward(float *out, const float *inp, size_t N) {
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanh_approx(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float th = tanh_approx(GELU_K * (x + 0.044715f * x * x * x));
        float sech2 = 1.0f - th * th;
        float g = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += g * dout[i];
    }
}

void residual_forward(float *out, const float *a, const float *b, size_t N) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

// 1/(1-p) if element idx of stream key is kept, else 0.
static inline float keep_scale(uint64_t key, uint64_t idx, float p, float scale) {
    return rng_uniform_at(key, idx) >= p ? scale : 0.0f;
}

void dropout_apply(float *out, const float *inp, size_t N, float p, uint64_t key) {
    if (p <= 0.0f) {
        if (out != inp) memcpy(out, inp, N * sizeof(float));
        return;
    }
    float scale = 1.0f / (1.0f - p);
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) out[i] = inp[i] * keep_scale(key, i, p, scale);
}

void residual_dropout_forward(float *out, const float *a, const float *b, size_t N, float p, uint64_t key) {
    if (p <= 0.0f) {
        residual_forward(out, a, b, N);
        return;
    }
    float scale = 1.0f / (1.0f - p);
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i] * keep_scale(key, i, p, scale);
}

void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    attention_forward_dropout(out, att, qkv, B, T, C, NH, 0.0f, 0);
}

// Two implementations with identical results up to rounding: fused loops per (b, h) for
// short sequences, where GEMM calls would be all overhead, and GEMMs over causal blocks
// of queries for long ones (the upper triangle is computed only within diagonal blocks).
#define ATT_GEMM_MIN_T 64
#define ATT_BLOCK 64

static void attention_forward_fused(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                                    float p, uint64_t key) {
    int hs = C / NH;
    size_t C3 = 3 * (size_t)C;
    float scale = 1.0f / sqrtf((float)hs);
    float dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    #pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;
            for (int t = 0; t < T; t++) {
                const float *q = base + t * C3;
                float *a = att + (((size_t)b * NH + h) * T + t) * T;
                float maxv = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *k = base + t2 * C3 + C;
                    float s = 0.0f;
                    for (int i = 0; i < hs; i++) s += q[i] * k[i];
                    s *= scale;
                    a[t2] = s;
                    if (s > maxv) maxv = s;
                }
                float sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    a[t2] = exp_approx(a[t2] - maxv);
                    sum += a[t2];
                }
                float inv = 1.0f / sum;
                for (int t2 = 0; t2 <= t; t2++) a[t2] *= inv;
                for (int t2 = t + 1; t2 < T; t2++) a[t2] = 0.0f;

                float *o = out + ((size_t)b * T + t) * C + (size_t)h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                size_t row = (((size_t)b * NH + h) * T + t) * T;
                for (int t2 = 0; t2 <= t; t2++) {
                    float w = a[t2];
                    if (p > 0.0f) w *= keep_scale(key, row + t2, p, dscale);
                    const float *v = base + t2 * C3 + 2 * C;
                    for (int i = 0; i < hs; i++) o[i] += w * v[i];
                }
            }
        }
}

static void attention_backward_fused(float *dqkv, const float *dout, const float *qkv, const float *att, int B,
                                     int T, int C, int NH, float p, uint64_t key) {
    int hs = C / NH;
    size_t C3 = 3 * (size_t)C;
    float scale = 1.0f / sqrtf((float)hs);
    float dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    #pragma omp parallel
    {
        float *dpre = gt_malloc((size_t)T * sizeof(float), "attention backward scratch");
        // Different (b, h) touch disjoint slices of dqkv, so no two threads write the same float.
        #pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                const float *base = qkv + (size_t)b * T * C3 + (size_t)h * hs;
                float *dbase = dqkv + (size_t)b * T * C3 + (size_t)h * hs;
                for (int t = 0; t < T; t++) {
                    const float *a = att + (((size_t)b * NH + h) * T + t) * T;
                    const float *d = dout + ((size_t)b * T + t) * C + (size_t)h * hs;
                    size_t row = (((size_t)b * NH + h) * T + t) * T;
                    // through out = dropout(att) @ v
                    float dot = 0.0f;
                    for (int t2 = 0; t2 <= t; t2++) {
                        float m = p > 0.0f ? keep_scale(key, row + t2, p, dscale) : 1.0f;
                        const float *v = base + t2 * C3 + 2 * C;
                        float *dv = dbase + t2 * C3 + 2 * C;
                        float s = 0.0f, w = a[t2] * m;
                        for (int i = 0; i < hs; i++) {
                            s += d[i] * v[i];
                            dv[i] += w * d[i];
                        }
                        dpre[t2] = s * m;
                        dot += a[t2] * dpre[t2];
                    }
                    // through the softmax, then the scaled scores q.k
                    const float *q = base + t * C3;
                    float *dq = dbase + t * C3;
                    for (int t2 = 0; t2 <= t; t2++) {
                        float ds = a[t2] * (dpre[t2] - dot) * scale;
                        const float *k = base + t2 * C3 + C;
                        float *dk = dbase + t2 * C3 + C;
                        for (int i = 0; i < hs; i++) {
                            dq[i] += ds * k[i];
                            dk[i] += ds * q[i];
                        }
                    }
                }
            }
        free(dpre);
    }
}

// Causal softmax of row t of scores a (keys 0..t), zeroing keys after t.
static inline void softmax_row(float *a, int t, int T) {
    float maxv = -INFINITY;
    for (int t2 = 0; t2 <= t; t2++) maxv = a[t2] > maxv ? a[t2] : maxv;
    float sum = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {
        a[t2] = exp_approx(a[t2] - maxv);
        sum += a[t2];
    }
    float inv = 1.0f / sum;
    for (int t2 = 0; t2 <= t; t2++) a[t2] *= inv;
    for (int t2 = t + 1; t2 < T; t2++) a[t2] = 0.0f;
}

// P with dropout applied (rows of the (b, h) slice starting at mask index `base`).
static void dropped_probs(float *pd, const float *a, int T, float p, uint64_t key, size_t base) {
    float dscale = 1.0f / (1.0f - p);
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *ar = a + (size_t)t * T;
        float *pr = pd + (size_t)t * T;
        size_t row = base + (size_t)t * T;
        for (int t2 = 0; t2 <= t; t2++) pr[t2] = ar[t2] * keep_scale(key, row + t2, p, dscale);
        for (int t2 = t + 1; t2 < T; t2++) pr[t2] = 0.0f;
    }
}

// The (b, h) slices go one after the other so each GEMM can use every BLAS thread; the
// row-wise work in between is OpenMP-parallel over rows.
static void attention_forward_gemm(float *out, float *att, const float *qkv, int B, int T, int C, int NH, float p,
                                   uint64_t key) {
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    float *pd = p > 0.0f ? gt_malloc((size_t)T * T * sizeof(float), "attention dropout scratch") : NULL;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs, *k = q + C, *v = q + 2 * C;
            float *a = att + ((size_t)b * NH + h) * T * T;
            for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
                int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t1 - t0, t1, hs, scale, q + (size_t)t0 * C3, C3,
                            k, C3, 0.0f, a + (size_t)t0 * T, T);
            }
            #pragma omp parallel for schedule(static)
            for (int t = 0; t < T; t++) softmax_row(a + (size_t)t * T, t, T);
            const float *P = a;
            if (pd) {
                dropped_probs(pd, a, T, p, key, ((size_t)b * NH + h) * T * T);
                P = pd;
            }
            float *o = out + (size_t)b * T * C + (size_t)h * hs;
            for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
                int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t1 - t0, hs, t1, 1.0f, P + (size_t)t0 * T, T, v,
                            C3, 0.0f, o + (size_t)t0 * C, C);
            }
        }
    free(pd);
}

static void attention_backward_gemm(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T,
                                    int C, int NH, float p, uint64_t key) {
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    float dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    float *pd = p > 0.0f ? gt_malloc((size_t)T * T * sizeof(float), "attention dropout scratch") : NULL;
    float *dp = gt_malloc((size_t)T * T * sizeof(float), "attention backward scratch");
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs, *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + (size_t)b * T * C3 + (size_t)h * hs, *dk = dq + C, *dv = dq + 2 * C;
            const float *a = att + ((size_t)b * NH + h) * T * T;
            const float *d = dout + (size_t)b * T * C + (size_t)h * hs;
            size_t base = ((size_t)b * NH + h) * T * T;
            const float *P = a;
            if (pd) {
                dropped_probs(pd, a, T, p, key, base);
                P = pd;
            }
            // dP = dout @ V^T over the causal blocks; dV += P^T @ dout (P is 0 above the diagonal)
            for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
                int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t1 - t0, t1, hs, 1.0f, d + (size_t)t0 * C, C, v,
                            C3, 0.0f, dp + (size_t)t0 * T, T);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1 - t0, hs, T - t0, 1.0f,
                            P + (size_t)t0 * T + t0, T, d + (size_t)t0 * C, C, 1.0f, dv + (size_t)t0 * C3, C3);
            }
            // through dropout and softmax: dS = a * (dP*m - sum(a * dP*m)) * scale, 0 above the diagonal
            #pragma omp parallel for schedule(static)
            for (int t = 0; t < T; t++) {
                const float *ar = a + (size_t)t * T;
                float *dr = dp + (size_t)t * T;
                if (p > 0.0f)
                    for (int t2 = 0; t2 <= t; t2++) dr[t2] *= keep_scale(key, base + (size_t)t * T + t2, p, dscale);
                float dot = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) dot += ar[t2] * dr[t2];
                for (int t2 = 0; t2 <= t; t2++) dr[t2] = ar[t2] * (dr[t2] - dot) * scale;
                for (int t2 = t + 1; t2 < T; t2++) dr[t2] = 0.0f;
            }
            // dQ += dS @ K; dK += dS^T @ Q
            for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
                int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t1 - t0, hs, t1, 1.0f, dp + (size_t)t0 * T, T,
                            k, C3, 1.0f, dq + (size_t)t0 * C3, C3);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1 - t0, hs, T - t0, 1.0f,
                            dp + (size_t)t0 * T + t0, T, q + (size_t)t0 * C3, C3, 1.0f, dk + (size_t)t0 * C3, C3);
            }
        }
    free(pd);
    free(dp);
}

void attention_forward_dropout(float *out, float *att, const float *qkv, int B, int T, int C, int NH, float p,
                               uint64_t key) {
    if (T >= ATT_GEMM_MIN_T) attention_forward_gemm(out, att, qkv, B, T, C, NH, p, key);
    else attention_forward_fused(out, att, qkv, B, T, C, NH, p, key);
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C,
                        int NH, float p, uint64_t key) {
    if (T >= ATT_GEMM_MIN_T) attention_backward_gemm(dqkv, dout, qkv, att, B, T, C, NH, p, key);
    else attention_backward_fused(dqkv, dout, qkv, att, B, T, C, NH, p, key);
}

void crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets, size_t N, int V) {
    #pragma omp parallel for
    for (size_t n = 0; n < N; n++) {
        const float *x = logits + n * V;
        float *pr = probs + n * V;
        float maxv = -INFINITY;
        for (int v = 0; v < V; v++) maxv = x[v] > maxv ? x[v] : maxv;
        for (int v = 0; v < V; v++) pr[v] = exp_approx(x[v] - maxv);  // vectorizes; the sum would not
        float sum = 0.0f;
        for (int v = 0; v < V; v++) sum += pr[v];
        float inv = 1.0f / sum;
        for (int v = 0; v < V; v++) pr[v] *= inv;
        // log-sum-exp form: exact even when the target's probability underflows
        losses[n] = logf(sum) + maxv - x[targets[n]];
    }
}

void crossentropy_backward(float *dlogits, const float *probs, const int *targets, float dloss, size_t N, int V) {
    #pragma omp parallel for
    for (size_t n = 0; n < N; n++) {
        const float *pr = probs + n * V;
        float *d = dlogits + n * V;
        for (int v = 0; v < V; v++) d[v] = pr[v] * dloss;
        d[targets[n]] -= dloss;
    }
}
