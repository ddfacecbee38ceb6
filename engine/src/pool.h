/* pool.h -- the pool's shared structures, private to pool.c (the main
 * thread's side) and dispatch.c (the dispatcher thread); never installed.
 * SPDX-License-Identifier: MIT
 *
 * Every field is guarded by mpe_pool.mu unless marked otherwise. */
#ifndef MPE_POOL_H
#define MPE_POOL_H

#include <pthread.h>
#include <sys/types.h>
#include "compat.h"
#include "buf.h"
#include "pool_api.h"
#include "protocol.h"
#include "transport.h"
#include "worker.h"

#define TARGET_CHUNK_NS 4e6     /* aim for chunks of about 4 ms */
#define QUEUE_NS 8e6            /* keep about 8 ms of work queued per worker */
#define MAX_INFLIGHT 256        /* chunks out with one worker */
#define MAX_CHUNK_ITEMS (1 << 20)
#define MAX_CHUNK_BYTES (32u << 20)
#define FN_CACHE 32             /* functions kept known to workers when unused */

typedef struct range {
    lua_Integer a, b; /* store indices [a, b) (0-based) */
    int suspect;      /* a worker died running them, item unknown: run one by one */
    struct range *next;
} range;

typedef struct attempt {
    lua_Integer i;
    int n;
    struct attempt *next;
} attempt;

struct mpe_job {
    uint64_t id, fnid;
    int mode, kind, chunksize, raise_first;
    lua_Integer rstart, rstep; /* MPE_K_RANGE */
    mpe_buf items;             /* INTS/FLOATS: 8 bytes an item; ENC: encodings */
    size_t *off;               /* ENC: off[i - base]: start of item i; one past the end too */
    size_t offcap;
    size_t off1[2];            /* off of a one-item job (mpe__pool_job_one): no allocation */
    lua_Integer base;          /* first item still held (earlier ones were trimmed) */
    lua_Integer count;         /* items added (main thread) */
    lua_Integer visible;       /* items the dispatcher may use */
    lua_Integer limit;         /* visible never passes it (imap's window) */
    int finished;              /* no more items will come */
    lua_Integer cut;           /* first item not yet cut into a chunk */
    range *redo;               /* items to run again, served first */
    lua_Integer done;          /* items with an outcome */
    int cancelled, released;
    int refs;                  /* chunks in flight + messages queued */
    double per_item_ns;        /* measured cost (EWMA), 0 = unknown */
    uint32_t *segs;            /* pool segment ids its items refer to (one reference each) */
    int nsegs, segcap;
    attempt *attempts;
    struct mpe_job *next, *prev; /* all jobs of the pool */
    struct mpe_job *wnext;     /* jobs with items no worker holds yet */
    int in_work;
};

typedef struct chunk {
    uint64_t id;
    mpe_job *job;
    lua_Integer a, b, got; /* store indices [a, b); got results for [a, a+got) */
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
    mpe_fds fdq[8];    /* descriptor sets received, in order, for MPE_R_FDS frames */
    int fdq_head, fdq_n;
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
    double cost_ns;         /* pool-wide per-item cost estimate */
};

/* dispatch.c */
void *mpe__dispatch_main(void *pool);                  /* the thread's body */
void mpe__dispatch_enlist(mpe_pool *p, mpe_job *j);     /* put j on the work list if it has items */
void mpe__dispatch_prune(mpe_pool *p);                  /* drop jobs without items from its head */
void mpe__dispatch_maybe_free(mpe_pool *p, mpe_job *j); /* free j once released and unreferenced */
void mpe__dispatch_drop_fdq(wslot *w);                  /* close descriptor sets nobody claimed */
/* Frames built without Lua (the dispatcher may not raise): 0, or -1 on ENOMEM. */
int mpe__dispatch_put(mpe_buf *b, const void *s, size_t n);
int mpe__dispatch_frame(mpe_buf *b, unsigned type, uint64_t v); /* [hdr][u64 v] */
int mpe__dispatch_frame32(mpe_buf *b, unsigned type, uint32_t v); /* [hdr][u32 v] */

/* pool.c */
void mpe__pool_free_job(mpe_pool *p, mpe_job *j);      /* unlink and free j, now */

#endif
