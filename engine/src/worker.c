/* worker.c -- a pool worker's loop: receive functions and chunks, run each
 * item under lua_pcall, send results back in bulk.
 * SPDX-License-Identifier: MIT
 *
 * Runs in a forked child, in its copy of the parent's lua_State, so globals and
 * functions defined before the fork are simply there. Results are batched:
 * a worker writes when it has nothing left to read, when 256 KiB are waiting,
 * or when 2 ms have passed since the last write (so that a crash loses at
 * most 2 ms of finished work, and the parent sees progress). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

#define FLUSH_BYTES (256 * 1024)
#define FLUSH_NS 2000000

typedef struct wstate {
    lua_State *L;
    const mpe_worker_cfg *cfg;
    mpe_buf in, out;  /* frames received / to send */
    mpe_buf ints;     /* the current segment's packed results */
    mpe_buf gen;      /* the current segment's general results */
    int segmode;      /* 0 empty, MPE_R_INTS, MPE_R_FLOATS, or -1 general */
    int segerrors;
    uint64_t chunk;   /* the chunk being run */
    uint32_t from, count;
    int mode;         /* MPE_M_* of the chunk */
    int64_t last_flush, chunk_start;
    size_t mark;      /* start of the general record being written, or (size_t)-1 */
    long tasks;       /* items run, for maxtasksperchild */
    int inherited;    /* stack levels below the worker loop, copied from the parent by fork */
    struct jobfds {
        uint64_t job;
        mpe_fds fds;
    } jf[8];
    int njf;
} wstate;

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void flush_out(wstate *w)
{
    if (w->out.n == 0)
        return;
    if (mpe__transport_send_all(w->cfg->fd, w->out.p, w->out.n, NULL, 0) != 0)
        _exit(0); /* the parent is gone: nobody wants the results */
    w->out.n = 0;
    w->last_flush = now_ns();
}

/* Move the current segment (items [from, from+count) of the chunk) into a
 * result frame in the output buffer. */
static void close_segment(wstate *w, int final)
{
    lua_State *L = w->L;
    if (w->count == 0 && !final)
        return;
    size_t f = mpe__frame_begin(L, &w->out, MPE_F_RESULT);
    mpe__buf_put_u64(L, &w->out, w->chunk);
    mpe__buf_put_u32(L, &w->out, w->from);
    mpe__buf_put_u32(L, &w->out, w->count);
    unsigned flags = (final ? MPE_R_FINAL : 0) | (w->segerrors ? MPE_R_ERRORS : 0);
    if (w->segmode > 0)
        flags |= (unsigned)w->segmode;
    mpe__buf_put_u8(L, &w->out, flags);
    mpe__buf_put_u64(L, &w->out, final ? (uint64_t)(now_ns() - w->chunk_start) : 0);
    if (w->segmode > 0)
        mpe__buf_put(L, &w->out, w->ints.p, w->ints.n);
    else
        mpe__buf_put(L, &w->out, w->gen.p, w->gen.n);
    mpe__frame_end(&w->out, f);
    w->from += w->count;
    w->count = 0;
    w->ints.n = w->gen.n = 0;
    w->segmode = 0;
    w->segerrors = 0;
}

/* Rewrite packed results as general ones: a result arrived that is not of the
 * segment's packed kind. */
static void ungroup(wstate *w)
{
    lua_State *L = w->L;
    size_t n = w->ints.n / 8;
    for (size_t i = 0; i < n; i++) {
        mpe__buf_put_u8(L, &w->gen, 0);
        mpe__buf_put_varint(L, &w->gen, 1);
        if (w->segmode == MPE_R_INTS) {
            int64_t v;
            memcpy(&v, w->ints.p + 8 * i, 8);
            lua_pushinteger(L, (lua_Integer)v);
        } else {
            double v;
            memcpy(&v, w->ints.p + 8 * i, 8);
            lua_pushnumber(L, v);
        }
        mpe__encode(L, -1, &w->gen, "result", NULL);
        lua_pop(L, 1);
    }
    w->ints.n = 0;
    w->segmode = -1;
}

/* lua_pcall'd per item: stack [fn, item]. Calls fn and records its results.
 * Raises (and the item fails) when fn raises or a result cannot be sent. */
