// loop.h - the training loop (docs/training.md): steps, then check-sync, the attention
// probe, eval, the log line, checkpoints and the agreed stop on a signal, each when due.
#ifndef GT_LOOP_H
#define GT_LOOP_H

#include "run.h"

// Trains from r->st.step to --steps (or a stop signal). A bad step ends the process (exit 2)
// unless --skip-bad-steps skips it.
void loop_train(Run *r);

// The attention probe (docs/attention.md): ids (T) through m in eval mode (no dropout). Leaves
// the probe's attention (L, 1, NH, T, T) in m->att and writes the loss on each of its tokens
// to token_loss (T-1): token t+1 predicted from tokens 0..t, the engine's cross-entropy.
// scratch holds (T-1) * vocab_size floats. Overwrites m's activations, so it runs between an
// optimizer step and the next forward.
void probe_forward(GPT2 *m, const int *ids, int T, float *token_loss, float *scratch);

#endif
