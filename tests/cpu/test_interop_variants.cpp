// Weights laid out the ways diffusers 0.31 writes them (issue 13's interop list): sharded
// (diffusion_pytorch_model.safetensors.index.json naming shard files), variants
// (diffusion_pytorch_model.fp16.safetensors, ...index.fp16.json), and pickle .bin files, which are
// refused unread. Hostile indexes (a shard outside the directory, a missing shard, a tensor in two
// shards or not where the index says) are one error naming the index.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "diffuse/diffuse.h"
#include "engine/model_dir.h"
#include "engine/unet_weights.h"
#include "nn/safetensors.h"
#include "nn/unet_config.h"
#include "support/model_files.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using Catch::Contains;
using test::error_of;
namespace fs = std::filesystem;

namespace {

// A tiny model directory whose weights tests split into shards or variants.
struct ModelFixture : test::TinyModelDir {
  ModelFixture() : TinyModelDir(3) {}
  std::string single() const { return weights(); }
  // Splits the weights into `shards` files and an index (named for `variant`), removing the single file.
  nlohmann::json shard(int shards, const std::string& variant = "") {
    auto all = stored();
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
    for (int s = 0; s < shards; ++s) {
      std::string name = "diffusion_pytorch_model" + (variant.empty() ? "" : "." + variant) + "-0000" +
                         std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
      std::vector<std::pair<std::string, Tensor>> part;
      for (size_t k = s; k < all.size(); k += shards) {
        part.push_back(all[k]);
        index["weight_map"][all[k].first] = name;
      }
      save_safetensors(unet + "/" + name, part);
    }
    write_index(index, variant);
    fs::remove(single());
    return index;
  }
  void write_index(const nlohmann::json& index, const std::string& variant = "") const {
    test::write_bytes(unet + "/" + weights_index_name(variant), index.dump(2));
  }
};

// True when every parameter of `a` equals the one of `b` bit for bit.
bool same_weights(UNet2D& a, UNet2D& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  if (pa.size() != pb.size()) return false;
  for (size_t k = 0; k < pa.size(); ++k) {
    const Tensor& x = *pa[k].second;
    const Tensor& y = *pb[k].second;
    if (pa[k].first != pb[k].first || x.shape() != y.shape() ||
        std::memcmp(x.data<float>(), y.data<float>(), x.nbytes()) != 0)
      return false;
  }
  return true;
}

}  // namespace

TEST_CASE("interop: sharded weights load through their index", "[interop]") {
  ModelFixture f;
  f.shard(3);
  ModelDirectory located = locate_model_dir(f.root);
  CHECK(located.weights_path == f.unet + "/diffusion_pytorch_model.safetensors.index.json");
  auto loaded = load_unet(located);
  CHECK(same_weights(*loaded, *f.model));
}

TEST_CASE("interop: hostile weight indexes are refused naming the index", "[interop][hostile]") {
  ModelFixture f;
  nlohmann::json index = f.shard(2);
  const std::string index_path = f.unet + "/" + weights_index_name("");
  auto load_error = [&](const nlohmann::json& changed) {
    f.write_index(changed);
    return error_of([&] { load_unet(locate_model_dir(f.root)); });
  };
  const std::string first = index["weight_map"].begin().key();
  const std::string first_shard = index["weight_map"].begin().value();

  auto outside = index;
  outside["weight_map"][first] = "../model/unet/" + first_shard;
  CHECK_THAT(load_error(outside), Contains(index_path) && Contains("is not a file name in the index's directory"));
  outside["weight_map"][first] = "/etc/passwd";
  CHECK_THAT(load_error(outside), Contains("is not a file name in the index's directory"));

  auto missing = index;
  missing["weight_map"][first] = "diffusion_pytorch_model-00009-of-00009.safetensors";
  CHECK_THAT(load_error(missing), Contains(index_path) && Contains("shard diffusion_pytorch_model-00009-of-00009."
                                                                   "safetensors is missing"));

  auto elsewhere = index;  // the tensor is in shard 1; the index says shard 2
  std::string other_shard;
  for (const auto& [t, s] : index["weight_map"].items())
    if (s != first_shard) other_shard = s;
  elsewhere["weight_map"][first] = other_shard;
  CHECK_THAT(load_error(elsewhere), Contains("tensor " + first + " is in shard") && Contains("index puts it in"));

  auto unlisted = index;
  unlisted["weight_map"].erase(first);
  CHECK_THAT(load_error(unlisted), Contains("tensor " + first) && Contains("is not in the index's weight_map"));

  auto phantom = index;
  phantom["weight_map"]["conv_in.extra"] = first_shard;
  CHECK_THAT(load_error(phantom), Contains("tensor conv_in.extra is not in shard " + first_shard));

  CHECK_THAT(load_error(nlohmann::json{{"weight_map", {{first, 3}}}}), Contains("is not a shard file name"));
  CHECK_THAT(load_error(nlohmann::json{{"metadata", {}}}), Contains("\"weight_map\" object"));
  CHECK_THAT(load_error(nlohmann::json{{"weight_map", nlohmann::json::object()}}), Contains("names no tensors"));

  // The same tensor stored in two shards.
  f.write_index(index);
  SafetensorsFile one = SafetensorsFile::open(f.unet + "/" + first_shard);
  SafetensorsFile two = SafetensorsFile::open(f.unet + "/" + other_shard);
  std::vector<std::pair<std::string, Tensor>> second;
  for (const auto& n : two.names()) second.emplace_back(n, two.get(n));
  second.emplace_back(first, one.get(first));
  save_safetensors(f.unet + "/" + other_shard, second);
  CHECK_THAT(error_of([&] { load_unet(locate_model_dir(f.root)); }), Contains("tensor " + first + " is in two shards"));

  // A deep index is one clear line.
  test::write_bytes(index_path, std::string(100000, '[') + std::string(100000, ']'));
  CHECK_THAT(error_of([&] { load_unet(locate_model_dir(f.root)); }), Contains(index_path) && Contains("nested deeper"));
}

