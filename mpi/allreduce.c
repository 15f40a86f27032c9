// allreduce.c - see allreduce.h.
#include "allreduce.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

#define MAX_MPI_COUNT ((size_t)1 << 30)

static void start(GradReducer *r, size_t off, size_t cnt) {
    while (cnt > 0) {
        size_t c = cnt > MAX_MPI_COUNT ? MAX_MPI_COUNT : cnt;
        if (r->nreq == r->capreq) {
            r->capreq = r->capreq ? 2 * r->capreq : 64;
            r->reqs = gt_realloc(r->reqs, (size_t)r->capreq * sizeof *r->reqs, "allreduce requests");
            r->r_off = gt_realloc(r->r_off, (size_t)r->capreq * sizeof *r->r_off, "allreduce requests");
            r->r_cnt = gt_realloc(r->r_cnt, (size_t)r->capreq * sizeof *r->r_cnt, "allreduce requests");
        }
        MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, r->grads + off, (int)c, MPI_FLOAT, MPI_SUM, r->comm, &r->reqs[r->nreq]));
        r->r_off[r->nreq] = off;
        r->r_cnt[r->nreq] = c;
        r->nreq++;
        off += c;
        cnt -= c;
    }
}

static void flush_pending(GradReducer *r) {
    if (r->hi > r->lo) start(r, r->lo, r->hi - r->lo);
    r->lo = r->hi = 0;
}

void reducer_init(GradReducer *r, MPI_Comm comm, float *grads, size_t n, size_t bucket_bytes) {
    memset(r, 0, sizeof *r);
    r->comm = comm;
    MPI_CHECK(MPI_Comm_size(comm, &r->size));
    r->grads = grads;
    r->n = n;
    r->floor = n;
    r->bucket_min = (bucket_bytes ? bucket_bytes : (1u << 20)) / sizeof(float);
    if (r->size == 1) return;
    // The cost a blocking reduction of the whole gradient would add to each step: the
    // yardstick for how much of it the overlap hides. Best of 3 on a scratch buffer.
    float *scratch = gt_calloc(n, sizeof(float), "allreduce calibration");
    float *save = r->grads;
    r->grads = scratch;
    r->blocking_s = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        MPI_CHECK(MPI_Barrier(comm));
        double t0 = MPI_Wtime();
        start(r, 0, n);
        MPI_CHECK(MPI_Waitall(r->nreq, r->reqs, MPI_STATUSES_IGNORE));
        r->nreq = 0;
        double t = MPI_Wtime() - t0;
        if (t < r->blocking_s) r->blocking_s = t;
    }
    r->grads = save;
    free(scratch);
}

void reducer_ready(void *ctx, size_t offset, size_t count) {
    GradReducer *r = ctx;
    if (r->size == 1) return;
    // Only what lies below every range seen this step is new (ranges above the floor that
    // were never reported are reduced by reducer_finish).
    size_t end = offset + count < r->floor ? offset + count : r->floor;
    if (end > offset) {
        r->floor = offset;
        count = end - offset;
        if (r->hi > r->lo && offset + count == r->lo) r->lo = offset;  // backward walks down
        else {
            flush_pending(r);
            r->lo = offset;
            r->hi = offset + count;
        }
        if (r->hi - r->lo >= r->bucket_min) flush_pending(r);
    }
    // Open MPI progresses non-blocking collectives inside MPI calls: nudge the ones in flight.
    if (r->nreq > 0) {
        int done;
        MPI_CHECK(MPI_Testall(r->nreq, r->reqs, &done, MPI_STATUSES_IGNORE));
    }
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

void reducer_finish(GradReducer *r) {
    if (r->size == 1) return;
    double t0 = MPI_Wtime();
    // Backward is over: what has completed by now was reduced behind it.
    for (int i = 0; i < r->nreq; i++) {
        int done = 0;
        MPI_CHECK(MPI_Test(&r->reqs[i], &done, MPI_STATUS_IGNORE));
        if (done) r->hidden_floats += r->r_cnt[i];
    }
    flush_pending(r);
    // Ranges backward did not report (or no callback at all): reduce them now.
    int started = r->nreq;
    size_t *ranges = gt_malloc((size_t)(started + 1) * 2 * sizeof(size_t), "allreduce ranges");
    for (int i = 0; i < started; i++) {
        ranges[2 * i] = r->r_off[i];
        ranges[2 * i + 1] = r->r_cnt[i];
    }
    qsort(ranges, (size_t)started, 2 * sizeof(size_t), cmp_size);
    size_t at = 0;
    for (int i = 0; i < started; i++) {
        if (ranges[2 * i] > at) start(r, at, ranges[2 * i] - at);
        if (ranges[2 * i] + ranges[2 * i + 1] > at) at = ranges[2 * i] + ranges[2 * i + 1];
    }
    if (at < r->n) start(r, at, r->n - at);
    free(ranges);
    MPI_CHECK(MPI_Waitall(r->nreq, r->reqs, MPI_STATUSES_IGNORE));
    r->nreq = 0;
    r->floor = r->n;
    r->wait_s = MPI_Wtime() - t0;
    r->wait_total_s += r->wait_s;
    r->steps++;
    float scale = 1.0f / (float)r->size;
    for (size_t i = 0; i < r->n; i++) r->grads[i] *= scale;
}

double reducer_hidden_share(const GradReducer *r) {
    if (r->size == 1 || r->steps == 0) return 1.0;
    return (double)r->hidden_floats / ((double)r->steps * (double)r->n);
}

double reducer_exposed_ms(const GradReducer *r) {
    return r->steps ? 1000.0 * r->wait_total_s / (double)r->steps : 0.0;
}

double reducer_bytes_sent(const GradReducer *r) {
    return 2.0 * (r->size - 1) / r->size * (double)r->n * sizeof(float);
}

void reducer_free(GradReducer *r) {
    free(r->reqs);
    free(r->r_off);
    free(r->r_cnt);
    memset(r, 0, sizeof *r);
}
