// NHWC GroupNorm: x [N, S, C] (S = every dim between batch and channels), groups are contiguous
// runs of C / groups channels; statistics per (n, group) over S positions and the group's
// channels, biased variance, eps inside the sqrt (PyTorch's definition). Optional fusions:
// add_nc [N, C] added to x before the statistics, SiLU applied after the affine.
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace diffuse::kernels {

struct GroupNormDesc {
  int64_t n = 0, spatial = 0, channels = 0;
  int64_t groups = 1;
  double eps = 1e-5;
  bool silu = false;
  int64_t group_size() const { return channels / groups; }
};

namespace cpu {
// add_nc may be null. mean and rstd [N, groups] receive the statistics (kept in double on the
// CPU; the backward takes them back).
template <typename T>
void group_norm_forward(const GroupNormDesc& d, const T* x, const T* add_nc, const T* gamma, const T* beta, T* y,
                        double* mean, double* rstd);
// dy is the grad of y. Writes dx [N, S, C], dgamma and dbeta [C], and dadd_nc [N, C] when not
// null (the grad of the pre-norm input summed over positions). beta is needed only with silu.
template <typename T>
void group_norm_backward(const GroupNormDesc& d, const T* x, const T* add_nc, const T* gamma, const T* beta,
                         const double* mean, const double* rstd, const T* dy, T* dx, T* dgamma, T* dbeta,
                         T* dadd_nc);
}  // namespace cpu

}  // namespace diffuse::kernels