static int run_item(lua_State *L)
{
    wstate *w = lua_touserdata(L, lua_upvalueindex(1));
    int nargs = 1;
    if (w->mode != MPE_M_MAP) {
        if (!lua_istable(L, 2))
            return luaL_error(L, "mpe: arguments of item must be a table, got %s", luaL_typename(L, 2));
        lua_getfield(L, 2, "n");
        lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : (lua_Integer)lua_rawlen(L, 2);
        lua_pop(L, 1);
        if (n < 0 || n > 250)
            return luaL_error(L, "mpe: too many arguments (%d)", (int)n);
        luaL_checkstack(L, (int)n + 4, "too many arguments");
        for (lua_Integer i = 1; i <= n; i++)
            lua_rawgeti(L, 2, i);
        lua_remove(L, 2);
        nargs = (int)n;
    }
    lua_call(L, nargs, w->mode == MPE_M_APPLY ? LUA_MULTRET : 1);
    int nres = lua_gettop(L);
    if (w->mode != MPE_M_APPLY && nres == 1) {
        int t = lua_type(L, 1);
        if (t == LUA_TNUMBER && w->segmode >= 0) {
            int kind = lua_isinteger(L, 1) ? MPE_R_INTS : MPE_R_FLOATS;
            if (w->segmode == 0)
                w->segmode = kind;
            if (w->segmode == kind) {
                if (kind == MPE_R_INTS)
                    mpe__buf_put_u64(L, &w->ints, (uint64_t)lua_tointeger(L, 1));
                else
                    mpe__buf_put_f64(L, &w->ints, lua_tonumber(L, 1));
                return 0;
            }
        }
        if (w->segmode > 0)
            ungroup(w);
        w->segmode = -1;
    } else if (w->segmode != -1) {
        if (w->segmode > 0)
            ungroup(w);
        w->segmode = -1;
    }
    w->mark = w->gen.n; /* if an encode below raises, the item's record is cut off here */
    mpe__buf_put_u8(L, &w->gen, 0);
    mpe__buf_put_varint(L, &w->gen, (uint64_t)nres);
    for (int i = 1; i <= nres; i++)
        mpe__encode(L, i, &w->gen, "result", NULL);
    w->mark = (size_t)-1;
    return 0;
}

/* Encode the error table at the top into gen, dropping an unsendable value. */
static int encode_error(lua_State *L)
{
    wstate *w = lua_touserdata(L, lua_upvalueindex(1));
    mpe__encode(L, 1, &w->gen, "error", NULL);
    return 0;
}

/* The traceback of a task error ends with the frames the worker inherited
 * from its parent at fork (the call that created the pool, the parent's main
 * chunk): they say nothing about the task, so cut them, and the runner's. */
static void trim_traceback(wstate *w, int err)
{
    lua_State *L = w->L;
    if (!lua_istable(L, err))
        return;
    lua_getfield(L, err, "traceback");
    size_t len;
    const char *tb = lua_tolstring(L, -1, &len);
    if (tb) {
        const char *end = tb + len;
        for (int drop = w->inherited + 1; drop > 0 && end > tb; drop--) {
            const char *nl = end - 1;
            while (nl > tb && *nl != '\n')
                nl--;
            if (nl == tb || strstr(nl, "(skipping") != NULL)
                break;
            end = nl;
        }
        lua_pushlstring(L, tb, (size_t)(end - tb));
        lua_setfield(L, err, "traceback");
    }
    lua_pop(L, 1);
}

static void put_error(wstate *w, int encoder)
{
    lua_State *L = w->L;
    int err = lua_gettop(L);
    trim_traceback(w, err);
    size_t mark = w->gen.n;
    for (int attempt = 0; attempt < 3; attempt++) {
        w->gen.n = mark;
        mpe__buf_put_u8(L, &w->gen, 1);
        mpe__buf_put_varint(L, &w->gen, 1);
        if (attempt == 1 && lua_istable(L, err)) {
            lua_pushnil(L);
            lua_setfield(L, err, "value");
        } else if (attempt == 2) {
            lua_createtable(L, 0, 1);
            lua_pushliteral(L, "error value could not be sent back");
            lua_setfield(L, -2, "message");
            lua_replace(L, err);
        }
        lua_pushvalue(L, encoder);
        lua_pushvalue(L, err);
        if (lua_pcall(L, 1, 0, 0) == LUA_OK)
            break;
        lua_pop(L, 1);
    }
    lua_settop(L, err - 1);
}

static mpe_fds *job_fds(wstate *w, uint64_t job)
{
    for (int i = 0; i < w->njf; i++)
        if (w->jf[i].job == job)
            return &w->jf[i].fds;
    return NULL;
}

static void drop_job_fds(wstate *w, uint64_t job)
{
    for (int i = 0; i < w->njf; i++)
        if (w->jf[i].job == job) {
            for (int k = 0; k < w->jf[i].fds.n; k++)
                if (w->jf[i].fds.fd[k] >= 0)
                    close(w->jf[i].fds.fd[k]);
            w->jf[i] = w->jf[--w->njf];
            return;
        }
}

/* Stack slots the loop keeps: the function cache, the message handler, the
 * item runner and the error encoder. */
enum { S_FUNCS = 1, S_HANDLER, S_RUNNER, S_ENCODER, S_FN, S_BASE = S_FN };

