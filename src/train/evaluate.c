// evaluate.c - see evaluate.h.
#include "evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "error.h"

EvalResult eval_split(GPT2 *m, TokenCache *split, size_t first, size_t count, int B, int T, const int *token_len,
                      int *inputs, int *targets, float *per_token) {
    uint32_t *win = gt_malloc(((size_t)T + 1) * sizeof *win, "eval window");
    // The sum of per-window mean losses, windows and bytes: every window has T targets, so the
    // mean of the window means is the mean per token. A window that cannot be read counts as
    // zeros here; the caller's agreement point reports the failure.
    double acc[3] = {0, 0, 0};
    for (size_t w0 = 0; w0 < count; w0 += (size_t)B) {
        int nb = (int)(count - w0 < (size_t)B ? count - w0 : (size_t)B);
        for (int b = 0; b < nb; b++) {
            token_cache_read(split, (first + w0 + (size_t)b) * (size_t)T, (size_t)T + 1, win);
            for (int t = 0; t < T; t++) {
                inputs[b * T + t] = (int)win[t];
                targets[b * T + t] = (int)win[t + 1];
                if (token_len) acc[2] += token_len[win[t + 1]];
            }
        }
        float loss = gpt2_forward(m, inputs, targets, nb, T, 0, 0);
        acc[0] += (double)loss * nb;
        acc[1] += nb;
        if (per_token) memcpy(per_token + w0 * (size_t)T, gpt2_losses(m), (size_t)nb * (size_t)T * sizeof(float));
    }
    free(win);
    comm_sum(acc, 3, "eval");
    return (EvalResult){acc[0] / acc[1], acc[1] * T, acc[2]};
}

double eval_bpb(const EvalResult *r) { return r->bytes > 0 ? r->loss * r->tokens / (log(2.0) * r->bytes) : NAN; }

int *eval_token_bytes(const Tokenizer *tok) {
    int *len = gt_malloc((size_t)tok->vocab_size * sizeof *len, "token lengths");
    int first_special = 256 + tok->n_merges;
    for (int i = 0; i < tok->vocab_size; i++)
        len[i] = i >= first_special ? 0 : (int)(tok->token_offsets[i + 1] - tok->token_offsets[i]);
    return len;
}
