// Image files out (docs/design.md §9): sample grids and single images as PNG, written atomically via
// nn/atomic_file.h, plus a small reader. Images come in as f32 NHWC in [-1, 1] (the model's
// range) and are stored as round((x + 1) / 2 · 255) clamped to [0, 255]; NaN becomes 0.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/tensor.h"

namespace diffuse {

// 8-bit interleaved pixels, row-major [height, width, channels].
struct Image8 {
  int64_t width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

// f32 [H, W, C] or [1, H, W, C] in [-1, 1] → 8 bits (any device; copied to the host).
Image8 to_image8(const Tensor& image);

// Arranges images [N, H, W, C] like torchvision's make_grid: `nrow` images per row (0 picks
// ceil(sqrt(N)), a near-square grid), `padding` pixels of black between and around them.
Image8 make_grid(const Tensor& images, int64_t nrow = 0, int64_t padding = 2);

// PNG writers (C = 1 gray, 3 RGB or 4 RGBA). Throw diffuse::Error naming the path; on failure
// whatever was at `path` before is left as it was.
void save_png(const std::string& path, const Tensor& image);  // [H, W, C] or [1, H, W, C]
void save_png_grid(const std::string& path, const Tensor& images, int64_t nrow = 0, int64_t padding = 2);

// Writes 8-bit pixels as .png, .bmp or .jpg/.jpeg (quality 95), chosen by the extension.
void write_image(const std::string& path, const Image8& image);

// Limits on images read (docs/formats.md, "Limits"): checked from the file's size and header
// before anything is decoded.
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 26;     // 67,108,864: 8192 x 8192
inline constexpr int64_t kMaxImageFileBytes = int64_t{1} << 29;  // 512 MiB

// Reads a PNG, JPEG or BMP file; channels 0 keeps the file's own count. The extension names the
// format (.png, .jpg/.jpeg, .bmp) and the content must start with that format's magic bytes (a
// TGA named .png is refused); width x height comes from the header and must be within
// kMaxImagePixels; a BMP must hold all the pixel data its header declares. Every refusal is a
// diffuse::Error naming the file.
Image8 read_image(const std::string& path, int channels = 0);

}  // namespace diffuse
