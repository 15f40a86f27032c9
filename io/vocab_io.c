// vocab_io.c - see vocab_io.h. The reader trusts nothing: a damaged or hand-edited file gives
// one message naming the file and what is wrong, never a crash or a silently wrong tokenizer.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "vocab_io.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "h5util.h"
#include "tokens_io.h"
#include "utf8.h"

int vocab_write_group_e(hid_t file, const Tokenizer *tok, GtErr *e) {
    if (gt_failed(e)) return -1;
    hid_t g = h5_group_create_e(file, "tokenizer", e);
    h5_attr_write_str_e(g, "pattern", tok->pattern, e);
    h5_attr_write_int_e(g, "vocab_size", tok->vocab_size, e);
    h5_attr_write_int_e(g, "n_merges", tok->n_merges, e);
    hsize_t dm[2] = {(hsize_t)tok->n_merges, 2};
    h5_write_dataset_e(g, "merges", H5T_NATIVE_INT32, 2, dm, tok->merges, H5_WHOLE, 0, e);
    hsize_t db[1] = {(hsize_t)tok->token_offsets[tok->vocab_size]};
    h5_write_dataset_e(g, "token_bytes", H5T_NATIVE_UINT8, 1, db, tok->token_bytes, H5_WHOLE, 0, e);
    hsize_t doff[1] = {(hsize_t)tok->vocab_size + 1};
    h5_write_dataset_e(g, "token_offsets", H5T_NATIVE_INT64, 1, doff, tok->token_offsets, H5_WHOLE, 0, e);
    h5_write_strings_e(g, "special_tokens", tok->special, (size_t)tok->n_special, e);
    h5_close(g, e);
    return gt_failed(e) ? -1 : 0;
}

void vocab_write_group(hid_t file, const Tokenizer *tok) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, vocab_write_group_e(file, tok, &e));
}

static int is_integer_dataset(hid_t g, const char *name) {
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0) return 0;
    hid_t t = H5Dget_type(d);
    int ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER;
    if (t >= 0) H5Tclose(t);
    H5Dclose(d);
    return ok;
}

// The checks of vocab_read_group_e, on its open group g. What it reads goes into *tok at
// once, so the caller frees it all after a failure.
static int read_group(hid_t g, Tokenizer *tok, const char *path, GtErr *e) {
    char *pattern = tok->pattern = h5_attr_read_str(g, "pattern");
    int64_t V = 0, M = 0;
    if (!pattern) return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer has no 'pattern' attribute", path);
    if (!h5_attr_read_int(g, "vocab_size", &V) || !h5_attr_read_int(g, "n_merges", &M))
        return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer lacks the 'vocab_size' or 'n_merges' attribute", path);
    if (M < 0 || V < 256 + M || V > INT32_MAX)
        return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer: vocab_size %lld and n_merges %lld are inconsistent", path, (long long)V,
                      (long long)M);
    const char *names[3] = {"merges", "token_bytes", "token_offsets"};
    for (int i = 0; i < 3; i++)
        if (!h5_exists(g, names[i]) || !is_integer_dataset(g, names[i]))
            return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer/%s is missing or not an integer dataset", path, names[i]);
    int rank;
    hsize_t dims[8];
    if (!h5_dataset_shape(g, "merges", &rank, dims) || rank != 2 || dims[0] != (hsize_t)M || dims[1] != 2)
        return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer/merges must have shape (%lld, 2)", path, (long long)M);
    if (!h5_dataset_shape(g, "token_offsets", &rank, dims) || rank != 1 || dims[0] != (hsize_t)V + 1)
        return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer/token_offsets must have shape (%lld,)", path, (long long)V + 1);
    if (!h5_dataset_shape(g, "token_bytes", &rank, dims) || rank != 1)
        return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer/token_bytes must be one-dimensional", path);
    hsize_t nbytes = dims[0];
    size_t n_special = 0;
    char **special = h5_exists(g, "special_tokens") ? h5_read_strings(g, "special_tokens", &n_special) : NULL;
    tok->special = special;
    tok->n_special = (int)n_special;
    if (!special) return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer/special_tokens is missing or not a string dataset", path);
    if ((int64_t)n_special != V - 256 - M)
        return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer: %zu special tokens, but vocab_size - 256 - n_merges = %lld", path, n_special,
                      (long long)(V - 256 - M));

    if (tokenizer_pattern(pattern) != pattern) {  // a hand-made file may name the pattern
        char *re = gt_strdup(tokenizer_pattern(pattern));
        free(pattern);
        pattern = tok->pattern = re;
    }
    tok->vocab_size = (int)V;
    tok->n_merges = (int)M;
    tok->merges = h5_read_dataset_e(g, "merges", H5T_NATIVE_INT32, &rank, dims, path, e);
    tok->token_bytes = h5_read_dataset_e(g, "token_bytes", H5T_NATIVE_UINT8, &rank, dims, path, e);
    tok->token_offsets = h5_read_dataset_e(g, "token_offsets", H5T_NATIVE_INT64, &rank, dims, path, e);
    if (gt_failed(e)) return -1;

    // Every id must be built from earlier ones, and every token's bytes must be exactly what
    // its merge (or special string) says: the decoder relies on both.
    const int64_t *off = tok->token_offsets;
    if (off[0] != 0 || off[V] != (int64_t)nbytes)
        return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer/token_offsets must start at 0 and end at len(token_bytes) = %llu", path,
                      (unsigned long long)nbytes);
    for (int64_t i = 0; i < V; i++)
        if (off[i + 1] < off[i]) return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer/token_offsets decreases at %lld", path, (long long)i);
    for (int i = 0; i < 256; i++)
        if (off[i + 1] - off[i] != 1 || tok->token_bytes[off[i]] != i)
            return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer: token %d must be the single byte %d", path, i, i);
    for (int64_t i = 0; i < M; i++) {
        int32_t a = tok->merges[2 * i], b = tok->merges[2 * i + 1];
        if (a < 0 || b < 0 || a >= 256 + i || b >= 256 + i)
            return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer/merges[%lld] = (%d, %d) uses an id that does not exist yet", path,
                          (long long)i, a, b);
        int64_t la = off[a + 1] - off[a], lb = off[b + 1] - off[b], t = 256 + i;
        if (off[t + 1] - off[t] != la + lb || memcmp(tok->token_bytes + off[t], tok->token_bytes + off[a], (size_t)la) ||
            memcmp(tok->token_bytes + off[t] + la, tok->token_bytes + off[b], (size_t)lb))
            return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer: bytes of token %lld do not match merge (%d, %d)", path, (long long)t, a, b);
    }
    for (size_t i = 0; i < n_special; i++) {
        int64_t t = 256 + M + (int64_t)i;
        size_t l = strlen(special[i]);
        if (l == 0 || l > 1024 || (int64_t)l != off[t + 1] - off[t] || memcmp(tok->token_bytes + off[t], special[i], l) != 0)
            return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer: bytes of special token %lld do not match special_tokens[%zu]", path,
                          (long long)t, i);
        size_t bad;
        if (!utf8_validate(special[i], l, &bad))
            return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer/special_tokens[%zu] is not valid UTF-8", path, i);
    }
    size_t bad;
    if (!utf8_validate(pattern, strlen(pattern), &bad))
        return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer pattern is not valid UTF-8", path);
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &errcode, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        return gt_err(e, GT_EXIT_USAGE, "'%s': /tokenizer pattern is not a valid regex (offset %zu: %s)", path, (size_t)erroff, (char *)msg);
    }
    pcre2_code_free(re);
    tokenizer_prepare(tok);
    return 0;
}

