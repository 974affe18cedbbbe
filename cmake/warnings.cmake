# Compiler warnings for diffuse's own code: -Wall -Wextra -Wshadow on every target this project
# builds (library, emulator, CLI, benchmarks, tests), and -Werror on top when
# DIFFUSE_WARNINGS_AS_ERRORS is ON (CI). It is included at the end of the root CMakeLists.txt so
# that it sees every target, and it walks the directory tree instead of naming targets, so a new
# test binary or tool gets the flags without anyone remembering to add them.
# Third-party headers (Catch2, nlohmann, stb, cblas, the CUDA toolkit and cuDNN) come in through
# imported targets or SYSTEM include directories, so their own warnings are not ours to count.
option(DIFFUSE_WARNINGS_AS_ERRORS "Treat compiler warnings in diffuse's own code as errors" OFF)

set(DIFFUSE_WARNING_FLAGS -Wall -Wextra -Wshadow)
# nvcc passes host-compiler flags through -Xcompiler; the device side has no equivalent of these.
# -Werror stays off there: nvcc's generated host stubs are not ours to fix, and every kernel's
# source is compiled by g++ with -Werror anyway (the emulator builds of kernels/cuda/*.cu).
list(JOIN DIFFUSE_WARNING_FLAGS "," _diffuse_host_warning_flags)
if(DIFFUSE_WARNINGS_AS_ERRORS)
  list(APPEND DIFFUSE_WARNING_FLAGS -Werror)
endif()

function(diffuse_apply_warnings directory)
  get_property(targets DIRECTORY ${directory} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(target ${targets})
    get_target_property(type ${target} TYPE)
    if(type MATCHES "^(STATIC_LIBRARY|SHARED_LIBRARY|MODULE_LIBRARY|OBJECT_LIBRARY|EXECUTABLE)$")
      target_compile_options(${target} PRIVATE
        $<$<COMPILE_LANGUAGE:CXX>:${DIFFUSE_WARNING_FLAGS}>
        $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${_diffuse_host_warning_flags}>)
    endif()
  endforeach()
  get_property(subdirectories DIRECTORY ${directory} PROPERTY SUBDIRECTORIES)
  foreach(subdirectory ${subdirectories})
    diffuse_apply_warnings(${subdirectory})
  endforeach()
endfunction()

diffuse_apply_warnings(${PROJECT_SOURCE_DIR})
