// config.c - see config.h.
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "h5util.h"
#include "options.h"

// Rows that go into a checkpoint's /config and come back on --resume.
#define STORED OPT_TOOL

#define O(field) offsetof(TrainConfig, field)
#define INF INFINITY
static const Opt opts[] = {
    {"data", OPT_STR, O(data), 0, 0, NULL, NULL, "io", STORED | OPT_REQUIRED, "PATH", "tokens.h5 from gpt-bpe encode, or a UTF-8 text file (tokenized into RUN/)"},
    {"out", OPT_STR, O(out), 0, 0, NULL, NULL, "io", STORED | OPT_REQUIRED, "PATH", "run directory: checkpoints, metrics.csv, train.log, attention.h5"},
    {"config", OPT_STR, O(config_file), 0, 0, NULL, NULL, "io", 0, "PATH", "file of `key = value` lines (# comments); flags override it"},
    {"resume", OPT_BOOL, O(resume), 0, 1, NULL, "0", "io", 0, NULL, "continue from RUN/latest (settings not given default to the checkpoint's)"},

    {"n-layer", OPT_INT, O(n_layer), 1, 256, NULL, "5", "model", STORED, NULL, "transformer blocks"},
    {"n-head", OPT_INT, O(n_head), 1, 1024, NULL, "4", "model", STORED, NULL, "attention heads (must divide n-embd)"},
    {"n-embd", OPT_INT, O(n_embd), 1, 65536, NULL, "64", "model", STORED, NULL, "embedding width"},
    {"block-size", OPT_INT, O(block_size), 1, 65536, NULL, "16", "model", STORED, NULL, "context length T"},
    {"dropout", OPT_REAL, O(dropout), 0, 0.999, NULL, "0.3", "model", STORED, NULL, "dropout probability while training"},

    {"batch-size", OPT_INT, O(batch_size), 1, 1 << 20, NULL, "32", "batch", STORED, NULL, "sequences per rank per micro-batch"},
    {"grad-accum", OPT_INT, O(grad_accum), 1, 1 << 16, NULL, "1", "batch", STORED, NULL, "micro-batches per optimizer step"},
    {"steps", OPT_I64, O(steps), 1, 1e15, NULL, "1000", "batch", STORED, NULL, "the step the run ends at (with --resume too)"},

    {"lr", OPT_REAL, O(lr), 0, 10, NULL, "1e-3", "optim", STORED, NULL, "peak learning rate"},
    {"min-lr", OPT_REAL, O(min_lr), 0, 10, NULL, "1e-4", "optim", STORED, NULL, "learning rate at the end of the decay"},
    {"warmup", OPT_INT, O(warmup), 0, INT_MAX, NULL, "100", "optim", STORED, NULL, "linear warmup steps"},
    {"lr-schedule", OPT_STR, O(lr_schedule), 0, 0, "|cosine|linear|constant|", "cosine", "optim", STORED, "NAME", "decay after warmup: cosine|linear|constant"},
    {"weight-decay", OPT_REAL, O(weight_decay), 0, 10, NULL, "0.01", "optim", STORED, NULL, "AdamW decoupled weight decay (2-D tensors only)"},
    {"beta1", OPT_REAL, O(beta1), 0, 0.999999, NULL, "0.9", "optim", STORED, NULL, "AdamW beta1"},
    {"beta2", OPT_REAL, O(beta2), 0, 0.999999, NULL, "0.99", "optim", STORED, NULL, "AdamW beta2"},
    {"eps", OPT_REAL, O(eps), 1e-30, 1, NULL, "1e-8", "optim", STORED, NULL, "AdamW epsilon"},
    {"grad-clip", OPT_REAL, O(grad_clip), 0, 1e30, NULL, "1.0", "optim", STORED, NULL, "clip the global gradient norm to this (0 = off)"},

    {"seed", OPT_I64, O(seed), 0, 9.2e18, NULL, "1337", "run", STORED, NULL, "seed of weights, data order and dropout"},
    {"eval-every", OPT_INT, O(eval_every), 0, INT_MAX, NULL, "100", "run", STORED, NULL, "evaluate on /val every N steps and at the end (0 = only at the end)"},
    {"eval-batches", OPT_INT, O(eval_batches), 0, INT_MAX, NULL, "0", "run", STORED, NULL, "limit eval to K x batch-size x ranks windows (0 = all of /val)"},
    {"ckpt-every", OPT_INT, O(ckpt_every), 0, INT_MAX, NULL, "500", "run", STORED, NULL, "checkpoint every N steps and at the end (0 = only at the end)"},
    {"keep-ckpts", OPT_INT, O(keep_ckpts), 1, INT_MAX, NULL, "3", "run", STORED, NULL, "keep the newest N checkpoints"},
    {"log-every", OPT_INT, O(log_every), 1, INT_MAX, NULL, "10", "run", STORED, NULL, "one log line and metrics.csv row every N steps"},
    {"threads", OPT_INT, O(threads), 1, 1024, NULL, "1", "run", STORED, NULL, "BLAS/OpenMP threads per rank"},
    {"check-sync", OPT_BOOL, O(check_sync), 0, 1, NULL, "0", "run", STORED, NULL, "verify every log step that all ranks hold identical weights"},
    {"skip-bad-steps", OPT_BOOL, O(skip_bad_steps), 0, 1, NULL, "0", "run", STORED, NULL, "skip the update of a bad step (NaN/Inf loss or gradient, or a loss spike) instead of stopping"},
    {"loss-spike", OPT_REAL, O(loss_spike), 0, 1e6, NULL, "3", "run", STORED, NULL, "a loss above this many times the mean of recent steps (at most ln V) is a bad step (exploding; 0 = off)"},

    {"attn-every", OPT_INT, O(attn_every), 0, INT_MAX, NULL, "0", "attn", STORED, NULL, "record the probe's attention into RUN/attention.h5 every N steps (0 = off)"},
    {"attn-prompt", OPT_STR, O(attn_prompt), 0, 0, NULL, NULL, "attn", STORED, "TEXT", "probe text (default: the first block-size tokens of /val)"},
    {"attn-dtype", OPT_STR, O(attn_dtype), 0, 0, "|float32|float16|", "float32", "attn", STORED, "NAME", "float32|float16"},

    {"vocab-size", OPT_INT, O(vocab_size), 257, 1 << 24, NULL, "2000", "text", STORED, NULL, "tokenizer vocabulary (text --data only)"},
    {"val-fraction", OPT_REAL, O(val_fraction), 0.0001, 0.9, NULL, "0.1", "text", STORED, NULL, "last fraction of the tokens kept for /val (text --data only)"},
    {"pattern", OPT_STR, O(pattern), 0, 0, NULL, "llama3", "text", STORED, "NAME", "split regex: llama3|gpt4|gpt2|REGEX (text --data only)"},
};
#define N_OPTS OPT_COUNT(opts)
_Static_assert(sizeof opts / sizeof opts[0] <= sizeof((TrainConfig *)0)->given, "TrainConfig.given holds every option");

