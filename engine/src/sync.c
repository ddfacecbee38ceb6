/* sync.c -- process-shared synchronization: lock, rlock, semaphore, event,
 * condition, barrier, each one small object in shared memory (shm.c).
 * SPDX-License-Identifier: MIT
 *
 * Locks are robust, process-shared pthread mutexes, so a holder that dies is
 * noticed (EOWNERDEAD) instead of blocking everyone forever. The semaphore is
 * a process-shared sem_t. Event, condition and barrier wait on futexes of
 * their own rather than on pthread condition variables: a process killed
 * while waiting on a pshared pthread_cond_t can leave it unusable (glibc's
 * group switch then waits for the dead waiter), while a futex word has no
 * state a dead waiter could hold. Every wait sleeps in slices of at most
 * 100 ms and asks its caller between slices whether to give up, so that an
 * interrupt (Ctrl-C in lua.c) is honoured within that time. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <semaphore.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "err.h"
#include "shm.h"
#include "sync.h"
#include "waitctl.h"

#define SLICE_NS 100000000L /* 100 ms */
#define SPINS 200           /* trylock attempts before sleeping on a busy lock */

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

typedef struct lock_shm {
    mpe_shm_objhdr h;
    pthread_mutex_t m;
    int32_t owner;  /* pid of the holder, 0 when free; written by the holder only */
    uint32_t depth; /* times the holder acquired it (rlock), 1 for a lock */
} lock_shm;

typedef struct sem_shm {
    mpe_shm_objhdr h;
    sem_t s;
} sem_shm;

typedef struct event_shm {
    mpe_shm_objhdr h;
    uint32_t word; /* bit 0: set; bits 1..31 count the sets (so a waiter sees a set-then-clear) */
} event_shm;

typedef struct cond_shm {
    mpe_shm_objhdr h;
    uint32_t seq; /* bumped by every notify: waiters sleep while it is unchanged */
} cond_shm;

typedef struct barrier_shm {
    mpe_shm_objhdr h;
    pthread_mutex_t m; /* guards count */
    uint32_t parties;
    uint32_t count; /* arrived in the current generation */
    uint32_t gen;   /* futex word: bumped when a generation is released */
} barrier_shm;

static size_t kind_size(uint32_t kind)
{
    switch (kind) {
    case MPE_SHM_LOCK:
    case MPE_SHM_RLOCK: return sizeof(lock_shm);
    case MPE_SHM_SEMAPHORE: return sizeof(sem_shm);
    case MPE_SHM_EVENT: return sizeof(event_shm);
    case MPE_SHM_CONDITION: return sizeof(cond_shm);
    case MPE_SHM_BARRIER: return sizeof(barrier_shm);
    default: return 0;
    }
}

/* ---- time and futexes ---------------------------------------------------------- */

static void deadline_after(struct timespec *ts, double secs)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    time_t whole = (time_t)secs;
    long ns = (long)((secs - (double)whole) * 1e9);
    ts->tv_sec += whole;
    ts->tv_nsec += ns;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* The end of the next slice: 100 ms from now, or the deadline (end, NULL for
 * none) if that is sooner. Returns 1 when the slice ends at the deadline. */
static int next_slice(const struct timespec *end, struct timespec *out)
{
    deadline_after(out, SLICE_NS / 1e9);
    if (end && (end->tv_sec < out->tv_sec ||
                (end->tv_sec == out->tv_sec && end->tv_nsec <= out->tv_nsec))) {
        *out = *end;
        return 1;
    }
    return 0;
}

static int interrupted(const mpe_waitctl *w)
{
    return w && w->interrupted && w->interrupted(w->ud);
}

