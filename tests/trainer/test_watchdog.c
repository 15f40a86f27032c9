// test_watchdog.c - the stall watchdog's rule and its one line (mpi/watchdog.h), without MPI.
//
// rule: the adaptive timeout is 600 s before any step, then max(120 s, 50 x the median of the
//       last 64 step times) (outliers do not move a median); a fixed timeout is kept; 0 is off.
// fire: a child process waits in a phase where rank 1 of 2 never arrives, with a 1 s timeout:
//       it must print one line naming the step, the phase, rank 1 and the note, and exit 2
//       within a few seconds; a wait that keeps making progress must not fire.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "watchdog.h"

static int fails;

static void expect(int cond, const char *what) {
    printf("%s %s\n", cond ? "ok  " : "FAIL", what);
    if (!cond) fails++;
}

static void sleep_s(double s) {
    nanosleep(&(struct timespec){(time_t)s, (long)((s - (time_t)s) * 1e9)}, NULL);
}

static void rule(void) {
    wd_configure(WD_ADAPTIVE);
    expect(wd_timeout() == 600, "adaptive, before any step: 600 s");
    for (int i = 0; i < 10; i++) wd_step_time(0.001);
    expect(wd_timeout() == 120, "adaptive, 1 ms steps: the 120 s floor");
    for (int i = 0; i < 63; i++) wd_step_time(3.0);
    wd_step_time(1000.0);  // one outlier
    expect(wd_timeout() == 150, "adaptive, 3 s steps and one 1000 s outlier: 50 x the median = 150 s");
    for (int i = 0; i < 64; i++) wd_step_time(0.5);
    expect(wd_timeout() == 120, "adaptive: the median follows the last 64 steps only");
    wd_configure(7);
    expect(wd_timeout() == 7, "fixed: as given");
    wd_configure(0);
    expect(wd_timeout() == 0, "0: off");
}

// Runs body in a child with stderr into a pipe; returns its exit status (or -1) and the text.
static int child(void (*body)(void), char *text, size_t n, double *secs) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        body();
        _exit(0);
    }
    close(fd[1]);
    size_t len = 0;
    ssize_t got;
    while (len + 1 < n && (got = read(fd[0], text + len, n - 1 - len)) > 0) len += (size_t)got;
    text[len] = '\0';
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void stalled(void) {
    static volatile unsigned char arrived[2] = {1, 0};
    gt_set_progname("test_watchdog");
    wd_init(0, 2);
    wd_configure(1);
    wd_step(7);
    wd_set_note("RUN/latest names the last complete checkpoint, step 5");
    wd_wait_begin("the test wait", arrived);
    sleep_s(20);  // the watchdog must end this process long before
}

static void progressing(void) {
    static volatile unsigned char arrived[2] = {1, 0};
    wd_init(0, 2);
    wd_configure(1);
    wd_wait_begin("the test wait", arrived);
    for (int i = 0; i < 12; i++) {  // 3 s of waiting, with progress every 0.25 s
        sleep_s(0.25);
        wd_progress();
    }
    wd_wait_end();
    sleep_s(1.5);  // nothing watched: no timeout either
    wd_stop();
}

int main(void) {
    rule();
    char text[4096];
    double secs;
    int rc = child(stalled, text, sizeof text, &secs);
    printf("     child said: %s", text);
    expect(rc == 2, "a stalled wait ends the process with exit 2");
    expect(secs < 5, "... within the 1 s timeout plus a tick or two");
    expect(strstr(text, "test_watchdog: error: rank 0 of 2: step 7: the test wait made no progress for 1 s "
                        "(--collective-timeout 1): rank 1 did not arrive; RUN/latest names the last complete "
                        "checkpoint, step 5\n") != NULL,
           "... with one line naming the step, the phase, the missing rank and the note");
    expect(strchr(text, '\n') == text + strlen(text) - 1, "... and only that line");
    rc = child(progressing, text, sizeof text, &secs);
    expect(rc == 0 && !*text, "a wait that keeps making progress, longer than the timeout, does not fire");
    return fails ? 1 : 0;
}
