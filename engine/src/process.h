/* process.h -- one-off processes: fork, run one function, send the outcome back (process.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_PROCESS_H
#define MPE_PROCESS_H

#include <stddef.h>
#include <sys/types.h>
#include "compat.h"
#include "buf.h"
#include "err.h"
#include "waitctl.h"

/* A child forked to run one function and send its outcome back through a
 * socketpair (shared objects in it travel as descriptors).
 * The struct lives inside the binding's userdata. Only its creator (the OS
 * process that started it) waits for or signals the child; in any other
 * process (an inherited copy) its descriptors were already closed at fork. */
typedef struct mpe_process {
    pid_t pid;       /* the child, 0 before start */
    pid_t creator;   /* the process that started it */
    int fd;          /* creator: its end of the result channel; child: its end; -1 closed */
    int pidfd;       /* creator: the child's pidfd, -1 if none (Linux < 5.3) or reaped */
    int reaped;      /* 1 once waitpid returned the child's status */
    int status;      /* that wait status */
    int discard;     /* 1: what the child sends is read and dropped */
    mpe_buf payload; /* what the child sent so far */
    mpe_fds fds;     /* descriptors of shared objects that came with it (owned) */
    lua_CFunction handler; /* the child's message handler (the binding layer's traceback) */
} mpe_process;

/* What a child's payload says (mpe__process_outcome). */
enum { MPE_PROCESS_RETURNED, MPE_PROCESS_RAISED, MPE_PROCESS_NOTHING };

void mpe__process_init(mpe_process *p);
/* Create the result channel and fork with mpe__proc_fork. Returns the child's
 * pid in the parent, 0 in the child (p->fd is then its write end), or -1
 * with e set. */
pid_t mpe__process_start(mpe_process *p, mpe_err *e);
/* In the child: call the function below the nargs values on top of L's stack
 * under lua_pcall, send its outcome to the parent and _exit: 0 if it
 * returned, 1 if it raised. Never returns. */
_Noreturn void mpe__process_run(lua_State *L, mpe_process *p, int nargs);
/* Wait up to timeout seconds (< 0: forever) for the child to exit, reading its
 * payload meanwhile (it may exceed a socket buffer). Returns MPE_WAIT_OK (1)
 * once the child is reaped, MPE_WAIT_TIMEOUT (0), MPE_WAIT_INTERRUPTED when w
 * (may be NULL) says stop, which it is asked at least every 100 ms, or
 * MPE_WAIT_ERROR (-1) with e set. Creator only. */
struct mpe_waitctl;
int mpe__process_join(mpe_process *p, double timeout, const struct mpe_waitctl *w, mpe_err *e);
/* Send sig unless the child was already reaped. Returns 0 or -1 with e set. */
int mpe__process_signal(mpe_process *p, int sig, mpe_err *e);
/* Python's exitcode: 0 and *code set once reaped (the exit status, or
 * -SIGNUM), -1 while the child runs or before start. */
int mpe__process_exitcode(const mpe_process *p, int *code);
/* "exited with status 3" or "killed by signal 9 (SIGKILL)", once reaped. */
void mpe__process_describe(const mpe_process *p, char *out, size_t size);
/* Push the outcome from the complete payload of a reaped child:
 * MPE_PROCESS_RETURNED with *nvalues return values pushed; MPE_PROCESS_RAISED
 * with message, traceback (or nil) and error value (or nil) pushed;
 * MPE_PROCESS_NOTHING, nothing pushed, if no complete payload arrived. */
int mpe__process_outcome(lua_State *L, mpe_process *p, int *nvalues);
/* Release p. In its creator, a child still running is first ended: joined
 * (daemon 0), or sent SIGTERM, given 1 s, then SIGKILL and reaped (daemon 1,
 * or once a signal has come: mpe__sig_seen, also during the join).
 * Elsewhere only local memory is freed. Idempotent. */
void mpe__process_release(mpe_process *p, int daemon);

#endif
