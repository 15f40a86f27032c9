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

static void write_split(hid_t f, const char *name, const void *ids, hid_t mtype, size_t n, hid_t ftype,
                        const char *source, int64_t source_bytes, const char *sha) {
    hsize_t dims[1] = {n}, maxdims[1] = {H5S_UNLIMITED}, chunk[1] = {TOKENS_CHUNK};
    hid_t sp = H5Screate_simple(1, dims, maxdims);
    H5_CHECK(sp, "");
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5_CHECK(dcpl, "");
    H5_CHECK(H5Pset_chunk(dcpl, 1, chunk), "");
    // A checksum per chunk (128-256 KiB), verified by HDF5 and h5py on every read, also of
    // a rank's hyperslab: a flipped byte is a failed read naming the file, not wrong tokens.
    H5_CHECK(H5Pset_fletcher32(dcpl), "");
    hid_t d = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5_CHECK(d, "");
    // HDF5 narrows uint32 -> uint16 on the way out, a strip at a time (no full copy).
    if (n > 0) H5_CHECK(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids), "is the disk full?");
    h5_attr_write_str(d, "source", source);
    h5_attr_write_int(d, "source_bytes", source_bytes);
    h5_attr_write_str(d, "source_sha256", sha);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
}

static void save(const char *path, const Tokenizer *tok, const void *ids, size_t id_bytes, size_t n,
                 double val_fraction, const char *source, int64_t source_bytes, const char *source_sha256, int force) {
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        gt_fail_usage("--val-fraction %g: must be in [0, 1)", val_fraction);
    h5_check_output_path(path, "--out", force);
    size_t n_val = (size_t)llround((double)n * val_fraction);
    if (n_val > n) n_val = n;
    size_t n_train = n - n_val;
    char tmp[4200];
    hid_t f = h5_create_tmp(path, GT_FORMAT_TOKENS, tmp, sizeof tmp);
    vocab_write_group(f, tok);
    hid_t ftype = tok->vocab_size <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE;
    hid_t mtype = id_bytes == 2 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32;
    write_split(f, "train", ids, mtype, n_train, ftype, source, source_bytes, source_sha256);
    write_split(f, "val", (const char *)ids + n_train * id_bytes, mtype, n_val, ftype, source, source_bytes,
                source_sha256);
    h5_commit(f, tmp, path);
}

void tokens_save(const char *path, const Tokenizer *tok, const uint32_t *ids, size_t n, double val_fraction,
                 const char *source, int64_t source_bytes, const char *source_sha256, int force) {
    save(path, tok, ids, 4, n, val_fraction, source, source_bytes, source_sha256, force);
}

void tokens_save_u16(const char *path, const Tokenizer *tok, const uint16_t *ids, size_t n, double val_fraction,
                     const char *source, int64_t source_bytes, const char *source_sha256, int force) {
    if (tok->vocab_size > 65536) gt_fail(GT_EXIT_RUNTIME, "tokens_save_u16 with a vocabulary of %d ids", tok->vocab_size);
    save(path, tok, ids, 2, n, val_fraction, source, source_bytes, source_sha256, force);
}

static size_t split_length(hid_t f, const char *name, const char *path) {
    int rank = 0;
    hsize_t dims[8];
    if (!h5_dataset_shape(f, name, &rank, dims) || rank != 1)
        gt_fail_usage("'%s': /%s is missing or not one-dimensional", path, name);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t t = d >= 0 ? H5Dget_type(d) : -1;
    int ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) <= 4;
    if (t >= 0) H5Tclose(t);
    if (d >= 0) H5Dclose(d);
    if (!ok) gt_fail_usage("'%s': /%s must hold unsigned 16- or 32-bit token ids", path, name);
    return (size_t)dims[0];
}

hid_t tokens_open(const char *path, TokensInfo *info, Tokenizer *tok_or_null, const char *flag_for_msg) {
    memset(info, 0, sizeof *info);
    hid_t f = h5_open_checked(path, GT_FORMAT_TOKENS, flag_for_msg);
    if (tok_or_null) {
        vocab_read_group(f, tok_or_null, path);
        info->vocab_size = tok_or_null->vocab_size;
    } else {
        Tokenizer t;
        vocab_read_group(f, &t, path);
        info->vocab_size = t.vocab_size;
        tokenizer_free(&t);
    }
    info->n_train = split_length(f, "train", path);
    info->n_val = split_length(f, "val", path);
    hid_t d = H5Dopen2(f, "train", H5P_DEFAULT);
    H5_CHECK(d, "");
    info->source = h5_attr_read_str(d, "source");
    char *sha = h5_attr_read_str(d, "source_sha256");
    if (!info->source || !sha || strlen(sha) != 64 || !h5_attr_read_int(d, "source_bytes", &info->source_bytes))
        gt_fail_usage("'%s': /train lacks the source, source_bytes or source_sha256 attribute", path);
    memcpy(info->source_sha256, sha, 65);
    free(sha);
    H5Dclose(d);
    return f;
}

void tokens_read(hid_t file, const char *split, size_t start, size_t count, uint32_t *out, const char *path) {
    hid_t d = H5Dopen2(file, split, H5P_DEFAULT);
    if (d < 0) gt_fail_usage("'%s': no /%s dataset", path, split);
    hid_t sp = H5Dget_space(d);
    H5_CHECK(sp, "");
    hsize_t dims[1];
    if (H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_dims(sp, dims, NULL) != 1)
        gt_fail_usage("'%s': /%s is not one-dimensional", path, split);
    if (start > dims[0] || count > dims[0] - start)
        gt_fail_usage("'%s': reading /%s[%zu:%zu] beyond its %llu tokens", path, split, start, start + count,
                      (unsigned long long)dims[0]);
    if (count > 0) {
        hsize_t off[1] = {start}, cnt[1] = {count};
        H5_CHECK(H5Sselect_hyperslab(sp, H5S_SELECT_SET, off, NULL, cnt, NULL), "");
        hid_t ms = H5Screate_simple(1, cnt, NULL);
        if (H5Dread(d, H5T_NATIVE_UINT32, ms, sp, H5P_DEFAULT, out) < 0)
            gt_fail_usage("'%s': /%s[%zu:%zu] cannot be read (truncated or damaged file?)", path, split, start,
                          start + count);
        H5Sclose(ms);
    }
    H5Sclose(sp);
    H5Dclose(d);
    int64_t V = 0;
    hid_t g = H5Gopen2(file, "tokenizer", H5P_DEFAULT);
    if (g < 0 || !h5_attr_read_int(g, "vocab_size", &V)) gt_fail_usage("'%s': /tokenizer/vocab_size is missing", path);
    H5Gclose(g);
    for (size_t i = 0; i < count; i++)
        if (out[i] >= (uint64_t)V)
            gt_fail_usage("'%s': /%s[%zu] = %u is not a valid token id (vocab_size %lld)", path, split, start + i, out[i],
                          (long long)V);
}

void tokens_info_free(TokensInfo *info) {
    free(info->source);
    info->source = NULL;
}
