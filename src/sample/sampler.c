// sampler.c - see sampler.h.
#include "sampler.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "layers.h"

void kv_init(KVCache *kv, const GPT2 *m, int keep_att) {
    memset(kv, 0, sizeof *kv);
    const GPTConfig *c = &m->config;
    kv->m = m;
    kv->L = c->n_layer, kv->NH = c->n_head, kv->C = c->n_embd, kv->T = c->block_size, kv->V = c->vocab_size;
    size_t T = (size_t)kv->T, C = (size_t)kv->C, L = (size_t)kv->L;
    kv->n_threads = omp_get_max_threads();
    // one buffer, named views into it (cache, then scratch)
    size_t sizes[] = {L * T * C, L * T * C, T * C, T * C, T * C, 3 * T * C, T * C, T * C, 4 * T * C, 4 * T * C,
                      (size_t)kv->n_threads * T, (size_t)kv->V};
    float **ptrs[] = {&kv->k, &kv->v, &kv->x, &kv->x2, &kv->ln, &kv->qkv, &kv->y, &kv->proj, &kv->fc, &kv->fcg,
                      &kv->scores, &kv->logits};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += sizes[i];
    float *buf = gt_calloc(total, sizeof(float), "key/value cache");
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *ptrs[i] = buf;
        buf += sizes[i];
    }
    if (keep_att) kv->att = gt_calloc(L * kv->NH * T * T, sizeof(float), "attention rows (L, NH, T, T)");
    kv->bf16 = m->precision == PRECISION_BF16;
    if (kv->bf16) kv->in16 = gt_malloc(4 * T * C * sizeof(uint16_t), "bf16 matmul input");
}

void kv_reset(KVCache *kv) {
    kv->n = 0;
    kv->last_fed = 0;
}

void kv_free(KVCache *kv) {
    free(kv->k);  // the start of the one buffer
    free(kv->att);
    free(kv->in16);
    memset(kv, 0, sizeof *kv);
}

// matmul_forward for the rows being fed; one row (every cached step) goes through sgemv,
// which streams the weights once, where sgemm would first pack them (most of the time of a
// single-token step). bf16: the input rounded, the model's bf16 weights, fp32 out.
static void linear(const KVCache *kv, float *out, const float *inp, const float *w, const float *bias, int N, int C,
                   int OC) {
    if (kv->bf16) {
        bf16_from_f32_par(kv->in16, inp, (size_t)N * C);
        matmul_forward_bf16(out, kv->in16, gpt2_params16_of(kv->m, w), bias, (size_t)N, C, OC);
        return;
    }
    if (N > 1) {
        matmul_forward(out, inp, w, bias, (size_t)N, C, OC);
        return;
    }
    if (bias) memcpy(out, bias, (size_t)OC * sizeof(float));
    cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, C, 1.0f, w, C, inp, 1, bias ? 1.0f : 0.0f, out, 1);
}

// Queries of N new tokens (positions p..p+N-1) against the cached keys 0..p+i of layer l.
static void cached_attention(KVCache *kv, int l, int p, int N) {
    int C = kv->C, NH = kv->NH, T = kv->T, hs = C / NH;
    const float *K = kv->k + (size_t)l * T * C, *Vc = kv->v + (size_t)l * T * C;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(2) schedule(static) num_threads(kv->n_threads)
    for (int i = 0; i < N; i++) {
        for (int h = 0; h < NH; h++) {
            float *sc = kv->scores + (size_t)omp_get_thread_num() * T;
            const float *q = kv->qkv + (size_t)i * 3 * C + h * hs;
            int pos = p + i;
            float maxv = -INFINITY;
            for (int j = 0; j <= pos; j++) {
                const float *kj = K + (size_t)j * C + h * hs;
                float s = 0.0f;
                for (int d = 0; d < hs; d++) s += q[d] * kj[d];
                s *= scale;
                sc[j] = s;
                if (s > maxv) maxv = s;
            }
            float sum = 0.0f;
            for (int j = 0; j <= pos; j++) {
                sc[j] = expf(sc[j] - maxv);
                sum += sc[j];
            }
            float inv = 1.0f / sum;
            float *y = kv->y + (size_t)i * C + h * hs;
            for (int d = 0; d < hs; d++) y[d] = 0.0f;
            for (int j = 0; j <= pos; j++) {
                float a = sc[j] * inv;
                sc[j] = a;
                // bf16: q, k, v are bf16 values already, the probability is rounded here:
                // each product is exact, a bf16 matmul in fp32 arithmetic
                float aw = kv->bf16 ? f32_from_bf16(bf16_from_f32(a)) : a;
                const float *vj = Vc + (size_t)j * C + h * hs;
                for (int d = 0; d < hs; d++) y[d] += aw * vj[d];
            }
            if (kv->att) {
                float *row = kv->att + (((size_t)l * NH + h) * T + i) * T;
                memcpy(row, sc, (size_t)(pos + 1) * sizeof(float));
                memset(row + pos + 1, 0, (size_t)(T - pos - 1) * sizeof(float));
            }
        }
    }
}

