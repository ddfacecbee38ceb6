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
#include "pool.h"
#include "pool_api.h"
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
        m->job->refs++;
    if (p->inbox_last)
        p->inbox_last->next = m;
    else
        p->inbox = m;
    p->inbox_last = m;
    pthread_cond_broadcast(&p->cv);
}

/* ---- frames built without Lua (the dispatcher may not raise) ---------------- */

int mpe__dispatch_put(mpe_buf *b, const void *s, size_t n)
{
    if (n == 0)
        return 0;
    if (mpe__buf_grow(b, n) != 0)
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int put64(mpe_buf *b, uint64_t v)
{
    unsigned char s[8];
    for (int i = 0; i < 8; i++)
        s[i] = (unsigned char)(v >> (8 * i));
    return mpe__dispatch_put(b, s, 8);
}

static int put32(mpe_buf *b, uint32_t v)
{
    unsigned char s[4];
    for (int i = 0; i < 4; i++)
        s[i] = (unsigned char)(v >> (8 * i));
    return mpe__dispatch_put(b, s, 4);
}

static int put8(mpe_buf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    return mpe__dispatch_put(b, &c, 1);
}

static void patch_len(mpe_buf *b, size_t start)
{
    uint32_t n = (uint32_t)(b->n - start - MPE_FRAME_HDR);
    for (int i = 0; i < 4; i++)
        b->p[start + i] = (char)(unsigned char)(n >> (8 * i));
}

int mpe__dispatch_frame(mpe_buf *b, unsigned type, uint64_t v)
{
    size_t s = b->n;
    if (put32(b, 0) || put8(b, type) || put64(b, v))
        return -1;
    patch_len(b, s);
    return 0;
}

int mpe__dispatch_frame32(mpe_buf *b, unsigned type, uint32_t v)
{
    size_t s = b->n;
    if (put32(b, 0) || put8(b, type) || put32(b, v))
        return -1;
    patch_len(b, s);
    return 0;
}

/* ---- shared segments: each sent once to each worker -------------------------- */

static int segs_frame(mpe_buf *b, const uint32_t *ids, int *n)
{
    size_t st = b->n;
    if (put32(b, 0) || put8(b, MPE_F_SEGS) || put32(b, (uint32_t)*n))
        return -1;
    for (int q = 0; q < *n; q++)
        if (put32(b, ids[q]))
            return -1;
    patch_len(b, st);
    *n = 0;
    return 0;
}

/* Queue MPE_F_SEGS frames for the segments items [a, e) of j refer to that
 * w has not been sent yet (at most MPE_MAX_FDS a frame: each frame's
 * descriptors travel in one message). 0, or -1 on ENOMEM. */
static int send_segs(mpe_pool *p, wslot *w, mpe_job *j, lua_Integer a, lua_Integer e)
{
    if ((size_t)p->nsegs > w->hascap) {
        size_t cap = (size_t)p->segcap;
        unsigned char *h = realloc(w->has, cap);
        if (!h)
            return -1;
        memset(h + w->hascap, 0, cap - w->hascap);
        w->has = h;
        w->hascap = cap;
    }
    uint32_t ids[MPE_MAX_FDS];
    int n = 0;
    for (lua_Integer i = a; i < e; i++) {
        const unsigned char *s = (const unsigned char *)j->items.p + j->off[i - j->base];
        for (int q = 0; q < s[0]; q++) {
            const unsigned char *v = s + 1 + 4 * q;
            uint32_t id = (uint32_t)v[0] | (uint32_t)v[1] << 8 | (uint32_t)v[2] << 16 | (uint32_t)v[3] << 24;
            if (id >= (uint32_t)p->nsegs || w->has[id] || p->segs[id].fd < 0)
                continue;
            w->has[id] = 1;
            ids[n++] = id;
            if (n == MPE_MAX_FDS && segs_frame(&w->out, ids, &n) != 0)
                return -1;
        }
    }
    if (n > 0 && segs_frame(&w->out, ids, &n) != 0)
        return -1;
    return 0;
}

void mpe__dispatch_drop_fdq(wslot *w)
{
    while (w->fdq_n > 0) {
        mpe_fds *f = &w->fdq[w->fdq_head];
        for (int k = 0; k < f->n; k++)
            close(f->fd[k]);
        w->fdq_head = (w->fdq_head + 1) % 8;
        w->fdq_n--;
    }
}

/* ---- cutting chunks -------------------------------------------------------------- */

static int has_items(const mpe_job *j)
{
    return !j->cancelled && !j->released && (j->redo || j->cut < j->visible);
}

/* Put j on the work list if it has items to hand out and is not there yet. */
void mpe__dispatch_enlist(mpe_pool *p, mpe_job *j)
{
    if (j->in_work || !has_items(j))
        return;
    j->in_work = 1;
    j->wnext = NULL;
    if (p->work_last)
        p->work_last->wnext = j;
    else
        p->work = j;
    p->work_last = j;
}

/* Drop jobs without items from the head of the work list. */
void mpe__dispatch_prune(mpe_pool *p)
{
    while (p->work && !has_items(p->work)) {
        mpe_job *j = p->work;
        p->work = j->wnext;
        if (!p->work)
            p->work_last = NULL;
        j->in_work = 0;
    }
}

static double job_cost(mpe_pool *p, mpe_job *j)
{
    if (j->per_item_ns > 0)
        return j->per_item_ns;
    return p->cost_ns > 0 ? p->cost_ns : 1e6; /* unknown: assume 1 ms, so queues stay short */
}

/* Items of a new chunk for job j, at most avail. */
static lua_Integer chunk_size(mpe_pool *p, mpe_job *j, lua_Integer avail)
{
    lua_Integer n;
    if (j->chunksize > 0)
        n = j->chunksize;
    else if (j->per_item_ns <= 0) {
        /* A small first chunk to measure the cost, shared out between the
         * workers when the job is small (two items that wait for each other
         * must not land on one worker). */
        lua_Integer all = j->finished ? j->visible : avail; /* a share of the whole job */
        lua_Integer share = (all + p->n - 1) / p->n;
        n = share < 16 ? share : 16;
    }
    else {
        n = (lua_Integer)(TARGET_CHUNK_NS / j->per_item_ns);
        if (j->finished) { /* finer at the end, so the workers finish together */
            lua_Integer left = j->visible - j->cut;
            lua_Integer fair = (left + 2 * p->n - 1) / (2 * p->n);
            if (n > fair)
                n = fair;
        }
    }
    if (n < 1)
        n = 1;
    if (n > MAX_CHUNK_ITEMS)
        n = MAX_CHUNK_ITEMS;
    if (n > avail)
        n = avail;
    if (j->kind == MPE_K_ENC) { /* keep frames reasonably small */
        lua_Integer a = j->cut;
        while (n > 1 && j->off[a + n - j->base] - j->off[a - j->base] > MAX_CHUNK_BYTES)
            n /= 2;
    }
    return n;
}

/* Append a chunk frame for items [a, b) of j to w->out. */
static int write_chunk(mpe_buf *b, uint64_t id, mpe_job *j, lua_Integer a, lua_Integer e)
{
    size_t s = b->n;
    uint32_t n = (uint32_t)(e - a);
    if (put32(b, 0) || put8(b, MPE_F_CHUNK) || put64(b, id) || put64(b, j->id) ||
        put64(b, j->fnid) || put8(b, (unsigned)j->mode) || put8(b, (unsigned)j->kind) || put32(b, n) ||
        put64(b, (uint64_t)a))
        return -1;
    switch (j->kind) {
    case MPE_K_RANGE:
        if (put64(b, (uint64_t)(j->rstart + a * j->rstep)) || put64(b, (uint64_t)j->rstep))
            return -1;
        break;
    case MPE_K_INTS:
    case MPE_K_FLOATS:
        if (mpe__dispatch_put(b, j->items.p + 8 * (size_t)(a - j->base), 8 * (size_t)n))
            return -1;
        break;
    default: {
        size_t from = j->off[a - j->base], to = j->off[e - j->base];
        if (mpe__dispatch_put(b, j->items.p + from, to - from))
            return -1;
    }
    }
    patch_len(b, s);
    return 0;
}

/* Give worker w one more chunk if there is work. Returns 1 if it did. */
static int feed_one(mpe_pool *p, wslot *w)
{
    mpe__dispatch_prune(p);
    for (mpe_job *j = p->work; j; j = j->wnext) {
        if (!has_items(j))
            continue;
        lua_Integer a, e;
        range *r = j->redo;
        int suspect = 0;
        if (r) {
            a = r->a;
            e = r->b;
            if (r->suspect) {
                /* Alone on an otherwise idle worker, so a death is its own. */
                if (w->ninflight > 0)
                    return 0;
                e = a + 1;
                suspect = 1;
            } else if (e - a > 1 && j->chunksize > 0 && e - a > j->chunksize)
                e = a + j->chunksize;
        } else if (j->cut < j->visible) {
            a = j->cut;
            e = a + chunk_size(p, j, j->visible - j->cut);
        } else
            continue;
        if (p->o.maxtasks > 0) {
            long room = p->o.maxtasks - w->assigned;
            if (room <= 0)
                return 0;
            if (e - a > room)
                e = a + room;
        }
        chunk *c = malloc(sizeof *c);
        if (!c)
            return 0;
        c->id = ++p->next_id;
        c->job = j;
        c->a = a;
        c->b = e;
        c->got = 0;
        c->suspect = suspect;
        c->next = NULL;
        if (j->nsegs > 0 && send_segs(p, w, j, a, e) != 0) {
            free(c);
            return 0;
        }
        if (write_chunk(&w->out, c->id, j, a, e) != 0) {
            free(c);
            return 0;
        }
        if (r) {
            r->a = e;
            if (r->a >= r->b) {
                j->redo = r->next;
                free(r);
            }
        } else
            j->cut = e;
        j->refs++;
        if (w->last)
            w->last->next = c;
        else
            w->inflight = c;
        w->last = c;
        w->ninflight++;
        w->queued_ns += job_cost(p, j) * (double)(e - a);
        w->assigned += (long)(e - a);
        return 1;
    }
    return 0;
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

void mpe__dispatch_maybe_free(mpe_pool *p, mpe_job *j)
{
    if (j->released && j->refs == 0)
        mpe__pool_free_job(p, j);
}

static void account(mpe_pool *p, mpe_job *j, lua_Integer n)
{
    j->done += n;
    if (j->finished && j->done >= j->visible)
        pthread_cond_broadcast(&p->cv);
    (void)p;
}

static void redo(mpe_pool *p, mpe_job *j, lua_Integer a, lua_Integer b, int suspect)
{
    if (a >= b || j->cancelled || j->released)
        return;
    range *r = malloc(sizeof *r);
    if (!r)
        return; /* cannot happen in practice; the items then count as lost below */
    r->a = a;
    r->b = b;
    r->suspect = suspect;
    r->next = j->redo;
    j->redo = r;
    mpe__dispatch_enlist(p, j);
}

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
    account(p, j, 1);
    if (j->raise_first)
        j->cancelled = 1;
}

static int retry_item(mpe_pool *p, mpe_job *j, lua_Integer i)
{
    if (p->o.retries <= 0)
        return 0;
    for (attempt *t = j->attempts; t; t = t->next)
        if (t->i == i) {
            if (t->n >= p->o.retries)
                return 0;
            t->n++;
            return 1;
        }
    attempt *t = malloc(sizeof *t);
    if (!t)
        return 0;
    t->i = i;
    t->n = 1;
    t->next = j->attempts;
    j->attempts = t;
    return 1;
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
    mpe__dispatch_drop_fdq(w);
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
            redo(p, j, bad + 1, c->b, 0);
            if (!j->cancelled && !j->released && !w->oom && retry_item(p, j, bad))
                redo(p, j, bad, bad + 1, 0);
            else
                fail_item(p, w, j, bad, w->oom ? "error" : w->timed_out ? "timeout" : "crash", text);
            redo(p, j, from, bad, 0);
        } else
            /* It died between items (or before its chunk began): run them
             * again one by one, so that if one of them kills its worker on
             * the way out, that one is blamed instead of all being re-run
             * for ever. */
            redo(p, j, from, c->b, crashed && ready && !blamed);
        if (j->cancelled || j->released) /* nobody waits for these items */
            account(p, j, 0);
        j->refs--;
        free(c);
        mpe__dispatch_maybe_free(p, j);
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
    w->queued_ns -= job_cost(p, j) * (double)(c->b - c->a);
    if (w->queued_ns < 0 || w->ninflight == 0)
        w->queued_ns = 0;
    j->refs--;
    free(c);
    mpe__dispatch_maybe_free(p, j);
}

