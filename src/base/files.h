// files.h - input files and standard output, checked the same way by every tool.
#ifndef GT_FILES_H
#define GT_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

// Opens an input for reading. Only a regular file can be one: a FIFO would block until a
// writer appears, a device such as /dev/zero never ends, a directory is no text. Opening
// never blocks. *size gets the file's size: readers read at most that much, so a file
// that keeps growing cannot make them run forever. Bad input naming `flag` and the path
// otherwise. Returns the file descriptor, or -1.
int gt_open_input(const char *path, const char *flag, int64_t *size, GtErr *e);
// "a directory", "a FIFO (named pipe)", "a character device", ... for messages.
const char *gt_file_kind(unsigned mode);
// 1 when a and b name the same file (same device and inode, through any link).
int gt_same_file(const char *a, const char *b);

// Writes all of buf to stdout (the stdio stream). Returns 0, or the errno of a failed
// write: EPIPE when the reader went away (`| head`), anything else (ENOSPC for > /dev/full)
// a real failure. gt_stdout_flush the same for fflush(stdout).
int gt_stdout_write(const void *buf, size_t n);
int gt_stdout_flush(void);
// What a tool does then: EPIPE ends it quietly, as a closed pipe ends `cat` (SIGPIPE's
// default action, after removing temp files); anything else is exit 2 naming stdout.
_Noreturn void gt_stdout_failed(int err);
// Checks at exit that everything written to stdout got there (output buffered when exit
// came, --help into a full disk): else the same as gt_stdout_failed. For gpt-bpe and
// gpt-sample; not under mpirun, where a signalled run's stdout fails on purpose (signals.c).
void gt_stdout_check_at_exit(void);

#endif
