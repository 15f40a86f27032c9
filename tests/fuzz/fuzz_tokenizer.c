// fuzz_tokenizer.c - libFuzzer harness for the byte-level BPE tokenizer (src/tokenizer.c).
//
// The first input byte picks what is exercised; the rest is the payload:
//   mode 0  utf8_validate on arbitrary bytes, checked against a reference validator; then
//           encode the valid prefix with a fixed trained vocabulary and decode it back:
//           decode(encode(text)) == text, every id < vocab_size.
//   mode 1  decode arbitrary ids (valid ones must give exactly the concatenated token
//           bytes; tokenizer_token must refuse invalid ones).
//   mode 2  train a fresh tokenizer on the payload's valid UTF-8 prefix (vocab size and
//           pattern from the next two bytes, one special token), check the result is
//           consistent and round-trips its own training text.
// Any failed check aborts, so libFuzzer keeps the input. See run_fuzz.sh.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "tokenizer.h"
#include "utf8.h"

static Tokenizer fixed;  // trained once, used by modes 0 and 1

static const char fixed_text[] =
    "The quick brown fox jumps over the lazy dog. It's 2024, and we'll test 12345 digits!\n"
    "Café naïve déjà vu — “quotes” and ‘single’ quotes.\r\n"
    "Привет, мир! Как дела? 你好，世界。こんにちは 안녕하세요 🙂🚀 ١٢٣ ৪৫৬\n"
    "\tTabs\u00a0and\u2003unicode\u3000spaces   end.  <|endoftext|> The fox again, the dog again.\n"
    "the the the quick quick brown brown over over lazy lazy dog dog fox fox jumps jumps\n";

static char *const specials[] = {"<|endoftext|>"};

// Reference UTF-8 check (Unicode 3.9, table 3-7): no overlongs, no surrogates, <= U+10FFFF.
// Returns the length of the valid sequence at s, or 0 if ill-formed/incomplete.
static size_t ref_seq(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

static size_t ref_valid_prefix(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t k = ref_seq(s + i, n - i);
        if (!k) break;
        i += k;
    }
    return i;
}

static void roundtrip(const Tokenizer *tok, const uint8_t *text, size_t len) {
    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    tokenizer_encode(tok, (const char *)text, len, &ids, &n, &cap);
    FUZZ_ASSERT(n <= len, "%zu ids for %zu bytes", n, len);
    for (size_t i = 0; i < n; i++) FUZZ_ASSERT(ids[i] < (uint32_t)tok->vocab_size, "id %u at %zu", ids[i], i);
    size_t dlen = 0;
    char *back = tokenizer_decode(tok, ids, n, &dlen);
    FUZZ_ASSERT(back != NULL, "decode returned NULL");
    FUZZ_ASSERT(dlen == len && memcmp(back, text, len) == 0, "decode(encode(x)) != x (%zu -> %zu ids -> %zu bytes)", len, n,
                dlen);
    FUZZ_ASSERT(back[dlen] == '\0', "decoded text not NUL-terminated");
    free(back);
    free(ids);
}

