// test_engine.c - the whole model in C: finite-difference gradient check with dropout on
// (fixed masks: the same dropout seed for every evaluation), the GradReadyFn contract,
// gradient accumulation, forward on smaller (B, T) than allocated, the optimizer helpers
// and the config checks.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "gpt2.h"
#include "rng.h"

static int failures = 0;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        int ok_ = (cond);                                 \
        printf("%s ", ok_ ? "ok  " : "FAIL");             \
        printf(__VA_ARGS__);                              \
        printf("\n");                                     \
        if (!ok_) failures++;                             \
    } while (0)

static const GPTConfig CFG = {.vocab_size = 53, .block_size = 12, .n_layer = 2, .n_head = 3, .n_embd = 18,
                              .dropout = 0.3f};
enum { B = 3, T = 12 };

// Directional finite differences per tensor: d = the tensor's gradient direction and a
// random direction; numeric (L(p + h d) - L(p - h d)) / 2h against g . d, relative to |g|.
static void fd_check(GPT2 *m, const int *x, const int *y, uint64_t dseed) {
    gpt2_forward(m, x, y, B, T, 1, dseed);
    gpt2_zero_grad(m);
    gpt2_backward(m, 1.0f, NULL, NULL);
    float *g = malloc(m->num_params * sizeof(float));
    memcpy(g, m->grads, m->num_params * sizeof(float));
    Rng r;
    rng_seed(&r, 99);
    double worst = 0.0;
    const char *worst_name = "";
    for (int s = 0; s < m->n_specs; s++) {
        const ParamSpec *sp = &m->specs[s];
        float *p = m->params + sp->offset, *gs = g + sp->offset;
        double gnorm = 0.0;
        for (size_t i = 0; i < sp->numel; i++) gnorm += (double)gs[i] * gs[i];
        gnorm = sqrt(gnorm);
        if (gnorm == 0.0) continue;
        float *d = malloc(sp->numel * sizeof(float)), *p0 = malloc(sp->numel * sizeof(float));
        memcpy(p0, p, sp->numel * sizeof(float));
        for (int dir = 0; dir < 2; dir++) {
            double dn = 0.0;
            for (size_t i = 0; i < sp->numel; i++) {
                d[i] = dir == 0 ? gs[i] : rng_uniform(&r) - 0.5f;
                dn += (double)d[i] * d[i];
            }
            dn = sqrt(dn);
            double ana = 0.0;
            for (size_t i = 0; i < sp->numel; i++) {
                d[i] /= (float)dn;
                ana += (double)gs[i] * d[i];
            }
            // Richardson extrapolation of central differences at h and h/2 cancels the h^2
            // term; what is left is float32 rounding of the loss (~1e-7 relative) over 2h.
            double num[2];
            for (int k = 0; k < 2; k++) {
                float h = k == 0 ? 2e-2f : 1e-2f;
                for (size_t i = 0; i < sp->numel; i++) p[i] = p0[i] + h * d[i];
                double lp = gpt2_forward(m, x, y, B, T, 1, dseed);
                for (size_t i = 0; i < sp->numel; i++) p[i] = p0[i] - h * d[i];
                double lm = gpt2_forward(m, x, y, B, T, 1, dseed);
                num[k] = (lp - lm) / (2.0 * h);
            }
            memcpy(p, p0, sp->numel * sizeof(float));
            double est = (4.0 * num[1] - num[0]) / 3.0;
            // allowed: 0.1% of the gradient's norm plus the rounding floor
            double err = fabs(est - ana) / (1e-3 * gnorm + 3e-5);
            if (getenv("FD_VERBOSE"))
                printf("  %-40s dir %d num %.6e ana %.6e gnorm %.3e ratio %.2f\n", sp->name, dir, est, ana, gnorm, err);
            if (err > worst) {
                worst = err;
                worst_name = sp->name;
            }
        }
        free(d);
        free(p0);
    }
    CHECK(worst < 1.0, "finite differences, dropout 0.3 on a fixed mask, all %d tensors: worst |err| / (1e-3 |g| + 3e-5) = %.2f (%s)",
          m->n_specs, worst, worst_name);
    free(g);
}

typedef struct {
    size_t next_end;  // ranges must arrive from the end of the buffer towards its start
    int calls, ok;
    size_t covered;
} ReadyLog;
static void on_ready(void *ctx, size_t offset, size_t count) {
    ReadyLog *r = ctx;
    if (offset + count != r->next_end) r->ok = 0;
    r->next_end = offset;
    r->covered += count;
    r->calls++;
}

