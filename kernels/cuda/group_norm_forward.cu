// CUDA GroupNorm over NHWC, forward (see kernels/group_norm.h; what it shares with the backward,
// group_norm_backward.cu, is in group_norm_common.cuh), also run by the SIMT emulator.
//
// Forward, the bytes it must move: x read, y written (2·NSC elements) plus the small per-channel
// vectors. One read (the slab as f32 plus per-channel scratch fits the block's shared memory: the
// benchmark's [16, 64x64, 256] f32, 128 KiB, and every ddpm-cifar10 / fmnist-small shape): grid (1,
// G/gpb, N), a block over gpb consecutive groups (1, or as many as fill a 32-byte sector when a
// group's channel run is narrower), 32 threads up to 128 channel packs, 64 up to 512 (small slabs:
// many blocks resident, see kTinyThreads), 1024 from 4096 where the slab takes over half the shared
// memory (a block that has the SM to itself), else 256. It reads x once (threads stride the rows
// with a fixed channel pack each), keeps h = x + add_nc in shared memory, reduces per-channel sums
// and then per group the mean, then the squared deviations from shared memory (an exact two-pass in
// f32, like the CPU's double two-pass), and writes y from shared memory: traffic the minimum.
// Forward, chunked (bigger slabs): grid (chunks, G, N), 256 threads, chunk ≈ 4096 elements. Pass
// 1 keeps its chunk in shared memory for an exact per-chunk (mean, M2); pass 2 merges the chunks'
// partials in double (Chan et al., fixed order) and normalises its chunk (in reverse block order,
// for L2): x read twice.
#include "kernels/cuda/group_norm_common.cuh"

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

// Chunked pass 1. Grid (chunks, G, N), kThreads. Copies rows [k·chunk_rows, +rows) of the (n, g)
// slab, plus add_nc, into shared memory, reduces their exact (mean, M2) and writes them to the
// chunk's partial. Dynamic shared memory: (chunk_rows + 2) · C/G floats.
template <int VEC, typename S>
__global__ void __launch_bounds__(kThreads)
    gn_forward_stats(GroupNormDesc d, int64_t chunk_rows, const S* __restrict__ x,
                     const float* __restrict__ add_nc, float2* __restrict__ partial) {
  DIFFUSE_SHARED(float, red, kMaxWarps);
  const int64_t C = d.channels, Sp = d.spatial, G = d.groups;
  const int cg = static_cast<int>(C / G), cgv = cg / VEC;
  const int64_t k = blockIdx.x, g = blockIdx.y, n = blockIdx.z;
  const int64_t s0 = k * chunk_rows, rows = min64(chunk_rows, Sp - s0);
  const int tid = threadIdx.x, T = blockDim.x;
  float* slab = dynamic_smem<float>();   // [rows, cg]: h = x + add_nc
  float* chan_a = slab + chunk_rows * cg;  // [cg]: add_nc

  for (int c = tid; c < cg; c += T) chan_a[c] = add_nc ? add_nc[n * C + g * cg + c] : 0.0f;
  __syncthreads();
  const S* xg = x + (n * Sp + s0) * C + g * cg;
  const int64_t packs = rows * cgv;
  float local = 0.0f;
  PackWalk w(tid, T, cgv);
  DIFFUSE_UNROLL_BY(4)
  for (int64_t e = tid; e < packs; e += T, w.next()) {
    const int64_t r = w.r;
    const int cv = w.cv;
    Pack<VEC> h = load_pack<VEC>(xg + r * C + cv * VEC);
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) {
      h.v[j] += chan_a[cv * VEC + j];
      local += h.v[j];
    }
    store_pack<VEC>(slab + e * VEC, h);  // row r of the slab starts at r·cg = r·cgv·VEC
  }
  const float count = static_cast<float>(rows * cg);
  const float sum = block_sum_to_all(local, red);
  const float mean = rows > 0 ? sum / count : 0.0f;
  // Each thread revisits the packs it wrote, so no barrier is needed before this pass.
  local = 0.0f;
  DIFFUSE_UNROLL_BY(4)
  for (int64_t e = tid; e < packs; e += T) {
    const Pack<VEC> h = load_pack<VEC>(slab + e * VEC);
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) {
      const float dev = h.v[j] - mean;
      local += dev * dev;
    }
  }
  const float m2 = block_sum_to_all(local, red);
  if (tid == 0) partial[(n * G + g) * gridDim.x + k] = make_float2(mean, m2);
}

