// resume.h - the run directory and its checkpoints (docs/training.md, "Resume"): RUN is
// created or refused, --resume takes the settings and state of RUN/latest, a fresh run
// starts from rank 0's seeded weights, and checkpoints are written collectively.
#ifndef GT_RESUME_H
#define GT_RESUME_H

#include "run.h"

// Rank 0 creates RUN and locks it (RUN/lock: a second gpt-train on it is refused, naming
// the first); a run that already holds a checkpoint is only continued with --resume.
void resume_prepare_dir(Run *r);
// From here on RUN holds this run's files: an early exit no longer removes the directory
// this run created.
void resume_dir_in_use(void);
// Start-up, before training: a stop signal ends the process at once (nothing to save yet).
// Rank 0 names the phase for the line the signal handler prints, and stops at the test point
// `point` (GT_TEST_STOP_AT, signals.h) when it is set.
void startup_phase(const Run *r, const char *what, const char *point);
// --resume: finds RUN/latest, fills in every setting this command line leaves out from its
// /config (before the data: a text --data is tokenized with the run's settings), and
// refuses another model shape.
void resume_settings(Run *r);
// --init-from CKPT|RUN (docs/training.md, fine-tuning): resolves it (RUN: its latest), records
// its step and SHA-256 in the settings (/config), and takes the model shape and tokenizer
// settings from it; a flag that contradicts them is bad input.
void resume_init_settings(Run *r);
// --resume or --init-from, once the tokens file is open: refuses one whose /tokenizer is not
// the checkpoint's (rank 0 compares the pattern, every merge and special token); for a
// fine-tune the message gives the gpt-bpe encode command that makes the right one.
void resume_check_tokenizer(Run *r);
// Model and optimizer, fresh, from --init-from, or from the checkpoint (read by rank 0 and
// broadcast), and each rank's data cursor.
void resume_build_state(Run *r);
// Rank 0 writes the checkpoint (watched by the stall watchdog as "the checkpoint write").
void resume_save_checkpoint(Run *r);

#endif
