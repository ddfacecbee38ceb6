/* test_ipc.c -- unit tests of queues (queue.c), pipes (pipe.c) and dicts
 * (dict.c): order, blocking and timeouts, spilled items, descriptors that
 * travel with items, and processes killed at every step of the protocols.
 * SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include "array.h"
#include "buf.h"
#include "dict.h"
#include "err.h"
#include "ipc.h"
#include "pipe.h"
#include "proc.h"
#include "queue.h"
#include "shm.h"
#include "sync.h"
#include "waitctl.h"
#include "tharness.h"

/* The current slab holds a descriptor for the life of the process (dicts cut
 * their control block from it): create it before the harness counts. */
__attribute__((constructor)) static void prime_slab(void)
{
    mpe_shm_obj *o = mpe__sync_new(MPE_SHM_LOCK, 0, NULL);
    if (o)
        mpe__shm_unref(o);
}

static int wait_child(pid_t pid)
{
    int st;
    pid_t r;
    do
        r = waitpid(pid, &st, 0);
    while (r == -1 && errno == EINTR);
    MPE_ASSERT_EQ(r, pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static mpe_shm_obj *qnew(size_t maxsize, size_t bytes)
{
    mpe_err e;
    mpe_shm_obj *o = mpe__queue_new(maxsize, bytes, &e);
    if (!o)
        MPE_FAIL("mpe__queue_new: %s", e.msg);
    return o;
}

static int put(mpe_shm_obj *q, const char *s, double timeout)
{
    mpe_fds none = {.n = 0};
    mpe_err e;
    int r = mpe__queue_put(q, s, strlen(s), &none, timeout, NULL, &e);
    if (r == MPE_WAIT_ERROR)
        MPE_FAIL("mpe__queue_put: %s", e.msg);
    return r;
}

/* Get an item as a string (static buffer); NULL when r is not OK. */
static const char *get(mpe_shm_obj *q, double timeout, int *r)
{
    static char out[256];
    mpe_buf b = {0};
    mpe_fds fds = {.n = 0};
    mpe_err e;
    *r = mpe__queue_get(q, &b, &fds, timeout, NULL, &e);
    if (*r == MPE_WAIT_ERROR)
        MPE_FAIL("mpe__queue_get: %s", e.msg);
    mpe__fds_close(&fds);
    if (*r != MPE_WAIT_OK) {
        mpe__buf_free(&b);
        return NULL;
    }
    size_t n = b.n < sizeof out - 1 ? b.n : sizeof out - 1;
    memcpy(out, b.p, n);
    out[n] = 0;
    mpe__buf_free(&b);
    return out;
}

static const char *get_ok(mpe_shm_obj *q)
{
    int r;
    const char *s = get(q, 5, &r);
    MPE_ASSERT_EQ(r, MPE_WAIT_OK);
    return s;
}

/* A memfd holding text: something recognisable to pass as a descriptor. */
static int memfd_with(const char *text)
{
    int fd = memfd_create("test-ipc", MFD_CLOEXEC);
    MPE_ASSERT(fd >= 0);
    MPE_ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    return fd;
}

static void assert_fd_holds(int fd, const char *text)
{
    char buf[64] = {0};
    MPE_ASSERT(pread(fd, buf, sizeof buf - 1, 0) >= 0);
    MPE_ASSERT_STREQ(buf, text);
}

/* Put an item whose descriptor is a memfd holding `tag` (the item's bytes
 * are the tag as well). */
static void put_with_fd(mpe_shm_obj *q, const char *tag)
{
    mpe_fds fds = {0};
    MPE_ASSERT_EQ(mpe__fds_add(&fds, memfd_with(tag)), 0);
    mpe_err e;
    int r = mpe__queue_put(q, tag, strlen(tag), &fds, 5, NULL, &e);
    if (r != MPE_WAIT_OK)
        MPE_FAIL("put_with_fd: %d %s", r, r == MPE_WAIT_ERROR ? e.msg : "");
    MPE_ASSERT_EQ(fds.n, 0);
}

static void get_with_fd(mpe_shm_obj *q, const char *tag)
{
    mpe_buf b = {0};
    mpe_fds fds = {.n = 0};
    mpe_err e;
    int r = mpe__queue_get(q, &b, &fds, 5, NULL, &e);
    if (r != MPE_WAIT_OK)
        MPE_FAIL("get_with_fd: %d %s", r, r == MPE_WAIT_ERROR ? e.msg : "");
    MPE_ASSERT_EQ(b.n, strlen(tag));
    MPE_ASSERT(memcmp(b.p, tag, b.n) == 0);
    MPE_ASSERT_EQ(fds.n, 1);
    assert_fd_holds(fds.fd[0], tag);
    mpe__fds_close(&fds);
    mpe__buf_free(&b);
}

/* ---- queues ------------------------------------------------------------------------ */

static void test_queue_fifo_and_wrap(void)
{
    mpe_shm_obj *q = qnew(0, 4096); /* a small ring: records wrap many times */
    char item[64];
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 20; i++) {
            snprintf(item, sizeof item, "item %d.%d %.*s", round, i, i, "abcdefghijklmnopqrstu");
            MPE_ASSERT_EQ(put(q, item, 0), MPE_WAIT_OK);
        }
        MPE_ASSERT_EQ(mpe__queue_size(q), 20);
        for (int i = 0; i < 20; i++) {
            snprintf(item, sizeof item, "item %d.%d %.*s", round, i, i, "abcdefghijklmnopqrstu");
            MPE_ASSERT_STREQ(get_ok(q), item);
        }
    }
    MPE_ASSERT_EQ(mpe__queue_size(q), 0);
    mpe__queue_drop(q);
}

