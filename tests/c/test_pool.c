/* test_pool.c -- the pool's engine side and its job module (job.c) without
 * the Lua bindings: the order and completeness of outcomes, the imap window,
 * redo and retry after a worker's death, withdrawing a job before it starts,
 * releasing a job half-way, and the one abort undoing a submission stopped
 * at every step (the pool's jobs, work list, segment and function references
 * as before; a following job runs).
 * SPDX-License-Identifier: MIT */
#include <lauxlib.h>
#include <lualib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "tharness.h"
#include "compat.h"
#include "codec.h"
#include "err.h"
#include "job.h"
#include "mpe.h"
#include "pool_api.h"
#include "pool_lua.h"
#include "poolstate.h"
#include "proc.h"
#include "protocol.h"

int luaopen_mpe(lua_State *L);

/* A Lua state with mpe loaded and fn (a chunk returning a function) at the top. */
static lua_State *state_with(const char *fn)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "mpe", luaopen_mpe, 0);
    lua_pop(L, 1);
    if (luaL_dostring(L, fn) != LUA_OK)
        MPE_FAIL("%s", lua_tostring(L, -1));
    return L;
}

static mpe_pool *pool_of(lua_State *L, int workers, int retries)
{
    static const mpe_worker_hooks hooks = {luaopen_base}; /* any C function: the handler runs only on task errors */
    mpe_pool_opts o = {.workers = workers, .retries = retries, .init_ref = LUA_NOREF,
                       .initargs_ref = LUA_NOREF, .hooks = &hooks};
    mpe_err e;
    mpe_pool *p = mpe__pool_new(L, &o, &e);
    if (!p)
        MPE_FAIL("pool: %s", e.msg);
    return p;
}

typedef struct outcome {
    int64_t value[256];
    int got[256];  /* results per index */
    int failed[256];
    int n;         /* outcomes so far */
} outcome;

/* Read every message: packed integer results and failures, by 1-based index. */
static void drain(lua_State *L, mpe_pool *p, outcome *o)
{
    mpe_err e;
    if (mpe__pool_respawn(L, p, &e) != 0)
        MPE_FAIL("respawn: %s", e.msg);
    mpe_msg *m;
    while ((m = mpe__pool_take(p)) != NULL) {
        if (m->type == MPE_MSG_RESULT && mpe__pool_msg_live(m)) {
            MPE_ASSERT(m->flags & MPE_R_INTS);
            for (uint32_t i = 0; i < m->count; i++) {
                lua_Integer k = m->index + (lua_Integer)i;
                MPE_ASSERT(k >= 1 && k < 256);
                memcpy(&o->value[k], m->data + 8 * i, 8);
                o->got[k]++;
                o->n++;
            }
        } else if (m->type == MPE_MSG_FAIL && mpe__pool_msg_live(m)) {
            MPE_ASSERT(m->index >= 1 && m->index < 256);
            o->failed[m->index]++;
            o->n++;
        }
        mpe__pool_msg_done(p, m);
    }
}

/* Drain until n outcomes arrived (bounded by the case's alarm). */
static void until(lua_State *L, mpe_pool *p, outcome *o, int n)
{
    while (o->n < n) {
        mpe__pool_wait(p, -1);
        drain(L, p, o);
    }
}

static mpe_job *range_job(lua_State *L, mpe_pool *p, lua_Integer count, int publish)
{
    uint64_t fn = mpe__pool_function(L, p, -1);
    mpe_job *j = mpe__job_new(p, MPE_M_MAP, fn, 1, 0);
    MPE_ASSERT(j != NULL);
    mpe__job_add_range(j, 1, 1, count);
    if (publish)
        mpe__job_publish(p, j, 1);
    return j;
}

static void done_with(lua_State *L, mpe_pool *p)
{
    mpe__pool_stop(p, 0);
    mpe__pool_free(p);
    lua_close(L);
}

