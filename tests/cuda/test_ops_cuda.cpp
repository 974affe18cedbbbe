// The CUDA backend's checks beyond the op table (tests/ops/: every op's f32 forward and backward on
// CUDA against a naive f64 reference, docs/design.md §11): the bf16 variants the ops take on CUDA
// (attention, conv2d, linear: 1e-2 relative to the reference's peak, against the CPU on the same
// rounded inputs) and the clear refusal of the others; linear without the cuBLASLt epilogue; that
// the op table's lowered shared-memory caps reach group_norm's chunked path; attention over a single
// key; the timestep embedding of device timesteps bit for bit; grads accumulated from several uses;
// and AdamW+EMA and grad-norm clipping on CUDA parameters (nn/optim.h). Device allocations are
// NaN-poisoned, so an element an op never writes fails. Without a CUDA device every case says so
// and returns. Under the emulated device (-DDIFFUSE_CUDA=EMULATED) each custom kernel runs thread
// by thread, so the shapes stay small.
#include <catch2/catch.hpp>

#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/attention.h"
#include "kernels/group_norm.h"
#include "nn/autograd.h"
#include "kernels/linear.h"
#include "nn/ops.h"
#include "nn/optim.h"
#include "support/cuda_compare.h"
#include "support/cuda_guard.h"

using namespace diffuse;
using namespace diffuse::test;

namespace {

// N(0, scale²) host f32 values with requires_grad (the inputs an op is differentiated by).
Tensor input(const Shape& shape, uint64_t seed, double scale = 1.0, bool grad = true) {
  Tensor t = Tensor::randn(shape, seed);
  if (scale != 1.0)
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(t.data<float>()[i] * scale);
  if (grad) t.set_requires_grad(true);
  return t;
}

std::string str(const Shape& s) { return shape_str(s); }

}  // namespace

TEST_CASE("ops cuda: attention over a single key gives out = v, dv = dout and (nearly) zero dq, dk",
          "[cuda][ops][attention]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  const Shape s{2, 1, 64};
  Tensor q = Tensor::randn(s, 410).to(Device::cuda).set_requires_grad(true);
  Tensor k = Tensor::randn(s, 411).to(Device::cuda).set_requires_grad(true);
  Tensor v = Tensor::randn(s, 412).to(Device::cuda).set_requires_grad(true);
  const Tensor dout = Tensor::randn(s, 413);
  const Tensor out = ops::attention(q, k, v, 2);
  run_backward(out, dout.to(Device::cuda));
  CHECK(rel_to_peak_error(out, v.detach().to(Device::cpu)) <= 1e-6);
  CHECK(rel_to_peak_error(v.grad(), dout) <= 1e-6);
  // dq = (dp - rowsum(dout∘out))·k/√d: a difference of two equal f32 dot products, O(1e-7)·|k|.
  for (const Tensor& g : {q.grad(), k.grad()}) {
    REQUIRE(g.defined());
    double peak = 0;
    for (double x : g.to_vector()) {
      REQUIRE(std::isfinite(x));
      peak = std::max(peak, std::fabs(x));
    }
    CHECK(peak <= 1e-4);
  }
}

