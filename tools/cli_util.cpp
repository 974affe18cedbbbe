// See cli_util.h.
#include "tools/cli_util.h"

#include <unistd.h>

#include "engine/options.h"

namespace diffuse::cli {

std::string required(const cxxopts::ParseResult& args, const std::string& name) {
  if (!args.count(name)) throw Error("--" + name + " is required", ErrorKind::usage);
  return args[name].as<std::string>();
}

Device parse_device(const cxxopts::ParseResult& args) {
  Device d = options::parse_device(args["device"].as<std::string>(), "--device");
  options::available_device().check(&d, "--device");
  return d;
}

bool stdout_is_terminal() { return ::isatty(STDOUT_FILENO) == 1; }

}  // namespace diffuse::cli
