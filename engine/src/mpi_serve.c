/* mpi_serve.c -- the ranks other than 0: they serve rank 0's pools. Each
 * worker rank 0 opens here is a socketpair link of this rank, forked as usual
 * (a task that crashes kills a worker, never the rank); this loop relays its
 * bytes between MPI and the link, enforces its timeout, reaps it and reports
 * its death to rank 0. Protocol: mpi_world.h and docs/ARCHITECTURE.md.
 * SPDX-License-Identifier: MIT */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "compat.h"
#include "lmpe_err.h"
#include "lranks.h"
#include "mpi_world.h"
#include "proc.h"
#include "sig.h"
#include "worker.h"

#define SERVE_MAX 1024 /* workers one rank serves at once */

static const mpe_transport_ops *const sp = &mpe__transport_socketpair;


typedef struct lworker {
    uint32_t id;
    mpe_link *link;      /* a socketpair link (sp's type); NULL once reaped */
    mpe_progress *prog;  /* its progress slot, a page of its own */
    double timeout;
    int timed_out;
    mpe_buf out;         /* bytes from rank 0 not yet taken by the link */
    size_t off;
    struct lworker *next;
} lworker;

static void worker_entry(lua_State *L, mpe_link *self, void *ud)
{
    mpe_worker_cfg *cfg = ud;
    cfg->link = self;
    mpe__worker_main(L, cfg);
}

static void report_death(lworker *w, int status)
{
    mpe_mpi_death d = {.status = status, .timed_out = w->timed_out};
    if (w->prog) {
        d.chunk = w->prog->chunk;
        d.item = w->prog->item;
        d.ready = w->prog->ready;
    }
    mpe__mpi_post(0, MPE_MPI_DEATH, w->id, &d, sizeof d);
}

/* MPE_MPI_OPEN: fork a worker as rank 0 described it; say STARTED or DEATH. */
static lworker *open_worker(lua_State *L, mpe_transport *t, uint32_t id, mpe_rd *r)
{
    lworker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->id = id;
    uint32_t slot = 0, number = 0, maxtasks = 0;
    unsigned hasinit = 0;
    mpe__rd_u32(r, &slot);
    mpe__rd_u32(r, &number);
    mpe__rd_u32(r, &maxtasks);
    mpe__rd_f64(r, &w->timeout);
    mpe__rd_u8(r, &hasinit);
    mpe_worker_cfg cfg = {.tp = sp, .slot = (int)slot, .number = (int)number,
                          .maxtasks = (int)maxtasks, .timeouts = w->timeout > 0,
                          .timeout = w->timeout, .init_ref = LUA_NOREF,
                          .initargs_ref = LUA_NOREF, .remote = 1,
                          .handler = mpe__error_handler};
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page != MAP_FAILED)
        w->prog = cfg.progress = page;
    int top = lua_gettop(L);
    if (hasinit) {
        /* {fn, args}: referenced for the worker, released after the fork. A
         * table that cannot be decoded here becomes an initializer that
         * raises why, so the pool reports it as an initializer failure. */
        mpe__worker_decode_fn(L, r);
        if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 2);
            cfg.initargs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            lua_rawgeti(L, -1, 1);
        }
        cfg.init_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_settop(L, top);
    }
    mpe_err e = {{0}};
    pid_t pid = 0;
    if (w->prog)
        w->link = sp->start(t, L, w->prog, worker_entry, &cfg, &pid, &e);
    luaL_unref(L, LUA_REGISTRYINDEX, cfg.init_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, cfg.initargs_ref);
    if (!w->link) {
        fprintf(stderr, "mpe: rank %d: cannot start a worker: %s\n", mpe__mpi_world.me,
                w->prog ? e.msg : "mmap failed");
        report_death(w, 71 << 8); /* "exited with status 71" on rank 0 */
        return w;
    }
    int32_t p32 = (int32_t)pid;
    mpe__mpi_post(0, MPE_MPI_STARTED, id, &p32, sizeof p32);
    return w;
}

static void free_worker(lworker *w)
{
    if (w->link) {
        int st;
        sp->kill(w->link);
        sp->reap(w->link, &st);
    }
    if (w->prog)
        munmap(w->prog, 4096);
    mpe__buf_free(&w->out);
    free(w);
}

/* One record from rank 0; returns 1 for QUIT. DATA goes to the worker's
 * channel at once when nothing waits before it (no copy), else after it. */
