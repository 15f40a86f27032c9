// dataloader.h - a rank's training batches from its shard, and the eval windows of /val.
//
// Training: the shard's windows of block_size+1 tokens start at multiples of block_size;
// each epoch visits all of them in an order shuffled by (seed, rank, epoch), then the next
// epoch reshuffles. The cursor (epoch, position) is all the state there is, so a resumed
// run continues with exactly the batch it would have drawn next.
#ifndef GT_DATALOADER_H
#define GT_DATALOADER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const uint32_t *tokens;  // the shard (not owned)
    size_t n_tokens;
    size_t n_windows;
    int T;
    uint64_t seed;
    int rank;
    int64_t epoch;           // cursor: epoch and next position in its order
    int64_t pos;
    uint32_t *order;         // (n_windows) window indices of the current epoch
} DataLoader;

void dataloader_init(DataLoader *d, const uint32_t *tokens, size_t n_tokens, int T, uint64_t seed, int rank);
// Fills inputs and targets (B, T) with the next B windows; wraps into the next epoch.
void dataloader_next(DataLoader *d, int *inputs, int *targets, int B);
// Moves the cursor (reshuffles for that epoch); pos >= n_windows means the next epoch.
void dataloader_seek(DataLoader *d, int64_t epoch, int64_t pos);
void dataloader_free(DataLoader *d);

// Eval windows of /val: window i is tokens [i*T, i*T+T+1); n = (n_val-1)/T of them, or
// the first `limit` when limit > 0. Rank r evaluates windows [first, first+count).
void eval_windows(size_t n_val, int T, size_t limit, int rank, int size, size_t *first, size_t *count,
                  size_t *total);

#endif
