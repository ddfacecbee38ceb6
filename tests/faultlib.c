/* faultlib.c -- a small Lua C module for the fault-injection specs: ways for a
 * worker to die or misbehave that Lua alone cannot produce (a segfault, an
 * abort, an address-space limit, a hang in C, garbage on its sockets).
 * SPDX-License-Identifier: MIT
 *
 * Built as build/tests/faultlib.so (cmake/tests.cmake), loaded with
 * require "faultlib". Test code only: never linked into mpe. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dirfd, S_ISSOCK, mallinfo2 when built outside CMake */
#endif
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "lauxlib.h"
#include "lua.h"

#define BLOCK_MT "faultlib.block"

/* faultlib.segv(): a write through a null pointer (SIGSEGV). */
static int f_segv(lua_State *L)
{
    (void)L;
    volatile int *volatile p = NULL;
    *p = 42;
    return 0;
}

/* faultlib.abort(): abort() (SIGABRT). */
static int f_abort(lua_State *L)
{
    (void)L;
    abort();
}

/* faultlib.raise(signum): send the signal to this process. */
static int f_raise(lua_State *L)
{
    int sig = (int)luaL_checkinteger(L, 1);
    lua_pushboolean(L, raise(sig) == 0);
    return 1;
}

/* faultlib.exit(status): _exit without flushing or closing anything. */
static int f_exit(lua_State *L)
{
    _exit((int)luaL_optinteger(L, 1, 0));
}

/* faultlib.hang(): block in C forever (pause() in a loop): no Lua hook can
 * run, so only a signal ends it. */
static int f_hang(lua_State *L)
{
    (void)L;
    for (;;)
        pause();
    return 0;
}

/* faultlib.ignore(signum): set the signal's disposition to SIG_IGN. */
static int f_ignore(lua_State *L)
{
    int sig = (int)luaL_checkinteger(L, 1);
    lua_pushboolean(L, signal(sig, SIG_IGN) != SIG_ERR);
    return 1;
}

/* A block of memory owned by a userdata: freed by its __gc. */
typedef struct block {
    void *p;
    size_t n;
} block;

static int block_gc(lua_State *L)
{
    block *b = luaL_checkudata(L, 1, BLOCK_MT);
    free(b->p);
    b->p = NULL;
    return 0;
}

/* faultlib.alloc(bytes) -> a block (every page written), or nil and
 * "not enough memory" when malloc fails. */
static int f_alloc(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n > 0, 1, "must be positive");
    block *b = lua_newuserdata(L, sizeof *b);
    b->p = NULL;
    b->n = 0;
    luaL_setmetatable(L, BLOCK_MT);
    b->p = malloc((size_t)n);
    if (!b->p) {
        lua_pushnil(L);
        lua_pushliteral(L, "not enough memory");
        return 2;
    }
    b->n = (size_t)n;
    memset(b->p, 0x5a, b->n);
    return 1;
}

/* faultlib.limit_as(bytes | nil): set the soft RLIMIT_AS (nil: the hard
 * limit, normally unlimited). Only the soft limit changes, so it can always
 * be raised again. Returns true, or nil and the error. */
static int f_limit_as(lua_State *L)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_AS, &r) != 0)
        goto fail;
    if (lua_isnoneornil(L, 1))
        r.rlim_cur = r.rlim_max;
    else
        r.rlim_cur = (rlim_t)luaL_checkinteger(L, 1);
    if (setrlimit(RLIMIT_AS, &r) != 0)
        goto fail;
    lua_pushboolean(L, 1);
    return 1;
fail:
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
}

/* faultlib.vmsize() -> the process's virtual size in bytes (VmSize). */
static int f_vmsize(lua_State *L)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    if (f) {
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "VmSize: %lld kB", &kb) == 1)
                break;
        fclose(f);
    }
    if (kb < 0)
        return luaL_error(L, "faultlib.vmsize: cannot read VmSize from /proc/self/status");
    lua_pushinteger(L, (lua_Integer)kb * 1024);
    return 1;
}

/* faultlib.fd_count() -> the number of open descriptors of this process
 * (the entries of /proc/self/fd, not counting the one that lists them). */
static int f_fd_count(lua_State *L)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return luaL_error(L, "faultlib.fd_count: cannot open /proc/self/fd: %s", strerror(errno));
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    lua_pushinteger(L, n - 1);
    return 1;
}

/* faultlib.heap() -> bytes malloc has handed out and not got back, and the
 * bytes its arenas hold from the system (glibc's mallinfo2, every arena):
 * the first grows with a leak, the second also with fragmentation. */
static int f_heap(lua_State *L)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 m = mallinfo2();
    lua_pushinteger(L, (lua_Integer)(m.uordblks + m.hblkhd));
    lua_pushinteger(L, (lua_Integer)(m.arena + m.hblkhd));
    return 2;
#else
    lua_pushnil(L);
    return 1;
#endif
}

/* faultlib.trim(): give the free memory of every malloc arena back to the
 * system (malloc_trim(0)), so VmRSS shows what is live. */
static int f_trim(lua_State *L)
{
#ifdef __GLIBC__
    lua_pushboolean(L, malloc_trim(0));
#else
    lua_pushboolean(L, 0);
#endif
    return 1;
}

/* faultlib.sockets() -> the descriptors of this process that are sockets. */
static int f_sockets(lua_State *L)
{
    lua_newtable(L);
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 1;
    int n = 0, self = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int fd = atoi(de->d_name);
        struct stat st;
        if (de->d_name[0] == '.' || fd == self || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
            continue;
        lua_pushinteger(L, fd);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    return 1;
}

/* faultlib.write(fd, bytes) -> bytes written, or nil and the error: raw bytes
 * on a descriptor (garbage on a worker's channel). */
static int f_write(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    ssize_t w;
    do
        w = send(fd, s, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    if (w < 0 && errno == ENOTSOCK)
        do
            w = write(fd, s, n);
        while (w < 0 && errno == EINTR);
    if (w < 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)w);
    return 1;
}

/* faultlib.close(fd) -> true, or nil and the error. */
static int f_close(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    if (close(fd) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

__attribute__((visibility("default"))) int luaopen_faultlib(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"segv", f_segv},         {"abort", f_abort},     {"raise", f_raise},
        {"exit", f_exit},         {"hang", f_hang},       {"ignore", f_ignore},
        {"alloc", f_alloc},       {"limit_as", f_limit_as}, {"vmsize", f_vmsize},
        {"sockets", f_sockets},   {"write", f_write},     {"close", f_close},
        {"fd_count", f_fd_count}, {"heap", f_heap}, {"trim", f_trim},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, BLOCK_MT)) {
        lua_pushcfunction(L, block_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    lua_pushinteger(L, SIGKILL);
    lua_setfield(L, -2, "SIGKILL");
    lua_pushinteger(L, SIGTERM);
    lua_setfield(L, -2, "SIGTERM");
    lua_pushinteger(L, SIGINT);
    lua_setfield(L, -2, "SIGINT");
    return 1;
}
