// attention_io.c - see attention_io.h.
//
// Layout (docs/formats.md, attention.h5): root attrs n_layer, n_head, every;
// /probe/token_ids int32 (T,), /probe/tokens str (T,); /step int64 (N,), /loss float32 (N,),
// /attention (N, L, H, T, T) float32 or float16, chunked one record per chunk, deflate;
// /token_loss float32 (N, T-1) (none for a one-token probe: nothing to predict).
// N is the unlimited dimension.
//
// Crash safety: the empty file is made under a temp name, switched to SWMR writing, then
// renamed into place (so no reader can hold it before the writer). A resume does the same with
// a copy of the old file: readers attached to it (h5py swmr=True, or one that reopens it on
// every poll) keep the old inode and never stand in the writer's way. Each record writes
// /attention, /token_loss, then /loss, then /step (the last one is the "commit"), each
// flushed; readers take N = the shortest of them.
#define _GNU_SOURCE  // copy_file_range
#include "attention_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "error.h"
#include "files.h"
#include "h5util.h"
#include "utf8.h"

struct AttnWriter {
    char *path;
    hid_t file;
    hid_t d_step, d_loss, d_att;
    hid_t d_tl;           // /token_loss (T-1 per record); -1 for a one-token probe
    int L, NH, T, float16;
    int dtype_required;   // resuming: a file of the other dtype is refused (ATTN_DTYPE_REQUIRED)
    int adopt;            // trimming only: shape, probe and every are the file's own
    int32_t *probe;       // (T) ids
    long long n;          // records in the file
    long long last_step;  // -1 when empty
    uint16_t *half;       // (L, NH, T, T) conversion scratch for float16 files
};

// ---- token text ----

char *token_text_utf8(const Tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->vocab_size) return gt_strdup("\xEF\xBF\xBD");
    int64_t a = tok->token_offsets[id], b = tok->token_offsets[id + 1];
    return utf8_sanitize(tok->token_bytes + a, (size_t)(b - a));
}

// ---- float16 ----

uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, mant = x & 0x7FFFFF;
    int32_t exp = (int32_t)((x >> 23) & 0xFF);
    if (exp == 255) return (uint16_t)(sign | 0x7C00 | (mant ? 0x200 : 0));
    int32_t e = exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7C00);
    if (e <= 0) {  // half subnormal: value = m * 2^-24
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000;
        int shift = 14 - e;
        uint32_t m = mant >> shift, rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;  // a carry into the exponent is right
    return (uint16_t)h;
}

hid_t h5_half_type_e(GtErr *e) {
    if (gt_failed(e)) return -1;
    hid_t t = -1;
    H5_TRY(t = H5Tcopy(H5T_IEEE_F32LE));
    H5_TRY(H5Tset_fields(t, 15, 10, 5, 0, 10));
    H5_TRY(H5Tset_size(t, 2));
    H5_TRY(H5Tset_ebias(t, 15));
    H5_TRY(H5Tset_precision(t, 16));
    return t;
fail:
    h5_close(t, e);
    return -1;
}

// ---- the file ----

// Writers still open when the process exits are closed then (atexit), so a run that stops
// on an error elsewhere leaves a file any reader opens, not one marked as still being
// written. h5_quiet turns HDF5's own teardown off, so nothing else would close it.
#define MAX_WRITERS 8
static AttnWriter *open_writers[MAX_WRITERS];

static void close_at_exit(void) {
    for (int i = 0; i < MAX_WRITERS; i++)
        if (open_writers[i]) {
            GtErr ignore = GT_ERR_INIT;
            attn_writer_close_e(open_writers[i], &ignore);
        }
}

static void track(AttnWriter *w, int on) {
    static int registered;
    if (!registered) registered = atexit(close_at_exit) == 0;
    for (int i = 0; i < MAX_WRITERS; i++)
        if (on ? !open_writers[i] : open_writers[i] == w) {
            open_writers[i] = on ? w : NULL;
            return;
        }
}

static int open_datasets(AttnWriter *w, GtErr *e) {
    if (gt_failed(e)) return -1;
    H5_TRY(w->d_step = H5Dopen2(w->file, "step", H5P_DEFAULT));
    H5_TRY(w->d_loss = H5Dopen2(w->file, "loss", H5P_DEFAULT));
    H5_TRY(w->d_att = H5Dopen2(w->file, "attention", H5P_DEFAULT));
    if (w->T > 1) H5_TRY(w->d_tl = H5Dopen2(w->file, "token_loss", H5P_DEFAULT));
    return 0;
fail:
    return -1;
}

