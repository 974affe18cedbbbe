// diffuse/diffuse.h — the public C++ API for embedding diffuse: load a model directory, sample
// images into your own buffer, train from a dataset. This header (with diffuse/error.h and
// diffuse/device.h) is the whole stable surface; it includes only the standard library. Every
// failure is thrown as diffuse::Error with a one-line message (an exception your callback throws
// passes through unchanged). Calls are not thread-safe: run one generate/train at a time.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "diffuse/device.h"
#include "diffuse/error.h"

namespace diffuse {

// The library's version, e.g. "0.1.0".
std::string version();
// True when this build has the CUDA backend and a CUDA device is usable right now.
bool cuda_available();
// What `diffuse info` prints, as (key, value) pairs in order: the version, build options, the
// CUDA runtime/driver, cuBLAS/cuDNN/OpenBLAS versions, threads, then each CUDA device found
// ("cuda device N") or "cuda devices": "none".
std::vector<std::pair<std::string, std::string>> system_info();

// A UNet2DModel with its weights, loaded from a model directory. A cheap shared handle: copies
// refer to the same weights.
class Model {
 public:
  // `dir` is diffusers' pipeline layout (model_index.json, unet/config.json,
  // unet/diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json) or a bare UNet
  // directory (config.json + diffusion_pytorch_model.safetensors), such as a training
  // checkpoint's ema/ directory. A checkpoint (checkpoints/step-N) loads its ema/, a training run
  // directory its latest checkpoint's ema/ (model/ where a copy lacks ema/); directory() says which.
  static Model load(const std::string& dir, Device device = Device::cpu);
  // The same with a weights variant, as diffusers' `variant=`: "fp16" loads
  // diffusion_pytorch_model.fp16.safetensors (or the sharded index ...safetensors.index.fp16.json);
  // "" is the plain weights. docs/formats.md, "Sharded weights and variants".
  static Model load(const std::string& dir, Device device, const std::string& variant);

  int sample_size() const;  // images are sample_size x sample_size pixels
  int channels() const;     // 1 (gray) or 3 (RGB)
  // 0 for an unconditional model. A class-conditional one accepts labels 0..num_classes()-1;
  // its last class embedding (index num_classes()) is the null class used without a label.
  int num_classes() const;
  int64_t num_parameters() const;
  Device device() const;
  const std::string& directory() const;  // the model directory loaded (a checkpoint's or run's, resolved)
  // The directory's scheduler_config.json text, "" when it has none.
  const std::string& scheduler_config_json() const;

  struct Impl;  // defined in the library

