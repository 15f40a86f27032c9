// engine_check.c - test driver for the engine, used by tests/test_engine_torch.py to compare
// the C model with its PyTorch twin through HDF5 files.
//
//   engine_check init   --out CKPT --vocab V --block T --layers L --heads H --embd C [--dropout P] [--seed S]
//   engine_check load   --ckpt CKPT                      (validates; prints the config)
//   engine_check fwdbwd --ckpt CKPT --tokens TOK --out OUT [--train --dropout-seed S]
//   engine_check train  --ckpt CKPT --tokens TOK --out OUT --steps K [--lr --wd --clip --beta1 --beta2 --eps]
//                       [--resume OUT_OF_A_PREVIOUS_TRAIN]
// TOK holds int32 datasets inputs (B,T) and targets (B,T). OUT (format gpt-train/engine-check)
// holds logits (B,T,V), loss, grads/<name> for fwdbwd; losses (K), norms (K), model/<name>,
// optimizer/m|v/<name> and attr optimizer_t for train. Every run also accepts --threads N and
// --precision fp32|bf16 (bf16: exit 77 with the reason when the CPU cannot).
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "checkpoint.h"
#include "error.h"
#include "gpt2.h"
#include "h5util.h"

#define FORMAT_CHECK "gpt-train/engine-check"

static const char *opt(int argc, char **argv, const char *name, const char *def) {
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], name) == 0) {
            if (i + 1 >= argc) gt_fail_usage("%s needs a value", name);
            return argv[i + 1];
        }
    return def;
}
static int flag(int argc, char **argv, const char *name) {
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}
static const char *req(int argc, char **argv, const char *name) {
    const char *v = opt(argc, argv, name, NULL);
    if (!v) gt_fail_usage("missing %s", name);
    return v;
}

static void read_tokens(const char *path, int **inputs, int **targets, int *B, int *T) {
    hid_t f = h5_open_checked(path, NULL, "--tokens");
    int rank;
    hsize_t dims[8], dims2[8];
    *inputs = h5_read_dataset(f, "inputs", H5T_NATIVE_INT, &rank, dims, path);
    if (rank != 2) gt_fail_usage("--tokens '%s': inputs must be (B, T)", path);
    *targets = h5_read_dataset(f, "targets", H5T_NATIVE_INT, &rank, dims2, path);
    if (rank != 2 || dims2[0] != dims[0] || dims2[1] != dims[1]) gt_fail_usage("--tokens '%s': targets must match inputs", path);
    *B = (int)dims[0];
    *T = (int)dims[1];
    H5Fclose(f);
}

