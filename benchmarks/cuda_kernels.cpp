// The GPU cases of `diffuse bench kernels` (CUDA builds). Our kernels are timed as the engine
// calls them — through the ops (nn/ops.h, nn/optim.h, the Sampler) on CUDA tensors, the backward
// passes through the autograd node of a freshly recorded forward — except q_sample, whose launcher
// is called directly. References: cuBLAS + cuDNN softmax for attention; the unfused composition
// of separate ops for group_norm, optim and DDIM's update; the measured copy bandwidth (the floor
// column) for noise and DDPM's update. conv2d and linear are cuDNN / cuBLAS through the ops.
#if DIFFUSE_WITH_CUDA
#include <cmath>

#include "benchmarks/arena.h"
#include "benchmarks/bench.h"
#include "benchmarks/cases.h"
#include "benchmarks/cuda_util.h"
#include "engine/sampler.h"
#include "kernels/attention.h"
#include "kernels/noise.h"
#include "nn/autograd.h"
#include "nn/ops.h"
#include "nn/optim.h"

namespace diffuse::bench {

namespace k = diffuse::kernels;

namespace {

void requires_grad(std::initializer_list<Tensor*> ts) {
  for (Tensor* t : ts) t->set_requires_grad(true);
}
void drop_grads(std::initializer_list<Tensor*> ts) {
  for (Tensor* t : ts) t->zero_grad();
}

void bench_noise(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  struct Set {
    DeviceArena arena;
    Tensor x0, a, s, xt, tgt;
  };
  const int64_t n = w.numel, b = w.batch;
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.x0 = s.arena.random({n}, 10 + i);
    s.a = s.arena.random({b}, 20 + i, 0.01f, 0.99f);
    s.s = s.arena.random({b}, 30 + i, 0.01f, 0.99f);
    s.xt = s.arena.zeros({n});
    s.tgt = s.arena.zeros({n});
  });
  k::QSampleDesc d{b, w.per_sample, 7, 0, k::NoiseTarget::epsilon};
  r.ours = time_device([&](int i) {
    Set& s = *sets[i % sets.size()];
    k::cuda::q_sample(d, s.x0.data<float>(), s.a.data<float>(), s.s.data<float>(), s.xt.data<float>(),
                      s.tgt.data<float>(), current_stream());
  }, pol);
}

void bench_group_norm(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  const k::GroupNormDesc d = w.gn;
  struct Set {
    DeviceArena arena;
    Tensor x, add, gamma, beta, dy, y;
  };
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.x = s.arena.random({d.n, d.spatial, d.channels}, 40 + i);
    s.add = s.arena.random({d.n, d.channels}, 50 + i);
    s.gamma = s.arena.random({d.channels}, 60 + i, 0.5f, 1.5f);
    s.beta = s.arena.random({d.channels}, 70 + i);
    s.dy = s.arena.random({d.n, d.spatial, d.channels}, 80 + i);
  });
  auto set = [&](int i) -> Set& { return *sets[i % sets.size()]; };
  ops::GroupNormOptions fused{int(d.groups), d.eps, true}, plain{int(d.groups), d.eps, false};
  if (w.pass == "fwd") {
    NoGrad no_grad;
    r.ours = time_device([&](int i) {
      Set& s = set(i);
      s.y = ops::group_norm(s.x, s.gamma, s.beta, fused, s.add);
    }, pol);
    r.reference = "unfused ops: add, group_norm, silu";
    r.ref = time_device([&](int i) {
      Set& s = set(i);
      s.y = ops::silu(ops::group_norm(ops::add(s.x, s.add.view({d.n, 1, d.channels})), s.gamma, s.beta, plain));
    }, pol);
    return;
  }
  for (auto& s : sets) requires_grad({&s->x, &s->add, &s->gamma, &s->beta});
  r.ours = time_device([&](int i) { run_backward(set(i).y, set(i).dy); }, pol, [&](int i) {
    Set& s = set(i);
    drop_grads({&s.x, &s.add, &s.gamma, &s.beta});
    s.y = ops::group_norm(s.x, s.gamma, s.beta, fused, s.add);
  });
  r.reference = "unfused ops' backward: silu, group_norm, add";
  r.ref = time_device([&](int i) { run_backward(set(i).y, set(i).dy); }, pol, [&](int i) {
    Set& s = set(i);
    drop_grads({&s.x, &s.add, &s.gamma, &s.beta});
    s.y = ops::silu(ops::group_norm(ops::add(s.x, s.add.view({d.n, 1, d.channels})), s.gamma, s.beta, plain));
  });
  for (auto& s : sets) s->y = Tensor();
}

