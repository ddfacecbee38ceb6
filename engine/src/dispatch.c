/* dispatch.c -- the pool's dispatcher thread: cuts chunks from the job
 * stores, keeps every worker fed, turns result frames into messages for the
 * main thread, reaps dead workers and blames the item each was running.
 * SPDX-License-Identifier: MIT
 *
 * It never touches Lua (only the main thread does) and holds p->mu except
 * while it sleeps in poll. Bytes move only through the transport. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "compat.h"
#include "buf.h"
#include "fdio.h"
#include "frames.h"
#include "job.h"
#include "pool_api.h"
#include "poolstate.h"
#include "proc.h"
#include "protocol.h"
#include "transport.h"
#include "worker.h"

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void post(mpe_pool *p, mpe_msg *m)
{
    m->next = NULL;
    if (m->job)
        mpe__job_ref(m->job);
    if (p->inbox_last)
        p->inbox_last->next = m;
    else
        p->inbox = m;
    p->inbox_last = m;
    pthread_cond_broadcast(&p->cv);
}

/* Give worker w one more chunk if there is work. Returns 1 if it did. */
static int feed_one(mpe_pool *p, wslot *w)
{
    int64_t room = -1;
    if (p->o.maxtasks > 0)
        room = p->o.maxtasks - w->assigned > 0 ? p->o.maxtasks - w->assigned : 0;
    mpe_cut cut;
    if (!mpe__job_cut(p, w->ninflight > 0, room, &cut))
        return 0;
    chunk *c = malloc(sizeof *c);
    if (!c)
        return 0;
    size_t mark = w->out.n;
    c->id = ++p->next_id;
    if (mpe__job_queue(p, &cut, c->id, &w->out, &w->has, &w->hascap) != 0) {
        w->out.n = mark; /* nothing half written goes out; the items stay the job's */
        free(c);
        return 0;
    }
    mpe__job_take(p, &cut);
    c->job = cut.job;
    c->a = cut.a;
    c->b = cut.e;
    c->got = 0;
    c->suspect = cut.suspect;
    c->next = NULL;
    if (w->last)
        w->last->next = c;
    else
        w->inflight = c;
    w->last = c;
    w->ninflight++;
    w->queued_ns += mpe__job_cost(p, cut.job) * (double)(cut.e - cut.a);
    w->assigned += (long)(cut.e - cut.a);
    return 1;
}

/* Whether w should get one more chunk now: an idle worker always; a busy
 * one only once the pool knows what items cost (a chunk of unknown cost
 * could be long: queued behind another, it would wait while a second worker
 * idles) and while its queue holds less than QUEUE_NS of work. */
static int wants(const mpe_pool *p, const wslot *w)
{
    if (w->state != W_LIVE || p->stopping || (w->inflight && w->inflight->suspect))
        return 0;
    if (w->ninflight == 0)
        return 1;
    return p->cost_ns > 0 && w->ninflight < MAX_INFLIGHT && w->queued_ns < QUEUE_NS;
}

/* The feed step: hand chunks out round-robin, one per pass to each worker
 * that wants one, so coarse tasks spread over the workers instead of
 * filling the first worker's queue. */
static void feed_all(mpe_pool *p)
{
    for (int any = 1; any;) {
        any = 0;
        for (int i = 0; i < p->n; i++)
            if (wants(p, &p->w[i]) && feed_one(p, &p->w[i]))
                any = 1;
    }
}

/* ---- outcomes --------------------------------------------------------------------- */

static void fail_item(mpe_pool *p, wslot *w, mpe_job *j, lua_Integer i, const char *kind, const char *text)
{
    mpe_msg *m = calloc(1, sizeof *m);
    if (!m)
        return;
    m->type = MPE_MSG_FAIL;
    m->job = j;
    m->index = i + 1;
    m->worker = w->number;
    m->pid = w->pid;
    m->kind = kind;
    snprintf(m->text, sizeof m->text, "%s", text);
    post(p, m);
    mpe__job_account(p, j, 1);
    mpe__job_failed(j);
}

