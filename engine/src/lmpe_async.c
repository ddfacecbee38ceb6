/* lmpe_async.c -- the Lua side of a pool's results: messages turned into
 * Lua values, error objects, callbacks, progress bars, and the
 * mpe.AsyncResult object (get, wait, ready, successful).
 * SPDX-License-Identifier: MIT
 *
 * Main thread only: the dispatcher thread hands over messages (pool.c), and
 * this file decodes them into each object's fields (lmpe_slots.c). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "err.h"
#include "frames.h"
#include "job.h"
#include "lmpe_err.h"
#include "lmpe_pool.h"
#include "pool_api.h"
#include "pool_lua.h"
#include "proc.h"
#include "protocol.h"
#include "shm.h"
#include "sig.h"

lua_Integer mpe__async_count(const ajob *a)
{
    return a->j ? (lua_Integer)mpe__job_count(a->j) : 0;
}

int mpe__async_finished(const ajob *a)
{
    return a->j && mpe__job_finished(a->j);
}

int mpe__async_all_delivered(const ajob *a)
{
    return a->j && mpe__job_all_delivered(a->j);
}

/* Push field k of the table behind ref. */
void mpe__async_getref(lua_State *L, int ref, const char *k)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_getfield(L, -1, k);
    lua_remove(L, -2);
}

/* ---- turning messages into Lua values ------------------------------------------------- */

static void make_task_error(lua_State *L, ajob *a, lua_Integer index, int worker, pid_t pid)
{
    /* stack: the worker's error table { message=, traceback=, value= } or an mpe.Error */
    int t = lua_gettop(L);
    if (lua_type(L, t) == LUA_TSTRING) { /* e.g. "not enough memory": no handler ran */
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, t);
        lua_setfield(L, -2, "message");
        lua_replace(L, t);
    }
    lua_getfield(L, t, "message");
    lua_getfield(L, t, "traceback");
    lua_getfield(L, t, "value");
    mpe_failure f = {.kind = "error",
                     .index = a->what == A_APPLY ? 0 : index,
                     .pid = pid,
                     .worker = worker,
                     .message = lua_tostring(L, t + 1),
                     .traceback = lua_tostring(L, t + 2),
                     .value = lua_isnil(L, t + 3) ? 0 : t + 3};
    if (!f.message)
        f.message = "(error without a message)";
    mpe__error_push(L, &f);
    lua_replace(L, t);
    lua_settop(L, t);
}

/* Record the failure at the top (an mpe.Error) for item index; pops it. */
/* Push a's failures table, creating it at the first failure. */
void mpe__async_getfailures(lua_State *L, ajob *a)
{
    mpe__async_get(L, a, AF_FAILURES);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        mpe__async_set(L, a, AF_FAILURES, -1);
    }
}

static void add_failure(lua_State *L, ajob *a, lua_Integer index)
{
    mpe__async_getfailures(L, a);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, index);
    lua_pop(L, 1);
    if (!a->failed) {
        a->failed = 1;
        mpe__async_set(L, a, AF_FIRST_ERROR, -1);
    }
    lua_pop(L, 1);
    if (a->what == A_IMAP_UNORDERED) {
        mpe__async_get(L, a, AF_Q);
        lua_pushinteger(L, index);
        lua_rawseti(L, -2, mpe__job_enqueue(a->j));
        lua_pop(L, 1);
    } else if (a->what == A_IMAP) {
        mpe__async_get(L, a, AF_HAVE);
        lua_pushboolean(L, 1);
        lua_rawseti(L, -2, index);
        lua_pop(L, 1);
    }
}

