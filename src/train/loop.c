// loop.c - see loop.h.
#include "loop.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "evaluate.h"
#include "layers.h"
#include "resume.h"
#include "rng.h"
#include "signals.h"
#include "watchdog.h"

static uint64_t dropout_key(uint64_t seed, long long step, int rank, int micro) {
    return rng_site_key(rng_site_key(rng_site_key(seed ^ 0xD809D809ULL, (uint64_t)step), (uint64_t)rank),
                        (uint64_t)micro);
}

static uint64_t params_checksum(const float *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;  // FNV-1a over the bits: any difference shows
    const uint32_t *u = (const uint32_t *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ u[i]) * 1099511628211ULL;
    return h;
}

static void check_sync(const Run *r, const GPT2 *m, long long step) {
    uint64_t h = params_checksum(m->params, m->num_params), lo = h, hi = h;
    uint64_t *all = gt_malloc((size_t)r->w->size * sizeof *all, "checksums");
    comm_allgather(&h, all, sizeof h, "--check-sync");
    for (int i = 0; i < r->w->size; i++) {
        if (all[i] < lo) lo = all[i];
        if (all[i] > hi) hi = all[i];
    }
    free(all);
    if (lo != hi) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "--check-sync: weights differ across ranks after step %lld (parameter checksums %016llx to "
                 "%016llx); the gradient averaging is broken",
                 step, (unsigned long long)lo, (unsigned long long)hi);
        comm_agree(msg, GT_EXIT_RUNTIME);
    }
}

// Where a bad step went wrong, for its message: the first tensor (nanoGPT name, with its
// block) whose averaged gradient holds a NaN or Inf; "" when every gradient is finite.
static void first_bad_tensor(const GPT2 *m, char *out, size_t n) {
    *out = '\0';
    for (int i = 0; i < m->n_specs; i++) {
        const float *g = m->grads + m->specs[i].offset;
        for (size_t j = 0; j < m->specs[i].numel; j++)
            if (!isfinite(g[j])) {
                if (m->specs[i].layer >= 0)
                    snprintf(out, n, " (first non-finite gradient: layer %d, %s)", m->specs[i].layer, m->specs[i].name);
                else
                    snprintf(out, n, " (first non-finite gradient: %s)", m->specs[i].name);
                return;
            }
    }
}

// For an exploding loss, where the gradient is: the tensor with the largest share of the
// squared gradient norm (clipping scales every tensor alike, so shares survive it).
static void largest_grad_tensor(const GPT2 *m, char *out, size_t n) {
    double total = 0, best = -1;
    int bi = 0;
    for (int i = 0; i < m->n_specs; i++) {
        const float *g = m->grads + m->specs[i].offset;
        double s = 0;
        for (size_t j = 0; j < m->specs[i].numel; j++) s += (double)g[j] * g[j];
        total += s;
        if (s > best) best = s, bi = i;
    }
    const ParamSpec *sp = &m->specs[bi];
    char layer[32] = "";
    if (sp->layer >= 0) snprintf(layer, sizeof layer, "layer %d, ", sp->layer);
    snprintf(out, n, " (largest gradient: %s%s, %.0f%% of the squared norm)", layer, sp->name,
             total > 0 ? 100.0 * best / total : 0.0);
}

// The mean of recent good losses that a spike is measured against: the plain mean of the
// first steps, then an exponential one with a memory of about SPIKE_MEMORY steps.
#define SPIKE_MEMORY 10
// --skip-bad-steps gives up after this many bad steps in a row: the weights themselves
// have diverged and skipping cannot bring them back.
#define GT_MAX_BAD_IN_ROW 20

static void recent_loss_add(TrainState *st, double loss) {
    long long n = st->recent_n < SPIKE_MEMORY ? st->recent_n + 1 : SPIKE_MEMORY;
    st->recent_loss += (loss - st->recent_loss) / (double)n;
    st->recent_n++;
}