static void describe_status(char *s, size_t n, int st, int timed_out, int oom, double timeout)
{
    static const struct {
        int sig;
        const char *name;
    } names[] = {{SIGKILL, "SIGKILL"}, {SIGTERM, "SIGTERM"}, {SIGSEGV, "SIGSEGV"}, {SIGABRT, "SIGABRT"},
                 {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},   {SIGINT, "SIGINT"},   {SIGHUP, "SIGHUP"},
                 {SIGPIPE, "SIGPIPE"}, {SIGILL, "SIGILL"},   {SIGXCPU, "SIGXCPU"}};
    if (timed_out) {
        snprintf(s, n, "mpe: timeout: task ran longer than %g s; its worker was killed", timeout);
        return;
    }
    if (oom) {
        snprintf(s, n, "mpe: not enough memory in the parent to receive the task's result; its worker was killed");
        return;
    }
    if (WIFSIGNALED(st)) {
        const char *name = NULL;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (names[i].sig == WTERMSIG(st))
                name = names[i].name;
        if (name)
            snprintf(s, n, "worker died: killed by signal %d (%s)", WTERMSIG(st), name);
        else
            snprintf(s, n, "worker died: killed by signal %d", WTERMSIG(st));
    } else if (WIFEXITED(st))
        snprintf(s, n, "worker died: exited with status %d", WEXITSTATUS(st));
    else
        snprintf(s, n, "worker died");
}

/* One run of held items, store indices [a, b), for say_lost. */
typedef struct held {
    mpe_job *job;
    lua_Integer a, b;
} held;

static int held_cmp(const void *x, const void *y)
{
    const held *p = x, *q = y;
    if (p->job->id != q->job->id)
        return p->job->id < q->job->id ? -1 : 1;
    return p->a < q->a ? -1 : p->a > q->a;
}

/* Worker w's link ended because the process behind it died (the transport's
 * lost, e.g. an MPI rank): say on stderr which items it held, per job as
 * compact 1-based ranges ("items 17-32 and 40 of a map"), at most a dozen
 * runs and then "and N more", so that the message is there even when a
 * launcher ends the run before the script sees anything. */
static void say_lost(wslot *w, const char *where)
{
    static const char *what[] = {"a map", "a starmap", "an apply"};
    int n = 0;
    for (chunk *c = w->inflight; c; c = c->next)
        n += c->a + c->got < c->b;
    held *h = n ? malloc((size_t)n * sizeof *h) : NULL;
    char s[1536]; /* room for a dozen runs of the widest numbers */
    size_t k = (size_t)snprintf(s, sizeof s, "mpe: %s died; its pool worker %d held ", where, w->number);
    if (!n || !h) {
        fprintf(stderr, "%s%s\n", s, n ? "items (no memory to list them)" : "no items");
        free(h);
        return;
    }
    n = 0;
    for (chunk *c = w->inflight; c; c = c->next)
        if (c->a + c->got < c->b)
            h[n++] = (held){c->job, c->a + c->got, c->b};
    qsort(h, (size_t)n, sizeof *h, held_cmp);
    int m = 0; /* merge touching runs of one job */
    for (int i = 1; i < n; i++)
        if (h[i].job == h[m].job && h[i].a <= h[m].b)
            h[m].b = h[i].b > h[m].b ? h[i].b : h[m].b;
        else
            h[++m] = h[i];
    n = m + 1;
    lua_Integer more = 0, all = 0;
    int shown = 0;
    for (int i = 0; i < n; i++) {
        if (shown == 12) {
            more += h[i].b - h[i].a;
            continue;
        }
        int first = i == 0 || h[i - 1].job != h[i].job;
        int last = i == n - 1 || h[i + 1].job != h[i].job || shown == 11;
        lua_Integer items = 0;
        for (int q = i; q < n && h[q].job == h[i].job; q++)
            items += h[q].b - h[q].a;
        all += h[i].b - h[i].a;
        if (first)
            k += (size_t)snprintf(s + k, sizeof s - k, "%s%s ", i ? " and " : "", items > 1 ? "items" : "item");
        else
            k += (size_t)snprintf(s + k, sizeof s - k, "%s", last ? " and " : ", ");
        if (h[i].b - h[i].a > 1)
            k += (size_t)snprintf(s + k, sizeof s - k, "%lld-%lld", (long long)h[i].a + 1, (long long)h[i].b);
        else
            k += (size_t)snprintf(s + k, sizeof s - k, "%lld", (long long)h[i].a + 1);
        shown++;
        if (last) {
            int mode = (h[i].job->mode & ~MPE_M_OUT) - 1;
            k += (size_t)snprintf(s + k, sizeof s - k, " of %s", mode >= 0 && mode < 3 ? what[mode] : "job");
        }
    }
    if (more)
        snprintf(s + k, sizeof s - k, " and %lld more item%s", (long long)more, more > 1 ? "s" : "");
    fprintf(stderr, "%s; %s back to the pool\n", s, all + more > 1 ? "they go" : "it goes");
    fflush(stderr);
    free(h);
}

