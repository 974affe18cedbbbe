// See option_flags.h.
#include "tools/option_flags.h"

#include <iostream>
#include <set>
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
// cxxopts names the value that failed to parse ("Argument ‘x’ failed to parse"), not its flag:
// find the flag that value was given to (`--flag value`, `--flag=value`, `-fvalue`) so the error
// names both. "" when the message is not cxxopts' or no flag took that value.
std::string flag_given(const std::vector<std::string>& words, const std::string& message) {
  const std::string head = "Argument " + cxxopts::LQUOTE, tail = cxxopts::RQUOTE + " failed to parse";
  if (message.size() < head.size() + tail.size() || message.rfind(head, 0) != 0 ||
      message.compare(message.size() - tail.size(), tail.size(), tail) != 0)
    return "";
  const std::string value = message.substr(head.size(), message.size() - head.size() - tail.size());
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w.rfind("--", 0) == 0) {
      const size_t eq = w.find('=');
      if (eq != std::string::npos && w.substr(eq + 1) == value) return w.substr(0, eq) + " " + value;
      if (eq == std::string::npos && i + 1 < words.size() && words[i + 1] == value) return w + " " + value;
    } else if (w.size() >= 2 && w[0] == '-') {
      if (w.size() == 2 && i + 1 < words.size() && words[i + 1] == value) return "--" + w.substr(1) + " " + value;
      if (w.size() > 2 && w.substr(2) == value) return "--" + w.substr(1, 1) + " " + value;
    }
  }
  return "";
}

// The table's bool flags, registered by add_flag: parse_flags spells their values for cxxopts.
std::set<std::string>& bool_flags() {
  static std::set<std::string> names;
  return names;
}

// A bool flag's value as a user may write it (on/off as well as true/false), as cxxopts reads
// it; "" for a word that is not one.
std::string bool_word(const std::string& w) {
  if (w == "on" || w == "true") return "true";
  if (w == "off" || w == "false") return "false";
  return "";
}

// `--flag on`, `--flag=off`, `--flag false` for a bool flag become `--flag=true|false`: cxxopts
// takes a bool's value only after '=' and only as true/false, and a bare `--flag` stays true.
void spell_bool_values(std::vector<std::string>& words) {
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w.rfind("--", 0) != 0) continue;
    const size_t eq = w.find('=');
    const std::string name = w.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    if (!bool_flags().count(name)) continue;
    if (eq != std::string::npos) {
      const std::string v = bool_word(w.substr(eq + 1));
      if (!v.empty()) words[i] = "--" + name + "=" + v;
    } else if (i + 1 < words.size() && !bool_word(words[i + 1]).empty()) {
      words[i] = "--" + name + "=" + bool_word(words[i + 1]);
      words.erase(words.begin() + static_cast<std::ptrdiff_t>(i + 1));
    }
  }
}

}  // namespace

void add_flag(cxxopts::OptionAdder& adder, const char* flag, const char* help, const options::ValueRef& default_value) {
  const std::string text = options::format_value(default_value);
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        using Parsed = std::conditional_t<std::is_same_v<T, Device>, std::string, T>;  // a device is parsed by name
        if constexpr (std::is_same_v<T, bool>) bool_flags().insert(flag);
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
  spell_bool_values(words);
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w.size() >= 3 && w.rfind("--", 0) == 0 && (w.size() == 3 || w[3] == '=') && w[2] != '-')
      words[i] = "-" + w.substr(2, 1) + (w.size() > 3 ? w.substr(4) : "");  // --n 16 / --n=16 -> -n 16 / -n16
  }
  std::vector<char*> pointers;
  for (auto& w : words) pointers.push_back(w.data());
  cxxopts::ParseResult args;
  try {
    args = cli.parse(static_cast<int>(pointers.size()), pointers.data());
  } catch (const cxxopts::exceptions::incorrect_argument_type& e) {
    const std::string given = flag_given(words, e.what());
    throw Error((given.empty() ? std::string(e.what()) : given + ": not a value this flag takes") + " (see --help)",
                ErrorKind::usage);
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
