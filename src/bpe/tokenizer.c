// tokenizer.c - byte-level BPE: the split pattern (PCRE2, JIT), encoding, decoding.
// Training lives in tokenizer_train.c. Ids 0..255 are bytes, 256+i is merge i, specials last.
#define _GNU_SOURCE  // memmem
#include "tokenizer_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "error.h"
#include "utf8.h"

// ---------------------------------------------------------------------------------------
// patterns

static const char PAT_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// tiktoken cl100k_base (GPT-4), as in tiktoken and minbpe.
static const char PAT_GPT4[] =
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*"
    "|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";
static const char PAT_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

const char *tokenizer_pattern(const char *name_or_regex) {
    if (!name_or_regex || strcmp(name_or_regex, "llama3") == 0) return PAT_LLAMA3;
    if (strcmp(name_or_regex, "gpt4") == 0) return PAT_GPT4;
    if (strcmp(name_or_regex, "gpt2") == 0) return PAT_GPT2;
    return name_or_regex;
}

// 0: any regex; 1: llama3 or gpt4 (they split identically); 2: gpt2.
static int builtin_kind(const char *re) {
    if (strcmp(re, PAT_LLAMA3) == 0 || strcmp(re, PAT_GPT4) == 0) return 1;
    return strcmp(re, PAT_GPT2) == 0 ? 2 : 0;
}

// ---------------------------------------------------------------------------------------
// fast path: the built-in patterns on ASCII text, without PCRE2
//
// Returns the end of the match at i, or 0 whenever the answer depends on a byte >= 0x80
// (which might be a Unicode letter, digit or space): PCRE2 then decides. The tests compare
// both paths on fuzzed text, so this is an exact shortcut, not an approximation.

enum { C_L = 1, C_N = 2, C_S = 4, C_O = 8, C_NL = 16, C_HI = 32 };
static uint8_t cls[256];

static void init_classes(void) {
    for (int c = 0; c < 256; c++) {
        uint8_t k = C_O;
        if (c >= 0x80) k = C_HI;
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') k = C_L;
        else if (c >= '0' && c <= '9') k = C_N;
        else if (c == '\n' || c == '\r') k = C_S | C_NL;
        else if (c == ' ' || (c >= 9 && c <= 13)) k = C_S;  // PCRE2 UCP \s on ASCII: \t \n \v \f \r space
        cls[c] = k;
    }
}

static inline uint8_t lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? (uint8_t)(c | 0x20) : c; }

static size_t fast_match(int kind, const uint8_t *s, size_t i, size_t end) {
    uint8_t c = cls[s[i]];
    if (c & C_HI) return 0;
    // contractions: llama3/gpt4 (?i:'s|'t|'re|'ve|'m|'ll|'d), gpt2 the same, case-sensitive
    if (s[i] == '\'' && i + 1 < end) {
        uint8_t d = s[i + 1];
        if (d >= 0x80) return 0;  // caseless matching folds some non-ASCII letters (U+017F ~ s)
        if (kind == 1) d = lower(d);
        if (d == 's' || d == 't' || d == 'm' || d == 'd') return i + 2;
        if ((d == 'r' || d == 'v' || d == 'l') && i + 2 < end) {
            uint8_t e = s[i + 2];
            if (e >= 0x80) return 0;
            if (kind == 1) e = lower(e);
            if ((d == 'l' && e == 'l') || (d != 'l' && e == 'e')) return i + 3;
        }
    }
    // letters: llama3 [^\r\n\p{L}\p{N}]?\p{L}+, gpt2 ` ?\p{L}+`
    size_t k = SIZE_MAX;
    if (c & C_L) {
        k = i;
    } else if (kind == 1 ? !(c & (C_NL | C_N)) : s[i] == ' ') {
        if (i + 1 < end) {
            if (s[i + 1] >= 0x80) return 0;
            if (cls[s[i + 1]] & C_L) k = i + 1;
        }
    }
    if (k != SIZE_MAX) {
        size_t j = k + 1;
        while (j < end && (cls[s[j]] & C_L)) j++;
        if (j < end && s[j] >= 0x80) return 0;
        return j;
    }
    // numbers: llama3 \p{N}{1,3}, gpt2 ` ?\p{N}+`
    if (kind == 1) {
        if (c & C_N) {
            size_t j = i + 1;
            while (j < end && j < i + 3 && (cls[s[j]] & C_N)) j++;
            if (j < end && j < i + 3 && s[j] >= 0x80) return 0;
            return j;
        }
    } else {
        k = (c & C_N) ? i : (s[i] == ' ' && i + 1 < end && (cls[s[i + 1]] & C_N)) ? i + 1 : SIZE_MAX;
        if (k != SIZE_MAX) {
            size_t j = k + 1;
            while (j < end && (cls[s[j]] & C_N)) j++;
            if (j < end && s[j] >= 0x80) return 0;
            return j;
        }
    }
    // punctuation: ` ?[^\s\p{L}\p{N}]+`, then [\r\n]* for llama3
    k = (c & C_O) ? i : (s[i] == ' ' && i + 1 < end && (cls[s[i + 1]] & C_O)) ? i + 1 : SIZE_MAX;
    if (k != SIZE_MAX) {
        size_t j = k + 1;
        while (j < end && (cls[s[j]] & C_O)) j++;
        if (j < end && s[j] >= 0x80) return 0;
        if (kind == 1)
            while (j < end && (cls[s[j]] & C_NL)) j++;
        return j;
    }
    // whitespace: llama3 \s*[\r\n]+ (ends after the run's last newline), then both
    // \s+(?!\S) (all but the last space unless at the end) and \s+
    size_t j = i + 1;
    while (j < end && (cls[s[j]] & C_S)) j++;
    if (j < end && s[j] >= 0x80) return 0;  // might be a Unicode space continuing the run
    if (kind == 1)
        for (size_t q = j; q > i; q--)
            if (cls[s[q - 1]] & C_NL) return q;
    if (j == end || j - i == 1) return j;
    return j - 1;
}

