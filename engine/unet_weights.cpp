// See unet_weights.h.
#include "engine/unet_weights.h"

#include <set>

#include "nn/layout.h"
#include "nn/safetensors.h"

namespace diffuse {

namespace {

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

}  // namespace

void load_unet_weights(UNet2D& model, const std::string& path) {
  SafetensorsFile file = SafetensorsFile::open(path);
  std::map<std::string, std::string> stored;  // parameter name -> name in the file
  for (const auto& n : file.names()) {
    std::string m = modern_name(n);
    stored[m.empty() ? n : m] = n;
  }
  ParamList params = model.named_parameters();
  std::vector<Tensor> loaded;
  std::set<std::string> used;
  for (auto& [name, t] : params) {
    auto it = stored.find(name);
    if (it == stored.end()) throw Error(path + ": tensor " + name + " is missing (the config needs it)");
    Shape disk = file.shape(it->second);
    Shape want = t->shape();
    if (want.size() == 4) want = {want[0], want[3], want[1], want[2]};  // OHWI -> OIHW
    if (disk != want)
      throw Error(path + ": tensor " + name + " has shape " + shape_str(disk) + ", the config needs " +
                  shape_str(want));
    Tensor v = file.get(it->second, DType::f32);
    if (v.ndim() == 4) v = oihw_to_ohwi(v);
    loaded.push_back(v);
    used.insert(name);
  }
  for (auto& [name, file_name] : stored)
    if (!used.count(name)) throw Error(path + ": unexpected tensor " + file_name + " (not part of this config's UNet)");
  // All checks passed: copy into the existing storage, so every handle to a parameter (an
  // optimizer's, an EMA's) keeps pointing at the model's weights.
  for (size_t k = 0; k < params.size(); ++k) {
    Tensor& t = *params[k].second;
    t.copy_from(loaded[k].to(t.dtype()).to(t.device()));
  }
}

void save_unet_weights(UNet2D& model, const std::string& path, const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, t] : model.named_parameters()) {
    Tensor v = t->to(Device::cpu).to(DType::f32);
    out.emplace_back(name, v.ndim() == 4 ? ohwi_to_oihw(v) : v);
  }
  std::map<std::string, std::string> meta = metadata;
  meta.emplace("format", "pt");
  save_safetensors(path, out, meta);
}

}  // namespace diffuse
