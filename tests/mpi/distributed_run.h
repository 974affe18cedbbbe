// Helpers for the data-parallel training tests (tests/cpu/test_distributed.cpp on the CPU,
// tests/cuda/test_distributed_nccl.cpp on the CUDA backend): starting `diffuse` under mpirun, and
// comparing two runs' metrics and weights. The tests are skipped, saying why, only when this
// build has no MPI or mpirun is not installed (scripts/setup.sh installs it, so CI runs them).
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "nn/collective.h"
#include "nn/safetensors.h"
#include "support/process.h"

namespace diffuse::test {

// mpirun on PATH, or empty.
inline std::string find_mpirun() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':'))
    if (!dir.empty() && std::filesystem::exists(dir + "/mpirun")) return dir + "/mpirun";
  return "";
}

// Why the MPI tests cannot run here, or empty when they can.
inline std::string mpi_tests_unavailable() {
  if (!collective::built_with_mpi()) return "this build has no MPI (-DDIFFUSE_MPI=OFF or MPI not found)";
  if (find_mpirun().empty()) return "mpirun is not installed (scripts/setup.sh installs openmpi-bin)";
  return "";
}

// Opens every MPI test case: without MPI or mpirun it says why as a Catch2 warning and returns.
#define DIFFUSE_MPI_TEST_GUARD()                                                             \
  do {                                                                                       \
    if (const std::string why = ::diffuse::test::mpi_tests_unavailable(); !why.empty()) {    \
      WARN("skipped: " << why);                                                              \
      return;                                                                                \
    }                                                                                        \
  } while (0)

// Fails the test case with the command's output unless it exited 0.
inline void require_ok(const RunResult& r, const std::string& what) {
  INFO(what << ":\n" << r.output);
  REQUIRE(r.exit_code == 0);
}

// `mpirun -np ranks diffuse <args>`: as root where tests run in containers, more ranks than cores
// allowed, no pinning (the ranks share the test machine's cores with other tests).
inline RunResult run_cli_ranks(int ranks, const std::vector<std::string>& args, const EnvVars& env = {}) {
  std::vector<std::string> argv = {find_mpirun(), "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                                   "-np", std::to_string(ranks), DIFFUSE_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, "", env);
}

// One field of every line of a run's metrics.jsonl, in order.
inline std::vector<double> metric(const std::string& run_dir, const char* field) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<double> out;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line).at(field).get<double>());
  return out;
}

// The largest |a - b| / max(|a|, |b|, floor) over two equally long series (1e30 when the lengths differ).
inline double max_relative_difference(const std::vector<double>& a, const std::vector<double>& b, double floor) {
  if (a.size() != b.size() || a.empty()) return 1e30;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max({std::abs(a[i]), std::abs(b[i]), floor}));
  return worst;
}

// The largest |a - b| over every tensor of two safetensors files with the same names and shapes
// (1e30 when they differ in names or shapes).
inline double max_weight_difference(const std::string& path_a, const std::string& path_b) {
  const SafetensorsFile a = SafetensorsFile::open(path_a), b = SafetensorsFile::open(path_b);
  if (a.names() != b.names()) return 1e30;
  double worst = 0;
  for (const std::string& name : a.names()) {
    const std::vector<double> x = a.get(name).to_vector(), y = b.get(name).to_vector();
    if (x.size() != y.size()) return 1e30;
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(x[i] - y[i]));
  }
  return worst;
}

// Every path under a run directory, relative to it, sorted: what rank 0 alone should have written.
inline std::vector<std::string> run_files(const std::string& run_dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(run_dir))
    out.push_back(std::filesystem::relative(e.path(), run_dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace diffuse::test
