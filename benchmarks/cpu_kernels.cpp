// The CPU side of `diffuse bench kernels`: the machine's peaks (a large parallel memcpy and a large
// sgemm through the kernels' own OpenBLAS wrapper) and one case per workload calling the
// kernels::cpu functions directly on preallocated buffers, against the unfused references of
// cpu_reference.h. conv2d and linear are there for scale (how close GEMM-shaped work gets to the
// GEMM peak) and have no reference.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "benchmarks/arena.h"
#include "benchmarks/bench.h"
#include "benchmarks/cases.h"
#include "benchmarks/cpu_reference.h"
#include "engine/sampler.h"
#include "kernels/conv2d.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "kernels/optim.h"

namespace diffuse::bench {

namespace k = diffuse::kernels;

int rotation_sets(double set_bytes, size_t rotate_bytes) {
  if (set_bytes <= 0) return 1;
  return static_cast<int>(std::clamp(std::ceil(double(rotate_bytes) / set_bytes), 1.0, 8.0));
}

Peaks cpu_peaks(bool quick) {
  Peaks p;
  // Best of several: a peak measured while a neighbour runs would flatter every fraction below.
  RepeatPolicy pol{1, quick ? 2 : 8, 30, quick ? 0.02 : 1.0};
  const int64_t bytes = (quick ? int64_t(32) : int64_t(256)) << 20;
  Arena a;
  char* src = reinterpret_cast<char*>(a.random(bytes / 4, 1));
  char* dst = reinterpret_cast<char*>(a.zeros(bytes / 4));
  const int64_t chunk = int64_t(1) << 20, chunks = bytes / chunk;
  Timing copy = time_host(
      [&](int) {
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < chunks; ++c) std::memcpy(dst + c * chunk, src + c * chunk, size_t(chunk));
      },
      pol);
  // A peak is the best rate seen: on a shared machine the median includes other people's work.
  p.copy_gbps = 2.0 * double(bytes) / (copy.min_ms * 1e-3) * 1e-9;
  const int64_t n = quick ? 512 : 2048;
  Arena g;
  float* x = g.random(n * n, 2);
  float* y = g.random(n * n, 3);
  float* z = g.zeros(n * n);
  Timing gemm = time_host([&](int) { k::cpu::gemm<float>(false, false, n, n, n, 1.f, x, n, y, n, 0.f, z, n); }, pol);
  p.gemm_gflops = 2.0 * double(n) * n * n / (gemm.min_ms * 1e-3) * 1e-9;
  p.detail = {{"copy", {{"what", "parallel memcpy (OpenMP threads), bytes read + written"},
                        {"bytes", bytes}, {"best_ms", copy.min_ms}, {"median_ms", copy.median_ms}, {"gbps", p.copy_gbps}}},
              {"gemm", {{"what", "sgemm " + std::to_string(n) + "^3 via kernels::cpu::gemm (OpenBLAS, split over OpenMP)"},
                        {"best_ms", gemm.min_ms}, {"median_ms", gemm.median_ms}, {"gflops", p.gemm_gflops}}}};
  return p;
}

namespace {

void bench_noise(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  struct Set {
    Arena arena;
    float *x0, *a, *s, *xt, *tgt, *eps;
  };
  const int64_t n = w.numel, b = w.batch;
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.x0 = s.arena.random(n, 10 + i);
    s.a = s.arena.random(b, 20 + i, 0.01f, 0.99f);
    s.s = s.arena.random(b, 30 + i, 0.01f, 0.99f);
    s.xt = s.arena.zeros(n);
    s.tgt = s.arena.zeros(n);
    s.eps = s.arena.zeros(n);
  });
  k::QSampleDesc d{b, w.per_sample, 7, 0, k::NoiseTarget::epsilon};
  r.ours = time_host([&](int i) {
    Set& s = *sets[i % sets.size()];
    k::cpu::q_sample(d, s.x0, s.a, s.s, s.xt, s.tgt);
  }, pol);
  r.reference = "unfused: randn, blend, copy";
  r.ref = time_host([&](int i) {
    Set& s = *sets[i % sets.size()];
    cpu_ref::q_sample(d, s.x0, s.a, s.s, s.eps, s.xt, s.tgt);
  }, pol);
}

