// tokenizer_train.c - BPE training by the deterministic rule (docs/tokenizer.md):
//   count identical chunks ("words"); repeatedly merge the adjacent pair with the highest
//   count over all words, ties to the smallest (left, right), until the vocabulary is full
//   or the best count is below 2; occurrences are replaced left to right, non-overlapping.
// Fast path: unique words with counts, a pair table updated only for the words that contain
// the merged pair (pair -> words index), and a max-heap with lazy deletion. Counts of old
// pairs only ever go down, and new pairs all contain the new token, so an entry whose count
// is stale is simply re-pushed with its current count when it surfaces.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "tokenizer_internal.h"
#include "utf8.h"

// ---------------------------------------------------------------------------------------
// word counting

typedef struct {
    uint64_t h;  // 0 = empty
    size_t off;  // bytes in WordMap.bytes
    size_t len;
    int64_t count;
} WordEntry;

typedef struct {
    WordEntry *slot;
    size_t mask, used;
    uint8_t *bytes;
    size_t nb, cb;
} WordMap;

static void wm_init(WordMap *m) {
    memset(m, 0, sizeof *m);
    m->mask = 4095;
    m->slot = gt_calloc(m->mask + 1, sizeof *m->slot, "word counts");
}

static void wm_free(WordMap *m) {
    free(m->slot);
    free(m->bytes);
}

static void wm_grow(WordMap *m) {
    size_t ncap = (m->mask + 1) * 2;
    WordEntry *ns = gt_calloc(ncap, sizeof *ns, "word counts");
    for (size_t i = 0; i <= m->mask; i++) {
        if (!m->slot[i].h) continue;
        size_t s = (size_t)(m->slot[i].h >> 16) & (ncap - 1);
        while (ns[s].h) s = (s + 1) & (ncap - 1);
        ns[s] = m->slot[i];
    }
    free(m->slot);
    m->slot = ns;
    m->mask = ncap - 1;
}

static void wm_add(WordMap *m, const uint8_t *s, size_t n, int64_t count) {
    uint64_t h = tok_hash_bytes(s, n);
    size_t i = (size_t)(h >> 16) & m->mask;
    for (; m->slot[i].h; i = (i + 1) & m->mask) {
        WordEntry *e = &m->slot[i];
        if (e->h == h && e->len == n && memcmp(m->bytes + e->off, s, n) == 0) {
            e->count += count;
            return;
        }
    }
    if (m->nb + n > m->cb) {
        m->cb = (m->cb ? m->cb * 2 : 1 << 16) + n;
        m->bytes = gt_realloc(m->bytes, m->cb, "word bytes");
    }
    memcpy(m->bytes + m->nb, s, n);
    m->slot[i] = (WordEntry){h, m->nb, n, count};
    m->nb += n;
    if (++m->used * 2 > m->mask + 1) wm_grow(m);
}

static void count_chunk(void *ctx, const uint8_t *s, size_t n) { wm_add(ctx, s, n, 1); }
static void count_special(void *ctx, int idx) { (void)ctx, (void)idx; }

// ---------------------------------------------------------------------------------------
// pairs

typedef struct {
    int32_t a, b;
    int64_t count;
    int32_t *words;   // words that contain (or once contained) this pair
    int32_t nw, cw;
    int32_t last_word;  // avoids listing a word twice while it is being updated
    int32_t stamp;      // merge step that last touched it
} Pair;

typedef struct {
    Pair *p;
    size_t n, cap;
    uint64_t *keys;  // (a<<32|b)+1, 0 = empty
    int32_t *idx;
    size_t mask, used;
} PairTable;

static inline size_t pt_slot(uint64_t key, size_t mask) { return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 36) & mask; }

static void pt_grow(PairTable *t) {
    size_t ncap = (t->mask + 1) * 2;
    uint64_t *nk = gt_calloc(ncap, sizeof *nk, "pair table");
    int32_t *ni = gt_malloc(ncap * sizeof *ni, "pair table");
    for (size_t i = 0; i <= t->mask; i++) {
        if (!t->keys[i]) continue;
        size_t s = pt_slot(t->keys[i], ncap - 1);
        while (nk[s]) s = (s + 1) & (ncap - 1);
        nk[s] = t->keys[i];
        ni[s] = t->idx[i];
    }
    free(t->keys);
    free(t->idx);
    t->keys = nk;
    t->idx = ni;
    t->mask = ncap - 1;
}

