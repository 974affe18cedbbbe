// The CUDA runtime's memory functions for the emulated device: cudaMalloc/cudaFree over
// memory.cpp's region, and copies and memsets that run as queued work. Arguments are checked as
// the documentation states them, and stricter where a real GPU would silently corrupt: the device
// side of every copy must lie inside one live allocation, a host side must not be device memory.
// Host-to-device copies snapshot the pageable source at the call (the runtime's documented
// staging); device-to-host copies write the host buffer only when the work runs, so a host read
// before the synchronisation sees the old contents. Recorded into a stream capture (capture.h), a
// host-to-device copy reads its host source when the graph runs instead, as a graph's memcpy node
// does; and the synchronous calls here are refused while a capture forbids them. Page-locked host
// memory (cudaMallocHost, cudaHostAlloc) is plain host memory remembered by range: a copy from it
// reads it when the work runs, as a real DMA does, so rewriting a staging buffer before its copy
// has run is caught as wrong data, and a copy to or from it is not counted as a host copy.
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/emulated_device/capture.h"
#include "kernels/emulated_device/device.h"

using namespace diffuse::emulated_device;

namespace {

// The direction of a copy once cudaMemcpyDefault is resolved from the pointers.
struct Direction {
  bool src_device = false;
  bool dst_device = false;
  const char* name() const {
    if (src_device) return dst_device ? "device-to-device" : "device-to-host";
    return dst_device ? "host-to-device" : "host-to-host";
  }
};

bool resolve_direction(cudaMemcpyKind kind, const void* dst, const void* src, Direction* d) {
  switch (kind) {
    case cudaMemcpyHostToHost: *d = {false, false}; return true;
    case cudaMemcpyHostToDevice: *d = {false, true}; return true;
    case cudaMemcpyDeviceToHost: *d = {true, false}; return true;
    case cudaMemcpyDeviceToDevice: *d = {true, true}; return true;
    case cudaMemcpyDefault: *d = {in_device_region(src), in_device_region(dst)}; return true;
    default: return false;
  }
}

// One side of a copy spanning [p, p + bytes): a device side must lie in one live allocation, a
// host side must not be in the device region (a wrong `kind` would corrupt on a real GPU).
bool side_ok(const void* p, size_t bytes, bool device) {
  if (!p) return false;
  return device ? is_device_range(p, bytes) : !in_device_region(p);
}

// A host source is staged at the call unless the copy is recorded into a capture.
bool stage_host_source(cudaStream_t stream) {
  std::optional<StreamRef> s = find_stream(stream);
  return !s || !is_capturing(*s);
}

// Live page-locked allocations: start -> bytes (under device_lock()). Never destroyed: copies
// and frees may still come from other objects' destructors at exit.
std::map<const unsigned char*, size_t>& pinned_allocations() {
  static auto* live = new std::map<const unsigned char*, size_t>();
  return *live;
}

std::string describe_copy(const char* call, const Direction& d, size_t bytes) {
  return std::string(call) + " " + d.name() + " of " + std::to_string(bytes) + " bytes";
}

// Queues a linear copy; the host source of a host-to-* copy is copied at the call.
cudaError_t queue_copy(const char* call, void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                       cudaStream_t stream) {
  if (!valid_stream(stream)) return cudaErrorInvalidResourceHandle;
  Direction d;
  if (!resolve_direction(kind, dst, src, &d)) return cudaErrorInvalidMemcpyDirection;
  if (count == 0) return cudaSuccess;
  if (!side_ok(src, count, d.src_device) || !side_ok(dst, count, d.dst_device)) return cudaErrorInvalidValue;
  std::string what = describe_copy(call, d, count);
  const void* host_side = !d.src_device ? src : !d.dst_device ? dst : nullptr;
  const bool pinned = host_side && is_pinned_host_range(host_side, count);
  if (host_side && !pinned) count_host_copy();
  if (!d.src_device && !pinned && stage_host_source(stream)) {
    auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                                static_cast<const unsigned char*>(src) + count);
    return enqueue(stream, std::move(what), [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  }
  return enqueue(stream, std::move(what), [dst, src, count] { std::memmove(dst, src, count); });
}

cudaError_t queue_memset(const char* call, void* dev_ptr, int value, size_t count, cudaStream_t stream) {
  if (!valid_stream(stream)) return cudaErrorInvalidResourceHandle;
  if (count == 0) return cudaSuccess;
  if (!side_ok(dev_ptr, count, true)) return cudaErrorInvalidValue;
  std::string what = std::string(call) + " of " + std::to_string(count) + " bytes";
  return enqueue(stream, std::move(what), [dev_ptr, value, count] { std::memset(dev_ptr, value & 0xFF, count); });
}

// ---- cudaMemcpy3DAsync on pitched pointers ------------------------------------------------------

// The bytes a pitched side touches: rows of extent.width bytes at pos, pitch apart, ysize rows a slice.
struct PitchedSide {
  unsigned char* first = nullptr;  // the first row's first byte
  size_t pitch = 0, slice = 0;     // bytes between rows, between slices
  size_t span = 0;                 // from `first` to one past the last row's last byte
};

cudaError_t pitched_side(const cudaPitchedPtr& p, const cudaPos& pos, const cudaExtent& e, PitchedSide* out) {
  if (!p.ptr) return cudaErrorInvalidValue;
  if (p.pitch < e.width) return cudaErrorInvalidPitchValue;
  if (pos.x + e.width > p.pitch || pos.y + e.height > p.ysize) return cudaErrorInvalidValue;
  out->pitch = p.pitch;
  out->slice = p.pitch * p.ysize;
  out->first = static_cast<unsigned char*>(p.ptr) + pos.z * out->slice + pos.y * p.pitch + pos.x;
  out->span = (e.depth - 1) * out->slice + (e.height - 1) * p.pitch + e.width;
  return cudaSuccess;
}

cudaError_t queue_copy_3d(const cudaMemcpy3DParms* p, cudaStream_t stream) {
  if (!valid_stream(stream)) return cudaErrorInvalidResourceHandle;
  if (!p) return cudaErrorInvalidValue;
  if (p->srcArray || p->dstArray) return cudaErrorInvalidValue;  // CUDA arrays: not emulated
  const cudaExtent e = p->extent;
  Direction d;
  if (!resolve_direction(p->kind, p->dstPtr.ptr, p->srcPtr.ptr, &d)) return cudaErrorInvalidMemcpyDirection;
  if (e.width == 0 || e.height == 0 || e.depth == 0) return cudaSuccess;
  PitchedSide src, dst;
  if (cudaError_t s = pitched_side(p->srcPtr, p->srcPos, e, &src); s != cudaSuccess) return s;
  if (cudaError_t s = pitched_side(p->dstPtr, p->dstPos, e, &dst); s != cudaSuccess) return s;
  if (!side_ok(src.first, src.span, d.src_device) || !side_ok(dst.first, dst.span, d.dst_device))
    return cudaErrorInvalidValue;
  std::string what = describe_copy("cudaMemcpy3DAsync", d, e.width * e.height * e.depth);
  if (!d.src_device && stage_host_source(stream)) {  // stage the host rows now, densely
    auto staged = std::make_shared<std::vector<unsigned char>>(e.width * e.height * e.depth);
    unsigned char* out = staged->data();
    for (size_t z = 0; z < e.depth; ++z)
      for (size_t y = 0; y < e.height; ++y, out += e.width)
        std::memcpy(out, src.first + z * src.slice + y * src.pitch, e.width);
    src = {staged->data(), e.width, e.width * e.height, staged->size()};
    return enqueue(stream, std::move(what), [src, dst, e, staged] {
      for (size_t z = 0; z < e.depth; ++z)
        for (size_t y = 0; y < e.height; ++y)
          std::memcpy(dst.first + z * dst.slice + y * dst.pitch, src.first + z * src.slice + y * src.pitch, e.width);
    });
  }
  return enqueue(stream, std::move(what), [src, dst, e] {
    for (size_t z = 0; z < e.depth; ++z)
      for (size_t y = 0; y < e.height; ++y)
        std::memmove(dst.first + z * dst.slice + y * dst.pitch, src.first + z * src.slice + y * src.pitch, e.width);
  });
}

// Opens a call that touches the device: initialised and not failed.
#define DEVICE_CALL()                                                            \
  ApiCall call;                                                                  \
  if (call.status() != cudaSuccess) return record(call.status());               \
  if (sticky_error() != cudaSuccess) return record(sticky_error())

}  // namespace

bool diffuse::emulated_device::is_pinned_host_range(const void* p, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(device_lock());
  const auto* a = static_cast<const unsigned char*>(p);
  auto it = pinned_allocations().upper_bound(a);
  if (it == pinned_allocations().begin()) return false;
  --it;
  return bytes <= it->second && static_cast<size_t>(a - it->first) <= it->second - bytes;
}

extern "C" {

// cudaMalloc does not zero: the memory arrives NaN-filled (0xFF bytes).
cudaError_t cudaMalloc(void** devPtr, size_t size) {
  DEVICE_CALL();
  if (!devPtr) return record(cudaErrorInvalidValue);
  if (cudaError_t refused = check_unsafe_call(); refused != cudaSuccess) return record(refused);
  if (size == 0) {
    *devPtr = nullptr;
    return cudaSuccess;
  }
  return record(allocate_device_memory(devPtr, size));
}

// Like a real cudaFree, waits for all queued work first (it may still use the memory).
cudaError_t cudaFree(void* devPtr) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (!devPtr) return cudaSuccess;
  if (cudaError_t refused = check_unsafe_call(); refused != cudaSuccess) return record(refused);
  cudaError_t synced = synchronize_all();
  cudaError_t freed = free_device_memory(devPtr);
  return record(freed != cudaSuccess ? freed : synced);
}

// Page-locked host memory: host memory (64-byte aligned) whose range copies recognise.
cudaError_t cudaHostAlloc(void** pHost, size_t size, unsigned int flags) {
  DEVICE_CALL();
  if (!pHost) return record(cudaErrorInvalidValue);
  const unsigned known = cudaHostAllocPortable | cudaHostAllocMapped | cudaHostAllocWriteCombined;
  if (flags & ~known) return record(cudaErrorInvalidValue);
  if (cudaError_t refused = check_unsafe_call(); refused != cudaSuccess) return record(refused);
  void* p = std::aligned_alloc(64, (size + 63) / 64 * 64 + 64);
  if (!p) return record(cudaErrorMemoryAllocation);
  pinned_allocations()[static_cast<const unsigned char*>(p)] = size;
  *pHost = p;
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t size) { return cudaHostAlloc(ptr, size, cudaHostAllocDefault); }

// Like a real cudaFreeHost, waits for all queued work first (a copy may still read the memory).
cudaError_t cudaFreeHost(void* ptr) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (!ptr) return cudaSuccess;
  if (cudaError_t refused = check_unsafe_call(); refused != cudaSuccess) return record(refused);
  auto it = pinned_allocations().find(static_cast<const unsigned char*>(ptr));
  if (it == pinned_allocations().end()) return record(cudaErrorInvalidValue);
  const cudaError_t synced = synchronize_all();
  pinned_allocations().erase(it);
  std::free(ptr);
  return record(synced);
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  DEVICE_CALL();
  if (!free || !total) return record(cudaErrorInvalidValue);
  *free = free_device_memory_bytes();
  *total = device_memory_bytes();
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  DEVICE_CALL();
  return record(queue_copy("cudaMemcpyAsync", dst, src, count, kind, stream));
}

