// See unet_config.h. The named configs are embedded from configs/*.json at build time.
#include "nn/unet_config.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "diffuse/error.h"
#include "nn/json_input.h"
#include "nn/named_configs.h"

namespace diffuse {

using json = nlohmann::json;

namespace {

using Limits = UNet2DConfigLimits;

[[noreturn]] void reject(const std::string& source, const std::string& key, const json& value, const std::string& why) {
  throw Error(source + ": unsupported " + key + " = " + json_excerpt(value) + " (" + why + ")", ErrorKind::bad_input);
}

[[noreturn]] void wrong_type(const std::string& source, const std::string& key, const json& value,
                             const std::string& expected) {
  throw Error(source + ": key " + key + " has the wrong type: " + json_excerpt(value) + " (expected " + expected + ")",
              ErrorKind::bad_input);
}

int integer(const json& v, const std::string& key, const std::string& source, int min, int max) {
  return static_cast<int>(json_integer(v, min, max, source + ": " + key));
}

std::vector<int> integer_list(const json& v, const std::string& key, const std::string& source, int min, int max) {
  if (!v.is_array()) wrong_type(source, key, v, "a list of integers");
  if (v.size() > static_cast<size_t>(Limits::max_levels))
    reject(source, key, v, "at most " + std::to_string(Limits::max_levels) + " entries");
  std::vector<int> out;
  for (size_t i = 0; i < v.size(); ++i) out.push_back(integer(v[i], key + "[" + std::to_string(i) + "]", source, min, max));
  return out;
}

std::vector<std::string> string_list(const json& v, const std::string& key, const std::string& source) {
  if (!v.is_array()) wrong_type(source, key, v, "a list of strings");
  if (v.size() > static_cast<size_t>(Limits::max_levels))
    reject(source, key, v, "at most " + std::to_string(Limits::max_levels) + " entries");
  std::vector<std::string> out;
  for (const auto& x : v) {
    if (!x.is_string()) wrong_type(source, key, v, "a list of strings");
    out.push_back(x.get<std::string>());
  }
  return out;
}

double finite_number(const json& v, const std::string& key, const std::string& source) {
  if (!v.is_number()) wrong_type(source, key, v, "a number");
  double d = v.get<double>();
  if (!std::isfinite(d)) reject(source, key, v, "not a finite number");  // 1e999 parses as inf
  return d;
}

bool boolean(const json& v, const std::string& key, const std::string& source) {
  if (!v.is_boolean()) wrong_type(source, key, v, "true or false");
  return v.get<bool>();
}

// An integer that diffusers allows once per block: a single value, or a list whose entries are
// all equal.
std::optional<int> optional_int(const json& v, const std::string& key, const std::string& source, int min, int max) {
  if (v.is_null()) return std::nullopt;
  if (v.is_array()) {
    auto vals = integer_list(v, key, source, min, max);
    if (vals.empty()) reject(source, key, v, "empty list");
    for (int x : vals)
      if (x != vals[0]) reject(source, key, v, "per-block values must all be equal");
    return vals[0];
  }
  return integer(v, key, source, min, max);
}

}  // namespace

UNet2DConfig parse_unet_config(const std::string& json_text, const std::string& source) {
  json j = parse_json_input(json_text, source);
  if (!j.is_object()) throw Error(source + ": expected a JSON object", ErrorKind::bad_input);
  if (j.contains("_class_name") && j["_class_name"] != "UNet2DModel")
    reject(source, "_class_name", j["_class_name"], "only UNet2DModel is supported");

  UNet2DConfig c;
  for (auto& [key, v] : j.items()) {
    if (!key.empty() && key[0] == '_') continue;
    if (key == "sample_size") {
      if (v.is_array()) {
        auto s = integer_list(v, key, source, 1, Limits::max_sample_size);
        if (s.size() != 2 || s[0] != s[1]) reject(source, key, v, "only square samples are supported");
        c.sample_size = s[0];
      } else {
        c.sample_size = integer(v, key, source, 1, Limits::max_sample_size);
      }
    } else if (key == "in_channels") c.in_channels = integer(v, key, source, 1, Limits::max_image_channels);
    else if (key == "out_channels") c.out_channels = integer(v, key, source, 1, Limits::max_image_channels);
    else if (key == "block_out_channels")
      c.block_out_channels = integer_list(v, key, source, 1, Limits::max_block_channels);
    else if (key == "layers_per_block") c.layers_per_block = integer(v, key, source, 1, Limits::max_layers_per_block);
    else if (key == "down_block_types") c.down_block_types = string_list(v, key, source);
    else if (key == "up_block_types") c.up_block_types = string_list(v, key, source);
    else if (key == "attention_head_dim")
      c.attention_head_dim = optional_int(v, key, source, 1, Limits::max_block_channels);
    else if (key == "norm_num_groups") {
      if (v.is_null()) reject(source, key, v, "norm_num_groups must be set");
      c.norm_num_groups = integer(v, key, source, 1, Limits::max_norm_groups);
    } else if (key == "norm_eps") c.norm_eps = finite_number(v, key, source);
    else if (key == "act_fn") {
      if (v != "silu" && v != "swish") reject(source, key, v, "only silu is implemented");
    } else if (key == "time_embedding_type") {
      if (v != "positional") reject(source, key, v, "only positional is implemented");
    } else if (key == "flip_sin_to_cos") c.flip_sin_to_cos = boolean(v, key, source);
    else if (key == "freq_shift") c.freq_shift = finite_number(v, key, source);
    else if (key == "downsample_padding") {
      c.downsample_padding = integer(v, key, source, 0, 1);
    } else if (key == "dropout") c.dropout = finite_number(v, key, source);
    else if (key == "num_class_embeds")
      c.num_class_embeds = optional_int(v, key, source, 1, Limits::max_class_embeds);
    else if (key == "center_input_sample") c.center_input_sample = boolean(v, key, source);
    else if (key == "num_train_timesteps") {
      if (!v.is_null()) c.num_train_timesteps = integer(v, key, source, 1, Limits::max_train_timesteps);
    } else if (key == "mid_block_type") {
      if (v != "UNetMidBlock2D") reject(source, key, v, "only UNetMidBlock2D is implemented");
    } else if (key == "mid_block_scale_factor") {
      if (finite_number(v, key, source) != 1.0) reject(source, key, v, "only 1 is implemented");
    } else if (key == "resnet_time_scale_shift") {
      if (v != "default") reject(source, key, v, "only default is implemented");
    } else if (key == "add_attention") {
      if (v != true) reject(source, key, v, "the mid block always has attention");
    } else if (key == "class_embed_type") {
      if (!v.is_null()) reject(source, key, v, "only null (a class embedding table) is implemented");
    } else if (key == "downsample_type" || key == "upsample_type") {
      if (v != "conv") reject(source, key, v, "only conv is implemented");
    } else if (key == "attn_norm_num_groups" || key == "time_embedding_dim") {
      if (!v.is_null()) reject(source, key, v, "only null is implemented");
    } else if (key == "time_embedding_act_fn" || key == "resnet_skip_time_act" || key == "resnet_out_scale_factor") {
      if (!v.is_null() && v != 1.0 && v != false) reject(source, key, v, "not implemented");
    } else {
      throw Error(source + ": unknown key " + text_excerpt(key) + " = " + json_excerpt(v), ErrorKind::bad_input);
    }
  }
  validate_unet_config(c, source);
  return c;
}

void validate_unet_config(const UNet2DConfig& c, const std::string& source) {
  auto bad = [&](const std::string& what) { throw Error(source + ": " + what); };
  // Ranges first (a config built in code never went through the parser's checks), so that the
  // arithmetic below cannot overflow.
  auto in_range = [&](const char* name, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi)
      bad(std::string(name) + " " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
          std::to_string(hi) + "]");
  };
  size_t levels = c.block_out_channels.size();
  if (levels == 0) bad("block_out_channels is empty");
  if (levels > static_cast<size_t>(Limits::max_levels))
    bad("block_out_channels has " + std::to_string(levels) + " entries, more than " +
        std::to_string(Limits::max_levels));
  for (int ch : c.block_out_channels) in_range("block_out_channels entry", ch, 1, Limits::max_block_channels);
  in_range("in_channels", c.in_channels, 1, Limits::max_image_channels);
  in_range("out_channels", c.out_channels, 1, Limits::max_image_channels);
  in_range("layers_per_block", c.layers_per_block, 1, Limits::max_layers_per_block);
  in_range("sample_size", c.sample_size, 1, Limits::max_sample_size);
  in_range("norm_num_groups", c.norm_num_groups, 1, Limits::max_norm_groups);
  if (c.attention_head_dim) in_range("attention_head_dim", *c.attention_head_dim, 1, Limits::max_block_channels);
  if (c.num_class_embeds) in_range("num_class_embeds", *c.num_class_embeds, 1, Limits::max_class_embeds);
  if (c.num_train_timesteps) in_range("num_train_timesteps", *c.num_train_timesteps, 1, Limits::max_train_timesteps);
  if (!std::isfinite(c.norm_eps) || c.norm_eps <= 0) bad("norm_eps must be a positive number");
  if (!std::isfinite(c.freq_shift)) bad("freq_shift must be a finite number");

