/* proc.h -- process identity and fork discipline (proc.c); no Lua.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_PROC_H
#define MPE_PROC_H

#include <stdint.h>
#include <sys/types.h>
#include "err.h"


/* Fork a child the mpe way: signals blocked around fork; in the child, signal
 * handlers reset, PR_SET_PDEATHSIG set, parent-side descriptors of other
 * pools/processes closed. Returns as fork(2) does; -1 sets e. Only the main
 * thread may call it. */
pid_t mpe__proc_fork(mpe_err *e);
/* A thread other than the main one (a pool's dispatcher) calls busy before
 * it allocates or takes locks and idle before it sleeps: mpe__proc_fork waits
 * until every such thread is idle, so no child inherits a held lock. */
void mpe__proc_busy(void);
void mpe__proc_idle(void);
/* Descriptors that only the parent may hold (its ends of worker channels):
 * children forked later close them, so a dead parent is seen as EOF. */
void mpe__proc_track_fd(int fd);
void mpe__proc_untrack_fd(int fd);
/* This process's identity, as mpe.current_process() reports it. */
void mpe__proc_set_identity(const char *name, int worker);
const char *mpe__proc_name(void);
int mpe__proc_worker(void);
/* CPUs this process may use: affinity mask and cgroup quota; at least 1. */
int mpe__proc_cpu_count(void);
/* Default pool size: MPE_WORKERS if set and valid, else mpe__proc_cpu_count(). */
int mpe__proc_default_workers(void);
/* Monotonic clock, seconds. */
double mpe__proc_now(void);
/* The next number for a default child name ("Process-N"): counts the children
 * this OS process has numbered, from 1; a forked child starts again at 1. */
int mpe__proc_next_number(void);
/* This process's place among the children its parent forked (1, 2, ... in
 * fork order, pool workers and mpe.process alike); 0 if mpe did not fork it. */
uint64_t mpe__proc_ordinal(void);
/* "SIGKILL" for 9 and so on for the common signals; NULL for others. */
const char *mpe__proc_signal_name(int sig);
/* This process's rank (0 without MPI), inherited by forked children. */
int mpe__proc_rank(void);
void mpe__proc_set_rank(int rank);

#endif
