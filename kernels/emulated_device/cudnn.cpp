// The emulated cuDNN's handle, version, error strings and the tensor, filter and convolution
// descriptors, with the signatures of the toolkit's cudnn.h (built only with
// -DDIFFUSE_CUDA=EMULATED, in place of libcudnn). Arguments are checked as cuDNN 9's API
// reference documents them, and every failure leaves a specific message for
// cudnnGetLastErrorString. The convolution calls are in cudnn_conv.cpp, softmax in
// cudnn_softmax.cpp.
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <unordered_set>

#include "kernels/emulated_device/cudnn_internal.h"
#include "kernels/emulated_device/device.h"

namespace diffuse::emulated_device::dnn {

namespace {

thread_local std::string t_last_error;

// One registry of live objects per kind, so a destroyed or never-created pointer is refused.
struct Registry {
  std::mutex mu;
  std::unordered_set<const void*> live;
  void add(const void* p) {
    std::lock_guard<std::mutex> lock(mu);
    live.insert(p);
  }
  bool remove(const void* p) {
    std::lock_guard<std::mutex> lock(mu);
    return live.erase(p) == 1;
  }
  bool has(const void* p) {
    std::lock_guard<std::mutex> lock(mu);
    return p && live.count(p) == 1;
  }
};

// Leaked on purpose: descriptors held in function-level statics are destroyed (or not) after
// ordinary statics at exit.
Registry& handles() { static auto* r = new Registry; return *r; }
Registry& tensors() { static auto* r = new Registry; return *r; }
Registry& filters() { static auto* r = new Registry; return *r; }
Registry& convs() { static auto* r = new Registry; return *r; }

const char* type_name(cudnnDataType_t t) {
  switch (t) {
    case CUDNN_DATA_FLOAT: return "FLOAT";
    case CUDNN_DATA_DOUBLE: return "DOUBLE";
    case CUDNN_DATA_HALF: return "HALF";
    case CUDNN_DATA_BFLOAT16: return "BFLOAT16";
    case CUDNN_DATA_INT8: return "INT8";
    case CUDNN_DATA_INT32: return "INT32";
    default: return "another type";
  }
}

bool known_type(cudnnDataType_t t) { return t >= CUDNN_DATA_FLOAT && t <= CUDNN_DATA_COMPLEX_FP64; }

}  // namespace

cudnnStatus_t fail(cudnnStatus_t s, const char* function, const std::string& message) {
  t_last_error = std::string(function) + ": " + message;
  return s;
}

bool live_handle(const cudnnContext* h) { return handles().has(h); }
bool live_tensor(const cudnnTensorStruct* t) { return tensors().has(t); }
bool live_filter(const cudnnFilterStruct* f) { return filters().has(f); }
bool live_conv(const cudnnConvolutionStruct* c) { return convs().has(c); }

size_t element_size(cudnnDataType_t t) {
  return t == CUDNN_DATA_FLOAT ? 4 : t == CUDNN_DATA_BFLOAT16 ? 2 : 0;
}

std::string describe(const cudnnTensorStruct& t) {
  auto s = [](int64_t v) { return std::to_string(v); };
  return std::string(type_name(t.type)) + " tensor [n " + s(t.n) + ", c " + s(t.c) + ", h " + s(t.h) + ", w " +
         s(t.w) + "] strides [" + s(t.sn) + ", " + s(t.sc) + ", " + s(t.sh) + ", " + s(t.sw) + "]";
}

std::string describe(const cudnnFilterStruct& f) {
  auto s = [](int64_t v) { return std::to_string(v); };
  return std::string(type_name(f.type)) + (f.format == CUDNN_TENSOR_NHWC ? " KRSC" : " KCRS") + " filter [k " +
         s(f.k) + ", c " + s(f.c) + ", r " + s(f.r) + ", s " + s(f.s) + "]";
}

size_t extent_bytes(const cudnnTensorStruct& t) {
  const int64_t last = int64_t(t.n - 1) * t.sn + int64_t(t.c - 1) * t.sc + int64_t(t.h - 1) * t.sh +
                       int64_t(t.w - 1) * t.sw;
  return static_cast<size_t>(last + 1) * element_size(t.type);
}

size_t extent_bytes(const cudnnFilterStruct& f) {
  return static_cast<size_t>(f.k) * f.c * f.r * f.s * element_size(f.type);
}

}  // namespace diffuse::emulated_device::dnn

