// h5util.h - small HDF5 helpers shared by every file format of docs/formats.md.
//
// Errors: each function f that can fail has a variant f_e(..., GtErr *e) that records the
// failure in *e (exit status 1 for bad input naming the file, 2 for runtime failures) and
// returns -1 (or a negative hid_t, or NULL); the plain f is a thin wrapper that exits with
// that message. Library code calls the _e forms so the trainer's ranks can agree on a
// failure before they exit; mains may call either. The _e forms are "sticky": they do
// nothing and fail at once when *e already holds a failure, so a writer is a plain sequence
// of calls checked once at the end. h5_close releases an id even then.
//
// Readers validate the root attributes `format`/`format_version`. Writers create
// "<path>.tmp-<pid>" and h5_commit() flushes, closes, fsyncs and renames it, so a crash
// leaves either the old file or the new one, never a torn one; after any failure h5_commit
// removes the temp file instead and names the output and the reason (a full disk, the
// file size limit).
#ifndef GT_H5UTIL_H
#define GT_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define GT_FORMAT_VERSION 1

// Call once at start, before any other HDF5 call. Silences HDF5's own error stack (we
// print one message instead) and turns off its teardown at exit: libhdf5 1.10 crashes
// (SIGSEGV) tearing down a file whose close failed, e.g. on a full disk, and every file we
// write is closed explicitly, checked, before the process ends anyway.
void h5_quiet(void);

// In a function with `GtErr *e` and a `fail:` label: a negative result records a runtime
// failure naming the call and jumps to fail.
#define H5_TRY(expr)                                                                                     \
    do {                                                                                                 \
        if ((long long)(expr) < 0) {                                                                     \
            h5_err_call(e, #expr, __FILE__, __LINE__);                                                   \
            goto fail;                                                                                   \
        }                                                                                                \
    } while (0)
// Records that `call` failed, with the system's reason when HDF5 recorded one ("No space
// left on device (4096 bytes free in 'run')"). Call it right after the failed call: the
// next HDF5 call clears the reason.
void h5_err_call(GtErr *e, const char *call, const char *file, int line);
// Releases any HDF5 id (file, group, dataset, attribute, type, space, property list);
// negative ids are ignored. Closing can write (cached chunks and metadata), so a failure
// is recorded like a failed write, unless *e holds a failure already.
void h5_close(hid_t id, GtErr *e);

// Output path checks for writers: the directory must exist; an existing file is an error
// unless `force`. `flag` names the command-line flag for the message (e.g. "--out").
int h5_check_output_path_e(const char *path, const char *flag, int force, GtErr *e);
// 1 when path is a regular file with an HDF5 signature (a tokens.h5 rather than text); never
// opens anything else, so a FIFO or device is not read.
int h5_is_hdf5_file(const char *path);
void h5_check_output_path(const char *path, const char *flag, int force);

// Creates the temporary file for `path` (name stored in tmp, size >= strlen(path)+32),
// with root attributes format=`format` and format_version=1. Registered with
// gt_tmpfile_register so a fatal error or a signal removes it.
hid_t h5_create_tmp_e(const char *path, const char *format, char *tmp, size_t tmpsize, GtErr *e);
hid_t h5_create_tmp(const char *path, const char *format, char *tmp, size_t tmpsize);
// Flushes and closes `file` (checked: this is where HDF5 writes what it cached), fsyncs it,
// renames tmp to path and fsyncs the directory. When *e holds a failure already, or any
// of these steps fails: removes tmp, leaves any previous `path` untouched, and records
// "writing 'path' failed: <why>". Returns 0 on success, -1 otherwise.
int h5_commit_e(hid_t file, const char *tmp, const char *path, GtErr *e);
void h5_commit(hid_t file, const char *tmp, const char *path);

// Opens an existing file read-only and checks format/format_version. `what` names the
// flag or role for messages ("--vocab", "checkpoint"). Bad input (status 1) when the file
// is missing, not a regular file, not HDF5, truncated, locked by a writer, or of another format.
hid_t h5_open_checked_e(const char *path, const char *format, const char *what, GtErr *e);
hid_t h5_open_checked(const char *path, const char *format, const char *what);
// Same for a file that is appended to (read-write); swmr=1 opens it for SWMR writing.
hid_t h5_open_rw_checked_e(const char *path, const char *format, const char *what, int swmr, GtErr *e);
// Why H5Fopen(path) just failed, for its message: "is open for writing in another program
// (its HDF5 file lock is held)", "was left marked open by a writer that did not close it",
// or "cannot be opened as HDF5 (truncated or damaged?)". write: the open asked to write.
void h5_open_failure(const char *path, int write, char *buf, size_t n);

// Attributes (scalar). Writers overwrite an existing attribute of the same name.
int h5_attr_write_int_e(hid_t loc, const char *name, int64_t v, GtErr *e);
int h5_attr_write_double_e(hid_t loc, const char *name, double v, GtErr *e);
int h5_attr_write_str_e(hid_t loc, const char *name, const char *s, GtErr *e);  // UTF-8 variable length
void h5_attr_write_int(hid_t loc, const char *name, int64_t v);
void h5_attr_write_double(hid_t loc, const char *name, double v);
// Readers return 1 when present and of a compatible type, 0 when missing.
int h5_attr_read_int(hid_t loc, const char *name, int64_t *v);
int h5_attr_read_double(hid_t loc, const char *name, double *v);
char *h5_attr_read_str(hid_t loc, const char *name);  // malloc'd; NULL when missing

// Datasets. `type` is a native HDF5 type (H5T_NATIVE_FLOAT, ...). chunk_rows > 0 makes the
// dataset chunked along dim 0 with that many rows per chunk (H5_WHOLE: one chunk), each
// chunk with a Fletcher-32 checksum that HDF5 verifies on read (and gzip level 4 if deflate).
#define H5_WHOLE ((hsize_t)-1)
int h5_write_dataset_e(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims, const void *data,
                       hsize_t chunk_rows, int deflate, GtErr *e);
void h5_write_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                      const void *data, hsize_t chunk_rows, int deflate);
// Reads a whole dataset of `type` into a malloc'd buffer; dims/rank returned (rank <= 8).
// Bad input naming `path_for_msg` and `name` if missing or unreadable.
void *h5_read_dataset_e(hid_t loc, const char *name, hid_t type, int *rank, hsize_t *dims,
                        const char *path_for_msg, GtErr *e);