static void futex_wake(uint32_t *addr, int n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* Sleep while *addr == val. Returns MPE_WAIT_OK once woken or the value
 * differs (the caller re-checks its condition), MPE_WAIT_TIMEOUT at end,
 * MPE_WAIT_INTERRUPTED when w says so. Shared futexes: no PRIVATE flag. */
static int futex_wait_until(uint32_t *addr, uint32_t val, const struct timespec *end,
                            const mpe_waitctl *w)
{
    for (;;) {
        if (__atomic_load_n(addr, __ATOMIC_ACQUIRE) != val)
            return MPE_WAIT_OK;
        struct timespec slice;
        int last = next_slice(end, &slice);
        long r = syscall(SYS_futex, addr, FUTEX_WAIT_BITSET, val, &slice, NULL,
                         FUTEX_BITSET_MATCH_ANY);
        if (r == 0 || errno == EAGAIN)
            return MPE_WAIT_OK;
        if (errno == ETIMEDOUT && last)
            return MPE_WAIT_TIMEOUT;
        if (interrupted(w))
            return MPE_WAIT_INTERRUPTED;
    }
}

/* ---- creation ------------------------------------------------------------------- */

int mpe__sync_mutex_init(pthread_mutex_t *m, int recursive, mpe_err *e)
{
    pthread_mutexattr_t a;
    int r = pthread_mutexattr_init(&a);
    if (r == 0) {
        if ((r = pthread_mutexattr_settype(&a, recursive ? PTHREAD_MUTEX_RECURSIVE
                                                         : PTHREAD_MUTEX_ERRORCHECK)) == 0 &&
            (r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) == 0 &&
            (r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)) == 0)
            r = pthread_mutex_init(m, &a);
        pthread_mutexattr_destroy(&a);
    }
    if (r != 0)
        return mpe__seterr(e, "pthread_mutex_init: %s", strerror(r));
    return 0;
}

mpe_shm_obj *mpe__sync_new(uint32_t kind, unsigned n, mpe_err *e)
{
    size_t size = kind_size(kind);
    if (size == 0) {
        mpe__seterr(e, "unknown synchronization kind %u", kind);
        return NULL;
    }
    mpe_shm_obj *o = mpe__shm_new(kind, size, e);
    if (!o)
        return NULL;
    int r = 0;
    switch (kind) {
    case MPE_SHM_LOCK:
        r = mpe__sync_mutex_init(&((lock_shm *)o->p)->m, 0, e);
        break;
    case MPE_SHM_RLOCK:
        r = mpe__sync_mutex_init(&((lock_shm *)o->p)->m, 1, e);
        break;
    case MPE_SHM_SEMAPHORE:
        if (sem_init(&((sem_shm *)o->p)->s, 1, n) != 0)
            r = mpe__seterr(e, "sem_init(%u): %s", n, strerror(errno));
        break;
    case MPE_SHM_BARRIER:
        ((barrier_shm *)o->p)->parties = n;
        r = mpe__sync_mutex_init(&((barrier_shm *)o->p)->m, 0, e);
        break;
    default: /* event and condition start as zeros */
        break;
    }
    if (r != 0) {
        mpe__shm_unref(o);
        return NULL;
    }
    return o;
}

int mpe__sync_attach(mpe_shm_obj *o, mpe_err *e)
{
    size_t need = kind_size(o->kind);
    if (need == 0 || mpe__shm_size(o) < need)
        return mpe__seterr(e, "malformed shared synchronization object");
    if (o->kind == MPE_SHM_BARRIER && ((barrier_shm *)o->p)->parties == 0)
        return mpe__seterr(e, "malformed shared barrier");
    return 0;
}

/* ---- lock and rlock ---------------------------------------------------------------- */

int mpe__sync_lock_held(const mpe_shm_obj *o)
{
    const lock_shm *l = o->p;
    return __atomic_load_n(&l->owner, __ATOMIC_RELAXED) == mpe__shm_self() && l->depth > 0;
}

static void took(lock_shm *l)
{
    __atomic_store_n(&l->owner, mpe__shm_self(), __ATOMIC_RELAXED);
    l->depth++;
}

