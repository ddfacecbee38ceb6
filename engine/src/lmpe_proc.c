/* lmpe_proc.c -- Lua bindings of proc.c: mpe.cpu_count(), mpe.current_process(),
 * mpe.now() and mpe.isatty().
 * SPDX-License-Identifier: MIT */
#include <math.h>
#include <unistd.h>
#include "compat.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "proc.h"
#include "ranks.h"

/* mpe.cpu_count() -> the CPUs this process may use (affinity and cgroup quota). */
static int l_cpu_count(lua_State *L)
{
    lua_pushinteger(L, mpe__proc_cpu_count());
    return 1;
}

/* mpe.current_process() -> { name = ..., pid = ..., rank = ..., worker = slot or nil }.
 * A fresh table each call: the caller may keep or change it freely. */
static int l_current_process(lua_State *L)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, mpe__proc_name());
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, (lua_Integer)getpid());
    lua_setfield(L, -2, "pid");
    lua_pushinteger(L, mpe__proc_rank());
    lua_setfield(L, -2, "rank");
    if (mpe__proc_worker() > 0) {
        lua_pushinteger(L, mpe__proc_worker());
        lua_setfield(L, -2, "worker");
    }
    return 1;
}

/* mpe.world() -> { rank = r, size = n }: this process's MPI rank and the
 * number of ranks; { rank = 0, size = 1 } when not started by an MPI launcher. */
static int l_world(lua_State *L)
{
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, mpe__proc_rank());
    lua_setfield(L, -2, "rank");
    lua_pushinteger(L, mpe__ranks ? mpe__ranks->size : 1);
    lua_setfield(L, -2, "size");
    return 1;
}

/* mpe.now() -> seconds of a monotonic clock (CLOCK_MONOTONIC), as a float:
 * for measuring intervals; its origin is arbitrary. */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)mpe__proc_now());
    return 1;
}

/* mpe.isatty(fd) -> whether descriptor fd (0 stdin, 1 stdout, 2 stderr) is a
 * terminal: progress bars draw only on one unless forced. */
static int l_isatty(lua_State *L)
{
    lua_Number d = lua_tonumber(L, 1);
    if (lua_type(L, 1) != LUA_TNUMBER || d != floor(d))
        return mpe__argerror(L, "isatty", 1, "must be a descriptor number, got %s",
                             lua_type(L, 1) == LUA_TNUMBER ? luaL_tolstring(L, 1, NULL)
                                                        : mpe__typename(L, 1));
    lua_pushboolean(L, d >= 0 && d <= 1 << 20 && isatty((int)d));
    return 1;
}

void mpe__open_proc(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"cpu_count", l_cpu_count},
        {"current_process", l_current_process},
        {"now", l_now},
        {"world", l_world},
        {"isatty", l_isatty},
        {NULL, NULL},
    };
    luaL_setfuncs(L, funcs, 0);
}
