// generation_io.c - see generation_io.h.
#include "generation_io.h"

#include <stdlib.h>
#include <string.h>

#include "attention_io.h"
#include "h5util.h"

struct GenWriter {
    char *path;
    char tmp[4200];
    hid_t file, d_ids, d_tokens, d_att, d_ctx, str_type;
    hid_t d_top_ids, d_top_probs, d_top_tokens;  // -1 unless candidates are recorded
    const Tokenizer *tok;
    int L, NH, T, K;
    long long n_ids, N;  // ids so far (prompt + generated), generated tokens
};

// Appends ids and their texts to /token_ids and /tokens.
static int push_ids(GenWriter *w, const int32_t *ids, int k, GtErr *e) {
    hsize_t rec[1] = {1};
    char **text = gt_malloc((size_t)(k ? k : 1) * sizeof(char *), "token texts");
    for (int i = 0; i < k; i++) text[i] = token_text_utf8(w->tok, ids[i]);
    h5_append_e(w->d_ids, H5T_NATIVE_INT32, 1, rec, w->n_ids, k, ids, e);
    h5_append_e(w->d_tokens, w->str_type, 1, rec, w->n_ids, k, text, e);
    for (int i = 0; i < k; i++) free(text[i]);
    free(text);
    if (!gt_failed(e)) w->n_ids += k;
    return gt_failed(e) ? -1 : 0;
}

static int write_header(GenWriter *w, const GenMeta *meta, const int32_t *ids, int P, const float *att, GtErr *e) {
    hid_t f = w->file;
    h5_attr_write_int_e(f, "n_prompt", P, e);
    h5_attr_write_str_e(f, "prompt", meta->prompt, e);
    h5_attr_write_double_e(f, "temperature", meta->temperature, e);
    h5_attr_write_int_e(f, "top_k", meta->top_k, e);
    h5_attr_write_double_e(f, "top_p", meta->top_p, e);
    h5_attr_write_int_e(f, "seed", (int64_t)meta->seed, e);
    h5_attr_write_str_e(f, "checkpoint", meta->checkpoint, e);
    h5_attr_write_int_e(f, "step", meta->step, e);
    h5_attr_write_int_e(f, "n_layer", w->L, e);
    h5_attr_write_int_e(f, "n_head", w->NH, e);
    h5_attr_write_int_e(f, "block_size", w->T, e);
    h5_attr_write_int_e(f, "prompt_dropped_tokens", meta->prompt_dropped, e);

    // (L, NH, P, P): the first P rows and columns of each head's (T, T) matrix
    size_t T = (size_t)w->T, LH = (size_t)w->L * w->NH;
    float *pa = gt_malloc(LH * P * P * sizeof(float) + 1, "prompt attention");
    for (size_t lh = 0; lh < LH; lh++)
        for (int i = 0; i < P; i++)
            memcpy(pa + (lh * P + i) * P, att + (lh * T + i) * T, (size_t)P * sizeof(float));
    hsize_t pd[4] = {(hsize_t)w->L, (hsize_t)w->NH, (hsize_t)P, (hsize_t)P};
    h5_write_dataset_e(f, "prompt_attention", H5T_IEEE_F32LE, 4, pd, pa, pd[0], 1, e);
    free(pa);

    hsize_t rec[4] = {0, (hsize_t)w->L, (hsize_t)w->NH, (hsize_t)w->T};
    if (!gt_failed(e) && (w->str_type = H5Tcopy(H5T_C_S1)) >= 0 &&
        (H5Tset_size(w->str_type, H5T_VARIABLE) < 0 || H5Tset_cset(w->str_type, H5T_CSET_UTF8) < 0))
        h5_err_call(e, "H5Tset_size", __FILE__, __LINE__);
    w->d_ids = h5_create_extendable_e(f, "token_ids", H5T_STD_I32LE, 1, rec, 1024, 0, 1, e);
    w->d_tokens = h5_create_extendable_e(f, "tokens", w->str_type, 1, rec, 1024, 0, 0, e);  // no filters on strings
    w->d_att = h5_create_extendable_e(f, "attention", H5T_IEEE_F32LE, 4, rec, 1, 1, 1, e);
    h5_attr_write_str_e(w->d_att, "axes", "token,layer,head,key", e);
    w->d_ctx = h5_create_extendable_e(f, "context_start", H5T_STD_I64LE, 1, rec, 1024, 0, 1, e);
    if (w->K > 0) {
        hsize_t krec[2] = {0, (hsize_t)w->K};
        w->d_top_ids = h5_create_extendable_e(f, "top_ids", H5T_STD_I32LE, 2, krec, 64, 0, 1, e);
        w->d_top_probs = h5_create_extendable_e(f, "top_probs", H5T_IEEE_F32LE, 2, krec, 64, 0, 1, e);
        w->d_top_tokens = h5_create_extendable_e(f, "top_tokens", w->str_type, 2, krec, 64, 0, 0, e);
    }
    return push_ids(w, ids, gt_failed(e) ? 0 : P, e);
}