  if (c.down_block_types.size() != levels || c.up_block_types.size() != levels)
    bad("down_block_types and up_block_types must have one entry per block_out_channels entry");
  for (auto& t : c.down_block_types)
    if (t != "DownBlock2D" && t != "AttnDownBlock2D") bad("unsupported down block type \"" + text_excerpt(t) + "\"");
  for (auto& t : c.up_block_types)
    if (t != "UpBlock2D" && t != "AttnUpBlock2D") bad("unsupported up block type \"" + text_excerpt(t) + "\"");
  if (c.sample_size % (1 << (levels - 1)) != 0)
    bad("sample_size " + std::to_string(c.sample_size) + " is not divisible by 2^" + std::to_string(levels - 1));
  for (int ch : c.block_out_channels) {
    if (ch % c.norm_num_groups != 0)
      bad("block_out_channels entry " + std::to_string(ch) + " is not a positive multiple of norm_num_groups " +
          std::to_string(c.norm_num_groups));
    int hd = c.head_dim_for(ch);
    if (ch % hd != 0)
      bad("attention_head_dim " + std::to_string(hd) + " does not divide " + std::to_string(ch) + " channels");
  }
  if (!(c.dropout >= 0 && c.dropout < 1)) bad("dropout must be in [0, 1)");
}

