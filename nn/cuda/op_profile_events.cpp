// The CUDA clock of the op profiler (nn/op_profile.h): a pool of timing events recorded on
// current_stream() at each seam entry of a profiled step, read once after it. Events are created
// only by grow(), which the profiler calls between steps.
#include <cuda_runtime.h>

#include "kernels/cuda_status.h"
#include "nn/device_context.h"
#include "nn/op_profile.h"

namespace diffuse::op_profile {

namespace {

class CudaEventTimer final : public EventTimer {
 public:
  ~CudaEventTimer() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);  // teardown: nothing to report a failure to
  }
  size_t capacity() const override { return events_.size(); }
  void grow(size_t count) override {
    while (events_.size() < count) {
      cudaEvent_t e = nullptr;
      DIFFUSE_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
  }
  void record(size_t index) override {
    DIFFUSE_CUDA_CHECK(cudaEventRecord(events_.at(index), static_cast<cudaStream_t>(current_stream())));
  }
  void elapsed(size_t count, std::vector<double>& ms_from_first) override {
    ms_from_first.assign(count, 0.0);
    if (count == 0) return;
    DIFFUSE_CUDA_CHECK(cudaEventSynchronize(events_.at(count - 1)));
    for (size_t i = 1; i < count; ++i) {
      float ms = 0;
      DIFFUSE_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[0], events_[i]));
      ms_from_first[i] = ms;
    }
  }

 private:
  std::vector<cudaEvent_t> events_;
};

}  // namespace

std::unique_ptr<EventTimer> make_cuda_event_timer() { return std::make_unique<CudaEventTimer>(); }

}  // namespace diffuse::op_profile
