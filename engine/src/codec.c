/* codec.c -- the wire format: Lua values <-> bytes, for tasks, results,
 * queues, pipes and mpe.encode. Owns the tag table, the encoder and the
 * decoder (reference tracking, packed arrays, paths in error messages).
 * SPDX-License-Identifier: MIT
 *
 * What values are linked to by name or trusted by key (C function names,
 * registered metatables and shared-object types, the MAC) is in codec_link.c. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "err.h"
#include "lbuf.h"

/* One byte opens every value. The layouts are documented in
 * docs/ARCHITECTURE.md ("The wire format"); keep the two in step. */
enum {
    T_NIL = 0,
    T_FALSE = 1,
    T_TRUE = 2,
    T_INT = 3,          /* zigzag varint */
    T_FLOAT = 4,        /* 8 bytes, IEEE-754 bits */
    T_STR = 5,          /* varint length, bytes */
    T_TABLE = 6,        /* varint n, n values, u32 m, m key/value pairs, metatable mark */
    T_TABLE_INT = 7,    /* varint n, n * 8-byte integers, then as T_TABLE from u32 m */
    T_TABLE_FLOAT = 8,  /* varint n, n * 8-byte doubles, then as T_TABLE from u32 m */
    T_REF = 9,          /* varint id of a table/function/object met before */
    T_GLOBALS = 10,     /* the receiving side's global table */
    T_LFUNC = 11,       /* u32 n, n bytes of bytecode, u8 nups, u64 MAC, upvalues */
    T_CFUNC_NAME = 12,  /* varint length, name ("math.log") */
    T_CFUNC_ADDR = 13,  /* u64 address, u8 nups, u64 MAC, nups values */
    T_SHARED = 14,      /* varint length, type name, then what the type's encode wrote */
    T_MODULE = 15,      /* varint length, name: the receiver's package.loaded[name] (cross-rank) */
    T_LAST = T_MODULE
};

/* Metatable mark after a table's pairs. */
enum { MT_NONE = 0, MT_VALUE = 1, MT_NAME = 2 };

/* Per-upvalue mark of a Lua function: its value follows, or it is the same
 * variable as upvalue k of function id (varint id, u8 k). */
enum { UP_VALUE = 0, UP_JOIN = 1 };

/* Arrays of at least this many numbers of one kind are packed. */
#define PACK_MIN 4

/* The 8 bytes at p as a little-endian u64. */
static uint64_t ld64(const unsigned char *p)
{
    uint64_t v = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(&v, p, 8);
#else
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
#endif
    return v;
}

/* ---- encoder -------------------------------------------------------------------- */

/* How the value being encoded was reached: one frame per level. */
enum { F_INDEX, F_KEY, F_KEYOF, F_UPVAL, F_META };
typedef struct frame {
    int kind;
    int idx;       /* F_KEY/F_KEYOF: stack index of the key; F_UPVAL: the function */
    lua_Integer n; /* F_INDEX: the index; F_UPVAL: the upvalue number */
} frame;

typedef struct enc {
    lua_State *L;
    mpe_buf *b;
    mpe_fds *fds;
    const char *root;
    const void *globals; /* the sender's global table */
    int slot;            /* stack slot of the reference table (nil until needed) */
    int has_refs; /* 0: none met; 1: the slot holds the first object; 2: the slot holds the id table */
    lua_Integer nrefs;
    int depth;
    frame fr[MPE_MAX_DEPTH];
} enc;

static void enc_value(enc *e, int idx);

