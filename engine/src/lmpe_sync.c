/* lmpe_sync.c -- Lua bindings of the process-shared synchronization objects:
 * mpe.lock, mpe.rlock, mpe.semaphore, mpe.event, mpe.condition, mpe.barrier.
 * SPDX-License-Identifier: MIT
 *
 * Argument checks, userdata, metatables and codec hooks only; the logic is in
 * sync.c. A wait without a timeout lasts as long as the user asked, except
 * that it returns early when a signal handler installs a Lua hook meanwhile
 * (what lua.c does on Ctrl-C): the hook then fires as soon as control is back
 * in Lua, so the interrupt is raised where the script was waiting. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <semaphore.h>
#include "compat.h"
#include "buf.h"
#include "codec.h"
#include "err.h"
#include "lbuf.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "proc.h"
#include "shm.h"
#include "sig.h"
#include "sync.h"
#include "waitctl.h"

#define LOCK_MT "mpe.Lock"
#define RLOCK_MT "mpe.RLock"
#define SEM_MT "mpe.Semaphore"
#define EVENT_MT "mpe.Event"
#define COND_MT "mpe.Condition"
#define BARRIER_MT "mpe.Barrier"

typedef struct syncud {
    mpe_shm_obj *o;    /* NULL once closed */
    mpe_shm_obj *lock; /* condition: the lock it uses (one reference held) */
    const void *tag;   /* &sync_tag: with the size, a cheaper type check than metatables */
    const char *mt;    /* its metatable's name */
} syncud;

static const char sync_tag = 'S';

/* The syncud at idx, or NULL if it is not one (of any of the six types). */
static syncud *toud(lua_State *L, int idx)
{
    syncud *u = lua_touserdata(L, idx);
    if (lua_type(L, idx) != LUA_TUSERDATA || lua_rawlen(L, idx) != sizeof *u || u->tag != &sync_tag)
        return NULL;
    return u;
}

static int is_type(const syncud *u, const char *mt)
{
    return u && (u->mt == mt || strcmp(u->mt, mt) == 0);
}

static syncud *newud(lua_State *L, const char *mt)
{
    syncud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->o = NULL;
    u->lock = NULL;
    u->tag = &sync_tag;
    u->mt = mt;
    luaL_setmetatable(L, mt);
    return u;
}

/* The one checker of the six sync types: the userdata at idx, open or
 * closed, if it is an mt or an mt2 (NULL: none; mt NULL: any of the six),
 * else raise. */
static syncud *checksync(lua_State *L, int idx, const char *mt, const char *mt2, const char *fname)
{
    syncud *u = toud(L, idx);
    if (u && (!mt || is_type(u, mt) || (mt2 && is_type(u, mt2))))
        return u;
    char want[64];
    snprintf(want, sizeof want, "%s%s%s", mt ? mt : "mpe synchronization object",
             mt2 ? " or " : "", mt2 ? mt2 : "");
    mpe__typeerror(L, idx, want, fname);
}

static syncud *checkud(lua_State *L, int idx, const char *mt, const char *fname)
{
    syncud *u = checksync(L, idx, mt, NULL, fname);
    if (!u->o)
        mpe__fail(L, "mpe: attempt to use a closed %s", mt);
    return u;
}

/* The object of a lock or an rlock at idx, raising if it is neither or closed. */
static mpe_shm_obj *checklock(lua_State *L, int idx, const char *method)
{
    char fname[48];
    snprintf(fname, sizeof fname, "lock:%s", method);
    syncud *u = checksync(L, idx, LOCK_MT, RLOCK_MT, fname);
    if (!u->o)
        mpe__fail(L, "mpe: attempt to use a closed %s", u->mt);
    return u->o;
}

static const char *lockname(const mpe_shm_obj *o)
{
    return o->kind == MPE_SHM_RLOCK ? "rlock" : "lock";
}

/* Create a sync object; a full descriptor table first gets a collection. */
static mpe_shm_obj *create(lua_State *L, uint32_t kind, unsigned n, const char *fname)
{
    mpe_err e;
    mpe_shm_obj *o = mpe__sync_new(kind, n, &e);
    if (!o) {
        lua_gc(L, LUA_GCCOLLECT, 0);
        o = mpe__sync_new(kind, n, &e);
    }
    if (!o)
        mpe__fail(L, "mpe: %s: %s", fname, e.msg);
    return o;
}