// On the legacy default stream, and waits for it (and so for blocking streams' earlier work).
// Not refused while a non-blocking stream captures, even in global mode: it runs at once, outside
// the graph (CUDA 13 on an H200 did the same, 2026-12-04); cudaMemset and cudaMemcpy3D likewise.
// While a blocking stream captures, the legacy stream's use invalidates that capture (capture_work).
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  DEVICE_CALL();
  if (cudaError_t s = queue_copy("cudaMemcpy", dst, src, count, kind, nullptr); s != cudaSuccess) return record(s);
  return record(synchronize_stream(nullptr));
}

cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t stream) {
  DEVICE_CALL();
  return record(queue_memset("cudaMemsetAsync", devPtr, value, count, stream));
}

cudaError_t cudaMemset(void* devPtr, int value, size_t count) {
  DEVICE_CALL();
  if (cudaError_t s = queue_memset("cudaMemset", devPtr, value, count, nullptr); s != cudaSuccess) return record(s);
  return record(synchronize_stream(nullptr));
}

cudaError_t cudaMemcpy3DAsync(const cudaMemcpy3DParms* p, cudaStream_t stream) {
  DEVICE_CALL();
  return record(queue_copy_3d(p, stream));
}

cudaError_t cudaMemcpy3D(const cudaMemcpy3DParms* p) {
  DEVICE_CALL();
  if (cudaError_t s = queue_copy_3d(p, nullptr); s != cudaSuccess) return record(s);
  return record(synchronize_stream(nullptr));
}

}  // extern "C"
