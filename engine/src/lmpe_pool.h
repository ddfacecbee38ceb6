/* lmpe_pool.h -- the pool bindings' shared structures, private to
 * lmpe_pool.c (mpe.pool and its methods) and lmpe_async.c (results and
 * mpe.AsyncResult); never installed.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_LMPE_POOL_H
#define MPE_LMPE_POOL_H

#include "compat.h"
#include "buf.h"
#include "job.h"
#include "pool_api.h"

#define POOL_MT "mpe.Pool"
#define ASYNC_MT "mpe.AsyncResult"

enum { P_OPEN, P_CLOSED, P_TERMINATED, P_JOINED };

/* Options of map-like calls: chunksize, errors, callback, error_callback. */
typedef struct callopts {
    int chunksize, collect;
    int progress;       /* 0, 1 (true) or 2 ("force") */
    lua_Integer window; /* imap: 0 for the default */
    int out;            /* option out=: the stack index of the options table, else 0 */
    lua_Integer outrows; /* its elements (1-D) or rows (2-D) */
} callopts;

/* lmpe_poolargs.c. The argument checks of a pool call, its arguments where its method call
 * has them (self at 1): the function at 2; with MPE_CALL_ITEMS items (a
 * table, mpe.range or function) at 3, with MPE_CALL_ARGS an args table or
 * nil at 3, and with either the options at 4, parsed into o (MPE_CALL_CB:
 * callbacks allowed, MPE_CALL_OUT: option out allowed). Raises misuse errors.
 * The worker pool (lmpe_pool.c) and the inline pool (lua/mpe/inline.lua,
 * through lmpe_inline.c) both check with it, so their messages cannot drift. */
enum { MPE_CALL_ITEMS = 1, MPE_CALL_ARGS = 2, MPE_CALL_CB = 4, MPE_CALL_OUT = 8 };
void mpe__pool_check_call(lua_State *L, const char *fname, int flags, callopts *o);
/* Whether the value at i can be called (a function or a __call metamethod). */
int mpe__is_callable(lua_State *L, int i);
#define MPE_IMAP_WINDOW 65536 /* items pulled from an iterator ahead of the consumer */

/* An async object's fields live in its pool's table, one table per field
 * indexed by the object's slot, instead of a table per object: an
 * apply_async call creates no table (the userdata is its one allocation). */
enum {
    AF_RESULTS = 1, /* results table (map), the value or a table of values (apply) */
    AF_FAILURES,    /* [index] = error, created at the first failure */
    AF_FIRST_ERROR, /* the error get raises */
    AF_CB,          /* the options table with callback / error_callback */
    AF_SRC,         /* imap: the items (iterator, table or range) */
    AF_Q,           /* imap_unordered: indexes in the order they arrived */
    AF_HAVE,        /* imap: [index] = true once delivered */
    AF_PROGRESS,    /* the progress bar's state */
    AF_OUT,         /* option out=: the array */
    AF_SELF,        /* the object itself while its job is routed (results still to come) */
    AF_NFIELDS = AF_SELF
};

typedef struct lpool {
    mpe_pool *p;
    int state;
    int ref;       /* registry ref of { [AF_*] = {[slot] = field}, self = the pool while any
                    * async object lives }; [AF_SELF] routes messages (mpe__job_tag: the slot) */
    int nslots;    /* slots handed out (the highest in use or free) */
    int *free_slots; /* slots of collected async objects, reused first */
    int nfree, capfree; /* async objects alive: nslots - nfree */
    int init_ref, initargs_ref;
    pid_t owner;
    int broken;    /* the initializer failed: fields.broken holds the error */
    mpe_buf scratch; /* one item's encoding on its way to a job's store */
    mpe_fds sfds;    /* its descriptors, until the job takes them */
    int remote;      /* it spans MPI ranks: items travel by the cross-rank route */
} lpool;

enum { A_MAP, A_APPLY, A_IMAP, A_IMAP_UNORDERED };

typedef struct ajob {
    mpe_job *j;
    lpool *lp;
    int what;            /* A_* */
    int mode;            /* MPE_M_* */
    int collect;         /* errors = "collect" */
    int slot;            /* its fields are at this index of the pool's field tables (AF_*) */
    unsigned fields;     /* bit f: field f was set, and is cleared when the object goes */
    int failed;          /* a failure was delivered (raise mode: the job is over) */
    int complete;
    int lost;            /* a result could not be received (memory): the job failed as a whole */
    int callbacks_run;
    lua_Integer nres;    /* apply: number of return values; one is the AF_RESULTS field itself,
                          * any other number a table of them */
    lua_Integer window;  /* imap: items pulled ahead of the consumer (option 'window') */
    int progress;        /* option progress = true | "force": fields.progress is the bar's state */
    double progress_next; /* clock before which the bar is not redrawn */
    int out;             /* option out=: fields.out is the array the workers fill */
    lua_Integer outrows; /* its elements (1-D) or rows (2-D) */
    uint64_t fnid;       /* apply: the function, until submit_value creates the job */
} ajob;

