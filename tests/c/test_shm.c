/* test_shm.c -- unit tests of shared segments (shm.c) and arrays (array.c):
 * slabs, the mapping cache, references passed with SCM_RIGHTS to a process
 * forked before the object existed, conversions, atomic add, no leaks.
 * SPDX-License-Identifier: MIT */
#include <math.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include "array.h"
#include "buf.h"
#include "err.h"
#include "shm.h"
#include "tharness.h"

/* The current slab holds a descriptor for the life of the process: create it
 * before the harness counts descriptors, so that cases compare like with like. */
__attribute__((constructor)) static void prime_slab(void)
{
    mpe_shm_obj *o = mpe__array_new(mpe__array_ctype("int8"), 1, 1, 1, NULL);
    if (o)
        mpe__shm_unref(o);
}

static mpe_shm_obj *new_array(const char *type, size_t n)
{
    mpe_err e;
    mpe_shm_obj *o = mpe__array_new(mpe__array_ctype(type), 1, n, 1, &e);
    if (!o)
        MPE_FAIL("mpe__array_new(%s, %zu): %s", type, n, e.msg);
    return o;
}

static mpe_num I(int64_t v)
{
    mpe_num n = {1, v, 0};
    return n;
}

static mpe_num F(double v)
{
    mpe_num n = {0, 0, v};
    return n;
}

