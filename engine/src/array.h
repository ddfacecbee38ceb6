/* array.h -- element types and shared arrays (array.c); no Lua.
 * SPDX-License-Identifier: MIT */
#ifndef MPE_ARRAY_H
#define MPE_ARRAY_H

#include <stddef.h>
#include <stdint.h>
#include "err.h"
#include "shm.h"

/* Element types (array.c holds the one table). */
enum { MPE_CT_SIGNED, MPE_CT_UNSIGNED, MPE_CT_FLOAT };
typedef struct mpe_ctype {
    const char *name;  /* "int32" */
    const char *codes; /* Python typecodes that alias it, e.g. "lq" */
    unsigned size;     /* bytes */
    int cls;           /* MPE_CT_* */
} mpe_ctype;

/* A Lua number without Lua: an integer (isint) or a float. */
typedef struct mpe_num {
    int isint;
    int64_t i;
    double d;
} mpe_num;

/* The ctype named by a name or a one-letter typecode, NULL if none. */
const mpe_ctype *mpe__array_ctype(const char *name);
/* A new zero-filled array: ndim 1 (rows elements), 2 (rows x cols) or 0 (a
 * value: one element). NULL and e set on failure (size overflow, memfd...). */
mpe_shm_obj *mpe__array_new(const mpe_ctype *t, int ndim, size_t rows, size_t cols, mpe_err *e);
/* Check a decoded array object and fill its cached facts. 0, or -1 with e. */
int mpe__array_attach(mpe_shm_obj *o, mpe_err *e);
const mpe_ctype *mpe__array_type(const mpe_shm_obj *o);
/* ndim (0, 1 or 2) and the shape. */
int mpe__array_shape(const mpe_shm_obj *o, size_t *rows, size_t *cols);
/* Element i (0-based, flat; the caller checks i < o->n). */
mpe_num mpe__array_get(const mpe_shm_obj *o, size_t i);
/* Convert v to an element of o's type in *bits: -1 with e set ("value 1.5 is
 * not an integer (array of int32)") if it does not fit. */
int mpe__array_check(const mpe_shm_obj *o, mpe_num v, uint64_t *bits, mpe_err *e);
void mpe__array_put(mpe_shm_obj *o, size_t i, uint64_t bits);
/* Atomically add delta to element i; *out is the new value. -1 with e set
 * (the element unchanged) when delta or the result does not fit the type. */
int mpe__array_add(mpe_shm_obj *o, size_t i, mpe_num delta, mpe_num *out, mpe_err *e);
/* Elements [from, to) set to bits / summed (integers exactly while the sum
 * fits an int64, else as a float). */
void mpe__array_fill(mpe_shm_obj *o, size_t from, size_t to, uint64_t bits);
mpe_num mpe__array_sum(const mpe_shm_obj *o, size_t from, size_t to);

#endif
