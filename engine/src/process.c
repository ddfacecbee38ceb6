/* process.c -- one-off processes: fork a child that runs one Lua function in
 * the inherited lua_State, carry its outcome back through a socketpair, reap it.
 * SPDX-License-Identifier: MIT
 *
 * The child inherits the whole state as of start(), so the function and its
 * arguments are never encoded; only the outcome travels, over a socketpair so
 * that shared objects (arrays, locks, queues) can go with it as descriptors
 * (SCM_RIGHTS, attached to the first byte). Payload:
 *   u8 kind (0 returned, 1 raised), u64 body length, body
 *   returned: varint count, then each value (nils included)
 *   raised:   message (string), traceback (string or nil), error value (or nil)
 * A payload whose length does not match is incomplete: the child died writing. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "err.h"
#include "fdio.h"
#include "lbuf.h"
#include "proc.h"
#include "process.h"
#include "sig.h"
#include "transport.h"
#include "waitctl.h"

#define HEADER_SIZE 9
#define READ_CHUNK 65536

void mpe__process_init(mpe_process *p)
{
    memset(p, 0, sizeof *p);
    p->fd = -1;
    p->pidfd = -1;
}

/* Descriptors that came with the payload: held until release, since every
 * result() decodes from them again; tracked like the channel itself. */
static void close_received(mpe_process *p)
{
    for (int i = 0; i < p->fds.n; i++)
        mpe__proc_untrack_fd(p->fds.fd[i]);
    mpe__fds_close(&p->fds);
}

static void close_tracked(int *fd)
{
    if (*fd >= 0) {
        mpe__proc_untrack_fd(*fd);
        close(*fd);
        *fd = -1;
    }
}

static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0); /* close-on-exec by default */
    return fd >= 0 ? fd : -1;
#else
    (void)pid;
    return -1;
#endif
}

pid_t mpe__process_start(mpe_process *p, mpe_err *e)
{
    int fds[2];
    /* Close-on-exec: a program the child or parent runs with os.execute must
     * not hold the channel open (the parent would wait for its EOF). */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        return mpe__seterr(e, "socketpair() for the result channel: %s", strerror(errno));
    pid_t parent = getpid();
    pid_t pid = mpe__proc_fork(e);
    if (pid < 0) {
        int saved = errno;
        close(fds[0]);
        close(fds[1]);
        errno = saved;
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        p->pid = getpid();
        p->creator = parent; /* this copy is not ours to wait for */
        p->fd = fds[1];
        p->pidfd = -1;
        /* Our own children must not keep our parent's channel open. */
        mpe__proc_track_fd(fds[1]);
        return 0;
    }
    close(fds[1]);
    /* Only the child writes: the parent's end is for reading. */
    shutdown(fds[0], SHUT_WR);
    p->pid = pid;
    p->creator = parent;
    p->fd = fds[0];
    p->pidfd = open_pidfd(pid);
    mpe__proc_track_fd(p->fd);
    mpe__proc_track_fd(p->pidfd);
    return pid;
}

/* ---- the child's side ---------------------------------------------------------- */

/* The payload being built in the child: bytes, and the descriptors of the
 * shared objects it refers to (the message's duplicates, in a box). */
typedef struct outcome {
    mpe_buf *b;
    mpe_fds *fds;
} outcome;

static int is_error_object(lua_State *L, int idx)
{
    int yes = 0;
    if (luaL_getmetafield(L, idx, "__name") != LUA_TNIL) {
        const char *name = lua_tostring(L, -1);
        yes = name && strcmp(name, "mpe.Error") == 0;
        lua_pop(L, 1);
    }
    return yes;
}

/* Protected: encode the value at 2 into the outcome at 1 (a light userdata). */
static int encode_value(lua_State *L)
{
    outcome *o = lua_touserdata(L, 1);
    mpe__encode(L, 2, o->b, "error value", o->fds);
    return 0;
}

/* Encode what lua_pcall left at idx after a failure: the handler's table
 * { message, traceback, value }, an mpe.Error, or a bare string. */
