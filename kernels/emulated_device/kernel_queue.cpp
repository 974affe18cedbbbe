// See kernel_queue.h: the two calls through which kernel sources (which never include the CUDA
// toolkit's headers) reach the emulated device's memory map and stream queues (device.h).
#include "kernels/emulated_device/kernel_queue.h"

#include <cuda_runtime_api.h>

#include <string>
#include <utility>

#include "diffuse/error.h"
#include "kernels/emulated_device/device.h"
#include "kernels/emulator/limits.h"

namespace diffuse::emulated_device {

bool is_device_pointer(const void* p) { return in_device_region(p); }

void enqueue_kernel(void* stream, const char* kernel, const char* file, int line, std::function<void()> run) {
  const std::string site = std::string(file) + ":" + std::to_string(line);
  const cudaError_t status =
      enqueue(static_cast<cudaStream_t>(stream), "kernel " + std::string(kernel) + " launched at " + site, std::move(run));
  if (status != cudaSuccess)
    throw Error("DIFFUSE_LAUNCH at " + site + ": kernel " + kernel + " was not launched: CUDA error " +
                cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

int max_dynamic_smem_optin() {
  int device = 0, bytes = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (status != cudaSuccess)
    throw Error(std::string("emulated device: cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin) failed: ") +
                cudaGetErrorName(status));
  // The card and the emulator must agree, or a launch sized by the card fails in run_grid.
  if (static_cast<size_t>(bytes) > emulator::kMaxDynamicSmemBytes)
    throw Error("emulated device: the card grants " + std::to_string(bytes) +
                " bytes of opt-in shared memory per block, more than the SIMT emulator's " +
                std::to_string(emulator::kMaxDynamicSmemBytes));
  return bytes;
}

}  // namespace diffuse::emulated_device
