// The arithmetic behind the emulated cuDNN convolutions, run on the CPU inside queued device work:
// im2col tiles in the caller's workspace and OpenBLAS cblas_sgemm in f32, col2im for backward
// data. bf16 storage is widened to f32 and results are rounded back to bf16 (RNE); f32 inputs
// are rounded to TF32 when the math type allows tensor ops, so TF32 callers see TF32-like error.
//
// Each cuDNN algorithm that is offered maps to one variant of the same im2col GEMM (tile size,
// precomputed offset table, staged zero-padded copy), and every buffer it uses lives in the
// workspace at offsets fixed by plan_algo: the workspace is really used, in full, so a short or
// wrong workspace faults (the emulated device guards allocations) instead of going unnoticed.
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/emulated_device/cudnn_internal.h"
#include "kernels/single_threaded_blas.h"

namespace diffuse::emulated_device::dnn {

namespace {

constexpr size_t kAlign = 256;

size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

float tf32_round(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if ((b & 0x7f800000u) == 0x7f800000u) return f;  // inf, NaN
  b += 0xfffu + ((b >> 13) & 1u);
  b &= ~0x1fffu;
  std::memcpy(&f, &b, 4);
  return f;
}

struct Reader {
  cudnnDataType_t type;
  bool tf32;
  float operator()(const void* p, int64_t i) const {
    float v = type == CUDNN_DATA_FLOAT ? static_cast<const float*>(p)[i]
                                       : kernels::bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    return tf32 ? tf32_round(v) : v;
  }
  // n values at p[i], p[i + stride], ...
  void row(const void* p, int64_t i, int64_t stride, int n, float* dst) const {
    if (type == CUDNN_DATA_FLOAT && stride == 1 && !tf32) {
      std::memcpy(dst, static_cast<const float*>(p) + i, sizeof(float) * n);
      return;
    }
    for (int j = 0; j < n; ++j) dst[j] = (*this)(p, i + j * stride);
  }
};

// out[i] = alpha * v + beta * out[i]; beta == 0 never reads out (it may hold NaN poison).
void store(cudnnDataType_t type, void* out, int64_t i, float alpha, float beta, float v) {
  if (type == CUDNN_DATA_FLOAT) {
    float* o = static_cast<float*>(out) + i;
    *o = beta == 0.0f ? alpha * v : alpha * v + beta * *o;
  } else {
    uint16_t* o = static_cast<uint16_t*>(out) + i;
    const float r = beta == 0.0f ? alpha * v : alpha * v + beta * kernels::bf16_to_float(*o);
    *o = kernels::float_to_bf16(r);
  }
}

// The filter as a row-major [K, R*S*C] f32 matrix with (r, s, c) columns, mirrored for
// CUDNN_CONVOLUTION. Library-internal host scratch, as the real library keeps its own buffers.
std::vector<float> filter_matrix(const ConvGeom& g, const void* w) {
  const Reader rd{g.type, g.tf32};
  std::vector<float> m(size_t(g.K) * g.R * g.S * g.C);
  for (int k = 0; k < g.K; ++k)
    for (int r = 0; r < g.R; ++r)
      for (int s = 0; s < g.S; ++s) {
        const int rr = g.flip ? g.R - 1 - r : r, ss = g.flip ? g.S - 1 - s : s;
        rd.row(w, k * g.ws.n + rr * g.ws.h + ss * g.ws.w, g.ws.c, g.C,
               &m[((size_t(k) * g.R + r) * g.S + s) * g.C]);
      }
  return m;
}

// The source of im2col rows: the caller's tensor, or a staged f32 copy (NHWC, maybe padded).
struct Source {
  const void* base;
  Strides4 st;
  int64_t off_h, off_w;  // added to input coordinates (the padding of a padded copy)
  int64_t H, W;          // bounds checked against
  bool staged;           // f32, already rounded
};

Source stage_input(const AlgoPlan& p, const ConvGeom& g, const void* x, char* ws) {
  if (p.staged == 0) return {x, g.xs, 0, 0, g.H, g.W, false};
  const int64_t ph = p.staged == 2 ? g.pad_h : 0, pw = p.staged == 2 ? g.pad_w : 0;
  const int64_t Hp = g.H + 2 * ph, Wp = g.W + 2 * pw;
  float* xf = reinterpret_cast<float*>(ws + p.off_big2);
  const Strides4 st{Hp * Wp * g.C, 1, Wp * g.C, g.C};
  if (p.staged == 2) std::fill(xf, xf + size_t(g.N) * Hp * Wp * g.C, 0.0f);
  const Reader rd{g.type, g.tf32};
  for (int n = 0; n < g.N; ++n)
    for (int h = 0; h < g.H; ++h)
      for (int w = 0; w < g.W; ++w)
        rd.row(x, n * g.xs.n + h * g.xs.h + w * g.xs.w, g.xs.c, g.C, xf + n * st.n + (h + ph) * st.h + (w + pw) * st.w);
  return {xf, st, ph, pw, Hp, Wp, true};
}

// Element offset of input pixel (n, ih, iw) in `src`, or -1 in the zero padding.
int64_t pixel_offset(const Source& src, int n, int64_t ih, int64_t iw) {
  ih += src.off_h;
  iw += src.off_w;
  if (ih < 0 || iw < 0 || ih >= src.H || iw >= src.W) return -1;
  return n * src.st.n + ih * src.st.h + iw * src.st.w;
}

// Offsets of the R*S input pixels that output pixel m reads.
void pixel_offsets(const ConvGeom& g, const Source& src, int64_t m, int32_t* out) {
  const int n = static_cast<int>(m / (int64_t(g.P) * g.Q));
  const int p = static_cast<int>(m / g.Q % g.P), q = static_cast<int>(m % g.Q);
  for (int r = 0; r < g.R; ++r)
    for (int s = 0; s < g.S; ++s)
      out[r * g.S + s] = static_cast<int32_t>(pixel_offset(src, n, int64_t(p) * g.u - g.pad_h + int64_t(r) * g.dil_h,
                                                           int64_t(q) * g.v - g.pad_w + int64_t(s) * g.dil_w));
}

// col [t, R*S*C] for output pixels [m0, m0 + t).
void im2col(const AlgoPlan& p, const ConvGeom& g, const Source& src, int64_t m0, int64_t t, char* ws) {
  float* col = reinterpret_cast<float*>(ws + p.off_col);
  int32_t* table = reinterpret_cast<int32_t*>(ws + p.off_table);
  const int RS = g.R * g.S;
  if (p.table)
    for (int64_t i = 0; i < t; ++i) pixel_offsets(g, src, m0 + i, table + i * RS);
  const Reader rd{g.type, src.staged ? false : g.tf32};
  const Reader f32{CUDNN_DATA_FLOAT, false};
  std::vector<int32_t> local(p.table ? 0 : RS);
  for (int64_t i = 0; i < t; ++i) {
    const int32_t* offs = table + i * RS;
    if (!p.table) {
      pixel_offsets(g, src, m0 + i, local.data());
      offs = local.data();
    }
    for (int rs = 0; rs < RS; ++rs) {
      float* dst = col + (i * RS + rs) * g.C;
      if (offs[rs] < 0)
        std::fill(dst, dst + g.C, 0.0f);
      else if (src.staged)
        f32.row(src.base, offs[rs], 1, g.C, dst);
      else
        rd.row(src.base, offs[rs], src.st.c, g.C, dst);
    }
  }
}

// rows [t, K] in f32 from y/dy for output pixels [m0, m0 + t).
void load_rows(const AlgoPlan& p, const ConvGeom& g, const void* y, int64_t m0, int64_t t, char* ws) {
  float* rows = reinterpret_cast<float*>(ws + p.off_rows);
  const Reader rd{g.type, g.tf32};
  for (int64_t i = 0; i < t; ++i) {
    const int64_t m = m0 + i;
    const int64_t n = m / (int64_t(g.P) * g.Q), pp = m / g.Q % g.P, q = m % g.Q;
    rd.row(y, n * g.ys.n + pp * g.ys.h + q * g.ys.w, g.ys.c, g.K, rows + i * g.K);
  }
}

void forward(const AlgoPlan& p, const ConvGeom& g, float alpha, float beta, const void* x, const void* w, void* y,
             char* ws) {
  const std::vector<float> wm = filter_matrix(g, w);
  const Source src = stage_input(p, g, x, ws);
  const int64_t M = int64_t(g.N) * g.P * g.Q, Kd = int64_t(g.R) * g.S * g.C;
  const float* col = reinterpret_cast<const float*>(ws + p.off_col);
  float* acc = reinterpret_cast<float*>(ws + p.off_rows);
  for (int64_t m0 = 0; m0 < M; m0 += p.tile) {
    const int64_t t = std::min(p.tile, M - m0);
    im2col(p, g, src, m0, t, ws);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(t), g.K, int(Kd), 1.0f, col, int(Kd), wm.data(), int(Kd),
                0.0f, acc, g.K);
    for (int64_t i = 0; i < t; ++i) {
      const int64_t m = m0 + i, n = m / (int64_t(g.P) * g.Q), pp = m / g.Q % g.P, q = m % g.Q;
      const int64_t base = n * g.ys.n + pp * g.ys.h + q * g.ys.w;
      for (int k = 0; k < g.K; ++k) store(g.type, y, base + k * g.ys.c, alpha, beta, acc[i * g.K + k]);
    }
  }
}

// The tiles' start rows in the order a call accumulates them. On a GPU an algorithm cuDNN reports
// as CUDNN_NON_DETERMINISTIC adds its partial results with atomics, in an order that changes from
// call to call, so two calls on the same inputs may differ in the last bits. The emulation does
// the same: such an algorithm runs its tiles in reverse order on every other call (the sums then
// round differently), so a caller that needs one call's bits again (a CUDA graph replay held to
// the eager step) fails here as it would on a GPU. Deterministic algorithms keep one order.
std::vector<int64_t> tile_order(const AlgoPlan& p, int64_t M) {
  static std::atomic<uint64_t> nondeterministic_calls{0};
  std::vector<int64_t> starts;
  for (int64_t m0 = 0; m0 < M; m0 += p.tile) starts.push_back(m0);
  if (p.determinism == CUDNN_NON_DETERMINISTIC && (nondeterministic_calls.fetch_add(1) & 1))
    std::reverse(starts.begin(), starts.end());
  return starts;
}

void backward_data(const AlgoPlan& p, const ConvGeom& g, float alpha, float beta, const void* w, const void* dy,
                   void* dx, char* ws) {
  const std::vector<float> wm = filter_matrix(g, w);
  // The accumulator is an NHWC f32 image, zero-padded for staged == 2 so col2im needs no bounds.
  const int64_t ph = p.staged == 2 ? g.pad_h : 0, pw = p.staged == 2 ? g.pad_w : 0;
  const int64_t Hp = g.H + 2 * ph, Wp = g.W + 2 * pw;
  float* acc = reinterpret_cast<float*>(ws + p.off_big);
  std::fill(acc, acc + size_t(g.N) * Hp * Wp * g.C, 0.0f);
  const Source dst{acc, {Hp * Wp * g.C, 1, Wp * g.C, g.C}, ph, pw, Hp, Wp, true};
  const int64_t M = int64_t(g.N) * g.P * g.Q, Kd = int64_t(g.R) * g.S * g.C;
  const int RS = g.R * g.S;
  float* col = reinterpret_cast<float*>(ws + p.off_col);
  const float* rows = reinterpret_cast<const float*>(ws + p.off_rows);
  int32_t* table = reinterpret_cast<int32_t*>(ws + p.off_table);
  std::vector<int32_t> local(RS);
  for (const int64_t m0 : tile_order(p, M)) {
    const int64_t t = std::min(p.tile, M - m0);
    load_rows(p, g, dy, m0, t, ws);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(t), int(Kd), g.K, 1.0f, rows, g.K, wm.data(), int(Kd),
                0.0f, col, int(Kd));
    if (p.table)
      for (int64_t i = 0; i < t; ++i) pixel_offsets(g, dst, m0 + i, table + i * RS);
    for (int64_t i = 0; i < t; ++i) {
      const int32_t* offs = table + i * RS;
      if (!p.table) {
        pixel_offsets(g, dst, m0 + i, local.data());
        offs = local.data();
      }
      for (int rs = 0; rs < RS; ++rs) {
        if (offs[rs] < 0) continue;
        const float* c = col + (i * RS + rs) * g.C;
        float* a = acc + offs[rs];
        for (int ci = 0; ci < g.C; ++ci) a[ci] += c[ci];
      }
    }
  }
  for (int n = 0; n < g.N; ++n)
    for (int h = 0; h < g.H; ++h)
      for (int x = 0; x < g.W; ++x) {
        const float* a = acc + n * dst.st.n + (h + ph) * dst.st.h + (x + pw) * dst.st.w;
        const int64_t base = n * g.xs.n + h * g.xs.h + x * g.xs.w;
        for (int c = 0; c < g.C; ++c) store(g.type, dx, base + c * g.xs.c, alpha, beta, a[c]);
      }
}

