/* dict.c -- mpe.dict's engine: a hash table shared by processes, in a memfd
 * that grows, guarded by a robust process-shared mutex.
 * SPDX-License-Identifier: MIT
 *
 * The lock and the table's layout live in a small shm.c object; the table
 * itself lives in a separate memfd, because it must grow and shm.c segments
 * are sealed at their size. The file only grows (F_SEAL_SHRINK: a mapping
 * never faults); a process that finds it longer than its mapping remaps
 * under the lock. A region of the file holds an open-addressing index of
 * 64-bit slots (0 empty, 1 deleted, else a record's offset in the heap and 24
 * bits of its hash) followed by a heap of records [u64 hash][u32 key
 * length][u32 value length][key][value], appended and never changed in place.
 *
 * Crash safety without a log: every change ends in one aligned store. A set
 * appends its record, advances the heap's use, then stores the slot; a
 * delete stores a tombstone; a rebuild (to grow, or to drop garbage) writes a
 * whole new region where the current one is not, then switches `cur`. A
 * process that dies holding the lock has either made its store or left the
 * table as it was; the next holder (EOWNERDEAD) only recounts the derived
 * counters from the index. A replaced region's pages are given back with a
 * punched hole, so the memory held follows the live data, not its peak. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "buf.h"
#include "dict.h"
#include "err.h"
#include "ipc.h"
#include "shm.h"
#include "sync.h"
#include "waitctl.h"

#define EMPTY 0
#define TOMB 1
#define OFF_BITS 40
#define OFF_MASK ((UINT64_C(1) << OFF_BITS) - 1)
#define REC_HDR 16
#define MIN_SLOTS 64
#define MIN_HEAP 4096
#define PAGE 4096
#define INITIAL_FILE (16 * 1024)

typedef struct dict_layout {
    uint64_t base;   /* region start in the file (page aligned): the index */
    uint64_t nslots; /* a power of two */
    uint64_t heap;   /* base + nslots * 8 */
    uint64_t cap;    /* heap bytes */
    uint64_t used;   /* heap bytes handed out; records start at 8 (0 is EMPTY) */
} dict_layout;

typedef struct dict_shm {
    mpe_shm_objhdr h;
    pthread_mutex_t m;
    uint64_t file_size; /* bytes of the data file: only grows */
    uint32_t cur;       /* lay[cur] is the table; switching it commits a rebuild */
    uint32_t pad;
    dict_layout lay[2];
    uint64_t count;   /* live keys (these three are recounted by repair) */
    uint64_t tombs;   /* deleted slots */
    uint64_t garbage; /* heap bytes of replaced and deleted records */
} dict_shm;

/* This process's view of the data file (o->data). */
typedef struct dlocal {
    int fd;
    unsigned char *base;
    size_t size; /* mapped bytes */
} dlocal;

typedef struct rec {
    uint64_t hash;
    uint32_t klen, vlen;
} rec;

static uint64_t pad8(uint64_t n)
{
    return (n + 7) & ~(uint64_t)7;
}

static uint64_t page_up(uint64_t n)
{
    return (n + PAGE - 1) & ~(uint64_t)(PAGE - 1);
}

/* Deterministic across processes (no per-process seed): every process must
 * find a key in the same slot. */
static uint64_t hash_bytes(const void *k, size_t n)
{
    const unsigned char *p = k;
    uint64_t h = UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * UINT64_C(0xff51afd7ed558ccd);
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, n);
    h = (h ^ v) * UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 29;
    h *= UINT64_C(0x9e3779b97f4a7c15);
    h ^= h >> 32;
    return h;
}

/* Give the pages of [off, off + len) back (the file keeps its size). */
static void punch(int fd, uint64_t off, uint64_t len)
{
    if (len > 0)
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
}

static uint64_t region_end(const dict_layout *y)
{
    return y->base + page_up(y->nslots * 8 + y->cap);
}

static void dlocal_free(dlocal *l)
{
    if (!l)
        return;
    if (l->base)
        munmap(l->base, l->size);
    if (l->fd >= 0)
        close(l->fd);
    free(l);
}

/* Map at least size bytes of the file. 0, or -1 with e set. */
static int remap(dlocal *l, size_t size, mpe_err *e)
{
    if (l->base && l->size >= size)
        return 0;
    void *p = l->base ? mremap(l->base, l->size, size, MREMAP_MAYMOVE)
                      : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, l->fd, 0);
    if (p == MAP_FAILED)
        return mpe__seterr(e, "mmap(dict, %zu bytes): %s", size, strerror(errno));
    l->base = p;
    l->size = size;
    return 0;
}

