// eval_main.c - gpt-eval: how well a checkpoint models a text (docs/training.md, gpt-eval).
//
// The mean cross-entropy over all windows of the text at multiples of the block size, by
// gpt-train's own evaluation (src/train/evaluate.c), on one rank or under mpirun (the windows
// shared among the ranks), and bits per byte, which compares across vocabularies. The text is
// a tokens.h5 (its /val, or --split train) encoded with the checkpoint's tokenizer, or text
// files and directories, which rank 0 encodes with it (src/bpe/corpus.h). The last line of
// stdout is `loss=... ppl=... bpb=... tokens=... bytes=...`.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "comm.h"
#include "corpus.h"
#include "data.h"
#include "error.h"
#include "evaluate.h"
#include "files.h"
#include "h5util.h"
#include "options.h"
#include "signals.h"
#include "token_loss_io.h"
#include "tokens_io.h"
#include "vocab_io.h"

typedef struct {
    char *checkpoint, *split, *per_token, *doc_separator;
    OptList data;
    int batch_size, threads, replace, force;
} EvalArgs;

#define E(field) offsetof(EvalArgs, field)
static const Opt eval_opts[] = {
    {"checkpoint", OPT_STR, E(checkpoint), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "CKPT|RUN", "a checkpoint file, or a run directory (its latest)"},
    {"data", OPT_LIST, E(data), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "PATH", "a tokens.h5, or UTF-8 text: files and directories (every file below), encoded with the checkpoint's tokenizer"},
    {"split", OPT_STR, E(split), 0, 0, "|train|val|", NULL, NULL, 0, "S", "of a tokens.h5: val (default) or train"},
    {"batch-size", OPT_INT, E(batch_size), 1, 1 << 20, NULL, "32", NULL, 0, NULL, "windows per forward pass on each rank"},
    {"per-token", OPT_STR, E(per_token), 0, 0, NULL, NULL, NULL, 0, "OUT.h5", "write each scored token's id and loss (docs/formats.md)"},
    {"doc-separator", OPT_STR, E(doc_separator), 0, 0, NULL, NULL, NULL, OPT_TEXT, "TOKEN", "text: the special token between documents (default: the run's, from the checkpoint's /config)"},
    {"replace-invalid", OPT_FLAG, E(replace), 0, 0, NULL, NULL, NULL, 0, NULL, "text: map invalid UTF-8 to U+FFFD instead of failing"},
    {"force", OPT_FLAG, E(force), 0, 0, NULL, NULL, NULL, 0, NULL, "overwrite --per-token"},
    {"threads", OPT_INT, E(threads), 1, 1024, NULL, "1", NULL, 0, NULL, "BLAS/OpenMP threads per rank"},
};
#undef E
static const OptTable eval_table = {
    "gpt-eval",
    "usage: [mpirun -np N] gpt-eval --checkpoint CKPT|RUN --data FILE.txt|DIR|tokens.h5 [--split train|val]\n"
    "       [--batch-size N] [--per-token OUT.h5] [options]\n\n"
    "Scores a text with a checkpoint: the mean cross-entropy over all windows at multiples of the block\n"
    "size (gpt-train's evaluation) and bits per byte. The last line of stdout is\n"
    "loss=<nats per token> ppl=<exp(loss)> bpb=<bits per byte> tokens=<scored> bytes=<their UTF-8 bytes>.\n\n",
    "\nExit status: 0 done, 1 bad usage or input, 2 runtime failure.\n",
    eval_opts, OPT_COUNT(eval_opts), NULL, 0};

typedef struct {
    const Comm *w;
    EvalArgs a;
    char ckpt[4200], data_text[4200], data_raw[4200];  // --data quoted for messages, and as given
    GPT2 m;
    Tokenizer tok;            // the checkpoint's
    int64_t step;
    TokenCache split;         // what is scored
    const char *split_name;   // "val", "train", or "text"
    hid_t tf;                 // the tokens file, or -1
    CorpusIds text;           // encoded text: rank 0's own, the others' received
} Eval;

