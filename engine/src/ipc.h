/* ipc.h -- helpers shared by queues, pipes and dicts: robust locks, futexes, descriptor passing (ipc.c); no Lua.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_IPC_H
#define MPE_IPC_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include "buf.h"
#include "err.h"
#include "waitctl.h"

/* mpe.queue and mpe.dict keep their lock and counters in a small shm.c object
 * (a robust process-shared mutex) and their data in a growable memfd of their
 * own; mpe.pipe is a socketpair. Descriptors of shared objects inside queue items
 * travel over a datagram socketpair created with each queue; see
 * docs/ARCHITECTURE.md. Waits return MPE_WAIT_* (sync.c) or: */
enum { MPE_SHM_QUEUE = 32, MPE_SHM_DICT = 33 }; /* object kinds, next to MPE_SHM_* */
#define MPE_IPC_CLOSED 16 /* the queue is closed / the pipe's other end is gone */

/* ipc.c: helpers shared by the three. Deadlines are mpe__proc_now() seconds, < 0: none. */
/* MPE_WAIT_OK, MPE_WAIT_OWNERDEAD (held now, its holder died: repair the
 * state, then call mpe__ipc_consistent), MPE_WAIT_TIMEOUT,
 * MPE_WAIT_INTERRUPTED or MPE_WAIT_ERROR (e set). Sleeps in slices of at most
 * 100 ms and asks w between them. */
int mpe__ipc_lock(pthread_mutex_t *m, double deadline, const mpe_waitctl *w, mpe_err *e);
void mpe__ipc_consistent(pthread_mutex_t *m);
void mpe__ipc_unlock(pthread_mutex_t *m);
/* Sleep while *addr == val: MPE_WAIT_OK (woken, or the word differs),
 * MPE_WAIT_TIMEOUT or MPE_WAIT_INTERRUPTED. Shared (not private) futexes. */
int mpe__ipc_futex_wait(uint32_t *addr, uint32_t val, double deadline, const mpe_waitctl *w);
void mpe__ipc_futex_wake(uint32_t *addr, int n);
/* A descriptor inside a reference: fd_write appends a duplicate of fd to fds
 * and writes [u32 slot][u64 device][u64 inode] to b; fd_read returns a
 * duplicate (close-on-exec) of the descriptor in that slot after checking
 * that it is that very file (the identity guards against a message whose
 * slots were mixed up) and of type mode (S_IFREG, S_IFSOCK). -1 and e set on
 * failure. */
int mpe__ipc_fd_write(int fd, mpe_buf *b, mpe_fds *fds, mpe_err *e);
int mpe__ipc_fd_read(mpe_rd *r, const mpe_fds *fds, unsigned mode, mpe_err *e);
/* Test hook: a process that reaches crash point `point` of the protocols
 * kills itself with SIGKILL (0: none). Only tests set it. */
enum {
    MPE_CRASH_PUT_COPIED = 1, /* queue put: record written, not committed */
    MPE_CRASH_PUT_SENT,       /* queue put: descriptors sent, not committed */
    MPE_CRASH_GET_PEEKED,     /* queue get: descriptors peeked, not committed */
    MPE_CRASH_GET_TAKEN,      /* queue get: committed, descriptor message not removed */
    MPE_CRASH_DICT_WRITTEN,   /* dict set: record appended, not linked */
    MPE_CRASH_DICT_REBUILT,   /* dict: new table written, not switched to */
    MPE_CRASH_QUEUE_MOVED     /* queue: records copied to a new ring, not switched to */
};
void mpe__ipc_set_crash(int point);
void mpe__ipc_crash(int point);

#endif
