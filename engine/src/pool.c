/* pool.c -- the scheduler: workers, item stores, adaptive chunking, chunks in
 * flight, worker deaths with item-level blame, timeouts, recycling.
 * SPDX-License-Identifier: MIT
 *
 * Two threads share a pool. The main thread (the only one that touches Lua)
 * creates jobs, fills their item stores and reads messages. A dispatcher
 * thread cuts chunks from the stores, keeps every worker fed, collects
 * result frames into messages and notices deaths and timeouts, so that work
 * goes on while the main thread runs Lua code that never calls mpe. Every
 * field below is guarded by p->mu unless marked otherwise. Bytes move only
 * through the transport (transport.c). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

#define TARGET_CHUNK_NS 4e6     /* aim for chunks of about 4 ms */
#define QUEUE_NS 8e6            /* keep about 8 ms of work queued per worker */
#define MAX_INFLIGHT 256        /* chunks out with one worker */
#define MAX_CHUNK_ITEMS (1 << 20)
#define MAX_CHUNK_BYTES (32u << 20)
#define FN_CACHE 32             /* functions kept known to workers when unused */

typedef struct range {
    lua_Integer a, b; /* store indices [a, b) (0-based) */
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
    lua_Integer base;          /* first item still held (earlier ones were trimmed) */
    lua_Integer count;         /* items added (main thread) */
    lua_Integer visible;       /* items the dispatcher may use */
    int finished;              /* no more items will come */
    lua_Integer cut;           /* first item not yet cut into a chunk */
    range *redo;               /* items to run again, served first */
    lua_Integer done;          /* items with an outcome */
    int cancelled, released;
    int refs;                  /* chunks in flight + messages queued */
    double per_item_ns;        /* measured cost (EWMA), 0 = unknown */
    mpe_fds fds;               /* descriptors the items need; sent to every worker */
    attempt *attempts;
    struct mpe_job *next, *prev; /* all jobs of the pool */
    struct mpe_job *wnext;     /* jobs with items no worker holds yet */
    int in_work;
};

typedef struct chunk {
    uint64_t id;
    mpe_job *job;
    lua_Integer a, b, got; /* store indices [a, b); got results for [a, a+got) */
    struct chunk *next;
} chunk;

enum { W_EMPTY, W_LIVE, W_GONE };

typedef struct wslot {
    int state;
    pid_t pid;
    int fd, number;
    chunk *inflight, *last;
    int ninflight;
    double queued_ns;  /* estimated work in flight */
    long assigned;     /* items sent, for maxtasksperchild */
    int timed_out;
    mpe_buf in, out;
    size_t out_off;
    mpe_fds fdq[8];    /* descriptor sets received, in order, for MPE_R_FDS frames */
    int fdq_head, fdq_n;
} wslot;

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
    int n;
    wslot *w;
    mpe_progress *progress; /* shared with the workers: one slot each */
    size_t progress_len;
    int started;            /* PoolWorker-K counter */
    int respawn;            /* slots waiting for a replacement */
    mpe_job *jobs, *jobs_last;
    mpe_job *work, *work_last; /* FIFO of jobs with undistributed items */
    uint64_t next_id;
    mpe_msg *inbox, *inbox_last;
    fnentry *fns;
    int nfns;
    double cost_ns;         /* pool-wide per-item cost estimate */
};

static void prune_work(mpe_pool *p);

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void wake(mpe_pool *p)
{
    if (p->dispatcher_idle) {
        uint64_t one = 1;
        ssize_t r = write(p->efd, &one, sizeof one);
        (void)r; /* a full eventfd is already a wakeup */
        p->dispatcher_idle = 0;
    }
}

static void post(mpe_pool *p, mpe_msg *m)
{
    m->next = NULL;
    if (m->job)
        m->job->refs++;
    if (p->inbox_last)
        p->inbox_last->next = m;
    else
        p->inbox = m;
    p->inbox_last = m;
    pthread_cond_broadcast(&p->cv);
}

/* ---- frames built without Lua (the dispatcher may not raise) ---------------- */

