// comm.c - see comm.h.
#include "comm.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "watchdog.h"

// The small collectives' messages (comm_allgather) on the world communicator; the gradient
// exchange has a communicator of its own.
#define TAG_GATHER 7001

static Comm world = {MPI_COMM_NULL, 0, 1};

const Comm *comm_init(int *argc, char ***argv) {
    int provided = MPI_THREAD_SINGLE;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
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
    wd_init(world.rank, world.size);
    return &world;
}

_Noreturn void comm_exit(int status) {
    if (status != 0) gt_tmpfile_remove_all();  // also an empty RUN this run created
    fflush(stdout);
    fflush(stderr);
    wd_stop();
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized) {
        if (world.comm != MPI_COMM_NULL) MPI_Comm_free(&world.comm);
        MPI_Finalize();
    }
    exit(status);
}

void comm_agree_stdout(int err) {
    char msg[256] = "";
    if (world.rank == 0) {
        errno = 0;
        if (!err) err = fflush(stdout) != 0 || ferror(stdout) ? (errno ? errno : EIO) : 0;
        if (err && err != EPIPE) snprintf(msg, sizeof msg, "writing to stdout failed: %s", strerror(err));
    }
    comm_agree(*msg ? msg : NULL, GT_EXIT_RUNTIME);
}

void comm_wait(int n, MPI_Request *reqs, const int *peer, unsigned char *arrived, const char *phase) {
    int idx[256];
    double t0 = MPI_Wtime();
    wd_wait_begin(phase, arrived);
    for (;;) {
        int got = 0;
        // Testsome frees what completed (MPI_REQUEST_NULL) and says which: the arrivals.
        MPI_CHECK(MPI_Testsome(n < 256 ? n : 256, reqs, &got, idx, MPI_STATUSES_IGNORE));
        if (got == MPI_UNDEFINED) {  // all of the first 256 done: move on to the rest
            if (n <= 256) break;
            reqs += 256;
            if (peer) peer += 256;
            n -= 256;
            continue;
        }
        for (int i = 0; i < got; i++)
            if (peer && peer[idx[i]] >= 0 && arrived) arrived[peer[idx[i]]] = 1;
        if (got > 0) {
            wd_progress();
            continue;
        }
        comm_idle(t0);
    }
    wd_wait_end();
}

void comm_idle(double t0) {
    if (MPI_Wtime() - t0 < 2e-3) sched_yield();
    else nanosleep(&(struct timespec){0, 200 * 1000}, NULL);
}

void comm_allgather(const void *mine, void *all, size_t bytes, const char *phase) {
    const int N = world.size, me = world.rank;
    if (bytes) memcpy((char *)all + (size_t)me * bytes, mine, bytes);
    if (N == 1) return;
    if (bytes > (1u << 30)) gt_fail(GT_EXIT_RUNTIME, "comm_allgather: %zu bytes per rank is too many", bytes);
    MPI_Request *reqs = gt_malloc(2 * (size_t)N * sizeof *reqs, "allgather requests");
    int *peer = gt_malloc(2 * (size_t)N * sizeof *peer, "allgather requests");
    unsigned char *arrived = gt_calloc((size_t)N, 1, "allgather arrivals");
    arrived[me] = 1;
    int n = 0;
    for (int p = 0; p < N; p++)
        if (p != me) {
            peer[n] = p;
            MPI_CHECK(MPI_Irecv((char *)all + (size_t)p * bytes, (int)bytes, MPI_BYTE, p, TAG_GATHER, world.comm, &reqs[n++]));
        }
    for (int p = 0; p < N; p++)
        if (p != me) {
            peer[n] = -1;
            MPI_CHECK(MPI_Isend(mine, (int)bytes, MPI_BYTE, p, TAG_GATHER, world.comm, &reqs[n++]));
        }
    comm_wait(n, reqs, peer, arrived, phase);
    free(reqs);
    free(peer);
    free(arrived);
}

void comm_sum(double *v, int n, const char *phase) {
    if (world.size == 1) return;
    if (n > 16) gt_fail(GT_EXIT_RUNTIME, "comm_sum: %d values, at most 16", n);
    double *all = gt_malloc((size_t)world.size * (size_t)n * sizeof(double), "sums");
    comm_allgather(v, all, (size_t)n * sizeof(double), phase);
    for (int i = 0; i < n; i++) {
        double s = all[i];
        for (int r = 1; r < world.size; r++) s += all[(size_t)r * (size_t)n + (size_t)i];
        v[i] = s;
    }
    free(all);
}

