/* job.c -- the pool's job module: one job from its creation to its last
 * outcome (item store, publishing and the imap window, the work list,
 * cutting chunks, redo and retry, outcome accounting, cancel, withdraw,
 * release, abort, free) and the pool's segment table its items refer to.
 * SPDX-License-Identifier: MIT
 *
 * Lua-free. It calls frames.c (layouts) and nothing else of the pool:
 * pool.c (the main thread) and dispatch.c (the dispatcher thread) call it.
 * The main thread adds items and publishes; the dispatcher sees only
 * published items (visible), both under the pool's lock. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "frames.h"
#include "job.h"
#include "poolstate.h"
#include "shm.h"

/* ---- allocation of a submission, with fault injection for tests ------------- */

static int fail_nth; /* the nth allocation from now fails; 0: none */

void mpe__job_fail_alloc(int nth)
{
    fail_nth = nth;
}

static int injected(void)
{
    return fail_nth > 0 && --fail_nth == 0;
}

static void *jrealloc(void *q, size_t n)
{
    if (injected()) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(q, n);
}

static int jgrow(mpe_buf *b, size_t extra)
{
    if (injected()) {
        errno = ENOMEM;
        return -1;
    }
    return mpe__buf_grow(b, extra);
}

/* ---- function references ------------------------------------------------------ */

static void fn_ref(mpe_pool *p, uint64_t fnid, int d)
{
    for (fnentry *f = p->fns; f; f = f->next)
        if (f->id == fnid)
            f->jobs += d;
}

/* ---- the segment table ------------------------------------------------------------ */

int mpe__job_seg_fd(const mpe_pool *p, uint32_t id)
{
    return id < (uint32_t)p->nsegs ? p->segs[id].fd : -1;
}

/* The pool's id for the segment behind fd, which the pool takes (closed if
 * the segment is known already); j gets a reference. -1 on ENOMEM (fd then
 * closed too) or when fstat fails (fd closed). Under p->mu. */
static int seg_intern(mpe_pool *p, mpe_job *j, int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    int id = -1;
    if (p->seg_hint < p->nsegs && p->segs[p->seg_hint].fd >= 0 && p->segs[p->seg_hint].ino == st.st_ino &&
        p->segs[p->seg_hint].dev == st.st_dev)
        id = p->seg_hint;
    for (int i = 0; id < 0 && i < p->nsegs; i++)
        if (p->segs[i].fd >= 0 && p->segs[i].ino == st.st_ino && p->segs[i].dev == st.st_dev)
            id = i;
    if (j->nsegs == j->segcap) {
        int cap = j->segcap ? 2 * j->segcap : 4;
        uint32_t *g = jrealloc(j->segs, (size_t)cap * sizeof *g);
        if (!g) {
            close(fd);
            errno = ENOMEM;
            return -1;
        }
        j->segs = g;
        j->segcap = cap;
    }
    if (id >= 0) {
        close(fd);
    } else {
        for (int i = 0; id < 0 && i < p->nsegs; i++)
            if (p->segs[i].fd < 0)
                id = i;
        if (id < 0) {
            if (p->nsegs == p->segcap) {
                int cap = p->segcap ? 2 * p->segcap : 16;
                pseg *g = jrealloc(p->segs, (size_t)cap * sizeof *g);
                if (!g) {
                    close(fd);
                    errno = ENOMEM;
                    return -1;
                }
                p->segs = g;
                p->segcap = cap;
            }
            id = p->nsegs++;
        }
        p->segs[id] = (pseg){.fd = fd, .dev = st.st_dev, .ino = st.st_ino, .refs = 0};
    }
    p->seg_hint = id;
    int known = 0;
    for (int i = j->nsegs - 1; i >= 0 && !known; i--)
        known = j->segs[i] == (uint32_t)id;
    if (!known) {
        j->segs[j->nsegs++] = (uint32_t)id;
        p->segs[id].refs++;
    }
    return id;
}

/* Drop j's references to the pool's segments; a segment nobody refers to is
 * closed and its id freed, workers told to close theirs. Under p->mu. */
