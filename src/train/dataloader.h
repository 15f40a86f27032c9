// dataloader.h - training batches in one global order, whatever the rank count, and the
// eval windows of /val; both read from tokens.h5 on demand (docs/training.md, "Data order").
//
// Training windows: the W = (n_train - 1) / T windows of T + 1 tokens of /train that start
// at multiples of T. Epoch e visits all W in the order of a pseudo-random permutation keyed
// by (seed, e): a Feistel network walked inside [0, W), so the order costs no memory. One
// global cursor (epoch, position) is the whole state. Every micro-batch takes the next
// B x size positions of that order and rank r the B from r x B, so a run resumed at any rank
// count continues with exactly the windows the stopped one would have taken next, and each
// epoch covers every window once.
//
// Tokens come from the file through a bounded, direct-mapped cache of the dataset's chunks
// (one read decodes and verifies one chunk), so memory does not grow with the corpus.
#ifndef GT_DATALOADER_H
#define GT_DATALOADER_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

// A split of tokens.h5 ("train" or "val") read through a cache of whole chunks.
typedef struct {
    hid_t dset;
    size_t n;                 // tokens in the split
    size_t block;             // tokens per cached block: the dataset's chunk
    size_t nslots;            // blocks held; block b lives in slot b % nslots
    int64_t *slot_block;      // (nslots) the block in each slot, -1 when empty
    void **slot;              // (nslots) its tokens, allocated on first use
    size_t width;             // bytes per cached token: 2 when the file holds 16-bit ids, else 4
    int vocab_size;
    const char *path, *split; // for messages (not owned)
    GtErr err;                // the first failure (status 1: a damaged chunk, an id outside the vocabulary)
    size_t loads;             // blocks read from the file so far
    int borrowed;             // the one slot is the caller's memory (token_cache_memory)
} TokenCache;

// Opens /split of the open tokens file for cached reading, holding at most max_bytes of
// tokens (at least two blocks). -1 with c->err filled when the dataset is unusable.
int token_cache_open(TokenCache *c, hid_t file, const char *split, size_t max_bytes, int vocab_size,
                     const char *path);
// The same reads from ids already in memory (width 2: uint16, 4: uint32; n > 0), for text
// encoded on the fly (gpt-eval) by the tokenizer of the model: the ids are borrowed (never
// freed here) and trusted.
void token_cache_memory(TokenCache *c, const void *ids, int width, size_t n, int vocab_size, const char *path,
                        const char *split);
// Copies tokens [start, start + count) into out, checking every id against the vocabulary.
// On a failure (a chunk that cannot be read, an id outside the vocabulary) fills out with
// zeros, keeps the first failure in c->err and returns -1: the caller goes on, and the ranks
// agree on the failure at the next agreement point instead of one rank leaving alone.
int token_cache_read(TokenCache *c, size_t start, size_t count, uint32_t *out);
// Reads the blocks holding tokens [start, start + count) and checks their ids, copying
// nothing: a rank's share of the start-up check.
int token_cache_check(TokenCache *c, size_t start, size_t count);
void token_cache_close(TokenCache *c);

typedef struct {
    TokenCache train;
    int T, B, rank, size;
    uint64_t seed;
    size_t n_windows;         // W
    int64_t epoch, pos;       // the global cursor: the next position of epoch's order
    uint64_t key;             // the epoch's permutation key
    int half;                 // its Feistel halves' width in bits
    uint32_t *win;            // (T + 1) one window being read
    FILE *trace;              // test hook: "epoch position window" per window this rank takes
} DataLoader;

// Opens /train through a cache of at most cache_bytes; the cursor at (0, 0). -1 with the
// message in d->train.err when /train is unusable.
int dataloader_init(DataLoader *d, hid_t file, const char *path, int vocab_size, int T, int B, int rank, int size,
                    uint64_t seed, size_t cache_bytes);
// 0 when one micro-batch over all ranks (B x size windows) fits in an epoch's W windows;
// else -1 and one sentence naming the file, the counts and what to change.
int dataloader_check(size_t n_train, int T, int B, int size, const char *path, char *err, size_t n);
// This rank's next B windows as inputs and targets (B, T); advances the cursor by B x size,
// into the next epoch when the order runs out. -1 after a read failure (d->train.err).
int dataloader_next(DataLoader *d, int *inputs, int *targets);
// Moves the cursor; pos >= W means the start of the next epoch.
void dataloader_seek(DataLoader *d, int64_t epoch, int64_t pos);
// The window at position pos of epoch's order.
size_t dataloader_window(const DataLoader *d, int64_t epoch, size_t pos);
void dataloader_free(DataLoader *d);

// Eval windows of /val: window i is tokens [i*T, i*T+T+1); n = (n_val-1)/T of them, or
// the first `limit` when limit > 0. Rank r evaluates windows [first, first+count).
void eval_windows(size_t n_val, int T, size_t limit, int rank, int size, size_t *first, size_t *count,
                  size_t *total);

#endif
