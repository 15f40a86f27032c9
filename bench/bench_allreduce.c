// bench_allreduce.c - the gradient exchange's wire formats, side by side (docs/scaling.md):
//   mpi-fp32   Open MPI's MPI_Allreduce on floats (what gpt-train used before)
//   mpi-bf16   MPI_Allreduce on bf16 with a custom MPI_Op (uint16 pairs widened, added in fp32,
//              rounded back at every step of Open MPI's algorithm)
//   rsag-fp32  gpt-train's exchange (mpi/allreduce.c): direct reduce-scatter + allgather
//   rsag-bf16  the same with bf16 on the wire: rounded once going out, once coming back
// For each: the median time of a blocking exchange of N floats, the largest error against
// the exact (double) mean, relative to the largest |mean|, and whether every rank got the
// same bits. Under mpirun; run it on the emulated cluster too (tests/cluster/netns_cluster.sh).
//   mpirun -np 4 build/bench_allreduce [floats (1058816)] [reps (9)]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allreduce.h"
#include "bf16.h"
#include "comm.h"
#include "error.h"
#include "rng.h"

static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = bf16_from_f32(f32_from_bf16(a[i]) + f32_from_bf16(b[i]));
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    gt_set_progname("bench_allreduce");
    const Comm *w = comm_init(&argc, &argv);
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 1058816;  // the overlap shape's parameters
    int reps = argc > 2 ? atoi(argv[2]) : 9;
    float *g = gt_malloc(n * sizeof(float), "gradient"), *out = gt_malloc(n * sizeof(float), "result");
    uint16_t *h = gt_malloc(n * sizeof(uint16_t), "bf16");
    double *exact = gt_calloc(n, sizeof(double), "exact mean");
    // Gradient-like values: seeded, a spread of magnitudes, different on every rank.
    for (size_t i = 0; i < n; i++) {
        double u = (double)(rng_at(rng_site_key(99, (uint64_t)w->rank), i) >> 11) / 9007199254740992.0;
        g[i] = (float)((u - 0.5) * 1e-3 * (double)(1 + i % 7));
    }
    for (int r = 0; r < w->size; r++)  // the exact mean, from every rank's values
        for (size_t i = 0; i < n; i++) {
            double u = (double)(rng_at(rng_site_key(99, (uint64_t)r), i) >> 11) / 9007199254740992.0;
            exact[i] += (double)(float)((u - 0.5) * 1e-3 * (double)(1 + i % 7)) / w->size;
        }
    MPI_Op op;
    MPI_CHECK(MPI_Op_create(bf16_sum, 1, &op));
    const char *names[] = {"mpi-fp32", "mpi-bf16", "rsag-fp32", "rsag-bf16"};
    if (w->rank == 0) printf("%d ranks, %zu floats (%.2f MB fp32)\n", w->size, n, n * 4.0 / 1e6);
    for (int k = 0; k < 4; k++) {
        GradReducer red;
        if (k >= 2) reducer_init(&red, w->comm, out, n, 1u << 20, k == 3 ? WIRE_BF16 : WIRE_FP32);
        double *t = gt_malloc((size_t)reps * sizeof(double), "times");
        for (int rep = 0; rep < reps; rep++) {
            memcpy(out, g, n * sizeof(float));
            MPI_CHECK(MPI_Barrier(w->comm));
            double t0 = MPI_Wtime();
            if (k == 0) {
                MPI_CHECK(MPI_Allreduce(g, out, (int)n, MPI_FLOAT, MPI_SUM, w->comm));
                for (size_t i = 0; i < n; i++) out[i] /= (float)w->size;
            } else if (k == 1) {
                bf16_from_f32_n(h, g, n);
                MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, h, (int)n, MPI_UINT16_T, op, w->comm));
                for (size_t i = 0; i < n; i++) out[i] = f32_from_bf16(h[i]) / (float)w->size;
            } else {
                reducer_finish(&red);  // nothing reported: the whole gradient, blocking
            }
            t[rep] = MPI_Wtime() - t0;
        }
        qsort(t, (size_t)reps, sizeof(double), cmp_double);
        double err = 0, big = 0;
        for (size_t i = 0; i < n; i++) {
            double e = fabs((double)out[i] - exact[i]);
            if (e > err) err = e;
            if (fabs(exact[i]) > big) big = fabs(exact[i]);
        }
        // The same bits everywhere? A checksum's min and max over the ranks.
        uint64_t sum = 0, lo, hi;
        const uint32_t *u = (const uint32_t *)out;
        for (size_t i = 0; i < n; i++) sum = sum * 1099511628211ULL + u[i];
        MPI_CHECK(MPI_Allreduce(&sum, &lo, 1, MPI_UINT64_T, MPI_MIN, w->comm));
        MPI_CHECK(MPI_Allreduce(&sum, &hi, 1, MPI_UINT64_T, MPI_MAX, w->comm));
        if (w->rank == 0)
            printf("%-10s %8.2f ms (median of %d)  max error %.2e of max |mean|  ranks agree: %s\n", names[k],
                   1e3 * t[reps / 2], reps, err / big, lo == hi ? "yes" : "NO");
        free(t);
        if (k >= 2) reducer_free(&red);
    }
    MPI_Op_free(&op);
    free(g);
    free(out);
    free(h);
    free(exact);
    comm_exit(0);
}
