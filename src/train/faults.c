// faults.c - see faults.h.
#include "faults.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

static long long env_ll(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atoll(v) : -1;
}

void faults_init(Faults *f) {
    memset(f, 0, sizeof *f);
    f->nan_step = env_ll("GT_FAULT_NAN_STEP");
    f->nan_layer = (int)env_ll("GT_FAULT_NAN_LAYER");
    f->explode_step = env_ll("GT_FAULT_EXPLODE_STEP");
    f->desync_step = env_ll("GT_FAULT_DESYNC_STEP");
    f->signal_step = env_ll("GT_FAULT_SIGNAL_STEP");
    f->open_rank = (int)env_ll("GT_FAULT_OPEN_RANK");
    f->ckpt_hang_step = env_ll("GT_FAULT_CKPT_HANG_STEP");
    f->stop_step = env_ll("GT_FAULT_STOP_STEP");
    f->stop_rank = (int)env_ll("GT_FAULT_STOP_RANK");
    f->step_sleep_ms = env_ll("GT_FAULT_STEP_SLEEP_MS");
    const char *t = getenv("GT_TRACE_WINDOWS");
    f->trace = t && *t ? t : NULL;
}

FILE *faults_trace_windows(const Faults *f, int rank) {
    if (!f->trace) return NULL;
    char path[4200];
    snprintf(path, sizeof path, "%.4000s.rank%d", f->trace, rank);
    return gt_fopen(path, "a", "GT_TRACE_WINDOWS file");
}

const char *faults_data_path(const Faults *f, const char *path, int rank, char *buf, size_t n) {
    if (f->open_rank < 0 || f->open_rank != rank) return path;
    snprintf(buf, n, "%.4000s.not-on-rank-%d", path, rank);
    return buf;
}

void faults_step_begin(Faults *f, GPT2 *m, long long k) {
    if (k != f->explode_step) return;
    const size_t C = (size_t)m->config.n_embd;
    f->saved = gt_malloc(C * sizeof(float), "fault copy");
    memcpy(f->saved, m->p.ln_f_w, C * sizeof(float));
    for (size_t i = 0; i < C; i++) m->p.ln_f_w[i] *= 100.0f;
}

int faults_defer_reduction(const Faults *f, long long k) { return k == f->nan_step; }

void faults_step_gradients(Faults *f, GPT2 *m, long long k, int rank) {
    if (f->saved) {
        memcpy(m->p.ln_f_w, f->saved, (size_t)m->config.n_embd * sizeof(float));
        free(f->saved);
        f->saved = NULL;
    }
    if (k != f->nan_step || rank != 0) return;
    if (f->nan_layer >= 0 && f->nan_layer < m->config.n_layer) m->g.h[f->nan_layer].c_attn_w[0] = NAN;
    else m->grads[0] = NAN;
}

void faults_step_end(const Faults *f, GPT2 *m, long long k, int rank, int size) {
    if (k == f->stop_step && rank == (f->stop_rank >= 0 ? f->stop_rank : size - 1)) raise(SIGSTOP);
    if (f->step_sleep_ms > 0) {  // nanosleep, as mpi/ does: usleep need not take a second or more
        long long ms = f->step_sleep_ms > 10000 ? 10000 : f->step_sleep_ms;
        nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
    }
    if (rank != size - 1) return;
    if (k == f->desync_step) {
        m->params[0] += 1e-3f;
        gpt2_params_changed(m);
    }
    if (k == f->signal_step) raise(SIGUSR1);
}

void faults_checkpoint_write(const Faults *f, long long k) {
    if (k != f->ckpt_hang_step) return;
    for (;;) pause();  // only the watchdog's MPI_Abort ends this
}
