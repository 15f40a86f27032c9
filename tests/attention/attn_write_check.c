// attn_write_check.c - drives io/attention_io.c for the tests (tests/test_attn_*.py), so
// they do not depend on gpt-train. Arguments are key=value.
//
//   attn_write_check write out=F.h5 raw=F.bin [L=2 H=3 T=7 records=5 every=10 first=10
//                    resume=-1 float16=0 seed=1 sleep_ms=0 crash_after=-1 probe=ID,ID,.. V=258]
//       appends `records` records of random causal softmax matrices (rows sum to 1, upper
//       triangle 0) at steps first, first+every, ..., with token losses 0.5 + 0.25 t +
//       step / 1000 (t = 0..T-2); appends the same float32 attention, record by record, to
//       raw (flushed before each HDF5 record, so a reader polling the HDF5 file can always
//       compare). crash_after=K raises SIGKILL after K records.
//       probe= gives the T probe ids (for a file written by gpt-train), V its vocabulary size.
//   attn_write_check model out=F.h5 raw=F.bin [records=3 float16=0]
//       a real GPT2 (random init) recorded through gpt-train's probe_forward after each of
//       `records` weight perturbations; raw gets m->att of a separate full forward, then the
//       mean loss of a forward of the probe's first T-1 tokens against its last T-1.
//   attn_write_check gen out=F.h5 raw=F.bin [P=5 N=10 block=8]
//       a random GPT2 generates N tokens greedily after a P-token prompt through the
//       key/value cache (sliding past block) and saves the generation file; raw gets, for
//       each generated token, the full (L, H, W, W) attention of a gpt2_forward over its
//       window, so the test can compare the matrix rebuilt from the stored rows. The file
//       records the 5 likeliest tokens of each step (--record-top 5).
//   attn_write_check utf8 HEX...      prints utf8_sanitize(bytes) of each argument, one a line
//
// The probe's tokenizer is built by hand: 256 byte tokens, then 256 = "H\xc3\xa9" ("Hé")
// and 257 = "\xe2\x82" (a cut 3-byte character, shown as U+FFFD).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attention_io.h"
#include "utf8.h"
#include "error.h"
#include "generation_io.h"
#include "gpt2.h"
#include "h5util.h"
#include "loop.h"
#include "rng.h"
#include "sampler.h"

static const char *arg(int argc, char **argv, const char *key, const char *def) {
    size_t n = strlen(key);
    for (int i = 2; i < argc; i++)
        if (!strncmp(argv[i], key, n) && argv[i][n] == '=') return argv[i] + n + 1;
    return def;
}
static long long iarg(int argc, char **argv, const char *key, long long def) {
    const char *v = arg(argc, argv, key, NULL);
    return v ? atoll(v) : def;
}

static void make_tokenizer(Tokenizer *tok) {
    memset(tok, 0, sizeof *tok);
    tok->vocab_size = 258;
    tok->n_merges = 2;
    tok->token_offsets = calloc(259, sizeof(int64_t));
    tok->token_bytes = malloc(256 + 5);
    for (int i = 0; i < 256; i++) {
        tok->token_bytes[i] = (uint8_t)i;
        tok->token_offsets[i + 1] = i + 1;
    }
    memcpy(tok->token_bytes + 256, "H\xc3\xa9\xe2\x82", 5);
    tok->token_offsets[257] = 259;
    tok->token_offsets[258] = 261;
}

// The probe: "Hello, w" bytes, then the two multi-byte tokens, a lone 0xC3, more bytes.
static const int32_t PROBE[] = {'H', 'e', 'l', 'l', 'o', ',', ' ', 'w', 256, 257, 0xC3, '!', ' ', 'x', 'y', 'z'};

static void random_att(float *att, int L, int H, int T, uint64_t key) {
    size_t k = 0;
    for (int lh = 0; lh < L * H; lh++)
        for (int i = 0; i < T; i++) {
            float *row = att + ((size_t)lh * T + i) * T;
            double sum = 0;
            for (int j = 0; j < T; j++) {
                // skewed weights so rows have a visible structure, but never zero
                float u = rng_uniform_at(key, k++);
                row[j] = j <= i ? u * u * u + 1e-3f : 0.0f;
                sum += row[j];
            }
            for (int j = 0; j <= i; j++) row[j] = (float)(row[j] / sum);
        }
}

static void append_raw(const char *path, const float *x, size_t n) {
    FILE *f = gt_fopen(path, "ab", "raw dump");
    if (fwrite(x, sizeof(float), n, f) != n) gt_fail(2, "short write to %s", path);
    fclose(f);
}

