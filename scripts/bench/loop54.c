/* loop54.c -- the worker's chunk loop under Lua 5.4, two ways: the C loop
 * (worker.c: lua_call of the function per item, each result read back and
 * packed) against a Lua loop (lua/mpe/jitloop.lua's idea without the FFI:
 * Lua calls the function for a batch of items into a table, C reads the
 * table and packs). Prints CPU ns per item of each, five rounds; docs/BENCHMARKS.md has the
 * figures that kept the C loop under Lua 5.4.
 *   cc -O2 -I/usr/include/lua5.4 scripts/bench/loop54.c -llua5.4 -o loop54 && ./loop54 [N]
 * SPDX-License-Identifier: MIT */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BATCH 4096

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); /* CPU time: steadier on a loaded machine */
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The packed result a worker sends: int64 for an integer, else the double's bits. */
static void pack(lua_State *L, int idx, int64_t *out)
{
    if (lua_isinteger(L, idx))
        *out = (int64_t)lua_tointeger(L, idx);
    else {
        double d = (double)lua_tonumber(L, idx);
        *out = (int64_t)d;
    }
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    int64_t *res = malloc((size_t)n * sizeof *res);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    /* 1: the function; 2: the Lua loop */
    if (luaL_dostring(L, "return function(x) return x * x end") != LUA_OK ||
        luaL_dostring(L, "return function(fn, t, i, j) for k = i, j - 1 do t[k - i + 1] = fn(k + 1) end end") != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        return 1;
    }
    for (int round = 0; round < 5; round++) {
        double t0 = now();
        for (long k = 0; k < n; k++) { /* the C loop */
            lua_pushvalue(L, 1);
            lua_pushinteger(L, k + 1);
            lua_call(L, 1, 1);
            pack(L, -1, &res[k]);
            lua_pop(L, 1);
        }
        double t1 = now();
        int64_t check1 = res[n - 1];
        lua_createtable(L, BATCH, 0);
        int t = lua_gettop(L);
        for (long i = 0; i < n; i += BATCH) { /* the Lua loop, in batches */
            long j = i + BATCH < n ? i + BATCH : n;
            lua_pushvalue(L, 2);
            lua_pushvalue(L, 1);
            lua_pushvalue(L, t);
            lua_pushinteger(L, i);
            lua_pushinteger(L, j);
            lua_call(L, 4, 0);
            for (long k = i; k < j; k++) {
                lua_rawgeti(L, t, k - i + 1);
                pack(L, -1, &res[k]);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
        double t2 = now();
        printf("C loop %.1f ns/item, Lua loop %.1f ns/item (check %lld %lld)\n", (t1 - t0) / n * 1e9,
               (t2 - t1) / n * 1e9, (long long)check1, (long long)res[n - 1]);
    }
    lua_close(L);
    free(res);
    return 0;
}
