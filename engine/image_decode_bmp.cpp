// BMP through stb_image, the one format it still decodes here (engine/image_decode.h says why the
// others moved to libpng and libjpeg-turbo): uncompressed and BI_BITFIELDS files of 1 to 32 bits.
// The header's size is checked first, then the file must hold every row it declares, and stb
// decodes within an allocation budget sized from that header (engine/stb_budget.h).
#include <cstdint>
#include <string>

#include "diffuse/error.h"
#include "engine/image_decode.h"
#include "engine/stb_budget.h"
#include "stb_image.h"

namespace diffuse {

namespace {

uint32_t little_endian(const std::string& b, size_t at, size_t bytes) {
  uint32_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v |= uint32_t{static_cast<unsigned char>(b[at + i])} << (8 * i);
  return v;
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
  // stb refuses RLE (1, 2) but decodes any other unknown value as uncompressed, reading zeros past
  // the end (tests/fuzz found a 108-byte file taking 30 s that way): only plain and BI_BITFIELDS
  // rows are read.
  if (compression != 0 && compression != 3)
    throw Error("cannot read image " + path + ": BMP compression " + std::to_string(compression) +
                    " is not supported (uncompressed and BI_BITFIELDS BMPs are read)",
                ErrorKind::bad_input);
  if (width <= 0 || bits <= 0 || bits > 32 || height == INT32_MIN) return;  // stb refuses these itself
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

Image8 decode_bmp(const std::string& path, const std::string& bytes) {
  const auto* data_in = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int size_in = static_cast<int>(bytes.size());  // <= kMaxImageFileBytes < INT_MAX
  int w = 0, h = 0, file_channels = 0;
  if (!stbi_info_from_memory(data_in, size_in, &w, &h, &file_channels)) {
    const char* why = stbi_failure_reason();
    throw Error("cannot decode image " + path + ": " + (why ? why : "unknown error"), ErrorKind::bad_input);
  }
  const int64_t pixels = int64_t{w} * h;
  if (w <= 0 || h <= 0 || pixels > kMaxImagePixels) throw_too_many_pixels(path, w, h);
  check_bmp_holds_its_pixels(path, bytes);
  // What stb needs at most for a valid file: twice the largest decoded image (4 bytes a pixel), a
  // copy of the file and 1 MiB for its line buffers.
  const size_t budget = static_cast<size_t>(pixels) * 8 + bytes.size() + (size_t{1} << 20);
  stb_budget::Scope scope(budget);
  uint8_t* data = stbi_load_from_memory(data_in, size_in, &w, &h, &file_channels, 0);
  if (!data) {
    if (scope.exceeded())
      throw Error("cannot decode image " + path + ": decoding needs more than " + std::to_string(budget) +
                      " bytes, more than a " + std::to_string(w) + "x" + std::to_string(h) + " image can",
                  ErrorKind::bad_input);
    const char* why = stbi_failure_reason();
    throw Error("cannot decode image " + path + ": " + (why ? why : "unknown error"), ErrorKind::bad_input);
  }
  Image8 out{w, h, file_channels, {}};
  out.pixels.assign(data, data + static_cast<size_t>(w) * h * file_channels);
  stbi_image_free(data);
  return out;
}

}  // namespace diffuse
