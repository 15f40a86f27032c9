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

// ---------------------------------------------------------------------------------------
// input

// Line and column (1-based, in bytes) of byte `offset` of the file: only computed for the message.
static void line_of(const char *path, size_t offset, size_t *line, size_t *col) {
    FILE *f = fopen(path, "rb");
    *line = 1;
    *col = 1;
    if (!f) return;
    size_t pos = 0, last_nl = 0;
    int c, seen_nl = 0;
    while (pos < offset && (c = fgetc(f)) != EOF) {
        if (c == '\n') {
            (*line)++;
            last_nl = pos;
            seen_nl = 1;
        }
        pos++;
    }
    *col = seen_nl ? offset - last_nl : offset + 1;
    fclose(f);
}

static _Noreturn void invalid_utf8(const char *path, size_t offset) {
    size_t line, col;
    line_of(path, offset, &line, &col);
    gt_fail_usage("--input '%s': invalid UTF-8 at byte offset %zu (line %zu, column %zu); "
                  "use --replace-invalid to map bad bytes to U+FFFD",
                  path, offset, line, col);
}

// Reads the next block of the file as valid UTF-8 appended to *buf (grown as needed).
// `pend` holds an incomplete character cut by the previous block. Returns 1 at end of file.
typedef struct {
    FILE *f;
    const char *path;
    size_t left;        // bytes still to read: at most the size the file had when opened
    int replace;
    uint8_t *raw;
    size_t pend;        // bytes of raw[] carried over (an incomplete character, < 4)
    size_t offset;      // file offset of raw[0]
    size_t replaced;
    Sha256 sha;
} Reader;

static int read_block(Reader *r, char **buf, size_t *len, size_t *cap) {
    size_t want = r->left < BLOCK ? r->left : BLOCK;
    size_t n = want ? fread(r->raw + r->pend, 1, want, r->f) : 0;
    if (ferror(r->f)) gt_fail_usage("--input '%s': read error: %s", r->path, strerror(errno));
    r->left -= n;
    int eof = n < want || r->left == 0;
    sha256_update(&r->sha, r->raw + r->pend, n);
    signals_test_point("read");
    size_t nraw = r->pend + n, used;
    if (*len + 3 * nraw + 1 > *cap) {
        *cap = *len + 3 * nraw + 1;
        *buf = gt_realloc(*buf, *cap, "input text");
    }
    if (r->replace) {
        *len += utf8_replace_invalid((uint8_t *)*buf + *len, r->raw, nraw, eof, &used, &r->replaced);
    } else {
        size_t bad;
        used = nraw;
        if (!utf8_validate((const char *)r->raw, nraw, &bad)) {
            if (eof || utf8_char_len(r->raw + bad, nraw - bad) != -1) invalid_utf8(r->path, r->offset + bad);
            used = bad;  // an incomplete character at the end of the block: wait for the rest
        }
        memcpy(*buf + *len, r->raw, used);
        *len += used;
    }
    r->pend = nraw - used;
    memmove(r->raw, r->raw + used, r->pend);
    r->offset += used;
    return eof;
}

static Reader *reader_open(const char *path, int replace, size_t *size) {
    GtErr e = GT_ERR_INIT;
    int64_t bytes = 0;
    int fd = gt_open_input(path, "--input", &bytes, &e);
    if (fd < 0) gt_err_exit(&e);
    if (bytes == 0) gt_fail_usage("--input '%s': file is empty", path);
    *size = (size_t)bytes;
    Reader *r = gt_calloc(1, sizeof *r, "reader");
    r->f = fdopen(fd, "rb");
    if (!r->f) gt_fail(GT_EXIT_RUNTIME, "--input '%s': %s", path, strerror(errno));
    r->left = (size_t)bytes;
    r->path = path;
    r->replace = replace;
    r->raw = gt_malloc(BLOCK + 8, "input block");
    sha256_init(&r->sha);
    return r;
}

static void reader_close(Reader *r) {
    fclose(r->f);
    free(r->raw);
    free(r);
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
    char *input, *out, *vocab, *tokens, *pattern, *split, *ids;
    OptList special;
    int vocab_size, threads, replace, force, quiet;
    double val_fraction;
} BpeArgs;

