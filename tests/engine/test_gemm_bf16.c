// test_gemm_bf16.c - the bf16 building blocks of --precision bf16: the threaded conversion
// against base/bf16.h's (itself tested against PyTorch in tests/base), and gemm_bf16
// against the double-precision product of the same bf16 inputs, for every transpose pair,
// alpha/beta/bias form, bf16 output, and ragged shapes on both sides of the piece rule, and
// gemm_bf16_batch on attention's shapes; bit-identical at 1 and 2 threads and from inside a
// parallel region. Skips (77), saying why, on a CPU without bf16 instructions.
//
// The bound: the inputs are bf16, so each product a*b is exact in fp32 and the only error
// is the fp32 accumulation: |C - exact| <= gamma_K * sum_k |a_k b_k| with gamma_K =
// K u / (1 - K u), u = 2^-24 (the classic bound for a sum of K terms in any order), plus
// one rounding each for alpha, bias and beta C. Inputs that were not rounded to bf16, or
// a bf16 accumulator, miss it by orders of magnitude (relative 2^-9 per term).
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_bf16.h"
#include "rng.h"

static int failures = 0;
static Rng rng;

static void check(int ok, const char *what) {
    if (!ok) {
        printf("FAIL %s\n", what);
        failures++;
    }
}

// bf16_from_f32_par (vectorized clones, 2 threads) and _rows against bf16_from_f32.
static void test_conversion(void) {
    size_t n = 200003;
    float *x = malloc(n * sizeof(float));
    uint16_t *h = malloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)rng_next(&rng);
        memcpy(&x[i], &u, sizeof u);  // every kind of value: NaN, Inf, subnormal
        if (i % 3) x[i] = (rng_uniform(&rng) - 0.5f) * 10.0f;
    }
    omp_set_num_threads(2);
    bf16_from_f32_par(h, x, n);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += h[i] != bf16_from_f32(x[i]);
    check(!bad, "bf16_from_f32_par equals bf16_from_f32 element by element");
    memset(h, 0, n * sizeof(uint16_t));
    bf16_from_f32_rows(h, 500, x + 7, 400, 400, 300);  // 400 rows of 300, strides 400 in, 500 out
    bad = 0;
    for (size_t r = 0; r < 400; r++)
        for (size_t c = 0; c < 500; c++) bad += h[r * 500 + c] != (c < 300 ? bf16_from_f32(x[7 + r * 400 + c]) : 0);
    check(!bad, "bf16_from_f32_rows converts the rows, nothing else");
    omp_set_num_threads(1);
    free(x);
    free(h);
}

static uint16_t *rnd16(size_t n) {
    uint16_t *x = malloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) x[i] = bf16_from_f32(rng_uniform(&rng) * 2.0f - 1.0f);
    return x;
}

static float *rnd32(size_t n) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rng_uniform(&rng) * 2.0f - 1.0f;
    return x;
}

static double worst_ratio;

// gemm_bf16 (or _to16) against the exact product of the same bf16 values.
static void one(int ta, int tb, int M, int N, int K, float alpha, float beta, int with_bias, int out16) {
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
    uint16_t *A = rnd16((size_t)(ta ? K : M) * lda), *B = rnd16((size_t)(tb ? N : K) * ldb);
    float *C0 = rnd32((size_t)M * ldc), *bias = with_bias ? rnd32((size_t)N) : NULL;
    float *C = malloc((size_t)M * ldc * sizeof(float));
    uint16_t *C16 = malloc((size_t)M * ldc * sizeof(uint16_t));
    memcpy(C, C0, (size_t)M * ldc * sizeof(float));
    if (beta == 0.0f)  // C is not read: a NaN there must not show
        for (size_t i = 0; i < (size_t)M * ldc; i++) C[i] = NAN;
    if (out16) {
        for (size_t i = 0; i < (size_t)M * ldc; i++) C16[i] = 0x7fc0;
        gemm_bf16_to16(ta, tb, M, N, K, alpha, A, lda, B, ldb, C16, ldc, bias);
    } else {
        gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias);
    }
    const double u = ldexp(1.0, -24), gamma = K * u / (1.0 - K * u);
    int bad = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0, sa = 0.0;
            for (int k = 0; k < K; k++) {
                double p = (double)f32_from_bf16(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                           f32_from_bf16(tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                s += p;
                sa += fabs(p);
            }
            double add = bias ? bias[j] : beta == 0.0f ? 0.0 : (double)beta * C0[(size_t)i * ldc + j];
            double want = alpha * s + add;
            double bound = fabs(alpha) * (gamma * sa + u * fabs(s)) + 2 * u * (fabs(add) + fabs(want)) + 1e-37;
            double got = out16 ? f32_from_bf16(C16[(size_t)i * ldc + j]) : C[(size_t)i * ldc + j];
            if (out16) bound += ldexp(fabs(want), -8);  // the final rounding to bf16: half an ulp, 2^-9 relative
            double err = fabs(got - want);
            if (!(err <= bound)) {
                if (bad < 3)
                    printf("  (%d,%d) of %dx%dx%d ta%d tb%d: %.9g, exact %.9g, err %.3g > bound %.3g\n", i, j, M, N, K,
                           ta, tb, got, want, err, bound);
                bad++;
            }
            if (!out16 && bound > 1e-30 && err / bound > worst_ratio) worst_ratio = err / bound;
        }
    // nothing written outside the (M, N) block of C
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++)
            bad += out16 ? C16[(size_t)i * ldc + j] != 0x7fc0
                         : (beta == 0.0f ? !isnan(C[(size_t)i * ldc + j]) : C[(size_t)i * ldc + j] != C0[(size_t)i * ldc + j]);
    char what[160];
    snprintf(what, sizeof what, "gemm_bf16%s %dx%dx%d ta%d tb%d alpha %g beta %g%s", out16 ? "_to16" : "", M, N, K, ta,
             tb, (double)alpha, (double)beta, with_bias ? " bias" : "");
    check(!bad, what);
    free(A);
    free(B);
    free(C0);
    free(C);
    free(C16);
    free(bias);
}

