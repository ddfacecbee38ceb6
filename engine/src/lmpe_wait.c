/* lmpe_wait.c -- waiting on many results at once (mpe.as_completed,
 * mpe.wait, concurrent.futures' two functions) and async:cancel.
 * SPDX-License-Identifier: MIT
 *
 * Three kinds of object can be waited on: a pool's mpe.AsyncResult, an inline
 * pool's result (a table made by lua/mpe/inline.lua, complete from the start)
 * and a started mpe.Process. A sweep polls every pending object without
 * blocking (pumping its pool, or p:is_alive()); between sweeps the caller
 * sleeps in the one pool every pending result belongs to, woken by its next
 * message, or, when several pools or processes are pending, SLICE seconds at
 * a time. Processes are reached through their methods only, so this file
 * does not depend on lmpe_process.c's structures. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "compat.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "lmpe_pool.h"
#include "pool_api.h"
#include "proc.h"
#include "shm.h"
#include "sig.h"

#define SLICE 0.02 /* longest sleep in one place while others may finish */

enum { K_NONE = -1, K_ASYNC, K_INLINE, K_PROCESS };

static int kind_of(lua_State *L, int idx)
{
    if (mpe__async_test(L, idx))
        return K_ASYNC;
    if (mpe__process_test(L, idx))
        return K_PROCESS;
    if (lua_istable(L, idx) && luaL_getmetafield(L, idx, "__name") != LUA_TNIL) {
        int is = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), ASYNC_MT) == 0;
        lua_pop(L, 1);
        if (is)
            return K_INLINE;
    }
    return K_NONE;
}

/* obj:name() for the object at idx; returns its first result's truth. */
static int call_method(lua_State *L, int idx, const char *name)
{
    idx = lua_absindex(L, idx);
    lua_getfield(L, idx, name);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    int r = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return r;
}

/* Push an array of the distinct objects in the table at idx, each checked;
 * returns how many. */
static int collect(lua_State *L, int idx, const char *fname)
{
    if (!lua_istable(L, idx))
        mpe__argerror(L, fname, idx, "must be a table of async results or processes, got %s",
                      mpe__got(L, idx));
    lua_newtable(L);
    int out = lua_gettop(L), n = 0;
    lua_newtable(L);
    int seen = out + 1;
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, idx, i);
        int o = lua_gettop(L), kind = kind_of(L, o);
        if (kind == K_NONE)
            mpe__argerror(L, fname, 0, "item %d of argument %d must be an mpe.AsyncResult or "
                          "mpe.Process, got %s", (int)i, idx, mpe__got(L, o));
        if (kind == K_ASYNC) {
            ajob *a = lua_touserdata(L, o);
            if (!a->j)
                mpe__argerror(L, fname, 0, "item %d of argument %d was released", (int)i, idx);
            if (a->lp->owner != mpe__shm_self())
                mpe__argerror(L, fname, 0, "item %d of argument %d belongs to process %d; a "
                              "forked child cannot wait for it", (int)i, idx, (int)a->lp->owner);
        } else if (kind == K_PROCESS) {
            lua_getfield(L, o, "pid");
            if (lua_isnil(L, -1))
                mpe__argerror(L, fname, 0, "item %d of argument %d is a process that was not started",
                              (int)i, idx);
            lua_pop(L, 1);
        }
        lua_pushvalue(L, o);
        lua_rawget(L, seen);
        if (lua_isnil(L, -1)) {
            lua_pushvalue(L, o);
            lua_pushboolean(L, 1);
            lua_rawset(L, seen);
            lua_pushvalue(L, o);
            lua_rawseti(L, out, ++n);
        }
        lua_settop(L, seen);
    }
    lua_pop(L, 1);
    return n;
}

/* Whether the object at idx is done, without blocking. A result whose pool
 * was terminated before it finished counts as done (it never will be; its
 * get raises). May run callbacks (the pump), which may raise. */
static int is_done(lua_State *L, int idx, int kind)
{
    if (kind == K_ASYNC) {
        ajob *a = lua_touserdata(L, idx);
        if (!a->complete && a->lp->p && a->lp->state != P_TERMINATED)
            mpe__async_pump(L, a->lp);
        return a->complete || !a->lp->p || a->lp->state == P_TERMINATED;
    }
    if (kind == K_PROCESS)
        return !call_method(L, idx, "is_alive");
    return call_method(L, idx, "ready");
}

/* Whether a done object failed: get (or result) would raise, or a process
 * did not exit with status 0. */
static int has_failed(lua_State *L, int idx, int kind)
{
    if (kind == K_ASYNC) {
        ajob *a = lua_touserdata(L, idx);
        return !a->complete || (a->failed && !a->collect);
    }
    if (kind == K_PROCESS) {
        lua_getfield(L, idx, "exitcode");
        int failed = !lua_isinteger(L, -1) || lua_tointeger(L, -1) != 0;
        lua_pop(L, 1);
        return failed;
    }
    return !call_method(L, idx, "successful");
}

