/* fdio.c -- bytes with descriptors over Unix stream sockets: descriptor
 * lists, sendmsg/recvmsg with SCM_RIGHTS, and descriptor bundles.
 * SPDX-License-Identifier: MIT
 *
 * transport.c (the pool's links, mpe.process), pipe.c and queue.c build on
 * this file; nothing else calls sendmsg or recvmsg with descriptors. Why
 * batches ride on consecutive bytes and how a receiver finds a frame's
 * descriptors: see fdio.h. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "fdio.h"

/* ---- descriptor lists ------------------------------------------------------- */

static int reserve(mpe_fds *f, int extra)
{
    if (f->n + extra <= f->cap)
        return 0;
    int cap = f->cap ? f->cap : 16;
    while (cap < f->n + extra)
        cap *= 2;
    int *g = realloc(f->fd, sizeof(int) * (size_t)cap);
    if (!g) {
        errno = ENOMEM;
        return -1;
    }
    f->fd = g;
    f->cap = cap;
    return 0;
}

int mpe__fds_add(mpe_fds *f, int fd)
{
    if (reserve(f, 1) != 0) {
        if (fd >= 0)
            close(fd);
        errno = ENOMEM;
        return -1;
    }
    f->fd[f->n++] = fd;
    return 0;
}

int mpe__fds_move(mpe_fds *dst, mpe_fds *src)
{
    if (src->n == 0)
        return 0;
    if (reserve(dst, src->n) != 0) {
        mpe__fds_close(src);
        errno = ENOMEM;
        return -1;
    }
    memcpy(dst->fd + dst->n, src->fd, sizeof(int) * (size_t)src->n);
    dst->n += src->n;
    src->n = 0;
    return 0;
}

void mpe__fds_truncate(mpe_fds *f, int from)
{
    int e = errno;
    for (int i = from; i < f->n; i++)
        if (f->fd[i] >= 0)
            close(f->fd[i]);
    if (from < f->n)
        f->n = from;
    errno = e;
}

void mpe__fds_close(mpe_fds *f)
{
    mpe__fds_truncate(f, 0);
    free(f->fd);
    f->fd = NULL;
    f->n = f->cap = 0;
}

/* ---- sending ------------------------------------------------------------------ */

typedef union {
    char buf[CMSG_SPACE(sizeof(int) * MPE_FDIO_BATCH)];
    struct cmsghdr align;
} cmsgbuf;

/* One sendmsg of up to len bytes of the message iov[0..niov) from byte off,
 * with nfds (<= MPE_FDIO_BATCH) descriptors on the first of them. */
static ssize_t send_one(int sock, const struct iovec *iov, int niov, size_t off, size_t len,
                        const int *fds, int nfds, int flags)
{
    struct iovec v[4];
    int nv = 0;
    for (int i = 0; i < niov && nv < 4 && len > 0; i++) {
        if (off >= iov[i].iov_len) {
            off -= iov[i].iov_len;
            continue;
        }
        size_t k = iov[i].iov_len - off < len ? iov[i].iov_len - off : len;
        v[nv].iov_base = (char *)iov[i].iov_base + off;
        v[nv++].iov_len = k;
        len -= k;
        off = 0;
    }
    struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)nv};
    cmsgbuf u;
    if (nfds > 0) {
        memset(&u, 0, sizeof u);
        m.msg_control = u.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t r;
    do
        r = sendmsg(sock, &m, flags | MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r;
}

static int would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK;
}

ssize_t mpe__fdio_sendv(int sock, const struct iovec *iov, int niov, size_t off, const int *fds,
                        int nfds, int flags)
{
    if (niov > 4) {
        errno = EINVAL;
        return -1;
    }
    size_t n = 0;
    for (int i = 0; i < niov; i++)
        n += iov[i].iov_len;
    n = n > off ? n - off : 0;
    int nb = nfds > 0 ? (nfds + MPE_FDIO_BATCH - 1) / MPE_FDIO_BATCH : 0;
    if ((size_t)nb > n) {
        errno = EMSGSIZE;
        return -1;
    }
    size_t sent = 0;
    for (int k = 0; k < nb || sent == 0; k++) {
        int last = k >= nb - 1;
        const int *b = nb ? fds + (size_t)k * MPE_FDIO_BATCH : NULL;
        int bn = !nb ? 0 : last ? nfds - k * MPE_FDIO_BATCH : MPE_FDIO_BATCH;
        size_t len = last ? n - sent : 1; /* each batch but the last on a byte of its own */
        ssize_t r = send_one(sock, iov, niov, off + sent, len, b, bn, k == 0 ? flags : MSG_DONTWAIT);
        if (r < 0 && would_block()) {
            if (k == 0)
                return 0; /* nothing went: the caller may wait or give up */
            /* Some batches went: the rest must follow, or the receiver would
             * see a frame with half its descriptors. One byte each: short. */
            if (mpe__fdio_wait(sock, POLLOUT, -1) < 0)
                return -1;
            k--;
            continue;
        }
        if (r < 0)
            return -1;
        sent += (size_t)r;
        if (last)
            break;
    }
    return (ssize_t)sent;
}

ssize_t mpe__fdio_send(int sock, const void *p, size_t n, const int *fds, int nfds, int flags)
{
    struct iovec v = {.iov_base = (void *)p, .iov_len = n};
    return mpe__fdio_sendv(sock, &v, 1, 0, fds, nfds, flags);
}

int mpe__fdio_send_all(int sock, const void *p, size_t n, const int *fds, int nfds)
{
    const char *s = p;
    size_t done = 0;
    while (done < n || (n == 0 && nfds > 0)) {
        ssize_t r = mpe__fdio_send(sock, s + done, n - done, done ? NULL : fds, done ? 0 : nfds,
                                   MSG_DONTWAIT);
        if (r < 0)
            return -1;
        if (r == 0) {
            if (mpe__fdio_wait(sock, POLLOUT, -1) < 0)
                return -1;
            continue;
        }
        done += (size_t)r;
    }
    return 0;
}

