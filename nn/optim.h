// Optimizers over a model's parameter list: AdamW (torch.optim.AdamW's arithmetic), the EMA of
// the weights (diffusers' EMAModel schedule), and global grad-norm clipping
// (torch.nn.utils.clip_grad_norm_). Each hands the whole list to one kernel call
// (kernels/optim.h) — the CPU twin of a multi-tensor launch — and AdamW::step can fuse the EMA
// update into that same pass. Parameters are updated in place and must share one dtype.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/optim.h"
#include "nn/tensor.h"

namespace diffuse::optim {

// torch's betas and eps; lr and weight decay are the caller's to choose (the CLI's defaults
// follow diffusers' training scripts).
struct AdamWOptions {
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled: p -= lr * weight_decay * p before the Adam update
};

// diffusers' EMAModel options: the kernels' schedule, one definition (kernels/optim.h).
using EMAOptions = kernels::EmaSchedule;

class AdamW;

// A training step whose optimizer values live in memory of the parameters' device (docs/design.md
// §4), so that the step never waits for the host and can be replayed as one CUDA graph:
//  - state f64 [3]: the step's lr (the caller writes it before each step), then the AdamW and EMA
//    step counts (initialised from the host's, then advanced on the device by record_step);
//  - sum_sq f64 [1]: the grads' Σg² (grad_sum_of_squares writes it); the update scales the grads
//    by min(1, max_norm / (norm + 1e-6)) when max_norm > 0;
//  - loss f32 [1] (optional): with the norm, a non-finite value skips the whole update.
struct DeviceStep {
  Tensor state, sum_sq, loss;
  double max_norm = 0.0;
  bool loss_gates = true;  // false: the loss is recorded but only the norm may skip the update
};
// Σ g² over params' grads (those without one skipped) into out, f64 [1] on their device; no host read.
void grad_sum_of_squares(const std::vector<Tensor>& params, const Tensor& out);
// After AdamW::step_on_device: row (step - 1) mod rows of ring (f64 [rows, 4]: loss, grad norm,
// skipped 0/1, lr) and, unless the step was skipped, state's step counts advance. step: i64 [1].
void record_step(const DeviceStep& d, const Tensor& step, const Tensor& ring);

// Shadow copies of a parameter list, moved towards the parameters after each optimizer step:
// shadow -= (1 - decay) * (shadow - param). Parameters that do not require grad are copied.
class EMA {
 public:
  EMA(const std::vector<Tensor>& params, EMAOptions options = {});

  // diffusers' EMAModel.get_decay: step = optimization_step - update_after_step - 1; 0 when
  // step <= 0, else the warmup or (1+step)/(10+step) rule clamped to [min_decay, decay].
  double decay_at(int64_t optimization_step) const;
  // Like EMAModel.step: advances optimization_step by one, then updates every shadow with
  // decay_at(optimization_step). `params` must be the list the EMA was built from (same shapes).
  void update(const std::vector<Tensor>& params);
  // Writes the shadow weights into params (to sample or save with the averaged weights).
  void copy_to(const std::vector<Tensor>& params) const;

  std::vector<Tensor>& shadow() { return shadow_; }
  const std::vector<Tensor>& shadow() const { return shadow_; }
  const EMAOptions& options() const { return options_; }
  int64_t optimization_step() const { return optimization_step_; }
  void set_optimization_step(int64_t step) { optimization_step_ = step; }  // resuming a checkpoint
  double last_decay() const { return last_decay_; }  // the decay the latest update used

 private:
  friend class AdamW;
  void check_matches(const char* op, const std::vector<Tensor>& params) const;
  double advance();  // optimization_step += 1; returns (and remembers) its decay

  EMAOptions options_;
  std::vector<Tensor> shadow_;
  int64_t optimization_step_ = 0;
  double last_decay_ = 0.0;
};

class AdamW {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions options = {});

  // One update of every parameter that has a grad (the others are skipped and their step counts
  // do not advance, as in PyTorch) at options().lr or the given lr. With ema (built over the same
  // list), the same pass also does ema->update(params()).
  void step() { step(options_.lr); }
  void step(double lr, EMA* ema = nullptr);
  // The same update with every per-step value read from device memory when it runs (DeviceStep):
  // lr, one step count shared by all parameters (so every param_steps() entry must equal
  // step_count()), the EMA decay at the EMA's device-side step. Changes no host state: the caller
  // copies the device's counts back (set_step_count, EMA::set_optimization_step).
  void step_on_device(const DeviceStep& d, EMA* ema = nullptr);
  void zero_grad();  // drops every parameter's grad (PyTorch's set_to_none)

  const AdamWOptions& options() const { return options_; }
  const std::vector<Tensor>& params() const { return params_; }
  int64_t step_count() const { return step_count_; }  // calls of step()
  // Checkpoint state. Restore moments with exp_avg()[i].copy_from(saved) (shapes are checked).
  std::vector<Tensor>& exp_avg() { return exp_avg_; }
  std::vector<Tensor>& exp_avg_sq() { return exp_avg_sq_; }
  std::vector<int64_t>& param_steps() { return param_steps_; }  // PyTorch's state['step'] per parameter
  void set_step_count(int64_t steps);  // sets step_count() and every param_steps() entry

 private:
  AdamWOptions options_;
  std::vector<Tensor> params_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  std::vector<int64_t> param_steps_;
  int64_t step_count_ = 0;
};

// sqrt of the sum of squares of every grad of params (those without a grad are skipped),
// accumulated in double.
double grad_norm(const std::vector<Tensor>& params);
// torch.nn.utils.clip_grad_norm_: when max_norm / (norm + 1e-6) < 1 every grad is scaled by it.
// Returns the norm before clipping (possibly non-finite: the caller decides what that means).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace diffuse::optim
