// See progress.h. The bar is redrawn at most 10 times a second so it never slows a fast loop.
#include "tools/progress.h"

#include <cstdio>

namespace diffuse::cli {

std::string format_duration(double s) {
  char buf[32];
  if (s < 0) s = 0;
  long t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

namespace {
// "  41.1 img/s", or nothing when the caller has no rate to report.
std::string rate_text(double items_per_second) {
  if (!(items_per_second > 0)) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "  %.1f img/s", items_per_second);
  return buf;
}
}  // namespace

Progress::Progress(std::string label, int64_t total, bool terminal, int64_t log_every)
    : label_(std::move(label)),
      total_(total),
      terminal_(terminal),
      log_every_(log_every < 1 ? 1 : log_every),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t step, const std::string& fields, double items_per_second) {
  auto now = std::chrono::steady_clock::now();
  if (start_step_ < 0) {
    start_step_ = step - 1;
    start_ = now;
  }
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double per_step = step > start_step_ ? elapsed / static_cast<double>(step - start_step_) : 0;
  double eta = per_step * static_cast<double>(total_ - step);
  if (terminal_) {
    bool last = step == total_;
    if (!last && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const int width = 24;
    int filled = total_ ? static_cast<int>(width * step / total_) : width;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    std::printf("\r%s [%s] %lld/%lld  %s%s  ETA %s\x1b[K", label_.c_str(), bar.c_str(),
                static_cast<long long>(step), static_cast<long long>(total_), fields.c_str(),
                rate_text(items_per_second).c_str(), format_duration(eta).c_str());
    if (last) std::printf("\n");
    std::fflush(stdout);
  } else if (step % log_every_ == 0 || step == total_ || step == start_step_ + 1) {
    std::printf("%s step %lld/%lld  %s%s  elapsed %s  ETA %s\n", label_.c_str(), static_cast<long long>(step),
                static_cast<long long>(total_), fields.c_str(), rate_text(items_per_second).c_str(),
                format_duration(elapsed).c_str(), format_duration(eta).c_str());
    std::fflush(stdout);
  }
}

void Progress::finish(const std::string& message) {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::printf("%s %s in %s\n", label_.c_str(), message.c_str(), format_duration(elapsed).c_str());
  std::fflush(stdout);
}

}  // namespace diffuse::cli
