/* worker_jit.h -- the pool worker's chunk loop in Lua (worker_jit.c,
 * lua/mpe/jitloop.lua), used by worker.c under LuaJIT.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_WORKER_JIT_H
#define MPE_WORKER_JIT_H

#include <stdint.h>
#include "compat.h"

/* Where a batch's results go. */
enum { MPE_JIT_COLLECT = 0, MPE_JIT_I64 = 1, MPE_JIT_F64 = 2 };
/* Whether a collected result is an integer (lua_isinteger of the number). The
 * loop runs only where there is an FFI, that is under LuaJIT. */
#if MPE_HAS_FFI
#define mpe__jit_isint(v) mpe__compat_numisint(v)
#else
#define mpe__jit_isint(v) 0
#endif
/* Most items in one batch (the worker's scratch for collected results). */
#define MPE_JIT_BATCH 4096

/* One chunk's run through the Lua loop. */
typedef struct mpe_jit_run {
    int kind;                /* MPE_K_RANGE, MPE_K_INTS or MPE_K_FLOATS */
    int okind;               /* MPE_JIT_COLLECT, MPE_JIT_I64 or MPE_JIT_F64 */
    const void *in;          /* packed items (ints, floats): item 0 of the chunk */
    double x0, step;         /* range: item k is x0 + k * step */
    void *out;               /* doubles (collected) or the out array's elements */
    int64_t d;               /* item k's result goes to out[k + d] */
    volatile int32_t *item;  /* the progress slot: the item being run */
    volatile int64_t *started; /* its start stamp, or NULL without task timeouts */
    uint8_t *tags;           /* collected: per item of the batch (k - i), 0 a number in
                              * out, 1 a value in the odd table at k - i + 1, 2 nil */
} mpe_jit_run;

/* Push the loop for r (kind, okind, whether started is set), or return 0 and
 * push nothing: no FFI (Lua 5.4), MPE_JITLOOP=0, the JIT switched off, or the
 * module failed to load (then never again in this process). */
int mpe__jit_loop(lua_State *L, const mpe_jit_run *r);
/* Run items i..j-1 (j - i <= MPE_JIT_BATCH) through the loop at index loop,
 * calling the function at index fn, keeping collected results that are not
 * numbers in the table at index odd. Returns the item it stopped at: j when all
 * stored their result, else k < j with item k's result pushed (items before k
 * stored theirs). An item that raises propagates; r->item names it. */
uint32_t mpe__jit_items(lua_State *L, int loop, int fn, int odd, const mpe_jit_run *r,
                        uint32_t i, uint32_t j);

#endif