static const char *const groups[][2] = {{"io", "input and output"}, {"model", "model"}, {"batch", "batch"},
                                        {"optim", "optimizer"},     {"run", "run"},     {"attn", "attention probe"},
                                        {"text", "text input only"}};

static const OptTable table = {
    "gpt-train",
    "usage: mpirun -np N gpt-train --data tokens.h5|FILE.txt --out RUN [--config FILE] [--resume] [options]\n\n"
    "Trains a GPT-2 data-parallel over the MPI ranks; writes RUN/ckpt-%08d.h5, RUN/latest,\n"
    "RUN/metrics.csv, RUN/train.log (and RUN/attention.h5 with --attn-every).\n",
    "\nA --config file holds the same names without dashes (`n_layer = 6`; `#` comments).\n"
    "Exit status: 0 done (or stopped by a signal after a checkpoint), 1 bad usage or input, 2 runtime failure.\n",
    opts, N_OPTS, groups, OPT_COUNT(groups)};

#define FIELD(c, o, T) ((T *)((char *)(c) + (o)->off))

static void key_of(const Opt *o, char *key, size_t n) {
    snprintf(key, n, "%s", o->name);
    for (char *p = key; *p; p++)
        if (*p == '-') *p = '_';
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) *--e = '\0';
    return s;
}

static int parse_file(TrainConfig *c, const char *path, char *err, size_t errsize) {
    FILE *f = fopen(path, "r");
    if (!f) return opt_error(err, errsize, "--config '%s': cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (rc == 0 && getline(&line, &cap, f) >= 0) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = opt_error(err, errsize, "--config '%s' line %d: expected `key = value`, got '%s'", path, lineno, s);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        if (strlen(val) >= 2 && (val[0] == '"' || val[0] == '\'') && val[strlen(val) - 1] == val[0]) {
            val[strlen(val) - 1] = '\0';
            val++;
        }
        const Opt *o = opt_find(&table, key);
        if (!o || !o->help || !strcmp(o->name, "config")) {
            rc = opt_error(err, errsize, "--config '%s' line %d: unknown key '%s' (see gpt-train --help)", path, lineno, key);
            break;
        }
        char where[512];
        snprintf(where, sizeof where, "--config '%s' line %d: %s =", path, lineno, key);
        rc = opt_set(o, c, val, where, err, errsize);
        if (rc == 0) c->given[o - opts] = 1;
    }
    free(line);
    fclose(f);
    return rc;
}

