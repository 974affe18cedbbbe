// See measure.h. The git commit is $DIFFUSE_GIT_COMMIT when set, else kBuiltCommit, which
// cmake/built_commit.cmake writes into built_commit.cpp at build time (benchmarks/CMakeLists.txt).
#include "benchmarks/measure.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>

#include "benchmarks/cases.h"
#include "nn/runtime.h"

namespace diffuse::bench {

std::string strf(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  char small[512];
  va_list copy;
  va_copy(copy, args);
  int n = std::vsnprintf(small, sizeof small, fmt, copy);
  va_end(copy);
  std::string s;
  if (n >= 0 && n < int(sizeof small)) {
    s.assign(small, size_t(n));
  } else if (n >= 0) {
    s.resize(size_t(n) + 1);
    std::vsnprintf(s.data(), s.size(), fmt, args);
    s.resize(size_t(n));
  }
  va_end(args);
  return s;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

Timing summarize(const std::vector<double>& ms) {
  Timing t;
  t.median_ms = median_of(ms);
  t.min_ms = ms.empty() ? 0 : *std::min_element(ms.begin(), ms.end());
  t.reps = static_cast<int>(ms.size());
  return t;
}

Timing time_host(const std::function<void(int)>& fn, const RepeatPolicy& policy) {
  using clock = std::chrono::steady_clock;
  int call = 0;
  for (int i = 0; i < policy.warmup; ++i) fn(call++);
  std::vector<double> ms;
  double total = 0;
  while (static_cast<int>(ms.size()) < policy.min_reps ||
         (total < policy.target_seconds && static_cast<int>(ms.size()) < policy.max_reps)) {
    auto t0 = clock::now();
    fn(call++);
    double s = std::chrono::duration<double>(clock::now() - t0).count();
    ms.push_back(s * 1e3);
    total += s;
  }
  return summarize(ms);
}

void fill_uniform(float* p, int64_t n, uint64_t seed, float lo, float hi) {
  const float scale = (hi - lo) / 16777216.0f;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    // splitmix64 of (seed, i): good enough spread for benchmark inputs.
    uint64_t z = (static_cast<uint64_t>(i) + 1) * 0x9E3779B97F4A7C15ull + seed * 0xD1B54A32D192ED03ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = lo + static_cast<float>(z >> 40) * scale;
  }
}

std::string cpu_setup_line() {
  return strf("cpu: %d threads (%s), %s path\n", cpu_threads(), cpu_threads_choice().c_str(), cpu_isa_in_use().c_str());
}

double current_rss_mib() {
  std::ifstream statm("/proc/self/statm");
  double pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return pages_resident * double(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

double peak_rss_mib() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return double(usage.ru_maxrss) / 1024;  // Linux reports KiB
}

int cpu_cores() {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

size_t cpu_last_level_cache_bytes() {
  // sysfs first: in a VM, sysconf may report the host's whole L3 (here 320 MiB for a 32 MiB one).
  int best_level = 0;
  size_t best = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream level_in(dir + "level"), size_in(dir + "size");
    int level = 0;
    std::string size;
    if (!(level_in >> level) || !(size_in >> size) || size.empty()) continue;
    size_t bytes = std::strtoull(size.c_str(), nullptr, 10);
    if (size.back() == 'K') bytes <<= 10;
    if (size.back() == 'M') bytes <<= 20;
    if (level > best_level && bytes > 0) {
      best_level = level;
      best = bytes;
    }
  }
  if (best > 0) return best;
  long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 > 0) return static_cast<size_t>(l3);
  return size_t(32) << 20;
}

extern const char* const kBuiltCommit;  // built_commit.cpp, written at build time

std::string git_commit() {
  // A copy of the tree without .git (a GPU machine's) is told its commit by scripts/gpu-check.sh.
  if (const char* env = std::getenv("DIFFUSE_GIT_COMMIT"); env && *env) return env;
  return kBuiltCommit;
}

std::string utc_date() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

nlohmann::json run_context(Device device) {
  nlohmann::json ctx;
  nlohmann::json dev;
  dev["kind"] = device_name(device);
  dev["cpu"] = cpu_model_name();
  dev["cores"] = cpu_cores();
  if (device == Device::cuda) dev["gpu"] = cuda_device_description();
  dev["name"] = device == Device::cuda ? dev["gpu"].value("name", "CUDA device") : dev["cpu"].get<std::string>();
  ctx["device"] = dev;
  nlohmann::json build = nlohmann::json::object();
  for (auto& [key, value] : build_info()) build[key] = value;
  ctx["build"] = build;
  ctx["cpu_threads"] = cpu_threads();
  ctx["cpu_threads_choice"] = cpu_threads_choice();
  ctx["cpu_isa"] = cpu_isa_in_use();
  // How cuDNN chose the convolutions' algorithms (--conv-search): timed is the fastest, heuristic
  // what reproducible runs cost.
  if (device == Device::cuda) ctx["conv_search"] = conv_search();
  // A shared machine's other work shows up in every CPU number: record how busy it was.
  std::ifstream load("/proc/loadavg");
  double l1 = 0, l5 = 0, l15 = 0;
  if (load >> l1 >> l5 >> l15) ctx["load_average"] = {l1, l5, l15};
  // OpenMP's wait policy decides how threads idle between parallel regions, which matters a lot
  // on a machine whose cores are shared with other work.
  nlohmann::json omp_env = nlohmann::json::object();
  for (const char* name : {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"})
    if (const char* v = std::getenv(name)) omp_env[name] = v;
  ctx["openmp_env"] = omp_env;
  ctx["git_commit"] = git_commit();
  ctx["date"] = utc_date();
  return ctx;
}

}  // namespace diffuse::bench