GenWriter *gen_writer_open_e(const char *path, const GPTConfig *c, const Tokenizer *tok, const GenMeta *meta,
                             const int32_t *ids, int P, const float *att, GtErr *e) {
    if (gt_failed(e)) return NULL;
    GenWriter *w = gt_calloc(1, sizeof *w, "generation writer");
    w->path = gt_strdup(path);
    w->tok = tok;
    w->L = c->n_layer, w->NH = c->n_head, w->T = c->block_size, w->K = meta->record_top;
    w->d_ids = w->d_tokens = w->d_att = w->d_ctx = w->str_type = -1;
    w->d_top_ids = w->d_top_probs = w->d_top_tokens = -1;
    w->file = h5_create_tmp_e(path, GT_FORMAT_GENERATION, w->tmp, sizeof w->tmp, e);
    if (w->file >= 0) write_header(w, meta, ids, P, att, e);
    if (gt_failed(e)) {
        gen_writer_close_e(w, "", e);
        return NULL;
    }
    return w;
}

int gen_writer_token_e(GenWriter *w, int32_t id, const float *row, int64_t context_start, const int32_t *top_ids,
                       const float *top_probs, GtErr *e) {
    if (gt_failed(e)) return -1;
    hsize_t rec[4] = {1, (hsize_t)w->L, (hsize_t)w->NH, (hsize_t)w->T};
    h5_append_e(w->d_att, H5T_NATIVE_FLOAT, 4, rec, w->N, 1, row, e);
    h5_append_e(w->d_ctx, H5T_NATIVE_INT64, 1, rec, w->N, 1, &context_start, e);
    if (w->K > 0) {
        hsize_t krec[2] = {1, (hsize_t)w->K};
        char **text = gt_malloc((size_t)w->K * sizeof(char *), "candidate texts");
        for (int k = 0; k < w->K; k++) text[k] = token_text_utf8(w->tok, top_ids[k]);
        h5_append_e(w->d_top_ids, H5T_NATIVE_INT32, 2, krec, w->N, 1, top_ids, e);
        h5_append_e(w->d_top_probs, H5T_NATIVE_FLOAT, 2, krec, w->N, 1, top_probs, e);
        h5_append_e(w->d_top_tokens, w->str_type, 2, krec, w->N, 1, text, e);
        for (int k = 0; k < w->K; k++) free(text[k]);
        free(text);
    }
    if (push_ids(w, &id, 1, e) == 0) w->N++;
    return gt_failed(e) ? -1 : 0;
}

int gen_writer_close_e(GenWriter *w, const char *stopped_by, GtErr *e) {
    h5_attr_write_int_e(w->file, "n_generated", w->N, e);
    h5_attr_write_str_e(w->file, "stopped_by", stopped_by, e);
    h5_close(w->d_ids, e);
    h5_close(w->d_tokens, e);
    h5_close(w->d_att, e);
    h5_close(w->d_ctx, e);
    h5_close(w->d_top_ids, e);
    h5_close(w->d_top_probs, e);
    h5_close(w->d_top_tokens, e);
    h5_close(w->str_type, e);
    int rc = h5_commit_e(w->file, w->tmp, w->path, e);
    free(w->path);
    free(w);
    return rc;
}
