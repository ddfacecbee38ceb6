/* lmpe.c -- the Lua module's entry point: luaopen_mpe and the Lua modules
 * embedded from lua/ (error objects and shared helpers are in lmpe_err.c).
 * SPDX-License-Identifier: MIT
 *
 * Only binding code lives in lmpe*.c: argument checks, userdata, metatables.
 * Each subsystem's bindings add themselves to the module table through their
 * mpe__open_* function, called from luaopen_mpe below. */
#include "mpe.h"
#include "compat.h"
#include "alloc.h"
#include "lmpe.h"
#include "lmpe_err.h"
#include "sig.h"

/* Lua modules embedded from lua/ at build time (cmake/embed.cmake). */
struct mpe__lua_module {
    const char *name, *chunkname, *code;
    size_t len;
};
extern const struct mpe__lua_module mpe__lua_modules[];

/* package.preload loader for an embedded module; upvalue 1 is its index. */
static int load_embedded(lua_State *L)
{
    const struct mpe__lua_module *m = &mpe__lua_modules[lua_tointeger(L, lua_upvalueindex(1))];
    if (luaL_loadbuffer(L, m->code, m->len, m->chunkname) != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, m->name);
    lua_call(L, 1, 1);
    return 1;
}

static void preload_embedded(lua_State *L)
{
    lua_getglobal(L, "package");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, -1, "preload");
    for (int i = 0; mpe__lua_modules[i].name; i++) {
        lua_pushinteger(L, i);
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, mpe__lua_modules[i].name);
    }
    lua_pop(L, 2);
}

/* ---- the module -------------------------------------------------------------- */

MPE_API int luaopen_mpe(lua_State *L)
{
    mpe__alloc_hugepages(L);
    lua_createtable(L, 0, 48);
    lua_pushstring(L, MPE_VERSION_STRING);
    lua_setfield(L, -2, "version");
    mpe__open_errors(L);
    lua_setfield(L, -2, "Error");
    preload_embedded(L);
    mpe__open_codec(L);
    mpe__open_proc(L);
    mpe__open_process(L);
    mpe__open_pool(L);
    mpe__open_shm(L);
    mpe__open_sync(L);
    mpe__open_ipc(L);
    /* In lua5.4 and luajit, lua.c's SIGINT handler only hooks the state: so
     * that a process still running at exit is not waited for after Ctrl-C. */
    mpe__sig_record();
    return 1;
}
