// train_main.c - gpt-train: data-parallel GPT-2 training under mpirun (docs/training.md).
//
// Every rank holds the whole model and reads only its shard of /train. Per step: forward
// and backward on each micro-batch, gradients averaged over the ranks in buckets that
// travel while backward still runs, clip, AdamW; so all ranks keep identical weights.
// Rank 0 alone writes files (log, metrics, checkpoints, attention.h5). Bad input is agreed
// on collectively (comm_agree) so every rank exits 1 together with one message.
#define _GNU_SOURCE
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adamw.h"
#include "allreduce.h"
#include "attention_io.h"
#include "checkpoint.h"
#include "comm.h"
#include "config.h"
#include "dataloader.h"
#include "error.h"
#include "sha256.h"
#include "gpt2.h"
#include "h5util.h"
#include "log.h"
#include "rng.h"
#include "shard.h"
#include "signals.h"
#include "tokenizer.h"
#include "tokens_io.h"
#include "train_state.h"
#include "vocab_io.h"
#include "utf8.h"

#define PATHLEN 4200

// Everything one run holds; every rank has its own.
typedef struct {
    TrainConfig cfg;
    const Comm *w;
    char tokens_path[PATHLEN];
    char err[16384];          // the message of a failed check, for comm_agree
    // data
    hid_t tf;                 // tokens.h5, open for the whole run (its /tokenizer goes into checkpoints)
    TokensInfo info;
    Tokenizer tok;            // rank 0 only (the attention probe)
    uint32_t *train_tok;      // this rank's shard of /train
    uint32_t *val_tok;        // this rank's eval windows of /val
    size_t ev_count, ev_total;
    DataLoader dl;
    int *inputs, *targets;    // (B, T)
    // model and state
    GPTConfig mc;
    GPT2 m;
    AdamW opt;
    AdamWConfig ac;
    LRSchedule sched;
    GradReducer red;
    TrainState st;
    char ckpt_path[PATHLEN];  // resumed from
    int64_t old_world;        // ranks of the checkpoint resumed from
    char last_ckpt[PATHLEN];
    long long last_ckpt_step;
    int64_t *cursors;         // (size, 3) gathered on rank 0 for checkpoints
    // rank 0's writers
    Logger lg;
    AttnWriter *aw;
    char resume_cmd[4096];
    // fault hooks for the tests (environment): a NaN gradient on rank 0 at step k; SIGUSR1 to
    // the last rank at step k; the last rank's weights nudged after step k (for --check-sync)
    long long fault_nan_step, fault_signal_step, fault_desync_step, fault_explode_step;
} Run;

// ----------------------------------------------------------------------------
// setup helpers

static int mkdir_p(const char *path) {
    char buf[PATHLEN];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
    struct stat st;
    return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

// Rank 0 creates RUN; a run that already holds a checkpoint is only continued with --resume.
static void prepare_run_dir(Run *r) {
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

// A cheap look at an HDF5 input before the real reader, so a file one rank cannot see ends
// the job with one message (comm_agree) instead of an abort. Returns NULL when fine.
static const char *precheck_h5(const char *path, const char *format, const char *flag, char *err, size_t n) {
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, n, "%s '%s': %s", flag, path, strerror(errno));
        return err;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(err, n, "%s '%s': is a directory", flag, path);
        return err;
    }
    if (access(path, R_OK) != 0) {
        snprintf(err, n, "%s '%s': %s", flag, path, strerror(errno));
        return err;
    }
    if (H5Fis_hdf5(path) <= 0) {
        snprintf(err, n, "%s '%s': not an HDF5 file (or its header is damaged)", flag, path);
        return err;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        snprintf(err, n, "%s '%s': cannot be opened as HDF5 (truncated or damaged?)", flag, path);
        return err;
    }
    char *fmt = h5_attr_read_str(f, "format");
    H5Fclose(f);
    if (!fmt || strcmp(fmt, format) != 0) {
        snprintf(err, n, "%s '%s': %s%s%s, expected a '%s' file", flag, path, fmt ? "format is '" : "not a gpt-train file",
                 fmt ? fmt : "", fmt ? "'" : "", format);
        free(fmt);
        return err;
    }
    free(fmt);
    return NULL;
}

// Test hook for the fault suite: GT_FAULT_OPEN_RANK=r makes rank r look for its data file
// under a name that does not exist, as when a node does not see a shared filesystem.
static const char *data_path_for_rank(const char *path, int rank, char *buf, size_t n) {
    const char *f = getenv("GT_FAULT_OPEN_RANK");
    if (f && *f && atoi(f) == rank) {
        snprintf(buf, n, "%.4000s.not-on-rank-%d", path, rank);
        return buf;
    }
    return path;
}

