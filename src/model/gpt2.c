// gpt2.c - see gpt2.h. Forward and backward compose the kernels of layers.c in nanoGPT's
// order; backward walks the forward in reverse with one layer's worth of scratch buffers
// (gradients of activations are not kept for the whole network).
#include "gpt2.h"

#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "error.h"
#include "layers.h"
#include "rng.h"

#define N_BLOCK_TENSORS 12

// Views into m->acts for the B and T of the current forward: the buffer is sized for
// (maxB, maxT) but each call packs its tensors densely for its own (B, T). With bf16 the
// tensors only matmuls read are bf16 (the *16 views) and their fp32 views are NULL.
typedef struct {
    float *encoded;    // (B, T, C) embedding sum after dropout: the residual stream entering block 0
    float *ln;         // (B, T, C) LayerNorm output feeding a matmul: one layer's, recomputed
                       //   in backward from the stored mean/rstd rather than kept for all L
    float *ln1_mean;   // (L, B, T)
    float *ln1_rstd;   // (L, B, T)
    float *qkv;        // (L, B, T, 3C)
    float *atty;       // (L, B, T, C) attention output before c_proj
    float *att;        // (L, B, NH, T, T)
    float *residual2;  // (L, B, T, C) after the attention branch
    float *ln2_mean;   // (L, B, T)
    float *ln2_rstd;   // (L, B, T)
    float *fch;        // (L, B, T, 4C) c_fc output; with targets, replaced by GELU's derivative
                       //   there, which is all backward needs of it (no tanh recomputed)
    float *fch_gelu;   // (L, B, T, 4C)
    float *residual3;  // (L, B, T, C) after the MLP branch: the block's output
    float *lnf;        // (B, T, C)
    float *lnf_mean;   // (B, T)
    float *lnf_rstd;   // (B, T)
    float *logits;     // (B, T, V)
    float *probs;      // (B, T, V)
    float *losses;     // (B, T)
    uint16_t *ln16;        // (B, T, C) for ln
    uint16_t *qkv16;       // (L, 3, B, NH, T, hs) for qkv, head-major (attention_heads16)
    uint16_t *atty16;      // (L, B, T, C) for atty
    uint16_t *fch_gelu16;  // (L, B, T, 4C) for fch_gelu
    uint16_t *fch_grad16;  // (L, B, T, 4C) for fch, which in bf16 only ever holds GELU's derivative
    uint16_t *lnf16;       // (B, T, C) for lnf
} Acts;

typedef struct {
    Acts a;
    int *inputs;        // (maxB, maxT) copy of the last forward's inputs
    int *targets;       // (maxB, maxT)
    int has_targets;
    uint64_t dropout_seed;
    float p;            // dropout in effect in the last forward (0 in eval)
    // backward scratch, one layer at a time
    float *dresidual;   // (B, T, C)
    float *dbtc;        // (B, T, C)
    float *dbtc2;       // (B, T, C)
    float *dqkv;        // (B, T, 3C)
    float *dfch;        // (B, T, 4C)
    float *scratch;     // (B, T, C) branch outputs before dropout (forward), LayerNorm recompute (backward)
    float *ce_saved;    // (B, T) probs at the targets, while backward holds probs - onehot in place
    uint16_t *d16;          // bf16: (B, T, 4C) the gradient entering a matmul, rounded (and c_attn's output)
    uint16_t *dlogits16;    // bf16: (V, B, T) probs - onehot, rounded, transposed
    float *att32;           // bf16: attention16_scratch's floats
    uint16_t *att16;        // bf16: and its bf16 values
} Priv;

// Dropout sites: 0 the embedding sum; per layer attention probabilities, attention branch,
// MLP branch.
enum { SITE_ATT = 1, SITE_ATTN_RESID = 2, SITE_MLP_RESID = 3 };
static uint64_t site_key(uint64_t seed, int layer, int kind) {
    return rng_site_key(seed, layer < 0 ? 0 : (uint64_t)layer * 4 + kind);
}

int gpt2_config_check(const GPTConfig *c, char *err, size_t errsize) {
    if (c->vocab_size <= 0) {
        snprintf(err, errsize, "vocab size %d must be positive", c->vocab_size);
        return 0;
    }
    if (c->block_size <= 0 || c->block_size > GPT2_MAX_BLOCK) {
        snprintf(err, errsize, "--block-size %d must be between 1 and %d", c->block_size, GPT2_MAX_BLOCK);
        return 0;
    }
    if (c->n_layer <= 0 || c->n_layer > GPT2_MAX_LAYERS) {
        snprintf(err, errsize, "--n-layer %d must be between 1 and %d", c->n_layer, GPT2_MAX_LAYERS);
        return 0;
    }
    if (c->n_head <= 0) {
        snprintf(err, errsize, "--n-head %d must be positive", c->n_head);
        return 0;
    }
    if (c->n_embd <= 0) {
        snprintf(err, errsize, "--n-embd %d must be positive", c->n_embd);
        return 0;
    }
    if (c->n_embd % c->n_head != 0) {
        snprintf(err, errsize, "--n-embd %d is not divisible by --n-head %d", c->n_embd, c->n_head);
        return 0;
    }
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f)) {
        snprintf(err, errsize, "--dropout %g must be in [0, 1)", (double)c->dropout);
        return 0;
    }
    // Sizes are size_t internally but BLAS takes int dimensions.
    if ((double)c->vocab_size * c->n_embd * 4.0 > 2147483647.0) {
        snprintf(err, errsize, "model too large: vocab %d x n_embd %d x 4 overflows BLAS's int sizes", c->vocab_size,
                 c->n_embd);
        return 0;
    }
    return 1;
}

