// safetensors: round trips for every dtype, the exact bytes of the format, one test per kind of
// corrupt file (each message must name the file and the fault), atomic writes that leave the
// destination untouched on failure, and a cross-check with files written/read by plain Python.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "nn/atomic_file.h"
#include "nn/safetensors.h"
#include "support/model_files.h"
#include "support/temp_dir.h"

using namespace diffuse;
using Catch::Contains;
using test::le64;
using test::slurp;
using test::st_bytes;
using test::TempDir;
using test::write_bytes;

namespace {

std::string floats(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), std::data(v), s.size());
  return s;
}

void expect_open_error(const std::string& path, const std::string& what) {
  CHECK_THROWS_WITH(SafetensorsFile::open(path), Contains(path) && Contains(what));
}

// Writes `header` + `data` to a file and expects open() to fail with `what`.
void expect_bad(const std::string& header, const std::string& data, const std::string& what) {
  TempDir dir;
  std::string p = dir.file("bad.safetensors");
  write_bytes(p, st_bytes(header, data));
  expect_open_error(p, what);
}

}  // namespace

TEST_CASE("safetensors round-trips every dtype, shape and metadata", "[safetensors]") {
  TempDir dir;
  std::string p = dir.file("model.safetensors");
  Tensor a = Tensor::randn({2, 3, 4}, 1);
  Tensor b = Tensor::from({1.5, -2.25, 1e-3}, {3}, DType::bf16);
  Tensor c = Tensor::from({3.141592653589793, -1e300}, {2}, DType::f64);
  Tensor d = Tensor::from({-7, 0, 2147483647}, {3}, DType::i32);
  Tensor e = Tensor::from({-9007199254740991.0, 42}, {2}, DType::i64);  // 2^53 - 1: not an f32
  Tensor scalar = Tensor::from({5}, {});
  Tensor empty = Tensor::empty({0, 3});
  save_safetensors(p, {{"w.a", a}, {"b", b}, {"c", c}, {"d", d}, {"e", e}, {"s", scalar}, {"z", empty}},
                   {{"format", "pt"}, {"note", "ünïcode"}});

  SafetensorsFile f = SafetensorsFile::open(p);
  CHECK(f.names() == std::vector<std::string>{"b", "c", "d", "e", "s", "w.a", "z"});
  CHECK(f.contains("w.a"));
  CHECK_FALSE(f.contains("w"));
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"note", "ünïcode"}});
  CHECK(f.dtype("b") == "BF16");
  CHECK(f.dtype("e") == "I64");
  CHECK(f.shape("w.a") == Shape{2, 3, 4});
  CHECK(f.shape("s").empty());
  CHECK(f.shape("z") == Shape{0, 3});
  CHECK(f.get("w.a").to_vector() == a.to_vector());
  CHECK(f.get("b", DType::bf16).dtype() == DType::bf16);
  CHECK(f.get("b").to_vector() == b.to_vector());
  CHECK(f.get("c", DType::f64).to_vector() == c.to_vector());
  CHECK(f.get("d", DType::i32).to_vector() == d.to_vector());
  CHECK(f.get("e", DType::i64).data<int64_t>()[0] == -9007199254740991LL);  // not rounded through f32
  CHECK(f.get("s").item() == 5);
  CHECK(f.get("z").numel() == 0);
  CHECK(f.get("d").to_vector() == std::vector<double>{-7, 0, 2147483648.0});  // i32 → f32 rounds
  CHECK_THROWS_WITH(f.get("c", DType::i64), Contains(p) && Contains("'c' is F64") && Contains("as i64"));
  CHECK_THROWS_WITH(f.get("nope"), Contains(p) && Contains("no tensor named 'nope'"));

  // Every tensor starts aligned to its element size (header padded to 8, big types first).
  for (const auto& name : f.names()) {
    size_t n = 0;
    const unsigned char* raw = f.raw_bytes(name, &n);
    size_t elem = f.dtype(name) == "BF16" ? 2 : (f.dtype(name) == "F32" || f.dtype(name) == "I32") ? 4 : 8;
    CHECK(reinterpret_cast<uintptr_t>(raw) % elem == 0);
  }
  // Copies of the file object keep the mapping alive.
  SafetensorsFile copy = f;
  f = SafetensorsFile::open(p);
  CHECK(copy.get("s").item() == 5);
}

