// test_bpe_split.c - prints how gpt-bpe's splitter cuts a file, for the Python tests to
// compare with the reference: one line per chunk, "W <hex bytes>" or "S <special index>".
//   test_bpe_split PATTERN FILE [--stream BLOCK] [SPECIAL...]
// --stream feeds the text in blocks of BLOCK bytes through the streaming path, as
// gpt-bpe encode does, to show block boundaries change nothing.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer_internal.h"

static void chunk(void *ctx, const uint8_t *s, size_t n) {
    (void)ctx;
    fputs("W ", stdout);
    for (size_t i = 0; i < n; i++) printf("%02x", s[i]);
    fputc('\n', stdout);
}

static void special(void *ctx, int idx) {
    (void)ctx;
    printf("S %d\n", idx);
}

int main(int argc, char **argv) {
    gt_set_progname("test_bpe_split");
    if (argc < 3) gt_fail_usage("usage: test_bpe_split PATTERN FILE [--stream BLOCK] [SPECIAL...]");
    size_t block = 0;
    int first = 3;
    if (argc > 4 && strcmp(argv[3], "--stream") == 0) {
        block = (size_t)atol(argv[4]);
        first = 5;
    }
    FILE *f = gt_fopen(argv[2], "rb", "input");
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    rewind(f);
    char *text = gt_malloc(n + 1, "text");
    if (fread(text, 1, n, f) != n) gt_fail_usage("cannot read %s", argv[2]);
    fclose(f);
    Tokenizer tok = {0};
    tok.pattern = gt_strdup(tokenizer_pattern_checked(argv[1], "PATTERN"));
    tok.n_special = argc - first;
    tok.special = gt_calloc((size_t)(tok.n_special + 1), sizeof(char *), "specials");
    for (int i = 0; i < tok.n_special; i++) tok.special[i] = gt_strdup(argv[first + i]);
    tok_compile(&tok, "PATTERN");
    Walker w = {chunk, special, NULL};
    if (!block) {
        tok_walk(&tok, tok_matcher(&tok, 0), text, n, 0, n, 1, &w);
        tokenizer_free(&tok);
        free(text);
        return 0;
    }
    // Streaming: a buffer that holds the undecided tail plus the next block.
    char *buf = gt_malloc(n + 1, "buffer");
    size_t len = 0, off = 0;
    for (;;) {
        size_t take = n - off < block ? n - off : block;
        memcpy(buf + len, text + off, take);
        len += take;
        off += take;
        int final = off == n;
        size_t done = tok_walk(&tok, tok_matcher(&tok, 0), buf, len, 0, len, final, &w);
        memmove(buf, buf + done, len - done);
        len -= done;
        if (final) break;
    }
    tokenizer_free(&tok);
    free(buf);
    free(text);
    return 0;
}
