// tokens_io.h - tokens.h5: /tokenizer copy, /train and /val token streams.
// Error handling as in h5util.h: the _e forms record a failure in *e and return -1, the
// plain forms exit with it.
#ifndef GT_TOKENS_IO_H
#define GT_TOKENS_IO_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tokenizer.h"

#define GT_FORMAT_TOKENS "gpt-train/tokens"

typedef struct {
    char *source;            // attrs of /train
    int64_t source_bytes;
    char source_sha256[65];
    size_t n_train, n_val;   // lengths of /train and /val
    int vocab_size;
} TokensInfo;

// Writes tokens.h5 atomically: the last val_fraction of ids is /val.
int tokens_save_e(const char *path, const Tokenizer *tok, const uint32_t *ids, size_t n, double val_fraction,
                  const char *source, int64_t source_bytes, const char *source_sha256, int force, GtErr *e);
void tokens_save(const char *path, const Tokenizer *tok, const uint32_t *ids, size_t n, double val_fraction,
                 const char *source, int64_t source_bytes, const char *source_sha256, int force);
// Same from 16-bit ids (vocab_size <= 65536): half the memory while a large text is encoded.
int tokens_save_u16_e(const char *path, const Tokenizer *tok, const uint16_t *ids, size_t n, double val_fraction,
                      const char *source, int64_t source_bytes, const char *source_sha256, int force, GtErr *e);
void tokens_save_u16(const char *path, const Tokenizer *tok, const uint16_t *ids, size_t n, double val_fraction,
                     const char *source, int64_t source_bytes, const char *source_sha256, int force);
// Opens and validates tokens.h5 (format, /tokenizer, datasets; ids are checked as read).
// tok_or_null receives the tokenizer. Returns the open file, or -1 with *e set.
hid_t tokens_open_e(const char *path, TokensInfo *info, Tokenizer *tok_or_null, const char *flag_for_msg, GtErr *e);
hid_t tokens_open(const char *path, TokensInfo *info, Tokenizer *tok_or_null, const char *flag_for_msg);
// Reads ids [start, start+count) of "train" or "val" (HDF5 hyperslab) into out (uint32),
// checking each against vocab_size: bad input naming `flag`, `path` and the first bad id
// otherwise. The ranks of a training read their own slices and agree on the result.
int tokens_read_e(hid_t file, const char *split, size_t start, size_t count, uint32_t *out, int vocab_size,
                  const char *flag, const char *path, GtErr *e);
// The same from an open /train or /val dataset (split names it), into out as uint16 (width 2)
// or uint32 (width 4): for readers that keep the file's 16-bit ids.
int tokens_read_dataset_e(hid_t dset, const char *split, size_t start, size_t count, int width, void *out,
                          int vocab_size, const char *flag, const char *path, GtErr *e);
// Same, reading vocab_size from the file's /tokenizer, and exiting on failure.
void tokens_read(hid_t file, const char *split, size_t start, size_t count, uint32_t *out, const char *path);
void tokens_info_free(TokensInfo *info);

#endif
