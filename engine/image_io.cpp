// PNG grids and single images through stb_image_write into memory, then one atomic write, so a
// failed or interrupted save never leaves a truncated image where a good one was. Reading checks
// the file's size, its magic bytes against its extension and its header's width x height before
// stb_image decodes anything, and decodes within a memory budget sized from that header.
#include "engine/image_io.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>

#include "engine/stb_budget.h"
#include "nn/atomic_file.h"
#include "stb_image.h"
#include "stb_image_write.h"

namespace diffuse {

namespace {

uint8_t to_byte(float v) {
  // torchvision's save_image on (v + 1) / 2: x·255 + 0.5, clamped, truncated.
  float x = (v + 1.0f) * 127.5f + 0.5f;
  if (!(x > 0.0f)) return 0;  // also NaN
  return x >= 255.0f ? 255 : static_cast<uint8_t>(x);
}

Tensor host_f32(const Tensor& t, const char* what) {
  if (!t.defined()) throw Error(std::string(what) + ": undefined tensor");
  Tensor h = t.to(Device::cpu);
  return h.dtype() == DType::f32 ? h : h.to(DType::f32);
}

void check_channels(int64_t c, const std::string& what) {
  if (c != 1 && c != 3 && c != 4)
    throw Error(what + ": images need 1, 3 or 4 channels (NHWC), got " + std::to_string(c));
}

std::string lower_extension(const std::string& path) {
  size_t dot = path.find_last_of('.');
  size_t slash = path.find_last_of('/');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string ext = path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return ext;
}

void append_bytes(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
}

}  // namespace

Image8 to_image8(const Tensor& image) {
  Tensor t = host_f32(image, "to_image8");
  if (t.ndim() == 4 && t.dim(0) == 1) t = t.view({t.dim(1), t.dim(2), t.dim(3)});
  if (t.ndim() != 3) throw Error("to_image8: expected an image [H, W, C], got " + t.describe());
  check_channels(t.dim(2), "to_image8");
  Image8 out{t.dim(1), t.dim(0), t.dim(2), {}};
  out.pixels.resize(static_cast<size_t>(t.numel()));
  const float* src = t.data<float>();
  for (size_t i = 0; i < out.pixels.size(); ++i) out.pixels[i] = to_byte(src[i]);
  return out;
}

Image8 make_grid(const Tensor& images, int64_t nrow, int64_t padding) {
  Tensor t = host_f32(images, "make_grid");
  if (t.ndim() != 4 || t.dim(0) == 0)
    throw Error("make_grid: expected images [N, H, W, C] with N >= 1, got " + t.describe());
  if (padding < 0) throw Error("make_grid: padding must be >= 0, got " + std::to_string(padding));
  if (nrow < 0) throw Error("make_grid: nrow must be >= 0, got " + std::to_string(nrow));
  const int64_t n = t.dim(0), h = t.dim(1), w = t.dim(2), c = t.dim(3);
  check_channels(c, "make_grid");
  if (nrow == 0) nrow = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int64_t cols = std::min(nrow, n), rows = (n + cols - 1) / cols;
  Image8 g;
  g.width = cols * (w + padding) + padding;
  g.height = rows * (h + padding) + padding;
  g.channels = c;
  g.pixels.assign(static_cast<size_t>(g.width * g.height * c), 0);
  const float* src = t.data<float>();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t y0 = (k / cols) * (h + padding) + padding, x0 = (k % cols) * (w + padding) + padding;
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w * c; ++x)
        g.pixels[static_cast<size_t>(((y0 + y) * g.width + x0) * c + x)] = to_byte(src[((k * h + y) * w) * c + x]);
  }
  return g;
}

