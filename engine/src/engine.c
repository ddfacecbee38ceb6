/* engine.c -- the embedding API of mpe.h: an engine owns one lua_State with
 * the standard libraries and mpe preloaded, and runs scripts in it the way
 * lua.c does (protected, with a traceback).
 * SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

struct mpe_engine {
    lua_State *L;
    char *errmsg; /* last failure, malloc'd; NULL if none */
};

static void set_errmsg(mpe_engine *e, const char *msg)
{
    free(e->errmsg);
    e->errmsg = msg ? strdup(msg) : NULL;
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
    if (opts && opts->workers > 0) {
        char n[16];
        snprintf(n, sizeof n, "%d", opts->workers);
        setenv("MPE_WORKERS", n, 1);
    }
    luaL_openlibs(e->L);
    lua_getglobal(e->L, "package");
    lua_getfield(e->L, -1, "preload");
    lua_pushcfunction(e->L, luaopen_mpe);
    lua_setfield(e->L, -2, "mpe");
    lua_pop(e->L, 2);
    return e;
}

MPE_API lua_State *mpe_state(mpe_engine *e)
{
    return e->L;
}

/* Message handler: the message as a string, followed by a traceback. */
static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL || lua_type(L, 1) != LUA_TSTRING) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Call the function on top of the stack with nargs arguments below... above it. */
static int docall(mpe_engine *e, int nargs)
{
    lua_State *L = e->L;
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, 0, base);
    lua_remove(L, base);
    if (status != LUA_OK) {
        set_errmsg(e, lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    set_errmsg(e, NULL);
    return 0;
}

MPE_API int mpe_dofile(mpe_engine *e, const char *path, int argc, char **argv)
{
    lua_State *L = e->L;
    int stdin_script = (path == NULL || strcmp(path, "-") == 0);
    /* arg: keep a table the host prepared (for negative indices), else a new one. */
    lua_getglobal(L, "arg");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, argc, 1);
    }
    lua_pushstring(L, stdin_script ? "-" : path);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    if (luaL_loadfile(L, stdin_script ? NULL : path) != LUA_OK) {
        set_errmsg(e, lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    luaL_checkstack(L, argc, "too many script arguments");
    for (int i = 0; i < argc; i++)
        lua_pushstring(L, argv[i]);
    return docall(e, argc);
}

MPE_API int mpe_dostring(mpe_engine *e, const char *code, const char *chunkname)
{
    if (luaL_loadbuffer(e->L, code, strlen(code), chunkname ? chunkname : "=(string)") != LUA_OK) {
        set_errmsg(e, lua_tostring(e->L, -1));
        lua_pop(e->L, 1);
        return -1;
    }
    return docall(e, 0);
}

MPE_API const char *mpe_errmsg(mpe_engine *e)
{
    return e->errmsg ? e->errmsg : "";
}

MPE_API void mpe_close(mpe_engine *e)
{
    if (!e)
        return;
    lua_close(e->L);
    free(e->errmsg);
    free(e);
}
