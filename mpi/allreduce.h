// allreduce.h - gradient averaging over the ranks in buckets that overlap backward.
//
// gpt2_backward reports ranges of final gradients (ln_f, blocks L-1..0, embeddings);
// reducer_ready() merges adjacent ranges and starts an MPI_Iallreduce as soon as a bucket
// holds bucket_bytes, so the reduction of late layers travels while earlier layers still
// run their backward (DDP's scheme). reducer_finish() starts what is left, waits for all,
// reduces any range backward did not report, and divides by the rank count.
#ifndef GT_ALLREDUCE_H
#define GT_ALLREDUCE_H

#include <mpi.h>
#include <stddef.h>

typedef struct {
    MPI_Comm comm;
    int size;
    float *grads;
    size_t n;             // floats in grads
    size_t bucket_min;    // floats per bucket before it is started
    size_t lo, hi;        // reported range not started yet
    size_t floor;         // lowest offset reported this step: what lies above is started or pending
    MPI_Request *reqs;
    size_t *r_off, *r_cnt;
    int nreq, capreq;
    // measurements
    double blocking_s;    // one blocking MPI_Allreduce of all grads (calibrated at init)
    double wait_s;        // time blocked in the last reducer_finish
    double wait_total_s;  // sum over steps
    double hidden_floats; // gradient floats whose reduction was complete when backward ended
    long long steps;
} GradReducer;

// bucket_bytes: 0 means 1 MiB. Calibrates the blocking cost (collective).
void reducer_init(GradReducer *r, MPI_Comm comm, float *grads, size_t n, size_t bucket_bytes);
// A GradReadyFn for gpt2_backward (ctx = the GradReducer), also fit for GPT2.progress:
// ranges come back to front and only the part below all earlier ones counts, so a block
// reported again whole after its sub-layers is not reduced twice. Every call also drives
// the reductions in flight (Open MPI moves them only inside MPI calls).
void reducer_ready(void *ctx, size_t offset, size_t count);
void reducer_finish(GradReducer *r);
// Share of the gradient whose reduction had completed, behind backward, by the time
// backward ended (over all steps so far; 1 for a single rank). The embeddings' bucket starts
// last and is never hidden, as in DDP.
double reducer_hidden_share(const GradReducer *r);
// Mean time per step reducer_finish waited: the communication backward did not hide, plus
// waiting for slower ranks. Compare with blocking_s, one blocking allreduce of everything.
double reducer_exposed_ms(const GradReducer *r);
// Gradient bytes each rank sends per step with a ring allreduce: 2 (N-1)/N x payload.
double reducer_bytes_sent(const GradReducer *r);
void reducer_free(GradReducer *r);

#endif