TEST_CASE("ops cuda: bf16 attention against the CPU on the same rounded inputs", "[cuda][ops][attention][bf16]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  using kernels::cuda::AttentionPathChoice;
  struct Case {
    int64_t n, len;
    int heads, d;
    AttentionPathChoice path;
    int64_t gemm_budget = kernels::cuda::kAttentionGemmScratchBudget;
  };
  // Each CUDA path (kernels/attention.h): the flash kernels, the GEMM path in one chunk and in
  // chunks of one image (budget 1 byte), at head dims the flash kernels take and one they do not
  // (48, the GEMM path whatever is forced); lengths off the 16-row tensor-core tile.
  const std::vector<Case> cases = {{2, 100, 2, 32, AttentionPathChoice::flash},
                                   {1, 77, 2, 64, AttentionPathChoice::flash},
                                   {2, 130, 1, 128, AttentionPathChoice::flash},
                                   {2, 256, 4, 32, AttentionPathChoice::flash},
                                   {2, 100, 2, 32, AttentionPathChoice::gemm},
                                   {2, 37, 1, 256, AttentionPathChoice::gemm},
                                   {3, 45, 2, 64, AttentionPathChoice::gemm, 1},
                                   {2, 37, 2, 48, AttentionPathChoice::automatic},
                                   {2, 29, 1, 48, AttentionPathChoice::gemm, 1}};
  uint64_t seed = 500;
  for (const Case& c : cases) {
    INFO("bf16 attention N " << c.n << " L " << c.len << " heads " << c.heads << " d " << c.d << " path "
                             << static_cast<int>(c.path) << " GEMM scratch budget " << c.gemm_budget);
    const kernels::cuda::ScopedAttentionPath path(c.path, c.gemm_budget);
    const Shape s{c.n, c.len, static_cast<int64_t>(c.heads) * c.d};
    // The CPU sees exactly the bf16 values the GPU sees, widened to f32; so does the output grad,
    // which is fed straight into the op's backward (no bf16 loss arithmetic in between).
    std::vector<Tensor> on_cuda, on_cpu;
    for (int i = 0; i < 3; ++i) {
      const Tensor h = Tensor::randn(s, seed++).to(DType::bf16);
      on_cuda.push_back(h.to(Device::cuda).set_requires_grad(true));
      on_cpu.push_back(h.to(DType::f32).set_requires_grad(true));
    }
    const Tensor dout = Tensor::randn(s, seed++).to(DType::bf16);
    // Each backward right after its forward: a backward consumes the whole (shared) tape.
    const Tensor want = ops::attention(on_cpu[0], on_cpu[1], on_cpu[2], c.heads);
    run_backward(want, dout.to(DType::f32));
    const Tensor got = ops::attention(on_cuda[0], on_cuda[1], on_cuda[2], c.heads);
    run_backward(got, dout.to(Device::cuda));
    REQUIRE(got.device() == Device::cuda);
    REQUIRE(got.dtype() == DType::bf16);
    CHECK(rel_to_peak_error(got, want) <= 1e-2);
    for (int i = 0; i < 3; ++i) {
      INFO("grad of " << "qkv"[i]);
      REQUIRE(on_cuda[i].grad().defined());
      CHECK(on_cuda[i].grad().dtype() == DType::bf16);
      CHECK(rel_to_peak_error(on_cuda[i].grad(), on_cpu[i].grad()) <= 1e-2);
    }
  }
}

namespace {

// The same parameter list on the CPU and on CUDA: odd sizes, a conv-shaped weight, one large
// enough to be chunked by a multi-tensor launch, and one that never requires grad (EMA copies it).
struct ParamPair {
  std::vector<Tensor> cpu, cuda;
  ParamPair() {
    const std::vector<Shape> shapes = {{3}, {2, 3}, {64, 3, 3, 32}, {1000003}, {129}, {5, 7}};
    uint64_t seed = 800;
    for (const Shape& s : shapes) {
      const Tensor h = Tensor::randn(s, seed++);
      const bool trainable = s != Shape{5, 7};
      cpu.push_back(h.clone());
      cuda.push_back(h.to(Device::cuda));
      cpu.back().set_requires_grad(trainable);
      cuda.back().set_requires_grad(trainable);
    }
  }
  // Fresh grads for step k on both lists; the parameter at `skip` gets none this step.
  void set_grads(int k, size_t skip) {
    for (size_t i = 0; i < cpu.size(); ++i) {
      cpu[i].zero_grad();
      cuda[i].zero_grad();
      if (i == skip || !cpu[i].requires_grad()) continue;
      Tensor g = Tensor::randn(cpu[i].shape(), 900 + 17 * static_cast<uint64_t>(k) + i);
      for (int64_t j = 0; j < g.numel(); ++j) g.data<float>()[j] *= 0.01f * static_cast<float>(i + 1);
      cpu[i].set_grad(g.clone());
      cuda[i].set_grad(g.to(Device::cuda));
    }
  }
};

void check_lists(const char* what, const std::vector<Tensor>& got, const std::vector<Tensor>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO(what << " " << i << " " << want[i].describe());
    CHECK(got[i].device() == Device::cuda);
    CHECK(rel_to_peak_error(got[i], want[i]) <= tol);
  }
}

}  // namespace

