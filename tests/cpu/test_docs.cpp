// docs/cli.md stays true: every flag a subcommand's --help lists is documented, and every flag
// the documentation's example commands use is one the subcommand accepts.
#include <catch2/catch.hpp>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "support/process.h"

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
