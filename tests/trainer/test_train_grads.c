// test_train_grads.c - the allreduced gradient over N ranks equals one process's gradient
// on the union of their batches (run under mpirun -np N), for both wire types.
//
// Besides the tolerance against the union's gradient, the exchange must be exactly what
// mpi/allreduce.h documents: the mean is (((g_0 + g_1) + g_2) + ...) * (1/N) in fp32, in rank
// order; with the bf16 wire every g_r is rounded to bf16 first and the mean rounded to bf16
// after. Rank 0 recomputes that from every rank's unreduced gradient and compares bitwise.
//
// Every rank builds the same model (same seed, dropout 0) and takes its B sequences of a
// global batch of N*B seeded sequences; gradients are averaged by the trainer's
// GradReducer through gpt2_backward's ready callback (buckets of several sizes, so the
// overlap path with many in-flight requests is exercised), and once more with two
// micro-batches (--grad-accum: callback on the last only). All modes but the 64 KiB one
// also hand the reducer to GPT2.progress (sub-layer ranges, then each block again whole:
// nothing may be reduced twice), as gpt-train does. Rank 0 then computes the
// gradient of the whole N*B batch alone and compares. Exit 0 on agreement, 1 otherwise.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allreduce.h"
#include "bf16.h"
#include "comm.h"
#include "error.h"
#include "gpt2.h"
#include "rng.h"

static void fill_batch(int *in, int *tg, int nseq, int first, int T, int V) {
    for (int s = 0; s < nseq; s++) {
        uint64_t key = rng_site_key(4242, (uint64_t)(first + s));
        for (int t = 0; t <= T; t++) {
            int id = (int)(rng_at(key, (uint64_t)t) % (uint64_t)V);
            if (t < T) in[s * T + t] = id;
            if (t > 0) tg[s * T + t - 1] = id;
        }
    }
}

static double compare(const float *a, const float *b, size_t n, double *gmax) {
    double d = 0, g = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > d || isnan(e)) d = e;
        if (fabs(b[i]) > g) g = fabs(b[i]);
    }
    *gmax = g;
    return d;
}

// One mode's forward and backward(s) on this rank's batch; red == NULL: no reduction.
static void run_mode(GPT2 *m, GradReducer *red, int mode, int *in, int *tg, int rank, int B, int T, int N) {
    const GPTConfig *c = &m->config;
    GradReadyFn ready = red && N > 1 ? reducer_ready : NULL;
    GradReadyFn prog = ready && mode != 2 ? reducer_ready : NULL;
    gpt2_zero_grad(m);
    if (mode < 3) {
        fill_batch(in, tg, B, rank * B, T, c->vocab_size);
        gpt2_forward(m, in, tg, B, T, 0, 0);
        m->progress = prog;
        m->progress_ctx = red;
        gpt2_backward(m, 1.0f, ready, red);
    } else {  // two micro-batches of B/2; only the last one reduces
        for (int micro = 0; micro < 2; micro++) {
            fill_batch(in, tg, B / 2, rank * B + micro * (B / 2), T, c->vocab_size);
            gpt2_forward(m, in, tg, B / 2, T, 0, 0);
            m->progress = micro == 1 ? prog : NULL;
            m->progress_ctx = red;
            gpt2_backward(m, 0.5f, micro == 1 ? ready : NULL, red);
        }
    }
    m->progress = NULL;
    if (red) reducer_finish(red);
}

// The documented mean of raw[0..N) (each n floats), into out. One rank exchanges nothing and
// rounds nothing.
static void expected_mean(float *out, float *const *raw, int N, size_t n, WireType wire) {
    const float scale = 1.0f / (float)N;
    if (N == 1) wire = WIRE_FP32;
    for (size_t i = 0; i < n; i++) {
        float s = 0;
        for (int k = 0; k < N; k++) {
            float g = wire == WIRE_BF16 ? f32_from_bf16(bf16_from_f32(raw[k][i])) : raw[k][i];
            s = k == 0 ? g : s + g;
        }
        out[i] = wire == WIRE_BF16 ? f32_from_bf16(bf16_from_f32(s * scale)) : s * scale;
    }
}