static void deliver(lua_State *L, ajob *a, mpe_msg *m)
{
    int top = lua_gettop(L);
    if (m->type == MPE_MSG_FAIL) {
        char text[256];
        snprintf(text, sizeof text, "%s", m->text);
        uint32_t n = m->count > 0 ? m->count : 1;
        for (uint32_t k = 0; k < n; k++) {
            mpe_failure f = {.kind = m->kind, .index = a->what == A_APPLY ? 0 : m->index + k,
                             .pid = m->pid, .worker = m->worker, .message = text};
            mpe__error_push(L, &f);
            add_failure(L, a, m->index + k);
            mpe__job_delivered(a->j, 1);
        }
        lua_settop(L, top);
        return;
    }
    if (m->flags & MPE_R_NONE) { /* option out=: the results are in the array already */
        mpe__job_delivered(a->j, m->count);
        return;
    }
    if (a->what == A_APPLY)
        lua_pushnil(L); /* no results table: the value goes into the field */
    else
        mpe__async_get(L, a, AF_RESULTS);
    int res = lua_gettop(L);
    mpe_rd r;
    mpe__rd_init(&r, m->data, m->len);
    int q = 0;
    if (a->what == A_IMAP_UNORDERED || a->what == A_IMAP) {
        mpe__async_get(L, a, a->what == A_IMAP ? AF_HAVE : AF_Q);
        q = lua_gettop(L);
    } else if (m->flags & (MPE_R_INTS | MPE_R_FLOATS)) { /* packed numbers, straight in */
        mpe__decode_numbers(L, res, m->index, m->data, m->len, m->count, m->flags & MPE_R_INTS);
        mpe__job_delivered(a->j, m->count);
        lua_settop(L, top);
        return;
    }
    for (uint32_t i = 0; i < m->count; i++) {
        lua_Integer index = m->index + (lua_Integer)i;
        if (m->flags & (MPE_R_INTS | MPE_R_FLOATS)) {
            if (m->flags & MPE_R_INTS) {
                uint64_t v = 0;
                mpe__rd_u64(&r, &v);
                lua_pushinteger(L, (lua_Integer)(int64_t)v);
            } else {
                double v = 0;
                mpe__rd_f64(&r, &v);
                lua_pushnumber(L, v);
            }
            lua_rawseti(L, res, index);
        } else {
            unsigned status = 0;
            uint64_t nvals = 0;
            if (mpe__frames_record_read(&r, &status, &nvals) || nvals > 250)
                luaL_error(L, "mpe: malformed result from worker %d", m->worker);
            luaL_checkstack(L, (int)nvals + 4, "too many results");
            for (uint64_t k = 0; k < nvals; k++)
                mpe__decode(L, &r, &m->fds);
            if (status != 0) {
                lua_settop(L, res + (q ? 1 : 0) + 1);
                make_task_error(L, a, index, m->worker, m->pid);
                add_failure(L, a, index);
                lua_settop(L, q ? q : res);
                mpe__job_delivered(a->j, 1);
                continue;
            }
            if (a->what == A_APPLY) {
                a->nres = (lua_Integer)nvals;
                if (nvals != 1) { /* a table of them; one value is the field itself */
                    lua_createtable(L, (int)nvals, 0);
                    lua_insert(L, res + 1);
                    for (int k = (int)nvals; k >= 1; k--)
                        lua_rawseti(L, res + 1, k);
                }
                mpe__async_set(L, a, AF_RESULTS, -1);
                lua_settop(L, res);
            } else {
                if (nvals == 0)
                    lua_pushnil(L);
                lua_rawseti(L, res, index);
                lua_settop(L, q ? q : res);
            }
        }
        if (q && a->what == A_IMAP) {
            lua_pushboolean(L, 1);
            lua_rawseti(L, q, index);
        } else if (q) {
            lua_pushinteger(L, index);
            lua_rawseti(L, q, mpe__job_enqueue(a->j));
        }
        mpe__job_delivered(a->j, 1);
    }
    lua_settop(L, top);
}

/* Progress bar (option progress): lua/mpe/progress.lua draws it; this calls
 * its update(state) at most every 100 ms, and once with final = true. The
 * clock is read here, so between redraws a delivery costs no Lua call. A
 * failing bar is switched off with a message: it must never fail the work. */
