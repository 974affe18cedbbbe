// Datasets: tiny IDX files (plain and gzipped) and image folders made here, every bad-input case
// with a message naming the file, the resize/crop rule (checked against PyTorch when present), and
// Fashion-MNIST as Debian installs it. The Batcher is tested in test_batcher.cpp.
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

#include "engine/dataset.h"
#include "engine/image_io.h"
#include "support/temp_dir.h"

using namespace diffuse;
using Catch::Contains;
using test::slurp;
using test::TempDir;
using test::write_bytes;
namespace fs = std::filesystem;

namespace {

std::string be32(uint32_t v) {
  return std::string{char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
}

std::string idx_images(uint32_t n, uint32_t rows, uint32_t cols, uint8_t seed = 0) {
  std::string s = be32(0x803) + be32(n) + be32(rows) + be32(cols);
  for (uint32_t i = 0; i < n * rows * cols; ++i) s.push_back(static_cast<char>((i * 7 + seed) % 256));
  return s;
}

std::string idx_labels(const std::vector<uint8_t>& labels) {
  std::string s = be32(0x801) + be32(static_cast<uint32_t>(labels.size()));
  for (uint8_t l : labels) s.push_back(static_cast<char>(l));
  return s;
}

std::string gzip(const std::string& raw) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&zs, raw.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// A solid-colour 8-bit image file (format from the extension).
void write_solid(const std::string& path, int64_t w, int64_t h, std::vector<uint8_t> rgb) {
  Image8 im{w, h, 3, {}};
  for (int64_t i = 0; i < w * h; ++i) im.pixels.insert(im.pixels.end(), rgb.begin(), rgb.end());
  write_image(path, im);
}

}  // namespace

// ---- IDX -------------------------------------------------------------------------------------

TEST_CASE("IDX images and labels load, gzipped or not, as [-1, 1] pixels", "[dataset]") {
  TempDir dir;
  const std::string raw = idx_images(3, 4, 4);
  write_bytes(dir.file("train-images-idx3-ubyte"), raw);
  write_bytes(dir.file("train-labels-idx1-ubyte"), idx_labels({2, 0, 7}));
  write_bytes(dir.file("gz-images-idx3-ubyte.gz"), gzip(raw));
  write_bytes(dir.file("gz-labels-idx1-ubyte.gz"), gzip(idx_labels({2, 0, 7})));

  for (const char* name : {"train-images-idx3-ubyte", "gz-images-idx3-ubyte.gz"}) {
    Dataset d = load_dataset(dir.file(name), 4, 1);
    CHECK(d.count() == 3);
    CHECK(d.height() == 4);
    CHECK(d.channels() == 1);
    REQUIRE(d.has_labels());  // found next to the images by the MNIST naming
    CHECK(d.label(0) == 2);
    CHECK(d.label(2) == 7);
    CHECK(d.num_classes() == 8);
    Tensor img = d.image(1);
    CHECK(img.shape() == Shape{4, 4, 1});
    auto v = img.to_vector();
    for (int i = 0; i < 16; ++i) CHECK(v[i] == Approx(static_cast<uint8_t>(raw[16 + 16 + i]) / 127.5 - 1.0).margin(1e-6));
  }
  // A directory holding IDX files loads its train-* images.
  Dataset from_dir = load_dataset(dir.path().string(), 4, 3);
  CHECK(from_dir.count() == 3);
  CHECK(from_dir.channels() == 3);  // gray replicated into RGB
  const uint8_t* p = from_dir.pixels(0);
  CHECK((p[0] == p[1] && p[1] == p[2] && p[3] == static_cast<uint8_t>(raw[17])));
  CHECK(from_dir.source().find("train-images-idx3-ubyte") != std::string::npos);

  DatasetOptions no_labels;
  no_labels.load_labels = false;
  no_labels.max_images = 2;
  Dataset d2 = load_dataset(dir.file("train-images-idx3-ubyte"), 4, 1, no_labels);
  CHECK(d2.count() == 2);
  CHECK_FALSE(d2.has_labels());
  CHECK_THROWS_WITH(d2.label(0), Contains("has no labels"));
  // 4x4 → 8x8: bilinear upscaling, no padding.
  CHECK(load_dataset(dir.file("train-images-idx3-ubyte"), 8, 1).image(0).shape() == Shape{8, 8, 1});
}

TEST_CASE("dataset: a missing path names it", "[dataset][bad]") {
  TempDir dir;
  std::string p = dir.file("nothing-here");
  CHECK_THROWS_WITH(load_dataset(p, 32, 1), Contains(p) && Contains("not found"));
  write_solid(dir.file("one.png"), 2, 2, {1, 2, 3});
  CHECK_THROWS_WITH(load_dataset(dir.file("one.png"), 32, 1), Contains(dir.file("one.png")) && Contains("single image"));
}

TEST_CASE("dataset: IDX file with a bad magic number", "[dataset][bad]") {
  TempDir dir;
  std::string p = dir.file("x-images-idx3-ubyte");
  write_bytes(p, idx_labels({1, 2, 3}));  // a labels file where images are expected
  CHECK_THROWS_WITH(load_dataset(p, 4, 1), Contains(p) && Contains("bad magic 0x00000801, expected 0x00000803"));
  write_bytes(p, "\x89PNG\r\n\x1a\n....");
  CHECK_THROWS_WITH(load_dataset(p, 4, 1), Contains(p) && Contains("bad magic"));
  write_bytes(p, be32(0x80D) + be32(1) + be32(1) + be32(1) + "abcd");  // float IDX
  CHECK_THROWS_WITH(load_dataset(p, 4, 1), Contains(p) && Contains("bad magic 0x0000080d"));
}

TEST_CASE("dataset: truncated IDX files", "[dataset][bad]") {
  TempDir dir;
  std::string p = dir.file("t-images-idx3-ubyte");
  std::string full = idx_images(3, 4, 4);
  write_bytes(p, full.substr(0, full.size() - 5));
  CHECK_THROWS_WITH(load_dataset(p, 4, 1),
                    Contains(p) && Contains("truncated: the header describes 3x4x4 = 48 bytes but only 43 follow"));
  write_bytes(p, full.substr(0, 10));
  CHECK_THROWS_WITH(load_dataset(p, 4, 1), Contains(p) && Contains("truncated: the header needs 16 bytes"));
  write_bytes(p, full.substr(0, 2));
  CHECK_THROWS_WITH(load_dataset(p, 4, 1), Contains(p) && Contains("truncated"));
  write_bytes(p, full + "xx");
  CHECK_THROWS_WITH(load_dataset(p, 4, 1), Contains(p) && Contains("2 bytes follow the 3x4x4"));
  write_bytes(p, be32(0x803) + be32(0x10000) + be32(0x10000) + be32(0x10000));  // absurd sizes
  CHECK_THROWS_WITH(load_dataset(p, 4, 1), Contains(p) && Contains("truncated"));
}

TEST_CASE("dataset: truncated or corrupt gzip", "[dataset][bad]") {
  TempDir dir;
  std::string p = dir.file("g-images-idx3-ubyte.gz");
  std::string packed = gzip(idx_images(20, 8, 8));
  write_bytes(p, packed.substr(0, packed.size() / 2));
  CHECK_THROWS_WITH(load_dataset(p, 8, 1), Contains(p) && Contains("truncated gzip"));
  std::string corrupt = packed;
  for (size_t i = 12; i < corrupt.size() - 8; i += 3) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
  write_bytes(p, corrupt);
  CHECK_THROWS_WITH(load_dataset(p, 8, 1), Contains(p) && Contains("gzip"));
}

TEST_CASE("dataset: image and label counts that disagree", "[dataset][bad]") {
  TempDir dir;
  std::string images = dir.file("a-images-idx3-ubyte"), labels = dir.file("a-labels-idx1-ubyte");
  write_bytes(images, idx_images(3, 4, 4));
  write_bytes(labels, idx_labels({1, 2}));
  CHECK_THROWS_WITH(load_dataset(images, 4, 1),
                    Contains(images) && Contains(labels) && Contains("has 3 images but labels file") &&
                        Contains("has 2 labels"));
  write_bytes(labels, idx_images(3, 1, 1));  // wrong kind of file in the labels slot
  CHECK_THROWS_WITH(load_dataset(images, 4, 1), Contains(labels) && Contains("bad magic"));
  DatasetOptions explicit_labels;
  explicit_labels.labels_path = dir.file("elsewhere");
  CHECK_THROWS_WITH(load_dataset(images, 4, 1, explicit_labels), Contains(dir.file("elsewhere")));
}

TEST_CASE("dataset: bad sample size or channel count", "[dataset][bad]") {
  CHECK_THROWS_WITH(load_dataset("fashion-mnist", 32, 2), Contains("in_channels must be 1 (grayscale) or 3"));
  CHECK_THROWS_WITH(load_dataset("fashion-mnist", 0, 1), Contains("sample size must be positive"));
}

// ---- image folders ---------------------------------------------------------------------------

TEST_CASE("image folders: class subfolders give sorted labels, and PNG, BMP and JPEG decode", "[dataset]") {
  TempDir dir;
  fs::create_directories(dir.path() / "dog");
  fs::create_directories(dir.path() / "cat" / "nested");
  fs::create_directories(dir.path() / ".cache");
  fs::create_directories(dir.path() / "empty");
  write_solid(dir.file("dog/b.png"), 4, 4, {255, 0, 0});
  write_solid(dir.file("dog/a.BMP"), 4, 4, {0, 255, 0});
  write_solid(dir.file("cat/nested/c.jpg"), 4, 4, {0, 0, 255});
  write_solid(dir.file(".cache/hidden.png"), 4, 4, {1, 1, 1});
  write_bytes(dir.file("cat/notes.txt"), "not an image");

  Dataset d = load_dataset(dir.path().string(), 4, 3);
  REQUIRE(d.count() == 3);
  CHECK(d.class_names() == std::vector<std::string>{"cat", "dog"});
  CHECK(d.num_classes() == 2);
  CHECK(d.label(0) == 0);  // cat/nested/c.jpg
  CHECK(d.label(1) == 1);  // dog/a.BMP
  CHECK(d.label(2) == 1);  // dog/b.png
  const uint8_t* jpg = d.pixels(0);
  CHECK((jpg[0] < 10 && jpg[1] < 10 && jpg[2] > 245));
  CHECK((d.pixels(1)[0] == 0 && d.pixels(1)[1] == 255 && d.pixels(1)[2] == 0));
  CHECK((d.pixels(2)[0] == 255 && d.pixels(2)[1] == 0));
  CHECK(d.image(2).to_vector()[0] == 1.0);
  CHECK(d.image(2).to_vector()[1] == -1.0);

  Dataset gray = load_dataset(dir.path().string(), 2, 1);
  CHECK(gray.channels() == 1);
  CHECK(gray.height() == 2);
  CHECK(std::abs(int(gray.pixels(2)[0]) - 77) <= 1);  // stb's luma of pure red: 255·77/256
}

TEST_CASE("image folders: a flat folder has no labels, and sizes are resized and centre-cropped", "[dataset]") {
  TempDir dir;
  // 8 wide, 4 tall: left half black, right half white, with a grey 2-column band in the middle.
  Image8 wide{8, 4, 1, {}};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 8; ++x) wide.pixels.push_back(x < 3 ? 0 : x < 5 ? 100 : 255);
  write_image(dir.file("wide.png"), wide);
  write_solid(dir.file("small.png"), 2, 2, {60, 60, 60});
  Dataset d = load_dataset(dir.path().string(), 4, 1);
  CHECK_FALSE(d.has_labels());
  REQUIRE(d.count() == 2);
  // small.png (sorted first): upscaled, still solid.
  for (int i = 0; i < 16; ++i) CHECK(d.pixels(0)[i] == 60);
  // wide.png: the shorter side is already 4, so no resampling; the centre 4 columns (2..5) stay.
  const uint8_t* w = d.pixels(1);
  for (int y = 0; y < 4; ++y) CHECK(std::vector<uint8_t>(w + y * 4, w + y * 4 + 4) == std::vector<uint8_t>{0, 100, 100, 255});
}