static void check_tokenizer(const Tokenizer *tok, int requested) {
    FUZZ_ASSERT(tok->vocab_size <= requested, "vocab %d > requested %d", tok->vocab_size, requested);
    FUZZ_ASSERT(tok->vocab_size == 256 + tok->n_merges + tok->n_special, "vocab %d != 256 + %d + %d", tok->vocab_size,
                tok->n_merges, tok->n_special);
    FUZZ_ASSERT(tok->token_offsets[0] == 0, "offsets start at %lld", (long long)tok->token_offsets[0]);
    for (int i = 0; i < tok->n_merges; i++) {
        int32_t l = tok->merges[2 * i], r = tok->merges[2 * i + 1];
        FUZZ_ASSERT(l >= 0 && l < 256 + i && r >= 0 && r < 256 + i, "merge %d = (%d, %d)", i, l, r);
        size_t ll, lr, lm;
        const uint8_t *bl = tokenizer_token(tok, (uint32_t)l, &ll), *br = tokenizer_token(tok, (uint32_t)r, &lr);
        const uint8_t *bm = tokenizer_token(tok, (uint32_t)(256 + i), &lm);
        FUZZ_ASSERT(bl && br && bm && lm == ll + lr && memcmp(bm, bl, ll) == 0 && memcmp(bm + ll, br, lr) == 0,
                    "token %d is not the concatenation of its merge", 256 + i);
    }
    size_t n;
    FUZZ_ASSERT(tokenizer_token(tok, (uint32_t)tok->vocab_size, &n) == NULL, "token %d (past the end) not refused",
                tok->vocab_size);
    FUZZ_ASSERT(tokenizer_token(tok, 0xFFFFFFFFu, &n) == NULL, "token 0xFFFFFFFF not refused");
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    tokenizer_train(&fixed, fixed_text, strlen(fixed_text), 256 + 120 + 1, tokenizer_pattern("llama3"), specials, 1, 1, 0);
    check_tokenizer(&fixed, 256 + 120 + 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0] % 3;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if (mode == 0) {
        size_t bad = (size_t)-1;
        int valid = utf8_validate((const char *)p, n, &bad);
        size_t ref = ref_valid_prefix(p, n);
        FUZZ_ASSERT(valid == (ref == n), "utf8_validate says %s, reference says %s (first bad at %zu)",
                    valid ? "valid" : "invalid", ref == n ? "valid" : "invalid", ref);
        if (!valid) {
            FUZZ_ASSERT(bad <= ref, "utf8_validate reports offset %zu, past the first bad byte %zu", bad, ref);
            n = bad;
        }
        roundtrip(&fixed, p, n);
    } else if (mode == 1) {
        size_t k = n / 2;  // 16-bit ids keep most of them in range
        uint32_t *ids = malloc((k ? k : 1) * sizeof *ids);
        size_t expect = 0;
        for (size_t i = 0; i < k; i++) {
            ids[i] = (uint32_t)(p[2 * i] | (p[2 * i + 1] << 8)) % (uint32_t)(fixed.vocab_size + 8);
            size_t tl;
            const uint8_t *tb = tokenizer_token(&fixed, ids[i], &tl);
            if (ids[i] >= (uint32_t)fixed.vocab_size) {
                FUZZ_ASSERT(tb == NULL, "invalid id %u not refused", ids[i]);
                ids[i] %= (uint32_t)fixed.vocab_size;
                tb = tokenizer_token(&fixed, ids[i], &tl);
            }
            FUZZ_ASSERT(tb != NULL, "valid id %u refused", ids[i]);
            expect += tl;
        }
        size_t dlen = 0;
        char *s = tokenizer_decode(&fixed, ids, k, &dlen);
        FUZZ_ASSERT(s && dlen == expect, "decoded %zu bytes, tokens hold %zu", dlen, expect);
        size_t at = 0;
        for (size_t i = 0; i < k; i++) {
            size_t tl;
            const uint8_t *tb = tokenizer_token(&fixed, ids[i], &tl);
            FUZZ_ASSERT(memcmp(s + at, tb, tl) == 0, "decoded bytes of id %u differ", ids[i]);
            at += tl;
        }
        free(s);
        free(ids);
    } else {
        if (n < 2) return 0;
        int vocab = 257 + p[0] % 200;
        const char *pattern = tokenizer_pattern(p[1] % 3 == 0 ? "llama3" : p[1] % 3 == 1 ? "gpt4" : "gpt2");
        p += 2;
        n -= 2;
        if (n > 4096) n = 4096;  // keep each run fast: merges are what matter, not volume
        n = ref_valid_prefix(p, n);
        Tokenizer tok;
        memset(&tok, 0, sizeof tok);
        tokenizer_train(&tok, (const char *)p, n, vocab, pattern, specials, 1, 1, 0);
        check_tokenizer(&tok, vocab);
        roundtrip(&tok, p, n);
        tokenizer_free(&tok);
    }
    return 0;
}
