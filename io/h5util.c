// h5util.c - see h5util.h.
#include "h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "files.h"
#include "signals.h"

void h5_quiet(void) {
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

// ---- errors ----

static herr_t find_errno(unsigned n, const H5E_error2_t *err, void *data) {
    (void)n;
    const char *p = err->desc ? strstr(err->desc, "errno = ") : NULL;
    if (p && atoi(p + 8) > 0) {
        *(int *)data = atoi(p + 8);
        return 1;  // the innermost system error: stop
    }
    return 0;
}

// The errno of the system call behind the last HDF5 failure (HDF5's file drivers record
// it in the error stack's text), or 0.
static int last_errno(void) {
    int err = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, find_errno, &err);
    return err;
}

void h5_err_call(GtErr *e, const char *call, const char *file, int line) {
    if (gt_failed(e)) return;
    int err = last_errno();
    // A system error (a full disk) is the machine's, not the code's: no source location.
    if (err) gt_err(e, GT_EXIT_RUNTIME, "%s (HDF5: %s)", strerror(err), call);
    else gt_err_at(e, GT_EXIT_RUNTIME, file, line, "HDF5 call failed: %s", call);
    e->errnum = err;
}

void h5_close(hid_t id, GtErr *e) {
    if (id < 0) return;
    herr_t rc;
    const char *call;
    switch (H5Iget_type(id)) {
    case H5I_FILE: rc = H5Fclose(id), call = "H5Fclose"; break;
    case H5I_GROUP: rc = H5Gclose(id), call = "H5Gclose"; break;
    case H5I_DATASET: rc = H5Dclose(id), call = "H5Dclose"; break;
    case H5I_ATTR: rc = H5Aclose(id), call = "H5Aclose"; break;
    case H5I_DATATYPE: rc = H5Tclose(id), call = "H5Tclose"; break;
    case H5I_DATASPACE: rc = H5Sclose(id), call = "H5Sclose"; break;
    case H5I_GENPROP_LST: rc = H5Pclose(id), call = "H5Pclose"; break;
    default: rc = H5Idec_ref(id), call = "H5Idec_ref"; break;
    }
    if (rc < 0) h5_err_call(e, call, __FILE__, __LINE__);
}

// ---- output ----

static void dir_of(const char *path, char *dir, size_t n) {
    char *copy = gt_strdup(path);
    snprintf(dir, n, "%s", dirname(copy));
    free(copy);
}

int h5_check_output_path_e(const char *path, const char *flag, int force, GtErr *e) {
    char dir[4096];
    struct stat st;
    if (gt_failed(e)) return -1;
    if (!path || !*path) return gt_err(e, GT_EXIT_USAGE, "%s: empty output path", flag);
    dir_of(path, dir, sizeof dir);
    if (stat(dir, &st) != 0) {
        if (errno == ENOTDIR)
            return gt_err(e, GT_EXIT_USAGE, "%s %s: a parent of '%s' is a file, not a directory", flag, path, dir);
        return gt_err(e, GT_EXIT_USAGE, "%s %s: directory '%s' does not exist", flag, path, dir);
    }
    if (!S_ISDIR(st.st_mode)) return gt_err(e, GT_EXIT_USAGE, "%s %s: '%s' is a file, not a directory", flag, path, dir);
    if (access(dir, W_OK) != 0) return gt_err(e, GT_EXIT_USAGE, "%s %s: directory '%s' is not writable", flag, path, dir);
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return gt_err(e, GT_EXIT_USAGE, "%s %s: is a directory", flag, path);
        if (!force) return gt_err(e, GT_EXIT_USAGE, "%s %s: file exists (use --force to overwrite)", flag, path);
        if (!S_ISREG(st.st_mode))
            return gt_err(e, GT_EXIT_USAGE, "%s %s: exists and is not a regular file; --force replaces only files",
                          flag, path);
    }
    return 0;
}

void h5_check_output_path(const char *path, const char *flag, int force) {
    GtErr e = GT_ERR_INIT;
    if (h5_check_output_path_e(path, flag, force, &e)) gt_err_exit(&e);
}

