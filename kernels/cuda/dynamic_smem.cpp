// See kernels/dynamic_smem.h.
#include "kernels/dynamic_smem.h"

#include <mutex>
#include <vector>

#include "kernels/cuda_status.h"

namespace diffuse::kernels {

void reserve_dynamic_smem(const void* kernel, size_t bytes, const char* file, int line) {
  if (bytes == 0) return;
  int device = 0;
  cuda_check(cudaGetDevice(&device), "cudaGetDevice", file, line);
  struct Granted {
    const void* kernel;
    int device;
    size_t bytes;
  };
  static std::mutex mutex;
  static std::vector<Granted> granted;  // a few dozen kernels: a scan beats a map
  std::lock_guard<std::mutex> lock(mutex);
  Granted* g = nullptr;
  for (Granted& e : granted)
    if (e.kernel == kernel && e.device == device) g = &e;
  if (g && g->bytes >= bytes) return;
  cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
             "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)", file, line);
  if (g) g->bytes = bytes;
  else granted.push_back({kernel, device, bytes});
}

}  // namespace diffuse::kernels
