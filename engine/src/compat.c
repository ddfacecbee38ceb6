/* compat.c -- the Lua 5.4 API functions LuaJIT 2.1 lacks, declared in compat.h.
 * SPDX-License-Identifier: MIT
 *
 * Compiled in every build; empty unless MPE_LUAJIT is defined. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "compat.h"

#ifdef MPE_LUAJIT

/* This file calls LuaJIT's own formatters. */
#undef lua_pushvfstring
#undef lua_pushfstring
#undef luaL_error

/* Lua 5.4's lua_pushvfstring: %% %s %d %c %f %p %I %U, the result pushed. */
const char *mpe__compat_pushvfstring(lua_State *L, const char *fmt, va_list ap)
{
    int n = 0; /* pieces on the stack, joined every so often */
    const char *e;
    luaL_checkstack(L, 40, "mpe: compat: format");
    while ((e = strchr(fmt, '%')) != NULL) {
        char tmp[32];
        lua_pushlstring(L, fmt, (size_t)(e - fmt));
        switch (e[1]) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            lua_pushstring(L, s ? s : "(null)");
            break;
        }
        case 'c':
            tmp[0] = (char)va_arg(ap, int);
            lua_pushlstring(L, tmp, 1);
            break;
        case 'd':
            snprintf(tmp, sizeof tmp, "%d", va_arg(ap, int));
            lua_pushstring(L, tmp);
            break;
        case 'I':
            snprintf(tmp, sizeof tmp, "%lld", va_arg(ap, long long));
            lua_pushstring(L, tmp);
            break;
        case 'f':
            lua_pushnumber(L, (lua_Number)va_arg(ap, double));
            lua_tostring(L, -1);
            break;
        case 'p':
            snprintf(tmp, sizeof tmp, "%p", va_arg(ap, void *));
            lua_pushstring(L, tmp);
            break;
        case 'U': { /* a code point, as UTF-8 (5.4 accepts up to 0x7FFFFFFF) */
            unsigned long x = (unsigned long)va_arg(ap, long);
            int k = 0;
            if (x < 0x80) {
                tmp[k++] = (char)x;
            } else {
                char b[8];
                int nb = 0;
                unsigned long mfb = 0x3f; /* largest payload that fits the first byte */
                do {
                    b[nb++] = (char)(0x80 | (x & 0x3f));
                    x >>= 6;
                    mfb >>= 1;
                } while (x > mfb);
                tmp[k++] = (char)((~mfb << 1) | x);
                while (nb > 0)
                    tmp[k++] = b[--nb];
            }
            lua_pushlstring(L, tmp, (size_t)k);
            break;
        }
        case '%':
            lua_pushliteral(L, "%");
            break;
        default: /* Lua 5.4 raises here; the caller's format is wrong */
            return luaL_error(L, "invalid conversion '%%%c' to 'lua_pushfstring'", e[1]), NULL;
        }
        n += 2;
        fmt = e + 2;
        if (n >= 30) {
            lua_concat(L, n);
            n = 1;
        }
    }
    lua_pushstring(L, fmt);
    lua_concat(L, n + 1);
    return lua_tostring(L, -1);
}

const char *mpe__compat_pushfstring(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *s = mpe__compat_pushvfstring(L, fmt, ap);
    va_end(ap);
    return s;
}