// Index of pair (a, b), created with count 0 when new.
static int32_t pt_get(PairTable *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t i = pt_slot(key, t->mask);
    for (; t->keys[i]; i = (i + 1) & t->mask)
        if (t->keys[i] == key) return t->idx[i];
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 1 << 14;
        t->p = gt_realloc(t->p, t->cap * sizeof *t->p, "pair table");
    }
    int32_t id = (int32_t)t->n++;
    t->p[id] = (Pair){.a = a, .b = b, .last_word = -1, .stamp = -1};
    t->keys[i] = key;
    t->idx[i] = id;
    if (++t->used * 2 > t->mask + 1) pt_grow(t);
    return id;
}

static void pair_add_word(Pair *p, int32_t w) {
    if (p->last_word == w) return;
    p->last_word = w;
    if (p->nw == p->cw) {
        p->cw = p->cw ? p->cw * 2 : 4;
        p->words = gt_realloc(p->words, (size_t)p->cw * sizeof *p->words, "pair index");
    }
    p->words[p->nw++] = w;
}

// ---------------------------------------------------------------------------------------
// max-heap of (count, pair): highest count first, then smallest (a, b)

typedef struct {
    int64_t count;
    int32_t pair;
} HeapItem;

typedef struct {
    HeapItem *h;
    size_t n, cap;
    const PairTable *pt;
} Heap;

static inline int heap_before(const Heap *H, HeapItem x, HeapItem y) {
    if (x.count != y.count) return x.count > y.count;
    const Pair *px = &H->pt->p[x.pair], *py = &H->pt->p[y.pair];
    if (px->a != py->a) return px->a < py->a;
    return px->b < py->b;
}

static void heap_push(Heap *H, int64_t count, int32_t pair) {
    if (H->n == H->cap) {
        H->cap = H->cap ? H->cap * 2 : 1 << 14;
        H->h = gt_realloc(H->h, H->cap * sizeof *H->h, "pair heap");
    }
    size_t c = H->n++;
    HeapItem x = {count, pair};
    while (c > 0 && heap_before(H, x, H->h[(c - 1) / 2])) {
        H->h[c] = H->h[(c - 1) / 2];
        c = (c - 1) / 2;
    }
    H->h[c] = x;
}

static HeapItem heap_pop(Heap *H) {
    HeapItem top = H->h[0], x = H->h[--H->n];
    size_t c = 0;
    for (;;) {
        size_t l = 2 * c + 1, s = c;
        HeapItem best = x;
        if (l < H->n && heap_before(H, H->h[l], best)) s = l, best = H->h[l];
        if (l + 1 < H->n && heap_before(H, H->h[l + 1], best)) s = l + 1;
        if (s == c) break;
        H->h[c] = H->h[s];
        c = s;
    }
    if (H->n > 0) H->h[c] = x;
    return top;
}

