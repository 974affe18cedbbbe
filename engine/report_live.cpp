// See report.h: train()'s report.html. The run is read from disk once, when training starts (a
// resumed run's earlier metrics included); after that each step's metrics line and each grid come
// from the trainer, so a rewrite costs one render of the page, never a re-read of the whole log.
#include <algorithm>

#include "engine/report.h"

namespace diffuse {

LiveReport::LiveReport(const std::string& run_dir, std::chrono::steady_clock::duration interval)
    : run_(load_report_run(run_dir)), path_(report_path(run_dir)), interval_(interval) {}

void LiveReport::add(const nlohmann::json& metrics_line) {
  run_.metrics.push_back(metric_point_from_json(metrics_line, run_.directory + "/metrics.jsonl"));
}

void LiveReport::add_grid(int64_t step, const std::string& path) {
  for (SampleGridFile& g : run_.grids)
    if (g.step == step) {  // a resumed run writes a step's grid again
      g.path = path;
      return;
    }
  run_.grids.push_back({step, path});
  std::sort(run_.grids.begin(), run_.grids.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
}

bool LiveReport::update(bool force) {
  if (!force && std::chrono::steady_clock::now() - last_write_ < interval_) return false;
  write(true);
  return true;
}

void LiveReport::finish() { write(false); }

void LiveReport::write(bool live) {
  const auto t0 = std::chrono::steady_clock::now();
  write_report({run_}, path_, live);
  last_write_ = std::chrono::steady_clock::now();
  seconds_writing_ += std::chrono::duration<double>(last_write_ - t0).count();
}

}  // namespace diffuse
