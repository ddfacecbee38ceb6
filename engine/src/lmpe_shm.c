/* lmpe_shm.c -- Lua bindings of shared arrays and values: mpe.array,
 * mpe.value, their metatables and their codec hooks (they travel by reference).
 * SPDX-License-Identifier: MIT
 *
 * A userdata holds a pointer to the process's mpe_shm_obj for the object
 * (shm.c), created closed and filled once the object exists. a[i] is the hot
 * path: __index and __newindex are C functions that try an integer key first
 * and only then look for a method name in the method table (an upvalue). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "compat.h"
#include "array.h"
#include "buf.h"
#include "codec.h"
#include "err.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "shm.h"

#define ARRAY_MT "mpe.Array"
#define VALUE_MT "mpe.Value"

typedef struct shmud {
    mpe_shm_obj *o;    /* NULL once closed */
    const void *tag;   /* &array_tag in arrays: the fast path's type check */
} shmud;

static const char array_tag = 'A', value_tag = 'V';

static const void *tag_of(const char *mt)
{
    return strcmp(mt, ARRAY_MT) == 0 ? (const void *)&array_tag : (const void *)&value_tag;
}

/* ---- helpers ------------------------------------------------------------------ */

static shmud *newud(lua_State *L, const char *mt)
{
    shmud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->o = NULL;
    u->tag = tag_of(mt);
    luaL_setmetatable(L, mt);
    return u;
}

/* The userdata at idx if it is an mt, else NULL. A full userdata of our size
 * carrying the type's tag address is ours: cheaper than luaL_testudata's
 * registry lookup and metatable comparison. */
static shmud *toshm(lua_State *L, int idx, const char *mt)
{
    shmud *u = lua_touserdata(L, idx);
    if (lua_type(L, idx) != LUA_TUSERDATA || lua_rawlen(L, idx) != sizeof *u ||
        u->tag != tag_of(mt))
        return NULL;
    return u;
}

/* The one checker of mpe.Array and mpe.Value (mt says which): the userdata
 * at idx, open or closed, raising if it is not one. */
static shmud *checkshm(lua_State *L, int idx, const char *mt, const char *fname)
{
    shmud *u = toshm(L, idx, mt);
    if (!u)
        mpe__typeerror(L, idx, mt, fname);
    return u;
}

/* The object of the userdata at idx, raising if it is not one or closed. */
static mpe_shm_obj *checkobj(lua_State *L, int idx, const char *mt, const char *fname)
{
    shmud *u = checkshm(L, idx, mt, fname);
    if (!u->o)
        mpe__fail(L, "mpe: attempt to use a closed %s", mt);
    return u->o;
}

mpe_shm_obj *mpe__array_test(lua_State *L, int idx)
{
    shmud *u = toshm(L, idx, ARRAY_MT);
    return u ? u->o : NULL;
}

static void pushnum(lua_State *L, mpe_num v)
{
    if (v.isint)
        lua_pushinteger(L, (lua_Integer)v.i);
    else
        lua_pushnumber(L, (lua_Number)v.d);
}

/* The number at idx, raising if it is not one. */
static mpe_num checknum(lua_State *L, int idx, const char *fname, const char *what)
{
    mpe_num v = {0, 0, 0};
    if (lua_type(L, idx) != LUA_TNUMBER)
        mpe__argerror(L, fname, 0, "%s must be a number, got %s", what, mpe__typename(L, idx));
    if (lua_isinteger(L, idx)) {
        v.isint = 1;
        v.i = (int64_t)lua_tointeger(L, idx);
    } else {
        v.d = (double)lua_tonumber(L, idx);
    }
    return v;
}

/* Convert the number at idx for o, raising with fname's context. */
static uint64_t checkelem(lua_State *L, mpe_shm_obj *o, int idx, const char *fname)
{
    mpe_num v = checknum(L, idx, fname, "value");
    uint64_t bits;
    mpe_err e;
    if (mpe__array_check(o, v, &bits, &e) != 0)
        mpe__fail(L, "mpe: %s: %s", fname, e.msg);
    return bits;
}

