// vocab_io.c - see vocab_io.h. The reader trusts nothing: a damaged or hand-edited file gives
// one message naming the file and what is wrong, never a crash or a silently wrong tokenizer.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "vocab_io.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "h5util.h"
#include "utf8.h"

void vocab_write_group(hid_t file, const Tokenizer *tok) {
    hid_t g = h5_group_create(file, "tokenizer");
    h5_attr_write_str(g, "pattern", tok->pattern);
    h5_attr_write_int(g, "vocab_size", tok->vocab_size);
    h5_attr_write_int(g, "n_merges", tok->n_merges);
    hsize_t dm[2] = {(hsize_t)tok->n_merges, 2};
    h5_write_dataset(g, "merges", H5T_NATIVE_INT32, 2, dm, tok->merges, H5_WHOLE, 0);
    hsize_t db[1] = {(hsize_t)tok->token_offsets[tok->vocab_size]};
    h5_write_dataset(g, "token_bytes", H5T_NATIVE_UINT8, 1, db, tok->token_bytes, H5_WHOLE, 0);
    hsize_t doff[1] = {(hsize_t)tok->vocab_size + 1};
    h5_write_dataset(g, "token_offsets", H5T_NATIVE_INT64, 1, doff, tok->token_offsets, H5_WHOLE, 0);
    h5_write_strings(g, "special_tokens", tok->special, (size_t)tok->n_special);
    H5Gclose(g);
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

void vocab_read_group(hid_t file, Tokenizer *tok, const char *path) {
    memset(tok, 0, sizeof *tok);
    if (!h5_exists(file, "tokenizer")) gt_fail_usage("'%s': no /tokenizer group (not a vocabulary?)", path);
    hid_t g = h5_group_open(file, "tokenizer", path);
    char *pattern = h5_attr_read_str(g, "pattern");
    int64_t V = 0, M = 0;
    if (!pattern) gt_fail_usage("'%s': /tokenizer has no 'pattern' attribute", path);
    if (!h5_attr_read_int(g, "vocab_size", &V) || !h5_attr_read_int(g, "n_merges", &M))
        gt_fail_usage("'%s': /tokenizer lacks the 'vocab_size' or 'n_merges' attribute", path);
    if (M < 0 || V < 256 + M || V > INT32_MAX)
        gt_fail_usage("'%s': /tokenizer: vocab_size %lld and n_merges %lld are inconsistent", path, (long long)V,
                      (long long)M);
    const char *names[3] = {"merges", "token_bytes", "token_offsets"};
    for (int i = 0; i < 3; i++)
        if (!h5_exists(g, names[i]) || !is_integer_dataset(g, names[i]))
            gt_fail_usage("'%s': /tokenizer/%s is missing or not an integer dataset", path, names[i]);
    int rank;
    hsize_t dims[8];
    if (!h5_dataset_shape(g, "merges", &rank, dims) || rank != 2 || dims[0] != (hsize_t)M || dims[1] != 2)
        gt_fail_usage("'%s': /tokenizer/merges must have shape (%lld, 2)", path, (long long)M);
    if (!h5_dataset_shape(g, "token_offsets", &rank, dims) || rank != 1 || dims[0] != (hsize_t)V + 1)
        gt_fail_usage("'%s': /tokenizer/token_offsets must have shape (%lld,)", path, (long long)V + 1);
    if (!h5_dataset_shape(g, "token_bytes", &rank, dims) || rank != 1)
        gt_fail_usage("'%s': /tokenizer/token_bytes must be one-dimensional", path);
    hsize_t nbytes = dims[0];
    size_t n_special = 0;
    char **special = h5_exists(g, "special_tokens") ? h5_read_strings(g, "special_tokens", &n_special) : NULL;
    if (!special) gt_fail_usage("'%s': /tokenizer/special_tokens is missing or not a string dataset", path);
    if ((int64_t)n_special != V - 256 - M)
        gt_fail_usage("'%s': /tokenizer: %zu special tokens, but vocab_size - 256 - n_merges = %lld", path, n_special,
                      (long long)(V - 256 - M));

    if (tokenizer_pattern(pattern) != pattern) {  // a hand-made file may name the pattern
        char *re = gt_strdup(tokenizer_pattern(pattern));
        free(pattern);
        pattern = re;
    }
    tok->pattern = pattern;
    tok->vocab_size = (int)V;
    tok->n_merges = (int)M;
    tok->n_special = (int)n_special;
    tok->special = special;
    tok->merges = h5_read_dataset(g, "merges", H5T_NATIVE_INT32, &rank, dims, path);
    tok->token_bytes = h5_read_dataset(g, "token_bytes", H5T_NATIVE_UINT8, &rank, dims, path);
    tok->token_offsets = h5_read_dataset(g, "token_offsets", H5T_NATIVE_INT64, &rank, dims, path);
    H5Gclose(g);

    // Every id must be built from earlier ones, and every token's bytes must be exactly what
    // its merge (or special string) says: the decoder relies on both.
    const int64_t *off = tok->token_offsets;
    if (off[0] != 0 || off[V] != (int64_t)nbytes)
        gt_fail_usage("'%s': /tokenizer/token_offsets must start at 0 and end at len(token_bytes) = %llu", path,
                      (unsigned long long)nbytes);
    for (int64_t i = 0; i < V; i++)
        if (off[i + 1] < off[i]) gt_fail_usage("'%s': /tokenizer/token_offsets decreases at %lld", path, (long long)i);
    for (int i = 0; i < 256; i++)
        if (off[i + 1] - off[i] != 1 || tok->token_bytes[off[i]] != i)
            gt_fail_usage("'%s': /tokenizer: token %d must be the single byte %d", path, i, i);
    for (int64_t i = 0; i < M; i++) {
        int32_t a = tok->merges[2 * i], b = tok->merges[2 * i + 1];
        if (a < 0 || b < 0 || a >= 256 + i || b >= 256 + i)
            gt_fail_usage("'%s': /tokenizer/merges[%lld] = (%d, %d) uses an id that does not exist yet", path,
                          (long long)i, a, b);
        int64_t la = off[a + 1] - off[a], lb = off[b + 1] - off[b], t = 256 + i;
        if (off[t + 1] - off[t] != la + lb || memcmp(tok->token_bytes + off[t], tok->token_bytes + off[a], (size_t)la) ||
            memcmp(tok->token_bytes + off[t] + la, tok->token_bytes + off[b], (size_t)lb))
            gt_fail_usage("'%s': /tokenizer: bytes of token %lld do not match merge (%d, %d)", path, (long long)t, a, b);
    }
    for (size_t i = 0; i < n_special; i++) {
        int64_t t = 256 + M + (int64_t)i;
        size_t l = strlen(special[i]);
        if (l == 0 || l > 1024 || (int64_t)l != off[t + 1] - off[t] || memcmp(tok->token_bytes + off[t], special[i], l) != 0)
            gt_fail_usage("'%s': /tokenizer: bytes of special token %lld do not match special_tokens[%zu]", path,
                          (long long)t, i);
        size_t bad;
        if (!utf8_validate(special[i], l, &bad))
            gt_fail_usage("'%s': /tokenizer/special_tokens[%zu] is not valid UTF-8", path, i);
    }
    size_t bad;
    if (!utf8_validate(pattern, strlen(pattern), &bad))
        gt_fail_usage("'%s': /tokenizer pattern is not valid UTF-8", path);
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &errcode, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        gt_fail_usage("'%s': /tokenizer pattern is not a valid regex (offset %zu: %s)", path, (size_t)erroff, (char *)msg);
    }
    pcre2_code_free(re);
    tokenizer_prepare(tok);
}

void vocab_save(const char *path, const Tokenizer *tok, int force) {
    h5_check_output_path(path, "--out", force);
    char tmp[4200];
    hid_t f = h5_create_tmp(path, GT_FORMAT_VOCAB, tmp, sizeof tmp);
    vocab_write_group(f, tok);
    h5_commit(f, tmp, path);
}

void vocab_load(const char *path, Tokenizer *tok, const char *flag_for_msg) {
    hid_t f = h5_open_checked(path, GT_FORMAT_VOCAB, flag_for_msg);
    vocab_read_group(f, tok, path);
    H5Fclose(f);
}