hid_t h5_create_tmp_e(const char *path, const char *format, char *tmp, size_t tmpsize, GtErr *e) {
    tmp[0] = '\0';
    if (gt_failed(e)) return -1;
    snprintf(tmp, tmpsize, "%s.tmp-%ld", path, (long)getpid());
    gt_tmpfile_register(tmp);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), f = -1;
    // 1.10 format: needed for SWMR readers of appendable files; h5py reads it fine.
    if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_LATEST) < 0)
        h5_err_call(e, "H5Pset_libver_bounds", __FILE__, __LINE__);
    else if ((f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl)) < 0) {
        int err = last_errno();
        gt_err(e, GT_EXIT_RUNTIME, "cannot create '%s': %s", tmp, err ? strerror(err) : "HDF5 refused it");
        e->errnum = err;
    }
    h5_close(fapl, e);
    if (f < 0) {
        remove(tmp);
        gt_tmpfile_forget(tmp);
        tmp[0] = '\0';
        return -1;
    }
    h5_attr_write_str_e(f, "format", format, e);
    h5_attr_write_int_e(f, "format_version", GT_FORMAT_VERSION, e);
    signals_test_point("write");
    return f;
}

hid_t h5_create_tmp(const char *path, const char *format, char *tmp, size_t tmpsize) {
    GtErr e = GT_ERR_INIT;
    hid_t f = h5_create_tmp_e(path, format, tmp, tmpsize, &e);
    if (gt_failed(&e)) {
        h5_commit_e(f, tmp, path, &e);
        gt_err_exit(&e);
    }
    return f;
}

// Rewords a write failure recorded in *e as "writing 'path' failed: <why>", with the figures
// a user needs for a full disk or the file size limit. size: the file's size so far, or -1.
// tmp: the temp file, whose space counts as free (it is about to go).
static void write_failed(GtErr *e, const char *path, const char *tmp, long long size) {
    if (e->status != GT_EXIT_RUNTIME) return;
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    struct statvfs vfs;
    struct rlimit rl;
    struct stat st;
    long long held = stat(tmp, &st) == 0 ? (long long)st.st_blocks * 512 : 0;
    gt_err_prefix(e, "writing '%s' failed: ", path);
    if (size > 0) gt_err_append(e, "; the file needs at least %lld bytes", size);
    if (e->errnum == ENOSPC && statvfs(dir, &vfs) == 0)
        gt_err_append(e, ", %lld are free in '%s'", (long long)vfs.f_bavail * (long long)vfs.f_frsize + held, dir);
    else if (e->errnum == EFBIG && getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        gt_err_append(e, "; the file size limit (ulimit -f) is %llu bytes", (unsigned long long)rl.rlim_cur);
    gt_err_append(e, "; the previous file, if any, is untouched");
}

// Removes what a failed writer leaves: its ids (the file may stay open inside HDF5 when
// its close fails too; h5_quiet keeps HDF5 from touching it again at exit) and the temp
// file. Returns -1.
static int abandon(hid_t file, const char *tmp, const char *path, GtErr *e, long long size) {
    if (file >= 0) {
        hsize_t sz = 0;
        if (size < 0 && H5Fget_filesize(file, &sz) >= 0) size = (long long)sz;
        hid_t ids[64];
        ssize_t n = H5Fget_obj_ids(file, H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR | H5F_OBJ_LOCAL,
                                   64, ids);
        for (ssize_t i = 0; i < n; i++) h5_close(ids[i], e);
        h5_close(file, e);
    }
    if (*tmp) {
        if (file >= 0 || size >= 0) write_failed(e, path, tmp, size);
        remove(tmp);
        gt_tmpfile_forget(tmp);
    }
    return -1;
}

int h5_commit_e(hid_t file, const char *tmp, const char *path, GtErr *e) {
    if (file < 0 || gt_failed(e)) return abandon(file, tmp, path, e, -1);
    // HDF5 writes most of the file here (cached metadata and chunks): both calls are checked.
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) {
        h5_err_call(e, "H5Fflush", __FILE__, __LINE__);
        return abandon(file, tmp, path, e, -1);
    }
    hsize_t size = 0;
    if (H5Fget_filesize(file, &size) < 0) size = 0;
    if (H5Fclose(file) < 0) {
        h5_err_call(e, "H5Fclose", __FILE__, __LINE__);
        return abandon(-1, tmp, path, e, (long long)size);
    }
    int fd = open(tmp, O_RDONLY | O_CLOEXEC), err = 0;
    if (fd < 0 || fsync(fd) != 0) err = errno;
    if (fd >= 0 && close(fd) != 0 && !err) err = errno;
    if (!err && rename(tmp, path) != 0) err = errno;
    if (err) {
        gt_err(e, GT_EXIT_RUNTIME, "%s", strerror(err));
        e->errnum = err;
        return abandon(-1, tmp, path, e, (long long)size);
    }
    gt_tmpfile_forget(tmp);
    // The rename is durable once the directory is synced; some filesystems cannot sync a
    // directory (EINVAL), which says nothing about the file.
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (fsync(fd) != 0 && errno == EIO) {
            gt_err(e, GT_EXIT_RUNTIME, "'%s' was written, but syncing its directory '%s' failed: %s", path, dir,
                   strerror(EIO));
            e->errnum = EIO;
        }
        close(fd);
    }
    return gt_failed(e) ? -1 : 0;
}

