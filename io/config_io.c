// config_io.c - see config_io.h. Walks gpt-train's option table, so a new row is stored
// and resumed without a change here.
#include "config_io.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"

#define FIELD(c, o, T) ((T *)((char *)(c) + (o)->off))

int config_write_attrs_e(hid_t loc, const TrainConfig *c, GtErr *e) {
    const OptTable *t = config_table();
    for (int i = 0; i < t->n_rows && !gt_failed(e); i++) {
        const Opt *o = &t->rows[i];
        if (!(o->flags & CONFIG_STORED)) continue;
        char key[64];
        opt_key(o, key, sizeof key);
        switch (o->type) {
        case OPT_INT:
        case OPT_BOOL:
        case OPT_FLAG: h5_attr_write_int_e(loc, key, *FIELD(c, o, const int), e); break;
        case OPT_I64: h5_attr_write_int_e(loc, key, *FIELD(c, o, const long long), e); break;
        case OPT_REAL: h5_attr_write_double_e(loc, key, *FIELD(c, o, const double), e); break;
        case OPT_STR: {
            const char *s = *FIELD(c, o, char *const);
            h5_attr_write_str_e(loc, key, s ? s : "", e);
            break;
        }
        case OPT_LIST: {
            const OptList *l = FIELD(c, o, const OptList);
            h5_write_strings_e(loc, key, l->v, (size_t)l->n, e);
            break;
        }
        }
    }
    return gt_failed(e) ? -1 : 0;
}

void config_fill_from_attrs(TrainConfig *c, hid_t loc) {
    const OptTable *t = config_table();
    for (int i = 0; i < t->n_rows; i++) {
        const Opt *o = &t->rows[i];
        if (!(o->flags & CONFIG_RESUMED) || c->given[i]) continue;
        char key[64];
        opt_key(o, key, sizeof key);
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
        case OPT_LIST: {
            size_t n;
            char **v = h5_exists(loc, key) ? h5_read_strings(loc, key, &n) : NULL;
            if (v) {
                OptList *l = FIELD(c, o, OptList);
                for (int k = 0; k < l->n; k++) free(l->v[k]);
                free(l->v);
                *l = (OptList){v, (int)n};
            }
            break;
        }
        }
    }
}
