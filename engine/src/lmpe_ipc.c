/* lmpe_ipc.c -- Lua bindings of mpe.queue, mpe.pipe and mpe.dict: argument
 * checks, userdata, metatables, codec hooks (all three travel by reference).
 * SPDX-License-Identifier: MIT
 *
 * Items, messages, keys and values are encoded with the codec here and
 * handed to queue.c, pipe.c and dict.c as bytes plus descriptors. Each
 * userdata owns a scratch buffer and a descriptor list, so that nothing from
 * malloc is held by a C local when a Lua error can be raised: a failed encode
 * or decode leaves them to the next call or to __gc. Waits without a timeout
 * return early when a signal handler installs a Lua hook (lua.c on Ctrl-C),
 * so that the interrupt is raised where the script was waiting. */
#include <math.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "dict.h"
#include "err.h"
#include "fdio.h"
#include "ipc.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "pipe.h"
#include "queue.h"
#include "shm.h"
#include "sig.h"
#include "waitctl.h"

#define QUEUE_MT "mpe.Queue"
#define CONN_MT "mpe.Connection"
#define DICT_MT "mpe.Dict"
#define SHRINK_ABOVE (1u << 20) /* scratch buffers larger than this are freed after use */

typedef struct queueud {
    mpe_shm_obj *o; /* NULL once closed */
    mpe_buf buf;
    mpe_fds fds;
} queueud;

typedef struct connud {
    mpe_pipe p; /* p.fd < 0 once closed */
    mpe_buf buf;
    mpe_fds fds;
} connud;

typedef struct dictud {
    mpe_shm_obj *o; /* NULL once closed */
    mpe_buf buf;
    mpe_fds fds;    /* only to catch shared objects in values (refused) */
} dictud;

/* ---- helpers -------------------------------------------------------------------- */

static void scratch_done(mpe_buf *b)
{
    if (b->cap > SHRINK_ABOVE)
        mpe__buf_free(b);
    b->n = 0;
}

/* Interrupts: a hook installed while we wait means "stop waiting" (as in
 * lmpe_sync.c: lua.c's SIGINT handler hooks the running state). */
/* The engine's waits stop when a signal comes (sig.c): the hook that lua.c
 * or mpe run installed then fires as soon as control is back in Lua. */
static mpe_waitctl watch(lua_State *L, mpe_sigwatch *h)
{
    mpe__sig_watch(L, h);
    mpe_waitctl w = {mpe__sig_changed, h};
    return w;
}

static int is_callable(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TFUNCTION)
        return 1;
    if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
        lua_pop(L, 1);
        return 1;
    }
    return 0;
}

/* The one checker of mpe.Queue, mpe.Connection and mpe.Dict (mt says
 * which): the userdata at idx, open or closed, raising if it is not one. */
static void *checkud(lua_State *L, int idx, const char *mt, const char *fname)
{
    void *u = luaL_testudata(L, idx, mt);
    if (!u)
        mpe__typeerror(L, idx, mt, fname);
    return u;
}

static void closed_error(lua_State *L, const char *mt)
{
    mpe__fail(L, "mpe: attempt to use a closed %s", mt);
}

/* A creation that failed for lack of descriptors or memory gets one full
 * collection (unreachable queues and dicts hold both) and a second try. */
#define CREATE_RETRY(L, call) ((call) ? 1 : (lua_gc((L), LUA_GCCOLLECT, 0), (call)))

/* ---- mpe.queue -------------------------------------------------------------------- */

static queueud *checkqueue(lua_State *L, int idx, const char *fname)
{
    queueud *u = checkud(L, idx, QUEUE_MT, fname);
    if (!u->o)
        closed_error(L, QUEUE_MT);
    return u;
}

static lua_Integer opt_count(lua_State *L, int idx, const char *fname, const char *what)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    if (!lua_isinteger(L, idx) || lua_tointeger(L, idx) < 0)
        mpe__argerror(L, fname, 0, "%s must be a non-negative integer, got %s", what, mpe__got(L, idx));
    return lua_tointeger(L, idx);
}

