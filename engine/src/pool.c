/* pool.c -- the scheduler's main-thread side: creating and replacing
 * workers, the function cache, jobs and their item stores, messages, and
 * stopping. The other thread's side, the dispatcher, is dispatch.c.
 * SPDX-License-Identifier: MIT
 *
 * Two threads share a pool. The main thread (the only one that touches Lua)
 * creates jobs, fills their item stores and reads messages; the dispatcher
 * thread moves the work, so it goes on while the main thread runs Lua code
 * that never calls mpe. Shared fields are guarded by p->mu (pool.h). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "err.h"
#include "lbuf.h"
#include "pool.h"
#include "pool_api.h"
#include "proc.h"
#include "protocol.h"
#include "shm.h"
#include "transport.h"
#include "worker.h"

static void wake(mpe_pool *p)
{
    if (p->dispatcher_idle) {
        uint64_t one = 1;
        ssize_t r = write(p->efd, &one, sizeof one);
        (void)r; /* a full eventfd is already a wakeup */
        p->dispatcher_idle = 0;
    }
}

/* Queue function f for worker w: its descriptors first, if it has any. */
static int send_function(wslot *w, const fnentry *f)
{
    if (f->fds.n > 0 && mpe__dispatch_frame(&w->out, MPE_F_FDS, f->id) != 0)
        return -1;
    return mpe__dispatch_put(&w->out, f->frame.p, f->frame.n);
}

/* ---- workers ------------------------------------------------------------------- */

/* What start's ud points at: the worker's configuration comes first, so a
 * backend that starts workers elsewhere (mpi.c) reads it (transport.h). */
typedef struct spawn_ctx {
    mpe_worker_cfg cfg;
    mpe_pool *p;
} spawn_ctx;

