// The PNG and JPEG decoders behind read_image (engine/image_io.h): libpng and libjpeg-turbo, the
// maintained, continuously fuzzed libraries every other tool decodes with (PIL among them).
// Debian's stb_image (2.27) predates upstream's fixes for hostile JPEG and PNG files — a fuzz run
// found three of them in an hour (docs/hardening.md) — so stb now decodes BMP only
// (engine/image_decode_bmp.cpp).
// Each decoder checks the header's width x height against kMaxImagePixels before it allocates
// the image, bounds what the library may allocate by that size, and returns the file's own
// channels (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) at 8 bits; read_image converts them.
#pragma once
#include <string>

#include "engine/image_io.h"

namespace diffuse {

// Both throw diffuse::Error (bad_input) naming `path` for anything they cannot decode.
Image8 decode_png(const std::string& path, const std::string& bytes);
Image8 decode_jpeg(const std::string& path, const std::string& bytes);
Image8 decode_bmp(const std::string& path, const std::string& bytes);

// The refusal for a header over kMaxImagePixels, the same for every format.
[[noreturn]] void throw_too_many_pixels(const std::string& path, int64_t width, int64_t height);

}  // namespace diffuse
