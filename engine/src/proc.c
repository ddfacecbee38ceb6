/* proc.c -- process identity and fork discipline: how every mpe child is
 * forked, which descriptors it must not keep, what it is called, and how many
 * CPUs this process may use.
 * SPDX-License-Identifier: MIT
 *
 * The state here is process-wide on purpose: it describes this OS process (its
 * name, its pool slot, the parent-side descriptors it holds), not any one
 * lua_State, and fork copies it into the child, where mpe__proc_fork fixes it
 * up before anything else runs. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "err.h"
#include "proc.h"
#include "ranks.h"

#define MAX_WORKERS 1024

/* ---- identity ---------------------------------------------------------------- */

static char *ident_name;      /* NULL: "MainProcess" */
static int ident_worker;      /* pool slot, 0 if not a pool worker */
static int children_created;  /* processes this OS process has numbered */
static uint64_t forks;        /* children this OS process has forked */
static uint64_t ordinal;      /* this process among its parent's forks; 0: not forked by mpe */

void mpe__proc_set_identity(const char *name, int worker)
{
    char *copy = name ? strdup(name) : NULL;
    if (name && !copy)
        return; /* out of memory: keep the old name rather than none */
    free(ident_name);
    ident_name = copy;
    ident_worker = worker;
}

const char *mpe__proc_name(void)
{
    return ident_name ? ident_name : "MainProcess";
}

int mpe__proc_worker(void)
{
    return ident_worker;
}

/* ---- ranks (set by mpi.c under an MPI launcher) ---------------------------------- */

const mpe_ranks *mpe__ranks;
static int ident_rank;

int mpe__proc_rank(void)
{
    return ident_rank;
}

void mpe__proc_set_rank(int rank)
{
    ident_rank = rank;
}

int mpe__proc_next_number(void)
{
    return ++children_created;
}

uint64_t mpe__proc_ordinal(void)
{
    return ordinal;
}

/* ---- descriptors only the parent may hold ---------------------------------------
 * A pool's dispatcher thread untracks the channels of dead workers while the
 * main thread may track or fork, hence the mutex. mpe__proc_fork holds it
 * across fork(), so the child's copy of the list is consistent, and every
 * descriptor in it is still open (callers untrack before they close). */

static pthread_mutex_t track_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- fork and other threads ---------------------------------------------------
 * A pool's dispatcher thread allocates while it works; a fork at that moment
 * would give the child an allocator whose lock is held for ever (glibc resets
 * its own in the child, ASan's allocator does not). So dispatchers hold this
 * lock as readers while they work, and fork takes it as the writer (writers
 * first): every dispatcher is then asleep in poll, holding no lock. */
static pthread_rwlock_t fork_rw;
static pthread_once_t fork_rw_once = PTHREAD_ONCE_INIT;

static void fork_rw_init(void)
{
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&fork_rw, &a);
    pthread_rwlockattr_destroy(&a);
}

void mpe__proc_busy(void)
{
    pthread_once(&fork_rw_once, fork_rw_init);
    pthread_rwlock_rdlock(&fork_rw);
}

void mpe__proc_idle(void)
{
    pthread_rwlock_unlock(&fork_rw);
}
/* Each entry remembers what the descriptor referred to (device and inode):
 * the child closes a number only if it still names that object, so a stale
 * entry can never close an unrelated descriptor that reused the number. */
typedef struct tracked_fd {
    int fd;
    dev_t dev;
    ino_t ino;
} tracked_fd;
static tracked_fd *tracked;
static int ntracked, captracked;

void mpe__proc_track_fd(int fd)
{
    if (fd < 0)
        return;
    pthread_mutex_lock(&track_mu);
    if (ntracked == captracked) {
        int cap = captracked ? captracked * 2 : 32;
        tracked_fd *p = realloc(tracked, (size_t)cap * sizeof *p);
        if (!p) {
            /* Untracked: a later child merely keeps a copy of fd (PDEATHSIG
             * still ends it with the parent). */
            pthread_mutex_unlock(&track_mu);
            return;
        }
        tracked = p;
        captracked = cap;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        pthread_mutex_unlock(&track_mu);
        return;
    }
    tracked[ntracked].fd = fd;
    tracked[ntracked].dev = st.st_dev;
    tracked[ntracked].ino = st.st_ino;
    ntracked++;
    pthread_mutex_unlock(&track_mu);
}

