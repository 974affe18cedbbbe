// The emulated cuDNN's legacy convolution API: workspace-size queries, algorithm counts,
// cudnnFind*AlgorithmEx, cudnnGet*Algorithm_v7 and the forward, backward-data and backward-filter
// calls, with the signatures of the toolkit's cudnn_cnn.h. Arguments are checked on the host when the call is
// made, as cuDNN documents them and stricter where a GPU would only fault later: every device
// pointer must lie in one live allocation for the whole extent the call touches, outputs must not
// overlap inputs or the workspace, and the workspace must hold what the algorithm needs. The
// arithmetic (cudnn_conv_math.cpp) is queued on the handle's stream and runs when the host
// synchronises; Find*Ex is blocking, as the real one is.
//
// Find*Ex ranks by the measured time of each algorithm, so two processes may rank differently,
// as on a GPU. DIFFUSE_EMU_CUDNN_FIND=reverse reports the successful algorithms slowest first (the
// ranking another card might give), so a test can make two processes choose differently on
// purpose. The _v7 heuristics run nothing and rank by a fixed rule of the case alone: supported
// algorithms first, fewer and larger GEMM tiles first, then the smaller workspace, then the
// enumerant; time is -1, as the real library reports for an algorithm it did not run.
//
// Statuses: a NULL pointer, an unset/destroyed descriptor, mismatched data types, feature maps or
// output dimensions, a bad algorithm enumerant, a short workspace, a device range outside a live
// allocation: CUDNN_STATUS_BAD_PARAM. A data type other than FLOAT/BFLOAT16, a compute type other
// than FLOAT, an algorithm this emulation does not offer for the case: CUDNN_STATUS_NOT_SUPPORTED.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/emulated_device/cudnn_internal.h"
#include "kernels/emulated_device/device.h"

namespace diffuse::emulated_device::dnn {

namespace {

// Descriptor names in messages, per direction: the input-shaped tensor, the filter, the
// output-shaped tensor.
struct Names {
  const char* x;
  const char* w;
  const char* y;
};
constexpr Names kNames[] = {{"xDesc", "wDesc", "yDesc"}, {"dxDesc", "wDesc", "dyDesc"}, {"xDesc", "dwDesc", "dyDesc"}};

// Appended piece by piece: g++ 12 at -O3 reports a false -Wrestrict on `"[" + std::to_string(a)`.
std::string dims(int64_t a, int64_t b, int64_t c, int64_t d) {
  std::string out = "[";
  for (int64_t v : {a, b, c, d}) {
    if (out.size() > 1) out += ", ";
    out += std::to_string(v);
  }
  out += ']';
  return out;
}

// The descriptor checks shared by every convolution call; fills g.
cudnnStatus_t check_descs(const char* fn, Dir d, cudnnHandle_t h, const cudnnTensorStruct* x,
                          const cudnnFilterStruct* w, const cudnnConvolutionStruct* conv, const cudnnTensorStruct* y,
                          ConvGeom& g) {
  const Names& nm = kNames[int(d)];
  if (!live_handle(h)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "handle is not a live cuDNN handle");
  if (!live_tensor(x) || !x->set)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, std::string(nm.x) + " is not a set tensor descriptor");
  if (!live_filter(w) || !w->set)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, std::string(nm.w) + " is not a set filter descriptor");
  if (!live_conv(conv) || !conv->set)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "convDesc is not a set convolution descriptor");
  if (!live_tensor(y) || !y->set)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, std::string(nm.y) + " is not a set tensor descriptor");
  if (x->type != w->type || x->type != y->type)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                std::string("non-matching data types: ") + nm.x + " " + describe(*x) + ", " + nm.w + " " +
                    describe(*w) + ", " + nm.y + " " + describe(*y));
  if (element_size(x->type) == 0)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "only FLOAT and BFLOAT16 data are emulated, got " + describe(*x));
  if (conv->compute != CUDNN_DATA_FLOAT)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn,
                "only a FLOAT compute type is emulated (FLOAT_CONFIG, or BFLOAT16 data with FLOAT compute)");
  if (x->c != w->c)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                std::string(nm.x) + " has " + std::to_string(x->c) + " feature maps, " + nm.w + " " +
                    std::to_string(w->c));
  const int64_t eh = int64_t(w->r - 1) * conv->dil_h + 1, ew = int64_t(w->s - 1) * conv->dil_w + 1;
  const int64_t ph = x->h + 2 * int64_t(conv->pad_h), pw = x->w + 2 * int64_t(conv->pad_w);
  if (eh > ph || ew > pw)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "the (dilated) filter is larger than the padded input");
  const int64_t P = (ph - eh) / conv->u + 1, Q = (pw - ew) / conv->v + 1;
  if (y->n != x->n || y->c != w->k || y->h != P || y->w != Q)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                std::string(nm.y) + " is " + dims(y->n, y->c, y->h, y->w) + " (n, c, h, w), the convolution of " +
                    nm.x + " " + dims(x->n, x->c, x->h, x->w) + " computes " + dims(x->n, w->k, P, Q) +
                    " (cudnnGetConvolution2dForwardOutputDim)");
  g.type = x->type;
  // f32 data runs in TF32 unless the math type is FMA (tensor ops allowed by default on sm_80+).
  g.tf32 = x->type == CUDNN_DATA_FLOAT && conv->math != CUDNN_FMA_MATH;
  g.flip = conv->mode == CUDNN_CONVOLUTION;
  g.N = x->n, g.C = x->c, g.H = x->h, g.W = x->w;
  g.K = w->k, g.R = w->r, g.S = w->s, g.P = int(P), g.Q = int(Q);
  g.pad_h = conv->pad_h, g.pad_w = conv->pad_w, g.u = conv->u, g.v = conv->v;
  g.dil_h = conv->dil_h, g.dil_w = conv->dil_w;
  g.xs = {x->sn, x->sc, x->sh, x->sw};
  g.ys = {y->sn, y->sc, y->sh, y->sw};
  const int64_t C = w->c, R = w->r, S = w->s;
  g.ws = w->format == CUDNN_TENSOR_NHWC ? Strides4{R * S * C, 1, S * C, C} : Strides4{C * R * S, R * S, S, 1};
  if (int64_t(g.N) * P * Q * R * S > INT32_MAX || int64_t(g.K) * R * S * C > INT32_MAX)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "the convolution's GEMM is larger than 2^31 - 1 in a dimension");
  return CUDNN_STATUS_SUCCESS;
}

