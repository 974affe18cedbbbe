// `diffuse info`: version, build options, the CUDA devices found and library versions.
#include <cxxopts.hpp>
#include <iostream>

#include "nn/runtime.h"
#include "tools/commands.h"

namespace diffuse::cli {

int cmd_info(int argc, char** argv) {
  cxxopts::Options options("diffuse info", "Print version, build options, devices and library versions.");
  options.add_options()("h,help", "show this help");
  auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << "\n";
    return 0;
  }
  for (auto& [key, value] : build_info()) std::cout << key << ": " << value << "\n";
  auto devices = cuda_devices();
  if (devices.empty()) std::cout << "cuda devices: none\n";
  for (auto& d : devices)
    std::cout << "cuda device " << d.index << ": " << d.name << " (sm_" << d.sm_major << d.sm_minor << ", "
              << d.sm_count << " SMs, " << (d.memory_bytes >> 20) << " MiB)\n";
  return 0;
}

}  // namespace diffuse::cli
