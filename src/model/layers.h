// layers.h - the transformer's kernels as paired forward/backward functions, llm.c style:
// outputs first, then inputs, then sizes; backward functions ACCUMULATE (+=) into their
// gradient outputs. Matmuls go through cblas_sgemm; element-wise loops use OpenMP.
// gpt2.c composes them for training; sampler.c reuses the forward ones for inference.
#ifndef GT_LAYERS_H
#define GT_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "gemm_bf16.h"

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

// Training form of the pair: out = gelu(x) and x overwritten with gelu'(x), then the
// backward d *= gelu'(x) without a second tanh. out must not alias x.
void gelu_forward_keep_grad(float *out, float *x, size_t N);
void gelu_backward_from_grad(float *d, const float *g, size_t N);

void residual_forward(float *out, const float *a, const float *b, size_t N);

// ---- additions used by gpt2.c for training (dropout, backward of attention, loss) ----

// Inverted dropout with keep probability 1-p: out = inp * mask / (1-p), mask[i] drawn from
// stream `key` (rng.h) at index i, so the same (key, i) always gives the same decision.
// out may alias inp. Used for the forward and (with the same key) the backward pass;
// p == 0 copies. Written, not accumulated.
void dropout_apply(float *out, const float *inp, size_t N, float p, uint64_t key);
// out = a + dropout(b): the residual branches of nanoGPT's blocks. out may alias a.
void residual_dropout_forward(float *out, const float *a, const float *b, size_t N, float p, uint64_t key);

// Causal self-attention over qkv (B,T,3C) -> out (B,T,C); att (B,NH,T,T) holds the softmax
// probabilities (upper triangle 0) before dropout p, whose mask of element (b, h, t, t2) is
// index ((b*NH + h)*T + t)*T + t2 of stream `key` (p = 0: no dropout).
void attention_forward_dropout(float *out, float *att, const float *qkv, int B, int T, int C, int NH,
                               float p, uint64_t key);
// Accumulates into dqkv (B,T,3C) given dout (B,T,C), the forward's qkv and att, and the
// same p and key as the forward.
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T,
                        int C, int NH, float p, uint64_t key);

// Softmax of logits (N,V) into probs and per-row cross-entropy losses (N) against targets.
void crossentropy_forward(float *probs, float *losses, const float *logits, const int *targets, size_t N, int V);
// dlogits = (probs - onehot(targets)) * dloss, where dloss is d(loss)/d(each row's loss)
// (1/N for a mean). Written, not accumulated, so dlogits may alias probs.
void crossentropy_backward(float *dlogits, const float *probs, const int *targets, float dloss, size_t N, int V);

// matmul_backward with dinp written rather than accumulated (dw, dbias still accumulate),
// sparing the caller a zeroed scratch buffer.
void matmul_backward_set(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                         const float *w, size_t N, int C, int OC);
// matmul_backward_set for alpha * dout, without a pass over dout (the scale goes into the
// GEMMs): the tied head's backward takes probs - onehot and the loss scale this way.
void matmul_backward_set_scaled(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                                size_t N, int C, int OC, float alpha);

// ---- --precision bf16 (bf16.h): every matmul on bf16 operands, accumulated in fp32 ----
// Same conventions; a bf16 output is the fp32 result rounded once, for tensors only
// matmuls read.

// layernorm_forward with the output rounded to bf16.
void layernorm_forward16(uint16_t *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                         size_t N, int C);
// out (N,OC) = inp (N,C) @ w^T + bias, as fp32 or rounded to bf16.
void matmul_forward_bf16(float *out, const uint16_t *inp, const uint16_t *w, const float *bias, size_t N, int C, int OC);
void matmul_forward_bf16_to16(uint16_t *out, const uint16_t *inp, const uint16_t *w, const float *bias, size_t N, int C, int OC);
// matmul_backward_set on bf16 operands: dinp (written) = dout16 @ w, dw += dout16^T @ inp;
// dbias (may be NULL) += the column sums of the fp32 dout, of which dout16 is the rounding.
void matmul_backward_bf16(float *dinp, float *dw, float *dbias, const uint16_t *dout16, const float *dout,
                          const uint16_t *inp, const uint16_t *w, size_t N, int C, int OC);
// gelu_forward_keep_grad computed in fp32 from x, with the output and the derivative
// stored as bf16 (x is left as it is).
void gelu_forward_keep_grad16(uint16_t *out, uint16_t *grad, const float *x, size_t N);
// gelu_backward_from_grad with the bf16 derivative, and d16 = d rounded to bf16.
void gelu_backward_from_grad16(uint16_t *d16, float *d, const uint16_t *g, size_t N);
// Attention in bf16 over head-major q, k, v: qkvh (3, B, NH, T, hs), made from the rows of
// qkv (B, T, 3C) by attention_heads16. out (B, T, C) is rounded to bf16; att (B, NH, T, T)
// and the softmax and dropout stay fp32; every product is a bf16 matmul. dqkv (B, T, 3C) is
// written, not accumulated. Scratch: attention16_scratch floats and *n16 bf16 values.
size_t attention16_scratch(int B, int T, int C, int NH, size_t *n16);
void attention_heads16(uint16_t *qkvh, const uint16_t *qkv, int B, int T, int C, int NH);
void attention_forward16(uint16_t *out, float *att, const uint16_t *qkvh, int B, int T, int C, int NH, float p,
                         uint64_t key, uint16_t *scratch16);
void attention_backward16(float *dqkv, const float *dout, const uint16_t *qkvh, const float *att, int B, int T, int C,
                          int NH, float p, uint64_t key, float *scratch, uint16_t *scratch16);
// d16T (V,N) = (probs - onehot(targets))^T, rounded to bf16: the head's backward operand,
// transposed so both of its products read it densely.
void crossentropy_dlogits16T(uint16_t *d16T, const float *probs, const int *targets, size_t N, int V);

#endif
