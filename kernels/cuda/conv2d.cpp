// The CUDA conv2d family behind kernels/conv2d.h: cuDNN, through cuDNN's legacy convolution API (still shipped
// by cuDNN 9). One plan per (shape, padding, dtype, TF32 setting, pointer alignment, search mode)
// holds the descriptors and, per direction, the deterministic algorithm chosen the first time that direction
// ran — measured fastest by cudnnFind*Ex, or ranked first by cudnnGet*_v7's heuristics
// (set_conv_search, kernels/conv2d.h); later calls only allocate the chosen workspace from the
// caching allocator. (A timed choice may differ between processes, and with it the last bits; a
// heuristic one is the same in every process on one card and cuDNN version. Within one process
// every run of a shape uses the same deterministic algorithm either way.)
// Asymmetric padding: the legacy descriptor pads both sides equally, so cuDNN gets the symmetric
// part min(top, bottom) and the excess is made real by copying x into a zeroed buffer (one
// cudaMemset + one cudaMemcpy3DAsync; backward-data computes the padded gradient and copies its
// interior out). That costs an extra pass over x for the few downsample convs and needs no kernel.
#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/cuda/library_handles.h"
#include "kernels/cuda/library_status.h"

namespace diffuse::kernels::cuda {

namespace {

// The largest workspace a chosen algorithm may need, in either mode (a timed search offers no
// more; a heuristic ranking's algorithms that need more are passed over).
constexpr size_t kMaxSearchWorkspace = size_t(512) << 20;
std::atomic<ConvSearch> g_mode{ConvSearch::timed};
ConvSearchCounts g_searches;

struct Choice {
  bool found = false;
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  size_t workspace = 0;
};

// cuDNN's symmetric padding plus the excess made real by a padded copy of x.
struct PadSplit {
  int sym_h = 0, sym_w = 0;
  int64_t top = 0, bottom = 0, left = 0, right = 0;
  int64_t h = 0, w = 0;  // the input size cuDNN sees
  bool explicit_pad() const { return top || bottom || left || right; }
};

struct Plan {
  PadSplit pad;
  bool fma_only = false;  // f32 without TF32: accept only algorithms that run in FMA math
  cudnnMathType_t search_math = CUDNN_DEFAULT_MATH;
  ConvSearch search = ConvSearch::timed;
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;  // x: the (explicitly padded) input
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Choice fwd, bwd_data, bwd_filter;
};

using Key = std::tuple<std::array<int64_t, 12>, DenseType, bool, uint32_t, ConvSearch>;

std::string describe(const Conv2dDesc& d, DenseType t) {
  auto s = [](int64_t v) { return std::to_string(v); };
  return "conv2d " + std::string(dense_type_name(t)) + " x [" + s(d.n) + ", " + s(d.h) + ", " + s(d.w) + ", " + s(d.cin) +
         "] w [" + s(d.cout) + ", " + s(d.kh) + ", " + s(d.kw) + ", " + s(d.cin) + "] stride " + s(d.stride) +
         " pad (" + s(d.pad_top) + ", " + s(d.pad_bottom) + ", " + s(d.pad_left) + ", " + s(d.pad_right) + ")";
}

int to_int(int64_t v, const Conv2dDesc& d, DenseType t) {
  if (v < 0 || v > INT_MAX) throw Error(describe(d, t) + ": a size does not fit cuDNN's 32-bit dimensions");
  return static_cast<int>(v);
}

uint32_t alignment_of(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 16;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// The smallest alignment among the pointers given (null ones: not wanted, ignored).
uint32_t min_alignment(std::initializer_list<const void*> ptrs) {
  uint32_t align = 16;
  for (const void* p : ptrs)
    if (p) align = std::min(align, alignment_of(p));
  return align;
}

Plan& plan_for(const Conv2dDesc& d, DenseType t, uint32_t alignment) {
  static auto* plans = new std::map<Key, Plan>();
  const Key key{{d.n, d.h, d.w, d.cin, d.cout, d.kh, d.kw, d.stride, d.pad_top, d.pad_bottom, d.pad_left, d.pad_right},
                t,
                allow_tf32(),
                alignment,
                conv_search()};
  auto found = plans->find(key);
  if (found != plans->end()) return found->second;

  Plan p;
  const int64_t sym_h = std::min(d.pad_top, d.pad_bottom), sym_w = std::min(d.pad_left, d.pad_right);
  p.pad.sym_h = to_int(sym_h, d, t);
  p.pad.sym_w = to_int(sym_w, d, t);
  p.pad.top = d.pad_top - sym_h;
  p.pad.bottom = d.pad_bottom - sym_h;
  p.pad.left = d.pad_left - sym_w;
  p.pad.right = d.pad_right - sym_w;
  p.pad.h = d.h + p.pad.top + p.pad.bottom;
  p.pad.w = d.w + p.pad.left + p.pad.right;
  // Legacy cuDNN indexes a tensor with 32-bit integers.
  for (int64_t elements : {d.n * p.pad.h * p.pad.w * d.cin, d.n * d.out_h() * d.out_w() * d.cout, d.cout * d.k()})
    to_int(elements, d, t);

  const cudnnDataType_t type = t == DenseType::f32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_BFLOAT16;
  p.fma_only = t == DenseType::f32 && !allow_tf32();
  p.search_math = t == DenseType::f32 ? (allow_tf32() ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH) : CUDNN_TENSOR_OP_MATH;
  p.search = std::get<4>(key);
  DIFFUSE_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.x));
  DIFFUSE_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.y));
  DIFFUSE_CUDNN_CHECK(cudnnCreateFilterDescriptor(&p.w));
  DIFFUSE_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p.conv));
  DIFFUSE_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.x, CUDNN_TENSOR_NHWC, type, to_int(d.n, d, t), to_int(d.cin, d, t),
                                                 to_int(p.pad.h, d, t), to_int(p.pad.w, d, t)));
  DIFFUSE_CUDNN_CHECK(cudnnSetFilter4dDescriptor(p.w, type, CUDNN_TENSOR_NHWC, to_int(d.cout, d, t), to_int(d.cin, d, t),
                                                 to_int(d.kh, d, t), to_int(d.kw, d, t)));
  const int stride = to_int(d.stride, d, t);
  // f32 accumulation for bf16 storage too (cuDNN's "pseudo bf16" configuration).
  DIFFUSE_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p.conv, p.pad.sym_h, p.pad.sym_w, stride, stride, 1, 1,
                                                      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  DIFFUSE_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.search_math));
  int on = 0, oc = 0, oh = 0, ow = 0;
  DIFFUSE_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p.conv, p.x, p.w, &on, &oc, &oh, &ow));
  if (on != d.n || oc != d.cout || oh != d.out_h() || ow != d.out_w())
    throw Error(describe(d, t) + ": cuDNN computes an output of [" + std::to_string(on) + ", " + std::to_string(oh) +
                ", " + std::to_string(ow) + ", " + std::to_string(oc) + "], expected [" + std::to_string(d.n) + ", " +
                std::to_string(d.out_h()) + ", " + std::to_string(d.out_w()) + ", " + std::to_string(d.cout) + "]");
  DIFFUSE_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.y, CUDNN_TENSOR_NHWC, type, on, oc, oh, ow));
  return plans->emplace(key, p).first->second;
}

