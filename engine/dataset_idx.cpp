// IDX files (the MNIST format): a big-endian magic 0x0000 08 D (unsigned bytes, D dimensions),
// D big-endian u32 sizes, then the bytes. Images are 0x00000803 [n, rows, cols], labels
// 0x00000801 [n]. A file that starts with the gzip magic (1f 8b) is inflated in memory first.
#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "engine/dataset.h"
#include "nn/atomic_file.h"

namespace diffuse {

namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw Error("IDX file " + path + ": " + what);
}

std::string gunzip(const std::string& path, const std::string& packed) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) bad(path, "cannot initialise zlib");
  std::string out;
  // The gzip trailer's last 4 bytes hold the uncompressed size mod 2^32: a good first guess.
  uint32_t hint = 0;
  if (packed.size() >= 4) std::memcpy(&hint, packed.data() + packed.size() - 4, 4);
  // Deflate cannot expand data more than ~1032x, so a corrupt trailer cannot ask for more.
  out.resize(std::clamp<size_t>(hint, 1 << 16, packed.size() * 1032 + (1 << 16)));
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(packed.data()));
  zs.avail_in = static_cast<uInt>(packed.size());
  size_t produced = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (produced == out.size()) out.resize(out.size() * 2);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    zs.avail_out = static_cast<uInt>(std::min<size_t>(out.size() - produced, UINT32_MAX));
    uInt before = zs.avail_out;
    rc = inflate(&zs, Z_NO_FLUSH);
    produced += before - zs.avail_out;
    if (rc == Z_STREAM_END) break;
    if (rc == Z_BUF_ERROR && zs.avail_in == 0) {
      inflateEnd(&zs);
      bad(path, "truncated gzip data (the compressed stream ends early)");
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      std::string msg = zs.msg ? zs.msg : "error " + std::to_string(rc);
      inflateEnd(&zs);
      bad(path, "corrupt gzip data (" + msg + ")");
    }
  }
  inflateEnd(&zs);
  out.resize(produced);
  return out;
}

// The decoded contents of an IDX file: dims and a pointer to the bytes after the header.
struct Idx {
  std::string bytes;  // the whole (inflated) file
  std::vector<uint32_t> dims;
  size_t header = 0;
};

Idx read_idx(const std::string& path, int ndim, const char* what) {
  Idx idx;
  idx.bytes = read_file(path);
  if (idx.bytes.size() >= 2 && static_cast<uint8_t>(idx.bytes[0]) == 0x1f && static_cast<uint8_t>(idx.bytes[1]) == 0x8b)
    idx.bytes = gunzip(path, idx.bytes);
  const auto* b = reinterpret_cast<const uint8_t*>(idx.bytes.data());
  const size_t size = idx.bytes.size();
  const uint32_t expected = 0x00000800u | static_cast<uint32_t>(ndim);
  if (size < 4) bad(path, "truncated: " + std::to_string(size) + " bytes, too short for the IDX magic number");
  uint32_t magic = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
  if (magic != expected) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "bad magic 0x%08x, expected 0x%08x for an IDX %s file", magic, expected, what);
    bad(path, buf);
  }
  idx.header = 4 + 4 * static_cast<size_t>(ndim);
  if (size < idx.header) bad(path, "truncated: the header needs " + std::to_string(idx.header) + " bytes");
  uint64_t expected_bytes = 1;
  std::string dims_text;
  for (int d = 0; d < ndim; ++d) {
    const uint8_t* p = b + 4 + 4 * d;
    uint32_t v = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    idx.dims.push_back(v);
    if (__builtin_mul_overflow(expected_bytes, uint64_t{v}, &expected_bytes)) expected_bytes = UINT64_MAX;
    if (d) dims_text += "x";
    dims_text += std::to_string(v);
  }
  const uint64_t available = size - idx.header;
  if (available < expected_bytes)
    bad(path, "truncated: the header describes " + dims_text + " = " + std::to_string(expected_bytes) +
                  " bytes but only " + std::to_string(available) + " follow");
  if (available > expected_bytes)
    bad(path, std::to_string(available - expected_bytes) + " bytes follow the " + dims_text +
                  " the header describes");
  return idx;
}

}  // namespace

Dataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                         int64_t sample_size, int64_t in_channels, const DatasetOptions& options) {
  if (in_channels != 1 && in_channels != 3)
    throw Error("dataset " + images_path + ": in_channels must be 1 or 3, got " + std::to_string(in_channels));
  Idx images = read_idx(images_path, 3, "images");
  int64_t n = images.dims[0], rows = images.dims[1], cols = images.dims[2];
  if (n == 0) bad(images_path, "holds no images");
  if (rows == 0 || cols == 0) bad(images_path, "has empty " + std::to_string(rows) + "x" + std::to_string(cols) + " images");

  std::vector<int64_t> labels;
  if (!labels_path.empty()) {
    Idx l = read_idx(labels_path, 1, "labels");
    if (l.dims[0] != images.dims[0])
      throw Error("dataset " + images_path + " has " + std::to_string(n) + " images but labels file " +
                  labels_path + " has " + std::to_string(l.dims[0]) + " labels");
    labels.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = static_cast<uint8_t>(l.bytes[l.header + i]);
  }
  if (options.max_images > 0 && options.max_images < n) {
    n = options.max_images;
    if (!labels.empty()) labels.resize(static_cast<size_t>(n));
  }

  const int64_t s = sample_size, c = in_channels;
  std::vector<uint8_t> pixels(static_cast<size_t>(n * s * s * c));
  const auto* src = reinterpret_cast<const uint8_t*>(images.bytes.data() + images.header);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* img = src + i * rows * cols;
    std::vector<uint8_t> gray = (rows == s && cols == s) ? std::vector<uint8_t>(img, img + s * s)
                                                         : resize_to_square(img, rows, cols, 1, s);
    uint8_t* dst = pixels.data() + i * s * s * c;
    for (int64_t p = 0; p < s * s; ++p)
      for (int64_t k = 0; k < c; ++k) dst[p * c + k] = gray[static_cast<size_t>(p)];
  }
  std::string source = images_path + (labels_path.empty() ? "" : " + " + labels_path);
  return Dataset(source, s, c, std::move(pixels), std::move(labels), {});
}

}  // namespace diffuse
