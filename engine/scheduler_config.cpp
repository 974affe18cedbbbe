// scheduler_config.json read/write (see scheduler_config.h). Each key diffusers writes for the three
// scheduler classes has one handler below; it either sets a field or checks that the value asks
// for nothing we lack. Python's json writes -Infinity for DPMSolverMultistepScheduler's
// lambda_min_clipped, which strict JSON parsers refuse, so bare non-finite tokens are quoted first.
#include "engine/scheduler_config.h"

#include <cmath>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "diffuse/error.h"
#include "nn/atomic_file.h"
#include "nn/json_input.h"
#include "nn/unet_config.h"

namespace diffuse {

using json = nlohmann::json;

const char* sampler_kind_name(SamplerKind k) {
  switch (k) {
    case SamplerKind::ddpm: return "ddpm";
    case SamplerKind::ddim: return "ddim";
    case SamplerKind::dpmpp_2m: return "dpmpp-2m";
  }
  return "?";
}

SamplerKind parse_sampler_kind(const std::string& s, const std::string& what) {
  for (auto k : {SamplerKind::ddpm, SamplerKind::ddim, SamplerKind::dpmpp_2m})
    if (s == sampler_kind_name(k)) return k;
  throw Error(what + ": unknown sampler \"" + s + "\" (ddpm, ddim, dpmpp-2m)");
}

const char* scheduler_class_name(SamplerKind k) {
  switch (k) {
    case SamplerKind::ddpm: return "DDPMScheduler";
    case SamplerKind::ddim: return "DDIMScheduler";
    case SamplerKind::dpmpp_2m: return "DPMSolverMultistepScheduler";
  }
  return "?";
}

const char* timestep_spacing_name(TimestepSpacing s) {
  switch (s) {
    case TimestepSpacing::leading: return "leading";
    case TimestepSpacing::trailing: return "trailing";
    case TimestepSpacing::linspace: return "linspace";
  }
  return "?";
}

ScheduleOptions SchedulerConfig::schedule_options() const {
  ScheduleOptions o;
  o.num_train_timesteps = num_train_timesteps;
  o.beta_start = beta_start;
  o.beta_end = beta_end;
  o.beta_schedule = beta_schedule;
  o.rescale_betas_zero_snr = rescale_betas_zero_snr;
  o.prediction_type = prediction_type;
  return o;
}

TimestepSpacing SchedulerConfig::spacing() const {
  if (timestep_spacing) return *timestep_spacing;
  return kind == SamplerKind::dpmpp_2m ? TimestepSpacing::linspace : TimestepSpacing::leading;
}

namespace {

// num_train_timesteps and steps_offset (docs/formats.md "Limits"): the schedule holds one entry
// per training timestep; the same limit as config.json's num_train_timesteps.
constexpr int64_t kMaxTrainTimesteps = UNet2DConfigLimits::max_train_timesteps;

// Quotes bare NaN / Infinity / -Infinity (Python's json extensions) outside strings.
std::string quote_non_finite(const std::string& text) {
  std::string out;
  out.reserve(text.size() + 16);
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char ch = text[i];
    if (in_string) {
      out += ch;
      if (ch == '\\' && i + 1 < text.size()) out += text[++i];
      else if (ch == '"') in_string = false;
      continue;
    }
    if (ch == '"') in_string = true;
    bool matched = false;
    for (const char* token : {"-Infinity", "Infinity", "NaN"}) {
      std::string t(token);
      if (text.compare(i, t.size(), t) == 0) {
        out += '"' + t + '"';
        i += t.size() - 1;
        matched = true;
        break;
      }
    }
    if (!matched) out += ch;
  }
  return out;
}

struct Reader {
  const std::string& source;
  SchedulerConfig& c;