// gemm_bf16_batch: NB products (T, hs) x (hs, T) and back, as attention makes them, with
// gaps between the matrices; each against the exact product, and 1 vs 2 threads.
static void batch(int NB, int ta, int tb, int M, int N, int K, float alpha, float beta, int out16) {
    int lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
    size_t sa = (size_t)M * K + 5, sb = (size_t)K * N + 3, sc = (size_t)M * N + 7;
    uint16_t *A = rnd16(NB * sa), *B = rnd16(NB * sb);
    float *C0 = rnd32(NB * sc), *C[2];
    uint16_t *H[2];
    for (int r = 0; r < 2; r++) {
        C[r] = malloc(NB * sc * sizeof(float));
        memcpy(C[r], C0, NB * sc * sizeof(float));
        H[r] = calloc(NB * sc, sizeof(uint16_t));
        omp_set_num_threads(r + 1);
        gemm_bf16_batch(NB, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, out16 ? (void *)H[r] : C[r], ldc, sc,
                        out16);
    }
    omp_set_num_threads(1);
    const double u = ldexp(1.0, -24), gamma = K * u / (1.0 - K * u);
    int bad = 0;
    for (int b = 0; b < NB; b++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0.0, sabs = 0.0;
                for (int k = 0; k < K; k++) {
                    double p = (double)f32_from_bf16(A[b * sa + (ta ? (size_t)k * lda + i : (size_t)i * lda + k)]) *
                               f32_from_bf16(B[b * sb + (tb ? (size_t)j * ldb + k : (size_t)k * ldb + j)]);
                    s += p;
                    sabs += fabs(p);
                }
                size_t o = b * sc + (size_t)i * ldc + j;
                double want = alpha * s + (beta != 0.0f ? C0[o] : 0.0);
                double got = out16 ? f32_from_bf16(H[0][o]) : C[0][o];
                double bound = fabs(alpha) * (gamma * sabs + u * fabs(s)) + 2 * u * (fabs(C0[o]) + fabs(want)) + 1e-37;
                if (out16) bound += ldexp(fabs(want), -8);
                bad += !(fabs(got - want) <= bound);
            }
    // the gaps between the matrices are not written
    for (int b = 0; b < NB; b++)
        for (size_t o = b * sc + (size_t)M * N; o < (size_t)(b + 1) * sc; o++)
            bad += out16 ? H[0][o] != 0 : C[0][o] != C0[o];
    char what[160];
    snprintf(what, sizeof what, "gemm_bf16_batch %d x %dx%dx%d ta%d tb%d alpha %g beta %g%s", NB, M, N, K, ta, tb,
             (double)alpha, (double)beta, out16 ? " bf16 C" : "");
    check(!bad, what);
    snprintf(what, sizeof what, "gemm_bf16_batch %d x %dx%dx%d ta%d tb%d: same bits at 1 and 2 threads", NB, M, N, K,
             ta, tb);
    check(out16 ? !memcmp(H[0], H[1], NB * sc * sizeof(uint16_t)) : !memcmp(C[0], C[1], NB * sc * sizeof(float)), what);
    free(A);
    free(B);
    free(C0);
    for (int r = 0; r < 2; r++) {
        free(C[r]);
        free(H[r]);
    }
}