bool overlaps(const void* a, size_t an, const void* b, size_t bn) {
  auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return an && bn && pa < pb + bn && pb < pa + an;
}

struct Buffers {
  const void* a;  // x (fwd, bwd_filter) or w (bwd_data)
  const void* b;  // w (fwd) or dy
  void* out;      // y, dx or dw
  size_t a_bytes, b_bytes, out_bytes;
};

Buffers buffers_of(Dir d, const cudnnTensorStruct* x, const cudnnFilterStruct* w, const cudnnTensorStruct* y,
                   const void* a, const void* b, void* out) {
  switch (d) {
    case Dir::fwd: return {a, b, out, extent_bytes(*x), extent_bytes(*w), extent_bytes(*y)};
    case Dir::bwd_data: return {a, b, out, extent_bytes(*w), extent_bytes(*y), extent_bytes(*x)};
    default: return {a, b, out, extent_bytes(*x), extent_bytes(*y), extent_bytes(*w)};
  }
}

// The data pointers: non-NULL, inside live allocations for their extents, output apart.
cudnnStatus_t check_pointers(const char* fn, Dir d, const Buffers& bf) {
  static const char* names[][3] = {{"x", "w", "y"}, {"w", "dy", "dx"}, {"x", "dy", "dw"}};
  const char* const* nm = names[int(d)];
  const void* ptrs[3] = {bf.a, bf.b, bf.out};
  const size_t bytes[3] = {bf.a_bytes, bf.b_bytes, bf.out_bytes};
  for (int i = 0; i < 3; ++i) {
    if (!ptrs[i]) return fail(CUDNN_STATUS_BAD_PARAM, fn, std::string(nm[i]) + " is NULL");
    if (!is_device_range(ptrs[i], bytes[i]))
      return fail(CUDNN_STATUS_BAD_PARAM, fn,
                  std::string(nm[i]) + ": " + std::to_string(bytes[i]) +
                      " bytes from this pointer are not inside one live device allocation (" +
                      describe_address(ptrs[i]) + ")");
  }
  for (int i = 0; i < 2; ++i)
    if (overlaps(ptrs[i], bytes[i], bf.out, bf.out_bytes))
      return fail(CUDNN_STATUS_BAD_PARAM, fn, std::string(nm[2]) + " overlaps " + nm[i] + " (no in-place convolution)");
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t check_workspace(const char* fn, const Buffers& bf, const void* ws, size_t ws_bytes) {
  if (!ws && ws_bytes) return fail(CUDNN_STATUS_BAD_PARAM, fn, "workSpace is NULL with a non-zero size");
  if (!ws) return CUDNN_STATUS_SUCCESS;
  if (reinterpret_cast<uintptr_t>(ws) % 4 != 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "workSpace is not aligned to 4 bytes");
  if (!is_device_range(ws, ws_bytes))
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "workSpace: " + std::to_string(ws_bytes) + " bytes are not inside one live device allocation (" +
                    describe_address(ws) + ")");
  if (overlaps(ws, ws_bytes, bf.a, bf.a_bytes) || overlaps(ws, ws_bytes, bf.b, bf.b_bytes) ||
      overlaps(ws, ws_bytes, bf.out, bf.out_bytes))
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "workSpace overlaps a data tensor");
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t queue_status(const char* fn, cudaError_t e) {
  if (e == cudaSuccess) return CUDNN_STATUS_SUCCESS;
  if (e == cudaErrorInvalidResourceHandle)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "the handle's stream is no longer a live stream");
  return fail(CUDNN_STATUS_EXECUTION_FAILED, fn,
              std::string("the emulated device has failed: ") + cudaGetErrorString(e));
}

