// loop.h - the training loop (docs/training.md): steps, then check-sync, the attention
// probe, eval, the log line, checkpoints and the agreed stop on a signal, each when due.
#ifndef GT_LOOP_H
#define GT_LOOP_H

#include "run.h"

// Trains from r->st.step to --steps (or a stop signal). A bad step ends the process (exit 2)
// unless --skip-bad-steps skips it.
void loop_train(Run *r);

#endif
