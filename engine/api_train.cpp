// The public API's training half (include/diffuse/diffuse.h): diffuse::train(TrainRequest) checks
// the request (engine/options.h, naming the library's fields) and runs the engine's trainer on
// it unchanged: the engine's options and progress are the public structs themselves.
#include "diffuse/diffuse.h"
#include "engine/api_internal.h"
#include "engine/options.h"
#include "engine/trainer.h"

namespace diffuse {

TrainSummary train(const TrainRequest& request, const TrainProgressFn& progress) {
  return api::boundary("train", [&] {
    options::validate(request, options::Naming::field);
    TrainCallback callback;
    if (progress) callback = [&](const TrainUpdate& u) { return api::call_user([&] { return progress(u); }); };
    TrainResult r = train(TrainOptions{request}, callback);
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
