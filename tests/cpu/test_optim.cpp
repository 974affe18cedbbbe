// The optim family (nn/optim.h): AdamW against torch.optim.AdamW, the EMA against diffusers'
// EMAModel (decay schedule and shadow weights), grad-norm clipping against
// torch.nn.utils.clip_grad_norm_, the fused AdamW+EMA pass, chunking of large tensors, errors.
#include <catch2/catch.hpp>
#include <cmath>

#include "nn/optim.h"
#include "support/gradcheck.h"

using namespace diffuse;
using diffuse::test::max_abs_error;
using diffuse::test::max_rel_error;

namespace {

// The grads of the reference runs: sin(0.7k + 1.3i + salt) * (i + 1) / 2, rounded to f32.
Tensor ref_grad(int k, int n, double salt, const Shape& shape) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(std::sin(0.7 * k + 1.3 * i + salt) * (i + 1) * 0.5);
  return Tensor::from(v, shape);
}

Tensor f32(const std::vector<double>& v, const Shape& shape) { return Tensor::from(v, shape); }

// max |a - b| / |b|: a relative error for values far below 1 (moments, small grads).
double max_ratio_error(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  auto va = a.to_vector(), vb = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::fabs(va[i] - vb[i]) / std::fabs(vb[i]);
    if (!(d <= m)) m = d;  // NaN sticks
  }
  return m;
}

// Printed by this script (torch 1.13, diffusers 0.21.4 whose EMAModel.step/get_decay are those of 0.42):
//   def grad(k, n, salt):
//       return torch.tensor([math.sin(0.7*k + 1.3*i + salt) * (i+1) * 0.5 for i in range(n)],
//                           dtype=torch.float64).float()
//   p0 = torch.nn.Parameter(torch.tensor([0.5, -1.25, 2.0]))
//   p1 = torch.nn.Parameter(torch.tensor([[0.1, -0.2, 0.3], [0.4, -0.5, 0.6]]))
//   p2 = torch.nn.Parameter(torch.tensor([3.0, -3.0]), requires_grad=False)
//   opt = torch.optim.AdamW([p0, p1], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
//   ema = EMAModel([p0, p1, p2], decay=0.9)
//   lrs = [0.1, 0.1, 0.05, 0.1]
//   for k in range(1, 5):
//       for g in opt.param_groups: g["lr"] = lrs[k - 1]
//       p0.grad = grad(k, 3, 0.0)
//       p1.grad = None if k == 2 else grad(k, 6, 0.4).view(2, 3)
//       opt.step()
//       if k == 3:
//           with torch.no_grad(): p2.copy_(torch.tensor([5.0, 7.0]))
//       ema.step([p0, p1, p2])
//   then p0, p1 (after step 1 and 4), opt.state[p]["exp_avg"/"exp_avg_sq"/"step"], ema.shadow_params.
const std::vector<double> kP0Step1 = {0.395000011, -1.33749998, 2.07999992};
const std::vector<double> kP1Step1 = {-0.00100000203, -0.297999978, 0.397000015, 0.495999992, -0.594999969, 0.494000047};
const std::vector<double> kP0 = {0.146095783, -1.41995072, 2.25312138};
const std::vector<double> kP1 = {-0.120548204, -0.246475026, 0.534377396, 0.514045775, -0.709455311, 0.389695108};
const std::vector<double> kM0 = {0.118986271, -0.00392086618, -0.360105276};
const std::vector<double> kV0 = {0.000559886277, 0.00174144586, 0.00493295817};
const std::vector<double> kM1 = {0.0601064302, -0.098107703, -0.259050399, 0.0114269396, 0.439392388, 0.264948279};
const std::vector<double> kV1 = {0.000288470299, 0.00178489939, 0.00304266647, 0.00585065503, 0.0106632588, 0.010606694};
const std::vector<double> kEma0 = {0.180647612, -1.42228818, 2.22722936};
const std::vector<double> kEma1 = {-0.0949688852, -0.26194787, 0.502941191, 0.514559329, -0.682268143, 0.410740972};

struct RefRun {
  Tensor p0 = f32({0.5, -1.25, 2.0}, {3}).set_requires_grad(true);
  Tensor p1 = f32({0.1, -0.2, 0.3, 0.4, -0.5, 0.6}, {2, 3}).set_requires_grad(true);
  Tensor p2 = f32({3.0, -3.0}, {2});  // a buffer: no grad, EMA copies it
  const double lrs[4] = {0.1, 0.1, 0.05, 0.1};

