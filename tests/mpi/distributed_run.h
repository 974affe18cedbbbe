// Helpers for the data-parallel training tests (tests/cpu/test_distributed.cpp on the CPU,
// tests/cuda/test_distributed_nccl.cpp on the CUDA backend): starting `diffuse` under mpirun,
// comparing two runs' metrics and weights, and the overlapped gradient all-reduce's checks. The tests are skipped, saying why, only when this
// build has no MPI or mpirun is not installed (scripts/setup.sh installs it, so CI runs them).
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "nn/autograd.h"
#include "nn/collective.h"
#include "nn/ops.h"
#include "nn/safetensors.h"
#include "support/process.h"
#include "support/temp_dir.h"

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

// Starts a long 2-rank `train --out out <data>` under mpirun, sends `signal` (STOP: a hung rank;
// KILL: a dead one) to rank 1 once two steps are logged (tests/mpi/kill_rank.sh), and checks that
// the job ended non-zero within 60 s of the signal with `naming_rank_1` in its output. A hung
// rank is found by the collectives' deadline, here 10 s (600 s by default).
inline void check_rank_kill_ends_job(const std::string& out, const std::string& signal,
                                     const std::vector<std::string>& data, const std::string& naming_rank_1) {
  std::vector<std::string> argv = {"/bin/bash", source_path("tests/mpi/kill_rank.sh"), find_mpirun(), DIFFUSE_CLI_PATH,
                                   out, signal};
  argv.insert(argv.end(), data.begin(), data.end());
  const RunResult r = run(argv, "", {{"DIFFUSE_COLLECTIVE_TIMEOUT", "10"}});
  INFO(r.output);
  std::smatch m;
  REQUIRE(std::regex_search(r.output, m, std::regex("exit=([0-9]+) seconds=([0-9]+)")));
  CHECK(std::stoi(m[1]) != 0);
  CHECK(std::stoi(m[2]) < 60);
  CHECK_THAT(r.output, Catch::Contains(naming_rank_1));
}

// The two schedules of the gradient all-reduce (docs/distributed.md, "Overlap"): 2-rank runs of
// `train_args(out)` with every bucket reduced after backward (DIFFUSE_GRAD_OVERLAP=0, default
// 4 MiB buckets) and with 64 KiB buckets reduced while backward runs. Averaging is per element
// and a sum of two ranks does not depend on how the elements are grouped, so the loss curve,
// the gradient norms and the weights file (`weights`, under the run directory) must be the same
// bits. `overlapped_env` is added to the second job's environment.
inline void check_overlap_changes_no_bit(const std::string& dir,
                                         const std::function<std::vector<std::string>(const std::string&)>& train_args,
                                         const std::string& weights, const EnvVars& overlapped_env = {}) {
  const std::string plain = dir + "/plain", overlapped = dir + "/overlapped";
  require_ok(run_cli_ranks(2, train_args(plain), {{"DIFFUSE_GRAD_OVERLAP", "0"}}), "two ranks, reduced after backward");
  EnvVars env = {{"DIFFUSE_GRAD_BUCKET_MB", "0.0625"}};
  env.insert(env.end(), overlapped_env.begin(), overlapped_env.end());
  require_ok(run_cli_ranks(2, train_args(overlapped), env), "two ranks, 64 KiB buckets reduced during backward");
  for (const char* field : {"loss", "grad_norm"}) {
    INFO(field);
    REQUIRE(!metric(plain, field).empty());
    CHECK(metric(plain, field) == metric(overlapped, field));
  }
  CHECK(slurp(plain + weights) == slurp(overlapped + weights));
}

// `mpirun -np 2 diffuse bench train <args>` with `env`: its JSON (the gradient all-reduce's
// allreduce_buckets and allreduce_buckets_during_backward per step among it).
inline nlohmann::json bench_two_ranks(const std::string& json_path, std::vector<std::string> args, const EnvVars& env) {
  args.insert(args.begin(), {"bench", "train"});
  args.insert(args.end(), {"--json", json_path});
  require_ok(run_cli_ranks(2, args, env), "two-rank bench train");
  return nlohmann::json::parse(slurp(json_path));
}