// A forced path (the workload's attention_path) or the rule. The reference (f32 cuBLAS + cuDNN
// softmax) runs for f32 workloads only; bf16 ones time the op alone.
void bench_attention(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  const k::AttentionDesc d = w.attn;
  const Shape tok = {d.n, d.len, d.width()};
  using k::cuda::AttentionPathChoice;
  const k::cuda::ScopedAttentionPath path(w.attention_path == "flash"  ? AttentionPathChoice::flash
                                          : w.attention_path == "gemm" ? AttentionPathChoice::gemm
                                                                       : AttentionPathChoice::automatic);
  struct Set {
    DeviceArena arena;
    Tensor q, k, v, out, dout, p, dp, dq, dk, dv;
  };
  const bool fwd = w.pass == "fwd", with_reference = !w.bf16;
  auto input = [&](Set& s, uint64_t seed) {
    const Tensor t = s.arena.random(tok, seed);
    return w.bf16 ? ops::cast(t, DType::bf16) : t;
  };
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.q = input(s, 90 + i);
    s.k = input(s, 100 + i);
    s.v = input(s, 110 + i);
    if (!fwd) s.dout = input(s, 120 + i);
    if (!with_reference) return;
    s.out = s.arena.zeros(tok);
    s.p = s.arena.zeros({d.n * d.heads, d.len, d.len});
    if (fwd) return;
    s.dp = s.arena.zeros({d.n * d.heads, d.len, d.len});
    s.dq = s.arena.zeros(tok);
    s.dk = s.arena.zeros(tok);
    s.dv = s.arena.zeros(tok);
    attention_reference_forward(d, s.q.data<float>(), s.k.data<float>(), s.v.data<float>(), s.p.data<float>(),
                                s.out.data<float>());
  });
  auto set = [&](int i) -> Set& { return *sets[i % sets.size()]; };
  const int heads = int(d.heads);
  if (fwd) {
    NoGrad no_grad;
    r.ours = time_device([&](int i) { set(i).out = ops::attention(set(i).q, set(i).k, set(i).v, heads); }, pol);
    if (!with_reference) return;
    r.reference = "cuBLAS gemm, cuDNN softmax, cuBLAS gemm";
    r.ref = time_device([&](int i) {
      Set& s = set(i);
      attention_reference_forward(d, s.q.data<float>(), s.k.data<float>(), s.v.data<float>(), s.p.data<float>(),
                                  s.out.data<float>());
    }, pol);
    return;
  }
  for (auto& s : sets) requires_grad({&s->q, &s->k, &s->v});
  r.ours = time_device([&](int i) { run_backward(set(i).out, set(i).dout); }, pol, [&](int i) {
    Set& s = set(i);
    drop_grads({&s.q, &s.k, &s.v});
    s.out = ops::attention(s.q, s.k, s.v, heads);
  });
  for (auto& s : sets) drop_grads({&s->q, &s->k, &s->v});
  if (!with_reference) return;
  r.reference = "from stored p: 4 cuBLAS gemm + cuDNN softmax'";
  r.ref = time_device([&](int i) {
    Set& s = set(i);
    attention_reference_backward(d, s.q.data<float>(), s.k.data<float>(), s.v.data<float>(), s.dout.data<float>(),
                                 s.p.data<float>(), s.dp.data<float>(), s.dq.data<float>(), s.dk.data<float>(),
                                 s.dv.data<float>());
  }, pol);
}

void bench_denoise(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  SchedulerConfig sc;
  sc.kind = w.pass == "ddim" ? SamplerKind::ddim : SamplerKind::ddpm;
  Sampler sampler(sc, nominal_steps(w.pass == "ddim" ? "ddim" : "ddpm"));
  const int64_t step = sampler.num_steps() / 2;
  struct Set {
    DeviceArena arena;
    Tensor x, m, x0;
  };
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.x = s.arena.random({w.numel}, 130 + i, -3.f, 3.f);
    s.m = s.arena.random({w.numel}, 140 + i, -3.f, 3.f);
    s.x0 = s.arena.zeros({w.numel});
  });
  auto set = [&](int i) -> Set& { return *sets[i % sets.size()]; };
  SampleOptions opt;
  opt.seed = 3;
  NoGrad no_grad;
  r.ours = time_device([&](int i) { sampler.step(step, set(i).m, set(i).x, set(i).x0, opt); }, pol);
  if (w.pass != "ddim") return;  // DDPM's noise draw has no op to compose it from: the copy floor is its reference
  const k::DenoiseStepDesc c = sampler.step_desc(step);
  r.reference = "unfused ops: 6 scale + 3 add (no clip)";
  r.ref = time_device([&](int i) {
    Set& s = set(i);
    Tensor x0 = ops::add(ops::scale(s.x, c.x0_from_x), ops::scale(s.m, c.x0_from_m));
    Tensor eps = ops::add(ops::scale(s.x, c.eps_from_x), ops::scale(s.m, c.eps_from_m));
    s.x0 = ops::add(ops::scale(x0, c.c_x0), ops::scale(eps, c.c_eps));
  }, pol);
}