TEST_CASE("optim cuda: AdamW with fused EMA over CUDA parameters matches the CPU", "[cuda][optim]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  ParamPair p;
  optim::AdamWOptions o;
  o.lr = 1e-3;
  o.weight_decay = 1e-2;
  optim::EMAOptions e;
  e.decay = 0.999;
  e.use_ema_warmup = true;
  e.power = 0.75;
  optim::AdamW adam_cpu(p.cpu, o), adam_cuda(p.cuda, o);
  optim::EMA ema_cpu(p.cpu, e), ema_cuda(p.cuda, e);
  const std::vector<double> lrs = {1e-3, 1e-3, 5e-4, 2e-3};
  for (int k = 0; k < 4; ++k) {
    INFO("step " << k + 1);
    p.set_grads(k, k == 1 ? 2 : 99);  // the conv weight sits out step 2: its step count lags
    adam_cpu.step(lrs[k], &ema_cpu);
    adam_cuda.step(lrs[k], &ema_cuda);
    // A step moves a parameter by about lr; 1e-6 of the peak (~5) is under 1% of one step.
    check_lists("param", p.cuda, p.cpu, 1e-6);
  }
  CHECK(adam_cuda.param_steps() == adam_cpu.param_steps());
  CHECK(ema_cuda.last_decay() == ema_cpu.last_decay());
  check_lists("exp_avg", adam_cuda.exp_avg(), adam_cpu.exp_avg(), 1e-5);
  check_lists("exp_avg_sq", adam_cuda.exp_avg_sq(), adam_cpu.exp_avg_sq(), 1e-5);
  check_lists("ema shadow", ema_cuda.shadow(), ema_cpu.shadow(), 1e-6);
  // The separate EMA update and copy_to on the device as well.
  ema_cpu.update(p.cpu);
  ema_cuda.update(p.cuda);
  check_lists("ema shadow after update()", ema_cuda.shadow(), ema_cpu.shadow(), 1e-6);
  ema_cpu.copy_to(p.cpu);
  ema_cuda.copy_to(p.cuda);
  check_lists("param after copy_to()", p.cuda, p.cpu, 1e-6);
}

TEST_CASE("optim cuda: grad_norm and clip_grad_norm over CUDA grads match the CPU", "[cuda][optim]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  ParamPair p;
  p.set_grads(0, 1);
  const double norm = optim::grad_norm(p.cpu);
  REQUIRE(norm > 0);
  CHECK(std::fabs(optim::grad_norm(p.cuda) - norm) <= 1e-5 * norm);
  // A ceiling above the norm leaves the grads alone; one below scales every grad by it.
  for (double max_norm : {2 * norm, norm / 3}) {
    INFO("max_norm " << max_norm << " (norm " << norm << ")");
    p.set_grads(0, 1);
    const double got = optim::clip_grad_norm(p.cuda, max_norm), want = optim::clip_grad_norm(p.cpu, max_norm);
    CHECK(std::fabs(got - want) <= 1e-5 * want);
    std::vector<Tensor> g_cuda, g_cpu;
    for (size_t i = 0; i < p.cpu.size(); ++i)
      if (p.cpu[i].grad().defined()) {
        REQUIRE(p.cuda[i].grad().defined());
        g_cuda.push_back(p.cuda[i].grad());
        g_cpu.push_back(p.cpu[i].grad());
      }
    check_lists("clipped grad", g_cuda, g_cpu, 1e-5);
    CHECK(std::fabs(optim::grad_norm(p.cuda) - std::min(norm, max_norm)) <= 1e-4 * norm);
  }
}