void h5_commit(hid_t file, const char *tmp, const char *path) {
    GtErr e = GT_ERR_INIT;
    if (h5_commit_e(file, tmp, path, &e)) gt_err_exit(&e);
}

// ---- input ----

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


int h5_left_open_by_writer(const char *path) {
    // Superblock versions 2 and 3 (the 1.10 format) keep the file consistency flags in byte
    // 11; bits 0 and 2 are write and SWMR-write access.
    unsigned char sb[12];
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    size_t got = fread(sb, 1, sizeof sb, fp);
    fclose(fp);
    return got == sizeof sb && memcmp(sb, "\211HDF\r\n\032\n", 8) == 0 && sb[8] >= 2 && (sb[11] & 0x5) != 0;
}

// Said of a file that was there a moment ago: HDF5 then fails without an errno (a stat
// inside H5Fopen) or reads nothing, which looks like damage.
#define VANISHED "no longer exists: it was removed while being opened (by another program: a training run's " \
                 "--keep-ckpts removing old checkpoints?)"

void h5_open_failure(const char *path, int write, char *buf, size_t n) {
    int err = last_errno();
    struct stat st;
    if ((err == 0 || err == ENOENT) && stat(path, &st) != 0 && errno == ENOENT) {
        snprintf(buf, n, VANISHED);
        return;
    }
    // HDF5 locks a file it opens (flock: shared to read, exclusive to write); a lock held
    // elsewhere is a program that has the file open, not damage.
    int locked = err == EWOULDBLOCK || err == EAGAIN;
    if (!locked) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0) {
            locked = flock(fd, (write ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 && errno == EWOULDBLOCK;
            close(fd);
        }
    }
    if (locked)
        snprintf(buf, n, "is open in another program (its HDF5 file lock is held%s); close that program, or wait "
                 "for it to finish", write ? "" : " by a writer");
    else if (h5_left_open_by_writer(path))
        snprintf(buf, n, "is marked as open for writing: a program is writing it, or one ended without closing it "
                 "(then `h5clear -s '%s'` clears the mark)", path);
    else if (err)
        snprintf(buf, n, "cannot be opened: %s", strerror(err));
    else
        snprintf(buf, n, "cannot be opened as HDF5 (truncated or damaged?)");
}

int h5_is_hdf5_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && H5Fis_hdf5(path) > 0;
}

static hid_t open_checked_body(const char *path, const char *format, const char *what, unsigned flags, GtErr *e) {
    struct stat st;
    if (stat(path, &st) != 0) return gt_err(e, GT_EXIT_USAGE, "%s '%s': %s", what, path, strerror(errno));
    // HDF5 would block forever opening a FIFO and read a device without end.
    if (!S_ISREG(st.st_mode))
        return gt_err(e, GT_EXIT_USAGE, "%s '%s': is %s, expected an HDF5 file", what, path, gt_file_kind(st.st_mode));
    if (access(path, (flags & H5F_ACC_RDWR) ? R_OK | W_OK : R_OK) != 0)
        return gt_err(e, GT_EXIT_USAGE, "%s '%s': %s", what, path, strerror(errno));
    if (st.st_size == 0) return gt_err(e, GT_EXIT_USAGE, "%s '%s': file is empty", what, path);
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0 && stat(path, &st) != 0 && errno == ENOENT)
        return gt_err(e, GT_EXIT_USAGE, "%s '%s': %s", what, path, VANISHED);
    if (is <= 0) return gt_err(e, GT_EXIT_USAGE, "%s '%s': not an HDF5 file (or its header is damaged)", what, path);
    hid_t f = H5Fopen(path, flags, H5P_DEFAULT);
    if (f < 0) {
        char why[4600];
        h5_open_failure(path, (flags & H5F_ACC_RDWR) != 0, why, sizeof why);
        return gt_err(e, GT_EXIT_USAGE, "%s '%s': %s", what, path, why);
    }
    char *fmt = h5_attr_read_str(f, "format");
    int64_t ver = 0;
    if (!fmt)
        gt_err(e, GT_EXIT_USAGE, "%s '%s': not a gpt-train file (no 'format' attribute; expected '%s')", what, path,
               format);
    else if (format && strcmp(fmt, format) != 0)
        gt_err(e, GT_EXIT_USAGE, "%s '%s': format is '%s', expected '%s'", what, path, fmt, format);
    else if (!h5_attr_read_int(f, "format_version", &ver) || ver != GT_FORMAT_VERSION)
        gt_err(e, GT_EXIT_USAGE, "%s '%s': format_version %lld is not supported (this gpt-train reads %d)", what, path,
               (long long)ver, GT_FORMAT_VERSION);
    free(fmt);
    if (gt_failed(e)) {
        H5Fclose(f);
        return -1;
    }
    return f;
}