int vocab_read_group_e(hid_t file, Tokenizer *tok, const char *path, GtErr *e) {
    memset(tok, 0, sizeof *tok);
    if (gt_failed(e)) return -1;
    if (!h5_exists(file, "tokenizer")) return gt_err(e, GT_EXIT_USAGE, "'%s': no /tokenizer group (not a vocabulary?)", path);
    hid_t g = h5_group_open_e(file, "tokenizer", path, e);
    if (g < 0) return -1;
    int rc = read_group(g, tok, path, e);
    H5Gclose(g);
    if (rc) tokenizer_free(tok);
    return rc;
}

void vocab_read_group(hid_t file, Tokenizer *tok, const char *path) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, vocab_read_group_e(file, tok, path, &e));
}



int vocab_save_e(const char *path, const Tokenizer *tok, int force, GtErr *e) {
    char tmp[4200];
    h5_check_output_path_e(path, "--out", force, e);
    hid_t f = h5_create_tmp_e(path, GT_FORMAT_VOCAB, tmp, sizeof tmp, e);
    vocab_write_group_e(f, tok, e);
    return h5_commit_e(f, tmp, path, e);
}

void vocab_save(const char *path, const Tokenizer *tok, int force) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, vocab_save_e(path, tok, force, &e));
}

int vocab_load_e(const char *path, Tokenizer *tok, const char *flag_for_msg, GtErr *e) {
    memset(tok, 0, sizeof *tok);
    hid_t f = h5_open_checked_e(path, NULL, flag_for_msg, e);
    if (f < 0) return -1;
    // A tokens.h5 and a checkpoint hold the same /tokenizer: one encodes new text for a model.
    char *fmt = h5_attr_read_str(f, "format");
    if (!fmt || (strcmp(fmt, GT_FORMAT_VOCAB) && strcmp(fmt, GT_FORMAT_TOKENS) && strcmp(fmt, "gpt-train/checkpoint")))
        gt_err(e, GT_EXIT_USAGE, "%s '%s': format is '%s', expected '%s' (or a tokens.h5 or a checkpoint, which hold "
               "one)", flag_for_msg, path, fmt ? fmt : "", GT_FORMAT_VOCAB);
    free(fmt);
    if (gt_failed(e)) {
        H5Fclose(f);
        return -1;
    }
    int rc = vocab_read_group_e(f, tok, path, e);
    H5Fclose(f);
    return rc;
}

void vocab_load(const char *path, Tokenizer *tok, const char *flag_for_msg) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, vocab_load_e(path, tok, flag_for_msg, &e));
}