// ---- explicit padding -------------------------------------------------------------------------

size_t padded_bytes(const Conv2dDesc& d, const PadSplit& p, size_t es) {
  return static_cast<size_t>(d.n * p.h * p.w * d.cin) * es;
}

// xp [N, p.h, p.w, C] = x [N, H, W, C] at (top, left) inside a zero border.
void pad_copy(const Conv2dDesc& d, const PadSplit& p, size_t es, const void* x, void* xp, cudaStream_t stream) {
  const size_t row = static_cast<size_t>(d.w * d.cin) * es, padded_row = static_cast<size_t>(p.w * d.cin) * es;
  DIFFUSE_CUDA_CHECK(cudaMemsetAsync(xp, 0, padded_bytes(d, p, es), stream));
  cudaMemcpy3DParms c{};
  c.srcPtr = make_cudaPitchedPtr(const_cast<void*>(x), row, row, static_cast<size_t>(d.h));
  c.dstPtr = make_cudaPitchedPtr(xp, padded_row, padded_row, static_cast<size_t>(p.h));
  c.dstPos = make_cudaPos(static_cast<size_t>(p.left * d.cin) * es, static_cast<size_t>(p.top), 0);
  c.extent = make_cudaExtent(row, static_cast<size_t>(d.h), static_cast<size_t>(d.n));
  c.kind = cudaMemcpyDeviceToDevice;
  DIFFUSE_CUDA_CHECK(cudaMemcpy3DAsync(&c, stream));
}

