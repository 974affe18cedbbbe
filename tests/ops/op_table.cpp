// The op table's runner and test registration (see op_table.h). Every error measure counts NaN or
// inf as an infinite error, so an element never written fails; the bounds per backend follow
// docs/design.md §11: CPU f64 within rounding of the naive loop, CPU f32 within f32 rounding, CUDA
// f32 well under 1e-3.
#include "ops/op_table.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <sstream>

#include "nn/autograd.h"
#include "support/cuda_compare.h"
#include "support/gradcheck.h"

namespace diffuse::test::op_table {

InputSpec normal(const Shape& shape, double scale, double shift) {
  InputSpec s;
  s.shape = shape;
  s.scale = scale;
  s.shift = shift;
  s.grad = true;
  return s;
}

InputSpec constant(const Shape& shape, double scale, double shift) {
  InputSpec s = normal(shape, scale, shift);
  s.grad = false;
  return s;
}

InputSpec positive(const Shape& shape) {
  InputSpec s;
  s.kind = InputSpec::Kind::positive;
  s.shape = shape;
  s.grad = true;
  return s;
}

InputSpec fixed(const std::vector<double>& values, const Shape& shape, DType dtype) {
  InputSpec s;
  s.kind = InputSpec::Kind::fixed;
  s.shape = shape;
  s.values = values;
  s.values_dtype = dtype;
  return s;
}

InputSpec absent() {
  InputSpec s;
  s.kind = InputSpec::Kind::absent;
  return s;
}

const std::vector<OpRow>& all_rows() {
  static const std::vector<OpRow> rows = [] {
    std::vector<OpRow> all;
    for (auto* family : {elementwise_rows, conv_linear_rows, group_norm_attention_rows, shape_embedding_rows,
                         loss_diffusion_rows})
      for (OpRow& row : family()) all.push_back(std::move(row));
    return all;
  }();
  return rows;
}

std::vector<std::string> table_ops() {
  std::vector<std::string> ops;
  for (const OpRow& row : all_rows())
    if (std::find(ops.begin(), ops.end(), row.op) == ops.end()) ops.push_back(row.op);
  return ops;
}

namespace {

// Above this many differentiated elements a row's f64 backward is checked along random
// directions (two forwards per input) instead of element by element (two forwards per element).
constexpr int64_t kElementwiseGradcheckLimit = 1500;

bool is_float(DType dt) { return dt == DType::f32 || dt == DType::f64 || dt == DType::bf16; }

// The host values of one input: f32 (or the fixed dtype); `seed` makes every input distinct.
Tensor host_values(const InputSpec& s, uint64_t seed) {
  switch (s.kind) {
    case InputSpec::Kind::absent:
      return Tensor();
    case InputSpec::Kind::fixed:
      return Tensor::from(s.values, s.shape, s.values_dtype);
    case InputSpec::Kind::positive: {
      Tensor t = Tensor::rand(s.shape, seed);
      for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] += 0.5f;
      return t;
    }
    case InputSpec::Kind::normal:
      break;
  }
  Tensor t = Tensor::randn(s.shape, seed);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<float>()[i] = static_cast<float>(s.shift + s.scale * t.data<float>()[i]);
  return t;
}

// A leaf on (device, dtype): float values converted to `dtype`, integer ones kept; requires grad
// when the spec is differentiated.
Tensor leaf(const Tensor& host, const InputSpec& s, Device device, DType dtype, bool differentiable) {
  if (!host.defined()) return host;
  Tensor t = is_float(host.dtype()) && host.dtype() != dtype ? host.to(dtype) : host.clone();
  if (device != Device::cpu) t = t.to(device);
  if (differentiable && s.grad) t.set_requires_grad(true);
  return t;
}

std::string describe(const Inputs& inputs) {
  std::ostringstream os;
  for (size_t i = 0; i < inputs.size(); ++i)
    os << (i ? ", " : "") << (inputs[i].defined() ? inputs[i].describe() : "undefined")
       << (inputs[i].defined() && inputs[i].requires_grad() ? " (grad)" : "");
  return os.str();
}

// The bound on a result of dtype `dt` on `device` (op_table.h's Bounds).
double bound(const Bounds& b, Device device, DType dt) {
  if (device != Device::cpu) return b.cuda_f32;
  return dt == DType::f64 ? b.cpu_f64 : b.cpu_f32;
}

// The error measure of Bounds for a result of dtype `dt` on `device`.
double forward_error(const Tensor& got, const Tensor& want, Device device, DType dt) {
  if (device != Device::cpu) return rel_to_peak_error(got, want);
  return dt == DType::f64 ? max_abs_error(got, want) : max_rel_error(got, want);
}

// The backend's dtype, except for ops whose inputs are all integers (a timestep embedding of
// integer t), which compute in f32 everywhere.
DType expected_dtype(const OpRow& row, const Backend& backend) {
  for (const InputSpec& s : row.inputs)
    if (s.kind != InputSpec::Kind::absent && (s.kind != InputSpec::Kind::fixed || is_float(s.values_dtype)))
      return backend.dtype;
  return DType::f32;
}

void check_outputs(const OpRow& row, const Backend& backend, const Outputs& got, const Outputs& want,
                   const char* pass) {
  INFO(pass);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("output " << i << " " << got[i].describe() << ", reference " << want[i].describe());
    REQUIRE(got[i].defined());
    CHECK(got[i].device() == backend.device);
    CHECK(got[i].shape() == want[i].shape());
    CHECK(got[i].dtype() == expected_dtype(row, backend));
    if (got[i].shape() != want[i].shape()) continue;
    const double err = forward_error(got[i], want[i], backend.device, got[i].dtype());
    const double tol = bound(row.bounds, backend.device, got[i].dtype());
    INFO("error " << err << " (bound " << tol << ")");
    CHECK(err <= tol);
  }
}

