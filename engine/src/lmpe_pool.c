/* lmpe_pool.c -- Lua bindings of the pool: mpe.pool, its map family,
 * apply, imap iterators and its lifecycle.
 * SPDX-License-Identifier: MIT
 *
 * The scheduler (pool.c) moves bytes; this file turns Lua arguments into
 * item stores, and lmpe_async.c turns result messages back into Lua values,
 * on the main thread only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "compat.h"
#include "array.h"
#include "buf.h"
#include "codec.h"
#include "err.h"
#include "fdio.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "lmpe_pool.h"
#include "pool_api.h"
#include "proc.h"
#include "protocol.h"
#include "ranks.h"
#include "shm.h"
#include "sig.h"

/* The one checker of mpe.Pool: the pool at idx, raising if it is none. */
static lpool *topool(lua_State *L, int idx, const char *fname)
{
    lpool *lp = luaL_testudata(L, idx, POOL_MT);
    if (!lp)
        mpe__typeerror(L, idx, POOL_MT, fname);
    return lp;
}

static lpool *checkpool(lua_State *L, const char *fname)
{
    lpool *lp = topool(L, 1, fname);
    if (lp->owner != mpe__shm_self())
        mpe__argerror(L, fname, 0, "this pool belongs to process %d; a forked child cannot use it",
                      (int)lp->owner);
    return lp;
}

static lpool *openpool(lua_State *L, const char *fname)
{
    lpool *lp = checkpool(L, fname);
    if (lp->state != P_OPEN)
        mpe__argerror(L, fname, 0, "the pool is %s", lp->state == P_CLOSED ? "closed" : "terminated");
    if (lp->broken) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lp->ref);
        lua_getfield(L, -1, "broken");
        lua_error(L);
    }
    return lp;
}

/* ---- submitting work ------------------------------------------------------------------------ */

/* Enter a's engine job in the pool's routing table (ajob at stack index ai). */
static void route(lua_State *L, ajob *a, int ai)
{
    mpe__async_getref(L, a->lp->ref, "jobs");
    lua_pushlightuserdata(L, a->j);
    lua_pushvalue(L, ai);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Create the async object for a new job; leaves it on the stack. An apply's
 * engine job is created by submit_value, with its item. */
static ajob *new_job(lua_State *L, lpool *lp, int pool_idx, int fn_idx, int what, int mode,
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
    a->ref = LUA_NOREF;
    a->lp = lp;
    a->what = what;
    a->mode = mode;
    a->collect = o->collect;
    a->window = o->window > 0 ? o->window : MPE_IMAP_WINDOW;
    a->progress = o->progress;
    a->out = o->out != 0;
    a->outrows = o->outrows;
    luaL_setmetatable(L, ASYNC_MT);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, pool_idx);
    lua_setfield(L, -2, "pool");
    lua_newtable(L);
    lua_setfield(L, -2, "results");
    if (o->out) {
        lua_getfield(L, o->out, "out");
        lua_setfield(L, -2, "out");
    }
    if (cb_idx && lua_istable(L, cb_idx)) {
        lua_pushvalue(L, cb_idx);
        lua_setfield(L, -2, "cb");
    }
    if (what == A_IMAP_UNORDERED) {
        lua_newtable(L);
        lua_setfield(L, -2, "q");
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
        lua_setfield(L, -2, "progress");
    }
    a->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (what == A_APPLY) { /* the engine job comes with its one item: submit_value */
        a->fnid = fnid;
        return a;
    }
    /* An iterator raises at the failed item, in order: earlier items must still come. */
    a->j = mpe__job_new(lp->p, mode | (o->out ? MPE_M_OUT : 0), fnid, o->chunksize,
                         !o->collect && what != A_IMAP && what != A_IMAP_UNORDERED);
    if (!a->j)
        luaL_error(L, "mpe: not enough memory for a job");
    route(L, a, lua_gettop(L));
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
    route(L, a, ai);
}

/* Add every item of the table at idx. A plain sequence of numbers of one
 * kind goes packed; anything else item by item. */