// ---------------------------------------------------------------------------------------
// compiled state

// Word -> ids cache: one 32-byte slot per word. Words of up to 16 bytes live in the slot
// itself (two overlapping loads cover every byte, so (k0, k1, n) is the word) and so do
// up to two ids: a hit is one cache line and no memcmp. Longer words keep their ids and
// bytes in the arena.
struct EncCache {
    struct Entry {
        uint64_t k0, k1;  // short word: its bytes (word_key); long word: its hash, 0
        uint32_t a, b;    // ilen <= 2 and short: the ids; otherwise a = arena offset
        uint32_t h;       // slot hash, for growing
        uint8_t n, ilen;  // word length (0 = empty slot), number of ids
    } *slot;
    size_t mask, used;
    uint32_t *arena;
    size_t an, acap;
    // A small direct-mapped copy of recently used slots (L2-sized): frequent words hit here,
    // so the large table, spread over megabytes, is touched mostly by rare words.
    struct Entry *front;
};

#define CACHE_FRONT 32768  // 1 MiB
#define HUGE_WORD ((size_t)1 << 16)   // longer words: bpe_huge (GT_BPE_HUGE=N changes it, for tests)
#define CACHE_MAX_WORD 128           // longer words are rare: encode them every time (fits uint8)
#define CACHE_SHORT 16
#define CACHE_MAX_SLOTS ((size_t)1 << 19)

static void cache_free(EncCache *c) {
    if (!c) return;
    free(c->slot);
    free(c->arena);
    free(c->front);
    free(c);
}

static EncCache *cache_new(void) {
    EncCache *c = gt_calloc(1, sizeof *c, "encoding cache");
    c->mask = 4095;
    c->slot = gt_calloc(c->mask + 1, sizeof *c->slot, "encoding cache");
    c->front = gt_calloc(CACHE_FRONT, sizeof *c->front, "encoding cache");
    return c;
}

// Per-thread state: PCRE2 match data and JIT stacks, word caches.
static void free_thread_state(TokPriv *P) {
    for (int t = 0; P->matchers && t < P->threads; t++) {
        Matcher *m = &P->matchers[t];
        if (m->md) pcre2_match_data_free(m->md);
        if (m->mctx) pcre2_match_context_free(m->mctx);
        if (m->jstack) pcre2_jit_stack_free(m->jstack);
    }
    for (int t = 0; P->caches && t < P->threads; t++) cache_free(P->caches[t]);
    free(P->matchers);
    free(P->caches);
    P->matchers = NULL;
    P->caches = NULL;
}

static void priv_free(TokPriv *P) {
    if (!P) return;
    if (P->re) pcre2_code_free(P->re);
    free(P->mkeys);
    free(P->mvals);
    free(P->special_len);
    free_thread_state(P);
    free(P);
}

static void set_threads(TokPriv *P, int threads) {
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;  // the parallel paths split into at most 64 parts
    free_thread_state(P);
    P->threads = threads;
    P->matchers = gt_calloc((size_t)threads, sizeof *P->matchers, "matchers");
    P->caches = gt_calloc((size_t)threads, sizeof *P->caches, "encoding caches");
}

void tokenizer_set_threads(Tokenizer *tok, int threads) {
    if (!tok->priv) tokenizer_prepare(tok);
    set_threads(tok->priv, threads);
}

void tok_compile(Tokenizer *tok, const char *flag) {
    priv_free(tok->priv);
    TokPriv *P = gt_calloc(1, sizeof *P, "tokenizer");
    tok->priv = P;
    int errcode;
    PCRE2_SIZE erroff;
    P->re = pcre2_compile((PCRE2_SPTR)tok->pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &errcode,
                          &erroff, NULL);
    if (!P->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        gt_fail_usage("%s '%s': invalid regex at offset %zu: %s", flag, tok->pattern, (size_t)erroff, (char *)msg);
    }
    // JIT makes splitting several times faster; the interpreter gives the same matches.
    P->jit = !getenv("GT_BPE_NO_JIT") && pcre2_jit_compile(P->re, PCRE2_JIT_COMPLETE) == 0;  // env: tests
    P->builtin = builtin_kind(tok->pattern);
    if (!cls['a']) init_classes();
    P->fast = getenv("GT_BPE_NO_FAST") ? 0 : P->builtin;  // tests compare against PCRE2 alone
    const char *huge = getenv("GT_BPE_HUGE");  // tests compare bpe_huge and bpe_long on the same words
    P->huge_word = huge && atol(huge) > 0 ? (size_t)atol(huge) : HUGE_WORD;
    P->special_len = gt_calloc((size_t)(tok->n_special > 0 ? tok->n_special : 1), sizeof(size_t), "specials");
    for (int i = 0; i < tok->n_special; i++) {
        P->special_len[i] = strlen(tok->special[i]);
        if (P->special_len[i] > P->max_special) P->max_special = P->special_len[i];
    }
    set_threads(P, 1);
}

Matcher *tok_matcher(const Tokenizer *tok, int t) {
    TokPriv *P = tok->priv;
    Matcher *m = &P->matchers[t];
    if (!m->md) {
        m->md = pcre2_match_data_create_from_pattern(P->re, NULL);
        if (!m->md) gt_fail(GT_EXIT_RUNTIME, "out of memory for PCRE2 match data");
        if (P->jit) {
            // Default JIT stack (32 KiB) is too small for patterns with nested groups on long runs.
            m->mctx = pcre2_match_context_create(NULL);
            m->jstack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
            if (!m->mctx || !m->jstack) gt_fail(GT_EXIT_RUNTIME, "out of memory for the PCRE2 JIT stack");
            pcre2_jit_stack_assign(m->mctx, NULL, m->jstack);
        }
    }
    return m;
}

