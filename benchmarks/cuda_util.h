// CUDA helpers of the GPU benchmarks (CUDA builds only): timing with device events on the engine's
// stream and device buffers filled on the host and uploaded once per rotation set. Status checks
// are the library's own (DIFFUSE_CUDA_CHECK, DIFFUSE_CUBLAS_CHECK, DIFFUSE_CUDNN_CHECK).
#pragma once
#if DIFFUSE_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <functional>
#include <string>

#include "benchmarks/measure.h"
#include "kernels/attention.h"
#include "kernels/cuda/library_status.h"
#include "nn/device_context.h"
#include "nn/tensor.h"

namespace diffuse::bench {

inline cudaStream_t bench_stream() { return static_cast<cudaStream_t>(current_stream()); }

// Times fn(call) between two events on the engine's stream, repetitions queued back to back in
// batches (no host synchronisation inside a batch, so launch latency hides behind the previous
// repetition as it does in a real step). prepare(call), when given, runs before each repetition's
// start event: work it queues (e.g. the forward whose backward is timed) is not counted.
Timing time_device(const std::function<void(int)>& fn, const RepeatPolicy& policy,
                   const std::function<void(int)>& prepare = {});

// Device tensors of one rotation set, counted for rotation_sets().
class DeviceArena {
 public:
  Tensor random(const Shape& shape, uint64_t seed, float lo = -1.f, float hi = 1.f);
  Tensor zeros(const Shape& shape);
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_ = 0;
};

// One cuBLAS and one cuDNN handle bound to the engine's stream, for the peaks and references.
cublasHandle_t bench_cublas();
cudnnHandle_t bench_cudnn();

// The GPU attention reference (cuda_attention_ref.cpp), on device pointers in the [N, L, heads, d]
// layout: strided-batched cuBLAS GEMMs (one call per head) for q·kᵀ into p [N·heads, L, L], cuDNN
// softmax, GEMM for p·v; the backward from the stored p with cuDNN's softmax backward.
void attention_reference_forward(const kernels::AttentionDesc& d, const float* q, const float* k, const float* v,
                                 float* p, float* out);
void attention_reference_backward(const kernels::AttentionDesc& d, const float* q, const float* k, const float* v,
                                  const float* dout, const float* p, float* dp, float* dq, float* dk, float* dv);

}  // namespace diffuse::bench
#endif  // DIFFUSE_WITH_CUDA
