// CPU denoise_step (see kernels/denoise_step.h): the shared per-element math of denoise_element,
// specialised per (update kind, guided, clip, draw) outside the element loop so each variant is a
// branch-free loop the compiler vectorises. Work goes in chunks of kChunk elements (a whole number
// of Philox blocks): the chunk's normals are drawn into a small buffer first, then the update runs
// over the chunk. Chunks are independent, so threads split them (one parallel_for region, kernels/
// cpu/parallel.h) with identical results. In place is safe: element i reads only index i of every
// input before writing index i of the outputs. It does not show in a sampling step's profile, so
// the compiler's vectorisation of the baseline build is all it gets.
#include "kernels/denoise_step.h"

#include <string>

#include "kernels/cpu/parallel.h"

namespace diffuse::kernels {

// Each message is built only when its check fails: a sampling step calls this every step, and
// steady-state steps allocate nothing (a std::string message of this length is a heap block).
void validate(const DenoiseStepDesc& d) {
  if (d.numel < 0) throw Error("denoise_step: negative element count " + std::to_string(d.numel));
  if (d.update < static_cast<int32_t>(DenoiseUpdate::ddpm) || d.update > static_cast<int32_t>(DenoiseUpdate::dpm_second))
    throw Error("denoise_step: unknown update kind " + std::to_string(d.update));
  if (d.clip && !(d.clip_range > 0))
    throw Error("denoise_step: clip_range must be > 0, got " + std::to_string(d.clip_range));
  if (!(d.noise_std >= 0)) throw Error("denoise_step: noise_std must be >= 0, got " + std::to_string(d.noise_std));
}

namespace cpu {

namespace {

constexpr int64_t kChunk = 1024;  // elements per chunk: 256 Philox blocks, 4 KiB of normals
// parallel_for's cost per element: a region from 32768 elements up (the element-wise ops'
// threshold), or from 8192 when drawing normals, which costs ~10x the update itself.
constexpr double kCostPlain = kParallelWork / 32768, kCostDraw = kParallelWork / 8192;

// The descriptor's coefficients converted to T once, as denoise_element converts them per element.
template <typename T>
struct Coefs {
  T guidance, ax, am, r, ex, em, cx, cx0, ceps, cd1, sd;
  explicit Coefs(const DenoiseStepDesc& d)
      : guidance(static_cast<T>(d.guidance)), ax(static_cast<T>(d.x0_from_x)), am(static_cast<T>(d.x0_from_m)),
        r(static_cast<T>(d.clip_range)), ex(static_cast<T>(d.eps_from_x)), em(static_cast<T>(d.eps_from_m)),
        cx(static_cast<T>(d.c_x)), cx0(static_cast<T>(d.c_x0)), ceps(static_cast<T>(d.c_eps)),
        cd1(static_cast<T>(d.c_d1)), sd(static_cast<T>(d.noise_std)) {}
};

// Elements [begin, end) of one chunk; z holds the chunk's normals (index i - begin) when Draw.
// The operations and their order are denoise_element's, so results match it bit for bit up to
// the compiler's contraction of multiply-adds.
template <typename T, int Update, bool Guided, bool Clip, bool Draw>
void chunk(const Coefs<T>& k, int64_t n, int64_t begin, int64_t end, const T* x, const T* model_out,
           const T* x0_prev, const float* z, T* x_prev, T* x0_out) {
  // simd: in place (x_prev == x) leaves only same-index dependences, which vectors keep, but the
  // compiler's own overlap check would fall back to scalar code.
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const T xi = x[i];
    const T m = Guided ? model_out[i] + k.guidance * (model_out[n + i] - model_out[i]) : model_out[i];
    T x0v = k.ax * xi + k.am * m;
    if (Clip) x0v = x0v < -k.r ? -k.r : (x0v > k.r ? k.r : x0v);
    T out = k.cx * xi + k.cx0 * x0v;
    if (Update == static_cast<int>(DenoiseUpdate::ddim)) out += k.ceps * (k.ex * xi + k.em * m);
    if (Update == static_cast<int>(DenoiseUpdate::dpm_second)) out += k.cd1 * (x0v - x0_prev[i]);
    if (Draw) out += k.sd * static_cast<T>(z[i - begin]);
    x_prev[i] = out;
    x0_out[i] = x0v;
  }
}

template <typename T, int Update, bool Guided, bool Clip, bool Draw>
void run(const DenoiseStepDesc& d, const T* x, const T* model_out, const T* x0_prev, T* x_prev, T* x0_out) {
  const Coefs<T> k(d);
  const int64_t n = d.numel;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  parallel_for(chunks, double(kChunk) * (Draw ? kCostDraw : kCostPlain), [&](int64_t first_chunk, int64_t end_chunk) {
    for (int64_t c = first_chunk; c < end_chunk; ++c) {
      const int64_t begin = c * kChunk, end = begin + kChunk < n ? begin + kChunk : n;
      float z[kChunk];
      if (Draw) {
        const uint64_t first = d.noise_offset + static_cast<uint64_t>(begin / 4);
        const int64_t blocks = (end - begin + 3) / 4;
        for (int64_t b = 0; b < blocks; ++b)
          philox::normals4(d.seed, d.stream, first + static_cast<uint64_t>(b), z + 4 * b);
      }
      chunk<T, Update, Guided, Clip, Draw>(k, n, begin, end, x, model_out, x0_prev, z, x_prev, x0_out);
    }
  });
}

// Picks the specialisation: the runtime flags become template arguments one at a time.
template <typename T, int Update, bool Guided, bool Clip>
void pick_draw(const DenoiseStepDesc& d, const T* x, const T* m, const T* p, T* xp, T* x0) {
  if (d.noise_std != 0)
    run<T, Update, Guided, Clip, true>(d, x, m, p, xp, x0);
  else
    run<T, Update, Guided, Clip, false>(d, x, m, p, xp, x0);
}

template <typename T, int Update, bool Guided>
void pick_clip(const DenoiseStepDesc& d, const T* x, const T* m, const T* p, T* xp, T* x0) {
  if (d.clip)
    pick_draw<T, Update, Guided, true>(d, x, m, p, xp, x0);
  else
    pick_draw<T, Update, Guided, false>(d, x, m, p, xp, x0);
}

template <typename T, int Update>
void pick_guided(const DenoiseStepDesc& d, const T* x, const T* m, const T* p, T* xp, T* x0) {
  if (d.guided)
    pick_clip<T, Update, true>(d, x, m, p, xp, x0);
  else
    pick_clip<T, Update, false>(d, x, m, p, xp, x0);
}

}  // namespace

template <typename T>
void denoise_step(const DenoiseStepDesc& d, const T* x, const T* model_out, const T* x0_prev, T* x_prev,
                  T* x0_out) {
  validate(d);
  if (d.update == static_cast<int32_t>(DenoiseUpdate::dpm_second) && x0_prev == nullptr)
    throw Error("denoise_step: a second-order DPM-Solver++ step needs the previous x0");
  switch (static_cast<DenoiseUpdate>(d.update)) {
    case DenoiseUpdate::ddpm:
      return pick_guided<T, static_cast<int>(DenoiseUpdate::ddpm)>(d, x, model_out, x0_prev, x_prev, x0_out);
    case DenoiseUpdate::ddim:
      return pick_guided<T, static_cast<int>(DenoiseUpdate::ddim)>(d, x, model_out, x0_prev, x_prev, x0_out);
    case DenoiseUpdate::dpm_first:
      return pick_guided<T, static_cast<int>(DenoiseUpdate::dpm_first)>(d, x, model_out, x0_prev, x_prev, x0_out);
    case DenoiseUpdate::dpm_second:
      return pick_guided<T, static_cast<int>(DenoiseUpdate::dpm_second)>(d, x, model_out, x0_prev, x_prev, x0_out);
  }
}

template void denoise_step<float>(const DenoiseStepDesc&, const float*, const float*, const float*, float*, float*);
template void denoise_step<double>(const DenoiseStepDesc&, const double*, const double*, const double*, double*,
                                   double*);

}  // namespace cpu
}  // namespace diffuse::kernels
