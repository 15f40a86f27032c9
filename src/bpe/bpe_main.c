// bpe_main.c - the gpt-bpe command: train a vocabulary, encode text to tokens.h5, decode.
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "corpus.h"
#include "error.h"
#include "files.h"
#include "h5util.h"
#include "options.h"
#include "sha256.h"
#include "signals.h"
#include "tokenizer.h"
#include "tokens_io.h"
#include "utf8.h"
#include "vocab_io.h"

// Encode streams the input in blocks of this size (GT_BPE_BLOCK overrides it, for tests).
static size_t BLOCK = (size_t)16 << 20;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// --force replaces the output by renaming over it: were it an input, that input would be gone.
static void refuse_same_file(const char *out, const char *in, const char *in_flag) {
    if (gt_same_file(out, in))
        gt_fail_usage("--out '%s' is the same file as %s '%s'; writing it would destroy the input", out, in_flag, in);
}

// ---------------------------------------------------------------------------------------
// train

// The settings of all three commands; each command's table uses its own rows.
typedef struct {
    char *vocab_path, *out, *tokens, *pattern, *split, *ids, *doc_separator, *val_split;
    OptList input, special;
    int vocab_size, threads, replace, force, quiet;
    double val_fraction;
} BpeArgs;

#define B(field) offsetof(BpeArgs, field)
// The rows train and encode share, after their own.
#define ROWS_TEXT_TO_FILE(threads_help)                                                                                \
    {"doc-separator", OPT_STR, B(doc_separator), 0, 0, NULL, NULL, NULL, OPT_TEXT, "TOKEN", "a special token placed between documents (files)"}, \
    {"replace-invalid", OPT_FLAG, B(replace), 0, 0, NULL, NULL, NULL, 0, NULL, "map invalid UTF-8 to U+FFFD instead of failing"}, \
    {"threads", OPT_INT, B(threads), 1, 1024, NULL, "1", NULL, 0, NULL, threads_help},                                 \
    {"force", OPT_FLAG, B(force), 0, 0, NULL, NULL, NULL, 0, NULL, "overwrite --out if it exists"},                    \
    {"quiet", OPT_FLAG, B(quiet), 0, 0, NULL, NULL, NULL, 0, NULL, "no statistics on stderr"}
#define ROW_VOCAB {"vocab", OPT_STR, B(vocab_path), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "FILE", "vocab.h5 from gpt-bpe train, or a tokens.h5 or checkpoint (their /tokenizer)"}
#define ROW_INPUT(what) {"input", OPT_LIST, B(input), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "PATH", what " (UTF-8): a file, a directory (every file below it), or - (stdin)"}

// The corpus of --input, checked; --out may not be one of its files.
static Corpus *open_inputs(const BpeArgs *a) {
    GtErr e = GT_ERR_INIT;
    CorpusOptions co = {"--input", a->replace, BLOCK, !a->quiet};
    Corpus *c = corpus_open(a->input.v, a->input.n, &co, &e);
    if (!c) gt_err_exit(&e);
    int n;
    const TokensSource *src = corpus_sources(c, &n);
    for (int i = 0; i < n; i++)
        if (strcmp(src[i].path, "-")) refuse_same_file(a->out, src[i].path, "--input");
    return c;
}

// ---------------------------------------------------------------------------------------
// train

static const Opt train_opts[] = {
    ROW_INPUT("training text"),
    {"out", OPT_STR, B(out), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "FILE", "vocabulary to write (HDF5, format gpt-train/vocab)"},
    {"vocab-size", OPT_INT, B(vocab_size), 256, INT32_MAX, NULL, "2000", NULL, 0, NULL, "total ids: 256 bytes + merges + specials"},
    {"pattern", OPT_STR, B(pattern), 0, 0, NULL, "llama3", NULL, OPT_TEXT, "P", "split regex: llama3, gpt4, gpt2, or a PCRE2 regex"},
    {"special", OPT_LIST, B(special), 0, 0, NULL, NULL, NULL, OPT_TEXT, "TOKEN", "a special token; its id follows the merges"},
    ROWS_TEXT_TO_FILE("threads for splitting and counting (built-in patterns only; at most 64 are used)"),
};
static int cmd_train(const BpeArgs *a) {
    int n_special = a->special.n + (a->doc_separator ? 1 : 0);
    for (int i = 0; a->doc_separator && i < a->special.n; i++)
        if (!strcmp(a->special.v[i], a->doc_separator)) n_special--;
    if (a->vocab_size < 256 + n_special)
        gt_fail_usage("--vocab-size %d: must be at least 256 (the bytes) + %d special token(s)", a->vocab_size, n_special);
    tokenizer_pattern_checked(a->pattern, "--pattern");
    h5_check_output_path(a->out, "--out", a->force);
    Corpus *c = open_inputs(a);

    double t0 = now_s();
    GtErr e = GT_ERR_INIT;
    Tokenizer tok;
    CorpusTrainOptions to = {a->vocab_size, a->pattern, a->special.v, a->special.n, a->doc_separator, a->threads, !a->quiet};
    GT_OR_EXIT(&e, corpus_train(c, &to, &tok, &e));
    corpus_print_notes(c, stderr);
    GT_OR_EXIT(&e, vocab_save_e(a->out, &tok, a->force, &e));
    if (!a->quiet)
        fprintf(stderr, "gpt-bpe: wrote %s: vocab_size %d (256 bytes + %d merges + %d special) in %.2f s\n", a->out,
                tok.vocab_size, tok.n_merges, tok.n_special, now_s() - t0);
    tokenizer_free(&tok);
    corpus_close(c);
    return 0;
}

