// See options.h. The tables below are the one place an option's flag, help text, saved key and
// check are written; the help texts are also docs/cli.md's "meaning" column (tests/cpu/test_docs.cpp
// fails when docs/cli.md differs from the generated table).
#include "engine/options.h"

#include <climits>
#include <limits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "engine/checkpoint.h"
#include "engine/noise_schedule.h"
#include "engine/scheduler_config.h"
#include "nn/allocator.h"
#include "nn/collective.h"
#include "nn/json_input.h"
#include "nn/runtime.h"

namespace diffuse::options {

namespace {

[[noreturn]] void bad(const std::string& message) { throw Error(message, ErrorKind::usage); }

// A numeric value as a double, for the range rules; a non-numeric field is a table mistake.
double number(const ValueRef& v) {
  return std::visit(
      [](auto* p) -> double {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
          return static_cast<double>(*p);
        else
          throw std::logic_error("options: a numeric rule on a non-numeric field");
      },
      v);
}

const std::string& text(const ValueRef& v) {
  if (auto* p = std::get_if<std::string*>(&v)) return **p;
  throw std::logic_error("options: a string rule on a non-string field");
}

// The fewest %g digits that read back as exactly `x` ("0.0001", not "1e-04" or 0.000100000...).
std::string format_number(double x) {
  char buf[40];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  return buf;
}

// A string rule that hands the value to the engine's own parser (the one place its names live),
// turning its complaint into a usage error; "" passes when `allow_empty`.
template <typename Parse>
Rule parsed_by(Parse parse, bool allow_empty = false) {
  return {false, [parse, allow_empty](const ValueRef& v, const std::string& label) {
            if (allow_empty && text(v).empty()) return;
            try {
              parse(text(v), label);
            } catch (const Error& e) {
              bad(e.what());
            }
          }};
}

const Rule kPrediction = parsed_by(parse_prediction_type);
const Rule kBetaSchedule = parsed_by(parse_beta_schedule);
constexpr Saved kSaved = Saved::kept, kNotSaved = Saved::no, kSavedMayChange = Saved::may_change;

// The one `--cuda-graphs` row, for every table whose struct has a `cuda_graphs` field (not saved:
// graphs on or off give the same bits); `help` says what is replayed as one graph.
template <class S>
Option<S> cuda_graphs_row(const char* help) {
  return {"cuda-graphs", DIFFUSE_OPTION_FIELD(S, cuda_graphs), kNotSaved, help};
}

// The two sampling rows `diffuse sample` (GenerateRequest) and `diffuse bench sample`
// (SamplingRunOptions) share.
template <class S>
Option<S> sampler_graphs_row() {
  return cuda_graphs_row<S>("on CUDA, replay each sampler step as one CUDA graph after two eager steps "
                            "(`--cuda-graphs off`: eager); ignored on the CPU");
}

template <class S>
Option<S> sampling_precision_row() {
  return {"precision", DIFFUSE_OPTION_FIELD(S, precision), kNotSaved,
          "`fp32`, or `bf16` with `--device cuda`: the UNet's activations in bf16 with f32 math and "
          "accumulation (docs/design.md §4; the sampler's update stays f32)",
          one_of({"fp32", "bf16"})};
}

// The one `--conv-search` row, for every table whose struct has a `conv_search` field. A training
// run saves it (a resumed run repeats bit for bit only with the same choice; `--resume` may change
// it); the other commands do not.
template <class S>
Option<S> conv_search_row(Saved saved) {
  return {"conv-search", DIFFUSE_OPTION_FIELD(S, conv_search), saved,
          "on CUDA, how cuDNN chooses each convolution's algorithms: `timed` runs them once per shape and keeps "
          "the fastest (processes may choose differently, and differ in the last bits); `heuristic` takes "
          "cuDNN's own ranking without running them (the same choice in every process on one card and cuDNN "
          "version: runs repeat bit for bit); ignored on the CPU",
          one_of({"timed", "heuristic"})};
}

// The one `--threads` row, for every table whose struct has a `threads` field. Not saved: the
// thread count is the machine's business, so a resumed run may use another one.
template <class S>
Option<S> threads_row() {
  return {"threads", DIFFUSE_OPTION_FIELD(S, threads), kNotSaved,
          "CPU threads for the kernels; 0: the cores this process may use (`OMP_NUM_THREADS` when set)",
          at_least(0)};
}

}  // namespace

Rule required() {
  return {true, [](const ValueRef& v, const std::string& label) {
            if (text(v).empty()) bad(label + " is required");
          }};
}

Rule positive() {
  return {false, [](const ValueRef& v, const std::string& label) {
            if (!(number(v) > 0)) bad(label + " must be positive, got " + format_value(v));
          }};
}

Rule at_least(double min) {
  return {false, [min](const ValueRef& v, const std::string& label) {
            if (!(number(v) >= min)) bad(label + " must be >= " + format_number(min) + ", got " + format_value(v));
          }};
}

Rule within(double lo, double hi, bool hi_included) {
  return {false, [=](const ValueRef& v, const std::string& label) {
            const double x = number(v);
            if (!(x >= lo && (hi_included ? x <= hi : x < hi)))
              bad(label + " must be in [" + format_number(lo) + ", " + format_number(hi) + (hi_included ? "]" : ")") +
                  ", got " + format_value(v));
          }};
}

Rule fits_int(double min) {
  return {false, [min](const ValueRef& v, const std::string& label) {
            const double x = number(v);
            if (!(x >= min && x <= INT_MAX))
              bad(label + " must be in [" + format_number(min) + ", " + std::to_string(INT_MAX) + "], got " +
                  format_value(v));
          }};
}

Rule finite() {
  return {false, [](const ValueRef& v, const std::string& label) {
            if (!std::isfinite(number(v))) bad(label + " must be finite, got " + format_value(v));
          }};
}

Rule one_of(std::vector<std::string> choices) {
  return {false, [choices](const ValueRef& v, const std::string& label) {
            for (const auto& c : choices)
              if (text(v) == c) return;
            std::string list;
            for (size_t i = 0; i < choices.size(); ++i)
              list += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i];
            bad(label + " " + text(v) + ": expected " + list);
          }};
}