/* A 1-based index argument (or the key of a[i]) -> 0-based, checked. */
static size_t checkindex(lua_State *L, mpe_shm_obj *o, int idx, const char *fname)
{
    lua_Integer i;
    if (lua_isinteger(L, idx)) {
        i = lua_tointeger(L, idx);
    } else if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Number d = lua_tonumber(L, idx);
        if (d != floor(d) || !(d >= -9.2e18 && d <= 9.2e18))
            mpe__argerror(L, fname, 0, "index %s is not an integer", lua_tostring(L, idx));
        i = (lua_Integer)d;
    } else {
        mpe__argerror(L, fname, 0, "index must be an integer, got %s", mpe__got(L, idx));
    }
    if ((uint64_t)i - 1 >= (uint64_t)o->n)
        mpe__argerror(L, fname, 0, "index %lld out of range 1..%lld", (long long)i,
                      (long long)o->n);
    return (size_t)(i - 1);
}

/* A count argument: a non-negative integer. */
static size_t checkcount(lua_State *L, int idx, const char *fname, const char *what)
{
    if (!lua_isinteger(L, idx) || lua_tointeger(L, idx) < 0)
        mpe__argerror(L, fname, idx, "must be %s, got %s", what, mpe__got(L, idx));
    return (size_t)lua_tointeger(L, idx);
}

static const mpe_ctype *checkctype(lua_State *L, int idx, const char *fname)
{
    const mpe_ctype *t = lua_type(L, idx) == LUA_TSTRING ? mpe__array_ctype(lua_tostring(L, idx))
                                                          : NULL;
    if (!t)
        mpe__fail(L,
                   "mpe: %s: argument %d must be a ctype name (int8, ..., double) or typecode, "
                   "got %s",
                   fname, idx, mpe__got(L, idx));
    return t;
}

/* Create an array object. A full descriptor table or memory shortage first
 * gets a full garbage collection (dead arrays hold descriptors and mappings
 * the collector cannot see), then one more try. A large array also advances
 * the collector by its size, so that loops making big arrays stay bounded. */
static mpe_shm_obj *create(lua_State *L, const mpe_ctype *t, int ndim, size_t rows, size_t cols,
                           const char *fname)
{
    mpe_err e;
    errno = 0;
    mpe_shm_obj *o = mpe__array_new(t, ndim, rows, cols, &e);
    if (!o && (errno == EMFILE || errno == ENFILE || errno == ENOMEM)) {
        lua_gc(L, LUA_GCCOLLECT, 0);
        o = mpe__array_new(t, ndim, rows, cols, &e);
    }
    if (!o)
        mpe__fail(L, "mpe: %s: %s", fname, e.msg);
    size_t kb = mpe__shm_size(o) / 1024;
    if (kb >= 64)
        lua_gc(L, LUA_GCSTEP, kb > INT_MAX ? INT_MAX : (int)kb);
    return o;
}

/* An optional integer argument. */
static lua_Integer optint(lua_State *L, int idx, lua_Integer def, const char *fname)
{
    if (lua_isnoneornil(L, idx))
        return def;
    if (!lua_isinteger(L, idx))
        mpe__argerror(L, fname, idx, "must be an integer, got %s", mpe__got(L, idx));
    return lua_tointeger(L, idx);
}

/* Check a range [i, j] at args a, a+1 (defaults 1, n) -> [from, to). */
static void checkrange(lua_State *L, mpe_shm_obj *o, int a, const char *fname, size_t *from,
                       size_t *to)
{
    lua_Integer n = (lua_Integer)o->n;
    lua_Integer i = optint(L, a, 1, fname);
    lua_Integer j = optint(L, a + 1, n, fname);
    if (i < 1 || j > n || i > j + 1)
        mpe__argerror(L, fname, 0, "range %lld..%lld out of bounds 1..%lld",
                      (long long)i, (long long)j, (long long)n);
    *from = (size_t)(i - 1);
    *to = (size_t)j;
}

