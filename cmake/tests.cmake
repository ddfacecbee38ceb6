# Test registration: one `ctest` runs the C unit tests, the busted specs (under
# the stock interpreter with mpe.so and under `mpe run`), the CLI tests and the
# embedding host. Soak tests carry the label "soak" and are left out by default
# (ctest -LE soak); CI runs them on their own.

set(MPE_TEST_ENV
  "MPE_BIN=$<TARGET_FILE:mpe>"
  "MPE_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
  "MPE_BUILD_DIR=${PROJECT_BINARY_DIR}"
  "MPE_LUA_INTERP=${MPE_LUA_INTERP}"
  "LUA_CPATH=${PROJECT_BINARY_DIR}/?.so;${PROJECT_BINARY_DIR}/tests/?.so;;"
  "LUA_PATH=${PROJECT_SOURCE_DIR}/tests/spec/?.lua;;")
if(MPE_SANITIZE)
  # Children are forked, never exec'd, so one set of options covers them.
  list(APPEND MPE_TEST_ENV
    "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1"
    "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"
    "LSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/lsan.supp")
endif()

# C unit tests: tests/c/test_<subsys>.c, one executable each (harness in tests/c/tharness.h).
file(GLOB MPE_C_TESTS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/c/test_*.c)
foreach(src ${MPE_C_TESTS})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_include_directories(${name} PRIVATE engine/src tests/c ${LUA_INCLUDE_DIRS})
  target_link_libraries(${name} PRIVATE mpe_static)
  add_test(NAME c.${name} COMMAND ${name})
  set_tests_properties(c.${name} PROPERTIES TIMEOUT 120 ENVIRONMENT "${MPE_TEST_ENV}")
endforeach()

# A small C module the fault-injection specs load (a function that crashes, ...).
if(EXISTS ${PROJECT_SOURCE_DIR}/tests/faultlib.c)
  add_library(mpe_faultlib MODULE tests/faultlib.c)
  target_include_directories(mpe_faultlib PRIVATE ${LUA_INCLUDE_DIRS})
  set_target_properties(mpe_faultlib PROPERTIES OUTPUT_NAME faultlib PREFIX ""
                        LIBRARY_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
endif()

# busted specs, each under two runners. Under the sanitizers only `mpe run` is
# used: a stock interpreter cannot load an ASan-instrumented module.
find_program(BUSTED busted)
file(GLOB MPE_SPECS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/spec/*_spec.lua)
foreach(spec ${MPE_SPECS})
  get_filename_component(name ${spec} NAME_WE)
  string(REGEX REPLACE "_spec$" "" name ${name})
  set(label "")
  if(name MATCHES "^soak")
    set(label soak)
  endif()
  if(NOT MPE_SANITIZE)
    add_test(NAME spec.${name}.${MPE_LUA_INTERP}
             COMMAND ${BUSTED} --lua=${MPE_LUA_INTERP} -o plainTerminal ${spec}
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(spec.${name}.${MPE_LUA_INTERP} PROPERTIES
      TIMEOUT 300 ENVIRONMENT "${MPE_TEST_ENV};MPE_RUNNER=${MPE_LUA_INTERP}" LABELS "${label}")
  endif()
  add_test(NAME spec.${name}.mpe-run
           COMMAND ${BUSTED} "--lua=$<TARGET_FILE:mpe> run" -o plainTerminal ${spec}
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(spec.${name}.mpe-run PROPERTIES
    TIMEOUT 300 ENVIRONMENT "${MPE_TEST_ENV};MPE_RUNNER=mpe-run" LABELS "${label}")
endforeach()

# CLI tests: tests/cli/*.sh, each a bash script given the environment above.
file(GLOB MPE_CLI_TESTS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/cli/*.sh)
foreach(sh ${MPE_CLI_TESTS})
  get_filename_component(name ${sh} NAME_WE)
  add_test(NAME cli.${name} COMMAND bash ${sh} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(cli.${name} PROPERTIES TIMEOUT 300 ENVIRONMENT "${MPE_TEST_ENV}")
endforeach()

# The embedding host: links libmpe, registers a C function of its own.
if(EXISTS ${PROJECT_SOURCE_DIR}/tests/embed/host.c)
  add_executable(embed_host tests/embed/host.c)
  target_link_libraries(embed_host PRIVATE mpe_static)
  add_test(NAME embed.host COMMAND embed_host ${PROJECT_SOURCE_DIR}/tests/embed/host.lua)
  set_tests_properties(embed.host PROPERTIES TIMEOUT 60 ENVIRONMENT "${MPE_TEST_ENV}")
endif()

# libFuzzer target for the decoder (clang only): tests/fuzz/fuzz_decode.c.
if(MPE_FUZZ)
  add_executable(fuzz_decode tests/fuzz/fuzz_decode.c $<TARGET_OBJECTS:mpe_engine>)
  target_include_directories(fuzz_decode PRIVATE engine/include engine/src ${LUA_INCLUDE_DIRS})
  target_compile_options(fuzz_decode PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_decode PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_decode PRIVATE ${LUA_LINK_LIBRARIES} Threads::Threads m)
endif()
