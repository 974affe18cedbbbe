// The CUDA runtime's device functions for the emulated device: one named virtual card (sm_90,
// 132 SMs, 228 KiB of shared memory per SM, totalGlobalMem from DIFFUSE_EMU_DEVICE_MEMORY) that
// says plainly it is not a GPU, the versions, the device lock and the one-time initialisation the
// other files of this folder build on. Memory and copies are in cudart_memory.cpp, streams and
// events in streams.cpp, errors in cudart_errors.cpp.
#include <cstring>
#include <map>
#include <string>

#include "diffuse/error.h"
#include "kernels/dynamic_smem.h"
#include "kernels/emulated_device/device.h"
#include "kernels/emulated_device/kernel_queue.h"

namespace diffuse::emulated_device {
namespace {

constexpr const char* kDeviceName = "diffuse emulated sm_90 (not a GPU)";
constexpr int kMultiProcessors = 132;
constexpr size_t kSharedPerMultiprocessor = 228 * 1024;
constexpr size_t kSharedPerBlockOptin = 227 * 1024;
constexpr size_t kSharedPerBlock = 48 * 1024;
constexpr size_t kReservedSharedPerBlock = 1024;
constexpr int kClockKHz = 1980000;
constexpr int kMemoryClockKHz = 2619000;
constexpr int kMemoryBusWidth = 5120;
constexpr int kL2CacheBytes = 50 * 1024 * 1024;

// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) per kernel (guarded by device_lock()).
std::map<const void*, int>& dynamic_smem_opt_ins() {
  static auto* opt_ins = new std::map<const void*, int>;
  return *opt_ins;
}

cudaDeviceProp make_properties() {
  cudaDeviceProp p;
  std::memset(&p, 0, sizeof p);
  std::strncpy(p.name, kDeviceName, sizeof p.name - 1);
  std::memcpy(p.uuid.bytes, "diffuse-emulated", sizeof p.uuid.bytes);
  p.totalGlobalMem = device_memory_bytes();
  p.sharedMemPerBlock = kSharedPerBlock;
  p.regsPerBlock = 65536;
  p.warpSize = 32;
  p.memPitch = 2147483647;
  p.maxThreadsPerBlock = 1024;
  p.maxThreadsDim[0] = 1024;
  p.maxThreadsDim[1] = 1024;
  p.maxThreadsDim[2] = 64;
  p.maxGridSize[0] = 2147483647;
  p.maxGridSize[1] = 65535;
  p.maxGridSize[2] = 65535;
  p.totalConstMem = 65536;
  p.major = 9;
  p.minor = 0;
  p.textureAlignment = 512;
  p.texturePitchAlignment = 32;
  p.multiProcessorCount = kMultiProcessors;
  p.surfaceAlignment = 512;
  p.concurrentKernels = 1;
  p.asyncEngineCount = 2;
  p.unifiedAddressing = 1;
  p.memoryBusWidth = kMemoryBusWidth;
  p.l2CacheSize = kL2CacheBytes;
  p.maxThreadsPerMultiProcessor = 2048;
  p.globalL1CacheSupported = 1;
  p.localL1CacheSupported = 1;
  p.sharedMemPerMultiprocessor = kSharedPerMultiprocessor;
  p.regsPerMultiprocessor = 65536;
  p.computePreemptionSupported = 1;
  p.sharedMemPerBlockOptin = kSharedPerBlockOptin;
  p.maxBlocksPerMultiProcessor = 32;
  p.reservedSharedMemPerBlock = kReservedSharedPerBlock;
  p.hostNumaId = -1;
  p.deviceNumaId = -1;
  return p;
}

// The attributes the card models; nullopt-like false for the rest (cudaErrorInvalidValue: an
// attribute nobody has needed yet is added here, not guessed).
bool attribute_value(cudaDeviceAttr attr, int* value) {
  const cudaDeviceProp p = make_properties();
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; return true;
    case cudaDevAttrMaxBlockDimX: *value = p.maxThreadsDim[0]; return true;
    case cudaDevAttrMaxBlockDimY: *value = p.maxThreadsDim[1]; return true;
    case cudaDevAttrMaxBlockDimZ: *value = p.maxThreadsDim[2]; return true;
    case cudaDevAttrMaxGridDimX: *value = p.maxGridSize[0]; return true;
    case cudaDevAttrMaxGridDimY: *value = p.maxGridSize[1]; return true;
    case cudaDevAttrMaxGridDimZ: *value = p.maxGridSize[2]; return true;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(p.sharedMemPerBlock); return true;
    case cudaDevAttrTotalConstantMemory: *value = static_cast<int>(p.totalConstMem); return true;
    case cudaDevAttrWarpSize: *value = p.warpSize; return true;
    case cudaDevAttrMaxPitch: *value = static_cast<int>(p.memPitch); return true;
    case cudaDevAttrMaxRegistersPerBlock: *value = p.regsPerBlock; return true;
    case cudaDevAttrClockRate: *value = kClockKHz; return true;
    case cudaDevAttrTextureAlignment: *value = static_cast<int>(p.textureAlignment); return true;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; return true;
    case cudaDevAttrKernelExecTimeout: *value = 0; return true;
    case cudaDevAttrIntegrated: *value = 0; return true;
    case cudaDevAttrCanMapHostMemory: *value = 0; return true;
    case cudaDevAttrComputeMode: *value = cudaComputeModeDefault; return true;
    case cudaDevAttrConcurrentKernels: *value = p.concurrentKernels; return true;
    case cudaDevAttrEccEnabled: *value = 0; return true;
    case cudaDevAttrPciBusId: *value = 0; return true;
    case cudaDevAttrPciDeviceId: *value = 0; return true;
    case cudaDevAttrPciDomainId: *value = 0; return true;
    case cudaDevAttrMemoryClockRate: *value = kMemoryClockKHz; return true;
    case cudaDevAttrGlobalMemoryBusWidth: *value = p.memoryBusWidth; return true;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; return true;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = p.maxThreadsPerMultiProcessor; return true;
    case cudaDevAttrAsyncEngineCount: *value = p.asyncEngineCount; return true;
    case cudaDevAttrUnifiedAddressing: *value = p.unifiedAddressing; return true;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; return true;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; return true;
    case cudaDevAttrStreamPrioritiesSupported: *value = 0; return true;
    case cudaDevAttrGlobalL1CacheSupported: *value = p.globalL1CacheSupported; return true;
    case cudaDevAttrLocalL1CacheSupported: *value = p.localL1CacheSupported; return true;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = static_cast<int>(p.sharedMemPerMultiprocessor); return true;
    case cudaDevAttrMaxRegistersPerMultiprocessor: *value = p.regsPerMultiprocessor; return true;
    case cudaDevAttrManagedMemory: *value = 0; return true;
    case cudaDevAttrIsMultiGpuBoard: *value = 0; return true;
    case cudaDevAttrCooperativeLaunch: *value = 0; return true;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(p.sharedMemPerBlockOptin); return true;
    case cudaDevAttrMaxBlocksPerMultiprocessor: *value = p.maxBlocksPerMultiProcessor; return true;
    case cudaDevAttrReservedSharedMemoryPerBlock: *value = static_cast<int>(p.reservedSharedMemPerBlock); return true;
    case cudaDevAttrMemoryPoolsSupported: *value = 0; return true;
    case cudaDevAttrClusterLaunch: *value = 0; return true;
    default: return false;
  }
}

}  // namespace

