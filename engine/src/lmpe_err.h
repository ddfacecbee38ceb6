/* lmpe_err.h -- error objects and the misuse helpers of the binding layer (lmpe_err.c).
 * SPDX-License-Identifier: MIT */
#ifndef MPE_LMPE_ERR_H
#define MPE_LMPE_ERR_H

#include <sys/types.h>
#include "compat.h"

/* Task and process failures are tables with metatable "mpe.Error":
 * { kind = "error"|"crash"|"timeout", index = i, pid = n, worker = k, name = s,
 *   message = "...", traceback = "...", value = v } (absent fields are nil);
 * tostring renders e.g. "mpe: item 17 failed in worker 2 (pid 4242): job.lua:5: boom"
 * followed by the traceback. */
typedef struct mpe_failure {
    const char *kind;      /* "error", "crash" or "timeout" */
    lua_Integer index;     /* the item's input index, 0 if not an item */
    pid_t pid;             /* the process that failed, 0 if unknown */
    int worker;            /* its pool slot, 0 if not a pool worker */
    const char *name;      /* process name ("Process-3"), or NULL */
    const char *message;   /* what happened, never NULL */
    const char *traceback; /* the failing side's traceback, or NULL */
    int value;             /* stack index of the original error value, 0 if none */
} mpe_failure;

/* Push an error object built from f. */
/* lmpe_err.c: push mpe.Error, the error objects' metatable (made once). */
void mpe__open_errors(lua_State *L);
void mpe__error_push(lua_State *L, const mpe_failure *f);
/* Push an error object as above and raise it. */
int mpe__error_raise(lua_State *L, const mpe_failure *f);
/* Raise a "timeout" error object whose message is "mpe: timeout: <what> (after N s)". */
int mpe__error_timeout(lua_State *L, const char *what, double seconds);
/* Message handler for lua_pcall. Leaves an mpe.Error untouched; anything else
 * becomes a plain table { message = <string form>, traceback = <traceback>,
 * value = <the original value if it was not a string> }. */
int mpe__error_handler(lua_State *L);

/* Helpers for the binding layer. */
/* Raise a message formatted by vsnprintf (Lua's own formatter lacks %zu and,
 * in LuaJIT, 64-bit integers). Never returns. */
int mpe__fail(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
/* The value at idx for "got X" in messages: numbers as themselves, strings
 * quoted, anything else its type name. The string lives on the stack. */
const char *mpe__got(lua_State *L, int idx);
/* luaL_typename, but "mpe.range" etc. for mpe's own userdata (from __name). */
const char *mpe__typename(lua_State *L, int idx);
/* The one form of a misuse error (luaL_argerror's job, in mpe's words):
 * raises "mpe: <fname>: <subject> <detail>", detail formatted by vsnprintf.
 * The subject names the argument at stack index idx as Lua counts for a
 * call with ':': for a method (fname with ':', "pool:map") self is not
 * counted, so argument 1 is the first after self and index 1 is "self";
 * a module function ("range") counts from its first argument. With
 * idx 0 there is none (an option or an item: detail says which). Every
 * binding raises its misuse errors through it. Never returns. */
int mpe__argerror(lua_State *L, const char *fname, int idx, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));
/* The misuse error of a value at idx that is not a tname (e.g. "mpe.Pool",
 * or "mpe.Lock or mpe.RLock"): "... self must be an mpe.Pool (call methods
 * with a colon), got number" (argument N: without the hint). Each userdata
 * type's one checker raises it. Never returns. */
int mpe__typeerror(lua_State *L, int idx, const char *tname, const char *fname)
    __attribute__((noreturn));
/* luaL_testudata, first comparing the value's metatable with the calling C
 * function's upvalue 1, where a type's methods and metamethods that are
 * called per task keep their metatable (no registry lookup by name). */
void *mpe__testudata(lua_State *L, int idx, const char *tname);
/* Optional timeout argument: nil/none -> -1 (wait forever), a number >= 0 ->
 * seconds; anything else raises an argument error naming fname. */
double mpe__opt_timeout(lua_State *L, int arg, const char *fname);

#endif
