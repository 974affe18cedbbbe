// The public API's training half (include/diffuse/diffuse.h): diffuse::train(TrainRequest) maps the
// request onto the engine's TrainOptions and the engine's progress onto TrainUpdate. The engine's
// own defaults stay the source of truth; tests check the public defaults agree with them.
#include "diffuse/diffuse.h"
#include "engine/api_internal.h"
#include "engine/trainer.h"

namespace diffuse {

namespace api {

TrainOptions to_train_options(const TrainRequest& r) {
  TrainOptions o;
  o.data = r.data;
  o.out = r.out;
  o.config = r.config;
  o.steps = r.steps;
  o.batch = r.batch;
  o.lr = r.lr;
  o.warmup = r.warmup;
  o.lr_schedule = r.lr_schedule;
  o.weight_decay = r.weight_decay;
  o.grad_clip = r.grad_clip;
  o.ema_decay = r.ema_decay;
  o.prediction = r.prediction;
  o.beta_schedule = r.beta_schedule;
  o.num_train_timesteps = r.num_train_timesteps;
  o.snr_gamma = r.snr_gamma;
  o.classes = r.classes;
  o.p_uncond = r.p_uncond;
  o.random_flip = r.random_flip;
  o.sample_every = r.sample_every;
  o.sample_count = r.sample_count;
  o.checkpoint_every = r.checkpoint_every;
  o.max_images = r.max_images;
  o.resume = r.resume;
  o.device = r.device;
  o.precision = r.precision;
  o.seed = r.seed;
  return o;
}

}  // namespace api

TrainSummary train(const TrainRequest& request, const TrainProgressFn& progress) {
  return api::boundary("train", [&] {
    if (request.out.empty()) throw Error("TrainRequest::out (the run directory) is required");
    TrainCallback callback;
    if (progress)
      callback = [&](const TrainProgress& p) {
        TrainUpdate u;
        u.step = p.step;
        u.total = p.total;
        u.loss = p.loss;
        u.lr = p.lr;
        u.grad_norm = p.grad_norm;
        u.images_per_second = p.images_per_second;
        u.seconds = p.seconds;
        u.event = p.event;
        return api::call_user([&] { return progress(u); });
      };
    TrainResult r = train(api::to_train_options(request), callback);
    TrainSummary s;
    s.first_step = r.first_step;
    s.last_step = r.last_step;
    s.final_loss = r.final_loss;
    s.checkpoint = r.last_checkpoint;
    if (!r.last_checkpoint.empty()) s.model_dir = r.last_checkpoint + "/ema";
    s.cancelled = r.cancelled;
    return s;
  });
}

}  // namespace diffuse
