// generation_io.c - see generation_io.h.
#include "generation_io.h"

#include <stdlib.h>
#include <string.h>

#include "attention_io.h"
#include "error.h"
#include "h5util.h"

void gen_record_init(GenRecord *r, const GPTConfig *c) {
    memset(r, 0, sizeof *r);
    r->L = c->n_layer, r->NH = c->n_head, r->T = c->block_size;
}

static void push_id(GenRecord *r, int32_t id) {
    if (r->n_ids == r->cap_ids) {
        r->cap_ids = r->cap_ids ? 2 * r->cap_ids : 256;
        r->ids = gt_realloc(r->ids, r->cap_ids * sizeof(int32_t), "generated ids");
    }
    r->ids[r->n_ids++] = id;
}

void gen_record_prompt(GenRecord *r, const int32_t *ids, int P, const float *att) {
    size_t T = (size_t)r->T, LH = (size_t)r->L * r->NH;
    r->P = P;
    for (int i = 0; i < P; i++) push_id(r, ids[i]);
    r->prompt_att = gt_malloc(LH * P * P * sizeof(float), "prompt attention");
    for (size_t lh = 0; lh < LH; lh++)
        for (int i = 0; i < P; i++)
            memcpy(r->prompt_att + (lh * P + i) * P, att + (lh * T + i) * T, (size_t)P * sizeof(float));
}

void gen_record_token(GenRecord *r, int32_t id, const float *row, int64_t context_start) {
    size_t rowsize = (size_t)r->L * r->NH * r->T;
    if (r->N == r->cap_rows) {
        r->cap_rows = r->cap_rows ? 2 * r->cap_rows : 64;
        r->rows = gt_realloc(r->rows, r->cap_rows * rowsize * sizeof(float), "generation attention rows");
        r->ctx_start = gt_realloc(r->ctx_start, r->cap_rows * sizeof(int64_t), "context starts");
    }
    memcpy(r->rows + r->N * rowsize, row, rowsize * sizeof(float));
    r->ctx_start[r->N++] = context_start;
    push_id(r, id);
}

int gen_record_save_e(const GenRecord *r, const char *path, const Tokenizer *tok, const GenMeta *meta, GtErr *e) {
    char tmp[4200];
    hid_t f = h5_create_tmp_e(path, GT_FORMAT_GENERATION, tmp, sizeof tmp, e);
    h5_attr_write_int_e(f, "n_prompt", r->P, e);
    h5_attr_write_str_e(f, "prompt", meta->prompt, e);
    h5_attr_write_double_e(f, "temperature", meta->temperature, e);
    h5_attr_write_int_e(f, "top_k", meta->top_k, e);
    h5_attr_write_double_e(f, "top_p", meta->top_p, e);
    h5_attr_write_int_e(f, "seed", (int64_t)meta->seed, e);
    h5_attr_write_str_e(f, "checkpoint", meta->checkpoint, e);
    h5_attr_write_int_e(f, "step", meta->step, e);
    h5_attr_write_int_e(f, "n_layer", r->L, e);
    h5_attr_write_int_e(f, "n_head", r->NH, e);
    h5_attr_write_int_e(f, "block_size", r->T, e);
    h5_attr_write_int_e(f, "prompt_dropped_tokens", meta->prompt_dropped, e);

    hsize_t n[1] = {r->n_ids};
    h5_write_dataset_e(f, "token_ids", H5T_STD_I32LE, 1, n, r->ids, 0, 0, e);
    char **text = gt_malloc((r->n_ids ? r->n_ids : 1) * sizeof(char *), "token texts");
    for (size_t i = 0; i < r->n_ids; i++) text[i] = token_text_utf8(tok, r->ids[i]);
    h5_write_strings_e(f, "tokens", text, r->n_ids, e);
    for (size_t i = 0; i < r->n_ids; i++) free(text[i]);
    free(text);

    hsize_t pd[4] = {(hsize_t)r->L, (hsize_t)r->NH, (hsize_t)r->P, (hsize_t)r->P};
    h5_write_dataset_e(f, "prompt_attention", H5T_IEEE_F32LE, 4, pd, r->prompt_att, pd[0], 1, e);
    hsize_t ad[4] = {r->N, (hsize_t)r->L, (hsize_t)r->NH, (hsize_t)r->T};
    h5_write_dataset_e(f, "attention", H5T_IEEE_F32LE, 4, ad, r->rows, 1, 1, e);
    hid_t d = -1;
    if (!gt_failed(e) && (d = H5Dopen2(f, "attention", H5P_DEFAULT)) < 0) h5_err_call(e, "H5Dopen2", __FILE__, __LINE__);
    h5_attr_write_str_e(d, "axes", "token,layer,head,key", e);
    h5_close(d, e);
    hsize_t cd[1] = {r->N};
    h5_write_dataset_e(f, "context_start", H5T_STD_I64LE, 1, cd, r->ctx_start, 0, 0, e);
    return h5_commit_e(f, tmp, path, e);
}

void gen_record_save(const GenRecord *r, const char *path, const Tokenizer *tok, const GenMeta *meta) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, gen_record_save_e(r, path, tok, meta, &e));
}

void gen_record_free(GenRecord *r) {
    free(r->ids);
    free(r->prompt_att);
    free(r->rows);
    free(r->ctx_start);
    memset(r, 0, sizeof *r);
}
