// tokens_io.c - see tokens_io.h. Ids are stored as uint16 when the vocabulary fits (half the
// disk and page cache of uint32), chunked so a trainer's random windows read little.
#include "tokens_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "h5util.h"
#include "vocab_io.h"

#define TOKENS_CHUNK ((hsize_t)1 << 16)

static int write_split(hid_t f, const char *name, const void *ids, hid_t mtype, size_t n, hid_t ftype,
                       const TokensProvenance *p, GtErr *e) {
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
    h5_attr_write_str_e(d, "source", p->source, e);
    h5_attr_write_int_e(d, "source_bytes", p->source_bytes, e);
    h5_attr_write_str_e(d, "source_sha256", p->source_sha256, e);
fail:
    // Closing writes the chunks HDF5 still caches: on a full disk this is where it fails.
    h5_close(d, e);
    h5_close(dcpl, e);
    h5_close(sp, e);
    return gt_failed(e) ? -1 : 0;
}

// /sources: one row per source (docs/formats.md, tokens.h5).
static int write_sources(hid_t f, const TokensProvenance *p, size_t n_train, size_t n_val, GtErr *e) {
    TokensSource one = {(char *)p->source, p->source_bytes, "", (int64_t)n_train, (int64_t)n_val};
    const TokensSource *s = p->sources;
    size_t n = (size_t)p->n_sources;
    if (!s) {
        snprintf(one.sha256, sizeof one.sha256, "%s", p->source_sha256);
        s = &one;
        n = 1;
    }
    char **paths = gt_malloc((n ? n : 1) * sizeof *paths, "sources"), **shas = gt_malloc((n ? n : 1) * sizeof *shas, "sources");
    int64_t *cols = gt_malloc(3 * (n ? n : 1) * sizeof *cols, "sources");
    for (size_t i = 0; i < n; i++) {
        paths[i] = s[i].path;
        shas[i] = (char *)s[i].sha256;
        cols[i] = s[i].bytes;
        cols[n + i] = s[i].train_tokens;
        cols[2 * n + i] = s[i].val_tokens;
    }
    hid_t g = h5_group_create_e(f, "sources", e);
    hsize_t dims[1] = {n};
    h5_write_strings_e(g, "path", paths, n, e);
    h5_write_dataset_e(g, "bytes", H5T_NATIVE_INT64, 1, dims, cols, 0, 0, e);
    h5_write_strings_e(g, "sha256", shas, n, e);
    h5_write_dataset_e(g, "train_tokens", H5T_NATIVE_INT64, 1, dims, cols + n, 0, 0, e);
    h5_write_dataset_e(g, "val_tokens", H5T_NATIVE_INT64, 1, dims, cols + 2 * n, 0, 0, e);
    h5_attr_write_str_e(g, "doc_separator", p->doc_separator ? p->doc_separator : "", e);
    h5_attr_write_str_e(g, "val_split", p->val_split ? p->val_split : "tokens", e);
    h5_close(g, e);
    free(paths);
    free(shas);
    free(cols);
    return gt_failed(e) ? -1 : 0;
}

int tokens_write_e(const char *path, const Tokenizer *tok, const void *ids, int width, size_t n, size_t n_val,
                   const TokensProvenance *p, int force, GtErr *e) {
    if (gt_failed(e)) return -1;
    if (n_val > n) return gt_err(e, GT_EXIT_RUNTIME, "tokens_write: /val of %zu ids out of %zu", n_val, n);
    if (width == 2 && tok->vocab_size > 65536)
        return gt_err(e, GT_EXIT_RUNTIME, "tokens_write: 16-bit ids with a vocabulary of %d ids", tok->vocab_size);
    size_t n_train = n - n_val;
    char tmp[4200];
    h5_check_output_path_e(path, "--out", force, e);
    hid_t f = h5_create_tmp_e(path, GT_FORMAT_TOKENS, tmp, sizeof tmp, e);
    vocab_write_group_e(f, tok, e);
    hid_t ftype = tok->vocab_size <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE;
    hid_t mtype = width == 2 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32;
    write_split(f, "train", ids, mtype, n_train, ftype, p, e);
    write_split(f, "val", (const char *)ids + n_train * (size_t)width, mtype, n_val, ftype, p, e);
    write_sources(f, p, n_train, n_val, e);
    return h5_commit_e(f, tmp, path, e);
}