static void cat(char *s, size_t cap, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void cat(char *s, size_t cap, size_t *n, const char *fmt, ...)
{
    if (*n >= cap - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(s + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (r > 0)
        *n += (size_t)r < cap - *n ? (size_t)r : cap - *n - 1;
}

static int is_ident(const char *s, size_t len)
{
    if (len == 0 || len > 40 || !(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') ||
                                  (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

/* Render a table key as it appears in a path: .name, [3], ["x y"], [<table>]. */
static void cat_key(lua_State *L, int idx, char *s, size_t cap, size_t *n)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *k = lua_tolstring(L, idx, &len);
        if (is_ident(k, len)) {
            cat(s, cap, n, ".%s", k);
            break;
        }
        cat(s, cap, n, "[\"");
        for (size_t i = 0; i < len && i < 32; i++) {
            unsigned char c = (unsigned char)k[i];
            if (c == '"' || c == '\\')
                cat(s, cap, n, "\\%c", c);
            else if (c < 32 || c >= 127)
                cat(s, cap, n, "\\%u", c);
            else
                cat(s, cap, n, "%c", c);
        }
        cat(s, cap, n, len > 32 ? "...\"]" : "\"]");
        break;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            cat(s, cap, n, "[%lld]", (long long)lua_tointeger(L, idx));
        else
            cat(s, cap, n, "[%.14g]", (double)lua_tonumber(L, idx));
        break;
    case LUA_TBOOLEAN:
        cat(s, cap, n, "[%s]", lua_toboolean(L, idx) ? "true" : "false");
        break;
    default:
        cat(s, cap, n, "[<%s>]", luaL_typename(L, idx));
        break;
    }
}

static void cat_function(lua_State *L, int idx, char *s, size_t cap, size_t *n)
{
    lua_Debug ar;
    lua_pushvalue(L, idx);
    if (lua_getinfo(L, ">S", &ar) && ar.what && strcmp(ar.what, "C") != 0)
        cat(s, cap, n, "function (%s:%d)", ar.short_src, ar.linedefined);
    else
        cat(s, cap, n, "C function");
}

/* Write "at <path>" for the current frames into s. The innermost upvalue
 * restarts the path: "upvalue 'log' of function (job.lua:12)". */
static void render_path(enc *e, char *s, size_t cap)
{
    lua_State *L = e->L;
    size_t n = 0;
    int up = -1, start = 0;
    lua_checkstack(L, 4);
    for (int i = e->depth - 1; i >= 0; i--)
        if (e->fr[i].kind == F_UPVAL) {
            up = i;
            break;
        }
    if (up >= 0) {
        const char *name = lua_getupvalue(L, e->fr[up].idx, (int)e->fr[up].n);
        if (name && *name && strcmp(name, "(no name)") != 0)
            cat(s, cap, &n, "upvalue '%s'", name);
        else
            cat(s, cap, &n, "upvalue #%d", (int)e->fr[up].n);
        start = up + 1;
    } else {
        cat(s, cap, &n, "%s", e->root);
    }
    for (int i = start, shown = 0; i < e->depth; i++, shown++) {
        if (shown == 16) {
            cat(s, cap, &n, "...");
            break;
        }
        const frame *f = &e->fr[i];
        switch (f->kind) {
        case F_INDEX:
            cat(s, cap, &n, "[%lld]", (long long)f->n);
            break;
        case F_KEY:
            cat_key(L, f->idx, s, cap, &n);
            break;
        case F_KEYOF:
            cat(s, cap, &n, "[<key>]");
            break;
        case F_META:
            cat(s, cap, &n, "<metatable>");
            break;
        case F_UPVAL:
            cat(s, cap, &n, "<upvalue #%d>", (int)f->n);
            break;
        }
    }
    if (up >= 0) {
        cat(s, cap, &n, " of ");
        cat_function(L, e->fr[up].idx, s, cap, &n);
    }
}

static void enc_fail(enc *e, const char *what)
{
    char path[512];
    render_path(e, path, sizeof path);
    luaL_error(e->L, "mpe: cannot send %s at %s", what, path);
}

static void enc_push(enc *e, int kind, int idx, lua_Integer n)
{
    if (MPE_UNLIKELY(e->depth >= MPE_MAX_DEPTH)) {
        char path[512];
        render_path(e, path, sizeof path);
        luaL_error(e->L, "mpe: cannot send value: nesting deeper than %d levels at %s",
                   MPE_MAX_DEPTH, path);
    }
    if (MPE_UNLIKELY(!lua_checkstack(e->L, 8)))
        luaL_error(e->L, "mpe: cannot send value: out of Lua stack");
    frame *f = &e->fr[e->depth++];
    f->kind = kind;
    f->idx = idx;
    f->n = n;
}

static void enc_pop(enc *e)
{
    e->depth--;
}

/* Make the reference slot a table. Until a second object is met it holds
 * just the first one (has_refs == 1), so a flat table, the common case,
 * allocates no reference table at all. */
static void enc_refs(enc *e)
{
    lua_State *L = e->L;
    if (e->has_refs == 2)
        return;
    lua_newtable(L);
    if (e->has_refs == 1) {
        lua_pushvalue(L, e->slot);
        lua_pushinteger(L, 1);
        lua_rawset(L, -3);
    }
    lua_replace(L, e->slot);
    e->has_refs = 2;
}

/* If the object at idx was met before, write a reference to it and return 1.
 * Otherwise give it the next id and return 0. */
static int enc_seen(enc *e, int idx)
{
    lua_State *L = e->L;
    if (e->has_refs == 0) {
        lua_pushvalue(L, idx);
        lua_replace(L, e->slot);
        e->has_refs = 1;
        ++e->nrefs;
        return 0;
    }
    if (e->has_refs == 1 && lua_rawequal(L, idx, e->slot)) {
        mpe__buf_put_u8(L, e->b, T_REF);
        mpe__buf_put_varint(L, e->b, 1);
        return 1;
    }
    enc_refs(e);
    lua_pushvalue(L, idx);
    lua_rawget(L, e->slot);
    if (lua_type(L, -1) == LUA_TNUMBER) {
        lua_Integer id = lua_tointeger(L, -1);
        lua_pop(L, 1);
        if (id < 0)
            enc_fail(e, "C function whose upvalues contain itself");
        mpe__buf_put_u8(L, e->b, T_REF);
        mpe__buf_put_varint(L, e->b, (uint64_t)id);
        return 1;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushinteger(L, ++e->nrefs);
    lua_rawset(L, e->slot);
    return 0;
}

static void put_raw64(mpe_buf *b, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(b->p + b->n, &v, 8);
#else
    for (int i = 0; i < 8; i++)
        b->p[b->n + i] = (char)(unsigned char)(v >> (8 * i));
#endif
    b->n += 8;
}

/* Try to write the array part 1..n as packed numbers (all integers or all
 * floats). Returns 0 and leaves b unchanged when the values do not qualify. */
static int enc_packed(enc *e, int t, lua_Integer n)
{
    lua_State *L = e->L;
    mpe_buf *b = e->b;
    size_t mark = b->n;
    lua_rawgeti(L, t, 1);
    int kind = lua_type(L, -1) != LUA_TNUMBER ? -1 : MPE_HAS_INTEGERS && lua_isinteger(L, -1);
    lua_pop(L, 1);
    if (kind < 0)
        return 0;
    mpe__buf_put_u8(L, b, kind ? T_TABLE_INT : T_TABLE_FLOAT);
    mpe__buf_put_varint(L, b, (uint64_t)n);
    mpe__buf_lgrow(L, b, (size_t)n * 8);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, t, i);
        if (lua_type(L, -1) != LUA_TNUMBER || (MPE_HAS_INTEGERS && lua_isinteger(L, -1) != kind)) {
            lua_pop(L, 1);
            b->n = mark;
            return 0;
        }
        uint64_t u;
        if (kind) {
            u = (uint64_t)lua_tointeger(L, -1);
        } else {
            double d = (double)lua_tonumber(L, -1);
            memcpy(&u, &d, 8);
        }
        put_raw64(b, u);
        lua_pop(L, 1);
    }
    return 1;
}

/* Push the name under which t is in package.loaded and return 1, or return 0. */
static int module_name(lua_State *L, int t)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, t)) {
            lua_pop(L, 1);
            lua_remove(L, -2);
            return 1;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

static void enc_table(enc *e, int t)
{
    lua_State *L = e->L;
    mpe_buf *b = e->b;
    if (lua_topointer(L, t) == e->globals) {
        mpe__buf_put_u8(L, b, T_GLOBALS);
        return;
    }
    /* Another rank has its own copy of a loaded module (mpe, string, ...):
     * copying ours would copy C functions that no name reaches. */
    if (e->fds == &mpe__codec_remote && module_name(L, t)) {
        size_t len;
        const char *name = lua_tolstring(L, -1, &len);
        mpe__buf_put_u8(L, b, T_MODULE);
        mpe__buf_put_varint(L, b, len);
        mpe__buf_put(L, b, name, len);
        lua_pop(L, 1);
        return;
    }
    if (enc_seen(e, t))
        return;
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    if (n < PACK_MIN || !enc_packed(e, t, n)) {
        mpe__buf_put_u8(L, b, T_TABLE);
        mpe__buf_put_varint(L, b, (uint64_t)n);
        for (lua_Integer i = 1; i <= n; i++) {
            enc_push(e, F_INDEX, 0, i);
            lua_rawgeti(L, t, i);
            enc_value(e, lua_gettop(L));
            lua_pop(L, 1);
            enc_pop(e);
        }
    }
    /* The other keys; their count is patched in afterwards. */
    size_t at = b->n;
    mpe__buf_put_u32(L, b, 0);
    uint32_t m = 0;
    lua_checkstack(L, 4);
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        int k = lua_gettop(L) - 1;
        if (lua_type(L, k) == LUA_TNUMBER && lua_isinteger(L, k)) {
            lua_Integer i = lua_tointeger(L, k);
            if (i >= 1 && i <= n) {
                lua_pop(L, 1);
                continue;
            }
        }
        enc_push(e, F_KEYOF, k, 0);
        enc_value(e, k);
        enc_pop(e);
        enc_push(e, F_KEY, k, 0);
        enc_value(e, k + 1);
        enc_pop(e);
        lua_pop(L, 1);
        if (MPE_UNLIKELY(++m == UINT32_MAX))
            enc_fail(e, "table with more than 4294967294 keys");
    }
    for (int i = 0; i < 4; i++)
        b->p[at + i] = (char)(unsigned char)(m >> (8 * i));
    /* The metatable: none, by registered name, or by value. */
    if (!lua_getmetatable(L, t)) {
        mpe__buf_put_u8(L, b, MT_NONE);
        return;
    }
    int mt = lua_gettop(L);
    if (mpe__codec_mt_name(L, mt)) {
        size_t len;
        const char *name = lua_tolstring(L, -1, &len);
        mpe__buf_put_u8(L, b, MT_NAME);
        mpe__buf_put_varint(L, b, len);
        mpe__buf_put(L, b, name, len);
        lua_settop(L, mt - 1);
        return;
    }
    mpe__buf_put_u8(L, b, MT_VALUE);
    enc_push(e, F_META, 0, 0);
    enc_value(e, mt);
    enc_pop(e);
    lua_pop(L, 1);
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud)
{
    mpe_buf *b = ud;
    (void)L;
    if (mpe__buf_grow(b, sz) != 0)
        return 1;
    memcpy(b->p + b->n, p, sz);
    b->n += sz;
    return 0;
}

static void put_mac(enc *e, size_t start)
{
    uint64_t mac = mpe__codec_mac(e->b->p + start, e->b->n - start);
    mpe__buf_put_u64(e->L, e->b, mac);
}

/* An environment that forwards to something through an __index function
 * (busted's test environments, lazy-global sandboxes) cannot be copied by
 * value in any useful way; as an _ENV it becomes the receiver's globals, the
 * way LuaJIT gives every loaded function the receiver's globals. */
static int is_proxy_env(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
        return 0;
    lua_pushliteral(L, "__index");
    lua_rawget(L, -2);
    int proxy = lua_type(L, -1) == LUA_TFUNCTION;
    lua_pop(L, 2);
    return proxy;
}

static void enc_lfunction(enc *e, int f)
{
    lua_State *L = e->L;
    mpe_buf *b = e->b;
    lua_Integer id = e->nrefs;
    size_t start = b->n;
    mpe__buf_put_u8(L, b, T_LFUNC);
    size_t at = b->n;
    mpe__buf_put_u32(L, b, 0);
    lua_pushvalue(L, f);
    if (lua_dump(L, dump_writer, b, 0) != 0)
        enc_fail(e, "function (lua_dump failed)");
    lua_Debug ar;
    lua_getinfo(L, ">u", &ar); /* pops the function */
    size_t len = b->n - at - 4;
    if (len > UINT32_MAX)
        enc_fail(e, "function (bytecode over 4 GB)");
    for (int i = 0; i < 4; i++)
        b->p[at + i] = (char)(unsigned char)(len >> (8 * i));
    int nups = ar.nups;
    mpe__buf_put_u8(L, b, (unsigned)nups);
    put_mac(e, start);
    for (int i = 1; i <= nups; i++) {
        /* An upvalue shared with a function met before is joined, not copied. */
        void *uid = lua_upvalueid(L, f, i);
        enc_refs(e);
        lua_pushlightuserdata(L, uid);
        lua_rawget(L, e->slot);
        if (lua_type(L, -1) == LUA_TNUMBER) {
            lua_Integer v = lua_tointeger(L, -1);
            lua_pop(L, 1);
            mpe__buf_put_u8(L, b, UP_JOIN);
            mpe__buf_put_varint(L, b, (uint64_t)(v >> 8));
            mpe__buf_put_u8(L, b, (unsigned)(v & 0xff));
            continue;
        }
        lua_pop(L, 1);
        lua_pushlightuserdata(L, uid);
        lua_pushinteger(L, id * 256 + i);
        lua_rawset(L, e->slot);
        mpe__buf_put_u8(L, b, UP_VALUE);
        enc_push(e, F_UPVAL, f, i);
        const char *name = lua_getupvalue(L, f, i);
        if (name && strcmp(name, "_ENV") == 0 && is_proxy_env(L, lua_gettop(L)))
            mpe__buf_put_u8(L, b, T_GLOBALS);
        else
            enc_value(e, lua_gettop(L));
        lua_pop(L, 1);
        enc_pop(e);
    }
}

static void enc_cfunction(enc *e, int f)
{
    lua_State *L = e->L;
    mpe_buf *b = e->b;
    if (mpe__codec_cfunc_name(L, f)) {
        size_t len;
        const char *name = lua_tolstring(L, -1, &len);
        mpe__buf_put_u8(L, b, T_CFUNC_NAME);
        mpe__buf_put_varint(L, b, len);
        mpe__buf_put(L, b, name, len);
        lua_pop(L, 1);
        return;
    }
    /* No name: by address, valid only in this program image (forked children). */
    if (e->fds == &mpe__codec_remote)
        enc_fail(e, "C function that no name reaches (only named C functions cross MPI ranks)");
    if (mpe__compat_isfastfunc(L, f))
        enc_fail(e, "built-in function that has no name (LuaJIT fast function)");
    lua_Integer id = e->nrefs;
    lua_Debug ar;
    lua_pushvalue(L, f);
    lua_getinfo(L, ">u", &ar);
    size_t start = b->n;
    mpe__buf_put_u8(L, b, T_CFUNC_ADDR);
    mpe__buf_put_u64(L, b, (uint64_t)(uintptr_t)lua_tocfunction(L, f));
    mpe__buf_put_u8(L, b, (unsigned)ar.nups);
    put_mac(e, start);
    /* Mark it unfinished while its upvalues are written: a reference to it
     * from inside them could not be rebuilt. */
    enc_refs(e);
    lua_pushvalue(L, f);
    lua_pushinteger(L, -id);
    lua_rawset(L, e->slot);
    for (int i = 1; i <= ar.nups; i++) {
        enc_push(e, F_UPVAL, f, i);
        lua_getupvalue(L, f, i);
        enc_value(e, lua_gettop(L));
        lua_pop(L, 1);
        enc_pop(e);
    }
    lua_pushvalue(L, f);
    lua_pushinteger(L, id);
    lua_rawset(L, e->slot);
}

/* The type name of a userdata for messages: its metatable's __name, else the
 * registry key its metatable is stored under (LuaJIT's "FILE*" has no
 * __name). Pushes the name (or nothing) on the error path only. */
static const char *userdata_name(lua_State *L, int u)
{
    lua_checkstack(L, 6);
    if (luaL_getmetafield(L, u, "__name") != 0) {
        if (lua_type(L, -1) == LUA_TSTRING)
            return lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    if (!lua_getmetatable(L, u))
        return NULL;
    int mt = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, LUA_REGISTRYINDEX) != 0) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, mt)) {
            lua_pop(L, 1);
            return lua_tostring(L, -1);
        }
        lua_pop(L, 1);
    }
    return NULL;
}