void backward_filter(const AlgoPlan& p, const ConvGeom& g, float alpha, float beta, const void* x, const void* dy,
                     void* dw, char* ws) {
  const Source src = stage_input(p, g, x, ws);
  const int64_t M = int64_t(g.N) * g.P * g.Q, Kd = int64_t(g.R) * g.S * g.C;
  float* acc = reinterpret_cast<float*>(ws + p.off_big);
  std::fill(acc, acc + size_t(g.K) * Kd, 0.0f);
  const float* col = reinterpret_cast<const float*>(ws + p.off_col);
  const float* rows = reinterpret_cast<const float*>(ws + p.off_rows);
  for (const int64_t m0 : tile_order(p, M)) {
    const int64_t t = std::min(p.tile, M - m0);
    im2col(p, g, src, m0, t, ws);
    load_rows(p, g, dy, m0, t, ws);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.K, int(Kd), int(t), 1.0f, rows, g.K, col, int(Kd), 1.0f,
                acc, int(Kd));
  }
  for (int k = 0; k < g.K; ++k)
    for (int r = 0; r < g.R; ++r)
      for (int s = 0; s < g.S; ++s) {
        const int rr = g.flip ? g.R - 1 - r : r, ss = g.flip ? g.S - 1 - s : s;
        const float* a = acc + k * Kd + (int64_t(r) * g.S + s) * g.C;
        const int64_t base = k * g.ws.n + rr * g.ws.h + ss * g.ws.w;
        for (int c = 0; c < g.C; ++c) store(g.type, dw, base + c * g.ws.c, alpha, beta, a[c]);
      }
}