Rule available_device() {
  return {false, [](const ValueRef& v, const std::string& label) {
            if (*std::get<Device*>(v) != Device::cuda) return;
            try {
              require_cuda_device();
            } catch (const Error& e) {
              throw Error(label + " cuda: " + e.what(), ErrorKind::device_unavailable);
            }
          }};
}

// ---- the tables -----------------------------------------------------------------------------

const Table<TrainRequest>& train_table() {
  using R = TrainRequest;
  static const Table<R> table{
      "TrainRequest",
      {
          {"data", DIFFUSE_OPTION_FIELD(R, data), kSaved,
           "`fashion-mnist` (Debian's files under /usr/share/datasets/fashion-mnist), `fashion-mnist-test`, an IDX "
           "images file (gzipped or not; labels found beside it), or a folder of PNG/JPEG/BMP images (class labels "
           "from subfolder names)",
           required()},
          {"out", DIFFUSE_OPTION_FIELD(R, out), kNotSaved, "the run directory", required()},
          {"config", DIFFUSE_OPTION_FIELD(R, config), kSaved,
           "`tiny`, `fmnist-small`, `ddpm-cifar10`, or a diffusers UNet2DModel config.json", required()},
          {"steps", DIFFUSE_OPTION_FIELD(R, steps), kSavedMayChange, "the step to train to",
           positive()},
          {"batch", DIFFUSE_OPTION_FIELD(R, batch), kSaved,
           "batch size per rank (under `mpirun -np K` the global batch is K × this: docs/distributed.md)", positive()},
          {"lr", DIFFUSE_OPTION_FIELD(R, lr), kSaved, "peak learning rate of AdamW (β 0.9/0.999, ε 1e-8)",
           positive()},
          {"warmup", DIFFUSE_OPTION_FIELD(R, warmup), kSaved, "linear warmup steps, as diffusers' (torch's LambdaLR): step s uses lr·(s − 1)/warmup, so step 1 has lr 0",
           at_least(0)},
          {"lr-schedule", DIFFUSE_OPTION_FIELD(R, lr_schedule), kSaved,
           "after warmup: `constant` or `cosine` (to 0 at `--steps`)", one_of({"constant", "cosine"})},
          {"weight-decay", DIFFUSE_OPTION_FIELD(R, weight_decay), kSaved, "AdamW's decoupled weight decay",
           at_least(0)},
          {"grad-clip", DIFFUSE_OPTION_FIELD(R, grad_clip), kSaved, "max global gradient norm; 0 disables clipping",
           at_least(0)},
          {"ema-decay", DIFFUSE_OPTION_FIELD(R, ema_decay), kSaved,
           "the EMA's maximum decay (diffusers' warmup rule with `--ema-inv-gamma` and `--ema-power`)",
           within(0, 1, false)},
          {"ema-inv-gamma", DIFFUSE_OPTION_FIELD(R, ema_inv_gamma), kSaved,
           "EMA warmup, as diffusers' EMAModel: the decay at step s is 1 - (1 + (s - 1)/inv_gamma)^-power (0 at step 1), "
           "capped by `--ema-decay`", positive()},
          {"ema-power", DIFFUSE_OPTION_FIELD(R, ema_power), kSaved, "EMA warmup power (see `--ema-inv-gamma`)",
           positive()},
          {"prediction", DIFFUSE_OPTION_FIELD(R, prediction), kSaved,
           "the training target: `epsilon`, `v_prediction` or `sample`", kPrediction},
          {"beta-schedule", DIFFUSE_OPTION_FIELD(R, beta_schedule), kSaved,
           "`linear`, `scaled_linear` or `squaredcos_cap_v2` (β 1e-4 → 0.02)", kBetaSchedule},
          {"timesteps", DIFFUSE_OPTION_FIELD(R, num_train_timesteps), kSaved, "number of training timesteps T",
           fits_int(1)},
          {"snr-gamma", DIFFUSE_OPTION_FIELD(R, snr_gamma), kSaved, "min-SNR-γ loss weighting; 0 is off",
           at_least(0)},
          {"classes", DIFFUSE_OPTION_FIELD(R, classes), kSaved,
           "train class-conditional with this many classes (plus a null class for guidance)", fits_int(0)},
          {"p-uncond", DIFFUSE_OPTION_FIELD(R, p_uncond), kSaved, "probability of replacing a label by the null class",
           within(0, 1, false)},
          {"random-flip", DIFFUSE_OPTION_FIELD(R, random_flip), kSaved, "random horizontal flips"},
          {"sample-every", DIFFUSE_OPTION_FIELD(R, sample_every), kSavedMayChange,
           "write `samples/step-N.png` (`--sample-count` images, DDIM-50, EMA weights) every N steps; 0: never",
           at_least(0)},
          {"sample-count", DIFFUSE_OPTION_FIELD(R, sample_count), kSavedMayChange, "images in each sample grid",
           positive()},
          {"checkpoint-every", DIFFUSE_OPTION_FIELD(R, checkpoint_every), kSavedMayChange,
           "write `checkpoints/step-N/` every N steps (always at the end)", at_least(0)},
          {"max-images", DIFFUSE_OPTION_FIELD(R, max_images), kSaved, "use only the first N images (0: all)",
           at_least(0)},
          {"resume", DIFFUSE_OPTION_FIELD(R, resume), kNotSaved,
           "continue the run in `--out` from its newest checkpoint, bit-for-bit"},
          {"device", DIFFUSE_OPTION_FIELD(R, device), kSavedMayChange, "`cpu` or `cuda`", available_device()},
          {"precision", DIFFUSE_OPTION_FIELD(R, precision), kSaved,
           "`fp32`, or `bf16` on CUDA: mixed precision (the UNet's activations in bf16 from its first conv to "
           "its last: convolutions, linears and attention with f32 accumulation, group norm with f32 statistics, "
           "the element-wise and shape kernels with f32 math; f32 timestep embedding, master weights, optimizer, "
           "EMA and loss; a step whose gradients are not finite is skipped)",
           one_of({"fp32", "bf16"})},
          {"save-dtype", DIFFUSE_OPTION_FIELD(R, save_dtype), kSavedMayChange,
           "`fp32`; `fp16` or `bf16` also write each checkpoint's `ema/` weights as that diffusers variant "
           "(`diffusion_pytorch_model.fp16.safetensors`; the f32 file stays for `--resume`)",
           one_of({"fp32", "fp16", "bf16"})},
          {"seed", DIFFUSE_OPTION_FIELD(R, seed), kSaved,
           "seeds initialisation, shuffling, timesteps, noise, dropout and label dropout"},
          cuda_graphs_row<R>("on CUDA, replay the training step (forward, loss, backward, clipping, AdamW, EMA) "
                             "as one CUDA graph after two eager steps (`--cuda-graphs off`: eager); ignored on "
                             "the CPU"),
          conv_search_row<R>(kSavedMayChange),
          {"status-every", DIFFUSE_OPTION_FIELD(R, status_every), kNotSaved,
           "on CUDA, read the steps' loss and status back every N steps (1..64), so no step waits for the "
           "host; progress lines and a stop request (Ctrl-C) take effect at those steps; the CPU reads every step",
           within(1, 64, true)},
          threads_row<R>(),
      }};
  return table;
}