void mpe__async_progress(lua_State *L, ajob *a, int final)
{
    if (!a->progress)
        return;
    double now = mpe__proc_now();
    if (!final && now < a->progress_next)
        return;
    a->progress_next = now + 0.1;
    if (final)
        a->progress = 0;
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mpe.progress");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
        lua_getfield(L, -1, "update");
        mpe__async_get(L, a, AF_PROGRESS);
        lua_pushinteger(L, a->j ? mpe__job_ndelivered(a->j) : 0);
        lua_setfield(L, -2, "done");
        if (mpe__async_finished(a)) {
            lua_pushinteger(L, mpe__async_count(a));
            lua_setfield(L, -2, "total");
        }
        lua_pushboolean(L, final);
        lua_setfield(L, -2, "final");
        lua_pushnumber(L, now);
        lua_setfield(L, -2, "now");
        if (lua_pcall(L, 1, 0, 0) == LUA_OK) {
            lua_settop(L, top);
            return;
        }
    }
    fprintf(stderr, "\nmpe: progress bar: %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    a->progress = 0;
    lua_settop(L, top);
}

void mpe__async_check_complete(lua_State *L, ajob *a)
{
    if (a->complete)
        return;
    int iter = a->what == A_IMAP || a->what == A_IMAP_UNORDERED;
    if (mpe__async_all_delivered(a) || (a->failed && !a->collect && !iter)) {
        a->complete = 1;
        if (a->failed && !a->collect)
            mpe__job_cancel(a->lp->p, a->j);
        if (a->what == A_MAP) { /* results.n, also for callbacks */
            mpe__async_get(L, a, AF_RESULTS);
            lua_pushinteger(L, mpe__async_count(a));
            lua_setfield(L, -2, "n");
            lua_pop(L, 1);
        }
    }
    mpe__async_progress(L, a, a->complete); /* after every delivery; time-limited inside */
}

/* a (at ai) completed in a pump: out of the routing, and onto the list of
 * those whose callbacks run at the end of the pump (the table at done, made
 * at the first one). */
static void completed(lua_State *L, ajob *a, int ai, int done, int *ndone)
{
    mpe__async_unroute(L, a);
    if (!(a->fields & (1u << AF_CB)))
        return;
    if (lua_isnil(L, done)) {
        lua_newtable(L);
        lua_replace(L, done);
    }
    lua_pushvalue(L, ai);
    lua_rawseti(L, done, ++*ndone);
}

static void pool_broken(lua_State *L, lpool *lp, mpe_msg *m)
{
    mpe_rd r;
    mpe__rd_init(&r, m->data, m->len);
    mpe__decode(L, &r, NULL);
    int t = lua_gettop(L);
    lua_getfield(L, t, "message");
    lua_getfield(L, t, "traceback");
    char msg[512];
    snprintf(msg, sizeof msg, "pool initializer failed: %s",
             lua_tostring(L, t + 1) ? lua_tostring(L, t + 1) : "?");
    mpe_failure f = {.kind = "error", .pid = m->pid, .worker = m->worker, .message = msg,
                     .traceback = lua_tostring(L, t + 2)};
    mpe__error_push(L, &f);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lp->ref);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "broken");
    lua_settop(L, t - 1);
    lp->broken = 1;
}

/* The pool broke (its error at the top): every job still waiting fails with
 * that error, so waits return and get raises it. Leaves the error. */
