// run.h - everything one gpt-train run holds, shared by the trainer's stages:
//   data.c    the tokens: text tokenized into RUN/, the data loader, eval windows, the probe
//   resume.c  the run directory, --resume, fresh or restored state, checkpoints
//   loop.c    the training loop: steps, bad steps, eval, check-sync, the agreed stop
//   faults.c  the fault suite's hooks
// Every rank has its own Run; rank 0 alone holds the writers and the tokenizer.
#ifndef GT_RUN_H
#define GT_RUN_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "adamw.h"
#include "allreduce.h"
#include "attention_io.h"
#include "comm.h"
#include "config.h"
#include "dataloader.h"
#include "faults.h"
#include "gpt2.h"
#include "log.h"
#include "tokenizer.h"
#include "tokens_io.h"
#include "train_state.h"

#define PATHLEN 4200

typedef struct {
    TrainConfig cfg;
    const Comm *w;
    char tokens_path[PATHLEN];
    char data_text[PATHLEN];  // the --data inputs as given, quoted, for messages
    char err[16384];          // the message of a failed check, for comm_agree
    // data
    hid_t tf;                 // tokens.h5, open for the whole run (its /tokenizer goes into checkpoints)
    TokensInfo info;
    Tokenizer tok;            // rank 0 only (the attention probe)
    DataLoader dl;            // /train in one global order
    TokenCache val;           // /val, of which this rank evaluates windows [ev_first, ev_first + ev_count)
    size_t ev_first, ev_count, ev_total;
    int *token_len;           // (V) each token's bytes, for bits per byte (evaluate.h)
    int *inputs, *targets;    // (B, T)
    // model and state
    GPTConfig mc;
    Precision prec;           // --precision
    char ckpt_precision[8];   // the precision of the run resumed from ("fp32" before there was a choice)
    GPT2 m;
    AdamW opt;
    AdamWConfig ac;
    LRSchedule sched;
    GradReducer red;
    double backward_s;        // time in the last micro-batch's backward, summed over steps
    TrainState st;
    char ckpt_path[PATHLEN];  // resumed from
    int64_t old_world;        // ranks of the checkpoint resumed from
    char last_ckpt[PATHLEN];  // the last checkpoint written (or resumed from)
    long long last_ckpt_step;
    char good_ckpt[PATHLEN];  // the last one known good: a later good step ran on its weights ("" none yet)
    long long good_step;
    long long known_ckpt_step;    // the last checkpoint this rank knows complete (-1: none)
    long long pending_ckpt_step;  // ranks other than 0: being written by rank 0 unless it hangs (-1: none)
    double *agree;            // (size, 2) each rank's loss and exchange wait, gathered every step
    // rank 0's writers
    Logger lg;                // its own failures in lg.err
    AttnWriter *aw;
    GtErr attn_err;           // the first failure writing attention.h5
    int *probe;               // (probe_T) the attention probe's ids (docs/attention.md)
    int probe_T;
    float *probe_loss;        // (probe_T - 1) its loss on each token, one record's worth
    float *probe_scratch;     // (probe_T - 1, V) the cross-entropy's probabilities
    char *resume_cmd;         // the command that resumes this run, quoted for the shell
    Faults faults;
} Run;

#endif
