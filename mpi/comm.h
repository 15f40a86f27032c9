// comm.h - the MPI world of one gpt-train run: init/finalize, rank and size, and the
// collective agreement on errors that lets every rank exit together with one message.
//
// Why agreement rather than MPI_Abort: a bad input seen by one rank (its file, its shard)
// should end the job with exit 1 and the one line that names the problem, not with
// mpirun's abort banner; so checks that may fail on some ranks only go through
// comm_agree(), and every rank leaves through comm_exit().
//
// Every wait for the other ranks here is a non-blocking call polled under the stall
// watchdog (watchdog.h): a rank that never arrives ends the job after --collective-timeout
// instead of hanging it. The small collectives are point to point (each rank sends its
// part to every other), so a stalled wait names the ranks that did not arrive, and sums are
// added in rank order: the same bits on every rank, whatever the network.
#ifndef GT_COMM_H
#define GT_COMM_H

#include <mpi.h>
#include <stddef.h>

#include "error.h"

typedef struct {
    MPI_Comm comm;  // a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN
    int rank, size;
} Comm;

// MPI_Init_thread (MPI_THREAD_MULTIPLE: the gradient exchange's progress thread, the
// watchdog), MPI_ERRORS_RETURN on the communicators, gt_set_abort_on_fail(size > 1),
// gt_set_quiet(rank != 0), the watchdog (adaptive). Returns the global communicator.
const Comm *comm_init(int *argc, char ***argv);

// MPI_Finalize then exit(status), on every rank that calls it (all must).
_Noreturn void comm_exit(int status);
// Collective: did rank 0's stdout get everything written to it (--help, a result line)?
// Else (> /dev/full) every rank ends with exit 2 and "writing to stdout failed: ...". A
// reader that went away (`| head`) is not an error: a quiet end, as for any command in a pipe.
// err: rank 0's errno of a write that failed already (gt_stdout_write), or 0.
void comm_agree_stdout(int err);

// Collective: `err` is NULL on ranks that are fine, else that rank's message. When any rank
// has a message, the lowest such rank prints "PROG: error: <msg>" and every rank exits with
// the status of that rank (the others may not know it). Returns normally when all are fine.
void comm_agree(const char *err, int status);
// The same for a failure a library call returned (error.h): NULL or a clean GtErr is fine.
void comm_agree_e(const GtErr *e);
// The same, naming the wait `phase` for the stall watchdog ("the checkpoint agreement").
void comm_agree_e_in(const GtErr *e, const char *phase);
// Same for checks each rank makes on its own (its file, its node): when only some ranks
// failed, the message starts with "rank R of N: ".
void comm_agree_local(const char *err, int status);
void comm_agree_local_e(const GtErr *e);
// The agreement at the end of a training step: comm_agree_local, and in the same allreduce
// the stop signal: returns the largest `sig` over the ranks (0 when none) when all are fine.
int comm_agree_stop(const char *err, int status, int sig);

// Collective, point to point: each rank's `bytes` at `mine` land in all[r * bytes], in rank
// order. `phase` names the wait for the watchdog ("eval", "the loss average").
void comm_allgather(const void *mine, void *all, size_t bytes, const char *phase);
// v[0..n) summed over the ranks (n <= 16), added in rank order: the same bits everywhere.
void comm_sum(double *v, int n, const char *phase);

// Broadcast from rank 0 (MPI_CHECKed; watched as "a broadcast from rank 0").
void comm_bcast(void *buf, size_t bytes);

// Rank 0 waits for a long task while the others sleep in a polling loop instead of
// spinning in MPI_Bcast (which would steal the CPU rank 0 needs): every rank calls it,
// rank 0 with its status once its task is done; all return rank 0's status. Not watched:
// the task (tokenizing a corpus) takes as long as its input, not a step. A caller given a
// non-zero status ends with comm_agree(rank 0 ? its message : NULL, status).
int comm_wait_status(int status_on_rank0);
// Rank 0, at the start of such a task: until its comm_wait_status, a fatal error of its own
// (gt_fail deep in a library: a bad regex, PCRE2 giving up, out of memory) is handed to
// the waiting ranks as that status and agreed on (one `PROG: error:` line, every rank
// exits with it) instead of ending the job with MPI_Abort.
void comm_solo_begin(void);

// Collective: rank 0 warns (one line) when the ranks on some node times `threads` exceed
// that node's cores, naming the node: ranks and idle OpenMP threads then wait or spin.
void comm_warn_oversubscribed(int threads);

// Polls reqs[0..n) to completion under the watchdog as `phase`. peer[i] >= 0: request i is
// a receive from that rank, whose arrival is flagged in arrived (size entries; may be NULL
// with peer NULL).
void comm_wait(int n, MPI_Request *reqs, const int *peer, unsigned char *arrived, const char *phase);
// Between two polls of a wait that began at t0 (comm_time): gives the CPU away, since ranks
// may share cores: sched_yield for the first 2 ms, then 0.2 ms sleeps.
void comm_idle(double t0);

double comm_time(void);  // MPI_Wtime

#endif
