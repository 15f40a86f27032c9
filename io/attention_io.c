// attention_io.c - see attention_io.h.
//
// Layout (docs/formats.md, attention.h5): root attrs n_layer, n_head, every;
// /probe/token_ids int32 (T,), /probe/tokens str (T,); /step int64 (N,), /loss float32 (N,),
// /attention (N, L, H, T, T) float32 or float16, chunked one record per chunk, deflate.
// N is the unlimited dimension.
//
// Crash safety: the empty file is made under a temp name, switched to SWMR writing, then
// renamed into place (so no reader can hold it before the writer). Each record writes
// /attention, then /loss, then /step (the last one is the "commit"), each flushed; readers
// take N = the shortest of the three.
#include "attention_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "error.h"
#include "h5util.h"
#include "utf8.h"

struct AttnWriter {
    char *path;
    hid_t file;
    hid_t d_step, d_loss, d_att;
    int L, NH, T, float16;
    int *probe;           // (T) ids as gpt2_forward takes them
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

hid_t h5_half_type(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5_CHECK(t, "");
    H5_CHECK(H5Tset_fields(t, 15, 10, 5, 0, 10), "");
    H5_CHECK(H5Tset_size(t, 2), "");
    H5_CHECK(H5Tset_ebias(t, 15), "");
    H5_CHECK(H5Tset_precision(t, 16), "");
    return t;
}

// ---- the file ----

static hid_t create_extendable(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *rec,
                               hsize_t chunk0, int deflate) {
    hsize_t dims[8] = {0}, maxdims[8] = {H5S_UNLIMITED}, chunk[8] = {chunk0};
    for (int i = 1; i < rank; i++) dims[i] = maxdims[i] = chunk[i] = rec[i];
    hid_t sp = H5Screate_simple(rank, dims, maxdims);
    H5_CHECK(sp, "");
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5_CHECK(dcpl, "");
    H5_CHECK(H5Pset_chunk(dcpl, rank, chunk), "");
    if (deflate) H5_CHECK(H5Pset_deflate(dcpl, 4), "");
    hid_t d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5_CHECK(d, "");
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

static void open_datasets(AttnWriter *w) {
    w->d_step = H5Dopen2(w->file, "step", H5P_DEFAULT);
    w->d_loss = H5Dopen2(w->file, "loss", H5P_DEFAULT);
    w->d_att = H5Dopen2(w->file, "attention", H5P_DEFAULT);
    H5_CHECK(w->d_step, "");
    H5_CHECK(w->d_loss, "");
    H5_CHECK(w->d_att, "");
}

// Switches a new file to SWMR writing and flushes. From here on no object or attribute can
// be created, only datasets extended and written.
static void start_swmr(AttnWriter *w) {
    open_datasets(w);
    H5_CHECK(H5Fstart_swmr_write(w->file), "the file must be in the HDF5 1.10 format");
    H5_CHECK(H5Fflush(w->file, H5F_SCOPE_LOCAL), "is the disk full?");
}

static void create_file(AttnWriter *w, const Tokenizer *tok, int every) {
    char tmp[4200];
    hid_t f = h5_create_tmp(w->path, GT_FORMAT_ATTENTION, tmp, sizeof tmp);
    h5_attr_write_int(f, "n_layer", w->L);
    h5_attr_write_int(f, "n_head", w->NH);
    h5_attr_write_int(f, "every", every);

    int32_t *ids = gt_malloc((size_t)w->T * sizeof(int32_t), "probe ids");
    char **text = gt_malloc((size_t)w->T * sizeof(char *), "probe tokens");
    for (int t = 0; t < w->T; t++) {
        ids[t] = w->probe[t];
        text[t] = token_text_utf8(tok, ids[t]);
    }
    hsize_t tdim[1] = {(hsize_t)w->T};
    h5_write_dataset(f, "probe/token_ids", H5T_STD_I32LE, 1, tdim, ids, 0, 0);
    h5_write_strings(f, "probe/tokens", text, (size_t)w->T);
    for (int t = 0; t < w->T; t++) free(text[t]);
    free(text);
    free(ids);

    hsize_t rec[5] = {0, (hsize_t)w->L, (hsize_t)w->NH, (hsize_t)w->T, (hsize_t)w->T};
    hid_t d = create_extendable(f, "step", H5T_STD_I64LE, 1, rec, 256, 0);
    H5Dclose(d);
    d = create_extendable(f, "loss", H5T_IEEE_F32LE, 1, rec, 256, 0);
    H5Dclose(d);
    hid_t ft = w->float16 ? h5_half_type() : H5Tcopy(H5T_IEEE_F32LE);
    d = create_extendable(f, "attention", ft, 5, rec, 1, 1);
    h5_attr_write_str(d, "axes", "step,layer,head,query,key");
    H5Dclose(d);
    H5Tclose(ft);
    w->file = f;
    start_swmr(w);
    // Published only now, already open for SWMR writing: a reader polling for the file can
    // never open it first and take the lock that would keep this writer out.
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) gt_fail(GT_EXIT_RUNTIME, "cannot write '%s': %s", tmp, strerror(errno));
    close(fd);
    if (rename(tmp, w->path) != 0)
        gt_fail(GT_EXIT_RUNTIME, "cannot rename '%s' to '%s': %s", tmp, w->path, strerror(errno));
    gt_tmpfile_forget(tmp);
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

// Damaged metadata found while reopening for --resume is bad input (exit 1), not a runtime failure.
static void damaged_unless(int ok, const AttnWriter *w, const char *what) {
    if (!ok)
        gt_fail_usage("attention file '%s': %s cannot be read (damaged file?); move it away to resume without it",
                      w->path, what);
}

static void set_len(hid_t d, int rank, const hsize_t *rec, long long n) {
    hsize_t dims[8];
    for (int i = 0; i < rank; i++) dims[i] = rec[i];
    dims[0] = (hsize_t)n;
    H5_CHECK(H5Dset_extent(d, dims), "is the disk full?");
}

static int write_record(hid_t d, hid_t memtype, int rank, const hsize_t *rec, long long n, const void *buf);

// 1 when the superblock says a writer still has the file open: after a crash, since a live
// writer's lock keeps others out. Superblock versions 2 and 3 (the 1.10 format SWMR needs)
// keep the file consistency flags in byte 11; bits 0 and 2 are write and SWMR-write access.
static int left_open_by_writer(const char *path) {
    unsigned char sb[12];
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    size_t got = fread(sb, 1, sizeof sb, fp);
    fclose(fp);
    return got == sizeof sb && memcmp(sb, "\211HDF\r\n\032\n", 8) == 0 && sb[8] >= 2 && (sb[11] & 0x5) != 0;
}

// Checks that an existing file matches this run, then drops records with step > resume_step.
static void open_for_resume(AttnWriter *w, long long resume_step, int every) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(fapl, "");
    H5_CHECK(H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST), "");  // for SWMR writing
    // A writer that crashed left the file marked "open for SWMR writing": clear the mark (what
    // the h5clear tool does) or HDF5 refuses to open it again.
    hbool_t clear = 1;
    H5_CHECK(H5Pset(fapl, "clear_status_flags", &clear), "");
    // In SWMR mode HDF5 retries a metadata read whose checksum fails up to 100 times with
    // growing sleeps (meant for readers racing a writer). This process is the only writer, so a
    // bad checksum means a damaged file: fail at once instead of hanging for minutes.
    H5_CHECK(H5Pset_metadata_read_attempts(fapl, 1), "");
    int crashed = left_open_by_writer(w->path);
    hid_t f = H5Fis_hdf5(w->path) > 0 ? H5Fopen(w->path, H5F_ACC_RDWR, fapl) : -1;
    H5Pclose(fapl);
    if (f < 0) h5_open_rw_checked(w->path, GT_FORMAT_ATTENTION, "attention file", 0);  // names the problem
    if (f < 0)
        gt_fail_usage("attention file '%s': cannot open for appending (is another gpt-train writing it, "
                      "or a reader holding it without swmr=True?)", w->path);
    // A writer killed mid-append can leave flushed metadata pointing at space it had
    // allocated but not yet written, past the end of allocation the superblock records; HDF5
    // then fails to free or reuse that space ("addr overflow"). Moving the end of allocation
    // past anything the crashed append could have allocated (its record, with room to spare)
    // is the repair `h5clear --increment` makes; the gap costs no disk where files are sparse.
    if (crashed) {
        hsize_t record = (hsize_t)w->L * w->NH * w->T * w->T * sizeof(float);
        damaged_unless(H5Fincrement_filesize(f, 2 * record + (1u << 20)) >= 0, w,
                       "the end of allocation (repairing after a crash)");
    }
    char *fmt = h5_attr_read_str(f, "format");
    int64_t ver = 0;
    if (!fmt || strcmp(fmt, GT_FORMAT_ATTENTION) != 0 || !h5_attr_read_int(f, "format_version", &ver) ||
        ver != GT_FORMAT_VERSION)
        gt_fail_usage("attention file '%s': format is '%s' version %lld, expected '%s' version %d", w->path,
                      fmt ? fmt : "(none)", (long long)ver, GT_FORMAT_ATTENTION, GT_FORMAT_VERSION);
    free(fmt);
    int64_t L = -1, NH = -1;
    h5_attr_read_int(f, "n_layer", &L);
    h5_attr_read_int(f, "n_head", &NH);
    int rank = 0;
    hsize_t dims[8];
    if (L != w->L || NH != w->NH || !h5_dataset_shape(f, "attention", &rank, dims) || rank != 5 ||
        dims[1] != (hsize_t)w->L || dims[2] != (hsize_t)w->NH || dims[3] != (hsize_t)w->T) {
        H5Fclose(f);
        gt_fail_usage("'%s': was written for another model or probe length (n_layer %lld, n_head %lld); "
                      "move it away to resume with this configuration", w->path, (long long)L, (long long)NH);
    }
    hsize_t pd[8];
    int32_t *probe = h5_read_dataset(f, "probe/token_ids", H5T_NATIVE_INT32, &rank, pd, w->path);
    for (int t = 0; t < w->T; t++)
        if (probe[t] != w->probe[t]) {
            H5Fclose(f);
            gt_fail_usage("'%s': its probe differs from this run's --attn-prompt at token %d; "
                          "resume with the same --attn-prompt or move the file away", w->path, t);
        }
    free(probe);
    hid_t ds = H5Dopen2(f, "step", H5P_DEFAULT), dl = H5Dopen2(f, "loss", H5P_DEFAULT),
          da = H5Dopen2(f, "attention", H5P_DEFAULT);
    damaged_unless(ds >= 0 && dl >= 0 && da >= 0, w, "/step, /loss or /attention");
    long long n = dataset_len(ds), nl = dataset_len(dl), na = dataset_len(da);
    damaged_unless(n >= 0 && nl >= 0 && na >= 0, w, "the length of /step, /loss or /attention");
    if (nl < n) n = nl;
    if (na < n) n = na;
    long long keep = 0;
    if (n > 0) {
        int64_t *steps = gt_malloc((size_t)n * sizeof(int64_t), "steps");
        hsize_t start[1] = {0}, count[1] = {(hsize_t)n};
        hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(1, count, NULL);
        H5_CHECK(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL), "");
        damaged_unless(H5Dread(ds, H5T_NATIVE_INT64, ms, fs, H5P_DEFAULT, steps) >= 0, w, "/step");
        H5Sclose(ms);
        H5Sclose(fs);
        while (keep < n && steps[keep] <= resume_step) keep++;
        w->last_step = keep > 0 ? steps[keep - 1] : -1;
        free(steps);
    }
    // Read back what is kept: a damaged chunk index or chunk is bad input found now, rather
    // than a failed append later.
    float *one = gt_malloc((size_t)w->L * w->NH * w->T * w->T * sizeof(float), "attention record");
    for (long long i = 0; i < keep; i++) {
        hsize_t start[5] = {(hsize_t)i}, count[5] = {1, (hsize_t)w->L, (hsize_t)w->NH, (hsize_t)w->T, (hsize_t)w->T};
        hid_t fs = H5Dget_space(da), ms = H5Screate_simple(5, count, NULL);
        int ok = fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
                 H5Dread(da, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, one) >= 0;
        if (ms >= 0) H5Sclose(ms);
        if (fs >= 0) H5Sclose(fs);
        damaged_unless(ok, w, "a record of /attention");
    }
    hsize_t rec[5] = {0, (hsize_t)w->L, (hsize_t)w->NH, (hsize_t)w->T, (hsize_t)w->T};
    set_len(ds, 1, rec, keep);
    set_len(dl, 1, rec, keep);
    set_len(da, 5, rec, keep);
    // A trial append, taken back at once: damage in what only appending touches (the chunk
    // index beyond the kept records, free-space metadata) is bad input found now, not a
    // failed write many steps into training.
    memset(one, 0, (size_t)w->L * w->NH * w->T * w->T * sizeof(float));
    int64_t no_step = -1;
    float no_loss = 0;
    hsize_t one_rec[5] = {1, (hsize_t)w->L, (hsize_t)w->NH, (hsize_t)w->T, (hsize_t)w->T};
    damaged_unless(write_record(da, H5T_NATIVE_FLOAT, 5, one_rec, keep, one) &&
                   write_record(dl, H5T_NATIVE_FLOAT, 1, one_rec, keep, &no_loss) &&
                   write_record(ds, H5T_NATIVE_INT64, 1, one_rec, keep, &no_step) && H5Fflush(f, H5F_SCOPE_LOCAL) >= 0,
                   w, "appending to /step, /loss or /attention");
    free(one);
    set_len(ds, 1, rec, keep);
    set_len(dl, 1, rec, keep);
    set_len(da, 5, rec, keep);
    // the dtype is the file's: a resumed run keeps what it started with
    hid_t t = H5Dget_type(da);
    H5_CHECK(t, "");
    w->float16 = H5Tget_size(t) == 2;
    H5Tclose(t);
    H5Dclose(ds);
    H5Dclose(dl);
    H5Dclose(da);
    h5_attr_write_int(f, "every", every);  // before SWMR writing, which allows no new attributes
    H5_CHECK(H5Fclose(f), "is the disk full?");
    w->n = keep;
    // Reopened for SWMR writing rather than H5Fstart_swmr_write, which resets the metadata
    // read attempts to SWMR's 100 with growing sleeps (meant for readers racing a writer):
    // this process is the only writer, so a bad checksum means a damaged file, and it must
    // fail at once instead of hanging for minutes.
    fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5_CHECK(fapl, "");
    H5_CHECK(H5Pset_metadata_read_attempts(fapl, 1), "");
    w->file = H5Fopen(w->path, H5F_ACC_RDWR | H5F_ACC_SWMR_WRITE, fapl);
    H5Pclose(fapl);
    if (w->file < 0)
        gt_fail_usage("attention file '%s': cannot open for appending (is it open in a program that did not use "
                      "swmr=True?)", w->path);
    open_datasets(w);
    H5_CHECK(H5Fflush(w->file, H5F_SCOPE_LOCAL), "is the disk full?");
}

