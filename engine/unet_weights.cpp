// See unet_weights.h. A sharded model is read shard by shard; its index is checked against the
// shards (every tensor in exactly the shard the index names) before any weight is copied.
#include "engine/unet_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include "nn/json_input.h"
#include "nn/layout.h"
#include "nn/safetensors.h"

namespace diffuse {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void refuse(const std::string& message) { throw Error(message, ErrorKind::bad_input); }

// Maps a legacy attention parameter name to the current one ("" when it is not legacy).
std::string modern_name(const std::string& name) {
  static const std::pair<const char*, const char*> kMap[] = {
      {".query.", ".to_q."}, {".key.", ".to_k."}, {".value.", ".to_v."}, {".proj_attn.", ".to_out.0."}};
  for (auto& [old_part, new_part] : kMap) {
    auto pos = name.find(old_part);
    if (pos != std::string::npos && name.find(".attentions.") != std::string::npos)
      return name.substr(0, pos) + new_part + name.substr(pos + std::string(old_part).size());
  }
  return "";
}

// Where one stored tensor is: its file and its name there.
struct StoredTensor {
  const SafetensorsFile* file;
  std::string name;
};

// The open files of one model's weights and every tensor they hold, by stored name.
struct WeightSet {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, StoredTensor> tensors;
};

// A shard named in an index must be a plain file name: the shards live next to the index.
void check_shard_name(const std::string& index, const std::string& shard) {
  if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
      shard.find('\\') != std::string::npos || shard.find('\0') != std::string::npos)
    refuse(index + ": shard \"" + text_excerpt(shard) +
           "\" is not a file name in the index's directory (shards must sit next to the index)");
}

WeightSet open_sharded(const std::string& index) {
  const nlohmann::json j = parse_json_input(read_json_input_file(index, "weights index"), index);
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    refuse(index + ": a weights index must be a JSON object with a \"weight_map\" object");
  std::map<std::string, std::string> placed;  // tensor -> shard, as the index says
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : j["weight_map"].items()) {
    if (!shard.is_string())
      refuse(index + ": weight_map entry \"" + text_excerpt(tensor) + "\" = " + json_excerpt(shard) +
             " is not a shard file name");
    check_shard_name(index, shard.get<std::string>());
    placed[tensor] = shard.get<std::string>();
    shards.insert(shard.get<std::string>());
  }
  if (shards.empty()) refuse(index + ": weight_map names no tensors");
  const fs::path dir = fs::path(index).parent_path();
  for (const auto& shard : shards)
    if (!fs::is_regular_file(dir / shard))
      refuse(index + ": shard " + text_excerpt(shard) + " is missing (" + (dir / shard).string() + ")");
  WeightSet set;
  for (const auto& shard : shards) {
    const std::string path = (dir / shard).string();
    set.files.push_back(std::make_unique<SafetensorsFile>(SafetensorsFile::open(path)));
    const SafetensorsFile& file = *set.files.back();
    for (const auto& name : file.names()) {
      auto [it, fresh] = set.tensors.insert({name, {&file, name}});
      if (!fresh)
        refuse(index + ": tensor " + text_excerpt(name) + " is in two shards, " + it->second.file->path() + " and " +
               path);
      auto where = placed.find(name);
      if (where == placed.end())
        refuse(index + ": tensor " + text_excerpt(name) + " in shard " + path + " is not in the index's weight_map");
      if (where->second != shard)
        refuse(index + ": tensor " + text_excerpt(name) + " is in shard " + path + " but the index puts it in " +
               text_excerpt(where->second));
    }
  }
  for (const auto& [tensor, shard] : placed)
    if (!set.tensors.count(tensor))
      refuse(index + ": tensor " + text_excerpt(tensor) + " is not in shard " + text_excerpt(shard) +
             ", where the index puts it");
  return set;
}

WeightSet open_weights(const std::string& path) {
  if (is_weights_index(path)) return open_sharded(path);
  WeightSet set;
  set.files.push_back(std::make_unique<SafetensorsFile>(SafetensorsFile::open(path)));
  for (const auto& name : set.files.back()->names()) set.tensors[name] = {set.files.back().get(), name};
  return set;
}