static void set(mpe_shm_obj *o, size_t i, mpe_num v)
{
    uint64_t bits;
    mpe_err e;
    if (mpe__array_check(o, v, &bits, &e) != 0)
        MPE_FAIL("mpe__array_check: %s", e.msg);
    mpe__array_put(o, i, bits);
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

static void test_ctypes(void)
{
    MPE_ASSERT_STREQ(mpe__array_ctype("int32")->name, "int32");
    MPE_ASSERT_STREQ(mpe__array_ctype("i")->name, "int32");
    MPE_ASSERT_STREQ(mpe__array_ctype("l")->name, "int64");
    MPE_ASSERT_STREQ(mpe__array_ctype("L")->name, "uint64");
    MPE_ASSERT_STREQ(mpe__array_ctype("Q")->name, "uint64");
    MPE_ASSERT_STREQ(mpe__array_ctype("d")->name, "double");
    MPE_ASSERT_STREQ(mpe__array_ctype("f")->name, "float");
    MPE_ASSERT_EQ(mpe__array_ctype("l")->size, 8);
    MPE_ASSERT(mpe__array_ctype("int33") == NULL);
    MPE_ASSERT(mpe__array_ctype("x") == NULL);
    MPE_ASSERT(mpe__array_ctype("") == NULL);
}

static void test_slab_and_single_segments(void)
{
    int segs0, objs0, segs, objs;
    mpe__shm_stats(&segs0, &objs0);
    mpe_shm_obj *a = new_array("int32", 4), *b = new_array("double", 8);
    mpe_shm_obj *big = new_array("double", 100000);
    MPE_ASSERT(mpe__shm_id(a) == mpe__shm_id(b)); /* small: one slab */
    MPE_ASSERT(mpe__shm_id(a) != mpe__shm_id(big));
    MPE_ASSERT_EQ(mpe__shm_id(big) >> 32, getpid()); /* the slab is the harness parent's */
    MPE_ASSERT_EQ((uintptr_t)a->p % 64, 0);
    MPE_ASSERT_EQ((uintptr_t)b->p % 64, 0);
    MPE_ASSERT(a->p != b->p);
    mpe__shm_stats(&segs, &objs);
    MPE_ASSERT_EQ(objs, objs0 + 3);
    MPE_ASSERT_EQ(segs, segs0 + 1);
    for (size_t i = 0; i < big->n; i++) /* fresh memory is zero-filled */
        MPE_ASSERT(mpe__array_get(big, i).d == 0);
    mpe__shm_unref(a);
    mpe__shm_unref(b);
    mpe__shm_unref(big);
    mpe__shm_stats(&segs, &objs);
    MPE_ASSERT_EQ(objs, objs0);
    MPE_ASSERT_EQ(segs, segs0);
}

static void test_many_cycles_leave_nothing(void)
{
    int segs0, objs0, segs, objs;
    mpe__shm_stats(&segs0, &objs0);
    for (int i = 0; i < 5000; i++) {
        mpe_shm_obj *o = new_array(i % 2 ? "int64" : "double", i % 7 ? 10 : 5000);
        set(o, 0, I(i));
        mpe__shm_unref(o);
    }
    mpe__shm_stats(&segs, &objs);
    MPE_ASSERT_EQ(objs, objs0);
    MPE_ASSERT_EQ(segs, segs0); /* the harness also checks the descriptors */
}

static void test_child_writes_parent_sees(void)
{
    mpe_shm_obj *a = new_array("int64", 1000);
    pid_t pid = fork();
    if (pid == 0) {
        for (size_t i = 0; i < a->n; i++)
            set(a, i, I((int64_t)i * 3));
        _exit(0);
    }
    MPE_ASSERT_EQ(wait_child(pid), 0);
    for (size_t i = 0; i < a->n; i++)
        MPE_ASSERT_EQ(mpe__array_get(a, i).i, (int64_t)i * 3);
    mpe__shm_unref(a);
}

/* After a fork, parent and child share the slab: the atomic bump pointer must
 * hand them different bytes. */
static void test_fork_slab_allocations_differ(void)
{
    mpe_shm_obj *where = new_array("uint64", 1);
    pid_t pid = fork();
    if (pid == 0) {
        mpe_shm_obj *o = new_array("int32", 2);
        set(where, 0, I((int64_t)o->off));
        MPE_ASSERT(mpe__shm_id(o) == mpe__shm_id(where));
        _exit(0);
    }
    MPE_ASSERT_EQ(wait_child(pid), 0);
    mpe_shm_obj *mine = new_array("int32", 2);
    MPE_ASSERT(mpe__shm_id(mine) == mpe__shm_id(where));
    MPE_ASSERT(mpe__array_get(where, 0).i != (int64_t)mine->off);
    mpe__shm_unref(mine);
    mpe__shm_unref(where);
}

static void close_fds(mpe_fds *fds)
{
    mpe__fds_close(fds);
}

static void test_ref_same_process_hits_cache(void)
{
    mpe_shm_obj *a = new_array("int16", 5);
    mpe_buf b = {0};
    mpe_fds fds = {.n = 0};
    mpe_err e;
    MPE_ASSERT_EQ(mpe__shm_ref_write(a, &b, &fds, &e), 0);
    MPE_ASSERT_EQ(mpe__shm_ref_write(a, &b, &fds, &e), 0);
    MPE_ASSERT_EQ(fds.n, 1); /* one descriptor per segment per message */
    mpe_rd r;
    mpe__rd_init(&r, b.p, b.n);
    mpe_shm_obj *x = mpe__shm_ref_read(&r, &fds, MPE_SHM_ARRAY, &e);
    mpe_shm_obj *y = mpe__shm_ref_read(&r, &fds, MPE_SHM_ARRAY, &e);
    MPE_ASSERT(x == a && y == a);
    MPE_ASSERT_EQ(a->refs, 3);
    MPE_ASSERT_EQ(mpe__shm_ref_write(a, &b, NULL, &e), -1);
    MPE_ASSERT_CONTAINS(e.msg, "no descriptor channel");
    mpe__shm_unref(x);
    mpe__shm_unref(y);
    mpe__shm_unref(a);
    /* the message owns a duplicate: it outlives the object */
    struct stat st;
    MPE_ASSERT_EQ(fstat(fds.fd[0], &st), 0);
    close_fds(&fds);
    mpe__buf_free(&b);
}

static void test_ref_malformed(void)
{
    mpe_shm_obj *a = new_array("int16", 5);
    mpe_buf b = {0};
    mpe_fds fds = {.n = 0};
    mpe_err e;
    MPE_ASSERT_EQ(mpe__shm_ref_write(a, &b, &fds, &e), 0);
    mpe_rd r;
    /* wrong kind */
    mpe__rd_init(&r, b.p, b.n);
    MPE_ASSERT(mpe__shm_ref_read(&r, &fds, MPE_SHM_LOCK, &e) == NULL);
    MPE_ASSERT_CONTAINS(e.msg, "kind");
    /* truncated */
    mpe__rd_init(&r, b.p, b.n - 1);
    MPE_ASSERT(mpe__shm_ref_read(&r, &fds, MPE_SHM_ARRAY, &e) == NULL);
    MPE_ASSERT_CONTAINS(e.msg, "truncated");
    /* no descriptor */
    mpe__rd_init(&r, b.p, b.n);
    MPE_ASSERT(mpe__shm_ref_read(&r, NULL, MPE_SHM_ARRAY, &e) == NULL);
    MPE_ASSERT_CONTAINS(e.msg, "descriptor");
    /* a descriptor that is not a segment */
    int p[2];
    MPE_ASSERT_EQ(pipe(p), 0);
    int one[1] = {p[0]};
    mpe_fds other = {.fd = one, .n = 1, .cap = 1};
    mpe__rd_init(&r, b.p, b.n);
    MPE_ASSERT(mpe__shm_ref_read(&r, &other, MPE_SHM_ARRAY, &e) == NULL);
    close(p[0]);
    close(p[1]);
    /* a bad offset inside a real segment */
    unsigned char *off = (unsigned char *)b.p + 8;
    off[0] ^= 8;
    mpe__rd_init(&r, b.p, b.n);
    MPE_ASSERT(mpe__shm_ref_read(&r, &fds, MPE_SHM_ARRAY, &e) == NULL);
    MPE_ASSERT_CONTAINS(e.msg, "malformed");
    MPE_ASSERT_EQ(a->refs, 1);
    mpe__shm_unref(a);
    close_fds(&fds);
    mpe__buf_free(&b);
}

static int send_fds(int sock, const void *p, size_t n, const mpe_fds *fds)
{
    return mpe__fdio_send_all(sock, p, n, fds->fd, fds->n);
}

static ssize_t recv_fds(int sock, void *p, size_t n, mpe_fds *fds)
{
    fds->n = 0;
    return mpe__fdio_recvmsg(sock, p, n, fds, 0);
}

/* The pool's case: a worker forked before the array existed gets it by
 * descriptor, maps it once (two references, one mapping) and writes into it. */
static void test_ref_over_scm_rights(void)
{
    int sv[2];
    MPE_ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        char msg[256];
        mpe_fds fds = {0};
        int segs0;
        mpe__shm_stats(&segs0, NULL);
        ssize_t n = recv_fds(sv[1], msg, sizeof msg, &fds);
        MPE_ASSERT(n > 0);
        MPE_ASSERT_EQ(fds.n, 2);
        mpe_rd r;
        mpe_err e;
        mpe__rd_init(&r, msg, (size_t)n);
        mpe_shm_obj *x = mpe__shm_ref_read(&r, &fds, MPE_SHM_ARRAY, &e);
        if (!x)
            MPE_FAIL("decode: %s", e.msg);
        mpe_shm_obj *y = mpe__shm_ref_read(&r, &fds, MPE_SHM_ARRAY, &e);
        mpe_shm_obj *z = mpe__shm_ref_read(&r, &fds, MPE_SHM_ARRAY, &e);
        MPE_ASSERT(y != NULL && z != NULL && x != y && y != z);
        MPE_ASSERT_EQ(mpe__array_attach(x, &e), 0);
        MPE_ASSERT_EQ(mpe__array_attach(z, &e), 0);
        MPE_ASSERT_EQ(z->n, 3);
        set(z, 2, I(-5));
        MPE_ASSERT_EQ(mpe__array_get(z, 2).i, -5);
        mpe__shm_unref(z);
        int segs;
        mpe__shm_stats(&segs, NULL);
        MPE_ASSERT_EQ(segs, segs0 + 2);
        close_fds(&fds); /* the caller's duty: decode kept duplicates */
        for (size_t i = 0; i < x->n; i++)
            set(x, i, I((int64_t)i + 7));
        mpe__shm_unref(x);
        mpe__shm_unref(y);
        close(sv[1]);
        _exit(0);
    }
    close(sv[1]);
    mpe_shm_obj *a = new_array("int32", 3000); /* a segment of its own */
    mpe_shm_obj *small = new_array("int8", 3), *small2 = new_array("int8", 3); /* a slab */
    mpe_buf b = {0};
    mpe_fds fds = {.n = 0};
    mpe_err e;
    MPE_ASSERT_EQ(mpe__shm_ref_write(a, &b, &fds, &e), 0);
    MPE_ASSERT_EQ(mpe__shm_ref_write(small, &b, &fds, &e), 0);
    MPE_ASSERT_EQ(mpe__shm_ref_write(small2, &b, &fds, &e), 0);
    MPE_ASSERT_EQ(fds.n, 2); /* one descriptor per segment */
    mpe__shm_unref(small2); /* the message outlives the object: its duplicate keeps the slab */
    mpe__shm_unref(small);
    MPE_ASSERT_EQ(send_fds(sv[0], b.p, b.n, &fds), 0);
    close_fds(&fds);
    MPE_ASSERT_EQ(wait_child(pid), 0);
    for (size_t i = 0; i < a->n; i++)
        MPE_ASSERT_EQ(mpe__array_get(a, i).i, (int64_t)i + 7);
    close(sv[0]);
    mpe__shm_unref(a);
    mpe__buf_free(&b);
}

