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
// nothing may be reduced twice), as gpt-train does; two modes split the embeddings as
// gpt-train does (wte reported first, the token rows exchanged after backward): then wte's
// documented mean is mean(head shares) + mean(token shares) on the rows of the ranks' tokens;
// the last mode runs the engine's bf16 matmuls (--precision bf16), which the exchange must
// combine with as it is: fp32 gradients in, either wire.
// Rank 0 then computes the gradient of the whole N*B batch alone and compares. Exit 0 on
// agreement, 1 otherwise.
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

typedef struct {
    const char *name;
    size_t bucket;  // bytes (0: 1 MiB)
    int progress, accum, split;
    int bf16_engine;  // --precision bf16's matmuls (last: skipped where the CPU has no bf16)
} Mode;

static const Mode modes[] = {
    {"bucket 1MiB+progress", 0, 1, 0, 0, 0},        {"bucket 512B+progress", 512, 1, 0, 0, 0},
    {"bucket 64KiB", 64 * 1024, 0, 0, 0, 0},        {"grad-accum 2+progress", 0, 1, 1, 0, 0},
    {"split embeddings+progress", 0, 1, 0, 1, 0},   {"split embeddings, grad-accum 2", 4096, 1, 1, 1, 0},
    {"engine bf16, split embeddings+progress", 0, 1, 0, 1, 1},
};

