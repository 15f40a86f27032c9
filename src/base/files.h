// files.h - input files, checked the same way by every tool.
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

#endif
