# The -DDIFFUSE_CUDA=EMULATED flavour's one compile rule. Kernel sources (.cu) are compiled by g++
# as C++ through a generated one-line wrapper (g++ will not take a .cu file as C++ without
# per-file language flags), and every source that belongs to the emulated device, kernels or not,
# gets the two macros that select kernels/compat.cuh's third mode: DIFFUSE_EMULATOR (the SIMT
# emulator's built-ins) and DIFFUSE_EMULATED_DEVICE (launchers in namespace cuda that queue their
# grids on the emulated device's streams).
#
#   diffuse_emulated_device_sources(<out_var> <tag> <sources...>)
#
# <out_var> receives the sources to add to a target: .cpp files as they are, .cu files replaced by
# their wrappers under <binary dir>/emulated_device/<tag>/.
function(diffuse_emulated_device_sources out_var tag)
  set(result "")
  foreach(src ${ARGN})
    get_filename_component(ext ${src} LAST_EXT)
    if(ext STREQUAL ".cu")
      get_filename_component(stem ${src} NAME_WE)
      set(wrapper ${CMAKE_CURRENT_BINARY_DIR}/emulated_device/${tag}/dev_${stem}.cpp)
      file(CONFIGURE OUTPUT ${wrapper} CONTENT
        "// Generated: ${stem}.cu compiled by g++ for the emulated CUDA device.\n#include \"${src}\"\n")
      list(APPEND result ${wrapper})
    else()
      list(APPEND result ${src})
    endif()
  endforeach()
  if(result)
    set_source_files_properties(${result} PROPERTIES COMPILE_DEFINITIONS "DIFFUSE_EMULATOR=1;DIFFUSE_EMULATED_DEVICE=1")
  endif()
  set(${out_var} ${result} PARENT_SCOPE)
endfunction()
