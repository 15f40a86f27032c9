// config.c - see config.h.
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "h5util.h"

typedef enum { OPT_INT, OPT_I64, OPT_REAL, OPT_STR, OPT_BOOL } OptType;

typedef struct {
    const char *name;     // flag without dashes, with '-' ("n-layer"); keys use '_' in files/attrs
    OptType type;
    size_t off;
    double min, max;      // inclusive range for numbers
    const char *choices;  // for strings: "|a|b|c|", NULL = free text
    const char *def;      // default, as text
    const char *group;    // heading in --help and in the printed configuration
    const char *help;
    int stored;           // written to /config and taken back on --resume
} Opt;

#define O(field) offsetof(TrainConfig, field)
static const Opt opts[] = {
    {"data", OPT_STR, O(data), 0, 0, NULL, NULL, "io", "tokens.h5 from gpt-bpe encode, or a UTF-8 text file (tokenized into RUN/)", 1},
    {"out", OPT_STR, O(out), 0, 0, NULL, NULL, "io", "run directory: checkpoints, metrics.csv, train.log, attention.h5", 1},
    {"config", OPT_STR, O(config_file), 0, 0, NULL, NULL, "io", "file of `key = value` lines (# comments); flags override it", 0},
    {"resume", OPT_BOOL, O(resume), 0, 1, NULL, "0", "io", "continue from RUN/latest (settings not given default to the checkpoint's)", 0},

    {"n-layer", OPT_INT, O(n_layer), 1, 256, NULL, "5", "model", "transformer blocks", 1},
    {"n-head", OPT_INT, O(n_head), 1, 1024, NULL, "4", "model", "attention heads (must divide n-embd)", 1},
    {"n-embd", OPT_INT, O(n_embd), 1, 65536, NULL, "64", "model", "embedding width", 1},
    {"block-size", OPT_INT, O(block_size), 1, 65536, NULL, "16", "model", "context length T", 1},
    {"dropout", OPT_REAL, O(dropout), 0, 0.999, NULL, "0.3", "model", "dropout probability while training", 1},

    {"batch-size", OPT_INT, O(batch_size), 1, 1 << 20, NULL, "32", "batch", "sequences per rank per micro-batch", 1},
    {"grad-accum", OPT_INT, O(grad_accum), 1, 1 << 16, NULL, "1", "batch", "micro-batches per optimizer step", 1},
    {"steps", OPT_I64, O(steps), 1, 1e15, NULL, "1000", "batch", "the step the run ends at (with --resume too)", 1},

    {"lr", OPT_REAL, O(lr), 0, 10, NULL, "1e-3", "optim", "peak learning rate", 1},
    {"min-lr", OPT_REAL, O(min_lr), 0, 10, NULL, "1e-4", "optim", "learning rate at the end of the decay", 1},
    {"warmup", OPT_INT, O(warmup), 0, INT_MAX, NULL, "100", "optim", "linear warmup steps", 1},
    {"lr-schedule", OPT_STR, O(lr_schedule), 0, 0, "|cosine|linear|constant|", "cosine", "optim", "decay after warmup: cosine|linear|constant", 1},
    {"weight-decay", OPT_REAL, O(weight_decay), 0, 10, NULL, "0.01", "optim", "AdamW decoupled weight decay (2-D tensors only)", 1},
    {"beta1", OPT_REAL, O(beta1), 0, 0.999999, NULL, "0.9", "optim", "AdamW beta1", 1},
    {"beta2", OPT_REAL, O(beta2), 0, 0.999999, NULL, "0.99", "optim", "AdamW beta2", 1},
    {"eps", OPT_REAL, O(eps), 1e-30, 1, NULL, "1e-8", "optim", "AdamW epsilon", 1},
    {"grad-clip", OPT_REAL, O(grad_clip), 0, 1e30, NULL, "1.0", "optim", "clip the global gradient norm to this (0 = off)", 1},

    {"seed", OPT_I64, O(seed), 0, 9.2e18, NULL, "1337", "run", "seed of weights, data order and dropout", 1},
    {"eval-every", OPT_INT, O(eval_every), 0, INT_MAX, NULL, "100", "run", "evaluate on /val every N steps and at the end (0 = only at the end)", 1},
    {"eval-batches", OPT_INT, O(eval_batches), 0, INT_MAX, NULL, "0", "run", "limit eval to K x batch-size x ranks windows (0 = all of /val)", 1},
    {"ckpt-every", OPT_INT, O(ckpt_every), 0, INT_MAX, NULL, "500", "run", "checkpoint every N steps and at the end (0 = only at the end)", 1},
    {"keep-ckpts", OPT_INT, O(keep_ckpts), 1, INT_MAX, NULL, "3", "run", "keep the newest N checkpoints", 1},
    {"log-every", OPT_INT, O(log_every), 1, INT_MAX, NULL, "10", "run", "one log line and metrics.csv row every N steps", 1},
    {"threads", OPT_INT, O(threads), 1, 1024, NULL, "1", "run", "BLAS/OpenMP threads per rank", 1},
    {"check-sync", OPT_BOOL, O(check_sync), 0, 1, NULL, "0", "run", "verify every log step that all ranks hold identical weights", 1},
    {"skip-bad-steps", OPT_BOOL, O(skip_bad_steps), 0, 1, NULL, "0", "run", "skip the update of a bad step (NaN/Inf loss or gradient, or a loss spike) instead of stopping", 1},
    {"loss-spike", OPT_REAL, O(loss_spike), 0, 1e6, NULL, "3", "run", "a loss above this many times the mean of recent steps (at most ln V) is a bad step (exploding; 0 = off)", 1},

    {"attn-every", OPT_INT, O(attn_every), 0, INT_MAX, NULL, "0", "attn", "record the probe's attention into RUN/attention.h5 every N steps (0 = off)", 1},
    {"attn-prompt", OPT_STR, O(attn_prompt), 0, 0, NULL, NULL, "attn", "probe text (default: the first block-size tokens of /val)", 1},
    {"attn-dtype", OPT_STR, O(attn_dtype), 0, 0, "|float32|float16|", "float32", "attn", "float32|float16", 1},

    {"vocab-size", OPT_INT, O(vocab_size), 257, 1 << 24, NULL, "2000", "text", "tokenizer vocabulary (text --data only)", 1},
    {"val-fraction", OPT_REAL, O(val_fraction), 0.0001, 0.9, NULL, "0.1", "text", "last fraction of the tokens kept for /val (text --data only)", 1},
    {"pattern", OPT_STR, O(pattern), 0, 0, NULL, "llama3", "text", "split regex: llama3|gpt4|gpt2|REGEX (text --data only)", 1},
};
#define N_OPTS ((int)(sizeof opts / sizeof opts[0]))
_Static_assert(sizeof opts / sizeof opts[0] <= 64, "TrainConfig.given holds 64 options");

