// watchdog.c - see watchdog.h.
#include "watchdog.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"

#define WD_TICK_NS (250 * 1000 * 1000)
#define WD_STARTUP_S 600.0   // adaptive, before any step was timed
#define WD_FLOOR_S 120.0     // adaptive: never less
#define WD_STEPS_FACTOR 50.0 // adaptive: times the median step
#define WD_HISTORY 64        // step times the median is taken over
#define WD_FROZEN_S 2.0      // a tick this late means this process was not running

static struct {
    pthread_mutex_t mu;
    pthread_t thread;
    int running, quit;
    int rank, size;
    double timeout;          // as configured: > 0, 0, or WD_ADAPTIVE
    double hist[WD_HISTORY];
    int nhist;
    double median;           // of hist, 0 before the first step
    long long step;
    const char *phase;       // NULL: nothing watched
    int local;               // the phase is local work, not a wait
    const volatile unsigned char *arrived;
    double last;             // time of the phase's start or its last progress
    char note[4400];
} wd = {.mu = PTHREAD_MUTEX_INITIALIZER, .timeout = WD_ADAPTIVE, .step = -1};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double timeout_locked(void) {
    if (wd.timeout >= 0) return wd.timeout;
    if (wd.nhist == 0) return WD_STARTUP_S;
    double t = WD_STEPS_FACTOR * wd.median;
    return t > WD_FLOOR_S ? t : WD_FLOOR_S;
}

// "rank 2 did not arrive" / "ranks 1, 3 did not arrive", or why it is not known.
static void who(char *out, size_t n) {
    if (wd.local) {
        snprintf(out, n, "this rank is stuck in it");
        return;
    }
    if (!wd.arrived) {
        snprintf(out, n, "which rank is late cannot be known in this phase");
        return;
    }
    int missing = 0;
    size_t len = 0;
    for (int r = 0; r < wd.size; r++)
        if (r != wd.rank && !wd.arrived[r]) missing++;
    if (missing == 0) {
        snprintf(out, n, "every rank arrived but the transfer stopped (a link down?)");
        return;
    }
    len += (size_t)snprintf(out + len, n - len, "%s ", missing == 1 ? "rank" : "ranks");
    int shown = 0;
    for (int r = 0; r < wd.size && len < n - 32; r++)
        if (r != wd.rank && !wd.arrived[r]) {
            if (shown == 16) {
                len += (size_t)snprintf(out + len, n - len, ", ...");
                break;
            }
            len += (size_t)snprintf(out + len, n - len, "%s%d", shown ? ", " : "", r);
            shown++;
        }
    snprintf(out + len, n - len, " did not arrive");
}

static void *watch(void *arg) {
    (void)arg;
    double tick = now();
    for (;;) {
        nanosleep(&(struct timespec){0, WD_TICK_NS}, NULL);
        pthread_mutex_lock(&wd.mu);
        if (wd.quit) break;
        // A tick seconds late: this process itself did not run (SIGSTOP, swapped out). The
        // others are not to blame for that time; and once mpirun ends a job it first sends
        // SIGCONT, which must not make a frozen rank accuse the others.
        double t = now();
        if (t - tick > WD_FROZEN_S) wd.last = t;
        tick = t;
        double limit = timeout_locked(), idle = t - wd.last;
        if (wd.phase && limit > 0 && idle > limit) {
            char where[64], whom[256];
            if (wd.step >= 0) snprintf(where, sizeof where, "step %lld", wd.step);
            else snprintf(where, sizeof where, "at start-up");
            who(whom, sizeof whom);
            // gt_fail prints one line, removes registered temporary files and calls MPI_Abort:
            // mpirun then ends every rank, the frozen one too.
            char given[32];
            if (wd.timeout < 0) snprintf(given, sizeof given, "auto");
            else snprintf(given, sizeof given, "%g", wd.timeout);
            gt_fail(GT_EXIT_RUNTIME, "rank %d of %d: %s: %s made no progress for %.0f s (--collective-timeout %s): %s%s%s",
                    wd.rank, wd.size, where, wd.phase, limit, given, whom, *wd.note ? "; " : "", wd.note);
        }
        pthread_mutex_unlock(&wd.mu);
    }
    pthread_mutex_unlock(&wd.mu);
    return NULL;
}

void wd_init(int rank, int size) {
    wd.rank = rank;
    wd.size = size;
    if (size > 1 && pthread_create(&wd.thread, NULL, watch, NULL) == 0) wd.running = 1;
}

void wd_configure(double timeout_s) {
    pthread_mutex_lock(&wd.mu);
    wd.timeout = timeout_s;
    pthread_mutex_unlock(&wd.mu);
}

double wd_timeout(void) {
    pthread_mutex_lock(&wd.mu);
    double t = timeout_locked();
    pthread_mutex_unlock(&wd.mu);
    return t;
}

void wd_step(long long step) {
    pthread_mutex_lock(&wd.mu);
    wd.step = step;
    pthread_mutex_unlock(&wd.mu);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void wd_step_time(double seconds) {
    pthread_mutex_lock(&wd.mu);
    if (wd.nhist < WD_HISTORY) wd.hist[wd.nhist++] = seconds;
    else {
        memmove(wd.hist, wd.hist + 1, (WD_HISTORY - 1) * sizeof(double));
        wd.hist[WD_HISTORY - 1] = seconds;
    }
    double sorted[WD_HISTORY];
    memcpy(sorted, wd.hist, (size_t)wd.nhist * sizeof(double));
    qsort(sorted, (size_t)wd.nhist, sizeof(double), cmp_double);
    wd.median = sorted[wd.nhist / 2];
    pthread_mutex_unlock(&wd.mu);
}

void wd_set_note(const char *note) {
    pthread_mutex_lock(&wd.mu);
    snprintf(wd.note, sizeof wd.note, "%s", note ? note : "");
    pthread_mutex_unlock(&wd.mu);
}

static void begin(const char *phase, int local, const volatile unsigned char *arrived) {
    pthread_mutex_lock(&wd.mu);
    wd.phase = phase;
    wd.local = local;
    wd.arrived = arrived;
    wd.last = now();
    pthread_mutex_unlock(&wd.mu);
}

static void end(void) {
    pthread_mutex_lock(&wd.mu);
    wd.phase = NULL;
    wd.arrived = NULL;
    pthread_mutex_unlock(&wd.mu);
}

void wd_wait_begin(const char *phase, const volatile unsigned char *arrived) { begin(phase, 0, arrived); }
void wd_wait_end(void) { end(); }
void wd_local_begin(const char *phase) { begin(phase, 1, NULL); }
void wd_local_end(void) { end(); }

void wd_progress(void) {
    pthread_mutex_lock(&wd.mu);
    wd.last = now();
    pthread_mutex_unlock(&wd.mu);
}

void wd_stop(void) {
    if (!wd.running) return;
    pthread_mutex_lock(&wd.mu);
    wd.quit = 1;
    pthread_mutex_unlock(&wd.mu);
    pthread_join(wd.thread, NULL);
    wd.running = 0;
}
