// The CPU backend of nn/dispatch.h: every entry runs the kernels/cpu twin on host memory, in f32
// or f64 (f64 for the finite-difference checks). Device selection lives in backend_for, also
// here because it is the one piece every build has.
#include "nn/dispatch.h"

#include <cstring>

#include "kernels/bf16.h"
#include "nn/op_profile.h"

namespace diffuse::dispatch {

namespace k = diffuse::kernels;
namespace cpu = diffuse::kernels::cpu;

namespace {

class CpuBackend final : public Backend {
 public:
  void binary(k::BinaryOp op, const k::BroadcastDesc& d, const Tensor& a, const Tensor& b,
              const Tensor& out) const override {
    with_float_type("binary", a, [&](auto t) {
      using T = decltype(t);
      cpu::binary<T>(op, d, a.data<T>(), b.data<T>(), out.data<T>());
    });
  }
  void reduce_to_broadcast(const k::BroadcastDesc& d, const Tensor& g, const Tensor& w,
                           const Tensor& out) const override {
    with_float_type("reduce", g, [&](auto t) {
      using T = decltype(t);
      cpu::reduce_to_broadcast<T>(d, g.data<T>(), data_or_null<T>(w), out.data<T>());
    });
  }
  void scale(double s, const Tensor& x, const Tensor& out) const override {
    with_float_type("scale", x, [&](auto t) {
      using T = decltype(t);
      cpu::scale<T>(x.numel(), static_cast<T>(s), x.data<T>(), out.data<T>());
    });
  }
  void silu_forward(const Tensor& x, const Tensor& y) const override {
    with_float_type("silu", x, [&](auto t) {
      using T = decltype(t);
      cpu::silu_forward<T>(x.numel(), x.data<T>(), y.data<T>());
    });
  }
  void silu_backward(const Tensor& x, const Tensor& dy, const Tensor& dx) const override {
    with_float_type("silu backward", x, [&](auto t) {
      using T = decltype(t);
      cpu::silu_backward<T>(x.numel(), x.data<T>(), dy.data<T>(), dx.data<T>());
    });
  }
  void sum(const Tensor& x, const Tensor& out) const override {
    with_float_type("sum", x, [&](auto t) {
      using T = decltype(t);
      out.data<T>()[0] = cpu::sum<T>(x.numel(), x.data<T>());
    });
  }
  void fill(const Tensor& value, const Tensor& out) const override {
    with_float_type("fill", out, [&](auto t) {
      using T = decltype(t);
      cpu::fill<T>(out.numel(), value.data<T>()[0], out.data<T>());
    });
  }
  // Storage conversion (ops::cast, not a hot path on the CPU): bf16 through float with
  // kernels/bf16.h's rounding, as the CUDA kernels round.
  void cast(const Tensor& x, const Tensor& out) const override {
    const int64_t n = x.numel();
    auto read = [&](int64_t i) -> double {
      switch (x.dtype()) {
        case DType::f32: return x.data<float>()[i];
        case DType::f64: return x.data<double>()[i];
        default: return k::bf16_to_float(x.data<uint16_t>()[i]);
      }
    };
    for (int64_t i = 0; i < n; ++i) {
      const double v = read(i);
      switch (out.dtype()) {
        case DType::f32: out.data<float>()[i] = static_cast<float>(v); break;
        case DType::f64: out.data<double>()[i] = v; break;
        default: out.data<uint16_t>()[i] = k::float_to_bf16(static_cast<float>(v)); break;
      }
    }
  }

  void embedding_forward(const k::EmbeddingDesc& d, const Tensor& table, const Tensor& index,
                         const Tensor& out) const override {
    with_index_type("embedding", index, [&](auto i) {
      using I = decltype(i);
      with_float_type("embedding", table, [&](auto t) {
        using T = decltype(t);
        cpu::embedding_forward<T, I>(d, table.data<T>(), index.data<I>(), out.data<T>());
      });
    });
  }
  void timestep_embedding(const k::TimestepEmbeddingDesc& d, const Tensor& t, const Tensor& out) const override {
    switch (t.dtype()) {
      case DType::f32: cpu::timestep_embedding<float, float>(d, t.data<float>(), out.data<float>()); break;
      case DType::f64: cpu::timestep_embedding<double, double>(d, t.data<double>(), out.data<double>()); break;
      case DType::i32: cpu::timestep_embedding<float, int32_t>(d, t.data<int32_t>(), out.data<float>()); break;
      case DType::i64: cpu::timestep_embedding<float, int64_t>(d, t.data<int64_t>(), out.data<float>()); break;
      default: throw Error("timestep_embedding: unsupported dtype for " + t.describe());
    }
  }
  void embedding_backward(const k::EmbeddingDesc& d, const Tensor& index, const Tensor& dy,
                          const Tensor& dtable) const override {
    with_index_type("embedding backward", index, [&](auto i) {
      using I = decltype(i);
      with_float_type("embedding backward", dy, [&](auto t) {
        using T = decltype(t);
        cpu::embedding_backward<T, I>(d, index.data<I>(), dy.data<T>(), dtable.data<T>());
      });
    });
  }

