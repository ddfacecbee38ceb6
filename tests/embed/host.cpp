// host.cpp -- a C++ host program embedding mpe: mpe.h's extern "C" lets it
// link, and the engine works from C++ (a host function, a pool, errors).
// SPDX-License-Identifier: MIT
//
// Usage: embed_host_cpp [script.lua [args...]]. Exit status 0 when every check passed.
// Built by ctest against the build tree and by tests/install.sh against an
// installed tree (pkg-config and find_package).
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <mpe.h> // declares lua.h and mpe's API extern "C"
// lauxlib.h has no extern "C" of its own under LuaJIT (Debian's Lua 5.4 has):
// lua.hpp does this, but LuaJIT and Lua 5.4 keep it in different places.
extern "C" {
#include <lauxlib.h>
}

namespace {

struct engine_closer {
    void operator()(mpe_engine *e) const { mpe_close(e); }
};
using engine_ptr = std::unique_ptr<mpe_engine, engine_closer>;

// host_concat(a, b) -> a .. b, built with std::string: a C++ function only this program has.
int host_concat(lua_State *L)
{
    std::string s = luaL_checkstring(L, 1);
    s += luaL_checkstring(L, 2);
    lua_pushlstring(L, s.data(), s.size());
    return 1;
}

int fail(const char *what, mpe_engine *e)
{
    std::fprintf(stderr, "embed_host_cpp: %s: %s\n", what, e ? mpe_errmsg(e) : "");
    return 1;
}

} // namespace

int main(int argc, char **argv)
{
    static_assert(MPE_VERSION_NUM >= 100, "mpe_version.h is included by mpe.h");
    engine_ptr e(mpe_new(nullptr));
    if (!e)
        return fail("mpe_new", nullptr);
    lua_register(mpe_state(e.get()), "host_concat", host_concat);

    // A pool's workers are forks of this program: they call the C++ function.
    const char *code =
        "local mpe = require 'mpe'\n"
        "assert(mpe.version == '" MPE_VERSION_STRING "', 'mpe.version ' .. tostring(mpe.version))\n"
        "local pool = mpe.pool(2)\n"
        "local r = pool:map(function(x) return host_concat('n', tostring(x)) end, {1, 2, 3})\n"
        "pool:close() pool:join()\n"
        "assert(table.concat(r, ',') == 'n1,n2,n3', table.concat(r, ','))\n";
    if (mpe_dostring(e.get(), code, "=cpp") != 0)
        return fail("pool map with a C++ function", e.get());
    if (mpe_dostring(e.get(), "error('from C++')", "=bad") == 0 ||
        !std::strstr(mpe_errmsg(e.get()), "from C++"))
        return fail("a failing chunk is reported", e.get());
    if (argc > 1 && mpe_dofile(e.get(), argv[1], argc - 2, argv + 2) != 0)
        return fail(argv[1], e.get());
    e.reset();
    std::puts("embed_host_cpp: ok");
    return 0;
}
