// resume.c - see resume.h.
#define _GNU_SOURCE
#include "resume.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config_io.h"
#include "data.h"
#include "error.h"
#include "h5util.h"
#include "rng.h"

// Creates path and its missing parents. Those this run creates are registered: an early
// failure removes them again, while still empty, rather than leave an empty RUN behind.
static int mkdir_p(const char *path) {
    char buf[PATHLEN];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p) continue;
        char end = *p;
        *p = '\0';
        if (mkdir(buf, 0777) == 0) gt_tmpdir_register(buf);
        else if (errno != EEXIST) return -1;
        if (!end) break;
        *p = '/';
    }
    struct stat st;
    errno = 0;
    return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

// Rank 0 creates RUN; a run that already holds a checkpoint is only continued with --resume.
void resume_prepare_dir(Run *r) {
    const char *msg = NULL;
    if (r->w->rank == 0) {
        char latest[PATHLEN];
        if (mkdir_p(r->cfg.out) != 0) {
            snprintf(r->err, sizeof r->err, "--out '%s': cannot create the run directory: %s", r->cfg.out,
                     errno ? strerror(errno) : "a file of that name exists");
            msg = r->err;
        } else if (access(r->cfg.out, W_OK) != 0) {
            snprintf(r->err, sizeof r->err, "--out '%s': directory is not writable", r->cfg.out);
            msg = r->err;
        } else if (!r->cfg.resume && train_state_latest(r->cfg.out, latest, sizeof latest)) {
            snprintf(r->err, sizeof r->err,
                     "--out '%s' already holds a run (latest checkpoint %s); add --resume to continue it, "
                     "or choose another --out",
                     r->cfg.out, latest);
            msg = r->err;
        }
    }
    comm_agree(msg, GT_EXIT_USAGE);
}

// --resume: finds RUN/latest, fills in every setting this command line leaves out from its
// /config, and refuses another model shape or vocabulary.
void resume_settings(Run *r) {
    TrainConfig *c = &r->cfg;
    const char *msg = NULL;
    if (r->w->rank == 0) {
        if (!train_state_latest(c->out, r->ckpt_path, sizeof r->ckpt_path)) {
            snprintf(r->err, sizeof r->err,
                     "--resume: no checkpoint in '%s' (no '%s/latest'); run without --resume to start training", c->out,
                     c->out);
            msg = r->err;
        }
    }
    comm_agree(msg, GT_EXIT_USAGE);
    comm_bcast(r->ckpt_path, sizeof r->ckpt_path);
    // Every rank reads the settings; one that cannot see the file names itself.
    GtErr e = GT_ERR_INIT;
    GPTConfig ck;
    hid_t cf = ckpt_open_e(r->ckpt_path, "--resume: checkpoint", &e);
    ckpt_read_model_config_e(cf, &ck, r->ckpt_path, &e);
    hid_t g = h5_group_open_e(cf, "config", r->ckpt_path, &e);
    if (g >= 0) {
        config_fill_from_attrs(c, g);
        H5Gclose(g);
    }
    if (cf >= 0) H5Fclose(cf);
    comm_agree_local_e(&e);
    msg = NULL;
    const struct { const char *name; int have, want; } shape[] = {
        {"n-layer", ck.n_layer, c->n_layer}, {"n-head", ck.n_head, c->n_head},
        {"n-embd", ck.n_embd, c->n_embd},   {"block-size", ck.block_size, c->block_size}};
    for (int i = 0; i < 4 && !msg; i++)
        if (shape[i].have != shape[i].want) {
            snprintf(r->err, sizeof r->err,
                     "--resume: checkpoint '%s' has %s %d but --%s %d was given; a run cannot change its model shape "
                     "(drop the flag, or start a new --out)",
                     r->ckpt_path, shape[i].name, shape[i].have, shape[i].name, shape[i].want);
            msg = r->err;
        }
    if (!msg && ck.vocab_size != r->info.vocab_size) {
        snprintf(r->err, sizeof r->err,
                 "--resume: checkpoint '%.4000s' has vocab_size %d but --data '%.4000s' has a %d-token vocabulary; "
                 "resume with the tokens the run started with",
                 r->ckpt_path, ck.vocab_size, r->tokens_path, r->info.vocab_size);
        msg = r->err;
    }
    comm_agree(msg, GT_EXIT_USAGE);
}

static void bcast_floats(float *p, size_t n) { comm_bcast(p, n * sizeof(float)); }

// A checkpoint's /state, which every rank needs: broadcast from rank 0 as one struct.
typedef struct {
    long long step, tokens_seen, skipped_steps, adam_t, recent_n, bad_in_row;
    double best_val_loss, recent_loss;
    int64_t world_size, data_epoch, data_pos, data_windows, data_per_rank;
} StateScalars;