std::recursive_mutex& device_lock() {
  static auto* lock = new std::recursive_mutex;  // never destroyed: used by the exit-time checks
  return *lock;
}

cudaError_t initialise_device() {
  static int state = 0;  // 0: not tried, 1: up, -1: bad configuration (reported once)
  if (state == 0) state = reserve_device_memory() ? 1 : -1;
  if (state < 0) return cudaErrorInitializationError;
  assert_fault_handler();
  return cudaSuccess;
}

int max_dynamic_shared_bytes(const void* kernel) {
  std::lock_guard<std::recursive_mutex> lock(device_lock());
  auto it = dynamic_smem_opt_ins().find(kernel);
  return it == dynamic_smem_opt_ins().end() ? static_cast<int>(kSharedPerBlock) : it->second;
}

void prepare_dynamic_smem(const void* kernel, size_t bytes, const char* name, const char* file, int line) {
  if (bytes == 0) return;  // most launches: nothing to reserve or check (no device lock taken)
  kernels::reserve_dynamic_smem(kernel, bytes, file, line);
  const int limit = max_dynamic_shared_bytes(kernel);
  if (bytes > static_cast<size_t>(limit))
    throw Error(std::string("DIFFUSE_LAUNCH at ") + file + ":" + std::to_string(line) + ": " + name + " asks for " +
                std::to_string(bytes) + " bytes of dynamic shared memory, over its limit of " + std::to_string(limit) +
                " (cudaFuncSetAttribute(MaxDynamicSharedMemorySize) raises it)");
}

}  // namespace diffuse::emulated_device

using namespace diffuse::emulated_device;

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  ApiCall call;
  if (!count) return record(cudaErrorInvalidValue);
  *count = call.status() == cudaSuccess ? 1 : 0;
  return record(call.status());
}

cudaError_t cudaGetDevice(int* device) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (!device) return record(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  return device == 0 ? cudaSuccess : record(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (!prop) return record(cudaErrorInvalidValue);
  if (device != 0) return record(cudaErrorInvalidDevice);
  *prop = make_properties();
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (!value) return record(cudaErrorInvalidValue);
  if (device != 0) return record(cudaErrorInvalidDevice);
  return attribute_value(attr, value) ? cudaSuccess : record(cudaErrorInvalidValue);
}

cudaError_t cudaRuntimeGetVersion(int* runtimeVersion) {
  if (!runtimeVersion) return record(cudaErrorInvalidValue);
  *runtimeVersion = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* driverVersion) {
  if (!driverVersion) return record(cudaErrorInvalidValue);
  *driverVersion = CUDART_VERSION;
  return cudaSuccess;
}

// Remembers a kernel's dynamic shared memory opt-in (max_dynamic_shared_bytes) so a launch
// above 48 KiB without it can be refused, as on a real card.
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (sticky_error() != cudaSuccess) return record(sticky_error());
  if (!func) return record(cudaErrorInvalidDeviceFunction);
  switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize:
      if (value < 0 || static_cast<size_t>(value) > kSharedPerBlockOptin) return record(cudaErrorInvalidValue);
      dynamic_smem_opt_ins()[func] = value;
      return cudaSuccess;
    case cudaFuncAttributePreferredSharedMemoryCarveout:
      return value >= -1 && value <= 100 ? cudaSuccess : record(cudaErrorInvalidValue);
    default:
      return record(cudaErrorInvalidValue);
  }
}

}  // extern "C"
