// scheduler_config.json: files written by diffusers 0.34.0 (its to_json_string(), quoted below)
// load with every field; what we write loads back; anything asking for unsupported behaviour is
// one error naming the file, the key and the value.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "engine/sampler.h"
#include "engine/scheduler_config.h"

using namespace diffuse;

namespace {

// DDPMScheduler().to_json_string()
const char* kDdpmDefault = R"({
  "_class_name": "DDPMScheduler",
  "_diffusers_version": "0.34.0",
  "beta_end": 0.02,
  "beta_schedule": "linear",
  "beta_start": 0.0001,
  "clip_sample": true,
  "clip_sample_range": 1.0,
  "dynamic_thresholding_ratio": 0.995,
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "rescale_betas_zero_snr": false,
  "sample_max_value": 1.0,
  "steps_offset": 0,
  "thresholding": false,
  "timestep_spacing": "leading",
  "trained_betas": null,
  "variance_type": "fixed_small"
})";

// DDIMScheduler(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012, clip_sample=False,
//               set_alpha_to_one=False, steps_offset=1, prediction_type='v_prediction',
//               timestep_spacing='trailing', rescale_betas_zero_snr=True).to_json_string()
const char* kDdimCustom = R"({
  "_class_name": "DDIMScheduler",
  "_diffusers_version": "0.34.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "clip_sample_range": 1.0,
  "dynamic_thresholding_ratio": 0.995,
  "num_train_timesteps": 1000,
  "prediction_type": "v_prediction",
  "rescale_betas_zero_snr": true,
  "sample_max_value": 1.0,
  "set_alpha_to_one": false,
  "steps_offset": 1,
  "thresholding": false,
  "timestep_spacing": "trailing",
  "trained_betas": null
})";

// DPMSolverMultistepScheduler(use_karras_sigmas=True, solver_type='heun', lower_order_final=False,
//     final_sigmas_type='sigma_min', prediction_type='sample', euler_at_final=True,
//     solver_order=1).to_json_string()  — note Python's bare -Infinity.
const char* kDpmCustom = R"({
  "_class_name": "DPMSolverMultistepScheduler",
  "_diffusers_version": "0.34.0",
  "algorithm_type": "dpmsolver++",
  "beta_end": 0.02,
  "beta_schedule": "linear",
  "beta_start": 0.0001,
  "dynamic_thresholding_ratio": 0.995,
  "euler_at_final": true,
  "final_sigmas_type": "sigma_min",
  "flow_shift": 1.0,
  "lambda_min_clipped": -Infinity,
  "lower_order_final": false,
  "num_train_timesteps": 1000,
  "prediction_type": "sample",
  "rescale_betas_zero_snr": false,
  "sample_max_value": 1.0,
  "solver_order": 1,
  "solver_type": "heun",
  "steps_offset": 0,
  "thresholding": false,
  "timestep_spacing": "linspace",
  "trained_betas": null,
  "use_beta_sigmas": false,
  "use_exponential_sigmas": false,
  "use_flow_sigmas": false,
  "use_karras_sigmas": true,
  "use_lu_lambdas": false,
  "variance_type": null
})";

// kDdpmDefault with one key replaced (or added).
std::string ddpm_with(const std::string& key, const std::string& value) {
  std::string text = kDdpmDefault;
  std::string needle = "\"" + key + "\": ";
  size_t at = text.find(needle);
  if (at == std::string::npos) return text.substr(0, text.size() - 2) + ",\n  " + needle + value + "\n}";
  size_t end = text.find_first_of(",\n", at + needle.size());
  return text.replace(at + needle.size(), end - at - needle.size(), value);
}

bool same(const SchedulerConfig& a, const SchedulerConfig& b) {
  return a.kind == b.kind && a.num_train_timesteps == b.num_train_timesteps && a.beta_start == b.beta_start &&
         a.beta_end == b.beta_end && a.beta_schedule == b.beta_schedule &&
         a.rescale_betas_zero_snr == b.rescale_betas_zero_snr && a.prediction_type == b.prediction_type &&
         a.spacing() == b.spacing() && a.steps_offset == b.steps_offset &&
         (a.kind == SamplerKind::dpmpp_2m || (a.clip_sample == b.clip_sample && a.clip_sample_range == b.clip_sample_range)) &&
         (a.kind != SamplerKind::ddpm || a.variance_type == b.variance_type) &&
         (a.kind != SamplerKind::ddim || a.set_alpha_to_one == b.set_alpha_to_one) &&
         (a.kind != SamplerKind::dpmpp_2m ||
          (a.solver_order == b.solver_order && a.solver_type == b.solver_type &&
           a.lower_order_final == b.lower_order_final && a.euler_at_final == b.euler_at_final &&
           a.use_karras_sigmas == b.use_karras_sigmas && a.final_sigmas_type == b.final_sigmas_type));
}

}  // namespace