// Big buffers on 2 MB pages where the kernel allows it (THP "madvise" mode, Debian's
// default): GEMMs stride through 154 MB of wte and AdamW streams four 500 MB arrays, and
// with 4 KB pages the TLB misses cost several percent of a step. Advice only: if the kernel
// says no, nothing changes. Called before the pages are first touched.
void gpt2_advise_huge(void *p, size_t bytes) {
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (bytes < 2 * huge) return;
    uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1), hi = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}

static void add_spec(GPT2 *m, size_t *off, const char *name, size_t d0, size_t d1, int layer) {
    ParamSpec *s = &m->specs[m->n_specs++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = d1 ? 2 : 1;
    s->shape[0] = d0;
    s->shape[1] = d1;
    s->numel = d1 ? d0 * d1 : d0;
    s->offset = *off;
    s->decay = d1 ? 1 : 0;
    s->layer = layer;
    *off += s->numel;
}

static void point_tensors(ParamTensors *t, float *base, const GPT2 *m) {
    const ParamSpec *s = m->specs;
    int i = 0;
    t->wte = base + s[i++].offset;
    t->wpe = base + s[i++].offset;
    for (int l = 0; l < m->config.n_layer; l++) {
        BlockTensors *h = &t->h[l];
        float **views[N_BLOCK_TENSORS] = {&h->ln_1_w, &h->ln_1_b, &h->c_attn_w, &h->c_attn_b,
                                          &h->attn_proj_w, &h->attn_proj_b, &h->ln_2_w, &h->ln_2_b,
                                          &h->c_fc_w, &h->c_fc_b, &h->mlp_proj_w, &h->mlp_proj_b};
        for (int k = 0; k < N_BLOCK_TENSORS; k++) *views[k] = base + s[i++].offset;
    }
    t->ln_f_w = base + s[i++].offset;
    t->ln_f_b = base + s[i++].offset;
}

void gpt2_build(GPT2 *m, const GPTConfig *c) {
    char err[256];
    if (!gpt2_config_check(c, err, sizeof err)) gt_fail_usage("%s", err);
    memset(m, 0, sizeof *m);
    m->config = *c;
    size_t V = c->vocab_size, T = c->block_size, C = c->n_embd;
    int L = c->n_layer;
    m->specs = gt_calloc((size_t)L * N_BLOCK_TENSORS + 4, sizeof(ParamSpec), "parameter table");
    size_t off = 0;
    char name[64];
    add_spec(m, &off, "transformer.wte.weight", V, C, -1);
    add_spec(m, &off, "transformer.wpe.weight", T, C, -1);
    static const struct { const char *name; int rows_mult, cols_mult; } block[N_BLOCK_TENSORS] = {
        {"ln_1.weight", 1, 0}, {"ln_1.bias", 1, 0},
        {"attn.c_attn.weight", 3, 1}, {"attn.c_attn.bias", 3, 0},
        {"attn.c_proj.weight", 1, 1}, {"attn.c_proj.bias", 1, 0},
        {"ln_2.weight", 1, 0}, {"ln_2.bias", 1, 0},
        {"mlp.c_fc.weight", 4, 1}, {"mlp.c_fc.bias", 4, 0},
        {"mlp.c_proj.weight", 1, 4}, {"mlp.c_proj.bias", 1, 0}};
    for (int l = 0; l < L; l++)
        for (int k = 0; k < N_BLOCK_TENSORS; k++) {
            snprintf(name, sizeof name, "transformer.h.%d.%s", l, block[k].name);
            add_spec(m, &off, name, block[k].rows_mult * C, block[k].cols_mult * C, l);
        }
    add_spec(m, &off, "transformer.ln_f.weight", C, 0, -1);
    add_spec(m, &off, "transformer.ln_f.bias", C, 0, -1);
    m->num_params = off;
    m->params = gt_calloc(off, sizeof(float), "model parameters");
    m->grads = gt_calloc(off, sizeof(float), "parameter gradients");
    gpt2_advise_huge(m->params, off * sizeof(float));
    gpt2_advise_huge(m->grads, off * sizeof(float));
    point_tensors(&m->p, m->params, m);
    point_tensors(&m->g, m->grads, m);
    m->mean_loss = -1.0f;
}

void gpt2_init_weights(GPT2 *m, uint64_t seed) {
    float proj_std = 0.02f / sqrtf(2.0f * m->config.n_layer);
    for (int i = 0; i < m->n_specs; i++) {
        const ParamSpec *s = &m->specs[i];
        float *w = m->params + s->offset;
        const char *tail = strrchr(s->name, '.');
        if (s->ndim == 1) {
            // LayerNorm weights are 1; every bias (and LayerNorm bias) is 0
            float v = strcmp(tail, ".weight") == 0 ? 1.0f : 0.0f;
            for (size_t j = 0; j < s->numel; j++) w[j] = v;
            continue;
        }
        float std = strstr(s->name, ".c_proj.weight") ? proj_std : 0.02f;
        uint64_t key = rng_site_key(seed, (uint64_t)i + 1000);
        #pragma omp parallel for
        for (size_t j = 0; j < s->numel; j++) w[j] = std * rng_normal_at(key, j);
    }
    gpt2_params_changed(m);
}

static size_t acts_size(const GPTConfig *c, size_t B, size_t T) {
    size_t C = c->n_embd, L = c->n_layer, NH = c->n_head, V = c->vocab_size, BT = B * T;
    return BT * C                      // encoded
           + BT * C + L * BT * C + L * BT * 2  // ln, atty; ln1 mean/rstd
           + L * BT * 3 * C            // qkv
           + L * B * NH * T * T        // att
           + L * BT * C + L * BT * 2   // residual2; ln2 mean/rstd
           + L * BT * 4 * C * 2        // fch, fch_gelu
           + L * BT * C                // residual3
           + BT * C + BT * 2           // lnf; mean/rstd
           + BT * V * 2 + BT;          // logits, probs, losses
}

// bf16: the floats of acts_size less ln, qkv, atty, fch, fch_gelu, lnf, and those as bf16.
static size_t acts_size_bf16(const GPTConfig *c, size_t B, size_t T, size_t *n16) {
    size_t C = c->n_embd, L = c->n_layer, BT = B * T;
    size_t moved = BT * C + L * BT * 3 * C + L * BT * C + L * BT * 4 * C * 2 + BT * C;
    *n16 = moved;
    return acts_size(c, B, T) - moved;
}

// Bytes of the activation buffer: the floats, then (bf16) the bf16 tensors from a 64-byte boundary.
static size_t acts_bytes(const GPT2 *m, size_t B, size_t T) {
    if (m->precision != PRECISION_BF16) return acts_size(&m->config, B, T) * sizeof(float);
    size_t n16, nf = acts_size_bf16(&m->config, B, T, &n16);
    return (nf * sizeof(float) + 63) / 64 * 64 + n16 * sizeof(uint16_t);
}

static void set_act_views(GPT2 *m, int B, int T) {
    Acts *a = &((Priv *)m->priv)->a;
    const GPTConfig *c = &m->config;
    size_t C = c->n_embd, L = c->n_layer, NH = c->n_head, V = c->vocab_size, BT = (size_t)B * T;
    int f32 = m->precision != PRECISION_BF16;  // 0: the tensors with a bf16 form have no fp32 one
    float *p = m->acts;
#define TAKE(field, n) do { a->field = p; p += (n); } while (0)
#define TAKE32(field, n) do { a->field = f32 ? p : NULL; p += f32 ? (n) : 0; } while (0)
    TAKE(encoded, BT * C);
    TAKE32(ln, BT * C);
    TAKE(ln1_mean, L * BT);
    TAKE(ln1_rstd, L * BT);
    TAKE32(qkv, L * BT * 3 * C);
    TAKE32(atty, L * BT * C);
    TAKE(att, L * B * NH * T * T);
    TAKE(residual2, L * BT * C);
    TAKE(ln2_mean, L * BT);
    TAKE(ln2_rstd, L * BT);
    TAKE32(fch, L * BT * 4 * C);
    TAKE32(fch_gelu, L * BT * 4 * C);
    TAKE(residual3, L * BT * C);
    TAKE32(lnf, BT * C);
    TAKE(lnf_mean, BT);
    TAKE(lnf_rstd, BT);
    TAKE(logits, BT * V);
    TAKE(probs, BT * V);
    TAKE(losses, BT);
#undef TAKE
#undef TAKE32
    uint16_t *h = f32 ? NULL : (uint16_t *)((char *)m->acts + ((char *)p - (char *)m->acts + 63) / 64 * 64);
#define TAKE16(field, n) do { a->field = h; h = h ? h + (n) : NULL; } while (0)
    TAKE16(ln16, BT * C);
    TAKE16(qkv16, L * BT * 3 * C);
    TAKE16(atty16, L * BT * C);
    TAKE16(fch_gelu16, L * BT * 4 * C);
    TAKE16(fch_grad16, L * BT * 4 * C);
    TAKE16(lnf16, BT * C);
#undef TAKE16
    m->att = a->att;
    m->logits = a->logits;
    m->probs = a->probs;
}

void gpt2_alloc_activations(GPT2 *m, int maxB, int maxT) {
    if (maxB <= 0 || maxT <= 0) gt_fail_usage("batch size %d and sequence length %d must be positive", maxB, maxT);
    if (maxT > m->config.block_size)
        gt_fail_usage("sequence length %d exceeds the model's block size %d", maxT, m->config.block_size);
    if ((size_t)maxB * maxT > INT_MAX)  // the GEMMs take the B*T rows as an int
        gt_fail_usage("batch size %d x block size %d is more than %d rows", maxB, maxT, INT_MAX);
    if (m->acts) {
        Priv *q = m->priv;
        free(m->acts);
        free(q->inputs);
        free(q->dresidual);
        free(q);
    }
    size_t C = m->config.n_embd, V = m->config.vocab_size, BT = (size_t)maxB * maxT;
    m->maxB = maxB;
    m->maxT = maxT;
    m->acts = gt_malloc(acts_bytes(m, maxB, maxT), "activations");
    gpt2_advise_huge(m->acts, acts_bytes(m, maxB, maxT));
    Priv *q = gt_calloc(1, sizeof(Priv), "model state");
    m->priv = q;
    q->inputs = gt_malloc(2 * BT * sizeof(int), "token buffers");
    q->targets = q->inputs + BT;
    size_t n16 = 0, natt16 = 0, natt = 0;
    if (m->precision == PRECISION_BF16) {
        natt = attention16_scratch(maxB, maxT, (int)C, m->config.n_head, &natt16);
        n16 = BT * 4 * C + BT * V + natt16;  // d16, dlogits16, att16
    }
    float *s = gt_malloc((BT * C * 11 + BT + natt) * sizeof(float) + n16 * sizeof(uint16_t), "backward scratch");
    q->dresidual = s;
    q->dbtc = s + BT * C;
    q->dbtc2 = s + 2 * BT * C;
    q->scratch = s + 3 * BT * C;
    q->dqkv = s + 4 * BT * C;
    q->dfch = s + 7 * BT * C;
    q->ce_saved = s + 11 * BT * C;
    if (n16) {
        q->att32 = s + 11 * BT * C + BT;
        q->d16 = (uint16_t *)(q->att32 + natt);
        q->dlogits16 = q->d16 + BT * 4 * C;
        q->att16 = q->dlogits16 + BT * V;
    }
    set_act_views(m, maxB, maxT);
}

int gpt2_set_precision(GPT2 *m, Precision p, char *err, size_t errsize) {
    if (p == PRECISION_BF16 && !bf16_supported(err, errsize)) return 0;
    if (p == m->precision) return 1;
    m->precision = p;
    free(m->params16);
    m->params16 = NULL;
    if (p == PRECISION_BF16) {
        m->params16 = gt_malloc(m->num_params * sizeof(uint16_t), "bf16 copy of the parameters");
        gpt2_advise_huge(m->params16, m->num_params * sizeof(uint16_t));
        gpt2_params_changed(m);
    }
    if (m->acts) gpt2_alloc_activations(m, m->maxB, m->maxT);
    return 1;
}

void gpt2_params_changed(GPT2 *m) {
    if (m->params16) bf16_from_f32_par(m->params16, m->params, m->num_params);
}

const uint16_t *gpt2_params16_of(const GPT2 *m, const float *w) { return m->params16 + (w - m->params); }
static const uint16_t *w16(const GPT2 *m, const float *w) { return gpt2_params16_of(m, w); }

// The blocks, ln_f and the head in fp32 (cblas_sgemm and gemm_small).
static void forward_fp32(GPT2 *m, int B, int T, float p, uint64_t dropout_seed, int has_targets) {
    Priv *q = m->priv;
    Acts *a = &q->a;
    int V = m->config.vocab_size, C = m->config.n_embd, NH = m->config.n_head, L = m->config.n_layer;
    size_t BT = (size_t)B * T;
    for (int l = 0; l < L; l++) {
        const BlockTensors *w = &m->p.h[l];
        const float *x = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * BT * C;
        float *qkv = a->qkv + l * BT * 3 * C, *atty = a->atty + l * BT * C;
        float *att = a->att + (size_t)l * B * NH * T * T, *res2 = a->residual2 + l * BT * C;
        float *fch = a->fch + l * BT * 4 * C, *fchg = a->fch_gelu + l * BT * 4 * C;
        float *res3 = a->residual3 + l * BT * C;
        layernorm_forward(a->ln, a->ln1_mean + l * BT, a->ln1_rstd + l * BT, x, w->ln_1_w, w->ln_1_b, BT, C);
        matmul_forward(qkv, a->ln, w->c_attn_w, w->c_attn_b, BT, C, 3 * C);
        attention_forward_dropout(atty, att, qkv, B, T, C, NH, p, site_key(dropout_seed, l, SITE_ATT));
        matmul_forward(q->scratch, atty, w->attn_proj_w, w->attn_proj_b, BT, C, C);
        residual_dropout_forward(res2, x, q->scratch, BT * C, p, site_key(dropout_seed, l, SITE_ATTN_RESID));
        layernorm_forward(a->ln, a->ln2_mean + l * BT, a->ln2_rstd + l * BT, res2, w->ln_2_w, w->ln_2_b, BT, C);
        matmul_forward(fch, a->ln, w->c_fc_w, w->c_fc_b, BT, C, 4 * C);
        if (has_targets) gelu_forward_keep_grad(fchg, fch, BT * 4 * C);
        else gelu_forward(fchg, fch, BT * 4 * C);
        matmul_forward(q->scratch, fchg, w->mlp_proj_w, w->mlp_proj_b, BT, 4 * C, C);
        residual_dropout_forward(res3, res2, q->scratch, BT * C, p, site_key(dropout_seed, l, SITE_MLP_RESID));
    }
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, a->residual3 + (size_t)(L - 1) * BT * C, m->p.ln_f_w,
                      m->p.ln_f_b, BT, C);
    matmul_forward(a->logits, a->lnf, m->p.wte, NULL, BT, C, V);  // tied head
}

