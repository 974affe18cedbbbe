// Small helpers shared by the subcommands: parsing that turns cxxopts errors into one line and
// exit code 2, required flags, the --device flag.
#pragma once
#include <cxxopts.hpp>
#include <optional>
#include <string>

#include "diffuse/error.h"
#include "nn/allocator.h"

namespace diffuse::cli {

// Parses argv; on an unknown flag or a bad value prints one line naming it and returns nullopt.
std::optional<cxxopts::ParseResult> parse_or_usage(cxxopts::Options& options, int argc, char** argv);
// The value of --name, or diffuse::Error "--name is required".
std::string required(const cxxopts::ParseResult& args, const std::string& name);
// --device cpu|cuda; cuda without a usable device throws "no CUDA device" (exit code 2).
Device parse_device(const cxxopts::ParseResult& args);
// True when stdout is a terminal (live progress bar) rather than a pipe or file.
bool stdout_is_terminal();

}  // namespace diffuse::cli
