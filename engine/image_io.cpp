// PNG grids and single images through stb_image_write into memory, then one atomic write, so a
// failed or interrupted save never leaves a truncated image where a good one was.
#include "engine/image_io.h"

#include <algorithm>
#include <climits>
#include <cmath>

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

Image8 read_image(const std::string& path, int channels) {
  if (channels < 0 || channels > 4) throw Error("read_image " + path + ": channels must be 0..4");
  std::string bytes = read_file(path);
  if (bytes.size() > static_cast<size_t>(INT_MAX)) throw Error("cannot read image " + path + ": file too large");
  int w = 0, h = 0, file_channels = 0;
  uint8_t* data = stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()),
                                        &w, &h, &file_channels, channels);
  if (!data) {
    const char* why = stbi_failure_reason();
    throw Error("cannot decode image " + path + ": " + (why ? why : "unknown error"));
  }
  Image8 out{w, h, channels ? channels : file_channels, {}};
  out.pixels.assign(data, data + static_cast<size_t>(w) * h * out.channels);
  stbi_image_free(data);
  return out;
}

}  // namespace diffuse