static void enc_userdata(enc *e, int u)
{
    lua_State *L = e->L;
    const mpe_codec_type *t = mpe__codec_type_of(L, u);
    if (!t) {
        char what[96];
        const char *name = userdata_name(L, u);
        if (name)
            snprintf(what, sizeof what, "userdata (%s)", name);
        else
            snprintf(what, sizeof what, "userdata");
        enc_fail(e, what);
    }
    if (e->fds == &mpe__codec_remote) {
        char path[512];
        render_path(e, path, sizeof path);
        luaL_error(L,
                   "mpe: cannot send %s at %s: shared objects cannot cross MPI ranks (a pool "
                   "with ranks = \"local\" can take them)",
                   t->name, path);
    }
    if (!e->fds) {
        char path[512];
        render_path(e, path, sizeof path);
        luaL_error(L,
                   "mpe: cannot send %s at %s: shared objects need descriptor passing, which "
                   "this route (e.g. mpe.encode) does not have",
                   t->name, path);
    }
    if (enc_seen(e, u))
        return;
    size_t len = strlen(t->name);
    mpe__buf_put_u8(L, e->b, T_SHARED);
    mpe__buf_put_varint(L, e->b, len);
    mpe__buf_put(L, e->b, t->name, len);
    t->encode(L, u, e->b, e->fds);
}

