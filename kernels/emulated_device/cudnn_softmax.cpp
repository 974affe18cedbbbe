// The emulated cuDNN's softmax forward and backward (cudnn_ops.h signatures), which the attention
// reference of benchmarks/cuda_attention_ref.cpp calls in place (y == x, dx == dy). FLOAT and
// BFLOAT16 data, any strides, CHANNEL (over C per n, h, w) and INSTANCE (over C, H, W per n)
// modes, FAST/ACCURATE/LOG algorithms; computed on the CPU in double inside queued device work.
#include <cmath>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/emulated_device/cudnn_internal.h"
#include "kernels/emulated_device/device.h"

namespace diffuse::emulated_device::dnn {

namespace {

double load(const cudnnTensorStruct& t, const void* p, int64_t i) {
  return t.type == CUDNN_DATA_FLOAT ? static_cast<const float*>(p)[i]
                                    : kernels::bf16_to_float(static_cast<const uint16_t*>(p)[i]);
}

void store(const cudnnTensorStruct& t, void* p, int64_t i, float alpha, float beta, double v) {
  double r = alpha * v;
  if (beta != 0.0f) r += beta * load(t, p, i);  // beta == 0 never reads the output
  if (t.type == CUDNN_DATA_FLOAT)
    static_cast<float*>(p)[i] = static_cast<float>(r);
  else
    static_cast<uint16_t*>(p)[i] = kernels::float_to_bf16(static_cast<float>(r));
}

// The softmax rows of a tensor: a row is C values (CHANNEL) or C*H*W (INSTANCE); offset(i, j) is
// the element offset of value j of row i, computed on the fly (the attention reference's rows
// hold N*heads*L*L values in all).
struct Rows {
  cudnnTensorStruct t;
  cudnnSoftmaxMode_t mode;
  int64_t count() const { return mode == CUDNN_SOFTMAX_MODE_INSTANCE ? t.n : int64_t(t.n) * t.h * t.w; }
  int64_t length() const { return mode == CUDNN_SOFTMAX_MODE_INSTANCE ? int64_t(t.c) * t.h * t.w : t.c; }
  int64_t offset(int64_t i, int64_t j) const {
    if (mode == CUDNN_SOFTMAX_MODE_INSTANCE) {
      const int64_t c = j / (int64_t(t.h) * t.w), h = j / t.w % t.h, w = j % t.w;
      return i * t.sn + c * t.sc + h * t.sh + w * t.sw;
    }
    const int64_t n = i / (int64_t(t.h) * t.w), h = i / t.w % t.h, w = i % t.w;
    return n * t.sn + j * t.sc + h * t.sh + w * t.sw;
  }
};

bool same_shape(const cudnnTensorStruct& a, const cudnnTensorStruct& b) {
  return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w && a.type == b.type;
}

// Checks shared by both directions: descriptors, enumerants, scalars, pointers in live memory.
cudnnStatus_t check(const char* fn, cudnnHandle_t h, cudnnSoftmaxAlgorithm_t algo, cudnnSoftmaxMode_t mode,
                    const void* alpha, const void* beta, std::initializer_list<const cudnnTensorStruct*> descs,
                    std::initializer_list<const void*> ptrs) {
  if (!live_handle(h)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "handle is not a live cuDNN handle");
  if (algo != CUDNN_SOFTMAX_FAST && algo != CUDNN_SOFTMAX_ACCURATE && algo != CUDNN_SOFTMAX_LOG)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "algo is not a cudnnSoftmaxAlgorithm_t");
  if (mode != CUDNN_SOFTMAX_MODE_INSTANCE && mode != CUDNN_SOFTMAX_MODE_CHANNEL)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "mode is not a cudnnSoftmaxMode_t");
  if (!alpha || !beta) return fail(CUDNN_STATUS_BAD_PARAM, fn, "alpha or beta is NULL");
  const cudnnTensorStruct* first = *descs.begin();
  for (const cudnnTensorStruct* d : descs) {
    if (!live_tensor(d) || !d->set) return fail(CUDNN_STATUS_BAD_PARAM, fn, "a tensor descriptor is not set");
    if (!same_shape(*d, *first))
      return fail(CUDNN_STATUS_BAD_PARAM, fn,
                  "the tensors' dimensions or data types differ: " + describe(*first) + " vs " + describe(*d));
  }
  if (element_size(first->type) == 0)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "only FLOAT and BFLOAT16 data are emulated, got " + describe(*first));
  auto d = descs.begin();
  for (const void* p : ptrs) {
    if (!p) return fail(CUDNN_STATUS_BAD_PARAM, fn, "a data pointer is NULL");
    if (!is_device_range(p, extent_bytes(**d)))
      return fail(CUDNN_STATUS_BAD_PARAM, fn,
                  std::to_string(extent_bytes(**d)) + " bytes are not inside one live device allocation (" +
                      describe_address(p) + ")");
    ++d;
  }
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t queued(const char* fn, cudaError_t e) {
  if (e == cudaSuccess) return CUDNN_STATUS_SUCCESS;
  return fail(e == cudaErrorInvalidResourceHandle ? CUDNN_STATUS_BAD_PARAM : CUDNN_STATUS_EXECUTION_FAILED, fn,
              std::string("could not queue the work: ") + cudaGetErrorString(e));
}

}  // namespace

}  // namespace diffuse::emulated_device::dnn

