// libFuzzer target: the UNet config.json parser and validator (nn/unet_config.h). A config that
// passes both must also survive the trip through unet_config_to_json and back.
#include <cstdio>
#include <cstdlib>

#include "fuzz/fuzz_support.h"
#include "nn/unet_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace diffuse;
  std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_only_diffuse_errors([&] {
    UNet2DConfig config = parse_unet_config(text, "config.json");
    validate_unet_config(config, "config.json");
    std::string written = unet_config_to_json(config);
    try {
      validate_unet_config(parse_unet_config(written, "written config.json"), "written config.json");
    } catch (const Error& e) {
      std::fprintf(stderr, "a valid config does not read back after unet_config_to_json: %s\n", e.what());
      std::abort();
    }
  });
  return 0;
}
