// 2-D convolution over NHWC activations with OHWI weights: x [N, H, W, Cin], w [Cout, kh, kw, Cin],
// bias [Cout] (optional) -> y [N, Ho, Wo, Cout]. Padding is per side, so diffusers' asymmetric
// (0, 1, 0, 1) downsample pad is a plain descriptor. The CPU path (kernels/cpu/conv2d.cpp) is an
// implicit GEMM: im2col rows are output pixels and columns (ki, kj, ci) in OHWI order, so
// y = cols · wᵀ, and the f32 GEMM packs those columns block by block straight from x without
// ever writing the whole column matrix (f64: im2col + dgemm); 3×3 stride-1 pad-1 f32 convolutions
// run as Winograd F(2×2, 3×3) or F(4×4, 3×3) instead (kernels/cpu/winograd.h). An optional residual of y's shape
// is added in the same output pass (the fused ResnetBlock skip). The CUDA path
// (kernels/cuda/conv2d.cpp) is cuDNN.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/gemm.h"

namespace diffuse::kernels {

struct Conv2dDesc {
  int64_t n = 0, h = 0, w = 0, cin = 0;
  int64_t cout = 0, kh = 1, kw = 1;
  int64_t stride = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t out_h() const { return (h + pad_top + pad_bottom - kh) / stride + 1; }
  int64_t out_w() const { return (w + pad_left + pad_right - kw) / stride + 1; }
  int64_t k() const { return kh * kw * cin; }  // GEMM reduction length
  // 1x1, stride 1, no padding: x itself is the im2col matrix.
  bool pointwise() const {
    return kh == 1 && kw == 1 && stride == 1 && pad_top == 0 && pad_bottom == 0 && pad_left == 0 && pad_right == 0;
  }
};

namespace cpu {
// bias may be null. residual [N, Ho, Wo, Cout] (may be null, may be y itself) is added in the same
// pass: y = conv(x, w) + bias + residual, the GEMM's store adding both.
template <typename T>
void conv2d_forward(const Conv2dDesc& d, const T* x, const T* w, const T* bias, T* y, const T* residual = nullptr);
// dy [N, Ho, Wo, Cout]; any of dx [N, H, W, Cin], dw [Cout, kh, kw, Cin], dbias [Cout] may be null
// (not wanted); the others are overwritten.
template <typename T>
void conv2d_backward(const Conv2dDesc& d, const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias);
}  // namespace cpu

namespace cuda {
// cuDNN on device pointers in `type` storage: NHWC activations, KRSC (= OHWI) filters, f32 compute
// (exact FMA math unless set_allow_tf32). Per-side padding: cuDNN takes the symmetric part; an
// asymmetric excess such as diffusers' (0, 1, 0, 1) downsample pad is applied by copying x into
// a zero-bordered buffer first. bias may be null. residual [N, Ho, Wo, Cout] (may be null): y =
// conv + bias + residual, cuDNN's conv followed by ONE add_bias_residual pass
// (kernels/elementwise.h) in place of add_row_bias and a separate add.
void conv2d_forward(const Conv2dDesc& d, DenseType type, const void* x, const void* w, const void* bias, void* y,
                    const DeviceMemory& mem, Stream stream, const void* residual = nullptr);
// Gradients from dy [N, Ho, Wo, Cout]; each of dx, dw, dbias may be null (not wanted) and is
// overwritten otherwise.
void conv2d_backward(const Conv2dDesc& d, DenseType type, const void* x, const void* w, const void* dy, void* dx,
                     void* dw, void* dbias, const DeviceMemory& mem, Stream stream);
// How each plan chooses a direction's algorithm the first time that direction runs (the mode in
// force then; plans are kept per mode, so switching modes re-chooses):
// - timed: cudnnFind*AlgorithmEx runs every algorithm once and the fastest deterministic one is
//   kept: the fastest steps, but the choice follows the timings, so two processes may choose
//   differently and their results differ in the last bits;
// - heuristic: cudnnGet*Algorithm_v7 ranks the algorithms without running any and the best-ranked
//   deterministic one is kept: the same choice in every process on one card and cuDNN version,
//   so runs repeat bit for bit (possibly slower steps).
// Process-wide, like set_allow_tf32; default timed.
enum class ConvSearch : unsigned char { timed, heuristic };
void set_conv_search(ConvSearch mode);
ConvSearch conv_search();
// How many (shape, dtype, direction) algorithm choices each mode has made: a second identical
// call must not add one (tests).
struct ConvSearchCounts {
  int timed = 0, heuristic = 0;
};
ConvSearchCounts conv_algorithm_searches();
}  // namespace cuda

}  // namespace diffuse::kernels