UNet2DConfig load_unet_config(const std::string& path) {
  return parse_unet_config(read_json_input_file(path, "config file"), path);
}

std::string unet_config_to_json(const UNet2DConfig& c) {
  json j;
  j["_class_name"] = "UNet2DModel";
  j["_diffusers_version"] = "0.30.0";
  j["sample_size"] = c.sample_size;
  j["in_channels"] = c.in_channels;
  j["out_channels"] = c.out_channels;
  j["block_out_channels"] = c.block_out_channels;
  j["layers_per_block"] = c.layers_per_block;
  j["down_block_types"] = c.down_block_types;
  j["up_block_types"] = c.up_block_types;
  j["attention_head_dim"] = c.attention_head_dim ? json(*c.attention_head_dim) : json(nullptr);
  j["norm_num_groups"] = c.norm_num_groups;
  j["norm_eps"] = c.norm_eps;
  j["act_fn"] = "silu";
  j["time_embedding_type"] = "positional";
  j["flip_sin_to_cos"] = c.flip_sin_to_cos;
  j["freq_shift"] = c.freq_shift;
  j["downsample_padding"] = c.downsample_padding;
  j["dropout"] = c.dropout;
  j["num_class_embeds"] = c.num_class_embeds ? json(*c.num_class_embeds) : json(nullptr);
  j["center_input_sample"] = c.center_input_sample;
  j["mid_block_scale_factor"] = 1;
  j["resnet_time_scale_shift"] = "default";
  j["add_attention"] = true;
  j["class_embed_type"] = nullptr;
  if (c.num_train_timesteps) j["num_train_timesteps"] = *c.num_train_timesteps;
  return j.dump(2) + "\n";
}

std::vector<std::string> named_unet_configs() {
  std::vector<std::string> names;
  for (const auto& nc : kNamedConfigs) names.push_back(nc.name);
  return names;
}

UNet2DConfig resolve_unet_config(const std::string& name_or_path) {
  for (const auto& nc : kNamedConfigs)
    if (name_or_path == nc.name) return parse_unet_config(nc.json, std::string("config ") + nc.name);
  if (std::filesystem::is_directory(name_or_path)) {
    for (const char* sub : {"/unet/config.json", "/config.json"})
      if (std::filesystem::exists(name_or_path + sub)) return load_unet_config(name_or_path + sub);
  }
  if (!std::filesystem::exists(name_or_path)) {
    std::string names;
    for (const auto& n : named_unet_configs()) names += (names.empty() ? "" : ", ") + n;
    throw Error("--config " + name_or_path + ": neither a named config (" + names + ") nor an existing file", ErrorKind::bad_input);
  }
  return load_unet_config(name_or_path);
}

}  // namespace diffuse
