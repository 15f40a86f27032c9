// files.c - see files.h.
#define _GNU_SOURCE
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "signals.h"

const char *gt_file_kind(unsigned mode) {
    return S_ISREG(mode) ? "a regular file" : S_ISDIR(mode) ? "a directory" : S_ISFIFO(mode) ? "a FIFO (named pipe)"
         : S_ISCHR(mode) ? "a character device" : S_ISBLK(mode) ? "a block device" : S_ISSOCK(mode) ? "a socket"
         : "not a regular file";
}

int gt_open_input(const char *path, const char *flag, int64_t *size, GtErr *e) {
    if (gt_failed(e)) return -1;
    // O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting.
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), err = errno;
    struct stat st;
    if (fd < 0) {  // a socket cannot be opened at all: say what it is rather than ENXIO
        if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
            return gt_err(e, GT_EXIT_USAGE, "%s '%s': is %s, expected a regular file", flag, path,
                          gt_file_kind(st.st_mode));
        return gt_err(e, GT_EXIT_USAGE, "%s '%s': %s", flag, path, strerror(err));
    }
    if (fstat(fd, &st) != 0) {
        gt_err(e, GT_EXIT_USAGE, "%s '%s': %s", flag, path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        gt_err(e, GT_EXIT_USAGE, "%s '%s': is %s, expected a regular file", flag, path, gt_file_kind(st.st_mode));
    } else {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        *size = (int64_t)st.st_size;
        return fd;
    }
    close(fd);
    return -1;
}

int gt_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int gt_stdout_write(const void *buf, size_t n) {
    if (n && fwrite(buf, 1, n, stdout) != n) return errno ? errno : EIO;
    return 0;
}

int gt_stdout_flush(void) { return fflush(stdout) != 0 ? (errno ? errno : EIO) : 0; }

_Noreturn void gt_stdout_failed(int err) {
    if (err == EPIPE) signals_exit(SIGPIPE);
    gt_fail(GT_EXIT_RUNTIME, "writing to stdout failed: %s", strerror(err));
}

static void check_stdout(void) {
    int err = fflush(stdout) != 0 ? errno : ferror(stdout) ? EIO : 0;
    if (!err || gt_failing()) return;
    if (err == EPIPE) signals_exit(SIGPIPE);
    fprintf(stderr, "%s: error: writing to stdout failed: %s\n", gt_progname(), strerror(err));
    _exit(GT_EXIT_RUNTIME);  // from an exit handler: exit() may not be called again
}

void gt_stdout_check_at_exit(void) { atexit(check_stdout); }