AttnWriter *attn_writer_open(const char *path, const GPTConfig *c, int every, const int32_t *probe_ids, int T,
                             const Tokenizer *tok, int float16, long long resume_step) {
    if (T <= 0) gt_fail_usage("--attn-prompt: the probe text encodes to no tokens");
    if (T > c->block_size)
        gt_fail_usage("--attn-prompt: the probe is %d tokens, longer than --block-size %d", T, c->block_size);
    if (every <= 0) gt_fail_usage("--attn-every %d: must be a positive number of steps", every);
    for (int t = 0; t < T; t++)
        if (probe_ids[t] < 0 || probe_ids[t] >= c->vocab_size)
            gt_fail_usage("--attn-prompt: token id %d at position %d is outside the vocabulary (%d)", probe_ids[t], t,
                          c->vocab_size);
    AttnWriter *w = gt_calloc(1, sizeof *w, "attention writer");
    w->path = gt_strdup(path);
    w->L = c->n_layer, w->NH = c->n_head, w->T = T, w->float16 = float16;
    w->last_step = -1;
    w->probe = gt_malloc((size_t)T * sizeof(int), "probe");
    for (int t = 0; t < T; t++) w->probe[t] = probe_ids[t];

    struct stat st;
    if (resume_step >= 0 && stat(path, &st) == 0) open_for_resume(w, resume_step, every);
    else create_file(w, tok, every);
    if (w->float16 && !w->half) w->half = gt_malloc((size_t)w->L * w->NH * T * T * sizeof(uint16_t), "float16 record");
    return w;
}

