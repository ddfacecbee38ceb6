/* cli.c -- the `mpe` command: a thin client of the C API in mpe.h.
 * SPDX-License-Identifier: MIT
 *
 * Subcommands run, version and help live here; map and scale are written in
 * Lua (the embedded modules mpe.cli.map and mpe.cli.scale) and started from here. Exit status: 0 ok,
 * 1 the script failed, 2 usage. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mpe.h"
#include "compat.h"

static const char usage_text[] =
    "usage: mpe run [-j N] script.lua [args...]   run a script ('-' reads it from stdin)\n"
    "       mpe [-j N] -e CODE [args...]          run a string of Lua code\n"
    "       mpe map [-j N] [--unordered] (-e CODE | -f FILE) [INPUT...]\n"
    "                                             apply a Lua function to each input line\n"
    "       mpe scale [-j 1,2,4] [--repeat R] [--svg FILE] [--csv FILE] script.lua [args...]\n"
    "                                             run a workload at several worker counts\n"
    "       mpe version                           print the version\n"
    "       mpe help                              print this help\n"
    "options:\n"
    "  -j N   default number of workers for pools (also env MPE_WORKERS)\n"
    "exit status: 0 ok, 1 the script failed, 2 usage\n";

static int usage(const char *fmt, const char *what)
{
    if (fmt) {
        fputs("mpe: ", stderr);
        fprintf(stderr, fmt, what);
        fputc('\n', stderr);
    }
    fputs(usage_text, stderr);
    return 2;
}

/* -j N: a worker count from 1 to 1024; exported as MPE_WORKERS so that every
 * pool the script (or its children) creates uses it by default. */
static int set_workers(const char *s)
{
    char *end;
    errno = 0;
    long n = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || n < 1 || n > 1024)
        return -1;
    setenv("MPE_WORKERS", s, 1);
    return 0;
}

static int report(mpe_engine *e)
{
    const char *msg = mpe_errmsg(e);
    fprintf(stderr, "%s%s\n", strncmp(msg, "mpe: ", 5) == 0 ? "" : "mpe: ", msg);
    return 1;
}

/* Set arg[-k] entries the way lua5.4 does for its own options. */
static void set_interp_args(mpe_engine *e, char **argv, int first_script_arg)
{
    lua_State *L = mpe_state(e);
    lua_createtable(L, 4, 1);
    for (int i = 0; i < first_script_arg; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - first_script_arg);
    }
    lua_setglobal(L, "arg");
}

/* Run a Lua-written subcommand (mpe.cli.map, mpe.cli.scale) with argv[i..]. */
static int run_module(mpe_engine *e, const char *module, int argc, char **argv)
{
    lua_State *L = mpe_state(e);
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    char code[160];
    snprintf(code, sizeof code, "return require('%s').main(arg)", module);
    if (luaL_loadbuffer(L, code, strlen(code), "=mpe") != LUA_OK)
        return report(e);
    lua_setglobal(L, "__mpe_cli_main");
    if (mpe_dostring(e, "local s = __mpe_cli_main(); __mpe_cli_main = nil; os.exit(s or 0, true)",
                     "=mpe") != 0)
        return report(e);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(NULL, NULL);
    const char *cmd = argv[1];
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("mpe %s (%s)\n", MPE_VERSION_STRING, LUA_RELEASE);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }

    int i = 1;
    int is_run = strcmp(cmd, "run") == 0;
    if (strcmp(cmd, "map") == 0 || strcmp(cmd, "scale") == 0) {
        mpe_engine *e = mpe_new(NULL);
        if (!e) {
            fputs("mpe: not enough memory\n", stderr);
            return 1;
        }
        int status = run_module(e, strcmp(cmd, "map") == 0 ? "mpe.cli.map" : "mpe.cli.scale",
                                argc - 2, argv + 2);
        mpe_close(e);
        return status;
    }
    if (is_run)
        i = 2;
    const char *code = NULL;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strncmp(argv[i], "-j", 2) == 0) {
            const char *n = argv[i][2] ? argv[i] + 2 : (i + 1 < argc ? argv[++i] : NULL);
            if (set_workers(n) != 0)
                return usage("-j needs a worker count from 1 to 1024, got '%s'", n ? n : "");
        } else if (strcmp(argv[i], "-e") == 0 && !is_run) {
            if (i + 1 >= argc)
                return usage("-e needs a string of Lua code%s", "");
            code = argv[++i];
        } else {
            return usage("unknown option '%s'", argv[i]);
        }
    }
    if (!is_run && !code)
        return usage("unknown command '%s'", cmd);
    if (is_run && i >= argc)
        return usage("run needs a script (or '-' for stdin)%s", "");

    mpe_engine *e = mpe_new(NULL);
    if (!e) {
        fputs("mpe: not enough memory\n", stderr);
        return 1;
    }
    int status;
    if (code) {
        set_interp_args(e, argv, i);
        lua_State *L = mpe_state(e);
        lua_getglobal(L, "arg");
        for (int k = i; k < argc; k++) {
            lua_pushstring(L, argv[k]);
            lua_rawseti(L, -2, k - i + 1);
        }
        lua_pop(L, 1);
        status = mpe_dostring(e, code, "=(command line)") == 0 ? 0 : report(e);
    } else {
        set_interp_args(e, argv, i);
        status = mpe_dofile(e, argv[i], argc - i - 1, argv + i + 1) == 0 ? 0 : report(e);
    }
    mpe_close(e);
    return status;
}
