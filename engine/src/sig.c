/* sig.c -- SIGINT and SIGTERM for programs that run scripts: the handler
 * records the signal and hooks the running lua_State, so the script stops at
 * its next instruction; mpe's own waits notice the signal within 100 ms.
 * SPDX-License-Identifier: MIT
 *
 * The handler does only async-signal-safe things: it stores a sig_atomic_t and
 * sets a Lua hook, as lua.c's own handler does. The first signal asks the
 * script to stop; the handler is then reset, so a second one acts at once. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include "compat.h"
#include "err.h"
#include "sig.h"

/* Process-wide by nature: a signal is delivered to the process. */
static volatile sig_atomic_t caught;
static volatile sig_atomic_t seen; /* SIGINT noticed under a stock interpreter (recorder, hook) */
static lua_State *volatile hooked;

static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    mpe__sig_raise(L);
}

static void handler(int sig)
{
    int saved = errno;
    caught = sig;
    if (hooked)
        lua_sethook(hooked, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    errno = saved;
}

int mpe__sig_install(lua_State *L, mpe_err *e)
{
    hooked = L;
    caught = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return mpe__seterr(e, "sigaction: %s", strerror(errno));
    return 0;
}

int mpe__sig_caught(void)
{
    return caught;
}

/* ---- the recorder, for interpreters that handle SIGINT themselves -------------- */

static struct sigaction chained; /* the handler the recorder stands in front of */

static void recorder(int sig)
{
    int saved = errno;
    seen = sig;
    chained.sa_handler(sig); /* lua.c's laction: hooks the state, resets SIGINT to SIG_DFL */
    errno = saved;
}

void mpe__sig_record(void)
{
    struct sigaction cur;
    if (sigaction(SIGINT, NULL, &cur) != 0 || (cur.sa_flags & SA_SIGINFO) ||
        cur.sa_handler == SIG_DFL || cur.sa_handler == SIG_IGN || cur.sa_handler == handler ||
        cur.sa_handler == recorder)
        return;
    chained = cur;
    struct sigaction sa = cur;
    sa.sa_handler = recorder;
    sigaction(SIGINT, &sa, NULL);
}

int mpe__sig_seen(void)
{
    return caught ? caught : seen;
}

const char *mpe__sig_message(int sig)
{
    return sig == SIGINT ? "mpe: interrupted by SIGINT" : "mpe: terminated by SIGTERM";
}

int mpe__sig_raise(lua_State *L)
{
    return luaL_error(L, "%s", mpe__sig_message(caught ? caught : SIGINT));
}

void mpe__sig_watch(lua_State *L, mpe_sigwatch *w)
{
    w->L = L;
    w->hook = lua_gethook(L);
    w->mask = lua_gethookmask(L);
    w->main = NULL;
#ifdef LUA_RIDX_MAINTHREAD
    /* lua.c hooks the main thread even when the wait runs in a coroutine. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    w->main = lua_tothread(L, -1);
    lua_pop(L, 1);
    if (w->main == L)
        w->main = NULL;
#endif
    if (w->main) {
        w->main_hook = lua_gethook(w->main);
        w->main_mask = lua_gethookmask(w->main);
    }
}

int mpe__sig_changed(void *ud)
{
    const mpe_sigwatch *w = ud;
    return caught || lua_gethook(w->L) != w->hook || lua_gethookmask(w->L) != w->mask ||
           (w->main && (lua_gethook(w->main) != w->main_hook ||
                        lua_gethookmask(w->main) != w->main_mask));
}

void mpe__sig_check(lua_State *L, const mpe_sigwatch *w)
{
    if (caught)
        mpe__sig_raise(L);
    /* A stock interpreter (lua.c) answers Ctrl-C by setting a hook: while we
     * wait in C it cannot fire, so stop waiting and say so ourselves. */
    if (mpe__sig_changed((void *)w)) {
        lua_sethook(L, NULL, 0, 0);
        seen = SIGINT; /* for the exit-time release, should the recorder have been replaced */
        luaL_error(L, "interrupted!");
    }
}
