// See sample_files.h.
#include "tools/sample_files.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>

#include "diffuse/error.h"
#include "nn/layout.h"
#include "nn/safetensors.h"

namespace diffuse::cli {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void bad_output(const std::string& flag, const std::string& path, const std::string& why) {
  throw Error(flag + " " + path + ": " + why, ErrorKind::usage);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// The nearest directory at or above `path` that exists must be one this process can create
// entries in; `path` itself need not exist.
void check_creatable(const std::string& flag, const std::string& path) {
  std::error_code ec;
  fs::path p = fs::absolute(path, ec);
  if (ec) bad_output(flag, path, ec.message());
  for (fs::path up = p.parent_path();; up = up.parent_path()) {
    fs::file_status st = fs::status(up, ec);
    if (fs::exists(st)) {
      if (!fs::is_directory(st)) bad_output(flag, path, up.string() + " is not a directory");
      if (::access(up.c_str(), W_OK | X_OK) != 0)
        bad_output(flag, path, "cannot write in " + up.string() + " (" + std::strerror(errno) + ")");
      return;
    }
    if (up == up.root_path() || up.empty()) bad_output(flag, path, "no existing directory above it");
  }
}

}  // namespace

void check_output_file(const std::string& flag, const std::string& path, const std::string& extension) {
  if (lower(fs::path(path).extension().string()) != extension)
    bad_output(flag, path, "expected a " + extension + " file");
  std::error_code ec;
  if (fs::is_directory(path, ec)) bad_output(flag, path, "is a directory");
  check_creatable(flag, path);
}

void check_output_dir(const std::string& flag, const std::string& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) return check_creatable(flag, path);
  if (!fs::is_directory(st)) bad_output(flag, path, "is not a directory");
  if (::access(path.c_str(), W_OK | X_OK) != 0)
    bad_output(flag, path, std::string("cannot write in it (") + std::strerror(errno) + ")");
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
  if (!parent.empty()) fs::create_directories(parent);
  save_safetensors(path, {{"samples", nhwc_to_nchw(t)}});
}

}  // namespace diffuse::cli