/* A result frame from worker w: [u64 chunk][u32 from][u32 count][u8 flags][u64 ns][payload]. */
static void on_result(mpe_pool *p, wslot *w, const char *s, uint32_t len)
{
    mpe_rd r;
    uint64_t id, ns;
    uint32_t from, count;
    unsigned flags;
    mpe__rd_init(&r, s, len);
    if (mpe__rd_u64(&r, &id) || mpe__rd_u32(&r, &from) || mpe__rd_u32(&r, &count) ||
        mpe__rd_u8(&r, &flags) || mpe__rd_u64(&r, &ns))
        return;
    chunk *c = find_chunk(w, id);
    if (!c)
        return;
    mpe_job *j = c->job;
    if (!j->cancelled && !j->released) {
        size_t plen = len - r.pos;
        mpe_msg *m = malloc(sizeof *m + plen);
        if (!m && count > 0) {
            /* No room for the results: their items fail, never silently vanish. */
            mpe_msg *f = calloc(1, sizeof *f);
            if (f) {
                f->type = MPE_MSG_FAIL;
                f->job = j;
                f->index = c->a + from + 1;
                f->count = count;
                f->worker = w->number;
                f->pid = w->pid;
                f->kind = "error";
                snprintf(f->text, sizeof f->text,
                         "mpe: not enough memory in the parent to receive %u result(s) (%zu bytes)", count, plen);
                post(p, f);
                if (j->raise_first)
                    j->cancelled = 1;
            }
        }
        if (m) {
            memset(m, 0, sizeof *m);
            m->type = MPE_MSG_RESULT;
            m->job = j;
            m->index = c->a + from + 1;
            m->count = count;
            m->flags = flags;
            m->worker = w->number;
            m->pid = w->pid;
            if ((flags & MPE_R_FDS) && w->fdq_n > 0) {
                m->fds = w->fdq[w->fdq_head];
                w->fdq_head = (w->fdq_head + 1) % 8;
                w->fdq_n--;
            }
            m->len = plen;
            if (plen)
                memcpy(m->data, s + r.pos, plen);
            post(p, m);
        }
        if (flags & MPE_R_ERRORS && j->raise_first)
            j->cancelled = 1;
    } else if ((flags & MPE_R_FDS) && w->fdq_n > 0) { /* nobody wants them */
        mpe_fds *f = &w->fdq[w->fdq_head];
        for (int k = 0; k < f->n; k++)
            close(f->fd[k]);
        w->fdq_head = (w->fdq_head + 1) % 8;
        w->fdq_n--;
    }
    c->got += count;
    account(p, j, count);
    if (flags & MPE_R_FINAL) {
        lua_Integer n = c->b - c->a;
        double per = n > 0 ? (double)ns / (double)n : 0;
        if (per <= 0)
            per = 1;
        j->per_item_ns = j->per_item_ns > 0 ? 0.5 * j->per_item_ns + 0.5 * per : per;
        p->cost_ns = p->cost_ns > 0 ? 0.8 * p->cost_ns + 0.2 * per : per;
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
        if (w->in.n - off >= MPE_FRAME_HDR) {
            const unsigned char *h = (const unsigned char *)w->in.p + off;
            uint32_t n = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
            if ((h[4] != MPE_F_RESULT && h[4] != MPE_F_INITFAIL) || n > (1u << 30)) {
                w->broken = 1;
                p->tp->kill(w->link);
                break;
            }
        }
        if (!mpe__frame_peek(&w->in, off, &type, &len))
            break;
        const char *s = w->in.p + off + MPE_FRAME_HDR;
        if (type == MPE_F_RESULT)
            on_result(p, w, s, len);
        else if (type == MPE_F_INITFAIL)
            on_initfail(p, w, s, len);
        off += MPE_FRAME_HDR + len;
    }
    if (off > 0) { /* w->in.p may still be NULL when nothing was read */
        memmove(w->in.p, w->in.p + off, w->in.n - off);
        w->in.n -= off;
    }
}

