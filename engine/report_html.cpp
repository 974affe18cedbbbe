// See report.h: the page itself. One layout serves a run's own report and a comparison: a card per
// run (progress, times, machine, model), the plots with every run overlaid, the sample grids per
// run, and the options side by side with the rows that differ between runs highlighted. Every
// string read from a run goes through html_escape; image links through url_path.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <set>

#include "engine/memory_estimate.h"
#include "engine/report.h"
#include "engine/report_assets.h"
#include "engine/report_svg.h"
#include "nn/atomic_file.h"
#include "nn/unet_config.h"

namespace diffuse {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const char* const kPalette[] = {"#2563eb", "#dc2626", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#b45309", "#db2777"};

std::string color_of(size_t run) { return kPalette[run % (sizeof kPalette / sizeof kPalette[0])]; }

// The run's name on the page: its directory's last component, or the whole path when two runs
// being compared share that name.
std::vector<std::string> run_labels(const std::vector<ReportRun>& runs) {
  std::vector<std::string> names;
  for (const ReportRun& r : runs) {
    fs::path p = fs::path(r.directory).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    names.push_back(p.filename().string());
  }
  for (size_t i = 0; i < runs.size(); ++i)
    if (std::count(names.begin(), names.end(), names[i]) > 1 || names[i].empty()) names[i] = runs[i].directory;
  return names;
}

// "1h 02m", "3m 20s", "12s".
std::string duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "unknown";
  const long s = std::lround(seconds);
  char buf[48];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh %02ldm", s / 3600, (s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%ldm %02lds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lds", s);
  return buf;
}

