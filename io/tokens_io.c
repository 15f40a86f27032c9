// tokens_io.c - see tokens_io.h. Ids are stored as uint16 when the vocabulary fits (half the
// disk and page cache of uint32), chunked so a trainer's random windows read little.
#include "tokens_io.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "h5util.h"
#include "vocab_io.h"

#define TOKENS_CHUNK ((hsize_t)1 << 16)

static int write_split(hid_t f, const char *name, const void *ids, hid_t mtype, size_t n, hid_t ftype,
                       const char *source, int64_t source_bytes, const char *sha, GtErr *e) {
    if (gt_failed(e)) return -1;
    hsize_t dims[1] = {n}, maxdims[1] = {H5S_UNLIMITED}, chunk[1] = {TOKENS_CHUNK};
    hid_t sp = -1, dcpl = -1, d = -1;
    H5_TRY(sp = H5Screate_simple(1, dims, maxdims));
    H5_TRY(dcpl = H5Pcreate(H5P_DATASET_CREATE));
    H5_TRY(H5Pset_chunk(dcpl, 1, chunk));
    // A checksum per chunk (128-256 KiB), verified by HDF5 and h5py on every read, also of
    // a rank's hyperslab: a flipped byte is a failed read naming the file, not wrong tokens.
    H5_TRY(H5Pset_fletcher32(dcpl));
    H5_TRY(d = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    // HDF5 narrows uint32 -> uint16 on the way out, a strip at a time (no full copy).
    if (n > 0) H5_TRY(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids));
    h5_attr_write_str_e(d, "source", source, e);
    h5_attr_write_int_e(d, "source_bytes", source_bytes, e);
    h5_attr_write_str_e(d, "source_sha256", sha, e);
fail:
    // Closing writes the chunks HDF5 still caches: on a full disk this is where it fails.
    h5_close(d, e);
    h5_close(dcpl, e);
    h5_close(sp, e);
    return gt_failed(e) ? -1 : 0;
}

static int save(const char *path, const Tokenizer *tok, const void *ids, size_t id_bytes, size_t n,
                double val_fraction, const char *source, int64_t source_bytes, const char *source_sha256, int force,
                GtErr *e) {
    if (gt_failed(e)) return -1;
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        return gt_err(e, GT_EXIT_USAGE, "--val-fraction %g: must be in [0, 1)", val_fraction);
    size_t n_val = (size_t)llround((double)n * val_fraction);
    if (n_val > n) n_val = n;
    size_t n_train = n - n_val;
    char tmp[4200];
    h5_check_output_path_e(path, "--out", force, e);
    hid_t f = h5_create_tmp_e(path, GT_FORMAT_TOKENS, tmp, sizeof tmp, e);
    vocab_write_group_e(f, tok, e);
    hid_t ftype = tok->vocab_size <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE;
    hid_t mtype = id_bytes == 2 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32;
    write_split(f, "train", ids, mtype, n_train, ftype, source, source_bytes, source_sha256, e);
    write_split(f, "val", (const char *)ids + n_train * id_bytes, mtype, n_val, ftype, source, source_bytes,
                source_sha256, e);
    return h5_commit_e(f, tmp, path, e);
}

int tokens_save_e(const char *path, const Tokenizer *tok, const uint32_t *ids, size_t n, double val_fraction,
                  const char *source, int64_t source_bytes, const char *source_sha256, int force, GtErr *e) {
    return save(path, tok, ids, 4, n, val_fraction, source, source_bytes, source_sha256, force, e);
}

void tokens_save(const char *path, const Tokenizer *tok, const uint32_t *ids, size_t n, double val_fraction,
                 const char *source, int64_t source_bytes, const char *source_sha256, int force) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, tokens_save_e(path, tok, ids, n, val_fraction, source, source_bytes, source_sha256, force, &e));
}

int tokens_save_u16_e(const char *path, const Tokenizer *tok, const uint16_t *ids, size_t n, double val_fraction,
                      const char *source, int64_t source_bytes, const char *source_sha256, int force, GtErr *e) {
    if (tok->vocab_size > 65536)
        return gt_err(e, GT_EXIT_RUNTIME, "tokens_save_u16 with a vocabulary of %d ids", tok->vocab_size);
    return save(path, tok, ids, 2, n, val_fraction, source, source_bytes, source_sha256, force, e);
}

void tokens_save_u16(const char *path, const Tokenizer *tok, const uint16_t *ids, size_t n, double val_fraction,
                     const char *source, int64_t source_bytes, const char *source_sha256, int force) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, tokens_save_u16_e(path, tok, ids, n, val_fraction, source, source_bytes, source_sha256, force, &e));
}

// Length of /train or /val; -1 with *e set when it is not a 1-D integer dataset.
static long long split_length(hid_t f, const char *name, const char *path, GtErr *e) {
    int rank = 0;
    hsize_t dims[8];
    if (!h5_dataset_shape(f, name, &rank, dims) || rank != 1)
        return gt_err(e, GT_EXIT_USAGE, "'%s': /%s is missing or not one-dimensional", path, name);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t t = d >= 0 ? H5Dget_type(d) : -1;
    int ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) <= 4;
    if (t >= 0) H5Tclose(t);
    if (d >= 0) H5Dclose(d);
    if (!ok) return gt_err(e, GT_EXIT_USAGE, "'%s': /%s must hold unsigned 16- or 32-bit token ids", path, name);
    return (long long)dims[0];
}

