/* worker_jit.c -- the pool worker's chunk loop in Lua: loads
 * lua/mpe/jitloop.lua once per worker and runs batches of a chunk's items
 * through it (worker.c decides which chunks, and frames the results).
 * SPDX-License-Identifier: MIT
 *
 * Under LuaJIT a C loop calling the user's function through lua_call ends
 * every trace at the call; a Lua loop lets the trace cover it, with the packed
 * input and output reached through FFI pointers. Under Lua 5.4 there is no FFI
 * and the C loop measured faster (docs/BENCHMARKS.md), so it stays. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "worker_jit.h"

/* Lua modules embedded from lua/ at build time (cmake/embed.cmake). */
struct mpe__lua_module {
    const char *name, *chunkname, *code;
    size_t len;
};
extern const struct mpe__lua_module mpe__lua_modules[];

#if MPE_HAS_FFI
/* The clock the loop stamps items with, called through the FFI. */
static int64_t jit_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* lua_pcall'd: push the module's get function. */
static int load_loop(lua_State *L)
{
    const struct mpe__lua_module *m = mpe__lua_modules;
    while (m->name && strcmp(m->name, "mpe.jitloop") != 0)
        m++;
    if (!m->name)
        return luaL_error(L, "mpe.jitloop is not embedded");
    lua_getglobal(L, "require");
    lua_pushliteral(L, "ffi");
    lua_call(L, 1, 1);
    if (luaL_loadbuffer(L, m->code, m->len, m->chunkname) != LUA_OK)
        return lua_error(L);
    lua_insert(L, -2);
    int64_t (*now)(void) = jit_now;
    void *addr;
    memcpy(&addr, &now, sizeof addr); /* a function's address, as the FFI takes it */
    lua_pushlightuserdata(L, addr);
    lua_call(L, 2, 1);
    return 1;
}
#endif

int mpe__jit_loop(lua_State *L, const mpe_jit_run *r)
{
#if MPE_HAS_FFI
    static int ref = LUA_NOREF; /* the module's get, once per process; LUA_REFNIL: unavailable */
    if (ref == LUA_NOREF) {
        const char *env = getenv("MPE_JITLOOP");
        if (env && strcmp(env, "0") == 0)
            ref = LUA_REFNIL;
        else {
            lua_pushcfunction(L, load_loop);
            if (lua_pcall(L, 0, 1, 0) != LUA_OK || !lua_isfunction(L, -1)) {
                lua_pop(L, 1);
                ref = LUA_REFNIL;
            } else
                ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
    }
    if (ref == LUA_REFNIL)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_pushinteger(L, r->kind);
    lua_pushinteger(L, r->okind);
    lua_pushboolean(L, r->started != NULL);
    lua_call(L, 3, 1);
    if (lua_isfunction(L, -1))
        return 1;
    lua_pop(L, 1);
    return 0;
#else
    (void)L;
    (void)r;
    return 0;
#endif
}

/* Push an address as a number (exact: user addresses are below 2^47), or nil:
 * the trace recorder converts a number to an FFI pointer, a light userdata
 * not ("NYI: unsupported C type conversion" aborted every trace through the
 * loop's entry, which short batches make hot). */
static void push_addr(lua_State *L, const volatile void *p)
{
    if (p)
        lua_pushnumber(L, (lua_Number)(uintptr_t)p);
    else
        lua_pushnil(L);
}

uint32_t mpe__jit_items(lua_State *L, int loop, int fn, int odd, const mpe_jit_run *r,
                        uint32_t i, uint32_t j)
{
    int top = lua_gettop(L);
    lua_pushvalue(L, loop);
    lua_pushvalue(L, fn);
    lua_pushnumber(L, r->x0);
    lua_pushnumber(L, r->step);
    push_addr(L, r->in);
    push_addr(L, r->out);
    lua_pushnumber(L, (lua_Number)r->d);
    lua_pushnumber(L, (lua_Number)i);
    lua_pushnumber(L, (lua_Number)j);
    push_addr(L, r->item);
    push_addr(L, r->started);
    push_addr(L, r->tags);
    lua_pushvalue(L, odd);
    lua_call(L, 12, 2);
    uint32_t k = (uint32_t)lua_tonumber(L, top + 1);
    if (k >= j) {
        lua_settop(L, top);
        return j;
    }
    lua_remove(L, top + 1); /* leave item k's result */
    return k;
}
