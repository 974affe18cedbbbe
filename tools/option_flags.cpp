// See option_flags.h.
#include "tools/option_flags.h"

#include <iostream>
#include <vector>

namespace diffuse::cli {

namespace {
constexpr const char* kHiddenGroup = "hidden";

// Backticks mark names in docs/cli.md; a terminal shows them plain.
std::string plain(const char* help) {
  std::string out;
  for (const char* c = help; *c; ++c)
    if (*c != '`') out += *c;
  return out;
}
}  // namespace

void add_flag(cxxopts::OptionAdder& adder, const char* flag, const char* help, const options::ValueRef& default_value) {
  const std::string text = options::format_value(default_value);
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        using Parsed = std::conditional_t<std::is_same_v<T, Device>, std::string, T>;  // a device is parsed by name
        auto value = cxxopts::value<Parsed>();
        if (!text.empty()) value->default_value(text);
        adder(flag, plain(help), value);
      },
      default_value);
}

void read_flag(const cxxopts::ParseResult& args, const char* flag, const options::ValueRef& value) {
  if (!args.count(flag) && !args[flag].has_default()) return;  // an empty default not given: unchanged
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, Device>)
          *p = options::parse_device(args[flag].as<std::string>(), std::string("--") + flag);
        else
          *p = args[flag].as<T>();
      },
      value);
}

void add_help_flags(cxxopts::Options& cli, bool has_option_tables) {
  cli.add_options()("h,help", "show this help");
  if (has_option_tables)
    cli.add_options(kHiddenGroup)("help-markdown", "print the docs/cli.md option table")(
      "print-options", "print every option's parsed value as JSON and stop");
}

cxxopts::ParseResult parse_flags(cxxopts::Options& cli, int argc, char** argv) {
  std::vector<std::string> words(argv, argv + argc);
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w.size() >= 3 && w.rfind("--", 0) == 0 && (w.size() == 3 || w[3] == '=') && w[2] != '-')
      words[i] = "-" + w.substr(2, 1) + (w.size() > 3 ? w.substr(4) : "");  // --n 16 / --n=16 -> -n 16 / -n16
  }
  std::vector<char*> pointers;
  for (auto& w : words) pointers.push_back(w.data());
  cxxopts::ParseResult args;
  try {
    args = cli.parse(argc, pointers.data());
  } catch (const cxxopts::exceptions::exception& e) {
    throw Error(std::string(e.what()) + " (see --help)", ErrorKind::usage);
  }
  if (!args.unmatched().empty())
    throw Error("unexpected argument '" + args.unmatched()[0] + "' (see --help)", ErrorKind::usage);
  return args;
}

bool answer_help(const cxxopts::ParseResult& args, const cxxopts::Options& cli, const std::string& markdown) {
  if (args.count("help")) std::cout << cli.help({""}) << "\n";
  else if (args.count("help-markdown")) std::cout << markdown;
  else return false;
  return true;
}

}  // namespace diffuse::cli
