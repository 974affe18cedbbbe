// UNet2D construction: the exact parameter counts of the named configs (docs/design.md §7), diffusers'
// parameter names, strict config parsing, and a forward pass's shape and determinism.
#include <catch2/catch.hpp>
#include <map>

#include "nn/autograd.h"
#include "nn/unet2d.h"
#include "nn/unet_config.h"

using namespace diffuse;

TEST_CASE("named configs build exactly the parameter counts diffusers builds", "[unet]") {
  CHECK(UNet2D(resolve_unet_config("tiny")).num_parameters() == 701345);
  CHECK(UNet2D(resolve_unet_config("fmnist-small")).num_parameters() == 6469889);
  CHECK(UNet2D(resolve_unet_config("ddpm-cifar10")).num_parameters() == 35746307);
}

TEST_CASE("parameter names and shapes follow diffusers", "[unet]") {
  UNet2D m(resolve_unet_config("tiny"));
  std::map<std::string, Shape> shapes;
  for (auto& [name, t] : m.named_parameters()) shapes[name] = t->shape();
  CHECK(shapes.at("conv_in.weight") == Shape{32, 3, 3, 1});  // OHWI in memory
  CHECK(shapes.at("time_embedding.linear_1.weight") == Shape{128, 32});
  CHECK(shapes.at("down_blocks.0.downsamplers.0.conv.weight") == Shape{32, 3, 3, 32});
  CHECK(shapes.at("down_blocks.1.resnets.0.conv_shortcut.weight") == Shape{64, 1, 1, 32});
  CHECK(shapes.at("down_blocks.1.attentions.0.to_out.0.weight") == Shape{64, 64});
  CHECK(shapes.at("mid_block.attentions.0.group_norm.weight") == Shape{64});
  CHECK(shapes.at("up_blocks.0.resnets.1.conv1.weight") == Shape{64, 3, 3, 96});
  CHECK(shapes.at("up_blocks.0.upsamplers.0.conv.weight") == Shape{64, 3, 3, 64});
  CHECK(shapes.at("up_blocks.1.resnets.1.conv_shortcut.weight") == Shape{32, 1, 1, 64});
  CHECK(shapes.at("conv_out.weight") == Shape{1, 3, 3, 32});
  CHECK(shapes.count("class_embedding.weight") == 0);
}

TEST_CASE("config parsing rejects what diffuse does not implement, by key and value", "[unet]") {
  auto parse = [](const std::string& extra) {
    return parse_unet_config(R"({"block_out_channels": [32, 64], "norm_num_groups": 8, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], )" + extra + "}", "cfg.json");
  };
  CHECK_NOTHROW(parse(R"("_diffusers_version": "0.30.0", "mid_block_type": "UNetMidBlock2D", "add_attention": true)"));
  CHECK_THROWS_WITH(parse(R"("act_fn": "gelu")"), Catch::Contains("cfg.json") && Catch::Contains("act_fn") && Catch::Contains("gelu"));
  CHECK_THROWS_WITH(parse(R"("resnet_time_scale_shift": "scale_shift")"), Catch::Contains("resnet_time_scale_shift"));
  CHECK_THROWS_WITH(parse(R"("time_embedding_type": "fourier")"), Catch::Contains("fourier"));
  CHECK_THROWS_WITH(parse(R"("frobnicate": 1)"), Catch::Contains("unknown key frobnicate"));
  CHECK_THROWS_WITH(parse_unet_config(R"({"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]})", "cfg.json"), Catch::Contains("CrossAttnDownBlock2D"));
  CHECK_THROWS_WITH(parse(R"("norm_num_groups": 7)"), Catch::Contains("norm_num_groups"));
  CHECK_THROWS_WITH(parse_unet_config("{not json", "bad.json"), Catch::Contains("bad.json") && Catch::Contains("not valid JSON"));
  CHECK_THROWS_WITH(resolve_unet_config("no-such-config"), Catch::Contains("no-such-config") && Catch::Contains("tiny"));
  // A config survives a round trip through its JSON.
  UNet2DConfig c = resolve_unet_config("ddpm-cifar10");
  UNet2DConfig back = parse_unet_config(unet_config_to_json(c), "roundtrip");
  CHECK(back.block_out_channels == c.block_out_channels);
  CHECK(back.downsample_padding == 0);
  CHECK_FALSE(back.attention_head_dim.has_value());
  CHECK(back.freq_shift == 1);
}

TEST_CASE("UNet2D forward maps NHWC to NHWC, is deterministic and checks its inputs", "[unet]") {
  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.sample_size = 8;
  UNet2D m(cfg, 3);
  Tensor x = Tensor::randn({2, 8, 8, 1}, 5);
  Tensor t = Tensor::from({10, 900}, {2}, DType::i64);
  NoGrad ng;
  Tensor y1 = m.forward(x, t), y2 = m.forward(x, t);
  CHECK(y1.shape() == Shape{2, 8, 8, 1});
  CHECK(y1.to_vector() == y2.to_vector());
  CHECK_THROWS_WITH(m.forward(Tensor::randn({2, 8, 8, 3}, 5), t), Catch::Contains("3 channels"));
  CHECK_THROWS_WITH(m.forward(Tensor::randn({2, 7, 7, 1}, 5), t), Catch::Contains("multiples of 2"));
  CHECK_THROWS_WITH(m.forward(x, Tensor::from({1, 2, 3}, {3})), Catch::Contains("timestep"));
  CHECK_THROWS_WITH(m.forward(x, t, Tensor::from({0, 1}, {2}, DType::i64)), Catch::Contains("no class embedding"));
}

TEST_CASE("dropout in the resnets acts only in training mode and follows its Philox position", "[unet]") {
  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.sample_size = 8;
  cfg.dropout = 0.5;
  UNet2D m(cfg, 3);
  Tensor x = Tensor::randn({1, 8, 8, 1}, 5);
  Tensor t = Tensor::from({10}, {1}, DType::i64);
  NoGrad ng;
  Tensor eval1 = m.forward(x, t), eval2 = m.forward(x, t);
  CHECK(eval1.to_vector() == eval2.to_vector());
  m.set_training(true);
  m.set_dropout_state(1, 0);
  Tensor a = m.forward(x, t);
  CHECK(m.dropout_offset() > 0);
  Tensor b = m.forward(x, t);  // the stream moved on: other masks
  m.set_dropout_state(1, 0);
  Tensor a_again = m.forward(x, t);
  CHECK(a.to_vector() == a_again.to_vector());
  CHECK(a.to_vector() != b.to_vector());
  CHECK(a.to_vector() != eval1.to_vector());
}

TEST_CASE("class embeddings condition the output and are checked", "[unet]") {
  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.sample_size = 8;
  cfg.num_class_embeds = 4;
  UNet2D m(cfg, 3);
  CHECK(m.num_parameters() == 701345 + 4 * 128);
  Tensor x = Tensor::randn({2, 8, 8, 1}, 5);
  Tensor t = Tensor::from({10, 10}, {2}, DType::i64);
  NoGrad ng;
  Tensor y0 = m.forward(x, t, Tensor::from({0, 0}, {2}, DType::i64));
  Tensor y1 = m.forward(x, t, Tensor::from({1, 1}, {2}, DType::i64));
  CHECK(y0.to_vector() != y1.to_vector());
  CHECK_THROWS_WITH(m.forward(x, t), Catch::Contains("class_labels are required"));
  CHECK_THROWS_WITH(m.forward(x, t, Tensor::from({0, 4}, {2}, DType::i64)), Catch::Contains("4"));
}
