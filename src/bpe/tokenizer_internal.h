// tokenizer_internal.h - shared by tokenizer.c (split, encode) and tokenizer_train.c.
#ifndef GT_TOKENIZER_INTERNAL_H
#define GT_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

// One per thread: PCRE2 match data and a JIT stack large enough for long whitespace runs.
typedef struct {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
} Matcher;

typedef struct EncCache EncCache;

typedef struct {
    pcre2_code *re;
    int jit;                  // 1 when JIT compiled
    int builtin;              // 1 llama3/gpt4, 2 gpt2: "\n" + ASCII letter is always a chunk boundary
    int fast;                 // = builtin unless GT_BPE_NO_FAST is set: split ASCII without PCRE2
    uint64_t *mkeys;          // merge lookup, open addressing: key (left<<32|right)+1, 0 = empty
    int32_t *mvals;           // merge index for each key
    size_t mmask;
    size_t *special_len;      // (n_special)
    size_t max_special;
    int threads;              // for tokenizer_encode and the streaming encoder
    size_t input_offset;      // where text[0] of the next call sits in the input (messages only)
    size_t huge_word;         // longer words are merged in bpe_huge's compact scratch
    Matcher *matchers;        // (threads), created lazily
    EncCache **caches;        // (threads), created lazily; persist across calls
} TokPriv;

// Callbacks of the splitter: each chunk of the pattern (a "word"), each special token.
typedef struct {
    void (*chunk)(void *ctx, const uint8_t *s, size_t n);
    void (*special)(void *ctx, int idx);
    void *ctx;
} Walker;

// Compiles tok->pattern (exit 1 naming `flag` on an invalid regex) and the special table.
void tok_compile(Tokenizer *tok, const char *flag);
Matcher *tok_matcher(const Tokenizer *tok, int t);
// Walks text[from..): specials first (leftmost, then longest), the pattern's matches between
// them, unmatched bytes as chunks of their own (so nothing is lost). Stops at `to`, which
// must be a chunk boundary. Unless `final`, matches that end within TOK_MARGIN of len (and
// so could change with more text) are left: returns where it stopped.
size_t tok_walk(const Tokenizer *tok, Matcher *m, const char *text, size_t len, size_t from, size_t to,
                int final, const Walker *w);
// Splits text[from..limit) into up to `nparts` pieces at positions that are chunk boundaries
// for every built-in pattern. points[0] = from, points[k] = end; returns k (>= 1).
int tok_split_points(const Tokenizer *tok, const char *text, size_t from, size_t limit, size_t *points, int nparts);

#define TOK_MARGIN ((size_t)1 << 16)
#define TOK_MAX_SPECIAL 1024  // bytes; well below TOK_MARGIN, which the streaming logic needs

uint64_t tok_hash_bytes(const uint8_t *s, size_t n);

#endif