// Does RUN/tokens.h5 come from this text (same sha256) with this tokenizer setting?
static int tokens_reusable(const char *tokens_path, const char *vocab_path, const char *sha, int vocab_size,
                           const char *pattern) {
    if (H5Fis_hdf5(tokens_path) <= 0 || H5Fis_hdf5(vocab_path) <= 0) return 0;
    int ok = 0;
    hid_t f = H5Fopen(tokens_path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return 0;
    char *fmt = h5_attr_read_str(f, "format");
    if (fmt && !strcmp(fmt, GT_FORMAT_TOKENS) && h5_exists(f, "train") && h5_exists(f, "tokenizer")) {
        hid_t d = H5Dopen2(f, "train", H5P_DEFAULT);
        char *s = d >= 0 ? h5_attr_read_str(d, "source_sha256") : NULL;
        hid_t g = H5Gopen2(f, "tokenizer", H5P_DEFAULT);
        char *pat = g >= 0 ? h5_attr_read_str(g, "pattern") : NULL;
        int64_t vs = 0;
        int have_vs = g >= 0 && h5_attr_read_int(g, "vocab_size", &vs);
        // A tokenizer may stop early (no pair left twice), so fewer tokens also match.
        ok = s && !strcmp(s, sha) && pat && !strcmp(pat, pattern) && have_vs && vs <= vocab_size;
        free(s);
        free(pat);
        if (g >= 0) H5Gclose(g);
        if (d >= 0) H5Dclose(d);
    }
    free(fmt);
    H5Fclose(f);
    return ok;
}

// --data FILE.txt: rank 0 trains the tokenizer and encodes into RUN/vocab.h5, RUN/tokens.h5
// (or reuses them); the others sleep until it is done.
static void tokenize_text(Run *r) {
    const TrainConfig *c = &r->cfg;
    char vocab_path[PATHLEN];
    snprintf(vocab_path, sizeof vocab_path, "%s/vocab.h5", c->out);
    snprintf(r->tokens_path, sizeof r->tokens_path, "%s/tokens.h5", c->out);
    int status = 0;
    if (r->w->rank == 0) {
        double t0 = comm_time();
        char sha[65];
        int64_t bytes = sha256_file(c->data, sha);
        // An unknown name or a bad regex ends the job here, before anyone waits long.
        const char *pattern = tokenizer_pattern_checked(c->pattern, "--pattern");
        if (bytes < 0) {
            snprintf(r->err, sizeof r->err, "--data '%s': cannot read: %s", c->data, strerror(errno));
            status = 1;
        } else if (bytes == 0) {
            snprintf(r->err, sizeof r->err, "--data '%s': file is empty", c->data);
            status = 1;
        } else if (tokens_reusable(r->tokens_path, vocab_path, sha, c->vocab_size, pattern)) {
            printf("data: reusing %s (made from '%s', sha256 %.12s...)\n", r->tokens_path, c->data, sha);
        } else {
            FILE *f = fopen(c->data, "rb");
            char *text = f ? gt_malloc((size_t)bytes + 1, "--data text") : NULL;
            size_t got = f ? fread(text, 1, (size_t)bytes, f) : 0;
            if (f) fclose(f);
            size_t bad = 0;
            if (!f || got != (size_t)bytes) {
                snprintf(r->err, sizeof r->err, "--data '%s': cannot read: %s", c->data, strerror(errno));
                status = 1;
            } else if (!utf8_validate(text, got, &bad)) {
                snprintf(r->err, sizeof r->err,
                         "--data '%s': neither a tokens.h5 file nor UTF-8 text (invalid byte at offset %zu)", c->data,
                         bad);
                status = 1;
            } else {
                text[got] = '\0';
                printf("data: training a %d-token tokenizer on '%s' (%lld bytes, pattern %s)\n", c->vocab_size,
                       c->data, (long long)bytes, c->pattern);
                fflush(stdout);
                Tokenizer tok;
                memset(&tok, 0, sizeof tok);
                tokenizer_train(&tok, text, got, c->vocab_size, pattern, NULL, 0, c->threads, 0);
                tokenizer_set_threads(&tok, c->threads);
                vocab_save(vocab_path, &tok, 1);
                uint32_t *ids = NULL;
                size_t n = 0, cap = 0;
                tokenizer_encode(&tok, text, got, &ids, &n, &cap);
                tokens_save(r->tokens_path, &tok, ids, n, c->val_fraction, c->data, bytes, sha, 1);
                printf("data: %s (%d tokens) and %s (%zu tokens) in %.1f s\n", vocab_path, tok.vocab_size,
                       r->tokens_path, n, comm_time() - t0);
                free(ids);
                tokenizer_free(&tok);
            }
            free(text);
        }
        fflush(stdout);
    }
    status = comm_wait_status(status);
    if (status) comm_agree(r->w->rank == 0 ? r->err : "tokenizing failed on rank 0", GT_EXIT_USAGE);
}

// Decides tokens.h5 vs text and leaves the tokens file's path in r->tokens_path.
static void prepare_data(Run *r) {
    const TrainConfig *c = &r->cfg;
    int kind = 0;  // 1 HDF5, 2 text
    const char *msg = NULL;
    if (r->w->rank == 0) {
        struct stat st;
        if (stat(c->data, &st) != 0) {
            snprintf(r->err, sizeof r->err, "--data '%s': %s", c->data, strerror(errno));
            msg = r->err;
        } else if (S_ISDIR(st.st_mode)) {
            snprintf(r->err, sizeof r->err, "--data '%s': is a directory, expected tokens.h5 or a text file", c->data);
            msg = r->err;
        } else {
            kind = H5Fis_hdf5(c->data) > 0 ? 1 : 2;
        }
    }
    comm_agree(msg, GT_EXIT_USAGE);
    comm_bcast(&kind, sizeof kind);
    if (kind == 1) snprintf(r->tokens_path, sizeof r->tokens_path, "%s", c->data);
    else tokenize_text(r);
}

// ----------------------------------------------------------------------------
// training helpers

static uint64_t dropout_key(uint64_t seed, long long step, int rank, int micro) {
    return rng_site_key(rng_site_key(rng_site_key(seed ^ 0xD809D809ULL, (uint64_t)step), (uint64_t)rank),
                        (uint64_t)micro);
}

static uint64_t params_checksum(const float *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;  // FNV-1a over the bits: any difference shows
    const uint32_t *u = (const uint32_t *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ u[i]) * 1099511628211ULL;
    return h;
}

static void check_sync(const Run *r, const GPT2 *m, long long step) {
    uint64_t h = params_checksum(m->params, m->num_params), lo, hi;
    MPI_CHECK(MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, r->w->comm));
    MPI_CHECK(MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, r->w->comm));
    if (lo != hi) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "--check-sync: weights differ across ranks after step %lld (parameter checksums %016llx to "
                 "%016llx); the gradient averaging is broken",
                 step, (unsigned long long)lo, (unsigned long long)hi);
        comm_agree(msg, GT_EXIT_RUNTIME);
    }
}

