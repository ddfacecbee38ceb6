/* lmpe_inline.c -- the inline pool's C side: mpe.pool{workers = 0} hands
 * over to lua/mpe/inline.lua, with the few helpers it needs from C.
 * SPDX-License-Identifier: MIT
 *
 * The pool itself is Lua (it only calls the task in the caller); what must
 * match the worker pool exactly lives here: the codec round trip that gives
 * tasks copies of their items, the pcall message handler that builds the
 * error tables, and the argument checks and messages (check_call, selferror,
 * typename, timeout checks). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "fdio.h"
#include "lbuf.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "lmpe_pool.h"
#include "proc.h"
#include "shm.h"
#include "worker.h"

static const char HELPERS_KEY = 'h'; /* registry: the helper table, made once per state */

/* Close the descriptors still in a box's list (those the decoder did not
 * take), now rather than at its __gc. */
static void close_fds(mpe_fds *fds)
{
    mpe__fds_truncate(fds, 0); /* the memory stays for the next use, freed by the box */
}

/* The boxes copy and sendable encode into, kept as upvalues 1 and 2 of
 * both so that a copy costs no allocation once the buffer has grown;
 * upvalue 3 says whether they are in use. They are in use only during one
 * encode and decode, but the decoder can run Lua (a finalizer), which could
 * copy again: such a nested call, or any call after an encoding raised half
 * way (which leaves the flag set), gets boxes of its own on the stack;
 * reset() (at each pool call) clears the flag and what a raise left. */
typedef struct scratch {
    mpe_buf *b;
    mpe_fds *fds;
    int *busy;
} scratch;

#define SCRATCH_KEEP (1u << 20) /* a buffer grown past this is freed after use */

/* Encode argument 1 (named root in messages, argument 2). */
static void encode_arg(lua_State *L, scratch *s)
{
    const char *root = luaL_optstring(L, 2, "value");
    lua_settop(L, 2);
    s->busy = lua_touserdata(L, lua_upvalueindex(3));
    if (*s->busy) {
        s->b = mpe__buf_box(L);
        s->fds = mpe__fds_box(L);
        s->busy = NULL;
    } else {
        s->b = lua_touserdata(L, lua_upvalueindex(1));
        s->fds = lua_touserdata(L, lua_upvalueindex(2));
        s->b->n = 0;
        *s->busy = 1;
    }
    mpe__encode(L, 1, s->b, root, s->fds);
}

static void release(scratch *s)
{
    close_fds(s->fds);
    if (s->busy) {
        if (s->b->cap > SCRATCH_KEEP)
            mpe__buf_free(s->b);
        *s->busy = 0;
    }
}

/* copy(v, root) -> a copy of v through the codec, as a worker would get it;
 * shared objects' descriptors travel in the list, as between processes. */
static int l_copy(lua_State *L)
{
    scratch s;
    encode_arg(L, &s);
    mpe_rd r;
    mpe__rd_init(&r, s.b->p, s.b->n);
    mpe__decode(L, &r, s.fds);
    release(&s);
    return 1;
}

/* sendable(v, root): raises as a worker pool's submission would if v cannot
 * be sent; the bytes are dropped. */
static int l_sendable(lua_State *L)
{
    scratch s;
    encode_arg(L, &s);
    release(&s);
    return 0;
}

/* reset(): forget what an encoding that raised left in the shared boxes. */
static int l_reset(lua_State *L)
{
    mpe_buf *b = lua_touserdata(L, lua_upvalueindex(1));
    close_fds(lua_touserdata(L, lua_upvalueindex(2)));
    b->n = 0;
    *(int *)lua_touserdata(L, lua_upvalueindex(3)) = 0;
    return 0;
}

static int l_typename(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_pushstring(L, mpe__typename(L, 1));
    return 1;
}

/* timeout(v, arg, fname): mpe__opt_timeout's check of v as argument arg. */
static int l_timeout(lua_State *L)
{
    int arg = (int)luaL_checkinteger(L, 2);
    char fname[64];
    snprintf(fname, sizeof fname, "%s", luaL_checkstring(L, 3));
    luaL_argcheck(L, arg >= 1 && arg <= 16, 2, "argument position out of range");
    lua_settop(L, 1);
    lua_settop(L, arg);
    lua_pushvalue(L, 1);
    lua_replace(L, arg);
    if (arg > 1) {
        lua_pushnil(L);
        lua_replace(L, 1);
    }
    lua_pushnumber(L, mpe__opt_timeout(L, arg, fname));
    return 1;
}

static int l_pid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)mpe__proc_now());
    return 1;
}