static int cmd_write(int argc, char **argv) {
    const char *out = arg(argc, argv, "out", NULL), *raw = arg(argc, argv, "raw", NULL);
    if (!out || !raw) gt_fail_usage("write: out= and raw= are required");
    int L = (int)iarg(argc, argv, "L", 2), H = (int)iarg(argc, argv, "H", 3), T = (int)iarg(argc, argv, "T", 7);
    long long records = iarg(argc, argv, "records", 5), every = iarg(argc, argv, "every", 10);
    long long first = iarg(argc, argv, "first", every), resume = iarg(argc, argv, "resume", -1);
    long long seed = iarg(argc, argv, "seed", 1), sleep_ms = iarg(argc, argv, "sleep_ms", 0);
    long long crash_after = iarg(argc, argv, "crash_after", -1);
    int T_probe = (int)(sizeof PROBE / sizeof PROBE[0]);
    int32_t probe[64];
    if (T > 64) gt_fail_usage("write: T=%d, at most 64", T);
    for (int t = 0; t < T; t++) probe[t] = PROBE[t % T_probe];
    const char *ids = arg(argc, argv, "probe", NULL);
    for (int t = 0; ids && t < T; t++) {
        char *end;
        probe[t] = (int32_t)strtol(ids, &end, 10);
        ids = *end == ',' ? end + 1 : NULL;
        if (!ids && t < T - 1) gt_fail_usage("write: probe= has fewer than T=%d ids", T);
    }
    GPTConfig c = {.vocab_size = (int)iarg(argc, argv, "V", 258), .block_size = (int)iarg(argc, argv, "block", 16), .n_layer = L, .n_head = H,
                   .n_embd = 4 * H, .dropout = 0};
    Tokenizer tok;
    make_tokenizer(&tok);
    AttnWriter *w = attn_writer_open(out, &c, (int)every, probe, T, &tok, (int)iarg(argc, argv, "float16", 0), resume);
    size_t n = (size_t)L * H * T * T;
    float *att = malloc(n * sizeof(float)), token_loss[64];
    for (long long r = 0; r < records; r++) {
        long long step = first + r * every;
        random_att(att, L, H, T, rng_site_key((uint64_t)seed, (uint64_t)step));
        for (int t = 0; t + 1 < T; t++) token_loss[t] = 0.5f + 0.25f * (float)t + (float)step / 1000.0f;
        append_raw(raw, att, n);
        attn_append(w, step, 10.0f / (float)(step + 1), att, token_loss);
        if (crash_after >= 0 && r + 1 == crash_after) raise(SIGKILL);
        if (sleep_ms > 0) usleep((useconds_t)sleep_ms * 1000);
    }
    printf("records %lld\n", attn_writer_count(w));
    attn_writer_close(w);
    free(att);
    return 0;
}

static int cmd_model(int argc, char **argv) {
    const char *out = arg(argc, argv, "out", NULL), *raw = arg(argc, argv, "raw", NULL);
    if (!out || !raw) gt_fail_usage("model: out= and raw= are required");
    long long records = iarg(argc, argv, "records", 3);
    GPTConfig c = {.vocab_size = 258, .block_size = 16, .n_layer = 2, .n_head = 2, .n_embd = 16, .dropout = 0.1f};
    GPT2 m;
    gpt2_build(&m, &c);
    gpt2_init_weights(&m, 7);
    gpt2_alloc_activations(&m, 4, 16);
    Tokenizer tok;
    make_tokenizer(&tok);
    int T = 12;
    AttnWriter *w = attn_writer_open(out, &c, 1, PROBE, T, &tok, (int)iarg(argc, argv, "float16", 0), -1);
    int probe[16];
    for (int t = 0; t < T; t++) probe[t] = PROBE[t];
    float token_loss[16], *scratch = malloc((size_t)T * c.vocab_size * sizeof(float));
    for (long long r = 0; r < records; r++) {
        // stand-in for an optimizer step: make the weights (and so the attention) change a lot
        uint64_t key = rng_site_key(99, (uint64_t)r);
        for (size_t i = 0; i < m.num_params; i++) m.params[i] += 0.3f * (rng_uniform_at(key, i) - 0.5f);
        // a training-mode forward before, like the trainer's, must not leak into the record
        int batch[4 * 16];
        for (int i = 0; i < 4 * 16; i++) batch[i] = (int)(rng_at(key, 100000 + (uint64_t)i) % 258);
        gpt2_forward(&m, batch, batch, 4, 16, 1, 5);
        float loss = m.mean_loss;
        probe_forward(&m, probe, T, token_loss, scratch);
        attn_append(w, r + 1, loss, m.att, token_loss);
        gpt2_forward(&m, probe, NULL, 1, T, 0, 0);
        append_raw(raw, m.att, (size_t)c.n_layer * c.n_head * T * T);
        // the token losses' mean, from the engine's own loss of the shifted probe
        float mean = gpt2_forward(&m, probe, probe + 1, 1, T - 1, 0, 0);
        append_raw(raw, &mean, 1);
    }
    free(scratch);
    attn_writer_close(w);
    gpt2_free(&m);
    return 0;
}

