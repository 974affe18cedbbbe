// The run report (docs/cli.md "diffuse report", docs/formats.md): one self-contained report.html
// per run directory, made from the files the run already writes (config.json, metrics.jsonl,
// samples/step-N.png), so that a person can watch training in a browser without a service.
// train() keeps RUN/report.html current through LiveReport (rewritten atomically at each sample
// grid and checkpoint, at most every ~15 s otherwise, and at the end); `diffuse report` renders
// several runs on one page to compare them. The page's plots are inline SVG made here
// (engine/report_svg.h); the sample grids are <img> links relative to the page, not inlined, so
// that the page stays small however many grids a run writes and a rewrite costs the same at step
// 100 as at step 100000.
#pragma once
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace diffuse {

// One metrics.jsonl line (engine/trainer.cpp writes them). `skipped` is present only when the
// line has it (steps skipped for non-finite gradients; older runs have none).
struct MetricPoint {
  int64_t step = 0;
  double loss = 0, lr = 0, grad_norm = 0, images_per_second = 0, seconds = 0;
  std::optional<double> skipped;
};

struct SampleGridFile {
  int64_t step = 0;
  std::string path;  // as found in the run directory
};

// Everything a report shows of one run.
struct ReportRun {
  std::string directory;
  nlohmann::json config;  // config.json: {"train", "unet", "scheduler", "session"}
  std::vector<MetricPoint> metrics;
  std::vector<SampleGridFile> grids;  // by step
};

// Reads a run directory. Throws diffuse::Error (bad_input) naming the path when it is not a
// directory or has no config.json or no metrics.jsonl; a torn last metrics line (a run killed
// mid-write) is left out.
ReportRun load_report_run(const std::string& run_dir);

// Parses one metrics line (an object with step, loss, lr, grad_norm, images_per_second, seconds).
MetricPoint metric_point_from_json(const nlohmann::json& line, const std::string& source);

// This process's machine and the moment it started, saved as config.json's "session" object by
// train(): the CPU's name, the CPU kernels' instruction-set path, threads, the CUDA device when
// training runs on one, the diffuse version and the start time (UTC, ISO 8601).
nlohmann::json session_json(bool on_cuda);

struct ReportPage {
  std::string title;
  bool live = false;               // the page reloads itself every `reload_seconds`
  int reload_seconds = 10;
  std::string out_directory;       // where the page is written: image links are relative to it
  std::string generated_at;        // UTC, ISO 8601
};

// The whole page for one run (a run's own report) or several (a comparison).
std::string render_report_html(const std::vector<ReportRun>& runs, const ReportPage& page);

// Renders `runs` and replaces `out_file` atomically (nn/atomic_file.h).
void write_report(const std::vector<ReportRun>& runs, const std::string& out_file, bool live);

// RUN/report.html.
std::string report_path(const std::string& run_dir);

// train()'s report: loads the run once (metrics written before a resume included), then takes
// each new metrics line from the trainer instead of re-reading the file, and rewrites report.html
// when asked (`force`: a sample grid or checkpoint was written) or when `interval` has passed.
class LiveReport {
 public:
  explicit LiveReport(const std::string& run_dir,
                      std::chrono::steady_clock::duration interval = std::chrono::seconds(15));
  void add(const nlohmann::json& metrics_line);
  void add_grid(int64_t step, const std::string& path);
  // Writes when forced or when the interval has passed since the last write. Returns whether it wrote.
  bool update(bool force);
  void finish();  // the final write: the page stops reloading itself
  const std::string& path() const { return path_; }
  double seconds_writing() const { return seconds_writing_; }  // all writes so far

 private:
  void write(bool live);

  ReportRun run_;
  std::string path_;
  std::chrono::steady_clock::duration interval_;
  std::chrono::steady_clock::time_point last_write_{};
  double seconds_writing_ = 0;
};

// Now, UTC, ISO 8601 ("2026-12-04T03:33:46Z").
std::string utc_timestamp();

// Escapes & < > " ' for HTML text and attribute values: every string that comes from a run
// (options, paths, config values) passes through it.
std::string html_escape(const std::string& text);

}  // namespace diffuse
