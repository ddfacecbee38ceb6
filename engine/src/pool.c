/* pool.c -- the scheduler's main-thread side: creating and replacing
 * workers, the function cache, messages, and stopping. Jobs and their item
 * stores are job.c's; the other thread's side, the dispatcher, is dispatch.c.
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
#include "fdio.h"
#include "frames.h"
#include "job.h"
#include "lbuf.h"
#include "pool_api.h"
#include "pool_lua.h"
#include "poolstate.h"
#include "proc.h"
#include "protocol.h"
#include "shm.h"
#include "transport.h"
#include "worker.h"

/* Queue function f for worker w: its descriptors first, if it has any. */
static int send_function(wslot *w, const fnentry *f)
{
    if (f->fds.n > 0 && mpe__frames_u64(&w->out, MPE_F_FDS, f->id) != 0)
        return -1;
    return mpe__frames_put(&w->out, f->frame.p, f->frame.n);
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
    c.cfg.handler = p->o.hooks->handler;
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
    mpe__fdin_close(&w->fdin); /* positions count from the new link's first byte */
    int failed = 0;
    for (fnentry *f = p->fns; f; f = f->next)
        failed |= send_function(w, f);
    mpe__pool_wake(p);
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
        if (!p->stopping && mpe__job_any_work(p))
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

/* Whether function id is still in the cache (main thread: only it changes
 * the list, so it may read it without the lock). */
static int fn_cached(const mpe_pool *p, uint64_t id)
{
    for (const fnentry *f = p->fns; f; f = f->next)
        if (f->id == id)
            return 1;
    return 0;
}

static uint64_t function_id(lua_State *L, mpe_pool *p, int idx);

void mpe__pool_forget_functions(lua_State *L, const mpe_pool *p)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "mpe.pool.fns");
    if (lua_istable(L, -1)) {
        lua_pushlightuserdata(L, (void *)p);
        lua_pushnil(L);
        lua_rawset(L, -3);
    }
    lua_pop(L, 1);
}

uint64_t mpe__pool_function(lua_State *L, mpe_pool *p, int idx)
{
    idx = lua_absindex(L, idx);
    const void *fn = lua_topointer(L, idx);
    if (fn && fn == p->last_fn && fn_cached(p, p->last_fnid))
        return p->last_fnid; /* the same function again (apply_async in a loop): no lookup */
    uint64_t id = function_id(L, p, idx);
    /* Held strongly (at key 0 of the pool's weak-keyed table) while it is
     * the last, so its address cannot name a new object meanwhile. */
    lua_getfield(L, LUA_REGISTRYINDEX, "mpe.pool.fns");
    lua_pushlightuserdata(L, p);
    lua_rawget(L, -2);
    lua_pushvalue(L, idx);
    lua_rawseti(L, -2, 0);
    lua_pop(L, 2);
    p->last_fn = fn;
    p->last_fnid = id;
    return id;
}

static uint64_t function_id(lua_State *L, mpe_pool *p, int idx)
{
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
    if (lua_isinteger(L, -1) && fn_cached(p, (uint64_t)lua_tointeger(L, -1))) {
        uint64_t id = (uint64_t)lua_tointeger(L, -1);
        lua_pop(L, 3);
        return id;
    }
    lua_pop(L, 1);
    /* Encode it once, into a frame owned by a Lua box until it is handed over. */
    mpe_buf *b = mpe__buf_box(L);
    mpe_fds *fds = mpe__fds_box(L);
    pthread_mutex_lock(&p->mu);
    uint64_t id = ++p->next_id;
    pthread_mutex_unlock(&p->mu);
    size_t s;
    if (mpe__frames_func_begin(b, id, &s) != 0)
        luaL_error(L, "mpe: not enough memory");
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
    f->fds = *fds; /* ownership moves to the entry */
    memset(fds, 0, sizeof *fds);
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
                        mpe__frames_u64(&p->w[i].out, MPE_F_DROP, g->id);
                mpe__buf_free(&g->frame);
                mpe__fds_close(&g->fds);
                free(g);
            } else
                pp = &g->next;
        }
    }
    mpe__pool_wake(p);
    pthread_mutex_unlock(&p->mu);
    lua_pop(L, 2); /* the boxes, now empty */
    lua_pushvalue(L, idx);
    lua_pushinteger(L, (lua_Integer)id);
    lua_rawset(L, -3);
    lua_pop(L, 2);
    return id;
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
    return m->job && mpe__job_wanted(m->job);
}

void mpe__pool_msg_done(mpe_pool *p, mpe_msg *m)
{
    mpe__fds_close(&m->fds);
    if (m->job) {
        pthread_mutex_lock(&p->mu);
        mpe__job_unref(p, m->job);
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
            mpe__frames_u64(&w->out, MPE_F_STOP, 0);
    }
    mpe__pool_wake(p);
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
        mpe__pool_wake(p);
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
        if (mine)
            mpe__fds_truncate(&m->fds, 0);
        free(m->fds.fd);
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
            mpe__fdin_close(&w->fdin);
        else if (w->state == W_LIVE)
            p->tp->forget(w->link); /* the worker is the creator's */
        mpe__buf_free(&w->in);
        mpe__buf_free(&w->out);
        mpe__buf_free(&w->tx);
        free(w->fdin.fds.fd); /* a forked copy: the numbers are not its own */
        free(w->fdin.at);
        memset(&w->fdin, 0, sizeof w->fdin);
    }
    while (p->jobs) {
        mpe_job *j = p->jobs;
        mpe__job_free(p, j, mine); /* unlinks j from p->jobs (a forked copy closes nothing) */
    }
    while (p->fns) {
        fnentry *f = p->fns;
        p->fns = f->next;
        if (mine)
            mpe__fds_truncate(&f->fds, 0);
        free(f->fds.fd);
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