/* mpe.queue([maxsize]) or mpe.queue{maxsize = n, bytes = ring size}. */
static int l_queue(lua_State *L)
{
    lua_Integer maxsize = 0, bytes = 0;
    if (lua_istable(L, 1)) {
        lua_pushnil(L);
        while (lua_next(L, 1) != 0) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            if (!k || (strcmp(k, "maxsize") != 0 && strcmp(k, "bytes") != 0))
                mpe__argerror(L, "queue", 0, "unknown option '%s' (options: maxsize, bytes)",
                              k ? k : luaL_tolstring(L, -2, NULL));
            lua_pop(L, 1);
        }
        lua_getfield(L, 1, "maxsize");
        maxsize = opt_count(L, -1, "queue", "option maxsize");
        lua_getfield(L, 1, "bytes");
        bytes = opt_count(L, -1, "queue", "option bytes");
        lua_settop(L, 1);
    } else if (!lua_isnoneornil(L, 1)) {
        if (!lua_isinteger(L, 1) || lua_tointeger(L, 1) < 0)
            mpe__argerror(L, "queue", 1, "(maxsize) must be a non-negative integer or an option table, got %s",
                          mpe__got(L, 1));
        maxsize = lua_tointeger(L, 1);
    }
    queueud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, QUEUE_MT);
    mpe_err e;
    if (!CREATE_RETRY(L, (u->o = mpe__queue_new((size_t)maxsize, (size_t)bytes, &e)) != NULL))
        mpe__fail(L, "mpe: queue: %s", e.msg);
    return 1;
}

static int queue_release(lua_State *L)
{
    queueud *u = checkud(L, 1, QUEUE_MT, "queue:close");
    if (u->o) {
        mpe_shm_obj *o = u->o;
        u->o = NULL;
        mpe__queue_drop(o);
    }
    if (u) {
        mpe__fds_close(&u->fds);
        mpe__buf_free(&u->buf);
    }
    return 0;
}

/* close() -> items left: closed for every process (put raises, get drains
 * what is left, then raises), and this handle released. Idempotent (0). */
static int queue_close(lua_State *L)
{
    queueud *u = checkud(L, 1, QUEUE_MT, "queue:close");
    lua_Integer left = 0;
    if (u->o) {
        mpe__queue_close(u->o);
        left = (lua_Integer)mpe__queue_size(u->o);
    }
    queue_release(L);
    /* Nothing is discarded by close: other handles take what is left. The
     * count tells a closer that may hold the last handle what it leaves. */
    lua_pushinteger(L, left);
    return 1;
}

static int queue_result(lua_State *L, int r, const mpe_err *e, double timeout, const char *fname)
{
    switch (r) {
    case MPE_WAIT_TIMEOUT:
        return mpe__error_timeout(L, fname, timeout);
    case MPE_IPC_CLOSED:
        return mpe__fail(L, "mpe: queue is closed");
    case MPE_WAIT_INTERRUPTED:
        return 0; /* the new hook raises as soon as we return */
    default:
        return mpe__fail(L, "mpe: %s: %s", fname, e->msg);
    }
}

static int queue_put(lua_State *L)
{
    queueud *u = checkqueue(L, 1, "queue:put");
    if (lua_gettop(L) < 2)
        mpe__argerror(L, "queue:put", 2, "(the item) is missing");
    double timeout = mpe__opt_timeout(L, 3, "queue:put");
    mpe__fds_close(&u->fds);
    u->buf.n = 0;
    mpe__encode(L, 2, &u->buf, "item", &u->fds);
    mpe_sigwatch h;
    mpe_waitctl w = watch(L, &h);
    mpe_err e;
    int r = mpe__queue_put(u->o, u->buf.p, u->buf.n, &u->fds, timeout, &w, &e);
    scratch_done(&u->buf);
    if (r != MPE_WAIT_OK)
        return queue_result(L, r, &e, timeout, "queue:put");
    return 0;
}

static int queue_get(lua_State *L)
{
    queueud *u = checkqueue(L, 1, "queue:get");
    double timeout = mpe__opt_timeout(L, 2, "queue:get");
    mpe__fds_close(&u->fds);
    mpe_sigwatch h;
    mpe_waitctl w = watch(L, &h);
    mpe_err e;
    int r = mpe__queue_get(u->o, &u->buf, &u->fds, timeout, &w, &e);
    if (r != MPE_WAIT_OK)
        return queue_result(L, r, &e, timeout, "queue:get");
    lua_settop(L, 1);
    mpe_rd rd;
    mpe__rd_init(&rd, u->buf.p, u->buf.n);
    mpe__decode(L, &rd, &u->fds);
    mpe__fds_close(&u->fds);
    scratch_done(&u->buf);
    return 1;
}