// Index of the first NaN or infinity in x[0, n), or n. An integer test of the exponent bits,
// OR-reduced per block, vectorises without -ffast-math, so a clean tensor costs one fast pass.
int64_t first_non_finite(const float* x, int64_t n) {
  constexpr int64_t kBlock = 4096;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t end = std::min(n, begin + kBlock);
    uint32_t any = 0;
    for (int64_t i = begin; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, x + i, 4);
      any |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (any)
      for (int64_t i = begin; i < end; ++i)
        if (!std::isfinite(x[i])) return i;
  }
  return n;
}

// One stored tensor as the f32 value of parameter `param`, after every check.
Tensor read_parameter(const StoredTensor& s, const std::string& param, Shape want) {
  const std::string who = s.file->path() + ": tensor " + text_excerpt(s.name);
  const std::string dtype = s.file->dtype(s.name);
  if (dtype != "F32" && dtype != "F16" && dtype != "BF16" && dtype != "F64")
    refuse(who + " is stored as " + dtype + ", an integer type; the model's weights are floating point");
  if (want.size() == 4) want = {want[0], want[3], want[1], want[2]};  // OHWI -> OIHW
  Shape disk = s.file->shape(s.name);
  if (disk != want)
    refuse(s.file->path() + ": tensor " + param + " has shape " + shape_str(disk) + ", the config needs " +
           shape_str(want));
  Tensor v = s.file->get(s.name, DType::f32);
  const int64_t bad = first_non_finite(v.data<float>(), v.numel());
  if (bad != v.numel())
    refuse(who + " holds a non-finite value (" + std::to_string(v.data<float>()[bad]) + " at element " +
           std::to_string(bad) + "); a model with NaN or infinite weights cannot sample");
  return v.ndim() == 4 ? oihw_to_ohwi(v) : v;
}

}  // namespace

bool is_weights_index(const std::string& path) {
  const std::string file = fs::path(path).filename().string();
  return file.size() > 5 && file.compare(file.size() - 5, 5, ".json") == 0 &&
         file.find(".safetensors.index.") != std::string::npos;
}

void load_unet_weights(UNet2D& model, const std::string& path) {
  WeightSet weights = open_weights(path);
  std::map<std::string, StoredTensor> stored;  // parameter name -> where it is stored
  for (const auto& [name, where] : weights.tensors) {
    std::string m = modern_name(name);
    auto [it, fresh] = stored.insert({m.empty() ? name : m, where});
    if (!fresh)  // e.g. both ...attentions.0.query.weight and ...attentions.0.to_q.weight
      refuse(path + ": tensors " + text_excerpt(it->second.name) + " and " + text_excerpt(name) +
             " are the legacy and the modern name of one parameter; keep only one");
  }
  ParamList params = model.named_parameters();
  std::vector<Tensor> loaded;
  std::set<std::string> used;
  for (auto& [name, t] : params) {
    auto it = stored.find(name);
    if (it == stored.end()) refuse(path + ": tensor " + name + " is missing (the config needs it)");
    loaded.push_back(read_parameter(it->second, name, t->shape()));
    used.insert(name);
  }
  for (auto& [name, where] : stored)
    if (!used.count(name))
      refuse(where.file->path() + ": unexpected tensor " + text_excerpt(where.name) +
             " (not part of this config's UNet)");
  // All checks passed: copy into the existing storage, so every handle to a parameter (an
  // optimizer's, an EMA's) keeps pointing at the model's weights.
  for (size_t k = 0; k < params.size(); ++k) {
    Tensor& t = *params[k].second;
    t.copy_from(loaded[k].to(t.dtype()).to(t.device()));
  }
}

void save_unet_weights(UNet2D& model, const std::string& path, const std::map<std::string, std::string>& metadata,
                       WeightsDType dtype) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, t] : model.named_parameters()) {
    Tensor v = t->to(Device::cpu).to(DType::f32);
    if (v.ndim() == 4) v = ohwi_to_oihw(v);
    out.emplace_back(name, dtype == WeightsDType::bf16 ? v.to(DType::bf16) : v);
  }
  std::map<std::string, std::string> meta = metadata;
  meta.emplace("format", "pt");
  if (dtype == WeightsDType::f16) save_safetensors_f16(path, out, meta);
  else save_safetensors(path, out, meta);
}

}  // namespace diffuse
