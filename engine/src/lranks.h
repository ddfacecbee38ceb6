/* lranks.h -- the loop of MPI ranks other than 0 (mpi.c), which runs Lua;
 * ranks.h has the rest of the MPI hooks.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_LRANKS_H
#define MPE_LRANKS_H

#include "compat.h"

/* Serve rank 0 until it says quit or a signal comes (see ranks.h,
 * mpe__mpi_start); returns the exit status. */
int mpe__mpi_serve(lua_State *L);

#endif
