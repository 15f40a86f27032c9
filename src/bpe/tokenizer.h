// tokenizer.h - byte-level BPE with a PCRE2 split pattern (docs/formats.md, the /tokenizer group).
// Ids 0..255 are the bytes, 256+i is merge i, specials follow the merges.
#ifndef GT_TOKENIZER_H
#define GT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct {
    char *pattern;            // the split regex itself (names like "llama3" resolved)
    int vocab_size;           // 256 + n_merges + n_special
    int n_merges;
    int32_t *merges;          // (n_merges, 2): merge i makes 256+i from (left, right)
    uint8_t *token_bytes;     // bytes of every token, concatenated
    int64_t *token_offsets;   // (vocab_size + 1)
    int n_special;
    char **special;           // (n_special) UTF-8 strings; id = 256 + n_merges + i
    void *priv;               // compiled regex (JIT), merge lookup table
} Tokenizer;

// Resolves "llama3" | "gpt4" | "gpt2" to its regex; anything else is returned as is.
const char *tokenizer_pattern(const char *name_or_regex);

// Same, but a bare word that is not a known name ("llama4") fails (exit 1, naming `flag`)
// as an unknown pattern name instead of being taken as a regex.
const char *tokenizer_pattern_checked(const char *name_or_regex, const char *flag);

// Trains by the deterministic rule of docs/tokenizer.md on `text` (valid UTF-8, `len` bytes).
// Fails (exit 1, naming `flag_for_msg`) on an invalid regex, showing PCRE2's message and offset.
void tokenizer_train(Tokenizer *tok, const char *text, size_t len, int vocab_size, const char *pattern,
                     char *const *special, int n_special, int threads, int verbose);
// The same on a text that arrives block by block (a corpus of many files, docs/tokenizer.md):
// memory grows with the distinct chunks, not with the text. bpe_counts_new checks the
// pattern (exit 1 naming --pattern when invalid) and the special tokens (bad input in *e).
typedef struct BpeCounts BpeCounts;
BpeCounts *bpe_counts_new(const char *pattern, char *const *special, int n_special, int threads, GtErr *e);
// Counts the chunks of text[0..len) (valid UTF-8) and returns how far it got: unless final,
// the undecided tail (where more text could change a chunk) is left, to come again at the
// front of the next call, as with tokenizer_encode_stream. final ends a document: no chunk
// spans two documents. offset: where text[0] is in the whole input (for messages, as
// tokenizer_set_input_offset).
size_t bpe_counts_add(BpeCounts *c, const char *text, size_t len, size_t offset, int final);
// The merges by the training rule, into tok (prepared); frees c, also on failure.
int bpe_counts_train(BpeCounts *c, Tokenizer *tok, int vocab_size, int verbose, GtErr *e);
void bpe_counts_free(BpeCounts *c);
// Must be called after filling the public fields by hand or from a file: compiles the
// regex and builds lookup tables.
void tokenizer_prepare(Tokenizer *tok);

// Appends the ids of text[0..len) to *ids (grown with realloc; *n, *cap updated).
// Special token strings in the text map to their ids. Bytes that are not valid UTF-8 are
// encoded as their byte tokens (so decode gives them back); they cut the text like a special.
void tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, uint32_t **ids, size_t *n, size_t *cap);
// Where two tokenizers differ, in a few words ("merge 17 (token 273) is (101, 32) against
// (32, 116)", a's first), into buf; NULL when they are the same: the same split pattern,
// merges and special tokens give every token the same id.
const char *tokenizer_difference(const Tokenizer *a, const Tokenizer *b, char *buf, size_t n);
// The id of the special token s, or -1 when it is not one.
int tokenizer_special_id(const Tokenizer *tok, const char *s);
// Bytes of one token (not NUL-terminated); NULL for an invalid id.
const uint8_t *tokenizer_token(const Tokenizer *tok, uint32_t id, size_t *len);
// Decodes ids into a malloc'd, NUL-terminated byte string (may be invalid UTF-8 if ids
// split a character); *len set when non-NULL.
char *tokenizer_decode(const Tokenizer *tok, const uint32_t *ids, size_t n, size_t *len);
void tokenizer_free(Tokenizer *tok);

// Streaming: encodes text[start..len) and returns how far it got. Unless `final`, the last
// few KiB (where more text could change the split) are left: call again with them at the
// front of the next block (start = 0), or with more text appended. text[0..start) is context
// only. Encoding in blocks this way gives exactly the ids of encoding the whole text at once.
size_t tokenizer_encode_stream(const Tokenizer *tok, const char *text, size_t len, size_t start, int final,
                               uint32_t **ids, size_t *n, size_t *cap);
// Where text[0] of the next encode call sits in the whole input, for the one message of a
// split pattern that PCRE2 gives up on (its match, depth or heap limit, reached by a custom
// pattern that backtracks too much): exit 1 naming the pattern and the input's byte offset.
void tokenizer_set_input_offset(const Tokenizer *tok, size_t offset);
// Threads used by tokenizer_encode/_stream (default 1). Splits at newlines with built-in
// patterns only; any other regex encodes on one thread. Not safe to encode with one
// Tokenizer from several threads at once (it keeps a per-thread word cache).
void tokenizer_set_threads(Tokenizer *tok, int threads);


#endif
