// comm.h - the MPI world of one gpt-train run: init/finalize, rank and size, and the
// collective agreement on errors that lets every rank exit together with one message.
//
// Why agreement rather than MPI_Abort: a bad input seen by one rank (its file, its shard)
// should end the job with exit 1 and the one line that names the problem, not with
// mpirun's abort banner; so checks that may fail on some ranks only go through
// comm_agree(), and every rank leaves through comm_exit().
#ifndef GT_COMM_H
#define GT_COMM_H

#include <mpi.h>
#include <stddef.h>

#include "error.h"

typedef struct {
    MPI_Comm comm;  // a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN
    int rank, size;
} Comm;

// MPI_Init, MPI_ERRORS_RETURN on the communicators, gt_set_abort_on_fail(size > 1),
// gt_set_quiet(rank != 0). Returns the global communicator description.
const Comm *comm_init(int *argc, char ***argv);

// MPI_Finalize then exit(status), on every rank that calls it (all must).
_Noreturn void comm_exit(int status);

// Collective: `err` is NULL on ranks that are fine, else that rank's message. When any rank
// has a message, the lowest such rank prints "PROG: error: <msg>" and every rank exits with
// the status of that rank (the others may not know it). Returns normally when all are fine.
void comm_agree(const char *err, int status);
// The same for a failure a library call returned (error.h): NULL or a clean GtErr is fine.
void comm_agree_e(const GtErr *e);
// Same for checks each rank makes on its own (its file, its node): when only some ranks
// failed, the message starts with "rank R of N: ".
void comm_agree_local(const char *err, int status);
void comm_agree_local_e(const GtErr *e);
// The agreement at the end of a training step: comm_agree_local, and in the same allreduce
// the stop signal: returns the largest `sig` over the ranks (0 when none) when all are fine.
int comm_agree_stop(const char *err, int status, int sig);

// Broadcast helpers from rank 0 (MPI_CHECKed).
void comm_bcast(void *buf, size_t bytes);

// Rank 0 waits for a long task while the others sleep in a polling loop instead of
// spinning in MPI_Bcast (which would steal the CPU rank 0 needs): every rank calls it,
// rank 0 with its status once its task is done; all return rank 0's status.
int comm_wait_status(int status_on_rank0);

// Collective: rank 0 warns (one line) when the ranks on some node times `threads` exceed
// that node's cores, naming the node: ranks and idle OpenMP threads then wait or spin.
void comm_warn_oversubscribed(int threads);

double comm_time(void);  // MPI_Wtime

#endif