TEST_CASE("safetensors writer produces the reference byte layout", "[safetensors]") {
  TempDir dir;
  std::string p = dir.file("one.safetensors");
  save_safetensors(p, {{"attn.0", Tensor::from({0, 1, 2, 3, 4, 5}, {1, 2, 3})}});
  std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  CHECK(header.size() % 8 == 0);
  CHECK(slurp(p) == st_bytes(header, floats({0, 1, 2, 3, 4, 5})));

  // Largest dtypes first, then by name; metadata first; empty file is "{}" padded.
  save_safetensors(p, {{"b16", Tensor::zeros({1}, DType::bf16)}, {"a32", Tensor::zeros({1})},
                       {"z64", Tensor::zeros({1}, DType::f64)}, {"i64", Tensor::zeros({1}, DType::i64)}},
                   {{"k", "v"}});
  std::string text = slurp(p);
  std::string expect_header = R"({"__metadata__":{"k":"v"},"i64":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
                              R"("z64":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},)"
                              R"("a32":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},)"
                              R"("b16":{"dtype":"BF16","shape":[1],"data_offsets":[20,22]}})";
  CHECK(text.substr(8, expect_header.size()) == expect_header);
  save_safetensors(p, {});
  CHECK(slurp(p) == st_bytes("{}      "));
  CHECK(SafetensorsFile::open(p).size() == 0);
}

TEST_CASE("safetensors decodes F16 exactly, including subnormals and infinities", "[safetensors]") {
  TempDir dir;
  std::string p = dir.file("half.safetensors");
  const uint16_t bits[] = {0x3C00, 0xC000, 0x3800, 0x0001, 0x7BFF, 0x7C00, 0x8000, 0x03FF};
  std::string data(reinterpret_cast<const char*>(bits), sizeof bits);
  write_bytes(p, st_bytes(R"({"h":{"dtype":"F16","shape":[8],"data_offsets":[0,16]}})", data));
  SafetensorsFile f = SafetensorsFile::open(p);
  auto v = f.get("h").to_vector();
  CHECK(v[0] == 1.0);
  CHECK(v[1] == -2.0);
  CHECK(v[2] == 0.5);
  CHECK(v[3] == std::ldexp(1.0, -24));
  CHECK(v[4] == 65504.0);
  CHECK(std::isinf(v[5]));
  CHECK((v[6] == 0.0 && std::signbit(v[6])));
  CHECK(v[7] == 1023 * std::ldexp(1.0, -24));
  CHECK(std::isnan(f16_to_float(0x7E00)));
  CHECK(f.get("h", DType::f64).dtype() == DType::f64);
}

// ---- corrupt files: one test per fault ------------------------------------------------------

TEST_CASE("safetensors: a missing file names the path", "[safetensors][bad]") {
  TempDir dir;
  expect_open_error(dir.file("absent.safetensors"), "No such file");
}

TEST_CASE("safetensors: a directory is not a safetensors file", "[safetensors][bad]") {
  TempDir dir;
  expect_open_error(dir.path().string(), "not a regular file");
}

TEST_CASE("safetensors: a file shorter than 8 bytes", "[safetensors][bad]") {
  TempDir dir;
  std::string p = dir.file("short.safetensors");
  write_bytes(p, "abc");
  expect_open_error(p, "3 bytes, too short");
  write_bytes(p, "");
  expect_open_error(p, "0 bytes, too short");
}

TEST_CASE("safetensors: header length past the end of the file", "[safetensors][bad]") {
  TempDir dir;
  std::string p = dir.file("long.safetensors");
  write_bytes(p, le64(1000) + "{}");
  expect_open_error(p, "header length 1000 runs past the end of the file (10 bytes)");
}

TEST_CASE("safetensors: absurd header length", "[safetensors][bad]") {
  TempDir dir;
  std::string p = dir.file("absurd.safetensors");
  write_bytes(p, le64(0xFFFFFFFFFFFFFFFFull) + "{}");
  expect_open_error(p, "is absurd");
  write_bytes(p, le64(100'000'001) + "{}");
  expect_open_error(p, "header length 100000001 is absurd");
}

