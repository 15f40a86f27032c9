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

// Warnings go to stderr on rank 0 only (see gt_set_quiet) and never exit.
void gt_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Non-zero rank processes call this so only rank 0 prints warnings.
void gt_set_quiet(int quiet);

// Fatal errors end with MPI_Abort once this is set (by mpi/comm.c after MPI_Init, when
// the world has more than one rank), so a failing rank never leaves the others hanging.
void gt_set_abort_on_fail(int enable);

// Temporary output files (written then renamed) registered here are unlinked when a
// fatal error ends the process, so a failure never leaves a half-written file behind.
void gt_tmpfile_register(const char *path);
void gt_tmpfile_forget(const char *path);

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

// PCRE2: negative return codes other than "no match" are errors; prints PCRE2's message.
#define PCRE2_CHECK(rc, hint) \
    do { if ((rc) < 0 && (rc) != -1 /* PCRE2_ERROR_NOMATCH */) gt_pcre2_fail(__FILE__, __LINE__, (hint), (rc)); } while (0)
_Noreturn void gt_pcre2_fail(const char *file, int line, const char *hint, int rc);

#endif
