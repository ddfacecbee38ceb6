/* mpi.c -- the MPI backend: start-up under an MPI launcher (rank 0 runs the
 * script, the other ranks serve it), the transport of pools that span ranks
 * (transport.h), the serving loop, and rank 0's bridge thread.
 * SPDX-License-Identifier: MIT
 *
 * Linked into the `mpe` command of an MPE_MPI build only: mpe.so and libmpe
 * never need libmpi, and the engine reaches this file through mpe__ranks.
 * One thread per process calls MPI (rank 0: the bridge thread; other ranks:
 * the main thread), so MPI_THREAD_SERIALIZED is enough, and pools' dispatcher
 * threads only exchange bytes with the bridge in memory. Open MPI's blocking
 * calls spin, so nothing here blocks in MPI: the loops sleep in poll with a
 * timeout that grows while nothing happens (at most 10 ms) and probe MPI
 * between sleeps. Protocol: docs/ARCHITECTURE.md, "The MPI backend". */
#include <errno.h>
#include <mpi.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "err.h"
#include "lbuf.h"
#include "lmpe_err.h"
#include "lranks.h"
#include "proc.h"
#include "ranks.h"
#include "sig.h"
#include "transport.h"
#include "worker.h"

#define TAG 77
#define PENDING_MAX (64u << 20) /* bytes in unfinished sends before the loops stop taking more */
#define LINK_MAX (8u << 20)     /* bytes queued for one remote worker before send says "full" */
#define IDLE_MIN_US 20
#define IDLE_MAX_US 10000
#define SERVE_MAX 1024          /* workers one rank serves at once */
#define HISTORY 4096            /* remote pids remembered for error messages */

/* Messages: [u8 op][u32 link id][payload], all on TAG of a private communicator. */
enum {
    OP_OPEN = 1, /* 0 -> r: [u32 slot][u32 number][u32 maxtasks][f64 timeout][u8 init][{fn, args}] */
    OP_STARTED,  /* r -> 0: [i32 pid]: the worker runs */
    OP_DATA,     /* both ways: bytes of the worker's channel (whole or partial frames) */
    OP_KILL,     /* 0 -> r: SIGKILL the worker */
    OP_DEATH,    /* r -> 0: a death record (below); the link's last message */
    OP_QUIT      /* 0 -> r: rank 0 is done: end the workers, exit */
};
#define HDR 5

/* How a remote worker ended, as its rank saw it. */
typedef struct death {
    int32_t status;    /* wait status */
    int32_t timed_out; /* its rank killed it for the pool's timeout */
    int64_t chunk;     /* its progress slot when it died */
    int32_t item, ready;
} death;

static MPI_Comm comm = MPI_COMM_NULL;
static int me, nranks;
static int *workers_of; /* each rank's default pool size */
static pid_t *pid_of;   /* each rank's pid, host: for noticing and naming a dead rank */
static char (*host_of)[64];
static mpe_ranks ops;

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* ---- sending without blocking, receiving, sleeping ----------------------------------
 * Every send is an MPI_Isend of a buffer owned by the queue until it completes:
 * two ranks sending large messages to each other never wait on each other. */
typedef struct outmsg {
    MPI_Request rq;
    int dest;
    size_t n;            /* bytes in p: header and payload */
    struct outmsg *next;
    char p[];
} outmsg;
static outmsg *sendq;
static size_t pending;

/* A message for dest, built but not sent; NULL when memory runs out. */
static outmsg *build(int dest, unsigned op, uint32_t id, const void *a, size_t na)
{
    outmsg *m = malloc(sizeof *m + HDR + na);
    if (!m)
        return NULL;
    m->dest = dest;
    m->next = NULL;
    m->p[0] = (char)op;
    memcpy(m->p + 1, &id, 4);
    if (na)
        memcpy(m->p + HDR, a, na);
    m->n = HDR + na;
    return m;
}

/* Start sending m (the queue owns it until it completes). */
static int send_msg(outmsg *m)
{
    if (MPI_Isend(m->p, (int)m->n, MPI_BYTE, m->dest, TAG, comm, &m->rq) != MPI_SUCCESS) {
        free(m);
        return -1;
    }
    m->next = sendq;
    sendq = m;
    pending += m->n;
    return 0;
}

static int post(int dest, unsigned op, uint32_t id, const void *a, size_t na)
{
    outmsg *m = build(dest, op, id, a, na);
    return m ? send_msg(m) : -1;
}

/* Complete what can be; returns whether anything is still unsent. */
static int push_sends(void)
{
    for (outmsg **pp = &sendq; *pp;) {
        outmsg *m = *pp;
        int done = 0;
        MPI_Test(&m->rq, &done, MPI_STATUS_IGNORE);
        if (done) {
            *pp = m->next;
            pending -= m->n;
            free(m);
        } else
            pp = &m->next;
    }
    return sendq != NULL;
}