/* The one conversion switch, Lua -> bytes. */
static void enc_value(enc *e, int idx)
{
    lua_State *L = e->L;
    mpe_buf *b = e->b;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        mpe__buf_put_u8(L, b, T_NIL);
        break;
    case LUA_TBOOLEAN:
        mpe__buf_put_u8(L, b, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            int64_t v = (int64_t)lua_tointeger(L, idx);
            uint64_t z = ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
            mpe__buf_put_u8(L, b, T_INT);
            mpe__buf_put_varint(L, b, z);
        } else {
            mpe__buf_put_u8(L, b, T_FLOAT);
            mpe__buf_put_f64(L, b, (double)lua_tonumber(L, idx));
        }
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        mpe__buf_put_u8(L, b, T_STR);
        mpe__buf_put_varint(L, b, len);
        mpe__buf_put(L, b, s, len);
        break;
    }
    case LUA_TTABLE:
        enc_table(e, idx);
        break;
    case LUA_TFUNCTION:
        if (enc_seen(e, idx))
            break;
        if (lua_iscfunction(L, idx))
            enc_cfunction(e, idx);
        else
            enc_lfunction(e, idx);
        break;
    case LUA_TUSERDATA:
        enc_userdata(e, idx);
        break;
    case LUA_TTHREAD:
        enc_fail(e, "coroutine");
        break;
    case LUA_TLIGHTUSERDATA:
        enc_fail(e, "light userdata");
        break;
    default:
        enc_fail(e, luaL_typename(L, idx));
        break;
    }
}

