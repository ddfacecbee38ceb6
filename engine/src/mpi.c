/* mpi.c -- the MPI backend's launch and world: joining MPI under a launcher
 * (rank 0 runs the script, the other ranks serve it), what every rank knows
 * of the others, and the watch connections that tell rank 0 a rank ended.
 * The message layer all of them use is mpi_msg.c.
 * SPDX-License-Identifier: MIT
 *
 * Linked into the `mpe` command of an MPE_MPI build only: mpe.so and libmpe
 * never need libmpi, and the engine reaches the backend through mpe__ranks.
 * One thread per process calls MPI (rank 0: the bridge thread; other ranks:
 * the main thread), so MPI_THREAD_SERIALIZED is enough. Open MPI's blocking
 * calls spin, so nothing here blocks in MPI: the loops sleep in poll with a
 * timeout that grows while nothing happens (at most 10 ms) and probe MPI
 * between sleeps. Protocol: docs/ARCHITECTURE.md, "The MPI backend". */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "codec.h"
#include "err.h"
#include "mpi_world.h"
#include "proc.h"
#include "ranks.h"
#include "sig.h"

#define WATCH_ADDRS 16        /* rank 0's IPv4 addresses offered for watch connections */
#define WATCH_CONNECT_MS 2000 /* per address tried */
#define WATCH_ACCEPT_MS 10000 /* for all the ranks that connected */

static mpe_ranks ops;

/* ---- watching the ranks ------------------------------------------------------------
 * Rank 0 must see a serving rank die wherever it ran, before the launcher's
 * SIGTERM ends rank 0 too, so that it can name the items the rank held. Each
 * serving rank opens a TCP connection to rank 0 at start and keeps it, never
 * writing to it: the kernel closes it when the process ends, however it ends
 * (SIGKILL included), and rank 0's bridge, which sleeps on it, reads the end
 * at once. A pidfd would do only on rank 0's host. A rank that cannot connect
 * (a firewall) is not watched: rank 0 says so, and its death is then seen by
 * the launcher alone. */
typedef struct watch_ad {
    uint32_t n, port;           /* port in network order */
    uint32_t addr[WATCH_ADDRS]; /* network order; loopback last */
} watch_ad;

/* Rank 0: listen on every address, list them. -1 if no socket. */
static int watch_listen(watch_ad *ad)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    ad->port = sa.sin_port;
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) == 0) {
        for (struct ifaddrs *i = ifs; i && ad->n < WATCH_ADDRS - 1; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
                continue;
            uint32_t a = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr;
            if (ntohl(a) >> 24 != 127) /* other hosts need an address that is not loopback */
                ad->addr[ad->n++] = a;
        }
        freeifaddrs(ifs);
    }
    ad->addr[ad->n++] = htonl(INADDR_LOOPBACK);
    return fd;
}

/* Connect to one address within WATCH_CONNECT_MS: the descriptor, or -1. */
static int watch_try(uint32_t addr, uint32_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = (in_port_t)port, .sin_addr.s_addr = addr};
    int err = 0;
    socklen_t len = sizeof err;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS) {
            err = errno;
        } else {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            int r;
            do
                r = poll(&pf, 1, WATCH_CONNECT_MS);
            while (r < 0 && errno == EINTR);
            if (r <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                err = ETIMEDOUT;
        }
    }
    if (err) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A serving rank: connect to rank 0 and say who this is ({rank, pid}). On
 * rank 0's host the loopback address (listed last) goes first; elsewhere it
 * is never tried (it would be this host's). The descriptor, or -1. */
static int watch_connect(const watch_ad *ad, const mpe_mpi_world *w)
{
    int same = strcmp(w->host[0], w->host[w->me]) == 0;
    uint32_t n = ad->n < WATCH_ADDRS ? ad->n : WATCH_ADDRS;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t a = ad->addr[same ? (k + n - 1) % n : k]; /* same host: the last (loopback) first */
        if (!same && ntohl(a) >> 24 == 127)
            continue;
        int fd = watch_try(a, ad->port);
        if (fd < 0)
            continue;
        int32_t id[2] = {w->me, (int32_t)getpid()};
        if (send(fd, id, sizeof id, MSG_NOSIGNAL) == (ssize_t)sizeof id)
            return fd;
        close(fd);
    }
    return -1;
}

/* Rank 0: accept the connections of the ranks that made one; w->watch[r]
 * for each rank that says who it is (and whose pid matches). */
