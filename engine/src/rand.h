/* rand.h -- a forked child's own math.random stream (rand.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_RAND_H
#define MPE_RAND_H

#include "compat.h"

/* In a forked child: give math.random a stream of its own, derived from the
 * inherited stream and mpe__proc_ordinal() (rand.c). Cannot fail. */
void mpe__rand_reseed(lua_State *L);

#endif
