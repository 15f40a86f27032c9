// layers.c - see layers.h. Matmuls go through cblas_sgemm (OpenBLAS). Element-wise and
// row-wise work is OpenMP-parallel; the per-row/per-chunk kernels are compiled three times
// (AVX-512, AVX2, baseline: GT_HOT) and the CPU picks one at load time, since the project
// builds for plain x86-64-v2. Sums keep 8 partial accumulators so they vectorize without
// -ffast-math. Sums over rows (LayerNorm weight and bias gradients) go through fixed
// blocks of rows, so results do not depend on the thread count.
#include "layers.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_bf16.h"
#include "error.h"
#include "gemm_small.h"
#include "rng.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GT_NO_CLONES)
#define GT_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GT_HOT
#endif

#define GELU_K 0.7978845608028654f  // sqrt(2/pi)
// Below this many elements one thread does it: a parallel region costs a few us with
// spinning threads but ~50 us with sleeping ones (OMP_WAIT_POLICY=passive, or a busy
// machine), more than the whole op at n_embd 64 (B*T*C = 32768: 2 threads 17% faster
// passive, 6% slower active).
#define PAR_MIN 32768

// This thread's share [lo, hi) of n items, in multiples of 16 (cache lines, vectors).
static inline void thread_range(size_t n, size_t *lo, size_t *hi) {
    size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
    size_t chunk = ((n + nt - 1) / nt + 15) & ~(size_t)15;
    *lo = id * chunk < n ? id * chunk : n;
    *hi = *lo + chunk < n ? *lo + chunk : n;
}

// Threads. OpenBLAS (the pthreads build Debian ships) and OpenMP each keep their own pool
// whose idle threads spin; running both at once on the same cores makes each wait for the
// other's spinning threads (we measured a 20x slowdown at 2 threads on 2 busy cores). So
// when the caller asked for several OpenMP threads, every GEMM runs inside our own OpenMP
// region as single-threaded OpenBLAS calls on a share of the rows, and OpenBLAS's own
// threads stay asleep. With one OpenMP thread, OpenBLAS's setting is used as given (so
// OPENBLAS_NUM_THREADS=2 with OMP_NUM_THREADS=1 also works). The caller's OpenBLAS thread
// count is restored after each such region.
typedef struct { int saved; } BlasSolo;
static BlasSolo blas_solo_begin(int tasks) {
    BlasSolo s = {0};
    if (omp_get_max_threads() > 1 && tasks > 1) {
        s.saved = openblas_get_num_threads();
        if (s.saved > 1) openblas_set_num_threads(1);
        else s.saved = 0;
    }
    return s;
}
static void blas_solo_end(BlasSolo s) {
    if (s.saved > 0) openblas_set_num_threads(s.saved);
}

// C (M,N) = alpha op(A) op(B) + beta C, row-major, shared out as above by rows of C or, when
// C is wider than tall (the head's V columns, the small-batch shapes), by columns: each
// thread packs all of the operand it does not split, so splitting the longer side packs
// least (at B*T = 256 rows, splitting rows had both threads pack all 154 MB of wte). Either
// way every element of C is the same sum in the same order (OpenBLAS blocks K the same), so
// results do not depend on the thread count. With `bias` (N), each row of C is first set to
// it and beta must be 1 (nn.Linear's bias), in the same parallel region. Products small
// enough for gemm_small (n_embd 64) go there instead, chosen by the whole product's shape
// so every thread uses the same kernel; it adds the bias itself.
static void sgemm_split(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A,
                        int lda, const float *B, int ldb, float beta, float *C, int ldc, const float *bias) {
    int nt = omp_get_max_threads();
    int by_cols = N > M;
    int len = by_cols ? N : M;
    int split = nt > 1 && len >= 64 && (double)M * N * K >= 1e6;
    int small = gemm_small_fits(ta == CblasTrans, M, N, K);
    BlasSolo solo = blas_solo_begin(nt > 1 ? 2 : 1);
    #pragma omp parallel if (split)
    {
        int n = omp_get_num_threads(), id = omp_get_thread_num();
        int chunk = ((len + n - 1) / n + 15) / 16 * 16;
        int lo = id * chunk < len ? id * chunk : len, hi = lo + chunk < len ? lo + chunk : len;
        if (hi > lo && small && by_cols) {
            const float *b = tb == CblasNoTrans ? B + lo : B + (size_t)lo * ldb;
            gemm_small(ta == CblasTrans, tb == CblasTrans, M, hi - lo, K, alpha, A, lda, b, ldb, beta, C + lo, ldc,
                       bias ? bias + lo : NULL);
        } else if (hi > lo && small) {
            const float *a = ta == CblasNoTrans ? A + (size_t)lo * lda : A + lo;
            gemm_small(ta == CblasTrans, tb == CblasTrans, hi - lo, N, K, alpha, a, lda, B, ldb, beta,
                       C + (size_t)lo * ldc, ldc, bias);
        } else if (hi > lo && by_cols) {  // columns [lo, hi) of C: rows [lo, hi) of B if transposed
            if (bias)
                for (int r = 0; r < M; r++) memcpy(C + (size_t)r * ldc + lo, bias + lo, (size_t)(hi - lo) * sizeof(float));
            const float *b = tb == CblasNoTrans ? B + lo : B + (size_t)lo * ldb;
            cblas_sgemm(CblasRowMajor, ta, tb, M, hi - lo, K, alpha, A, lda, b, ldb, beta, C + lo, ldc);
        } else if (hi > lo) {  // rows [lo, hi) of C
            if (bias)
                for (int r = lo; r < hi; r++) memcpy(C + (size_t)r * ldc, bias, (size_t)N * sizeof(float));
            const float *a = ta == CblasNoTrans ? A + (size_t)lo * lda : A + lo;
            cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, N, K, alpha, a, lda, B, ldb, beta, C + (size_t)lo * ldc, ldc);
        }
    }
    blas_solo_end(solo);
}