static int queue_qsize(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)mpe__queue_size(checkqueue(L, 1, "queue:qsize")->o));
    return 1;
}

static int queue_empty(lua_State *L)
{
    lua_pushboolean(L, mpe__queue_size(checkqueue(L, 1, "queue:empty")->o) == 0);
    return 1;
}

static int queue_tostring(lua_State *L)
{
    queueud *u = checkud(L, 1, QUEUE_MT, "queue:__tostring");
    if (!u->o)
        lua_pushfstring(L, "mpe.Queue (closed): %p", (void *)u);
    else
        lua_pushfstring(L, "mpe.Queue: %p", u->o->p);
    return 1;
}

static void queue_encode(lua_State *L, int idx, mpe_buf *b, mpe_fds *fds)
{
    queueud *u = lua_touserdata(L, idx);
    mpe_err e;
    if (!u || !u->o)
        closed_error(L, QUEUE_MT);
    if (mpe__queue_ref_write(u->o, b, fds, &e) != 0)
        mpe__fail(L, "mpe: cannot send %s: %s", QUEUE_MT, e.msg);
}

static void queue_decode(lua_State *L, mpe_rd *r, mpe_fds *fds)
{
    queueud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, QUEUE_MT);
    mpe_err e;
    if (!(u->o = mpe__queue_ref_read(r, fds, &e)))
        mpe__fail(L, "mpe: decode: %s: %s", QUEUE_MT, e.msg);
}

/* ---- mpe.pipe ---------------------------------------------------------------------- */

static connud *newconn(lua_State *L)
{
    connud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    mpe__pipe_init(&u->p);
    luaL_setmetatable(L, CONN_MT);
    return u;
}

static connud *checkconn(lua_State *L, int idx, const char *fname)
{
    connud *u = checkud(L, idx, CONN_MT, fname);
    if (u->p.fd < 0)
        closed_error(L, CONN_MT);
    return u;
}

static int l_pipe(lua_State *L)
{
    connud *a = newconn(L), *b = newconn(L);
    mpe_err e;
    if (!CREATE_RETRY(L, mpe__pipe_pair(&a->p, &b->p, &e) == 0))
        mpe__fail(L, "mpe: pipe: %s", e.msg);
    return 2;
}

static int conn_close(lua_State *L)
{
    connud *u = checkud(L, 1, CONN_MT, "connection:close");
    mpe__pipe_close(&u->p);
    mpe__fds_close(&u->fds);
    mpe__buf_free(&u->buf);
    return 0;
}


static int conn_closed_peer(lua_State *L)
{
    return mpe__fail(L, "mpe: pipe: the other end is closed");
}

static int conn_send(lua_State *L)
{
    connud *u = checkconn(L, 1, "connection:send");
    if (lua_gettop(L) < 2)
        mpe__argerror(L, "connection:send", 2, "(the value) is missing");
    mpe__fds_close(&u->fds);
    u->buf.n = 0;
    mpe__encode(L, 2, &u->buf, "message", &u->fds);
    mpe_sigwatch h;
    mpe_waitctl w = watch(L, &h);
    mpe_err e;
    int r = mpe__pipe_send(&u->p, u->buf.p, u->buf.n, &u->fds, &w, &e);
    scratch_done(&u->buf);
    switch (r) {
    case MPE_WAIT_OK:
    case MPE_WAIT_INTERRUPTED:
        return 0;
    case MPE_IPC_CLOSED:
        return conn_closed_peer(L);
    default:
        return mpe__fail(L, "mpe: connection:send: %s", e.msg);
    }
}

static int conn_recv(lua_State *L)
{
    connud *u = checkconn(L, 1, "connection:recv");
    double timeout = mpe__opt_timeout(L, 2, "connection:recv");
    mpe__fds_close(&u->fds);
    mpe_sigwatch h;
    mpe_waitctl w = watch(L, &h);
    mpe_err e;
    const void *data;
    size_t n;
    int r = mpe__pipe_recv(&u->p, timeout, &w, &data, &n, &u->fds, &e);
    switch (r) {
    case MPE_WAIT_OK:
        break;
    case MPE_WAIT_TIMEOUT:
        return mpe__error_timeout(L, "connection:recv", timeout);
    case MPE_WAIT_INTERRUPTED:
        return 0;
    case MPE_IPC_CLOSED:
        return conn_closed_peer(L);
    default:
        return mpe__fail(L, "mpe: connection:recv: %s", e.msg);
    }
    lua_settop(L, 1);
    mpe_rd rd;
    mpe__rd_init(&rd, data, n);
    mpe__decode(L, &rd, &u->fds);
    mpe__fds_close(&u->fds);
    return 1;
}

