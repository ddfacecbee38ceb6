/* transport.c -- how bytes travel between a pool and its workers: a
 * socketpair per worker carrying framed messages, with descriptor passing.
 * SPDX-License-Identifier: MIT
 *
 * The scheduler (pool.c) and the worker loop (worker.c) use only the
 * functions here, so another transport (MPI) can replace this file. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "internal.h"

pid_t mpe__transport_spawn(lua_State *L, int *fd, void (*run)(lua_State *, int, void *), void *ud,
                           mpe_err *e)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return mpe__seterr(e, "socketpair: %s", strerror(errno));
    /* Larger buffers let a worker queue more results before it blocks. */
    int sz = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    pid_t pid = mpe__proc_fork(e);
    if (pid < 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        run(L, sv[1], ud);
        _exit(0); /* run never returns; this only keeps the contract visible */
    }
    close(sv[1]);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    mpe__proc_track_fd(sv[0]);
    *fd = sv[0];
    return pid;
}

static ssize_t send_some(int fd, const void *p, size_t n, const int *fds, int nfds, int flags)
{
    struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MPE_MAX_FDS)];
        struct cmsghdr align;
    } u;
    if (nfds > 0) {
        memset(&u, 0, sizeof u);
        m.msg_control = u.buf;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t r;
    do
        r = sendmsg(fd, &m, flags | MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r;
}

ssize_t mpe__transport_send(int fd, const void *p, size_t n, const int *fds, int nfds)
{
    ssize_t r = send_some(fd, p, n, fds, nfds, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    return r;
}

int mpe__transport_send_all(int fd, const void *p, size_t n, const int *fds, int nfds)
{
    const char *s = p;
    while (n > 0) {
        ssize_t r = send_some(fd, s, n, fds, nfds, 0);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                mpe__transport_wait(-fd - 1, -1); /* wait for room */
                continue;
            }
            return -1;
        }
        s += r;
        n -= (size_t)r;
        nfds = 0; /* descriptors travel with the first byte only */
    }
    return 0;
}

ssize_t mpe__transport_recv(int fd, mpe_buf *b, mpe_fds *fds, int block)
{
    if (mpe__buf_grow(b, 1 << 16) != 0)
        return -1;
    struct iovec iov = {.iov_base = b->p + b->n, .iov_len = b->cap - b->n};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MPE_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    ssize_t r;
    do
        r = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | (block ? 0 : MSG_DONTWAIT));
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *got = (int *)CMSG_DATA(c);
        for (int i = 0; i < n; i++) {
            if (fds && fds->n < MPE_MAX_FDS)
                fds->fd[fds->n++] = got[i];
            else
                close(got[i]);
        }
    }
    b->n += (size_t)r;
    return r;
}

/* fd >= 0: wait until readable; fd < 0: wait until -fd-1 is writable. */
int mpe__transport_wait(int fd, double timeout)
{
    struct pollfd p = {.fd = fd >= 0 ? fd : -fd - 1, .events = fd >= 0 ? POLLIN : POLLOUT};
    int ms = timeout < 0 ? -1 : (int)(timeout * 1000 + 0.999);
    int r;
    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r > 0;
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