// Mean cross-entropy over this rank's eval windows, reduced over all ranks
// (docs/training.md, evaluation).
static double evaluate(const Run *r, GPT2 *m, const uint32_t *val, size_t nwin, int *inputs, int *targets) {
    int B = r->cfg.batch_size, T = r->cfg.block_size;
    double acc[2] = {0, 0};  // sum of per-window mean losses, windows
    for (size_t w0 = 0; w0 < nwin; w0 += (size_t)B) {
        int nb = (int)(nwin - w0 < (size_t)B ? nwin - w0 : (size_t)B);
        for (int b = 0; b < nb; b++) {
            const uint32_t *s = val + (w0 + (size_t)b) * (size_t)T;
            for (int t = 0; t < T; t++) {
                inputs[b * T + t] = (int)s[t];
                targets[b * T + t] = (int)s[t + 1];
            }
        }
        float loss = gpt2_forward(m, inputs, targets, nb, T, 0, 0);
        acc[0] += (double)loss * nb;
        acc[1] += nb;
    }
    double tot[2];
    MPI_CHECK(MPI_Allreduce(acc, tot, 2, MPI_DOUBLE, MPI_SUM, r->w->comm));
    return tot[0] / tot[1];
}

// Probe ids for attention.h5: --attn-prompt encoded, else the first block_size tokens of /val.
// This rank's slice of /train or /val (an HDF5 hyperslab), with every id checked against the
// vocabulary. Like tokens_read, but returns the problem instead of exiting, so the ranks can
// agree on it: the bad id may sit in one rank's shard only. NULL when fine.
static const char *read_tokens(hid_t file, const char *split, size_t start, size_t count, uint32_t *out,
                               const char *path, int vocab_size, char *err, size_t n) {
    if (count == 0) return NULL;
    hid_t d = H5Dopen2(file, split, H5P_DEFAULT);
    hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
    hsize_t off[1] = {start}, cnt[1] = {count};
    hid_t ms = H5Screate_simple(1, cnt, NULL);
    int ok = sp >= 0 && ms >= 0 && H5Sselect_hyperslab(sp, H5S_SELECT_SET, off, NULL, cnt, NULL) >= 0 &&
             H5Dread(d, H5T_NATIVE_UINT32, ms, sp, H5P_DEFAULT, out) >= 0;
    if (ms >= 0) H5Sclose(ms);
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    if (!ok) {
        snprintf(err, n, "--data '%.4000s': /%s[%zu:%zu] cannot be read (truncated or damaged file?)", path, split, start,
                 start + count);
        return err;
    }
    for (size_t i = 0; i < count; i++)
        if (out[i] >= (uint32_t)vocab_size) {
            snprintf(err, n,
                     "--data '%.4000s': /%s[%zu] = %u is not a valid token id: its /tokenizer has only %d tokens "
                     "(tokens and vocabulary disagree; encode the text again with this vocabulary)",
                     path, split, start + i, out[i], vocab_size);
            return err;
        }
    return NULL;
}

static int32_t *probe_ids(Run *r, const Tokenizer *tok, hid_t tf, size_t n_val, int *T_out) {
    const TrainConfig *c = &r->cfg;
    int T = c->block_size;
    int32_t *ids = NULL;
    if (c->attn_prompt) {
        uint32_t *u = NULL;
        size_t n = 0, cap = 0;
        tokenizer_encode(tok, c->attn_prompt, strlen(c->attn_prompt), &u, &n, &cap);
        if (n == 0) {
            snprintf(r->err, sizeof r->err, "--attn-prompt '%s': the text encodes to no tokens", c->attn_prompt);
            free(u);
            return NULL;
        }
        if (n > (size_t)T) {
            snprintf(r->err, sizeof r->err,
                     "--attn-prompt: %zu tokens, longer than --block-size %d; shorten the text or raise --block-size", n, T);
            free(u);
            return NULL;
        }
        ids = gt_malloc(n * sizeof *ids, "probe");
        for (size_t i = 0; i < n; i++) ids[i] = (int32_t)u[i];
        free(u);
        *T_out = (int)n;
        return ids;
    }
    size_t n = n_val < (size_t)T ? n_val : (size_t)T;
    if (n == 0) {
        snprintf(r->err, sizeof r->err, "--attn-every: /val of '%s' is empty; give --attn-prompt TEXT", r->tokens_path);
        return NULL;
    }
    uint32_t *u = gt_malloc(n * sizeof *u, "probe");
    tokens_read(tf, "val", 0, n, u, r->tokens_path);
    ids = gt_malloc(n * sizeof *ids, "probe");
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)u[i];
    free(u);
    *T_out = (int)n;
    return ids;
}

