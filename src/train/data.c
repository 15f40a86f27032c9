// data.c - see data.h.
#define _GNU_SOURCE
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "files.h"
#include "h5util.h"
#include "resume.h"
#include "sha256.h"
#include "utf8.h"
#include "vocab_io.h"

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

// SHA-256 of the first `bytes` bytes of fd; -1 with errno when a read fails.
static int hash_fd(int fd, int64_t bytes, char sha[65]) {
    enum { CHUNK = 1 << 20 };
    char *buf = gt_malloc(CHUNK, "hash buffer");
    Sha256 h;
    sha256_init(&h);
    int64_t done = 0;
    while (done < bytes) {
        ssize_t got = pread(fd, buf, (size_t)(bytes - done < CHUNK ? bytes - done : CHUNK), done);
        if (got <= 0) {
            if (got == 0) errno = EIO;  // the file shrank while being read
            free(buf);
            return -1;
        }
        sha256_update(&h, buf, (size_t)got);
        done += got;
    }
    free(buf);
    sha256_final_hex(&h, sha);
    return 0;
}

// Files gpt-train writes in RUN (docs/formats.md): its tokenizer and tokens, log, metrics,
// lock, attention records, checkpoints, and their temporary names.
static int is_run_file(const char *name) {
    static const char *own[] = {"vocab.h5", "tokens.h5", "train.log", "metrics.csv", "latest", "lock", "attention.h5"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (!strcmp(name, own[i])) return 1;
    return !strncmp(name, "ckpt-", 5) || strstr(name, ".tmp") != NULL;
}

// The name in RUN of the file open as fd, when it is one that this run writes (read as the
// text while the run rewrites it); NULL otherwise.
static const char *name_in_run_dir(const char *run, int fd, char *name, size_t n) {
    struct stat me, st;
    DIR *d = fstat(fd, &me) == 0 ? opendir(run) : NULL;
    const char *found = NULL;
    struct dirent *de;
    while (d && !found && (de = readdir(d))) {
        char p[PATHLEN];
        snprintf(p, sizeof p, "%.4000s/%.190s", run, de->d_name);
        if (is_run_file(de->d_name) && stat(p, &st) == 0 && st.st_dev == me.st_dev && st.st_ino == me.st_ino) {
            snprintf(name, n, "%s", de->d_name);
            found = name;
        }
    }
    if (d) closedir(d);
    return found;
}

// The text's SHA-256 as recorded in a tokens.h5 (/train source_sha256) into sha; -1 with *e.
static int recorded_sha(const char *tokens_path, char sha[65], GtErr *e) {
    hid_t f = h5_open_checked_e(tokens_path, GT_FORMAT_TOKENS, "--resume: the run's tokens", e);
    hid_t d = f >= 0 ? H5Dopen2(f, "train", H5P_DEFAULT) : -1;
    char *s = d >= 0 ? h5_attr_read_str(d, "source_sha256") : NULL;
    if (f >= 0 && (!s || strlen(s) != 64))
        gt_err(e, GT_EXIT_USAGE, "'%s': /train lacks its source_sha256 attribute", tokens_path);
    else if (s)
        memcpy(sha, s, 65);
    free(s);
    if (d >= 0) H5Dclose(d);
    h5_close(f, e);
    return gt_failed(e) ? -1 : 0;
}

// Trains the tokenizer on the text (fd, `bytes` long, SHA-256 sha) and writes RUN/vocab.h5
// and RUN/tokens.h5.
static int tokenize(Run *r, int fd, int64_t bytes, const char *sha, const char *pattern, const char *vocab_path,
                    GtErr *e) {
    const TrainConfig *c = &r->cfg;
    double t0 = comm_time();
    char *text = gt_malloc((size_t)bytes + 1, "--data text");
    int64_t got = 0;
    while (got < bytes) {
        ssize_t n = pread(fd, text + got, (size_t)(bytes - got), got);
        if (n <= 0) break;
        got += n;
    }
    size_t bad = 0;
    if (got != bytes) {
        gt_err(e, GT_EXIT_USAGE, "--data '%s': cannot read: %s", c->data, got < bytes ? "the file shrank" : strerror(errno));
    } else if (!utf8_validate(text, (size_t)got, &bad)) {
        gt_err(e, GT_EXIT_USAGE, "--data '%s': neither a tokens.h5 file nor UTF-8 text (invalid byte at offset %zu)",
               c->data, bad);
    } else {
        text[got] = '\0';
        startup_phase(r, "tokenizing the text", "tokenize");
        printf("data: training a %d-token tokenizer on '%s' (%lld bytes, pattern %s)\n", c->vocab_size, c->data,
               (long long)bytes, c->pattern);
        fflush(stdout);
        Tokenizer tok;
        memset(&tok, 0, sizeof tok);
        tokenizer_train(&tok, text, (size_t)got, c->vocab_size, pattern, NULL, 0, c->threads, 0);
        tokenizer_set_threads(&tok, c->threads);
        uint32_t *ids = NULL;
        size_t n = 0, cap = 0;
        if (vocab_save_e(vocab_path, &tok, 1, e) == 0) {
            tokenizer_encode(&tok, text, (size_t)got, &ids, &n, &cap);
            tokens_save_e(r->tokens_path, &tok, ids, n, c->val_fraction, c->data, bytes, sha, 1, e);
        }
        if (!gt_failed(e))
            printf("data: %s (%d tokens) and %s (%zu tokens) in %.1f s\n", vocab_path, tok.vocab_size, r->tokens_path,
                   n, comm_time() - t0);
        free(ids);
        tokenizer_free(&tok);
    }
    free(text);
    return gt_failed(e) ? -1 : 0;
}

// --data FILE.txt (open as fd on rank 0): rank 0 trains the tokenizer and encodes into
// RUN/vocab.h5 and RUN/tokens.h5, or reuses them; the others sleep until it is done. A
// resume never rewrites them: a text that changed since is refused, naming both SHA-256.
static void tokenize_text(Run *r, int fd, int64_t bytes) {
    const TrainConfig *c = &r->cfg;
    char vocab_path[PATHLEN];
    snprintf(vocab_path, sizeof vocab_path, "%s/vocab.h5", c->out);
    snprintf(r->tokens_path, sizeof r->tokens_path, "%s/tokens.h5", c->out);
    GtErr e = GT_ERR_INIT;
    if (r->w->rank == 0) {
        char sha[65], was[65], name[256];
        struct stat st;
        int have_tokens = stat(r->tokens_path, &st) == 0;
        // An unknown name or a bad regex ends the job here, before anyone waits long.
        const char *pattern = tokenizer_pattern_checked(c->pattern, "--pattern");
        if (name_in_run_dir(c->out, fd, name, sizeof name))
            gt_err(&e, GT_EXIT_USAGE,
                   "--data '%s' is '%s/%s', a file of the run directory that this run writes; give the text from "
                   "outside '%s'",
                   c->data, c->out, name, c->out);
        else if (bytes == 0)
            gt_err(&e, GT_EXIT_USAGE, "--data '%s': file is empty", c->data);
        else if (hash_fd(fd, bytes, sha) != 0)
            gt_err(&e, GT_EXIT_USAGE, "--data '%s': cannot read: %s", c->data, strerror(errno));
        else if (c->resume && have_tokens) {
            if (recorded_sha(r->tokens_path, was, &e) == 0 && strcmp(was, sha) != 0)
                gt_err(&e, GT_EXIT_USAGE,
                       "--data '%s' has changed since this run tokenized it (SHA-256 %s then, %s now); a resume "
                       "never tokenizes again, so '%s' and '%s' stay as they are. Resume on the run's own tokens "
                       "with --data %s, or restore the text, or start a new run on the new text with another --out",
                       c->data, was, sha, vocab_path, r->tokens_path, r->tokens_path);
            else if (!gt_failed(&e))
                printf("data: reusing %s (made from '%s', sha256 %.12s...)\n", r->tokens_path, c->data, sha);
        } else if (!c->resume && tokens_reusable(r->tokens_path, vocab_path, sha, c->vocab_size, pattern)) {
            printf("data: reusing %s (made from '%s', sha256 %.12s...)\n", r->tokens_path, c->data, sha);
        } else {
            if (c->resume)
                printf("data: %s is missing: tokenizing '%s' again with the run's settings (the result must be the "
                       "checkpoint's tokenizer)\n",
                       r->tokens_path, c->data);
            tokenize(r, fd, bytes, sha, pattern, vocab_path, &e);
        }
        fflush(stdout);
    }
    int status = comm_wait_status(e.status);
    if (status) comm_agree(r->w->rank == 0 ? e.msg : NULL, status);
}

// Decides tokens.h5 vs text and leaves the tokens file's path in r->tokens_path. Only a
// regular file can be --data: a FIFO, a device or a directory is refused at once.
void data_prepare(Run *r) {
    const TrainConfig *c = &r->cfg;
    int kind = 0;  // 1 HDF5, 2 text
    int64_t bytes = 0;
    int fd = -1;
    GtErr e = GT_ERR_INIT;
    if (r->w->rank == 0 && (fd = gt_open_input(c->data, "--data", &bytes, &e)) >= 0)
        kind = H5Fis_hdf5(c->data) > 0 ? 1 : 2;
    comm_agree(gt_failed(&e) ? e.msg : NULL, GT_EXIT_USAGE);
    comm_bcast(&kind, sizeof kind);
    if (kind == 1) snprintf(r->tokens_path, sizeof r->tokens_path, "%s", c->data);
    else tokenize_text(r, fd, bytes);
    if (fd >= 0) close(fd);
}

int32_t *data_probe_ids(Run *r, int *T_out) {
    const TrainConfig *c = &r->cfg;
    const Tokenizer *tok = &r->tok;
    size_t n_val = r->info.n_val;
    int T = c->block_size;
    int32_t *ids = NULL;
    if (c->attn_prompt) {
        uint32_t *u = NULL;
        size_t n = 0, cap = 0;
        tokenizer_encode(tok, c->attn_prompt, strlen(c->attn_prompt), &u, &n, &cap);
        if (n == 0) {
            char shown[256];
            snprintf(r->err, sizeof r->err, "--attn-prompt '%s': the text encodes to no tokens",
                     utf8_escape(shown, sizeof shown, c->attn_prompt, 0));
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
    GtErr e = GT_ERR_INIT;
    if (tokens_read_e(r->tf, "val", 0, n, u, r->info.vocab_size, "--data", r->tokens_path, &e)) {
        snprintf(r->err, sizeof r->err, "%s", e.msg);
        free(u);
        return NULL;
    }
    ids = gt_malloc(n * sizeof *ids, "probe");
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)u[i];
    free(u);
    *T_out = (int)n;
    return ids;
}

// The tokens file: checked by every rank (each must see it; one that cannot names itself),
// then opened.
void data_open_tokens(Run *r) {
    char buf[PATHLEN];
    const char *path = faults_data_path(&r->faults, r->tokens_path, r->w->rank, buf, sizeof buf);
    GtErr e = GT_ERR_INIT;
    r->tf = tokens_open_e(path, &r->info, r->w->rank == 0 ? &r->tok : NULL, "--data", &e);
    comm_agree_local_e(&e);
}

// Per rank, at most this much of /train and of /val in memory (dataloader.h): enough to hold
// a corpus of 16M tokens whole; a larger one is read chunk by chunk as its windows come up.
#define TRAIN_CACHE_BYTES ((size_t)64 << 20)
#define VAL_CACHE_BYTES ((size_t)4 << 20)

// The data loader over /train and the cache of /val, after the checks all ranks agree on.
// Each rank reads and checks its part of /train and its eval windows now, so a damaged chunk
// or an id outside the vocabulary is bad input found before training, wherever it sits.
void data_load(Run *r) {
    const TrainConfig *c = &r->cfg;
    const int B = c->batch_size, T = c->block_size, rank = r->w->rank, size = r->w->size;
    comm_agree(dataloader_check(r->info.n_train, T, B, size, r->tokens_path, r->err, sizeof r->err) ? r->err : NULL,
               GT_EXIT_USAGE);
    eval_windows(r->info.n_val, T, (size_t)c->eval_batches * (size_t)B * (size_t)size, rank, size, &r->ev_first,
                 &r->ev_count, &r->ev_total);
    if (r->ev_total == 0) {
        snprintf(r->err, sizeof r->err,
                 "'%.4000s': /val has %zu tokens, fewer than --block-size + 1 = %d needed for one eval window; "
                 "use a larger --val-fraction when tokenizing, or a smaller --block-size",
                 r->tokens_path, r->info.n_val, T + 1);
        comm_agree(r->err, GT_EXIT_USAGE);
    }
    const char *bad = NULL;
    if (dataloader_init(&r->dl, r->tf, r->tokens_path, r->info.vocab_size, T, B, rank, size, (uint64_t)c->seed,
                        TRAIN_CACHE_BYTES) != 0)
        bad = r->dl.train.err.msg;
    else if (token_cache_open(&r->val, r->tf, "val", VAL_CACHE_BYTES, r->info.vocab_size, r->tokens_path) != 0)
        bad = r->val.err.msg;
    if (!bad) {
        size_t n = r->info.n_train, a = n * (size_t)rank / (size_t)size, b = n * (size_t)(rank + 1) / (size_t)size;
        if (token_cache_check(&r->dl.train, a, b - a) != 0) bad = r->dl.train.err.msg;
        else if (r->ev_count && token_cache_check(&r->val, r->ev_first * (size_t)T, r->ev_count * (size_t)T + 1) != 0)
            bad = r->val.err.msg;
    }
    comm_agree(bad, GT_EXIT_USAGE);
    r->dl.trace = faults_trace_windows(&r->faults, rank);
    r->inputs = gt_malloc((size_t)B * T * sizeof(int), "inputs");
    r->targets = gt_malloc((size_t)B * T * sizeof(int), "targets");
}