static int conn_poll(lua_State *L)
{
    connud *u = checkconn(L, 1, "connection:poll");
    double timeout = lua_isnoneornil(L, 2) ? 0 : mpe__opt_timeout(L, 2, "connection:poll");
    mpe_sigwatch h;
    mpe_waitctl w = watch(L, &h);
    mpe_err e;
    int r = mpe__pipe_poll(&u->p, timeout, &w, &e);
    if (r == MPE_WAIT_ERROR)
        return mpe__fail(L, "mpe: connection:poll: %s", e.msg);
    lua_pushboolean(L, r == 1);
    return 1;
}

static int conn_tostring(lua_State *L)
{
    connud *u = checkud(L, 1, CONN_MT, "connection:__tostring");
    if (u->p.fd < 0)
        lua_pushfstring(L, "mpe.Connection (closed): %p", (void *)u);
    else
        lua_pushfstring(L, "mpe.Connection: %p", (void *)u);
    return 1;
}

static void conn_encode(lua_State *L, int idx, mpe_buf *b, mpe_fds *fds)
{
    connud *u = lua_touserdata(L, idx);
    mpe_err e;
    if (!u || u->p.fd < 0)
        closed_error(L, CONN_MT);
    if (mpe__ipc_fd_write(u->p.fd, b, fds, &e) != 0)
        mpe__fail(L, "mpe: cannot send %s: %s", CONN_MT, e.msg);
}

static void conn_decode(lua_State *L, mpe_rd *r, mpe_fds *fds)
{
    connud *u = newconn(L);
    mpe_err e;
    if ((u->p.fd = mpe__ipc_fd_read(r, fds, S_IFSOCK, &e)) < 0)
        mpe__fail(L, "mpe: decode: %s: %s", CONN_MT, e.msg);
}

/* ---- mpe.dict ------------------------------------------------------------------------ */

static dictud *checkdict(lua_State *L, int idx, const char *fname)
{
    dictud *u = checkud(L, idx, DICT_MT, fname);
    if (!u->o)
        closed_error(L, DICT_MT);
    return u;
}

static int l_dict(lua_State *L)
{
    dictud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, DICT_MT);
    mpe_err e;
    if (!CREATE_RETRY(L, (u->o = mpe__dict_new(&e)) != NULL))
        mpe__fail(L, "mpe: dict: %s", e.msg);
    return 1;
}

static int dict_release(lua_State *L)
{
    dictud *u = checkud(L, 1, DICT_MT, "dict:close");
    if (u->o) {
        mpe_shm_obj *o = u->o;
        u->o = NULL;
        mpe__dict_drop(o);
    }
    if (u) {
        mpe__fds_close(&u->fds);
        mpe__buf_free(&u->buf);
    }
    return 0;
}

/* Encode the key at idx into b (from b->n): a string, a boolean or a number;
 * a float with an integral value is the integer, as in a Lua table. */
static void put_key(lua_State *L, int idx, mpe_buf *b, const char *fname)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
    case LUA_TBOOLEAN:
        mpe__encode(L, idx, b, "key", NULL);
        return;
    case LUA_TNUMBER:
        if (!lua_isinteger(L, idx)) {
            lua_Number x = lua_tonumber(L, idx);
            if (x != x)
                mpe__argerror(L, fname, 0, "the key is NaN");
            if (x == floor(x) && x >= -9223372036854775808.0 && x < 9223372036854775808.0) {
                lua_pushinteger(L, (lua_Integer)x);
                mpe__encode(L, -1, b, "key", NULL);
                lua_pop(L, 1);
                return;
            }
        }
        mpe__encode(L, idx, b, "key", NULL);
        return;
    default:
        mpe__argerror(L, fname, 0, "the key must be a string, number or boolean, got %s",
                      mpe__typename(L, idx));
    }
}

/* Encode the value at idx into u->buf (from its n); shared objects cannot be
 * kept. Descriptors go to u->fds, which the userdata owns if encoding raises. */
