// signals.h - SIGTERM, SIGINT, SIGHUP and SIGUSR1 (Slurm's preemption warning) ask a program
// to stop. Two ways to honour them:
//   at once (signals_install_immediate; gpt-bpe, gpt-sample): the handler unlinks the
//       registered temp files (gt_tmpfile_register) and the signal's default action ends the
//       process, so its exit status names the signal (128+N in a shell);
//   deferred (signals_install; the trainer's loop, gpt-sample's generation): the handler
//       only records the signal; the program checks signals_pending() at a safe point and
//       stops cleanly (the trainer: the ranks agree on it, write a checkpoint and exit 0).
// Both ignore SIGPIPE (a closed stdout is then an EPIPE that the writer turns into a quiet
// exit, see files.h) and SIGXFSZ (exceeding the file size limit, ulimit -f, is then a
// failed write, EFBIG, reported like a full disk instead of a kill that leaves temp files).
#ifndef GT_SIGNALS_H
#define GT_SIGNALS_H

void signals_install(void);            // deferred
void signals_install_immediate(void);  // at once
// Switches between the two. A signal recorded while deferred takes effect at once when
// deferring is switched off.
void signals_defer(int on);
// A line the handler writes to stderr when a signal ends the process at once (one saying
// what state that leaves, e.g. "nothing was trained yet"); NULL for none. Copied.
void signals_note(const char *text);
// The last stop signal received by this process, or 0.
int signals_pending(void);
// A stop asked for by the program itself, as if `sig` had come (gpt-train: its stdout's
// reader went away, SIGPIPE): recorded while deferring, else the process ends at once.
void signals_request_stop(int sig);
const char *signals_name(int sig);
// Ends the process as `sig` does by default (exit status 128+sig in a shell), after
// unlinking the registered temp files: for a program that stopped on its own after a
// deferred signal, or after a closed pipe (SIGPIPE).
_Noreturn void signals_exit(int sig);

// Test hook (docs/faults.md): with GT_TEST_STOP_AT=PHASE in the environment the process
// stops itself (SIGSTOP) on reaching the point of that name, so a test can send a signal
// exactly in that phase and let it go on (SIGCONT). Points: "start", "read", "write", ...
void signals_test_point(const char *phase);

#endif
