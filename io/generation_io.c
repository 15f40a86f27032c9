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

void gen_record_save(const GenRecord *r, const char *path, const Tokenizer *tok, const GenMeta *meta) {
    char tmp[4200];
    hid_t f = h5_create_tmp(path, GT_FORMAT_GENERATION, tmp, sizeof tmp);
    h5_attr_write_int(f, "n_prompt", r->P);
    h5_attr_write_str(f, "prompt", meta->prompt);
    h5_attr_write_double(f, "temperature", meta->temperature);
    h5_attr_write_int(f, "top_k", meta->top_k);
    h5_attr_write_double(f, "top_p", meta->top_p);
    h5_attr_write_int(f, "seed", (int64_t)meta->seed);
    h5_attr_write_str(f, "checkpoint", meta->checkpoint);
    h5_attr_write_int(f, "step", meta->step);
    h5_attr_write_int(f, "n_layer", r->L);
    h5_attr_write_int(f, "n_head", r->NH);
    h5_attr_write_int(f, "block_size", r->T);
    h5_attr_write_int(f, "prompt_dropped_tokens", meta->prompt_dropped);

    hsize_t n[1] = {r->n_ids};
    h5_write_dataset(f, "token_ids", H5T_STD_I32LE, 1, n, r->ids, 0, 0);
    char **text = gt_malloc((r->n_ids ? r->n_ids : 1) * sizeof(char *), "token texts");
    for (size_t i = 0; i < r->n_ids; i++) text[i] = token_text_utf8(tok, r->ids[i]);
    h5_write_strings(f, "tokens", text, r->n_ids);
    for (size_t i = 0; i < r->n_ids; i++) free(text[i]);
    free(text);

    hsize_t pd[4] = {(hsize_t)r->L, (hsize_t)r->NH, (hsize_t)r->P, (hsize_t)r->P};
    h5_write_dataset(f, "prompt_attention", H5T_IEEE_F32LE, 4, pd, r->prompt_att, pd[0], 1);
    hsize_t ad[4] = {r->N, (hsize_t)r->L, (hsize_t)r->NH, (hsize_t)r->T};
    h5_write_dataset(f, "attention", H5T_IEEE_F32LE, 4, ad, r->rows, 1, 1);
    hid_t d = H5Dopen2(f, "attention", H5P_DEFAULT);
    H5_CHECK(d, "");
    h5_attr_write_str(d, "axes", "token,layer,head,key");
    H5Dclose(d);
    hsize_t cd[1] = {r->N};
    h5_write_dataset(f, "context_start", H5T_STD_I64LE, 1, cd, r->ctx_start, 0, 0);
    h5_commit(f, tmp, path);
}

void gen_record_free(GenRecord *r) {
    free(r->ids);
    free(r->prompt_att);
    free(r->rows);
    free(r->ctx_start);
    memset(r, 0, sizeof *r);
}
