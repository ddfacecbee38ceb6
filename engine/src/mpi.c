/* mpi.c -- the MPI backend: start-up under an MPI launcher (rank 0 runs the
 * script, the other ranks serve it), the serving loop, and rank 0's bridge,
 * which shows a pool each remote worker as a local process with a channel.
 * SPDX-License-Identifier: MIT
 *
 * Linked into the `mpe` command of an MPE_MPI build only: mpe.so and libmpe
 * never need libmpi, and the engine reaches this file through mpe__ranks.
 * One thread per process calls MPI (rank 0: the bridge thread; other ranks:
 * the main thread), so MPI_THREAD_SERIALIZED is enough. Open MPI's blocking
 * calls spin, so nothing here blocks in MPI: the loops poll their sockets
 * with a timeout that grows while nothing happens (at most IDLE_MAX_US) and
 * probe MPI between polls. The protocol is described in docs/ARCHITECTURE.md
 * ("The MPI backend"). */
#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

#define TAG 77
#define READ_MAX (256 * 1024)       /* bytes relayed per message */
#define PENDING_MAX (64u << 20)     /* unsent bytes before the relays stop reading */
#define IDLE_MIN_US 20
#define IDLE_MAX_US 10000

/* Messages: [u8 op][u32 slot id][payload], all on TAG of a private communicator. */
enum {
    OP_OPEN = 1, /* 0 -> r: [u32 slot][u32 number][i32 maxtasks][f64 timeout][u8 init][{fn, args}] */
    OP_DATA,     /* both ways: bytes of the worker's channel */
    OP_CLOSE,    /* 0 -> r: the pool closed the channel */
    OP_KILL,     /* 0 -> r: the pool killed the stand-in: kill the worker */
    OP_DEATH,    /* r -> 0: a death record (below) */
    OP_QUIT      /* 0 -> r: rank 0 is done: end the workers, exit */
};
#define HDR 5

/* How a remote worker ended, as its rank saw it; the stand-in replays it. */
typedef struct death {
    int32_t status;    /* wait status */
    int32_t timed_out; /* its rank killed it for the pool's timeout */
    int64_t chunk;     /* its progress slot */
    int32_t item, ready;
    int32_t pid;
} death;

static MPI_Comm comm = MPI_COMM_NULL;
static int me, nranks;
static int *workers_of; /* each rank's default pool size */
static pid_t *pid_of;   /* each rank's pid, for the message naming a dead rank */
static char (*host_of)[64];
static mpe_ranks ops;

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* ---- sending without blocking ---------------------------------------------------
 * Every send is an MPI_Isend of a buffer owned by the queue until it completes:
 * two ranks sending large messages to each other never wait on each other. */
typedef struct outmsg {
    MPI_Request rq;
    size_t n;
    struct outmsg *next;
    char p[];
} outmsg;
static outmsg *sendq;
static size_t pending;

static int post(int dest, unsigned op, uint32_t id, const void *a, size_t na)
{
    outmsg *m = malloc(sizeof *m + HDR + na);
    if (!m)
        return -1;
    m->p[0] = (char)op;
    memcpy(m->p + 1, &id, 4);
    if (na)
        memcpy(m->p + HDR, a, na);
    m->n = HDR + na;
    if (MPI_Isend(m->p, (int)m->n, MPI_BYTE, dest, TAG, comm, &m->rq) != MPI_SUCCESS) {
        free(m);
        return -1;
    }
    m->next = sendq;
    sendq = m;
    pending += m->n;
    return 0;
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
    return n >= HDR;
}

/* Sleep in poll for the current backoff: it doubles while nothing happens. */
static int nap(struct pollfd *pf, int n, int busy, int *us)
{
    *us = busy ? 0 : (*us == 0 ? IDLE_MIN_US : (*us * 2 > IDLE_MAX_US ? IDLE_MAX_US : *us * 2));
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)*us * 1000};
    int r;
    do
        r = ppoll(pf, (nfds_t)n, &ts, NULL);
    while (r < 0 && errno == EINTR && !mpe__sig_caught());
    return r;
}