// Rank 0 gathers every rank's data cursor and writes the checkpoint (collective).
static void save_checkpoint(Run *r) {
    int size = r->w->size;
    int64_t mine[3] = {r->dl.epoch, r->dl.pos, (int64_t)r->dl.n_windows};
    MPI_CHECK(MPI_Gather(mine, 3, MPI_INT64_T, r->cursors, 3, MPI_INT64_T, 0, r->w->comm));
    r->last_ckpt_step = r->st.step;
    if (r->w->rank != 0) return;
    TrainState s = r->st;
    s.world_size = size;
    s.adam_t = r->opt.t;
    s.cursor_epoch = gt_malloc((size_t)size * sizeof(int64_t), "cursors");
    s.cursor_pos = gt_malloc((size_t)size * sizeof(int64_t), "cursors");
    s.cursor_windows = gt_malloc((size_t)size * sizeof(int64_t), "cursors");
    for (int i = 0; i < size; i++) {
        s.cursor_epoch[i] = r->cursors[3 * i];
        s.cursor_pos[i] = r->cursors[3 * i + 1];
        s.cursor_windows[i] = r->cursors[3 * i + 2];
    }
    double t0 = comm_time();
    train_state_save(r->cfg.out, &r->cfg, &r->m, &r->opt, &s, r->tf, r->cfg.keep_ckpts, r->last_ckpt);
    log_line(&r->lg, "checkpoint %s (%.2f s)", r->last_ckpt, comm_time() - t0);
    train_state_free(&s);
}

static void bcast_floats(float *p, size_t n) { comm_bcast(p, n * sizeof(float)); }

// ----------------------------------------------------------------------------

// The tokens file: checked by every rank (each must see it; one that cannot names itself),
// then opened.
static void open_tokens(Run *r) {
    char buf[PATHLEN];
    const char *path = data_path_for_rank(r->tokens_path, r->w->rank, buf, sizeof buf);
    comm_agree_local(precheck_h5(path, GT_FORMAT_TOKENS, "--data", r->err, sizeof r->err), GT_EXIT_USAGE);
    r->tf = tokens_open(path, &r->info, r->w->rank == 0 ? &r->tok : NULL, "--data");
}

