// `diffuse info`: version, build options, the CUDA devices found and library versions, from the
// public API's diffuse::system_info(), and whether data-parallel training (MPI, NCCL) is built in
// (docs/distributed.md).
#include <cxxopts.hpp>
#include <iostream>

#include "diffuse/diffuse.h"
#include "nn/collective.h"
#include "tools/commands.h"
#include "tools/option_flags.h"

namespace diffuse::cli {

int cmd_info(int argc, char** argv) {
  cxxopts::Options cli("diffuse info", "Print version, build options, devices and library versions.");
  add_help_flags(cli, /*has_option_tables=*/false);
  auto args = parse_flags(cli, argc, argv);
  if (answer_help(args, cli, "")) return 0;
  for (const auto& [key, value] : system_info()) std::cout << key << ": " << value << "\n";
  // Asked without initialising MPI: `info` never starts a job.
  std::cout << "mpi: "
            << (collective::built_with_mpi() ? collective::mpi_library_version() + " (mpirun -np K diffuse train ...)"
                                             : std::string("not built in"))
            << "\n";
  std::cout << "nccl: "
            << (collective::built_with_nccl()
#if DIFFUSE_CUDA_EMULATED
                    ? "served by the emulated device over MPI"
#else
                    ? "built in (CUDA ranks all-reduce with NCCL)"
#endif
                    : "not built in")
            << "\n";
  return 0;
}

}  // namespace diffuse::cli