/* Write what b holds beyond *off to the non-blocking fd: 0, or -1 if the peer is gone. */
static int drain(int fd, mpe_buf *b, size_t *off)
{
    while (*off < b->n) {
        ssize_t w = send(fd, b->p + *off, b->n - *off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        *off += (size_t)w;
    }
    b->n = *off = 0;
    return 0;
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* ---- ranks other than 0: forked workers fed through MPI ------------------------ */

typedef struct lworker {
    uint32_t id;
    pid_t pid;           /* 0 once reaped */
    int fd;              /* its channel, -1 once closed */
    mpe_progress *prog;  /* its progress slot, a page of its own */
    double timeout;
    int timed_out;
    int close_wanted;    /* rank 0 closed its side: shut ours once out is written */
    mpe_buf out;         /* bytes from rank 0 not yet written to it */
    size_t off;
    struct lworker *next;
} lworker;

static void worker_entry(lua_State *L, int fd, void *ud)
{
    mpe_worker_cfg *cfg = ud;
    cfg->fd = fd;
    mpe__worker_main(L, cfg);
}

static void report_death(lworker *w, int status)
{
    death d = {.status = status, .timed_out = w->timed_out, .pid = (int32_t)w->pid};
    if (w->prog) {
        d.chunk = w->prog->chunk;
        d.item = w->prog->item;
        d.ready = w->prog->ready;
    }
    post(0, OP_DEATH, w->id, &d, sizeof d);
}

/* OP_OPEN: fork a worker as rank 0 described it. */
static lworker *open_worker(lua_State *L, uint32_t id, mpe_rd *r)
{
    lworker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->id = id;
    w->fd = -1;
    uint32_t slot = 0, number = 0, maxtasks = 0;
    uint64_t tbits = 0;
    unsigned hasinit = 0;
    mpe__rd_u32(r, &slot);
    mpe__rd_u32(r, &number);
    mpe__rd_u32(r, &maxtasks);
    mpe__rd_u64(r, &tbits);
    mpe__rd_u8(r, &hasinit);
    memcpy(&w->timeout, &tbits, sizeof w->timeout);
    mpe_worker_cfg cfg = {.slot = (int)slot, .number = (int)number, .maxtasks = (int)maxtasks,
                          .timeouts = w->timeout > 0, .init_ref = LUA_NOREF,
                          .initargs_ref = LUA_NOREF, .remote = 1};
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page != MAP_FAILED)
        w->prog = cfg.progress = page;
    int top = lua_gettop(L);
    if (hasinit) {
        /* {fn, args}: decoded here, referenced for the worker, released after the fork. */
        mpe__worker_decode_fn(L, r);
        if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 2);
            cfg.initargs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            lua_rawgeti(L, -1, 1);
        }
        cfg.init_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_settop(L, top);
    }
    mpe_err e;
    pid_t pid = w->prog ? mpe__transport_spawn(L, &w->fd, worker_entry, &cfg, &e) : -1;
    luaL_unref(L, LUA_REGISTRYINDEX, cfg.init_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, cfg.initargs_ref);
    if (pid < 0) {
        fprintf(stderr, "mpe: rank %d: cannot start a worker: %s\n", me,
                w->prog ? e.msg : "mmap failed");
        report_death(w, 71 << 8); /* "exited with status 71" on rank 0 */
        w->fd = -1;
        return w;
    }
    w->pid = pid;
    return w;
}

static lworker *find_worker(lworker *list, uint32_t id)
{
    for (lworker *w = list; w; w = w->next)
        if (w->id == id)
            return w;
    return NULL;
}

/* Its channel reached EOF: reap it and tell rank 0 how it ended. */
static void worker_gone(lworker *w)
{
    mpe__proc_untrack_fd(w->fd);
    close(w->fd);
    w->fd = -1;
    int st = 0;
    pid_t r;
    do
        r = waitpid(w->pid, &st, 0);
    while (r < 0 && errno == EINTR);
    report_death(w, st);
    w->pid = 0;
}

