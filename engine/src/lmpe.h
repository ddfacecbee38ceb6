/* lmpe.h -- the Lua module: each part's opener, and what the parts share (lmpe*.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_LMPE_H
#define MPE_LMPE_H

#include "compat.h"
#include "shm.h"

/* luaopen_mpe builds the module table and calls each part's opener with the
 * module table on top of the stack; an opener adds its functions and
 * registers its metatables. */
void mpe__open_codec(lua_State *L);
void mpe__open_proc(lua_State *L);
void mpe__open_process(lua_State *L);
void mpe__open_pool(lua_State *L);
void mpe__open_shm(lua_State *L);
void mpe__open_sync(lua_State *L);
void mpe__open_ipc(lua_State *L);

/* mpe.range (lmpe_range.c): the userdata at idx if it is one, else NULL. */
typedef struct mpe_range {
    lua_Integer first, step, count;
} mpe_range;
const mpe_range *mpe__range_test(lua_State *L, int idx);
/* lmpe_shm.c: the object of the open mpe.Array at idx, or NULL if it is none. */
mpe_shm_obj *mpe__array_test(lua_State *L, int idx);
void mpe__open_range(lua_State *L); /* called by mpe__open_pool */
/* lmpe_process.c: whether the value at idx is an mpe.Process (a test, no error). */
int mpe__process_test(lua_State *L, int idx);

#endif
