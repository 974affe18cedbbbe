// NHWC GroupNorm: x [N, S, C] (S = every dim between batch and channels), groups are contiguous
// runs of C / groups channels; statistics per (n, group) over S positions and the group's
// channels, biased variance, eps inside the sqrt (PyTorch's definition). Optional fusions:
// add_nc [N, C] added to x before the statistics, SiLU applied after the affine.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace diffuse::kernels {

struct GroupNormDesc {
  int64_t n = 0, spatial = 0, channels = 0;
  int64_t groups = 1;
  double eps = 1e-5;
  bool silu = false;
  // Device kernels only: a cap on the shared memory of the one-read forward path (a whole
  // (n, group) slab in one block); 0 means the device's own limit. Tests lower it to force the
  // chunked two-pass path on tiny shapes.
  int64_t smem_limit_bytes = 0;
  // Device kernels only, for tests: 0 lets the plan choose the backward's path; 1 forces both
  // slabs (x, dy) in shared memory, 2 dy's slab alone, 3 the chunked two-pass path (1 and 2 still
  // need to fit the shared-memory limit).
  int backward_path = 0;
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

// Device launchers (kernels/cuda/group_norm_forward.cu, group_norm_backward.cu), f32, and bf16
// activations (x, y, dy, dx as uint16_t bits; add_nc, gamma, beta and every grad of them f32;
// statistics and math f32/f64, each stored activation rounded once): cuda:: takes device pointers,
// emu:: host pointers. mean/rstd are f64 [N, groups] as on the CPU (computed with f32 accumulation).
// `workspace` is scratch of at least the matching *_workspace_bytes(d) (null when that is 0);
// both sizes depend only on d and the current device. dgamma, dbeta, dadd_nc may be null.
#define DIFFUSE_GROUP_NORM_LAUNCHERS                                                                              \
  size_t group_norm_forward_workspace_bytes(const GroupNormDesc& d);                                             \
  size_t group_norm_backward_workspace_bytes(const GroupNormDesc& d);                                            \
  void group_norm_forward(const GroupNormDesc& d, const float* x, const float* add_nc, const float* gamma,       \
                          const float* beta, float* y, double* mean, double* rstd, void* workspace, Stream stream); \
  void group_norm_backward(const GroupNormDesc& d, const float* x, const float* add_nc, const float* gamma,      \
                           const float* beta, const double* mean, const double* rstd, const float* dy, float* dx,   \
                           float* dgamma, float* dbeta, float* dadd_nc, void* workspace, Stream stream);     \
  void group_norm_forward(const GroupNormDesc& d, const uint16_t* x, const float* add_nc, const float* gamma,    \
                          const float* beta, uint16_t* y, double* mean, double* rstd, void* workspace,          \
                          Stream stream);                                                                       \
  void group_norm_backward(const GroupNormDesc& d, const uint16_t* x, const float* add_nc, const float* gamma,   \
                           const float* beta, const double* mean, const double* rstd, const uint16_t* dy,       \
                           uint16_t* dx, float* dgamma, float* dbeta, float* dadd_nc, void* workspace,          \
                           Stream stream);
namespace cuda {
DIFFUSE_GROUP_NORM_LAUNCHERS
}
namespace emu {
DIFFUSE_GROUP_NORM_LAUNCHERS
}
#undef DIFFUSE_GROUP_NORM_LAUNCHERS

}  // namespace diffuse::kernels
