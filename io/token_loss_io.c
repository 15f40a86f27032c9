// token_loss_io.c - see token_loss_io.h.
#include "token_loss_io.h"

#include "h5util.h"
#include "vocab_io.h"

int token_loss_write_e(const char *path, const TokenLossInfo *info, const Tokenizer *tok, const int32_t *ids,
                       const float *loss, size_t n, int force, GtErr *e) {
    char tmp[4200];
    h5_check_output_path_e(path, "--per-token", force, e);
    hid_t f = h5_create_tmp_e(path, GT_FORMAT_TOKEN_LOSS, tmp, sizeof tmp, e);
    h5_attr_write_str_e(f, "checkpoint", info->checkpoint, e);
    h5_attr_write_int_e(f, "step", info->step, e);
    h5_attr_write_str_e(f, "data", info->data, e);
    h5_attr_write_str_e(f, "split", info->split, e);
    h5_attr_write_int_e(f, "block_size", info->block_size, e);
    h5_attr_write_double_e(f, "loss", info->loss, e);
    h5_attr_write_double_e(f, "bpb", info->bpb, e);
    h5_attr_write_int_e(f, "tokens", info->tokens, e);
    h5_attr_write_int_e(f, "bytes", info->bytes, e);
    h5_attr_write_int_e(f, "context_id", info->context_id, e);
    hsize_t dims[1] = {n};
    h5_write_dataset_e(f, "token_ids", H5T_NATIVE_INT32, 1, dims, ids, n ? 65536 : 0, 0, e);
    h5_write_dataset_e(f, "token_loss", H5T_NATIVE_FLOAT, 1, dims, loss, n ? 65536 : 0, 0, e);
    vocab_write_group_e(f, tok, e);
    return h5_commit_e(f, tmp, path, e);
}
