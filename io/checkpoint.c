// checkpoint.c - see checkpoint.h.
#include "checkpoint.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "files.h"
#include "h5util.h"

// The checksum of a tensor's bytes, stored as its attribute "checksum" (uint64, 2): a = sum of
// its 32-bit words, b = sum of (i+1) * word i, both modulo 2^64. Any change of one word
// changes a; a swap of two changes b. Sums modulo 2^64 come out the same in any order, so
// threads may share the work, and numpy computes it in two lines (io/python/gpt_checkpoint.py).
static void tensor_checksum(const float *x, size_t n, uint64_t out[2]) {
    const uint32_t *w = (const uint32_t *)x;
    uint64_t a = 0, b = 0;
#pragma omp parallel for reduction(+ : a, b) schedule(static)
    for (size_t i = 0; i < n; i++) {
        a += w[i];
        b += (uint64_t)(i + 1) * w[i];
    }
    out[0] = a, out[1] = b;
}

static int write_checksum(hid_t g, const char *name, const float *x, size_t n, GtErr *e) {
    if (gt_failed(e)) return -1;
    uint64_t sum[2];
    tensor_checksum(x, n, sum);
    hsize_t two = 2;
    hid_t d = -1, sp = -1, a = -1;
    H5_TRY(d = H5Dopen2(g, name, H5P_DEFAULT));
    H5_TRY(sp = H5Screate_simple(1, &two, NULL));
    H5_TRY(a = H5Acreate2(d, "checksum", H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT));
    H5_TRY(H5Awrite(a, H5T_NATIVE_UINT64, sum));
fail:
    h5_close(a, e);
    h5_close(sp, e);
    h5_close(d, e);
    return gt_failed(e) ? -1 : 0;
}

// 1 when the dataset's checksum attribute matches x, or when it has none (checkpoints of
// earlier versions); 0 on a mismatch or an unreadable attribute.
static int checksum_ok(hid_t d, const float *x, size_t n) {
    htri_t has = H5Aexists(d, "checksum");
    if (has == 0) return 1;
    if (has < 0) return 0;
    hid_t a = H5Aopen(d, "checksum", H5P_DEFAULT);
    if (a < 0) return 0;
    hid_t sp = H5Aget_space(a);
    uint64_t want[2] = {0, 0}, got[2];
    int ok = sp >= 0 && H5Sget_simple_extent_npoints(sp) == 2 && H5Aread(a, H5T_NATIVE_UINT64, want) >= 0;
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(a);
    if (!ok) return 0;
    tensor_checksum(x, n, got);
    return got[0] == want[0] && got[1] == want[1];
}

static void shape_str(char *out, size_t n, int rank, const hsize_t *dims) {
    size_t len = (size_t)snprintf(out, n, "(");
    for (int i = 0; i < rank && len < n; i++)
        len += (size_t)snprintf(out + len, n - len, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    if (rank == 1 && len < n) len += (size_t)snprintf(out + len, n - len, ",");
    if (len < n) snprintf(out + len, n - len, ")");
}

int ckpt_write_tensors_e(hid_t file, const char *group, const GPT2 *m, const float *buf, GtErr *e) {
    hid_t g = h5_group_create_e(file, group, e);
    for (int i = 0; i < m->n_specs && !gt_failed(e); i++) {
        const ParamSpec *s = &m->specs[i];
        hsize_t dims[2] = {s->shape[0], s->shape[1]};
        h5_write_dataset_e(g, s->name, H5T_NATIVE_FLOAT, s->ndim, dims, buf + s->offset, 0, 0, e);
        write_checksum(g, s->name, buf + s->offset, s->numel, e);
    }
    // the tied head is a hard link to transformer.wte.weight
    if (!gt_failed(e) && (strcmp(group, "model") == 0 || strcmp(group, "/model") == 0))
        H5_TRY(H5Lcreate_hard(g, "transformer.wte.weight", g, "lm_head.weight", H5P_DEFAULT, H5P_DEFAULT));
fail:
    h5_close(g, e);
    return gt_failed(e) ? -1 : 0;
}

void ckpt_write_tensors(hid_t file, const char *group, const GPT2 *m, const float *buf) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, ckpt_write_tensors_e(file, group, m, buf, &e));
}

