// bench_attn_cost.c - what `gpt-train --attn-every N` adds to a training step, measured in one
// process so that the load of a shared machine hits both sides alike.
//
// Reference experiment shape (the trainer's defaults): V=2000, T=16, L=5, NH=4, C=64,
// dropout 0.3, 16 sequences per rank (2 ranks x 16 = the reference batch of 32). One
// "step" here is forward + backward + AdamW on one rank's batch, without the allreduce, so
// the step is shorter than a real one and the slowdown printed is an upper bound.
// Interleaves K steps and K probe records (the loop's probe_forward: eval forward of the
// probe with B=1 and its per-token loss; then one HDF5 record, flushed) and reports the
// median and minimum wall times,
// and the slowdown at --attn-every 1 and 10: probe / (N * step).
//
//   bench_attn_cost [iterations=200] [out=/tmp/bench_attn_cost.h5] [float16=0] [probe_tokens=6]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adamw.h"
#include "attention_io.h"
#include "error.h"
#include "gpt2.h"
#include "h5util.h"
#include "loop.h"
#include "rng.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    gt_set_progname("bench_attn_cost");
    h5_quiet();
    int K = argc > 1 ? atoi(argv[1]) : 200;
    const char *out = argc > 2 ? argv[2] : "/tmp/bench_attn_cost.h5";
    int f16 = argc > 3 ? atoi(argv[3]) : 0;
    int P = argc > 4 ? atoi(argv[4]) : 6;  // " Hello, this is" is 6 tokens of the reference vocab
    if (P < 1 || P > 16) gt_fail_usage("probe_tokens must be 1..16");
    GPTConfig c = {.vocab_size = 2000, .block_size = 16, .n_layer = 5, .n_head = 4, .n_embd = 64, .dropout = 0.3f};
    const int B = 16, T = 16;
    GPT2 m;
    gpt2_build(&m, &c);
    gpt2_init_weights(&m, 1337);
    gpt2_alloc_activations(&m, B, T);
    AdamW opt;
    adamw_init(&opt, m.num_params);
    AdamWConfig oc = {1e-3f, 0.9f, 0.99f, 1e-8f, 0.01f};
    int *x = malloc(sizeof(int) * B * (T + 1));
    uint64_t key = rng_site_key(1, 2);
    for (int i = 0; i < B * (T + 1); i++) x[i] = (int)(rng_at(key, (uint64_t)i) % 2000);
    int32_t probe[16];
    for (int t = 0; t < P; t++) probe[t] = x[t];
    // a byte-level tokenizer is enough for the probe's labels
    Tokenizer tok;
    memset(&tok, 0, sizeof tok);
    tok.vocab_size = 256;
    tok.token_offsets = malloc(257 * sizeof(int64_t));
    tok.token_bytes = malloc(256);
    for (int i = 0; i < 256; i++) tok.token_bytes[i] = (uint8_t)i, tok.token_offsets[i + 1] = i + 1;
    for (int t = 0; t < P; t++) probe[t] %= 256;
    tok.token_offsets[0] = 0;
    unlink(out);
    AttnWriter *w = attn_writer_open(out, &c, 1, probe, P, &tok, f16, -1);
    int ids[16];
    for (int t = 0; t < P; t++) ids[t] = probe[t];
    float *token_loss = malloc(sizeof(float) * 16), *scratch = malloc(sizeof(float) * 16 * c.vocab_size);
    double *ts = malloc(sizeof(double) * K), *tp = malloc(sizeof(double) * K);
    for (int k = 0; k < K; k++) {
        double t0 = now();
        float loss = gpt2_forward(&m, x, x + 1, B, T, 1, (uint64_t)k);
        gpt2_zero_grad(&m);
        gpt2_backward(&m, 1.0f, NULL, NULL);
        adamw_step(&opt, &m, m.params, m.grads, &oc);
        double t1 = now();
        probe_forward(&m, ids, P, token_loss, scratch);
        attn_append(w, k + 1, loss, m.att, token_loss);
        double t2 = now();
        ts[k] = t1 - t0;
        tp[k] = t2 - t1;
    }
    attn_writer_close(w);
    qsort(ts, (size_t)K, sizeof(double), cmp_double);
    qsort(tp, (size_t)K, sizeof(double), cmp_double);
    double sm = ts[K / 2], pm = tp[K / 2];
    printf("probe of %d tokens, %s, %d iterations\n", P, f16 ? "float16" : "float32", K);
    printf("step (fwd+bwd+AdamW, B=16, T=16): median %.3f ms, min %.3f ms\n", 1e3 * sm, 1e3 * ts[0]);
    printf("probe record (eval fwd, token losses, HDF5 append + flush): median %.3f ms, min %.3f ms\n", 1e3 * pm, 1e3 * tp[0]);
    printf("slowdown --attn-every 1: %.2f%% (median), %.2f%% (min)\n", 100 * pm / sm, 100 * tp[0] / ts[0]);
    printf("slowdown --attn-every 10: %.2f%% (median), %.2f%% (min)\n", 10 * pm / sm, 10 * tp[0] / ts[0]);
    unlink(out);
    free(token_loss);
    free(scratch);
    adamw_free(&opt);
    gpt2_free(&m);
    return 0;
}
