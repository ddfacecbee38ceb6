/* lmpe_range.c -- mpe.range: a lazy integer sequence, accepted wherever a
 * pool takes items and sent to workers as bounds, never materialized.
 * SPDX-License-Identifier: MIT */
#include <math.h>
#include <string.h>
#include "compat.h"
#include "lmpe.h"
#include "lmpe_err.h"

#define RANGE_MT "mpe.range"

static int range_new(lua_State *L)
{
    lua_Integer first = 0, last = 0, step = 1;
    for (int i = 1; i <= 3; i++) {
        if (i == 3 && lua_isnoneornil(L, 3))
            break;
        /* An integer, or a float with an integral value that fits one
         * (math.huge and NaN do not). */
        double d = lua_tonumber(L, i);
        if (!lua_isinteger(L, i) &&
            !(lua_type(L, i) == LUA_TNUMBER && d == floor(d) && d >= -9.2e18 && d <= 9.2e18))
            return mpe__argerror(L, "range", i, "must be an integer, got %s", mpe__got(L, i));
    }
    /* Integers as they are: through a double, maxinteger would round up and overflow. */
    first = lua_isinteger(L, 1) ? lua_tointeger(L, 1) : (lua_Integer)lua_tonumber(L, 1);
    last = lua_isinteger(L, 2) ? lua_tointeger(L, 2) : (lua_Integer)lua_tonumber(L, 2);
    if (!lua_isnoneornil(L, 3))
        step = lua_isinteger(L, 3) ? lua_tointeger(L, 3) : (lua_Integer)lua_tonumber(L, 3);
    if (step == 0)
        return mpe__argerror(L, "range", 3, "(step) must not be 0");
    mpe_range *r = lua_newuserdatauv(L, sizeof *r, 0);
    r->first = first;
    r->step = step;
    if ((step > 0 && last < first) || (step < 0 && last > first))
        r->count = 0;
    else {
        /* Unsigned arithmetic: the span may not fit a signed integer. */
        unsigned long long span = step > 0 ? (unsigned long long)last - (unsigned long long)first
                                           : (unsigned long long)first - (unsigned long long)last;
        unsigned long long s = step > 0 ? (unsigned long long)step : 0ULL - (unsigned long long)step;
        unsigned long long q = span / s; /* items - 1: + 1 could wrap to 0 */
        if (q >= (unsigned long long)1 << 53)
            return luaL_error(L, "mpe: range: too many items (more than 2^53)");
        r->count = (lua_Integer)(q + 1);
    }
    luaL_setmetatable(L, RANGE_MT);
    return 1;
}

/* The one checker of mpe.range: the range at idx, raising if it is none. */
static mpe_range *torange(lua_State *L, int idx, const char *fname)
{
    mpe_range *r = luaL_testudata(L, idx, RANGE_MT);
    if (!r)
        mpe__typeerror(L, idx, RANGE_MT, fname);
    return r;
}

static int range_len(lua_State *L)
{
    lua_pushinteger(L, torange(L, 1, "range:__len")->count);
    return 1;
}

static int range_index(lua_State *L)
{
    mpe_range *r = torange(L, 1, "range:__index");
    if (lua_isinteger(L, 2)) {
        lua_Integer i = lua_tointeger(L, 2);
        if (i >= 1 && i <= r->count)
            lua_pushinteger(L, r->first + (i - 1) * r->step);
        else
            lua_pushnil(L);
        return 1;
    }
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "first") == 0)
        lua_pushinteger(L, r->first);
    else if (k && strcmp(k, "step") == 0)
        lua_pushinteger(L, r->step);
    else
        lua_pushnil(L);
    return 1;
}

static int range_tostring(lua_State *L)
{
    mpe_range *r = torange(L, 1, "range:__tostring");
    lua_pushfstring(L, "mpe.range(%I, %I, %I)", (LUAI_UACINT)r->first,
                    (LUAI_UACINT)(r->first + (r->count - 1) * r->step), (LUAI_UACINT)r->step);
    return 1;
}

const mpe_range *mpe__range_test(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, RANGE_MT);
}

void mpe__open_range(lua_State *L)
{
    luaL_newmetatable(L, RANGE_MT);
    lua_pushcfunction(L, range_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, range_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, range_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_pushcfunction(L, range_new);
    lua_setfield(L, -2, "range");
}
