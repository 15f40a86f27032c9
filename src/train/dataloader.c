// dataloader.c - see dataloader.h.
#include "dataloader.h"

#include <stdlib.h>

#include "error.h"
#include "rng.h"

static void shuffle(DataLoader *d) {
    for (size_t i = 0; i < d->n_windows; i++) d->order[i] = (uint32_t)i;
    Rng r;
    rng_seed(&r, rng_site_key(d->seed, ((uint64_t)d->rank << 40) ^ (uint64_t)d->epoch ^ 0xDA7A000000000000ULL));
    for (size_t i = d->n_windows; i > 1; i--) {  // Fisher-Yates
        size_t j = (size_t)rng_below(&r, i);
        uint32_t t = d->order[i - 1];
        d->order[i - 1] = d->order[j];
        d->order[j] = t;
    }
}

void dataloader_init(DataLoader *d, const uint32_t *tokens, size_t n_tokens, int T, uint64_t seed, int rank) {
    d->tokens = tokens;
    d->n_tokens = n_tokens;
    d->T = T;
    d->n_windows = n_tokens > 0 ? (n_tokens - 1) / (size_t)T : 0;
    if (d->n_windows == 0) gt_fail(GT_EXIT_RUNTIME, "data loader: shard of %zu tokens has no window of %d", n_tokens, T + 1);
    if (d->n_windows > UINT32_MAX) gt_fail(GT_EXIT_USAGE, "shard of %zu windows is too large for one rank; use more ranks", d->n_windows);
    d->seed = seed;
    d->rank = rank;
    d->order = gt_malloc(d->n_windows * sizeof(uint32_t), "data loader order");
    dataloader_seek(d, 0, 0);
}

void dataloader_seek(DataLoader *d, int64_t epoch, int64_t pos) {
    if (pos < 0) pos = 0;
    if ((size_t)pos >= d->n_windows) {  // a cursor saved right at the end of an epoch
        epoch++;
        pos = 0;
    }
    d->epoch = epoch;
    d->pos = pos;
    shuffle(d);
}

void dataloader_next(DataLoader *d, int *inputs, int *targets, int B) {
    int T = d->T;
    for (int b = 0; b < B; b++) {
        if ((size_t)d->pos >= d->n_windows) dataloader_seek(d, d->epoch + 1, 0);
        const uint32_t *w = d->tokens + (size_t)d->order[d->pos++] * (size_t)T;
        for (int t = 0; t < T; t++) {
            inputs[b * T + t] = (int)w[t];
            targets[b * T + t] = (int)w[t + 1];
        }
    }
}

void dataloader_free(DataLoader *d) {
    free(d->order);
    d->order = NULL;
}

void eval_windows(size_t n_val, int T, size_t limit, int rank, int size, size_t *first, size_t *count,
                  size_t *total) {
    size_t n = n_val > 0 ? (n_val - 1) / (size_t)T : 0;
    if (limit > 0 && limit < n) n = limit;
    size_t a = n * (size_t)rank / (size_t)size, b = n * (size_t)(rank + 1) / (size_t)size;
    *first = a;
    *count = b - a;
    *total = n;
}
