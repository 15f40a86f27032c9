// faults.h - the fault suite's hooks into gpt-train (tests/faults, tests/trainer).
//
// Each hook is off unless its environment variable is set, so a normal run never takes one:
//   GT_FAULT_NAN_STEP=k      rank 0's averaged gradient holds a NaN at step k (GT_FAULT_NAN_LAYER=l:
//                            in block l's c_attn weight, else the first parameter)
//   GT_FAULT_EXPLODE_STEP=k  ln_f's weight x100 for step k's forward and backward (a huge finite loss)
//   GT_FAULT_DESYNC_STEP=k   the last rank's weights nudged after step k (what --check-sync catches)
//   GT_FAULT_SIGNAL_STEP=k   SIGUSR1 to the last rank after step k (a stop signal seen by one rank)
//   GT_FAULT_OPEN_RANK=r     rank r looks for its data file under a name that does not exist, as
//                            when a node does not see the shared filesystem
//   GT_TRACE_WINDOWS=PREFIX  rank r appends "epoch position window" for every training window it
//                            takes to PREFIX.rank<r> (the data order tests)
//   GT_FAULT_CKPT_HANG_STEP=k  rank 0's checkpoint write of step k never returns, as on a hung
//                            filesystem (the stall watchdog must end the job)
//   GT_FAULT_STOP_STEP=k     rank GT_FAULT_STOP_RANK (default the last) stops itself with SIGSTOP
//                            after step k, as a swapped-out node or a hung read would
//   GT_FAULT_STEP_SLEEP_MS=n every rank sleeps n ms after each step: a run lasts long enough to
//                            be interrupted mid-way however fast the machine (the Slurm tests)
#ifndef GT_FAULTS_H
#define GT_FAULTS_H

#include <stddef.h>
#include <stdio.h>

#include "gpt2.h"

typedef struct {
    long long nan_step, explode_step, desync_step, signal_step, ckpt_hang_step, stop_step, step_sleep_ms;
    int nan_layer, open_rank, stop_rank;
    const char *trace;
    float *saved;  // ln_f's weight while an explode step runs
} Faults;

void faults_init(Faults *f);
// The data file rank `rank` opens: `path`, or under GT_FAULT_OPEN_RANK a name that is not there.
const char *faults_data_path(const Faults *f, const char *path, int rank, char *buf, size_t n);
// GT_TRACE_WINDOWS: this rank's trace file, opened for appending; NULL when off.
FILE *faults_trace_windows(const Faults *f, int rank);
// Before step k's first forward.
void faults_step_begin(Faults *f, GPT2 *m, long long k);
// 1 when step k's gradient must not be reduced during backward (the NaN step: the poison is
// put in after backward and must travel through the reduction).
int faults_defer_reduction(const Faults *f, long long k);
// After step k's last backward, before the gradient is reduced.
void faults_step_gradients(Faults *f, GPT2 *m, long long k, int rank);
// After step k's update.
void faults_step_end(const Faults *f, GPT2 *m, long long k, int rank, int size);
// Inside rank 0's checkpoint write of step k.
void faults_checkpoint_write(const Faults *f, long long k);

#endif