// Switches a new file to SWMR writing and flushes. From here on no object or attribute can
// be created, only datasets extended and written.
static int start_swmr(AttnWriter *w, GtErr *e) {
    if (open_datasets(w, e)) return -1;
    H5_TRY(H5Fstart_swmr_write(w->file));  // the file must be in the HDF5 1.10 format
    H5_TRY(H5Fflush(w->file, H5F_SCOPE_LOCAL));
    return 0;
fail:
    return -1;
}

// Publishes the file written under tmp (open for SWMR writing already, so a reader polling for
// it can never open it first and take the lock that would keep this writer out): fsync, then
// rename over w->path.
static int publish(AttnWriter *w, const char *tmp, GtErr *e) {
    int fd = open(tmp, O_RDONLY), err = 0;
    if (fd < 0 || fsync(fd) != 0) err = errno;
    if (fd >= 0 && close(fd) != 0 && !err) err = errno;
    if (!err && rename(tmp, w->path) != 0) err = errno;
    if (err) {
        gt_err(e, GT_EXIT_RUNTIME, "writing '%s' failed: %s", w->path, strerror(err));
        e->errnum = err;
        remove(tmp);
    }
    gt_tmpfile_forget(tmp);
    return gt_failed(e) ? -1 : 0;
}

// /token_loss (N, T-1), 64 records per chunk.
static hid_t create_token_loss(hid_t f, int T, GtErr *e) {
    hsize_t rec[2] = {0, (hsize_t)(T - 1)};
    hid_t d = h5_create_extendable_e(f, "token_loss", H5T_IEEE_F32LE, 2, rec, 64, 0, 0, e);
    h5_attr_write_str_e(d, "axes", "step,token (the loss on token t+1 given tokens 0..t)", e);
    return d;
}

static int create_file(AttnWriter *w, const Tokenizer *tok, int every, GtErr *e) {
    char tmp[4200];
    hid_t f = h5_create_tmp_e(w->path, GT_FORMAT_ATTENTION, tmp, sizeof tmp, e);
    h5_attr_write_int_e(f, "n_layer", w->L, e);
    h5_attr_write_int_e(f, "n_head", w->NH, e);
    h5_attr_write_int_e(f, "every", every, e);

    char **text = gt_malloc((size_t)w->T * sizeof(char *), "probe tokens");
    for (int t = 0; t < w->T; t++) text[t] = token_text_utf8(tok, w->probe[t]);
    hsize_t tdim[1] = {(hsize_t)w->T};
    h5_write_dataset_e(f, "probe/token_ids", H5T_STD_I32LE, 1, tdim, w->probe, 0, 0, e);
    h5_write_strings_e(f, "probe/tokens", text, (size_t)w->T, e);
    for (int t = 0; t < w->T; t++) free(text[t]);
    free(text);

    hsize_t rec[5] = {0, (hsize_t)w->L, (hsize_t)w->NH, (hsize_t)w->T, (hsize_t)w->T};
    h5_close(h5_create_extendable_e(f, "step", H5T_STD_I64LE, 1, rec, 256, 0, 0, e), e);
    h5_close(h5_create_extendable_e(f, "loss", H5T_IEEE_F32LE, 1, rec, 256, 0, 0, e), e);
    if (w->T > 1) h5_close(create_token_loss(f, w->T, e), e);
    hid_t ft = -1;
    if (!gt_failed(e) && (ft = w->float16 ? h5_half_type_e(e) : H5Tcopy(H5T_IEEE_F32LE)) < 0)
        h5_err_call(e, "H5Tcopy", __FILE__, __LINE__);
    hid_t d = h5_create_extendable_e(f, "attention", ft, 5, rec, 1, 1, 0, e);
    h5_attr_write_str_e(d, "axes", "step,layer,head,query,key", e);
    h5_close(d, e);
    h5_close(ft, e);
    if (!gt_failed(e)) {
        w->file = f;
        start_swmr(w, e);
    }
    if (gt_failed(e)) {
        h5_close(w->d_step, e), h5_close(w->d_loss, e), h5_close(w->d_att, e), h5_close(w->d_tl, e);
        w->d_step = w->d_loss = w->d_att = w->d_tl = w->file = -1;
        return h5_commit_e(f, tmp, w->path, e);  // removes the temp file, names the reason
    }
    return publish(w, tmp, e);
}