TEST_CASE("diffusers' scheduler_config.json files load with every field", "[scheduler_config]") {
  SchedulerConfig ddpm = scheduler_config_from_json(kDdpmDefault, "ddpm.json");
  CHECK(ddpm.kind == SamplerKind::ddpm);
  CHECK(ddpm.num_train_timesteps == 1000);
  CHECK(ddpm.beta_start == 0.0001);
  CHECK(ddpm.beta_end == 0.02);
  CHECK(ddpm.beta_schedule == BetaSchedule::linear);
  CHECK(ddpm.clip_sample);
  CHECK(ddpm.variance_type == VarianceType::fixed_small);
  CHECK(ddpm.spacing() == TimestepSpacing::leading);

  SchedulerConfig ddim = scheduler_config_from_json(kDdimCustom, "ddim.json");
  CHECK(ddim.kind == SamplerKind::ddim);
  CHECK(ddim.beta_schedule == BetaSchedule::scaled_linear);
  CHECK(ddim.beta_start == 0.00085);
  CHECK(!ddim.clip_sample);
  CHECK(!ddim.set_alpha_to_one);
  CHECK(ddim.steps_offset == 1);
  CHECK(ddim.prediction_type == PredictionType::v_prediction);
  CHECK(ddim.spacing() == TimestepSpacing::trailing);
  CHECK(ddim.rescale_betas_zero_snr);

  SchedulerConfig dpm = scheduler_config_from_json(kDpmCustom, "dpm.json");
  CHECK(dpm.kind == SamplerKind::dpmpp_2m);
  CHECK(dpm.use_karras_sigmas);
  CHECK(dpm.solver_type == DpmSolverType::heun);
  CHECK(!dpm.lower_order_final);
  CHECK(dpm.euler_at_final);
  CHECK(dpm.solver_order == 1);
  CHECK(dpm.final_sigmas_type == FinalSigmas::sigma_min);
  CHECK(dpm.prediction_type == PredictionType::sample);
  CHECK(dpm.spacing() == TimestepSpacing::linspace);

  // A minimal hand-written file: missing keys take diffusers' defaults, spacing the class's.
  SchedulerConfig minimal = scheduler_config_from_json(R"({"_class_name": "DPMSolverMultistepScheduler"})", "m.json");
  CHECK(minimal.kind == SamplerKind::dpmpp_2m);
  CHECK(minimal.spacing() == TimestepSpacing::linspace);
  minimal.kind = SamplerKind::ddim;  // what `--sampler ddim` does
  CHECK(minimal.spacing() == TimestepSpacing::leading);
  // Keys whose value is the behaviour we implement are accepted; so are early diffusers' extras.
  CHECK_NOTHROW(scheduler_config_from_json(ddpm_with("variance_type", "\"fixed_small_log\""), "x.json"));
  CHECK_NOTHROW(scheduler_config_from_json(ddpm_with("tensor_format", "\"pt\""), "x.json"));
  CHECK(scheduler_config_from_json(ddpm_with("algorithm_type", "\"deis\""), "x.json").kind == SamplerKind::ddpm);
}

