/* alloc.h -- the Lua heap on huge pages (alloc.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_ALLOC_H
#define MPE_ALLOC_H

#include "compat.h"

/* Wrap L's allocator (delegating every call to it) with one that advises the
 * kernel to back the heap with transparent huge pages, so that fork copies
 * fewer page-table entries. Called by mpe_new and luaopen_mpe; does nothing
 * when THP is off, when MPE_HUGEPAGES=0, when L is wrapped already, or when
 * another allocator of this process is wrapped. Cannot fail. */
void mpe__alloc_hugepages(lua_State *L);

#endif
