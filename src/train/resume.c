// resume.c - see resume.h.
#define _GNU_SOURCE
#include "resume.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config_io.h"
#include "data.h"
#include "error.h"
#include "h5util.h"
#include "sha256.h"
#include "signals.h"
#include "utf8.h"
#include "vocab_io.h"
#include "watchdog.h"

// ---- the run directory ----

static char lock_path[PATHLEN];  // rank 0: RUN/lock
static int made_run;               // rank 0: this run created RUN

// Creates path and its missing parents. Those this run creates are registered: an early
// failure removes them again, while still empty, rather than leave an empty RUN behind.
static int mkdir_p(const char *path) {
    char buf[PATHLEN];
    snprintf(buf, sizeof buf, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p) continue;
        char end = *p;
        *p = '\0';
        made_run = mkdir(buf, 0777) == 0;
        if (made_run) gt_tmpdir_register(buf);
        else if (errno != EEXIST) return -1;
        if (!end) break;
        *p = '/';
    }
    struct stat st;
    if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    errno = ENOTDIR;
    return -1;
}

// Once RUN holds this run's files, its lock file stays too (it names the run's PID).
void resume_dir_in_use(void) {
    if (made_run) gt_tmpfile_forget(lock_path);
}

// Temporary files that a killed run left in RUN (kill -9 cannot be caught): vocab.h5,
// tokens.h5 or a checkpoint half written (NAME.tmp-PID), attention.h5 half copied by a resume,
// metrics.csv or latest half rewritten (NAME.tmp). With RUN locked no other process writes
// there, so every such file is stale; some are as large as the corpus or the attention
// records. Only these names: whatever else a user keeps in RUN stays.
static void remove_stale_tmp(const char *run) {
    static const char *own[] = {"vocab.h5", "tokens.h5", "attention.h5", "metrics.csv", "latest", "train.log"};
    DIR *d = opendir(run);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        const char *tmp = strstr(de->d_name, ".tmp"), *t = tmp ? tmp + 4 : NULL;
        if (!tmp || (*t && (*t != '-' || !t[1] || strspn(t + 1, "0123456789") != strlen(t + 1)))) continue;
        size_t stem = (size_t)(tmp - de->d_name);
        int ours = stem > 8 && !strncmp(de->d_name, "ckpt-", 5) && !strncmp(tmp - 3, ".h5", 3) &&
                   strspn(de->d_name + 5, "0123456789") == stem - 8;
        for (size_t i = 0; !ours && i < sizeof own / sizeof own[0]; i++)
            ours = strlen(own[i]) == stem && !strncmp(de->d_name, own[i], stem);
        char p[PATHLEN];
        struct stat st;
        snprintf(p, sizeof p, "%.3000s/%.900s", run, de->d_name);
        if (ours && lstat(p, &st) == 0 && S_ISREG(st.st_mode)) unlink(p);
    }
    if (d) closedir(d);
}

// RUN/lock: rank 0 holds an exclusive flock on it for the whole run. The kernel drops it
// when the process ends in any way, kill -9 included, so a file left behind never blocks a
// later run; a second gpt-train on the same RUN is refused, naming the holder. NULL when
// the lock is ours.
static const char *lock_run_dir(Run *r) {
    const char *out = r->cfg.out;
    snprintf(lock_path, sizeof lock_path, "%s/lock", out);
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    for (int attempt = 0; attempt < 5; attempt++) {
        int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            snprintf(r->err, sizeof r->err, "--out '%s': cannot create the lock file '%s': %s", out, lock_path,
                     strerror(errno));
            return r->err;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int err = errno;
            if (err == EWOULDBLOCK) {
                char holder[300] = "";
                ssize_t got = pread(fd, holder, sizeof holder - 1, 0);
                holder[got > 0 ? got : 0] = '\0';
                holder[strcspn(holder, "\r\n")] = '\0';
                close(fd);
                snprintf(r->err, sizeof r->err,
                         "--out '%s' is in use by another gpt-train (%s; it holds '%s'); wait for it to end or stop "
                         "it, or choose another --out",
                         out, *holder ? holder : "its PID is not recorded", lock_path);
                return r->err;
            }
            if (err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS) {
                // Some parallel file systems offer no flock (Lustre without -o flock).
                gt_warn("--out '%s': the file system cannot lock '%s' (%s): nothing stops a second run from "
                        "using this directory at the same time",
                        out, lock_path, strerror(err));
                return NULL;
            }
            close(fd);
            snprintf(r->err, sizeof r->err, "--out '%s': cannot lock '%s': %s", out, lock_path, strerror(err));
            return r->err;
        }
        // A holder that was just ending may have removed the file (a run dropping the
        // directory it made): the lock counts only on the file that is there now.
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(lock_path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            char me[320];
            int n = snprintf(me, sizeof me, "PID %ld on %s\n", (long)getpid(), host);
            if (ftruncate(fd, 0) != 0 || pwrite(fd, me, (size_t)n, 0) != n)
                gt_warn("cannot record this run's PID in '%s': %s", lock_path, strerror(errno));
            (void)fd;  // held (never closed) until the process ends
            remove_stale_tmp(out);
            return NULL;
        }
        close(fd);
    }
    snprintf(r->err, sizeof r->err, "--out '%s': the lock file '%s' keeps changing under this run", out, lock_path);
    return r->err;
}

