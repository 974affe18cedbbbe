// The CUDA backend's storage casts, attention, conv2d, linear and optimizer entries (see
// nn/cuda/backend.h); the casts (f32 <-> bf16) are what bf16 autocast runs around these layers.
// Attention takes f32 or bf16 storage and any head dim (the flash kernels or the GEMM path); conv2d and
// linear take f32 or bf16 through cuDNN and cuBLAS/cuBLASLt. The optimizer entries upload their
// host-built entry list as one multi-tensor table (kept and reused while the list recurs) and run
// ONE launch over every tensor.
#include <cstring>
#include <memory>
#include <type_traits>

#include "nn/cuda/backend.h"
#include "nn/cuda/caching_allocator.h"
#include "nn/device_context.h"
#include "nn/device_graph.h"

namespace diffuse::dispatch {

namespace k = diffuse::kernels;
namespace dev = diffuse::kernels::cuda;

namespace {

// A multi-tensor table in device memory: the entries, then first_chunk, uploaded in one copy. The
// tensor owns the memory; dropping it right after the launch is safe because all work is ordered
// on current_stream().
template <typename Entry>
struct DeviceTable {
  static_assert(std::is_trivially_copyable_v<Entry> && alignof(Entry) <= alignof(int64_t));
  Tensor storage;
  k::MultiTensorTable<Entry> table;

