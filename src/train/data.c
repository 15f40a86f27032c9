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

#include "corpus.h"
#include "error.h"
#include "evaluate.h"
#include "files.h"
#include "h5util.h"
#include "resume.h"
#include "utf8.h"
#include "vocab_io.h"

// Files gpt-train writes in RUN (docs/formats.md): its tokenizer and tokens, log, metrics,
// lock, attention records, checkpoints, and their temporary names.
static int is_run_file(const char *name) {
    static const char *own[] = {"vocab.h5", "tokens.h5", "train.log", "metrics.csv", "latest", "lock", "attention.h5"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (!strcmp(name, own[i])) return 1;
    return !strncmp(name, "ckpt-", 5) || strstr(name, ".tmp") != NULL;
}

// The name in RUN of the file at path, when it is one that this run writes (read as the
// text while the run rewrites it); NULL otherwise.
static const char *name_in_run_dir(const char *run, const char *path, char *name, size_t n) {
    struct stat me, st;
    DIR *d = stat(path, &me) == 0 ? opendir(run) : NULL;
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

// Is RUN/tokens.h5 made from these sources (the SHA-256 of each and of all)? 0 when it is;
// 1 when the text differs, 2 when only the tokenizer or the split differ: tok's when given (a
// checkpoint's), else one trained with this pattern and at most vocab_size ids (training may
// stop early: no pair left twice); 3 when the file cannot be read. `why` says what differs.
static int tokens_differ(const char *tokens_path, Corpus *corpus, const TrainConfig *c, const char *pattern,
                         const Tokenizer *tok, char *why, size_t n) {
    GtErr e = GT_ERR_INIT;
    TokensInfo info;
    Tokenizer have;
    hid_t f = tokens_open_e(tokens_path, &info, &have, "--data", &e);
    if (f < 0) return snprintf(why, n, "%s", e.msg), 3;
    H5Fclose(f);
    int n_src, rc = 1;
    const TokensSource *src = corpus_sources(corpus, &n_src);
    *why = '\0';
    if (strcmp(info.source_sha256, corpus_sha256(corpus)) != 0)
        snprintf(why, n, "SHA-256 %s then, %s now", info.source_sha256, corpus_sha256(corpus));
    else if (info.n_sources != n_src)
        snprintf(why, n, "%d files then, %d now", info.n_sources, n_src);
    for (int i = 0; !*why && i < n_src; i++)
        if (strcmp(info.sources[i].sha256, src[i].sha256) != 0)
            snprintf(why, n, "file %d of %d, '%.1000s', differs", i + 1, n_src, src[i].path);
    if (!*why) {
        rc = 2;
        if (strcmp(info.doc_separator, c->doc_separator ? c->doc_separator : "") != 0)
            snprintf(why, n, "another --doc-separator");
        else if (strcmp(info.val_split, c->val_split) != 0)
            snprintf(why, n, "another --val-split");
        else if (tok ? tokenizer_difference(tok, &have, why, n) == NULL
                     : strcmp(have.pattern, pattern) == 0 && have.vocab_size <= c->vocab_size)
            rc = 0;
        else if (!tok)
            snprintf(why, n, "another --pattern or --vocab-size");
    }
    tokens_info_free(&info);
    tokenizer_free(&have);
    return rc;
}

// The tokenizer for a text --data, trained on it, or the one of `from` (a checkpoint), and the
// text encoded with it into RUN/vocab.h5 and RUN/tokens.h5: the pipeline of gpt-bpe train and
// encode (src/bpe/corpus.h), with gpt-train's --vocab-size, --pattern, --doc-separator,
// --val-fraction and --val-split.
static int tokenize(Run *r, Corpus *corpus, const char *pattern, const char *from, const char *vocab_path, GtErr *e) {
    const TrainConfig *c = &r->cfg;
    double t0 = comm_time();
    Tokenizer tok;
    memset(&tok, 0, sizeof tok);
    startup_phase(r, "tokenizing the text", "tokenize");
    if (from) {
        printf("data: encoding %s with the tokenizer of '%s'\n", r->data_text, from);
        fflush(stdout);
        vocab_load_e(from, &tok, "checkpoint", e);
    } else {
        printf("data: training a %d-token tokenizer on %s (%lld bytes, pattern %s)\n", c->vocab_size, r->data_text,
               (long long)corpus_bytes(corpus), c->pattern);
        fflush(stdout);
        CorpusTrainOptions to = {c->vocab_size, pattern, NULL, 0, c->doc_separator, c->threads, 0};
        corpus_train(corpus, &to, &tok, e);
    }
    if (gt_failed(e)) return -1;
    tokenizer_set_threads(&tok, c->threads);
    CorpusEncodeOptions eo = {c->val_fraction, !strcmp(c->val_split, "docs"), c->doc_separator};
    CorpusEncodeStats st;
    if (vocab_save_e(vocab_path, &tok, 1, e) == 0 && corpus_encode(corpus, &tok, &eo, r->tokens_path, 1, &st, e) == 0) {
        corpus_print_notes(corpus, stdout);
        printf("data: %s (%d tokens) and %s (%zu tokens: /train %zu, /val %zu) in %.1f s\n", vocab_path, tok.vocab_size,
               r->tokens_path, st.n_tokens, st.n_train, st.n_val, comm_time() - t0);
    }
    tokenizer_free(&tok);
    return gt_failed(e) ? -1 : 0;
}

// --data TEXT... : rank 0 tokenizes the text into RUN/vocab.h5 and RUN/tokens.h5, or reuses
// them; the others sleep until it is done. The tokenizer is trained on the text, or, for a
// fine-tune (--init-from) or a resume, it is the checkpoint's. A resume never rewrites them:
// a text that changed since is refused, naming both SHA-256.
static void tokenize_text(Run *r) {
    const TrainConfig *c = &r->cfg;
    char vocab_path[PATHLEN];
    snprintf(vocab_path, sizeof vocab_path, "%s/vocab.h5", c->out);
    snprintf(r->tokens_path, sizeof r->tokens_path, "%s/tokens.h5", c->out);
    GtErr e = GT_ERR_INIT;
    comm_solo_begin();  // a failure deep in the tokenizer (a bad regex, out of memory) is agreed on below
    if (r->w->rank == 0) {
        char name[256], why[2048];
        struct stat st;
        int have_tokens = stat(r->tokens_path, &st) == 0;
        // An unknown name or a bad regex ends the job here, before anyone waits long.
        const char *pattern = tokenizer_pattern_checked(c->pattern, "--pattern");
        const char *from = c->resume ? r->ckpt_path : c->init_from;
        CorpusOptions co = {"--data", c->replace_invalid, 0, 0};
        Corpus *corpus = corpus_open(c->data.v, c->data.n, &co, &e);
        int n_src = 0;
        const TokensSource *src = corpus ? corpus_sources(corpus, &n_src) : NULL;
        for (int i = 0; i < n_src && !gt_failed(&e); i++)
            if (name_in_run_dir(c->out, src[i].path, name, sizeof name))
                gt_err(&e, GT_EXIT_USAGE,
                       "--data '%s' is '%s/%s', a file of the run directory that this run writes; give the text from "
                       "outside '%s'",
                       src[i].path, c->out, name, c->out);
        corpus_hash(corpus, &e);
        if (gt_failed(&e)) {
        } else if (c->resume && have_tokens) {
            if (tokens_differ(r->tokens_path, corpus, c, pattern, NULL, why, sizeof why) == 1)
                gt_err(&e, GT_EXIT_USAGE,
                       "--data %s has changed since this run tokenized it (%s); a resume never tokenizes again, so "
                       "'%s' and '%s' stay as they are. Resume on the run's own tokens with --data %s, or restore "
                       "the text, or start a new run on the new text with another --out",
                       r->data_text, why, vocab_path, r->tokens_path, r->tokens_path);
            else
                printf("data: reusing %s (made from %s, sha256 %.12s...)\n", r->tokens_path, r->data_text,
                       corpus_sha256(corpus));
        } else if (!c->resume && have_tokens) {
            Tokenizer ck, *want = NULL;
            if (from && vocab_load_e(from, &ck, "--init-from", &e) == 0) want = &ck;
            if (!gt_failed(&e) && tokens_differ(r->tokens_path, corpus, c, pattern, want, why, sizeof why) == 0)
                printf("data: reusing %s (made from %s, sha256 %.12s...)\n", r->tokens_path, r->data_text,
                       corpus_sha256(corpus));
            else
                tokenize(r, corpus, pattern, from, vocab_path, &e);
            if (want) tokenizer_free(want);
        } else {
            if (c->resume)
                printf("data: %s is missing: encoding %s again with the checkpoint's tokenizer\n", r->tokens_path,
                       r->data_text);
            tokenize(r, corpus, pattern, from, vocab_path, &e);
        }
        corpus_close(corpus);
        fflush(stdout);
    }
    int status = comm_wait_status(e.status);
    if (status) comm_agree(r->w->rank == 0 ? e.msg : NULL, status);
}

// Decides tokens.h5 vs text and leaves the tokens file's path in r->tokens_path: one
// tokens.h5, or text files and directories (not standard input: the text is read twice).
void data_prepare(Run *r) {
    const TrainConfig *c = &r->cfg;
    int kind = 2;  // 1 HDF5, 2 text
    GtErr e = GT_ERR_INIT;
    opt_list_join(&c->data, 1, r->data_text, sizeof r->data_text);
    if (r->w->rank == 0) {
        for (int i = 0; i < c->data.n && !gt_failed(&e); i++) {
            const char *p = c->data.v[i];
            struct stat st;
            if (!strcmp(p, "-"))
                gt_err(&e, GT_EXIT_USAGE, "--data '-': gpt-train reads its text more than once (to check, train "
                       "the tokenizer, encode), so not from standard input; save it to a file");
            else if (h5_is_hdf5_file(p)) {
                kind = 1;
                if (c->data.n > 1)
                    gt_err(&e, GT_EXIT_USAGE, "--data '%s' is an HDF5 file (tokens.h5), given with %d other --data: a "
                           "tokens.h5 comes alone; text files and directories may be many", p, c->data.n - 1);
            } else if (stat(p, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
                int64_t size;
                gt_open_input(p, "--data", &size, &e);  // names a FIFO, a device, a socket
            }
        }
    }
    comm_agree(gt_failed(&e) ? e.msg : NULL, GT_EXIT_USAGE);
    comm_bcast(&kind, sizeof kind);
    if (kind == 1) snprintf(r->tokens_path, sizeof r->tokens_path, "%s", c->data.v[0]);
    else tokenize_text(r);
}

int data_tokenizer_mismatch(const char *ckpt, const char *what, const Tokenizer *ck, const Tokenizer *tok,
                            const char *data_text, const char *tokens_path, const char *source, GtErr *e) {
    char why[256];
    if (gt_failed(e) || !tokenizer_difference(ck, tok, why, sizeof why)) return gt_failed(e) ? -1 : 0;
    // The fix: the same text encoded with the checkpoint's vocabulary (gpt-bpe encode takes the
    // /tokenizer of a checkpoint), from the inputs the tokens file names.
    char fix[8192], out[PATHLEN];
    size_t len = (size_t)snprintf(fix, sizeof fix, "gpt-bpe encode --vocab '%.2000s'", ckpt);
    char *inputs = gt_strdup(source && *source ? source : "TEXT");
    for (char *p = inputs, *q; p && len < sizeof fix - 100; p = q) {
        if ((q = strstr(p, ", "))) *q = '\0', q += 2;
        len += (size_t)snprintf(fix + len, sizeof fix - len, " --input '%.1000s'", p);
    }
    free(inputs);
    const char *dot = strrchr(tokens_path, '.');
    int stem = dot && !strcmp(dot, ".h5") ? (int)(dot - tokens_path) : (int)strlen(tokens_path);
    snprintf(out, sizeof out, "%.*s-%s.h5", stem, tokens_path, !strcmp(what, "--init-from") ? "for-init" : "for-ckpt");
    return gt_err(e, GT_EXIT_USAGE,
                  "--data %.2000s was encoded with another tokenizer than %s '%.2000s' (%s): its ids would mean "
                  "other tokens to the model; encode the text with the checkpoint's vocabulary: %.4000s --out "
                  "'%.2000s' (or give the text itself as --data: it is then encoded so)",
                  data_text, what, ckpt, why, fix, out);
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
    // Every rank counts the bytes of its eval windows' targets (bits per byte): rank 0's tokenizer
    // gives each token's length.
    r->token_len = rank == 0 ? eval_token_bytes(&r->tok) : gt_malloc((size_t)r->info.vocab_size * sizeof(int), "token lengths");
    comm_bcast(r->token_len, (size_t)r->info.vocab_size * sizeof(int));
    r->inputs = gt_malloc((size_t)B * T * sizeof(int), "inputs");
    r->targets = gt_malloc((size_t)B * T * sizeof(int), "targets");
}