static int put(mpe_buf *b, const void *s, size_t n)
{
    if (n == 0)
        return 0;
    if (mpe__buf_grow(b, n) != 0)
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int put64(mpe_buf *b, uint64_t v)
{
    unsigned char s[8];
    for (int i = 0; i < 8; i++)
        s[i] = (unsigned char)(v >> (8 * i));
    return put(b, s, 8);
}

static int put32(mpe_buf *b, uint32_t v)
{
    unsigned char s[4];
    for (int i = 0; i < 4; i++)
        s[i] = (unsigned char)(v >> (8 * i));
    return put(b, s, 4);
}

static int put8(mpe_buf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    return put(b, &c, 1);
}

static void patch_len(mpe_buf *b, size_t start)
{
    uint32_t n = (uint32_t)(b->n - start - MPE_FRAME_HDR);
    for (int i = 0; i < 4; i++)
        b->p[start + i] = (char)(unsigned char)(n >> (8 * i));
}

static int small_frame(mpe_buf *b, unsigned type, uint64_t v)
{
    size_t s = b->n;
    if (put32(b, 0) || put8(b, type) || put64(b, v))
        return -1;
    patch_len(b, s);
    return 0;
}

/* Queue function f for worker w: its descriptors first, if it has any. */
static int send_function(wslot *w, const fnentry *f)
{
    if (f->fds.n > 0 && small_frame(&w->out, MPE_F_FDS, f->id) != 0)
        return -1;
    return put(&w->out, f->frame.p, f->frame.n);
}

static void drop_fdq(wslot *w)
{
    while (w->fdq_n > 0) {
        mpe_fds *f = &w->fdq[w->fdq_head];
        for (int k = 0; k < f->n; k++)
            close(f->fd[k]);
        w->fdq_head = (w->fdq_head + 1) % 8;
        w->fdq_n--;
    }
}

/* ---- workers ------------------------------------------------------------------- */

typedef struct spawn_ctx {
    mpe_pool *p;
    mpe_worker_cfg cfg;
} spawn_ctx;

static void worker_entry(lua_State *L, int fd, void *ud)
{
    spawn_ctx *c = ud;
    c->cfg.fd = fd;
    mpe__worker_main(L, &c->cfg);
}

/* Fork a worker into slot i and queue the functions and descriptors it needs.
 * Main thread only; called with p->mu NOT held (fork must not copy a held
 * lock the child would need; the child never touches p). */
static int spawn(lua_State *L, mpe_pool *p, int i, mpe_err *e)
{
    spawn_ctx c = {.p = p};
    pthread_mutex_lock(&p->mu);
    c.cfg.slot = i + 1;
    c.cfg.number = ++p->started;
    pthread_mutex_unlock(&p->mu);
    c.cfg.maxtasks = p->o.maxtasks;
    c.cfg.timeouts = p->o.timeout > 0;
    c.cfg.init_ref = p->o.init_ref;
    c.cfg.initargs_ref = p->o.initargs_ref;
    c.cfg.progress = &p->progress[i];
    memset((void *)&p->progress[i], 0, sizeof p->progress[i]);
    int fd;
    pid_t pid = mpe__transport_spawn(L, &fd, worker_entry, &c, e);
    if (pid < 0)
        return -1;
    pthread_mutex_lock(&p->mu);
    wslot *w = &p->w[i];
    w->state = W_LIVE;
    w->pid = pid;
    w->fd = fd;
    w->number = c.cfg.number;
    w->ninflight = 0;
    w->queued_ns = 0;
    w->assigned = 0;
    w->timed_out = 0;
    w->in.n = w->out.n = w->out_off = 0;
    w->fdq_head = w->fdq_n = 0;
    int failed = 0;
    for (fnentry *f = p->fns; f; f = f->next)
        failed |= send_function(w, f);
    wake(p);
    pthread_mutex_unlock(&p->mu);
    if (failed)
        return mpe__seterr(e, "pool: not enough memory to start a worker");
    return 0;
}


/* Replacements are forked only while there is work for them, so a pool with
 * maxtasksperchild = 1 starts exactly one worker per task. */
int mpe__pool_respawn(lua_State *L, mpe_pool *p, mpe_err *e)
{
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int slot = -1;
        prune_work(p);
        if (!p->stopping && p->work)
            for (int i = 0; i < p->n; i++)
                if (p->w[i].state == W_GONE) {
                    slot = i;
                    p->w[i].state = W_EMPTY;
                    p->respawn--;
                    break;
                }
        pthread_mutex_unlock(&p->mu);
        if (slot < 0)
            return 0;
        if (spawn(L, p, slot, e) != 0)
            return -1;
    }
}

/* ---- cutting chunks -------------------------------------------------------------- */

static int has_items(const mpe_job *j)
{
    return !j->cancelled && !j->released && (j->redo || j->cut < j->visible);
}

/* Put j on the work list if it has items to hand out and is not there yet. */
static void enlist(mpe_pool *p, mpe_job *j)
{
    if (j->in_work || !has_items(j))
        return;
    j->in_work = 1;
    j->wnext = NULL;
    if (p->work_last)
        p->work_last->wnext = j;
    else
        p->work = j;
    p->work_last = j;
}

/* Drop jobs without items from the head of the work list. */
static void prune_work(mpe_pool *p)
{
    while (p->work && !has_items(p->work)) {
        mpe_job *j = p->work;
        p->work = j->wnext;
        if (!p->work)
            p->work_last = NULL;
        j->in_work = 0;
    }
}

static double job_cost(mpe_pool *p, mpe_job *j)
{
    if (j->per_item_ns > 0)
        return j->per_item_ns;
    return p->cost_ns > 0 ? p->cost_ns : 1e6; /* unknown: assume 1 ms, so queues stay short */
}

/* Items of a new chunk for job j, at most avail. */
static lua_Integer chunk_size(mpe_pool *p, mpe_job *j, lua_Integer avail)
{
    lua_Integer n;
    if (j->chunksize > 0)
        n = j->chunksize;
    else if (j->per_item_ns <= 0)
        n = 16; /* a small first chunk to measure the cost */
    else {
        n = (lua_Integer)(TARGET_CHUNK_NS / j->per_item_ns);
        if (j->finished) { /* finer at the end, so the workers finish together */
            lua_Integer left = j->visible - j->cut;
            lua_Integer fair = (left + 2 * p->n - 1) / (2 * p->n);
            if (n > fair)
                n = fair;
        }
    }
    if (n < 1)
        n = 1;
    if (n > MAX_CHUNK_ITEMS)
        n = MAX_CHUNK_ITEMS;
    if (n > avail)
        n = avail;
    if (j->kind == MPE_K_ENC) { /* keep frames reasonably small */
        lua_Integer a = j->cut;
        while (n > 1 && j->off[a + n - j->base] - j->off[a - j->base] > MAX_CHUNK_BYTES)
            n /= 2;
    }
    return n;
}

/* Append a chunk frame for items [a, b) of j to w->out. */
static int write_chunk(mpe_buf *b, uint64_t id, mpe_job *j, lua_Integer a, lua_Integer e)
{
    size_t s = b->n;
    uint32_t n = (uint32_t)(e - a);
    if (put32(b, 0) || put8(b, MPE_F_CHUNK) || put64(b, id) || put64(b, j->id) ||
        put64(b, j->fnid) || put8(b, (unsigned)j->mode) || put8(b, (unsigned)j->kind) || put32(b, n))
        return -1;
    switch (j->kind) {
    case MPE_K_RANGE:
        if (put64(b, (uint64_t)(j->rstart + a * j->rstep)) || put64(b, (uint64_t)j->rstep))
            return -1;
        break;
    case MPE_K_INTS:
    case MPE_K_FLOATS:
        if (put(b, j->items.p + 8 * (size_t)(a - j->base), 8 * (size_t)n))
            return -1;
        break;
    default: {
        size_t from = j->off[a - j->base], to = j->off[e - j->base];
        if (put(b, j->items.p + from, to - from))
            return -1;
    }
    }
    patch_len(b, s);
    return 0;
}