/* Receive one message if one is there: 1 and *src, 0 if none. */
static int take(mpe_buf *b, int *src)
{
    int flag = 0, n = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, TAG, comm, &flag, &st);
    if (!flag)
        return 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    b->n = 0;
    if (mpe__buf_grow(b, (size_t)n + 1) != 0) {
        fprintf(stderr, "mpe: rank %d: not enough memory for a message of %d bytes\n", me, n);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Recv(b->p, n, MPI_BYTE, st.MPI_SOURCE, TAG, comm, MPI_STATUS_IGNORE);
    b->n = (size_t)n;
    *src = st.MPI_SOURCE;
    return 1;
}

/* How long to sleep when nothing happened since `since` (monotonic ns): 20 µs
 * for the first 2 ms (a pool at work sends again soon: keep latency low),
 * then a quarter of the idle time, at most IDLE_MAX_US (an idle rank costs
 * next to nothing). */
static int idle_us(int64_t since)
{
    int64_t idle = (now_ns() - since) / 1000;
    if (idle < 2000)
        return IDLE_MIN_US;
    return idle / 4 > IDLE_MAX_US ? IDLE_MAX_US : (int)(idle / 4);
}

/* Sleep until fd (-1: none) is readable or us microseconds pass. */
static void nap(int fd, int us)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)us * 1000};
    int r;
    do
        r = ppoll(&pf, fd >= 0, &ts, NULL);
    while (r < 0 && errno == EINTR && !mpe__sig_caught());
}

static const mpe_transport_ops *const sp = &mpe__transport_socketpair;

/* ---- ranks other than 0: forked workers fed through MPI --------------------------------
 * Each worker is a socketpair link of this rank (sp); this loop shuttles
 * its bytes between MPI and the link, reaps it and reports its death. */

typedef struct lworker {
    uint32_t id;
    mpe_link *link;      /* a socketpair link (sp's type); NULL once reaped */
    mpe_progress *prog;  /* its progress slot, a page of its own */
    double timeout;
    int timed_out;
    mpe_buf out;         /* bytes from rank 0 not yet taken by the link */
    size_t off;
    struct lworker *next;
} lworker;

static void worker_entry(lua_State *L, mpe_link *self, void *ud)
{
    mpe_worker_cfg *cfg = ud;
    cfg->link = self;
    mpe__worker_main(L, cfg);
}

static void report_death(lworker *w, int status)
{
    death d = {.status = status, .timed_out = w->timed_out};
    if (w->prog) {
        d.chunk = w->prog->chunk;
        d.item = w->prog->item;
        d.ready = w->prog->ready;
    }
    post(0, OP_DEATH, w->id, &d, sizeof d);
}

/* OP_OPEN: fork a worker as rank 0 described it; say STARTED or DEATH. */
static lworker *open_worker(lua_State *L, mpe_transport *t, uint32_t id, mpe_rd *r)
{
    lworker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->id = id;
    uint32_t slot = 0, number = 0, maxtasks = 0;
    unsigned hasinit = 0;
    mpe__rd_u32(r, &slot);
    mpe__rd_u32(r, &number);
    mpe__rd_u32(r, &maxtasks);
    mpe__rd_f64(r, &w->timeout);
    mpe__rd_u8(r, &hasinit);
    mpe_worker_cfg cfg = {.tp = sp, .slot = (int)slot, .number = (int)number,
                          .maxtasks = (int)maxtasks, .timeouts = w->timeout > 0,
                          .timeout = w->timeout, .init_ref = LUA_NOREF,
                          .initargs_ref = LUA_NOREF, .remote = 1,
                          .handler = mpe__error_handler};
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page != MAP_FAILED)
        w->prog = cfg.progress = page;
    int top = lua_gettop(L);
    if (hasinit) {
        /* {fn, args}: referenced for the worker, released after the fork. A
         * table that cannot be decoded here becomes an initializer that
         * raises why, so the pool reports it as an initializer failure. */
        mpe__worker_decode_fn(L, r);
        if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 2);
            cfg.initargs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            lua_rawgeti(L, -1, 1);
        }
        cfg.init_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_settop(L, top);
    }
    mpe_err e = {{0}};
    pid_t pid = 0;
    if (w->prog)
        w->link = sp->start(t, L, w->prog, worker_entry, &cfg, &pid, &e);
    luaL_unref(L, LUA_REGISTRYINDEX, cfg.init_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, cfg.initargs_ref);
    if (!w->link) {
        fprintf(stderr, "mpe: rank %d: cannot start a worker: %s\n", me,
                w->prog ? e.msg : "mmap failed");
        report_death(w, 71 << 8); /* "exited with status 71" on rank 0 */
        return w;
    }
    int32_t p32 = (int32_t)pid;
    post(0, OP_STARTED, id, &p32, sizeof p32);
    return w;
}

static void free_worker(lworker *w)
{
    if (w->link) {
        int st;
        sp->kill(w->link);
        sp->reap(w->link, &st);
    }
    if (w->prog)
        munmap(w->prog, 4096);
    mpe__buf_free(&w->out);
    free(w);
}

