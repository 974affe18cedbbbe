# Install rules and the exported CMake package, so that an application writes only
#   find_package(diffuse CONFIG REQUIRED)  +  target_link_libraries(app diffuse::diffuse).
# Installed: lib/libdiffuse.a; include/diffuse/{diffuse,error,device}.h (the stable API);
# include/diffuse/internal/{kernels,nn,engine}/ (everything lower: usable, not promised stable);
# bin/diffuse (when the tools are built); lib/cmake/diffuse/ (Config, ConfigVersion, Targets).
option(DIFFUSE_INSTALL "Generate diffuse's install rules" ${DIFFUSE_TOP_LEVEL})
if(NOT DIFFUSE_INSTALL)
  return()
endif()
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# In the build tree the library links its private dependencies through diffuse_deps (which is not
# exported). A static library's consumers must link those too, so the installed target names the
# imported targets that diffuseConfig.cmake finds again (nlohmann-json and stb are header-only and
# used only inside the library's sources).
target_link_libraries(diffuse PRIVATE $<INSTALL_INTERFACE:ZLIB::ZLIB> $<INSTALL_INTERFACE:PNG::PNG>
                      $<INSTALL_INTERFACE:JPEG::JPEG> $<INSTALL_INTERFACE:BLAS::BLAS>)

set(_diffuse_export_targets diffuse)
if(_diffuse_cuda)
  set_target_properties(diffuse_cudnn PROPERTIES EXPORT_NAME cudnn)  # diffuse::cudnn: cuDNN's path
  list(APPEND _diffuse_export_targets diffuse_cudnn)
  get_filename_component(DIFFUSE_CUDA_TOOLKIT_ROOT "${CUDAToolkit_BIN_DIR}" DIRECTORY)
elseif(_diffuse_cuda_emulated)
  # The emulated device is inside libdiffuse.a; consumers need only the toolkit's headers (the
  # installed nn/cuda/ headers include them) and Boost.Context (the SIMT emulator's fibers).
  set_target_properties(diffuse_cuda_headers PROPERTIES EXPORT_NAME cuda_headers)
  list(APPEND _diffuse_export_targets diffuse_cuda_headers)
endif()
set(DIFFUSE_WITH_CUDA ${_diffuse_cuda})
set(DIFFUSE_CUDA_EMULATED ${_diffuse_cuda_emulated})
if(_diffuse_cuda_emulated)
  set(DIFFUSE_WITH_CUDA ON)
endif()

install(TARGETS ${_diffuse_export_targets} EXPORT diffuseTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/diffuse DESTINATION include
  FILES_MATCHING PATTERN "*.h")
foreach(tree kernels nn engine)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${tree} DESTINATION include/diffuse/internal
    FILES_MATCHING PATTERN "*.h" PATTERN "*.cuh")
endforeach()
if(TARGET diffuse_cli)
  install(TARGETS diffuse_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

set(_diffuse_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/diffuse)
install(EXPORT diffuseTargets NAMESPACE diffuse:: DESTINATION ${_diffuse_cmake_dir})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/diffuseConfig.cmake.in
  ${PROJECT_BINARY_DIR}/diffuseConfig.cmake INSTALL_DESTINATION ${_diffuse_cmake_dir})
# 0.x: a minor version may change the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/diffuseConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/diffuseConfig.cmake ${PROJECT_BINARY_DIR}/diffuseConfigVersion.cmake
  DESTINATION ${_diffuse_cmake_dir})
