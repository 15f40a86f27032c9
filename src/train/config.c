// config.c - see config.h.
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "files.h"
#include "gpt2.h"
#include "options.h"
#include "utf8.h"

// Rows written to a checkpoint's /config and taken back by --resume (the paths are only written).
#define KEPT (CONFIG_STORED | CONFIG_RESUMED)

#define O(field) offsetof(TrainConfig, field)
static const Opt opts[] = {
    {"data", OPT_LIST, O(data), 0, 0, NULL, NULL, "io", CONFIG_STORED | OPT_REQUIRED, "PATH", "tokens.h5 from gpt-bpe encode, or UTF-8 text: files and directories (tokenized into RUN/)"},
    {"out", OPT_STR, O(out), 0, 0, NULL, NULL, "io", CONFIG_STORED | OPT_REQUIRED, "PATH", "run directory: checkpoints, metrics.csv, train.log, attention.h5"},
    {"config", OPT_STR, O(config_file), 0, 0, NULL, NULL, "io", 0, "PATH", "file of `key = value` lines (# comments); flags override it"},
    {"resume", OPT_BOOL, O(resume), 0, 1, NULL, "0", "io", 0, NULL, "continue from RUN/latest (settings not given default to the checkpoint's)"},
    {"init-from", OPT_STR, O(init_from), 0, 0, NULL, NULL, "io", KEPT, "CKPT|RUN", "a new run from this checkpoint's weights (RUN: its latest); model shape and tokenizer come from it"},
    {"init-optimizer", OPT_BOOL, O(init_optimizer), 0, 1, NULL, "0", "io", KEPT, NULL, "with --init-from: take its AdamW moments too (default: fresh ones)"},
    // Where --init-from's weights came from, recorded in /config (not flags: gpt-train fills them).
    {"init-from-step", OPT_I64, O(init_step), 0, 1e18, NULL, NULL, "io", KEPT, NULL, NULL},
    {"init-from-sha256", OPT_STR, O(init_sha256), 0, 0, NULL, NULL, "io", KEPT, NULL, NULL},

    {"n-layer", OPT_INT, O(n_layer), 1, 256, NULL, "5", "model", KEPT, NULL, "transformer blocks"},
    {"n-head", OPT_INT, O(n_head), 1, 1024, NULL, "4", "model", KEPT, NULL, "attention heads (must divide n-embd)"},
    {"n-embd", OPT_INT, O(n_embd), 1, 65536, NULL, "64", "model", KEPT, NULL, "embedding width"},
    {"block-size", OPT_INT, O(block_size), 1, GPT2_MAX_BLOCK, NULL, "16", "model", KEPT, NULL, "context length T"},
    {"dropout", OPT_REAL, O(dropout), 0, 0.999, NULL, "0.3", "model", KEPT, NULL, "dropout probability while training"},
    {"precision", OPT_STR, O(precision), 0, 0, "|fp32|bf16|", "fp32", "model", KEPT, "NAME", "matmul arithmetic: fp32, or bf16 (bf16 operands, fp32 accumulation, fp32 master weights; needs AVX512-BF16)"},

    {"batch-size", OPT_INT, O(batch_size), 1, 1 << 20, NULL, "32", "batch", KEPT, NULL, "sequences per rank per micro-batch"},
    {"grad-accum", OPT_INT, O(grad_accum), 1, 1 << 16, NULL, "1", "batch", KEPT, NULL, "micro-batches per optimizer step"},
    {"steps", OPT_I64, O(steps), 1, 1e15, NULL, "1000", "batch", KEPT, NULL, "the step the run ends at (with --resume too)"},

    {"lr", OPT_REAL, O(lr), 0, 10, NULL, "1e-3", "optim", KEPT, NULL, "peak learning rate"},
    {"min-lr", OPT_REAL, O(min_lr), 0, 10, NULL, "1e-4", "optim", KEPT, NULL, "learning rate at the end of the decay"},
    {"warmup", OPT_INT, O(warmup), 0, INT_MAX, NULL, "100", "optim", KEPT, NULL, "linear warmup steps"},
    {"lr-schedule", OPT_STR, O(lr_schedule), 0, 0, "|cosine|linear|constant|", "cosine", "optim", KEPT, "NAME", "decay after warmup: cosine|linear|constant"},
    {"weight-decay", OPT_REAL, O(weight_decay), 0, 10, NULL, "0.01", "optim", KEPT, NULL, "AdamW decoupled weight decay (2-D tensors only)"},
    {"beta1", OPT_REAL, O(beta1), 0, 0.999999, NULL, "0.9", "optim", KEPT, NULL, "AdamW beta1"},
    {"beta2", OPT_REAL, O(beta2), 0, 0.999999, NULL, "0.99", "optim", KEPT, NULL, "AdamW beta2"},
    {"eps", OPT_REAL, O(eps), 1e-30, 1, NULL, "1e-8", "optim", KEPT, NULL, "AdamW epsilon"},
    {"grad-clip", OPT_REAL, O(grad_clip), 0, 1e30, NULL, "1.0", "optim", KEPT, NULL, "clip the global gradient norm to this (0 = off)"},

    {"seed", OPT_I64, O(seed), 0, 9.2e18, NULL, "1337", "run", KEPT, NULL, "seed of weights, data order and dropout"},
    {"eval-every", OPT_INT, O(eval_every), 0, INT_MAX, NULL, "100", "run", KEPT, NULL, "evaluate on /val every N steps and at the end (0 = only at the end)"},
    {"eval-batches", OPT_INT, O(eval_batches), 0, INT_MAX, NULL, "0", "run", KEPT, NULL, "limit eval to K x batch-size x ranks windows (0 = all of /val)"},
    {"ckpt-every", OPT_INT, O(ckpt_every), 0, INT_MAX, NULL, "500", "run", KEPT, NULL, "checkpoint every N steps and at the end (0 = only at the end)"},
    {"keep-ckpts", OPT_INT, O(keep_ckpts), 1, INT_MAX, NULL, "3", "run", KEPT, NULL, "keep the newest N checkpoints"},
    {"log-every", OPT_INT, O(log_every), 1, INT_MAX, NULL, "10", "run", KEPT, NULL, "one log line and metrics.csv row every N steps"},
    {"threads", OPT_INT, O(threads), 1, 1024, NULL, "1", "run", KEPT, NULL, "BLAS/OpenMP threads per rank"},
    {"check-sync", OPT_BOOL, O(check_sync), 0, 1, NULL, "0", "run", KEPT, NULL, "verify every log step that all ranks hold identical weights"},
    {"skip-bad-steps", OPT_BOOL, O(skip_bad_steps), 0, 1, NULL, "0", "run", KEPT, NULL, "skip the update of a bad step (NaN/Inf loss or gradient, or a loss spike) instead of stopping"},
    {"loss-spike", OPT_REAL, O(loss_spike), 1, 1e6, NULL, "3", "run", KEPT | OPT_MIN_OPEN | OPT_ZERO_OFF, NULL, "a loss above this many times the mean of recent steps (at most ln V) is a bad step (exploding; 0 = off)"},
    {"allreduce-dtype", OPT_STR, O(allreduce_dtype), 0, 0, "|fp32|bf16|", "fp32", "run", KEPT, "NAME", "gradient exchange on the wire: fp32|bf16 (half the bytes; sums stay fp32)"},
    {"collective-timeout", OPT_STR, O(collective_timeout), 0, 0, NULL, "auto", "run", KEPT, "auto|S", "stop (exit 2) when a wait for the other ranks makes no progress for S seconds (0 to 1e7): auto = max(120, 50 x median step), 0 = off"},

    {"attn-every", OPT_INT, O(attn_every), 0, INT_MAX, NULL, "0", "attn", KEPT, NULL, "record the probe's attention into RUN/attention.h5 every N steps (0 = off)"},
    {"attn-prompt", OPT_STR, O(attn_prompt), 0, 0, NULL, NULL, "attn", KEPT | OPT_TEXT, "TEXT", "probe text (default: the first block-size tokens of /val)"},
    {"attn-dtype", OPT_STR, O(attn_dtype), 0, 0, "|float32|float16|", "float32", "attn", KEPT, "NAME", "float32|float16"},

    {"vocab-size", OPT_INT, O(vocab_size), 257, 1 << 24, NULL, "2000", "text", KEPT, NULL, "tokenizer vocabulary (text --data only)"},
    {"val-fraction", OPT_REAL, O(val_fraction), 0.0001, 0.9, NULL, "0.1", "text", KEPT, NULL, "last fraction of the tokens kept for /val (text --data only)"},
    {"pattern", OPT_STR, O(pattern), 0, 0, NULL, "llama3", "text", KEPT | OPT_TEXT, "NAME", "split regex: llama3|gpt4|gpt2|REGEX (text --data only)"},
    {"doc-separator", OPT_STR, O(doc_separator), 0, 0, NULL, NULL, "text", KEPT | OPT_TEXT, "TOKEN", "a special token placed between documents (files) of a text --data"},
    {"val-split", OPT_STR, O(val_split), 0, 0, "|tokens|docs|", "tokens", "text", KEPT, "HOW", "/val: the last tokens, or the fewest last whole documents holding them (text --data only)"},
    {"replace-invalid", OPT_BOOL, O(replace_invalid), 0, 1, NULL, "0", "text", KEPT, NULL, "map invalid UTF-8 in a text --data to U+FFFD instead of failing"},
};
#define N_OPTS OPT_COUNT(opts)
_Static_assert(sizeof opts / sizeof opts[0] <= sizeof((TrainConfig *)0)->given, "TrainConfig.given holds every option");