/* Give worker w one more chunk if there is work. Returns 1 if it did. */
static int feed_one(mpe_pool *p, wslot *w)
{
    prune_work(p);
    for (mpe_job *j = p->work; j; j = j->wnext) {
        if (!has_items(j))
            continue;
        lua_Integer a, e;
        range *r = j->redo;
        if (r) {
            a = r->a;
            e = r->b;
            if (e - a > 1 && j->chunksize > 0 && e - a > j->chunksize)
                e = a + j->chunksize;
        } else if (j->cut < j->visible) {
            a = j->cut;
            e = a + chunk_size(p, j, j->visible - j->cut);
        } else
            continue;
        if (p->o.maxtasks > 0) {
            long room = p->o.maxtasks - w->assigned;
            if (room <= 0)
                return 0;
            if (e - a > room)
                e = a + room;
        }
        chunk *c = malloc(sizeof *c);
        if (!c)
            return 0;
        c->id = ++p->next_id;
        c->job = j;
        c->a = a;
        c->b = e;
        c->got = 0;
        c->next = NULL;
        if (j->fds.n > 0) {
            /* The descriptors go alone in their own message, just before. */
            size_t s = w->out.n;
            if (small_frame(&w->out, MPE_F_FDS, j->id) != 0) {
                free(c);
                return 0;
            }
            (void)s;
        }
        if (write_chunk(&w->out, c->id, j, a, e) != 0) {
            free(c);
            return 0;
        }
        if (r) {
            r->a = e;
            if (r->a >= r->b) {
                j->redo = r->next;
                free(r);
            }
        } else
            j->cut = e;
        j->refs++;
        if (w->last)
            w->last->next = c;
        else
            w->inflight = c;
        w->last = c;
        w->ninflight++;
        w->queued_ns += job_cost(p, j) * (double)(e - a);
        w->assigned += (long)(e - a);
        return 1;
    }
    return 0;
}

static void feed(mpe_pool *p, wslot *w)
{
    if (p->stopping)
        return;
    while (w->ninflight < 2 || (w->ninflight < MAX_INFLIGHT && w->queued_ns < QUEUE_NS))
        if (!feed_one(p, w))
            break;
}

/* ---- outcomes --------------------------------------------------------------------- */

static void free_job(mpe_pool *p, mpe_job *j);

static void maybe_free(mpe_pool *p, mpe_job *j)
{
    if (j->released && j->refs == 0)
        free_job(p, j);
}

static void account(mpe_pool *p, mpe_job *j, lua_Integer n)
{
    j->done += n;
    if (j->finished && j->done >= j->visible)
        pthread_cond_broadcast(&p->cv);
    (void)p;
}

static void redo(mpe_pool *p, mpe_job *j, lua_Integer a, lua_Integer b)
{
    if (a >= b || j->cancelled || j->released)
        return;
    range *r = malloc(sizeof *r);
    if (!r)
        return; /* cannot happen in practice; the items then count as lost below */
    r->a = a;
    r->b = b;
    r->next = j->redo;
    j->redo = r;
    enlist(p, j);
}

static void fail_item(mpe_pool *p, wslot *w, mpe_job *j, lua_Integer i, const char *kind, const char *text)
{
    mpe_msg *m = calloc(1, sizeof *m);
    if (!m)
        return;
    m->type = MPE_MSG_FAIL;
    m->job = j;
    m->index = i + 1;
    m->worker = w->number;
    m->pid = w->pid;
    m->kind = kind;
    snprintf(m->text, sizeof m->text, "%s", text);
    post(p, m);
    account(p, j, 1);
    if (j->raise_first)
        j->cancelled = 1;
}

static int retry_item(mpe_pool *p, mpe_job *j, lua_Integer i)
{
    if (p->o.retries <= 0)
        return 0;
    for (attempt *t = j->attempts; t; t = t->next)
        if (t->i == i) {
            if (t->n >= p->o.retries)
                return 0;
            t->n++;
            return 1;
        }
    attempt *t = malloc(sizeof *t);
    if (!t)
        return 0;
    t->i = i;
    t->n = 1;
    t->next = j->attempts;
    j->attempts = t;
    return 1;
}

static void describe_status(char *s, size_t n, int st, int timed_out, double timeout)
{
    static const struct {
        int sig;
        const char *name;
    } names[] = {{SIGKILL, "SIGKILL"}, {SIGTERM, "SIGTERM"}, {SIGSEGV, "SIGSEGV"}, {SIGABRT, "SIGABRT"},
                 {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},   {SIGINT, "SIGINT"},   {SIGHUP, "SIGHUP"},
                 {SIGPIPE, "SIGPIPE"}, {SIGILL, "SIGILL"},   {SIGXCPU, "SIGXCPU"}};
    if (timed_out) {
        snprintf(s, n, "mpe: timeout: task ran longer than %g s; its worker was killed", timeout);
        return;
    }
    if (WIFSIGNALED(st)) {
        const char *name = NULL;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (names[i].sig == WTERMSIG(st))
                name = names[i].name;
        if (name)
            snprintf(s, n, "worker died: killed by signal %d (%s)", WTERMSIG(st), name);
        else
            snprintf(s, n, "worker died: killed by signal %d", WTERMSIG(st));
    } else if (WIFEXITED(st))
        snprintf(s, n, "worker died: exited with status %d", WEXITSTATUS(st));
    else
        snprintf(s, n, "worker died");
}