// Length of dim 0, or -1 when the dataset's metadata cannot be read (a damaged file).
static long long dataset_len(hid_t d) {
    hid_t sp = H5Dget_space(d);
    if (sp < 0) return -1;
    hsize_t dims[8];
    int ok = H5Sget_simple_extent_dims(sp, dims, NULL) >= 0;
    H5Sclose(sp);
    return ok ? (long long)dims[0] : -1;
}

// Reads records start .. start+count[0]-1 of d (a rank-dimensional dataset, count the
// whole selection) into buf as memtype. Returns 1 when it could, 0 on a damaged file.
static int read_records(hid_t d, int rank, hsize_t start, const hsize_t *count, hid_t memtype, void *buf) {
    hsize_t first[8] = {start};
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, count, NULL);
    int ok = fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, first, NULL, count, NULL) >= 0 &&
             H5Dread(d, memtype, ms, fs, H5P_DEFAULT, buf) >= 0;
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return ok;
}

// Damaged metadata found while reopening for --resume is bad input (exit 1), not a runtime
// failure. Returns ok.
static int damaged_unless(int ok, const AttnWriter *w, const char *what, GtErr *e) {
    if (!ok && !gt_failed(e))
        gt_err(e, GT_EXIT_USAGE, "attention file '%s': %s cannot be read (damaged file?); move it away to resume "
               "without it", w->path, what);
    return ok && !gt_failed(e);
}

