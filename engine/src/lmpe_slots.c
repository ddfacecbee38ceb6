/* lmpe_slots.c -- where an mpe.AsyncResult keeps its Lua values: a slot in
 * its pool's field tables (one table per field, AF_* in lmpe_pool.h, indexed
 * by slot), given at creation and back at __gc, and the routing of a job's
 * messages to its object through that slot. No table per object: an
 * apply_async makes one userdata. Main thread only.
 * SPDX-License-Identifier: MIT */
#include <limits.h>
#include <stdlib.h>
#include "compat.h"
#include "job.h"
#include "lmpe_pool.h"

/* ---- an async object's fields: slots in its pool's field tables ---------------------------- */

void mpe__async_bind(lua_State *L, ajob *a, int pool_idx)
{
    lpool *lp = a->lp;
    pool_idx = lua_absindex(L, pool_idx);
    if (lp->nfree == 0 && lp->capfree <= lp->nslots) {
        /* Room for every slot on the free list now, so __gc never allocates. */
        int cap = lp->capfree ? 2 * lp->capfree : 64;
        int *f = lp->capfree < INT_MAX / 2 ? realloc(lp->free_slots, (size_t)cap * sizeof *f) : NULL;
        if (!f)
            luaL_error(L, "mpe: not enough memory for a result");
        lp->free_slots = f;
        lp->capfree = cap;
    }
    int first = lp->nslots == lp->nfree; /* no result of this pool lives yet */
    a->slot = lp->nfree > 0 ? lp->free_slots[--lp->nfree] : ++lp->nslots;
    a->fields = 0;
    if (first) { /* the pool lives while any of its results does */
        lua_rawgeti(L, LUA_REGISTRYINDEX, lp->ref);
        lua_pushvalue(L, pool_idx);
        lua_setfield(L, -2, "self");
        lua_pop(L, 1);
    }
}

/* Clear a's fields and give its slot back (its __gc; never raises). */
void mpe__async_unbind(lua_State *L, ajob *a)
{
    lpool *lp = a->lp;
    if (!a->slot)
        return;
    int pooltable = lp->ref != LUA_NOREF; /* gone when the pool was finalized first (lua_close) */
    if (pooltable) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lp->ref);
        for (int f = 1; f <= AF_NFIELDS; f++)
            if (a->fields & (1u << f)) {
                lua_rawgeti(L, -1, f);
                lua_pushnil(L);
                lua_rawseti(L, -2, a->slot);
                lua_pop(L, 1);
            }
    }
    lp->free_slots[lp->nfree++] = a->slot;
    a->slot = 0;
    a->fields = 0;
    if (lp->nfree == lp->nslots) { /* the last one */
        if (pooltable) {
            lua_pushnil(L);
            lua_setfield(L, -2, "self");
        } else { /* the pool's own __gc left the list to the last result */
            free(lp->free_slots);
            lp->free_slots = NULL;
            lp->nfree = lp->capfree = 0;
        }
    }
    if (pooltable)
        lua_pop(L, 1);
}

void mpe__async_get(lua_State *L, const ajob *a, int f)
{
    if (!(a->fields & (1u << f))) { /* unset: no lookup */
        lua_pushnil(L);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->lp->ref);
    lua_rawgeti(L, -1, f);
    lua_rawgeti(L, -1, a->slot);
    lua_replace(L, -3);
    lua_pop(L, 1);
}

void mpe__async_set(lua_State *L, ajob *a, int f, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->lp->ref);
    lua_rawgeti(L, -1, f);
    lua_pushvalue(L, idx);
    lua_rawseti(L, -2, a->slot);
    lua_pop(L, 2);
    if (lua_isnil(L, idx))
        a->fields &= ~(1u << f);
    else
        a->fields |= 1u << f;
}

/* Routing: messages name their job, the job its object's slot. */
void mpe__async_route(lua_State *L, ajob *a, int ai)
{
    mpe__job_set_tag(a->j, a->slot);
    mpe__async_set(L, a, AF_SELF, ai);
}

void mpe__async_unroute(lua_State *L, ajob *a)
{
    if (a->fields & (1u << AF_SELF)) {
        lua_pushnil(L);
        mpe__async_set(L, a, AF_SELF, -1);
        lua_pop(L, 1);
    }
}

void mpe__async_routed(lua_State *L, lpool *lp)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, lp->ref);
    lua_rawgeti(L, -1, AF_SELF);
    lua_remove(L, -2);
}