/* ---- the dispatcher thread --------------------------------------------------------- */

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
        int np = 0;
        feed_all(p);
        for (int i = 0; i < p->n; i++) {
            wslot *w = &p->w[i];
            if (w->state != W_LIVE)
                continue;
            if (w->tx_off == w->tx.n && w->out.n > 0) { /* hand the queued frames to tx */
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
            if (w->state != W_LIVE)
                continue;
            if (ev[k] & MPE_T_WRITE) {
                const int *fds = NULL;
                int nfds = 0;
                size_t len = w->tx.n - w->tx_off;
                int segfds[MPE_MAX_FDS];
                /* F_FDS and F_SEGS frames travel alone, with their descriptors. */
                unsigned type;
                uint32_t flen;
                /* Stop before the next such frame: it must start a message of its own. */
                for (size_t o = w->tx_off; o < w->tx.n && mpe__frame_peek(&w->tx, o, &type, &flen);
                     o += MPE_FRAME_HDR + flen)
                    if ((type == MPE_F_FDS || type == MPE_F_SEGS) && o > w->tx_off) {
                        len = o - w->tx_off;
                        break;
                    }
                if (mpe__frame_peek(&w->tx, w->tx_off, &type, &flen) &&
                    (type == MPE_F_FDS || type == MPE_F_SEGS)) {
                    mpe_rd rd;
                    mpe__rd_init(&rd, w->tx.p + w->tx_off + MPE_FRAME_HDR, flen);
                    if (type == MPE_F_FDS) {
                        uint64_t fid = 0;
                        mpe__rd_u64(&rd, &fid);
                        for (fnentry *f = p->fns; f && !fds; f = f->next)
                            if (f->id == fid) {
                                fds = f->fds.fd;
                                nfds = f->fds.n;
                            }
                    } else {
                        /* A job holds its segments while its chunks are out,
                         * so every id here is still open. */
                        uint32_t n = 0, id;
                        mpe__rd_u32(&rd, &n);
                        for (uint32_t q = 0; q < n && q < MPE_MAX_FDS && mpe__rd_u32(&rd, &id) == 0; q++)
                            segfds[nfds++] = id < (uint32_t)p->nsegs ? p->segs[id].fd : -1;
                        fds = segfds;
                    }
                    len = MPE_FRAME_HDR + flen;
                }
                /* Plain frames go without the lock (tx, in and the link are
                 * this thread's while the slot is live); a message with
                 * descriptors, rare, keeps it: they belong to entries the
                 * main thread may drop. */
                if (!fds)
                    pthread_mutex_unlock(&p->mu);
                ssize_t sent = p->tp->send(w->link, w->tx.p + w->tx_off, len, fds, nfds);
                if (!fds)
                    pthread_mutex_lock(&p->mu);
                if (sent > 0) {
                    w->tx_off += (size_t)sent;
                    if (w->tx_off == w->tx.n)
                        w->tx.n = w->tx_off = 0;
                }
            }
            if (ev[k] & MPE_T_READ) {
                ssize_t got;
                pthread_mutex_unlock(&p->mu); /* in, the link and fdq are this thread's */
                do {
                    mpe_fds set = {.n = 0};
                    got = p->tp->recv(w->link, &w->in, &set);
                    if (set.n > 0) {
                        if (w->fdq_n < 8) {
                            w->fdq[(w->fdq_head + w->fdq_n) % 8] = set;
                            w->fdq_n++;
                        } else
                            for (int q = 0; q < set.n; q++)
                                close(set.fd[q]);
                    }
                } while (got > 0 && w->in.n < (4u << 20) && w->fdq_n < 8);
                int err = got < 0 ? errno : 0;
                pthread_mutex_lock(&p->mu);
                read_frames(p, w);
                if (got < 0 && err == ENOMEM && !w->oom) {
                    /* The parent cannot take in what this worker sends: its
                     * item fails (kind "error"), the worker is replaced. */
                    w->oom = 1;
                    p->tp->kill(w->link);
                } else if (got == 0 || (got < 0 && err != EAGAIN && err != EWOULDBLOCK &&
                                        (err != ENOMEM || w->oom)))
                    /* Still no memory after the kill: what the dead worker left
                     * in its channel cannot be read, and the channel stays
                     * readable, so waiting for its EOF would spin for ever. */
                    on_death(p, w);
            }
        }
        check_timeouts(p, now_ns());
    }
    pthread_mutex_unlock(&p->mu);
    free(links);
    free(want);
    free(ev);
    free(slot);
    mpe__proc_idle();
    return NULL;
}
