/* fuzz_decode.c -- libFuzzer target for the codec's decoder: any input must
 * decode or raise "mpe: decode: ...", never crash, hang or read out of bounds.
 * SPDX-License-Identifier: MIT
 *
 * One lua_State for the whole run, with mpe opened (so the shared-object types
 * other parts register are fuzzed too) and a fixed MAC key, so that the seeds
 * in tests/fuzz/corpus/ carry valid functions and the fuzzer can mutate what
 * follows them. The input is one raw value (no mpe.encode version byte).
 *
 * Regenerate the seeds: MPE_FUZZ_SEEDS=tests/fuzz/corpus build-fuzz/fuzz_decode */
#include <stdio.h>
#include <stdlib.h>
#include "mpe.h"
#include "compat.h"
#include "buf.h"
#include "codec.h"

static lua_State *L;

static const unsigned char fuzz_key[16] = "mpe-fuzz-key-16";

/* Values the seeds encode: one of each wire tag but T_CFUNC_ADDR, and some
 * mixtures. A C address is valid only in the run that wrote it (ASLR): from a
 * seed, a mutation could place a stale one under __gc and call it. */
static const char *const seeds[] = {
    "return nil",
    "return true",
    "return false",
    "return -1234567",
    "return math.mininteger",
    "return 2.5",
    "return 0/0",
    "return 'a\\0b'",
    "return {}",
    "return {1, 2, 3, 4, 5, 6}",
    "return {1.5, 2.5, 3.5, 4.5}",
    "return {1, 'x', {2}, k = 'v', [true] = false, [1.5] = {}}",
    "local t = {} t.self = t t[t] = t return t",
    "local s = {1} return {s, s, {s}}",
    "return {_G, string.format, math.log}",
    "return setmetatable({1}, {__index = {x = 1}})",
    "local mt = {} mpe.register('Fuzz', mt) return {setmetatable({}, mt), setmetatable({}, mt)}",
    "local n = 0 local function inc() n = n + 1 return n end "
    "local function get() return n end return {inc, get}",
    "local log = math.log local data = {1, 2} "
    "return function(i) return log(data[i]) end",
    "local function fact(n) if n < 2 then return 1 end return n * fact(n - 1) end return fact",
    NULL,
};

static int p_encode(lua_State *S)
{
    mpe_buf *b = lua_touserdata(S, 1);
    lua_settop(S, 2);
    mpe__encode(S, 2, b, "value", NULL);
    return 0;
}

/* Write one file per seed into dir. */
static int write_seeds(const char *dir)
{
    int failed = 0;
    for (int i = 0; seeds[i]; i++) {
        mpe_buf b = {0};
        lua_settop(L, 0);
        lua_pushcfunction(L, p_encode);
        lua_pushlightuserdata(L, &b);
        if (luaL_loadstring(L, seeds[i]) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK ||
            lua_pcall(L, 2, 0, 0) != LUA_OK) {
            fprintf(stderr, "seed %d: %s\n", i, lua_tostring(L, -1));
            failed = 1;
            mpe__buf_free(&b);
            continue;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/seed-%02d", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(b.p, 1, b.n, f) != b.n || fclose(f) != 0) {
            perror(path);
            failed = 1;
        }
        mpe__buf_free(&b);
    }
    return failed;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    /* No io, os or debug: a decoded metatable may name any reachable C
     * function (by design), and the fuzzer should not run those. */
    static const luaL_Reg libs[] = {{"package", luaopen_package}, {"_G", luaopen_base},
                                    {"string", luaopen_string},   {"table", luaopen_table},
                                    {"math", luaopen_math},       {NULL, NULL}};
    /* luaL_requiref by hand (LuaJIT has none): global and package.loaded;
     * package first, it creates the loaded table. */
    for (const luaL_Reg *l = libs; l->name; l++) {
        lua_pushcfunction(L, l->func);
        lua_pushstring(L, l->name);
        lua_call(L, 1, 1);
        lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
        lua_pushvalue(L, -2);
        lua_setfield(L, -2, l->name);
        lua_pop(L, 1);
        lua_setglobal(L, l->name);
    }
    /* mpe is opened (its types register their codec hooks) but stays out of
     * the globals while fuzzing: by-name C functions reach only what globals
     * reach, and decoded metatables should not start pools. */
    lua_pushcfunction(L, luaopen_mpe);
    lua_call(L, 0, 1);
    mpe__codec_set_key(fuzz_key);
    const char *dir = getenv("MPE_FUZZ_SEEDS");
    if (dir) {
        lua_setglobal(L, "mpe");
        exit(write_seeds(dir));
    }
    lua_settop(L, 0);
    return 0;
}

static int p_decode(lua_State *S)
{
    mpe_rd *r = lua_touserdata(S, 1);
    mpe__decode(S, r, NULL);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mpe_rd r;
    mpe__rd_init(&r, data, size);
    lua_pushcfunction(L, p_decode);
    lua_pushlightuserdata(L, &r);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
        if (r.pos > size)
            abort(); /* read past the input */
    } else if (lua_type(L, -1) != LUA_TSTRING) {
        abort(); /* every decode error is a message */
    }
    lua_settop(L, 0);
    return 0;
}
