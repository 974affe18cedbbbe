// libFuzzer target: loading an arbitrary safetensors file as the weights of a small UNet
// (engine/unet_weights.h) — names, legacy attention names, shapes, dtypes and layouts. The model is
// built once; load_unet_weights changes it only when every check passes.
#include "engine/unet_weights.h"
#include "fuzz/fuzz_support.h"
#include "nn/unet_config.h"

namespace {

// The seed corpus (corpus/unet_weights/) holds this config's weights, so the fuzzer starts from
// files that load. Small on purpose: a few thousand parameters, two levels, one attention block.
diffuse::UNet2D& fuzz_model() {
  static diffuse::UNet2D model(diffuse::parse_unet_config(R"json({
    "sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [4, 8],
    "layers_per_block": 1, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 4,
    "norm_num_groups": 2})json", "the fuzz target's UNet config"));
  return model;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace diffuse;
  UNet2D& model = fuzz_model();
  std::string path = fuzz::write_input("diffusion_pytorch_model.safetensors", data, size);
  fuzz::expect_only_diffuse_errors([&] { load_unet_weights(model, path); });
  return 0;
}