// The checks and repairs of open_for_resume on the open file f (closed by the caller).
static int resume_body(AttnWriter *w, hid_t f, int crashed, long long resume_step, int every, GtErr *e) {
    // A writer killed mid-append can leave flushed metadata pointing at space it had
    // allocated but not yet written, past the end of allocation the superblock records; HDF5
    // then fails to free or reuse that space ("addr overflow"). Moving the end of allocation
    // past anything the crashed append could have allocated (its record, with room to spare)
    // is the repair `h5clear --increment` makes; the gap costs no disk where files are sparse.
    if (crashed) {
        hsize_t record = (hsize_t)w->L * w->NH * w->T * w->T * sizeof(float);
        if (!damaged_unless(H5Fincrement_filesize(f, 2 * record + (1u << 20)) >= 0, w,
                            "the end of allocation (repairing after a crash)", e))
            return -1;
    }
    char *fmt = h5_attr_read_str(f, "format");
    int64_t ver = 0;
    if (!fmt || strcmp(fmt, GT_FORMAT_ATTENTION) != 0 || !h5_attr_read_int(f, "format_version", &ver) ||
        ver != GT_FORMAT_VERSION)
        gt_err(e, GT_EXIT_USAGE, "attention file '%s': format is '%s' version %lld, expected '%s' version %d", w->path,
               fmt ? fmt : "(none)", (long long)ver, GT_FORMAT_ATTENTION, GT_FORMAT_VERSION);
    free(fmt);
    if (gt_failed(e)) return -1;
    int64_t L = -1, NH = -1;
    h5_attr_read_int(f, "n_layer", &L);
    h5_attr_read_int(f, "n_head", &NH);
    int rank = 0;
    hsize_t dims[8];
    if (w->adopt) {  // trimming only: the file is checked against itself
        int64_t ev = 0;
        if (h5_dataset_shape(f, "attention", &rank, dims) && rank == 5 && L > 0 && NH > 0 && dims[3] > 0 &&
            dims[3] < (1u << 16) && h5_dataset_shape(f, "probe/token_ids", &rank, dims + 5) && rank == 1 &&
            dims[5] == dims[3]) {
            w->L = (int)L, w->NH = (int)NH, w->T = (int)dims[3];
            hsize_t pd[8];
            int32_t *ids = h5_read_dataset_e(f, "probe/token_ids", H5T_NATIVE_INT32, &rank, pd, w->path, e);
            if (!ids) return -1;
            w->probe = gt_malloc((size_t)w->T * sizeof(int), "probe");
            for (int t = 0; t < w->T; t++) w->probe[t] = ids[t];
            free(ids);
        }
        every = h5_attr_read_int(f, "every", &ev) && ev > 0 && ev <= INT_MAX ? (int)ev : 0;
    }
    if (L != w->L || NH != w->NH || !h5_dataset_shape(f, "attention", &rank, dims) || rank != 5 ||
        dims[1] != (hsize_t)w->L || dims[2] != (hsize_t)w->NH || dims[3] != (hsize_t)w->T)
        return gt_err(e, GT_EXIT_USAGE, "'%s': was written for another model or probe length (n_layer %lld, n_head "
                      "%lld); move it away to resume with this configuration", w->path, (long long)L, (long long)NH);
    hsize_t pd[8];
    int32_t *probe = h5_read_dataset_e(f, "probe/token_ids", H5T_NATIVE_INT32, &rank, pd, w->path, e);
    if (!probe) return -1;
    int same = rank == 1 && pd[0] == (hsize_t)w->T;
    int t = 0;
    while (same && t < w->T && probe[t] == w->probe[t]) t++;
    free(probe);
    if (!same || t < w->T)
        return gt_err(e, GT_EXIT_USAGE, "'%s': its probe differs from this run's --attn-prompt at token %d; resume with "
                      "the same --attn-prompt or move the file away", w->path, t);

    hid_t ds = H5Dopen2(f, "step", H5P_DEFAULT), dl = H5Dopen2(f, "loss", H5P_DEFAULT),
          da = H5Dopen2(f, "attention", H5P_DEFAULT), tp = -1, dt = -1;
    float *one = NULL, *tl = NULL;
    const int TL = w->T - 1;  // token losses per record
    if (!damaged_unless(ds >= 0 && dl >= 0 && da >= 0, w, "/step, /loss or /attention", e)) goto done;
    long long n = dataset_len(ds), nl = dataset_len(dl), na = dataset_len(da);
    if (!damaged_unless(n >= 0 && nl >= 0 && na >= 0, w, "the length of /step, /loss or /attention", e)) goto done;
    if (nl < n) n = nl;
    if (na < n) n = na;
    // /token_loss is missing in a file written before gpt-train recorded it: added below
    int had_tl = TL > 0 && h5_exists(f, "token_loss");
    if (had_tl) {
        int r2 = 0;
        hsize_t td[8];
        if (!h5_dataset_shape(f, "token_loss", &r2, td) || r2 != 2 || td[1] != (hsize_t)TL) {
            damaged_unless(0, w, "/token_loss (its shape)", e);
            goto done;
        }
        dt = H5Dopen2(f, "token_loss", H5P_DEFAULT);
        long long nt = dt >= 0 ? dataset_len(dt) : -1;
        if (!damaged_unless(nt >= 0, w, "/token_loss", e)) goto done;
        if (nt < n) n = nt;
    }
    long long keep = 0;
    if (n > 0) {
        int64_t *steps = gt_malloc((size_t)n * sizeof(int64_t), "steps");
        hsize_t count[1] = {(hsize_t)n};
        int ok = read_records(ds, 1, 0, count, H5T_NATIVE_INT64, steps);
        while (ok && keep < n && steps[keep] <= resume_step) keep++;
        w->last_step = keep > 0 ? steps[keep - 1] : -1;
        free(steps);
        if (!damaged_unless(ok, w, "/step", e)) goto done;
    }
    // Read back what is kept: a damaged chunk index or chunk is bad input found now, rather
    // than a failed append later.
    one = gt_malloc((size_t)w->L * w->NH * w->T * w->T * sizeof(float), "attention record");
    for (long long i = 0; i < keep; i++) {
        hsize_t count[5] = {1, (hsize_t)w->L, (hsize_t)w->NH, (hsize_t)w->T, (hsize_t)w->T};
        if (!damaged_unless(read_records(da, 5, (hsize_t)i, count, H5T_NATIVE_FLOAT, one), w, "a record of /attention", e))
            goto done;
    }
    hsize_t rec[5] = {1, (hsize_t)w->L, (hsize_t)w->NH, (hsize_t)w->T, (hsize_t)w->T}, rec_tl[2] = {1, (hsize_t)TL};
    if (TL > 0) tl = gt_malloc((size_t)(keep > 0 ? keep : 1) * TL * sizeof(float), "token losses");
    if (had_tl && keep > 0) {
        hsize_t count[2] = {(hsize_t)keep, (hsize_t)TL};
        if (!damaged_unless(read_records(dt, 2, 0, count, H5T_NATIVE_FLOAT, tl), w, "/token_loss", e)) goto done;
    } else if (!had_tl && TL > 0) {
        // the records kept from before have no token losses: NaN, "not recorded"
        for (long long i = 0; i < keep * TL; i++) tl[i] = NAN;
        dt = create_token_loss(f, w->T, e);
        h5_append_e(dt, H5T_NATIVE_FLOAT, 2, rec_tl, 0, keep, tl, e);
    }
    h5_set_length_e(ds, 1, rec, keep, e);
    h5_set_length_e(dl, 1, rec, keep, e);
    h5_set_length_e(da, 5, rec, keep, e);
    if (TL > 0) h5_set_length_e(dt, 2, rec_tl, keep, e);
    if (gt_failed(e)) goto done;
    // A trial append, taken back at once: damage in what only appending touches (the chunk
    // index beyond the kept records, free-space metadata) is bad input found now, not a
    // failed write many steps into training.
    memset(one, 0, (size_t)w->L * w->NH * w->T * w->T * sizeof(float));
    int64_t no_step = -1;
    float no_loss = 0;
    GtErr trial = GT_ERR_INIT;
    h5_append_e(da, H5T_NATIVE_FLOAT, 5, rec, keep, 1, one, &trial);
    if (TL > 0) h5_append_e(dt, H5T_NATIVE_FLOAT, 2, rec_tl, keep, 1, one, &trial);
    h5_append_e(dl, H5T_NATIVE_FLOAT, 1, rec, keep, 1, &no_loss, &trial);
    h5_append_e(ds, H5T_NATIVE_INT64, 1, rec, keep, 1, &no_step, &trial);
    if (!gt_failed(&trial) && H5Fflush(f, H5F_SCOPE_LOCAL) < 0) h5_err_call(&trial, "H5Fflush", __FILE__, __LINE__);
    // a full disk is a runtime failure; anything else here is damage
    if (trial.errnum == ENOSPC || trial.errnum == EFBIG || trial.errnum == EDQUOT) *e = trial;
    if (!damaged_unless(!gt_failed(&trial), w, "appending to /step, /loss, /attention or /token_loss", e)) goto done;
    h5_set_length_e(ds, 1, rec, keep, e);
    h5_set_length_e(dl, 1, rec, keep, e);
    h5_set_length_e(da, 5, rec, keep, e);
    if (TL > 0) h5_set_length_e(dt, 2, rec_tl, keep, e);
    // the dtype is the file's: a resumed run keeps what it started with
    if (!gt_failed(e)) H5_TRY(tp = H5Dget_type(da));
    if (tp >= 0) {
        int file16 = H5Tget_size(tp) == 2;
        if (w->dtype_required && file16 != w->float16)
            gt_err(e, GT_EXIT_USAGE, "--attn-dtype %s: '%s' holds %s records, and a resumed run keeps the dtype it "
                   "started with; drop the flag, or move the file away to start a new one in %s", w->float16 ?
                   "float16" : "float32", w->path, file16 ? "float16" : "float32", w->float16 ? "float16" : "float32");
        w->float16 = file16;
    }
    w->n = keep;
fail:
done:
    free(one);
    free(tl);
    h5_close(tp, e);
    h5_close(dt, e);
    h5_close(ds, e);
    h5_close(dl, e);
    h5_close(da, e);
    if (every > 0) h5_attr_write_int_e(f, "every", every, e);  // before SWMR writing: it allows no new attributes
    return gt_failed(e) ? -1 : 0;
}

