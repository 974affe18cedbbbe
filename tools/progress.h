// Progress display for long commands: a live one-line bar (step/total, loss, images/s, ETA)
// redrawn in place when stdout is a terminal, plain log lines every `log_every` steps otherwise.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace diffuse::cli {

class Progress {
 public:
  Progress(std::string label, int64_t total, bool terminal, int64_t log_every);
  // Reports that `step` (1-based) finished; `fields` is extra text such as "loss 0.0412".
  void update(int64_t step, const std::string& fields, double items_per_second);
  void finish(const std::string& message);

 private:
  std::string label_;
  int64_t total_;
  bool terminal_;
  int64_t log_every_;
  std::chrono::steady_clock::time_point start_;
  int64_t start_step_ = -1;
  std::chrono::steady_clock::time_point last_draw_{};
};

std::string format_duration(double seconds);  // "1h02m", "3m20s", "12s"

}  // namespace diffuse::cli
