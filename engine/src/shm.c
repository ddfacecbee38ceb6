/* shm.c -- shared memory segments (memfd), the per-process mapping cache, and
 * references to shared objects that travel with their descriptor.
 * SPDX-License-Identifier: MIT
 *
 * A segment is an anonymous memfd (MFD_CLOEXEC, sealed against resizing)
 * mapped MAP_SHARED: nothing is ever named in /dev/shm, and the kernel frees
 * the memory when the last descriptor and mapping are gone, crash or not.
 * Small objects (locks, values, short arrays) are cut from a slab segment
 * that this process fills with an atomic bump pointer and never reuses, so a
 * program with thousands of locks holds a few descriptors, not thousands;
 * large objects get a segment each. Lifetime is the mapping: no shared
 * reference count exists, because a process that dies cannot decrement it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "buf.h"
#include "err.h"
#include "fdio.h"
#include "shm.h"

#define SEG_MAGIC 0x5345504dU  /* "MPES" */
#define OBJ_MAGIC 0x4f42504dU  /* "MPBO" */
#define SEG_SLAB 1
#define SEG_SINGLE 2
#define SLAB_SIZE (64 * 1024)
#define SLAB_MAX_OBJECT 2048   /* larger objects get a segment of their own */
#define HDR_SIZE 64            /* segment header; objects start 64-byte aligned */
#define NBUCKETS 64

/* The header at offset 0 of every segment. */
typedef struct seg_hdr {
    uint32_t magic;
    uint32_t kind;    /* SEG_SLAB or SEG_SINGLE */
    uint64_t size;    /* bytes, the whole segment */
    uint64_t id;      /* creator pid << 32 | counter */
    uint32_t used;    /* slab: bytes handed out so far (atomic bump) */
    int32_t creator;
} seg_hdr;

/* A segment as this process maps it. */
struct mpe_seg {
    uint64_t id;
    dev_t dev;
    ino_t ino;
    int fd;
    unsigned char *base;
    size_t size;
    int refs;              /* live objects here, +1 while it is the current slab */
    mpe_shm_obj *objs;     /* live objects here, doubly linked */
    struct mpe_seg *next;  /* hash chain */
};

/* The cache is per process: a fork copies it along with the mappings it
 * describes, which is exactly right. The mutex only guards hosts that run
 * several lua_States in threads; mpe forks from a single thread. */
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mpe_seg *buckets[NBUCKETS];
static struct mpe_seg *current_slab;
static uint32_t id_counter;
static int nsegs, nobjs;

/* ---- this process's pid, cached and refreshed after fork ------------------- */

static pid_t self_pid;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void self_after_fork(void)
{
    self_pid = getpid();
}

static void self_init(void)
{
    self_pid = getpid();
    pthread_atfork(NULL, NULL, self_after_fork);
}

pid_t mpe__shm_self(void)
{
    pthread_once(&self_once, self_init);
    return self_pid;
}

/* ---- segments ---------------------------------------------------------------- */

static unsigned bucket_of(uint64_t id)
{
    return (unsigned)((id ^ (id >> 32)) * 2654435761u) % NBUCKETS;
}

static void seg_link(struct mpe_seg *s)
{
    unsigned b = bucket_of(s->id);
    s->next = buckets[b];
    buckets[b] = s;
    nsegs++;
}

static void seg_unlink(struct mpe_seg *s)
{
    struct mpe_seg **pp = &buckets[bucket_of(s->id)];
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp)
        *pp = s->next;
    nsegs--;
}

static struct mpe_seg *seg_find(uint64_t id, dev_t dev, ino_t ino)
{
    for (struct mpe_seg *s = buckets[bucket_of(id)]; s; s = s->next)
        if (s->id == id && s->dev == dev && s->ino == ino)
            return s;
    return NULL;
}