static void seg_release(mpe_pool *p, mpe_job *j, int mine)
{
    for (int k = 0; k < j->nsegs; k++) {
        pseg *g = &p->segs[j->segs[k]];
        if (--g->refs > 0)
            continue;
        if (mine)
            close(g->fd);
        g->fd = -1;
        for (int i = 0; i < p->n; i++) {
            wslot *w = &p->w[i];
            if (j->segs[k] < w->hascap && w->has[j->segs[k]]) {
                w->has[j->segs[k]] = 0;
                if (w->state == W_LIVE && mine)
                    mpe__frames_u32(&w->out, MPE_F_SEGDROP, j->segs[k]);
            }
        }
    }
    free(j->segs);
    j->segs = NULL;
    j->nsegs = j->segcap = 0;
}

/* Intern an item's descriptors into ids; every fd is taken (set to -1).
 * 0, or -1 on ENOMEM. Under p->mu. */
static int intern_all(mpe_pool *p, mpe_job *j, mpe_fds *fds, uint32_t *ids)
{
    int k = fds ? fds->n : 0, r = 0;
    for (int i = 0; i < k; i++) {
        int id = -1;
        if (fds->fd[i] >= 0 && r == 0) {
            id = seg_intern(p, j, fds->fd[i]);
            if (id < 0 && errno == ENOMEM)
                r = -1;
        } else if (fds->fd[i] >= 0)
            close(fds->fd[i]);
        fds->fd[i] = -1;
        ids[i] = id < 0 ? UINT32_MAX : (uint32_t)id;
    }
    return r;
}

/* Close every descriptor of fds and mark it taken (-1): a submission that
 * fails still takes them. */
static void take_all(mpe_fds *fds)
{
    for (int i = 0; fds && i < fds->n; i++)
        if (fds->fd[i] >= 0) {
            close(fds->fd[i]);
            fds->fd[i] = -1;
        }
}

/* Room for the segment ids of an item with k descriptors: ids1 (64 of them)
 * or, for more, an allocation the caller frees (ids != ids1). NULL on ENOMEM. */
static uint32_t *ids_for(int k, uint32_t *ids1)
{
    return k <= 64 ? ids1 : jrealloc(NULL, (size_t)k * sizeof *ids1);
}

/* ---- the job list and the work list ----------------------------------------------- */

/* Give j its id and put it on the pool's job list (the lock held). */
static void link_job(mpe_pool *p, mpe_job *j)
{
    j->id = ++p->next_id;
    fn_ref(p, j->fnid, 1);
    j->prev = p->jobs_last;
    if (p->jobs_last)
        p->jobs_last->next = j;
    else
        p->jobs = j;
    p->jobs_last = j;
}

int mpe__job_has_items(const mpe_job *j)
{
    return !j->cancelled && !j->released && (j->redo || j->cut < j->visible);
}

void mpe__job_enlist(mpe_pool *p, mpe_job *j)
{
    if (j->in_work || !mpe__job_has_items(j))
        return;
    j->in_work = 1;
    j->wnext = NULL;
    if (p->work_last)
        p->work_last->wnext = j;
    else
        p->work = j;
    p->work_last = j;
}

void mpe__job_prune(mpe_pool *p)
{
    while (p->work && !mpe__job_has_items(p->work)) {
        mpe_job *j = p->work;
        p->work = j->wnext;
        if (!p->work)
            p->work_last = NULL;
        j->in_work = 0;
    }
}

int mpe__job_any_work(mpe_pool *p)
{
    mpe__job_prune(p);
    return p->work != NULL;
}

/* Take j off the work list wherever it is. */
static void unlist(mpe_pool *p, mpe_job *j)
{
    if (!j->in_work)
        return;
    mpe_job **wp = &p->work, *wprev = NULL;
    while (*wp && *wp != j) {
        wprev = *wp;
        wp = &(*wp)->wnext;
    }
    if (*wp) {
        *wp = j->wnext;
        if (p->work_last == j)
            p->work_last = wprev;
    }
    j->in_work = 0;
}

