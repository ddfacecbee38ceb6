/* tharness.h -- a tiny test harness for the C unit tests (tests/c/test_*.c).
 * SPDX-License-Identifier: MIT
 *
 * Each case runs in its own forked child under alarm() (default 30 s), the way
 * libuv's runner does, so a crash or hang fails one case, not the file. After a
 * case the child checks that it left no child processes and no new descriptors,
 * and the parent checks that no zombie remains. Usage:
 *
 *     static void test_roundtrip(void) { MPE_ASSERT_EQ(1 + 1, 2); }
 *     MPE_TEST_MAIN(MPE_TEST(test_roundtrip), MPE_TEST_T(test_slow, 60))
 *
 * `./test_x name` runs only the case called name. Nothing here is a function
 * definition: the runner is the body of main(), expanded by MPE_TEST_MAIN. */
#ifndef MPE_THARNESS_H
#define MPE_THARNESS_H

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

struct tharness_case {
    const char *name;
    void (*fn)(void);
    unsigned timeout; /* seconds */
};

#define MPE_TEST(fn) {#fn, fn, 30}
#define MPE_TEST_T(fn, seconds) {#fn, fn, (seconds)}

/* Failing an assertion ends the case's process with status 1. */
#define MPE_FAIL(...)                                                                \
    do {                                                                             \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                              \
        fprintf(stderr, __VA_ARGS__);                                                \
        fputc('\n', stderr);                                                         \
        fflush(NULL);                                                                \
        _exit(1);                                                                    \
    } while (0)

#define MPE_ASSERT(cond)                                                             \
    do {                                                                             \
        if (!(cond))                                                                 \
            MPE_FAIL("assertion failed: %s", #cond);                                 \
    } while (0)

/* Integers (and pointers cast to intmax_t): prints both sides. */
#define MPE_ASSERT_EQ(a, b)                                                          \
    do {                                                                             \
        intmax_t tharness_a = (intmax_t)(a), tharness_b = (intmax_t)(b);             \
        if (tharness_a != tharness_b)                                                \
            MPE_FAIL("%s == %s failed: %jd != %jd", #a, #b, tharness_a, tharness_b); \
    } while (0)

/* Strings; NULL compares equal only to NULL. */
#define MPE_ASSERT_STREQ(a, b)                                                       \
    do {                                                                             \
        const char *tharness_a = (a), *tharness_b = (b);                             \
        if (!tharness_a || !tharness_b ? tharness_a != tharness_b                    \
                                       : strcmp(tharness_a, tharness_b) != 0)        \
            MPE_FAIL("%s == %s failed: \"%s\" != \"%s\"", #a, #b,                    \
                     tharness_a ? tharness_a : "(null)",                             \
                     tharness_b ? tharness_b : "(null)");                            \
    } while (0)

/* s contains needle (both non-NULL). */
#define MPE_ASSERT_CONTAINS(s, needle)                                               \
    do {                                                                             \
        const char *tharness_s = (s), *tharness_n = (needle);                        \
        if (!tharness_s || !strstr(tharness_s, tharness_n))                          \
            MPE_FAIL("%s does not contain \"%s\": \"%s\"", #s, tharness_n,           \
                     tharness_s ? tharness_s : "(null)");                            \
    } while (0)

/* Number of open descriptors of this process (-1 if /proc is missing). */
#define THARNESS_COUNT_FDS(out)                                                      \
    do {                                                                             \
        DIR *tharness_d = opendir("/proc/self/fd");                                  \
        (out) = -1;                                                                  \
        if (tharness_d) {                                                            \
            (out) = 0;                                                               \
            while (readdir(tharness_d))                                              \
                (out)++;                                                             \
            closedir(tharness_d);                                                    \
        }                                                                            \
    } while (0)

#define MPE_TEST_MAIN(...)                                                                \
    int main(int argc, char **argv)                                                       \
    {                                                                                     \
        static const struct tharness_case cases[] = {__VA_ARGS__};                        \
        int ncases = (int)(sizeof cases / sizeof cases[0]), failed = 0, ran = 0;          \
        setvbuf(stdout, NULL, _IONBF, 0);                                                 \
        for (int i = 0; i < ncases; i++) {                                                \
            if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)                          \
                continue;                                                                 \
            ran++;                                                                        \
            pid_t pid = fork();                                                           \
            if (pid < 0) {                                                                \
                perror("fork");                                                           \
                return 1;                                                                 \
            }                                                                             \
            if (pid == 0) {                                                               \
                int fds_before, fds_after;                                                \
                THARNESS_COUNT_FDS(fds_before);                                           \
                alarm(cases[i].timeout);                                                  \
                cases[i].fn();                                                            \
                alarm(0);                                                                 \
                fflush(NULL);                                                             \
                THARNESS_COUNT_FDS(fds_after);                                            \
                if (fds_after != fds_before)                                              \
                    MPE_FAIL("%s leaked descriptors: %d open before, %d after",           \
                             cases[i].name, fds_before, fds_after);                       \
                errno = 0;                                                                \
                if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)                  \
                    MPE_FAIL("%s left child processes behind", cases[i].name);            \
                _exit(0);                                                                 \
            }                                                                             \
            int st = 0;                                                                   \
            pid_t r;                                                                      \
            do                                                                            \
                r = waitpid(pid, &st, 0);                                                 \
            while (r == -1 && errno == EINTR);                                            \
            int ok = r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;                   \
            if (ok) {                                                                     \
                printf("ok   %s\n", cases[i].name);                                       \
            } else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM) {                      \
                printf("FAIL %s: timed out after %u s\n", cases[i].name, cases[i].timeout); \
            } else if (WIFSIGNALED(st)) {                                                 \
                printf("FAIL %s: killed by signal %d\n", cases[i].name, WTERMSIG(st));    \
            } else {                                                                      \
                printf("FAIL %s\n", cases[i].name);                                       \
            }                                                                             \
            failed += !ok;                                                                \
            errno = 0;                                                                    \
            if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD) {                    \
                printf("FAIL %s: a zombie or child process remains\n", cases[i].name);    \
                failed++;                                                                 \
            }                                                                             \
        }                                                                                 \
        if (argc > 1 && ran == 0) {                                                       \
            printf("no test case named %s\n", argv[1]);                                   \
            return 1;                                                                     \
        }                                                                                 \
        printf("%d of %d cases passed\n", ran - failed < 0 ? 0 : ran - failed, ran);      \
        return failed ? 1 : 0;                                                            \
    }

#endif
