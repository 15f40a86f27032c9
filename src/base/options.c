// options.c - see options.h.
#include "options.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "utf8.h"

#define FIELD(obj, o, T) ((T *)((char *)(obj) + (o)->off))

int opt_error(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static int is_int(const Opt *o) { return o->type == OPT_INT || o->type == OPT_I64; }

// Integer bounds of a row: doubles hold INT64_MAX only rounded up, so clamp.
static long long int_bound(double x) {
    return x >= 9223372036854775807.0 ? LLONG_MAX : x <= -9223372036854775807.0 ? LLONG_MIN : (long long)x;
}

static int in_range(const Opt *o, double v, long long iv) {
    if ((o->flags & OPT_ZERO_OFF) && v == 0) return 1;
    if (is_int(o)) {
        long long lo = int_bound(o->min), hi = int_bound(o->max);
        return ((o->flags & OPT_MIN_OPEN) ? iv > lo : iv >= lo) && ((o->flags & OPT_MAX_OPEN) ? iv < hi : iv <= hi);
    }
    return ((o->flags & OPT_MIN_OPEN) ? v > o->min : v >= o->min) &&
           ((o->flags & OPT_MAX_OPEN) ? v < o->max : v <= o->max);
}

static void num_text(const Opt *o, double x, char *buf, size_t n) {
    if (is_int(o)) snprintf(buf, n, "%lld", int_bound(x));
    else snprintf(buf, n, "%g", x);
}

// "must be between 1 and 256", "must be >= 0", "must be 0 (off) or in (1, 1e+06]".
static void range_text(const Opt *o, char *buf, size_t n) {
    char lo[32], hi[32], span[96];
    num_text(o, o->min, lo, sizeof lo);
    num_text(o, o->max, hi, sizeof hi);
    int open_lo = (o->flags & OPT_MIN_OPEN) != 0, open_hi = (o->flags & OPT_MAX_OPEN) != 0;
    if (isinf(o->max)) snprintf(span, sizeof span, "%s %s", open_lo ? ">" : ">=", lo);
    else if (!open_lo && !open_hi) snprintf(span, sizeof span, "between %s and %s", lo, hi);
    else snprintf(span, sizeof span, "in %c%s, %s%c", open_lo ? '(' : '[', lo, hi, open_hi ? ')' : ']');
    snprintf(buf, n, "must be %s%s", (o->flags & OPT_ZERO_OFF) ? "0 (off) or " : "", span);
}

static int parse_bool(const char *v, int *out) {
    static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcmp(v, yes[i])) return *out = 1, 1;
        if (!strcmp(v, no[i])) return *out = 0, 1;
    }
    return 0;
}

int opt_set(const Opt *o, void *obj, const char *val, const char *where, char *err, size_t errsize) {
    char shown[256], range[160];
    utf8_escape(shown, sizeof shown, val, 0);  // a value in a message never carries raw control bytes
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case OPT_INT:
    case OPT_I64: {
        long long v = strtoll(val, &end, 10);
        range_text(o, range, sizeof range);
        if (end == val || *end) return opt_error(err, errsize, "%s '%s': not an integer (%s)", where, shown, range);
        if (errno == ERANGE || !in_range(o, (double)v, v)) return opt_error(err, errsize, "%s %s: %s", where, shown, range);
        if (o->type == OPT_INT) *FIELD(obj, o, int) = (int)v;
        else *FIELD(obj, o, long long) = v;
        return 0;
    }
    case OPT_REAL: {
        double v = strtod(val, &end);
        range_text(o, range, sizeof range);
        if (end == val || *end) return opt_error(err, errsize, "%s '%s': not a number (%s)", where, shown, range);
        if (errno == ERANGE && fabs(v) > 1)  // too large for a double; underflow rounds to 0 or a subnormal
            return opt_error(err, errsize, "%s %s: %s", where, shown, range);
        if (!isfinite(v)) return opt_error(err, errsize, "%s '%s': not a finite number (%s)", where, shown, range);
        if (!in_range(o, v, 0)) return opt_error(err, errsize, "%s %s: %s", where, shown, range);
        *FIELD(obj, o, double) = v;
        return 0;
    }
    case OPT_BOOL:
    case OPT_FLAG: {
        int v;
        if (!parse_bool(val, &v)) return opt_error(err, errsize, "%s '%s': expected true or false", where, shown);
        *FIELD(obj, o, int) = v;
        return 0;
    }
    case OPT_STR:
    case OPT_LIST: {
        size_t bad;
        if ((o->flags & OPT_TEXT) && !utf8_validate(val, strlen(val), &bad))
            return opt_error(err, errsize, "%s: invalid UTF-8 at byte %zu", where, bad);
        if (o->choices) {
            size_t n = strlen(val);
            const char *hit = NULL;  // choices: "|a|b|c|"
            for (const char *p = o->choices; p && p[1]; p = strchr(p + 1, '|'))
                if (strncmp(p + 1, val, n) == 0 && p[n + 1] == '|') hit = p;
            if (!*val || strchr(val, '|') || !hit) {
                char list[256];  // "|a|b|c|" -> "a, b or c"
                size_t k = 0;
                for (const char *p = o->choices + 1; *p && k + 8 < sizeof list; p++) {
                    if (*p != '|') list[k++] = *p;
                    else if (p[1]) k += (size_t)snprintf(list + k, sizeof list - k, strchr(p + 1, '|')[1] ? ", " : " or ");
                }
                list[k] = '\0';
                return opt_error(err, errsize, "%s '%s': must be %s", where, shown, list);
            }
        }
        if (o->type == OPT_STR) {
            char **s = FIELD(obj, o, char *);
            free(*s);
            *s = gt_strdup(val);
        } else {
            OptList *l = FIELD(obj, o, OptList);
            l->v = gt_realloc(l->v, (size_t)(l->n + 1) * sizeof *l->v, "option values");
            l->v[l->n++] = gt_strdup(val);
        }
        return 0;
    }
    }
    return opt_error(err, errsize, "%s: unknown option type", where);
}

