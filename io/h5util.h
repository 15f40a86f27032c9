// h5util.h - small HDF5 helpers shared by every file format of docs/formats.md.
//
// Conventions: every function either succeeds or ends the process through error.h
// (exit 1 naming the file for bad input, exit 2 for runtime failures), so callers never
// see a negative hid_t. Readers validate the root attributes `format`/`format_version`.
// Writers create "<path>.tmp-<pid>" and h5_commit() flushes, fsyncs and renames it, so a
// crash leaves either the old file or the new one, never a torn one.
#ifndef GT_H5UTIL_H
#define GT_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#define GT_FORMAT_VERSION 1

// Silences HDF5's own error stack (we print one message instead). Call once at start.
void h5_quiet(void);

// Output path checks for writers: the directory must exist; an existing file is an error
// unless `force`. `flag` names the command-line flag for the message (e.g. "--out").
void h5_check_output_path(const char *path, const char *flag, int force);

// Creates the temporary file for `path` (name stored in tmp, size >= strlen(path)+32),
// with root attributes format=`format` and format_version=1. Registered with
// gt_tmpfile_register so a fatal error removes it.
hid_t h5_create_tmp(const char *path, const char *format, char *tmp, size_t tmpsize);
// Flushes, closes, fsyncs and renames tmp to path, then fsyncs the directory.
// On failure (e.g. disk full) removes tmp and fails naming `path` and its size.
void h5_commit(hid_t file, const char *tmp, const char *path);

// Opens an existing file read-only and checks format/format_version. `what` names the
// flag or role for messages ("--vocab", "checkpoint"). Exit 1 with one message when the
// file is missing, a directory, not HDF5, truncated, or of another format.
hid_t h5_open_checked(const char *path, const char *format, const char *what);
// Same for a file that is appended to (read-write); swmr=1 opens it for SWMR writing.
hid_t h5_open_rw_checked(const char *path, const char *format, const char *what, int swmr);

// Attributes (scalar). Writers overwrite an existing attribute of the same name.
void h5_attr_write_int(hid_t loc, const char *name, int64_t v);
void h5_attr_write_double(hid_t loc, const char *name, double v);
void h5_attr_write_str(hid_t loc, const char *name, const char *s);  // UTF-8 variable length
// Readers return 1 when present and of a compatible type, 0 when missing.
int h5_attr_read_int(hid_t loc, const char *name, int64_t *v);
int h5_attr_read_double(hid_t loc, const char *name, double *v);
char *h5_attr_read_str(hid_t loc, const char *name);  // malloc'd; NULL when missing

// Datasets. `type` is a native HDF5 type (H5T_NATIVE_FLOAT, ...). chunk_rows > 0 makes the
// dataset chunked along dim 0 with that many rows per chunk (H5_WHOLE: one chunk), each
// chunk with a Fletcher-32 checksum that HDF5 verifies on read (and gzip level 4 if deflate).
#define H5_WHOLE ((hsize_t)-1)
void h5_write_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                      const void *data, hsize_t chunk_rows, int deflate);
// Reads a whole dataset of `type` into a malloc'd buffer; dims/rank returned (rank <= 8).
// Fails naming `path_for_msg` and `name` if missing.
void *h5_read_dataset(hid_t loc, const char *name, hid_t type, int *rank, hsize_t *dims,
                      const char *path_for_msg);
// Returns 1 if a link of that name exists under loc (intermediate groups allowed).
int h5_exists(hid_t loc, const char *name);
// Rank and dims of a dataset without reading it; returns 0 if missing.
int h5_dataset_shape(hid_t loc, const char *name, int *rank, hsize_t *dims);

// 1-D dataset of UTF-8 variable-length strings.
void h5_write_strings(hid_t loc, const char *name, char *const *strs, size_t n);
char **h5_read_strings(hid_t loc, const char *name, size_t *n);  // malloc'd array of malloc'd strings
void h5_free_strings(char **strs, size_t n);

// Copies group `name` (e.g. "/tokenizer") from src_file to dst (same name), recursively.
void h5_copy_group(hid_t src_file, const char *name, hid_t dst);

// Creates intermediate groups as needed ("optimizer/m").
hid_t h5_group_create(hid_t loc, const char *name);
hid_t h5_group_open(hid_t loc, const char *name, const char *path_for_msg);

// ISO 8601 UTC timestamp "2026-11-29T09:00:00Z" into buf (>= 32 bytes).
void h5_iso8601_now(char *buf, size_t n);

#endif
