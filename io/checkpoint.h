// checkpoint.h - the model and optimizer groups of a checkpoint (docs/formats.md, checkpoints):
// /model/<nanoGPT name> float32 tensors in PyTorch shapes, /model/lm_head.weight a hard link
// to transformer.wte.weight (tied), /optimizer/m and /optimizer/v the AdamW moments under
// the same names, /config attrs with the model config. The trainer owns the rest of the
// file (root attrs, /state, /tokenizer, its settings in /config) and its atomic commit
// (h5_create_tmp / h5_commit). Error handling as in h5util.h: the _e forms record a failure
// in *e and return -1, the plain forms exit with it.
#ifndef GT_CHECKPOINT_H
#define GT_CHECKPOINT_H

#include <hdf5.h>

#include "error.h"
#include "gpt2.h"

#define GT_FORMAT_CHECKPOINT "gpt-train/checkpoint"

// Writes the tensors of `buf` (model params or an AdamW moment, m->num_params floats)
// under `group` ("model", "optimizer/m", "optimizer/v"). For "model" also creates the
// lm_head.weight hard link.
int ckpt_write_tensors_e(hid_t file, const char *group, const GPT2 *m, const float *buf, GtErr *e);
void ckpt_write_tensors(hid_t file, const char *group, const GPT2 *m, const float *buf);
// Each tensor gets an attribute "checksum" (uint64, 2): the sum of its 32-bit words and the
// sum of (i+1) * word i, both modulo 2^64.
// Reads them back into buf, checking that every tensor exists, is float32, has exactly the
// expected shape and matches its checksum (when it has one); otherwise bad input (exit 1)
// with one message naming `path`, the tensor, and what is wrong.
int ckpt_read_tensors_e(hid_t file, const char *group, const GPT2 *m, float *buf, const char *path, GtErr *e);
void ckpt_read_tensors(hid_t file, const char *group, const GPT2 *m, float *buf, const char *path);

// /config attrs n_layer, n_head, n_embd, block_size, vocab_size (int) and dropout (double).
int ckpt_write_model_config_e(hid_t file, const GPTConfig *c, GtErr *e);
void ckpt_write_model_config(hid_t file, const GPTConfig *c);
// Reads and validates them (missing attribute or invalid config: bad input naming `path`).
int ckpt_read_model_config_e(hid_t file, GPTConfig *c, const char *path, GtErr *e);
void ckpt_read_model_config(hid_t file, GPTConfig *c, const char *path);

// Opens a checkpoint read-only with format checks (exit 1 for a missing, truncated or
// foreign file). `what` names the flag for messages, e.g. "--checkpoint".
hid_t ckpt_open_e(const char *path, const char *what, GtErr *e);
hid_t ckpt_open(const char *path, const char *what);
// A --checkpoint/--init-from argument: a checkpoint file as is, or a run directory, meaning the
// checkpoint its RUN/latest names (relative to RUN, or absolute), into path[0..n). Bad input
// naming `flag` for a missing path or a run without a checkpoint.
int ckpt_resolve_e(const char *arg, const char *flag, char *path, size_t n, GtErr *e);
// ckpt_resolve_e, then ckpt_open_e. A run directory a training run still writes may lose the
// checkpoint its latest named (--keep-ckpts) before the file is open: latest is read again
// then, a few times. Returns the open file, or -1 with *e.
hid_t ckpt_resolve_open_e(const char *arg, const char *flag, char *path, size_t n, GtErr *e);
// Convenience for tools that only need the model (sampler, tests): open, read config,
// gpt2_build, read /model. Does not allocate activations.
void ckpt_load_model(const char *path, const char *what, GPT2 *m);

#endif