static int sync_gc(lua_State *L)
{
    syncud *u = checksync(L, 1, NULL, NULL, "sync:__gc");
    if (u->o) {
        mpe_shm_obj *o = u->o, *lock = u->lock;
        u->o = u->lock = NULL;
        mpe__sync_drop(o);
        if (lock)
            mpe__sync_drop(lock);
    }
    return 0;
}

/* ---- interrupts: a hook installed while we wait means "stop waiting" ------------ */

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

/* Turn a wait result into Lua: push a boolean, or raise. */
static int wait_result(lua_State *L, int r, const mpe_err *e, pid_t dead, const char *fname)
{
    switch (r) {
    case MPE_WAIT_OK:
        lua_pushboolean(L, 1);
        return 1;
    case MPE_WAIT_TIMEOUT:
    case MPE_WAIT_INTERRUPTED: /* the new hook fires as we return */
        lua_pushboolean(L, 0);
        return 1;
    case MPE_WAIT_OWNERDEAD:
        if (dead > 0)
            return mpe__fail(L, "mpe: lock owner died (pid %d)", (int)dead);
        return mpe__fail(L, "mpe: lock owner died (pid unknown)");
    default:
        return mpe__fail(L, "mpe: %s: %s", fname, e->msg);
    }
}

/* ---- lock and rlock -------------------------------------------------------------------- */

static int l_lock(lua_State *L)
{
    syncud *u = newud(L, LOCK_MT);
    u->o = create(L, MPE_SHM_LOCK, 0, "lock");
    return 1;
}

static int l_rlock(lua_State *L)
{
    syncud *u = newud(L, RLOCK_MT);
    u->o = create(L, MPE_SHM_RLOCK, 0, "rlock");
    return 1;
}

static int acquire_lock(lua_State *L, mpe_shm_obj *o, double timeout, const char *fname)
{
    mpe_err e;
    pid_t dead = 0;
    /* The uncontended case first, without preparing for a long wait. */
    int r = mpe__sync_lock_acquire(o, 0, NULL, &dead, &e);
    if (r == MPE_WAIT_TIMEOUT && timeout != 0) {
        mpe_sigwatch h;
        mpe_waitctl w = watch(L, &h);
        r = mpe__sync_lock_acquire(o, timeout, &w, &dead, &e);
    }
    return wait_result(L, r, &e, dead, fname);
}

static int lock_acquire(lua_State *L)
{
    mpe_shm_obj *o = checklock(L, 1, "acquire");
    const char *fname = o->kind == MPE_SHM_RLOCK ? "rlock:acquire" : "lock:acquire";
    return acquire_lock(L, o, mpe__opt_timeout(L, 2, fname), fname);
}

static int lock_release(lua_State *L)
{
    mpe_shm_obj *o = checklock(L, 1, "release");
    mpe_err e;
    if (mpe__sync_lock_release(o, &e) != 0)
        mpe__fail(L, "mpe: %s:release: %s", lockname(o), e.msg);
    return 0;
}

/* Call the function at fidx with the values above it while holding lock o;
 * release on every way out, then return its values or rethrow its error. */
static int call_holding(lua_State *L, mpe_shm_obj *o, int fidx, const char *fname)
{
    if (!is_callable(L, fidx))
        mpe__argerror(L, fname, fidx, "must be a function, got %s", mpe__got(L, fidx));
    int nargs = lua_gettop(L) - fidx;
    acquire_lock(L, o, -1, fname);
    if (!lua_toboolean(L, -1))
        return 0; /* interrupted: the hook raises as soon as we return */
    lua_pop(L, 1);
    int status = lua_pcall(L, nargs, LUA_MULTRET, 0);
    mpe_err e;
    int released = mpe__sync_lock_release(o, &e);
    if (status != LUA_OK)
        return lua_error(L); /* fn's error wins over a failed release */
    if (released != 0)
        mpe__fail(L, "mpe: %s: %s", fname, e.msg);
    return lua_gettop(L) - fidx + 1;
}

static int lock_with(lua_State *L)
{
    mpe_shm_obj *o = checklock(L, 1, "with");
    return call_holding(L, o, 2, o->kind == MPE_SHM_RLOCK ? "rlock:with" : "lock:with");
}

static int lock_tostring(lua_State *L)
{
    syncud *u = checksync(L, 1, LOCK_MT, RLOCK_MT, "lock:__tostring");
    const char *mt = u->mt;
    if (!u->o)
        lua_pushfstring(L, "%s (closed): %p", mt, (void *)u);
    else
        lua_pushfstring(L, "%s: %p", mt, u->o->p);
    return 1;
}

