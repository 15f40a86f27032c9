// gpt2.h - the CPU GPT-2 (nanoGPT architecture): pre-LayerNorm blocks, eps 1e-5, GELU
// (tanh), learned positions, biases on, lm_head tied to wte. Every backward by hand.
//
// Memory: one buffer for parameters, one for gradients, one for activations, each with
// named pointers into it. Parameters are laid out LAYER-MAJOR, in nanoGPT's order:
//   wte (V,C) | wpe (T,C) | h.0: ln_1 w,b | c_attn w (3C,C), b (3C) | attn.c_proj w (C,C), b (C)
//             | ln_2 w,b | c_fc w (4C,C), b (4C) | mlp.c_proj w (C,4C), b (C) | h.1 ... | ln_f w,b
// so each block's gradients are one contiguous range that can be reduced (MPI) as soon as
// that block's backward is done.
//
// Precision (gpt2_set_precision): fp32, or bf16 (docs/engine.md): every matmul on bf16
// operands with fp32 accumulation, the weights from a bf16 copy of params (params16)
// refreshed after each AdamW step; everything else, params (the master weights) and grads
// included, stays fp32, and the tensors only matmuls read are kept as bf16.
#ifndef GT_GPT2_H
#define GT_GPT2_H

#include <stddef.h>
#include <stdint.h>

#include "gemm_bf16.h"

typedef struct {
    int vocab_size;  // V
    int block_size;  // maxT: positions in wpe
    int n_layer;     // L
    int n_head;      // NH
    int n_embd;      // C
    float dropout;   // p, training only
} GPTConfig;

typedef struct {
    float *ln_1_w, *ln_1_b;              // (C) (C)
    float *c_attn_w, *c_attn_b;          // (3C, C) (3C)
    float *attn_proj_w, *attn_proj_b;    // (C, C) (C)
    float *ln_2_w, *ln_2_b;              // (C) (C)
    float *c_fc_w, *c_fc_b;              // (4C, C) (4C)
    float *mlp_proj_w, *mlp_proj_b;      // (C, 4C) (C)
} BlockTensors;

#define GPT2_MAX_LAYERS 256
// The longest context: attention's (T, T) GEMMs take BLAS int sizes, so T * T <= INT_MAX.
#define GPT2_MAX_BLOCK 46340
_Static_assert((long long)GPT2_MAX_BLOCK * GPT2_MAX_BLOCK <= 2147483647LL &&
               (GPT2_MAX_BLOCK + 1LL) * (GPT2_MAX_BLOCK + 1LL) > 2147483647LL, "the largest T with T * T in an int");
typedef struct {
    float *wte;                   // (V, C)
    float *wpe;                   // (maxT, C)
    BlockTensors h[GPT2_MAX_LAYERS];
    float *ln_f_w, *ln_f_b;       // (C) (C)
} ParamTensors;

// One named tensor of the flat buffer, with nanoGPT's name and PyTorch shape.
typedef struct {
    char name[64];     // "transformer.h.3.attn.c_attn.weight"
    int ndim;          // 1 or 2
    size_t shape[2];
    size_t offset;     // into params/grads/moment buffers, in floats
    size_t numel;
    int decay;         // 1 for 2-D tensors (matrices, embeddings): AdamW weight decay applies
    int layer;         // block index, or -1 for wte/wpe/ln_f
} ParamSpec;

// Called by gpt2_backward as soon as a contiguous range of gradients is final:
// ln_f, then blocks L-1 .. 0, then the embeddings (wte also gets the tied head's gradient);
// with GPT2.emb_grad set, wte first of all and then again with wpe at the end.
typedef void (*GradReadyFn)(void *ctx, size_t offset, size_t count);