/* Worker w is gone (EOF on its channel). Reap it, blame the item it was
 * running, put the rest of its chunks back, and ask for a replacement. */
static void on_death(mpe_pool *p, wslot *w, int idx)
{
    int st = 0;
    pid_t r;
    do
        r = waitpid(w->pid, &st, 0);
    while (r < 0 && errno == EINTR);
    mpe__proc_untrack_fd(w->fd);
    close(w->fd);
    w->fd = -1;
    drop_fdq(w);
    int64_t running = p->progress[idx].chunk;
    int32_t item = p->progress[idx].item;
    int crashed = !(WIFEXITED(st) && WEXITSTATUS(st) == 0) || w->inflight != NULL;
    char text[192];
    describe_status(text, sizeof text, st, w->timed_out, p->o.timeout);
    for (chunk *c = w->inflight, *next; c; c = next) {
        next = c->next;
        mpe_job *j = c->job;
        lua_Integer from = c->a + c->got;
        if ((int64_t)c->id == running && c->a + item >= from && c->a + item < c->b) {
            lua_Integer bad = c->a + item;
            redo(p, j, bad + 1, c->b);
            if (!j->cancelled && !j->released && retry_item(p, j, bad))
                redo(p, j, bad, bad + 1);
            else
                fail_item(p, w, j, bad, w->timed_out ? "timeout" : "crash", text);
            redo(p, j, from, bad);
        } else
            redo(p, j, from, c->b);
        if (j->cancelled || j->released) /* nobody waits for these items */
            account(p, j, 0);
        j->refs--;
        free(c);
        maybe_free(p, j);
    }
    (void)crashed;
    w->inflight = w->last = NULL;
    w->ninflight = 0;
    w->queued_ns = 0;
    w->state = W_GONE;
    p->respawn++;
    pthread_cond_broadcast(&p->cv);
}