/* After EOWNERDEAD the mutex is ours: make it usable again and release it. */
static void recover(lock_shm *l, pid_t *dead)
{
    if (dead)
        *dead = __atomic_load_n(&l->owner, __ATOMIC_RELAXED);
    pthread_mutex_consistent(&l->m);
    __atomic_store_n(&l->owner, 0, __ATOMIC_RELAXED);
    l->depth = 0;
    pthread_mutex_unlock(&l->m);
}

static int lock_result(lock_shm *l, int r, pid_t *dead, mpe_err *e)
{
    switch (r) {
    case 0:
        took(l);
        return MPE_WAIT_OK;
    case EBUSY:
    case ETIMEDOUT:
        return MPE_WAIT_TIMEOUT;
    case EOWNERDEAD:
        recover(l, dead);
        return MPE_WAIT_OWNERDEAD;
    case EDEADLK:
        mpe__seterr(e, "lock is already held by this process (a lock is not re-entrant: use "
                       "mpe.rlock)");
        return MPE_WAIT_ERROR;
    case EAGAIN:
        mpe__seterr(e, "too many recursive acquisitions");
        return MPE_WAIT_ERROR;
    default:
        mpe__seterr(e, "pthread_mutex_lock: %s", strerror(r));
        return MPE_WAIT_ERROR;
    }
}

int mpe__sync_lock_acquire(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, pid_t *dead,
                           mpe_err *e)
{
    lock_shm *l = o->p;
    int r = pthread_mutex_trylock(&l->m);
    if (r != EBUSY || timeout == 0)
        return lock_result(l, r, dead, e);
    /* A holder usually keeps the lock for a few hundred nanoseconds: try a
     * little longer before paying for a futex sleep and wake-up. */
    for (int k = 0; k < SPINS && r == EBUSY; k++) {
        CPU_RELAX();
        if (__atomic_load_n(&l->owner, __ATOMIC_RELAXED) == 0)
            r = pthread_mutex_trylock(&l->m);
    }
    if (r != EBUSY)
        return lock_result(l, r, dead, e);
    struct timespec end;
    if (timeout > 0)
        deadline_after(&end, timeout);
    for (;;) {
        struct timespec slice;
        int last = next_slice(timeout > 0 ? &end : NULL, &slice);
        r = pthread_mutex_clocklock(&l->m, CLOCK_MONOTONIC, &slice);
        if (r != ETIMEDOUT || last)
            return lock_result(l, r, dead, e);
        if (interrupted(w))
            return MPE_WAIT_INTERRUPTED;
    }
}

int mpe__sync_lock_release(mpe_shm_obj *o, mpe_err *e)
{
    lock_shm *l = o->p;
    if (!mpe__sync_lock_held(o))
        return mpe__seterr(e, "lock is not held by this process");
    uint32_t depth = l->depth;
    l->depth = depth - 1;
    if (depth == 1)
        __atomic_store_n(&l->owner, 0, __ATOMIC_RELAXED);
    int r = pthread_mutex_unlock(&l->m);
    if (r != 0) {
        l->depth = depth;
        __atomic_store_n(&l->owner, mpe__shm_self(), __ATOMIC_RELAXED);
        return mpe__seterr(e, "pthread_mutex_unlock: %s", strerror(r));
    }
    return 0;
}

void mpe__sync_drop(mpe_shm_obj *o)
{
    if ((o->kind == MPE_SHM_LOCK || o->kind == MPE_SHM_RLOCK) && o->refs == 1)
        while (mpe__sync_lock_held(o))
            if (mpe__sync_lock_release(o, NULL) != 0)
                break;
    mpe__shm_unref(o);
}

/* ---- semaphore ------------------------------------------------------------------------ */

