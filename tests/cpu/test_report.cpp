// The run report's parts without a browser (engine/report.h, engine/report_svg.h): downsampling,
// smoothing, ticks, the plot's point counts, HTML escaping of everything a run supplies, reading a
// run directory (torn last line, grids by step, the skipped-steps field), the options that differ
// between runs, the times of a resumed run, when LiveReport writes, the 2 MB bound, and
// `diffuse report`'s refusals with their exit codes.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>

#include "diffuse/error.h"
#include "engine/report.h"
#include "engine/report_svg.h"
#include "support/process.h"
#include "support/report_runs.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;
namespace fs = std::filesystem;
namespace svg = diffuse::report_svg;

namespace {

// Every value of attribute `name` in `html`, in order.
std::vector<std::string> attributes(const std::string& html, const std::string& name) {
  std::vector<std::string> out;
  const std::regex re(" " + name + "=\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1]);
  return out;
}

size_t vertices(const std::string& points) {
  return points.empty() ? 0 : static_cast<size_t>(std::count(points.begin(), points.end(), ' ')) + 1;
}

}  // namespace

TEST_CASE("html_escape escapes the five characters that can break out of text or an attribute", "[report]") {
  CHECK(html_escape("a<b>&\"c'") == "a&lt;b&gt;&amp;&quot;c&#39;");
  CHECK(html_escape("plain/path_1.png") == "plain/path_1.png");
}

TEST_CASE("downsampling keeps every point up to two per column, else each column's lowest and highest", "[report]") {
  std::vector<double> steps, values;
  for (int i = 0; i < 300; ++i) {
    steps.push_back(i + 1);
    values.push_back(std::sin(i * 0.1));
  }
  CHECK(svg::downsample_min_max(steps, values, 1, 300, 150).size() == 300);

  steps.clear();
  values.clear();
  for (int i = 0; i < 100000; ++i) {
    steps.push_back(i + 1);
    values.push_back(std::sin(i * 0.37) * (1 + i % 13));
  }
  values[54321] = 1e6;  // a spike must survive
  values[777] = -1e6;
  const auto kept = svg::downsample_min_max(steps, values, 1, 100000, 100);
  CHECK(kept.size() <= 200);
  CHECK(kept.size() >= 100);
  CHECK(std::is_sorted(kept.begin(), kept.end()));
  CHECK(std::find(kept.begin(), kept.end(), size_t{54321}) != kept.end());
  CHECK(std::find(kept.begin(), kept.end(), size_t{777}) != kept.end());
  // Within column 0 (steps 1..1000) the kept points are that column's extremes.
  const auto col0_end = std::find_if(kept.begin(), kept.end(), [](size_t i) { return i >= 1000; });
  REQUIRE(col0_end - kept.begin() == 2);
  const auto [lo, hi] = std::minmax_element(values.begin(), values.begin() + 1000);
  CHECK(std::min(values[kept[0]], values[kept[1]]) == *lo);
  CHECK(std::max(values[kept[0]], values[kept[1]]) == *hi);
}

TEST_CASE("the smoothing is a debiased EMA and its base averages runs of points", "[report]") {
  CHECK(svg::ema_smooth({1, 2, 3}, 0) == std::vector<double>{1, 2, 3});
  for (double v : svg::ema_smooth(std::vector<double>(50, 0.25), 0.9)) CHECK(v == Approx(0.25));
  const auto s = svg::ema_smooth({1, 3}, 0.5);
  CHECK(s[0] == Approx(1));
  CHECK(s[1] == Approx((0.25 + 1.5) / 0.75));  // (0.5*0.5*1 + 0.5*3) / (1 - 0.5*0.5)
  std::vector<double> steps, values, bs, bv;
  for (int i = 0; i < 10; ++i) {
    steps.push_back(i + 1);
    values.push_back(i);
  }
  svg::smoothing_base(steps, values, 5, bs, bv);
  CHECK(bs == std::vector<double>{1.5, 3.5, 5.5, 7.5, 9.5});
  CHECK(bv == std::vector<double>{0.5, 2.5, 4.5, 6.5, 8.5});
}

TEST_CASE("ticks are round numbers inside the range", "[report]") {
  CHECK(svg::nice_ticks(0, 1, 5) == std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1});
  const auto t = svg::nice_ticks(3, 297, 6);
  CHECK(t.front() >= 3);
  CHECK(t.back() <= 297);
  CHECK(t[1] - t[0] == 50);
  CHECK(svg::nice_ticks(1, 1, 4).empty());
  CHECK(svg::format_number(0.000015) == "1.5e-05");
  CHECK(svg::format_number(0.0123) == "0.0123");
}