int config_parse(TrainConfig *c, int argc, char **argv, char *err, size_t errsize, char **help) {
    opt_defaults(&table, c);
    memset(c->given, 0, sizeof c->given);
    *help = NULL;
    // The command line twice: first to find --config (the file goes under every flag), then
    // over the file's settings.
    TrainConfig first;
    opt_defaults(&table, &first);
    int rc = opt_parse(&table, &first, argc - 1, argv + 1, NULL, err, errsize);
    if (rc == 1) *help = opt_help(&table);
    if (rc == 0 && first.config_file) rc = parse_file(c, first.config_file, err, errsize);
    if (rc == 0) rc = opt_parse(&table, c, argc - 1, argv + 1, c->given, err, errsize);
    if (rc == 0) rc = opt_check_required(&table, c, err, errsize);
    opt_free(&table, &first);
    return rc;
}

int config_check(const TrainConfig *c, char *err, size_t errsize) {
    if (c->min_lr > c->lr)
        return opt_error(err, errsize, "--min-lr %g is larger than --lr %g", c->min_lr, c->lr);
    if (c->attn_prompt && !*c->attn_prompt)
        return opt_error(err, errsize, "--attn-prompt: empty text (omit it to probe with the start of /val)");
    if (!c->pattern || !*c->pattern) return opt_error(err, errsize, "--pattern: empty");
    return 0;
}

int config_given(const TrainConfig *c, const char *name) {
    return opt_given(&table, c->given, name);
}

void config_print(const TrainConfig *c, FILE *f) {
    const char *group = "";
    for (int i = 0; i < N_OPTS; i++) {
        const Opt *o = &opts[i];
        if (!o->help || !(o->flags & STORED)) continue;  // not --config or --resume: reusing the file starts a run
        if (strcmp(group, o->group) != 0) {
            group = o->group;
            fprintf(f, "# %s\n", group);
        }
        char key[64];
        key_of(o, key, sizeof key);
        char *val = opt_value_text(o, c);
        if (o->type == OPT_STR && (strchr(val, '#') || strchr(val, ' ') || !*val)) {
            if (!*FIELD(c, o, char *)) fprintf(f, "# %s = (unset)\n", key);
            else fprintf(f, "%s = \"%s\"\n", key, val);
        } else {
            fprintf(f, "%s = %s\n", key, val);
        }
        free(val);
    }
}

void config_write_attrs(hid_t loc, const TrainConfig *c) {
    for (int i = 0; i < N_OPTS; i++) {
        const Opt *o = &opts[i];
        if (!(o->flags & STORED)) continue;
        char key[64];
        key_of(o, key, sizeof key);
        switch (o->type) {
        case OPT_INT:
        case OPT_BOOL:
        case OPT_FLAG: h5_attr_write_int(loc, key, *FIELD(c, o, int)); break;
        case OPT_I64: h5_attr_write_int(loc, key, *FIELD(c, o, long long)); break;
        case OPT_REAL: h5_attr_write_double(loc, key, *FIELD(c, o, double)); break;
        case OPT_STR: {
            const char *s = *FIELD(c, o, char *);
            h5_attr_write_str(loc, key, s ? s : "");
            break;
        }
        case OPT_LIST: break;
        }
    }
}

void config_fill_from_attrs(TrainConfig *c, hid_t loc) {
    for (int i = 0; i < N_OPTS; i++) {
        const Opt *o = &opts[i];
        if (!(o->flags & STORED) || c->given[i] || !strcmp(o->name, "data") || !strcmp(o->name, "out")) continue;
        char key[64];
        key_of(o, key, sizeof key);
        int64_t iv;
        double dv;
        switch (o->type) {
        case OPT_INT:
        case OPT_BOOL:
        case OPT_FLAG:
            if (h5_attr_read_int(loc, key, &iv)) *FIELD(c, o, int) = (int)iv;
            break;
        case OPT_I64:
            if (h5_attr_read_int(loc, key, &iv)) *FIELD(c, o, long long) = iv;
            break;
        case OPT_REAL:
            if (h5_attr_read_double(loc, key, &dv)) *FIELD(c, o, double) = dv;
            break;
        case OPT_STR: {
            char *s = h5_attr_read_str(loc, key);
            if (s) {
                char **p = FIELD(c, o, char *);
                free(*p);
                *p = *s ? s : NULL;
                if (!*s) free(s);
            }
            break;
        }
        case OPT_LIST: break;
        }
    }
}

void config_free(TrainConfig *c) { opt_free(&table, c); }
