// error.c - see error.h. Kept free of any other gpt-train module so everything can use it.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "error.h"

#include <errno.h>
#include <mpi.h>
#include <pcre2.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *progname = "gpt-train";
static int quiet = 0;
static int abort_on_fail = 0;

void gt_set_progname(const char *name) { progname = name; }
const char *gt_progname(void) { return progname; }
void gt_set_quiet(int q) { quiet = q; }
void gt_set_abort_on_fail(int enable) { abort_on_fail = enable; }

// Fixed slots, no malloc: a signal handler removes these files (gt_tmpfile_remove_all), so
// a slot is filled before it is marked used and unmarked before it is reused.
#define MAX_TMPFILES 16
#define TMP_PATH_MAX 4400
static char tmp_paths[MAX_TMPFILES][TMP_PATH_MAX];
static volatile sig_atomic_t tmp_used[MAX_TMPFILES];

void gt_tmpfile_register(const char *path) {
    if (strlen(path) >= TMP_PATH_MAX) return;
    for (int i = 0; i < MAX_TMPFILES; i++)
        if (!tmp_used[i]) {
            memcpy(tmp_paths[i], path, strlen(path) + 1);
            tmp_used[i] = 1;
            return;
        }
}

void gt_tmpfile_forget(const char *path) {
    for (int i = 0; i < MAX_TMPFILES; i++)
        if (tmp_used[i] && strcmp(tmp_paths[i], path) == 0) tmp_used[i] = 0;
}

#define MAX_TMPDIRS 8
static char dir_paths[MAX_TMPDIRS][TMP_PATH_MAX];
static volatile sig_atomic_t n_dirs;

void gt_tmpdir_register(const char *path) {
    if (n_dirs == MAX_TMPDIRS || strlen(path) >= TMP_PATH_MAX) return;
    memcpy(dir_paths[n_dirs], path, strlen(path) + 1);
    n_dirs++;
}

void gt_tmpfile_remove_all(void) {
    for (int i = 0; i < MAX_TMPFILES; i++)
        if (tmp_used[i]) unlink(tmp_paths[i]);
    for (int i = n_dirs - 1; i >= 0; i--) rmdir(dir_paths[i]);  // fails, harmlessly, unless empty
}

static int failing;
int gt_failing(void) { return failing; }

_Noreturn static void finish(int status) {
    failing = 1;
    gt_tmpfile_remove_all();
    fflush(stdout);
    fflush(stderr);
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (abort_on_fail && inited && !finalized) MPI_Abort(MPI_COMM_WORLD, status);
    exit(status);
}

// "PROG: KIND: message" on one line, in one write: ranks failing at the same moment (a
// stall every live rank detects) then print whole lines through mpirun, not pieces of each.
static void report(const char *kind, const char *fmt, va_list ap) {
    char line[8192];
    int n = snprintf(line, sizeof line - 1, "%s: %s: ", progname, kind);
    if (n < 0 || n >= (int)sizeof line - 1) n = 0;
    vsnprintf(line + n, sizeof line - 1 - (size_t)n, fmt, ap);
    strcat(line, "\n");
    fputs(line, stderr);
}

static GtFailHook fail_hook;
void gt_set_fail_hook(GtFailHook hook) { fail_hook = hook; }

// With a hook set, the message goes to it instead of stderr (the hook prints it, once).
// Taken once: a second failure (another thread, or one inside the hook) waits for the
// first to end the process.
_Noreturn static void fail_through_hook(int status, const char *msg) {
    static atomic_flag taken = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&taken))
        for (;;) pause();
    GtFailHook hook = fail_hook;
    fail_hook = NULL;
    failing = 1;
    gt_tmpfile_remove_all();
    hook(status, msg);
    finish(status);  // a hook that returned: end as without one
}

_Noreturn void gt_fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (fail_hook) {
        static char msg[GT_ERR_MAX];
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fail_through_hook(status, msg);
    }
    report("error", fmt, ap);
    va_end(ap);
    finish(status);
}

