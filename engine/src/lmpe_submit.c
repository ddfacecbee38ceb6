/* lmpe_submit.c -- a pool call's submission: the async object and engine job
 * of a call, its items (table, mpe.range, iterator; packed or encoded) into
 * the job's store, imap's pulling ahead of the consumer, and the one abort
 * path when a submission stops half-way. The pool methods (lmpe_pool.c)
 * check arguments and call it; main thread only.
 * SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "err.h"
#include "fdio.h"
#include "job.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "lmpe_pool.h"
#include "pool_api.h"
#include "pool_lua.h"
#include "proc.h"
#include "protocol.h"

/* Create the async object for a new job; leaves it on the stack. An apply's
 * engine job is created by submit_value, with its item. */
ajob *mpe__submit_new(lua_State *L, lpool *lp, int pool_idx, int fn_idx, int what, int mode,
                      const callopts *o, int cb_idx)
{
    if (o->out) { /* the workers get {fn, array}: the array travels by reference with it */
        lua_createtable(L, 2, 0);
        lua_pushvalue(L, fn_idx);
        lua_rawseti(L, -2, 1);
        lua_getfield(L, o->out, "out");
        lua_rawseti(L, -2, 2);
        fn_idx = lua_gettop(L);
    }
    uint64_t fnid = mpe__pool_function(L, lp->p, fn_idx);
    if (o->out)
        lua_pop(L, 1);
    ajob *a = lua_newuserdatauv(L, sizeof *a, 0);
    memset(a, 0, sizeof *a);
    a->lp = lp;
    a->what = what;
    a->mode = mode;
    a->collect = o->collect;
    a->window = o->window > 0 ? o->window : MPE_IMAP_WINDOW;
    a->progress = o->progress;
    a->out = o->out != 0;
    a->outrows = o->outrows;
    luaL_setmetatable(L, ASYNC_MT);
    mpe__async_bind(L, a, pool_idx);
    if (what != A_APPLY) { /* an apply's value goes into the field itself */
        lua_newtable(L);
        mpe__async_set(L, a, AF_RESULTS, -1);
        lua_pop(L, 1);
    }
    if (o->out) {
        lua_getfield(L, o->out, "out");
        mpe__async_set(L, a, AF_OUT, -1);
        lua_pop(L, 1);
    }
    if (cb_idx && lua_istable(L, cb_idx))
        mpe__async_set(L, a, AF_CB, cb_idx);
    if (what == A_IMAP_UNORDERED) {
        lua_newtable(L);
        mpe__async_set(L, a, AF_Q, -1);
        lua_pop(L, 1);
    }
    if (o->progress) { /* the bar's state, kept by lua/mpe/progress.lua */
        lua_createtable(L, 0, 8);
        if (o->progress == 2)
            lua_pushliteral(L, "force");
        else
            lua_pushboolean(L, 1);
        lua_setfield(L, -2, "mode");
        lua_pushnumber(L, mpe__proc_now());
        lua_setfield(L, -2, "start");
        mpe__async_set(L, a, AF_PROGRESS, -1);
        lua_pop(L, 1);
    }
    if (what == A_APPLY) { /* the engine job comes with its one item: submit_value */
        a->fnid = fnid;
        return a;
    }
    /* An iterator raises at the failed item, in order: earlier items must still come. */
    a->j = mpe__job_new(lp->p, mode | (o->out ? MPE_M_OUT : 0), fnid, o->chunksize,
                         !o->collect && what != A_IMAP && what != A_IMAP_UNORDERED);
    if (!a->j)
        luaL_error(L, "mpe: not enough memory for a job");
    mpe__async_route(L, a, lua_gettop(L));
    return a;
}

/* Encode the value at idx as one item of a's job. The pool's scratch buffer
 * and descriptor list are owned by the pool userdata, so an encoding that
 * raises half way leaks nothing (what it left is reset on the next use). */
static void encode_value(lua_State *L, ajob *a, int idx)
{
    lpool *lp = a->lp;
    char root[48]; /* the path an unsendable value is named by: which item, then where in it */
    if (a->mode == MPE_M_APPLY)
        snprintf(root, sizeof root, "args");
    else
        snprintf(root, sizeof root, a->mode == MPE_M_MAP ? "item %lld" : "item %lld args",
                 (long long)mpe__async_count(a) + 1);
    lp->scratch.n = 0;
    mpe__fds_truncate(&lp->sfds, 0); /* left by an encoding that raised */
    mpe__encode(L, idx, &lp->scratch, root, lp->remote ? &mpe__codec_remote : &lp->sfds);
}

