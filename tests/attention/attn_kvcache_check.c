// attn_kvcache_check.c - the key/value cache (src/sampler.c) against the engine's full
// forward (gpt2_forward): logits and attention rows at every step of a generation, before
// and after the window slides past block_size, for a prompt longer than the block size,
// and fed in uneven chunks; in fp32, and in bf16 where the CPU has it. Then the sampler:
// greedy, top-k, top-p, seeded draws and their frequencies. Exit 1 on the first failure.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gpt2.h"
#include "rng.h"
#include "sampler.h"

static int failures = 0;
// Tolerances of the cache against the full forward, relative to the largest logit and
// absolute on the probabilities. fp32: summation order. bf16: both compute the same bf16
// products in another order; where that moves a value across a rounding boundary, one
// operand of a sum moves by u = 2^-8 relative and the sum by much less: u/8 (measured
// 1e-6 here), while a cache that skipped one of the roundings misses by u and more.
static double tol_logits = 2e-5, tol_att = 1e-5;
#define CHECK(cond, ...)                  \
    do {                                  \
        if (!(cond)) {                    \
            fprintf(stderr, "FAIL: ");    \
            fprintf(stderr, __VA_ARGS__); \
            fprintf(stderr, "\n");        \
            failures++;                   \
        }                                 \
    } while (0)

static double max_abs_diff(const float *a, const float *b, size_t n, double *scale) {
    double d = 0, s = 1;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > d) d = e;
        if (fabs(a[i]) > s) s = fabs(a[i]);
    }
    *scale = s;
    return d;
}

// Compares the cache's logits and its query row q with a full forward of ids[start..n).
static void compare_window(GPT2 *m, const KVCache *kv, int q, const int *ids, size_t start, size_t n, const char *what) {
    int T = (int)(n - start), L = m->config.n_layer, NH = m->config.n_head, V = m->config.vocab_size, BT = kv->T;
    gpt2_forward(m, ids + start, NULL, 1, T, 0, 0);
    double scale;
    double d = max_abs_diff(kv->logits, m->logits + (size_t)(T - 1) * V, (size_t)V, &scale);
    CHECK(d <= tol_logits * scale, "%s: logits differ by %g (scale %g) for window [%zu, %zu)", what, d, scale, start, n);
    for (int l = 0; l < L; l++)
        for (int h = 0; h < NH; h++) {
            const float *full = m->att + (((size_t)l * NH + h) * T + (T - 1)) * T;  // (L, 1, NH, T, T)
            const float *row = kv->att + (((size_t)l * NH + h) * BT + q) * BT;
            double s;
            double e = max_abs_diff(row, full, (size_t)T, &s);
            CHECK(e <= tol_att, "%s: attention row layer %d head %d differs by %g", what, l, h, e);
            for (int j = T; j < BT; j++) CHECK(row[j] == 0.0f, "%s: attention row not zero past the query", what);
        }
}

static void test_cache(Precision prec) {
    GPTConfig c = {.vocab_size = 67, .block_size = 12, .n_layer = 3, .n_head = 2, .n_embd = 16, .dropout = 0.0f};
    GPT2 m;
    gpt2_build(&m, &c);
    gpt2_init_weights(&m, 3);
    // larger weights than the init: peaky attention and logits that are far from uniform
    uint64_t key = rng_site_key(11, 0);
    for (size_t i = 0; i < m.num_params; i++) m.params[i] += 0.8f * (rng_uniform_at(key, i) - 0.5f);
    char err[256];
    if (!gpt2_set_precision(&m, prec, err, sizeof err)) gt_fail(GT_EXIT_RUNTIME, "%s", err);
    gpt2_params_changed(&m);
    gpt2_alloc_activations(&m, 1, c.block_size);
    enum { N = 30 };
    int ids[N];
    for (int i = 0; i < N; i++) ids[i] = (int)(rng_at(key, 1000000 + (uint64_t)i) % 67);

    Generator g;
    generator_start(&g, &m, ids, 5, 1);
    compare_window(&m, &g.kv, 4, ids, 0, 5, "prompt of 5");
    for (size_t n = 6; n <= N; n++) {
        generator_push(&g, ids[n - 1]);
        size_t start = n > 12 ? n - 12 : 0;
        CHECK(g.start == start, "window start %zu, expected %zu", g.start, start);
        char what[64];
        snprintf(what, sizeof what, "step %zu", n);
        compare_window(&m, &g.kv, g.kv.last_fed - 1, ids, start, n, what);
    }
    CHECK(g.slides == N - 12, "slides %lld, expected %d", g.slides, N - 12);
    // every query row of the prompt feed, not only the last
    generator_free(&g);
    generator_start(&g, &m, ids, 9, 1);
    for (int q = 0; q < 9; q++) {
        gpt2_forward(&m, ids, NULL, 1, 9, 0, 0);
        for (int lh = 0; lh < 6; lh++) {
            double s;
            double e = max_abs_diff(g.kv.att + ((size_t)lh * 12 + q) * 12, m.att + ((size_t)lh * 9 + q) * 9, 9, &s);
            CHECK(e <= tol_att, "prompt row %d (layer*head %d) differs by %g", q, lh, e);
        }
    }
    generator_free(&g);
    // a prompt longer than the block size keeps its last 12 tokens
    generator_start(&g, &m, ids, 20, 1);
    CHECK(g.start == 8, "long prompt: window start %zu, expected 8", g.start);
    compare_window(&m, &g.kv, 11, ids, 8, 20, "prompt of 20");
    generator_free(&g);
    // chunks: 3 then 4 then 1 tokens give the same cache as one feed of 8
    KVCache kv;
    kv_init(&kv, &m, 1);
    kv_forward(&kv, ids, 3);
    kv_forward(&kv, ids + 3, 4);
    kv_forward(&kv, ids + 7, 1);
    compare_window(&m, &kv, 0, ids, 0, 8, "chunked feed");
    kv_free(&kv);
    gpt2_free(&m);
}