int main(int argc, char **argv) {
    gt_set_progname("engine_check");
    h5_quiet();
    if (argc < 2) gt_fail_usage("usage: engine_check init|load|fwdbwd|train ...");
    const char *cmd = argv[1];
    int threads = atoi(opt(argc, argv, "--threads", "1"));
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    char tmp[4096];

    if (strcmp(cmd, "init") == 0) {
        GPTConfig c = {atoi(req(argc, argv, "--vocab")), atoi(req(argc, argv, "--block")),
                       atoi(req(argc, argv, "--layers")), atoi(req(argc, argv, "--heads")),
                       atoi(req(argc, argv, "--embd")), (float)atof(opt(argc, argv, "--dropout", "0"))};
        char err[256];
        if (!gpt2_config_check(&c, err, sizeof err)) gt_fail_usage("%s", err);
        GPT2 m;
        gpt2_build(&m, &c);
        gpt2_init_weights(&m, strtoull(opt(argc, argv, "--seed", "1337"), NULL, 10));
        const char *out = req(argc, argv, "--out");
        h5_check_output_path(out, "--out", 1);
        hid_t f = h5_create_tmp(out, GT_FORMAT_CHECKPOINT, tmp, sizeof tmp);
        ckpt_write_model_config(f, &c);
        ckpt_write_tensors(f, "model", &m, m.params);
        h5_commit(f, tmp, out);
        gpt2_free(&m);
        return 0;
    }

    const char *ckpt = req(argc, argv, "--ckpt");
    GPT2 m;
    ckpt_load_model(ckpt, "--ckpt", &m);
    const GPTConfig *c = &m.config;
    Precision prec;
    if (!precision_parse(opt(argc, argv, "--precision", "fp32"), &prec)) gt_fail_usage("--precision: fp32 or bf16");
    char perr[256];
    if (!gpt2_set_precision(&m, prec, perr, sizeof perr)) {
        fprintf(stderr, "engine_check: %s\n", perr);
        return 77;
    }
    if (strcmp(cmd, "load") == 0) {
        printf("n_layer=%d n_head=%d n_embd=%d block_size=%d vocab_size=%d dropout=%g params=%zu\n", c->n_layer,
               c->n_head, c->n_embd, c->block_size, c->vocab_size, (double)c->dropout, m.num_params);
        gpt2_free(&m);
        return 0;
    }

    int *inputs, *targets, B, T;
    read_tokens(req(argc, argv, "--tokens"), &inputs, &targets, &B, &T);
    gpt2_alloc_activations(&m, B, T);
    const char *out = req(argc, argv, "--out");
    h5_check_output_path(out, "--out", 1);

    if (strcmp(cmd, "fwdbwd") == 0) {
        int train = flag(argc, argv, "--train");
        uint64_t dseed = strtoull(opt(argc, argv, "--dropout-seed", "0"), NULL, 10);
        float loss = gpt2_forward(&m, inputs, targets, B, T, train, dseed);
        hid_t f = h5_create_tmp(out, FORMAT_CHECK, tmp, sizeof tmp);
        hsize_t ld[3] = {(hsize_t)B, (hsize_t)T, (hsize_t)c->vocab_size};
        h5_write_dataset(f, "logits", H5T_NATIVE_FLOAT, 3, ld, m.logits, 0, 0);
        hsize_t ad[5] = {(hsize_t)c->n_layer, (hsize_t)B, (hsize_t)c->n_head, (hsize_t)T, (hsize_t)T};
        h5_write_dataset(f, "att", H5T_NATIVE_FLOAT, 5, ad, m.att, 0, 0);
        h5_attr_write_double(f, "loss", loss);
        gpt2_zero_grad(&m);
        gpt2_backward(&m, 1.0f, NULL, NULL);
        ckpt_write_tensors(f, "grads", &m, m.grads);
        h5_commit(f, tmp, out);
    } else if (strcmp(cmd, "train") == 0) {
        int steps = atoi(req(argc, argv, "--steps"));
        AdamWConfig oc = {(float)atof(opt(argc, argv, "--lr", "1e-3")), (float)atof(opt(argc, argv, "--beta1", "0.9")),
                          (float)atof(opt(argc, argv, "--beta2", "0.95")), (float)atof(opt(argc, argv, "--eps", "1e-8")),
                          (float)atof(opt(argc, argv, "--wd", "0.1"))};
        float clip = (float)atof(opt(argc, argv, "--clip", "1.0"));
        AdamW o;
        adamw_init(&o, m.num_params);
        const char *resume = opt(argc, argv, "--resume", NULL);
        if (resume) {
            hid_t rf = h5_open_checked(resume, FORMAT_CHECK, "--resume");
            ckpt_read_tensors(rf, "model", &m, m.params, resume);
            ckpt_read_tensors(rf, "optimizer/m", &m, o.m, resume);
            ckpt_read_tensors(rf, "optimizer/v", &m, o.v, resume);
            int64_t t;
            if (!h5_attr_read_int(rf, "optimizer_t", &t)) gt_fail_usage("--resume: no optimizer_t");
            o.t = t;
            H5Fclose(rf);
            gpt2_params_changed(&m);
        }
        float *losses = gt_malloc(sizeof(float) * (steps > 0 ? steps : 1), "losses");
        float *norms = gt_malloc(sizeof(float) * (steps > 0 ? steps : 1), "norms");
        for (int s = 0; s < steps; s++) {
            losses[s] = gpt2_forward(&m, inputs, targets, B, T, 0, 0);
            gpt2_zero_grad(&m);
            gpt2_backward(&m, 1.0f, NULL, NULL);
            norms[s] = grad_clip(m.grads, m.num_params, clip);
            adamw_step(&o, &m, m.params, m.grads, &oc);
        }
        hid_t f = h5_create_tmp(out, FORMAT_CHECK, tmp, sizeof tmp);
        hsize_t sd[1] = {(hsize_t)steps};
        h5_write_dataset(f, "losses", H5T_NATIVE_FLOAT, 1, sd, losses, 0, 0);
        h5_write_dataset(f, "norms", H5T_NATIVE_FLOAT, 1, sd, norms, 0, 0);
        ckpt_write_model_config(f, c);
        ckpt_write_tensors(f, "model", &m, m.params);
        ckpt_write_tensors(f, "optimizer/m", &m, o.m);
        ckpt_write_tensors(f, "optimizer/v", &m, o.v);
        h5_attr_write_int(f, "optimizer_t", o.t);
        h5_commit(f, tmp, out);
        adamw_free(&o);
        free(losses);
        free(norms);
    } else {
        gt_fail_usage("unknown command '%s'", cmd);
    }
    free(inputs);
    free(targets);
    gpt2_free(&m);
    return 0;
}