  [[noreturn]] void reject(const std::string& key, const json& v, const std::string& expected) const {
    throw Error(source + ": key \"" + key + "\" = " + json_excerpt(v) + " is not supported (" + expected + ")",
                ErrorKind::bad_input);
  }
  bool boolean(const std::string& key, const json& v) const {
    if (!v.is_boolean()) reject(key, v, "expected true or false");
    return v.get<bool>();
  }
  double number(const std::string& key, const json& v) const {
    // 1e999 is a number to the parser and infinity once read.
    if (!v.is_number() || !std::isfinite(v.get<double>())) reject(key, v, "expected a finite number");
    return v.get<double>();
  }
  int64_t integer(const std::string& key, const json& v, int64_t min, int64_t max) const {
    return json_integer(v, min, max, source + ": key \"" + key + "\"");
  }
  std::string string(const std::string& key, const json& v) const {
    if (!v.is_string()) reject(key, v, "expected a string");
    return v.get<std::string>();
  }
  // The value must be exactly `only` (the one behaviour implemented).
  void only(const std::string& key, const json& v, const json& only, const std::string& why) const {
    if (v != only) reject(key, v, "only " + only.dump() + why);
  }
  // Any number: the key only matters for a feature whose switch we already require off.
  void any_number(const std::string& key, const json& v) const { (void)number(key, v); }
};

using Handler = std::function<void(const Reader&, const std::string&, const json&)>;

const std::map<std::string, Handler>& handlers() {
  static const std::map<std::string, Handler> table = {
      {"num_train_timesteps", [](const Reader& r, const std::string& k, const json& v) {
         r.c.num_train_timesteps = r.integer(k, v, 1, kMaxTrainTimesteps);
       }},
      {"beta_start", [](const Reader& r, const std::string& k, const json& v) { r.c.beta_start = r.number(k, v); }},
      {"beta_end", [](const Reader& r, const std::string& k, const json& v) { r.c.beta_end = r.number(k, v); }},
      {"beta_schedule", [](const Reader& r, const std::string& k, const json& v) {
         std::string s = r.string(k, v);
         if (s != "linear" && s != "scaled_linear" && s != "squaredcos_cap_v2")
           r.reject(k, v, "linear, scaled_linear or squaredcos_cap_v2");
         r.c.beta_schedule = parse_beta_schedule(s, r.source);
       }},
      {"trained_betas", [](const Reader& r, const std::string& k, const json& v) {
         r.only(k, v, nullptr, ": explicit beta arrays are not supported");
       }},
      {"rescale_betas_zero_snr", [](const Reader& r, const std::string& k, const json& v) {
         r.c.rescale_betas_zero_snr = r.boolean(k, v);
       }},
      {"prediction_type", [](const Reader& r, const std::string& k, const json& v) {
         std::string s = r.string(k, v);
         if (s != "epsilon" && s != "v_prediction" && s != "sample") r.reject(k, v, "epsilon, v_prediction or sample");
         r.c.prediction_type = parse_prediction_type(s, r.source);
       }},
      {"timestep_spacing", [](const Reader& r, const std::string& k, const json& v) {
         std::string s = r.string(k, v);
         for (auto sp : {TimestepSpacing::leading, TimestepSpacing::trailing, TimestepSpacing::linspace})
           if (s == timestep_spacing_name(sp)) return void(r.c.timestep_spacing = sp);
         r.reject(k, v, "leading, trailing or linspace");
       }},
      {"steps_offset", [](const Reader& r, const std::string& k, const json& v) {
         r.c.steps_offset = r.integer(k, v, 0, kMaxTrainTimesteps);
       }},
      {"clip_sample", [](const Reader& r, const std::string& k, const json& v) { r.c.clip_sample = r.boolean(k, v); }},
      {"clip_sample_range", [](const Reader& r, const std::string& k, const json& v) {
         double x = r.number(k, v);
         if (!(x > 0)) r.reject(k, v, "expected a number > 0");
         r.c.clip_sample_range = x;
       }},
      {"variance_type", [](const Reader& r, const std::string& k, const json& v) {
         if (v.is_null()) return;  // DPMSolverMultistepScheduler's default; DDPM treats it as fixed_small
         std::string s = r.string(k, v);
         // fixed_small_log scales the noise by exp(½·log var): the same numbers as fixed_small.
         if (s == "fixed_small" || s == "fixed_small_log") r.c.variance_type = VarianceType::fixed_small;
         else if (s == "fixed_large") r.c.variance_type = VarianceType::fixed_large;
         else r.reject(k, v, "fixed_small, fixed_small_log or fixed_large; learned variances are not supported");
       }},
      {"set_alpha_to_one", [](const Reader& r, const std::string& k, const json& v) {
         r.c.set_alpha_to_one = r.boolean(k, v);
       }},
      {"thresholding", [](const Reader& r, const std::string& k, const json& v) {
         r.only(k, v, false, ": dynamic thresholding is not supported");
       }},
      {"dynamic_thresholding_ratio", [](const Reader& r, const std::string& k, const json& v) { r.any_number(k, v); }},
      {"sample_max_value", [](const Reader& r, const std::string& k, const json& v) { r.any_number(k, v); }},
      {"solver_order", [](const Reader& r, const std::string& k, const json& v) {
         if (!v.is_number() || (v != 1 && v != 2)) r.reject(k, v, "1 or 2; third order is not supported");
         r.c.solver_order = static_cast<int>(r.integer(k, v, 1, 2));
       }},
      {"algorithm_type", [](const Reader& r, const std::string& k, const json& v) {
         // diffusers itself runs "deis" configs as dpmsolver++.
         std::string s = r.string(k, v);
         if (s != "dpmsolver++" && s != "deis") r.reject(k, v, "only \"dpmsolver++\"");
       }},
      {"solver_type", [](const Reader& r, const std::string& k, const json& v) {
         // diffusers maps UniPC's names (logrho, bh1, bh2) to midpoint.
         std::string s = r.string(k, v);
         if (s == "heun") {
           r.c.solver_type = DpmSolverType::heun;
         } else if (s == "midpoint" || s == "logrho" || s == "bh1" || s == "bh2") {
           r.c.solver_type = DpmSolverType::midpoint;
         } else {
           r.reject(k, v, "midpoint or heun");
         }
       }},
      {"lower_order_final", [](const Reader& r, const std::string& k, const json& v) {
         r.c.lower_order_final = r.boolean(k, v);
       }},
      {"euler_at_final", [](const Reader& r, const std::string& k, const json& v) {
         r.c.euler_at_final = r.boolean(k, v);
       }},
      {"use_karras_sigmas", [](const Reader& r, const std::string& k, const json& v) {
         if (!v.is_null()) r.c.use_karras_sigmas = r.boolean(k, v);
       }},
      {"use_exponential_sigmas", [](const Reader& r, const std::string& k, const json& v) {
         if (!v.is_null()) r.only(k, v, false, ": exponential sigmas are not supported");
       }},
      {"use_beta_sigmas", [](const Reader& r, const std::string& k, const json& v) {
         if (!v.is_null()) r.only(k, v, false, ": beta sigmas are not supported");
       }},
      {"use_lu_lambdas", [](const Reader& r, const std::string& k, const json& v) {
         if (!v.is_null()) r.only(k, v, false, ": Lu lambdas are not supported");
       }},
      {"use_flow_sigmas", [](const Reader& r, const std::string& k, const json& v) {
         if (!v.is_null()) r.only(k, v, false, ": flow-matching sigmas are not supported");
       }},
      {"flow_shift", [](const Reader& r, const std::string& k, const json& v) {
         if (!v.is_null()) r.any_number(k, v);
       }},
      {"final_sigmas_type", [](const Reader& r, const std::string& k, const json& v) {
         std::string s = r.string(k, v);
         if (s == "zero") r.c.final_sigmas_type = FinalSigmas::zero;
         else if (s == "sigma_min") r.c.final_sigmas_type = FinalSigmas::sigma_min;
         else r.reject(k, v, "zero or sigma_min");
       }},
      {"lambda_min_clipped", [](const Reader& r, const std::string& k, const json& v) {
         r.only(k, v, "-Infinity", ": clipping lambda is not supported");
       }},
      {"tensor_format", [](const Reader& r, const std::string& k, const json& v) {
         (void)r.string(k, v);  // early diffusers' array-library switch ("pt", "np"): no effect here
       }},
  };
  return table;
}


}  // namespace

