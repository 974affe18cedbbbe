// See report_svg.h. Coordinates are written with one decimal (a tenth of a pixel is finer than any
// screen shows) and data values with 6 significant digits, which keeps a 1000-point series near
// 10 KB.
#include "engine/report_svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "engine/report.h"

namespace diffuse::report_svg {

namespace {

constexpr int kPlotWidth = kColumns, kPlotHeight = kHeight - kTop - kBottom;

std::string format(const char* fmt, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, a);
  return buf;
}

std::string data_value(double v) { return format("%.6g", v); }

// Where a series is drawn: step and value ranges, and whether values are on a log10 axis.
struct Scale {
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  bool log = false;

  double px(double step) const { return kLeft + (step - x0) / (x1 - x0) * kPlotWidth; }
  double py(double value) const {
    double v = log ? std::log10(std::max(value, std::pow(10.0, y0))) : value;
    return kTop + (1 - (v - y0) / (y1 - y0)) * kPlotHeight;
  }
};

// [lo, hi] widened so that a flat series still has a range, plus a little room above and below.
void pad_range(double& lo, double& hi) {
  if (hi - lo <= std::abs(hi) * 1e-12) {
    const double d = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= d;
    hi += d;
    return;
  }
  const double d = (hi - lo) * 0.05;
  lo -= d;
  hi += d;
}

std::string polyline(const char* cls, const Scale& s, const std::vector<double>& steps, const std::vector<double>& values,
                     const std::vector<size_t>& indices, const std::string& color) {
  std::string points;
  points.reserve(indices.size() * 12);
  for (size_t i : indices) {
    if (!points.empty()) points += ' ';
    points += format("%.1f", s.px(steps[i])) + "," + format("%.1f", s.py(values[i]));
  }
  return std::string("<polyline class=\"") + cls + "\" fill=\"none\" stroke=\"" + html_escape(color) + "\" points=\"" +
         points + "\"/>";
}

std::string pairs(const std::vector<double>& steps, const std::vector<double>& values, const std::vector<size_t>& indices) {
  std::string out;
  for (size_t i : indices) {
    if (!out.empty()) out += ';';
    out += data_value(steps[i]) + " " + data_value(values[i]);
  }
  return out;
}

std::vector<size_t> all_indices(size_t n) {
  std::vector<size_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

std::string axes(const Scale& s) {
  std::string out = "<g class=\"axes\">";
  out += format("<rect class=\"frame\" x=\"%.0f\"", kLeft) + format(" y=\"%.0f\"", kTop) + format(" width=\"%.0f\"", kPlotWidth) +
         format(" height=\"%.0f\"/>", kPlotHeight);
  std::vector<double> yticks;
  if (s.log) {
    for (double e = std::ceil(s.y0); e <= s.y1 && yticks.size() < 12; e += 1) yticks.push_back(e);
    if (yticks.size() < 2) yticks = nice_ticks(s.y0, s.y1, 4);  // under a decade: ticks on log10
  } else {
    yticks = nice_ticks(s.y0, s.y1, 5);
  }
  for (double t : yticks) {
    const double y = kTop + (1 - (t - s.y0) / (s.y1 - s.y0)) * kPlotHeight;
    out += format("<line class=\"grid\" x1=\"%.0f\"", kLeft) + format(" x2=\"%.0f\"", kLeft + kPlotWidth) +
           format(" y1=\"%.1f\"", y) + format(" y2=\"%.1f\"/>", y);
    out += format("<text class=\"tick\" x=\"%.0f\"", kLeft - 5) + format(" y=\"%.1f\" text-anchor=\"end\">", y + 4) +
           format_number(s.log ? std::pow(10.0, t) : t) + "</text>";
  }
  for (double t : nice_ticks(s.x0, s.x1, 6)) {
    if (t != std::round(t)) continue;  // steps are whole numbers
    const double x = s.px(t);
    out += format("<line class=\"grid\" x1=\"%.1f\"", x) + format(" x2=\"%.1f\"", x) + format(" y1=\"%.0f\"", kTop) +
           format(" y2=\"%.0f\"/>", kTop + kPlotHeight);
    out += format("<text class=\"tick\" x=\"%.1f\"", x) + format(" y=\"%.0f\" text-anchor=\"middle\">", kHeight - 12) +
           format_number(t) + "</text>";
  }
  return out + "</g>";
}

std::string scale_group(const PlotSpec& spec, const Scale& s, const std::vector<Series>& series, bool hidden) {
  std::string out = std::string("<g class=\"scale\" data-scale=\"") + (s.log ? "log" : "linear") + "\" data-x0=\"" +
                    data_value(s.x0) + "\" data-x1=\"" + data_value(s.x1) + "\" data-y0=\"" + data_value(s.y0) +
                    "\" data-y1=\"" + data_value(s.y1) + "\"" + (hidden ? " style=\"display:none\"" : "") + ">";
  out += axes(s);
  for (const Series& se : series) {
    if (se.steps.empty()) continue;
    const std::vector<size_t> drawn = downsample_min_max(se.steps, se.values, s.x0, s.x1, kColumns);
    out += "<g class=\"series\" data-run=\"" + html_escape(se.label) + "\" data-color=\"" + html_escape(se.color) +
           "\" data-points=\"" + std::to_string(se.steps.size()) + "\" data-drawn=\"" + std::to_string(drawn.size()) +
           "\" data-xy=\"" + pairs(se.steps, se.values, drawn) + "\"";
    if (spec.smoothed) {
      std::vector<double> base_steps, base_values;
      smoothing_base(se.steps, se.values, kSmoothingBase, base_steps, base_values);
      const std::vector<size_t> base_all = all_indices(base_steps.size());
      out += " data-base=\"";
      out += pairs(base_steps, base_values, base_all);
      out += "\">";
      out += polyline("raw faint", s, se.steps, se.values, drawn, se.color);
      out += polyline("smooth", s, base_steps, ema_smooth(base_values, spec.smoothing), base_all, se.color);
    } else {
      out += ">";  // appended, not ">" + polyline(...): GCC 12 warns falsely (-Wrestrict) on literal + string&&
      out += polyline("raw", s, se.steps, se.values, drawn, se.color);
    }
    out += "</g>";
  }
  return out + "</g>";
}

}  // namespace

std::vector<size_t> downsample_min_max(const std::vector<double>& steps, const std::vector<double>& values, double x0,
                                       double x1, int columns) {
  const size_t n = steps.size();
  if (columns < 1 || n <= 2 * static_cast<size_t>(columns) || !(x1 > x0)) return all_indices(n);
  std::vector<size_t> out;
  size_t i = 0;
  while (i < n) {
    const int column = std::clamp(static_cast<int>((steps[i] - x0) / (x1 - x0) * columns), 0, columns - 1);
    size_t lo = i, hi = i, j = i;
    for (; j < n && std::clamp(static_cast<int>((steps[j] - x0) / (x1 - x0) * columns), 0, columns - 1) == column; ++j) {
      if (values[j] < values[lo]) lo = j;
      if (values[j] > values[hi]) hi = j;
    }
    out.push_back(std::min(lo, hi));
    if (hi != lo) out.push_back(std::max(lo, hi));
    i = j;
  }
  return out;
}

void smoothing_base(const std::vector<double>& steps, const std::vector<double>& values, size_t cap,
                    std::vector<double>& base_steps, std::vector<double>& base_values) {
  const size_t n = steps.size();
  if (n <= cap || cap == 0) {
    base_steps = steps;
    base_values = values;
    return;
  }
  base_steps.clear();
  base_values.clear();
  for (size_t b = 0; b < cap; ++b) {
    const size_t begin = b * n / cap, end = (b + 1) * n / cap;
    double s = 0, v = 0;
    for (size_t i = begin; i < end; ++i) {
      s += steps[i];
      v += values[i];
    }
    base_steps.push_back(s / static_cast<double>(end - begin));
    base_values.push_back(v / static_cast<double>(end - begin));
  }
}

std::vector<double> ema_smooth(const std::vector<double>& values, double weight) {
  std::vector<double> out(values.size());
  double last = 0, debias = 1;
  for (size_t i = 0; i < values.size(); ++i) {
    last = last * weight + (1 - weight) * values[i];
    debias *= weight;
    out[i] = weight == 0 ? values[i] : last / (1 - debias);
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int count) {
  if (!(hi > lo) || count < 1 || !std::isfinite(lo) || !std::isfinite(hi)) return {};
  const double raw = (hi - lo) / count, magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  std::vector<double> out;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
    out.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

std::string format_number(double v) {
  if (!std::isfinite(v)) return v != v ? "NaN" : (v > 0 ? "inf" : "-inf");
  return format("%.4g", v);
}

std::string render_plot(const PlotSpec& spec, const std::vector<Series>& series) {
  Scale linear;
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo, pos_lo = xlo;
  for (const Series& s : series)
    for (size_t i = 0; i < s.steps.size(); ++i) {
      xlo = std::min(xlo, s.steps[i]);
      xhi = std::max(xhi, s.steps[i]);
      if (!std::isfinite(s.values[i])) continue;
      ylo = std::min(ylo, s.values[i]);
      yhi = std::max(yhi, s.values[i]);
      if (s.values[i] > 0) pos_lo = std::min(pos_lo, s.values[i]);
    }
  std::string head = "<svg class=\"plot\" data-metric=\"" + html_escape(spec.metric) + "\" viewBox=\"0 0 " +
                     std::to_string(kWidth) + " " + std::to_string(kHeight) + "\" data-left=\"" + std::to_string(kLeft) +
                     "\" data-top=\"" + std::to_string(kTop) + "\" data-width=\"" + std::to_string(kPlotWidth) +
                     "\" data-height=\"" + std::to_string(kPlotHeight) + "\" role=\"img\" aria-label=\"" +
                     html_escape(spec.title) + "\">";
  if (!(xhi >= xlo) || !(yhi >= ylo))
    return head + "<text class=\"empty\" x=\"" + std::to_string(kWidth / 2) + "\" y=\"" + std::to_string(kHeight / 2) +
           "\" text-anchor=\"middle\">no points yet</text></svg>";
  linear.x0 = xlo;
  linear.x1 = xhi;
  if (linear.x1 == linear.x0) linear.x1 = linear.x0 + 1;
  linear.y0 = ylo;
  linear.y1 = yhi;
  pad_range(linear.y0, linear.y1);
  std::string out = head + scale_group(spec, linear, series, false);
  if (spec.smoothed && pos_lo <= yhi) {
    Scale log = linear;
    log.log = true;
    log.y0 = std::log10(pos_lo);
    log.y1 = std::log10(yhi);
    pad_range(log.y0, log.y1);
    out += scale_group(spec, log, series, true);
  }
  return out + "</svg>";
}

}  // namespace diffuse::report_svg