#define B(field) offsetof(BpeArgs, field)
// The rows train and encode share, after their own.
#define ROWS_TEXT_TO_FILE(threads_help)                                                                                \
    {"replace-invalid", OPT_FLAG, B(replace), 0, 0, NULL, NULL, NULL, 0, NULL, "map invalid UTF-8 to U+FFFD instead of failing"}, \
    {"threads", OPT_INT, B(threads), 1, 1024, NULL, "1", NULL, 0, NULL, threads_help},                                 \
    {"force", OPT_FLAG, B(force), 0, 0, NULL, NULL, NULL, 0, NULL, "overwrite --out if it exists"},                    \
    {"quiet", OPT_FLAG, B(quiet), 0, 0, NULL, NULL, NULL, 0, NULL, "no statistics on stderr"}
#define ROW_VOCAB {"vocab", OPT_STR, B(vocab), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "FILE", "vocabulary from gpt-bpe train"}

static const Opt train_opts[] = {
    {"input", OPT_STR, B(input), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "FILE", "training text (UTF-8)"},
    {"out", OPT_STR, B(out), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "FILE", "vocabulary to write (HDF5, format gpt-train/vocab)"},
    {"vocab-size", OPT_INT, B(vocab_size), 256, INT32_MAX, NULL, "2000", NULL, 0, NULL, "total ids: 256 bytes + merges + specials"},
    {"pattern", OPT_STR, B(pattern), 0, 0, NULL, "llama3", NULL, OPT_TEXT, "P", "split regex: llama3, gpt4, gpt2, or a PCRE2 regex"},
    {"special", OPT_LIST, B(special), 0, 0, NULL, NULL, NULL, OPT_TEXT, "TOKEN", "a special token; its id follows the merges"},
    ROWS_TEXT_TO_FILE("threads for splitting and counting"),
};
static int cmd_train(const BpeArgs *a) {
    const char *input = a->input, *out = a->out, *pattern = a->pattern;
    int V = a->vocab_size, n_special = a->special.n, replace = a->replace, force = a->force, quiet = a->quiet;
    if (V < 256 + n_special)
        gt_fail_usage("--vocab-size %d: must be at least 256 (the bytes) + %d special token(s)", V, n_special);
    tokenizer_pattern_checked(pattern, "--pattern");
    h5_check_output_path(out, "--out", force);
    refuse_same_file(out, input, "--input");

    size_t size;
    Reader *r = reader_open(input, replace, &size);
    char *text = NULL;
    size_t len = 0, cap = 0;
    while (!read_block(r, &text, &len, &cap)) {
    }
    if (r->offset == 0 && len == 0) gt_fail_usage("--input '%s': file is empty", input);
    if (r->replaced) fprintf(stderr, "gpt-bpe: replaced %zu invalid UTF-8 sequence(s) in '%s' with U+FFFD\n", r->replaced, input);
    reader_close(r);

    double t0 = now_s();
    Tokenizer tok;
    tokenizer_train(&tok, text, len, V, pattern, a->special.v, n_special, a->threads, !quiet);
    double t1 = now_s();
    vocab_save(out, &tok, force);
    if (!quiet)
        fprintf(stderr, "gpt-bpe: wrote %s: vocab_size %d (256 bytes + %d merges + %d special) in %.2f s\n", out,
                tok.vocab_size, tok.n_merges, tok.n_special, t1 - t0);
    tokenizer_free(&tok);
    free(text);
    return 0;
}

// ---------------------------------------------------------------------------------------
// encode