TEST_CASE("scheduler configs we write read back the same and name the diffusers class", "[scheduler_config]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("diffuse_sched_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (const char* text : {kDdpmDefault, kDdimCustom, kDpmCustom}) {
    SchedulerConfig c = scheduler_config_from_json(text, "in.json");
    std::string out = scheduler_config_to_json(c);
    CHECK(out.find(std::string("\"_class_name\": \"") + scheduler_class_name(c.kind) + "\"") != std::string::npos);
    CHECK(out.find("Infinity") == std::string::npos);  // strict JSON only
    const fs::path path = dir / "scheduler_config.json";
    write_scheduler_config(path.string(), c);
    CHECK(!fs::exists(path.string() + ".tmp"));
    CHECK(same(read_scheduler_config(path.string()), c));
  }
  // Keys of the three classes come out as diffusers writes them (sorted, two-space indent).
  std::string ddpm_out = scheduler_config_to_json(scheduler_config_from_json(kDdpmDefault, "in.json"));
  CHECK(ddpm_out.find("  \"beta_end\": 0.02,\n  \"beta_schedule\": \"linear\",\n  \"beta_start\": 0.0001,") !=
        std::string::npos);
  CHECK(ddpm_out.find("\"variance_type\": \"fixed_small\"") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("unsupported scheduler keys and values are one error naming file, key and value", "[scheduler_config]") {
  auto err = [](const std::string& text) {
    try {
      scheduler_config_from_json(text, "model/scheduler/scheduler_config.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  using Catch::Contains;
  const std::string file = "model/scheduler/scheduler_config.json: ";
  CHECK_THAT(err(ddpm_with("thresholding", "true")),
             Contains(file + "key \"thresholding\" = true is not supported (only false: dynamic thresholding"));
  CHECK_THAT(err(ddpm_with("_class_name", "\"PNDMScheduler\"")),
             Contains(file + "key \"_class_name\" = \"PNDMScheduler\" is not supported (DDPMScheduler, DDIMScheduler or"));
  CHECK_THAT(err(ddpm_with("algorithm_type", "\"sde-dpmsolver++\"")),
             Contains("key \"algorithm_type\" = \"sde-dpmsolver++\" is not supported (only \"dpmsolver++\")"));
  CHECK_THAT(err(ddpm_with("variance_type", "\"learned_range\"")), Contains("\"variance_type\" = \"learned_range\""));
  CHECK_THAT(err(ddpm_with("trained_betas", "[0.1, 0.2]")), Contains("\"trained_betas\" = [0.1, 0.2] is not supported"));
  CHECK_THAT(err(ddpm_with("beta_schedule", "\"sigmoid\"")), Contains("\"beta_schedule\" = \"sigmoid\""));
  CHECK_THAT(err(ddpm_with("prediction_type", "\"flow_prediction\"")), Contains("\"prediction_type\" = \"flow_prediction\""));
  CHECK_THAT(err(ddpm_with("timestep_spacing", "\"uniform\"")), Contains("\"timestep_spacing\" = \"uniform\""));
  CHECK_THAT(err(ddpm_with("solver_order", "3")), Contains("\"solver_order\" = 3 is not supported (1 or 2"));
  CHECK_THAT(err(ddpm_with("use_lu_lambdas", "true")), Contains("\"use_lu_lambdas\" = true"));
  CHECK_THAT(err(ddpm_with("lambda_min_clipped", "-5.1")), Contains("\"lambda_min_clipped\" = -5.1"));
  CHECK_THAT(err(ddpm_with("num_train_timesteps", "\"1000\"")),
             Contains("\"num_train_timesteps\" = \"1000\" is not an integer in [1, 1000000]"));
  CHECK_THAT(err(ddpm_with("steps_offset", "-1")), Contains("\"steps_offset\" = -1"));
  CHECK_THAT(err(ddpm_with("clip_sample_range", "0")), Contains("\"clip_sample_range\" = 0"));
  CHECK_THAT(err(ddpm_with("clip_sample", "NaN")),
             Contains("\"clip_sample\" = \"NaN\" is not supported (expected true or false)"));
  CHECK_THAT(err(ddpm_with("skip_prk_steps", "true")), Contains(file + "unknown key \"skip_prk_steps\" = true"));
  CHECK_THAT(err("{\"beta_start\": 0.0001,"), Contains(file + "not valid JSON"));
  CHECK_THAT(err("[1, 2]"), Contains(file + "expected a JSON object"));
  CHECK_THROWS_WITH(read_scheduler_config("/nonexistent/scheduler_config.json"),
                    Contains("/nonexistent/scheduler_config.json: cannot open scheduler config"));
  // A config that parses but cannot sample is refused when the sampler is made.
  SchedulerConfig bad = scheduler_config_from_json(ddpm_with("beta_end", "1.5"), "x.json");
  CHECK_THROWS_WITH(Sampler(bad, 10), Contains("beta_end < 1"));
}
