// Shape kernels the UNet needs between the big ops: concatenation along the last (channel) dim
// with its backward (a split), and nearest 2x upsampling of an NHWC map with its backward (each
// input pixel's grad is the sum of its four children). Everything is contiguous; a "row" is all
// the leading dims flattened, so concat works for NHWC maps and [N, L, C] sequences alike.
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace diffuse::kernels {

struct ConcatDesc {
  int64_t rows = 0;  // product of the leading dims (equal for a and b)
  int64_t ca = 0;    // a's last dim
  int64_t cb = 0;    // b's last dim
};

struct Upsample2xDesc {
  int64_t n = 0, h = 0, w = 0, c = 0;  // input [n, h, w, c]; output [n, 2h, 2w, c]
};

namespace cpu {
// out[r, :ca] = a[r], out[r, ca:] = b[r].
template <typename T>
void concat_last(const ConcatDesc& d, const T* a, const T* b, T* out);
// The backward: ga[r] = g[r, :ca], gb[r] = g[r, ca:]. Either destination may be null (not wanted).
template <typename T>
void split_last(const ConcatDesc& d, const T* g, T* ga, T* gb);
// y[n, y, x, c] = x[n, y/2, x/2, c].
template <typename T>
void upsample_nearest2x(const Upsample2xDesc& d, const T* x, T* y);
// gx[n, i, j, c] = sum of gy over the 2x2 block it was copied to.
template <typename T>
void upsample_nearest2x_backward(const Upsample2xDesc& d, const T* gy, T* gx);
}  // namespace cpu

// Device launchers (kernels/cuda/shape.cu), f32, and bf16 storage (uint16_t bits: moved exactly;
// the upsample backward adds in f32 and rounds once): cuda:: takes device pointers, emu:: host
// pointers. split_last skips a null destination, like the CPU twin.
#define DIFFUSE_SHAPE_LAUNCHERS                                                                          \
  void concat_last(const ConcatDesc& d, const float* a, const float* b, float* out, Stream stream);     \
  void split_last(const ConcatDesc& d, const float* g, float* ga, float* gb, Stream stream);           \
  void upsample_nearest2x(const Upsample2xDesc& d, const float* x, float* y, Stream stream);           \
  void upsample_nearest2x_backward(const Upsample2xDesc& d, const float* gy, float* gx, Stream stream);        \
  void concat_last(const ConcatDesc& d, const uint16_t* a, const uint16_t* b, uint16_t* out, Stream stream);   \
  void split_last(const ConcatDesc& d, const uint16_t* g, uint16_t* ga, uint16_t* gb, Stream stream);          \
  void upsample_nearest2x(const Upsample2xDesc& d, const uint16_t* x, uint16_t* y, Stream stream);             \
  void upsample_nearest2x_backward(const Upsample2xDesc& d, const uint16_t* gy, uint16_t* gx, Stream stream);
namespace cuda {
DIFFUSE_SHAPE_LAUNCHERS
}
namespace emu {
DIFFUSE_SHAPE_LAUNCHERS
}
#undef DIFFUSE_SHAPE_LAUNCHERS

}  // namespace diffuse::kernels
