/* transport.h -- how a pool reaches its workers: a table of operations that
 * the scheduler (pool.c, dispatch.c) and the worker loop (worker.c) call, so
 * that a second backend (MPI) plugs in, in its own file, without touching the
 * scheduler. The first backend is transport.c's socketpair per worker.
 * SPDX-License-Identifier: MIT
 *
 * The unit is one worker, a "link". A backend that reaches workers in
 * groups (MPI: a remote rank with forked local workers behind it)
 * multiplexes its links over whatever channel it has; the scheduler still
 * sees one link per worker. Bytes on a link are whole pool frames
 * ([u32 length][u8 type][body], layouts in pool.h); descriptors ride on
 * the first bytes of a send and the far side's frame claims those that came
 * with its bytes (fdio.h).
 *
 * Threads: start runs on the main thread (it forks); every other parent-side
 * operation runs on the dispatcher thread. The child-side operations run in
 * the worker. No operation touches Lua except start, which hands the Lua
 * state to the child. */
#ifndef MPE_TRANSPORT_H
#define MPE_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>
#include "compat.h"
#include "buf.h"
#include "err.h"
#include "worker.h"

/* Start a frame of the given type in b (raises on no memory); mpe__frame_end
 * (protocol.h) patches its length. */
size_t mpe__frame_begin(lua_State *L, mpe_buf *b, unsigned type);

typedef struct mpe_link mpe_link;           /* one worker, as its backend knows it */
typedef struct mpe_transport mpe_transport; /* a backend's state for one pool */

/* Readiness bits reported by wait. */
#define MPE_T_READ 1  /* recv will not block: bytes, descriptors or the end are there */
#define MPE_T_WRITE 2 /* send will take at least one byte */

/* The body a worker runs in the child; it never returns. */
typedef void (*mpe_worker_fn)(lua_State *L, mpe_link *self, void *ud);

typedef struct mpe_transport_ops {
    const char *name;

    /* ---- parent side ---- */
    /* A backend instance for a pool of n workers. NULL and e set on failure. */
    mpe_transport *(*open)(int n, mpe_err *e);
    /* Free it; every link was reaped before. */
    void (*close)(mpe_transport *t);
    /* Start one worker that runs run(L, its own link, ud) and shares the
     * progress slot with the parent (memory a local worker writes; a remote
     * backend mirrors it, see progress). ud points at the worker's
     * mpe_worker_cfg (pool.c puts it first): a backend that starts workers
     * elsewhere reads slot, number, budget, timeout and initializer. *pid
     * gets the worker's pid (on a remote host: its pid there, for messages
     * only). Main thread only, with no lock held: it may fork. NULL and e
     * set on failure. */
    mpe_link *(*start)(mpe_transport *t, lua_State *L, mpe_progress *progress, mpe_worker_fn run,
                       void *ud, pid_t *pid, mpe_err *e);
    /* Send up to n bytes without blocking; fds (nfds > 0, any number) ride
     * on the first bytes and stay owned by the caller; a message with
     * descriptors goes whole once its first byte went. Returns the bytes
     * taken (0: no room now), or -1 when the link is broken (its end is
     * then seen by recv). */
    ssize_t (*send)(mpe_link *l, const void *p, size_t n, const int *fds, int nfds);
    /* Append what has arrived to b, the descriptors that came with it to in
     * (mpe__fdio_claim hands a frame those that rode on its bytes). Returns
     * the bytes read, 0 at
     * the link's end (the death notice: call reap), -1 with errno EAGAIN when
     * nothing is there, -1 otherwise on failure (treated as the end). */
    ssize_t (*recv)(mpe_link *l, mpe_buf *b, mpe_fdin *in);
    /* Readiness: wait until one of the n links is ready (ev[i] set to
     * MPE_T_* bits; MPE_T_WRITE is only asked where want[i] has it), until
     * wakefd (an eventfd, -1: none) is readable (drained here), or ms pass
     * (-1: no limit). Returns how many links are ready, or -1 on failure. A
     * backend without descriptors polls its channel in slices and wakefd. */
    int (*wait)(mpe_transport *t, mpe_link *const *links, const unsigned *want, unsigned *ev, int n,
                int wakefd, int ms);
    /* Kill the worker now (SIGKILL or the backend's equivalent); its link
     * then reaches its end. Safe to call twice. */
    void (*kill)(mpe_link *l);
    /* After the end: wait for the worker to be gone, fill *status (a wait
     * status: WIFEXITED/WIFSIGNALED apply) and free the link. */
    void (*reap)(mpe_link *l, int *status);
    /* In a forked copy of the parent (a child that inherited the pool): free
     * the link's memory only, touching neither the worker nor descriptors. */
    void (*forget)(mpe_link *l);
    /* A copy of the worker's progress slot (chunk and item it runs, since
     * when, ready), for blame after a death and for task timeouts. */
    void (*progress)(mpe_link *l, mpe_progress *out);
    /* Optional (NULL: a worker only ever dies alone). After the end, before
     * reap: whether the link ended because the process behind it died with
     * it (MPI: its whole rank), 1 with s (n bytes) naming that process,
     * e.g. "rank 2 (pid 123 on node1)"; 0 otherwise. The scheduler then
     * says on stderr which items the link held (a launcher may end the run
     * at once, before any error reaches the script). */
    int (*lost)(mpe_link *l, char *s, size_t n);

    /* ---- child side (in the worker) ---- */
    /* Send all n bytes, blocking; fds go with the first bytes. 0, or -1 when
     * the parent is gone. */
    int (*send_all)(mpe_link *self, const void *p, size_t n, const int *fds, int nfds);
    /* As recv, but blocking when block is set. */
    ssize_t (*child_recv)(mpe_link *self, mpe_buf *b, mpe_fdin *in, int block);
} mpe_transport_ops;

/* The socketpair backend (transport.c): a local forked worker per link. */
extern const mpe_transport_ops mpe__transport_socketpair;

#endif
