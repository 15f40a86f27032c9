// fuzz_common.h - what every libFuzzer harness of gpt-train shares.
//
// The loaders end the process through error.c (gt_fail -> exit(1)) on bad input, and that
// is their correct behaviour. libFuzzer would call any exit a crash, so run_fuzz.sh compiles
// error.c with -Dexit=gt_fuzz_exit: inside FUZZ_TRY the "exit" jumps back to the harness
// with the status, which the harness then checks (1 for bad input; 2 is a library call that
// failed, also acceptable for damaged files; anything else is a bug). Outside FUZZ_TRY it is
// a real exit, which libFuzzer reports: a tokenizer given valid input must never fail.
//
// run_fuzz.sh fuzzes with -close_fd_mask=2: the loaders' messages (thousands per second) go
// nowhere while libFuzzer and the sanitizers still report on their own descriptor. Replaying
// an input (run_fuzz.sh's replay, or by hand) shows every message and failed check.
#ifndef GT_FUZZ_COMMON_H
#define GT_FUZZ_COMMON_H

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static jmp_buf fuzz_jmp;
static volatile int fuzz_armed;
static volatile int fuzz_status;  // -1: the guarded code ran to its end; else its exit status

_Noreturn void gt_fuzz_exit(int status);
_Noreturn void gt_fuzz_exit(int status) {
    if (fuzz_armed) {
        fuzz_armed = 0;
        fuzz_status = status;
        longjmp(fuzz_jmp, 1);
    }
    exit(status);
}

// FUZZ_TRY() { code that may gt_fail } FUZZ_END(); -- afterwards fuzz_status is -1 when the
// code ran to its end, else the exit status it asked for. Locals the guarded code changes
// and the caller reads afterwards must be volatile (setjmp rules).
#define FUZZ_TRY()                 \
    fuzz_status = -1;              \
    fuzz_armed = 1;                \
    if (setjmp(fuzz_jmp) == 0)
#define FUZZ_END() fuzz_armed = 0

// Reports a wrong result as a crash, with a message (libFuzzer saves the input).
#define FUZZ_ASSERT(cond, ...)                                  \
    do {                                                        \
        if (!(cond)) {                                          \
            fprintf(stderr, "FUZZ ASSERTION FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                       \
            fputc('\n', stderr);                                \
            abort();                                            \
        }                                                       \
    } while (0)

#endif