/* Unmap and close. The shared memory itself lives on in other processes. */
static void seg_free(struct mpe_seg *s)
{
    if (s->base)
        munmap(s->base, s->size);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

static void seg_unref(struct mpe_seg *s)
{
    if (--s->refs > 0)
        return;
    seg_unlink(s);
    seg_free(s);
}

/* Create and map a fresh, zero-filled segment of size bytes. */
static struct mpe_seg *seg_create(uint32_t kind, size_t size, mpe_err *e)
{
    struct mpe_seg *s = calloc(1, sizeof *s);
    if (!s) {
        mpe__seterr(e, "out of memory");
        return NULL;
    }
    s->fd = -1;
    s->fd = memfd_create(kind == SEG_SLAB ? "mpe-slab" : "mpe-object",
                         MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (s->fd < 0) {
        mpe__seterr(e, "memfd_create: %s", strerror(errno));
        goto fail;
    }
    if (ftruncate(s->fd, (off_t)size) != 0) {
        mpe__seterr(e, "ftruncate(memfd, %zu): %s", size, strerror(errno));
        goto fail;
    }
    /* Nobody may resize it later: a shrink would turn accesses into SIGBUS. */
    if (fcntl(s->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        mpe__seterr(e, "fcntl(memfd, F_ADD_SEALS): %s", strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(s->fd, &st) != 0) {
        mpe__seterr(e, "fstat(memfd): %s", strerror(errno));
        goto fail;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
    if (p == MAP_FAILED) {
        mpe__seterr(e, "mmap(%zu bytes): %s", size, strerror(errno));
        goto fail;
    }
    s->base = p;
    s->size = size;
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->id = ((uint64_t)(uint32_t)mpe__shm_self() << 32) | ++id_counter;
    seg_hdr *h = (seg_hdr *)s->base;
    h->magic = SEG_MAGIC;
    h->kind = kind;
    h->size = size;
    h->id = s->id;
    h->used = HDR_SIZE;
    h->creator = mpe__shm_self();
    seg_link(s);
    return s;
fail:
    seg_free(s);
    return NULL;
}

/* Map a segment received as a descriptor (not yet in the cache). Takes a
 * duplicate of fd, so the caller's descriptor stays the caller's. */
static struct mpe_seg *seg_attach(int fd, const struct stat *st, uint64_t id, mpe_err *e)
{
    if (st->st_size < HDR_SIZE || (uint64_t)st->st_size > (uint64_t)SIZE_MAX / 2) {
        mpe__seterr(e, "shared segment has a bad size (%lld bytes)", (long long)st->st_size);
        return NULL;
    }
    struct mpe_seg *s = calloc(1, sizeof *s);
    if (!s) {
        mpe__seterr(e, "out of memory");
        return NULL;
    }
    s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (s->fd < 0) {
        mpe__seterr(e, "fcntl(F_DUPFD_CLOEXEC): %s", strerror(errno));
        goto fail;
    }
    size_t size = (size_t)st->st_size;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
    if (p == MAP_FAILED) {
        mpe__seterr(e, "mmap(%zu bytes): %s", size, strerror(errno));
        goto fail;
    }
    s->base = p;
    s->size = size;
    const seg_hdr *h = (const seg_hdr *)s->base;
    if (h->magic != SEG_MAGIC || h->id != id || h->size != size) {
        mpe__seterr(e, "descriptor is not the shared segment it was sent as");
        goto fail;
    }
    s->id = id;
    s->dev = st->st_dev;
    s->ino = st->st_ino;
    seg_link(s);
    return s;
fail:
    seg_free(s);
    return NULL;
}

/* ---- objects ------------------------------------------------------------------- */

static mpe_shm_obj *obj_find(struct mpe_seg *s, size_t off)
{
    for (mpe_shm_obj *o = s->objs; o; o = o->next)
        if (o->off == off)
            return o;
    return NULL;
}

static mpe_shm_obj *obj_add(struct mpe_seg *s, size_t off, mpe_err *e)
{
    mpe_shm_obj *o = calloc(1, sizeof *o);
    if (!o) {
        mpe__seterr(e, "out of memory");
        return NULL;
    }
    const mpe_shm_objhdr *h = (const mpe_shm_objhdr *)(s->base + off);
    o->seg = s;
    o->off = off;
    o->p = s->base + off;
    o->kind = h->kind;
    o->creator = h->creator;
    o->refs = 1;
    o->next = s->objs;
    if (s->objs)
        s->objs->prev = o;
    s->objs = o;
    s->refs++;
    nobjs++;
    return o;
}

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

/* Cut size bytes (already rounded) from the current slab, making a new slab
 * when it is full. The bump is atomic: after a fork, parent and child share
 * the slab and must never be handed the same bytes. */
static struct mpe_seg *slab_take(size_t size, size_t *off, mpe_err *e)
{
    for (int tries = 0; tries < 2; tries++) {
        if (!current_slab) {
            current_slab = seg_create(SEG_SLAB, SLAB_SIZE, e);
            if (!current_slab)
                return NULL;
            current_slab->refs = 1;
        }
        seg_hdr *h = (seg_hdr *)current_slab->base;
        uint32_t at = __atomic_fetch_add(&h->used, (uint32_t)size, __ATOMIC_RELAXED);
        if ((size_t)at + size <= SLAB_SIZE) {
            *off = at;
            return current_slab;
        }
        struct mpe_seg *full = current_slab;
        current_slab = NULL;
        seg_unref(full);
    }
    mpe__seterr(e, "cannot place a %zu-byte object in a slab", size);
    return NULL;
}

mpe_shm_obj *mpe__shm_new(uint32_t kind, size_t size, mpe_err *e)
{
    if (size < sizeof(mpe_shm_objhdr) || size > (SIZE_MAX >> 2)) {
        mpe__seterr(e, "cannot allocate a shared object of %zu bytes", size);
        return NULL;
    }
    size_t rounded = round_up(size, HDR_SIZE);
    struct mpe_seg *s;
    size_t off = HDR_SIZE;
    mpe_shm_obj *o = NULL;
    pthread_mutex_lock(&cache_mu);
    if (rounded <= SLAB_MAX_OBJECT) {
        s = slab_take(rounded, &off, e);
    } else {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        s = seg_create(SEG_SINGLE, round_up(HDR_SIZE + rounded, page), e);
    }
    if (!s)
        goto done;
    mpe_shm_objhdr *h = (mpe_shm_objhdr *)(s->base + off);
    h->magic = OBJ_MAGIC;
    h->kind = kind;
    h->size = size;
    h->creator = mpe__shm_self();
    o = obj_add(s, off, e);
    if (!o && s->refs == 0) {
        seg_unlink(s);
        seg_free(s);
    }
done:
    pthread_mutex_unlock(&cache_mu);
    return o;
}

void mpe__shm_ref(mpe_shm_obj *o)
{
    pthread_mutex_lock(&cache_mu);
    o->refs++;
    pthread_mutex_unlock(&cache_mu);
}

void mpe__shm_unref(mpe_shm_obj *o)
{
    pthread_mutex_lock(&cache_mu);
    if (--o->refs == 0) {
        struct mpe_seg *s = o->seg;
        if (o->prev)
            o->prev->next = o->next;
        else
            s->objs = o->next;
        if (o->next)
            o->next->prev = o->prev;
        free(o);
        nobjs--;
        seg_unref(s);
    }
    pthread_mutex_unlock(&cache_mu);
}

size_t mpe__shm_size(const mpe_shm_obj *o)
{
    return ((const mpe_shm_objhdr *)o->p)->size;
}

/* ---- references that travel --------------------------------------------------
 * Wire form: u64 segment id, u64 offset, u32 kind, u32 descriptor slot. A
 * duplicate of the segment's descriptor is appended to fds once per message
 * however many objects of the segment the message holds; whoever sends the
 * message closes it afterwards. */

#define REF_BYTES 24

int mpe__shm_ref_write(const mpe_shm_obj *o, mpe_buf *b, mpe_fds *fds, mpe_err *e)
{
    if (!fds)
        return mpe__seterr(e, "no descriptor channel");
    /* One descriptor per segment per message: a slab holds many objects. */
    struct mpe_seg *s = o->seg;
    int slot = 0;
    for (; slot < fds->n; slot++) {
        struct stat st;
        if (fstat(fds->fd[slot], &st) == 0 && st.st_ino == s->ino && st.st_dev == s->dev)
            break;
    }
    if (slot == fds->n) {
        /* A duplicate the message owns: the object may be collected (closing
         * its own descriptor) before the message is sent. */
        int d = fcntl(s->fd, F_DUPFD_CLOEXEC, 0);
        if (d < 0)
            return mpe__seterr(e, "fcntl(F_DUPFD_CLOEXEC): %s", strerror(errno));
        if (mpe__fds_add(fds, d) != 0)
            return mpe__seterr(e, "out of memory for a message's descriptors");
    }
    if (mpe__buf_grow(b, REF_BYTES) != 0)
        return mpe__seterr(e, "out of memory");
    uint64_t v[2] = {o->seg->id, o->off};
    uint32_t w[2] = {o->kind, (uint32_t)slot};
    unsigned char *p = (unsigned char *)b->p + b->n;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 8; i++)
            *p++ = (unsigned char)(v[k] >> (8 * i));
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 4; i++)
            *p++ = (unsigned char)(w[k] >> (8 * i));
    b->n += REF_BYTES;
    return 0;
}

mpe_shm_obj *mpe__shm_ref_read(mpe_rd *r, mpe_fds *fds, uint32_t kind, mpe_err *e)
{
    uint64_t id, off;
    uint32_t k, slot;
    if (mpe__rd_u64(r, &id) || mpe__rd_u64(r, &off) || mpe__rd_u32(r, &k) || mpe__rd_u32(r, &slot)) {
        mpe__seterr(e, "truncated shared object reference");
        return NULL;
    }
    if (k != kind) {
        mpe__seterr(e, "shared object reference of kind %u where kind %u was expected", k, kind);
        return NULL;
    }
    if (!fds || slot >= (uint32_t)fds->n || fds->fd[slot] < 0) {
        mpe__seterr(e, "the shared object's descriptor did not arrive with the message");
        return NULL;
    }
    struct stat st;
    if (fstat(fds->fd[slot], &st) != 0) {
        mpe__seterr(e, "fstat(shared segment): %s", strerror(errno));
        return NULL;
    }
    mpe_shm_obj *o = NULL;
    pthread_mutex_lock(&cache_mu);
    /* The inode tells apart two segments whose ids collide after pid reuse:
     * the cache holds the descriptor open, so its inode cannot be recycled. */
    struct mpe_seg *s = seg_find(id, st.st_dev, st.st_ino);
    int fresh = 0;
    if (!s) {
        s = seg_attach(fds->fd[slot], &st, id, e);
        if (!s)
            goto done;
        fresh = 1;
    }
    o = obj_find(s, (size_t)off);
    if (o) {
        o->refs++;
        goto done;
    }
    const mpe_shm_objhdr *h = (const mpe_shm_objhdr *)(s->base + (off < s->size ? off : 0));
    if (off % HDR_SIZE != 0 || off < HDR_SIZE || off > s->size - sizeof *h ||
        h->magic != OBJ_MAGIC || h->kind != kind || h->size > s->size - off) {
        mpe__seterr(e, "malformed shared object reference (offset %llu)", (unsigned long long)off);
        goto done;
    }
    o = obj_add(s, (size_t)off, e);
done:
    if (!o && fresh && s->refs == 0) {
        seg_unlink(s);
        seg_free(s);
    }
    pthread_mutex_unlock(&cache_mu);
    return o;
}

uint64_t mpe__shm_id(const mpe_shm_obj *o)
{
    return o->seg->id;
}

void mpe__shm_stats(int *segments, int *objects)
{
    pthread_mutex_lock(&cache_mu);
    if (segments)
        *segments = nsegs;
    if (objects)
        *objects = nobjs;
    pthread_mutex_unlock(&cache_mu);
}