/* ---- semaphore ------------------------------------------------------------------------------ */

static int l_semaphore(lua_State *L)
{
    lua_Integer n = 1;
    if (!lua_isnoneornil(L, 1)) {
        if (!lua_isinteger(L, 1) || lua_tointeger(L, 1) < 0 || lua_tointeger(L, 1) > SEM_VALUE_MAX)
            mpe__argerror(L, "semaphore", 1, "must be a non-negative integer, got %s",
                          mpe__got(L, 1));
        n = lua_tointeger(L, 1);
    }
    syncud *u = newud(L, SEM_MT);
    u->o = create(L, MPE_SHM_SEMAPHORE, (unsigned)n, "semaphore");
    return 1;
}

static int sem_acquire(lua_State *L)
{
    mpe_shm_obj *o = checkud(L, 1, SEM_MT, "semaphore:acquire")->o;
    double timeout = mpe__opt_timeout(L, 2, "semaphore:acquire");
    mpe_sigwatch h;
    mpe_waitctl w = watch(L, &h);
    mpe_err e;
    int r = mpe__sync_sem_acquire(o, timeout, &w, &e);
    return wait_result(L, r, &e, 0, "semaphore:acquire");
}

static int sem_release(lua_State *L)
{
    mpe_shm_obj *o = checkud(L, 1, SEM_MT, "semaphore:release")->o;
    lua_Integer n = 1;
    if (!lua_isnoneornil(L, 2)) {
        if (!lua_isinteger(L, 2) || lua_tointeger(L, 2) < 1 || lua_tointeger(L, 2) > SEM_VALUE_MAX)
            mpe__argerror(L, "semaphore:release", 2, "must be a positive integer, got %s",
                          mpe__got(L, 2));
        n = lua_tointeger(L, 2);
    }
    mpe_err e;
    if (mpe__sync_sem_release(o, (unsigned)n, &e) != 0)
        mpe__fail(L, "mpe: semaphore:release: %s", e.msg);
    return 0;
}

static int sem_get_value(lua_State *L)
{
    lua_pushinteger(L, mpe__sync_sem_value(checkud(L, 1, SEM_MT, "semaphore:get_value")->o));
    return 1;
}

static int sem_with(lua_State *L)
{
    mpe_shm_obj *o = checkud(L, 1, SEM_MT, "semaphore:with")->o;
    if (!is_callable(L, 2))
        mpe__argerror(L, "semaphore:with", 2, "must be a function, got %s", mpe__got(L, 2));
    int nargs = lua_gettop(L) - 2;
    mpe_sigwatch h;
    mpe_waitctl w = watch(L, &h);
    mpe_err e;
    int r = mpe__sync_sem_acquire(o, -1, &w, &e);
    if (r == MPE_WAIT_INTERRUPTED)
        return 0;
    if (r != MPE_WAIT_OK)
        mpe__fail(L, "mpe: semaphore:with: %s", e.msg);
    int status = lua_pcall(L, nargs, LUA_MULTRET, 0);
    mpe__sync_sem_release(o, 1, &e);
    if (status != LUA_OK)
        return lua_error(L);
    return lua_gettop(L) - 1;
}

/* ---- event ------------------------------------------------------------------------------------- */

static int l_event(lua_State *L)
{
    syncud *u = newud(L, EVENT_MT);
    u->o = create(L, MPE_SHM_EVENT, 0, "event");
    return 1;
}

static int event_set(lua_State *L)
{
    mpe__sync_event_set(checkud(L, 1, EVENT_MT, "event:set")->o);
    return 0;
}

static int event_clear(lua_State *L)
{
    mpe__sync_event_clear(checkud(L, 1, EVENT_MT, "event:clear")->o);
    return 0;
}

static int event_is_set(lua_State *L)
{
    lua_pushboolean(L, mpe__sync_event_is_set(checkud(L, 1, EVENT_MT, "event:is_set")->o));
    return 1;
}

static int event_wait(lua_State *L)
{
    mpe_shm_obj *o = checkud(L, 1, EVENT_MT, "event:wait")->o;
    double timeout = mpe__opt_timeout(L, 2, "event:wait");
    mpe_sigwatch h;
    mpe_waitctl w = watch(L, &h);
    mpe_err e;
    return wait_result(L, mpe__sync_event_wait(o, timeout, &w, &e), &e, 0, "event:wait");
}