// Rank 0, when a bad step stops the run: the message, naming the checkpoint to resume from.
// A checkpoint is known to be good once a later good step was computed on its weights
// (r->good_ckpt); the last one written may not be: the bad step ran on its weights. When
// --skip-bad-steps gives up, every step of the streak ran on the weights of the last
// checkpoint, if it is not known good: it is renamed aside (*.diverged) and RUN/latest names
// the good one, so that --resume does not fail again at once.
static void stop_message(Run *r, long long k, const char *what, const char *where, GtErr *out) {
    const TrainConfig *c = &r->cfg;
    char msg[8192];
    size_t n = (size_t)snprintf(msg, sizeof msg, "step %lld: %s%s; ", k, what, where);
    int gave_up = c->skip_bad_steps;
    if (gave_up)
        n += (size_t)snprintf(msg + n, sizeof msg - n, "%lld bad steps in a row: the weights themselves have diverged, "
                              "skipping cannot help; ", r->st.bad_in_row);
    n += (size_t)snprintf(msg + n, sizeof msg - n, "stopping without saving. ");
    int proven = *r->last_ckpt && strcmp(r->last_ckpt, r->good_ckpt) != 0;  // not known good
    if (!*r->last_ckpt) {
        snprintf(msg + n, sizeof msg - n, "No checkpoint was written yet; try a lower --lr.");
    } else if (!proven) {
        snprintf(msg + n, sizeof msg - n, "The last good checkpoint is %s (step %lld): resume from it with --resume, "
                 "perhaps with a lower --lr%s.", r->last_ckpt, r->last_ckpt_step, gave_up ? "" : " or --skip-bad-steps");
    } else if (!gave_up) {
        n += (size_t)snprintf(msg + n, sizeof msg - n, "The last checkpoint is %s (step %lld): resume from it with "
                              "--resume, perhaps with a lower --lr or --skip-bad-steps", r->last_ckpt, r->last_ckpt_step);
        if (*r->good_ckpt)
            snprintf(msg + n, sizeof msg - n, "; this step ran on its weights, so should it fail the same way, move it "
                     "out of the run directory: %s (step %lld) is the last one whose weights trained well.",
                     r->good_ckpt, r->good_step);
        else
            snprintf(msg + n, sizeof msg - n, ".");
    } else if (!*r->good_ckpt) {
        snprintf(msg + n, sizeof msg - n, "The last checkpoint, %s (step %lld), holds the weights every step of this "
                 "streak failed on, and no earlier one of this run trained well: start again with a lower --lr.",
                 r->last_ckpt, r->last_ckpt_step);
    } else {
        char aside[PATHLEN + 16];
        snprintf(aside, sizeof aside, "%s.diverged", r->last_ckpt);
        GtErr e = GT_ERR_INIT;
        if (rename(r->last_ckpt, aside) != 0)
            gt_err(&e, GT_EXIT_RUNTIME, "renaming it failed: %s", strerror(errno));
        else
            train_state_set_latest_e(r->cfg.out, r->good_ckpt, &e);
        if (gt_failed(&e))
            snprintf(msg + n, sizeof msg - n, "The last checkpoint, %s (step %lld), holds the weights every step of "
                     "this streak failed on (%s): move it out of the run directory, then --resume from %s (step %lld), "
                     "the last one whose weights trained well, with a lower --lr.", r->last_ckpt, r->last_ckpt_step,
                     e.msg, r->good_ckpt, r->good_step);
        else
            snprintf(msg + n, sizeof msg - n, "The last checkpoint, step %lld, holds the weights every step of this "
                     "streak failed on: it is now %s, and RUN/latest names %s (step %lld), the last checkpoint before "
                     "the streak whose weights trained well: resume from it with --resume and a lower --lr.",
                     r->last_ckpt_step, aside, r->good_ckpt, r->good_step);
    }
    gt_err(out, GT_EXIT_RUNTIME, "%s", msg);
}