#define FIELD(c, o, T) ((T *)((char *)(c) + (o)->off))

static const Opt *find_opt(const char *name) {
    // Flags use '-', files and attributes '_': accept either.
    char norm[64];
    size_t n = strlen(name);
    if (n >= sizeof norm) return NULL;
    for (size_t i = 0; i <= n; i++) norm[i] = name[i] == '_' ? '-' : name[i];
    for (int i = 0; i < N_OPTS; i++)
        if (strcmp(opts[i].name, norm) == 0) return &opts[i];
    return NULL;
}

static void key_of(const Opt *o, char *key, size_t n) {
    snprintf(key, n, "%s", o->name);
    for (char *p = key; *p; p++)
        if (*p == '-') *p = '_';
}

static int fmt_err(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fmt_err(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

// Sets one option from text. `where` names the source for messages ("--lr", "config 'f' line 3: lr").
static int set_opt(TrainConfig *c, const Opt *o, const char *val, const char *where, char *err, size_t errsize) {
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case OPT_INT:
    case OPT_I64: {
        long long v = strtoll(val, &end, 10);
        if (end == val || *end || errno)
            return fmt_err(err, errsize, "%s '%s': not an integer", where, val);
        if ((double)v < o->min || (double)v > o->max)
            return fmt_err(err, errsize, "%s %s: must be between %.0f and %.0f", where, val, o->min, o->max);
        if (o->type == OPT_INT) *FIELD(c, o, int) = (int)v;
        else *FIELD(c, o, long long) = v;
        break;
    }
    case OPT_REAL: {
        double v = strtod(val, &end);
        if (end == val || *end || errno || !isfinite(v))
            return fmt_err(err, errsize, "%s '%s': not a number", where, val);
        if (v < o->min || v > o->max)
            return fmt_err(err, errsize, "%s %s: must be between %g and %g", where, val, o->min, o->max);
        *FIELD(c, o, double) = v;
        break;
    }
    case OPT_BOOL: {
        int v;
        if (!strcmp(val, "1") || !strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "on")) v = 1;
        else if (!strcmp(val, "0") || !strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "off")) v = 0;
        else return fmt_err(err, errsize, "%s '%s': expected true or false", where, val);
        *FIELD(c, o, int) = v;
        break;
    }
    case OPT_STR: {
        if (o->choices) {
            char pat[256];
            snprintf(pat, sizeof pat, "|%s|", val);
            if (!*val || strchr(val, '|') || !strstr(o->choices, pat))
                return fmt_err(err, errsize, "%s '%s': must be one of %.*s", where, val,
                               (int)strlen(o->choices) - 2, o->choices + 1);
        }
        char **p = FIELD(c, o, char *);
        free(*p);
        *p = gt_strdup(val);
        break;
    }
    }
    return 0;
}

