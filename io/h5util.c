// h5util.c - see h5util.h.
#include "h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static void dir_of(const char *path, char *dir, size_t n) {
    char *copy = gt_strdup(path);
    snprintf(dir, n, "%s", dirname(copy));
    free(copy);
}

void h5_check_output_path(const char *path, const char *flag, int force) {
    char dir[4096];
    struct stat st;
    if (!path || !*path) gt_fail_usage("%s: empty output path", flag);
    dir_of(path, dir, sizeof dir);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        gt_fail_usage("%s %s: directory '%s' does not exist", flag, path, dir);
    if (access(dir, W_OK) != 0) gt_fail_usage("%s %s: directory '%s' is not writable", flag, path, dir);
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) gt_fail_usage("%s %s: is a directory", flag, path);
        if (!force) gt_fail_usage("%s %s: file exists (use --force to overwrite)", flag, path);
    }
}

hid_t h5_create_tmp(const char *path, const char *format, char *tmp, size_t tmpsize) {
    snprintf(tmp, tmpsize, "%s.tmp-%ld", path, (long)getpid());
    gt_tmpfile_register(tmp);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(fapl, "");
    // 1.10 format: needed for SWMR readers of appendable files; h5py reads it fine.
    H5_CHECK(H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_LATEST), "");
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) gt_fail(GT_EXIT_RUNTIME, "cannot create '%s': %s", tmp, strerror(errno));
    h5_attr_write_str(f, "format", format);
    h5_attr_write_int(f, "format_version", GT_FORMAT_VERSION);
    return f;
}

static void fsync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

void h5_commit(hid_t file, const char *tmp, const char *path) {
    struct stat st;
    long long size = stat(tmp, &st) == 0 ? (long long)st.st_size : -1;
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0 || H5Fclose(file) < 0) {
        char dir[4096];
        dir_of(path, dir, sizeof dir);
        gt_fail(GT_EXIT_RUNTIME, "writing '%s' failed (about %lld bytes needed; is '%s' full?); the previous file, if any, is untouched",
                path, size, dir);
    }
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        gt_fail(GT_EXIT_RUNTIME, "writing '%s' failed: %s (about %lld bytes needed)", path, strerror(e), size);
    }
    close(fd);
    if (stat(tmp, &st) == 0) size = (long long)st.st_size;
    if (rename(tmp, path) != 0)
        gt_fail(GT_EXIT_RUNTIME, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    gt_tmpfile_forget(tmp);
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    fsync_path(dir);
}

// HDF5 1.10 can loop forever or crash on some damaged files (a corrupted global heap
// behind a string attribute: see tests/fuzz/known-hdf5). Opening and validating a file
// touches only its metadata, which takes milliseconds, so while that runs a watchdog turns
// a hang, and a signal handler a crash inside the library, into one "damaged file" error.
static char watchdog_msg[4608];
static size_t watchdog_len;

static char crash_msg[4608];
static const int watched_signals[3] = {SIGALRM, SIGSEGV, SIGBUS};
static struct sigaction saved_actions[3];
static size_t crash_len;

static void watchdog_fire(int sig) {
    int crashed = sig != SIGALRM;
    ssize_t rc = write(STDERR_FILENO, crashed ? crash_msg : watchdog_msg, crashed ? crash_len : watchdog_len);
    (void)rc;
    _exit(GT_EXIT_USAGE);
}

static void watchdog_arm(const char *path, const char *what) {
    const char *env = getenv("GT_H5_OPEN_TIMEOUT");
    unsigned secs = env && atoi(env) > 0 ? (unsigned)atoi(env) : 20;
    int n = snprintf(watchdog_msg, sizeof watchdog_msg,
                     "%s: error: %s '%s': HDF5 did not finish reading the file's metadata within %u s; the file is damaged\n",
                     gt_progname(), what, path, secs);
    watchdog_len = n < 0 ? 0 : ((size_t)n < sizeof watchdog_msg ? (size_t)n : sizeof watchdog_msg - 1);
    n = snprintf(crash_msg, sizeof crash_msg,
                 "%s: error: %s '%s': HDF5 crashed reading the file's metadata; the file is damaged\n",
                 gt_progname(), what, path);
    crash_len = n < 0 ? 0 : ((size_t)n < sizeof crash_msg ? (size_t)n : sizeof crash_msg - 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = watchdog_fire;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; i++) sigaction(watched_signals[i], &sa, &saved_actions[i]);
    alarm(secs);
}

