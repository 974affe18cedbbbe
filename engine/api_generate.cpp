// The public API's loading and sampling half (include/diffuse/diffuse.h): Model, Pipeline and
// write_png as thin shells over engine/model_dir.h, engine/scheduler_config.h, engine/sampler.h and
// engine/generate.h. Everything a caller passes is checked here (the option checks of
// engine/options.h, naming the library's fields), so a bad request is one diffuse::Error naming
// the field, before any work starts.
#include <cstring>

#include "diffuse/diffuse.h"
#include "engine/api_internal.h"
#include "engine/generate.h"
#include "engine/image_io.h"
#include "engine/memory_estimate.h"
#include "engine/model_dir.h"
#include "engine/options.h"
#include "engine/sampler.h"
#include "engine/scheduler_config.h"
#include "nn/atomic_file.h"
#include "nn/runtime.h"

namespace diffuse {

struct Model::Impl {
  std::unique_ptr<UNet2D> unet;
  std::string directory;
  std::string scheduler_path;  // "" when the directory has no scheduler config
  std::string scheduler_json;
};

struct Pipeline::Impl {
  explicit Impl(const Model& m) : model(m) {}
  Model model;
  std::shared_ptr<Model::Impl> weights;  // model's own, kept here for the engine calls
  SchedulerConfig scheduler;
  int steps = 0;
  std::vector<int64_t> timesteps;
};

std::string version() { return DIFFUSE_VERSION; }

bool cuda_available() {
  return api::boundary("cuda_available", [] { return built_with_cuda() && cuda_device_count() > 0; });
}

std::vector<std::pair<std::string, std::string>> system_info() {
  return api::boundary("system_info", [] {
    auto info = build_info();
    auto devices = cuda_devices();
    if (devices.empty()) info.emplace_back("cuda devices", "none");
    for (const auto& d : devices)
      info.emplace_back("cuda device " + std::to_string(d.index),
                        d.name + " (sm_" + std::to_string(d.sm_major) + std::to_string(d.sm_minor) + ", " +
                            std::to_string(d.sm_count) + " SMs, " + std::to_string(d.memory_bytes >> 20) + " MiB)");
    return info;
  });
}

// ---- Model ----------------------------------------------------------------------------------

Model Model::load(const std::string& dir, Device device) { return load(dir, device, ""); }

Model Model::load(const std::string& dir, Device device, const std::string& variant) {
  return api::boundary(dir, [&] {
    Device wanted = device;
    options::available_device().check(&wanted, "Model::load device");
    auto impl = std::make_shared<Impl>();
    ModelDirectory located;
    try {
      located = locate_model_dir(dir, variant);
      impl->unet = load_unet(located);
    } catch (const Error& e) {  // the directory or its files are missing, corrupt or mismatched
      // (a variant that is not a name is the caller's mistake: usage)
      throw Error(e.what(), e.kind() == ErrorKind::usage ? ErrorKind::usage : ErrorKind::bad_input);
    } catch (const std::bad_alloc&) {
      throw;  // a runtime failure (api::boundary words it)
    } catch (const std::filesystem::filesystem_error&) {
      throw;  // names its own path (api::boundary words it)
    } catch (const std::exception& e) {
      throw Error(dir + ": " + e.what(), ErrorKind::bad_input);
    }
    impl->unet->set_requires_grad(false);
    impl->unet->set_training(false);
    if (device != Device::cpu) impl->unet->to(device);
    impl->directory = located.root;  // a checkpoint's or run's resolved model directory
    impl->scheduler_path = located.scheduler_config_path;
    if (!impl->scheduler_path.empty()) impl->scheduler_json = read_file(impl->scheduler_path);
    return Model(std::move(impl));
  });
}

int Model::sample_size() const { return impl_->unet->config().sample_size; }
int Model::channels() const { return impl_->unet->config().in_channels; }
int Model::num_classes() const {
  const auto& n = impl_->unet->config().num_class_embeds;
  return n && *n > 1 ? *n - 1 : 0;
}
int64_t Model::num_parameters() const { return impl_->unet->num_parameters(); }
Device Model::device() const { return impl_->unet->device(); }
const std::string& Model::directory() const { return impl_->directory; }
const std::string& Model::scheduler_config_json() const { return impl_->scheduler_json; }

// ---- Pipeline -------------------------------------------------------------------------------

Pipeline::Pipeline(const Model& model, const SamplerOptions& options) {
  impl_ = api::boundary("sampler options", [&] {
    if (!model.impl_) throw Error("Pipeline: the Model was moved from", ErrorKind::usage);
    auto impl = std::make_shared<Impl>(model);
    impl->weights = model.impl_;
    impl->scheduler =
        sampling_scheduler_config(options.scheduler_config, model.impl_->scheduler_json, model.impl_->scheduler_path);
    options::validate(options, options::Naming::field);
    options::check_inference_steps(options, impl->scheduler.num_train_timesteps, options::Naming::field);
    if (!options.sampler.empty()) impl->scheduler.kind = parse_sampler_kind(options.sampler, "SamplerOptions::sampler");
    impl->scheduler.eta = options.eta;
    impl->steps = options.steps;
    impl->timesteps = Sampler(impl->scheduler, options.steps).timesteps();  // validates steps too
    return impl;
  });
}

const Model& Pipeline::model() const { return impl_->model; }
std::string Pipeline::sampler() const { return sampler_kind_name(impl_->scheduler.kind); }
int Pipeline::steps() const { return impl_->steps; }
std::vector<int64_t> Pipeline::timesteps() const { return impl_->timesteps; }
std::string Pipeline::scheduler_config_json() const { return scheduler_config_to_json(impl_->scheduler); }
size_t Pipeline::image_elements() const {
  const Model& m = impl_->model;
  const size_t side = static_cast<size_t>(m.sample_size());
  return side * side * static_cast<size_t>(m.channels());
}

namespace {

// Checks a request against the model and the caller's buffer; returns the elements it needs.
size_t check_request(const GenerateRequest& r, const Model& model, size_t image_elements, const void* out,
                     size_t out_size, const char* unit) {
  options::validate(r, options::Naming::field);
  options::check_class_label(r, model.num_classes(), options::Naming::field);
  const size_t need = static_cast<size_t>(r.count) * image_elements;
  if (out == nullptr) throw Error("generate: the output buffer is null", ErrorKind::usage);
  if (out_size < need)
    throw Error("generate: the output buffer holds " + std::to_string(out_size) + " " + unit + ", " +
                    std::to_string(r.count) + " images need " + std::to_string(need),
                ErrorKind::usage);
  return need;
}

// Runs the sampler; returns [count, H, W, C] f32 on the host, or an undefined tensor if cancelled.
Tensor run_generate(UNet2D& unet, const SchedulerConfig& scheduler, int steps, const GenerateRequest& r,
                    const GenerateProgress& progress) {
  set_cpu_threads(r.threads);
  set_conv_search(r.conv_search);
  // A batch whose activations cannot fit is refused before sampling (engine/memory_estimate.h); the
  // weights are loaded already, so only the activations count. Guidance runs both halves at once.
  MemoryEstimate need;
  const int64_t forward_batch = std::min(r.batch, r.count) * (r.guidance != 1.0 && r.class_label >= 0 ? 2 : 1);
  need.activation_bytes = sampling_memory(unet.config(), forward_batch).activation_bytes;
  require_memory(need, unet.device(), "sampling", "--batch " + std::to_string(r.batch), "the model's config");
  GenerateOptions g{r};
  g.steps = steps;
  g.eta = scheduler.eta;
  bool cancelled = false;
  GenerateCallback callback;
  if (progress)
    callback = [&](int64_t batch, int64_t step, int64_t total) {
      bool go = api::call_user(
          [&] { return progress(static_cast<int>(batch), static_cast<int>(step), static_cast<int>(total)); });
      if (!go) cancelled = true;
      return go;
    };
  Tensor images;
  try {
    images = generate(unet, scheduler, g, callback);
  } catch (const Error&) {
    if (cancelled) return Tensor();  // the engine reports a cancel as an error; the API as false
    throw;
  }
  return images.device() == Device::cpu ? images : images.to(Device::cpu);
}

}  // namespace

bool Pipeline::generate(const GenerateRequest& request, float* out, size_t out_size,
                        const GenerateProgress& progress) const {
  return api::boundary("generate", [&] {
    const size_t need = check_request(request, impl_->model, image_elements(), out, out_size, "floats");
    Tensor images = run_generate(*impl_->weights->unet, impl_->scheduler, impl_->steps, request, progress);
    if (!images.defined()) return false;
    std::memcpy(out, images.data<float>(), need * sizeof(float));
    return true;
  });
}

bool Pipeline::generate(const GenerateRequest& request, uint8_t* out, size_t out_size,
                        const GenerateProgress& progress) const {
  return api::boundary("generate", [&] {
    const size_t need = check_request(request, impl_->model, image_elements(), out, out_size, "bytes");
    Tensor images = run_generate(*impl_->weights->unet, impl_->scheduler, impl_->steps, request, progress);
    if (!images.defined()) return false;
    // All images stacked as one tall [count*H, W, C] image: the same bytes in the same order.
    const int64_t s = impl_->model.sample_size();
    Image8 pixels = to_image8(images.view({request.count * s, s, impl_->model.channels()}));
    std::memcpy(out, pixels.pixels.data(), need);
    return true;
  });
}

// ---- write_png ------------------------------------------------------------------------------

void write_png(const std::string& path, const float* images, int count, int height, int width, int channels,
               int nrow) {
  api::boundary(path, [&] {
    if (images == nullptr) throw Error(path + ": write_png was given a null image buffer", ErrorKind::usage);
    if (count <= 0 || height <= 0 || width <= 0)
      throw Error(path + ": write_png needs count, height and width > 0, got " + std::to_string(count) + ", " +
                  std::to_string(height) + ", " + std::to_string(width), ErrorKind::usage);
    if (channels != 1 && channels != 3 && channels != 4)
      throw Error(path + ": write_png needs 1, 3 or 4 channels, got " + std::to_string(channels), ErrorKind::usage);
    if (nrow < 0) throw Error(path + ": write_png nrow must be >= 0, got " + std::to_string(nrow), ErrorKind::usage);
    Tensor t = Tensor::empty({count, height, width, channels});
    std::memcpy(t.data<float>(), images, static_cast<size_t>(t.numel()) * sizeof(float));
    if (count == 1)
      save_png(path, t);
    else
      save_png_grid(path, t, nrow, 2);
  });
}

}  // namespace diffuse