/* A following job of n items runs in full (only its outcomes come). */
static void next_job_runs(lua_State *L, mpe_pool *p, int n)
{
    mpe_job *b = range_job(L, p, n, 1);
    static outcome o;
    memset(&o, 0, sizeof o);
    until(L, p, &o, n);
    for (int i = 1; i <= n; i++)
        MPE_ASSERT_EQ(o.got[i], 1);
    MPE_ASSERT_EQ(o.n, n);
    mpe__job_release(p, b);
}

/* Every item has exactly one outcome, at its own index. */
static void test_order(void)
{
    lua_State *L = state_with("return function(x) return x * 2 end");
    mpe_pool *p = pool_of(L, 2, 0);
    mpe_job *j = range_job(L, p, 200, 1);
    (void)j;
    static outcome o;
    memset(&o, 0, sizeof o);
    until(L, p, &o, 200);
    for (int i = 1; i <= 200; i++) {
        MPE_ASSERT_EQ(o.got[i], 1);
        MPE_ASSERT_EQ(o.value[i], 2 * i);
    }
    mpe__job_release(p, j);
    done_with(L, p);
}

/* Outcomes never pass the window; it follows the consumer half a window at
 * a time; raising it lets the rest run. */
static void test_window(void)
{
    lua_State *L = state_with("return function(x) return x end");
    mpe_pool *p = pool_of(L, 2, 0);
    mpe_job *j = range_job(L, p, 100, 0);
    mpe__job_window(p, j, 10);
    mpe__job_publish(p, j, 1);
    static outcome o;
    memset(&o, 0, sizeof o);
    until(L, p, &o, 10);
    for (int k = 0; k < 5; k++) { /* give the workers every chance to run more */
        mpe__pool_wait(p, mpe__proc_now() + 0.05);
        drain(L, p, &o);
    }
    MPE_ASSERT_EQ(o.n, 10);
    for (int i = 11; i <= 100; i++)
        MPE_ASSERT_EQ(o.got[i], 0);
    /* The consumer took 4: the window lags less than half, it stays. */
    mpe__job_consumed(p, j, 4);
    for (int k = 0; k < 3; k++) {
        mpe__pool_wait(p, mpe__proc_now() + 0.05);
        drain(L, p, &o);
    }
    MPE_ASSERT_EQ(o.n, 10);
    /* It took all 10: the window moves to 20. */
    mpe__job_consumed(p, j, 10);
    until(L, p, &o, 20);
    for (int k = 0; k < 3; k++) {
        mpe__pool_wait(p, mpe__proc_now() + 0.05);
        drain(L, p, &o);
    }
    MPE_ASSERT_EQ(o.n, 20);
    MPE_ASSERT_EQ(o.got[21], 0);
    mpe__job_window(p, j, 100);
    until(L, p, &o, 100);
    MPE_ASSERT_EQ(o.got[100], 1);
    mpe__job_release(p, j);
    done_with(L, p);
}

/* Delivery counts (the main thread's, kept by the job): a job is all
 * delivered only once finished and every item delivered; an imap consumer is
 * exhausted only once it had every item; imap_unordered's waiting positions
 * come back in order and none when none waits. */