static void free_worker(lworker *w)
{
    if (w->fd >= 0) {
        mpe__proc_untrack_fd(w->fd);
        close(w->fd);
    }
    if (w->pid > 0) {
        kill(w->pid, SIGKILL);
        while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    if (w->prog)
        munmap(w->prog, 4096);
    mpe__buf_free(&w->out);
    free(w);
}

int mpe__mpi_serve(lua_State *L)
{
    /* Tasks refer to modules by name (T_MODULE): mpe is loaded here as on rank 0. */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mpe");
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "mpe: rank %d: %s\n", me, lua_tostring(L, -1));
        return 1;
    }
    lworker *list = NULL;
    mpe_buf in = {0};
    int us = 0, quit = 0, status = 0;
    struct pollfd *pf = NULL;
    lworker **of = NULL;
    size_t cap = 0;
    char *tmp = malloc(READ_MAX);
    if (!tmp)
        return 1;
    while (!quit) {
        int busy = 0, src;
        if (mpe__sig_caught()) {
            status = 128 + mpe__sig_caught();
            break;
        }
        while (!quit && take(&in, &src)) {
            busy = 1;
            uint32_t id;
            memcpy(&id, in.p + 1, 4);
            mpe_rd r;
            mpe__rd_init(&r, in.p + HDR, in.n - HDR);
            lworker *w = in.p[0] == OP_OPEN ? NULL : find_worker(list, id);
            switch (in.p[0]) {
            case OP_OPEN:
                if ((w = open_worker(L, id, &r)) != NULL) {
                    w->next = list;
                    list = w;
                }
                break;
            case OP_DATA:
                if (w && w->fd >= 0 && mpe__buf_grow(&w->out, in.n - HDR) == 0) {
                    memcpy(w->out.p + w->out.n, in.p + HDR, in.n - HDR);
                    w->out.n += in.n - HDR;
                }
                break;
            case OP_CLOSE:
                if (w)
                    w->close_wanted = 1;
                break;
            case OP_KILL:
                if (w && w->pid > 0)
                    kill(w->pid, SIGKILL);
                break;
            case OP_QUIT:
                quit = 1;
                break;
            }
        }
        /* Forget workers that are over (reaped, channel closed). */
        for (lworker **pp = &list; *pp;)
            if ((*pp)->pid == 0 && (*pp)->fd < 0) {
                lworker *w = *pp;
                *pp = w->next;
                free_worker(w);
            } else
                pp = &(*pp)->next;
        size_t n = 0;
        for (lworker *w = list; w; w = w->next)
            n++;
        if (n + 1 > cap) {
            cap = 2 * (n + 1);
            free(pf);
            free(of);
            pf = malloc(cap * sizeof *pf);
            of = malloc(cap * sizeof *of);
            if (!pf || !of) {
                status = 1;
                break;
            }
        }
        int np = 0;
        int64_t now = now_ns();
        for (lworker *w = list; w; w = w->next) {
            if (w->fd < 0)
                continue;
            if (w->out.n > w->off && drain(w->fd, &w->out, &w->off) != 0)
                w->out.n = w->off = 0; /* it is gone: EOF will tell */
            if (w->close_wanted && w->out.n == 0)
                shutdown(w->fd, SHUT_WR);
            if (w->timeout > 0 && !w->timed_out && w->prog && w->prog->chunk != 0 &&
                now - w->prog->started_ns > (int64_t)(w->timeout * 1e9)) {
                w->timed_out = 1;
                kill(w->pid, SIGKILL);
            }
            pf[np].fd = w->fd;
            pf[np].events = (pending < PENDING_MAX ? POLLIN : 0) | (w->out.n > w->off ? POLLOUT : 0);
            of[np++] = w;
        }
        busy |= push_sends() && us == 0;
        int r = nap(pf, np, busy, &us);
        for (int k = 0; r > 0 && k < np; k++) {
            lworker *w = of[k];
            if (!(pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t got;
            do
                got = read(w->fd, tmp, READ_MAX);
            while (got < 0 && errno == EINTR);
            if (got > 0) {
                post(0, OP_DATA, w->id, tmp, (size_t)got);
                us = 0;
            } else if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                worker_gone(w);
                us = 0;
            }
        }
    }
    while (list) {
        lworker *w = list;
        list = w->next;
        free_worker(w);
    }
    /* Let the last death records and data reach rank 0 (bounded: it may be gone). */
    for (int64_t end = now_ns() + 2000000000; push_sends() && now_ns() < end;)
        nap(NULL, 0, 0, &(int){IDLE_MAX_US / 2});
    free(pf);
    free(of);
    free(tmp);
    mpe__buf_free(&in);
    return status;
}

/* ---- rank 0: stand-ins and the bridge ---------------------------------------------
 * A remote worker is seen by the pool as a local process (the stand-in, which
 * only waits) and a channel (a socketpair whose other end the bridge thread
 * relays over MPI). When the remote worker dies, the bridge hands its death
 * record to the stand-in, which writes the progress slot as the worker left
 * it and exits as the worker did: the pool's ordinary death handling then
 * blames the right item with the right status. */

