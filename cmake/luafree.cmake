# Run by the test `luafree` (cmake/tests.cmake): the engine's Lua-free modules
# must see no Lua type. Each file of FILES is preprocessed on its own with only
# the engine's headers on the include path (no Lua headers there): the test
# fails if one cannot be preprocessed (it includes a Lua header) or if its
# expansion names lua_State, lua.h or luajit anyway.
# Inputs: CC, SRCDIR (engine/src), FILES (';'-separated, relative to SRCDIR).
foreach(f ${FILES})
  execute_process(COMMAND ${CC} -std=c11 -D_GNU_SOURCE -E -x c -I${SRCDIR} ${SRCDIR}/${f}
                  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(SEND_ERROR "${f}: does not preprocess without the Lua headers:\n${err}")
  elseif(out MATCHES "lua_State|lua\\.h|luajit|lauxlib")
    message(SEND_ERROR "${f}: a Lua-free module sees a Lua name (${CMAKE_MATCH_0})")
  else()
    message(STATUS "${f}: no Lua")
  endif()
endforeach()
