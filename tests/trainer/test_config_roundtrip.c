// test_config_roundtrip.c - gpt-train's printed configuration is a --config file that gives
// back exactly the settings it was printed from (docs/training.md, config files).
//
// For seeded random settings -- paths of any bytes but NUL, probe texts of any UTF-8 with
// quotes, '#', backslashes, newlines, tabs, control characters and blanks at either end,
// and numbers anywhere in their ranges -- config_print's text, read back through
// `--config`, must reproduce every field bit for bit, and print the same text again.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "rng.h"

static uint64_t next(Rng *r) { return rng_next(r); }

// Bytes 1..255, biased towards the ones the file syntax gives a meaning to.
static void random_bytes(Rng *r, char *s, int n) {
    static const char special[] = "\"'#\\ \t\n\r=";
    for (int i = 0; i < n; i++) {
        uint64_t k = next(r) % 4;
        s[i] = k == 0 ? special[next(r) % (sizeof special - 1)] : (char)(1 + next(r) % 255);
    }
    s[n] = '\0';
}

// Valid UTF-8: ASCII (controls included), C1 controls, 2-, 3- and 4-byte characters.
static void random_text(Rng *r, char *s, int n) {
    static const char *pieces[] = {"\"", "'", "#", "\\", " ", "\t", "\n", "\r", "\x01", "\x7f", "\xc2\x85",
                                   "\xc3\xa9", "\xe2\x80\xa8", "\xe4\xbd\xa0", "\xf0\x9f\x99\x82", "\\n", "\\x41", "a"};
    int k = 0;
    while (k < n) {
        const char *p = pieces[next(r) % (sizeof pieces / sizeof pieces[0])];
        if (p[0] == 'a') p = (const char[]){(char)(' ' + next(r) % 95), 0};
        size_t l = strlen(p);
        if (k + (int)l > n) break;
        memcpy(s + k, p, l);
        k += (int)l;
    }
    s[k] = '\0';
    if (k == 0) strcpy(s, "x");
}

static char *printed(const TrainConfig *c, const char *path) {
    FILE *f = fopen(path, "w");
    config_print(c, f);
    fclose(f);
    f = fopen(path, "r");
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strdup(buf);
}

static int same_str(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

int main(void) {
    char conf[] = "/tmp/gt-config-XXXXXX";
    int fd = mkstemp(conf);
    if (fd < 0) return perror("mkstemp"), 1;
    close(fd);
    Rng r;
    rng_seed(&r, 20240611);
    int failures = 0, trials = 3000;
    for (int t = 0; t < trials && failures < 5; t++) {
        char data[64], out[64], prompt[96], lr[32], seed[32], spike[32];
        random_bytes(&r, data, 1 + (int)(next(&r) % 40));
        random_bytes(&r, out, 1 + (int)(next(&r) % 40));
        random_text(&r, prompt, 1 + (int)(next(&r) % 80));
        snprintf(lr, sizeof lr, "%.17g", 10.0 * (double)(next(&r) >> 11) / 9007199254740992.0);
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)(next(&r) % 9200000000000000000ULL));
        snprintf(spike, sizeof spike, "%.17g", t % 7 ? 1.0 + (double)(next(&r) % 1000000) / 7.0 : 0.0);
        char *argv1[] = {"gpt-train", "--data", data, "--out", out, "--attn-prompt", prompt, "--lr", lr,
                         "--seed", seed, "--loss-spike", spike, "--pattern", prompt, "--check-sync"};
        TrainConfig a, b;
        char err[4096], *help = NULL;
        if (config_parse(&a, 16, argv1, err, sizeof err, &help) != 0) {
            printf("FAIL trial %d: the settings themselves were refused: %s\n", t, err);
            failures++;
            continue;
        }
        char *text = printed(&a, conf);
        char *argv2[] = {"gpt-train", "--config", conf};
        if (config_parse(&b, 3, argv2, err, sizeof err, &help) != 0) {
            printf("FAIL trial %d: the printed configuration was refused: %s\n--- printed:\n%s", t, err, text);
            failures++;
        } else {
            int ok = a.data.n == 1 && b.data.n == 1 && same_str(a.data.v[0], b.data.v[0]) && same_str(a.out, b.out) && same_str(a.attn_prompt, b.attn_prompt) &&
                     same_str(a.pattern, b.pattern) && a.lr == b.lr && a.seed == b.seed &&
                     a.loss_spike == b.loss_spike && a.check_sync == b.check_sync && a.min_lr == b.min_lr &&
                     a.n_layer == b.n_layer && same_str(a.attn_dtype, b.attn_dtype);
            char *again = printed(&b, conf);
            if (!ok || strcmp(text, again) != 0) {
                printf("FAIL trial %d: the printed configuration reads back differently\n--- printed:\n%s--- again:\n%s",
                       t, text, again);
                failures++;
            }
            free(again);
            config_free(&b);
        }
        free(text);
        config_free(&a);
    }
    unlink(conf);
    printf("config round trip: %d trials, %d failures\n", trials, failures);
    return failures ? 1 : 0;
}
