// vocab_io.h - the /tokenizer group (vocab.h5, and copies in tokens.h5 and checkpoints).
#ifndef GT_VOCAB_IO_H
#define GT_VOCAB_IO_H

#include <hdf5.h>

#include "tokenizer.h"

#define GT_FORMAT_VOCAB "gpt-train/vocab"

// Writes group "/tokenizer" into an open file.
void vocab_write_group(hid_t file, const Tokenizer *tok);
// Reads and validates "/tokenizer" of an open file (checks every shape and id); prepares tok.
// `path` names the file in messages. Exit 1 with one message on anything inconsistent.
void vocab_read_group(hid_t file, Tokenizer *tok, const char *path);
// Whole vocab.h5 files (atomic write; open_checked read).
void vocab_save(const char *path, const Tokenizer *tok, int force);
void vocab_load(const char *path, Tokenizer *tok, const char *flag_for_msg);

#endif
