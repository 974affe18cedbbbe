// The one translation unit that compiles stb_image (decoding PNG/JPEG/BMP for datasets and tests)
// and stb_image_write (PNG/BMP/JPEG output). Every other file includes the headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG  // readable failure reasons, e.g. "Corrupt PNG"
#include "stb_image.h"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb_image_write.h"
#pragma GCC diagnostic pop
