// libFuzzer target: the scheduler_config.json parser (engine/scheduler_config.h), then the noise
// schedule a sampler builds from it. A config that parses must also survive the trip through
// scheduler_config_to_json and back.
#include <cstdio>
#include <cstdlib>

#include "engine/noise_schedule.h"
#include "engine/scheduler_config.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace diffuse;
  std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_only_diffuse_errors([&] {
    SchedulerConfig config = scheduler_config_from_json(text, "scheduler_config.json");
    std::string written = scheduler_config_to_json(config);
    try {
      (void)scheduler_config_from_json(written, "written scheduler_config.json");
    } catch (const Error& e) {
      std::fprintf(stderr, "a config that parsed does not read back after scheduler_config_to_json: %s\n", e.what());
      std::abort();
    }
    NoiseSchedule schedule(config.schedule_options());
    if (schedule.num_train_timesteps() > 0) (void)schedule.alpha_bar(schedule.num_train_timesteps() - 1);
  });
  return 0;
}
