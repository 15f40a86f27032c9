// attention_io.h - RUN/attention.h5: the probe's softmax attention after every Nth step
// (docs/formats.md, attention.h5). Appended in place, not written to a temp name and renamed:
// the file is opened for SWMR writing and flushed after every record, so h5py can read it
// while training runs (h5py.File(p, "r", swmr=True)) and a crash loses at most the record
// being written. Error handling as in h5util.h: the _e forms record a failure in *e and
// return -1 (NULL), the plain forms exit with it.
#ifndef GT_ATTENTION_IO_H
#define GT_ATTENTION_IO_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "gpt2.h"
#include "tokenizer.h"

#define GT_FORMAT_ATTENTION "gpt-train/attention"

typedef struct AttnWriter AttnWriter;

// resume_step < 0: a new file (an existing one is replaced). Otherwise the existing file is
// taken over for appending and records with step > resume_step are dropped, so a resumed run
// never duplicates steps; a missing file is created, and a file from before /token_loss gains
// it (NaN for the records kept). Taking over works on a copy that is
// renamed over the file once it is open for SWMR writing: readers attached to the old file
// (h5py swmr=True, or one that reopens it on every poll) keep the old inode and stop nothing;
// a program holding it open for writing is named. float16: the dtype of a new file; a resumed
// file keeps its own (attn_writer_float16), unless ATTN_DTYPE_REQUIRED is or'ed in: then a
// file of the other dtype is bad input. Bad input (probe empty or longer than the block size,
// an existing file of another shape or probe) exits 1 naming the file.
#define ATTN_DTYPE_REQUIRED 2
AttnWriter *attn_writer_open_e(const char *path, const GPTConfig *c, int every, const int32_t *probe_ids, int T,
                               const Tokenizer *tok, int float16, long long resume_step, GtErr *e);
AttnWriter *attn_writer_open(const char *path, const GPTConfig *c, int every, const int32_t *probe_ids, int T,
                             const Tokenizer *tok, int float16, long long resume_step);
// Appends one record: the probe's attention att (L, NH, T, T) and its loss on each token
// token_loss (T-1: token t+1 predicted from tokens 0..t) at training step `step`, whose
// training loss was `loss`; flushes. The caller ran the probe (gpt-train's loop). A
// failure (a full disk) leaves the records before it readable.
int attn_append_e(AttnWriter *w, long long step, float loss, const float *att, const float *token_loss, GtErr *e);
void attn_append(AttnWriter *w, long long step, float loss, const float *att, const float *token_loss);
// Records in the file (after the resume truncation, plus those appended since).
long long attn_writer_count(const AttnWriter *w);
// 1 when the file holds float16 records.
int attn_writer_float16(const AttnWriter *w);
// A resume that records no attention (--attn-every 0): drops the records of an existing file
// at `path` with step > resume_step, the same way (a copy renamed over it), checking the file
// only against itself. A missing file is fine.
int attn_trim_e(const char *path, long long resume_step, GtErr *e);
// Closes (checked) and frees. A writer still open at exit is closed then, so a process that
// stops on an error elsewhere leaves a file that any reader opens.
int attn_writer_close_e(AttnWriter *w, GtErr *e);
void attn_writer_close(AttnWriter *w);

// Text of token `id` as valid UTF-8 (invalid bytes shown as U+FFFD, one per maximal
// ill-formed subsequence, as Python's bytes.decode("utf-8", "replace"); utf8_sanitize); malloc'd.
char *token_text_utf8(const Tokenizer *tok, int32_t id);

// IEEE binary16 conversion, round to nearest even (the float16 variant of the file).
uint16_t float_to_half(float f);
// An HDF5 little-endian IEEE half type (HDF5 1.10 has none built in); caller closes it.
hid_t h5_half_type_e(GtErr *e);

#endif
