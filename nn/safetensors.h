// safetensors I/O (docs/design.md §9): the Hugging Face format diffusers checkpoints use. Layout: an
// 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
// optional "__metadata__" (string → string), then the data section. The reader maps the file
// read-only and validates it the way the reference Rust implementation does — tensors must tile
// the data section exactly (no overlap, no holes, no trailing bytes) — before anything is read.
#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nn/tensor.h"

namespace diffuse {

class SafetensorsFile {
 public:
  // Maps and validates the whole file; throws one diffuse::Error naming the file and the fault.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  size_t size() const { return entries_.size(); }
  Shape shape(const std::string& name) const;
  std::string dtype(const std::string& name) const;  // as stored: "F32", "BF16", "F16", ...
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A host tensor converted to `want` (F16 is decoded to f32 first; any float/int conversion
  // goes through Tensor::to). Copies out of the mapping.
  Tensor get(const std::string& name, DType want = DType::f32) const;

  // Zero-copy access to the stored bytes; valid while this object (or a copy of it) lives.
  // The pointer may be unaligned for the dtype (the data section starts at 8 + N).
  const unsigned char* raw_bytes(const std::string& name, size_t* nbytes) const;

  struct Entry {
    std::string dtype;
    Shape shape;
    uint64_t begin = 0, end = 0;  // byte offsets within the data section
  };

 private:
  struct Mapping;
  const Entry& entry(const std::string& name) const;

  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  const unsigned char* data_ = nullptr;  // start of the data section inside the mapping
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any device; copied to the host) atomically through nn/atomic_file.h. Data is
// ordered by dtype, descending in the reference's Dtype enum (so by descending element size), then
// name, like the reference writer, so every tensor
// starts at an offset aligned to its element size; the header is padded with spaces to a
// multiple of 8 bytes. Duplicate names, "__metadata__" as a tensor name and undefined tensors
// are errors; on any error nothing at `path` changes.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// save_safetensors with every f32 tensor stored as F16, as diffusers' fp16 variants are (other
// dtypes are stored as they are). A finite value beyond ±65504, which F16 would make infinite,
// is an error naming the tensor.
void save_safetensors_f16(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                          const std::map<std::string, std::string>& metadata = {});

// IEEE half → float (exact, including subnormals, infinities and NaN).
float f16_to_float(uint16_t h);
// float → IEEE half, rounded to nearest even (as PyTorch's .half()); beyond ±65504 is infinity.
uint16_t float_to_f16(float f);

}  // namespace diffuse