// Reads and checks one tensor of the open group g into x.
static int read_tensor(hid_t g, const char *group, const ParamSpec *s, float *x, const char *path, GtErr *e) {
    hsize_t want[2] = {s->shape[0], s->shape[1]}, dims[8];
    int rank = 0;
    char ws[64], fs[64];
    shape_str(ws, sizeof ws, s->ndim, want);
    if (!h5_dataset_shape(g, s->name, &rank, dims))
        return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': tensor '/%s/%s' %s is missing", path, group, s->name, ws);
    int same = rank == s->ndim;
    for (int d = 0; same && d < rank; d++) same = dims[d] == want[d];
    if (!same) {
        shape_str(fs, sizeof fs, rank, dims);
        return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': tensor '/%s/%s' has shape %s, expected %s for this model config",
                      path, group, s->name, fs, ws);
    }
    hid_t d = H5Dopen2(g, s->name, H5P_DEFAULT), t = d >= 0 ? H5Dget_type(d) : -1;
    int is_f32 = t >= 0 && H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 4;
    if (t >= 0) H5Tclose(t);
    if (d < 0)
        gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': tensor '/%s/%s' cannot be opened (damaged file?)", path, group, s->name);
    else if (!is_f32)
        gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': tensor '/%s/%s' is not float32", path, group, s->name);
    else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0)
        gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': tensor '/%s/%s' cannot be read (truncated or damaged file?)", path,
               group, s->name);
    // Shapes and types say nothing of the numbers: a flipped byte inside a tensor would
    // load silently and surface, if ever, as a NaN many steps later.
    else if (!checksum_ok(d, x, s->numel))
        gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': tensor '/%s/%s' does not match its checksum (damaged file?)", path,
               group, s->name);
    if (d >= 0) H5Dclose(d);
    return gt_failed(e) ? -1 : 0;
}

int ckpt_read_tensors_e(hid_t file, const char *group, const GPT2 *m, float *buf, const char *path, GtErr *e) {
    if (gt_failed(e)) return -1;
    if (!h5_exists(file, group)) return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': group '/%s' is missing", path, group);
    hid_t g = h5_group_open_e(file, group, path, e);
    for (int i = 0; i < m->n_specs && !gt_failed(e); i++) read_tensor(g, group, &m->specs[i], buf + m->specs[i].offset, path, e);
    if (g >= 0) H5Gclose(g);
    return gt_failed(e) ? -1 : 0;
}

void ckpt_read_tensors(hid_t file, const char *group, const GPT2 *m, float *buf, const char *path) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, ckpt_read_tensors_e(file, group, m, buf, path, &e));
}

int ckpt_write_model_config_e(hid_t file, const GPTConfig *c, GtErr *e) {
    hid_t g = h5_group_create_e(file, "config", e);
    h5_attr_write_int_e(g, "n_layer", c->n_layer, e);
    h5_attr_write_int_e(g, "n_head", c->n_head, e);
    h5_attr_write_int_e(g, "n_embd", c->n_embd, e);
    h5_attr_write_int_e(g, "block_size", c->block_size, e);
    h5_attr_write_int_e(g, "vocab_size", c->vocab_size, e);
    h5_attr_write_double_e(g, "dropout", c->dropout, e);
    h5_close(g, e);
    return gt_failed(e) ? -1 : 0;
}

void ckpt_write_model_config(hid_t file, const GPTConfig *c) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, ckpt_write_model_config_e(file, c, &e));
}

static int read_model_config(hid_t g, GPTConfig *c, const char *path, GtErr *e) {
    static const char *names[5] = {"n_layer", "n_head", "n_embd", "block_size", "vocab_size"};
    int *fields[5] = {&c->n_layer, &c->n_head, &c->n_embd, &c->block_size, &c->vocab_size};
    for (int i = 0; i < 5; i++) {
        int64_t v;
        if (!h5_attr_read_int(g, names[i], &v))
            return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': /config has no integer attribute '%s'", path, names[i]);
        if (v < -2147483647LL || v > 2147483647LL)
            return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': /config %s = %lld is out of range", path, names[i],
                          (long long)v);
        *fields[i] = (int)v;
    }
    double p;
    if (!h5_attr_read_double(g, "dropout", &p))
        return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': /config has no attribute 'dropout'", path);
    c->dropout = (float)p;
    char err[256];
    if (!gpt2_config_check(c, err, sizeof err))
        return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': invalid /config: %s", path, err);
    return 0;
}

