// gemm_small.h - single-threaded sgemm for the model's small matrices (n_embd 64, head
// size 64, short sequences), where OpenBLAS spends as long packing both operands, zeroing
// C for beta 0 and pre-filling the bias as it does multiplying. Here only op(B) is copied
// (into 32-column panels, K x N floats: small next to the M x N x K multiply-adds), A is
// read in place and the bias and beta are applied in the same store as the result.
//
// Each element of C is one sum over k in increasing order (one fused multiply-add per k,
// whatever the tile it falls in), so splitting the rows or columns of C between threads
// gives the same bits. Which kernel computes a product (this one or OpenBLAS) depends
// only on its full shape and the CPU, never on the thread count.
#ifndef GT_GEMM_SMALL_H
#define GT_GEMM_SMALL_H

// 1 when gemm_small should do an (M,N,K) product: the CPU has AVX-512 (the kernel's only
// form; elsewhere OpenBLAS does everything), op(A) is A itself (trans_a 0) and op(B) is
// small enough to stay in cache.
int gemm_small_fits(int trans_a, int M, int N, int K);

// Row-major C (M,N) = alpha op(A) op(B) + beta C, or with bias (N): C = alpha op(A) op(B)
// + bias (beta ignored), as cblas_sgemm with CblasRowMajor. trans_a/trans_b: 0 or 1.
// Requires the CPU to have AVX-512 (gemm_small_fits true for some shape).
void gemm_small(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc, const float *bias);

#endif