void mpe__encode(lua_State *L, int idx, mpe_buf *b, const char *root, mpe_fds *fds)
{
    enc e;
    idx = lua_absindex(L, idx);
    e.L = L;
    e.b = b;
    e.fds = fds;
    e.root = root ? root : "value";
    e.depth = 0;
    e.has_refs = 0;
    e.nrefs = 0;
    e.slot = 0;
    e.globals = NULL;
    int t = lua_type(L, idx);
    if (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA) {
        luaL_checkstack(L, 12, "mpe: cannot send value");
        lua_pushglobaltable(L);
        e.globals = lua_topointer(L, -1);
        lua_pop(L, 1);
        lua_pushnil(L); /* the reference table's slot */
        e.slot = lua_gettop(L);
        enc_value(&e, idx);
        lua_settop(L, e.slot - 1);
    } else {
        enc_value(&e, idx);
    }
}

/* ---- decoder ---------------------------------------------------------------------- */

typedef struct dec {
    lua_State *L;
    mpe_rd *r;
    mpe_fds *fds;
    int slot; /* stack slot of the reference table (id -> object) */
    int has_refs; /* 0: none met; 1: the slot holds the first object; 2: the slot holds the id table */
    lua_Integer nrefs;
    int depth;
    size_t budget; /* array slots the input can still justify (one byte each) */
} dec;

static void dec_value(dec *d);