static void add_value(lua_State *L, ajob *a, int idx)
{
    encode_value(L, a, idx);
    int r = mpe__job_add_enc(a->lp->p, a->j, a->lp->scratch.p, a->lp->scratch.n, &a->lp->sfds);
    a->lp->sfds.n = 0; /* the job took them */
    if (r != 0)
        luaL_error(L, "mpe: not enough memory for the items");
}

/* apply, apply_async: the arguments at idx as the one item of a job that is
 * created, stored and published at once; the ajob is at stack index ai. */
static void submit_value(lua_State *L, ajob *a, int idx, int ai)
{
    encode_value(L, a, idx);
    lpool *lp = a->lp;
    a->j = mpe__job_one(lp->p, a->mode, a->fnid, !a->collect, lp->scratch.p, lp->scratch.n, &lp->sfds);
    lp->sfds.n = 0; /* the job took them */
    if (!a->j)
        luaL_error(L, "mpe: not enough memory for a job");
    mpe__async_route(L, a, ai);
}

/* The n items of the table at idx as packed numbers of kind, checked and
 * copied in one pass; published when all are in. Returns 0 and leaves the
 * store as it was (nothing published) at the first item of another kind. */
static int add_packed(lua_State *L, ajob *a, int idx, lua_Integer n, int kind)
{
    enum { GROUP = 32 }; /* items on the stack at once: one pop per group */
    char *dst = mpe__job_packed_begin(a->lp->p, a->j, kind, (size_t)n);
    if (!dst)
        luaL_error(L, "mpe: not enough memory for %d items", (int)n);
    luaL_checkstack(L, GROUP, "mpe: table items");
    int top = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i += GROUP) {
        int g = n - i + 1 < GROUP ? (int)(n - i + 1) : GROUP;
        for (int k = 0; k < g; k++)
            lua_rawgeti(L, idx, i + k);
        for (int k = 0; k < g; k++, dst += 8) {
            int at = top + 1 + k;
            if (kind == MPE_K_INTS && lua_isinteger(L, at)) { /* (false for a non-number) */
                int64_t v = (int64_t)lua_tointeger(L, at);
                memcpy(dst, &v, 8);
            } else if (kind == MPE_K_FLOATS && lua_type(L, at) == LUA_TNUMBER && !lua_isinteger(L, at)) {
                double v = lua_tonumber(L, at);
                memcpy(dst, &v, 8);
            } else {
                lua_settop(L, top);
                mpe__job_packed_abandon(a->j);
                return 0;
            }
        }
        lua_settop(L, top);
    }
    mpe__job_packed_commit(a->lp->p, a->j, (size_t)n, 1);
    return 1;
}

/* Add every item of the table at idx. A plain sequence of numbers of one
 * kind goes packed; anything else item by item. */
static void add_table(lua_State *L, ajob *a, int idx)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    if (a->mode == MPE_M_MAP && n > 0) {
        lua_rawgeti(L, idx, 1);
        int kind = lua_type(L, -1) != LUA_TNUMBER ? 0 : lua_isinteger(L, -1) ? MPE_K_INTS : MPE_K_FLOATS;
        lua_pop(L, 1);
        if (kind && add_packed(L, a, idx, n, kind))
            return;
    }
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (a->mode != MPE_M_MAP && !lua_istable(L, -1))
            mpe__argerror(L, "starmap", 0, "item %d must be a table of arguments, got %s",
                          (int)i, mpe__typename(L, -1));
        add_value(L, a, lua_gettop(L));
        lua_pop(L, 1);
        if ((i & 0xfff) == 0 && i < n)
            mpe__job_publish(a->lp->p, a->j, 0); /* let the workers start */
    }
}

/* Pull up to max items from the iterator at src. Returns 1 when it ended. */
static int add_from_iterator(lua_State *L, ajob *a, int src, lua_Integer max)
{
    int ended = 0;
    for (lua_Integer k = 0; k < max; k++) {
        lua_pushvalue(L, src);
        lua_call(L, 0, 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            ended = 1;
            break;
        }
        if (a->mode != MPE_M_MAP && !lua_istable(L, -1))
            mpe__argerror(L, "starmap", 0, "item %d must be a table of arguments, got %s",
                          (int)(mpe__async_count(a) + 1), mpe__typename(L, -1));
        if (a->out && mpe__async_count(a) >= a->outrows)
            luaL_error(L, "mpe: option 'out' has %d %s, fewer than the items (the iterator gave more)",
                       (int)a->outrows, a->outrows == 1 ? "row or element" : "rows or elements");
        add_value(L, a, lua_gettop(L));
        lua_pop(L, 1);
    }
    return ended;
}