static void test_queue_timeouts_and_maxsize(void)
{
    mpe_shm_obj *q = qnew(2, 0);
    int r;
    MPE_ASSERT(get(q, 0, &r) == NULL);
    MPE_ASSERT_EQ(r, MPE_WAIT_TIMEOUT);
    double t0 = mpe__proc_now();
    MPE_ASSERT(get(q, 0.05, &r) == NULL);
    MPE_ASSERT_EQ(r, MPE_WAIT_TIMEOUT);
    MPE_ASSERT(mpe__proc_now() - t0 >= 0.045);
    MPE_ASSERT_EQ(put(q, "a", 0), MPE_WAIT_OK);
    MPE_ASSERT_EQ(put(q, "b", 0), MPE_WAIT_OK);
    MPE_ASSERT_EQ(put(q, "c", 0), MPE_WAIT_TIMEOUT);
    MPE_ASSERT_EQ(put(q, "c", 0.05), MPE_WAIT_TIMEOUT);
    MPE_ASSERT_EQ(mpe__queue_maxsize(q), 2);
    /* A blocked put goes through once a child takes an item. */
    pid_t pid = fork();
    if (pid == 0) {
        usleep(50000);
        int rr;
        get(q, 5, &rr);
        _exit(rr == MPE_WAIT_OK ? 0 : 1);
    }
    MPE_ASSERT_EQ(put(q, "c", 10), MPE_WAIT_OK);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    MPE_ASSERT_STREQ(get_ok(q), "b");
    MPE_ASSERT_STREQ(get_ok(q), "c");
    mpe__queue_drop(q);
}

static void test_queue_close(void)
{
    mpe_shm_obj *q = qnew(0, 0);
    MPE_ASSERT_EQ(put(q, "x", 0), MPE_WAIT_OK);
    /* A child blocked on a full... no: on an empty queue is woken by close. */
    mpe_shm_obj *q2 = qnew(0, 0);
    pid_t pid = fork();
    if (pid == 0) {
        int rr;
        get(q2, 20, &rr);
        _exit(rr == MPE_IPC_CLOSED ? 0 : 1);
    }
    usleep(50000);
    mpe__queue_close(q2);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    mpe__queue_close(q);
    MPE_ASSERT(mpe__queue_closed(q));
    MPE_ASSERT_EQ(put(q, "y", 0), MPE_IPC_CLOSED);
    MPE_ASSERT_STREQ(get_ok(q), "x"); /* what is there can still be taken */
    int r;
    MPE_ASSERT(get(q, 1, &r) == NULL);
    MPE_ASSERT_EQ(r, MPE_IPC_CLOSED);
    mpe__queue_drop(q);
    mpe__queue_drop(q2);
}

