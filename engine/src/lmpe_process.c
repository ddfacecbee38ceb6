/* lmpe_process.c -- Lua bindings of process.c: mpe.process() and the
 * "mpe.Process" userdata (start, join, result, is_alive, terminate, kill).
 * SPDX-License-Identifier: MIT
 *
 * Lua values belonging to a process (target, arguments, name) live in a
 * weak-keyed table keyed by the userdata, so that the C struct holds no Lua
 * references. Started processes that were not yet reaped are also kept in a
 * strong table, so that dropping the last reference never collects (and so
 * joins or kills) a running child early. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "compat.h"
#include "err.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "proc.h"
#include "process.h"
#include "rand.h"
#include "sig.h"
#include "waitctl.h"

#define PROCESS_MT "mpe.Process"

typedef struct lprocess {
    mpe_process p;
    int daemon;
    int started;
    int closed; /* released by __gc/__close */
} lprocess;

static const char INFO_KEY = 'i'; /* registry: userdata -> { target, args, name } (weak keys) */
static const char LIVE_KEY = 'l'; /* registry: userdata -> true while started and unreaped */

/* Push the registry table stored under key, creating it (weak-keyed if weak). */
static void push_regtable(lua_State *L, const char *key, int weak)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    lua_newtable(L);
    if (weak) {
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
    }
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

/* Push field k of the info table of the process at idx. */
static void push_info(lua_State *L, int idx, const char *k)
{
    idx = lua_absindex(L, idx);
    push_regtable(L, &INFO_KEY, 1);
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    if (lua_type(L, -1) == LUA_TTABLE)
        lua_getfield(L, -1, k);
    else
        lua_pushnil(L);
    lua_replace(L, -3);
    lua_pop(L, 1);
}

static const char *process_name(lua_State *L, int idx)
{
    push_info(L, idx, "name");
    const char *name = lua_tostring(L, -1);
    lua_pop(L, 1); /* still referenced by the info table */
    return name ? name : "Process";
}

static void set_live(lua_State *L, int idx, int live)
{
    idx = lua_absindex(L, idx);
    push_regtable(L, &LIVE_KEY, 0);
    lua_pushvalue(L, idx);
    if (live)
        lua_pushboolean(L, 1);
    else
        lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* ---- checks ------------------------------------------------------------------------ */

int mpe__process_test(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, PROCESS_MT) != NULL;
}

/* The one checker of mpe.Process: the process at idx, raising if it is none. */
static lprocess *toprocess(lua_State *L, int idx, const char *fname)
{
    lprocess *lp = luaL_testudata(L, idx, PROCESS_MT);
    if (!lp)
        mpe__typeerror(L, idx, PROCESS_MT, fname);
    return lp;
}

static lprocess *checkprocess(lua_State *L, int idx, const char *method)
{
    char fname[48];
    snprintf(fname, sizeof fname, "process:%s", method);
    lprocess *lp = toprocess(L, idx, fname);
    if (lp->closed)
        mpe__argerror(L, fname, 0, "attempt to use a closed process (%s)", process_name(L, idx));
    return lp;
}

static lprocess *checkstarted(lua_State *L, const char *method)
{
    lprocess *lp = checkprocess(L, 1, method);
    if (!lp->started)
        luaL_error(L, "mpe: process:%s: %s was not started", method, process_name(L, 1));
    return lp;
}

/* Waiting for or signalling the child is for its creator only: in a copy
 * inherited through fork it is not our child, and its pid is not ours to use. */
static void checkowner(lua_State *L, lprocess *lp, const char *method)
{
    if (lp->p.creator != getpid())
        luaL_error(L,
                   "mpe: process:%s: %s (pid %d) was started by process %d; only that process "
                   "can wait for it or signal it",
                   method, process_name(L, 1), (int)lp->p.pid, (int)lp->p.creator);
}

static int is_callable(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TFUNCTION)
        return 1;
    if ((lua_type(L, idx) == LUA_TTABLE || lua_type(L, idx) == LUA_TUSERDATA) &&
        luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
        lua_pop(L, 1);
        return 1;
    }
    return 0;
}

/* ---- mpe.process ------------------------------------------------------------------- */

/* Copy args[1..n] (n = args.n if it is an integer, else #args) into a new
 * table with its n set: later changes to the caller's table do not reach the
 * child, and nils inside are kept. */
static void copy_args(lua_State *L, int src)
{
    lua_Integer n;
    lua_getfield(L, src, "n");
    if (lua_type(L, -1) == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0)
        n = lua_tointeger(L, -1);
    else
        n = (lua_Integer)lua_rawlen(L, src);
    lua_pop(L, 1);
    if (n > 1000000)
        mpe__argerror(L, "process", 0, "option 'args' has too many values (%d)", (int)n);
    lua_createtable(L, (int)n, 1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, src, (int)i);
        lua_rawseti(L, -2, (int)i);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
}