void write_image(const std::string& path, const Image8& image) {
  const std::string who = "cannot write image " + path;
  check_channels(image.channels, who);
  if (image.width <= 0 || image.height <= 0 || image.width > INT_MAX / 4 || image.height > INT_MAX / 4)
    throw Error(who + ": bad size " + std::to_string(image.width) + "x" + std::to_string(image.height));
  if (image.pixels.size() != static_cast<size_t>(image.width * image.height * image.channels))
    throw Error(who + ": " + std::to_string(image.pixels.size()) + " bytes for a " + std::to_string(image.width) +
                "x" + std::to_string(image.height) + "x" + std::to_string(image.channels) + " image");
  const int w = static_cast<int>(image.width), h = static_cast<int>(image.height), c = static_cast<int>(image.channels);
  const std::string ext = lower_extension(path);
  std::string bytes;
  int ok = 0;
  if (ext == ".png")
    ok = stbi_write_png_to_func(append_bytes, &bytes, w, h, c, image.pixels.data(), w * c);
  else if (ext == ".bmp")
    ok = stbi_write_bmp_to_func(append_bytes, &bytes, w, h, c, image.pixels.data());
  else if (ext == ".jpg" || ext == ".jpeg")
    ok = stbi_write_jpg_to_func(append_bytes, &bytes, w, h, c, image.pixels.data(), 95);
  else
    throw Error(who + ": unknown extension '" + ext + "' (use .png, .bmp or .jpg)");
  if (!ok) throw Error(who + ": the encoder failed");
  write_file_atomic(path, bytes);
}

void save_png(const std::string& path, const Tensor& image) {
  if (lower_extension(path) != ".png") throw Error("cannot write image " + path + ": save_png writes .png files");
  write_image(path, to_image8(image));
}

void save_png_grid(const std::string& path, const Tensor& images, int64_t nrow, int64_t padding) {
  if (lower_extension(path) != ".png") throw Error("cannot write image " + path + ": save_png_grid writes .png files");
  write_image(path, make_grid(images, nrow, padding));
}

namespace {

enum class ImageFormat { unknown, png, jpeg, bmp };

const char* format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::png: return "PNG";
    case ImageFormat::jpeg: return "JPEG";
    case ImageFormat::bmp: return "BMP";
    case ImageFormat::unknown: break;
  }
  return "unknown";
}

ImageFormat format_from_extension(const std::string& ext) {
  if (ext == ".png") return ImageFormat::png;
  if (ext == ".jpg" || ext == ".jpeg") return ImageFormat::jpeg;
  if (ext == ".bmp") return ImageFormat::bmp;
  return ImageFormat::unknown;
}

ImageFormat format_from_magic(const std::string& b) {
  if (b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) return ImageFormat::png;
  if (b.size() >= 3 && b.compare(0, 3, "\xff\xd8\xff") == 0) return ImageFormat::jpeg;
  if (b.compare(0, 2, "BM") == 0) return ImageFormat::bmp;
  return ImageFormat::unknown;
}

// The first bytes in hex, for a message about a file that is not what its name says.
std::string leading_bytes(const std::string& b) {
  std::string out;
  char hex[4];
  for (size_t i = 0; i < std::min<size_t>(b.size(), 8); ++i) {
    std::snprintf(hex, sizeof hex, "%s%02x", i ? " " : "", static_cast<unsigned char>(b[i]));
    out += hex;
  }
  return out.empty() ? "nothing (the file is empty)" : out;
}

uint32_t little_endian(const std::string& b, size_t at, size_t bytes) {
  uint32_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v |= uint32_t{static_cast<unsigned char>(b[at + i])} << (8 * i);
  return v;
}

