/* lmpe_codec.c -- Lua bindings of the codec: mpe.encode, mpe.decode, mpe.register.
 * SPDX-License-Identifier: MIT
 *
 * Argument checks only; the format itself lives in codec.c. */
#include <string.h>
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "lbuf.h"
#include "lmpe.h"
#include "lmpe_err.h"

/* mpe.encode(v) -> string: a version byte, then the value. */
static int l_encode(lua_State *L)
{
    if (lua_gettop(L) < 1)
        return mpe__argerror(L, "encode", 1, "is missing (pass nil to encode nil)");
    lua_settop(L, 1);
    mpe_buf *b = mpe__buf_box(L);
    mpe__buf_put_u8(L, b, MPE_CODEC_VERSION);
    mpe__encode(L, 1, b, "value", NULL);
    lua_pushlstring(L, b->p, b->n);
    mpe__buf_free(b);
    return 1;
}

/* mpe.decode(s) -> v: the whole string must be one value. */
static int l_decode(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return mpe__argerror(L, "decode", 1, "must be a string, got %s", mpe__typename(L, 1));
    size_t n;
    const char *s = lua_tolstring(L, 1, &n);
    mpe_rd r;
    unsigned version;
    mpe__rd_init(&r, s, n);
    if (mpe__rd_u8(&r, &version) != 0)
        return luaL_error(L, "mpe: decode: empty input at offset 0");
    if (version != MPE_CODEC_VERSION)
        return luaL_error(L, "mpe: decode: unknown format version %d (expected %d) at offset 0",
                          (int)version, MPE_CODEC_VERSION);
    mpe__decode(L, &r, NULL);
    if (r.pos != r.n)
        return luaL_error(L, "mpe: decode: %d bytes of trailing garbage at offset %d",
                          (int)(r.n - r.pos), (int)r.pos);
    return 1;
}

/* mpe.register(name, mt) -> mt */
static int l_register(lua_State *L)
{
    size_t len = 0;
    if (lua_type(L, 1) != LUA_TSTRING || (lua_tolstring(L, 1, &len), len == 0))
        return mpe__argerror(L, "register", 1, "must be a non-empty string, got %s",
                             lua_type(L, 1) == LUA_TSTRING ? "an empty string" : mpe__typename(L, 1));
    if (lua_type(L, 2) != LUA_TTABLE)
        return mpe__argerror(L, "register", 2, "must be a table, got %s", mpe__typename(L, 2));
    mpe__codec_register_mt(L, lua_tostring(L, 1), 2);
    lua_settop(L, 2);
    return 1;
}

void mpe__open_codec(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"encode", l_encode},
        {"decode", l_decode},
        {"register", l_register},
        {NULL, NULL},
    };
    mpe__codec_init();
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
}