/* Parse an options table at 1 into target (stack top - 3), args, name, daemon. */
static int parse_options(lua_State *L, int *daemon)
{
    if (lua_gettop(L) > 1)
        mpe__argerror(L, "process", 0, "an options table takes no further arguments (got %d); put them in option 'args'",
                      lua_gettop(L) - 1);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!k || (strcmp(k, "target") && strcmp(k, "args") && strcmp(k, "name") &&
                   strcmp(k, "daemon"))) {
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            return mpe__argerror(L, "process", 0, "unknown option '%s'",
                                 luaL_tolstring(L, -1, NULL));
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, 1, "target"); /* 2 */
    if (!is_callable(L, 2))
        mpe__argerror(L, "process", 0, "option 'target' must be a function (or callable), got %s",
                      mpe__got(L, 2));
    lua_getfield(L, 1, "args"); /* 3 */
    if (lua_isnil(L, 3))
        lua_newtable(L);
    else if (lua_type(L, 3) != LUA_TTABLE)
        mpe__argerror(L, "process", 0, "option 'args' must be a table, got %s", mpe__got(L, 3));
    else
        copy_args(L, 3);
    lua_replace(L, 3);
    lua_getfield(L, 1, "name"); /* 4 */
    if (!lua_isnil(L, 4) && (lua_type(L, 4) != LUA_TSTRING || lua_rawlen(L, 4) == 0))
        mpe__argerror(L, "process", 0, "option 'name' must be a non-empty string, got %s",
                      lua_type(L, 4) == LUA_TSTRING ? "an empty string" : mpe__got(L, 4));
    lua_getfield(L, 1, "daemon"); /* 5 */
    if (!lua_isnil(L, 5) && lua_type(L, 5) != LUA_TBOOLEAN)
        mpe__argerror(L, "process", 0, "option 'daemon' must be a boolean, got %s", mpe__got(L, 5));
    *daemon = lua_toboolean(L, 5);
    lua_pop(L, 1);
    return 0;
}

/* mpe.process(fn, ...) or mpe.process{ target =, args =, name =, daemon = }. */
static int l_process(lua_State *L)
{
    int daemon = 0;
    int nargs = lua_gettop(L);
    if (nargs == 0)
        return mpe__argerror(L, "process", 1,
                             "must be a function or an options table, got no value");
    if (lua_type(L, 1) == LUA_TTABLE && !is_callable(L, 1)) {
        parse_options(L, &daemon); /* stack: opts, target, args, name */
    } else {
        if (!is_callable(L, 1))
            return mpe__argerror(L, "process", 1, "must be a function or an options table, got %s",
                                 mpe__got(L, 1));
        lua_createtable(L, nargs - 1, 1);
        for (int i = 2; i <= nargs; i++) {
            lua_pushvalue(L, i);
            lua_rawseti(L, -2, i - 1);
        }
        lua_pushinteger(L, nargs - 1);
        lua_setfield(L, -2, "n");
        lua_pushvalue(L, 1);
        lua_insert(L, -2);
        lua_pushnil(L); /* stack: ..., target, args, nil name */
    }
    /* Every process takes a number, named or not, as Python's do. */
    int number = mpe__proc_next_number();
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushfstring(L, "Process-%d", number);
    }
    int name = lua_gettop(L), args = name - 1, target = name - 2;

    lprocess *lp = lua_newuserdatauv(L, sizeof *lp, 0);
    memset(lp, 0, sizeof *lp);
    mpe__process_init(&lp->p);
    lp->daemon = daemon;
    luaL_getmetatable(L, PROCESS_MT);
    lua_setmetatable(L, -2);
    int ud = lua_gettop(L);

    push_regtable(L, &INFO_KEY, 1);
    lua_pushvalue(L, ud);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, target);
    lua_setfield(L, -2, "target");
    lua_pushvalue(L, args);
    lua_setfield(L, -2, "args");
    lua_pushvalue(L, name);
    lua_setfield(L, -2, "name");
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return 1;
}

/* ---- methods ----------------------------------------------------------------------- */

/* Reap this process's children that have exited, joined or not, as Python's
 * start() does: their zombie goes, their channel and pidfd are closed, and
 * they leave the table of live processes, so an unreferenced one can be
 * collected. What they sent stays for result(). Never waits. */
static void reap_finished(lua_State *L)
{
    push_regtable(L, &LIVE_KEY, 0);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        lprocess *lp = toprocess(L, lua_gettop(L), "process"); /* the table holds only processes */
        /* Clearing a field during lua_next is allowed; adding one is not. */
        if (lp && !lp->closed && lp->p.creator == getpid() && !lp->p.reaped &&
            mpe__process_join(&lp->p, 0, NULL, NULL) == MPE_WAIT_OK) {
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, -4);
        }
    }
    lua_pop(L, 1);
}