SchedulerConfig scheduler_config_from_json(const std::string& text, const std::string& source) {
  if (text.size() > kMaxJsonInputBytes)  // before quote_non_finite copies it
    throw Error(source + ": " + std::to_string(text.size()) + " bytes of JSON is over the limit of " +
                    std::to_string(kMaxJsonInputBytes) + " bytes",
                ErrorKind::bad_input);
  json j = parse_json_input(quote_non_finite(text), source);
  if (!j.is_object()) throw Error(source + ": expected a JSON object at the top level", ErrorKind::bad_input);
  SchedulerConfig c;
  Reader r{source, c};
  if (j.contains("_class_name")) {
    const json& v = j["_class_name"];
    bool found = false;
    for (auto k : {SamplerKind::ddpm, SamplerKind::ddim, SamplerKind::dpmpp_2m})
      if (v.is_string() && v.get<std::string>() == scheduler_class_name(k)) c.kind = k, found = true;
    if (!found) r.reject("_class_name", v, "DDPMScheduler, DDIMScheduler or DPMSolverMultistepScheduler");
  }
  for (const auto& [key, value] : j.items()) {
    if (!key.empty() && key[0] == '_') continue;
    auto h = handlers().find(key);
    if (h == handlers().end())
      throw Error(source + ": unknown key \"" + text_excerpt(key) + "\" = " + json_excerpt(value), ErrorKind::bad_input);
    h->second(r, key, value);
  }
  return c;
}

