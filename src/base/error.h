// error.h - the one place errors are reported.
//
// Two kinds of failure, two exit statuses (docs/faults.md, exit statuses):
//   1  bad usage, bad configuration, bad input file: gt_fail_usage()/gt_fail_input()
//      print one clean line "PROG: error: ..." naming the flag or file;
//   2  runtime failure (a library call that should not fail): the CHECK macros print
//      file:line, the library's own message and a hint.
// Under MPI with more than one rank a fatal error calls MPI_Abort so no rank is left
// waiting in a collective; with one process (or before MPI_Init) it simply exits.
#ifndef GT_ERROR_H
#define GT_ERROR_H

#include <stddef.h>
#include <stdio.h>

#define GT_EXIT_USAGE 1
#define GT_EXIT_RUNTIME 2

// Name printed before every message ("gpt-bpe", "gpt-train", ...).
void gt_set_progname(const char *name);
const char *gt_progname(void);

// Prints "PROG: error: <msg>" and exits (or aborts all ranks) with `status`.
_Noreturn void gt_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Same, with the source location and a hint for the user: for library calls that failed.
_Noreturn void gt_fail_at(int status, const char *file, int line, const char *hint,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));
#define gt_fail_usage(...) gt_fail(GT_EXIT_USAGE, __VA_ARGS__)

// A failure as a value, for library code (io/) that must not exit: the trainer's ranks have
// to agree on an error before they leave (comm_agree), and a writer must release its HDF5
// ids and remove its temp file first. Functions taking a GtErr *e fill it and return; mains
// and the agreement point exit with gt_err_exit. Only the first failure is kept: what
// follows from it (a close after a failed write) says nothing new, so a function may keep
// releasing resources after a failure without hiding its cause.
#define GT_ERR_MAX 8704
typedef struct {
    int status;           // 0 fine, GT_EXIT_USAGE bad input, GT_EXIT_RUNTIME runtime failure
    int errnum;           // the system's errno behind it (ENOSPC, EFBIG, ...), or 0
    char msg[GT_ERR_MAX]; // one line, without the "PROG: error: " prefix
} GtErr;
#define GT_ERR_INIT {0, 0, ""}
// Records a failure unless one is recorded already. Returns -1, for `return gt_err(...)`.
int gt_err(GtErr *e, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// Same for a library call that failed: appends " (at FILE:LINE)".
int gt_err_at(GtErr *e, int status, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
// Puts context before a recorded message ("writing 'x.h5' failed: " + "No space left...").
void gt_err_prefix(GtErr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// And after it ("...; the previous checkpoint is intact").
void gt_err_append(GtErr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int gt_failed(const GtErr *e) { return e->status != 0; }
// Prints "PROG: error: <msg>" and exits (or aborts all ranks) with e->status.
_Noreturn void gt_err_exit(const GtErr *e);
// The exiting form of a GtErr function: exits when `call` recorded a failure in *e.
#define GT_OR_EXIT(e, call) do { (call); if (gt_failed(e)) gt_err_exit(e); } while (0)

// A fatal error (gt_fail, gt_fail_at, gt_err_exit, a failed gt_malloc) while a hook is set
// calls hook(status, message) instead of printing: for a phase in which one rank works
// alone and the others wait to hear how it went (mpi/comm.h, comm_solo_begin), so its
// failure ends the job through their agreement with one line instead of MPI_Abort. The
// hook is taken once (cleared before it runs); temp files are removed first; it should not
// return (if it does, the process ends as without it).
typedef void (*GtFailHook)(int status, const char *msg);
void gt_set_fail_hook(GtFailHook hook);

// 1 once a fatal error is on its way out (gt_fail, gt_err_exit): exit handlers that check
// output then add no second message.
int gt_failing(void);

// Warnings go to stderr on rank 0 only (see gt_set_quiet) and never exit.
void gt_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Non-zero rank processes call this so only rank 0 prints warnings.
void gt_set_quiet(int quiet);

// Fatal errors end with MPI_Abort once this is set (by mpi/comm.c after MPI_Init, when
// the world has more than one rank), so a failing rank never leaves the others hanging.
void gt_set_abort_on_fail(int enable);

// Temporary output files (written then renamed) registered here are unlinked when a
// fatal error or a stop signal (signals.h) ends the process, so neither leaves a
// half-written file behind. At most 16 at a time.
void gt_tmpfile_register(const char *path);
void gt_tmpfile_forget(const char *path);
// A directory this process created for its outputs (gpt-train's RUN and the parents it
// made): removed on the same occasions, if still empty, the last registered first.
void gt_tmpdir_register(const char *path);
// Unlinks every registered file, then removes the registered directories that are empty;
// async-signal-safe (a signal handler calls it).
void gt_tmpfile_remove_all(void);

// malloc/calloc that fail with "needs N bytes (X GiB) for WHAT" rather than crash.
void *gt_malloc(size_t bytes, const char *what);
void *gt_calloc(size_t n, size_t size, const char *what);
void *gt_realloc(void *p, size_t bytes, const char *what);
char *gt_strdup(const char *s);
FILE *gt_fopen(const char *path, const char *mode, const char *what);

// HDF5: every hid_t / herr_t that comes back negative is a runtime failure.
// HDF5's own error stack is silenced (h5_quiet in io/h5util.h); we print the call.
#define H5_CHECK(expr, hint) \
    do { if ((long long)(expr) < 0) gt_fail_at(GT_EXIT_RUNTIME, __FILE__, __LINE__, (hint), "HDF5 call failed: %s", #expr); } while (0)

// MPI: needs MPI_ERRORS_RETURN on the communicator (mpi/comm.c sets it), else MPI aborts
// before this check ever runs.
#define MPI_CHECK(expr) \
    do { int gt_mpi_rc_ = (expr); if (gt_mpi_rc_ != 0) gt_mpi_fail(__FILE__, __LINE__, #expr, gt_mpi_rc_); } while (0)
_Noreturn void gt_mpi_fail(const char *file, int line, const char *call, int rc);

// PCRE2: prints PCRE2's message for rc and fails (exit 2) with the location and the hint.
_Noreturn void gt_pcre2_fail(const char *file, int line, const char *hint, int rc);

#endif