static void fail_all(lua_State *L, lpool *lp, int done, int *ndone)
{
    int err = lua_gettop(L);
    mpe__async_routed(L, lp);
    lua_pushnil(L);
    while (lua_next(L, -2)) { /* unrouting clears fields of the table walked: allowed */
        ajob *a = lua_touserdata(L, -1);
        if (a && !a->complete) {
            a->failed = 1;
            a->collect = 0;
            mpe__async_set(L, a, AF_FIRST_ERROR, err);
            a->complete = 1;
            completed(L, a, lua_gettop(L), done, ndone);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static int deliver_p(lua_State *L)
{
    deliver(L, lua_touserdata(L, 1), lua_touserdata(L, 2));
    return 0;
}

static int lost_error_p(lua_State *L)
{
    const mpe_msg *m = lua_touserdata(L, 1);
    ajob *a = lua_touserdata(L, 2);
    char text[256];
    snprintf(text, sizeof text, "mpe: %s while receiving the result of %s %lld (%zu bytes)",
             lua_isstring(L, 3) ? lua_tostring(L, 3) : "an error", a->what == A_APPLY ? "the call" : "item",
             (long long)m->index, m->len);
    mpe_failure f = {.kind = "error", .index = a->what == A_APPLY ? 0 : m->index, .pid = m->pid,
                     .worker = m->worker, .message = text};
    mpe__error_push(L, &f);
    return 1;
}

/* Decoding message m for a raised (typically "not enough memory": the parent
 * could not hold a result). The job fails as a whole with an error object of
 * kind "error", so get raises it, waits and join return, and the rest of its
 * results are dropped. Pops the error at the top. */
static void lost(lua_State *L, ajob *a, mpe_msg *m)
{
    int err = lua_gettop(L);
    lua_pushcfunction(L, lost_error_p);
    lua_pushlightuserdata(L, m);
    lua_pushlightuserdata(L, a);
    lua_pushvalue(L, err);
    if (lua_pcall(L, 3, 1, 0) == LUA_OK)
        lua_replace(L, err);
    else
        lua_pop(L, 1); /* keep the original error: no memory even for the message */
    a->failed = 1;
    a->collect = 0;
    a->lost = 1;
    a->complete = 1;
    mpe__async_set(L, a, AF_FIRST_ERROR, err);
    lua_settop(L, err - 1);
    mpe__job_cancel(a->lp->p, a->j);
}

static int run_callbacks_p(lua_State *L)
{
    mpe__async_run_callbacks(L, lua_touserdata(L, 1));
    return 0;
}

/* Read every message that has arrived and run the callbacks of the jobs it
 * completed. Main thread; may raise (a callback's error). */
void mpe__async_pump(lua_State *L, lpool *lp)
{
    mpe_err e;
    if (mpe__pool_respawn(L, lp->p, &e) != 0)
        luaL_error(L, "mpe: pool: cannot replace a worker: %s", e.msg);
    mpe_msg *m;
    int top = lua_gettop(L);
    mpe__async_routed(L, lp);
    int routed = lua_gettop(L);
    lua_pushnil(L); /* completed in this pass with callbacks to run, in order: made when needed */
    int done = lua_gettop(L), ndone = 0;
    while ((m = mpe__pool_take(lp->p)) != NULL) {
        if (m->type == MPE_MSG_BROKEN) {
            mpe_failure f = {.kind = "crash", .pid = m->pid, .worker = m->worker, .message = m->text};
            mpe__error_push(L, &f);
            lua_rawgeti(L, LUA_REGISTRYINDEX, lp->ref);
            lua_pushvalue(L, -2);
            lua_setfield(L, -2, "broken");
            lua_pop(L, 1);
            lp->broken = 1;
            fail_all(L, lp, done, &ndone);
            lua_pop(L, 1);
            mpe__pool_msg_done(lp->p, m);
            continue;
        }
        if (m->type == MPE_MSG_INITFAIL) {
            pool_broken(L, lp, m);
            lua_rawgeti(L, LUA_REGISTRYINDEX, lp->ref);
            lua_getfield(L, -1, "broken");
            lua_remove(L, -2);
            fail_all(L, lp, done, &ndone);
            lua_pop(L, 1);
            mpe__pool_msg_done(lp->p, m);
            continue;
        }
        if (!mpe__pool_msg_live(m)) {
            mpe__pool_msg_done(lp->p, m);
            continue;
        }
        lua_rawgeti(L, routed, mpe__job_tag(m->job));
        ajob *a = lua_touserdata(L, -1);
        if (a && a->j == m->job && !a->complete) { /* (a slot is reused once its object went) */
            lua_pushcfunction(L, deliver_p);
            lua_pushlightuserdata(L, a);
            lua_pushlightuserdata(L, m);
            if (lua_pcall(L, 2, 0, 0) != LUA_OK)
                lost(L, a, m); /* pops the error */
            mpe__async_check_complete(L, a);
            if (a->complete)
                completed(L, a, lua_gettop(L), done, &ndone);
        }
        lua_pop(L, 1);
        mpe__pool_msg_done(lp->p, m);
    }
    /* Every completed job's callbacks run now, even when one raises: the
     * first error is raised after the others ran (their get() already
     * returns, so their callbacks must not wait until join). */
    lua_pushnil(L);
    int first_err = lua_gettop(L);
    for (int i = 1; i <= ndone; i++) {
        lua_rawgeti(L, done, i);
        lua_pushcfunction(L, run_callbacks_p);
        lua_insert(L, -2);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
            if (lua_isnil(L, first_err))
                lua_replace(L, first_err);
            else
                lua_pop(L, 1);
        }
    }
    if (!lua_isnil(L, first_err)) {
        lua_pushvalue(L, first_err);
        lua_error(L);
    }
    lua_settop(L, top);
}

/* A pool that lost its initializer fails every job still waiting. */
void mpe__async_raise_if_broken(lua_State *L, lpool *lp)
{
    if (lp->broken) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lp->ref);
        lua_getfield(L, -1, "broken");
        lua_error(L);
    }
}

