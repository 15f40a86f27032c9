// corpus.c - see corpus.h.
#define _GNU_SOURCE
#include "corpus.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "files.h"
#include "sha256.h"
#include "signals.h"
#include "utf8.h"

typedef struct {
    dev_t dev;
    ino_t ino;
} FileId;

struct Corpus {
    CorpusOptions o;
    char *inputs_text;
    TokensSource *src;       // (n) in reading order
    const char **input_of;   // (n) the input each source came from (a pointer into inputs)
    int n, cap;
    char **inputs;           // (n_inputs) copies of the inputs as given
    int n_inputs;
    int stdin_index;         // the source that is "-", or -1
    int passes;              // corpus_stream calls so far
    int64_t expected;        // sum of the sources' sizes at expansion (stdin unknown)
    // what the last pass found
    int64_t bytes;
    char sha256[65];
    size_t replaced, replaced_files;
    int first_replaced;      // source index, or -1
    size_t twice, not_regular;  // files reached again through links, entries skipped
    FileId *seen;            // open addressing set of the files taken (dev, ino); ino 0 = empty
    size_t seen_mask, seen_used;
};

static uint64_t fid_hash(FileId f) { return ((uint64_t)f.ino * 0x9E3779B97F4A7C15ull) ^ (uint64_t)f.dev; }

// Adds f to the set; 0 when it was there already.
static int seen_add(Corpus *c, FileId f) {
    if (2 * (c->seen_used + 1) > c->seen_mask + 1) {
        size_t ncap = c->seen_mask ? 2 * (c->seen_mask + 1) : 1024;
        FileId *ns = gt_calloc(ncap, sizeof *ns, "file set");
        for (size_t i = 0; c->seen && i <= c->seen_mask; i++)
            if (c->seen[i].ino) {
                size_t s = fid_hash(c->seen[i]) & (ncap - 1);
                while (ns[s].ino) s = (s + 1) & (ncap - 1);
                ns[s] = c->seen[i];
            }
        free(c->seen);
        c->seen = ns;
        c->seen_mask = ncap - 1;
    }
    size_t s = fid_hash(f) & c->seen_mask;
    for (; c->seen[s].ino; s = (s + 1) & c->seen_mask)
        if (c->seen[s].ino == f.ino && c->seen[s].dev == f.dev) return 0;
    c->seen[s] = f;
    c->seen_used++;
    return 1;
}

static void add_source(Corpus *c, const char *path, const char *input, int64_t bytes) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        c->src = gt_realloc(c->src, (size_t)c->cap * sizeof *c->src, "sources");
        c->input_of = gt_realloc(c->input_of, (size_t)c->cap * sizeof *c->input_of, "sources");
    }
    c->src[c->n] = (TokensSource){gt_strdup(path), bytes, "", 0, 0};
    c->input_of[c->n] = input;
    c->n++;
    if (bytes > 0) c->expected += bytes;
}

// "--input 'DIR': 'DIR/a/b'" or "--input 'FILE'": how messages name a source.
static void name_source(const Corpus *c, int i, char *buf, size_t n) {
    const char *in = c->input_of[i], *p = c->src[i].path;
    if (!strcmp(p, "-")) snprintf(buf, n, "%s '-' (standard input)", c->o.flag);
    else if (!strcmp(in, p)) snprintf(buf, n, "%s '%.2000s'", c->o.flag, p);
    else snprintf(buf, n, "%s '%.1000s': file '%.2000s'", c->o.flag, in, p);
}

