// CUDA graphs as the engine sees them (docs/design.md §4): the engine may not name a device
// namespace, so it captures and replays work through this device-neutral handle. In CUDA builds
// it wraps cuda::Graph (nn/cuda/graph.h, which states the rules a captured body follows: inputs
// that change between replays live in device memory written before replay(), and the same work
// ran eagerly first so the caching allocator is in its steady state); in a build without CUDA a
// capture never succeeds and says so.
#pragma once
#include <functional>
#include <memory>
#include <string>

namespace diffuse {

class DeviceGraph {
 public:
  // Captures `body` on current_stream(). A failed capture (a call refused while capturing, an
  // allocation the warm-up did not prepare, an exception from body) gives ok() false and why()
  // naming the cause; nothing ran and eager work may go on.
  static DeviceGraph capture(const std::function<void()>& body);

  DeviceGraph();
  ~DeviceGraph();
  DeviceGraph(DeviceGraph&&) noexcept;
  DeviceGraph& operator=(DeviceGraph&&) noexcept;

  bool ok() const;
  const std::string& why() const;
  // Queues one replay of the captured work on current_stream(); throws diffuse::Error if !ok().
  void replay() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Whether current_stream() is being captured into a graph right now (never without CUDA): work
// that would read device memory back to the host must not run then.
bool device_capture_active();

// While one is alive on this thread, the CUDA backend keeps the device copies of the optimizer's
// multi-tensor tables by content (nn/cuda/backend_dense.cpp), so the eager steps before a capture
// upload what the captured step reads (an upload inside a capture is refused) and a step whose
// tables do not change uploads nothing. The training step holds one. Elsewhere a table is uploaded
// for its launch and dropped, so a caller whose gradients move between steps keeps nothing.
inline bool& device_tables_kept_flag() {
  thread_local bool kept = false;
  return kept;
}
class KeepDeviceTables {
 public:
  KeepDeviceTables() : previous_(device_tables_kept_flag()) { device_tables_kept_flag() = true; }
  ~KeepDeviceTables() { device_tables_kept_flag() = previous_; }
  KeepDeviceTables(const KeepDeviceTables&) = delete;
  KeepDeviceTables& operator=(const KeepDeviceTables&) = delete;

 private:
  bool previous_;
};

}  // namespace diffuse