static int on_record(lua_State *L, mpe_transport *t, lworker **ws, int *nw, const mpe_mpi_rec *rec)
{
    lworker *w = NULL;
    for (int k = 0; k < *nw && !w; k++)
        if (ws[k]->id == rec->id)
            w = ws[k];
    switch (rec->op) {
    case MPE_MPI_OPEN: {
        mpe_rd r;
        mpe__rd_init(&r, rec->p, rec->n);
        if (*nw == SERVE_MAX) {
            mpe_mpi_death d = {.status = 71 << 8};
            mpe__mpi_post(0, MPE_MPI_DEATH, rec->id, &d, sizeof d);
        } else if ((w = open_worker(L, t, rec->id, &r)) != NULL) {
            if (w->link)
                ws[(*nw)++] = w;
            else
                free_worker(w);
        }
        break;
    }
    case MPE_MPI_DATA: {
        if (!w)
            break;
        size_t done = 0;
        if (w->out.n == w->off) {
            ssize_t n = sp->send(w->link, rec->p, rec->n, NULL, 0);
            done = n > 0 ? (size_t)n : 0; /* full, or gone: its end will tell */
        }
        if (done < rec->n && mpe__buf_grow(&w->out, rec->n - done) == 0) {
            memcpy(w->out.p + w->out.n, rec->p + done, rec->n - done);
            w->out.n += rec->n - done;
        }
        break;
    }
    case MPE_MPI_KILL:
        if (w)
            sp->kill(w->link);
        break;
    case MPE_MPI_QUIT:
        return 1;
    }
    return 0;
}

int mpe__mpi_serve(lua_State *L)
{
    /* Tasks refer to modules by name (the codec's T_MODULE): mpe is loaded
     * here as on rank 0. */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mpe");
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "mpe: rank %d: %s\n", mpe__mpi_world.me, lua_tostring(L, -1));
        return 1;
    }
    mpe_err e;
    mpe_transport *t = sp->open(SERVE_MAX, &e);
    lworker **ws = calloc(SERVE_MAX, sizeof *ws);
    mpe_link **links = calloc(SERVE_MAX, sizeof *links);
    unsigned *want = calloc(SERVE_MAX, sizeof *want), *ev = calloc(SERVE_MAX, sizeof *ev);
    mpe_buf in = {0}, got = {0};
    int nw = 0, quit = 0, status = 1;
    int64_t active = mpe__mpi_now_ns(); /* when something last happened */
    if (!t || !ws || !links || !want || !ev)
        goto done;
    status = 0;
    while (!quit) {
        int busy = 0, src;
        if (mpe__sig_caught()) {
            status = 128 + mpe__sig_caught();
            break;
        }
        while (!quit && mpe__mpi_take(&in, &src)) {
            busy = 1;
            mpe_mpi_rec rec;
            for (size_t off = 0; !quit && mpe__mpi_next(in.p, in.n, &off, &rec);)
                quit = on_record(L, t, ws, &nw, &rec);
        }
        int64_t now = mpe__mpi_now_ns();
        for (int k = 0; k < nw; k++) {
            lworker *w = ws[k];
            while (w->off < w->out.n) {
                ssize_t n = sp->send(w->link, w->out.p + w->off, w->out.n - w->off, NULL, 0);
                if (n <= 0)
                    break; /* full, or gone: its end will tell */
                w->off += (size_t)n;
                busy = 1;
            }
            if (w->off == w->out.n)
                w->out.n = w->off = 0;
            if (w->timeout > 0 && !w->timed_out && w->prog->chunk != 0 &&
                now - w->prog->started_ns > (int64_t)(w->timeout * 1e9)) {
                w->timed_out = 1;
                sp->kill(w->link);
            }
            links[k] = w->link;
            want[k] = w->out.n > w->off ? MPE_T_WRITE : 0;
        }
        if (mpe__mpi_push())
            busy = 1;
        /* Sleep on the workers' channels: their results wake us at once;
         * rank 0's messages are probed after at most the idle sleep (below
         * a millisecond, poll's unit, the sleep is a ppoll after a look). */
        if (busy)
            active = mpe__mpi_now_ns();
        int us = busy || mpe__mpi_pending() >= MPE_MPI_PENDING_MAX ? 0 : mpe__mpi_idle_us(active);
        int ready = sp->wait(t, links, want, ev, nw, -1, us >= 1000 ? us / 1000 : 0);
        if (ready == 0 && us > 0 && us < 1000)
            mpe__mpi_nap(-1, us);
        for (int k = 0; ready > 0 && k < nw; k++) {
            lworker *w = ws[k];
            if (!(ev[k] & MPE_T_READ))
                continue;
            active = mpe__mpi_now_ns();
            got.n = 0;
            ssize_t n = sp->recv(w->link, &got, NULL);
            if (n > 0)
                mpe__mpi_post(0, MPE_MPI_DATA, w->id, got.p, got.n);
            else if (n == 0 || errno != EAGAIN) {
                int st = 0;
                sp->reap(w->link, &st);
                w->link = NULL;
                report_death(w, st);
                free_worker(w);
                ws[k--] = ws[--nw];
                ev[k + 1] = ev[nw];
            }
        }
    }
done:
    while (nw > 0)
        free_worker(ws[--nw]);
    /* Let the last death records and data reach rank 0 (bounded: it may be gone). */
    for (int64_t end = mpe__mpi_now_ns() + 2000000000; mpe__mpi_push() && mpe__mpi_now_ns() < end;)
        mpe__mpi_nap(-1, 1000);
    if (t)
        sp->close(t);
    free(ws);
    free(links);
    free(want);
    free(ev);
    mpe__buf_free(&in);
    mpe__buf_free(&got);
    return status;
}