static void add_table(lua_State *L, ajob *a, int idx)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    int kind = 0;
    if (a->mode == MPE_M_MAP && n > 0) {
        kind = MPE_K_INTS;
        for (lua_Integer i = 1; i <= n && kind; i++) {
            lua_rawgeti(L, idx, i);
            if (lua_type(L, -1) != LUA_TNUMBER)
                kind = 0;
            else if (lua_isinteger(L, -1) != (kind == MPE_K_INTS))
                kind = (i == 1) ? MPE_K_FLOATS : 0;
            lua_pop(L, 1);
        }
    }
    if (kind) {
        /* Written straight into the store and published every 64k items, so
         * the workers start while the rest is still being copied. */
        char *dst = mpe__job_packed_begin(a->lp->p, a->j, kind, (size_t)n);
        if (!dst)
            luaL_error(L, "mpe: not enough memory for %d items", (int)n);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            if (kind == MPE_K_INTS) {
                int64_t v = (int64_t)lua_tointeger(L, -1);
                memcpy(dst, &v, 8);
            } else {
                double v = lua_tonumber(L, -1);
                memcpy(dst, &v, 8);
            }
            dst += 8;
            lua_pop(L, 1);
            if ((i & 0xffff) == 0 && i < n)
                mpe__job_packed_commit(a->lp->p, a->j, (size_t)i, 0);
        }
        mpe__job_packed_commit(a->lp->p, a->j, (size_t)n, 1);
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
        mpe__async_setref(L, a->ref, "results", -1);
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

