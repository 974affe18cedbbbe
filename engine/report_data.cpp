// See report.h: reading a run directory for its report, and the machine description train() saves
// in config.json ("session") so that a report made later, elsewhere, still says where it ran.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "diffuse/error.h"
#include "engine/report.h"
#include "nn/json_input.h"
#include "nn/runtime.h"

namespace diffuse {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

Error bad_input(const std::string& what) { return Error(what, ErrorKind::bad_input); }

double number_field(const json& line, const char* key, const std::string& source) {
  const auto it = line.find(key);
  if (it == line.end() || !it->is_number()) throw bad_input(source + ": \"" + key + "\" is missing or not a number");
  return it->get<double>();
}

// samples/step-N.png, by step; other files in samples/ are not grids.
std::vector<SampleGridFile> find_grids(const fs::path& run) {
  std::vector<SampleGridFile> grids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run / "samples", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() < 10 || name.rfind("step-", 0) != 0 || name.substr(name.size() - 4) != ".png") continue;
    const std::string digits = name.substr(5, name.size() - 9);
    if (digits.empty() || digits.size() > 15 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    grids.push_back({std::stoll(digits), entry.path().string()});
  }
  std::sort(grids.begin(), grids.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return grids;
}

}  // namespace

std::string report_path(const std::string& run_dir) { return (fs::path(run_dir) / "report.html").string(); }

MetricPoint metric_point_from_json(const json& line, const std::string& source) {
  if (!line.is_object()) throw bad_input(source + ": a metrics line is not a JSON object");
  MetricPoint p;
  p.step = json_integer(line.contains("step") ? line.at("step") : json(), 0, INT64_MAX, source + ": \"step\"");
  p.loss = number_field(line, "loss", source);
  p.lr = number_field(line, "lr", source);
  p.grad_norm = number_field(line, "grad_norm", source);
  p.images_per_second = number_field(line, "images_per_second", source);
  p.seconds = number_field(line, "seconds", source);
  if (const auto it = line.find("skipped"); it != line.end()) {
    if (it->is_boolean()) p.skipped = it->get<bool>() ? 1.0 : 0.0;
    else if (it->is_number()) p.skipped = it->get<double>();
    else throw bad_input(source + ": \"skipped\" is not a number");
  }
  return p;
}

ReportRun load_report_run(const std::string& run_dir) {
  const fs::path run(run_dir);
  std::error_code ec;
  if (!fs::is_directory(run, ec)) throw bad_input(run_dir + ": no such run directory");
  const std::string config_path = (run / "config.json").string(), metrics_path = (run / "metrics.jsonl").string();
  if (!fs::exists(config_path, ec)) throw bad_input(run_dir + ": not a run directory (no config.json)");
  if (!fs::exists(metrics_path, ec)) throw bad_input(metrics_path + ": no such file (has the run started training?)");
  ReportRun r;
  r.directory = run_dir;
  r.config = parse_json_input(read_json_input_file(config_path, "the run's config"), config_path);
  if (!r.config.is_object()) throw bad_input(config_path + ": not a run's config.json");
  std::ifstream in(metrics_path);
  if (!in) throw bad_input(metrics_path + ": cannot be read");
  size_t line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.empty()) continue;
    const std::string source = metrics_path + " line " + std::to_string(line_number);
    json entry;
    try {
      entry = parse_json_input(line, source);
    } catch (const Error&) {
      if (in.peek() == std::char_traits<char>::eof()) break;  // a torn last line: the run was killed mid-write
      throw;
    }
    r.metrics.push_back(metric_point_from_json(entry, source));
  }
  r.grids = find_grids(run);
  return r;
}

json session_json(bool on_cuda) {
  json s = {{"started", utc_timestamp()},           {"cpu", cpu_model_name()},
            {"cpu_kernels", cpu_isa_in_use()}, {"threads", cpu_threads()},
            {"version", DIFFUSE_VERSION}};
  if (on_cuda) {
    const auto devices = cuda_devices();
    if (!devices.empty()) s["gpu"] = devices.front().name;
  }
  return s;
}

}  // namespace diffuse