// One gathering of every rank's {failed, status, stop signal}: the lowest failing rank's
// message and status (the others may not know it: a write only rank 0 made); when all are
// fine, the largest stop signal.
static int agree(const char *err, int status, int name_rank, int sig, const char *phase) {
    int mine[3] = {err ? 1 : 0, status, sig}, *all = gt_malloc((size_t)world.size * sizeof mine, "agreement");
    comm_allgather(mine, all, sizeof mine, phase);
    int first = world.size, failed = 0, top = 0;
    for (int r = world.size - 1; r >= 0; r--) {
        if (all[3 * r]) first = r, failed++;
        if (all[3 * r + 2] > top) top = all[3 * r + 2];
    }
    if (first < world.size) status = all[3 * first + 1];
    free(all);
    if (first == world.size) return top;
    if (first == world.rank) {
        if (name_rank && failed < world.size)
            fprintf(stderr, "%s: error: rank %d of %d: %s\n", gt_progname(), world.rank, world.size, err);
        else
            fprintf(stderr, "%s: error: %s\n", gt_progname(), err);
        fflush(stderr);
    }
    // Everyone waits for the message to be out before the job ends.
    comm_allgather(NULL, NULL, 0, phase);
    comm_exit(status);
}

#define AGREE "an agreement on errors"
void comm_agree(const char *err, int status) { agree(err, status, 0, 0, AGREE); }
void comm_agree_local(const char *err, int status) { agree(err, status, 1, 0, AGREE); }
void comm_agree_e(const GtErr *e) { comm_agree_e_in(e, AGREE); }
void comm_agree_e_in(const GtErr *e, const char *phase) {
    agree(e && gt_failed(e) ? e->msg : NULL, e ? e->status : 0, 0, 0, phase);
}
void comm_agree_local_e(const GtErr *e) { agree(e && gt_failed(e) ? e->msg : NULL, e ? e->status : 0, 1, 0, AGREE); }
int comm_agree_stop(const char *err, int status, int sig) { return agree(err, status, 1, sig, "the end-of-step agreement"); }

void comm_bcast(void *buf, size_t bytes) {
    // MPI counts are int: send large buffers in pieces.
    char *p = buf;
    while (bytes > 0) {
        int n = bytes > (1u << 30) ? (1 << 30) : (int)bytes;
        MPI_Request req;
        MPI_CHECK(MPI_Ibcast(p, n, MPI_BYTE, 0, world.comm, &req));
        comm_wait(1, &req, NULL, NULL, "a broadcast from rank 0");
        p += n;
        bytes -= (size_t)n;
    }
}

// Rank 0's fatal error inside its solo task: the others, waiting in comm_wait_status, hear
// the status and meet it in comm_agree, which prints the message once and ends every rank.
static void solo_failed(int status, const char *msg) {
    comm_agree(msg, comm_wait_status(status ? status : GT_EXIT_RUNTIME));
}

void comm_solo_begin(void) {
    if (world.rank == 0 && world.size > 1) gt_set_fail_hook(solo_failed);
}

int comm_wait_status(int status_on_rank0) {
    if (world.rank == 0) gt_set_fail_hook(NULL);
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
    comm_allgather(NULL, NULL, 0, "start-up");  // a watched barrier: the split blocks unwatched
    MPI_CHECK(MPI_Comm_split_type(world.comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    int here = 0;
    MPI_CHECK(MPI_Comm_size(node, &here));
    MPI_CHECK(MPI_Comm_free(&node));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    typedef struct {
        int excess, here, cores;
        char host[MPI_MAX_PROCESSOR_NAME];
    } NodeInfo;
    NodeInfo mine = {here * threads - (int)cores, here, (int)cores, ""}, *all;
    int len = 0;
    MPI_CHECK(MPI_Get_processor_name(mine.host, &len));
    all = gt_malloc((size_t)world.size * sizeof *all, "node information");
    comm_allgather(&mine, all, sizeof mine, "start-up");
    const NodeInfo *worst = &all[0];
    for (int r = 1; r < world.size; r++)
        if (all[r].excess > worst->excess) worst = &all[r];
    if (worst->excess > 0) {
        const char *policy = getenv("OMP_WAIT_POLICY");
        int passive = policy && !strcasecmp(policy, "passive");
        gt_warn("%d rank%s x %d thread%s on node %s, which has %d core%s: oversubscribed, every step waits for "
                "descheduled ranks%s",
                worst->here, worst->here == 1 ? "" : "s", threads, threads == 1 ? "" : "s", worst->host, worst->cores,
                worst->cores == 1 ? "" : "s",
                passive || threads == 1 ? "; use fewer ranks or --threads"
                                        : ", and idle OpenMP threads spin: set OMP_WAIT_POLICY=passive (jobs/train.sbatch "
                                          "does when it sees this), or use fewer ranks or --threads");
    }
    free(all);
}

double comm_time(void) { return MPI_Wtime(); }