// The same in bf16: matmuls take bf16 operands (the weights from params16) and accumulate in
// fp32; the tensors only matmuls read (LayerNorm outputs, q/k/v, the attention and GELU
// outputs) are written as bf16 by the layers that make them.
static void forward_bf16(GPT2 *m, int B, int T, float p, uint64_t dropout_seed) {
    Priv *q = m->priv;
    Acts *a = &q->a;
    int V = m->config.vocab_size, C = m->config.n_embd, NH = m->config.n_head, L = m->config.n_layer;
    size_t BT = (size_t)B * T;
    for (int l = 0; l < L; l++) {
        const BlockTensors *w = &m->p.h[l];
        const float *x = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * BT * C;
        uint16_t *qkv = a->qkv16 + l * BT * 3 * C, *atty = a->atty16 + l * BT * C, *fchg = a->fch_gelu16 + l * BT * 4 * C;
        uint16_t *fchd = a->fch_grad16 + l * BT * 4 * C;
        float *att = a->att + (size_t)l * B * NH * T * T, *res2 = a->residual2 + l * BT * C;
        float *res3 = a->residual3 + l * BT * C;
        layernorm_forward16(a->ln16, a->ln1_mean + l * BT, a->ln1_rstd + l * BT, x, w->ln_1_w, w->ln_1_b, BT, C);
        matmul_forward_bf16_to16(q->d16, a->ln16, w16(m, w->c_attn_w), w->c_attn_b, BT, C, 3 * C);
        attention_heads16(qkv, q->d16, B, T, C, NH);
        attention_forward16(atty, att, qkv, B, T, C, NH, p, site_key(dropout_seed, l, SITE_ATT), q->att16);
        matmul_forward_bf16(q->scratch, atty, w16(m, w->attn_proj_w), w->attn_proj_b, BT, C, C);
        residual_dropout_forward(res2, x, q->scratch, BT * C, p, site_key(dropout_seed, l, SITE_ATTN_RESID));
        layernorm_forward16(a->ln16, a->ln2_mean + l * BT, a->ln2_rstd + l * BT, res2, w->ln_2_w, w->ln_2_b, BT, C);
        matmul_forward_bf16(q->dfch, a->ln16, w16(m, w->c_fc_w), w->c_fc_b, BT, C, 4 * C);  // one layer's, fp32
        gelu_forward_keep_grad16(fchg, fchd, q->dfch, BT * 4 * C);
        matmul_forward_bf16(q->scratch, fchg, w16(m, w->mlp_proj_w), w->mlp_proj_b, BT, 4 * C, C);
        residual_dropout_forward(res3, res2, q->scratch, BT * C, p, site_key(dropout_seed, l, SITE_MLP_RESID));
    }
    layernorm_forward16(a->lnf16, a->lnf_mean, a->lnf_rstd, a->residual3 + (size_t)(L - 1) * BT * C, m->p.ln_f_w,
                        m->p.ln_f_b, BT, C);
    matmul_forward_bf16(a->logits, a->lnf16, w16(m, m->p.wte), NULL, BT, C, V);  // tied head
}

