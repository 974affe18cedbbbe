// CUDA GroupNorm over NHWC, backward (see kernels/group_norm.h; what it shares with the forward,
// group_norm_forward.cu, is in group_norm_common.cuh), also run by the SIMT emulator.
//
// Backward, the bytes it must move: x and dy read, dx written (3·NSC elements) plus the small
// per-channel vectors. Three paths, then a small kernel that reduces dγ and dβ over N in a fixed
// order from per-(n, c) sums (8 warps a block over every 8th image, then their partials in warp
// order): deterministic, no atomics. The two slab paths take one block per (n, run
// of consecutive groups): one group, or as many as fill a 32-byte sector when a group's channel
// run is narrower (C/G = 4 f32 or 4, 8 bf16: the ddpm-cifar10 shapes), so that no two blocks
// fetch the same sector.
//  - Two slabs (x's and dy's slabs in their storage type plus scratch fit half an SM's shared
//    memory, so two blocks share an SM: every ddpm-cifar10 / fmnist-small shape; bf16 halves the
//    slabs): 32, 64 or 256 threads, as the forward's. The per-channel sums Σ dŷ, Σ dŷ·x̂, Σ x̂
//    (dŷ = dy through the recomputed SiLU; threads stride the rows with a fixed channel each,
//    power-of-two lanes per row, then shuffle + shared-memory reduction) are reduced straight
//    from global memory while both slabs are copied into shared memory; then the group means of
//    dŷ·γ and dŷ·γ·x̂, and dx, dadd_nc (in closed form) and the per-(n, c) sums are written from
//    shared memory. Traffic: the minimum.
//  - dy's slab (fits the whole limit: e.g. the benchmark's [16, 64x64, 256] f32, 128 KiB of dy per
//    (n, g)): 1024 threads, a block may have the SM to itself. The same, but only dy is kept; x is
//    re-read for dx: the block's own slab, read microseconds before, so served by L2 (132 SMs ×
//    128 KiB = 17 MB in flight against a 50 MB L2). HBM traffic: the minimum.
//  - Chunked (bigger slabs): grid (chunks, G, N), 256 threads. Pass 1 reduces the same
//    per-channel sums over its chunk's rows; pass 2 sums the chunk partials and writes dx (chunk 0
//    the per-(n, c) sums and dadd_nc). Traffic 5·NSC: x and dy are read twice. Pass 2 visits the
//    blocks in reverse order so that the chunks pass 1 read last are re-read from L2.
// Every loop keeps four packs' loads in flight per thread (unrolled by 4) and walks its packs'
// (row, channel) without a division per pack (PackWalk).
#include "kernels/cuda/group_norm_common.cuh"

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

// d silu(v) / dv
__device__ __forceinline__ float silu_grad(float v) {
  const float s = sigmoid(v);
  return s * (1.0f + v * (1.0f - s));
}

// dx for the VEC channels of pack cv, in place of dy's pack gp: rstd · (dŷ·γ − m1 − x̂·m2), with
// x̂ and the SiLU (for dŷ) recomputed from x's pack xp and the group's per-channel add, γ, β.
template <int VEC>
__device__ __forceinline__ void dx_pack(bool silu, int cv, const Pack<VEC>& xp, const float* chan_add,
                                        const float* chan_gamma, const float* chan_beta, float mean, float rstd,
                                        float m1, float m2, Pack<VEC>& gp) {
  DIFFUSE_UNROLL
  for (int j = 0; j < VEC; ++j) {
    const int c = cv * VEC + j;
    const float xh = (xp.v[j] + chan_add[c] - mean) * rstd;
    const float gv = silu ? gp.v[j] * silu_grad(xh * chan_gamma[c] + chan_beta[c]) : gp.v[j];
    gp.v[j] = rstd * (gv * chan_gamma[c] - m1 - xh * m2);
  }
}