TEST_CASE("interop: variants load with their name and are named when asked for the plain weights",
          "[interop]") {
  ModelFixture f;
  // A bf16 variant, as diffusers' save_pretrained(variant="bf16") writes it, and nothing else.
  std::vector<std::pair<std::string, Tensor>> bf16;
  for (auto& [name, t] : f.stored()) bf16.emplace_back(name, t.to(DType::bf16));
  save_safetensors(f.unet + "/" + weights_file_name("bf16"), bf16);
  fs::remove(f.single());

  CHECK_THAT(error_of([&] { locate_model_dir(f.root); }),
             Contains("holds only the bf16 variant: load it with --variant bf16"));
  ModelDirectory located = locate_model_dir(f.root, "bf16");
  CHECK(located.weights_path == f.unet + "/diffusion_pytorch_model.bf16.safetensors");
  auto loaded = load_unet(located);
  // Every weight is the bf16 rounding of the original.
  auto pa = loaded->named_parameters(), pb = f.model->named_parameters();
  for (size_t k = 0; k < pa.size(); ++k) {
    Tensor rounded = pb[k].second->to(DType::bf16).to(DType::f32);
    REQUIRE(std::memcmp(pa[k].second->data<float>(), rounded.data<float>(), rounded.nbytes()) == 0);
  }

  CHECK_THAT(error_of([&] { locate_model_dir(f.root, "fp16"); }),
             Contains("no diffusion_pytorch_model.fp16.safetensors") && Contains("variants present: bf16"));
  try {
    locate_model_dir(f.root, "../bf16");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("is not a variant name"));
    CHECK(e.kind() == ErrorKind::usage);
  }
}

TEST_CASE("interop: a sharded variant loads through its variant index", "[interop]") {
  ModelFixture f;
  f.shard(2, "fp16");
  CHECK_THAT(error_of([&] { locate_model_dir(f.root); }), Contains("--variant fp16"));
  ModelDirectory located = locate_model_dir(f.root, "fp16");
  CHECK(located.weights_path == f.unet + "/diffusion_pytorch_model.safetensors.index.fp16.json");
  auto loaded = load_unet(located);
  CHECK(same_weights(*loaded, *f.model));
}

TEST_CASE("interop: pickle weights are refused unread, with how to convert", "[interop][hostile]") {
  ModelFixture f;
  fs::remove(f.single());
  // Not a pickle at all: were it opened and parsed, the error would differ.
  test::write_bytes(f.unet + "/diffusion_pytorch_model.bin", "not read");
  std::string msg = error_of([&] { locate_model_dir(f.root); });
  CHECK_THAT(msg, Contains(f.unet) && Contains("PyTorch pickle (diffusion_pytorch_model.bin)") &&
                      Contains("unpickling runs code") && Contains("Converting .bin weights"));
}

