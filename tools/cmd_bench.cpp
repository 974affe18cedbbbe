// `diffuse bench kernels|train|sample`: the benchmarks of benchmarks/ (docs/design.md §12) from the
// command line — a table on stdout and, with --json FILE, the same numbers as JSON (written
// atomically). Flags are per mode; `diffuse bench MODE --help` lists them with their defaults.
#include <cstdio>
#include <cstring>
#include <cxxopts.hpp>
#include <iostream>
#include <optional>
#include <sstream>

#include "benchmarks/bench.h"
#include "diffuse/error.h"
#include "nn/atomic_file.h"
#include "nn/collective.h"
#include "nn/runtime.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/option_flags.h"
#include "tools/sample_files.h"

namespace diffuse::cli {

namespace {

const char* kUsage =
    "usage: diffuse bench <mode> [options]\n\n"
    "modes:\n"
    "  kernels   every custom kernel family at the named configs' shapes: time, GB/s, GFLOP/s,\n"
    "            fraction of the measured floor, speed-up over the reference composition\n"
    "  train     steady-state training step time and images/s\n"
    "  sample    sampling time for DDPM-1000, DDIM-50 and DPM-Solver++-20\n\n"
    "`diffuse bench <mode> --help` lists that mode's flags and their defaults.\n";

std::vector<std::string> split_list(const std::string& s, const char* flag) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  if (out.empty()) throw Error(std::string("--") + flag + " needs at least one value, got '" + s + "'", ErrorKind::usage);
  return out;
}

std::vector<int64_t> split_ints(const std::string& s, const char* flag) {
  std::vector<int64_t> out;
  for (const std::string& item : split_list(s, flag)) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v <= 0)
      throw Error(std::string("--") + flag + " " + s + ": expected positive integers separated by commas", ErrorKind::usage);
    out.push_back(v);
  }
  return out;
}

void write_json(const cxxopts::ParseResult& args, const nlohmann::json& report) {
  if (!args.count("json")) return;
  const std::string path = args["json"].as<std::string>();
  write_file_atomic(path, report.dump(2) + "\n");
  std::cout << "wrote " << path << "\n";
}

// Parses one mode's flags (a bad or stray one is a usage error, exit 2) and sets the CPU thread
// count (--threads) and cuDNN's algorithm choice (--conv-search); nullopt after printing --help.
std::optional<cxxopts::ParseResult> parse_mode(cxxopts::Options& cli, int argc, char** argv) {
  cli.add_options()("device", "cpu or cuda", cxxopts::value<std::string>()->default_value("cpu"))(
      "json", "also write the results as JSON to this file", cxxopts::value<std::string>())("h,help", "show this help");
  add_flags(cli, options::compute_table());
  cxxopts::ParseResult args = parse_flags(cli, argc, argv);
  if (args.count("help")) {
    std::cout << cli.help() << "\n";
    return std::nullopt;
  }
  options::ComputeOptions compute;
  read_flags(args, options::compute_table(), compute);
  options::check(options::compute_table(), compute, options::Naming::flag);
  set_cpu_threads(compute.threads);
  set_conv_search(compute.conv_search);
  // --json is written after the whole benchmark: a path it cannot be written to fails now instead.
  if (args.count("json")) check_output_file("--json", args["json"].as<std::string>(), "");
  return args;
}

// --profile and --profile-steps (train and sample): the eager steps the op profiler runs after the
// timed ones (docs/performance.md "Reading a profile"); 0 when --profile is not given.
void add_profile_flags(cxxopts::Options& cli) {
  cli.add_options()("profile", "then profile a few more steps, eagerly, op by op (table and JSON \"profile\")",
                    cxxopts::value<bool>()->default_value("false"))(
      "profile-steps", "how many steps --profile averages", cxxopts::value<int64_t>()->default_value("3"));
}

int64_t profile_steps(const cxxopts::ParseResult& args) {
  const int64_t steps = args["profile-steps"].as<int64_t>();
  if (steps <= 0) throw Error("--profile-steps must be positive, got " + std::to_string(steps), ErrorKind::usage);
  return args["profile"].as<bool>() ? steps : 0;
}

int bench_kernels(int argc, char** argv) {
  cxxopts::Options cli("diffuse bench kernels", "Time every custom kernel family against its reference.");
  cli.add_options()("filter", "only families whose \"family pass\" contains this (e.g. group_norm, attention bwd)",
                        cxxopts::value<std::string>()->default_value(""))(
      "quick", "smoke run: tiny config at batch 2, no large shapes, few repetitions",
      cxxopts::value<bool>()->default_value("false"))(
      "configs", "named UNet configs whose shapes are measured", cxxopts::value<std::string>()->default_value("tiny,fmnist-small,ddpm-cifar10"))(
      "batches", "batch sizes", cxxopts::value<std::string>()->default_value("64,128"))(
      "no-large", "skip the one large shape per family", cxxopts::value<bool>()->default_value("false"));
  auto args = parse_mode(cli, argc, argv);
  if (!args) return 0;
  bench::KernelBenchOptions o;
  o.device = parse_device(*args);
  o.filter = (*args)["filter"].as<std::string>();
  o.quick = (*args)["quick"].as<bool>();
  o.configs = split_list((*args)["configs"].as<std::string>(), "configs");
  o.batches = split_ints((*args)["batches"].as<std::string>(), "batches");
  o.large = !(*args)["no-large"].as<bool>();
  write_json(*args, bench::run_kernel_bench(o, std::cout));
  return 0;
}

