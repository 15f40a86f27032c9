// vocab_io.h - the /tokenizer group (vocab.h5, and copies in tokens.h5 and checkpoints).
// Error handling as in h5util.h: the _e forms record a failure in *e and return -1, the
// plain forms exit with it.
#ifndef GT_VOCAB_IO_H
#define GT_VOCAB_IO_H

#include <hdf5.h>

#include "error.h"
#include "tokenizer.h"

#define GT_FORMAT_VOCAB "gpt-train/vocab"

// Writes group "/tokenizer" into an open file.
int vocab_write_group_e(hid_t file, const Tokenizer *tok, GtErr *e);
void vocab_write_group(hid_t file, const Tokenizer *tok);
// Reads and validates "/tokenizer" of an open file (checks every shape and id); prepares tok.
// `path` names the file in messages. Bad input (status 1) on anything inconsistent; tok is
// then left empty (nothing to free).
int vocab_read_group_e(hid_t file, Tokenizer *tok, const char *path, GtErr *e);
void vocab_read_group(hid_t file, Tokenizer *tok, const char *path);
// Whole vocab.h5 files (atomic write; open_checked read). vocab_load also takes the /tokenizer
// of a tokens.h5 or a checkpoint.
int vocab_save_e(const char *path, const Tokenizer *tok, int force, GtErr *e);
void vocab_save(const char *path, const Tokenizer *tok, int force);
int vocab_load_e(const char *path, Tokenizer *tok, const char *flag_for_msg, GtErr *e);
void vocab_load(const char *path, Tokenizer *tok, const char *flag_for_msg);

#endif
