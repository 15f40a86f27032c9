// signals.h - SIGTERM, SIGINT, SIGUSR1 (Slurm's preemption warning) and SIGHUP ask the trainer to
// stop cleanly: the handler only records the signal; at the end of the current step the
// ranks agree on it (allreduce MAX), write a checkpoint and exit 0.
#ifndef GT_SIGNALS_H
#define GT_SIGNALS_H

void signals_install(void);
// The last stop signal received by this process, or 0.
int signals_pending(void);
const char *signals_name(int sig);

#endif