void bench_group_norm(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  const k::GroupNormDesc d = w.gn;
  const int64_t e = d.n * d.spatial * d.channels, nc = d.n * d.channels, C = d.channels, ng = d.n * d.groups;
  const bool fwd = w.pass == "fwd";
  struct Set {
    Arena arena;
    float *x, *add, *gamma, *beta, *y, *dy, *dx, *dadd, *dgamma, *dbeta;
    float *h, *ylin, *glin, *dh;  // the reference's intermediates
    double *mean, *rstd, *rmean, *rrstd;
  };
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.x = s.arena.random(e, 40 + i);
    s.add = s.arena.random(nc, 50 + i);
    s.gamma = s.arena.random(C, 60 + i, 0.5f, 1.5f);
    s.beta = s.arena.random(C, 70 + i);
    s.y = s.arena.zeros(e);
    s.h = s.arena.zeros(e);
    s.ylin = s.arena.zeros(e);
    s.mean = s.arena.zeros_f64(ng);
    s.rstd = s.arena.zeros_f64(ng);
    s.rmean = s.arena.zeros_f64(ng);
    s.rrstd = s.arena.zeros_f64(ng);
    if (fwd) return;
    s.dy = s.arena.random(e, 80 + i);
    s.dx = s.arena.zeros(e);
    s.dadd = s.arena.zeros(nc);
    s.dgamma = s.arena.zeros(C);
    s.dbeta = s.arena.zeros(C);
    s.glin = s.arena.zeros(e);
    s.dh = s.arena.zeros(e);
    // What each backward takes from its own forward.
    k::cpu::group_norm_forward<float>(d, s.x, s.add, s.gamma, s.beta, s.y, s.mean, s.rstd);
    cpu_ref::group_norm_forward(d, s.x, s.add, s.gamma, s.beta, s.h, s.ylin, s.y, s.rmean, s.rrstd);
  });
  auto set = [&](int i) -> Set& { return *sets[i % sets.size()]; };
  if (fwd) {
    r.ours = time_host([&](int i) {
      Set& s = set(i);
      k::cpu::group_norm_forward<float>(d, s.x, s.add, s.gamma, s.beta, s.y, s.mean, s.rstd);
    }, pol);
    r.reference = "unfused: add, group_norm, silu";
    r.ref = time_host([&](int i) {
      Set& s = set(i);
      cpu_ref::group_norm_forward(d, s.x, s.add, s.gamma, s.beta, s.h, s.ylin, s.y, s.rmean, s.rrstd);
    }, pol);
    return;
  }
  r.ours = time_host([&](int i) {
    Set& s = set(i);
    k::cpu::group_norm_backward<float>(d, s.x, s.add, s.gamma, s.beta, s.mean, s.rstd, s.dy, s.dx, s.dgamma, s.dbeta,
                                       s.dadd);
  }, pol);
  r.reference = "unfused: silu', group_norm', sum";
  r.ref = time_host([&](int i) {
    Set& s = set(i);
    cpu_ref::group_norm_backward(d, s.h, s.ylin, s.gamma, s.beta, s.rmean, s.rrstd, s.dy, s.glin, s.dh, s.dgamma,
                                 s.dbeta, s.dadd);
  }, pol);
}

