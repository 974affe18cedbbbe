// See graph.h. The capture is ended on every path (a capture left open would make every later
// synchronisation fail), the allocator leaves capture mode before anything else can allocate,
// and the thread's last CUDA error is cleared after a refused capture so that later checks see
// only their own calls. The device-neutral DeviceGraph (nn/device_graph.h) is a cuda::Graph here.
#include "nn/cuda/graph.h"

#include <cuda_runtime.h>

#include <exception>
#include <utility>

#include "diffuse/error.h"
#include "kernels/cuda_status.h"
#include "nn/device_context.h"
#include "nn/device_graph.h"

namespace diffuse::cuda {

namespace {

cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

std::string cuda_error_text(cudaError_t status) {
  return std::string(cudaGetErrorName(status)) + " (" + cudaGetErrorString(status) + ")";
}

}  // namespace

Graph Graph::capture(const std::function<void()>& body) {
  Graph g;
  g.pool_ = create_graph_pool();
  const cudaStream_t s = stream();
  try {
    DIFFUSE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  } catch (...) {
    release_graph_pool(g.pool_);
    g.pool_ = 0;
    throw;
  }
  begin_pool_capture(g.pool_);
  try {
    body();
  } catch (const std::exception& e) {
    g.why_ = e.what();
  } catch (...) {
    g.why_ = "an exception that is not a std::exception";
  }
  end_pool_capture();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(s, &graph);
  if (ended != cudaSuccess) {
    cudaGetLastError();
    if (g.why_.empty()) g.why_ = "cudaStreamEndCapture failed: " + cuda_error_text(ended);
  }
  if (!g.why_.empty()) {
    if (graph) cudaGraphDestroy(graph);
    release_graph_pool(g.pool_);
    g.pool_ = 0;
    return g;
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  DIFFUSE_CUDA_CHECK(cudaGraphDestroy(graph));
  if (instantiated != cudaSuccess) {
    cudaGetLastError();
    g.why_ = "cudaGraphInstantiate failed: " + cuda_error_text(instantiated);
    release_graph_pool(g.pool_);
    g.pool_ = 0;
    return g;
  }
  g.exec_ = exec;
  return g;
}

void Graph::replay() const {
  if (!exec_) throw Error("cuda graph: replay of a graph whose capture failed (" + why_ + ")");
  DIFFUSE_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), stream()));
}

Graph::~Graph() { release(); }

Graph::Graph(Graph&& other) noexcept
    : exec_(std::exchange(other.exec_, nullptr)), pool_(std::exchange(other.pool_, 0)), why_(std::move(other.why_)) {}

Graph& Graph::operator=(Graph&& other) noexcept {
  if (this != &other) {
    release();
    exec_ = std::exchange(other.exec_, nullptr);
    pool_ = std::exchange(other.pool_, 0);
    why_ = std::move(other.why_);
  }
  return *this;
}

// Replays already queued keep their own copy of the work; the pool's blocks go back to the shared
// cache, where only later work on the same stream can reuse them.
void Graph::release() noexcept {
  if (exec_ && cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_)) != cudaSuccess) cudaGetLastError();
  exec_ = nullptr;
  if (pool_) release_graph_pool(pool_);
  pool_ = 0;
}

}  // namespace diffuse::cuda

namespace diffuse {

struct DeviceGraph::Impl {
  cuda::Graph graph;
};

DeviceGraph DeviceGraph::capture(const std::function<void()>& body) {
  DeviceGraph g;
  g.impl_->graph = cuda::Graph::capture(body);
  return g;
}

DeviceGraph::DeviceGraph() : impl_(std::make_unique<Impl>()) {}
DeviceGraph::~DeviceGraph() = default;
DeviceGraph::DeviceGraph(DeviceGraph&&) noexcept = default;
DeviceGraph& DeviceGraph::operator=(DeviceGraph&&) noexcept = default;

bool DeviceGraph::ok() const { return impl_->graph.ok(); }
const std::string& DeviceGraph::why() const { return impl_->graph.why(); }
void DeviceGraph::replay() const { impl_->graph.replay(); }

bool device_capture_active() {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  DIFFUSE_CUDA_CHECK(cudaStreamIsCapturing(static_cast<cudaStream_t>(current_stream()), &status));
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace diffuse