// Percent-encodes a relative path for an src attribute; '/' stays.
std::string url_path(const std::string& path) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : path) {
    if (std::isalnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string image_src(const std::string& file, const std::string& page_dir) {
  const fs::path rel = fs::absolute(file).lexically_normal().lexically_relative(fs::absolute(page_dir).lexically_normal());
  return url_path((rel.empty() ? fs::path(file) : rel).generic_string());
}

// A JSON value as a table shows it: strings bare, the rest as JSON.
std::string shown(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// Training time over the run's sessions (each resume restarts metrics' "seconds") and the time per
// step of the last session, from which the remaining time is estimated.
struct Timing {
  double elapsed = 0, per_step = NAN;
};

Timing timing(const std::vector<MetricPoint>& m) {
  Timing t;
  size_t session_start = 0;
  for (size_t i = 0; i < m.size(); ++i) {
    const bool session_ends = i + 1 == m.size() || m[i + 1].seconds < m[i].seconds || m[i + 1].step <= m[i].step;
    if (!session_ends) continue;
    t.elapsed += m[i].seconds;
    if (i + 1 == m.size()) t.per_step = m[i].seconds / static_cast<double>(i - session_start + 1);
    session_start = i + 1;
  }
  return t;
}

std::string row(const std::string& key, const std::string& value_html) {
  return "<tr><th>" + html_escape(key) + "</th><td>" + value_html + "</td></tr>";
}

std::string parameters_text(const ReportRun& r) {
  if (!r.config.contains("unet")) return "unknown (config.json has no \"unet\")";
  const UNet2DConfig cfg = parse_unet_config(r.config.at("unet").dump(), r.directory + "/config.json \"unet\"");
  const double n = unet_parameter_count(cfg);
  char buf[48];
  std::snprintf(buf, sizeof buf, n >= 1e6 ? "%.2fM" : "%.0f", n >= 1e6 ? n / 1e6 : n);
  std::string count = buf;
  for (size_t at = count.size(); n < 1e6 && at > 3; at -= 3) count.insert(at - 3, ",");  // 701,345
  const json& u = r.config.at("unet");
  std::string shape = u.contains("sample_size") ? shown(u["sample_size"]) + "×" + shown(u["sample_size"]) : "";
  if (u.contains("in_channels")) shape += ", " + shown(u["in_channels"]) + " channel(s)";
  if (u.contains("block_out_channels")) shape += ", blocks " + shown(u["block_out_channels"]);
  return count + " parameters (" + shape + ")";
}

std::string run_card(const ReportRun& r, const std::string& label, const std::string& color, bool live) {
  const json train = r.config.value("train", json::object());
  const int64_t total = train.contains("steps") && train["steps"].is_number_integer() ? train["steps"].get<int64_t>() : 0;
  const int64_t last = r.metrics.empty() ? 0 : r.metrics.back().step;
  const Timing t = timing(r.metrics);
  std::string out = "<div class=\"panel run\" data-run=\"" + html_escape(label) + "\"><h2><span class=\"swatch\" style=\"background:" +
                    color + "\"></span>" + html_escape(label) + "</h2><table class=\"kv\">";
  std::string progress = "step " + std::to_string(last) + (total > 0 ? " of " + std::to_string(total) : "");
  if (!r.metrics.empty()) progress += ", loss " + report_svg::format_number(r.metrics.back().loss);
  out += row("progress", html_escape(progress));
  out += row("elapsed", html_escape(duration(t.elapsed) + " of training"));
  std::string remaining = last >= total ? "none: finished" : duration(t.per_step * static_cast<double>(total - last));
  if (last < total && !live) remaining += " at the last speed (the run is not being written now)";
  if (last < total && r.metrics.empty()) remaining = "unknown until the first step";
  out += row("remaining", html_escape(remaining));
  out += row("directory", "<code>" + html_escape(r.directory) + "</code>");
  out += row("model", html_escape(shown(train.value("config", json("unknown"))) + ": " + parameters_text(r)));
  if (const auto s = r.config.find("session"); s != r.config.end() && s->is_object()) {
    std::string machine = shown(s->value("cpu", json("unknown CPU"))) + "; CPU kernels " + shown(s->value("cpu_kernels", json("?"))) +
                          ", " + shown(s->value("threads", json("?"))) + " threads";
    if (s->contains("gpu")) machine += "; GPU " + shown(s->at("gpu"));
    out += row("machine", html_escape(machine));
    out += row("diffuse", html_escape(shown(s->value("version", json("?")))));
    out += row("started", html_escape(shown(s->value("started", json("?")))));
  } else {
    out += row("machine", "not recorded (config.json has no \"session\")");
  }
  return out + "</table></div>";
}

std::string plots(const std::vector<ReportRun>& runs, const std::vector<std::string>& labels) {
  struct Metric {
    const char* id;
    const char* title;
    double MetricPoint::*field;
  };
  const Metric metrics[] = {{"loss", "loss", &MetricPoint::loss},
                            {"lr", "learning rate", &MetricPoint::lr},
                            {"grad_norm", "gradient norm (before clipping)", &MetricPoint::grad_norm},
                            {"images_per_second", "images / s", &MetricPoint::images_per_second}};
  std::string out;
  for (const Metric& m : metrics) {
    std::vector<report_svg::Series> series;
    for (size_t i = 0; i < runs.size(); ++i) {
      report_svg::Series s{labels[i], color_of(i), {}, {}};
      for (const MetricPoint& p : runs[i].metrics) {
        s.steps.push_back(static_cast<double>(p.step));
        s.values.push_back(p.*m.field);
      }
      series.push_back(std::move(s));
    }
    report_svg::PlotSpec spec{m.id, m.title, std::string(m.id) == "loss"};
    out += "<figure><figcaption>" + std::string(m.title) + "</figcaption>" + report_svg::render_plot(spec, series) + "</figure>";
  }
  std::vector<report_svg::Series> skipped;
  for (size_t i = 0; i < runs.size(); ++i) {
    report_svg::Series s{labels[i], color_of(i), {}, {}};
    for (const MetricPoint& p : runs[i].metrics)
      if (p.skipped) {
        s.steps.push_back(static_cast<double>(p.step));
        s.values.push_back(*p.skipped);
      }
    if (!s.steps.empty()) skipped.push_back(std::move(s));
  }
  out += "<figure><figcaption>skipped steps</figcaption>";
  if (skipped.empty()) out += "<p class=\"none\" data-metric=\"skipped\">none recorded</p>";
  else out += report_svg::render_plot({"skipped", "skipped steps", false}, skipped);
  return out + "</figure>";
}

std::string samples(const ReportRun& r, const std::string& label, const std::string& page_dir, bool several) {
  std::string out = "<div class=\"panel samples\" data-run=\"" + html_escape(label) + "\"><h2>sample grids" +
                    (several ? " — " + html_escape(label) : std::string()) + "</h2>";
  if (r.grids.empty()) return out + "<p class=\"none\">none yet (train with --sample-every N)</p></div>";
  const auto img = [&](const SampleGridFile& g, const char* cls) {
    return "<img class=\"grid " + std::string(cls) + "\" src=\"" + html_escape(image_src(g.path, page_dir)) +
           "\" alt=\"samples at step " + std::to_string(g.step) + "\" onload=\"diffuseMark(this)\" onerror=\"diffuseMark(this)\">";
  };
  const SampleGridFile& latest = r.grids.back();
  out += "<div class=\"latest\"><figure>" + img(latest, "large") + "<figcaption>latest: step " + std::to_string(latest.step) +
         "</figcaption></figure></div><div class=\"strip\">";
  for (const SampleGridFile& g : r.grids)
    out += "<figure>" + img(g, "small") + "<figcaption>step " + std::to_string(g.step) + "</figcaption></figure>";
  return out + "</div></div>";
}

// One table of a config.json object ("train" or "unet") across runs; a row whose value differs
// between runs gets class "differs".
std::string options_table(const std::vector<ReportRun>& runs, const std::vector<std::string>& labels, const char* key) {
  std::vector<std::string> keys;
  std::set<std::string> seen;
  for (const ReportRun& r : runs)
    if (const auto o = r.config.find(key); o != r.config.end() && o->is_object())
      for (const auto& [k, v] : o->items())
        if (seen.insert(k).second) keys.push_back(k);
  std::string out = "<table class=\"options\" data-table=\"" + std::string(key) + "\"><thead><tr><th></th>";
  for (const std::string& l : labels) out += "<th>" + html_escape(l) + "</th>";
  out += "</tr></thead><tbody>";
  for (const std::string& k : keys) {
    std::vector<std::string> values;
    for (const ReportRun& r : runs) {
      const json object = r.config.value(key, json::object());
      values.push_back(object.is_object() && object.contains(k) ? shown(object.at(k)) : "—");
    }
    const bool differs = std::adjacent_find(values.begin(), values.end(), std::not_equal_to<>()) != values.end();
    out += std::string("<tr") + (differs ? " class=\"differs\"" : "") + "><th><code>" + html_escape(k) + "</code></th>";
    for (const std::string& v : values) out += "<td>" + html_escape(v) + "</td>";
    out += "</tr>";
  }
  return out + "</tbody></table>";
}

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string render_report_html(const std::vector<ReportRun>& runs, const ReportPage& page) {
  const std::vector<std::string> labels = run_labels(runs);
  const bool several = runs.size() > 1;
  size_t images = 0;
  for (const ReportRun& r : runs) images += r.grids.empty() ? 0 : r.grids.size() + 1;
  std::string out = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
                    "content=\"width=device-width, initial-scale=1\"><title>" +
                    html_escape(page.title) + "</title><style>" + report_assets::kStyle + "</style><script>" +
                    report_assets::kHeadScript + "</script></head>\n";
  out += std::string("<body data-live=\"") + (page.live ? "1" : "0") + "\" data-reload=\"" + std::to_string(page.reload_seconds) +
         "\" data-runs=\"" + std::to_string(runs.size()) + "\" data-images=\"" + std::to_string(images) +
         "\" data-images-loaded=\"0\"><main><h1>" + html_escape(page.title) + "</h1><p class=\"status\">";
  out += page.live ? "<span class=\"live\">● live</span>: training is running; this page reloads every " +
                         std::to_string(page.reload_seconds) + " s. "
                   : std::string();
  out += "Written " + html_escape(page.generated_at) + " by diffuse " + DIFFUSE_VERSION + ".</p>\n<div class=\"runs\">";
  for (size_t i = 0; i < runs.size(); ++i) out += run_card(runs[i], labels[i], color_of(i), page.live);
  out += "</div>\n<div class=\"panel\"><h2>curves</h2><div class=\"controls\"><label>loss smoothing <input type=\"range\" "
         "id=\"smoothing\" min=\"0\" max=\"0.99\" step=\"0.01\" value=\"0.6\"> <span id=\"smoothing-value\">0.60</span></label>"
         "<label><input type=\"checkbox\" id=\"logscale\"> log-scale loss</label></div>";
  if (several) {
    out += "<div class=\"legend\">";
    for (size_t i = 0; i < runs.size(); ++i)
      out += "<span><span class=\"swatch\" style=\"background:" + color_of(i) + "\"></span>" + html_escape(labels[i]) + "</span>";
    out += "</div>";
  }
  out += "<div class=\"plots\">" + plots(runs, labels) + "</div></div>\n";
  for (size_t i = 0; i < runs.size(); ++i) out += samples(runs[i], labels[i], page.out_directory, several);
  out += "<div class=\"panel\"><h2>training options" + std::string(several ? " (rows that differ are highlighted)" : "") +
         "</h2>" + options_table(runs, labels, "train") + "</div>";
  out += "<div class=\"panel\"><h2>model config</h2>" + options_table(runs, labels, "unet") + "</div>";
  out += "</main><div id=\"tip\"></div><script>" + std::string(report_assets::kBodyScript) + "</script></body></html>\n";
  return out;
}

std::string utc_timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void write_report(const std::vector<ReportRun>& runs, const std::string& out_file, bool live) {
  ReportPage page;
  page.live = live;
  page.out_directory = fs::path(out_file).parent_path().string();
  if (page.out_directory.empty()) page.out_directory = ".";
  page.generated_at = utc_timestamp();
  const std::vector<std::string> labels = run_labels(runs);
  page.title = runs.size() == 1 ? "diffuse run " + labels[0] : "diffuse runs compared";
  write_file_atomic(out_file, render_report_html(runs, page));
}

}  // namespace diffuse
