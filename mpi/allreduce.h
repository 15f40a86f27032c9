// allreduce.h - gradient averaging over the ranks, overlapped with backward
// (docs/training.md, what a step does; docs/scaling.md).
//
// gpt2_backward reports ranges of final gradients (ln_f, blocks L-1..0, embeddings);
// reducer_ready() merges adjacent ranges and starts a bucket's exchange as soon as it holds
// bucket_bytes, so late layers travel while earlier ones still run their backward (DDP's
// scheme). reducer_finish() starts what is left (and any range backward did not report),
// and waits for all.
//
// A bucket's exchange is a reduce-scatter then an allgather, both direct: the bucket is cut
// into one segment per rank; every rank sends segment r of its gradient to rank r (phase
// 1); rank r adds the N contributions in rank order in fp32, scales by 1/N and sends the
// mean back to every rank (phase 2). Each rank sends 2 (N-1)/N x the bucket, as in a ring,
// in 2 (N-1) messages that travel at once. The order of the sum is fixed, so all ranks hold
// the same bits, and a run gives the same weights on any network and any placement.
//
// Wire type bf16 (--allreduce-dtype bf16) halves the bytes. Rounding to nearest even
// happens in exactly two places: each rank's gradient is rounded to bf16 before it leaves
// (the share it keeps for its own segment too), and the owner's fp32 mean is rounded to bf16
// before it is sent back (the owner keeps the rounded value too). The sum is fp32.
//
// The embeddings (reducer_embeddings): wte's gradient has two shares, the tied head's, final
// at the start of backward, and the token embeddings', made at its very end. With the split,
// backward adds the second into a scratch (V, C) instead (GPT2.emb_grad) and reports wte
// first, so its exchange travels behind backward instead of after it; at the end only the
// rows of tokens some rank's batch used (the union of the ranks' token sets, exchanged
// while backward runs) are exchanged as one more bucket, and their mean is added to wte's:
// wte's gradient is then mean(head shares) + mean(token shares), each summed in rank order.
//
// Open MPI's TCP transport moves bytes only inside MPI calls, so a progress thread polls
// the exchanges in flight every GT_REDUCE_POLL_US microseconds (default 500; 0: no thread,
// backward's callbacks poll instead) while the GEMMs run, and does phase 1's sums.
#ifndef GT_ALLREDUCE_H
#define GT_ALLREDUCE_H

#include <mpi.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { WIRE_FP32, WIRE_BF16 } WireType;

typedef struct {
    float *base;              // grads, or the packed rows of the embeddings' token share
    size_t off, cnt;          // the bucket: floats of base
    int phase;                // 1: contributions on their way, 2: means on their way, 0: done
    int left;                 // requests of the phase not complete yet
    int tag;                  // phase 1's; phase 2 uses tag + 1
    MPI_Request *reqs;        // 2 (N-1): receives from the other ranks in rank order, then sends
    void *in;                 // (N, segment) contributions to this rank's segment, wire type
    uint16_t *wire;           // bf16: this rank's bucket as sent, then the means as received
    size_t cap_in, cap_wire;  // elements allocated (slots keep their buffers from step to step)
} Bucket;

typedef struct {
    MPI_Comm comm;            // a duplicate: the exchange's messages meet nobody else's
    int size, rank;
    WireType wire;
    float *grads;
    size_t n;                 // floats in grads
    size_t bucket_min;        // floats per bucket before it is started
    size_t lo, hi;            // reported range not started yet
    size_t *seen;             // (2 nseen) ranges of grads reported this step, sorted, merged
    int nseen, capseen;
    Bucket *b;                // this step's buckets in start order
    int nb, capb, in_flight;
    int *idx;                 // (2 N) MPI_Testsome's output
    volatile unsigned char *arrived;  // (N) for the watchdog: 0 for the ranks this one waits for
    // the embeddings' split (reducer_embeddings)
    size_t wte_off;           // wte's offset in grads
    int vocab, n_embd;
    float *emb;               // (V, C) the token embeddings' share of this step, zero elsewhere
    unsigned char *tokens;    // (N, V/8 rounded up) each rank's token set as a bitmap
    MPI_Request *treq;        // 2 (N-1) the token sets' exchange
    int tokens_left;          // its requests not complete (-1: not started this step)
    int *rows;                // the union's token ids, ascending
    size_t nrows;
    float *packed;            // (nrows, C) this rank's token share of those rows, then their mean
    size_t cap_rows;
    int split;                // the split pays (the last union held at most half the vocabulary)
    // the progress thread
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int has_thread, quit, main_driving;
    long poll_ns;
    // measurements
    double blocking_s;        // one blocking exchange of all grads (calibrated at init)
    double wait_s;            // time blocked in the last reducer_finish
    double wait_total_s;      // sum over steps (of the exposed wait, see reducer_exposed)
    double hidden_floats;     // gradient floats whose exchange was complete when backward ended
    double bytes_total;       // bytes this rank sent, over all steps
    double rows_total;        // embedding rows exchanged after backward, over all steps
    long long steps;
} GradReducer;

// bucket_bytes: 0 means 1 MiB. Calibrates the blocking cost. Collective over comm, which
// must be comm_world()'s (a watched barrier on it comes first).
void reducer_init(GradReducer *r, MPI_Comm comm, float *grads, size_t n, size_t bucket_bytes, WireType wire);
// Makes the embeddings' split possible, for a model whose wte, (vocab, n_embd), starts at
// wte_off in grads (a no-op for one rank).
void reducer_embeddings(GradReducer *r, size_t wte_off, int vocab, int n_embd);
// Before the backward that reduces: the scratch to give it as GPT2.emb_grad, with this
// micro-batch's n input ids; or NULL (then backward keeps wte whole) for one rank, without
// reducer_embeddings, or while the split does not pay: when the last step's union of tokens
// covered more than half the vocabulary, rows would cost more than they hide. Every rank
// sees the same union, so all decide alike.
float *reducer_tokens(GradReducer *r, const int *ids, size_t n);
// A GradReadyFn for gpt2_backward (ctx = the GradReducer), also fit for GPT2.progress:
// only the parts of a range not reported before in this step are new, so a block reported
// again whole after its sub-layers is not reduced twice.
void reducer_ready(void *ctx, size_t offset, size_t count);
// Starts what is left, waits for every bucket (watched: "the gradient exchange"); grads
// then hold the mean over the ranks.
void reducer_finish(GradReducer *r);
// The last step's exposed exchange, agreed over the ranks: the shortest wait (that of the
// rank that finished backward last; the others also waited for it). Without this call a
// step counts this rank's own wait.
void reducer_exposed(GradReducer *r, double seconds);
// Share of one blocking exchange's time that the overlap hid, over all steps so far:
// 1 - (mean exposed wait) / blocking_s, within [0, 1] (1 for a single rank).
double reducer_hidden_share(const GradReducer *r);
// Share of the gradient whose exchange was complete when backward ended.
double reducer_done_share(const GradReducer *r);
// Mean exposed wait per step: the communication backward did not hide. Compare with blocking_s.
double reducer_exposed_ms(const GradReducer *r);
// Bytes this rank sent per step (measured: 2 (N-1)/N x gradient bytes on the wire, plus the
// embedding rows exchanged after backward).
double reducer_bytes_sent(const GradReducer *r);
void reducer_free(GradReducer *r);

#endif