// Per channel of `width` consecutive channels (one group, or several whole groups), over `rows`
// rows of x and dy (row strides x_stride, dy_stride elements; xg, dyg at the first channel):
// Σ dŷ, Σ dŷ·x̂ and Σ x̂ into out[3 · width] (written by threads 0..lanes-1; the caller's barrier
// publishes them). A source is global storage (stride C). gamma_w, beta_w, add_w: those channels'
// (add_w may be null); grp_mean, grp_rstd: their groups' statistics, group k = channel / (C/G).
// `lanes` (lanes_for) threads cover one row's packs; the kBlock / lanes row-groups stride the rows
// (four rows in flight per thread). Each sum is first shuffled across the row-groups of a warp,
// then added across warps in order: a fixed tree. red: 3 · VEC · reduce_slots(kBlock, lanes)
// floats of shared memory. Block of kBlock threads. x_copy, dy_copy (may be null): [rows, width]
// receive every pack read (the slab kernel's shared copies, made on the way).
template <int VEC, int kBlock, typename S>
__device__ __forceinline__ void channel_sums(const GroupNormDesc& d, int64_t rows, int width, int64_t x_stride,
                                             int64_t dy_stride, int lanes, const S* xg, const S* dyg,
                                             const float* gamma_g, const float* beta_g, const float* add_g,
                                             const float* grp_mean, const float* grp_rstd, float* red, float* out,
                                             S* x_copy, S* dy_copy) {
  const int group_size = static_cast<int>(d.channels / d.groups), cg = width, cgv = cg / VEC;
  const int tid = threadIdx.x;
  const int L = lanes, row_groups = kBlock / L, r0 = tid / L;
  for (int c0 = 0; c0 < cgv; c0 += L) {  // channel tiles (one unless the group is very wide)
    const int cv = c0 + tid % L;
    float acc[3][VEC];
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) acc[0][j] = acc[1][j] = acc[2][j] = 0.0f;
    if (cv < cgv) {
      float ga[VEC], be[VEC], ad[VEC];
      DIFFUSE_UNROLL
      for (int j = 0; j < VEC; ++j) {
        const int c = cv * VEC + j;
        ga[j] = gamma_g[c];
        be[j] = beta_g[c];
        ad[j] = add_g ? add_g[c] : 0.0f;
      }
      const int k = cv * VEC / group_size;  // a pack lies in one group (C/G % VEC == 0)
      const float mean = grp_mean[k], rstd = grp_rstd[k];
      DIFFUSE_UNROLL_BY(4)
      for (int64_t r = r0; r < rows; r += row_groups) {
        const Pack<VEC> xp = load_pack<VEC>(xg + r * x_stride + cv * VEC);
        const Pack<VEC> dp = load_pack<VEC>(dyg + r * dy_stride + cv * VEC);
        if (x_copy) store_pack<VEC>(x_copy + r * cg + cv * VEC, xp);
        if (dy_copy) store_pack<VEC>(dy_copy + r * cg + cv * VEC, dp);
        DIFFUSE_UNROLL
        for (int j = 0; j < VEC; ++j) {
          const float xh = (xp.v[j] + ad[j] - mean) * rstd;
          const float gv = d.silu ? dp.v[j] * silu_grad(xh * ga[j] + be[j]) : dp.v[j];
          acc[0][j] += gv;
          acc[1][j] += gv * xh;
          acc[2][j] += xh;
        }
      }
    }
    reduce_columns<VEC, kBlock, 3>(acc, L, c0, cgv, cg, red, out);
  }
}

// Chunked pass 1. Grid (chunks, G, N), kThreads: the chunk's per-channel sums (channel_sums) into
// partial[n, g, k, 3, cg].
template <int VEC, typename S>
__global__ void __launch_bounds__(kThreads)
    gn_backward_partial(GroupNormDesc d, int64_t chunk_rows, int lanes, const S* __restrict__ x,
                        const float* __restrict__ add_nc, const float* __restrict__ gamma,
                        const float* __restrict__ beta, const double* __restrict__ mean_in,
                        const double* __restrict__ rstd_in, const S* __restrict__ dy,
                        float* __restrict__ partial) {
  DIFFUSE_SHARED(float, red, 3 * VEC * kThreads);
  const int64_t C = d.channels, Sp = d.spatial, G = d.groups, cg = C / G;
  const int64_t k = blockIdx.x, g = blockIdx.y, n = blockIdx.z, chunks = gridDim.x;
  const int64_t s0 = k * chunk_rows, rows = min64(chunk_rows, Sp - s0);
  const float mean = static_cast<float>(mean_in[n * G + g]), rstd = static_cast<float>(rstd_in[n * G + g]);
  channel_sums<VEC, kThreads>(d, rows, static_cast<int>(cg), C, C, lanes, x + (n * Sp + s0) * C + g * cg,
                              dy + (n * Sp + s0) * C + g * cg, gamma + g * cg, beta + g * cg,
                              add_nc ? add_nc + n * C + g * cg : nullptr, &mean, &rstd, red,
                              partial + ((n * G + g) * chunks + k) * 3 * cg, static_cast<S*>(nullptr),
                              static_cast<S*>(nullptr));
}