static void test_sampling(void) {
    enum { V = 6 };
    float logits[V] = {0.0f, 1.0f, 2.5f, -1.0f, 0.5f, 2.0f};
    float probs[V];
    int order[V];
    Rng r;
    rng_seed(&r, 1);
    SampleParams greedy = {0.0f, 0, 1.0f}, k1 = {5.0f, 1, 1.0f}, p0 = {1.0f, 0, 1e-6f};
    for (int i = 0; i < 50; i++) {
        CHECK(sample_token(logits, V, &greedy, &r, probs, order) == 2, "greedy is not the argmax");
        CHECK(sample_token(logits, V, &k1, &r, probs, order) == 2, "top-k 1 is not the argmax");
        CHECK(sample_token(logits, V, &p0, &r, probs, order) == 2, "tiny top-p is not the argmax");
    }
    float tie[3] = {1.0f, 3.0f, 3.0f};
    CHECK(sample_token(tie, 3, &greedy, &r, probs, order) == 1, "greedy ties go to the lowest id");
    // frequencies against the softmax at temperature 0.7, and with top-k 2 and top-p 0.8
    const int draws = 60000;
    SampleParams ps[3] = {{0.7f, 0, 1.0f}, {1.0f, 2, 1.0f}, {1.0f, 0, 0.8f}};
    for (int s = 0; s < 3; s++) {
        double p[V], sum = 0;
        for (int i = 0; i < V; i++) sum += p[i] = exp(logits[i] / ps[s].temperature);
        for (int i = 0; i < V; i++) p[i] /= sum;
        if (s == 1) {  // ids 2 and 5 are the two likeliest
            double m = p[2] + p[5];
            for (int i = 0; i < V; i++) p[i] = (i == 2 || i == 5) ? p[i] / m : 0;
        }
        if (s == 2) {  // sorted: 2 (.47), 5 (.29), 1 (.10): .47+.29 < .8 so {2, 5, 1}
            double m = p[2] + p[5] + p[1];
            for (int i = 0; i < V; i++) p[i] = (i == 2 || i == 5 || i == 1) ? p[i] / m : 0;
        }
        int count[V] = {0};
        rng_seed(&r, 42 + s);
        for (int d = 0; d < draws; d++) count[sample_token(logits, V, &ps[s], &r, probs, order)]++;
        for (int i = 0; i < V; i++) {
            double f = (double)count[i] / draws, sd = sqrt(p[i] * (1 - p[i]) / draws);
            CHECK(fabs(f - p[i]) <= 5 * sd + 1e-9, "params %d: id %d drawn %.4f, expected %.4f", s, i, f, p[i]);
        }
    }
    // same seed, same draws
    int a[100], b[100];
    SampleParams t1 = {1.0f, 0, 1.0f};
    rng_seed(&r, 1337);
    for (int i = 0; i < 100; i++) a[i] = sample_token(logits, V, &t1, &r, probs, order);
    rng_seed(&r, 1337);
    for (int i = 0; i < 100; i++) b[i] = sample_token(logits, V, &t1, &r, probs, order);
    CHECK(!memcmp(a, b, sizeof a), "same seed gave different draws");
}

int main(void) {
    gt_set_progname("attn_kvcache_check");
    test_cache(PRECISION_FP32);
    char why[256];
    if (bf16_supported(why, sizeof why)) {
        const double u = 1.0 / 256;
        tol_logits = u / 8, tol_att = u / 8;
        test_cache(PRECISION_BF16);
    } else {
        printf("note: the bf16 cache checks are skipped: %s\n", why);
    }
    test_sampling();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("kv cache matches the full forward; sampler checks pass\n");
    return 0;
}