static chunk *find_chunk(wslot *w, uint64_t id)
{
    for (chunk *c = w->inflight; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

static void drop_chunk(mpe_pool *p, wslot *w, chunk *c)
{
    chunk **pp = &w->inflight, *prev = NULL;
    while (*pp != c) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    *pp = c->next;
    if (w->last == c)
        w->last = prev;
    w->ninflight--;
    mpe_job *j = c->job;
    w->queued_ns -= job_cost(p, j) * (double)(c->b - c->a);
    if (w->queued_ns < 0 || w->ninflight == 0)
        w->queued_ns = 0;
    j->refs--;
    free(c);
    maybe_free(p, j);
}

/* A result frame from worker w: [u64 chunk][u32 from][u32 count][u8 flags][u64 ns][payload]. */
static void on_result(mpe_pool *p, wslot *w, const char *s, uint32_t len)
{
    mpe_rd r;
    uint64_t id, ns;
    uint32_t from, count;
    unsigned flags;
    mpe__rd_init(&r, s, len);
    if (mpe__rd_u64(&r, &id) || mpe__rd_u32(&r, &from) || mpe__rd_u32(&r, &count) ||
        mpe__rd_u8(&r, &flags) || mpe__rd_u64(&r, &ns))
        return;
    chunk *c = find_chunk(w, id);
    if (!c)
        return;
    mpe_job *j = c->job;
    if (!j->cancelled && !j->released) {
        size_t plen = len - r.pos;
        mpe_msg *m = malloc(sizeof *m + plen);
        if (m) {
            memset(m, 0, sizeof *m);
            m->type = MPE_MSG_RESULT;
            m->job = j;
            m->index = c->a + from + 1;
            m->count = count;
            m->flags = flags;
            m->worker = w->number;
            m->pid = w->pid;
            if ((flags & MPE_R_FDS) && w->fdq_n > 0) {
                m->fds = w->fdq[w->fdq_head];
                w->fdq_head = (w->fdq_head + 1) % 8;
                w->fdq_n--;
            }
            m->len = plen;
            if (plen)
                memcpy(m->data, s + r.pos, plen);
            post(p, m);
        }
        if (flags & MPE_R_ERRORS && j->raise_first)
            j->cancelled = 1;
    } else if ((flags & MPE_R_FDS) && w->fdq_n > 0) { /* nobody wants them */
        mpe_fds *f = &w->fdq[w->fdq_head];
        for (int k = 0; k < f->n; k++)
            close(f->fd[k]);
        w->fdq_head = (w->fdq_head + 1) % 8;
        w->fdq_n--;
    }
    c->got += count;
    account(p, j, count);
    if (flags & MPE_R_FINAL) {
        lua_Integer n = c->b - c->a;
        double per = n > 0 ? (double)ns / (double)n : 0;
        if (per <= 0)
            per = 1;
        j->per_item_ns = j->per_item_ns > 0 ? 0.5 * j->per_item_ns + 0.5 * per : per;
        p->cost_ns = p->cost_ns > 0 ? 0.8 * p->cost_ns + 0.2 * per : per;
        drop_chunk(p, w, c);
    }
}

static void on_initfail(mpe_pool *p, wslot *w, const char *s, uint32_t len)
{
    mpe_msg *m = malloc(sizeof *m + len);
    if (!m)
        return;
    memset(m, 0, sizeof *m);
    m->type = MPE_MSG_INITFAIL;
    m->worker = w->number;
    m->pid = w->pid;
    m->len = len;
    if (len)
        memcpy(m->data, s, len);
    post(p, m);
    /* The pool cannot work without its initializer: stop feeding anyone. */
    p->stopping = 1;
}

static void read_frames(mpe_pool *p, wslot *w)
{
    size_t off = 0;
    unsigned type;
    uint32_t len;
    while (w->state == W_LIVE && mpe__frame_peek(&w->in, off, &type, &len)) {
        const char *s = w->in.p + off + MPE_FRAME_HDR;
        if (type == MPE_F_RESULT)
            on_result(p, w, s, len);
        else if (type == MPE_F_INITFAIL)
            on_initfail(p, w, s, len);
        off += MPE_FRAME_HDR + len;
    }
    if (off > 0) { /* w->in.p may still be NULL when nothing was read */
        memmove(w->in.p, w->in.p + off, w->in.n - off);
        w->in.n -= off;
    }
}

/* ---- the dispatcher thread --------------------------------------------------------- */

static void check_timeouts(mpe_pool *p, int64_t now)
{
    if (p->o.timeout <= 0)
        return;
    for (int i = 0; i < p->n; i++) {
        wslot *w = &p->w[i];
        if (w->state != W_LIVE || w->timed_out)
            continue;
        int64_t c = __atomic_load_n(&p->progress[i].chunk, __ATOMIC_ACQUIRE);
        if (c != 0 && now - p->progress[i].started_ns > (int64_t)(p->o.timeout * 1e9)) {
            w->timed_out = 1;
            kill(w->pid, SIGKILL);
        }
    }
}

static void *dispatcher(void *arg)
{
    mpe_pool *p = arg;
    struct pollfd *pf = calloc((size_t)p->n + 1, sizeof *pf);
    int *slot = calloc((size_t)p->n + 1, sizeof *slot);
    if (!pf || !slot) {
        free(pf);
        free(slot);
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    while (!p->quit) {
        int np = 1;
        pf[0].fd = p->efd;
        pf[0].events = POLLIN;
        for (int i = 0; i < p->n; i++) {
            wslot *w = &p->w[i];
            if (w->state != W_LIVE)
                continue;
            feed(p, w);
            pf[np].fd = w->fd;
            pf[np].events = POLLIN | (w->out.n > w->out_off ? POLLOUT : 0);
            slot[np++] = i;
        }
        int ms = p->o.timeout > 0 ? 20 : 500;
        p->dispatcher_idle = 1;
        pthread_mutex_unlock(&p->mu);
        int r = poll(pf, (nfds_t)np, ms);
        pthread_mutex_lock(&p->mu);
        p->dispatcher_idle = 0;
        if (r < 0 && errno != EINTR)
            break;
        if (r > 0 && (pf[0].revents & POLLIN)) {
            uint64_t v;
            ssize_t rr = read(p->efd, &v, sizeof v);
            (void)rr;
        }
        for (int k = 1; r > 0 && k < np; k++) {
            wslot *w = &p->w[slot[k]];
            if (w->state != W_LIVE)
                continue;
            if (pf[k].revents & POLLOUT) {
                const int *fds = NULL;
                int nfds = 0;
                size_t len = w->out.n - w->out_off;
                /* An F_FDS frame travels alone, with the job's descriptors. */
                unsigned type;
                uint32_t flen;
                /* Stop before the next F_FDS frame: it must start a message of its own. */
                for (size_t o = w->out_off; o < w->out.n && mpe__frame_peek(&w->out, o, &type, &flen);
                     o += MPE_FRAME_HDR + flen)
                    if (type == MPE_F_FDS && o > w->out_off) {
                        len = o - w->out_off;
                        break;
                    }
                if (mpe__frame_peek(&w->out, w->out_off, &type, &flen) && type == MPE_F_FDS) {
                    mpe_rd rd;
                    uint64_t jid = 0;
                    mpe__rd_init(&rd, w->out.p + w->out_off + MPE_FRAME_HDR, flen);
                    mpe__rd_u64(&rd, &jid);
                    for (mpe_job *j = p->jobs; j; j = j->next)
                        if (j->id == jid) {
                            fds = j->fds.fd;
                            nfds = j->fds.n;
                        }
                    for (fnentry *f = p->fns; f && !fds; f = f->next)
                        if (f->id == jid) {
                            fds = f->fds.fd;
                            nfds = f->fds.n;
                        }
                    len = MPE_FRAME_HDR + flen;
                }
                ssize_t sent = mpe__transport_send(w->fd, w->out.p + w->out_off, len, fds, nfds);
                if (sent > 0) {
                    w->out_off += (size_t)sent;
                    if (w->out_off == w->out.n)
                        w->out.n = w->out_off = 0;
                }
            }
            if (pf[k].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t got;
                do {
                    mpe_fds set = {.n = 0};
                    got = mpe__transport_recv(w->fd, &w->in, &set, 0);
                    if (set.n > 0) {
                        if (w->fdq_n < 8) {
                            w->fdq[(w->fdq_head + w->fdq_n) % 8] = set;
                            w->fdq_n++;
                        } else
                            for (int q = 0; q < set.n; q++)
                                close(set.fd[q]);
                    }
                } while (got > 0 && w->in.n < (4u << 20) && w->fdq_n < 8);
                read_frames(p, w);
                if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
                    on_death(p, w, slot[k]);
            }
        }
        check_timeouts(p, now_ns());
    }
    pthread_mutex_unlock(&p->mu);
    free(pf);
    free(slot);
    return NULL;
}

/* ---- the main thread's side ---------------------------------------------------------- */

mpe_pool *mpe__pool_new(lua_State *L, const mpe_pool_opts *o, mpe_err *e)
{
    mpe_pool *p = calloc(1, sizeof *p);
    if (!p) {
        mpe__seterr(e, "pool: not enough memory");
        return NULL;
    }
    p->o = *o;
    p->n = o->workers;
    p->owner = getpid();
    p->efd = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->w = calloc((size_t)p->n, sizeof *p->w);
    p->progress_len = ((size_t)p->n * sizeof(mpe_progress) + 4095) & ~(size_t)4095;
    p->progress = mmap(NULL, p->progress_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p->progress == MAP_FAILED) {
        p->progress = NULL;
        mpe__seterr(e, "pool: mmap: %s", strerror(errno));
        goto fail;
    }
    if (!p->w) {
        mpe__seterr(e, "pool: not enough memory");
        goto fail;
    }
    for (int i = 0; i < p->n; i++)
        p->w[i].fd = -1;
    p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->efd < 0) {
        mpe__seterr(e, "pool: eventfd: %s", strerror(errno));
        goto fail;
    }
    mpe__proc_track_fd(p->efd);
    /* Fork the workers before the dispatcher thread exists: a single-threaded fork. */
    for (int i = 0; i < p->n; i++)
        if (spawn(L, p, i, e) != 0)
            goto fail;
    if (pthread_create(&p->thread, NULL, dispatcher, p) != 0) {
        mpe__seterr(e, "pool: pthread_create failed");
        goto fail;
    }
    p->thread_started = 1;
    return p;
fail:
    mpe__pool_free(p);
    return NULL;
}

uint64_t mpe__pool_function(lua_State *L, mpe_pool *p, int idx)
{
    idx = lua_absindex(L, idx);
    /* registry["mpe.pool.fns"][p] is a table function -> id (weak keys) */
    lua_getfield(L, LUA_REGISTRYINDEX, "mpe.pool.fns");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "mpe.pool.fns");
    }
    lua_pushlightuserdata(L, p);
    lua_rawget(L, -2);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_pushlightuserdata(L, p);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    if (lua_isinteger(L, -1)) {
        /* Still cached? Only this (main) thread changes the list, so it may
         * read it without the lock. */
        uint64_t id = (uint64_t)lua_tointeger(L, -1);
        for (fnentry *f = p->fns; f; f = f->next)
            if (f->id == id) {
                lua_pop(L, 3);
                return id;
            }
    }
    lua_pop(L, 1);
    /* Encode it once, into a frame owned by a Lua box until it is handed over. */
    mpe_buf *b = mpe__buf_box(L);
    mpe_fds *fds = mpe__fds_box(L);
    size_t s = mpe__frame_begin(L, b, MPE_F_FUNC);
    pthread_mutex_lock(&p->mu);
    uint64_t id = ++p->next_id;
    pthread_mutex_unlock(&p->mu);
    mpe__buf_put_u64(L, b, id);
    size_t body = b->n;
    mpe__encode(L, idx, b, "function", fds);
    mpe__frame_end(b, s);
    /* A closure created anew for every call (a function literal inside a
     * loop) encodes to the same bytes each time: reuse the entry. */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = body; i < b->n; i++)
        h = (h ^ (unsigned char)b->p[i]) * 1099511628211ULL;
    pthread_mutex_lock(&p->mu);
    for (fnentry *g = p->fns; g; g = g->next)
        if (g->hash == h && g->frame.n == b->n &&
            memcmp(g->frame.p + body, b->p + body, b->n - body) == 0) {
            id = g->id;
            pthread_mutex_unlock(&p->mu);
            lua_pop(L, 2); /* the boxes (the fds box closes its duplicates) */
            lua_pushvalue(L, idx);
            lua_pushinteger(L, (lua_Integer)id);
            lua_rawset(L, -3);
            lua_pop(L, 2);
            return id;
        }
    pthread_mutex_unlock(&p->mu);
    fnentry *f = calloc(1, sizeof *f);
    if (!f)
        luaL_error(L, "mpe: not enough memory");
    f->id = id;
    f->hash = h;
    f->frame = *b; /* ownership moves to the entry */
    memset(b, 0, sizeof *b);
    f->fds = *fds;
    fds->n = 0;
    pthread_mutex_lock(&p->mu);
    f->next = p->fns;
    p->fns = f;
    p->nfns++;
    for (int i = 0; i < p->n; i++)
        if (p->w[i].state == W_LIVE)
            send_function(&p->w[i], f);
    /* Forget the oldest unused functions beyond the cache size. */
    if (p->nfns > FN_CACHE) {
        fnentry **pp = &p->fns;
        int kept = 0;
        while (*pp) {
            fnentry *g = *pp;
            if (++kept > FN_CACHE && g->jobs == 0) {
                *pp = g->next;
                p->nfns--;
                for (int i = 0; i < p->n; i++)
                    if (p->w[i].state == W_LIVE)
                        small_frame(&p->w[i].out, MPE_F_DROP, g->id);
                mpe__buf_free(&g->frame);
                for (int k = 0; k < g->fds.n; k++)
                    close(g->fds.fd[k]);
                free(g);
            } else
                pp = &g->next;
        }
    }
    wake(p);
    pthread_mutex_unlock(&p->mu);
    lua_pop(L, 2); /* the boxes, now empty */
    lua_pushvalue(L, idx);
    lua_pushinteger(L, (lua_Integer)id);
    lua_rawset(L, -3);
    lua_pop(L, 2);
    return id;
}