  void dropout_apply(const k::DropoutDesc& d, const Tensor& x, const Tensor& y) const override {
    with_float_type("dropout", x, [&](auto t) {
      using T = decltype(t);
      cpu::dropout_apply<T>(d, x.data<T>(), y.data<T>());
    });
  }
  void mse_loss(const k::MseDesc& d, double inv_numel, const Tensor& pred, const Tensor& target, const Tensor& weight,
                const Tensor& loss) const override {
    with_float_type("mse_loss", pred, [&](auto t) {
      using T = decltype(t);
      const double total = cpu::mse_weighted_sum<T>(d, pred.data<T>(), target.data<T>(), data_or_null<T>(weight));
      loss.data<T>()[0] = static_cast<T>(total * inv_numel);
    });
  }
  void mse_backward(const k::MseDesc& d, double coef, const Tensor& dloss, const Tensor& pred, const Tensor& target,
                    const Tensor& weight, const Tensor& dpred) const override {
    with_float_type("mse_loss backward", pred, [&](auto t) {
      using T = decltype(t);
      const double c = coef * static_cast<double>(dloss.data<T>()[0]);
      cpu::mse_backward<T>(d, c, pred.data<T>(), target.data<T>(), data_or_null<T>(weight), dpred.data<T>());
    });
  }

  void concat_last(const k::ConcatDesc& d, const Tensor& a, const Tensor& b, const Tensor& out) const override {
    with_float_type("concat_channels", a, [&](auto t) {
      using T = decltype(t);
      cpu::concat_last<T>(d, a.data<T>(), b.data<T>(), out.data<T>());
    });
  }
  void split_last(const k::ConcatDesc& d, const Tensor& g, const Tensor& ga, const Tensor& gb) const override {
    with_float_type("concat_channels backward", g, [&](auto t) {
      using T = decltype(t);
      cpu::split_last<T>(d, g.data<T>(), data_or_null<T>(ga), data_or_null<T>(gb));
    });
  }
  void upsample_nearest2x(const k::Upsample2xDesc& d, const Tensor& x, const Tensor& y) const override {
    with_float_type("upsample_nearest2x", x, [&](auto t) {
      using T = decltype(t);
      cpu::upsample_nearest2x<T>(d, x.data<T>(), y.data<T>());
    });
  }
  void upsample_nearest2x_backward(const k::Upsample2xDesc& d, const Tensor& dy, const Tensor& dx) const override {
    with_float_type("upsample_nearest2x backward", dy, [&](auto t) {
      using T = decltype(t);
      cpu::upsample_nearest2x_backward<T>(d, dy.data<T>(), dx.data<T>());
    });
  }

  void q_sample(const k::QSampleDesc& d, const Tensor& x0, const Tensor& sqrt_ab, const Tensor& sqrt_1mab,
                const Tensor& x_t, const Tensor& target) const override {
    cpu::q_sample(d, x0.data<float>(), sqrt_ab.data<float>(), sqrt_1mab.data<float>(), x_t.data<float>(),
                  target.data<float>());
  }
  void denoise_step(const k::DenoiseStepDesc& d, const Tensor& model_output, const Tensor& x,
                    const Tensor& x0, const Tensor& per_step) const override {
    k::DenoiseStepDesc step = d;
    if (per_step.defined()) {  // host memory here: read it now, keeping d's numel and guided
      std::memcpy(&step, per_step.raw(), sizeof(step));
      step.numel = d.numel;
      step.guided = d.guided;
    }
    with_float_type("denoise_step", x, [&](auto t) {
      using T = decltype(t);
      cpu::denoise_step<T>(step, x.data<T>(), model_output.data<T>(), x0.data<T>(), x.data<T>(), x0.data<T>());
    });
  }