// One single-threaded product (attention's per-head blocks): gemm_small when it fits.
static void sgemm_one(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (gemm_small_fits(ta == CblasTrans, M, N, K))
        gemm_small(ta == CblasTrans, tb == CblasTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
    else
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static inline float sum_f(const float *x, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += x[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += x[i];
    return s;
}

static inline float dot_f(const float *x, const float *y, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += x[i + j] * y[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

// Max with GCC vector extensions: the scalar form x > m ? x : m does not vectorize
// without -ffinite-math-only (NaN rules), this select on 8-lane masks does.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
static inline float max_f(const float *x, int n) {
    v8f acc;
    for (int j = 0; j < 8; j++) acc[j] = -INFINITY;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f v;
        memcpy(&v, x + i, sizeof v);
        v8i gt = v > acc;
        acc = (v8f)(((v8i)v & gt) | ((v8i)acc & ~gt));
    }
    float m = -INFINITY;
    for (int j = 0; j < 8; j++) m = acc[j] > m ? acc[j] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

// expf by range reduction and Cephes' polynomial (about 1 ulp), written without branches or
// library calls so loops that use it vectorize. Inputs are clamped to expf's finite range.
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

// 1/(1-p) if element idx of stream key is kept, else 0.
static inline float keep_scale(uint64_t key, uint64_t idx, float p, float scale) {
    return rng_uniform_at(key, idx) >= p ? scale : 0.0f;
}

// ---- encoder ----

void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C) {
    #pragma omp parallel for collapse(2) if ((size_t)B * T * C > PAR_MIN)
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
    #pragma omp parallel for if ((size_t)B * T * C > PAR_MIN)
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

// ---- layernorm ----

// out16 instead of out: the output rounded to bf16 (the input of a bf16 matmul).
static inline __attribute__((always_inline)) void layernorm_rows_any(float *out, uint16_t *out16, float *mean, float *rstd,
                                                                     const float *inp, const float *w, const float *b,
                                                                     size_t n0, size_t n1, int C) {
    for (size_t n = n0; n < n1; n++) {
        const float *x = inp + n * C;
        float m = sum_f(x, C) / C;
        float acc[8] = {0};
        int c = 0;
        for (; c + 8 <= C; c += 8)
            for (int j = 0; j < 8; j++) acc[j] += (x[c + j] - m) * (x[c + j] - m);
        float v = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;
        float s = 1.0f / sqrtf(v + 1e-5f);
        if (out16) {
            uint16_t *o = out16 + n * C;
            for (c = 0; c < C; c++) o[c] = bf16_from_f32((x[c] - m) * s * w[c] + b[c]);
        } else {
            float *o = out + n * C;
            for (c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
        }
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = s;
    }
}

GT_HOT static void layernorm_rows(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                  const float *b, size_t n0, size_t n1, int C) {
    layernorm_rows_any(out, NULL, mean, rstd, inp, w, b, n0, n1, C);
}

GT_HOT static void layernorm_rows16(uint16_t *out, float *mean, float *rstd, const float *inp, const float *w,
                                    const float *b, size_t n0, size_t n1, int C) {
    layernorm_rows_any(NULL, out, mean, rstd, inp, w, b, n0, n1, C);
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, size_t N, int C) {
    #pragma omp parallel if (N * C > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        layernorm_rows(out, mean, rstd, inp, w, b, lo, hi, C);
    }
}

void layernorm_forward16(uint16_t *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                         size_t N, int C) {
    #pragma omp parallel if (N * C > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        layernorm_rows16(out, mean, rstd, inp, w, b, lo, hi, C);
    }
}

GT_HOT static void layernorm_backward_rows(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                           const float *w, const float *mean, const float *rstd, size_t n0,
                                           size_t n1, int C, float *norm) {
    for (size_t n = n0; n < n1; n++) {
        const float *x = inp + n * C, *d = dout + n * C;
        float m = mean[n], s = rstd[n];
        for (int c = 0; c < C; c++) {
            norm[c] = (x[c] - m) * s;
            dw[c] += norm[c] * d[c];
            db[c] += d[c];
        }
        // dnorm = w * d; its mean and its mean against norm
        float a0[8] = {0}, a1[8] = {0};
        int c = 0;
        for (; c + 8 <= C; c += 8)
            for (int j = 0; j < 8; j++) {
                float dn = w[c + j] * d[c + j];
                a0[j] += dn;
                a1[j] += dn * norm[c + j];
            }
        float dnorm_mean = ((a0[0] + a0[1]) + (a0[2] + a0[3])) + ((a0[4] + a0[5]) + (a0[6] + a0[7]));
        float dnorm_norm_mean = ((a1[0] + a1[1]) + (a1[2] + a1[3])) + ((a1[4] + a1[5]) + (a1[6] + a1[7]));
        for (; c < C; c++) {
            dnorm_mean += w[c] * d[c];
            dnorm_norm_mean += w[c] * d[c] * norm[c];
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        float *di = dinp + n * C;
        for (c = 0; c < C; c++) di[c] += (w[c] * d[c] - dnorm_mean - norm[c] * dnorm_norm_mean) * s;
    }
}

// Weight and bias gradients are sums over rows: each block of ROW_BLK rows gets its own
// partial sums, added up in block order afterwards, so the result is the same whatever the
// number of threads (and from run to run).
#define ROW_BLK 128

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, size_t N, int C) {
    size_t nblk = (N + ROW_BLK - 1) / ROW_BLK;
    float *part = gt_calloc((nblk ? nblk : 1) * 3 * (size_t)C, sizeof(float), "layernorm backward scratch");
    #pragma omp parallel for schedule(static) if (N * C > PAR_MIN)
    for (size_t k = 0; k < nblk; k++) {
        float *pk = part + k * 3 * C;
        size_t n1 = (k + 1) * ROW_BLK < N ? (k + 1) * ROW_BLK : N;
        layernorm_backward_rows(dinp, pk, pk + C, dout, inp, w, mean, rstd, k * ROW_BLK, n1, C, pk + 2 * C);
    }
    for (size_t k = 0; k < nblk; k++)
        for (int c = 0; c < C; c++) {
            dw[c] += part[k * 3 * C + c];
            db[c] += part[k * 3 * C + C + c];
        }
    free(part);
}

// ---- matmul ----

void matmul_forward(float *out, const float *inp, const float *w, const float *bias, size_t N, int C, int OC) {
    if (N == 0) return;
    // (N,C) @ (OC,C)^T: w stays in PyTorch's nn.Linear layout; the bias is preloaded (beta 1)
    sgemm_split(CblasNoTrans, CblasTrans, (int)N, OC, C, 1.0f, inp, C, w, C, bias ? 1.0f : 0.0f, out, OC, bias);
}

GT_HOT static void add_rows(float *acc, const float *x, size_t n0, size_t n1, int OC) {
    for (size_t n = n0; n < n1; n++) {
        const float *d = x + n * OC;
        for (int o = 0; o < OC; o++) acc[o] += d[o];
    }
}

// dbias (OC) += the column sums of dout (N, OC), through fixed row blocks as in layernorm_backward.
static void bias_backward(float *dbias, const float *dout, size_t N, int OC) {
    size_t nblk = (N + ROW_BLK - 1) / ROW_BLK;
    float *part = gt_calloc(nblk * (size_t)OC, sizeof(float), "bias gradient scratch");
    #pragma omp parallel for schedule(static) if (N * OC > PAR_MIN)
    for (size_t k = 0; k < nblk; k++)
        add_rows(part + k * OC, dout, k * ROW_BLK, (k + 1) * ROW_BLK < N ? (k + 1) * ROW_BLK : N, OC);
    for (size_t k = 0; k < nblk; k++)
        for (int o = 0; o < OC; o++) dbias[o] += part[k * OC + o];
    free(part);
}

static void matmul_backward_impl(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                                 const float *w, size_t N, int C, int OC, float beta_inp, float alpha) {
    if (N == 0) return;
    if (dinp)  // (N,OC) @ (OC,C)
        sgemm_split(CblasNoTrans, CblasNoTrans, (int)N, C, OC, alpha, dout, OC, w, C, beta_inp, dinp, C, NULL);
    if (dw)  // (N,OC)^T @ (N,C)
        sgemm_split(CblasTrans, CblasNoTrans, OC, C, (int)N, alpha, dout, OC, inp, C, 1.0f, dw, C, NULL);
    if (dbias) bias_backward(dbias, dout, N, OC);
}

void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                     const float *w, size_t N, int C, int OC) {
    matmul_backward_impl(dinp, dw, dbias, dout, inp, w, N, C, OC, 1.0f, 1.0f);
}

void matmul_backward_set(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                         const float *w, size_t N, int C, int OC) {
    matmul_backward_impl(dinp, dw, dbias, dout, inp, w, N, C, OC, 0.0f, 1.0f);
}

void matmul_backward_set_scaled(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                                size_t N, int C, int OC, float alpha) {
    matmul_backward_impl(dinp, dw, NULL, dout, inp, w, N, C, OC, 0.0f, alpha);
}

void matmul_forward_bf16(float *out, const uint16_t *inp, const uint16_t *w, const float *bias, size_t N, int C, int OC) {
    if (N == 0) return;
    gemm_bf16(0, 1, (int)N, OC, C, 1.0f, inp, C, w, C, 0.0f, out, OC, bias);
}

void matmul_forward_bf16_to16(uint16_t *out, const uint16_t *inp, const uint16_t *w, const float *bias, size_t N, int C, int OC) {
    if (N == 0) return;
    gemm_bf16_to16(0, 1, (int)N, OC, C, 1.0f, inp, C, w, C, out, OC, bias);
}

void matmul_backward_bf16(float *dinp, float *dw, float *dbias, const uint16_t *dout16, const float *dout,
                          const uint16_t *inp, const uint16_t *w, size_t N, int C, int OC) {
    if (N == 0) return;
    if (dinp) gemm_bf16(0, 0, (int)N, C, OC, 1.0f, dout16, OC, w, C, 0.0f, dinp, C, NULL);
    if (dw) gemm_bf16(1, 0, OC, C, (int)N, 1.0f, dout16, OC, inp, C, 1.0f, dw, C, NULL);
    if (dbias) bias_backward(dbias, dout, N, OC);
}

// ---- gelu ----

GT_HOT static void gelu_chunk(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanh_approx(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

static inline float gelu_grad(float x) {
    float th = tanh_approx(GELU_K * (x + 0.044715f * x * x * x));
    float sech2 = 1.0f - th * th;
    return 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
}

GT_HOT static void gelu_backward_chunk(float *dinp, const float *inp, const float *dout, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] += gelu_grad(inp[i]) * dout[i];
}

// The forward and the derivative share the tanh, the costly part: computed once here, the
// backward is a multiply. x is read and overwritten element by element (no other alias).
GT_HOT static void gelu_keep_grad_chunk(float *restrict out, float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float th = tanh_approx(GELU_K * (v + 0.044715f * v * v * v));
        out[i] = 0.5f * v * (1.0f + th);
        x[i] = 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * 0.044715f * v * v);
    }
}

// The same in fp32 with the results stored as bf16: the output for a matmul, the
// derivative for backward.
GT_HOT static void gelu_keep_grad_chunk16(uint16_t *restrict out, uint16_t *restrict grad, const float *restrict x,
                                          size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float th = tanh_approx(GELU_K * (v + 0.044715f * v * v * v));
        out[i] = bf16_from_f32(0.5f * v * (1.0f + th));
        grad[i] = bf16_from_f32(0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * GELU_K *
                                                         (1.0f + 3.0f * 0.044715f * v * v));
    }
}

GT_HOT static void mul_chunk(float *restrict d, const float *restrict g, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] *= g[i];
}

