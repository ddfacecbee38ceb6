# Where `cmake --install` puts each part, per Lua flavour (MPE_LUA), so that a
# Lua 5.4 and a LuaJIT build install side by side. Included by CMakeLists.txt
# before the targets; cmake/install.cmake writes the rules.
#
# The Lua module goes where the flavour's interpreter looks by default: its
# pkg-config file (lua5.4.pc, luajit.pc) names that directory for the
# interpreter's own prefix (INSTALL_CMOD, /usr/lib/x86_64-linux-gnu/lua/5.4 on
# Debian); under any other prefix it is <prefix>/lib/lua/<ABI>, the directory
# stock Lua searches under /usr/local. The path is kept relative to the install
# prefix, so `cmake --install --prefix P` and CPack move it with the prefix.

set(MPE_INSTALL_CMOD "" CACHE STRING
    "directory for the Lua module mpe.so (relative: under the install prefix; default: where ${MPE_LUA} looks)")
set(MPE_COMMAND_DEFAULT mpe)
if(NOT MPE_LUA STREQUAL "lua5.4")
  set(MPE_COMMAND_DEFAULT mpe-${MPE_LUA})
endif()
set(MPE_COMMAND ${MPE_COMMAND_DEFAULT} CACHE STRING "installed name of the mpe command")
# The plain names (mpe.pc, mpe::mpe's default) belong to one flavour: Lua 5.4.
if(MPE_LUA STREQUAL "lua5.4")
  set(MPE_ALIASES_DEFAULT ON)
else()
  set(MPE_ALIASES_DEFAULT OFF)
endif()
option(MPE_INSTALL_ALIASES "install the plain pkg-config name mpe.pc for this flavour" ${MPE_ALIASES_DEFAULT})
option(MPE_INSTALL_DEVEL "install libmpe, mpe.h, pkg-config and CMake files (off for LuaRocks)" ON)

if(MPE_INSTALL_CMOD)
  set(MPE_CMOD_DIR ${MPE_INSTALL_CMOD})
else()
  pkg_get_variable(MPE_LUA_PC_PREFIX ${MPE_LUA} prefix)
  pkg_get_variable(MPE_LUA_PC_CMOD ${MPE_LUA} INSTALL_CMOD)
  set(MPE_CMOD_DIR lib/lua/${MPE_LUA_ABI})
  if(MPE_LUA_PC_CMOD AND MPE_LUA_PC_PREFIX AND CMAKE_INSTALL_PREFIX STREQUAL MPE_LUA_PC_PREFIX)
    file(RELATIVE_PATH MPE_CMOD_DIR ${MPE_LUA_PC_PREFIX} ${MPE_LUA_PC_CMOD})
  endif()
endif()
if(IS_ABSOLUTE ${MPE_CMOD_DIR})
  set(MPE_CMOD_FULL ${MPE_CMOD_DIR})
else()
  set(MPE_CMOD_FULL ${CMAKE_INSTALL_PREFIX}/${MPE_CMOD_DIR})
endif()
# Say so when the interpreter would not find the module without LUA_CPATH.
find_program(MPE_LUA_EXE ${MPE_LUA_INTERP})
if(MPE_LUA_EXE AND NOT MPE_INSTALL_CMOD)
  execute_process(COMMAND ${MPE_LUA_EXE} -e "io.write(package.cpath)"
                  OUTPUT_VARIABLE MPE_LUA_CPATH ERROR_QUIET)
  string(FIND ";${MPE_LUA_CPATH};" ";${MPE_CMOD_FULL}/?.so;" MPE_CMOD_POS)
  if(MPE_CMOD_POS LESS 0)
    message(STATUS "mpe.so will go to ${MPE_CMOD_FULL}, which ${MPE_LUA_INTERP} does not search "
                   "by default (package.cpath: ${MPE_LUA_CPATH}): users need LUA_CPATH")
  else()
    message(STATUS "mpe.so will go to ${MPE_CMOD_FULL}, on ${MPE_LUA_INTERP}'s default package.cpath")
  endif()
endif()

set(MPE_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR}/mpe)
set(MPE_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/mpe)
set(MPE_INSTALL_PCDIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