namespace {

// Host f32 inputs rounded to bf16: the CUDA op gets the bf16 values, the CPU op the same values
// widened to f32, and both backwards the same bf16-rounded output grad; outputs and the grads of
// every input with requires_grad are compared relative to the reference's peak.
// keep_f32[i]: input i goes to CUDA in f32 (group norm's gamma, beta, add_nc), its values and its
// grad compared with the f32 bound f32_tol instead.
void check_bf16_against_cpu(const std::string& what, const OpFn& f, const std::vector<Tensor>& inputs,
                            double tol = 1e-2, uint64_t dout_seed = 4321, const std::vector<bool>& keep_f32 = {},
                            double f32_tol = 1e-3) {
  INFO(what << " (bf16)");
  auto f32_input = [&](size_t i) { return i < keep_f32.size() && keep_f32[i]; };
  std::vector<Tensor> on_cuda, on_cpu;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined()) {
      on_cuda.emplace_back();
      on_cpu.emplace_back();
      continue;
    }
    const Tensor h = f32_input(i) ? t.detach().clone() : t.detach().to(DType::bf16);
    on_cuda.push_back(h.to(Device::cuda));
    on_cpu.push_back(h.to(DType::f32));
    if (t.requires_grad()) {
      on_cuda.back().set_requires_grad(true);
      on_cpu.back().set_requires_grad(true);
    }
  }
  // Each backward right after its forward: a backward consumes the whole (shared) tape.
  const Tensor want = f(on_cpu);
  const Tensor dout = Tensor::randn(want.shape(), dout_seed).to(DType::bf16);
  if (want.requires_grad()) run_backward(want, dout.to(DType::f32));
  const Tensor got = f(on_cuda);
  if (got.requires_grad()) run_backward(got, dout.to(Device::cuda));
  REQUIRE(got.device() == Device::cuda);
  REQUIRE(got.dtype() == DType::bf16);
  REQUIRE(got.shape() == want.shape());
  const double out_err = rel_to_peak_error(got, want);
  INFO("output error " << out_err);
  CHECK(out_err <= tol);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined() || !inputs[i].requires_grad()) continue;
    INFO("grad of input " << i << " " << inputs[i].describe());
    REQUIRE(on_cuda[i].grad().defined());
    CHECK(on_cuda[i].grad().dtype() == (f32_input(i) ? DType::f32 : DType::bf16));
    CHECK(on_cuda[i].grad().device() == Device::cuda);
    const double err = rel_to_peak_error(on_cuda[i].grad(), on_cpu[i].grad());
    INFO("error " << err);
    CHECK(err <= (f32_input(i) ? f32_tol : tol));
  }
}

// Restores cuBLASLt's use for linear however the test exits.
struct LinearWithoutLt {
  LinearWithoutLt() { kernels::cuda::set_linear_use_lt(false); }
  ~LinearWithoutLt() { kernels::cuda::set_linear_use_lt(true); }
};

}  // namespace

TEST_CASE("ops cuda: conv2d in bf16 through the op and its backward node", "[cuda][ops][conv2d][bf16]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  struct Case {
    Shape x;
    int cout, k;
    ops::Conv2dOptions opt;
    bool bias;
  };
  const std::vector<Case> cases = {{{2, 8, 8, 32}, 16, 3, ops::Conv2dOptions::same(3), true},
                                   {{2, 8, 8, 16}, 16, 3, {2, 0, 1, 0, 1}, true},
                                   {{1, 7, 5, 8}, 8, 3, {2, 1, 1, 1, 1}, false},
                                   {{2, 4, 4, 32}, 8, 1, ops::Conv2dOptions::same(1), true}};
  uint64_t seed = 1000;
  for (const Case& c : cases) {
    const double fan_in = static_cast<double>(c.x.back() * c.k * c.k);
    const Tensor x = input(c.x, seed++), w = input({c.cout, c.k, c.k, c.x.back()}, seed++, 1 / std::sqrt(fan_in));
    const Tensor b = c.bias ? input({c.cout}, seed++, 0.1) : Tensor();
    const ops::Conv2dOptions opt = c.opt;
    check_bf16_against_cpu("conv2d x " + str(c.x) + " k" + std::to_string(c.k) + " stride " + std::to_string(opt.stride),
                           [opt](const std::vector<Tensor>& in) { return ops::conv2d(in[0], in[1], in[2], opt); },
                           {x, w, b});
  }
}