float gpt2_forward(GPT2 *m, const int *inputs, const int *targets, int B, int T, int train,
                   uint64_t dropout_seed) {
    if (!m->acts) gt_fail(GT_EXIT_RUNTIME, "gpt2_forward before gpt2_alloc_activations");
    if (B <= 0 || T <= 0 || B > m->maxB || T > m->maxT)
        gt_fail(GT_EXIT_RUNTIME, "forward of (B=%d, T=%d) exceeds the activations' (%d, %d)", B, T, m->maxB, m->maxT);
    Priv *q = m->priv;
    const GPTConfig *c = &m->config;
    int V = c->vocab_size, C = c->n_embd;
    size_t BT = (size_t)B * T;
    for (size_t i = 0; i < BT; i++) {
        if (inputs[i] < 0 || inputs[i] >= V) gt_fail_usage("token id %d at position %zu is outside the vocabulary (0..%d)", inputs[i], i, V - 1);
        if (targets && (targets[i] < 0 || targets[i] >= V))
            gt_fail_usage("target id %d at position %zu is outside the vocabulary (0..%d)", targets[i], i, V - 1);
    }
    set_act_views(m, B, T);
    Acts *a = &q->a;
    memcpy(q->inputs, inputs, BT * sizeof(int));
    q->has_targets = targets != NULL;
    if (targets) memcpy(q->targets, targets, BT * sizeof(int));
    float p = train ? c->dropout : 0.0f;
    q->p = p;
    q->dropout_seed = dropout_seed;
    m->B = B;
    m->T = T;
    m->training = train;
    m->last_targets = targets;

    encoder_forward(a->encoded, inputs, m->p.wte, m->p.wpe, B, T, C);
    if (p > 0.0f) dropout_apply(a->encoded, a->encoded, BT * C, p, site_key(dropout_seed, -1, 0));
    if (m->precision == PRECISION_BF16) forward_bf16(m, B, T, p, dropout_seed);
    else forward_fp32(m, B, T, p, dropout_seed, targets != NULL);
    if (!targets) {
        m->mean_loss = -1.0f;
        return -1.0f;
    }
    crossentropy_forward(a->probs, a->losses, a->logits, targets, BT, V);
    double sum = 0.0;
    for (size_t i = 0; i < BT; i++) sum += a->losses[i];
    m->mean_loss = (float)(sum / BT);
    return m->mean_loss;
}

