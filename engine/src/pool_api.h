/* pool_api.h -- the scheduler's interface to the binding layer (pool.c, dispatch.c, pool_cancel.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_POOL_API_H
#define MPE_POOL_API_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "compat.h"
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
    lua_CFunction handler; /* message handler for task errors, given by the binding layer */
} mpe_pool_opts;

/* A message for the main thread: results of some items, or a failure. */
enum { MPE_MSG_RESULT = 1, MPE_MSG_FAIL, MPE_MSG_INITFAIL, MPE_MSG_BROKEN /* text: why */ };
typedef struct mpe_msg {
    struct mpe_msg *next;
    int type;
    mpe_job *job;          /* NULL for INITFAIL */
    lua_Integer index;     /* input index (1-based) of the first item concerned */
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

/* Create a pool: fork its workers from L's state and start the dispatcher.
 * Returns NULL and sets e on failure (nothing is left running). */
mpe_pool *mpe__pool_new(lua_State *L, const mpe_pool_opts *o, mpe_err *e);
/* Fork replacements for workers that died or retired. Returns 0 or -1 (e set). */
int mpe__pool_respawn(lua_State *L, mpe_pool *p, mpe_err *e);
/* Send the function at idx to every worker (once while it is cached) and
 * return its id. Raises if it cannot be encoded. */
uint64_t mpe__pool_function(lua_State *L, mpe_pool *p, int idx);
/* A new job running function fnid in the given mode over items added next. */
mpe_job *mpe__pool_job(mpe_pool *p, int mode, uint64_t fnid, int chunksize, int raise_first);
/* Items: a range (count values start, start+step, ...), packed numbers, or
 * encoded values (each add_enc call appends one item's encoding from b).
 * Raise on memory exhaustion. */
void mpe__pool_add_range(lua_State *L, mpe_job *j, lua_Integer start, lua_Integer step, lua_Integer count);
/* Packed numbers are written in place: begin reserves room for count items
 * and returns where they go; commit makes the first count written items
 * visible (call it as often as useful: workers start on them at once). */
char *mpe__pool_packed_begin(lua_State *L, mpe_pool *p, mpe_job *j, int kind, size_t count);
void mpe__pool_packed_commit(mpe_pool *p, mpe_job *j, size_t count, int finished);
/* fds: the descriptors the item's encoding refers to (slots 0..n-1; may be
 * NULL). The pool takes them all (each set to -1): a segment it already
 * knows is closed here, a new one kept, so each distinct segment is held and
 * sent to each worker once however many items carry it. */
void mpe__pool_add_enc(lua_State *L, mpe_pool *p, mpe_job *j, const char *s, size_t n, mpe_fds *fds);
/* A finished, published job of the one encoded item s[0..n) (apply,
 * apply_async): created, stored and handed to the dispatcher under one
 * acquisition of the pool's lock, its offsets inside the job. fds as for
 * mpe__pool_add_enc. Raises on memory exhaustion (then no job exists). */
mpe_job *mpe__pool_job_one(lua_State *L, mpe_pool *p, int mode, uint64_t fnid, int raise_first,
                           const char *s, size_t n, mpe_fds *fds);
/* Make the items added so far visible to the dispatcher; finished: no more will come. */
void mpe__pool_publish(mpe_pool *p, mpe_job *j, int finished);
/* Let the dispatcher use only items before limit (0-based store index; the
 * default is no limit): imap over a range or a table shows the workers a
 * window ahead of its consumer, so results never pile up unread. */
void mpe__pool_job_window(mpe_pool *p, mpe_job *j, lua_Integer limit);
/* Take the next message (NULL if none); hand it back with mpe__pool_msg_done. */
mpe_msg *mpe__pool_take(mpe_pool *p);
/* Whether the message's job is still wanted (not released). Main thread. */
int mpe__pool_msg_live(const mpe_msg *m);
/* Free a message, its leftover descriptors, and its job if that was the last use. */
void mpe__pool_msg_done(mpe_pool *p, mpe_msg *m);
/* Wait until a message arrives, a worker needs replacing, or the deadline
 * (monotonic seconds; <0 none) passes. Returns 1 if there may be news, 0 on timeout. */
int mpe__pool_wait(mpe_pool *p, double deadline);
/* Stop running j (errors = "raise" failed, or abandoned). */
void mpe__pool_job_cancel(mpe_pool *p, mpe_job *j);
/* Withdraw j if no worker was ever handed any of its items (pool_cancel.c):
 * returns 1 and cancels it, or 0 and changes nothing. */
int mpe__pool_job_withdraw(mpe_pool *p, mpe_job *j);
/* The caller no longer needs j; freed once no chunk or message refers to it. */
void mpe__pool_job_release(mpe_pool *p, mpe_job *j);
/* Stop the workers: gracefully (STOP after pending work) or now (SIGKILL),
 * reap them and the dispatcher. Idempotent. */
void mpe__pool_stop(mpe_pool *p, int now);
/* Free everything (stops first if needed). In a forked copy (not the
 * creator's pid) it only frees memory. */
void mpe__pool_free(mpe_pool *p);
/* Workers started so far (PoolWorker-K numbering). */
int mpe__pool_started(mpe_pool *p);

#endif