static void dec_fail(dec *d, const char *what)
{
    luaL_error(d->L, "mpe: decode: %s at offset %d", what, (int)d->r->pos);
}

static void dec_truncated(dec *d)
{
    dec_fail(d, "truncated input");
}

static unsigned rd_u8(dec *d)
{
    unsigned v;
    if (MPE_UNLIKELY(mpe__rd_u8(d->r, &v) != 0))
        dec_truncated(d);
    return v;
}

static uint64_t rd_varint(dec *d)
{
    uint64_t v;
    if (MPE_UNLIKELY(mpe__rd_varint(d->r, &v) != 0))
        dec_fail(d, "truncated or malformed varint");
    return v;
}

static uint64_t rd_u64(dec *d)
{
    uint64_t v;
    if (MPE_UNLIKELY(mpe__rd_u64(d->r, &v) != 0))
        dec_truncated(d);
    return v;
}

static uint32_t rd_u32(dec *d)
{
    uint32_t v;
    if (MPE_UNLIKELY(mpe__rd_u32(d->r, &v) != 0))
        dec_truncated(d);
    return v;
}

static const unsigned char *rd_bytes(dec *d, uint64_t n)
{
    const unsigned char *p = NULL;
    if (MPE_UNLIKELY(n > d->r->n - d->r->pos || mpe__rd_bytes(d->r, (size_t)n, &p) != 0))
        dec_truncated(d);
    return p;
}

static size_t remaining(dec *d)
{
    return d->r->n - d->r->pos;
}

static void dec_enter(dec *d)
{
    if (MPE_UNLIKELY(++d->depth > MPE_MAX_DEPTH)) {
        char what[64];
        snprintf(what, sizeof what, "nesting deeper than %d levels", MPE_MAX_DEPTH);
        dec_fail(d, what);
    }
    if (MPE_UNLIKELY(!lua_checkstack(d->L, 8)))
        dec_fail(d, "out of Lua stack");
}

/* Make the reference slot a table. Until a second object is met it holds
 * just the first one (has_refs == 1), so decoding a flat table, the common
 * case, allocates no reference table (as on the encoding side). */
static void dec_refs(dec *d)
{
    lua_State *L = d->L;
    if (d->has_refs == 2)
        return;
    lua_newtable(L);
    if (d->has_refs == 1) {
        lua_pushvalue(L, d->slot);
        lua_rawseti(L, -2, 1);
    }
    lua_replace(L, d->slot);
    d->has_refs = 2;
}

/* Give the object on top of the stack the next id. */
static void dec_addref(dec *d)
{
    lua_State *L = d->L;
    if (d->has_refs == 0) {
        lua_pushvalue(L, -1);
        lua_replace(L, d->slot);
        d->has_refs = 1;
        ++d->nrefs;
        return;
    }
    dec_refs(d);
    lua_pushvalue(L, -1);
    lua_rawseti(L, d->slot, ++d->nrefs);
}

/* Push the object with id (1..nrefs, checked by the caller). */
static void dec_getref(dec *d, lua_Integer id)
{
    if (d->has_refs == 1)
        lua_pushvalue(d->L, d->slot); /* id is 1: the only object */
    else
        lua_rawgeti(d->L, d->slot, id);
}

/* A name from the input, made printable for messages, in s. */
static const char *printable(const unsigned char *p, size_t n, char s[68])
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < 64; i++)
        s[k++] = (p[i] >= 32 && p[i] < 127) ? (char)p[i] : '?';
    if (n > 64) {
        memcpy(s + 61, "...", 3);
        k = 64;
    }
    s[k] = 0;
    return s;
}

void mpe__decode_numbers(lua_State *L, int t, lua_Integer first, const void *p, size_t len,
                         size_t count, int ints)
{
    /* lua_rawseti takes an int under LuaJIT. */
    const uint64_t top = MPE_HAS_INTEGERS ? (uint64_t)INT64_MAX : (uint64_t)INT_MAX;
    if (MPE_UNLIKELY(count > len / 8))
        luaL_error(L, "mpe: decode: %d packed numbers in %d bytes", (int)count, (int)len);
    if (count == 0)
        return;
    if (MPE_UNLIKELY(first < 1 || (uint64_t)first > top - (count - 1)))
        luaL_error(L, "mpe: decode: packed numbers at index %d do not fit", (int)first);
    const unsigned char *q = p;
    /* One pass per kind, no reader calls: this is the parent's loop for every
     * packed result frame (ten million items for a big map). */
    if (ints) {
        for (size_t i = 0; i < count; i++) {
            lua_pushinteger(L, (lua_Integer)(int64_t)ld64(q + 8 * i));
            lua_rawseti(L, t, first + (lua_Integer)i);
        }
    } else {
        for (size_t i = 0; i < count; i++) {
            uint64_t u = ld64(q + 8 * i);
            double v;
            memcpy(&v, &u, 8);
            lua_pushnumber(L, v);
            lua_rawseti(L, t, first + (lua_Integer)i);
        }
    }
}

