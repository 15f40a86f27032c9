// log.c - see log.h.
#include "log.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "files.h"
#include "signals.h"

#define CSV_HEADER "step,tokens,train_loss,val_loss,lr,grad_norm,ms_per_step,tokens_per_s,val_bpb"
// The header of files written before val_bpb: a resume adds the column (an empty cell to the old rows).
#define CSV_HEADER_V1 "step,tokens,train_loss,val_loss,lr,grad_norm,ms_per_step,tokens_per_s"

// Records the first failed write of `path` (errno as the write left it); returns -1.
static int failed(Logger *lg, const char *path) {
    int err = errno ? errno : EIO;
    if (!gt_failed(&lg->err)) {
        gt_err(&lg->err, GT_EXIT_RUNTIME, "writing '%s' failed: %s", path, strerror(err));
        lg->err.errnum = err;
    }
    return -1;
}

// Flushes f and checks that everything written to it since it opened got there.
static int check(Logger *lg, FILE *f, const char *path) {
    if (!f || gt_failed(&lg->err)) return -1;
    errno = 0;
    if (fflush(f) != 0 || ferror(f)) return failed(lg, path);
    return 0;
}

// An existing path must be a regular file: a directory named metrics.csv is bad input, not
// a full disk.
static int regular_or_absent(Logger *lg, const char *path, const char *what) {
    struct stat st;
    if (stat(path, &st) != 0 || S_ISREG(st.st_mode)) return 0;
    return gt_err(&lg->err, GT_EXIT_USAGE, "%s '%s': is %s, expected a regular file", what, path,
                  gt_file_kind(st.st_mode));
}

static FILE *open_for(Logger *lg, const char *path, const char *mode) {
    errno = 0;
    FILE *f = fopen(path, mode);
    if (!f) failed(lg, path);
    return f;
}

static FILE *open_csv(Logger *lg, const char *path, long long resume_step) {
    if (regular_or_absent(lg, path, "metrics file")) return NULL;
    FILE *in = resume_step >= 0 ? fopen(path, "r") : NULL;
    if (!in) {
        FILE *f = open_for(lg, path, "w");
        if (f) fprintf(f, CSV_HEADER "\n");
        check(lg, f, path);
        return f;
    }
    // Keep the rows up to the checkpoint: rows after it come again from the resumed run. A
    // row cut short (a write that failed on a full disk) is dropped: its step may read as a
    // smaller number ("12" of "125,...") and the next row would be appended to it.
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    gt_tmpfile_register(tmp);
    FILE *out = open_for(lg, tmp, "w");
    char *line = NULL;
    size_t cap = 0;
    int first = 1;
    int old = 0;
    ssize_t len;
    while (out && (len = getline(&line, &cap, in)) >= 0) {
        size_t n = strcspn(line, "\r\n");
        char *end;
        long long step = strtoll(line, &end, 10);
        if (first && n == strlen(CSV_HEADER_V1) && !strncmp(line, CSV_HEADER_V1, n)) {
            fputs(CSV_HEADER "\n", out);
            old = 1;
        } else if (first || (line[len - 1] == '\n' && end != line && *end == ',' && step <= resume_step)) {
            if (old) line[n] = '\0';
            fputs(line, out);
            if (old) fputs(",\n", out);
        }
        first = 0;
    }
    free(line);
    fclose(in);
    if (out) {
        check(lg, out, tmp);
        errno = 0;
        if (fclose(out) != 0) failed(lg, tmp);
    }
    if (!gt_failed(&lg->err) && rename(tmp, path) != 0) failed(lg, path);
    if (gt_failed(&lg->err)) remove(tmp);
    gt_tmpfile_forget(tmp);
    return gt_failed(&lg->err) ? NULL : open_for(lg, path, "a");
}

int log_open(Logger *lg, const char *run_dir, int rank, long long resume_step, long long total_steps) {
    memset(lg, 0, sizeof *lg);
    lg->active = rank == 0;
    lg->total_steps = total_steps;
    if (!lg->active) return 0;
    // Open MPI gives every rank a pseudo-terminal for stdout even when mpirun's own output
    // goes to a file, so a TTY alone says little: ask for stderr too (a pipe under mpirun),
    // and let GT_PROGRESS=1/0 force the live line on or off.
    const char *p = getenv("GT_PROGRESS");
    lg->tty = p && *p ? atoi(p) != 0 : isatty(STDOUT_FILENO) && isatty(STDERR_FILENO);
    snprintf(lg->log_path, sizeof lg->log_path, "%s/train.log", run_dir);
    snprintf(lg->csv_path, sizeof lg->csv_path, "%s/metrics.csv", run_dir);
    if (regular_or_absent(lg, lg->log_path, "training log") == 0) lg->log = open_for(lg, lg->log_path, "a");
    if (!gt_failed(&lg->err)) lg->csv = open_csv(lg, lg->csv_path, resume_step);
    return gt_failed(&lg->err) ? -1 : 0;
}