const Table<SamplerOptions>& sampler_table() {
  using S = SamplerOptions;
  static const Table<S> table{
      "SamplerOptions",
      {
          {"sampler", DIFFUSE_OPTION_FIELD(S, sampler), kNotSaved,
           "`ddpm`, `ddim` or `dpmpp-2m`; other settings (spacing, clipping, ...) come from the scheduler config",
           parsed_by(parse_sampler_kind, /*allow_empty=*/true)},
          {"steps", DIFFUSE_OPTION_FIELD(S, steps), kNotSaved, "inference steps", positive()},
          {"eta", DIFFUSE_OPTION_FIELD(S, eta), kNotSaved, "DDIM's η (0: deterministic)", within(0, 1, true)},
          {"scheduler-config", DIFFUSE_OPTION_FIELD(S, scheduler_config), kNotSaved,
           "a scheduler_config.json to use instead of the model directory's own"},
      }};
  return table;
}

const Table<GenerateRequest>& generate_table() {
  using G = GenerateRequest;
  static const Table<G> table{
      "GenerateRequest",
      {
          {"n", DIFFUSE_OPTION_FIELD(G, count), kNotSaved, "number of images", positive()},
          {"class", DIFFUSE_OPTION_FIELD(G, class_label), kNotSaved,
           "class label of a class-conditional model (-1: unconditional)", at_least(-1)},
          {"guidance", DIFFUSE_OPTION_FIELD(G, guidance), kNotSaved,
           "classifier-free guidance weight (with `--class`; both halves in one batched forward)", finite()},
          {"seed", DIFFUSE_OPTION_FIELD(G, seed), kNotSaved, "the seed; the same seed and batch give the same images"},
          {"batch", DIFFUSE_OPTION_FIELD(G, batch), kNotSaved, "images per sampler batch", positive()},
          sampler_graphs_row<G>(),
          sampling_precision_row<G>(),
          conv_search_row<G>(kNotSaved),
          threads_row<G>(),
      }};
  return table;
}