void *h5_read_dataset(hid_t loc, const char *name, hid_t type, int *rank, hsize_t *dims,
                      const char *path_for_msg);
// Datasets appended to record by record: shape (0, rec[1], ..., rec[rank-1]), unlimited
// along dim 0, chunks of chunk0 records; gzip level 4 if deflate, Fletcher-32 if checksum.
hid_t h5_create_extendable_e(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *rec, hsize_t chunk0,
                             int deflate, int checksum, GtErr *e);
// Extends d to n+k records and writes buf (memtype, k records of shape rec[1..]) as records
// n..n+k-1.
int h5_append_e(hid_t d, hid_t memtype, int rank, const hsize_t *rec, long long n, long long k, const void *buf,
                GtErr *e);
// Sets the length (dim 0) of an extendable dataset to n records.
int h5_set_length_e(hid_t d, int rank, const hsize_t *rec, long long n, GtErr *e);

// Returns 1 if a link of that name exists under loc (intermediate groups allowed).
int h5_exists(hid_t loc, const char *name);
// Rank and dims of a dataset without reading it; returns 0 if missing.
int h5_dataset_shape(hid_t loc, const char *name, int *rank, hsize_t *dims);

// 1-D dataset of UTF-8 variable-length strings.
int h5_write_strings_e(hid_t loc, const char *name, char *const *strs, size_t n, GtErr *e);
char **h5_read_strings(hid_t loc, const char *name, size_t *n);  // malloc'd array of malloc'd strings; NULL if unreadable


// Creates intermediate groups as needed ("optimizer/m"); an existing group is opened.
hid_t h5_group_create_e(hid_t loc, const char *name, GtErr *e);
hid_t h5_group_open_e(hid_t loc, const char *name, const char *path_for_msg, GtErr *e);
hid_t h5_group_open(hid_t loc, const char *name, const char *path_for_msg);

// 1 when the superblock of `path` says a writer still has it open (a crashed one, when no
// writer holds its lock): HDF5 then refuses it until the flags are cleared (h5clear -s).
int h5_left_open_by_writer(const char *path);

// ISO 8601 UTC timestamp "2026-11-29T09:00:00Z" into buf (>= 32 bytes).
void h5_iso8601_now(char *buf, size_t n);

#endif
