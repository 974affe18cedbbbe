// See layout.h. An odometer over the output walks the input with permuted strides.
#include "nn/layout.h"

#include <cstring>

namespace diffuse {

Tensor permute(const Tensor& x_in, const std::vector<int>& perm) {
  const int r = x_in.ndim();
  if (static_cast<int>(perm.size()) != r) throw Error("permute: " + x_in.describe() + " needs " + std::to_string(r) + " axes");
  std::vector<bool> seen(r, false);
  for (int p : perm) {
    if (p < 0 || p >= r || seen[p]) throw Error("permute: invalid axis order for " + x_in.describe());
    seen[p] = true;
  }
  Tensor x = x_in.to(Device::cpu);
  Shape out_shape(r);
  std::vector<int64_t> in_stride(r), stride_of_out(r);
  int64_t s = 1;
  for (int i = r - 1; i >= 0; --i) {
    in_stride[i] = s;
    s *= x.shape()[i];
  }
  for (int i = 0; i < r; ++i) {
    out_shape[i] = x.shape()[perm[i]];
    stride_of_out[i] = in_stride[perm[i]];
  }
  Tensor out = Tensor::empty(out_shape, x.dtype());
  const size_t es = dtype_size(x.dtype());
  const char* src = static_cast<const char*>(x.raw());
  char* dst = static_cast<char*>(out.raw());
  std::vector<int64_t> idx(r, 0);
  int64_t n = out.numel(), offset = 0;
  for (int64_t k = 0; k < n; ++k) {
    std::memcpy(dst + k * es, src + offset * es, es);
    for (int d = r - 1; d >= 0; --d) {
      offset += stride_of_out[d];
      if (++idx[d] < out_shape[d]) break;
      offset -= stride_of_out[d] * out_shape[d];
      idx[d] = 0;
    }
  }
  return out;
}

}  // namespace diffuse