/* Items at idx into a's job. limit: pull at most this many from an iterator
 * (imap), or -1 for all. */
static void add_items(lua_State *L, ajob *a, int idx, lua_Integer limit)
{
    const mpe_range *r = mpe__range_test(L, idx);
    int finished = 1;
    if (r && a->mode == MPE_M_MAP)
        mpe__job_add_range(a->j, r->first, r->step, r->count);
    else if (r)
        mpe__argerror(L, "starmap", 0, "items must be tables of arguments, not an mpe.range");
    else if (lua_istable(L, idx))
        add_table(L, a, idx);
    else
        finished = add_from_iterator(L, a, idx, limit < 0 ? LUA_MAXINTEGER : limit);
    lua_Integer count = mpe__async_count(a);
    if (finished && a->what == A_MAP && count > 0 && !a->out) {
        /* Results arrive by index: a table of the final size avoids rehashing. */
        lua_createtable(L, count > (1 << 26) ? (1 << 26) : (int)count, 1);
        mpe__async_set(L, a, AF_RESULTS, -1);
        lua_pop(L, 1);
    }
    mpe__job_publish(a->lp->p, a->j, finished);
    mpe__async_check_complete(L, a);
}

/* ---- one abort path for every submission --------------------------------------------------- */

/* Withdraw a job whose submission stopped half-way: out of the routing table
 * and released in the engine (items already handed out finish unseen, and it
 * is freed when nothing refers to it), so the pool is as before the call and
 * join does not wait for a job that will never be complete. */
static void abort_job(lua_State *L, ajob *a)
{
    if (!a->j) { /* an apply whose job was never created */
        a->complete = 1;
        return;
    }
    mpe__async_unroute(L, a);
    mpe__job_abort(a->lp->p, a->j);
    a->j = NULL;
    a->complete = 1;
}

/* The body of a submission, run protected: [1] the ajob, [2] the items or
 * the arguments table, [3] how (S_*), [4] the iterator limit. */
static int submit_body(lua_State *L)
{
    ajob *a = lua_touserdata(L, 1);
    if ((submit_what)lua_tointeger(L, 3) == S_VALUE)
        submit_value(L, a, 2, 1);
    else
        add_items(L, a, 2, (lua_Integer)lua_tointeger(L, 4));
    return 0;
}

/* Fill a's job from the value at idx. Any error on the way (an unsendable
 * item, an iterator that raises, memory) goes through abort_job and is then
 * raised as it was. */
void mpe__submit(lua_State *L, ajob *a, int idx, submit_what what, lua_Integer limit)
{
    idx = lua_absindex(L, idx);
    int ai = lua_gettop(L); /* mpe__submit_new left the ajob on top */
    lua_pushcfunction(L, submit_body);
    lua_pushvalue(L, ai);
    lua_pushvalue(L, idx);
    lua_pushinteger(L, what);
    lua_pushinteger(L, (lua_Integer)limit);
    if (lua_pcall(L, 4, 0, 0) != LUA_OK) {
        abort_job(L, a);
        lua_error(L);
    }
}

/* Pull more items from the job's iterator while the window allows; over a
 * range or a table, show the workers more of the stored items. Either way at
 * most a window of results waits ahead of the consumer. */
void mpe__submit_feed(lua_State *L, ajob *a)
{
    mpe__job_consumed(a->lp->p, a->j, mpe__job_yielded(a->j)); /* over a range or a table: the job's window */
    if (mpe__async_finished(a))
        return;
    lua_Integer room = a->window - mpe__job_ahead(a->j);
    if (room <= a->window / 2)
        return;
    mpe__async_get(L, a, AF_SRC);
    int src = lua_gettop(L);
    int finished = add_from_iterator(L, a, src, room);
    lua_pop(L, 1);
    mpe__job_publish(a->lp->p, a->j, finished);
    mpe__async_check_complete(L, a);
    if (a->complete) /* everything was delivered before the iterator ended: pump will not see it */
        mpe__async_unroute(L, a);
}
