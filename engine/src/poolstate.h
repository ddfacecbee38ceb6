/* poolstate.h -- the scheduler's shared state: the pool, its worker slots,
 * chunks in flight, segment table and function cache. Shared by pool.c (the
 * main thread's side), dispatch.c (the dispatcher thread) and job.c (the
 * jobs), none of which owns it alone; never installed.
 * SPDX-License-Identifier: MIT
 *
 * The job itself (struct mpe_job) is job.h's. Every field is guarded by
 * mpe_pool.mu unless marked otherwise. */
#ifndef MPE_POOLSTATE_H
#define MPE_POOLSTATE_H

#include <pthread.h>
#include <sys/types.h>
#include <unistd.h>
#include "buf.h"
#include "pool_api.h"

/* Reached only through pointers here: transport.h and worker.h (which carry
 * Lua types) define them, so job.c sees no Lua type. */
typedef struct mpe_link mpe_link;
typedef struct mpe_transport mpe_transport;
typedef struct mpe_transport_ops mpe_transport_ops;
typedef struct mpe_progress mpe_progress;

#define TARGET_CHUNK_NS 4e6     /* aim for chunks of about 4 ms */
#define QUEUE_NS 8e6            /* keep about 8 ms of work queued per worker */
#define MAX_INFLIGHT 256        /* chunks out with one worker */
#define MAX_CHUNK_ITEMS (1 << 20)
#define MAX_CHUNK_BYTES (32u << 20)
#define FN_CACHE 32             /* functions kept known to workers when unused */

typedef struct chunk {
    uint64_t id;
    mpe_job *job;
    int64_t a, b, got;     /* store indices [a, b); got results for [a, a+got) */
    int suspect;           /* one item of a suspect range: a death without blame is its */
    struct chunk *next;
} chunk;

enum { W_EMPTY, W_LIVE, W_GONE };

typedef struct wslot {
    int state;
    pid_t pid;         /* for messages; the worker is reached through link */
    mpe_link *link;
    int number;
    chunk *inflight, *last;
    int ninflight;
    double queued_ns;  /* estimated work in flight */
    long assigned;     /* items sent, for maxtasksperchild */
    int timed_out;
    int broken;        /* it sent a malformed frame and was killed */
    int oom;           /* the parent had no memory for what it sent: killed */
    mpe_buf in, out;   /* out: frames queued for it (by either thread, under the lock) */
    size_t out_off;
    mpe_buf tx;        /* frames being sent: the dispatcher's alone, so it sends them
                          without the lock (out is swapped in when tx is empty) */
    size_t tx_off;
    unsigned char *has; /* has[id]: pool segment id was sent to it (MPE_F_SEGS) */
    size_t hascap;
    mpe_fdin fdin;     /* descriptors received, claimed by MPE_R_FDS frames by position */
} wslot;

/* A shared segment that items carry, held once by the pool however many
 * items and jobs refer to it; its id is its index in mpe_pool.segs. */
typedef struct pseg {
    int fd;            /* -1: a free id */
    dev_t dev;
    ino_t ino;
    int refs;          /* jobs referring to it */
} pseg;

typedef struct fnentry {
    uint64_t id;
    uint64_t hash;     /* of the encoded function: equal closures share an entry */
    int jobs;          /* jobs using it */
    mpe_buf frame;     /* the F_FUNC frame, for workers started later */
    mpe_fds fds;       /* descriptors its upvalues need (owned) */
    struct fnentry *next;
} fnentry;

struct mpe_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int thread_started, quit, stopping;
    int efd;             /* wakes the dispatcher */
    int dispatcher_idle; /* it is (about to be) in poll */
    pid_t owner;
    mpe_pool_opts o;
    const mpe_transport_ops *tp; /* how workers are reached (transport.h) */
    mpe_transport *t;
    int n;
    wslot *w;
    mpe_progress *progress; /* shared with the workers: one slot each */
    size_t progress_len;
    int started;            /* PoolWorker-K counter */
    int respawn;            /* slots waiting for a replacement */
    int early_deaths;       /* workers in a row that died before sending anything */
    mpe_job *jobs, *jobs_last;
    mpe_job *work, *work_last; /* FIFO of jobs with undistributed items */
    uint64_t next_id;
    mpe_msg *inbox, *inbox_last;
    pseg *segs;
    int nsegs, segcap, seg_hint; /* seg_hint: the last id found, tried first */
    fnentry *fns;
    int nfns;
    const void *last_fn;    /* the function mpe__pool_function saw last (held: see there) */
    uint64_t last_fnid;
    double cost_ns;         /* pool-wide per-item cost estimate */
};

/* Wake the dispatcher if it sleeps (the lock held). */
static inline void mpe__pool_wake(mpe_pool *p)
{
    if (p->dispatcher_idle) {
        uint64_t one = 1;
        ssize_t r = write(p->efd, &one, sizeof one);
        (void)r; /* a full eventfd is already a wakeup */
        p->dispatcher_idle = 0;
    }
}

/* dispatch.c: the thread's body, a loop of feed, flush and drain steps. */
void *mpe__dispatch_main(void *pool);

#endif
