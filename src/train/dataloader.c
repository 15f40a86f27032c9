// dataloader.c - see dataloader.h.
#include "dataloader.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "rng.h"
#include "tokens_io.h"

// ---- the token cache ----

int token_cache_open(TokenCache *c, hid_t file, const char *split, size_t max_bytes, int vocab_size,
                     const char *path) {
    memset(c, 0, sizeof *c);
    c->vocab_size = vocab_size;
    c->path = path;
    c->split = split;
    c->dset = -1;
    // HDF5's own chunk cache off: blocks are cached here, once.
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0 && H5Pset_chunk_cache(dapl, 0, 0, 1.0) >= 0) c->dset = H5Dopen2(file, split, dapl);
    if (dapl >= 0) H5Pclose(dapl);
    hid_t sp = c->dset >= 0 ? H5Dget_space(c->dset) : -1;
    hsize_t dims[1] = {0};
    int ok = sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1 && H5Sget_simple_extent_dims(sp, dims, NULL) == 1;
    if (sp >= 0) H5Sclose(sp);
    if (!ok) return gt_err(&c->err, GT_EXIT_USAGE, "--data '%.900s': /%s cannot be opened (damaged file?)", path, split);
    c->n = (size_t)dims[0];
    // One block is one chunk of the dataset, so a miss decodes and checks exactly one chunk.
    c->block = (size_t)1 << 16;
    hid_t dcpl = H5Dget_create_plist(c->dset);
    hsize_t chunk[1];
    if (dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 1, chunk) == 1 && chunk[0] > 0)
        c->block = (size_t)chunk[0];
    if (dcpl >= 0) H5Pclose(dcpl);
    // Kept in the file's width: tokens.h5 stores 16-bit ids when the vocabulary fits, so
    // the cache holds twice as many and HDF5 converts nothing.
    hid_t t = H5Dget_type(c->dset);
    c->width = t >= 0 && H5Tget_size(t) <= 2 ? 2 : 4;
    if (t >= 0) H5Tclose(t);
    size_t blocks = c->n / c->block + 1;
    c->nslots = max_bytes / (c->block * c->width);
    if (c->nslots < 2) c->nslots = 2;
    if (c->nslots > blocks) c->nslots = blocks;
    c->slot_block = gt_malloc(c->nslots * sizeof(int64_t), "token cache");
    c->slot = gt_calloc(c->nslots, sizeof(void *), "token cache");
    for (size_t i = 0; i < c->nslots; i++) c->slot_block[i] = -1;
    return 0;
}

void token_cache_memory(TokenCache *c, const void *ids, int width, size_t n, int vocab_size, const char *path,
                        const char *split) {
    memset(c, 0, sizeof *c);
    c->dset = -1;
    c->n = c->block = n;  // one block, always present
    c->nslots = 1;
    c->width = (size_t)width;
    c->vocab_size = vocab_size;
    c->path = path;
    c->split = split;
    c->slot_block = gt_malloc(sizeof(int64_t), "token cache");
    c->slot = gt_malloc(sizeof(void *), "token cache");
    c->slot_block[0] = 0;
    c->slot[0] = (void *)ids;
    c->borrowed = 1;
}

// The slot holding block b, read from the file (and its ids checked) on a miss; NULL after a
// failure, kept in c->err.
static const void *cache_block(TokenCache *c, size_t b) {
    size_t s = b % c->nslots;
    if (c->slot_block[s] == (int64_t)b) return c->slot[s];
    if (!c->slot[s]) c->slot[s] = gt_malloc(c->block * c->width, "token cache block");
    c->slot_block[s] = -1;
    size_t start = b * c->block, count = c->n - start < c->block ? c->n - start : c->block;
    c->loads++;
    if (tokens_read_dataset_e(c->dset, c->split, start, count, (int)c->width, c->slot[s], c->vocab_size, "--data",
                              c->path, &c->err))
        return NULL;
    c->slot_block[s] = (int64_t)b;
    return c->slot[s];
}

int token_cache_read(TokenCache *c, size_t start, size_t count, uint32_t *out) {
    if (start > c->n || count > c->n - start) {
        memset(out, 0, count * sizeof *out);
        return gt_err(&c->err, GT_EXIT_USAGE, "--data '%.700s': /%s[%zu:%zu] is beyond its %zu tokens", c->path, c->split,
                      start, start + count, c->n);
    }
    size_t done = 0;
    while (done < count) {
        size_t p = start + done, b = p / c->block, in = p - b * c->block;
        size_t take = c->block - in < count - done ? c->block - in : count - done;
        const void *t = cache_block(c, b);
        if (!t) {
            memset(out, 0, count * sizeof *out);
            return -1;
        }
        if (c->width == 2)
            for (size_t i = 0; i < take; i++) out[done + i] = ((const uint16_t *)t)[in + i];
        else
            memcpy(out + done, (const uint32_t *)t + in, take * sizeof *out);
        done += take;
    }
    return 0;
}

int token_cache_check(TokenCache *c, size_t start, size_t count) {
    if (count == 0) return 0;
    for (size_t b = start / c->block; b <= (start + count - 1) / c->block; b++)
        if (!cache_block(c, b)) return -1;
    return 0;
}

