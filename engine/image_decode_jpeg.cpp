// JPEG through libjpeg-turbo's libjpeg API (the decoder PIL uses, with its defaults: accurate
// integer IDCT, smooth chroma upsampling). Gray files stay gray; YCbCr and RGB files come out RGB;
// CMYK and YCCK files (Adobe's inverted form) are multiplied out to RGB as stb_image did.
// libjpeg reports errors by longjmp, so the one function that calls setjmp holds only trivially
// destructible locals and writes into objects its caller owns. Corrupt entropy-coded data and a
// file cut short are errors here (libjpeg would only warn and fill the rest with gray: a
// half-gray training image is worse than a refusal); harmless oddities such as bytes before a
// marker are not.
#include <cstdio>
#include <csetjmp>
#include <cstring>
#include <new>
#include <vector>

#include <jpeglib.h>
#include <jerror.h>

#include "diffuse/error.h"
#include "engine/image_decode.h"

namespace diffuse {

namespace {

// A progressive file may carry any number of scans, each a pass over the whole image: more than
// this many is refused, as libjpeg-turbo's own tools and fuzzers do.
constexpr int kMaxScans = 500;

struct JpegRead {
  jpeg_error_mgr errors;  // first: libjpeg hands back a pointer to it
  jpeg_progress_mgr progress;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 64] = "";
  bool too_many_pixels = false;
  JDIMENSION width = 0, height = 0;
  Image8* out = nullptr;
  std::vector<uint8_t>* line = nullptr;  // one CMYK row
};

[[noreturn]] void fail(j_common_ptr c) {
  auto* r = reinterpret_cast<JpegRead*>(c->err);
  if (!r->message[0]) (*c->err->format_message)(c, r->message);
  std::longjmp(r->jump, 1);
}

void on_error_exit(j_common_ptr c) { fail(c); }

// Warnings (level -1) that mean the pixels are not what the file meant are errors.
void on_message(j_common_ptr c, int level) {
  if (level != -1) return;
  const int code = c->err->msg_code;
  if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_HUFF_BAD_CODE || code == JWRN_MUST_RESYNC)
    fail(c);
}

void on_progress(j_common_ptr c) {
  auto* d = reinterpret_cast<j_decompress_ptr>(c);
  if (d->input_scan_number > kMaxScans) {
    std::snprintf(reinterpret_cast<JpegRead*>(c->err)->message, sizeof JpegRead::message,
                  "more than %d progressive scans", kMaxScans);
    fail(c);
  }
}

// stb_image's CMYK product, (x * y) / 255 rounded.
uint8_t times_over_255(unsigned x, unsigned y) {
  const unsigned t = x * y + 128;
  return static_cast<uint8_t>((t + (t >> 8)) >> 8);
}

// Decodes into r.out; false with r.message (or r.too_many_pixels) set when it cannot.
bool decode(JpegRead& r, const unsigned char* data, size_t size) {
  jpeg_decompress_struct d;
  d.err = jpeg_std_error(&r.errors);
  r.errors.error_exit = on_error_exit;
  r.errors.emit_message = on_message;
  if (setjmp(r.jump)) {
    jpeg_destroy_decompress(&d);
    return false;
  }
  jpeg_create_decompress(&d);
  r.progress.progress_monitor = on_progress;
  d.progress = &r.progress;
  jpeg_mem_src(&d, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d, TRUE);
  r.width = d.image_width;
  r.height = d.image_height;
  if (int64_t{r.width} * r.height > kMaxImagePixels) {
    r.too_many_pixels = true;
    jpeg_destroy_decompress(&d);
    return false;
  }
  const bool cmyk = d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK;
  if (d.num_components == 1) {
    d.out_color_space = JCS_GRAYSCALE;
  } else if (cmyk) {
    d.out_color_space = JCS_CMYK;
  } else if (d.num_components == 3) {
    d.out_color_space = JCS_RGB;
  } else {
    std::snprintf(r.message, sizeof r.message, "%d colour components (1, 3 or 4 are read)", d.num_components);
    fail(reinterpret_cast<j_common_ptr>(&d));
  }
  // What a valid file of this size needs at most: a progressive file keeps every coefficient of
  // every component (2 bytes each, dimensions rounded up to whole MCUs), plus working buffers.
  const size_t padded = (size_t{r.width} + 32) * (size_t{r.height} + 32);
  d.mem->max_memory_to_use = static_cast<long>(padded * 2 * static_cast<size_t>(d.num_components) + (size_t{32} << 20));
  jpeg_start_decompress(&d);
  const size_t got = static_cast<size_t>(d.output_components), row = size_t{r.width} * got;
  bool allocated = true;  // fail() is called outside the handler: longjmp never leaves a catch
  try {
    if (cmyk) r.line->resize(row);
    r.out->width = r.width;
    r.out->height = r.height;
    r.out->channels = cmyk ? 3 : static_cast<int64_t>(got);
    r.out->pixels.resize(size_t{r.width} * r.height * static_cast<size_t>(r.out->channels));
  } catch (const std::bad_alloc&) {
    allocated = false;
  }
  if (!allocated) {
    std::snprintf(r.message, sizeof r.message, "out of memory for the image");
    fail(reinterpret_cast<j_common_ptr>(&d));
  }
  while (d.output_scanline < d.output_height) {
    const size_t y = d.output_scanline;
    uint8_t* dst = r.out->pixels.data() + y * size_t{r.width} * static_cast<size_t>(r.out->channels);
    JSAMPROW rows[1] = {cmyk ? r.line->data() : dst};
    if (jpeg_read_scanlines(&d, rows, 1) != 1) {  // a memory source never suspends: cannot happen
      std::snprintf(r.message, sizeof r.message, "the decoder stopped at row %zu of %u", y, static_cast<unsigned>(r.height));
      fail(reinterpret_cast<j_common_ptr>(&d));
    }
    if (cmyk)
      for (size_t x = 0; x < r.width; ++x)
        for (size_t ch = 0; ch < 3; ++ch) dst[x * 3 + ch] = times_over_255((*r.line)[x * 4 + ch], (*r.line)[x * 4 + 3]);
  }
  jpeg_finish_decompress(&d);
  jpeg_destroy_decompress(&d);
  return true;
}

}  // namespace

Image8 decode_jpeg(const std::string& path, const std::string& bytes) {
  Image8 out;
  std::vector<uint8_t> line;
  JpegRead r;
  r.out = &out;
  r.line = &line;
  if (!decode(r, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size())) {
    if (r.too_many_pixels) throw_too_many_pixels(path, r.width, r.height);
    throw Error("cannot decode image " + path + ": corrupt JPEG: " + r.message, ErrorKind::bad_input);
  }
  return out;
}

}  // namespace diffuse