// Every rank: the checkpoint's model (rank 0 reads and broadcasts the weights), tokenizer
// and step; the run's document separator when --doc-separator is not given.
static void load_checkpoint(Eval *v) {
    GtErr e = GT_ERR_INIT;
    hid_t f = -1;
    if (v->w->rank == 0) f = ckpt_resolve_open_e(v->a.checkpoint, "--checkpoint", v->ckpt, sizeof v->ckpt, &e);
    comm_agree_e(&e);
    comm_bcast(v->ckpt, sizeof v->ckpt);
    GPTConfig mc;
    if (v->w->rank != 0) f = ckpt_open_e(v->ckpt, "--checkpoint", &e);
    ckpt_read_model_config_e(f, &mc, v->ckpt, &e);
    if (!gt_failed(&e) && !h5_attr_read_int(f, "step", &v->step)) v->step = -1;
    vocab_read_group_e(f, &v->tok, v->ckpt, &e);
    if (!gt_failed(&e) && v->tok.vocab_size != mc.vocab_size)
        gt_err(&e, GT_EXIT_USAGE, "--checkpoint '%s': its /tokenizer has %d tokens, its model %d", v->ckpt,
               v->tok.vocab_size, mc.vocab_size);
    if (!gt_failed(&e) && !v->a.doc_separator) {
        hid_t g = h5_group_open_e(f, "config", v->ckpt, &e);
        char *sep = g >= 0 ? h5_attr_read_str(g, "doc_separator") : NULL;
        if (sep && *sep) v->a.doc_separator = sep;
        else free(sep);
        h5_close(g, &e);
    }
    comm_agree_local_e(&e);
    mc.dropout = 0.0f;
    gpt2_build(&v->m, &mc);
    if (v->w->rank == 0) ckpt_read_tensors_e(f, "model", &v->m, v->m.params, v->ckpt, &e);
    h5_close(f, &e);
    comm_agree_e(&e);
    comm_bcast(v->m.params, v->m.num_params * sizeof(float));
}

// The text to score: a tokens.h5's split (its /tokenizer must be the checkpoint's), or text
// that rank 0 encodes with the checkpoint's tokenizer and hands to every rank.
static void load_data(Eval *v) {
    const EvalArgs *a = &v->a;
    int kind = 2;  // 1 tokens.h5, 2 text
    GtErr e = GT_ERR_INIT;
    opt_list_join(&a->data, 1, v->data_text, sizeof v->data_text);
    opt_list_join(&a->data, 0, v->data_raw, sizeof v->data_raw);
    if (a->data.n == 1 && h5_is_hdf5_file(a->data.v[0])) kind = 1;
    for (int i = 0; kind == 2 && i < a->data.n && !gt_failed(&e); i++)
        if (h5_is_hdf5_file(a->data.v[i]))
            gt_err(&e, GT_EXIT_USAGE, "--data '%s' is an HDF5 file (tokens.h5), given with other --data: a tokens.h5 "
                   "comes alone", a->data.v[i]);
    if (kind == 2 && a->split)
        gt_err(&e, GT_EXIT_USAGE, "--split %s: only a tokens.h5 has splits; text is scored whole", a->split);
    comm_agree_e(&e);
    v->tf = -1;
    if (kind == 1) {
        TokensInfo info;
        Tokenizer tt;
        v->split_name = a->split ? a->split : "val";
        v->tf = tokens_open_e(a->data.v[0], &info, &tt, "--data", &e);
        if (v->tf >= 0) {
            data_tokenizer_mismatch(v->ckpt, "--checkpoint", &v->tok, &tt, v->data_text, a->data.v[0], info.source, &e);
            tokens_info_free(&info);
            tokenizer_free(&tt);
        }
        comm_agree_local_e(&e);
        if (token_cache_open(&v->split, v->tf, v->split_name, (size_t)64 << 20, v->tok.vocab_size, a->data.v[0]))
            e = v->split.err;
        comm_agree_local_e(&e);
        return;
    }
    v->split_name = "text";
    int64_t n = 0;
    comm_solo_begin();  // a failure deep in the encoder (out of memory) is agreed on below
    if (v->w->rank == 0) {
        CorpusOptions co = {"--data", a->replace, 0, 0};
        Corpus *c = corpus_open(a->data.v, a->data.n, &co, &e);
        tokenizer_set_threads(&v->tok, a->threads);
        if (c) corpus_encode_ids(c, &v->tok, a->doc_separator, &v->text, &e);
        if (c && !gt_failed(&e)) corpus_print_notes(c, stderr);
        corpus_close(c);
        n = (int64_t)v->text.n;
    }
    int status = comm_wait_status(e.status);
    if (status) comm_agree(v->w->rank == 0 ? e.msg : NULL, status);
    comm_bcast(&n, sizeof n);
    int width = v->tok.vocab_size <= 65536 ? 2 : 4;
    if (v->w->rank != 0) v->text.ids = gt_malloc((size_t)n * (size_t)width + 1, "token ids");
    comm_bcast(v->text.ids, (size_t)n * (size_t)width);
    v->text.n = (size_t)n;
    v->text.width = width;
    if (n > 0) token_cache_memory(&v->split, v->text.ids, width, (size_t)n, v->tok.vocab_size, v->data_text, "text");
}

