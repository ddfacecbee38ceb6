/* pool_api.h -- the scheduler's interface to the binding layer (pool.c; the jobs are job.h's),
 * without Lua types: the entry points that take a Lua state are pool_lua.h's.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_POOL_API_H
#define MPE_POOL_API_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "buf.h"
#include "err.h"

/* The scheduler (pool.c). The main thread creates jobs and reads messages;
 * a dispatcher thread moves chunks and results; only the main thread touches
 * Lua. */
typedef struct mpe_pool mpe_pool;
typedef struct mpe_job mpe_job;

typedef struct mpe_pool_opts {
    int workers;
    int maxtasks;      /* items per worker before it is replaced; 0: unlimited */
    double timeout;    /* seconds one item may run; <= 0: no limit */
    int retries;       /* re-runs of an item whose worker died */
    int init_ref, initargs_ref; /* registry refs, or LUA_NOREF */
    const struct mpe_transport_ops *transport; /* NULL: the socketpair backend (transport.h) */
    int spread;        /* spans MPI ranks (transport is mpi.c's): the cross-rank codec route */
    const struct mpe_worker_hooks *hooks; /* the binding layer's functions for the workers (pool_lua.h) */
} mpe_pool_opts;

/* A message for the main thread: results of some items, or a failure. */
enum { MPE_MSG_RESULT = 1, MPE_MSG_FAIL, MPE_MSG_INITFAIL, MPE_MSG_BROKEN /* text: why */ };
typedef struct mpe_msg {
    struct mpe_msg *next;
    int type;
    mpe_job *job;          /* NULL for INITFAIL */
    int64_t index;         /* input index (1-based) of the first item concerned */
    uint32_t count;        /* RESULT: items in data; FAIL: items concerned (0 means 1) */
    unsigned flags;        /* RESULT: MPE_R_* */
    int worker;            /* the worker's number K (PoolWorker-K) */
    pid_t pid;
    const char *kind;      /* FAIL: "crash", "timeout" or "error" (the parent ran out of memory) */
    char text[192];        /* FAIL: what happened */
    mpe_fds fds;           /* descriptors that came with the results */
    size_t len;
    char data[];           /* RESULT: the payload; INITFAIL: the encoded error */
} mpe_msg;

/* Take the next message (NULL if none); hand it back with mpe__pool_msg_done. */
mpe_msg *mpe__pool_take(mpe_pool *p);
/* Whether the message's job is still wanted (not released). Main thread. */
int mpe__pool_msg_live(const mpe_msg *m);
/* Free a message, its leftover descriptors, and its job if that was the last use. */
void mpe__pool_msg_done(mpe_pool *p, mpe_msg *m);
/* Wait until a message arrives, a worker needs replacing, or the deadline
 * (monotonic seconds; <0 none) passes. Returns 1 if there may be news, 0 on timeout. */
int mpe__pool_wait(mpe_pool *p, double deadline);
/* Stop the workers: gracefully (STOP after pending work) or now (SIGKILL),
 * reap them and the dispatcher. Idempotent. */
void mpe__pool_stop(mpe_pool *p, int now);
/* Free everything (stops first if needed). In a forked copy (not the
 * creator's pid) it only frees memory. */
void mpe__pool_free(mpe_pool *p);
/* Workers started so far (PoolWorker-K numbering). */
int mpe__pool_started(mpe_pool *p);

#endif