/* lmpe_submit.c. The async object of a new job (what: A_*, mode: MPE_M_*, the
 * pool at pool_idx, the function at fn_idx, callbacks at cb_idx or 0), left
 * on the stack; its engine job is created and routed (an apply's later, with
 * its item). */
ajob *mpe__submit_new(lua_State *L, lpool *lp, int pool_idx, int fn_idx, int what, int mode,
                      const callopts *o, int cb_idx);
/* Fill a's job (its ajob on top) from the value at idx: S_ITEMS a table,
 * mpe.range or iterator (limit: at most this many from an iterator, -1 all),
 * S_VALUE an apply's arguments. Any error on the way aborts the job (the pool
 * as before the call) and is raised as it was. */
typedef enum { S_ITEMS, S_VALUE } submit_what;
void mpe__submit(lua_State *L, ajob *a, int idx, submit_what what, lua_Integer limit);
/* imap: pull more items from the job's iterator while the window allows;
 * over a range or a table, move the job's window after the consumer. */
void mpe__submit_feed(lua_State *L, ajob *a);

/* lmpe_async.c. Items added to a's job, and whether no more will come: the
 * job module's figures (none before an apply's job exists, or after an abort);
 * whether every item was added and its outcome delivered. */
lua_Integer mpe__async_count(const ajob *a);
int mpe__async_finished(const ajob *a);
int mpe__async_all_delivered(const ajob *a);
/* Field k of the pool's table behind a registry ref. */
void mpe__async_getref(lua_State *L, int ref, const char *k);
/* lmpe_slots.c. An async object's field f (AF_*): push it (nil if unset),
 * set it from idx. A new object of the pool at pool_idx gets its slot (raises
 * on no memory); unbind clears its fields and gives the slot back (__gc,
 * never raises). */
void mpe__async_get(lua_State *L, const ajob *a, int f);
void mpe__async_set(lua_State *L, ajob *a, int f, int idx);
void mpe__async_bind(lua_State *L, ajob *a, int pool_idx);
void mpe__async_unbind(lua_State *L, ajob *a);
void mpe__async_getfailures(lua_State *L, ajob *a); /* created at the first failure */
void mpe__async_check_complete(lua_State *L, ajob *a);
/* lmpe_slots.c: routing. */
void mpe__async_route(lua_State *L, ajob *a, int ai); /* a (at ai) gets its job's messages */
void mpe__async_unroute(lua_State *L, ajob *a);     /* forget a finished job in the pool */
void mpe__async_routed(lua_State *L, lpool *lp);    /* push { [slot] = async } of the routed */
/* Read every message that arrived, run the callbacks of the jobs it completed. */
void mpe__async_pump(lua_State *L, lpool *lp);
void mpe__async_raise_if_broken(lua_State *L, lpool *lp);
/* Wait until a is complete or the deadline (monotonic s, <0 none): 1 if complete. */
int mpe__async_wait(lua_State *L, ajob *a, double deadline);
void mpe__async_run_callbacks(lua_State *L, ajob *a);
/* Push a completed job's values (raise its error); returns how many. */
int mpe__async_push_values(lua_State *L, ajob *a);
void mpe__async_progress(lua_State *L, ajob *a, int final);
void mpe__async_open(lua_State *L); /* the mpe.AsyncResult metatable */

/* lmpe_wait.c: mpe.as_completed, mpe.wait (added to the module table on top)
 * and async:cancel (a method of mpe.AsyncResult). */
void mpe__open_wait(lua_State *L);
/* The one checker of mpe.AsyncResult methods: self at index 1, usable by this process. */
ajob *mpe__async_check(lua_State *L, const char *fname);
/* The mpe.AsyncResult at idx, or NULL if the value is none (a test, no error). */
ajob *mpe__async_test(lua_State *L, int idx);
int mpe__async_cancel(lua_State *L);
/* lmpe_inline.c: mpe.pool's inline form (workers = 0); argument 1 is
 * mpe.pool's, already checked. Returns 1 (the pool). */
int mpe__inline_pool(lua_State *L);
/* Whether MPE_WORKERS asks for inline pools ("0"). */
int mpe__inline_default(void);

#endif