// One block per (n, run of gpb consecutive groups): grid (1, G / gpb, N), kBlock threads. gpb > 1
// when a group's channel run is narrower than a 32-byte sector (C/G · element size < 32), so that
// the block's row segments cover whole sectors instead of sharing them with other blocks through
// L2. The per-channel sums are reduced from global memory (channel_sums), which on the way copies
// dy's slab, and x's when kXInSmem, into shared memory in their storage type (bf16 stays bf16);
// then per group m1 = mean(dŷ·γ), m2 = mean(dŷ·γ·x̂) (one thread a group, channels in order,
// double), and nc_sums, dadd_nc and dx as gn_backward_apply writes them, x again from shared
// memory, or re-read from global memory: the block's own slab, read microseconds before, so from
// L2. Either way HBM sees x and dy read once and dx written once. Dynamic shared memory:
// 4 · gpb doubles, then 4 · gpb + 6 · W + red_floats floats (W = gpb · C/G, red_floats =
// 3 · VEC · reduce_slots(kBlock, lanes)), then the slabs, S · W elements of S each.
template <int VEC, int kBlock, bool kXInSmem, typename S>
__global__ void __launch_bounds__(kBlock, kBigThreads / kBlock)  // 64 registers a thread
    gn_backward_slab(GroupNormDesc d, int gpb, int lanes, int red_floats, const S* __restrict__ x,
                     const float* __restrict__ add_nc, const float* __restrict__ gamma,
                     const float* __restrict__ beta, const double* __restrict__ mean_in,
                     const double* __restrict__ rstd_in, const S* __restrict__ dy, S* __restrict__ dx,
                     float* __restrict__ nc_sums, float* __restrict__ dadd_nc) {
  const int64_t N = d.n, C = d.channels, Sp = d.spatial, G = d.groups;
  const int cg = static_cast<int>(C / G), W = gpb * cg, Wv = W / VEC;
  const int64_t g0 = static_cast<int64_t>(blockIdx.y) * gpb, n = blockIdx.z, c_first = g0 * cg;
  const int tid = threadIdx.x, T = blockDim.x;
  double* grp_d = dynamic_smem<double>();       // [4, gpb]: mean, rstd, m1, m2
  float* grp_f = reinterpret_cast<float*>(grp_d + 4 * gpb);  // [4, gpb]: the same in f32
  float* sums = grp_f + 4 * gpb;                 // [3, W]: Σ dŷ, Σ dŷ·x̂, Σ x̂
  float* chan_gamma = sums + 3 * W;              // [W] each
  float* chan_beta = chan_gamma + W;
  float* chan_add = chan_beta + W;
  float* red = chan_add + W;                        // [red_floats]: channel_sums' scratch
  S* dys = reinterpret_cast<S*>(red + red_floats);  // [Sp, W]: 16-byte aligned when C/G % 4 == 0
  S* xs = dys + Sp * W;                             // [Sp, W] when kXInSmem
  for (int k = tid; k < gpb; k += T) {
    grp_d[k] = mean_in[n * G + g0 + k];
    grp_d[gpb + k] = rstd_in[n * G + g0 + k];
    grp_f[k] = static_cast<float>(grp_d[k]);
    grp_f[gpb + k] = static_cast<float>(grp_d[gpb + k]);
  }
  for (int c = tid; c < W; c += T) {
    chan_gamma[c] = gamma[c_first + c];
    chan_beta[c] = beta[c_first + c];
    chan_add[c] = add_nc ? add_nc[n * C + c_first + c] : 0.0f;
  }
  __syncthreads();  // publishes the statistics and chan_*
  const S* xg = x + n * Sp * C + c_first;
  const S* dyg = dy + n * Sp * C + c_first;
  const int packs = static_cast<int>(Sp * Wv);  // fits shared memory, so far below 2^31
  channel_sums<VEC, kBlock>(d, Sp, W, C, C, lanes, xg, dyg, chan_gamma, chan_beta, chan_add, grp_f, grp_f + gpb,
                            red, sums, kXInSmem ? xs : static_cast<S*>(nullptr), dys);
  __syncthreads();  // publishes sums and the slabs

  const double count = static_cast<double>(Sp * cg);
  for (int k = tid; k < gpb; k += T) {  // the group means, channels in order
    double l1 = 0.0, l2 = 0.0;
    for (int c = k * cg; c < (k + 1) * cg; ++c) {
      l1 += chan_gamma[c] * static_cast<double>(sums[c]);
      l2 += chan_gamma[c] * static_cast<double>(sums[W + c]);
    }
    grp_d[2 * gpb + k] = count > 0 ? l1 / count : 0.0;
    grp_d[3 * gpb + k] = count > 0 ? l2 / count : 0.0;
    grp_f[2 * gpb + k] = static_cast<float>(grp_d[2 * gpb + k]);
    grp_f[3 * gpb + k] = static_cast<float>(grp_d[3 * gpb + k]);
  }
  for (int c = tid; c < W; c += T) {
    nc_sums[n * C + c_first + c] = sums[c];
    nc_sums[(N + n) * C + c_first + c] = sums[W + c];
  }
  __syncthreads();  // publishes m1, m2
  if (dadd_nc)
    for (int c = tid; c < W; c += T) {
      const int k = c / cg;
      dadd_nc[n * C + c_first + c] = static_cast<float>(
          grp_d[gpb + k] * (chan_gamma[c] * static_cast<double>(sums[c]) - static_cast<double>(Sp) * grp_d[2 * gpb + k] -
                            grp_d[3 * gpb + k] * static_cast<double>(sums[2 * W + c])));
    }
  S* dxg = dx + n * Sp * C + c_first;
  PackWalk wo(tid, T, Wv);
  DIFFUSE_UNROLL_BY(4)
  for (int e = tid; e < packs; e += T, wo.next()) {
    const int64_t r = wo.r;
    const int cv = wo.cv, k = cv * VEC / cg;
    const Pack<VEC> xp = kXInSmem ? load_pack<VEC>(xs + static_cast<int64_t>(e) * VEC)
                                  : load_pack<VEC>(xg + r * C + cv * VEC);
    Pack<VEC> gp = load_pack<VEC>(dys + static_cast<int64_t>(e) * VEC);
    dx_pack(d.silu, cv, xp, chan_add, chan_gamma, chan_beta, grp_f[k], grp_f[gpb + k], grp_f[2 * gpb + k],
            grp_f[3 * gpb + k], gp);
    store_pack<VEC>(dxg + r * C + cv * VEC, gp);
  }
}

