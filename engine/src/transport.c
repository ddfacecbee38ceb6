/* transport.c -- how bytes travel between a pool and its workers: a
 * socketpair per worker carrying framed messages, with descriptor passing.
 * SPDX-License-Identifier: MIT
 *
 * The socketpair backend of transport.h's operation table, which is all the
 * scheduler and the worker loop call, so that another backend (MPI) plugs in
 * beside it; bytes and descriptors travel through fdio.c. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "compat.h"
#include "buf.h"
#include "err.h"
#include "fdio.h"
#include "lbuf.h"
#include "proc.h"
#include "protocol.h"
#include "transport.h"
#include "worker.h"

/* Append what one read brings to b, its descriptors (with their stream
 * positions) to in. As mpe__fdio_recv. */
static ssize_t link_recv(int fd, mpe_buf *b, mpe_fdin *in, int block)
{
    if (mpe__buf_grow(b, 1 << 16) != 0)
        return -1;
    ssize_t r = mpe__fdio_recv(fd, b->p + b->n, b->cap - b->n, in, block ? 0 : MSG_DONTWAIT);
    if (r > 0)
        b->n += (size_t)r;
    return r;
}

int mpe__frame_peek(const mpe_buf *b, size_t off, unsigned *type, uint32_t *len)
{
    if (b->n - off < MPE_FRAME_HDR)
        return 0;
    const unsigned char *s = (const unsigned char *)b->p + off;
    uint32_t n = (uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 | (uint32_t)s[3] << 24;
    if (b->n - off - MPE_FRAME_HDR < n)
        return 0;
    *type = s[4];
    *len = n;
    return 1;
}

size_t mpe__frame_begin(lua_State *L, mpe_buf *b, unsigned type)
{
    size_t start = b->n;
    mpe__buf_put_u32(L, b, 0);
    mpe__buf_put_u8(L, b, type);
    return start;
}

void mpe__frame_end(mpe_buf *b, size_t start)
{
    uint32_t n = (uint32_t)(b->n - start - MPE_FRAME_HDR);
    unsigned char *s = (unsigned char *)b->p + start;
    for (int i = 0; i < 4; i++)
        s[i] = (unsigned char)(n >> (8 * i));
}

/* ---- the socketpair backend of transport.h ------------------------------------------ */

struct mpe_link {
    int fd;                 /* the parent's end (the child's own link: its end) */
    pid_t pid;
    mpe_progress *progress; /* the shared slot the worker writes */
};

struct mpe_transport {
    int n;
    struct pollfd *pf; /* wakefd + one per link, reused by every wait */
};

static mpe_transport *sp_open(int n, mpe_err *e)
{
    mpe_transport *t = calloc(1, sizeof *t);
    if (t)
        t->pf = calloc((size_t)n + 1, sizeof *t->pf);
    if (!t || !t->pf) {
        free(t);
        mpe__seterr(e, "pool: not enough memory");
        return NULL;
    }
    t->n = n;
    return t;
}

static void sp_close(mpe_transport *t)
{
    if (t)
        free(t->pf);
    free(t);
}

static mpe_link *sp_start(mpe_transport *t, lua_State *L, mpe_progress *progress, mpe_worker_fn run,
                          void *ud, pid_t *pid, mpe_err *e)
{
    (void)t;
    mpe_link *l = malloc(sizeof *l); /* before the fork: nothing can fail after it */
    if (!l) {
        mpe__seterr(e, "pool: not enough memory");
        return NULL;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        mpe__seterr(e, "socketpair: %s", strerror(errno));
        free(l);
        return NULL;
    }
    /* Larger buffers let a worker queue more results before it blocks. */
    int sz = 1 << 20;
    for (int k = 0; k < 2; k++) {
        setsockopt(sv[k], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        setsockopt(sv[k], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    }
    pid_t c = mpe__proc_fork(e);
    if (c < 0) {
        close(sv[0]);
        close(sv[1]);
        free(l);
        return NULL;
    }
    if (c == 0) {
        close(sv[0]);
        l->fd = sv[1];
        l->pid = getpid();
        l->progress = progress;
        run(L, l, ud);
        _exit(0); /* run never returns; this only keeps the contract visible */
    }
    close(sv[1]);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    mpe__proc_track_fd(sv[0]);
    l->fd = sv[0];
    l->pid = c;
    l->progress = progress;
    *pid = c;
    return l;
}

static ssize_t sp_send(mpe_link *l, const void *p, size_t n, const int *fds, int nfds)
{
    ssize_t r = mpe__fdio_send(l->fd, p, n, fds, nfds, MSG_DONTWAIT);
    /* A message with descriptors goes whole: the scheduler sends such frames
     * alone and only ever resumes plain bytes. They are a few hundred bytes. */
    if (r > 0 && nfds > 0 && (size_t)r < n &&
        mpe__fdio_send_all(l->fd, (const char *)p + r, n - (size_t)r, NULL, 0) != 0)
        return -1;
    return r > 0 && nfds > 0 ? (ssize_t)n : r;
}

static ssize_t sp_recv(mpe_link *l, mpe_buf *b, mpe_fdin *in)
{
    return link_recv(l->fd, b, in, 0);
}

static int sp_wait(mpe_transport *t, mpe_link *const *links, const unsigned *want, unsigned *ev, int n,
                   int wakefd, int ms)
{
    struct pollfd *pf = t->pf;
    int np = 0;
    if (wakefd >= 0) {
        pf[np].fd = wakefd;
        pf[np++].events = POLLIN;
    }
    int first = np;
    for (int i = 0; i < n; i++) {
        pf[np].fd = links[i]->fd;
        pf[np++].events = (short)(POLLIN | ((want[i] & MPE_T_WRITE) ? POLLOUT : 0));
        ev[i] = 0;
    }
    int r;
    do
        r = poll(pf, (nfds_t)np, ms);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -1;
    if (wakefd >= 0 && (pf[0].revents & POLLIN)) {
        uint64_t v;
        ssize_t rr = read(wakefd, &v, sizeof v);
        (void)rr; /* drained: the next write wakes us again */
    }
    int ready = 0;
    for (int i = 0; i < n; i++) {
        short re = pf[first + i].revents;
        if (re & (POLLIN | POLLHUP | POLLERR))
            ev[i] |= MPE_T_READ;
        if (re & POLLOUT)
            ev[i] |= MPE_T_WRITE;
        ready += ev[i] != 0;
    }
    return ready;
}

static void sp_kill(mpe_link *l)
{
    kill(l->pid, SIGKILL);
}

static void sp_reap(mpe_link *l, int *status)
{
    int st = 0;
    pid_t r;
    do
        r = waitpid(l->pid, &st, 0);
    while (r < 0 && errno == EINTR);
    mpe__proc_untrack_fd(l->fd);
    close(l->fd);
    *status = st;
    free(l);
}

static void sp_forget(mpe_link *l)
{
    free(l);
}

static void sp_progress(mpe_link *l, mpe_progress *out)
{
    out->chunk = __atomic_load_n(&l->progress->chunk, __ATOMIC_ACQUIRE);
    out->item = l->progress->item;
    out->started_ns = l->progress->started_ns;
    out->ready = l->progress->ready;
}

static int sp_send_all(mpe_link *self, const void *p, size_t n, const int *fds, int nfds)
{
    return mpe__fdio_send_all(self->fd, p, n, fds, nfds);
}

static ssize_t sp_child_recv(mpe_link *self, mpe_buf *b, mpe_fdin *in, int block)
{
    return link_recv(self->fd, b, in, block);
}

const mpe_transport_ops mpe__transport_socketpair = {
    .name = "socketpair",
    .open = sp_open,
    .close = sp_close,
    .start = sp_start,
    .send = sp_send,
    .recv = sp_recv,
    .wait = sp_wait,
    .kill = sp_kill,
    .reap = sp_reap,
    .forget = sp_forget,
    .progress = sp_progress,
    .send_all = sp_send_all,
    .child_recv = sp_child_recv,
};
