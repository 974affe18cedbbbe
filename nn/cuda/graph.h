// CUDA graphs for nn's CUDA backend (docs/design.md §4): host code that queues work on
// current_stream() (ops on CUDA tensors, kernel launchers, cuBLAS/cuDNN calls) is captured once
// into an instantiated graph and replayed with one cudaGraphLaunch. A replay repeats the captured
// work exactly: the same device addresses, kernel arguments and host scalars. Inputs that change
// between replays must therefore live in device memory the captured work reads (written before
// replay() by work queued on the same stream, e.g. cudaMemcpyAsync from stable host memory or a
// copy_from into the captured input tensor), never be uploaded inside the captured region.
//
// Memory: the capture runs with a private pool of the caching allocator (caching_allocator.h), so
// the blocks the graph uses stay reserved for it while it lives. The allocator makes no cudaMalloc
// during capture, so the same work must have run eagerly first, leaving the cache in the steady
// state the capture draws from: twice when the work replaces tensors it keeps (the first run's
// outputs are still held while the second allocates their successors, as during the capture).
#pragma once
#include <functional>
#include <string>

#include "nn/cuda/caching_allocator.h"

namespace diffuse::cuda {

class Graph {
 public:
  // Captures `body` on current_stream() in global capture mode. A capture that fails — a call the
  // CUDA runtime refuses while capturing (a synchronisation, a cudaMalloc, a host<->device copy
  // through pageable memory), an allocation the warm-up did not prepare, or any exception thrown
  // by `body` — yields a graph with ok() false and why() naming the cause (the refused call and
  // its CUDA error); the stream is usable again and nothing was recorded. Throws diffuse::Error
  // only when the capture cannot even start (e.g. the device failed earlier).
  static Graph capture(const std::function<void()>& body);

  Graph() = default;
  ~Graph();
  Graph(Graph&& other) noexcept;
  Graph& operator=(Graph&& other) noexcept;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  bool ok() const { return exec_ != nullptr; }
  const std::string& why() const { return why_; }
  // Queues one replay on current_stream(); throws diffuse::Error if !ok() or the launch fails.
  void replay() const;
  // Bytes of device memory reserved for the graph (its pool).
  size_t pool_bytes() const { return pool_ ? graph_pool_bytes(pool_) : 0; }

 private:
  void release() noexcept;
  void* exec_ = nullptr;  // cudaGraphExec_t
  GraphPoolId pool_ = 0;
  std::string why_;
};

}  // namespace diffuse::cuda