mpe_job *mpe__pool_job(mpe_pool *p, int mode, uint64_t fnid, int chunksize, int raise_first)
{
    mpe_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->mode = mode;
    j->fnid = fnid;
    j->chunksize = chunksize;
    j->raise_first = raise_first;
    pthread_mutex_lock(&p->mu);
    j->id = ++p->next_id;
    for (fnentry *f = p->fns; f; f = f->next)
        if (f->id == fnid)
            f->jobs++;
    j->prev = p->jobs_last;
    if (p->jobs_last)
        p->jobs_last->next = j;
    else
        p->jobs = j;
    p->jobs_last = j;
    pthread_mutex_unlock(&p->mu);
    return j;
}

void mpe__pool_add_range(lua_State *L, mpe_job *j, lua_Integer start, lua_Integer step, lua_Integer count)
{
    (void)L;
    j->kind = MPE_K_RANGE;
    j->rstart = start;
    j->rstep = step;
    j->count = count;
}

char *mpe__pool_packed_begin(lua_State *L, mpe_pool *p, mpe_job *j, int kind, size_t count)
{
    pthread_mutex_lock(&p->mu); /* the store may move: not while the dispatcher copies */
    int r = mpe__buf_grow(&j->items, 8 * count);
    pthread_mutex_unlock(&p->mu);
    if (r != 0)
        luaL_error(L, "mpe: not enough memory for %zu items", count);
    j->kind = kind;
    return j->items.p + j->items.n;
}

