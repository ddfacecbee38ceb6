/* mpe.h -- the public C API of mpe, a Lua-scriptable parallel execution engine.
 * SPDX-License-Identifier: MIT
 *
 * A host program either adds mpe to a lua_State it owns (luaopen_mpe) or lets
 * mpe create one (mpe_new). Every function here is safe to call only from the
 * thread that created the engine.
 *
 * NULL pointers: an engine argument may be NULL (what a failed mpe_new gave):
 * the call then fails (-1, NULL, "not enough memory" from mpe_errmsg) or does
 * nothing (mpe_close). Other NULL pointers are refused with -1 and a message
 * in mpe_errmsg unless the function says what NULL means. luaopen_mpe needs a
 * valid lua_State, as every lua_CFunction does. */
#ifndef MPE_H
#define MPE_H

#include <lua.h>

#define MPE_VERSION_MAJOR 0
#define MPE_VERSION_MINOR 1
#define MPE_VERSION_PATCH 0
#define MPE_VERSION_NUM (MPE_VERSION_MAJOR * 10000 + MPE_VERSION_MINOR * 100 + MPE_VERSION_PATCH)

#define MPE_API __attribute__((visibility("default")))

typedef struct mpe_engine mpe_engine;

/* Options for mpe_new; a NULL pointer means all defaults. */
typedef struct mpe_options {
    int workers;        /* default pool size; 0 keeps MPE_WORKERS or the usable CPU count */
} mpe_options;

/* Open the mpe module in L: pushes the module table and returns 1 (a lua_CFunction,
 * for luaL_requiref or package.preload). Also what `require "mpe"` calls. */
MPE_API int luaopen_mpe(lua_State *L);

/* Create an engine: a fresh lua_State with the standard libraries, with mpe
 * preloaded so that scripts `require "mpe"`. Returns NULL when out of memory. */
MPE_API mpe_engine *mpe_new(const mpe_options *opts);

/* The engine's lua_State, owned by the engine: do not lua_close it. */
MPE_API lua_State *mpe_state(mpe_engine *e);

/* Run a script file (path "-" or NULL: standard input) with the global `arg`
 * set as lua5.4 sets it (arg[0] = path, arg[1..argc] = argv). Returns 0, or -1
 * with the error message and traceback in mpe_errmsg(e). argv may be NULL only
 * when argc <= 0. */
MPE_API int mpe_dofile(mpe_engine *e, const char *path, int argc, char **argv);

/* Run a string of Lua code named chunkname (NULL: "=(string)"). Returns 0, or
 * -1 with the message and traceback in mpe_errmsg(e); code NULL gives -1 and
 * "mpe_dostring: code is NULL". */
MPE_API int mpe_dostring(mpe_engine *e, const char *code, const char *chunkname);

/* Make SIGINT and SIGTERM stop the script the engine runs: it ends with an
 * error at its next instruction (or within 100 ms when waiting inside mpe),
 * and mpe_signal tells which signal it was. A second signal acts at once
 * (default action). Returns 0, or -1 with the reason in mpe_errmsg(e). */
MPE_API int mpe_handle_signals(mpe_engine *e);

/* The signal that stopped the script (SIGINT, SIGTERM), or 0. Process-wide:
 * e is not used and may be NULL. */
MPE_API int mpe_signal(mpe_engine *e);

/* The message of the last failure, or "" if none. Owned by the engine; valid
 * until the next call on e. */
MPE_API const char *mpe_errmsg(mpe_engine *e);

/* Terminate what the engine still runs (pools, processes), close its
 * lua_State and free it. NULL is allowed. */
MPE_API void mpe_close(mpe_engine *e);

#endif
