/* ipc.c -- what mpe.queue, mpe.pipe and mpe.dict share: robust process-shared
 * mutexes taken in interruptible slices, shared futex waits, descriptors
 * inside references (their passing is fdio.c's), and the crash points the
 * tests use.
 * SPDX-License-Identifier: MIT
 *
 * Waits follow sync.c: sleep in slices of at most 100 ms and ask the caller
 * between slices whether to give up (an interrupt). Futex words rather than
 * pthread condition variables: a process killed while waiting on a pshared
 * pthread_cond_t can leave it unusable, a futex word holds no waiter state. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include "buf.h"
#include "err.h"
#include "fdio.h"
#include "ipc.h"
#include "proc.h"
#include "waitctl.h"

#define SLICE 0.1 /* seconds */
#define SPINS 100 /* trylock attempts before sleeping on a busy mutex */

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

static int crash_point;

void mpe__ipc_set_crash(int point)
{
    crash_point = point;
}

void mpe__ipc_crash(int point)
{
    if (MPE_UNLIKELY(crash_point == point))
        raise(SIGKILL);
}

/* ---- time ---------------------------------------------------------------------- */

static struct timespec monotonic_at(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* The end of the next slice (absolute, monotonic). Returns 1 when the slice
 * ends at the deadline, so a timeout there is final. */
static int next_slice(double deadline, double *end)
{
    double now = mpe__proc_now();
    *end = now + SLICE;
    if (deadline >= 0 && deadline <= *end) {
        *end = deadline;
        return 1;
    }
    return 0;
}

static int interrupted(const mpe_waitctl *w)
{
    return w && w->interrupted && w->interrupted(w->ud);
}

/* ---- robust mutexes --------------------------------------------------------------- */

static int lock_result(int r, mpe_err *e)
{
    switch (r) {
    case 0:
        return MPE_WAIT_OK;
    case EOWNERDEAD:
        return MPE_WAIT_OWNERDEAD;
    case EBUSY:
    case ETIMEDOUT:
        return MPE_WAIT_TIMEOUT;
    case ENOTRECOVERABLE:
        mpe__seterr(e, "the object's lock is unrecoverable (a holder died during repair)");
        return MPE_WAIT_ERROR;
    default:
        mpe__seterr(e, "pthread_mutex_lock: %s", strerror(r));
        return MPE_WAIT_ERROR;
    }
}

int mpe__ipc_lock(pthread_mutex_t *m, double deadline, const mpe_waitctl *w, mpe_err *e)
{
    int r = pthread_mutex_trylock(m);
    /* Holders keep these locks for a memcpy: spin a little before sleeping. */
    for (int k = 0; r == EBUSY && k < SPINS; k++) {
        CPU_RELAX();
        r = pthread_mutex_trylock(m);
    }
    if (r != EBUSY)
        return lock_result(r, e);
    for (;;) {
        double end;
        int last = next_slice(deadline, &end);
        struct timespec ts = monotonic_at(end);
        r = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
        if (r != ETIMEDOUT || last)
            return lock_result(r, e);
        if (interrupted(w))
            return MPE_WAIT_INTERRUPTED;
    }
}

void mpe__ipc_consistent(pthread_mutex_t *m)
{
    pthread_mutex_consistent(m);
}

void mpe__ipc_unlock(pthread_mutex_t *m)
{
    pthread_mutex_unlock(m);
}

/* ---- futexes -------------------------------------------------------------------------- */

int mpe__ipc_futex_wait(uint32_t *addr, uint32_t val, double deadline, const mpe_waitctl *w)
{
    for (;;) {
        if (__atomic_load_n(addr, __ATOMIC_ACQUIRE) != val)
            return MPE_WAIT_OK;
        double end;
        int last = next_slice(deadline, &end);
        struct timespec ts = monotonic_at(end);
        long r = syscall(SYS_futex, addr, FUTEX_WAIT_BITSET, val, &ts, NULL,
                         FUTEX_BITSET_MATCH_ANY);
        if (r == 0 || errno == EAGAIN)
            return MPE_WAIT_OK;
        if (errno == ETIMEDOUT && last)
            return MPE_WAIT_TIMEOUT;
        if (interrupted(w))
            return MPE_WAIT_INTERRUPTED;
    }
}

void mpe__ipc_futex_wake(uint32_t *addr, int n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* ---- descriptors inside references ---------------------------------------------------- */

int mpe__ipc_fd_write(int fd, mpe_buf *b, mpe_fds *fds, mpe_err *e)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return mpe__seterr(e, "fstat: %s", strerror(errno));
    if (mpe__buf_grow(b, 20) != 0)
        return mpe__seterr(e, "out of memory");
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        return mpe__seterr(e, "fcntl(F_DUPFD_CLOEXEC): %s", strerror(errno));
    if (mpe__fds_add(fds, d) != 0) /* the message's own duplicate */
        return mpe__seterr(e, "out of memory");
    uint32_t slot = (uint32_t)(fds->n - 1);
    uint64_t id[2] = {(uint64_t)st.st_dev, (uint64_t)st.st_ino};
    unsigned char *p = (unsigned char *)b->p + b->n;
    for (int i = 0; i < 4; i++)
        *p++ = (unsigned char)(slot >> (8 * i));
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 8; i++)
            *p++ = (unsigned char)(id[k] >> (8 * i));
    b->n += 20;
    return 0;
}

int mpe__ipc_fd_read(mpe_rd *r, const mpe_fds *fds, unsigned mode, mpe_err *e)
{
    uint32_t slot;
    uint64_t dev, ino;
    struct stat st;
    if (mpe__rd_u32(r, &slot) || mpe__rd_u64(r, &dev) || mpe__rd_u64(r, &ino))
        return mpe__seterr(e, "truncated descriptor reference");
    if (!fds || slot >= (uint32_t)fds->n || fds->fd[slot] < 0)
        return mpe__seterr(e, "a descriptor did not arrive with the message");
    if (fstat(fds->fd[slot], &st) != 0)
        return mpe__seterr(e, "fstat: %s", strerror(errno));
    if ((uint64_t)st.st_dev != dev || (uint64_t)st.st_ino != ino || (st.st_mode & S_IFMT) != mode)
        return mpe__seterr(e, "a descriptor in the message is not the one that was sent "
                              "(its slots were mixed up on the way)");
    int d = fcntl(fds->fd[slot], F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        return mpe__seterr(e, "fcntl(F_DUPFD_CLOEXEC): %s", strerror(errno));
    return d;
}