int bench_train(int argc, char** argv) {
  cxxopts::Options cli("diffuse bench train", "Time the training step (forward, MSE, backward, AdamW + EMA).");
  bench::TrainBenchOptions d;
  cli.add_options()("config", "named UNet config or config.json", cxxopts::value<std::string>()->default_value(d.config))(
      "batch", "batch size (per rank under mpirun)", cxxopts::value<int64_t>()->default_value(std::to_string(d.batch)))(
      "precision", "fp32 or bf16 (cuda only)", cxxopts::value<std::string>()->default_value(d.precision))(
      "warmup", "untimed steps first", cxxopts::value<int64_t>()->default_value(std::to_string(d.warmup)))(
      "iters", "timed steps (the median is reported)", cxxopts::value<int64_t>()->default_value(std::to_string(d.iters)))(
      "seed", "random seed", cxxopts::value<uint64_t>()->default_value("0"));
  {
    auto adder = cli.add_options();
    add_flag(adder, "cuda-graphs",
             "on CUDA, time the step as a CUDA graph replay after the warm-up, as `diffuse train` runs it "
             "(on|off; off: eager, split into forward+loss, backward and optimizer)",
             &d.cuda_graphs);
  }
  add_profile_flags(cli);
  auto args = parse_mode(cli, argc, argv);
  if (!args) return 0;
  bench::TrainBenchOptions o;
  o.device = parse_device(*args);
  o.config = (*args)["config"].as<std::string>();
  o.batch = (*args)["batch"].as<int64_t>();
  o.precision = (*args)["precision"].as<std::string>();
  o.warmup = (*args)["warmup"].as<int64_t>();
  o.iters = (*args)["iters"].as<int64_t>();
  o.seed = (*args)["seed"].as<uint64_t>();
  o.cuda_graphs = (*args)["cuda-graphs"].as<bool>();
  o.profile_steps = profile_steps(*args);
  const nlohmann::json result = bench::run_train_bench(o, std::cout);
  if (collective::world().rank() == 0) write_json(*args, result);  // under mpirun: rank 0 reports for all
  return 0;
}

int bench_sample(int argc, char** argv) {
  cxxopts::Options cli("diffuse bench sample", "Time sampling: DDPM-1000, DDIM-50, DPM-Solver++(2M)-20.");
  const bench::SampleBenchOptions d;
  cli.add_options()("config", "named UNet config or config.json", cxxopts::value<std::string>()->default_value(d.config))(
      "batch", "batch sizes, comma-separated", cxxopts::value<std::string>()->default_value("64,1"))(
      "samplers", "any of ddpm, ddim, dpmpp-2m", cxxopts::value<std::string>()->default_value("ddpm,ddim,dpmpp-2m"))(
      "steps", "time only the first N steps of each sampler and extrapolate (0: all on cuda, 3 on cpu)",
      cxxopts::value<int64_t>()->default_value("0"))(
      "seed", "random seed", cxxopts::value<uint64_t>()->default_value("0"));
  add_profile_flags(cli);
  add_flags(cli, options::sampling_run_table());  // --cuda-graphs and --precision, as `diffuse sample` has them
  auto args = parse_mode(cli, argc, argv);
  if (!args) return 0;
  options::SamplingRunOptions run;
  read_flags(*args, options::sampling_run_table(), run);
  options::check(options::sampling_run_table(), run, options::Naming::flag);
  bench::SampleBenchOptions o;
  o.cuda_graphs = run.cuda_graphs;
  o.precision = run.precision;
  o.device = parse_device(*args);
  o.config = (*args)["config"].as<std::string>();
  o.batches = split_ints((*args)["batch"].as<std::string>(), "batch");
  o.samplers = split_list((*args)["samplers"].as<std::string>(), "samplers");
  o.timed_steps = (*args)["steps"].as<int64_t>();
  if (o.timed_steps < 0) throw Error("--steps must be >= 0, got " + std::to_string(o.timed_steps), ErrorKind::usage);
  o.seed = (*args)["seed"].as<uint64_t>();
  o.profile_steps = profile_steps(*args);
  write_json(*args, bench::run_sample_bench(o, std::cout));
  return 0;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string mode = argv[1];
  if (mode == "kernels") return bench_kernels(argc - 1, argv + 1);
  if (mode == "train") return bench_train(argc - 1, argv + 1);
  if (mode == "sample") return bench_sample(argc - 1, argv + 1);
  std::fprintf(stderr, "diffuse bench: unknown mode '%s' (expected kernels, train or sample)\n", mode.c_str());
  return 2;
}

}  // namespace diffuse::cli
