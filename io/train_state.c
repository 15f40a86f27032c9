// train_state.c - see train_state.h.
#include "train_state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "checkpoint.h"
#include "error.h"
#include "config_io.h"
#include "h5util.h"
#include "vocab_io.h"

#ifndef GT_VERSION
#define GT_VERSION "dev"
#endif

#define RNG_DOC                                                                                        \
    "counter-based (src/model/rng.h): weights from seed; dropout of (step, rank, micro-step) from "  \
    "mix(seed, step, rank, micro); the data order of epoch e is a permutation keyed by mix(seed, e); " \
    "so seed, step and the data cursor are the complete RNG state"

static int write_state(hid_t file, const TrainState *st, const TrainConfig *cfg, GtErr *e) {
    hid_t g = h5_group_create_e(file, "state", e);
    h5_attr_write_int_e(g, "seed", cfg->seed, e);
    h5_attr_write_int_e(g, "adam_t", st->adam_t, e);
    h5_attr_write_double_e(g, "best_val_loss", st->best_val_loss, e);
    h5_attr_write_int_e(g, "skipped_steps", st->skipped_steps, e);
    h5_attr_write_double_e(g, "recent_loss", st->recent_loss, e);
    h5_attr_write_int_e(g, "recent_loss_steps", st->recent_n, e);
    h5_attr_write_int_e(g, "bad_steps_in_row", st->bad_in_row, e);
    h5_attr_write_str_e(g, "rng", RNG_DOC, e);
    h5_attr_write_int_e(g, "data_epoch", st->data_epoch, e);
    h5_attr_write_int_e(g, "data_pos", st->data_pos, e);
    h5_attr_write_int_e(g, "data_windows", st->data_windows, e);
    h5_close(g, e);
    return gt_failed(e) ? -1 : 0;
}

// RUN/latest names the newest complete checkpoint: written to a temp name, synced, renamed.
static int write_latest(const char *run, const char *name, GtErr *e) {
    if (gt_failed(e)) return -1;
    char tmp[4200], path[4200];
    snprintf(path, sizeof path, "%s/latest", run);
    snprintf(tmp, sizeof tmp, "%s/latest.tmp", run);
    gt_tmpfile_register(tmp);
    FILE *f = fopen(tmp, "w");
    int err = f ? 0 : errno;
    if (f && (fprintf(f, "%s\n", name) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0)) err = errno;
    if (f && fclose(f) != 0 && !err) err = errno;
    if (!err && rename(tmp, path) != 0) err = errno;
    if (err) {
        remove(tmp);
        gt_err(e, GT_EXIT_RUNTIME, "writing '%s' failed: %s; it still names the previous checkpoint", path,
               strerror(err));
        e->errnum = err;
    }
    gt_tmpfile_forget(tmp);
    return gt_failed(e) ? -1 : 0;
}

// The step of a checkpoint file name "ckpt-<step>.h5" (the step zero-padded to at least 8
// digits, so wider past 99,999,999), or -1 for any other name. Checkpoints are ordered by this
// number everywhere: past 8 digits the names no longer sort as text.
static long long ckpt_name_step(const char *s) {
    size_t len = strlen(s), digits = len > 8 ? len - 8 : 0;
    if (strncmp(s, "ckpt-", 5) != 0 || len < 16 || strcmp(s + len - 3, ".h5") != 0 || digits > 18) return -1;
    long long step = 0;
    for (size_t i = 5; i < 5 + digits; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        step = step * 10 + (s[i] - '0');
    }
    return step;
}

typedef struct {
    long long step;
    char *name;
} CkptName;

static int by_step(const void *a, const void *b) {
    long long x = ((const CkptName *)a)->step, y = ((const CkptName *)b)->step;
    return x < y ? -1 : x > y;
}

// Removes the checkpoints beyond the newest `keep`, never keep_name nor also_keep (a base
// name, or NULL), and temporary files of checkpoints whose writer was killed.
static void prune(const char *run, const char *keep_name, int keep, const char *also_keep) {
    DIR *d = opendir(run);
    if (!d) return;
    CkptName *names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "ckpt-", 5) == 0 && strstr(e->d_name, ".h5.tmp-")) {
            // Left by a process killed while writing (never named by RUN/latest).
            char tmp[4200];
            snprintf(tmp, sizeof tmp, "%s/%s", run, e->d_name);
            remove(tmp);
            continue;
        }
        long long step = ckpt_name_step(e->d_name);
        if (step < 0) continue;
        if (n == cap) names = gt_realloc(names, (cap = cap ? 2 * cap : 16) * sizeof *names, "checkpoint list");
        names[n++] = (CkptName){step, gt_strdup(e->d_name)};
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_step);
    for (size_t i = 0; i + (size_t)keep < n; i++) {
        if (strcmp(names[i].name, keep_name) == 0 || (also_keep && strcmp(names[i].name, also_keep) == 0)) continue;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", run, names[i].name);
        remove(path);
    }
    for (size_t i = 0; i < n; i++) free(names[i].name);
    free(names);
}