// The checks of tokens_open_e on the open file.
static int read_info(hid_t f, const char *path, TokensInfo *info, Tokenizer *tok_or_null, GtErr *e) {
    Tokenizer t, *tok = tok_or_null ? tok_or_null : &t;
    if (vocab_read_group_e(f, tok, path, e)) return -1;
    info->vocab_size = tok->vocab_size;
    if (!tok_or_null) tokenizer_free(&t);
    long long n_train = split_length(f, "train", path, e), n_val = n_train < 0 ? -1 : split_length(f, "val", path, e);
    if (n_val < 0) return -1;
    info->n_train = (size_t)n_train;
    info->n_val = (size_t)n_val;
    hid_t d = H5Dopen2(f, "train", H5P_DEFAULT);
    char *sha = d >= 0 ? h5_attr_read_str(d, "source_sha256") : NULL;
    info->source = d >= 0 ? h5_attr_read_str(d, "source") : NULL;
    if (!info->source || !sha || strlen(sha) != 64 || !h5_attr_read_int(d, "source_bytes", &info->source_bytes))
        gt_err(e, GT_EXIT_USAGE, "'%s': /train lacks the source, source_bytes or source_sha256 attribute", path);
    else
        memcpy(info->source_sha256, sha, 65);
    free(sha);
    if (d >= 0) H5Dclose(d);
    return gt_failed(e) ? -1 : 0;
}

hid_t tokens_open_e(const char *path, TokensInfo *info, Tokenizer *tok_or_null, const char *flag_for_msg, GtErr *e) {
    memset(info, 0, sizeof *info);
    hid_t f = h5_open_checked_e(path, GT_FORMAT_TOKENS, flag_for_msg, e);
    if (f < 0) return -1;
    if (read_info(f, path, info, tok_or_null, e)) {
        if (tok_or_null) tokenizer_free(tok_or_null);
        tokens_info_free(info);
        H5Fclose(f);
        return -1;
    }
    return f;
}

hid_t tokens_open(const char *path, TokensInfo *info, Tokenizer *tok_or_null, const char *flag_for_msg) {
    GtErr e = GT_ERR_INIT;
    hid_t f = tokens_open_e(path, info, tok_or_null, flag_for_msg, &e);
    if (f < 0) gt_err_exit(&e);
    return f;
}

// "--data 'tokens.h5'" or "'tokens.h5'" for messages.
static void file_name(char *buf, size_t n, const char *flag, const char *path) {
    if (flag) snprintf(buf, n, "%s '%.4000s'", flag, path);
    else snprintf(buf, n, "'%.4000s'", path);
}

int tokens_read_dataset_e(hid_t dset, const char *split, size_t start, size_t count, int width, void *out,
                          int vocab_size, const char *flag, const char *path, GtErr *e) {
    if (gt_failed(e) || count == 0) return gt_failed(e) ? -1 : 0;
    char name[4200];
    file_name(name, sizeof name, flag, path);
    hsize_t off[1] = {start}, cnt[1] = {count};
    hid_t fs = H5Dget_space(dset), ms = H5Screate_simple(1, cnt, NULL);
    int ok = fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL) >= 0 &&
             H5Dread(dset, width == 2 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32, ms, fs, H5P_DEFAULT, out) >= 0;
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (!ok)
        return gt_err(e, GT_EXIT_USAGE, "%s: /%s[%zu:%zu] cannot be read (truncated or damaged file?)", name, split,
                      start, start + count);
    for (size_t i = 0; i < count; i++) {
        uint32_t id = width == 2 ? ((const uint16_t *)out)[i] : ((const uint32_t *)out)[i];
        if (id >= (uint32_t)vocab_size)
            return gt_err(e, GT_EXIT_USAGE,
                          "%s: /%s[%zu] = %u is not a valid token id: its /tokenizer has only %d tokens (tokens and "
                          "vocabulary disagree; encode the text again with this vocabulary)",
                          name, split, start + i, id, vocab_size);
    }
    return 0;
}

int tokens_read_e(hid_t file, const char *split, size_t start, size_t count, uint32_t *out, int vocab_size,
                  const char *flag, const char *path, GtErr *e) {
    if (gt_failed(e)) return -1;
    char name[4200];
    file_name(name, sizeof name, flag, path);
    hid_t d = H5Dopen2(file, split, H5P_DEFAULT), sp = d >= 0 ? H5Dget_space(d) : -1;
    hsize_t dims[1];
    if (sp < 0 || H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_dims(sp, dims, NULL) != 1)
        gt_err(e, GT_EXIT_USAGE, "%s: /%s is missing or not one-dimensional", name, split);
    else if (start > dims[0] || count > dims[0] - start)
        gt_err(e, GT_EXIT_USAGE, "%s: reading /%s[%zu:%zu] beyond its %llu tokens", name, split, start, start + count,
               (unsigned long long)dims[0]);
    else
        tokens_read_dataset_e(d, split, start, count, 4, out, vocab_size, flag, path, e);
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    return gt_failed(e) ? -1 : 0;
}

void tokens_read(hid_t file, const char *split, size_t start, size_t count, uint32_t *out, const char *path) {
    GtErr e = GT_ERR_INIT;
    int64_t V = 0;
    hid_t g = H5Gopen2(file, "tokenizer", H5P_DEFAULT);
    if (g < 0 || !h5_attr_read_int(g, "vocab_size", &V) || V < 1 || V > INT32_MAX)
        gt_err(&e, GT_EXIT_USAGE, "'%s': /tokenizer/vocab_size is missing", path);
    if (g >= 0) H5Gclose(g);
    GT_OR_EXIT(&e, tokens_read_e(file, split, start, count, out, (int)V, NULL, path, &e));
}

void tokens_info_free(TokensInfo *info) {
    free(info->source);
    info->source = NULL;
}