// After a line went to stdout: 0, or what its write failed with (see log.h). The stream's
// error flag is cleared, so the next line's failure is its own.
static int flush_stdout(void) {
    errno = 0;
    int err = fflush(stdout) != 0 || ferror(stdout) ? (errno ? errno : EIO) : 0;
    clearerr(stdout);
    return err;
}

static void stdout_failed(Logger *lg, int err) {
    if (!err || signals_pending() || err == EAGAIN) return;
    if (err == EPIPE) {
        signals_request_stop(SIGPIPE);
    } else if (!gt_failed(&lg->err)) {
        gt_err(&lg->err, GT_EXIT_RUNTIME, "writing to stdout failed: %s ('%s' holds every line so far)", strerror(err),
               lg->log_path);
        lg->err.errnum = err;
    }
}

static void clear_progress(Logger *lg) {
    if (lg->progress_shown) {
        fputs("\r\033[K", stdout);
        lg->progress_shown = 0;
    }
}

void log_line(Logger *lg, const char *fmt, ...) {
    if (!lg->active) return;
    clear_progress(lg);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    int out_err = flush_stdout();
    if (lg->log && !gt_failed(&lg->err)) {
        va_start(ap, fmt);
        vfprintf(lg->log, fmt, ap);
        va_end(ap);
        fputc('\n', lg->log);
        check(lg, lg->log, lg->log_path);
    }
    stdout_failed(lg, out_err);  // after train.log: that file gets the line whatever stdout does
}

static void fmt_duration(double s, char *buf, size_t n) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

static void cell(FILE *f, const char *fmt, double v) {
    fputc(',', f);
    if (!isnan(v)) fprintf(f, fmt, v);
}

void log_metrics(Logger *lg, const MetricsRow *m) {
    if (!lg->active) return;
    char line[512];
    size_t len = 0;
    int w = snprintf(NULL, 0, "%lld", lg->total_steps);
    len += (size_t)snprintf(line + len, sizeof line - len, "step %*lld/%lld", w, m->step, lg->total_steps);
    if (!isnan(m->train_loss))
        len += (size_t)snprintf(line + len, sizeof line - len, " | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s",
                                m->train_loss, m->lr, m->grad_norm, m->ms_per_step, m->tokens_per_s);
    if (!isnan(m->train_loss) && !isnan(m->ms_per_step)) {
        char eta[32];
        fmt_duration((double)(lg->total_steps - m->step) * m->ms_per_step / 1000.0, eta, sizeof eta);
        len += (size_t)snprintf(line + len, sizeof line - len, " | ETA %s", eta);
    }
    if (!isnan(m->val_loss)) {
        double ppl = exp(m->val_loss);  // a diverged model's is astronomically large: keep the line short
        len += (size_t)snprintf(line + len, sizeof line - len, ppl < 1e6 ? " | val loss %.4f | ppl %.2f"
                                : " | val loss %.4f | ppl %.3g", m->val_loss, ppl);
        if (!isnan(m->val_bpb)) len += (size_t)snprintf(line + len, sizeof line - len, " | bpb %.4f", m->val_bpb);
    }
    log_line(lg, "%s", line);
    if (!lg->csv || gt_failed(&lg->err)) return;
    fprintf(lg->csv, "%lld,%lld", m->step, m->tokens);
    cell(lg->csv, "%.6f", m->train_loss);
    cell(lg->csv, "%.6f", m->val_loss);
    cell(lg->csv, "%.6e", m->lr);
    cell(lg->csv, "%.6f", m->grad_norm);
    cell(lg->csv, "%.3f", m->ms_per_step);
    cell(lg->csv, "%.1f", m->tokens_per_s);
    cell(lg->csv, "%.6f", m->val_bpb);
    fputc('\n', lg->csv);
    check(lg, lg->csv, lg->csv_path);
}

void log_progress(Logger *lg, long long step, double loss, double ms_per_step) {
    if (!lg->active || !lg->tty) return;
    char eta[32];
    fmt_duration((double)(lg->total_steps - step) * ms_per_step / 1000.0, eta, sizeof eta);
    int width = 30;
    int filled = lg->total_steps > 0 ? (int)((double)step / (double)lg->total_steps * width) : 0;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    printf("\r\033[K[%s] step %lld/%lld loss %.4f %.1f ms/step ETA %s", bar, step, lg->total_steps, loss,
           ms_per_step, eta);
    fflush(stdout);
    lg->progress_shown = 1;
}

int log_close(Logger *lg) {
    if (!lg->active) return 0;
    clear_progress(lg);
    fflush(stdout);
    FILE *files[2] = {lg->log, lg->csv};
    const char *paths[2] = {lg->log_path, lg->csv_path};
    for (int i = 0; i < 2; i++) {
        if (!files[i]) continue;
        check(lg, files[i], paths[i]);
        errno = 0;
        if (fclose(files[i]) != 0) failed(lg, paths[i]);
    }
    lg->log = lg->csv = NULL;
    return gt_failed(&lg->err) ? -1 : 0;
}
