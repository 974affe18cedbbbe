// The diffusion-process ops (kernels/noise.h, kernels/denoise_step.h) behind nn's one device
// dispatch, so the engine's trainer and samplers reach every kernel through nn/ops.h alone. Neither
// records a backward node: the noising draw and the sampler update are never differentiated.
#include "kernels/denoise_step.h"
#include "kernels/noise.h"
#include "nn/dispatch.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
using dispatch::backend_for;
namespace k = diffuse::kernels;

namespace {

// An i64 [1] step number on `device`.
void check_step(const char* op, const Tensor& step, Device device) {
  if (!step.defined() || step.dtype() != DType::i64 || step.numel() != 1 || step.device() != device)
    fail(op, "the step must be an i64 [1] on " + std::string(device == Device::cuda ? "cuda" : "cpu") + ", got " +
                 (step.defined() ? step.describe() : std::string("undefined")));
}

}  // namespace

TrainDraws train_draws(const k::TrainDrawDesc& desc, const Tensor& step, const Tensor& tables, const Tensor& labels) {
  const char* op = "train_draws";
  check_defined(op, tables, "tables");
  check_step(op, step, tables.device());
  if (tables.dtype() != DType::f32 || tables.ndim() != 2 || tables.dim(0) != 3 || tables.dim(1) != desc.num_timesteps)
    fail(op, "tables must be f32 [3, " + std::to_string(desc.num_timesteps) + "], got " + tables.describe());
  if (labels.defined() && (labels.dtype() != DType::i64 || labels.numel() != desc.batch || labels.device() != tables.device()))
    fail(op, "labels must be i64 [" + std::to_string(desc.batch) + "] on the tables' device, got " + labels.describe());
  const Device dev = tables.device();
  TrainDraws r{Tensor::empty({desc.batch}, DType::i64, dev), Tensor::empty({3, desc.batch}, DType::f32, dev),
               labels.defined() ? Tensor::empty({desc.batch}, DType::i64, dev) : Tensor()};
  backend_for(op, tables).train_draws(desc, step, tables, labels, r.timesteps, r.coefs, r.labels);
  return r;
}

QSampleOutput q_sample(const k::QSampleDesc& desc_in, const Tensor& x0, const Tensor& sqrt_ab,
                       const Tensor& sqrt_1mab, const Tensor& step) {
  k::QSampleDesc desc = desc_in;
  const char* op = "q_sample";
  check_defined(op, x0, "x0");
  check_defined(op, sqrt_ab, "sqrt_ab");
  check_defined(op, sqrt_1mab, "sqrt_1mab");
  if (x0.dtype() != DType::f32) fail(op, "x0 must be an f32 batch, got " + x0.describe());
  check_same(op, {&x0, &sqrt_ab, &sqrt_1mab});
  if (x0.ndim() < 1 || x0.dim(0) != desc.batch || x0.numel() != desc.batch * desc.per_sample)
    fail(op, "x0 " + x0.describe() + " is not [" + std::to_string(desc.batch) + ", " +
                 std::to_string(desc.per_sample) + " elements]");
  if (sqrt_ab.numel() != desc.batch || sqrt_1mab.numel() != desc.batch)
    fail(op, "one coefficient per sample is needed, got sqrt_ab " + sqrt_ab.describe() + " and sqrt_1mab " +
                 sqrt_1mab.describe());
  if (step.defined()) {
    check_step(op, step, x0.device());
    desc.step = step.data<int64_t>();
  }
  QSampleOutput r{Tensor::empty(x0.shape(), DType::f32, x0.device()), Tensor::empty(x0.shape(), DType::f32, x0.device())};
  backend_for(op, x0).q_sample(desc, x0, sqrt_ab, sqrt_1mab, r.x_t, r.target);
  return r;
}

int64_t denoise_step_desc_words() {
  static_assert(sizeof(k::DenoiseStepDesc) % sizeof(int64_t) == 0, "the descriptor fills whole i64 words");
  return static_cast<int64_t>(sizeof(k::DenoiseStepDesc) / sizeof(int64_t));
}

void denoise_step(const k::DenoiseStepDesc& desc, const Tensor& model_output, const Tensor& x, const Tensor& x0,
                  const Tensor& per_step) {
  const char* op = "denoise_step";
  check_defined(op, model_output, "model_output");
  check_defined(op, x, "x");
  check_defined(op, x0, "x0");
  check_same(op, {&x, &model_output, &x0});
  check_float(op, x);
  if (x.numel() != desc.numel || x0.numel() != desc.numel ||
      model_output.numel() != (desc.guided ? 2 : 1) * desc.numel)
    fail(op, "the descriptor is for " + std::to_string(desc.numel) + " elements" +
                 (desc.guided ? " (guided: a model output of twice that)" : "") + ", got x " + x.describe() +
                 ", x0 " + x0.describe() + ", model_output " + model_output.describe());
  if (per_step.defined() && (per_step.dtype() != DType::i64 || per_step.numel() != denoise_step_desc_words() ||
                            per_step.device() != x.device()))
    fail(op, "per_step " + per_step.describe() + " must be an i64 [" +
                 std::to_string(denoise_step_desc_words()) + "] on x's device");
  backend_for(op, x).denoise_step(desc, model_output, x, x0, per_step);
}

}  // namespace diffuse::ops
