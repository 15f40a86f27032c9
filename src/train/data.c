// data.c - see data.h.
#define _GNU_SOURCE
#include "data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "h5util.h"
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
                GtErr e = GT_ERR_INIT;
                uint32_t *ids = NULL;
                size_t n = 0, cap = 0;
                if (vocab_save_e(vocab_path, &tok, 1, &e) == 0) {
                    tokenizer_encode(&tok, text, got, &ids, &n, &cap);
                    tokens_save_e(r->tokens_path, &tok, ids, n, c->val_fraction, c->data, bytes, sha, 1, &e);
                }
                if (gt_failed(&e)) {  // a full disk: exit 2, on every rank
                    snprintf(r->err, sizeof r->err, "%s", e.msg);
                    status = e.status;
                } else {
                    printf("data: %s (%d tokens) and %s (%zu tokens) in %.1f s\n", vocab_path, tok.vocab_size,
                           r->tokens_path, n, comm_time() - t0);
                }
                free(ids);
                tokenizer_free(&tok);
            }
            free(text);
        }
        fflush(stdout);
    }
    status = comm_wait_status(status);
    if (status) comm_agree(r->w->rank == 0 ? r->err : "tokenizing failed on rank 0", status);
}

// Decides tokens.h5 vs text and leaves the tokens file's path in r->tokens_path.
void data_prepare(Run *r) {
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
