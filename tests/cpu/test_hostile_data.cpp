// Issue 13's hostile images and datasets (classes 2 and 4 for data): small files that declare huge
// sizes are refused from their headers, naming the file and the size, before anything of that
// size is allocated. The allocation bounds are proved in a child process whose address space is
// capped 384 MB above what it already uses: there, the old code's allocations (512 MB to 8 GB for
// these files) end in std::bad_alloc, while the refusals below need next to nothing.
#include <sys/resource.h>
#include <zlib.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "engine/dataset.h"
#include "engine/image_io.h"
#include <stb/stb_image.h>  // only to show which decoders are compiled in
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using Catch::Contains;
using test::TempDir;
using test::write_bytes;
namespace fs = std::filesystem;

namespace {

std::string le(uint32_t v, int bytes) {
  std::string s;
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

std::string be32(uint32_t v) {
  return std::string{char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
}

// A BMP header (BITMAPINFOHEADER, 24 bits, uncompressed) declaring width x height, padded with
// zero bytes to `total` bytes: the pixel data it declares is mostly missing.
std::string bmp(int32_t width, int32_t height, size_t total) {
  std::string s = "BM" + le(static_cast<uint32_t>(total), 4) + le(0, 4) + le(54, 4);
  s += le(40, 4) + le(static_cast<uint32_t>(width), 4) + le(static_cast<uint32_t>(height), 4) + le(1, 2) + le(24, 2) +
       le(0, 4) + le(0, 4) + le(2835, 4) + le(2835, 4) + le(0, 4) + le(0, 4);
  s.resize(total, '\0');
  return s;
}

// An uncompressed true-colour TGA (no magic bytes at all), 67 bytes, declaring width x height.
std::string tga(uint16_t width, uint16_t height) {
  std::string s{0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  s += le(width, 2) + le(height, 2) + std::string{24, 0};
  s.resize(67, '\x7f');
  return s;
}

std::string zlib_compress(const std::string& raw) {
  uLongf n = compressBound(raw.size());
  std::string out(n, '\0');
  REQUIRE(compress2(reinterpret_cast<Bytef*>(out.data()), &n, reinterpret_cast<const Bytef*>(raw.data()), raw.size(), 9) ==
          Z_OK);
  out.resize(n);
  return out;
}

std::string png_chunk(const std::string& type, const std::string& data) {
  std::string body = type + data;
  const uLong crc = crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()));
  return be32(static_cast<uint32_t>(data.size())) + body + be32(static_cast<uint32_t>(crc));
}

// A 1x1 gray PNG whose IDAT inflates to `inflated` zero bytes instead of the 2 it needs.
std::string png_bomb(size_t inflated) {
  std::string ihdr = be32(1) + be32(1) + std::string{8, 0, 0, 0, 0};
  return std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) +
         png_chunk("IDAT", zlib_compress(std::string(inflated, '\0'))) + png_chunk("IEND", "");
}

// A gzip file holding `head` then `zeros` zero bytes, deflated as a stream (no big buffer here).
void write_gzip(const std::string& path, const std::string& head, size_t zeros) {
  gzFile f = gzopen(path.c_str(), "wb1");  // fast; zeros still shrink ~500x
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, head.data(), static_cast<unsigned>(head.size())) == static_cast<int>(head.size()));
  const std::string block(1 << 20, '\0');
  for (size_t left = zeros; left > 0;) {
    const unsigned n = static_cast<unsigned>(std::min(left, block.size()));
    REQUIRE(gzwrite(f, block.data(), n) == static_cast<int>(n));
    left -= n;
  }
  REQUIRE(gzclose(f) == Z_OK);
}

std::string idx3_header(uint32_t n, uint32_t rows, uint32_t cols) { return be32(0x803) + be32(n) + be32(rows) + be32(cols); }

// This process's peak resident set so far (getrusage), in KiB.
long peak_rss_kib() {
  rusage u{};
  REQUIRE(getrusage(RUSAGE_SELF, &u) == 0);
  return u.ru_maxrss;
}

// Caps this process's address space at what it maps now plus `extra` bytes.
void cap_address_space(size_t extra) {
  std::ifstream status("/proc/self/status");
  std::string line;
  size_t vm_kb = 0;
  while (std::getline(status, line))
    if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stoull(line.substr(7));
  REQUIRE(vm_kb > 0);
  const rlimit cap{vm_kb * 1024 + extra, vm_kb * 1024 + extra};
  REQUIRE(setrlimit(RLIMIT_AS, &cap) == 0);
}

}  // namespace