static int check_fails(mpe_shm_obj *o, mpe_num v, const char *needle)
{
    uint64_t bits;
    mpe_err e;
    if (mpe__array_check(o, v, &bits, &e) == 0)
        return 0;
    return strstr(e.msg, needle) != NULL;
}

static void test_conversions(void)
{
    mpe_shm_obj *i8 = new_array("int8", 1), *u8 = new_array("uint8", 1);
    mpe_shm_obj *i32 = new_array("int32", 1), *u64 = new_array("uint64", 1);
    mpe_shm_obj *i64 = new_array("int64", 1), *f = new_array("float", 1);
    MPE_ASSERT(check_fails(i8, I(128), "value 128 out of range for int8 (-128..127)"));
    MPE_ASSERT(check_fails(i8, I(-129), "out of range"));
    set(i8, 0, I(-128));
    MPE_ASSERT_EQ(mpe__array_get(i8, 0).i, -128);
    MPE_ASSERT(check_fails(u8, I(-1), "value -1 out of range for uint8 (0..255)"));
    set(u8, 0, F(255.0));
    MPE_ASSERT_EQ(mpe__array_get(u8, 0).i, 255);
    MPE_ASSERT(check_fails(i32, F(1.5), "value 1.5 is not an integer (array of int32)"));
    MPE_ASSERT(check_fails(i32, F(NAN), "not an integer"));
    MPE_ASSERT(check_fails(i32, F(INFINITY), "not an integer"));
    MPE_ASSERT(check_fails(i32, F(4294967296.0), "out of range"));
    MPE_ASSERT(check_fails(u64, F(18446744073709551616.0), "out of range"));
    set(u64, 0, F(18446744073709549568.0)); /* largest double below 2^64 */
    MPE_ASSERT(!mpe__array_get(u64, 0).isint);
    MPE_ASSERT(mpe__array_get(u64, 0).d == 18446744073709549568.0);
    set(i64, 0, I(INT64_MIN));
    MPE_ASSERT(mpe__array_get(i64, 0).i == INT64_MIN);
    MPE_ASSERT(check_fails(i64, F(9223372036854775808.0), "out of range"));
    set(f, 0, F(0.1));
    MPE_ASSERT(mpe__array_get(f, 0).d == (double)0.1f);
    set(f, 0, I(3));
    MPE_ASSERT(mpe__array_get(f, 0).d == 3.0 && !mpe__array_get(f, 0).isint);
    mpe_shm_obj *all[] = {i8, u8, i32, u64, i64, f};
    for (int k = 0; k < 6; k++)
        mpe__shm_unref(all[k]);
}