int mpe__sync_sem_acquire(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, mpe_err *e)
{
    sem_t *s = &((sem_shm *)o->p)->s;
    for (;;) {
        if (sem_trywait(s) == 0)
            return MPE_WAIT_OK;
        if (errno == EAGAIN)
            break;
        if (errno != EINTR) {
            mpe__seterr(e, "sem_trywait: %s", strerror(errno));
            return MPE_WAIT_ERROR;
        }
    }
    if (timeout == 0)
        return MPE_WAIT_TIMEOUT;
    struct timespec end;
    if (timeout > 0)
        deadline_after(&end, timeout);
    for (;;) {
        struct timespec slice;
        int last = next_slice(timeout > 0 ? &end : NULL, &slice);
        if (sem_clockwait(s, CLOCK_MONOTONIC, &slice) == 0)
            return MPE_WAIT_OK;
        if (errno == ETIMEDOUT && last)
            return MPE_WAIT_TIMEOUT;
        if (errno != ETIMEDOUT && errno != EINTR) {
            mpe__seterr(e, "sem_clockwait: %s", strerror(errno));
            return MPE_WAIT_ERROR;
        }
        if (interrupted(w))
            return MPE_WAIT_INTERRUPTED;
    }
}

int mpe__sync_sem_release(mpe_shm_obj *o, unsigned n, mpe_err *e)
{
    sem_t *s = &((sem_shm *)o->p)->s;
    for (unsigned k = 0; k < n; k++)
        if (sem_post(s) != 0)
            return mpe__seterr(e, errno == EOVERFLOW ? "semaphore value would exceed %d"
                                                     : "sem_post failed (%d)", SEM_VALUE_MAX);
    return 0;
}

int mpe__sync_sem_value(const mpe_shm_obj *o)
{
    int v = 0;
    sem_getvalue(&((sem_shm *)o->p)->s, &v);
    return v;
}

/* ---- event ------------------------------------------------------------------------------ */

void mpe__sync_event_set(mpe_shm_obj *o)
{
    uint32_t *word = &((event_shm *)o->p)->word;
    uint32_t old = __atomic_load_n(word, __ATOMIC_RELAXED);
    do {
        if (old & 1)
            return;
    } while (!__atomic_compare_exchange_n(word, &old, (old + 2) | 1, 0, __ATOMIC_SEQ_CST,
                                          __ATOMIC_RELAXED));
    futex_wake(word, INT_MAX);
}

void mpe__sync_event_clear(mpe_shm_obj *o)
{
    __atomic_fetch_and(&((event_shm *)o->p)->word, ~1u, __ATOMIC_SEQ_CST);
}

int mpe__sync_event_is_set(const mpe_shm_obj *o)
{
    return (int)(__atomic_load_n(&((const event_shm *)o->p)->word, __ATOMIC_ACQUIRE) & 1);
}

int mpe__sync_event_wait(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, mpe_err *e)
{
    (void)e;
    uint32_t *word = &((event_shm *)o->p)->word;
    uint32_t seen = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    if (seen & 1)
        return MPE_WAIT_OK;
    if (timeout == 0)
        return MPE_WAIT_TIMEOUT;
    struct timespec end;
    if (timeout > 0)
        deadline_after(&end, timeout);
    for (;;) {
        int r = futex_wait_until(word, seen, timeout > 0 ? &end : NULL, w);
        if (r != MPE_WAIT_OK)
            return r;
        /* The word only changes by a set (clearing a clear flag changes nothing). */
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != seen)
            return MPE_WAIT_OK;
    }
}

/* ---- condition ---------------------------------------------------------------------------- */

