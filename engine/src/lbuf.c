/* lbuf.c -- byte buffers as Lua sees them: appenders that raise in L, and
 * buffers and descriptor lists owned by Lua values.
 * SPDX-License-Identifier: MIT
 *
 * buf.c holds the Lua-free part; the codec and the scheduler build messages
 * with these, so that running out of memory becomes a Lua error. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "compat.h"
#include "buf.h"
#include "err.h"
#include "fdio.h"
#include "lbuf.h"

void mpe__buf_lgrow(lua_State *L, mpe_buf *b, size_t extra)
{
    if (MPE_UNLIKELY(b->cap - b->n < extra) && mpe__buf_grow(b, extra) != 0) {
        /* Lua's formatter knows no %zu (it raised "invalid option '%z'"
         * instead of this message): format the size here. */
        char msg[96];
        snprintf(msg, sizeof msg, "mpe: not enough memory for a %zu-byte message", b->n + extra);
        luaL_error(L, "%s", msg);
    }
}

static int box_gc(lua_State *L)
{
    mpe__buf_free((mpe_buf *)lua_touserdata(L, 1));
    return 0;
}

static int fds_box_gc(lua_State *L)
{
    mpe__fds_close(lua_touserdata(L, 1));
    return 0;
}

/* A zeroed userdata of n bytes whose metatable (name) runs release on
 * __gc and __close. */
static void *new_box(lua_State *L, size_t n, const char *name, lua_CFunction release)
{
    void *u = lua_newuserdatauv(L, n, 0);
    memset(u, 0, n);
    if (luaL_newmetatable(L, name)) {
        lua_pushcfunction(L, release);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, release);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    return u;
}

mpe_buf *mpe__buf_box(lua_State *L)
{
    return new_box(L, sizeof(mpe_buf), "mpe.Buffer", box_gc);
}

mpe_fds *mpe__fds_box(lua_State *L)
{
    return new_box(L, sizeof(mpe_fds), "mpe.Descriptors", fds_box_gc);
}

void mpe__buf_put(lua_State *L, mpe_buf *b, const void *p, size_t n)
{
    mpe__buf_lgrow(L, b, n);
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

void mpe__buf_put_u8(lua_State *L, mpe_buf *b, unsigned v)
{
    mpe__buf_lgrow(L, b, 1);
    b->p[b->n++] = (char)(unsigned char)v;
}


void mpe__buf_put_u32(lua_State *L, mpe_buf *b, uint32_t v)
{
    unsigned char s[4];
    if (MPE_LE)
        memcpy(s, &v, 4);
    else
        for (int i = 0; i < 4; i++)
            s[i] = (unsigned char)(v >> (8 * i));
    mpe__buf_put(L, b, s, 4);
}

void mpe__buf_put_u64(lua_State *L, mpe_buf *b, uint64_t v)
{
    mpe__buf_lgrow(L, b, 8);
    unsigned char *s = (unsigned char *)b->p + b->n;
    if (MPE_LE)
        memcpy(s, &v, 8);
    else
        for (int i = 0; i < 8; i++)
            s[i] = (unsigned char)(v >> (8 * i));
    b->n += 8;
}

void mpe__buf_put_f64(lua_State *L, mpe_buf *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    mpe__buf_put_u64(L, b, u);
}

void mpe__buf_put_varint(lua_State *L, mpe_buf *b, uint64_t v)
{
    unsigned char s[10];
    size_t n = 0;
    do {
        unsigned char c = v & 0x7f;
        v >>= 7;
        s[n++] = c | (v ? 0x80 : 0);
    } while (v);
    mpe__buf_put(L, b, s, n);
}
