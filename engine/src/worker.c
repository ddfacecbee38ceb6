/* worker.c -- a pool worker's loop: receive functions and chunks, run the
 * items, send results back in bulk.
 * SPDX-License-Identifier: MIT
 *
 * Runs in a forked child, in its copy of the parent's lua_State, so globals and
 * functions defined before the fork are simply there. The items of a chunk run
 * under one lua_pcall; an item that raises is recorded and the next pcall
 * resumes after it. Results are batched: a worker writes when it has nothing
 * left to read, when 256 KiB are waiting, or when 2 ms have passed since the
 * last write, so a crash loses at most 2 ms of finished work and the parent
 * sees steady progress. The clock is read every k items, k adapting so that
 * reading it costs nothing next to the items. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "compat.h"
#include "array.h"
#include "buf.h"
#include "codec.h"
#include "err.h"
#include "fdio.h"
#include "frames.h"
#include "lbuf.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "proc.h"
#include "protocol.h"
#include "rand.h"
#include "shm.h"
#include "transport.h"
#include "worker.h"
#include "worker_jit.h"

#define FLUSH_BYTES (256 * 1024)
#define FLUSH_NS 2000000

typedef struct keyed_fds {
    uint64_t key; /* a function id */
    mpe_fds fds;
} keyed_fds;

typedef struct wstate {
    lua_State *L;
    const mpe_worker_cfg *cfg;
    mpe_buf in, out;  /* frames received / to send */
    mpe_buf ints;     /* the current segment's packed results */
    mpe_buf gen;      /* the current segment's general results */
    mpe_fds rfds;     /* descriptors of shared objects in gen (owned: closed once sent) */
    int segmode;      /* 0 empty, MPE_R_INTS, MPE_R_FLOATS, or -1 general */
    int segerrors;
    size_t mark;      /* start of the general record being written, or (size_t)-1 */
    int markfds;      /* rfds.n at mark */
    /* the chunk being run */
    uint64_t chunk;
    int mode, kind;
    uint32_t n, i;    /* items, and the next to run */
    uint32_t from, count; /* the segment: items [from, from + count) */
    mpe_rd *items;
    int64_t rstart, rstep;
    uint64_t first;   /* the job's index of item 0 */
    mpe_shm_obj *arr; /* option out=: results go here (element or row first + i), or NULL */
    int outcols;      /* arr is 2-D: results are all of fn's values */
    int outfast;      /* 1-D int64 (1) or double (2): a number needs no conversion check */
    size_t outrows;
    /* clock */
    int64_t last_flush, chunk_start, last_check;
    int tick_every, tick_left;
    long tasks;       /* items run, for maxtasksperchild */
    int inherited;    /* stack levels below the worker loop, copied from the parent by fork */
    keyed_fds *keyed; /* descriptor sets of functions' upvalues */
    int nkeyed, keyedcap;
    int *segfd;       /* the pool's shared segments by id (MPE_F_SEGS), -1 where none */
    int nsegfd;
    mpe_fdin fdin;    /* descriptors received, claimed by F_FDS and F_SEGS frames by position */
    /* the chunk's Lua loop (worker_jit.c), when it runs through one */
    mpe_jit_run jr;
    int64_t jit_from; /* first item of the batch being run, or -1 */
    int jit_trim;     /* the failure being recorded came through the loop's frame */
    double jres[MPE_JIT_BATCH]; /* a batch's collected results */
    uint8_t jtag[MPE_JIT_BATCH]; /* and their tags (mpe_jit_run.tags), zeroed once read */
} wstate;

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void close_fds(mpe_fds *f)
{
    mpe__fds_close(f);
}

static void malformed(const char *what) __attribute__((noreturn));
static void malformed(const char *what)
{
    fprintf(stderr, "mpe: worker: malformed %s frame from the pool\n", what);
    fflush(stderr);
    _exit(70);
}

static void send_or_exit(wstate *w, const void *p, size_t n, const mpe_fds *fds)
{
    if (w->cfg->tp->send_all(w->cfg->link, p, n, fds ? fds->fd : NULL, fds ? fds->n : 0) != 0)
        _exit(0); /* the parent is gone: nobody wants the results */
}

static void flush_out(wstate *w)
{
    if (w->out.n == 0)
        return;
    send_or_exit(w, w->out.p, w->out.n, NULL);
    w->out.n = 0;
    w->last_flush = now_ns();
}

