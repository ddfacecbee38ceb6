/* codec_link.c -- what the wire format links by name or trusts by key: the
 * index of C functions by name, the registries of named metatables and of
 * shared-object types, and the SipHash-2-4 MAC that guards code.
 * SPDX-License-Identifier: MIT
 *
 * All of it lives in the Lua registry (per lua_State, inherited by forked
 * children) except the MAC key, which is per process and inherited by fork. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "err.h"

#define TYPES_KEY "mpe.codec.types"   /* __name -> light userdata (mpe_codec_type *) */
#define MTS_KEY "mpe.codec.mts"       /* name -> metatable and metatable -> name */
#define CFUNCS_KEY "mpe.codec.cfuncs" /* C function -> name and name -> C function */
#define CMISS_KEY "mpe.codec.cmiss"   /* C functions known to have no name (weak) */

/* ---- SipHash-2-4 and the per-process key -------------------------------------
 * lua_load trusts bytecode, and a C function address is a jump target: both are
 * accepted only with a MAC made with a key that never leaves the process
 * family (drawn once, inherited by fork). */

static unsigned char mac_key[16];
static int mac_key_ready;

static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static void sipround(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = rotl(v[1], 13);
    v[1] ^= v[0];
    v[0] = rotl(v[0], 32);
    v[2] += v[3];
    v[3] = rotl(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = rotl(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = rotl(v[1], 17);
    v[1] ^= v[2];
    v[2] = rotl(v[2], 32);
}

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t siphash24(const unsigned char k[16], const unsigned char *in, size_t len)
{
    uint64_t k0 = le64(k), k1 = le64(k + 8);
    uint64_t v[4] = {k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL,
                     k0 ^ 0x6c7967656e657261ULL, k1 ^ 0x7465646279746573ULL};
    size_t end = len - (len % 8);
    for (size_t i = 0; i < end; i += 8) {
        uint64_t m = le64(in + i);
        v[3] ^= m;
        sipround(v);
        sipround(v);
        v[0] ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = 0; i < len % 8; i++)
        last |= (uint64_t)in[end + i] << (8 * i);
    v[3] ^= last;
    sipround(v);
    sipround(v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sipround(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* Draw the key. getrandom cannot fail for 16 bytes once the pool is
 * initialised; the fallbacks only matter on kernels without it. */
static void key_init(void)
{
    if (MPE_LIKELY(mac_key_ready))
        return;
    size_t got = 0;
    while (got < sizeof mac_key) {
        ssize_t r = getrandom(mac_key + got, sizeof mac_key - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got < sizeof mac_key) {
        int fd;
        do
            fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        while (fd == -1 && errno == EINTR);
        if (fd >= 0) {
            while (got < sizeof mac_key) {
                ssize_t r = read(fd, mac_key + got, sizeof mac_key - got);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            close(fd);
        }
    }
    if (got < sizeof mac_key) {
        /* Last resort: not secret, but still distinct per program run. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t seed[2] = {(uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32),
                            (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&got};
        memcpy(mac_key, seed, sizeof mac_key);
    }
    mac_key_ready = 1;
}

void mpe__codec_set_key(const unsigned char key[16])
{
    memcpy(mac_key, key, sizeof mac_key);
    mac_key_ready = 1;
}

void mpe__codec_get_key(unsigned char key[16])
{
    key_init();
    memcpy(key, mac_key, sizeof mac_key);
}

/* Never holds descriptors: its address is the mark of the cross-rank route. */
mpe_fds mpe__codec_remote;

void mpe__codec_init(void)
{
    key_init();
}

uint64_t mpe__codec_mac(const void *p, size_t n)
{
    key_init();
    return siphash24(mac_key, p, n);
}

/* ---- registries in the Lua registry ------------------------------------------ */

/* Push registry[key], creating it (with the given __mode, or none) if absent. */
static void registry_table(lua_State *L, const char *key, const char *mode)
{
    lua_getfield(L, LUA_REGISTRYINDEX, key);
    if (lua_type(L, -1) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    lua_newtable(L);
    if (mode) {
        lua_createtable(L, 0, 1);
        lua_pushstring(L, mode);
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, key);
}

void mpe__codec_add_type(lua_State *L, const mpe_codec_type *t)
{
    luaL_checkstack(L, 3, "mpe: codec");
    registry_table(L, TYPES_KEY, NULL);
    lua_pushlightuserdata(L, (void *)t);
    lua_setfield(L, -2, t->name);
    lua_pop(L, 1);
}

void mpe__codec_register_mt(lua_State *L, const char *name, int mt)
{
    mt = lua_absindex(L, mt);
    luaL_checkstack(L, 4, "mpe: codec");
    registry_table(L, MTS_KEY, NULL);
    lua_getfield(L, -1, name);
    if (lua_type(L, -1) != LUA_TNIL) {
        if (!lua_rawequal(L, -1, mt))
            luaL_error(L, "mpe: register: the name '%s' is already registered with another table",
                       name);
        lua_pop(L, 2);
        return;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, mt);
    lua_rawget(L, -2);
    if (lua_type(L, -1) == LUA_TSTRING)
        luaL_error(L, "mpe: register: this table is already registered as '%s'",
                   lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_pushvalue(L, mt);
    lua_setfield(L, -2, name);
    lua_pushvalue(L, mt);
    lua_pushstring(L, name);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* ---- C functions by name -----------------------------------------------------------
 * A C function travels by name when the receiver can reach it by that name:
 * "g" is the global g, "m.f" is package.loaded["m"].f or the global table m's
 * field f. The receiver resolves a name directly (resolve), so it always sees
 * its current state; the sender finds a name through an index function ->
 * name, built on first use and rebuilt when a function is missing or its name
 * no longer reaches it (host programs register functions after opening mpe,
 * scripts replace globals). A function that misses again after a rebuild is
 * remembered, so it does not cost a rebuild on every message, until some other
 * miss rebuilds the index. */

/* Push t[k] (raw) for the table at t and the string k[0..len). */
static void rawget_str(lua_State *L, int t, const char *k, size_t len)
{
    lua_pushlstring(L, k, len);
    lua_rawget(L, t < 0 ? t - 1 : t);
}

/* Longer names are refused unresolved: each dot costs a lookup of the prefix,
 * and a decoder must not spend quadratic time on a crafted name. */
#define NAME_MAX_LEN 256

/* Push the C function that name reaches and return 1, else return 0. */
static int resolve(lua_State *L, const char *name, size_t len)
{
    if (len > NAME_MAX_LEN)
        return 0;
    luaL_checkstack(L, 6, "mpe: codec");
    int top = lua_gettop(L);
    lua_pushglobaltable(L);
    int g = top + 1;
    rawget_str(L, g, name, len);
    if (lua_iscfunction(L, -1))
        goto found;
    lua_settop(L, g);
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    int loaded = lua_type(L, -1) == LUA_TTABLE ? g + 1 : 0;
    for (size_t dot = len; dot-- > 0;) {
        if (name[dot] != '.')
            continue;
        for (int src = 0; src < 2; src++) {
            int from = src == 0 ? loaded : g;
            if (!from)
                continue;
            rawget_str(L, from, name, dot);
            if (lua_type(L, -1) == LUA_TTABLE) {
                rawget_str(L, -1, name + dot + 1, len - dot - 1);
                if (lua_iscfunction(L, -1))
                    goto found;
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
    }
    lua_settop(L, top);
    return 0;
found:
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 1;
}

static void index_add(lua_State *L, int tbl, const char *prefix, const char *key, int fn)
{
    lua_pushvalue(L, fn);
    lua_rawget(L, tbl);
    int known = lua_type(L, -1) != LUA_TNIL;
    lua_pop(L, 1);
    if (known)
        return;
    lua_pushvalue(L, fn);
    if (prefix)
        lua_pushfstring(L, "%s.%s", prefix, key);
    else
        lua_pushstring(L, key);
    lua_rawset(L, tbl);
}

/* Add the C functions stored under string keys of the table at src. */
static void index_scan(lua_State *L, int tbl, int src, const char *prefix, int nested)
{
    lua_pushnil(L);
    while (lua_next(L, src) != 0) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -2);
            if (lua_iscfunction(L, -1))
                index_add(L, tbl, prefix, k, lua_gettop(L));
            else if (nested && lua_type(L, -1) == LUA_TTABLE)
                index_scan(L, tbl, lua_gettop(L), k, 0);
        }
        lua_pop(L, 1);
    }
}

/* Build the index (function -> name, weak keys), store it, forget the
 * remembered misses, and leave the index on the stack. */
static void index_build(lua_State *L)
{
    luaL_checkstack(L, 12, "mpe: codec");
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, CMISS_KEY);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    int tbl = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    if (lua_type(L, -1) == LUA_TTABLE) {
        int loaded = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, loaded) != 0) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE)
                index_scan(L, tbl, lua_gettop(L), lua_tostring(L, -2), 0);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    lua_pushglobaltable(L);
    index_scan(L, tbl, lua_gettop(L), NULL, 1);
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, CFUNCS_KEY);
}

/* With the index on top: push the name of fn (at idx) if it still reaches fn
 * and return 1; else return 0. */
static int index_name(lua_State *L, int idx)
{
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t len;
        const char *name = lua_tolstring(L, -1, &len);
        if (resolve(L, name, len)) {
            int same = lua_rawequal(L, -1, idx);
            lua_pop(L, 1);
            if (same)
                return 1;
        }
    }
    lua_pop(L, 1);
    return 0;
}

int mpe__codec_cfunc_name(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 8, "mpe: codec");
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, CFUNCS_KEY);
    if (lua_type(L, -1) == LUA_TTABLE && index_name(L, idx))
        goto found;
    lua_settop(L, top);
    registry_table(L, CMISS_KEY, "k");
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    int missed = lua_toboolean(L, -1);
    lua_settop(L, top);
    if (missed)
        return 0;
    index_build(L);
    if (index_name(L, idx))
        goto found;
    lua_settop(L, top);
    registry_table(L, CMISS_KEY, "k");
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_settop(L, top);
    return 0;
found:
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 1;
}

int mpe__codec_cfunc_find(lua_State *L, const char *name, size_t len)
{
    return resolve(L, name, len);
}

/* ---- shared-object types and registered metatables --------------------------------- */

const mpe_codec_type *mpe__codec_type_of(lua_State *L, int idx)
{
    const mpe_codec_type *t = NULL;
    if (!lua_getmetatable(L, idx))
        return NULL;
    int mt = lua_gettop(L);
    registry_table(L, TYPES_KEY, NULL);
    int types = mt + 1;
    lua_pushliteral(L, "__name");
    lua_rawget(L, mt);
    if (lua_type(L, -1) == LUA_TSTRING) {
        lua_rawget(L, types);
        t = lua_touserdata(L, -1);
    } else {
        /* No __name (LuaJIT's luaL_newmetatable sets none): compare metatables. */
        lua_pushnil(L);
        while (!t && lua_next(L, types) != 0) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                luaL_getmetatable(L, lua_tostring(L, -2));
                if (lua_rawequal(L, -1, mt))
                    t = lua_touserdata(L, -2);
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
    }
    lua_settop(L, mt - 1);
    return t;
}

const mpe_codec_type *mpe__codec_type_named(lua_State *L, const char *name, size_t len)
{
    const mpe_codec_type *t = NULL;
    luaL_checkstack(L, 3, "mpe: codec");
    lua_getfield(L, LUA_REGISTRYINDEX, TYPES_KEY);
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_pushlstring(L, name, len);
        lua_rawget(L, -2);
        if (lua_type(L, -1) == LUA_TLIGHTUSERDATA)
            t = lua_touserdata(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return t;
}

int mpe__codec_mt_name(lua_State *L, int mt)
{
    mt = lua_absindex(L, mt);
    luaL_checkstack(L, 3, "mpe: codec");
    lua_getfield(L, LUA_REGISTRYINDEX, MTS_KEY);
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_pushvalue(L, mt);
        lua_rawget(L, -2);
        if (lua_type(L, -1) == LUA_TSTRING) {
            lua_remove(L, -2);
            return 1;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

int mpe__codec_mt_named(lua_State *L, const char *name, size_t len)
{
    luaL_checkstack(L, 3, "mpe: codec");
    lua_getfield(L, LUA_REGISTRYINDEX, MTS_KEY);
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_pushlstring(L, name, len);
        lua_rawget(L, -2);
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_remove(L, -2);
            return 1;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}