static inline size_t pair_slot(uint64_t key, size_t mask) {
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & mask;
}

static inline int32_t merge_rank(const TokPriv *P, uint32_t left, uint32_t right) {
    uint64_t key = ((uint64_t)left << 32 | right) + 1;
    for (size_t i = pair_slot(key, P->mmask);; i = (i + 1) & P->mmask) {
        if (P->mkeys[i] == key) return P->mvals[i];
        if (P->mkeys[i] == 0) return -1;
    }
}

void tokenizer_prepare(Tokenizer *tok) {
    int threads = tok->priv ? ((TokPriv *)tok->priv)->threads : 1;
    tok_compile(tok, "pattern");
    TokPriv *P = tok->priv;
    if (threads > 1) set_threads(P, threads);
    size_t cap = 16;
    while (cap < 2 * (size_t)tok->n_merges + 16) cap *= 2;
    P->mmask = cap - 1;
    P->mkeys = gt_calloc(cap, sizeof *P->mkeys, "merge table");
    P->mvals = gt_calloc(cap, sizeof *P->mvals, "merge table");
    for (int i = 0; i < tok->n_merges; i++) {
        uint64_t key = ((uint64_t)(uint32_t)tok->merges[2 * i] << 32 | (uint32_t)tok->merges[2 * i + 1]) + 1;
        size_t s = pair_slot(key, P->mmask);
        while (P->mkeys[s] != 0 && P->mkeys[s] != key) s = (s + 1) & P->mmask;
        if (P->mkeys[s] == 0) {  // a duplicate merge can never apply: the first one wins
            P->mkeys[s] = key;
            P->mvals[s] = i;
        }
    }
}

void tokenizer_free(Tokenizer *tok) {
    if (!tok) return;
    priv_free(tok->priv);
    free(tok->pattern);
    free(tok->merges);
    free(tok->token_bytes);
    free(tok->token_offsets);
    for (int i = 0; i < tok->n_special; i++) free(tok->special[i]);
    free(tok->special);
    memset(tok, 0, sizeof *tok);
}

uint64_t tok_hash_bytes(const uint8_t *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull), w;
    // Short words are read with overlapping loads (as wyhash does): a byte-wise tail copied
    // into a word stalls on store forwarding, and this runs once per chunk of text.
    if (n >= 8) {
        for (; n > 8; s += 8, n -= 8) {
            memcpy(&w, s, 8);
            h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
            h ^= h >> 31;
        }
        memcpy(&w, s + n - 8, 8);
    } else if (n >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, s, 4);
        memcpy(&hi, s + n - 4, 4);
        w = (uint64_t)hi << 32 | lo;
    } else if (n > 0) {
        w = (uint64_t)s[0] << 16 | (uint64_t)s[n / 2] << 8 | s[n - 1];
    } else {
        w = 0;
    }
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    return h | 1;  // never 0: 0 marks an empty slot
}

// ---------------------------------------------------------------------------------------
// splitting

// Leftmost occurrence of any special token at or after pos; ties go to the longest.
static int next_special(const Tokenizer *tok, const char *text, size_t len, size_t pos, size_t *next, size_t *at) {
    const TokPriv *P = tok->priv;
    int best = -1;
    for (int i = 0; i < tok->n_special; i++) {
        if (next[i] != SIZE_MAX && next[i] < pos) {  // overtaken: search again from pos
            const char *hit = P->special_len[i] && pos < len
                                  ? memmem(text + pos, len - pos, tok->special[i], P->special_len[i])
                                  : NULL;
            next[i] = hit ? (size_t)(hit - text) : SIZE_MAX;
        }
        if (next[i] == SIZE_MAX) continue;
        if (best < 0 || next[i] < *at || (next[i] == *at && P->special_len[i] > P->special_len[best])) {
            best = i;
            *at = next[i];
        }
    }
    return best;
}

static inline int do_match(const TokPriv *P, Matcher *m, const char *text, size_t end, size_t pos, uint32_t opts) {
    if (P->jit)
        return pcre2_jit_match(P->re, (PCRE2_SPTR)text, end, pos, opts, m->md, m->mctx);
    // Validated once by the caller: without NO_UTF_CHECK every call re-checks the rest (quadratic).
    return pcre2_match(P->re, (PCRE2_SPTR)text, end, pos, opts | PCRE2_NO_UTF_CHECK, m->md, NULL);
}

void tokenizer_set_input_offset(const Tokenizer *tok, size_t offset) {
    if (tok->priv) ((TokPriv *)tok->priv)->input_offset = offset;
}

// A resource limit that a pattern's backtracking reached is bad input (exit 1), naming the
// pattern and where in the input; any other PCRE2 failure is a runtime one (exit 2).
static _Noreturn void pattern_failed(const Tokenizer *tok, int rc, size_t pos) {
    if (rc != PCRE2_ERROR_MATCHLIMIT && rc != PCRE2_ERROR_DEPTHLIMIT && rc != PCRE2_ERROR_HEAPLIMIT &&
        rc != PCRE2_ERROR_JIT_STACKLIMIT)
        gt_pcre2_fail(__FILE__, __LINE__, "the split pattern failed on this text; try a simpler --pattern", rc);
    PCRE2_UCHAR msg[256];
    if (pcre2_get_error_message(rc, msg, sizeof msg) < 0) snprintf((char *)msg, sizeof msg, "PCRE2 error %d", rc);
    char shown[512];
    gt_fail_usage("the split pattern '%s' is too costly for PCRE2 at byte offset %zu of the input (%s): it "
                  "backtracks too much on this text; simplify the pattern",
                  utf8_escape(shown, sizeof shown, tok->pattern, 0), ((const TokPriv *)tok->priv)->input_offset + pos,
                  (char *)msg);
}

