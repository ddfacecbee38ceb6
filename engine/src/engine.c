/* engine.c -- the embedding API of mpe.h: an engine owns one lua_State with
 * the standard libraries and mpe preloaded, and runs scripts in it the way
 * lua.c does (protected, with a traceback).
 * SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "mpe.h"
#include "compat.h"
#include "alloc.h"
#include "engine.h"
#include "err.h"
#include "sig.h"

struct mpe_engine {
    lua_State *L;
    char *errmsg; /* last failure, malloc'd; NULL if none */
    int nomem;    /* the last failure's message could not be copied */
};

static void set_errmsg(mpe_engine *e, const char *msg)
{
    free(e->errmsg);
    e->errmsg = msg ? strdup(msg) : NULL;
    e->nomem = msg && !e->errmsg;
}

/* Record the error value on top of the stack as the engine's message. */
static void set_errvalue(mpe_engine *e)
{
    lua_State *L = e->L;
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
    set_errmsg(e, msg);
}

/* Everything that can raise while the state is built runs under lua_pcall,
 * so that running out of memory makes mpe_new return NULL instead of
 * reaching the panic handler. */
static int open_state(lua_State *L)
{
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_mpe);
    lua_setfield(L, -2, "mpe");
    lua_pop(L, 2);
    return 0;
}

MPE_API mpe_engine *mpe_new(const mpe_options *opts)
{
    mpe_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->L = luaL_newstate();
    if (!e->L) {
        free(e);
        return NULL;
    }
    /* Before the script allocates anything (luaopen_mpe would be too late). */
    mpe__alloc_hugepages(e->L);
    if (opts && opts->workers > 0) {
        char n[16];
        snprintf(n, sizeof n, "%d", opts->workers);
        setenv("MPE_WORKERS", n, 1);
    }
    lua_pushcfunction(e->L, open_state);
    if (lua_pcall(e->L, 0, 0, 0) != LUA_OK) {
        lua_close(e->L);
        free(e);
        return NULL;
    }
#if LUA_VERSION_NUM >= 504
    /* The stock lua5.4 interpreter runs the generational collector; so do
     * we, so that a script costs the same under `mpe run` as under lua5.4. */
    lua_gc(e->L, LUA_GCGEN, 0, 0);
#endif
    return e;
}

MPE_API lua_State *mpe_state(mpe_engine *e)
{
    return e ? e->L : NULL;
}

/* Message handler (lua.c's): the message as a string, followed by a
 * traceback. Error objects with __tostring give their string; other
 * non-string values are named by type. */
static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int mpe__engine_run(mpe_engine *e, lua_CFunction prepare, void *ud)
{
    lua_State *L = e->L;
    int base = lua_gettop(L), n;
    if (!lua_checkstack(L, 3)) {
        set_errmsg(e, "not enough memory");
        return -1;
    }
    lua_pushcfunction(L, prepare);
    lua_pushlightuserdata(L, ud);
    if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK)
        goto fail; /* reported without a traceback, as lua.c reports a syntax error */
    n = lua_gettop(L) - base;
    if (n > 0) {
        if (!lua_checkstack(L, 1)) {
            lua_pushliteral(L, "not enough memory");
            goto fail;
        }
        lua_pushcfunction(L, msghandler);
        lua_insert(L, base + 1);
        if (lua_pcall(L, n - 1, 0, base + 1) != LUA_OK)
            goto fail;
    }
    lua_settop(L, base);
    set_errmsg(e, NULL);
    return 0;
fail:
    set_errvalue(e);
    lua_settop(L, base);
    return -1;
}

struct dofile_args {
    const char *path; /* NULL or "-": standard input */
    int argc;
    char **argv;
};

/* Set `arg`, load the script, push it and its arguments. */
static int prepare_file(lua_State *L)
{
    const struct dofile_args *a = lua_touserdata(L, 1);
    int stdin_script = (a->path == NULL || strcmp(a->path, "-") == 0);
    lua_settop(L, 0);
    /* arg: keep a table the host prepared (for negative indices), else a new one. */
    lua_getglobal(L, "arg");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, a->argc, 1);
    }
    lua_pushstring(L, stdin_script ? "-" : a->path);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < a->argc; i++) {
        lua_pushstring(L, a->argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    /* fopen succeeds on a directory and the read fails later: say what is wrong. */
    struct stat st;
    if (!stdin_script && stat(a->path, &st) == 0 && S_ISDIR(st.st_mode)) {
        lua_pushfstring(L, "cannot open %s: Is a directory", a->path);
        return lua_error(L);
    }
    if (luaL_loadfile(L, stdin_script ? NULL : a->path) != LUA_OK)
        return lua_error(L);
    luaL_checkstack(L, a->argc, "too many script arguments");
    for (int i = 0; i < a->argc; i++)
        lua_pushstring(L, a->argv[i]);
    return a->argc + 1;
}

MPE_API int mpe_dofile(mpe_engine *e, const char *path, int argc, char **argv)
{
    if (!e)
        return -1;
    if (!argv && argc > 0) {
        char msg[80];
        snprintf(msg, sizeof msg, "mpe_dofile: argv is NULL but argc is %d", argc);
        set_errmsg(e, msg);
        return -1;
    }
    struct dofile_args a = {path, argc > 0 ? argc : 0, argv};
    return mpe__engine_run(e, prepare_file, &a);
}

struct dostring_args {
    const char *code, *chunkname;
};

static int prepare_string(lua_State *L)
{
    const struct dostring_args *a = lua_touserdata(L, 1);
    if (luaL_loadbuffer(L, a->code, strlen(a->code), a->chunkname) != LUA_OK)
        return lua_error(L);
    return 1;
}

MPE_API int mpe_dostring(mpe_engine *e, const char *code, const char *chunkname)
{
    if (!e)
        return -1;
    if (!code) {
        set_errmsg(e, "mpe_dostring: code is NULL");
        return -1;
    }
    struct dostring_args a = {code, chunkname ? chunkname : "=(string)"};
    return mpe__engine_run(e, prepare_string, &a);
}

MPE_API int mpe_handle_signals(mpe_engine *e)
{
    if (!e)
        return -1;
    mpe_err err;
    if (mpe__sig_install(e->L, &err) != 0) {
        set_errmsg(e, err.msg);
        return -1;
    }
    return 0;
}

MPE_API int mpe_signal(mpe_engine *e)
{
    (void)e;
    return mpe__sig_caught();
}

MPE_API const char *mpe_errmsg(mpe_engine *e)
{
    if (!e)
        return "not enough memory"; /* the only way mpe_new gives NULL */
    if (e->errmsg)
        return e->errmsg;
    return e->nomem ? "not enough memory" : "";
}

MPE_API void mpe_close(mpe_engine *e)
{
    if (!e)
        return;
    lua_close(e->L);
    free(e->errmsg);
    free(e);
}
