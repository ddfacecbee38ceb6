/* queue.h -- shared queues (queue.c); no Lua.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_QUEUE_H
#define MPE_QUEUE_H

#include <stddef.h>
#include "buf.h"
#include "err.h"
#include "shm.h"
#include "waitctl.h"

/* queue.c. A queue is an mpe_shm_obj of kind MPE_SHM_QUEUE; its o->data is
 * this process's state (the ring's mapping, the descriptor channel). Items are opaque bytes plus
 * descriptors; the binding encodes and decodes them with the codec. */
/* maxsize items (0: unbounded), a first ring of `bytes` (0: the default, 1
 * MiB); the ring grows when full and shrinks back when drained. */
mpe_shm_obj *mpe__queue_new(size_t maxsize, size_t bytes, mpe_err *e);
/* A reference that travels (segment and channel descriptors go into fds),
 * read back with one more reference; like mpe__shm_ref_write/read. */
int mpe__queue_ref_write(const mpe_shm_obj *o, mpe_buf *b, mpe_fds *fds, mpe_err *e);
mpe_shm_obj *mpe__queue_ref_read(mpe_rd *r, mpe_fds *fds, mpe_err *e);
/* Drop a reference (the last one in this process closes the channel). */
void mpe__queue_drop(mpe_shm_obj *o);
/* Append an item: n bytes and the descriptors in fds (which put closes in
 * every case, leaving fds->n = 0). timeout in seconds, < 0: forever.
 * MPE_WAIT_OK, _TIMEOUT, _INTERRUPTED, MPE_IPC_CLOSED or _ERROR (e set). */
int mpe__queue_put(mpe_shm_obj *o, const void *p, size_t n, mpe_fds *fds, double timeout,
                   const mpe_waitctl *w, mpe_err *e);
/* Take the oldest item: its bytes replace out's contents, its descriptors
 * are appended to fds (the caller closes them). Returns as put; CLOSED only
 * once the queue is closed and empty. */
int mpe__queue_get(mpe_shm_obj *o, mpe_buf *out, mpe_fds *fds, double timeout,
                   const mpe_waitctl *w, mpe_err *e);
/* Mark the queue closed for every process and wake all waiters. */
void mpe__queue_close(mpe_shm_obj *o);
size_t mpe__queue_size(const mpe_shm_obj *o);
size_t mpe__queue_maxsize(const mpe_shm_obj *o);
int mpe__queue_closed(const mpe_shm_obj *o);
/* The ring's current size in bytes (it grows when full, shrinks when drained). */
size_t mpe__queue_capacity(const mpe_shm_obj *o);

#endif