// dx [N, H, W, C] = the interior of dxp [N, p.h, p.w, C] at (top, left).
void crop_copy(const Conv2dDesc& d, const PadSplit& p, size_t es, const void* dxp, void* dx, cudaStream_t stream) {
  const size_t row = static_cast<size_t>(d.w * d.cin) * es, padded_row = static_cast<size_t>(p.w * d.cin) * es;
  cudaMemcpy3DParms c{};
  c.srcPtr = make_cudaPitchedPtr(const_cast<void*>(dxp), padded_row, padded_row, static_cast<size_t>(p.h));
  c.srcPos = make_cudaPos(static_cast<size_t>(p.left * d.cin) * es, static_cast<size_t>(p.top), 0);
  c.dstPtr = make_cudaPitchedPtr(dx, row, row, static_cast<size_t>(d.h));
  c.extent = make_cudaExtent(row, static_cast<size_t>(d.h), static_cast<size_t>(d.n));
  c.kind = cudaMemcpyDeviceToDevice;
  DIFFUSE_CUDA_CHECK(cudaMemcpy3DAsync(&c, stream));
}

// ---- algorithm search -------------------------------------------------------------------------

// Scratch for one cudnnFind*Ex: the largest workspace any algorithm asks for (capped). It is a
// plain cudaMalloc, not a cached block, so this one-off size is not kept for the whole run; when
// the memory is not there even after emptying the cache, the search runs without workspace
// (and skips the algorithms that need one).
class SearchWorkspace {
 public:
  SearchWorkspace(size_t want, const DeviceMemory& mem, cudaStream_t stream) : stream_(stream) {
    want = std::min(want, kMaxSearchWorkspace);
    if (want == 0) return;
    if (cudaMalloc(&ptr_, want) != cudaSuccess) {
      cudaGetLastError();
      mem.trim();
      if (cudaMalloc(&ptr_, want) != cudaSuccess) {
        cudaGetLastError();
        ptr_ = nullptr;
        return;
      }
    }
    bytes_ = want;
  }
  ~SearchWorkspace() {
    if (!ptr_) return;
    cudaStreamSynchronize(stream_);
    cudaFree(ptr_);
  }
  SearchWorkspace(const SearchWorkspace&) = delete;
  SearchWorkspace& operator=(const SearchWorkspace&) = delete;
  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// The first successful result (cuDNN sorts them: by measured time, or by its heuristics' rank)
// whose workspace fits kMaxSearchWorkspace and that is deterministic — cuDNN reports
// which algorithms accumulate with atomics (some backward-data and backward-filter ones), and
// with one of those two runs of the same step in one process differ in the last bits, so a CUDA
// graph replay could not be held to the eager step bit for bit — in the math the plan allows. If
// f32 without TF32 finds no FMA-math algorithm, the fastest other deterministic one runs, with a
// warning on stderr; if no deterministic one succeeds, the fastest of all, with a warning, rather
// than failing the op.
template <typename Perf>
Choice pick(const Plan& p, const std::vector<Perf>& perf, int returned, const char* direction,
            const Conv2dDesc& d, DenseType t) {
  ++(p.search == ConvSearch::heuristic ? g_searches.heuristic : g_searches.timed);
  const Perf* other_math = nullptr;  // deterministic, but not FMA math where the plan wants it
  const Perf* fastest = nullptr;     // any successful one
  for (int i = 0; i < returned; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > kMaxSearchWorkspace) continue;
    if (!fastest) fastest = &perf[i];
    if (perf[i].determinism != CUDNN_DETERMINISTIC) continue;
    if (p.fma_only && perf[i].mathType != CUDNN_FMA_MATH) {
      if (!other_math) other_math = &perf[i];
      continue;
    }
    return {true, static_cast<int>(perf[i].algo), perf[i].mathType, perf[i].memory};
  }
  if (!fastest) throw Error(describe(d, t) + ": cuDNN found no usable " + direction + " algorithm");
  if (other_math) {
    std::fprintf(stderr, "diffuse: warning: %s: cuDNN has no FMA-only %s algorithm; using math type %d (may use TF32)\n",
                 describe(d, t).c_str(), direction, static_cast<int>(other_math->mathType));
    return {true, static_cast<int>(other_math->algo), other_math->mathType, other_math->memory};
  }
  std::fprintf(stderr, "diffuse: warning: %s: cuDNN has no deterministic %s algorithm; results may differ in the "
               "last bits from run to run\n", describe(d, t).c_str(), direction);
  return {true, static_cast<int>(fastest->algo), fastest->mathType, fastest->memory};
}

