// test_gemm_small.c - gemm_small against a naive double-precision product, for every
// transpose pair, alpha/beta/bias form and ragged shapes (tiles cut in rows and columns),
// and bit-identical results when the rows or the columns of C are computed in pieces (as
// the threads of layers.c's sgemm_split do). Skips (77) on a CPU without AVX-512.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_small.h"
#include "rng.h"

static int failures = 0;
static Rng rng;

static float *rnd(size_t n) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rng_uniform(&rng) * 2.0f - 1.0f;
    return x;
}

// C (M,N) = alpha op(A) op(B) + (bias | beta C), in double.
static void naive(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                  float beta, float *C, int ldc, const float *bias) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                     (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            double add = bias ? bias[j] : beta == 0.0f ? 0.0 : (double)beta * C[(size_t)i * ldc + j];
            C[(size_t)i * ldc + j] = (float)(alpha * s + add);
        }
}

static void one(int ta, int tb, int M, int N, int K, float alpha, float beta, int with_bias) {
    // leading dimensions a little wider than needed, as for q, k, v inside qkv
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
    float *A = rnd((size_t)(ta ? K : M) * lda), *B = rnd((size_t)(tb ? N : K) * ldb), *C0 = rnd((size_t)M * ldc);
    float *bias = with_bias ? rnd((size_t)N) : NULL;
    float *C1 = malloc((size_t)M * ldc * sizeof(float)), *C2 = malloc((size_t)M * ldc * sizeof(float));
    float *C3 = malloc((size_t)M * ldc * sizeof(float));
    memcpy(C1, C0, (size_t)M * ldc * sizeof(float));
    memcpy(C2, C0, (size_t)M * ldc * sizeof(float));
    memcpy(C3, C0, (size_t)M * ldc * sizeof(float));
    if (beta == 0.0f && !with_bias)  // beta 0: C is not read, even a NaN in it does not show
        for (size_t i = 0; i < (size_t)M * ldc; i++) C1[i] = C2[i] = C3[i] = NAN;
    naive(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc, bias);
    gemm_small(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C1, ldc, bias);
    // rows in two pieces (cut at a multiple of 16, as sgemm_split does), then columns
    int mc = ((M + 1) / 2 + 15) / 16 * 16, nc = ((N + 1) / 2 + 15) / 16 * 16;
    for (int r0 = 0; r0 < M; r0 += mc) {
        int m = M - r0 < mc ? M - r0 : mc;
        const float *a = ta ? A + r0 : A + (size_t)r0 * lda;
        gemm_small(ta, tb, m, N, K, alpha, a, lda, B, ldb, beta, C2 + (size_t)r0 * ldc, ldc, bias);
    }
    for (int c0 = 0; c0 < N; c0 += nc) {
        int n = N - c0 < nc ? N - c0 : nc;
        const float *b = tb ? B + (size_t)c0 * ldb : B + c0;
        gemm_small(ta, tb, M, n, K, alpha, A, lda, b, ldb, beta, C3 + c0, ldc, bias ? bias + c0 : NULL);
    }
    double maxerr = 0.0, maxref = 0.0;
    int untouched = 1;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            size_t x = (size_t)i * ldc + j;
            maxerr = fmax(maxerr, fabs((double)C1[x] - C0[x]));
            maxref = fmax(maxref, fabs((double)C0[x]));
        }
        for (int j = N; j < ldc; j++) {  // padding between rows of C is never written
            size_t x = (size_t)i * ldc + j;
            if (!(C1[x] == C0[x] || (isnan(C1[x]) && beta == 0.0f && !with_bias))) untouched = 0;
        }
    }
    // float sums of K terms of size <= 1 against double: K * 2^-24 relative, with margin
    double tol = 4.0 * (K + 2) * 6e-8 * fmax(maxref, 1.0);
    int same = memcmp(C1, C2, (size_t)M * ldc * sizeof(float)) == 0 && memcmp(C1, C3, (size_t)M * ldc * sizeof(float)) == 0;
    int ok = maxerr <= tol && same && untouched;
    if (!ok || getenv("VERBOSE"))
        printf("%s %c%c M=%d N=%d K=%d alpha=%g beta=%g bias=%d: err %.2e (tol %.2e), pieces bitwise %s, "
               "padding untouched %s\n",
               ok ? "ok  " : "FAIL", ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, beta, with_bias, maxerr, tol,
               same ? "yes" : "NO", untouched ? "yes" : "NO");
    if (!ok) failures++;
    free(A), free(B), free(C0), free(C1), free(C2), free(C3), free(bias);
}

int main(void) {
    if (!gemm_small_fits(0, 64, 64, 64)) {
        printf("skip: this CPU has no AVX-512, gemm_small is not used here\n");
        return 77;
    }
    rng_seed(&rng, 99);
    // the engine's shapes at n_embd 64 (seed: B*T 512, V 2000 cut down) and ragged ones
    static const int shapes[][3] = {{512, 192, 64}, {512, 64, 256}, {64, 256, 512}, {250, 500, 64}, {64, 77, 64},
                                    {1, 1, 1}, {7, 33, 5}, {13, 31, 17}, {6, 32, 1}, {97, 65, 129}, {5, 2000, 64}};
    int n = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                one(ta, tb, M, N, K, 1.0f, 1.0f, 0);
                one(ta, tb, M, N, K, 1.0f, 0.0f, 0);
                one(ta, tb, M, N, K, 0.37f, 0.0f, 0);
                one(ta, tb, M, N, K, 1.0f, 1.0f, 1);
                one(ta, tb, M, N, K, 0.5f, 2.0f, 0);
                n += 5;
            }
    int fits = gemm_small_fits(0, 512, 256, 64) && !gemm_small_fits(1, 512, 256, 64) &&
               !gemm_small_fits(0, 2048, 1152, 384) && !gemm_small_fits(0, 64, 64, 4096);
    printf("%s gemm_small_fits: n_embd-64 products yes; A^T, 384-wide and K = 4096 no\n", fits ? "ok  " : "FAIL");
    if (!fits) failures++;
    if (failures) {
        printf("%d of %d gemm_small checks failed\n", failures, n + 1);
        return 1;
    }
    printf("all %d gemm_small checks passed (naive reference, pieces bitwise, padding untouched)\n", n + 1);
    return 0;
}
