// docs/cli.md stays true: every flag a subcommand's --help lists is documented, the train and
// sample option tables are the generated ones, every flag the example commands use is accepted,
// and the examples themselves run, in order, as written.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "nn/safetensors.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse::test;

namespace {
std::set<std::string> flags_in(const std::string& text) {
  std::set<std::string> out;
  std::regex flag(R"((?:^|[\s`(|/])(--[a-z][a-z0-9-]*))");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), flag); it != std::sregex_iterator(); ++it)
    out.insert((*it)[1]);
  return out;
}
std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

TEST_CASE("docs/cli.md documents every flag and uses only real ones", "[docs]") {
  std::string doc = read(source_path("docs/cli.md"));
  REQUIRE_FALSE(doc.empty());
  for (const char* cmd : {"train", "sample", "forward"}) {
    INFO("diffuse " << cmd);
    auto help = run_cli({cmd, "--help"});
    REQUIRE(help.exit_code == 0);
    std::set<std::string> accepted = flags_in(help.output);
    if (std::string(cmd) == "sample") accepted.insert("--n");  // cxxopts lists it as -n
    auto start = doc.find("## diffuse " + std::string(cmd));
    REQUIRE(start != std::string::npos);
    auto end = doc.find("\n## ", start + 1);
    std::string section = doc.substr(start, end - start);
    for (const auto& f : accepted) {
      if (f == "--help") continue;
      INFO("flag " << f);
      CHECK(section.find("`" + f + "`") != std::string::npos);
    }
    std::istringstream lines(section);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind("diffuse " + std::string(cmd), 0) != 0) continue;
      for (const auto& f : flags_in(line)) {
        INFO("example: " << line);
        CHECK(accepted.count(f) == 1);
      }
    }
  }
}

TEST_CASE("docs/cli.md's option tables are the ones generated from the option tables", "[docs]") {
  // Regenerate with `diffuse CMD --help-markdown` (engine/options.cpp holds the rows).
  std::string doc = read(source_path("docs/cli.md"));
  for (const char* cmd : {"train", "sample"}) {
    INFO("diffuse " << cmd << " --help-markdown");
    auto generated = run_cli({cmd, "--help-markdown"});
    REQUIRE(generated.exit_code == 0);
    auto start = doc.find("## diffuse " + std::string(cmd));
    REQUIRE(start != std::string::npos);
    auto table = doc.find("| flag | default | meaning |", start);
    REQUIRE(table != std::string::npos);
    auto end = doc.find("\n\n", table);
    CHECK(doc.substr(table, end + 1 - table) == generated.output);
  }
}

TEST_CASE("every command in docs/cli.md runs as written", "[docs][slow]") {
  std::string doc = read(source_path("docs/cli.md"));
  TempDir dir;
  // The forward examples read in.safetensors (a batch of two 32x32 grayscale samples) and the
  // gradient one a `weight` of the output's shape.
  diffuse::save_safetensors(dir.file("in.safetensors"),
                            {{"sample", diffuse::Tensor::randn({2, 1, 32, 32}, 1)},
                             {"timestep", diffuse::Tensor::from({10, 500}, {2}, diffuse::DType::i64)},
                             {"weight", diffuse::Tensor::randn({2, 1, 32, 32}, 2)}});
  std::istringstream lines(doc);
  std::string line;
  int ran = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("diffuse ", 0) != 0) continue;
    std::istringstream words(line.substr(8));
    std::vector<std::string> args;
    for (std::string w; words >> w;) args.push_back(w);
    INFO("$ " << line);
    auto r = run_cli(args, dir.path().string());
    INFO(r.output);
    CHECK(r.exit_code == 0);
    ++ran;
  }
  CHECK(ran >= 8);
  CHECK(std::filesystem::exists(dir.file("grid.png")));
  CHECK(std::filesystem::exists(dir.file("imgs/00003.png")));
  CHECK(std::filesystem::exists(dir.file("grads.safetensors")));
  CHECK(std::filesystem::exists(dir.file("runs/fm-cond/samples/step-10.png")));
}