void mpe__job_free(mpe_pool *p, mpe_job *j, int mine)
{
    unlist(p, j);
    if (j->prev)
        j->prev->next = j->next;
    else if (p->jobs == j)
        p->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else if (p->jobs_last == j)
        p->jobs_last = j->prev;
    fn_ref(p, j->fnid, -1);
    seg_release(p, j, mine);
    while (j->redo) {
        mpe_range_redo *r = j->redo;
        j->redo = r->next;
        free(r);
    }
    while (j->attempts) {
        mpe_attempt *t = j->attempts;
        j->attempts = t->next;
        free(t);
    }
    mpe__buf_free(&j->items);
    if (j->off != j->off1)
        free(j->off);
    free(j);
}

static void maybe_free(mpe_pool *p, mpe_job *j)
{
    if (j->released && j->refs == 0)
        mpe__job_free(p, j, p->owner == mpe__shm_self());
}

/* ---- submission ---------------------------------------------------------------------- */

mpe_job *mpe__job_new(mpe_pool *p, int mode, uint64_t fnid, int chunksize, int raise_first)
{
    mpe_job *j = jrealloc(NULL, sizeof *j);
    if (!j)
        return NULL;
    memset(j, 0, sizeof *j);
    j->mode = mode;
    j->fnid = fnid;
    j->chunksize = chunksize;
    j->raise_first = raise_first;
    j->limit = INT64_MAX;
    pthread_mutex_lock(&p->mu);
    link_job(p, j);
    pthread_mutex_unlock(&p->mu);
    return j;
}

void mpe__job_add_range(mpe_job *j, int64_t start, int64_t step, int64_t count)
{
    j->kind = MPE_K_RANGE;
    j->rstart = start;
    j->rstep = step;
    j->count = count;
}

char *mpe__job_packed_begin(mpe_pool *p, mpe_job *j, int kind, size_t count)
{
    pthread_mutex_lock(&p->mu); /* the store may move: not while the dispatcher copies */
    int r = jgrow(&j->items, 8 * count);
    pthread_mutex_unlock(&p->mu);
    if (r != 0)
        return NULL;
    j->kind = kind;
    return j->items.p + j->items.n;
}

void mpe__job_packed_abandon(mpe_job *j)
{
    j->kind = MPE_K_ENC; /* nothing was committed: the store holds no item */
}

/* Append one item, [item head][encoding], to j's store, which has room for
 * it and its offset. */
static void put_item(mpe_job *j, const uint32_t *ids, int k, const char *s, size_t n)
{
    if (j->count == j->base)
        j->off[0] = j->items.n;
    size_t h = mpe__frames_item_head((unsigned char *)j->items.p + j->items.n, ids, k);
    memcpy(j->items.p + j->items.n + h, s, n);
    j->items.n += h + n;
    j->count++;
    j->off[j->count - j->base] = j->items.n;
}

int mpe__job_add_enc(mpe_pool *p, mpe_job *j, const char *s, size_t n, mpe_fds *fds)
{
    j->kind = MPE_K_ENC;
    int k = fds ? fds->n : 0;
    uint32_t ids1[64], *ids = ids_for(k, ids1);
    if (!ids) {
        take_all(fds);
        return -1;
    }
    /* The store may move while the dispatcher copies from it: hold the lock. */
    pthread_mutex_lock(&p->mu);
    int r = intern_all(p, j, fds, ids);
    size_t need = (size_t)(j->count - j->base) + 2;
    if (r == 0 && need > j->offcap) {
        size_t cap = j->offcap ? j->offcap * 2 : 4; /* most jobs of one item are apply calls */
        while (cap < need)
            cap *= 2;
        size_t *o = jrealloc(j->off == j->off1 ? NULL : j->off, cap * sizeof *o);
        if (!o)
            r = -1;
        else {
            if (j->off == j->off1)
                memcpy(o, j->off1, sizeof j->off1);
            j->off = o;
            j->offcap = cap;
        }
    }
    if (r == 0 && jgrow(&j->items, mpe__frames_item_head_size(k) + n) != 0)
        r = -1;
    if (r == 0)
        put_item(j, ids, k, s, n);
    pthread_mutex_unlock(&p->mu);
    if (ids != ids1)
        free(ids);
    return r;
}