static void put_value(lua_State *L, dictud *u, int idx, const char *fname)
{
    mpe__fds_close(&u->fds);
    mpe__encode(L, idx, &u->buf, "value", &u->fds);
    if (u->fds.n > 0) {
        mpe__fds_close(&u->fds);
        mpe__argerror(L, fname, 0, "a dict cannot hold shared objects (mpe.Array, mpe.Lock, mpe.Queue, ...): pass them to processes as arguments or through a queue");
    }
}

static void dict_lock(lua_State *L, dictud *u, const char *fname, int *interrupted)
{
    mpe_sigwatch h;
    mpe_waitctl w = watch(L, &h);
    mpe_err e;
    int r = mpe__dict_lock(u->o, &w, &e);
    *interrupted = r == MPE_WAIT_INTERRUPTED;
    if (r != MPE_WAIT_OK && !*interrupted)
        mpe__fail(L, "mpe: %s: %s", fname, e.msg);
}

/* Push the value of the key encoded in u->buf[0..kn), or nil. */
static void dict_fetch(lua_State *L, dictud *u, size_t kn, const char *fname)
{
    int intr;
    dict_lock(L, u, fname, &intr);
    if (intr) {
        lua_pushnil(L);
        return;
    }
    const void *v;
    size_t vn;
    int found = mpe__dict_find(u->o, u->buf.p, kn, &v, &vn);
    if (found && mpe__buf_grow(&u->buf, vn) != 0) {
        mpe__dict_unlock(u->o);
        mpe__fail(L, "mpe: %s: not enough memory", fname);
    }
    if (found) {
        memcpy(u->buf.p + kn, v, vn); /* decoded after the lock is let go */
        u->buf.n = kn + vn;
    }
    mpe__dict_unlock(u->o);
    if (!found) {
        lua_pushnil(L);
        return;
    }
    mpe_rd rd;
    mpe__rd_init(&rd, u->buf.p + kn, vn);
    mpe__decode(L, &rd, NULL);
    scratch_done(&u->buf);
}

/* Store (or with nil delete) the value at vidx under the key at kidx. */
static void dict_store(lua_State *L, dictud *u, int kidx, int vidx, const char *fname)
{
    u->buf.n = 0;
    put_key(L, kidx, &u->buf, fname);
    size_t kn = u->buf.n;
    int del = lua_isnil(L, vidx);
    if (!del)
        put_value(L, u, vidx, fname);
    int intr;
    dict_lock(L, u, fname, &intr);
    if (intr)
        return;
    mpe_err e;
    int r = 0;
    if (del)
        mpe__dict_delete(u->o, u->buf.p, kn);
    else
        r = mpe__dict_set(u->o, u->buf.p, kn, u->buf.p + kn, u->buf.n - kn, &e);
    mpe__dict_unlock(u->o);
    scratch_done(&u->buf);
    if (r != 0)
        mpe__fail(L, "mpe: %s: %s", fname, e.msg);
}

static int dict_get(lua_State *L)
{
    dictud *u = checkdict(L, 1, "dict:get");
    u->buf.n = 0;
    put_key(L, 2, &u->buf, "dict:get");
    dict_fetch(L, u, u->buf.n, "dict:get");
    return 1;
}

static int dict_set(lua_State *L)
{
    dictud *u = checkdict(L, 1, "dict:set");
    lua_settop(L, 3);
    dict_store(L, u, 2, 3, "dict:set");
    return 0;
}

/* Indexing a dict gives its methods and nothing else: data is read and
 * written only through d:get, d:set and d:update (and listed by pairs,
 * keys, totable), so no key, "get" or "keys" included, is ever shadowed by a
 * method (README, "Dicts"). The method table is upvalue 1. */
static int dict_index(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
        if (!lua_isnil(L, -1))
            return 1;
        lua_pop(L, 1);
    }
    checkdict(L, 1, "dict[]");
    lua_pushvalue(L, 2);
    return mpe__argerror(L, "dict[]", 0, "key %s is not a method: read data with d:get(k) (indexing a dict gives only its methods)",
                         mpe__got(L, -1));
}

static int dict_newindex(lua_State *L)
{
    checkdict(L, 1, "dict[]=");
    return mpe__argerror(L, "dict[]=", 0, "cannot assign to a dict: write data with d:set(k, v)");
}