/* Start a result's per-item record: status (0 ok, 1 error) and nvals values follow. */
static void put_record(wstate *w, unsigned status, uint64_t nvals)
{
    if (mpe__frames_record(&w->gen, status, nvals) != 0)
        luaL_error(w->L, "mpe: not enough memory");
}

/* Move the current segment into a result frame. A segment carrying
 * descriptors goes at once, in a message of its own. */
static void close_segment(wstate *w, int final)
{
    lua_State *L = w->L;
    if (w->count == 0 && !final)
        return;
    int withfds = w->rfds.n > 0;
    if (withfds)
        flush_out(w);
    mpe_result_head h = {.chunk = w->chunk, .from = w->from, .count = w->count,
                         .flags = (final ? MPE_R_FINAL : 0) | (w->segerrors ? MPE_R_ERRORS : 0) |
                                  (withfds ? MPE_R_FDS : 0),
                         .ns = final ? (uint64_t)(now_ns() - w->chunk_start) : 0};
    if (w->segmode > 0)
        h.flags |= (unsigned)w->segmode;
    const mpe_buf *payload = w->segmode > 0 ? &w->ints : &w->gen;
    if (mpe__frames_result(&w->out, &h, payload->p, payload->n) != 0)
        luaL_error(L, "mpe: not enough memory");
    if (withfds) {
        send_or_exit(w, w->out.p, w->out.n, &w->rfds);
        w->out.n = 0;
        close_fds(&w->rfds); /* the message owned duplicates; the parent has its own now */
        w->last_flush = now_ns();
    }
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
    if (w->segmode == MPE_R_NONE) { /* results in the out array: no values */
        for (uint32_t i = 0; i < w->count; i++) {
            put_record(w, 0, 0);
        }
        w->segmode = -1;
        return;
    }
    size_t n = w->ints.n / 8;
    for (size_t i = 0; i < n; i++) {
        put_record(w, 0, 1);
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

/* Option out=: write the values at stack slots first..last into arr's
 * element (1-D) or row (2-D) item - 1, all checked before any is written;
 * raises for a value that is not a number or does not fit the element type,
 * a wrong count, or an item past the array's end. The worker loop and the
 * inline pool (lmpe_inline.c) share it, so both fail items alike. */
void mpe__out_put(lua_State *L, mpe_shm_obj *arr, long long item, int first, int last)
{
    size_t rows, cols, row = (size_t)(item - 1);
    int two = mpe__array_shape(arr, &rows, &cols) == 2;
    size_t nres = last >= first ? (size_t)(last - first + 1) : 0;
    if (item < 1 || row >= rows)
        mpe__fail(L, "mpe: out: item %lld has no %s in the out array (%zu %s)", item,
                  two ? "row" : "element", rows, two ? "rows" : "elements");
    if (!two)
        cols = 1;
    if (nres != cols)
        mpe__fail(L, "mpe: out: item %lld returned %zu values, the out array's rows have %zu", item,
                  nres, cols);
    uint64_t bits[64], *b = cols <= 64 ? bits : lua_newuserdatauv(L, cols * sizeof *b, 0);
    for (size_t k = 0; k < cols; k++) {
        int idx = first + (int)k;
        if (lua_type(L, idx) != LUA_TNUMBER)
            mpe__fail(L, "mpe: out: result %zu of item %lld is %s%s, not a number", k + 1, item,
                      lua_isnil(L, idx) ? "" : "a ", luaL_typename(L, idx));
        mpe_num v = {.isint = lua_isinteger(L, idx)};
        if (v.isint)
            v.i = (int64_t)lua_tointeger(L, idx);
        else
            v.d = (double)lua_tonumber(L, idx);
        mpe_err e;
        if (mpe__array_check(arr, v, &b[k], &e) != 0)
            mpe__fail(L, "mpe: out: result %zu of item %lld: %s", k + 1, item, e.msg);
    }
    for (size_t k = 0; k < cols; k++)
        mpe__array_put(arr, row * cols + k, b[k]);
}

static void put_out(wstate *w, int first, int last)
{
    lua_State *L = w->L;
    size_t row = (size_t)(w->first + w->i);
    if (w->outfast && first == last && row < w->outrows && lua_type(L, first) == LUA_TNUMBER &&
        (w->outfast == 2 || lua_isinteger(L, first))) {
        uint64_t b;
        if (w->outfast == 2) {
            double d = (double)lua_tonumber(L, first);
            memcpy(&b, &d, sizeof b);
        } else
            b = (uint64_t)lua_tointeger(L, first);
        mpe__array_put(w->arr, row, b);
    } else
        mpe__out_put(L, w->arr, (long long)row + 1, first, last);
    if (w->segmode == 0)
        w->segmode = MPE_R_NONE;
    if (w->segmode < 0) { /* the segment went general after an error */
        put_record(w, 0, 0);
    }
}

/* Record the results at stack slots first..last. */
static void record(wstate *w, int first, int last)
{
    lua_State *L = w->L;
    if (w->arr) {
        put_out(w, first, last);
        return;
    }
    int nres = last - first + 1;
    if (w->mode != MPE_M_APPLY && nres == 1 && lua_type(L, first) == LUA_TNUMBER && w->segmode >= 0) {
        int kind = lua_isinteger(L, first) ? MPE_R_INTS : MPE_R_FLOATS;
        if (w->segmode == 0)
            w->segmode = kind;
        if (w->segmode == kind) {
            if (kind == MPE_R_INTS)
                mpe__buf_put_u64(L, &w->ints, (uint64_t)lua_tointeger(L, first));
            else
                mpe__buf_put_f64(L, &w->ints, lua_tonumber(L, first));
            return;
        }
    }
    if (w->segmode > 0)
        ungroup(w);
    w->segmode = -1;
    w->mark = w->gen.n; /* if an encode below raises, the record is cut off here */
    w->markfds = w->rfds.n;
    put_record(w, 0, (uint64_t)nres);
    for (int i = first; i <= last; i++)
        mpe__encode(L, i, &w->gen, "result", w->cfg->remote ? &mpe__codec_remote : &w->rfds);
    w->mark = (size_t)-1;
}

/* Push item w->i of the chunk. */
static void push_item(wstate *w)
{
    lua_State *L = w->L;
    switch (w->kind) {
    case MPE_K_RANGE:
        lua_pushinteger(L, (lua_Integer)(w->rstart + (int64_t)w->i * w->rstep));
        break;
    case MPE_K_INTS: {
        uint64_t v;
        if (mpe__rd_u64(w->items, &v))
            malformed("chunk");
        lua_pushinteger(L, (lua_Integer)(int64_t)v);
        break;
    }
    case MPE_K_FLOATS: {
        double v;
        if (mpe__rd_f64(w->items, &v))
            malformed("chunk");
        lua_pushnumber(L, v);
        break;
    }
    default: {
        /* [varint k][k x u32 segment id][encoding]: descriptor slot q of the
         * item is segment id q; each decode gets its own duplicates. */
        const unsigned char *ids;
        int k;
        if (mpe__frames_item_read(w->items, &ids, &k))
            malformed("chunk");
        if (k == 0) {
            mpe__decode(L, w->items, NULL);
            break;
        }
        /* A decode that raises (a missing descriptor) must not leak the duplicates. */
        mpe_fds *box = mpe__fds_box(L);
        for (int q = 0; q < k; q++) {
            uint32_t id = mpe__frames_item_id(ids, q);
            if (mpe__fds_add(box, id < (uint32_t)w->nsegfd && w->segfd[id] >= 0 ? dup(w->segfd[id]) : -1))
                malformed("chunk (no memory)");
        }
        mpe__decode(L, w->items, box);
        close_fds(box);   /* the decode attached what it needed */
        lua_remove(L, -2); /* the box */
    }
    }
}

/* Read the clock now and then: flush finished results after FLUSH_NS. */
static void tick(wstate *w)
{
    if (--w->tick_left > 0)
        return;
    int64_t t = now_ns();
    int64_t dt = t - w->last_check;
    w->last_check = t;
    if (dt < 50000 && w->tick_every < 4096)
        w->tick_every *= 2;
    else if (dt > 500000 && w->tick_every > 1)
        w->tick_every /= 2;
    w->tick_left = w->tick_every;
    if (w->count > 0 && t - w->last_flush > FLUSH_NS) {
        close_segment(w, 0);
        flush_out(w);
    }
}

/* Item w->i is done, its results recorded. */
static void item_done(wstate *w)
{
    w->count++;
    w->tasks++;
    /* Results carrying many distinct segments go in several messages,
     * each with about a sendmsg's worth of descriptors. */
    if (w->rfds.n >= MPE_FDIO_BATCH)
        close_segment(w, 0);
}

/* Run item w->i by a C call of the function at index 1; its results land
 * above base. */
static void run_one(wstate *w, int base)
{
    lua_State *L = w->L;
    mpe_progress *pr = w->cfg->progress;
    tick(w);
    pr->item = (int32_t)w->i;
    if (w->cfg->timeouts)
        pr->started_ns = now_ns();
    lua_pushvalue(L, 1);
    push_item(w);
    int nargs = 1;
    if (w->mode != MPE_M_MAP) {
        int t = lua_gettop(L);
        if (!lua_istable(L, t))
            luaL_error(L, "mpe: arguments of item must be a table, got %s", luaL_typename(L, t));
        lua_getfield(L, t, "n");
        lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : (lua_Integer)lua_rawlen(L, t);
        lua_pop(L, 1);
        if (n < 0 || n > 250)
            luaL_error(L, "mpe: too many arguments (%d)", (int)n);
        luaL_checkstack(L, (int)n + 4, "too many arguments");
        for (lua_Integer k = 1; k <= n; k++)
            lua_rawgeti(L, t, k);
        lua_remove(L, t);
        nargs = (int)n;
    }
    lua_call(L, nargs, w->mode == MPE_M_APPLY || (w->arr && w->outcols) ? LUA_MULTRET : 1);
    record(w, base + 1, lua_gettop(L));
    lua_settop(L, base);
    item_done(w);
}

/* ---- the chunk loop in Lua (worker_jit.c) ------------------------------------------
 * Chunks of map items that are numbers, with results collected or into a 1-D
 * int64/double out array, run in batches through lua/mpe/jitloop.lua, which
 * stores numbers itself; what it does not store comes back here one item at a
 * time and is recorded as the C loop records it. */

/* The chunk's Lua loop: pushes it and returns 1 if the chunk can run through one. */
static int jit_setup(wstate *w)
{
    mpe_jit_run *r = &w->jr;
    w->jit_from = -1;
    if (w->mode != MPE_M_MAP || w->kind == MPE_K_ENC || (w->arr && !w->outfast))
        return 0;
    memset(r, 0, sizeof *r);
    r->kind = w->kind;
    if (w->kind == MPE_K_RANGE) {
        /* Every item and step product exact in a double: within 2^52. */
        double a = (double)w->rstart, b = a + (double)w->rstep * (double)(w->n ? w->n - 1 : 0);
        if (a < -4503599627370496.0 || a > 4503599627370496.0 || b < -4503599627370496.0 ||
            b > 4503599627370496.0)
            return 0;
        r->x0 = (double)w->rstart;
        r->step = (double)w->rstep;
    } else {
        if (w->items->n - w->items->pos < (size_t)w->n * 8)
            return 0; /* the C loop reports the malformed chunk */
        r->in = w->items->p + w->items->pos;
    }
    if (w->arr) {
        r->okind = w->outfast == 1 ? MPE_JIT_I64 : MPE_JIT_F64;
        r->out = w->arr->data;
        r->d = (int64_t)w->first;
    }
    r->item = &w->cfg->progress->item;
    r->started = w->cfg->timeouts ? &w->cfg->progress->started_ns : NULL;
    return mpe__jit_loop(w->L, r);
}

/* Account items w->jit_from .. k-1, which the Lua loop ran and stored; the
 * table at index odd holds their results that are not numbers. */
static void jit_done(wstate *w, uint32_t k, int odd)
{
    lua_State *L = w->L;
    uint32_t from = (uint32_t)w->jit_from, m = k - from;
    w->jit_from = -1;
    if (w->arr && m > 0 && w->segmode == 0)
        w->segmode = MPE_R_NONE;
    for (uint32_t q = 0; q < m && (!w->arr || w->segmode < 0); q++) {
        w->i = from + q;
        if (w->arr) { /* the segment went general after an error */
            put_record(w, 0, 0);
        } else {
            double v = w->jres[q];
            if (w->jtag[q] == 0 && w->segmode >= 0) { /* record's packed case, without the stack */
                int kind = mpe__jit_isint(v) ? MPE_R_INTS : MPE_R_FLOATS;
                if (w->segmode == 0)
                    w->segmode = kind;
                if (w->segmode == kind) {
                    if (kind == MPE_R_INTS)
                        mpe__buf_put_u64(L, &w->ints, (uint64_t)(int64_t)v);
                    else
                        mpe__buf_put_f64(L, &w->ints, v);
                    continue;
                }
            }
            if (w->jtag[q] == 0)
                lua_pushnumber(L, v);
            else if (w->jtag[q] == 1) {
                lua_rawgeti(L, odd, (lua_Integer)q + 1);
                lua_pushnil(L);
                lua_rawseti(L, odd, (lua_Integer)q + 1);
            } else
                lua_pushnil(L);
            w->jtag[q] = 0;
            record(w, lua_gettop(L), lua_gettop(L));
            lua_pop(L, 1);
        }
    }
    w->count += m;
    w->tasks += m;
    w->i = k;
}

/* Run the chunk's items through the Lua loop at index 2 (its odd table at 3)
 * in batches of
 * tick_every items, reading the clock before each batch (as the C loop does
 * before each item, so the chunk's last items go in its final frame). */
static void run_jit(wstate *w, int base)
{
    lua_State *L = w->L;
    mpe_jit_run *r = &w->jr;
    uint32_t lim = w->n; /* items from lim on have no element in the out array */
    if (w->arr)
        lim = w->outrows <= w->first ? 0 : w->outrows - w->first < w->n ? (uint32_t)(w->outrows - w->first) : w->n;
    while (w->i < w->n) {
        if (w->i >= lim) { /* the C loop raises the out= error */
            run_one(w, base);
            w->i++;
            continue;
        }
        w->tick_left = 1;
        tick(w);
        /* The progress slot names the next item from now on, as the C loop's
         * does before each item (the loop stamps each again as it starts it). */
        w->cfg->progress->item = (int32_t)w->i;
        if (w->cfg->timeouts)
            w->cfg->progress->started_ns = now_ns();
        uint32_t j = w->i + (uint32_t)(w->tick_every < MPE_JIT_BATCH ? w->tick_every : MPE_JIT_BATCH);
        if (j > lim || j < w->i)
            j = lim;
        if (!w->arr) {
            r->out = w->jres;
            r->tags = w->jtag;
            r->d = -(int64_t)w->i;
        }
        w->jit_from = (int64_t)w->i;
        uint32_t k = mpe__jit_items(L, 2, 1, 3, r, w->i, j);
        jit_done(w, k, 3);
        if (k < j) { /* item k returned what the loop does not store */
            record(w, base + 1, lua_gettop(L));
            lua_settop(L, base);
            item_done(w);
            w->i++;
        }
    }
}

/* lua_pcall'd with the function (and the chunk's Lua loop and its odd table,
 * if it runs through one): run items w->i .. n-1; raises out of the item that fails. */
static int run_items(lua_State *L)
{
    wstate *w = lua_touserdata(L, lua_upvalueindex(1));
    int base = lua_gettop(L);
    if (base == 3)
        run_jit(w, base);
    else
        for (; w->i < w->n; w->i++)
            run_one(w, base);
    return 0;
}

/* ---- functions from another rank ---------------------------------------------------
 * What decodes in a forked child may not decode on another rank (a module it
 * refers to is not loaded there): such a function becomes one that raises
 * why, so each item fails with that message instead of the worker dying. */
static int raise_upvalue(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    return lua_error(L);
}

static int decode_at(lua_State *L)
{
    mpe__decode(L, lua_touserdata(L, 1), NULL);
    return 1;
}

void mpe__worker_decode_fn(lua_State *L, mpe_rd *r)
{
    lua_pushcfunction(L, decode_at);
    lua_pushlightuserdata(L, r);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        lua_pushcclosure(L, raise_upvalue, 1);
}

/* Encode the error table at index 1 into gen. */
static int encode_error(lua_State *L)
{
    wstate *w = lua_touserdata(L, lua_upvalueindex(1));
    mpe__encode(L, 1, &w->gen, "error", w->cfg->remote ? &mpe__codec_remote : &w->rfds);
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
        for (int drop = w->inherited + 1 + w->jit_trim; drop > 0 && end > tb; drop--) {
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

/* Record the failure at the top of the stack (the message handler's table)
 * as [1][1][error]; an error value that cannot be sent is dropped, keeping
 * its message. Pops it. */
static void put_error(wstate *w, int encoder)
{
    lua_State *L = w->L;
    int err = lua_gettop(L);
    trim_traceback(w, err);
    size_t mark = w->gen.n;
    int markfds = w->rfds.n;
    for (int attempt = 0; attempt < 3; attempt++) {
        w->gen.n = mark;
        while (w->rfds.n > markfds)
            close(w->rfds.fd[--w->rfds.n]);
        put_record(w, 1, 1);
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

static keyed_fds *find_keyed(wstate *w, uint64_t key)
{
    for (int i = 0; i < w->nkeyed; i++)
        if (w->keyed[i].key == key)
            return &w->keyed[i];
    return NULL;
}

static void drop_keyed(wstate *w, uint64_t key)
{
    keyed_fds *k = find_keyed(w, key);
    if (k) {
        close_fds(&k->fds);
        *k = w->keyed[--w->nkeyed];
    }
}

/* Stack slots the loop keeps: the function cache, the message handler, the
 * item runner, the error encoder and the current function. */
enum { S_FUNCS = 1, S_HANDLER, S_RUNNER, S_ENCODER, S_FN };

static void run_chunk(wstate *w, mpe_rd *r, int base)
{
    lua_State *L = w->L;
    mpe_chunk_head h;
    if (mpe__frames_chunk_read(r, &h))
        malformed("chunk");
    uint64_t chunk = h.chunk;
    unsigned mode = h.mode, kind = h.kind;
    w->first = h.first;
    lua_rawgeti(L, base + S_FUNCS, (lua_Integer)h.fn);
    if (lua_isnil(L, -1))
        malformed("chunk (unknown function)");
    w->arr = NULL;
    if (mode & MPE_M_OUT) { /* {fn, array}: the array stays referenced by the function cache */
        if (!lua_istable(L, -1))
            malformed("chunk (out without an array)");
        lua_rawgeti(L, -1, 2);
        w->arr = mpe__array_test(L, -1);
        lua_pop(L, 1);
        if (!w->arr)
            malformed("chunk (out without an array)");
        size_t rows, cols;
        w->outcols = mpe__array_shape(w->arr, &rows, &cols) == 2;
        w->outrows = rows;
        const mpe_ctype *t = mpe__array_type(w->arr);
        w->outfast = w->outcols ? 0 : t->size != 8 ? 0 : t->cls == MPE_CT_SIGNED ? 1 : t->cls == MPE_CT_FLOAT ? 2 : 0;
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_replace(L, base + S_FN);
    w->chunk = chunk;
    w->mode = (int)(mode & ~(unsigned)MPE_M_OUT);
    w->kind = (int)kind;
    w->n = h.n;
    w->i = 0;
    w->from = 0;
    w->count = 0;
    w->items = r;
    w->chunk_start = w->last_check = now_ns();
    w->rstart = h.rstart;
    w->rstep = h.rstep;
    int jit = jit_setup(w) ? 2 : 0; /* the loop and its odd table, at base + S_FN + 1, 2 */
    if (jit)
        lua_newtable(L);
    __atomic_store_n(&w->cfg->progress->chunk, (int64_t)chunk, __ATOMIC_RELEASE);
    while (w->i < w->n) {
        lua_pushvalue(L, base + S_RUNNER);
        lua_pushvalue(L, base + S_FN);
        for (int q = 1; q <= jit; q++)
            lua_pushvalue(L, base + S_FN + q);
        if (lua_pcall(L, 1 + jit, 0, base + S_HANDLER) == LUA_OK)
            break;
        /* Raised in the Lua loop: the items of its batch before the one it
         * was running (the progress slot names it) are done. */
        w->jit_trim = w->jit_from >= 0;
        if (w->jit_trim)
            jit_done(w, (uint32_t)w->cfg->progress->item, base + S_FN + 2);
        /* Item w->i failed: cut off what it half wrote, record the error, go on. */
        if (w->mark != (size_t)-1) {
            w->gen.n = w->mark;
            while (w->rfds.n > w->markfds)
                close(w->rfds.fd[--w->rfds.n]);
        }
        w->mark = (size_t)-1;
        if (w->segmode > 0)
            ungroup(w);
        w->segmode = -1;
        w->segerrors = 1;
        put_error(w, base + S_ENCODER);
        w->jit_trim = 0;
        lua_settop(L, base + S_FN + jit);
        w->count++;
        w->tasks++;
        w->i++;
    }
    __atomic_store_n(&w->cfg->progress->chunk, 0, __ATOMIC_RELEASE);
    lua_settop(L, base + S_FN);
    close_segment(w, 1);
}

static void report_initfail(wstate *w, int encoder)
{
    lua_State *L = w->L;
    w->gen.n = 0;
    put_error(w, encoder);
    close_fds(&w->rfds); /* the pool is told of the failure only */
    if (mpe__frames_initfail(&w->out, w->gen.p, w->gen.n) != 0)
        luaL_error(L, "mpe: not enough memory");
    flush_out(w);
}

static void run_initializer(wstate *w, int base)
{
    lua_State *L = w->L;
    const mpe_worker_cfg *cfg = w->cfg;
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
        report_initfail(w, base + S_ENCODER);
        _exit(3);
    }
    lua_settop(L, top);
}

/* Handle the complete frames at the start of w->in; keep the rest. */
static void handle_frames(wstate *w, int base)
{
    lua_State *L = w->L;
    size_t off = 0;
    unsigned type;
    uint32_t len;
    while (mpe__frame_peek(&w->in, off, &type, &len)) {
        mpe_rd r;
        const char *body = w->in.p + off + MPE_FRAME_HDR;
        mpe__rd_init(&r, body, len);
        /* The frame's stream positions: its descriptors rode on its bytes. */
        uint64_t start = w->fdin.pos - (uint64_t)(w->in.n - off);
        off += MPE_FRAME_HDR + len;
        uint64_t id = 0;
        switch (type) {
        case MPE_F_FUNC: {
            if (mpe__frames_func_read(&r, body, len, &id))
                malformed("function");
            keyed_fds *k = find_keyed(w, id);
            if (k) {
                mpe_fds *tmp = mpe__fds_box(L); /* closed even if the decode raises */
                for (int i = 0; i < k->fds.n; i++)
                    if (mpe__fds_add(tmp, k->fds.fd[i] >= 0 ? dup(k->fds.fd[i]) : -1))
                        malformed("function (no memory)");
                mpe__decode(L, &r, tmp);
                close_fds(tmp);
                lua_remove(L, -2); /* the box */
            } else if (w->cfg->remote)
                mpe__worker_decode_fn(L, &r);
            else
                mpe__decode(L, &r, NULL);
            lua_rawseti(L, base + S_FUNCS, (lua_Integer)id);
            break;
        }
        case MPE_F_DROP:
            if (mpe__frames_read_u64(body, len, &id))
                malformed("drop");
            lua_pushnil(L);
            lua_rawseti(L, base + S_FUNCS, (lua_Integer)id);
            drop_keyed(w, id);
            break;
        case MPE_F_FDS: {
            /* Claims the descriptors that came with it (fdio.c). */
            mpe_fds got = {0};
            if (mpe__frames_read_u64(body, len, &id) ||
                mpe__fdio_claim(&w->fdin, start, start + MPE_FRAME_HDR + len, &got) != 0 || got.n == 0)
                malformed("descriptor");
            if (find_keyed(w, id))
                close_fds(&got); /* already known */
            else {
                if (w->nkeyed == w->keyedcap) {
                    int cap = w->keyedcap ? 2 * w->keyedcap : 8;
                    keyed_fds *g = realloc(w->keyed, (size_t)cap * sizeof *g);
                    if (!g)
                        malformed("descriptor (no memory)");
                    w->keyed = g;
                    w->keyedcap = cap;
                }
                w->keyed[w->nkeyed].key = id;
                w->keyed[w->nkeyed].fds = got;
                w->nkeyed++;
            }
            break;
        }
        case MPE_F_SEGS: {
            /* Claims the descriptors that came with it, as F_FDS does. */
            uint32_t ids[MPE_FRAMES_SEGS_MAX];
            int n = mpe__frames_segs_read(body, len, ids, MPE_FRAMES_SEGS_MAX);
            mpe_fds got = {0};
            if (n < 0 || mpe__fdio_claim(&w->fdin, start, start + MPE_FRAME_HDR + len, &got) != 0 ||
                n != got.n)
                malformed("segments");
            for (int q = 0; q < n; q++) {
                uint32_t sid = ids[q];
                if (sid > (1u << 24))
                    malformed("segments");
                if ((int)sid >= w->nsegfd) {
                    int cap = w->nsegfd ? 2 * w->nsegfd : 16;
                    while (cap <= (int)sid)
                        cap *= 2;
                    int *g = realloc(w->segfd, (size_t)cap * sizeof *g);
                    if (!g)
                        malformed("segments (no memory)");
                    for (int i = w->nsegfd; i < cap; i++)
                        g[i] = -1;
                    w->segfd = g;
                    w->nsegfd = cap;
                }
                if (w->segfd[sid] >= 0)
                    close(w->segfd[sid]);
                w->segfd[sid] = got.fd[q];
                got.fd[q] = -1; /* taken */
            }
            close_fds(&got);
            break;
        }
        case MPE_F_SEGDROP: {
            uint32_t sid;
            if (mpe__frames_read_u32(body, len, &sid))
                malformed("segdrop");
            if ((int)sid < w->nsegfd && w->segfd[sid] >= 0) {
                close(w->segfd[sid]);
                w->segfd[sid] = -1;
            }
            break;
        }
        case MPE_F_CHUNK:
            run_chunk(w, &r, base);
            /* After a chunk, results go once FLUSH_NS passed since the last
             * write: a finished chunk does not wait for the next one. */
            if (w->out.n >= FLUSH_BYTES || (w->out.n > 0 && now_ns() - w->last_flush > FLUSH_NS))
                flush_out(w);
            if (w->cfg->maxtasks > 0 && w->tasks >= w->cfg->maxtasks) {
                flush_out(w);
                fflush(NULL);
                _exit(0);
            }
            break;
        case MPE_F_STOP:
            flush_out(w);
            fflush(NULL);
            _exit(0);
        default:
            malformed("unknown");
        }
    }
    if (off > 0) { /* w->in.p may still be NULL when nothing was read */
        memmove(w->in.p, w->in.p + off, w->in.n - off);
        w->in.n -= off;
    }
}

void mpe__worker_main(lua_State *L, const mpe_worker_cfg *cfg)
{
    static wstate w; /* one per worker process; static so a Lua error cannot leak it */
    memset(&w, 0, sizeof w);
    w.L = L;
    w.cfg = cfg;
    w.mark = (size_t)-1;
    w.tick_every = w.tick_left = 1;
    char name[32];
    snprintf(name, sizeof name, "PoolWorker-%d", cfg->number);
    mpe__proc_set_identity(name, cfg->slot);
    mpe__rand_reseed(L); /* before the initializer, which may seed on its own */
    /* Ctrl-C reaches the whole process group: the parent alone decides what
     * it means (it stops the pool), so a worker does not die of it mid-item. */
    signal(SIGINT, SIG_IGN);
    lua_Debug ar;
    while (lua_getstack(L, w.inherited, &ar))
        w.inherited++;
    int base = lua_gettop(L);
    lua_newtable(L);                          /* S_FUNCS */
    lua_pushcfunction(L, cfg->handler);       /* S_HANDLER */
    lua_pushlightuserdata(L, &w);
    lua_pushcclosure(L, run_items, 1);        /* S_RUNNER */
    lua_pushlightuserdata(L, &w);
    lua_pushcclosure(L, encode_error, 1);     /* S_ENCODER */
    lua_pushnil(L);                           /* S_FN */
    w.last_flush = now_ns();
    if (cfg->init_ref != LUA_NOREF)
        run_initializer(&w, base);
    cfg->progress->ready = 1;
    for (;;) {
        handle_frames(&w, base);
        ssize_t rd = cfg->tp->child_recv(cfg->link, &w.in, &w.fdin, 0);
        if (rd < 0 && errno == EAGAIN) {
            flush_out(&w); /* nothing more to do for now: let the parent have the results */
            rd = cfg->tp->child_recv(cfg->link, &w.in, &w.fdin, 1);
        }
        if (rd <= 0) {
            fflush(NULL);
            _exit(0); /* EOF or a broken channel: the pool is gone */
        }
    }
}