void bench_optim(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  struct Set {
    DeviceArena arena;
    std::vector<Tensor> params;
    std::unique_ptr<optim::AdamW> adam;
    std::unique_ptr<optim::EMA> ema;
  };
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    for (size_t j = 0; j < w.param_sizes.size(); ++j) {
      Tensor p = s.arena.random({w.param_sizes[j]}, 1000 * (i + 1) + j * 3);
      p.set_requires_grad(true);
      p.set_grad(s.arena.random({w.param_sizes[j]}, 1000 * (i + 1) + j * 3 + 1, -1e-2f, 1e-2f));
      s.params.push_back(p);
    }
    s.adam = std::make_unique<optim::AdamW>(s.params, optim::AdamWOptions{1e-4, 0.9, 0.999, 1e-8, 1e-2});
    s.ema = std::make_unique<optim::EMA>(s.params);
  });
  auto set = [&](int i) -> Set& { return *sets[i % sets.size()]; };
  r.ours = time_device([&](int i) { set(i).adam->step(1e-4, set(i).ema.get()); }, pol);
  r.reference = "unfused: AdamW step, then EMA update";
  r.ref = time_device([&](int i) {
    set(i).adam->step(1e-4);
    set(i).ema->update(set(i).params);
  }, pol);
}

void bench_conv(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  const k::Conv2dDesc d = w.conv;
  struct Set {
    DeviceArena arena;
    Tensor x, w, b, y, dy;
  };
  const bool fwd = w.pass == "fwd";
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.x = s.arena.random({d.n, d.h, d.w, d.cin}, 150 + i);
    s.w = s.arena.random({d.cout, d.kh, d.kw, d.cin}, 160 + i, -0.05f, 0.05f);
    s.b = s.arena.random({d.cout}, 170 + i);
    s.dy = s.arena.random({d.n, d.out_h(), d.out_w(), d.cout}, 180 + i);
  });
  auto set = [&](int i) -> Set& { return *sets[i % sets.size()]; };
  const ops::Conv2dOptions opt = ops::Conv2dOptions::same(int(d.kh));
  if (fwd) {
    NoGrad no_grad;
    r.ours = time_device([&](int i) { set(i).y = ops::conv2d(set(i).x, set(i).w, set(i).b, opt); }, pol);
    return;
  }
  for (auto& s : sets) requires_grad({&s->x, &s->w, &s->b});
  r.ours = time_device([&](int i) { run_backward(set(i).y, set(i).dy); }, pol, [&](int i) {
    Set& s = set(i);
    drop_grads({&s.x, &s.w, &s.b});
    s.y = ops::conv2d(s.x, s.w, s.b, opt);
  });
  for (auto& s : sets) s->y = Tensor();
}

void bench_linear(const Workload& w, const RepeatPolicy& pol, size_t rot, KernelResult& r) {
  const k::LinearDesc d = w.lin;
  struct Set {
    DeviceArena arena;
    Tensor x, w, b, y;
  };
  auto sets = make_sets<Set>(rot, [&](Set& s, int i) {
    s.x = s.arena.random({d.rows, d.in}, 190 + i);
    s.w = s.arena.random({d.out, d.in}, 200 + i, -0.05f, 0.05f);
    s.b = s.arena.random({d.out}, 210 + i);
  });
  NoGrad no_grad;
  r.ours = time_device([&](int i) {
    auto& s = *sets[i % sets.size()];
    s.y = ops::linear(s.x, s.w, s.b);
  }, pol);
}

}  // namespace

KernelResult run_cuda_case(const Workload& w, const RepeatPolicy& pol, size_t rotate_bytes) {
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
    synchronize_device();
  } catch (const std::exception& e) {  // an op without a CUDA path yet, out of memory, ...: the row says why
    clear_tape();
    r = KernelResult{};
    r.error = e.what();
  }
  return r;
}

}  // namespace diffuse::bench
#endif  // DIFFUSE_WITH_CUDA