void opt_defaults(const OptTable *t, void *obj) {
    char err[256];
    for (int i = 0; i < t->n_rows; i++) {
        const Opt *o = &t->rows[i];
        switch (o->type) {
        case OPT_INT:
        case OPT_BOOL:
        case OPT_FLAG: *FIELD(obj, o, int) = 0; break;
        case OPT_I64: *FIELD(obj, o, long long) = 0; break;
        case OPT_REAL: *FIELD(obj, o, double) = 0; break;
        case OPT_STR: *FIELD(obj, o, char *) = NULL; break;
        case OPT_LIST: *FIELD(obj, o, OptList) = (OptList){NULL, 0}; break;
        }
        if (o->def && opt_set(o, obj, o->def, o->name, err, sizeof err) != 0)
            gt_fail(GT_EXIT_RUNTIME, "bad built-in default: %s", err);
    }
}

const Opt *opt_find(const OptTable *t, const char *name) {
    size_t n = strlen(name);
    for (int i = 0; i < t->n_rows; i++) {
        const char *r = t->rows[i].name;
        if (strlen(r) != n) continue;
        size_t k = 0;
        while (k < n && (name[k] == r[k] || (name[k] == '_' && r[k] == '-'))) k++;
        if (k == n) return &t->rows[i];
    }
    return NULL;
}

void opt_key(const Opt *o, char *key, size_t n) {
    snprintf(key, n, "%s", o->name);
    for (char *p = key; *p; p++)
        if (*p == '-') *p = '_';
}

int opt_parse(const OptTable *t, void *obj, int argc, char **argv, unsigned char *given, char *err,
              size_t errsize) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    char shown[256];
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || !a[2]) {
            utf8_escape(shown, sizeof shown, a, 0);
            return opt_error(err, errsize, "unexpected argument '%s' (options are --name value; see %s --help)", shown,
                           t->prog);
        }
        const char *eq = strchr(a, '=');
        char name[128];
        size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        snprintf(name, sizeof name, "%.*s", (int)n, a + 2);
        // On the command line words are joined by '-' only; '_' is for config-file keys.
        const Opt *o = strchr(name, '_') ? NULL : opt_find(t, name);
        if (o && !o->help) o = NULL;  // a hidden row is filled by the tool, never a flag
        if (!o) {
            utf8_escape(shown, sizeof shown, name, 0);
            return opt_error(err, errsize, "unknown option '--%s' (see %s --help)", shown, t->prog);
        }
        const char *val;
        if (o->type == OPT_FLAG && eq) return opt_error(err, errsize, "--%s takes no value", o->name);
        if ((o->type == OPT_FLAG || o->type == OPT_BOOL) && !eq) val = "1";
        else if (eq) val = eq + 1;
        else if (i + 1 < argc) val = argv[++i];
        else return opt_error(err, errsize, "--%s: needs a value (see %s --help)", o->name, t->prog);
        char where[160];
        snprintf(where, sizeof where, "--%s", o->name);
        if (opt_set(o, obj, val, where, err, errsize) != 0) return -1;
        if (given) given[o - t->rows] = 1;
    }
    return 0;
}

int opt_check_required(const OptTable *t, const void *obj, char *err, size_t errsize) {
    for (int i = 0; i < t->n_rows; i++) {
        const Opt *o = &t->rows[i];
        if (!(o->flags & OPT_REQUIRED)) continue;
        int set = o->type == OPT_LIST ? FIELD(obj, o, const OptList)->n > 0 : *FIELD(obj, o, char *const) != NULL;
        if (!set)
            return opt_error(err, errsize, "--%s is required: %s (see %s --help)", o->name, o->help ? o->help : "",
                           t->prog);
    }
    return 0;
}

