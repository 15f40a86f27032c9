// sample_main.c - gpt-sample: stream a continuation of --prompt from a checkpoint.
//
// Loads config, weights and /tokenizer from one checkpoint file (or RUN/latest), feeds the
// prompt through a key/value cache (sampler.h) and prints each token's text as soon as it
// is drawn, whole UTF-8 characters only. --attn-out writes every attention row to the
// generation file (generation_io.h) as it goes; the file is renamed into place when
// generation ends, also early, on a stop signal or when stdout's reader goes away.
#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "attention_io.h"
#include "checkpoint.h"
#include "error.h"
#include "files.h"
#include "generation_io.h"
#include "gpt2.h"
#include "h5util.h"
#include "options.h"
#include "sampler.h"
#include "signals.h"
#include "tokenizer.h"
#include "vocab_io.h"
#include "utf8.h"

typedef struct {
    char *checkpoint, *prompt, *attn_out, *precision;
    int max_new, top_k, threads, force, record_top;
    double temperature, top_p;
    long long seed;
} SampleArgs;

#define S(field) offsetof(SampleArgs, field)
static const Opt sample_opts[] = {
    {"checkpoint", OPT_STR, S(checkpoint), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "PATH", "a checkpoint file, or a run directory (uses RUN/latest)"},
    {"prompt", OPT_STR, S(prompt), 0, 0, NULL, NULL, NULL, OPT_REQUIRED | OPT_TEXT, "TEXT", "UTF-8 text to continue; \"\" starts from a newline token"},
    {"max-new-tokens", OPT_INT, S(max_new), 0, 100000000, NULL, "100", NULL, 0, NULL, "tokens to generate"},
    {"temperature", OPT_REAL, S(temperature), 0, INFINITY, NULL, "1.0", NULL, 0, "F", "0 = greedy (argmax)"},
    {"top-k", OPT_INT, S(top_k), 0, INT_MAX, NULL, "0", NULL, 0, "K", "sample among the K likeliest tokens only; 0 = all"},
    {"top-p", OPT_REAL, S(top_p), 0, 1, NULL, "1", NULL, OPT_MIN_OPEN, "P", "nucleus: smallest set of likeliest tokens with mass >= P; 1 = off"},
    {"seed", OPT_I64, S(seed), 0, 9223372036854775807.0, NULL, "1337", NULL, 0, "S", "random seed: same seed, same text"},
    {"attn-out", OPT_STR, S(attn_out), 0, 0, NULL, NULL, NULL, 0, "FILE.h5", "write the prompt's and every generated token's attention"},
    {"record-top", OPT_INT, S(record_top), 0, 100000, NULL, "10", NULL, 0, "K", "with --attn-out: record the K likeliest next tokens at each step; 0 = none"},
    {"force", OPT_FLAG, S(force), 0, 0, NULL, NULL, NULL, 0, NULL, "overwrite an existing --attn-out file"},
    {"threads", OPT_INT, S(threads), 1, 1024, NULL, "1", NULL, 0, NULL, "BLAS/OpenMP threads"},
    {"precision", OPT_STR, S(precision), 0, 0, "|fp32|bf16|", "fp32", NULL, 0, "NAME", "matmul arithmetic: fp32, or bf16 (bf16 operands, fp32 accumulation; needs AVX512-BF16)"},
};
#undef S
static const OptTable sample_table = {
    "gpt-sample",
    "usage: gpt-sample --checkpoint RUN|ckpt.h5 --prompt TEXT [options]\n"
    "\n"
    "Streams the continuation of TEXT to stdout, token by token.\n"
    "\n",
    "  --help               this text\n"
    "\n"
    "Context past the block size: the window slides by one token and the whole window is\n"
    "recomputed for each new token (as nanoGPT's generate does); before that each token\n"
    "costs one cached step.\n",
    sample_opts, OPT_COUNT(sample_opts), NULL, 0};

// Prints bytes as they come, holding back a UTF-8 character cut between two tokens until it
// is complete; ill-formed bytes come out as U+FFFD. Returns 0, or the errno of a failed
// write to stdout (EPIPE: the reader went away).
typedef struct {
    uint8_t *buf;
    size_t n, cap;
} Utf8Stream;

static int stream_put(Utf8Stream *s, const uint8_t *b, size_t len, int final) {
    int err = 0;
    if (s->n + len > s->cap) {
        s->cap = 2 * (s->n + len) + 16;
        s->buf = gt_realloc(s->buf, s->cap, "output buffer");
    }
    memcpy(s->buf + s->n, b, len);
    s->n += len;
    size_t i = 0;
    while (i < s->n) {
        int r = utf8_char_len(s->buf + i, s->n - i);
        if (r > 0) {
            if (!err) err = gt_stdout_write(s->buf + i, (size_t)r);
            i += (size_t)r;
        } else if (r < 0 && !final) {
            break;  // a character cut short: wait for the next token
        } else {
            if (!err) err = gt_stdout_write("\xEF\xBF\xBD", 3);
            i += utf8_bad_len(s->buf + i, s->n - i);
        }
    }
    memmove(s->buf, s->buf + i, s->n - i);
    s->n -= i;
    return err ? err : gt_stdout_flush();
}

