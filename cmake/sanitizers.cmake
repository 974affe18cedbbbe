# The sanitizer flavour (docs/hardening.md): -DDIFFUSE_SANITIZE=ON builds every target of this
# project — library, emulator, CLI, test binaries — under AddressSanitizer and UndefinedBehavior-
# Sanitizer, with libFuzzer's coverage instrumentation (-fsanitize=fuzzer-no-link) on top, and adds
# the libFuzzer targets of tests/fuzz/. One clang build directory therefore serves both CI jobs:
# the cpu and emu test labels under the sanitizers, and the fuzz targets (which need the same
# instrumentation to find anything). Any undefined behaviour is fatal (-fno-sanitize-recover), so a
# finding fails the test that hit it instead of scrolling past.
# It must be included before the first target is created: add_compile_options() applies only to
# targets defined after it.
option(DIFFUSE_SANITIZE "Build under ASan + UBSan and build the libFuzzer targets (clang only)" OFF)
if(NOT DIFFUSE_SANITIZE)
  return()
endif()
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "DIFFUSE_SANITIZE=ON needs clang (libFuzzer is clang's): configure with "
    "-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++, got ${CMAKE_CXX_COMPILER_ID}")
endif()
if(_diffuse_cuda)
  message(FATAL_ERROR "DIFFUSE_SANITIZE=ON builds no nvcc code: use -DDIFFUSE_CUDA=OFF (the emu "
    "label needs only Boost.Context) or EMULATED")
endif()

# -fno-omit-frame-pointer: ASan's fast unwinder needs frame pointers for the stacks it prints.
# -gline-tables-only: file:line in those stacks at a fraction of -g's build time.
set(DIFFUSE_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined)
add_compile_options(${DIFFUSE_SANITIZER_FLAGS} -fsanitize=fuzzer-no-link -fno-omit-frame-pointer
  -gline-tables-only)
add_link_options(${DIFFUSE_SANITIZER_FLAGS})
set(DIFFUSE_FUZZ ON)
message(STATUS "diffuse: sanitizer flavour (ASan + UBSan + libFuzzer coverage); fuzz targets in tests/fuzz")