const float *gpt2_losses(const GPT2 *m) { return ((const Priv *)m->priv)->a.losses; }

// Shared between the threads: at 124M parameters one core's memset of 500 MB is ~3% of a step.
void gpt2_zero_grad(GPT2 *m) {
    size_t n = m->num_params;
    #pragma omp parallel if (n > (1u << 20))
    {
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        size_t chunk = ((n + nt - 1) / nt + 1023) & ~(size_t)1023;
        size_t lo = id * chunk < n ? id * chunk : n, hi = lo + chunk < n ? lo + chunk : n;
        memset(m->grads + lo, 0, (hi - lo) * sizeof(float));
    }
}

// After the tied head's GEMM: with emb_grad set the encoder adds elsewhere, so the head's share
// is all of wte's gradient and wte can be reported first.
static void head_done(const GPT2 *m, GradReadyFn ready, void *ctx) {
    if (ready && m->emb_grad) ready(ctx, m->specs[0].offset, m->specs[0].numel);
}

// Between sub-layers of backward: tensors [lo, hi) of the specs have final gradients.
static void progress(const GPT2 *m, int lo, int hi) {
    if (!m->progress) return;
    size_t off = lo < hi ? m->specs[lo].offset : 0;
    size_t end = lo < hi ? m->specs[hi - 1].offset + m->specs[hi - 1].numel : 0;
    m->progress(m->progress_ctx, off, end - off);
}