static void worker_entry(lua_State *L, mpe_link *self, void *ud)
{
    spawn_ctx *c = ud;
    c->cfg.link = self;
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
    c.cfg.timeout = p->o.timeout;
    c.cfg.init_ref = p->o.init_ref;
    c.cfg.initargs_ref = p->o.initargs_ref;
    c.cfg.progress = &p->progress[i];
    c.cfg.tp = p->tp;
    c.cfg.handler = p->o.handler;
    memset((void *)&p->progress[i], 0, sizeof p->progress[i]);
    pid_t pid;
    mpe_link *link = p->tp->start(p->t, L, &p->progress[i], worker_entry, &c, &pid, e);
    if (!link)
        return -1;
    pthread_mutex_lock(&p->mu);
    wslot *w = &p->w[i];
    w->state = W_LIVE;
    w->pid = pid;
    w->link = link;
    w->number = c.cfg.number;
    w->ninflight = 0;
    w->queued_ns = 0;
    w->assigned = 0;
    w->timed_out = 0;
    w->broken = 0;
    w->oom = 0;
    w->in.n = w->out.n = w->out_off = w->tx.n = w->tx_off = 0;
    if (w->has)
        memset(w->has, 0, w->hascap); /* a new worker knows no segment */
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
        mpe__dispatch_prune(p);
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
    p->owner = mpe__shm_self();
    p->efd = -1;
    p->tp = o->transport ? o->transport : &mpe__transport_socketpair;
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
    p->t = p->tp->open(p->n, e);
    if (!p->t)
        goto fail;
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
    if (pthread_create(&p->thread, NULL, mpe__dispatch_main, p) != 0) {
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
    mpe__encode(L, idx, b, "function", p->o.spread ? &mpe__codec_remote : fds);
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
                        mpe__dispatch_frame(&p->w[i].out, MPE_F_DROP, g->id);
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

/* Give j its id and put it on the pool's job list (the lock held). */
static void link_job(mpe_pool *p, mpe_job *j)
{
    j->id = ++p->next_id;
    for (fnentry *f = p->fns; f; f = f->next)
        if (f->id == j->fnid)
            f->jobs++;
    j->prev = p->jobs_last;
    if (p->jobs_last)
        p->jobs_last->next = j;
    else
        p->jobs = j;
    p->jobs_last = j;
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
    j->limit = LUA_MAXINTEGER;
    pthread_mutex_lock(&p->mu);
    link_job(p, j);
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

/* The pool's id for the segment behind fd, which the pool takes (closed if
 * the segment is known already); j gets a reference. -1 on ENOMEM (fd then
 * still the caller's) or when fstat fails (fd closed). Under p->mu. */
static int seg_intern(mpe_pool *p, mpe_job *j, int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    int id = -1;
    if (p->seg_hint < p->nsegs && p->segs[p->seg_hint].fd >= 0 && p->segs[p->seg_hint].ino == st.st_ino &&
        p->segs[p->seg_hint].dev == st.st_dev)
        id = p->seg_hint;
    for (int i = 0; id < 0 && i < p->nsegs; i++)
        if (p->segs[i].fd >= 0 && p->segs[i].ino == st.st_ino && p->segs[i].dev == st.st_dev)
            id = i;
    if (j->nsegs == j->segcap) {
        int cap = j->segcap ? 2 * j->segcap : 4;
        uint32_t *g = realloc(j->segs, (size_t)cap * sizeof *g);
        if (!g)
            return -1;
        j->segs = g;
        j->segcap = cap;
    }
    if (id >= 0) {
        close(fd);
    } else {
        for (int i = 0; id < 0 && i < p->nsegs; i++)
            if (p->segs[i].fd < 0)
                id = i;
        if (id < 0) {
            if (p->nsegs == p->segcap) {
                int cap = p->segcap ? 2 * p->segcap : 16;
                pseg *g = realloc(p->segs, (size_t)cap * sizeof *g);
                if (!g)
                    return -1;
                p->segs = g;
                p->segcap = cap;
            }
            id = p->nsegs++;
        }
        p->segs[id] = (pseg){.fd = fd, .dev = st.st_dev, .ino = st.st_ino, .refs = 0};
    }
    p->seg_hint = id;
    int known = 0;
    for (int i = j->nsegs - 1; i >= 0 && !known; i--)
        known = j->segs[i] == (uint32_t)id;
    if (!known) {
        j->segs[j->nsegs++] = (uint32_t)id;
        p->segs[id].refs++;
    }
    return id;
}

/* Drop j's references to the pool's segments; a segment nobody refers to is
 * closed and its id freed, workers told to close theirs. Under p->mu. */
static void seg_release(mpe_pool *p, mpe_job *j, int mine)
{
    for (int k = 0; k < j->nsegs; k++) {
        pseg *g = &p->segs[j->segs[k]];
        if (--g->refs > 0)
            continue;
        if (mine)
            close(g->fd);
        g->fd = -1;
        for (int i = 0; i < p->n; i++) {
            wslot *w = &p->w[i];
            if (j->segs[k] < w->hascap && w->has[j->segs[k]]) {
                w->has[j->segs[k]] = 0;
                if (w->state == W_LIVE && mine)
                    mpe__dispatch_frame32(&w->out, MPE_F_SEGDROP, j->segs[k]);
            }
        }
    }
    free(j->segs);
    j->segs = NULL;
    j->nsegs = j->segcap = 0;
}

/* Append one item, [varint k][k x u32 segment id][encoding] (k < 128, so one
 * varint byte), to j's store, which has room for it and its offset. */
static void put_item(mpe_job *j, const uint32_t *ids, int k, const char *s, size_t n)
{
    if (j->count == j->base)
        j->off[0] = j->items.n;
    unsigned char *d = (unsigned char *)j->items.p + j->items.n;
    *d++ = (unsigned char)k;
    for (int i = 0; i < k; i++)
        for (int b = 0; b < 4; b++)
            *d++ = (unsigned char)(ids[i] >> (8 * b));
    memcpy(d, s, n);
    j->items.n += 1 + 4 * (size_t)k + n;
    j->count++;
    j->off[j->count - j->base] = j->items.n;
}

void mpe__pool_add_enc(lua_State *L, mpe_pool *p, mpe_job *j, const char *s, size_t n, mpe_fds *fds)
{
    j->kind = MPE_K_ENC;
    uint32_t ids[MPE_MAX_FDS];
    int k = fds ? fds->n : 0;
    /* The store may move while the dispatcher copies from it: hold the lock. */
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < k; i++) {
        int id = seg_intern(p, j, fds->fd[i]);
        if (id < 0 && errno == ENOMEM) {
            pthread_mutex_unlock(&p->mu);
            luaL_error(L, "mpe: not enough memory for the items");
        }
        fds->fd[i] = -1;
        ids[i] = (uint32_t)(id < 0 ? UINT32_MAX : (uint32_t)id);
    }
    size_t need = (size_t)(j->count - j->base) + 2;
    if (need > j->offcap) {
        size_t cap = j->offcap ? j->offcap * 2 : 4; /* most jobs of one item are apply calls */
        while (cap < need)
            cap *= 2;
        size_t *o = realloc(j->off == j->off1 ? NULL : j->off, cap * sizeof *o);
        if (!o) {
            pthread_mutex_unlock(&p->mu);
            luaL_error(L, "mpe: not enough memory for the items");
        }
        if (j->off == j->off1)
            memcpy(o, j->off1, sizeof j->off1);
        j->off = o;
        j->offcap = cap;
    }
    /* [varint k][k x u32 segment id][encoding]: k < 128, so one varint byte. */
    size_t head = 1 + 4 * (size_t)k;
    if (mpe__buf_grow(&j->items, head + n) != 0) {
        pthread_mutex_unlock(&p->mu);
        luaL_error(L, "mpe: not enough memory for the items");
    }
    put_item(j, ids, k, s, n);
    pthread_mutex_unlock(&p->mu);
}

/* Drop stored items that no chunk can need again, so that a stream through
 * imap keeps bounded memory. */
static void trim(mpe_pool *p, mpe_job *j)
{
    /* Only encoded stores, the ones streams (imap, mpe map) grow: a packed
     * store is written in place by mpe__pool_packed_begin's caller while it
     * is published, so it must not move, and it never outgrows its table. */
    if (j->kind != MPE_K_ENC)
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

static void publish_locked(mpe_pool *p, mpe_job *j, int finished)
{
    trim(p, j);
    j->visible = j->count < j->limit ? j->count : j->limit;
    if (finished)
        j->finished = 1;
    mpe__dispatch_enlist(p, j);
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
}

void mpe__pool_publish(mpe_pool *p, mpe_job *j, int finished)
{
    pthread_mutex_lock(&p->mu);
    publish_locked(p, j, finished);
    pthread_mutex_unlock(&p->mu);
}

mpe_job *mpe__pool_job_one(lua_State *L, mpe_pool *p, int mode, uint64_t fnid, int raise_first,
                           const char *s, size_t n, mpe_fds *fds)
{
    int k = fds ? fds->n : 0;
    mpe_job *j = calloc(1, sizeof *j);
    if (!j || mpe__buf_grow(&j->items, 1 + 4 * (size_t)k + n) != 0) {
        free(j);
        luaL_error(L, "mpe: not enough memory for a job");
    }
    j->mode = mode;
    j->fnid = fnid;
    j->raise_first = raise_first;
    j->limit = LUA_MAXINTEGER;
    j->kind = MPE_K_ENC;
    j->off = j->off1;
    j->offcap = 2;
    uint32_t ids[MPE_MAX_FDS];
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < k; i++) {
        int id = seg_intern(p, j, fds->fd[i]);
        fds->fd[i] = -1;
        if (id < 0 && errno == ENOMEM) {
            seg_release(p, j, 1);
            pthread_mutex_unlock(&p->mu);
            mpe__buf_free(&j->items);
            free(j->segs);
            free(j);
            luaL_error(L, "mpe: not enough memory for the items");
        }
        ids[i] = (uint32_t)(id < 0 ? UINT32_MAX : (uint32_t)id);
    }
    link_job(p, j);
    put_item(j, ids, k, s, n);
    publish_locked(p, j, 1);
    pthread_mutex_unlock(&p->mu);
    return j;
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
        mpe__dispatch_maybe_free(p, m->job);
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

void mpe__pool_job_window(mpe_pool *p, mpe_job *j, lua_Integer limit)
{
    pthread_mutex_lock(&p->mu);
    j->limit = limit;
    pthread_mutex_unlock(&p->mu);
    mpe__pool_publish(p, j, 0);
}

void mpe__pool_job_cancel(mpe_pool *p, mpe_job *j)
{
    pthread_mutex_lock(&p->mu);
    j->cancelled = 1;
    pthread_mutex_unlock(&p->mu);
}

void mpe__pool_free_job(mpe_pool *p, mpe_job *j)
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
    seg_release(p, j, p->owner == mpe__shm_self());
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
    if (j->off != j->off1)
        free(j->off);
    free(j);
}

void mpe__pool_job_release(mpe_pool *p, mpe_job *j)
{
    pthread_mutex_lock(&p->mu);
    j->released = 1;
    j->cancelled = 1;
    /* Messages still queued for it are dropped by the reader (released jobs). */
    mpe__dispatch_maybe_free(p, j);
    pthread_mutex_unlock(&p->mu);
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
    if (p->owner != mpe__shm_self())
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    for (int i = 0; i < p->n; i++) {
        wslot *w = &p->w[i];
        if (w->state != W_LIVE)
            continue;
        if (now)
            p->tp->kill(w->link);
        else
            mpe__dispatch_frame(&w->out, MPE_F_STOP, 0);
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
                    p->tp->kill(p->w[i].link);
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
            int st;
            p->tp->kill(w->link);
            p->tp->reap(w->link, &st);
            w->link = NULL;
            w->state = W_GONE;
        }
    }
}

void mpe__pool_free(mpe_pool *p)
{
    if (!p)
        return;
    int mine = p->owner == mpe__shm_self();
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
            mpe__dispatch_drop_fdq(w);
        else if (w->state == W_LIVE)
            p->tp->forget(w->link); /* the worker is the creator's */
        mpe__buf_free(&w->in);
        mpe__buf_free(&w->out);
        mpe__buf_free(&w->tx);
    }
    while (p->jobs) {
        mpe_job *j = p->jobs;
        mpe__pool_free_job(p, j);   /* unlinks j from p->jobs (a forked copy closes nothing) */
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
    if (p->t)
        p->tp->close(p->t);
    for (int i = 0; p->w && i < p->n; i++)
        free(p->w[i].has); /* after the jobs: releasing their segments reads it */
    free(p->segs);
    free(p->w);
    if (mine) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
    }
    free(p);
}
