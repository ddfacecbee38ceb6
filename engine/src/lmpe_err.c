/* lmpe_err.c -- what every binding file shares: mpe's error objects (kind,
 * index, worker, message, traceback; rendered by __tostring), the message
 * handler that makes them, and the helpers of misuse messages (argument
 * numbers, bad values shown as given, timeouts).
 * SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "compat.h"
#include "lmpe_err.h"
#include "proc.h"
#include "ranks.h"

#define ERROR_MT "mpe.Error"

/* ---- error objects --------------------------------------------------------- */

static int error_tostring(lua_State *L)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_getfield(L, 1, "message");
    const char *msg = lua_tostring(L, -1);
    lua_getfield(L, 1, "index");
    lua_Integer index = lua_tointeger(L, -1);
    lua_getfield(L, 1, "worker");
    lua_Integer worker = lua_tointeger(L, -1);
    lua_getfield(L, 1, "pid");
    lua_Integer pid = lua_tointeger(L, -1);
    lua_getfield(L, 1, "name");
    const char *name = lua_tostring(L, -1);
    lua_getfield(L, 1, "traceback");
    const char *tb = lua_tostring(L, -1);
    lua_getfield(L, 1, "rank");
    int has_rank = lua_isinteger(L, -1);
    lua_Integer rank = lua_tointeger(L, -1);
    char head[160];
    if (index > 0 && worker > 0 && has_rank)
        snprintf(head, sizeof head, "mpe: item %lld failed in worker %lld (pid %lld, rank %lld): ",
                 (long long)index, (long long)worker, (long long)pid, (long long)rank);
    else if (index > 0 && worker > 0)
        snprintf(head, sizeof head, "mpe: item %lld failed in worker %lld (pid %lld): ",
                 (long long)index, (long long)worker, (long long)pid);
    else if (worker > 0 && has_rank)
        snprintf(head, sizeof head, "mpe: task failed in worker %lld (pid %lld, rank %lld): ",
                 (long long)worker, (long long)pid, (long long)rank);
    else if (index > 0)
        snprintf(head, sizeof head, "mpe: item %lld failed: ", (long long)index);
    else if (worker > 0)
        snprintf(head, sizeof head, "mpe: task failed in worker %lld (pid %lld): ", (long long)worker,
                 (long long)pid);
    else if (name && pid > 0)
        snprintf(head, sizeof head, "mpe: %s (pid %lld) failed: ", name, (long long)pid);
    else
        snprintf(head, sizeof head, "%s", (msg && strncmp(msg, "mpe: ", 5) == 0) ? "" : "mpe: ");
    luaL_addstring(&b, head);
    if (msg && *head && strncmp(msg, "mpe: ", 5) == 0)
        msg += 5; /* "mpe: item 3 failed ...: timeout: ..." rather than a second "mpe: " */
    luaL_addstring(&b, msg ? msg : "(no message)");
    if (tb && *tb) {
        luaL_addchar(&b, '\n');
        luaL_addstring(&b, tb);
    }
    luaL_pushresult(&b);
    return 1;
}