/* Drop stored items that no chunk can need again, so that a stream through
 * imap keeps bounded memory. */
static void trim(mpe_pool *p, mpe_job *j)
{
    /* Only encoded stores, the ones streams (imap, mpe map) grow: a packed
     * store is written in place by mpe__job_packed_begin's caller while it
     * is published, so it must not move, and it never outgrows its table. */
    if (j->kind != MPE_K_ENC)
        return;
    int64_t low = j->cut;
    if (low - j->base < 4096)
        return; /* the items handed out are fewer still: before the scans below */
    for (mpe_range_redo *r = j->redo; r; r = r->next)
        if (r->a < low)
            low = r->a;
    for (int i = 0; i < p->n; i++)
        for (chunk *c = p->w[i].inflight; c; c = c->next)
            if (c->job == j && c->a + c->got < low)
                low = c->a + c->got;
    if (low - j->base < 4096 || 2 * (low - j->base) < j->count - j->base)
        return; /* not worth a move yet */
    size_t cut = j->off[low - j->base];
    size_t nidx = (size_t)(j->count - low) + 1;
    memmove(j->off, j->off + (low - j->base), nidx * sizeof *j->off);
    for (size_t i = 0; i < nidx; i++)
        j->off[i] -= cut;
    memmove(j->items.p, j->items.p + cut, j->items.n - cut);
    j->items.n -= cut;
    j->base = low;
}

static void publish_locked(mpe_pool *p, mpe_job *j, int finished)
{
    trim(p, j);
    j->visible = j->count < j->limit ? j->count : j->limit;
    if (finished)
        j->finished = 1;
    mpe__job_enlist(p, j);
    if (j->finished && j->done >= j->visible)
        pthread_cond_broadcast(&p->cv);
    /* Wake the dispatcher only if a worker has nothing at all: a busy
     * worker's next result wakes it anyway, and it then hands out everything
     * published meanwhile in one pass, so a run of apply_async reaches the
     * workers in batches (a wake per call would cost more than the task). */
    for (int i = 0; i < p->n; i++)
        if (p->w[i].state == W_LIVE && p->w[i].ninflight == 0) {
            mpe__pool_wake(p);
            break;
        }
}

void mpe__job_publish(mpe_pool *p, mpe_job *j, int finished)
{
    pthread_mutex_lock(&p->mu);
    publish_locked(p, j, finished);
    pthread_mutex_unlock(&p->mu);
}

void mpe__job_packed_commit(mpe_pool *p, mpe_job *j, size_t count, int finished)
{
    pthread_mutex_lock(&p->mu);
    j->items.n += 8 * (count - (size_t)(j->count - j->base));
    j->count = j->base + (int64_t)count;
    publish_locked(p, j, finished);
    pthread_mutex_unlock(&p->mu);
}

mpe_job *mpe__job_one(mpe_pool *p, int mode, uint64_t fnid, int raise_first, const char *s, size_t n,
                      mpe_fds *fds)
{
    int k = fds ? fds->n : 0;
    uint32_t ids1[64], *ids = ids_for(k, ids1);
    mpe_job *j = ids ? jrealloc(NULL, sizeof *j) : NULL;
    if (j) {
        memset(j, 0, sizeof *j);
        if (jgrow(&j->items, mpe__frames_item_head_size(k) + n) != 0) {
            free(j);
            j = NULL;
        }
    }
    if (!j) {
        if (ids != ids1)
            free(ids);
        take_all(fds);
        return NULL;
    }
    j->mode = mode;
    j->fnid = fnid;
    j->raise_first = raise_first;
    j->limit = INT64_MAX;
    j->kind = MPE_K_ENC;
    j->off = j->off1;
    j->offcap = 2;
    pthread_mutex_lock(&p->mu);
    if (intern_all(p, j, fds, ids) != 0) {
        seg_release(p, j, 1);
        pthread_mutex_unlock(&p->mu);
        mpe__buf_free(&j->items);
        free(j);
        j = NULL;
    } else {
        link_job(p, j);
        put_item(j, ids, k, s, n);
        publish_locked(p, j, 1);
        pthread_mutex_unlock(&p->mu);
    }
    if (ids != ids1)
        free(ids);
    return j;
}

