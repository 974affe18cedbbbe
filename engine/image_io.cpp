// PNG grids and single images through stb_image_write into memory, then one atomic write, so a
// failed or interrupted save never leaves a truncated image where a good one was. Reading checks
// the file's size and its magic bytes against its extension, then hands it to the format's
// decoder (engine/image_decode.h: libpng, libjpeg-turbo, stb_image for BMP), each of which checks
// the header's width x height before it decodes anything.
#include "engine/image_io.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>

#include "engine/image_decode.h"
#include "nn/atomic_file.h"
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

// The file's channels → the ones asked for, with stb_image's rules (what read_image always did):
// gray is copied into R, G and B; colour becomes gray as (77 R + 150 G + 29 B) >> 8; a missing
// alpha is 255; an unwanted alpha is dropped.
Image8 convert_channels(Image8 in, int channels) {
  if (channels == 0 || channels == in.channels) return in;
  const auto n = static_cast<size_t>(in.width * in.height);
  const auto from = static_cast<size_t>(in.channels), to = static_cast<size_t>(channels);
  Image8 out{in.width, in.height, channels, std::vector<uint8_t>(n * to)};
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = &in.pixels[i * from];
    const bool colour = from >= 3, alpha = from == 2 || from == 4;
    const uint8_t gray = colour ? static_cast<uint8_t>((p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8) : p[0];
    const uint8_t a = alpha ? p[from - 1] : 255;
    uint8_t* q = &out.pixels[i * to];
    if (to <= 2) {
      q[0] = gray;
      if (to == 2) q[1] = a;
    } else {
      for (size_t c = 0; c < 3; ++c) q[c] = colour ? p[c] : p[0];
      if (to == 4) q[3] = a;
    }
  }
  return out;
}

}  // namespace

void throw_too_many_pixels(const std::string& path, int64_t width, int64_t height) {
  throw Error("cannot read image " + path + ": its header declares " + std::to_string(width) + "x" + std::to_string(height) +
                  " = " + std::to_string(width * height) + " pixels, more than the " + std::to_string(kMaxImagePixels) +
                  " allowed (docs/formats.md, Limits)",
              ErrorKind::bad_input);
}

Image8 read_image(const std::string& path, int channels) {
  if (channels < 0 || channels > 4) throw Error("read_image " + path + ": channels must be 0..4");
  const std::string who = "cannot read image " + path;
  const ImageFormat format = format_from_extension(lower_extension(path));
  if (format == ImageFormat::unknown)
    throw Error(who + ": unknown extension '" + lower_extension(path) + "' (PNG, JPEG or BMP: .png, .jpg, .jpeg, .bmp)",
                ErrorKind::bad_input);
  const std::string bytes = read_file(path, static_cast<size_t>(kMaxImageFileBytes));
  const ImageFormat content = format_from_magic(bytes);
  if (content != format)
    throw Error(who + ": the name says " + format_name(format) + " but the content is " +
                    (content == ImageFormat::unknown ? std::string("not PNG, JPEG or BMP") : format_name(content)) +
                    " (it starts with " + leading_bytes(bytes) + ")",
                ErrorKind::bad_input);

  if (format == ImageFormat::png) return convert_channels(decode_png(path, bytes), channels);
  if (format == ImageFormat::jpeg) return convert_channels(decode_jpeg(path, bytes), channels);
  return convert_channels(decode_bmp(path, bytes), channels);
}

}  // namespace diffuse