// One direction's choice: cuDNN's ranking (heuristic: `rank` runs nothing; timed: `find` runs
// every algorithm that fits the largest workspace any of them asks for, capped, once on the call's
// own buffers), then pick(). The direction's API calls come as lambdas over (handle, count, ...);
// each checks its own status, so an error names the cuDNN function that failed.
template <typename Perf, typename MaxCount, typename Rank, typename WorkspaceSize, typename Find>
Choice choose(const Plan& p, const Conv2dDesc& d, DenseType t, const char* direction, int algorithms,
              const DeviceMemory& mem, cudaStream_t stream, MaxCount max_count_of, Rank rank,
              WorkspaceSize workspace_size, Find find) {
  cudnnHandle_t h = cudnn_handle(stream);
  DIFFUSE_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.search_math));
  int max_count = 0, returned = 0;
  max_count_of(h, &max_count);
  std::vector<Perf> perf(static_cast<size_t>(std::max(max_count, 1)));
  if (p.search == ConvSearch::heuristic) {
    rank(h, max_count, &returned, perf.data());
  } else {
    size_t need = 0;
    for (int a = 0; a < algorithms; ++a) {
      size_t bytes = 0;
      if (workspace_size(h, a, &bytes) == CUDNN_STATUS_SUCCESS) need = std::max(need, bytes);
    }
    SearchWorkspace ws(need, mem, stream);
    find(h, max_count, &returned, perf.data(), ws.data(), ws.size());
  }
  return pick(p, perf, returned, direction, d, t);
}

void choose_forward(Plan& p, const Conv2dDesc& d, DenseType t, const void* x, const void* w, void* y,
                    const DeviceMemory& mem, cudaStream_t stream) {
  using Algo = cudnnConvolutionFwdAlgo_t;
  p.fwd = choose<cudnnConvolutionFwdAlgoPerf_t>(
      p, d, t, "forward", CUDNN_CONVOLUTION_FWD_ALGO_COUNT, mem, stream,
      [](cudnnHandle_t h, int* n) { DIFFUSE_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, n)); },
      [&](cudnnHandle_t h, int n, int* got, cudnnConvolutionFwdAlgoPerf_t* perf) {
        DIFFUSE_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, p.x, p.w, p.conv, p.y, n, got, perf));
      },
      [&](cudnnHandle_t h, int a, size_t* bytes) {
        return cudnnGetConvolutionForwardWorkspaceSize(h, p.x, p.w, p.conv, p.y, static_cast<Algo>(a), bytes);
      },
      [&](cudnnHandle_t h, int n, int* got, cudnnConvolutionFwdAlgoPerf_t* perf, void* ws, size_t ws_bytes) {
        DIFFUSE_CUDNN_CHECK(
            cudnnFindConvolutionForwardAlgorithmEx(h, p.x, x, p.w, w, p.conv, p.y, y, n, got, perf, ws, ws_bytes));
      });
}