static void set_limit(mpe_pool *p, mpe_job *j, int64_t limit)
{
    pthread_mutex_lock(&p->mu);
    j->limit = limit;
    publish_locked(p, j, 0);
    pthread_mutex_unlock(&p->mu);
}

void mpe__job_window(mpe_pool *p, mpe_job *j, int64_t window)
{
    j->window = window;
    set_limit(p, j, window);
}

void mpe__job_consumed(mpe_pool *p, mpe_job *j, int64_t n)
{
    /* limit is written by this (the main) thread only: read without the lock. */
    if (j->window > 0 && n + j->window - j->limit >= (j->window + 1) / 2)
        set_limit(p, j, n + j->window);
}

void mpe__job_abort(mpe_pool *p, mpe_job *j)
{
    pthread_mutex_lock(&p->mu);
    j->released = 1;
    j->cancelled = 1;
    unlist(p, j);
    maybe_free(p, j); /* at once unless chunks or messages still refer to it */
    pthread_mutex_unlock(&p->mu);
}

/* ---- after submission ------------------------------------------------------------- */

void mpe__job_cancel(mpe_pool *p, mpe_job *j)
{
    pthread_mutex_lock(&p->mu);
    j->cancelled = 1;
    pthread_mutex_unlock(&p->mu);
}

/* A job is withdrawn only if none of its items was ever cut into a chunk
 * (handed to a worker), none is waiting to be run again and none has an
 * outcome: then no worker runs any of it, no message for it will come, and
 * marking it cancelled makes the dispatcher skip it from now on. The check
 * and the mark are one step under the pool's lock, so the dispatcher cannot
 * hand out a chunk in between. */