static void test_queue_spills_large_items(void)
{
    mpe_shm_obj *q = qnew(0, 4096);
    size_t n = 10u << 20;
    char *big = malloc(n);
    MPE_ASSERT(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 31 + 7);
    mpe_fds none = {.n = 0};
    mpe_err e;
    MPE_ASSERT_EQ(put(q, "small", 0), MPE_WAIT_OK);
    MPE_ASSERT_EQ(mpe__queue_put(q, big, n, &none, 5, NULL, &e), MPE_WAIT_OK);
    MPE_ASSERT_EQ(put(q, "after", 0), MPE_WAIT_OK);
    MPE_ASSERT_STREQ(get_ok(q), "small");
    mpe_buf b = {0};
    mpe_fds fds = {.n = 0};
    MPE_ASSERT_EQ(mpe__queue_get(q, &b, &fds, 5, NULL, &e), MPE_WAIT_OK);
    MPE_ASSERT_EQ(fds.n, 0); /* the spilled payload's memfd is not handed out */
    MPE_ASSERT_EQ(b.n, n);
    MPE_ASSERT(memcmp(b.p, big, n) == 0);
    MPE_ASSERT_STREQ(get_ok(q), "after");
    mpe__buf_free(&b);
    mpe__fds_close(&fds); /* the list's memory: the spill's descriptor came through it */
    free(big);
    mpe__queue_drop(q);
}

static void test_queue_descriptors_cross_processes(void)
{
    mpe_shm_obj *q = qnew(0, 0);
    pid_t pid = fork();
    if (pid == 0) { /* a process that has the queue through fork */
        put_with_fd(q, "from child 1");
        put(q, "plain", 5);
        put_with_fd(q, "from child 2");
        _exit(0);
    }
    MPE_ASSERT_EQ(wait_child(pid), 0);
    get_with_fd(q, "from child 1");
    MPE_ASSERT_STREQ(get_ok(q), "plain");
    get_with_fd(q, "from child 2");
    mpe__queue_drop(q);
}

/* The queue travels as a reference to a process forked before it existed. */
static void test_queue_reference_travels(void)
{
    int sv[2];
    MPE_ASSERT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        char buf[256];
        mpe_fds fds = {.n = 0};
        ssize_t n = mpe__fdio_recvmsg(sv[1], buf, sizeof buf, &fds, 0);
        mpe_rd r;
        mpe__rd_init(&r, buf, (size_t)n);
        mpe_err e;
        mpe_shm_obj *q = mpe__queue_ref_read(&r, &fds, &e);
        if (!q)
            MPE_FAIL("ref_read: %s", e.msg);
        mpe__fds_close(&fds);
        put_with_fd(q, "hello from a stranger");
        mpe__queue_drop(q);
        _exit(0);
    }
    close(sv[1]);
    mpe_shm_obj *q = qnew(0, 0);
    mpe_buf b = {0};
    mpe_fds fds = {.n = 0};
    mpe_err e;
    MPE_ASSERT_EQ(mpe__queue_ref_write(q, &b, &fds, &e), 0);
    MPE_ASSERT_EQ(fds.n, 4); /* the control block's slab, the ring's file, the channel's ends */
    MPE_ASSERT(mpe__fdio_send(sv[0], b.p, b.n, fds.fd, fds.n, 0) == (ssize_t)b.n);
    mpe__fds_close(&fds);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    get_with_fd(q, "hello from a stranger");
    mpe__buf_free(&b);
    close(sv[0]);
    mpe__queue_drop(q);
}

/* Two queues encoded as two items whose descriptor lists were joined (the
 * second item's slots then point at the first item's descriptors): the
 * decoder must refuse, not pair one queue's control block with the other's
 * ring. */
static void test_queue_reference_checks_descriptors(void)
{
    mpe_shm_obj *qa = qnew(0, 0), *qb = qnew(0, 0);
    mpe_buf ba = {0}, bb = {0};
    mpe_fds fa = {.n = 0}, fb = {.n = 0};
    mpe_err e;
    MPE_ASSERT_EQ(mpe__queue_ref_write(qa, &ba, &fa, &e), 0);
    MPE_ASSERT_EQ(mpe__queue_ref_write(qb, &bb, &fb, &e), 0);
    mpe_rd r;
    mpe__rd_init(&r, bb.p, bb.n);
    mpe_shm_obj *got = mpe__queue_ref_read(&r, &fa, &e); /* qb's reference, qa's descriptors */
    MPE_ASSERT(got == NULL);
    MPE_ASSERT_CONTAINS(e.msg, "not the one that was sent");
    mpe__rd_init(&r, bb.p, bb.n);
    got = mpe__queue_ref_read(&r, &fb, &e);
    MPE_ASSERT(got == qb); /* the same process: the same object, one more reference */
    mpe__queue_drop(got);
    mpe__fds_close(&fa);
    mpe__fds_close(&fb);
    mpe__buf_free(&ba);
    mpe__buf_free(&bb);
    mpe__queue_drop(qa);
    mpe__queue_drop(qb);
}

