// See cli_util.h.
#include "tools/cli_util.h"

#include <unistd.h>

#include <cstdio>

#include "nn/runtime.h"

namespace diffuse::cli {

std::optional<cxxopts::ParseResult> parse_or_usage(cxxopts::Options& options, int argc, char** argv) {
  try {
    return options.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    std::fprintf(stderr, "%s: %s (see --help)\n", options.program().c_str(), e.what());
    return std::nullopt;
  }
}

std::string required(const cxxopts::ParseResult& args, const std::string& name) {
  if (!args.count(name)) throw Error("--" + name + " is required");
  return args[name].as<std::string>();
}

Device parse_device(const cxxopts::ParseResult& args) {
  std::string d = args["device"].as<std::string>();
  if (d == "cpu") return Device::cpu;
  if (d == "cuda") {
    require_cuda_device();
    return Device::cuda;
  }
  throw Error("--device " + d + ": expected cpu or cuda");
}

bool stdout_is_terminal() { return ::isatty(STDOUT_FILENO) == 1; }

}  // namespace diffuse::cli