// `mpirun -np ranks <this test binary> <test name>`: a hidden test case (tag "[.…]") run by
// every rank, e.g. check_gradient_sync_on_this_rank.
// A job still running after 120 s is ended by `timeout` (exit status 124).
inline RunResult run_self_ranks(int ranks, const std::string& test_name, const EnvVars& env = {}) {
  return run({"/usr/bin/timeout", "-s", "KILL", "120", find_mpirun(), "--allow-run-as-root", "--oversubscribe", "--bind-to",
              "none", "-np", std::to_string(ranks), std::filesystem::read_symlink("/proc/self/exe").string(),
              test_name},
             "", env);
}

// Runs a hidden test case on 2 ranks (run_self_ranks) and checks that every rank passed it.
inline void check_self_ranks_pass(const std::string& test_name, const EnvVars& env = {}) {
  const RunResult r = run_self_ranks(2, test_name, env);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("All tests passed"));
}

// One rank's part of the GradientSync test (2 ranks): parameters whose gradients are known
// rank-dependent inputs, so the expected mean (g0 + g1) / 2 is computed exactly on the host.
//   loss = sum(x0·P1) + sum(x1·P2) + sum(x2·P3) + sum(xa·P4) + sum(xb·P4) + sum(w·(P6 + x5·P5))
// In 10 KiB buckets, reverse order: [P6] [P5] [P4] [P3] [P2] [P1 P0]. P0 is never used (its mean
// is zeros), so the last bucket waits for finish(); P4 is tied, alone in its bucket: started
// after its first use it would carry half its gradient; P6 (reduced while x5·P5's branch still
// runs) gets the very tensor add's backward passes on, and NCCL reduces it in place. Run with
// those buckets overlapped with backward and with one bucket after backward: both must equal the
// expected mean bit for bit, and the overlapped run must have started 5 buckets during backward.
inline void check_gradient_sync_on_this_rank(Device device) {
  collective::Communicator& comm = collective::world();
  REQUIRE(comm.size() == 2);
  const std::vector<int64_t> sizes = {7, 300, 5000, 3000, 2000, 2000, 2000};  // P0..P6
  std::vector<Tensor> params;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor p = Tensor::rand({sizes[i]}, 100 + i).to(device);
    p.set_requires_grad(true);
    params.push_back(p);
  }
  // Rank r's inputs x0..x6 (xa = x3, xb = x4, w = x6); every rank can make every rank's.
  auto inputs_of = [&](int rank) {
    const std::vector<int64_t> n = {300, 5000, 3000, 2000, 2000, 2000, 2000};
    std::vector<Tensor> x;
    for (size_t i = 0; i < n.size(); ++i) x.push_back(Tensor::rand({n[i]}, 1000 + 10 * rank + i));
    return x;
  };
  // The gradients rank r computes, on the host: P0 none, P1..P3 x0..x2, P4 xa + xb, P5 x5·w, P6 w.
  auto grads_of = [&](int rank) {
    const std::vector<Tensor> x = inputs_of(rank);
    auto at = [&](size_t i, int64_t k) { return x[i].data<float>()[k]; };
    std::vector<std::vector<float>> g(sizes.size());
    g[0].assign(7, 0.0f);
    for (int i = 1; i <= 3; ++i) g[i].assign(x[i - 1].data<float>(), x[i - 1].data<float>() + sizes[i]);
    for (int64_t k = 0; k < 2000; ++k) {
      g[4].push_back(at(3, k) + at(4, k));
      g[5].push_back(at(5, k) * at(6, k));
      g[6].push_back(at(6, k));
    }
    return g;
  };
  const auto g0 = grads_of(0), g1 = grads_of(1);
  auto backward = [&](bool overlap, double bucket_mib) {
    comm.set_grad_buckets(bucket_mib, overlap);
    for (Tensor& p : params) p.zero_grad();
    std::vector<Tensor> x;
    for (const Tensor& t : inputs_of(comm.rank())) x.push_back(t.to(device));
    Tensor loss = ops::sum(ops::mul(x[0], params[1]));
    loss = ops::add(loss, ops::sum(ops::mul(x[1], params[2])));
    loss = ops::add(loss, ops::sum(ops::mul(x[2], params[3])));
    loss = ops::add(loss, ops::sum(ops::mul(x[3], params[4])));
    loss = ops::add(loss, ops::sum(ops::mul(x[4], params[4])));
    loss = ops::add(loss, ops::sum(ops::mul(x[6], ops::add(params[6], ops::mul(x[5], params[5])))));
    collective::GradientSync sync(comm, params);
    sync.begin("the test's gradients");
    run_backward(loss, Tensor::ones(loss.shape(), DType::f32, device), &sync);
    sync.finish();
    return sync.stats();
  };
  auto check_means = [&](const char* schedule) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      INFO(schedule << ": parameter " << i);
      const Tensor got = params[i].grad().to(Device::cpu);
      REQUIRE(got.numel() == sizes[i]);
      int64_t wrong = 0;
      for (int64_t k = 0; k < sizes[i]; ++k) wrong += got.data<float>()[k] != (g0[i][k] + g1[i][k]) * 0.5f;
      CHECK(wrong == 0);
    }
  };
  const collective::GradientSyncStats overlapped = backward(true, 10.0 / 1024);
  check_means("10 KiB buckets during backward");
  CHECK(overlapped.buckets == 6);
  CHECK(overlapped.buckets_during_backward == 5);  // all but the bucket of unused P0
  const collective::GradientSyncStats after = backward(false, 4);
  check_means("one bucket after backward");
  CHECK(after.buckets == 1);
  CHECK(after.buckets_during_backward == 0);
}