// Grid (chunks, G, N), kThreads. Warp 0 merges the chunk partials of (n, g) in double (every
// block of the group computes the same values in the same order); the block normalises its
// chunk, re-reading x. Chunk 0 writes mean/rstd. Dynamic shared memory: 3 · C/G floats.
template <int VEC, typename S>
__global__ void __launch_bounds__(kThreads)
    gn_forward_apply(GroupNormDesc d, int64_t chunk_rows, const S* __restrict__ x,
                     const float* __restrict__ add_nc, const float* __restrict__ gamma,
                     const float* __restrict__ beta, const float2* __restrict__ partial, S* __restrict__ y,
                     double* __restrict__ mean_out, double* __restrict__ rstd_out) {
  DIFFUSE_SHARED(double, stat, 2);
  const int64_t C = d.channels, Sp = d.spatial, G = d.groups;
  const int cg = static_cast<int>(C / G), cgv = cg / VEC;
  const ChunkBlock at = second_pass_block(chunk_rows, Sp, cg);
  const int64_t k = at.k, g = at.g, n = at.n, chunks = at.chunks, s0 = at.s0, rows = at.rows;
  float *chan_add = at.chan_add, *chan_gamma = at.chan_gamma, *chan_beta = at.chan_beta;
  const int tid = threadIdx.x, T = blockDim.x;

  if (tid < 32) {
    const float2* pg = partial + (n * G + g) * chunks;
    const double total = static_cast<double>(Sp * cg);
    double weighted = 0.0;
    for (int64_t q = tid; q < chunks; q += 32)
      weighted += static_cast<double>(min64(chunk_rows, Sp - q * chunk_rows) * cg) * pg[q].x;
    weighted = warp_sum(weighted);
    const double mean = total > 0 ? weighted / total : 0.0;
    double m2 = 0.0;
    for (int64_t q = tid; q < chunks; q += 32) {
      const double nq = static_cast<double>(min64(chunk_rows, Sp - q * chunk_rows) * cg), dm = pg[q].x - mean;
      m2 += pg[q].y + nq * dm * dm;
    }
    m2 = warp_sum(m2);
    if (tid == 0) {
      stat[0] = mean;
      stat[1] = 1.0 / sqrt((total > 0 ? m2 / total : 0.0) + d.eps);
      if (k == 0) {
        mean_out[n * G + g] = stat[0];
        rstd_out[n * G + g] = stat[1];
      }
    }
  }
  for (int c = tid; c < cg; c += T) {
    chan_add[c] = add_nc ? add_nc[n * C + g * cg + c] : 0.0f;
    chan_gamma[c] = gamma[g * cg + c];
    chan_beta[c] = beta[g * cg + c];
  }
  __syncthreads();
  const float mean = static_cast<float>(stat[0]), rstd = static_cast<float>(stat[1]);
  const S* xg = x + (n * Sp + s0) * C + g * cg;
  S* yg = y + (n * Sp + s0) * C + g * cg;
  PackWalk w(tid, T, cgv);
  DIFFUSE_UNROLL_BY(4)
  for (int64_t e = tid; e < rows * cgv; e += T, w.next()) {
    const int64_t r = w.r;
    const int cv = w.cv;
    Pack<VEC> v = load_pack<VEC>(xg + r * C + cv * VEC);
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) {
      const int c = cv * VEC + j;
      const float a = (v.v[j] + chan_add[c] - mean) * rstd * chan_gamma[c] + chan_beta[c];
      v.v[j] = d.silu ? a * sigmoid(a) : a;
    }
    store_pack<VEC>(yg + r * C + cv * VEC, v);
  }
}