cudnnStatus_t workspace_size(const char* fn, Dir d, cudnnHandle_t h, const cudnnTensorStruct* x,
                             const cudnnFilterStruct* w, const cudnnConvolutionStruct* conv,
                             const cudnnTensorStruct* y, int algo, size_t* sizeInBytes) {
  ConvGeom g;
  if (cudnnStatus_t s = check_descs(fn, d, h, x, w, conv, y, g)) return s;
  if (!sizeInBytes) return fail(CUDNN_STATUS_BAD_PARAM, fn, "sizeInBytes is NULL");
  if (algo < 0 || algo >= algo_count(d))
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "algo " + std::to_string(algo) + " is not a valid enumerant");
  const AlgoPlan p = plan_algo(d, algo, g);
  if (!p.supported) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, p.why);
  *sizeInBytes = p.bytes;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t convolve(const char* fn, Dir d, cudnnHandle_t h, const void* alpha, const cudnnTensorStruct* x,
                       const cudnnFilterStruct* w, const cudnnConvolutionStruct* conv, const cudnnTensorStruct* y,
                       int algo, const void* a, const void* b, void* out, void* ws, size_t ws_bytes,
                       const void* beta) {
  ConvGeom g;
  if (cudnnStatus_t s = check_descs(fn, d, h, x, w, conv, y, g)) return s;
  if (!alpha || !beta) return fail(CUDNN_STATUS_BAD_PARAM, fn, "alpha or beta is NULL");
  const Buffers bf = buffers_of(d, x, w, y, a, b, out);
  if (cudnnStatus_t s = check_pointers(fn, d, bf)) return s;
  if (algo < 0 || algo >= algo_count(d))
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "algo " + std::to_string(algo) + " is not a valid enumerant");
  const AlgoPlan p = plan_algo(d, algo, g);
  if (!p.supported) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, p.why);
  if (ws_bytes < p.bytes)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                std::string(algo_name(d, algo)) + " needs a workspace of " + std::to_string(p.bytes) +
                    " bytes, got " + std::to_string(ws_bytes));
  if (cudnnStatus_t s = check_workspace(fn, bf, ws, ws_bytes)) return s;
  // Scaling factors are host values read now (f32 and bf16 data take float scalars).
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  return queue_status(fn, enqueue(h->stream, fn, [=] { run_conv(d, algo, p, g, al, be, bf.a, bf.b, bf.out, ws); }));
}

// DIFFUSE_EMU_CUDNN_FIND: unset, empty or "timed" ranks by measured time; "reverse" slowest first;
// anything else makes Find*Ex fail with BAD_PARAM naming the variable (a test's mistake).
const char* find_order() {
  const char* env = std::getenv("DIFFUSE_EMU_CUDNN_FIND");
  return env && *env ? env : "timed";
}

