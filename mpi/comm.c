// comm.c - see comm.h.
#include "comm.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

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

const Comm *comm_world(void) { return &world; }

_Noreturn void comm_exit(int status) {
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

static void agree(const char *err, int status, int name_rank) {
    int mine[2] = {err ? world.rank : world.size, err ? 1 : 0}, first = mine[0], failed = mine[1];
    MPI_CHECK(MPI_Allreduce(&mine[0], &first, 1, MPI_INT, MPI_MIN, world.comm));
    if (first == world.size) return;
    MPI_CHECK(MPI_Allreduce(&mine[1], &failed, 1, MPI_INT, MPI_SUM, world.comm));
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

void comm_agree(const char *err, int status) { agree(err, status, 0); }
void comm_agree_local(const char *err, int status) { agree(err, status, 1); }

int comm_all_ok(int ok) {
    int mine = ok ? 1 : 0, all = 0;
    MPI_CHECK(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, world.comm));
    return all;
}

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

char *comm_bcast_str(char *s) {
    long long len = world.rank == 0 ? (s ? (long long)strlen(s) : -1) : 0;
    comm_bcast(&len, sizeof len);
    if (len < 0) return NULL;
    char *out = world.rank == 0 ? s : gt_malloc((size_t)len + 1, "string");
    comm_bcast(out, (size_t)len + 1);
    return out;
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

double comm_time(void) { return MPI_Wtime(); }
