/* ranks.h -- the hooks of the MPI backend (mpi.c): ranks, and what cli.c calls; no Lua
 * (lranks.h has the one hook that runs Lua).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_RANKS_H
#define MPE_RANKS_H

#include <sys/types.h>
#include "err.h"

/* The engine never calls MPI. mpi.c is linked into the `mpe` command of an
 * MPE_MPI build only; when the command starts under an MPI launcher it sets
 * mpe__ranks, and a pool that spans ranks uses its transport (transport.h).
 * NULL: one rank (mpe.so, libmpe, the command outside mpirun). */
struct mpe_transport_ops;
typedef struct mpe_ranks {
    int rank, size;
    pid_t pid;          /* the process that joined MPI: its forked children are not ranks */
    const int *workers; /* each rank's default pool size */
    /* The backend of pools that span ranks: links on this rank are the
     * socketpair backend's, others are workers forked by their own rank. */
    const struct mpe_transport_ops *transport;
    /* The rank of the remote worker with that pid (as start reported it):
     * 1, or 0 if no remote worker had it. Any thread. */
    int (*where)(pid_t pid, int *rank);
} mpe_ranks;
extern const mpe_ranks *mpe__ranks;
/* mpi.c, called by cli.c in an MPE_MPI build. launched: whether an MPI
 * launcher started this process (its environment variables). start: MPI_Init,
 * rank 0's MAC key to every rank, each rank's default pool size to all, the
 * bridge thread on rank 0; returns this rank, or -1 with e set. serve: the
 * loop of ranks other than 0, until rank 0 says quit or a signal comes;
 * returns the exit status. finish: tell the other ranks to quit (rank 0),
 * MPI_Finalize. */
int mpe__mpi_launched(void);
int mpe__mpi_start(int *argc, char ***argv, mpe_err *e);
void mpe__mpi_finish(void);

#endif
