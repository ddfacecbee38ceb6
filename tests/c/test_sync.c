/* test_sync.c -- unit tests of the process-shared synchronization objects
 * (sync.c) with raw fork: lock counters, a holder that dies, timeouts,
 * semaphores, events, conditions, barriers, interrupts.
 * SPDX-License-Identifier: MIT */
#include <time.h>
#include "array.h"
#include "err.h"
#include "shm.h"
#include "sync.h"
#include "waitctl.h"
#include "tharness.h"

/* The current slab holds a descriptor for the process's life: make it before
 * the harness counts descriptors (see test_shm.c). */
__attribute__((constructor)) static void prime_slab(void)
{
    mpe_shm_obj *o = mpe__sync_new(MPE_SHM_EVENT, 0, NULL);
    if (o)
        mpe__shm_unref(o);
}

static mpe_shm_obj *make(uint32_t kind, unsigned n)
{
    mpe_err e;
    mpe_shm_obj *o = mpe__sync_new(kind, n, &e);
    if (!o)
        MPE_FAIL("mpe__sync_new(%u): %s", kind, e.msg);
    return o;
}

static mpe_shm_obj *counter(void)
{
    mpe_err e;
    mpe_shm_obj *o = mpe__array_new(mpe__array_ctype("int64"), 1, 4, 1, &e);
    if (!o)
        MPE_FAIL("mpe__array_new: %s", e.msg);
    return o;
}

static int64_t get(mpe_shm_obj *a, size_t i)
{
    return mpe__array_get(a, i).i;
}