// One entry per algorithm enumerant, in enumerant order, as both Find*Ex and Get*_v7 report
// them before ranking: NOT_SUPPORTED where the emulation does not offer it for the case,
// ALLOC_FAILED where it needs more than `ws_bytes`, else SUCCESS with its workspace in `memory`;
// `time` -1 (nothing ran yet). The math type is the descriptor's: FMA for f32 when it asks for it
// (and then runs exact f32), otherwise what the algorithms run in.
template <typename Perf>
std::vector<Perf> offered(Dir d, const ConvGeom& g, cudnnMathType_t math, size_t ws_bytes) {
  std::vector<Perf> out;
  for (int algo = 0; algo < algo_count(d); ++algo) {
    Perf r{};
    r.algo = static_cast<decltype(r.algo)>(algo);
    r.mathType = math;
    r.time = -1.0f;
    const AlgoPlan p = plan_algo(d, algo, g);
    r.determinism = p.determinism;
    if (!p.supported) {
      r.status = CUDNN_STATUS_NOT_SUPPORTED;
    } else {
      r.memory = p.bytes;
      r.status = p.bytes > ws_bytes ? CUDNN_STATUS_ALLOC_FAILED : CUDNN_STATUS_SUCCESS;
    }
    out.push_back(r);
  }
  return out;
}

template <typename Perf>
cudnnStatus_t rank_by_heuristic(const char* fn, Dir d, cudnnHandle_t h, const cudnnTensorStruct* x,
                                const cudnnFilterStruct* w, const cudnnConvolutionStruct* conv,
                                const cudnnTensorStruct* y, int requested, int* returned, Perf* perf) {
  ConvGeom g;
  if (cudnnStatus_t s = check_descs(fn, d, h, x, w, conv, y, g)) return s;
  if (!returned || !perf) return fail(CUDNN_STATUS_BAD_PARAM, fn, "returnedAlgoCount or perfResults is NULL");
  if (requested <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "requestedAlgoCount must be positive, got " + std::to_string(requested));
  std::vector<Perf> results = offered<Perf>(d, g, conv->math, SIZE_MAX);
  std::vector<int64_t> tile(results.size());  // by enumerant; 0 where not supported
  for (size_t a = 0; a < tile.size(); ++a) tile[a] = plan_algo(d, int(a), g).tile;
  std::stable_sort(results.begin(), results.end(), [&](const Perf& l, const Perf& r) {
    const bool lo = l.status == CUDNN_STATUS_SUCCESS, ro = r.status == CUDNN_STATUS_SUCCESS;
    if (lo != ro) return lo;
    if (tile[size_t(l.algo)] != tile[size_t(r.algo)]) return tile[size_t(l.algo)] > tile[size_t(r.algo)];
    return l.memory < r.memory;
  });
  const int n = std::min<int>(requested, int(results.size()));
  std::copy(results.begin(), results.begin() + n, perf);
  *returned = n;
  return CUDNN_STATUS_SUCCESS;
}

