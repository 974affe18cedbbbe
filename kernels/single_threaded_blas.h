// OpenBLAS on the calling thread alone, for every caller of it in the library: the f64 reference
// GEMMs of the CPU backend (kernels/cpu/gemm.cpp) and the emulated device's cuBLAS and cuDNN
// (kernels/emulated_device/). OpenBLAS's own worker threads busy-wait between calls: they take the
// cores the kernels' thread pool needs, and under the emulated device a 10-step bf16 `tiny` run
// spent 20.8 s of CPU with them against 10.1 s without, for the same wall time on an idle machine
// (sched_yield loops; under `ctest -j2` that CPU is the other test's).
#pragma once
#include <cblas.h>

#include <mutex>

namespace diffuse::kernels {

// Call before each use of OpenBLAS: pins it to the calling thread once per process.
inline void single_threaded_blas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

}  // namespace diffuse::kernels