/* luaL_error with Lua 5.4's formats: position, message, raise. */
int mpe__compat_error(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    luaL_where(L, 1);
    mpe__compat_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

/* LuaJIT has only doubles. A number counts as an integer when Lua 5.4 would
 * have kept it as one after a round trip: integral, inside the int64 range,
 * and not -0.0 (whose sign an integer encoding would lose). */
int mpe__compat_numisint(double n)
{
    if (n != floor(n) || n < -9223372036854775808.0 || n >= 9223372036854775808.0)
        return 0; /* also false for NaN and the infinities */
    return !(n == 0 && signbit(n));
}

int mpe__compat_isinteger(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TNUMBER && mpe__compat_numisint((double)lua_tonumber(L, idx));
}

int mpe__compat_absindex(lua_State *L, int idx)
{
    return (idx > 0 || idx <= LUA_REGISTRYINDEX) ? idx : lua_gettop(L) + idx + 1;
}

/* LuaJIT's lua_dump has no strip flag: its C API always keeps the debug
 * information, so `strip` only costs size here, never correctness. */
int mpe__compat_dump(lua_State *L, lua_Writer w, void *ud, int strip)
{
    (void)strip;
    return (lua_dump)(L, w, ud);
}

/* luaL_tolstring of Lua 5.4: __tostring (which must return a string), else the
 * value's own string form, else "<__name or type>: <address>". */
const char *mpe__compat_tolstring(lua_State *L, int idx, size_t *len)
{
    idx = mpe__compat_absindex(L, idx);
    if (luaL_callmeta(L, idx, "__tostring")) {
        if (!lua_isstring(L, -1))
            luaL_error(L, "'__tostring' must return a string");
    } else {
        switch (lua_type(L, idx)) {
        case LUA_TNUMBER:
        case LUA_TSTRING:
            lua_pushvalue(L, idx);
            break;
        case LUA_TBOOLEAN:
            lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
            break;
        case LUA_TNIL:
            lua_pushliteral(L, "nil");
            break;
        default:
            if (!luaL_getmetafield(L, idx, "__name"))
                lua_pushnil(L);
            if (lua_type(L, -1) == LUA_TSTRING)
                lua_pushfstring(L, "%s: %p", lua_tostring(L, -1), lua_topointer(L, idx));
            else
                lua_pushfstring(L, "%s: %p", luaL_typename(L, idx), lua_topointer(L, idx));
            lua_remove(L, -2);
            break;
        }
    }
    return lua_tolstring(L, -1, len);
}

/* Lua 5.4's lua_pushstring and lua_pushlstring return the internal copy
 * (NULL when s is NULL and nil was pushed). */
const char *mpe__compat_pushstring(lua_State *L, const char *s)
{
    (lua_pushstring)(L, s);
    return lua_tostring(L, -1);
}

const char *mpe__compat_pushlstring(lua_State *L, const char *s, size_t n)
{
    (lua_pushlstring)(L, s, n);
    return lua_tostring(L, -1);
}

/* luaL_requiref of Lua 5.4: if package.loaded[modname] is not true, call
 * openf(modname) and store its result there; push that value, and with glb
 * also set the global modname to it. */
void mpe__compat_requiref(lua_State *L, const char *modname, lua_CFunction openf, int glb)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    lua_getfield(L, -1, modname);
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        lua_pushcfunction(L, openf);
        lua_pushstring(L, modname);
        lua_call(L, 1, 1);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, modname);
    }
    lua_remove(L, -2);
    if (glb) {
        lua_pushvalue(L, -1);
        lua_setglobal(L, modname);
    }
}

/* Lua 5.4's luaL_newmetatable also stores the name as __name, which error
 * messages, luaL_tolstring, mpe__typename and the codec rely on. */
int mpe__compat_newmetatable(lua_State *L, const char *tname)
{
    if (!(luaL_newmetatable)(L, tname))
        return 0;
    lua_pushstring(L, tname);
    lua_setfield(L, -2, "__name");
    return 1;
}

/* jit.util.funcinfo(f).ffid is set for LuaJIT's built-ins (math.log, the
 * ipairs iterator...). When jit.util cannot be reached, say yes: the caller
 * then refuses to send the function by address, which is the safe answer. */
int mpe__compat_isfastfunc(lua_State *L, int idx)
{
    int fast = 1;
    idx = mpe__compat_absindex(L, idx);
    if (!lua_iscfunction(L, idx))
        return 0;
    luaL_checkstack(L, 4, "mpe: compat");
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_getfield(L, -1, "jit.util");
        if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_getglobal(L, "package");
            if (lua_type(L, -1) == LUA_TTABLE) {
                lua_getfield(L, -1, "preload");
                if (lua_type(L, -1) == LUA_TTABLE) {
                    lua_getfield(L, -1, "jit.util");
                    if (lua_type(L, -1) == LUA_TFUNCTION && lua_pcall(L, 0, 1, 0) != 0)
                        lua_pushnil(L);
                }
            }
        }
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_getfield(L, -1, "funcinfo");
            lua_pushvalue(L, idx);
            if (lua_type(L, -2) == LUA_TFUNCTION && lua_pcall(L, 1, 1, 0) == 0 &&
                lua_type(L, -1) == LUA_TTABLE) {
                lua_getfield(L, -1, "ffid");
                fast = !lua_isnil(L, -1);
            }
        }
    }
    lua_settop(L, top);
    return fast;
}

#else

/* Lua 5.4 has everything: an ISO C translation unit may not be empty. */
typedef int mpe__compat_unused;

#endif