// Grid (chunks, G, N), kThreads. Totals the chunk partials per channel (double, chunk order),
// m1 = mean over the group of dŷ·γ, m2 = mean of dŷ·γ·x̂, then for the chunk's rows
// dx = rstd · (dŷ·γ − m1 − x̂·m2). Chunk 0 writes nc_sums [2, N, C] (Σ dŷ, Σ dŷ·x̂ per (n, c))
// and dadd_nc = Σ_s dx = rstd · (γ·Σdŷ − S·m1 − m2·Σx̂). Dynamic shared memory: 3 · C/G floats.
template <int VEC, typename S>
__global__ void __launch_bounds__(kThreads)
    gn_backward_apply(GroupNormDesc d, int64_t chunk_rows, const S* __restrict__ x,
                      const float* __restrict__ add_nc, const float* __restrict__ gamma,
                      const float* __restrict__ beta, const double* __restrict__ mean_in,
                      const double* __restrict__ rstd_in, const S* __restrict__ dy,
                      const float* __restrict__ partial, S* __restrict__ dx, float* __restrict__ nc_sums,
                      float* __restrict__ dadd_nc) {
  DIFFUSE_SHARED(double, red, kMaxWarps);
  const int64_t N = d.n, C = d.channels, Sp = d.spatial, G = d.groups;
  const int cg = static_cast<int>(C / G), cgv = cg / VEC;
  const ChunkBlock at = second_pass_block(chunk_rows, Sp, cg);
  const int64_t k = at.k, g = at.g, n = at.n, chunks = at.chunks, s0 = at.s0, rows = at.rows;
  float *chan_add = at.chan_add, *chan_gamma = at.chan_gamma, *chan_beta = at.chan_beta;
  const int tid = threadIdx.x, T = blockDim.x;
  const double mean_d = mean_in[n * G + g], rstd_d = rstd_in[n * G + g];
  const float* pg = partial + (n * G + g) * chunks * 3 * cg;

  double l1 = 0.0, l2 = 0.0;
  for (int c = tid; c < cg; c += T) {
    const int64_t gc = g * cg + c;
    const float ga = gamma[gc];
    chan_add[c] = add_nc ? add_nc[n * C + gc] : 0.0f;
    chan_gamma[c] = ga;
    chan_beta[c] = beta[gc];
    double sdy = 0.0, sdyx = 0.0;
    for (int64_t q = 0; q < chunks; ++q) {
      sdy += pg[(q * 3 + 0) * cg + c];
      sdyx += pg[(q * 3 + 1) * cg + c];
    }
    l1 += ga * sdy;
    l2 += ga * sdyx;
    if (k == 0) {
      nc_sums[n * C + gc] = static_cast<float>(sdy);
      nc_sums[(N + n) * C + gc] = static_cast<float>(sdyx);
    }
  }
  const double count = static_cast<double>(Sp * cg);
  const double s1 = block_sum_to_all(l1, red), s2 = block_sum_to_all(l2, red);  // their barriers publish chan_*
  const double m1_d = count > 0 ? s1 / count : 0.0, m2_d = count > 0 ? s2 / count : 0.0;
  if (k == 0 && dadd_nc) {
    for (int c = tid; c < cg; c += T) {
      double sdy = 0.0, sx = 0.0;
      for (int64_t q = 0; q < chunks; ++q) {
        sdy += pg[(q * 3 + 0) * cg + c];
        sx += pg[(q * 3 + 2) * cg + c];
      }
      dadd_nc[n * C + g * cg + c] =
          static_cast<float>(rstd_d * (chan_gamma[c] * sdy - static_cast<double>(Sp) * m1_d - m2_d * sx));
    }
  }
  const float mean = static_cast<float>(mean_d), rstd = static_cast<float>(rstd_d);
  const float m1 = static_cast<float>(m1_d), m2 = static_cast<float>(m2_d);
  const S* xg = x + (n * Sp + s0) * C + g * cg;
  const S* dyg = dy + (n * Sp + s0) * C + g * cg;
  S* dxg = dx + (n * Sp + s0) * C + g * cg;
  PackWalk w(tid, T, cgv);
  DIFFUSE_UNROLL_BY(4)
  for (int64_t e = tid; e < rows * cgv; e += T, w.next()) {
    const int64_t r = w.r;
    const int cv = w.cv;
    const Pack<VEC> xp = load_pack<VEC>(xg + r * C + cv * VEC);
    Pack<VEC> gp = load_pack<VEC>(dyg + r * C + cv * VEC);
    dx_pack(d.silu, cv, xp, chan_add, chan_gamma, chan_beta, mean, rstd, m1, m2, gp);
    store_pack<VEC>(dxg + r * C + cv * VEC, gp);
  }
}