static void put(mpe_shm_obj *a, size_t i, int64_t v)
{
    mpe_num n = {1, v, 0};
    uint64_t bits;
    if (mpe__array_check(a, n, &bits, NULL) != 0)
        MPE_FAIL("put %lld", (long long)v);
    mpe__array_put(a, i, bits);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int wait_child(pid_t pid)
{
    int st;
    pid_t r;
    do
        r = waitpid(pid, &st, 0);
    while (r == -1 && errno == EINTR);
    MPE_ASSERT_EQ(r, pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Spin (sleeping 1 ms at a time) until element i of a reaches v, at most 5 s. */
static void await_value(mpe_shm_obj *a, size_t i, int64_t v)
{
    for (int k = 0; k < 5000 && get(a, i) != v; k++)
        usleep(1000);
    MPE_ASSERT_EQ(get(a, i), v);
}

static int acquire(mpe_shm_obj *l, double timeout)
{
    mpe_err e;
    pid_t dead = 0;
    return mpe__sync_lock_acquire(l, timeout, NULL, &dead, &e);
}

static void test_lock_basics(void)
{
    mpe_shm_obj *l = make(MPE_SHM_LOCK, 0);
    mpe_err e;
    MPE_ASSERT_EQ(acquire(l, -1), MPE_WAIT_OK);
    MPE_ASSERT(mpe__sync_lock_held(l));
    MPE_ASSERT_EQ(acquire(l, 0.05), MPE_WAIT_ERROR); /* not re-entrant: an error, not a hang */
    MPE_ASSERT_EQ(mpe__sync_lock_release(l, &e), 0);
    MPE_ASSERT(!mpe__sync_lock_held(l));
    MPE_ASSERT_EQ(mpe__sync_lock_release(l, &e), -1);
    MPE_ASSERT_STREQ(e.msg, "lock is not held by this process");
    MPE_ASSERT_EQ(acquire(l, 0), MPE_WAIT_OK);
    mpe__sync_drop(l);
}

static void test_rlock_recursion(void)
{
    mpe_shm_obj *l = make(MPE_SHM_RLOCK, 0);
    mpe_err e;
    for (int k = 0; k < 3; k++)
        MPE_ASSERT_EQ(acquire(l, -1), MPE_WAIT_OK);
    pid_t pid = fork();
    if (pid == 0)
        _exit(acquire(l, 0.05) == MPE_WAIT_TIMEOUT && !mpe__sync_lock_held(l) ? 0 : 1);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    for (int k = 0; k < 3; k++)
        MPE_ASSERT_EQ(mpe__sync_lock_release(l, &e), 0);
    MPE_ASSERT_EQ(mpe__sync_lock_release(l, &e), -1);
    pid = fork();
    if (pid == 0)
        _exit(acquire(l, 1) == MPE_WAIT_OK ? 0 : 1);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    mpe__sync_drop(l);
}

static void test_lock_counter(void)
{
    mpe_shm_obj *l = make(MPE_SHM_LOCK, 0), *c = counter();
    pid_t pids[4];
    mpe_err e;
    for (int k = 0; k < 4; k++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            for (int i = 0; i < 10000; i++) {
                if (acquire(l, -1) != MPE_WAIT_OK)
                    _exit(2);
                put(c, 0, get(c, 0) + 1);
                if (mpe__sync_lock_release(l, &e) != 0)
                    _exit(3);
            }
            _exit(0);
        }
    }
    for (int k = 0; k < 4; k++)
        MPE_ASSERT_EQ(wait_child(pids[k]), 0);
    MPE_ASSERT_EQ(get(c, 0), 40000);
    mpe__sync_drop(l);
    mpe__shm_unref(c);
}

static void test_lock_timeout(void)
{
    mpe_shm_obj *l = make(MPE_SHM_LOCK, 0), *c = counter();
    pid_t pid = fork();
    if (pid == 0) {
        acquire(l, -1);
        put(c, 0, 1);
        await_value(c, 1, 1);
        _exit(0);
    }
    await_value(c, 0, 1);
    double t = now();
    MPE_ASSERT_EQ(acquire(l, 0.2), MPE_WAIT_TIMEOUT);
    MPE_ASSERT(now() - t >= 0.19);
    MPE_ASSERT_EQ(acquire(l, 0), MPE_WAIT_TIMEOUT);
    put(c, 1, 1);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    mpe__sync_drop(l);
    mpe__shm_unref(c);
}

/* A holder that exits or is killed: the next acquire recovers and reports
 * the pid; the one after works normally. */
static void owner_dies(int kill_it)
{
    mpe_shm_obj *l = make(MPE_SHM_LOCK, 0), *c = counter();
    pid_t pid = fork();
    if (pid == 0) {
        acquire(l, -1);
        put(c, 0, 1);
        if (kill_it)
            for (;;)
                pause();
        _exit(0);
    }
    await_value(c, 0, 1);
    if (kill_it)
        kill(pid, SIGKILL);
    wait_child(pid);
    mpe_err e;
    pid_t dead = 0;
    MPE_ASSERT_EQ(mpe__sync_lock_acquire(l, 1, NULL, &dead, &e), MPE_WAIT_OWNERDEAD);
    MPE_ASSERT_EQ(dead, pid);
    MPE_ASSERT(!mpe__sync_lock_held(l)); /* recovered and released */
    MPE_ASSERT_EQ(acquire(l, 1), MPE_WAIT_OK);
    MPE_ASSERT_EQ(mpe__sync_lock_release(l, &e), 0);
    mpe__sync_drop(l);
    mpe__shm_unref(c);
}

static void test_lock_owner_exits(void)
{
    owner_dies(0);
}

static void test_lock_owner_killed(void)
{
    owner_dies(1);
}

/* Dropping the last reference to a lock this process holds releases it (a
 * robust mutex must not be unmapped while on the robust list). */
static void test_drop_releases_held_lock(void)
{
    mpe_shm_obj *l = make(MPE_SHM_RLOCK, 0), *c = counter();
    pid_t pid = fork();
    if (pid == 0) {
        await_value(c, 0, 1);
        pid_t dead = 0;
        int r = mpe__sync_lock_acquire(l, 2, NULL, &dead, NULL);
        _exit(r == MPE_WAIT_OK ? 0 : 10 + r);
    }
    MPE_ASSERT_EQ(acquire(l, -1), MPE_WAIT_OK);
    MPE_ASSERT_EQ(acquire(l, -1), MPE_WAIT_OK);
    mpe__shm_ref(l);
    mpe__sync_drop(l); /* not the last reference: still held */
    MPE_ASSERT(mpe__sync_lock_held(l));
    mpe__sync_drop(l);
    put(c, 0, 1);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    mpe__shm_unref(c);
}

static int interrupt_now(void *ud)
{
    (void)ud;
    return 1;
}

static void test_waits_can_be_interrupted(void)
{
    mpe_shm_obj *l = make(MPE_SHM_LOCK, 0), *c = counter();
    mpe_shm_obj *ev = make(MPE_SHM_EVENT, 0), *s = make(MPE_SHM_SEMAPHORE, 0);
    mpe_shm_obj *b = make(MPE_SHM_BARRIER, 2);
    pid_t pid = fork();
    if (pid == 0) {
        acquire(l, -1);
        put(c, 0, 1);
        await_value(c, 1, 1);
        _exit(0);
    }
    await_value(c, 0, 1);
    mpe_waitctl w = {interrupt_now, NULL};
    pid_t dead;
    unsigned idx;
    double t = now();
    MPE_ASSERT_EQ(mpe__sync_lock_acquire(l, -1, &w, &dead, NULL), MPE_WAIT_INTERRUPTED);
    MPE_ASSERT_EQ(mpe__sync_event_wait(ev, -1, &w, NULL), MPE_WAIT_INTERRUPTED);
    MPE_ASSERT_EQ(mpe__sync_sem_acquire(s, -1, &w, NULL), MPE_WAIT_INTERRUPTED);
    MPE_ASSERT_EQ(mpe__sync_barrier_wait(b, -1, &w, &idx, NULL), MPE_WAIT_INTERRUPTED);
    MPE_ASSERT(now() - t < 2.0); /* each within about one 100 ms slice */
    /* the interrupted barrier arrival was withdrawn: two fresh arrivals release it */
    pid_t p2 = fork();
    if (p2 == 0)
        _exit(mpe__sync_barrier_wait(b, 2, NULL, &idx, NULL) == MPE_WAIT_OK ? 0 : 1);
    MPE_ASSERT_EQ(mpe__sync_barrier_wait(b, 2, NULL, &idx, NULL), MPE_WAIT_OK);
    MPE_ASSERT_EQ(wait_child(p2), 0);
    put(c, 1, 1);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    mpe__sync_drop(l);
    mpe__sync_drop(ev);
    mpe__sync_drop(s);
    mpe__sync_drop(b);
    mpe__shm_unref(c);
}

static void test_semaphore(void)
{
    mpe_shm_obj *s = make(MPE_SHM_SEMAPHORE, 2);
    mpe_err e;
    MPE_ASSERT_EQ(mpe__sync_sem_value(s), 2);
    MPE_ASSERT_EQ(mpe__sync_sem_acquire(s, -1, NULL, &e), MPE_WAIT_OK);
    MPE_ASSERT_EQ(mpe__sync_sem_acquire(s, 0, NULL, &e), MPE_WAIT_OK);
    MPE_ASSERT_EQ(mpe__sync_sem_acquire(s, 0, NULL, &e), MPE_WAIT_TIMEOUT);
    double t = now();
    MPE_ASSERT_EQ(mpe__sync_sem_acquire(s, 0.15, NULL, &e), MPE_WAIT_TIMEOUT);
    MPE_ASSERT(now() - t >= 0.14);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(50000);
        _exit(mpe__sync_sem_release(s, 3, NULL) == 0 ? 0 : 1);
    }
    MPE_ASSERT_EQ(mpe__sync_sem_acquire(s, 5, NULL, &e), MPE_WAIT_OK);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    MPE_ASSERT_EQ(mpe__sync_sem_value(s), 2);
    mpe__sync_drop(s);
}

static void test_event(void)
{
    mpe_shm_obj *ev = make(MPE_SHM_EVENT, 0), *c = counter();
    MPE_ASSERT(!mpe__sync_event_is_set(ev));
    MPE_ASSERT_EQ(mpe__sync_event_wait(ev, 0.05, NULL, NULL), MPE_WAIT_TIMEOUT);
    pid_t pid = fork();
    if (pid == 0) {
        put(c, 0, 1);
        _exit(mpe__sync_event_wait(ev, 5, NULL, NULL) == MPE_WAIT_OK ? 0 : 1);
    }
    await_value(c, 0, 1);
    usleep(20000);
    mpe__sync_event_set(ev);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    MPE_ASSERT(mpe__sync_event_is_set(ev));
    MPE_ASSERT_EQ(mpe__sync_event_wait(ev, -1, NULL, NULL), MPE_WAIT_OK);
    /* a set followed at once by a clear still wakes a waiter that slept */
    mpe__sync_event_clear(ev);
    pid = fork();
    if (pid == 0) {
        put(c, 0, 2);
        _exit(mpe__sync_event_wait(ev, 5, NULL, NULL) == MPE_WAIT_OK ? 0 : 1);
    }
    await_value(c, 0, 2);
    usleep(50000);
    mpe__sync_event_set(ev);
    mpe__sync_event_clear(ev);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    MPE_ASSERT(!mpe__sync_event_is_set(ev));
    mpe__sync_drop(ev);
    mpe__shm_unref(c);
}

static void test_condition(void)
{
    mpe_shm_obj *l = make(MPE_SHM_RLOCK, 0), *cv = make(MPE_SHM_CONDITION, 0);
    mpe_shm_obj *c = counter();
    mpe_err e;
    pid_t dead;
    MPE_ASSERT_EQ(mpe__sync_cond_wait(cv, l, 0.01, NULL, &dead, &e), MPE_WAIT_ERROR);
    MPE_ASSERT_STREQ(e.msg, "lock is not held by this process");
    MPE_ASSERT_EQ(mpe__sync_cond_notify(cv, l, 1, &e), -1);
    /* timeout: returns with the lock held again, at its depth */
    acquire(l, -1);
    acquire(l, -1);
    double t = now();
    MPE_ASSERT_EQ(mpe__sync_cond_wait(cv, l, 0.1, NULL, &dead, &e), MPE_WAIT_TIMEOUT);
    MPE_ASSERT(now() - t >= 0.09);
    MPE_ASSERT(mpe__sync_lock_held(l));
    MPE_ASSERT_EQ(mpe__sync_lock_release(l, &e), 0);
    MPE_ASSERT_EQ(mpe__sync_lock_release(l, &e), 0);
    MPE_ASSERT(!mpe__sync_lock_held(l));
    /* two waiters in children, woken by notify_all after the flag is set */
    pid_t pids[2];
    for (int k = 0; k < 2; k++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            acquire(l, -1);
            mpe__array_add(c, 1, (mpe_num){1, 1, 0}, &(mpe_num){0, 0, 0}, NULL);
            while (get(c, 0) == 0)
                if (mpe__sync_cond_wait(cv, l, 5, NULL, &dead, NULL) != MPE_WAIT_OK)
                    _exit(1);
            mpe__sync_lock_release(l, NULL);
            _exit(0);
        }
    }
    await_value(c, 1, 2);
    acquire(l, -1); /* both are in wait (they registered under the lock) */
    put(c, 0, 1);
    MPE_ASSERT_EQ(mpe__sync_cond_notify(cv, l, -1, &e), 0);
    mpe__sync_lock_release(l, &e);
    for (int k = 0; k < 2; k++)
        MPE_ASSERT_EQ(wait_child(pids[k]), 0);
    mpe__sync_drop(cv);
    mpe__sync_drop(l);
    mpe__shm_unref(c);
}

