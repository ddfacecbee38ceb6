/* mpi_world.h -- what the MPI backend's files share: the world (ranks, their pids and
 * hosts), the wire protocol between rank 0 and the serving ranks, and the
 * message layer (non-blocking sends, receiving, sleeping) of mpi_msg.c.
 * SPDX-License-Identifier: MIT
 *
 * Included only by the files of an MPE_MPI build (mpi.c: launch and world;
 * mpi_msg.c: messages; mpi_serve.c: the serving ranks; mpi_link.c: rank 0's transport
 * and bridge thread). They alone include <mpi.h> and link libmpi; the engine
 * reaches them through mpe__ranks (ranks.h). */
#ifndef MPE_MPI_WORLD_H
#define MPE_MPI_WORLD_H

#include <mpi.h>
#include <stdint.h>
#include <sys/types.h>
#include "buf.h"
#include "err.h"
#include "transport.h"

#define MPE_MPI_PENDING_MAX (64u << 20) /* bytes in unfinished sends before the loops stop taking more */

/* An MPI message (one tag, a private communicator) holds one or more
 * records: [u8 op][u32 link id][u32 payload length][payload]. */
enum {
    MPE_MPI_OPEN = 1, /* 0 -> r: [u32 slot][u32 number][u32 maxtasks][f64 timeout][u8 init][{fn, args}] */
    MPE_MPI_STARTED,  /* r -> 0: [i32 pid]: the worker runs */
    MPE_MPI_DATA,     /* both ways: bytes of the worker's channel (whole or partial frames) */
    MPE_MPI_KILL,     /* 0 -> r: SIGKILL the worker */
    MPE_MPI_DEATH,    /* r -> 0: a death record (mpe_mpi_death); the link's last message */
    MPE_MPI_QUIT      /* 0 -> r: rank 0 is done: end the workers, exit */
};
#define MPE_MPI_REC 9 /* a record's header */

/* One record of a message, pointing into it. */
typedef struct mpe_mpi_rec {
    unsigned op;
    uint32_t id;
    const char *p;
    size_t n;
} mpe_mpi_rec;

/* How a remote worker ended, as its rank saw it. */
typedef struct mpe_mpi_death {
    int32_t status;    /* wait status */
    int32_t timed_out; /* its rank killed it for the pool's timeout */
    int64_t chunk;     /* its progress slot when it died */
    int32_t item, ready;
} mpe_mpi_death;

/* The world, set once by mpe__mpi_start before any other thread runs. */
typedef struct mpe_mpi_world {
    MPI_Comm comm;      /* a private duplicate of MPI_COMM_WORLD */
    int me, size;
    int *workers;       /* each rank's default pool size */
    pid_t *pid;         /* each rank's pid and host: for noticing and naming a dead rank */
    char (*host)[64];
    /* Watch connections (mpi.c): on rank 0, watch[r] is rank r's (-1: none),
     * readable once rank r has ended; on other ranks watch[0] is this rank's
     * end, never written. */
    int *watch;
} mpe_mpi_world;
extern mpe_mpi_world mpe__mpi_world;

/* mpi_msg.c, the message layer. msg_init: one batch per rank of a world of
 * size ranks, once, before any record is posted. 0, or -1 (memory). */
int mpe__mpi_msg_init(int size);
/* Monotonic clock in ns. */
int64_t mpe__mpi_now_ns(void);
/* Append a record to b. 0, or -1 when memory runs out. */
int mpe__mpi_put(mpe_buf *b, unsigned op, uint32_t id, const void *a, size_t na);
/* The record at *off of the message p[0..n) into r, *off moved past it: 1;
 * 0 at the end (or where the rest is malformed). */
int mpe__mpi_next(const char *p, size_t n, size_t *off, mpe_mpi_rec *r);
/* Start sending b's records to dest as one message; takes b's memory (b is
 * left empty, also on failure). 0 or -1. */
int mpe__mpi_send(int dest, mpe_buf *b);
/* Add a record to this process's batch for dest: it leaves with the others
 * at the next mpe__mpi_push. 0, or -1 when memory runs out. */
int mpe__mpi_post(int dest, unsigned op, uint32_t id, const void *a, size_t na);
/* Send the batches, complete the sends that can be; returns whether any is
 * still unsent. */
int mpe__mpi_push(void);
/* Bytes in sends not yet completed. */
size_t mpe__mpi_pending(void);
/* Receive one message if one is there: 1 and *src, 0 if none. */
int mpe__mpi_take(mpe_buf *b, int *src);
/* How long to sleep (µs) when nothing happened since `since` (monotonic ns). */
int mpe__mpi_idle_us(int64_t since);
/* Sleep until fd (-1: none) is readable or us microseconds pass. */
void mpe__mpi_nap(int fd, int us);

/* mpi_link.c, rank 0 of a world of several ranks. link_start: the bridge
 * thread (0, or -1 with e set); link_stop: tell the serving ranks to quit and
 * join it (idempotent). where: mpe_ranks.where. The transport of spanning pools. */
int mpe__mpi_link_start(mpe_err *e);
void mpe__mpi_link_stop(void);
int mpe__mpi_where(pid_t pid, int *rank);
extern const mpe_transport_ops mpe__mpi_transport;

#endif
