// layers.h - the transformer's kernels as paired forward/backward functions, llm.c style:
// outputs first, then inputs, then sizes; backward functions ACCUMULATE (+=) into their
// gradient outputs. Matmuls go through cblas_sgemm; element-wise loops use OpenMP.
// gpt2.c composes them for training; sampler.c reuses the forward ones for inference.
#ifndef GT_LAYERS_H
#define GT_LAYERS_H

#include <stddef.h>

// out (B,T,C) = wte[inp] + wpe[t]
void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C);
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C);

// out (N,C) normalised over C with eps 1e-5; mean/rstd (N) are cached for backward (may be NULL in inference)
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, size_t N, int C);
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, size_t N, int C);

// out (N,OC) = inp (N,C) @ w^T + bias, w (OC,C) as PyTorch's nn.Linear; bias may be NULL
void matmul_forward(float *out, const float *inp, const float *w, const float *bias, size_t N, int C, int OC);
void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                     const float *w, size_t N, int C, int OC);

// GELU, tanh approximation (nn.GELU(approximate='tanh'))
void gelu_forward(float *out, const float *inp, size_t N);
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t N);

void residual_forward(float *out, const float *a, const float *b, size_t N);

// Causal self-attention over qkv (B,T,3C) -> out (B,T,C); att (B,NH,T,T) holds the softmax
// probabilities (upper triangle 0). Used by gpt2.c (with dropout handled there) and tests.
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH);

#endif
