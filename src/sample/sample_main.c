// sample_main.c - gpt-sample: stream a continuation of --prompt from a checkpoint.
//
// Loads config, weights and /tokenizer from one checkpoint file (or RUN/latest), feeds the
// prompt through a key/value cache (sampler.h) and prints each token's text as soon as it
// is drawn, whole UTF-8 characters only. --attn-out keeps every attention row and writes
// the generation file (generation_io.h) at the end.
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "attention_io.h"
#include "checkpoint.h"
#include "error.h"
#include "generation_io.h"
#include "gpt2.h"
#include "h5util.h"
#include "sampler.h"
#include "tokenizer.h"
#include "vocab_io.h"
#include "utf8.h"

static const char *USAGE =
    "usage: gpt-sample --checkpoint RUN|ckpt.h5 --prompt TEXT [options]\n"
    "\n"
    "Streams the continuation of TEXT to stdout, token by token.\n"
    "\n"
    "  --checkpoint PATH     a checkpoint file, or a run directory (uses RUN/latest)\n"
    "  --prompt TEXT         UTF-8 text to continue; \"\" starts from a newline token\n"
    "  --max-new-tokens N    tokens to generate (default 100)\n"
    "  --temperature F       0 = greedy (argmax); default 1.0\n"
    "  --top-k K             sample among the K likeliest tokens only; 0 = all (default)\n"
    "  --top-p P             nucleus: smallest set of likeliest tokens with mass >= P; 1 = off (default)\n"
    "  --seed S              random seed (default 1337): same seed, same text\n"
    "  --attn-out FILE.h5    write the prompt's and every generated token's attention\n"
    "  --force               overwrite an existing --attn-out file\n"
    "  --threads N           BLAS/OpenMP threads (default 1)\n"
    "  --help                this text\n"
    "\n"
    "Context past the block size: the window slides by one token and the whole window is\n"
    "recomputed for each new token (as nanoGPT's generate does); before that each token\n"
    "costs one cached step.\n";

static long parse_long(const char *flag, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) gt_fail_usage("%s '%s': not an integer", flag, s);
    if (v < lo || v > hi) gt_fail_usage("%s %ld: must be between %ld and %ld", flag, v, lo, hi);
    return v;
}

static double parse_double(const char *flag, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) gt_fail_usage("%s '%s': not a number", flag, s);
    return v;
}

// A run directory means the checkpoint named in RUN/latest (a file name relative to RUN, or
// an absolute path).
static char *resolve_checkpoint(const char *arg) {
    struct stat st;
    if (stat(arg, &st) != 0) gt_fail_usage("--checkpoint '%s': %s", arg, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return gt_strdup(arg);
    char latest[4200];
    snprintf(latest, sizeof latest, "%s/latest", arg);
    FILE *f = fopen(latest, "r");
    if (!f) gt_fail_usage("--checkpoint '%s': a run directory without a 'latest' file (no checkpoint written yet?)", arg);
    char name[4096] = "";
    if (!fgets(name, sizeof name, f)) name[0] = '\0';
    fclose(f);
    size_t n = strlen(name);
    while (n > 0 && (name[n - 1] == '\n' || name[n - 1] == '\r' || name[n - 1] == ' ')) name[--n] = '\0';
    if (n == 0) gt_fail_usage("--checkpoint '%s': '%s' is empty", arg, latest);
    char *path = gt_malloc(strlen(arg) + n + 2, "checkpoint path");
    if (name[0] == '/') strcpy(path, name);
    else sprintf(path, "%s/%s", arg, name);
    return path;
}

// Prints bytes as they come, holding back a UTF-8 character cut between two tokens until it
// is complete; ill-formed bytes come out as U+FFFD.
typedef struct {
    uint8_t *buf;
    size_t n, cap;
} Utf8Stream;

static void stream_put(Utf8Stream *s, const uint8_t *b, size_t len, int final) {
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
            fwrite(s->buf + i, 1, (size_t)r, stdout);
            i += (size_t)r;
        } else if (r < 0 && !final) {
            break;  // a character cut short: wait for the next token
        } else {
            fputs("\xEF\xBF\xBD", stdout);
            i += utf8_bad_len(s->buf + i, s->n - i);
        }
    }
    memmove(s->buf, s->buf + i, s->n - i);
    s->n -= i;
    fflush(stdout);
}

