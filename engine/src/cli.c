/* cli.c -- the `mpe` command: a thin client of the C API in mpe.h.
 * SPDX-License-Identifier: MIT
 *
 * Subcommands run, -e, version and help live here; map and scale are written
 * in Lua (the embedded modules mpe.cli.map and mpe.cli.scale) and started from
 * here. `arg` and the main chunk's `...` are set as lua5.4 sets them. Exit
 * status: 0 ok, 1 the script failed, 2 usage. */
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static const char usage_text[] =
    "usage: mpe run [-j N] script.lua [args...]   run a script ('-' reads it from stdin)\n"
    "       mpe [-j N] -e CODE [args...]          run a string of Lua code (-e may repeat)\n"
    "       mpe map [-j N] [--unordered] (-e CODE | -f FILE) [INPUT...]\n"
    "                                             apply a Lua function to each input line\n"
    "       mpe scale [-j 1,2,4] [--repeat R] [--svg FILE] [--csv FILE] script.lua [args...]\n"
    "                                             run a workload at several worker counts\n"
    "       mpe version                           print the version\n"
    "       mpe help                              print this help\n"
    "options:\n"
    "  -j N   default number of workers for pools (exported as env MPE_WORKERS; 0: inline)\n"
    "  --     end of options\n"
    "exit status: 0 ok, 1 the script failed, 2 usage\n";

/* Print "mpe: <message>" (if fmt) and the usage on stderr; returns exit status 2. */
static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs("mpe: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    fputs(usage_text, stderr);
    return 2;
}

/* The command line, parsed. Words argv[1 .. first_arg-1] are mpe's own; the
 * script's arguments start at argv[first_arg]. */
typedef struct cmdline {
    int argc;
    char **argv;
    int script;         /* `run`: index of the script path ("-": stdin); -e: 0 */
    int first_arg;      /* index of the first script argument */
    int ncode;          /* -e options, in order, in code[] */
    const char **code;
} cmdline;

/* -j N: a worker count from 0 to 1024; exported as MPE_WORKERS so that every
 * pool the script (or its children) creates uses it by default (0: inline
 * pools, every task in the calling process). */
static int set_workers(const char *s)
{
    char *end, buf[16];
    errno = 0;
    long n = strtol(s, &end, 10);
    if (errno || end == s || *end || n < 0 || n > 1024)
        return -1;
    snprintf(buf, sizeof buf, "%ld", n);
    setenv("MPE_WORKERS", buf, 1);
    return 0;
}

/* Parse `mpe run [options] script args...` (is_run) or `mpe [options] args...`.
 * Returns 0, or prints the usage and returns 2. */
static int parse(cmdline *c, int is_run)
{
    int i = is_run ? 2 : 1;
    for (; i < c->argc; i++) {
        const char *a = c->argv[i];
        if (a[0] != '-' || a[1] == '\0')
            break; /* the script, or "-" for stdin */
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strncmp(a, "-j", 2) == 0) {
            const char *n = a[2] ? a + 2 : (i + 1 < c->argc ? c->argv[++i] : NULL);
            if (!n)
                return usage("-j needs a worker count from 0 to 1024");
            if (set_workers(n) != 0)
                return usage("-j needs a worker count from 0 to 1024, got '%s'", n);
        } else if (strcmp(a, "-e") == 0 && !is_run) {
            if (i + 1 >= c->argc)
                return usage("-e needs a string of Lua code");
            c->code[c->ncode++] = c->argv[++i];
        } else {
            return usage("unknown option '%s'", a);
        }
    }
    if (is_run) {
        if (i >= c->argc)
            return usage("run needs a script (or '-' for stdin)");
        c->script = i;
        c->first_arg = i + 1;
    } else {
        if (c->ncode == 0)
            return usage("nothing to run: give -e CODE, or use 'mpe run script.lua'");
        c->first_arg = i;
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

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(NULL);
    const char *cmd = argv[1];
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
#ifdef MPE_LUAJIT
        printf("mpe %s (%s)\n", MPE_VERSION_STRING, LUAJIT_VERSION);
#else
        printf("mpe %s (%s)\n", MPE_VERSION_STRING, LUA_RELEASE);
#endif
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }

    int is_run = strcmp(cmd, "run") == 0;
    const char *module = strcmp(cmd, "map") == 0     ? "mpe.cli.map"
                         : strcmp(cmd, "scale") == 0 ? "mpe.cli.scale"
                                                     : NULL;
    if (!is_run && !module && cmd[0] != '-') {
        if (has_suffix(cmd, ".lua"))
            return usage("unknown command '%s' (to run a script: mpe run %s)", cmd, cmd);
        return usage("unknown command '%s'", cmd);
    }
    cmdline c = {argc, argv, 0, 0, 0, NULL};
    c.code = calloc((size_t)argc, sizeof *c.code);
    if (!c.code) {
        fputs("mpe: not enough memory\n", stderr);
        return 1;
    }
    int status = module ? 0 : parse(&c, is_run);
    if (status == 0) {
        mpe_engine *e = mpe_new(NULL);
        if (!e) {
            fputs("mpe: cannot create a Lua state: not enough memory\n", stderr);
            status = 1;
        } else if (mpe_handle_signals(e) != 0) {
            status = report(e);
            mpe_close(e);
        } else {
            status = run(e, &c, module) == 0 ? 0 : report(e);
            /* Stopped by a signal: one line, and the shell's status for it.
             * Closing the state terminates the pools and processes it holds. */
            int sig = mpe_signal(e);
            mpe_close(e);
            if (sig) {
                fflush(stdout);
                fprintf(stderr, "%s\n", sig == SIGINT ? "mpe: interrupted by SIGINT"
                                                         : "mpe: terminated by SIGTERM");
                status = 128 + sig;
            }
        }
    }
    free(c.code);
    return status;
}
