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

void gelu_forward(float *out, const float *inp, size_t N) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float th = tanhf(GELU_K * (x + 0.044715f * x * x * x));
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

// Fused loops per (b, h): for T up to a few hundred the whole (T, hs) slices of q, k, v stay
// in cache and the causal half of the scores is never computed.
void attention_forward_dropout(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
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
                    a[t2] = expf(a[t2] - maxv);
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

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T,
                        int C, int NH, float p, uint64_t key) {
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

void crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets, size_t N, int V) {
    #pragma omp parallel for
    for (size_t n = 0; n < N; n++) {
        const float *x = logits + n * V;
        float *pr = probs + n * V;
        float maxv = -INFINITY;
        for (int v = 0; v < V; v++) maxv = x[v] > maxv ? x[v] : maxv;
        float sum = 0.0f;
        for (int v = 0; v < V; v++) {
            pr[v] = expf(x[v] - maxv);
            sum += pr[v];
        }
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