/* Fork a child that arms crash point `point` and runs fn; it must die by SIGKILL. */
static void crash_in_child(int point, void (*fn)(mpe_shm_obj *), mpe_shm_obj *o)
{
    pid_t pid = fork();
    if (pid == 0) {
        mpe__ipc_set_crash(point);
        fn(o);
        _exit(0);
    }
    MPE_ASSERT_EQ(wait_child(pid), 128 + SIGKILL);
}

static void put_doomed(mpe_shm_obj *q) { put(q, "doomed", 5); }
static void put_doomed_fd(mpe_shm_obj *q) { put_with_fd(q, "doomed"); }
static void get_one(mpe_shm_obj *q) { get_ok(q); }

static void test_queue_writer_killed_mid_put(void)
{
    mpe_shm_obj *q = qnew(0, 0);
    put(q, "first", 0);
    crash_in_child(MPE_CRASH_PUT_COPIED, put_doomed, q);
    MPE_ASSERT_EQ(mpe__queue_size(q), 1);
    crash_in_child(MPE_CRASH_PUT_SENT, put_doomed_fd, q); /* leaves an orphan message */
    MPE_ASSERT_EQ(mpe__queue_size(q), 1);
    put_with_fd(q, "second");
    put(q, "third", 0);
    MPE_ASSERT_STREQ(get_ok(q), "first");
    get_with_fd(q, "second"); /* the orphan is skipped, not mistaken for these */
    MPE_ASSERT_STREQ(get_ok(q), "third");
    int r;
    MPE_ASSERT(get(q, 0, &r) == NULL);
    MPE_ASSERT_EQ(r, MPE_WAIT_TIMEOUT);
    mpe__queue_drop(q);
}

static void test_queue_reader_killed_mid_get(void)
{
    mpe_shm_obj *q = qnew(0, 0);
    put_with_fd(q, "kept");
    put_with_fd(q, "taken");
    put_with_fd(q, "last");
    crash_in_child(MPE_CRASH_GET_PEEKED, get_one, q); /* dies before committing */
    MPE_ASSERT_EQ(mpe__queue_size(q), 3);
    get_with_fd(q, "kept");
    crash_in_child(MPE_CRASH_GET_TAKEN, get_one, q); /* took "taken", left its message */
    MPE_ASSERT_EQ(mpe__queue_size(q), 1);
    get_with_fd(q, "last");
    put(q, "more", 0);
    MPE_ASSERT_STREQ(get_ok(q), "more");
    mpe__queue_drop(q);
}

static void test_queue_reader_killed_while_blocked(void)
{
    mpe_shm_obj *q = qnew(0, 0);
    pid_t pid = fork();
    if (pid == 0) {
        int r;
        get(q, 30, &r);
        _exit(2);
    }
    usleep(100000);
    kill(pid, SIGKILL);
    MPE_ASSERT_EQ(wait_child(pid), 128 + SIGKILL);
    put(q, "still works", 0);
    MPE_ASSERT_STREQ(get_ok(q), "still works");
    mpe__queue_drop(q);
}

static void test_queue_many_producers_keep_order(void)
{
    mpe_shm_obj *q = qnew(0, 8192);
    enum { PRODUCERS = 3, ITEMS = 3000 };
    pid_t pids[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            char item[32];
            for (int i = 0; i < ITEMS; i++) {
                snprintf(item, sizeof item, "%d %d", p, i);
                if (put(q, item, 10) != MPE_WAIT_OK)
                    _exit(1);
            }
            _exit(0);
        }
    }
    int next[PRODUCERS] = {0};
    for (int k = 0; k < PRODUCERS * ITEMS; k++) {
        int p, i;
        MPE_ASSERT_EQ(sscanf(get_ok(q), "%d %d", &p, &i), 2);
        MPE_ASSERT(p >= 0 && p < PRODUCERS);
        MPE_ASSERT_EQ(i, next[p]);
        next[p]++;
    }
    for (int p = 0; p < PRODUCERS; p++)
        MPE_ASSERT_EQ(wait_child(pids[p]), 0);
    mpe__queue_drop(q);
}