static const char *const groups[][2] = {{"io", "input and output"}, {"model", "model"}, {"batch", "batch"},
                                        {"optim", "optimizer"},     {"run", "run"},     {"attn", "attention probe"},
                                        {"text", "text input only"}};

static const OptTable table = {
    "gpt-train",
    "usage: mpirun -np N gpt-train --data tokens.h5|TEXT... --out RUN [--config FILE] [--resume | --init-from CKPT]\n"
    "       [options]\n\n"
    "Trains a GPT-2 data-parallel over the MPI ranks; writes RUN/ckpt-%08d.h5, RUN/latest,\n"
    "RUN/metrics.csv, RUN/train.log (and RUN/attention.h5 with --attn-every).\n",
    "\nA --config file holds the same names without dashes (`n_layer = 6`; `#` comments; \"quoted\" values\n"
    "with \\\\ \\\" \\n \\t \\r \\xHH escapes; docs/training.md). The configuration printed at start is one.\n"
    "Exit status: 0 done (or stopped by a signal after a checkpoint), 1 bad usage or input, 2 runtime failure.\n",
    opts, N_OPTS, groups, OPT_COUNT(groups)};

#define FIELD(c, o, T) ((T *)((char *)(c) + (o)->off))

const OptTable *config_table(void) { return &table; }