// One mode's forward and backward(s) on this rank's batch. red NULL: no reduction, and with
// the split, the token share goes to emb (V, C). The ids of the reducing micro-batch end in in.
static void run_mode(GPT2 *m, GradReducer *red, const Mode *md, float *emb, int *in, int *tg, int rank, int B, int T,
                     int N) {
    const GPTConfig *c = &m->config;
    GradReadyFn ready = red && N > 1 ? reducer_ready : NULL;
    const int micros = md->accum ? 2 : 1, nb = B / micros;
    gpt2_zero_grad(m);
    for (int micro = 0; micro < micros; micro++) {
        int last = micro == micros - 1;
        fill_batch(in, tg, nb, rank * B + micro * nb, T, c->vocab_size);
        gpt2_forward(m, in, tg, nb, T, 0, 0);
        m->progress = last && md->progress ? ready : NULL;
        m->progress_ctx = red;
        m->emb_grad = !last || !md->split ? NULL : red ? reducer_tokens(red, in, (size_t)nb * T) : emb;
        gpt2_backward(m, 1.0f / (float)micros, last ? ready : NULL, red);
    }
    m->progress = NULL;
    m->emb_grad = NULL;
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

// Sends n floats to rank 0 (from another rank) or receives them there.
static void to_root(const Comm *w, int src, const float *p, float **dst, size_t n, int tag) {
    if (w->rank == src && src > 0) MPI_CHECK(MPI_Send(p, (int)n, MPI_FLOAT, 0, tag, w->comm));
    if (w->rank != 0) return;
    if (!*dst) *dst = gt_malloc(n * sizeof(float), "gathered gradient");
    if (src == 0) memcpy(*dst, p, n * sizeof(float));
    else MPI_CHECK(MPI_Recv(*dst, (int)n, MPI_FLOAT, src, tag, w->comm, MPI_STATUS_IGNORE));
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
    const size_t n = m.num_params, VC = (size_t)c.vocab_size * (size_t)c.n_embd, wte = m.specs[0].offset;
    float *mine = gt_malloc(n * sizeof(float), "raw gradient");
    float *emb = gt_calloc(VC, sizeof(float), "token share");
    float **raw = gt_calloc((size_t)N, sizeof(float *), "raw gradients");
    float **raw_emb = gt_calloc((size_t)N, sizeof(float *), "raw token shares");
    float *exp = gt_malloc(n * sizeof(float), "expected"), *exp_emb = gt_malloc(VC * sizeof(float), "expected");
    float *other = NULL;
    unsigned char *used = gt_malloc((size_t)c.vocab_size, "token union");
    const int n_modes = (int)(sizeof modes / sizeof modes[0]);
    for (int mi = 0; mi < n_modes; mi++)
        for (int wire = 0; wire < 2; wire++) {
            const Mode *md = &modes[mi];
            char why[256];
            if (md->bf16_engine && m.precision != PRECISION_BF16 && !gpt2_set_precision(&m, PRECISION_BF16, why, sizeof why)) {
                if (w->rank == 0) printf("skip %s: %s\n", md->name, why);
                break;
            }
            GradReducer red;
            reducer_init(&red, w->comm, m.grads, n, md->bucket, (WireType)wire);
            if (md->split) reducer_embeddings(&red, wte, c.vocab_size, c.n_embd);
            memset(emb, 0, VC * sizeof(float));
            // The unreduced gradient (one rank never splits: the reducer has nothing to exchange).
            run_mode(&m, NULL, md, N > 1 ? emb : NULL, in, tg, w->rank, B, T, N);
            memcpy(mine, m.grads, n * sizeof(float));
            run_mode(&m, &red, md, NULL, in, tg, w->rank, B, T, N);
            // Rank 0 gathers every rank's unreduced gradient (and token share) and averaged one.
            for (int src = 0; src < N; src++) {
                to_root(w, src, mine, &raw[src], n, 8);
                if (md->split) to_root(w, src, emb, &raw_emb[src], VC, 10);
                to_root(w, src, m.grads, &other, n, 9);
                if (w->rank == 0 && memcmp(other, m.grads, n * sizeof(float)) != 0) {
                    printf("FAIL wire %s mode %s: rank %d's averaged gradient differs bitwise from rank 0's\n",
                           wire ? "bf16" : "fp32", md->name, src);
                    fails++;
                }
            }
            if (w->rank == 0) {
                expected_mean(exp, raw, N, n, (WireType)wire);
                if (md->split && N > 1) {  // + the mean token share on the rows of the ranks' tokens
                    expected_mean(exp_emb, raw_emb, N, VC, (WireType)wire);
                    memset(used, 0, (size_t)c.vocab_size);
                    const int nb = md->accum ? B / 2 : B;
                    for (int r = 0; r < N; r++) {
                        fill_batch(in, tg, nb, r * B + (md->accum ? nb : 0), T, c.vocab_size);
                        for (int i = 0; i < nb * T; i++) used[in[i]] = 1;
                    }
                    for (int v = 0; v < c.vocab_size; v++)
                        if (used[v])
                            for (int k = 0; k < c.n_embd; k++)
                                exp[wte + (size_t)v * c.n_embd + k] += exp_emb[(size_t)v * c.n_embd + k];
                }
                size_t diff = 0;
                for (size_t i = 0; i < n; i++) diff += memcmp(&exp[i], &m.grads[i], sizeof(float)) != 0;
                printf("%s np=%d wire=%s mode=%s: %zu of %zu floats differ from the documented rank-order mean\n",
                       diff ? "FAIL" : "ok  ", N, wire ? "bf16" : "fp32", md->name, diff, n);
                if (diff) fails++;
                // bf16 keeps 8 significant bits: each term is off by up to 2^-9 of itself; the
                // bf16 engine's matmuls round their inputs too (docs/engine.md).
                double gmax, d = compare(m.grads, want, n, &gmax), tol = md->bf16_engine ? 5e-2 : wire ? 1e-2 : 2e-5;
                int ok = d <= tol * (gmax > 1e-3 ? gmax : 1e-3);
                printf("%s np=%d wire=%s mode=%s: max |allreduced - union| = %.3g (max |g| = %.3g, %zu params)\n",
                       ok ? "ok  " : "FAIL", N, wire ? "bf16" : "fp32", md->name, d, gmax, n);
                if (!ok) fails++;
            }
            reducer_free(&red);
        }
    for (int k = 0; k < N; k++) {
        free(raw[k]);
        free(raw_emb[k]);
    }
    free(raw);
    free(raw_emb);
    free(mine);
    free(emb);
    free(exp);
    free(exp_emb);
    free(other);
    free(used);
    MPI_CHECK(MPI_Bcast(&fails, 1, MPI_INT, 0, w->comm));
    gpt2_free(&m);
    if (w->rank == 0) gpt2_free(&ref);
    free(in);
    free(tg);
    comm_exit(fails ? 1 : 0);
}
