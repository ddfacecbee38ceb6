/* queue.c -- mpe.queue's engine: a FIFO of byte records in a shared ring that
 * grows and shrinks, with a descriptor channel for items that carry shared
 * objects.
 * SPDX-License-Identifier: MIT
 *
 * The queue's locks, counters and futex words are one small shm.c object; the
 * ring lives in a memfd of its own that may grow (never shrink: mappings
 * never fault). Two robust process-shared mutexes, one for putters and one
 * for getters (a two-lock queue): a producer and a consumer never wait for
 * each other, and the fields each side writes sit on cache lines of their
 * own. Positions are monotonic byte counts; the ring maps position p to
 * offset (p - origin) mod cap.
 *
 * Every step that changes the queue ends in ONE aligned store, its commit:
 * put writes the record past the tail and then moves the tail; get copies the
 * record out and then moves the head; a relocation (holding both locks: the
 * ring is full, so a ring twice the size; or the queue drained, so back to the
 * first size) copies the records into a part of the file the current ring
 * does not use and then switches `cur`, after which the old part's pages are
 * freed (a punched hole). A process that dies holding a lock has either
 * committed its step or left nothing visible; the next holder (told by
 * EOWNERDEAD) takes both locks and recounts: the records between head and
 * tail carry their item numbers, from which the counters follow.
 *
 * Items larger than 256 KiB (a quarter of the first ring, if smaller) spill
 * into a sealed memfd of their own. Descriptors (shared objects inside an
 * item, a spilled item's memfd) travel over a SOCK_DGRAM socketpair created
 * with the queue, which every process that has the queue holds both ends of.
 * Under the put lock a putter sends one message [u64 seq] with the
 * descriptors attached and then commits a record naming seq; under the get
 * lock a getter PEEKs the message (receiving duplicates), commits, and only
 * then removes it. Messages are numbered before they are sent, so one that a
 * dead process left behind has a smaller number than any later record wants,
 * and the getter that meets it first drops it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "buf.h"
#include "err.h"
#include "fdio.h"
#include "ipc.h"
#include "proc.h"
#include "queue.h"
#include "shm.h"
#include "sync.h"
#include "waitctl.h"

#define DEFAULT_BYTES (UINT64_C(1) << 20) /* the first ring */
#define MIN_BYTES (UINT64_C(1) << 12)
#define MAX_BYTES (UINT64_C(1) << 32)     /* the ring grows to this at most */
#define SPILL_AT (256u * 1024)
#define REC_HDR 24
#define REC_MAGIC 0xa510u  /* in flags: the record header is one */
#define REC_SPILL 0x0001u  /* the payload is in a memfd that came with the descriptors */
#define GET_SPINS 2000     /* polls of an empty queue before sleeping */

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

typedef struct rec_hdr {
    uint32_t len;   /* payload bytes (in the ring, or in the spilled memfd) */
    uint16_t nfds;  /* descriptors in channel message seq */
    uint16_t flags; /* REC_MAGIC | REC_SPILL */
    uint64_t seq;
    uint64_t idx;   /* the item's number: items put before it */
} rec_hdr;

/* Where the ring is in the data file. */
typedef struct qlayout {
    uint64_t base;   /* page aligned */
    uint64_t cap;    /* a power of two */
    uint64_t origin; /* the position at offset 0 */
} qlayout;

typedef struct queue_shm {
    mpe_shm_objhdr h;
    uint64_t file_size; /* bytes of the data file: only grows (both locks) */
    uint64_t initial;   /* the first ring's size, returned to when drained */
    uint64_t maxsize;   /* items; 0: unbounded */
    qlayout lay[2];
    uint32_t cur;       /* lay[cur] is the ring; switching it commits a relocation */
    uint32_t closed;
    /* The putters' side. */
    _Alignas(64) pthread_mutex_t put_m;
    uint64_t tail;      /* after the newest record: put's commit */
    uint64_t puts;      /* items put so far (recounted by repair) */
    uint64_t seq;       /* last channel message number handed out */
    uint32_t items;     /* futex: bumped when an item comes or the queue closes; SLEEPERS bit */
    uint32_t pad1;
    /* The getters' side. */
    _Alignas(64) pthread_mutex_t get_m;
    uint64_t head;      /* the oldest record: get's commit */
    uint64_t takes;     /* items taken so far (recounted by repair) */
    uint32_t space;     /* futex: bumped when an item goes or the queue closes; SLEEPERS bit */
    uint32_t pad2;
} queue_shm;