static void malformed(const char *what)
{
    fprintf(stderr, "mpe: worker: malformed %s frame from the pool\n", what);
    fflush(stderr);
    _exit(70);
}

static void run_chunk(wstate *w, mpe_rd *r, int base)
{
    lua_State *L = w->L;
    uint64_t chunk, job, fnid;
    unsigned mode, kind;
    uint32_t n;
    if (mpe__rd_u64(r, &chunk) || mpe__rd_u64(r, &job) || mpe__rd_u64(r, &fnid) ||
        mpe__rd_u8(r, &mode) || mpe__rd_u8(r, &kind) || mpe__rd_u32(r, &n))
        malformed("chunk");
    lua_rawgeti(L, base + S_FUNCS, (lua_Integer)fnid);
    if (lua_isnil(L, -1))
        malformed("chunk (unknown function)");
    lua_replace(L, base + S_FN);
    w->chunk = chunk;
    w->from = 0;
    w->count = 0;
    w->mode = (int)mode;
    w->chunk_start = now_ns();
    int64_t rstart = 0, rstep = 0;
    if (kind == MPE_K_RANGE) {
        uint64_t a, s;
        if (mpe__rd_u64(r, &a) || mpe__rd_u64(r, &s))
            malformed("chunk");
        rstart = (int64_t)a;
        rstep = (int64_t)s;
    }
    mpe_fds tmp, *jfds = job_fds(w, job);
    for (uint32_t i = 0; i < n; i++) {
        int64_t t = now_ns();
        w->cfg->progress->item = (int32_t)i;
        w->cfg->progress->started_ns = t;
        __atomic_store_n(&w->cfg->progress->chunk, (int64_t)chunk, __ATOMIC_RELEASE);
        if (w->count > 0 && t - w->last_flush > FLUSH_NS) {
            close_segment(w, 0);
            flush_out(w);
        }
        lua_pushvalue(L, base + S_RUNNER);
        lua_pushvalue(L, base + S_FN);
        switch (kind) {
        case MPE_K_RANGE:
            lua_pushinteger(L, (lua_Integer)(rstart + (int64_t)i * rstep));
            break;
        case MPE_K_INTS: {
            uint64_t v;
            if (mpe__rd_u64(r, &v))
                malformed("chunk");
            lua_pushinteger(L, (lua_Integer)(int64_t)v);
            break;
        }
        case MPE_K_FLOATS: {
            double v;
            if (mpe__rd_f64(r, &v))
                malformed("chunk");
            lua_pushnumber(L, v);
            break;
        }
        default: {
            mpe_fds *use = NULL;
            if (jfds) { /* each decode gets its own copies of the job's descriptors */
                tmp.n = 0;
                for (int k = 0; k < jfds->n; k++)
                    tmp.fd[tmp.n++] = jfds->fd[k] >= 0 ? dup(jfds->fd[k]) : -1;
                use = &tmp;
            }
            mpe__decode(L, r, use);
            if (use)
                for (int k = 0; k < tmp.n; k++)
                    if (tmp.fd[k] >= 0)
                        close(tmp.fd[k]);
        }
        }
        if (lua_pcall(L, 2, 0, base + S_HANDLER) != LUA_OK) {
            if (w->mark != (size_t)-1)
                w->gen.n = w->mark;
            w->mark = (size_t)-1;
            if (w->segmode > 0)
                ungroup(w);
            w->segmode = -1;
            w->segerrors = 1;
            put_error(w, base + S_ENCODER);
        }
        lua_settop(L, base + S_FN);
        w->count++;
        w->tasks++;
    }
    __atomic_store_n(&w->cfg->progress->chunk, 0, __ATOMIC_RELEASE);
    close_segment(w, 1);
}

static void report_initfail(wstate *w, int encoder)
{
    lua_State *L = w->L;
    size_t f = mpe__frame_begin(L, &w->out, MPE_F_INITFAIL);
    w->gen.n = 0;
    put_error(w, encoder);
    /* put_error wrote [status][nvals][error]: skip the two header bytes. */
    mpe__buf_put(L, &w->out, w->gen.p + 2, w->gen.n - 2);
    mpe__frame_end(&w->out, f);
    flush_out(w);
}

