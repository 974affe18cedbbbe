// Model files written by a hostile user (issue 13, classes 1, 3 and 5): deep JSON, huge or
// non-UTF-8 values quoted in errors, integers that do not fit, non-finite weights, dtypes of the
// wrong kind, legacy and modern names of one tensor. Each must end as one bounded, UTF-8-clean
// diffuse::Error naming the file — never a crash, a wrapped number or a silently accepted value.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <limits>
#include <string>

#include "diffuse/error.h"
#include "engine/model_dir.h"
#include "engine/scheduler_config.h"
#include "engine/unet_weights.h"
#include "nn/json_input.h"
#include "nn/safetensors.h"
#include "nn/unet_config.h"
#include "support/model_files.h"
#include "support/temp_dir.h"

using namespace diffuse;
using Catch::Contains;
using test::error_of;

namespace {

std::string deep_array(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// True when `s` is valid UTF-8 (lead and continuation bytes; the excerpt code checks the finer
// rules) without control characters.
bool clean_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return false;
    if (c < 0x80) continue;
    size_t continuation = c >= 0xf0 && c <= 0xf4 ? 3 : c >= 0xe0 ? 2 : c >= 0xc2 ? 1 : 0;
    if (continuation == 0 || c > 0xf4 || i + continuation >= s.size()) return false;
    for (size_t k = 1; k <= continuation; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    i += continuation;
  }
  return true;
}

}  // namespace

TEST_CASE("json input: nesting deeper than the limit is one error, never a deep tree", "[hostile][json]") {
  for (size_t depth : {size_t(kMaxJsonDepth) + 1, size_t(100000)}) {
    std::string msg = error_of([&] { parse_json_input(deep_array(depth), "deep.json"); });
    CHECK_THAT(msg, Contains("deep.json: JSON nested deeper than 64 levels"));
  }
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
  CHECK_THAT(error_of([&] { parse_json_input(objects, "deep.json"); }), Contains("nested deeper than 64"));
  CHECK(parse_json_input(deep_array(kMaxJsonDepth), "ok.json").is_array());
  try {
    parse_json_input(deep_array(100000), "deep.json");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
  }
}

TEST_CASE("json input: size limit, duplicate keys and syntax errors name the source", "[hostile][json]") {
  CHECK_THAT(error_of([] { parse_json_input(std::string(100, ' ') + "{}", "big.json", 64); }),
             Contains("big.json: 102 bytes of JSON is over the limit of 64 bytes"));
  CHECK_THAT(error_of([] { parse_json_input(R"({"a": 1, "a": 2})", "dup.json"); }),
             Contains("dup.json: key \"a\" appears twice"));
  CHECK_THAT(error_of([] { parse_json_input(R"({"x": {"a": 1, "a": 2}})", "dup.json"); }), Contains("appears twice"));
  // The same key in sibling objects is fine.
  CHECK(parse_json_input(R"({"x": {"a": 1}, "y": {"a": 2}, "z": [{"a": 3}, {"a": 4}]})", "ok.json").size() == 3);
  // A syntax error after a long, non-UTF-8 token: the message stays short and clean.
  std::string junk = "{\"k\": " + std::string(100000, 'x') + "\xff}";
  std::string msg = error_of([&] { parse_json_input(junk, "junk.json"); });
  CHECK_THAT(msg, Contains("junk.json: not valid JSON"));
  CHECK(msg.size() < 300);
  CHECK(clean_utf8(msg));
}

TEST_CASE("json input: excerpts are bounded, one level deep and UTF-8-clean", "[hostile][json]") {
  using nlohmann::json;
  CHECK(json_excerpt(json(4294967297ull)) == "4294967297");
  CHECK(json_excerpt(json("silu")) == "\"silu\"");
  CHECK(json_excerpt(json::parse(R"([224, 448, [1, 2], {"a": 1}])")) == "[224, 448, [2 items], {1 keys}]");
  CHECK(json_excerpt(json::parse(R"({"a": true, "b": null})")) == "{\"a\": true, \"b\": null}");
  // A deep value (built by the iterative parser without limits) is never entered.
  json deep = json::parse(deep_array(100000));
  CHECK(json_excerpt(deep) == "[[1 items]]");
  // Long arrays and strings are cut.
  json long_array = json::array();
  for (int i = 0; i < 100000; ++i) long_array.push_back(i);
  std::string a = json_excerpt(long_array);
  CHECK(a.size() < 100);
  CHECK_THAT(a, Contains(", ...]"));
  std::string s = json_excerpt(json(std::string(120000, 'v')));
  CHECK(s.size() < 120);
  CHECK_THAT(s, Contains("...(120000 bytes)"));

  CHECK(text_excerpt("plain") == "plain");
  CHECK(text_excerpt("caf\xc3\xa9 \xe2\x9c\x93") == "caf\xc3\xa9 \xe2\x9c\x93");  // valid UTF-8 kept
  CHECK(text_excerpt("a\xff" "b\xc0\xaf" "c") == "a\\xffb\\xc0\\xafc");       // invalid and overlong
  CHECK(text_excerpt("\xed\xa0\x80") == "\\xed\\xa0\\x80");                   // a UTF-16 surrogate
  CHECK(text_excerpt("\xe2\x9c") == "\\xe2\\x9c");                            // truncated sequence
  CHECK(text_excerpt("l1\nl2\t\x01\\") == "l1\\nl2\\t\\x01\\\\");
  CHECK(clean_utf8(text_excerpt(std::string(1000, '\xff'))));
}