static void watch_accept(int lfd, int expect, mpe_mpi_world *w)
{
    int64_t end = mpe__mpi_now_ns() + (int64_t)WATCH_ACCEPT_MS * 1000000;
    while (expect > 0 && mpe__mpi_now_ns() < end) {
        struct pollfd pf = {.fd = lfd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int32_t id[2] = {0, 0};
        struct pollfd rf = {.fd = fd, .events = POLLIN};
        if (poll(&rf, 1, WATCH_CONNECT_MS) == 1 && recv(fd, id, sizeof id, MSG_WAITALL) == (ssize_t)sizeof id &&
            id[0] > 0 && id[0] < w->size && w->watch[id[0]] < 0 && id[1] == (int32_t)w->pid[id[0]]) {
            w->watch[id[0]] = fd;
            mpe__proc_track_fd(fd); /* forked workers must not keep it */
            expect--;
        } else
            close(fd); /* not one of ours */
    }
}

/* Set up w->watch (every rank takes part). Cannot fail: a rank left
 * unwatched is named on stderr. */
static void watch_start(mpe_mpi_world *w)
{
    watch_ad ad = {0};
    int lfd = -1, ok = 0, expect = 0;
    if (w->me == 0)
        lfd = watch_listen(&ad);
    MPI_Bcast(&ad, sizeof ad, MPI_BYTE, 0, w->comm);
    if (w->me > 0 && ad.n > 0 && (w->watch[0] = watch_connect(&ad, w)) >= 0) {
        mpe__proc_track_fd(w->watch[0]);
        ok = 1;
    }
    /* Rank 0 gathers who connected into watch[] (all -1 again below). */
    MPI_Gather(&ok, 1, MPI_INT, w->watch, 1, MPI_INT, 0, w->comm);
    if (w->me != 0)
        return;
    for (int r = 0; r < w->size; r++) {
        expect += r > 0 && w->watch[r] == 1;
        w->watch[r] = -1;
    }
    if (lfd >= 0) {
        watch_accept(lfd, expect, w);
        close(lfd);
    }
    for (int r = 1; r < w->size; r++)
        if (w->watch[r] < 0)
            fprintf(stderr, "mpe: rank %d (pid %d on %s) cannot be watched (no TCP connection to rank 0): "
                    "if it dies, only the launcher notices\n", r, (int)w->pid[r], w->host[r]);
}

static void watch_stop(mpe_mpi_world *w)
{
    for (int r = 0; w->watch && r < w->size; r++)
        if (w->watch[r] >= 0) {
            mpe__proc_untrack_fd(w->watch[r]);
            close(w->watch[r]);
            w->watch[r] = -1;
        }
}

/* ---- start and end ----------------------------------------------------------------- */

int mpe__mpi_launched(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMIX_RANK", "PMI_SIZE",
                                 "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

int mpe__mpi_start(int *argc, char ***argv, mpe_err *e)
{
    mpe_mpi_world *w = &mpe__mpi_world;
    int provided = 0;
    /* Open MPI's own SIGSEGV/SIGBUS handlers would print a backtrace for a
     * worker that crashes; mpe reports crashes itself. */
    setenv("OMPI_MCA_opal_signal", "", 0);
    if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return mpe__seterr(e, "MPI_Init_thread failed");
    if (provided < MPI_THREAD_SERIALIZED) {
        MPI_Finalize();
        return mpe__seterr(e, "MPI provides no MPI_THREAD_SERIALIZED (got level %d)", provided);
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &w->comm);
    MPI_Comm_rank(w->comm, &w->me);
    MPI_Comm_size(w->comm, &w->size);
    /* Functions only decode under the key that made their MAC: every rank uses rank 0's. */
    unsigned char key[16];
    mpe__codec_get_key(key);
    MPI_Bcast(key, sizeof key, MPI_BYTE, 0, w->comm);
    mpe__codec_set_key(key);
    w->workers = calloc((size_t)w->size, sizeof *w->workers);
    w->pid = calloc((size_t)w->size, sizeof *w->pid);
    w->host = calloc((size_t)w->size, sizeof *w->host);
    w->watch = malloc((size_t)w->size * sizeof *w->watch);
    if (!w->workers || !w->pid || !w->host || !w->watch || mpe__mpi_msg_init(w->size) != 0)
        return mpe__seterr(e, "not enough memory");
    for (int r = 0; r < w->size; r++)
        w->watch[r] = -1;
    int mine = mpe__proc_default_workers(), pid = (int)getpid();
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    MPI_Allgather(&mine, 1, MPI_INT, w->workers, 1, MPI_INT, w->comm);
    MPI_Allgather(&pid, 1, MPI_INT, w->pid, 1, MPI_INT, w->comm);
    MPI_Allgather(host, 64, MPI_CHAR, w->host, 64, MPI_CHAR, w->comm);
    if (w->size > 1)
        watch_start(w);
    mpe__proc_set_rank(w->me);
    ops.rank = w->me;
    ops.size = w->size;
    ops.pid = getpid();
    ops.workers = w->workers;
    ops.transport = &mpe__mpi_transport;
    ops.where = mpe__mpi_where;
    mpe__ranks = &ops;
    if (w->me == 0 && w->size > 1 && mpe__mpi_link_start(e) != 0)
        return -1;
    return w->me;
}

void mpe__mpi_finish(void)
{
    if (mpe__mpi_world.comm == MPI_COMM_NULL)
        return;
    mpe__mpi_link_stop();
    watch_stop(&mpe__mpi_world);
    mpe__ranks = NULL;
    MPI_Comm_free(&mpe__mpi_world.comm);
    MPI_Finalize();
}
