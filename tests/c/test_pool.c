/* test_pool.c -- the pool's engine side without the Lua bindings: the order
 * and completeness of outcomes, the imap window, redo and retry after a
 * worker's death, withdrawing a job before it starts (pool_cancel.c), releasing a job half-way.
 * SPDX-License-Identifier: MIT */
#include <lauxlib.h>
#include <lualib.h>
#include <string.h>
#include "tharness.h"
#include "mpe.h"
#include "compat.h"
#include "err.h"
#include "pool.h"
#include "pool_api.h"
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
    mpe_pool_opts o = {.workers = workers, .retries = retries, .init_ref = LUA_NOREF,
                       .initargs_ref = LUA_NOREF, .handler = NULL};
    lua_pushcfunction(L, luaopen_base); /* any C function: the handler runs only on task errors */
    o.handler = lua_tocfunction(L, -1);
    lua_pop(L, 1);
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
    mpe_job *j = mpe__pool_job(p, MPE_M_MAP, fn, 1, 0);
    MPE_ASSERT(j != NULL);
    mpe__pool_add_range(L, j, 1, 1, count);
    if (publish)
        mpe__pool_publish(p, j, 1);
    return j;
}

static void done_with(lua_State *L, mpe_pool *p)
{
    mpe__pool_stop(p, 0);
    mpe__pool_free(p);
    lua_close(L);
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
    mpe__pool_job_release(p, j);
    done_with(L, p);
}

/* Outcomes never pass the window; raising it lets the rest run. */
static void test_window(void)
{
    lua_State *L = state_with("return function(x) return x end");
    mpe_pool *p = pool_of(L, 2, 0);
    mpe_job *j = range_job(L, p, 100, 0);
    mpe__pool_job_window(p, j, 10);
    mpe__pool_publish(p, j, 1);
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
    mpe__pool_job_window(p, j, 100);
    until(L, p, &o, 100);
    MPE_ASSERT_EQ(o.got[100], 1);
    mpe__pool_job_release(p, j);
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
    mpe__pool_job_release(p, j);
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
    mpe__pool_job_release(p, j);
    done_with(L, p);
}

/* A job none of whose items reached a worker can be cancelled: it never
 * runs. Once an item ran, cancel_pending refuses. */
static void test_cancel_pending(void)
{
    lua_State *L = state_with("return function(x) return x end");
    mpe_pool *p = pool_of(L, 2, 0);
    mpe_job *a = range_job(L, p, 50, 0);
    MPE_ASSERT_EQ(mpe__pool_job_withdraw(p, a), 1);
    MPE_ASSERT_EQ(mpe__pool_job_withdraw(p, a), 0); /* once */
    mpe__pool_publish(p, a, 1);
    mpe_job *b = range_job(L, p, 10, 1);
    static outcome o;
    memset(&o, 0, sizeof o);
    until(L, p, &o, 10); /* b's items: a's would have come first (FIFO) */
    MPE_ASSERT_EQ(mpe__pool_job_withdraw(p, b), 0);
    for (int k = 0; k < 3; k++) {
        mpe__pool_wait(p, mpe__proc_now() + 0.05);
        drain(L, p, &o);
    }
    MPE_ASSERT_EQ(o.n, 10); /* nothing of a */
    mpe__pool_job_release(p, a);
    mpe__pool_job_release(p, b);
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
    mpe__pool_job_release(p, a);
    mpe_job *b = range_job(L, p, 30, 1);
    static outcome o;
    memset(&o, 0, sizeof o);
    until(L, p, &o, 30);
    for (int i = 1; i <= 30; i++)
        MPE_ASSERT_EQ(o.got[i], 1);
    mpe__pool_job_release(p, b);
    done_with(L, p);
}

MPE_TEST_MAIN(MPE_TEST(test_order), MPE_TEST(test_window), MPE_TEST_T(test_redo_and_retry, 60),
              MPE_TEST_T(test_retry_exhausted, 60), MPE_TEST(test_cancel_pending),
              MPE_TEST(test_release_halfway))
