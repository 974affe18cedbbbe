// Shared by the emulated cuDNN's files (cudnn.cpp: handles, descriptors, errors; cudnn_conv.cpp:
// the convolution API; cudnn_conv_math.cpp: the CPU arithmetic behind it; cudnn_softmax.cpp).
// The handle and descriptor types of cudnn.h are pointers to structs the real library keeps
// opaque; they are defined here. Every descriptor records whether it has been set, and every live
// handle and descriptor is registered, so a call with an unset, destroyed or made-up descriptor
// gets CUDNN_STATUS_BAD_PARAM instead of reading garbage (stricter than the real library).
#pragma once
#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <string>

struct cudnnContext {
  cudaStream_t stream = nullptr;
};

struct cudnnTensorStruct {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int n = 0, c = 0, h = 0, w = 0;
  int64_t sn = 0, sc = 0, sh = 0, sw = 0;  // element strides
};

struct cudnnFilterStruct {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;  // NCHW: KCRS in memory; NHWC: KRSC
  int k = 0, c = 0, r = 0, s = 0;
};

struct cudnnConvolutionStruct {
  bool set = false;
  int pad_h = 0, pad_w = 0, u = 1, v = 1, dil_h = 1, dil_w = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

namespace diffuse::emulated_device::dnn {

// Records "function: message" as this thread's last error (cudnnGetLastErrorString) and returns s.
cudnnStatus_t fail(cudnnStatus_t s, const char* function, const std::string& message);

// Live-object registries (cudnnCreate*/cudnnDestroy*).
bool live_handle(const cudnnContext* h);
bool live_tensor(const cudnnTensorStruct* t);
bool live_filter(const cudnnFilterStruct* f);
bool live_conv(const cudnnConvolutionStruct* c);

size_t element_size(cudnnDataType_t t);  // 0 for a type this emulation does not compute in
std::string describe(const cudnnTensorStruct& t);
std::string describe(const cudnnFilterStruct& f);

// Bytes from the first element to one past the last one a tensor/filter touches.
size_t extent_bytes(const cudnnTensorStruct& t);
size_t extent_bytes(const cudnnFilterStruct& f);

// ---- convolution arithmetic (cudnn_conv_math.cpp) ---------------------------------------------

enum class Dir { fwd, bwd_data, bwd_filter };

struct Strides4 {
  int64_t n = 0, c = 0, h = 0, w = 0;
};

// One convolution in the terms of the math: x [N, C, H, W] (any strides), w [K, C, R, S] (its
// strides from the filter format), y [N, K, P, Q]. For backward data x is dx and y is dy.
struct ConvGeom {
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  bool tf32 = false;  // round f32 inputs to TF32 (what tensor-op math does to f32 data)
  bool flip = false;  // CUDNN_CONVOLUTION: the filter is applied mirrored
  int N = 0, C = 0, H = 0, W = 0, K = 0, R = 0, S = 0, P = 0, Q = 0;
  int pad_h = 0, pad_w = 0, u = 1, v = 1, dil_h = 1, dil_w = 1;
  Strides4 xs, ys, ws;  // ws: strides of the filter as (k, c, r, s)
};

// How one algorithm runs and how it lays out its workspace. Every algorithm is an im2col GEMM
// on the CPU; they differ in tile size, a precomputed offset table and whether the input (or the
// gradient accumulator) is staged as a zero-padded f32 copy, and each one's workspace holds all
// of that, so the sizes differ and a short or misplaced workspace is caught.
struct AlgoPlan {
  bool supported = false;
  std::string why;  // when not supported
  int64_t tile = 0;      // output pixels per GEMM
  bool table = false;    // precomputed input offsets per (pixel, r, s)
  int staged = 0;        // 0: none; 1: f32 copy of the input; 2: zero-padded f32 copy / accumulator
  size_t header = 0, off_col = 0, off_rows = 0, off_table = 0, off_big = 0, off_big2 = 0;
  size_t bytes = 0;  // total workspace
  cudnnDeterminism_t determinism = CUDNN_DETERMINISTIC;
};

int algo_count(Dir d);
const char* algo_name(Dir d, int algo);
// The plan for `algo`; sizes are made distinct between the algorithms supported for this case.
AlgoPlan plan_algo(Dir d, int algo, const ConvGeom& g);

// Runs on the host while device memory is accessible (inside queued work).
// fwd: a = x, b = w, out = y. bwd_data: a = w, b = dy, out = dx. bwd_filter: a = x, b = dy, out = dw.
void run_conv(Dir d, int algo, const AlgoPlan& p, const ConvGeom& g, float alpha, float beta, const void* a,
              const void* b, void* out, void* workspace);

}  // namespace diffuse::emulated_device::dnn