static void test_delivery(void)
{
    lua_State *L = state_with("return function(x) return x end");
    mpe_pool *p = pool_of(L, 1, 0);
    uint64_t fn = mpe__pool_function(L, p, -1);
    mpe_job *j = mpe__job_new(p, MPE_M_MAP, fn, 0, 0);
    MPE_ASSERT(j != NULL);
    mpe__job_add_range(j, 1, 1, 5);
    mpe__job_window(p, j, 0); /* shown to no worker: the counts are the test's alone */
    mpe__job_delivered(j, 5);
    MPE_ASSERT_EQ(mpe__job_ndelivered(j), 5);
    MPE_ASSERT(!mpe__job_all_delivered(j)); /* more may come */
    mpe__job_publish(p, j, 1);
    MPE_ASSERT(mpe__job_all_delivered(j));
    mpe__job_abort(p, j);
    j = mpe__job_new(p, MPE_M_MAP, fn, 0, 0);
    MPE_ASSERT(j != NULL);
    mpe__job_add_range(j, 1, 1, 5);
    mpe__job_window(p, j, 0);
    mpe__job_publish(p, j, 1);
    mpe__job_delivered(j, 4);
    MPE_ASSERT(!mpe__job_all_delivered(j)); /* one outcome to come */
    mpe__job_delivered(j, 1);
    MPE_ASSERT(mpe__job_all_delivered(j));
    MPE_ASSERT_EQ(mpe__job_dequeue(j), 0);
    MPE_ASSERT_EQ(mpe__job_enqueue(j), 1);
    MPE_ASSERT_EQ(mpe__job_enqueue(j), 2);
    MPE_ASSERT_EQ(mpe__job_dequeue(j), 1);
    MPE_ASSERT_EQ(mpe__job_dequeue(j), 2);
    MPE_ASSERT_EQ(mpe__job_dequeue(j), 0);
    for (int k = 1; k <= 5; k++) {
        MPE_ASSERT(!mpe__job_exhausted(j));
        MPE_ASSERT_EQ(mpe__job_ahead(j), 6 - k);
        MPE_ASSERT_EQ(mpe__job_yield(j), k);
    }
    MPE_ASSERT_EQ(mpe__job_yielded(j), 5);
    MPE_ASSERT(mpe__job_exhausted(j));
    mpe__job_abort(p, j);
    done_with(L, p);
}

/* A worker that dies at an item: the items after it run again elsewhere and
 * the item itself is retried (the marker file makes the retry succeed). */
static void test_redo_and_retry(void)
{
    char code[256];
    snprintf(code, sizeof code,
             "local m = '/tmp/mpe-test-pool-%d'; os.remove(m)\n"
             "return function(x) if x == 5 then local f = io.open(m)\n"
             "if not f then io.open(m, 'w'):close(); os.exit(3) end f:close(); os.remove(m) end return x end",
             (int)getpid());
    lua_State *L = state_with(code);
    mpe_pool *p = pool_of(L, 2, 1);
    mpe_job *j = range_job(L, p, 20, 1);
    static outcome o;
    memset(&o, 0, sizeof o);
    until(L, p, &o, 20);
    for (int i = 1; i <= 20; i++) {
        MPE_ASSERT_EQ(o.got[i], 1);
        MPE_ASSERT_EQ(o.failed[i], 0);
        MPE_ASSERT_EQ(o.value[i], i);
    }
    mpe__job_release(p, j);
    done_with(L, p);
}

/* Retries used up: the item fails (once), every other item still runs. */
static void test_retry_exhausted(void)
{
    lua_State *L = state_with("return function(x) if x == 3 then os.exit(3) end return x end");
    mpe_pool *p = pool_of(L, 2, 1);
    mpe_job *j = range_job(L, p, 12, 1);
    static outcome o;
    memset(&o, 0, sizeof o);
    until(L, p, &o, 12);
    for (int i = 1; i <= 12; i++) {
        MPE_ASSERT_EQ(o.failed[i], i == 3);
        MPE_ASSERT_EQ(o.got[i], i != 3);
    }
    mpe__job_release(p, j);
    done_with(L, p);
}

/* A job none of whose items reached a worker can be cancelled: it never
 * runs. Once an item ran, cancel_pending refuses. */
