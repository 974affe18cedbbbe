// Small helpers shared by the subcommands: parsing that turns cxxopts errors into one usage error
// (exit code 2), required flags, the --device flag.
#pragma once
#include <cxxopts.hpp>
#include <optional>
#include <string>

#include "diffuse/device.h"
#include "diffuse/error.h"

namespace diffuse::cli {

// Parses argv: an unknown flag or a bad value throws diffuse::Error(ErrorKind::usage) naming it
// (never nullopt; stray arguments are left to the caller). The table-driven commands use
// parse_flags (tools/option_flags.h) instead.
std::optional<cxxopts::ParseResult> parse_or_usage(cxxopts::Options& options, int argc, char** argv);
// The value of --name, or diffuse::Error(ErrorKind::usage) "--name is required".
std::string required(const cxxopts::ParseResult& args, const std::string& name);
// --device cpu|cuda; another name is a usage error, cuda without a usable device
// ErrorKind::device_unavailable ("no CUDA device").
Device parse_device(const cxxopts::ParseResult& args);
// True when stdout is a terminal (live progress bar) rather than a pipe or file.
bool stdout_is_terminal();

}  // namespace diffuse::cli