/* ---- condition ------------------------------------------------------------------------------------ */

static int l_condition(lua_State *L)
{
    mpe_shm_obj *lock = NULL;
    if (!lua_isnoneornil(L, 1)) {
        syncud *l = checksync(L, 1, LOCK_MT, RLOCK_MT, "condition");
        if (!l->o)
            mpe__argerror(L, "condition", 1, "is a closed %s", mpe__typename(L, 1));
        lock = l->o;
    }
    syncud *u = newud(L, COND_MT);
    if (lock) {
        mpe__shm_ref(lock);
        u->lock = lock;
    } else {
        u->lock = create(L, MPE_SHM_RLOCK, 0, "condition"); /* Python's default: an RLock */
    }
    u->o = create(L, MPE_SHM_CONDITION, 0, "condition");
    return 1;
}

static int cond_acquire(lua_State *L)
{
    syncud *u = checkud(L, 1, COND_MT, "condition:acquire");
    double timeout = mpe__opt_timeout(L, 2, "condition:acquire");
    return acquire_lock(L, u->lock, timeout, "condition:acquire");
}

static int cond_release(lua_State *L)
{
    syncud *u = checkud(L, 1, COND_MT, "condition:release");
    mpe_err e;
    if (mpe__sync_lock_release(u->lock, &e) != 0)
        mpe__fail(L, "mpe: condition:release: %s", e.msg);
    return 0;
}

static int cond_wait_raw(lua_State *L, syncud *u, double timeout, const char *fname)
{
    mpe_sigwatch h;
    mpe_waitctl w = watch(L, &h);
    mpe_err e;
    pid_t dead = 0;
    int r = mpe__sync_cond_wait(u->o, u->lock, timeout, &w, &dead, &e);
    return wait_result(L, r, &e, dead, fname);
}

static int cond_wait(lua_State *L)
{
    syncud *u = checkud(L, 1, COND_MT, "condition:wait");
    return cond_wait_raw(L, u, mpe__opt_timeout(L, 2, "condition:wait"), "condition:wait");
}

/* wait_for(predicate[, timeout]) -> the predicate's last result (Python's). */
static int cond_wait_for(lua_State *L)
{
    syncud *u = checkud(L, 1, COND_MT, "condition:wait_for");
    if (!is_callable(L, 2))
        mpe__argerror(L, "condition:wait_for", 2, "must be a function, got %s", mpe__got(L, 2));
    double timeout = mpe__opt_timeout(L, 3, "condition:wait_for");
    double end = timeout >= 0 ? mpe__proc_now() + timeout : 0;
    lua_settop(L, 2);
    for (;;) {
        lua_pushvalue(L, 2);
        lua_call(L, 0, 1);
        if (lua_toboolean(L, -1))
            return 1;
        double left = -1;
        if (timeout >= 0) {
            left = end - mpe__proc_now();
            if (left <= 0)
                return 1;
        }
        lua_pop(L, 1);
        cond_wait_raw(L, u, left, "condition:wait_for");
        lua_pop(L, 1); /* after an interrupt, the next predicate call runs the new hook */
    }
}

static int cond_notify(lua_State *L)
{
    syncud *u = checkud(L, 1, COND_MT, "condition:notify");
    lua_Integer n = 1;
    if (!lua_isnoneornil(L, 2)) {
        if (!lua_isinteger(L, 2) || lua_tointeger(L, 2) < 0)
            mpe__argerror(L, "condition:notify", 2, "must be a non-negative integer, got %s",
                          mpe__got(L, 2));
        n = lua_tointeger(L, 2);
        if (n > 0x7fffffff)
            n = 0x7fffffff;
    }
    mpe_err e;
    if (mpe__sync_cond_notify(u->o, u->lock, (int)n, &e) != 0)
        mpe__fail(L, "mpe: condition:notify: %s", e.msg);
    return 0;
}

static int cond_notify_all(lua_State *L)
{
    syncud *u = checkud(L, 1, COND_MT, "condition:notify_all");
    mpe_err e;
    if (mpe__sync_cond_notify(u->o, u->lock, -1, &e) != 0)
        mpe__fail(L, "mpe: condition:notify_all: %s", e.msg);
    return 0;
}

static int cond_with(lua_State *L)
{
    syncud *u = checkud(L, 1, COND_MT, "condition:with");
    return call_holding(L, u->lock, 2, "condition:with");
}

