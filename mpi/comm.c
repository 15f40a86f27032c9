// comm.c - see comm.h.
#include "comm.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

static Comm world = {MPI_COMM_NULL, 0, 1};

const Comm *comm_init(int *argc, char ***argv) {
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "%s: error: MPI_Init failed (is this run under mpirun, with Open MPI installed?)\n",
                gt_progname());
        exit(GT_EXIT_RUNTIME);
    }
    // Without ERRORS_RETURN the default handler aborts before MPI_CHECK can say anything.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world.comm));
    MPI_CHECK(MPI_Comm_set_errhandler(world.comm, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(world.comm, &world.rank));
    MPI_CHECK(MPI_Comm_size(world.comm, &world.size));
    gt_set_abort_on_fail(world.size > 1);
    gt_set_quiet(world.rank != 0);
    return &world;
}

_Noreturn void comm_exit(int status) {
    if (status != 0) gt_tmpfile_remove_all();  // also an empty RUN this run created
    fflush(stdout);
    fflush(stderr);
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized) {
        if (world.comm != MPI_COMM_NULL) MPI_Comm_free(&world.comm);
        MPI_Finalize();
    }
    exit(status);
}

// One allreduce when every rank is fine: the lowest failing rank (size when none) and the
// largest stop signal (negated, so that one MIN finds both). On a failure the status is the
// lowest failing rank's, which the others may not know (a write only rank 0 made).
static int agree(const char *err, int status, int name_rank, int sig) {
    int mine[2] = {err ? world.rank : world.size, -sig}, got[2];
    MPI_CHECK(MPI_Allreduce(mine, got, 2, MPI_INT, MPI_MIN, world.comm));
    int first = got[0], one = err ? 1 : 0, failed = 0;
    if (first == world.size) return -got[1];
    MPI_CHECK(MPI_Bcast(&status, 1, MPI_INT, first, world.comm));
    MPI_CHECK(MPI_Allreduce(&one, &failed, 1, MPI_INT, MPI_SUM, world.comm));
    if (first == world.rank) {
        if (name_rank && failed < world.size)
            fprintf(stderr, "%s: error: rank %d of %d: %s\n", gt_progname(), world.rank, world.size, err);
        else
            fprintf(stderr, "%s: error: %s\n", gt_progname(), err);
        fflush(stderr);
    }
    // Everyone waits for the message to be out before the job ends.
    MPI_Barrier(world.comm);
    comm_exit(status);
}

void comm_agree(const char *err, int status) { agree(err, status, 0, 0); }
void comm_agree_local(const char *err, int status) { agree(err, status, 1, 0); }
void comm_agree_e(const GtErr *e) { agree(e && gt_failed(e) ? e->msg : NULL, e ? e->status : 0, 0, 0); }
void comm_agree_local_e(const GtErr *e) { agree(e && gt_failed(e) ? e->msg : NULL, e ? e->status : 0, 1, 0); }
int comm_agree_stop(const char *err, int status, int sig) { return agree(err, status, 1, sig); }

void comm_bcast(void *buf, size_t bytes) {
    // MPI counts are int: send large buffers in pieces.
    char *p = buf;
    while (bytes > 0) {
        int n = bytes > (1u << 30) ? (1 << 30) : (int)bytes;
        MPI_CHECK(MPI_Bcast(p, n, MPI_BYTE, 0, world.comm));
        p += n;
        bytes -= (size_t)n;
    }
}

int comm_wait_status(int status_on_rank0) {
    int status = status_on_rank0;
    MPI_Request req;
    MPI_CHECK(MPI_Ibcast(&status, 1, MPI_INT, 0, world.comm, &req));
    int done = 0;
    while (!done) {
        MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (!done) nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    return status;
}

void comm_warn_oversubscribed(int threads) {
    // Ranks per node: those that can share memory. Every rank reports its node; the most
    // oversubscribed one is named.
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(world.comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    int here = 0;
    MPI_CHECK(MPI_Comm_size(node, &here));
    MPI_CHECK(MPI_Comm_free(&node));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    struct { int excess, rank; } mine = {here * threads - (int)cores, world.rank}, worst;
    MPI_CHECK(MPI_Allreduce(&mine, &worst, 1, MPI_2INT, MPI_MAXLOC, world.comm));
    if (worst.excess <= 0) return;
    int info[2] = {here, (int)cores};
    char host[MPI_MAX_PROCESSOR_NAME] = "";
    int len = 0;
    if (world.rank == worst.rank) MPI_CHECK(MPI_Get_processor_name(host, &len));
    MPI_CHECK(MPI_Bcast(info, 2, MPI_INT, worst.rank, world.comm));
    MPI_CHECK(MPI_Bcast(host, sizeof host, MPI_CHAR, worst.rank, world.comm));
    const char *policy = getenv("OMP_WAIT_POLICY");
    int passive = policy && !strcasecmp(policy, "passive");
    gt_warn("%d rank%s x %d thread%s on node %s, which has %d core%s: oversubscribed, every step waits for "
            "descheduled ranks%s",
            info[0], info[0] == 1 ? "" : "s", threads, threads == 1 ? "" : "s", host, info[1], info[1] == 1 ? "" : "s",
            passive || threads == 1 ? "; use fewer ranks or --threads"
                                    : ", and idle OpenMP threads spin: set OMP_WAIT_POLICY=passive (jobs/train.sbatch "
                                      "does when it sees this), or use fewer ranks or --threads");
}

double comm_time(void) { return MPI_Wtime(); }