size_t tok_walk(const Tokenizer *tok, Matcher *m, const char *text, size_t len, size_t from, size_t to, int final,
                const Walker *w) {
    const TokPriv *P = tok->priv;
    size_t safe = final ? len : (len > TOK_MARGIN ? len - TOK_MARGIN : 0);
    size_t next_buf[64], *next = tok->n_special <= 64 ? next_buf : gt_malloc(sizeof(size_t) * (size_t)tok->n_special, "specials");
    for (int i = 0; i < tok->n_special; i++) {
        const char *hit = P->special_len[i] && from < len ? memmem(text + from, len - from, tok->special[i], P->special_len[i]) : NULL;
        next[i] = hit ? (size_t)(hit - text) : SIZE_MAX;
    }
    size_t pos = from;
    while (pos < to) {
        size_t sp_at = len;
        int sp = tok->n_special ? next_special(tok, text, len, pos, next, &sp_at) : -1;
        // Without more text, a special ending near the end of the buffer might be the prefix of a
        // longer one, or overlap one that starts earlier and runs past the end: treat the segment
        // as open. It then stops at `safe`, before this special (specials are short).
        if (sp >= 0 && !final && sp_at + P->max_special > len) sp = -1;
        if (sp < 0) sp_at = len;
        size_t seg_end = sp_at;
        uint32_t opts = 0;
        while (pos < seg_end) {
            if (pos >= to) goto done;
            if (P->fast) {
                size_t me = fast_match(P->fast, (const uint8_t *)text, pos, seg_end);
                if (me) {
                    if (sp < 0 && !final && me > safe) goto done;
                    w->chunk(w->ctx, (const uint8_t *)text + pos, me - pos);
                    pos = me;
                    continue;
                }
            }
            int rc = do_match(P, m, text, seg_end, pos, opts);
            if (rc == PCRE2_ERROR_NOMATCH) {
                if (sp < 0 && !final) goto done;  // more text could still match here
                w->chunk(w->ctx, (const uint8_t *)text + pos, seg_end - pos);
                pos = seg_end;
                break;
            }
            if (rc < 0) pattern_failed(tok, rc, pos);
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
            size_t ms = ov[0], me = ov[1];
            if (sp < 0 && !final && me > safe) goto done;  // might extend or change with more text
            if (ms > pos) w->chunk(w->ctx, (const uint8_t *)text + pos, ms - pos);
            if (me > ms) {
                w->chunk(w->ctx, (const uint8_t *)text + ms, me - ms);
                opts = 0;
            } else {
                opts = PCRE2_NOTEMPTY_ATSTART;  // as Python's regex: no second empty match here
            }
            pos = me;
        }
        if (sp < 0) break;
        if (pos >= to) break;
        w->special(w->ctx, sp);
        pos = sp_at + P->special_len[sp];
    }
done:
    if (next != next_buf) free(next);
    return pos;
}

static int overlaps_special(const Tokenizer *tok, const char *text, size_t len, size_t p) {
    const TokPriv *P = tok->priv;
    for (int i = 0; i < tok->n_special; i++) {
        size_t L = P->special_len[i];
        if (L < 2) continue;
        size_t a = p >= L - 1 ? p - (L - 1) : 0, b = p + (L - 1) < len ? p + (L - 1) : len;
        const char *hit = memmem(text + a, b - a, tok->special[i], L);
        while (hit) {
            size_t s = (size_t)(hit - text);
            if (s < p && s + L > p) return 1;
            hit = s + 1 < b ? memmem(text + s + 1, b - s - 1, tok->special[i], L) : NULL;
        }
    }
    return 0;
}

int tok_split_points(const Tokenizer *tok, const char *text, size_t from, size_t limit, size_t *points, int nparts) {
    const TokPriv *P = tok->priv;
    int k = 0;
    points[k++] = from;
    if (P->builtin && nparts > 1 && limit - from > ((size_t)1 << 16)) {
        size_t step = (limit - from) / (size_t)nparts;
        for (int i = 1; i < nparts; i++) {
            size_t p = from + step * (size_t)i;
            if (p <= points[k - 1]) continue;
            // A newline followed by an ASCII letter ends a chunk in every built-in pattern and
            // the next chunk does not look back, so both sides split the same way.
            for (; p < limit; p++) {
                unsigned char c = (unsigned char)text[p];
                if (text[p - 1] == '\n' && ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') &&
                    !overlaps_special(tok, text, limit, p))
                    break;
            }
            if (p >= limit) break;
            points[k++] = p;
        }
    }
    points[k] = limit;
    return k;
}

// ---------------------------------------------------------------------------------------
// encoding

typedef struct {
    const Tokenizer *tok;
    const TokPriv *P;
    EncCache *cache;
    uint32_t *ids;
    size_t n, cap;
    uint32_t *sym;    // scratch for one word
    size_t sym_cap;
    int32_t *links;
    uint64_t *heap;
    size_t heap_cap;
} EncState;

static void push_ids(EncState *e, const uint32_t *ids, size_t k) {
    if (e->n + k > e->cap) {
        size_t c = e->cap ? e->cap : 4096;
        while (c < e->n + k) c *= 2;
        e->ids = gt_realloc(e->ids, c * sizeof *e->ids, "token ids");
        e->cap = c;
    }
    memcpy(e->ids + e->n, ids, k * sizeof *ids);
    e->n += k;
}