/* p:start() -> p. Forks; the child runs target(unpack(args)) and never returns here. */
static int l_start(lua_State *L)
{
    lprocess *lp = checkprocess(L, 1, "start");
    if (lp->started)
        mpe__argerror(L, "process:start", 0, "%s was already started", process_name(L, 1));
    lua_settop(L, 1);
    push_info(L, 1, "name");   /* 2 */
    push_info(L, 1, "target"); /* 3 */
    push_info(L, 1, "args");   /* 4 */
    int n = (int)luaL_len(L, 4);
    lua_getfield(L, 4, "n");
    if (lua_type(L, -1) == LUA_TNUMBER)
        n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n + LUA_MINSTACK, "too many arguments for the process");
    for (int i = 1; i <= n; i++)
        lua_rawgeti(L, 4, i);
    lua_remove(L, 4); /* stack: p, name, target, args... */

    reap_finished(L);
    mpe_err e;
    lp->started = 1; /* set before fork so the child's copy is "started" too */
    lp->p.handler = mpe__error_handler;
    pid_t pid = mpe__process_start(&lp->p, &e);
    if (pid < 0) {
        lp->started = 0;
        return luaL_error(L, "mpe: process:start: %s: %s", lua_tostring(L, 2), e.msg);
    }
    if (pid == 0) {
        mpe__proc_set_identity(lua_tostring(L, 2), 0);
        mpe__rand_reseed(L);
        mpe__process_run(L, &lp->p, n);
    }
    set_live(L, 1, 1);
    lua_settop(L, 1);
    return 1;
}

/* Join with timeout (< 0 forever); unregisters the process once reaped. */
static int join(lua_State *L, lprocess *lp, double timeout, const char *method)
{
    if (lp->p.reaped)
        return 1;
    checkowner(L, lp, method);
    mpe_err e;
    mpe_sigwatch sw;
    mpe__sig_watch(L, &sw);
    mpe_waitctl w = {mpe__sig_changed, &sw};
    int r = mpe__process_join(&lp->p, timeout, &w, &e);
    if (r == MPE_WAIT_INTERRUPTED)
        mpe__sig_check(L, &sw); /* raises: the child goes on, as after a timeout */
    if (r == MPE_WAIT_ERROR)
        return luaL_error(L, "mpe: process:%s: %s: %s", method, process_name(L, 1), e.msg);
    if (r == MPE_WAIT_OK)
        set_live(L, 1, 0);
    return r == MPE_WAIT_OK;
}

/* p:join([timeout]) -> true once the child exited, false on timeout. */
static int l_join(lua_State *L)
{
    lprocess *lp = checkstarted(L, "join");
    double timeout = mpe__opt_timeout(L, 2, "process:join");
    lua_pushboolean(L, join(L, lp, timeout, "join"));
    return 1;
}

/* p:result() -> the target's return values, or raises its failure. */
static int l_result(lua_State *L)
{
    lprocess *lp = checkstarted(L, "result");
    lua_settop(L, 1);
    join(L, lp, -1, "result");
    int n;
    int kind = mpe__process_outcome(L, &lp->p, &n);
    if (kind == MPE_PROCESS_RETURNED)
        return n;
    mpe_failure f;
    memset(&f, 0, sizeof f);
    f.pid = lp->p.pid;
    f.name = process_name(L, 1);
    if (kind == MPE_PROCESS_RAISED) {
        /* stack: p, message, traceback, value */
        f.kind = "error";
        f.message = lua_tostring(L, 2);
        f.traceback = lua_tostring(L, 3);
        f.value = lua_isnil(L, 4) ? 0 : 4;
        return mpe__error_raise(L, &f);
    }
    /* "exited with status 3 without returning", "killed by signal 9 (SIGKILL)" */
    char status[96], msg[160];
    mpe__process_describe(&lp->p, status, sizeof status);
    int code;
    mpe__process_exitcode(&lp->p, &code);
    snprintf(msg, sizeof msg, "%s%s", status, code >= 0 ? " without returning" : "");
    f.kind = "crash";
    f.message = msg;
    return mpe__error_raise(L, &f);
}

/* p:is_alive() -> boolean; also reaps an exited child. */
static int l_is_alive(lua_State *L)
{
    lprocess *lp = checkprocess(L, 1, "is_alive");
    int alive = 0;
    if (lp->started && !lp->p.reaped) {
        checkowner(L, lp, "is_alive");
        alive = join(L, lp, 0, "is_alive") == 0;
    }
    lua_pushboolean(L, alive);
    return 1;
}