static void encode_failure(lua_State *L, int idx, outcome *o)
{
    int top = lua_gettop(L);
    if (lua_type(L, idx) == LUA_TTABLE) {
        lua_getfield(L, idx, "message");
        lua_getfield(L, idx, "traceback");
        if (is_error_object(L, idx))
            lua_pushvalue(L, idx); /* a nested mpe failure: keep all its fields */
        else
            lua_getfield(L, idx, "value");
    } else {
        /* A memory error, or an error in the handler: no traceback. */
        if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER)
            lua_pushvalue(L, idx);
        else
            lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
        lua_pushnil(L);
        lua_pushnil(L);
    }
    if (lua_type(L, top + 1) != LUA_TSTRING) {
        lua_pushstring(L, "(no message)");
        lua_replace(L, top + 1);
    }
    if (lua_type(L, top + 2) != LUA_TSTRING) {
        lua_pushnil(L);
        lua_replace(L, top + 2);
    }
    mpe__encode(L, top + 1, o->b, "error message", NULL);
    mpe__encode(L, top + 2, o->b, "traceback", NULL);
    /* The value goes along only if it can: an unsendable error value must not
     * hide the error itself. */
    size_t mark = o->b->n;
    int fdmark = o->fds->n;
    lua_pushcfunction(L, encode_value);
    lua_pushlightuserdata(L, o);
    lua_pushvalue(L, top + 3);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        lua_pop(L, 1);
        o->b->n = mark;
        mpe__fds_truncate(o->fds, fdmark);
        lua_pushnil(L);
        mpe__encode(L, -1, o->b, "error value", NULL);
        lua_pop(L, 1);
    }
    lua_settop(L, top);
}

/* Protected: stack is p (light userdata), raised (boolean), then the function's
 * results or its error. Build the payload and send it to the parent. */
static int send_outcome(lua_State *L)
{
    mpe_process *p = lua_touserdata(L, 1);
    int raised = lua_toboolean(L, 2);
    int first = 3, n = lua_gettop(L) - 2;
    outcome o;
    o.b = mpe__buf_box(L);
    o.fds = mpe__fds_box(L);
    static const char zero[HEADER_SIZE] = {0};
    mpe__buf_put(L, o.b, zero, HEADER_SIZE);
    if (raised) {
        encode_failure(L, first, &o);
    } else {
        char root[32] = "result";
        mpe__buf_put_varint(L, o.b, (uint64_t)n);
        for (int i = 0; i < n; i++) {
            if (n > 1)
                snprintf(root, sizeof root, "result %d", i + 1);
            mpe__encode(L, first + i, o.b, root, o.fds);
        }
    }
    uint64_t len = o.b->n - HEADER_SIZE;
    o.b->p[0] = (char)raised;
    for (int i = 0; i < 8; i++)
        o.b->p[1 + i] = (char)(unsigned char)(len >> (8 * i));
    /* A failure (EPIPE: the parent is gone) leaves nobody to tell. */
    mpe__fdio_send_all(p->fd, o.b->p, o.b->n, o.fds->fd, o.fds->n);
    return 0;
}

static _Noreturn void leave(int status)
{
    fflush(NULL);
    _exit(status);
}

_Noreturn void mpe__process_run(lua_State *L, mpe_process *p, int nargs)
{
    int base = lua_gettop(L) - nargs; /* the function */
    lua_pushcfunction(L, p->handler); /* given by the binding layer: the engine never calls it by name */
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, LUA_MULTRET, base);
    /* Stack: handler at base, then the results or the error. */
    lua_pushcfunction(L, send_outcome);
    lua_insert(L, base + 1);
    lua_pushlightuserdata(L, p);
    lua_insert(L, base + 2);
    lua_pushboolean(L, status != LUA_OK);
    lua_insert(L, base + 3);
    if (lua_pcall(L, lua_gettop(L) - base - 1, 0, base) == LUA_OK)
        leave(status == LUA_OK ? 0 : 1);
    /* A result that cannot be sent (a coroutine, a file): that becomes the
     * child's failure, with the codec's message naming the path to it. */
    if (lua_type(L, -1) == LUA_TTABLE)
        lua_getfield(L, -1, "message");
    int msg = lua_gettop(L);
    lua_pushcfunction(L, send_outcome);
    lua_pushlightuserdata(L, p);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, msg);
    if (lua_pcall(L, 3, 0, base) != LUA_OK)
        fputs("mpe: could not send the process's outcome to its parent\n", stderr);
    leave(1);
}