void bench_attention(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  const k::AttentionDesc d = w.attn;
  const int64_t t = d.n * d.len * d.width(), pl = d.n * d.heads * d.len * d.len;
  const bool fwd = w.pass == "fwd";
  struct Set {
    Arena arena;
    float *q, *k, *v, *out, *dout, *dq, *dk, *dv, *p, *dp;
  };
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.q = s.arena.random(t, 90 + i);
    s.k = s.arena.random(t, 100 + i);
    s.v = s.arena.random(t, 110 + i);
    s.out = s.arena.zeros(t);
    s.p = s.arena.zeros(pl);
    if (fwd) return;
    s.dout = s.arena.random(t, 120 + i);
    s.dq = s.arena.zeros(t);
    s.dk = s.arena.zeros(t);
    s.dv = s.arena.zeros(t);
    s.dp = s.arena.zeros(pl);
    cpu_ref::attention_forward(d, s.q, s.k, s.v, s.p, s.out);  // out (both) and p (the reference's)
  });
  auto set = [&](int i) -> Set& { return *sets[i % sets.size()]; };
  if (fwd) {
    r.ours = time_host([&](int i) {
      Set& s = set(i);
      k::cpu::attention_forward<float>(d, s.q, s.k, s.v, s.out);
    }, pol);
    r.reference = "unfused: gemm, softmax, gemm (all scores stored)";
    r.ref = time_host([&](int i) {
      Set& s = set(i);
      cpu_ref::attention_forward(d, s.q, s.k, s.v, s.p, s.out);
    }, pol);
    return;
  }
  r.ours = time_host([&](int i) {
    Set& s = set(i);
    k::cpu::attention_backward<float>(d, s.q, s.k, s.v, s.out, s.dout, s.dq, s.dk, s.dv);
  }, pol);
  r.reference = "unfused from stored p: 4 gemm + softmax'";
  r.ref = time_host([&](int i) {
    Set& s = set(i);
    cpu_ref::attention_backward(d, s.q, s.k, s.v, s.out, s.dout, s.p, s.dp, s.dq, s.dk, s.dv);
  }, pol);
}

void bench_denoise(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  SchedulerConfig sc;
  sc.kind = w.pass == "ddim" ? SamplerKind::ddim : SamplerKind::ddpm;
  Sampler sampler(sc, nominal_steps(w.pass == "ddim" ? "ddim" : "ddpm"));
  k::DenoiseStepDesc d = sampler.step_desc(sampler.num_steps() / 2);  // a middle step: DDPM draws noise
  d.numel = w.numel;
  d.seed = 3;
  d.noise_offset = 0;
  struct Set {
    Arena arena;
    float *x, *m, *x_prev, *x0, *scratch;
  };
  const int64_t n = w.numel;
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.x = s.arena.random(n, 130 + i, -3.f, 3.f);
    s.m = s.arena.random(n, 140 + i, -3.f, 3.f);
    s.x_prev = s.arena.zeros(n);
    s.x0 = s.arena.zeros(n);
    s.scratch = s.arena.zeros(n);
  });
  auto set = [&](int i) -> Set& { return *sets[i % sets.size()]; };
  r.ours = time_host([&](int i) {
    Set& s = set(i);
    k::cpu::denoise_step<float>(d, s.x, s.m, nullptr, s.x_prev, s.x0);
  }, pol);
  r.reference = w.pass == "ddim" ? "unfused: x0, clip, eps, update" : "unfused: x0, clip, update, randn, add";
  r.ref = time_host([&](int i) {
    Set& s = set(i);
    cpu_ref::denoise_step(d, s.x, s.m, s.scratch, s.x_prev, s.x0);
  }, pol);
}