typedef enum { S_ITEMS, S_VALUE } submit_what;

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
static void submit(lua_State *L, ajob *a, int idx, submit_what what, lua_Integer limit)
{
    idx = lua_absindex(L, idx);
    int ai = lua_gettop(L); /* new_job left the ajob on top */
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

/* pool:map_async / starmap_async (and the synchronous forms below). */
static int submit_map(lua_State *L, const char *fname, int mode, int allow_cb)
{
    lpool *lp = openpool(L, fname);
    callopts o;
    mpe__pool_check_call(L, fname, MPE_CALL_ITEMS | MPE_CALL_OUT | (allow_cb ? MPE_CALL_CB : 0), &o);
    if (o.out) { /* a table's or range's items are counted before any work */
        const mpe_range *r = mpe__range_test(L, 3);
        lua_Integer n = r ? r->count : lua_istable(L, 3) ? (lua_Integer)lua_rawlen(L, 3) : -1;
        if (n > o.outrows)
            mpe__argerror(L, fname, 0, "option 'out' has %d rows or elements, fewer than the %d "
                          "items",
                          (int)o.outrows, (int)n);
    }
    ajob *a = new_job(L, lp, 1, 2, A_MAP, mode, &o, allow_cb ? 4 : 0);
    submit(L, a, 3, S_ITEMS, -1);
    if (a->complete) { /* no items at all */
        mpe__async_unroute(L, a);
        mpe__async_run_callbacks(L, a);
    }
    return 1;
}

static int pool_map_async(lua_State *L)
{
    return submit_map(L, "pool:map_async", MPE_M_MAP, 1);
}

static int pool_starmap_async(lua_State *L)
{
    return submit_map(L, "pool:starmap_async", MPE_M_STAR, 1);
}

static int sync_map(lua_State *L, const char *fname, int mode)
{
    lua_settop(L, 4);
    submit_map(L, fname, mode, 0);
    ajob *a = lua_touserdata(L, -1);
    mpe__async_wait(L, a, -1);
    int n = mpe__async_push_values(L, a);
    return n;
}

static int pool_map(lua_State *L)
{
    return sync_map(L, "pool:map", MPE_M_MAP);
}

static int pool_starmap(lua_State *L)
{
    return sync_map(L, "pool:starmap", MPE_M_STAR);
}

static int pool_apply_async(lua_State *L)
{
    lua_settop(L, 4); /* args and opts may be absent: give them their slots */
    lpool *lp = openpool(L, "pool:apply_async");
    callopts o;
    mpe__pool_check_call(L, "pool:apply_async", MPE_CALL_ARGS | MPE_CALL_CB, &o);
    o.chunksize = 0;
    if (lua_isnoneornil(L, 3)) {
        lua_newtable(L);
        lua_replace(L, 3);
    }
    ajob *a = new_job(L, lp, 1, 2, A_APPLY, MPE_M_APPLY, &o, 4);
    submit(L, a, 3, S_VALUE, 0);
    return 1;
}

static int pool_apply(lua_State *L)
{
    lpool *lp = openpool(L, "pool:apply");
    mpe__pool_check_call(L, "pool:apply", 0, NULL);
    int nargs = lua_gettop(L) - 2;
    lua_createtable(L, nargs, 1);
    for (int i = 1; i <= nargs; i++) {
        lua_pushvalue(L, 2 + i);
        lua_rawseti(L, -2, i);
    }
    lua_pushinteger(L, nargs);
    lua_setfield(L, -2, "n");
    int args = lua_gettop(L);
    callopts o = {0};
    ajob *a = new_job(L, lp, 1, 2, A_APPLY, MPE_M_APPLY, &o, 0);
    int ai = lua_gettop(L);
    submit(L, a, args, S_VALUE, 0);
    mpe__async_wait(L, a, -1);
    lua_settop(L, ai);
    return mpe__async_push_values(L, a);
}

/* ---- imap ------------------------------------------------------------------------------------ */

/* Pull more items from the job's iterator while the window allows; over a
 * range or a table, show the workers more of the stored items. Either way at
 * most a window of results waits ahead of the consumer. */
static void imap_feed(lua_State *L, ajob *a)
{
    mpe__job_consumed(a->lp->p, a->j, a->yielded); /* over a range or a table: the job's window */
    if (mpe__async_finished(a))
        return;
    lua_Integer room = a->window - (mpe__async_count(a) - a->yielded);
    if (room <= a->window / 2)
        return;
    mpe__async_getref(L, a->ref, "src");
    int src = lua_gettop(L);
    int finished = add_from_iterator(L, a, src, room);
    lua_pop(L, 1);
    mpe__job_publish(a->lp->p, a->j, finished);
    mpe__async_check_complete(L, a);
    if (a->complete) /* everything was delivered before the iterator ended: pump will not see it */
        mpe__async_unroute(L, a);
}

/* Push the next result if it is ready: returns the number of values pushed,
 * 0 if nothing is ready yet, -1 when the iteration is over. */
static int imap_try(lua_State *L, ajob *a)
{
    lua_Integer i;
    if (a->what == A_IMAP) {
        i = a->yielded + 1;
        if (mpe__async_finished(a) && i > mpe__async_count(a))
            return -1;
        mpe__async_getref(L, a->ref, "have");
        lua_rawgeti(L, -1, i);
        int have = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (!have) {
            lua_pop(L, 1);
            return 0;
        }
        lua_pushnil(L);
        lua_rawseti(L, -2, i);
        lua_pop(L, 1);
    } else {
        if (a->qhead >= a->qtail)
            return (mpe__async_finished(a) && a->yielded >= mpe__async_count(a)) ? -1 : 0;
        mpe__async_getref(L, a->ref, "q");
        lua_rawgeti(L, -1, ++a->qhead);
        i = lua_tointeger(L, -1);
        lua_pushnil(L);
        lua_rawseti(L, -3, a->qhead);
        lua_pop(L, 2);
    }
    a->yielded++;
    mpe__async_getfailures(L, a);
    lua_rawgeti(L, -1, i);
    if (!lua_isnil(L, -1)) {
        lua_pushnil(L);
        lua_rawseti(L, -3, i);
        if (!a->collect) {
            mpe__async_progress(L, a, 1); /* end the bar's line before the error */
            lua_error(L);
        }
        lua_pushinteger(L, i);
        lua_pushnil(L);
        lua_pushvalue(L, -3);
        return 3;
    }
    lua_pop(L, 2);
    mpe__async_getref(L, a->ref, "results");
    lua_pushinteger(L, i);
    lua_rawgeti(L, -2, i);
    lua_pushnil(L);
    lua_rawseti(L, -4, i);
    return 2;
}

/* The iterator: returns index, value (or index, nil, err with errors = "collect"). */
static int imap_next(lua_State *L)
{
    ajob *a = lua_touserdata(L, lua_upvalueindex(1));
    if (!a->j)
        return 0;
    mpe_sigwatch sw;
    mpe__sig_watch(L, &sw);
    /* Keep the workers a window ahead, not only when the consumer waits. */
    mpe__job_consumed(a->lp->p, a->j, a->yielded);
    for (;;) {
        mpe__sig_check(L, &sw);
        int n = imap_try(L, a);
        if (n != 0)
            return n > 0 ? n : 0;
        if (a->lp->state == P_TERMINATED)
            return luaL_error(L, "mpe: the pool was terminated during imap");
        imap_feed(L, a);
        mpe__async_pump(L, a->lp);
        mpe__async_raise_if_broken(L, a->lp);
        if (a->lost) { /* a result could not be received: the iteration fails */
            mpe__async_getref(L, a->ref, "first_error");
            return lua_error(L);
        }
        n = imap_try(L, a);
        if (n != 0)
            return n > 0 ? n : 0;
        mpe__pool_wait(a->lp->p, -1);
    }
}

static int imap_common(lua_State *L, const char *fname, int what)
{
    lpool *lp = openpool(L, fname);
    callopts o;
    mpe__pool_check_call(L, fname, MPE_CALL_ITEMS, &o);
    ajob *a = new_job(L, lp, 1, 2, what, MPE_M_MAP, &o, 0);
    int ai = lua_gettop(L);
    if (!lua_isfunction(L, 3)) /* stored whole, shown a window at a time */
        mpe__job_window(lp->p, a->j, a->window);
    mpe__async_setref(L, a->ref, "src", 3);
    lua_newtable(L);
    mpe__async_setref(L, a->ref, "have", -1);
    lua_pop(L, 1);
    submit(L, a, 3, S_ITEMS, a->window);
    if (a->complete) /* no items at all */
        mpe__async_unroute(L, a);
    lua_pushvalue(L, ai);
    lua_pushcclosure(L, imap_next, 1);
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushvalue(L, ai); /* closing value: leaving the loop early releases the job */
    return 4;
}

static int pool_imap(lua_State *L)
{
    return imap_common(L, "pool:imap", A_IMAP);
}

static int pool_imap_unordered(lua_State *L)
{
    return imap_common(L, "pool:imap_unordered", A_IMAP_UNORDERED);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static int pool_close(lua_State *L)
{
    lpool *lp = checkpool(L, "pool:close");
    if (lp->state == P_OPEN)
        lp->state = P_CLOSED;
    return 0;
}

static int pool_terminate(lua_State *L)
{
    lpool *lp = checkpool(L, "pool:terminate");
    if (lp->state == P_TERMINATED || lp->state == P_JOINED)
        return 0;
    lp->state = P_TERMINATED;
    mpe__pool_stop(lp->p, 1);
    return 0;
}

/* Wait for every job still routed in the pool, running their callbacks. */
static void drain(lua_State *L, lpool *lp)
{
    for (;;) {
        mpe__async_pump(L, lp);
        mpe__async_raise_if_broken(L, lp);
        mpe__async_getref(L, lp->ref, "jobs");
        lua_pushnil(L);
        int any = lua_next(L, -2);
        if (any) {
            ajob *a = lua_touserdata(L, -1);
            lua_pop(L, 3);
            if (a->what == A_IMAP || a->what == A_IMAP_UNORDERED) {
                /* an abandoned iterator: nobody will read it */
                mpe__async_unroute(L, a);
                mpe__job_cancel(lp->p, a->j);
                continue;
            }
            mpe__async_wait(L, a, -1);
            mpe__async_unroute(L, a);
            mpe__async_run_callbacks(L, a);
        } else {
            lua_pop(L, 1);
            return;
        }
    }
}

static int pool_join(lua_State *L)
{
    lpool *lp = checkpool(L, "pool:join");
    if (lp->state == P_OPEN)
        return mpe__argerror(L, "pool:join", 0, "call pool:close() or pool:terminate() first");
    if (lp->state == P_JOINED || lp->state == P_TERMINATED) {
        lp->state = P_JOINED;
        return 0;
    }
    drain(L, lp);
    mpe__pool_stop(lp->p, 0);
    lp->state = P_JOINED;
    return 0;
}

static int pool_gc(lua_State *L)
{
    lpool *lp = topool(L, 1, "pool:__gc");
    if (lp->p) {
        mpe__pool_free(lp->p); /* terminates, in the creator; frees memory elsewhere */
        lp->p = NULL;
    }
    if (lp->state != P_JOINED)
        lp->state = P_TERMINATED;
    return 0;
}

/* <close>: a normal exit closes and joins; an exit by error terminates. */
static int pool_close_meta(lua_State *L)
{
    lpool *lp = topool(L, 1, "pool:__close");
    if (!lp->p || lp->owner != mpe__shm_self())
        return 0;
    if (!lua_isnil(L, 2)) {
        lua_settop(L, 1);
        return pool_terminate(L);
    }
    lua_settop(L, 1);
    if (lp->broken) {
        /* The initializer failed: every call on the pool has raised that
         * failure, and every pending result holds it, so the scope's normal
         * end must not raise it once more (a pcall already caught it).
         * Deliver what is pending (callbacks), then end the workers. */
        mpe__async_pump(L, lp);
        return pool_terminate(L);
    }
    pool_close(L);
    return pool_join(L);
}

static int pool_index(lua_State *L)
{
    lpool *lp = topool(L, 1, "pool:__index");
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "workers") == 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lp->ref);
        lua_getfield(L, -1, "nworkers");
        return 1;
    }
    if (k && strcmp(k, "started") == 0) {
        lua_pushinteger(L, lp->p ? mpe__pool_started(lp->p) : 0);
        return 1;
    }
    if (k && strcmp(k, "state") == 0) {
        static const char *names[] = {"open", "closed", "terminated", "joined"};
        lua_pushstring(L, names[lp->state]);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

static int pool_tostring(lua_State *L)
{
    lpool *lp = topool(L, 1, "pool:__tostring");
    lua_pushfstring(L, "mpe.Pool (%p)", (void *)lp);
    return 1;
}

/* mpe.pool([n | opts]) */
static int pool_new(lua_State *L)
{
    mpe_pool_opts o = {.workers = 0, .init_ref = LUA_NOREF, .initargs_ref = LUA_NOREF,
                       .handler = mpe__error_handler};
    int init = 0, initargs = 0, given = 0; /* given: a worker count was passed (0 = inline) */
    int local = 0;                         /* ranks = "local" */
    if (lua_isinteger(L, 1)) {
        o.workers = (int)lua_tointeger(L, 1);
        given = 1;
        if (lua_tointeger(L, 1) < 0 || lua_tointeger(L, 1) > 1024)
            return mpe__argerror(L, "pool", 1, "(workers) must be from 0 to 1024, got %d",
                                 (int)lua_tointeger(L, 1));
    } else if (lua_istable(L, 1)) {
        lua_pushnil(L);
        while (lua_next(L, 1)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            int v = lua_gettop(L);
            if (k && strcmp(k, "workers") == 0) {
                if (!lua_isinteger(L, v) || lua_tointeger(L, v) < 0 || lua_tointeger(L, v) > 1024)
                    return mpe__argerror(L, "pool", 0, "option 'workers' must be an integer from 0 to 1024, got %s",
                                         mpe__got(L, v));
                o.workers = (int)lua_tointeger(L, v);
                given = 1;
            } else if (k && strcmp(k, "maxtasksperchild") == 0) {
                if (!lua_isinteger(L, v) || lua_tointeger(L, v) < 1)
                    return mpe__argerror(L, "pool", 0, "option 'maxtasksperchild' must be a positive integer, got %s",
                                         mpe__got(L, v));
                o.maxtasks = lua_tointeger(L, v) > (1 << 30) ? (1 << 30) : (int)lua_tointeger(L, v);
            } else if (k && strcmp(k, "timeout") == 0) {
                if (lua_type(L, v) != LUA_TNUMBER || !(lua_tonumber(L, v) > 0) ||
                    !(lua_tonumber(L, v) <= 1e9))
                    return mpe__argerror(L, "pool", 0, "option 'timeout' must be a positive number of seconds, got %s",
                                         mpe__got(L, v));
                o.timeout = lua_tonumber(L, v);
            } else if (k && strcmp(k, "retries") == 0) {
                if (!lua_isinteger(L, v) || lua_tointeger(L, v) < 0 || lua_tointeger(L, v) > 1000)
                    return mpe__argerror(L, "pool", 0, "option 'retries' must be an integer from 0 to 1000, got %s",
                                         mpe__got(L, v));
                o.retries = (int)lua_tointeger(L, v);
            } else if (k && strcmp(k, "initializer") == 0) {
                if (!mpe__is_callable(L, v))
                    return mpe__argerror(L, "pool", 0, "option 'initializer' must be a function, got %s",
                                         mpe__got(L, v));
                init = 1;
            } else if (k && strcmp(k, "ranks") == 0) {
                const char *r = lua_type(L, v) == LUA_TSTRING ? lua_tostring(L, v) : "";
                if (strcmp(r, "all") != 0 && strcmp(r, "local") != 0)
                    return mpe__argerror(L, "pool", 0, "option 'ranks' must be \"all\" or \"local\", got %s",
                                         mpe__got(L, v));
                local = strcmp(r, "local") == 0;
            } else if (k && strcmp(k, "initargs") == 0) {
                if (!lua_istable(L, v))
                    return mpe__argerror(L, "pool", 0, "option 'initargs' must be a table, got %s",
                                         mpe__got(L, v));
                initargs = 1;
            } else
                return mpe__argerror(L, "pool", 0, "unknown option '%s'",
                                     k ? k : luaL_tolstring(L, -2, NULL));
            lua_settop(L, v - 1);
        }
    } else if (!lua_isnoneornil(L, 1))
        return mpe__argerror(L, "pool", 1, "must be a worker count or an options table, got %s",
                             mpe__got(L, 1));
    if (o.workers == 0 && (given || mpe__inline_default()))
        return mpe__inline_pool(L); /* lmpe_inline.c: tasks run in the caller */
    /* Under MPI a pool spans every rank unless kept local (mpi.c). Only the
     * process that joined MPI spans ranks; a child it forked (a worker, an
     * mpe.process) keeps its pools to itself. */
    o.spread = mpe__ranks && mpe__ranks->size > 1 && !local && getpid() == mpe__ranks->pid;
    if (o.spread)
        o.transport = mpe__ranks->transport;
    if (o.workers == 0 && o.spread)
        for (int r = 0; r < mpe__ranks->size && o.workers < 1024; r++)
            o.workers += mpe__ranks->workers[r];
    if (o.workers > 1024)
        o.workers = 1024;
    if (o.workers == 0)
        o.workers = mpe__proc_default_workers();
    lpool *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    memset(lp, 0, sizeof *lp);
    lp->ref = lp->init_ref = lp->initargs_ref = LUA_NOREF;
    lp->owner = mpe__shm_self();
    lp->remote = o.spread;
    lp->state = P_TERMINATED; /* until the workers exist */
    luaL_setmetatable(L, POOL_MT);
    lua_createtable(L, 0, 4);
    lua_newtable(L);
    lua_setfield(L, -2, "jobs");
    lua_pushinteger(L, o.workers);
    lua_setfield(L, -2, "nworkers");
    if (init) {
        lua_getfield(L, 1, "initializer");
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "initializer");
        o.init_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lp->init_ref = o.init_ref;
    }
    if (initargs) {
        lua_getfield(L, 1, "initargs");
        o.initargs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lp->initargs_ref = o.initargs_ref;
    }
    lp->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    mpe_err e;
    lp->p = mpe__pool_new(L, &o, &e);
    if (!lp->p)
        return luaL_error(L, "mpe: pool: %s", e.msg);
    lp->state = P_OPEN;
    return 1;
}