TEST_CASE("resize_to_square matches bilinear with half-pixel centres and averages when shrinking", "[dataset]") {
  // A 2x2 image whose rows are [0, 255], enlarged to 4x4.
  const uint8_t img[4] = {0, 255, 0, 255};
  auto up = resize_to_square(img, 2, 2, 1, 4);
  CHECK(std::vector<uint8_t>(up.begin(), up.begin() + 4) == std::vector<uint8_t>{0, 64, 191, 255});
  // Shrinking 4 → 2 with the triangle filter widened 2x: weights (.75, .75, .25)/1.75 at the edge.
  const uint8_t line[16] = {0, 100, 200, 255, 0, 100, 200, 255, 0, 100, 200, 255, 0, 100, 200, 255};
  auto down = resize_to_square(line, 4, 4, 1, 2);
  CHECK(int(down[0]) == int(std::lround((0 * .75 + 100 * .75 + 200 * .25) / 1.75)));
  CHECK(int(down[1]) == int(std::lround((100 * .25 + 200 * .75 + 255 * .75) / 1.75)));
  // A constant image stays constant at any scale; output is always S x S x C.
  std::vector<uint8_t> flat(28 * 28 * 3, 77);
  auto big = resize_to_square(flat.data(), 28, 28, 3, 32);
  CHECK(big.size() == 32 * 32 * 3);
  CHECK(std::all_of(big.begin(), big.end(), [](uint8_t v) { return v == 77; }));
  auto small = resize_to_square(flat.data(), 28, 28, 3, 5);
  CHECK(std::all_of(small.begin(), small.end(), [](uint8_t v) { return v == 77; }));
}

