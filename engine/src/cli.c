/* cli.c -- the `mpe` command: a thin client of the C API in mpe.h.
 * SPDX-License-Identifier: MIT
 *
 * The command line is parsed in Lua, by the embedded mpe.cli.main with the
 * parser every subcommand shares (mpe.cli.args): help, usage errors and the
 * options behave alike everywhere. run and -e run here, through the C API;
 * map and scale are written in Lua (mpe.cli.map, mpe.cli.scale) and started
 * from here. `arg` and the main chunk's `...` are set as lua5.4 sets them.
 * Exit status: 0 ok, 1 the script failed, 2 usage. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mpe.h"
#include "compat.h"
#include "engine.h"
#include "err.h"
#include "lranks.h"
#include "ranks.h"
#include "sig.h"

/* The command line, parsed. Words argv[1 .. first_arg-1] are mpe's own; the
 * script's arguments start at argv[first_arg]. */
typedef struct cmdline {
    int argc;
    char **argv;
    int script;         /* `run`: index of the script path ("-": stdin); -e: 0 */
    int first_arg;      /* index of the first script argument */
    int ncode;          /* -e options, in order, in code[] (copies, freed by main) */
    char **code;
    char module[32];    /* map, scale: the Lua module that runs it, else "" */
    int version;        /* print the version */
    int status;         /* >= 0: exit with it now (help printed, or a usage error) */
} cmdline;