/* Worker w is gone (EOF on its channel). Reap it, blame the item it was
 * running, put the rest of its chunks back, and ask for a replacement. */
static void on_death(mpe_pool *p, wslot *w)
{
    mpe_progress pg;
    p->tp->progress(w->link, &pg);
    char where[128];
    if (p->tp->lost && p->tp->lost(w->link, where, sizeof where))
        say_lost(w, where);
    int st = 0;
    p->tp->reap(w->link, &st);
    w->link = NULL;
    mpe__fdin_close(&w->fdin);
    int64_t running = pg.chunk;
    int32_t item = pg.item;
    int ready = pg.ready;
    /* An exit status 0 with chunks still out is a death too (it was not asked to stop). */
    int crashed = !(WIFEXITED(st) && WEXITSTATUS(st) == 0) || w->inflight != NULL;
    char text[192];
    describe_status(text, sizeof text, st, w->timed_out, w->oom, p->o.timeout);
    int blamed = 0;
    for (chunk *c = w->inflight, *next; c; c = next) {
        next = c->next;
        mpe_job *j = c->job;
        lua_Integer from = c->a + c->got;
        lua_Integer bad = -1;
        if ((int64_t)c->id == running && c->a + item >= from && c->a + item < c->b)
            bad = c->a + item; /* it died running this item */
        else if (c->suspect && c == w->inflight && from < c->b)
            bad = from; /* it ran this item alone and died right after it */
        else if (w->oom && c == w->inflight && from < c->b)
            bad = from; /* killed while sending this item's result */
        if (bad >= 0) {
            blamed = 1;
            mpe__job_redo(p, j, bad + 1, c->b, 0);
            if (!w->oom && mpe__job_retry(p, j, bad))
                mpe__job_redo(p, j, bad, bad + 1, 0);
            else
                fail_item(p, w, j, bad, w->oom ? "error" : w->timed_out ? "timeout" : "crash", text);
            mpe__job_redo(p, j, from, bad, 0);
        } else
            /* It died between items (or before its chunk began): run them
             * again one by one, so that if one of them kills its worker on
             * the way out, that one is blamed instead of all being re-run
             * for ever. */
            mpe__job_redo(p, j, from, c->b, crashed && ready && !blamed);
        mpe__job_account(p, j, 0); /* a cancelled job may have nothing left to wait for */
        free(c);
        mpe__job_unref(p, j);
    }
    /* Workers that keep dying before they send anything (an initializer that
     * exits or crashes) would be replaced for ever: give up and say why. */
    if (!ready && !p->stopping) {
        if (++p->early_deaths >= 2 * p->n + 1) {
            mpe_msg *m = calloc(1, sizeof *m);
            if (m) {
                m->type = MPE_MSG_BROKEN;
                m->worker = w->number;
                m->pid = w->pid;
                snprintf(m->text, sizeof m->text, "pool workers die %s (%.140s)",
                         p->o.init_ref != LUA_NOREF ? "in their initializer" : "as they start", text);
                post(p, m);
            }
            p->stopping = 1;
        }
    } else if (ready)
        p->early_deaths = 0;
    w->inflight = w->last = NULL;
    w->ninflight = 0;
    w->queued_ns = 0;
    w->state = W_GONE;
    p->respawn++;
    pthread_cond_broadcast(&p->cv);
}

