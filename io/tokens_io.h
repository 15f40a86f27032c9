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

// One source of the text (docs/formats.md, tokens.h5: /sources): a file, or "-" for stdin.
typedef struct {
    char *path;              // as found: an input as given, or a file below a directory input
    int64_t bytes;           // its size as read
    char sha256[65];         // of its bytes as read (64 lower-case hex digits)
    int64_t train_tokens, val_tokens;  // its tokens in /train and /val (separators not counted)
} TokensSource;

// Where the ids came from: the aggregate attributes of /train and /val, and /sources.
typedef struct {
    const char *source;         // the inputs as given, joined by ", "
    int64_t source_bytes;       // all sources' bytes
    const char *source_sha256;  // of all bytes read, in order (one source: its own SHA-256)
    const TokensSource *sources;  // every source, in reading order (NULL: one, the aggregate)
    int n_sources;
    const char *doc_separator;  // the special token between documents, or NULL
    const char *val_split;      // "tokens" or "docs"
} TokensProvenance;

typedef struct {
    char *source;            // attrs of /train
    int64_t source_bytes;
    char source_sha256[65];
    size_t n_train, n_val;   // lengths of /train and /val
    int vocab_size;
    TokensSource *sources;   // /sources; a file from before it: one, from the attributes
    int n_sources;
    char *doc_separator;     // "" when none (or an older file)
    char *val_split;         // "tokens" or "docs" ("tokens" for an older file)
} TokensInfo;

// Writes tokens.h5 atomically from ids (width 2: uint16, 4: uint32): the first n - n_val
// are /train, the last n_val /val.
int tokens_write_e(const char *path, const Tokenizer *tok, const void *ids, int width, size_t n, size_t n_val,
                   const TokensProvenance *p, int force, GtErr *e);
// The same with the last round(n * val_fraction) ids (halves up) as /val and one source;
// exits on failure (for tests and fuzzing harnesses).
void tokens_save(const char *path, const Tokenizer *tok, const uint32_t *ids, size_t n, double val_fraction,
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