void tokens_save(const char *path, const Tokenizer *tok, const uint32_t *ids, size_t n, double val_fraction,
                 const char *source, int64_t source_bytes, const char *source_sha256, int force) {
    GtErr e = GT_ERR_INIT;
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        gt_err(&e, GT_EXIT_USAGE, "--val-fraction %g: must be in [0, 1)", val_fraction);
    size_t n_val = (size_t)llround((double)n * val_fraction);
    TokensProvenance p = {source, source_bytes, source_sha256, NULL, 0, NULL, "tokens"};
    GT_OR_EXIT(&e, tokens_write_e(path, tok, ids, 4, n, n_val > n ? n : n_val, &p, force, &e));
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

// /sources, or for a file written before it, one source made of /train's attributes.
static int read_sources(hid_t f, const char *path, TokensInfo *info, GtErr *e) {
    if (gt_failed(e)) return -1;
    if (!h5_exists(f, "sources")) {
        info->n_sources = 1;
        info->sources = gt_calloc(1, sizeof *info->sources, "sources");
        info->sources[0] = (TokensSource){gt_strdup(info->source), info->source_bytes, "", (int64_t)info->n_train,
                                          (int64_t)info->n_val};
        memcpy(info->sources[0].sha256, info->source_sha256, 65);
        info->doc_separator = gt_strdup("");
        info->val_split = gt_strdup("tokens");
        return 0;
    }
    hid_t g = h5_group_open_e(f, "sources", path, e);
    if (g < 0) return -1;
    size_t np = 0, ns = 0;
    char **paths = h5_read_strings(g, "path", &np), **shas = h5_read_strings(g, "sha256", &ns);
    const char *cols[3] = {"bytes", "train_tokens", "val_tokens"};
    int64_t *v[3] = {NULL, NULL, NULL};
    int ok = paths && shas && np == ns;
    for (int k = 0; k < 3 && ok; k++) {
        int rank;
        hsize_t dims[8];
        ok = h5_dataset_shape(g, cols[k], &rank, dims) && rank == 1 && dims[0] == np &&
             (v[k] = h5_read_dataset_e(g, cols[k], H5T_NATIVE_INT64, &rank, dims, path, e)) != NULL;
    }
    info->doc_separator = h5_attr_read_str(g, "doc_separator");
    info->val_split = h5_attr_read_str(g, "val_split");
    if (!ok || !info->doc_separator || !info->val_split) {
        gt_err(e, GT_EXIT_USAGE, "'%s': /sources is damaged (path, bytes, sha256, train_tokens and val_tokens must be "
               "1-D datasets of one length; doc_separator and val_split string attributes)", path);
    } else {
        info->n_sources = (int)np;
        info->sources = gt_calloc(np ? np : 1, sizeof *info->sources, "sources");
        for (size_t i = 0; i < np; i++) {
            info->sources[i] = (TokensSource){paths[i], v[0][i], "", v[1][i], v[2][i]};
            snprintf(info->sources[i].sha256, sizeof info->sources[i].sha256, "%s", shas[i]);
            paths[i] = NULL;
        }
    }
    for (size_t i = 0; paths && i < np; i++) free(paths[i]);
    for (size_t i = 0; shas && i < ns; i++) free(shas[i]);
    free(paths);
    free(shas);
    for (int k = 0; k < 3; k++) free(v[k]);
    H5Gclose(g);
    return gt_failed(e) ? -1 : 0;
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
    return read_sources(f, path, info, e);
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
    for (int i = 0; i < info->n_sources; i++) free(info->sources[i].path);
    free(info->sources);
    free(info->doc_separator);
    free(info->val_split);
    info->source = NULL;
    info->sources = NULL;
    info->n_sources = 0;
    info->doc_separator = info->val_split = NULL;
}