static const Opt encode_opts[] = {
    ROW_VOCAB,
    {"input", OPT_STR, B(input), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "FILE", "text to encode (UTF-8)"},
    {"out", OPT_STR, B(out), 0, 0, NULL, NULL, NULL, OPT_REQUIRED, "FILE", "tokens to write (HDF5, format gpt-train/tokens)"},
    {"val-fraction", OPT_REAL, B(val_fraction), 0, 1, NULL, "0.1", NULL, OPT_MAX_OPEN, "F", "the last F of the tokens go to /val, in [0, 1)"},
    ROWS_TEXT_TO_FILE("encoding threads (built-in patterns only)"),
};
static int cmd_encode(const BpeArgs *a) {
    const char *vocab = a->vocab, *input = a->input, *out = a->out;
    double vf = a->val_fraction;
    int threads = a->threads, replace = a->replace, force = a->force, quiet = a->quiet;
    h5_check_output_path(out, "--out", force);
    refuse_same_file(out, input, "--input");
    refuse_same_file(out, vocab, "--vocab");
    Tokenizer tok;
    vocab_load(vocab, &tok, "--vocab");
    tokenizer_set_threads(&tok, threads);

    size_t size;
    Reader *r = reader_open(input, replace, &size);
    double t0 = now_s(), last = t0;
    int progress = !quiet && isatty(2) && size > ((size_t)64 << 20);
    char *buf = NULL;
    size_t len = 0, cap = 0, n = 0, idcap = 0;
    uint32_t *ids = NULL;
    // With at most 65536 ids each block's ids are narrowed to 16 bits as it is done, so
    // memory is 2 bytes per token (plus one block), not 4.
    int narrow = tok.vocab_size <= 65536;
    uint16_t *ids16 = NULL;
    size_t n16 = 0, cap16 = 0;
    for (;;) {
        int eof = read_block(r, &buf, &len, &cap);
        tokenizer_set_input_offset(&tok, r->offset - len);  // buf[0]'s place in the file, for messages
        size_t done = tokenizer_encode_stream(&tok, buf, len, 0, eof, &ids, &n, &idcap);
        if (narrow) {
            if (n16 + n > cap16) {
                cap16 = (n16 + n) * 3 / 2 + 4096;
                ids16 = gt_realloc(ids16, cap16 * sizeof *ids16, "token ids");
            }
            for (size_t i = 0; i < n; i++) ids16[n16 + i] = (uint16_t)ids[i];
            n16 += n;
            n = 0;
        }
        memmove(buf, buf + done, len - done);  // the undecided tail goes in front of the next block
        len -= done;
        if (progress && now_s() - last > 0.5) {
            last = now_s();
            fprintf(stderr, "\rgpt-bpe: %zu / %zu MB (%.0f%%), %.1f MB/s   ", r->offset >> 20, size >> 20,
                    100.0 * (double)r->offset / (double)size, (double)r->offset / 1e6 / (last - t0));
        }
        if (eof) break;
    }
    if (progress) fprintf(stderr, "\r%70s\r", "");
    size_t total = r->offset + r->pend;
    if (total == 0) gt_fail_usage("--input '%s': file is empty", input);
    if (r->replaced) fprintf(stderr, "gpt-bpe: replaced %zu invalid UTF-8 sequence(s) in '%s' with U+FFFD\n", r->replaced, input);
    char sha[65];
    sha256_final_hex(&r->sha, sha);
    int64_t source_bytes = (int64_t)r->sha.total;
    reader_close(r);
    double t1 = now_s();
    if (narrow) {
        n = n16;
        tokens_save_u16(out, &tok, ids16, n, vf, input, source_bytes, sha, force);
    } else {
        tokens_save(out, &tok, ids, n, vf, input, source_bytes, sha, force);
    }
    if (!quiet) {
        size_t n_val = (size_t)llround((double)n * vf);
        fprintf(stderr, "gpt-bpe: %s: %lld bytes -> %zu tokens (%.2f bytes/token) in %.2f s (%.1f MB/s); "
                "wrote %s: /train %zu, /val %zu\n", input, (long long)source_bytes, n,
                n ? (double)source_bytes / (double)n : 0.0, t1 - t0, (double)source_bytes / 1e6 / (t1 - t0 + 1e-9), out,
                n - n_val, n_val);
    }
    free(ids);
    free(ids16);
    free(buf);
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
    const char *vocab = a->vocab, *tokens = a->tokens, *split = a->split, *ids_s = a->ids;
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
      "usage: gpt-bpe train --input FILE --out vocab.h5 [options]\n"
      "Trains a byte-level BPE vocabulary on a UTF-8 text (docs/tokenizer.md, training rule).\n",
      NULL, train_opts, OPT_COUNT(train_opts), NULL, 0},
     cmd_train},
    {"encode",
     {"gpt-bpe encode",
      "usage: gpt-bpe encode --vocab vocab.h5 --input FILE --out tokens.h5 [options]\n"
      "Encodes a UTF-8 text with a vocabulary into tokens.h5 (/train and /val), streaming it.\n",
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
    "  decode   decode tokens.h5 or a list of ids to stdout\n";

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
