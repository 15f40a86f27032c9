// checkpoint.c - see checkpoint.h.
#include "checkpoint.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
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

static void write_checksum(hid_t g, const char *name, const float *x, size_t n) {
    uint64_t sum[2];
    tensor_checksum(x, n, sum);
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    H5_CHECK(d, "");
    hsize_t two = 2;
    hid_t sp = H5Screate_simple(1, &two, NULL);
    H5_CHECK(sp, "");
    hid_t a = H5Acreate2(d, "checksum", H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(a, "is the disk full?");
    H5_CHECK(H5Awrite(a, H5T_NATIVE_UINT64, sum), "is the disk full?");
    H5Aclose(a);
    H5Sclose(sp);
    H5Dclose(d);
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

void ckpt_write_tensors(hid_t file, const char *group, const GPT2 *m, const float *buf) {
    hid_t g = h5_group_create(file, group);
    for (int i = 0; i < m->n_specs; i++) {
        const ParamSpec *s = &m->specs[i];
        hsize_t dims[2] = {s->shape[0], s->shape[1]};
        h5_write_dataset(g, s->name, H5T_NATIVE_FLOAT, s->ndim, dims, buf + s->offset, 0, 0);
        write_checksum(g, s->name, buf + s->offset, s->numel);
    }
    if (strcmp(group, "model") == 0 || strcmp(group, "/model") == 0)
        H5_CHECK(H5Lcreate_hard(g, "transformer.wte.weight", g, "lm_head.weight", H5P_DEFAULT, H5P_DEFAULT),
                 "the tied head is a hard link to transformer.wte.weight");
    H5_CHECK(H5Gclose(g), "");
}

void ckpt_read_tensors(hid_t file, const char *group, const GPT2 *m, float *buf, const char *path) {
    if (!h5_exists(file, group)) gt_fail_usage("checkpoint '%s': group '/%s' is missing", path, group);
    hid_t g = h5_group_open(file, group, path);
    for (int i = 0; i < m->n_specs; i++) {
        const ParamSpec *s = &m->specs[i];
        hsize_t want[2] = {s->shape[0], s->shape[1]}, dims[8];
        int rank = 0;
        char ws[64], fs[64];
        shape_str(ws, sizeof ws, s->ndim, want);
        if (!h5_dataset_shape(g, s->name, &rank, dims))
            gt_fail_usage("checkpoint '%s': tensor '/%s/%s' %s is missing", path, group, s->name, ws);
        int same = rank == s->ndim;
        for (int d = 0; same && d < rank; d++) same = dims[d] == want[d];
        if (!same) {
            shape_str(fs, sizeof fs, rank, dims);
            gt_fail_usage("checkpoint '%s': tensor '/%s/%s' has shape %s, expected %s for this model config", path,
                          group, s->name, fs, ws);
        }
        hid_t d = H5Dopen2(g, s->name, H5P_DEFAULT);
        H5_CHECK(d, "");
        hid_t t = H5Dget_type(d);
        H5_CHECK(t, "");
        int is_f32 = H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 4;
        H5Tclose(t);
        if (!is_f32) {
            H5Dclose(d);
            gt_fail_usage("checkpoint '%s': tensor '/%s/%s' is not float32", path, group, s->name);
        }
        if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf + s->offset) < 0) {
            H5Dclose(d);
            gt_fail_usage("checkpoint '%s': tensor '/%s/%s' cannot be read (truncated or damaged file?)", path, group,
                          s->name);
        }
        // Shapes and types say nothing of the numbers: a flipped byte inside a tensor would
        // load silently and surface, if ever, as a NaN many steps later.
        int sum_ok = checksum_ok(d, buf + s->offset, s->numel);
        H5Dclose(d);
        if (!sum_ok)
            gt_fail_usage("checkpoint '%s': tensor '/%s/%s' does not match its checksum (damaged file?)", path, group,
                          s->name);
    }
    H5Gclose(g);
}

void ckpt_write_model_config(hid_t file, const GPTConfig *c) {
    hid_t g = h5_group_create(file, "config");
    h5_attr_write_int(g, "n_layer", c->n_layer);
    h5_attr_write_int(g, "n_head", c->n_head);
    h5_attr_write_int(g, "n_embd", c->n_embd);
    h5_attr_write_int(g, "block_size", c->block_size);
    h5_attr_write_int(g, "vocab_size", c->vocab_size);
    h5_attr_write_double(g, "dropout", c->dropout);
    H5_CHECK(H5Gclose(g), "");
}

void ckpt_read_model_config(hid_t file, GPTConfig *c, const char *path) {
    if (!h5_exists(file, "config")) gt_fail_usage("checkpoint '%s': group '/config' is missing", path);
    hid_t g = h5_group_open(file, "config", path);
    static const char *names[5] = {"n_layer", "n_head", "n_embd", "block_size", "vocab_size"};
    int *fields[5] = {&c->n_layer, &c->n_head, &c->n_embd, &c->block_size, &c->vocab_size};
    for (int i = 0; i < 5; i++) {
        int64_t v;
        if (!h5_attr_read_int(g, names[i], &v))
            gt_fail_usage("checkpoint '%s': /config has no integer attribute '%s'", path, names[i]);
        if (v < -2147483647LL || v > 2147483647LL)
            gt_fail_usage("checkpoint '%s': /config %s = %lld is out of range", path, names[i], (long long)v);
        *fields[i] = (int)v;
    }
    double p;
    if (!h5_attr_read_double(g, "dropout", &p))
        gt_fail_usage("checkpoint '%s': /config has no attribute 'dropout'", path);
    c->dropout = (float)p;
    H5Gclose(g);
    char err[256];
    if (!gpt2_config_check(c, err, sizeof err)) gt_fail_usage("checkpoint '%s': invalid /config: %s", path, err);
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