GT_HOT static void mul_chunk16(uint16_t *restrict d16, float *restrict d, const uint16_t *restrict g, size_t n) {
    for (size_t i = 0; i < n; i++) {
        d[i] *= f32_from_bf16(g[i]);
        d16[i] = bf16_from_f32(d[i]);
    }
}

void gelu_forward_keep_grad16(uint16_t *out, uint16_t *grad, const float *x, size_t N) {
    #pragma omp parallel if (N > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        gelu_keep_grad_chunk16(out + lo, grad + lo, x + lo, hi - lo);
    }
}

void gelu_backward_from_grad16(uint16_t *d16, float *d, const uint16_t *g, size_t N) {
    #pragma omp parallel if (N > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        mul_chunk16(d16 + lo, d + lo, g + lo, hi - lo);
    }
}

void gelu_forward_keep_grad(float *out, float *x, size_t N) {
    #pragma omp parallel if (N > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        gelu_keep_grad_chunk(out + lo, x + lo, hi - lo);
    }
}

void gelu_backward_from_grad(float *d, const float *g, size_t N) {
    #pragma omp parallel if (N > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        mul_chunk(d + lo, g + lo, hi - lo);
    }
}

void gelu_forward(float *out, const float *inp, size_t N) {
    #pragma omp parallel if (N > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        gelu_chunk(out + lo, inp + lo, hi - lo);
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N) {
    #pragma omp parallel if (N > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        gelu_backward_chunk(dinp + lo, inp + lo, dout + lo, hi - lo);
    }
}

// ---- residual and dropout ----