bool runs_on(const OpRow& row, const Backend& backend) {
  return !(row.f32_only && backend.dtype != DType::f32) && !(row.cpu_only && backend.device != Device::cpu);
}

void run_row(const OpRow& row, uint64_t ordinal, const Backend& backend) {
  std::vector<Tensor> host;
  for (size_t i = 0; i < row.inputs.size(); ++i) host.push_back(host_values(row.inputs[i], 1000 * ordinal + i + 1));
  Inputs reference_in, in;
  for (size_t i = 0; i < host.size(); ++i) {
    reference_in.push_back(leaf(host[i], row.inputs[i], Device::cpu, DType::f64, false));
    in.push_back(leaf(host[i], row.inputs[i], backend.device, backend.dtype, row.differentiable));
  }
  INFO("op " << row.op << ", case \"" << row.name << "\" on " << backend.name << ": inputs " << describe(in));
  const Outputs want = row.reference(reference_in);
  {
    NoGrad no_grad;  // the inference path (some kernels keep less without a tape)
    check_outputs(row, backend, row.run(in), want, "forward without a tape");
  }
  if (!row.differentiable) return;

  // The backend's forward and backward, then the CPU f64 one: the tape is shared, and a backward
  // consumes every node recorded so far.
  const Outputs got = row.run(in);
  check_outputs(row, backend, got, want, "forward with a tape");
  REQUIRE(got.size() == 1);
  const Tensor dout = Tensor::randn(want[0].shape(), 4321 + ordinal);
  Tensor backend_dout = dout.to(backend.dtype);
  if (backend.device != Device::cpu) backend_dout = backend_dout.to(backend.device);
  run_backward(got[0], backend_dout);
  Inputs f64_in;
  for (size_t i = 0; i < host.size(); ++i) f64_in.push_back(leaf(host[i], row.inputs[i], Device::cpu, DType::f64, true));
  const bool self_reference = backend.device == Device::cpu && backend.dtype == DType::f64;
  if (!self_reference) run_backward(row.run(f64_in)[0], dout.to(DType::f64));
  for (size_t i = 0; i < in.size(); ++i) {
    if (!in[i].defined() || !is_float(in[i].dtype())) continue;
    INFO("grad of input " << i << " " << in[i].describe());
    if (!in[i].requires_grad()) {
      CHECK_FALSE(in[i].grad().defined());  // only the grads asked for
      continue;
    }
    REQUIRE(in[i].grad().defined());
    CHECK(in[i].grad().device() == backend.device);
    CHECK(in[i].grad().dtype() == in[i].dtype());
    if (self_reference) continue;  // checked below against finite differences instead
    const double err = rel_to_peak_error(in[i].grad(), f64_in[i].grad());
    const double tol = bound(Bounds{}, backend.device, backend.dtype);
    INFO("error " << err << " against the CPU f64 backward (bound " << tol << ")");
    CHECK(err <= tol);
  }
  if (self_reference) {
    // Every element by central differences where that is cheap; along random directions otherwise.
    const OpFn& run = row.run;
    const ScalarFn loss = [&run](const Inputs& x) { return weighted_sum(run(x)[0]); };
    int64_t differentiated = 0;
    for (const Tensor& t : f64_in) differentiated += t.defined() && t.requires_grad() ? t.numel() : 0;
    if (differentiated <= kElementwiseGradcheckLimit)
      check_gradients(loss, f64_in);
    else
      check_directional_derivatives(loss, f64_in);
  }
}

// Hands Catch a test body it can call (a test case whose name is built at run time).
struct OpTestInvoker final : Catch::ITestInvoker {
  std::function<void()> body;
  void invoke() const override { body(); }
};

}  // namespace

void run_op(const std::string& op, const Backend& backend) {
  uint64_t ordinal = 0, rows = 0;
  for (const OpRow& row : all_rows()) {
    ++ordinal;
    if (row.op != op || !runs_on(row, backend)) continue;
    ++rows;
    run_row(row, ordinal, backend);
  }
  REQUIRE(rows > 0);
}

void register_tests(const Backend& backend, const char* extra_tags, std::function<void(const std::string&)> body) {
  for (const std::string& op : table_ops()) {
    const auto& rows = all_rows();
    if (std::none_of(rows.begin(), rows.end(), [&](const OpRow& r) { return r.op == op && runs_on(r, backend); }))
      continue;  // e.g. q_sample has no f64 kernel: no empty "q_sample on cpu-f64" case
    auto* invoker = new OpTestInvoker;  // owned by Catch's registry from here on
    invoker->body = [body, op] { body(op); };
    const std::string name = "op table: " + op + " on " + backend.name;
    const std::string tags = std::string("[ops][table]") + extra_tags;
    const Catch::AutoReg registration(invoker, Catch::SourceLineInfo(__FILE__, static_cast<std::size_t>(__LINE__)), Catch::StringRef(),
                                      Catch::NameAndTags(name, tags));
  }
}

}  // namespace diffuse::test::op_table