int ckpt_read_model_config_e(hid_t file, GPTConfig *c, const char *path, GtErr *e) {
    if (gt_failed(e)) return -1;
    if (!h5_exists(file, "config")) return gt_err(e, GT_EXIT_USAGE, "checkpoint '%s': group '/config' is missing", path);
    hid_t g = h5_group_open_e(file, "config", path, e);
    if (g < 0) return -1;
    int rc = read_model_config(g, c, path, e);
    H5Gclose(g);
    return rc;
}

void ckpt_read_model_config(hid_t file, GPTConfig *c, const char *path) {
    GtErr e = GT_ERR_INIT;
    GT_OR_EXIT(&e, ckpt_read_model_config_e(file, c, path, &e));
}

hid_t ckpt_open_e(const char *path, const char *what, GtErr *e) {
    return h5_open_checked_e(path, GT_FORMAT_CHECKPOINT, what ? what : "checkpoint", e);
}

hid_t ckpt_open(const char *path, const char *what) {
    return h5_open_checked(path, GT_FORMAT_CHECKPOINT, what ? what : "checkpoint");
}

void ckpt_load_model(const char *path, const char *what, GPT2 *m) {
    hid_t f = ckpt_open(path, what);
    GPTConfig c;
    ckpt_read_model_config(f, &c, path);
    gpt2_build(m, &c);
    ckpt_read_tensors(f, "model", m, m->params, path);
    H5Fclose(f);
}

int ckpt_resolve_e(const char *arg, const char *flag, char *path, size_t n, GtErr *e) {
    if (gt_failed(e)) return -1;
    struct stat st;
    if (stat(arg, &st) != 0) return gt_err(e, GT_EXIT_USAGE, "%s '%s': %s", flag, arg, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        snprintf(path, n, "%s", arg);
        return 0;
    }
    char latest[4200];
    snprintf(latest, sizeof latest, "%s/latest", arg);
    if (stat(latest, &st) != 0)
        return gt_err(e, GT_EXIT_USAGE, "%s '%s': a run directory without a 'latest' file (no checkpoint written yet?)",
                      flag, arg);
    int64_t size;
    int fd = gt_open_input(latest, flag, &size, e);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f) {
        if (fd >= 0) close(fd);
        return gt_failed(e) ? -1 : gt_err(e, GT_EXIT_RUNTIME, "%s '%s': %s", flag, latest, strerror(errno));
    }
    char name[4096] = "";
    if (!fgets(name, sizeof name, f)) name[0] = '\0';
    fclose(f);
    size_t k = strlen(name);
    while (k > 0 && (name[k - 1] == '\n' || name[k - 1] == '\r' || name[k - 1] == ' ')) name[--k] = '\0';
    if (k == 0) return gt_err(e, GT_EXIT_USAGE, "%s '%s': '%s' is empty", flag, arg, latest);
    if (name[0] == '/') snprintf(path, n, "%s", name);
    else snprintf(path, n, "%s/%s", arg, name);
    return 0;
}

hid_t ckpt_resolve_open_e(const char *arg, const char *flag, char *path, size_t n, GtErr *e) {
    if (gt_failed(e)) return -1;
    for (int attempt = 0;; attempt++) {
        GtErr mine = GT_ERR_INIT;
        struct stat st;
        *path = '\0';
        hid_t f = ckpt_resolve_e(arg, flag, path, n, &mine) == 0 ? ckpt_open_e(path, flag, &mine) : -1;
        // gone since latest named it, and a newer one named since: take that one
        int vanished = f < 0 && *path && stat(path, &st) != 0 && errno == ENOENT && stat(arg, &st) == 0 &&
                       S_ISDIR(st.st_mode);
        if (f >= 0 || !vanished || attempt == 9) {
            if (f < 0 && !gt_failed(e)) *e = mine;
            return f;
        }
        usleep(20000);
    }
}