// Lowest merge id first, all its occurrences left to right, until none applies. Short words
// rescan (cheap); long ones (CJK runs, long whitespace) use a heap so it stays O(n log n).
static size_t bpe_short(const TokPriv *P, uint32_t *sym, size_t m) {
    int32_t rank[CACHE_MAX_WORD];
    for (;;) {
        int32_t best = INT32_MAX;
        for (size_t i = 0; i + 1 < m; i++) {
            rank[i] = merge_rank(P, sym[i], sym[i + 1]);
            if (rank[i] >= 0 && rank[i] < best) best = rank[i];
        }
        if (best == INT32_MAX) return m;
        uint32_t z = 256u + (uint32_t)best;
        size_t j = 0;
        for (size_t i = 0; i < m;) {
            if (i + 1 < m && rank[i] == best) {
                sym[j++] = z;
                i += 2;
            } else {
                sym[j++] = sym[i++];
            }
        }
        m = j;
    }
}

static size_t bpe_long(EncState *e, uint32_t *sym, size_t m) {
    const TokPriv *P = e->P;
    const Tokenizer *tok = e->tok;
    // Per position: next/prev links; heap of (rank << 32 | pos), smallest first. Each merge
    // pushes at most two pairs, so 3m entries suffice.
    if (e->heap_cap < 3 * m) {
        e->links = gt_realloc(e->links, 2 * m * sizeof *e->links, "bpe scratch");
        e->heap = gt_realloc(e->heap, 3 * m * sizeof *e->heap, "bpe scratch");
        e->heap_cap = 3 * m;
    }
    int32_t *nxt = e->links, *prv = nxt + m;
    uint64_t *heap = e->heap;
    size_t hn = 0;
#define HPUSH(v)                                                           \
    do {                                                                   \
        size_t c_ = hn++;                                                  \
        heap[c_] = (v);                                                    \
        while (c_ > 0 && heap[(c_ - 1) / 2] > heap[c_]) {                  \
            uint64_t t_ = heap[c_]; heap[c_] = heap[(c_ - 1) / 2]; heap[(c_ - 1) / 2] = t_; \
            c_ = (c_ - 1) / 2;                                             \
        }                                                                  \
    } while (0)
    for (size_t i = 0; i < m; i++) {
        nxt[i] = i + 1 < m ? (int32_t)(i + 1) : -1;
        prv[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < m; i++) {
        int32_t r = merge_rank(P, sym[i], sym[i + 1]);
        if (r >= 0) HPUSH((uint64_t)r << 32 | i);
    }
    while (hn > 0) {
        uint64_t top = heap[0];
        heap[0] = heap[--hn];
        for (size_t c = 0;;) {  // sift down
            size_t l = 2 * c + 1, s = c;
            if (l < hn && heap[l] < heap[s]) s = l;
            if (l + 1 < hn && heap[l + 1] < heap[s]) s = l + 1;
            if (s == c) break;
            uint64_t t = heap[c]; heap[c] = heap[s]; heap[s] = t;
            c = s;
        }
        int32_t r = (int32_t)(top >> 32);
        size_t i = (size_t)(uint32_t)top;
        if (sym[i] == UINT32_MAX || nxt[i] < 0) continue;  // merged away
        size_t j = (size_t)nxt[i];
        if (sym[i] != (uint32_t)tok->merges[2 * r] || sym[j] != (uint32_t)tok->merges[2 * r + 1]) continue;  // stale
        sym[i] = 256u + (uint32_t)r;
        sym[j] = UINT32_MAX;
        nxt[i] = nxt[j];
        if (nxt[j] >= 0) prv[nxt[j]] = (int32_t)i;
        if (prv[i] >= 0) {
            int32_t rr = merge_rank(P, sym[prv[i]], sym[i]);
            if (rr >= 0) HPUSH((uint64_t)rr << 32 | (uint32_t)prv[i]);
        }
        if (nxt[i] >= 0) {
            int32_t rr = merge_rank(P, sym[i], sym[nxt[i]]);
            if (rr >= 0) HPUSH((uint64_t)rr << 32 | i);
        }
    }
#undef HPUSH
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        if (sym[i] != UINT32_MAX) sym[k++] = sym[i];
    return k;
}

// A word too long for bpe_long's scratch (36 bytes per byte, so a 100 MB chunk took 3.6 GB):
// the same merges in the same order (lowest rank first, leftmost first) in about 5 bytes per
// byte: sym (4), a bitmap of token starts (1/8; sym[i] is valid at a start) and a tree of the
// lowest pair rank in each 16-byte block (at most 1). Ranks are looked up again rather than
// stored; a merge recomputes the (at most three) blocks whose pairs it changed.
#define HUGE_BLOCK 16

typedef struct {
    const TokPriv *P;
    uint32_t *sym;
    uint64_t *start;  // bit i: a token starts at byte i
    int32_t *tree;    // [leaves, 2 * leaves): block minima; [1, leaves): minima of children
    size_t m, leaves;
} Huge;

static inline int is_start(const Huge *h, size_t i) { return (int)(h->start[i >> 6] >> (i & 63) & 1); }

// The first start after i, or m.
static size_t next_start(const Huge *h, size_t i) {
    size_t w = ++i >> 6;
    if (i >= h->m) return h->m;
    uint64_t bits = h->start[w] & (~0ull << (i & 63));
    while (!bits) {
        if (++w << 6 >= h->m) return h->m;
        bits = h->start[w];
    }
    size_t j = (w << 6) + (size_t)__builtin_ctzll(bits);
    return j < h->m ? j : h->m;
}

// The last start before i, or SIZE_MAX.
static size_t prev_start(const Huge *h, size_t i) {
    if (i == 0) return SIZE_MAX;
    size_t w = --i >> 6;
    uint64_t bits = h->start[w] & (~0ull >> (63 - (i & 63)));
    while (!bits) {
        if (w == 0) return SIZE_MAX;
        bits = h->start[--w];
    }
    return (w << 6) + 63 - (size_t)__builtin_clzll(bits);
}

// Rank of the pair starting at start s, or INT32_MAX when it has no right neighbour or no merge.
static int32_t pair_rank(const Huge *h, size_t s) {
    size_t t = next_start(h, s);
    if (t >= h->m) return INT32_MAX;
    int32_t r = merge_rank(h->P, h->sym[s], h->sym[t]);
    return r < 0 ? INT32_MAX : r;
}

static void block_update(Huge *h, size_t b) {
    int32_t best = INT32_MAX;
    size_t end = (b + 1) * HUGE_BLOCK < h->m ? (b + 1) * HUGE_BLOCK : h->m;
    for (size_t s = b * HUGE_BLOCK; s < end; s++)
        if (is_start(h, s)) {
            int32_t r = pair_rank(h, s);
            if (r < best) best = r;
        }
    size_t x = h->leaves + b;
    h->tree[x] = best;
    for (x /= 2; x >= 1; x /= 2) {
        int32_t v = h->tree[2 * x] < h->tree[2 * x + 1] ? h->tree[2 * x] : h->tree[2 * x + 1];
        if (h->tree[x] == v) break;
        h->tree[x] = v;
    }
}

static size_t bpe_huge(EncState *e, uint32_t *sym, size_t m) {
    Huge h = {e->P, sym, NULL, NULL, m, 1};
    size_t nb = (m + HUGE_BLOCK - 1) / HUGE_BLOCK;
    while (h.leaves < nb) h.leaves *= 2;
    h.start = gt_malloc((m + 63) / 64 * sizeof *h.start, "bpe scratch");
    h.tree = gt_malloc(2 * h.leaves * sizeof *h.tree, "bpe scratch");
    memset(h.start, 0xff, (m + 63) / 64 * sizeof *h.start);
    for (size_t b = 0; b < h.leaves; b++) {
        int32_t best = INT32_MAX;
        for (size_t s = b * HUGE_BLOCK; b < nb && s < (b + 1) * HUGE_BLOCK && s + 1 < m; s++) {
            int32_t r = merge_rank(h.P, sym[s], sym[s + 1]);
            if (r >= 0 && r < best) best = r;
        }
        h.tree[h.leaves + b] = best;
    }
    for (size_t x = h.leaves - 1; x >= 1; x--)
        h.tree[x] = h.tree[2 * x] < h.tree[2 * x + 1] ? h.tree[2 * x] : h.tree[2 * x + 1];
    while (h.tree[1] != INT32_MAX) {
        int32_t r = h.tree[1];
        size_t x = 1;
        while (x < h.leaves) x = h.tree[2 * x] == r ? 2 * x : 2 * x + 1;  // the leftmost block holding r
        size_t b = x - h.leaves, s = b * HUGE_BLOCK;
        while (!is_start(&h, s) || pair_rank(&h, s) != r) s++;
        size_t t = next_start(&h, s), p = prev_start(&h, s);
        sym[s] = 256u + (uint32_t)r;
        h.start[t >> 6] &= ~(1ull << (t & 63));
        block_update(&h, b);
        if (t / HUGE_BLOCK != b) block_update(&h, t / HUGE_BLOCK);
        if (p != SIZE_MAX && p / HUGE_BLOCK != b) block_update(&h, p / HUGE_BLOCK);
    }
    size_t k = 0;
    for (size_t s = 0; s < m; s = next_start(&h, s)) sym[k++] = sym[s];
    free(h.start);
    free(h.tree);
    return k;
}

// A huge word is merged where its ids go: at the end of e->ids, grown by n ids exactly, so
// the merge scratch is the output itself plus the bitmap and the tree.
static void bpe_huge_ids(EncState *e, const uint8_t *s, size_t n) {
    if (e->n + n > e->cap) {
        e->cap = e->n + n;
        e->ids = gt_realloc(e->ids, e->cap * sizeof *e->ids, "token ids");
    }
    uint32_t *sym = e->ids + e->n;
    for (size_t i = 0; i < n; i++) sym[i] = s[i];
    e->n += e->tok->n_merges ? bpe_huge(e, sym, n) : n;
}

static size_t bpe_word(EncState *e, const uint8_t *s, size_t n) {
    if (e->sym_cap < n) {
        e->sym = gt_realloc(e->sym, n * sizeof *e->sym, "bpe scratch");
        e->sym_cap = n;
    }
    for (size_t i = 0; i < n; i++) e->sym[i] = s[i];
    if (n < 2 || e->tok->n_merges == 0) return n;
    return n <= CACHE_MAX_WORD ? bpe_short(e->P, e->sym, n) : bpe_long(e, e->sym, n);
}

static void cache_grow(EncCache *c) {
    size_t ncap = (c->mask + 1) * 2;
    struct Entry *ns = gt_calloc(ncap, sizeof *ns, "encoding cache");
    for (size_t i = 0; i <= c->mask; i++) {
        if (!c->slot[i].n) continue;
        size_t s = c->slot[i].h & (ncap - 1);
        while (ns[s].n) s = (s + 1) & (ncap - 1);
        ns[s] = c->slot[i];
    }
    free(c->slot);
    c->slot = ns;
    c->mask = ncap - 1;
}

static void cache_clear(EncCache *c) {
    memset(c->slot, 0, (c->mask + 1) * sizeof *c->slot);
    memset(c->front, 0, CACHE_FRONT * sizeof *c->front);
    c->used = c->an = 0;
}

static inline void word_key(const uint8_t *s, size_t n, uint64_t *k0, uint64_t *k1) {
    if (n >= 8) {
        memcpy(k0, s, 8);
        memcpy(k1, s + n - 8, 8);
    } else if (n >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, s, 4);
        memcpy(&hi, s + n - 4, 4);
        *k0 = (uint64_t)hi << 32 | lo;
        *k1 = 0;
    } else {
        *k0 = (uint64_t)s[0] << 16 | (uint64_t)s[n / 2] << 8 | s[n - 1];
        *k1 = 0;
    }
}

