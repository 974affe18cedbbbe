// libFuzzer target: the IDX dataset reader (engine/dataset.h's load_idx_dataset), gzipped or not
// (the reader inflates any file that starts with the gzip magic), with an optional labels file.
// Input layout, so that one input can describe both files:
//   [images file][labels file][labels length: u16 little-endian][flags: u8]
// flags bit 0: read the images as 3 channels (else 1); bit 1: there is a labels file. An input
// shorter than the 3-byte trailer is an images file alone.
#include <algorithm>

#include "engine/dataset.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace diffuse;
  size_t images_size = size;
  size_t labels_size = 0;
  uint8_t flags = 0;
  if (size >= 3) {
    flags = data[size - 1];
    size_t declared = static_cast<size_t>(data[size - 3]) | static_cast<size_t>(data[size - 2]) << 8;
    labels_size = (flags & 2) ? std::min(declared, size - 3) : 0;
    images_size = size - 3 - labels_size;
  }
  std::string images = fuzz::write_input("train-images-idx3-ubyte", data, images_size);
  std::string labels;
  if (flags & 2) labels = fuzz::write_input("train-labels-idx1-ubyte", data + images_size, labels_size);
  DatasetOptions options;
  options.load_labels = (flags & 2) != 0;
  options.labels_path = labels;
  int64_t channels = (flags & 1) ? 3 : 1;
  fuzz::expect_only_diffuse_errors([&] {
    Dataset dataset = load_idx_dataset(images, labels, 8, channels, options);
    if (dataset.count() > 0) (void)dataset.image(dataset.count() - 1);
  });
  return 0;
}
