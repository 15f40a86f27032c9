// train_state.h - the trainer's part of a checkpoint (docs/formats.md, checkpoints): root attrs,
// /config, /state, /tokenizer, around the engine's /model and /optimizer groups; the atomic
// write, RUN/latest, and keeping the newest --keep-ckpts.
//
// /state holds everything a resumed run needs to continue exactly:
//   attrs  seed, adam_t, best_val_loss, skipped_steps, rng (how every random stream is
//          derived: all are counter-based from seed, step, rank, micro-step and epoch, so
//          seed + step + the data cursor ARE the RNG state);
//          data_epoch, data_pos, data_windows: the one global data cursor (the next position
//          in epoch data_epoch's order of the data_windows training windows), the same for
//          any rank count (src/train/dataloader.h)
// Checkpoints of older versions hold per-rank cursors instead (datasets cursor_epoch,
// cursor_pos, cursor_windows, one entry per rank): they are read as the cursor at the same
// fraction of the epoch (data_pos = the sum of the ranks' positions, data_windows = the sum
// of their windows).
#ifndef GT_TRAIN_STATE_H
#define GT_TRAIN_STATE_H

#include <hdf5.h>
#include <stdint.h>

#include "adamw.h"
#include "config.h"
#include "error.h"
#include "gpt2.h"
#include "tokenizer.h"

typedef struct {
    long long step;          // optimizer steps done
    long long tokens_seen;   // over all ranks
    int world_size;
    double best_val_loss;    // INFINITY before the first eval
    long long skipped_steps; // --skip-bad-steps
    double recent_loss;      // running mean of the good steps' training loss (--loss-spike)
    long long recent_n;      // good steps in it
    long long bad_in_row;    // consecutive skipped steps (--skip-bad-steps gives up after GT_MAX_BAD_IN_ROW)
    long long adam_t;
    int64_t data_epoch, data_pos, data_windows;  // the global data cursor
    int data_per_rank;       // read from per-rank cursors (an older checkpoint)
} TrainState;

// Rank 0 only: writes RUN/ckpt-<step>.h5 (the step zero-padded to 8 digits, more past
// 99,999,999; temp name, flush, rename), then RUN/latest (temp, rename), then removes the
// checkpoints beyond the newest `keep` by step, except also_keep (a path, or NULL). tok: the
// run's tokenizer, written as /tokenizer. The written path goes to path_out (>= 4200 bytes)
// when non-NULL. A failure (a full disk) leaves the previous checkpoint and RUN/latest as
// they were and no temp file, and is recorded in *e (the ranks agree on it).
int train_state_save_e(const char *run, const TrainConfig *cfg, const GPT2 *m, const AdamW *opt,
                       const TrainState *st, const Tokenizer *tok, int keep, const char *also_keep, char *path_out,
                       GtErr *e);
// Makes RUN/latest name the checkpoint at `path` (written to a temp name, synced, renamed).
int train_state_set_latest_e(const char *run, const char *path, GtErr *e);
// The checkpoint to resume from, into path: the one RUN/latest names, or a newer
// RUN/ckpt-*.h5 when a crash came between its rename and the update of RUN/latest.
// 0 when there is none.
int train_state_latest(const char *run, char *path, size_t n);
// Reads root attrs and /state of an open checkpoint (bad input naming path when inconsistent).
int train_state_read_e(hid_t file, const char *path, TrainState *st, GtErr *e);
void train_state_read(hid_t file, const char *path, TrainState *st);

#endif