// The prompt's ids. Empty: a newline token, else the first special token (said on stderr).
// The prompt is valid UTF-8 (its option row says so). Fails (exit 1) on bytes the vocabulary does not give back on decoding.
static uint32_t *encode_prompt(const Tokenizer *tok, const char *prompt, size_t *P) {
    size_t plen = strlen(prompt), cap = 0, dl = 0;
    uint32_t *ids = NULL;
    *P = 0;
    if (plen == 0) {
        tokenizer_encode(tok, "\n", 1, &ids, P, &cap);
        char *d = *P ? tokenizer_decode(tok, ids, *P, &dl) : NULL;
        int newline = *P > 0 && dl == 1 && d[0] == '\n';
        free(d);
        if (newline) {
            fprintf(stderr, "gpt-sample: empty --prompt: starting from a newline token (id %u)\n", ids[0]);
        } else if (tok->n_special > 0) {
            *P = 0;
            tokenizer_encode(tok, tok->special[0], strlen(tok->special[0]), &ids, P, &cap);
            fprintf(stderr, "gpt-sample: empty --prompt: starting from the special token '%s' (id %u)\n",
                    tok->special[0], ids[0]);
        } else {
            gt_fail_usage("--prompt is empty and the vocabulary has neither a newline token nor a special token to start from");
        }
        return ids;
    }
    // Byte-level BPE encodes every byte; a vocabulary that does not (specials only) shows up
    // here as a decode that differs from the prompt.
    tokenizer_encode(tok, prompt, plen, &ids, P, &cap);
    char *d = tokenizer_decode(tok, ids, *P, &dl);
    size_t i = 0;
    while (i < dl && i < plen && d[i] == prompt[i]) i++;
    free(d);
    if (i < plen || dl != plen)
        gt_fail_usage("--prompt: byte %zu (0x%02x) cannot be encoded by the checkpoint's vocabulary", i,
                      i < plen ? (unsigned char)prompt[i] : 0);
    return ids;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    gt_set_progname("gpt-sample");
    signals_install_immediate();  // until generation starts, a stop signal ends the process at once
    gt_stdout_check_at_exit();
    h5_quiet();
    signals_test_point("start");
    SampleArgs a;
    opt_parse_or_exit(&sample_table, &a, argc - 1, argv + 1, NULL);
    const char *ckpt_arg = a.checkpoint, *prompt = a.prompt, *attn_out = a.attn_out;
    long max_new = a.max_new, top_k = a.top_k, threads = a.threads;
    double temperature = a.temperature, top_p = a.top_p;
    unsigned long long seed = (unsigned long long)a.seed;
    int force = a.force;
    if (attn_out) h5_check_output_path(attn_out, "--attn-out", force);
    omp_set_num_threads((int)threads);
    openblas_set_num_threads((int)threads);

    // ---- checkpoint: config, weights, tokenizer ----
    char ckpt_path[4200], *ckpt = ckpt_path;
    GtErr re = GT_ERR_INIT;
    hid_t f = ckpt_resolve_open_e(ckpt_arg, "--checkpoint", ckpt_path, sizeof ckpt_path, &re);
    if (f < 0) gt_err_exit(&re);
    if (attn_out && gt_same_file(attn_out, ckpt))
        gt_fail_usage("--attn-out '%s' is the same file as the checkpoint '%s'; writing it would destroy the checkpoint",
                      attn_out, ckpt);
    GPTConfig c;
    ckpt_read_model_config(f, &c, ckpt);
    GPT2 m;
    gpt2_build(&m, &c);
    ckpt_read_tensors(f, "model", &m, m.params, ckpt);
    Precision prec = PRECISION_FP32;
    precision_parse(a.precision, &prec);  // the table allows only the two names
    char perr[512];
    if (!gpt2_set_precision(&m, prec, perr, sizeof perr)) gt_fail_usage("%s", perr);
    if (!h5_exists(f, "tokenizer")) gt_fail_usage("--checkpoint '%s': no /tokenizer group", ckpt);
    Tokenizer tok;
    vocab_read_group(f, &tok, ckpt);
    int64_t step = -1;
    h5_attr_read_int(f, "step", &step);
    H5Fclose(f);
    int V = tok.vocab_size < c.vocab_size ? tok.vocab_size : c.vocab_size;  // never sample padding ids

    // ---- prompt ----
    size_t plen = strlen(prompt), P = 0;
    uint32_t *ids = encode_prompt(&tok, prompt, &P);
    for (size_t i = 0; i < P; i++)
        if (ids[i] >= (uint32_t)V)
            gt_fail_usage("--checkpoint '%s': the tokenizer gives id %u, outside the model's vocabulary (%d)", ckpt, ids[i], V);
    int *pids = gt_malloc(P * sizeof(int), "prompt ids");
    for (size_t i = 0; i < P; i++) pids[i] = (int)ids[i];
    if (P > (size_t)c.block_size)
        fprintf(stderr, "gpt-sample: the prompt is %zu tokens, longer than the block size %d: the model sees its last %d tokens\n",
                P, c.block_size, c.block_size);

    // ---- generate ----
    Utf8Stream out = {0};
    int out_err;
    if (plen) out_err = stream_put(&out, (const uint8_t *)prompt, plen, 0);
    else {
        char *d = tokenizer_decode(&tok, ids, P, NULL);
        out_err = stream_put(&out, (const uint8_t *)d, strlen(d), 0);
        free(d);
    }
    if (out_err) gt_stdout_failed(out_err);
    double t0 = now_s();
    Generator g;
    generator_start(&g, &m, pids, P, attn_out != NULL);
    double t_prompt = now_s() - t0;
    size_t dropped = g.start;  // prompt tokens before the first window: not in the generation file
    GtErr e = GT_ERR_INIT;
    GenWriter *gw = NULL;
    float *row = NULL;
    int K = a.record_top < V ? a.record_top : V;  // candidates recorded per token
    int32_t *cand_id = gt_malloc((size_t)(K ? K : 1) * sizeof(int32_t), "candidate ids");
    float *cand_p = gt_malloc((size_t)(K ? K : 1) * sizeof(float), "candidate probabilities");
    if (attn_out) {
        GenMeta meta = {prompt, (float)temperature, (int)top_k, (float)top_p, seed, ckpt, step, (long long)dropped, K};
        int32_t *kept = gt_malloc((P - dropped + 1) * sizeof(int32_t), "prompt ids");
        for (size_t i = dropped; i < P; i++) kept[i - dropped] = (int32_t)ids[i];
        gw = gen_writer_open_e(attn_out, &c, &tok, &meta, kept, (int)(P - dropped), g.kv.att, &e);
        free(kept);
        if (!gw) gt_err_exit(&e);
        row = gt_malloc((size_t)c.n_layer * c.n_head * c.block_size * sizeof(float), "attention row");
    }
    float *probs = gt_malloc((size_t)c.vocab_size * sizeof(float), "probabilities");
    int *order = gt_malloc((size_t)c.vocab_size * sizeof(int), "token order");
    SampleParams sp = {(float)temperature, (int)top_k, (float)top_p};
    Rng rng;
    rng_seed(&rng, seed);
    double t1 = now_s();
    int ends_with_newline = 1;
    // From here a stop signal, or a reader that goes away (`| head`), ends generation after
    // the current token, and the generation file keeps what was generated.
    signals_defer(1);
    long n_new = 0;
    for (; n_new < max_new && !signals_pending() && !out_err; n_new++) {
        if (gw) {
            kv_att_row(&g.kv, g.kv.last_fed - 1, row);
            if (K) top_tokens(g.kv.logits, V, K, cand_id, cand_p);
        }
        int id = sample_token(g.kv.logits, V, &sp, &rng, probs, order);
        if (gw && gen_writer_token_e(gw, id, row, (int64_t)(g.start - dropped), cand_id, cand_p, &e)) gt_err_exit(&e);
        size_t tl = 0;
        const uint8_t *tb = tokenizer_token(&tok, (uint32_t)id, &tl);
        out_err = stream_put(&out, tb, tl, 0);
        if (tl > 0) ends_with_newline = tb[tl - 1] == '\n';
        if (n_new + 1 < max_new) generator_push(&g, id);
        if (n_new == 2) signals_test_point("generate");
    }
    if (!out_err) out_err = stream_put(&out, (const uint8_t *)"", 0, 1);
    if (out_err && out_err != EPIPE) gt_stdout_failed(out_err);  // exit 2; the temp file goes
    int sig = signals_pending();
    double t_gen = now_s() - t1;
    if (gw && gen_writer_close_e(gw, out_err ? "closed stdout" : sig ? signals_name(sig) : "", &e)) gt_err_exit(&e);
    if (out_err) signals_exit(SIGPIPE);  // quiet, as a closed pipe ends any tool
    // stdout holds exactly the text; the report starts on its own line on a shared terminal.
    if (!ends_with_newline) fputc('\n', stderr);
    if (sig) fprintf(stderr, "gpt-sample: stopped by %s after %ld of %ld tokens\n", signals_name(sig), n_new, max_new);
    fprintf(stderr, "gpt-sample: prompt %zu tokens in %.1f ms; %ld new tokens in %.1f ms (%.1f tokens/s); window slid %lld times\n",
            P, 1e3 * t_prompt, n_new, 1e3 * t_gen, t_gen > 0 ? (double)n_new / t_gen : 0.0, g.slides);
    if (attn_out) fprintf(stderr, "gpt-sample: wrote %s\n", attn_out);
    if ((sig = signals_pending())) signals_exit(sig);
    free(row);
    free(cand_id);
    free(cand_p);
    free(probs);
    free(order);
    free(pids);
    free(ids);
    free(out.buf);
    generator_free(&g);
    gpt2_free(&m);
    tokenizer_free(&tok);
    opt_free(&sample_table, &a);
    return 0;
}