typedef struct {
    GPTConfig config;
    size_t num_params;
    float *params;              // (num_params)
    float *grads;               // (num_params)
    ParamTensors p;             // views into params
    ParamTensors g;             // views into grads
    ParamSpec *specs;           // nanoGPT-named tensors in buffer order (wte, wpe, blocks, ln_f)
    int n_specs;
    Precision precision;        // of the matmuls: PRECISION_FP32 unless gpt2_set_precision
    uint16_t *params16;             // (num_params) with bf16: params rounded, the weights the matmuls read
    // activations, sized once by gpt2_alloc_activations for at most (maxB, maxT)
    int maxB, maxT;
    float *acts;                // one buffer; its views are private to gpt2.c except:
    float *att;                 // (L, B, NH, T, T) softmax attention of the last forward
                                //   (before dropout), laid out for that call's B and T
    float *logits;              // (B, T, V) of the last forward
    float *probs;               // (B, T, V) softmax of logits (when targets were given)
    const int *last_targets;    // as given to the last forward
    int B, T;                   // of the last forward
    int training;               // last forward was in training mode (dropout on)
    float mean_loss;            // of the last forward with targets, else -1
    // Optional (NULL after gpt2_build): called by gpt2_backward between sub-layers with the
    // range of gradients made final since its last call (count 0 when none), back to front
    // like ready, which still reports each block whole. A chance to start and progress
    // non-blocking reductions at a finer grain; the callee must not reduce a range twice.
    GradReadyFn progress;
    void *progress_ctx;
    // Optional (NULL after gpt2_build): where backward adds the token embeddings' share of
    // d wte, (V, C), instead of into grads. wte's only other share is the tied head's, final
    // after backward's first GEMM, so `ready` then reports wte at once, ahead of ln_f: its
    // reduction can travel during backward, and the caller reduces the rows in emb_grad
    // (a batch's tokens only) afterwards (mpi/allreduce.h, the embeddings).
    float *emb_grad;
    void *priv;                 // dropout masks and scratch (gpt2.c)
} GPT2;

// Returns 0 and fills err with one clear sentence ("--n-embd 100 is not divisible by
// --n-head 3") when the config is invalid.
int gpt2_config_check(const GPTConfig *c, char *err, size_t errsize);
// Allocates params and grads (zeroed) and builds specs. Config must pass the check.
void gpt2_build(GPT2 *m, const GPTConfig *c);
// GPT-2 init: N(0, 0.02); attn.c_proj and mlp.c_proj weights N(0, 0.02/sqrt(2L)); biases 0;
// LayerNorm weight 1, bias 0. Deterministic in seed.
void gpt2_init_weights(GPT2 *m, uint64_t seed);
void gpt2_alloc_activations(GPT2 *m, int maxB, int maxT);
// Selects the precision of the matmuls. bf16 allocates params16 and fills it from params
// (and reallocates the activations, whose layout differs, if there are any). Returns 0,
// with one sentence in err, when the CPU cannot run bf16 (bf16_supported).
int gpt2_set_precision(GPT2 *m, Precision p, char *err, size_t errsize);
// Refreshes params16 from params: call after changing params other than by adamw_step
// (which refreshes it in its own pass) or gpt2_init_weights, e.g. after loading a
// checkpoint into a bf16 model. Nothing to do in fp32.
void gpt2_params_changed(GPT2 *m);
// The bf16 copy (in params16) of the parameter tensor at w (a view into params).
const uint16_t *gpt2_params16_of(const GPT2 *m, const float *w);
// inputs, targets: (B, T) token ids. targets may be NULL (no loss). train=1 applies dropout
// with masks drawn from (dropout_seed, position): the same seed gives the same masks,
// whatever the thread count. Returns mean cross-entropy (or -1 without targets).
float gpt2_forward(GPT2 *m, const int *inputs, const int *targets, int B, int T, int train,
                   uint64_t dropout_seed);
// The cross-entropy of each position of the last forward with targets, (B, T) (its mean is
// what that forward returned); valid until the next forward.
const float *gpt2_losses(const GPT2 *m);
void gpt2_zero_grad(GPT2 *m);
// Accumulates (+=) into grads d(loss_scale * mean_loss)/dparams for the last forward.
// Leaves m->logits and m->probs as the forward wrote them, so it may be called again.
// ready may be NULL; otherwise it is called as ranges of grads become final.
void gpt2_backward(GPT2 *m, float loss_scale, GradReadyFn ready, void *ctx);
void gpt2_free(GPT2 *m);

// Asks the kernel for 2 MB pages over [p, p + bytes) (madvise, when at least 4 MB): for the
// model's and the optimizer's big buffers, before first use.
void gpt2_advise_huge(void *p, size_t bytes);

// Forward FLOPs per token (matmuls + attention), for GFLOP/s reports; training ~3x.
double gpt2_flops_per_token(const GPTConfig *c, int T);

#endif