using namespace diffuse::emulated_device;
using dnn::fail;

extern "C" {

size_t CUDNNWINAPI cudnnGetVersion(void) { return CUDNN_VERSION; }

const char* CUDNNWINAPI cudnnGetErrorString(cudnnStatus_t status) {
  switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER: return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
    case CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT: return "CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_ALLOC_FAILED: return "CUDNN_STATUS_ALLOC_FAILED";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    case CUDNN_STATUS_INVALID_VALUE: return "CUDNN_STATUS_INVALID_VALUE";
    default: break;
  }
  switch (CUDNN_STATUS_CATEGORY(status)) {
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM (a specific code)";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED (a specific code)";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR (a specific code)";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED (a specific code)";
    default: return "CUDNN_STATUS_UNKNOWN";
  }
}

// The message stays until the next failure in this thread (nn/cuda/check.h labels it as possibly
// coming from an earlier, ignored probe).
void CUDNNWINAPI cudnnGetLastErrorString(char* message, size_t max_size) {
  if (!message || max_size == 0) return;
  const std::string& m = dnn::t_last_error;
  const size_t n = std::min(m.size(), max_size - 1);
  m.copy(message, n);
  message[n] = '\0';
}

cudnnStatus_t CUDNNWINAPI cudnnCreate(cudnnHandle_t* handle) {
  if (!handle) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnCreate", "handle is NULL");
  if (sticky_error() != cudaSuccess)
    return fail(CUDNN_STATUS_NOT_INITIALIZED, "cudnnCreate", "the emulated device has already failed");
  *handle = new cudnnContext;
  dnn::handles().add(*handle);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnDestroy(cudnnHandle_t handle) {
  if (!dnn::handles().remove(handle)) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroy", "not a live handle");
  delete handle;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId) {
  if (!dnn::live_handle(handle)) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetStream", "not a live handle");
  if (!valid_stream(streamId))
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetStream", "not a live stream of the emulated device");
  handle->stream = streamId;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnGetStream(cudnnHandle_t handle, cudaStream_t* streamId) {
  if (!dnn::live_handle(handle)) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnGetStream", "not a live handle");
  if (!streamId) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnGetStream", "streamId is NULL");
  *streamId = handle->stream;
  return CUDNN_STATUS_SUCCESS;
}

// ---- tensor descriptors -----------------------------------------------------------------------

cudnnStatus_t CUDNNWINAPI cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* tensorDesc) {
  if (!tensorDesc) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnCreateTensorDescriptor", "tensorDesc is NULL");
  *tensorDesc = new cudnnTensorStruct;
  dnn::tensors().add(*tensorDesc);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t tensorDesc) {
  if (!tensorDesc) return CUDNN_STATUS_SUCCESS;  // as the real library: destroying NULL is a no-op
  if (!dnn::tensors().remove(tensorDesc))
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroyTensorDescriptor", "not a live tensor descriptor");
  delete tensorDesc;
  return CUDNN_STATUS_SUCCESS;
}

namespace {

cudnnStatus_t set_tensor(const char* fn, cudnnTensorDescriptor_t d, cudnnDataType_t type, int n, int c, int h, int w,
                         int64_t sn, int64_t sc, int64_t sh, int64_t sw) {
  if (!dnn::live_tensor(d)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "not a live tensor descriptor");
  if (!dnn::known_type(type)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "dataType is not a cudnnDataType_t");
  if (n <= 0 || c <= 0 || h <= 0 || w <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "every dimension must be positive, got n " + std::to_string(n) + ", c " + std::to_string(c) + ", h " +
                    std::to_string(h) + ", w " + std::to_string(w));
  if (sn <= 0 || sc <= 0 || sh <= 0 || sw <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "every stride must be positive");
  const int64_t elements = int64_t(n - 1) * sn + int64_t(c - 1) * sc + int64_t(h - 1) * sh + int64_t(w - 1) * sw + 1;
  if (elements > INT32_MAX)  // legacy cuDNN indexes tensors with 32-bit integers
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "the tensor spans more than 2^31 - 1 elements");
  *d = cudnnTensorStruct{true, type, n, c, h, w, sn, sc, sh, sw};
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

cudnnStatus_t CUDNNWINAPI cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t tensorDesc, cudnnTensorFormat_t format,
                                                     cudnnDataType_t dataType, int n, int c, int h, int w) {
  const char* fn = "cudnnSetTensor4dDescriptor";
  const int64_t C = c, H = h, W = w;
  if (format == CUDNN_TENSOR_NCHW) return set_tensor(fn, tensorDesc, dataType, n, c, h, w, C * H * W, H * W, W, 1);
  if (format == CUDNN_TENSOR_NHWC) return set_tensor(fn, tensorDesc, dataType, n, c, h, w, C * H * W, 1, W * C, C);
  if (format == CUDNN_TENSOR_NCHW_VECT_C)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "CUDNN_TENSOR_NCHW_VECT_C is not emulated");
  return fail(CUDNN_STATUS_BAD_PARAM, fn, "format is not a cudnnTensorFormat_t");
}

