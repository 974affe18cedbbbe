# Data-parallel training (docs/distributed.md): MPI starts and coordinates the ranks and
# all-reduces CPU gradients; NCCL all-reduces CUDA gradients, bootstrapped through MPI.
#   -DDIFFUSE_MPI=AUTO (default: built when MPI is found), ON (required), OFF (single process only).
# Without MPI every run is the one-rank case of the same code (nn/collective.h). NCCL comes from
# the CUDA toolkit when the CUDA backend is real; in the EMULATED flavour the emulated device
# serves the NCCL calls itself, over MPI (kernels/emulated_device/nccl.cpp). Included by the top
# CMakeLists.txt once the `diffuse` target exists.
set(DIFFUSE_MPI "AUTO" CACHE STRING "Build data-parallel training on MPI (and NCCL with CUDA): AUTO, ON or OFF")
set_property(CACHE DIFFUSE_MPI PROPERTY STRINGS AUTO ON OFF)

set(DIFFUSE_HAVE_MPI OFF)
set(DIFFUSE_HAVE_NCCL OFF)
if(DIFFUSE_MPI STREQUAL "ON")
  find_package(MPI REQUIRED COMPONENTS C)
  set(DIFFUSE_HAVE_MPI ON)
elseif(DIFFUSE_MPI STREQUAL "AUTO")
  find_package(MPI QUIET COMPONENTS C)
  set(DIFFUSE_HAVE_MPI ${MPI_C_FOUND})
elseif(NOT DIFFUSE_MPI STREQUAL "OFF")
  message(FATAL_ERROR "DIFFUSE_MPI must be AUTO, ON or OFF, got '${DIFFUSE_MPI}'")
endif()

if(DIFFUSE_HAVE_MPI)
  target_compile_definitions(diffuse PUBLIC DIFFUSE_WITH_MPI=1)
  target_link_libraries(diffuse PUBLIC MPI::MPI_C)
  # The C API only: Open MPI's and MPICH's mpi.h otherwise pull in their deprecated C++ bindings,
  # which need libmpi_cxx.
  target_compile_definitions(diffuse PRIVATE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
  if(_diffuse_cuda)
    find_library(DIFFUSE_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64)
    find_path(DIFFUSE_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
    if(NOT DIFFUSE_NCCL_LIBRARY OR NOT DIFFUSE_NCCL_INCLUDE_DIR)
      message(FATAL_ERROR "MPI is in and the CUDA backend is real, but NCCL (nccl.h, libnccl) was not found; "
                          "install NCCL or configure with -DDIFFUSE_MPI=OFF")
    endif()
    target_include_directories(diffuse PUBLIC ${DIFFUSE_NCCL_INCLUDE_DIR})
    target_link_libraries(diffuse PUBLIC ${DIFFUSE_NCCL_LIBRARY})
    set(DIFFUSE_HAVE_NCCL ON)
  elseif(_diffuse_cuda_emulated)
    set(DIFFUSE_HAVE_NCCL ON)  # served by kernels/emulated_device/nccl.cpp
  endif()
  if(DIFFUSE_HAVE_NCCL)
    target_compile_definitions(diffuse PUBLIC DIFFUSE_WITH_NCCL=1)
  endif()
  find_program(DIFFUSE_MPIEXEC NAMES mpirun mpiexec HINTS ${MPIEXEC_EXECUTABLE})
endif()
message(STATUS "diffuse: MPI ${DIFFUSE_HAVE_MPI}, NCCL ${DIFFUSE_HAVE_NCCL}")
