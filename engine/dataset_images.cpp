// Folders of PNG/JPEG/BMP images (decoded by read_image, engine/image_io.h, with its size and
// format checks; converted there to gray or RGB by stb_image's rules: gray is (77R + 150G + 29B)
// >> 8, and alpha is dropped), resized and centre-cropped to S×S; the whole dataset's size is
// checked before the first file is decoded. Class subfolders (non-hidden, holding at least one
// image) give labels in sorted-name order, like torchvision's ImageFolder; mixing them with
// top-level images is an error rather than a guess.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine/dataset.h"
#include "engine/image_io.h"

namespace diffuse {

namespace fs = std::filesystem;

namespace {

// PIL-style separable resampling taps for one axis of an `in` → `out` resize, for the outputs
// first .. first+count-1 only (the ones the centre crop keeps): output first+i covers input
// [start[i], start[i]+count[i]). Sized by the crop, never by the resized long side.
struct Taps {
  std::vector<int64_t> start, count;
  std::vector<float> weight;  // count[i] weights for output first+i, at offset i * stride
  int64_t stride = 0;
};

Taps make_taps(int64_t in, int64_t out, int64_t first, int64_t kept) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double filter_scale = std::max(scale, 1.0);  // widen the triangle when shrinking
  const double support = filter_scale;               // triangle radius 1, scaled
  Taps t;
  t.stride = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  t.start.resize(static_cast<size_t>(kept));
  t.count.resize(static_cast<size_t>(kept));
  t.weight.assign(static_cast<size_t>(kept * t.stride), 0.0f);
  std::vector<double> w(static_cast<size_t>(t.stride));
  for (int64_t i = 0; i < kept; ++i) {
    const double center = (static_cast<double>(first + i) + 0.5) * scale;
    int64_t lo = std::max<int64_t>(0, static_cast<int64_t>(center - support + 0.5));
    int64_t hi = std::min<int64_t>(in, static_cast<int64_t>(center + support + 0.5));
    hi = std::min(hi, lo + t.stride);
    double total = 0;
    for (int64_t x = lo; x < hi; ++x) {
      double d = std::fabs((static_cast<double>(x) - center + 0.5) / filter_scale);
      w[static_cast<size_t>(x - lo)] = std::max(0.0, 1.0 - d);
      total += w[static_cast<size_t>(x - lo)];
    }
    t.start[static_cast<size_t>(i)] = lo;
    t.count[static_cast<size_t>(i)] = hi - lo;
    for (int64_t k = 0; k < hi - lo; ++k)
      t.weight[static_cast<size_t>(i * t.stride + k)] =
          static_cast<float>(total > 0 ? w[static_cast<size_t>(k)] / total : 0.0);
  }
  return t;
}

uint8_t to_byte(float v) { return static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L)); }

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

bool hidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

