// libFuzzer target: the image-folder dataset loader (engine/dataset.h's load_image_folder) and the
// image decoder under it (engine/image_io.h's read_image), on one arbitrary file.
// Input layout: [image file][flags: u8]. flags bits 0-1 pick the file's extension (.png, .jpg,
// .jpeg, .bmp: the name must not decide which decoder runs, issue 13), bit 2 puts the file in a
// class subfolder, bit 3 asks for 3 channels (else 1). An empty input is an empty .png.
#include "engine/dataset.h"
#include "engine/image_io.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace diffuse;
  uint8_t flags = size > 0 ? data[size - 1] : 0;
  size_t file_size = size > 0 ? size - 1 : 0;
  static const char* const kExtensions[] = {".png", ".jpg", ".jpeg", ".bmp"};
  std::string dir = fuzz::fresh_dir("images");
  std::string relative = std::string("images/") + ((flags & 4) ? "class_a/" : "") + "0" + kExtensions[flags & 3];
  std::string path = fuzz::write_input(relative, data, file_size);
  int64_t channels = (flags & 8) ? 3 : 1;
  fuzz::expect_only_diffuse_errors([&] { (void)read_image(path); });
  fuzz::expect_only_diffuse_errors([&] {
    Dataset dataset = load_image_folder(dir, 8, channels, DatasetOptions{});
    (void)dataset.image(0);
  });
  return 0;
}