TEST_CASE("ops cuda: linear in bf16 through the op, with and without the cuBLASLt epilogue",
          "[cuda][ops][linear][bf16]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  for (bool lt : {true, false}) {
    std::unique_ptr<LinearWithoutLt> no_lt;
    if (!lt) no_lt = std::make_unique<LinearWithoutLt>();
    uint64_t seed = 1100;
    for (const auto& [x_shape, out, bias] : std::vector<std::tuple<Shape, int, bool>>{
             {{2, 16, 64}, 64, true}, {{2, 32}, 128, true}, {{3, 5, 24}, 8, false}, {{1, 9}, 5, true}}) {
      const int64_t in = x_shape.back();
      const Tensor x = input(x_shape, seed++), w = input({out, in}, seed++, 1 / std::sqrt(static_cast<double>(in)));
      const Tensor b = bias ? input({out}, seed++, 0.1) : Tensor();
      check_bf16_against_cpu(std::string(lt ? "lt " : "gemm ") + "linear x " + str(x_shape) + " out " + std::to_string(out),
                             [](const std::vector<Tensor>& args) { return ops::linear(args[0], args[1], args[2]); }, {x, w, b});
    }
  }
}

TEST_CASE("ops cuda: f32 linear without the cuBLASLt epilogue (GEMM, then the bias add)", "[cuda][ops][linear]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  LinearWithoutLt no_lt;
  uint64_t seed = 1200;
  for (const auto& [x_shape, out] : std::vector<std::pair<Shape, int>>{{{2, 32}, 128}, {{2, 16, 64}, 64}, {{3, 5, 33}, 7}}) {
    const int64_t in = x_shape.back();
    const Tensor x = input(x_shape, seed++), w = input({out, in}, seed++, 1 / std::sqrt(static_cast<double>(in)));
    check_against_cpu("linear (no Lt) x " + str(x_shape) + " out " + std::to_string(out),
                      [](const std::vector<Tensor>& args) { return ops::linear(args[0], args[1], args[2]); },
                      {x, w, input({out}, seed++, 0.1)});
  }
}

TEST_CASE("ops cuda: the op table's lowered shared-memory caps take group_norm's chunked paths",
          "[cuda][ops][group_norm]") {
  // The op table (tests/ops/rows_group_norm_attention.cpp) runs group_norm's chunked two-pass path,
  // which real activations (e.g. 64x64x128 in a fmnist-small training batch) take, on tiny shapes
  // by lowering GroupNormOptions::cuda_smem_limit_bytes. Its "chunked" rows are only meaningful if
  // each cap makes the op hand the kernels a descriptor that chooses that path: checked here.
  DIFFUSE_CUDA_TEST_GUARD();  // the workspace sizes ask the device for its shared memory
  struct Case {
    Shape x;
    int groups;
    int64_t smem_limit;
  };
  for (const Case& c : std::vector<Case>{{{2, 6, 6, 64}, 16, 512}, {{2, 5, 7, 24}, 8, 256}, {{1, 9, 3, 12}, 4, 128},
                                         {{2, 33, 64}, 32, 96}}) {
    INFO("x " << shape_str(c.x) << " groups " << c.groups << " cap " << c.smem_limit);
    kernels::GroupNormDesc d;  // what the op hands the kernels
    d.n = c.x.front();
    d.channels = c.x.back();
    d.spatial = shape_numel(c.x) / (d.n * d.channels);
    d.groups = c.groups;
    d.smem_limit_bytes = c.smem_limit;
    CHECK(kernels::cuda::group_norm_forward_workspace_bytes(d) > 0);
    // The backward too: the one-read path's workspace is the per-(n, c) sums alone.
    CHECK(kernels::cuda::group_norm_backward_workspace_bytes(d) > 2 * d.n * d.channels * sizeof(float));
  }
}

