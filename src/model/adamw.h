// adamw.h - AdamW as PyTorch's torch.optim.AdamW (bias correction, decoupled weight decay
// on the tensors whose spec has decay=1: matrices and embeddings, as nanoGPT), global-norm
// gradient clipping as torch.nn.utils.clip_grad_norm_, and the learning-rate schedule.
//
// Order per step for the trainer: forward, backward, [allreduce average], grad_clip,
// lr_at, adamw_step (with the averaged, clipped grads). With --precision bf16 the step also
// refreshes the model's bf16 copy of the weights (params16) in the same pass.
#ifndef GT_ADAMW_H
#define GT_ADAMW_H

#include <stddef.h>

#include "gpt2.h"

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} AdamWConfig;

typedef struct {
    size_t n;
    float *m, *v;  // (n) first and second moments, in the parameter buffer's layout
    long long t;   // number of updates done (bias correction uses t+1 on the next step)
} AdamW;

void adamw_init(AdamW *o, size_t n);  // zeroed moments, t = 0
void adamw_free(AdamW *o);
// One update of params (model->num_params) from grads; increments o->t.
void adamw_step(AdamW *o, const GPT2 *model, float *params, const float *grads, const AdamWConfig *c);
// The same with every gradient multiplied by `scale` as it is read (grads stay as they are):
// grad_clip_coef's scale applied inside the update, saving the clip's own pass over the
// gradients. Bit for bit what grad_clip then adamw_step give.
void adamw_step_scaled(AdamW *o, const GPT2 *model, float *params, const float *grads, float scale,
                       const AdamWConfig *c);

// sqrt(sum g^2), accumulated in double.
float grad_global_norm(const float *grads, size_t n);
// Scales grads by max_norm / (norm + 1e-6) when that is below 1 (PyTorch's rule);
// max_norm <= 0 disables clipping. Returns the norm before clipping.
float grad_clip(float *grads, size_t n, float max_norm);
// The factor grad_clip would scale by: max_norm / (norm + 1e-6) when below 1, else 1.
float grad_clip_coef(float norm, float max_norm);

typedef enum { LR_COSINE, LR_LINEAR, LR_CONSTANT } LRSchedule;
// Learning rate for 0-based `step`: linear warmup lr*(step+1)/warmup over the first
// `warmup` steps, then cosine | linear decay from lr to min_lr at total_steps (held there
// after), or constant lr.
float lr_at(long long step, long long total_steps, long long warmup, float lr, float min_lr, LRSchedule s);
// "cosine" | "linear" | "constant" -> schedule; returns 0 on an unknown name.
int lr_schedule_parse(const char *name, LRSchedule *s);

#endif