static void set_defaults(TrainConfig *c) {
    memset(c, 0, sizeof *c);
    char err[256];
    for (int i = 0; i < N_OPTS; i++)
        if (opts[i].def && set_opt(c, &opts[i], opts[i].def, "default", err, sizeof err) != 0)
            gt_fail(GT_EXIT_RUNTIME, "bad built-in default: %s", err);
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) *--e = '\0';
    return s;
}

static int parse_file(TrainConfig *c, const char *path, char *err, size_t errsize) {
    FILE *f = fopen(path, "r");
    if (!f) return fmt_err(err, errsize, "--config '%s': cannot open: %s", path, strerror(errno));
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
            rc = fmt_err(err, errsize, "--config '%s' line %d: expected `key = value`, got '%s'", path, lineno, s);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        if (strlen(val) >= 2 && (val[0] == '"' || val[0] == '\'') && val[strlen(val) - 1] == val[0]) {
            val[strlen(val) - 1] = '\0';
            val++;
        }
        const Opt *o = find_opt(key);
        if (!o || !o->help || !strcmp(o->name, "config")) {
            rc = fmt_err(err, errsize, "--config '%s' line %d: unknown key '%s' (see gpt-train --help)", path, lineno, key);
            break;
        }
        char where[512];
        snprintf(where, sizeof where, "--config '%s' line %d: %s =", path, lineno, key);
        rc = set_opt(c, o, val, where, err, errsize);
        if (rc == 0) c->given[o - opts] = 1;
    }
    free(line);
    fclose(f);
    return rc;
}

static char *help_text(void) {
    size_t cap = 16384, len = 0;
    char *h = gt_malloc(cap, "help");
#define ADD(...) len += (size_t)snprintf(h + len, len < cap ? cap - len : 0, __VA_ARGS__)
    ADD("usage: mpirun -np N gpt-train --data tokens.h5|FILE.txt --out RUN [--config FILE] [--resume] [options]\n\n"
        "Trains a GPT-2 data-parallel over the MPI ranks; writes RUN/ckpt-%%08d.h5, RUN/latest,\n"
        "RUN/metrics.csv, RUN/train.log (and RUN/attention.h5 with --attn-every).\n");
    const char *group = "";
    static const char *titles[][2] = {{"io", "input and output"}, {"model", "model"}, {"batch", "batch"},
                                      {"optim", "optimizer"},     {"run", "run"},     {"attn", "attention probe"},
                                      {"text", "text input only"}};
    for (int i = 0; i < N_OPTS; i++) {
        const Opt *o = &opts[i];
        if (!o->help) continue;
        if (strcmp(group, o->group) != 0) {
            group = o->group;
            for (size_t t = 0; t < sizeof titles / sizeof titles[0]; t++)
                if (!strcmp(titles[t][0], group)) ADD("\n%s:\n", titles[t][1]);
        }
        char flag[64];
        const char *meta = o->type == OPT_BOOL ? "" : o->type == OPT_REAL ? " X" : o->type != OPT_STR ? " N"
                           : !strcmp(o->group, "io") ? " PATH" : !strcmp(o->name, "attn-prompt") ? " TEXT" : " NAME";
        snprintf(flag, sizeof flag, "--%s%s", o->name, meta);
        ADD("  %-20s %s", flag, o->help);
        if (o->def && o->type != OPT_BOOL) ADD(" [%s]", o->def);
        ADD("\n");
    }
    ADD("\nA --config file holds the same names without dashes (`n_layer = 6`; `#` comments).\n"
        "Exit status: 0 done (or stopped by a signal after a checkpoint), 1 bad usage or input, 2 runtime failure.\n");
#undef ADD
    return h;
}

