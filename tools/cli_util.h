// Small helpers shared by the subcommands: required flags, the --device flag, the terminal test.
// (Parsing is tools/option_flags.h's parse_flags: a bad flag is one usage error, exit code 2.)
#pragma once
#include <cxxopts.hpp>
#include <string>

#include "diffuse/device.h"
#include "diffuse/error.h"

namespace diffuse::cli {

// The value of --name, or diffuse::Error(ErrorKind::usage) "--name is required".
std::string required(const cxxopts::ParseResult& args, const std::string& name);
// --device cpu|cuda; another name is a usage error, cuda without a usable device
// ErrorKind::device_unavailable ("no CUDA device").
Device parse_device(const cxxopts::ParseResult& args);
// True when stdout is a terminal (live progress bar) rather than a pipe or file.
bool stdout_is_terminal();

}  // namespace diffuse::cli