// Copies w->path to tmp (registered as a temp file) with plain reads, which no HDF5 lock
// stops: readers attached to the file cannot keep a resume out. A program that holds it open
// for writing (HDF5's exclusive lock: another writer, h5py in mode "a") is named instead,
// since its file may change under the copy.
static int copy_for_resume(const AttnWriter *w, char *tmp, size_t tmpsize, GtErr *e) {
    int src = open(w->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), dst = -1, err = 0;
    struct stat st;
    if (src < 0 || fstat(src, &st) != 0) {
        gt_err(e, GT_EXIT_USAGE, "attention file '%s': %s", w->path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        gt_err(e, GT_EXIT_USAGE, "attention file '%s': is %s, expected an HDF5 file", w->path, gt_file_kind(st.st_mode));
        goto done;
    }
    if (flock(src, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        gt_err(e, GT_EXIT_USAGE, "attention file '%s': is open for writing in another program (its HDF5 file lock is "
               "held); close that program, or wait for it to finish, then resume", w->path);
        goto done;
    }
    flock(src, LOCK_UN);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", w->path);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = '\0';
    else snprintf(dir, sizeof dir, ".");
    struct statvfs vfs;
    long long need = (long long)st.st_size + (1 << 20);
    if (statvfs(dir, &vfs) == 0 && (long long)vfs.f_bavail * (long long)vfs.f_frsize < need) {
        gt_err(e, GT_EXIT_RUNTIME, "no space left to rewrite '%s' for the resume: about %lld bytes needed, %lld "
               "available; free some space, or move it away to resume without it", w->path, need,
               (long long)vfs.f_bavail * (long long)vfs.f_frsize);
        e->errnum = ENOSPC;
        goto done;
    }
    snprintf(tmp, tmpsize, "%s.tmp-%ld", w->path, (long)getpid());
    gt_tmpfile_register(tmp);
    dst = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (dst < 0) err = errno;
    for (off_t done = 0; !err && done < st.st_size;) {
        ssize_t n = copy_file_range(src, &done, dst, NULL, (size_t)(st.st_size - done), 0);
        if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
            char buf[1 << 16];  // a file system that cannot copy in the kernel
            n = pread(src, buf, sizeof buf, done);
            if (n > 0 && write(dst, buf, (size_t)n) != n) n = -1;
            if (n > 0) done += n;
        }
        if (n < 0) err = errno;
        else if (n == 0) err = EIO;  // the file shrank under the copy
    }
    if (!err && fsync(dst) != 0) err = errno;
    if (dst >= 0 && close(dst) != 0 && !err) err = errno;
    dst = -1;
    if (err) {
        gt_err(e, GT_EXIT_RUNTIME, "rewriting '%s' for the resume failed: %s", w->path, strerror(err));
        e->errnum = err;
        remove(tmp);
        gt_tmpfile_forget(tmp);
    }
done:
    if (src >= 0) close(src);
    return gt_failed(e) ? -1 : 0;
}

// Checks that an existing file matches this run and drops records with step > resume_step,
// in a copy that replaces the file once it is open for SWMR writing (see the top).
static int open_for_resume(AttnWriter *w, long long resume_step, int every, GtErr *e) {
    char tmp[4300] = "";
    hid_t fapl = -1, f = -1;
    if (copy_for_resume(w, tmp, sizeof tmp, e) != 0) return -1;
    H5_TRY(fapl = H5Pcreate(H5P_FILE_ACCESS));
    H5_TRY(H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST));  // for SWMR writing
    // A writer that crashed left the file marked "open for SWMR writing": clear the mark (what
    // the h5clear tool does) or HDF5 refuses to open it again.
    hbool_t clear = 1;
    H5_TRY(H5Pset(fapl, "clear_status_flags", &clear));
    // In SWMR mode HDF5 retries a metadata read whose checksum fails up to 100 times with
    // growing sleeps (meant for readers racing a writer). This process is the only writer, so a
    // bad checksum means a damaged file: fail at once instead of hanging for minutes.
    H5_TRY(H5Pset_metadata_read_attempts(fapl, 1));
    int crashed = h5_left_open_by_writer(tmp);
    int is_h5 = H5Fis_hdf5(tmp) > 0;
    f = is_h5 ? H5Fopen(tmp, H5F_ACC_RDWR, fapl) : -1;
    if (f < 0) {  // no lock can be the cause: the copy is this process's alone
        gt_err(e, GT_EXIT_USAGE, "attention file '%s': %s; move it away to resume without it", w->path,
               is_h5 ? "cannot be opened as HDF5 (truncated or damaged?)" : "not an HDF5 file (or its header is damaged)");
        goto fail;
    }
    h5_close(fapl, e);
    fapl = -1;
    resume_body(w, f, crashed, resume_step, every, e);
    if (H5Fclose(f) < 0) h5_err_call(e, "H5Fclose", __FILE__, __LINE__);
    f = -1;
    if (gt_failed(e)) goto fail;
    // Reopened for SWMR writing rather than H5Fstart_swmr_write, which resets the metadata
    // read attempts to SWMR's 100 with growing sleeps (meant for readers racing a writer):
    // this process is the only writer, so a bad checksum means a damaged file, and it must
    // fail at once instead of hanging for minutes.
    H5_TRY(fapl = H5Pcreate(H5P_FILE_ACCESS));
    H5_TRY(H5Pset_metadata_read_attempts(fapl, 1));
    H5_TRY(w->file = H5Fopen(tmp, H5F_ACC_RDWR | H5F_ACC_SWMR_WRITE, fapl));
    if (open_datasets(w, e) == 0) H5_TRY(H5Fflush(w->file, H5F_SCOPE_LOCAL));
fail:
    h5_close(fapl, e);
    h5_close(f, e);
    if (!gt_failed(e)) return publish(w, tmp, e);
    remove(tmp);
    gt_tmpfile_forget(tmp);
    return -1;
}