// Rank 0 creates RUN and locks it; a run that already holds a checkpoint is only continued
// with --resume.
void resume_prepare_dir(Run *r) {
    const char *msg = NULL;
    if (r->w->rank == 0) {
        char latest[PATHLEN];
        if (mkdir_p(r->cfg.out) != 0) {
            snprintf(r->err, sizeof r->err, "--out '%s': cannot create the run directory: %s", r->cfg.out,
                     strerror(errno));
            msg = r->err;
        } else if (access(r->cfg.out, W_OK) != 0) {
            snprintf(r->err, sizeof r->err, "--out '%s': directory is not writable", r->cfg.out);
            msg = r->err;
        } else if (!(msg = lock_run_dir(r))) {
            // An early failure removes a RUN this run created: the lock file first.
            if (made_run) gt_tmpfile_register(lock_path);
            if (!r->cfg.resume && train_state_latest(r->cfg.out, latest, sizeof latest)) {
                snprintf(r->err, sizeof r->err,
                         "--out '%s' already holds a run (latest checkpoint %s); add --resume to continue it, "
                         "or choose another --out",
                         r->cfg.out, latest);
                msg = r->err;
            }
        }
    }
    comm_agree(msg, GT_EXIT_USAGE);
}

void startup_phase(const Run *r, const char *what, const char *point) {
    if (r->w->rank != 0) return;
    char note[512];
    snprintf(note, sizeof note, "%s: stopped by a signal while %s; %s", gt_progname(), what,
             r->cfg.resume ? "the run is as it was: run the same command to resume it"
                           : "nothing was trained: run the same command to start again");
    signals_note(note);
    if (point) signals_test_point(point);
}

// ---- --resume ----

void resume_settings(Run *r) {
    TrainConfig *c = &r->cfg;
    GtErr e = GT_ERR_INIT;
    if (r->w->rank == 0 && !train_state_latest(c->out, r->ckpt_path, sizeof r->ckpt_path))
        gt_err(&e, GT_EXIT_USAGE,
               "--resume: no checkpoint in '%s' (no '%s/latest'); run without --resume to start training", c->out,
               c->out);
    comm_agree_e(&e);
    comm_bcast(r->ckpt_path, sizeof r->ckpt_path);
    // Every rank reads /config (each must see the file: one that cannot names itself).
    GPTConfig ck;
    hid_t cf = ckpt_open_e(r->ckpt_path, "--resume: checkpoint", &e);
    ckpt_read_model_config_e(cf, &ck, r->ckpt_path, &e);
    hid_t g = h5_group_open_e(cf, "config", r->ckpt_path, &e);
    if (!gt_failed(&e) && config_given(c, "init-from")) {
        // A fine-tune's --init-from is a record of where it began: resuming continues from RUN.
        char *was = h5_attr_read_str(g, "init_from");
        if (!was || strcmp(was, c->init_from) != 0)
            gt_err(&e, GT_EXIT_USAGE,
                   "--init-from starts a new run and --resume continues one from '%s', which %s%s%s: drop "
                   "--init-from to resume, or start the fine-tune in a new --out",
                   r->ckpt_path, was && *was ? "began from '" : "did not begin with --init-from", was && *was ? was : "",
                   was && *was ? "'" : "");
        free(was);
    }
    snprintf(r->ckpt_precision, sizeof r->ckpt_precision, "fp32");
    if (!gt_failed(&e)) {
        char *p = h5_attr_read_str(g, "precision");
        if (p && *p) snprintf(r->ckpt_precision, sizeof r->ckpt_precision, "%s", p);
        free(p);
        config_fill_from_attrs(c, g);
    }
    h5_close(g, &e);
    h5_close(cf, &e);
    comm_agree_local_e(&e);
    const struct { const char *name; int have, want; } shape[] = {
        {"n-layer", ck.n_layer, c->n_layer}, {"n-head", ck.n_head, c->n_head},
        {"n-embd", ck.n_embd, c->n_embd},   {"block-size", ck.block_size, c->block_size}};
    const char *msg = NULL;
    for (int i = 0; i < 4 && !msg; i++)
        if (shape[i].have != shape[i].want) {
            snprintf(r->err, sizeof r->err,
                     "--resume: checkpoint '%s' has %s %d but --%s %d was given; a run cannot change its model shape "
                     "(drop the flag, or start a new --out)",
                     r->ckpt_path, shape[i].name, shape[i].have, shape[i].name, shape[i].want);
            msg = r->err;
        }
    comm_agree(msg, GT_EXIT_USAGE);
}