void mpe__pool_packed_commit(mpe_pool *p, mpe_job *j, size_t count, int finished)
{
    pthread_mutex_lock(&p->mu);
    j->items.n += 8 * (count - (size_t)(j->count - j->base));
    j->count = j->base + (lua_Integer)count;
    pthread_mutex_unlock(&p->mu);
    mpe__pool_publish(p, j, finished);
}

void mpe__pool_add_enc(lua_State *L, mpe_pool *p, mpe_job *j, const char *s, size_t n, mpe_fds *fds)
{
    j->kind = MPE_K_ENC;
    /* The store may move while the dispatcher copies from it: hold the lock. */
    pthread_mutex_lock(&p->mu);
    size_t need = (size_t)(j->count - j->base) + 2;
    if (need > j->offcap) {
        size_t cap = j->offcap ? j->offcap * 2 : 4; /* most jobs of one item are apply calls */
        while (cap < need)
            cap *= 2;
        size_t *o = realloc(j->off, cap * sizeof *o);
        if (!o) {
            pthread_mutex_unlock(&p->mu);
            luaL_error(L, "mpe: not enough memory for the items");
        }
        j->off = o;
        j->offcap = cap;
    }
    if (mpe__buf_grow(&j->items, n) != 0) {
        pthread_mutex_unlock(&p->mu);
        luaL_error(L, "mpe: not enough memory for the items");
    }
    if (j->count == j->base)
        j->off[0] = j->items.n;
    memcpy(j->items.p + j->items.n, s, n);
    j->items.n += n;
    j->count++;
    j->off[j->count - j->base] = j->items.n;
    if (fds)
        for (int i = 0; i < fds->n && j->fds.n < MPE_MAX_FDS; i++)
            j->fds.fd[j->fds.n++] = fds->fd[i];
    pthread_mutex_unlock(&p->mu);
}

/* Drop stored items that no chunk can need again, so that a stream through
 * imap keeps bounded memory. */
static void trim(mpe_pool *p, mpe_job *j)
{
    if (j->kind != MPE_K_ENC && j->kind != MPE_K_INTS && j->kind != MPE_K_FLOATS)
        return;
    lua_Integer low = j->cut;
    for (range *r = j->redo; r; r = r->next)
        if (r->a < low)
            low = r->a;
    for (int i = 0; i < p->n; i++)
        for (chunk *c = p->w[i].inflight; c; c = c->next)
            if (c->job == j && c->a + c->got < low)
                low = c->a + c->got;
    if (low - j->base < 4096 || 2 * (low - j->base) < j->count - j->base)
        return; /* not worth a move yet */
    size_t cut;
    if (j->kind == MPE_K_ENC) {
        cut = j->off[low - j->base];
        size_t nidx = (size_t)(j->count - low) + 1;
        memmove(j->off, j->off + (low - j->base), nidx * sizeof *j->off);
        for (size_t i = 0; i < nidx; i++)
            j->off[i] -= cut;
    } else
        cut = 8 * (size_t)(low - j->base);
    memmove(j->items.p, j->items.p + cut, j->items.n - cut);
    j->items.n -= cut;
    j->base = low;
}

void mpe__pool_publish(mpe_pool *p, mpe_job *j, int finished)
{
    pthread_mutex_lock(&p->mu);
    trim(p, j);
    j->visible = j->count;
    if (finished)
        j->finished = 1;
    enlist(p, j);
    if (j->finished && j->done >= j->visible)
        pthread_cond_broadcast(&p->cv);
    /* Wake the dispatcher only if a worker waits for work: a busy worker's
     * next results wake it anyway, and a write per apply_async would cost
     * more than the task. */
    for (int i = 0; i < p->n; i++)
        if (p->w[i].state == W_LIVE && p->w[i].ninflight < 2) {
            wake(p);
            break;
        }
    pthread_mutex_unlock(&p->mu);
}

