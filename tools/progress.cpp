// See progress.h. The bar is redrawn at most 10 times a second so it never slows a fast loop.
#include "tools/progress.h"

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
// "2.41 s/step" or "84 ms/step": what the ETA is made of.
std::string per_step_text(double seconds) {
  char buf[32];
  if (seconds >= 1)
    std::snprintf(buf, sizeof buf, "%.2f s/step", seconds);
  else
    std::snprintf(buf, sizeof buf, "%.0f ms/step", seconds * 1e3);
  return buf;
}
}  // namespace

Progress::Progress(std::string label, int64_t total, bool terminal, int64_t log_every, FILE* out, Clock clock)
    : label_(std::move(label)),
      total_(total),
      terminal_(terminal),
      log_every_(log_every < 1 ? 1 : log_every),
      out_(out),
      clock_(std::move(clock)),
      created_(clock_()) {}

void Progress::update(int64_t step, const std::string& fields, double items_per_second, double seconds) {
  const auto now = clock_();
  const bool first = first_step_ < 0;
  if (first) first_step_ = step;
  const double elapsed = seconds >= 0 ? seconds : std::chrono::duration<double>(now - created_).count();
  const double measured = static_cast<double>(step - first_step_ + 1);  // steps the elapsed time covers
  const double per_step = measured > 0 ? elapsed / measured : 0;
  const double eta = per_step * static_cast<double>(total_ - step);
  const bool last = step == total_;
  if (terminal_) {
    if (!last && !first && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const int width = 24;
    int filled = total_ > 0 ? static_cast<int>(width * step / total_) : width;
    std::string bar(static_cast<size_t>(filled < 0 ? 0 : filled > width ? width : filled), '#');
    bar.resize(width, '.');
    std::fprintf(out_, "\r%s [%s] %lld/%lld  %s%s  %s  ETA %s\x1b[K", label_.c_str(), bar.c_str(),
                 static_cast<long long>(step), static_cast<long long>(total_), fields.c_str(),
                 rate_text(items_per_second).c_str(), per_step_text(per_step).c_str(), format_duration(eta).c_str());
    if (last) std::fprintf(out_, "\n");
  } else {
    const bool quiet_too_long = std::chrono::duration<double>(now - last_line_).count() >= kQuietLimitSeconds;
    if (!(first || last || step % log_every_ == 0 || quiet_too_long)) return;
    last_line_ = now;
    std::fprintf(out_, "%s step %lld/%lld  %s%s  elapsed %s  %s  ETA %s\n", label_.c_str(),
                 static_cast<long long>(step), static_cast<long long>(total_), fields.c_str(),
                 rate_text(items_per_second).c_str(), format_duration(elapsed).c_str(),
                 per_step_text(per_step).c_str(), format_duration(eta).c_str());
  }
  std::fflush(out_);
}

void Progress::finish(const std::string& message) {
  const double elapsed = std::chrono::duration<double>(clock_() - created_).count();
  std::fprintf(out_, "%s %s in %s\n", label_.c_str(), message.c_str(), format_duration(elapsed).c_str());
  std::fflush(out_);
}

}  // namespace diffuse::cli
