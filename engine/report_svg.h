// The report's plots (engine/report.h): a metric over steps, one series per run, drawn as inline
// SVG here so that the page needs no plotting library and no network. A series with more points
// than the plot has pixel columns is drawn from the lowest and highest point of each column (the
// curve's envelope looks the same, and the page stays small); the <g class="series"> of each run
// says how many metric points it represents (data-points) and how many it draws (data-drawn), and
// carries the drawn points' values (data-xy) for the page's hover. The loss plot also draws a
// smoothed line (TensorBoard's debiased exponential moving average; the page's slider recomputes
// it from data-base) and a second, log-scale copy of itself that the page's toggle shows instead.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace diffuse::report_svg {

struct Series {
  std::string label, color;
  std::vector<double> steps, values;  // same length, steps increasing
};

struct PlotSpec {
  std::string metric;  // the id the page's script and tests use: "loss", "lr", ...
  std::string title;
  bool smoothed = false;       // the loss: a smoothed line and the log-scale copy
  double smoothing = 0.6;      // the weight the smoothed line is drawn with at first
};

// Geometry shared with the page's script (report_html.cpp passes it on as data attributes).
constexpr int kWidth = 640, kHeight = 220, kLeft = 58, kRight = 14, kTop = 12, kBottom = 30;
constexpr int kColumns = kWidth - kLeft - kRight;  // pixel columns of the plotting area
// The smoothing control recomputes from at most this many points (means of equal step ranges).
constexpr size_t kSmoothingBase = 1000;

// Indices of the points to draw, increasing: all when there are at most 2 per column, else the
// first lowest and first highest point of each of `columns` equal step ranges over [x0, x1].
std::vector<size_t> downsample_min_max(const std::vector<double>& steps, const std::vector<double>& values, double x0,
                                       double x1, int columns);

// The series the smoothing starts from: the points themselves when there are at most `cap`,
// else the mean step and mean value of `cap` consecutive, near-equal runs of points.
void smoothing_base(const std::vector<double>& steps, const std::vector<double>& values, size_t cap,
                    std::vector<double>& base_steps, std::vector<double>& base_values);

// TensorBoard's smoothing: an exponential moving average with weight `weight` in [0, 1),
// debiased (divided by 1 - weight^k) so that the first points are not pulled toward 0.
std::vector<double> ema_smooth(const std::vector<double>& values, double weight);

// Up to about `count` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart).
std::vector<double> nice_ticks(double lo, double hi, int count);

// A number as the page shows it: 4 significant digits, no trailing zeros ("0.0123", "1.5e-05").
std::string format_number(double v);

// One plot: <svg class="plot" data-metric=...> with axes and one <g class="series"> per series that
// has points (a series without points is left out; the page's legend names the runs' colours).
std::string render_plot(const PlotSpec& spec, const std::vector<Series>& series);

}  // namespace diffuse::report_svg