TEST_CASE("safetensors: header that is not JSON", "[safetensors][bad]") {
  expect_bad("{\"a\": ", "", "header: not valid JSON");
  expect_bad("{\"a\":1} trailing", "", "header: not valid JSON");
  expect_bad(std::string("{\"\xff\xfe\":{}}"), "", "header: not valid JSON");  // invalid UTF-8
}

TEST_CASE("safetensors: header that is not a JSON object", "[safetensors][bad]") {
  expect_bad("[1, 2, 3]", "", "header is not a JSON object");
  expect_bad("\"text\"", "", "header is not a JSON object");
}

TEST_CASE("safetensors: entry that is not an object", "[safetensors][bad]") {
  expect_bad(R"({"w": [1, 2]})", "", "tensor 'w' is not a JSON object");
}

TEST_CASE("safetensors: entries missing fields", "[safetensors][bad]") {
  expect_bad(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "abcd", "tensor 'w' has no \"dtype\"");
  expect_bad(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "abcd", "tensor 'w' has no \"shape\"");
  expect_bad(R"({"w":{"dtype":"F32","shape":[1]}})", "abcd", "tensor 'w' has no \"data_offsets\"");
}

TEST_CASE("safetensors: entries with fields of the wrong type", "[safetensors][bad]") {
  expect_bad(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "abcd", "dtype that is not a string");
  expect_bad(R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", "abcd", "shape that is not an array");
  expect_bad(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "abcd", "not a non-negative integer");
  expect_bad(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "abcd", "data_offsets must be [begin, end]");
  expect_bad(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":{"a":0}}})", "abcd", "data_offsets must be");
  expect_bad(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}})", "abcd", "data_offsets end is not");
}

TEST_CASE("safetensors: unsupported or unknown dtypes are rejected by name", "[safetensors][bad]") {
  expect_bad(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "abcd", "dtype 'U8'; diffuse reads");
  expect_bad(R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", "abcd", "dtype 'F8_E4M3'");
  expect_bad(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", "abcd", "dtype 'f32'");
}

TEST_CASE("safetensors: negative dimensions", "[safetensors][bad]") {
  expect_bad(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd", "dimension is negative (-1)");
}

TEST_CASE("safetensors: negative offsets", "[safetensors][bad]") {
  expect_bad(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "abcd", "data_offsets begin is negative");
}

TEST_CASE("safetensors: shapes whose byte count overflows", "[safetensors][bad]") {
  expect_bad(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "abcd",
             "overflows a 64-bit byte count");
}

TEST_CASE("safetensors: byte count different from numel times dtype size", "[safetensors][bad]") {
  expect_bad(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd",
             "tensor 'w' is F32[2], which needs 8 bytes, but data_offsets [0, 4] hold 4");
  expect_bad(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,4]}})", "abcd", "needs 8 bytes");
}

TEST_CASE("safetensors: offsets past the end of the data section", "[safetensors][bad]") {
  expect_bad(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "abcd",
             "data_offsets [0, 8] run past the end of the data section (4 bytes)");
}

TEST_CASE("safetensors: offsets that end before they begin", "[safetensors][bad]") {
  expect_bad(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "abcd", "end before they begin");
}

TEST_CASE("safetensors: overlapping tensors", "[safetensors][bad]") {
  // Listed out of order on purpose: the check sorts by offset first.
  expect_bad(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
             "abcdefghijkl", "tensors 'a' and 'b' overlap");
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
             "abcd", "overlap");
}

TEST_CASE("safetensors: holes in the data section", "[safetensors][bad]") {
  // The reference implementation requires the tensors to index the whole byte buffer.
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
             "abcdefghijkl", "bytes [4, 8) of the data section belong to no tensor (between 'a' and 'b')");
  expect_bad(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "abcdefgh",
             "bytes [0, 4) of the data section belong to no tensor (before 'b')");
}

TEST_CASE("safetensors: trailing bytes after the last tensor", "[safetensors][bad]") {
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcdXY",
             "the data section has 6 bytes but the tensors cover only 4");
  expect_bad("{}", "x", "the data section has 1 bytes but the tensors cover only 0");
}

TEST_CASE("safetensors: bad __metadata__", "[safetensors][bad]") {
  expect_bad(R"({"__metadata__":["a"]})", "", "__metadata__ is not a JSON object");
  expect_bad(R"({"__metadata__":{"epoch":3}})", "", "__metadata__ value of 'epoch' is not a string (3)");
}

