// The one header a kernel .cu includes: the same source compiles in three modes (docs/design.md §5):
//  - nvcc (libdiffuse's CUDA backend, -DDIFFUSE_CUDA=AUTO/ON): real kernels, real launches;
//  - g++ -DDIFFUSE_EMULATOR=1 (diffuse_emu, the `emu` tests): the SIMT emulator, which runs each
//    CUDA thread as a fiber and checks barriers, warp collectives and shared-memory use; the
//    launchers are in namespace `emu`, take host pointers and run the grid before returning;
//  - g++ -DDIFFUSE_EMULATOR=1 -DDIFFUSE_EMULATED_DEVICE=1 (libdiffuse in -DDIFFUSE_CUDA=EMULATED):
//    the same emulator behind the emulated CUDA device; the launchers are the `cuda` ones, take
//    device pointers, and queue the grid on its stream (kernels/emulator/device_launch.h): it
//    runs when the host synchronises with that stream, as on a GPU.
//
// How to write a kernel family `foo` (kernels/foo.h, kernels/cpu/foo.cpp, kernels/cuda/foo.cu):
//  1. foo.cu includes "kernels/compat.cuh" FIRST, then kernels/*.h headers; never CUDA headers.
//  2. Host launchers live in namespace diffuse::kernels::DIFFUSE_DEVICE_NS (`cuda` under nvcc and
//     on the emulated device, `emu` under the plain emulator) and take a kernels::Stream (void*)
//     last. foo.h declares them for both namespaces with one macro (pointers are device pointers
//     for cuda::, host for emu::):
//        #define DIFFUSE_FOO_LAUNCHERS void foo(const FooDesc& d, const float* x, float* y, Stream s);
//        namespace cuda { DIFFUSE_FOO_LAUNCHERS }
//        namespace emu { DIFFUSE_FOO_LAUNCHERS }
//     The __global__ kernels sit in an anonymous namespace inside the launchers' namespace.
//  3. Launch only with DIFFUSE_LAUNCH(kernel, grid, block, smem_bytes, stream, args...), inside
//     the .cu. A template kernel goes in parentheses: DIFFUSE_LAUNCH((foo_kernel<float, 4>), ...).
//     Kernels take at least one parameter (the macro needs a non-empty argument list).
//     nvcc: kernel<<<grid, block, smem_bytes, stream>>>(args...) + status check (and the opt-in
//     for any dynamic smem, kernels/dynamic_smem.h); emulator: runs the whole grid before returning;
//     emulated device: checks the launch and every pointer argument (null or device memory),
//     then queues the grid. A grid with a zero dimension launches nothing. Failures throw
//     diffuse::Error naming the launch site (file:line) and the CUDA error string or the
//     emulator's finding (on the emulated device, a failure inside the queued grid surfaces at
//     the next synchronisation, as cudaErrorLaunchFailure).
//  4. Static shared memory: `DIFFUSE_SHARED(T, name, N);` or `DIFFUSE_SHARED_2D(T, name, R, C);`
//     (a T[N] / T[R][C] array; use N = 1 for a scalar) — never `__shared__`, which the emulator
//     rejects. Dynamic shared memory: `T* p = dynamic_smem<T>();` — never `extern __shared__`.
//     Shared memory is never assumed zeroed: the emulator fills it with 0xFF bytes (NaN for
//     f32/f64/bf16) before every block, and the dynamic buffer ends exactly at a guard page.
//  5. __syncthreads (and _count/_and/_or) only in block-uniform control flow; only the _sync warp
//     intrinsics, with exact masks (a mask naming a lane that cannot arrive is reported as a
//     deadlock); no spin-waits on other threads or blocks; inline PTX / mma / cp.async behind
//     #if defined(__CUDA_ARCH__) with a plain C++ path for the emulator.
//  6. Sources are C++17 (nvcc's dialect). Device helpers are `__device__ __forceinline__`; loop
//     unrolling is DIFFUSE_UNROLL / DIFFUSE_UNROLL_BY(n), never `#pragma unroll` (g++ warns on it);
//     helpers shared with host code use DIFFUSE_HD (kernels/common.h). Host code in the .cu may
//     call the CUDA runtime only under #if defined(__CUDACC__), wrapped in DIFFUSE_CUDA_CHECK(call);
//     on the emulated device it asks kernels/emulated_device/kernel_queue.h instead (the
//     kernel sources never see the toolkit's headers, whose types the emulator defines itself).
//  7. Emulator intrinsics are exact (libm): compare against the CPU with f32 tolerances; the
//     GPU's fast approximations (__expf, ...) need the looser ones of the `cuda` tests.
#pragma once
#include <cstddef>
#include <string>
#include <utility>

