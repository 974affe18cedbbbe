// `diffuse bench kernels`: measures the device's peaks, then every workload (our kernel and its
// reference, same run), printing each row as it finishes. --quick is the smoke run: the tiny
// config at batch 2, no large shapes, a few repetitions.
#include <ostream>

#include "benchmarks/bench.h"
#include "benchmarks/cases.h"
#include "benchmarks/measure.h"
#include "benchmarks/report.h"
#include "benchmarks/workloads.h"
#include "nn/runtime.h"

namespace diffuse::bench {

nlohmann::json run_kernel_bench(const KernelBenchOptions& o, std::ostream& out) {
  const bool cuda = o.device == Device::cuda;
  if (cuda) require_cuda_device();
  WorkloadOptions wo;
  wo.configs = o.quick ? std::vector<std::string>{"tiny"} : o.configs;
  wo.batches = o.quick ? std::vector<int64_t>{2} : o.batches;
  wo.large = o.large && !o.quick;
  wo.cuda = cuda;
  wo.filter = o.filter;
  std::vector<Workload> work = kernel_workloads(wo);
  if (work.empty()) throw Error("--filter " + o.filter + ": matches no kernel family (try group_norm, attention, noise, denoise_step, optim, conv2d, linear)", ErrorKind::usage);

  nlohmann::json report = run_context(o.device);
  report["benchmark"] = "kernels";
  report["quick"] = o.quick;
  report["filter"] = o.filter;

  // GPU: device events, many short repetitions. CPU: wall clock, fewer and longer.
  RepeatPolicy pol = cuda ? RepeatPolicy{3, 10, 200, 0.1} : RepeatPolicy{1, 3, 20, 0.3};
  if (o.quick) pol = cuda ? RepeatPolicy{1, 3, 10, 0.01} : RepeatPolicy{1, 2, 5, 0.02};
  const size_t rotate = 2 * (cuda ? cuda_l2_bytes() : cpu_last_level_cache_bytes());

  const std::string dev_name = report["device"]["name"].get<std::string>();
  out << "diffuse bench kernels on " << dev_name << " (" << device_name(o.device) << ", "
      << report["device"]["cores"].get<int>() << " CPU cores), commit " << report["git_commit"].get<std::string>()
      << (report.contains("load_average") ? strf(", load average %.1f", report["load_average"][0].get<double>()) : "")
      << "\n";
  Peaks peaks = cuda ? cuda_peaks(o.quick) : cpu_peaks(o.quick);
  report["peaks"] = {{"copy_gbps", peaks.copy_gbps}, {"gemm_gflops", peaks.gemm_gflops}, {"detail", peaks.detail}};
  out << strf("peaks: copy %.1f GB/s (read+write), f32 GEMM %.1f GFLOP/s; inputs rotated over %.0f MiB\n",
              peaks.copy_gbps, peaks.gemm_gflops, double(rotate) / (1 << 20))
      << "floor = max(bytes / copy peak, FLOPs / GEMM peak); vs ref = reference time / our time\n\n";
  print_table_header(out);

  nlohmann::json rows = nlohmann::json::array();
  for (const Workload& w : work) {
    KernelResult r = cuda ? run_cuda_case(w, pol, rotate) : run_cpu_case(w, pol, rotate);
    print_table_row(out, w, r, peaks);
    rows.push_back(row_json(w, r, peaks));
  }
  report["rows"] = rows;
  return report;
}

}  // namespace diffuse::bench