/* ---- barrier ----------------------------------------------------------------------------------------- */

static int l_barrier(lua_State *L)
{
    if (!lua_isinteger(L, 1) || lua_tointeger(L, 1) < 1 || lua_tointeger(L, 1) > 0x7fffffff)
        mpe__argerror(L, "barrier", 1, "must be a positive integer (the number of parties), got %s",
                      mpe__got(L, 1));
    unsigned n = (unsigned)lua_tointeger(L, 1);
    syncud *u = newud(L, BARRIER_MT);
    u->o = create(L, MPE_SHM_BARRIER, n, "barrier");
    return 1;
}

static int barrier_wait(lua_State *L)
{
    mpe_shm_obj *o = checkud(L, 1, BARRIER_MT, "barrier:wait")->o;
    double timeout = mpe__opt_timeout(L, 2, "barrier:wait");
    mpe_sigwatch h;
    mpe_waitctl w = watch(L, &h);
    mpe_err e;
    unsigned index = 0;
    int r = mpe__sync_barrier_wait(o, timeout, &w, &index, &e);
    switch (r) {
    case MPE_WAIT_OK:
        lua_pushinteger(L, (lua_Integer)index);
        return 1;
    case MPE_WAIT_TIMEOUT:
        return mpe__error_timeout(L, "barrier:wait", timeout);
    case MPE_WAIT_INTERRUPTED:
        return 0;
    default:
        return mpe__fail(L, "mpe: barrier:wait: %s", e.msg);
    }
}

static int barrier_parties(lua_State *L)
{
    mpe_shm_obj *o = checkud(L, 1, BARRIER_MT, "barrier:parties")->o;
    lua_pushinteger(L, (lua_Integer)mpe__sync_barrier_parties(o));
    return 1;
}

/* ---- tostring for the rest ------------------------------------------------------------------------- */

static int sync_tostring(lua_State *L)
{
    syncud *u = checksync(L, 1, NULL, NULL, "sync:__tostring");
    const char *mt = u->mt;
    if (!u->o)
        lua_pushfstring(L, "%s (closed): %p", mt, (void *)u);
    else
        lua_pushfstring(L, "%s: %p", mt, u->o->p);
    return 1;
}

/* ---- travelling by reference ------------------------------------------------------------------------ */

static const struct {
    const char *mt;
    uint32_t kind;
} kinds[] = {{LOCK_MT, MPE_SHM_LOCK},           {RLOCK_MT, MPE_SHM_RLOCK},
             {SEM_MT, MPE_SHM_SEMAPHORE},       {EVENT_MT, MPE_SHM_EVENT},
             {COND_MT, MPE_SHM_CONDITION},      {BARRIER_MT, MPE_SHM_BARRIER}};

static const char *mt_of(uint32_t kind)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (kinds[i].kind == kind)
            return kinds[i].mt;
    return "?";
}

static void put_ref(lua_State *L, mpe_shm_obj *o, mpe_buf *b, mpe_fds *fds)
{
    mpe_err e;
    if (mpe__shm_ref_write(o, b, fds, &e) != 0)
        mpe__fail(L, "mpe: cannot send %s: %s", mt_of(o->kind), e.msg);
}

static mpe_shm_obj *get_ref(lua_State *L, mpe_rd *r, mpe_fds *fds, uint32_t kind)
{
    mpe_err e;
    mpe_shm_obj *o = mpe__shm_ref_read(r, fds, kind, &e);
    if (!o)
        mpe__fail(L, "mpe: decode: %s: %s", mt_of(kind), e.msg);
    return o;
}

static void sync_encode(lua_State *L, int idx, mpe_buf *b, mpe_fds *fds)
{
    syncud *u = lua_touserdata(L, idx);
    const char *mt = mpe__typename(L, idx);
    if (!u || !u->o)
        mpe__fail(L, "mpe: attempt to use a closed %s", mt);
    put_ref(L, u->o, b, fds);
    if (u->o->kind == MPE_SHM_CONDITION) {
        mpe__buf_put_u32(L, b, u->lock->kind);
        put_ref(L, u->lock, b, fds);
    }
}

