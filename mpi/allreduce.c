// allreduce.c - see allreduce.h.
#include "allreduce.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bf16.h"
#include "comm.h"
#include "error.h"
#include "watchdog.h"

// Started ranges are cut to at most this many floats (MPI counts are int).
#define BUCKET_MAX ((size_t)1 << 26)
// Buckets use tags below 32000 (MPI guarantees tags up to 32767); the token sets this one.
#define TAG_TOKENS 32001

static size_t seg_lo(const GradReducer *r, const Bucket *b, int rank) {
    return b->cnt * (size_t)rank / (size_t)r->size;
}
static size_t seg_len(const GradReducer *r, const Bucket *b, int rank) {
    return seg_lo(r, b, rank + 1) - seg_lo(r, b, rank);
}
static size_t wire_size(const GradReducer *r) { return r->wire == WIRE_BF16 ? 2 : 4; }
static MPI_Datatype wire_type(const GradReducer *r) { return r->wire == WIRE_BF16 ? MPI_UINT16_T : MPI_FLOAT; }
// The other ranks in rank order: request j talks to peer(j).
static int peer(const GradReducer *r, int j) { return j < r->rank ? j : j + 1; }

static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    *cap = need;
    return gt_realloc(p, need * elem, "gradient exchange buffers");
}

// Phase 1: segment p of this rank's bucket to rank p; receive the others' shares of ours.
static void post_contributions(GradReducer *r, Bucket *b) {
    const int N = r->size, me = r->rank;
    const size_t w = wire_size(r), mine = seg_len(r, b, me);
    const float *g = b->base + b->off;
    const char *src = (const char *)g;
    if (r->wire == WIRE_BF16) {
        b->wire = grow(b->wire, &b->cap_wire, b->cnt, sizeof(uint16_t));
        bf16_from_f32_n(b->wire, g, b->cnt);  // rounding 1 of 2: what leaves this rank
        src = (const char *)b->wire;
    }
    b->in = grow(b->in, &b->cap_in, (size_t)N * mine, w);
    for (int j = 0; j < N - 1; j++)
        MPI_CHECK(MPI_Irecv((char *)b->in + (size_t)peer(r, j) * mine * w, (int)mine, wire_type(r), peer(r, j), b->tag,
                            r->comm, &b->reqs[j]));
    for (int j = 0; j < N - 1; j++) {
        int p = peer(r, j);
        MPI_CHECK(MPI_Isend(src + seg_lo(r, b, p) * w, (int)seg_len(r, b, p), wire_type(r), p, b->tag, r->comm,
                            &b->reqs[N - 1 + j]));
        r->bytes_total += (double)(seg_len(r, b, p) * w);
    }
    b->phase = 1;
    b->left = 2 * (N - 1);
}

// Phase 1 done: the mean of this rank's segment, summed in rank order in fp32; then phase 2
// sends it to every rank and receives theirs.
static void post_means(GradReducer *r, Bucket *b) {
    const int N = r->size, me = r->rank;
    const size_t lo = seg_lo(r, b, me), len = seg_len(r, b, me), w = wire_size(r);
    const float scale = 1.0f / (float)N;
    float *g = b->base + b->off + lo;
    if (r->wire == WIRE_FP32) {
        float *in = b->in;
        memcpy(in + (size_t)me * len, g, len * sizeof(float));  // this rank's share in its place
        memcpy(g, in, len * sizeof(float));
        for (int k = 1; k < N; k++)
            for (size_t i = 0; i < len; i++) g[i] += in[(size_t)k * len + i];
        for (size_t i = 0; i < len; i++) g[i] *= scale;
    } else {
        const uint16_t *in = b->in;
        uint16_t *own = b->wire + lo;  // this rank's share, as rounded for sending
        for (int k = 0; k < N; k++) {
            const uint16_t *c = k == me ? own : in + (size_t)k * len;
            if (k == 0) f32_from_bf16_n(g, c, len);
            else
                for (size_t i = 0; i < len; i++) g[i] += f32_from_bf16(c[i]);
        }
        for (size_t i = 0; i < len; i++) {
            own[i] = bf16_from_f32(g[i] * scale);  // rounding 2 of 2: the mean every rank gets
            g[i] = f32_from_bf16(own[i]);
        }
    }
    char *dst = r->wire == WIRE_BF16 ? (char *)b->wire : (char *)(b->base + b->off);
    for (int j = 0; j < N - 1; j++) {
        int p = peer(r, j);
        MPI_CHECK(MPI_Irecv(dst + seg_lo(r, b, p) * w, (int)seg_len(r, b, p), wire_type(r), p, b->tag + 1, r->comm,
                            &b->reqs[j]));
    }
    for (int j = 0; j < N - 1; j++) {
        MPI_CHECK(MPI_Isend(dst + lo * w, (int)len, wire_type(r), peer(r, j), b->tag + 1, r->comm, &b->reqs[N - 1 + j]));
        r->bytes_total += (double)(len * w);
    }
    b->phase = 2;
    b->left = 2 * (N - 1);
}