/* Wait until a is complete or the deadline passes. Returns 1 if complete. */
int mpe__async_wait(lua_State *L, ajob *a, double deadline)
{
    if (a->complete) /* delivered by an earlier pump: nothing to wait for */
        return 1;
    mpe_sigwatch sw;
    mpe__sig_watch(L, &sw);
    for (;;) {
        mpe__sig_check(L, &sw);
        if (a->lp->state == P_TERMINATED && !a->complete)
            luaL_error(L, "mpe: the pool was terminated before this work finished");
        mpe__async_pump(L, a->lp);
        if (a->complete)
            return 1;
        mpe__async_raise_if_broken(L, a->lp);
        if (deadline >= 0 && mpe__proc_now() >= deadline)
            return 0;
        mpe__pool_wait(a->lp->p, deadline);
    }
}

/* Push an apply's return values; returns how many. */
static int push_applied(lua_State *L, const ajob *a)
{
    mpe__async_get(L, a, AF_RESULTS);
    if (a->nres == 1)
        return 1;
    int t = lua_gettop(L);
    luaL_checkstack(L, (int)a->nres + 2, "too many results");
    for (lua_Integer i = 1; i <= a->nres; i++)
        lua_rawgeti(L, t, i);
    lua_remove(L, t);
    return (int)a->nres;
}

void mpe__async_run_callbacks(lua_State *L, ajob *a)
{
    if (a->callbacks_run)
        return;
    a->callbacks_run = 1;
    mpe__async_get(L, a, AF_CB);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    int cb = lua_gettop(L);
    if (a->failed && (!a->collect || a->what == A_APPLY)) { /* an apply has no values to give */
        lua_getfield(L, cb, "error_callback");
        if (!lua_isnil(L, -1)) {
            mpe__async_get(L, a, AF_FIRST_ERROR);
            lua_call(L, 1, 0);
        } else
            lua_pop(L, 1);
    } else {
        lua_getfield(L, cb, "callback");
        if (!lua_isnil(L, -1)) {
            int nargs = a->what == A_APPLY ? push_applied(L, a)
                                           : (mpe__async_get(L, a, a->out ? AF_OUT : AF_RESULTS), 1);
            lua_call(L, nargs, 0);
        } else
            lua_pop(L, 1);
    }
    lua_settop(L, cb - 1);
}

/* ---- async results ------------------------------------------------------------------------ */

ajob *mpe__async_test(lua_State *L, int idx)
{
    return mpe__testudata(L, idx, ASYNC_MT);
}

/* The one checker of mpe.AsyncResult: the result at idx, raising if it is none. */
static ajob *toasync(lua_State *L, int idx, const char *fname)
{
    ajob *a = mpe__async_test(L, idx);
    if (!a)
        mpe__typeerror(L, idx, ASYNC_MT, fname);
    return a;
}

ajob *mpe__async_check(lua_State *L, const char *fname)
{
    ajob *a = toasync(L, 1, fname);
    if (!a->j)
        mpe__argerror(L, fname, 0, "this result was released");
    if (a->lp->owner != mpe__shm_self())
        mpe__argerror(L, fname, 0, "this result belongs to process %d; a forked child cannot use it",
                      (int)a->lp->owner);
    return a;
}

