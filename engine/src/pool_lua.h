/* pool_lua.h -- the pool's entry points that take a Lua state (pool.c): forking
 * workers from a state and sending them functions; the rest is pool_api.h's.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_POOL_LUA_H
#define MPE_POOL_LUA_H

#include <stdint.h>
#include "compat.h"
#include "err.h"
#include "pool_api.h"

/* What the binding layer gives a pool's workers (mpe_pool_opts.hooks): the
 * engine never calls the binding layer by name. */
typedef struct mpe_worker_hooks {
    lua_CFunction handler; /* message handler for task errors */
} mpe_worker_hooks;

/* Create a pool: fork its workers from L's state and start the dispatcher.
 * Returns NULL and sets e on failure (nothing is left running). */
mpe_pool *mpe__pool_new(lua_State *L, const mpe_pool_opts *o, mpe_err *e);
/* Fork replacements for workers that died or retired. Returns 0 or -1 (e set). */
int mpe__pool_respawn(lua_State *L, mpe_pool *p, mpe_err *e);
/* Send the function at idx to every worker (once while it is cached) and
 * return its id. Raises if it cannot be encoded. */
uint64_t mpe__pool_function(lua_State *L, mpe_pool *p, int idx);
/* Drop p's table of function ids (kept in L's registry by p's address) at
 * p's end: a pool allocated later at the same address would take its ids,
 * which name other functions there. */
void mpe__pool_forget_functions(lua_State *L, const mpe_pool *p);
#endif