SchedulerConfig sampling_scheduler_config(const std::string& override_path, const std::string& model_json,
                                          const std::string& model_source) {
  if (!override_path.empty()) {
    try {
      return read_scheduler_config(override_path);
    } catch (const Error& e) {
      throw Error(e.what(), ErrorKind::bad_input);
    }
  }
  if (!model_json.empty()) return scheduler_config_from_json(model_json, model_source);
  return SchedulerConfig{};  // diffusers' DDPMScheduler defaults
}

SchedulerConfig read_scheduler_config(const std::string& path) {
  return scheduler_config_from_json(read_json_input_file(path, "scheduler config"), path);
}

std::string scheduler_config_to_json(const SchedulerConfig& c) {
  json j;
  j["_class_name"] = scheduler_class_name(c.kind);
  j["_diffusers_version"] = "0.34.0";  // the diffusers release whose format this mirrors
  j["num_train_timesteps"] = c.num_train_timesteps;
  j["beta_start"] = c.beta_start;
  j["beta_end"] = c.beta_end;
  j["beta_schedule"] = beta_schedule_name(c.beta_schedule);
  j["trained_betas"] = nullptr;
  j["rescale_betas_zero_snr"] = c.rescale_betas_zero_snr;
  j["prediction_type"] = prediction_type_name(c.prediction_type);
  j["timestep_spacing"] = timestep_spacing_name(c.spacing());
  j["steps_offset"] = c.steps_offset;
  j["thresholding"] = false;
  j["dynamic_thresholding_ratio"] = 0.995;
  j["sample_max_value"] = 1.0;
  if (c.kind == SamplerKind::ddpm || c.kind == SamplerKind::ddim) {
    j["clip_sample"] = c.clip_sample;
    j["clip_sample_range"] = c.clip_sample_range;
  }
  if (c.kind == SamplerKind::ddpm)
    j["variance_type"] = c.variance_type == VarianceType::fixed_small ? "fixed_small" : "fixed_large";
  if (c.kind == SamplerKind::ddim) j["set_alpha_to_one"] = c.set_alpha_to_one;
  if (c.kind == SamplerKind::dpmpp_2m) {
    // lambda_min_clipped (default -inf) is left out: strict JSON cannot spell it, and diffusers
    // fills in its default for a missing key.
    j["algorithm_type"] = "dpmsolver++";
    j["solver_order"] = c.solver_order;
    j["solver_type"] = c.solver_type == DpmSolverType::midpoint ? "midpoint" : "heun";
    j["lower_order_final"] = c.lower_order_final;
    j["euler_at_final"] = c.euler_at_final;
    j["use_karras_sigmas"] = c.use_karras_sigmas;
    j["use_exponential_sigmas"] = false;
    j["use_beta_sigmas"] = false;
    j["use_lu_lambdas"] = false;
    j["use_flow_sigmas"] = false;
    j["flow_shift"] = 1.0;
    j["final_sigmas_type"] = c.final_sigmas_type == FinalSigmas::zero ? "zero" : "sigma_min";
    j["variance_type"] = nullptr;
  }
  return j.dump(2) + "\n";
}

void write_scheduler_config(const std::string& path, const SchedulerConfig& c) {
  write_file_atomic(path, scheduler_config_to_json(c));  // the one way files are written (nn/atomic_file.h)
}

}  // namespace diffuse