// The gradient entering a residual branch from dres: dres itself, or through the branch's
// dropout (same key as the forward) into q->dbtc.
static const float *branch_grad(Priv *q, const float *dres, size_t n, float p, uint64_t key) {
    if (p <= 0.0f) return dres;
    dropout_apply(q->dbtc, dres, n, p, key);
    return q->dbtc;
}

// gpt2_backward in bf16: the same passes and GradReadyFn calls, every matmul's gradient
// operand rounded to bf16 first (by the layer that makes it where it can) and its outputs,
// the weight gradients included, accumulated in fp32. Bias gradients sum the fp32 gradient.
static void backward_bf16(GPT2 *m, float loss_scale, GradReadyFn ready, void *ctx) {
    Priv *q = m->priv;
    const GPTConfig *c = &m->config;
    int B = m->B, T = m->T, V = c->vocab_size, C = c->n_embd, NH = c->n_head, L = c->n_layer;
    size_t BT = (size_t)B * T;
    Acts *a = &q->a;
    float p = q->p;
    uint64_t seed = q->dropout_seed;
    const ParamSpec *sp = m->specs;

    // the head: dlogits = (probs - onehot) * loss_scale / BT, rounded without the scale
    // (which goes into the GEMMs' alpha), so probs stay as the forward wrote them;
    // transposed, as both products read it (gemm_bf16's fast kernels want dense operands)
    crossentropy_dlogits16T(q->dlogits16, a->probs, q->targets, BT, V);  // (V, BT)
    float *dlnf = q->dbtc, alpha = loss_scale / (float)BT;
    gemm_bf16(1, 0, (int)BT, C, V, alpha, q->dlogits16, (int)BT, w16(m, m->p.wte), C, 0.0f, dlnf, C, NULL);
    gemm_bf16(0, 0, V, C, (int)BT, alpha, q->dlogits16, (int)BT, a->lnf16, C, 1.0f, m->g.wte, C, NULL);
    head_done(m, ready, ctx);
    progress(m, 0, 0);
    float *dres = q->dresidual;
    memset(dres, 0, BT * C * sizeof(float));
    layernorm_backward(dres, m->g.ln_f_w, m->g.ln_f_b, dlnf, a->residual3 + (size_t)(L - 1) * BT * C, m->p.ln_f_w,
                       a->lnf_mean, a->lnf_rstd, BT, C);
    const ParamSpec *lnf_spec = &sp[m->n_specs - 2];
    if (ready) ready(ctx, lnf_spec->offset, 2 * (size_t)C);

    for (int l = L - 1; l >= 0; l--) {
        const int s0 = 2 + l * N_BLOCK_TENSORS;
        const BlockTensors *w = &m->p.h[l];
        BlockTensors *g = &m->g.h[l];
        const float *x = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * BT * C;
        const uint16_t *qkv = a->qkv16 + l * BT * 3 * C, *atty = a->atty16 + l * BT * C;
        const uint16_t *fchg = a->fch_gelu16 + l * BT * 4 * C, *fchd = a->fch_grad16 + l * BT * 4 * C;
        float *att = a->att + (size_t)l * B * NH * T * T, *res2 = a->residual2 + l * BT * C;

        // MLP branch
        const float *dbranch = branch_grad(q, dres, BT * C, p, site_key(seed, l, SITE_MLP_RESID));
        bf16_from_f32_par(q->d16, dbranch, BT * C);
        matmul_backward_bf16(q->dfch, g->mlp_proj_w, g->mlp_proj_b, q->d16, dbranch, fchg, w16(m, w->mlp_proj_w), BT,
                             4 * C, C);
        progress(m, s0 + 10, s0 + 12);
        gelu_backward_from_grad16(q->d16, q->dfch, fchd, BT * 4 * C);
        float *dln2 = q->dbtc2;
        layernorm_forward16(a->ln16, NULL, NULL, res2, w->ln_2_w, w->ln_2_b, BT, C);
        matmul_backward_bf16(dln2, g->c_fc_w, g->c_fc_b, q->d16, q->dfch, a->ln16, w16(m, w->c_fc_w), BT, C, 4 * C);
        progress(m, s0 + 8, s0 + 10);
        layernorm_backward(dres, g->ln_2_w, g->ln_2_b, dln2, res2, w->ln_2_w, a->ln2_mean + l * BT,
                           a->ln2_rstd + l * BT, BT, C);
        progress(m, s0 + 6, s0 + 8);

        // attention branch
        dbranch = branch_grad(q, dres, BT * C, p, site_key(seed, l, SITE_ATTN_RESID));
        bf16_from_f32_par(q->d16, dbranch, BT * C);
        float *datty = q->dbtc2;
        matmul_backward_bf16(datty, g->attn_proj_w, g->attn_proj_b, q->d16, dbranch, atty, w16(m, w->attn_proj_w), BT,
                             C, C);
        progress(m, s0 + 4, s0 + 6);
        attention_backward16(q->dqkv, datty, qkv, att, B, T, C, NH, p, site_key(seed, l, SITE_ATT), q->att32, q->att16);
        progress(m, 0, 0);
        bf16_from_f32_par(q->d16, q->dqkv, BT * 3 * C);
        float *dln1 = q->dbtc;
        layernorm_forward16(a->ln16, NULL, NULL, x, w->ln_1_w, w->ln_1_b, BT, C);
        matmul_backward_bf16(dln1, g->c_attn_w, g->c_attn_b, q->d16, q->dqkv, a->ln16, w16(m, w->c_attn_w), BT, C,
                             3 * C);
        progress(m, s0 + 2, s0 + 4);
        layernorm_backward(dres, g->ln_1_w, g->ln_1_b, dln1, x, w->ln_1_w, a->ln1_mean + l * BT,
                           a->ln1_rstd + l * BT, BT, C);
        const ParamSpec *first = &sp[s0], *last = &sp[s0 + N_BLOCK_TENSORS - 1];
        if (ready) ready(ctx, first->offset, last->offset + last->numel - first->offset);
    }

    dropout_apply(dres, dres, BT * C, p, site_key(seed, -1, 0));
    encoder_backward(m->emb_grad ? m->emb_grad : m->g.wte, m->g.wpe, dres, q->inputs, B, T, C);
    if (ready) ready(ctx, 0, sp[1].offset + sp[1].numel);
}