// The algorithms this emulation offers, per direction: {algo, tile (0: all output pixels),
// offset table, staging, determinism as the real library reports it, only 3x3 stride 1, only
// stride 1}. The others answer CUDNN_STATUS_NOT_SUPPORTED.
struct Offer {
  int algo;
  int64_t tile;
  bool table;
  int staged;
  cudnnDeterminism_t det;
  bool only_3x3_s1;
  bool only_s1;
};

constexpr Offer kFwd[] = {
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, 32, false, 0, CUDNN_DETERMINISTIC, false, false},
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, 256, true, 0, CUDNN_DETERMINISTIC, false, false},
    {CUDNN_CONVOLUTION_FWD_ALGO_GEMM, 0, false, 1, CUDNN_DETERMINISTIC, false, false},
    {CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED, 0, true, 1, CUDNN_DETERMINISTIC, true, false},
    {CUDNN_CONVOLUTION_FWD_ALGO_FFT, 0, false, 2, CUDNN_DETERMINISTIC, false, true},
};
constexpr Offer kBwdData[] = {
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, 32, false, 0, CUDNN_NON_DETERMINISTIC, false, false},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, 256, true, 0, CUDNN_DETERMINISTIC, false, false},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED, 0, true, 0, CUDNN_DETERMINISTIC, true, false},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT, 0, false, 2, CUDNN_DETERMINISTIC, false, true},
};
constexpr Offer kBwdFilter[] = {
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, 32, false, 0, CUDNN_NON_DETERMINISTIC, false, false},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, 256, true, 0, CUDNN_DETERMINISTIC, false, false},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, 1024, false, 1, CUDNN_NON_DETERMINISTIC, false, false},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED, 0, true, 1, CUDNN_DETERMINISTIC, true, false},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT, 0, false, 2, CUDNN_DETERMINISTIC, false, true},
};