#include "diffuse/error.h"

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/common.h"
#include "kernels/cuda_status.h"  // cuda_check and DIFFUSE_CUDA_CHECK, shared with nn/cuda/
#include "kernels/dynamic_smem.h"

#define DIFFUSE_DEVICE_NS cuda

namespace diffuse::kernels {

template <typename... P, typename... A>
void launch_kernel(const char* file, int line, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes,
                   Stream stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "DIFFUSE_LAUNCH: argument count differs from the kernel's");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  reserve_dynamic_smem(reinterpret_cast<const void*>(kernel), smem_bytes, file, line);
  kernel<<<grid, block, smem_bytes, static_cast<cudaStream_t>(stream)>>>(std::forward<A>(args)...);
  cuda_check(cudaGetLastError(), "kernel launch", file, line);
}

template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char diffuse_dynamic_smem[];
  return reinterpret_cast<T*>(diffuse_dynamic_smem);
}

}  // namespace diffuse::kernels

#define DIFFUSE_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  ::diffuse::kernels::launch_kernel(__FILE__, __LINE__, kernel, grid, block, smem_bytes, stream, __VA_ARGS__)
#define DIFFUSE_SHARED(T, name, N) __shared__ T name[N]
// Loop unrolling hints, spelled as macros because g++ (the emulator) has no `#pragma unroll`.
#define DIFFUSE_UNROLL _Pragma("unroll")
#define DIFFUSE_PRAGMA(text) _Pragma(#text)
#define DIFFUSE_UNROLL_BY(n) DIFFUSE_PRAGMA(unroll n)
#define DIFFUSE_SHARED_2D(T, name, R, C) __shared__ T name[R][C]

#elif defined(DIFFUSE_EMULATOR)

#include "kernels/common.h"
#include "kernels/emulator/intrinsics.h"

// Unrolling is nvcc's business; the emulator runs the loops as written.
#define DIFFUSE_UNROLL
#define DIFFUSE_UNROLL_BY(n)
// (No __noinline__: libstdc++ spells __attribute__((__noinline__)) and a macro would break it.)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __constant__
// Static shared memory must go through DIFFUSE_SHARED; this makes a stray __shared__ a compile error.
#define __shared__ __shared___is_not_supported_use_DIFFUSE_SHARED

namespace diffuse::kernels {
template <typename T>
inline T* dynamic_smem() {
  return static_cast<T*>(::diffuse::emulator::detail::dynamic_smem());
}
}  // namespace diffuse::kernels

#if defined(DIFFUSE_EMULATED_DEVICE)

#include "kernels/emulated_device/kernel_queue.h"
#include "kernels/emulator/device_launch.h"

#define DIFFUSE_DEVICE_NS cuda
#define DIFFUSE_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                                        \
  ::diffuse::emulator::launch_on_device(#kernel, __FILE__, __LINE__, kernel, grid, block, smem_bytes, stream, \
                                        __VA_ARGS__)

#else

#define DIFFUSE_DEVICE_NS emu
#define DIFFUSE_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  ::diffuse::emulator::launch(__FILE__, __LINE__, kernel, grid, block, smem_bytes, stream, __VA_ARGS__)

#endif
// The block's array for this declaration, found by the address of a per-declaration static tag
// (per template instantiation too), so all threads of a block share it and each block gets a
// freshly poisoned one.
#define DIFFUSE_SHARED(T, name, N)        \
  static char diffuse_shared_tag_##name; \
  auto& name = ::diffuse::emulator::static_shared<T[N]>(&diffuse_shared_tag_##name)
#define DIFFUSE_SHARED_2D(T, name, R, C)  \
  static char diffuse_shared_tag_##name; \
  auto& name = ::diffuse::emulator::static_shared<T[R][C]>(&diffuse_shared_tag_##name)

#else
#error "kernels/compat.cuh is for kernel sources: compile them with nvcc or with -DDIFFUSE_EMULATOR=1 (plus -DDIFFUSE_EMULATED_DEVICE=1 for the emulated device)"
#endif
