// generation_io.h - the generation file of `gpt-sample --attn-out` (docs/formats.md): prompt
// and generated ids and texts, the prompt's attention (L, H, P, P) and, for each generated
// token, the attention row (L, H, T) of the query that produced it over its context window,
// zero-padded to block size T, with the window's start in /context_start; with
// record_top K > 0 also the K likeliest next tokens at each step, their probabilities and
// texts (/top_ids, /top_probs, /top_tokens, each (N, K)).
//
// Written as generation goes, into "<path>.tmp-<pid>" (memory stays one row), and renamed
// into place when generation ends: after --max-new-tokens, or earlier on a stop signal or a
// closed stdout, with what was generated so far (root attrs n_generated and stopped_by say
// which). So the file appears only complete and valid; a failure removes the temp file.
// Error handling as in h5util.h.
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
    int record_top;           // K candidates per generated token (0: none)
} GenMeta;

typedef struct GenWriter GenWriter;

// Creates the temp file with the metadata and the prompt: ids (P <= T) and their attention
// rows att (L, NH, T, T) as KVCache.att holds them. NULL with *e set on failure.
GenWriter *gen_writer_open_e(const char *path, const GPTConfig *c, const Tokenizer *tok, const GenMeta *meta,
                             const int32_t *ids, int P, const float *att, GtErr *e);
// One generated token, the attention row (L, NH, T) of the query that produced it, the
// index in the ids of that query's window start, and the meta's record_top K likeliest
// tokens and their probabilities at that step (top_tokens in sampler.h; unused when K is 0).
int gen_writer_token_e(GenWriter *w, int32_t id, const float *row, int64_t context_start, const int32_t *top_ids,
                       const float *top_probs, GtErr *e);
// Records how generation ended (stopped_by: "" when it ran its course, else e.g. "SIGINT"
// or "closed stdout"), closes the file and renames it into place. Frees w. When *e already
// holds a failure (or closing fails), removes the temp file instead.
int gen_writer_close_e(GenWriter *w, const char *stopped_by, GtErr *e);

#endif