// --resume: finds RUN/latest, fills in every setting this command line leaves out from its
// /config, and refuses another model shape or vocabulary.
static void resume_settings(Run *r) {
    TrainConfig *c = &r->cfg;
    const char *msg = NULL;
    if (r->w->rank == 0) {
        if (!train_state_latest(c->out, r->ckpt_path, sizeof r->ckpt_path)) {
            snprintf(r->err, sizeof r->err,
                     "--resume: no checkpoint in '%s' (no '%s/latest'); run without --resume to start training", c->out,
                     c->out);
            msg = r->err;
        } else {
            msg = precheck_h5(r->ckpt_path, GT_FORMAT_CHECKPOINT, "--resume: checkpoint", r->err, sizeof r->err);
        }
    }
    comm_agree(msg, GT_EXIT_USAGE);
    comm_bcast(r->ckpt_path, sizeof r->ckpt_path);
    GPTConfig ck;
    hid_t cf = ckpt_open(r->ckpt_path, "--resume: checkpoint");
    ckpt_read_model_config(cf, &ck, r->ckpt_path);
    hid_t g = h5_group_open(cf, "config", r->ckpt_path);
    config_fill_from_attrs(c, g);
    H5Gclose(g);
    H5Fclose(cf);
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

// This rank's shard of /train and eval windows of /val, after the checks all ranks agree on.
static void load_tokens(Run *r) {
    const TrainConfig *c = &r->cfg;
    const int B = c->batch_size, T = c->block_size, rank = r->w->rank, size = r->w->size;
    comm_agree(shard_check(r->info.n_train, size, B, T, r->tokens_path, r->err, sizeof r->err) ? r->err : NULL,
               GT_EXIT_USAGE);
    size_t ev_first;
    eval_windows(r->info.n_val, T, (size_t)c->eval_batches * (size_t)B * (size_t)size, rank, size, &ev_first,
                 &r->ev_count, &r->ev_total);
    if (r->ev_total == 0) {
        snprintf(r->err, sizeof r->err,
                 "'%.4000s': /val has %zu tokens, fewer than --block-size + 1 = %d needed for one eval window; "
                 "use a larger --val-fraction when tokenizing, or a smaller --block-size",
                 r->tokens_path, r->info.n_val, T + 1);
        comm_agree(r->err, GT_EXIT_USAGE);
    }
    Shard sh = shard_of(r->info.n_train, rank, size);
    r->train_tok = gt_malloc(sh.count * sizeof(uint32_t), "this rank's shard of /train");
    size_t val_n = r->ev_count ? r->ev_count * (size_t)T + 1 : 0;
    r->val_tok = gt_malloc((val_n ? val_n : 1) * sizeof(uint32_t), "eval windows of /val");
    const char *bad = read_tokens(r->tf, "train", sh.start, sh.count, r->train_tok, r->tokens_path,
                                  r->info.vocab_size, r->err, sizeof r->err);
    if (!bad)
        bad = read_tokens(r->tf, "val", ev_first * (size_t)T, val_n, r->val_tok, r->tokens_path, r->info.vocab_size,
                          r->err, sizeof r->err);
    comm_agree(bad, GT_EXIT_USAGE);
    dataloader_init(&r->dl, r->train_tok, sh.count, T, (uint64_t)c->seed, rank);
    r->inputs = gt_malloc((size_t)B * T * sizeof(int), "inputs");
    r->targets = gt_malloc((size_t)B * T * sizeof(int), "targets");
}

// Model and optimizer: fresh (rank 0's initial weights broadcast) or from the checkpoint,
// which rank 0 reads and broadcasts; then each rank's data cursor.
static void build_state(Run *r) {
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
    r->cursors = gt_calloc((size_t)size * 3, sizeof(int64_t), "data cursors");
    if (!c->resume) {
        if (rank == 0) gpt2_init_weights(&r->m, (uint64_t)c->seed);
        bcast_floats(r->m.params, r->m.num_params);
        return;
    }
    if (rank == 0) {
        hid_t cf = ckpt_open(r->ckpt_path, "--resume: checkpoint");
        ckpt_read_tensors(cf, "model", &r->m, r->m.params, r->ckpt_path);
        ckpt_read_tensors(cf, "optimizer/m", &r->m, r->opt.m, r->ckpt_path);
        ckpt_read_tensors(cf, "optimizer/v", &r->m, r->opt.v, r->ckpt_path);
        train_state_read(cf, r->ckpt_path, st);
        H5Fclose(cf);
        r->old_world = st->world_size;
    }
    comm_bcast(&r->old_world, sizeof r->old_world);
    long long sc[6] = {st->step, st->tokens_seen, st->skipped_steps, st->adam_t, st->recent_n, st->bad_in_row};
    comm_bcast(sc, sizeof sc);
    comm_bcast(&st->best_val_loss, sizeof st->best_val_loss);
    comm_bcast(&st->recent_loss, sizeof st->recent_loss);
    st->step = sc[0];
    st->tokens_seen = sc[1];
    st->skipped_steps = sc[2];
    r->opt.t = st->adam_t = sc[3];
    st->recent_n = sc[4];
    st->bad_in_row = sc[5];
    size_t nw = (size_t)r->old_world;
    if (rank != 0) {
        st->cursor_epoch = gt_calloc(nw, sizeof(int64_t), "cursors");
        st->cursor_pos = gt_calloc(nw, sizeof(int64_t), "cursors");
        st->cursor_windows = gt_calloc(nw, sizeof(int64_t), "cursors");
    }
    comm_bcast(st->cursor_epoch, nw * sizeof(int64_t));
    comm_bcast(st->cursor_pos, nw * sizeof(int64_t));
    comm_bcast(st->cursor_windows, nw * sizeof(int64_t));
    bcast_floats(r->m.params, r->m.num_params);
    bcast_floats(r->opt.m, r->m.num_params);
    bcast_floats(r->opt.v, r->m.num_params);
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", r->ckpt_path);
    r->last_ckpt_step = st->step;
    if (r->old_world == size) {
        dataloader_seek(&r->dl, st->cursor_epoch[rank], st->cursor_pos[rank]);
    } else {
        // Another rank count: shards differ, so each rank continues at the mean fraction of
        // the epoch the old ranks had reached (the data order differs from here on).
        double frac = 0;
        for (size_t i = 0; i < nw; i++)
            frac += st->cursor_windows[i] > 0 ? (double)st->cursor_pos[i] / (double)st->cursor_windows[i] : 0;
        frac /= (double)nw;
        dataloader_seek(&r->dl, st->cursor_epoch[0], (int64_t)(frac * (double)r->dl.n_windows));
    }
}

// Rank 0's log (with the effective configuration), metrics, attention.h5; the reducer.
static void open_writers(Run *r, int argc, char **argv) {
    const TrainConfig *c = &r->cfg;
    const int rank = r->w->rank, size = r->w->size;
    Logger *lg = &r->lg;
    log_open(lg, c->out, rank, c->resume ? r->st.step : -1, c->steps);
    if (rank == 0) {
        printf("gpt-train %s: %d rank%s x %d thread%s\n", GT_VERSION, size, size == 1 ? "" : "s", c->threads,
               c->threads == 1 ? "" : "s");
        printf("# effective configuration (a valid --config file)\n");
        config_print(c, stdout);
        if (lg->log) {
            fprintf(lg->log, "# effective configuration\n");
            config_print(c, lg->log);
        }
    }
    log_line(lg, "data: %s: %zu train tokens (%zu%s per rank), %zu val tokens (%zu eval windows), vocab %d",
             r->tokens_path, r->info.n_train, r->info.n_train / (size_t)size,
             r->info.n_train % (size_t)size ? " or 1 more" : "", r->info.n_val, r->ev_total, r->info.vocab_size);
    log_line(lg, "model: %zu parameters (%.2f MB), %d layers, %d heads, %d embd, block %d; %lld tokens per step",
             r->m.num_params, r->m.num_params * 4.0 / 1e6, c->n_layer, c->n_head, c->n_embd, c->block_size,
             (long long)c->batch_size * c->block_size * c->grad_accum * size);
    if (c->resume) {
        log_line(lg, "resuming from %s at step %lld of %lld", r->ckpt_path, r->st.step, c->steps);
        if (r->old_world != size)
            log_line(lg, "note: the checkpoint was written by %lld ranks, this run has %d: each rank continues at "
                         "the same fraction of its epoch, but the data order differs from here on",
                     (long long)r->old_world, size);
    }
    if (c->attn_every > 0) {
        const char *msg = NULL;
        int32_t *probe = NULL;
        int Tp = 0;
        if (rank == 0 && !(probe = probe_ids(r, &r->tok, r->tf, r->info.n_val, &Tp))) msg = r->err;
        comm_agree(msg, GT_EXIT_USAGE);
        if (rank == 0) {
            char ap[PATHLEN];
            snprintf(ap, sizeof ap, "%s/attention.h5", c->out);
            r->aw = attn_writer_open(ap, &r->mc, c->attn_every, probe, Tp, &r->tok, !strcmp(c->attn_dtype, "float16"),
                                     c->resume ? r->st.step : -1);
        }
        free(probe);
    }
    // Buckets of about an eighth of the gradient (64 KiB to 4 MiB): small models still get a
    // few reductions in flight during backward, big ones a bucket per block or two.
    size_t bucket = r->m.num_params * sizeof(float) / 8;
    bucket = bucket < (64u << 10) ? (64u << 10) : bucket > (4u << 20) ? (4u << 20) : bucket;
    reducer_init(&r->red, r->w->comm, r->m.grads, r->m.num_params, bucket);
    // The command to resume with, for the message after a signal.
    for (int i = 0, len = 0; i < argc && len < (int)sizeof r->resume_cmd - 256; i++)
        if (strcmp(argv[i], "--resume") != 0)
            len += snprintf(r->resume_cmd + len, sizeof r->resume_cmd - (size_t)len,
                            strpbrk(argv[i], " \t'\"") ? " '%.200s'" : " %.200s", argv[i]);
    r->fault_nan_step = getenv("GT_FAULT_NAN_STEP") ? atoll(getenv("GT_FAULT_NAN_STEP")) : -1;
    r->fault_signal_step = getenv("GT_FAULT_SIGNAL_STEP") ? atoll(getenv("GT_FAULT_SIGNAL_STEP")) : -1;
    r->fault_desync_step = getenv("GT_FAULT_DESYNC_STEP") ? atoll(getenv("GT_FAULT_DESYNC_STEP")) : -1;
    r->fault_explode_step = getenv("GT_FAULT_EXPLODE_STEP") ? atoll(getenv("GT_FAULT_EXPLODE_STEP")) : -1;
}

// Where a bad step went wrong, for its message: the first tensor (nanoGPT name, with its
// block) whose averaged gradient holds a NaN or Inf; "" when every gradient is finite.
static void first_bad_tensor(const GPT2 *m, char *out, size_t n) {
    *out = '\0';
    for (int i = 0; i < m->n_specs; i++) {
        const float *g = m->grads + m->specs[i].offset;
        for (size_t j = 0; j < m->specs[i].numel; j++)
            if (!isfinite(g[j])) {
                if (m->specs[i].layer >= 0)
                    snprintf(out, n, " (first non-finite gradient: layer %d, %s)", m->specs[i].layer, m->specs[i].name);
                else
                    snprintf(out, n, " (first non-finite gradient: %s)", m->specs[i].name);
                return;
            }
    }
}

// For an exploding loss, where the gradient is: the tensor with the largest share of the
// squared gradient norm (clipping scales every tensor alike, so shares survive it).
static void largest_grad_tensor(const GPT2 *m, char *out, size_t n) {
    double total = 0, best = -1;
    int bi = 0;
    for (int i = 0; i < m->n_specs; i++) {
        const float *g = m->grads + m->specs[i].offset;
        double s = 0;
        for (size_t j = 0; j < m->specs[i].numel; j++) s += (double)g[j] * g[j];
        total += s;
        if (s > best) best = s, bi = i;
    }
    const ParamSpec *sp = &m->specs[bi];
    char layer[32] = "";
    if (sp->layer >= 0) snprintf(layer, sizeof layer, "layer %d, ", sp->layer);
    snprintf(out, n, " (largest gradient: %s%s, %.0f%% of the squared norm)", layer, sp->name,
             total > 0 ? 100.0 * best / total : 0.0);
}

// The mean of recent good losses that a spike is measured against: the plain mean of the
// first steps, then an exponential one with a memory of about SPIKE_MEMORY steps.
#define SPIKE_MEMORY 10
// --skip-bad-steps gives up after this many bad steps in a row: the weights themselves
// have diverged and skipping cannot bring them back.
#define GT_MAX_BAD_IN_ROW 20

static void recent_loss_add(TrainState *st, double loss) {
    long long n = st->recent_n < SPIKE_MEMORY ? st->recent_n + 1 : SPIKE_MEMORY;
    st->recent_loss += (loss - st->recent_loss) / (double)n;
    st->recent_n++;
}

// One optimizer step k (1-based): forward/backward per micro-batch, the averaged gradient,
// clip, AdamW. Returns the training loss averaged over the ranks; *norm the gradient norm.
// A bad step (NaN/Inf loss or norm, or a finite loss above --loss-spike times the recent
// mean) stops the run (exit 2), or with --skip-bad-steps skips the update.
static double train_step(Run *r, long long k, float *norm) {
    const TrainConfig *c = &r->cfg;
    const int B = c->batch_size, T = c->block_size, A = c->grad_accum, rank = r->w->rank, size = r->w->size;
    GPT2 *m = &r->m;
    TrainState *st = &r->st;
    r->ac.lr = lr_at(k - 1, c->steps, c->warmup, (float)c->lr, (float)c->min_lr, r->sched);
    // Fault suite: GT_FAULT_EXPLODE_STEP=k scales ln_f's weight by 100 for this step's
    // forward and backward on every rank (logits 100x: a huge finite loss), then restores it.
    const int C = m->config.n_embd;
    float *ln_f_saved = NULL;
    if (k == r->fault_explode_step) {
        ln_f_saved = gt_malloc((size_t)C * sizeof(float), "fault copy");
        memcpy(ln_f_saved, m->p.ln_f_w, (size_t)C * sizeof(float));
        for (int i = 0; i < C; i++) m->p.ln_f_w[i] *= 100.0f;
    }
    gpt2_zero_grad(m);
    double loss = 0;
    for (int micro = 0; micro < A; micro++) {
        dataloader_next(&r->dl, r->inputs, r->targets, B);
        float l = gpt2_forward(m, r->inputs, r->targets, B, T, 1, dropout_key((uint64_t)c->seed, k, rank, micro));
        loss += (double)l / A;
        // Only the last micro-batch's backward finishes the gradients: reduce once; the
        // reducer also drives its reductions between sub-layers (GPT2.progress). At the fault
        // suite's NaN step, everything waits for reducer_finish so the poison below is reduced.
        int last = micro == A - 1 && size > 1 && k != r->fault_nan_step;
        m->progress = last ? reducer_ready : NULL;
        m->progress_ctx = &r->red;
        gpt2_backward(m, 1.0f / (float)A, last ? reducer_ready : NULL, &r->red);
        m->progress = NULL;
    }
    if (ln_f_saved) {
        memcpy(m->p.ln_f_w, ln_f_saved, (size_t)C * sizeof(float));
        free(ln_f_saved);
    }
    if (k == r->fault_nan_step && rank == 0) {  // fault suite: GT_FAULT_NAN_LAYER=l poisons block l
        const char *fl = getenv("GT_FAULT_NAN_LAYER");
        int l = fl ? atoi(fl) : -1;
        if (l >= 0 && l < m->config.n_layer) m->g.h[l].c_attn_w[0] = NAN;
        else m->grads[0] = NAN;
    }
    reducer_finish(&r->red);
    if (size > 1) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, r->w->comm));
    loss /= size;
    *norm = grad_global_norm(m->grads, m->num_params);
    float clip = grad_clip_coef(*norm, (float)c->grad_clip);  // applied inside AdamW's pass
    // Every rank sees the same reduced figures and the same recent mean, so all take the same branch.
    // The reference a spike is measured against: the recent mean, but never more than the
    // loss of uniform guessing, ln V, so that a loss creeping up step by step is caught too,
    // and never less than 1 nat, where a model that fits its data almost perfectly has
    // batch-to-batch swings of several times its mean that are not explosions.
    int finite = isfinite(loss) && isfinite(*norm);
    double uniform = log((double)m->config.vocab_size);
    int by_recent = st->recent_n >= SPIKE_MEMORY && st->recent_loss < uniform;
    double ref = by_recent ? (st->recent_loss > 1.0 ? st->recent_loss : 1.0) : uniform;
    int spike = finite && c->loss_spike > 0 && loss > c->loss_spike * ref;
    if (finite && !spike) {
        adamw_step_scaled(&r->opt, m, m->params, m->grads, clip, &r->ac);
        recent_loss_add(st, loss);
        st->bad_in_row = 0;
        return loss;
    }
    char what[200], where[320];
    if (spike) {
        snprintf(what, sizeof what, "training loss %.4g is %.1fx %s (%.4g; --loss-spike %g): the loss is exploding",
                 loss, loss / ref, by_recent ? "the mean of recent steps" : "the loss of uniform guessing, ln V", ref,
                 c->loss_spike);
        largest_grad_tensor(m, where, sizeof where);
    } else {
        snprintf(what, sizeof what, "%s is %s", !isfinite(loss) ? "training loss" : "gradient norm",
                 isnan(!isfinite(loss) ? loss : *norm) ? "NaN" : "infinite");
        first_bad_tensor(m, where, sizeof where);
    }
    st->bad_in_row++;
    if (c->skip_bad_steps && st->bad_in_row <= GT_MAX_BAD_IN_ROW) {
        st->skipped_steps++;
        log_line(&r->lg, "step %lld: %s%s: update skipped (--skip-bad-steps; %lld skipped so far)", k, what, where,
                 st->skipped_steps);
        return loss;
    }
    if (rank == 0) {
        fprintf(stderr, "gpt-train: error: step %lld: %s%s; ", k, what, where);
        if (c->skip_bad_steps)
            fprintf(stderr, "%lld bad steps in a row: the weights themselves have diverged, skipping cannot help; ",
                    st->bad_in_row);
        fprintf(stderr, "stopping without saving. ");
        if (*r->last_ckpt)
            fprintf(stderr, "The last good checkpoint is %s (step %lld): resume from it with --resume, "
                            "perhaps with a lower --lr or --skip-bad-steps.\n",
                    r->last_ckpt, r->last_ckpt_step);
        else
            fprintf(stderr, "No checkpoint was written yet; try a lower --lr.\n");
    }
    log_close(&r->lg);
    comm_exit(GT_EXIT_RUNTIME);
}

