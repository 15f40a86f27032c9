// shard.c - see shard.h.
#include "shard.h"

#include <stdio.h>

Shard shard_of(size_t n_tokens, int rank, int size) {
    // 128-bit-safe enough: n_tokens * size fits size_t for any corpus that fits on disk.
    Shard s;
    s.start = n_tokens / (size_t)size * (size_t)rank + (n_tokens % (size_t)size) * (size_t)rank / (size_t)size;
    size_t end = n_tokens / (size_t)size * (size_t)(rank + 1) +
                 (n_tokens % (size_t)size) * (size_t)(rank + 1) / (size_t)size;
    s.count = end - s.start;
    return s;
}

size_t shard_windows(size_t count, int block_size) {
    return count > 0 ? (count - 1) / (size_t)block_size : 0;
}

int shard_check(size_t n_tokens, int size, int batch_size, int block_size, const char *path, char *err,
                size_t errsize) {
    size_t need = (size_t)batch_size * (size_t)block_size + 1;
    int first = -1, last = -1;
    size_t smallest = (size_t)-1;
    for (int r = 0; r < size; r++) {
        Shard s = shard_of(n_tokens, r, size);
        if (shard_windows(s.count, block_size) < (size_t)batch_size) {
            if (first < 0) first = r;
            last = r;
            if (s.count < smallest) smallest = s.count;
        }
    }
    if (first < 0) return 0;
    char ranks[64];
    if (first == last) snprintf(ranks, sizeof ranks, "rank %d gets", first);
    else snprintf(ranks, sizeof ranks, "ranks %d-%d get", first, last);
    size_t max_ranks = n_tokens / need;
    char fix[160];
    if (max_ranks >= 1)
        snprintf(fix, sizeof fix, "use at most %zu rank%s, a smaller --batch-size or a smaller --block-size", max_ranks,
                 max_ranks == 1 ? "" : "s");
    else
        snprintf(fix, sizeof fix, "use a smaller --batch-size or --block-size, or more text");
    snprintf(err, errsize,
             "'%s': /train has %zu tokens; over %d rank%s %s as few as %zu, but one batch of --batch-size %d "
             "windows of --block-size %d needs %zu tokens per rank; %s",
             path, n_tokens, size, size == 1 ? "" : "s", ranks, smallest, batch_size, block_size, need, fix);
    return -1;
}
