// fuzz_h5load.c - libFuzzer harness for the HDF5 loaders: the input is written to a file and
// loaded, in turn, as vocab.h5 (vocab_load), tokens.h5 (tokens_open + tokens_read), a
// checkpoint (ckpt_load_model + the AdamW moments, what gpt-sample and --resume read) and an
// attention.h5 being resumed (attn_writer_open with resume_step, then one appended record).
//
// Each load must either succeed with a consistent result (checked below) or end through
// gt_fail with status 1 (bad input file) or 2 (a library call failed on the damaged file);
// fuzz_common.h turns that exit into a return. Signals, sanitizer reports and failed checks
// are bugs.
//
// The seeds (tests/fuzz/corpus/fuzz_h5load/) are small real files made by this harness's
// own writers: run it with GT_FUZZ_MAKE_SEEDS=DIR to (re)make them, matching the fixed model
// below, so mutations reach deep into each loader instead of stopping at a shape check.
#include <hdf5.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attention_io.h"
#include "checkpoint.h"
#include "fuzz_common.h"
#include "gpt2.h"
#include "h5util.h"
#include "tokenizer.h"
#include "tokens_io.h"
#include "vocab_io.h"

static Tokenizer tok;                                  // fixed vocabulary of the seeds
static GPTConfig cfg = {0, 8, 1, 2, 8, 0.0f};          // V set from tok; T=8, L=1, NH=2, C=8
static const int32_t probe[8] = {84, 104, 101, 32, 102, 111, 120, 46};  // "The fox."
static char file_path[256];

static const char text[] = "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs.\n"
                           "Café naïve — Привет мир 你好 🙂 12345\n";

// Closes whatever a loader left open when it ended through gt_fail, so the next input's file
// (same name) is not mistaken for the still-open previous one.
static void close_all_h5(void) {
    ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (n <= 0) return;
    hid_t *ids = malloc((size_t)n * sizeof *ids);
    n = H5Fget_obj_ids(H5F_OBJ_ALL, H5F_OBJ_ALL, (size_t)n, ids);
    for (ssize_t pass = 0; pass < 2; pass++)  // objects first, files last
        for (ssize_t i = 0; i < n; i++) {
            H5I_type_t t = H5Iget_type(ids[i]);
            if (t == H5I_BADID) continue;
            if (pass == 0 && t == H5I_DATASET) H5Dclose(ids[i]);
            if (pass == 0 && t == H5I_GROUP) H5Gclose(ids[i]);
            if (pass == 0 && t == H5I_DATATYPE) H5Tclose(ids[i]);
            if (pass == 0 && t == H5I_ATTR) H5Aclose(ids[i]);
            if (pass == 1 && t == H5I_FILE) H5Fclose(ids[i]);
        }
    free(ids);
}

static void expect_clean_end(const char *loader) {
    FUZZ_ASSERT(fuzz_status == -1 || fuzz_status == 1 || fuzz_status == 2, "%s ended with status %d", loader,
                fuzz_status);
    close_all_h5();
}

static void load_vocab(void) {
    Tokenizer t;
    memset(&t, 0, sizeof t);
    FUZZ_TRY() {
        vocab_load(file_path, &t, "--vocab");
        FUZZ_ASSERT(t.vocab_size == 256 + t.n_merges + t.n_special, "vocab %d != 256 + %d + %d", t.vocab_size,
                    t.n_merges, t.n_special);
        for (int i = 0; i < t.vocab_size; i++) {
            size_t len;
            FUZZ_ASSERT(tokenizer_token(&t, (uint32_t)i, &len) != NULL, "token %d of a loaded vocab refused", i);
        }
        uint32_t *ids = NULL;
        size_t n = 0, cap = 0;
        tokenizer_encode(&t, text, sizeof text - 1, &ids, &n, &cap);
        for (size_t i = 0; i < n; i++) FUZZ_ASSERT(ids[i] < (uint32_t)t.vocab_size, "encode gave id %u", ids[i]);
        free(tokenizer_decode(&t, ids, n, NULL));
        free(ids);
        tokenizer_free(&t);
    }
    FUZZ_END();
    expect_clean_end("vocab_load");
}

static void load_tokens(void) {
    TokensInfo info;
    Tokenizer t;
    memset(&info, 0, sizeof info);
    memset(&t, 0, sizeof t);
    FUZZ_TRY() {
        hid_t f = tokens_open(file_path, &info, &t, "--data");
        FUZZ_ASSERT(info.vocab_size == t.vocab_size, "tokens.h5 vocab %d, its tokenizer %d", info.vocab_size,
                    t.vocab_size);
        const char *split[2] = {"train", "val"};
        size_t len[2] = {info.n_train, info.n_val};
        for (int s = 0; s < 2; s++) {
            size_t n = len[s] < 4096 ? len[s] : 4096;  // both ends, bounded
            uint32_t *ids = malloc((n ? n : 1) * sizeof *ids);
            tokens_read(f, split[s], 0, n, ids, file_path);
            for (size_t i = 0; i < n; i++) FUZZ_ASSERT(ids[i] < (uint32_t)info.vocab_size, "id %u read", ids[i]);
            tokens_read(f, split[s], len[s] - n, n, ids, file_path);
            free(ids);
        }
        H5Fclose(f);
        tokens_info_free(&info);
        tokenizer_free(&t);
    }
    FUZZ_END();
    expect_clean_end("tokens_open");
}