/* ---- mpe.array -------------------------------------------------------------------- */

static void copy_values(lua_State *L, mpe_shm_obj *o, int tbl, size_t first, size_t count,
                        const char *fname)
{
    char what[48];
    /* Check everything before writing anything: a failed copy changes nothing. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < count; k++) {
            lua_rawgeti(L, tbl, (lua_Integer)k + 1);
            snprintf(what, sizeof what, "item %zu", k + 1);
            mpe_num v = checknum(L, -1, fname, what);
            uint64_t bits;
            mpe_err e;
            if (mpe__array_check(o, v, &bits, &e) != 0)
                mpe__argerror(L, fname, 0, "item %d: %s", (int)(k + 1), e.msg);
            if (pass == 1)
                mpe__array_put(o, first + k, bits);
            lua_pop(L, 1);
        }
    }
}

static int l_array(lua_State *L)
{
    const mpe_ctype *t = checkctype(L, 1, "array");
    int ndim = 1;
    size_t rows, cols = 1;
    int values = lua_type(L, 2) == LUA_TTABLE;
    if (values) {
        if (!lua_isnoneornil(L, 3))
            mpe__argerror(L, "array", 3, "must be absent when argument 2 is a table of values, got %s",
                          mpe__got(L, 3));
        rows = (size_t)lua_rawlen(L, 2);
    } else {
        rows = checkcount(L, 2, "array", "a non-negative integer (a length) or a table of numbers");
        if (!lua_isnoneornil(L, 3)) {
            cols = checkcount(L, 3, "array", "a non-negative integer (columns)");
            ndim = 2;
        }
    }
    shmud *u = newud(L, ARRAY_MT);
    u->o = create(L, t, ndim, rows, cols, "array");
    if (values)
        copy_values(L, u->o, 2, 0, rows, "array");
    return 1;
}

/* ---- array metamethods: the hot path ----------------------------------------------- */

/* The array of __index/__newindex (whose upvalue is the method table).
 * Comparing metatables costs a third of an a[i]; a full userdata of our size
 * carrying our tag's address is as good a proof and nearly free. Anything
 * else takes the slow, exact check (which raises). */
static shmud *self_fast(lua_State *L)
{
    shmud *u = lua_touserdata(L, 1);
    if (MPE_UNLIKELY(lua_type(L, 1) != LUA_TUSERDATA || lua_rawlen(L, 1) != sizeof *u ||
                     u->tag != &array_tag)) {
        u = checkshm(L, 1, ARRAY_MT, "array");
    }
    return u;
}

static mpe_shm_obj *opened(lua_State *L, shmud *u)
{
    if (MPE_UNLIKELY(!u->o))
        mpe__fail(L, "mpe: attempt to use a closed %s", ARRAY_MT);
    return u->o;
}

static void push_shape(lua_State *L, mpe_shm_obj *o)
{
    size_t rows, cols;
    int ndim = mpe__array_shape(o, &rows, &cols);
    lua_createtable(L, ndim, 0);
    lua_pushinteger(L, (lua_Integer)rows);
    lua_rawseti(L, -2, 1);
    if (ndim == 2) {
        lua_pushinteger(L, (lua_Integer)cols);
        lua_rawseti(L, -2, 2);
    }
}

static int array_index(lua_State *L)
{
    shmud *u = self_fast(L);
    if (MPE_LIKELY(lua_isinteger(L, 2))) {
        mpe_shm_obj *o = opened(L, u);
        lua_Integer i = lua_tointeger(L, 2);
        if (MPE_LIKELY((uint64_t)i - 1 < (uint64_t)o->n)) {
            pushnum(L, mpe__array_get(o, (size_t)(i - 1)));
            return 1;
        }
    }
    if (lua_type(L, 2) == LUA_TSTRING) {
        /* Methods are found even when closed: close() is one of them. */
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
        if (lua_type(L, -1) != LUA_TNIL)
            return 1;
        const char *k = lua_tostring(L, 2);
        if (strcmp(k, "shape") == 0)
            push_shape(L, opened(L, u));
        else if (strcmp(k, "ctype") == 0)
            lua_pushstring(L, mpe__array_type(opened(L, u))->name);
        else
            lua_pushnil(L);
        return 1;
    }
    mpe_shm_obj *o = opened(L, u);
    pushnum(L, mpe__array_get(o, checkindex(L, o, 2, "array")));
    return 1;
}

static int array_newindex(lua_State *L)
{
    mpe_shm_obj *o = opened(L, self_fast(L));
    if (MPE_LIKELY(lua_isinteger(L, 2))) {
        lua_Integer i = lua_tointeger(L, 2);
        if (MPE_LIKELY((uint64_t)i - 1 < (uint64_t)o->n)) {
            mpe__array_put(o, (size_t)(i - 1), checkelem(L, o, 3, "array"));
            return 0;
        }
    }
    if (lua_type(L, 2) == LUA_TSTRING)
        mpe__argerror(L, "array", 0, "cannot set field '%s' (only integer indices)",
                      lua_tostring(L, 2));
    size_t i = checkindex(L, o, 2, "array");
    mpe__array_put(o, i, checkelem(L, o, 3, "array"));
    return 0;
}

static int array_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)checkobj(L, 1, ARRAY_MT, "array")->n);
    return 1;
}