  void set_grads(int k) {
    p0.set_grad(ref_grad(k, 3, 0.0, {3}));
    p1.set_grad(k == 2 ? Tensor() : ref_grad(k, 6, 0.4, {2, 3}));
  }
  void after_step(int k) {
    if (k == 3) p2.copy_from(f32({5.0, 7.0}, {2}));
  }
};

void check_ref_results(RefRun& r, optim::AdamW& opt, optim::EMA& ema) {
  const double tol = 1e-6;  // relative: a few f32 ulps (m0[1] is a cancellation, ~0.004)
  CHECK(max_ratio_error(r.p0, f32(kP0, {3})) <= tol);
  CHECK(max_ratio_error(r.p1, f32(kP1, {2, 3})) <= tol);
  CHECK(max_ratio_error(opt.exp_avg()[0], f32(kM0, {3})) <= tol);
  CHECK(max_ratio_error(opt.exp_avg_sq()[0], f32(kV0, {3})) <= tol);
  CHECK(max_ratio_error(opt.exp_avg()[1], f32(kM1, {2, 3})) <= tol);
  CHECK(max_ratio_error(opt.exp_avg_sq()[1], f32(kV1, {2, 3})) <= tol);
  CHECK(opt.param_steps()[0] == 4);
  CHECK(opt.param_steps()[1] == 3);  // skipped at step 2, as in PyTorch
  CHECK(opt.step_count() == 4);
  CHECK(max_ratio_error(ema.shadow()[0], f32(kEma0, {3})) <= tol);
  CHECK(max_ratio_error(ema.shadow()[1], f32(kEma1, {2, 3})) <= tol);
  CHECK(ema.shadow()[2].to_vector() == std::vector<double>{5.0, 7.0});
  CHECK(ema.optimization_step() == 4);
  CHECK(ema.last_decay() == Approx(0.3076923076923077).epsilon(1e-15));
}

}  // namespace

TEST_CASE("AdamW and EMA.update match torch.optim.AdamW and diffusers' EMAModel", "[optim]") {
  RefRun r;
  optim::AdamW opt({r.p0, r.p1}, {0.1, 0.9, 0.999, 1e-8, 0.1});
  optim::EMA ema({r.p0, r.p1, r.p2}, {0.9});
  for (int k = 1; k <= 4; ++k) {
    r.set_grads(k);
    opt.step(r.lrs[k - 1]);
    r.after_step(k);
    ema.update({r.p0, r.p1, r.p2});
    if (k == 1) {
      CHECK(max_ratio_error(r.p0, f32(kP0Step1, {3})) < 1e-7);
      CHECK(max_ratio_error(r.p1, f32(kP1Step1, {2, 3})) < 1e-7);
    }
  }
  check_ref_results(r, opt, ema);
}

TEST_CASE("AdamW.step fused with the EMA gives the same result in one pass", "[optim]") {
  RefRun r;
  // p2 sits in the optimizer's list too: it never has a grad, so AdamW skips it, like PyTorch.
  optim::AdamW opt({r.p0, r.p1, r.p2}, {0.1, 0.9, 0.999, 1e-8, 0.1});
  optim::EMA ema({r.p0, r.p1, r.p2}, {0.9});
  for (int k = 1; k <= 4; ++k) {
    r.set_grads(k);
    if (k == 4) r.after_step(3);  // the buffer changes before the step that copies it
    opt.step(r.lrs[k - 1], &ema);
  }
  check_ref_results(r, opt, ema);
  CHECK(opt.param_steps()[2] == 0);
  CHECK(r.p2.to_vector() == std::vector<double>{5.0, 7.0});
}