static dict_layout *lay(dict_shm *d)
{
    return &d->lay[d->cur];
}

static uint64_t *slots(const dlocal *l, const dict_layout *y)
{
    return (uint64_t *)(l->base + y->base);
}

static rec *rec_at(const dlocal *l, const dict_layout *y, uint64_t slot)
{
    return (rec *)(l->base + y->heap + (slot & OFF_MASK));
}

static uint64_t rec_bytes(const rec *r)
{
    return pad8(REC_HDR + (uint64_t)r->klen + r->vlen);
}

/* ---- creation and references ----------------------------------------------------- */

mpe_shm_obj *mpe__dict_new(mpe_err *e)
{
    mpe_shm_obj *o = NULL;
    dlocal *l = calloc(1, sizeof *l);
    if (!l) {
        mpe__seterr(e, "out of memory");
        return NULL;
    }
    l->fd = memfd_create("mpe-dict", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (l->fd < 0) {
        mpe__seterr(e, "memfd_create: %s", strerror(errno));
        goto fail;
    }
    if (ftruncate(l->fd, INITIAL_FILE) != 0) {
        mpe__seterr(e, "ftruncate(memfd, %d): %s", INITIAL_FILE, strerror(errno));
        goto fail;
    }
    /* It may grow, never shrink: a shrink would make mappings fault. */
    if (fcntl(l->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
        mpe__seterr(e, "fcntl(memfd, F_ADD_SEALS): %s", strerror(errno));
        goto fail;
    }
    if (remap(l, INITIAL_FILE, e) != 0)
        goto fail;
    o = mpe__shm_new(MPE_SHM_DICT, sizeof(dict_shm), e);
    if (!o)
        goto fail;
    dict_shm *d = o->p;
    if (mpe__sync_mutex_init(&d->m, 1, e) != 0)
        goto fail;
    d->file_size = INITIAL_FILE;
    dict_layout *y = &d->lay[0];
    y->base = 0;
    y->nslots = MIN_SLOTS;
    y->heap = MIN_SLOTS * 8;
    y->cap = INITIAL_FILE - y->heap;
    y->used = 8;
    o->data = l;
    return o;
fail:
    if (o)
        mpe__shm_unref(o);
    dlocal_free(l);
    return NULL;
}

/* Wire form after the shm.c reference: the data file, as mpe__ipc_fd_write writes it. */
int mpe__dict_ref_write(const mpe_shm_obj *o, mpe_buf *b, mpe_fds *fds, mpe_err *e)
{
    const dlocal *l = o->data;
    if (mpe__shm_ref_write(o, b, fds, e) != 0)
        return -1;
    return mpe__ipc_fd_write(l->fd, b, fds, e);
}

mpe_shm_obj *mpe__dict_ref_read(mpe_rd *r, mpe_fds *fds, mpe_err *e)
{
    mpe_shm_obj *o = mpe__shm_ref_read(r, fds, MPE_SHM_DICT, e);
    if (!o)
        return NULL;
    if (mpe__shm_size(o) < sizeof(dict_shm)) {
        mpe__seterr(e, "malformed shared dict");
        goto fail;
    }
    int fd = mpe__ipc_fd_read(r, fds, S_IFREG, e);
    if (fd < 0)
        goto fail;
    if (o->data) { /* this process has the dict already */
        close(fd);
        return o;
    }
    dlocal *l = calloc(1, sizeof *l);
    if (!l) {
        close(fd);
        mpe__seterr(e, "out of memory");
        goto fail;
    }
    l->fd = fd;
    o->data = l; /* mapped at the first lock */
    return o;
fail:
    mpe__dict_drop(o);
    return NULL;
}

void mpe__dict_drop(mpe_shm_obj *o)
{
    if (o->refs == 1) {
        dlocal_free(o->data);
        o->data = NULL;
    }
    mpe__shm_unref(o);
}

/* ---- locking and repair ---------------------------------------------------------------- */

/* The counters are derived: recount them from the index after a holder died
 * (its last store made the index consistent, the counters maybe not), and
 * free the pages outside the current region (a rebuild may have died before
 * doing so). */
static void recount(dict_shm *d, const dlocal *l)
{
    dict_layout *y = lay(d);
    uint64_t *s = slots(l, y), live = 0, tombs = 0, bytes = 8;
    for (uint64_t i = 0; i < y->nslots; i++) {
        if (s[i] == TOMB) {
            tombs++;
        } else if (s[i] != EMPTY) {
            live++;
            bytes += rec_bytes(rec_at(l, y, s[i]));
        }
    }
    d->count = live;
    d->tombs = tombs;
    d->garbage = y->used > bytes ? y->used - bytes : 0;
    punch(l->fd, 0, y->base);
    punch(l->fd, region_end(y), d->file_size - region_end(y));
}

int mpe__dict_lock(mpe_shm_obj *o, const mpe_waitctl *w, mpe_err *e)
{
    dict_shm *d = o->p;
    dlocal *l = o->data;
    int r = mpe__ipc_lock(&d->m, -1, w, e);
    if (r != MPE_WAIT_OK && r != MPE_WAIT_OWNERDEAD)
        return r;
    if (remap(l, (size_t)d->file_size, e) != 0) {
        if (r == MPE_WAIT_OWNERDEAD)
            mpe__ipc_consistent(&d->m);
        mpe__ipc_unlock(&d->m);
        return MPE_WAIT_ERROR;
    }
    if (r == MPE_WAIT_OWNERDEAD) {
        recount(d, l);
        mpe__ipc_consistent(&d->m);
    }
    return MPE_WAIT_OK;
}

void mpe__dict_unlock(mpe_shm_obj *o)
{
    mpe__ipc_unlock(&((dict_shm *)o->p)->m);
}

/* ---- the table ----------------------------------------------------------------------------- */

/* The slot holding key k, or NULL; *hole is where it would go (the first
 * tombstone on its path, or the empty slot that ended it). */
static uint64_t *lookup(dict_shm *d, const dlocal *l, const void *k, size_t kn, uint64_t h,
                        uint64_t **hole)
{
    dict_layout *y = lay(d);
    uint64_t *s = slots(l, y), mask = y->nslots - 1, tag = h >> OFF_BITS;
    *hole = NULL;
    for (uint64_t i = h & mask, n = 0; n < y->nslots; i = (i + 1) & mask, n++) {
        uint64_t v = s[i];
        if (v == EMPTY) {
            if (!*hole)
                *hole = &s[i];
            return NULL;
        }
        if (v == TOMB) {
            if (!*hole)
                *hole = &s[i];
            continue;
        }
        if ((v >> OFF_BITS) != tag)
            continue;
        const rec *r = rec_at(l, y, v);
        if (r->hash == h && r->klen == kn && memcmp(r + 1, k, kn) == 0)
            return &s[i];
    }
    return NULL;
}

int mpe__dict_find(mpe_shm_obj *o, const void *k, size_t kn, const void **v, size_t *vn)
{
    dict_shm *d = o->p;
    const dlocal *l = o->data;
    uint64_t *hole, *s = lookup(d, l, k, kn, hash_bytes(k, kn), &hole);
    if (!s)
        return 0;
    const rec *r = rec_at(l, lay(d), *s);
    *v = (const unsigned char *)(r + 1) + r->klen;
    *vn = r->vlen;
    return 1;
}

static void insert_slot(uint64_t *s, uint64_t nslots, uint64_t h, uint64_t v)
{
    uint64_t mask = nslots - 1, i = h & mask;
    while (s[i] != EMPTY)
        i = (i + 1) & mask;
    s[i] = v;
}

/* Write a fresh region holding the live records (none if !keep) with room
 * for `need` more heap bytes and one more key, then switch to it. The
 * current region is left untouched until the switch, so a crash anywhere
 * before it loses nothing. 0, or -1 with e set (the dict unchanged). */
static int rebuild(dict_shm *d, dlocal *l, uint64_t need, int keep, mpe_err *e)
{
    dict_layout *y = lay(d), ny;
    uint64_t *s = slots(l, y), live = 0, bytes = 8;
    if (keep)
        for (uint64_t i = 0; i < y->nslots; i++)
            if (s[i] != EMPTY && s[i] != TOMB) {
                live++;
                bytes += rec_bytes(rec_at(l, y, s[i]));
            }
    ny.nslots = MIN_SLOTS;
    while (ny.nslots < (live + 1) * 4)
        ny.nslots *= 2;
    ny.cap = 2 * (bytes + need);
    if (ny.cap < MIN_HEAP)
        ny.cap = MIN_HEAP;
    if (ny.cap + ny.nslots * 8 > OFF_MASK)
        return mpe__seterr(e, "the dict would exceed %llu bytes", (unsigned long long)OFF_MASK);
    uint64_t region = page_up(ny.nslots * 8 + ny.cap);
    ny.base = region <= y->base ? 0 : region_end(y);
    ny.heap = ny.base + ny.nslots * 8;
    ny.used = 8;
    if (ny.base + region > d->file_size) {
        uint64_t size = ny.base + region;
        if (ftruncate(l->fd, (off_t)size) != 0)
            return mpe__seterr(e, "ftruncate(dict, %llu bytes): %s", (unsigned long long)size,
                               strerror(errno));
        d->file_size = size;
        if (remap(l, (size_t)size, e) != 0)
            return -1;
        y = lay(d);
        s = slots(l, y);
    }
    uint64_t *ns = slots(l, &ny);
    memset(ns, 0, ny.nslots * 8);
    if (keep)
        for (uint64_t i = 0; i < y->nslots; i++) {
            if (s[i] == EMPTY || s[i] == TOMB)
                continue;
            const rec *r = rec_at(l, y, s[i]);
            uint64_t n = rec_bytes(r);
            memcpy(l->base + ny.heap + ny.used, r, n);
            insert_slot(ns, ny.nslots, r->hash, (r->hash >> OFF_BITS) << OFF_BITS | ny.used);
            ny.used += n;
        }
    mpe__ipc_crash(MPE_CRASH_DICT_REBUILT);
    d->lay[1 - d->cur] = ny;
    __atomic_store_n(&d->cur, 1 - d->cur, __ATOMIC_RELEASE); /* the commit */
    d->count = live;
    d->tombs = 0;
    d->garbage = 0;
    punch(l->fd, y->base, region_end(y) - y->base); /* nobody reads the old region now */
    return 0;
}

int mpe__dict_set(mpe_shm_obj *o, const void *k, size_t kn, const void *v, size_t vn, mpe_err *e)
{
    dict_shm *d = o->p;
    dlocal *l = o->data;
    if (kn > UINT32_MAX || vn > UINT32_MAX)
        return mpe__seterr(e, "a key or value of more than 4 GiB");
    uint64_t h = hash_bytes(k, kn), need = pad8(REC_HDR + (uint64_t)kn + vn), *hole;
    uint64_t *s = lookup(d, l, k, kn, h, &hole);
    dict_layout *y = lay(d);
    int full = !s && (!hole || (d->count + d->tombs + 1) * 2 > y->nslots);
    if (full || y->used + need > y->cap) {
        if (rebuild(d, l, need, 1, e) != 0)
            return -1;
        y = lay(d);
        s = lookup(d, l, k, kn, h, &hole);
    }
    rec *r = (rec *)(l->base + y->heap + y->used);
    r->hash = h;
    r->klen = (uint32_t)kn;
    r->vlen = (uint32_t)vn;
    memcpy(r + 1, k, kn);
    memcpy((unsigned char *)(r + 1) + kn, v, vn);
    uint64_t at = y->used;
    y->used += need;
    mpe__ipc_crash(MPE_CRASH_DICT_WRITTEN);
    uint64_t slot = (h >> OFF_BITS) << OFF_BITS | at;
    if (s) {
        uint64_t old = rec_bytes(rec_at(l, y, *s));
        __atomic_store_n(s, slot, __ATOMIC_RELEASE);
        d->garbage += old;
    } else {
        int was_tomb = *hole == TOMB;
        __atomic_store_n(hole, slot, __ATOMIC_RELEASE);
        d->count++;
        if (was_tomb)
            d->tombs--;
    }
    return 0;
}

int mpe__dict_delete(mpe_shm_obj *o, const void *k, size_t kn)
{
    dict_shm *d = o->p;
    const dlocal *l = o->data;
    uint64_t *hole, *s = lookup(d, l, k, kn, hash_bytes(k, kn), &hole);
    if (!s)
        return 0;
    uint64_t old = rec_bytes(rec_at(l, lay(d), *s));
    __atomic_store_n(s, (uint64_t)TOMB, __ATOMIC_RELEASE);
    d->count--;
    d->tombs++;
    d->garbage += old;
    return 1;
}

size_t mpe__dict_count(mpe_shm_obj *o)
{
    return (size_t)((dict_shm *)o->p)->count;
}

int mpe__dict_next(mpe_shm_obj *o, size_t *pos, const void **k, size_t *kn, const void **v,
                   size_t *vn)
{
    dict_shm *d = o->p;
    const dlocal *l = o->data;
    dict_layout *y = lay(d);
    uint64_t *s = slots(l, y);
    for (uint64_t i = *pos; i < y->nslots; i++) {
        if (s[i] == EMPTY || s[i] == TOMB)
            continue;
        const rec *r = rec_at(l, y, s[i]);
        *k = r + 1;
        *kn = r->klen;
        *v = (const unsigned char *)(r + 1) + r->klen;
        *vn = r->vlen;
        *pos = (size_t)i + 1;
        return 1;
    }
    *pos = (size_t)y->nslots;
    return 0;
}

int mpe__dict_clear(mpe_shm_obj *o, mpe_err *e)
{
    return rebuild(o->p, o->data, 0, 0, e);
}
