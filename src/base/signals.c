// signals.c - see signals.h.
#include "signals.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t pending = 0;
static int under_mpirun = 0;

static void on_signal(int sig) {
    pending = sig;
    // A signalled mpirun stops draining the ranks' terminal: a rank writing its log line
    // would block forever and be SIGKILLed before it checkpoints. Make further writes fail
    // instead (fcntl is async-signal-safe); train.log still gets every line.
    if (under_mpirun)
        for (int fd = 1; fd <= 2; fd++) {
            int fl = fcntl(fd, F_GETFL);
            if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        }
}

void signals_install(void) {
    under_mpirun = getenv("OMPI_COMM_WORLD_SIZE") != NULL;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // MPI and file calls continue; the loop checks the flag per step
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    // mpirun, once signalled, stops reading the ranks' output: the terminal hangs up
    // (SIGHUP) and writes to a closed pipe raise SIGPIPE. Neither may kill a rank before
    // it has checkpointed; SIGHUP (a closed terminal, too) is one more request to stop.
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int signals_pending(void) { return pending; }

const char *signals_name(int sig) {
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    case SIGHUP: return "SIGHUP";
    default: return "a signal";
    }
}