void residual_forward(float *out, const float *a, const float *b, size_t N) {
    #pragma omp parallel for simd if (N > PAR_MIN)
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

// out[i] = (add ? add[i] : 0) + inp[i] * mask, for i < n, with mask indices idx0 + i.
GT_HOT static void dropout_chunk(float *out, const float *inp, const float *add, size_t n, float p, uint64_t key,
                                 uint64_t idx0) {
    float scale = 1.0f / (1.0f - p);
    if (add)
        for (size_t i = 0; i < n; i++) out[i] = add[i] + inp[i] * keep_scale(key, idx0 + i, p, scale);
    else
        for (size_t i = 0; i < n; i++) out[i] = inp[i] * keep_scale(key, idx0 + i, p, scale);
}

void dropout_apply(float *out, const float *inp, size_t N, float p, uint64_t key) {
    if (p <= 0.0f) {
        if (out != inp) memcpy(out, inp, N * sizeof(float));
        return;
    }
    #pragma omp parallel if (N > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        dropout_chunk(out + lo, inp + lo, NULL, hi - lo, p, key, lo);
    }
}

void residual_dropout_forward(float *out, const float *a, const float *b, size_t N, float p, uint64_t key) {
    if (p <= 0.0f) {
        residual_forward(out, a, b, N);
        return;
    }
    #pragma omp parallel if (N > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        dropout_chunk(out + lo, b + lo, a + lo, hi - lo, p, key, lo);
    }
}

// ---- attention ----
//
// Two implementations with identical results up to rounding: fused loops per (b, h) for
// short sequences, where GEMM calls would be all overhead, and GEMMs over causal blocks of
// queries for long ones (the upper triangle is computed only within diagonal blocks).
// Dropout mask of element (b, h, t, t2): index ((b*NH + h)*T + t)*T + t2 of stream key.
#define ATT_GEMM_MIN_T 64
#define ATT_BLOCK 64

// Causal softmax of row t of scores a (keys 0..t), zeroing keys after t.
static inline void softmax_row(float *a, int t, int T) {
    float maxv = max_f(a, t + 1);
    for (int t2 = 0; t2 <= t; t2++) a[t2] = exp_approx(a[t2] - maxv);
    float inv = 1.0f / sum_f(a, t + 1);
    for (int t2 = 0; t2 <= t; t2++) a[t2] *= inv;
    for (int t2 = t + 1; t2 < T; t2++) a[t2] = 0.0f;
}

// Fused attention for short sequences, one (b, h) slice at a time. Inner loops run over
// fixed blocks of VB floats held in registers (acc[VB]); the operands are first copied into
// zero-padded scratch (keys transposed, rows padded to a multiple of VB) so every block is
// full and no load runs past a tensor. Queries go RG rows at a time: each row's sum is one
// chain of dependent multiply-adds, and RG independent chains keep the FMA units busy where
// one would wait on the previous result (head size 16: 2x faster). Every sum keeps the
// order it has row by row.
#define VB 16
#define RG 4
static inline int pad_vb(int n) { return (n + VB - 1) / VB * VB; }
// A block of VB floats at any float address (GCC vector extension: one register on AVX-512,
// two on AVX2); spelled out because GCC does not keep acc[RG][VB] arrays in registers.
typedef float vb_t __attribute__((vector_size(VB * sizeof(float)), aligned(4)));
#define VB_AT(p) (*(const vb_t *)(p))

// Floats of scratch per thread for the fused kernels.
static size_t fused_scratch(int T, int hs) {
    size_t Tp = (size_t)pad_vb(T), hsp = (size_t)pad_vb(hs);
    return hs * Tp + 3 * (size_t)T * hsp + (RG + 1) * Tp + 2 * RG * hsp;
}

// Rows [t0, t0 + RG) of src (row stride ld, hs floats each) into RG zero-padded rows of hsp;
// rows past T stay zero.
static inline void copy_group(float *dst, const float *src, size_t ld, int t0, int T, int hs, int hsp) {
    memset(dst, 0, (size_t)RG * hsp * sizeof(float));
    for (int r = 0; r < RG && t0 + r < T; r++)
        for (int i = 0; i < hs; i++) dst[(size_t)r * hsp + i] = src[(size_t)(t0 + r) * ld + i];
}

GT_HOT static void attention_fused_bh(float *o_base, float *a_base, const float *q_base, int T, int C, int hs,
                                      float p, uint64_t key, size_t mask_base, float *scratch) {
    size_t C3 = 3 * (size_t)C;
    int Tp = pad_vb(T), hsp = pad_vb(hs);
    float *kT = scratch, *vP = kT + (size_t)hs * Tp, *wrows = vP + (size_t)T * hsp, *zero = wrows + (size_t)RG * Tp;
    float *qg = zero + Tp;
    float scale = 1.0f / sqrtf((float)hs);
    float dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    memset(kT, 0, (size_t)hs * Tp * sizeof(float));
    memset(vP, 0, (size_t)T * hsp * sizeof(float));
    memset(zero, 0, (size_t)Tp * sizeof(float));
    for (int t2 = 0; t2 < T; t2++)
        for (int i = 0; i < hs; i++) {
            kT[(size_t)i * Tp + t2] = q_base[t2 * C3 + C + i];
            vP[(size_t)t2 * hsp + i] = q_base[t2 * C3 + 2 * C + i];
        }
    for (int t0 = 0; t0 < T; t0 += RG) {
        int nr = T - t0 < RG ? T - t0 : RG, tl = t0 + nr - 1;  // rows in the group, the last one
        copy_group(qg, q_base, C3, t0, T, hs, hsp);
        // scores against the key blocks up to the last row's (softmax_row zeroes a row's
        // keys past its own t)
        for (int c0 = 0; c0 <= tl; c0 += VB) {
            vb_t acc[RG] = {{0}};
            for (int i = 0; i < hs; i++) {
                vb_t kr = VB_AT(kT + (size_t)i * Tp + c0);
                for (int r = 0; r < RG; r++) acc[r] += qg[(size_t)r * hsp + i] * kr;
            }
            int n = T - c0 < VB ? T - c0 : VB;
            for (int r = 0; r < nr; r++)
                for (int j = 0; j < n; j++) a_base[(size_t)(t0 + r) * T + c0 + j] = acc[r][j] * scale;
        }
        const float *w[RG];  // each row's weights on the values (after dropout); zeros past T
        for (int r = 0; r < RG; r++) {
            int t = t0 + r;
            if (r >= nr) {
                w[r] = zero;
                continue;
            }
            float *a = a_base + (size_t)t * T;
            softmax_row(a, t, T);
            w[r] = a;
            if (p > 0.0f) {
                float *wr = wrows + (size_t)r * Tp;
                size_t row = mask_base + (size_t)t * T;
                for (int t2 = 0; t2 <= t; t2++) wr[t2] = a[t2] * keep_scale(key, row + t2, p, dscale);
                w[r] = wr;
            }
        }
        for (int i0 = 0; i0 < hs; i0 += VB) {
            vb_t acc[RG] = {{0}};
            for (int t2 = 0; t2 <= t0; t2++) {  // keys every row of the group sees
                vb_t vr = VB_AT(vP + (size_t)t2 * hsp + i0);
                for (int r = 0; r < RG; r++) acc[r] += w[r][t2] * vr;
            }
            for (int t2 = t0 + 1; t2 <= tl; t2++) {  // the causal triangle inside the group
                vb_t vr = VB_AT(vP + (size_t)t2 * hsp + i0);
                for (int r = t2 - t0; r < nr; r++) acc[r] += w[r][t2] * vr;
            }
            int n = hs - i0 < VB ? hs - i0 : VB;
            for (int r = 0; r < nr; r++)
                for (int j = 0; j < n; j++) o_base[(size_t)(t0 + r) * C + i0 + j] = acc[r][j];
        }
    }
}