template <size_t N>
const Offer* find_offer(const Offer (&offers)[N], int algo) {
  for (const Offer& o : offers)
    if (o.algo == algo) return &o;
  return nullptr;
}

// Buffers of one plan after its header, each starting 256-byte aligned; the size ends exactly at
// the last byte of the last buffer, so the whole workspace asked for is used.
void lay_out(Dir d, const ConvGeom& g, AlgoPlan& p) {
  const size_t Kd = size_t(g.R) * g.S * g.C, RS = size_t(g.R) * g.S;
  const size_t t = static_cast<size_t>(p.tile);
  const size_t Hp = g.H + 2 * size_t(g.pad_h), Wp = g.W + 2 * size_t(g.pad_w);
  const size_t image = size_t(g.N) * (p.staged == 2 ? Hp * Wp : size_t(g.H) * g.W) * g.C * 4;
  size_t end = p.header;
  auto place = [&](size_t bytes) {
    const size_t at = align_up(end);
    if (bytes) end = at + bytes;
    return at;
  };
  p.off_col = place(t * Kd * 4);
  p.off_rows = place(t * g.K * 4);
  p.off_table = place(p.table ? t * RS * 4 : 0);
  p.off_big = place(d == Dir::bwd_data ? image : d == Dir::bwd_filter ? size_t(g.K) * Kd * 4 : 0);
  p.off_big2 = place(d != Dir::bwd_data && p.staged ? image : 0);
  p.bytes = end;
}