static void dec_table(dec *d, unsigned tag)
{
    lua_State *L = d->L;
    uint64_t n = rd_varint(d);
    uint64_t room = tag == T_TABLE ? remaining(d) : remaining(d) / 8;
    if (n > room || n > INT32_MAX)
        dec_fail(d, "array length larger than the input");
    /* Preallocate only what the input can fill: nested headers that each claim
     * the rest of the input must not multiply it. */
    int hint = n <= d->budget ? (int)n : 0;
    d->budget -= (size_t)hint;
    lua_createtable(L, hint, 0);
    int t = lua_gettop(L);
    dec_addref(d);
    dec_enter(d);
    if (tag == T_TABLE) {
        for (uint64_t i = 1; i <= n; i++) {
            mpe_rd *r = d->r;
            if (r->pos < r->n && r->p[r->pos] == T_INT) { /* a list of integers, inline */
                r->pos++;
                uint64_t z = rd_varint(d);
                lua_pushinteger(L, (lua_Integer)(int64_t)((z >> 1) ^ (0 - (z & 1))));
            } else {
                dec_value(d);
            }
            lua_rawseti(L, t, (int)i);
        }
    } else {
        const unsigned char *p = rd_bytes(d, n * 8);
        mpe__decode_numbers(L, t, 1, p, (size_t)n * 8, (size_t)n, tag == T_TABLE_INT);
    }
    uint32_t m = rd_u32(d);
    if (m > remaining(d) / 2)
        dec_fail(d, "key count larger than the input");
    for (uint32_t i = 0; i < m; i++) {
        dec_value(d);
        int kt = lua_type(L, -1);
        if (kt == LUA_TNIL || (kt == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1)))
            dec_fail(d, "table key is nil or NaN");
        dec_value(d);
        lua_rawset(L, t);
    }
    unsigned mark = rd_u8(d);
    if (mark == MT_VALUE) {
        dec_value(d);
        if (lua_type(L, -1) != LUA_TTABLE)
            dec_fail(d, "metatable is not a table");
        lua_setmetatable(L, t);
    } else if (mark == MT_NAME) {
        uint64_t len = rd_varint(d);
        const unsigned char *name = rd_bytes(d, len);
        if (!mpe__codec_mt_named(L, (const char *)name, (size_t)len)) {
            char what[160], pbuf[68];
            snprintf(what, sizeof what,
                     "unknown metatable '%s' (not registered with mpe.register here)",
                     printable(name, (size_t)len, pbuf));
            dec_fail(d, what);
        }
        lua_setmetatable(L, t);
    } else if (mark != MT_NONE) {
        dec_fail(d, "bad metatable mark");
    }
    d->depth--;
}

static void check_mac(dec *d, size_t start)
{
    size_t end = d->r->pos;
    uint64_t want = rd_u64(d);
    uint64_t got = mpe__codec_mac(d->r->p + start, end - start);
    if ((want ^ got) != 0)
        dec_fail(d, "function from another program (checksum mismatch)");
}

static void dec_lfunction(dec *d, size_t start)
{
    lua_State *L = d->L;
    uint32_t len = rd_u32(d);
    const unsigned char *bc = rd_bytes(d, len);
    unsigned nups = rd_u8(d);
    check_mac(d, start);
    if (luaL_loadbufferx(L, (const char *)bc, len, "=(mpe)", "b") != LUA_OK) {
        char what[256];
        snprintf(what, sizeof what, "cannot load function: %s", lua_tostring(L, -1));
        dec_fail(d, what);
    }
    int f = lua_gettop(L);
    lua_Debug ar;
    lua_pushvalue(L, f);
    lua_getinfo(L, ">u", &ar);
    if ((unsigned)ar.nups != nups)
        dec_fail(d, "function upvalue count mismatch");
    dec_addref(d);
    dec_enter(d);
    for (unsigned i = 1; i <= nups; i++) {
        unsigned mark = rd_u8(d);
        if (mark == UP_VALUE) {
            dec_value(d);
            lua_setupvalue(L, f, (int)i);
        } else if (mark == UP_JOIN) {
            uint64_t id = rd_varint(d);
            unsigned k = rd_u8(d);
            if (id < 1 || id > (uint64_t)d->nrefs)
                dec_fail(d, "bad upvalue reference");
            dec_getref(d, (lua_Integer)id);
            if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1) ||
                lua_getupvalue(L, -1, (int)k) == NULL)
                dec_fail(d, "bad upvalue reference");
            lua_pop(L, 1);
            lua_upvaluejoin(L, f, (int)i, -1, (int)k);
            lua_pop(L, 1);
        } else {
            dec_fail(d, "bad upvalue mark");
        }
    }
    d->depth--;
}

