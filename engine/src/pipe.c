/* pipe.c -- mpe.pipe's engine: framed messages with descriptors over a
 * stream socketpair, each end buffering what it has received.
 * SPDX-License-Identifier: MIT
 *
 * A frame is [u32 payload length][u32 descriptor count][payload]; the frame's
 * descriptors ride on its first bytes and are claimed by position (fdio.c). A stream socket, not a
 * datagram one, because a message may be far larger than a socket buffer
 * (datagrams cannot exceed it). The kernel never merges bytes that carry
 * descriptors with later ones in one read, and the stream keeps order, so the
 * descriptors come out of the end's queue in frame order. End of file (every
 * copy of the other end closed, in every process) is how a receiver learns
 * that nobody can send any more: recv then fails instead of hanging. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "buf.h"
#include "err.h"
#include "fdio.h"
#include "ipc.h"
#include "pipe.h"
#include "proc.h"
#include "waitctl.h"

#define FRAME_HDR 8
#define READ_CHUNK (64 * 1024)

void mpe__pipe_init(mpe_pipe *p)
{
    memset(p, 0, sizeof *p);
    p->fd = -1;
}

static void tune(int fd)
{
    int sz = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
}

int mpe__pipe_pair(mpe_pipe *a, mpe_pipe *b, mpe_err *e)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return mpe__seterr(e, "socketpair: %s", strerror(errno));
    tune(sv[0]);
    tune(sv[1]);
    a->fd = sv[0];
    b->fd = sv[1];
    return 0;
}

void mpe__pipe_close(mpe_pipe *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    mpe__fdin_close(&p->q);
    mpe__buf_free(&p->in);
    p->off = 0;
}

static int interrupted(const mpe_waitctl *w)
{
    return w && w->interrupted && w->interrupted(w->ud);
}

/* Wait until fd is readable (events POLLIN) or writable (POLLOUT), in slices.
 * MPE_WAIT_OK, _TIMEOUT, _INTERRUPTED (only if w is given). */
static int wait_fd(int fd, short events, double deadline, const mpe_waitctl *w)
{
    for (;;) {
        double slice = 0.1;
        if (deadline >= 0) {
            double left = deadline - mpe__proc_now();
            if (left <= 0)
                return MPE_WAIT_TIMEOUT;
            if (left < slice)
                slice = left;
        }
        struct pollfd pf = {.fd = fd, .events = events};
        int r = poll(&pf, 1, (int)(slice * 1000) + 1);
        if (r > 0)
            return MPE_WAIT_OK;
        if (interrupted(w))
            return MPE_WAIT_INTERRUPTED;
    }
}

/* ---- send ------------------------------------------------------------------------ */

int mpe__pipe_send(mpe_pipe *p, const void *data, size_t n, mpe_fds *fds, const mpe_waitctl *w,
                   mpe_err *e)
{
    int rc = MPE_WAIT_OK;
    unsigned char hdr[FRAME_HDR];
    if (p->cut) {
        mpe__seterr(e, "an earlier send from this end was interrupted in the middle of a message, "
                       "so this end can send no more");
        rc = MPE_WAIT_ERROR;
        goto out;
    }
    if (n > UINT32_MAX) {
        mpe__seterr(e, "a message of %zu bytes is too large (at most 4 GiB)", n);
        rc = MPE_WAIT_ERROR;
        goto out;
    }
    for (int i = 0; i < 4; i++) {
        hdr[i] = (unsigned char)((uint32_t)n >> (8 * i));
        hdr[4 + i] = (unsigned char)((uint32_t)fds->n >> (8 * i));
    }
    struct iovec iov[2] = {{hdr, FRAME_HDR}, {(void *)data, n}};
    size_t sent = 0, total = FRAME_HDR + n;
    while (sent < total) {
        /* Descriptors ride on the first bytes only (fdio.c). */
        ssize_t r = mpe__fdio_sendv(p->fd, iov, 2, sent, sent ? NULL : fds->fd, sent ? 0 : fds->n,
                                    MSG_DONTWAIT);
        if (r > 0) {
            sent += (size_t)r;
            continue;
        }
        if (r < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            rc = MPE_IPC_CLOSED;
            goto out;
        }
        if (r < 0) {
            mpe__seterr(e, "sendmsg(pipe): %s",
                        errno == ETOOMANYREFS ? "too many descriptors in flight (raise the open files limit)"
                                              : strerror(errno));
            rc = MPE_WAIT_ERROR;
            goto out;
        }
        /* Full: wait for the reader. A frame that has started cannot be
         * taken back, so a signal now ends this end's sending for good:
         * shut down, the receiver sees the frame cut short, not a corrupt
         * stream; better than a send nobody can stop (Ctrl-C, SIGTERM). */
        rc = wait_fd(p->fd, POLLOUT, -1, w);
        if (rc == MPE_WAIT_INTERRUPTED && sent > 0) {
            shutdown(p->fd, SHUT_WR);
            p->cut = 1;
        }
        if (rc != MPE_WAIT_OK)
            goto out;
    }
out:
    mpe__fds_close(fds);
    return rc;
}

/* ---- receive --------------------------------------------------------------------- */