static void test_add(void)
{
    mpe_shm_obj *i8 = new_array("int8", 1), *d = new_array("double", 1);
    mpe_shm_obj *u64 = new_array("uint64", 1);
    mpe_num out;
    mpe_err e;
    set(i8, 0, I(126));
    MPE_ASSERT_EQ(mpe__array_add(i8, 0, I(1), &out, &e), 0);
    MPE_ASSERT_EQ(out.i, 127);
    MPE_ASSERT_EQ(mpe__array_add(i8, 0, I(1), &out, &e), -1); /* refused, unchanged */
    MPE_ASSERT_CONTAINS(e.msg, "out of range for int8");
    MPE_ASSERT_EQ(mpe__array_get(i8, 0).i, 127);
    MPE_ASSERT_EQ(mpe__array_add(i8, 0, F(0.5), &out, &e), -1);
    MPE_ASSERT_CONTAINS(e.msg, "delta 0.5 is not an integer");
    MPE_ASSERT_EQ(mpe__array_add(i8, 0, F(-27.0), &out, &e), 0);
    MPE_ASSERT_EQ(out.i, 100);
    MPE_ASSERT_EQ(mpe__array_add(d, 0, F(0.25), &out, &e), 0);
    MPE_ASSERT(!out.isint && out.d == 0.25);
    set(u64, 0, I(INT64_MAX));
    MPE_ASSERT_EQ(mpe__array_add(u64, 0, I(INT64_MAX), &out, &e), 0);
    MPE_ASSERT(!out.isint && out.d == 18446744073709551614.0);
    MPE_ASSERT_EQ(mpe__array_add(u64, 0, I(2), &out, &e), -1);
    MPE_ASSERT_EQ(mpe__array_add(u64, 0, I(-INT64_MAX), &out, &e), 0);
    MPE_ASSERT(out.isint && out.i == INT64_MAX);
    mpe__shm_unref(i8);
    mpe__shm_unref(d);
    mpe__shm_unref(u64);
}