template <typename Perf>
cudnnStatus_t find(const char* fn, Dir d, cudnnHandle_t h, const cudnnTensorStruct* x, const cudnnFilterStruct* w,
                   const cudnnConvolutionStruct* conv, const cudnnTensorStruct* y, const void* a, const void* b,
                   void* out, int requested, int* returned, Perf* perf, void* ws, size_t ws_bytes) {
  ConvGeom g;
  if (cudnnStatus_t s = check_descs(fn, d, h, x, w, conv, y, g)) return s;
  if (!returned || !perf) return fail(CUDNN_STATUS_BAD_PARAM, fn, "returnedAlgoCount or perfResults is NULL");
  if (requested <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "requestedAlgoCount must be positive, got " + std::to_string(requested));
  const char* order = find_order();
  if (std::strcmp(order, "timed") != 0 && std::strcmp(order, "reverse") != 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                std::string("DIFFUSE_EMU_CUDNN_FIND must be timed or reverse, got '") + order + "'");
  const Buffers bf = buffers_of(d, x, w, y, a, b, out);
  if (cudnnStatus_t s = check_pointers(fn, d, bf)) return s;
  if (cudnnStatus_t s = check_workspace(fn, bf, ws, ws_bytes)) return s;
  auto results = std::make_shared<std::vector<Perf>>(offered<Perf>(d, g, conv->math, ws_bytes));
  // One queued job runs every algorithm that fits, in order after the work already queued, and
  // times it; the output holds the last one's result, as on the real library.
  const cudaError_t e = enqueue(h->stream, fn, [=] {
    for (Perf& r : *results) {
      if (r.status != CUDNN_STATUS_SUCCESS) continue;
      const int algo = int(r.algo);
      const AlgoPlan p = plan_algo(d, algo, g);
      const auto t0 = std::chrono::steady_clock::now();
      run_conv(d, algo, p, g, 1.0f, 0.0f, bf.a, bf.b, bf.out, ws);
      r.time = std::chrono::duration<float, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
  });
  if (cudnnStatus_t s = queue_status(fn, e)) return s;
  if (cudaError_t se = synchronize_stream(h->stream)) return queue_status(fn, se);
  std::stable_sort(results->begin(), results->end(), [](const Perf& l, const Perf& r) {
    const bool lo = l.status == CUDNN_STATUS_SUCCESS, ro = r.status == CUDNN_STATUS_SUCCESS;
    if (lo != ro) return lo;
    return lo && l.time < r.time;
  });
  if (std::strcmp(order, "reverse") == 0) {
    const auto succeeded = std::find_if(results->begin(), results->end(),
                                        [](const Perf& r) { return r.status != CUDNN_STATUS_SUCCESS; });
    std::reverse(results->begin(), succeeded);
  }
  const int n = std::min<int>(requested, int(results->size()));
  std::copy(results->begin(), results->begin() + n, perf);
  *returned = n;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t max_count(const char* fn, Dir d, cudnnHandle_t h, int* count) {
  if (!live_handle(h)) return fail(CUDNN_STATUS_BAD_PARAM, fn, "handle is not a live cuDNN handle");
  if (!count) return fail(CUDNN_STATUS_BAD_PARAM, fn, "count is NULL");
  *count = algo_count(d);
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

}  // namespace diffuse::emulated_device::dnn

using namespace diffuse::emulated_device::dnn;

extern "C" {

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t handle, int* count) {
  return max_count("cudnnGetConvolutionForwardAlgorithmMaxCount", Dir::fwd, handle, count);
}
cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnnHandle_t handle, int* count) {
  return max_count("cudnnGetConvolutionBackwardDataAlgorithmMaxCount", Dir::bwd_data, handle, count);
}
cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnnHandle_t handle, int* count) {
  return max_count("cudnnGetConvolutionBackwardFilterAlgorithmMaxCount", Dir::bwd_filter, handle, count);
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnFilterDescriptor_t filterDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t destDesc, const int requestedAlgoCount,
    int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults) {
  return rank_by_heuristic("cudnnGetConvolutionForwardAlgorithm_v7", Dir::fwd, handle, srcDesc, filterDesc, convDesc,
                           destDesc, requestedAlgoCount, returnedAlgoCount, perfResults);
}
cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t filterDesc, const cudnnTensorDescriptor_t diffDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t gradDesc, const int requestedAlgoCount,
    int* returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t* perfResults) {
  return rank_by_heuristic("cudnnGetConvolutionBackwardDataAlgorithm_v7", Dir::bwd_data, handle, gradDesc, filterDesc,
                           convDesc, diffDesc, requestedAlgoCount, returnedAlgoCount, perfResults);
}
cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnTensorDescriptor_t diffDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc, const int requestedAlgoCount,
    int* returnedAlgoCount, cudnnConvolutionBwdFilterAlgoPerf_t* perfResults) {
  return rank_by_heuristic("cudnnGetConvolutionBackwardFilterAlgorithm_v7", Dir::bwd_filter, handle, srcDesc,
                           gradDesc, convDesc, diffDesc, requestedAlgoCount, returnedAlgoCount, perfResults);
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t handle,
                                                                  const cudnnTensorDescriptor_t xDesc,
                                                                  const cudnnFilterDescriptor_t wDesc,
                                                                  const cudnnConvolutionDescriptor_t convDesc,
                                                                  const cudnnTensorDescriptor_t yDesc,
                                                                  cudnnConvolutionFwdAlgo_t algo, size_t* sizeInBytes) {
  return workspace_size("cudnnGetConvolutionForwardWorkspaceSize", Dir::fwd, handle, xDesc, wDesc, convDesc, yDesc,
                        algo, sizeInBytes);
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const cudnnTensorDescriptor_t dyDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc,
    cudnnConvolutionBwdDataAlgo_t algo, size_t* sizeInBytes) {
  return workspace_size("cudnnGetConvolutionBackwardDataWorkspaceSize", Dir::bwd_data, handle, dxDesc, wDesc,
                        convDesc, dyDesc, algo, sizeInBytes);
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnTensorDescriptor_t dyDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t* sizeInBytes) {
  return workspace_size("cudnnGetConvolutionBackwardFilterWorkspaceSize", Dir::bwd_filter, handle, xDesc, gradDesc,
                        convDesc, dyDesc, algo, sizeInBytes);
}