// Puts back whatever was there before (Open MPI installs its own SIGSEGV handler).
static void watchdog_disarm(void) {
    alarm(0);
    for (int i = 0; i < 3; i++) sigaction(watched_signals[i], &saved_actions[i], NULL);
}

static hid_t open_checked_body(const char *path, const char *format, const char *what, unsigned flags) {
    struct stat st;
    if (stat(path, &st) != 0) gt_fail_usage("%s '%s': %s", what, path, strerror(errno));
    if (S_ISDIR(st.st_mode)) gt_fail_usage("%s '%s': is a directory, expected an HDF5 file", what, path);
    if (access(path, R_OK) != 0) gt_fail_usage("%s '%s': %s", what, path, strerror(errno));
    if (st.st_size == 0) gt_fail_usage("%s '%s': file is empty", what, path);
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) gt_fail_usage("%s '%s': not an HDF5 file (or its header is damaged)", what, path);
    hid_t f = H5Fopen(path, flags, H5P_DEFAULT);
    if (f < 0) gt_fail_usage("%s '%s': cannot be opened as HDF5 (truncated or damaged?)", what, path);
    char *fmt = h5_attr_read_str(f, "format");
    if (!fmt) {
        H5Fclose(f);
        gt_fail_usage("%s '%s': not a gpt-train file (no 'format' attribute; expected '%s')", what, path, format);
    }
    if (format && strcmp(fmt, format) != 0) {
        H5Fclose(f);
        gt_fail_usage("%s '%s': format is '%s', expected '%s'", what, path, fmt, format);
    }
    free(fmt);
    int64_t ver = 0;
    if (!h5_attr_read_int(f, "format_version", &ver) || ver != GT_FORMAT_VERSION) {
        H5Fclose(f);
        gt_fail_usage("%s '%s': format_version %lld is not supported (this gpt-train reads %d)", what, path,
                      (long long)ver, GT_FORMAT_VERSION);
    }
    return f;
}

// Guards nest: the outermost one names the file in the message.
static int guard_depth;

static void guard_begin(const char *path, const char *what) {
    if (guard_depth++ == 0) watchdog_arm(path, what);
}

static void guard_end(void) {
    if (--guard_depth == 0) watchdog_disarm();
}

// Variable-length strings live in the global heap, where the damage that trips libhdf5
// is found, so every such read is guarded too, naming the file it comes from.
static void guard_begin_loc(hid_t loc) {
    char name[4096] = "?";
    if (guard_depth == 0 && H5Fget_name(loc, name, sizeof name) < 0) snprintf(name, sizeof name, "?");
    guard_begin(name, "file");
}

static hid_t open_checked(const char *path, const char *format, const char *what, unsigned flags) {
    guard_begin(path, what);
    hid_t f = open_checked_body(path, format, what, flags);
    guard_end();
    return f;
}

hid_t h5_open_checked(const char *path, const char *format, const char *what) {
    return open_checked(path, format, what, H5F_ACC_RDONLY);
}

hid_t h5_open_rw_checked(const char *path, const char *format, const char *what, int swmr) {
    return open_checked(path, format, what, H5F_ACC_RDWR | (swmr ? H5F_ACC_SWMR_WRITE : 0));
}

static hid_t attr_replace(hid_t loc, const char *name, hid_t type) {
    if (H5Aexists(loc, name) > 0) H5_CHECK(H5Adelete(loc, name), "");
    hid_t sp = H5Screate(H5S_SCALAR);
    H5_CHECK(sp, "");
    hid_t a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(a, "attribute names must be unique and under 64 KiB");
    H5Sclose(sp);
    return a;
}

void h5_attr_write_int(hid_t loc, const char *name, int64_t v) {
    hid_t a = attr_replace(loc, name, H5T_STD_I64LE);
    H5_CHECK(H5Awrite(a, H5T_NATIVE_INT64, &v), "");
    H5Aclose(a);
}

void h5_attr_write_double(hid_t loc, const char *name, double v) {
    hid_t a = attr_replace(loc, name, H5T_IEEE_F64LE);
    H5_CHECK(H5Awrite(a, H5T_NATIVE_DOUBLE, &v), "");
    H5Aclose(a);
}

static hid_t vlen_utf8(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5_CHECK(t, "");
    H5_CHECK(H5Tset_size(t, H5T_VARIABLE), "");
    H5_CHECK(H5Tset_cset(t, H5T_CSET_UTF8), "");
    return t;
}