void kv_forward(KVCache *kv, const int *tokens, int N) {
    int p = kv->n, C = kv->C, T = kv->T;
    if (N <= 0 || p + N > T)
        gt_fail(GT_EXIT_RUNTIME, "kv_forward: %d tokens at position %d do not fit block size %d", N, p, T);
    const GPT2 *m = kv->m;
    const ParamTensors *P = &m->p;
    size_t NC = (size_t)N * C;
    // positions p.. use rows p.. of wpe
    encoder_forward(kv->x, tokens, P->wte, P->wpe + (size_t)p * C, 1, N, C);
    for (int l = 0; l < kv->L; l++) {
        const BlockTensors *b = &P->h[l];
        layernorm_forward(kv->ln, NULL, NULL, kv->x, b->ln_1_w, b->ln_1_b, N, C);
        linear(kv, kv->qkv, kv->ln, b->c_attn_w, b->c_attn_b, N, C, 3 * C);  // (N, 3C)
        if (kv->bf16)  // q, k, v only enter matmuls: their bf16 values, as gpt2_forward keeps them
            for (size_t i = 0; i < (size_t)N * 3 * C; i++) kv->qkv[i] = f32_from_bf16(bf16_from_f32(kv->qkv[i]));
        for (int i = 0; i < N; i++) {
            const float *row = kv->qkv + (size_t)i * 3 * C;
            memcpy(kv->k + ((size_t)l * T + p + i) * C, row + C, (size_t)C * sizeof(float));
            memcpy(kv->v + ((size_t)l * T + p + i) * C, row + 2 * C, (size_t)C * sizeof(float));
        }
        cached_attention(kv, l, p, N);
        linear(kv, kv->proj, kv->y, b->attn_proj_w, b->attn_proj_b, N, C, C);
        residual_forward(kv->x2, kv->x, kv->proj, NC);
        layernorm_forward(kv->ln, NULL, NULL, kv->x2, b->ln_2_w, b->ln_2_b, N, C);
        linear(kv, kv->fc, kv->ln, b->c_fc_w, b->c_fc_b, N, C, 4 * C);  // (N, 4C)
        gelu_forward(kv->fcg, kv->fc, (size_t)N * 4 * C);
        linear(kv, kv->proj, kv->fcg, b->mlp_proj_w, b->mlp_proj_b, N, 4 * C, C);
        residual_forward(kv->x, kv->x2, kv->proj, NC);
    }
    // only the last position's logits are needed to sample
    layernorm_forward(kv->ln, NULL, NULL, kv->x + (size_t)(N - 1) * C, P->ln_f_w, P->ln_f_b, 1, C);
    linear(kv, kv->logits, kv->ln, P->wte, NULL, 1, C, kv->V);  // tied head
    kv->n = p + N;
    kv->last_fed = N;
}

void kv_att_row(const KVCache *kv, int i, float *out) {
    size_t T = (size_t)kv->T;
    for (int lh = 0; lh < kv->L * kv->NH; lh++) memcpy(out + lh * T, kv->att + ((size_t)lh * T + i) * T, T * sizeof(float));
}

// ---- generation through a sliding window ----

static void ids_append(Generator *g, int id) {
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 256;
        g->ids = gt_realloc(g->ids, g->cap * sizeof(int), "token sequence");
    }
    g->ids[g->n++] = id;
}

void generator_start(Generator *g, const GPT2 *m, const int *prompt, size_t P, int keep_att) {
    memset(g, 0, sizeof *g);
    kv_init(&g->kv, m, keep_att);
    size_t T = (size_t)g->kv.T;
    if (P == 0) gt_fail(GT_EXIT_RUNTIME, "generator_start: empty prompt");
    for (size_t i = 0; i < P; i++) ids_append(g, prompt[i]);
    g->start = P > T ? P - T : 0;
    kv_forward(&g->kv, g->ids + g->start, (int)(P - g->start));
}