static void unpack_means(GradReducer *r, Bucket *b) {
    if (r->wire == WIRE_BF16)
        for (int j = 0; j < r->size - 1; j++) {
            int p = peer(r, j);
            size_t lo = seg_lo(r, b, p);
            f32_from_bf16_n(b->base + b->off + lo, b->wire + lo, seg_len(r, b, p));
        }
    b->phase = 0;
    r->in_flight--;
}

// Whom this rank waits for, for the watchdog's message. Only phase 1 (and the token sets)
// depend on a rank alone (its backward reaching the bucket): the ranks whose contributions
// have not come are the late ones; a missing mean (phase 2) may only mean its owner waits for
// them. So: the ranks owing a contribution; if none, those owing a mean; if none, those not
// taking ours.
static void note_arrivals(GradReducer *r) {
    const int N = r->size;
    for (int level = 0; level < 3; level++) {
        int any = 0;
        for (int p = 0; p < N; p++) r->arrived[p] = 1;
        for (int i = 0; i < r->nb; i++) {
            const Bucket *b = &r->b[i];
            if (b->phase == 0 || (level < 2 && b->phase != level + 1)) continue;
            for (int j = 0; j < N - 1; j++)
                if (b->reqs[level < 2 ? j : N - 1 + j] != MPI_REQUEST_NULL) {
                    r->arrived[peer(r, j)] = 0;
                    any = 1;
                }
        }
        if (level == 0 && r->tokens_left > 0)
            for (int j = 0; j < N - 1; j++)
                if (r->treq[j] != MPI_REQUEST_NULL) {
                    r->arrived[peer(r, j)] = 0;
                    any = 1;
                }
        if (any) return;
    }
}

// Moves every bucket in flight as far as it goes now (under r->mu); notes arrivals.
static void drive(GradReducer *r) {
    const int nreq = 2 * (r->size - 1);
    int moved = 0;
    for (int i = 0; i < r->nb; i++) {
        Bucket *b = &r->b[i];
        while (b->phase != 0) {
            int got = 0;
            MPI_CHECK(MPI_Testsome(nreq, b->reqs, &got, r->idx, MPI_STATUSES_IGNORE));
            if (got == MPI_UNDEFINED || got == 0) break;
            moved = 1;
            b->left -= got;
            if (b->left > 0) break;
            if (b->phase == 1) post_means(r, b);
            else unpack_means(r, b);
        }
    }
    if (r->tokens_left > 0) {
        int got = 0;
        MPI_CHECK(MPI_Testsome(nreq, r->treq, &got, r->idx, MPI_STATUSES_IGNORE));
        if (got != MPI_UNDEFINED && got > 0) {
            moved = 1;
            r->tokens_left -= got;
            if (r->tokens_left == 0) r->in_flight--;
        }
    }
    note_arrivals(r);
    if (moved) wd_progress();
}

static void start(GradReducer *r, float *base, size_t off, size_t cnt) {
    while (cnt > 0) {
        size_t c = cnt > BUCKET_MAX ? BUCKET_MAX : cnt;
        if (r->nb == r->capb) {
            int cap = r->capb ? 2 * r->capb : 64;
            r->b = gt_realloc(r->b, (size_t)cap * sizeof *r->b, "gradient exchange buckets");
            memset(r->b + r->capb, 0, (size_t)(cap - r->capb) * sizeof *r->b);
            for (int i = r->capb; i < cap; i++)
                r->b[i].reqs = gt_malloc(2 * (size_t)r->size * sizeof(MPI_Request), "gradient exchange requests");
            r->capb = cap;
        }
        Bucket *b = &r->b[r->nb];
        b->base = base;
        b->off = off;
        b->cnt = c;
        b->tag = 2 * (r->nb % 16000);
        r->nb++;
        r->in_flight++;
        post_contributions(r, b);
        off += c;
        cnt -= c;
    }
    pthread_cond_signal(&r->cv);
}