// The loop: steps, then check-sync, attention probe, eval, log line, checkpoint and the
// agreed stop on a signal, each when due.
static void train(Run *r) {
    const TrainConfig *c = &r->cfg;
    const int rank = r->w->rank, size = r->w->size;
    TrainState *st = &r->st;
    const long long tokens_per_step = (long long)c->batch_size * c->block_size * c->grad_accum * size;
    double ms_sum = 0;
    int ms_n = 0;
    while (st->step < c->steps) {
        long long k = st->step + 1;
        double t0 = comm_time();
        float norm;
        double loss = train_step(r, k, &norm);
        st->step = k;
        st->tokens_seen += tokens_per_step;
        ms_sum += (comm_time() - t0) * 1000.0;
        ms_n++;

        if (k == r->fault_desync_step && rank == size - 1) r->m.params[0] += 1e-3f;
        if (c->check_sync && size > 1 && (k % c->log_every == 0 || k == c->steps)) check_sync(r, &r->m, k);
        if (r->aw && k % c->attn_every == 0) attn_probe_record(r->aw, &r->m, k, (float)loss);
        double val = NAN;
        if ((c->eval_every > 0 && k % c->eval_every == 0) || k == c->steps) {
            val = evaluate(r, &r->m, r->val_tok, r->ev_count, r->inputs, r->targets);
            if (val < st->best_val_loss) st->best_val_loss = val;
        }
        if (k % c->log_every == 0 || k == c->steps || !isnan(val)) {
            double ms = ms_sum / ms_n;
            MetricsRow row = {k, st->tokens_seen, loss, val, r->ac.lr, norm, ms, tokens_per_step / (ms / 1000.0)};
            log_metrics(&r->lg, &row);
            ms_sum = 0;
            ms_n = 0;
        } else {
            log_progress(&r->lg, k, loss, ms_sum / ms_n);
        }

        if (k == r->fault_signal_step && rank == size - 1) raise(SIGUSR1);
        int sig = signals_pending();
        if (size > 1) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &sig, 1, MPI_INT, MPI_MAX, r->w->comm));
        if ((c->ckpt_every > 0 && k % c->ckpt_every == 0) || k == c->steps || sig) save_checkpoint(r);
        if (sig) {
            log_line(&r->lg, "stopped by %s after step %lld; checkpoint %s. Resume with:\n  mpirun -np %d%s --resume",
                     signals_name(sig), k, r->last_ckpt, size, r->resume_cmd);
            break;
        }
    }
    if (size > 1)
        log_line(&r->lg,
                 "allreduce: %.1f%% of the gradient reduced behind backward; %.1f ms/step waited after it "
                 "(one blocking allreduce: %.1f ms); %.2f MB sent per rank per step",
                 100.0 * reducer_hidden_share(&r->red), reducer_exposed_ms(&r->red), 1000.0 * r->red.blocking_s,
                 reducer_bytes_sent(&r->red) / 1e6);
    if (st->step >= c->steps)
        log_line(&r->lg, "done: step %lld, best val loss %.4f, %lld tokens seen%s", st->step, st->best_val_loss,
                 st->tokens_seen, st->skipped_steps ? " (some steps skipped)" : "");
}