// ---------------------------------------------------------------------------------------
// training

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int is_name_like(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

const char *tokenizer_pattern_checked(const char *name_or_regex, const char *flag) {
    const char *re = tokenizer_pattern(name_or_regex);
    // A bare word that is not a known name is almost surely a typo ("llama4"), not a regex.
    if (re == name_or_regex && is_name_like(name_or_regex))
        gt_fail_usage("%s '%s': unknown pattern name (known: llama3, gpt4, gpt2; anything else must be a regex)", flag,
                      name_or_regex);
    if (!*re) gt_fail_usage("%s: empty pattern", flag);
    return re;
}

// ---------------------------------------------------------------------------------------
// counting, block by block

struct BpeCounts {
    Tokenizer tok;     // the pattern and the special tokens, compiled; no merges yet
    int threads;
    WordMap maps[64];  // one per thread, merged at the end
    size_t bytes;      // text counted so far
    double t0;         // when counting began
};

BpeCounts *bpe_counts_new(const char *pattern, char *const *special, int n_special, int threads, GtErr *e) {
    if (gt_failed(e)) return NULL;
    const char *re = tokenizer_pattern_checked(pattern, "--pattern");
    size_t bad;
    for (int i = 0; i < n_special; i++) {
        const char *s = special[i];
        if (!s[0]) return gt_err(e, GT_EXIT_USAGE, "--special: empty special token"), NULL;
        if (strlen(s) > TOK_MAX_SPECIAL)
            return gt_err(e, GT_EXIT_USAGE, "--special: token %d is longer than %d bytes", i + 1, TOK_MAX_SPECIAL), NULL;
        if (!utf8_validate(s, strlen(s), &bad)) return gt_err(e, GT_EXIT_USAGE, "--special: token %d is not valid UTF-8", i + 1), NULL;
        for (int j = 0; j < i; j++)
            if (strcmp(s, special[j]) == 0) return gt_err(e, GT_EXIT_USAGE, "--special '%s': given twice", s), NULL;
    }
    BpeCounts *c = gt_calloc(1, sizeof *c, "counts");
    c->t0 = now_s();
    Tokenizer *tok = &c->tok;
    tok->pattern = gt_strdup(re);
    tok->n_special = n_special;
    tok->special = gt_calloc((size_t)(n_special > 0 ? n_special : 1), sizeof(char *), "special tokens");
    for (int i = 0; i < n_special; i++) tok->special[i] = gt_strdup(special[i]);
    tok_compile(tok, "--pattern");
    c->threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    tokenizer_set_threads(tok, c->threads);
    for (int t = 0; t < c->threads; t++) wm_init(&c->maps[t]);
    return c;
}

// As tokenizer_encode_stream walks a block (tokenizer.c, encode_valid): cut at chunk
// boundaries into one part per thread, each counted into its own map.
size_t bpe_counts_add(BpeCounts *c, const char *text, size_t len, size_t offset, int final) {
    Tokenizer *tok = &c->tok;
    tokenizer_set_input_offset(tok, offset);
    TokPriv *P = tok->priv;
    size_t limit = final ? len : (len > TOK_MARGIN ? len - TOK_MARGIN : 0), points[65], stop[64];
    int k = tok_split_points(tok, text, 0, limit, points, c->threads);
    for (int t = 0; t < k; t++) tok_matcher(tok, t);
#pragma omp parallel for num_threads(k) schedule(static, 1) if (k > 1)
    for (int t = 0; t < k; t++) {
        Walker w = {count_chunk, count_special, &c->maps[t]};
        int last = t == k - 1;
        stop[t] = tok_walk(tok, &P->matchers[t], text, len, points[t], last ? len : points[t + 1], last ? final : 1, &w);
    }
    c->bytes += stop[k - 1];
    return stop[k - 1];
}

void bpe_counts_free(BpeCounts *c) {
    if (!c) return;
    for (int t = 0; t < c->threads; t++) wm_free(&c->maps[t]);
    tokenizer_free(&c->tok);
    free(c);
}

void tokenizer_train(Tokenizer *tok, const char *text, size_t len, int vocab_size, const char *pattern,
                     char *const *special, int n_special, int threads, int verbose) {
    GtErr e = GT_ERR_INIT;
    size_t bad;
    if (!utf8_validate(text, len, &bad)) gt_fail_usage("training text is not valid UTF-8 (byte offset %zu)", bad);
    BpeCounts *c = bpe_counts_new(pattern, special, n_special, threads, &e);
    if (c) bpe_counts_add(c, text, len, 0, 1);
    GT_OR_EXIT(&e, bpe_counts_train(c, tok, vocab_size, verbose, &e));
}

int bpe_counts_train(BpeCounts *counts, Tokenizer *tok, int vocab_size, int verbose, GtErr *e) {
    memset(tok, 0, sizeof *tok);
    if (gt_failed(e)) return bpe_counts_free(counts), -1;
    double t0 = counts->t0;
    int n_special = counts->tok.n_special, threads = counts->threads;
    if (vocab_size < 256 + n_special) {
        gt_err(e, GT_EXIT_USAGE, "--vocab-size %d: must be at least 256 (the bytes) + %d special token(s)", vocab_size,
               n_special);
        return bpe_counts_free(counts), -1;
    }
    // The pattern and the special tokens move into the result (tokenizer_prepare at the
    // end compiles them again, with the merges).
    *tok = counts->tok;

    // 1. unique words with counts: the threads' maps merged into the first
    WordMap wm = counts->maps[0];
    for (int t = 1; t < threads; t++) {
        for (size_t i = 0; i <= counts->maps[t].mask; i++) {
            WordEntry *en = &counts->maps[t].slot[i];
            if (en->h) wm_add(&wm, counts->maps[t].bytes + en->off, en->len, en->count);
        }
        wm_free(&counts->maps[t]);
    }
    size_t len = counts->bytes;
    free(counts);
    size_t nw = wm.used;
    if (nw > INT32_MAX) {
        wm_free(&wm);
        tokenizer_free(tok);
        return gt_err(e, GT_EXIT_USAGE, "the training text has too many distinct chunks (%zu; at most %d)", nw, INT32_MAX);
    }
    int64_t *wcount = gt_malloc(nw * sizeof *wcount, "words");
    size_t *woff = gt_malloc(nw * sizeof *woff, "words");
    size_t *wlen = gt_malloc(nw * sizeof *wlen, "words");
    int32_t *wstamp = gt_malloc(nw * sizeof *wstamp, "words");
    int32_t *sym = gt_malloc((wm.nb ? wm.nb : 1) * sizeof *sym, "word symbols");
    size_t w = 0, o = 0;
    for (size_t i = 0; i <= wm.mask; i++) {
        WordEntry *en = &wm.slot[i];
        if (!en->h) continue;
        wcount[w] = en->count;
        woff[w] = o;
        wlen[w] = en->len;
        wstamp[w] = -1;
        for (size_t j = 0; j < en->len; j++) sym[o + j] = wm.bytes[en->off + j];
        o += en->len;
        w++;
    }
    wm_free(&wm);

    // 2. pair counts and the pair -> words index
    PairTable pt = {0};
    pt.mask = 4095;
    pt.keys = gt_calloc(pt.mask + 1, sizeof *pt.keys, "pair table");
    pt.idx = gt_malloc((pt.mask + 1) * sizeof *pt.idx, "pair table");
    for (size_t i = 0; i < nw; i++) {
        int32_t *s = sym + woff[i];
        for (size_t j = 0; j + 1 < wlen[i]; j++) {
            int32_t p = pt_get(&pt, s[j], s[j + 1]);
            pt.p[p].count += wcount[i];
            pair_add_word(&pt.p[p], (int32_t)i);
        }
    }
    Heap H = {.pt = &pt};
    for (size_t p = 0; p < pt.n; p++) heap_push(&H, pt.p[p].count, (int32_t)p);
    double t1 = now_s();
    if (verbose)
        fprintf(stderr, "%s: %zu bytes, %zu distinct chunks, %zu distinct pairs (%.2f s)\n", gt_progname(), len, nw,
                pt.n, t1 - t0);

    // 3. merges
    int target = vocab_size - 256 - n_special;
    // Every merge removes at least one symbol, so a huge --vocab-size costs no memory.
    size_t max_merges = 0;
    for (size_t i = 0; i < nw; i++) max_merges += wlen[i] - 1;
    if ((size_t)target > max_merges) target = (int)max_merges;
    tok->merges = gt_malloc(2 * (size_t)(target > 0 ? target : 1) * sizeof *tok->merges, "merges");
    size_t tb_cap = 1024 + 16 * (size_t)target, tb_n = 256;
    uint8_t *tb = gt_malloc(tb_cap, "token bytes");
    int64_t *toff = gt_malloc(((size_t)256 + target + n_special + 1) * sizeof *toff, "token offsets");
    for (int i = 0; i < 256; i++) {
        tb[i] = (uint8_t)i;
        toff[i] = i;
    }
    toff[256] = 256;
    int nm = 0;
    int32_t *touched = NULL;
    size_t n_touched = 0, cap_touched = 0;
    int progress = verbose && isatty(2);
    double last_progress = t1;
    int64_t last_count = 0;
    while (nm < target && H.n > 0) {
        HeapItem top = heap_pop(&H);
        Pair *bp = &pt.p[top.pair];
        if (top.count != bp->count) {  // stale entry: counts only decrease, so re-queue
            if (bp->count > 0) heap_push(&H, bp->count, top.pair);
            continue;
        }
        if (bp->count < 2) break;
        int32_t a = bp->a, b = bp->b, z = 256 + nm;
        last_count = bp->count;
        tok->merges[2 * nm] = a;
        tok->merges[2 * nm + 1] = b;
        size_t la = (size_t)(toff[a + 1] - toff[a]), lb = (size_t)(toff[b + 1] - toff[b]);
        if (tb_n + la + lb > tb_cap) {
            tb_cap = 2 * tb_cap + la + lb;
            tb = gt_realloc(tb, tb_cap, "token bytes");
        }
        memcpy(tb + tb_n, tb + toff[a], la);
        memcpy(tb + tb_n + la, tb + toff[b], lb);
        tb_n += la + lb;
        toff[z + 1] = (int64_t)tb_n;

        // The merged pair's word list is taken over: it never gains words again.
        int32_t *words = bp->words, nwords = bp->nw;
        bp->words = NULL;
        bp->nw = bp->cw = 0;
        n_touched = 0;
        for (int32_t k = 0; k < nwords; k++) {
            int32_t wi = words[k];
            if (wstamp[wi] == nm) continue;
            wstamp[wi] = nm;
            int32_t *s = sym + woff[wi];
            size_t L = wlen[wi];
            int64_t c = wcount[wi];
            size_t j;
            for (j = 0; j + 1 < L; j++)
                if (s[j] == a && s[j + 1] == b) break;
            if (j + 1 >= L) continue;  // listed earlier, no longer contains the pair
            for (j = 0; j + 1 < L; j++) pt.p[pt_get(&pt, s[j], s[j + 1])].count -= c;
            size_t m = 0;
            for (j = 0; j < L;) {
                if (j + 1 < L && s[j] == a && s[j + 1] == b) {
                    s[m++] = z;
                    j += 2;
                } else {
                    s[m++] = s[j++];
                }
            }
            wlen[wi] = L = m;
            for (j = 0; j + 1 < L; j++) {
                int32_t p = pt_get(&pt, s[j], s[j + 1]);
                Pair *pp = &pt.p[p];
                pp->count += c;
                if (s[j] == z || s[j + 1] == z) {  // a new pair: index the word, queue it below
                    pair_add_word(pp, wi);
                    if (pp->stamp != nm) {
                        pp->stamp = nm;
                        if (n_touched == cap_touched) {
                            cap_touched = cap_touched ? 2 * cap_touched : 1024;
                            touched = gt_realloc(touched, cap_touched * sizeof *touched, "pairs");
                        }
                        touched[n_touched++] = p;
                    }
                }
            }
        }
        free(words);
        for (size_t k = 0; k < n_touched; k++)
            if (pt.p[touched[k]].count > 0) heap_push(&H, pt.p[touched[k]].count, touched[k]);
        nm++;
        if (progress && (nm & 63) == 0 && now_s() - last_progress > 0.5) {
            last_progress = now_s();
            fprintf(stderr, "\r%s: merge %d/%d (count %lld)   ", gt_progname(), nm, target, (long long)last_count);
        }
    }
    if (progress) fprintf(stderr, "\r%60s\r", "");
    if (verbose) {
        fprintf(stderr, "%s: %d merges in %.2f s (last merge count %lld)\n", gt_progname(), nm, now_s() - t1,
                (long long)last_count);
        if (nm < vocab_size - 256 - n_special)
            fprintf(stderr, "%s: note: the text only supports %d merges (no pair occurs twice any more); vocab_size is %d, not %d\n",
                    gt_progname(), nm, 256 + nm + n_special, vocab_size);
    }

    // 4. the vocabulary: bytes, merges, specials
    tok->n_merges = nm;
    tok->vocab_size = 256 + nm + n_special;
    for (int i = 0; i < n_special; i++) {
        size_t l = strlen(tok->special[i]);
        if (tb_n + l > tb_cap) {
            tb_cap = 2 * tb_cap + l;
            tb = gt_realloc(tb, tb_cap, "token bytes");
        }
        memcpy(tb + tb_n, tok->special[i], l);
        tb_n += l;
        toff[256 + nm + i + 1] = (int64_t)tb_n;
    }
    tok->token_bytes = tb;
    tok->token_offsets = toff;

    for (size_t p = 0; p < pt.n; p++) free(pt.p[p].words);
    free(pt.p);
    free(pt.keys);
    free(pt.idx);
    free(H.h);
    free(touched);
    free(sym);
    free(wcount);
    free(woff);
    free(wlen);
    free(wstamp);
    tokenizer_prepare(tok);
    tokenizer_set_threads(tok, threads);
    return 0;
}
