/* host.c -- a host program embedding mpe: its own C function registered in
 * the engine's lua_State must work inside processes and through the codec.
 * SPDX-License-Identifier: MIT
 *
 * Usage: embed_host host.lua. Exit status 0 when every check passed. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include "mpe.h"
#include <lauxlib.h>

/* host_mul(a, b) -> a * b: a C function only this program has. */
static int host_mul(lua_State *L)
{
    lua_pushnumber(L, luaL_checknumber(L, 1) * luaL_checknumber(L, 2));
    return 1;
}

static int fail(const char *what, mpe_engine *e)
{
    fprintf(stderr, "embed_host: %s: %s\n", what, e ? mpe_errmsg(e) : "");
    mpe_close(e);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: embed_host host.lua\n", stderr);
        return 2;
    }
    mpe_engine *e = mpe_new(NULL);
    if (!e)
        return fail("mpe_new", NULL);
    lua_register(mpe_state(e), "host_mul", host_mul);

    /* mpe_dostring: success clears the message, failure reports it. */
    if (mpe_dostring(e, "assert(host_mul(6, 7) == 42)", "=setup") != 0)
        return fail("mpe_dostring of a good chunk", e);
    if (strcmp(mpe_errmsg(e), "") != 0)
        return fail("mpe_errmsg after success is not empty", e);
    if (mpe_dostring(e, "error('deliberate failure')", "=bad") == 0)
        return fail("mpe_dostring of a failing chunk returned 0", e);
    if (!strstr(mpe_errmsg(e), "deliberate failure") || !strstr(mpe_errmsg(e), "stack traceback"))
        return fail("mpe_errmsg lacks the message or the traceback", e);
    if (mpe_dostring(e, "this is not lua", "=syntax") == 0 || !strstr(mpe_errmsg(e), "syntax"))
        return fail("mpe_dostring of bad syntax", e);

    /* NULL pointers are refused with a message, never dereferenced (issue 10.7). */
    if (mpe_dostring(e, NULL, "=null") != -1 || !strstr(mpe_errmsg(e), "mpe_dostring: code is NULL"))
        return fail("mpe_dostring with NULL code", e);
    if (mpe_dofile(e, "host.lua", 2, NULL) != -1 ||
        !strstr(mpe_errmsg(e), "mpe_dofile: argv is NULL but argc is 2"))
        return fail("mpe_dofile with NULL argv", e);
    if (mpe_dostring(NULL, "x = 1", NULL) != -1 || mpe_dofile(NULL, NULL, 0, NULL) != -1 ||
        mpe_handle_signals(NULL) != -1 || mpe_state(NULL) != NULL ||
        strcmp(mpe_errmsg(NULL), "not enough memory") != 0)
        return fail("a NULL engine", NULL);

    if (mpe_dofile(e, argv[1], argc - 2, argv + 2) != 0)
        return fail(argv[1], e);

    /* host.lua leaves a daemon process running: mpe_close must end and reap it. */
    mpe_close(e);
    errno = 0;
    if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD) {
        fputs("embed_host: a child process remains after mpe_close\n", stderr);
        return 1;
    }
    puts("embed_host: ok");
    return 0;
}
