// Honest progress (issue 14): the first line reports the time the first step really took and an
// ETA from it, off a terminal a line comes at least every 30 s whatever --log-every says (and at
// every --log-every step), and a resumed run's ETA counts only the steps it measured. Driven by a
// fake clock, so nothing here waits.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "tools/progress.h"

using diffuse::cli::Progress;
using namespace std::chrono;

namespace {

// A clock the test moves, and the lines a Progress printed.
struct Harness {
  steady_clock::time_point now = steady_clock::time_point{} + hours(1);
  char* buffer = nullptr;
  size_t size = 0;
  FILE* out = open_memstream(&buffer, &size);
  Progress::Clock clock() {
    return [this] { return now; };
  }
  std::vector<std::string> lines() {
    std::fflush(out);
    std::vector<std::string> result;
    std::istringstream in(std::string(buffer, size));
    for (std::string line; std::getline(in, line);) result.push_back(line);
    return result;
  }
  ~Harness() {
    std::fclose(out);
    std::free(buffer);
  }
};

}  // namespace

TEST_CASE("the first progress line shows the time step 1 took and the ETA it implies", "[progress]") {
  Harness h;
  Progress p("train", 300, /*terminal=*/false, /*log_every=*/10, h.out, h.clock());
  h.now += seconds(12);
  p.update(1, "loss 1.0", 0);
  auto lines = h.lines();
  REQUIRE(lines.size() == 1);
  CHECK_THAT(lines[0], Catch::Contains("step 1/300"));
  CHECK_THAT(lines[0], Catch::Contains("elapsed 12s"));
  CHECK_THAT(lines[0], Catch::Contains("12.00 s/step"));
  CHECK_THAT(lines[0], Catch::Contains("ETA 59m48s"));  // 299 steps at 12 s
}

TEST_CASE("off a terminal a line comes at least every 30 s and at every log_every step", "[progress]") {
  Harness h;
  Progress p("train", 40, false, 10, h.out, h.clock());
  std::vector<int64_t> printed_steps;
  for (int64_t step = 1; step <= 40; ++step) {
    h.now += seconds(13);
    const size_t before = h.lines().size();
    p.update(step, "", 0);
    if (h.lines().size() > before) printed_steps.push_back(step);
  }
  // Step 1, then whenever 30 s passed since the last line (every third step at 13 s a step), the
  // tenth steps and the last.
  for (int64_t s : {1, 4, 7, 10, 13, 20, 30, 40}) {
    INFO("step " << s);
    CHECK(std::find(printed_steps.begin(), printed_steps.end(), s) != printed_steps.end());
  }
  for (size_t i = 1; i < printed_steps.size(); ++i) CHECK(printed_steps[i] - printed_steps[i - 1] <= 3);
}

TEST_CASE("fast steps print only at log_every, a quiet stretch under 30 s adds nothing", "[progress]") {
  Harness h;
  Progress p("train", 100, false, 25, h.out, h.clock());
  for (int64_t step = 1; step <= 100; ++step) {
    h.now += milliseconds(100);
    p.update(step, "", 0);
  }
  CHECK(h.lines().size() == 5);  // 1, 25, 50, 75, 100
}

TEST_CASE("a resumed run's ETA uses the caller's measured time for the steps it ran", "[progress]") {
  Harness h;
  Progress p("train", 30, false, 10, h.out, h.clock());
  h.now += seconds(100);  // loading the dataset and the checkpoint: not a step
  p.update(21, "", 0, /*seconds=*/2.0);
  auto lines = h.lines();
  REQUIRE(lines.size() == 1);
  CHECK_THAT(lines[0], Catch::Contains("step 21/30"));
  CHECK_THAT(lines[0], Catch::Contains("elapsed 2s"));
  CHECK_THAT(lines[0], Catch::Contains("ETA 18s"));  // 9 steps left at 2 s
}