void token_cache_close(TokenCache *c) {
    for (size_t i = 0; c->slot && !c->borrowed && i < c->nslots; i++) free(c->slot[i]);
    free(c->slot);
    free(c->slot_block);
    if (c->dset >= 0) H5Dclose(c->dset);
    memset(c, 0, sizeof *c);
    c->dset = -1;
}

// ---- the global order ----

#define PERM_ROUNDS 6

static uint64_t epoch_key(uint64_t seed, int64_t epoch) {
    return rng_site_key(seed ^ 0xDA7A0DE5DA7A0DE5ULL, (uint64_t)epoch);
}

// One pass of a balanced Feistel network over 2*half bits: a bijection of [0, 4^half).
static uint64_t feistel(uint64_t key, int half, uint64_t x) {
    uint64_t mask = (1ULL << half) - 1, l = x >> half, r = x & mask;
    for (uint64_t i = 0; i < PERM_ROUNDS; i++) {
        uint64_t t = l ^ (rng_at(key + i, r) & mask);
        l = r;
        r = t;
    }
    return (l << half) | r;
}

// Cycle walking: applying the bijection until the value falls inside [0, W) is a bijection
// of [0, W); with 4^half < 4W it takes fewer than 4 passes on average.
static size_t permute(uint64_t key, int half, size_t W, size_t p) {
    uint64_t x = p;
    do x = feistel(key, half, x);
    while (x >= W);
    return (size_t)x;
}

static int half_bits(size_t W) {
    int h = 1;
    while (h < 32 && (W - 1) >> (2 * h)) h++;
    return h;
}

size_t dataloader_window(const DataLoader *d, int64_t epoch, size_t pos) {
    return permute(epoch_key(d->seed, epoch), d->half, d->n_windows, pos);
}

int dataloader_check(size_t n_train, int T, int B, int size, const char *path, char *err, size_t n) {
    size_t W = n_train > 0 ? (n_train - 1) / (size_t)T : 0, need = (size_t)B * (size_t)size;
    if (W >= need) return 0;
    size_t max_ranks = W / (size_t)B;
    char fix[200];
    if (max_ranks >= 1)
        snprintf(fix, sizeof fix, "use at most %zu rank%s, a smaller --batch-size or --block-size, or more text", max_ranks,
                 max_ranks == 1 ? "" : "s");
    else
        snprintf(fix, sizeof fix, "use a smaller --batch-size or --block-size, or more text");
    snprintf(err, n,
             "'%.4000s': /train has %zu tokens, %zu training window%s of --block-size %d + 1; one micro-batch over %d "
             "rank%s of --batch-size %d takes %zu window%s, so /train needs %zu tokens; %s",
             path, n_train, W, W == 1 ? "" : "s", T, size, size == 1 ? "" : "s", B, need, need == 1 ? "" : "s",
             need * (size_t)T + 1, fix);
    return -1;
}

int dataloader_init(DataLoader *d, hid_t file, const char *path, int vocab_size, int T, int B, int rank, int size,
                    uint64_t seed, size_t cache_bytes) {
    memset(d, 0, sizeof *d);
    d->T = T, d->B = B, d->rank = rank, d->size = size, d->seed = seed;
    if (token_cache_open(&d->train, file, "train", cache_bytes, vocab_size, path) != 0) return -1;
    d->n_windows = d->train.n > 0 ? (d->train.n - 1) / (size_t)T : 0;
    d->half = half_bits(d->n_windows ? d->n_windows : 1);
    d->win = gt_malloc(((size_t)T + 1) * sizeof(uint32_t), "data window");
    dataloader_seek(d, 0, 0);
    return 0;
}

void dataloader_seek(DataLoader *d, int64_t epoch, int64_t pos) {
    if (pos < 0) pos = 0;
    if ((size_t)pos >= d->n_windows) {  // a cursor saved right at the end of an epoch
        epoch++;
        pos = 0;
    }
    d->epoch = epoch;
    d->pos = pos;
    d->key = epoch_key(d->seed, epoch);
}

int dataloader_next(DataLoader *d, int *inputs, int *targets) {
    const int T = d->T, B = d->B;
    const size_t W = d->n_windows;
    int rc = 0;
    for (int b = 0; b < B; b++) {
        // Position of this rank's b-th window in the global micro-batch; past the end of the
        // epoch it is the start of the next one (dataloader_check: B x size <= W).
        size_t q = (size_t)d->pos + (size_t)d->rank * (size_t)B + (size_t)b;
        int64_t e = d->epoch;
        uint64_t key = d->key;
        if (q >= W) {
            q -= W;
            e++;
            key = epoch_key(d->seed, e);
        }
        size_t w = permute(key, d->half, W, q);
        if (token_cache_read(&d->train, w * (size_t)T, (size_t)T + 1, d->win) != 0) rc = -1;
        for (int t = 0; t < T; t++) {
            inputs[b * T + t] = (int)d->win[t];
            targets[b * T + t] = (int)d->win[t + 1];
        }
        if (d->trace) fprintf(d->trace, "%lld %zu %zu\n", (long long)e, q, w);
    }
    size_t next = (size_t)d->pos + (size_t)B * (size_t)d->size;
    if (next >= W) dataloader_seek(d, d->epoch + 1, (int64_t)(next - W));
    else d->pos = (int64_t)next;
    return rc;
}

void dataloader_free(DataLoader *d) {
    token_cache_close(&d->train);
    free(d->win);
    if (d->trace) fclose(d->trace);
    d->win = NULL;
    d->trace = NULL;
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