/* Move the done objects of pend (1..*np) to the end of done (1..*nd), in
 * pend's order, and close the gaps in pend. */
static void sweep(lua_State *L, int pend, int *np, int done, int *nd)
{
    int k = 0;
    for (int i = 1; i <= *np; i++) {
        lua_rawgeti(L, pend, i);
        if (is_done(L, lua_gettop(L), kind_of(L, -1)))
            lua_rawseti(L, done, ++*nd);
        else
            lua_rawseti(L, pend, ++k);
    }
    for (int i = k + 1; i <= *np; i++) {
        lua_pushnil(L);
        lua_rawseti(L, pend, i);
    }
    *np = k;
}

/* Sleep until one of the pending objects (pend, 1..np) may be done, or the
 * deadline (monotonic s, <0 none). */
static void block(lua_State *L, int pend, int np, double deadline)
{
    mpe_pool *pool = NULL;
    int mixed = 0, proc = 0;
    for (int i = 1; i <= np; i++) {
        lua_rawgeti(L, pend, i);
        int kind = kind_of(L, -1);
        if (kind == K_ASYNC) {
            mpe_pool *p = ((ajob *)lua_touserdata(L, -1))->lp->p;
            if (pool && p != pool)
                mixed = 1;
            pool = pool ? pool : p;
        } else {
            mixed = 1;
            if (kind == K_PROCESS && !proc)
                proc = i;
        }
        lua_pop(L, 1);
    }
    double now = mpe__proc_now(), until = deadline;
    if (mixed || !pool) {
        double s = now + SLICE;
        if (until < 0 || s < until)
            until = s;
    }
    if (pool) {
        mpe__pool_wait(pool, until);
    } else if (proc) {
        lua_rawgeti(L, pend, proc);
        lua_getfield(L, -1, "join");
        lua_insert(L, -2);
        lua_pushnumber(L, until > now ? until - now : 0);
        lua_call(L, 2, 0);
    } else if (until > now) {
        usleep((useconds_t)((until - now) * 1e6));
    }
}

/* ---- mpe.as_completed ---------------------------------------------------------------- */

typedef struct acstate {
    int np, nr, head, total; /* pending, done so far, yielded so far, distinct objects */
    double deadline, timeout;
} acstate;

/* The iterator: the next object done (in completion order; those done in
 * the same sweep in input order), nil at the end; raises a timeout error
 * when the deadline passes with objects still pending. */
static int ac_next(lua_State *L)
{
    int pend = lua_upvalueindex(1), done = lua_upvalueindex(2);
    acstate *s = lua_touserdata(L, lua_upvalueindex(3));
    mpe_sigwatch sw;
    mpe__sig_watch(L, &sw);
    for (;;) {
        if (s->head < s->nr) {
            s->head++;
            lua_rawgeti(L, done, s->head);
            lua_pushnil(L);
            lua_rawseti(L, done, s->head); /* the iterator keeps no object it gave out */
            return 1;
        }
        if (s->np == 0)
            return 0;
        mpe__sig_check(L, &sw);
        sweep(L, pend, &s->np, done, &s->nr);
        if (s->head < s->nr)
            continue;
        if (s->deadline >= 0 && mpe__proc_now() >= s->deadline) {
            char what[96];
            snprintf(what, sizeof what, "as_completed: %d of %d still pending", s->np, s->total);
            return mpe__error_timeout(L, what, s->timeout);
        }
        block(L, pend, s->np, s->deadline);
    }
}

/* mpe.as_completed(objects [, timeout]) -> iterator; the timeout counts
 * from this call, as in concurrent.futures. */
static int l_as_completed(lua_State *L)
{
    double t = mpe__opt_timeout(L, 2, "as_completed");
    int n = collect(L, 1, "as_completed");
    lua_newtable(L);
    acstate *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    s->np = s->total = n;
    s->timeout = t;
    s->deadline = t < 0 ? -1 : mpe__proc_now() + t;
    lua_pushcclosure(L, ac_next, 3);
    return 1;
}

/* ---- mpe.wait ------------------------------------------------------------------------- */

enum { W_ALL, W_FIRST, W_EXCEPTION };

