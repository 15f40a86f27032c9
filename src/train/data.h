// data.h - gpt-train's tokens (docs/training.md, "Data"): a tokens.h5, or a text file that
// rank 0 tokenizes into RUN/vocab.h5 and RUN/tokens.h5 first; then the data loader over
// /train (one global order, dataloader.h), each rank's eval windows of /val, and the
// attention probe's ids.
#ifndef GT_DATA_H
#define GT_DATA_H

#include <stdint.h>

#include "run.h"

// Decides tokens.h5 vs text (tokenizing text on rank 0) and leaves the path in r->tokens_path.
void data_prepare(Run *r);
// Every rank checks and opens the tokens file (one that cannot see it names itself).
void data_open_tokens(Run *r);
// The data loader over /train, this rank's eval windows of /val, and the batch buffers.
void data_load(Run *r);
// When the /tokenizer of a tokens file (tok) is not the checkpoint's (ck), bad input in *e
// naming the first difference and the gpt-bpe encode command that makes the right tokens file
// from its source (TokensInfo.source); what names the checkpoint's flag. 0 when they match.
int data_tokenizer_mismatch(const char *ckpt, const char *what, const Tokenizer *ck, const Tokenizer *tok,
                            const char *data_text, const char *tokens_path, const char *source, GtErr *e);
// Rank 0: the probe for attention.h5: --attn-prompt encoded, else the first block_size
// tokens of /val. NULL with the message in r->err when there is none.
int32_t *data_probe_ids(Run *r, int *T_out);

#endif