// One optimizer step k (1-based): forward/backward per micro-batch, the averaged gradient,
// clip, AdamW. Returns the training loss averaged over the ranks; *norm the gradient norm.
// A bad step (NaN/Inf loss or norm, or a finite loss above --loss-spike times the recent
// mean) stops the run (exit 2), or with --skip-bad-steps skips the update.
static double train_step(Run *r, long long k, float *norm) {
    const TrainConfig *c = &r->cfg;
    const int B = c->batch_size, T = c->block_size, A = c->grad_accum, rank = r->w->rank, size = r->w->size;
    GPT2 *m = &r->m;
    TrainState *st = &r->st;
    r->ac.lr = lr_at(k - 1, c->steps, c->warmup, (float)c->lr, (float)c->min_lr, r->sched);
    faults_step_begin(&r->faults, m, k);
    gpt2_zero_grad(m);
    double loss = 0;
    for (int micro = 0; micro < A; micro++) {
        dataloader_next(&r->dl, r->inputs, r->targets);  // a failure is agreed on at the end of the step
        float l = gpt2_forward(m, r->inputs, r->targets, B, T, 1, dropout_key((uint64_t)c->seed, k, rank, micro));
        loss += (double)l / A;
        // Only the last micro-batch's backward finishes the gradients: reduce once; the
        // reducer also drives its reductions between sub-layers (GPT2.progress).
        int last = micro == A - 1 && size > 1 && !faults_defer_reduction(&r->faults, k);
        m->progress = last ? reducer_ready : NULL;
        m->progress_ctx = &r->red;
        // The embeddings' split: wte's exchange starts at the top of backward (mpi/allreduce.h).
        m->emb_grad = last ? reducer_tokens(&r->red, r->inputs, (size_t)B * T) : NULL;
        double tb = comm_time();
        gpt2_backward(m, 1.0f / (float)A, last ? reducer_ready : NULL, &r->red);
        if (micro == A - 1) r->backward_s += comm_time() - tb;
        m->progress = NULL;
        m->emb_grad = NULL;
    }
    faults_step_gradients(&r->faults, m, k, rank);
    reducer_finish(&r->red);
    // The mean loss, and the exposed exchange: the shortest wait, that of the rank that
    // finished backward last (the others' waits include waiting for it).
    double mine[2] = {loss, r->red.wait_s}, *all = r->agree;
    comm_allgather(mine, all, sizeof mine, "the loss average");
    loss = all[0];
    double exposed = all[1];
    for (int i = 1; i < size; i++) {
        loss += all[2 * i];
        if (all[2 * i + 1] < exposed) exposed = all[2 * i + 1];
    }
    reducer_exposed(&r->red, exposed);
    loss /= size;
    *norm = grad_global_norm(m->grads, m->num_params);
    float clip = grad_clip_coef(*norm, (float)c->grad_clip);  // applied inside AdamW's pass
    // Every rank sees the same reduced figures and the same recent mean, so all take the same branch.
    // The reference a spike is measured against: the recent mean, but never more than the
    // loss of uniform guessing, ln V, so that a loss creeping up step by step is caught too,
    // and never less than 1 nat, where a model that fits its data almost perfectly has
    // batch-to-batch swings of several times its mean that are not explosions.
    int finite = isfinite(loss) && isfinite(*norm);
    double uniform = log((double)m->config.vocab_size);
    int by_recent = st->recent_n >= SPIKE_MEMORY && st->recent_loss < uniform;
    double ref = by_recent ? (st->recent_loss > 1.0 ? st->recent_loss : 1.0) : uniform;
    int spike = finite && c->loss_spike > 0 && loss > c->loss_spike * ref;
    if (finite && !spike) {
        adamw_step_scaled(&r->opt, m, m->params, m->grads, clip, &r->ac);
        recent_loss_add(st, loss);
        st->bad_in_row = 0;
        return loss;
    }
    char what[200], where[320];
    if (spike) {
        snprintf(what, sizeof what, "training loss %.4g is %.1fx %s (%.4g; --loss-spike %g): the loss is exploding",
                 loss, loss / ref, by_recent ? "the mean of recent steps" : "the loss of uniform guessing, ln V", ref,
                 c->loss_spike);
        largest_grad_tensor(m, where, sizeof where);
    } else {
        snprintf(what, sizeof what, "%s is %s", !isfinite(loss) ? "training loss" : "gradient norm",
                 isnan(!isfinite(loss) ? loss : *norm) ? "NaN" : "infinite");
        first_bad_tensor(m, where, sizeof where);
    }
    st->bad_in_row++;
    if (c->skip_bad_steps && st->bad_in_row <= GT_MAX_BAD_IN_ROW) {
        st->skipped_steps++;
        log_line(&r->lg, "step %lld: %s%s: update skipped (--skip-bad-steps; %lld skipped so far)", k, what, where,
                 st->skipped_steps);
        return loss;
    }
    // Every rank took this branch (the figures are reduced): one message, exit 2 on all.
    GtErr e = GT_ERR_INIT;
    if (rank == 0) stop_message(r, k, what, where, &e);
    log_close(&r->lg);
    comm_agree(rank == 0 ? e.msg : NULL, GT_EXIT_RUNTIME);
    return loss;  // not reached: comm_agree ends every rank
}