static void attention_forward_fused(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                                    float p, uint64_t key) {
    int hs = C / NH;
    #pragma omp parallel if ((size_t)B * NH * T * T * hs > 4 * PAR_MIN)
    {
        float *scratch = gt_malloc(fused_scratch(T, hs) * sizeof(float), "attention scratch");
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                attention_fused_bh(out + (size_t)b * T * C + (size_t)h * hs, att + ((size_t)b * NH + h) * T * T,
                                   qkv + (size_t)b * T * 3 * C + (size_t)h * hs, T, C, hs, p, key,
                                   ((size_t)b * NH + h) * T * T, scratch);
        free(scratch);
    }
}

GT_HOT static void attention_backward_fused_bh(float *dq_base, const float *d_base, const float *q_base,
                                               const float *a_base, int T, int C, int hs, float p, uint64_t key,
                                               size_t mask_base, float *scratch) {
    size_t C3 = 3 * (size_t)C;
    int Tp = pad_vb(T), hsp = pad_vb(hs);
    float *vT = scratch, *kP = vT + (size_t)hs * Tp, *dkP = kP + (size_t)T * hsp, *dvP = dkP + (size_t)T * hsp;
    float *dpre = dvP + (size_t)T * hsp, *mrow = dpre + (size_t)RG * Tp, *qg = mrow + Tp, *dg = qg + (size_t)RG * hsp;
    float scale = 1.0f / sqrtf((float)hs);
    float dscale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    memset(vT, 0, (size_t)hs * Tp * sizeof(float));
    memset(kP, 0, 3 * (size_t)T * hsp * sizeof(float));  // kP, dkP, dvP
    memset(dpre, 0, (size_t)RG * Tp * sizeof(float));
    for (int t2 = 0; t2 < T; t2++)
        for (int i = 0; i < hs; i++) {
            vT[(size_t)i * Tp + t2] = q_base[t2 * C3 + 2 * C + i];
            kP[(size_t)t2 * hsp + i] = q_base[t2 * C3 + C + i];
        }
    for (int t0 = 0; t0 < T; t0 += RG) {
        int nr = T - t0 < RG ? T - t0 : RG, tl = t0 + nr - 1;
        copy_group(qg, q_base, C3, t0, T, hs, hsp);
        copy_group(dg, d_base, (size_t)C, t0, T, hs, hsp);
        // through out = dropout(att) @ v: dP = dout . v, the group's rows together
        for (int c0 = 0; c0 <= tl; c0 += VB) {
            vb_t acc[RG] = {{0}};
            for (int i = 0; i < hs; i++) {
                vb_t vr = VB_AT(vT + (size_t)i * Tp + c0);
                for (int r = 0; r < RG; r++) acc[r] += dg[(size_t)r * hsp + i] * vr;
            }
            for (int r = 0; r < RG; r++)
                for (int j = 0; j < VB; j++) dpre[(size_t)r * Tp + c0 + j] = acc[r][j];
        }
        // row by row, in order (dV and dK sum over rows t): dV += P * dout, then through the
        // softmax to the scaled scores, dK += dS * q
        for (int r = 0; r < nr; r++) {
            int t = t0 + r;
            const float *a = a_base + (size_t)t * T, *drow = dg + (size_t)r * hsp, *qrow = qg + (size_t)r * hsp;
            float *dp = dpre + (size_t)r * Tp;
            if (p > 0.0f) {
                size_t row = mask_base + (size_t)t * T;
                for (int t2 = 0; t2 <= t; t2++) mrow[t2] = keep_scale(key, row + t2, p, dscale);
            } else {
                for (int t2 = 0; t2 <= t; t2++) mrow[t2] = 1.0f;
            }
            for (int t2 = 0; t2 <= t; t2++) {
                float w = a[t2] * mrow[t2];
                float *dvr = dvP + (size_t)t2 * hsp;
                for (int j = 0; j < hsp; j++) dvr[j] += w * drow[j];
                dp[t2] *= mrow[t2];
            }
            float dot = dot_f(a, dp, t + 1);
            for (int t2 = 0; t2 <= t; t2++) dp[t2] = a[t2] * (dp[t2] - dot) * scale;
            for (int t2 = 0; t2 <= t; t2++) {
                float ds = dp[t2];
                float *dkr = dkP + (size_t)t2 * hsp;
                for (int j = 0; j < hsp; j++) dkr[j] += ds * qrow[j];
            }
        }
        for (int r = nr; r < RG; r++) memset(dpre + (size_t)r * Tp, 0, (size_t)Tp * sizeof(float));
        // dQ = dS @ K for the group's rows
        for (int i0 = 0; i0 < hs; i0 += VB) {
            vb_t acc[RG] = {{0}};
            for (int t2 = 0; t2 <= t0; t2++) {
                vb_t kr = VB_AT(kP + (size_t)t2 * hsp + i0);
                for (int r = 0; r < RG; r++) acc[r] += dpre[(size_t)r * Tp + t2] * kr;
            }
            for (int t2 = t0 + 1; t2 <= tl; t2++) {
                vb_t kr = VB_AT(kP + (size_t)t2 * hsp + i0);
                for (int r = t2 - t0; r < nr; r++) acc[r] += dpre[(size_t)r * Tp + t2] * kr;
            }
            int n = hs - i0 < VB ? hs - i0 : VB;
            for (int r = 0; r < nr; r++) {
                float *dq = dq_base + (size_t)(t0 + r) * C3;
                for (int j = 0; j < n; j++) dq[i0 + j] += acc[r][j];
            }
        }
    }
    for (int t2 = 0; t2 < T; t2++)
        for (int i = 0; i < hs; i++) {
            dq_base[t2 * C3 + C + i] += dkP[(size_t)t2 * hsp + i];
            dq_base[t2 * C3 + 2 * C + i] += dvP[(size_t)t2 * hsp + i];
        }
}