TEST_CASE("the 117-byte BMP declaring 6 x 16.5 M pixels is refused from its header, naming the file", "[hostile]") {
  TempDir dir;
  const std::string p = dir.file("tall.bmp");
  write_bytes(p, bmp(6, 16'500'000, 117));
  CHECK_THROWS_WITH(read_image(p), Contains(p) && Contains("6x16500000 = 99000000 pixels") &&
                                       Contains("more than the 67108864 allowed"));
  // Within the pixel limit but missing its pixel data: stb would read zeros past the end.
  write_bytes(p, bmp(4000, 4000, 117));
  CHECK_THROWS_WITH(read_image(p), Contains(p) && Contains("truncated BMP") && Contains("48000000 bytes of pixel data") &&
                                       Contains("the file is 117 bytes"));
  // An unknown compression value: stb would decode it as uncompressed, zeros past the end (a
  // 108-byte fuzz input took 30 s that way). Refused, as RLE is.
  std::string odd = bmp(7, 8'519'683, 108);
  odd.replace(30, 4, le(0xdc9604be, 4));
  write_bytes(p, odd);
  CHECK_THROWS_WITH(read_image(p), Contains(p) && Contains("BMP compression 3700819134 is not supported"));
  // A whole small BMP still reads.
  Image8 im{3, 2, 3, std::vector<uint8_t>(18, 200)};
  write_image(dir.file("ok.bmp"), im);
  CHECK(read_image(dir.file("ok.bmp")).pixels == im.pixels);
}

TEST_CASE("a file's content must be the format its extension names, and only PNG, JPEG and BMP decode", "[hostile]") {
  TempDir dir;
  const std::string p = dir.file("x.png");
  write_bytes(p, tga(60000, 6000));  // a 67-byte TGA named .png
  CHECK_THROWS_WITH(read_image(p), Contains(p) && Contains("the name says PNG but the content is not PNG, JPEG or BMP") &&
                                       Contains("starts with 00 00 02 00"));
  Image8 im{2, 2, 3, std::vector<uint8_t>(12, 9)};
  write_image(dir.file("real.jpg"), im);
  fs::copy_file(dir.file("real.jpg"), dir.file("jpeg.png"));
  CHECK_THROWS_WITH(read_image(dir.file("jpeg.png")), Contains(dir.file("jpeg.png")) && Contains("the content is JPEG"));
  write_image(dir.file("real.bmp"), im);
  fs::copy_file(dir.file("real.bmp"), dir.file("bmp.jpeg"));
  CHECK_THROWS_WITH(read_image(dir.file("bmp.jpeg")), Contains("the name says JPEG but the content is BMP"));
  write_bytes(dir.file("empty.png"), "");
  CHECK_THROWS_WITH(read_image(dir.file("empty.png")), Contains("the file is empty"));
  CHECK_THROWS_WITH(read_image(dir.file("x.tga")), Contains(dir.file("x.tga")) && Contains("unknown extension '.tga'"));
  // The decoders of other formats are not compiled in at all: stb cannot even read their headers.
  const std::string t = tga(4, 4);
  int w = 0, h = 0, c = 0;
  CHECK(stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(t.data()), static_cast<int>(t.size()), &w, &h, &c) == 0);
  const std::string gif = std::string("GIF89a") + le(4, 2) + le(4, 2) + std::string(7, '\0');
  CHECK(stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(gif.data()), static_cast<int>(gif.size()), &w, &h, &c) == 0);
  // In a dataset folder the refusal names the file too.
  fs::create_directories(dir.path() / "data");
  fs::copy_file(p, dir.path() / "data" / "a.png");
  CHECK_THROWS_WITH(load_dataset((dir.path() / "data").string(), 8, 3),
                    Contains((dir.path() / "data" / "a.png").string()) && Contains("the name says PNG"));
}