static uint32_t rd32(const unsigned char *s)
{
    return (uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 | (uint32_t)s[3] << 24;
}

/* 1 when a whole frame is buffered (its descriptors came with its first
 * bytes, so they are here too); *len, *nfds set whenever the header is. */
static int have_frame(const mpe_pipe *p, uint32_t *len, uint32_t *nfds)
{
    *len = 0;
    *nfds = 0;
    if (p->in.n - p->off < FRAME_HDR)
        return 0;
    const unsigned char *s = (const unsigned char *)p->in.p + p->off;
    *len = rd32(s);
    *nfds = rd32(s + 4);
    return p->in.n - p->off - FRAME_HDR >= *len;
}

/* Read what is there without blocking. 1 if bytes came, 0 at EOF (p->eof
 * set), -1 with errno EAGAIN when nothing is there, -1 on other errors. */
static int fill(mpe_pipe *p, size_t want)
{
    if (p->off > 0) { /* what was handed out is dead: move the rest to the front */
        memmove(p->in.p, p->in.p + p->off, p->in.n - p->off);
        p->in.n -= p->off;
        p->off = 0;
    }
    size_t room = want > READ_CHUNK ? want : READ_CHUNK;
    if (mpe__buf_grow(&p->in, room) != 0)
        return -1;
    ssize_t r = mpe__fdio_recv(p->fd, p->in.p + p->in.n, p->in.cap - p->in.n, &p->q, MSG_DONTWAIT);
    if (r < 0)
        return -1;
    if (r == 0) {
        p->eof = 1;
        return 0;
    }
    p->in.n += (size_t)r;
    return 1;
}

int mpe__pipe_recv(mpe_pipe *p, double timeout, const mpe_waitctl *w, const void **data,
                   size_t *n, mpe_fds *fds, mpe_err *e)
{
    double deadline = timeout < 0 ? -1 : mpe__proc_now() + timeout;
    uint32_t len, nfds;
    while (!have_frame(p, &len, &nfds)) {
        if (p->eof && p->in.n > p->off) {
            mpe__seterr(e, "the other end stopped in the middle of a message (%zu bytes of it came)",
                        p->in.n - p->off);
            return MPE_WAIT_ERROR;
        }
        if (p->eof)
            return MPE_IPC_CLOSED;
        size_t want = p->in.n - p->off >= FRAME_HDR ? FRAME_HDR + (size_t)len : 0;
        int r = fill(p, want > p->in.n - p->off ? want - (p->in.n - p->off) : 0);
        if (r >= 0)
            continue;
        if (errno == ECONNRESET) {
            p->eof = 1;
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            mpe__seterr(e, "recvmsg(pipe): %s",
                        errno == EPROTO ? "descriptors were dropped (the open files limit?)"
                                        : strerror(errno));
            return MPE_WAIT_ERROR;
        }
        if (timeout == 0)
            return MPE_WAIT_TIMEOUT;
        int rc = wait_fd(p->fd, POLLIN, deadline, w);
        if (rc != MPE_WAIT_OK)
            return rc;
    }
    /* The frame's descriptors are those that rode on its bytes. */
    uint64_t start = p->q.pos - (uint64_t)(p->in.n - p->off);
    int had = fds->n;
    if (mpe__fdio_claim(&p->q, start, start + FRAME_HDR + len, fds) != 0) {
        mpe__seterr(e, "out of memory for a message's descriptors");
        p->off += FRAME_HDR + (size_t)len;
        return MPE_WAIT_ERROR;
    }
    if ((uint32_t)(fds->n - had) != nfds) {
        /* Sent with nfds, a different count came: they were lost on the way. */
        mpe__seterr(e, "malformed message (%u descriptors, %d came)", (unsigned)nfds, fds->n - had);
        mpe__fds_truncate(fds, had);
        p->off += FRAME_HDR + (size_t)len;
        return MPE_WAIT_ERROR;
    }
    *data = p->in.p + p->off + FRAME_HDR;
    *n = len;
    p->off += FRAME_HDR + (size_t)len;
    return MPE_WAIT_OK;
}

int mpe__pipe_poll(mpe_pipe *p, double timeout, const mpe_waitctl *w, mpe_err *e)
{
    double deadline = timeout < 0 ? -1 : mpe__proc_now() + timeout;
    uint32_t len, nfds;
    for (;;) {
        /* Drain what is readable first: a large frame needs the room. */
        while (!p->eof && !have_frame(p, &len, &nfds)) {
            if (fill(p, 0) >= 0)
                continue;
            if (errno == ECONNRESET) {
                p->eof = 1;
                break;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            mpe__seterr(e, "recvmsg(pipe): %s",
                        errno == EPROTO ? "descriptors were dropped (the open files limit?)"
                                        : strerror(errno));
            return MPE_WAIT_ERROR;
        }
        if (p->eof || have_frame(p, &len, &nfds))
            return 1;
        if (timeout == 0)
            return 0;
        int rc = wait_fd(p->fd, POLLIN, deadline, w);
        if (rc == MPE_WAIT_TIMEOUT)
            return 0;
        if (rc != MPE_WAIT_OK)
            return rc;
    }
}