static int cmd_gen(int argc, char **argv) {
    const char *out = arg(argc, argv, "out", NULL), *raw = arg(argc, argv, "raw", NULL);
    if (!out || !raw) gt_fail_usage("gen: out= and raw= are required");
    int P = (int)iarg(argc, argv, "P", 5), N = (int)iarg(argc, argv, "N", 10);
    GPTConfig c = {.vocab_size = 258, .block_size = (int)iarg(argc, argv, "block", 8), .n_layer = 2, .n_head = 2,
                   .n_embd = 16, .dropout = 0};
    GPT2 m;
    gpt2_build(&m, &c);
    gpt2_init_weights(&m, 5);
    uint64_t key = rng_site_key(17, 0);
    for (size_t i = 0; i < m.num_params; i++) m.params[i] += 0.6f * (rng_uniform_at(key, i) - 0.5f);
    gpt2_alloc_activations(&m, 1, c.block_size);
    Tokenizer tok;
    make_tokenizer(&tok);
    int prompt[64];
    for (int i = 0; i < P; i++) prompt[i] = PROBE[i % 16];
    Generator g;
    generator_start(&g, &m, prompt, (size_t)P, 1);
    size_t dropped = g.start;
    int32_t kept[64];
    for (int i = (int)dropped; i < P; i++) kept[i - (int)dropped] = prompt[i];
    GenMeta meta = {"Hello", 0.0f, 0, 1.0f, 1337, "none.h5", 42, (long long)dropped, 5};
    GtErr e = GT_ERR_INIT;
    GenWriter *gw = gen_writer_open_e(out, &c, &tok, &meta, kept, P - (int)dropped, g.kv.att, &e);
    if (!gw) gt_err_exit(&e);
    size_t LHT = (size_t)c.n_layer * c.n_head * c.block_size;
    float *row = malloc(LHT * sizeof(float));
    float probs[258], top_p[5];
    int order[258];
    int32_t top_id[5];
    SampleParams sp = {0.0f, 0, 1.0f};
    for (int i = 0; i < N; i++) {
        kv_att_row(&g.kv, g.kv.last_fed - 1, row);
        int id = sample_token(g.kv.logits, c.vocab_size, &sp, NULL, probs, order);
        top_tokens(g.kv.logits, c.vocab_size, 5, top_id, top_p);
        if (gen_writer_token_e(gw, id, row, (int64_t)(g.start - dropped), top_id, top_p, &e)) gt_err_exit(&e);
        int W = (int)(g.n - g.start);
        gpt2_forward(&m, g.ids + g.start, NULL, 1, W, 0, 0);
        append_raw(raw, m.att, (size_t)c.n_layer * c.n_head * W * W);
        if (i + 1 < N) generator_push(&g, id);
    }
    if (gen_writer_close_e(gw, "", &e)) gt_err_exit(&e);
    printf("slides %lld\n", g.slides);
    generator_free(&g);
    free(row);
    gpt2_free(&m);
    return 0;
}

static int cmd_utf8(int argc, char **argv) {
    for (int i = 2; i < argc; i++) {
        size_t n = strlen(argv[i]) / 2;
        uint8_t *b = malloc(n + 1);
        for (size_t k = 0; k < n; k++) {
            unsigned v;
            sscanf(argv[i] + 2 * k, "%2x", &v);
            b[k] = (uint8_t)v;
        }
        char *s = utf8_sanitize(b, n);
        printf("%s\n", s);
        free(s);
        free(b);
    }
    return 0;
}

int main(int argc, char **argv) {
    gt_set_progname("attn_write_check");
    h5_quiet();
    if (argc < 2) gt_fail_usage("usage: attn_write_check write|model|utf8 ...");
    if (!strcmp(argv[1], "write")) return cmd_write(argc, argv);
    if (!strcmp(argv[1], "model")) return cmd_model(argc, argv);
    if (!strcmp(argv[1], "gen")) return cmd_gen(argc, argv);
    if (!strcmp(argv[1], "utf8")) return cmd_utf8(argc, argv);
    gt_fail_usage("unknown command '%s'", argv[1]);
}
