// The public API's training half (include/diffuse/diffuse.h): diffuse::train(TrainRequest) checks
// the request (engine/options.h, naming the library's fields) and runs the engine's trainer on
// it unchanged: the engine's options and progress are the public structs themselves. A resumed
// run first takes back the run's saved options (engine/options.h resume_train_request).
#include "diffuse/diffuse.h"
#include "engine/api_internal.h"
#include "engine/options.h"
#include "engine/trainer.h"

namespace diffuse {

TrainSummary train(const TrainRequest& request, const TrainProgressFn& progress) {
  return api::boundary("train", [&] {
    TrainOptions run{request, {}};
    if (request.resume) {  // the run's saved options, with the fields this request sets (diffuse.h)
      auto resumed = options::resume_train_request(request, options::saved_train_options(request.out),
                                                   request.out + "/config.json", options::Naming::field,
                                                   options::fields_set_in(request));
      run = TrainOptions{resumed.request, std::move(resumed.changes)};
    }
    options::validate(run, options::Naming::field);
    options::check_run_directory(run, options::Naming::field);
    TrainCallback callback;
    if (progress) callback = [&](const TrainUpdate& u) { return api::call_user([&] { return progress(u); }); };
    TrainResult r = train(run, callback);
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
