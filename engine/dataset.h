// Training data (docs/design.md §9): IDX files (MNIST / Fashion-MNIST, gzipped or not) and folders of
// PNG/JPEG/BMP images, held in memory as uint8 [N, S, S, C] already resized to sample_size S, and
// handed out as f32 NHWC batches in [-1, 1] (pixel/127.5 − 1). The Batcher's order is a pure
// function of (seed, epoch, index), so a run resumed from a saved position sees the same batches.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/tensor.h"

namespace diffuse {

struct DatasetOptions {
  int64_t max_images = 0;   // keep only the first N images (0 = all), e.g. for quick runs
  bool load_labels = true;  // IDX label file / class subfolders
  std::string labels_path;  // an explicit IDX labels file (default: found next to the images)
};

class Dataset {
 public:
  // pixels: uint8 [count, size, size, channels]; labels empty or one per image.
  Dataset(std::string source, int64_t size, int64_t channels, std::vector<uint8_t> pixels,
          std::vector<int64_t> labels, std::vector<std::string> class_names);

  const std::string& source() const { return source_; }  // what was loaded, for messages
  int64_t count() const { return count_; }
  int64_t height() const { return size_; }
  int64_t width() const { return size_; }
  int64_t channels() const { return channels_; }
  bool has_labels() const { return !labels_.empty(); }
  int64_t num_classes() const { return num_classes_; }
  // Class index → name (subfolder names; "0".."K-1" for IDX labels).
  const std::vector<std::string>& class_names() const { return class_names_; }

  int64_t label(int64_t i) const;  // throws when the dataset has no labels
  // Image i as f32 [H, W, C] in [-1, 1], optionally mirrored left-right, into dst.
  void copy_image(int64_t i, float* dst, bool flip = false) const;
  Tensor image(int64_t i) const;  // [H, W, C] f32
  const uint8_t* pixels(int64_t i) const;  // the stored uint8 [H, W, C]

 private:
  std::string source_;
  int64_t count_ = 0, size_ = 0, channels_ = 0, num_classes_ = 0;
  std::vector<uint8_t> pixels_;
  std::vector<int64_t> labels_;
  std::vector<std::string> class_names_;
};

// `path_or_name`: "fashion-mnist" (Debian's /usr/share/datasets/fashion-mnist training split),
// "fashion-mnist-test" (its t10k split), an IDX images file (labels found next to it by the
// MNIST naming "...-images-idx3-ubyte[.gz]" → "...-labels-idx1-ubyte[.gz]"), a directory holding
// an IDX images file (train-* preferred), or a directory of images. in_channels 1 (grayscale) or
// 3 (RGB). Every image is resized to sample_size × sample_size (see resize_to_square).
Dataset load_dataset(const std::string& path_or_name, int64_t sample_size, int64_t in_channels,
                     const DatasetOptions& options = {});

// Limits (docs/formats.md, "Limits"), checked from headers and file counts before the memory is
// allocated, so a small file cannot ask for gigabytes: at most kMaxDatasetImages images, and at
// most kMaxDatasetBytes held at once while loading (the resized uint8 pixels, plus an IDX file's
// own bytes while they are being resized).
inline constexpr int64_t kMaxDatasetImages = int64_t{1} << 24;  // 16,777,216
inline constexpr int64_t kMaxDatasetBytes = int64_t{1} << 32;   // 4 GiB
// And beyond 1 GiB, at most kMaxDatasetExpansion times the bytes the files take on disk: a small
// file (a gzip of zeros, a megabyte of 1x1 images to upscale) never asks for gigabytes, while a
// real dataset of that size (tens of MB of PNG or gzipped IDX at least) still loads.
inline constexpr int64_t kExpansionCheckedAbove = int64_t{1} << 30;  // 1 GiB
inline constexpr int64_t kMaxDatasetExpansion = 256;

// Throws a diffuse::Error naming `source` and the bytes needed when `count` images of
// size x size x channels (plus `source_bytes` held alongside them) exceed those limits;
// `disk_bytes` is what the dataset's files take on disk (0: not known, no expansion check).
void check_dataset_size(const std::string& source, int64_t count, int64_t size, int64_t channels,
                        int64_t source_bytes = 0, int64_t disk_bytes = 0);

// The two loaders behind load_dataset, exposed for tests and tools.
Dataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                         int64_t sample_size, int64_t in_channels, const DatasetOptions& options);
Dataset load_image_folder(const std::string& dir, int64_t sample_size, int64_t in_channels,
                          const DatasetOptions& options);

// Resize-then-centre-crop, as diffusers' training examples do with torchvision
// (Resize(S, BILINEAR) then CenterCrop(S)): the shorter side is scaled to S with PIL-style
// antialiased bilinear filtering (a triangle filter widened by the scale when shrinking, plain
// bilinear with half-pixel centres when enlarging), then the centre S × S is kept. So a 28×28
// MNIST digit becomes 32×32 by bilinear upscaling (no padding). Output is rounded to uint8.
std::vector<uint8_t> resize_to_square(const uint8_t* src, int64_t h, int64_t w, int64_t c, int64_t size);

// Where a Batcher is in its stream: `index` images of epoch `epoch` have been handed out.
struct BatchPosition {
  uint64_t epoch = 0;
  int64_t index = 0;
  bool operator==(const BatchPosition&) const = default;
};

struct Batch {
  Tensor images;  // f32 [B, H, W, C] on the host
  Tensor labels;  // i64 [B], undefined when the dataset has no labels
};

// Draws batches without replacement: epoch e visits the images in a permutation drawn from
// Philox stream kDataShuffle under (seed, e); a batch that crosses the end of an epoch continues
// into the next one, so every batch is full. With random_flip, each draw is mirrored left-right
// when a Philox kAugment word for (seed, epoch, index) is odd. The dataset must outlive it.
class Batcher {
 public:
  Batcher(const Dataset& data, int64_t batch_size, uint64_t seed, bool random_flip = false);

  Batch next();
  // Data-parallel training (docs/distributed.md): draws the next batch of batch_size images, as
  // next() does, but returns only its rows [first, first + count): each rank takes its shard of
  // the one global batch, so no two ranks see the same draw and the global batch is the same
  // whatever the rank count.
  Batch next_rows(int64_t first, int64_t count);
  BatchPosition position() const { return pos_; }
  void set_position(const BatchPosition& pos);  // e.g. restored from a checkpoint
  // The dataset index drawn at (epoch, index): the permutation, exposed for tests.
  int64_t draw(uint64_t epoch, int64_t index);
  bool flipped(uint64_t epoch, int64_t index) const;

 private:
  const std::vector<int64_t>& permutation(uint64_t epoch);

  const Dataset& data_;
  int64_t batch_size_;
  uint64_t seed_;
  bool random_flip_;
  BatchPosition pos_;
  uint64_t perm_epoch_ = UINT64_MAX;
  std::vector<int64_t> perm_;
};

}  // namespace diffuse