int mpe__mpi_serve(lua_State *L)
{
    /* Tasks refer to modules by name (the codec's T_MODULE): mpe is loaded
     * here as on rank 0. */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mpe");
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "mpe: rank %d: %s\n", me, lua_tostring(L, -1));
        return 1;
    }
    mpe_err e;
    mpe_transport *t = sp->open(SERVE_MAX, &e);
    lworker **ws = calloc(SERVE_MAX, sizeof *ws);
    mpe_link **links = calloc(SERVE_MAX, sizeof *links);
    unsigned *want = calloc(SERVE_MAX, sizeof *want), *ev = calloc(SERVE_MAX, sizeof *ev);
    mpe_buf in = {0}, got = {0};
    int nw = 0, quit = 0, status = 1;
    int64_t active = now_ns(); /* when something last happened */
    if (!t || !ws || !links || !want || !ev)
        goto done;
    status = 0;
    while (!quit) {
        int busy = 0, src;
        if (mpe__sig_caught()) {
            status = 128 + mpe__sig_caught();
            break;
        }
        while (!quit && take(&in, &src)) {
            busy = 1;
            if (in.n < HDR)
                continue;
            uint32_t id;
            memcpy(&id, in.p + 1, 4);
            mpe_rd r;
            mpe__rd_init(&r, in.p + HDR, in.n - HDR);
            lworker *w = NULL;
            for (int k = 0; k < nw && !w; k++)
                if (ws[k]->id == id)
                    w = ws[k];
            switch (in.p[0]) {
            case OP_OPEN:
                if (nw == SERVE_MAX) {
                    death d = {.status = 71 << 8};
                    post(0, OP_DEATH, id, &d, sizeof d);
                } else if ((w = open_worker(L, t, id, &r)) != NULL) {
                    if (w->link)
                        ws[nw++] = w;
                    else
                        free_worker(w);
                }
                break;
            case OP_DATA:
                if (w && mpe__buf_grow(&w->out, in.n - HDR) == 0) {
                    memcpy(w->out.p + w->out.n, in.p + HDR, in.n - HDR);
                    w->out.n += in.n - HDR;
                }
                break;
            case OP_KILL:
                if (w)
                    sp->kill(w->link);
                break;
            case OP_QUIT:
                quit = 1;
                break;
            }
        }
        int64_t now = now_ns();
        for (int k = 0; k < nw; k++) {
            lworker *w = ws[k];
            while (w->off < w->out.n) {
                ssize_t n = sp->send(w->link, w->out.p + w->off, w->out.n - w->off, NULL, 0);
                if (n <= 0)
                    break; /* full, or gone: its end will tell */
                w->off += (size_t)n;
                busy = 1;
            }
            if (w->off == w->out.n)
                w->out.n = w->off = 0;
            if (w->timeout > 0 && !w->timed_out && w->prog->chunk != 0 &&
                now - w->prog->started_ns > (int64_t)(w->timeout * 1e9)) {
                w->timed_out = 1;
                sp->kill(w->link);
            }
            links[k] = w->link;
            want[k] = w->out.n > w->off ? MPE_T_WRITE : 0;
        }
        if (push_sends())
            busy = 1;
        /* Sleep on the workers' channels: their results wake us at once;
         * rank 0's messages are probed after at most the idle sleep (below
         * a millisecond, poll's unit, the sleep is a ppoll after a look). */
        if (busy)
            active = now_ns();
        int us = busy || pending >= PENDING_MAX ? 0 : idle_us(active);
        int ready = sp->wait(t, links, want, ev, nw, -1, us >= 1000 ? us / 1000 : 0);
        if (ready == 0 && us > 0 && us < 1000)
            nap(-1, us);
        for (int k = 0; ready > 0 && k < nw; k++) {
            lworker *w = ws[k];
            if (!(ev[k] & MPE_T_READ))
                continue;
            active = now_ns();
            got.n = 0;
            ssize_t n = sp->recv(w->link, &got, NULL);
            if (n > 0)
                post(0, OP_DATA, w->id, got.p, got.n);
            else if (n == 0 || errno != EAGAIN) {
                int st = 0;
                sp->reap(w->link, &st);
                w->link = NULL;
                report_death(w, st);
                free_worker(w);
                ws[k--] = ws[--nw];
                ev[k + 1] = ev[nw];
            }
        }
    }
done:
    while (nw > 0)
        free_worker(ws[--nw]);
    /* Let the last death records and data reach rank 0 (bounded: it may be gone). */
    for (int64_t end = now_ns() + 2000000000; push_sends() && now_ns() < end;)
        nap(-1, 1000);
    if (t)
        sp->close(t);
    free(ws);
    free(links);
    free(want);
    free(ev);
    mpe__buf_free(&in);
    mpe__buf_free(&got);
    return status;
}

/* ---- rank 0: the transport of pools that span ranks -----------------------------------
 * A link is a socketpair link when its worker is on this rank, else a remote
 * worker: what send takes is queued for the bridge thread, what arrives is
 * appended to the link by the bridge, which then writes the pool's wake
 * eventfd (learnt from wait). The bridge owns all MPI traffic. */

