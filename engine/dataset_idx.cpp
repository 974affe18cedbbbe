// IDX files (the MNIST format): a big-endian magic 0x0000 08 D (unsigned bytes, D dimensions),
// D big-endian u32 sizes, then the bytes. Images are 0x00000803 [n, rows, cols], labels
// 0x00000801 [n]. A file that starts with the gzip magic (1f 8b) is inflated as it is read. The
// header is read first and decides everything after it: the size it declares is checked against
// the dataset limits (docs/formats.md, "Limits") before anything of that size is allocated, and
// exactly that many bytes are read or inflated — a file holding fewer or more is refused, and a
// gzip is never inflated past the declared size.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>

#include "engine/dataset.h"

namespace diffuse {

namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw Error("IDX file " + path + ": " + what, ErrorKind::bad_input);
}

// The bytes of an IDX file in order, plain or inflated from gzip on the fly, never more than
// asked for.
class IdxStream {
 public:
  explicit IdxStream(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      const int err = errno;
      throw Error("cannot read " + path_ + ": " + std::strerror(err), ErrorKind::bad_input);
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw Error("cannot read " + path_ + ": not a regular file", ErrorKind::bad_input);
    }
    file_size_ = static_cast<uint64_t>(st.st_size);
    fill();
    gzipped_ = zs_.avail_in >= 2 && zs_.next_in[0] == 0x1f && zs_.next_in[1] == 0x8b;
    if (gzipped_ && inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) {
      ::close(fd_);
      bad(path_, "cannot initialise zlib");
    }
  }
  ~IdxStream() {
    if (gzipped_) inflateEnd(&zs_);
    ::close(fd_);
  }
  IdxStream(const IdxStream&) = delete;
  IdxStream& operator=(const IdxStream&) = delete;

  bool gzipped() const { return gzipped_; }
  uint64_t file_size() const { return file_size_; }

  // Reads up to n bytes into dst; fewer only where the data ends.
  size_t read(void* dst, size_t n) {
    auto* out = static_cast<unsigned char*>(dst);
    size_t got = 0;
    while (got < n) {
      if (zs_.avail_in == 0 && !input_done_) fill();
      if (!gzipped_) {
        if (zs_.avail_in == 0) break;
        const size_t take = std::min<size_t>(zs_.avail_in, n - got);
        std::memcpy(out + got, zs_.next_in, take);
        zs_.next_in += take;
        zs_.avail_in -= static_cast<uInt>(take);
        got += take;
        continue;
      }
      if (stream_end_) break;
      zs_.next_out = out + got;
      zs_.avail_out = static_cast<uInt>(std::min<size_t>(n - got, UINT32_MAX));
      const uInt before = zs_.avail_out;
      const int rc = inflate(&zs_, Z_NO_FLUSH);
      got += before - zs_.avail_out;
      if (rc == Z_STREAM_END) {
        stream_end_ = true;  // the trailer's CRC and length have been checked
      } else if (rc == Z_BUF_ERROR && zs_.avail_in == 0 && input_done_) {
        bad(path_, "truncated gzip data (the compressed stream ends early)");
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        bad(path_, "corrupt gzip data (" + std::string(zs_.msg ? zs_.msg : "error " + std::to_string(rc)) + ")");
      }
    }
    return got;
  }

 private:
  void fill() {
    ssize_t n;
    do n = ::read(fd_, input_, sizeof input_);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      const int err = errno;
      throw Error("cannot read " + path_ + ": " + std::strerror(err), ErrorKind::bad_input);
    }
    input_done_ = n == 0;
    zs_.next_in = input_;
    zs_.avail_in = static_cast<uInt>(n);
  }

  std::string path_;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  bool gzipped_ = false, input_done_ = false, stream_end_ = false;
  z_stream zs_{};
  unsigned char input_[1 << 16];
};

// An IDX file's dims and data (the bytes after the header).
struct Idx {
  std::vector<uint32_t> dims;
  std::string data;
};