TEST_CASE("resize_to_square agrees with PyTorch's antialiased bilinear resize and centre crop", "[dataset][python][slow]") {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
    WARN("no PyTorch at /usr/bin/python3: skipping the resize cross-check");
    return;
  }
  TempDir dir;
  struct Case { int64_t h, w, s; };
  const Case cases[] = {{37, 23, 16}, {23, 37, 16}, {28, 28, 32}, {50, 70, 9}, {10, 10, 27}};
  std::string in, ours;
  uint32_t state = 12345;
  for (const Case& c : cases) {
    std::vector<uint8_t> img(static_cast<size_t>(c.h * c.w * 3));
    for (auto& v : img) v = static_cast<uint8_t>((state = state * 1664525u + 1013904223u) >> 24);
    in.append(img.begin(), img.end());
    auto out = resize_to_square(img.data(), c.h, c.w, 3, c.s);
    ours.append(out.begin(), out.end());
  }
  write_bytes(dir.file("in.bin"), in);
  write_bytes(dir.file("resize.py"), R"(import sys, torch, torch.nn.functional as F
b = open(sys.argv[1] + "/in.bin", "rb").read()
out, o = bytearray(), 0
for h, w, s in [(37, 23, 16), (23, 37, 16), (28, 28, 32), (50, 70, 9), (10, 10, 27)]:
    img = torch.tensor(list(b[o:o + h * w * 3]), dtype=torch.float32).view(h, w, 3).permute(2, 0, 1)[None]
    o += h * w * 3
    nh, nw = (s, int(s * w / h)) if h < w else (int(s * h / w), s)
    r = F.interpolate(img, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0].permute(1, 2, 0)
    top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
    out += bytes(r[top:top + s, left:left + s].round().clamp(0, 255).to(torch.uint8).flatten().tolist())
open(sys.argv[1] + "/torch.bin", "wb").write(out)
)");
  REQUIRE(std::system(("/usr/bin/python3 " + dir.file("resize.py") + " " + dir.path().string()).c_str()) == 0);
  std::string theirs = slurp(dir.file("torch.bin"));
  REQUIRE(theirs.size() == ours.size());
  int64_t off_by_one = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    int diff = std::abs(int(static_cast<uint8_t>(ours[i])) - int(static_cast<uint8_t>(theirs[i])));
    CHECK(diff <= 1);  // rounding ties: PyTorch accumulates differently
    off_by_one += diff;
  }
  CHECK(off_by_one < static_cast<int64_t>(ours.size()) / 50);
}