// This rank's first failure since the last agreement, or NULL.
static const GtErr *first_failure(const Run *r) {
    const GtErr *all[4] = {&r->dl.train.err, &r->val.err, &r->attn_err, &r->lg.err};
    for (int i = 0; i < 4; i++)
        if (gt_failed(all[i])) return all[i];
    return NULL;
}

void probe_forward(GPT2 *m, const int *ids, int T, float *token_loss, float *scratch) {
    gpt2_forward(m, ids, NULL, 1, T, 0, 0);
    // position t's logits score token t+1: the first T-1 rows of logits (B = 1)
    if (T > 1) crossentropy_forward(scratch, token_loss, m->logits, ids + 1, (size_t)(T - 1), m->config.vocab_size);
}

// The loop: steps, then check-sync, eval, the attention probe and the log line (rank 0),
// the end-of-step agreement (stop signal, any rank's failure), and the checkpoint, each when
// due.
//
// Inside a streak of skipped bad steps (--skip-bad-steps) no checkpoint is written: its
// weights are those of the last good step, but the streak may be the start of a divergence
// that the resumed run would meet again at once. A checkpoint that falls due there, and a stop
// signal, wait for the first good step after the streak, at most GT_MAX_BAD_IN_ROW steps
// later (then the run gives up, naming the last checkpoint, written before the streak). The
// run's final step is the exception: it is saved, streak or not (it holds the last good
// weights), keeping the checkpoint before it too.
void loop_train(Run *r) {
    const TrainConfig *c = &r->cfg;
    const int rank = r->w->rank, size = r->w->size;
    TrainState *st = &r->st;
    const long long tokens_per_step = (long long)c->batch_size * c->block_size * c->grad_accum * size;
    double ms_sum = 0;
    int ms_n = 0, sig = 0, postponed = 0;
    const long long first_step = st->step;
    while (st->step < c->steps) {
        long long k = st->step + 1;
        wd_step(k);
        double t0 = comm_time();
        float norm;
        double loss = train_step(r, k, &norm);
        st->step = k;
        if (st->bad_in_row == 0 && r->last_ckpt_step >= 0 && r->last_ckpt_step < k) {
            // a good step on the weights of the last checkpoint (no update came in between)
            snprintf(r->good_ckpt, sizeof r->good_ckpt, "%s", r->last_ckpt);
            r->good_step = r->last_ckpt_step;
        }
        st->tokens_seen += tokens_per_step;
        ms_sum += (comm_time() - t0) * 1000.0;
        ms_n++;
        wd_step_time(comm_time() - t0);

        faults_step_end(&r->faults, &r->m, k, rank, size);
        if (c->check_sync && size > 1 && (k % c->log_every == 0 || k == c->steps)) check_sync(r, &r->m, k);
        double val = NAN, val_bpb = NAN;
        if ((c->eval_every > 0 && k % c->eval_every == 0) || k == c->steps) {
            EvalResult ev = eval_split(&r->m, &r->val, r->ev_first, r->ev_count, c->batch_size, c->block_size,
                                       r->token_len, r->inputs, r->targets, NULL);
            val = ev.loss;
            val_bpb = eval_bpb(&ev);
            if (val < st->best_val_loss) st->best_val_loss = val;
        }
        if (r->aw && k % c->attn_every == 0 && !gt_failed(&r->attn_err)) {
            probe_forward(&r->m, r->probe, r->probe_T, r->probe_loss, r->probe_scratch);
            // m.att is (L, 1, NH, T, T) == (L, NH, T, T)
            attn_append_e(r->aw, k, (float)loss, r->m.att, r->probe_loss, &r->attn_err);
        }
        if (k % c->log_every == 0 || k == c->steps || !isnan(val)) {
            double ms = ms_sum / ms_n;
            MetricsRow row = {k, st->tokens_seen, loss, val, r->ac.lr, norm, ms, tokens_per_step / (ms / 1000.0), val_bpb};
            log_metrics(&r->lg, &row);
            ms_sum = 0;
            ms_n = 0;
        } else {
            log_progress(&r->lg, k, loss, ms_sum / ms_n);
        }

        // The end of every step is an agreement point: a stop signal seen by any rank, a data
        // read that failed on one, or a write of rank 0's that failed (attention.h5,
        // metrics.csv, train.log: a full disk) is acted on by all.
        const GtErr *bad = first_failure(r);
        sig = comm_agree_stop(bad ? bad->msg : NULL, bad ? bad->status : 0, signals_pending());
        int due = (c->ckpt_every > 0 && k % c->ckpt_every == 0) || k == c->steps || sig || postponed;
        if (due && st->bad_in_row > 0 && k < c->steps) {
            if (!postponed)
                log_line(&r->lg, "step %lld is inside a streak of %lld skipped step%s: the %s waits for the first good "
                         "step (the last checkpoint is %s)", k, st->bad_in_row, st->bad_in_row == 1 ? "" : "s",
                         sig ? "stop" : "checkpoint", *r->last_ckpt ? r->last_ckpt : "not written yet");
            postponed = 1;
            continue;
        }
        postponed = 0;
        if (due) resume_save_checkpoint(r);
        if (sig) break;
    }
    long long steps = st->step - first_step;
    if (size > 1 && steps > 0)
        log_line(&r->lg,
                 "allreduce (%s): %.2f MB sent per rank per step; one blocking exchange %.1f ms; backward %.1f ms/step, "
                 "exposed after it %.1f ms/step: %.1f%% of the blocking exchange hidden; %.1f%% of the gradient done "
                 "when backward ended",
                 c->allreduce_dtype, reducer_bytes_sent(&r->red) / 1e6, 1000.0 * r->red.blocking_s,
                 1000.0 * r->backward_s / (double)steps, reducer_exposed_ms(&r->red),
                 100.0 * reducer_hidden_share(&r->red), 100.0 * reducer_done_share(&r->red));
    if (size > 1) {
        double t = wd_timeout();
        char rule[96];
        if (config_timeout(c) < 0) snprintf(rule, sizeof rule, "auto: %.0f s", t);
        else snprintf(rule, sizeof rule, "%s", t > 0 ? "as given" : "off");
        log_line(&r->lg, "stall watchdog: --collective-timeout %s (%s)", c->collective_timeout, rule);
    }
    if (sig)  // last: the command is the end of the output, whatever characters it holds
        log_line(&r->lg, "stopped by %s after step %lld; checkpoint %s. Resume with:\n %s", signals_name(sig), st->step,
                 r->last_ckpt, r->resume_cmd);
    else if (st->step >= c->steps)
        log_line(&r->lg, "done: step %lld, best val loss %.4f, %lld tokens seen%s", st->step, st->best_val_loss,
                 st->tokens_seen, st->skipped_steps ? " (some steps skipped)" : "");
}
