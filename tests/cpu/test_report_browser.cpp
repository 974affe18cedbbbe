// report.html in a real browser (issue 17's proof): a short real training run and a two-run
// `diffuse report` comparison are opened in headless Chromium; from the DOM it dumps after the
// page's scripts ran, each plot must represent and draw the expected number of points and every
// sample grid <img> must have decoded (the page marks each with data-loaded); a screenshot must
// come out as a real PNG. Without Chromium the tests say so and pass (scripts/setup.sh installs
// it), except on CI (CI set in the environment), where a missing browser fails.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <regex>

#include "support/process.h"
#include "support/report_runs.h"
#include "support/temp_dir.h"

using namespace diffuse::test;
namespace fs = std::filesystem;

namespace {

bool have_chromium() {
  if (!chromium_path().empty()) return true;
  if (std::getenv("CI")) FAIL("chromium is not installed and CI is set: scripts/setup.sh installs it");
  WARN("skipped: chromium is not installed (scripts/setup.sh installs it)");
  return false;
}

RunResult chromium(const TempDir& dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv{"/usr/bin/timeout", "120",           chromium_path(), "--headless=new", "--no-sandbox",
                                "--disable-gpu", "--no-first-run", "--user-data-dir=" + dir.file("chromium-profile"),
                                "--virtual-time-budget=5000"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, "", {{"HOME", dir.path().string()}});
}

// The page after its scripts ran, as Chromium serializes it.
std::string dumped_dom(const TempDir& dir, const std::string& page) {
  auto r = chromium(dir, {"--dump-dom", "file://" + fs::absolute(page).string()});
  INFO(r.output.substr(0, 2000));
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.output.find("</html>") != std::string::npos);
  return r.output;
}

void check_screenshot(const TempDir& dir, const std::string& page) {
  const std::string png = dir.file("shot-" + fs::path(page).stem().string() + ".png");
  auto r = chromium(dir, {"--hide-scrollbars", "--window-size=1280,1600", "--screenshot=" + png,
                          "file://" + fs::absolute(page).string()});
  INFO(r.output.substr(0, 2000));
  REQUIRE(r.exit_code == 0);
  REQUIRE(fs::exists(png));
  CHECK(fs::file_size(png) > 20000);  // a blank 1280x1600 page compresses to a few KB
  CHECK(slurp(png).substr(0, 8) == "\x89PNG\r\n\x1a\n");
}

std::string attribute(const std::string& tag_text, const std::string& name) {
  std::smatch m;
  const std::regex re(" " + name + "=\"([^\"]*)\"");
  return std::regex_search(tag_text, m, re) ? m[1].str() : "";
}

struct SeriesSeen {
  std::string run;
  size_t points = 0, drawn = 0, vertices = 0;
};

// The series of plot `metric` on its linear scale (the one shown at first), as the DOM has them.
std::vector<SeriesSeen> series_of(const std::string& dom, const std::string& metric) {
  const size_t at = dom.find("data-metric=\"" + metric + "\"");
  if (at == std::string::npos) return {};
  const size_t end = std::min(dom.find("</svg>", at), dom.find("data-scale=\"log\"", at));
  const std::string plot = dom.substr(at, end - at);
  std::vector<SeriesSeen> out;
  const std::regex group("<g class=\"series\"[^>]*>\\s*<polyline[^>]* points=\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(plot.begin(), plot.end(), group); it != std::sregex_iterator(); ++it) {
    const std::string tag = it->str(), points = (*it)[1];
    SeriesSeen s{attribute(tag, "data-run"), std::stoul(attribute(tag, "data-points")),
                 std::stoul(attribute(tag, "data-drawn")),
                 points.empty() ? 0 : static_cast<size_t>(std::count(points.begin(), points.end(), ' ')) + 1};
    out.push_back(s);
  }
  return out;
}

void check_images_loaded(const std::string& dom, size_t expected) {
  const std::regex body("<body[^>]*>");
  std::smatch m;
  REQUIRE(std::regex_search(dom, m, body));
  CHECK(attribute(m.str(), "data-images") == std::to_string(expected));
  CHECK(attribute(m.str(), "data-images-loaded") == std::to_string(expected));
  CHECK(attribute(m.str(), "data-script") == "ran");  // the page's script ran to its end
  const std::regex img("<img [^>]*>");
  size_t seen = 0;
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), img); it != std::sregex_iterator(); ++it, ++seen) {
    INFO(it->str());
    CHECK(attribute(it->str(), "data-loaded") == "1");
  }
  CHECK(seen == expected);
}

RunResult train_run(const std::string& out, const std::string& steps, const std::string& lr) {
  return run_cli({"train", "--data", "fashion-mnist", "--max-images", "64", "--config", "tiny", "--batch", "4", "--steps",
                  steps, "--lr", lr, "--sample-every", "2", "--sample-count", "4", "--out", out});
}

const char* const kMetricPlots[] = {"loss", "lr", "grad_norm", "images_per_second"};

}  // namespace

TEST_CASE("a short run's report.html renders in Chromium with every point and grid", "[report][browser]") {
  if (!have_chromium()) return;
  TempDir dir;
  const std::string run = dir.file("run");
  auto t = train_run(run, "4", "0.001");
  INFO(t.output);
  REQUIRE(t.exit_code == 0);
  // The path is printed when training starts and again at the end.
  const std::string announced = "train: report " + run + "/report.html";
  CHECK(t.output.find(announced) != t.output.rfind(announced));
  const std::string dom = dumped_dom(dir, run + "/report.html");
  CHECK(dom.find("data-live=\"0\"") != std::string::npos);  // the final write stops the reloading
  for (const char* metric : kMetricPlots) {
    INFO(metric);
    const auto series = series_of(dom, metric);
    REQUIRE(series.size() == 1);
    CHECK(series[0].points == 4);
    CHECK(series[0].drawn == 4);
    CHECK(series[0].vertices == 4);
  }
  CHECK(dom.find("data-metric=\"skipped\">none recorded") != std::string::npos);
  check_images_loaded(dom, 3);  // grids at steps 2 and 4, and the latest again large
  check_screenshot(dir, run + "/report.html");
}

TEST_CASE("diffuse report overlays two runs in Chromium, their grids loading from another folder", "[report][browser]") {
  if (!have_chromium()) return;
  TempDir dir;
  const std::string a = dir.file("run-a"), b = dir.file("run-b");
  REQUIRE(train_run(a, "4", "0.001").exit_code == 0);
  REQUIRE(train_run(b, "2", "0.002").exit_code == 0);
  fs::create_directories(dir.file("pages"));
  const std::string page = dir.file("pages/compare.html");
  auto r = run_cli({"report", a, b, "--out", page});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const std::string dom = dumped_dom(dir, page);
  for (const char* metric : kMetricPlots) {
    INFO(metric);
    const auto series = series_of(dom, metric);
    REQUIRE(series.size() == 2);
    CHECK(series[0].run == "run-a");
    CHECK(series[0].points == 4);
    CHECK(series[0].vertices == 4);
    CHECK(series[1].run == "run-b");
    CHECK(series[1].points == 2);
    CHECK(series[1].vertices == 2);
  }
  CHECK(dom.find("<tr class=\"differs\"><th><code>lr</code>") != std::string::npos);
  CHECK(dom.find("<tr><th><code>batch</code>") != std::string::npos);
  check_images_loaded(dom, 3 + 2);  // a: steps 2, 4 and the latest; b: step 2 and the latest
  check_screenshot(dir, page);
}
