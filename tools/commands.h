// The subcommands of the `diffuse` binary. Each takes its own argv (argv[0] is the subcommand
// name), parses it with cxxopts and returns the process exit code: 0 success, 1 a runtime failure,
// 2 bad usage or an unavailable device.
#pragma once

namespace diffuse::cli {

int cmd_info(int argc, char** argv);
int cmd_forward(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_sample(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_report(int argc, char** argv);

}  // namespace diffuse::cli