// Forward, one read. Grid (1, G / gpb, N), kBlock threads; a block covers gpb consecutive groups
// (W = gpb · C/G channels: as the slab backwards choose them). Pass 1 reads x once (threads stride
// the rows with a fixed channel pack each, `lanes` per row, four rows in flight), keeps h = x +
// add_nc in shared memory as f32 and sums it per channel (reduce_columns); one thread per group
// adds its channels in order for the mean. Pass 2 sums (h − mean)² per channel from shared memory
// the same way (an exact two-pass, like the CPU's double one); rstd in double. Then y from shared
// memory: x read once, y written once. Dynamic shared memory: 4 · gpb + 4 · W + red_floats
// floats (red_floats = VEC · reduce_slots(kBlock, lanes)), then the slab, S · W floats.
template <int VEC, int kBlock, typename S>
__global__ void __launch_bounds__(kBlock, kBigThreads / kBlock)  // 64 registers a thread
    gn_forward_slab(GroupNormDesc d, int gpb, int lanes, int red_floats, const S* __restrict__ x,
                    const float* __restrict__ add_nc, const float* __restrict__ gamma,
                    const float* __restrict__ beta, S* __restrict__ y, double* __restrict__ mean_out,
                    double* __restrict__ rstd_out) {
  const int64_t C = d.channels, Sp = d.spatial, G = d.groups;
  const int cg = static_cast<int>(C / G), W = gpb * cg, Wv = W / VEC;
  const int64_t g0 = static_cast<int64_t>(blockIdx.y) * gpb, n = blockIdx.z, c_first = g0 * cg;
  const int tid = threadIdx.x, T = blockDim.x;
  const int L = lanes, row_groups = kBlock / L, r0 = tid / L;
  float* grp = dynamic_smem<float>();  // [4, gpb]: mean, rstd (f32), two spare rows for alignment
  float* colsum = grp + 4 * gpb;       // [W]: per-channel sums of pass 1, then of pass 2
  float* chan_add = colsum + W;        // [W] each
  float* chan_gamma = chan_add + W;
  float* chan_beta = chan_gamma + W;
  float* red = chan_beta + W;          // [red_floats]
  float* slab = red + red_floats;      // [Sp, W]: h = x + add_nc
  for (int c = tid; c < W; c += T) {
    chan_add[c] = add_nc ? add_nc[n * C + c_first + c] : 0.0f;
    chan_gamma[c] = gamma[c_first + c];
    chan_beta[c] = beta[c_first + c];
  }
  __syncthreads();
  const S* xg = x + n * Sp * C + c_first;
  for (int c0 = 0; c0 < Wv; c0 += L) {  // channel tiles (one unless the run is very wide)
    const int cv = c0 + tid % L;
    float acc[1][VEC];
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) acc[0][j] = 0.0f;
    if (cv < Wv) {
      DIFFUSE_UNROLL_BY(4)
      for (int64_t r = r0; r < Sp; r += row_groups) {
        Pack<VEC> h = load_pack<VEC>(xg + r * C + cv * VEC);
        DIFFUSE_UNROLL
        for (int j = 0; j < VEC; ++j) {
          h.v[j] += chan_add[cv * VEC + j];
          acc[0][j] += h.v[j];
        }
        store_pack<VEC>(slab + r * W + cv * VEC, h);
      }
    }
    reduce_columns<VEC, kBlock, 1>(acc, L, c0, Wv, W, red, colsum);
  }
  __syncthreads();  // publishes colsum and the slab
  const float count = static_cast<float>(Sp * cg);
  for (int k = tid; k < gpb; k += T) {
    float sum = 0.0f;
    for (int c = k * cg; c < (k + 1) * cg; ++c) sum += colsum[c];
    grp[k] = Sp > 0 ? sum / count : 0.0f;
  }
  __syncthreads();  // publishes the means (and every read of colsum is done)
  for (int c0 = 0; c0 < Wv; c0 += L) {
    const int cv = c0 + tid % L;
    float acc[1][VEC];
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) acc[0][j] = 0.0f;
    if (cv < Wv) {
      const float mean = grp[cv * VEC / cg];
      DIFFUSE_UNROLL_BY(4)
      for (int64_t r = r0; r < Sp; r += row_groups) {
        const Pack<VEC> h = load_pack<VEC>(slab + r * W + cv * VEC);
        DIFFUSE_UNROLL
        for (int j = 0; j < VEC; ++j) {
          const float dev = h.v[j] - mean;
          acc[0][j] += dev * dev;
        }
      }
    }
    reduce_columns<VEC, kBlock, 1>(acc, L, c0, Wv, W, red, colsum);
  }
  __syncthreads();
  for (int k = tid; k < gpb; k += T) {
    float m2 = 0.0f;
    for (int c = k * cg; c < (k + 1) * cg; ++c) m2 += colsum[c];
    const double var = Sp > 0 ? static_cast<double>(m2) / static_cast<double>(count) : 0.0;
    const double rstd_d = 1.0 / sqrt(var + d.eps);
    grp[gpb + k] = static_cast<float>(rstd_d);
    mean_out[n * G + g0 + k] = grp[k];
    rstd_out[n * G + g0 + k] = rstd_d;
  }
  __syncthreads();
  S* yg = y + n * Sp * C + c_first;
  const int packs = static_cast<int>(Sp * Wv);  // fits shared memory
  PackWalk wo(tid, T, Wv);
  DIFFUSE_UNROLL_BY(4)
  for (int e = tid; e < packs; e += T, wo.next()) {
    const int64_t r = wo.r;
    const int cv = wo.cv, k = cv * VEC / cg;
    const float mean = grp[k], rstd = grp[gpb + k];
    Pack<VEC> v = load_pack<VEC>(slab + static_cast<int64_t>(e) * VEC);
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) {
      const float a = (v.v[j] - mean) * rstd * chan_gamma[cv * VEC + j] + chan_beta[cv * VEC + j];
      v.v[j] = d.silu ? a * sigmoid(a) : a;
    }
    store_pack<VEC>(yg + r * C + cv * VEC, v);
  }
}