// Writes one record (rank-dimensional, first dim 1) at index n of d, extending it first.
// Returns 0 on failure: the caller names the file and the step.
static int write_record(hid_t d, hid_t memtype, int rank, const hsize_t *rec, long long n, const void *buf) {
    hsize_t dims[8], start[8] = {(hsize_t)n}, count[8] = {1};
    for (int i = 0; i < rank; i++) dims[i] = rec[i];
    dims[0] = (hsize_t)n + 1;
    for (int i = 1; i < rank; i++) count[i] = rec[i];
    if (H5Dset_extent(d, dims) < 0) return 0;
    hid_t fs = H5Dget_space(d);
    H5_CHECK(fs, "");
    H5_CHECK(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL), "");
    hid_t ms = H5Screate_simple(rank, count, NULL);
    H5_CHECK(ms, "");
    int ok = H5Dwrite(d, memtype, ms, fs, H5P_DEFAULT, buf) >= 0;
    H5Sclose(ms);
    H5Sclose(fs);
    return ok && H5Dflush(d) >= 0;
}

// A failed append on a full disk surfaces from HDF5 as an anonymous H5Dwrite/H5Dflush error:
// check the space first so the message names the file and the bytes a record needs.
static void check_space(const AttnWriter *w, long long step) {
    long long need = (long long)w->L * w->NH * w->T * w->T * (w->float16 ? 2 : 4) + 4096;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", w->path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0) return;
    long long avail = (long long)vfs.f_bavail * (long long)vfs.f_frsize;
    if (avail < need)
        gt_fail(GT_EXIT_RUNTIME, "no space left to append the attention record of step %lld to '%s': about %lld bytes "
                "needed, %lld available; the records so far and the checkpoints are intact", step, w->path, need, avail);
}