 private:
  friend class Pipeline;
  explicit Model(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

// Which sampler runs and how (the defaults are `diffuse sample`'s). The noise schedule and
// prediction type always come from a scheduler config: the file named here, else the model's
// own, else diffusers' DDPMScheduler defaults.
struct SamplerOptions {
  // The defaults are the demo's (docs/performance.md, "the demo's recipe"): on a briefly trained
  // model DDPM with 100 steps gives clearly better images than DDIM with 50.
  std::string sampler = "ddpm";  // "ddpm", "ddim", "dpmpp-2m"; "" keeps the scheduler config's own
  int steps = 100;               // inference steps
  double eta = 0.0;              // DDIM's eta in [0, 1]: 0 is deterministic DDIM
  std::string scheduler_config;  // a scheduler_config.json path to use instead of the model's
};

// What to generate (the defaults are `diffuse sample`'s).
struct GenerateRequest {
  int64_t count = 16;         // images to generate
  int64_t class_label = -1;   // a class of a class-conditional model, or -1 for unconditional
  double guidance = 1.0;      // classifier-free guidance weight w (with a class_label); 1 = none
  uint64_t seed = 0;          // the same seed and batch give the same images, on every device
  int64_t batch = 16;         // images per forward pass (each batch draws its own noise from the seed)
  int threads = 0;            // CPU threads; 0 = the cores this process may use (OMP_NUM_THREADS if set)
  // The starting noise x_T instead of drawing it from the seed: count * image_elements() floats,
  // NHWC like generate()'s output (image i's pixel (y, x) channel c at ((i * H + y) * W + x) * C + c).
  // Empty: drawn from the seed. Noise added by the steps themselves (DDPM, DDIM with eta > 0)
  // still comes from the seed.
  std::vector<float> initial_noise;
  // generate(float*) clamps x_0 to [-1, 1]; false writes the sampler's x_0 exactly as its last step
  // leaves it (what diffusers' scheduler loop returns before a pipeline's postprocessing), for
  // comparing numbers. The 8-bit generate() always clamps.
  bool clamp = true;
  // On CUDA: after two eager steps, each sampler step (UNet, guidance, update) is replayed as one
  // CUDA graph, bit-identical to eager steps; a capture that fails says why once on stderr
  // ("diffuse: ...") and the steps run eagerly. Ignored on the CPU.
  bool cuda_graphs = true;
  // fp32, or bf16 with a model on CUDA: the UNet's activations in bf16 with f32 math and
  // accumulation (the sampler's update and its state stay f32). Refused for a CPU model.
  std::string precision = "fp32";
  // On CUDA, how cuDNN chooses each convolution's algorithms, for the whole process: "timed"
  // measures them the first time a shape runs and keeps the fastest, a choice that may differ
  // between processes and with it the last bits of the images; "heuristic" takes cuDNN's own
  // ranking, the same in every process on one card and cuDNN version, so the same request gives
  // the same bits every time (perhaps more slowly). Ignored on the CPU.
  std::string conv_search = "timed";
};

// After each sampler step of each batch: (batch index from 0, step 1..steps counted afresh in each
// batch, steps per batch). Return false to stop.
using GenerateProgress = std::function<bool(int batch, int step, int steps)>;

// A model plus a ready sampler: build it once, generate as often as you like.
class Pipeline {
 public:
  explicit Pipeline(const Model& model, const SamplerOptions& options = {});

  const Model& model() const;
  std::string sampler() const;               // the sampler that runs: "ddpm", "ddim" or "dpmpp-2m"
  int steps() const;
  std::vector<int64_t> timesteps() const;    // the model timesteps visited, first to last
  std::string scheduler_config_json() const;  // the scheduler in use, as diffusers' JSON
  size_t image_elements() const;             // sample_size * sample_size * channels

  // Writes request.count images into `out` as NHWC floats in [-1, 1]: pixel (y, x) channel c of
  // image i is out[((i * H + y) * W + x) * C + c]. `out_size` is the buffer's length in floats and
  // must be at least count * image_elements(). Returns false if `progress` stopped it early (the
  // buffer then holds no finished images).
  bool generate(const GenerateRequest& request, float* out, size_t out_size,
                const GenerateProgress& progress = {}) const;
  // The same images as 8-bit pixels, round((x + 1) / 2 * 255), same layout; out_size in bytes.
  bool generate(const GenerateRequest& request, uint8_t* out, size_t out_size,
                const GenerateProgress& progress = {}) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Writes `count` NHWC float images in [-1, 1] (as generate() writes them) to one PNG: the image
// itself when count is 1, else a grid with `nrow` images per row (0: near-square) and 2 black
// pixels between them. Replaces `path` only once the new file is complete.
void write_png(const std::string& path, const float* images, int count, int height, int width, int channels,
               int nrow = 0);

// A training run (docs/design.md §8; its files §9). Defaults are those of `diffuse train`: its flags, their
// defaults and the run's saved config.json are all derived from these fields.
struct TrainRequest {
  std::string data = "fashion-mnist";  // a folder of images, an IDX file, or "fashion-mnist"
  std::string out;                     // the run directory (required)
  std::string config = "tiny";         // "tiny", "fmnist-small", "ddpm-cifar10" or a config.json path
  int64_t steps = 1000;
  int64_t batch = 32;
  double lr = 1e-4;
  int64_t warmup = 0;                    // linear warmup steps
  std::string lr_schedule = "constant";  // constant or cosine after the warmup
  double weight_decay = 0.0;
  double grad_clip = 1.0;                // max global gradient norm; 0 = off
  double ema_decay = 0.9999;             // the EMA's maximum decay (diffusers' ema_max_decay)
  double ema_inv_gamma = 1.0;            // the EMA warmup: decay = 1 - (1 + (s - 1) / inv_gamma)^-power at update s
  double ema_power = 0.75;
  std::string prediction = "epsilon";    // epsilon, v_prediction or sample
  std::string beta_schedule = "linear";  // linear, scaled_linear or squaredcos_cap_v2
  int64_t num_train_timesteps = 1000;
  double snr_gamma = 0.0;                // min-SNR-gamma loss weighting; 0 = off
  int64_t classes = 0;                   // > 0: class-conditional (the dataset's labels)
  double p_uncond = 0.1;                 // label dropout for classifier-free guidance
  bool random_flip = false;
  int64_t sample_every = 0;              // write samples/step-N.png every N steps; 0 = never
  int64_t sample_count = 16;
  int64_t checkpoint_every = 0;          // checkpoint every N steps; 0 = only at the end
  int64_t max_images = 0;                // use the first N images of the dataset; 0 = all
  // Continue the run in `out` from its latest checkpoint with the run's saved options (its
  // config.json). A field left at its default is taken from the saved run; a field set to another
  // value than the saved one is an Error (ErrorKind::usage) naming it and both values, except
  // steps, sample_every, sample_count, checkpoint_every, device, save_dtype and conv_search: those
  // are this call's, applied as given (a change is reported to the progress callback as an event
  // "resumed with steps = 30 (the run had 20)") and recorded in config.json. Fields that are not
  // saved (threads, cuda_graphs, status_every) are always this call's. (The CLI, which knows which
  // flags were typed, restores those seven too unless their flags are given.) A run directory that
  // already has a checkpoint is continued only with resume (else ErrorKind::usage); resume needs
  // one (ErrorKind::bad_input) and steps past its step (ErrorKind::usage).
  bool resume = false;
  Device device = Device::cpu;
  std::string precision = "fp32";        // fp32, or bf16 on CUDA
  std::string save_dtype = "fp32";       // fp32; fp16/bf16 also write each checkpoint's ema/ as that variant
  uint64_t seed = 0;
  int threads = 0;                       // CPU threads; 0 = the cores this process may use (OMP_NUM_THREADS if set)
  // On CUDA: the training step captured once as a CUDA graph after two eager steps, then replayed
  // (the same bits as eager steps); a refused capture is reported once as an event and the run
  // goes on eagerly. Ignored on the CPU.
  bool cuda_graphs = true;
  // On CUDA, how cuDNN chooses each convolution's algorithms, as GenerateRequest::conv_search:
  // "timed" (the fastest; two processes may differ in the last bits, so a resumed run may drift
  // from an uninterrupted one by rounding) or "heuristic" (cuDNN's ranking: the same run repeats
  // bit for bit, resumed or not, on one card and cuDNN version). Ignored on the CPU.
  std::string conv_search = "timed";
  // On CUDA, the steps' status (loss, lr, grad norm, skipped) is read back once every this many
  // steps (1..64) instead of after every step, so the host queues steps without waiting for the
  // device. The progress callback still gets one update per step, in order, but those of a group
  // arrive together when it is read (at a multiple of status_every, at a checkpoint or sample
  // grid step, at the last step, and in a data-parallel run at every 100th step). A false from the callback stops the run at the end of the group
  // being reported: the steps already queued after it have run, are reported (their return values
  // ignored) and are in metrics.jsonl, and the checkpoint is of the last of them (last_step says
  // which). 1: every step, as on the CPU, which always reads every step. Data-parallel runs read
  // in the same groups on every rank; rank 0's false ends every rank after the same group.
  int64_t status_every = 10;
};

struct TrainUpdate {
  int64_t step = 0;   // the step just finished (or, with status_every > 1, read back), 1-based
  int64_t total = 0;  // TrainRequest::steps
  double loss = 0, lr = 0, grad_norm = 0, images_per_second = 0, seconds = 0;
  // "" after a step ("skipped (bf16): ..." after a skipped one); "checkpoint DIR" or "samples FILE"
  // after writing one; "cuda graphs: WHY; running eagerly" once if a capture is refused; before the
  // first step of a resumed run, "resumed with KEY = VALUE (the run had OLD)" per option the resume changed;
  // before any step, "removed PATH, left by a run that was killed" per stale temporary cleaned up,
  // then "data SOURCE: N images, WxH, C channels[, K classes]" (as loaded: resized, converted to the
  // config's channels; classes when the run is class-conditional).
  std::string event;
};

struct TrainSummary {
  int64_t first_step = 0, last_step = 0;  // the steps this call ran
  double final_loss = 0;
  std::string checkpoint;  // the last checkpoint written, checkpoints/step-N
  std::string model_dir;   // its EMA weights, a model directory for Model::load
  bool cancelled = false;  // the callback returned false
};

// Called after every step and after each checkpoint or sample grid. Returning false after a step
// stops the run; a checkpoint of that step is still written.
using TrainProgressFn = std::function<bool(const TrainUpdate&)>;

// Trains a UNet and writes the run directory: config.json, metrics.jsonl,
// checkpoints/step-N/{model,ema}/ and samples/ (docs/formats.md).
TrainSummary train(const TrainRequest& request, const TrainProgressFn& progress = {});

}  // namespace diffuse