void gpt2_backward(GPT2 *m, float loss_scale, GradReadyFn ready, void *ctx) {
    Priv *q = m->priv;
    if (!q || !q->has_targets) gt_fail(GT_EXIT_RUNTIME, "gpt2_backward without a forward that had targets");
    if (m->precision == PRECISION_BF16) {
        backward_bf16(m, loss_scale, ready, ctx);
        return;
    }
    const GPTConfig *c = &m->config;
    int B = m->B, T = m->T, V = c->vocab_size, C = c->n_embd, NH = c->n_head, L = c->n_layer;
    size_t BT = (size_t)B * T;
    Acts *a = &q->a;
    float p = q->p;
    uint64_t seed = q->dropout_seed;
    const ParamSpec *sp = m->specs;

    // loss -> logits -> lnf, and the tied head's share of dwte. dlogits = (probs - onehot) *
    // loss_scale / BT without a pass over (BT, V): the one-hot is subtracted from probs in
    // place and the scale goes into the GEMMs' alpha; the exact probs at the targets are put
    // back afterwards, so backward can be repeated.
    float *probs = a->probs;
    for (size_t i = 0; i < BT; i++) {
        float *pt = probs + i * V + q->targets[i];
        q->ce_saved[i] = *pt;
        *pt -= 1.0f;
    }
    float *dlnf = q->dbtc;
    matmul_backward_set_scaled(dlnf, m->g.wte, probs, a->lnf, m->p.wte, BT, C, V, loss_scale / (float)BT);
    for (size_t i = 0; i < BT; i++) probs[i * V + q->targets[i]] = q->ce_saved[i];
    head_done(m, ready, ctx);
    progress(m, 0, 0);
    float *dres = q->dresidual;
    memset(dres, 0, BT * C * sizeof(float));
    layernorm_backward(dres, m->g.ln_f_w, m->g.ln_f_b, dlnf, a->residual3 + (size_t)(L - 1) * BT * C, m->p.ln_f_w,
                       a->lnf_mean, a->lnf_rstd, BT, C);
    const ParamSpec *lnf_spec = &sp[m->n_specs - 2];
    if (ready) ready(ctx, lnf_spec->offset, 2 * (size_t)C);

    for (int l = L - 1; l >= 0; l--) {
        const int s0 = 2 + l * N_BLOCK_TENSORS;  // this block's first spec
        const BlockTensors *w = &m->p.h[l];
        BlockTensors *g = &m->g.h[l];
        const float *x = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * BT * C;
        float *qkv = a->qkv + l * BT * 3 * C, *atty = a->atty + l * BT * C;
        float *att = a->att + (size_t)l * B * NH * T * T, *res2 = a->residual2 + l * BT * C;
        float *fch = a->fch + l * BT * 4 * C, *fchg = a->fch_gelu + l * BT * 4 * C;
        float *ln = q->scratch;  // LayerNorm outputs, recomputed (same bits as in forward)

        // MLP branch: dres holds d(residual3); the skip path passes it to residual2 unchanged
        // (without dropout the branch's gradient is dres itself: no copy)
        const float *dbranch = branch_grad(q, dres, BT * C, p, site_key(seed, l, SITE_MLP_RESID));
        matmul_backward_set(q->dfch, g->mlp_proj_w, g->mlp_proj_b, dbranch, fchg, w->mlp_proj_w, BT, 4 * C, C);
        progress(m, s0 + 10, s0 + 12);
        gelu_backward_from_grad(q->dfch, fch, BT * 4 * C);  // fch holds gelu'(c_fc output)
        float *dln2 = q->dbtc2;
        layernorm_forward(ln, NULL, NULL, res2, w->ln_2_w, w->ln_2_b, BT, C);
        matmul_backward_set(dln2, g->c_fc_w, g->c_fc_b, q->dfch, ln, w->c_fc_w, BT, C, 4 * C);
        progress(m, s0 + 8, s0 + 10);
        layernorm_backward(dres, g->ln_2_w, g->ln_2_b, dln2, res2, w->ln_2_w, a->ln2_mean + l * BT,
                           a->ln2_rstd + l * BT, BT, C);
        progress(m, s0 + 6, s0 + 8);

        // attention branch: dres now holds d(residual2)
        dbranch = branch_grad(q, dres, BT * C, p, site_key(seed, l, SITE_ATTN_RESID));
        float *datty = q->dbtc2;
        matmul_backward_set(datty, g->attn_proj_w, g->attn_proj_b, dbranch, atty, w->attn_proj_w, BT, C, C);
        progress(m, s0 + 4, s0 + 6);
        memset(q->dqkv, 0, BT * 3 * C * sizeof(float));
        attention_backward(q->dqkv, datty, qkv, att, B, T, C, NH, p, site_key(seed, l, SITE_ATT));
        progress(m, 0, 0);
        float *dln1 = q->dbtc;
        layernorm_forward(ln, NULL, NULL, x, w->ln_1_w, w->ln_1_b, BT, C);
        matmul_backward_set(dln1, g->c_attn_w, g->c_attn_b, q->dqkv, ln, w->c_attn_w, BT, C, 3 * C);
        progress(m, s0 + 2, s0 + 4);
        layernorm_backward(dres, g->ln_1_w, g->ln_1_b, dln1, x, w->ln_1_w, a->ln1_mean + l * BT,
                           a->ln1_rstd + l * BT, BT, C);
        const ParamSpec *first = &sp[2 + l * N_BLOCK_TENSORS], *last = &sp[2 + (l + 1) * N_BLOCK_TENSORS - 1];
        if (ready) ready(ctx, first->offset, last->offset + last->numel - first->offset);
    }

    // dres holds d(encoded) after dropout
    dropout_apply(dres, dres, BT * C, p, site_key(seed, -1, 0));
    encoder_backward(m->emb_grad ? m->emb_grad : m->g.wte, m->g.wpe, dres, q->inputs, B, T, C);
    if (ready) ready(ctx, 0, sp[1].offset + sp[1].numel);
}

void gpt2_free(GPT2 *m) {
    Priv *q = m->priv;
    if (q) {
        free(q->inputs);
        free(q->dresidual);
        free(q);
    }
    free(m->acts);
    free(m->params);
    free(m->params16);
    free(m->grads);
    free(m->specs);
    memset(m, 0, sizeof *m);
}

double gpt2_flops_per_token(const GPTConfig *c, int T) {
    double C = c->n_embd, L = c->n_layer, V = c->vocab_size;
    // per layer: qkv 3C^2, proj C^2, fc 4C^2, proj 4C^2 multiply-adds; q.k and att.v over
    // T keys (full, as PyTorch computes it); head V*C. Two FLOPs per multiply-add.
    return L * (24.0 * C * C + 4.0 * T * C) + 2.0 * V * C;
}