static int wait_options(lua_State *L, int idx, double *timeout)
{
    int mode = W_ALL, first = -1, when = -1;
    *timeout = -1;
    if (lua_isnoneornil(L, idx))
        return mode;
    if (!lua_istable(L, idx))
        mpe__argerror(L, "wait", idx, "(options) must be a table, got %s", mpe__got(L, idx));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (k && strcmp(k, "timeout") == 0) {
            double t = lua_tonumber(L, -1);
            if (lua_type(L, -1) != LUA_TNUMBER || !(t >= 0) || t > 1e9)
                mpe__argerror(L, "wait", 0, "option 'timeout' must be a number of seconds from 0 to 1e9, got %s",
                              mpe__got(L, -1));
            *timeout = t;
        } else if (k && strcmp(k, "first") == 0) {
            if (!lua_isboolean(L, -1))
                mpe__argerror(L, "wait", 0, "option 'first' must be a boolean, got %s",
                              mpe__got(L, -1));
            first = lua_toboolean(L, -1);
        } else if (k && strcmp(k, "return_when") == 0) {
            static const char *const names[] = {"ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"};
            const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
            for (int m = 0; m < 3; m++)
                if (strcmp(v, names[m]) == 0)
                    when = m;
            if (when < 0)
                mpe__argerror(L, "wait", 0, "option 'return_when' must be \"FIRST_COMPLETED\", "
                              "\"FIRST_EXCEPTION\" or \"ALL_COMPLETED\", got %s", mpe__got(L, -1));
        } else
            mpe__argerror(L, "wait", 0, "unknown option '%s'", k ? k : luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
    }
    if (first >= 0 && when >= 0)
        mpe__argerror(L, "wait", 0, "options 'first' and 'return_when' cannot be given together");
    if (first > 0)
        mode = W_FIRST;
    if (when >= 0)
        mode = when;
    return mode;
}

/* mpe.wait(objects [, {timeout =, first =, return_when =}]) -> done, pending:
 * two arrays, each in the input's order (duplicates counted once). Returns
 * when all are done (default), the first is (first = true or return_when =
 * "FIRST_COMPLETED"), one failed or all are done ("FIRST_EXCEPTION"), or
 * the timeout passes; never raises a timeout. */
static int l_wait(lua_State *L)
{
    double t;
    int mode = wait_options(L, 2, &t);
    int n = collect(L, 1, "wait");
    int list = lua_gettop(L);
    lua_createtable(L, n, 0);
    int pend = lua_gettop(L), np = n;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        lua_rawseti(L, pend, i);
    }
    lua_createtable(L, n, 0);
    int done = lua_gettop(L), nd = 0;
    double deadline = t < 0 ? -1 : mpe__proc_now() + t;
    mpe_sigwatch sw;
    mpe__sig_watch(L, &sw);
    for (;;) {
        mpe__sig_check(L, &sw);
        sweep(L, pend, &np, done, &nd);
        if (np == 0 || (mode == W_FIRST && nd > 0))
            break;
        int failed = 0;
        for (int i = 1; mode == W_EXCEPTION && i <= nd && !failed; i++) {
            lua_rawgeti(L, done, i);
            failed = has_failed(L, lua_gettop(L), kind_of(L, -1));
            lua_pop(L, 1);
        }
        if (failed || (deadline >= 0 && mpe__proc_now() >= deadline))
            break;
        block(L, pend, np, deadline);
    }
    /* Both answers in the input's order. */
    lua_createtable(L, 0, nd);
    int isdone = lua_gettop(L);
    for (int i = 1; i <= nd; i++) {
        lua_rawgeti(L, done, i);
        lua_pushboolean(L, 1);
        lua_rawset(L, isdone);
    }
    lua_createtable(L, nd, 0);
    lua_createtable(L, np, 0);
    int d = 0, p = 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        lua_pushvalue(L, -1);
        lua_rawget(L, isdone);
        int in_done = !lua_isnil(L, -1);
        lua_pop(L, 1);
        lua_rawseti(L, in_done ? isdone + 1 : isdone + 2, in_done ? ++d : ++p);
    }
    return 2;
}

/* ---- async:cancel ------------------------------------------------------------------------- */

/* async:cancel() -> true if the work was withdrawn before any worker was
 * handed any of it; then the result is ready, not successful, get raises an
 * error of kind "cancelled", and error_callback runs with that error now.
 * false (nothing changes) if it started, finished or was cancelled before. */
int mpe__async_cancel(lua_State *L)
{
    ajob *a = mpe__async_check(L, "async:cancel");
    lua_settop(L, 1);
    if (a->complete || !a->lp->p || a->lp->state == P_TERMINATED || a->what == A_IMAP ||
        a->what == A_IMAP_UNORDERED || !mpe__job_withdraw(a->lp->p, a->j)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    a->failed = 1;
    a->collect = 0;
    a->complete = 1;
    mpe_failure f = {.kind = "cancelled",
                     .message = "mpe: cancelled: the work was withdrawn before any worker started it"};
    mpe__error_push(L, &f);
    mpe__async_set(L, a, AF_FIRST_ERROR, -1);
    lua_pop(L, 1);
    mpe__async_progress(L, a, 1);
    mpe__async_unroute(L, a);
    mpe__async_run_callbacks(L, a);
    lua_pushboolean(L, 1);
    return 1;
}

void mpe__open_wait(lua_State *L)
{
    lua_pushcfunction(L, l_as_completed);
    lua_setfield(L, -2, "as_completed");
    lua_pushcfunction(L, l_wait);
    lua_setfield(L, -2, "wait");
}