/* update's work, run under lua_pcall while the caller holds the lock:
 * (d, k, fn) -> the new value. */
static int update_body(lua_State *L)
{
    dictud *u = lua_touserdata(L, 1);
    u->buf.n = 0;
    put_key(L, 2, &u->buf, "dict:update");
    dict_fetch(L, u, u->buf.n, "dict:update"); /* the lock is recursive */
    lua_pushvalue(L, 3);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    dict_store(L, u, 2, 4, "dict:update"); /* fn may have used the buffer: encode again */
    return 1;
}

static int dict_update(lua_State *L)
{
    dictud *u = checkdict(L, 1, "dict:update");
    lua_settop(L, 3);
    u->buf.n = 0;
    put_key(L, 2, &u->buf, "dict:update");
    if (!is_callable(L, 3))
        mpe__argerror(L, "dict:update", 3, "must be a function, got %s", mpe__got(L, 3));
    int intr;
    dict_lock(L, u, "dict:update", &intr);
    if (intr)
        return 0;
    lua_pushcfunction(L, update_body);
    lua_insert(L, 1);
    int status = lua_pcall(L, 3, 1, 0);
    mpe__dict_unlock(u->o);
    if (status != LUA_OK)
        return lua_error(L); /* fn's error, the lock let go */
    return 1;
}

/* Copy every entry as [u32 key length][u32 value length][key][value] into
 * u->buf under the lock, then decode without it. Pushes a table: keys ->
 * values (with_values) or an array of keys. */
static void dict_snapshot(lua_State *L, dictud *u, int with_values, const char *fname)
{
    int intr;
    dict_lock(L, u, fname, &intr);
    if (intr) {
        lua_newtable(L);
        return;
    }
    size_t pos = 0, kn, vn, count = mpe__dict_count(u->o);
    const void *k, *v;
    u->buf.n = 0;
    while (mpe__dict_next(u->o, &pos, &k, &kn, &v, &vn)) {
        if (!with_values)
            vn = 0;
        if (mpe__buf_grow(&u->buf, 8 + kn + vn) != 0) {
            mpe__dict_unlock(u->o);
            mpe__fail(L, "mpe: %s: not enough memory", fname);
        }
        uint32_t len[2] = {(uint32_t)kn, (uint32_t)vn};
        memcpy(u->buf.p + u->buf.n, len, 8);
        memcpy(u->buf.p + u->buf.n + 8, k, kn);
        memcpy(u->buf.p + u->buf.n + 8 + kn, v, vn);
        u->buf.n += 8 + kn + vn;
    }
    mpe__dict_unlock(u->o);
    if (with_values)
        lua_createtable(L, 0, count > 1000000 ? 1000000 : (int)count);
    else
        lua_createtable(L, count > 1000000 ? 1000000 : (int)count, 0);
    int t = lua_gettop(L);
    lua_Integer i = 0;
    for (size_t at = 0; at < u->buf.n;) {
        uint32_t len[2];
        memcpy(len, u->buf.p + at, 8);
        mpe_rd rd;
        mpe__rd_init(&rd, u->buf.p + at + 8, len[0]);
        mpe__decode(L, &rd, NULL);
        if (with_values) {
            mpe__rd_init(&rd, u->buf.p + at + 8 + len[0], len[1]);
            mpe__decode(L, &rd, NULL);
            lua_rawset(L, t);
        } else {
            lua_rawseti(L, t, (int)++i);
        }
        at += 8 + (size_t)len[0] + len[1];
    }
    scratch_done(&u->buf);
}

static int dict_totable(lua_State *L)
{
    dict_snapshot(L, checkdict(L, 1, "dict:totable"), 1, "dict:totable");
    return 1;
}

static int dict_keys(lua_State *L)
{
    dict_snapshot(L, checkdict(L, 1, "dict:keys"), 0, "dict:keys");
    return 1;
}

/* pairs(d) / d:pairs(): next over a snapshot taken now. */
static int dict_pairs(lua_State *L)
{
    dictud *u = checkdict(L, 1, "dict:pairs");
    lua_getglobal(L, "next");
    if (!lua_isfunction(L, -1))
        mpe__fail(L, "mpe: dict:pairs: the global 'next' is missing");
    dict_snapshot(L, u, 1, "dict:pairs");
    lua_pushnil(L);
    return 3;
}