typedef struct rslot {
    uint32_t id;
    int rank;
    pid_t stand, rpid;
    int fd;          /* the bridge's end of the pool's channel, -1 once closed */
    int ctl;         /* the bridge's end of the stand-in's control socket, -1 once closed */
    int dying;       /* the death record went to the stand-in */
    int timed_out;   /* ... for a timeout: the pool kills the stand-in, then the channel closes */
    mpe_buf out;     /* bytes for the pool not yet written */
    size_t off;
    char *open;      /* the OPEN payload until the bridge posts it */
    size_t nopen;
    struct rslot *next;
} rslot;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static rslot *slots;     /* newest first; kept after death for where() */
static uint32_t next_id;
static int wake_fd = -1;
static pthread_t bridge;
static int bridge_started;
static volatile int bridge_quit;

static _Noreturn void stand_in(int ctl, mpe_progress *slot)
{
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none); /* replaying a SIGSEGV must not dump a core */
    death d;
    size_t got = 0;
    while (got < sizeof d) {
        ssize_t r = read(ctl, (char *)&d + got, sizeof d - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            _exit(0); /* the bridge is gone: the pool is being torn down */
        got += (size_t)r;
    }
    slot->item = d.item;
    slot->ready = d.ready;
    slot->started_ns = d.timed_out ? 1 : now_ns();
    __atomic_store_n(&slot->chunk, d.chunk, __ATOMIC_RELEASE);
    if (d.timed_out)
        for (;;)
            pause(); /* the pool's timeout check sees the item overdue and kills us */
    if (WIFSIGNALED(d.status)) {
        int sig = WTERMSIG(d.status);
        sigset_t all;
        sigfillset(&all);
        sigprocmask(SIG_UNBLOCK, &all, NULL);
        signal(sig, SIG_DFL);
        raise(sig);
    }
    _exit(WIFEXITED(d.status) ? WEXITSTATUS(d.status) : 1);
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

static pid_t spawn_remote(lua_State *L, int rank, const mpe_worker_cfg *cfg, double timeout, int *fd,
                          mpe_err *e)
{
    mpe_buf *b = mpe__buf_box(L); /* owned by Lua until copied out */
    uint64_t tbits;
    memcpy(&tbits, &timeout, sizeof tbits);
    mpe__buf_put_u32(L, b, (uint32_t)cfg->slot);
    mpe__buf_put_u32(L, b, (uint32_t)cfg->number);
    mpe__buf_put_u32(L, b, (uint32_t)cfg->maxtasks);
    mpe__buf_put_u64(L, b, tbits);
    mpe__buf_put_u8(L, b, cfg->init_ref != LUA_NOREF);
    if (cfg->init_ref != LUA_NOREF) {
        lua_pushcfunction(L, encode_init);
        lua_pushlightuserdata(L, b);
        lua_pushlightuserdata(L, (void *)cfg);
        if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
            mpe__seterr(e, "%s", lua_tostring(L, -1));
            lua_pop(L, 2);
            return -1;
        }
    }
    rslot *s = calloc(1, sizeof *s);
    char *open = malloc(b->n);
    int chan[2] = {-1, -1}, ctl[2] = {-1, -1};
    if (!s || !open) {
        mpe__seterr(e, "pool: not enough memory");
        goto fail;
    }
    memcpy(open, b->p, b->n);
    s->nopen = b->n;
    s->open = open;
    open = NULL;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) != 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0) {
        mpe__seterr(e, "socketpair: %s", strerror(errno));
        goto fail;
    }
    int sz = 1 << 20;
    for (int k = 0; k < 2; k++) {
        setsockopt(chan[k], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        setsockopt(chan[k], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    }
    /* Parent-only ends: children forked from now on (the stand-in too) close them. */
    mpe__proc_track_fd(chan[0]);
    mpe__proc_track_fd(chan[1]);
    mpe__proc_track_fd(ctl[0]);
    pid_t pid = mpe__proc_fork(e);
    if (pid == 0)
        stand_in(ctl[1], cfg->progress);
    close(ctl[1]);
    ctl[1] = -1;
    if (pid < 0) {
        for (int k = 0; k < 2; k++)
            mpe__proc_untrack_fd(chan[k]);
        mpe__proc_untrack_fd(ctl[0]);
        goto fail;
    }
    set_nonblock(chan[0]);
    set_nonblock(chan[1]);
    set_nonblock(ctl[0]);
    s->rank = rank;
    s->stand = pid;
    s->fd = chan[1];
    s->ctl = ctl[0];
    pthread_mutex_lock(&mu);
    s->id = ++next_id;
    s->next = slots;
    slots = s;
    pthread_mutex_unlock(&mu);
    uint64_t one = 1;
    ssize_t w = write(wake_fd, &one, sizeof one);
    (void)w;
    lua_pop(L, 1);
    *fd = chan[0];
    return pid;
fail:
    for (int k = 0; k < 2; k++) {
        if (chan[k] >= 0)
            close(chan[k]);
        if (ctl[k] >= 0)
            close(ctl[k]);
    }
    if (s)
        free(s->open);
    free(s);
    free(open);
    lua_pop(L, 1);
    return -1;
}

static int where(pid_t pid, int *rank, pid_t *rpid)
{
    int found = 0;
    pthread_mutex_lock(&mu);
    for (rslot *s = slots; s; s = s->next)
        if (s->stand == pid) {
            *rank = s->rank;
            *rpid = s->rpid > 0 ? s->rpid : pid;
            found = 1;
            break;
        }
    pthread_mutex_unlock(&mu);
    return found;
}

static rslot *find_slot(uint32_t id)
{
    pthread_mutex_lock(&mu);
    rslot *s = slots;
    while (s && s->id != id)
        s = s->next;
    pthread_mutex_unlock(&mu);
    return s;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        mpe__proc_untrack_fd(*fd);
        close(*fd);
        *fd = -1;
    }
}

