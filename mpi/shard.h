// shard.h - which contiguous slice of /train each rank reads (and keeps in memory), so
// memory per rank shrinks as ranks grow. Rank r of N gets [r*n/N, (r+1)*n/N).
#ifndef GT_SHARD_H
#define GT_SHARD_H

#include <stddef.h>

typedef struct {
    size_t start, count;  // token range of /train
} Shard;

Shard shard_of(size_t n_tokens, int rank, int size);
// Training windows (block_size+1 tokens, starting at multiples of block_size) in a shard.
size_t shard_windows(size_t count, int block_size);
// 0 when every rank's shard holds at least one micro-batch (batch_size windows); otherwise
// -1 and one sentence in err naming the ranks, token counts and what to change.
int shard_check(size_t n_tokens, int size, int batch_size, int block_size, const char *path, char *err,
                size_t errsize);

#endif