struct mpe_link {
    mpe_link *local;       /* the socketpair link, or NULL for a remote worker */
    mpe_transport *t;
    uint32_t id;
    int rank;
    pid_t pid;             /* the remote worker's pid, from STARTED */
    /* guarded by mu: */
    int started, ended, killed;
    death d;
    mpe_buf in;            /* bytes from the worker not yet taken by recv */
    size_t queued;         /* bytes taken by send and not yet handed to MPI */
    struct mpe_link *next; /* remote links, for the bridge */
};

struct mpe_transport {
    mpe_transport *local;  /* the socketpair backend's instance */
    int *share, *live;     /* per rank: its part of the pool, and its links now */
    int rr;                /* round-robin position for start */
    int wakefd;            /* the dispatcher's, from wait; -1 before */
    mpe_link **ll;         /* wait's scratch for the local links */
    unsigned *lwant, *lev;
    int *lidx;
};

/* Bridge state: everything below is guarded by mu. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static mpe_link *remote;            /* live remote links */
static outmsg *q_head, *q_tail;     /* messages for the bridge to send, in order */
static uint32_t next_id;
static struct {
    pid_t pid;
    int rank;
} history[HISTORY];
static unsigned nhistory;
static char *rank_dead;             /* ranks seen dead: no new workers go there */
static int wake_fd = -1;            /* wakes the bridge */
static pthread_t bridge;
static int bridge_started;
static volatile int bridge_quit;

static void wake_bridge(void)
{
    uint64_t one = 1;
    ssize_t w = write(wake_fd, &one, sizeof one);
    (void)w;
}

/* Queue a message for the bridge. Called with mu held. */
static int enqueue(int dest, unsigned op, uint32_t id, const void *p, size_t n)
{
    outmsg *m = build(dest, op, id, p, n);
    if (!m)
        return -1;
    if (q_tail)
        q_tail->next = m;
    else
        q_head = m;
    q_tail = m;
    return 0;
}

static void remember(pid_t pid, int rank)
{
    history[nhistory % HISTORY].pid = pid;
    history[nhistory % HISTORY].rank = rank;
    nhistory++;
}

static int where(pid_t pid, int *rank)
{
    int found = 0;
    pthread_mutex_lock(&mu);
    unsigned n = nhistory < HISTORY ? nhistory : HISTORY;
    for (unsigned k = 0; k < n && !found; k++) {
        unsigned i = (nhistory - 1 - k) % HISTORY; /* newest first */
        if (history[i].pid == pid) {
            *rank = history[i].rank;
            found = 1;
        }
    }
    pthread_mutex_unlock(&mu);
    return found;
}

static mpe_transport *mt_open(int n, mpe_err *e)
{
    mpe_transport *t = calloc(1, sizeof *t);
    if (!t)
        goto nomem;
    t->wakefd = -1;
    t->share = calloc((size_t)nranks, sizeof *t->share);
    t->live = calloc((size_t)nranks, sizeof *t->live);
    t->ll = calloc((size_t)n, sizeof *t->ll);
    t->lwant = calloc((size_t)n, sizeof *t->lwant);
    t->lev = calloc((size_t)n, sizeof *t->lev);
    t->lidx = calloc((size_t)n, sizeof *t->lidx);
    if (!t->share || !t->live || !t->ll || !t->lwant || !t->lev || !t->lidx)
        goto nomem;
    t->local = sp->open(n, e);
    if (!t->local)
        goto fail;
    /* Each rank's part: its default pool size when n is their sum (the
     * default pool), else n split evenly. */
    int sum = 0;
    for (int r = 0; r < nranks; r++)
        sum += workers_of[r];
    for (int r = 0; r < nranks; r++)
        t->share[r] = n == sum ? workers_of[r] : n / nranks + (r < n % nranks);
    return t;
nomem:
    mpe__seterr(e, "pool: not enough memory");
fail:
    if (t) {
        free(t->share);
        free(t->live);
        free(t->ll);
        free(t->lwant);
        free(t->lev);
        free(t->lidx);
    }
    free(t);
    return NULL;
}

static void mt_close(mpe_transport *t)
{
    if (!t)
        return;
    sp->close(t->local);
    free(t->share);
    free(t->live);
    free(t->ll);
    free(t->lwant);
    free(t->lev);
    free(t->lidx);
    free(t);
}

/* Encode {initializer, initargs} for OPEN, under a pcall (L is the pool owner's state). */
static int encode_init(lua_State *L)
{
    mpe_buf *b = lua_touserdata(L, 1);
    const mpe_worker_cfg *cfg = lua_touserdata(L, 2);
    lua_createtable(L, 2, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, cfg->init_ref);
    lua_rawseti(L, -2, 1);
    if (cfg->initargs_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, cfg->initargs_ref);
        lua_rawseti(L, -2, 2);
    }
    mpe__encode(L, -1, b, "initializer", &mpe__codec_remote);
    return 0;
}

