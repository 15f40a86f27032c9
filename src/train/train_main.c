// train_main.c - gpt-train: data-parallel GPT-2 training under mpirun (docs/training.md).
//
// Every rank holds the whole model; each micro-batch takes the next windows of one global
// data order, each rank its share of them (dataloader.h). Per step: forward and backward on
// each micro-batch, gradients averaged over the ranks in buckets that travel while backward
// still runs, clip, AdamW; so all ranks keep identical weights.
// Rank 0 alone writes files (log, metrics, checkpoints, attention.h5). Bad input is agreed
// on collectively (comm_agree) so every rank exits 1 together with one message.
//
// This file holds the command line and the order of the phases; each phase lives in its own
// file (run.h lists them).
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "error.h"
#include "files.h"
#include "h5util.h"
#include "loop.h"
#include "resume.h"
#include "run.h"
#include "signals.h"
#include "watchdog.h"

// Appends s as one word that a POSIX shell reads back exactly, whatever its bytes: bare when
// it holds only characters no shell treats specially, else in single quotes, each ' as '\''.
static void shell_word(char **buf, size_t *len, const char *s) {
    int bare = *s != '\0';
    for (const char *p = s; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-", *p)) bare = 0;
    size_t need = *len + 4 * strlen(s) + 4;
    *buf = gt_realloc(*buf, need, "resume command");
    char *o = *buf + *len;
    *o++ = ' ';
    if (!bare) *o++ = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'' && !bare) {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else {
            *o++ = *p;
        }
    }
    if (!bare) *o++ = '\'';
    *o = '\0';
    *len = (size_t)(o - *buf);
}

// The command that resumes this run, for the message after a stop signal: mpirun with this
// rank count, then this command line word for word, each word quoted for the shell, plus
// --resume when it is not in effect already.
static char *resume_command(int argc, char **argv, int size, int resuming) {
    char *buf = NULL, np[32];
    size_t len = 0;
    snprintf(np, sizeof np, "%d", size);
    const char *pre[] = {"mpirun", "-np", np};
    for (int i = 0; i < 3; i++) shell_word(&buf, &len, pre[i]);
    for (int i = 0; i < argc; i++) shell_word(&buf, &len, argv[i]);
    if (!resuming) shell_word(&buf, &len, "--resume");
    return buf;
}

// Rank 0's RUN/attention.h5: created, or taken over on --resume (records past the checkpoint
// dropped; a resume with --attn-every 0 drops them too). A resumed file keeps its dtype:
// --attn-dtype given for another is refused, and when not given /config follows the file.
static void open_attention(Run *r) {
    TrainConfig *c = &r->cfg;
    const int rank = r->w->rank;
    char ap[PATHLEN];
    snprintf(ap, sizeof ap, "%s/attention.h5", c->out);
    GtErr e = GT_ERR_INIT;
    if (c->attn_every <= 0) {
        if (c->resume && rank == 0) attn_trim_e(ap, r->st.step, &e);
        comm_agree_e(&e);
        return;
    }
    const char *msg = NULL;
    int32_t *probe = NULL;
    int Tp = 0;
    if (rank == 0 && !(probe = data_probe_ids(r, &Tp))) msg = r->err;
    comm_agree(msg, GT_EXIT_USAGE);
    if (rank == 0) {
        int dtype = (strcmp(c->attn_dtype, "float16") == 0) | (config_given(c, "attn-dtype") ? ATTN_DTYPE_REQUIRED : 0);
        r->aw = attn_writer_open_e(ap, &r->mc, c->attn_every, probe, Tp, &r->tok, dtype, c->resume ? r->st.step : -1,
                                   &e);
        if (r->aw) {
            free(c->attn_dtype);
            c->attn_dtype = gt_strdup(attn_writer_float16(r->aw) ? "float16" : "float32");
            // what the loop runs through the model for each record
            r->probe_T = Tp;
            r->probe = gt_malloc((size_t)Tp * sizeof(int), "probe");
            for (int t = 0; t < Tp; t++) r->probe[t] = probe[t];
            r->probe_loss = gt_malloc((size_t)(Tp > 1 ? Tp - 1 : 1) * sizeof(float), "probe token losses");
            r->probe_scratch = gt_malloc((size_t)(Tp > 1 ? Tp - 1 : 1) * r->mc.vocab_size * sizeof(float),
                                         "probe probabilities");
        }
    }
    free(probe);
    comm_agree_e(&e);
}