int mpe__sync_cond_wait(mpe_shm_obj *c, mpe_shm_obj *lock, double timeout, const mpe_waitctl *w,
                        pid_t *dead, mpe_err *e)
{
    cond_shm *cs = c->p;
    lock_shm *l = lock->p;
    if (!mpe__sync_lock_held(lock)) {
        mpe__seterr(e, "lock is not held by this process");
        return MPE_WAIT_ERROR;
    }
    /* Read seq while holding the lock: a notify after we let go changes it,
     * and then the futex wait returns at once. Nothing is lost. */
    uint32_t seq = __atomic_load_n(&cs->seq, __ATOMIC_ACQUIRE);
    uint32_t depth = l->depth;
    __atomic_store_n(&l->owner, 0, __ATOMIC_RELAXED);
    l->depth = 0;
    for (uint32_t k = 0; k < depth; k++)
        pthread_mutex_unlock(&l->m);
    int r = MPE_WAIT_TIMEOUT;
    if (timeout != 0) {
        struct timespec end;
        if (timeout > 0)
            deadline_after(&end, timeout);
        r = futex_wait_until(&cs->seq, seq, timeout > 0 ? &end : NULL, w);
    }
    /* Take the lock back whatever happened: the caller holds it on return. */
    int owner_died = 0;
    int lr = pthread_mutex_lock(&l->m);
    if (lr == EOWNERDEAD) {
        if (dead)
            *dead = __atomic_load_n(&l->owner, __ATOMIC_RELAXED);
        pthread_mutex_consistent(&l->m);
        owner_died = 1;
    } else if (lr != 0) {
        mpe__seterr(e, "pthread_mutex_lock: %s", strerror(lr));
        return MPE_WAIT_ERROR;
    }
    for (uint32_t k = 1; k < depth; k++)
        pthread_mutex_lock(&l->m);
    __atomic_store_n(&l->owner, mpe__shm_self(), __ATOMIC_RELAXED);
    l->depth = depth;
    return owner_died ? MPE_WAIT_OWNERDEAD : r;
}

int mpe__sync_cond_notify(mpe_shm_obj *c, mpe_shm_obj *lock, int n, mpe_err *e)
{
    cond_shm *cs = c->p;
    if (!mpe__sync_lock_held(lock))
        return mpe__seterr(e, "lock is not held by this process");
    if (n == 0)
        return 0;
    __atomic_fetch_add(&cs->seq, 1, __ATOMIC_SEQ_CST);
    futex_wake(&cs->seq, n < 0 ? INT_MAX : n);
    return 0;
}

/* ---- barrier -------------------------------------------------------------------------------- */

/* The barrier's own mutex guards a few instructions; a holder that died
 * there left count as it was before or after its step, both consistent. */
static void barrier_lock(barrier_shm *b)
{
    if (pthread_mutex_lock(&b->m) == EOWNERDEAD)
        pthread_mutex_consistent(&b->m);
}

unsigned mpe__sync_barrier_parties(const mpe_shm_obj *o)
{
    return ((const barrier_shm *)o->p)->parties;
}

int mpe__sync_barrier_wait(mpe_shm_obj *o, double timeout, const mpe_waitctl *w, unsigned *index,
                           mpe_err *e)
{
    (void)e;
    barrier_shm *b = o->p;
    barrier_lock(b);
    uint32_t gen = b->gen;
    uint32_t me = ++b->count;
    if (me >= b->parties) {
        b->count = 0;
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&b->m);
        futex_wake(&b->gen, INT_MAX);
        *index = me;
        return MPE_WAIT_OK;
    }
    pthread_mutex_unlock(&b->m);
    struct timespec end;
    if (timeout > 0)
        deadline_after(&end, timeout);
    for (;;) {
        if (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) != gen) {
            *index = me;
            return MPE_WAIT_OK;
        }
        int r = timeout == 0 ? MPE_WAIT_TIMEOUT
                             : futex_wait_until(&b->gen, gen, timeout > 0 ? &end : NULL, w);
        if (r == MPE_WAIT_OK)
            continue;
        /* Give up: withdraw the arrival, unless the generation was released meanwhile. */
        barrier_lock(b);
        int released = b->gen != gen;
        if (!released)
            b->count--;
        pthread_mutex_unlock(&b->m);
        if (released) {
            *index = me;
            return MPE_WAIT_OK;
        }
        return r;
    }
}
