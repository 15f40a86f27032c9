// adamw.c - see adamw.h. The update follows torch.optim.AdamW's arithmetic order
// (decay first, then m / (sqrt(v)/sqrt(bc2) + eps) * lr/bc1) so the two agree to rounding.
#include "adamw.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

// Compiled for AVX-512, AVX2 and baseline; the CPU picks at load time (as in layers.c).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GT_NO_CLONES)
#define GT_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GT_HOT
#endif

void adamw_init(AdamW *o, size_t n) {
    o->n = n;
    o->m = gt_calloc(n, sizeof(float), "AdamW first moments");
    o->v = gt_calloc(n, sizeof(float), "AdamW second moments");
    gpt2_advise_huge(o->m, n * sizeof(float));
    gpt2_advise_huge(o->v, n * sizeof(float));
    o->t = 0;
}

void adamw_free(AdamW *o) {
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

// p16 (may be NULL): the bf16 copy of the parameters (--precision bf16), refreshed in the
// same pass from the updated fp32 values.
static inline __attribute__((always_inline)) void adamw_body(float *p, uint16_t *p16, float *m, float *v, const float *g,
                                                             float scale, size_t n, float b1, float b2, float eps,
                                                             float decay, float step_size, float bc2_sqrt) {
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * scale;  // the clip's scale, here rather than in a pass of its own
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = p[i] * decay - step_size * mi / denom;
        if (p16) p16[i] = bf16_from_f32(p[i]);
    }
}

GT_HOT static void adamw_chunk(float *p, float *m, float *v, const float *g, float scale, size_t n, float b1, float b2,
                               float eps, float decay, float step_size, float bc2_sqrt) {
    adamw_body(p, NULL, m, v, g, scale, n, b1, b2, eps, decay, step_size, bc2_sqrt);
}

GT_HOT static void adamw_chunk16(float *p, uint16_t *p16, float *m, float *v, const float *g, float scale, size_t n,
                                 float b1, float b2, float eps, float decay, float step_size, float bc2_sqrt) {
    adamw_body(p, p16, m, v, g, scale, n, b1, b2, eps, decay, step_size, bc2_sqrt);
}

void adamw_step(AdamW *o, const GPT2 *model, float *params, const float *grads, const AdamWConfig *c) {
    adamw_step_scaled(o, model, params, grads, 1.0f, c);
}

void adamw_step_scaled(AdamW *o, const GPT2 *model, float *params, const float *grads, float scale,
                       const AdamWConfig *c) {
    if (o->n != model->num_params)
        gt_fail(GT_EXIT_RUNTIME, "optimizer holds %zu moments but the model has %zu parameters", o->n, model->num_params);
    o->t++;
    double bc1 = 1.0 - pow(c->beta1, (double)o->t);
    double bc2 = 1.0 - pow(c->beta2, (double)o->t);
    float step_size = (float)(c->lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    uint16_t *p16 = params == model->params ? model->params16 : NULL;  // refreshed here, once per step
    // One parallel region for all tensors (nowait: they are independent), not one per tensor;
    // each thread updates its share of each tensor with the vectorized kernel.
    #pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        for (int s = 0; s < model->n_specs; s++) {
            const ParamSpec *sp = &model->specs[s];
            float decay = sp->decay ? 1.0f - c->lr * c->weight_decay : 1.0f;
            size_t chunk = ((sp->numel + nt - 1) / nt + 15) & ~(size_t)15;
            size_t lo = id * chunk < sp->numel ? id * chunk : sp->numel;
            size_t hi = lo + chunk < sp->numel ? lo + chunk : sp->numel;
            size_t off = sp->offset + lo;
            if (p16)
                adamw_chunk16(params + off, p16 + off, o->m + off, o->v + off, grads + off, scale, hi - lo, b1, b2, eps,
                              decay, step_size, bc2_sqrt);
            else
                adamw_chunk(params + off, o->m + off, o->v + off, grads + off, scale, hi - lo, b1, b2, eps, decay,
                            step_size, bc2_sqrt);
        }
    }
}

// Sum of squares: float partial sums over 256-element runs (16 lanes, 16 terms each),
// gathered in double. Exact enough (float error over 16 terms) and, unlike a double
// accumulator per element, fast enough to keep up with memory; vectorizes without -ffast-math.
GT_HOT static double sumsq(const float *g, size_t n) {
    double acc[16] = {0};
    size_t i = 0;
    for (; i + 256 <= n; i += 256) {
        float f[16] = {0};
        for (int k = 0; k < 256; k += 16)
            for (int j = 0; j < 16; j++) f[j] += g[i + k + j] * g[i + k + j];
        for (int j = 0; j < 16; j++) acc[j] += f[j];
    }
    double s = 0.0;
    for (int j = 0; j < 16; j++) s += acc[j];
    for (; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

float grad_global_norm(const float *grads, size_t n) {
    // Fixed 64 Ki-element blocks summed in order: the same value whatever the thread count.
    const size_t blk = 65536;
    size_t nb = (n + blk - 1) / blk;
    double *part = gt_malloc((nb ? nb : 1) * sizeof(double), "gradient norm scratch");
    #pragma omp parallel for schedule(static) if (n > 4 * blk)
    for (size_t b = 0; b < nb; b++) part[b] = sumsq(grads + b * blk, b + 1 < nb ? blk : n - b * blk);
    double sum = 0.0;
    for (size_t b = 0; b < nb; b++) sum += part[b];
    free(part);
    return (float)sqrt(sum);
}

float grad_clip_coef(float norm, float max_norm) {
    float coef = max_norm / (norm + 1e-6f);
    return max_norm > 0.0f && coef < 1.0f ? coef : 1.0f;
}

float grad_clip(float *grads, size_t n, float max_norm) {
    float norm = grad_global_norm(grads, n);
    float coef = grad_clip_coef(norm, max_norm);
    if (coef < 1.0f) {
        #pragma omp parallel for simd
        for (size_t i = 0; i < n; i++) grads[i] *= coef;
    }
    return norm;
}

float lr_at(long long step, long long total_steps, long long warmup, float lr, float min_lr, LRSchedule s) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (s == LR_CONSTANT) return lr;
    long long span = total_steps - warmup;
    double ratio = span > 0 ? (double)(step - warmup) / (double)span : 1.0;
    if (ratio > 1.0) ratio = 1.0;
    if (ratio < 0.0) ratio = 0.0;
    double coeff = s == LR_COSINE ? 0.5 * (1.0 + cos(M_PI * ratio)) : 1.0 - ratio;
    return (float)(min_lr + coeff * (lr - min_lr));
}

int lr_schedule_parse(const char *name, LRSchedule *s) {
    if (strcmp(name, "cosine") == 0) *s = LR_COSINE;
    else if (strcmp(name, "linear") == 0) *s = LR_LINEAR;
    else if (strcmp(name, "constant") == 0) *s = LR_CONSTANT;
    else return 0;
    return 1;
}