static void test_cancel_pending(void)
{
    lua_State *L = state_with("return function(x) return x end");
    mpe_pool *p = pool_of(L, 2, 0);
    mpe_job *a = range_job(L, p, 50, 0);
    MPE_ASSERT_EQ(mpe__job_withdraw(p, a), 1);
    MPE_ASSERT_EQ(mpe__job_withdraw(p, a), 0); /* once */
    mpe__job_publish(p, a, 1);
    mpe_job *b = range_job(L, p, 10, 1);
    static outcome o;
    memset(&o, 0, sizeof o);
    until(L, p, &o, 10); /* b's items: a's would have come first (FIFO) */
    MPE_ASSERT_EQ(mpe__job_withdraw(p, b), 0);
    for (int k = 0; k < 3; k++) {
        mpe__pool_wait(p, mpe__proc_now() + 0.05);
        drain(L, p, &o);
    }
    MPE_ASSERT_EQ(o.n, 10); /* nothing of a */
    mpe__job_release(p, a);
    mpe__job_release(p, b);
    done_with(L, p);
}

/* Releasing a job half-way (an abort): the pool then runs the next job in
 * full, and nothing is left behind (the harness counts descriptors and
 * children). */
static void test_release_halfway(void)
{
    lua_State *L = state_with("return function(x) for i = 1, 20000 do end return x end");
    mpe_pool *p = pool_of(L, 2, 0);
    mpe_job *a = range_job(L, p, 100000, 1);
    mpe__job_release(p, a);
    next_job_runs(L, p, 30);
    done_with(L, p);
}

/* ---- the one abort ----------------------------------------------------------------- */

/* What a submission may change in the pool, read under its lock. */
typedef struct state {
    int jobs, work;        /* jobs on the job list, on the work list */
    int segs, segrefs;     /* open segments, references to them */
    int refs[64];          /* each segment id's references (-1: free) */
    int fnjobs;            /* jobs referring to cached functions */
} state;

static void snapshot(mpe_pool *p, state *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&p->mu);
    for (mpe_job *j = p->jobs; j; j = j->next)
        st->jobs++;
    for (mpe_job *j = p->work; j; j = j->wnext)
        st->work++;
    for (int i = 0; i < 64; i++)
        st->refs[i] = -1;
    for (int i = 0; i < p->nsegs; i++)
        if (p->segs[i].fd >= 0) {
            st->segs++;
            st->segrefs += p->segs[i].refs;
            if (i < 64)
                st->refs[i] = p->segs[i].refs;
        }
    for (fnentry *f = p->fns; f; f = f->next)
        st->fnjobs += f->jobs;
    pthread_mutex_unlock(&p->mu);
}

static void assert_same(const state *a, const state *b)
{
    MPE_ASSERT_EQ(a->jobs, b->jobs);
    MPE_ASSERT_EQ(a->work, b->work);
    MPE_ASSERT_EQ(a->segs, b->segs);
    MPE_ASSERT_EQ(a->segrefs, b->segrefs);
    for (int i = 0; i < 64; i++)
        MPE_ASSERT_EQ(a->refs[i], b->refs[i]);
    MPE_ASSERT_EQ(a->fnjobs, b->fnjobs);
}

/* A descriptor of a fresh segment of its own (a distinct inode). */
static int segment(void)
{
    int fd = memfd_create("mpe-test-job", MFD_CLOEXEC);
    MPE_ASSERT(fd >= 0);
    return fd;
}

/* The encoding of the integer v (an item). */
static void encode_int(lua_State *L, mpe_buf *b, lua_Integer v)
{
    b->n = 0;
    lua_pushinteger(L, v);
    mpe__encode(L, -1, b, "item", NULL);
    lua_pop(L, 1);
}

/* Add item v carrying k segments: fresh ones, and `known` (a descriptor of
 * a segment the pool already holds, duplicated) when it is >= 0. */
static int add_item(lua_State *L, mpe_pool *p, mpe_job *j, mpe_buf *b, lua_Integer v, int k, int known)
{
    mpe_fds fds = {0};
    for (int i = 0; i < k; i++)
        MPE_ASSERT_EQ(mpe__fds_add(&fds, segment()), 0);
    if (known >= 0)
        MPE_ASSERT_EQ(mpe__fds_add(&fds, dup(known)), 0);
    encode_int(L, b, v);
    int r = mpe__job_add_enc(p, j, b->p, b->n, &fds);
    for (int i = 0; i < fds.n; i++)
        MPE_ASSERT_EQ(fds.fd[i], -1); /* taken, also on failure */
    mpe__fds_close(&fds);
    return r;
}