// Debian's stb_image builds a JPEG Huffman table without checking that its code counts sum to at
// most 256 (upstream added the check later), and writes past its arrays when they do not. Every
// table stb could build is checked here first, so this walk must reach at least every DHT stb's
// does (tests/fuzz found each shortcut below). Like stb it reads zeros past the end of the file,
// steps over bytes that are not a marker (stb scans padding between segments; entropy-coded data
// is such bytes, its 0xff00 and restart markers included), and walks a DHT's tables for as long as
// the segment's declared length stays positive, even when a table's 17-byte head runs past the
// segment or the file. Where stb would stop with an error this walk goes on: more is checked, and
// a well-formed file is walked exactly as stb walks it, so nothing valid is refused.
void check_jpeg_huffman_tables(const std::string& path, const std::string& b) {
  const auto byte = [&b](size_t i) -> unsigned { return i < b.size() ? static_cast<unsigned char>(b[i]) : 0u; };
  size_t at = 2;  // after SOI
  while (at < b.size()) {
    if (byte(at++) != 0xff) continue;
    while (at < b.size() && byte(at) == 0xff) ++at;  // fill bytes
    if (at >= b.size()) return;
    const unsigned marker = byte(at++);
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd8)) continue;  // no length
    if (marker == 0xd9) return;                                                              // EOI
    const size_t length = (size_t{byte(at)} << 8) | byte(at + 1);
    if (marker == 0xc4) {  // DHT: tables of (class/id, 16 counts, the counted symbols)
      size_t t = at + 2;
      for (int64_t left = static_cast<int64_t>(length) - 2; left > 0;) {
        size_t codes = 0;
        for (size_t i = 1; i <= 16; ++i) codes += byte(t + i);
        if (codes > 256)
          throw Error("cannot read image " + path + ": corrupt JPEG: a Huffman table declares " +
                          std::to_string(codes) + " codes, more than 256",
                      ErrorKind::bad_input);
        t += 17 + codes;
        left -= static_cast<int64_t>(17 + codes);
      }
    }
    at += length < 2 ? 2 : length;  // a segment stb reads whole ends where its length says
  }
}

// stb_image copies each IDAT chunk into a buffer it grows as chunks arrive; for an empty first IDAT
// the buffer is still null and it calls memcpy(null, ..., 0), undefined behaviour (tests/fuzz,
// image_folder). An empty IDAT adds nothing to the image, so such chunks are dropped before stb
// reads the file. The walk is stb's own: every chunk is length, type, data, CRC.
std::string without_empty_png_data_chunks(std::string b) {
  for (size_t at = 8; at + 8 <= b.size();) {
    const uint32_t length = (uint32_t{static_cast<unsigned char>(b[at])} << 24) |
                            (uint32_t{static_cast<unsigned char>(b[at + 1])} << 16) |
                            (uint32_t{static_cast<unsigned char>(b[at + 2])} << 8) | static_cast<unsigned char>(b[at + 3]);
    if (length == 0 && b.compare(at + 4, 4, "IDAT") == 0) {
      b.erase(at, std::min<size_t>(12, b.size() - at));
      continue;
    }
    if (b.compare(at + 4, 4, "IEND") == 0 || length > b.size()) break;  // stb reports a cut file itself
    at += 12 + size_t{length};
  }
  return b;
}

// stb_image reads zeros past the end of a BMP rather than failing, so a 100-byte file could
// "decode" as millions of black pixels: an uncompressed BMP must hold every row it declares.
// (stb decodes no RLE BMPs; BI_BITFIELDS rows are stored like uncompressed ones.)
void check_bmp_holds_its_pixels(const std::string& path, const std::string& b) {
  if (b.size() < 30) return;  // stb reports the short header itself
  const uint32_t data_offset = little_endian(b, 10, 4), info_size = little_endian(b, 14, 4);
  int64_t width, height, bits;
  uint32_t compression = 0;
  if (info_size == 12) {  // OS/2 BITMAPCOREHEADER
    width = little_endian(b, 18, 2);
    height = little_endian(b, 20, 2);
    bits = little_endian(b, 24, 2);
  } else {
    if (b.size() < 34) return;
    width = static_cast<int32_t>(little_endian(b, 18, 4));
    height = static_cast<int32_t>(little_endian(b, 22, 4));
    bits = little_endian(b, 28, 2);
    compression = little_endian(b, 30, 4);
  }
  if (compression != 0 && compression != 3) return;  // stb refuses these with its own reason
  if (width <= 0 || bits <= 0 || bits > 32 || height == INT32_MIN) return;  // likewise
  height = height < 0 ? -height : height;
  const int64_t row_bytes = (width * bits + 31) / 32 * 4;  // width < 2^31, bits <= 32: no overflow
  const double needed = static_cast<double>(data_offset) + static_cast<double>(row_bytes) * static_cast<double>(height);
  if (needed > static_cast<double>(b.size()))
    throw Error("cannot read image " + path + ": truncated BMP: its header declares " + std::to_string(width) + "x" +
                    std::to_string(height) + " pixels, " + std::to_string(row_bytes * height) +
                    " bytes of pixel data, but the file is " + std::to_string(b.size()) + " bytes",
                ErrorKind::bad_input);
}

}  // namespace