void choose_backward_data(Plan& p, const Conv2dDesc& d, DenseType t, const void* w, const void* dy, void* dx,
                          const DeviceMemory& mem, cudaStream_t stream) {
  using Algo = cudnnConvolutionBwdDataAlgo_t;
  p.bwd_data = choose<cudnnConvolutionBwdDataAlgoPerf_t>(
      p, d, t, "backward-data", CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, mem, stream,
      [](cudnnHandle_t h, int* n) { DIFFUSE_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, n)); },
      [&](cudnnHandle_t h, int n, int* got, cudnnConvolutionBwdDataAlgoPerf_t* perf) {
        DIFFUSE_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p.w, p.y, p.conv, p.x, n, got, perf));
      },
      [&](cudnnHandle_t h, int a, size_t* bytes) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(h, p.w, p.y, p.conv, p.x, static_cast<Algo>(a), bytes);
      },
      [&](cudnnHandle_t h, int n, int* got, cudnnConvolutionBwdDataAlgoPerf_t* perf, void* ws, size_t ws_bytes) {
        DIFFUSE_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, p.w, w, p.y, dy, p.conv, p.x, dx, n, got,
                                                                        perf, ws, ws_bytes));
      });
}

void choose_backward_filter(Plan& p, const Conv2dDesc& d, DenseType t, const void* x, const void* dy, void* dw,
                            const DeviceMemory& mem, cudaStream_t stream) {
  using Algo = cudnnConvolutionBwdFilterAlgo_t;
  p.bwd_filter = choose<cudnnConvolutionBwdFilterAlgoPerf_t>(
      p, d, t, "backward-filter", CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, mem, stream,
      [](cudnnHandle_t h, int* n) { DIFFUSE_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, n)); },
      [&](cudnnHandle_t h, int n, int* got, cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
        DIFFUSE_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p.x, p.y, p.conv, p.w, n, got, perf));
      },
      [&](cudnnHandle_t h, int a, size_t* bytes) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p.x, p.y, p.conv, p.w, static_cast<Algo>(a), bytes);
      },
      [&](cudnnHandle_t h, int n, int* got, cudnnConvolutionBwdFilterAlgoPerf_t* perf, void* ws, size_t ws_bytes) {
        DIFFUSE_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, p.x, x, p.y, dy, p.conv, p.w, dw, n, got,
                                                                          perf, ws, ws_bytes));
      });
}

void zero(void* p, size_t bytes, cudaStream_t stream) {
  if (p && bytes) DIFFUSE_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream));
}

}  // namespace

void set_conv_search(ConvSearch mode) { g_mode.store(mode); }
ConvSearch conv_search() { return g_mode.load(); }
ConvSearchCounts conv_algorithm_searches() { return g_searches; }

