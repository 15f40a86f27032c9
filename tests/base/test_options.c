// test_options.c - the option-table mechanism (src/base/options.h) on a table with a row of
// every kind, as a new tool's table would use it: values in both spellings, switches and
// booleans, repeatable strings, UTF-8 text, closed, open and "0 = off" ranges, choices,
// required options, overflow, --help; each mistake one sentence naming the flag.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"

typedef struct {
    int n, flag, on;
    long long big;
    double frac, spike;
    char *path, *text, *mode;
    OptList inputs;
} Args;

#define A(f) offsetof(Args, f)
static const Opt rows[] = {
    {"count", OPT_INT, A(n), 1, 100, NULL, "10", NULL, 0, NULL, "how many"},
    {"big", OPT_I64, A(big), 0, 9223372036854775807.0, NULL, "1", NULL, 0, NULL, "a seed"},
    {"frac", OPT_REAL, A(frac), 0, 1, NULL, "0.5", NULL, OPT_MAX_OPEN, "F", "a fraction in [0, 1)"},
    {"spike", OPT_REAL, A(spike), 1, 1e6, NULL, "3", NULL, OPT_MIN_OPEN | OPT_ZERO_OFF, NULL, "0 = off"},
    {"path", OPT_STR, A(path), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "PATH", "a path (any bytes)"},
    {"text", OPT_STR, A(text), 0, 0, NULL, NULL, NULL, OPT_TEXT, "TEXT", "some text"},
    {"mode", OPT_STR, A(mode), 0, 0, "|fast|slow|exact|", "fast", NULL, 0, "NAME", "fast, slow or exact"},
    {"input", OPT_LIST, A(inputs), 0, 0, NULL, NULL, NULL, OPT_TEXT, "FILE", "an input"},
    {"force", OPT_FLAG, A(flag), 0, 0, NULL, NULL, NULL, 0, NULL, "a switch"},
    {"check", OPT_BOOL, A(on), 0, 1, NULL, "0", NULL, 0, NULL, "a boolean"},
};
static const OptTable table = {"tool", "usage: tool --path PATH [options]\n", "Footer.\n", rows, OPT_COUNT(rows), NULL, 0};

static int failures;

static void check(int cond, const char *what, const char *detail) {
    if (!cond) {
        printf("FAIL: %s (%s)\n", what, detail);
        failures++;
    }
}

// Parses the NULL-terminated words; returns opt_parse's code (and the required check's).
static int parse(Args *a, char *err, const char *first, ...) {
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *w = first; w; w = va_arg(ap, const char *)) argv[argc++] = (char *)w;
    va_end(ap);
    opt_defaults(&table, a);
    err[0] = '\0';
    int rc = opt_parse(&table, a, argc, argv, NULL, err, 512);
    if (rc == 0) rc = opt_check_required(&table, a, err, 512);
    return rc;
}

// One mistake: -1 and a message containing each needle.
static void bad(const char *needle1, const char *needle2, const char *first, ...) {
    char *argv[32], err[512] = "";
    int argc = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *w = first; w; w = va_arg(ap, const char *)) argv[argc++] = (char *)w;
    va_end(ap);
    Args a;
    opt_defaults(&table, &a);
    int rc = opt_parse(&table, &a, argc, argv, NULL, err, sizeof err);
    if (rc == 0) rc = opt_check_required(&table, &a, err, sizeof err);
    char what[256];
    snprintf(what, sizeof what, "'%s ...' is refused naming '%s' and '%s'", first, needle1, needle2);
    check(rc == -1 && strstr(err, needle1) && strstr(err, needle2) && !strchr(err, '\n'), what, err);
    opt_free(&table, &a);
}