// The prompt's ids. Empty: a newline token, else the first special token (said on stderr).
// Fails (exit 1) on invalid UTF-8 or bytes the vocabulary does not give back on decoding.
static uint32_t *encode_prompt(const Tokenizer *tok, const char *prompt, size_t *P) {
    size_t plen = strlen(prompt), bad = 0, cap = 0, dl = 0;
    uint32_t *ids = NULL;
    *P = 0;
    if (!utf8_validate(prompt, plen, &bad)) gt_fail_usage("--prompt: invalid UTF-8 at byte %zu", bad);
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
    h5_quiet();
    const char *ckpt_arg = NULL, *prompt = NULL, *attn_out = NULL;
    long max_new = 100, top_k = 0, threads = 1;
    double temperature = 1.0, top_p = 1.0;
    unsigned long long seed = 1337;
    int force = 0;
    static struct option opts[] = {
        {"checkpoint", required_argument, 0, 'c'}, {"prompt", required_argument, 0, 'p'},
        {"max-new-tokens", required_argument, 0, 'n'}, {"temperature", required_argument, 0, 't'},
        {"top-k", required_argument, 0, 'k'}, {"top-p", required_argument, 0, 'P'},
        {"seed", required_argument, 0, 's'}, {"attn-out", required_argument, 0, 'a'},
        {"threads", required_argument, 0, 'j'}, {"force", no_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (o) {
        case 'c': ckpt_arg = optarg; break;
        case 'p': prompt = optarg; break;
        case 'n': max_new = parse_long("--max-new-tokens", optarg, 0, 100000000); break;
        case 't':
            temperature = parse_double("--temperature", optarg);
            if (temperature < 0) gt_fail_usage("--temperature %s: must be >= 0 (0 means greedy)", optarg);
            break;
        case 'k': top_k = parse_long("--top-k", optarg, 0, INT_MAX); break;
        case 'P':
            top_p = parse_double("--top-p", optarg);
            if (!(top_p > 0 && top_p <= 1)) gt_fail_usage("--top-p %s: must be in (0, 1]", optarg);
            break;
        case 's': {
            char *end;
            errno = 0;
            seed = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-') gt_fail_usage("--seed '%s': not a non-negative integer", optarg);
            break;
        }
        case 'a': attn_out = optarg; break;
        case 'j': threads = parse_long("--threads", optarg, 1, 1024); break;
        case 'f': force = 1; break;
        case 'h': fputs(USAGE, stdout); return 0;
        case ':': gt_fail_usage("%s needs a value (see --help)", argv[optind - 1]);
        default: gt_fail_usage("unknown option '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc) gt_fail_usage("unexpected argument '%s' (see --help)", argv[optind]);
    if (!ckpt_arg) gt_fail_usage("--checkpoint is required (see --help)");
    if (!prompt) gt_fail_usage("--prompt is required (see --help)");
    if (attn_out) h5_check_output_path(attn_out, "--attn-out", force);
    omp_set_num_threads((int)threads);
    openblas_set_num_threads((int)threads);

    // ---- checkpoint: config, weights, tokenizer ----
    char *ckpt = resolve_checkpoint(ckpt_arg);
    hid_t f = ckpt_open(ckpt, "--checkpoint");
    GPTConfig c;
    ckpt_read_model_config(f, &c, ckpt);
    GPT2 m;
    gpt2_build(&m, &c);
    ckpt_read_tensors(f, "model", &m, m.params, ckpt);
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
    if (plen) stream_put(&out, (const uint8_t *)prompt, plen, 0);
    else {
        char *d = tokenizer_decode(&tok, ids, P, NULL);
        stream_put(&out, (const uint8_t *)d, strlen(d), 0);
        free(d);
    }
    double t0 = now_s();
    Generator g;
    generator_start(&g, &m, pids, P, attn_out != NULL);
    double t_prompt = now_s() - t0;
    size_t dropped = g.start;  // prompt tokens before the first window: not in the generation file
    GenRecord rec;
    float *row = NULL;
    if (attn_out) {
        gen_record_init(&rec, &c);
        int32_t *kept = gt_malloc((P - dropped) * sizeof(int32_t), "prompt ids");
        for (size_t i = dropped; i < P; i++) kept[i - dropped] = (int32_t)ids[i];
        gen_record_prompt(&rec, kept, (int)(P - dropped), g.kv.att);
        free(kept);
        row = gt_malloc((size_t)c.n_layer * c.n_head * c.block_size * sizeof(float), "attention row");
    }
    float *probs = gt_malloc((size_t)c.vocab_size * sizeof(float), "probabilities");
    int *order = gt_malloc((size_t)c.vocab_size * sizeof(int), "token order");
    SampleParams sp = {(float)temperature, (int)top_k, (float)top_p};
    Rng rng;
    rng_seed(&rng, seed);
    double t1 = now_s();
    int ends_with_newline = 1;
    for (long i = 0; i < max_new; i++) {
        if (attn_out) kv_att_row(&g.kv, g.kv.last_fed - 1, row);
        int id = sample_token(g.kv.logits, V, &sp, &rng, probs, order);
        if (attn_out) gen_record_token(&rec, id, row, (int64_t)(g.start - dropped));
        size_t tl = 0;
        const uint8_t *tb = tokenizer_token(&tok, (uint32_t)id, &tl);
        stream_put(&out, tb, tl, 0);
        if (tl > 0) ends_with_newline = tb[tl - 1] == '\n';
        if (i + 1 < max_new) generator_push(&g, id);
    }
    stream_put(&out, (const uint8_t *)"", 0, 1);
    double t_gen = now_s() - t1;
    // stdout holds exactly the text; the report starts on its own line on a shared terminal.
    if (!ends_with_newline) fputc('\n', stderr);
    fprintf(stderr, "gpt-sample: prompt %zu tokens in %.1f ms; %ld new tokens in %.1f ms (%.1f tokens/s); window slid %lld times\n",
            P, 1e3 * t_prompt, max_new, 1e3 * t_gen, t_gen > 0 ? (double)max_new / t_gen : 0.0, g.slides);

    if (attn_out) {
        GenMeta meta = {prompt, (float)temperature, (int)top_k, (float)top_p, seed, ckpt, step, (long long)dropped};
        gen_record_save(&rec, attn_out, &tok, &meta);
        gen_record_free(&rec);
        fprintf(stderr, "gpt-sample: wrote %s\n", attn_out);
    }
    free(row);
    free(probs);
    free(order);
    free(pids);
    free(ids);
    free(out.buf);
    generator_free(&g);
    gpt2_free(&m);
    tokenizer_free(&tok);
    free(ckpt);
    return 0;
}
