// failwrite.c - an LD_PRELOAD library for the fault tests: makes one write-side system call
// on the output files fail, as a full disk or a failing device would, so a test can walk a
// failure through every phase of writing a file (HDF5's data writes, its flush and close,
// our fsync, close and rename), one run per call.
//
//   GT_FAIL_MATCH=.tmp-   files whose path contains this are watched (default ".tmp-")
//   GT_FAIL_AT=k          the k-th watched call fails (1-based); 0 or unset: none, only counted
//   GT_FAIL_ERRNO=28      the errno it fails with (default ENOSPC)
//
// Watched calls: pwrite, write, ftruncate, fsync, close on a watched file descriptor, and
// rename of a watched path. When the k-th call fails it says so on stderr
// ("failwrite: failing call k: pwrite"); at exit it prints "failwrite: N calls".
//
// And a file that another program removes while this one opens it (a training run's
// --keep-ckpts pruning the checkpoint a reader found in RUN/latest):
//   GT_VANISH_MATCH=ckpt-1   the k-th open of a path containing this removes the file first ...
//   GT_VANISH_AT=k
//   GT_VANISH_LATEST=FILE    ... and writes GT_VANISH_NAME and a newline into FILE (that run's
//   GT_VANISH_NAME=NAME      RUN/latest, naming its newer checkpoint), when both are set
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 4096
static char watched[MAX_FD];
static long calls, fail_at = -1;
static int fail_errno = ENOSPC;
static const char *match = ".tmp-";

__attribute__((constructor)) static void init(void) {
    const char *m = getenv("GT_FAIL_MATCH"), *k = getenv("GT_FAIL_AT"), *e = getenv("GT_FAIL_ERRNO");
    if (m && *m) match = m;
    if (k) fail_at = atol(k);
    if (e) fail_errno = atoi(e);
}

__attribute__((destructor)) static void report(void) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "failwrite: %ld calls\n", calls);
    if (write(2, buf, (size_t)n) < 0) return;
}

// 1 when this watched call is the one to fail (errno set).
static int fails(const char *what) {
    if (++calls != fail_at) return 0;
    char buf[96];
    int n = snprintf(buf, sizeof buf, "failwrite: failing call %ld: %s\n", calls, what);
    if (write(2, buf, (size_t)n) < 0) return 0;
    errno = fail_errno;
    return 1;
}

static int is_watched(int fd) { return fd >= 0 && fd < MAX_FD && watched[fd]; }

static void vanish(const char *path) {
    static long opens;
    const char *m = getenv("GT_VANISH_MATCH"), *at = getenv("GT_VANISH_AT");
    const char *latest = getenv("GT_VANISH_LATEST"), *name = getenv("GT_VANISH_NAME");
    if (!m || !at || !path || !strstr(path, m) || ++opens != atol(at)) return;
    unlink(path);
    if (latest && name) {
        FILE *f = fopen(latest, "w");
        if (f) {
            fprintf(f, "%s\n", name);
            fclose(f);
        }
    }
}

#define REAL(ret, name, ...) static ret (*real)(__VA_ARGS__); if (!real) real = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, name)

int open(const char *path, int flags, ...) {
    REAL(int, "open", const char *, int, ...);
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    vanish(path);
    int fd = real(path, flags, mode);
    if (fd >= 0 && fd < MAX_FD) watched[fd] = strstr(path, match) != NULL;
    return fd;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(ssize_t, "pwrite", int, const void *, size_t, off_t);
    if (is_watched(fd) && fails("pwrite")) return -1;
    return real(fd, buf, n, off);
}

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(ssize_t, "write", int, const void *, size_t);
    if (is_watched(fd) && fails("write")) return -1;
    return real(fd, buf, n);
}

int ftruncate(int fd, off_t len) {
    REAL(int, "ftruncate", int, off_t);
    if (is_watched(fd) && fails("ftruncate")) return -1;
    return real(fd, len);
}

int fsync(int fd) {
    REAL(int, "fsync", int);
    if (is_watched(fd) && fails("fsync")) return -1;
    return real(fd);
}

int close(int fd) {
    REAL(int, "close", int);
    int w = is_watched(fd);
    if (w) watched[fd] = 0;
    int rc = real(fd);  // the descriptor is gone either way, as with a real failing close
    if (w && fails("close")) return -1;
    return rc;
}

int rename(const char *from, const char *to) {
    REAL(int, "rename", const char *, const char *);
    if (from && strstr(from, match) && fails("rename")) return -1;
    return real(from, to);
}