TEST_CASE("ops cuda: the rule between attention's flash kernels and GEMM path", "[cuda][ops][attention]") {
  namespace kc = kernels::cuda;
  using kc::AttentionPath;
  using kc::AttentionPathChoice;
  auto path = [](int64_t n, int64_t len, int64_t heads, int64_t d) { return kc::attention_device_path({n, len, heads, d}); };
  const kc::ScopedAttentionPath rule(AttentionPathChoice::automatic);
  // Scratch within the budget: the GEMM path (the op table's rows; ddpm-cifar10 and fmnist-small
  // at batch 128: 64 and 256 MiB); past it the flash kernels (a 64×64 map: 4.3 GB); a head dim
  // the flash kernels do not take, or a batch past their grid: the GEMM path at any size.
  CHECK(path(2, 9, 2, 32) == AttentionPath::gemm);
  CHECK(path(128, 256, 1, 256) == AttentionPath::gemm);
  CHECK(path(128, 256, 4, 32) == AttentionPath::gemm);
  CHECK(path(64, 1024, 1, 256) == AttentionPath::gemm);  // exactly 512 MiB
  CHECK(path(65, 1024, 1, 256) == AttentionPath::flash);
  CHECK(path(4, 4096, 8, 64) == AttentionPath::flash);
  CHECK(path(4, 4096, 8, 48) == AttentionPath::gemm);
  CHECK(path(70000, 16, 1, 32) == AttentionPath::gemm);
  {
    const kc::ScopedAttentionPath flash(AttentionPathChoice::flash);
    CHECK(path(2, 9, 2, 32) == AttentionPath::flash);
    CHECK(path(2, 9, 2, 48) == AttentionPath::gemm);
  }
  {
    const kc::ScopedAttentionPath gemm(AttentionPathChoice::gemm);
    CHECK(path(4, 4096, 8, 64) == AttentionPath::gemm);
  }
  {
    const kc::ScopedAttentionPath small(AttentionPathChoice::automatic, 1000);
    CHECK(path(1, 8, 1, 32) == AttentionPath::gemm);   // 512 bytes
    CHECK(path(1, 16, 1, 32) == AttentionPath::flash);  // 2048 bytes
  }
  CHECK(kc::attention_path_setting().choice == AttentionPathChoice::automatic);
  CHECK(kc::attention_path_setting().gemm_scratch_budget == kc::kAttentionGemmScratchBudget);
}

TEST_CASE("ops cuda: bf16 attention of one tensor: q = k = v accumulates the three grads, packed qkv",
          "[cuda][ops][attention][bf16]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  // One tensor used three times: its grad is the sum of three, accumulated in bf16 on the device.
  // And q, k, v side by side in one qkv (the attention block's fused projection), its grad one
  // tensor written part by part. On each CUDA path.
  using kernels::cuda::AttentionPathChoice;
  for (AttentionPathChoice path : {AttentionPathChoice::flash, AttentionPathChoice::gemm}) {
    INFO((path == AttentionPathChoice::flash ? "flash kernels" : "GEMM path"));
    const kernels::cuda::ScopedAttentionPath forced(path);
    check_bf16_against_cpu("self-attention of one tensor",
                           [](const std::vector<Tensor>& in) { return ops::attention(in[0], in[0], in[0], 2); },
                           {input({2, 40, 64}, 1700)});
    check_bf16_against_cpu("packed qkv", [](const std::vector<Tensor>& in) { return ops::attention_packed(in[0], 2); },
                           {input({2, 40, 192}, 1710)});
  }
}

TEST_CASE("ops cuda: a tensor used several times gets the sum of its grads", "[cuda][ops][autograd]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  // x feeds mul twice, silu and a residual add; x, w feed two linears (like the q/k/v projections).
  check_against_cpu("x*x + silu(x) + x",
                    [](const std::vector<Tensor>& in) {
                      const Tensor& x = in[0];
                      return ops::add(ops::add(ops::mul(x, x), ops::silu(x)), x);
                    },
                    {input({2, 3, 4, 5}, 1800)});
  check_against_cpu("linear(x, w) * linear(x, w)",
                    [](const std::vector<Tensor>& in) {
                      return ops::mul(ops::linear(in[0], in[1], in[2]), ops::linear(in[0], in[1], Tensor()));
                    },
                    {input({2, 7, 16}, 1801), input({8, 16}, 1802, 0.25), input({8}, 1803, 0.1)});
}

TEST_CASE("ops cuda: the timestep embedding of CUDA timesteps matches the CPU's", "[cuda][ops][embedding]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  const std::vector<double> t = {0, 1, 17, 500, 999};
  for (DType dt : {DType::f32, DType::i32, DType::i64})
    for (const auto& [dim, flip, shift] : std::vector<std::tuple<int, bool, double>>{{32, true, 0}, {128, false, 1}, {7, true, 0}}) {
      INFO("timesteps " << dtype_name(dt) << " dim " << dim << " flip " << flip << " shift " << shift);
      const Tensor host = Tensor::from(t, {5}, dt);
      const Tensor want = ops::timestep_embedding(host, dim, flip, shift);
      const Tensor got = ops::timestep_embedding(host.to(Device::cuda), dim, flip, shift);
      REQUIRE(got.device() == Device::cuda);
      REQUIRE(got.dtype() == DType::f32);
      REQUIRE(got.shape() == want.shape());
#if DIFFUSE_CUDA_EMULATED
      CHECK(rel_to_peak_error(got, want) == 0);  // the emulated device's kernel runs the host's libm
#else
      // CUDA's expf is within 2 ulp: a frequency 1 ulp off (6e-8 relative) moves sin(t·freq) at
      // t = 999 by up to about 6e-5.
      CHECK(rel_to_peak_error(got, want) < 2e-4);
#endif
    }
}