// ---- --init-from ----

void resume_init_settings(Run *r) {
    TrainConfig *c = &r->cfg;
    GtErr e = GT_ERR_INIT;
    char path[PATHLEN] = "";
    struct {
        int64_t step;
        char sha[65];
    } rec = {0, ""};
    if (r->w->rank == 0) {
        hid_t f = ckpt_resolve_open_e(c->init_from, "--init-from", path, sizeof path, &e);
        if (f >= 0 && !h5_attr_read_int(f, "step", &rec.step))
            gt_err(&e, GT_EXIT_USAGE, "--init-from '%s': root attribute 'step' missing (not a gpt-train checkpoint?)",
                   path);
        h5_close(f, &e);
        // The file's own digest: which weights a fine-tune began from, whatever becomes of the source run.
        if (!gt_failed(&e) && sha256_file(path, rec.sha) < 0)
            gt_err(&e, GT_EXIT_USAGE, "--init-from '%s': cannot read: %s", path, strerror(errno));
    }
    comm_agree_e(&e);
    comm_bcast(path, sizeof path);
    comm_bcast(&rec, sizeof rec);
    // Every rank reads the model's shape and tokenizer (each must see the file).
    GPTConfig ck;
    Tokenizer tok;
    memset(&tok, 0, sizeof tok);
    hid_t f = ckpt_open_e(path, "--init-from", &e);
    ckpt_read_model_config_e(f, &ck, path, &e);
    vocab_read_group_e(f, &tok, path, &e);
    h5_close(f, &e);
    comm_agree_local_e(&e);
    // The model's shape and tokenizer are the checkpoint's; the training settings (dropout,
    // the schedule, ...) are this run's own.
    struct {
        const char *name;
        int have, *want;
    } shape[] = {{"n-layer", ck.n_layer, &c->n_layer},       {"n-head", ck.n_head, &c->n_head},
                 {"n-embd", ck.n_embd, &c->n_embd},          {"block-size", ck.block_size, &c->block_size},
                 {"vocab-size", ck.vocab_size, &c->vocab_size}};
    for (int i = 0; i < 5 && !gt_failed(&e); i++) {
        if (!config_given(c, shape[i].name)) *shape[i].want = shape[i].have;
        else if (*shape[i].want != shape[i].have)
            gt_err(&e, GT_EXIT_USAGE,
                   "--%s %d contradicts --init-from '%s', which has %s %d: a fine-tune takes the model shape and the "
                   "tokenizer from its checkpoint (drop the flag)",
                   shape[i].name, *shape[i].want, path, shape[i].name, shape[i].have);
    }
    if (!gt_failed(&e) && config_given(c, "pattern") && strcmp(tokenizer_pattern(c->pattern), tok.pattern) != 0)
        gt_err(&e, GT_EXIT_USAGE, "--pattern '%s' contradicts --init-from '%s', whose tokenizer splits with another "
               "pattern: a fine-tune takes the tokenizer from its checkpoint (drop the flag)", c->pattern, path);
    if (!gt_failed(&e) && c->doc_separator && tokenizer_special_id(&tok, c->doc_separator) < 0) {
        char shown[256];
        gt_err(&e, GT_EXIT_USAGE, "--doc-separator '%s' is not a special token of --init-from '%s' (its tokenizer has "
               "%d): a fine-tune's text is encoded with the checkpoint's tokenizer",
               utf8_escape(shown, sizeof shown, c->doc_separator, 0), path, tok.n_special);
    }
    if (!gt_failed(&e)) {
        free(c->pattern);
        c->pattern = gt_strdup(tok.pattern);
        free(c->init_from);
        c->init_from = gt_strdup(path);
        c->init_step = rec.step;
        free(c->init_sha256);
        c->init_sha256 = gt_strdup(rec.sha);
    }
    tokenizer_free(&tok);
    comm_agree_e(&e);
}