/* ---- receiving ---------------------------------------------------------------- */

ssize_t mpe__fdio_recvmsg(int sock, void *p, size_t n, mpe_fds *fds, int flags)
{
    struct iovec iov = {.iov_base = p, .iov_len = n};
    cmsgbuf u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    ssize_t r;
    do
        r = recvmsg(sock, &m, flags | MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return r;
    mpe_fds none = {0};
    mpe_fds *to = fds ? fds : &none;
    int had = to->n, err = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        const unsigned char *d = CMSG_DATA(c);
        for (int i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, d + sizeof(int) * (size_t)i, sizeof fd); /* CMSG_DATA may be unaligned */
            if (err || mpe__fds_add(to, fd) != 0) {
                if (!err)
                    err = ENOMEM; /* fds_add closed fd */
                else
                    close(fd);
            }
        }
    }
    if (!err && (m.msg_flags & MSG_CTRUNC))
        err = EPROTO; /* the kernel dropped descriptors (no room, or no free slot) */
    if (err || !fds) {
        mpe__fds_truncate(to, had);
        if (!fds)
            mpe__fds_close(&none);
    }
    if (err) {
        errno = err;
        return -1;
    }
    return r;
}

ssize_t mpe__fdio_recv(int sock, void *p, size_t n, mpe_fdin *in, int flags)
{
    if (!in)
        return mpe__fdio_recvmsg(sock, p, n, NULL, flags & ~MSG_PEEK);
    int had = in->fds.n;
    ssize_t r = mpe__fdio_recvmsg(sock, p, n, &in->fds, flags & ~MSG_PEEK);
    if (r <= 0)
        return r;
    if (in->fds.n > had && in->atcap < in->fds.cap) {
        uint64_t *a = realloc(in->at, sizeof *a * (size_t)in->fds.cap);
        if (!a) {
            mpe__fds_truncate(&in->fds, had);
            errno = ENOMEM;
            return -1;
        }
        in->at = a;
        in->atcap = in->fds.cap;
    }
    for (int i = had; i < in->fds.n; i++)
        in->at[i] = in->pos + (uint64_t)r - 1;
    in->pos += (uint64_t)r;
    return r;
}

void mpe__fdin_close(mpe_fdin *in)
{
    mpe__fds_close(&in->fds);
    free(in->at);
    in->at = NULL;
    in->atcap = 0;
}

int mpe__fdio_claim(mpe_fdin *in, uint64_t start, uint64_t end, mpe_fds *out)
{
    int i = 0, rc = 0, had = out->n;
    for (; i < in->fds.n && in->at[i] < end; i++) {
        int fd = in->fds.fd[i];
        if (in->at[i] < start || rc != 0) {
            if (fd >= 0)
                close(fd);
        } else if (mpe__fds_add(out, fd) != 0) {
            rc = -1; /* fd closed; close the rest of the frame's too */
        }
    }
    if (rc != 0)
        mpe__fds_truncate(out, had);
    if (i > 0) {
        in->fds.n -= i;
        memmove(in->fds.fd, in->fds.fd + i, sizeof(int) * (size_t)in->fds.n);
        memmove(in->at, in->at + i, sizeof *in->at * (size_t)in->fds.n);
    }
    if (rc != 0)
        errno = ENOMEM;
    return rc;
}

int mpe__fdio_wait(int sock, short events, double timeout)
{
    struct pollfd pf = {.fd = sock, .events = events};
    int ms = timeout < 0 ? -1 : (int)(timeout * 1000 + 0.999);
    int r;
    do
        r = poll(&pf, 1, ms);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -1 : r > 0;
}

/* ---- bundles ------------------------------------------------------------------ */

int mpe__fdio_bundle(const int *fds, int n)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return -1;
    int nb = (n + MPE_FDIO_BATCH - 1) / MPE_FDIO_BATCH, r = 0;
    char *bytes = calloc((size_t)nb + 1, 1);
    /* Nobody reads the bundle while it fills: it must take it all at once. */
    int sz = 4 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    if (!bytes) {
        errno = ENOMEM;
        r = -1;
    } else {
        for (size_t done = 0; r == 0 && done < (size_t)nb;) {
            ssize_t s = mpe__fdio_send(sv[0], bytes + done, (size_t)nb - done, done ? NULL : fds,
                                       done ? 0 : n, MSG_DONTWAIT);
            if (s <= 0) {
                if (s == 0)
                    errno = ENOBUFS;
                r = -1;
            } else
                done += (size_t)s;
        }
    }
    int e = errno;
    free(bytes);
    close(sv[0]);
    if (r != 0) {
        close(sv[1]);
        errno = e;
        return -1;
    }
    return sv[1];
}

int mpe__fdio_unbundle(int bundle, int n, mpe_fds *out)
{
    int had = out->n, off = 0;
    /* Peek, never read: with a peek offset each peek reaches the next batch. */
    if (setsockopt(bundle, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof off) != 0)
        return -1;
    while (out->n - had < n) {
        char c;
        ssize_t r = mpe__fdio_recvmsg(bundle, &c, 1, out, MSG_PEEK | MSG_DONTWAIT);
        if (r <= 0) {
            int e = r == 0 || would_block() ? EPROTO : errno;
            mpe__fds_truncate(out, had);
            errno = e;
            return -1;
        }
    }
    if (out->n - had != n) {
        mpe__fds_truncate(out, had);
        errno = EPROTO;
        return -1;
    }
    return 0;
}