// Rank 0 gathers every rank's token losses and writes --per-token, with the scored ids.
static void write_per_token(Eval *v, const float *mine, size_t count, size_t total, int T,
                            const EvalResult *res) {
    const int size = v->w->size, rank = v->w->rank;
    size_t n = total * (size_t)T;
    float *all = rank == 0 ? gt_malloc((n ? n : 1) * sizeof *all, "token losses") : NULL;
    int *counts = gt_malloc((size_t)size * sizeof *counts, "counts"), *offs = gt_malloc((size_t)size * sizeof *offs, "offsets");
    int my = (int)(count * (size_t)T);
    MPI_CHECK(MPI_Allgather(&my, 1, MPI_INT, counts, 1, MPI_INT, v->w->comm));
    for (int r = 0, o = 0; r < size; r++) offs[r] = o, o += counts[r];
    MPI_CHECK(MPI_Gatherv(mine, my, MPI_FLOAT, all, counts, offs, MPI_FLOAT, 0, v->w->comm));
    GtErr e = GT_ERR_INIT;
    if (rank == 0) {
        uint32_t *ids = gt_malloc((n + 1) * sizeof *ids, "token ids");
        if (token_cache_read(&v->split, 0, n + 1, ids) != 0) e = v->split.err;
        int32_t *scored = gt_malloc((n ? n : 1) * sizeof *scored, "token ids");
        for (size_t i = 0; i < n; i++) scored[i] = (int32_t)ids[i + 1];
        TokenLossInfo info = {v->ckpt, v->step, v->data_raw, v->split_name, T, res->loss, eval_bpb(res),
                              (int64_t)res->tokens, (int64_t)res->bytes, (int64_t)ids[0]};
        token_loss_write_e(v->a.per_token, &info, &v->tok, scored, all, n, v->a.force, &e);
        free(ids);
        free(scored);
    }
    free(all);
    free(counts);
    free(offs);
    comm_agree_e(&e);
}

