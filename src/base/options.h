// options.h - command lines from one table per command.
//
// Each row describes one option once: its flag, type, range, default and help. Parsing
// (`--name VALUE` or `--name=VALUE`), range checks, --help and the error messages (one
// sentence naming the flag) all walk the table, so adding a row is all a new option needs.
// gpt-train's config file and /config attributes are built on the same rows (config.h).
#ifndef GT_OPTIONS_H
#define GT_OPTIONS_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    OPT_INT,   // int
    OPT_I64,   // long long
    OPT_REAL,  // double (finite)
    OPT_STR,   // char *, malloc'd, NULL when unset; `choices` can restrict it
    OPT_LIST,  // OptList: a repeatable string option, each occurrence appended
    OPT_BOOL,  // int 0|1: `--x` sets it, `--x=VALUE` takes true|false|yes|no|on|off|1|0
    OPT_FLAG,  // int 0|1: `--x` sets it; it takes no value
} OptType;

enum {  // Opt.flags
    OPT_TEXT = 1 << 0,      // strings: text (valid UTF-8 required), not a path
    OPT_REQUIRED = 1 << 1,  // strings: must be set when parsing ends
    OPT_MIN_OPEN = 1 << 2,  // numbers: min itself is outside the range
    OPT_MAX_OPEN = 1 << 3,  // numbers: max itself is outside the range
    OPT_ZERO_OFF = 1 << 4,  // numbers: 0 (off) is accepted besides the range
    OPT_TOOL = 1 << 8,      // first bit left to the tool (gpt-train: stored in /config)
};

typedef struct {
    char **v;  // malloc'd strings
    int n;
} OptList;

typedef struct {
    const char *name;     // the flag without dashes ("n-layer"); config keys may use '_'
    OptType type;
    size_t off;           // offsetof(the command's settings struct, field)
    double min, max;      // numbers: the range, inclusive unless flags say open; max INFINITY: none
    const char *choices;  // OPT_STR: "|a|b|c|" lists the accepted values; NULL: free
    const char *def;      // the default, as it would be typed; NULL: unset (0 for numbers)
    const char *group;    // heading in --help (OptTable.groups); NULL: none
    unsigned flags;
    const char *meta;     // the value's name in --help ("PATH"); NULL: N, X or VALUE by type
    const char *help;     // one line for --help; NULL hides the row: no flag, no config key, set by the tool
} Opt;

typedef struct {
    const char *prog;    // "gpt-bpe train": named in messages ("see gpt-bpe train --help")
    const char *usage;   // --help's opening lines
    const char *footer;  // --help's closing lines, or NULL
    const Opt *rows;
    int n_rows;
    const char *const (*groups)[2];  // {group, heading} in --help's order, or NULL
    int n_groups;
} OptTable;

#define OPT_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

// Sets every row with a default (strings to a copy, lists empty, the rest 0 first).
void opt_defaults(const OptTable *t, void *obj);
// The row called `name` ('-' or '_' between words), or NULL.
const Opt *opt_find(const OptTable *t, const char *name);
// The row's key in config files and attributes: its name with '_' for '-' ("n_layer").
void opt_key(const Opt *o, char *key, size_t n);
// Sets one option from text, checking type, range, choices and UTF-8. `where` starts the
// message ("--lr", "--config 'f' line 3: lr ="). 0, or -1 with one sentence in err.
int opt_set(const Opt *o, void *obj, const char *val, const char *where, char *err, size_t errsize);
// Parses argv[0..argc) (no program name). given (n_rows bytes, or NULL) is set to 1 for each
// row on the command line. --help or -h anywhere: returns 1. Returns 0, or -1 with one
// sentence naming the flag in err.
int opt_parse(const OptTable *t, void *obj, int argc, char **argv, unsigned char *given, char *err,
              size_t errsize);
// An error naming the first OPT_REQUIRED row left unset: 0, or -1 with the sentence in err.
int opt_check_required(const OptTable *t, const void *obj, char *err, size_t errsize);
// opt_defaults, opt_parse and opt_check_required for a main that exits: --help prints opt_help to stdout and exits 0, an error is
// "PROG: error: ..." and exit 1.
void opt_parse_or_exit(const OptTable *t, void *obj, int argc, char **argv, unsigned char *given);
// The --help text (malloc'd): usage, the rows by group with their defaults, footer.
char *opt_help(const OptTable *t);
// The row's value as text (numbers exactly as opt_set reads them back; strings raw, "" when
// unset); malloc'd.
char *opt_value_text(const Opt *o, const void *obj);
// Formats one sentence into err[0..n) and returns -1: for parsers built on the table.
int opt_error(char *err, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// Frees the strings and lists of obj.
void opt_free(const OptTable *t, void *obj);
// A list's values joined by ", " into out (n bytes, truncated), each in single quotes when
// `quoted` (for messages: "'a.txt', 'docs/'").
void opt_list_join(const OptList *l, int quoted, char *out, size_t n);

#endif