// A full disk is found before anything is written, with the figures a user needs: the new
// file is about the size of the previous one (same model); without one, the tensors plus
// HDF5's per-object overhead. A write that fails anyway (another writer filled the disk, an
// I/O error) ends in h5_commit_e's message.
static int check_space(const char *run, const char *path, const GPT2 *m, GtErr *e) {
    long long need = 12LL * (long long)m->num_params + 3LL * 1024 * m->n_specs + 16384;
    char prev[4200];
    struct stat sb;
    if (train_state_latest(run, prev, sizeof prev) && stat(prev, &sb) == 0 && sb.st_size > 0) need = sb.st_size;
    struct statvfs vfs;
    if (statvfs(run, &vfs) != 0) return 0;
    long long avail = (long long)vfs.f_bavail * (long long)vfs.f_frsize;
    if (avail < need) {
        gt_err(e, GT_EXIT_RUNTIME, "no space left for checkpoint '%s': about %lld bytes needed, %lld available in '%s'",
               path, need, avail, run);
        e->errnum = ENOSPC;
    }
    return gt_failed(e) ? -1 : 0;
}

// What the user can do after a failed checkpoint, appended to its message.
static void after_failure(const char *run, GtErr *e) {
    char prev[4200];
    const char *fix = e->errnum == ENOSPC ? "free some space" : "remove the cause";
    if (train_state_latest(run, prev, sizeof prev))
        gt_err_append(e, "; the previous checkpoint is intact: %s, then continue with --resume", fix);
    else
        gt_err_append(e, "; no checkpoint was written yet: %s, then start again", fix);
}

int train_state_save_e(const char *run, const TrainConfig *cfg, const GPT2 *m, const AdamW *opt,
                       const TrainState *st, const Tokenizer *tok, int keep, const char *also_keep, char *path_out,
                       GtErr *e) {
    if (gt_failed(e)) return -1;
    char name[32], path[4200], tmp[4300];
    snprintf(name, sizeof name, "ckpt-%08lld.h5", st->step);
    snprintf(path, sizeof path, "%s/%s", run, name);
    if (check_space(run, path, m, e)) {
        after_failure(run, e);
        return -1;
    }
    hid_t f = h5_create_tmp_e(path, GT_FORMAT_CHECKPOINT, tmp, sizeof tmp, e);
    char now[40];
    h5_iso8601_now(now, sizeof now);
    h5_attr_write_int_e(f, "step", st->step, e);
    h5_attr_write_int_e(f, "tokens_seen", st->tokens_seen, e);
    h5_attr_write_int_e(f, "world_size", st->world_size, e);
    h5_attr_write_str_e(f, "created", now, e);
    h5_attr_write_str_e(f, "software_version", "gpt-train " GT_VERSION, e);
    hid_t g = h5_group_create_e(f, "config", e);
    config_write_attrs_e(g, cfg, e);
    h5_close(g, e);
    ckpt_write_model_config_e(f, &m->config, e);  // after ours: the model's true vocab_size wins
    ckpt_write_tensors_e(f, "model", m, m->params, e);
    ckpt_write_tensors_e(f, "optimizer/m", m, opt->m, e);
    ckpt_write_tensors_e(f, "optimizer/v", m, opt->v, e);
    write_state(f, st, cfg, e);
    // Written from memory, not copied from tokens.h5: libhdf5 1.10 crashes (SIGSEGV in
    // H5T_close_real) when a write fails in the middle of H5Ocopy.
    vocab_write_group_e(f, tok, e);
    if (h5_commit_e(f, tmp, path, e) == 0) write_latest(run, name, e);  // last: RUN/latest only ever names a complete file
    if (gt_failed(e)) {
        after_failure(run, e);
        return -1;
    }
    const char *base = also_keep ? strrchr(also_keep, '/') : NULL;
    prune(run, name, keep, base ? base + 1 : also_keep);
    if (path_out) snprintf(path_out, 4200, "%s", path);
    return 0;
}

int train_state_set_latest_e(const char *run, const char *path, GtErr *e) {
    const char *base = strrchr(path, '/');
    return write_latest(run, base ? base + 1 : path, e);
}

// Step of a checkpoint's path (its last component), or -1.
static long long step_of(const char *path) {
    const char *b = strrchr(path, '/');
    return ckpt_name_step(b ? b + 1 : path);
}