const Table<SamplingRunOptions>& sampling_run_table() {
  using R = SamplingRunOptions;
  static const Table<R> table{"SamplingRunOptions", {sampler_graphs_row<R>(), sampling_precision_row<R>()}};
  return table;
}

const Table<ComputeOptions>& compute_table() {
  using C = ComputeOptions;
  static const Table<C> table{"ComputeOptions", {conv_search_row<C>(kNotSaved), threads_row<C>()}};
  return table;
}

// ---- what the tables drive ------------------------------------------------------------------

std::string label(const char* struct_name, const char* flag, const char* member, Naming naming) {
  return naming == Naming::flag ? std::string("--") + flag : std::string(struct_name) + "::" + member;
}

std::string format_value(const ValueRef& value) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>)
          return *p;
        else if constexpr (std::is_same_v<T, bool>)
          return *p ? "true" : "false";
        else if constexpr (std::is_same_v<T, Device>)
          return device_name(*p);
        else if constexpr (std::is_same_v<T, double>)
          return format_number(*p);
        else
          return std::to_string(*p);
      },
      value);
}

Device parse_device(const std::string& text, const std::string& label) {
  if (text == "cpu") return Device::cpu;
  if (text == "cuda") return Device::cuda;
  bad(label + " " + text + ": expected cpu or cuda");
}

