// PNG through libpng's progressive-free reader, the way stb_image and PIL present a PNG: palettes
// and tRNS become RGB(A), gray below 8 bits is expanded, 16 bits keep their high byte, and
// gamma/colour chunks are ignored (pixels are taken as stored). What libpng itself may allocate is
// capped here rather than left to how the system's libpng was built: one ancillary chunk (text,
// ICC profile, ...) of at most 8 MiB decompressed and at most 128 ancillary chunks kept (past a
// cap an ancillary chunk is dropped with a warning); its row buffers follow the width, which the
// header check below holds to kMaxImagePixels with the height before anything is allocated.
// libpng reports errors by longjmp, so the one function that calls setjmp holds only trivially
// destructible locals and writes into objects its caller owns; C++ objects are never jumped over.
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <new>
#include <vector>

#include "engine/image_decode.h"
#include "diffuse/error.h"

namespace diffuse {

namespace {

struct PngRead {
  const unsigned char* data = nullptr;
  size_t size = 0, at = 0;
  char message[256] = "";
  bool too_many_pixels = false;
  uint32_t width = 0, height = 0;
  Image8* out = nullptr;
  std::vector<png_bytep>* rows = nullptr;
};

void read_from_memory(png_structp png, png_bytep dst, size_t n) {
  auto* r = static_cast<PngRead*>(png_get_io_ptr(png));
  if (n > r->size - r->at) png_error(png, "the file ends early (truncated)");
  std::memcpy(dst, r->data + r->at, n);
  r->at += n;
}

void on_error(png_structp png, png_const_charp message) {
  auto* r = static_cast<PngRead*>(png_get_error_ptr(png));
  std::snprintf(r->message, sizeof r->message, "%s", message);
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}  // recoverable: a bad ancillary chunk is skipped

// Decodes into r.out; false with r.message (or r.too_many_pixels) set when it cannot.
bool decode(PngRead& r) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, on_error, on_warning);
  if (!png) {
    std::snprintf(r.message, sizeof r.message, "libpng could not start (out of memory)");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
    if (!r.message[0]) std::snprintf(r.message, sizeof r.message, "libpng could not start (out of memory)");
    return false;
  }
  png_set_read_fn(png, &r, read_from_memory);
  png_set_chunk_malloc_max(png, size_t{8} << 20);
  png_set_chunk_cache_max(png, 128);
  png_read_info(png, info);
  r.width = png_get_image_width(png, info);
  r.height = png_get_image_height(png, info);
  if (int64_t{r.width} * r.height > kMaxImagePixels) {
    r.too_many_pixels = true;
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  const int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (depth == 16) png_set_strip_16(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const size_t channels = png_get_channels(png, info), row_bytes = png_get_rowbytes(png, info);
  if (channels < 1 || channels > 4 || row_bytes != size_t{r.width} * channels) png_error(png, "unexpected pixel layout");
  bool allocated = true;  // png_error is called outside the handler: longjmp never leaves a catch
  try {
    r.out->width = r.width;
    r.out->height = r.height;
    r.out->channels = static_cast<int64_t>(channels);
    r.out->pixels.resize(row_bytes * r.height);
    r.rows->resize(r.height);
  } catch (const std::bad_alloc&) {
    allocated = false;
  }
  if (!allocated) png_error(png, "out of memory for the image");
  for (uint32_t y = 0; y < r.height; ++y) (*r.rows)[y] = r.out->pixels.data() + y * row_bytes;
  png_read_image(png, r.rows->data());
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

}  // namespace

Image8 decode_png(const std::string& path, const std::string& bytes) {
  Image8 out;
  std::vector<png_bytep> rows;
  PngRead r;
  r.data = reinterpret_cast<const unsigned char*>(bytes.data());
  r.size = bytes.size();
  r.out = &out;
  r.rows = &rows;
  if (!decode(r)) {
    if (r.too_many_pixels) throw_too_many_pixels(path, r.width, r.height);
    throw Error("cannot decode image " + path + ": corrupt PNG: " + r.message, ErrorKind::bad_input);
  }
  return out;
}

}  // namespace diffuse