// ---------------------------------------------------------------------------------------
// encode

static const Opt encode_opts[] = {
    ROW_VOCAB,
    ROW_INPUT("text to encode"),
    {"out", OPT_STR, B(out), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "FILE", "tokens to write (HDF5, format gpt-train/tokens)"},
    {"val-fraction", OPT_REAL, B(val_fraction), 0, 1, NULL, "0.1", NULL, OPT_MAX_OPEN, "F", "the last F of the tokens go to /val, in [0, 1)"},
    {"val-split", OPT_STR, B(val_split), 0, 0, "|tokens|docs|", "tokens", NULL, 0, "HOW", "tokens: the last F of the tokens; docs: the fewest last whole documents holding that many"},
    ROWS_TEXT_TO_FILE("encoding threads (built-in patterns only; at most 64 are used)"),
};
static int cmd_encode(const BpeArgs *a) {
    h5_check_output_path(a->out, "--out", a->force);
    refuse_same_file(a->out, a->vocab_path, "--vocab");
    Tokenizer tok;
    vocab_load(a->vocab_path, &tok, "--vocab");
    tokenizer_set_threads(&tok, a->threads);
    Corpus *c = open_inputs(a);

    GtErr e = GT_ERR_INIT;
    CorpusEncodeOptions eo = {a->val_fraction, !strcmp(a->val_split, "docs"), a->doc_separator};
    CorpusEncodeStats st;
    GT_OR_EXIT(&e, corpus_encode(c, &tok, &eo, a->out, a->force, &st, &e));
    corpus_print_notes(c, stderr);
    if (!a->quiet) {
        int64_t bytes = corpus_bytes(c);
        int n_src;
        corpus_sources(c, &n_src);
        fprintf(stderr, "gpt-bpe: %s: %lld bytes", corpus_inputs_text(c), (long long)bytes);
        if (n_src > 1) fprintf(stderr, " in %d files (%zu documents)", n_src, st.n_docs);
        fprintf(stderr, " -> %zu tokens (%.2f bytes/token) in %.2f s (%.1f MB/s); wrote %s: /train %zu, /val %zu\n",
                st.n_tokens, st.n_tokens ? (double)bytes / (double)st.n_tokens : 0.0, st.seconds,
                (double)bytes / 1e6 / (st.seconds + 1e-9), a->out, st.n_train, st.n_val);
    }
    corpus_close(c);
    tokenizer_free(&tok);
    return 0;
}

// ---------------------------------------------------------------------------------------
// decode

static const Opt decode_opts[] = {
    ROW_VOCAB,
    {"tokens", OPT_STR, B(tokens), 0, 0, NULL, NULL, NULL, 0, "FILE", "tokens.h5 from gpt-bpe encode (made with the same vocabulary)"},
    {"split", OPT_STR, B(split), 0, 0, "|train|val|", NULL, NULL, 0, "S", "train (default) or val"},
    {"ids", OPT_STR, B(ids), 0, 0, NULL, NULL, NULL, 0, "LIST", "comma-separated token ids"},
};
static void write_out(const char *s, size_t n) {
    int err = gt_stdout_write(s, n);
    if (err) gt_stdout_failed(err);
}

static int same_vocab(const Tokenizer *a, const Tokenizer *b) {
    return a->vocab_size == b->vocab_size && a->n_merges == b->n_merges &&
           memcmp(a->token_offsets, b->token_offsets, ((size_t)a->vocab_size + 1) * sizeof(int64_t)) == 0 &&
           memcmp(a->token_bytes, b->token_bytes, (size_t)a->token_offsets[a->vocab_size]) == 0;
}