int train_state_latest(const char *run, char *path, size_t n) {
    char lp[4200];
    snprintf(lp, sizeof lp, "%s/latest", run);
    FILE *f = fopen(lp, "r");
    char name[1024] = "";
    if (f) {
        if (!fgets(name, sizeof name, f)) name[0] = '\0';
        fclose(f);
        name[strcspn(name, "\r\n")] = '\0';
    }
    if (*name) {
        if (name[0] == '/') snprintf(path, n, "%s", name);
        else snprintf(path, n, "%s/%s", run, name);
    }
    // A process killed between renaming a checkpoint into place and updating RUN/latest
    // leaves a newer complete file (checkpoints only ever get their name once complete).
    long long best = *name ? step_of(path) : -1;
    DIR *d = opendir(run);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (ckpt_name_step(e->d_name) > best) {
            best = ckpt_name_step(e->d_name);
            snprintf(path, n, "%s/%s", run, e->d_name);
        }
    if (d) closedir(d);
    return *name || best >= 0;
}

static int64_t *read_i64(hid_t g, const char *name, int n, const char *path, GtErr *e) {
    int rank = 0;
    hsize_t dims[8];
    if (gt_failed(e)) return NULL;
    if (!h5_dataset_shape(g, name, &rank, dims) || rank != 1 || dims[0] != (hsize_t)n) {
        gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': /state/%s is missing or does not hold %d entries (world_size)", path,
               name, n);
        return NULL;
    }
    return h5_read_dataset_e(g, name, H5T_NATIVE_INT64, &rank, dims, path, e);
}

static int read_state(hid_t file, const char *path, TrainState *st, GtErr *e) {
    int64_t v;
    if (!h5_attr_read_int(file, "step", &v) || v < 0)
        return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': root attribute 'step' missing", path);
    st->step = v;
    if (!h5_attr_read_int(file, "tokens_seen", &v))
        return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': root attribute 'tokens_seen' missing", path);
    st->tokens_seen = v;
    if (!h5_attr_read_int(file, "world_size", &v) || v < 1 || v > (1 << 24))
        return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': root attribute 'world_size' missing or invalid", path);
    st->world_size = (int)v;
    if (!h5_exists(file, "state"))
        return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': group /state is missing (not written by gpt-train?)", path);
    hid_t g = h5_group_open_e(file, "state", path, e);
    if (g < 0) return -1;
    double d;
    st->best_val_loss = h5_attr_read_double(g, "best_val_loss", &d) ? d : INFINITY;
    st->skipped_steps = h5_attr_read_int(g, "skipped_steps", &v) ? v : 0;
    // absent from older checkpoints: the spike check then warms up again
    st->recent_loss = h5_attr_read_double(g, "recent_loss", &d) && isfinite(d) ? d : 0;
    st->recent_n = h5_attr_read_int(g, "recent_loss_steps", &v) && v >= 0 ? v : 0;
    st->bad_in_row = h5_attr_read_int(g, "bad_steps_in_row", &v) && v >= 0 ? v : 0;
    if (!h5_attr_read_int(g, "adam_t", &v) || v < 0)
        gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': /state attribute 'adam_t' missing", path);
    st->adam_t = v;
    int64_t de, dp, dw;
    if (gt_failed(e)) {
    } else if (h5_attr_read_int(g, "data_epoch", &de) && h5_attr_read_int(g, "data_pos", &dp) &&
               h5_attr_read_int(g, "data_windows", &dw)) {
        if (de < 0 || dp < 0 || dw < 1 || dp > dw)
            gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': /state data cursor (epoch %lld, position %lld of %lld windows) "
                   "is invalid", path, (long long)de, (long long)dp, (long long)dw);
        st->data_epoch = de, st->data_pos = dp, st->data_windows = dw;
    } else if (!h5_exists(g, "cursor_epoch")) {
        gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': /state has no data cursor (attributes data_epoch, data_pos, "
               "data_windows)", path);
    } else {
        // An older checkpoint: one cursor per rank over its own shard. The sums are the
        // windows the epoch had used and held, so the cursor continues at that fraction.
        int64_t *ce = read_i64(g, "cursor_epoch", st->world_size, path, e);
        int64_t *cp = read_i64(g, "cursor_pos", st->world_size, path, e);
        int64_t *cw = read_i64(g, "cursor_windows", st->world_size, path, e);
        if (!gt_failed(e)) {
            st->data_epoch = ce[0];
            for (int i = 0; i < st->world_size; i++) {
                st->data_pos += cp[i] < 0 ? 0 : cp[i] > cw[i] ? cw[i] : cp[i];
                st->data_windows += cw[i] < 0 ? 0 : cw[i];
            }
            if (st->data_windows < 1) st->data_windows = 1;
            st->data_per_rank = 1;
        }
        free(ce);
        free(cp);
        free(cw);
    }
    H5Gclose(g);
    return gt_failed(e) ? -1 : 0;
}

int train_state_read_e(hid_t file, const char *path, TrainState *st, GtErr *e) {
    memset(st, 0, sizeof *st);
    if (gt_failed(e)) return -1;
    return read_state(file, path, st, e);
}

void train_state_read(hid_t file, const char *path, TrainState *st) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, train_state_read_e(file, path, st, &e));
}