AttnWriter *attn_writer_open_e(const char *path, const GPTConfig *c, int every, const int32_t *probe_ids, int T,
                               const Tokenizer *tok, int float16, long long resume_step, GtErr *e) {
    if (gt_failed(e)) return NULL;
    if (T <= 0) {
        gt_err(e, GT_EXIT_USAGE, "--attn-prompt: the probe text encodes to no tokens");
        return NULL;
    }
    if (T > c->block_size) {
        gt_err(e, GT_EXIT_USAGE, "--attn-prompt: the probe is %d tokens, longer than --block-size %d", T, c->block_size);
        return NULL;
    }
    if (every <= 0) {
        gt_err(e, GT_EXIT_USAGE, "--attn-every %d: must be a positive number of steps", every);
        return NULL;
    }
    for (int t = 0; t < T; t++)
        if (probe_ids[t] < 0 || probe_ids[t] >= c->vocab_size) {
            gt_err(e, GT_EXIT_USAGE, "--attn-prompt: token id %d at position %d is outside the vocabulary (%d)",
                   probe_ids[t], t, c->vocab_size);
            return NULL;
        }
    AttnWriter *w = gt_calloc(1, sizeof *w, "attention writer");
    w->path = gt_strdup(path);
    w->file = w->d_step = w->d_loss = w->d_att = w->d_tl = -1;
    w->L = c->n_layer, w->NH = c->n_head, w->T = T, w->float16 = float16 & 1;
    w->dtype_required = (float16 & ATTN_DTYPE_REQUIRED) != 0;
    w->last_step = -1;
    w->probe = gt_malloc((size_t)T * sizeof(int32_t), "probe");
    for (int t = 0; t < T; t++) w->probe[t] = probe_ids[t];

    struct stat st;
    if (resume_step >= 0 && stat(path, &st) == 0) open_for_resume(w, resume_step, every, e);
    else create_file(w, tok, every, e);
    if (gt_failed(e)) {
        GtErr ignore = GT_ERR_INIT;
        attn_writer_close_e(w, &ignore);
        return NULL;
    }
    if (w->float16 && !w->half) w->half = gt_malloc((size_t)w->L * w->NH * T * T * sizeof(uint16_t), "float16 record");
    track(w, 1);
    return w;
}