static void flush_pending(GradReducer *r) {
    if (r->hi > r->lo) start(r, r->grads, r->lo, r->hi - r->lo);
    r->lo = r->hi = 0;
}

// Adds [lo, hi) to the ranges reported this step (sorted, merged).
static void mark_seen(GradReducer *r, size_t lo, size_t hi) {
    if (r->nseen == r->capseen) {
        r->capseen = r->capseen ? 2 * r->capseen : 32;
        r->seen = gt_realloc(r->seen, 2 * (size_t)r->capseen * sizeof(size_t), "gradient exchange ranges");
    }
    int i = 0;
    while (i < r->nseen && r->seen[2 * i] < lo) i++;
    memmove(r->seen + 2 * i + 2, r->seen + 2 * i, 2 * (size_t)(r->nseen - i) * sizeof(size_t));
    r->seen[2 * i] = lo;
    r->seen[2 * i + 1] = hi;
    r->nseen++;
    int k = 0;  // merge touching neighbours
    for (int j = 1; j < r->nseen; j++) {
        if (r->seen[2 * j] <= r->seen[2 * k + 1]) {
            if (r->seen[2 * j + 1] > r->seen[2 * k + 1]) r->seen[2 * k + 1] = r->seen[2 * j + 1];
        } else {
            k++;
            r->seen[2 * k] = r->seen[2 * j];
            r->seen[2 * k + 1] = r->seen[2 * j + 1];
        }
    }
    r->nseen = k + 1;
}

// The highest part of [lo, hi) not reported yet, into *plo, *phi; 0 when there is none.
static int highest_unseen(const GradReducer *r, size_t lo, size_t hi, size_t *plo, size_t *phi) {
    for (int i = r->nseen - 1; i >= 0 && hi > lo; i--) {
        size_t a = r->seen[2 * i], b = r->seen[2 * i + 1];
        if (a >= hi) continue;
        if (b < hi) break;  // [b, hi) is free
        hi = a;             // [a, hi) is covered
    }
    if (hi <= lo) return 0;
    size_t from = lo;
    for (int i = 0; i < r->nseen; i++)  // the free stretch ends at hi: where does it begin?
        if (r->seen[2 * i + 1] <= hi && r->seen[2 * i + 1] > from) from = r->seen[2 * i + 1];
    *plo = from;
    *phi = hi;
    return 1;
}