TEST_CASE("interop: the library loads a variant through Model::load", "[interop][api]") {
  ModelFixture f;
  std::vector<std::pair<std::string, Tensor>> bf16;
  for (auto& [name, t] : f.stored()) bf16.emplace_back(name, t.to(DType::bf16));
  save_safetensors(f.unet + "/" + weights_file_name("bf16"), bf16);
  fs::remove(f.single());
  Model m = Model::load(f.root, Device::cpu, "bf16");
  CHECK(m.num_parameters() == f.model->num_parameters());
  try {
    Model::load(f.root);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("--variant bf16"));
    CHECK(e.kind() == ErrorKind::bad_input);
  }
  try {
    Model::load(f.root, Device::cpu, "a/b");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::usage);
  }
}

TEST_CASE("interop: fp16 and bf16 variants are written next to the f32 weights and load back", "[interop]") {
  ModelFixture f;
  for (const char* variant : {"fp16", "bf16"}) {
    INFO(variant);
    save_weights_variant(f.root, *f.model, variant);
    CHECK(fs::exists(f.single()));  // the f32 weights stay
    const std::string file = f.unet + "/" + weights_file_name(variant);
    CHECK(SafetensorsFile::open(file).dtype("conv_in.weight") == (std::string(variant) == "fp16" ? "F16" : "BF16"));
    auto loaded = load_unet(locate_model_dir(f.root, variant));
    auto pa = loaded->named_parameters(), pb = f.model->named_parameters();
    for (size_t k = 0; k < pa.size(); ++k) {
      const Tensor& original = *pb[k].second;
      const float* got = pa[k].second->data<float>();
      Tensor bf = original.to(DType::bf16).to(DType::f32);
      for (int64_t i = 0; i < original.numel(); ++i) {
        const float want = std::string(variant) == "fp16" ? f16_to_float(float_to_f16(original.data<float>()[i]))
                                                           : bf.data<float>()[i];
        REQUIRE(got[i] == want);
      }
    }
  }
  CHECK_THAT(error_of([&] { save_weights_variant(f.root, *f.model, "fp8"); }), Contains("fp16 or bf16"));
}

TEST_CASE("interop: diffuse forward --variant loads a variant, without it the error names the flag", "[interop][cli]") {
  ModelFixture f;
  save_weights_variant(f.root, *f.model, "bf16");
  fs::remove(f.single());
  const std::string out = f.dir.file("out.safetensors");
  auto plain = test::run_cli({"forward", "--model", f.root, "--random-input", "--out", out});
  CHECK(plain.exit_code == 1);
  CHECK_THAT(plain.output, Contains("holds only the bf16 variant: load it with --variant bf16"));
  auto with_variant = test::run_cli({"forward", "--model", f.root, "--variant", "bf16", "--random-input", "--out", out});
  INFO(with_variant.output);
  CHECK(with_variant.exit_code == 0);
  CHECK(SafetensorsFile::open(out).contains("out"));
}

TEST_CASE("interop: diffuse train --save-dtype fp16 adds the fp16 variant to each checkpoint's ema/", "[interop][cli]") {
  test::TempDir dir;
  const std::string out = dir.file("run");
  auto r = test::run_cli({"train", "--data", "fashion-mnist", "--max-images", "8", "--config", "tiny", "--out", out,
                          "--steps", "1", "--batch", "2", "--save-dtype", "fp16"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const std::string ema = out + "/checkpoints/step-1/ema";
  CHECK(fs::exists(ema + "/unet/diffusion_pytorch_model.safetensors"));  // f32, for --resume
  CHECK(SafetensorsFile::open(ema + "/unet/diffusion_pytorch_model.fp16.safetensors").dtype("conv_in.weight") == "F16");
  CHECK(load_unet(locate_model_dir(ema, "fp16"))->num_parameters() > 0);
  auto bad = test::run_cli({"train", "--out", dir.file("x"), "--save-dtype", "fp8"});
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.output, Contains("--save-dtype"));
}

TEST_CASE("interop: diffuse sample --variant samples from a variant", "[interop][cli]") {
  ModelFixture f;
  save_weights_variant(f.root, *f.model, "fp16");
  fs::remove(f.single());
  const std::string png = f.dir.file("g.png");
  auto plain = test::run_cli({"sample", "--model", f.root, "--steps", "2", "--n", "1", "--out", png});
  CHECK(plain.exit_code == 1);
  CHECK_THAT(plain.output, Contains("--variant fp16"));
  auto r = test::run_cli({"sample", "--model", f.root, "--variant", "fp16", "--steps", "2", "--n", "1", "--out", png});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(fs::exists(png));
  auto bad = test::run_cli({"sample", "--model", f.root, "--variant", "../fp16", "--steps", "2", "--out", png});
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.output, Contains("is not a variant name"));
}
