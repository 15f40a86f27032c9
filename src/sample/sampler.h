// sampler.h - inference with a key/value cache on a GPT2's parameters, and token sampling.
//
// The cache holds each layer's keys and values of the positions fed so far, so feeding one
// more token costs O(context) (one row through every matmul, one attention row) instead of
// a full forward pass. It reuses the layers.h forward kernels; only attention is its own
// (queries against cached keys). A bf16 model (gpt2_set_precision) is run as gpt2_forward
// runs it: bf16 matmul operands, fp32 accumulation and everything else. Positions are the window's: when the context passes
// block_size the window slides by one token, every position changes, and the cache of the
// last block_size tokens is recomputed (a full forward of block_size tokens per new token,
// as nanoGPT's generate() does on every token).
#ifndef GT_SAMPLER_H
#define GT_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "gpt2.h"
#include "rng.h"  // Rng: the engine's seeded sequential generator (same seed, same text)

typedef struct {
    const GPT2 *m;          // parameters only; m's activations are not touched
    int L, NH, C, T, V;     // T = block_size, the cache's capacity
    int n;                  // positions cached
    float *k, *v;           // (L, T, C) keys and values of the cached positions
    // scratch for up to T tokens fed at once
    float *x, *x2;          // (T, C) residual stream
    float *ln;              // (T, C)
    float *qkv;             // (T, 3C)
    float *y;               // (T, C) attention output before the projection
    float *proj;            // (T, C)
    float *fc, *fcg;        // (T, 4C) (T, 4C)
    float *scores;          // (threads, T)
    int n_threads;
    int bf16;               // the model's precision is bf16: its matmuls as gpt2.c does them
    uint16_t *in16;         // bf16: (T, 4C) a matmul's input, rounded
    float *logits;          // (V) next-token logits after the last position fed
    float *att;             // (L, NH, T, T) rows of the last feed's queries (query i = i-th token
                            //   fed) over key positions 0..T-1, zero past the query; NULL unless keep_att
    int last_fed;           // tokens in the last feed (rows of att that are valid)
} KVCache;

// keep_att=1 allocates att (L*NH*T*T floats) so callers can read attention rows.
void kv_init(KVCache *kv, const GPT2 *m, int keep_att);
void kv_reset(KVCache *kv);
// Feeds tokens at positions n .. n+N-1 (n + N <= T). Afterwards logits are the last token's.
void kv_forward(KVCache *kv, const int *tokens, int N);
// Copies the attention row of query i of the last feed: out (L, NH, T), zero-padded.
void kv_att_row(const KVCache *kv, int i, float *out);
void kv_free(KVCache *kv);

// A sequence generated through a sliding window.
typedef struct {
    KVCache kv;
    int *ids;              // (n) prompt then generated tokens
    size_t n, cap;
    size_t start;          // index in ids of the window's first token (the cache's position 0)
    long long slides;      // how many times the window slid (each one a full recompute)
} Generator;

// Starts from the prompt's last min(P, block_size) tokens; logits then predict token P.
void generator_start(Generator *g, const GPT2 *m, const int *prompt, size_t P, int keep_att);
// Appends id and computes the logits for the token after it (sliding the window if full).
void generator_push(Generator *g, int id);
// Index in g->ids of the query that produced the current logits (the last token).
static inline size_t generator_query(const Generator *g) { return g->n - 1; }
void generator_free(Generator *g);

typedef struct {
    float temperature;  // 0 = greedy (argmax, lowest id on ties)
    int top_k;          // 0 = off
    float top_p;        // 1 = off; keeps the smallest set of likeliest tokens with mass >= top_p
} SampleParams;

// Picks the next token from logits (V). probs (V) and order (V) are scratch.
int sample_token(const float *logits, int V, const SampleParams *p, Rng *rng, float *probs, int *order);

// The K likeliest next tokens (K <= V) under the model's own distribution, the softmax of
// logits (V) before temperature, top-k and top-p: ids (K) most likely first (ties to the
// lower id) and their probabilities (K). What gpt-sample --record-top records.
void top_tokens(const float *logits, int V, int K, int32_t *ids, float *probs);

#endif