int main(void) {
    omp_set_num_threads(1);
    GPT2 m;
    gpt2_build(&m, &CFG);
    gpt2_init_weights(&m, 5);
    gpt2_alloc_activations(&m, B, T);
    int x[B * T], y[B * T];
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < B * T; i++) {
        x[i] = (int)rng_below(&r, CFG.vocab_size);
        y[i] = (int)rng_below(&r, CFG.vocab_size);
    }
    fd_check(&m, x, y, 11);

    // GradReadyFn: ln_f, blocks L-1..0, embeddings; contiguous, back to front, covering all.
    // ln_f sits at the end and each block before it, so the ranges tile the buffer backwards.
    gpt2_forward(&m, x, y, B, T, 1, 11);
    gpt2_zero_grad(&m);
    ReadyLog log = {.next_end = m.num_params, .ok = 1};
    gpt2_backward(&m, 1.0f, on_ready, &log);
    CHECK(log.ok && log.calls == CFG.n_layer + 2 && log.covered == m.num_params && log.next_end == 0,
          "GradReadyFn: %d calls, back to front, covering all %zu params", log.calls, m.num_params);

    // accumulation: two backward passes at scale 0.5 equal one at scale 1
    float *g1 = malloc(m.num_params * sizeof(float));
    memcpy(g1, m.grads, m.num_params * sizeof(float));
    gpt2_zero_grad(&m);
    gpt2_backward(&m, 0.5f, NULL, NULL);
    gpt2_backward(&m, 0.5f, NULL, NULL);
    double maxd = 0.0, maxg = 0.0;
    for (size_t i = 0; i < m.num_params; i++) {
        maxd = fmax(maxd, fabs(m.grads[i] - g1[i]));
        maxg = fmax(maxg, fabs(g1[i]));
    }
    CHECK(maxd <= 1e-6 * maxg, "backward accumulates: 2 x 0.5 == 1 (%.1e)", maxd / maxg);

    // train=0 ignores dropout; a smaller (B, T) gives the prefix of the full logits (causal)
    float l_eval = gpt2_forward(&m, x, y, B, T, 0, 11);
    float l_eval2 = gpt2_forward(&m, x, y, B, T, 0, 12345);
    size_t V = CFG.vocab_size;
    float *full = malloc((size_t)B * T * V * sizeof(float));
    memcpy(full, m.logits, (size_t)B * T * V * sizeof(float));
    gpt2_forward(&m, x + T, NULL, 1, 5, 0, 0);  // batch row 1, first 5 positions
    double dd = 0.0;
    for (size_t t = 0; t < 5; t++)
        for (size_t v = 0; v < V; v++) dd = fmax(dd, fabs(m.logits[t * V + v] - full[(T + t) * V + v]));
    CHECK(l_eval == l_eval2 && dd < 1e-5 && m.mean_loss == -1.0f,
          "eval forward ignores the dropout seed; B=1,T=5 equals the prefix of the full run (%.1e)", dd);

    // clipping and schedule
    float gcopy[4] = {3.0f, 4.0f, 0.0f, 0.0f};
    float n = grad_clip(gcopy, 4, 1.0f);
    CHECK(fabsf(n - 5.0f) < 1e-6f && fabsf(grad_global_norm(gcopy, 4) - 1.0f) < 1e-5f, "grad_clip 5 -> 1");
    float a = lr_at(0, 100, 10, 1.0f, 0.1f, LR_COSINE), b = lr_at(9, 100, 10, 1.0f, 0.1f, LR_COSINE);
    float c = lr_at(10, 100, 10, 1.0f, 0.1f, LR_COSINE), d = lr_at(55, 100, 10, 1.0f, 0.1f, LR_COSINE);
    float e = lr_at(100, 100, 10, 1.0f, 0.1f, LR_COSINE), f = lr_at(55, 100, 10, 1.0f, 0.1f, LR_LINEAR);
    float k = lr_at(77, 100, 10, 1.0f, 0.1f, LR_CONSTANT);
    CHECK(fabsf(a - 0.1f) < 1e-6f && fabsf(b - 1.0f) < 1e-6f && fabsf(c - 1.0f) < 1e-6f &&
              fabsf(d - 0.55f) < 1e-6f && fabsf(e - 0.1f) < 1e-6f && fabsf(f - 0.55f) < 1e-6f && k == 1.0f,
          "lr schedule: warmup %.2f..%.2f, cosine %.3f mid %.3f end %.3f, linear mid %.3f, constant %.1f", a, b, c,
          d, e, f, k);

    // AdamW: one step on a hand-computable case (first step moves by lr*sign(g), plus decay)
    AdamW o;
    adamw_init(&o, m.num_params);
    float *p0 = malloc(m.num_params * sizeof(float));
    memcpy(p0, m.params, m.num_params * sizeof(float));
    AdamWConfig oc = {.lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    adamw_step(&o, &m, m.params, g1, &oc);
    double worst = 0.0;
    for (int s = 0; s < m.n_specs; s++) {
        const ParamSpec *sp = &m.specs[s];
        for (size_t i = sp->offset; i < sp->offset + sp->numel; i++) {
            double want = p0[i] * (sp->decay ? 1.0 - 0.01 * 0.1 : 1.0);
            if (g1[i] != 0.0f) want -= 0.01 * g1[i] / (fabs(g1[i]) + 1e-8);
            worst = fmax(worst, fabs(want - m.params[i]));
        }
    }
    CHECK(worst < 1e-6 && o.t == 1, "AdamW first step = lr*sign(g) + decoupled decay on 2-D tensors only (%.1e)", worst);

    // The clip folded into AdamW (the trainer's path) is bit for bit grad_clip then adamw_step,
    // over two steps so the moments take part too.
    AdamW o2, o3;
    adamw_init(&o2, m.num_params);
    adamw_init(&o3, m.num_params);
    float *q2 = malloc(m.num_params * sizeof(float)), *q3 = malloc(m.num_params * sizeof(float));
    float *gc = malloc(m.num_params * sizeof(float));
    memcpy(q2, p0, m.num_params * sizeof(float));
    memcpy(q3, p0, m.num_params * sizeof(float));
    float coef = 1.0f;
    for (int s = 0; s < 2; s++) {
        memcpy(gc, g1, m.num_params * sizeof(float));
        float norm = grad_clip(gc, m.num_params, 0.5f);
        adamw_step(&o2, &m, q2, gc, &oc);
        coef = grad_clip_coef(grad_global_norm(g1, m.num_params), 0.5f);
        adamw_step_scaled(&o3, &m, q3, g1, coef, &oc);
        (void)norm;
    }
    CHECK(coef < 1.0f && !memcmp(q2, q3, m.num_params * sizeof(float)) &&
              !memcmp(o2.m, o3.m, m.num_params * sizeof(float)) && !memcmp(o2.v, o3.v, m.num_params * sizeof(float)),
          "adamw_step_scaled(grad_clip_coef) == grad_clip + adamw_step, bitwise (coef %.3f)", coef);
    CHECK(grad_clip_coef(0.25f, 0.5f) == 1.0f && grad_clip_coef(5.0f, 0.0f) == 1.0f, "grad_clip_coef: 1 below the "
          "limit and when clipping is off");
    free(q2);
    free(q3);
    free(gc);
    adamw_free(&o2);
    adamw_free(&o3);
    adamw_free(&o);

    // config checks: one sentence each
    char err[256];
    GPTConfig bad = CFG;
    bad.n_embd = 100;
    CHECK(!gpt2_config_check(&bad, err, sizeof err) && strstr(err, "--n-embd 100 is not divisible by --n-head 3"), "%s", err);
    bad = CFG;
    bad.n_layer = 0;
    CHECK(!gpt2_config_check(&bad, err, sizeof err) && strstr(err, "--n-layer 0"), "%s", err);
    bad = CFG;
    bad.block_size = -4;
    CHECK(!gpt2_config_check(&bad, err, sizeof err) && strstr(err, "--block-size -4"), "%s", err);
    bad = CFG;
    bad.dropout = 1.0f;
    CHECK(!gpt2_config_check(&bad, err, sizeof err) && strstr(err, "--dropout 1"), "%s", err);
    bad = CFG;
    bad.vocab_size = 0;
    CHECK(!gpt2_config_check(&bad, err, sizeof err) && strstr(err, "vocab size 0"), "%s", err);
    CHECK(gpt2_config_check(&CFG, err, sizeof err), "valid config passes");

    // FLOPs: per layer 24C^2 + 4TC, plus the head 2VC
    double fl = gpt2_flops_per_token(&CFG, T);
    CHECK(fabs(fl - (2 * (24.0 * 18 * 18 + 4.0 * 12 * 18) + 2.0 * 53 * 18)) < 1e-6, "flops per token %.0f", fl);

    free(g1);
    free(full);
    free(p0);
    gpt2_free(&m);
    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("all engine checks passed\n");
    return 0;
}
