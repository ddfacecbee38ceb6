/* rand.c -- random streams of forked children: each child reseeds math.random
 * from its parent's stream and its place among the parent's children.
 * SPDX-License-Identifier: MIT
 *
 * fork copies the parent's generator, so without this every worker and every
 * mpe.process would draw the parent's next numbers (Python reseeds its random
 * module after fork for the same reason). The child draws one number from the
 * state it inherited, then seeds with that number and its ordinal (the Nth
 * child this parent forked, counted afresh in every process): siblings get
 * distinct streams, and a parent that called math.randomseed(x) gets the same
 * streams again on every run, since both inputs are then fixed. */
#include "compat.h"
#include "proc.h"
#include "rand.h"

/* Protected: upvalue-free; stack is random, randomseed (the math library's). */
static int reseed(lua_State *L)
{
    uint64_t nth = mpe__proc_ordinal();
#if LUA_VERSION_NUM >= 504
    /* math.random(0): 64 random bits; randomseed(n1, n2) takes both. */
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    lua_call(L, 1, 1);
    lua_Integer x = lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, 2);
    lua_pushinteger(L, x);
    lua_pushinteger(L, (lua_Integer)nth);
    lua_call(L, 2, 0);
#else
    /* LuaJIT: math.random() is a double in [0, 1) and randomseed takes one
     * number. Pack 32 of the drawn bits and the ordinal into an integer that
     * a double holds exactly (below 2^53). */
    lua_pushvalue(L, 1);
    lua_call(L, 0, 1);
    double bits = (double)(uint64_t)(lua_tonumber(L, -1) * 4294967296.0);
    lua_pop(L, 1);
    lua_pushvalue(L, 2);
    lua_pushnumber(L, bits + (double)(nth % 2097152) * 4294967296.0);
    lua_call(L, 1, 0);
#endif
    return 0;
}

void mpe__rand_reseed(lua_State *L)
{
    int top = lua_gettop(L);
    /* The standard library's functions, wherever the script has put its own:
     * a math table without them (a host that did not open it) is left alone. */
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (lua_type(L, -1) == LUA_TTABLE)
        lua_getfield(L, -1, "math");
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_pushcfunction(L, reseed);
        lua_getfield(L, -2, "random");
        lua_getfield(L, -3, "randomseed");
        if (lua_iscfunction(L, -1) && lua_iscfunction(L, -2))
            lua_pcall(L, 2, 0, 0); /* cannot fail with the stock functions; nothing to report if it does */
    }
    lua_settop(L, top);
}