void attn_append(AttnWriter *w, long long step, float loss, const float *att) {
    if (step <= w->last_step)
        gt_fail(GT_EXIT_RUNTIME, "'%s': record for step %lld after step %lld; steps must increase", w->path, step,
                w->last_step);
    check_space(w, step);
    hsize_t rec[5] = {1, (hsize_t)w->L, (hsize_t)w->NH, (hsize_t)w->T, (hsize_t)w->T};
    int ok;
    if (w->float16) {
        size_t n = (size_t)w->L * w->NH * w->T * w->T;
        for (size_t i = 0; i < n; i++) w->half[i] = float_to_half(att[i]);
        hid_t ht = h5_half_type();
        ok = write_record(w->d_att, ht, 5, rec, w->n, w->half);
        H5Tclose(ht);
    } else {
        ok = write_record(w->d_att, H5T_NATIVE_FLOAT, 5, rec, w->n, att);
    }
    int64_t s = step;
    ok = ok && write_record(w->d_loss, H5T_NATIVE_FLOAT, 1, rec, w->n, &loss);
    ok = ok && write_record(w->d_step, H5T_NATIVE_INT64, 1, rec, w->n, &s);
    if (!ok)
        gt_fail(GT_EXIT_RUNTIME, "appending the attention record of step %lld to '%s' failed (disk full, or a damaged "
                "file?); the records before it stay readable", step, w->path);
    H5_CHECK(H5Fflush(w->file, H5F_SCOPE_LOCAL), "is the disk full?");
    w->n++;
    w->last_step = step;
}

void attn_probe_record(AttnWriter *w, GPT2 *m, long long step, float loss) {
    if (m->config.n_layer != w->L || m->config.n_head != w->NH)
        gt_fail(GT_EXIT_RUNTIME, "'%s': model has %d layers x %d heads, the file %d x %d", w->path, m->config.n_layer,
                m->config.n_head, w->L, w->NH);
    gpt2_forward(m, w->probe, NULL, 1, w->T, 0, 0);
    attn_append(w, step, loss, m->att);  // (L, 1, NH, T, T) == (L, NH, T, T)
}

long long attn_writer_count(const AttnWriter *w) { return w->n; }

void attn_writer_close(AttnWriter *w) {
    if (!w) return;
    H5Dclose(w->d_step);
    H5Dclose(w->d_loss);
    H5Dclose(w->d_att);
    H5_CHECK(H5Fclose(w->file), "is the disk full?");
    free(w->path);
    free(w->probe);
    free(w->half);
    free(w);
}