static int array_eq(lua_State *L)
{
    shmud *a = toshm(L, 1, ARRAY_MT), *b = toshm(L, 2, ARRAY_MT);
    lua_pushboolean(L, a && b && a->o && a->o == b->o);
    return 1;
}

static int array_tostring(lua_State *L)
{
    shmud *u = checkshm(L, 1, ARRAY_MT, "array:__tostring");
    if (!u->o) {
        lua_pushfstring(L, "mpe.Array (closed): %p", (void *)u);
        return 1;
    }
    size_t rows, cols;
    char shape[64];
    if (mpe__array_shape(u->o, &rows, &cols) == 2)
        snprintf(shape, sizeof shape, "%zux%zu", rows, cols);
    else
        snprintf(shape, sizeof shape, "%zu", rows);
    lua_pushfstring(L, "mpe.Array(%s, %s): %p", mpe__array_type(u->o)->name, shape, u->o->p);
    return 1;
}

/* __gc and __close, for both arrays and values: idempotent. */
static int shm_gc(lua_State *L)
{
    shmud *u = toshm(L, 1, ARRAY_MT);
    if (!u)
        u = toshm(L, 1, VALUE_MT);
    if (!u)
        mpe__typeerror(L, 1, ARRAY_MT " or " VALUE_MT, "array:__gc");
    if (u->o) {
        mpe_shm_obj *o = u->o;
        u->o = NULL;
        mpe__shm_unref(o);
    }
    return 0;
}

static int pairs_next(lua_State *L)
{
    mpe_shm_obj *o = checkobj(L, 1, ARRAY_MT, "array");
    lua_Integer i = luaL_checkinteger(L, 2) + 1;
    if (i < 1 || (uint64_t)i > o->n)
        return 0;
    lua_pushinteger(L, i);
    pushnum(L, mpe__array_get(o, (size_t)(i - 1)));
    return 2;
}

static int array_pairs(lua_State *L)
{
    checkobj(L, 1, ARRAY_MT, "array");
    lua_pushcfunction(L, pairs_next);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    return 3;
}

/* ---- array methods --------------------------------------------------------------------- */