static int send_signal(lua_State *L, int sig, const char *method)
{
    lprocess *lp = checkstarted(L, method);
    if (lp->p.reaped)
        return 0;
    checkowner(L, lp, method);
    mpe_err e;
    if (mpe__process_signal(&lp->p, sig, &e) != 0)
        return luaL_error(L, "mpe: process:%s: %s", method, e.msg);
    return 0;
}

/* p:terminate(): SIGTERM; p:kill(): SIGKILL. Neither waits. */
static int l_terminate(lua_State *L)
{
    return send_signal(L, SIGTERM, "terminate");
}

static int l_kill(lua_State *L)
{
    return send_signal(L, SIGKILL, "kill");
}

/* __gc and __close: end a child still running (see mpe__process_release). */
static int l_gc(lua_State *L)
{
    lprocess *lp = toprocess(L, 1, "process:__gc");
    if (lp->closed)
        return 0;
    lp->closed = 1;
    mpe__process_release(&lp->p, lp->daemon);
    set_live(L, 1, 0);
    return 0;
}

static int l_tostring(lua_State *L)
{
    lprocess *lp = toprocess(L, 1, "process:__tostring");
    const char *name = process_name(L, 1);
    int code;
    if (!lp->started)
        lua_pushfstring(L, "mpe.Process(%s, not started)", name);
    else if (mpe__process_exitcode(&lp->p, &code) == 0)
        lua_pushfstring(L, "mpe.Process(%s, pid %d, exitcode %d)", name, (int)lp->p.pid, code);
    else
        lua_pushfstring(L, "mpe.Process(%s, pid %d, started)", name, (int)lp->p.pid);
    return 1;
}

/* Fields first (pid, name, exitcode, daemon), then methods (upvalue 1). */
static int l_index(lua_State *L)
{
    lprocess *lp = toprocess(L, 1, "process:__index");
    const char *k = lua_tostring(L, 2);
    int code;
    if (k && lua_type(L, 2) == LUA_TSTRING) {
        if (strcmp(k, "pid") == 0) {
            if (lp->started)
                lua_pushinteger(L, (lua_Integer)lp->p.pid);
            else
                lua_pushnil(L);
            return 1;
        }
        if (strcmp(k, "name") == 0) {
            lua_pushstring(L, process_name(L, 1));
            return 1;
        }
        if (strcmp(k, "exitcode") == 0) {
            if (mpe__process_exitcode(&lp->p, &code) == 0)
                lua_pushinteger(L, code);
            else
                lua_pushnil(L);
            return 1;
        }
        if (strcmp(k, "daemon") == 0) {
            lua_pushboolean(L, lp->daemon);
            return 1;
        }
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

/* p.name = s (any time, as in Python; a running child keeps the name it
 * started with) and p.daemon = b (before start only). */
static int l_newindex(lua_State *L)
{
    lprocess *lp = toprocess(L, 1, "process:__newindex");
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    if (k && strcmp(k, "name") == 0) {
        if (lua_type(L, 3) != LUA_TSTRING || lua_rawlen(L, 3) == 0)
            return mpe__argerror(L, "process", 0, "name must be a non-empty string, got %s",
                                 lua_type(L, 3) == LUA_TSTRING ? "an empty string"
                                                               : mpe__typename(L, 3));
        push_regtable(L, &INFO_KEY, 1);
        lua_pushvalue(L, 1);
        lua_rawget(L, -2);
        lua_pushvalue(L, 3);
        lua_setfield(L, -2, "name");
        return 0;
    }
    if (k && strcmp(k, "daemon") == 0) {
        if (lua_type(L, 3) != LUA_TBOOLEAN)
            return mpe__argerror(L, "process", 0, "daemon must be a boolean, got %s",
                                 mpe__typename(L, 3));
        if (lp->started)
            return mpe__argerror(L, "process", 0, "cannot change daemon of %s after start",
                                 process_name(L, 1));
        lp->daemon = lua_toboolean(L, 3);
        return 0;
    }
    lua_pushvalue(L, 2);
    return mpe__argerror(L, "process", 0, "cannot set field '%s' (only name and daemon)",
                         luaL_tolstring(L, -1, NULL));
}

void mpe__open_process(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"start", l_start},         {"join", l_join},       {"result", l_result},
        {"is_alive", l_is_alive},   {"terminate", l_terminate}, {"kill", l_kill},
        {NULL, NULL},
    };
    static const luaL_Reg metamethods[] = {
        {"__gc", l_gc},
        {"__close", l_gc},
        {"__tostring", l_tostring},
        {"__newindex", l_newindex},
        {NULL, NULL},
    };
    luaL_newmetatable(L, PROCESS_MT);
    luaL_setfuncs(L, metamethods, 0);
    lua_createtable(L, 0, 8);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, l_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_process);
    lua_setfield(L, -2, "process");
}