static int async_gc(lua_State *L)
{
    ajob *a = toasync(L, 1, "async:__gc");
    if (a->j && a->lp && a->lp->p && a->lp->owner == mpe__shm_self())
        mpe__job_release(a->lp->p, a->j);
    a->j = NULL;
    mpe__async_unbind(L, a);
    return 0;
}

/* Push the values of a completed job, or raise its error. */
int mpe__async_push_values(lua_State *L, ajob *a)
{
    if (a->failed && !a->collect) {
        mpe__async_get(L, a, AF_FIRST_ERROR);
        return lua_error(L);
    }
    if (a->what == A_APPLY && a->failed) { /* errors = "collect": nil and the error, not raised */
        lua_pushnil(L);
        mpe__async_get(L, a, AF_FIRST_ERROR);
        return 2;
    }
    if (a->what == A_APPLY)
        return push_applied(L, a);
    mpe__async_get(L, a, a->out ? AF_OUT : AF_RESULTS);
    if (a->out) { /* option out=: the array, filled by the workers */
        if (a->collect) {
            mpe__async_getfailures(L, a);
            return 2;
        }
        return 1;
    }
    lua_pushinteger(L, mpe__async_count(a));
    lua_setfield(L, -2, "n");
    if (a->collect) {
        mpe__async_getfailures(L, a);
        return 2;
    }
    return 1;
}

static int async_get(lua_State *L)
{
    ajob *a = mpe__async_check(L, "async:get");
    double t = mpe__opt_timeout(L, 2, "async:get");
    if (!mpe__async_wait(L, a, t < 0 ? -1 : mpe__proc_now() + t))
        return mpe__error_timeout(L, "waiting for the result", t);
    return mpe__async_push_values(L, a);
}

static int async_wait(lua_State *L)
{
    ajob *a = mpe__async_check(L, "async:wait");
    double t = mpe__opt_timeout(L, 2, "async:wait");
    lua_pushboolean(L, mpe__async_wait(L, a, t < 0 ? -1 : mpe__proc_now() + t));
    return 1;
}

static int async_ready(lua_State *L)
{
    ajob *a = mpe__async_check(L, "async:ready");
    if (!a->complete && a->lp->state != P_TERMINATED)
        mpe__async_pump(L, a->lp);
    lua_pushboolean(L, a->complete);
    return 1;
}

static int async_successful(lua_State *L)
{
    ajob *a = mpe__async_check(L, "async:successful");
    if (!a->complete && a->lp->state != P_TERMINATED)
        mpe__async_pump(L, a->lp);
    if (!a->complete)
        return mpe__argerror(L, "async:successful", 0, "the result is not ready yet");
    lua_pushboolean(L, !a->failed);
    return 1;
}

static int async_close(lua_State *L)
{
    ajob *a = toasync(L, 1, "async:__close");
    if (a->j && a->lp && (a->what == A_IMAP || a->what == A_IMAP_UNORDERED) && !a->complete) {
        if (a->lp->p && a->lp->owner == mpe__shm_self()) {
            mpe__async_progress(L, a, 1); /* a loop left early: end the bar's line */
            mpe__job_cancel(a->lp->p, a->j);
            mpe__async_unroute(L, a);
        }
    }
    return 0;
}

void mpe__async_open(lua_State *L)
{
    static const luaL_Reg async_methods[] = {{"get", async_get},
                                             {"wait", async_wait},
                                             {"ready", async_ready},
                                             {"successful", async_successful},
                                             {"cancel", mpe__async_cancel}, /* lmpe_wait.c */
                                             {NULL, NULL}};
    luaL_newmetatable(L, ASYNC_MT);
    lua_newtable(L);
    lua_pushvalue(L, -2); /* each one's upvalue: the checker's fast path */
    luaL_setfuncs(L, async_methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, async_gc, 1);
    lua_setfield(L, -2, "__gc");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, async_close, 1);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
}