  void group_norm_forward(const k::GroupNormDesc& d, const Tensor& x, const Tensor& add_nc, const Tensor& gamma,
                          const Tensor& beta, const Tensor& y, const Tensor& mean, const Tensor& rstd) const override {
    with_float_type("group_norm", x, [&](auto t) {
      using T = decltype(t);
      cpu::group_norm_forward<T>(d, x.data<T>(), data_or_null<T>(add_nc), gamma.data<T>(), beta.data<T>(),
                                 y.data<T>(), mean.data<double>(), rstd.data<double>());
    });
  }
  void group_norm_backward(const k::GroupNormDesc& d, const Tensor& x, const Tensor& add_nc, const Tensor& gamma,
                           const Tensor& beta, const Tensor& mean, const Tensor& rstd, const Tensor& dy,
                           const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                           const Tensor& dadd_nc) const override {
    with_float_type("group_norm", x, [&](auto t) {
      using T = decltype(t);
      cpu::group_norm_backward<T>(d, x.data<T>(), data_or_null<T>(add_nc), gamma.data<T>(), beta.data<T>(),
                                  mean.data<double>(), rstd.data<double>(), dy.data<T>(), dx.data<T>(),
                                  data_or_null<T>(dgamma), data_or_null<T>(dbeta), data_or_null<T>(dadd_nc));
    });
  }

  bool attention_keeps_lse() const override { return false; }
  void attention_forward(const k::AttentionDesc& d, const Tensor& q, const Tensor& kt, const Tensor& v,
                         const Tensor& out, const Tensor&) const override {
    with_float_type("attention", q, [&](auto t) {
      using T = decltype(t);
      cpu::attention_forward<T>(d, q.data<T>(), k::attention_part(d, kt.data<T>(), 1),
                                k::attention_part(d, v.data<T>(), 2), out.data<T>());
    });
  }
  void attention_backward(const k::AttentionDesc& d, const Tensor& q, const Tensor& kt, const Tensor& v,
                          const Tensor& out, const Tensor&, const Tensor& dout, const Tensor& dq, const Tensor& dk,
                          const Tensor& dv) const override {
    with_float_type("attention", q, [&](auto t) {
      using T = decltype(t);
      cpu::attention_backward<T>(d, q.data<T>(), k::attention_part(d, kt.data<T>(), 1),
                                 k::attention_part(d, v.data<T>(), 2), out.data<T>(), dout.data<T>(),
                                 data_or_null<T>(dq), k::attention_part(d, data_or_null<T>(dk), 1),
                                 k::attention_part(d, data_or_null<T>(dv), 2));
    });
  }

  void conv2d_forward(const k::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                      const Tensor& residual, const Tensor& y) const override {
    with_float_type("conv2d", x, [&](auto t) {
      using T = decltype(t);
      cpu::conv2d_forward<T>(d, x.data<T>(), w.data<T>(), data_or_null<T>(bias), y.data<T>(),
                              data_or_null<T>(residual));
    });
  }
  void conv2d_backward(const k::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx,
                       const Tensor& dw, const Tensor& dbias) const override {
    with_float_type("conv2d", x, [&](auto t) {
      using T = decltype(t);
      cpu::conv2d_backward<T>(d, x.data<T>(), w.data<T>(), dy.data<T>(), data_or_null<T>(dx), data_or_null<T>(dw),
                              data_or_null<T>(dbias));
    });
  }
  void linear_forward(const k::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                      const Tensor& residual, const Tensor& y) const override {
    with_float_type("linear", x, [&](auto t) {
      using T = decltype(t);
      cpu::linear_forward<T>(d, x.data<T>(), w.data<T>(), data_or_null<T>(bias), y.data<T>(),
                              data_or_null<T>(residual));
    });
  }
  void linear_backward(const k::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& dx,
                       const Tensor& dw, const Tensor& dbias) const override {
    with_float_type("linear", x, [&](auto t) {
      using T = decltype(t);
      cpu::linear_backward<T>(d, x.data<T>(), w.data<T>(), dy.data<T>(), data_or_null<T>(dx), data_or_null<T>(dw),
                              data_or_null<T>(dbias));
    });
  }