// The kernels bf16 autocast runs between the GEMM-shaped layers, on bf16 storage, against the CPU
// in f32 on the same bf16-rounded inputs (and the same bf16 output grad). Each computes in f32 from
// its bf16 inputs and rounds each stored value once, so an output or input grad is off by at most
// half a bf16 ulp of itself (8 significant bits: 2^-8 ≈ 3.9e-3 of its value, hence of the peak)
// plus f32 noise: bound 5e-3. A wrong element (a missed add_nc, a lost SiLU, a wrong channel) is
// off by O(0.1) or more. Pure moves (concat, split, upsample) are exact. Group norm's gamma, beta and add_nc stay
// f32 with f32 grads (sums over positions of f32 products of the same inputs): the f32 bound 1e-3.
// Shapes take the four-wide paths (channels % 4 == 0) and the scalar ones (odd sizes).
TEST_CASE("ops cuda: the kernels between bf16 layers take bf16 storage", "[cuda][ops][bf16]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  constexpr double kTol = 5e-3;
  uint64_t seed = 2100;
  for (const Shape& s : std::vector<Shape>{{2, 5, 6, 12}, {3, 7, 5}}) {
    const Tensor a = input(s, seed++), b = input(s, seed++);
    check_bf16_against_cpu("add " + str(s), [](const std::vector<Tensor>& in) { return ops::add(in[0], in[1]); },
                           {a, b}, kTol);
    check_bf16_against_cpu("sub " + str(s), [](const std::vector<Tensor>& in) { return ops::sub(in[0], in[1]); },
                           {a, b}, kTol);
    check_bf16_against_cpu("mul " + str(s), [](const std::vector<Tensor>& in) { return ops::mul(in[0], in[1]); },
                           {a, b}, kTol);
    check_bf16_against_cpu("scale " + str(s), [](const std::vector<Tensor>& in) { return ops::scale(in[0], -0.37); },
                           {a}, kTol);
    check_bf16_against_cpu("silu " + str(s), [](const std::vector<Tensor>& in) { return ops::silu(in[0]); },
                           {input(s, seed++, 3.0)}, kTol);
    check_bf16_against_cpu("dropout " + str(s),
                           [](const std::vector<Tensor>& in) { return ops::dropout(in[0], 0.3, 77, 5); }, {a}, kTol);
  }
  // Broadcast forwards (b a trailing vector; b per (n, c)); b's grad would need an f32 reduction.
  check_bf16_against_cpu("add [2, 3, 4, 8] + [8]",
                         [](const std::vector<Tensor>& in) { return ops::add(in[0], in[1]); },
                         {input({2, 3, 4, 8}, seed++), input({8}, seed++, 1.0, false)}, kTol);
  check_bf16_against_cpu("mul [2, 3, 4, 8] * [2, 1, 1, 8]",
                         [](const std::vector<Tensor>& in) { return ops::mul(in[0], in[1]); },
                         {input({2, 3, 4, 8}, seed++), input({2, 1, 1, 8}, seed++, 1.0, false)}, kTol);
  for (const auto& [sa, sb] : std::vector<std::pair<Shape, Shape>>{{{2, 3, 3, 8}, {2, 3, 3, 4}}, {{2, 3, 5}, {2, 3, 3}}})
    check_bf16_against_cpu("concat " + str(sa) + " " + str(sb),
                           [](const std::vector<Tensor>& in) { return ops::concat_channels(in[0], in[1]); },
                           {input(sa, seed++), input(sb, seed++)}, kTol);
  for (const Shape& s : std::vector<Shape>{{2, 3, 3, 8}, {1, 2, 3, 5}})
    check_bf16_against_cpu("upsample " + str(s),
                           [](const std::vector<Tensor>& in) { return ops::upsample_nearest2x(in[0]); },
                           {input(s, seed++)}, kTol);
  struct Norm {
    Shape x;
    int groups;
    bool silu, add;
    int64_t smem_limit;  // 0: the one-read path; else the chunked one (see the caps test above)
  };
  for (const Norm& c : std::vector<Norm>{{{2, 4, 4, 16}, 4, true, true, 0},
                                         {{2, 6, 6, 64}, 16, true, true, 512},
                                         {{1, 3, 5, 12}, 4, false, false, 0},
                                         {{2, 33, 64}, 32, false, true, 96}}) {
    const int64_t C = c.x.back();
    ops::GroupNormOptions opt;
    opt.groups = c.groups;
    opt.silu = c.silu;
    opt.cuda_smem_limit_bytes = c.smem_limit;
    const bool add = c.add;
    check_bf16_against_cpu(
        "group_norm x " + str(c.x) + " groups " + std::to_string(c.groups) + (c.silu ? " silu" : "") +
            (c.add ? " add_nc" : "") + (c.smem_limit ? " chunked" : ""),
        [opt, add](const std::vector<Tensor>& in) {
          return ops::group_norm(in[0], in[1], in[2], opt, add ? in[3] : Tensor());
        },
        {input(c.x, seed++, 2.0), input({C}, seed++, 0.5), input({C}, seed++, 0.5),
         add ? input({c.x.front(), C}, seed++) : Tensor()},
        kTol, 4321, {false, true, true, true});
  }
}