static void *progress_thread(void *arg) {
    GradReducer *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->quit) {
        if (r->in_flight == 0 || r->main_driving) {
            pthread_cond_wait(&r->cv, &r->mu);
            continue;
        }
        drive(r);
        pthread_mutex_unlock(&r->mu);
        nanosleep(&(struct timespec){0, r->poll_ns}, NULL);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

// Under r->mu, by the main thread: drives the exchanges until *left (a count drive() lowers)
// is 0, giving the CPU away between polls.
static void drive_until_done(GradReducer *r, const int *left) {
    r->main_driving = 1;
    double t0 = MPI_Wtime();
    while (*left > 0) {
        drive(r);
        if (*left <= 0) break;
        pthread_mutex_unlock(&r->mu);
        comm_idle(t0);
        pthread_mutex_lock(&r->mu);
    }
    r->main_driving = 0;
}

// Everything to completion; the step's buckets are done with.
static void drive_all(GradReducer *r) {
    drive_until_done(r, &r->in_flight);
    r->nb = 0;
}

void reducer_init(GradReducer *r, MPI_Comm comm, float *grads, size_t n, size_t bucket_bytes, WireType wire) {
    memset(r, 0, sizeof *r);
    comm_allgather(NULL, NULL, 0, "start-up");  // a watched barrier: MPI_Comm_dup blocks unwatched
    MPI_CHECK(MPI_Comm_dup(comm, &r->comm));
    MPI_CHECK(MPI_Comm_set_errhandler(r->comm, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_size(r->comm, &r->size));
    MPI_CHECK(MPI_Comm_rank(r->comm, &r->rank));
    r->wire = wire;
    r->grads = grads;
    r->n = n;
    r->tokens_left = -1;
    r->bucket_min = (bucket_bytes ? bucket_bytes : (1u << 20)) / sizeof(float);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (r->size == 1) return;
    r->idx = gt_malloc(2 * (size_t)r->size * sizeof(int), "gradient exchange");
    r->arrived = gt_malloc((size_t)r->size, "gradient exchange");
    const char *poll = getenv("GT_REDUCE_POLL_US");
    long us = poll && *poll ? atol(poll) : 500;
    int level = MPI_THREAD_SINGLE;
    MPI_CHECK(MPI_Query_thread(&level));
    if (us > 0 && level == MPI_THREAD_MULTIPLE) {
        r->poll_ns = (us > 999999 ? 999999 : us) * 1000;
        r->has_thread = pthread_create(&r->thread, NULL, progress_thread, r) == 0;
    }
    // The cost a blocking exchange of the whole gradient would add to each step: the
    // yardstick for how much of it the overlap hides. Best of 3 on a scratch buffer.
    float *scratch = gt_calloc(n, sizeof(float), "gradient exchange calibration");
    r->blocking_s = 1e30;
    pthread_mutex_lock(&r->mu);
    for (int rep = 0; rep < 3; rep++) {
        pthread_mutex_unlock(&r->mu);
        comm_allgather(NULL, NULL, 0, "the gradient exchange's calibration");
        pthread_mutex_lock(&r->mu);
        double t0 = MPI_Wtime();
        for (size_t off = 0; off < n; off += r->bucket_min)
            start(r, scratch, off, n - off < r->bucket_min ? n - off : r->bucket_min);
        wd_wait_begin("the gradient exchange's calibration", r->arrived);
        drive_all(r);
        wd_wait_end();
        double t = MPI_Wtime() - t0;
        if (t < r->blocking_s) r->blocking_s = t;
    }
    r->bytes_total = 0;
    pthread_mutex_unlock(&r->mu);
    free(scratch);
}

void reducer_embeddings(GradReducer *r, size_t wte_off, int vocab, int n_embd) {
    if (r->size == 1) return;
    r->wte_off = wte_off;
    r->vocab = vocab;
    r->n_embd = n_embd;
    r->split = 1;
    r->emb = gt_calloc((size_t)vocab * (size_t)n_embd, sizeof(float), "token embeddings' gradient");
    r->tokens = gt_calloc((size_t)r->size, ((size_t)vocab + 7) / 8, "token sets");
    r->treq = gt_malloc(2 * (size_t)r->size * sizeof(MPI_Request), "token sets");
    r->rows = gt_malloc((size_t)vocab * sizeof(int), "token sets");
}

float *reducer_tokens(GradReducer *r, const int *ids, size_t n) {
    if (r->size == 1 || !r->emb || !r->split) return NULL;
    const int N = r->size;
    const size_t vb = ((size_t)r->vocab + 7) / 8;
    pthread_mutex_lock(&r->mu);
    unsigned char *mine = r->tokens + (size_t)r->rank * vb;
    memset(mine, 0, vb);
    for (size_t i = 0; i < n; i++) mine[ids[i] >> 3] |= (unsigned char)(1u << (ids[i] & 7));
    for (int j = 0; j < N - 1; j++)
        MPI_CHECK(MPI_Irecv(r->tokens + (size_t)peer(r, j) * vb, (int)vb, MPI_BYTE, peer(r, j), TAG_TOKENS, r->comm,
                            &r->treq[j]));
    for (int j = 0; j < N - 1; j++)
        MPI_CHECK(MPI_Isend(mine, (int)vb, MPI_BYTE, peer(r, j), TAG_TOKENS, r->comm, &r->treq[N - 1 + j]));
    r->bytes_total += (double)((size_t)(N - 1) * vb);
    r->tokens_left = 2 * (N - 1);
    r->in_flight++;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return r->emb;
}

void reducer_ready(void *ctx, size_t offset, size_t count) {
    GradReducer *r = ctx;
    if (r->size == 1) return;
    pthread_mutex_lock(&r->mu);
    size_t lo, hi;
    while (highest_unseen(r, offset, offset + count, &lo, &hi)) {
        mark_seen(r, lo, hi);
        if (r->hi > r->lo && hi == r->lo) r->lo = lo;  // backward walks down
        else {
            flush_pending(r);
            r->lo = lo;
            r->hi = hi;
        }
        if (r->hi - r->lo >= r->bucket_min) flush_pending(r);
    }
    if (r->in_flight > 0) drive(r);  // between sub-layers: a free poll
    pthread_mutex_unlock(&r->mu);
}

// The embeddings' token share, after backward: the union of the ranks' token sets (ascending
// ids, the same on every rank), this rank's rows of it packed, and their exchange started.
static void start_token_rows(GradReducer *r) {
    const int N = r->size, C = r->n_embd;
    const size_t vb = ((size_t)r->vocab + 7) / 8;
    drive_until_done(r, &r->tokens_left);
    size_t nrows = 0;
    for (int v = 0; v < r->vocab; v++)
        for (int k = 0; k < N; k++)
            if (r->tokens[(size_t)k * vb + ((size_t)v >> 3)] & (1u << (v & 7))) {
                r->rows[nrows++] = v;
                break;
            }
    r->packed = grow(r->packed, &r->cap_rows, nrows * (size_t)C, sizeof(float));
    for (size_t j = 0; j < nrows; j++)
        memcpy(r->packed + j * (size_t)C, r->emb + (size_t)r->rows[j] * (size_t)C, (size_t)C * sizeof(float));
    r->rows_total += (double)nrows;
    r->nrows = nrows;
    r->split = 2 * nrows <= (size_t)r->vocab;
    if (nrows) start(r, r->packed, 0, nrows * (size_t)C);
}

// Their mean added to wte's, and the scratch's rows zeroed for the next step.
static void add_token_rows(GradReducer *r) {
    const size_t C = (size_t)r->n_embd;
    for (size_t j = 0; j < r->nrows; j++) {
        float *g = r->grads + r->wte_off + (size_t)r->rows[j] * C, *e = r->emb + (size_t)r->rows[j] * C;
        const float *mean = r->packed + j * C;
        for (size_t c = 0; c < C; c++) g[c] += mean[c];
        memset(e, 0, C * sizeof(float));
    }
    r->tokens_left = -1;
}

void reducer_finish(GradReducer *r) {
    if (r->size == 1) return;
    pthread_mutex_lock(&r->mu);
    double t0 = MPI_Wtime();
    wd_wait_begin("the gradient exchange", r->arrived);
    // Backward is over: what has completed by now was exchanged behind it.
    drive(r);
    for (int i = 0; i < r->nb; i++)
        if (r->b[i].phase == 0 && r->b[i].base == r->grads) r->hidden_floats += (double)r->b[i].cnt;
    flush_pending(r);
    // Ranges backward did not report (or no callback at all): exchange them now.
    size_t lo, hi;
    while (highest_unseen(r, 0, r->n, &lo, &hi)) {
        mark_seen(r, lo, hi);
        start(r, r->grads, lo, hi - lo);
    }
    int rows = r->tokens_left >= 0;
    if (rows) start_token_rows(r);
    drive_all(r);
    if (rows) add_token_rows(r);
    wd_wait_end();
    r->nseen = 0;
    r->wait_s = MPI_Wtime() - t0;
    r->wait_total_s += r->wait_s;
    r->steps++;
    pthread_mutex_unlock(&r->mu);
}

void reducer_exposed(GradReducer *r, double seconds) {
    if (r->size == 1 || r->steps == 0) return;
    r->wait_total_s += seconds - r->wait_s;
    r->wait_s = seconds;
}

double reducer_hidden_share(const GradReducer *r) {
    if (r->size == 1 || r->steps == 0) return 1.0;
    double h = 1.0 - r->wait_total_s / (double)r->steps / r->blocking_s;
    return h < 0 ? 0 : h > 1 ? 1 : h;
}

double reducer_done_share(const GradReducer *r) {
    if (r->size == 1 || r->steps == 0) return 1.0;
    return r->hidden_floats / ((double)r->steps * (double)r->n);
}

double reducer_exposed_ms(const GradReducer *r) {
    return r->steps ? 1000.0 * r->wait_total_s / (double)r->steps : 0.0;
}

double reducer_bytes_sent(const GradReducer *r) {
    if (r->steps) return r->bytes_total / (double)r->steps;
    return 2.0 * (r->size - 1) / r->size * (double)r->n * (double)wire_size(r);
}

void reducer_free(GradReducer *r) {
    if (r->has_thread) {
        pthread_mutex_lock(&r->mu);
        r->quit = 1;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    for (int i = 0; i < r->capb; i++) {
        free(r->b[i].reqs);
        free(r->b[i].in);
        free(r->b[i].wire);
    }
    free(r->b);
    free(r->seen);
    free(r->idx);
    free((void *)r->arrived);
    free(r->emb);
    free(r->tokens);
    free(r->treq);
    free(r->rows);
    free(r->packed);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    if (r->comm != MPI_COMM_NULL) MPI_Comm_free(&r->comm);
    memset(r, 0, sizeof *r);
}