void h5_attr_write_str(hid_t loc, const char *name, const char *s) {
    hid_t t = vlen_utf8();
    hid_t a = attr_replace(loc, name, t);
    H5_CHECK(H5Awrite(a, t, &s), "");
    H5Aclose(a);
    H5Tclose(t);
}

static hid_t attr_open(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) return -1;
    return H5Aopen(loc, name, H5P_DEFAULT);
}

static int attr_is_scalar(hid_t a) {
    hid_t sp = H5Aget_space(a);
    hssize_t n = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5Sclose(sp);
    return n == 1;
}

int h5_attr_read_int(hid_t loc, const char *name, int64_t *v) {
    hid_t a = attr_open(loc, name);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a);
    int ok = t >= 0 && (H5Tget_class(t) == H5T_INTEGER || H5Tget_class(t) == H5T_ENUM) && attr_is_scalar(a) &&
             H5Aread(a, H5T_NATIVE_INT64, v) >= 0;
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return ok;
}

int h5_attr_read_double(hid_t loc, const char *name, double *v) {
    hid_t a = attr_open(loc, name);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a);
    H5T_class_t c = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    int ok = (c == H5T_FLOAT || c == H5T_INTEGER) && attr_is_scalar(a) && H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0;
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return ok;
}

static char *attr_read_str(hid_t loc, const char *name);

char *h5_attr_read_str(hid_t loc, const char *name) {
    guard_begin_loc(loc);
    char *s = attr_read_str(loc, name);
    guard_end();
    return s;
}

static char *attr_read_str(hid_t loc, const char *name) {
    hid_t a = attr_open(loc, name);
    if (a < 0) return NULL;
    hid_t ft = H5Aget_type(a);
    char *out = NULL;
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING && attr_is_scalar(a)) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t t = vlen_utf8();
            char *s = NULL;
            if (H5Aread(a, t, &s) >= 0 && s) {
                out = gt_strdup(s);
                H5free_memory(s);
            }
            H5Tclose(t);
        } else {
            size_t n = H5Tget_size(ft);
            out = gt_calloc(n + 1, 1, "string attribute");
            hid_t t = H5Tcopy(H5T_C_S1);
            if (t < 0 || H5Tset_size(t, n) < 0 || H5Aread(a, t, out) < 0) {
                free(out);
                out = NULL;
            }
            H5Tclose(t);
        }
    }
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return out;
}

// Link creation properties that create missing parent groups ("probe/tokens" makes /probe).
static hid_t lcpl_with_parents(void) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5_CHECK(lcpl, "");
    H5_CHECK(H5Pset_create_intermediate_group(lcpl, 1), "");
    return lcpl;
}

void h5_write_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                      const void *data, hsize_t chunk_rows, int deflate) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    H5_CHECK(sp, "");
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5_CHECK(dcpl, "");
    hsize_t total = 1;
    for (int i = 0; i < rank; i++) total *= dims[i];
    if (chunk_rows > 0 && rank > 0 && total > 0) {
        hsize_t chunk[8];
        for (int i = 0; i < rank; i++) chunk[i] = dims[i];
        chunk[0] = chunk_rows < dims[0] ? chunk_rows : dims[0];
        H5_CHECK(H5Pset_chunk(dcpl, rank, chunk), "");
        if (deflate) H5_CHECK(H5Pset_deflate(dcpl, 4), "");
        // A checksum per chunk, verified by HDF5 (and h5py) on every read: a flipped byte
        // becomes a failed read, reported as a damaged file, instead of wrong data.
        H5_CHECK(H5Pset_fletcher32(dcpl), "");
    }
    hid_t lcpl = lcpl_with_parents();
    hid_t d = H5Dcreate2(loc, name, type, sp, lcpl, dcpl, H5P_DEFAULT);
    H5_CHECK(d, "dataset names must be unique");
    if (total > 0) H5_CHECK(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "is the disk full?");
    H5Dclose(d);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    H5Sclose(sp);
}

int h5_exists(hid_t loc, const char *name) {
    // Walk component by component: H5Lexists fails on a missing intermediate group.
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", name);
    char *p = buf;
    if (*p == '/') p++;
    for (;;) {
        char *slash = strchr(p, '/');
        if (slash) *slash = '\0';
        if (H5Lexists(loc, buf, H5P_DEFAULT) <= 0) return 0;
        if (!slash) return 1;
        *slash = '/';
        p = slash + 1;
    }
}