void mpe__open_errors(lua_State *L)
{
    if (luaL_newmetatable(L, ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
    }
}

static void setfield_str(lua_State *L, const char *k, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

static void setfield_int(lua_State *L, const char *k, lua_Integer v)
{
    if (v > 0) {
        lua_pushinteger(L, v);
        lua_setfield(L, -2, k);
    }
}

void mpe__error_push(lua_State *L, const mpe_failure *f)
{
    int value = f->value ? lua_absindex(L, f->value) : 0;
    lua_createtable(L, 0, 8);
    setfield_str(L, "kind", f->kind);
    setfield_int(L, "index", f->index);
    /* Under MPI a pool worker may run on another rank: say which. */
    int rank = mpe__proc_rank();
    if (mpe__ranks && f->pid > 0)
        mpe__ranks->where(f->pid, &rank);
    setfield_int(L, "pid", f->pid);
    setfield_int(L, "worker", f->worker);
    if (mpe__ranks && f->worker > 0) {
        lua_pushinteger(L, rank);
        lua_setfield(L, -2, "rank");
    }
    setfield_str(L, "name", f->name);
    setfield_str(L, "message", f->message ? f->message : "(no message)");
    setfield_str(L, "traceback", f->traceback);
    if (value) {
        lua_pushvalue(L, value);
        lua_setfield(L, -2, "value");
    }
    mpe__open_errors(L);
    lua_setmetatable(L, -2);
}

int mpe__error_raise(lua_State *L, const mpe_failure *f)
{
    mpe__error_push(L, f);
    return lua_error(L);
}

int mpe__error_timeout(lua_State *L, const char *what, double seconds)
{
    char msg[256];
    snprintf(msg, sizeof msg, "mpe: timeout: %s (after %g s)", what, seconds);
    mpe_failure f = {.kind = "timeout", .message = msg};
    return mpe__error_raise(L, &f);
}

int mpe__error_handler(lua_State *L)
{
    if (lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, ERROR_MT);
        int is_error = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (is_error)
            return 1;
    }
    lua_createtable(L, 0, 3);
    if (lua_type(L, 1) == LUA_TSTRING) {
        lua_pushvalue(L, 1);
    } else {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            ; /* its own string form */
        else {
            if (lua_gettop(L) > 2)
                lua_pop(L, 1);
            lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        }
        lua_pushvalue(L, 1);
        lua_setfield(L, 2, "value");
    }
    lua_setfield(L, 2, "message");
    luaL_traceback(L, L, NULL, 1);
    lua_setfield(L, 2, "traceback");
    lua_settop(L, 2);
    return 1;
}

/* ---- shared binding helpers --------------------------------------------------- */

const char *mpe__typename(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TUSERDATA && luaL_getmetafield(L, idx, "__name") != LUA_TNIL) {
        const char *name = lua_tostring(L, -1);
        lua_pop(L, 1);
        if (name && strncmp(name, "mpe.", 4) == 0)
            return name;
    }
    return luaL_typename(L, idx);
}

int mpe__fail(lua_State *L, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lua_pushstring(L, msg);
    lua_error(L);
    __builtin_unreachable(); /* lua_error does not return */
}

const char *mpe__got(lua_State *L, int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        if (lua_tonumber(L, idx) != lua_tonumber(L, idx))
            return "nan"; /* printf says "-nan" or "nan" depending on the sign bit */
        return luaL_tolstring(L, idx, NULL);
    case LUA_TSTRING:
        return lua_pushfstring(L, "\"%s\"", lua_tostring(L, idx));
    default:
        return mpe__typename(L, idx);
    }
}

/* The number a message gives the argument at stack index idx of fname. */
static int argno(const char *fname, int idx)
{
    return strchr(fname, ':') ? idx - 1 : idx;
}

int mpe__argerror(lua_State *L, const char *fname, int idx, const char *fmt, ...)
{
    char detail[400], subject[32] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (idx > 0) {
        int n = argno(fname, idx);
        if (n == 0)
            snprintf(subject, sizeof subject, "self ");
        else
            snprintf(subject, sizeof subject, "argument %d ", n);
    }
    mpe__fail(L, "mpe: %s: %s%s", fname, subject, detail);
}

int mpe__typeerror(lua_State *L, int idx, const char *tname, const char *fname)
{
    mpe__argerror(L, fname, idx, "must be an %s%s, got %s", tname,
                         argno(fname, idx) == 0 ? " (call methods with a colon)" : "",
                         mpe__typename(L, idx));
}

void *mpe__testudata(lua_State *L, int idx, const char *tname)
{
    void *u = lua_touserdata(L, idx);
    if (u && lua_getmetatable(L, idx)) {
        int same = lua_rawequal(L, -1, lua_upvalueindex(1)); /* 0 if there is no upvalue */
        lua_pop(L, 1);
        if (same)
            return u;
    }
    return luaL_testudata(L, idx, tname);
}

double mpe__opt_timeout(lua_State *L, int arg, const char *fname)
{
    if (lua_isnoneornil(L, arg))
        return -1;
    if (lua_type(L, arg) != LUA_TNUMBER)
        mpe__argerror(L, fname, arg, "(timeout) must be a number of seconds, got "
                      "%s", mpe__got(L, arg));
    double t = lua_tonumber(L, arg);
    if (!(t >= 0) || isinf(t) || t > 1e9)
        mpe__argerror(L, fname, arg, "(timeout) must be between 0 and 1e9 seconds, got %s",
                      mpe__got(L, arg));
    return t;
}