// The whole /tokenizer of the checkpoint (the run's own, or --init-from's) against the tokens
// file's: a tokens.h5 of another vocabulary, even of the same size, would feed ids that mean
// other tokens.
void resume_check_tokenizer(Run *r) {
    const TrainConfig *c = &r->cfg;
    const char *ckpt = c->resume ? r->ckpt_path : c->init_from;
    GtErr e = GT_ERR_INIT;
    if (r->w->rank == 0) {
        Tokenizer ck;
        memset(&ck, 0, sizeof ck);
        hid_t cf = ckpt_open_e(ckpt, c->resume ? "--resume: checkpoint" : "--init-from", &e);
        vocab_read_group_e(cf, &ck, ckpt, &e);
        h5_close(cf, &e);
        char why[256];
        if (!gt_failed(&e) && tokenizer_difference(&ck, &r->tok, why, sizeof why) && c->resume) {
            char run_tokens[PATHLEN];
            snprintf(run_tokens, sizeof run_tokens, "%s/tokens.h5", r->cfg.out);
            int have_run_tokens = access(run_tokens, R_OK) == 0 && strcmp(run_tokens, r->tokens_path) != 0;
            gt_err(&e, GT_EXIT_USAGE,
                   "--resume: --data %.2000s holds another tokenizer than checkpoint '%.2000s' (%s): its ids would "
                   "mean other tokens; resume with the tokens the run started with%s%.2000s%s",
                   r->data_text, r->ckpt_path, why, have_run_tokens ? " (--data " : "",
                   have_run_tokens ? run_tokens : "", have_run_tokens ? ")" : "");
        } else if (!gt_failed(&e)) {
            data_tokenizer_mismatch(ckpt, "--init-from", &ck, &r->tok, r->data_text, r->tokens_path, r->info.source, &e);
        }
        if (ck.pattern) tokenizer_free(&ck);
    }
    comm_agree_e(&e);
}