static void test_queue_grows_and_shrinks(void)
{
    mpe_shm_obj *q = qnew(0, 4096);
    char item[64];
    /* Nobody reads: the ring grows instead of blocking the producer. */
    for (int i = 0; i < 100000; i++) {
        snprintf(item, sizeof item, "item %d", i);
        MPE_ASSERT_EQ(put(q, item, 0), MPE_WAIT_OK);
    }
    MPE_ASSERT(mpe__queue_capacity(q) >= 100000 * 16);
    /* A process forked before the growth maps the larger ring when it locks. */
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < 50000; i++) {
            char want[64];
            snprintf(want, sizeof want, "item %d", i);
            if (strcmp(get_ok(q), want) != 0)
                _exit(1);
        }
        _exit(0);
    }
    MPE_ASSERT_EQ(wait_child(pid), 0);
    for (int i = 50000; i < 100000; i++) {
        snprintf(item, sizeof item, "item %d", i);
        MPE_ASSERT_STREQ(get_ok(q), item);
    }
    MPE_ASSERT_EQ(mpe__queue_capacity(q), 4096); /* drained: back to the first ring */
    mpe__queue_drop(q);
}

static void fill_until_moved(mpe_shm_obj *q)
{
    for (;;)
        put(q, "filler, until the ring must grow", 5);
}

static void test_queue_killed_while_growing(void)
{
    mpe_shm_obj *q = qnew(0, 4096);
    put_with_fd(q, "first");
    crash_in_child(MPE_CRASH_QUEUE_MOVED, fill_until_moved, q);
    size_t n = mpe__queue_size(q);
    MPE_ASSERT(n > 1);
    MPE_ASSERT_EQ(mpe__queue_capacity(q), 4096); /* the move never happened */
    get_with_fd(q, "first");
    for (size_t i = 1; i < n; i++)
        MPE_ASSERT_STREQ(get_ok(q), "filler, until the ring must grow");
    put(q, "last", 0);
    MPE_ASSERT_STREQ(get_ok(q), "last");
    mpe__queue_drop(q);
}

/* Two producers and two consumers at once: every item is taken exactly once. */
static void test_queue_many_consumers_each_item_once(void)
{
    enum { ITEMS = 4000 };
    mpe_shm_obj *q = qnew(0, 4096);
    mpe_shm_obj *seen = mpe__array_new(mpe__array_ctype("uint8"), 1, 2 * ITEMS, 1, NULL);
    MPE_ASSERT(seen);
    pid_t pids[4];
    for (int k = 0; k < 4; k++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            if (k < 2) { /* producers: items k*ITEMS .. k*ITEMS+ITEMS-1 */
                char item[32];
                for (int i = 0; i < ITEMS; i++) {
                    snprintf(item, sizeof item, "%d", k * ITEMS + i);
                    if (put(q, item, 10) != MPE_WAIT_OK)
                        _exit(1);
                }
                _exit(0);
            }
            for (;;) { /* consumers: until the queue is closed and empty */
                int r;
                const char *s = get(q, 10, &r);
                if (r == MPE_IPC_CLOSED)
                    _exit(0);
                if (r != MPE_WAIT_OK)
                    _exit(2);
                mpe_num one = {1, 1, 0}, out;
                if (mpe__array_add(seen, (size_t)atoi(s), one, &out, NULL) != 0)
                    _exit(3);
            }
        }
    }
    MPE_ASSERT_EQ(wait_child(pids[0]), 0);
    MPE_ASSERT_EQ(wait_child(pids[1]), 0);
    mpe__queue_close(q);
    MPE_ASSERT_EQ(wait_child(pids[2]), 0);
    MPE_ASSERT_EQ(wait_child(pids[3]), 0);
    for (size_t i = 0; i < 2 * ITEMS; i++)
        MPE_ASSERT_EQ(mpe__array_get(seen, i).i, 1);
    MPE_ASSERT_EQ(mpe__queue_size(q), 0);
    mpe__shm_unref(seen);
    mpe__queue_drop(q);
}

