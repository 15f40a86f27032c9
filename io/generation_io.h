// generation_io.h - the generation file of `gpt-sample --attn-out` (docs/formats.md,
// generation file): prompt and generated ids and texts, the prompt's attention (L, H, P, P)
// and, for each generated token, the attention row (L, H, T) of the query that produced it over its
// context window, zero-padded to block size T, with the window's start in /context_start.
// Kept in memory while generating, written atomically (temp name + rename) at the end.
#ifndef GT_GENERATION_IO_H
#define GT_GENERATION_IO_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gpt2.h"
#include "tokenizer.h"

#define GT_FORMAT_GENERATION "gpt-train/generation"

typedef struct {
    const char *prompt;       // the --prompt text as given
    float temperature;
    int top_k;
    float top_p;
    uint64_t seed;
    const char *checkpoint;   // path of the checkpoint file used
    long long step;           // its training step
    long long prompt_dropped; // prompt tokens before the context window (prompt > block size)
} GenMeta;

typedef struct {
    int L, NH, T;
    int32_t *ids;          // (P + N)
    size_t n_ids, cap_ids;
    int P;                 // prompt tokens kept (those in the first context window)
    float *prompt_att;     // (L, NH, P, P)
    float *rows;           // (N, L, NH, T)
    int64_t *ctx_start;    // (N)
    size_t N, cap_rows;
} GenRecord;

void gen_record_init(GenRecord *r, const GPTConfig *c);
// prompt ids (P <= T) and their attention rows att (L, NH, T, T) as KVCache.att holds them.
void gen_record_prompt(GenRecord *r, const int32_t *ids, int P, const float *att);
// One generated token, the attention row (L, NH, T) of the query that produced it and the
// index in the ids of that query's window start.
void gen_record_token(GenRecord *r, int32_t id, const float *row, int64_t context_start);
// Writes the file atomically; the output path was checked up front by the caller. A failure
// (a full disk) leaves no file: _e records it in *e, the plain form exits.
int gen_record_save_e(const GenRecord *r, const char *path, const Tokenizer *tok, const GenMeta *meta, GtErr *e);
void gen_record_save(const GenRecord *r, const char *path, const Tokenizer *tok, const GenMeta *meta);
void gen_record_free(GenRecord *r);

#endif