static inline uint32_t key_hash(uint64_t k0, uint64_t k1, size_t n) {
    uint64_t h = (k0 ^ (n * 0x9E3779B97F4A7C15ull)) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
    h = (h ^ k1) * 0x94d049bb133111ebull;
    return (uint32_t)(h >> 32);
}

static inline void push1(EncState *e, uint32_t id) {
    if (e->n == e->cap) push_ids(e, &id, 1);
    else e->ids[e->n++] = id;
}

static inline int entry_is(const EncCache *c, const struct Entry *en, const uint8_t *s, size_t n, uint64_t k0,
                           uint64_t k1) {
    if (en->n != n || en->k0 != k0 || en->k1 != k1) return 0;
    return n <= CACHE_SHORT || memcmp(c->arena + en->a + en->ilen, s, n) == 0;
}

static inline void entry_emit(EncState *e, const EncCache *c, const struct Entry *en) {
    if (en->n <= CACHE_SHORT && en->ilen <= 2) {
        push1(e, en->a);
        if (en->ilen == 2) push1(e, en->b);
    } else {
        push_ids(e, c->arena + en->a, en->ilen);
    }
}

static void enc_chunk(void *ctx, const uint8_t *s, size_t n) {
    EncState *e = ctx;
    if (n == 1) {
        push1(e, s[0]);
        return;
    }
    if (n > e->P->huge_word) {
        bpe_huge_ids(e, s, n);
        return;
    }
    if (n > CACHE_MAX_WORD) {
        size_t k = bpe_word(e, s, n);
        push_ids(e, e->sym, k);
        return;
    }
    EncCache *c = e->cache;
    uint64_t k0, k1 = 0;
    uint32_t h;
    if (n <= CACHE_SHORT) {
        word_key(s, n, &k0, &k1);
        h = key_hash(k0, k1, n);
    } else {
        k0 = tok_hash_bytes(s, n);
        h = (uint32_t)(k0 >> 32);
    }
    struct Entry *f = &c->front[(h >> 7) & (CACHE_FRONT - 1)];
    if (entry_is(c, f, s, n, k0, k1)) {
        entry_emit(e, c, f);
        return;
    }
    size_t i = h & c->mask;
    for (; c->slot[i].n; i = (i + 1) & c->mask) {
        const struct Entry *en = &c->slot[i];
        if (entry_is(c, en, s, n, k0, k1)) {
            *f = *en;
            entry_emit(e, c, en);
            return;
        }
    }
    size_t k = bpe_word(e, s, n);
    push_ids(e, e->sym, k);
    // Remember it. A full cache starts over: frequent words come right back.
    size_t need = n <= CACHE_SHORT ? (k <= 2 ? 0 : k) : k + (n + 3) / 4;
    if (c->used + 1 > (c->mask + 1) / 2 || c->an + need > ((size_t)1 << 28)) {
        if (c->mask + 1 >= CACHE_MAX_SLOTS || c->an + need > ((size_t)1 << 28)) {
            cache_clear(c);
        } else {
            cache_grow(c);
        }
        i = h & c->mask;
        while (c->slot[i].n) i = (i + 1) & c->mask;
    }
    if (c->an + need > c->acap) {
        c->acap = (c->acap ? c->acap * 2 : 16384) + need;
        c->arena = gt_realloc(c->arena, c->acap * sizeof *c->arena, "encoding cache");
    }
    struct Entry *en = &c->slot[i];
    en->k0 = k0;
    en->k1 = k1;
    en->h = h;
    en->n = (uint8_t)n;
    en->ilen = (uint8_t)k;
    if (need == 0) {
        en->a = e->sym[0];
        en->b = k > 1 ? e->sym[1] : 0;
    } else {
        en->a = (uint32_t)c->an;
        memcpy(c->arena + c->an, e->sym, k * sizeof *e->sym);
        if (n > CACHE_SHORT) memcpy(c->arena + c->an + k, s, n);
        c->an += need;
    }
    c->used++;
    c->front[(h >> 7) & (CACHE_FRONT - 1)] = *en;
}

