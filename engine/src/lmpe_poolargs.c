/* lmpe_poolargs.c -- the argument checks and call options of the pool's
 * methods (map family, apply, imap), one place for the worker pool
 * (lmpe_pool.c) and the inline pool (lmpe_inline.c, lua/mpe/inline.lua), so
 * their messages cannot drift.
 * SPDX-License-Identifier: MIT */
#include <string.h>
#include "compat.h"
#include "array.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "lmpe_pool.h"

int mpe__is_callable(lua_State *L, int i)
{
    if (lua_isfunction(L, i))
        return 1;
    int r = luaL_getmetafield(L, i, "__call") != LUA_TNIL;
    if (r)
        lua_pop(L, 1);
    return r;
}

/* allow_out: the call accepts option out (map, starmap and their async forms). */
static void parse_callopts(lua_State *L, int idx, const char *fname, callopts *o, int allow_cb,
                           int allow_out)
{
    memset(o, 0, sizeof *o);
    if (lua_isnoneornil(L, idx))
        return;
    if (!lua_istable(L, idx))
        mpe__argerror(L, fname, idx, "(options) must be a table, got %s", mpe__got(L, idx));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (k && strcmp(k, "chunksize") == 0) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > (1 << 20))
                mpe__argerror(L, fname, 0, "option 'chunksize' must be an integer from 1 to "
                              "1048576, got %s",
                              mpe__got(L, -1));
            o->chunksize = (int)lua_tointeger(L, -1);
        } else if (k && strcmp(k, "errors") == 0) {
            const char *v = lua_tostring(L, -1);
            if (lua_type(L, -1) != LUA_TSTRING || (strcmp(v, "raise") != 0 && strcmp(v, "collect") != 0))
                mpe__argerror(L, fname, 0, "option 'errors' must be \"raise\" or \"collect\"");
            o->collect = strcmp(v, "collect") == 0;
        } else if (k && allow_cb && (strcmp(k, "callback") == 0 || strcmp(k, "error_callback") == 0)) {
            if (!mpe__is_callable(L, lua_gettop(L)))
                mpe__argerror(L, fname, 0, "option '%s' must be a function, got "
                              "%s", k, mpe__got(L, -1));
        } else if (k && strcmp(k, "progress") == 0) {
            /* drawn by progress_tick through lua/mpe/progress.lua */
            int t = lua_type(L, -1);
            if (t == LUA_TSTRING && strcmp(lua_tostring(L, -1), "force") == 0)
                o->progress = 2;
            else if (t == LUA_TBOOLEAN || t == LUA_TNIL)
                o->progress = lua_toboolean(L, -1);
            else
                mpe__argerror(L, fname, 0, "option 'progress' must be true, false or \"force\", "
                              "got %s",
                              mpe__got(L, -1));
        } else if (k && strcmp(k, "window") == 0) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > MPE_IMAP_WINDOW)
                mpe__argerror(L, fname, 0, "option 'window' must be an integer from 1 to %d, got "
                              "%s",
                              MPE_IMAP_WINDOW, mpe__got(L, -1));
            o->window = lua_tointeger(L, -1);
        } else if (k && strcmp(k, "out") == 0) {
            if (!allow_out)
                mpe__argerror(L, fname, 0, "option 'out' is not accepted here (results come back "
                              "one by "
                              "one); use pool:map, starmap, map_async or starmap_async");
            mpe_shm_obj *arr = mpe__array_test(L, -1);
            if (!arr)
                mpe__argerror(L, fname, 0, "option 'out' must be an open mpe.array, got %s",
                              mpe__got(L, -1));
            size_t rows, cols;
            mpe__array_shape(arr, &rows, &cols);
            o->outrows = (lua_Integer)rows;
            o->out = idx;
        } else
            mpe__argerror(L, fname, 0, "unknown option '%s'", k ? k : luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
    }
}

static void check_items(lua_State *L, int idx, const char *fname)
{
    if (!lua_istable(L, idx) && !mpe__range_test(L, idx) && !lua_isfunction(L, idx))
        mpe__argerror(L, fname, idx, "must be a table, mpe.range or function, got "
                      "%s", mpe__got(L, idx));
}

static void check_fn(lua_State *L, int idx, const char *fname)
{
    if (!lua_isfunction(L, idx))
        mpe__argerror(L, fname, idx, "must be a function, got %s", mpe__got(L, idx));
}

void mpe__pool_check_call(lua_State *L, const char *fname, int flags, callopts *o)
{
    check_fn(L, 2, fname);
    if (flags & MPE_CALL_ITEMS)
        check_items(L, 3, fname);
    else if (!(flags & MPE_CALL_ARGS))
        return;
    else if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3))
        mpe__argerror(L, fname, 3, "(args) must be a table, got %s", mpe__got(L, 3));
    parse_callopts(L, 4, fname, o, (flags & MPE_CALL_CB) != 0, (flags & MPE_CALL_OUT) != 0);
}