/* The next rank with room for a link: round-robin over the ranks' shares, so
 * a replacement goes where its predecessor died. */
static int pick_rank(mpe_transport *t)
{
    pthread_mutex_lock(&mu);
    for (int k = 0; k < nranks; k++) {
        int r = (t->rr + k) % nranks;
        if (t->live[r] < t->share[r] && !rank_dead[r]) {
            pthread_mutex_unlock(&mu);
            t->rr = r + 1;
            return r;
        }
    }
    pthread_mutex_unlock(&mu);
    return me;
}

static mpe_link *mt_start(mpe_transport *t, lua_State *L, mpe_progress *progress, mpe_worker_fn run,
                          void *ud, pid_t *pid, mpe_err *e)
{
    const mpe_worker_cfg *cfg = ud;
    int rank = pick_rank(t);
    mpe_link *l = calloc(1, sizeof *l);
    if (!l) {
        mpe__seterr(e, "pool: not enough memory");
        return NULL;
    }
    l->t = t;
    l->rank = rank;
    if (rank == me) {
        l->local = sp->start(t->local, L, progress, run, ud, pid, e);
        if (!l->local) {
            free(l);
            return NULL;
        }
        t->live[rank]++;
        return l;
    }
    mpe_buf *b = mpe__buf_box(L); /* owned by Lua while a raise is possible */
    mpe__buf_put_u32(L, b, (uint32_t)cfg->slot);
    mpe__buf_put_u32(L, b, (uint32_t)cfg->number);
    mpe__buf_put_u32(L, b, (uint32_t)cfg->maxtasks);
    mpe__buf_put_f64(L, b, cfg->timeout);
    mpe__buf_put_u8(L, b, cfg->init_ref != LUA_NOREF);
    if (cfg->init_ref != LUA_NOREF) {
        lua_pushcfunction(L, encode_init);
        lua_pushlightuserdata(L, b);
        lua_pushlightuserdata(L, (void *)cfg);
        if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
            mpe__seterr(e, "%s", lua_tostring(L, -1));
            lua_pop(L, 2);
            free(l);
            return NULL;
        }
    }
    pthread_mutex_lock(&mu);
    l->id = ++next_id;
    int failed = enqueue(rank, OP_OPEN, l->id, b->p, b->n);
    if (!failed) {
        l->next = remote;
        remote = l;
    }
    pthread_mutex_unlock(&mu);
    lua_pop(L, 1);
    if (failed) {
        free(l);
        mpe__seterr(e, "pool: not enough memory");
        return NULL;
    }
    wake_bridge();
    /* Wait for STARTED (or a DEATH: it could not fork), so the pool knows the
     * worker's pid; a rank that died ends the link through on_rank_death. */
    pthread_mutex_lock(&mu);
    while (!l->started && !mpe__sig_caught()) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100000000; /* look at signals every 0.1 s */
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&cv, &mu, &until);
    }
    if (!l->started) { /* interrupted: the worker, if it comes, is killed */
        l->killed = 1;
        enqueue(rank, OP_KILL, l->id, NULL, 0);
        l->ended = l->started = 1;
        l->d.status = SIGKILL;
    }
    *pid = l->pid;
    if (l->pid > 0)
        remember(l->pid, rank);
    pthread_mutex_unlock(&mu);
    t->live[rank]++;
    return l;
}

static ssize_t mt_send(mpe_link *l, const void *p, size_t n, const int *fds, int nfds)
{
    if (l->local)
        return sp->send(l->local, p, n, fds, nfds);
    if (nfds > 0) { /* the codec's cross-rank route refuses shared objects first */
        errno = EINVAL;
        return -1;
    }
    ssize_t r = (ssize_t)n;
    pthread_mutex_lock(&mu);
    if (l->ended || l->killed)
        ; /* dropped: the end will be seen */
    else if (l->queued >= LINK_MAX)
        r = 0;
    else if (enqueue(l->rank, OP_DATA, l->id, p, n) == 0)
        l->queued += n;
    else
        r = 0; /* no memory now: try again later */
    pthread_mutex_unlock(&mu);
    if (r > 0)
        wake_bridge();
    return r;
}

/* What a remote link has for recv: 1 bytes or its end, 0 nothing. Called with mu held.
 * After a timeout the end waits for the pool's own timeout check to kill
 * the link, so the pool reports kind "timeout". */
static int readable(const mpe_link *l)
{
    return l->in.n > 0 || (l->ended && (!l->d.timed_out || l->killed));
}

static ssize_t mt_recv(mpe_link *l, mpe_buf *b, mpe_fds *fds)
{
    if (l->local)
        return sp->recv(l->local, b, fds);
    ssize_t r = -1;
    pthread_mutex_lock(&mu);
    if (l->in.n > 0) {
        if (mpe__buf_grow(b, l->in.n) == 0) {
            memcpy(b->p + b->n, l->in.p, l->in.n);
            b->n += l->in.n;
            r = (ssize_t)l->in.n;
            l->in.n = 0;
        } else
            errno = ENOMEM;
    } else if (readable(l))
        r = 0;
    else
        errno = EAGAIN;
    pthread_mutex_unlock(&mu);
    return r;
}