// A config file is small; this bounds what a wrong path (a log, /dev/zero) can cost.
#define CONFIG_MAX_BYTES ((size_t)4 << 20)

// The whole file, NUL-terminated, or NULL with the reason in err. Only a regular file is
// read: a directory would read as empty, a FIFO block until a writer comes, a device never end.
static char *read_config(const char *path, const char *shown, size_t *len, char *err, size_t errsize) {
    GtErr e = GT_ERR_INIT;
    int64_t size = 0;
    int fd = gt_open_input(path, "--config", &size, &e);  // never blocks, on a FIFO either
    struct stat st;
    const char *kind = fd >= 0 ? NULL : stat(path, &st) == 0 && !S_ISREG(st.st_mode) ? gt_file_kind(st.st_mode)
                                       : strerror(errno);
    if (!kind && (size_t)size > CONFIG_MAX_BYTES) kind = "larger than 4 MiB";
    char *buf = kind ? NULL : gt_malloc(CONFIG_MAX_BYTES + 1, "config file");
    size_t n = 0;
    while (buf && n <= CONFIG_MAX_BYTES) {  // to the end, or one byte past the bound (a file still growing)
        ssize_t k = read(fd, buf + n, CONFIG_MAX_BYTES + 1 - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) kind = strerror(errno);
        if (k <= 0) break;
        n += (size_t)k;
    }
    if (fd >= 0) close(fd);
    if (!kind && n > CONFIG_MAX_BYTES) kind = "larger than 4 MiB";
    if (kind) {
        free(buf);
        return opt_error(err, errsize, "--config '%s': %s; --config takes a regular file of `key = value` lines (at most 4 MiB)",
                         shown, kind), NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static char *skip_blank(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r') s++;
    return s;
}

static char *trim(char *s) {
    s = skip_blank(s);
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) *--e = '\0';
    return s;
}

static int hex(char ch) {
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

// One line of a config file (docs/training.md, config files): blank, a `#` comment, or
// `key = value` where the value is bare (up to a `#`, blanks around it dropped), "double
// quoted" (escapes \\ \" \n \t \r \xHH) or 'single quoted' (as written). Sets *key and *val
// (unquoted in place; *key NULL on a blank line); returns what is wrong, or NULL.
static const char *split_line(char *s, char **key, char **val) {
    *key = *val = NULL;
    s = skip_blank(s);
    if (!*s || *s == '#') return NULL;
    size_t k = strcspn(s, "=#");
    if (s[k] != '=') return "expected `key = value`";
    s[k] = '\0';
    *key = trim(s);
    char *v = skip_blank(s + k + 1);
    if (*v != '"' && *v != '\'') {
        v[strcspn(v, "#")] = '\0';
        *val = trim(v);
        return NULL;
    }
    char q = *v, *o = v, *p = v + 1;  // unquote in place: o never passes p
    for (; *p && *p != q; p++) {
        if (q == '\'' || *p != '\\') {
            *o++ = *p;
            continue;
        }
        switch (*++p) {
        case '\\': case '"': *o++ = *p; break;
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'x':
            if (hex(p[1]) >= 0 && hex(p[2]) >= 0 && (hex(p[1]) | hex(p[2]))) {
                *o++ = (char)(hex(p[1]) * 16 + hex(p[2]));
                p += 2;
                break;
            }
            return "\\x needs two hex digits, not 00 (a value cannot hold a NUL byte)";
        default: return "unknown escape in a \"quoted\" value (use \\\\, \\\", \\n, \\t, \\r or \\xHH)";
        }
    }
    if (*p != q) return q == '"' ? "a \"quoted\" value without its closing quote" : "a 'quoted' value without its closing quote";
    *o = '\0';
    p = skip_blank(p + 1);
    if (*p && *p != '#') return "text after the closing quote (a comment starts with #)";
    *val = v;
    return NULL;
}

static int parse_file(TrainConfig *c, const char *path, char *err, size_t errsize) {
    char shown[512];
    utf8_escape(shown, sizeof shown, path, 0);
    size_t len;
    char *text = read_config(path, shown, &len, err, errsize);
    if (!text) return -1;
    int first_line[N_OPTS] = {0};  // where each key was set: a key given twice is a mistake
    char *line = text, *next;
    if (len >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) line += 3;  // a UTF-8 byte order mark (Windows editors)
    int rc = 0;
    for (int lineno = 1; rc == 0 && line < text + len; lineno++, line = next) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        next = nl ? nl + 1 : text + len;
        if (nl) *nl = '\0';
        if (strlen(line) != (size_t)((nl ? nl : text + len) - line)) {
            rc = opt_error(err, errsize, "--config '%s' line %d: a NUL byte (not a text file?)", shown, lineno);
            break;
        }
        char *key, *val, what[256];
        utf8_escape(what, sizeof what, line, 0);
        const char *bad = split_line(line, &key, &val);
        if (bad) {
            rc = opt_error(err, errsize, "--config '%s' line %d: %s, got '%s'", shown, lineno, bad, what);
            break;
        }
        if (!key) continue;
        const Opt *o = opt_find(&table, key);
        utf8_escape(what, sizeof what, key, 0);
        if (!o || !o->help || !strcmp(o->name, "config")) {
            rc = opt_error(err, errsize, "--config '%s' line %d: unknown key '%s' (see gpt-train --help)", shown, lineno, what);
            break;
        }
        int i = (int)(o - opts);
        if (first_line[i] && o->type != OPT_LIST) {
            rc = opt_error(err, errsize, "--config '%s' line %d: %s given twice (first on line %d); keep one", shown, lineno,
                           what, first_line[i]);
            break;
        }
        first_line[i] = lineno;
        char where[1024];
        snprintf(where, sizeof where, "--config '%s' line %d: %s =", shown, lineno, what);
        rc = opt_set(o, c, val, where, err, errsize);
        c->given[i] = 1;
    }
    free(text);
    return rc;
}

int config_parse(TrainConfig *c, int argc, char **argv, char *err, size_t errsize, char **help) {
    opt_defaults(&table, c);
    memset(c->given, 0, sizeof c->given);
    *help = NULL;
    // The command line twice: first to find --config (the file goes under every flag), then
    // over the file's settings.
    TrainConfig first;
    unsigned char on_line[N_OPTS] = {0};
    opt_defaults(&table, &first);
    int rc = opt_parse(&table, &first, argc - 1, argv + 1, on_line, err, errsize);
    if (rc == 1) *help = opt_help(&table);
    if (rc == 0 && first.config_file) rc = parse_file(c, first.config_file, err, errsize);
    for (int i = 0; rc == 0 && i < N_OPTS; i++)  // a repeatable flag replaces the file's list
        if (opts[i].type == OPT_LIST && on_line[i]) {
            OptList *l = FIELD(c, &opts[i], OptList);
            for (int k = 0; k < l->n; k++) free(l->v[k]);
            l->n = 0;
        }
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
    if (config_timeout(c) < -1.5)  // -2: not a number
        return opt_error(err, errsize, "--collective-timeout '%s': expected auto or a number of seconds from 0 (off) to 1e7",
                         c->collective_timeout ? c->collective_timeout : "");
    Precision p;
    if (!c->precision || !precision_parse(c->precision, &p))  // a checkpoint's /config is not the table's check
        return opt_error(err, errsize, "--precision '%s': must be fp32 or bf16", c->precision ? c->precision : "");
    return 0;
}

double config_timeout(const TrainConfig *c) {
    const char *s = c->collective_timeout;
    if (!s || !strcmp(s, "auto")) return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    return end != s && !*end && !errno && isfinite(v) && v >= 0 && v <= 1e7 ? v : -2;
}

// A string value as a config file line reads it back: bare when that is exact, else quoted.
static void print_value(FILE *f, const char *key, const char *v) {
    size_t n = strlen(v);
    char *q = gt_malloc(4 * n + 1, "config value");
    utf8_escape(q, 4 * n + 1, v, 1);
    int bare = n > 0 && !strcmp(q, v) && !strchr(v, '#') && v[0] != '\'' && v[0] != ' ' && v[0] != '\t' &&
               v[n - 1] != ' ' && v[n - 1] != '\t';
    fprintf(f, bare ? "%s = %s\n" : "%s = \"%s\"\n", key, q);
    free(q);
}

void config_print(const TrainConfig *c, FILE *f) {
    const char *group = "";
    for (int i = 0; i < N_OPTS; i++) {
        const Opt *o = &opts[i];
        if (!o->help || !(o->flags & CONFIG_STORED)) continue;  // not --config or --resume: reusing the file starts a run
        if (strcmp(group, o->group) != 0) {
            group = o->group;
            fprintf(f, "# %s\n", group);
        }
        char key[64];
        opt_key(o, key, sizeof key);
        if (o->type == OPT_LIST) {
            const OptList *l = FIELD(c, o, const OptList);
            for (int k = 0; k < l->n; k++) print_value(f, key, l->v[k]);
            if (!l->n) fprintf(f, "# %s = (none)\n", key);
        } else if (o->type == OPT_STR) {
            const char *v = *FIELD(c, o, char *const);
            if (v) print_value(f, key, v);
            else fprintf(f, "# %s = (unset)\n", key);
        } else {
            char *v = opt_value_text(o, c);
            fprintf(f, "%s = %s\n", key, v);
            free(v);
        }
    }
}

void config_free(TrainConfig *c) { opt_free(&table, c); }

int config_given(const TrainConfig *c, const char *name) {
    const OptTable *t = config_table();
    const Opt *o = opt_find(t, name);
    return o ? c->given[o - t->rows] : 0;
}
