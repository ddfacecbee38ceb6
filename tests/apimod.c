/* apimod.c -- a small Lua C module that uses the Lua API the way lpeg-like
 * modules do (userdata with a metatable and a uservalue, luaL_Buffer, calls
 * back into Lua, references, coroutines), for tests/spec/cmodule_spec.lua.
 * SPDX-License-Identifier: MIT
 *
 * Built as build/tests/apimod.so (cmake/tests.cmake) WITHOUT linking a Lua
 * library: every lua_* and luaL_* call below must be resolved by the program
 * that loads it. The `mpe` command links Lua statically; this checks that it
 * still exports the Lua API to modules (tests/cli/exports.sh checks that it
 * exports all of it). Test code only: never linked into mpe. */
#include <string.h>
#include "lauxlib.h"
#include "lua.h"

#define BOX_MT "apimod.box"

#if LUA_VERSION_NUM < 502 /* LuaJIT: the 5.1 names */
#define lua_rawlen(L, i) lua_objlen((L), (i))
/* The values yielded or returned are the coroutine's whole stack. */
#define RESUME(co, L, nres) (lua_resume((co), 0), *(nres) = lua_gettop(co), lua_status(co))
#else
#define RESUME(co, L, nres) lua_resume((co), (L), 0, (nres))
#endif

/* apimod.split(s, sep): the pieces of s between single-byte separators. */
static int m_split(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *sep = luaL_optstring(L, 2, ",");
    luaL_argcheck(L, strlen(sep) == 1, 2, "one byte expected");
    lua_newtable(L);
    int k = 0;
    const char *end = s + n, *p = s;
    for (;;) {
        const char *q = memchr(p, sep[0], (size_t)(end - p));
        lua_pushlstring(L, p, (size_t)((q ? q : end) - p));
        lua_rawseti(L, -2, ++k);
        if (!q)
            break;
        p = q + 1;
    }
    return 1;
}

/* apimod.join(t, sep): the values of t[1..#t] joined with sep, through a
 * luaL_Buffer and tostring() of each (as lpeg's string captures do). */
static int m_join(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t seplen;
    const char *sep = luaL_optlstring(L, 2, "", &seplen);
    int n = (int)lua_rawlen(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addlstring(&b, sep, seplen);
        lua_getglobal(L, "tostring");
        lua_rawgeti(L, 1, i);
        lua_call(L, 1, 1);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return 1;
}

/* apimod.fold(f, t, acc): acc = f(acc, v) for each value v of t, in
 * lua_next order (so f should not depend on the order). */
static int m_fold(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 3);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 3);
        lua_pushvalue(L, -3);
        lua_call(L, 2, 1);
        lua_replace(L, 3);
        lua_pop(L, 1);
    }
    return 1;
}

/* apimod.box(v): a userdata that keeps v in its environment/uservalue and
 * counts its reads; box:get() returns v, #box the number of reads. */
static int m_box(lua_State *L)
{
    luaL_checkany(L, 1);
#if LUA_VERSION_NUM >= 504
    lua_Integer *reads = lua_newuserdatauv(L, sizeof *reads, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
#else
    lua_Integer *reads = lua_newuserdata(L, sizeof *reads);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_setfenv(L, -2);
#endif
    *reads = 0;
    luaL_setmetatable(L, BOX_MT);
    return 1;
}

static int box_get(lua_State *L)
{
    lua_Integer *reads = luaL_checkudata(L, 1, BOX_MT);
    ++*reads;
#if LUA_VERSION_NUM >= 504
    lua_getiuservalue(L, 1, 1);
#else
    lua_getfenv(L, 1);
    lua_rawgeti(L, -1, 1);
#endif
    return 1;
}

static int box_len(lua_State *L)
{
    lua_Integer *reads = luaL_checkudata(L, 1, BOX_MT);
    lua_pushinteger(L, *reads);
    return 1;
}

/* apimod.ref(v): v stored with luaL_ref, read back and released. */
static int m_ref(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    int r = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r);
    luaL_unref(L, LUA_REGISTRYINDEX, r);
    return 1;
}

/* apimod.yields(f): runs f in a new coroutine from C and returns a table of
 * the first value of each yield, then of the return. */
static int m_yields(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_newtable(L);
    int k = 0, st, nres;
    do {
        st = RESUME(co, L, &nres);
        if (st != LUA_YIELD && st != 0)
            return luaL_error(L, "apimod.yields: %s", lua_tostring(co, -1));
        if (nres > 0) {
            lua_pushvalue(co, -nres); /* the first of the values */
            lua_xmove(co, L, 1);
            lua_rawseti(L, -2, ++k);
            lua_pop(co, nres);
        }
    } while (st == LUA_YIELD);
    return 1;
}

/* apimod.check(s): luaL_checkoption and luaL_gsub. */
static int m_check(lua_State *L)
{
    static const char *const opts[] = {"upper", "dashes", NULL};
    int o = luaL_checkoption(L, 1, NULL, opts);
    const char *s = luaL_checkstring(L, 2);
    if (o == 0) {
        lua_getglobal(L, "string");
        lua_getfield(L, -1, "upper");
        lua_pushvalue(L, 2);
        lua_call(L, 1, 1);
    } else {
        luaL_gsub(L, s, " ", "-");
    }
    return 1;
}

static const luaL_Reg box_meth[] = {{"get", box_get}, {"__len", box_len}, {NULL, NULL}};
static const luaL_Reg funcs[] = {{"split", m_split}, {"join", m_join}, {"fold", m_fold},
                                 {"box", m_box},     {"ref", m_ref},   {"yields", m_yields},
                                 {"check", m_check}, {NULL, NULL}};

__attribute__((visibility("default"))) int luaopen_apimod(lua_State *L)
{
    if (luaL_newmetatable(L, BOX_MT)) {
        luaL_setfuncs(L, box_meth, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_setfuncs(L, funcs, 0);
    return 1;
}