mpe_msg *mpe__pool_take(mpe_pool *p)
{
    pthread_mutex_lock(&p->mu);
    mpe_msg *m = p->inbox;
    if (m) {
        p->inbox = m->next;
        if (!p->inbox)
            p->inbox_last = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    return m;
}

int mpe__pool_msg_live(const mpe_msg *m)
{
    return m->job && !m->job->released;
}

void mpe__pool_msg_done(mpe_pool *p, mpe_msg *m)
{
    for (int i = 0; i < m->fds.n; i++)
        if (m->fds.fd[i] >= 0)
            close(m->fds.fd[i]);
    if (m->job) {
        pthread_mutex_lock(&p->mu);
        m->job->refs--;
        maybe_free(p, m->job);
        pthread_mutex_unlock(&p->mu);
    }
    free(m);
}

int mpe__pool_wait(mpe_pool *p, double deadline)
{
    pthread_mutex_lock(&p->mu);
    int news = p->inbox != NULL || p->respawn > 0;
    if (!news) {
        if (deadline < 0) {
            /* Wake ten times a second, so that callers can check for signals. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 100000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        } else {
            double until = deadline;
            if (until > mpe__proc_now() + 0.1)
                until = mpe__proc_now() + 0.1;
            struct timespec ts;
            ts.tv_sec = (time_t)until;
            ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
        news = p->inbox != NULL || p->respawn > 0;
    }
    pthread_mutex_unlock(&p->mu);
    return news || deadline < 0 || mpe__proc_now() < deadline;
}

void mpe__pool_job_progress(mpe_pool *p, mpe_job *j, lua_Integer *done, lua_Integer *count)
{
    pthread_mutex_lock(&p->mu);
    *done = j->done;
    *count = j->finished ? j->visible : -1;
    pthread_mutex_unlock(&p->mu);
}

void mpe__pool_job_cancel(mpe_pool *p, mpe_job *j)
{
    pthread_mutex_lock(&p->mu);
    j->cancelled = 1;
    pthread_mutex_unlock(&p->mu);
}

static void free_job(mpe_pool *p, mpe_job *j)
{
    if (j->in_work) {
        mpe_job **wp = &p->work, *wprev = NULL;
        while (*wp && *wp != j) {
            wprev = *wp;
            wp = &(*wp)->wnext;
        }
        if (*wp) {
            *wp = j->wnext;
            if (p->work_last == j)
                p->work_last = wprev;
        }
        j->in_work = 0;
    }
    if (j->prev)
        j->prev->next = j->next;
    else if (p->jobs == j)
        p->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else if (p->jobs_last == j)
        p->jobs_last = j->prev;
    for (fnentry *f = p->fns; f; f = f->next)
        if (f->id == j->fnid)
            f->jobs--;
    if (j->fds.n > 0)
        for (int i = 0; i < p->n; i++)
            if (p->w[i].state == W_LIVE)
                small_frame(&p->w[i].out, MPE_F_JOBEND, j->id);
    for (int i = 0; i < j->fds.n; i++)
        close(j->fds.fd[i]);
    while (j->redo) {
        range *r = j->redo;
        j->redo = r->next;
        free(r);
    }
    while (j->attempts) {
        attempt *t = j->attempts;
        j->attempts = t->next;
        free(t);
    }
    mpe__buf_free(&j->items);
    free(j->off);
    free(j);
}

void mpe__pool_job_release(mpe_pool *p, mpe_job *j)
{
    pthread_mutex_lock(&p->mu);
    j->released = 1;
    j->cancelled = 1;
    /* Messages still queued for it are dropped by the reader (released jobs). */
    maybe_free(p, j);
    pthread_mutex_unlock(&p->mu);
}

int mpe__pool_alive(mpe_pool *p)
{
    pthread_mutex_lock(&p->mu);
    int n = 0;
    for (int i = 0; i < p->n; i++)
        n += p->w[i].state == W_LIVE;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int mpe__pool_started(mpe_pool *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->started;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void mpe__pool_stop(mpe_pool *p, int now)
{
    if (p->owner != getpid())
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    for (int i = 0; i < p->n; i++) {
        wslot *w = &p->w[i];
        if (w->state != W_LIVE)
            continue;
        if (now)
            kill(w->pid, SIGKILL);
        else
            small_frame(&w->out, MPE_F_STOP, 0);
    }
    wake(p);
    pthread_mutex_unlock(&p->mu);
    /* Wait for every worker to go: the dispatcher reaps each on EOF and
     * broadcasts. A graceful stop that takes longer than 10 s is forced. */
    double give_up = mpe__proc_now() + 10;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        int live = 0;
        for (int i = 0; i < p->n; i++)
            live += p->w[i].state == W_LIVE;
        if (!live || !p->thread_started)
            break;
        if (mpe__proc_now() > give_up) {
            for (int i = 0; i < p->n; i++)
                if (p->w[i].state == W_LIVE)
                    kill(p->w[i].pid, SIGKILL);
            give_up = mpe__proc_now() + 10;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    if (p->thread_started) {
        pthread_mutex_lock(&p->mu);
        p->quit = 1;
        p->dispatcher_idle = 1;
        wake(p);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL);
        p->thread_started = 0;
    }
    /* Workers forked but never seen by a dispatcher (a failed start). */
    for (int i = 0; i < p->n; i++) {
        wslot *w = &p->w[i];
        if (w->state == W_LIVE) {
            kill(w->pid, SIGKILL);
            int st;
            while (waitpid(w->pid, &st, 0) < 0 && errno == EINTR)
                ;
            mpe__proc_untrack_fd(w->fd);
            close(w->fd);
            w->fd = -1;
            w->state = W_GONE;
        }
    }
}

void mpe__pool_free(mpe_pool *p)
{
    if (!p)
        return;
    int mine = p->owner == getpid();
    if (mine)
        mpe__pool_stop(p, 1);
    while (p->inbox) {
        mpe_msg *m = p->inbox;
        p->inbox = m->next;
        for (int i = 0; i < m->fds.n; i++)
            if (mine)
                close(m->fds.fd[i]);
        free(m);
    }
    for (int i = 0; p->w && i < p->n; i++) {
        wslot *w = &p->w[i];
        while (w->inflight) {
            chunk *c = w->inflight;
            w->inflight = c->next;
            free(c);
        }
        if (mine)
            drop_fdq(w);
        mpe__buf_free(&w->in);
        mpe__buf_free(&w->out);
    }
    while (p->jobs) {
        mpe_job *j = p->jobs;
        if (!mine)
            j->fds.n = 0; /* a forked copy does not own the descriptors */
        free_job(p, j);   /* unlinks j from p->jobs */
    }
    while (p->fns) {
        fnentry *f = p->fns;
        p->fns = f->next;
        for (int k = 0; mine && k < f->fds.n; k++)
            close(f->fds.fd[k]);
        mpe__buf_free(&f->frame);
        free(f);
    }
    if (p->efd >= 0 && mine) { /* a forked copy lost it at fork: the number may be reused */
        mpe__proc_untrack_fd(p->efd);
        close(p->efd);
    }
    if (p->progress)
        munmap(p->progress, p->progress_len);
    free(p->w);
    if (mine) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
    }
    free(p);
}