static hid_t open_checked(const char *path, const char *format, const char *what, unsigned flags, GtErr *e) {
    if (gt_failed(e)) return -1;
    guard_begin(path, what);
    hid_t f = open_checked_body(path, format, what, flags, e);
    guard_end();
    return f;
}

hid_t h5_open_checked_e(const char *path, const char *format, const char *what, GtErr *e) {
    return open_checked(path, format, what, H5F_ACC_RDONLY, e);
}

hid_t h5_open_checked(const char *path, const char *format, const char *what) {
    GtErr e = GT_ERR_INIT;
    hid_t f = h5_open_checked_e(path, format, what, &e);
    if (f < 0) gt_err_exit(&e);
    return f;
}

hid_t h5_open_rw_checked_e(const char *path, const char *format, const char *what, int swmr, GtErr *e) {
    return open_checked(path, format, what, H5F_ACC_RDWR | (swmr ? H5F_ACC_SWMR_WRITE : 0), e);
}

// ---- attributes ----

static hid_t attr_replace(hid_t loc, const char *name, hid_t type, GtErr *e) {
    hid_t sp = -1, a = -1;
    htri_t has = H5Aexists(loc, name);
    H5_TRY(has);
    if (has > 0) H5_TRY(H5Adelete(loc, name));
    H5_TRY(sp = H5Screate(H5S_SCALAR));
    H5_TRY(a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT));
fail:
    h5_close(sp, e);
    return a;
}

static int attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v, GtErr *e) {
    if (gt_failed(e)) return -1;
    hid_t a = attr_replace(loc, name, ftype, e);
    if (a >= 0) H5_TRY(H5Awrite(a, mtype, v));
fail:
    h5_close(a, e);
    return gt_failed(e) ? -1 : 0;
}

int h5_attr_write_int_e(hid_t loc, const char *name, int64_t v, GtErr *e) {
    return attr_write(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v, e);
}

int h5_attr_write_double_e(hid_t loc, const char *name, double v, GtErr *e) {
    return attr_write(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, e);
}

// A variable-length UTF-8 string type (the caller closes it); -1 with *e set on failure.
static hid_t vlen_utf8(GtErr *e) {
    hid_t t = -1;
    H5_TRY(t = H5Tcopy(H5T_C_S1));
    H5_TRY(H5Tset_size(t, H5T_VARIABLE));
    H5_TRY(H5Tset_cset(t, H5T_CSET_UTF8));
    return t;
fail:
    h5_close(t, e);
    return -1;
}

int h5_attr_write_str_e(hid_t loc, const char *name, const char *s, GtErr *e) {
    if (gt_failed(e)) return -1;
    hid_t t = vlen_utf8(e);
    if (t >= 0) attr_write(loc, name, t, t, &s, e);
    h5_close(t, e);
    return gt_failed(e) ? -1 : 0;
}

void h5_attr_write_int(hid_t loc, const char *name, int64_t v) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, h5_attr_write_int_e(loc, name, v, &e));
}