int mpe__job_withdraw(mpe_pool *p, mpe_job *j)
{
    pthread_mutex_lock(&p->mu);
    int ok = !j->cancelled && !j->released && j->cut == 0 && !j->redo && j->done == 0;
    if (ok)
        j->cancelled = 1;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

void mpe__job_release(mpe_pool *p, mpe_job *j)
{
    pthread_mutex_lock(&p->mu);
    j->released = 1;
    j->cancelled = 1;
    /* Messages still queued for it are dropped by the reader (released jobs). */
    maybe_free(p, j);
    pthread_mutex_unlock(&p->mu);
}

int64_t mpe__job_count(const mpe_job *j)
{
    return j->count;
}

void mpe__job_set_tag(mpe_job *j, int tag)
{
    j->tag = tag;
}

int mpe__job_tag(const mpe_job *j)
{
    return j->tag;
}

int mpe__job_finished(const mpe_job *j)
{
    return j->finished;
}

/* ---- delivery (main thread; only it reads or writes these) -------------------------- */

void mpe__job_delivered(mpe_job *j, int64_t n)
{
    j->delivered += n;
}

int64_t mpe__job_ndelivered(const mpe_job *j)
{
    return j->delivered;
}

int mpe__job_all_delivered(const mpe_job *j)
{
    return j->finished && j->delivered >= j->count;
}

int64_t mpe__job_yield(mpe_job *j)
{
    return ++j->yielded;
}

int64_t mpe__job_yielded(const mpe_job *j)
{
    return j->yielded;
}

int64_t mpe__job_ahead(const mpe_job *j)
{
    return j->count - j->yielded;
}

int mpe__job_exhausted(const mpe_job *j)
{
    return j->finished && j->yielded >= j->count;
}

int64_t mpe__job_enqueue(mpe_job *j)
{
    return ++j->qtail;
}

int64_t mpe__job_dequeue(mpe_job *j)
{
    return j->qhead < j->qtail ? ++j->qhead : 0;
}

int mpe__job_running(const mpe_job *j)
{
    return !j->cancelled && !j->released;
}

int mpe__job_wanted(const mpe_job *j)
{
    return !j->released;
}

/* ---- cutting chunks (dispatcher) ----------------------------------------------------- */

double mpe__job_cost(const mpe_pool *p, const mpe_job *j)
{
    if (j->per_item_ns > 0)
        return j->per_item_ns;
    return p->cost_ns > 0 ? p->cost_ns : 1e6; /* unknown: assume 1 ms, so queues stay short */
}

/* Items of a new chunk for job j, at most avail. */
static int64_t chunk_size(const mpe_pool *p, const mpe_job *j, int64_t avail)
{
    int64_t n;
    if (j->chunksize > 0)
        n = j->chunksize;
    else if (j->per_item_ns <= 0) {
        /* A small first chunk to measure the cost, shared out between the
         * workers when the job is small (two items that wait for each other
         * must not land on one worker). */
        int64_t all = j->finished ? j->visible : avail; /* a share of the whole job */
        int64_t share = (all + p->n - 1) / p->n;
        n = share < 16 ? share : 16;
    } else {
        n = (int64_t)(TARGET_CHUNK_NS / j->per_item_ns);
        if (j->finished) { /* finer at the end, so the workers finish together */
            int64_t left = j->visible - j->cut;
            int64_t fair = (left + 2 * p->n - 1) / (2 * p->n);
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
        int64_t a = j->cut;
        while (n > 1 && j->off[a + n - j->base] - j->off[a - j->base] > MAX_CHUNK_BYTES)
            n /= 2;
    }
    return n;
}

int mpe__job_cut(mpe_pool *p, int busy, int64_t room, mpe_cut *c)
{
    mpe__job_prune(p);
    for (mpe_job *j = p->work; j; j = j->wnext) {
        if (!mpe__job_has_items(j))
            continue;
        mpe_range_redo *r = j->redo;
        c->job = j;
        c->suspect = 0;
        c->redo = r != NULL;
        if (r) {
            c->a = r->a;
            c->e = r->b;
            if (r->suspect) {
                /* Alone on an otherwise idle worker, so a death is its own. */
                if (busy)
                    return 0;
                c->e = c->a + 1;
                c->suspect = 1;
            } else if (j->chunksize > 0 && c->e - c->a > j->chunksize)
                c->e = c->a + j->chunksize;
        } else {
            c->a = j->cut;
            c->e = c->a + chunk_size(p, j, j->visible - j->cut);
        }
        if (room >= 0) {
            if (room == 0)
                return 0;
            if (c->e - c->a > room)
                c->e = c->a + room;
        }
        return 1;
    }
    return 0;
}

/* Queue the segments items [a, e) of j refer to that the worker lacks (at
 * most MPE_FRAMES_SEGS_MAX a frame, so that each frame's descriptors travel
 * in one sendmsg). */
static int queue_segs(mpe_pool *p, const mpe_cut *c, mpe_buf *out, unsigned char **has, size_t *hascap)
{
    mpe_job *j = c->job;
    if ((size_t)p->nsegs > *hascap) {
        size_t cap = (size_t)p->segcap;
        unsigned char *h = realloc(*has, cap);
        if (!h)
            return -1;
        memset(h + *hascap, 0, cap - *hascap);
        *has = h;
        *hascap = cap;
    }
    uint32_t ids[MPE_FRAMES_SEGS_MAX];
    int n = 0;
    for (int64_t i = c->a; i < c->e; i++) {
        const unsigned char *item;
        int k = mpe__frames_item_ids((const unsigned char *)j->items.p + j->off[i - j->base], &item);
        for (int q = 0; q < k; q++) {
            uint32_t id = mpe__frames_item_id(item, q);
            if (id >= (uint32_t)p->nsegs || (*has)[id] || p->segs[id].fd < 0)
                continue;
            (*has)[id] = 1;
            ids[n++] = id;
            if (n == MPE_FRAMES_SEGS_MAX) {
                if (mpe__frames_segs(out, ids, n) != 0)
                    return -1;
                n = 0;
            }
        }
    }
    if (n > 0 && mpe__frames_segs(out, ids, n) != 0)
        return -1;
    return 0;
}

int mpe__job_queue(mpe_pool *p, const mpe_cut *c, uint64_t chunk, mpe_buf *out, unsigned char **has,
                   size_t *hascap)
{
    mpe_job *j = c->job;
    if (j->nsegs > 0 && queue_segs(p, c, out, has, hascap) != 0)
        return -1;
    mpe_chunk_head h = {.chunk = chunk, .job = j->id, .fn = j->fnid, .mode = (unsigned)j->mode,
                        .kind = (unsigned)j->kind, .n = (uint32_t)(c->e - c->a), .first = (uint64_t)c->a};
    const void *payload = NULL;
    size_t plen = 0;
    switch (j->kind) {
    case MPE_K_RANGE:
        h.rstart = j->rstart + c->a * j->rstep;
        h.rstep = j->rstep;
        break;
    case MPE_K_INTS:
    case MPE_K_FLOATS:
        payload = j->items.p + 8 * (size_t)(c->a - j->base);
        plen = 8 * (size_t)(c->e - c->a);
        break;
    default:
        payload = j->items.p + j->off[c->a - j->base];
        plen = j->off[c->e - j->base] - j->off[c->a - j->base];
    }
    return mpe__frames_chunk(out, &h, payload, plen);
}

void mpe__job_take(mpe_pool *p, const mpe_cut *c)
{
    (void)p;
    mpe_job *j = c->job;
    if (c->redo) {
        mpe_range_redo *r = j->redo;
        r->a = c->e;
        if (r->a >= r->b) {
            j->redo = r->next;
            free(r);
        }
    } else
        j->cut = c->e;
    j->refs++;
}

/* ---- outcomes (dispatcher) ----------------------------------------------------------- */

void mpe__job_account(mpe_pool *p, mpe_job *j, int64_t n)
{
    j->done += n;
    if (j->finished && j->done >= j->visible)
        pthread_cond_broadcast(&p->cv);
}

void mpe__job_failed(mpe_job *j)
{
    if (j->raise_first)
        j->cancelled = 1;
}

void mpe__job_redo(mpe_pool *p, mpe_job *j, int64_t a, int64_t b, int suspect)
{
    if (a >= b || j->cancelled || j->released)
        return;
    mpe_range_redo *r = malloc(sizeof *r);
    if (!r)
        return; /* cannot happen in practice; the items then count as lost */
    r->a = a;
    r->b = b;
    r->suspect = suspect;
    r->next = j->redo;
    j->redo = r;
    mpe__job_enlist(p, j);
}

int mpe__job_retry(mpe_pool *p, mpe_job *j, int64_t i)
{
    if (p->o.retries <= 0 || j->cancelled || j->released)
        return 0;
    for (mpe_attempt *t = j->attempts; t; t = t->next)
        if (t->i == i) {
            if (t->n >= p->o.retries)
                return 0;
            t->n++;
            return 1;
        }
    mpe_attempt *t = malloc(sizeof *t);
    if (!t)
        return 0;
    t->i = i;
    t->n = 1;
    t->next = j->attempts;
    j->attempts = t;
    return 1;
}

void mpe__job_measured(mpe_pool *p, mpe_job *j, int64_t items, uint64_t ns)
{
    double per = items > 0 ? (double)ns / (double)items : 0;
    if (per <= 0)
        per = 1;
    j->per_item_ns = j->per_item_ns > 0 ? 0.5 * j->per_item_ns + 0.5 * per : per;
    p->cost_ns = p->cost_ns > 0 ? 0.8 * p->cost_ns + 0.2 * per : per;
}

void mpe__job_ref(mpe_job *j)
{
    j->refs++;
}

void mpe__job_unref(mpe_pool *p, mpe_job *j)
{
    j->refs--;
    maybe_free(p, j);
}
