// test_bpe_lib.c - the gt_tok library as gpt-train and gpt-sample call it:
//   - decode(encode(bytes)) == bytes for arbitrary bytes, invalid UTF-8 included;
//   - tokenizer_encode_stream in random block sizes == tokenizer_encode of the whole text,
//     with 1 and 2 threads;
//   - vocab_save/vocab_load and tokens_save/tokens_open/tokens_read give back what was saved;
//   - tokenizer_token refuses ids out of range.
//   test_bpe_lib TEXTFILE TMPDIR
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "sha256.h"
#include "h5util.h"
#include "tokenizer.h"
#include "tokens_io.h"
#include "vocab_io.h"

static int failures = 0;
#define CHECK(cond, ...)                                        \
    do {                                                        \
        if (!(cond)) {                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                       \
            fputc('\n', stderr);                                \
            failures++;                                         \
        }                                                       \
    } while (0)

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void roundtrip(const Tokenizer *tok, const char *s, size_t n, const char *what) {
    uint32_t *ids = NULL;
    size_t k = 0, cap = 0, len = 0;
    tokenizer_encode(tok, s, n, &ids, &k, &cap);
    for (size_t i = 0; i < k; i++) CHECK(ids[i] < (uint32_t)tok->vocab_size, "%s: id %u out of range", what, ids[i]);
    char *back = tokenizer_decode(tok, ids, k, &len);
    CHECK(len == n && memcmp(back, s, n) == 0, "%s: decode(encode(x)) != x (%zu bytes -> %zu)", what, n, len);
    free(back);
    free(ids);
}

int main(int argc, char **argv) {
    gt_set_progname("test_bpe_lib");
    h5_quiet();
    if (argc < 3) gt_fail_usage("usage: test_bpe_lib TEXTFILE TMPDIR");
    FILE *f = gt_fopen(argv[1], "rb", "text");
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    rewind(f);
    char *text = gt_malloc(n + 1, "text");
    if (fread(text, 1, n, f) != n) gt_fail_usage("cannot read %s", argv[1]);
    fclose(f);
    char *special[] = {"<|endoftext|>"};
    Tokenizer tok;
    tokenizer_train(&tok, text, n < 300000 ? n : 300000, 1500, "llama3", special, 1, 1, 0);
    CHECK(tok.vocab_size == 1500, "vocab_size %d", tok.vocab_size);

    // arbitrary bytes, invalid UTF-8 included
    for (int t = 0; t < 300; t++) {
        size_t m = rnd() % 300;
        char buf[300];
        for (size_t i = 0; i < m; i++) {
            uint64_t r = rnd();
            static const char pool[] = "ab \n'<|>\xc3\xa9\xe2\x82\xac";  // with its NUL: 14 bytes
            if (r % 4 == 0) buf[i] = (char)(uint8_t)(r >> 8);                  // any byte
            else if (r % 4 == 1) buf[i] = pool[(r >> 8) % sizeof pool];
            else buf[i] = text[(r >> 8) % n];
        }
        roundtrip(&tok, buf, m, "random bytes");
    }
    roundtrip(&tok, text, n, "whole text");
    size_t l;
    CHECK(tokenizer_token(&tok, 1500, &l) == NULL && tokenizer_token(&tok, 0xFFFFFFFFu, &l) == NULL,
          "tokenizer_token accepts an id out of range");

    // streaming in random blocks equals encoding at once, 1 and 2 threads
    uint32_t *whole = NULL;
    size_t nw = 0, capw = 0;
    tokenizer_encode(&tok, text, n, &whole, &nw, &capw);
    for (int threads = 1; threads <= 2; threads++) {
        tokenizer_set_threads(&tok, threads);
        for (int trial = 0; trial < 3; trial++) {
            uint32_t *ids = NULL;
            size_t k = 0, cap = 0, off = 0, len = 0;
            char *buf = gt_malloc(n + 1, "buffer");
            while (off < n || len > 0) {
                size_t take = 1 + rnd() % (200000 + trial * 100000);
                if (take > n - off) take = n - off;
                memcpy(buf + len, text + off, take);
                len += take;
                off += take;
                size_t done = tokenizer_encode_stream(&tok, buf, len, 0, off == n, &ids, &k, &cap);
                memmove(buf, buf + done, len - done);
                len -= done;
                if (off == n) {
                    CHECK(len == 0, "final block left %zu bytes", len);
                    break;
                }
            }
            CHECK(k == nw && memcmp(ids, whole, k * sizeof *ids) == 0, "streamed ids differ (threads %d, trial %d)",
                  threads, trial);
            free(ids);
            free(buf);
        }
    }

    // files
    char vpath[4096], tpath[4096];
    snprintf(vpath, sizeof vpath, "%s/lib_vocab.h5", argv[2]);
    snprintf(tpath, sizeof tpath, "%s/lib_tokens.h5", argv[2]);
    vocab_save(vpath, &tok, 1);
    Tokenizer back;
    vocab_load(vpath, &back, "vocab");
    CHECK(back.vocab_size == tok.vocab_size && back.n_merges == tok.n_merges && back.n_special == 1 &&
              strcmp(back.special[0], special[0]) == 0 && strcmp(back.pattern, tok.pattern) == 0 &&
              memcmp(back.merges, tok.merges, 2 * sizeof(int32_t) * (size_t)tok.n_merges) == 0,
          "vocab_load differs from what vocab_save wrote");
    char sha[65];
    int64_t size = sha256_file(argv[1], sha);
    CHECK(size == (int64_t)n, "sha256_file size %lld", (long long)size);
    tokens_save(tpath, &back, whole, nw, 0.1, argv[1], size, sha, 1);
    TokensInfo info;
    Tokenizer t3;
    hid_t tf = tokens_open(tpath, &info, &t3, "tokens");
    CHECK(info.n_train + info.n_val == nw && info.vocab_size == 1500 && strcmp(info.source_sha256, sha) == 0 &&
              info.source_bytes == (int64_t)n && strcmp(info.source, argv[1]) == 0,
          "tokens_open info");
    uint32_t *got = gt_malloc(nw * sizeof *got, "ids");
    tokens_read(tf, "train", 0, info.n_train, got, tpath);
    tokens_read(tf, "val", 0, info.n_val, got + info.n_train, tpath);
    CHECK(memcmp(got, whole, nw * sizeof *got) == 0, "tokens_read differs from tokens_save");
    tokens_read(tf, "train", 1000, 7, got, tpath);
    CHECK(memcmp(got, whole + 1000, 7 * sizeof *got) == 0, "tokens_read of a window");
    H5Fclose(tf);
    tokens_info_free(&info);
    tokenizer_free(&t3);
    tokenizer_free(&back);
    tokenizer_free(&tok);
    free(whole);
    free(got);
    free(text);
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("all ok\n");
    return 0;
}
