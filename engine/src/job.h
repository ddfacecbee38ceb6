/* job.h -- the pool's job module (job.c): one pool job from its creation to
 * its last outcome, and the pool's segment table its items refer to. Private
 * to the pool (pool.c, dispatch.c, the bindings); never installed.
 * SPDX-License-Identifier: MIT
 *
 * Lua-free: nothing here raises; failures return -1 or NULL (ENOMEM) and
 * leave the pool as it was. "Main thread" functions take the pool's lock
 * themselves; "dispatcher" functions are called with it held. */
#ifndef MPE_JOB_H
#define MPE_JOB_H

#include <stdint.h>
#include "buf.h"
#include "pool_api.h"

/* A run of store indices [a, b) (0-based) to run again. */
typedef struct mpe_range_redo {
    int64_t a, b;
    int suspect;      /* a worker died running them, item unknown: run one by one */
    struct mpe_range_redo *next;
} mpe_range_redo;

typedef struct mpe_attempt {
    int64_t i;
    int n;
    struct mpe_attempt *next;
} mpe_attempt;

/* Every field is guarded by the pool's lock. The bindings read none of it:
 * they ask the functions below. */
struct mpe_job {
    uint64_t id, fnid;
    int mode, kind, chunksize, raise_first;
    int64_t rstart, rstep;     /* MPE_K_RANGE */
    mpe_buf items;             /* INTS/FLOATS: 8 bytes an item; ENC: encodings */
    size_t *off;               /* ENC: off[i - base]: start of item i; one past the end too */
    size_t offcap;
    size_t off1[2];            /* off of a one-item job (mpe__job_one): no allocation */
    int64_t base;              /* first item still held (earlier ones were trimmed) */
    int64_t count;             /* items added (main thread) */
    int64_t visible;           /* items the dispatcher may use */
    int64_t limit;             /* visible never passes it (imap's window) */
    int64_t window;            /* limit follows the consumer this far ahead; 0: none (main thread) */
    int finished;              /* no more items will come */
    int64_t cut;               /* first item not yet cut into a chunk */
    mpe_range_redo *redo;      /* items to run again, served first */
    int64_t done;              /* items with an outcome */
    int cancelled, released;
    int refs;                  /* chunks in flight + messages queued */
    double per_item_ns;        /* measured cost (EWMA), 0 = unknown */
    uint32_t *segs;            /* pool segment ids its items refer to (one reference each) */
    int nsegs, segcap;
    mpe_attempt *attempts;
    struct mpe_job *next, *prev; /* all jobs of the pool */
    struct mpe_job *wnext;     /* jobs with items no worker holds yet */
    int in_work;
    /* Delivery: how far the main thread has handed outcomes on (main thread
     * only, no lock; the bindings keep the values, this keeps the counts). */
    int64_t delivered;         /* items whose outcome was delivered */
    int64_t yielded;           /* imap: items handed to the consumer */
    int64_t qhead, qtail;      /* imap_unordered: positions of the delivered items waiting */
    int tag;                   /* the bindings' name for it (their async object's slot) */
};

/* ---- submission (main thread) ------------------------------------------------------
 * A submission is: mpe__job_new, items (add_range, packed_begin/commit or
 * add_enc, any number of times), publish (any number of times, the last one
 * finished). If it stops at any step, mpe__job_abort undoes it. */

/* A new job running function fnid in the given mode, on the pool's job list,
 * holding a reference to the function's cache entry. NULL on ENOMEM. */
mpe_job *mpe__job_new(mpe_pool *p, int mode, uint64_t fnid, int chunksize, int raise_first);
/* Items: the count values start, start+step, ... Cannot fail. */
void mpe__job_add_range(mpe_job *j, int64_t start, int64_t step, int64_t count);
/* Packed numbers written in place: begin reserves room for count items and
 * returns where they go (NULL on ENOMEM); commit makes the first count
 * written visible. */
char *mpe__job_packed_begin(mpe_pool *p, mpe_job *j, int kind, size_t count);
void mpe__job_packed_commit(mpe_pool *p, mpe_job *j, size_t count, int finished);
/* Give up a packed store before any commit: items come encoded instead. */
void mpe__job_packed_abandon(mpe_job *j);
/* Append one encoded item s[0..n) whose descriptor slots are fds (may be
 * NULL). The job takes every descriptor (each set to -1), also on failure:
 * a segment the pool knows is closed, a new one kept, so each distinct
 * segment is held once however many items carry it. 0, or -1 on ENOMEM
 * (the item is not added; segments interned for it stay the job's until
 * it is aborted or freed). */
int mpe__job_add_enc(mpe_pool *p, mpe_job *j, const char *s, size_t n, mpe_fds *fds);
/* A finished, published job of the one encoded item s[0..n) (apply):
 * created, stored and handed to the dispatcher under one acquisition of the
 * lock. fds as for add_enc. NULL on ENOMEM, the pool then as before. */
mpe_job *mpe__job_one(mpe_pool *p, int mode, uint64_t fnid, int raise_first, const char *s, size_t n,
                      mpe_fds *fds);
/* Make the items added so far visible to the dispatcher (up to the window);
 * finished: no more will come. */
void mpe__job_publish(mpe_pool *p, mpe_job *j, int finished);
/* Show the dispatcher at most window items ahead of those the consumer took
 * (default: no limit) and publish: imap over a range or a table keeps a
 * window of results ahead of its consumer. consumed: the consumer has taken
 * n items; the window moves on once it lags half a window behind (so not
 * every item takes the lock). No-op for a job without a window. */
void mpe__job_window(mpe_pool *p, mpe_job *j, int64_t window);
void mpe__job_consumed(mpe_pool *p, mpe_job *j, int64_t n);
/* The one abort of a submission stopped at any step: the job leaves the job
 * list and the work list and drops its segment and function references at
 * once, so the pool is exactly as before the submission began, unless a
 * worker already holds some of its items: then it is released (no outcome
 * is delivered) and freed when the last of them comes back. */