static void dec_cfunction_addr(dec *d, size_t start)
{
    lua_State *L = d->L;
    uint64_t addr = rd_u64(d);
    unsigned nups = rd_u8(d);
    check_mac(d, start);
    dec_refs(d);
    lua_Integer id = ++d->nrefs; /* filled in once the closure exists */
    dec_enter(d);
    if (!lua_checkstack(L, (int)nups + 4))
        dec_fail(d, "out of Lua stack");
    for (unsigned i = 0; i < nups; i++)
        dec_value(d);
    lua_pushcclosure(L, (lua_CFunction)(uintptr_t)addr, (int)nups);
    lua_pushvalue(L, -1);
    lua_rawseti(L, d->slot, (int)id);
    d->depth--;
}

static void dec_module(dec *d)
{
    lua_State *L = d->L;
    uint64_t len = rd_varint(d);
    const unsigned char *name = rd_bytes(d, len);
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (lua_istable(L, -1)) {
        lua_pushlstring(L, (const char *)name, (size_t)len);
        lua_rawget(L, -2);
        lua_remove(L, -2);
    }
    if (!lua_istable(L, -1)) {
        char what[160];
        snprintf(what, sizeof what, "module '%.*s' is not loaded here (require it in the task or the initializer)",
                 (int)(len > 100 ? 100 : len), (const char *)name);
        dec_fail(d, what);
    }
}

static void dec_cfunction_name(dec *d)
{
    lua_State *L = d->L;
    uint64_t len = rd_varint(d);
    const unsigned char *name = rd_bytes(d, len);
    if (!mpe__codec_cfunc_find(L, (const char *)name, (size_t)len)) {
        char what[160], pbuf[68];
        snprintf(what, sizeof what, "unknown C function '%s'", printable(name, (size_t)len, pbuf));
        dec_fail(d, what);
    }
    dec_addref(d);
}

static void dec_shared(dec *d)
{
    lua_State *L = d->L;
    uint64_t len = rd_varint(d);
    const unsigned char *name = rd_bytes(d, len);
    const mpe_codec_type *t = mpe__codec_type_named(L, (const char *)name, (size_t)len);
    if (!t) {
        char what[160], pbuf[68];
        snprintf(what, sizeof what, "unknown shared object type '%s'",
                 printable(name, (size_t)len, pbuf));
        dec_fail(d, what);
    }
    int top = lua_gettop(L);
    t->decode(L, d->r, d->fds);
    if (lua_gettop(L) != top + 1)
        luaL_error(L, "mpe: decode: %s decoder pushed %d values", t->name, lua_gettop(L) - top);
    dec_addref(d);
}

/* The one conversion switch, bytes -> Lua. */
static void dec_value(dec *d)
{
    lua_State *L = d->L;
    size_t start = d->r->pos;
    unsigned tag = rd_u8(d);
    switch (tag) {
    case T_NIL:
        lua_pushnil(L);
        break;
    case T_FALSE:
    case T_TRUE:
        lua_pushboolean(L, tag == T_TRUE);
        break;
    case T_INT: {
        uint64_t z = rd_varint(d);
        uint64_t u = (z >> 1) ^ (0 - (z & 1));
        lua_pushinteger(L, (lua_Integer)(int64_t)u);
        break;
    }
    case T_FLOAT: {
        double v;
        if (mpe__rd_f64(d->r, &v) != 0)
            dec_truncated(d);
        lua_pushnumber(L, v);
        break;
    }
    case T_STR: {
        uint64_t len = rd_varint(d);
        const unsigned char *s = rd_bytes(d, len);
        lua_pushlstring(L, (const char *)s, (size_t)len);
        break;
    }
    case T_TABLE:
    case T_TABLE_INT:
    case T_TABLE_FLOAT:
        dec_table(d, tag);
        break;
    case T_REF: {
        uint64_t id = rd_varint(d);
        if (id < 1 || id > (uint64_t)d->nrefs)
            dec_fail(d, "bad reference");
        dec_getref(d, (lua_Integer)id);
        if (lua_type(L, -1) == LUA_TNIL)
            dec_fail(d, "reference to an unfinished value");
        break;
    }
    case T_GLOBALS:
        lua_pushglobaltable(L);
        break;
    case T_LFUNC:
        dec_lfunction(d, start);
        break;
    case T_CFUNC_NAME:
        dec_cfunction_name(d);
        break;
    case T_CFUNC_ADDR:
        dec_cfunction_addr(d, start);
        break;
    case T_SHARED:
        dec_shared(d);
        break;
    case T_MODULE:
        dec_module(d);
        break;
    default:
        d->r->pos = start;
        dec_fail(d, "bad tag");
        break;
    }
}

void mpe__decode(lua_State *L, mpe_rd *r, mpe_fds *fds)
{
    dec d;
    d.L = L;
    d.r = r;
    d.fds = fds;
    d.has_refs = 0;
    d.nrefs = 0;
    d.depth = 0;
    d.slot = 0;
    d.budget = r->n - r->pos;
    luaL_checkstack(L, 12, "mpe: decode");
    /* Scalars need no reference table; anything else gets a slot below it. */
    if (r->pos < r->n && r->p[r->pos] <= T_STR) {
        dec_value(&d);
        return;
    }
    lua_pushnil(L);
    d.slot = lua_gettop(L);
    dec_value(&d);
    lua_replace(L, d.slot);
}