static void enc_special(void *ctx, int idx) {
    EncState *e = ctx;
    uint32_t id = 256u + (uint32_t)e->tok->n_merges + (uint32_t)idx;
    push_ids(e, &id, 1);
}

static EncCache *get_cache(const Tokenizer *tok, int t) {
    TokPriv *P = tok->priv;
    if (!P->caches[t]) P->caches[t] = cache_new();
    return P->caches[t];
}

static size_t encode_valid(const Tokenizer *tok, const char *text, size_t len, size_t start, int final,
                           uint32_t **ids, size_t *n, size_t *cap) {
    TokPriv *P = tok->priv;
    size_t limit = final ? len : (len > TOK_MARGIN ? len - TOK_MARGIN : 0);
    if (limit < start) limit = start;
    size_t points[65];
    int nparts = P->threads > 64 ? 64 : P->threads;
    int k = tok_split_points(tok, text, start, limit, points, nparts);
    if (k == 1) {
        EncState e = {.tok = tok, .P = P, .cache = get_cache(tok, 0), .ids = *ids, .n = *n, .cap = *cap};
        Walker w = {enc_chunk, enc_special, &e};
        size_t pos = tok_walk(tok, tok_matcher(tok, 0), text, len, start, len, final, &w);
        *ids = e.ids;
        *n = e.n;
        *cap = e.cap;
        free(e.sym);
        free(e.links);
        free(e.heap);
        return pos;
    }
    // Parts end at chunk boundaries, so each thread walks its own and the ids concatenate.
    EncState st[64];
    size_t stop[64];
    for (int t = 0; t < k; t++) {
        memset(&st[t], 0, sizeof st[t]);
        st[t].tok = tok;
        st[t].P = P;
        st[t].cache = get_cache(tok, t);
        tok_matcher(tok, t);
    }
#pragma omp parallel for num_threads(k) schedule(static, 1)
    for (int t = 0; t < k; t++) {
        Walker w = {enc_chunk, enc_special, &st[t]};
        int last = t == k - 1;
        stop[t] = tok_walk(tok, &P->matchers[t], text, len, points[t], last ? len : points[t + 1], last ? final : 1, &w);
    }
    for (int t = 0; t < k; t++) {
        if (*n + st[t].n > *cap) {
            size_t c = *cap ? *cap : 4096;
            while (c < *n + st[t].n) c *= 2;
            *ids = gt_realloc(*ids, c * sizeof **ids, "token ids");
            *cap = c;
        }
        if (st[t].n) memcpy(*ids + *n, st[t].ids, st[t].n * sizeof **ids);
        *n += st[t].n;
        free(st[t].ids);
        free(st[t].sym);
        free(st[t].links);
        free(st[t].heap);
    }
    return stop[k - 1];
}

