// Cross-check of conv2d, group_norm and attention (outputs and input grads, f64) against PyTorch,
// which /usr/bin/python3 runs when torch is importable (otherwise the test WARNs and skips).
// Tensors travel as text files; the script converts NHWC↔NCHW and OHWI↔OIHW itself.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "nn/autograd.h"
#include "nn/ops.h"
#include "support/gradcheck.h"

using namespace diffuse;
namespace fs = std::filesystem;

namespace {

const char* kScript = R"PY(
import sys, torch
import torch.nn.functional as F
torch.set_default_dtype(torch.float64)

def load(path):
    out, lines = {}, open(path).read().split("\n")
    i = 0
    while i < len(lines) and lines[i]:
        head = lines[i].split()
        name, shape = head[0], [int(s) for s in head[1:]]
        vals = [float(s) for s in lines[i + 1].split()]
        out[name] = torch.tensor(vals).reshape(shape)
        i += 2
    return out

t = load(sys.argv[1])
res = {}
def grads(prefix, y, r, named):
    for v in named.values():
        v.requires_grad_(True)
    (y * r).sum().backward()
    for k, v in named.items():
        res[prefix + "_d" + k] = v.grad

# conv2d: stride 2, padding (top 0, bottom 1, left 0, right 1), as diffusers' downsample_padding=0.
x = t["conv_x"].permute(0, 3, 1, 2).contiguous().requires_grad_(True)
w = t["conv_w"].permute(0, 3, 1, 2).contiguous().requires_grad_(True)
b = t["conv_b"].clone().requires_grad_(True)
y = F.conv2d(F.pad(x, (0, 1, 0, 1)), w, b, stride=2).permute(0, 2, 3, 1)
res["conv_y"] = y
(y * t["conv_r"]).sum().backward()
res["conv_dx"], res["conv_dw"], res["conv_db"] = x.grad.permute(0, 2, 3, 1), w.grad.permute(0, 2, 3, 1), b.grad

# group_norm with the per-(n, c) add and SiLU, 3 groups.
x = t["gn_x"].permute(0, 3, 1, 2).contiguous().requires_grad_(True)
g, bt, a = t["gn_g"].clone(), t["gn_b"].clone(), t["gn_a"].clone()
for v in (g, bt, a):
    v.requires_grad_(True)
y = F.silu(F.group_norm(x + a[:, :, None, None], 3, g, bt, 1e-5)).permute(0, 2, 3, 1)
res["gn_y"] = y
(y * t["gn_r"]).sum().backward()
res["gn_dx"], res["gn_dg"], res["gn_db"], res["gn_da"] = x.grad.permute(0, 2, 3, 1), g.grad, bt.grad, a.grad

# attention, 2 heads.
q, k, v = (t["at_" + s].clone().requires_grad_(True) for s in "qkv")
N, L, W = q.shape
H = 2
def heads(z):
    return z.reshape(N, L, H, W // H).transpose(1, 2)
p = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / (W // H) ** 0.5, dim=-1)
y = (p @ heads(v)).transpose(1, 2).reshape(N, L, W)
res["at_y"] = y
(y * t["at_r"]).sum().backward()
res["at_dq"], res["at_dk"], res["at_dv"] = q.grad, k.grad, v.grad

with open(sys.argv[2], "w") as f:
    for name, z in res.items():
        z = z.detach().contiguous()
        f.write(name + " " + " ".join(str(s) for s in z.shape) + "\n")
        f.write(" ".join(repr(float(e)) for e in z.reshape(-1)) + "\n")
)PY";

void save(std::ofstream& f, const std::string& name, const Tensor& t) {
  f << name;
  for (int64_t d : t.shape()) f << ' ' << d;
  f << '\n';
  char buf[40];
  for (double v : t.to_vector()) {
    std::snprintf(buf, sizeof buf, "%.17g ", v);
    f << buf;
  }
  f << '\n';
}

std::map<std::string, Tensor> load(const fs::path& path) {
  std::map<std::string, Tensor> out;
  std::ifstream f(path);
  std::string head, vals;
  while (std::getline(f, head) && std::getline(f, vals)) {
    std::istringstream hs(head), vs(vals);
    std::string name;
    hs >> name;
    Shape shape;
    for (int64_t d; hs >> d;) shape.push_back(d);
    std::vector<double> v;
    for (double e; vs >> e;) v.push_back(e);
    out[name] = Tensor::from(v, shape, DType::f64);
  }
  return out;
}

Tensor rnd(const Shape& s, uint64_t seed) { return Tensor::randn(s, seed, 0, 0, DType::f64); }

}  // namespace

TEST_CASE("conv2d, group_norm and attention agree with PyTorch, forward and backward", "[conv][group_norm][attention][torch]") {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
    WARN("PyTorch is not importable by /usr/bin/python3: cross-check skipped");
    return;
  }
  const fs::path dir = fs::temp_directory_path() / ("diffuse_dense_torch_" + std::to_string(getpid()));
  fs::create_directories(dir);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{dir};
  std::map<std::string, Tensor> in = {
      {"conv_x", rnd({2, 5, 7, 3}, 1)}, {"conv_w", rnd({4, 3, 3, 3}, 2)}, {"conv_b", rnd({4}, 3)},
      {"conv_r", rnd({2, 2, 3, 4}, 4)}, {"gn_x", rnd({2, 5, 7, 6}, 5)},   {"gn_g", rnd({6}, 6)},
      {"gn_b", rnd({6}, 7)},            {"gn_a", rnd({2, 6}, 8)},         {"gn_r", rnd({2, 5, 7, 6}, 9)},
      {"at_q", rnd({2, 5, 6}, 10)},     {"at_k", rnd({2, 5, 6}, 11)},     {"at_v", rnd({2, 5, 6}, 12)},
      {"at_r", rnd({2, 5, 6}, 13)}};
  {
    std::ofstream f(dir / "in.txt");
    for (auto& [name, t] : in) save(f, name, t);
    std::ofstream(dir / "check.py") << kScript;
  }
  const std::string cmd = "/usr/bin/python3 " + (dir / "check.py").string() + " " + (dir / "in.txt").string() + " " +
                          (dir / "out.txt").string();
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::map<std::string, Tensor> ref = load(dir / "out.txt");
  auto expect = [&](const char* name, const Tensor& got) {
    INFO(name);
    REQUIRE(ref.count(name));
    CHECK(test::max_rel_error(got, ref[name]) < 1e-10);
  };
  for (auto& [name, t] : in) t.set_requires_grad(true);

  Tensor y = ops::conv2d(in["conv_x"], in["conv_w"], in["conv_b"], {2, 0, 1, 0, 1});
  ops::sum(ops::mul(y, in["conv_r"].detach())).backward();
  expect("conv_y", y.detach());
  expect("conv_dx", in["conv_x"].grad());
  expect("conv_dw", in["conv_w"].grad());
  expect("conv_db", in["conv_b"].grad());

  y = ops::group_norm(in["gn_x"], in["gn_g"], in["gn_b"], {3, 1e-5, true}, in["gn_a"]);
  ops::sum(ops::mul(y, in["gn_r"].detach())).backward();
  expect("gn_y", y.detach());
  expect("gn_dx", in["gn_x"].grad());
  expect("gn_dg", in["gn_g"].grad());
  expect("gn_db", in["gn_b"].grad());
  expect("gn_da", in["gn_a"].grad());

  y = ops::attention(in["at_q"], in["at_k"], in["at_v"], 2);
  ops::sum(ops::mul(y, in["at_r"].detach())).backward();
  expect("at_y", y.detach());
  expect("at_dq", in["at_q"].grad());
  expect("at_dk", in["at_k"].grad());
  expect("at_dv", in["at_v"].grad());
}
