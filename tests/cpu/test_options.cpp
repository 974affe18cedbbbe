// Every option is defined once (engine/options.h): these tests walk the option tables, never a
// hand-written list, and check that the CLI, the library and a run's saved config.json agree —
// the CLI's default of each flag is the public struct's default, a value given on the command
// line lands in that row's field, and the saved options read back to the same values.
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <cstdlib>
#include <set>

#include "engine/options.h"
#include "nn/runtime.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;
using options::format_value;
using options::ValueRef;

namespace {

// Changes the value to one unlike its default that the command line can spell.
void perturb(const ValueRef& v) {
  std::visit(
      [](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>)
          *p = "x-" + *p;
        else if constexpr (std::is_same_v<T, bool>)
          *p = !*p;
        else if constexpr (std::is_same_v<T, Device>)
          *p = *p == Device::cpu ? Device::cuda : Device::cpu;
        else if constexpr (std::is_same_v<T, double>)
          *p += 0.25;
        else
          *p += 7;
      },
      v);
}

// `diffuse CMD ARGS... --print-options`: every option's parsed value, by flag.
nlohmann::json printed(const std::string& cmd, std::vector<std::string> args) {
  args.insert(args.begin(), cmd);
  args.push_back("--print-options");
  RunResult r = run_cli(args);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(r.output);
}

// For one table: the flags are distinct from `seen`'s, the CLI's defaults are the struct's, and
// each flag given with a non-default value lands in its row's field.
template <class S>
void check_cli_agrees(const std::string& cmd, const options::Table<S>& table, std::set<std::string>& seen) {
  S defaults{};
  nlohmann::json got_defaults = printed(cmd, {});
  S changed{};
  std::vector<std::string> args;
  for (const auto& o : table.rows) {
    INFO(cmd << " --" << o.flag);
    CHECK(seen.insert(o.flag).second);  // one row per flag
    CHECK(got_defaults.at(o.flag) == format_value(o.bind(defaults)));
    perturb(o.bind(changed));
    args.push_back(std::string("--") + o.flag + "=" + format_value(o.bind(changed)));
  }
  nlohmann::json got = printed(cmd, args);
  for (const auto& o : table.rows) {
    INFO(cmd << " --" << o.flag);
    CHECK(got.at(o.flag) == format_value(o.bind(changed)));
  }
}

}  // namespace

TEST_CASE("every CLI flag defaults to the library's default and lands in its field", "[options][cli]") {
  std::set<std::string> train_flags{"help", "help-markdown", "print-options", "log-every"};
  check_cli_agrees("train", options::train_table(), train_flags);
  std::set<std::string> sample_flags{"help", "help-markdown", "print-options", "model", "out", "out-dir", "device"};
  check_cli_agrees("sample", options::sampler_table(), sample_flags);
  check_cli_agrees("sample", options::generate_table(), sample_flags);
}

