// Axis permutation on the host, for the file boundary: PyTorch writes NCHW activations and OIHW
// conv weights; diffuse computes in NHWC with OHWI weights (docs/design.md §3).
#pragma once
#include <vector>

#include "nn/tensor.h"

namespace diffuse {

// out.shape[i] = x.shape[perm[i]]; any dtype; the result is a new contiguous host tensor.
Tensor permute(const Tensor& x, const std::vector<int>& perm);

inline Tensor nchw_to_nhwc(const Tensor& x) { return permute(x, {0, 2, 3, 1}); }
inline Tensor nhwc_to_nchw(const Tensor& x) { return permute(x, {0, 3, 1, 2}); }
inline Tensor oihw_to_ohwi(const Tensor& w) { return permute(w, {0, 2, 3, 1}); }
inline Tensor ohwi_to_oihw(const Tensor& w) { return permute(w, {0, 3, 1, 2}); }

}  // namespace diffuse