int h5_dataset_shape(hid_t loc, const char *name, int *rank, hsize_t *dims) {
    if (!h5_exists(loc, name)) return 0;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return 0;
    hid_t sp = H5Dget_space(d);
    int r = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    if (r < 0 || r > 8) {
        if (sp >= 0) H5Sclose(sp);
        H5Dclose(d);
        return 0;
    }
    int got = H5Sget_simple_extent_dims(sp, dims, NULL);
    if (got != r) {
        H5Sclose(sp);
        H5Dclose(d);
        return 0;
    }
    *rank = r;
    H5Sclose(sp);
    H5Dclose(d);
    return 1;
}

void *h5_read_dataset(hid_t loc, const char *name, hid_t type, int *rank, hsize_t *dims, const char *path_for_msg) {
    if (!h5_dataset_shape(loc, name, rank, dims))
        gt_fail_usage("'%s': dataset '%s' is missing or unreadable", path_for_msg, name);
    size_t n = 1;
    for (int i = 0; i < *rank; i++) n *= dims[i];
    void *buf = gt_malloc(n * H5Tget_size(type), name);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0 || (n > 0 && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)) {
        if (d >= 0) H5Dclose(d);
        gt_fail_usage("'%s': dataset '%s' cannot be read (truncated or damaged file?)", path_for_msg, name);
    }
    H5Dclose(d);
    return buf;
}

void h5_write_strings(hid_t loc, const char *name, char *const *strs, size_t n) {
    hid_t t = vlen_utf8();
    hsize_t dims[1] = {n};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t lcpl = lcpl_with_parents();
    hid_t d = H5Dcreate2(loc, name, t, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(d, "");
    if (n > 0) H5_CHECK(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, strs), "is the disk full?");
    H5Dclose(d);
    H5Pclose(lcpl);
    H5Sclose(sp);
    H5Tclose(t);
}

static char **read_strings(hid_t loc, const char *name, size_t *n);

char **h5_read_strings(hid_t loc, const char *name, size_t *n) {
    guard_begin_loc(loc);
    char **strs = read_strings(loc, name, n);
    guard_end();
    return strs;
}

static char **read_strings(hid_t loc, const char *name, size_t *n) {
    int rank = 0;
    hsize_t dims[8];
    if (!h5_dataset_shape(loc, name, &rank, dims) || rank != 1) return NULL;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    hid_t t = vlen_utf8();
    char **raw = gt_calloc(dims[0] ? dims[0] : 1, sizeof(char *), name);
    if (d < 0 || (dims[0] > 0 && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0)) {
        if (d >= 0) H5Dclose(d);
        H5Tclose(t);
        free(raw);
        return NULL;
    }
    char **out = gt_calloc(dims[0] ? dims[0] : 1, sizeof(char *), name);
    for (hsize_t i = 0; i < dims[0]; i++) {
        out[i] = gt_strdup(raw[i] ? raw[i] : "");
        if (raw[i]) H5free_memory(raw[i]);
    }
    free(raw);
    H5Tclose(t);
    H5Dclose(d);
    *n = dims[0];
    return out;
}

void h5_free_strings(char **strs, size_t n) {
    if (!strs) return;
    for (size_t i = 0; i < n; i++) free(strs[i]);
    free(strs);
}

void h5_copy_group(hid_t src_file, const char *name, hid_t dst) {
    H5_CHECK(H5Ocopy(src_file, name, dst, name, H5P_DEFAULT, H5P_DEFAULT), "is the disk full?");
}

hid_t h5_group_create(hid_t loc, const char *name) {
    if (h5_exists(loc, name)) {
        hid_t g = H5Gopen2(loc, name, H5P_DEFAULT);
        H5_CHECK(g, "");
        return g;
    }
    hid_t lcpl = lcpl_with_parents();
    hid_t g = H5Gcreate2(loc, name, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    H5_CHECK(g, "");
    return g;
}

hid_t h5_group_open(hid_t loc, const char *name, const char *path_for_msg) {
    hid_t g = h5_exists(loc, name) ? H5Gopen2(loc, name, H5P_DEFAULT) : -1;
    if (g < 0) gt_fail_usage("'%s': group '%s' is missing or unreadable", path_for_msg, name);
    return g;
}

void h5_iso8601_now(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}