TEST_CASE("safetensors: the same tensor named twice", "[safetensors][bad]") {
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
             "abcd", "header: key \"a\" appears twice");
}

TEST_CASE("safetensors: extra fields in an entry are ignored, as by the reference reader", "[safetensors]") {
  TempDir dir;
  std::string p = dir.file("extra.safetensors");
  write_bytes(p, st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"note":1}})", floats({2.5f})));
  CHECK(SafetensorsFile::open(p).get("a").item() == 2.5);
}

// ---- writes: atomic, and nothing damaged on failure -----------------------------------------

TEST_CASE("safetensors writer refuses bad input and leaves the existing file alone", "[safetensors][atomic]") {
  TempDir dir;
  std::string p = dir.file("keep.safetensors");
  save_safetensors(p, {{"x", Tensor::from({1, 2}, {2})}});
  const std::string before = slurp(p);
  CHECK_THROWS_WITH(save_safetensors(p, {{"x", Tensor::zeros({1})}, {"x", Tensor::zeros({1})}}),
                    Contains(p) && Contains("tensor 'x' appears twice"));
  CHECK_THROWS_WITH(save_safetensors(p, {{"__metadata__", Tensor::zeros({1})}}),
                    Contains(p) && Contains("reserved name"));
  CHECK_THROWS_WITH(save_safetensors(p, {{"u", Tensor()}}), Contains(p) && Contains("'u' is undefined"));
  CHECK_THROWS_WITH(save_safetensors(p, {{std::string("bad\xff"), Tensor::zeros({1})}}), Contains(p));
  CHECK(slurp(p) == before);
  CHECK(dir.entries() == std::vector<std::string>{"keep.safetensors"});
}

TEST_CASE("safetensors writer: a failed rename removes the temporary and damages nothing", "[safetensors][atomic]") {
  TempDir dir;
  std::string target = dir.file("occupied");
  std::filesystem::create_directory(target);
  write_bytes(dir.file("occupied/inside.txt"), "keep me");
  CHECK_THROWS_WITH(save_safetensors(target, {{"x", Tensor::zeros({4})}}), Contains(target) && Contains("rename"));
  CHECK(slurp(dir.file("occupied/inside.txt")) == "keep me");
  CHECK(dir.entries() == std::vector<std::string>{"occupied"});

  std::string nowhere = dir.file("no/such/dir/model.safetensors");
  CHECK_THROWS_WITH(save_safetensors(nowhere, {{"x", Tensor::zeros({4})}}), Contains(nowhere));
}

TEST_CASE("AtomicFile: nothing appears until commit, an abandoned write leaves the old file", "[atomic]") {
  TempDir dir;
  std::string p = dir.file("state.json");
  write_file_atomic(p, std::string_view("{\"step\": 1}"));
  CHECK(read_file(p) == "{\"step\": 1}");
  {
    AtomicFile f(p);
    f.write("{\"step\": 2, partial");
    CHECK(read_file(p) == "{\"step\": 1}");
    CHECK(std::filesystem::exists(f.temp_path()));
    CHECK(f.temp_path().find(p + ".tmp-") == 0);
  }  // destroyed without commit, as when an exception unwinds
  CHECK(read_file(p) == "{\"step\": 1}");
  CHECK(dir.entries() == std::vector<std::string>{"state.json"});

  try {
    AtomicFile f(p);
    f.write("half");
    throw std::runtime_error("crash mid-write");
  } catch (const std::runtime_error&) {
  }
  CHECK(read_file(p) == "{\"step\": 1}");
  CHECK(dir.entries() == std::vector<std::string>{"state.json"});

  AtomicFile g(p);
  std::string big(3 << 20, 'x');  // larger than the write buffer
  g.write("head");
  g.write(big);
  g.commit();
  CHECK(read_file(p) == "head" + big);
  CHECK_THROWS_WITH(g.write("more"), Contains(p) && Contains("already committed"));
  CHECK_THROWS_WITH(read_file(dir.file("missing")), Contains(dir.file("missing")));
}