/* This process's side of a queue (o->data). */
typedef struct qlocal {
    int sock[2];         /* the descriptor channel: [0] sent on, [1] received from */
    int fd;              /* the data file */
    unsigned char *base; /* its mapping */
    size_t size;
} qlocal;

enum { PUT, GET };

/* The futex words `items` and `space` count changes in their low 31 bits;
 * bit 31 says that someone sleeps on the word. A sleeper sets it, and the
 * next bump clears it and wakes everyone: one wake-up call per sleep, not
 * one per item. */
#define SLEEPERS 0x80000000u

/* Bump a futex word; wake its sleepers if there were any. */
static void bump(uint32_t *word)
{
    uint32_t old = __atomic_load_n(word, __ATOMIC_RELAXED), next;
    do
        next = (old + 1) & ~SLEEPERS;
    while (!__atomic_compare_exchange_n(word, &old, next, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    if (old & SLEEPERS)
        mpe__ipc_futex_wake(word, INT_MAX);
}

/* Announce a sleeper on word and return the value to sleep on. The caller
 * then looks at the queue again before sleeping: a bump after this is either
 * seen there or makes the futex wait return at once. */
static uint32_t announce(uint32_t *word)
{
    return __atomic_fetch_or(word, SLEEPERS, __ATOMIC_SEQ_CST) | SLEEPERS;
}

static size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static size_t rec_size(const rec_hdr *h)
{
    return REC_HDR + ((h->flags & REC_SPILL) ? 0 : pad8(h->len));
}

static int rec_ok(const rec_hdr *h)
{
    return (h->flags & 0xfff0u) == REC_MAGIC;
}

static qlayout *cur(queue_shm *q)
{
    return &q->lay[q->cur];
}

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void ring_write(const qlocal *l, const qlayout *y, uint64_t pos, const void *p, size_t n)
{
    unsigned char *r = l->base + y->base;
    size_t at = (size_t)((pos - y->origin) & (y->cap - 1)), first = (size_t)y->cap - at;
    if (first > n)
        first = n;
    memcpy(r + at, p, first);
    memcpy(r, (const char *)p + first, n - first);
}

static void ring_read(const qlocal *l, const qlayout *y, uint64_t pos, void *p, size_t n)
{
    const unsigned char *r = l->base + y->base;
    size_t at = (size_t)((pos - y->origin) & (y->cap - 1)), first = (size_t)y->cap - at;
    if (first > n)
        first = n;
    memcpy(p, r + at, first);
    memcpy((char *)p + first, r, n - first);
}

static void qlocal_free(qlocal *l)
{
    if (!l)
        return;
    for (int i = 0; i < 2; i++)
        if (l->sock[i] >= 0)
            close(l->sock[i]);
    if (l->base)
        munmap(l->base, l->size);
    if (l->fd >= 0)
        close(l->fd);
    free(l);
}

static qlocal *qlocal_new(mpe_err *e)
{
    qlocal *l = calloc(1, sizeof *l);
    if (!l) {
        mpe__seterr(e, "out of memory");
        return NULL;
    }
    l->sock[0] = l->sock[1] = l->fd = -1;
    return l;
}

/* Map at least size bytes of the data file. 0, or -1 with e set. */
static int remap(qlocal *l, uint64_t size, mpe_err *e)
{
    if (l->base && l->size >= size)
        return 0;
    void *p = l->base ? mremap(l->base, l->size, (size_t)size, MREMAP_MAYMOVE)
                      : mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, l->fd, 0);
    if (p == MAP_FAILED)
        return mpe__seterr(e, "mmap(queue, %llu bytes): %s", (unsigned long long)size,
                           strerror(errno));
    l->base = p;
    l->size = (size_t)size;
    return 0;
}

/* Give the pages of [off, off + len) back (the file keeps its size). */
static void punch(int fd, uint64_t off, uint64_t len)
{
    if (len > 0)
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
}

/* ---- creation and references ------------------------------------------------------ */

mpe_shm_obj *mpe__queue_new(size_t maxsize, size_t bytes, mpe_err *e)
{
    uint64_t cap = MIN_BYTES;
    if (bytes == 0)
        bytes = DEFAULT_BYTES;
    if ((uint64_t)bytes > MAX_BYTES) {
        mpe__seterr(e, "a queue's buffer is at most %llu bytes", (unsigned long long)MAX_BYTES);
        return NULL;
    }
    while (cap < bytes)
        cap <<= 1;
    mpe_shm_obj *o = NULL;
    qlocal *l = qlocal_new(e);
    if (!l)
        return NULL;
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, l->sock) != 0) {
        mpe__seterr(e, "socketpair: %s", strerror(errno));
        goto fail;
    }
    /* Room for many descriptor messages in flight (capped by wmem_max). */
    int sz = 4 << 20;
    setsockopt(l->sock[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(l->sock[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    l->fd = memfd_create("mpe-queue", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (l->fd < 0) {
        mpe__seterr(e, "memfd_create: %s", strerror(errno));
        goto fail;
    }
    if (ftruncate(l->fd, (off_t)cap) != 0) {
        mpe__seterr(e, "ftruncate(memfd, %llu): %s", (unsigned long long)cap, strerror(errno));
        goto fail;
    }
    /* It may grow, never shrink: a shrink would make mappings fault. */
    if (fcntl(l->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
        mpe__seterr(e, "fcntl(memfd, F_ADD_SEALS): %s", strerror(errno));
        goto fail;
    }
    if (remap(l, cap, e) != 0)
        goto fail;
    o = mpe__shm_new(MPE_SHM_QUEUE, sizeof(queue_shm), e);
    if (!o)
        goto fail;
    queue_shm *q = o->p;
    if (mpe__sync_mutex_init(&q->put_m, 0, e) != 0 || mpe__sync_mutex_init(&q->get_m, 0, e) != 0)
        goto fail;
    q->file_size = cap;
    q->initial = cap;
    q->maxsize = maxsize;
    q->lay[0].cap = cap;
    o->data = l;
    return o;
fail:
    if (o)
        mpe__shm_unref(o);
    qlocal_free(l);
    return NULL;
}

/* Wire form after the shm.c reference: the data file and the channel's two
 * ends, each as mpe__ipc_fd_write writes it. */
int mpe__queue_ref_write(const mpe_shm_obj *o, mpe_buf *b, mpe_fds *fds, mpe_err *e)
{
    const qlocal *l = o->data;
    if (mpe__shm_ref_write(o, b, fds, e) != 0)
        return -1;
    if (mpe__ipc_fd_write(l->fd, b, fds, e) != 0 || mpe__ipc_fd_write(l->sock[0], b, fds, e) != 0 ||
        mpe__ipc_fd_write(l->sock[1], b, fds, e) != 0)
        return -1;
    return 0;
}

mpe_shm_obj *mpe__queue_ref_read(mpe_rd *r, mpe_fds *fds, mpe_err *e)
{
    mpe_shm_obj *o = mpe__shm_ref_read(r, fds, MPE_SHM_QUEUE, e);
    if (!o)
        return NULL;
    if (mpe__shm_size(o) < sizeof(queue_shm)) {
        mpe__seterr(e, "malformed shared queue");
        goto fail;
    }
    /* Read (and check) the descriptors even when this process has the queue
     * already, which then keeps its own. */
    qlocal *l = qlocal_new(e);
    if (!l)
        goto fail;
    if ((l->fd = mpe__ipc_fd_read(r, fds, S_IFREG, e)) < 0 ||
        (l->sock[0] = mpe__ipc_fd_read(r, fds, S_IFSOCK, e)) < 0 ||
        (l->sock[1] = mpe__ipc_fd_read(r, fds, S_IFSOCK, e)) < 0) {
        qlocal_free(l);
        goto fail;
    }
    if (o->data)
        qlocal_free(l);
    else
        o->data = l; /* the ring is mapped at the first lock */
    return o;
fail:
    mpe__queue_drop(o);
    return NULL;
}

void mpe__queue_drop(mpe_shm_obj *o)
{
    if (o->refs == 1) {
        qlocal_free(o->data);
        o->data = NULL;
    }
    mpe__shm_unref(o);
}

/* ---- locks, repair, relocation ---------------------------------------------------------- */

/* Holding both locks after a holder died: only head, tail and cur are
 * commits. Walk the records between head and tail (one that does not parse,
 * which never should happen, ends the queue there); the counters follow from
 * the item numbers the records carry. Free the pages outside the current
 * ring (a relocation may have died before doing so), then wake everyone:
 * their futex words may have missed a bump. */
static void repair(queue_shm *q, qlocal *l)
{
    qlayout *y = cur(q);
    if (q->tail - q->head > y->cap || ((q->tail - q->head) & 7) != 0)
        q->tail = q->head;
    uint64_t pos = q->head, n = 0;
    while (pos != q->tail) {
        rec_hdr h;
        ring_read(l, y, pos, &h, sizeof h);
        if (!rec_ok(&h) || rec_size(&h) > q->tail - pos) {
            q->tail = pos;
            break;
        }
        if (n == 0)
            q->takes = h.idx;
        q->puts = h.idx + 1;
        pos += rec_size(&h);
        n++;
    }
    if (n == 0) /* a putter that died between its two stores left puts behind */
        q->puts = q->takes = q->puts > q->takes ? q->puts : q->takes;
    punch(l->fd, 0, y->base);
    punch(l->fd, y->base + y->cap, q->file_size - (y->base + y->cap));
    __atomic_fetch_or(&q->items, SLEEPERS, __ATOMIC_SEQ_CST); /* wake them all */
    __atomic_fetch_or(&q->space, SLEEPERS, __ATOMIC_SEQ_CST);
    bump(&q->items);
    bump(&q->space);
}

/* Take a second lock without a deadline (holders keep it briefly). 1 if its
 * holder died (repair), 0, or -1 with e set. */
static int lock_more(pthread_mutex_t *m, mpe_err *e)
{
    int r = mpe__ipc_lock(m, -1, NULL, e);
    return r == MPE_WAIT_OWNERDEAD ? 1 : r == MPE_WAIT_OK ? 0 : -1;
}

/* Holding the put lock (its holder died if dead_put), take the get lock,
 * repair, and let go of the get lock. */
static int repair_from_put(queue_shm *q, qlocal *l, mpe_err *e)
{
    int dead_get = lock_more(&q->get_m, e);
    if (dead_get < 0)
        return -1;
    if (remap(l, q->file_size, e) == 0)
        repair(q, l);
    if (dead_get)
        mpe__ipc_consistent(&q->get_m);
    mpe__ipc_unlock(&q->get_m);
    return 0;
}

/* Lock one side (PUT or GET) and map what the ring needs. A dead holder of
 * either lock has both taken, in order (put, then get), and the queue
 * repaired. MPE_WAIT_OK, _TIMEOUT, _INTERRUPTED or _ERROR (e set). */
static int lock_side(queue_shm *q, qlocal *l, int side, double deadline, const mpe_waitctl *w,
                     mpe_err *e)
{
    pthread_mutex_t *m = side == PUT ? &q->put_m : &q->get_m;
    int r = mpe__ipc_lock(m, deadline, w, e);
    if (r == MPE_WAIT_OWNERDEAD && side == PUT) {
        int ok = repair_from_put(q, l, e) == 0;
        mpe__ipc_consistent(&q->put_m);
        if (!ok) {
            mpe__ipc_unlock(&q->put_m);
            return MPE_WAIT_ERROR;
        }
        r = MPE_WAIT_OK;
    } else if (r == MPE_WAIT_OWNERDEAD) {
        /* Every step commits by one store: the get side is consistent but for
         * its counter. Let go of it to take both locks in order. */
        mpe__ipc_consistent(&q->get_m);
        mpe__ipc_unlock(&q->get_m);
        int dead_put = lock_more(&q->put_m, e);
        if (dead_put < 0)
            return MPE_WAIT_ERROR;
        int dead_get = lock_more(&q->get_m, e);
        if (dead_get >= 0 && remap(l, q->file_size, e) == 0)
            repair(q, l);
        if (dead_put)
            mpe__ipc_consistent(&q->put_m);
        mpe__ipc_unlock(&q->put_m);
        if (dead_get < 0)
            return MPE_WAIT_ERROR;
        if (dead_get)
            mpe__ipc_consistent(&q->get_m);
        r = MPE_WAIT_OK;
    }
    if (r != MPE_WAIT_OK)
        return r;
    if (remap(l, q->file_size, e) != 0) {
        mpe__ipc_unlock(m);
        return MPE_WAIT_ERROR;
    }
    return MPE_WAIT_OK;
}

/* Holding both locks: move the records into a ring of cap bytes, in a part
 * of the file the current ring does not use, and switch to it. Positions do
 * not change (the new ring's origin is the head). 0, or -1 with e set (the
 * queue unchanged). */
static int relocate(queue_shm *q, qlocal *l, uint64_t cap, mpe_err *e)
{
    qlayout *y = cur(q), ny;
    uint64_t used = q->tail - q->head;
    ny.cap = cap;
    ny.base = cap <= y->base ? 0 : y->base + y->cap;
    ny.origin = q->head;
    if (ny.base + cap > q->file_size) {
        if (ftruncate(l->fd, (off_t)(ny.base + cap)) != 0)
            return mpe__seterr(e, "ftruncate(queue, %llu bytes): %s",
                               (unsigned long long)(ny.base + cap), strerror(errno));
        q->file_size = ny.base + cap;
        if (remap(l, q->file_size, e) != 0)
            return -1;
    }
    ring_read(l, y, q->head, l->base + ny.base, (size_t)used);
    mpe__ipc_crash(MPE_CRASH_QUEUE_MOVED);
    q->lay[1 - q->cur] = ny;
    __atomic_store_n(&q->cur, 1 - q->cur, __ATOMIC_RELEASE); /* the commit */
    punch(l->fd, y->base, y->cap);
    return 0;
}

/* Holding the put lock, make room for need bytes by growing the ring (which
 * also takes the get lock). 1 if there is room now, 0 if not. */
static int grow(queue_shm *q, qlocal *l, uint64_t need)
{
    mpe_err ignored;
    int dead_get = lock_more(&q->get_m, &ignored);
    if (dead_get < 0)
        return 0;
    if (dead_get) {
        repair(q, l);
        mpe__ipc_consistent(&q->get_m);
    }
    qlayout *y = cur(q);
    uint64_t used = q->tail - q->head, cap = y->cap;
    while (cap < MAX_BYTES && cap - used < need)
        cap <<= 1;
    int room = cap - used >= need && (cap == y->cap || relocate(q, l, cap, &ignored) == 0);
    mpe__ipc_unlock(&q->get_m);
    return room;
}

/* Holding the get lock with the queue empty: go back to the first ring if it
 * grew, when the put lock is free right now (never wait for it: the lock
 * order is put, then get). */
static void shrink(queue_shm *q, qlocal *l)
{
    if (cur(q)->cap <= q->initial)
        return;
    int r = pthread_mutex_trylock(&q->put_m);
    if (r != 0 && r != EOWNERDEAD)
        return;
    if (r == EOWNERDEAD) {
        repair(q, l);
        mpe__ipc_consistent(&q->put_m);
    }
    if (load(&q->tail) == q->head)
        relocate(q, l, q->initial, NULL);
    mpe__ipc_unlock(&q->put_m);
}

static double deadline_of(double timeout)
{
    return timeout < 0 ? -1 : mpe__proc_now() + timeout;
}

static int expired(double deadline)
{
    return deadline >= 0 && mpe__proc_now() >= deadline;
}

/* Items in the queue now: both counters are read without a lock. */
static uint64_t count_of(queue_shm *q)
{
    int64_t n = (int64_t)(load(&q->puts) - load(&q->takes));
    return n > 0 ? (uint64_t)n : 0;
}

/* ---- put ------------------------------------------------------------------------------------- */

/* A sealed memfd holding p[0..n): the spilled payload of a large item. */
static int spill(const void *p, size_t n, mpe_err *e)
{
    int fd = memfd_create("mpe-queue-item", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return mpe__seterr(e, "memfd_create: %s", strerror(errno));
    const char *s = p;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, s, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            mpe__seterr(e, "write(memfd, %zu bytes): %s", n, w < 0 ? strerror(errno) : "short");
            close(fd);
            return -1;
        }
        s += w;
        left -= (size_t)w;
    }
    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    return fd;
}

/* Wait until the channel has room again (its buffer is full of descriptor
 * messages nobody took yet). MPE_WAIT_OK, _TIMEOUT or _INTERRUPTED. */
static int wait_channel(int sock, double deadline, const mpe_waitctl *w)
{
    for (;;) {
        double now = mpe__proc_now(), slice = 0.1;
        if (deadline >= 0 && deadline - now < slice)
            slice = deadline - now;
        if (slice < 0)
            return MPE_WAIT_TIMEOUT;
        struct pollfd pf = {.fd = sock, .events = POLLOUT};
        int r = poll(&pf, 1, (int)(slice * 1000) + 1);
        if (r > 0)
            return MPE_WAIT_OK;
        if (w && w->interrupted && w->interrupted(w->ud))
            return MPE_WAIT_INTERRUPTED;
    }
}

int mpe__queue_put(mpe_shm_obj *o, const void *p, size_t n, mpe_fds *fds, double timeout,
                   const mpe_waitctl *w, mpe_err *e)
{
    queue_shm *q = o->p;
    qlocal *l = o->data;
    double deadline = deadline_of(timeout);
    uint64_t spill_at = q->initial / 4 < SPILL_AT ? q->initial / 4 : SPILL_AT;
    int spilled = n > spill_at, sfd = -1, rc, locked = 0;
    mpe_fds bundle = {0};
    if (n > UINT32_MAX) {
        mpe__seterr(e, "an item of %zu bytes is too large (at most 4 GiB)", n);
        rc = MPE_WAIT_ERROR;
        goto out;
    }
    if (fds->n + spilled > UINT16_MAX) {
        mpe__seterr(e, "an item carries more than %d shared segments", UINT16_MAX - 1);
        rc = MPE_WAIT_ERROR;
        goto out;
    }
    if (spilled) {
        sfd = spill(p, n, e);
        if (sfd < 0) {
            rc = MPE_WAIT_ERROR;
            goto out;
        }
        if (mpe__fds_add(fds, sfd) != 0) { /* now closed with the others */
            mpe__seterr(e, "out of memory for an item's descriptors");
            rc = MPE_WAIT_ERROR;
            goto out;
        }
    }
    /* More than one message may carry: they travel in a bundle, one
     * descriptor, so that the channel's message stays one sendmsg. */
    if (fds->n > MPE_FDIO_BATCH) {
        int bfd = mpe__fdio_bundle(fds->fd, fds->n);
        if (bfd < 0) {
            mpe__seterr(e, "bundling %d descriptors: %s", fds->n, strerror(errno));
            rc = MPE_WAIT_ERROR;
            goto out;
        }
        bundle.n = 0;
        if (mpe__fds_add(&bundle, bfd) != 0) {
            mpe__seterr(e, "out of memory for an item's descriptors");
            rc = MPE_WAIT_ERROR;
            goto out;
        }
    }
    const mpe_fds *carry = fds->n > MPE_FDIO_BATCH ? &bundle : fds;
    rec_hdr h = {(uint32_t)n, (uint16_t)fds->n, (uint16_t)(REC_MAGIC | (spilled ? REC_SPILL : 0)),
                 0, 0};
    uint64_t need = rec_size(&h);
    for (;;) {
        rc = lock_side(q, l, PUT, deadline, w, e);
        if (rc != MPE_WAIT_OK)
            goto out;
        locked = 1;
        if (q->closed) {
            rc = MPE_IPC_CLOSED;
            goto out;
        }
        /* Room: below maxsize, and bytes in the ring (growing it rather than
         * waiting: a producer may fill the queue before anyone reads it, and
         * Python's queues do not block then either). */
        int room_items = q->maxsize == 0 || count_of(q) < q->maxsize, room = room_items;
        if (room && cur(q)->cap - (q->tail - load(&q->head)) < need)
            room = grow(q, l, need); /* 0: at the size limit, or no memory */
        if (room) {
            if (h.nfds == 0)
                break;
            /* Number the message before it goes: see the header comment. */
            h.seq = ++q->seq;
            ssize_t s = mpe__fdio_send(l->sock[0], &h.seq, sizeof h.seq, carry->fd, carry->n,
                                       MSG_DONTWAIT);
            if (s == (ssize_t)sizeof h.seq) {
                mpe__ipc_crash(MPE_CRASH_PUT_SENT);
                break;
            }
            if (s > 0 || (s < 0 && errno != ENOBUFS)) {
                mpe__seterr(e, "sendmsg(queue channel): %s",
                            s < 0 && errno == ETOOMANYREFS
                                ? "too many descriptors in flight (raise the open files limit)"
                                : s < 0 ? strerror(errno) : "short");
                rc = MPE_WAIT_ERROR;
                goto out;
            }
            mpe__ipc_unlock(&q->put_m);
            locked = 0;
            rc = wait_channel(l->sock[0], deadline, w);
            if (rc != MPE_WAIT_OK)
                goto out;
            continue;
        }
        if (timeout == 0 || expired(deadline)) {
            rc = MPE_WAIT_TIMEOUT;
            goto out;
        }
        /* Sleep on `space`. Getters bump it after each take, without our lock. */
        uint32_t seen = announce(&q->space);
        mpe__ipc_unlock(&q->put_m);
        locked = 0;
        if (__atomic_load_n(&q->closed, __ATOMIC_ACQUIRE) ||
            (room_items ? cur(q)->cap - (load(&q->tail) - load(&q->head)) >= need
                        : count_of(q) < q->maxsize))
            continue; /* something was taken meanwhile: try again (a hint, rechecked) */
        rc = mpe__ipc_futex_wait(&q->space, seen, deadline, w);
        if (rc != MPE_WAIT_OK)
            goto out;
    }
    /* Holding the put lock with room: write past the tail, then commit. */
    h.idx = q->puts;
    uint64_t tail = q->tail;
    ring_write(l, cur(q), tail, &h, REC_HDR);
    if (!spilled)
        ring_write(l, cur(q), tail + REC_HDR, p, n);
    mpe__ipc_crash(MPE_CRASH_PUT_COPIED);
    __atomic_store_n(&q->tail, tail + need, __ATOMIC_RELEASE);
    __atomic_store_n(&q->puts, h.idx + 1, __ATOMIC_RELEASE);
    mpe__ipc_unlock(&q->put_m);
    locked = 0;
    bump(&q->items);
    rc = MPE_WAIT_OK;
out:
    if (locked)
        mpe__ipc_unlock(&q->put_m);
    mpe__fds_close(fds); /* sent or not, the duplicates were the message's */
    mpe__fds_close(&bundle);
    return rc;
}

/* ---- get ----------------------------------------------------------------------------------------- */

/* Drop the channel's first message for real, closing what came with it. */
static void drop_message(int sock)
{
    uint64_t seq;
    mpe__fdio_recvmsg(sock, &seq, sizeof seq, NULL, MSG_DONTWAIT);
}

/* Peek the descriptors of message want into fds (duplicates: the message
 * stays until the record is committed), dropping older messages that dead
 * processes left. 0, or -1 with e set. */
static int peek_fds(int sock, uint64_t want, unsigned nfds, mpe_fds *fds, mpe_err *e)
{
    for (;;) {
        uint64_t seq = 0;
        mpe_fds got = {0};
        ssize_t r = mpe__fdio_recvmsg(sock, &seq, sizeof seq, &got, MSG_PEEK | MSG_DONTWAIT);
        if (r < 0) {
            int err = errno;
            mpe__fds_close(&got); /* the list's memory; its descriptors are closed already */
            errno = err;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return mpe__seterr(e, "an item's descriptors are missing from the queue's channel");
            if (errno == EPROTO) /* the kernel dropped some: the item cannot be rebuilt */
                return mpe__seterr(e, "an item's descriptors were dropped on the way "
                                      "(the open files limit?)");
            return mpe__seterr(e, "recvmsg(queue channel): %s", strerror(errno));
        }
        /* More than one message carries came as a bundle (see put). */
        int bundled = nfds > MPE_FDIO_BATCH;
        if (r == (ssize_t)sizeof seq && seq == want && got.n == (bundled ? 1 : (int)nfds)) {
            if (!bundled) {
                int moved = mpe__fds_move(fds, &got);
                mpe__fds_close(&got);
                return moved == 0 ? 0 : mpe__seterr(e, "out of memory");
            }
            int ok = mpe__fdio_unbundle(got.fd[0], (int)nfds, fds);
            mpe__fds_close(&got);
            if (ok != 0)
                return mpe__seterr(e, "an item's descriptors did not arrive whole (%s)", strerror(errno));
            return 0;
        }
        mpe__fds_close(&got);
        if (r == (ssize_t)sizeof seq && seq >= want)
            return mpe__seterr(e, "an item's descriptors did not arrive (message %llu, wanted %llu)",
                               (unsigned long long)seq, (unsigned long long)want);
        drop_message(sock); /* left by a process that died: nobody wants it */
    }
}

/* Close the descriptors fds gained from slot first on. */
static void close_from(mpe_fds *fds, int first)
{
    mpe__fds_truncate(fds, first);
}

/* Read a spilled payload of n bytes from fd into out. */
static int unspill(int fd, size_t n, mpe_buf *out, mpe_err *e)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != n)
        return mpe__seterr(e, "a spilled queue item has the wrong size");
    if (mpe__buf_grow(out, n) != 0)
        return mpe__seterr(e, "out of memory for an item of %zu bytes", n);
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, out->p + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return mpe__seterr(e, "read(spilled item): %s", r < 0 ? strerror(errno) : "short");
        got += (size_t)r;
    }
    out->n = n;
    return 0;
}

/* Spin briefly on an empty queue before sleeping: a producer on another CPU
 * usually fills it within microseconds, and a futex sleep costs more. */
static void spin_empty(queue_shm *q)
{
    for (int k = 0; k < GET_SPINS; k++) {
        if (load(&q->tail) != q->head || __atomic_load_n(&q->closed, __ATOMIC_RELAXED))
            return;
        CPU_RELAX();
    }
}

int mpe__queue_get(mpe_shm_obj *o, mpe_buf *out, mpe_fds *fds, double timeout,
                   const mpe_waitctl *w, mpe_err *e)
{
    queue_shm *q = o->p;
    qlocal *l = o->data;
    double deadline = deadline_of(timeout);
    int rc, spun = 0, first = fds->n;
    for (;;) {
        rc = lock_side(q, l, GET, deadline, w, e);
        if (rc != MPE_WAIT_OK)
            return rc;
        if (load(&q->tail) != q->head)
            break;
        if (__atomic_load_n(&q->closed, __ATOMIC_ACQUIRE)) {
            rc = MPE_IPC_CLOSED;
            goto unlock;
        }
        if (timeout == 0 || expired(deadline)) {
            rc = MPE_WAIT_TIMEOUT;
            goto unlock;
        }
        if (!spun) {
            spun = 1;
            mpe__ipc_unlock(&q->get_m);
            spin_empty(q);
            continue;
        }
        /* Sleep on `items`. Putters bump it after each commit, without our lock. */
        uint32_t seen = announce(&q->items);
        mpe__ipc_unlock(&q->get_m);
        if (load(&q->tail) != q->head || __atomic_load_n(&q->closed, __ATOMIC_ACQUIRE))
            continue;
        rc = mpe__ipc_futex_wait(&q->items, seen, deadline, w);
        if (rc != MPE_WAIT_OK)
            return rc;
    }
    /* Holding the get lock, the queue not empty: copy the oldest record out, commit. */
    rec_hdr h;
    qlayout *y = cur(q);
    uint64_t head = q->head, tail = load(&q->tail);
    ring_read(l, y, head, &h, sizeof h);
    int ok = 1;
    if (!rec_ok(&h) || rec_size(&h) > tail - head) {
        /* Never written so (records are committed whole): do not wedge on it. */
        mpe__seterr(e, "the queue's ring was damaged: its items were dropped");
        __atomic_store_n(&q->head, tail, __ATOMIC_RELEASE);
        __atomic_store_n(&q->takes, load(&q->puts), __ATOMIC_RELEASE);
        rc = MPE_WAIT_ERROR;
        goto unlock;
    }
    if (h.nfds > 0 && peek_fds(l->sock[1], h.seq, h.nfds, fds, e) != 0)
        ok = 0; /* the item cannot be rebuilt: it is dropped, the error reported */
    if (ok && !(h.flags & REC_SPILL)) {
        if (mpe__buf_grow(out, h.len) != 0) {
            mpe__seterr(e, "out of memory for an item of %u bytes", (unsigned)h.len);
            close_from(fds, first);
            rc = MPE_WAIT_ERROR;
            goto unlock; /* the item stays for another try */
        }
        out->n = 0;
        ring_read(l, y, head + REC_HDR, out->p, h.len);
        out->n = h.len;
    }
    mpe__ipc_crash(MPE_CRASH_GET_PEEKED);
    __atomic_store_n(&q->head, head + rec_size(&h), __ATOMIC_RELEASE);
    __atomic_store_n(&q->takes, h.idx + 1, __ATOMIC_RELEASE);
    mpe__ipc_crash(MPE_CRASH_GET_TAKEN);
    if (ok && h.nfds > 0)
        drop_message(l->sock[1]);
    if (load(&q->tail) == q->head)
        shrink(q, l); /* drained: give the memory back */
    mpe__ipc_unlock(&q->get_m);
    bump(&q->space);
    if (!ok)
        return MPE_WAIT_ERROR;
    if (h.flags & REC_SPILL) {
        int sfd = fds->fd[--fds->n]; /* the last descriptor is the payload's */
        int r = unspill(sfd, h.len, out, e);
        close(sfd);
        if (r != 0) {
            close_from(fds, first);
            return MPE_WAIT_ERROR;
        }
    }
    return MPE_WAIT_OK;
unlock:
    mpe__ipc_unlock(&q->get_m);
    return rc;
}

/* ---- the rest ------------------------------------------------------------------------------------ */

void mpe__queue_close(mpe_shm_obj *o)
{
    queue_shm *q = o->p;
    /* Under the put lock, so that no put commits after a closer returned. */
    if (lock_side(q, o->data, PUT, -1, NULL, NULL) == MPE_WAIT_OK) {
        __atomic_store_n(&q->closed, 1, __ATOMIC_SEQ_CST);
        mpe__ipc_unlock(&q->put_m);
    } else {
        __atomic_store_n(&q->closed, 1, __ATOMIC_SEQ_CST); /* still tell the sleepers */
    }
    __atomic_fetch_or(&q->items, SLEEPERS, __ATOMIC_SEQ_CST); /* wake them all */
    __atomic_fetch_or(&q->space, SLEEPERS, __ATOMIC_SEQ_CST);
    bump(&q->items);
    bump(&q->space);
}

size_t mpe__queue_size(const mpe_shm_obj *o)
{
    return (size_t)count_of(o->p);
}

size_t mpe__queue_maxsize(const mpe_shm_obj *o)
{
    return (size_t)((const queue_shm *)o->p)->maxsize;
}

int mpe__queue_closed(const mpe_shm_obj *o)
{
    return (int)__atomic_load_n(&((const queue_shm *)o->p)->closed, __ATOMIC_RELAXED);
}

size_t mpe__queue_capacity(const mpe_shm_obj *o)
{
    const queue_shm *q = o->p;
    return (size_t)q->lay[__atomic_load_n(&q->cur, __ATOMIC_ACQUIRE)].cap;
}