static void test_queue_create_destroy_no_leak(void)
{
    int segs0, objs0, segs, objs;
    mpe__shm_stats(&segs0, &objs0);
    for (int i = 0; i < 2000; i++) {
        mpe_shm_obj *q = qnew(0, 0);
        put_with_fd(q, "x"); /* a descriptor left in the channel dies with it */
        mpe__queue_drop(q);
    }
    mpe__shm_stats(&segs, &objs);
    MPE_ASSERT_EQ(segs, segs0);
    MPE_ASSERT_EQ(objs, objs0);
}

/* ---- pipes ---------------------------------------------------------------------------- */

static void test_pipe_frames_descriptors_and_eof(void)
{
    mpe_pipe a, b;
    mpe__pipe_init(&a);
    mpe__pipe_init(&b);
    mpe_err e;
    MPE_ASSERT_EQ(mpe__pipe_pair(&a, &b, &e), 0);
    size_t n = 10u << 20;
    char *big = malloc(n);
    MPE_ASSERT(big);
    memset(big, 'z', n);
    big[n - 1] = '!';
    pid_t pid = fork();
    if (pid == 0) { /* the child answers each message, then closes */
        mpe__pipe_close(&a);
        for (int k = 0; k < 3; k++) {
            const void *data;
            size_t len;
            mpe_fds fds = {.n = 0};
            if (mpe__pipe_recv(&b, 10, NULL, &data, &len, &fds, &e) != MPE_WAIT_OK)
                _exit(1);
            char reply[32];
            snprintf(reply, sizeof reply, "%zu bytes %d fds", len, fds.n);
            if (fds.n)
                assert_fd_holds(fds.fd[0], "attached");
            mpe__fds_close(&fds);
            mpe_fds none = {.n = 0};
            if (mpe__pipe_send(&b, reply, strlen(reply), &none, NULL, &e) != MPE_WAIT_OK)
                _exit(2);
        }
        mpe__pipe_close(&b);
        _exit(0);
    }
    mpe__pipe_close(&b);
    MPE_ASSERT_EQ(mpe__pipe_poll(&a, 0, NULL, &e), 0);
    const char *expect[3] = {"5 bytes 0 fds", "5 bytes 1 fds", "10485760 bytes 0 fds"};
    for (int k = 0; k < 3; k++) {
        mpe_fds fds = {.n = 0};
        if (k == 1) {
            MPE_ASSERT_EQ(mpe__fds_add(&fds, memfd_with("attached")), 0);
        }
        MPE_ASSERT_EQ(mpe__pipe_send(&a, k == 2 ? big : "hello", k == 2 ? n : 5, &fds, NULL, &e),
                      MPE_WAIT_OK);
        MPE_ASSERT_EQ(fds.n, 0);
        const void *data;
        size_t len;
        MPE_ASSERT_EQ(mpe__pipe_poll(&a, 10, NULL, &e), 1);
        MPE_ASSERT_EQ(mpe__pipe_recv(&a, 10, NULL, &data, &len, &fds, &e), MPE_WAIT_OK);
        MPE_ASSERT_EQ(len, strlen(expect[k]));
        MPE_ASSERT(memcmp(data, expect[k], len) == 0);
    }
    MPE_ASSERT_EQ(wait_child(pid), 0);
    const void *data;
    size_t len;
    mpe_fds fds = {.n = 0};
    MPE_ASSERT_EQ(mpe__pipe_poll(&a, 1, NULL, &e), 1); /* EOF counts as readable */
    MPE_ASSERT_EQ(mpe__pipe_recv(&a, 1, NULL, &data, &len, &fds, &e), MPE_IPC_CLOSED);
    mpe_fds none = {.n = 0};
    MPE_ASSERT_EQ(mpe__pipe_send(&a, "x", 1, &none, NULL, &e), MPE_IPC_CLOSED);
    mpe__pipe_close(&a);
    mpe__pipe_close(&a); /* idempotent */
    free(big);
}