/* a:get(i) on 1-D, a:get(r, c) on 2-D -> flat 0-based index; *next = the next argument. */
static size_t checkcell(lua_State *L, mpe_shm_obj *o, const char *fname, int *next)
{
    size_t rows, cols;
    if (mpe__array_shape(o, &rows, &cols) != 2) {
        *next = 3;
        return checkindex(L, o, 2, fname);
    }
    *next = 4;
    if (!lua_isinteger(L, 2) || !lua_isinteger(L, 3))
        mpe__argerror(L, fname, 0, "row and column must be integers, got %s and %s", mpe__got(L, 2),
                      mpe__got(L, 3));
    lua_Integer r = lua_tointeger(L, 2), c = lua_tointeger(L, 3);
    if ((uint64_t)r - 1 >= (uint64_t)rows)
        mpe__argerror(L, fname, 0, "row %lld out of range 1..%lld", (long long)r, (long long)rows);
    if ((uint64_t)c - 1 >= (uint64_t)cols)
        mpe__argerror(L, fname, 0, "column %lld out of range 1..%lld", (long long)c, (long long)cols);
    return (size_t)(r - 1) * cols + (size_t)(c - 1);
}

static int array_get(lua_State *L)
{
    mpe_shm_obj *o = checkobj(L, 1, ARRAY_MT, "array:get");
    int next;
    pushnum(L, mpe__array_get(o, checkcell(L, o, "array:get", &next)));
    return 1;
}

static int array_set(lua_State *L)
{
    mpe_shm_obj *o = checkobj(L, 1, ARRAY_MT, "array:set");
    int next;
    size_t i = checkcell(L, o, "array:set", &next);
    mpe__array_put(o, i, checkelem(L, o, next, "array:set"));
    return 0;
}

static int array_fill(lua_State *L)
{
    mpe_shm_obj *o = checkobj(L, 1, ARRAY_MT, "array:fill");
    mpe__array_fill(o, 0, o->n, checkelem(L, o, 2, "array:fill"));
    return 0;
}

static int array_sum(lua_State *L)
{
    mpe_shm_obj *o = checkobj(L, 1, ARRAY_MT, "array:sum");
    size_t from, to;
    checkrange(L, o, 2, "array:sum", &from, &to);
    pushnum(L, mpe__array_sum(o, from, to));
    return 1;
}

static int array_totable(lua_State *L)
{
    mpe_shm_obj *o = checkobj(L, 1, ARRAY_MT, "array:totable");
    size_t from, to;
    checkrange(L, o, 2, "array:totable", &from, &to);
    if (to - from > INT_MAX)
        mpe__fail(L, "mpe: array:totable: %lld elements are too many for a table",
                   (long long)(to - from));
    lua_createtable(L, (int)(to - from), 0);
    for (size_t k = from; k < to; k++) {
        pushnum(L, mpe__array_get(o, k));
        lua_rawseti(L, -2, (lua_Integer)(k - from + 1));
    }
    return 1;
}