cudnnStatus_t CUDNNWINAPI cudnnSetTensor4dDescriptorEx(cudnnTensorDescriptor_t tensorDesc, cudnnDataType_t dataType,
                                                       int n, int c, int h, int w, int nStride, int cStride,
                                                       int hStride, int wStride) {
  return set_tensor("cudnnSetTensor4dDescriptorEx", tensorDesc, dataType, n, c, h, w, nStride, cStride, hStride,
                    wStride);
}

// ---- filter descriptors -----------------------------------------------------------------------

cudnnStatus_t CUDNNWINAPI cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* filterDesc) {
  if (!filterDesc) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnCreateFilterDescriptor", "filterDesc is NULL");
  *filterDesc = new cudnnFilterStruct;
  dnn::filters().add(*filterDesc);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t filterDesc) {
  if (!filterDesc) return CUDNN_STATUS_SUCCESS;
  if (!dnn::filters().remove(filterDesc))
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroyFilterDescriptor", "not a live filter descriptor");
  delete filterDesc;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t filterDesc, cudnnDataType_t dataType,
                                                     cudnnTensorFormat_t format, int k, int c, int h, int w) {
  const char* fn = "cudnnSetFilter4dDescriptor";
  if (!dnn::live_filter(filterDesc)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "not a live filter descriptor");
  if (!dnn::known_type(dataType)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "dataType is not a cudnnDataType_t");
  if (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC) {
    if (format == CUDNN_TENSOR_NCHW_VECT_C)
      return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "CUDNN_TENSOR_NCHW_VECT_C is not emulated");
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "format is not a cudnnTensorFormat_t");
  }
  if (k <= 0 || c <= 0 || h <= 0 || w <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "every dimension must be positive, got k " + std::to_string(k) + ", c " + std::to_string(c) + ", h " +
                    std::to_string(h) + ", w " + std::to_string(w));
  if (int64_t(k) * c * h * w > INT32_MAX)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "the filter has more than 2^31 - 1 elements");
  *filterDesc = cudnnFilterStruct{true, dataType, format, k, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}

// ---- convolution descriptors ------------------------------------------------------------------

