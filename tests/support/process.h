// Running the `diffuse` binary and Python reference scripts from tests: exit code plus combined
// output, and whether /usr/bin/python3 can import torch (parity tests skip, loudly, without it).
// Also re-running the test binary itself on one hidden test case in a child process, with extra
// environment: for checks whose expected outcome is the process dying (an emulated-device fault,
// a leak report at exit) or that need the device configured at startup (a small card).
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace diffuse::test {

struct RunResult {
  int exit_code = -1;  // the exit status, or 128 + the signal number when a signal ended it
  std::string output;  // stdout and stderr together
};

// Environment variables set (name, value) in the child on top of this process's environment.
using EnvVars = std::vector<std::pair<std::string, std::string>>;

// Runs argv (no shell) in directory `cwd` (empty: the current one); output captured.
RunResult run(const std::vector<std::string>& argv, const std::string& cwd = "", const EnvVars& env = {});
// The built CLI with these arguments.
RunResult run_cli(const std::vector<std::string>& args, const std::string& cwd = "", const EnvVars& env = {});
// This test binary (/proc/self/exe) running only the test case named `test_name` (give hidden
// cases a tag starting with "." so that ctest and a plain run skip them).
RunResult run_self(const std::string& test_name, const EnvVars& env = {});
bool python_has_torch();
std::string source_path(const std::string& relative);  // a path inside the source tree

}  // namespace diffuse::test