static int dict_len(lua_State *L)
{
    dictud *u = checkdict(L, 1, "dict:len");
    int intr;
    dict_lock(L, u, "dict:len", &intr);
    if (intr)
        return 0;
    lua_Integer n = (lua_Integer)mpe__dict_count(u->o);
    mpe__dict_unlock(u->o);
    lua_pushinteger(L, n);
    return 1;
}

static int dict_tostring(lua_State *L)
{
    dictud *u = checkud(L, 1, DICT_MT, "dict:__tostring");
    if (!u->o)
        lua_pushfstring(L, "mpe.Dict (closed): %p", (void *)u);
    else
        lua_pushfstring(L, "mpe.Dict: %p", u->o->p);
    return 1;
}

static void dict_encode(lua_State *L, int idx, mpe_buf *b, mpe_fds *fds)
{
    dictud *u = lua_touserdata(L, idx);
    mpe_err e;
    if (!u || !u->o)
        closed_error(L, DICT_MT);
    if (mpe__dict_ref_write(u->o, b, fds, &e) != 0)
        mpe__fail(L, "mpe: cannot send %s: %s", DICT_MT, e.msg);
}

static void dict_decode(lua_State *L, mpe_rd *r, mpe_fds *fds)
{
    dictud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, DICT_MT);
    mpe_err e;
    if (!(u->o = mpe__dict_ref_read(r, fds, &e)))
        mpe__fail(L, "mpe: decode: %s: %s", DICT_MT, e.msg);
}

/* ---- registration ---------------------------------------------------------------------- */

static const mpe_codec_type codec_types[] = {{QUEUE_MT, queue_encode, queue_decode},
                                             {CONN_MT, conn_encode, conn_decode},
                                             {DICT_MT, dict_encode, dict_decode}};

static void simple_metatable(lua_State *L, const char *mt, const luaL_Reg *methods,
                             const luaL_Reg *meta)
{
    luaL_newmetatable(L, mt);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

void mpe__open_ipc(lua_State *L)
{
    static const luaL_Reg queue_methods[] = {
        {"put", queue_put},     {"get", queue_get},     {"qsize", queue_qsize},
        {"empty", queue_empty}, {"close", queue_close}, {NULL, NULL}};
    static const luaL_Reg queue_meta[] = {{"__gc", queue_release},
                                          {"__close", queue_close},
                                          {"__tostring", queue_tostring},
                                          {NULL, NULL}};
    static const luaL_Reg conn_methods[] = {{"send", conn_send}, {"recv", conn_recv},
                                            {"poll", conn_poll}, {"close", conn_close},
                                            {NULL, NULL}};
    static const luaL_Reg conn_meta[] = {{"__gc", conn_close},
                                         {"__close", conn_close},
                                         {"__tostring", conn_tostring},
                                         {NULL, NULL}};
    static const luaL_Reg dict_methods[] = {
        {"get", dict_get},     {"set", dict_set},   {"update", dict_update},
        {"totable", dict_totable}, {"keys", dict_keys}, {"pairs", dict_pairs},
        {"close", dict_release}, {NULL, NULL}};
    static const luaL_Reg dict_meta[] = {{"__gc", dict_release}, {"__close", dict_release},
                                         {"__tostring", dict_tostring}, {"__pairs", dict_pairs},
                                         {"__len", dict_len}, {NULL, NULL}};
    static const luaL_Reg ctors[] = {
        {"queue", l_queue}, {"pipe", l_pipe}, {"dict", l_dict}, {NULL, NULL}};

    simple_metatable(L, QUEUE_MT, queue_methods, queue_meta);
    simple_metatable(L, CONN_MT, conn_methods, conn_meta);
    /* The dict's __index/__newindex are functions that see the method table. */
    luaL_newmetatable(L, DICT_MT);
    int m = lua_gettop(L);
    luaL_setfuncs(L, dict_meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, dict_methods, 0);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, dict_index, 1);
    lua_setfield(L, m, "__index");
    lua_pushcclosure(L, dict_newindex, 1);
    lua_setfield(L, m, "__newindex");
    lua_settop(L, m - 1);
    for (size_t i = 0; i < sizeof codec_types / sizeof codec_types[0]; i++)
        mpe__codec_add_type(L, &codec_types[i]);
    luaL_setfuncs(L, ctors, 0);
}