static int field_int(lua_State *L, const char *name, int dflt)
{
    lua_getfield(L, -1, name);
    int v = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

/* Parse the command line in Lua, by mpe.cli.main.parse (the parser every
 * subcommand shares, lua/mpe/cli/args.lua), and copy its answer into the
 * cmdline. -j N is exported as MPE_WORKERS, so that every pool the script (or
 * its children) creates uses it by default. */
static int parse_in_lua(lua_State *L)
{
    cmdline *c = lua_touserdata(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mpe"); /* installs the embedded modules in package.preload */
    lua_call(L, 1, 0);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mpe.cli.main");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "parse");
    lua_createtable(L, c->argc, 0);
    for (int i = 1; i < c->argc; i++) {
        lua_pushstring(L, c->argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_call(L, 1, 1);
    c->status = field_int(L, "status", -1);
    lua_getfield(L, -1, "version");
    c->version = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, -1, "module");
    if (lua_isstring(L, -1))
        snprintf(c->module, sizeof c->module, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    c->script = field_int(L, "script", 0);
    c->first_arg = c->script ? c->script + 1 : field_int(L, "first", c->argc);
    int workers = field_int(L, "workers", -1);
    if (workers >= 0) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", workers);
        setenv("MPE_WORKERS", buf, 1);
    }
    lua_getfield(L, -1, "code");
    if (lua_istable(L, -1)) {
        int n = (int)lua_rawlen(L, -1);
        for (int k = 1; k <= n && c->ncode < c->argc; k++) {
            lua_rawgeti(L, -1, k);
            char *s = strdup(luaL_checkstring(L, -1));
            if (!s)
                return luaL_error(L, "not enough memory");
            c->code[c->ncode++] = s;
            lua_pop(L, 1);
        }
    }
    return 0;
}

/* The global `arg` as lua5.4 builds it: arg[0] is the script (for -e, the
 * word before the first argument: the code), arg[1..] its arguments, and
 * the words before it (mpe, run, -j 4, ...) at negative indices. */
static int set_arg_table(lua_State *L)
{
    const cmdline *c = lua_touserdata(L, 1);
    int zero = c->script ? c->script : c->first_arg - 1;
    lua_createtable(L, c->argc - zero - 1, zero + 1);
    for (int i = 0; i < c->argc; i++) {
        lua_pushstring(L, c->argv[i]);
        lua_rawseti(L, -2, i - zero);
    }
    lua_setglobal(L, "arg");
    return 0;
}

struct code_args {
    const cmdline *c;
    const char *code;
};

/* Load one -e chunk and push it with the script arguments as its `...`. */
static int prepare_code(lua_State *L)
{
    const struct code_args *a = lua_touserdata(L, 1);
    const cmdline *c = a->c;
    lua_settop(L, 0);
    if (luaL_loadbuffer(L, a->code, strlen(a->code), "=(command line)") != LUA_OK)
        return lua_error(L);
    int n = c->argc - c->first_arg;
    luaL_checkstack(L, n, "too many arguments");
    for (int i = 0; i < n; i++)
        lua_pushstring(L, c->argv[c->first_arg + i]);
    return n + 1;
}

struct module_args {
    const char *module;
    int argc;
    char **argv;
};

/* A Lua-written subcommand (mpe.cli.map, mpe.cli.scale): arg[0] is the
 * subcommand, arg[1..] its words; main(arg) returns the exit status. */
static int prepare_module(lua_State *L)
{
    const struct module_args *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_createtable(L, a->argc - 2, 2);
    for (int i = 0; i < a->argc; i++) {
        lua_pushstring(L, a->argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    /* require "mpe" first: it installs the embedded modules in package.preload. */
    static const char run[] = "require('mpe') os.exit(require((...)).main(arg) or 0, true)";
    if (luaL_loadbuffer(L, run, sizeof run - 1, "=mpe") != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, a->module);
    return 2;
}

static int report(mpe_engine *e)
{
    if (mpe_signal(e))
        return 1; /* main prints the one-line message after closing */
    const char *msg = mpe_errmsg(e);
    fflush(stdout); /* what the script printed comes before the error */
    fprintf(stderr, "%s%s\n", strncmp(msg, "mpe: ", 5) == 0 ? "" : "mpe: ", msg);
    return 1;
}

static int run(mpe_engine *e, cmdline *c, const char *module)
{
    if (module) {
        struct module_args a = {module, c->argc, c->argv};
        return mpe__engine_run(e, prepare_module, &a);
    }
    if (mpe__engine_run(e, set_arg_table, c) != 0)
        return -1;
    if (c->script)
        return mpe_dofile(e, c->argv[c->script], c->argc - c->first_arg, c->argv + c->first_arg);
    for (int k = 0; k < c->ncode; k++) {
        struct code_args a = {c, c->code[k]};
        if (mpe__engine_run(e, prepare_code, &a) != 0)
            return -1;
    }
    return 0;
}

/* The version line: mpe's and the Lua it runs on. */
static void print_version(void)
{
#ifdef MPE_LUAJIT
    printf("mpe %s (%s)\n", MPE_VERSION_STRING, LUAJIT_VERSION);
#else
    printf("mpe %s (%s)\n", MPE_VERSION_STRING, LUA_RELEASE);
#endif
}

/* Under an MPI launcher (MPE_MPI builds): join MPI; rank 0 then runs the
 * script and the other ranks serve its pools. Returns this rank (0 without
 * MPI), or -1 after saying why. */
static int start_mpi(int *argc, char ***argv)
{
#ifdef MPE_WITH_MPI
    if (mpe__mpi_launched()) {
        mpe_err e;
        int rank = mpe__mpi_start(argc, argv, &e);
        if (rank < 0)
            fprintf(stderr, "mpe: MPI: %s\n", e.msg);
        return rank;
    }
#else
    (void)argc;
    (void)argv;
#endif
    return 0;
}

int main(int argc, char **argv)
{
    cmdline c = {argc, argv, 0, 0, 0, NULL, "", 0, -1};
    c.code = calloc((size_t)argc, sizeof *c.code);
    mpe_engine *e = c.code ? mpe_new(NULL) : NULL;
    if (!e) {
        fputs("mpe: cannot create a Lua state: not enough memory\n", stderr);
        free(c.code);
        return 1;
    }
    int status, rank = 0;
    if (mpe__engine_run(e, parse_in_lua, &c) != 0) {
        status = report(e);
    } else if (c.status >= 0) {
        status = c.status;
    } else if (c.version) {
        print_version();
        status = 0;
    } else if ((rank = start_mpi(&argc, &argv)) < 0) {
        status = 1;
    } else if (mpe_handle_signals(e) != 0) {
        status = report(e);
    } else {
#ifdef MPE_WITH_MPI
        if (rank > 0)
            status = mpe__mpi_serve(mpe_state(e));
        else
#endif
            status = run(e, &c, c.module[0] ? c.module : NULL) == 0 ? 0 : report(e);
        /* Stopped by a signal: one line, and the shell's status for it.
         * Closing the state terminates the pools and processes it holds.
         * A serving rank says nothing: rank 0 speaks for the run. */
        int sig = rank > 0 ? 0 : mpe_signal(e);
        mpe_close(e);
        e = NULL;
        if (!sig && rank == 0)
            sig = mpe__sig_caught(); /* came while closing ended a process it waited for */
        if (sig) {
            fflush(stdout);
            fprintf(stderr, "%s\n", sig == SIGINT ? "mpe: interrupted by SIGINT"
                                                     : "mpe: terminated by SIGTERM");
            status = 128 + sig;
        }
    }
    mpe_close(e);
#ifdef MPE_WITH_MPI
    mpe__mpi_finish(); /* after mpe_close: the pools' remote workers are stopped */
#endif
    for (int k = 0; k < c.ncode; k++)
        free(c.code[k]);
    free(c.code);
    return status;
}