void h5_attr_write_double(hid_t loc, const char *name, double v) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, h5_attr_write_double_e(loc, name, v, &e));
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
            GtErr ignore = GT_ERR_INIT;
            hid_t t = vlen_utf8(&ignore);
            char *s = NULL;
            if (t >= 0 && H5Aread(a, t, &s) >= 0 && s) {
                out = gt_strdup(s);
                H5free_memory(s);
            }
            if (t >= 0) H5Tclose(t);
        } else {
            size_t n = H5Tget_size(ft);
            out = gt_calloc(n + 1, 1, "string attribute");
            hid_t t = H5Tcopy(H5T_C_S1);
            if (t < 0 || H5Tset_size(t, n) < 0 || H5Aread(a, t, out) < 0) {
                free(out);
                out = NULL;
            }
            if (t >= 0) H5Tclose(t);
        }
    }
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return out;
}

// ---- datasets ----

// Link creation properties that create missing parent groups ("probe/tokens" makes /probe).
static hid_t lcpl_with_parents(GtErr *e) {
    hid_t lcpl = -1;
    H5_TRY(lcpl = H5Pcreate(H5P_LINK_CREATE));
    H5_TRY(H5Pset_create_intermediate_group(lcpl, 1));
    return lcpl;
fail:
    h5_close(lcpl, e);
    return -1;
}

int h5_write_dataset_e(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims, const void *data,
                       hsize_t chunk_rows, int deflate, GtErr *e) {
    if (gt_failed(e)) return -1;
    hid_t sp = -1, dcpl = -1, lcpl = -1, d = -1;
    hsize_t total = 1;
    for (int i = 0; i < rank; i++) total *= dims[i];
    H5_TRY(sp = H5Screate_simple(rank, dims, NULL));
    H5_TRY(dcpl = H5Pcreate(H5P_DATASET_CREATE));
    if (chunk_rows > 0 && rank > 0 && total > 0) {
        hsize_t chunk[8];
        for (int i = 0; i < rank; i++) chunk[i] = dims[i];
        chunk[0] = chunk_rows < dims[0] ? chunk_rows : dims[0];
        H5_TRY(H5Pset_chunk(dcpl, rank, chunk));
        if (deflate) H5_TRY(H5Pset_deflate(dcpl, 4));
        // A checksum per chunk, verified by HDF5 (and h5py) on every read: a flipped byte
        // becomes a failed read, reported as a damaged file, instead of wrong data.
        H5_TRY(H5Pset_fletcher32(dcpl));
    }
    if ((lcpl = lcpl_with_parents(e)) < 0) goto fail;
    H5_TRY(d = H5Dcreate2(loc, name, type, sp, lcpl, dcpl, H5P_DEFAULT));
    if (total > 0) H5_TRY(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
fail:
    // Closing the dataset writes the chunks HDF5 cached: a full disk often shows only here.
    h5_close(d, e);
    h5_close(lcpl, e);
    h5_close(dcpl, e);
    h5_close(sp, e);
    return gt_failed(e) ? -1 : 0;
}

void h5_write_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                      const void *data, hsize_t chunk_rows, int deflate) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, h5_write_dataset_e(loc, name, type, rank, dims, data, chunk_rows, deflate, &e));
}

hid_t h5_create_extendable_e(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *rec, hsize_t chunk0,
                             int deflate, int checksum, GtErr *e) {
    if (gt_failed(e)) return -1;
    hsize_t dims[8] = {0}, maxdims[8] = {H5S_UNLIMITED}, chunk[8] = {chunk0};
    for (int i = 1; i < rank; i++) dims[i] = maxdims[i] = chunk[i] = rec[i];
    hid_t sp = -1, dcpl = -1, d = -1;
    H5_TRY(sp = H5Screate_simple(rank, dims, maxdims));
    H5_TRY(dcpl = H5Pcreate(H5P_DATASET_CREATE));
    H5_TRY(H5Pset_chunk(dcpl, rank, chunk));
    if (deflate) H5_TRY(H5Pset_deflate(dcpl, 4));
    if (checksum) H5_TRY(H5Pset_fletcher32(dcpl));
    H5_TRY(d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
fail:
    h5_close(dcpl, e);
    h5_close(sp, e);
    return d;
}

int h5_set_length_e(hid_t d, int rank, const hsize_t *rec, long long n, GtErr *e) {
    if (gt_failed(e)) return -1;
    hsize_t dims[8];
    for (int i = 0; i < rank; i++) dims[i] = rec[i];
    dims[0] = (hsize_t)n;
    H5_TRY(H5Dset_extent(d, dims));
    return 0;
fail:
    return -1;
}

int h5_append_e(hid_t d, hid_t memtype, int rank, const hsize_t *rec, long long n, long long k, const void *buf,
                GtErr *e) {
    if (h5_set_length_e(d, rank, rec, n + k, e)) return -1;
    if (k == 0) return 0;
    hsize_t start[8] = {(hsize_t)n}, count[8] = {(hsize_t)k};
    for (int i = 1; i < rank; i++) count[i] = rec[i];
    hid_t fs = -1, ms = -1;
    H5_TRY(fs = H5Dget_space(d));
    H5_TRY(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL));
    H5_TRY(ms = H5Screate_simple(rank, count, NULL));
    H5_TRY(H5Dwrite(d, memtype, ms, fs, H5P_DEFAULT, buf));
fail:
    h5_close(ms, e);
    h5_close(fs, e);
    return gt_failed(e) ? -1 : 0;
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
    int ok = r >= 0 && r <= 8 && H5Sget_simple_extent_dims(sp, dims, NULL) == r;
    if (ok) *rank = r;
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    return ok;
}

