// libFuzzer target: the safetensors reader (nn/safetensors.h) on an arbitrary file — open and
// validate, then read every tensor's shape, dtype, bytes and f32 conversion.
#include "fuzz/fuzz_support.h"
#include "nn/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace diffuse;
  std::string path = fuzz::write_input("model.safetensors", data, size);
  fuzz::expect_only_diffuse_errors([&] {
    SafetensorsFile file = SafetensorsFile::open(path);
    for (const std::string& name : file.names()) {
      (void)file.shape(name);
      (void)file.dtype(name);
      size_t nbytes = 0;
      (void)file.raw_bytes(name, &nbytes);
      (void)file.get(name, DType::f32);
    }
  });
  return 0;
}