TEST_CASE("json input: json_integer accepts only integral numbers in range", "[hostile][json]") {
  using nlohmann::json;
  CHECK(json_integer(json(7), 0, 10, "k") == 7);
  CHECK(json_integer(json(-3), -5, 10, "k") == -3);
  CHECK(json_integer(json(2.0), 0, 10, "k") == 2);
  CHECK(json_integer(json::parse("1e3"), 0, 1000, "k") == 1000);
  CHECK_THAT(error_of([] { json_integer(json(4294967297ull), 1, 64, "config.json: layers_per_block"); }),
             Contains("config.json: layers_per_block = 4294967297 is not an integer in [1, 64]"));
  for (const char* bad : {"2.5", "1e30", "-1e300", "\"2\"", "true", "null", "[1]", "18446744073709551615", "-1"})
    CHECK_THAT(error_of([&] { json_integer(json::parse(bad), 0, 1 << 20, "k"); }), Contains("is not an integer in"));
  CHECK(json_integer(json(INT64_MIN), INT64_MIN, INT64_MAX, "k") == INT64_MIN);
  CHECK(json_integer(json(UINT64_C(9223372036854775807)), 0, INT64_MAX, "k") == INT64_MAX);
}

TEST_CASE("json input: files over the limit are refused before they are read", "[hostile][json]") {
  test::TempDir dir;
  test::write_bytes(dir.file("big.json"), std::string(1000, ' ') + "{}");
  CHECK_THAT(error_of([&] { read_json_input_file(dir.file("big.json"), "config file", 100); }),
             Contains(dir.file("big.json") + ": config file is 1002 bytes, over the limit of 100 bytes"));
  CHECK(read_json_input_file(dir.file("big.json"), "config file").size() == 1002);
  CHECK_THAT(error_of([&] { read_json_input_file(dir.file("none.json"), "config file"); }),
             Contains("none.json: cannot open config file"));
  CHECK_THAT(error_of([&] { read_json_input_file(dir.path().string(), "config file"); }),
             Contains("is not a regular file"));
  // A FIFO named as a config is refused without opening it (opening would wait for a writer).
  REQUIRE(::mkfifo(dir.file("fifo.json").c_str(), 0600) == 0);
  CHECK_THAT(error_of([&] { read_json_input_file(dir.file("fifo.json"), "config file"); }),
             Contains("fifo.json: config file is not a regular file"));
}

// ---- class 1: deep JSON and unbounded error lines in model files -----------------------------

namespace {

// The error line must be short and clean, whatever the file held.
void check_bounded(const std::string& msg) {
  CHECK(!msg.empty());
  CHECK(msg.size() < 400);
  CHECK(clean_utf8(msg));
}

}  // namespace

TEST_CASE("hostile: deep JSON in config.json, scheduler_config.json and a safetensors header", "[hostile]") {
  const std::string deep = deep_array(100000);
  std::string msg = error_of([&] { parse_unet_config("{\"sample_size\": " + deep + "}", "config.json"); });
  CHECK_THAT(msg, Contains("config.json: JSON nested deeper than 64 levels"));
  msg = error_of([&] { scheduler_config_from_json("{\"beta_start\": " + deep + "}", "scheduler_config.json"); });
  CHECK_THAT(msg, Contains("scheduler_config.json: JSON nested deeper than 64 levels"));
  test::TempDir dir;
  const std::string path = dir.file("deep.safetensors");
  test::write_bytes(path, test::st_bytes("{\"x\": " + deep + "}"));
  msg = error_of([&] { SafetensorsFile::open(path); });
  CHECK_THAT(msg, Contains(path) && Contains("header: JSON nested deeper than 64 levels"));
  // Deep but within the limit: refused for what it is, with a bounded excerpt.
  msg = error_of([&] { parse_unet_config("{\"sample_size\": " + deep_array(60) + "}", "config.json"); });
  CHECK_THAT(msg, Contains("sample_size") && Contains("[[1 items]]"));
  check_bounded(msg);
}