static int cmd_decode(const BpeArgs *a) {
    const char *vocab = a->vocab_path, *tokens = a->tokens, *split = a->split, *ids_s = a->ids;
    if (!tokens == !ids_s) gt_fail_usage("decode: give exactly one of --tokens or --ids");
    if (split && !tokens) gt_fail_usage("decode: --split needs --tokens");
    if (!split) split = "train";
    Tokenizer tok;
    vocab_load(vocab, &tok, "--vocab");
    if (ids_s) {
        size_t n = 0, cap = 16;
        uint32_t *ids = gt_malloc(cap * sizeof *ids, "ids");
        const char *p = ids_s;
        for (;;) {
            char *end;
            errno = 0;
            long long v = strtoll(p, &end, 10);
            if (end == p || (*end && *end != ',')) {
                char shown[256];
                gt_fail_usage("--ids '%s': expected comma-separated integers", utf8_escape(shown, sizeof shown, ids_s, 0));
            }
            if (errno == ERANGE || v < 0 || v >= tok.vocab_size)  // an overflow is out of range too
                gt_fail_usage("--ids: %.*s is not a token id of '%s' (vocab_size %d)", (int)(end - p), p, vocab,
                              tok.vocab_size);
            if (n == cap) ids = gt_realloc(ids, (cap *= 2) * sizeof *ids, "ids");
            ids[n++] = (uint32_t)v;
            if (!*end) break;
            p = end + 1;
        }
        size_t len;
        char *s = tokenizer_decode(&tok, ids, n, &len);
        write_out(s, len);
        free(s);
        free(ids);
    } else {
        TokensInfo info;
        Tokenizer ttok;
        hid_t f = tokens_open(tokens, &info, &ttok, "--tokens");
        if (!same_vocab(&tok, &ttok))
            gt_fail_usage("--tokens '%s' was encoded with another vocabulary than --vocab '%s'", tokens, vocab);
        size_t total = strcmp(split, "train") == 0 ? info.n_train : info.n_val;
        size_t chunk = (size_t)1 << 20;
        uint32_t *ids = gt_malloc(chunk * sizeof *ids, "ids");
        for (size_t s = 0; s < total; s += chunk) {
            size_t k = total - s < chunk ? total - s : chunk;
            tokens_read(f, split, s, k, ids, tokens);
            size_t len;
            char *txt = tokenizer_decode(&tok, ids, k, &len);
            write_out(txt, len);
            free(txt);
        }
        free(ids);
        H5Fclose(f);
        tokens_info_free(&info);
        tokenizer_free(&ttok);
    }
    int err = gt_stdout_flush();
    if (err) gt_stdout_failed(err);
    tokenizer_free(&tok);
    return 0;
}

// ---------------------------------------------------------------------------------------

// The three commands: each one's option table (its rows are above its function) and function.
static const struct {
    const char *name;
    OptTable table;
    int (*run)(const BpeArgs *a);
} commands[] = {
    {"train",
     {"gpt-bpe train",
      "usage: gpt-bpe train --input PATH [--input PATH ...] --out vocab.h5 [options]\n"
      "Trains a byte-level BPE vocabulary on UTF-8 text (docs/tokenizer.md, training rule): files,\n"
      "directories (every regular file below, in byte order of the paths) or - (stdin), one document each.\n",
      NULL, train_opts, OPT_COUNT(train_opts), NULL, 0},
     cmd_train},
    {"encode",
     {"gpt-bpe encode",
      "usage: gpt-bpe encode --vocab vocab.h5 --input PATH [--input PATH ...] --out tokens.h5 [options]\n"
      "Encodes UTF-8 text with a vocabulary into tokens.h5 (/train and /val), streaming it; inputs as\n"
      "for train.\n",
      NULL, encode_opts, OPT_COUNT(encode_opts), NULL, 0},
     cmd_encode},
    {"decode",
     {"gpt-bpe decode",
      "usage: gpt-bpe decode --vocab vocab.h5 (--tokens tokens.h5 [--split train|val] | --ids 1,2,3)\n"
      "Writes the decoded bytes to stdout.\n",
      NULL, decode_opts, OPT_COUNT(decode_opts), NULL, 0},
     cmd_decode},
};

static const char MAIN_HELP[] =
    "usage: gpt-bpe COMMAND [options]   (gpt-bpe COMMAND --help for its options)\n"
    "  train    train a byte-level BPE vocabulary on a text -> vocab.h5\n"
    "  encode   encode a text with a vocabulary -> tokens.h5 (/train, /val)\n"
    "  decode   decode tokens.h5 or a list of ids to stdout\n"
    "  --version  print the version\n";

int main(int argc, char **argv) {
    gt_set_progname("gpt-bpe");
    signals_install_immediate();  // a stop signal in any phase removes the temp output
    gt_stdout_check_at_exit();
    h5_quiet();
    signals_test_point("start");
    if (getenv("GT_BPE_BLOCK") && atol(getenv("GT_BPE_BLOCK")) > 0) BLOCK = (size_t)atol(getenv("GT_BPE_BLOCK"));
    if (argc < 2) {
        fputs(MAIN_HELP, stderr);
        return GT_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(MAIN_HELP, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("gpt-bpe %s\n", GT_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0) {
            BpeArgs a;
            opt_parse_or_exit(&commands[i].table, &a, argc - 2, argv + 2, NULL);
            int rc = commands[i].run(&a);
            opt_free(&commands[i].table, &a);
            return rc;
        }
    gt_fail_usage("unknown command '%s' (expected train, encode or decode; see gpt-bpe --help)", cmd);
}