static void attention_backward_fused(float *dqkv, const float *dout, const float *qkv, const float *att, int B,
                                     int T, int C, int NH, float p, uint64_t key) {
    int hs = C / NH;
    #pragma omp parallel if ((size_t)B * NH * T * T * hs > 4 * PAR_MIN)
    {
        float *scratch = gt_malloc(fused_scratch(T, hs) * sizeof(float), "attention backward scratch");
        // Different (b, h) touch disjoint slices of dqkv, so no two threads write the same float.
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                attention_backward_fused_bh(dqkv + (size_t)b * T * 3 * C + (size_t)h * hs,
                                            dout + (size_t)b * T * C + (size_t)h * hs,
                                            qkv + (size_t)b * T * 3 * C + (size_t)h * hs,
                                            att + ((size_t)b * NH + h) * T * T, T, C, hs, p, key,
                                            ((size_t)b * NH + h) * T * T, scratch);
        free(scratch);
    }
}

// Rows [t0, t1) of one (b, h) slice: causal softmax in place; with dropout also the dropped
// copy pd (mask indices from `base`).
GT_HOT static void softmax_rows(float *a, float *pd, int t0, int t1, int T, float p, uint64_t key, size_t base) {
    for (int t = t0; t < t1; t++) {
        float *ar = a + (size_t)t * T;
        softmax_row(ar, t, T);
        if (pd) {
            float *pr = pd + (size_t)t * T;
            dropout_chunk(pr, ar, NULL, (size_t)t + 1, p, key, base + (size_t)t * T);
            for (int t2 = t + 1; t2 < T; t2++) pr[t2] = 0.0f;
        }
    }
}

// dS = a * (dP*m - sum(a * dP*m)) * scale in place over dP (rows [t0, t1)), 0 above the diagonal.
GT_HOT static void softmax_backward_rows(float *dp, const float *a, int t0, int t1, int T, float scale, float p,
                                         uint64_t key, size_t base) {
    for (int t = t0; t < t1; t++) {
        const float *ar = a + (size_t)t * T;
        float *dr = dp + (size_t)t * T;
        if (p > 0.0f) dropout_chunk(dr, dr, NULL, (size_t)t + 1, p, key, base + (size_t)t * T);
        float dot = dot_f(ar, dr, t + 1);
        for (int t2 = 0; t2 <= t; t2++) dr[t2] = ar[t2] * (dr[t2] - dot) * scale;
        for (int t2 = t + 1; t2 < T; t2++) dr[t2] = 0.0f;
    }
}

// One (b, h) slice with GEMMs over causal blocks of 64 queries. pd: (T, T) scratch for the
// probabilities after dropout (p > 0).
static void attention_gemm_bh(float *o, float *a, const float *q, int T, int C, int hs, float p, uint64_t key,
                              size_t base, float *pd) {
    int C3 = 3 * C;
    const float *k = q + C, *v = q + 2 * C;
    float scale = 1.0f / sqrtf((float)hs);
    for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
        int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
        sgemm_one(CblasNoTrans, CblasTrans, t1 - t0, t1, hs, scale, q + (size_t)t0 * C3, C3, k, C3,
                    0.0f, a + (size_t)t0 * T, T);
    }
    softmax_rows(a, p > 0.0f ? pd : NULL, 0, T, T, p, key, base);
    const float *P = p > 0.0f ? pd : a;
    for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
        int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
        sgemm_one(CblasNoTrans, CblasNoTrans, t1 - t0, hs, t1, 1.0f, P + (size_t)t0 * T, T, v, C3,
                    0.0f, o + (size_t)t0 * C, C);
    }
}

// dp, pd: (T, T) scratch.
static void attention_backward_gemm_bh(float *dq, const float *d, const float *q, const float *a, int T, int C,
                                       int hs, float p, uint64_t key, size_t base, float *dp, float *pd) {
    int C3 = 3 * C;
    const float *k = q + C, *v = q + 2 * C;
    float *dk = dq + C, *dv = dq + 2 * C;
    float scale = 1.0f / sqrtf((float)hs);
    const float *P = a;
    if (p > 0.0f) {
        for (int t = 0; t < T; t++) {
            dropout_chunk(pd + (size_t)t * T, a + (size_t)t * T, NULL, (size_t)t + 1, p, key, base + (size_t)t * T);
            for (int t2 = t + 1; t2 < T; t2++) pd[(size_t)t * T + t2] = 0.0f;
        }
        P = pd;
    }
    // dP = dout @ V^T over the causal blocks; dV += P^T @ dout (P is 0 above the diagonal)
    for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
        int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
        sgemm_one(CblasNoTrans, CblasTrans, t1 - t0, t1, hs, 1.0f, d + (size_t)t0 * C, C, v, C3, 0.0f,
                    dp + (size_t)t0 * T, T);
        sgemm_one(CblasTrans, CblasNoTrans, t1 - t0, hs, T - t0, 1.0f, P + (size_t)t0 * T + t0, T,
                    d + (size_t)t0 * C, C, 1.0f, dv + (size_t)t0 * C3, C3);
    }
    softmax_backward_rows(dp, a, 0, T, T, scale, p, key, base);
    // dQ += dS @ K; dK += dS^T @ Q
    for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
        int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
        sgemm_one(CblasNoTrans, CblasNoTrans, t1 - t0, hs, t1, 1.0f, dp + (size_t)t0 * T, T, k, C3,
                    1.0f, dq + (size_t)t0 * C3, C3);
        sgemm_one(CblasTrans, CblasNoTrans, t1 - t0, hs, T - t0, 1.0f, dp + (size_t)t0 * T + t0, T,
                    q + (size_t)t0 * C3, C3, 1.0f, dk + (size_t)t0 * C3, C3);
    }
}