static int mt_wait(mpe_transport *t, mpe_link *const *links, const unsigned *want, unsigned *ev, int n,
                   int wakefd, int ms)
{
    int nl = 0, ready = 0;
    pthread_mutex_lock(&mu);
    t->wakefd = wakefd;
    for (int i = 0; i < n; i++) {
        const mpe_link *l = links[i];
        ev[i] = 0;
        if (l->local) {
            t->ll[nl] = l->local;
            t->lwant[nl] = want[i];
            t->lidx[nl++] = i;
            continue;
        }
        if (readable(l))
            ev[i] |= MPE_T_READ;
        if ((want[i] & MPE_T_WRITE) && l->queued < LINK_MAX)
            ev[i] |= MPE_T_WRITE;
        ready += ev[i] != 0;
    }
    pthread_mutex_unlock(&mu);
    /* The bridge writes wakefd when bytes or an end arrive for a remote link. */
    int r = sp->wait(t->local, t->ll, t->lwant, t->lev, nl, wakefd, ready ? 0 : ms);
    if (r < 0)
        return -1;
    for (int k = 0; k < nl; k++) {
        ev[t->lidx[k]] = t->lev[k];
        ready += t->lev[k] != 0;
    }
    if (ready == 0) { /* woken by the bridge: look again */
        pthread_mutex_lock(&mu);
        for (int i = 0; i < n; i++)
            if (!links[i]->local && readable(links[i])) {
                ev[i] |= MPE_T_READ;
                ready++;
            }
        pthread_mutex_unlock(&mu);
    }
    return ready;
}

static void mt_kill(mpe_link *l)
{
    if (l->local) {
        sp->kill(l->local);
        return;
    }
    pthread_mutex_lock(&mu);
    int tell = !l->killed && !l->ended;
    l->killed = 1;
    if (tell)
        enqueue(l->rank, OP_KILL, l->id, NULL, 0);
    pthread_mutex_unlock(&mu);
    if (tell)
        wake_bridge();
}

static void unlink_remote(mpe_link *l)
{
    for (mpe_link **pp = &remote; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
}

static void mt_reap(mpe_link *l, int *status)
{
    mpe_transport *t = l->t;
    t->live[l->rank]--;
    if (l->local) {
        sp->reap(l->local, status);
        free(l);
        return;
    }
    /* Normally the end came already; after a kill it may still be on its way
     * (bounded: a rank that died ends its links). */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&mu);
    while (!l->ended && pthread_cond_timedwait(&cv, &mu, &until) == 0)
        ;
    *status = l->ended ? l->d.status : SIGKILL;
    unlink_remote(l);
    pthread_mutex_unlock(&mu);
    mpe__buf_free(&l->in);
    free(l);
}

static void mt_forget(mpe_link *l)
{
    if (l->local)
        sp->forget(l->local);
    else
        mpe__buf_free(&l->in); /* the bridge belongs to the parent */
    free(l);
}

static void mt_progress(mpe_link *l, mpe_progress *out)
{
    if (l->local) {
        sp->progress(l->local, out);
        return;
    }
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&mu);
    if (l->ended) { /* the slot as the worker left it; a timeout shows as overdue */
        out->chunk = l->d.chunk;
        out->item = l->d.item;
        out->ready = l->d.ready;
        out->started_ns = l->d.timed_out ? 1 : now_ns();
    }
    pthread_mutex_unlock(&mu);
}

static int mt_lost(mpe_link *l, char *s, size_t n)
{
    if (l->local)
        return 0;
    pthread_mutex_lock(&mu);
    int dead = rank_dead[l->rank];
    pthread_mutex_unlock(&mu);
    if (dead)
        snprintf(s, n, "rank %d (pid %d on %s)", l->rank, (int)pid_of[l->rank], host_of[l->rank]);
    return dead;
}

/* The worker side: a worker on this rank has a socketpair link. */
static int mt_send_all(mpe_link *self, const void *p, size_t n, const int *fds, int nfds)
{
    return sp->send_all(self, p, n, fds, nfds);
}

static ssize_t mt_child_recv(mpe_link *self, mpe_buf *b, mpe_fds *fds, int block)
{
    return sp->child_recv(self, b, fds, block);
}

static const mpe_transport_ops transport_mpi = {
    .name = "mpi",
    .open = mt_open,
    .close = mt_close,
    .start = mt_start,
    .send = mt_send,
    .recv = mt_recv,
    .wait = mt_wait,
    .kill = mt_kill,
    .reap = mt_reap,
    .forget = mt_forget,
    .progress = mt_progress,
    .lost = mt_lost,
    .send_all = mt_send_all,
    .child_recv = mt_child_recv,
};

/* ---- rank 0: the bridge thread ------------------------------------------------------- */