void mpe__proc_untrack_fd(int fd)
{
    pthread_mutex_lock(&track_mu);
    for (int i = ntracked - 1; i >= 0; i--) {
        if (tracked[i].fd == fd) {
            tracked[i] = tracked[--ntracked];
            break;
        }
    }
    pthread_mutex_unlock(&track_mu);
}

/* ---- fork ---------------------------------------------------------------------- */

/* Runs in the child with every signal blocked, before any other code. */
static void child_setup(pid_t parent, uint64_t nth)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    /* The parent's handlers act on the parent's state (a self-pipe, a hook on
     * its lua_State): in the child they must not run. Ignored signals stay
     * ignored (as exec keeps them, so `nohup` still works), except SIGCHLD:
     * ignoring it would make the kernel reap the child's own children. */
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) != 0)
            continue;
        if (!(sa.sa_flags & SA_SIGINFO) &&
            (sa.sa_handler == SIG_DFL || (sig != SIGCHLD && sa.sa_handler == SIG_IGN)))
            continue; /* already the default, or kept ignored: no second system call */
        sigaction(sig, &dfl, NULL);
    }
    /* A write to a channel whose reader died returns EPIPE instead of killing us. */
    signal(SIGPIPE, SIG_IGN);
    /* No child outlives its parent. The parent may already have died between
     * fork and prctl, in which case nobody would send the signal: check. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    /* Parent-side ends of other workers' channels: keeping them open here
     * would hide the parent's death (no EOF) from those workers. */
    for (int i = 0; i < ntracked; i++) {
        struct stat st;
        if (fstat(tracked[i].fd, &st) == 0 && st.st_dev == tracked[i].dev &&
            st.st_ino == tracked[i].ino)
            close(tracked[i].fd);
    }
    ntracked = 0;
    children_created = 0;
    ordinal = nth; /* numbered by the parent in fork order, counting afresh here */
    forks = 0;
    /* The child has one thread: a fresh mutex, not the copy held across fork. */
    pthread_mutex_init(&track_mu, NULL);
}

pid_t mpe__proc_fork(mpe_err *e)
{
    sigset_t all, old;
    pid_t parent = getpid();
    /* Anything still buffered would be written twice, once by each process. */
    fflush(NULL);
    sigfillset(&all);
    int rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc != 0) {
        errno = rc;
        return mpe__seterr(e, "pthread_sigmask: %s", strerror(rc));
    }
    pthread_once(&fork_rw_once, fork_rw_init);
    pthread_rwlock_wrlock(&fork_rw);
    pthread_mutex_lock(&track_mu);
    uint64_t nth = forks + 1;
    pid_t pid = fork();
    if (pid == 0) {
        fork_rw_init(); /* the child has one thread: a fresh lock, not the held copy */
        child_setup(parent, nth);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return 0;
    }
    int saved = errno;
    pthread_mutex_unlock(&track_mu);
    pthread_rwlock_unlock(&fork_rw);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        errno = saved;
        return mpe__seterr(e, "fork(): %s", strerror(saved));
    }
    forks = nth;
    return pid;
}

/* ---- signal names ------------------------------------------------------------------ */

const char *mpe__proc_signal_name(int sig)
{
    switch (sig) {
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
    case SIGPIPE: return "SIGPIPE";
    case SIGILL: return "SIGILL";
    case SIGQUIT: return "SIGQUIT";
    case SIGALRM: return "SIGALRM";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    case SIGXCPU: return "SIGXCPU";
    default: return NULL; /* strsignal's text is locale-dependent: callers say "signal N" */
    }
}

/* ---- CPUs -------------------------------------------------------------------------- */

