// gemm_bf16.h - the matmuls of the mixed-precision engine (--precision bf16): bf16
// operands, fp32 accumulation, over oneDNN's matmul primitive; the CPU check; and the
// OpenMP-parallel form of base/bf16.h's conversion for large arrays.
//
// A bf16 is the upper half of an fp32 (8 exponent bits, 8 significant bits), so
// converting back is exact, and the product of two bf16 values is exact in fp32: a bf16
// matmul with fp32 accumulation is an fp32 matmul of bf16-rounded inputs, up to the order
// of the sums. That is what the tests check and what lets small kernels compute "bf16"
// products with fp32 instructions (docs/engine.md, Mixed precision).
#ifndef GT_GEMM_BF16_H
#define GT_GEMM_BF16_H

#include <stddef.h>
#include <stdint.h>

#include "bf16.h"

typedef enum { PRECISION_FP32 = 0, PRECISION_BF16 = 1 } Precision;

// "fp32" | "bf16" -> precision; returns 0 on any other name.
int precision_parse(const char *name, Precision *p);
const char *precision_name(Precision p);

// bf16_from_f32_n over the OpenMP threads for large n.
void bf16_from_f32_par(uint16_t *dst, const float *src, size_t n);
// Rows of floats into bf16: dst (rows, cols) with row stride ldd from src with stride lds.
void bf16_from_f32_rows(uint16_t *dst, size_t ldd, const float *src, size_t lds, size_t rows, size_t cols);

// 1 when this CPU runs bf16 matmuls natively: AVX512-BF16 (vdpbf16ps), and AMX-BF16 where
// present (oneDNN picks it). Otherwise 0 and one sentence naming the missing instruction
// set in err: --precision bf16 then stops (exit 1) rather than run oneDNN's emulation,
// which measured slower than the fp32 engine (docs/engine.md). ONEDNN_MAX_CPU_ISA below
// AVX512_CORE_BF16 counts as missing, so an older CPU can be imitated.
int bf16_supported(char *err, size_t errsize);
// The instructions the bf16 matmuls run on: "AMX-BF16", "AVX512-BF16", or "none".
const char *bf16_isa(void);

// Row-major C (M,N) = alpha op(A) op(B) + beta C (+ bias (N)), with A and B bf16 and C
// fp32, accumulated in fp32 (oneDNN's matmul primitive). beta is 0 or 1; alpha must be 1
// when there is a bias. trans_a/trans_b: 0 or 1; leading dimensions as for cblas_sgemm.
//
// Large products are cut into pieces of rows (or columns) of C by a rule that depends only
// on (M, N, K), each piece a single-threaded oneDNN call, and the pieces shared out to the
// OpenMP threads: every element of C is the same sum whatever the thread count (oneDNN's
// own threading may split K differently with more threads). Called from inside a parallel
// region it runs on the calling thread alone.
void gemm_bf16(int trans_a, int trans_b, int M, int N, int K, float alpha, const uint16_t *A, int lda,
               const uint16_t *B, int ldb, float beta, float *C, int ldc, const float *bias);
// The same with C written as bf16 (the fp32 sum plus bias, rounded once; beta 0): for
// products whose only use is as the input of another matmul.
void gemm_bf16_to16(int trans_a, int trans_b, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                    const uint16_t *B, int ldb, uint16_t *C, int ldc, const float *bias);
// A batch of products: matrix i of A, B and C starts stride_a, stride_b, stride_c elements
// after matrix i-1; C is fp32, or bf16 when c_bf16 (then beta 0). No bias. The batch is cut
// into runs of whole products, so again the bits do not depend on the thread count.
void gemm_bf16_batch(int batch, int trans_a, int trans_b, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                     size_t stride_a, const uint16_t *B, int ldb, size_t stride_b, float beta, void *C, int ldc,
                     size_t stride_c, int c_bf16);

#endif