TEST_CASE("hostile: errors quoting keys and values stay short and UTF-8-clean", "[hostile]") {
  const std::string long_key(100000, 'k');
  std::string msg = error_of([&] { parse_unet_config("{\"" + long_key + "\\u0001\": 1}", "config.json"); });
  CHECK_THAT(msg, Contains("config.json: unknown key kkk"));
  check_bounded(msg);
  msg = error_of([&] { parse_unet_config("{\"act_fn\": \"" + std::string(120000, 'x') + "\"}", "config.json"); });
  CHECK_THAT(msg, Contains("act_fn") && Contains("(120000 bytes)"));
  check_bounded(msg);
  msg = error_of([&] { scheduler_config_from_json("{\"k\\u00ff\\n\": \"" + std::string(50000, 'v') + "\"}", "s.json"); });
  CHECK_THAT(msg, Contains("s.json: unknown key \"k\xc3\xbf\\n\""));
  check_bounded(msg);
  // A safetensors header with a huge tensor name and a bad dtype.
  test::TempDir dir;
  const std::string path = dir.file("w.safetensors");
  test::write_bytes(path, test::st_bytes("{\"" + std::string(200000, 'n') + "\": {\"dtype\": \"\\u0007X\", "
                                            "\"shape\": [], \"data_offsets\": [0, 0]}}"));
  msg = error_of([&] { SafetensorsFile::open(path); });
  CHECK_THAT(msg, Contains("has dtype '\\x07X'"));
  check_bounded(msg);
}

// ---- class 3: every config number through one checked conversion, in documented ranges -------

TEST_CASE("hostile: config integers that do not fit or are absurd are refused naming the key", "[hostile]") {
  auto msg = [](const std::string& entry) { return error_of([&] { parse_unet_config("{" + entry + "}", "cfg.json"); }); };
  CHECK_THAT(msg("\"layers_per_block\": 4294967297"),
             Contains("cfg.json: layers_per_block = 4294967297 is not an integer in [1, 16]"));
  CHECK_THAT(msg("\"layers_per_block\": 1e9"), Contains("layers_per_block = 1000000000.0 is not an integer"));
  CHECK_THAT(msg("\"layers_per_block\": 2.5"), Contains("layers_per_block = 2.5 is not an integer"));
  CHECK_THAT(msg("\"in_channels\": -3"), Contains("in_channels = -3 is not an integer in [1, 1024]"));
  CHECK_THAT(msg("\"sample_size\": 1099511627776"), Contains("sample_size = 1099511627776"));
  CHECK_THAT(msg("\"sample_size\": [64, 18446744073709551615]"), Contains("sample_size[1] = 18446744073709551615"));
  CHECK_THAT(msg("\"block_out_channels\": [32, 64, 1e12]"), Contains("block_out_channels[2]"));
  CHECK_THAT(msg("\"block_out_channels\": [32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,"
                 "32,32,32,32,32,32,32,32,32,32,32,32,32,32,32,32]"),
             Contains("block_out_channels") && Contains("at most 8 entries"));
  CHECK_THAT(msg("\"norm_num_groups\": 0"), Contains("norm_num_groups = 0 is not an integer in [1, 1024]"));
  CHECK_THAT(msg("\"attention_head_dim\": [8, -8]"), Contains("attention_head_dim[1] = -8"));
  CHECK_THAT(msg("\"num_class_embeds\": 1000000000000"), Contains("num_class_embeds = 1000000000000"));
  CHECK_THAT(msg("\"num_train_timesteps\": 4294967296"), Contains("num_train_timesteps = 4294967296"));
  CHECK_THAT(msg("\"downsample_padding\": 7"), Contains("downsample_padding = 7"));
  CHECK_THAT(msg("\"norm_eps\": 1e999"), Contains("cfg.json: not valid JSON (number overflow parsing '1e999')"));
  CHECK_THAT(msg("\"flip_sin_to_cos\": 1"), Contains("flip_sin_to_cos has the wrong type: 1"));
  CHECK_THAT(msg("\"down_block_types\": [1, 2]"), Contains("down_block_types has the wrong type"));
  // The limits themselves are accepted.
  CHECK(parse_unet_config("{\"layers_per_block\": 16, \"num_class_embeds\": 65536}", "cfg.json").layers_per_block == 16);
}

TEST_CASE("hostile: validate_unet_config checks ranges before any arithmetic on them", "[hostile]") {
  UNet2DConfig c;
  c.block_out_channels.assign(40, 32);  // 1 << 39 would overflow an int
  c.down_block_types.assign(40, "DownBlock2D");
  c.up_block_types.assign(40, "UpBlock2D");
  CHECK_THAT(error_of([&] { validate_unet_config(c, "code"); }), Contains("block_out_channels has 40 entries, more than 8"));
  UNet2DConfig d;
  d.layers_per_block = 1'000'000'000;
  CHECK_THAT(error_of([&] { validate_unet_config(d, "code"); }), Contains("layers_per_block 1000000000 is outside [1, 16]"));
  UNet2DConfig e;
  e.norm_eps = std::numeric_limits<double>::quiet_NaN();
  CHECK_THAT(error_of([&] { validate_unet_config(e, "code"); }), Contains("norm_eps must be a positive number"));
}

