// gemm_small.c - see gemm_small.h. One AVX-512 register tile: MR rows x NR columns of C as
// 2 x MR vectors of 16 floats, accumulated over k from a broadcast of A(i, k) and a row of
// a B panel. 12 accumulators, 2 panel loads and 6 broadcasts per k: bound by the FMA units,
// not by loads. Compiled for AVX-512 with a target attribute (the project builds for plain
// x86-64-v2) and only called when the CPU has it.
#include "gemm_small.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

#define MR 6   // rows of C per tile
#define NR 32  // columns of C per tile (two vectors); op(B) is copied into panels this wide

#if defined(__x86_64__) && defined(__GNUC__)
#define GS_HAVE_KERNEL 1
#define AVX512 __attribute__((target("avx512f,avx512vl,fma")))
typedef float v16f __attribute__((vector_size(64)));              // 64-byte aligned (panels)
typedef float v16u __attribute__((vector_size(64), aligned(4)));  // any float address (C)
#else
#define GS_HAVE_KERNEL 0
#endif

int gemm_small_fits(int trans_a, int M, int N, int K) {
#if GS_HAVE_KERNEL
    // The panels of op(B) (K x N floats) stay in L2 while every row block of A passes them.
    // Not for op(A) = A^T (weight gradients, K = B*T): there each tile reads A across K
    // cache lines, and OpenBLAS, packing A, measured 10-25% faster.
    return !trans_a && M > 0 && N > 0 && K > 0 && K <= 2048 && (size_t)K * N <= 131072 &&
           __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
#else
    (void)trans_a, (void)M, (void)N, (void)K;
    return 0;
#endif
}

#if GS_HAVE_KERNEL

// One growing buffer per thread for the panels: products come in the thousands per step,
// and a malloc/free of up to 512 KB each time would page-fault the memory back in.
static _Thread_local float *panel_buf;
static _Thread_local size_t panel_cap;

static float *panels(size_t n) {
    if (n > panel_cap) {
        free(panel_buf);
        panel_buf = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
        if (!panel_buf) gt_fail(GT_EXIT_RUNTIME, "out of memory for %zu bytes of GEMM panels", n * sizeof(float));
        panel_cap = n;
    }
    return panel_buf;
}

// op(B) (K, N) into panels of NR columns: panel p holds columns [p*NR, p*NR + NR) as K rows
// of NR floats, zero past N, so every tile runs full width.
static void pack_b(float *P, int trans_b, int N, int K, const float *B, int ldb) {
    int np = (N + NR - 1) / NR;
    for (int p = 0; p < np; p++) {
        float *pp = P + (size_t)p * K * NR;
        int j0 = p * NR, nc = N - j0 < NR ? N - j0 : NR;
        if (!trans_b) {
            for (int k = 0; k < K; k++) {
                memcpy(pp + (size_t)k * NR, B + (size_t)k * ldb + j0, (size_t)nc * sizeof(float));
                memset(pp + (size_t)k * NR + nc, 0, (size_t)(NR - nc) * sizeof(float));
            }
        } else {  // op(B)(k, j) = B[j, k]: read rows of B, write columns of the panel
            if (nc < NR) memset(pp, 0, (size_t)K * NR * sizeof(float));
            for (int c = 0; c < nc; c++) {
                const float *br = B + (size_t)(j0 + c) * ldb;
                for (int k = 0; k < K; k++) pp[(size_t)k * NR + c] = br[k];
            }
        }
    }
}

// The value stored: alpha * sum + (bias, or beta * C, or nothing).
AVX512 static inline v16f finish(v16f acc, v16f c, const float *bias16, float alpha, float beta) {
    if (bias16) {
        v16u b = *(const v16u *)bias16;
        return alpha * acc + b;
    }
    return beta == 0.0f ? alpha * acc : alpha * acc + beta * c;
}