TEST_CASE("ops cuda: ops without a bf16 CUDA kernel refuse bf16 tensors with one clear error", "[cuda][ops][bf16]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const Tensor a = Tensor::randn({2, 4, 4, 8}, 1900).to(DType::bf16).to(Device::cuda);
  const Tensor c = Tensor::randn({8}, 1901).to(DType::bf16).to(Device::cuda);
  const Tensor c32 = Tensor::randn({8}, 1901).to(Device::cuda);
  const Tensor table = Tensor::randn({5, 8}, 1903).to(DType::bf16).to(Device::cuda);
  const Tensor index = Tensor::from({1, 4}, {2}, DType::i64).to(Device::cuda);
  const auto f32_only = Catch::Contains("f32");
  CHECK_THROWS_WITH(ops::sum(a), f32_only);
  CHECK_THROWS_WITH(ops::mean(a), f32_only);
  CHECK_THROWS_WITH(ops::embedding(table, index), f32_only);
  CHECK_THROWS_WITH(ops::mse_loss(a, a), f32_only);
  // group norm's parameters stay f32 with bf16 activations; bf16 ones are refused.
  CHECK_THROWS_WITH(ops::group_norm(a, c, c, {2, 1e-5, true}), Catch::Contains("bf16 x takes f32 gamma"));
  CHECK_THROWS_WITH(ops::add(a, c32), Catch::Contains("disagree in dtype or device"));
  // A broadcast add's bf16 forward runs, but the grad of its broadcast operand needs the f32-only
  // reduction: the backward says so.
  Tensor x = a.detach(), b = c.detach();
  x.set_requires_grad(true);
  b.set_requires_grad(true);
  const Tensor y = ops::add(x, b);
  CHECK_THROWS_WITH(run_backward(y, Tensor::ones(y.shape(), DType::bf16, Device::cuda)), f32_only);
  clear_tape();
}

TEST_CASE("ops cuda: mixing CPU and CUDA tensors in one op is one clear error", "[cuda][ops]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const Tensor host = Tensor::randn({2, 4, 4, 8}, 2000), dev = host.to(Device::cuda);
  const Tensor w = Tensor::randn({8, 3, 3, 8}, 2001);
  CHECK_THROWS_WITH(ops::add(dev, host), Catch::Contains("disagree in dtype or device"));
  CHECK_THROWS_WITH(ops::conv2d(dev, w, Tensor(), ops::Conv2dOptions::same(3)),
                    Catch::Contains("disagree in dtype or device"));
  CHECK_THROWS_WITH(ops::embedding(Tensor::randn({5, 8}, 2002).to(Device::cuda), Tensor::from({1}, {1}, DType::i64)),
                    Catch::Contains("different devices"));
}