static int array_copyfrom(lua_State *L)
{
    mpe_shm_obj *o = checkobj(L, 1, ARRAY_MT, "array:copyfrom");
    lua_Integer first = optint(L, 3, 1, "array:copyfrom");
    shmud *src = toshm(L, 2, ARRAY_MT);
    size_t count;
    if (src) {
        if (!src->o)
            mpe__fail(L, "mpe: attempt to use a closed %s", ARRAY_MT);
        count = src->o->n;
    } else if (lua_type(L, 2) == LUA_TTABLE) {
        count = (size_t)lua_rawlen(L, 2);
    } else {
        return mpe__argerror(L, "array:copyfrom", 2, "must be a table of numbers or an mpe.Array, got %s",
                             mpe__typename(L, 2));
    }
    if (first < 1 || (uint64_t)first - 1 > o->n || count > o->n - (size_t)(first - 1))
        mpe__argerror(L, "array:copyfrom", 0, "%lld values from index %lld do not fit in %lld elements",
                      (long long)count, (long long)first, (long long)o->n);
    if (!src) {
        copy_values(L, o, 2, (size_t)(first - 1), count, "array:copyfrom");
        return 0;
    }
    /* From another array: element by element through numbers, so types may
     * differ; the same checks as for table values apply. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < count; k++) {
            uint64_t bits;
            mpe_err e;
            if (mpe__array_check(o, mpe__array_get(src->o, k), &bits, &e) != 0)
                mpe__argerror(L, "array:copyfrom", 0, "item %d: %s", (int)(k + 1), e.msg);
            if (pass == 1)
                mpe__array_put(o, (size_t)(first - 1) + k, bits);
        }
    }
    return 0;
}

static int array_add(lua_State *L)
{
    mpe_shm_obj *o = checkobj(L, 1, ARRAY_MT, "array:add");
    size_t i = checkindex(L, o, 2, "array:add");
    mpe_num delta = checknum(L, 3, "array:add", "delta"), out;
    mpe_err e;
    if (mpe__array_add(o, i, delta, &out, &e) != 0)
        mpe__fail(L, "mpe: array:add: %s", e.msg);
    pushnum(L, out);
    return 1;
}

/* ---- mpe.value ---------------------------------------------------------------------------- */

static int l_value(lua_State *L)
{
    lua_settop(L, 2);
    const mpe_ctype *t = checkctype(L, 1, "value");
    if (!lua_isnoneornil(L, 2) && lua_type(L, 2) != LUA_TNUMBER)
        mpe__argerror(L, "value", 2, "must be a number (the initial value), got %s",
                      mpe__got(L, 2));
    shmud *u = newud(L, VALUE_MT);
    u->o = create(L, t, 0, 1, 1, "value");
    if (!lua_isnoneornil(L, 2))
        mpe__array_put(u->o, 0, checkelem(L, u->o, 2, "value"));
    return 1;
}

static int value_get(lua_State *L)
{
    pushnum(L, mpe__array_get(checkobj(L, 1, VALUE_MT, "value:get"), 0));
    return 1;
}

static int value_set(lua_State *L)
{
    mpe_shm_obj *o = checkobj(L, 1, VALUE_MT, "value:set");
    mpe__array_put(o, 0, checkelem(L, o, 2, "value:set"));
    return 0;
}

static int value_add(lua_State *L)
{
    mpe_shm_obj *o = checkobj(L, 1, VALUE_MT, "value:add");
    mpe_num delta = checknum(L, 2, "value:add", "delta"), out;
    mpe_err e;
    if (mpe__array_add(o, 0, delta, &out, &e) != 0)
        mpe__fail(L, "mpe: value:add: %s", e.msg);
    pushnum(L, out);
    return 1;
}

static int value_tostring(lua_State *L)
{
    shmud *u = checkshm(L, 1, VALUE_MT, "value:__tostring");
    if (!u->o) {
        lua_pushfstring(L, "mpe.Value (closed): %p", (void *)u);
        return 1;
    }
    pushnum(L, mpe__array_get(u->o, 0));
    lua_pushfstring(L, "mpe.Value(%s): %s", mpe__array_type(u->o)->name, lua_tostring(L, -1));
    return 1;
}

static int value_eq(lua_State *L)
{
    shmud *a = toshm(L, 1, VALUE_MT), *b = toshm(L, 2, VALUE_MT);
    lua_pushboolean(L, a && b && a->o && a->o == b->o);
    return 1;
}

/* ---- travelling by reference ------------------------------------------------------------- */

static void encode_obj(lua_State *L, int idx, mpe_buf *b, mpe_fds *fds, const char *mt)
{
    mpe_shm_obj *o = checkobj(L, idx, mt, "encode");
    mpe_err e;
    if (mpe__shm_ref_write(o, b, fds, &e) != 0)
        mpe__fail(L, "mpe: cannot send %s: %s", mt, e.msg);
}

static void decode_obj(lua_State *L, mpe_rd *r, mpe_fds *fds, const char *mt, int value)
{
    shmud *u = newud(L, mt);
    mpe_err e;
    u->o = mpe__shm_ref_read(r, fds, MPE_SHM_ARRAY, &e);
    if (!u->o)
        mpe__fail(L, "mpe: decode: %s: %s", mt, e.msg);
    size_t rows, cols;
    if (mpe__array_attach(u->o, &e) != 0)
        mpe__fail(L, "mpe: decode: %s: %s", mt, e.msg);
    if ((mpe__array_shape(u->o, &rows, &cols) == 0) != value)
        mpe__fail(L, "mpe: decode: %s: the shared object is not an %s", mt, mt);
}

static void array_encode(lua_State *L, int idx, mpe_buf *b, mpe_fds *fds)
{
    encode_obj(L, idx, b, fds, ARRAY_MT);
}

static void array_decode(lua_State *L, mpe_rd *r, mpe_fds *fds)
{
    decode_obj(L, r, fds, ARRAY_MT, 0);
}

static void value_encode(lua_State *L, int idx, mpe_buf *b, mpe_fds *fds)
{
    encode_obj(L, idx, b, fds, VALUE_MT);
}

static void value_decode(lua_State *L, mpe_rd *r, mpe_fds *fds)
{
    decode_obj(L, r, fds, VALUE_MT, 1);
}

static const mpe_codec_type array_type = {ARRAY_MT, array_encode, array_decode};
static const mpe_codec_type value_type = {VALUE_MT, value_encode, value_decode};

/* ---- registration -------------------------------------------------------------------------- */

static const luaL_Reg array_methods[] = {
    {"get", array_get},         {"set", array_set},       {"fill", array_fill},
    {"sum", array_sum},         {"totable", array_totable}, {"copyfrom", array_copyfrom},
    {"add", array_add},         {"close", shm_gc},        {NULL, NULL}};

static const luaL_Reg value_methods[] = {
    {"get", value_get}, {"set", value_set}, {"add", value_add}, {"close", shm_gc}, {NULL, NULL}};

/* Metatable mt with the methods and the given __index/__newindex closures,
 * which get the method table as their upvalue. */
static void make_metatable(lua_State *L, const char *mt, const luaL_Reg *methods,
                           lua_CFunction index, lua_CFunction newindex, const luaL_Reg *meta)
{
    luaL_newmetatable(L, mt);
    int m = lua_gettop(L);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    int t = lua_gettop(L);
    lua_pushvalue(L, t);
    lua_pushcclosure(L, index, 1);
    lua_setfield(L, m, "__index");
    lua_pushvalue(L, t);
    lua_pushcclosure(L, newindex, 1);
    lua_setfield(L, m, "__newindex");
    lua_settop(L, m - 1);
}

void mpe__open_shm(lua_State *L)
{
    static const luaL_Reg array_meta[] = {
        {"__len", array_len},   {"__eq", array_eq},       {"__tostring", array_tostring},
        {"__gc", shm_gc},       {"__close", shm_gc},      {"__pairs", array_pairs},
        {NULL, NULL}};
    static const luaL_Reg value_meta[] = {
        {"__eq", value_eq}, {"__tostring", value_tostring}, {"__gc", shm_gc},
        {"__close", shm_gc}, {NULL, NULL}};
    make_metatable(L, ARRAY_MT, array_methods, array_index, array_newindex, array_meta);
    /* A value's __index is its method table itself: v:get() is the hot path. */
    luaL_newmetatable(L, VALUE_MT);
    luaL_setfuncs(L, value_meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, value_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    mpe__codec_add_type(L, &array_type);
    mpe__codec_add_type(L, &value_type);
    lua_pushcfunction(L, l_array);
    lua_setfield(L, -2, "array");
    lua_pushcfunction(L, l_value);
    lua_setfield(L, -2, "value");
}