/* h.out_put(arr, item, ...): write an item's values as a worker does. */
static int l_out_put(lua_State *L)
{
    mpe_shm_obj *arr = mpe__array_test(L, 1);
    if (!arr)
        return luaL_error(L, "mpe: out: the array was closed");
    mpe__out_put(L, arr, (long long)luaL_checkinteger(L, 2), 3, lua_gettop(L));
    return 0;
}

/* h.check_call(self, fn, src, opts, fname, what, allow_cb, allow_out): the
 * worker pool's own argument checks (mpe__pool_check_call) on the inline
 * pool's call, laid out as the method call has them; what is "items",
 * "args" or "fn" (the function only). Returns nothing for "fn", else the
 * options: {collect =, progress = false|true|"force", out =, outrows =,
 * callback =, error_callback =}. */
static int l_check_call(lua_State *L)
{
    char fname[64];
    snprintf(fname, sizeof fname, "%s", luaL_checkstring(L, 5));
    const char *what = luaL_checkstring(L, 6);
    int flags = strcmp(what, "items") == 0 ? MPE_CALL_ITEMS : strcmp(what, "args") == 0 ? MPE_CALL_ARGS : 0;
    if (lua_toboolean(L, 7))
        flags |= MPE_CALL_CB;
    if (lua_toboolean(L, 8))
        flags |= MPE_CALL_OUT;
    lua_settop(L, 4);
    callopts o;
    mpe__pool_check_call(L, fname, flags, &o);
    if (!(flags & (MPE_CALL_ITEMS | MPE_CALL_ARGS)))
        return 0;
    lua_createtable(L, 0, 6);
    lua_pushboolean(L, o.collect);
    lua_setfield(L, -2, "collect");
    if (o.progress == 2)
        lua_pushliteral(L, "force");
    else
        lua_pushboolean(L, o.progress);
    lua_setfield(L, -2, "progress");
    if (o.out) {
        lua_pushliteral(L, "out");
        lua_rawget(L, 4);
        lua_setfield(L, -2, "out");
        lua_pushinteger(L, o.outrows);
        lua_setfield(L, -2, "outrows");
    }
    if (flags & MPE_CALL_CB) {
        static const char *const cbs[] = {"callback", "error_callback"};
        for (int i = 0; i < 2 && lua_istable(L, 4); i++) {
            lua_pushstring(L, cbs[i]);
            lua_rawget(L, 4);
            lua_setfield(L, -2, cbs[i]);
        }
    }
    return 1;
}

/* h.selferror(fname, tname, [v]): raise the misuse error of a method called
 * on v (absent: "got no value") instead of a tname (mpe__typeerror). */
static int l_selferror(lua_State *L)
{
    char fname[64], tname[64];
    snprintf(fname, sizeof fname, "%s", luaL_checkstring(L, 1));
    snprintf(tname, sizeof tname, "%s", luaL_checkstring(L, 2));
    lua_remove(L, 1);
    lua_remove(L, 1);
    return mpe__typeerror(L, 1, tname, fname);
}

static void push_helpers(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&HELPERS_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_istable(L, -1))
        return;
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {{"typename", l_typename}, {"timeout", l_timeout},
                                   {"pid", l_pid},           {"now", l_now},
                                   {"handler", mpe__error_handler},
                                   {"out_put", l_out_put},  {"check_call", l_check_call},
                                   {"selferror", l_selferror}, {NULL, NULL}};
    static const luaL_Reg shared[] = {{"copy", l_copy}, {"sendable", l_sendable},
                                      {"reset", l_reset}, {NULL, NULL}};
    lua_createtable(L, 0, 10);
    luaL_setfuncs(L, fns, 0);
    mpe__buf_box(L);
    mpe__fds_box(L);
    *(int *)lua_newuserdatauv(L, sizeof(int), 0) = 0;
    luaL_setfuncs(L, shared, 3);
    luaL_getmetatable(L, "mpe.Error");
    lua_setfield(L, -2, "Error");
    lua_pushlightuserdata(L, (void *)&HELPERS_KEY);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
}

int mpe__inline_default(void)
{
    const char *s = getenv("MPE_WORKERS");
    if (!s || !*s)
        return 0;
    char *end;
    long n = strtol(s, &end, 10);
    return *end == '\0' && n == 0;
}

int mpe__inline_pool(lua_State *L)
{
    lua_settop(L, 1);
    lua_getglobal(L, "require");
    if (!lua_isfunction(L, -1))
        return luaL_error(L, "mpe: pool: an inline pool (workers = 0) needs the package library (require)");
    lua_pushliteral(L, "mpe.inline");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "new");
    lua_pushvalue(L, 1);
    push_helpers(L);
    lua_call(L, 2, 1);
    return 1;
}