static void load_checkpoint(void) {
    GPT2 m;
    memset(&m, 0, sizeof m);
    FUZZ_TRY() {
        ckpt_load_model(file_path, "--checkpoint", &m);
        char err[256];
        FUZZ_ASSERT(gpt2_config_check(&m.config, err, sizeof err), "loaded config invalid: %s", err);
        hid_t f = ckpt_open(file_path, "--checkpoint");
        float *buf = malloc(m.num_params * sizeof(float));
        ckpt_read_tensors(f, "optimizer/m", &m, buf, file_path);
        ckpt_read_tensors(f, "optimizer/v", &m, buf, file_path);
        free(buf);
        H5Fclose(f);
        // A small forward pass: the loaded shapes must really be usable.
        if (m.config.block_size <= 64 && m.num_params < (1u << 22)) {
            gpt2_alloc_activations(&m, 1, m.config.block_size);
            int in[64] = {0};
            gpt2_forward(&m, in, in, 1, m.config.block_size, 0, 1);
        }
        gpt2_free(&m);
    }
    FUZZ_END();
    expect_clean_end("ckpt_load_model");
}

static void load_attention(void) {
    FUZZ_TRY() {
        AttnWriter *w = attn_writer_open(file_path, &cfg, 1, probe, cfg.block_size, &tok, 0, 5);
        long long n = attn_writer_count(w);
        FUZZ_ASSERT(n >= 0, "record count %lld", n);
        size_t rec = (size_t)cfg.n_layer * cfg.n_head * cfg.block_size * cfg.block_size;
        float *att = calloc(rec, sizeof(float));
        attn_append(w, 6, 1.0f, att, att);  // zeros for the token losses too
        FUZZ_ASSERT(attn_writer_count(w) == n + 1, "count %lld after appending to %lld", attn_writer_count(w), n);
        free(att);
        attn_writer_close(w);
    }
    FUZZ_END();
    expect_clean_end("attn_writer_open");
}

// Seeds: one file of each kind, written by the project's own writers.
static void make_seeds(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/vocab.h5", dir);
    vocab_save(p, &tok, 1);

    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    for (int rep = 0; rep < 4; rep++) tokenizer_encode(&tok, text, sizeof text - 1, &ids, &n, &cap);
    snprintf(p, sizeof p, "%s/tokens.h5", dir);
    tokens_save(p, &tok, ids, n, 0.25, "fuzz.txt", (int64_t)(4 * (sizeof text - 1)),
                "0000000000000000000000000000000000000000000000000000000000000000", 1);
    free(ids);

    GPT2 m;
    memset(&m, 0, sizeof m);
    gpt2_build(&m, &cfg);
    gpt2_init_weights(&m, 1);
    char tmp[600];
    snprintf(p, sizeof p, "%s/ckpt.h5", dir);
    hid_t f = h5_create_tmp(p, GT_FORMAT_CHECKPOINT, tmp, sizeof tmp);
    ckpt_write_model_config(f, &cfg);
    ckpt_write_tensors(f, "model", &m, m.params);
    ckpt_write_tensors(f, "optimizer/m", &m, m.params);
    ckpt_write_tensors(f, "optimizer/v", &m, m.params);
    vocab_write_group(f, &tok);
    h5_commit(f, tmp, p);

    snprintf(p, sizeof p, "%s/attention.h5", dir);
    AttnWriter *w = attn_writer_open(p, &cfg, 1, probe, cfg.block_size, &tok, 0, -1);
    gpt2_alloc_activations(&m, 1, cfg.block_size);
    float token_loss[64] = {0};
    for (int s = 1; s <= 3; s++) {
        gpt2_forward(&m, probe, NULL, 1, cfg.block_size, 0, 0);
        attn_append(w, s, 5.0f - s, m.att, token_loss);
    }
    attn_writer_close(w);
    gpt2_free(&m);
}

static const char *const specials[] = {"<|endoftext|>"};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    h5_quiet();
    tokenizer_train(&tok, text, sizeof text - 1, 256 + 24 + 1, tokenizer_pattern("llama3"), (char *const *)specials, 1,
                    1, 0);
    cfg.vocab_size = tok.vocab_size;
    const char *tmpdir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(file_path, sizeof file_path, "%s/gt-fuzz-h5load-%ld.h5", tmpdir, (long)getpid());
    const char *seeds = getenv("GT_FUZZ_MAKE_SEEDS");
    if (seeds) {
        mkdir(seeds, 0755);
        make_seeds(seeds);
        fprintf(stderr, "fuzz_h5load: seeds written to %s\n", seeds);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(file_path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    load_vocab();
    load_tokens();
    load_checkpoint();
    load_attention();  // last: it appends to the file
    unlink(file_path);
    return 0;
}