// Rank 0's log (with the effective configuration), metrics, attention.h5; the reducer.
static void open_writers(Run *r, int argc, char **argv) {
    const TrainConfig *c = &r->cfg;
    const int rank = r->w->rank, size = r->w->size;
    Logger *lg = &r->lg;
    log_open(lg, c->out, rank, c->resume ? r->st.step : -1, c->steps);
    comm_agree_e(&lg->err);
    resume_dir_in_use();
    open_attention(r);
    if (rank == 0) {
        printf("gpt-train %s: %d rank%s x %d thread%s\n", GT_VERSION, size, size == 1 ? "" : "s", c->threads,
               c->threads == 1 ? "" : "s");
        printf("# effective configuration (a valid --config file)\n");
        config_print(c, stdout);
        if (lg->log) {
            fprintf(lg->log, "# effective configuration\n");
            config_print(c, lg->log);
        }
    }
    log_line(lg, "data: %s: %zu train tokens (%zu windows, epoch %lld at window %lld), %zu val tokens (%zu eval "
                 "windows), vocab %d",
             r->tokens_path, r->info.n_train, r->dl.n_windows, (long long)r->dl.epoch, (long long)r->dl.pos,
             r->info.n_val, r->ev_total, r->info.vocab_size);
    log_line(lg, "model: %zu parameters (%.2f MB), %d layers, %d heads, %d embd, block %d; %lld tokens per step",
             r->m.num_params, r->m.num_params * 4.0 / 1e6, c->n_layer, c->n_head, c->n_embd, c->block_size,
             (long long)c->batch_size * c->block_size * c->grad_accum * size);
    if (!c->resume && c->init_from)
        log_line(lg, "init: weights%s from %s (step %lld, sha256 %.16s...); this run starts at step 0",
                 c->init_optimizer ? " and AdamW moments" : "", c->init_from, c->init_step, c->init_sha256);
    if (r->prec == PRECISION_BF16)
        log_line(lg, "precision: bf16 matmuls on %s (bf16 operands, fp32 accumulation; fp32 master weights, gradients "
                     "and optimizer)",
                 bf16_isa());
    if (c->resume && strcmp(r->ckpt_precision, c->precision) != 0)
        log_line(lg, "precision: the checkpoint's run trained in %s; this run continues in %s", r->ckpt_precision,
                 c->precision);
    if (c->resume) {
        log_line(lg, "resuming from %s at step %lld of %lld", r->ckpt_path, r->st.step, c->steps);
        const TrainState *st = &r->st;
        if (st->data_per_rank)
            log_line(lg, "note: the checkpoint holds the per-rank data cursors of an older gpt-train: epoch %lld "
                         "continues at the same fraction (%.1f%%) of the global order, so which of its remaining "
                         "windows were seen is not known",
                     (long long)st->data_epoch, 100.0 * (double)st->data_pos / (double)st->data_windows);
        else if ((size_t)st->data_windows != r->dl.n_windows)
            log_line(lg, "note: the checkpoint's run had %lld training windows, --data has %zu: epoch %lld continues "
                         "at the same fraction (%.1f%%)",
                     (long long)st->data_windows, r->dl.n_windows, (long long)st->data_epoch,
                     100.0 * (double)st->data_pos / (double)st->data_windows);
        else if (r->old_world != size)
            log_line(lg, "note: the checkpoint was written by %lld ranks, this run has %d: the data order is global, "
                         "so training continues with the windows the old run would have taken next",
                     (long long)r->old_world, size);
    }
    // Buckets of about an eighth of the gradient (64 KiB to 4 MiB): small models still get a
    // few reductions in flight during backward, big ones a bucket per block or two.
    size_t bucket = r->m.num_params * sizeof(float) / 8;
    bucket = bucket < (64u << 10) ? (64u << 10) : bucket > (4u << 20) ? (4u << 20) : bucket;
    reducer_init(&r->red, r->w->comm, r->m.grads, r->m.num_params, bucket,
                 !strcmp(c->allreduce_dtype, "bf16") ? WIRE_BF16 : WIRE_FP32);
    reducer_embeddings(&r->red, r->m.specs[0].offset, r->m.config.vocab_size, r->m.config.n_embd);
    if (rank == 0) r->resume_cmd = resume_command(argc, argv, size, c->resume);
}

// Rank 0 closes attention.h5, train.log and metrics.csv (checked: closing writes what was
// cached); all agree on the outcome.
static void close_writers(Run *r) {
    GtErr e = GT_ERR_INIT;
    attn_writer_close_e(r->aw, &e);
    r->aw = NULL;
    if (log_close(&r->lg) != 0 && !gt_failed(&e)) e = r->lg.err;
    comm_agree_e(&e);
}

