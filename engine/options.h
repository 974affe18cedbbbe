// Every option of `diffuse train` and `diffuse sample` defined once (docs/design.md §13, §14).
// The public structs in include/diffuse/diffuse.h are the definition of each option's name, type
// and default; the tables here add, per field, its CLI flag, whether a run's config.json saves it,
// its help text and its check. The CLI's flags and --help, docs/cli.md's option tables, the saved
// run options (written and read back) and the validation all iterate these tables, so adding an
// option is one struct field plus one table row (plus its use).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>
#include <vector>

#include "diffuse/diffuse.h"

namespace diffuse::options {

// One option's value inside its struct, by type: the types the public structs use.
using ValueRef = std::variant<std::string*, bool*, int*, int64_t*, uint64_t*, double*, Device*>;

// How a failed check names the option: the CLI's flag ("--steps") or the library's field
// ("TrainRequest::steps"), so each caller reads the name it wrote.
enum class Naming { flag, field };

// A check of one value. `check` throws diffuse::Error naming `label` (ErrorKind::usage, or
// device_unavailable for a device that is not there); an empty `check` accepts anything.
struct Rule {
  bool required = false;  // must be given (a non-empty string); docs show "(required)"
  std::function<void(const ValueRef& value, const std::string& label)> check;
};

Rule required();                                           // a non-empty string
Rule positive();                                           // a number > 0
Rule at_least(double min);                                 // a number >= min
Rule within(double lo, double hi, bool hi_included);       // a number in [lo, hi] or [lo, hi)
Rule finite();                                             // a finite number
Rule one_of(std::vector<std::string> choices);             // a string among `choices`
Rule available_device();                                   // cpu, or cuda when a CUDA device is usable

template <class S>
struct Option {
  const char* flag;       // the CLI flag without "--"; a one-letter flag is also -x
  const char* member;     // the field's name in S; also its key in a run's saved config.json
  ValueRef (*bind)(S&);   // the field inside an S
  bool saved;             // written to a run's config.json "train" object and read back
  const char* help;       // `diffuse CMD --help` and docs/cli.md's "meaning" column
  Rule rule = {};
};

template <class S>
struct Table {
  const char* struct_name;  // "TrainRequest": the library's messages name "TrainRequest::steps"
  std::vector<Option<S>> rows;
};

// Points an Option at a field: DIFFUSE_OPTION_FIELD(TrainRequest, steps) is the member's name and
// its binder, so the name cannot drift from the field.
template <class M>
struct member_owner;
template <class S, class T>
struct member_owner<T S::*> {
  using type = S;
};
template <auto Member>
ValueRef bind_member(typename member_owner<decltype(Member)>::type& s) {
  return &(s.*Member);
}
#define DIFFUSE_OPTION_FIELD(Struct, name) #name, &::diffuse::options::bind_member<&Struct::name>

// The CPU thread count of the commands that run kernels but take no public request (`diffuse
// bench`, `diffuse forward`); train and sample carry the same row in TrainRequest and
// GenerateRequest. Every `--threads` row is the one definition in engine/options.cpp.
struct ThreadOptions {
  int threads = 0;  // 0: the cores this process may use (nn/runtime.h set_cpu_threads)
};

// The tables: `diffuse train` is TrainRequest; `diffuse sample` is SamplerOptions then
// GenerateRequest (plus the CLI's own flags, tools/cmd_sample.cpp); `diffuse bench` and `diffuse
// forward` add ThreadOptions to flags of their own.
const Table<TrainRequest>& train_table();
const Table<SamplerOptions>& sampler_table();
const Table<GenerateRequest>& generate_table();
const Table<ThreadOptions>& thread_table();

// ---- what the tables drive ------------------------------------------------------------------

// "--steps" or "TrainRequest::steps".
std::string label(const char* struct_name, const char* flag, const char* member, Naming naming);
// A value as the CLI writes it ("1e-04", "cpu", "true"); a string as is.
std::string format_value(const ValueRef& value);
// "cpu" or "cuda" to a Device; anything else is a usage error naming `label`.
Device parse_device(const std::string& text, const std::string& label);
// The docs/cli.md table row of one option: | `--flag` | default | help |.
std::string markdown_row(const char* flag, const ValueRef& default_value, const Rule& rule, const char* help);

// Runs every row's check on `s`.
template <class S>
void check(const Table<S>& table, const S& s, Naming naming) {
  S copy = s;  // the binders take a mutable struct; checks only read
  for (const auto& o : table.rows)
    if (o.rule.check) o.rule.check(o.bind(copy), label(table.struct_name, o.flag, o.member, naming));
}

nlohmann::json value_to_json(const ValueRef& value);
// Stores `j` into `value`; a JSON value of the wrong type is ErrorKind::bad_input naming `what`.
void value_from_json(const nlohmann::json& j, const ValueRef& value, const std::string& what);

// The saved rows of `s` as a JSON object (the run's config.json "train" object).
template <class S>
nlohmann::json to_json(const Table<S>& table, const S& s) {
  S copy = s;
  nlohmann::json out = nlohmann::json::object();
  for (const auto& o : table.rows)
    if (o.saved) out[o.member] = value_to_json(o.bind(copy));
  return out;
}
// Reads the saved rows present in `object` into `s`; a wrong type is ErrorKind::bad_input naming
// `source` and the key.
template <class S>
void from_json(const Table<S>& table, const nlohmann::json& object, S& s, const std::string& source) {
  for (const auto& o : table.rows)
    if (o.saved && object.contains(o.member))
      value_from_json(object[o.member], o.bind(s), source + ": \"" + o.member + "\"");
}

// The markdown table (header and one row per option, in table order) of one or more tables, each
// with its defaults taken from a default-constructed struct.
template <class S>
std::string markdown_rows(const Table<S>& table) {
  S defaults{};
  std::string out;
  for (const auto& o : table.rows) out += markdown_row(o.flag, o.bind(defaults), o.rule, o.help);
  return out;
}
inline constexpr char kMarkdownHeader[] = "| flag | default | meaning |\n|---|---|---|\n";

// ---- each command's checks: the rows' rules plus the rules across fields --------------------

void validate(const TrainRequest& request, Naming naming);
void validate(const SamplerOptions& options, Naming naming);
void validate(const GenerateRequest& request, Naming naming);
// The class label against a model with `num_classes` classes (0: unconditional); a mismatch is
// ErrorKind::bad_input (the value does not fit the model the caller named).
void check_class_label(const GenerateRequest& request, int num_classes, Naming naming);

// A run's saved options: config.json's "train" object.
nlohmann::json train_options_json(const TrainRequest& request);
TrainRequest train_options_from_json(const nlohmann::json& object, const std::string& source);

}  // namespace diffuse::options
