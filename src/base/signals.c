// signals.c - see signals.h.
#include "signals.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

static volatile sig_atomic_t pending = 0, deferred = 1;
static int under_mpirun = 0;
static const int stop_signals[4] = {SIGTERM, SIGINT, SIGUSR1, SIGHUP};

static char note[600];
static volatile sig_atomic_t note_len;

void signals_note(const char *text) {
    note_len = 0;
    if (!text) return;
    size_t n = strlen(text);
    if (n > sizeof note - 2) n = sizeof note - 2;
    memcpy(note, text, n);
    note[n] = '\n';
    note_len = (sig_atomic_t)(n + 1);
}

// Async-signal-safe: write, unlink, signal, raise.
static void die_by(int sig) {
    if (note_len) {
        ssize_t w = write(STDERR_FILENO, note, (size_t)note_len);
        (void)w;
    }
    gt_tmpfile_remove_all();
    signal(sig, SIG_DFL);
    raise(sig);  // delivered when the handler returns (or at once outside one)
}

static void on_signal(int sig) {
    if (!deferred) {
        die_by(sig);
        return;
    }
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

static void install(int defer) {
    deferred = defer;
    under_mpirun = getenv("OMPI_COMM_WORLD_SIZE") != NULL;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // MPI and file calls continue; the loop checks the flag per step
    // mpirun, once signalled, stops reading the ranks' output: the terminal hangs up
    // (SIGHUP) and writes to a closed pipe raise SIGPIPE. Neither may kill a rank before
    // it has checkpointed; SIGHUP (a closed terminal, too) is one more request to stop.
    for (int i = 0; i < 4; i++) sigaction(stop_signals[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
}

void signals_install(void) { install(1); }
void signals_install_immediate(void) { install(0); }

void signals_defer(int on) {
    deferred = on;
    if (!on && pending) signals_exit(pending);
}

int signals_pending(void) { return pending; }

void signals_request_stop(int sig) {
    if (!deferred) signals_exit(sig);
    pending = sig;
}

_Noreturn void signals_exit(int sig) {
    fflush(stdout);
    fflush(stderr);
    die_by(sig);
    // SIGPIPE and the stop signals all terminate by default; should one be blocked, exit
    // with the status a shell would show.
    _exit(128 + sig);
}

void signals_test_point(const char *phase) {
    const char *at = getenv("GT_TEST_STOP_AT");
    if (at && strcmp(at, phase) == 0) raise(SIGSTOP);
}

const char *signals_name(int sig) {
    switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    case SIGHUP: return "SIGHUP";
    case SIGPIPE: return "SIGPIPE";
    default: return "a signal";
    }
}