int config_parse(TrainConfig *c, int argc, char **argv, char *err, size_t errsize, char **help) {
    set_defaults(c);
    *help = NULL;
    // First pass: --help and --config, so the file is applied before any flag.
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            *help = help_text();
            return 1;
        }
        if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) {
            const char *path = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[i + 1] : NULL);
            if (!path) return fmt_err(err, errsize, "--config: missing value (a file of `key = value` lines)");
            if (parse_file(c, path, err, errsize) != 0) return -1;
            free(c->config_file);
            c->config_file = gt_strdup(path);
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return fmt_err(err, errsize, "unexpected argument '%s' (options are --name value; see --help)", a);
        char name[128];
        const char *eq = strchr(a, '='), *val = NULL;
        size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (n >= sizeof name) n = sizeof name - 1;
        memcpy(name, a + 2, n);
        name[n] = '\0';
        const Opt *o = strchr(name, '_') ? NULL : find_opt(name);
        if (!o) return fmt_err(err, errsize, "unknown option '--%s' (see gpt-train --help)", name);
        if (o->type == OPT_BOOL && !eq) {
            val = "1";
        } else if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc) return fmt_err(err, errsize, "--%s: missing value", name);
            val = argv[++i];
        }
        if (!strcmp(o->name, "config")) continue;  // applied above
        char where[160];
        snprintf(where, sizeof where, "--%s", name);
        if (set_opt(c, o, val, where, err, errsize) != 0) return -1;
        c->given[o - opts] = 1;
    }
    if (!c->data) return fmt_err(err, errsize, "--data is required (tokens.h5 or a text file; see --help)");
    if (!c->out) return fmt_err(err, errsize, "--out is required (the run directory; see --help)");
    return 0;
}

int config_check(const TrainConfig *c, char *err, size_t errsize) {
    if (c->min_lr > c->lr)
        return fmt_err(err, errsize, "--min-lr %g is larger than --lr %g", c->min_lr, c->lr);
    if (c->attn_prompt && !*c->attn_prompt)
        return fmt_err(err, errsize, "--attn-prompt: empty text (omit it to probe with the start of /val)");
    if (!c->pattern || !*c->pattern) return fmt_err(err, errsize, "--pattern: empty");
    return 0;
}

int config_given(const TrainConfig *c, const char *name) {
    const Opt *o = find_opt(name);
    return o ? c->given[o - opts] : 0;
}

static void value_text(const TrainConfig *c, const Opt *o, char *buf, size_t n) {
    switch (o->type) {
    case OPT_INT:
    case OPT_BOOL: snprintf(buf, n, "%d", *FIELD(c, o, int)); break;
    case OPT_I64: snprintf(buf, n, "%lld", *FIELD(c, o, long long)); break;
    case OPT_REAL: snprintf(buf, n, "%.9g", *FIELD(c, o, double)); break;
    case OPT_STR: {
        const char *s = *FIELD(c, o, char *);
        snprintf(buf, n, "%s", s ? s : "");
        break;
    }
    }
}

void config_print(const TrainConfig *c, FILE *f) {
    const char *group = "";
    for (int i = 0; i < N_OPTS; i++) {
        const Opt *o = &opts[i];
        if (!o->help || !o->stored) continue;  // not --config or --resume: reusing the file starts a run
        if (strcmp(group, o->group) != 0) {
            group = o->group;
            fprintf(f, "# %s\n", group);
        }
        char key[64], val[4096];
        key_of(o, key, sizeof key);
        value_text(c, o, val, sizeof val);
        if (o->type == OPT_STR && (strchr(val, '#') || strchr(val, ' ') || !*val)) {
            if (!*FIELD(c, o, char *)) fprintf(f, "# %s = (unset)\n", key);
            else fprintf(f, "%s = \"%s\"\n", key, val);
        } else {
            fprintf(f, "%s = %s\n", key, val);
        }
    }
}

void config_write_attrs(hid_t loc, const TrainConfig *c) {
    for (int i = 0; i < N_OPTS; i++) {
        const Opt *o = &opts[i];
        if (!o->stored) continue;
        char key[64];
        key_of(o, key, sizeof key);
        switch (o->type) {
        case OPT_INT:
        case OPT_BOOL: h5_attr_write_int(loc, key, *FIELD(c, o, int)); break;
        case OPT_I64: h5_attr_write_int(loc, key, *FIELD(c, o, long long)); break;
        case OPT_REAL: h5_attr_write_double(loc, key, *FIELD(c, o, double)); break;
        case OPT_STR: {
            const char *s = *FIELD(c, o, char *);
            h5_attr_write_str(loc, key, s ? s : "");
            break;
        }
        }
    }
}

void config_fill_from_attrs(TrainConfig *c, hid_t loc) {
    for (int i = 0; i < N_OPTS; i++) {
        const Opt *o = &opts[i];
        if (!o->stored || c->given[i] || !strcmp(o->name, "data") || !strcmp(o->name, "out")) continue;
        char key[64];
        key_of(o, key, sizeof key);
        int64_t iv;
        double dv;
        switch (o->type) {
        case OPT_INT:
        case OPT_BOOL:
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
        }
    }
}

void config_free(TrainConfig *c) {
    for (int i = 0; i < N_OPTS; i++)
        if (opts[i].type == OPT_STR) {
            char **p = FIELD(c, &opts[i], char *);
            free(*p);
            *p = NULL;
        }
}
