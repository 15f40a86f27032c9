// files.c - see files.h.
#define _GNU_SOURCE
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *gt_file_kind(unsigned mode) {
    return S_ISREG(mode) ? "a regular file" : S_ISDIR(mode) ? "a directory" : S_ISFIFO(mode) ? "a FIFO (named pipe)"
         : S_ISCHR(mode) ? "a character device" : S_ISBLK(mode) ? "a block device" : S_ISSOCK(mode) ? "a socket"
         : "not a regular file";
}

int gt_open_input(const char *path, const char *flag, int64_t *size, GtErr *e) {
    if (gt_failed(e)) return -1;
    // O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting.
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return gt_err(e, GT_EXIT_USAGE, "%s '%s': %s", flag, path, strerror(errno));
    struct stat st;
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