static int pool_gc_full(lua_State *L)
{
    lpool *lp = topool(L, 1, "pool:__gc");
    pool_gc(L);
    mpe__buf_free(&lp->scratch);
    if (lp->owner == mpe__shm_self())
        mpe__fds_truncate(&lp->sfds, 0);
    free(lp->sfds.fd);
    lp->sfds = (mpe_fds){0};
    if (lp->ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, lp->ref);
        lp->ref = LUA_NOREF;
    }
    if (lp->init_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, lp->init_ref);
    if (lp->initargs_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, lp->initargs_ref);
    lp->init_ref = lp->initargs_ref = LUA_NOREF;
    return 0;
}

void mpe__open_pool(lua_State *L)
{
    static const luaL_Reg pool_methods[] = {
        {"map", pool_map},
        {"starmap", pool_starmap},
        {"map_async", pool_map_async},
        {"starmap_async", pool_starmap_async},
        {"imap", pool_imap},
        {"imap_unordered", pool_imap_unordered},
        {"apply", pool_apply},
        {"apply_async", pool_apply_async},
        {"close", pool_close},
        {"join", pool_join},
        {"terminate", pool_terminate},
        {NULL, NULL}};
    luaL_newmetatable(L, POOL_MT);
    lua_newtable(L);
    luaL_setfuncs(L, pool_methods, 0);
    lua_pushcclosure(L, pool_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, pool_gc_full);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, pool_close_meta);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, pool_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    mpe__async_open(L);

    lua_pushcfunction(L, pool_new);
    lua_setfield(L, -2, "pool");
    mpe__open_range(L);
    mpe__open_wait(L); /* lmpe_wait.c: as_completed, wait */
}
