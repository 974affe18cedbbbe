// AdamW, EMA and grad-norm clipping over parameter lists (see nn/optim.h). This file validates
// the lists and builds the per-tensor entries; all arithmetic is in the list's backend (nn/dispatch.h):
// kernels/cpu/optim.cpp or, for CUDA parameters (f32), kernels/cuda/optim.cu, where the entries go
// to the device as one table in one copy and each update is ONE launch over every tensor.
#include "nn/optim.h"

#include <algorithm>
#include <cmath>
#include "kernels/optim.h"
#include "nn/dispatch.h"
#include "nn/op_checks.h"

namespace diffuse::optim {

using ops::detail::fail;
namespace k = diffuse::kernels;

namespace {

// Every parameter defined, all on one device and of one dtype (one kernel call serves them):
// f32 or f64 on the CPU, f32 on CUDA.
void check_params(const char* op, const std::vector<Tensor>& params) {
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    if (!p.defined()) fail(op, "parameter " + std::to_string(i) + " is undefined");
    if (p.device() != params[0].device())
      fail(op, "parameters must share one device: parameter 0 is " + params[0].describe() + ", parameter " +
                   std::to_string(i) + " is " + p.describe());
    if (p.device() == Device::cuda && p.dtype() != DType::f32)
      fail(op, "CUDA parameter " + std::to_string(i) + " must be f32, got " + p.describe());
    if (p.dtype() != DType::f32 && p.dtype() != DType::f64)
      fail(op, "parameter " + std::to_string(i) + " must be f32 or f64, got " + p.describe());
    if (p.dtype() != params[0].dtype())
      fail(op, "parameters must share one dtype: parameter 0 is " + params[0].describe() + ", parameter " +
                   std::to_string(i) + " is " + p.describe());
  }
}

// The parameter's grad, or undefined; a grad that does not match its parameter is an error.
Tensor grad_of(const char* op, const std::vector<Tensor>& params, size_t i) {
  Tensor g = params[i].grad();
  if (g.defined() && (g.shape() != params[i].shape() || g.dtype() != params[i].dtype() ||
                      g.device() != params[i].device()))
    fail(op, "grad " + g.describe() + " does not match parameter " + std::to_string(i) + " " + params[i].describe());
  return g;
}

// Calls fn(T{}) for the list's dtype (float or double); an empty list calls nothing.
template <typename Fn>
void dispatch_list(const std::vector<Tensor>& params, Fn&& fn) {
  if (params.empty()) return;
  if (params[0].dtype() == DType::f32) {
    fn(float{});
  } else {
    fn(double{});
  }
}

// The lists handed to the backend are this thread's, emptied on each use but keeping their
// capacity, so a steady-state update allocates nothing (docs/design.md §4).
template <typename T>
std::vector<T>& reused_list() {
  thread_local std::vector<T> list;
  list.clear();
  return list;
}

}  // namespace

// ---- EMA ---------------------------------------------------------------------------------------

EMA::EMA(const std::vector<Tensor>& params, EMAOptions options) : options_(options) {
  check_params("EMA", params);
  if (!(options.decay >= 0.0 && options.decay <= 1.0) || !(options.min_decay >= 0.0 && options.min_decay <= 1.0))
    fail("EMA", "decay " + std::to_string(options.decay) + " and min_decay " + std::to_string(options.min_decay) +
                    " must lie in [0, 1]");
  if (options.use_ema_warmup && !(options.inv_gamma > 0.0))
    fail("EMA", "inv_gamma must be positive, got " + std::to_string(options.inv_gamma));
  shadow_.reserve(params.size());
  for (const Tensor& p : params) shadow_.push_back(p.detach().clone());
}

double EMA::decay_at(int64_t optimization_step) const { return k::ema_decay_at(options_, optimization_step); }

void EMA::check_matches(const char* op, const std::vector<Tensor>& params) const {
  if (params.size() != shadow_.size())
    fail(op, "the EMA holds " + std::to_string(shadow_.size()) + " tensors but " + std::to_string(params.size()) +
                 " parameters were given");
  for (size_t i = 0; i < params.size(); ++i)
    if (!params[i].defined() || params[i].shape() != shadow_[i].shape() || params[i].dtype() != shadow_[i].dtype() ||
        params[i].device() != shadow_[i].device())
      fail(op, "parameter " + std::to_string(i) + " " + (params[i].defined() ? params[i].describe() : "undefined") +
                   " does not match its EMA shadow " + shadow_[i].describe());
}

double EMA::advance() {
  ++optimization_step_;
  last_decay_ = decay_at(optimization_step_);
  return last_decay_;
}

void EMA::update(const std::vector<Tensor>& params) {
  check_matches("EMA.update", params);
  k::AdamWHyper h;
  h.ema_decay = advance();
  dispatch_list(params, [&](auto t) {
    using T = decltype(t);
    std::vector<k::OptimEntry<T>>& entries = reused_list<k::OptimEntry<T>>();
    for (size_t i = 0; i < params.size(); ++i) {
      if (!params[i].requires_grad()) continue;  // copied below
      k::OptimEntry<T> e;
      e.param = params[i].data<T>();
      e.ema = shadow_[i].data<T>();
      e.n = params[i].numel();
      entries.push_back(e);
    }
    dispatch::backend_for("AdamW/EMA", params[0].device()).adamw_ema_step(h, entries);
  });
  for (size_t i = 0; i < params.size(); ++i)
    if (!params[i].requires_grad()) shadow_[i].copy_from(params[i]);
}

