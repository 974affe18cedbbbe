// See sample_files.h.
#include "tools/sample_files.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "diffuse/error.h"
#include "engine/options.h"
#include "nn/atomic_file.h"
#include "nn/layout.h"
#include "nn/safetensors.h"

namespace diffuse::cli {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

void check_output_file(const std::string& flag, const std::string& path, const std::string& extension) {
  if (!extension.empty() && lower(fs::path(path).extension().string()) != extension)
    throw Error(flag + " " + path + ": expected a " + extension + " file", ErrorKind::usage);
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(flag + " " + path + ": is a directory", ErrorKind::bad_input);
  const fs::path parent = fs::path(path).parent_path();
  options::check_output_directory(parent.empty() ? "." : parent.string(), flag);
}

std::vector<float> read_noise_file(const std::string& path, int64_t count, int channels, int side) {
  try {
    SafetensorsFile file = SafetensorsFile::open(path);
    if (!file.contains("noise")) throw Error(path + ": no tensor `noise` (--noise reads the starting noise from it)");
    if (file.dtype("noise") != "F32")
      throw Error(path + ": `noise` is " + file.dtype("noise") + "; --noise reads F32");
    const Shape want{count, channels, side, side};
    if (file.shape("noise") != want)
      throw Error(path + ": `noise` is " + shape_str(file.shape("noise")) + "; --n " + std::to_string(count) +
                  " images of this model need NCHW " + shape_str(want));
    Tensor nhwc = nchw_to_nhwc(file.get("noise", DType::f32));
    const float* p = nhwc.data<float>();
    return std::vector<float>(p, p + nhwc.numel());
  } catch (const Error& e) {
    throw Error(e.what(), ErrorKind::bad_input);  // whatever is wrong, it is the file's fault
  }
}

void write_raw_samples(const std::string& path, const std::vector<float>& nhwc, int64_t count, int side,
                       int channels) {
  Tensor t = Tensor::empty({count, side, side, channels});
  std::copy(nhwc.begin(), nhwc.end(), t.data<float>());
  fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) create_directories(parent.string(), "the directory of " + path);
  save_safetensors(path, {{"samples", nhwc_to_nchw(t)}});
}

}  // namespace diffuse::cli
