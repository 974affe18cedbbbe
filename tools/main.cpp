// `diffuse` entry point: picks the subcommand, turns every diffuse::Error into one line on stderr
// and the exit code of its kind (docs/cli.md).
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>

#include "diffuse/error.h"
#include "nn/atomic_file.h"
#include "nn/runtime.h"
#include "tools/commands.h"
#include "tools/openmp_wait.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* help;
};

const Command kCommands[] = {
    {"train", diffuse::cli::cmd_train, "train a UNet on a dataset into a run directory"},
    {"sample", diffuse::cli::cmd_sample, "generate images from a model directory"},
    {"forward", diffuse::cli::cmd_forward, "run the UNet once on tensors from a safetensors file (parity checks)"},
    {"bench", diffuse::cli::cmd_bench, "time kernels, a training step or sampling against their references"},
    {"inspect", diffuse::cli::cmd_inspect, "describe a model directory, checkpoint or run (size, config, schedule, step)"},
    {"report", diffuse::cli::cmd_report, "write one HTML page comparing training runs (curves, sample grids, options)"},
    {"info", diffuse::cli::cmd_info, "version, build options, devices and library versions"},
};

// docs/cli.md's exit codes: 2 for a mistake in the command line (or a device it asks for that is
// not there), 1 for a failure while running, whatever caused it.
int exit_code(diffuse::ErrorKind kind) {
  switch (kind) {
    case diffuse::ErrorKind::usage:
    case diffuse::ErrorKind::device_unavailable:
      return 2;
    case diffuse::ErrorKind::bad_input:
    case diffuse::ErrorKind::runtime:
      return 1;
  }
  return 1;
}

void usage(FILE* out) {
  std::fprintf(out, "usage: diffuse <command> [options]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-9s %s\n", c.name, c.help);
  std::fprintf(out, "\n`diffuse <command> --help` lists that command's flags and their defaults.\n");
}

}  // namespace

int main(int argc, char** argv) {
  diffuse::cli::default_to_passive_openmp_waits(argv);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("diffuse %s\n", DIFFUSE_VERSION);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (std::string(argv[1]) != c.name) continue;
    try {
      diffuse::check_cpu_kernel_environment();  // a bad DIFFUSE_CPU_ISA fails here, before any work
      return c.run(argc - 1, argv + 1);
    } catch (const diffuse::Error& e) {
      std::fprintf(stderr, "diffuse %s: %s\n", c.name, e.what());
      return exit_code(e.kind());
    } catch (const std::filesystem::filesystem_error& e) {
      const diffuse::Error error = diffuse::filesystem_failure(e);
      std::fprintf(stderr, "diffuse %s: %s\n", c.name, error.what());
      return exit_code(error.kind());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "diffuse %s: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "diffuse: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