TEST_CASE("AdamW over tensors larger than a chunk matches a naive loop", "[optim]") {
  // 150001 elements span three kernel chunks; f64 so the naive loop is an exact reference.
  const int64_t n = 150001;
  Tensor p = Tensor::randn({n}, 1, 0, 0, DType::f64).set_requires_grad(true);
  Tensor small = Tensor::randn({3}, 2, 0, 0, DType::f64).set_requires_grad(true);
  auto pv = p.to_vector();
  std::vector<double> m(n, 0.0), v(n, 0.0);
  const double lr = 0.01, b1 = 0.8, b2 = 0.99, eps = 1e-6, wd = 0.05;
  optim::AdamW opt({small, p}, {lr, b1, b2, eps, wd});
  for (int step = 1; step <= 2; ++step) {
    Tensor g = Tensor::randn({n}, 10 + step, 0, 0, DType::f64);
    auto gv = g.to_vector();
    p.set_grad(g);
    small.set_grad(Tensor::randn({3}, 20 + step, 0, 0, DType::f64));
    opt.step();
    for (int64_t i = 0; i < n; ++i) {
      pv[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * gv[i];
      v[i] = b2 * v[i] + (1 - b2) * gv[i] * gv[i];
      double mhat = m[i] / (1 - std::pow(b1, step)), vhat = v[i] / (1 - std::pow(b2, step));
      pv[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
  CHECK(max_rel_error(p, Tensor::from(pv, {n}, DType::f64)) < 1e-12);
  CHECK(max_rel_error(opt.exp_avg()[1], Tensor::from(m, {n}, DType::f64)) < 1e-14);
  CHECK(max_rel_error(opt.exp_avg_sq()[1], Tensor::from(v, {n}, DType::f64)) < 1e-14);
  // grad_norm over both tensors against a naive sum of squares.
  double ss = 0;
  for (const Tensor& t : {p.grad(), small.grad()})
    for (double e : t.to_vector()) ss += e * e;
  CHECK(optim::grad_norm({small, p}) == Approx(std::sqrt(ss)).epsilon(1e-13));
  opt.zero_grad();
  CHECK_FALSE(p.grad().defined());
  CHECK_FALSE(small.grad().defined());
  CHECK(optim::grad_norm({small, p}) == 0.0);
}

// torch 1.13, with grad() as in the AdamW reference above:
//   a = Parameter(zeros(3)); b = Parameter(zeros(2, 3)); c = Parameter(zeros(4))
//   a.grad = grad(1, 3, 0.0); b.grad = grad(2, 6, 0.4).view(2, 3)   # c has no grad
//   n = torch.nn.utils.clip_grad_norm_([a, b, c], max_norm=0.5)   -> n, a.grad, b.grad
//   (again from fresh grads with max_norm=100.0: the grads stay as they are)
TEST_CASE("clip_grad_norm matches torch.nn.utils.clip_grad_norm_", "[optim]") {
  Tensor a = Tensor::zeros({3}).set_requires_grad(true);
  Tensor b = Tensor::zeros({2, 3}).set_requires_grad(true);
  Tensor c = Tensor::zeros({4}).set_requires_grad(true);
  a.set_grad(ref_grad(1, 3, 0.0, {3}));
  b.set_grad(ref_grad(2, 6, 0.4, {2, 3}));
  double norm = optim::clip_grad_norm({a, b, c}, 0.5);
  CHECK(norm == Approx(3.80772996).epsilon(1e-7));
  CHECK(max_ratio_error(a.grad(), f32({0.0422966927, 0.119401485, -0.0310708079}, {3})) < 5e-7);
  CHECK(max_ratio_error(b.grad(), f32({0.0639388412, 0.0054600318, -0.187434882, -0.144623026, 0.21567525, 0.355397433},
                                    {2, 3})) < 5e-7);
  CHECK_FALSE(c.grad().defined());
  CHECK(optim::grad_norm({a, b, c}) == Approx(0.5).epsilon(1e-6));

  a.set_grad(ref_grad(1, 3, 0.0, {3}));
  b.set_grad(ref_grad(2, 6, 0.4, {2, 3}));
  CHECK(optim::clip_grad_norm({a, b, c}, 100.0) == Approx(3.80772996).epsilon(1e-7));
  CHECK(max_abs_error(a.grad(), f32({0.322108835, 0.909297407, -0.236618549}, {3})) < 1e-8);
  CHECK(max_abs_error(b.grad(), ref_grad(2, 6, 0.4, {2, 3})) == 0.0);
}

// diffusers 0.21.4 (get_decay unchanged through 0.42):
//   m = EMAModel([torch.nn.Parameter(torch.zeros(1))], **kw)
//   [m.get_decay(s) for s in [0, 1, 2, 3, 5, 10, 100, 1000, 100000]]
// for kw = {}, {use_ema_warmup=True, inv_gamma=1.0, power=0.75, decay=0.9999},
// {update_after_step=5, min_decay=0.5, decay=0.99}, {use_ema_warmup=True, inv_gamma=2.0, power=2/3, decay=0.995}.
TEST_CASE("EMA decay schedule follows diffusers' EMAModel.get_decay", "[optim][ema]") {
  const std::vector<int64_t> steps = {0, 1, 2, 3, 5, 10, 100, 1000, 100000};
  struct Case {
    optim::EMAOptions options;
    std::vector<double> expect;
  };
  optim::EMAOptions warmup;
  warmup.use_ema_warmup = true;
  warmup.inv_gamma = 1.0;
  warmup.power = 0.75;
  optim::EMAOptions delayed;
  delayed.update_after_step = 5;
  delayed.min_decay = 0.5;
  delayed.decay = 0.99;
  optim::EMAOptions gamma;
  gamma.use_ema_warmup = true;
  gamma.inv_gamma = 2.0;
  gamma.decay = 0.995;
  const std::vector<Case> cases = {
      {optim::EMAOptions{},
       {0.0, 0.0, 0.18181818181818182, 0.25, 0.35714285714285715, 0.5263157894736842, 0.9174311926605505,
        0.9910802775024777, 0.9999}},
      {warmup,
       {0.0, 0.0, 0.4053964424986395, 0.5613086623491692, 0.7009302437557559, 0.8221720589961077, 0.9683772233983162,
        0.9943765867480965, 0.9998221720589962}},
      // Below update_after_step the decay is 0 even under min_decay (get_decay returns early).
      {delayed, {0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.9134615384615384, 0.99, 0.99}},
      {gamma,
       {0.0, 0.0, 0.23685717163111208, 0.3700394750525634, 0.5192501432308638, 0.6790592422430852, 0.9268065169137256,
        0.9841365633429349, 0.995}},
  };
  Tensor p = Tensor::zeros({1}).set_requires_grad(true);
  for (size_t c = 0; c < cases.size(); ++c) {
    optim::EMA ema({p}, cases[c].options);
    for (size_t s = 0; s < steps.size(); ++s) {
      INFO("case " << c << " step " << steps[s]);
      CHECK(ema.decay_at(steps[s]) == Approx(cases[c].expect[s]).epsilon(1e-14).margin(1e-15));
    }
  }
}

TEST_CASE("EMA copy_to writes the shadow into the parameters, and resumes from a step", "[optim][ema]") {
  Tensor p = Tensor::from({1.0, 2.0}, {2}).set_requires_grad(true);
  optim::EMA ema({p}, {0.5});
  ema.set_optimization_step(100);  // past warmup: decay is the 0.5 ceiling
  p.copy_from(Tensor::from({3.0, 6.0}, {2}));
  ema.update({p});
  CHECK(ema.optimization_step() == 101);
  CHECK(ema.last_decay() == 0.5);
  CHECK(ema.shadow()[0].to_vector() == std::vector<double>{2.0, 4.0});
  Tensor q = Tensor::zeros({2});
  ema.copy_to({q});
  CHECK(q.to_vector() == std::vector<double>{2.0, 4.0});
}

TEST_CASE("optimizers reject bad parameter lists and options with one error", "[optim][errors]") {
  Tensor a = Tensor::zeros({3}).set_requires_grad(true);
  Tensor d = Tensor::zeros({3}, DType::f64).set_requires_grad(true);
  CHECK_THROWS_WITH(optim::AdamW({a, d}), Catch::Contains("AdamW: parameters must share one dtype") &&
                                              Catch::Contains("parameter 1 is f64[3]"));
  CHECK_THROWS_WITH(optim::AdamW({Tensor::zeros({2}, DType::i32)}), Catch::Contains("AdamW: parameter 0 must be f32 or f64"));
  CHECK_THROWS_WITH(optim::AdamW({a}, {-1.0}), Catch::Contains("AdamW: invalid learning rate -1"));
  CHECK_THROWS_WITH(optim::AdamW({a}, {1e-3, 1.0}), Catch::Contains("AdamW: betas must lie in [0, 1)"));
  optim::AdamW opt({a});
  a.set_grad(Tensor::zeros({4}));
  CHECK_THROWS_WITH(opt.step(), Catch::Contains("AdamW.step: grad f32[4] cpu does not match parameter 0 f32[3]"));
  CHECK(opt.param_steps()[0] == 0);  // nothing moved
  a.set_grad(Tensor::zeros({3}));
  optim::EMA other({Tensor::zeros({2})});
  CHECK_THROWS_WITH(opt.step(1e-3, &other),
                    Catch::Contains("AdamW.step (fused EMA): parameter 0 f32[3] cpu does not match its EMA shadow f32[2]"));
  CHECK(other.optimization_step() == 0);
  CHECK_THROWS_WITH(other.update({a, a}), Catch::Contains("EMA.update: the EMA holds 1 tensors but 2 parameters"));
  CHECK_THROWS_WITH(optim::EMA({a}, {1.5}), Catch::Contains("EMA: decay 1.5"));
  CHECK_THROWS_WITH(optim::clip_grad_norm({a}, 0.0), Catch::Contains("clip_grad_norm: max_norm must be positive"));
  CHECK_THROWS_WITH(optim::grad_norm({a, d}), Catch::Contains("grad_norm: parameters must share one dtype"));
}
