// resume.h - the run directory and its checkpoints (docs/training.md, "Resume"): RUN is
// created or refused, --resume takes the settings and state of RUN/latest, a fresh run
// starts from rank 0's seeded weights, and checkpoints are written collectively.
#ifndef GT_RESUME_H
#define GT_RESUME_H

#include "run.h"

// Rank 0 creates RUN; a run that already holds a checkpoint is only continued with --resume.
void resume_prepare_dir(Run *r);
// --resume: finds RUN/latest, fills in every setting this command line leaves out from its
// /config, and refuses another model shape or vocabulary.
void resume_settings(Run *r);
// Model and optimizer, fresh or from the checkpoint (read by rank 0 and broadcast), and
// each rank's data cursor.
void resume_build_state(Run *r);
// Collective: rank 0 gathers every rank's data cursor and writes the checkpoint.
void resume_save_checkpoint(Run *r);

#endif