// The same product at 1 and 2 threads, and as 2 calls from inside a parallel region: the
// same bits (the piece rule depends on the shape only).
static void threads_invariant(int ta, int tb, int M, int N, int K, float beta) {
    int lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
    uint16_t *A = rnd16((size_t)M * K), *B = rnd16((size_t)K * N);
    float *C0 = rnd32((size_t)M * N), *bias = rnd32((size_t)N);
    float *C[3];
    for (int r = 0; r < 3; r++) {
        C[r] = malloc((size_t)M * N * sizeof(float));
        memcpy(C[r], C0, (size_t)M * N * sizeof(float));
    }
    omp_set_num_threads(1);
    gemm_bf16(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C[0], ldc, beta == 0.0f ? bias : NULL);
    omp_set_num_threads(2);
    gemm_bf16(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C[1], ldc, beta == 0.0f ? bias : NULL);
    check(omp_get_max_threads() == 2, "gemm_bf16 leaves the caller's thread count as it was");
    #pragma omp parallel num_threads(2)
    {
        // from inside a parallel region the pieces run one after another on the caller
        if (omp_get_thread_num() == 0)
            gemm_bf16(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C[2], ldc, beta == 0.0f ? bias : NULL);
    }
    omp_set_num_threads(1);
    char what[128];
    snprintf(what, sizeof what, "gemm_bf16 %dx%dx%d ta%d tb%d beta %g: same bits at 1 and 2 threads", M, N, K, ta, tb,
             (double)beta);
    check(memcmp(C[0], C[1], (size_t)M * N * sizeof(float)) == 0, what);
    snprintf(what, sizeof what, "gemm_bf16 %dx%dx%d ta%d tb%d beta %g: same bits inside a parallel region", M, N, K, ta,
             tb, (double)beta);
    check(memcmp(C[0], C[2], (size_t)M * N * sizeof(float)) == 0, what);
    free(A);
    free(B);
    free(C0);
    free(bias);
    for (int r = 0; r < 3; r++) free(C[r]);
}

int main(void) {
    char err[256];
    if (!bf16_supported(err, sizeof err)) {
        printf("SKIP: %s\n", err);
        return 77;
    }
    printf("bf16 matmuls run on %s\n", bf16_isa());
    rng_seed(&rng, 11);
    omp_set_num_threads(1);
    test_conversion();
    static const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {37, 29, 45}, {64, 96, 128}, {130, 70, 33},
                                    {16, 16, 16}, {300, 200, 130}, {40, 700, 64}, {513, 96, 257}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                one(ta, tb, M, N, K, 1.0f, 0.0f, 0, 0);
                one(ta, tb, M, N, K, 0.37f, 0.0f, 0, 0);
                one(ta, tb, M, N, K, 1.0f, 1.0f, 0, 0);
                one(ta, tb, M, N, K, 0.5f, 1.0f, 0, 0);
                one(ta, tb, M, N, K, 1.0f, 0.0f, 1, 0);
                one(ta, tb, M, N, K, 1.0f, 0.0f, 1, 1);
                one(ta, tb, M, N, K, 1.0f, 0.0f, 0, 1);
            }
    printf("worst error / bound over the fp32-output products: %.3f\n", worst_ratio);
    // attention's shapes: scores (T,hs)x(hs,T), P @ V, and the transposed products of backward
    batch(12, 0, 1, 40, 40, 16, 0.25f, 0.0f, 0);
    batch(12, 0, 0, 40, 16, 40, 1.0f, 0.0f, 1);
    batch(12, 1, 0, 40, 16, 40, 1.0f, 0.0f, 0);
    batch(7, 0, 0, 33, 24, 33, 1.0f, 1.0f, 0);
    batch(48, 0, 1, 64, 64, 64, 0.125f, 0.0f, 0);
    // shapes cut into pieces by rows and by columns, with and without accumulation
    threads_invariant(0, 1, 700, 300, 200, 0.0f);
    threads_invariant(0, 0, 96, 1200, 160, 1.0f);
    threads_invariant(1, 0, 640, 200, 512, 1.0f);
    threads_invariant(0, 1, 512, 2000, 64, 0.0f);
    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("all bf16 checks passed\n");
    return 0;
}
