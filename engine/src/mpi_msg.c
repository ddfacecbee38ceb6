/* mpi_msg.c -- the MPI backend's message layer: the world's one shared
 * description (mpe__mpi_world), records batched per destination and sent
 * without blocking, receiving, and sleeping between probes. Used by mpi.c
 * (launch), mpi_serve.c (the serving ranks) and mpi_link.c (rank 0's bridge);
 * it calls none of them.
 * SPDX-License-Identifier: MIT
 *
 * One thread per process calls MPI, so MPI_THREAD_SERIALIZED is enough.
 * Open MPI's blocking calls spin, so nothing here blocks in MPI: the loops
 * sleep in poll with a timeout that grows while nothing happens (at most
 * 10 ms) and probe MPI between sleeps. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "mpi_world.h"
#include "sig.h"

#define TAG 77
#define IDLE_MIN_US 20
#define IDLE_MAX_US 10000

mpe_mpi_world mpe__mpi_world = {.comm = MPI_COMM_NULL};
int64_t mpe__mpi_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* ---- sending without blocking, receiving, sleeping ----------------------------------
 * Records go into one batch per destination (mpe__mpi_post) and leave as one
 * MPI message per destination at the next mpe__mpi_push: a loop iteration's
 * results or chunks cost one message, not one each. Every send is an
 * MPI_Isend of a message owned by the send queue until it completes: two
 * ranks sending large messages to each other never wait on each other. */
typedef struct outmsg {
    MPI_Request rq;
    int dest;
    size_t n;
    char *p;                 /* malloc'd records */
    struct outmsg *next;
} outmsg;

static outmsg *sendq;
static size_t pending;
static mpe_buf *batch; /* per rank: records posted, not yet handed to MPI */

int mpe__mpi_msg_init(int size)
{
    batch = calloc((size_t)size, sizeof *batch);
    return batch ? 0 : -1;
}

int mpe__mpi_put(mpe_buf *b, unsigned op, uint32_t id, const void *a, size_t na)
{
    if (na > UINT32_MAX || mpe__buf_grow(b, MPE_MPI_REC + na) != 0)
        return -1;
    char *p = b->p + b->n;
    uint32_t n32 = (uint32_t)na;
    p[0] = (char)op;
    memcpy(p + 1, &id, 4);
    memcpy(p + 5, &n32, 4);
    if (na)
        memcpy(p + MPE_MPI_REC, a, na);
    b->n += MPE_MPI_REC + na;
    return 0;
}

int mpe__mpi_next(const char *p, size_t n, size_t *off, mpe_mpi_rec *r)
{
    uint32_t len;
    if (*off + MPE_MPI_REC > n)
        return 0;
    memcpy(&len, p + *off + 5, 4);
    if (len > n - *off - MPE_MPI_REC)
        return 0; /* malformed: the rest is dropped */
    r->op = (unsigned char)p[*off];
    memcpy(&r->id, p + *off + 1, 4);
    r->p = p + *off + MPE_MPI_REC;
    r->n = len;
    *off += MPE_MPI_REC + len;
    return 1;
}

int mpe__mpi_send(int dest, mpe_buf *b)
{
    outmsg *m = malloc(sizeof *m);
    if (!m || b->n > INT_MAX) {
        free(m);
        mpe__buf_free(b);
        return -1;
    }
    m->dest = dest;
    m->p = b->p;
    m->n = b->n;
    *b = (mpe_buf){0};
    if (MPI_Isend(m->p, (int)m->n, MPI_BYTE, dest, TAG, mpe__mpi_world.comm, &m->rq) != MPI_SUCCESS) {
        free(m->p);
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
    return batch ? mpe__mpi_put(&batch[dest], op, id, a, na) : -1;
}

int mpe__mpi_push(void)
{
    for (int d = 0; batch && d < mpe__mpi_world.size; d++)
        if (batch[d].n > 0)
            mpe__mpi_send(d, &batch[d]);
    for (outmsg **pp = &sendq; *pp;) {
        outmsg *m = *pp;
        int done = 0;
        MPI_Test(&m->rq, &done, MPI_STATUS_IGNORE);
        if (done) {
            *pp = m->next;
            pending -= m->n;
            free(m->p);
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