static int affinity_count(void)
{
    for (int ncpu = 1024; ncpu <= (1 << 16); ncpu *= 2) {
        cpu_set_t *set = CPU_ALLOC(ncpu);
        size_t size = CPU_ALLOC_SIZE(ncpu);
        if (!set)
            break;
        if (sched_getaffinity(0, size, set) == 0) {
            int n = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return n;
        }
        CPU_FREE(set);
        if (errno != EINVAL)
            break; /* EINVAL: the kernel's mask is larger; retry bigger */
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Read up to two numbers (or the word "max", as -1) from a small file. */
static int read_pair(const char *path, double *a, double *b)
{
    char line[128], w1[32] = "", w2[32] = "";
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok || sscanf(line, "%31s %31s", w1, w2) < 1)
        return -1;
    *a = strcmp(w1, "max") == 0 ? -1 : strtod(w1, NULL);
    *b = (*w2 == '\0') ? 0 : strtod(w2, NULL);
    return 0;
}

/* CPUs allowed by the quota in one cgroup directory; 0 if unlimited. */
static double dir_quota(const char *dir, int v2)
{
    char path[2200];
    double quota = 0, period = 0, unused;
    if (v2) {
        snprintf(path, sizeof path, "%s/cpu.max", dir);
        if (read_pair(path, &quota, &period) != 0)
            return 0;
    } else {
        snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
        if (read_pair(path, &quota, &unused) != 0)
            return 0;
        snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
        if (read_pair(path, &period, &unused) != 0)
            return 0;
    }
    return (quota > 0 && period > 0) ? quota / period : 0;
}

static int list_has(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (strncmp(p, item, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return 1;
    return 0;
}

/* This process's cgroup path for cgroup v2 (v2 = 1) or the v1 cpu controller. */
static int cgroup_path(int v2, char *out, size_t outsize)
{
    char line[1024];
    int found = 0;
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return -1;
    while (!found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        int is_v2 = strcmp(line, "0") == 0 && c1[1] == '\0';
        if (v2 ? is_v2 : (!is_v2 && list_has(c1 + 1, "cpu"))) {
            snprintf(out, outsize, "%s", c2 + 1);
            found = 1;
        }
    }
    fclose(f);
    return found ? 0 : -1;
}

/* Where the hierarchy is mounted, and which cgroup the mount shows as its root. */
static int cgroup_mount(int v2, char *mnt, char *root)
{
    char line[2048], fstype[32], super[512];
    int found = 0;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -1;
    while (!found && fgets(line, sizeof line, f)) {
        char *dash = strstr(line, " - ");
        if (!dash || sscanf(line, "%*d %*d %*s %511s %511s", root, mnt) != 2 ||
            sscanf(dash + 3, "%31s %*s %511s", fstype, super) != 2)
            continue;
        if (v2 ? strcmp(fstype, "cgroup2") == 0
               : (strcmp(fstype, "cgroup") == 0 && list_has(super, "cpu")))
            found = 1;
    }
    fclose(f);
    return found ? 0 : -1;
}

/* The tightest quota from this process's cgroup up to the hierarchy's root:
 * limits nest, so any ancestor may be the one that binds. 0 if none. */
static double cgroup_limit(int v2)
{
    char mnt[512], root[512], path[1024], dir[2048];
    if (cgroup_mount(v2, mnt, root) != 0 || cgroup_path(v2, path, sizeof path) != 0)
        return 0;
    const char *rel = path;
    size_t rootlen = strlen(root);
    if (strcmp(root, "/") != 0 && strncmp(path, root, rootlen) == 0)
        rel = path + rootlen;
    snprintf(dir, sizeof dir, "%s%s", mnt, strcmp(rel, "/") == 0 ? "" : rel);
    size_t mntlen = strlen(mnt);
    double best = 0;
    for (;;) {
        double q = dir_quota(dir, v2);
        if (q > 0 && (best == 0 || q < best))
            best = q;
        char *slash = strrchr(dir, '/');
        if (strlen(dir) <= mntlen || !slash || (size_t)(slash - dir) < mntlen)
            break;
        *slash = '\0';
    }
    return best;
}

int mpe__proc_cpu_count(void)
{
    int n = affinity_count();
    double limit = cgroup_limit(1), v1 = cgroup_limit(0);
    if (v1 > 0 && (limit == 0 || v1 < limit))
        limit = v1;
    if (limit > 0 && ceil(limit) < n)
        n = (int)ceil(limit);
    return n > 0 ? n : 1;
}

/* An MPE_WORKERS that is not an integer from 1 to 1024 is ignored (the CPU
 * count is used), so a stray value never stops a script; `mpe run -j`
 * validates its own argument before setting it. */
int mpe__proc_default_workers(void)
{
    const char *s = getenv("MPE_WORKERS");
    if (s && *s) {
        char *end;
        errno = 0;
        long n = strtol(s, &end, 10);
        if (errno == 0 && *end == '\0' && n >= 1 && n <= MAX_WORKERS)
            return (int)n;
    }
    return mpe__proc_cpu_count();
}

double mpe__proc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