static void run_free(Run *r) {
    if (r->aw) attn_writer_close(r->aw);
    log_close(&r->lg);
    reducer_free(&r->red);
    dataloader_free(&r->dl);
    adamw_free(&r->opt);
    gpt2_free(&r->m);
    free(r->inputs);
    free(r->targets);
    free(r->train_tok);
    free(r->val_tok);
    free(r->cursors);
    train_state_free(&r->st);
    H5Fclose(r->tf);
    tokens_info_free(&r->info);
    if (r->w->rank == 0) tokenizer_free(&r->tok);
    config_free(&r->cfg);
}

int main(int argc, char **argv) {
    gt_set_progname("gpt-train");
    static Run run;  // large (paths, messages): not on the stack
    Run *r = &run;
    r->w = comm_init(&argc, &argv);
    h5_quiet();
    TrainConfig *c = &r->cfg;
    char *help = NULL;
    int prc = config_parse(c, argc, argv, r->err, sizeof r->err, &help);
    if (prc == 1) {
        if (r->w->rank == 0) fputs(help, stdout);
        free(help);
        comm_exit(0);
    }
    comm_agree(prc < 0 ? r->err : NULL, GT_EXIT_USAGE);
    openblas_set_num_threads(c->threads);
    omp_set_num_threads(c->threads);
    signals_install();

    prepare_run_dir(r);
    prepare_data(r);
    open_tokens(r);
    if (c->resume) resume_settings(r);
    int bad_config = config_check(c, r->err, sizeof r->err) != 0;
    if (bad_config && c->resume) {
        // Settings not given on the command line came from the checkpoint: name it too.
        char why[1024];
        snprintf(why, sizeof why, "%.1000s", r->err);
        snprintf(r->err, sizeof r->err, "%.1000s (settings not given as flags come from checkpoint '%.3000s' /config)",
                 why, r->ckpt_path);
    }
    comm_agree(bad_config ? r->err : NULL, GT_EXIT_USAGE);
    r->mc = (GPTConfig){r->info.vocab_size, c->block_size, c->n_layer, c->n_head, c->n_embd, (float)c->dropout};
    comm_agree(gpt2_config_check(&r->mc, r->err, sizeof r->err) ? NULL : r->err, GT_EXIT_USAGE);
    load_tokens(r);
    build_state(r);
    // Opened even when there is nothing left to train: a run killed after its last checkpoint
    // left attention.h5 marked open for writing (plain h5py refuses it) and maybe with records
    // past that checkpoint; reopening for --resume repairs both, as it does for any resume.
    open_writers(r, argc, argv);
    if (r->st.step >= c->steps) {
        if (r->w->rank == 0)
            printf("gpt-train: checkpoint '%s' is already at step %lld >= --steps %lld; nothing to train "
                   "(raise --steps to continue)\n",
                   r->ckpt_path, r->st.step, c->steps);
        run_free(r);
        comm_exit(0);
    }
    train(r);
    run_free(r);
    comm_exit(0);
}
