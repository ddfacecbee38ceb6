/* test_proc.c -- unit tests of proc.c: fork discipline (signals, tracked
 * descriptors, PDEATHSIG, stdio), process identity, CPU count, default workers.
 * SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>
#include "err.h"
#include "proc.h"
#include "tharness.h"

static int wait_status(pid_t pid)
{
    int st;
    pid_t r;
    do
        r = waitpid(pid, &st, 0);
    while (r == -1 && errno == EINTR);
    MPE_ASSERT_EQ(r, pid);
    return st;
}

static void on_usr1(int sig)
{
    (void)sig;
}

/* The child: handlers reset, ignored signals kept (SIGPIPE ignored), the
 * parent's mask restored, PDEATHSIG set, tracked descriptors closed. */
static void test_child_setup(void)
{
    int fds[2];
    MPE_ASSERT_EQ(pipe(fds), 0);
    mpe__proc_track_fd(fds[0]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    MPE_ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
    signal(SIGHUP, SIG_IGN);
    sigset_t block, before, after;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    MPE_ASSERT_EQ(sigprocmask(SIG_BLOCK, &block, &before), 0);

    mpe_err e;
    pid_t pid = mpe__proc_fork(&e);
    MPE_ASSERT(pid >= 0);
    if (pid == 0) {
        struct sigaction cur;
        sigset_t mask;
        int sig = 0;
        if (fcntl(fds[0], F_GETFD) != -1 || errno != EBADF)
            _exit(10); /* the tracked descriptor is still open */
        if (fcntl(fds[1], F_GETFD) == -1)
            _exit(11); /* an untracked one was closed */
        sigaction(SIGUSR1, NULL, &cur);
        if (cur.sa_handler != SIG_DFL)
            _exit(12);
        sigaction(SIGHUP, NULL, &cur);
        if (cur.sa_handler != SIG_IGN)
            _exit(13);
        sigaction(SIGPIPE, NULL, &cur);
        if (cur.sa_handler != SIG_IGN)
            _exit(14);
        sigprocmask(SIG_SETMASK, NULL, &mask);
        if (!sigismember(&mask, SIGUSR2) || sigismember(&mask, SIGTERM))
            _exit(15);
        if (prctl(PR_GET_PDEATHSIG, &sig) != 0 || sig != SIGKILL)
            _exit(16);
        _exit(0);
    }
    int st = wait_status(pid);
    MPE_ASSERT(WIFEXITED(st));
    MPE_ASSERT_EQ(WEXITSTATUS(st), 0);
    /* The parent's mask and handlers are untouched. */
    MPE_ASSERT_EQ(sigprocmask(SIG_SETMASK, &before, &after), 0);
    MPE_ASSERT(sigismember(&after, SIGUSR2));
    MPE_ASSERT(!sigismember(&after, SIGTERM));
    struct sigaction cur;
    sigaction(SIGUSR1, NULL, &cur);
    MPE_ASSERT(cur.sa_handler == on_usr1);
    mpe__proc_untrack_fd(fds[0]);
    close(fds[0]);
    close(fds[1]);
}

/* An untracked descriptor is no longer closed in later children. */
static void test_untrack(void)
{
    int fds[2];
    MPE_ASSERT_EQ(pipe(fds), 0);
    mpe__proc_track_fd(fds[0]);
    mpe__proc_track_fd(fds[1]);
    mpe__proc_untrack_fd(fds[0]);
    mpe_err e;
    pid_t pid = mpe__proc_fork(&e);
    MPE_ASSERT(pid >= 0);
    if (pid == 0)
        _exit(fcntl(fds[0], F_GETFD) != -1 && fcntl(fds[1], F_GETFD) == -1 ? 0 : 1);
    int st = wait_status(pid);
    MPE_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    mpe__proc_untrack_fd(fds[1]);
    close(fds[0]);
    close(fds[1]);
}

/* Buffered output is flushed before fork, so it is written once. */
static void test_flush_before_fork(void)
{
    FILE *f = tmpfile();
    MPE_ASSERT(f != NULL);
    fputs("once", f);
    mpe_err e;
    pid_t pid = mpe__proc_fork(&e);
    MPE_ASSERT(pid >= 0);
    if (pid == 0) {
        fflush(NULL);
        _exit(0);
    }
    wait_status(pid);
    fflush(f);
    char buf[32] = "";
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    MPE_ASSERT_STREQ(buf, "once");
    fclose(f);
}

/* A child whose parent dies is killed (PR_SET_PDEATHSIG). This process is made
 * a subreaper so that it inherits the orphan and can see how it ended. */
static void test_pdeathsig(void)
{
    int fds[2];
    MPE_ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    MPE_ASSERT_EQ(pipe(fds), 0);
    pid_t middle = fork();
    MPE_ASSERT(middle >= 0);
    if (middle == 0) {
        int ready[2];
        mpe_err e;
        if (pipe(ready) != 0)
            _exit(1);
        pid_t child = mpe__proc_fork(&e);
        if (child == 0) {
            /* Set up (PDEATHSIG armed): tell the parent it may die now. */
            char c = 'r';
            if (write(ready[1], &c, 1) != 1)
                _exit(1);
            for (;;)
                pause();
        }
        char c;
        if (child < 0 || read(ready[0], &c, 1) != 1 ||
            write(fds[1], &child, sizeof child) != (ssize_t)sizeof child)
            _exit(1);
        _exit(0); /* dies, orphaning child */
    }
    pid_t child = 0;
    MPE_ASSERT_EQ(read(fds[0], &child, sizeof child), (ssize_t)sizeof child);
    wait_status(middle);
    int st = wait_status(child);
    MPE_ASSERT(WIFSIGNALED(st));
    MPE_ASSERT_EQ(WTERMSIG(st), SIGKILL);
    close(fds[0]);
    close(fds[1]);
}

static void test_identity(void)
{
    MPE_ASSERT_STREQ(mpe__proc_name(), "MainProcess");
    MPE_ASSERT_EQ(mpe__proc_worker(), 0);
    mpe__proc_set_identity("PoolWorker-3", 2);
    MPE_ASSERT_STREQ(mpe__proc_name(), "PoolWorker-3");
    MPE_ASSERT_EQ(mpe__proc_worker(), 2);
    int first = mpe__proc_next_number();
    MPE_ASSERT_EQ(mpe__proc_next_number(), first + 1);
    mpe_err e;
    pid_t pid = mpe__proc_fork(&e);
    MPE_ASSERT(pid >= 0);
    if (pid == 0)
        _exit(mpe__proc_next_number() == 1 ? 0 : 1); /* a child counts its own */
    int st = wait_status(pid);
    MPE_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    MPE_ASSERT_EQ(mpe__proc_next_number(), first + 2);
}

static void test_cpu_count(void)
{
    int n = mpe__proc_cpu_count();
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    MPE_ASSERT(n >= 1);
    MPE_ASSERT(n <= online);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    MPE_ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
    MPE_ASSERT_EQ(mpe__proc_cpu_count(), 1);
}

static void test_default_workers(void)
{
    int cpus = mpe__proc_cpu_count();
    unsetenv("MPE_WORKERS");
    MPE_ASSERT_EQ(mpe__proc_default_workers(), cpus);
    setenv("MPE_WORKERS", "3", 1);
    MPE_ASSERT_EQ(mpe__proc_default_workers(), 3);
    setenv("MPE_WORKERS", "1024", 1);
    MPE_ASSERT_EQ(mpe__proc_default_workers(), 1024);
    static const char *invalid[] = {"0", "-2", "1025", "abc", "4x", ""};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        setenv("MPE_WORKERS", invalid[i], 1);
        MPE_ASSERT_EQ(mpe__proc_default_workers(), cpus);
    }
}

static void test_now(void)
{
    double a = mpe__proc_now();
    double b = mpe__proc_now();
    MPE_ASSERT(a > 0);
    MPE_ASSERT(b >= a);
}

MPE_TEST_MAIN(MPE_TEST(test_child_setup), MPE_TEST(test_untrack), MPE_TEST(test_flush_before_fork),
              MPE_TEST(test_pdeathsig), MPE_TEST(test_identity), MPE_TEST(test_cpu_count),
              MPE_TEST(test_default_workers), MPE_TEST(test_now))