/* Decode one object of the given kind into a new userdata (pushed). */
static void decode_kind(lua_State *L, mpe_rd *r, mpe_fds *fds, uint32_t kind)
{
    syncud *u = newud(L, mt_of(kind));
    mpe_err e;
    u->o = get_ref(L, r, fds, kind);
    if (mpe__sync_attach(u->o, &e) != 0)
        mpe__fail(L, "mpe: decode: %s: %s", mt_of(kind), e.msg);
    if (kind == MPE_SHM_CONDITION) {
        uint32_t lk;
        if (mpe__rd_u32(r, &lk) != 0 || (lk != MPE_SHM_LOCK && lk != MPE_SHM_RLOCK))
            mpe__fail(L, "mpe: decode: %s: malformed lock reference", COND_MT);
        u->lock = get_ref(L, r, fds, lk);
        if (mpe__sync_attach(u->lock, &e) != 0)
            mpe__fail(L, "mpe: decode: %s: %s", COND_MT, e.msg);
    }
}

static void lock_decode(lua_State *L, mpe_rd *r, mpe_fds *fds) { decode_kind(L, r, fds, MPE_SHM_LOCK); }
static void rlock_decode(lua_State *L, mpe_rd *r, mpe_fds *fds) { decode_kind(L, r, fds, MPE_SHM_RLOCK); }
static void sem_decode(lua_State *L, mpe_rd *r, mpe_fds *fds) { decode_kind(L, r, fds, MPE_SHM_SEMAPHORE); }
static void event_decode(lua_State *L, mpe_rd *r, mpe_fds *fds) { decode_kind(L, r, fds, MPE_SHM_EVENT); }
static void cond_decode(lua_State *L, mpe_rd *r, mpe_fds *fds) { decode_kind(L, r, fds, MPE_SHM_CONDITION); }
static void barrier_decode(lua_State *L, mpe_rd *r, mpe_fds *fds) { decode_kind(L, r, fds, MPE_SHM_BARRIER); }

static const mpe_codec_type codec_types[] = {
    {LOCK_MT, sync_encode, lock_decode},     {RLOCK_MT, sync_encode, rlock_decode},
    {SEM_MT, sync_encode, sem_decode},       {EVENT_MT, sync_encode, event_decode},
    {COND_MT, sync_encode, cond_decode},     {BARRIER_MT, sync_encode, barrier_decode}};

/* ---- registration -------------------------------------------------------------------------------------- */

static const luaL_Reg lock_methods[] = {{"acquire", lock_acquire}, {"release", lock_release},
                                        {"with", lock_with},       {"close", sync_gc},
                                        {NULL, NULL}};
static const luaL_Reg sem_methods[] = {{"acquire", sem_acquire}, {"release", sem_release},
                                       {"get_value", sem_get_value}, {"with", sem_with},
                                       {"close", sync_gc},        {NULL, NULL}};
static const luaL_Reg event_methods[] = {{"set", event_set},   {"clear", event_clear},
                                         {"is_set", event_is_set}, {"wait", event_wait},
                                         {"close", sync_gc},   {NULL, NULL}};
static const luaL_Reg cond_methods[] = {
    {"acquire", cond_acquire}, {"release", cond_release},       {"wait", cond_wait},
    {"wait_for", cond_wait_for}, {"notify", cond_notify},       {"notify_all", cond_notify_all},
    {"with", cond_with},       {"close", sync_gc},              {NULL, NULL}};
static const luaL_Reg barrier_methods[] = {{"wait", barrier_wait}, {"parties", barrier_parties},
                                           {"close", sync_gc},     {NULL, NULL}};

static void make_metatable(lua_State *L, const char *mt, const luaL_Reg *methods,
                           lua_CFunction tostring)
{
    luaL_newmetatable(L, mt);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sync_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, sync_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

void mpe__open_sync(lua_State *L)
{
    static const luaL_Reg ctors[] = {{"lock", l_lock},         {"rlock", l_rlock},
                                     {"semaphore", l_semaphore}, {"event", l_event},
                                     {"condition", l_condition}, {"barrier", l_barrier},
                                     {NULL, NULL}};
    make_metatable(L, LOCK_MT, lock_methods, lock_tostring);
    make_metatable(L, RLOCK_MT, lock_methods, lock_tostring);
    make_metatable(L, SEM_MT, sem_methods, sync_tostring);
    make_metatable(L, EVENT_MT, event_methods, sync_tostring);
    make_metatable(L, COND_MT, cond_methods, sync_tostring);
    make_metatable(L, BARRIER_MT, barrier_methods, sync_tostring);
    for (size_t i = 0; i < sizeof codec_types / sizeof codec_types[0]; i++)
        mpe__codec_add_type(L, &codec_types[i]);
    luaL_setfuncs(L, ctors, 0);
}