TEST_CASE("hostile: scheduler config integers are checked conversions", "[hostile]") {
  auto msg = [](const std::string& entry) {
    return error_of([&] { scheduler_config_from_json("{" + entry + "}", "s.json"); });
  };
  CHECK_THAT(msg("\"num_train_timesteps\": 1e12"), Contains("s.json: key \"num_train_timesteps\" = 1000000000000.0 is not an "
                                                            "integer in [1, 1000000]"));
  CHECK_THAT(msg("\"num_train_timesteps\": 18446744073709551615"), Contains("is not an integer in [1, 1000000]"));
  CHECK_THAT(msg("\"steps_offset\": -1"), Contains("steps_offset\" = -1 is not an integer in [0, 1000000]"));
  CHECK_THAT(msg("\"solver_order\": 4294967298"), Contains("1 or 2; third order is not supported"));
  CHECK_THAT(msg("\"beta_end\": 1e400"), Contains("s.json: not valid JSON (number overflow parsing '1e400')"));
  CHECK(scheduler_config_from_json("{\"num_train_timesteps\": 1000.0}", "s.json").num_train_timesteps == 1000);
}

// ---- class 5: bad weights refused on load -----------------------------------------------------

namespace {

// A tiny saved model whose weights file tests rewrite, and the error loading it gives.
struct SavedModel : test::TinyModelDir {
  SavedModel() : TinyModelDir(5) {}
  // Rewrites the weights with `edit` applied to the list of (name, tensor).
  template <typename F>
  void rewrite(F&& edit) const {
    auto all = stored();
    edit(all);
    save_safetensors(weights(), all);
  }
  std::string load_error() const {
    UNet2D other(model->config(), 9);
    return test::error_of([&] { load_unet_weights(other, weights()); });
  }
};

void set_tensor(std::vector<std::pair<std::string, Tensor>>& all, const std::string& name, const Tensor& t) {
  for (auto& [n, v] : all)
    if (n == name) v = t;
}

}  // namespace

TEST_CASE("hostile: NaN and infinite weights are refused naming the tensor", "[hostile][weights]") {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    SavedModel m;
    m.rewrite([&](auto& all) {
      for (auto& [n, v] : all)
        if (n == "mid_block.attentions.0.to_q.weight") v.template data<float>()[v.numel() - 1] = bad;
    });
    std::string msg = m.load_error();
    CHECK_THAT(msg, Contains(m.weights() + ": tensor mid_block.attentions.0.to_q.weight holds a non-finite value"));
    CHECK_THAT(msg, Contains("at element 4095"));
  }
  // All-NaN, the issue's example, in every tensor.
  SavedModel m;
  m.rewrite([](auto& all) {
    for (auto& [n, v] : all) v = Tensor::full(v.shape(), std::numeric_limits<float>::quiet_NaN());
  });
  CHECK_THAT(m.load_error(), Contains("holds a non-finite value (nan at element 0)"));
  // The model that was being loaded into is untouched: load_unet_weights checks before copying.
}

TEST_CASE("hostile: integer tensors where float weights go are refused naming the tensor", "[hostile][weights]") {
  SavedModel m;
  m.rewrite([](auto& all) { set_tensor(all, "conv_out.bias", Tensor::from({1065353216}, {1}, DType::i32)); });
  CHECK_THAT(m.load_error(), Contains("tensor conv_out.bias is stored as I32, an integer type"));
}

TEST_CASE("hostile: the legacy and modern name of one attention projection are refused", "[hostile][weights]") {
  SavedModel m;
  m.rewrite([](auto& all) {
    for (const auto& [n, v] : std::vector<std::pair<std::string, Tensor>>(all))
      if (n == "mid_block.attentions.0.to_q.weight") all.emplace_back("mid_block.attentions.0.query.weight", v);
  });
  CHECK_THAT(m.load_error(), Contains("tensors mid_block.attentions.0.query.weight and "
                                      "mid_block.attentions.0.to_q.weight are the legacy and the modern name"));
  // Legacy names alone still load (older diffusers files).
  SavedModel legacy;
  legacy.rewrite([](auto& all) {
    for (auto& [n, v] : all)
      if (n == "mid_block.attentions.0.to_q.weight") n = "mid_block.attentions.0.query.weight";
  });
  CHECK(legacy.load_error().empty());
}