/* ---- the creator's side ----------------------------------------------------------- */

/* Read what the child has sent so far, and the descriptors that came with it.
 * Returns 0, or -1 with e set. */
static int drain(mpe_process *p, mpe_err *e)
{
    while (p->fd >= 0) {
        int had = p->fds.n;
        ssize_t r = -1;
        if (mpe__buf_grow(&p->payload, 1 << 16) == 0)
            r = mpe__fdio_recvmsg(p->fd, p->payload.p + p->payload.n,
                                  p->payload.cap - p->payload.n, &p->fds, MSG_DONTWAIT);
        if (r > 0)
            p->payload.n += (size_t)r;
        for (int i = had; i < p->fds.n; i++)
            mpe__proc_track_fd(p->fds.fd[i]);
        if (r > 0) {
            if (p->discard) {
                p->payload.n = 0;
                close_received(p);
            }
        } else if (r == 0) {
            close_tracked(&p->fd);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else if (errno == ENOMEM) {
            return mpe__seterr(e, "not enough memory for the result of pid %d (%zu bytes so far)",
                               (int)p->pid, p->payload.n);
        } else {
            return mpe__seterr(e, "recvmsg() from the result channel of pid %d: %s",
                               (int)p->pid, strerror(errno));
        }
    }
    return 0;
}

/* Returns 1 if reaped (now or before), 0 if still running, -1 with e set. */
static int try_reap(mpe_process *p, mpe_err *e)
{
    if (p->reaped)
        return 1;
    int st;
    pid_t r;
    do
        r = waitpid(p->pid, &st, WNOHANG);
    while (r == -1 && errno == EINTR);
    if (r == 0)
        return 0;
    if (r < 0)
        return mpe__seterr(e, "waitpid(%d): %s", (int)p->pid, strerror(errno));
    p->reaped = 1;
    p->status = st;
    close_tracked(&p->pidfd);
    return 1;
}

int mpe__process_join(mpe_process *p, double timeout, const mpe_waitctl *w, mpe_err *e)
{
    double deadline = timeout >= 0 ? mpe__proc_now() + timeout : 0;
    int nap_ms = 1;
    for (;;) {
        int r = try_reap(p, e);
        if (r < 0 || drain(p, e) != 0)
            return MPE_WAIT_ERROR;
        if (r == 1) {
            /* The child is gone and everything it wrote has been read; a
             * descriptor someone else still holds must not keep us waiting. */
            close_tracked(&p->fd);
            return MPE_WAIT_OK;
        }
        if (w && w->interrupted && w->interrupted(w->ud))
            return MPE_WAIT_INTERRUPTED;
        int wait_ms = -1;
        if (timeout >= 0) {
            double left = deadline - mpe__proc_now();
            if (left <= 0)
                return MPE_WAIT_TIMEOUT;
            wait_ms = left * 1000 >= INT_MAX ? INT_MAX : (int)ceil(left * 1000);
        }
        /* A signal may come between the check above and poll: look again
         * within 100 ms rather than only when the child exits. */
        if (w && (wait_ms < 0 || wait_ms > 100))
            wait_ms = 100;
        struct pollfd pf[2];
        nfds_t n = 0;
        if (p->fd >= 0)
            pf[n++] = (struct pollfd){.fd = p->fd, .events = POLLIN};
        if (p->pidfd >= 0) {
            pf[n++] = (struct pollfd){.fd = p->pidfd, .events = POLLIN};
        } else {
            /* No exit notification without a pidfd: look again soon. */
            if (wait_ms < 0 || wait_ms > nap_ms)
                wait_ms = nap_ms;
            if (nap_ms < 20)
                nap_ms *= 2;
        }
        if (poll(pf, n, wait_ms) < 0 && errno != EINTR)
            return mpe__seterr(e, "poll() on process %d: %s", (int)p->pid, strerror(errno));
    }
}

int mpe__process_signal(mpe_process *p, int sig, mpe_err *e)
{
    /* Once reaped, the pid may already name someone else's process. Before
     * that it cannot: an unreaped child keeps its pid, even as a zombie. */
    if (p->reaped || p->pid <= 0)
        return 0;
    if (kill(p->pid, sig) != 0 && errno != ESRCH)
        return mpe__seterr(e, "kill(%d, %d): %s", (int)p->pid, sig, strerror(errno));
    return 0;
}

int mpe__process_exitcode(const mpe_process *p, int *code)
{
    if (!p->reaped)
        return -1;
    if (WIFEXITED(p->status))
        *code = WEXITSTATUS(p->status);
    else if (WIFSIGNALED(p->status))
        *code = -WTERMSIG(p->status);
    else
        *code = -1;
    return 0;
}

void mpe__process_describe(const mpe_process *p, char *out, size_t size)
{
    if (!p->reaped) {
        snprintf(out, size, "is still running");
    } else if (WIFEXITED(p->status)) {
        snprintf(out, size, "exited with status %d", WEXITSTATUS(p->status));
    } else if (WIFSIGNALED(p->status)) {
        int sig = WTERMSIG(p->status);
        const char *name = mpe__proc_signal_name(sig);
        if (name)
            snprintf(out, size, "killed by signal %d (%s)", sig, name);
        else
            snprintf(out, size, "killed by signal %d", sig);
    } else {
        snprintf(out, size, "ended with wait status %d", p->status);
    }
}

int mpe__process_outcome(lua_State *L, mpe_process *p, int *nvalues)
{
    const mpe_buf *b = &p->payload;
    *nvalues = 0;
    if (b->n < HEADER_SIZE || (b->p[0] != 0 && b->p[0] != 1))
        return MPE_PROCESS_NOTHING;
    uint64_t len = 0;
    for (int i = 0; i < 8; i++)
        len |= (uint64_t)(unsigned char)b->p[1 + i] << (8 * i);
    if (len != b->n - HEADER_SIZE)
        return MPE_PROCESS_NOTHING;
    mpe_rd r;
    mpe__rd_init(&r, b->p + HEADER_SIZE, (size_t)len);
    if (b->p[0] == 1) {
        luaL_checkstack(L, 3, "process outcome");
        for (int i = 0; i < 3; i++)
            mpe__decode(L, &r, &p->fds);
        return MPE_PROCESS_RAISED;
    }
    uint64_t n;
    if (mpe__rd_varint(&r, &n) != 0 || n > (uint64_t)(INT_MAX - LUA_MINSTACK))
        luaL_error(L, "mpe: decode: malformed process result (value count)");
    luaL_checkstack(L, (int)n + LUA_MINSTACK, "too many values returned by the process");
    for (uint64_t i = 0; i < n; i++)
        mpe__decode(L, &r, &p->fds);
    *nvalues = (int)n;
    return MPE_PROCESS_RETURNED;
}

static int signalled(void *ud)
{
    (void)ud;
    return mpe__sig_seen();
}

void mpe__process_release(mpe_process *p, int daemon)
{
    if (p->pid > 0 && p->creator == getpid()) {
        /* Nobody can ask for the result any more: read and drop it. */
        mpe__buf_free(&p->payload);
        close_received(p);
        p->discard = 1;
        /* A non-daemon child is waited for, until it exits or a signal
         * comes; after Ctrl-C or SIGTERM nobody waits: it is ended. */
        mpe_waitctl w = {signalled, NULL};
        if (!p->reaped && (daemon || mpe__process_join(p, -1, &w, NULL) == MPE_WAIT_INTERRUPTED)) {
            mpe__process_signal(p, SIGTERM, NULL);
            if (mpe__process_join(p, 1.0, NULL, NULL) == MPE_WAIT_TIMEOUT) {
                mpe__process_signal(p, SIGKILL, NULL);
                mpe__process_join(p, -1, NULL, NULL);
            }
        }
        close_tracked(&p->fd);
        close_tracked(&p->pidfd);
        close_received(p);
    } else {
        /* An inherited copy: mpe__proc_fork closed these descriptors in this
         * process (they were tracked), so their numbers may name other files
         * now. Forget them; never close them. */
        p->fd = -1;
        p->pidfd = -1;
        free(p->fds.fd);
        p->fds = (mpe_fds){0};
    }
    mpe__buf_free(&p->payload);
}