static void test_barrier(void)
{
    enum { N = 4, GENERATIONS = 3 };
    mpe_shm_obj *b = make(MPE_SHM_BARRIER, N), *c = counter();
    MPE_ASSERT_EQ(mpe__sync_barrier_parties(b), N);
    pid_t pids[N - 1];
    for (int k = 0; k < N - 1; k++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            for (int g = 0; g < GENERATIONS; g++) {
                unsigned idx;
                if (mpe__sync_barrier_wait(b, 5, NULL, &idx, NULL) != MPE_WAIT_OK)
                    _exit(1);
                mpe__array_add(c, g, (mpe_num){1, (int64_t)1 << (4 * (idx - 1)), 0},
                               &(mpe_num){0, 0, 0}, NULL);
            }
            _exit(0);
        }
    }
    for (int g = 0; g < GENERATIONS; g++) {
        unsigned idx;
        MPE_ASSERT_EQ(mpe__sync_barrier_wait(b, 5, NULL, &idx, NULL), MPE_WAIT_OK);
        MPE_ASSERT(idx >= 1 && idx <= N);
        mpe__array_add(c, g, (mpe_num){1, (int64_t)1 << (4 * (idx - 1)), 0}, &(mpe_num){0, 0, 0},
                       NULL);
    }
    for (int k = 0; k < N - 1; k++)
        MPE_ASSERT_EQ(wait_child(pids[k]), 0);
    for (int g = 0; g < GENERATIONS; g++) /* each index 1..N exactly once per generation */
        MPE_ASSERT_EQ(get(c, g), 0x1111);
    /* a lone waiter times out and withdraws */
    unsigned idx;
    double t = now();
    MPE_ASSERT_EQ(mpe__sync_barrier_wait(b, 0.1, NULL, &idx, NULL), MPE_WAIT_TIMEOUT);
    MPE_ASSERT(now() - t >= 0.09);
    mpe__sync_drop(b);
    mpe__shm_unref(c);
}

MPE_TEST_MAIN(MPE_TEST(test_lock_basics), MPE_TEST(test_rlock_recursion),
              MPE_TEST(test_lock_counter), MPE_TEST(test_lock_timeout),
              MPE_TEST(test_lock_owner_exits), MPE_TEST(test_lock_owner_killed),
              MPE_TEST(test_drop_releases_held_lock), MPE_TEST(test_waits_can_be_interrupted),
              MPE_TEST(test_semaphore), MPE_TEST(test_event), MPE_TEST(test_condition),
              MPE_TEST(test_barrier))
