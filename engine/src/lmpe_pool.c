/* lmpe_pool.c -- Lua bindings of the pool: mpe.pool, its map family,
 * apply, imap iterators and its lifecycle.
 * SPDX-License-Identifier: MIT
 *
 * The scheduler (pool.c) moves bytes; this file checks a call's arguments
 * and options, lmpe_submit.c turns its items into the job's item store, and
 * lmpe_async.c turns result messages back into Lua values, on the main
 * thread only. */
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
#include "pool_lua.h"
#include "proc.h"
#include "protocol.h"
#include "ranks.h"
#include "shm.h"
#include "sig.h"

/* The one checker of mpe.Pool: the pool at idx, raising if it is none. */
static lpool *topool(lua_State *L, int idx, const char *fname)
{
    lpool *lp = mpe__testudata(L, idx, POOL_MT);
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
    ajob *a = mpe__submit_new(L, lp, 1, 2, A_MAP, mode, &o, allow_cb ? 4 : 0);
    mpe__submit(L, a, 3, S_ITEMS, -1);
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
    ajob *a = mpe__submit_new(L, lp, 1, 2, A_APPLY, MPE_M_APPLY, &o, 4);
    mpe__submit(L, a, 3, S_VALUE, 0);
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
    ajob *a = mpe__submit_new(L, lp, 1, 2, A_APPLY, MPE_M_APPLY, &o, 0);
    int ai = lua_gettop(L);
    mpe__submit(L, a, args, S_VALUE, 0);
    mpe__async_wait(L, a, -1);
    lua_settop(L, ai);
    return mpe__async_push_values(L, a);
}

/* ---- imap ------------------------------------------------------------------------------------ */

/* Push the next result if it is ready: returns the number of values pushed,
 * 0 if nothing is ready yet, -1 when the iteration is over. */
static int imap_try(lua_State *L, ajob *a)
{
    lua_Integer i;
    if (a->what == A_IMAP) {
        if (mpe__job_exhausted(a->j))
            return -1;
        i = mpe__job_yielded(a->j) + 1;
        mpe__async_get(L, a, AF_HAVE);
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
        lua_Integer at = mpe__job_dequeue(a->j);
        if (!at)
            return mpe__job_exhausted(a->j) ? -1 : 0;
        mpe__async_get(L, a, AF_Q);
        lua_rawgeti(L, -1, at);
        i = lua_tointeger(L, -1);
        lua_pushnil(L);
        lua_rawseti(L, -3, at);
        lua_pop(L, 2);
    }
    mpe__job_yield(a->j);
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
    mpe__async_get(L, a, AF_RESULTS);
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
    mpe__job_consumed(a->lp->p, a->j, mpe__job_yielded(a->j));
    for (;;) {
        mpe__sig_check(L, &sw);
        int n = imap_try(L, a);
        if (n != 0)
            return n > 0 ? n : 0;
        if (a->lp->state == P_TERMINATED)
            return luaL_error(L, "mpe: the pool was terminated during imap");
        mpe__submit_feed(L, a);
        mpe__async_pump(L, a->lp);
        mpe__async_raise_if_broken(L, a->lp);
        if (a->lost) { /* a result could not be received: the iteration fails */
            mpe__async_get(L, a, AF_FIRST_ERROR);
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
    ajob *a = mpe__submit_new(L, lp, 1, 2, what, MPE_M_MAP, &o, 0);
    int ai = lua_gettop(L);
    if (!lua_isfunction(L, 3)) /* stored whole, shown a window at a time */
        mpe__job_window(lp->p, a->j, a->window);
    mpe__async_set(L, a, AF_SRC, 3);
    lua_newtable(L);
    mpe__async_set(L, a, AF_HAVE, -1);
    lua_pop(L, 1);
    mpe__submit(L, a, 3, S_ITEMS, a->window);
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
        mpe__async_routed(L, lp);
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
        mpe__pool_forget_functions(L, lp->p);
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
    static const mpe_worker_hooks hooks = {mpe__error_handler};
    mpe_pool_opts o = {.workers = 0, .init_ref = LUA_NOREF, .initargs_ref = LUA_NOREF,
                       .hooks = &hooks};
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
    lua_createtable(L, AF_NFIELDS, 4);
    for (int f = 1; f <= AF_NFIELDS; f++) { /* the async objects' fields, by slot */
        lua_newtable(L);
        lua_rawseti(L, -2, f);
    }
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
    if (lp->nfree == lp->nslots) { /* else results outlive it (lua_close): the last one frees the list */
        free(lp->free_slots);
        lp->free_slots = NULL;
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
    lua_pushvalue(L, -2); /* the methods' upvalue: their checker's fast path */
    luaL_setfuncs(L, pool_methods, 1);
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