TEST_CASE("image folders: no images at all", "[dataset][bad]") {
  TempDir dir;
  write_bytes(dir.file("readme.txt"), "hello");
  fs::create_directories(dir.path() / "sub");
  CHECK_THROWS_WITH(load_dataset(dir.path().string(), 8, 3), Contains(dir.path().string()) && Contains("has no images"));
}

TEST_CASE("image folders: an unreadable image names the file", "[dataset][bad]") {
  TempDir dir;
  write_solid(dir.file("good.png"), 4, 4, {1, 2, 3});
  write_bytes(dir.file("broken.png"), "\x89PNG\r\n\x1a\n garbage");
  CHECK_THROWS_WITH(load_dataset(dir.path().string(), 4, 3), Contains(dir.file("broken.png")) && Contains("cannot decode"));
}

TEST_CASE("image folders: top-level images mixed with class folders", "[dataset][bad]") {
  TempDir dir;
  fs::create_directories(dir.path() / "a");
  write_solid(dir.file("a/x.png"), 4, 4, {1, 2, 3});
  write_solid(dir.file("stray.png"), 4, 4, {1, 2, 3});
  CHECK_THROWS_WITH(load_dataset(dir.path().string(), 4, 3), Contains(dir.file("stray.png")) && Contains("mixes"));
}

// ---- Fashion-MNIST as installed by Debian ---------------------------------------------------

TEST_CASE("Fashion-MNIST loads 60000 labelled 28x28 images", "[dataset][fashion]") {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
    WARN("dataset-fashion-mnist is not installed: skipping");
    return;
  }
  Dataset d = load_dataset("fashion-mnist", 28, 1);
  REQUIRE(d.count() == 60000);
  CHECK(d.height() == 28);
  CHECK(d.channels() == 1);
  REQUIRE(d.has_labels());
  CHECK(d.num_classes() == 10);
  std::vector<int64_t> per_class(10, 0);
  for (int64_t i = 0; i < d.count(); ++i) ++per_class[static_cast<size_t>(d.label(i))];
  CHECK(per_class == std::vector<int64_t>(10, 6000));
  CHECK(d.label(0) == 9);  // the first training image is an ankle boot
  double sum = 0;
  for (int64_t i = 0; i < d.count(); i += 7)
    for (int p = 0; p < 28 * 28; ++p) sum += d.pixels(i)[p];
  double mean = sum / (((d.count() + 6) / 7) * 28.0 * 28.0);
  CHECK(mean > 0.2 * 255);
  CHECK(mean < 0.4 * 255);

  DatasetOptions few;
  few.max_images = 16;
  Dataset small = load_dataset("fashion-mnist-test", 32, 3, few);
  CHECK(small.count() == 16);
  CHECK(small.image(0).shape() == Shape{32, 32, 3});
}
