/* test_compat.c -- the Lua 5.4 API as the engine uses it (compat.h), and the
 * embedding API of engine.c (mpe_new, mpe_dofile, mpe_dostring, mpe_errmsg).
 * SPDX-License-Identifier: MIT
 *
 * Built against Lua 5.4 these check the real API; built with MPE_LUA=luajit
 * they check compat.c's versions against the same expectations. */
#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include "mpe.h"
#include "compat.h"
#include "tharness.h"

static lua_State *newstate(void)
{
    lua_State *L = luaL_newstate();
    MPE_ASSERT(L != NULL);
    luaL_openlibs(L);
    return L;
}

/* Call f(L) protected; returns the error message, or NULL if it did not fail. */
static const char *pcall_msg(lua_State *L, lua_CFunction f)
{
    lua_pushcfunction(L, f);
    if (lua_pcall(L, 0, 0, 0) == LUA_OK)
        return NULL;
    return lua_tostring(L, -1);
}

static void test_pushfstring(void)
{
    lua_State *L = newstate();
    const char *s = lua_pushfstring(L, "%s|%d|%c|%%|%I|%I", "str", -42, 'x',
                                    (LUAI_UACINT)9007199254740993LL, (LUAI_UACINT)LUA_MININTEGER);
    MPE_ASSERT_STREQ(s, "str|-42|x|%|9007199254740993|-9223372036854775808");
    MPE_ASSERT_STREQ(lua_tostring(L, -1), s);
    s = lua_pushfstring(L, "[%U%U%U%U]", (long)'A', (long)0xE9, (long)0x20AC, (long)0x1F600);
    MPE_ASSERT_STREQ(s, "[A\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80]");
    s = lua_pushfstring(L, "%f", (lua_Number)2.5);
    MPE_ASSERT_STREQ(s, "2.5");
    s = lua_pushfstring(L, "no directive");
    MPE_ASSERT_STREQ(s, "no directive");
    /* Many directives: the pieces are joined as they go. */
    s = lua_pushfstring(L, "%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d", 1, 2, 3, 4, 5, 6, 7, 8,
                        9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5);
    MPE_ASSERT_STREQ(s, "1234567890123456789012345");
    lua_close(L);
}

static int raise_formatted(lua_State *L)
{
    return luaL_error(L, "item %I of %d: %s", (LUAI_UACINT)17, 20, "boom");
}

static void test_error_format(void)
{
    lua_State *L = newstate();
    MPE_ASSERT_STREQ(pcall_msg(L, raise_formatted), "item 17 of 20: boom");
    lua_close(L);
}

static void test_isinteger(void)
{
    lua_State *L = newstate();
    lua_pushinteger(L, 3);
    MPE_ASSERT(lua_isinteger(L, -1));
    lua_pushstring(L, "3");
    MPE_ASSERT(!lua_isinteger(L, -1));
    lua_pushnumber(L, 2.5);
    MPE_ASSERT(!lua_isinteger(L, -1));
    lua_pushnumber(L, NAN);
    MPE_ASSERT(!lua_isinteger(L, -1));
    lua_pushnumber(L, HUGE_VAL);
    MPE_ASSERT(!lua_isinteger(L, -1));
    lua_pushnumber(L, -0.0);
    MPE_ASSERT(!lua_isinteger(L, -1));
#if !MPE_HAS_INTEGERS
    /* LuaJIT: an integral double within int64 counts, one past it does not. */
    lua_pushnumber(L, 3.0);
    MPE_ASSERT(lua_isinteger(L, -1));
    lua_pushnumber(L, 9223372036854775808.0);
    MPE_ASSERT(!lua_isinteger(L, -1));
    lua_pushnumber(L, -9223372036854775808.0);
    MPE_ASSERT(lua_isinteger(L, -1));
#else
    lua_pushnumber(L, 3.0);
    MPE_ASSERT(!lua_isinteger(L, -1)); /* a float, even if integral */
#endif
    lua_close(L);
}

