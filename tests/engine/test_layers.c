// test_layers.c - every layer's backward against central finite differences of its forward.
//
// For a layer y = f(x, w...), the scalar loss is L = sum(y * R) with a fixed random R, so
// dL/dy = R. The analytic gradients (backward with dout = R) are compared, element by
// element on a sample, with (L(x + h) - L(x - h)) / 2h evaluated in float64 from the
// float32 forward. Error metric: max |numeric - analytic| / max |analytic| over the tensor.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "rng.h"

static int failures = 0;
static Rng rng;

static float *randn(size_t n, float scale) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        // sum of uniforms: cheap bell shape, deterministic
        float s = 0.0f;
        for (int k = 0; k < 4; k++) s += rng_uniform(&rng) - 0.5f;
        x[i] = s * scale * 1.7f;
    }
    return x;
}
static float *zeros(size_t n) { return calloc(n, sizeof(float)); }

// The layer under test: computes y from the current inputs; returns sum(y * R).
typedef double (*LossFn)(void *ctx);

static void check_grad(const char *name, LossFn f, void *ctx, float *x, const float *grad, size_t n, float h,
                       double tol) {
    double maxg = 0.0, maxerr = 0.0;
    for (size_t i = 0; i < n; i++) maxg = fmax(maxg, fabs(grad[i]));
    size_t samples = n < 200 ? n : 200;
    for (size_t s = 0; s < samples; s++) {
        size_t i = n < 200 ? s : (size_t)rng_below(&rng, n);
        float orig = x[i];
        x[i] = orig + h;
        double lp = f(ctx);
        x[i] = orig - h;
        double lm = f(ctx);
        x[i] = orig;
        double num = (lp - lm) / (2.0 * h);
        maxerr = fmax(maxerr, fabs(num - grad[i]));
    }
    double rel = maxerr / fmax(maxg, 1e-12);
    int ok = rel < tol && maxg > 0.0;
    printf("%s %-34s rel err %.2e (max |grad| %.2e)\n", ok ? "ok  " : "FAIL", name, rel, maxg);
    if (!ok) failures++;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

// ---- layernorm ----
typedef struct { float *out, *mean, *rstd, *inp, *w, *b, *R; size_t N; int C; } LN;
static double ln_loss(void *c) {
    LN *l = c;
    layernorm_forward(l->out, l->mean, l->rstd, l->inp, l->w, l->b, l->N, l->C);
    return dot(l->out, l->R, l->N * l->C);
}
static void test_layernorm(void) {
    LN l = {.N = 6, .C = 37};
    size_t NC = l.N * l.C;
    l.out = zeros(NC); l.mean = zeros(l.N); l.rstd = zeros(l.N);
    l.inp = randn(NC, 1.0f); l.w = randn(l.C, 1.0f); l.b = randn(l.C, 1.0f); l.R = randn(NC, 1.0f);
    float *dinp = zeros(NC), *dw = zeros(l.C), *db = zeros(l.C);
    ln_loss(&l);
    layernorm_backward(dinp, dw, db, l.R, l.inp, l.w, l.mean, l.rstd, l.N, l.C);
    check_grad("layernorm dinp", ln_loss, &l, l.inp, dinp, NC, 1e-2f, 1e-3);
    check_grad("layernorm dweight", ln_loss, &l, l.w, dw, l.C, 1e-2f, 1e-3);
    check_grad("layernorm dbias", ln_loss, &l, l.b, db, l.C, 1e-2f, 1e-3);
}

// ---- matmul ----
typedef struct { float *out, *inp, *w, *bias, *R; size_t N; int C, OC; } MM;
static double mm_loss(void *c) {
    MM *m = c;
    matmul_forward(m->out, m->inp, m->w, m->bias, m->N, m->C, m->OC);
    return dot(m->out, m->R, m->N * m->OC);
}
static void test_matmul(void) {
    MM m = {.N = 7, .C = 13, .OC = 11};
    m.out = zeros(m.N * m.OC); m.inp = randn(m.N * m.C, 1.0f); m.w = randn((size_t)m.OC * m.C, 1.0f);
    m.bias = randn(m.OC, 1.0f); m.R = randn(m.N * m.OC, 1.0f);
    float *dinp = zeros(m.N * m.C), *dw = zeros((size_t)m.OC * m.C), *db = zeros(m.OC);
    matmul_backward(dinp, dw, db, m.R, m.inp, m.w, m.N, m.C, m.OC);
    check_grad("matmul dinp", mm_loss, &m, m.inp, dinp, m.N * m.C, 1e-2f, 1e-3);
    check_grad("matmul dweight", mm_loss, &m, m.w, dw, (size_t)m.OC * m.C, 1e-2f, 1e-3);
    check_grad("matmul dbias", mm_loss, &m, m.bias, db, m.OC, 1e-2f, 1e-3);
}

// ---- gelu ----
typedef struct { float *out, *inp, *R; size_t N; } GE;
static double gelu_loss(void *c) {
    GE *g = c;
    gelu_forward(g->out, g->inp, g->N);
    return dot(g->out, g->R, g->N);
}
static void test_gelu(void) {
    GE g = {.N = 301};
    g.out = zeros(g.N); g.inp = randn(g.N, 3.0f); g.R = randn(g.N, 1.0f);
    float *dinp = zeros(g.N);
    gelu_backward(dinp, g.inp, g.R, g.N);
    check_grad("gelu dinp", gelu_loss, &g, g.inp, dinp, g.N, 1e-2f, 1e-3);
    // the training form: the same forward bits, and gelu' kept for a backward by multiply
    float *out2 = zeros(g.N), *x = malloc(g.N * sizeof(float)), *d = malloc(g.N * sizeof(float));
    memcpy(x, g.inp, g.N * sizeof(float));
    memcpy(d, g.R, g.N * sizeof(float));
    gelu_forward(g.out, g.inp, g.N);
    gelu_forward_keep_grad(out2, x, g.N);
    gelu_backward_from_grad(d, x, g.N);
    double maxerr = 0.0, maxg = 0.0;
    for (size_t i = 0; i < g.N; i++) {
        maxerr = fmax(maxerr, fabs(d[i] - dinp[i]));
        maxg = fmax(maxg, fabs(dinp[i]));
    }
    int ok = memcmp(out2, g.out, g.N * sizeof(float)) == 0 && maxerr <= 1e-6 * maxg;
    printf("%s gelu_forward_keep_grad: same output, backward by gelu' within %.1e\n", ok ? "ok  " : "FAIL",
           maxerr / maxg);
    if (!ok) failures++;
    free(out2); free(x); free(d);
}

// ---- attention (with and without dropout on a fixed mask) ----
typedef struct { float *out, *att, *qkv, *R; int B, T, C, NH; float p; uint64_t key; } AT;
static double att_loss(void *c) {
    AT *a = c;
    attention_forward_dropout(a->out, a->att, a->qkv, a->B, a->T, a->C, a->NH, a->p, a->key);
    return dot(a->out, a->R, (size_t)a->B * a->T * a->C);
}
// T = 9 runs the fused loops, T = 70 the blocked GEMMs (layers.c switches at T = 64).
static void test_attention(float p, int T) {
    AT a = {.B = 2, .T = T, .C = 12, .NH = 3, .p = p, .key = rng_site_key(42, 3)};
    size_t BT = (size_t)a.B * a.T;
    a.out = zeros(BT * a.C); a.att = zeros((size_t)a.B * a.NH * a.T * a.T);
    a.qkv = randn(BT * 3 * a.C, 1.0f); a.R = randn(BT * a.C, 1.0f);
    float *dqkv = zeros(BT * 3 * a.C);
    att_loss(&a);
    attention_backward(dqkv, a.R, a.qkv, a.att, a.B, a.T, a.C, a.NH, a.p, a.key);
    char name[64];
    snprintf(name, sizeof name, "attention dqkv T=%d%s", T, p > 0 ? " (dropout 0.3)" : "");
    check_grad(name, att_loss, &a, a.qkv, dqkv, BT * 3 * a.C, 1e-2f, 1e-3);
    // rows are probabilities: sum 1, causal
    double worst = 0.0;
    for (int r = 0; r < a.B * a.NH * T; r++) {
        int t = r % T;
        double sum = 0.0;
        for (int t2 = 0; t2 < T; t2++) {
            float v = a.att[(size_t)r * T + t2];
            sum += v;
            if (t2 > t && v != 0.0f) worst = 1.0;
        }
        worst = fmax(worst, fabs(sum - 1.0));
    }
    printf("%s attention T=%d rows sum to 1, causal (%.1e)\n", worst < 1e-5 ? "ok  " : "FAIL", T, worst);
    if (worst >= 1e-5) failures++;
}

// ---- encoder ----
typedef struct { float *out, *wte, *wpe, *R; int *inp; int B, T, C; } EN;
static double enc_loss(void *c) {
    EN *e = c;
    encoder_forward(e->out, e->inp, e->wte, e->wpe, e->B, e->T, e->C);
    return dot(e->out, e->R, (size_t)e->B * e->T * e->C);
}
static void test_encoder(void) {
    int V = 5;
    EN e = {.B = 3, .T = 4, .C = 6};
    size_t BTC = (size_t)e.B * e.T * e.C;
    e.out = zeros(BTC); e.wte = randn((size_t)V * e.C, 1.0f); e.wpe = randn((size_t)e.T * e.C, 1.0f);
    e.R = randn(BTC, 1.0f);
    e.inp = malloc(sizeof(int) * e.B * e.T);
    for (int i = 0; i < e.B * e.T; i++) e.inp[i] = (int)rng_below(&rng, V - 1);  // token V-1 unused: grad 0
    float *dwte = zeros((size_t)V * e.C), *dwpe = zeros((size_t)e.T * e.C);
    encoder_backward(dwte, dwpe, e.R, e.inp, e.B, e.T, e.C);
    check_grad("encoder dwte (repeated tokens)", enc_loss, &e, e.wte, dwte, (size_t)V * e.C, 1e-2f, 1e-3);
    check_grad("encoder dwpe", enc_loss, &e, e.wpe, dwpe, (size_t)e.T * e.C, 1e-2f, 1e-3);
}

// ---- cross-entropy (mean over rows) ----
typedef struct { float *probs, *losses, *logits; int *targets; size_t N; int V; } CE;
static double ce_loss(void *c) {
    CE *e = c;
    crossentropy_forward(e->probs, e->losses, e->logits, e->targets, e->N, e->V);
    double s = 0.0;
    for (size_t i = 0; i < e->N; i++) s += e->losses[i];
    return s / e->N;
}
static void test_crossentropy(void) {
    CE e = {.N = 5, .V = 17};
    e.probs = zeros(e.N * e.V); e.losses = zeros(e.N); e.logits = randn(e.N * e.V, 3.0f);
    e.targets = malloc(sizeof(int) * e.N);
    for (size_t i = 0; i < e.N; i++) e.targets[i] = (int)rng_below(&rng, e.V);
    double loss = ce_loss(&e);
    float *dlogits = zeros(e.N * e.V);
    crossentropy_backward(dlogits, e.probs, e.targets, 1.0f / e.N, e.N, e.V);
    check_grad("crossentropy dlogits", ce_loss, &e, e.logits, dlogits, e.N * e.V, 1e-2f, 1e-3);
    // loss of row 0 by hand
    double m = -1e30, s = 0.0;
    for (int v = 0; v < e.V; v++) m = fmax(m, e.logits[v]);
    for (int v = 0; v < e.V; v++) s += exp(e.logits[v] - m);
    double want = log(s) + m - e.logits[e.targets[0]];
    int ok = fabs(want - e.losses[0]) < 1e-5 && loss > 0;
    printf("%s crossentropy loss value            %.6f vs %.6f\n", ok ? "ok  " : "FAIL", e.losses[0], want);
    if (!ok) failures++;
}

// ---- dropout statistics and reproducibility ----
static void test_dropout(void) {
    size_t n = 1000000;
    float *ones = malloc(n * sizeof(float)), *a = zeros(n), *b = zeros(n);
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
    uint64_t key = rng_site_key(7, 1);
    dropout_apply(a, ones, n, 0.3f, key);
    dropout_apply(b, ones, n, 0.3f, key);
    size_t dropped = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i] == 0.0f) dropped++;
        else if (fabsf(a[i] - 1.0f / 0.7f) > 1e-6f) bad++;
    }
    double frac = (double)dropped / n;
    int ok = fabs(frac - 0.3) < 0.003 && bad == 0 && memcmp(a, b, n * sizeof(float)) == 0;
    printf("%s dropout p=0.3: dropped %.4f, kept scaled 1/(1-p), reproducible\n", ok ? "ok  " : "FAIL", frac);
    if (!ok) failures++;
    dropout_apply(b, ones, n, 0.3f, rng_site_key(8, 1));
    ok = memcmp(a, b, n * sizeof(float)) != 0;
    printf("%s dropout: another seed, another mask\n", ok ? "ok  " : "FAIL");
    if (!ok) failures++;
}

int main(void) {
    rng_seed(&rng, 1234);
    test_layernorm();
    test_matmul();
    test_gelu();
    test_attention(0.0f, 9);
    test_attention(0.3f, 9);
    test_attention(0.0f, 70);
    test_attention(0.3f, 70);
    test_encoder();
    test_crossentropy();
    test_dropout();
    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("all layer checks passed\n");
    return 0;
}