int main(int argc, char **argv) {
    gt_set_progname("gpt-eval");
    static Eval ev;
    Eval *v = &ev;
    v->w = comm_init(&argc, &argv);
    h5_quiet();
    signals_install_immediate();  // a stop signal removes a half-written --per-token
    char err[4096];
    opt_defaults(&eval_table, &v->a);
    int rc = opt_parse(&eval_table, &v->a, argc - 1, argv + 1, NULL, err, sizeof err);
    if (rc == 1) {
        int out_err = 0;
        if (v->w->rank == 0) {
            char *h = opt_help(&eval_table);
            out_err = gt_stdout_write(h, strlen(h));
            free(h);
        }
        comm_agree_stdout(out_err);
        comm_exit(0);
    }
    if (rc == 0) rc = opt_check_required(&eval_table, &v->a, err, sizeof err);
    comm_agree(rc ? err : NULL, GT_EXIT_USAGE);
    GtErr e = GT_ERR_INIT;
    if (v->w->rank == 0 && v->a.per_token) h5_check_output_path_e(v->a.per_token, "--per-token", v->a.force, &e);
    comm_agree_e(&e);
    openblas_set_num_threads(v->a.threads);
    omp_set_num_threads(v->a.threads);

    load_checkpoint(v);
    // --force replaces --per-token by a rename: were it an input, that input would be gone
    for (int i = -1; v->w->rank == 0 && v->a.per_token && i < v->a.data.n && !gt_failed(&e); i++)
        if (gt_same_file(v->a.per_token, i < 0 ? v->ckpt : v->a.data.v[i]))
            gt_err(&e, GT_EXIT_USAGE, "--per-token '%s' is the same file as %s '%s'; writing it would destroy it",
                   v->a.per_token, i < 0 ? "--checkpoint" : "--data", i < 0 ? v->ckpt : v->a.data.v[i]);
    comm_agree_e(&e);
    load_data(v);
    const int T = v->m.config.block_size, B = v->a.batch_size;
    size_t first, count, total, n = v->split.n;
    eval_windows(n, T, 0, v->w->rank, v->w->size, &first, &count, &total);
    if (total == 0) {
        snprintf(err, sizeof err, "--data %.2000s: %s holds %zu tokens, fewer than the block size + 1 = %d that one "
                 "window needs", v->data_text, v->tf >= 0 ? (strcmp(v->split_name, "val") ? "/train" : "/val") : "the text",
                 n, T + 1);
        comm_agree(err, GT_EXIT_USAGE);
    }
    // Every rank reads and checks its windows before scoring, as gpt-train does.
    if (count && token_cache_check(&v->split, first * (size_t)T, count * (size_t)T + 1)) e = v->split.err;
    comm_agree_local_e(&e);
    gpt2_alloc_activations(&v->m, B, T);
    int *inputs = gt_malloc((size_t)B * T * sizeof *inputs, "inputs"), *targets = gt_malloc((size_t)B * T * sizeof *targets, "targets");
    int *token_len = eval_token_bytes(&v->tok);
    float *per = v->a.per_token ? gt_malloc((count ? count : 1) * (size_t)T * sizeof *per, "token losses") : NULL;
    if (v->w->rank == 0) {
        printf("gpt-eval: %s (step %lld): %d layers, %d heads, %d embd, block %d, vocab %d\n", v->ckpt, (long long)v->step,
               v->m.config.n_layer, v->m.config.n_head, v->m.config.n_embd, T, v->m.config.vocab_size);
        printf("gpt-eval: %s%s%s: %zu tokens, %zu windows of %d scored tokens, on %d rank%s\n", v->data_text,
               v->tf >= 0 ? " /" : "", v->tf >= 0 ? v->split_name : "", n, total, T, v->w->size,
               v->w->size == 1 ? "" : "s");
        fflush(stdout);
    }
    EvalResult res = eval_split(&v->m, &v->split, first, count, B, T, token_len, inputs, targets, per);
    if (v->split.err.status) e = v->split.err;  // a chunk that failed to read mid-way
    comm_agree_local_e(&e);
    if (v->a.per_token) write_per_token(v, per, count, total, T, &res);
    if (v->w->rank == 0) {
        if (v->a.per_token) printf("gpt-eval: wrote %s\n", v->a.per_token);
        printf("loss=%.8f ppl=%.6g bpb=%.8f tokens=%lld bytes=%lld\n", res.loss, exp(res.loss), eval_bpb(&res),
               (long long)res.tokens, (long long)res.bytes);
    }
    free(per);
    free(token_len);
    free(inputs);
    free(targets);
    token_cache_close(&v->split);
    if (v->tf >= 0) H5Fclose(v->tf);
    corpus_ids_free(&v->text);
    tokenizer_free(&v->tok);
    gpt2_free(&v->m);
    opt_free(&eval_table, &v->a);
    comm_agree_stdout(0);  // the result line is the point of the run
    comm_exit(0);
}