using namespace diffuse::emulated_device;
using namespace diffuse::emulated_device::dnn;

extern "C" {

cudnnStatus_t CUDNNWINAPI cudnnSoftmaxForward(cudnnHandle_t handle, cudnnSoftmaxAlgorithm_t algo,
                                              cudnnSoftmaxMode_t mode, const void* alpha,
                                              const cudnnTensorDescriptor_t xDesc, const void* x, const void* beta,
                                              const cudnnTensorDescriptor_t yDesc, void* y) {
  const char* fn = "cudnnSoftmaxForward";
  if (cudnnStatus_t s = check(fn, handle, algo, mode, alpha, beta, {xDesc, yDesc}, {x, y})) return s;
  const cudnnTensorStruct xd = *xDesc, yd = *yDesc;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  return queued(fn, enqueue(handle->stream, fn, [=] {
    // Rows are read whole before any is written, so y may be x (in place).
    const Rows xr{xd, mode}, yr{yd, mode};
    std::vector<double> v(size_t(xr.length()));
    for (int64_t i = 0; i < xr.count(); ++i) {
      double mx = -INFINITY, sum = 0;
      for (size_t j = 0; j < v.size(); ++j) mx = std::max(mx, v[j] = load(xd, x, xr.offset(i, j)));
      if (algo == CUDNN_SOFTMAX_FAST) mx = 0;  // FAST does not subtract the maximum
      for (double& e : v) sum += (e = std::exp(e - mx));
      for (size_t j = 0; j < v.size(); ++j)
        store(yd, y, yr.offset(i, j), al, be, algo == CUDNN_SOFTMAX_LOG ? std::log(v[j] / sum) : v[j] / sum);
    }
  }));
}

cudnnStatus_t CUDNNWINAPI cudnnSoftmaxBackward(cudnnHandle_t handle, cudnnSoftmaxAlgorithm_t algo,
                                               cudnnSoftmaxMode_t mode, const void* alpha,
                                               const cudnnTensorDescriptor_t yDesc, const void* y,
                                               const cudnnTensorDescriptor_t dyDesc, const void* dy, const void* beta,
                                               const cudnnTensorDescriptor_t dxDesc, void* dx) {
  const char* fn = "cudnnSoftmaxBackward";
  if (cudnnStatus_t s = check(fn, handle, algo, mode, alpha, beta, {yDesc, dyDesc, dxDesc}, {y, dy, dx})) return s;
  const cudnnTensorStruct yd = *yDesc, dyd = *dyDesc, dxd = *dxDesc;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  return queued(fn, enqueue(handle->stream, fn, [=] {
    const Rows yr{yd, mode}, dyr{dyd, mode}, dxr{dxd, mode};
    const size_t L = size_t(yr.length());
    std::vector<double> yv(L), dv(L);
    for (int64_t i = 0; i < yr.count(); ++i) {
      double dot = 0;
      for (size_t j = 0; j < L; ++j) {
        yv[j] = load(yd, y, yr.offset(i, j));
        dv[j] = load(dyd, dy, dyr.offset(i, j));
        // LOG: y is log-softmax, dx = dy - softmax * sum(dy); otherwise dx = y * (dy - sum(dy * y)).
        dot += algo == CUDNN_SOFTMAX_LOG ? dv[j] : dv[j] * yv[j];
      }
      for (size_t j = 0; j < L; ++j) {
        const double g = algo == CUDNN_SOFTMAX_LOG ? dv[j] - std::exp(yv[j]) * dot : yv[j] * (dv[j] - dot);
        store(dxd, dx, dxr.offset(i, j), al, be, g);
      }
    }
  }));
}

}  // extern "C"