_Noreturn void gt_fail_at(int status, const char *file, int line, const char *hint,
                          const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (fail_hook) {
        static char msg[GT_ERR_MAX];
        int n = vsnprintf(msg, sizeof msg, fmt, ap);
        size_t len = n < 0 ? 0 : (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
        len += (size_t)snprintf(msg + len, sizeof msg - len, " (at %s:%d)", file, line);
        if (hint && *hint && len < sizeof msg) snprintf(msg + len, sizeof msg - len, "\n%s: hint: %s", progname, hint);
        va_end(ap);
        fail_through_hook(status, msg);
    }
    fprintf(stderr, "%s: error: ", progname);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (at %s:%d)\n", file, line);
    if (hint && *hint) fprintf(stderr, "%s: hint: %s\n", progname, hint);
    va_end(ap);
    finish(status);
}

static int err_set(GtErr *e, int status, const char *file, int line, const char *fmt, va_list ap) {
    if (e->status) return -1;
    e->status = status;
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof e->msg ? (size_t)n : sizeof e->msg - 1;
    if (file) snprintf(e->msg + len, sizeof e->msg - len, " (at %s:%d)", file, line);
    return -1;
}

int gt_err(GtErr *e, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_set(e, status, NULL, 0, fmt, ap);
    va_end(ap);
    return -1;
}

int gt_err_at(GtErr *e, int status, const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_set(e, status, file, line, fmt, ap);
    va_end(ap);
    return -1;
}

void gt_err_prefix(GtErr *e, const char *fmt, ...) {
    char head[GT_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    size_t hl = n < 0 ? 0 : strlen(head), ml = strlen(e->msg);
    if (hl + ml >= sizeof e->msg) ml = sizeof e->msg - 1 - hl;
    memmove(e->msg + hl, e->msg, ml);
    memcpy(e->msg, head, hl);
    e->msg[hl + ml] = '\0';
}

void gt_err_append(GtErr *e, const char *fmt, ...) {
    size_t len = strlen(e->msg);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg + len, sizeof e->msg - len, fmt, ap);
    va_end(ap);
}

_Noreturn void gt_err_exit(const GtErr *e) {
    gt_fail(e->status ? e->status : GT_EXIT_RUNTIME, "%s", e->status ? e->msg : "unknown failure");
}

void gt_warn(const char *fmt, ...) {
    if (quiet) return;
    va_list ap;
    va_start(ap, fmt);
    report("warning", fmt, ap);
    va_end(ap);
}

_Noreturn void gt_mpi_fail(const char *file, int line, const char *call, int rc) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", rc);
    gt_fail_at(GT_EXIT_RUNTIME, file, line,
               "another rank probably died or the network failed; check the other ranks' messages",
               "%s failed: %s", call, msg);
}

_Noreturn void gt_pcre2_fail(const char *file, int line, const char *hint, int rc) {
    PCRE2_UCHAR msg[256];
    if (pcre2_get_error_message(rc, msg, sizeof msg) < 0) snprintf((char *)msg, sizeof msg, "PCRE2 error %d", rc);
    gt_fail_at(GT_EXIT_RUNTIME, file, line, hint, "PCRE2: %s", (char *)msg);
}

static _Noreturn void out_of_memory(size_t bytes, const char *what) {
    gt_fail(GT_EXIT_USAGE, "out of memory: %s needs %zu bytes (%.2f GiB); ask for less (a smaller model, batch, "
            "block size or text) or run where there is more memory (ulimit -v?)",
            what ? what : "allocation", bytes, (double)bytes / (1024.0 * 1024.0 * 1024.0));
}

void *gt_malloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) out_of_memory(bytes, what);
    return p;
}

void *gt_calloc(size_t n, size_t size, const char *what) {
    if (size && n > (size_t)-1 / size) out_of_memory((size_t)-1, what);
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) out_of_memory(n * size, what);
    return p;
}

void *gt_realloc(void *p, size_t bytes, const char *what) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) out_of_memory(bytes, what);
    return q;
}

char *gt_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = gt_malloc(n, "string");
    memcpy(d, s, n);
    return d;
}

FILE *gt_fopen(const char *path, const char *mode, const char *what) {
    FILE *f = fopen(path, mode);
    if (!f) gt_fail(GT_EXIT_USAGE, "%s '%s': cannot open: %s", what ? what : "file", path, strerror(errno));
    return f;
}