AttnWriter *attn_writer_open(const char *path, const GPTConfig *c, int every, const int32_t *probe_ids, int T,
                             const Tokenizer *tok, int float16, long long resume_step) {
    GtErr e = GT_ERR_INIT;
    AttnWriter *w = attn_writer_open_e(path, c, every, probe_ids, T, tok, float16, resume_step, &e);
    if (!w) gt_err_exit(&e);
    return w;
}

// A failed append on a full disk surfaces from HDF5 as an anonymous H5Dwrite/H5Dflush error:
// check the space first so the message names the file and the bytes a record needs.
static int check_space(const AttnWriter *w, long long step, GtErr *e) {
    long long need = (long long)w->L * w->NH * w->T * w->T * (w->float16 ? 2 : 4) + 4096;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", w->path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0) return 0;
    long long avail = (long long)vfs.f_bavail * (long long)vfs.f_frsize;
    if (avail < need) {
        gt_err(e, GT_EXIT_RUNTIME, "no space left to append the attention record of step %lld to '%s': about %lld bytes "
               "needed, %lld available; the records so far and the checkpoints are intact", step, w->path, need, avail);
        e->errnum = ENOSPC;
    }
    return gt_failed(e) ? -1 : 0;
}

int attn_append_e(AttnWriter *w, long long step, float loss, const float *att, const float *token_loss, GtErr *e) {
    if (gt_failed(e)) return -1;
    if (step <= w->last_step)
        return gt_err(e, GT_EXIT_RUNTIME, "'%s': record for step %lld after step %lld; steps must increase", w->path,
                      step, w->last_step);
    if (check_space(w, step, e)) return -1;
    hsize_t rec[5] = {1, (hsize_t)w->L, (hsize_t)w->NH, (hsize_t)w->T, (hsize_t)w->T};
    if (w->float16) {
        size_t n = (size_t)w->L * w->NH * w->T * w->T;
        for (size_t i = 0; i < n; i++) w->half[i] = float_to_half(att[i]);
        hid_t ht = h5_half_type_e(e);
        if (ht >= 0) h5_append_e(w->d_att, ht, 5, rec, w->n, 1, w->half, e);
        h5_close(ht, e);
    } else {
        h5_append_e(w->d_att, H5T_NATIVE_FLOAT, 5, rec, w->n, 1, att, e);
    }
    // /attention, /token_loss, then /loss, then /step, each flushed: /step is the record's commit.
    if (!gt_failed(e)) H5_TRY(H5Dflush(w->d_att));
    if (w->d_tl >= 0) {
        hsize_t rec_tl[2] = {1, (hsize_t)(w->T - 1)};
        h5_append_e(w->d_tl, H5T_NATIVE_FLOAT, 2, rec_tl, w->n, 1, token_loss, e);
        if (!gt_failed(e)) H5_TRY(H5Dflush(w->d_tl));
    }
    int64_t s = step;
    h5_append_e(w->d_loss, H5T_NATIVE_FLOAT, 1, rec, w->n, 1, &loss, e);
    if (!gt_failed(e)) H5_TRY(H5Dflush(w->d_loss));
    h5_append_e(w->d_step, H5T_NATIVE_INT64, 1, rec, w->n, 1, &s, e);
    if (!gt_failed(e)) H5_TRY(H5Dflush(w->d_step));
    if (!gt_failed(e)) H5_TRY(H5Fflush(w->file, H5F_SCOPE_LOCAL));
fail:
    if (gt_failed(e)) {
        gt_err_prefix(e, "appending the attention record of step %lld to '%s' failed: ", step, w->path);
        gt_err_append(e, "; the records before it stay readable");
        return -1;
    }
    w->n++;
    w->last_step = step;
    return 0;
}