void EMA::copy_to(const std::vector<Tensor>& params) const {
  check_matches("EMA.copy_to", params);
  for (size_t i = 0; i < params.size(); ++i) params[i].detach().copy_from(shadow_[i]);
}

// ---- AdamW -------------------------------------------------------------------------------------

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions options) : options_(options), params_(std::move(params)) {
  check_params("AdamW", params_);
  // torch.optim.AdamW's argument checks.
  if (!(options.lr >= 0.0)) fail("AdamW", "invalid learning rate " + std::to_string(options.lr));
  if (!(options.eps >= 0.0)) fail("AdamW", "invalid eps " + std::to_string(options.eps));
  if (!(options.beta1 >= 0.0 && options.beta1 < 1.0) || !(options.beta2 >= 0.0 && options.beta2 < 1.0))
    fail("AdamW", "betas must lie in [0, 1), got (" + std::to_string(options.beta1) + ", " +
                      std::to_string(options.beta2) + ")");
  if (!(options.weight_decay >= 0.0)) fail("AdamW", "invalid weight_decay " + std::to_string(options.weight_decay));
  for (const Tensor& p : params_) {
    exp_avg_.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
    exp_avg_sq_.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
  }
  param_steps_.assign(params_.size(), 0);
}

void AdamW::step(double lr, EMA* ema) {
  if (!(lr >= 0.0)) fail("AdamW.step", "invalid learning rate " + std::to_string(lr));
  if (ema) ema->check_matches("AdamW.step (fused EMA)", params_);
  std::vector<Tensor>& grads = reused_list<Tensor>();  // all validated before anything changes
  for (size_t i = 0; i < params_.size(); ++i) grads.push_back(grad_of("AdamW.step", params_, i));
  k::AdamWHyper h;
  h.lr = lr;
  h.beta1 = options_.beta1;
  h.beta2 = options_.beta2;
  h.eps = options_.eps;
  h.weight_decay = options_.weight_decay;
  h.ema_decay = ema ? ema->advance() : 0.0;
  dispatch_list(params_, [&](auto t) {
    using T = decltype(t);
    std::vector<k::OptimEntry<T>>& entries = reused_list<k::OptimEntry<T>>();
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor& g = grads[i];
      bool averaged = ema && params_[i].requires_grad();
      if (!g.defined() && !averaged) continue;
      k::OptimEntry<T> e;
      e.param = params_[i].data<T>();
      e.n = params_[i].numel();
      if (g.defined()) {
        int64_t step = ++param_steps_[i];
        e.grad = g.data<T>();
        e.exp_avg = exp_avg_[i].data<T>();
        e.exp_avg_sq = exp_avg_sq_[i].data<T>();
        e.step_size = k::adam_step_size(lr, options_.beta1, step);
        e.bias_correction2_sqrt = k::adam_bias_correction2_sqrt(options_.beta2, step);
      }
      if (averaged) e.ema = ema->shadow_[i].data<T>();
      entries.push_back(e);
    }
    dispatch::backend_for("AdamW/EMA", params_[0].device()).adamw_ema_step(h, entries);
  });
  if (ema)
    for (size_t i = 0; i < params_.size(); ++i)
      if (!params_[i].requires_grad()) ema->shadow_[i].copy_from(params_[i]);
  grads.clear();  // holds no grad past the step
  ++step_count_;
}