TEST_CASE("a PNG whose compressed data inflates past its declared size decodes only the pixels it declares", "[hostile]") {
  // libpng inflates row by row into the image's own rows: 16 MiB of zeros behind a 1x1 header are
  // never held, and the one declared pixel is what comes back.
  TempDir dir;
  const std::string p = dir.file("bomb.png");
  write_bytes(p, png_bomb(size_t{16} << 20));
  Image8 im = read_image(p);
  CHECK((im.width == 1 && im.height == 1 && im.pixels == std::vector<uint8_t>{0}));
  write_bytes(p, png_bomb(1));  // too little data for its one row: refused, naming the file
  CHECK_THROWS_WITH(read_image(p), Contains(p) && Contains("corrupt PNG"));
}

TEST_CASE("IDX: the size the header declares is checked against the limits before reading, naming the bytes", "[hostile]") {
  TempDir dir;
  // 8 MB of 1x1 images: 8 Mi images resized to 32x32 would need 8 GiB (+ the 8 MiB read).
  const std::string p = dir.file("tiny-images-idx3-ubyte");
  write_bytes(p, idx3_header(8u << 20, 1, 1) + std::string(8u << 20, '\x10'));
  const std::string need = std::to_string((int64_t{8} << 20) * 32 * 32 + (int64_t{8} << 20));
  CHECK_THROWS_WITH(load_dataset(p, 32, 1), Contains(p) && Contains("loading it needs " + need + " bytes") &&
                                                Contains("8388608 images resized to 32x32x1") &&
                                                Contains("more than the 4294967296 allowed"));
  // max_images keeps it small enough.
  DatasetOptions few;
  few.max_images = 4;
  CHECK(load_dataset(p, 32, 1, few).count() == 4);
  // A gzip declaring more than the limit is refused before it is inflated.
  const std::string big = dir.file("big-images-idx3-ubyte.gz");
  write_gzip(big, idx3_header(100000, 256, 256), 0);
  CHECK_THROWS_WITH(load_dataset(big, 8, 1), Contains(big) && Contains("= 6553600000 bytes, more than the 4294967296"));
}

TEST_CASE("IDX: a file under 1 MB never asks for more than 1 GiB (expansion over its size on disk)", "[hostile]") {
  TempDir dir;
  // 1 MiB of 1x1 images resized to 32x32: 1 GiB + 1 MiB, under the 4 GiB limit but 1025 times the file.
  const std::string p = dir.file("upscale-images-idx3-ubyte");
  write_bytes(p, idx3_header(1u << 20, 1, 1) + std::string(1u << 20, '\x10'));
  CHECK_THROWS_WITH(load_dataset(p, 32, 1),
                    Contains(p) && Contains("loading it needs 1074790400 bytes, 1025 times the 1048592 bytes") &&
                        Contains("more than 256 times is refused above 1 GiB"));
  // A tiny gzip whose header declares 1.2 GB: refused from the header, before inflating anything.
  const std::string gz = dir.file("zeros-images-idx3-ubyte.gz");
  write_gzip(gz, idx3_header(1, 35000, 35000), 16);
  CHECK_THROWS_WITH(load_dataset(gz, 8, 1), Contains(gz) && Contains("times the") && Contains("bytes its files take on disk"));
}

TEST_CASE("IDX gzip: inflated only up to the size its header declares, shorter or longer is refused", "[hostile]") {
  TempDir dir;
  const std::string p = dir.file("g-images-idx3-ubyte.gz");
  write_gzip(p, idx3_header(10, 28, 28), 10 * 28 * 28 + 5);
  CHECK_THROWS_WITH(load_dataset(p, 28, 1), Contains(p) && Contains("the data is longer than the header describes 10x28x28 = 7840 bytes"));
  write_gzip(p, idx3_header(10, 28, 28), 7000);
  CHECK_THROWS_WITH(load_dataset(p, 28, 1), Contains(p) && Contains("truncated: the header describes 10x28x28 = 7840 bytes but only 7000 follow"));
  write_gzip(p, idx3_header(10, 28, 28), 7840);
  CHECK(load_dataset(p, 28, 1).count() == 10);
  // A gzip of zeros named as IDX: its magic is read from the first inflated bytes, and that is all.
  write_gzip(p, "", 1 << 20);
  CHECK_THROWS_WITH(load_dataset(p, 28, 1), Contains(p) && Contains("bad magic 0x00000000"));
}

