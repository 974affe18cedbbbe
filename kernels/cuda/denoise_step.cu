// CUDA denoise_step (see kernels/denoise_step.h), also run by the SIMT emulator: one sampler update
// (CFG combine, x0 prediction, clipping, DDPM / DDIM / DPM-Solver++(2M) update, Philox noise) for
// the whole batch in one element-wise pass, with the per-element math shared with the CPU twin.
//
// Launch: one thread per Philox quad — elements 4q..4q+3 use lanes 0..3 of counter block
// noise_offset + q, so a thread draws its four normals once (only when noise_std != 0) — 256
// threads a block, grid-stride over one full wave of blocks (grid::wave_blocks: every SM full, no
// partly filled last wave). A thread issues the next quad's loads of x and the model output before
// this quad's draw and update, so that Philox and Box-Muller (about as many cycles per quad as HBM
// takes to move its bytes on an H200) overlap two quads' load latency.
// Memory: float4 loads and stores when every buffer read or written (including the conditional half
// of a guided output, at model_out + numel) is 16-byte aligned; a final partial quad, or unaligned
// buffers, go element by element. Per element the pass reads x (4 B), the model output (4 B; 8 B
// guided) and x0_prev (4 B, second-order DPM only) and writes x_prev and x0 (8 B): 16 to 24 bytes,
// so it is memory-bound; the descriptor's branches are uniform over the grid and cost no divergence.
// In place (x_prev == x, x0_out == x0_prev) is safe: a thread loads its whole quad from every input
// before storing it, and no other thread touches that quad — so those buffers carry no __restrict__.
// The per-step form reads the descriptor through a pointer, once per thread (a few cached loads).
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/denoise_step.h"
#include "kernels/philox.h"

#include <algorithm>
#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

constexpr int kThreads = 256;
// Under the emulator a small cap makes the tests' small shapes run the grid-stride loop too (on a
// GPU the grid is one full wave: grid::wave_blocks).
constexpr int64_t kEmuMaxBlocks = 3;

using grid::load4;
using grid::store4;

template <bool kVector>
__global__ void __launch_bounds__(kThreads, 4)  // 64 registers: four blocks an SM
    denoise_step_kernel(DenoiseStepDesc launch_d, const DenoiseStepDesc* per_step, const float* x,
                        const float* model_out, const float* x0_prev, float* x_prev, float* x0_out) {
  DenoiseStepDesc d = launch_d;
  if (per_step) {  // a graph replay's scalars: read at run time; the buffers' shape stays the launch's
    d = *per_step;
    d.numel = launch_d.numel;
    d.guided = launch_d.guided;
  }
  const int64_t n = d.numel;
  const int64_t quads = (n + 3) / 4;
  const bool second = d.update == static_cast<int32_t>(DenoiseUpdate::dpm_second);
  const bool draw = d.noise_std != 0;
  const float* m_cond = model_out + n;  // the conditional half of a guided output
  const int64_t stride = grid::grid_threads();
  // Quad qq of `src` (zeros past the end: lanes past the end of a partial quad compute on zeros
  // and are never stored).
  const auto load_quad = [&](const float* src, int64_t qq, float (&v)[4]) {
    const int64_t k = 4 * qq;
    const int cnt = n - k < 4 ? static_cast<int>(n - k) : 4;
    if (kVector && cnt == 4) {
      load4(src, qq, v);
    } else {
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j) v[j] = j < cnt ? src[k + j] : 0.0f;
    }
  };
  int64_t q = grid::global_thread();
  float x_next[4], m_next[4];
  if (q < quads) {
    load_quad(x, q, x_next);
    load_quad(model_out, q, m_next);
  }
  for (; q < quads; q += stride) {
    const int64_t k0 = 4 * q;
    const int count = n - k0 < 4 ? static_cast<int>(n - k0) : 4;
    // x and the model output of the next quad are loaded before this quad's draw and update (two
    // quads' loads in flight per thread). In place, that quad is this thread's own and not yet
    // written.
    float xv[4] = {x_next[0], x_next[1], x_next[2], x_next[3]};
    float mu[4] = {m_next[0], m_next[1], m_next[2], m_next[3]};
    if (q + stride < quads) {
      load_quad(x, q + stride, x_next);
      load_quad(model_out, q + stride, m_next);
    }
    float mc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, prev[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (d.guided) load_quad(m_cond, q, mc);
    if (second) load_quad(x0_prev, q, prev);
    float z[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (draw) philox::normals4(d.seed, d.stream, d.noise_offset + static_cast<uint64_t>(q), z);
    float out[4], x0v[4];
    DIFFUSE_UNROLL
    for (int j = 0; j < 4; ++j) {
      const float m = d.guided ? guided_output<float>(d, mu[j], mc[j]) : mu[j];
      denoise_element<float>(d, xv[j], m, prev[j], z[j], &out[j], &x0v[j]);
    }
    if (kVector && count == 4) {
      store4(x_prev, q, out);
      store4(x0_out, q, x0v);
    } else {
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j)
        if (j < count) {
          x_prev[k0 + j] = out[j];
          x0_out[k0 + j] = x0v[j];
        }
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Launches the kernel for d's numel and guided; `second` says whether x0_prev is read.
void launch(const DenoiseStepDesc& d, const DenoiseStepDesc* per_step, bool second, const float* x,
            const float* model_out, const float* x0_prev, float* x_prev, float* x0_out, Stream stream) {
  require(d.numel == 0 || (x && model_out && x_prev && x0_out), "denoise_step: null buffer");
  const int64_t quads = (d.numel + 3) / 4;
  const bool vector = aligned16(x) && aligned16(model_out) && (!d.guided || aligned16(model_out + d.numel)) &&
                      (!second || aligned16(x0_prev)) && aligned16(x_prev) && aligned16(x0_out);
  if (vector)
    DIFFUSE_LAUNCH((denoise_step_kernel<true>),
                   grid::wave_blocks(denoise_step_kernel<true>, kThreads, quads, kThreads, kEmuMaxBlocks), kThreads, 0,
                   stream, d, per_step, x, model_out, x0_prev, x_prev, x0_out);
  else
    DIFFUSE_LAUNCH((denoise_step_kernel<false>),
                   grid::wave_blocks(denoise_step_kernel<false>, kThreads, quads, kThreads, kEmuMaxBlocks), kThreads,
                   0, stream, d, per_step, x, model_out, x0_prev, x_prev, x0_out);
}

}  // namespace

void denoise_step(const DenoiseStepDesc& d, const float* x, const float* model_out, const float* x0_prev,
                  float* x_prev, float* x0_out, Stream stream) {
  validate(d);
  const bool second = d.update == static_cast<int32_t>(DenoiseUpdate::dpm_second);
  require(!second || x0_prev != nullptr,
          "denoise_step: a second-order DPM-Solver++ step needs the previous x0");
  launch(d, nullptr, second, x, model_out, x0_prev, x_prev, x0_out, stream);
}

void denoise_step_per_step(const DenoiseStepDesc& d, const DenoiseStepDesc* per_step, const float* x,
                           const float* model_out, const float* x0_prev, float* x_prev, float* x0_out,
                           Stream stream) {
  validate(d);
  require(per_step != nullptr, "denoise_step: null per-step descriptor");
  require(d.numel == 0 || x0_prev != nullptr, "denoise_step: the per-step form needs the previous x0 buffer");
  launch(d, per_step, /*second=*/true, x, model_out, x0_prev, x_prev, x0_out, stream);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