int main(int argc, char **argv) {
    gt_set_progname("test_train_grads");
    const Comm *w = comm_init(&argc, &argv);
    const int B = 4, T = 8, N = w->size;
    GPTConfig c = {97, T, 2, 2, 16, 0.0f};
    GPT2 m, ref;
    memset(&m, 0, sizeof m);
    memset(&ref, 0, sizeof ref);
    gpt2_build(&m, &c);
    gpt2_init_weights(&m, 7);
    gpt2_alloc_activations(&m, B, T);
    int *in = gt_malloc((size_t)N * B * T * sizeof(int), "inputs");
    int *tg = gt_malloc((size_t)N * B * T * sizeof(int), "targets");

    float *want = NULL;
    if (w->rank == 0) {  // the union of all ranks' batches, in one process
        gpt2_build(&ref, &c);
        memcpy(ref.params, m.params, m.num_params * sizeof(float));
        gpt2_alloc_activations(&ref, N * B, T);
        fill_batch(in, tg, N * B, 0, T, c.vocab_size);
        gpt2_zero_grad(&ref);
        gpt2_forward(&ref, in, tg, N * B, T, 0, 0);
        gpt2_backward(&ref, 1.0f, NULL, NULL);
        want = ref.grads;
    }

    int fails = 0;
    const size_t buckets[] = {0, 512, 64 * 1024};
    const size_t n = m.num_params;
    float *mine = gt_malloc(n * sizeof(float), "raw gradient");
    float **raw = gt_calloc((size_t)N, sizeof(float *), "raw gradients");
    float *exp = gt_malloc(n * sizeof(float), "expected");
    float *other = gt_malloc(n * sizeof(float), "other");
    for (int wire = 0; wire < 2; wire++)
        for (int mode = 0; mode < 4; mode++) {
            GradReducer red;
            reducer_init(&red, w->comm, m.grads, n, mode < 3 ? buckets[mode] : 0, (WireType)wire);
            run_mode(&m, NULL, mode, in, tg, w->rank, B, T, N);  // the unreduced gradient
            memcpy(mine, m.grads, n * sizeof(float));
            run_mode(&m, &red, mode, in, tg, w->rank, B, T, N);
            // Rank 0 gathers every rank's unreduced and averaged gradients.
            for (int src = 0; src < N; src++) {
                if (w->rank == src && src > 0) {
                    MPI_CHECK(MPI_Send(mine, (int)n, MPI_FLOAT, 0, 8, w->comm));
                    MPI_CHECK(MPI_Send(m.grads, (int)n, MPI_FLOAT, 0, 9, w->comm));
                }
                if (w->rank != 0) continue;
                if (!raw[src]) raw[src] = gt_malloc(n * sizeof(float), "raw gradient");
                if (src == 0) {
                    memcpy(raw[0], mine, n * sizeof(float));
                    continue;
                }
                MPI_CHECK(MPI_Recv(raw[src], (int)n, MPI_FLOAT, src, 8, w->comm, MPI_STATUS_IGNORE));
                MPI_CHECK(MPI_Recv(other, (int)n, MPI_FLOAT, src, 9, w->comm, MPI_STATUS_IGNORE));
                if (memcmp(other, m.grads, n * sizeof(float)) != 0) {
                    printf("FAIL wire %s mode %d: rank %d's averaged gradient differs bitwise from rank 0's\n",
                           wire ? "bf16" : "fp32", mode, src);
                    fails++;
                }
            }
            if (w->rank == 0) {
                const char *name = mode == 0   ? "bucket 1MiB+progress"
                                   : mode == 1 ? "bucket 512B+progress"
                                   : mode == 2 ? "bucket 64KiB"
                                               : "grad-accum 2+progress";
                expected_mean(exp, raw, N, n, (WireType)wire);
                size_t diff = 0;
                for (size_t i = 0; i < n; i++) diff += memcmp(&exp[i], &m.grads[i], sizeof(float)) != 0;
                printf("%s np=%d wire=%s mode=%s: %zu of %zu floats differ from the documented rank-order mean\n",
                       diff ? "FAIL" : "ok  ", N, wire ? "bf16" : "fp32", name, diff, n);
                if (diff) fails++;
                // bf16 keeps 8 significant bits: each term is off by up to 2^-9 of itself.
                double gmax, d = compare(m.grads, want, n, &gmax), tol = wire ? 1e-2 : 2e-5;
                int ok = d <= tol * (gmax > 1e-3 ? gmax : 1e-3);
                printf("%s np=%d wire=%s mode=%s: max |allreduced - union| = %.3g (max |g| = %.3g, %zu params)\n",
                       ok ? "ok  " : "FAIL", N, wire ? "bf16" : "fp32", name, d, gmax, n);
                if (!ok) fails++;
            }
            reducer_free(&red);
        }
    for (int k = 0; k < N; k++) free(raw[k]);
    free(raw);
    free(mine);
    free(exp);
    free(other);
    MPI_CHECK(MPI_Bcast(&fails, 1, MPI_INT, 0, w->comm));
    gpt2_free(&m);
    if (w->rank == 0) gpt2_free(&ref);
    free(in);
    free(tg);
    comm_exit(fails ? 1 : 0);
}