static chunk *find_chunk(wslot *w, uint64_t id)
{
    for (chunk *c = w->inflight; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

static void drop_chunk(mpe_pool *p, wslot *w, chunk *c)
{
    chunk **pp = &w->inflight, *prev = NULL;
    while (*pp != c) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    *pp = c->next;
    if (w->last == c)
        w->last = prev;
    w->ninflight--;
    mpe_job *j = c->job;
    w->queued_ns -= mpe__job_cost(p, j) * (double)(c->b - c->a);
    if (w->queued_ns < 0 || w->ninflight == 0)
        w->queued_ns = 0;
    free(c);
    mpe__job_unref(p, j);
}

/* A result frame from worker w: post its outcomes to the inbox and account
 * for them in the job. fds: the descriptors that came with it; a message
 * that keeps them empties it (the caller closes what is left). */
static void on_result(mpe_pool *p, wslot *w, const char *s, uint32_t len, mpe_fds *fds)
{
    mpe_result_head h;
    size_t at;
    if (mpe__frames_result_read(s, len, &h, &at) != 0)
        return;
    chunk *c = find_chunk(w, h.chunk);
    if (!c)
        return;
    mpe_job *j = c->job;
    if (mpe__job_running(j)) {
        size_t plen = len - at;
        mpe_msg *m = malloc(sizeof *m + plen);
        if (m) {
            memset(m, 0, sizeof *m);
            m->type = MPE_MSG_RESULT;
            m->job = j;
            m->index = c->a + h.from + 1;
            m->count = h.count;
            m->flags = h.flags;
            m->worker = w->number;
            m->pid = w->pid;
            if (h.flags & MPE_R_FDS) {
                m->fds = *fds; /* ownership moves to the message */
                memset(fds, 0, sizeof *fds);
            }
            m->len = plen;
            if (plen)
                memcpy(m->data, s + at, plen);
            post(p, m);
        } else if (h.count > 0) {
            /* No room for the results: their items fail, never silently vanish. */
            mpe_msg *f = calloc(1, sizeof *f);
            if (f) {
                f->type = MPE_MSG_FAIL;
                f->job = j;
                f->index = c->a + h.from + 1;
                f->count = h.count;
                f->worker = w->number;
                f->pid = w->pid;
                f->kind = "error";
                snprintf(f->text, sizeof f->text,
                         "mpe: not enough memory in the parent to receive %u result(s) (%zu bytes)", h.count, plen);
                post(p, f);
                mpe__job_failed(j);
            }
        }
        if (h.flags & MPE_R_ERRORS)
            mpe__job_failed(j);
    }
    c->got += h.count; /* descriptors nobody wants: read_frames closes them */
    mpe__job_account(p, j, h.count);
    if (h.flags & MPE_R_FINAL) {
        mpe__job_measured(p, j, c->b - c->a, h.ns);
        drop_chunk(p, w, c);
    }
}

static void on_initfail(mpe_pool *p, wslot *w, const char *s, uint32_t len)
{
    mpe_msg *m = malloc(sizeof *m + len);
    if (!m)
        return;
    memset(m, 0, sizeof *m);
    m->type = MPE_MSG_INITFAIL;
    m->worker = w->number;
    m->pid = w->pid;
    m->len = len;
    if (len)
        memcpy(m->data, s, len);
    post(p, m);
    /* The pool cannot work without its initializer: stop feeding anyone. */
    p->stopping = 1;
}

static void read_frames(mpe_pool *p, wslot *w)
{
    size_t off = 0;
    unsigned type;
    uint32_t len;
    while (w->state == W_LIVE && !w->broken) {
        /* A worker writes only these two kinds of frame, never larger than
         * 1 GiB: anything else means its channel was written over (a C
         * library misbehaving in the worker). Kill it: its item is blamed. */
        if (mpe__frames_from_worker(&w->in, off) == 0) {
            w->broken = 1;
            p->tp->kill(w->link);
            break;
        }
        if (!mpe__frame_peek(&w->in, off, &type, &len))
            break;
        const char *s = w->in.p + off + MPE_FRAME_HDR;
        if (type == MPE_F_RESULT) {
            /* Its descriptors are those that rode on its bytes (fdio.c). */
            mpe_fds fds = {0};
            uint64_t start = w->fdin.pos - (uint64_t)(w->in.n - off);
            mpe__fdio_claim(&w->fdin, start, start + MPE_FRAME_HDR + len, &fds);
            on_result(p, w, s, len, &fds);
            mpe__fds_close(&fds);
        } else if (type == MPE_F_INITFAIL)
            on_initfail(p, w, s, len);
        off += MPE_FRAME_HDR + len;
    }
    if (off > 0) { /* w->in.p may still be NULL when nothing was read */
        memmove(w->in.p, w->in.p + off, w->in.n - off);
        w->in.n -= off;
    }
}

/* ---- timeouts -------------------------------------------------------------------- */

static void check_timeouts(mpe_pool *p, int64_t now)
{
    if (p->o.timeout <= 0)
        return;
    for (int i = 0; i < p->n; i++) {
        wslot *w = &p->w[i];
        if (w->state != W_LIVE || w->timed_out)
            continue;
        mpe_progress pg;
        p->tp->progress(w->link, &pg);
        if (pg.chunk != 0 && now - pg.started_ns > (int64_t)(p->o.timeout * 1e9)) {
            w->timed_out = 1;
            p->tp->kill(w->link);
        }
    }
}

/* ---- the thread: feed, flush, drain ------------------------------------------------- */

/* The descriptors that travel with the frame at w->tx_off, if it is one that
 * goes alone with them (MPE_F_FDS: a function's, any number, *fds then its
 * entry's list; MPE_F_SEGS: segments', written into segfds, which has room
 * for MPE_FRAMES_SEGS_MAX, *fds then segfds); returns how many, or -1 if it
 * is a plain frame. *len: the bytes of the message that starts at w->tx_off
 * (up to the next such frame). */
static int message_at(mpe_pool *p, wslot *w, size_t *len, int *segfds, const int **fds)
{
    unsigned type;
    uint32_t flen;
    *len = w->tx.n - w->tx_off;
    if (mpe__frame_peek(&w->tx, w->tx_off, &type, &flen) && (type == MPE_F_FDS || type == MPE_F_SEGS)) {
        const char *body = w->tx.p + w->tx_off + MPE_FRAME_HDR;
        int n = 0;
        *len = MPE_FRAME_HDR + flen;
        if (type == MPE_F_FDS) {
            uint64_t fid = 0;
            mpe__frames_read_u64(body, flen, &fid);
            for (fnentry *f = p->fns; f; f = f->next)
                if (f->id == fid) {
                    *fds = f->fds.fd;
                    return f->fds.n;
                }
            return 0;
        }
        /* A job holds its segments while its chunks are out, so every id
         * here is still open. */
        uint32_t ids[MPE_FRAMES_SEGS_MAX];
        n = mpe__frames_segs_read(body, flen, ids, MPE_FRAMES_SEGS_MAX);
        for (int q = 0; q < n; q++)
            segfds[q] = mpe__job_seg_fd(p, ids[q]);
        *fds = segfds;
        return n < 0 ? 0 : n;
    }
    /* Stop before the next such frame: it must start a message of its own. */
    for (size_t o = w->tx_off; o < w->tx.n && mpe__frame_peek(&w->tx, o, &type, &flen); o += MPE_FRAME_HDR + flen)
        if ((type == MPE_F_FDS || type == MPE_F_SEGS) && o > w->tx_off) {
            *len = o - w->tx_off;
            break;
        }
    return -1;
}

/* The flush step for one writable worker: send what its tx holds, one
 * message at a time. */
static void flush(mpe_pool *p, wslot *w)
{
    int segfds[MPE_FRAMES_SEGS_MAX];
    const int *fds = NULL;
    size_t len;
    int nfds = message_at(p, w, &len, segfds, &fds);
    /* Plain frames go without the lock (tx, in and the link are this
     * thread's while the slot is live); a message with descriptors, rare,
     * keeps it: they belong to entries the main thread may drop. */
    if (nfds < 0)
        pthread_mutex_unlock(&p->mu);
    ssize_t sent = p->tp->send(w->link, w->tx.p + w->tx_off, len, nfds < 0 ? NULL : fds, nfds < 0 ? 0 : nfds);
    if (nfds < 0)
        pthread_mutex_lock(&p->mu);
    if (sent > 0) {
        w->tx_off += (size_t)sent;
        if (w->tx_off == w->tx.n)
            w->tx.n = w->tx_off = 0;
    }
}

/* The drain step for one readable worker: read what it sent, turn its
 * frames into outcomes in the inbox, and handle its death. */
static void drain(mpe_pool *p, wslot *w)
{
    ssize_t got;
    pthread_mutex_unlock(&p->mu); /* in, the link and fdin are this thread's */
    do
        got = p->tp->recv(w->link, &w->in, &w->fdin);
    while (got > 0 && w->in.n < (4u << 20));
    int err = got < 0 ? errno : 0;
    pthread_mutex_lock(&p->mu);
    read_frames(p, w);
    if (got < 0 && err == ENOMEM && !w->oom) {
        /* The parent cannot take in what this worker sends: its item fails
         * (kind "error"), the worker is replaced. */
        w->oom = 1;
        p->tp->kill(w->link);
    } else if (got == 0 || (got < 0 && err != EAGAIN && err != EWOULDBLOCK && (err != ENOMEM || w->oom)))
        /* Still no memory after the kill: what the dead worker left in its
         * channel cannot be read, and the channel stays readable, so
         * waiting for its EOF would spin for ever. */
        on_death(p, w);
}

/* The links to wait on: every live worker's, for reading, and for writing
 * when it has frames to send (queued frames move to tx first). */
static int gather(mpe_pool *p, mpe_link **links, unsigned *want, int *slot)
{
    int np = 0;
    for (int i = 0; i < p->n; i++) {
        wslot *w = &p->w[i];
        if (w->state != W_LIVE)
            continue;
        if (w->tx_off == w->tx.n && w->out.n > 0) {
            mpe_buf t = w->tx;
            w->tx = w->out;
            w->out = t;
            w->out.n = w->out_off = 0;
            w->tx_off = 0;
        }
        links[np] = w->link;
        want[np] = MPE_T_READ | (w->tx.n > w->tx_off ? MPE_T_WRITE : 0);
        slot[np++] = i;
    }
    return np;
}

void *mpe__dispatch_main(void *arg)
{
    mpe_pool *p = arg;
    mpe__proc_busy(); /* idle only while asleep in the transport's wait (see mpe__proc_fork) */
    mpe_link **links = calloc((size_t)p->n, sizeof *links);
    unsigned *want = calloc((size_t)p->n, sizeof *want);
    unsigned *ev = calloc((size_t)p->n, sizeof *ev);
    int *slot = calloc((size_t)p->n, sizeof *slot);
    if (!links || !want || !ev || !slot) {
        free(links);
        free(want);
        free(ev);
        free(slot);
        mpe__proc_idle();
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    while (!p->quit) {
        feed_all(p);
        int np = gather(p, links, want, slot);
        int ms = p->o.timeout > 0 ? 20 : 500;
        p->dispatcher_idle = 1;
        pthread_mutex_unlock(&p->mu);
        mpe__proc_idle(); /* asleep in wait, holding nothing: a fork may happen now */
        int r = p->tp->wait(p->t, links, want, ev, np, p->efd, ms);
        mpe__proc_busy();
        pthread_mutex_lock(&p->mu);
        p->dispatcher_idle = 0;
        if (r < 0)
            break;
        for (int k = 0; r > 0 && k < np; k++) {
            wslot *w = &p->w[slot[k]];
            if (w->state == W_LIVE && (ev[k] & MPE_T_WRITE))
                flush(p, w);
            if (w->state == W_LIVE && (ev[k] & MPE_T_READ))
                drain(p, w);
        }
        check_timeouts(p, now_ns());
    }
    /* Descriptors received that no result claimed. */
    for (int i = 0; i < p->n; i++)
        mpe__fdin_close(&p->w[i].fdin);
    pthread_mutex_unlock(&p->mu);
    free(links);
    free(want);
    free(ev);
    free(slot);
    mpe__proc_idle();
    return NULL;
}
