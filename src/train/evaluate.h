// evaluate.h - the mean cross-entropy of a model over the windows of a token split
// (docs/training.md, evaluation), one code for gpt-train's eval steps and gpt-eval: windows of
// T + 1 tokens starting at multiples of T (inputs T tokens, targets the next T), dropout off,
// each rank its own windows, summed over all ranks. And bits per byte: the scored tokens'
// bytes, so models of different vocabularies compare.
#ifndef GT_EVALUATE_H
#define GT_EVALUATE_H

#include <stddef.h>

#include "dataloader.h"
#include "gpt2.h"
#include "tokenizer.h"

typedef struct {
    double loss;    // mean cross-entropy per scored token, in nats
    double tokens;  // scored tokens, over all ranks
    double bytes;   // their bytes: the text they decode to, special tokens counting none
} EvalResult;

// Windows [first, first + count) of split, in batches of B (the model's activations must
// hold (B, T)). inputs and targets: (B, T) scratch. token_len (V): each token's bytes
// (eval_token_bytes), or NULL (bytes 0). per_token, when not NULL, receives the loss of each
// scored token of these windows, (count, T) in order. Collective: every rank calls it.
EvalResult eval_split(GPT2 *m, TokenCache *split, size_t first, size_t count, int B, int T, const int *token_len,
                      int *inputs, int *targets, float *per_token);
// Bits per byte: loss * tokens / (ln 2 * bytes); NAN without bytes.
double eval_bpb(const EvalResult *r);
// Each token's length in bytes (V, malloc'd); special tokens 0: they stand for a boundary,
// not for text.
int *eval_token_bytes(const Tokenizer *tok);

#endif