// Reads the header, lets `check_header` refuse the declared dims before anything of their size is
// allocated, then reads exactly the declared bytes and makes sure nothing follows.
Idx read_idx(const std::string& path, int ndim, const char* what,
             const std::function<void(const std::vector<uint32_t>&, uint64_t data_bytes)>& check_header) {
  IdxStream in(path);
  unsigned char b[4 + 4 * 3];
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  const size_t got = in.read(b, 4);
  if (got < 4) bad(path, "truncated: " + std::to_string(got) + " bytes, too short for the IDX magic number");
  const uint32_t magic = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
  const uint32_t expected = 0x00000800u | static_cast<uint32_t>(ndim);
  if (magic != expected) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "bad magic 0x%08x, expected 0x%08x for an IDX %s file%s", magic, expected, what,
                  in.gzipped() ? " (in its inflated gzip data)" : "");
    bad(path, buf);
  }
  if (in.read(b + 4, header - 4) < header - 4) bad(path, "truncated: the header needs " + std::to_string(header) + " bytes");
  Idx idx;
  uint64_t expected_bytes = 1;
  std::string dims_text;
  for (int d = 0; d < ndim; ++d) {
    const unsigned char* p = b + 4 + 4 * d;
    const uint32_t v = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    idx.dims.push_back(v);
    if (__builtin_mul_overflow(expected_bytes, uint64_t{v}, &expected_bytes)) expected_bytes = UINT64_MAX;
    if (d) dims_text += "x";
    dims_text += std::to_string(v);
  }
  const std::string describes = "the header describes " + dims_text + " = " + std::to_string(expected_bytes) + " bytes";
  if (!in.gzipped()) {  // the size on disk settles it before anything is read
    const uint64_t available = in.file_size() - std::min<uint64_t>(in.file_size(), header);
    if (available < expected_bytes)
      bad(path, "truncated: " + describes + " but only " + std::to_string(available) + " follow");
    if (available > expected_bytes)
      bad(path, std::to_string(available - expected_bytes) + " bytes follow the " + dims_text + " the header describes");
  }
  check_header(idx.dims, expected_bytes);
  // In pieces, so that a gzip declaring more than it holds allocates only what it holds.
  constexpr size_t kPiece = size_t{1} << 26;
  while (idx.data.size() < expected_bytes) {
    const size_t have = idx.data.size();
    const size_t piece = static_cast<size_t>(std::min<uint64_t>(kPiece, expected_bytes - have));
    idx.data.resize(have + piece);
    const size_t n = in.read(idx.data.data() + have, piece);
    if (n < piece) bad(path, "truncated: " + describes + " but only " + std::to_string(have + n) + " follow");
  }
  char extra;
  if (in.read(&extra, 1) != 0) bad(path, "the data is longer than " + describes);
  return idx;
}

}  // namespace

Dataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                         int64_t sample_size, int64_t in_channels, const DatasetOptions& options) {
  if (in_channels != 1 && in_channels != 3)
    throw Error("dataset " + images_path + ": in_channels must be 1 or 3, got " + std::to_string(in_channels));
  const int64_t s = sample_size, c = in_channels;
  Idx images = read_idx(images_path, 3, "images", [&](const std::vector<uint32_t>& dims, uint64_t bytes) {
    if (dims[0] == 0) bad(images_path, "holds no images");
    if (dims[1] == 0 || dims[2] == 0)
      bad(images_path, "has empty " + std::to_string(dims[1]) + "x" + std::to_string(dims[2]) + " images");
    const int64_t kept = options.max_images > 0 ? std::min<int64_t>(options.max_images, dims[0]) : dims[0];
    if (bytes > static_cast<uint64_t>(kMaxDatasetBytes))
      bad(images_path, "the header declares " + std::to_string(dims[0]) + " images of " + std::to_string(dims[1]) +
                           "x" + std::to_string(dims[2]) + " = " + std::to_string(bytes) + " bytes, more than the " +
                           std::to_string(kMaxDatasetBytes) + " allowed (docs/formats.md, Limits)");
    std::error_code ec;
    const auto disk = std::filesystem::file_size(images_path, ec);
    check_dataset_size(images_path, kept, s, c, static_cast<int64_t>(bytes), ec ? 0 : static_cast<int64_t>(disk));
  });
  int64_t n = images.dims[0];
  const int64_t rows = images.dims[1], cols = images.dims[2];

  std::vector<int64_t> labels;
  if (!labels_path.empty()) {
    Idx l = read_idx(labels_path, 1, "labels", [&](const std::vector<uint32_t>& dims, uint64_t) {
      if (dims[0] != images.dims[0])
        throw Error("dataset " + images_path + " has " + std::to_string(n) + " images but labels file " +
                        labels_path + " has " + std::to_string(dims[0]) + " labels",
                    ErrorKind::bad_input);
    });
    labels.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = static_cast<uint8_t>(l.data[static_cast<size_t>(i)]);
  }
  if (options.max_images > 0 && options.max_images < n) {
    n = options.max_images;
    if (!labels.empty()) labels.resize(static_cast<size_t>(n));
  }

  std::vector<uint8_t> pixels(static_cast<size_t>(n * s * s * c));
  const auto* src = reinterpret_cast<const uint8_t*>(images.data.data());
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