// Rows [0, mr) x the nc (<= NR) columns of one panel. A(i, k) = A[i*si + k*sk]. mr is MR
// at every call but the last row block's, and then the loops are the same sums in the same
// order. bias: the panel's slice of the bias, or NULL.
AVX512 static inline __attribute__((always_inline)) void tile(int mr, int K, const float *A, size_t si, size_t sk,
                                                              const float *P, float *C, int ldc, int nc, float alpha,
                                                              float beta, const float *bias) {
    v16f acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = (v16f){0};
    for (int k = 0; k < K; k++) {
        v16f b0 = *(const v16f *)(P + (size_t)k * NR), b1 = *(const v16f *)(P + (size_t)k * NR + 16);
        for (int r = 0; r < mr; r++) {
            float a = A[r * si + k * sk];
            acc[r][0] += a * b0;
            acc[r][1] += a * b1;
        }
    }
    float biasp[NR];  // bias padded to the tile's width
    if (bias && nc < NR) {
        memset(biasp, 0, sizeof biasp);
        memcpy(biasp, bias, (size_t)nc * sizeof(float));
        bias = biasp;
    }
    for (int r = 0; r < mr; r++) {
        float *c = C + (size_t)r * ldc;
        if (nc == NR) {
            v16u *cv = (v16u *)c;
            v16f c0 = beta != 0.0f && !bias ? cv[0] : (v16f){0}, c1 = beta != 0.0f && !bias ? cv[1] : (v16f){0};
            cv[0] = finish(acc[r][0], c0, bias, alpha, beta);
            cv[1] = finish(acc[r][1], c1, bias ? bias + 16 : NULL, alpha, beta);
        } else {  // a partial panel: through a full-width copy of the row
            float buf[NR] __attribute__((aligned(64))) = {0};
            if (beta != 0.0f && !bias) memcpy(buf, c, (size_t)nc * sizeof(float));
            v16f *bv = (v16f *)buf;
            bv[0] = finish(acc[r][0], bv[0], bias, alpha, beta);
            bv[1] = finish(acc[r][1], bv[1], bias ? bias + 16 : NULL, alpha, beta);
            memcpy(c, buf, (size_t)nc * sizeof(float));
        }
    }
}

AVX512 static void gemm_small_avx512(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                                     int lda, const float *B, int ldb, float beta, float *C, int ldc,
                                     const float *bias) {
    int np = (N + NR - 1) / NR;
    float *P = panels((size_t)np * K * NR);
    pack_b(P, trans_b, N, K, B, ldb);
    size_t si = trans_a ? 1 : (size_t)lda, sk = trans_a ? (size_t)lda : 1;
    // Rows of A in chunks of about 256 KB (they stay in L2), and for each chunk panel by
    // panel (K x NR floats, in L1), every row block of the chunk past the panel.
    int mc = (65536 / K) / MR * MR;
    if (mc < MR) mc = MR;
    for (int i0 = 0; i0 < M; i0 += mc) {
        int i1 = i0 + mc < M ? i0 + mc : M;
        for (int p = 0; p < np; p++) {
            const float *pp = P + (size_t)p * K * NR;
            int j0 = p * NR, nc = N - j0 < NR ? N - j0 : NR;
            const float *bp = bias ? bias + j0 : NULL;
            int i = i0;
            for (; i + MR <= i1; i += MR)
                tile(MR, K, A + i * si, si, sk, pp, C + (size_t)i * ldc + j0, ldc, nc, alpha, beta, bp);
            if (i < i1) tile(i1 - i, K, A + i * si, si, sk, pp, C + (size_t)i * ldc + j0, ldc, nc, alpha, beta, bp);
        }
    }
}
#endif

void gemm_small(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc, const float *bias) {
#if GS_HAVE_KERNEL
    if (M <= 0 || N <= 0) return;
    gemm_small_avx512(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias);
#else
    (void)trans_a, (void)trans_b, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)ldb;
    (void)beta, (void)C, (void)ldc, (void)bias;
    gt_fail(GT_EXIT_RUNTIME, "gemm_small called on a build without its kernel");
#endif
}