void *h5_read_dataset_e(hid_t loc, const char *name, hid_t type, int *rank, hsize_t *dims,
                        const char *path_for_msg, GtErr *e) {
    if (gt_failed(e)) return NULL;
    if (!h5_dataset_shape(loc, name, rank, dims)) {
        gt_err(e, GT_EXIT_USAGE, "'%s': dataset '%s' is missing or unreadable", path_for_msg, name);
        return NULL;
    }
    size_t n = 1;
    for (int i = 0; i < *rank; i++) n *= dims[i];
    void *buf = gt_malloc(n * H5Tget_size(type), name);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0 || (n > 0 && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)) {
        gt_err(e, GT_EXIT_USAGE, "'%s': dataset '%s' cannot be read (truncated or damaged file?)", path_for_msg, name);
        free(buf);
        buf = NULL;
    }
    if (d >= 0) H5Dclose(d);
    return buf;
}

void *h5_read_dataset(hid_t loc, const char *name, hid_t type, int *rank, hsize_t *dims, const char *path_for_msg) {
    GtErr e = GT_ERR_INIT;
    void *buf = h5_read_dataset_e(loc, name, type, rank, dims, path_for_msg, &e);
    if (!buf) gt_err_exit(&e);
    return buf;
}

int h5_write_strings_e(hid_t loc, const char *name, char *const *strs, size_t n, GtErr *e) {
    if (gt_failed(e)) return -1;
    hsize_t dims[1] = {n};
    hid_t t = vlen_utf8(e);
    h5_write_dataset_e(loc, name, t, 1, dims, strs, 0, 0, e);
    h5_close(t, e);
    return gt_failed(e) ? -1 : 0;
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
    GtErr ignore = GT_ERR_INIT;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT), t = vlen_utf8(&ignore);
    char **raw = gt_calloc(dims[0] ? dims[0] : 1, sizeof(char *), name);
    if (d < 0 || t < 0 || (dims[0] > 0 && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0)) {
        if (d >= 0) H5Dclose(d);
        if (t >= 0) H5Tclose(t);
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

hid_t h5_group_create_e(hid_t loc, const char *name, GtErr *e) {
    if (gt_failed(e)) return -1;
    hid_t g = -1, lcpl = -1;
    if (h5_exists(loc, name)) {
        H5_TRY(g = H5Gopen2(loc, name, H5P_DEFAULT));
        return g;
    }
    if ((lcpl = lcpl_with_parents(e)) < 0) goto fail;
    H5_TRY(g = H5Gcreate2(loc, name, lcpl, H5P_DEFAULT, H5P_DEFAULT));
fail:
    h5_close(lcpl, e);
    return g;
}

hid_t h5_group_open_e(hid_t loc, const char *name, const char *path_for_msg, GtErr *e) {
    if (gt_failed(e)) return -1;
    hid_t g = h5_exists(loc, name) ? H5Gopen2(loc, name, H5P_DEFAULT) : -1;
    if (g < 0) gt_err(e, GT_EXIT_USAGE, "'%s': group '%s' is missing or unreadable", path_for_msg, name);
    return g;
}

hid_t h5_group_open(hid_t loc, const char *name, const char *path_for_msg) {
    GtErr e = GT_ERR_INIT;
    hid_t g = h5_group_open_e(loc, name, path_for_msg, &e);
    if (g < 0) gt_err_exit(&e);
    return g;
}

void h5_iso8601_now(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}