std::string help_text(const char* help, Saved saved) {
  return saved.kind == Saved::may_change ? std::string(help) + " (`--resume` may change it)" : std::string(help);
}

std::string markdown_row(const char* flag, const ValueRef& default_value, const Rule& rule, const char* help) {
  std::string name = std::string("`--") + flag + "`";
  if (std::string(flag).size() == 1) name += std::string(" / `-") + flag + "`";
  std::string def;
  if (rule.required && std::holds_alternative<std::string*>(default_value) && text(default_value).empty())
    def = "(required)";
  else if (auto* b = std::get_if<bool*>(&default_value))
    def = **b ? "on" : "off";
  else if (std::holds_alternative<std::string*>(default_value) || std::holds_alternative<Device*>(default_value))
    def = format_value(default_value).empty() ? "" : "`" + format_value(default_value) + "`";
  else
    def = format_value(default_value);
  return "| " + name + " | " + def + " | " + help + " |\n";
}

nlohmann::json value_to_json(const ValueRef& value) {
  return std::visit(
      [](auto* p) -> nlohmann::json {
        if constexpr (std::is_same_v<std::remove_pointer_t<decltype(p)>, Device>)
          return device_name(*p);
        else
          return *p;
      },
      value);
}

void value_from_json(const nlohmann::json& j, const ValueRef& value, const std::string& what) {
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        bool ok;
        if constexpr (std::is_same_v<T, Device>) {
          ok = j.is_string() && (j == "cpu" || j == "cuda");
          if (ok) *p = j == "cuda" ? Device::cuda : Device::cpu;
        } else if constexpr (std::is_same_v<T, std::string>) {
          ok = j.is_string();
          if (ok) *p = j.get<std::string>();
        } else if constexpr (std::is_same_v<T, bool>) {
          ok = j.is_boolean();
          if (ok) *p = j.get<bool>();
        } else if constexpr (std::is_same_v<T, double>) {
          ok = j.is_number();
          if (ok) *p = j.get<double>();
        } else if constexpr (std::is_unsigned_v<T>) {
          ok = j.is_number_unsigned();
          if (ok) *p = j.get<T>();
        } else {
          // Checked: an unsigned 2^64 - 1 or a float must not wrap into the field.
          ok = j.is_number();
          if (ok)
            *p = static_cast<T>(json_integer(j, std::numeric_limits<T>::min(), std::numeric_limits<T>::max(), what));
        }
        if (!ok) throw Error(what + " = " + json_excerpt(j) + " has the wrong type", ErrorKind::bad_input);
      },
      value);
}

