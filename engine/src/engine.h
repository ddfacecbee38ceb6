/* engine.h -- running a chunk protected, for the command and the embedding API (engine.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_ENGINE_H
#define MPE_ENGINE_H

#include "compat.h"
#include "mpe.h"

/* Call prepare(L) protected, with the light userdata ud as its one argument.
 * It returns nothing, or a function and its arguments: that function is then
 * called protected, with lua.c's traceback handler. A failure in prepare (a
 * syntax error, a missing file) is reported without a traceback, as lua.c
 * does. Returns 0, or -1 with the message in mpe_errmsg(e). */
int mpe__engine_run(mpe_engine *e, lua_CFunction prepare, void *ud);

#endif
