// token_loss_io.h - gpt-eval --per-token OUT.h5 (docs/formats.md, per-token loss file): each
// scored token's id and cross-entropy, a copy of the /tokenizer, and the summary as attributes.
#ifndef GT_TOKEN_LOSS_IO_H
#define GT_TOKEN_LOSS_IO_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tokenizer.h"

#define GT_FORMAT_TOKEN_LOSS "gpt-train/token-loss"

typedef struct {
    const char *checkpoint;  // the checkpoint file
    int64_t step;            // its step
    const char *data;        // --data as given
    const char *split;       // "train" or "val" of a tokens.h5; "text" for text
    int64_t block_size;
    double loss, bpb;        // as gpt-eval prints them
    int64_t tokens, bytes;
    int64_t context_id;      // the split's first token: context only, never scored
} TokenLossInfo;

// Writes the file atomically: /token_ids int32 (n,), /token_loss float32 (n,), /tokenizer, and
// the attributes of `info`. Bad input for an existing path without force.
int token_loss_write_e(const char *path, const TokenLossInfo *info, const Tokenizer *tok, const int32_t *ids,
                       const float *loss, size_t n, int force, GtErr *e);

#endif