void conv2d_forward(const Conv2dDesc& d, DenseType t, const void* x, const void* w, const void* bias, void* y,
                    const DeviceMemory& mem, Stream stream_handle, const void* residual) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  const int64_t y_pixels = d.n * d.out_h() * d.out_w();
  if (y_pixels * d.cout == 0) return;
  if (d.n * d.h * d.w * d.cin == 0) {  // no input channels: y is the bias alone
    zero(y, static_cast<size_t>(y_pixels * d.cout) * dense_type_size(t), stream);
    add_bias_and_residual(t, y_pixels, d.cout, bias, residual, y, mem, stream_handle);
    return;
  }
  Plan& p = plan_for(d, t, min_alignment({x, w, y}));
  const size_t es = dense_type_size(t);
  ScratchBuffer padded;
  const void* input = x;
  if (p.pad.explicit_pad()) {
    padded = ScratchBuffer(mem, padded_bytes(d, p.pad, es));
    pad_copy(d, p.pad, es, x, padded.data(), stream);
    input = padded.data();
  }
  if (!p.fwd.found) choose_forward(p, d, t, input, w, y, mem, stream);
  ScratchBuffer ws(mem, p.fwd.workspace);
  const float alpha = 1.0f, beta = 0.0f;
  DIFFUSE_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.fwd.math));
  DIFFUSE_CUDNN_CHECK(cudnnConvolutionForward(cudnn_handle(stream), &alpha, p.x, input, p.w, w, p.conv,
                                              static_cast<cudnnConvolutionFwdAlgo_t>(p.fwd.algo), ws.data(), ws.size(),
                                              &beta, p.y, y));
  add_bias_and_residual(t, y_pixels, d.cout, bias, residual, y, mem, stream_handle);
}

void conv2d_backward(const Conv2dDesc& d, DenseType t, const void* x, const void* w, const void* dy, void* dx,
                     void* dw, void* dbias, const DeviceMemory& mem, Stream stream_handle) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  const int64_t y_pixels = d.n * d.out_h() * d.out_w();
  if (dbias) column_sum(t, y_pixels, d.cout, dy, dbias, mem, stream_handle);
  if (!dx && !dw) return;
  const size_t es = dense_type_size(t);
  if (y_pixels * d.cout == 0 || d.n * d.h * d.w * d.cin == 0) {  // an empty sum on one side or the other
    zero(dx, static_cast<size_t>(d.n * d.h * d.w * d.cin) * es, stream);
    zero(dw, static_cast<size_t>(d.cout * d.k()) * es, stream);
    return;
  }
  Plan& p = plan_for(d, t, min_alignment({x, w, dy, dx, dw}));
  const float alpha = 1.0f, beta = 0.0f;
  cudnnHandle_t h = cudnn_handle(stream);

  if (dx) {
    ScratchBuffer padded_dx;
    void* grad_in = dx;
    if (p.pad.explicit_pad()) {
      padded_dx = ScratchBuffer(mem, padded_bytes(d, p.pad, es));
      grad_in = padded_dx.data();
    }
    if (!p.bwd_data.found) choose_backward_data(p, d, t, w, dy, grad_in, mem, stream);
    ScratchBuffer ws(mem, p.bwd_data.workspace);
    DIFFUSE_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.bwd_data.math));
    DIFFUSE_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &alpha, p.w, w, p.y, dy, p.conv,
                                                     static_cast<cudnnConvolutionBwdDataAlgo_t>(p.bwd_data.algo),
                                                     ws.data(), ws.size(), &beta, p.x, grad_in));
    if (p.pad.explicit_pad()) crop_copy(d, p.pad, es, grad_in, dx, stream);
  }

  if (dw) {
    ScratchBuffer padded_x;
    const void* input = x;
    if (p.pad.explicit_pad()) {
      padded_x = ScratchBuffer(mem, padded_bytes(d, p.pad, es));
      pad_copy(d, p.pad, es, x, padded_x.data(), stream);
      input = padded_x.data();
    }
    if (!p.bwd_filter.found) choose_backward_filter(p, d, t, input, dy, dw, mem, stream);
    ScratchBuffer ws(mem, p.bwd_filter.workspace);
    DIFFUSE_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, p.bwd_filter.math));
    DIFFUSE_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &alpha, p.x, input, p.y, dy, p.conv,
                                                       static_cast<cudnnConvolutionBwdFilterAlgo_t>(p.bwd_filter.algo),
                                                       ws.data(), ws.size(), &beta, p.w, dw));
  }
}

}  // namespace diffuse::kernels::cuda
