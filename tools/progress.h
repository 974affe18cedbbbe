// Progress display for long commands: a live one-line bar (step/total, loss, images/s, ETA)
// redrawn in place when stdout is a terminal; off a terminal, plain log lines at the first step,
// every `log_every` steps, at least every 30 s whatever the step interval, and at the last step.
// The ETA comes from the steps measured so far (the time per step is shown with it), never from
// the setup before the first step; tests/cpu/test_progress.cpp drives it with a fake clock.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace diffuse::cli {

class Progress {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  // A line off a terminal at least this often, however far apart the `log_every` steps are.
  static constexpr double kQuietLimitSeconds = 30;

  Progress(std::string label, int64_t total, bool terminal, int64_t log_every, FILE* out = stdout,
           Clock clock = std::chrono::steady_clock::now);
  // Reports that `step` (1-based) finished; `fields` is extra text such as "loss 0.0412".
  // `seconds` is how long the steps reported so far took, measured by the caller from the start of
  // the first of them (diffuse::TrainUpdate::seconds); < 0 measures from this object's creation.
  void update(int64_t step, const std::string& fields, double items_per_second, double seconds = -1);
  void finish(const std::string& message);

 private:
  std::string label_;
  int64_t total_;
  bool terminal_;
  int64_t log_every_;
  FILE* out_;
  Clock clock_;
  std::chrono::steady_clock::time_point created_;
  int64_t first_step_ = -1;  // the first step reported: the ETA counts the steps from it
  std::chrono::steady_clock::time_point last_draw_{}, last_line_{};
};

std::string format_duration(double seconds);  // "1h02m", "3m20s", "12s"

}  // namespace diffuse::cli
