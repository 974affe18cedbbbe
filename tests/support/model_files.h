// Helpers for tests that write model files by hand (tests/cpu/test_safetensors.cpp,
// test_hostile_model_files.cpp, test_interop_variants.cpp): raw safetensors bytes, a tiny saved
// model directory to rearrange, and the message of the diffuse::Error a call throws.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "diffuse/error.h"
#include "engine/model_dir.h"
#include "nn/safetensors.h"
#include "nn/unet_config.h"
#include "support/temp_dir.h"

namespace diffuse::test {

inline std::string le64(uint64_t v) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &v, 8);
  return s;
}

// A safetensors file with the given header text and data section, header length taken from the text.
inline std::string st_bytes(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

// The message of the diffuse::Error `f` throws ("" if it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The tiny config at 8×8 saved as a model directory (seed `seed`); tests then rearrange its files.
struct TinyModelDir {
  TempDir dir;
  std::string root = dir.file("model");
  std::string unet = root + "/unet";
  std::unique_ptr<UNet2D> model;
  explicit TinyModelDir(uint64_t seed) {
    UNet2DConfig cfg = resolve_unet_config("tiny");
    cfg.sample_size = 8;
    model = std::make_unique<UNet2D>(cfg, seed);
    save_model_dir(root, *model, "");
  }
  std::string weights() const { return unet + "/diffusion_pytorch_model.safetensors"; }
  // Every stored tensor of the weights file, by name, as stored (f32, or i32 for I32).
  std::vector<std::pair<std::string, Tensor>> stored() const {
    SafetensorsFile f = SafetensorsFile::open(weights());
    std::vector<std::pair<std::string, Tensor>> out;
    for (const auto& n : f.names()) out.emplace_back(n, f.get(n, f.dtype(n) == "I32" ? DType::i32 : DType::f32));
    return out;
  }
};

}  // namespace diffuse::test
