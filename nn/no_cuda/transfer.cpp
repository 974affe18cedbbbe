// nn/device_transfer.h in a build without CUDA: every tensor is on the CPU, so a buffer is aligned
// host memory, a copy is a memcpy at the call and an event is always complete.
#include <cstdlib>
#include <cstring>
#include <utility>

#include "nn/device_transfer.h"

namespace diffuse {

PinnedBuffer::PinnedBuffer(size_t bytes, Device) : bytes_(bytes) {
  if (bytes == 0) return;
  data_ = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!data_) throw Error("out of host memory allocating a " + std::to_string(bytes) + "-byte staging buffer");
}

PinnedBuffer::~PinnedBuffer() { std::free(data_); }

PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)), pinned_(false) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    std::free(data_);
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void copy_to_device_async(const Tensor& dst, const void* src) {
  if (dst.nbytes()) std::memcpy(dst.raw(), src, dst.nbytes());
}

void copy_to_host_async(void* dst, const Tensor& src) {
  if (src.nbytes()) std::memcpy(dst, src.raw(), src.nbytes());
}

DeviceEvent::~DeviceEvent() = default;
DeviceEvent::DeviceEvent(DeviceEvent&& o) noexcept : event_(nullptr), pending_(std::exchange(o.pending_, false)) {}
DeviceEvent& DeviceEvent::operator=(DeviceEvent&& o) noexcept {
  pending_ = std::exchange(o.pending_, false);
  return *this;
}
void DeviceEvent::record(Device) { pending_ = false; }
bool DeviceEvent::done() const { return true; }
void DeviceEvent::wait() const {}

}  // namespace diffuse
