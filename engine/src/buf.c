/* buf.c -- growable byte buffers and bounds-checked readers.
 * SPDX-License-Identifier: MIT
 *
 * The codec, the channels and the scheduler all build messages here. Growth
 * doubles, so appending is amortised O(1); readers never step outside the
 * bytes they were given. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

int mpe__buf_grow(mpe_buf *b, size_t extra)
{
    if (b->cap - b->n >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->n) {
        errno = ENOMEM;
        return -1;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        errno = ENOMEM;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

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

void mpe__buf_free(mpe_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

static int box_gc(lua_State *L)
{
    mpe__buf_free((mpe_buf *)lua_touserdata(L, 1));
    return 0;
}

mpe_buf *mpe__buf_box(lua_State *L)
{
    mpe_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    if (luaL_newmetatable(L, "mpe.Buffer")) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    return b;
}

static int fds_box_gc(lua_State *L)
{
    mpe__fds_close(lua_touserdata(L, 1));
    return 0;
}

mpe_fds *mpe__fds_box(lua_State *L)
{
    mpe_fds *f = lua_newuserdatauv(L, sizeof *f, 0);
    memset(f, 0, sizeof *f);
    if (luaL_newmetatable(L, "mpe.Descriptors")) {
        lua_pushcfunction(L, fds_box_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, fds_box_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    return f;
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

/* The wire is little-endian; on a little-endian host (every Linux target
 * mpe runs on today) integers are copied as they are. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define MPE_LE 1
#else
#define MPE_LE 0
#endif

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

void mpe__rd_init(mpe_rd *r, const void *p, size_t n)
{
    r->p = p;
    r->n = n;
    r->pos = 0;
}

int mpe__rd_bytes(mpe_rd *r, size_t n, const unsigned char **out)
{
    if (r->n - r->pos < n)
        return -1;
    *out = r->p + r->pos;
    r->pos += n;
    return 0;
}

int mpe__rd_u8(mpe_rd *r, unsigned *out)
{
    if (r->pos >= r->n)
        return -1;
    *out = r->p[r->pos++];
    return 0;
}

int mpe__rd_u32(mpe_rd *r, uint32_t *out)
{
    const unsigned char *s;
    if (mpe__rd_bytes(r, 4, &s) != 0)
        return -1;
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | s[i];
    *out = v;
    return 0;
}

int mpe__rd_u64(mpe_rd *r, uint64_t *out)
{
    if (r->n - r->pos < 8)
        return -1;
    const unsigned char *s = r->p + r->pos;
    r->pos += 8;
    if (MPE_LE) {
        memcpy(out, s, 8);
        return 0;
    }
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | s[i];
    *out = v;
    return 0;
}

int mpe__rd_f64(mpe_rd *r, double *out)
{
    uint64_t u;
    if (mpe__rd_u64(r, &u) != 0)
        return -1;
    memcpy(out, &u, sizeof *out);
    return 0;
}

int mpe__rd_varint(mpe_rd *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        unsigned c;
        if (mpe__rd_u8(r, &c) != 0)
            return -1;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1; /* more than 10 bytes: malformed */
}