TEST_CASE("a plot says how many points each series represents and draws exactly data-drawn of them", "[report]") {
  svg::Series a{"run <a>", "#123456", {}, {}}, b{"b", "#654321", {}, {}};
  for (int i = 1; i <= 5000; ++i) {
    a.steps.push_back(i);
    a.values.push_back(1.0 / i);
  }
  for (int i = 1; i <= 40; ++i) {
    b.steps.push_back(i);
    b.values.push_back(0.5);
  }
  const std::string html = svg::render_plot({"loss", "loss", true}, {a, b});
  CHECK(html.find("run <a>") == std::string::npos);
  CHECK(html.find("data-run=\"run &lt;a&gt;\"") != std::string::npos);
  const auto points = attributes(html, "data-points"), drawn = attributes(html, "data-drawn");
  const auto raw = attributes(html, "points");  // polyline points: raw then smooth, per series, per scale
  REQUIRE(points == std::vector<std::string>{"5000", "40", "5000", "40"});  // the linear then the log scale
  REQUIRE(raw.size() == 8);
  for (size_t g = 0; g < 4; ++g) {
    CHECK(std::stoul(drawn[g]) == vertices(raw[2 * g]));
    CHECK(std::stoul(drawn[g]) <= 2 * static_cast<size_t>(svg::kColumns));
  }
  CHECK(drawn[1] == "40");
  CHECK(vertices(raw[1]) == svg::kSmoothingBase);  // 5000 points smoothed from 1000 means
  CHECK(svg::render_plot({"lr", "lr", false}, {svg::Series{"x", "#000", {}, {}}}).find("no points yet") != std::string::npos);
}

TEST_CASE("a run directory is read with its grids by step, a torn last line left out", "[report]") {
  TempDir dir;
  const std::string run = dir.file("run");
  write_synthetic_run(run, SyntheticRun{20, 0, SyntheticRun{}.train, /*skipped_field=*/true});
  for (int s : {10, 9, 100}) write_bytes(run + "/samples/step-" + std::to_string(s) + ".png", "x");
  write_bytes(run + "/samples/notes.txt", "x");
  std::ofstream(run + "/metrics.jsonl", std::ios::app) << "{\"step\": 21, \"lo";
  const ReportRun r = load_report_run(run);
  REQUIRE(r.metrics.size() == 20);
  CHECK(r.metrics.back().step == 20);
  CHECK(r.metrics.back().skipped == 0.0);
  REQUIRE(r.grids.size() == 3);
  CHECK(r.grids[0].step == 9);
  CHECK(r.grids[1].step == 10);
  CHECK(r.grids[2].step == 100);

  std::ofstream(run + "/metrics.jsonl", std::ios::app) << "\n{\"step\": 22}\n";  // not torn: a bad line
  CHECK_THROWS_WITH(load_report_run(run), Catch::Contains("metrics.jsonl line 21") || Catch::Contains("metrics.jsonl line 22"));
  CHECK_THROWS_WITH(load_report_run(dir.file("nothing")), Catch::Contains(dir.file("nothing")));
  fs::remove(run + "/metrics.jsonl");
  CHECK_THROWS_WITH(load_report_run(run), Catch::Contains(run + "/metrics.jsonl"));
}

