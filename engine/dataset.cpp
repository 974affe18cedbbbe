// The in-memory Dataset, load_dataset's choice of loader, and the Batcher. The Batcher's
// permutation for an epoch is a Fisher-Yates shuffle whose swap for slot i uses Philox block
// (epoch << 32 | i) of stream kDataShuffle, so any (epoch, index) can be recomputed on resume.
#include "engine/dataset.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>

#include "kernels/philox.h"

namespace diffuse {

namespace fs = std::filesystem;

Dataset::Dataset(std::string source, int64_t size, int64_t channels, std::vector<uint8_t> pixels,
                 std::vector<int64_t> labels, std::vector<std::string> class_names)
    : source_(std::move(source)), size_(size), channels_(channels), pixels_(std::move(pixels)),
      labels_(std::move(labels)), class_names_(std::move(class_names)) {
  const int64_t per_image = size_ * size_ * channels_;
  if (size_ <= 0 || channels_ <= 0 || pixels_.size() % static_cast<size_t>(per_image) != 0)
    throw Error("dataset " + source_ + ": " + std::to_string(pixels_.size()) + " pixel bytes are not whole " +
                std::to_string(size_) + "x" + std::to_string(size_) + "x" + std::to_string(channels_) + " images");
  count_ = static_cast<int64_t>(pixels_.size()) / per_image;
  if (!labels_.empty() && static_cast<int64_t>(labels_.size()) != count_)
    throw Error("dataset " + source_ + ": " + std::to_string(labels_.size()) + " labels for " +
                std::to_string(count_) + " images");
  for (int64_t l : labels_) {
    if (l < 0) throw Error("dataset " + source_ + ": negative label " + std::to_string(l));
    num_classes_ = std::max(num_classes_, l + 1);
  }
  num_classes_ = std::max(num_classes_, static_cast<int64_t>(class_names_.size()));
  if (!labels_.empty() && class_names_.empty())
    for (int64_t k = 0; k < num_classes_; ++k) class_names_.push_back(std::to_string(k));
}

int64_t Dataset::label(int64_t i) const {
  if (labels_.empty()) throw Error("dataset " + source_ + " has no labels");
  if (i < 0 || i >= count_) throw Error("dataset " + source_ + ": image index " + std::to_string(i) + " out of range");
  return labels_[static_cast<size_t>(i)];
}

const uint8_t* Dataset::pixels(int64_t i) const {
  if (i < 0 || i >= count_)
    throw Error("dataset " + source_ + ": image index " + std::to_string(i) + " out of range (" +
                std::to_string(count_) + " images)");
  return pixels_.data() + static_cast<size_t>(i * size_ * size_ * channels_);
}

void Dataset::copy_image(int64_t i, float* dst, bool flip) const {
  const uint8_t* src = pixels(i);
  const int64_t c = channels_, w = size_;
  for (int64_t y = 0; y < size_; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const uint8_t* p = src + (y * w + (flip ? w - 1 - x : x)) * c;
      float* q = dst + (y * w + x) * c;
      for (int64_t k = 0; k < c; ++k) q[k] = static_cast<float>(p[k]) / 127.5f - 1.0f;
    }
}

Tensor Dataset::image(int64_t i) const {
  Tensor t = Tensor::empty({size_, size_, channels_});
  copy_image(i, t.data<float>());
  return t;
}

void check_dataset_size(const std::string& source, int64_t count, int64_t size, int64_t channels,
                        int64_t source_bytes, int64_t disk_bytes) {
  if (count > kMaxDatasetImages)
    throw Error("dataset " + source + ": " + std::to_string(count) + " images, more than the " +
                    std::to_string(kMaxDatasetImages) + " allowed (docs/formats.md, Limits)",
                ErrorKind::bad_input);
  // count <= 2^24 and size, channels come from checked options, but a huge --sample-size must
  // not wrap: compute in double, exact below 2^53.
  const double resized = static_cast<double>(count) * static_cast<double>(size) * static_cast<double>(size) *
                         static_cast<double>(channels);
  const double total = resized + static_cast<double>(source_bytes);
  if (total > static_cast<double>(kMaxDatasetBytes)) {
    char text[160];
    std::snprintf(text, sizeof text, "%.0f bytes (%.0f for %lld images resized to %lldx%lldx%lld", total, resized,
                  static_cast<long long>(count), static_cast<long long>(size), static_cast<long long>(size),
                  static_cast<long long>(channels));
    throw Error("dataset " + source + ": loading it needs " + text +
                    (source_bytes ? ", " + std::to_string(source_bytes) + " for the file's own pixels)" : std::string(")")) +
                    ", more than the " + std::to_string(kMaxDatasetBytes) + " allowed (docs/formats.md, Limits)",
                ErrorKind::bad_input);
  }
  if (disk_bytes > 0 && total > static_cast<double>(kExpansionCheckedAbove) &&
      total > static_cast<double>(kMaxDatasetExpansion) * static_cast<double>(disk_bytes)) {
    char text[200];
    std::snprintf(text, sizeof text, "loading it needs %.0f bytes, %.0f times the %lld bytes its files take on disk",
                  total, total / static_cast<double>(disk_bytes), static_cast<long long>(disk_bytes));
    throw Error("dataset " + source + ": " + text + " (more than " + std::to_string(kMaxDatasetExpansion) +
                    " times is refused above 1 GiB: docs/formats.md, Limits)",
                ErrorKind::bad_input);
  }
}

// ---- choosing a loader ---------------------------------------------------------------------

namespace {

constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

bool is_idx_images_name(const std::string& name) { return name.find("idx3-ubyte") != std::string::npos; }

// MNIST naming: "train-images-idx3-ubyte.gz" ↔ "train-labels-idx1-ubyte.gz" (with or without .gz).
std::string find_labels_next_to(const std::string& images_path) {
  fs::path p(images_path);
  std::string name = p.filename().string();
  size_t at = name.find("images-idx3-ubyte");
  if (at == std::string::npos) return "";
  std::string stem = name.substr(0, at) + "labels-idx1-ubyte";
  for (const char* suffix : {".gz", ""}) {
    fs::path candidate = p.parent_path() / (stem + suffix);
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
  }
  return "";
}

}  // namespace

Dataset load_dataset(const std::string& path_or_name, int64_t sample_size, int64_t in_channels,
                     const DatasetOptions& options) {
  if (sample_size <= 0)
    throw Error("dataset " + path_or_name + ": sample size must be positive, got " + std::to_string(sample_size));
  if (in_channels != 1 && in_channels != 3)
    throw Error("dataset " + path_or_name + ": in_channels must be 1 (grayscale) or 3 (RGB), got " +
                std::to_string(in_channels));
  std::string images_path;
  if (path_or_name == "fashion-mnist" || path_or_name == "fashion-mnist-test") {
    bool test = path_or_name == "fashion-mnist-test";
    images_path = std::string(kFashionMnistDir) + (test ? "/t10k" : "/train") + "-images-idx3-ubyte.gz";
    std::error_code ec;
    if (!fs::is_regular_file(images_path, ec))
      throw Error("dataset " + path_or_name + ": " + images_path +
                  " not found (install Debian's dataset-fashion-mnist package)", ErrorKind::bad_input);
  } else {
    std::error_code ec;
    fs::file_status st = fs::status(path_or_name, ec);
    if (ec || !fs::exists(st))
      throw Error("dataset " + path_or_name +
                  " not found (expected an IDX file, a folder of images, or 'fashion-mnist')", ErrorKind::bad_input);
    if (fs::is_directory(st)) {
      std::vector<std::string> idx_files;
      for (const auto& e : fs::directory_iterator(path_or_name, ec))
        if (e.is_regular_file() && is_idx_images_name(e.path().filename().string()))
          idx_files.push_back(e.path().string());
      if (idx_files.empty()) return load_image_folder(path_or_name, sample_size, in_channels, options);
      std::sort(idx_files.begin(), idx_files.end());
      images_path = idx_files.front();
      for (const auto& f : idx_files)  // the training split when the folder holds both
        if (fs::path(f).filename().string().rfind("train", 0) == 0) {
          images_path = f;
          break;
        }
    } else {
      std::string ext = fs::path(path_or_name).extension().string();
      for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp")
        throw Error("dataset " + path_or_name + " is a single image; give the folder that holds the images",
                    ErrorKind::bad_input);
      images_path = path_or_name;
    }
  }
  std::string labels_path;
  if (options.load_labels)
    labels_path = options.labels_path.empty() ? find_labels_next_to(images_path) : options.labels_path;
  return load_idx_dataset(images_path, labels_path, sample_size, in_channels, options);
}

// ---- batches ---------------------------------------------------------------------------------

Batcher::Batcher(const Dataset& data, int64_t batch_size, uint64_t seed, bool random_flip)
    : data_(data), batch_size_(batch_size), seed_(seed), random_flip_(random_flip) {
  if (batch_size <= 0) throw Error("batch size must be positive, got " + std::to_string(batch_size));
  if (data.count() == 0) throw Error("dataset " + data.source() + " has no images to draw batches from");
  if (data.count() >= (int64_t{1} << 32))
    throw Error("dataset " + data.source() + " has more than 2^32 images");
}

void Batcher::set_position(const BatchPosition& pos) {
  if (pos.index < 0 || pos.index > data_.count())
    throw Error("batch position index " + std::to_string(pos.index) + " is outside dataset " + data_.source() +
                " of " + std::to_string(data_.count()) + " images");
  pos_ = pos;
}

const std::vector<int64_t>& Batcher::permutation(uint64_t epoch) {
  if (epoch == perm_epoch_) return perm_;
  const int64_t n = data_.count();
  perm_.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm_[static_cast<size_t>(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    philox::U32x4 r = philox::block(seed_, philox::kDataShuffle, (epoch << 32) | static_cast<uint64_t>(i));
    uint64_t word = (static_cast<uint64_t>(r.v[1]) << 32) | r.v[0];
    // 64 random bits modulo at most 2^32: the bias is below 2^-32.
    int64_t j = static_cast<int64_t>(word % static_cast<uint64_t>(i + 1));
    std::swap(perm_[static_cast<size_t>(i)], perm_[static_cast<size_t>(j)]);
  }
  perm_epoch_ = epoch;
  return perm_;
}

int64_t Batcher::draw(uint64_t epoch, int64_t index) {
  return permutation(epoch)[static_cast<size_t>(index)];
}

bool Batcher::flipped(uint64_t epoch, int64_t index) const {
  return (philox::block(seed_, philox::kAugment, (epoch << 32) | static_cast<uint64_t>(index)).v[0] & 1u) != 0;
}

Batch Batcher::next() { return next_rows(0, batch_size_); }

Batch Batcher::next_rows(int64_t first, int64_t count) {
  if (first < 0 || count <= 0 || first + count > batch_size_)
    throw Error("batch rows [" + std::to_string(first) + ", " + std::to_string(first + count) +
                ") are outside a batch of " + std::to_string(batch_size_));
  const int64_t h = data_.height(), w = data_.width(), c = data_.channels();
  Batch b;
  b.images = Tensor::empty({count, h, w, c});
  if (data_.has_labels()) b.labels = Tensor::empty({count}, DType::i64);
  float* out = b.images.data<float>();
  for (int64_t k = 0; k < batch_size_; ++k) {
    if (pos_.index >= data_.count()) {
      ++pos_.epoch;
      pos_.index = 0;
    }
    if (k >= first && k < first + count) {  // this shard's row: the other rows only advance the position
      const int64_t row = k - first;
      int64_t i = draw(pos_.epoch, pos_.index);
      bool flip = random_flip_ && flipped(pos_.epoch, pos_.index);
      data_.copy_image(i, out + row * h * w * c, flip);
      if (data_.has_labels()) b.labels.data<int64_t>()[row] = data_.label(i);
    }
    ++pos_.index;
  }
  return b;
}

}  // namespace diffuse