TEST_CASE("JPEG: malformed Huffman tables are refused naming the file, a real JPEG decodes", "[hostile]") {
  // Each shape reached Debian's stb_image 2.27 in a fuzz run (tests/fuzz, image_folder) and made it
  // write or read past its arrays; libjpeg-turbo refuses them all. stb steps over padding between
  // segments, reads zeros past the end, and reads a table's 17-byte head beyond a short segment.
  TempDir dir;
  const std::string p = dir.file("dht.jpg");
  const std::string counts(16, '\x14');  // 16 counts of 20: 320 codes
  const std::string soi_app = std::string("\xff\xd8\xff\xe0\x00\x04\x00\x00", 8);  // SOI, an empty APP0
  const auto refused = [&](const std::string& bytes) {
    write_bytes(p, bytes);
    CHECK_THROWS_WITH(read_image(p), Contains("cannot decode image " + p + ": corrupt JPEG: "));
  };
  refused(std::string("\xff\xd8\xff\xc4\x00\x13\x00", 7) + counts + "\xff\xd9");  // 320 codes
  refused(soi_app + "junk" + std::string("\xff\xc4\x00\x13\x00", 5) + counts);      // after padding
  refused(soi_app + std::string("\xff\xc4\x00\x40\x00", 5) + counts);                // cut short
  refused(soi_app + std::string("\xff\xc4\x00\x05\x00", 5) + counts + "\xff\xd9");   // head past the segment
  refused(soi_app + std::string("\xff\xff\xff\xc4\x00\x13\x00", 7) + counts);      // fill bytes
  // A second table in the same segment, after a valid first one of 2 codes.
  refused(soi_app + std::string("\xff\xc4\x00\x26\x00\x02", 6) + std::string(15, '\0') + "ab" +
          std::string("\x10", 1) + counts);
  // A real JPEG still decodes, and one cut short is refused rather than filled with gray.
  Image8 im{16, 16, 3, {}};
  for (int i = 0; i < 16 * 16 * 3; ++i) im.pixels.push_back(static_cast<uint8_t>(i * 7));
  write_image(dir.file("ok.jpg"), im);
  CHECK(read_image(dir.file("ok.jpg")).width == 16);
  const std::string whole = test::slurp(dir.file("ok.jpg"));
  refused(whole.substr(0, whole.size() * 2 / 3));
}

TEST_CASE("PNG: empty IDAT chunks decode as without them", "[hostile]") {
  // Debian's stb_image called memcpy(null, ..., 0) on an empty first IDAT (tests/fuzz, image_folder).
  TempDir dir;
  Image8 im{5, 3, 3, {}};
  for (int i = 0; i < 45; ++i) im.pixels.push_back(static_cast<uint8_t>(i * 5));
  write_image(dir.file("plain.png"), im);
  std::string png = test::slurp(dir.file("plain.png"));
  const size_t idat = png.find("IDAT") - 4;
  const std::string empty_idat = std::string("\0\0\0\0IDAT", 8) + "\x35\xaf\x06\x1e";  // its real CRC
  png.insert(idat, empty_idat + empty_idat);
  write_bytes(dir.file("empty-idat.png"), png);
  const Image8 back = read_image(dir.file("empty-idat.png"));
  CHECK(back.width == 5);
  CHECK(back.height == 3);
  CHECK(back.pixels == im.pixels);
}

TEST_CASE("image folders: the resized dataset's size is checked before any image is decoded", "[hostile]") {
  TempDir dir;
  for (const char* name : {"a.png", "b.png", "c.png"}) write_image(dir.file(name), Image8{2, 2, 1, std::vector<uint8_t>(4, 1)});
  // 3 images at 40000 x 40000 x 3 would be 14.4 GB.
  CHECK_THROWS_WITH(load_dataset(dir.path().string(), 40000, 3),
                    Contains(dir.path().string()) && Contains("loading it needs 14400000000 bytes"));
}

TEST_CASE("resize_to_square keeps the crop's rows and columns only, however long the long side", "[hostile]") {
  // 2 x 2^22: resized to 32 the long side would be 2^26 columns; only the centre 32 are computed.
  const int64_t w = int64_t{1} << 22;
  std::vector<uint8_t> strip(static_cast<size_t>(2 * w));
  for (int64_t x = 0; x < w; ++x) strip[static_cast<size_t>(x)] = strip[static_cast<size_t>(w + x)] = x < w / 2 ? 10 : 250;
  const std::vector<uint8_t> out = resize_to_square(strip.data(), 2, w, 1, 32);
  REQUIRE(out.size() == 32 * 32);
  // The kept columns straddle the step from 10 to 250 exactly in the middle.
  CHECK(out[0] == 10);
  CHECK(out[31] == 250);
  CHECK(out[32 * 31] == 10);
}

