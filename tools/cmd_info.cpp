// `diffuse info`: version, build options, the CUDA devices found and library versions, from the
// public API's diffuse::system_info().
#include <cxxopts.hpp>
#include <iostream>

#include "diffuse/diffuse.h"
#include "tools/commands.h"
#include "tools/option_flags.h"

namespace diffuse::cli {

int cmd_info(int argc, char** argv) {
  cxxopts::Options cli("diffuse info", "Print version, build options, devices and library versions.");
  add_help_flags(cli, /*has_option_tables=*/false);
  auto args = parse_flags(cli, argc, argv);
  if (answer_help(args, cli, "")) return 0;
  for (const auto& [key, value] : system_info()) std::cout << key << ": " << value << "\n";
  return 0;
}

}  // namespace diffuse::cli