static void test_absindex_rawlen(void)
{
    lua_State *L = newstate();
    lua_settop(L, 0);
    lua_createtable(L, 0, 0);
    lua_pushinteger(L, 1);
    MPE_ASSERT_EQ(lua_absindex(L, -1), 2);
    MPE_ASSERT_EQ(lua_absindex(L, -2), 1);
    MPE_ASSERT_EQ(lua_absindex(L, 2), 2);
    MPE_ASSERT_EQ(lua_absindex(L, LUA_REGISTRYINDEX), LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    for (int i = 1; i <= 5; i++) {
        lua_pushinteger(L, i);
        lua_rawseti(L, 1, i);
    }
    MPE_ASSERT_EQ(lua_rawlen(L, 1), 5);
    MPE_ASSERT_EQ(luaL_len(L, 1), 5);
    lua_close(L);
}

static void test_tolstring(void)
{
    lua_State *L = newstate();
    size_t n;
    lua_pushboolean(L, 1);
    MPE_ASSERT_STREQ(luaL_tolstring(L, -1, &n), "true");
    MPE_ASSERT_EQ(n, 4);
    lua_pushnil(L);
    MPE_ASSERT_STREQ(luaL_tolstring(L, -1, NULL), "nil");
    lua_pushinteger(L, 12);
    MPE_ASSERT_STREQ(luaL_tolstring(L, -1, NULL), "12");
    MPE_ASSERT_EQ(lua_type(L, -2), LUA_TNUMBER); /* the original is left alone */
    MPE_ASSERT(luaL_dostring(L, "return setmetatable({}, {__tostring = function() return 'obj' end})") == 0);
    MPE_ASSERT_STREQ(luaL_tolstring(L, -1, NULL), "obj");
    lua_createtable(L, 0, 0);
    MPE_ASSERT(strncmp(luaL_tolstring(L, -1, NULL), "table: ", 7) == 0);
    lua_newuserdatauv(L, 8, 0);
    luaL_newmetatable(L, "mpe.Test");
    lua_setmetatable(L, -2);
    MPE_ASSERT(strncmp(luaL_tolstring(L, -1, NULL), "mpe.Test: ", 10) == 0);
    lua_close(L);
}

static void test_newmetatable_name(void)
{
    lua_State *L = newstate();
    MPE_ASSERT_EQ(luaL_newmetatable(L, "mpe.Thing"), 1);
    lua_getfield(L, -1, "__name");
    MPE_ASSERT_STREQ(lua_tostring(L, -1), "mpe.Thing");
    lua_pop(L, 2);
    MPE_ASSERT_EQ(luaL_newmetatable(L, "mpe.Thing"), 0); /* already there */
    lua_close(L);
}

static void test_pushstring_returns(void)
{
    lua_State *L = newstate();
    const char *s = lua_pushstring(L, "abc");
    MPE_ASSERT_STREQ(s, "abc");
    MPE_ASSERT(s == lua_tostring(L, -1));
    s = lua_pushlstring(L, "a\0b", 3);
    MPE_ASSERT(s != NULL && memcmp(s, "a\0b", 3) == 0);
    MPE_ASSERT(lua_pushstring(L, NULL) == NULL);
    MPE_ASSERT(lua_isnil(L, -1));
    lua_close(L);
}

static int open_counter(lua_State *L)
{
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, 7);
    lua_setfield(L, -2, "seven");
    return 1;
}

static void test_requiref(void)
{
    lua_State *L = newstate();
    int top = lua_gettop(L);
    luaL_requiref(L, "counter", open_counter, 1);
    MPE_ASSERT_EQ(lua_gettop(L), top + 1);
    MPE_ASSERT_EQ(lua_type(L, -1), LUA_TTABLE);
    const void *first = lua_topointer(L, -1);
    luaL_requiref(L, "counter", open_counter, 0); /* loaded once */
    MPE_ASSERT(lua_topointer(L, -1) == first);
    MPE_ASSERT(luaL_dostring(L, "return require('counter').seven + counter.seven") == 0);
    MPE_ASSERT_EQ(lua_tointeger(L, -1), 14);
    lua_close(L);
}