cudnnStatus_t CUDNNWINAPI cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha,
                                                  const cudnnTensorDescriptor_t xDesc, const void* x,
                                                  const cudnnFilterDescriptor_t wDesc, const void* w,
                                                  const cudnnConvolutionDescriptor_t convDesc,
                                                  cudnnConvolutionFwdAlgo_t algo, void* workSpace,
                                                  size_t workSpaceSizeInBytes, const void* beta,
                                                  const cudnnTensorDescriptor_t yDesc, void* y) {
  return convolve("cudnnConvolutionForward", Dir::fwd, handle, alpha, xDesc, wDesc, convDesc, yDesc, algo, x, w, y,
                  workSpace, workSpaceSizeInBytes, beta);
}

cudnnStatus_t CUDNNWINAPI cudnnConvolutionBackwardData(cudnnHandle_t handle, const void* alpha,
                                                       const cudnnFilterDescriptor_t wDesc, const void* w,
                                                       const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                                       const cudnnConvolutionDescriptor_t convDesc,
                                                       cudnnConvolutionBwdDataAlgo_t algo, void* workSpace,
                                                       size_t workSpaceSizeInBytes, const void* beta,
                                                       const cudnnTensorDescriptor_t dxDesc, void* dx) {
  return convolve("cudnnConvolutionBackwardData", Dir::bwd_data, handle, alpha, dxDesc, wDesc, convDesc, dyDesc, algo,
                  w, dy, dx, workSpace, workSpaceSizeInBytes, beta);
}

cudnnStatus_t CUDNNWINAPI cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void* alpha,
                                                         const cudnnTensorDescriptor_t xDesc, const void* x,
                                                         const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                                         const cudnnConvolutionDescriptor_t convDesc,
                                                         cudnnConvolutionBwdFilterAlgo_t algo, void* workSpace,
                                                         size_t workSpaceSizeInBytes, const void* beta,
                                                         const cudnnFilterDescriptor_t dwDesc, void* dw) {
  return convolve("cudnnConvolutionBackwardFilter", Dir::bwd_filter, handle, alpha, xDesc, dwDesc, convDesc, dyDesc,
                  algo, x, dy, dw, workSpace, workSpaceSizeInBytes, beta);
}

cudnnStatus_t CUDNNWINAPI cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void* x, const cudnnFilterDescriptor_t wDesc,
    const void* w, const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc, void* y,
    const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults, void* workSpace,
    size_t workSpaceSizeInBytes) {
  return find("cudnnFindConvolutionForwardAlgorithmEx", Dir::fwd, handle, xDesc, wDesc, convDesc, yDesc, x, w, y,
              requestedAlgoCount, returnedAlgoCount, perfResults, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t CUDNNWINAPI cudnnFindConvolutionBackwardDataAlgorithmEx(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const void* w, const cudnnTensorDescriptor_t dyDesc,
    const void* dy, const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc, void* dx,
    const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t* perfResults,
    void* workSpace, size_t workSpaceSizeInBytes) {
  return find("cudnnFindConvolutionBackwardDataAlgorithmEx", Dir::bwd_data, handle, dxDesc, wDesc, convDesc, dyDesc,
              w, dy, dx, requestedAlgoCount, returnedAlgoCount, perfResults, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t CUDNNWINAPI cudnnFindConvolutionBackwardFilterAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void* x, const cudnnTensorDescriptor_t dyDesc,
    const void* y, const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t dwDesc, void* dw,
    const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdFilterAlgoPerf_t* perfResults,
    void* workSpace, size_t workSpaceSizeInBytes) {
  return find("cudnnFindConvolutionBackwardFilterAlgorithmEx", Dir::bwd_filter, handle, xDesc, dwDesc, convDesc,
              dyDesc, x, y, dw, requestedAlgoCount, returnedAlgoCount, perfResults, workSpace, workSpaceSizeInBytes);
}

}  // extern "C"
