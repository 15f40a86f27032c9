// log.h - rank 0's view of training: one line per --log-every steps on stdout and in
// RUN/train.log, a row in RUN/metrics.csv, and on a terminal a live progress line.
// Every function is a no-op on other ranks (they print only errors).
//
// Every write, flush and close of train.log and metrics.csv is checked: the first failure
// (a full disk) is kept in `err` and the files are not written again; the trainer agrees on
// it at the end of the step and stops with exit 2. stdout is checked too: a failure there (a
// full disk behind `> out.txt`) is kept in `err` likewise; a reader that went away (`| head`)
// asks the run to stop as a signal does (signals_request_stop(SIGPIPE): checkpoint, exit 0).
// After a stop signal stdout fails on purpose under mpirun (signals.c) and counts for nothing.
#ifndef GT_LOG_H
#define GT_LOG_H

#include <stdio.h>

#include "error.h"

// NAN in a field means "not measured at this step": an empty cell in metrics.csv.
typedef struct {
    long long step;
    long long tokens;      // tokens seen by all ranks so far
    double train_loss, val_loss, lr, grad_norm, ms_per_step, tokens_per_s;
    double val_bpb;        // bits per byte of the eval (docs/training.md, evaluation)
} MetricsRow;

typedef struct {
    int active;            // rank 0
    int tty;               // stdout is a terminal: live progress line
    int progress_shown;
    FILE *log, *csv;
    char log_path[4200], csv_path[4200];
    long long total_steps;
    GtErr err;             // the first failed write; nothing is written after it
} Logger;

// Opens RUN/train.log (append) and RUN/metrics.csv. resume_step >= 0 keeps only the rows
// with step <= resume_step (a resumed run then writes the same rows as an uninterrupted
// one); resume_step < 0 starts a new file with the header. A failure (either path is a
// directory, the disk is full) is left in lg->err, -1 returned.
int log_open(Logger *lg, const char *run_dir, int rank, long long resume_step, long long total_steps);
// A line to stdout and train.log.
void log_line(Logger *lg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// The standard training line (and row) for one step; eval figures when val_loss is set.
void log_metrics(Logger *lg, const MetricsRow *m);
// Overwrites the live line on a terminal: "step 120/1000 loss 2.31 ...".
void log_progress(Logger *lg, long long step, double loss, double ms_per_step);
// Closes both files; a failed close is left in lg->err, -1 returned.
int log_close(Logger *lg);

#endif