TEST_CASE("a yes/no flag is on bare and takes on/off or true/false, after '=' or as the next word", "[options][cli]") {
  CHECK(printed("sample", {"--model", "m", "--out", "o.png"})["cuda-graphs"] == "true");
  CHECK(printed("sample", {"--model", "m", "--out", "o.png", "--cuda-graphs", "off"})["cuda-graphs"] == "false");
  CHECK(printed("sample", {"--model", "m", "--cuda-graphs=off", "--out", "o.png"})["cuda-graphs"] == "false");
  CHECK(printed("sample", {"--model", "m", "--out", "o.png", "--cuda-graphs", "false"})["cuda-graphs"] == "false");
  CHECK(printed("sample", {"--cuda-graphs=false", "--cuda-graphs", "on", "--model", "m", "--out", "o.png"})["cuda-graphs"] ==
        "true");
  CHECK(printed("train", {"--random-flip", "--data", "d", "--out", "r"})["random-flip"] == "true");
  CHECK(printed("train", {"--random-flip", "off", "--data", "d", "--out", "r"})["random-flip"] == "false");
  // A word that is no bool value after a bare yes/no flag is left alone (here: a stray argument).
  RunResult r = run_cli({"sample", "--model", "m", "--out", "o.png", "--cuda-graphs", "maybe"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("unexpected argument 'maybe'") != std::string::npos);
  r = run_cli({"sample", "--model", "m", "--out", "o.png", "--cuda-graphs=maybe"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("--cuda-graphs maybe: not a value this flag takes") != std::string::npos);
}

TEST_CASE("saved train options round-trip through JSON, row by row", "[options]") {
  const auto& table = options::train_table();
  TrainRequest changed;
  for (const auto& o : table.rows) perturb(o.bind(changed));
  nlohmann::json saved = options::train_options_json(changed);
  TrainRequest back = options::train_options_from_json(nlohmann::json::parse(saved.dump()), "config.json");
  TrainRequest defaults;
  size_t saved_rows = 0;
  for (const auto& o : table.rows) {
    INFO(o.member);
    CHECK(saved.contains(o.member) == static_cast<bool>(o.saved));
    // A saved row reads back as written; one that is not saved keeps the library default.
    CHECK(format_value(o.bind(back)) == format_value(o.saved ? o.bind(changed) : o.bind(defaults)));
    saved_rows += o.saved ? 1 : 0;
  }
  CHECK(saved.size() == saved_rows);  // nothing saved that is not a row

  saved["steps"] = "many";
  CHECK_THROWS_WITH(options::train_options_from_json(saved, "run/config.json"),
                    Catch::Contains("run/config.json: \"steps\""));
  try {
    options::train_options_from_json(saved, "run/config.json");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
  }
}

TEST_CASE("a run's config.json saves the options the CLI parsed", "[options][cli][train]") {
  TempDir dir;
  const std::vector<std::string> args{"--data", "fashion-mnist", "--max-images", "8", "--config", "tiny", "--out",
                                      dir.file("run"), "--steps", "1", "--batch", "2", "--lr", "0.003", "--warmup", "3",
                                      "--lr-schedule", "cosine", "--ema-decay", "0.99", "--ema-power", "0.5",
                                      "--prediction", "v_prediction", "--snr-gamma", "5", "--random-flip", "--seed",
                                      "11"};
  nlohmann::json parsed = printed("train", args);
  std::vector<std::string> run_args = args;
  run_args.insert(run_args.begin(), "train");
  RunResult r = run_cli(run_args);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  nlohmann::json config = nlohmann::json::parse(slurp(dir.file("run/config.json")));
  TrainRequest saved = options::train_options_from_json(config.at("train"), "config.json");
  for (const auto& o : options::train_table().rows) {
    if (!o.saved) continue;
    INFO(o.member);
    CHECK(format_value(o.bind(saved)) == parsed.at(o.flag));
  }
}

TEST_CASE("option checks name the flag for the CLI and the field for the library", "[options]") {
  TrainRequest r;
  r.out = "run";
  r.steps = 0;
  CHECK_THROWS_WITH(options::validate(r, options::Naming::flag), "--steps must be positive, got 0");
  CHECK_THROWS_WITH(options::validate(r, options::Naming::field), "TrainRequest::steps must be positive, got 0");
  r.steps = 1;
  r.lr_schedule = "bogus";
  CHECK_THROWS_WITH(options::validate(r, options::Naming::flag), "--lr-schedule bogus: expected constant or cosine");
  try {
    options::validate(r, options::Naming::flag);
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::usage);
  }
  SamplerOptions s;
  s.eta = 1.5;
  CHECK_THROWS_WITH(options::validate(s, options::Naming::field), "SamplerOptions::eta must be in [0, 1], got 1.5");
  GenerateRequest g;
  g.class_label = 4;
  CHECK_THROWS_WITH(options::check_class_label(g, 3, options::Naming::flag), "--class 4: expected -1 or 0..2");
  CHECK_NOTHROW(options::check_class_label(g, 5, options::Naming::flag));
}

TEST_CASE("threads: one row in every table, never saved, checked by name, applied by set_cpu_threads",
          "[options][threads]") {
  // The same row (flag, help, rule) in each table that has a threads field.
  const auto row = [](const auto& table) {
    for (const auto& o : table.rows)
      if (std::string(o.flag) == "threads") return std::make_pair(std::string(o.help), static_cast<bool>(o.saved));
    FAIL("no --threads row in " << table.struct_name);
    return std::make_pair(std::string(), true);
  };
  CHECK(row(options::train_table()) == row(options::generate_table()));
  CHECK(row(options::train_table()) == row(options::compute_table()));
  CHECK_FALSE(row(options::train_table()).second);  // a resumed run may use another thread count

  TrainRequest t;
  t.out = "run";
  t.threads = -1;
  CHECK_THROWS_WITH(options::validate(t, options::Naming::field), "TrainRequest::threads must be >= 0, got -1");
  GenerateRequest g;
  g.threads = -2;
  CHECK_THROWS_WITH(options::validate(g, options::Naming::flag), "--threads must be >= 0, got -2");

  const int before = cpu_threads();
  set_cpu_threads(3);
  CHECK(cpu_threads() == 3);
  CHECK_THAT(cpu_threads_choice(), Catch::Contains("--threads"));
  set_cpu_threads(0);
  CHECK(cpu_threads() == default_cpu_threads());
  CHECK(default_cpu_threads() >= 1);
  CHECK_THROWS_WITH(set_cpu_threads(-1), Catch::Contains("must be >= 0"));
  CHECK(cpu_threads() == default_cpu_threads());  // a refused value changes nothing
  set_cpu_threads(before);
}

TEST_CASE("conv-search: one row in every table, saved by a run (resume may change it), checked, applied",
          "[options][conv-search]") {
  const auto row = [](const auto& table) {
    for (const auto& o : table.rows)
      if (std::string(o.flag) == "conv-search") return std::string(o.help);
    FAIL("no --conv-search row in " << table.struct_name);
    return std::string();
  };
  CHECK(row(options::train_table()) == row(options::generate_table()));
  CHECK(row(options::train_table()) == row(options::compute_table()));
  for (const auto& o : options::train_table().rows)
    if (std::string(o.flag) == "conv-search") CHECK(o.saved.kind == options::Saved::may_change);
  for (const auto& o : options::generate_table().rows)
    if (std::string(o.flag) == "conv-search") CHECK_FALSE(o.saved);
  CHECK(TrainRequest{}.conv_search == "timed");
  CHECK(GenerateRequest{}.conv_search == "timed");
  CHECK(options::ComputeOptions{}.conv_search == "timed");

  TrainRequest t;
  t.out = "run";
  t.conv_search = "fastest";
  CHECK_THROWS_WITH(options::validate(t, options::Naming::field), Catch::StartsWith("TrainRequest::conv_search"));
  GenerateRequest g;
  g.conv_search = "Heuristic";
  CHECK_THROWS_WITH(options::validate(g, options::Naming::flag), Catch::StartsWith("--conv-search"));
  g.conv_search = "heuristic";
  CHECK_NOTHROW(options::validate(g, options::Naming::flag));

  // The process-wide setting (a no-op for the kernels without CUDA, but named and checked alike).
  REQUIRE(conv_search() == "timed");
  CHECK_THROWS_WITH(set_conv_search("fast"), "conv search must be timed or heuristic, got 'fast'");
  CHECK(conv_search() == "timed");  // a refused value changes nothing
  set_conv_search("heuristic");
  CHECK(conv_search() == (built_with_cuda() ? "heuristic" : "timed"));
  set_conv_search("timed");
  CHECK(conv_search() == "timed");
}

TEST_CASE("threads 0 is the cores this process may use, or OMP_NUM_THREADS when it is set", "[options][threads][cli]") {
  // `diffuse info` says what a command would use and why, in a child whose environment is known.
  RunResult r = run_cli({"info"}, "", {{"OMP_NUM_THREADS", "3"}});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("cpu threads: 3 (OMP_NUM_THREADS"));
  if (std::getenv("OMP_NUM_THREADS") != nullptr) {
    WARN("OMP_NUM_THREADS is set here: the affinity half of this test needs it unset");
    return;
  }
  // Pinned to one CPU, the default is 1 thread however many cores the machine has.
  const std::string taskset = "/usr/bin/taskset";  // util-linux; run() takes a path, not a PATH search
  if (!std::filesystem::exists(taskset)) {
    WARN(taskset << " is missing: the affinity half of this test did not run");
    return;
  }
  r = run({taskset, "-c", "0", DIFFUSE_CLI_PATH, "info"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("cpu threads: 1 (the 1 CPU this process may run on"));
}