static void test_pipe_recv_timeout(void)
{
    mpe_pipe a, b;
    mpe__pipe_init(&a);
    mpe__pipe_init(&b);
    mpe_err e;
    MPE_ASSERT_EQ(mpe__pipe_pair(&a, &b, &e), 0);
    const void *data;
    size_t len;
    mpe_fds fds = {.n = 0};
    MPE_ASSERT_EQ(mpe__pipe_recv(&a, 0, NULL, &data, &len, &fds, &e), MPE_WAIT_TIMEOUT);
    MPE_ASSERT_EQ(mpe__pipe_recv(&a, 0.05, NULL, &data, &len, &fds, &e), MPE_WAIT_TIMEOUT);
    mpe__pipe_close(&a);
    mpe__pipe_close(&b);
}

/* ---- dicts ------------------------------------------------------------------------------- */

static mpe_shm_obj *dnew(void)
{
    mpe_err e;
    mpe_shm_obj *d = mpe__dict_new(&e);
    if (!d)
        MPE_FAIL("mpe__dict_new: %s", e.msg);
    return d;
}

static void dlock(mpe_shm_obj *d)
{
    mpe_err e;
    if (mpe__dict_lock(d, NULL, &e) != MPE_WAIT_OK)
        MPE_FAIL("mpe__dict_lock: %s", e.msg);
}

static void dset(mpe_shm_obj *d, const char *k, const char *v)
{
    mpe_err e;
    dlock(d);
    if (mpe__dict_set(d, k, strlen(k), v, strlen(v), &e) != 0)
        MPE_FAIL("mpe__dict_set: %s", e.msg);
    mpe__dict_unlock(d);
}

/* The value of k as a string (static buffer), or NULL. */
static const char *dget(mpe_shm_obj *d, const char *k)
{
    static char out[128];
    const void *v;
    size_t vn;
    dlock(d);
    int found = mpe__dict_find(d, k, strlen(k), &v, &vn);
    if (found) {
        MPE_ASSERT(vn < sizeof out);
        memcpy(out, v, vn);
        out[vn] = 0;
    }
    mpe__dict_unlock(d);
    return found ? out : NULL;
}

static size_t dcount(mpe_shm_obj *d)
{
    dlock(d);
    size_t n = mpe__dict_count(d);
    mpe__dict_unlock(d);
    return n;
}

static void test_dict_basics_and_growth(void)
{
    mpe_shm_obj *d = dnew();
    char k[32], v[64];
    MPE_ASSERT(dget(d, "missing") == NULL);
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof k, "key%d", i);
        snprintf(v, sizeof v, "value %d", i * 3);
        dset(d, k, v);
    }
    MPE_ASSERT_EQ(dcount(d), 20000);
    for (int i = 0; i < 20000; i += 7) {
        snprintf(k, sizeof k, "key%d", i);
        snprintf(v, sizeof v, "value %d", i * 3);
        MPE_ASSERT_STREQ(dget(d, k), v);
    }
    dset(d, "key5", "replaced, and longer than before");
    MPE_ASSERT_STREQ(dget(d, "key5"), "replaced, and longer than before");
    dlock(d);
    for (int i = 0; i < 20000; i += 2) {
        snprintf(k, sizeof k, "key%d", i);
        MPE_ASSERT_EQ(mpe__dict_delete(d, k, strlen(k)), 1);
    }
    MPE_ASSERT_EQ(mpe__dict_delete(d, "key0", 4), 0);
    size_t pos = 0, kn, vn, seen = 0;
    const void *kp, *vp;
    while (mpe__dict_next(d, &pos, &kp, &kn, &vp, &vn))
        seen++;
    mpe__dict_unlock(d);
    MPE_ASSERT_EQ(seen, 10000);
    MPE_ASSERT_EQ(dcount(d), 10000);
    MPE_ASSERT(dget(d, "key4") == NULL);
    MPE_ASSERT_STREQ(dget(d, "key5"), "replaced, and longer than before");
    /* Rewriting one key again and again recycles the heap instead of growing it. */
    for (int i = 0; i < 100000; i++) {
        snprintf(v, sizeof v, "%d", i);
        dset(d, "counter", v);
    }
    MPE_ASSERT_STREQ(dget(d, "counter"), "99999");
    mpe_err e;
    dlock(d);
    MPE_ASSERT_EQ(mpe__dict_clear(d, &e), 0);
    mpe__dict_unlock(d);
    MPE_ASSERT_EQ(dcount(d), 0);
    MPE_ASSERT(dget(d, "key5") == NULL);
    mpe__dict_drop(d);
}