  void adamw_ema_step(const k::AdamWHyper& h, const std::vector<k::OptimEntry<float>>& e) const override {
    cpu::adamw_ema_step<float>(h, e.data(), static_cast<int64_t>(e.size()));
  }
  void adamw_ema_step(const k::AdamWHyper& h, const std::vector<k::OptimEntry<double>>& e) const override {
    cpu::adamw_ema_step<double>(h, e.data(), static_cast<int64_t>(e.size()));
  }
  double sum_of_squares(const std::vector<k::Span<const float>>& spans) const override {
    return cpu::sum_of_squares<float>(spans.data(), static_cast<int64_t>(spans.size()));
  }
  double sum_of_squares(const std::vector<k::Span<const double>>& spans) const override {
    return cpu::sum_of_squares<double>(spans.data(), static_cast<int64_t>(spans.size()));
  }
  void scale_all(const std::vector<k::Span<float>>& spans, double factor) const override {
    cpu::scale_all<float>(spans.data(), static_cast<int64_t>(spans.size()), factor);
  }
  void scale_all(const std::vector<k::Span<double>>& spans, double factor) const override {
    cpu::scale_all<double>(spans.data(), static_cast<int64_t>(spans.size()), factor);
  }
  void sum_of_squares_into(const std::vector<k::Span<const float>>& spans, const Tensor& out) const override {
    out.data<double>()[0] = cpu::sum_of_squares<float>(spans.data(), static_cast<int64_t>(spans.size()));
  }
  void train_status(const k::DeviceStepGate& g, const Tensor& step, const Tensor& ring,
                    const Tensor& state) const override {
    cpu::train_status(g, step.data<int64_t>(), ring.data<double>(), ring.dim(0), state.data<double>());
  }
  void train_draws(const k::TrainDrawDesc& d, const Tensor& step, const Tensor& tables, const Tensor& labels,
                   const Tensor& timesteps, const Tensor& coefs, const Tensor& labels_out) const override {
    cpu::train_draws(d, draw_buffers(step, tables, labels, timesteps, coefs, labels_out));
  }
};

}  // namespace

BadIndex first_index_out_of_range(const char* op, const Tensor& host_index, int64_t rows) {
  BadIndex bad;
  with_index_type(op, host_index, [&](auto i) {
    using I = decltype(i);
    const I* index = host_index.data<I>();
    bad.position = cpu::first_out_of_range<I>(host_index.numel(), rows, index);
    if (bad.position >= 0) bad.value = static_cast<int64_t>(index[bad.position]);
  });
  return bad;
}

const Backend& cpu_backend() {
  static const CpuBackend backend;
  return backend;
}

const Backend& backend_to_ask(const char* op, Device device) {
  if (device == Device::cpu) return cpu_backend();
  const Backend* cuda = cuda_backend();
  if (!cuda) throw Error(std::string(op) + ": this build has no CUDA backend");
  return *cuda;
}

namespace {

// backend_for while the op profiler records (nn/op_profile.h): out of line, so that the common
// path below stays a load, a branch and a tail call.
[[gnu::noinline, gnu::cold]] const Backend& backend_for_profiled(op_profile::Profiler* p, const char* op,
                                                                  Device device) {
  op_profile::detail::seam_entry(p, op);
  return backend_to_ask(op, device);
}

}  // namespace

const Backend& backend_for(const char* op, Device device) {
  if (op_profile::Profiler* p = op_profile::recording()) [[unlikely]] return backend_for_profiled(p, op, device);
  return backend_to_ask(op, device);
}

const Backend& backend_for(const char* op, const Tensor& t, DeviceDTypes dtypes) {
  const Backend& backend = backend_for(op, t.device());
  if (t.device() == Device::cpu && t.dtype() != DType::f32 && t.dtype() != DType::f64)
    throw Error(std::string(op) + ": unsupported dtype for " + t.describe());
  if (t.device() == Device::cuda && t.dtype() != DType::f32 &&
      !(dtypes == DeviceDTypes::f32_bf16 && t.dtype() == DType::bf16))
    throw Error(std::string(op) + ": the CUDA path takes " + (dtypes == DeviceDTypes::f32 ? "f32" : "f32 or bf16") +
                " tensors, got " + t.describe());
  return backend;
}

}  // namespace diffuse::dispatch
