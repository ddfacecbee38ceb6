/* sync.h -- locks, semaphores, events, conditions, barriers in shared memory (sync.c); no Lua.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_SYNC_H
#define MPE_SYNC_H

#include <pthread.h>
#include <sys/types.h>
#include "err.h"
#include "shm.h"
#include "waitctl.h"

/* A new lock, rlock, semaphore (n = initial value), event, condition or
 * barrier (n = parties). NULL and e set on failure. */
mpe_shm_obj *mpe__sync_new(uint32_t kind, unsigned n, mpe_err *e);
/* Check the kind-specific part of a decoded object. 0, or -1 with e set. */
int mpe__sync_attach(mpe_shm_obj *o, mpe_err *e);
/* Drop a reference. When it is this process's last one to a lock it holds,
 * the lock is released first: a mutex on the robust list must stay mapped. */
void mpe__sync_drop(mpe_shm_obj *o);
/* A robust, process-shared mutex (recursive if asked), for the sync objects
 * and the queue's and dict's own locks. 0, or -1 with e set. */
int mpe__sync_mutex_init(pthread_mutex_t *m, int recursive, mpe_err *e);
/* lock / rlock */
int mpe__sync_lock_acquire(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, pid_t *dead,
                           mpe_err *e);
/* 0, or -1 with e set ("lock is not held by this process"). */
int mpe__sync_lock_release(mpe_shm_obj *o, mpe_err *e);
int mpe__sync_lock_held(const mpe_shm_obj *o);
/* semaphore */
int mpe__sync_sem_acquire(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, mpe_err *e);
int mpe__sync_sem_release(mpe_shm_obj *o, unsigned n, mpe_err *e);
int mpe__sync_sem_value(const mpe_shm_obj *o);
/* event */
void mpe__sync_event_set(mpe_shm_obj *o);
void mpe__sync_event_clear(mpe_shm_obj *o);
int mpe__sync_event_is_set(const mpe_shm_obj *o);
int mpe__sync_event_wait(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, mpe_err *e);
/* condition over lock (a lock or rlock object this process holds) */
int mpe__sync_cond_wait(mpe_shm_obj *c, mpe_shm_obj *lock, double timeout, const mpe_waitctl *w,
                        pid_t *dead, mpe_err *e);
/* Wake up to n waiters (n < 0: all). -1 with e set if lock is not held. */
int mpe__sync_cond_notify(mpe_shm_obj *c, mpe_shm_obj *lock, int n, mpe_err *e);
/* barrier: *index is the arrival index 1..parties. A wait that times out or
 * is interrupted withdraws its arrival. */
int mpe__sync_barrier_wait(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, unsigned *index,
                           mpe_err *e);
unsigned mpe__sync_barrier_parties(const mpe_shm_obj *o);

#endif
