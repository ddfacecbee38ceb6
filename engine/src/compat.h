/* compat.h -- the Lua headers, and the few Lua 5.4 API names LuaJIT 2.1 lacks.
 * SPDX-License-Identifier: MIT
 *
 * The engine is written against the Lua 5.4 API. When built with
 * -DMPE_LUA=luajit, the definitions below map what differs; nothing else in
 * the engine tests MPE_LUAJIT except through the MPE_HAS_* flags here. */
#ifndef MPE_COMPAT_H
#define MPE_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#ifdef MPE_LUAJIT
#include <stdarg.h>
#include <luajit.h>
/* LuaJIT numbers are all doubles: there is no integer subtype to keep. */
#define MPE_HAS_INTEGERS 0
/* Functions get their globals from an environment, not an _ENV upvalue. */
#define MPE_HAS_ENV_UPVALUE 0
/* The FFI library (ffi): the worker's chunk loop runs in Lua through it. */
#define MPE_HAS_FFI 1
#define LUA_OK 0
#define lua_rawlen(L, i) lua_objlen((L), (i))
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata((L), (sz))
#define luaL_len(L, i) ((lua_Integer)lua_objlen((L), (i)))
#define lua_pushglobaltable(L) lua_pushvalue((L), LUA_GLOBALSINDEX)
int mpe__compat_isinteger(lua_State *L, int idx);
/* The same for a number: integral, fits an int64, not -0. */
int mpe__compat_numisint(double n);
#define lua_isinteger(L, i) mpe__compat_isinteger((L), (i))
int mpe__compat_absindex(lua_State *L, int idx);
#define lua_absindex(L, i) mpe__compat_absindex((L), (i))
int mpe__compat_dump(lua_State *L, lua_Writer w, void *ud, int strip);
#define lua_dump(L, w, ud, strip) mpe__compat_dump((L), (w), (ud), (strip))
#define lua_rawgetp(L, idx, p) (lua_pushlightuserdata((L), (void *)(p)), lua_rawget((L), ((idx) < 0 && (idx) > LUA_REGISTRYINDEX) ? (idx) - 1 : (idx)), lua_type((L), -1))
#define lua_rawsetp(L, idx, p) (lua_pushlightuserdata((L), (void *)(p)), lua_insert((L), -2), lua_rawset((L), ((idx) < 0 && (idx) > LUA_REGISTRYINDEX) ? (idx) - 1 : (idx)))
#define luaL_tolstring(L, i, len) mpe__compat_tolstring((L), (i), (len))
const char *mpe__compat_tolstring(lua_State *L, int idx, size_t *len);
/* Lua 5.4 also sets __name in a new metatable; the engine relies on it. */
int mpe__compat_newmetatable(lua_State *L, const char *tname);
#define luaL_newmetatable(L, tn) mpe__compat_newmetatable((L), (tn))
/* Lua 5.4's pushers return the pushed string; LuaJIT's return nothing. */
const char *mpe__compat_pushstring(lua_State *L, const char *s);
const char *mpe__compat_pushlstring(lua_State *L, const char *s, size_t n);
#define lua_pushstring(L, s) mpe__compat_pushstring((L), (s))
#define lua_pushlstring(L, s, n) mpe__compat_pushlstring((L), (s), (n))
/* Lua 5.4's luaL_requiref: open a module once, leave it on the stack. */
void mpe__compat_requiref(lua_State *L, const char *modname, lua_CFunction openf, int glb);
#define luaL_requiref(L, m, f, g) mpe__compat_requiref((L), (m), (f), (g))
/* Lua 5.4's formats for lua_pushfstring and luaL_error: LuaJIT lacks %I
 * (a lua_Integer passed as LUAI_UACINT) and %U, and would print them
 * literally and misread the arguments after them. */
#define LUAI_UACINT long long
const char *mpe__compat_pushvfstring(lua_State *L, const char *fmt, va_list ap);
const char *mpe__compat_pushfstring(lua_State *L, const char *fmt, ...);
int mpe__compat_error(lua_State *L, const char *fmt, ...);
#define lua_pushvfstring mpe__compat_pushvfstring
#define lua_pushfstring mpe__compat_pushfstring
#define luaL_error mpe__compat_error
#define LUA_MAXINTEGER ((lua_Integer)0x7fffffffffffffffLL)
#define LUA_MININTEGER ((lua_Integer)(-0x7fffffffffffffffLL - 1))
/* The definitions above live in compat.c. */
/* 1 if the function at idx is one of LuaJIT's built-in "fast functions":
 * their C entry point is not a lua_CFunction, so they travel only by name. */
int mpe__compat_isfastfunc(lua_State *L, int idx);
#else
#define MPE_HAS_INTEGERS 1
#define MPE_HAS_ENV_UPVALUE 1
#define MPE_HAS_FFI 0
#define mpe__compat_isfastfunc(L, idx) 0
#endif

#endif
