// test_train_grads.c - the allreduced gradient over N ranks equals one process's gradient
// on the union of their batches (run under mpirun -np N).
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
    for (int mode = 0; mode < 4; mode++) {
        GradReducer red;
        reducer_init(&red, w->comm, m.grads, m.num_params, mode < 3 ? buckets[mode] : 0);
        gpt2_zero_grad(&m);
        GradReadyFn prog = N > 1 && mode != 2 ? reducer_ready : NULL;
        if (mode < 3) {
            fill_batch(in, tg, B, w->rank * B, T, c.vocab_size);
            gpt2_forward(&m, in, tg, B, T, 0, 0);
            m.progress = prog;
            m.progress_ctx = &red;
            gpt2_backward(&m, 1.0f, N > 1 ? reducer_ready : NULL, &red);
        } else {  // two micro-batches of B/2; only the last one reduces
            for (int micro = 0; micro < 2; micro++) {
                fill_batch(in, tg, B / 2, w->rank * B + micro * (B / 2), T, c.vocab_size);
                gpt2_forward(&m, in, tg, B / 2, T, 0, 0);
                m.progress = micro == 1 ? prog : NULL;
                m.progress_ctx = &red;
                gpt2_backward(&m, 0.5f, micro == 1 && N > 1 ? reducer_ready : NULL, &red);
            }
        }
        m.progress = NULL;
        reducer_finish(&red);
        // Gather rank 1..N-1's averaged gradients too: every rank must hold the same result.
        float *other = w->rank == 0 ? gt_malloc(m.num_params * sizeof(float), "other") : NULL;
        for (int src = 1; src < N; src++) {
            if (w->rank == src) MPI_CHECK(MPI_Send(m.grads, (int)m.num_params, MPI_FLOAT, 0, 9, w->comm));
            if (w->rank == 0) {
                MPI_CHECK(MPI_Recv(other, (int)m.num_params, MPI_FLOAT, src, 9, w->comm, MPI_STATUS_IGNORE));
                if (memcmp(other, m.grads, m.num_params * sizeof(float)) != 0) {
                    printf("FAIL mode %d: rank %d's averaged gradient differs bitwise from rank 0's\n", mode, src);
                    fails++;
                }
            }
        }
        free(other);
        if (w->rank == 0) {
            double gmax, d = compare(m.grads, want, m.num_params, &gmax);
            int ok = d <= 2e-5 * (gmax > 1e-3 ? gmax : 1e-3);
            printf("%s np=%d mode=%s: max |allreduced - union| = %.3g (max |g| = %.3g, %zu params, hidden %.0f%%)\n",
                   ok ? "ok  " : "FAIL", N,
                   mode == 0 ? "bucket 1MiB+progress" : mode == 1 ? "bucket 512B+progress" : mode == 2 ? "bucket 64KiB" : "grad-accum 2+progress",
                   d, gmax, m.num_params, 100 * reducer_hidden_share(&red));
            if (!ok) fails++;
        }
        reducer_free(&red);
    }
    MPI_CHECK(MPI_Bcast(&fails, 1, MPI_INT, 0, w->comm));
    gpt2_free(&m);
    if (w->rank == 0) gpt2_free(&ref);
    free(in);
    free(tg);
    comm_exit(fails ? 1 : 0);
}