// The watchdog's note: where a stopped run continues from. While rank 0 writes a checkpoint
// the other ranks cannot know whether the write will finish (it may be what hangs): they
// name both.
static void note_checkpoint(const Run *r) {
    char note[256], last[64] = "none yet";
    if (r->known_ckpt_step >= 0) snprintf(last, sizeof last, "step %lld", r->known_ckpt_step);
    if (r->pending_ckpt_step >= 0)
        snprintf(note, sizeof note,
                 "RUN/latest names the last complete checkpoint: %s, or step %lld if rank 0 finished writing it; "
                 "continue with --resume",
                 last, r->pending_ckpt_step);
    else if (r->known_ckpt_step >= 0)
        snprintf(note, sizeof note, "RUN/latest names the last complete checkpoint, %s; continue with --resume", last);
    else
        snprintf(note, sizeof note, "no checkpoint was written yet");
    wd_set_note(note);
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
    if (!gpt2_set_precision(&r->m, r->prec, r->err, sizeof r->err))  // main checked the CPU already
        gt_fail(GT_EXIT_RUNTIME, "%s", r->err);
    gpt2_alloc_activations(&r->m, c->batch_size, c->block_size);
    adamw_init(&r->opt, r->m.num_params);
    r->ac = (AdamWConfig){(float)c->lr, (float)c->beta1, (float)c->beta2, (float)c->eps, (float)c->weight_decay};
    r->sched = LR_COSINE;
    lr_schedule_parse(c->lr_schedule, &r->sched);
    st->best_val_loss = INFINITY;
    r->old_world = size;
    r->last_ckpt_step = -1;
    r->known_ckpt_step = r->pending_ckpt_step = -1;
    r->agree = gt_calloc((size_t)size * 2, sizeof(double), "loss agreement");
    if (!c->resume && !c->init_from) {
        if (rank == 0) gpt2_init_weights(&r->m, (uint64_t)c->seed);
        bcast_floats(r->m.params, r->m.num_params);
        gpt2_params_changed(&r->m);
        return;
    }
    if (!c->resume) {
        // A fine-tune: the weights (and with --init-optimizer the moments and their step count,
        // which the bias correction needs) of --init-from; step 0 and a fresh state otherwise.
        GtErr e = GT_ERR_INIT;
        if (rank == 0) {
            TrainState src;
            hid_t cf = ckpt_open_e(c->init_from, "--init-from", &e);
            ckpt_read_tensors_e(cf, "model", &r->m, r->m.params, c->init_from, &e);
            if (c->init_optimizer) {
                ckpt_read_tensors_e(cf, "optimizer/m", &r->m, r->opt.m, c->init_from, &e);
                ckpt_read_tensors_e(cf, "optimizer/v", &r->m, r->opt.v, c->init_from, &e);
                if (train_state_read_e(cf, c->init_from, &src, &e) == 0) r->opt.t = src.adam_t;
            }
            h5_close(cf, &e);
        }
        comm_agree_e(&e);
        bcast_floats(r->m.params, r->m.num_params);
        gpt2_params_changed(&r->m);
        if (c->init_optimizer) {
            bcast_floats(r->opt.m, r->m.num_params);
            bcast_floats(r->opt.v, r->m.num_params);
            comm_bcast(&r->opt.t, sizeof r->opt.t);
        }
        return;
    }
    // Rank 0 reads and checks everything (a damaged tensor is found here); the others wait
    // for its verdict, then receive the state.
    GtErr e = GT_ERR_INIT;
    if (rank == 0) {
        hid_t cf = ckpt_open_e(r->ckpt_path, "--resume: checkpoint", &e);
        ckpt_read_tensors_e(cf, "model", &r->m, r->m.params, r->ckpt_path, &e);
        ckpt_read_tensors_e(cf, "optimizer/m", &r->m, r->opt.m, r->ckpt_path, &e);
        ckpt_read_tensors_e(cf, "optimizer/v", &r->m, r->opt.v, r->ckpt_path, &e);
        train_state_read_e(cf, r->ckpt_path, st, &e);
        h5_close(cf, &e);
    }
    comm_agree_e(&e);
    bcast_state_scalars(st);
    r->old_world = st->world_size;
    r->opt.t = st->adam_t;
    bcast_floats(r->m.params, r->m.num_params);
    gpt2_params_changed(&r->m);
    bcast_floats(r->opt.m, r->m.num_params);
    bcast_floats(r->opt.v, r->m.num_params);
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", r->ckpt_path);
    r->last_ckpt_step = st->step;
    r->known_ckpt_step = st->step;
    note_checkpoint(r);
    // The cursor is global, so any rank count continues exactly; only a /train of another
    // length (or an older checkpoint's per-rank cursors) maps it to the same fraction.
    int64_t pos = st->data_pos;
    if ((size_t)st->data_windows != r->dl.n_windows)
        pos = (int64_t)((__int128)st->data_pos * (__int128)r->dl.n_windows / st->data_windows);
    dataloader_seek(&r->dl, st->data_epoch, pos);
}

// Rank 0 writes the checkpoint; then all agree on how that went (a full disk ends every rank
// with its one message).
void resume_save_checkpoint(Run *r) {
    GtErr e = GT_ERR_INIT;
    if (r->w->rank != 0) {
        r->pending_ckpt_step = r->st.step;
        note_checkpoint(r);
    }
    if (r->w->rank == 0) {
        TrainState s = r->st;
        s.world_size = r->w->size;
        s.adam_t = r->opt.t;
        s.data_epoch = r->dl.epoch;
        s.data_pos = r->dl.pos;
        s.data_windows = (int64_t)r->dl.n_windows;
        s.data_per_rank = 0;
        double t0 = comm_time();
        wd_local_begin("the checkpoint write");
        faults_checkpoint_write(&r->faults, r->st.step);
        // The last checkpoint known to be good stays, however many come after it.
        if (train_state_save_e(r->cfg.out, &r->cfg, &r->m, &r->opt, &s, &r->tok, r->cfg.keep_ckpts,
                               *r->good_ckpt ? r->good_ckpt : NULL, r->last_ckpt, &e) == 0)
            log_line(&r->lg, "checkpoint %s (%.2f s)", r->last_ckpt, comm_time() - t0);
        wd_local_end();
    }
    comm_agree_e_in(&e, "the checkpoint agreement");
    r->last_ckpt_step = r->st.step;
    r->known_ckpt_step = r->st.step;
    r->pending_ckpt_step = -1;
    note_checkpoint(r);
}