TEST_CASE("safetensors interoperates with files written and read by plain Python", "[safetensors][python]") {
  if (std::system("/usr/bin/python3 -c 'import json, struct' >/dev/null 2>&1") != 0) {
    WARN("no /usr/bin/python3: skipping the Python cross-check");
    return;
  }
  TempDir dir;
  std::string from_py = dir.file("py.safetensors"), from_us = dir.file("us.safetensors");
  // Python writes with struct + json the way the reference writer lays a file out.
  std::string script = dir.file("w.py");
  write_bytes(script, R"(import json, struct, sys
a = [0.5, -1.25, 3.0, 7.75, -0.0, 1e-3]
h = {"__metadata__": {"format": "pt"},
     "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
     "n": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}
t = json.dumps(h).encode()
t += b" " * ((8 - len(t) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(t)) + t + struct.pack("<6f", *a) + struct.pack("<2q", -3, 1 << 40))
)");
  REQUIRE(std::system(("/usr/bin/python3 " + script + " " + from_py).c_str()) == 0);
  SafetensorsFile f = SafetensorsFile::open(from_py);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.shape("w") == Shape{2, 3});
  CHECK(f.get("w").to_vector() == std::vector<double>{0.5, -1.25, 3.0, 7.75, -0.0, static_cast<double>(1e-3f)});
  CHECK(f.get("n", DType::i64).to_vector() == std::vector<double>{-3, 1099511627776.0});

  // Python reads what we write.
  save_safetensors(from_us, {{"x", Tensor::from({1, -2, 3.5}, {3})}, {"y", Tensor::from({9}, {1}, DType::f64)}});
  std::string check = dir.file("r.py");
  write_bytes(check, R"(import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
d = b[8 + n:]
x, y = h["x"], h["y"]
assert x["dtype"] == "F32" and x["shape"] == [3], x
assert list(struct.unpack("<3f", d[x["data_offsets"][0]:x["data_offsets"][1]])) == [1.0, -2.0, 3.5]
assert struct.unpack("<d", d[y["data_offsets"][0]:y["data_offsets"][1]])[0] == 9.0
assert n % 8 == 0 and max(x["data_offsets"][1], y["data_offsets"][1]) == len(d)
)");
  CHECK(std::system(("/usr/bin/python3 " + check + " " + from_us).c_str()) == 0);
}

TEST_CASE("safetensors: float_to_f16 inverts f16_to_float and rounds to nearest even", "[safetensors][f16]") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const bool nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
    if (nan) continue;
    REQUIRE(float_to_f16(f16_to_float(static_cast<uint16_t>(h))) == h);
  }
  CHECK(float_to_f16(1.0f + 0x1p-11f) == 0x3c00);           // halfway, to even (1.0)
  CHECK(float_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);       // halfway, to even (up)
  CHECK(float_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01);  // past halfway
  CHECK(float_to_f16(65504.0f) == 0x7bff);
  CHECK(float_to_f16(65520.0f) == 0x7c00);  // rounds beyond the largest half
  CHECK(float_to_f16(0x1p-25f) == 0x0000);  // halfway to the smallest subnormal, to even (0)
  CHECK(float_to_f16(0x1p-25f + 0x1p-30f) == 0x0001);
  CHECK(float_to_f16(-0.0f) == 0x8000);
  CHECK(std::isnan(f16_to_float(float_to_f16(std::nanf("")))));
}

TEST_CASE("safetensors: f32 tensors written as F16 read back rounded, out-of-range values refused",
          "[safetensors][f16]") {
  TempDir dir;
  const std::string p = dir.file("h.safetensors");
  Tensor w = Tensor::from({0.1, -2.5, 1e-6, 60000}, {2, 2});
  Tensor labels = Tensor::from({3, 4}, {2}, DType::i64);
  save_safetensors_f16(p, {{"w", w}, {"labels", labels}});
  SafetensorsFile f = SafetensorsFile::open(p);
  CHECK(f.dtype("w") == "F16");
  CHECK(f.dtype("labels") == "I64");  // only f32 tensors change
  Tensor back = f.get("w");
  for (int i = 0; i < 4; ++i) CHECK(back.data<float>()[i] == f16_to_float(float_to_f16(w.data<float>()[i])));
  const std::string q = dir.file("big.safetensors");
  CHECK_THROWS_WITH(save_safetensors_f16(q, {{"w", Tensor::from({1e5}, {1})}}),
                    Contains(q) && Contains("tensor 'w' holds 100000") && Contains("beyond the F16 range"));
  CHECK_FALSE(std::filesystem::exists(q));
}
