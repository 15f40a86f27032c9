// corpus.h - the text the tokenizer trains on and encodes (docs/tokenizer.md, inputs): any
// number of files, directories and "-" (standard input), read as a stream of documents.
//
// A directory stands for every regular file below it, symbolic links followed, in the byte
// order of their paths (`find -L DIR -type f | LC_ALL=C sort`); a link loop is refused. Each
// file is one document; no chunk of the split pattern ever spans two, and with a document
// separator (a special token) its id stands between them. Files are read block by block, so
// memory does not grow with the corpus: only a block of one file is held at a time.
//
// corpus_train and corpus_encode are THE pipeline from text to vocab.h5 and tokens.h5: gpt-bpe
// train/encode and gpt-train's text --data both call them.
#ifndef GT_CORPUS_H
#define GT_CORPUS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "tokenizer.h"
#include "tokens_io.h"

typedef struct {
    const char *flag;     // names the inputs in messages: "--input", "--data"
    int replace_invalid;  // invalid UTF-8 becomes U+FFFD (and is counted) instead of bad input
    size_t block;         // bytes read at a time (0: 16 MiB)
    int progress;         // a progress line on stderr when it is a terminal and the corpus large
} CorpusOptions;

typedef struct Corpus Corpus;

// Expands the inputs into the list of sources, checking that each can be opened: bad input
// (status 1) in *e for a missing or unreadable path (named, also below a directory), an
// input that is not a regular file, a directory, or "-", a directory without regular files,
// a symbolic link loop, "-" given twice, an explicit input that is empty. NULL after a failure.
Corpus *corpus_open(char *const *inputs, int n_inputs, const CorpusOptions *o, GtErr *e);
void corpus_close(Corpus *c);
// The sources in reading order (bytes and sha256 as last read; tokens after corpus_encode).
const TokensSource *corpus_sources(const Corpus *c, int *n);
// The inputs as given, joined by ", " (tokens.h5's `source` attribute).
const char *corpus_inputs_text(const Corpus *c);
// All bytes read by the last pass, and their SHA-256 in order (one source: its own).
int64_t corpus_bytes(const Corpus *c);
const char *corpus_sha256(const Corpus *c);
// Notes for the user after a pass (invalid UTF-8 replaced, files reached twice, entries that
// are not regular files): one line each, "PROG: note" style, to f. Nothing when there are none.
void corpus_print_notes(const Corpus *c, FILE *f);

// Where a pass sends the text.
typedef struct {
    // Called before the first text of each document that has any; first: no document before.
    void (*doc_begin)(void *ctx, int source, int first);
    // text[0..len) of the current document, valid UTF-8 (after replacement). Returns how many
    // bytes it consumed; the rest comes back at the front of the next call. final: the
    // document ends here, and all must be consumed. offset: where text[0] is in all the
    // inputs read in order (for messages; after a replacement, approximate).
    size_t (*text)(void *ctx, const char *text, size_t len, size_t offset, int final);
    void *ctx;
} CorpusSink;

// Reads every document once, in order, into the sink; fills each source's bytes and
// sha256 and the corpus's totals. Bad input in *e: a file that cannot be read (named),
// invalid UTF-8 without replace_invalid (file, byte offset, line and column), no text at all,
// standard input read a second time. Runtime failures (a read error) likewise.
int corpus_stream(Corpus *c, const CorpusSink *s, GtErr *e);

// Only the SHA-256 of every source and of all bytes in order (as corpus_stream fills them),
// without checking the text: whether files changed since they were tokenized. Bad input for
// standard input (it could not be read again) or a file that cannot be opened.
int corpus_hash(Corpus *c, GtErr *e);

// ---- the pipeline ----

typedef struct {
    int vocab_size;
    const char *pattern;        // a name or a regex (tokenizer_pattern)
    char *const *special;       // special tokens, in id order
    int n_special;
    const char *doc_separator;  // appended to the special tokens when not among them; NULL: none
    int threads;
    int verbose;                // statistics on stderr
} CorpusTrainOptions;

// Trains a vocabulary on the corpus by the rule of docs/tokenizer.md, counting its chunks as
// they stream by: memory grows with the number of distinct chunks, not with the text.
int corpus_train(Corpus *c, const CorpusTrainOptions *o, Tokenizer *tok, GtErr *e);

// Every id of the corpus, in memory: 2 bytes per token when the vocabulary allows, else 4.
typedef struct {
    void *ids;                  // uint16_t or uint32_t (width)
    int width;
    size_t n;
    int64_t *doc_start;         // (n_docs) where documents start, ascending: files with text,
    size_t n_docs;              //   and after each separator inside a file
    int64_t *src_start, *src_end;  // (n_sources) each source's ids, [start, end)
} CorpusIds;

// Encodes the corpus with tok, the id of doc_separator (a special token of tok; NULL: none)
// between documents. Bad input in *e: a doc_separator that is not a special token of tok.
int corpus_encode_ids(Corpus *c, const Tokenizer *tok, const char *doc_separator, CorpusIds *out, GtErr *e);
void corpus_ids_free(CorpusIds *x);

typedef struct {
    double val_fraction;        // [0, 1): /val is the last round(n * F) tokens (halves up) ...
    int val_docs;               // ... or, when set, the shortest run of last whole documents holding that many
    const char *doc_separator;  // a special token of the vocabulary placed between documents; NULL: none
} CorpusEncodeOptions;

typedef struct {
    size_t n_tokens, n_train, n_val;
    size_t n_docs;              // documents (files with text, and runs between separators)
    double seconds;
} CorpusEncodeStats;

// Encodes the corpus (corpus_encode_ids) and writes tokens.h5 (docs/formats.md) to out, with
// /sources. Bad input in *e besides corpus_encode_ids's: a docs split that leaves /train
// empty (a single document).
int corpus_encode(Corpus *c, const Tokenizer *tok, const CorpusEncodeOptions *o, const char *out, int force,
                  CorpusEncodeStats *st, GtErr *e);

#endif