// PCRE2 must never see invalid UTF-8 (it was told not to check), so the text is validated
// here; bytes that are not UTF-8 (gpt-bpe never passes any: it rejects or replaces them)
// become their byte tokens and cut the text as a special token does. Encoding is total.
size_t tokenizer_encode_stream(const Tokenizer *tok, const char *text, size_t len, size_t start, int final,
                               uint32_t **ids, size_t *n, size_t *cap) {
    TokPriv *P = tok->priv;
    if (!P || !P->mkeys) gt_fail(GT_EXIT_RUNTIME, "tokenizer used before tokenizer_prepare");
    size_t pos = start, bad;
    while (pos < len && !utf8_validate(text + pos, len - pos, &bad)) {
        size_t b = pos + bad;
        const uint8_t *u = (const uint8_t *)text;
        if (!final && utf8_char_len(u + b, len - b) < 0)  // a character cut by the block end
            return pos + encode_valid(tok, text + pos, b - pos, 0, 0, ids, n, cap);
        pos += encode_valid(tok, text + pos, b - pos, 0, 1, ids, n, cap);
        size_t k = utf8_bad_len(u + b, len - b);
        for (size_t i = 0; i < k; i++) {
            if (*n == *cap) {
                *cap = *cap ? 2 * *cap : 4096;
                *ids = gt_realloc(*ids, *cap * sizeof **ids, "token ids");
            }
            (*ids)[(*n)++] = u[b + i];
        }
        pos = b + k;
    }
    if (pos == start) return encode_valid(tok, text, len, start, final, ids, n, cap);
    return pos + encode_valid(tok, text + pos, len - pos, 0, final, ids, n, cap);
}

void tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, uint32_t **ids, size_t *n, size_t *cap) {
    tokenizer_encode_stream(tok, text, len, 0, 1, ids, n, cap);
}

// Where two tokenizers differ, in a few words; NULL when they are the same: the same split
// pattern, merges and special tokens give every token the same id.
const char *tokenizer_difference(const Tokenizer *a, const Tokenizer *b, char *buf, size_t n) {
    if (a->vocab_size != b->vocab_size)
        snprintf(buf, n, "%d tokens against %d", a->vocab_size, b->vocab_size);
    else if (strcmp(a->pattern, b->pattern) != 0)
        snprintf(buf, n, "another split pattern");
    else if (a->n_merges != b->n_merges || a->n_special != b->n_special)
        snprintf(buf, n, "%d merges and %d special tokens against %d and %d", a->n_merges, a->n_special, b->n_merges,
                 b->n_special);
    else {
        for (int i = 0; i < a->n_merges; i++)
            if (a->merges[2 * i] != b->merges[2 * i] || a->merges[2 * i + 1] != b->merges[2 * i + 1]) {
                snprintf(buf, n, "the same size, but merge %d (token %d) is (%d, %d) against (%d, %d)", i, 256 + i,
                         a->merges[2 * i], a->merges[2 * i + 1], b->merges[2 * i], b->merges[2 * i + 1]);
                return buf;
            }
        for (int i = 0; i < a->n_special; i++)
            if (strcmp(a->special[i], b->special[i]) != 0) {
                snprintf(buf, n, "the same size, but special token %d differs", 256 + a->n_merges + i);
                return buf;
            }
        return NULL;
    }
    return buf;
}

int tokenizer_special_id(const Tokenizer *tok, const char *s) {
    for (int i = 0; i < tok->n_special; i++)
        if (!strcmp(tok->special[i], s)) return 256 + tok->n_merges + i;
    return -1;
}

const uint8_t *tokenizer_token(const Tokenizer *tok, uint32_t id, size_t *len) {
    if (id >= (uint32_t)tok->vocab_size) return NULL;
    *len = (size_t)(tok->token_offsets[id + 1] - tok->token_offsets[id]);
    return tok->token_bytes + tok->token_offsets[id];
}

char *tokenizer_decode(const Tokenizer *tok, const uint32_t *ids, size_t n, size_t *len) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = 0;
        if (tokenizer_token(tok, ids[i], &l)) total += l;
    }
    char *out = gt_malloc(total + 1, "decoded text");
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = 0;
        const uint8_t *b = tokenizer_token(tok, ids[i], &l);
        if (b) {
            memcpy(out + o, b, l);
            o += l;
        }
    }
    out[o] = '\0';
    if (len) *len = o;
    return out;
}