int main(void) {
    Args a;
    char err[512];
    // defaults and both spellings
    int rc = parse(&a, err, "--path", "p", NULL);
    check(rc == 0 && a.n == 10 && a.big == 1 && a.frac == 0.5 && a.spike == 3 && !strcmp(a.mode, "fast") && !a.text &&
              a.inputs.n == 0 && !a.flag && !a.on, "defaults", err);
    opt_free(&table, &a);
    rc = parse(&a, err, "--path=p=q", "--count", "7", "--big=9223372036854775807", "--frac", "0", "--spike=0",
               "--text", "caf\xc3\xa9 \"#\" \n", "--mode=exact", "--input", "a", "--input=-", "--input", "dir/",
               "--force", "--check=yes", NULL);
    check(rc == 0 && !strcmp(a.path, "p=q") && a.n == 7 && a.big == 9223372036854775807LL && a.frac == 0 &&
              a.spike == 0 && !strcmp(a.text, "caf\xc3\xa9 \"#\" \n") && !strcmp(a.mode, "exact") && a.flag && a.on,
          "values in both spellings", err);
    check(a.inputs.n == 3 && !strcmp(a.inputs.v[0], "a") && !strcmp(a.inputs.v[1], "-") && !strcmp(a.inputs.v[2], "dir/"),
          "a repeatable option keeps every value in order", err);
    opt_free(&table, &a);
    check(parse(&a, err, "--path", "\xff\xfe", "--check", "--check=off", NULL) == 0 && !a.on && !strcmp(a.path, "\xff\xfe"),
          "a path takes any bytes; a boolean's last word wins", err);
    opt_free(&table, &a);
    check(parse(&a, err, "--path", "p", "--spike", "1.000001", "--frac", "0.999", NULL) == 0, "just inside open ranges",
          err);
    opt_free(&table, &a);
    check(parse(&a, err, "--path", "p", "--count", "-1", "--help", NULL) == 1, "--help anywhere wins", err);
    opt_free(&table, &a);

    // mistakes: one sentence naming the flag and what is wrong
    bad("--count", "needs a value", "--path", "p", "--count", NULL);
    bad("--count 'ten'", "not an integer (must be between 1 and 100)", "--count", "ten", NULL);
    bad("--count '2.5'", "not an integer", "--count", "2.5", NULL);
    bad("--count 101", "must be between 1 and 100", "--count", "101", NULL);
    bad("--count 99999999999999999999", "must be between 1 and 100", "--count", "99999999999999999999", NULL);
    bad("--big 9223372036854775808", "must be between 0 and 9223372036854775807", "--big", "9223372036854775808", NULL);
    bad("--big -1", "must be between 0 and", "--big", "-1", NULL);
    bad("--frac 1", "must be in [0, 1)", "--frac", "1", NULL);
    bad("--frac 'nan'", "not a finite number", "--frac", "nan", NULL);
    bad("--frac 1e999", "must be in [0, 1)", "--frac", "1e999", NULL);
    bad("--frac 'x'", "not a number (must be in [0, 1))", "--frac", "x", NULL);
    bad("--spike 1", "must be 0 (off) or in (1, 1e+06]", "--spike", "1", NULL);
    bad("--spike 0.5", "must be 0 (off) or in (1, 1e+06]", "--spike", "0.5", NULL);
    bad("--mode 'quick'", "must be fast, slow or exact", "--mode", "quick", NULL);
    bad("--mode ''", "must be fast, slow or exact", "--mode", "", NULL);
    bad("--mode 'fast|slow'", "must be", "--mode", "fast|slow", NULL);
    bad("--mode 'fas'", "must be", "--mode", "fas", NULL);
    bad("--text", "invalid UTF-8 at byte 3", "--text", "caf\xe9", NULL);
    bad("--input", "invalid UTF-8 at byte 0", "--input", "\xc0\xaf", NULL);
    bad("--force", "takes no value", "--force=yes", NULL);
    bad("--check 'maybe'", "expected true or false", "--check=maybe", NULL);
    bad("unknown option '--bogus'", "see tool --help", "--bogus=1", NULL);
    bad("unknown option '--count_x'", "see tool --help", "--count_x", "1", NULL);
    bad("unexpected argument 'stray'", "see tool --help", "stray", NULL);
    bad("--path is required", "a path", "--count", "3", NULL);
    bad("'\\x1B[2J'", "unexpected argument", "\x1b[2J", NULL);  // control bytes never reach the terminal

    // --help: usage, every row with its value name and default, repeatable marked, footer
    char *h = opt_help(&table);
    check(strstr(h, "usage: tool") && strstr(h, "--count N") && strstr(h, "how many [10]") &&
              strstr(h, "--frac F") && strstr(h, "--input FILE") && strstr(h, "an input (repeatable)") &&
              strstr(h, "--force ") && !strstr(h, "a switch [") && strstr(h, "Footer."),
          "--help lists every row", h);
    free(h);

    // opt_value_text reads back exactly
    Args b;
    opt_defaults(&table, &b);
    b.frac = 0.1;
    char *t = opt_value_text(&rows[2], &b);
    check(!strcmp(t, "0.1") && strtod(t, NULL) == 0.1, "a real prints as the shortest exact text", t);
    free(t);
    b.frac = nextafter(0.1, 1);
    t = opt_value_text(&rows[2], &b);
    check(strtod(t, NULL) == b.frac, "a real one ulp away prints exactly too", t);
    free(t);
    opt_free(&table, &b);

    printf("test_options: %s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