static int cmp_path(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct {
    char **v;
    size_t n, cap;
} PathList;

// Collects the regular files below dir (symbolic links followed) into out. ancestors holds
// the directories on the way down, to refuse a link that leads back to one of them.
static int walk(Corpus *c, const char *input, const char *dir, FileId *ancestors, int depth, PathList *out, GtErr *e) {
    if (depth >= 256)
        return gt_err(e, GT_EXIT_USAGE, "%s '%s': directory '%.2000s' is nested more than 256 deep", c->o.flag, input, dir);
    DIR *d = opendir(dir);
    if (!d) return gt_err(e, GT_EXIT_USAGE, "%s '%s': directory '%.2000s': %s", c->o.flag, input, dir, strerror(errno));
    struct dirent *de;
    while (!gt_failed(e) && (errno = 0, de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        size_t L = strlen(dir);
        char *p = gt_malloc(L + strlen(de->d_name) + 2, "path");
        sprintf(p, L && dir[L - 1] == '/' ? "%s%s" : "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(p, &st) != 0) {
            struct stat ls;
            int dangling = errno == ENOENT && lstat(p, &ls) == 0 && S_ISLNK(ls.st_mode);
            gt_err(e, GT_EXIT_USAGE, "%s '%s': '%.2000s': %s", c->o.flag, input, p,
                   dangling ? "a symbolic link to nothing (dangling)" : strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            FileId me = {st.st_dev, st.st_ino};
            for (int k = 0; k <= depth; k++)
                if (ancestors[k].dev == me.dev && ancestors[k].ino == me.ino) {
                    gt_err(e, GT_EXIT_USAGE, "%s '%s': '%.2000s' is a symbolic link loop (it leads back to a directory above it)",
                           c->o.flag, input, p);
                    break;
                }
            if (!gt_failed(e)) {
                ancestors[depth + 1] = me;
                walk(c, input, p, ancestors, depth + 1, out, e);
            }
        } else if (S_ISREG(st.st_mode)) {
            if (out->n == out->cap) {
                out->cap = out->cap ? 2 * out->cap : 256;
                out->v = gt_realloc(out->v, out->cap * sizeof *out->v, "paths");
            }
            out->v[out->n++] = p;
            p = NULL;
        } else {
            c->not_regular++;  // FIFOs, sockets, devices: never text
        }
        free(p);
    }
    if (!gt_failed(e) && errno) gt_err(e, GT_EXIT_USAGE, "%s '%s': directory '%.2000s': %s", c->o.flag, input, dir, strerror(errno));
    closedir(d);
    return gt_failed(e) ? -1 : 0;
}

// Opens a file of the corpus as gt_open_input does, a file below a directory input named as
// "--input 'DIR': file 'DIR/a/b'".
static int open_file(const Corpus *c, const char *path, const char *input, int64_t *size, GtErr *e) {
    char flag[2200];
    if (strcmp(path, input)) snprintf(flag, sizeof flag, "%s '%.2000s': file", c->o.flag, input);
    else snprintf(flag, sizeof flag, "%s", c->o.flag);
    return gt_open_input(path, flag, size, e);
}

// A file is taken once (links may reach it twice) and must open now, so that a file nobody
// can read stops the run before hours of work rather than in the middle.
static int take_file(Corpus *c, const char *path, const char *input, GtErr *e) {
    int64_t size = 0;
    int fd = open_file(c, path, input, &size, e);
    if (fd < 0) return -1;
    struct stat st;
    int new_file = fstat(fd, &st) != 0 || seen_add(c, (FileId){st.st_dev, st.st_ino ? st.st_ino : 1});
    close(fd);
    if (!new_file) {
        c->twice++;
        return 0;
    }
    if (size == 0 && !strcmp(path, input)) return gt_err(e, GT_EXIT_USAGE, "%s '%s': file is empty", c->o.flag, path);
    add_source(c, path, input, size);
    return 0;
}

Corpus *corpus_open(char *const *inputs, int n_inputs, const CorpusOptions *o, GtErr *e) {
    if (gt_failed(e)) return NULL;
    Corpus *c = gt_calloc(1, sizeof *c, "corpus");
    c->o = *o;
    if (!c->o.flag) c->o.flag = "--input";
    if (!c->o.block) c->o.block = (size_t)16 << 20;
    c->stdin_index = -1;
    c->first_replaced = -1;
    c->n_inputs = n_inputs;
    c->inputs = gt_calloc((size_t)(n_inputs > 0 ? n_inputs : 1), sizeof *c->inputs, "inputs");
    size_t tl = 1;
    for (int i = 0; i < n_inputs; i++) {
        c->inputs[i] = gt_strdup(inputs[i]);
        tl += strlen(inputs[i]) + 2;
    }
    c->inputs_text = gt_calloc(tl, 1, "inputs");
    for (int i = 0; i < n_inputs; i++) {
        if (i) strcat(c->inputs_text, ", ");
        strcat(c->inputs_text, inputs[i]);
    }
    if (n_inputs == 0) gt_err(e, GT_EXIT_USAGE, "%s: no input given", c->o.flag);
    for (int i = 0; i < n_inputs && !gt_failed(e); i++) {
        const char *in = c->inputs[i];
        struct stat st;
        if (!strcmp(in, "-")) {
            if (c->stdin_index >= 0) {
                gt_err(e, GT_EXIT_USAGE, "%s '-' is given twice: standard input can be read once", c->o.flag);
                break;
            }
            c->stdin_index = c->n;
            add_source(c, "-", in, -1);
        } else if (stat(in, &st) == 0 && S_ISDIR(st.st_mode)) {
            PathList files = {0};
            FileId anc[257] = {{st.st_dev, st.st_ino}};
            size_t skipped = c->not_regular;
            if (walk(c, in, in, anc, 0, &files, e) == 0) {
                if (files.n == 0)
                    gt_err(e, GT_EXIT_USAGE, "%s '%s': no regular files below this directory%s", c->o.flag, in,
                           c->not_regular > skipped ? " (only FIFOs, sockets or devices)" : "");
                if (files.n) qsort(files.v, files.n, sizeof *files.v, cmp_path);
                for (size_t k = 0; k < files.n && !gt_failed(e); k++) take_file(c, files.v[k], in, e);
            }
            for (size_t k = 0; k < files.n; k++) free(files.v[k]);
            free(files.v);
        } else {
            take_file(c, in, in, e);  // names a missing path, a FIFO, a device as gt_open_input does
        }
    }
    if (gt_failed(e)) {
        corpus_close(c);
        return NULL;
    }
    return c;
}

void corpus_close(Corpus *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) free(c->src[i].path);
    for (int i = 0; i < c->n_inputs; i++) free(c->inputs[i]);
    free(c->src);
    free(c->input_of);
    free(c->inputs);
    free(c->inputs_text);
    free(c->seen);
    free(c);
}

const TokensSource *corpus_sources(const Corpus *c, int *n) {
    *n = c->n;
    return c->src;
}

const char *corpus_inputs_text(const Corpus *c) { return c->inputs_text; }
int64_t corpus_bytes(const Corpus *c) { return c->bytes; }
const char *corpus_sha256(const Corpus *c) { return c->sha256; }

void corpus_print_notes(const Corpus *c, FILE *f) {
    const char *prog = gt_progname();
    if (c->replaced && c->n == 1) {
        fprintf(f, "%s: replaced %zu invalid UTF-8 sequence(s) in '%s' with U+FFFD\n", prog, c->replaced, c->src[0].path);
    } else if (c->replaced) {
        fprintf(f, "%s: replaced %zu invalid UTF-8 sequence(s) in %zu of %d files with U+FFFD (the first in '%s')\n", prog,
                c->replaced, c->replaced_files, c->n, c->src[c->first_replaced].path);
    }
    if (c->twice) fprintf(f, "%s: note: %zu file(s) reached twice through links were read once\n", prog, c->twice);
    if (c->not_regular)
        fprintf(f, "%s: note: %zu entries below %s that are not regular files (FIFOs, sockets, devices) were skipped\n",
                prog, c->not_regular, c->o.flag);
}

// ---------------------------------------------------------------------------------------
// reading

typedef struct {
    Corpus *c;
    int i;               // source index
    int fd;
    int64_t left;        // bytes still to read (at most the size at opening); < 0: to the end (stdin)
    uint8_t *raw;        // (block + 8)
    size_t pend;         // bytes of raw[] carried over (an incomplete character, < 4)
    size_t offset;       // file offset of raw[0]
    size_t lines;        // newlines before raw[0], and where the line of raw[0] starts: for messages
    size_t line_start;
    size_t replaced;
    Sha256 sha, *all;
} Reader;

static void count_lines(Reader *r, size_t upto) {
    const uint8_t *p = r->raw, *end = r->raw + upto;
    while ((p = memchr(p, '\n', (size_t)(end - p)))) {
        r->lines++;
        p++;
        r->line_start = r->offset + (size_t)(p - r->raw);
    }
}

// Reads the next block of the source as valid UTF-8 appended to *buf (grown as needed).
// Returns 1 at the end of the source, 0 before it, -1 after a failure in *e.
static int read_block(Reader *r, char **buf, size_t *len, size_t *cap, GtErr *e) {
    Corpus *c = r->c;
    size_t block = c->o.block, want = r->left >= 0 && (uint64_t)r->left < block ? (size_t)r->left : block, n = 0;
    while (n < want) {
        ssize_t k = read(r->fd, r->raw + r->pend + n, want - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            char who[4200];
            name_source(c, r->i, who, sizeof who);
            return gt_err(e, GT_EXIT_USAGE, "%s: read error: %s", who, strerror(errno));
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    if (r->left >= 0) r->left -= (int64_t)n;
    int eof = n < want || r->left == 0;
    sha256_update(&r->sha, r->raw + r->pend, n);
    sha256_update(r->all, r->raw + r->pend, n);
    signals_test_point("read");
    size_t nraw = r->pend + n, used;
    if (*len + 3 * nraw + 1 > *cap) {
        *cap = *len + 3 * nraw + 1;
        *buf = gt_realloc(*buf, *cap, "input text");
    }
    if (c->o.replace_invalid) {
        *len += utf8_replace_invalid((uint8_t *)*buf + *len, r->raw, nraw, eof, &used, &r->replaced);
    } else {
        size_t bad;
        used = nraw;
        if (!utf8_validate((const char *)r->raw, nraw, &bad)) {
            if (eof || utf8_char_len(r->raw + bad, nraw - bad) != -1) {
                count_lines(r, bad);
                char who[4200];
                name_source(c, r->i, who, sizeof who);
                size_t at = r->offset + bad;
                return gt_err(e, GT_EXIT_USAGE,
                              "%s: invalid UTF-8 at byte offset %zu (line %zu, column %zu); use --replace-invalid to "
                              "map bad bytes to U+FFFD",
                              who, at, r->lines + 1, at - r->line_start + 1);
            }
            used = bad;  // an incomplete character at the end of the block: wait for the rest
        }
        count_lines(r, used);
        memcpy(*buf + *len, r->raw, used);
        *len += used;
    }
    r->pend = nraw - used;
    memmove(r->raw, r->raw + used, r->pend);
    r->offset += used;
    return eof;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int corpus_stream(Corpus *c, const CorpusSink *s, GtErr *e) {
    if (gt_failed(e)) return -1;
    if (c->passes++ > 0 && c->stdin_index >= 0)
        return gt_err(e, GT_EXIT_USAGE, "%s '-': standard input can be read only once (this needs two passes over "
                      "the text: save it to a file)", c->o.flag);
    Sha256 all;
    sha256_init(&all);
    c->bytes = 0;
    c->replaced = c->replaced_files = 0;
    c->first_replaced = -1;
    Reader r = {.c = c, .raw = gt_malloc(c->o.block + 8, "input block"), .all = &all};
    char *buf = NULL;
    size_t cap = 0;
    int first = 1;
    int progress = c->o.progress && isatty(2) && c->expected > ((int64_t)64 << 20);
    double t0 = now_s(), last = t0;
    for (int i = 0; i < c->n && !gt_failed(e); i++) {
        TokensSource *src = &c->src[i];
        r.i = i;
        r.pend = r.offset = r.lines = r.line_start = r.replaced = 0;
        sha256_init(&r.sha);
        if (i == c->stdin_index) {
            r.fd = 0;
            r.left = -1;
        } else {
            int64_t size;
            if ((r.fd = open_file(c, src->path, c->input_of[i], &size, e)) < 0) break;
            r.left = size;
        }
        size_t len = 0;
        int started = 0, eof = 0;
        while (!eof) {
            eof = read_block(&r, &buf, &len, &cap, e);
            if (eof < 0) break;
            if (len > 0 && !started) {
                if (s->doc_begin) s->doc_begin(s->ctx, i, first);
                started = 1;
                first = 0;
            }
            size_t at = (size_t)(all.total - r.sha.total) + r.offset, done = 0;
            if (started) done = s->text(s->ctx, buf, len, at > len ? at - len : 0, eof);
            memmove(buf, buf + done, len - done);  // the undecided tail goes in front of the next block
            len -= done;
            if (progress && now_s() - last > 0.5) {
                last = now_s();
                int64_t got = (int64_t)all.total;
                fprintf(stderr, "\r%s: %lld / %lld MB (%.0f%%), %.1f MB/s   ", gt_progname(), (long long)(got >> 20),
                        (long long)(c->expected >> 20), 100.0 * (double)got / (double)c->expected,
                        (double)got / 1e6 / (last - t0));
            }
        }
        if (i != c->stdin_index) close(r.fd);
        src->bytes = (int64_t)r.sha.total;
        sha256_final_hex(&r.sha, src->sha256);
        if (r.replaced) {
            c->replaced += r.replaced;
            if (c->replaced_files++ == 0) c->first_replaced = i;
        }
    }
    if (progress) fprintf(stderr, "\r%70s\r", "");
    free(r.raw);
    free(buf);
    c->bytes = (int64_t)all.total;
    sha256_final_hex(&all, c->sha256);
    if (!gt_failed(e) && first)
        gt_err(e, GT_EXIT_USAGE, "%s '%s': no text (every file is empty)", c->o.flag, c->inputs_text);
    return gt_failed(e) ? -1 : 0;
}

int corpus_hash(Corpus *c, GtErr *e) {
    if (gt_failed(e)) return -1;
    if (c->stdin_index >= 0)
        return gt_err(e, GT_EXIT_USAGE, "%s '-': standard input can be read only once (this needs two passes over "
                      "the text: save it to a file)", c->o.flag);
    Sha256 all;
    sha256_init(&all);
    uint8_t *buf = gt_malloc((size_t)1 << 20, "hash buffer");
    for (int i = 0; i < c->n && !gt_failed(e); i++) {
        int64_t size;
        int fd = open_file(c, c->src[i].path, c->input_of[i], &size, e);
        if (fd < 0) break;
        Sha256 one;
        sha256_init(&one);
        for (int64_t done = 0; done < size;) {
            ssize_t k = read(fd, buf, (size_t)(size - done < (1 << 20) ? size - done : (1 << 20)));
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) break;  // a file that shrank: hashed as it is
            sha256_update(&one, buf, (size_t)k);
            sha256_update(&all, buf, (size_t)k);
            done += k;
        }
        close(fd);
        c->src[i].bytes = (int64_t)one.total;
        sha256_final_hex(&one, c->src[i].sha256);
    }
    free(buf);
    c->bytes = (int64_t)all.total;
    sha256_final_hex(&all, c->sha256);
    return gt_failed(e) ? -1 : 0;
}

// ---------------------------------------------------------------------------------------
// training

static size_t count_text(void *ctx, const char *text, size_t len, size_t offset, int final) {
    return bpe_counts_add(ctx, text, len, offset, final);
}

int corpus_train(Corpus *c, const CorpusTrainOptions *o, Tokenizer *tok, GtErr *e) {
    memset(tok, 0, sizeof *tok);
    if (gt_failed(e)) return -1;
    // The separator is a special token: cut out before counting, like every special.
    char **special = gt_calloc((size_t)o->n_special + 1, sizeof *special, "special tokens");
    int n_special = 0;
    for (int i = 0; i < o->n_special; i++) special[n_special++] = o->special[i];
    int have = 0;
    for (int i = 0; o->doc_separator && i < o->n_special; i++) have |= !strcmp(o->special[i], o->doc_separator);
    if (o->doc_separator && !have) special[n_special++] = (char *)o->doc_separator;
    BpeCounts *counts = bpe_counts_new(o->pattern, special, n_special, o->threads, e);
    free(special);
    CorpusSink sink = {NULL, count_text, counts};
    if (counts) corpus_stream(c, &sink, e);
    return bpe_counts_train(counts, tok, o->vocab_size, o->verbose, e);
}

// ---------------------------------------------------------------------------------------
// encoding

typedef struct {
    const Tokenizer *tok;
    CorpusIds *out;
    uint32_t *ids;             // one block's ids from the encoder
    size_t n, idcap, cap_all, cap_bounds;
    int sep;                   // the separator's id, or -1
    int cur;                   // the current source
} EncodeCtx;

static void push_bound(EncodeCtx *x, int64_t at) {
    CorpusIds *o = x->out;
    if (o->n_docs && o->doc_start[o->n_docs - 1] == at) return;
    if (o->n_docs == x->cap_bounds) {
        x->cap_bounds = x->cap_bounds ? 2 * x->cap_bounds : 1024;
        o->doc_start = gt_realloc(o->doc_start, x->cap_bounds * sizeof *o->doc_start, "document starts");
    }
    o->doc_start[o->n_docs++] = at;
}

static void append_ids(EncodeCtx *x, const uint32_t *ids, size_t k) {
    CorpusIds *o = x->out;
    if (o->n + k > x->cap_all) {
        x->cap_all = (o->n + k) * 3 / 2 + 4096;
        o->ids = gt_realloc(o->ids, x->cap_all * (size_t)o->width, "token ids");
    }
    for (size_t i = 0; i < k; i++) {
        if (o->width == 2) ((uint16_t *)o->ids)[o->n + i] = (uint16_t)ids[i];
        else ((uint32_t *)o->ids)[o->n + i] = ids[i];
        // A separator inside a document starts a new one there too.
        if ((int)ids[i] == x->sep) push_bound(x, (int64_t)(o->n + i + 1));
    }
    o->n += k;
}

static void enc_doc_begin(void *ctx, int source, int first) {
    EncodeCtx *x = ctx;
    if (!first && x->sep >= 0) {
        uint32_t s = (uint32_t)x->sep;
        append_ids(x, &s, 1);
    }
    x->cur = source;
    x->out->src_start[source] = x->out->src_end[source] = (int64_t)x->out->n;
    push_bound(x, (int64_t)x->out->n);
}

static size_t enc_text(void *ctx, const char *text, size_t len, size_t offset, int final) {
    EncodeCtx *x = ctx;
    x->n = 0;
    tokenizer_set_input_offset(x->tok, offset);
    size_t done = tokenizer_encode_stream(x->tok, text, len, 0, final, &x->ids, &x->n, &x->idcap);
    append_ids(x, x->ids, x->n);
    x->out->src_end[x->cur] = (int64_t)x->out->n;
    return done;
}

int corpus_encode_ids(Corpus *c, const Tokenizer *tok, const char *doc_separator, CorpusIds *out, GtErr *e) {
    memset(out, 0, sizeof *out);
    if (gt_failed(e)) return -1;
    EncodeCtx x = {.tok = tok, .out = out, .sep = -1};
    out->width = tok->vocab_size <= 65536 ? 2 : 4;
    if (doc_separator && (x.sep = tokenizer_special_id(tok, doc_separator)) < 0) {
        char shown[256];
        return gt_err(e, GT_EXIT_USAGE,
                      "--doc-separator '%s' is not a special token of the vocabulary (its %d special tokens); train "
                      "the vocabulary with --doc-separator, which adds it",
                      utf8_escape(shown, sizeof shown, doc_separator, 0), tok->n_special);
    }
    out->src_start = gt_calloc((size_t)c->n + 1, sizeof *out->src_start, "sources");
    out->src_end = gt_calloc((size_t)c->n + 1, sizeof *out->src_end, "sources");
    CorpusSink sink = {enc_doc_begin, enc_text, &x};
    corpus_stream(c, &sink, e);
    free(x.ids);
    if (gt_failed(e)) corpus_ids_free(out);
    return gt_failed(e) ? -1 : 0;
}

void corpus_ids_free(CorpusIds *x) {
    free(x->ids);
    free(x->doc_start);
    free(x->src_start);
    free(x->src_end);
    memset(x, 0, sizeof *x);
}

int corpus_encode(Corpus *c, const Tokenizer *tok, const CorpusEncodeOptions *o, const char *out, int force,
                  CorpusEncodeStats *st, GtErr *e) {
    memset(st, 0, sizeof *st);
    double t0 = now_s();
    CorpusIds x;
    if (corpus_encode_ids(c, tok, o->doc_separator, &x, e)) return -1;
    size_t n = x.n, n_val = (size_t)llround((double)n * o->val_fraction);
    if (n_val > n) n_val = n;
    if (o->val_docs && n_val > 0) {
        // The shortest run of last whole documents holding at least n_val tokens: /val starts
        // at the last document start at or before n - n_val.
        size_t k = x.n_docs;
        while (k > 0 && (size_t)x.doc_start[k - 1] > n - n_val) k--;
        size_t at = k > 0 ? (size_t)x.doc_start[k - 1] : 0;
        if (at == 0)
            gt_err(e, GT_EXIT_USAGE,
                   "--val-split docs: the text is %s (%zu tokens), so /val of whole documents would leave nothing "
                   "for /train; give more files (or a --doc-separator that occurs in the text), a smaller "
                   "--val-fraction, or --val-split tokens",
                   x.n_docs <= 1 ? "one document" : "documents whose last alone holds the --val-fraction", n);
        n_val = n - at;
    }
    if (!gt_failed(e)) {
        int64_t split = (int64_t)(n - n_val);
        for (int i = 0; i < c->n; i++) {
            int64_t a = x.src_start[i], b = x.src_end[i], cut = split < a ? a : split > b ? b : split;
            c->src[i].train_tokens = cut - a;
            c->src[i].val_tokens = b - cut;
        }
        TokensProvenance p = {c->inputs_text, c->bytes, c->sha256, c->src, c->n, o->doc_separator,
                              o->val_docs ? "docs" : "tokens"};
        tokens_write_e(out, tok, x.ids, x.width, n, n_val, &p, force, e);
        *st = (CorpusEncodeStats){n, n - n_val, n_val, x.n_docs, now_s() - t0};
    }
    corpus_ids_free(&x);
    return gt_failed(e) ? -1 : 0;
}