  explicit DeviceTable(const std::vector<Entry>& entries) {
    const int64_t count = static_cast<int64_t>(entries.size());
    const std::vector<int64_t> first = k::chunk_offsets(entries.data(), count);
    const size_t entry_bytes = entries.size() * sizeof(Entry), entry_words = (entry_bytes + 7) / 8;
    Tensor host = Tensor::empty({static_cast<int64_t>(entry_words + first.size())}, DType::i64, Device::cpu);
    int64_t* h = host.data<int64_t>();
    if (entry_bytes) std::memcpy(h, entries.data(), entry_bytes);
    std::memcpy(h + entry_words, first.data(), first.size() * sizeof(int64_t));
    storage = host.to(Device::cuda);
    const int64_t* d = storage.data<int64_t>();
    table.entries = reinterpret_cast<const Entry*>(d);
    table.first_chunk = d + entry_words;
    table.count = count;
    table.chunks = first.back();
  }
};

// The device tables of the latest distinct entry lists, by content: a list seen again (the
// training step's, whose grads live in buffers it keeps) is served without an upload, which is
// what lets the optimizer run inside a CUDA graph capture (an upload waits for the stream and is
// refused there). Kept per entry type, for this thread, the oldest replaced first — except a table
// a capture used: a graph's replays read it, so it stays for the process. Only under
// KeepDeviceTables or a capture (with_table): other callers' tables would pile up here, one per
// new set of grad addresses, and a second step would allocate.
template <typename Entry>
const k::MultiTensorTable<Entry>& cached_table(const std::vector<Entry>& entries) {
  struct Cached {
    std::vector<unsigned char> bytes;
    std::unique_ptr<DeviceTable<Entry>> table;
    bool captured = false;
  };
  constexpr size_t kKept = 8;
  thread_local std::vector<Cached> cache;
  const auto* first = reinterpret_cast<const unsigned char*>(entries.data());
  const size_t n = entries.size() * sizeof(Entry);
  for (Cached& c : cache)
    if (c.bytes.size() == n && (n == 0 || std::memcmp(c.bytes.data(), first, n) == 0)) {
      c.captured = c.captured || device_capture_active();
      return c.table->table;
    }
  size_t evictable = 0;
  for (const Cached& c : cache) evictable += c.captured ? 0 : 1;
  if (evictable >= kKept)
    for (auto it = cache.begin(); it != cache.end(); ++it)
      if (!it->captured) {
        cache.erase(it);
        break;
      }
  cache.push_back({std::vector<unsigned char>(first, first + n), std::make_unique<DeviceTable<Entry>>(entries)});
  return cache.back().table->table;
}

// Runs launch(table) with the device table of `entries`: the kept one under KeepDeviceTables or
// during a capture, else one uploaded for this launch and dropped after it (stream-ordered).
template <typename Entry, typename Launch>
void with_table(const std::vector<Entry>& entries, Launch&& launch) {
  if (device_tables_kept_flag() || device_capture_active()) {
    launch(cached_table(entries));
    return;
  }
  const DeviceTable<Entry> t(entries);
  launch(t.table);
}

k::DenseType dense_type(const Tensor& t) { return t.dtype() == DType::bf16 ? k::DenseType::bf16 : k::DenseType::f32; }

void* raw_or_null(const Tensor& t) { return t.defined() ? t.raw() : nullptr; }

[[noreturn]] void f64_on_device(const char* op) {
  throw Error(std::string(op) + ": CUDA parameters must be f32, got f64");
}

}  // namespace

// ---- storage casts (ops::cast) ----

void CudaBackend::cast(const Tensor& x, const Tensor& out) const {
  if (x.dtype() == DType::f32 && out.dtype() == DType::bf16)
    dev::cast_f32_to_bf16(x.numel(), x.data<float>(), out.data<uint16_t>(), current_stream());
  else if (x.dtype() == DType::bf16 && out.dtype() == DType::f32)
    dev::cast_bf16_to_f32(x.numel(), x.data<uint16_t>(), out.data<float>(), current_stream());
  else
    throw Error("cast: the CUDA path converts between f32 and bf16, not " + x.describe() + " to " +
                dtype_name(out.dtype()));
}

// ---- attention ----

// The path is kernels/attention.h's rule (dev::attention_device_path), asked by each pass.
void CudaBackend::attention_forward(const k::AttentionDesc& d, const Tensor& q, const Tensor& kt, const Tensor& v,
                                    const Tensor& out, const Tensor& lse) const {
  if (dev::attention_device_path(d) == dev::AttentionPath::gemm) {
    const size_t bytes = dtype_size(q.dtype());
    dev::attention_gemm_forward(d, dense_type(q), q.raw(), k::attention_part(d, kt.raw(), 1, bytes),
                                k::attention_part(d, v.raw(), 2, bytes), out.raw(), data_or_null<float>(lse),
                                diffuse::cuda::device_memory(), current_stream());
    return;
  }
  with_storage_type(q, [&](auto t) {
    using T = decltype(t);
    dev::attention_forward(d, q.data<T>(), k::attention_part(d, kt.data<T>(), 1), k::attention_part(d, v.data<T>(), 2),
                           out.data<T>(), data_or_null<float>(lse), current_stream());
  });
}

void CudaBackend::attention_backward(const k::AttentionDesc& d, const Tensor& q, const Tensor& kt, const Tensor& v,
                                     const Tensor& out, const Tensor& lse, const Tensor& dout, const Tensor& dq,
                                     const Tensor& dk, const Tensor& dv) const {
  if (dev::attention_device_path(d) == dev::AttentionPath::gemm) {
    const size_t bytes = dtype_size(q.dtype());
    dev::attention_gemm_backward(d, dense_type(q), q.raw(), k::attention_part(d, kt.raw(), 1, bytes),
                                 k::attention_part(d, v.raw(), 2, bytes), out.raw(), dout.raw(), lse.data<float>(),
                                 raw_or_null(dq), k::attention_part(d, raw_or_null(dk), 1, bytes),
                                 k::attention_part(d, raw_or_null(dv), 2, bytes), diffuse::cuda::device_memory(),
                                 current_stream());
    return;
  }
  // The flash kernels' f32 [N, heads, L] scratch for rowsum(dout ∘ out).
  const Tensor delta = Tensor::empty({d.n, d.heads, d.len}, DType::f32, Device::cuda);
  with_storage_type(q, [&](auto t) {
    using T = decltype(t);
    dev::attention_backward(d, q.data<T>(), k::attention_part(d, kt.data<T>(), 1), k::attention_part(d, v.data<T>(), 2),
                            out.data<T>(), dout.data<T>(), lse.data<float>(), delta.data<float>(), data_or_null<T>(dq),
                            k::attention_part(d, data_or_null<T>(dk), 1), k::attention_part(d, data_or_null<T>(dv), 2),
                            current_stream());
  });
}

// ---- conv2d and linear ----

void CudaBackend::conv2d_forward(const k::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                                 const Tensor& residual, const Tensor& y) const {
  dev::conv2d_forward(d, dense_type(x), x.raw(), w.raw(), raw_or_null(bias), y.raw(), diffuse::cuda::device_memory(),
                      current_stream(), raw_or_null(residual));
}

void CudaBackend::conv2d_backward(const k::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy,
                                  const Tensor& dx, const Tensor& dw, const Tensor& dbias) const {
  dev::conv2d_backward(d, dense_type(x), x.raw(), w.raw(), dy.raw(), raw_or_null(dx), raw_or_null(dw),
                       raw_or_null(dbias), diffuse::cuda::device_memory(), current_stream());
}

void CudaBackend::linear_forward(const k::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                                 const Tensor& residual, const Tensor& y) const {
  dev::linear_forward(d, dense_type(x), x.raw(), w.raw(), raw_or_null(bias), y.raw(), diffuse::cuda::device_memory(),
                      current_stream(), raw_or_null(residual));
}

void CudaBackend::linear_backward(const k::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy,
                                  const Tensor& dx, const Tensor& dw, const Tensor& dbias) const {
  dev::linear_backward(d, dense_type(x), x.raw(), w.raw(), dy.raw(), raw_or_null(dx), raw_or_null(dw),
                       raw_or_null(dbias), diffuse::cuda::device_memory(), current_stream());
}

// ---- optimizer updates ----

void CudaBackend::adamw_ema_step(const k::AdamWHyper& h, const std::vector<k::OptimEntry<float>>& e) const {
  with_table(e, [&](const k::MultiTensorTable<k::OptimEntry<float>>& t) {
    dev::adamw_ema_step(h, t, current_stream());
  });
}

void CudaBackend::adamw_ema_step(const k::AdamWHyper&, const std::vector<k::OptimEntry<double>>&) const {
  f64_on_device("AdamW/EMA");
}

double CudaBackend::sum_of_squares(const std::vector<k::Span<const float>>& spans) const {
  const Tensor out = Tensor::empty({1}, DType::f64, Device::cuda);
  sum_of_squares_into(spans, out);
  return out.item();  // the caller wants the norm on the host: this waits for the stream
}

double CudaBackend::sum_of_squares(const std::vector<k::Span<const double>>&) const { f64_on_device("grad_norm"); }

void CudaBackend::scale_all(const std::vector<k::Span<float>>& spans, double factor) const {
  const DeviceTable<k::Span<float>> t(spans);
  dev::scale_all(t.table, factor, current_stream());
}

void CudaBackend::scale_all(const std::vector<k::Span<double>>&, double) const { f64_on_device("clip_grad_norm"); }

void CudaBackend::sum_of_squares_into(const std::vector<k::Span<const float>>& spans, const Tensor& out) const {
  with_table(spans, [&](const k::MultiTensorTable<k::Span<const float>>& t) {
    const Tensor partials = Tensor::empty({t.chunks}, DType::f64, Device::cuda);
    dev::sum_of_squares(t, t.chunks ? partials.data<double>() : nullptr, out.data<double>(), current_stream());
  });
}

void CudaBackend::train_status(const k::DeviceStepGate& g, const Tensor& step, const Tensor& ring,
                               const Tensor& state) const {
  dev::train_status(g, step.data<int64_t>(), ring.data<double>(), ring.dim(0), state.data<double>(),
                    current_stream());
}

}  // namespace diffuse::dispatch
