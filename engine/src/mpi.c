/* mpi.c -- the MPI backend's launch, world and messages: joining MPI under a
 * launcher (rank 0 runs the script, the other ranks serve it), what every
 * rank knows of the others, and the message layer the serving ranks
 * (mpi_serve.c) and rank 0's bridge (mpi_link.c) share.
 * SPDX-License-Identifier: MIT
 *
 * Linked into the `mpe` command of an MPE_MPI build only: mpe.so and libmpe
 * never need libmpi, and the engine reaches the backend through mpe__ranks.
 * One thread per process calls MPI (rank 0: the bridge thread; other ranks:
 * the main thread), so MPI_THREAD_SERIALIZED is enough. Open MPI's blocking
 * calls spin, so nothing here blocks in MPI: the loops sleep in poll with a
 * timeout that grows while nothing happens (at most 10 ms) and probe MPI
 * between sleeps. Protocol: docs/ARCHITECTURE.md, "The MPI backend". */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "mpi_world.h"

#define TAG 77
#define IDLE_MIN_US 20
#define IDLE_MAX_US 10000

mpe_mpi_world mpe__mpi_world = {.comm = MPI_COMM_NULL};
static mpe_ranks ops;

int64_t mpe__mpi_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* ---- sending without blocking, receiving, sleeping ---------------------------------- */
static mpe_mpi_msg *sendq;
static size_t pending;

mpe_mpi_msg *mpe__mpi_build(int dest, unsigned op, uint32_t id, const void *a, size_t na)
{
    mpe_mpi_msg *m = malloc(sizeof *m + MPE_MPI_HDR + na);
    if (!m)
        return NULL;
    m->dest = dest;
    m->next = NULL;
    m->p[0] = (char)op;
    memcpy(m->p + 1, &id, 4);
    if (na)
        memcpy(m->p + MPE_MPI_HDR, a, na);
    m->n = MPE_MPI_HDR + na;
    return m;
}

int mpe__mpi_send(mpe_mpi_msg *m)
{
    if (MPI_Isend(m->p, (int)m->n, MPI_BYTE, m->dest, TAG, mpe__mpi_world.comm, &m->rq) != MPI_SUCCESS) {
        free(m);
        return -1;
    }
    m->next = sendq;
    sendq = m;
    pending += m->n;
    return 0;
}

int mpe__mpi_post(int dest, unsigned op, uint32_t id, const void *a, size_t na)
{
    mpe_mpi_msg *m = mpe__mpi_build(dest, op, id, a, na);
    return m ? mpe__mpi_send(m) : -1;
}

int mpe__mpi_push(void)
{
    for (mpe_mpi_msg **pp = &sendq; *pp;) {
        mpe_mpi_msg *m = *pp;
        int done = 0;
        MPI_Test(&m->rq, &done, MPI_STATUS_IGNORE);
        if (done) {
            *pp = m->next;
            pending -= m->n;
            free(m);
        } else
            pp = &m->next;
    }
    return sendq != NULL;
}

size_t mpe__mpi_pending(void)
{
    return pending;
}

int mpe__mpi_take(mpe_buf *b, int *src)
{
    int flag = 0, n = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, TAG, mpe__mpi_world.comm, &flag, &st);
    if (!flag)
        return 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    b->n = 0;
    if (mpe__buf_grow(b, (size_t)n + 1) != 0) {
        fprintf(stderr, "mpe: rank %d: not enough memory for a message of %d bytes\n",
                mpe__mpi_world.me, n);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Recv(b->p, n, MPI_BYTE, st.MPI_SOURCE, TAG, mpe__mpi_world.comm, MPI_STATUS_IGNORE);
    b->n = (size_t)n;
    *src = st.MPI_SOURCE;
    return 1;
}

/* 20 µs for the first 2 ms (a pool at work sends again soon: keep latency
 * low), then a quarter of the idle time, at most IDLE_MAX_US (an idle rank
 * costs next to nothing). */
int mpe__mpi_idle_us(int64_t since)
{
    int64_t idle = (mpe__mpi_now_ns() - since) / 1000;
    if (idle < 2000)
        return IDLE_MIN_US;
    return idle / 4 > IDLE_MAX_US ? IDLE_MAX_US : (int)(idle / 4);
}

void mpe__mpi_nap(int fd, int us)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)us * 1000};
    int r;
    do
        r = ppoll(&pf, fd >= 0, &ts, NULL);
    while (r < 0 && errno == EINTR && !mpe__sig_caught());
}


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
    if (!w->workers || !w->pid || !w->host)
        return mpe__seterr(e, "not enough memory");
    int mine = mpe__proc_default_workers(), pid = (int)getpid();
    char host[64] = {0};
    gethostname(host, sizeof host - 1);
    MPI_Allgather(&mine, 1, MPI_INT, w->workers, 1, MPI_INT, w->comm);
    MPI_Allgather(&pid, 1, MPI_INT, w->pid, 1, MPI_INT, w->comm);
    MPI_Allgather(host, 64, MPI_CHAR, w->host, 64, MPI_CHAR, w->comm);
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
    mpe__ranks = NULL;
    MPI_Comm_free(&mpe__mpi_world.comm);
    MPI_Finalize();
}
