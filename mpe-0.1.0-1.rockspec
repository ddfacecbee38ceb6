-- mpe-0.1.0-1.rockspec -- LuaRocks: `luarocks make` in a checkout builds and
-- installs the Lua module mpe (and the mpe command) for Lua 5.4 or LuaJIT.
-- SPDX-License-Identifier: MIT
--
--   luarocks --lua-version 5.4 make --tree T
--   luarocks --lua-version 5.1 make --tree T LUA_INCDIR=/usr/include/luajit-2.1   (LuaJIT)
--
-- The build is CMake's (type "cmake"): the Lua sources under lua/ are compiled
-- into the module, which a "builtin" rockspec cannot do. The module goes to
-- the tree's C module directory, the command to its bin/ (named mpe for Lua
-- 5.4, mpe-luajit for LuaJIT). The version here must match project(VERSION)
-- in CMakeLists.txt (tests/cli/version.sh checks it).
rockspec_format = "3.0"
package = "mpe"
version = "0.1.0-1"
source = {
   -- `luarocks make` builds the checkout it runs in; a release sets the
   -- tarball's address here for `luarocks install`.
   url = "git+file:///dev/null",
   tag = "v0.1.0",
}
description = {
   summary = "Parallel processes for Lua: pools, shared memory, locks, queues",
   detailed = [[
mpe gives Lua what Python's multiprocessing gives Python: forked worker pools,
processes that return values, shared arrays and values, locks, queues, pipes
and dicts, and a codec that sends closures with their upvalues. Linux only;
Lua 5.4 or LuaJIT 2.1.]],
   license = "MIT",
   labels = { "parallel", "multiprocessing", "fork", "pool" },
}
supported_platforms = { "linux" }
dependencies = {
   "lua >= 5.1, < 5.5",
}
build = {
   type = "cmake",
   variables = {
      CMAKE_BUILD_TYPE = "Release",
      CMAKE_INSTALL_PREFIX = "$(PREFIX)",
      CMAKE_C_FLAGS = "$(CFLAGS)",
      BUILD_TESTING = "OFF",
      MPE_LUA_INCDIR = "$(LUA_INCDIR)",
      MPE_LUA_LIBDIR = "$(LUA_LIBDIR)",
      MPE_INSTALL_CMOD = "$(LIBDIR)",
      MPE_INSTALL_DEVEL = "OFF",
   },
}