// gn_forward_slab over gpb groups a block in blocks of kBlock threads: grid (1, G / gpb, N).
template <int VEC, int kBlock, typename S>
void launch_forward_slab(const GroupNormDesc& d, int gpb, const S* x, const float* add_nc, const float* gamma,
                         const float* beta, S* y, double* mean, double* rstd, Stream stream) {
  const int lanes = lanes_for(gpb * d.group_size() / VEC, kBlock), red = VEC * reduce_slots(kBlock, lanes);
  const dim3 runs_images(1, static_cast<unsigned>(d.groups / gpb), static_cast<unsigned>(d.n));
  DIFFUSE_LAUNCH((gn_forward_slab<VEC, kBlock, S>), runs_images, kBlock,
                 static_cast<size_t>(forward_slab_smem(d, gpb, VEC)), stream, d, gpb, lanes, red, x, add_nc, gamma,
                 beta, y, mean, rstd);
}

template <int VEC, typename S>
void forward_impl(const GroupNormDesc& d, const Plan& p, const S* x, const float* add_nc, const float* gamma,
                  const float* beta, S* y, double* mean, double* rstd, void* workspace, Stream stream) {
  const int64_t cg = d.group_size();
  if (p.fused) {
    const int gpb = p.fwd_gpb;
    switch (forward_block(d, gpb, d.spatial * (gpb * cg / VEC))) {
      case kTinyThreads:
        launch_forward_slab<VEC, kTinyThreads>(d, gpb, x, add_nc, gamma, beta, y, mean, rstd, stream);
        break;
      case kSmallThreads:
        launch_forward_slab<VEC, kSmallThreads>(d, gpb, x, add_nc, gamma, beta, y, mean, rstd, stream);
        break;
      case kThreads:
        launch_forward_slab<VEC, kThreads>(d, gpb, x, add_nc, gamma, beta, y, mean, rstd, stream);
        break;
      default:
        launch_forward_slab<VEC, kBigThreads>(d, gpb, x, add_nc, gamma, beta, y, mean, rstd, stream);
    }
    return;
  }
  const dim3 grid(static_cast<unsigned>(p.chunks), static_cast<unsigned>(d.groups), static_cast<unsigned>(d.n));
  float2* partial = static_cast<float2*>(workspace);
  DIFFUSE_LAUNCH((gn_forward_stats<VEC, S>), grid, kThreads,
                 static_cast<size_t>((p.chunk_rows + 2) * cg) * sizeof(float), stream, d, p.chunk_rows, x, add_nc,
                 partial);
  DIFFUSE_LAUNCH((gn_forward_apply<VEC, S>), grid, kThreads, static_cast<size_t>(3 * cg) * sizeof(float), stream, d,
                 p.chunk_rows, x, add_nc, gamma, beta, static_cast<const float2*>(partial), y, mean, rstd);
}

template <typename S>
void forward_entry(const GroupNormDesc& d, const S* x, const float* add_nc, const float* gamma, const float* beta,
                   S* y, double* mean, double* rstd, void* workspace, Stream stream) {
  check_desc(d);
  if (d.n == 0 || d.channels == 0) return;
  require(gamma && beta && mean && rstd && (d.spatial == 0 || (x && y)), "group_norm: null buffer");
  const int64_t elem = static_cast<int64_t>(sizeof(S));
  const bool four = d.group_size() % 4 == 0 && aligned4(x) && aligned4(y);
  const Plan p = make_plan(d, elem, four ? 4 : 1);
  require(p.fused || workspace, "group_norm: the chunked forward needs its workspace");
  if (four)
    forward_impl<4>(d, p, x, add_nc, gamma, beta, y, mean, rstd, workspace, stream);
  else
    forward_impl<1>(d, p, x, add_nc, gamma, beta, y, mean, rstd, workspace, stream);
}

}  // namespace

size_t group_norm_forward_workspace_bytes(const GroupNormDesc& d) {
  check_desc(d);
  const Plan p = make_plan(d);
  return p.fused ? 0 : static_cast<size_t>(d.n * d.groups * p.chunks) * 2 * sizeof(float);
}

void group_norm_forward(const GroupNormDesc& d, const float* x, const float* add_nc, const float* gamma,
                        const float* beta, float* y, double* mean, double* rstd, void* workspace, Stream stream) {
  forward_entry(d, x, add_nc, gamma, beta, y, mean, rstd, workspace, stream);
}

void group_norm_forward(const GroupNormDesc& d, const uint16_t* x, const float* add_nc, const float* gamma,
                        const float* beta, uint16_t* y, double* mean, double* rstd, void* workspace, Stream stream) {
  forward_entry(d, storage::dev(x), add_nc, gamma, beta, storage::dev(y), mean, rstd, workspace, stream);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