// dβ = Σ_n Σdŷ, dγ = Σ_n Σdŷ·x̂ per channel, from the per-(n, c) sums [2, N, C]. Grid ⌈C / 32⌉,
// kThreads: lane l of warp w takes channel 32·blockIdx.x + l over the images n ≡ w (mod 8), in
// order, four images' loads in flight; then warp 0 adds the 8 partials in warp order. A fixed
// order (deterministic), and N / 8 loads a thread instead of N: at [128, ·, 256] one thread a
// channel waited out 128 L2 round trips in a row (~20 µs); now 8 blocks of 16 loads a thread.
constexpr int kParamSlices = kThreads / 32;
__global__ void __launch_bounds__(kThreads)
    gn_backward_params(int64_t N, int64_t C, const float* __restrict__ nc_sums, float* __restrict__ dgamma,
                       float* __restrict__ dbeta) {
  DIFFUSE_SHARED_2D(double, part, 2 * kParamSlices, 32);  // [q · slices + slice][lane]
  const int lane = threadIdx.x & 31, slice = threadIdx.x >> 5;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + lane;
  double sb = 0.0, sg = 0.0;
  if (c < C) {
    DIFFUSE_UNROLL_BY(4)
    for (int64_t n = slice; n < N; n += kParamSlices) {
      sb += nc_sums[n * C + c];
      sg += nc_sums[(N + n) * C + c];
    }
  }
  part[slice][lane] = sb;
  part[kParamSlices + slice][lane] = sg;
  __syncthreads();
  if (slice != 0 || c >= C) return;
  sb = 0.0, sg = 0.0;
  for (int w = 0; w < kParamSlices; ++w) {
    sb += part[w][lane];
    sg += part[kParamSlices + w][lane];
  }
  if (dgamma) dgamma[c] = static_cast<float>(sg);
  if (dbeta) dbeta[c] = static_cast<float>(sb);
}