static void test_add_is_atomic_across_processes(void)
{
    mpe_shm_obj *c = new_array("int32", 2);
    mpe_shm_obj *d = new_array("double", 1);
    pid_t pids[3];
    for (int k = 0; k < 3; k++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            mpe_num out;
            for (int i = 0; i < 50000; i++) {
                if (mpe__array_add(c, 1, I(1), &out, NULL) != 0 ||
                    mpe__array_add(d, 0, F(1.0), &out, NULL) != 0)
                    _exit(2);
            }
            _exit(0);
        }
    }
    for (int k = 0; k < 3; k++)
        MPE_ASSERT_EQ(wait_child(pids[k]), 0);
    MPE_ASSERT_EQ(mpe__array_get(c, 1).i, 150000);
    MPE_ASSERT(mpe__array_get(d, 0).d == 150000.0);
    MPE_ASSERT_EQ(mpe__array_get(c, 0).i, 0);
    mpe__shm_unref(c);
    mpe__shm_unref(d);
}

static void test_fill_and_sum(void)
{
    mpe_shm_obj *a = new_array("int64", 4), *u = new_array("uint64", 3);
    mpe_shm_obj *m = new_array("int16", 10);
    set(a, 0, I(INT64_MAX));
    set(a, 1, I(INT64_MAX));
    mpe_num s = mpe__array_sum(a, 0, 4);
    MPE_ASSERT(!s.isint && s.d == 2.0 * 9223372036854775807.0); /* exact in 128 bits */
    s = mpe__array_sum(a, 1, 3);
    MPE_ASSERT(s.isint && s.i == INT64_MAX);
    set(u, 0, F(18446744073709549568.0));
    s = mpe__array_sum(u, 0, 3);
    MPE_ASSERT(!s.isint && s.d == 18446744073709549568.0);
    uint64_t bits;
    MPE_ASSERT_EQ(mpe__array_check(m, I(-3), &bits, NULL), 0);
    mpe__array_fill(m, 2, 7, bits);
    s = mpe__array_sum(m, 0, 10);
    MPE_ASSERT(s.isint && s.i == -15);
    MPE_ASSERT_EQ(mpe__array_get(m, 1).i, 0);
    MPE_ASSERT_EQ(mpe__array_get(m, 6).i, -3);
    MPE_ASSERT_EQ(mpe__array_get(m, 7).i, 0);
    s = mpe__array_sum(m, 4, 4);
    MPE_ASSERT(s.isint && s.i == 0);
    mpe__shm_unref(a);
    mpe__shm_unref(u);
    mpe__shm_unref(m);
}

static void test_two_dimensional_and_value(void)
{
    mpe_err e;
    mpe_shm_obj *m = mpe__array_new(mpe__array_ctype("double"), 2, 3, 4, &e);
    MPE_ASSERT(m != NULL);
    size_t rows, cols;
    MPE_ASSERT_EQ(mpe__array_shape(m, &rows, &cols), 2);
    MPE_ASSERT_EQ(rows, 3);
    MPE_ASSERT_EQ(cols, 4);
    MPE_ASSERT_EQ(m->n, 12);
    mpe_shm_obj *v = mpe__array_new(mpe__array_ctype("int32"), 0, 1, 1, &e);
    MPE_ASSERT_EQ(mpe__array_shape(v, &rows, &cols), 0);
    MPE_ASSERT_EQ(v->n, 1);
    MPE_ASSERT(check_fails(v, F(2.5), "(value of int32)"));
    MPE_ASSERT(mpe__array_new(mpe__array_ctype("double"), 2, SIZE_MAX / 2, 4, &e) == NULL);
    MPE_ASSERT_CONTAINS(e.msg, "too many");
    MPE_ASSERT(mpe__array_new(mpe__array_ctype("double"), 1, (size_t)1 << 45, 1, &e) == NULL);
    MPE_ASSERT_CONTAINS(e.msg, "too large");
    mpe__shm_unref(m);
    mpe__shm_unref(v);
}

MPE_TEST_MAIN(MPE_TEST(test_ctypes), MPE_TEST(test_slab_and_single_segments),
              MPE_TEST(test_many_cycles_leave_nothing), MPE_TEST(test_child_writes_parent_sees),
              MPE_TEST(test_fork_slab_allocations_differ),
              MPE_TEST(test_ref_same_process_hits_cache), MPE_TEST(test_ref_malformed),
              MPE_TEST(test_ref_over_scm_rights), MPE_TEST(test_conversions), MPE_TEST(test_add),
              MPE_TEST(test_add_is_atomic_across_processes), MPE_TEST(test_fill_and_sum),
              MPE_TEST(test_two_dimensional_and_value))