// The (b, h) slices are shared out to the OpenMP threads, each running single-threaded
// GEMMs (see blas_solo_begin): one parallel region per call, not a fork/join per GEMM.
static void attention_forward_gemm(float *out, float *att, const float *qkv, int B, int T, int C, int NH, float p,
                                   uint64_t key) {
    int hs = C / NH;
    BlasSolo solo = blas_solo_begin(B * NH);
    #pragma omp parallel if (B * NH > 1)
    {
        float *pd = p > 0.0f ? gt_malloc((size_t)T * T * sizeof(float), "attention dropout scratch") : NULL;
        #pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                attention_gemm_bh(out + (size_t)b * T * C + (size_t)h * hs, att + ((size_t)b * NH + h) * T * T,
                                  qkv + (size_t)b * T * 3 * C + (size_t)h * hs, T, C, hs, p, key,
                                  ((size_t)b * NH + h) * T * T, pd);
        free(pd);
    }
    blas_solo_end(solo);
}

static void attention_backward_gemm(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T,
                                    int C, int NH, float p, uint64_t key) {
    int hs = C / NH;
    BlasSolo solo = blas_solo_begin(B * NH);
    // Different (b, h) touch disjoint slices of dqkv, so no two threads write the same float.
    #pragma omp parallel if (B * NH > 1)
    {
        float *dp = gt_malloc((size_t)T * T * (p > 0.0f ? 2 : 1) * sizeof(float), "attention backward scratch");
        #pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                attention_backward_gemm_bh(dqkv + (size_t)b * T * 3 * C + (size_t)h * hs,
                                           dout + (size_t)b * T * C + (size_t)h * hs,
                                           qkv + (size_t)b * T * 3 * C + (size_t)h * hs,
                                           att + ((size_t)b * NH + h) * T * T, T, C, hs, p, key,
                                           ((size_t)b * NH + h) * T * T, dp, dp + (size_t)T * T);
        free(dp);
    }
    blas_solo_end(solo);
}

// ---- attention in bf16 ----
//
// Batched matmuls over the B*NH (b, h) slices, on head-major copies: q, k, v of a slice as
// dense (T, hs) blocks, laid out (3, B, NH, T, hs). The scores are computed for all T x T
// (the upper triangle is dropped by the causal softmax): on AMX that costs less than the
// per-block calls it would take to skip it. Softmax, dropout and att stay fp32; the
// probabilities, dout and the scores' gradient are rounded to bf16 as they enter products.

size_t attention16_scratch(int B, int T, int C, int NH, size_t *n16) {
    size_t S = (size_t)B * NH * T * T, BTC = (size_t)B * T * C;
    *n16 = 2 * S + BTC;  // P16, dS16; the output or dout as heads
    return S + 3 * BTC;  // dP; dq, dk, dv as heads
}

// Row (b, t) of a (B, T, C) tensor <-> its NH head rows (b, h, t) of hs in (B, NH, T, hs).
static inline size_t head_row(int b, int t, int h, int T, int NH, int hs) {
    return (((size_t)b * NH + h) * T + t) * hs;
}

void attention_heads16(uint16_t *qkvh, const uint16_t *qkv, int B, int T, int C, int NH) {
    int hs = C / NH;
    size_t part = (size_t)B * T * C;
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * T * C * 3 > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const uint16_t *row = qkv + ((size_t)b * T + t) * 3 * C;
            for (int w = 0; w < 3; w++)
                for (int h = 0; h < NH; h++)
                    memcpy(qkvh + w * part + head_row(b, t, h, T, NH, hs), row + w * C + h * hs, hs * sizeof(uint16_t));
        }
}

// A row of the probabilities entering P @ V: row t of a slice of att after dropout (the
// masks of attention_forward_dropout; mask index row + t2), rounded, zero past t.
static inline void probs16_row(uint16_t *pr, const float *ar, int t, int T, float p, uint64_t key, size_t row) {
    if (p > 0.0f) {
        float dscale = 1.0f / (1.0f - p);
        for (int t2 = 0; t2 <= t; t2++) pr[t2] = bf16_from_f32(ar[t2] * keep_scale(key, row + t2, p, dscale));
    } else {
        for (int t2 = 0; t2 <= t; t2++) pr[t2] = bf16_from_f32(ar[t2]);
    }
    memset(pr + t + 1, 0, (size_t)(T - t - 1) * sizeof(uint16_t));
}

GT_HOT static void probs16_rows(uint16_t *P16, const float *a, int T, float p, uint64_t key, size_t base) {
    for (int t = 0; t < T; t++) probs16_row(P16 + (size_t)t * T, a + (size_t)t * T, t, T, p, key, base + (size_t)t * T);
}

// The causal softmax of a slice's scores in place (as softmax_rows) and, while each row is
// in cache, its probabilities for P @ V (probs16_row).
GT_HOT static void softmax16_rows(float *a, uint16_t *P16, int T, float p, uint64_t key, size_t base) {
    for (int t = 0; t < T; t++) {
        float *ar = a + (size_t)t * T;
        softmax_row(ar, t, T);
        probs16_row(P16 + (size_t)t * T, ar, t, T, p, key, base + (size_t)t * T);
    }
}

// softmax_backward_rows over a whole slice, the result rounded into dS16 (zero past t).
GT_HOT static void softmax_backward16_rows(uint16_t *dS16, float *dp, const float *a, int T, float scale, float p,
                                           uint64_t key, size_t base) {
    for (int t = 0; t < T; t++) {
        const float *ar = a + (size_t)t * T;
        float *dr = dp + (size_t)t * T;
        uint16_t *sr = dS16 + (size_t)t * T;
        if (p > 0.0f) dropout_chunk(dr, dr, NULL, (size_t)t + 1, p, key, base + (size_t)t * T);
        float dot = dot_f(ar, dr, t + 1);
        for (int t2 = 0; t2 <= t; t2++) sr[t2] = bf16_from_f32(ar[t2] * (dr[t2] - dot) * scale);
        memset(sr + t + 1, 0, (size_t)(T - t - 1) * sizeof(uint16_t));
    }
}

void attention_forward16(uint16_t *out, float *att, const uint16_t *qkvh, int B, int T, int C, int NH, float p,
                         uint64_t key, uint16_t *scratch16) {
    int hs = C / NH, NB = B * NH;
    size_t TT = (size_t)T * T, Th = (size_t)T * hs, part = (size_t)B * T * C;
    const uint16_t *q = qkvh, *k = qkvh + part, *v = qkvh + 2 * part;
    uint16_t *P16 = scratch16, *y = scratch16 + 2 * (size_t)NB * TT;
    gemm_bf16_batch(NB, 0, 1, T, T, hs, 1.0f / sqrtf((float)hs), q, hs, Th, k, hs, Th, 0.0f, att, T, TT, 0);
    #pragma omp parallel for schedule(static) if ((size_t)NB * TT > PAR_MIN)
    for (int s = 0; s < NB; s++) softmax16_rows(att + s * TT, P16 + s * TT, T, p, key, s * TT);
    gemm_bf16_batch(NB, 0, 0, T, hs, T, 1.0f, P16, T, TT, v, hs, Th, 0.0f, y, hs, Th, 1);
    #pragma omp parallel for collapse(2) schedule(static) if (part > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++)
                memcpy(out + ((size_t)b * T + t) * C + h * hs, y + head_row(b, t, h, T, NH, hs), hs * sizeof(uint16_t));
}