// gn_backward_params over the descriptor's channels (nc_sums null when N = 0: zeros).
void launch_backward_params(const GroupNormDesc& d, const float* nc_sums, float* dgamma, float* dbeta,
                            Stream stream) {
  if (!dgamma && !dbeta) return;
  DIFFUSE_LAUNCH(gn_backward_params, static_cast<unsigned>((d.channels + 31) / 32), kThreads, 0, stream, d.n,
                 d.channels, nc_sums, dgamma, dbeta);
}

// gn_backward_slab over gpb groups a block in blocks of kBlock threads: grid (1, G / gpb, N); x's
// slab in shared memory too, except in the 1024-thread dy-slab block.
template <int VEC, int kBlock, typename S>
void launch_backward_slab(const GroupNormDesc& d, int gpb, const S* x, const float* add_nc, const float* gamma,
                          const float* beta, const double* mean, const double* rstd, const S* dy, S* dx,
                          float* nc_sums, float* dadd_nc, Stream stream) {
  constexpr bool kXInSmem = kBlock != kBigThreads;
  const int lanes = lanes_for(gpb * d.group_size() / VEC, kBlock), red = 3 * VEC * reduce_slots(kBlock, lanes);
  const dim3 runs_images(1, static_cast<unsigned>(d.groups / gpb), static_cast<unsigned>(d.n));
  const size_t smem =
      static_cast<size_t>(backward_slab_smem(d, gpb, VEC, kBlock, kXInSmem ? 2 : 1, static_cast<int64_t>(sizeof(S))));
  DIFFUSE_LAUNCH((gn_backward_slab<VEC, kBlock, kXInSmem, S>), runs_images, kBlock, smem, stream, d, gpb, lanes, red,
                 x, add_nc, gamma, beta, mean, rstd, dy, dx, nc_sums, dadd_nc);
}