void attn_append(AttnWriter *w, long long step, float loss, const float *att, const float *token_loss) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, attn_append_e(w, step, loss, att, token_loss, &e));
}

long long attn_writer_count(const AttnWriter *w) { return w->n; }

int attn_writer_float16(const AttnWriter *w) { return w->float16; }

int attn_trim_e(const char *path, long long resume_step, GtErr *e) {
    struct stat st;
    if (gt_failed(e) || stat(path, &st) != 0) return gt_failed(e) ? -1 : 0;
    AttnWriter *w = gt_calloc(1, sizeof *w, "attention writer");
    w->path = gt_strdup(path);
    w->file = w->d_step = w->d_loss = w->d_att = w->d_tl = -1;
    w->adopt = 1;
    w->last_step = -1;
    open_for_resume(w, resume_step, 0, e);
    GtErr close_err = GT_ERR_INIT;
    attn_writer_close_e(w, gt_failed(e) ? &close_err : e);
    return gt_failed(e) ? -1 : 0;
}

int attn_writer_close_e(AttnWriter *w, GtErr *e) {
    if (!w) return gt_failed(e) ? -1 : 0;
    track(w, 0);
    h5_close(w->d_step, e);
    h5_close(w->d_loss, e);
    h5_close(w->d_att, e);
    h5_close(w->d_tl, e);
    if (w->file >= 0 && H5Fclose(w->file) < 0) {
        h5_err_call(e, "H5Fclose", __FILE__, __LINE__);
        gt_err_prefix(e, "closing '%s' failed: ", w->path);
    }
    free(w->path);
    free(w->probe);
    free(w->half);
    free(w);
    return gt_failed(e) ? -1 : 0;
}

void attn_writer_close(AttnWriter *w) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, attn_writer_close_e(w, &e));
}