void generator_push(Generator *g, int id) {
    ids_append(g, id);
    if (g->kv.n < g->kv.T) {
        kv_forward(&g->kv, &g->ids[g->n - 1], 1);
        return;
    }
    // Window full: every position shifts by one, so no cached key is valid any more.
    g->start = g->n - (size_t)g->kv.T;
    g->slides++;
    kv_reset(&g->kv);
    kv_forward(&g->kv, g->ids + g->start, g->kv.T);
}

void generator_free(Generator *g) {
    kv_free(&g->kv);
    free(g->ids);
    memset(g, 0, sizeof *g);
}

// ---- sampling ----

static const float *g_sort_probs;  // qsort has no context argument
static int by_prob_desc(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    float pi = g_sort_probs[i], pj = g_sort_probs[j];
    if (pi != pj) return pi > pj ? -1 : 1;
    return i - j;
}

int sample_token(const float *logits, int V, const SampleParams *p, Rng *rng, float *probs, int *order) {
    if (p->temperature <= 0.0f) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    float maxv = -INFINITY;
    for (int i = 0; i < V; i++)
        if (logits[i] > maxv) maxv = logits[i];
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        probs[i] = expf((logits[i] - maxv) / p->temperature);
        sum += probs[i];
    }
    for (int i = 0; i < V; i++) probs[i] = (float)(probs[i] / sum);
    int kept = V;
    int filter = (p->top_k > 0 && p->top_k < V) || p->top_p < 1.0f;
    if (filter) {
        for (int i = 0; i < V; i++) order[i] = i;
        g_sort_probs = probs;
        qsort(order, (size_t)V, sizeof(int), by_prob_desc);
        if (p->top_k > 0 && p->top_k < V) kept = p->top_k;
        if (p->top_p < 1.0f) {
            double mass = 0.0, cum = 0.0;
            for (int r = 0; r < kept; r++) mass += probs[order[r]];
            int r = 0;
            while (r < kept) {
                cum += probs[order[r++]];
                if (cum >= p->top_p * mass) break;
            }
            kept = r;
        }
    }
    double mass = 0.0;
    for (int r = 0; r < kept; r++) mass += probs[filter ? order[r] : r];
    double u = (double)rng_uniform(rng) * mass, cum = 0.0;
    for (int r = 0; r < kept; r++) {
        int id = filter ? order[r] : r;
        cum += probs[id];
        if (u < cum) return id;
    }
    return filter ? order[kept - 1] : kept - 1;  // rounding left u at the very top
}

// ---- the likeliest tokens ----

// a is likelier than b (ties: the lower id)
static int likelier(const float *x, int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); }

// Restores the heap below i in h[0..n): the least likely at the root.
static void sift_down(const float *x, int32_t *h, int n, int i) {
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && likelier(x, h[c], h[c + 1])) c++;
        if (!likelier(x, h[i], h[c])) return;
        int32_t t = h[i];
        h[i] = h[c], h[c] = t;
        i = c;
    }
}

void top_tokens(const float *logits, int V, int K, int32_t *ids, float *probs) {
    float maxv = -INFINITY;
    for (int i = 0; i < V; i++)
        if (logits[i] > maxv) maxv = logits[i];
    double sum = 0.0;
    for (int i = 0; i < V; i++) sum += exp((double)logits[i] - maxv);
    // the K likeliest in a heap whose root is the least likely of them: O(V log K)
    int n = 0;
    for (int32_t i = 0; i < V; i++) {
        if (n < K) {
            int j = n++;
            ids[j] = i;
            while (j > 0 && likelier(logits, ids[(j - 1) / 2], ids[j])) {
                int32_t t = ids[j];
                ids[j] = ids[(j - 1) / 2], ids[(j - 1) / 2] = t;
                j = (j - 1) / 2;
            }
        } else if (likelier(logits, i, ids[0])) {
            ids[0] = i;
            sift_down(logits, ids, n, 0);
        }
    }
    // heap sort: the least likely goes last, so the likeliest ends up first
    for (int end = n - 1; end > 0; end--) {
        int32_t t = ids[0];
        ids[0] = ids[end], ids[end] = t;
        sift_down(logits, ids, end, 0);
    }
    for (int k = 0; k < n; k++) probs[k] = (float)(exp((double)logits[ids[k]] - maxv) / sum);
}