/* A remote worker died: give the stand-in its record. The channel closes once
 * what the worker sent before dying is written (or, after a timeout, once the
 * pool has killed the stand-in). */
static void on_remote_death(rslot *s, const mpe_rd *r)
{
    death d;
    if (r->n < sizeof d || s->dying)
        return;
    memcpy(&d, r->p, sizeof d);
    pthread_mutex_lock(&mu);
    s->rpid = d.pid;
    pthread_mutex_unlock(&mu);
    s->dying = 1;
    s->timed_out = d.timed_out;
    if (s->ctl >= 0) {
        ssize_t w;
        do
            w = write(s->ctl, &d, sizeof d); /* 40 bytes into an empty socket: never short */
        while (w < 0 && errno == EINTR);
    }
}

/* Which ranks died: their pid is gone (same host only; elsewhere the launcher tells). */
static int rank_alive(int r)
{
    char host[64];
    gethostname(host, sizeof host);
    host[63] = 0;
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

/* A remote rank died: say so, and end its workers' stand-ins as crashed, so
 * the pool blames the items they held; the launcher ends the run. */
static void on_rank_death(int r)
{
    fprintf(stderr, "mpe: rank %d (pid %d on %s) died; the pool's items on its workers fail with kind \"crash\"\n",
            r, (int)pid_of[r], host_of[r]);
    for (rslot *s = slots; s; s = s->next)
        if (s->rank == r && !s->dying) {
            death d = {.status = SIGKILL, .pid = 0};
            mpe_rd rd;
            mpe__rd_init(&rd, &d, sizeof d);
            on_remote_death(s, &rd);
        }
}

static void *bridge_main(void *arg)
{
    (void)arg;
    mpe__proc_busy(); /* idle only while asleep in poll (see mpe__proc_fork) */
    mpe_buf in = {0};
    struct pollfd *pf = NULL;
    rslot **of = NULL;
    int *isctl = NULL;
    size_t cap = 0;
    int us = 0;
    char *tmp = malloc(READ_MAX);
    char *dead = calloc((size_t)nranks, 1);
    int64_t next_check = 0;
    while (tmp && dead && !bridge_quit) {
        int busy = 0, src;
        while (take(&in, &src)) {
            busy = 1;
            uint32_t id;
            memcpy(&id, in.p + 1, 4);
            rslot *s = find_slot(id);
            if (!s)
                continue;
            mpe_rd r;
            mpe__rd_init(&r, in.p + HDR, in.n - HDR);
            if (in.p[0] == OP_DATA && s->fd >= 0 && mpe__buf_grow(&s->out, in.n - HDR) == 0) {
                memcpy(s->out.p + s->out.n, in.p + HDR, in.n - HDR);
                s->out.n += in.n - HDR;
            } else if (in.p[0] == OP_DEATH)
                on_remote_death(s, &r);
        }
        size_t n = 0;
        pthread_mutex_lock(&mu);
        for (rslot *s = slots; s; s = s->next)
            n += (s->fd >= 0) + (s->ctl >= 0);
        pthread_mutex_unlock(&mu);
        if (n + 1 > cap) {
            cap = 2 * (n + 1);
            free(pf);
            free(of);
            free(isctl);
            pf = malloc(cap * sizeof *pf);
            of = malloc(cap * sizeof *of);
            isctl = malloc(cap * sizeof *isctl);
            if (!pf || !of || !isctl)
                break;
        }
        int np = 0;
        pf[np].fd = wake_fd;
        pf[np++].events = POLLIN;
        pthread_mutex_lock(&mu);
        rslot *list = slots; /* the main thread only pushes in front of it */
        pthread_mutex_unlock(&mu);
        for (rslot *s = list; s; s = s->next) {
            if (s->open) {
                post(s->rank, OP_OPEN, s->id, s->open, s->nopen);
                free(s->open);
                s->open = NULL;
            }
            if (s->fd >= 0 && s->out.n > s->off && drain(s->fd, &s->out, &s->off) != 0)
                s->out.n = s->off = 0;
            if (s->dying && !s->timed_out && s->out.n == 0)
                close_fd(&s->fd);
            if (s->fd < 0 && s->ctl < 0)
                mpe__buf_free(&s->out);
            if (s->fd >= 0) {
                pf[np].fd = s->fd;
                pf[np].events = (pending < PENDING_MAX ? POLLIN : 0) | (s->out.n > s->off ? POLLOUT : 0);
                of[np] = s;
                isctl[np++] = 0;
            }
            if (s->ctl >= 0) {
                pf[np].fd = s->ctl;
                pf[np].events = POLLIN;
                of[np] = s;
                isctl[np++] = 1;
            }
        }
        busy |= push_sends() && us == 0;
        mpe__proc_idle(); /* asleep in poll, holding nothing: a fork may happen now */
        int r = nap(pf, np, busy, &us);
        mpe__proc_busy();
        if (r > 0 && (pf[0].revents & POLLIN)) {
            uint64_t v;
            ssize_t rr = read(wake_fd, &v, sizeof v);
            (void)rr;
            us = 0;
        }
        for (int k = 1; r > 0 && k < np; k++) {
            rslot *s = of[k];
            if (!(pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            us = 0;
            if (isctl[k]) {
                /* The stand-in is gone: killed by the pool (timeout, terminate) or
                 * done replaying a death. The remote worker goes too. */
                char c;
                if (read(s->ctl, &c, 1) > 0)
                    continue;
                if (!s->dying)
                    post(s->rank, OP_KILL, s->id, NULL, 0);
                close_fd(&s->ctl);
                if (!s->dying || s->timed_out)
                    close_fd(&s->fd);
                continue;
            }
            if (s->fd < 0)
                continue;
            ssize_t got;
            do
                got = read(s->fd, tmp, READ_MAX);
            while (got < 0 && errno == EINTR);
            if (got > 0)
                post(s->rank, OP_DATA, s->id, tmp, (size_t)got);
            else if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                post(s->rank, OP_CLOSE, s->id, NULL, 0);
                close_fd(&s->fd);
            }
        }
        int64_t now = now_ns();
        if (now >= next_check) {
            next_check = now + 200000000; /* 0.2 s */
            for (int k = 1; k < nranks; k++)
                if (!dead[k] && !rank_alive(k)) {
                    dead[k] = 1;
                    on_rank_death(k);
                }
        }
    }
    /* Quit: tell every rank, then give the messages up to 5 s to leave. */
    for (int k = 1; k < nranks; k++)
        if (!dead || !dead[k])
            post(k, OP_QUIT, 0, NULL, 0);
    for (int64_t end = now_ns() + 5000000000; push_sends() && now_ns() < end;) {
        int z = IDLE_MIN_US * 10;
        nap(NULL, 0, 0, &z);
    }
    free(pf);
    free(of);
    free(isctl);
    free(tmp);
    free(dead);
    mpe__buf_free(&in);
    mpe__proc_idle();
    return NULL;
}

/* ---- start and end ----------------------------------------------------------------- */

int mpe__mpi_launched(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMIX_RANK", "PMI_SIZE",
                                 "MPI_LOCALNRANKS", "SLURM_PMIX_MAPPING_SERV"};
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
    if (!workers_of || !pid_of || !host_of)
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
    ops.workers = workers_of;
    ops.spawn = spawn_remote;
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
        uint64_t one = 1;
        ssize_t w = write(wake_fd, &one, sizeof one);
        (void)w;
        pthread_join(bridge, NULL);
        bridge_started = 0;
    }
    mpe__ranks = NULL;
    MPI_Comm_free(&comm);
    MPI_Finalize();
}