static void bcast_state_scalars(TrainState *st) {
    StateScalars s = {st->step,          st->tokens_seen, st->skipped_steps, st->adam_t,       st->recent_n,
                      st->bad_in_row,    st->best_val_loss, st->recent_loss, st->world_size,  st->data_epoch,
                      st->data_pos,      st->data_windows, st->data_per_rank};
    comm_bcast(&s, sizeof s);
    st->step = s.step;
    st->tokens_seen = s.tokens_seen;
    st->skipped_steps = s.skipped_steps;
    st->adam_t = s.adam_t;
    st->recent_n = s.recent_n;
    st->bad_in_row = s.bad_in_row;
    st->best_val_loss = s.best_val_loss;
    st->recent_loss = s.recent_loss;
    st->world_size = (int)s.world_size;
    st->data_epoch = s.data_epoch;
    st->data_pos = s.data_pos;
    st->data_windows = s.data_windows;
    st->data_per_rank = (int)s.data_per_rank;
}

// Model and optimizer: fresh (rank 0's initial weights broadcast) or from the checkpoint,
// which rank 0 reads and broadcasts; then the global data cursor.
void resume_build_state(Run *r) {
    const TrainConfig *c = &r->cfg;
    const int rank = r->w->rank, size = r->w->size;
    TrainState *st = &r->st;
    gpt2_build(&r->m, &r->mc);
    gpt2_alloc_activations(&r->m, c->batch_size, c->block_size);
    adamw_init(&r->opt, r->m.num_params);
    r->ac = (AdamWConfig){(float)c->lr, (float)c->beta1, (float)c->beta2, (float)c->eps, (float)c->weight_decay};
    r->sched = LR_COSINE;
    lr_schedule_parse(c->lr_schedule, &r->sched);
    st->best_val_loss = INFINITY;
    r->old_world = size;
    r->last_ckpt_step = -1;
    if (!c->resume) {
        if (rank == 0) gpt2_init_weights(&r->m, (uint64_t)c->seed);
        bcast_floats(r->m.params, r->m.num_params);
        return;
    }
    GtErr e = GT_ERR_INIT;
    if (rank == 0) {
        hid_t cf = ckpt_open_e(r->ckpt_path, "--resume: checkpoint", &e);
        ckpt_read_tensors_e(cf, "model", &r->m, r->m.params, r->ckpt_path, &e);
        ckpt_read_tensors_e(cf, "optimizer/m", &r->m, r->opt.m, r->ckpt_path, &e);
        ckpt_read_tensors_e(cf, "optimizer/v", &r->m, r->opt.v, r->ckpt_path, &e);
        train_state_read_e(cf, r->ckpt_path, st, &e);
        if (cf >= 0) H5Fclose(cf);
    }
    comm_agree_e(&e);
    bcast_state_scalars(st);
    r->old_world = st->world_size;
    r->opt.t = st->adam_t;
    bcast_floats(r->m.params, r->m.num_params);
    bcast_floats(r->opt.m, r->m.num_params);
    bcast_floats(r->opt.v, r->m.num_params);
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", r->ckpt_path);
    r->last_ckpt_step = st->step;
    // The cursor is global, so any rank count continues exactly; only a /train of another
    // length (or an older checkpoint's per-rank cursors) maps it to the same fraction.
    int64_t pos = st->data_pos;
    if ((size_t)st->data_windows != r->dl.n_windows)
        pos = (int64_t)((__int128)st->data_pos * (__int128)r->dl.n_windows / st->data_windows);
    dataloader_seek(&r->dl, st->data_epoch, pos);
}

// Rank 0 writes the checkpoint; then all agree on how that went.
void resume_save_checkpoint(Run *r) {
    GtErr e = GT_ERR_INIT;
    if (r->w->rank == 0) {
        TrainState s = r->st;
        s.world_size = r->w->size;
        s.adam_t = r->opt.t;
        s.data_epoch = r->dl.epoch;
        s.data_pos = r->dl.pos;
        s.data_windows = (int64_t)r->dl.n_windows;
        s.data_per_rank = 0;
        double t0 = comm_time();
        if (train_state_save_e(r->cfg.out, &r->cfg, &r->m, &r->opt, &s, r->tf, r->cfg.keep_ckpts, r->last_ckpt, &e) == 0)
            log_line(&r->lg, "checkpoint %s (%.2f s)", r->last_ckpt, comm_time() - t0);
    }
    comm_agree_e(&e);
    r->last_ckpt_step = r->st.step;
}
