// nn/device_graph.h in a build without CUDA: there is no stream to capture, so every capture
// fails with the reason and callers run their work eagerly.
#include "diffuse/error.h"
#include "nn/device_graph.h"

namespace diffuse {

struct DeviceGraph::Impl {
  std::string why;
};

DeviceGraph DeviceGraph::capture(const std::function<void()>&) {
  DeviceGraph g;
  g.impl_->why = "this build has no CUDA backend";
  return g;
}

DeviceGraph::DeviceGraph() : impl_(std::make_unique<Impl>()) {}
DeviceGraph::~DeviceGraph() = default;
DeviceGraph::DeviceGraph(DeviceGraph&&) noexcept = default;
DeviceGraph& DeviceGraph::operator=(DeviceGraph&&) noexcept = default;

bool DeviceGraph::ok() const { return false; }
const std::string& DeviceGraph::why() const { return impl_->why; }
void DeviceGraph::replay() const { throw Error("device graph: replay of a graph whose capture failed (" + impl_->why + ")"); }

bool device_capture_active() { return false; }

}  // namespace diffuse
