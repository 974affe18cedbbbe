// Host <-> device copies that make the host wait for nothing (docs/design.md §4): page-locked
// ("pinned") host buffers, copies between them and device tensors queued on current_stream(),
// and events that say when queued work has run. The training step stages each step's inputs and
// reads its status rows back through these (engine/train_step.cpp), so a replayed step queues its
// uploads, its graph and nothing else. Tensor::copy_from with host memory, by contrast, waits for
// the stream (pageable memory may be reused as soon as it returns). A buffer or event for the CPU
// device (or in a build without CUDA) is plain host memory: its copies happen at the call and its
// events are always complete, so one code path serves both devices.
#pragma once
#include <cstddef>

#include "nn/tensor.h"

namespace diffuse {

// Host memory the device copies from and into asynchronously: page-locked (cudaHostAlloc) for
// Device::cuda, 64-byte aligned host memory for Device::cpu. Move-only; freed (after the device
// has finished with it) when destroyed.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(size_t bytes, Device device);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<unsigned char*>(data_) + byte_offset);
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool pinned_ = false;
};

// Queues a copy of dst.nbytes() bytes from src (PinnedBuffer memory) into dst on current_stream();
// nothing waits. src must not change until an event recorded after this call is done(). A CPU
// dst is written at the call.
void copy_to_device_async(const Tensor& dst, const void* src);
// Queues a copy of src.nbytes() bytes of src into dst (PinnedBuffer memory): read dst only after
// an event recorded after this call is done() or waited for. A CPU src is read at the call.
void copy_to_host_async(void* dst, const Tensor& src);

// A marker in current_stream()'s work. Move-only.
class DeviceEvent {
 public:
  DeviceEvent() = default;
  ~DeviceEvent();
  DeviceEvent(DeviceEvent&& o) noexcept;
  DeviceEvent& operator=(DeviceEvent&& o) noexcept;
  DeviceEvent(const DeviceEvent&) = delete;
  DeviceEvent& operator=(const DeviceEvent&) = delete;

  // Marks the work queued so far on `device` (Device::cpu: nothing is queued, done() at once).
  void record(Device device);
  // Whether the marked work has run (true before any record); never waits.
  bool done() const;
  // Blocks the host until the marked work has run: the one host wait of this interface.
  void wait() const;
  // The cudaEvent_t of the latest record on CUDA, for a caller that waits on it its own way
  // (collective::Communicator, within its deadline); null when there is nothing to wait for.
  void* cuda_event() const { return pending_ ? event_ : nullptr; }

 private:
  void* event_ = nullptr;  // cudaEvent_t, created at the first record on CUDA
  bool pending_ = false;   // recorded on CUDA and not yet seen complete
};

}  // namespace diffuse