static void run_free(Run *r) {
    free(r->resume_cmd);
    free(r->probe);
    free(r->probe_loss);
    free(r->probe_scratch);
    reducer_free(&r->red);
    dataloader_free(&r->dl);
    token_cache_close(&r->val);
    adamw_free(&r->opt);
    gpt2_free(&r->m);
    free(r->inputs);
    free(r->targets);
    free(r->token_len);
    free(r->agree);
    H5Fclose(r->tf);
    tokens_info_free(&r->info);
    if (r->w->rank == 0) tokenizer_free(&r->tok);
    config_free(&r->cfg);
}

int main(int argc, char **argv) {
    gt_set_progname("gpt-train");
    static Run run;  // large (paths, messages): not on the stack
    Run *r = &run;
    r->w = comm_init(&argc, &argv);
    // Until training begins a stop signal ends the process at once: there is nothing to save
    // yet, and it may come while a rank waits in a long phase (tokenizing a large text,
    // reading the data, a collective). Temp files and a RUN this run made are removed.
    signals_install_immediate();
    h5_quiet();
    TrainConfig *c = &r->cfg;
    char *help = NULL;
    int prc = config_parse(c, argc, argv, r->err, sizeof r->err, &help);
    if (prc == 1) {
        int err = r->w->rank == 0 ? gt_stdout_write(help, strlen(help)) : 0;
        free(help);
        comm_agree_stdout(err);
        comm_exit(0);
    }
    comm_agree(prc < 0 ? r->err : NULL, GT_EXIT_USAGE);
    openblas_set_num_threads(c->threads);
    omp_set_num_threads(c->threads);
    comm_warn_oversubscribed(c->threads);
    faults_init(&r->faults);
    startup_phase(r, "starting", NULL);

    resume_prepare_dir(r);
    startup_phase(r, "starting", "start");
    if (c->resume) resume_settings(r);  // first: a text --data is tokenized with the run's settings
    else if (c->init_from) resume_init_settings(r);  // and a fine-tune's with its checkpoint's tokenizer
    data_prepare(r);
    data_open_tokens(r);
    if (c->resume || c->init_from) resume_check_tokenizer(r);
    int bad_config = config_check(c, r->err, sizeof r->err) != 0;
    if (bad_config && c->resume) {
        // Settings not given on the command line came from the checkpoint: name it too.
        char why[1024];
        snprintf(why, sizeof why, "%.1000s", r->err);
        snprintf(r->err, sizeof r->err, "%.1000s (settings not given as flags come from checkpoint '%.3000s' /config)",
                 why, r->ckpt_path);
    }
    comm_agree(bad_config ? r->err : NULL, GT_EXIT_USAGE);
    wd_configure(config_timeout(c));
    precision_parse(c->precision, &r->prec);
    // every rank checks its own CPU: a node without bf16 instructions stops the run (exit 1)
    comm_agree_local(r->prec == PRECISION_BF16 && !bf16_supported(r->err, sizeof r->err) ? r->err : NULL,
                     GT_EXIT_USAGE);
    r->mc = (GPTConfig){r->info.vocab_size, c->block_size, c->n_layer, c->n_head, c->n_embd, (float)c->dropout};
    comm_agree(gpt2_config_check(&r->mc, r->err, sizeof r->err) ? NULL : r->err, GT_EXIT_USAGE);
    startup_phase(r, "reading and checking the data", "load");
    data_load(r);
    startup_phase(r, c->resume ? "reading the checkpoint" : "starting", NULL);
    resume_build_state(r);
    // From here on a stop signal is honoured at the end of a step, after a checkpoint.
    signals_note(NULL);
    signals_defer(1);
    // Opened even when there is nothing left to train: a run killed after its last checkpoint
    // left attention.h5 marked open for writing (plain h5py refuses it) and maybe with records
    // past that checkpoint; reopening for --resume repairs both, as it does for any resume.
    open_writers(r, argc, argv);
    if (r->st.step >= c->steps) {
        if (r->w->rank == 0)
            printf("gpt-train: checkpoint '%s' is already at step %lld >= --steps %lld; nothing to train "
                   "(raise --steps to continue)\n",
                   r->ckpt_path, r->st.step, c->steps);
        close_writers(r);
        run_free(r);
        comm_exit(0);
    }
    loop_train(r);
    close_writers(r);
    run_free(r);
    comm_exit(0);
}