TEST_CASE("the page escapes what the run supplies, marks differing options and says when nothing was skipped", "[report]") {
  TempDir dir;
  const std::string a = dir.file("a\"<b>"), b = dir.file("b");
  SyntheticRun spec;
  spec.steps = 30;
  spec.sample_every = 10;
  spec.train["data"] = "<script>alert(1)</script>";
  write_synthetic_run(a, spec);
  spec.train["lr"] = 0.0003;
  spec.steps = 12;
  spec.skipped_field = true;
  write_synthetic_run(b, spec);

  ReportPage page;
  page.title = "t";
  page.out_directory = dir.path().string();
  const std::string one = render_report_html({load_report_run(a)}, page);
  CHECK(one.find("<script>alert(1)") == std::string::npos);
  CHECK(one.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
  CHECK(one.find("a\"<b>") == std::string::npos);
  CHECK(one.find("data-metric=\"skipped\">none recorded") != std::string::npos);
  CHECK(one.find("class=\"differs\"") == std::string::npos);  // a single run highlights nothing
  CHECK(one.find("src=\"a%22%3Cb%3E/samples/step-10.png\"") != std::string::npos);  // relative, percent-encoded

  const std::string both = render_report_html({load_report_run(a), load_report_run(b)}, page);
  CHECK(both.find("<tr class=\"differs\"><th><code>lr</code>") != std::string::npos);
  CHECK(both.find("<tr class=\"differs\"><th><code>steps</code>") != std::string::npos);
  CHECK(both.find("<tr><th><code>batch</code>") != std::string::npos);
  CHECK(both.find("<svg class=\"plot\" data-metric=\"skipped\"") != std::string::npos);
  CHECK(both.find("none recorded") == std::string::npos);
}

// The size bound of issue 17 on synthesized runs (a 300-step `tiny` run trains for minutes on two
// cores): 300 metrics lines and six real PNG grids, and 100000 lines to show the downsampling
// keeps a long run's page as small. Grids are linked, not inlined, so they add a line each.
TEST_CASE("the report of a 300-step run, and of a 100000-step one, is under 2 MB", "[report]") {
  TempDir dir;
  for (int64_t steps : {300, 100000}) {
    SyntheticRun spec;
    spec.steps = steps;
    spec.sample_every = steps / 6;
    const std::string run = dir.file("run-" + std::to_string(steps));
    write_synthetic_run(run, spec);
    write_report({load_report_run(run)}, report_path(run), false);
    INFO(steps << " steps: " << fs::file_size(report_path(run)) << " bytes");
    CHECK(fs::file_size(report_path(run)) < 2'000'000);
    CHECK(attributes(slurp(report_path(run)), "data-points").front() == std::to_string(steps));
  }
}

TEST_CASE("diffuse report refuses a missing run, metrics file, RUN or --out folder with one line and its exit code", "[report][cli]") {
  TempDir dir;
  const std::string run = dir.file("run");
  write_synthetic_run(run, SyntheticRun{5, 0});
  const std::string empty = dir.file("empty");
  fs::create_directories(empty);
  write_bytes(empty + "/config.json", "{}");
  struct Row {
    std::vector<std::string> args;
    int exit_code;
    std::string says;
  };
  const std::vector<Row> rows{
      {{"report", "--out", dir.file("r.html")}, 2, "RUN is required"},
      {{"report", run}, 2, "--out is required"},
      {{"report", run, dir.file("missing"), "--out", dir.file("r.html")}, 1, dir.file("missing") + ": no such run directory"},
      {{"report", empty, "--out", dir.file("r.html")}, 1, empty + "/metrics.jsonl: no such file"},
      {{"report", run, "--out", dir.file("no/such/r.html")}, 1, "--out " + dir.file("no/such/r.html")},
      {{"report", run, "--out", dir.path().string()}, 1, "is a folder"},
  };
  for (const Row& row : rows) {
    auto r = run_cli(row.args);
    INFO(r.output);
    CHECK(r.exit_code == row.exit_code);
    CHECK_THAT(r.output, Catch::Contains(row.says));
    CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
  }
  CHECK_FALSE(fs::exists(dir.file("r.html")));
  auto ok = run_cli({"report", run, "--out", dir.file("r.html")});
  INFO(ok.output);
  CHECK(ok.exit_code == 0);
  CHECK(fs::file_size(dir.file("r.html")) > 1000);
}

TEST_CASE("LiveReport writes at once when forced, waits out its interval otherwise, and its last write stops the reloading", "[report]") {
  TempDir dir;
  const std::string run = dir.file("run");
  write_synthetic_run(run, SyntheticRun{3, 0});
  LiveReport live(run, std::chrono::hours(1));
  CHECK(live.update(true));
  CHECK(slurp(live.path()).find("<body data-live=\"1\"") != std::string::npos);
  live.add({{"step", 4}, {"loss", 0.5}, {"lr", 0.001}, {"grad_norm", 1.0}, {"images_per_second", 9.0}, {"seconds", 4.0}});
  CHECK_FALSE(live.update(false));  // within the hour: no write
  CHECK(attributes(slurp(live.path()), "data-points").front() == "3");
  live.finish();
  const std::string page = slurp(live.path());
  CHECK(page.find("<body data-live=\"0\"") != std::string::npos);
  CHECK(attributes(page, "data-points").front() == "4");
  CHECK(live.path() == run + "/report.html");
}

TEST_CASE("a resumed run's training time adds its sessions and the remaining time uses the last one's speed", "[report]") {
  TempDir dir;
  const std::string run = dir.file("run");
  write_synthetic_run(run, SyntheticRun{100, 0});  // config.json; the metrics are rewritten here
  // steps 1-10 took 20 s, then a resumed session ran steps 11-20 at 1 s per step; 80 steps remain.
  std::ofstream metrics(run + "/metrics.jsonl");
  for (int s = 1; s <= 20; ++s)
    metrics << nlohmann::json{{"step", s}, {"loss", 0.1}, {"lr", 0.001}, {"grad_norm", 1.0}, {"images_per_second", 4.0},
                              {"seconds", s <= 10 ? 2.0 * s : s - 10.0}}.dump()
            << "\n";
  metrics.close();
  ReportPage page;
  page.live = true;
  const std::string html = render_report_html({load_report_run(run)}, page);
  CHECK(html.find("<th>elapsed</th><td>30s of training") != std::string::npos);
  CHECK(html.find("<th>remaining</th><td>1m 20s") != std::string::npos);
  CHECK(html.find("step 20 of 100") != std::string::npos);
}