/* The embedding API: errors, traceback, arg, and an engine that stays usable. */
static void test_engine(void)
{
    mpe_engine *e = mpe_new(NULL);
    MPE_ASSERT(e != NULL);
    MPE_ASSERT_STREQ(mpe_errmsg(e), "");
    MPE_ASSERT_EQ(mpe_dostring(e, "x = 40 + 2", "=setup"), 0);
    MPE_ASSERT_EQ(mpe_dostring(e, "error('bad ' .. x)", "=chunk"), -1);
    MPE_ASSERT_CONTAINS(mpe_errmsg(e), "chunk:1: bad 42");
    MPE_ASSERT_CONTAINS(mpe_errmsg(e), "stack traceback:");
    MPE_ASSERT_EQ(mpe_dostring(e, "x = = 1", "=syntax"), -1);
    MPE_ASSERT_CONTAINS(mpe_errmsg(e), "syntax:1:");
    MPE_ASSERT(strstr(mpe_errmsg(e), "traceback") == NULL); /* as lua.c: none for syntax */
    MPE_ASSERT_EQ(mpe_dostring(e, "error(setmetatable({}, {__tostring = function() return 'E!' end}))",
                               NULL),
                  -1);
    MPE_ASSERT(strncmp(mpe_errmsg(e), "E!\n", 3) == 0);
    MPE_ASSERT_EQ(mpe_dostring(e, "error({})", NULL), -1);
    MPE_ASSERT(strncmp(mpe_errmsg(e), "(error object is a table value)", 31) == 0);
    MPE_ASSERT_EQ(mpe_dostring(e, "assert(x == 42 and require('mpe').version)", NULL), 0);
    MPE_ASSERT_STREQ(mpe_errmsg(e), "");
    MPE_ASSERT_EQ(lua_gettop(mpe_state(e)), 0); /* nothing left behind */

    char path[] = "/tmp/mpe-test-compat-XXXXXX";
    int fd = mkstemp(path);
    MPE_ASSERT(fd >= 0);
    static const char script[] = "result = table.concat({arg[0] ~= nil and 'p' or '-', ...}, ',')"
                                 " .. ',' .. #arg";
    MPE_ASSERT(write(fd, script, sizeof script - 1) == (ssize_t)(sizeof script - 1));
    close(fd);
    char *argv[] = {"a", "b c", NULL};
    int rc = mpe_dofile(e, path, 2, argv);
    unlink(path);
    MPE_ASSERT_EQ(rc, 0);
    lua_State *L = mpe_state(e);
    lua_getglobal(L, "result");
    MPE_ASSERT_STREQ(lua_tostring(L, -1), "p,a,b c,2");
    lua_pop(L, 1);
    MPE_ASSERT_EQ(mpe_dofile(e, "/nonexistent/x.lua", 0, NULL), -1);
    MPE_ASSERT_CONTAINS(mpe_errmsg(e), "cannot open /nonexistent/x.lua");
    MPE_ASSERT_EQ(mpe_dofile(e, "/tmp", 0, NULL), -1);
    MPE_ASSERT_CONTAINS(mpe_errmsg(e), "cannot open /tmp");
    MPE_ASSERT_EQ(lua_gettop(L), 0);
    mpe_close(e);
    mpe_close(NULL);
}

MPE_TEST_MAIN(MPE_TEST(test_pushfstring), MPE_TEST(test_error_format), MPE_TEST(test_isinteger),
              MPE_TEST(test_absindex_rawlen), MPE_TEST(test_tolstring),
              MPE_TEST(test_newmetatable_name), MPE_TEST(test_pushstring_returns),
              MPE_TEST(test_requiref), MPE_TEST(test_engine))