void opt_parse_or_exit(const OptTable *t, void *obj, int argc, char **argv, unsigned char *given) {
    char err[4096];
    opt_defaults(t, obj);
    int rc = opt_parse(t, obj, argc, argv, given, err, sizeof err);
    if (rc == 1) {
        char *h = opt_help(t);
        fputs(h, stdout);
        free(h);
        if (fflush(stdout) != 0) gt_fail(GT_EXIT_RUNTIME, "writing to stdout failed: %s", strerror(errno));
        exit(0);
    }
    if (rc == 0) rc = opt_check_required(t, obj, err, sizeof err);
    if (rc != 0) gt_fail_usage("%s", err);
}

char *opt_help(const OptTable *t) {
    size_t cap = 1024, len = 0;
    for (int i = 0; i < t->n_rows; i++)
        cap += 64 + (t->rows[i].help ? strlen(t->rows[i].help) : 0) + (t->rows[i].def ? strlen(t->rows[i].def) : 0);
    cap += strlen(t->usage) + (t->footer ? strlen(t->footer) : 0);
    char *h = gt_malloc(cap, "help");
#define ADD(...) len += (size_t)snprintf(h + len, len < cap ? cap - len : 0, __VA_ARGS__)
    ADD("%s", t->usage);
    const char *group = NULL;
    for (int i = 0; i < t->n_rows; i++) {
        const Opt *o = &t->rows[i];
        if (!o->help) continue;
        if (o->group && (!group || strcmp(group, o->group) != 0)) {
            group = o->group;
            for (int g = 0; g < t->n_groups; g++)
                if (!strcmp(t->groups[g][0], group)) ADD("\n%s:\n", t->groups[g][1]);
        }
        const char *meta = o->meta                                       ? o->meta
                           : o->type == OPT_BOOL || o->type == OPT_FLAG ? NULL
                           : o->type == OPT_REAL                        ? "X"
                           : is_int(o)                                   ? "N"
                                                                         : "VALUE";
        char flag[64];
        snprintf(flag, sizeof flag, "--%s%s%s", o->name, meta ? " " : "", meta ? meta : "");
        ADD("  %-20s %s", flag, o->help);
        if (o->type == OPT_LIST) ADD(" (repeatable)");
        if (o->def && o->type != OPT_BOOL && o->type != OPT_FLAG) ADD(" [%s]", o->def);
        ADD("\n");
    }
    if (t->footer) ADD("%s", t->footer);
#undef ADD
    return h;
}

char *opt_value_text(const Opt *o, const void *obj) {
    char buf[64];
    switch (o->type) {
    case OPT_INT:
    case OPT_BOOL:
    case OPT_FLAG: snprintf(buf, sizeof buf, "%d", *FIELD(obj, o, const int)); break;
    case OPT_I64: snprintf(buf, sizeof buf, "%lld", *FIELD(obj, o, const long long)); break;
    case OPT_REAL: {
        // The shortest text that reads back as the same double.
        double v = *FIELD(obj, o, const double);
        for (int digits = 9; digits <= 17; digits++) {
            snprintf(buf, sizeof buf, "%.*g", digits, v);
            if (strtod(buf, NULL) == v) break;
        }
        break;
    }
    case OPT_STR: {
        const char *s = *FIELD(obj, o, char *const);
        return gt_strdup(s ? s : "");
    }
    case OPT_LIST: {
        const OptList *l = FIELD(obj, o, const OptList);
        return gt_strdup(l->n ? l->v[l->n - 1] : "");
    }
    }
    return gt_strdup(buf);
}

void opt_free(const OptTable *t, void *obj) {
    for (int i = 0; i < t->n_rows; i++) {
        const Opt *o = &t->rows[i];
        if (o->type == OPT_STR) {
            char **s = FIELD(obj, o, char *);
            free(*s);
            *s = NULL;
        } else if (o->type == OPT_LIST) {
            OptList *l = FIELD(obj, o, OptList);
            for (int k = 0; k < l->n; k++) free(l->v[k]);
            free(l->v);
            *l = (OptList){NULL, 0};
        }
    }
}

void opt_list_join(const OptList *l, int quoted, char *out, size_t n) {
    size_t len = 0;
    if (n) out[0] = '\0';
    for (int i = 0; i < l->n; i++)
        len += (size_t)snprintf(out + len, len < n ? n - len : 0, quoted ? "%s'%s'" : "%s%s", i ? ", " : "", l->v[i]);
}