void AdamW::step_on_device(const DeviceStep& d, EMA* ema) {
  const char* op = "AdamW.step_on_device";
  if (ema) ema->check_matches("AdamW.step_on_device (fused EMA)", params_);
  if (params_.empty()) return;
  const Device device = params_[0].device();
  auto check = [&](const Tensor& t, DType dtype, int64_t numel, const char* name) {
    if (!t.defined() || t.dtype() != dtype || t.numel() != numel || t.device() != device)
      fail(op, std::string(name) + " must be " + dtype_name(dtype) + " [" + std::to_string(numel) +
                   "] on the parameters' device, got " + (t.defined() ? t.describe() : std::string("undefined")));
  };
  check(d.state, DType::f64, k::kStateWords, "the state");
  check(d.sum_sq, DType::f64, 1, "sum_sq");
  if (d.loss.defined()) check(d.loss, DType::f32, 1, "the loss");
  for (int64_t s : param_steps_)
    if (s != step_count_)
      fail(op, "every parameter must have taken the optimizer's " + std::to_string(step_count_) +
                   " steps (one step count on the device), one has " + std::to_string(s));
  std::vector<Tensor>& grads = reused_list<Tensor>();
  for (size_t i = 0; i < params_.size(); ++i) grads.push_back(grad_of(op, params_, i));
  k::AdamWHyper h;
  h.beta1 = options_.beta1;
  h.beta2 = options_.beta2;
  h.eps = options_.eps;
  h.weight_decay = options_.weight_decay;
  h.gate.state = d.state.data<double>();
  h.gate.sum_sq = d.sum_sq.data<double>();
  h.gate.loss = d.loss.defined() ? d.loss.data<float>() : nullptr;
  h.gate.max_norm = d.max_norm;
  h.gate.loss_gates = d.loss_gates;
  if (ema) h.ema = ema->options();
  dispatch_list(params_, [&](auto t) {
    using T = decltype(t);
    std::vector<k::OptimEntry<T>>& entries = reused_list<k::OptimEntry<T>>();
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor& g = grads[i];
      const bool averaged = ema && params_[i].requires_grad();
      if (!g.defined() && !averaged) continue;
      k::OptimEntry<T> e;
      e.param = params_[i].data<T>();
      e.n = params_[i].numel();
      if (g.defined()) {
        e.grad = g.data<T>();
        e.exp_avg = exp_avg_[i].data<T>();
        e.exp_avg_sq = exp_avg_sq_[i].data<T>();
      }
      if (averaged) e.ema = ema->shadow_[i].data<T>();
      entries.push_back(e);
    }
    dispatch::backend_for("AdamW/EMA", device).adamw_ema_step(h, entries);
  });
  if (ema)
    for (size_t i = 0; i < params_.size(); ++i)
      if (!params_[i].requires_grad()) ema->shadow_[i].copy_from(params_[i]);
  grads.clear();
}

void AdamW::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

void AdamW::set_step_count(int64_t steps) {
  if (steps < 0) fail("AdamW.set_step_count", "negative step count " + std::to_string(steps));
  step_count_ = steps;
  std::fill(param_steps_.begin(), param_steps_.end(), steps);
}

// ---- grad norm ---------------------------------------------------------------------------------

double grad_norm(const std::vector<Tensor>& params) {
  check_params("grad_norm", params);
  double total = 0.0;
  dispatch_list(params, [&](auto t) {
    using T = decltype(t);
    std::vector<k::Span<const T>>& spans = reused_list<k::Span<const T>>();
    for (size_t i = 0; i < params.size(); ++i) {
      Tensor g = grad_of("grad_norm", params, i);
      if (g.defined()) spans.push_back({g.data<T>(), g.numel()});
    }
    total = dispatch::backend_for("grad_norm", params[0].device()).sum_of_squares(spans);
  });
  return std::sqrt(total);
}

void grad_sum_of_squares(const std::vector<Tensor>& params, const Tensor& out) {
  check_params("grad_sum_of_squares", params);
  if (!out.defined() || out.dtype() != DType::f64 || out.numel() != 1 ||
      (!params.empty() && out.device() != params[0].device()))
    fail("grad_sum_of_squares", "out must be an f64 [1] on the parameters' device, got " +
                                    (out.defined() ? out.describe() : std::string("undefined")));
  if (!params.empty() && params[0].dtype() == DType::f64) {  // the CPU's f64 lists: on the host
    const double norm = grad_norm(params);
    out.data<double>()[0] = norm * norm;
    return;
  }
  std::vector<k::Span<const float>>& spans = reused_list<k::Span<const float>>();
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor g = grad_of("grad_sum_of_squares", params, i);
    if (g.defined()) spans.push_back({g.data<float>(), g.numel()});
  }
  dispatch::backend_for("grad_sum_of_squares", out.device()).sum_of_squares_into(spans, out);
}

void record_step(const DeviceStep& d, const Tensor& step, const Tensor& ring) {
  const char* op = "record_step";
  if (!d.state.defined() || !step.defined() || !ring.defined() || ring.dtype() != DType::f64 || ring.ndim() != 2 ||
      ring.dim(1) != k::kStatusWords || step.dtype() != DType::i64 || step.device() != d.state.device() ||
      ring.device() != d.state.device())
    fail(op, "needs the state, an i64 [1] step and an f64 [rows, " + std::to_string(k::kStatusWords) +
                 "] ring on one device");
  k::DeviceStepGate g;
  g.state = d.state.data<double>();
  g.sum_sq = d.sum_sq.defined() ? d.sum_sq.data<double>() : nullptr;
  g.loss = d.loss.defined() ? d.loss.data<float>() : nullptr;
  g.max_norm = d.max_norm;
  g.loss_gates = d.loss_gates;
  dispatch::backend_for(op, d.state.device()).train_status(g, step, ring, d.state);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  if (!(max_norm > 0.0)) fail("clip_grad_norm", "max_norm must be positive, got " + std::to_string(max_norm));
  const double norm = grad_norm(params);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    dispatch_list(params, [&](auto t) {
      using T = decltype(t);
      std::vector<k::Span<T>>& spans = reused_list<k::Span<T>>();
      for (const Tensor& p : params) {
        Tensor g = p.grad();
        if (g.defined()) spans.push_back({g.data<T>(), g.numel()});
      }
      dispatch::backend_for("clip_grad_norm", params[0].device()).scale_all(spans, coef);
    });
  }
  return norm;
}

}  // namespace diffuse::optim
