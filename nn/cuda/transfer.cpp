// nn/device_transfer.h in a CUDA build: cudaHostAlloc'd buffers, cudaMemcpyAsync on the one
// stream, and cudaEvent_t markers (timing disabled). A CPU-side buffer, copy or event takes the
// plain host path, as in a build without CUDA (nn/no_cuda/transfer.cpp).
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "kernels/cuda_status.h"
#include "nn/device_context.h"
#include "nn/device_transfer.h"

namespace diffuse {

namespace {

cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

void* host_bytes(size_t bytes) {
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) throw Error("out of host memory allocating a " + std::to_string(bytes) + "-byte staging buffer");
  return p;
}

}  // namespace

PinnedBuffer::PinnedBuffer(size_t bytes, Device device) : bytes_(bytes), pinned_(device == Device::cuda) {
  if (bytes == 0) return;
  if (pinned_)
    DIFFUSE_CUDA_CHECK(cudaHostAlloc(&data_, bytes, cudaHostAllocDefault));
  else
    data_ = host_bytes(bytes);
}

PinnedBuffer::~PinnedBuffer() {
  if (!data_) return;
  if (!pinned_) {
    std::free(data_);
    return;
  }
  if (cudaFreeHost(data_) != cudaSuccess) cudaGetLastError();  // a failed device has said why already
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)), pinned_(o.pinned_) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    PinnedBuffer gone(std::move(*this));
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    pinned_ = o.pinned_;
  }
  return *this;
}

void copy_to_device_async(const Tensor& dst, const void* src) {
  if (dst.nbytes() == 0) return;
  if (dst.device() == Device::cpu) {
    std::memcpy(dst.raw(), src, dst.nbytes());
    return;
  }
  DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src, dst.nbytes(), cudaMemcpyHostToDevice, stream()));
}

void copy_to_host_async(void* dst, const Tensor& src) {
  if (src.nbytes() == 0) return;
  if (src.device() == Device::cpu) {
    std::memcpy(dst, src.raw(), src.nbytes());
    return;
  }
  DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(dst, src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, stream()));
}

DeviceEvent::~DeviceEvent() {
  if (event_ && cudaEventDestroy(static_cast<cudaEvent_t>(event_)) != cudaSuccess) cudaGetLastError();
}

DeviceEvent::DeviceEvent(DeviceEvent&& o) noexcept
    : event_(std::exchange(o.event_, nullptr)), pending_(std::exchange(o.pending_, false)) {}

DeviceEvent& DeviceEvent::operator=(DeviceEvent&& o) noexcept {
  if (this != &o) {
    DeviceEvent gone(std::move(*this));
    event_ = std::exchange(o.event_, nullptr);
    pending_ = std::exchange(o.pending_, false);
  }
  return *this;
}

void DeviceEvent::record(Device device) {
  if (device != Device::cuda) {
    pending_ = false;
    return;
  }
  if (!event_) {
    cudaEvent_t e = nullptr;
    DIFFUSE_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    event_ = e;
  }
  DIFFUSE_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), stream()));
  pending_ = true;
}

bool DeviceEvent::done() const {
  if (!pending_) return true;
  const cudaError_t status = cudaEventQuery(static_cast<cudaEvent_t>(event_));
  if (status == cudaErrorNotReady) {
    cudaGetLastError();  // not an error: the thread's last-error slot stays clean
    return false;
  }
  DIFFUSE_CUDA_CHECK(status);
  return true;
}

void DeviceEvent::wait() const {
  if (pending_) DIFFUSE_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
}

}  // namespace diffuse
