# Finds every dependency with CMake's own mechanisms; all of them come from Debian packages
# (scripts/setup.sh installs them). diffuse_deps carries the private ones into the library.
find_package(OpenMP REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(ZLIB REQUIRED)
find_package(PNG REQUIRED)   # libpng-dev: PNG decoding (engine/image_decode_png.cpp)
find_package(JPEG REQUIRED)  # libjpeg62-turbo-dev: JPEG decoding (engine/image_decode_jpeg.cpp)
set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_path(CBLAS_INCLUDE_DIR cblas.h PATHS /usr/include/x86_64-linux-gnu /usr/include/openblas REQUIRED)
find_path(STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb REQUIRED)

add_library(diffuse_deps INTERFACE)
target_include_directories(diffuse_deps INTERFACE ${CBLAS_INCLUDE_DIR} ${STB_INCLUDE_DIR})
target_link_libraries(diffuse_deps INTERFACE nlohmann_json::nlohmann_json ZLIB::ZLIB PNG::PNG JPEG::JPEG ${BLAS_LIBRARIES})

if(_diffuse_cuda_emulated)
  # The emulated device runs every kernel under the SIMT emulator: Boost.Context is not optional.
  find_package(Boost 1.74 REQUIRED COMPONENTS context)
else()
  find_package(Boost 1.74 QUIET COMPONENTS context)
endif()
set(DIFFUSE_HAVE_BOOST_CONTEXT ${Boost_CONTEXT_FOUND})

if(_diffuse_cuda)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  find_library(CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64 REQUIRED)
  find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include REQUIRED)
  add_library(diffuse_cudnn INTERFACE)
  target_include_directories(diffuse_cudnn INTERFACE ${CUDNN_INCLUDE_DIR})
  target_link_libraries(diffuse_cudnn INTERFACE ${CUDNN_LIBRARY})
endif()

if(_diffuse_cuda_emulated)
  # Headers only: nn/cuda/ compiles against the toolkit's own cuda_runtime_api.h, cublas_v2.h,
  # cublasLt.h and cudnn.h, so every signature, enum and status code is NVIDIA's; nothing links
  # libcudart, libcublas, libcublasLt or libcudnn (kernels/emulated_device/ implements them).
  find_package(CUDAToolkit REQUIRED)
  find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include REQUIRED)
  add_library(diffuse_cuda_headers INTERFACE)
  target_include_directories(diffuse_cuda_headers SYSTEM INTERFACE ${CUDAToolkit_INCLUDE_DIRS} ${CUDNN_INCLUDE_DIR})
endif()