void mpe__worker_main(lua_State *L, const mpe_worker_cfg *cfg)
{
    static wstate w; /* one per worker process; static so a Lua error cannot leak it */
    memset(&w, 0, sizeof w);
    w.L = L;
    w.cfg = cfg;
    char name[32];
    snprintf(name, sizeof name, "PoolWorker-%d", cfg->number);
    mpe__proc_set_identity(name, cfg->slot);
    /* Ctrl-C reaches the whole process group: the parent alone decides what
     * it means (it stops the pool), so a worker does not die of it mid-item. */
    signal(SIGINT, SIG_IGN);
    lua_Debug ar;
    while (lua_getstack(L, w.inherited, &ar))
        w.inherited++;
    int base = lua_gettop(L);
    lua_newtable(L);                       /* S_FUNCS */
    lua_pushcfunction(L, mpe__error_handler); /* S_HANDLER */
    lua_pushlightuserdata(L, &w);
    lua_pushcclosure(L, run_item, 1);      /* S_RUNNER */
    lua_pushlightuserdata(L, &w);
    lua_pushcclosure(L, encode_error, 1);  /* S_ENCODER */
    lua_pushnil(L);                        /* S_FN */
    w.last_flush = now_ns();
    w.mark = (size_t)-1;

    if (cfg->init_ref != LUA_NOREF) {
        int top = lua_gettop(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, cfg->init_ref);
        int nargs = 0;
        if (cfg->initargs_ref != LUA_NOREF) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, cfg->initargs_ref);
            int t = lua_gettop(L);
            nargs = (int)lua_rawlen(L, t);
            luaL_checkstack(L, nargs + 2, "too many initargs");
            for (int i = 1; i <= nargs; i++)
                lua_rawgeti(L, t, i);
            lua_remove(L, t);
        }
        if (lua_pcall(L, nargs, 0, base + S_HANDLER) != LUA_OK) {
            report_initfail(&w, base + S_ENCODER);
            _exit(3);
        }
        lua_settop(L, top);
    }

    for (;;) {
        size_t off = 0;
        unsigned type;
        uint32_t len;
        while (mpe__frame_peek(&w.in, off, &type, &len)) {
            mpe_rd r;
            mpe__rd_init(&r, w.in.p + off + MPE_FRAME_HDR, len);
            off += MPE_FRAME_HDR + len;
            switch (type) {
            case MPE_F_FUNC: {
                uint64_t id;
                if (mpe__rd_u64(&r, &id))
                    malformed("function");
                mpe__decode(L, &r, NULL);
                lua_rawseti(L, base + S_FUNCS, (lua_Integer)id);
                break;
            }
            case MPE_F_DROP: {
                uint64_t id;
                if (mpe__rd_u64(&r, &id))
                    malformed("drop");
                lua_pushnil(L);
                lua_rawseti(L, base + S_FUNCS, (lua_Integer)id);
                break;
            }
            case MPE_F_JOBEND: {
                uint64_t job;
                if (mpe__rd_u64(&r, &job))
                    malformed("jobend");
                drop_job_fds(&w, job);
                break;
            }
            case MPE_F_CHUNK:
                run_chunk(&w, &r, base);
                if (w.out.n >= FLUSH_BYTES)
                    flush_out(&w);
                if (cfg->maxtasks > 0 && w.tasks >= cfg->maxtasks) {
                    flush_out(&w);
                    fflush(NULL);
                    _exit(0);
                }
                break;
            case MPE_F_FDS: /* its descriptors were dropped (too many): nothing to keep */
                break;
            case MPE_F_STOP:
                flush_out(&w);
                fflush(NULL);
                _exit(0);
            default:
                malformed("unknown");
            }
        }
        /* Keep the unread tail; its descriptors (F_FDS) arrive with it. */
        if (off > 0) { /* w.in.p may still be NULL when nothing was read */
            memmove(w.in.p, w.in.p + off, w.in.n - off);
            w.in.n -= off;
        }
        mpe_fds got = {.n = 0};
        ssize_t rd = mpe__transport_recv(cfg->fd, &w.in, &got, 0);
        if (rd < 0 && errno == EAGAIN) {
            flush_out(&w); /* nothing more to do for now: let the parent have the results */
            rd = mpe__transport_recv(cfg->fd, &w.in, &got, 1);
        }
        if (rd <= 0) {
            fflush(NULL);
            _exit(0); /* EOF or a broken channel: the pool is gone */
        }
        if (got.n > 0) {
            /* Descriptors come alone in an F_FDS frame: [u64 job]. */
            unsigned t2;
            uint32_t l2;
            if (!mpe__frame_peek(&w.in, 0, &t2, &l2) || t2 != MPE_F_FDS)
                malformed("descriptor");
            mpe_rd r;
            uint64_t job;
            mpe__rd_init(&r, w.in.p + MPE_FRAME_HDR, l2);
            if (mpe__rd_u64(&r, &job))
                malformed("descriptor");
            if (job_fds(&w, job) || w.njf == 8) { /* already known (sent with every chunk) */
                for (int k = 0; k < got.n; k++)
                    close(got.fd[k]);
            } else {
                w.jf[w.njf].job = job;
                w.jf[w.njf].fds = got;
                w.njf++;
            }
            memmove(w.in.p, w.in.p + MPE_FRAME_HDR + l2, w.in.n - MPE_FRAME_HDR - l2);
            w.in.n -= MPE_FRAME_HDR + l2;
        }
    }
}
