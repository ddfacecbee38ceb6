/* waitctl.h -- how the engine's waits end: results and the interrupt callback; no Lua.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_WAITCTL_H
#define MPE_WAITCTL_H

/* The engine's waits (sync.c, ipc.c, queue.c, pipe.c, process.c) take a
 * timeout in seconds (< 0: none), sleep in slices of at most 100 ms, and between slices ask w (may be
 * NULL) whether to give up (an interrupt). Results: */
enum {
    MPE_WAIT_ERROR = -1,      /* e set */
    MPE_WAIT_TIMEOUT = 0,
    MPE_WAIT_OK = 1,
    MPE_WAIT_OWNERDEAD = 2,   /* a lock's holder died: recovered and released, *dead = its pid */
    MPE_WAIT_INTERRUPTED = 3  /* w said stop */
};
typedef struct mpe_waitctl {
    int (*interrupted)(void *ud);
    void *ud;
} mpe_waitctl;

#endif
