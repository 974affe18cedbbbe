// Running the `diffuse` binary and Python reference scripts from tests: exit code plus combined
// output, and whether /usr/bin/python3 can import torch (parity tests skip, loudly, without it).
#pragma once
#include <string>
#include <vector>

namespace diffuse::test {

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs argv (no shell) in directory `cwd` (empty: the current one); output captured.
RunResult run(const std::vector<std::string>& argv, const std::string& cwd = "");
// The built CLI with these arguments.
RunResult run_cli(const std::vector<std::string>& args, const std::string& cwd = "");
bool python_has_torch();
std::string source_path(const std::string& relative);  // a path inside the source tree

}  // namespace diffuse::test
