// watchdog.h - the stall watchdog behind --collective-timeout (docs/faults.md, "A stalled rank").
//
// A rank frozen by SIGSTOP, a hung filesystem, a swapped-out node or a dead link is not a dead
// rank: mpirun sees nothing wrong and the others would wait forever in a collective. So every
// wait for the other ranks is marked (wd_wait_begin/wd_wait_end) and every arrival reported
// (wd_progress); work that must not hang on one rank alone (a checkpoint write) is marked too
// (wd_local_begin/end). A thread wakes four times a second; when the phase in progress has
// seen no progress for the timeout, it prints one line naming the step, the phase and the
// ranks that did not arrive (when the waiter knows them), then the note the trainer left
// (where to resume from), and ends the job through gt_fail: MPI_Abort, exit status 2.
//
// The timeout: > 0 seconds as given; 0 off; < 0 adaptive: 600 s until a step has been timed
// (start-up reads, checks and broadcasts data of any size), then max(120 s, 50 x the median
// of the last 64 step times), far above any wait of a healthy run.
#ifndef GT_WATCHDOG_H
#define GT_WATCHDOG_H

#define WD_ADAPTIVE (-1.0)

// Starts the thread (only when size > 1). Timeout: WD_ADAPTIVE until wd_configure.
void wd_init(int rank, int size);
void wd_configure(double timeout_s);
// The timeout in force now (0 = off): the adaptive rule's current value, or the fixed one.
double wd_timeout(void);
// The step being worked on (the message says "step K"; before the first: "at start-up").
void wd_step(long long step);
// A step's duration, for the adaptive rule.
void wd_step_time(double seconds);
// Appended to the message (e.g. "RUN/latest names ..."); copied.
void wd_set_note(const char *note);

// This rank waits for the others in `phase` (a static string). arrived: one flag per rank
// (1 once that rank's part is in), kept current by the waiter until wd_wait_end; NULL when
// the wait cannot tell who is late (a broadcast).
void wd_wait_begin(const char *phase, const volatile unsigned char *arrived);
void wd_progress(void);
void wd_wait_end(void);
// Work on this rank alone that must not hang (the timeout applies to it whole).
void wd_local_begin(const char *phase);
void wd_local_end(void);

// Stops the thread (before MPI_Finalize).
void wd_stop(void);

#endif