// ---- each command's checks ------------------------------------------------------------------

void check_output_directory(const std::string& path, const std::string& label) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir = fs::absolute(path, ec);
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw Error(label + " " + path + ": exists and is not a directory", ErrorKind::bad_input);
  // The nearest ancestor that exists. A lookup that fails for another reason than a missing
  // entry (a name too long, a loop of links) fails the check: creating the directory would too.
  while (!dir.empty() && !fs::exists(dir, ec) && dir != dir.parent_path()) {
    if (ec && ec != std::errc::no_such_file_or_directory)
      throw Error(label + " " + path + ": " + ec.message(), ErrorKind::bad_input);
    dir = dir.parent_path();
  }
  if (!fs::is_directory(dir, ec))
    throw Error(label + " " + path + ": " + dir.string() + " is not a directory", ErrorKind::bad_input);
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw Error(label + " " + path + ": " + dir.string() + " is not writable", ErrorKind::bad_input);
}

void validate(const TrainRequest& r, Naming naming) {
  const auto& t = train_table();
  check(t, r, naming);
  auto name = [&](const char* flag, const char* member) { return label(t.struct_name, flag, member, naming); };
  check_output_directory(r.out, name("out", "out"));
  if (r.precision == "bf16" && r.device != Device::cuda)
    bad(name("precision", "precision") + " bf16 needs " + name("device", "device") +
        " cuda (the CPU has no bf16 kernels); use fp32");
}

void validate(const SamplerOptions& o, Naming naming) { check(sampler_table(), o, naming); }

void validate(const GenerateRequest& r, Naming naming) {
  const auto& t = generate_table();
  check(t, r, naming);
  if (r.guidance != 1.0 && r.class_label < 0)
    bad(label(t.struct_name, "guidance", "guidance", naming) + " " + format_number(r.guidance) + " needs a " +
        (naming == Naming::flag ? "--class" : "class_label"));
}

void check_precision(const GenerateRequest& r, Device model_device, Naming naming) {
  if (r.precision == "bf16" && model_device != Device::cuda)
    bad(label(generate_table().struct_name, "precision", "precision", naming) + " bf16 needs " +
        (naming == Naming::flag ? "--device cuda" : "a model on CUDA") + " (the CPU has no bf16 kernels); use fp32");
}

void check_class_label(const GenerateRequest& r, int num_classes, Naming naming) {
  if (r.class_label < 0 || r.class_label < num_classes) return;
  throw Error(label(generate_table().struct_name, "class", "class_label", naming) + " " +
                  std::to_string(r.class_label) +
                  (num_classes == 0 ? std::string(": the model is unconditional; use -1")
                                    : ": expected -1 or 0.." + std::to_string(num_classes - 1)),
              ErrorKind::bad_input);
}

void check_inference_steps(const SamplerOptions& o, int64_t num_train_timesteps, Naming naming) {
  if (o.steps <= num_train_timesteps) return;
  throw Error(label(sampler_table().struct_name, "steps", "steps", naming) + " " + std::to_string(o.steps) +
                  ": more than the scheduler's num_train_timesteps (" + std::to_string(num_train_timesteps) +
                  "): at most one inference step per training timestep",
              ErrorKind::usage);
}

nlohmann::json train_options_json(const TrainRequest& r) { return to_json(train_table(), r); }

TrainRequest train_options_from_json(const nlohmann::json& object, const std::string& source) {
  if (!object.is_object()) throw Error(source + ": the saved train options are not a JSON object", ErrorKind::bad_input);
  TrainRequest r;
  from_json(train_table(), object, r, source);
  return r;
}

// ---- resuming a run --------------------------------------------------------------------------