cudnnStatus_t CUDNNWINAPI cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* convDesc) {
  if (!convDesc) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnCreateConvolutionDescriptor", "convDesc is NULL");
  *convDesc = new cudnnConvolutionStruct;
  dnn::convs().add(*convDesc);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t convDesc) {
  if (!convDesc) return CUDNN_STATUS_SUCCESS;
  if (!dnn::convs().remove(convDesc))
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroyConvolutionDescriptor", "not a live convolution descriptor");
  delete convDesc;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t convDesc, int pad_h, int pad_w,
                                                          int u, int v, int dilation_h, int dilation_w,
                                                          cudnnConvolutionMode_t mode, cudnnDataType_t computeType) {
  const char* fn = "cudnnSetConvolution2dDescriptor";
  if (!dnn::live_conv(convDesc)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "not a live convolution descriptor");
  if (pad_h < 0 || pad_w < 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "negative padding (" + std::to_string(pad_h) + ", " + std::to_string(pad_w) + ")");
  if (u <= 0 || v <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "strides must be positive, got (" + std::to_string(u) + ", " + std::to_string(v) + ")");
  if (dilation_h <= 0 || dilation_w <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "dilations must be positive");
  if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "mode is not a cudnnConvolutionMode_t");
  if (!dnn::known_type(computeType)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "computeType is not a cudnnDataType_t");
  const cudnnMathType_t math = convDesc->math;  // the math type is kept, as it is set separately
  *convDesc = cudnnConvolutionStruct{true, pad_h, pad_w, u, v, dilation_h, dilation_w, mode, computeType, math};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t convDesc, cudnnMathType_t mathType) {
  const char* fn = "cudnnSetConvolutionMathType";
  if (!dnn::live_conv(convDesc)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "not a live convolution descriptor");
  if (mathType != CUDNN_DEFAULT_MATH && mathType != CUDNN_TENSOR_OP_MATH &&
      mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && mathType != CUDNN_FMA_MATH)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "mathType is not a cudnnMathType_t");
  convDesc->math = mathType;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionMathType(cudnnConvolutionDescriptor_t convDesc,
                                                      cudnnMathType_t* mathType) {
  const char* fn = "cudnnGetConvolutionMathType";
  if (!dnn::live_conv(convDesc)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "not a live convolution descriptor");
  if (!mathType) return fail(CUDNN_STATUS_BAD_PARAM, fn, "mathType is NULL");
  *mathType = convDesc->math;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t convDesc,
                                                                const cudnnTensorDescriptor_t inputTensorDesc,
                                                                const cudnnFilterDescriptor_t filterDesc, int* n,
                                                                int* c, int* h, int* w) {
  const char* fn = "cudnnGetConvolution2dForwardOutputDim";
  if (!dnn::live_conv(convDesc) || !convDesc->set)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "convDesc is not a set convolution descriptor");
  if (!dnn::live_tensor(inputTensorDesc) || !inputTensorDesc->set)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "inputTensorDesc is not a set tensor descriptor");
  if (!dnn::live_filter(filterDesc) || !filterDesc->set)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "filterDesc is not a set filter descriptor");
  if (!n || !c || !h || !w) return fail(CUDNN_STATUS_BAD_PARAM, fn, "an output pointer is NULL");
  const cudnnTensorStruct& x = *inputTensorDesc;
  const cudnnFilterStruct& f = *filterDesc;
  if (x.c != f.c)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "the input has " + std::to_string(x.c) + " feature maps, the filter " + std::to_string(f.c));
  const int64_t eh = int64_t(f.r - 1) * convDesc->dil_h + 1, ew = int64_t(f.s - 1) * convDesc->dil_w + 1;
  const int64_t ph = x.h + 2 * int64_t(convDesc->pad_h), pw = x.w + 2 * int64_t(convDesc->pad_w);
  if (eh > ph || ew > pw)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "the (dilated) filter is larger than the padded input");
  *n = x.n;
  *c = f.k;
  *h = static_cast<int>((ph - eh) / convDesc->u + 1);
  *w = static_cast<int>((pw - ew) / convDesc->v + 1);
  return CUDNN_STATUS_SUCCESS;
}

}  // extern "C"
