// The option tables of engine/options.h as cxxopts flags: each row becomes a flag whose default
// is the struct's own default and whose parsed value lands in the row's field, so a subcommand
// never lists its flags or their defaults by hand. Also the hidden --help-markdown that prints
// the docs/cli.md table (tests/cpu/test_docs.cpp compares the two) and --print-options.
#pragma once
#include <cxxopts.hpp>
#include <string>

#include "engine/options.h"

namespace diffuse::cli {

// Adds one flag for `flag` of the type held by `default_value`, with that value as its default.
void add_flag(cxxopts::OptionAdder& adder, const char* flag, const char* help, const options::ValueRef& default_value);
// Stores the parsed value of `flag` (given or defaulted) into `value`.
void read_flag(const cxxopts::ParseResult& args, const char* flag, const options::ValueRef& value);

template <class S>
void add_flags(cxxopts::Options& cli, const options::Table<S>& table) {
  S defaults{};
  auto adder = cli.add_options();
  for (const auto& o : table.rows) add_flag(adder, o.flag, options::help_text(o.help, o.saved).c_str(), o.bind(defaults));
}

template <class S>
void read_flags(const cxxopts::ParseResult& args, const options::Table<S>& table, S& s) {
  for (const auto& o : table.rows) read_flag(args, o.flag, o.bind(s));
}

// Adds each row's flag and its value in `s` as the CLI writes it to `out` (--print-options).
template <class S>
void add_values(const options::Table<S>& table, S& s, nlohmann::json& out) {
  for (const auto& o : table.rows) out[o.flag] = options::format_value(o.bind(s));
}

// Adds -h/--help and, for a command with option tables, in a group --help does not show,
// --help-markdown and --print-options (print every option's parsed value as JSON and stop:
// tests/cpu/test_options.cpp checks with it that each flag lands in its field and that the CLI's
// defaults are the library's).
void add_help_flags(cxxopts::Options& cli, bool has_option_tables = true);
// Parses argv. A one-letter flag is accepted as --x too (docs/cli.md writes `--n 16`). An unknown
// flag, a bad value or a stray argument is diffuse::Error(ErrorKind::usage) naming it.
cxxopts::ParseResult parse_flags(cxxopts::Options& cli, int argc, char** argv);
// Prints --help (without the hidden group) or --help-markdown (`markdown`, the docs/cli.md table)
// when one was given, and says so: the command then exits 0.
bool answer_help(const cxxopts::ParseResult& args, const cxxopts::Options& cli, const std::string& markdown);

}  // namespace diffuse::cli