void bench_optim(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  struct Set {
    Arena arena;
    std::vector<k::OptimEntry<float>> fused, adam_only, ema_only;
  };
  k::AdamWHyper h;
  h.lr = 1e-4;
  h.weight_decay = 1e-2;
  h.ema_decay = 0.999;
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    for (size_t j = 0; j < w.param_sizes.size(); ++j) {
      const int64_t n = w.param_sizes[j];
      const uint64_t seed = 1000 * (i + 1) + j * 5;
      k::OptimEntry<float> e;
      e.param = s.arena.random(n, seed);
      e.grad = s.arena.random(n, seed + 1, -1e-2f, 1e-2f);
      e.exp_avg = s.arena.random(n, seed + 2, -1e-3f, 1e-3f);
      e.exp_avg_sq = s.arena.random(n, seed + 3, 0.f, 1e-4f);
      e.ema = s.arena.random(n, seed + 4);
      e.n = n;
      e.step_size = h.lr / (1 - std::pow(h.beta1, 10));
      e.bias_correction2_sqrt = std::sqrt(1 - std::pow(h.beta2, 10));
      s.fused.push_back(e);
      k::OptimEntry<float> adam = e, ema = e;
      adam.ema = nullptr;
      ema.grad = nullptr;
      s.adam_only.push_back(adam);
      s.ema_only.push_back(ema);
    }
  });
  auto set = [&](int i) -> Set& { return *sets[i % sets.size()]; };
  r.ours = time_host([&](int i) {
    Set& s = set(i);
    k::cpu::adamw_ema_step<float>(h, s.fused.data(), int64_t(s.fused.size()));
  }, pol);
  r.reference = "unfused: adamw pass, then ema pass";
  r.ref = time_host([&](int i) {
    Set& s = set(i);
    k::cpu::adamw_ema_step<float>(h, s.adam_only.data(), int64_t(s.adam_only.size()));
    k::cpu::adamw_ema_step<float>(h, s.ema_only.data(), int64_t(s.ema_only.size()));
  }, pol);
}

void bench_conv(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  const k::Conv2dDesc d = w.conv;
  const int64_t x = d.n * d.h * d.w * d.cin, y = d.n * d.out_h() * d.out_w() * d.cout, wt = d.cout * d.k();
  const bool fwd = w.pass == "fwd";
  struct Set {
    Arena arena;
    float *x, *w, *b, *y, *dx, *dw, *db;
  };
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.x = s.arena.random(x, 150 + i);
    s.w = s.arena.random(wt, 160 + i, -0.05f, 0.05f);
    s.b = s.arena.random(d.cout, 170 + i);
    s.y = fwd ? s.arena.zeros(y) : s.arena.random(y, 180 + i);  // bwd: y is dy
    if (fwd) return;
    s.dx = s.arena.zeros(x);
    s.dw = s.arena.zeros(wt);
    s.db = s.arena.zeros(d.cout);
  });
  r.ours = time_host([&](int i) {
    Set& s = *sets[i % sets.size()];
    if (fwd)
      k::cpu::conv2d_forward<float>(d, s.x, s.w, s.b, s.y);
    else
      k::cpu::conv2d_backward<float>(d, s.x, s.w, s.y, s.dx, s.dw, s.db);
  }, pol);
}

void bench_linear(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  const k::LinearDesc d = w.lin;
  struct Set {
    Arena arena;
    float *x, *w, *b, *y;
  };
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.x = s.arena.random(d.rows * d.in, 190 + i);
    s.w = s.arena.random(d.out * d.in, 200 + i, -0.05f, 0.05f);
    s.b = s.arena.random(d.out, 210 + i);
    s.y = s.arena.zeros(d.rows * d.out);
  });
  r.ours = time_host([&](int i) {
    Set& s = *sets[i % sets.size()];
    k::cpu::linear_forward<float>(d, s.x, s.w, s.b, s.y);
  }, pol);
}

}  // namespace

KernelResult run_cpu_case(const Workload& w, const RepeatPolicy& pol, size_t rotate_bytes) {
  KernelResult r;
  try {
    switch (w.family) {
      case Family::noise: bench_noise(w, pol, rotate_bytes, r); break;
      case Family::group_norm: bench_group_norm(w, pol, rotate_bytes, r); break;
      case Family::attention: bench_attention(w, pol, rotate_bytes, r); break;
      case Family::denoise_step: bench_denoise(w, pol, rotate_bytes, r); break;
      case Family::optim: bench_optim(w, pol, rotate_bytes, r); break;
      case Family::conv2d: bench_conv(w, pol, rotate_bytes, r); break;
      case Family::linear: bench_linear(w, pol, rotate_bytes, r); break;
    }
  } catch (const std::exception& e) {  // diffuse::Error or std::bad_alloc: the row says why
    r = KernelResult{};
    r.error = e.what();
  }
  return r;
}

}  // namespace diffuse::bench