AlgoPlan plan_one(Dir d, int algo, const ConvGeom& g, size_t header) {
  AlgoPlan p;
  const Offer* o = d == Dir::fwd ? find_offer(kFwd, algo) : d == Dir::bwd_data ? find_offer(kBwdData, algo)
                                                                                : find_offer(kBwdFilter, algo);
  if (!o) {
    p.why = std::string(algo_name(d, algo)) + " is not offered by the emulated cuDNN";
    return p;
  }
  const bool s1 = g.u == 1 && g.v == 1 && g.dil_h == 1 && g.dil_w == 1;
  if (o->only_3x3_s1 && !(s1 && g.R == 3 && g.S == 3)) {
    p.why = std::string(algo_name(d, algo)) + " runs only 3x3 filters at stride 1 without dilation";
    return p;
  }
  if (o->only_s1 && !s1) {
    p.why = std::string(algo_name(d, algo)) + " runs only at stride 1 without dilation";
    return p;
  }
  const int64_t M = int64_t(g.N) * g.P * g.Q;
  p.supported = true;
  p.tile = o->tile == 0 ? M : std::min<int64_t>(o->tile, M);
  p.table = o->table;
  p.staged = o->staged;
  p.determinism = o->det;
  p.header = header;
  lay_out(d, g, p);
  return p;
}

}  // namespace

int algo_count(Dir d) {
  return d == Dir::fwd ? int(CUDNN_CONVOLUTION_FWD_ALGO_COUNT)
         : d == Dir::bwd_data ? int(CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT)
                              : int(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
}

const char* algo_name(Dir d, int algo) {
  static const char* fwd[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT",
                              "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  static const char* data[] = {"BWD_DATA_ALGO_0", "BWD_DATA_ALGO_1", "BWD_DATA_ALGO_FFT", "BWD_DATA_ALGO_FFT_TILING",
                               "BWD_DATA_ALGO_WINOGRAD", "BWD_DATA_ALGO_WINOGRAD_NONFUSED"};
  static const char* filter[] = {"BWD_FILTER_ALGO_0", "BWD_FILTER_ALGO_1", "BWD_FILTER_ALGO_FFT",
                                 "BWD_FILTER_ALGO_3", "BWD_FILTER_ALGO_WINOGRAD", "BWD_FILTER_ALGO_WINOGRAD_NONFUSED",
                                 "BWD_FILTER_ALGO_FFT_TILING"};
  if (algo < 0 || algo >= algo_count(d)) return "an unknown algorithm";
  return d == Dir::fwd ? fwd[algo] : d == Dir::bwd_data ? data[algo] : filter[algo];
}

// Each supported algorithm gets a header block of 256 bytes per rank in its direction's list
// (where its plan record is written), and sizes still equal to an earlier algorithm's grow by
// further header blocks: the sizes of the algorithms offered for one case are all distinct.
AlgoPlan plan_algo(Dir d, int algo, const ConvGeom& g) {
  std::vector<size_t> earlier;
  for (int a = 0; a < algo_count(d); ++a) {
    size_t header = kAlign * (earlier.size() + 1);
    AlgoPlan p = plan_one(d, a, g, header);
    while (p.supported && std::find(earlier.begin(), earlier.end(), p.bytes) != earlier.end())
      p = plan_one(d, a, g, header += kAlign);
    if (a == algo) return p;
    if (p.supported) earlier.push_back(p.bytes);
  }
  AlgoPlan p;
  p.why = "algorithm " + std::to_string(algo) + " is not a valid enumerant";
  return p;
}

void run_conv(Dir d, int algo, const AlgoPlan& p, const ConvGeom& g, float alpha, float beta, const void* a,
              const void* b, void* out, void* workspace) {
  char* ws = static_cast<char*>(workspace);
  // The plan record fills the header block: direction, algorithm, tile, then zeros.
  std::memset(ws, 0, p.header);
  const int64_t record[4] = {0x64696666, int64_t(d), algo, p.tile};
  std::memcpy(ws, record, sizeof(record));
  kernels::single_threaded_blas();
  switch (d) {
    case Dir::fwd: forward(p, g, alpha, beta, a, b, out, ws); break;
    case Dir::bwd_data: backward_data(p, g, alpha, beta, a, b, out, ws); break;
    case Dir::bwd_filter: backward_filter(p, g, alpha, beta, a, b, out, ws); break;
  }
}

}  // namespace diffuse::emulated_device::dnn