// Image files under dir (recursively or not), sorted by path; hidden entries skipped.
std::vector<std::string> image_files(const fs::path& dir, bool recursive) {
  std::vector<std::string> out;
  std::error_code ec;
  if (recursive) {
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      if (hidden(it->path())) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file() && has_image_extension(it->path())) out.push_back(it->path().string());
    }
  } else {
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (!hidden(e.path()) && e.is_regular_file() && has_image_extension(e.path())) out.push_back(e.path().string());
  }
  if (ec) throw Error("cannot list dataset folder " + dir.string() + ": " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::vector<uint8_t> resize_to_square(const uint8_t* src, int64_t h, int64_t w, int64_t c, int64_t size) {
  if (h <= 0 || w <= 0 || c <= 0 || size <= 0)
    throw Error("resize_to_square: bad sizes " + std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(c) +
                " -> " + std::to_string(size));
  // torchvision Resize(size): the shorter side becomes `size`, the longer keeps the aspect ratio
  // (truncated); CenterCrop then takes the middle, offsets rounded half-to-even like Python.
  int64_t new_h = size, new_w = size;
  if (h < w) new_w = static_cast<int64_t>(static_cast<double>(size) * static_cast<double>(w) / static_cast<double>(h));
  if (w < h) new_h = static_cast<int64_t>(static_cast<double>(size) * static_cast<double>(h) / static_cast<double>(w));
  const int64_t top = static_cast<int64_t>(std::nearbyint((new_h - size) / 2.0));
  const int64_t left = static_cast<int64_t>(std::nearbyint((new_w - size) / 2.0));
  const Taps tx = make_taps(w, new_w, left, size), ty = make_taps(h, new_h, top, size);

  // Only the input rows the kept output rows read: at most about the shorter side's worth, so
  // the buffer is bounded by size x (short side) x c however long the long side is.
  const int64_t row_lo = ty.start.front(), row_hi = ty.start.back() + ty.count.back();
  std::vector<float> rows(static_cast<size_t>((row_hi - row_lo) * size * c));
  // Horizontal pass over those rows, only for the kept output columns.
  for (int64_t y = row_lo; y < row_hi; ++y)
    for (int64_t ox = 0; ox < size; ++ox) {
      const float* wt = &tx.weight[static_cast<size_t>(ox * tx.stride)];
      for (int64_t k = 0; k < c; ++k) {
        float acc = 0;
        for (int64_t t = 0; t < tx.count[static_cast<size_t>(ox)]; ++t)
          acc += wt[t] * src[(y * w + tx.start[static_cast<size_t>(ox)] + t) * c + k];
        rows[static_cast<size_t>(((y - row_lo) * size + ox) * c + k)] = acc;
      }
    }
  // Vertical pass for the kept output rows.
  std::vector<uint8_t> out(static_cast<size_t>(size * size * c));
  for (int64_t oy = 0; oy < size; ++oy) {
    const float* wt = &ty.weight[static_cast<size_t>(oy * ty.stride)];
    const int64_t y0 = ty.start[static_cast<size_t>(oy)] - row_lo;
    for (int64_t ox = 0; ox < size; ++ox)
      for (int64_t k = 0; k < c; ++k) {
        float acc = 0;
        for (int64_t t = 0; t < ty.count[static_cast<size_t>(oy)]; ++t)
          acc += wt[t] * rows[static_cast<size_t>(((y0 + t) * size + ox) * c + k)];
        out[static_cast<size_t>((oy * size + ox) * c + k)] = to_byte(acc);
      }
  }
  return out;
}

Dataset load_image_folder(const std::string& dir, int64_t sample_size, int64_t in_channels,
                          const DatasetOptions& options) {
  if (in_channels != 1 && in_channels != 3)
    throw Error("dataset " + dir + ": in_channels must be 1 or 3, got " + std::to_string(in_channels));
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error("dataset folder " + dir + " not found");

  // Class subfolders: the non-hidden immediate subdirectories that hold images.
  std::vector<std::string> class_names;
  std::vector<std::vector<std::string>> class_files;
  std::vector<std::string> subdirs;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory() && !hidden(e.path())) subdirs.push_back(e.path().filename().string());
  std::sort(subdirs.begin(), subdirs.end());
  for (const auto& name : subdirs) {
    auto files = image_files(fs::path(dir) / name, true);
    if (files.empty()) continue;
    class_names.push_back(name);
    class_files.push_back(std::move(files));
  }
  std::vector<std::string> top = image_files(dir, false);

  std::vector<std::string> files;
  std::vector<int64_t> labels;
  if (!class_names.empty()) {
    if (!top.empty())
      throw Error("dataset folder " + dir + " mixes images at its top level (" + top.front() +
                  ") with class subfolders (" + class_names.front() + "); use one or the other");
    for (size_t k = 0; k < class_files.size(); ++k)
      for (auto& f : class_files[k]) {
        files.push_back(std::move(f));
        labels.push_back(static_cast<int64_t>(k));
      }
  } else {
    files = std::move(top);
  }
  if (files.empty())
    throw Error("dataset folder " + dir + " has no images (.png, .jpg, .jpeg or .bmp, at the top level or in class subfolders)");
  if (options.max_images > 0 && options.max_images < static_cast<int64_t>(files.size())) {
    // Keep a prefix of the sorted list; with classes this may drop whole classes, as asked.
    files.resize(static_cast<size_t>(options.max_images));
    if (!labels.empty()) labels.resize(files.size());
  }
  if (!options.load_labels) {
    labels.clear();
    class_names.clear();
  }

  const int64_t n = static_cast<int64_t>(files.size()), s = sample_size, c = in_channels;
  int64_t disk_bytes = 0;
  for (const auto& f : files) {
    const auto size = fs::file_size(f, ec);
    if (!ec) disk_bytes += static_cast<int64_t>(size);
  }
  check_dataset_size("folder " + dir, n, s, c, 0, disk_bytes);
  std::vector<uint8_t> pixels(static_cast<size_t>(n * s * s * c));
  std::vector<std::string> errors(static_cast<size_t>(n));
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t i = 0; i < n; ++i) {
    const std::string& f = files[static_cast<size_t>(i)];
    try {
      const Image8 img = read_image(f, static_cast<int>(c));
      std::vector<uint8_t> square = resize_to_square(img.pixels.data(), img.height, img.width, c, s);
      std::copy(square.begin(), square.end(), pixels.begin() + static_cast<ptrdiff_t>(i * s * s * c));
    } catch (const std::exception& e) {  // no exception may leave an OpenMP region
      errors[static_cast<size_t>(i)] = e.what();
    }
  }
  for (const auto& e : errors)
    if (!e.empty()) throw Error("dataset folder " + dir + ": " + e);
  return Dataset(dir, s, c, std::move(pixels), std::move(labels), std::move(class_names));
}

}  // namespace diffuse