// One rank's part of the hung-rank test of the device all-reduce's deadline (2 ranks): after one
// round that sets NCCL up, rank 1 stops itself (SIGSTOP, a hung process) before its backward.
// Rank 0's gradient all-reduce must give up within the communicator's 5 s deadline and end the
// job naming rank 1 (Communicator::abort prints "diffuse: rank 0 of 2: <the error>").
inline void hang_rank_1_during_gradient_sync(Device device) {
  collective::Communicator& comm = collective::world();
  REQUIRE(comm.size() == 2);
  comm.set_timeout(5);
  Tensor p = Tensor::rand({1000}, 7).to(device);
  p.set_requires_grad(true);
  collective::GradientSync sync(comm, {p});
  for (int round = 0; round < 2; ++round) {
    if (round == 1 && comm.rank() == 1) std::raise(SIGSTOP);
    p.zero_grad();
    Tensor loss = ops::sum(ops::mul(Tensor::rand({1000}, 8 + comm.rank()).to(device), p));
    sync.begin("round " + std::to_string(round) + "'s gradients");
    run_backward(loss, Tensor::ones(loss.shape(), DType::f32, device), &sync);
    try {
      sync.finish();
    } catch (const std::exception& e) {
      comm.abort(e.what());
    }
  }
  comm.abort("round 1's gradient all-reduce completed although rank 1 was stopped");
}

// Runs a hung-rank test case (rank 1 stops itself at a fixed place) under mpirun and checks that
// the job ended non-zero within 60 s with `naming_rank_1` (rank 0's error) in its output.
inline void check_hung_rank_ends_job(const std::string& test_name, const std::string& naming_rank_1) {
  const auto t0 = std::chrono::steady_clock::now();
  const RunResult r = run_self_ranks(2, test_name);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK(r.exit_code != 137);  // not `timeout`'s kill
  CHECK(seconds < 60);
  CHECK_THAT(r.output, Catch::Contains(naming_rank_1));
}

// Runs hang_rank_1_during_gradient_sync's test case: rank 0 names rank 1 as the all-reduce's
// missing rank.
inline void check_hung_rank_ends_gradient_sync(const std::string& test_name) {
  check_hung_rank_ends_job(test_name, "rank 0 of 2: the all-reduce of round 1's gradients did not complete within 5 s: "
                                      "rank 1 did not answer (dead or hung)");
}

}  // namespace diffuse::test
