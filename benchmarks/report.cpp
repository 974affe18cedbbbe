// See report.h. The table is written one row at a time as each case finishes, so a long run shows
// progress; every number in it is also in the JSON row.
#include "benchmarks/report.h"

#include <algorithm>
#include <cstdio>
#include <ostream>

namespace diffuse::bench {

namespace {

struct Floor {
  double ms = 0;
  const char* bound = "memory";
};

// bf16 workloads (attention's bf16 rows) against the bf16 tensor-core GEMM rate where it was measured.
Floor floor_of(const Workload& w, const Peaks& p) {
  const double mem = p.copy_gbps > 0 ? w.bytes / (p.copy_gbps * 1e9) : 0;
  double gemm = p.gemm_gflops;
  if (w.bf16 && p.detail.contains("gemm_bf16")) gemm = p.detail["gemm_bf16"]["gflops"].get<double>();
  const double math = gemm > 0 ? w.flops / (gemm * 1e9) : 0;
  return {1e3 * std::max(mem, math), math > mem ? "compute" : "memory"};
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// The shape as numbers, so a reader (or a test) can recount bytes and FLOPs.
nlohmann::json dims_json(const Workload& w) {
  switch (w.family) {
    case Family::noise:
    case Family::denoise_step: return {{"numel", w.numel}, {"per_sample", w.per_sample}};
    case Family::group_norm:
      return {{"n", w.gn.n}, {"spatial", w.gn.spatial}, {"channels", w.gn.channels}, {"groups", w.gn.groups}};
    case Family::attention:
      return {{"n", w.attn.n},
              {"len", w.attn.len},
              {"heads", w.attn.heads},
              {"head_dim", w.attn.head_dim},
              {"dtype", w.bf16 ? "bf16" : "f32"},
              {"path", w.attention_path.empty() ? "rule" : w.attention_path}};
    case Family::conv2d:
      return {{"n", w.conv.n}, {"h", w.conv.h}, {"w", w.conv.w}, {"cin", w.conv.cin}, {"cout", w.conv.cout}, {"k", w.conv.kh}};
    case Family::linear: return {{"rows", w.lin.rows}, {"in", w.lin.in}, {"out", w.lin.out}};
    case Family::optim: {
      int64_t total = 0;
      for (int64_t n : w.param_sizes) total += n;
      return {{"tensors", w.param_sizes.size()}, {"params", total}};
    }
  }
  return nlohmann::json::object();
}

}  // namespace

nlohmann::json row_json(const Workload& w, const KernelResult& r, const Peaks& p) {
  nlohmann::json j;
  j["family"] = family_name(w.family);
  j["pass"] = w.pass;
  j["where"] = w.where;
  j["config"] = w.config;
  j["batch"] = w.batch;
  j["shape"] = w.shape;
  j["dims"] = dims_json(w);
  j["bytes"] = w.bytes;
  j["flops"] = w.flops;
  if (!r.error.empty()) {
    j["error"] = r.error;
    return j;
  }
  const Floor f = floor_of(w, p);
  const double s = r.ours.median_ms * 1e-3;
  j["time_ms"] = r.ours.median_ms;
  j["time_min_ms"] = r.ours.min_ms;
  j["reps"] = r.ours.reps;
  j["gbps"] = s > 0 ? w.bytes / s * 1e-9 : 0;
  j["gflops"] = s > 0 ? w.flops / s * 1e-9 : 0;
  j["floor_ms"] = f.ms;
  j["bound"] = f.bound;
  j["floor_fraction"] = r.ours.median_ms > 0 ? f.ms / r.ours.median_ms : 0;
  if (!r.reference.empty()) {
    j["reference"] = r.reference;
    j["reference_ms"] = r.ref.median_ms;
    j["reference_reps"] = r.ref.reps;
    j["speedup_vs_reference"] = r.ours.median_ms > 0 ? r.ref.median_ms / r.ours.median_ms : 0;
  }
  return j;
}

void print_table_header(std::ostream& out) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-12s %-9s %-24s %-36s %10s %8s %9s %7s %10s %7s\n", "family", "pass", "where",
                "shape", "ms", "GB/s", "GFLOP/s", "floor", "ref ms", "vs ref");
  out << buf << std::string(140, '-') << "\n";
}

void print_table_row(std::ostream& out, const Workload& w, const KernelResult& r, const Peaks& p) {
  char buf[512];
  std::string where = w.where.size() > 24 ? w.where.substr(0, 23) + "~" : w.where;
  std::string shape = w.shape.size() > 36 ? w.shape.substr(0, 35) + "~" : w.shape;
  if (!r.error.empty()) {
    std::snprintf(buf, sizeof buf, "%-12s %-9s %-24s %-36s  n/a: %s\n", family_name(w.family), w.pass.c_str(),
                  where.c_str(), shape.c_str(), r.error.c_str());
    out << buf << std::flush;
    return;
  }
  nlohmann::json j = row_json(w, r, p);
  std::string ref_ms = r.reference.empty() ? "-" : fmt("%.3f", r.ref.median_ms);
  std::string vs = r.reference.empty() ? "-" : fmt("%.2fx", j["speedup_vs_reference"].get<double>());
  std::snprintf(buf, sizeof buf, "%-12s %-9s %-24s %-36s %10.3f %8.1f %9.1f %6.1f%% %10s %7s\n", family_name(w.family),
                w.pass.c_str(), where.c_str(), shape.c_str(), r.ours.median_ms, j["gbps"].get<double>(),
                j["gflops"].get<double>(), 100 * j["floor_fraction"].get<double>(), ref_ms.c_str(), vs.c_str());
  out << buf << std::flush;
}

}  // namespace diffuse::bench
