/* sig.h -- SIGINT and SIGTERM during waits (sig.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_SIG_H
#define MPE_SIG_H

#include "compat.h"
#include "err.h"

/* SIGINT and SIGTERM stop a script run by the mpe command (or a host that asks
 * with mpe_handle_signals): waits inside mpe check for them. */
int mpe__sig_install(lua_State *L, mpe_err *e);
/* The signal caught (SIGINT, SIGTERM), or 0. */
int mpe__sig_caught(void);
/* In a stock interpreter: put a recorder in front of the host's own SIGINT
 * handler (lua.c's), which it still calls, so that mpe knows the script was
 * interrupted even when the signal came while Lua code ran. Does nothing if
 * SIGINT has no handler (its default ends the process) or is mpe's own. */
void mpe__sig_record(void);
/* A signal came: mpe__sig_caught(), or SIGINT seen by the recorder; 0 if none. */
int mpe__sig_seen(void);
/* "mpe: interrupted by SIGINT" / "mpe: terminated by SIGTERM". */
const char *mpe__sig_message(int sig);
/* Raise the error for the caught signal. */
int mpe__sig_raise(lua_State *L);
/* A wait records the hook it started with; mpe__sig_check raises if a signal
 * came (ours, or lua.c's hook) since. */
typedef struct mpe_sigwatch {
    lua_State *L, *main; /* the waiting thread, and the main one (lua.c hooks that) */
    lua_Hook hook, main_hook;
    int mask, main_mask;
} mpe_sigwatch;
void mpe__sig_watch(lua_State *L, mpe_sigwatch *w);
void mpe__sig_check(lua_State *L, const mpe_sigwatch *w);
/* Whether a signal came since mpe__sig_watch; as a callback for the
 * engine's waits (mpe_waitctl.interrupted), ud being the mpe_sigwatch. */
int mpe__sig_changed(void *ud);

#endif