Image8 read_image(const std::string& path, int channels) {
  if (channels < 0 || channels > 4) throw Error("read_image " + path + ": channels must be 0..4");
  const std::string who = "cannot read image " + path;
  const ImageFormat format = format_from_extension(lower_extension(path));
  if (format == ImageFormat::unknown)
    throw Error(who + ": unknown extension '" + lower_extension(path) + "' (PNG, JPEG or BMP: .png, .jpg, .jpeg, .bmp)",
                ErrorKind::bad_input);
  std::string bytes = read_file(path, static_cast<size_t>(kMaxImageFileBytes));
  const ImageFormat content = format_from_magic(bytes);
  if (content != format)
    throw Error(who + ": the name says " + format_name(format) + " but the content is " +
                    (content == ImageFormat::unknown ? std::string("not PNG, JPEG or BMP") : format_name(content)) +
                    " (it starts with " + leading_bytes(bytes) + ")",
                ErrorKind::bad_input);

  // Before stb sees the file at all: its header pass (stbi_info) already builds the tables.
  if (format == ImageFormat::jpeg) check_jpeg_huffman_tables(path, bytes);
  if (format == ImageFormat::png) bytes = without_empty_png_data_chunks(std::move(bytes));
  const auto* data_in = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int size_in = static_cast<int>(bytes.size());  // <= kMaxImageFileBytes < INT_MAX
  int w = 0, h = 0, file_channels = 0;
  if (!stbi_info_from_memory(data_in, size_in, &w, &h, &file_channels)) {
    const char* why = stbi_failure_reason();
    throw Error("cannot decode image " + path + ": " + (why ? why : "unknown error"), ErrorKind::bad_input);
  }
  const int64_t pixels = int64_t{w} * h;
  if (w <= 0 || h <= 0 || pixels > kMaxImagePixels)
    throw Error(who + ": its header declares " + std::to_string(w) + "x" + std::to_string(h) + " = " +
                    std::to_string(pixels) + " pixels, more than the " + std::to_string(kMaxImagePixels) +
                    " allowed (docs/formats.md, Limits)",
                ErrorKind::bad_input);
  if (format == ImageFormat::bmp) check_bmp_holds_its_pixels(path, bytes);
  // What stb needs at most for a valid file: a 16-bit RGBA PNG holds its inflated rows (8 bytes a
  // pixel) and the image built from them (8 more) at once; the compressed data is a copy of the
  // file; 1 MiB covers tables and line buffers.
  const size_t budget = static_cast<size_t>(pixels) * 24 + bytes.size() + (size_t{1} << 20);
  stb_budget::Scope scope(budget);
  uint8_t* data = stbi_load_from_memory(data_in, size_in, &w, &h, &file_channels, channels);
  if (!data) {
    if (scope.exceeded())
      throw Error("cannot decode image " + path + ": decoding needs more than " + std::to_string(budget) +
                      " bytes, more than a " + std::to_string(w) + "x" + std::to_string(h) +
                      " image can (the compressed data holds more than the header declares)",
                  ErrorKind::bad_input);
    const char* why = stbi_failure_reason();
    throw Error("cannot decode image " + path + ": " + (why ? why : "unknown error"), ErrorKind::bad_input);
  }
  Image8 out{w, h, channels ? channels : file_channels, {}};
  out.pixels.assign(data, data + static_cast<size_t>(w) * h * out.channels);
  stbi_image_free(data);
  return out;
}

}  // namespace diffuse
