/* worker.h -- the pool worker's loop and what it shares with the parent (worker.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_WORKER_H
#define MPE_WORKER_H

#include <stdint.h>
#include "compat.h"
#include "buf.h"
#include "shm.h"

/* What a worker is doing, in memory shared with the parent: the item it runs
 * (for blame when it dies, and for task timeouts). */
typedef struct mpe_progress {
    /* A cache line each: a worker writes its slot for every item, and two
     * slots in one line would bounce it between the workers' cores. */
    _Alignas(64) volatile int64_t chunk; /* chunk id being run, 0 when idle */
    volatile int32_t item;       /* its item being run (0-based) */
    volatile int64_t started_ns; /* when that item started (monotonic) */
    volatile int32_t ready;      /* the initializer is done: deaths now are the items' */
} mpe_progress;

struct mpe_link;
struct mpe_transport_ops;
typedef struct mpe_worker_cfg {
    const struct mpe_transport_ops *tp; /* how it talks to the pool */
    struct mpe_link *link; /* its end of its channel */
    int slot;              /* 1..n */
    int number;            /* K in PoolWorker-K */
    int maxtasks;          /* exit after this many items (0: never) */
    int timeouts;          /* the pool has a task timeout: stamp each item's start */
    double timeout;        /* that timeout, seconds (a remote rank enforces it) */
    int init_ref;          /* registry ref of the initializer, or LUA_NOREF */
    int initargs_ref;      /* registry ref of its argument table, or LUA_NOREF */
    mpe_progress *progress;
    int remote;            /* its results go to another rank: no descriptors, C functions by name */
    lua_CFunction handler; /* message handler for tasks (the binding layer's traceback) */
} mpe_worker_cfg;

/* The worker's loop, in a forked child: runs the initializer, then chunks,
 * until STOP, EOF or its task budget. Never returns. */
void mpe__worker_main(lua_State *L, const mpe_worker_cfg *cfg) __attribute__((noreturn));
/* Decode the value at r (a function or an {initializer, initargs} table from
 * another rank) and push it; if it cannot be decoded here, push instead a
 * function that raises the decode error. */
void mpe__worker_decode_fn(lua_State *L, mpe_rd *r);

/* worker.c: option out='s write of one item's values (slots first..last) into
 * element or row item - 1 of arr; raises "mpe: out: ..." when they do not fit. */
void mpe__out_put(lua_State *L, mpe_shm_obj *arr, long long item, int first, int last);

#endif
