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
Rule fits_int(double min);                                 // a number in [min, INT_MAX]: a field used as int
Rule finite();                                             // a finite number
Rule one_of(std::vector<std::string> choices);             // a string among `choices`
Rule available_device();                                   // cpu, or cuda when a CUDA device is usable

// Whether a run's config.json saves an option, and whether `--resume` may change it
// (docs/design.md §9): a kept option is restored from the saved run and a different value given
// explicitly is a usage error; a may-change one (the step count, the sample and checkpoint
// settings, the device, the save dtype) takes the value given, and the change is logged and saved.
// Built from a bool too (false: not saved, true: kept).
struct Saved {
  enum Kind : unsigned char { no, kept, may_change } kind;
  constexpr Saved(bool saved) : kind(saved ? kept : no) {}  // NOLINT: rows write true/false
  constexpr Saved(Kind k) : kind(k) {}                       // NOLINT
  constexpr explicit operator bool() const { return kind != no; }
};

template <class S>
struct Option {
  const char* flag;       // the CLI flag without "--"; a one-letter flag is also -x
  const char* member;     // the field's name in S; also its key in a run's saved config.json
  ValueRef (*bind)(S&);   // the field inside an S
  Saved saved;            // written to a run's config.json "train" object and read back; resume's rule
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

// How the kernels run, for the commands that run kernels but take no public request (`diffuse
// bench`, `diffuse forward`): the CPU thread count and cuDNN's algorithm choice. Train and sample
// carry the same rows in TrainRequest and GenerateRequest; each row (`--threads`,
// `--conv-search`) is one definition in engine/options.cpp.
struct ComputeOptions {
  std::string conv_search = GenerateRequest{}.conv_search;  // nn/runtime.h set_conv_search
  int threads = 0;  // 0: the cores this process may use (nn/runtime.h set_cpu_threads)
};

// The settings `diffuse bench sample` shares with `diffuse sample`: GenerateRequest's rows of the
// same names (one definition each), so the benchmark runs the sampling loop as sample does.
struct SamplingRunOptions {
  bool cuda_graphs = GenerateRequest{}.cuda_graphs;
  std::string precision = GenerateRequest{}.precision;
};

// The tables: `diffuse train` is TrainRequest; `diffuse sample` is SamplerOptions then
// GenerateRequest (plus the CLI's own flags, tools/cmd_sample.cpp); `diffuse bench` and `diffuse
// forward` add ComputeOptions to flags of their own.
const Table<TrainRequest>& train_table();
const Table<SamplerOptions>& sampler_table();
const Table<GenerateRequest>& generate_table();
const Table<SamplingRunOptions>& sampling_run_table();
const Table<ComputeOptions>& compute_table();

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

// A row's help text, saying when `--resume` may change the option (--help and docs/cli.md).
std::string help_text(const char* help, Saved saved);

// The markdown table (header and one row per option, in table order) of one or more tables, each
// with its defaults taken from a default-constructed struct.
template <class S>
std::string markdown_rows(const Table<S>& table) {
  S defaults{};
  std::string out;
  for (const auto& o : table.rows)
    out += markdown_row(o.flag, o.bind(defaults), o.rule, help_text(o.help, o.saved).c_str());
  return out;
}
inline constexpr char kMarkdownHeader[] = "| flag | default | meaning |\n|---|---|---|\n";

// ---- each command's checks: the rows' rules plus the rules across fields --------------------

// `path` can be a directory this process writes into: it is one already (writable), or the
// nearest existing ancestor is a writable directory. Else ErrorKind::bad_input naming `label`.
void check_output_directory(const std::string& path, const std::string& label);

// Each command's rules: its rows' checks, the rules across fields, and (train) its --out.
void validate(const TrainRequest& request, Naming naming);
void validate(const SamplerOptions& options, Naming naming);
void validate(const GenerateRequest& request, Naming naming);
// The class label against a model with `num_classes` classes (0: unconditional); a mismatch is
// ErrorKind::bad_input (the value does not fit the model the caller named).
void check_class_label(const GenerateRequest& request, int num_classes, Naming naming);
// `precision` bf16 needs the model on CUDA (a usage error naming the option otherwise).
void check_precision(const GenerateRequest& request, Device model_device, Naming naming);
// The inference steps against the scheduler's T (at most one step per training timestep): usage.
void check_inference_steps(const SamplerOptions& options, int64_t num_train_timesteps, Naming naming);

// A run's saved options: config.json's "train" object.
nlohmann::json train_options_json(const TrainRequest& request);
TrainRequest train_options_from_json(const nlohmann::json& object, const std::string& source);

// ---- resuming a run (docs/design.md §9) -------------------------------------------------------

// The "train" object of `run_dir`/config.json; null when the file does not exist (the trainer
// then says the run has nothing to resume). An unreadable or malformed file is ErrorKind::bad_input.
nlohmann::json saved_train_options(const std::string& run_dir);

struct ResumedTrainRequest {
  TrainRequest request;
  // One line per may-change option whose value differs from the saved one: "steps = 30 (the run
  // had 20)", with the config.json key, so the CLI and the library log the same words.
  std::vector<std::string> changes;
};

// Which options the caller set: by member name (the saved config.json key).
using GivenExplicitly = std::function<bool(const char* member)>;

// The request a resumed run trains with: every saved option of `saved` (see
// saved_train_options) restored unless `given_explicitly` says the caller set it; a kept option set
// to another value than the saved one is ErrorKind::usage naming it (by `naming`) and both values;
// a may-change option set is applied and listed in `changes`. Rows not saved, or missing from an
// older run's file, keep the given value. `source` names the file in messages.
ResumedTrainRequest resume_train_request(const TrainRequest& given, const nlohmann::json& saved,
                                         const std::string& source, Naming naming,
                                         const GivenExplicitly& given_explicitly);
// The run directory (request.out) against the request, before any work: one that already has a
// checkpoint is continued only with `resume` (ErrorKind::usage), `resume` needs a complete
// checkpoint (ErrorKind::bad_input), and a resumed run needs steps left to train (usage); each
// names the option by `naming`. The CLI calls it before the library does, so its flags are named.
void check_run_directory(const TrainRequest& request, Naming naming);
// The library's rule for "given explicitly" (include/diffuse/diffuse.h, TrainRequest::resume): a
// kept option is given when it differs from its default; a may-change option always is.
GivenExplicitly fields_set_in(const TrainRequest& request);

}  // namespace diffuse::options