nlohmann::json saved_train_options(const std::string& run_dir) {
  const std::string path = (std::filesystem::path(run_dir) / "config.json").string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return nullptr;
  nlohmann::json config = parse_json_input(read_json_input_file(path, "the run's saved options"), path);
  if (!config.is_object() || !config.contains("train") || !config["train"].is_object())
    throw Error(path + ": not a run's config.json (no \"train\" object)", ErrorKind::bad_input);
  return config["train"];
}

void check_run_directory(const TrainRequest& request, Naming naming) {
  int64_t done = 0;
  const std::string latest = find_latest_checkpoint(request.out, &done);
  const std::string resume = label("TrainRequest", "resume", "resume", naming);
  if (!request.resume && !latest.empty())
    throw Error(request.out + ": the run directory already has checkpoints; " +
                    (naming == Naming::flag ? "pass " : "set ") + resume +
                    " to continue it or choose another " + label("TrainRequest", "out", "out", naming),
                ErrorKind::usage);
  if (request.resume && latest.empty())
    throw Error(request.out + ": " + resume + " given but the run has no checkpoint", ErrorKind::bad_input);
  if (!request.resume) return;
  if (done >= request.steps)
    throw Error(request.out + ": already trained to step " + std::to_string(done) + "; raise " +
                    label("TrainRequest", "steps", "steps", naming) + " to continue",
                ErrorKind::usage);
}

ResumedTrainRequest resume_train_request(const TrainRequest& given, const nlohmann::json& saved,
                                         const std::string& source, Naming naming,
                                         const GivenExplicitly& given_explicitly) {
  ResumedTrainRequest out{given, {}};
  if (saved.is_null()) return out;
  const auto& t = train_table();
  const TrainRequest before = train_options_from_json(saved, source);
  TrainRequest given_copy = given, saved_copy = before;
  // "batch" is saved as the run's global batch (ranks × --batch, docs/distributed.md): the ranks
  // of this process's job each take an equal share of it, so a run resumes at any rank count.
  const int ranks = collective::world().size();
  if (ranks > 1 && saved.contains("batch")) {
    if (before.batch % ranks != 0)
      bad(label(t.struct_name, "batch", "batch", naming) + ": the run's global batch " + std::to_string(before.batch) +
          " (" + source + ") cannot be split evenly over " + std::to_string(ranks) + " ranks");
    saved_copy.batch = before.batch / ranks;
  }
  for (const auto& o : t.rows) {
    if (!o.saved || !saved.contains(o.member)) continue;
    const ValueRef mine = o.bind(given_copy), theirs = o.bind(saved_copy), result = o.bind(out.request);
    const bool same = value_to_json(mine) == value_to_json(theirs);
    if (!given_explicitly(o.member)) {
      value_from_json(value_to_json(theirs), result, source);
    } else if (!same && o.saved.kind == Saved::kept) {
      bad(label(t.struct_name, o.flag, o.member, naming) + " " + format_value(mine) + " differs from the run's " +
          format_value(theirs) + " (" + source + "); a resumed run keeps its settings: drop the " +
          (naming == Naming::flag ? "flag" : "field") + " or train into a new " +
          label(t.struct_name, "out", "out", naming) +
          (ranks > 1 && std::string(o.member) == "batch"
               ? " (per rank: the run's global batch " + std::to_string(before.batch) + " over " +
                     std::to_string(ranks) + " ranks)"
               : ""));
    } else if (!same) {
      out.changes.push_back(std::string(o.member) + " = " + format_value(mine) + " (the run had " +
                            format_value(theirs) + ")");
    }
  }
  return out;
}

GivenExplicitly fields_set_in(const TrainRequest& request) {
  return [given = TrainRequest(request)](const char* member) mutable {
    TrainRequest defaults;
    for (const auto& o : train_table().rows) {
      if (std::string(o.member) != member) continue;
      return o.saved.kind == Saved::may_change || value_to_json(o.bind(given)) != value_to_json(o.bind(defaults));
    }
    return false;
  };
}

}  // namespace diffuse::options