template <int VEC, typename S>
void backward_impl(const GroupNormDesc& d, const Plan& p, const S* x, const float* add_nc, const float* gamma,
                   const float* beta, const double* mean, const double* rstd, const S* dy, S* dx,
                   float* dgamma, float* dbeta, float* dadd_nc, void* workspace, Stream stream) {
  const int64_t cg = d.group_size();
  if (p.bwd != BackwardPath::chunked) {
    float* nc_sums = static_cast<float*>(workspace);  // [2, N, C]
    const int64_t packs = d.spatial * (p.gpb * cg / VEC);
    switch (p.bwd == BackwardPath::slabs ? backward_slabs_block(packs) : kBigThreads) {
      case kTinyThreads:
        launch_backward_slab<VEC, kTinyThreads>(d, p.gpb, x, add_nc, gamma, beta, mean, rstd, dy, dx, nc_sums,
                                                dadd_nc, stream);
        break;
      case kSmallThreads:
        launch_backward_slab<VEC, kSmallThreads>(d, p.gpb, x, add_nc, gamma, beta, mean, rstd, dy, dx, nc_sums,
                                                 dadd_nc, stream);
        break;
      case kThreads:
        launch_backward_slab<VEC, kThreads>(d, p.gpb, x, add_nc, gamma, beta, mean, rstd, dy, dx, nc_sums, dadd_nc,
                                            stream);
        break;
      default:
        launch_backward_slab<VEC, kBigThreads>(d, p.gpb, x, add_nc, gamma, beta, mean, rstd, dy, dx, nc_sums,
                                               dadd_nc, stream);
    }
    launch_backward_params(d, nc_sums, dgamma, dbeta, stream);
    return;
  }
  float* partial = static_cast<float*>(workspace);  // [N, G, chunks, 3, cg]
  float* nc_sums = partial + d.n * d.channels * p.chunks * 3;  // [2, N, C]
  const dim3 grid(static_cast<unsigned>(p.chunks), static_cast<unsigned>(d.groups), static_cast<unsigned>(d.n));
  DIFFUSE_LAUNCH((gn_backward_partial<VEC, S>), grid, kThreads, 0, stream, d, p.chunk_rows, lanes_for(cg / VEC), x,
                 add_nc, gamma,
                 beta, mean, rstd, dy, partial);
  DIFFUSE_LAUNCH((gn_backward_apply<VEC, S>), grid, kThreads, static_cast<size_t>(3 * cg) * sizeof(float), stream, d,
                 p.chunk_rows, x, add_nc, gamma, beta, mean, rstd, dy, static_cast<const float*>(partial), dx,
                 nc_sums, dadd_nc);
  launch_backward_params(d, nc_sums, dgamma, dbeta, stream);
}

template <typename S>
void backward_entry(const GroupNormDesc& d, const S* x, const float* add_nc, const float* gamma, const float* beta,
                    const double* mean, const double* rstd, const S* dy, S* dx, float* dgamma, float* dbeta,
                    float* dadd_nc, void* workspace, Stream stream) {
  check_desc(d);
  if (d.channels == 0) return;
  if (d.n == 0) {  // nothing to reduce: the parameter grads are zeros
    launch_backward_params(d, nullptr, dgamma, dbeta, stream);
    return;
  }
  require(gamma && beta && mean && rstd && workspace && (d.spatial == 0 || (x && dy && dx)),
          "group_norm backward: null buffer");
  const int64_t elem = static_cast<int64_t>(sizeof(S));
  if (d.group_size() % 4 == 0 && aligned4(x) && aligned4(dy) && aligned4(dx))
    backward_impl<4>(d, make_plan(d, elem, 4), x, add_nc, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, dadd_nc,
                     workspace, stream);
  else
    backward_impl<1>(d, make_plan(d, elem, 1), x, add_nc, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, dadd_nc,
                     workspace, stream);
}

}  // namespace

size_t group_norm_backward_workspace_bytes(const GroupNormDesc& d) {
  check_desc(d);
  const Plan p = make_plan(d);
  return static_cast<size_t>(d.n * d.channels * (p.bwd != BackwardPath::chunked ? 2 : 3 * p.chunks + 2)) *
         sizeof(float);
}

void group_norm_backward(const GroupNormDesc& d, const float* x, const float* add_nc, const float* gamma,
                         const float* beta, const double* mean, const double* rstd, const float* dy, float* dx,
                         float* dgamma, float* dbeta, float* dadd_nc, void* workspace, Stream stream) {
  backward_entry(d, x, add_nc, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, dadd_nc, workspace, stream);
}

void group_norm_backward(const GroupNormDesc& d, const uint16_t* x, const float* add_nc, const float* gamma,
                         const float* beta, const double* mean, const double* rstd, const uint16_t* dy, uint16_t* dx,
                         float* dgamma, float* dbeta, float* dadd_nc, void* workspace, Stream stream) {
  backward_entry(d, storage::dev(x), add_nc, gamma, beta, mean, rstd, storage::dev(dy), storage::dev(dx), dgamma,
                 dbeta, dadd_nc, workspace, stream);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
