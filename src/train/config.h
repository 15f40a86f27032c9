// config.h - every gpt-train setting (docs/training.md, flags), from defaults, an optional
// `--config FILE` of `key = value` lines, then the command line (which wins).
//
// One table in config.c describes each option once: its flag, type, range, default and
// help; parsing, --help, printing, and the /config attributes of checkpoints all walk it.
#ifndef GT_CONFIG_H
#define GT_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "options.h"

typedef struct {
    // input and output
    OptList data;       // tokens.h5, or text files and directories (rank 0 tokenizes them into RUN/)
    char *out;          // the run directory RUN
    char *config_file;
    int resume;
    char *init_from;    // a new run from this checkpoint's weights (a file, or RUN: its latest)
    int init_optimizer; // ... and its AdamW moments
    long long init_step;  // recorded: the step, and the SHA-256 of the checkpoint file
    char *init_sha256;
    // model
    int n_layer, n_head, n_embd, block_size;
    double dropout;
    char *precision;    // fp32 | bf16: the matmuls' arithmetic (gemm_bf16.h)
    // batch
    int batch_size;     // per rank, per micro-batch
    int grad_accum;
    long long steps;    // the step the run ends at (also when resuming)
    // optimizer
    double lr, min_lr;
    int warmup;
    char *lr_schedule;  // cosine | linear | constant
    double weight_decay, beta1, beta2, eps, grad_clip;
    // run
    long long seed;
    int eval_every, eval_batches, ckpt_every, keep_ckpts, log_every, threads;
    int check_sync, skip_bad_steps;
    double loss_spike;  // a finite loss above this many times the recent mean is a bad step (0 = off)
    char *allreduce_dtype;     // fp32 | bf16: the gradient exchange's wire type
    char *collective_timeout;  // auto | seconds (0 = off): the stall watchdog (config_timeout)
    // attention probe
    int attn_every;
    char *attn_prompt;  // NULL: the start of /val
    char *attn_dtype;   // float32 | float16
    // text input only
    int vocab_size;
    double val_fraction;
    char *pattern;
    char *doc_separator;  // a special token between documents, or NULL
    char *val_split;      // tokens | docs
    int replace_invalid;

    unsigned char given[64];  // per option: 1 when set by the config file or a flag
} TrainConfig;

// Parses argv (and --config FILE). Returns 0 on success; 1 after --help (text in *help,
// malloc'd); -1 on an error, with one sentence naming the flag, key or file in err.
int config_parse(TrainConfig *c, int argc, char **argv, char *err, size_t errsize, char **help);
// Range and cross-option checks after parsing (and after a resume filled the rest).
int config_check(const TrainConfig *c, char *err, size_t errsize);
// --collective-timeout in seconds (0 = off), or -1 for "auto" (the adaptive rule, mpi/watchdog.h).
double config_timeout(const TrainConfig *c);
// 1 when the option `name` ("attn-dtype") was given by a flag or the config file, not taken
// from a default or a checkpoint.
int config_given(const TrainConfig *c, const char *name);

// The effective configuration, grouped, one "key = value" per line (a valid --config file;
// without `config` and `resume`).
void config_print(const TrainConfig *c, FILE *f);
// The option table (checkpoint /config I/O walks it: io/config_io.h). Row flags of gpt-train:
#define CONFIG_STORED OPT_TOOL          // written to a checkpoint's /config
#define CONFIG_RESUMED (OPT_TOOL << 1)  // and taken back by --resume when not given again
const OptTable *config_table(void);
void config_free(TrainConfig *c);

#endif
