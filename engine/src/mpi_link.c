/* mpi_link.c -- rank 0's side of the MPI backend: the transport of pools that
 * span ranks (transport.h) and the bridge thread that carries it over MPI,
 * notices a rank that dies and names what it held.
 * SPDX-License-Identifier: MIT
 *
 * A link is a socketpair link when its worker is on this rank, else a remote
 * worker: what send takes is queued for the bridge thread, what arrives is
 * appended to the link by the bridge, which then writes the pool's wake
 * eventfd (learnt from wait). The bridge owns all MPI traffic: pools'
 * dispatcher threads only exchange bytes with it in memory. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "codec.h"
#include "compat.h"
#include "lbuf.h"
#include "mpi_world.h"
#include "proc.h"
#include "ranks.h"
#include "sig.h"
#include "worker.h"

#define LINK_MAX (8u << 20) /* bytes queued for one remote worker before send says "full" */
#define HISTORY 4096        /* remote pids remembered for error messages */

static const mpe_transport_ops *const sp = &mpe__transport_socketpair;
static const mpe_mpi_world *const world = &mpe__mpi_world;

struct mpe_link {
    mpe_link *local;       /* the socketpair link, or NULL for a remote worker */
    mpe_transport *t;
    uint32_t id;
    int rank;
    pid_t pid;             /* the remote worker's pid, from STARTED */
    /* guarded by mu: */
    int started, ended, killed;
    mpe_mpi_death d;
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
static mpe_buf *qb;                 /* per rank: records for the bridge to send, in order */
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

static void wake(int fd)
{
    uint64_t one = 1;
    ssize_t w = write(fd, &one, sizeof one);
    (void)w;
}

static void wake_bridge(void)
{
    wake(wake_fd);
}

/* Queue a record for the bridge. Called with mu held. */
static int enqueue(int dest, unsigned op, uint32_t id, const void *p, size_t n)
{
    return mpe__mpi_put(&qb[dest], op, id, p, n);
}

static void remember(pid_t pid, int rank)
{
    history[nhistory % HISTORY].pid = pid;
    history[nhistory % HISTORY].rank = rank;
    nhistory++;
}

int mpe__mpi_where(pid_t pid, int *rank)
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

/* The transport's own memory (NULL: nothing), on every way out. */
static void free_transport(mpe_transport *t)
{
    if (!t)
        return;
    free(t->share);
    free(t->live);
    free(t->ll);
    free(t->lwant);
    free(t->lev);
    free(t->lidx);
    free(t);
}

static mpe_transport *mt_open(int n, mpe_err *e)
{
    mpe_transport *t = calloc(1, sizeof *t);
    if (!t)
        goto nomem;
    t->wakefd = -1;
    t->share = calloc((size_t)world->size, sizeof *t->share);
    t->live = calloc((size_t)world->size, sizeof *t->live);
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
    for (int r = 0; r < world->size; r++)
        sum += world->workers[r];
    for (int r = 0; r < world->size; r++)
        t->share[r] = n == sum ? world->workers[r] : n / world->size + (r < n % world->size);
    return t;
nomem:
    mpe__seterr(e, "pool: not enough memory");
fail:
    free_transport(t);
    return NULL;
}

static void mt_close(mpe_transport *t)
{
    if (!t)
        return;
    sp->close(t->local);
    free_transport(t);
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
    for (int k = 0; k < world->size; k++) {
        int r = (t->rr + k) % world->size;
        if (t->live[r] < t->share[r] && !rank_dead[r]) {
            pthread_mutex_unlock(&mu);
            t->rr = r + 1;
            return r;
        }
    }
    pthread_mutex_unlock(&mu);
    return world->me;
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
    if (rank == world->me) {
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
    int failed = enqueue(rank, MPE_MPI_OPEN, l->id, b->p, b->n);
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
        enqueue(rank, MPE_MPI_KILL, l->id, NULL, 0);
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
    else if (enqueue(l->rank, MPE_MPI_DATA, l->id, p, n) == 0)
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

static ssize_t mt_recv(mpe_link *l, mpe_buf *b, mpe_fdin *in)
{
    if (l->local)
        return sp->recv(l->local, b, in);
    ssize_t r = -1;
    pthread_mutex_lock(&mu);
    if (l->in.n > 0) {
        if (mpe__buf_grow(b, l->in.n) == 0) {
            memcpy(b->p + b->n, l->in.p, l->in.n);
            b->n += l->in.n;
            r = (ssize_t)l->in.n;
            in->pos += l->in.n; /* no descriptors cross ranks; positions still count */
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
        enqueue(l->rank, MPE_MPI_KILL, l->id, NULL, 0);
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
        out->started_ns = l->d.timed_out ? 1 : mpe__mpi_now_ns();
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
        snprintf(s, n, "rank %d (pid %d on %s)", l->rank, (int)world->pid[l->rank], world->host[l->rank]);
    return dead;
}

/* The worker side: a worker on this rank has a socketpair link. */
static int mt_send_all(mpe_link *self, const void *p, size_t n, const int *fds, int nfds)
{
    return sp->send_all(self, p, n, fds, nfds);
}

static ssize_t mt_child_recv(mpe_link *self, mpe_buf *b, mpe_fdin *in, int block)
{
    return sp->child_recv(self, b, in, block);
}

const mpe_transport_ops mpe__mpi_transport = {
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
    if (l->t->wakefd >= 0)
        wake(l->t->wakefd);
}

/* The pools' wake eventfds to write once a message's records are in: one
 * write per pool and message, not per record. */
#define KICK_MAX 16
typedef struct kicks {
    int fd[KICK_MAX], n;
} kicks;

static void notify_later(kicks *k, const mpe_link *l)
{
    int fd = l->t->wakefd;
    if (fd < 0)
        return;
    for (int i = 0; i < k->n; i++)
        if (k->fd[i] == fd)
            return;
    if (k->n < KICK_MAX)
        k->fd[k->n++] = fd;
    else
        wake(fd);
}

/* A record from a serving rank. Called with mu held. */
static void on_record(const mpe_mpi_rec *rec, kicks *k)
{
    mpe_link *l = find_link(rec->id);
    if (!l)
        return; /* reaped already */
    const char *body = rec->p;
    size_t n = rec->n;
    switch (rec->op) {
    case MPE_MPI_STARTED: {
        int32_t pid = 0;
        if (n >= sizeof pid)
            memcpy(&pid, body, sizeof pid);
        l->pid = pid;
        l->started = 1;
        pthread_cond_broadcast(&cv);
        break;
    }
    case MPE_MPI_DATA:
        if (!l->ended && mpe__buf_grow(&l->in, n) == 0) {
            memcpy(l->in.p + l->in.n, body, n);
            l->in.n += n;
            notify_later(k, l);
        }
        break;
    case MPE_MPI_DEATH:
        if (n >= sizeof l->d && !l->ended) {
            memcpy(&l->d, body, sizeof l->d);
            l->ended = l->started = 1;
            pthread_cond_broadcast(&cv);
            notify_later(k, l);
        }
        break;
    }
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
            r, (int)world->pid[r], world->host[r], n);
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

/* Whether the watch connection of a rank (mpi.c) says the rank ended: its
 * peer closed it (rank 0 is never written to, so any readable state is an end). */
static int watch_ended(int fd)
{
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void *bridge_main(void *arg)
{
    (void)arg;
    mpe_buf in = {0};
    mpe_buf *out = calloc((size_t)world->size, sizeof *out); /* qb taken over */
    int64_t active = mpe__mpi_now_ns();
    /* The bridge sleeps on its wake eventfd and on every rank's watch
     * connection, so it sees a rank die at once, wherever it ran, before the
     * launcher's SIGTERM ends rank 0: the pools then name the items it held.
     * pf[k] watches rank k (pf[0] is the eventfd). */
    struct pollfd *pf = calloc((size_t)world->size, sizeof *pf);
    if (pf) {
        pf[0].fd = wake_fd;
        pf[0].events = POLLIN;
        for (int k = 1; k < world->size; k++) {
            pf[k].fd = world->watch[k]; /* -1 (not watched): poll skips it */
            pf[k].events = POLLIN;
        }
    }
    mpe__proc_busy(); /* a fork waits until this thread holds nothing (see mpe__proc_fork) */
    while (pf && out && !bridge_quit) {
        int busy = 0, src;
        /* Take the queued records (every link's bytes are then handed
         * over), give each rank's to MPI as one message, and read what came,
         * without the lock. */
        pthread_mutex_lock(&mu);
        if (mpe__mpi_pending() < MPE_MPI_PENDING_MAX) {
            for (int d = 0; d < world->size; d++) {
                out[d] = qb[d];
                qb[d] = (mpe_buf){0};
            }
            for (mpe_link *l = remote; l; l = l->next) {
                if (l->queued >= LINK_MAX)
                    notify(l); /* writable again */
                l->queued = 0;
            }
        }
        pthread_mutex_unlock(&mu);
        /* rank_dead is written by this thread alone: read without the lock. */
        for (int d = 0; d < world->size; d++)
            if (out[d].n > 0) {
                if (rank_dead[d])
                    mpe__buf_free(&out[d]);
                else
                    mpe__mpi_send(d, &out[d]);
                busy = 1;
            } else
                mpe__buf_free(&out[d]);
        while (mpe__mpi_take(&in, &src)) {
            busy = 1;
            pthread_mutex_lock(&mu);
            mpe_mpi_rec rec;
            kicks k = {.n = 0};
            for (size_t off = 0; mpe__mpi_next(in.p, in.n, &off, &rec);)
                on_record(&rec, &k);
            for (int i = 0; i < k.n; i++) /* under mu: a pool's fd lives while its links do */
                wake(k.fd[i]);
            pthread_mutex_unlock(&mu);
        }
        mpe__mpi_push();
        if (busy)
            active = mpe__mpi_now_ns();
        mpe__proc_idle(); /* holding nothing: a waiting fork goes now */
        /* Busy: only a look at the watches; idle: sleep on them too. */
        int us = busy ? 0 : mpe__mpi_idle_us(active);
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)us * 1000};
        if (ppoll(pf, (nfds_t)world->size, &ts, NULL) > 0)
            for (int k = 1; k < world->size; k++)
                if (pf[k].fd >= 0 && pf[k].revents && watch_ended(pf[k].fd)) {
                    pf[k].fd = -1; /* ignored from now on; mpi.c closes it */
                    pthread_mutex_lock(&mu);
                    on_rank_death(k);
                    pthread_mutex_unlock(&mu);
                    active = mpe__mpi_now_ns();
                }
        mpe__proc_busy();
        uint64_t v;
        if (read(wake_fd, &v, sizeof v) > 0)
            active = mpe__mpi_now_ns();
    }
    free(pf);
    free(out);
    pthread_mutex_lock(&mu);
    for (int d = 0; d < world->size; d++) /* what came after the last pass goes nowhere */
        mpe__buf_free(&qb[d]);
    pthread_mutex_unlock(&mu);
    /* Quit: tell every rank, then give the messages up to 5 s to leave. */
    for (int k = 1; k < world->size; k++)
        if (!rank_dead[k])
            mpe__mpi_post(k, MPE_MPI_QUIT, 0, NULL, 0);
    for (int64_t end = mpe__mpi_now_ns() + 5000000000; mpe__mpi_push() && mpe__mpi_now_ns() < end;)
        mpe__mpi_nap(-1, 1000);
    mpe__buf_free(&in);
    mpe__proc_idle();
    return NULL;
}

/* ---- start and stop ----------------------------------------------------------------- */

int mpe__mpi_link_start(mpe_err *e)
{
    rank_dead = calloc((size_t)world->size, 1);
    qb = calloc((size_t)world->size, sizeof *qb);
    if (!rank_dead || !qb)
        return mpe__seterr(e, "not enough memory");
    wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd < 0)
        return mpe__seterr(e, "eventfd: %s", strerror(errno));
    mpe__proc_track_fd(wake_fd);
    if (pthread_create(&bridge, NULL, bridge_main, NULL) != 0)
        return mpe__seterr(e, "pthread_create failed");
    bridge_started = 1;
    return 0;
}

void mpe__mpi_link_stop(void)
{
    if (!bridge_started)
        return;
    bridge_quit = 1;
    wake_bridge();
    pthread_join(bridge, NULL);
    bridge_started = 0;
}