// Run by the next case in a child whose address space is capped; every refusal must come as the
// diffuse::Error above, none as std::bad_alloc.
TEST_CASE("hostile data child: refusals under an address-space cap", "[.hostile-child]") {
  const char* env = std::getenv("HOSTILE_DIR");
  REQUIRE(env != nullptr);  // a child: never a silent pass
  const std::string dir = env;
  cap_address_space(size_t{384} << 20);
  // First, while the peak resident size is still the process's own: a comment chunk inflating to
  // 256 MiB (within the cap) is dropped without being held (engine/image_decode_png.cpp caps one
  // chunk at 8 MiB; libpng unbounded holds all of it), and the pixels decode.
  const long peak_before = peak_rss_kib();
  const Image8 commented = read_image(dir + "/comment-bomb.png");
  CHECK(commented.width == 3);
  CHECK(commented.height == 2);
  CHECK(commented.pixels == std::vector<uint8_t>{1, 2, 3, 4, 5, 6});
  const long grew_mib = (peak_rss_kib() - peak_before) / 1024;
  INFO("decoding the PNG raised the peak resident size by " << grew_mib << " MiB");
  CHECK(grew_mib < 64);
  auto refused = [](const std::function<void()>& load, const std::string& expected) {
    try {
      load();
      FAIL("accepted; expected: " << expected);
    } catch (const Error& e) {
      CHECK_THAT(e.what(), Contains(expected));
    }
  };
  refused([&] { load_dataset(dir + "/bmp", 32, 3); }, "99000000 pixels");
  refused([&] { load_dataset(dir + "/tga", 32, 3); }, "the name says PNG");
  refused([&] { load_dataset(dir + "/tiny-images-idx3-ubyte", 32, 1); }, "loading it needs");
  refused([&] { load_dataset(dir + "/zeros-images-idx3-ubyte.gz", 28, 1); }, "bad magic 0x00000000");
  refused([&] { load_dataset(dir + "/long-images-idx3-ubyte.gz", 28, 1); }, "the data is longer than");
  const int64_t w = int64_t{1} << 24;  // 1 x 2^24 → 32: the old code built taps for 2^29 columns
  std::vector<uint8_t> strip(static_cast<size_t>(w), 77);
  const std::vector<uint8_t> out = resize_to_square(strip.data(), 1, w, 1, 32);
  CHECK(std::all_of(out.begin(), out.end(), [](uint8_t v) { return v == 77; }));
}

TEST_CASE("hostile images and datasets are refused without large allocations", "[hostile]") {
  TempDir dir;
  fs::create_directories(dir.path() / "bmp");
  write_bytes(dir.file("bmp/tall.bmp"), bmp(6, 16'500'000, 117));
  fs::create_directories(dir.path() / "tga");
  write_bytes(dir.file("tga/x.png"), tga(60000, 6000));
  write_bytes(dir.file("tiny-images-idx3-ubyte"), idx3_header(8u << 20, 1, 1) + std::string(8u << 20, '\0'));
  write_gzip(dir.file("zeros-images-idx3-ubyte.gz"), "", size_t{512} << 20);  // 512 MiB of zeros, ~1 MB on disk
  write_gzip(dir.file("long-images-idx3-ubyte.gz"), idx3_header(10, 28, 28), size_t{512} << 20);
  write_image(dir.file("plain.png"), Image8{3, 2, 1, {1, 2, 3, 4, 5, 6}});
  std::string png = test::slurp(dir.file("plain.png"));
  png.insert(png.find("IDAT") - 4, png_chunk("zTXt", std::string("Comment\0\0", 9) + zlib_compress(std::string(size_t{256} << 20, '\0'))));
  write_bytes(dir.file("comment-bomb.png"), png);
  const test::RunResult r = test::run_self("hostile data child: refusals under an address-space cap", {{"HOSTILE_DIR", dir.path().string()}});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("All tests passed") && Contains("1 test case"));
}