static mpe_link *find_link(uint32_t id)
{
    mpe_link *l = remote;
    while (l && l->id != id)
        l = l->next;
    return l;
}

static void notify(const mpe_link *l)
{
    if (l->t->wakefd >= 0) {
        uint64_t one = 1;
        ssize_t w = write(l->t->wakefd, &one, sizeof one);
        (void)w;
    }
}

/* A message from a serving rank. Called with mu held. */
static void on_message(const mpe_buf *in)
{
    uint32_t id;
    memcpy(&id, in->p + 1, 4);
    mpe_link *l = find_link(id);
    if (!l)
        return; /* reaped already */
    const char *body = in->p + HDR;
    size_t n = in->n - HDR;
    switch (in->p[0]) {
    case OP_STARTED: {
        int32_t pid = 0;
        if (n >= sizeof pid)
            memcpy(&pid, body, sizeof pid);
        l->pid = pid;
        l->started = 1;
        pthread_cond_broadcast(&cv);
        break;
    }
    case OP_DATA:
        if (!l->ended && mpe__buf_grow(&l->in, n) == 0) {
            memcpy(l->in.p + l->in.n, body, n);
            l->in.n += n;
            notify(l);
        }
        break;
    case OP_DEATH:
        if (n >= sizeof l->d && !l->ended) {
            memcpy(&l->d, body, sizeof l->d);
            l->ended = l->started = 1;
            pthread_cond_broadcast(&cv);
            notify(l);
        }
        break;
    }
}

/* Whether rank r's process is still there (same host only; elsewhere the
 * launcher notices and ends the job). */
static int rank_alive(int r)
{
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    if (strcmp(host, host_of[r]) != 0)
        return 1;
    char path[64], st[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid_of[r]);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(st, 1, sizeof st - 1, f);
    fclose(f);
    st[n] = 0;
    char *p = strrchr(st, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Rank r died: say so, and end its links as killed: the pools put the items
 * they held back to run elsewhere (the dispatcher cannot tell which one was
 * running, so none is blamed), no new worker goes there, and the launcher
 * ends the run (Open MPI does when a rank dies). Called with mu held. */
static void on_rank_death(int r)
{
    rank_dead[r] = 1;
    int n = 0;
    for (mpe_link *l = remote; l; l = l->next)
        n += l->rank == r && !l->ended;
    fprintf(stderr, "mpe: rank %d (pid %d on %s) died with %d pool worker(s); their items go back to the pools\n",
            r, (int)pid_of[r], host_of[r], n);
    fflush(stderr);
    for (mpe_link *l = remote; l; l = l->next)
        if (l->rank == r && !l->ended) {
            memset(&l->d, 0, sizeof l->d);
            l->d.status = SIGKILL; /* a wait status: killed by signal 9 */
            l->ended = l->started = 1;
            notify(l);
        }
    pthread_cond_broadcast(&cv);
}

static void *bridge_main(void *arg)
{
    (void)arg;
    mpe_buf in = {0};
    char *dead = calloc((size_t)nranks, 1);
    int64_t next_check = 0, active = now_ns();
    /* The bridge sleeps on its wake eventfd and on a pidfd of every rank on
     * this host, so it sees such a rank die at once, before the launcher's
     * SIGTERM ends rank 0: the pools then blame the items it held. */
    struct pollfd *pf = calloc((size_t)nranks, sizeof *pf);
    int npf = 0;
    if (pf) {
        pf[npf].fd = wake_fd;
        pf[npf++].events = POLLIN;
        char host[64] = {0};
        gethostname(host, sizeof host - 1);
        for (int k = 1; k < nranks; k++) {
            int fd = strcmp(host, host_of[k]) == 0 ? (int)syscall(SYS_pidfd_open, pid_of[k], 0) : -1;
            if (fd >= 0) {
                mpe__proc_track_fd(fd);
                pf[npf].fd = fd;
                pf[npf++].events = POLLIN;
            }
        }
    }
    mpe__proc_busy(); /* a fork waits until this thread holds nothing (see mpe__proc_fork) */
    while (dead && pf && !bridge_quit) {
        int busy = 0, src;
        /* Take the queued messages (accounting them as handed over), then
         * give them to MPI in order, and read what came, without the lock. */
        pthread_mutex_lock(&mu);
        outmsg *q = pending < PENDING_MAX ? q_head : NULL;
        if (q)
            q_head = q_tail = NULL;
        for (outmsg *m = q; m; m = m->next)
            if (m->p[0] == OP_DATA) {
                uint32_t id;
                memcpy(&id, m->p + 1, 4);
                mpe_link *l = find_link(id);
                if (l) {
                    int was_full = l->queued >= LINK_MAX;
                    l->queued -= m->n - HDR;
                    if (was_full && l->queued < LINK_MAX)
                        notify(l);
                }
            }
        pthread_mutex_unlock(&mu);
        while (q) {
            outmsg *m = q;
            q = m->next;
            if (dead[m->dest])
                free(m);
            else
                send_msg(m);
            busy = 1;
        }
        while (take(&in, &src)) {
            busy = 1;
            pthread_mutex_lock(&mu);
            if (in.n >= HDR)
                on_message(&in);
            pthread_mutex_unlock(&mu);
        }
        pthread_mutex_lock(&mu);
        int64_t now = now_ns();
        if (now >= next_check) {
            next_check = now + 200000000; /* 0.2 s */
            for (int k = 1; k < nranks; k++)
                if (!dead[k] && !rank_alive(k)) {
                    dead[k] = 1;
                    on_rank_death(k);
                }
        }
        pthread_mutex_unlock(&mu);
        push_sends();
        if (busy)
            active = now_ns();
        mpe__proc_idle(); /* holding nothing: a waiting fork goes now */
        if (!busy) {
            int us = idle_us(active);
            struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)us * 1000};
            if (ppoll(pf, (nfds_t)npf, &ts, NULL) > 0)
                for (int k = 1; k < npf; k++)
                    if (pf[k].revents) { /* a rank on this host ended */
                        next_check = 0;
                        pf[k].fd = -pf[k].fd - 1; /* ignored from now on; restored to close */
                    }
        }
        mpe__proc_busy();
        uint64_t v;
        if (read(wake_fd, &v, sizeof v) > 0 || next_check == 0)
            active = now_ns();
    }
    for (int k = 1; k < npf; k++) {
        int fd = pf[k].fd < 0 ? -pf[k].fd - 1 : pf[k].fd;
        mpe__proc_untrack_fd(fd);
        close(fd);
    }
    free(pf);
    /* Quit: tell every rank, then give the messages up to 5 s to leave. */
    for (int k = 1; k < nranks; k++)
        if (dead && !dead[k])
            post(k, OP_QUIT, 0, NULL, 0);
    for (int64_t end = now_ns() + 5000000000; push_sends() && now_ns() < end;)
        nap(-1, 1000);
    free(dead);
    mpe__buf_free(&in);
    mpe__proc_idle();
    return NULL;
}