static void test_dict_shared_and_growing_across_processes(void)
{
    mpe_shm_obj *d = dnew();
    dset(d, "parent", "yes");
    pid_t pid = fork();
    if (pid == 0) { /* grows the file far beyond the parent's mapping */
        char k[32];
        for (int i = 0; i < 5000; i++) {
            snprintf(k, sizeof k, "child%d", i);
            dset(d, k, "a value long enough to need several rebuilds of the table");
        }
        _exit(strcmp(dget(d, "parent"), "yes") == 0 ? 0 : 1);
    }
    MPE_ASSERT_EQ(wait_child(pid), 0);
    MPE_ASSERT_EQ(dcount(d), 5001);
    MPE_ASSERT_STREQ(dget(d, "child4999"), "a value long enough to need several rebuilds of the table");
    mpe__dict_drop(d);
}

static void set_doomed(mpe_shm_obj *d) { dset(d, "doomed", "never seen"); }

/* Fill until the next set must rebuild, then let the child die there. */
static void rebuild_doomed(mpe_shm_obj *d)
{
    char k[32];
    for (int i = 0;; i++) {
        snprintf(k, sizeof k, "filler%d", i);
        dset(d, k, "filler value");
    }
}

static void test_dict_holder_killed(void)
{
    mpe_shm_obj *d = dnew();
    dset(d, "a", "1");
    dset(d, "b", "2");
    crash_in_child(MPE_CRASH_DICT_WRITTEN, set_doomed, d);
    MPE_ASSERT(dget(d, "doomed") == NULL); /* the lock was recovered, nothing half done */
    MPE_ASSERT_EQ(dcount(d), 2);
    crash_in_child(MPE_CRASH_DICT_REBUILT, rebuild_doomed, d);
    size_t n = dcount(d); /* the fillers set before the rebuild, and a, b */
    MPE_ASSERT(n > 2);
    MPE_ASSERT_STREQ(dget(d, "a"), "1");
    MPE_ASSERT_STREQ(dget(d, "filler0"), "filler value");
    dset(d, "c", "3");
    MPE_ASSERT_EQ(dcount(d), n + 1);
    /* A holder that dies with the lock simply held. */
    pid_t pid = fork();
    if (pid == 0) {
        dlock(d);
        raise(SIGKILL);
    }
    MPE_ASSERT_EQ(wait_child(pid), 128 + SIGKILL);
    MPE_ASSERT_STREQ(dget(d, "c"), "3");
    mpe__dict_drop(d);
}

static void test_dict_create_destroy_no_leak(void)
{
    int segs0, objs0, segs, objs;
    mpe__shm_stats(&segs0, &objs0);
    for (int i = 0; i < 2000; i++) {
        mpe_shm_obj *d = dnew();
        dset(d, "k", "v");
        mpe__dict_drop(d);
    }
    mpe__shm_stats(&segs, &objs);
    MPE_ASSERT_EQ(objs, objs0);
    MPE_ASSERT(segs <= segs0 + 1); /* at most a new current slab */
}

MPE_TEST_MAIN(MPE_TEST(test_queue_fifo_and_wrap), MPE_TEST(test_queue_timeouts_and_maxsize),
              MPE_TEST(test_queue_close), MPE_TEST(test_queue_spills_large_items),
              MPE_TEST(test_queue_descriptors_cross_processes),
              MPE_TEST(test_queue_reference_travels),
              MPE_TEST(test_queue_reference_checks_descriptors), MPE_TEST(test_queue_writer_killed_mid_put),
              MPE_TEST(test_queue_reader_killed_mid_get),
              MPE_TEST(test_queue_reader_killed_while_blocked),
              MPE_TEST_T(test_queue_many_producers_keep_order, 60),
              MPE_TEST_T(test_queue_many_consumers_each_item_once, 60),
              MPE_TEST(test_queue_grows_and_shrinks), MPE_TEST(test_queue_killed_while_growing),
              MPE_TEST(test_queue_create_destroy_no_leak),
              MPE_TEST(test_pipe_frames_descriptors_and_eof), MPE_TEST(test_pipe_recv_timeout),
              MPE_TEST(test_dict_basics_and_growth),
              MPE_TEST(test_dict_shared_and_growing_across_processes),
              MPE_TEST(test_dict_holder_killed), MPE_TEST(test_dict_create_destroy_no_leak))
