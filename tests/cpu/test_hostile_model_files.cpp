// Model files written by a hostile user (issue 13, classes 1, 3 and 5): deep JSON, huge or
// non-UTF-8 values quoted in errors, integers that do not fit, non-finite weights, dtypes of the
// wrong kind, legacy and modern names of one tensor. Each must end as one bounded, UTF-8-clean
// diffuse::Error naming the file — never a crash, a wrapped number or a silently accepted value.
#include <catch2/catch.hpp>
#include <string>

#include "diffuse/error.h"
#include "nn/json_input.h"
#include "support/temp_dir.h"

using namespace diffuse;
using Catch::Contains;

namespace {

std::string deep_array(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// The message of the diffuse::Error `f` throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

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
}
