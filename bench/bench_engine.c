// bench_engine.c - one training-step benchmark of the C engine for bench/bench_engine.py.
//
//   bench_engine V T L H C B THREADS SECONDS [BLAS_THREADS [PRECISION]]
// Runs forward + backward + clip + AdamW steps on random tokens for about SECONDS (at least
// 2 steps after 1 warm-up step) with THREADS OpenMP threads and BLAS_THREADS (default
// THREADS) OpenBLAS threads, in PRECISION fp32 (default) or bf16, and prints one JSON line:
// ms/step, tokens/s, achieved GFLOP/s (3 x forward FLOPs per token), the matmul ceiling
// measured here with the same thread count (cblas_sgemm for fp32, gemm_bf16 for bf16), and
// peak RSS. bf16 on a CPU without bf16 instructions: exit 77 with the reason.
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "adamw.h"
#include "error.h"
#include "gemm_bf16.h"
#include "gpt2.h"
#include "rng.h"

// CPU seconds used by this process (all threads): unlike wall time, not inflated by other
// processes on a shared machine (for one thread it is the step's cost).
static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Best GFLOP/s of an (M,K) x (N,K)^T product over a few repetitions: cblas_sgemm, or
// gemm_bf16 on the same values rounded to bf16.
static double ceiling_gflops(Precision prec, int M, int N, int K) {
    float *a = calloc((size_t)M * K, sizeof(float)), *b = calloc((size_t)K * N, sizeof(float)),
          *c = calloc((size_t)M * N, sizeof(float));
    uint16_t *a16 = malloc((size_t)M * K * sizeof(uint16_t)), *b16 = malloc((size_t)K * N * sizeof(uint16_t));
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 5) * 0.1f;
    bf16_from_f32_n(a16, a, (size_t)M * K);
    bf16_from_f32_n(b16, b, (size_t)K * N);
    double best = 0.0;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        int reps = 0;
        do {
            if (prec == PRECISION_BF16) gemm_bf16(0, 1, M, N, K, 1.0f, a16, K, b16, K, 0.0f, c, N, NULL);
            else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
            reps++;
        } while (now() - t0 < 0.2);
        double g = 2.0 * M * N * K * reps / (now() - t0) / 1e9;
        if (g > best) best = g;
    }
    free(a);
    free(b);
    free(c);
    free(a16);
    free(b16);
    return best;
}

int main(int argc, char **argv) {
    gt_set_progname("bench_engine");
    if (argc < 9 || argc > 11)
        gt_fail_usage("usage: bench_engine V T L H C B THREADS SECONDS [BLAS_THREADS [fp32|bf16]]");
    GPTConfig c = {atoi(argv[1]), atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), 0.0f};
    int B = atoi(argv[6]), threads = atoi(argv[7]), T = c.block_size;
    double seconds = atof(argv[8]);
    int blas_threads = argc >= 10 ? atoi(argv[9]) : threads;
    Precision prec = PRECISION_FP32;
    if (argc == 11 && !precision_parse(argv[10], &prec)) gt_fail_usage("precision '%s': fp32 or bf16", argv[10]);
    omp_set_num_threads(threads);
    openblas_set_num_threads(blas_threads);

    GPT2 m;
    gpt2_build(&m, &c);
    gpt2_init_weights(&m, 1);
    char err[256];
    if (!gpt2_set_precision(&m, prec, err, sizeof err)) {
        fprintf(stderr, "bench_engine: %s\n", err);
        return 77;
    }
    gpt2_alloc_activations(&m, B, T);
    AdamW o;
    adamw_init(&o, m.num_params);
    AdamWConfig oc = {6e-4f, 0.9f, 0.95f, 1e-8f, 0.1f};
    int *x = malloc(sizeof(int) * B * T), *y = malloc(sizeof(int) * B * T);
    Rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < B * T; i++) {
        x[i] = (int)rng_below(&r, c.vocab_size);
        y[i] = (int)rng_below(&r, c.vocab_size);
    }
    double t_fwd = 0, t_bwd = 0, t_opt = 0, t0 = 0, c0 = 0;
    int steps = 0;
    for (int s = 0;; s++) {
        if (s == 1) {  // step 0 warms caches and page-faults the buffers in
            t0 = now();
            c0 = cpu_now();
        }
        double a = now();
        gpt2_forward(&m, x, y, B, T, 0, 0);
        double b = now();
        gpt2_zero_grad(&m);
        gpt2_backward(&m, 1.0f, NULL, NULL);
        double cc = now();
        // as gpt-train does it: the clip's scale applied inside AdamW's pass
        float clip = grad_clip_coef(grad_global_norm(m.grads, m.num_params), 1.0f);
        adamw_step_scaled(&o, &m, m.params, m.grads, clip, &oc);
        double d = now();
        if (s >= 1) {
            t_fwd += b - a;
            t_bwd += cc - b;
            t_opt += d - cc;
            steps++;
            if (steps >= 2 && now() - t0 > seconds) break;
        }
    }
    double elapsed = now() - t0, ms = elapsed / steps * 1e3, cpu_ms = (cpu_now() - c0) / steps * 1e3;
    double flops = 3.0 * gpt2_flops_per_token(&c, T) * B * T;
    // the ceiling: a square GEMM big enough to reach peak, and the model's own MLP shape
    // (BENCH_NO_CEILING=1 skips it, for profiling the steps alone)
    int ceiling = !getenv("BENCH_NO_CEILING");
    double peak = ceiling ? ceiling_gflops(prec, 1024, 1024, 1024) : 0.0;
    double mlp = ceiling ? ceiling_gflops(prec, B * T, 4 * c.n_embd, c.n_embd) : 0.0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"impl\": \"C\", \"precision\": \"%s\", \"isa\": \"%s\", \"blas_threads\": %d, \"threads\": %d, \"steps\": %d, \"ms_per_step\": %.3f, \"fwd_ms\": %.3f, \"bwd_ms\": %.3f, "
           "\"opt_ms\": %.3f, \"cpu_ms_per_step\": %.3f, \"tokens_per_s\": %.1f, \"gflops\": %.2f, \"sgemm_peak_gflops\": %.2f, "
           "\"sgemm_model_shape_gflops\": %.2f, \"params\": %zu, \"peak_rss_mb\": %.1f, \"loss\": %.4f}\n",
           precision_name(prec), prec == PRECISION_BF16 ? bf16_isa() : "fp32", blas_threads, threads, steps, ms, t_fwd / steps * 1e3, t_bwd / steps * 1e3, t_opt / steps * 1e3, cpu_ms, B * T / (ms / 1e3),
           flops / (ms / 1e3) / 1e9, peak, mlp, m.num_params, ru.ru_maxrss / 1024.0, m.mean_loss);
    adamw_free(&o);
    gpt2_free(&m);
    free(x);
    free(y);
    return 0;
}