/* ---- start and end ----------------------------------------------------------------- */

int mpe__mpi_launched(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMIX_RANK", "PMI_SIZE",
                                 "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

int mpe__mpi_start(int *argc, char ***argv, mpe_err *e)
{
    int provided = 0;
    /* Open MPI's own SIGSEGV/SIGBUS handlers would print a backtrace for a
     * worker that crashes; mpe reports crashes itself. */
    setenv("OMPI_MCA_opal_signal", "", 0);
    if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return mpe__seterr(e, "MPI_Init_thread failed");
    if (provided < MPI_THREAD_SERIALIZED) {
        MPI_Finalize();
        return mpe__seterr(e, "MPI provides no MPI_THREAD_SERIALIZED (got level %d)", provided);
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    MPI_Comm_rank(comm, &me);
    MPI_Comm_size(comm, &nranks);
    /* Functions only decode under the key that made their MAC: every rank uses rank 0's. */
    unsigned char key[16];
    mpe__codec_get_key(key);
    MPI_Bcast(key, sizeof key, MPI_BYTE, 0, comm);
    mpe__codec_set_key(key);
    workers_of = calloc((size_t)nranks, sizeof *workers_of);
    pid_of = calloc((size_t)nranks, sizeof *pid_of);
    host_of = calloc((size_t)nranks, sizeof *host_of);
    rank_dead = calloc((size_t)nranks, 1);
    if (!workers_of || !pid_of || !host_of || !rank_dead)
        return mpe__seterr(e, "not enough memory");
    int mine = mpe__proc_default_workers(), pid = (int)getpid();
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    MPI_Allgather(&mine, 1, MPI_INT, workers_of, 1, MPI_INT, comm);
    MPI_Allgather(&pid, 1, MPI_INT, pid_of, 1, MPI_INT, comm);
    MPI_Allgather(host, 64, MPI_CHAR, host_of, 64, MPI_CHAR, comm);
    mpe__proc_set_rank(me);
    ops.rank = me;
    ops.size = nranks;
    ops.pid = getpid();
    ops.workers = workers_of;
    ops.transport = &transport_mpi;
    ops.where = where;
    mpe__ranks = &ops;
    if (me == 0 && nranks > 1) {
        wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wake_fd < 0)
            return mpe__seterr(e, "eventfd: %s", strerror(errno));
        mpe__proc_track_fd(wake_fd);
        if (pthread_create(&bridge, NULL, bridge_main, NULL) != 0)
            return mpe__seterr(e, "pthread_create failed");
        bridge_started = 1;
    }
    return me;
}

void mpe__mpi_finish(void)
{
    if (comm == MPI_COMM_NULL)
        return;
    if (bridge_started) {
        bridge_quit = 1;
        wake_bridge();
        pthread_join(bridge, NULL);
        bridge_started = 0;
    }
    mpe__ranks = NULL;
    MPI_Comm_free(&comm);
    MPI_Finalize();
}