void attention_backward16(float *dqkv, const float *dout, const uint16_t *qkvh, const float *att, int B, int T, int C,
                          int NH, float p, uint64_t key, float *scratch, uint16_t *scratch16) {
    int hs = C / NH, NB = B * NH;
    size_t TT = (size_t)T * T, Th = (size_t)T * hs, part = (size_t)B * T * C;
    const uint16_t *q = qkvh, *k = qkvh + part, *v = qkvh + 2 * part;
    uint16_t *P16 = scratch16, *dS16 = scratch16 + (size_t)NB * TT, *dO = scratch16 + 2 * (size_t)NB * TT;
    float *dP = scratch, *dh = scratch + (size_t)NB * TT;  // dh: dq, dk, dv as heads
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(2) schedule(static) if (part > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++)
                bf16_from_f32_n(dO + head_row(b, t, h, T, NH, hs), dout + ((size_t)b * T + t) * C + h * hs, hs);
    #pragma omp parallel for schedule(static) if ((size_t)NB * TT > PAR_MIN)
    for (int s = 0; s < NB; s++) probs16_rows(P16 + s * TT, att + s * TT, T, p, key, s * TT);
    // through out = P @ V: dP = dout @ V^T, dV = P^T @ dout
    gemm_bf16_batch(NB, 0, 1, T, T, hs, 1.0f, dO, hs, Th, v, hs, Th, 0.0f, dP, T, TT, 0);
    gemm_bf16_batch(NB, 1, 0, T, hs, T, 1.0f, P16, T, TT, dO, hs, Th, 0.0f, dh + 2 * part, hs, Th, 0);
    // through the softmax (and its dropout) to the scaled scores, rounded
    #pragma omp parallel for schedule(static) if ((size_t)NB * TT > PAR_MIN)
    for (int s = 0; s < NB; s++) softmax_backward16_rows(dS16 + s * TT, dP + s * TT, att + s * TT, T, scale, p, key, s * TT);
    // dQ = dS @ K, dK = dS^T @ Q
    gemm_bf16_batch(NB, 0, 0, T, hs, T, 1.0f, dS16, T, TT, k, hs, Th, 0.0f, dh, hs, Th, 0);
    gemm_bf16_batch(NB, 1, 0, T, hs, T, 1.0f, dS16, T, TT, q, hs, Th, 0.0f, dh + part, hs, Th, 0);
    #pragma omp parallel for collapse(2) schedule(static) if (3 * part > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *row = dqkv + ((size_t)b * T + t) * 3 * C;
            for (int w = 0; w < 3; w++)
                for (int h = 0; h < NH; h++)
                    memcpy(row + w * C + h * hs, dh + w * part + head_row(b, t, h, T, NH, hs), hs * sizeof(float));
        }
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

// ---- cross-entropy ----

GT_HOT static void crossentropy_rows(float *probs, float *losses, const float *logits, const int *targets,
                                     size_t n0, size_t n1, int V) {
    for (size_t n = n0; n < n1; n++) {
        const float *x = logits + n * V;
        float *pr = probs + n * V;
        float maxv = max_f(x, V);
        // exp and its sum in one sweep (same partial sums and order as sum_f)
        float acc[8] = {0};
        int v = 0;
        for (; v + 8 <= V; v += 8)
            for (int j = 0; j < 8; j++) {
                pr[v + j] = exp_approx(x[v + j] - maxv);
                acc[j] += pr[v + j];
            }
        float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; v < V; v++) {
            pr[v] = exp_approx(x[v] - maxv);
            sum += pr[v];
        }
        float inv = 1.0f / sum;
        for (v = 0; v < V; v++) pr[v] *= inv;
        // log-sum-exp form: exact even when the target's probability underflows
        losses[n] = logf(sum) + maxv - x[targets[n]];
    }
}

void crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets, size_t N, int V) {
    #pragma omp parallel if (N * V > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        crossentropy_rows(probs, losses, logits, targets, lo, hi, V);
    }
}

GT_HOT static void crossentropy_backward_rows(float *dlogits, const float *probs, const int *targets, float dloss,
                                              size_t n0, size_t n1, int V) {
    for (size_t n = n0; n < n1; n++) {
        const float *pr = probs + n * V;
        float *d = dlogits + n * V;
        for (int v = 0; v < V; v++) d[v] = pr[v] * dloss;
        d[targets[n]] -= dloss;
    }
}

void crossentropy_backward(float *dlogits, const float *probs, const int *targets, float dloss, size_t N, int V) {
    #pragma omp parallel if (N * V > PAR_MIN)
    {
        size_t lo, hi;
        thread_range(N, &lo, &hi);
        crossentropy_backward_rows(dlogits, probs, targets, dloss, lo, hi, V);
    }
}

// Columns [v0, v1) of probs - onehot, transposed: rows v of d16T (V, N), in tiles of 16
// tokens so the writes are runs rather than single values.
GT_HOT static void crossentropy_dlogits16T_cols(uint16_t *d16T, const float *probs, const int *targets, size_t N,
                                                int V, int v0, int v1) {
    for (size_t n0 = 0; n0 < N; n0 += 16) {
        size_t n1 = n0 + 16 < N ? n0 + 16 : N;
        for (int v = v0; v < v1; v++)
            for (size_t n = n0; n < n1; n++)
                d16T[(size_t)v * N + n] = bf16_from_f32(probs[n * V + v] - (targets[n] == v ? 1.0f : 0.0f));
    }
}

void crossentropy_dlogits16T(uint16_t *d16T, const float *probs, const int *targets, size_t N, int V) {
    #pragma omp parallel for schedule(static) if (N * V > PAR_MIN)
    for (int v0 = 0; v0 < V; v0 += 64)
        crossentropy_dlogits16T_cols(d16T, probs, targets, N, V, v0, v0 + 64 < V ? v0 + 64 : V);
}