/* Wait until the pool's jobs are back to st->jobs (an aborted job with
 * chunks out is freed when they come back), reading messages. */
static void settle(lua_State *L, mpe_pool *p, const state *st)
{
    for (;;) {
        static outcome o;
        drain(L, p, &o);
        state now;
        snapshot(p, &now);
        if (now.jobs == st->jobs)
            return;
        mpe__pool_wait(p, mpe__proc_now() + 0.05);
    }
}

/* The submission of a job of 3 encoded items carrying segments, stopped
 * after each step in turn, each time undone by mpe__job_abort: the pool's
 * state equals the state before it began. A job that holds a segment of its
 * own is live throughout, so that shared references are counted right. */
static void test_abort_each_step(void)
{
    lua_State *L = state_with("return function(x) return x end");
    mpe_pool *p = pool_of(L, 2, 0);
    mpe_buf b = {0};
    int known = segment();
    /* A live job holding `known`, never published (no worker touches it). */
    uint64_t fn = mpe__pool_function(L, p, -1);
    mpe_job *live = mpe__job_new(p, MPE_M_MAP, fn, 0, 0);
    MPE_ASSERT(live != NULL);
    MPE_ASSERT_EQ(add_item(L, p, live, &b, 1, 0, known), 0);
    state before, after;
    snapshot(p, &before);
    MPE_ASSERT_EQ(before.segs, 1);
    MPE_ASSERT_EQ(before.fnjobs, 1);
    /* Stopped after the function entry was taken: no job exists yet. */
    lua_pushstring(L, "return function(x) return -x end");
    MPE_ASSERT_EQ(luaL_dostring(L, lua_tostring(L, -1)), LUA_OK);
    uint64_t fn2 = mpe__pool_function(L, p, -1);
    lua_pop(L, 2);
    snapshot(p, &after);
    assert_same(&before, &after);
    for (int step = 0; step < 6; step++) {
        mpe_job *j = mpe__job_new(p, MPE_M_MAP, fn2, 0, 0);
        MPE_ASSERT(j != NULL);
        if (step >= 1) /* k items */
            MPE_ASSERT_EQ(add_item(L, p, j, &b, 10, 0, -1), 0);
        if (step >= 2) /* segments interned: new ones and the live job's */
            MPE_ASSERT_EQ(add_item(L, p, j, &b, 11, 2, known), 0);
        if (step >= 3) /* a partial publish inside a window of 0: nothing handed out */
            mpe__job_window(p, j, 0);
        if (step >= 4) /* more items after the publish */
            MPE_ASSERT_EQ(add_item(L, p, j, &b, 12, 1, known), 0);
        if (step >= 5) { /* on the work list */
            mpe__job_window(p, j, 0);
            mpe__job_publish(p, j, 0);
        }
        mpe__job_abort(p, j);
        snapshot(p, &after);
        assert_same(&before, &after);
    }
    /* Stopped by memory: the nth allocation of the submission fails, for
     * every n until one goes through. */
    int failed = 1;
    for (int n = 1; failed; n++) {
        mpe__job_fail_alloc(n);
        failed = 0;
        mpe_job *j = mpe__job_new(p, MPE_M_MAP, fn2, 0, 0);
        if (!j)
            failed = 1;
        for (int i = 0; j && i < 5 && !failed; i++)
            /* Item 4 carries 130 segments: its ids need an allocation of
             * their own and its head's k two varint bytes. */
            failed = add_item(L, p, j, &b, 20 + i, i == 4 ? 130 : 1 + (i & 1), i == 3 ? known : -1) != 0;
        char *d = NULL;
        mpe_job *pk = NULL;
        if (!failed) {
            pk = mpe__job_new(p, MPE_M_MAP, fn2, 0, 0);
            failed = !pk || !(d = mpe__job_packed_begin(p, pk, MPE_K_INTS, 1000));
        }
        mpe__job_fail_alloc(0);
        if (j)
            mpe__job_abort(p, j);
        if (pk)
            mpe__job_abort(p, pk);
        snapshot(p, &after);
        assert_same(&before, &after);
        MPE_ASSERT(n < 100);
    }
    /* A one-item job (apply) whose creation fails at any allocation leaves
     * nothing (the 3rd and 4th fail with segments already interned; with
     * 130 segments the first is that of their ids). */
    for (int n = 1; n <= 10; n++) {
        int nseg = n <= 4 ? 5 : 130, nth = n <= 4 ? n : n - 4;
        mpe_fds fds = {0};
        MPE_ASSERT_EQ(mpe__fds_add(&fds, dup(known)), 0); /* interned first: its reference must go again */
        for (int i = 0; i < nseg; i++)
            MPE_ASSERT_EQ(mpe__fds_add(&fds, segment()), 0);
        encode_int(L, &b, 7);
        mpe__job_fail_alloc(nth);
        mpe_job *j = mpe__job_one(p, MPE_M_APPLY, fn2, 0, b.p, b.n, &fds);
        mpe__job_fail_alloc(0);
        for (int i = 0; i < fds.n; i++)
            MPE_ASSERT_EQ(fds.fd[i], -1);
        mpe__fds_close(&fds);
        if (j) { /* the allocations ran out before n: it was created and runs */
            state none;
            mpe__job_abort(p, j);
            settle(L, p, &before);
            snapshot(p, &none);
            assert_same(&before, &none);
        } else {
            snapshot(p, &after);
            assert_same(&before, &after);
        }
    }
    /* A following job runs in full. */
    mpe__job_abort(p, live);
    snapshot(p, &after);
    MPE_ASSERT_EQ(after.jobs, 0);
    MPE_ASSERT_EQ(after.segs, 0);
    MPE_ASSERT_EQ(after.fnjobs, 0);
    lua_pushstring(L, "return function(x) return x * 3 end");
    MPE_ASSERT_EQ(luaL_dostring(L, lua_tostring(L, -1)), LUA_OK);
    mpe_job *j = range_job(L, p, 40, 1);
    static outcome o;
    memset(&o, 0, sizeof o);
    until(L, p, &o, 40);
    for (int i = 1; i <= 40; i++)
        MPE_ASSERT_EQ(o.value[i], 3 * i);
    mpe__job_release(p, j);
    mpe__buf_free(&b);
    close(known);
    done_with(L, p);
}

/* Aborted after a publish that handed items to the workers: no outcome of
 * it is delivered, it is freed when its chunks come back, and the pool is
 * then as before; a following job runs. */
static void test_abort_running(void)
{
    lua_State *L = state_with("return function(x) for i = 1, 20000 do end return x end");
    mpe_pool *p = pool_of(L, 2, 0);
    state before, after;
    snapshot(p, &before);
    mpe_job *a = range_job(L, p, 100000, 1);
    mpe__pool_wait(p, mpe__proc_now() + 0.05); /* let the workers start on it */
    mpe__job_abort(p, a);
    settle(L, p, &before);
    snapshot(p, &after);
    assert_same(&before, &after);
    next_job_runs(L, p, 30); /* and nothing of a comes */
    done_with(L, p);
}

MPE_TEST_MAIN(MPE_TEST(test_order), MPE_TEST(test_window), MPE_TEST(test_delivery), MPE_TEST_T(test_redo_and_retry, 60),
              MPE_TEST_T(test_retry_exhausted, 60), MPE_TEST(test_cancel_pending),
              MPE_TEST(test_release_halfway), MPE_TEST_T(test_abort_each_step, 60),
              MPE_TEST_T(test_abort_running, 60))