void mpe__job_abort(mpe_pool *p, mpe_job *j);

/* ---- the job's life after submission (main thread) ------------------------------ */
/* Stop running j (errors = "raise" failed, or abandoned). */
void mpe__job_cancel(mpe_pool *p, mpe_job *j);
/* Withdraw j if no worker was ever handed any of its items: returns 1 and
 * cancels it, or 0 and changes nothing (async:cancel). */
int mpe__job_withdraw(mpe_pool *p, mpe_job *j);
/* The caller no longer needs j; freed once no chunk or message refers to it. */
void mpe__job_release(mpe_pool *p, mpe_job *j);
/* Items added so far, and whether the last publish said no more will come.
 * Main thread, without the lock: only the main thread writes them. */
int64_t mpe__job_count(const mpe_job *j);
int mpe__job_finished(const mpe_job *j);
/* The bindings' name for j, 0 until set (main thread, no lock). */
void mpe__job_set_tag(mpe_job *j, int tag);
int mpe__job_tag(const mpe_job *j);
/* ---- delivery (main thread, no lock) --------------------------------------------- */
/* n more items of j had their outcome delivered; how many so far; whether
 * every item has (no more will come and each one was delivered). */
void mpe__job_delivered(mpe_job *j, int64_t n);
int64_t mpe__job_ndelivered(const mpe_job *j);
int mpe__job_all_delivered(const mpe_job *j);
/* imap: hand the next item to the consumer, returning how many it has had
 * (the ordered imap's item index); how many it had; how many items were
 * added past them; whether it had them all. */
int64_t mpe__job_yield(mpe_job *j);
int64_t mpe__job_yielded(const mpe_job *j);
int64_t mpe__job_ahead(const mpe_job *j);
int mpe__job_exhausted(const mpe_job *j);
/* imap_unordered: a delivered item waits for the consumer at the returned
 * position; the position of the next one to hand on, or 0 if none waits. */
int64_t mpe__job_enqueue(mpe_job *j);
int64_t mpe__job_dequeue(mpe_job *j);
/* Whether j still runs: its outcomes are delivered (not cancelled, not released). */
int mpe__job_running(const mpe_job *j);
/* Whether j's outcomes are still wanted (not released). */
int mpe__job_wanted(const mpe_job *j);
/* Free j now, whatever refers to it (the pool is being freed). mine: this
 * process created the pool (a forked copy closes no descriptor). Under the lock. */
void mpe__job_free(mpe_pool *p, mpe_job *j, int mine);

/* ---- the dispatcher's side (the lock held) --------------------------------------- */
/* Whether j has items to hand out. */
int mpe__job_has_items(const mpe_job *j);
/* Put j on the work list if it has items and is not there; drop jobs
 * without items from the list's head. */
void mpe__job_enlist(mpe_pool *p, mpe_job *j);
void mpe__job_prune(mpe_pool *p);
/* Whether the work list holds a job with items. */
int mpe__job_any_work(mpe_pool *p);

/* The next chunk: items [a, e) of job, run one by one if suspect. */
typedef struct mpe_cut {
    mpe_job *job;
    int64_t a, e;
    int suspect;
    int redo; /* taken from the job's redo list */
} mpe_cut;
/* Cut the next chunk for a worker with busy chunks in flight that may take
 * at most room items (-1: no limit): redo ranges first, a suspect item
 * alone on an idle worker, then new items sized by the measured cost.
 * Returns 1 with c filled, or 0. Takes nothing yet: mpe__job_take commits
 * it once its frames are queued, so a failed queueing leaves the job as it was. */
int mpe__job_cut(mpe_pool *p, int busy, int64_t room, mpe_cut *c);
/* Queue for a worker (has[id]: it has segment id; grown as needed) the
 * segments the cut's items refer to that it lacks, then the chunk frame
 * with the given chunk id. 0, or -1 on ENOMEM. */
int mpe__job_queue(mpe_pool *p, const mpe_cut *c, uint64_t chunk, mpe_buf *out, unsigned char **has,
                   size_t *hascap);
void mpe__job_take(mpe_pool *p, const mpe_cut *c);

/* Outcomes. account: n items of j have an outcome. failed: one failed
 * (a raise-first job stops handing out items). */
void mpe__job_account(mpe_pool *p, mpe_job *j, int64_t n);
void mpe__job_failed(mpe_job *j);
/* Items [a, b) of j go back to be run again (suspect: one by one). */
void mpe__job_redo(mpe_pool *p, mpe_job *j, int64_t a, int64_t b, int suspect);
/* Whether item i of j may run once more (the pool's retries): counts it. */
int mpe__job_retry(mpe_pool *p, mpe_job *j, int64_t i);
/* A chunk of items of j ran in ns: update j's and the pool's cost estimates. */
void mpe__job_measured(mpe_pool *p, mpe_job *j, int64_t items, uint64_t ns);
/* The estimated ns an item of j costs. */
double mpe__job_cost(const mpe_pool *p, const mpe_job *j);
/* A chunk or message refers to j / no longer does (freed when released and unreferenced). */
void mpe__job_ref(mpe_job *j);
void mpe__job_unref(mpe_pool *p, mpe_job *j);

/* ---- the pool's segment table ---------------------------------------------------- */
/* The descriptor of segment id, or -1. Under the lock. */
int mpe__job_seg_fd(const mpe_pool *p, uint32_t id);

/* Fault injection for tests: the nth allocation of a submission from now
 * fails (0: none). Not thread-safe; tests only. */
void mpe__job_fail_alloc(int nth);

#endif
