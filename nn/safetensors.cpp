// safetensors reader and writer. Validation follows the reference implementation (huggingface/
// safetensors, tensor.rs): header ≤ 100 MB and inside the file, a JSON object, every entry with
// a known dtype, non-negative integer shape and [begin, end) offsets whose length is
// numel·sizeof(dtype); sorted by offset the tensors must tile the data section exactly.
#include "nn/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "nn/atomic_file.h"
#include "nn/json_input.h"

namespace diffuse {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit

struct StoredType {
  const char* name;
  size_t size;
  int rank;  // position in the reference's Dtype enum: the writer orders by it, descending
  bool is_float;
};
constexpr StoredType kStoredTypes[] = {
    {"F16", 2, 7, true}, {"BF16", 2, 8, true}, {"I32", 4, 9, false},
    {"F32", 4, 11, true}, {"F64", 8, 12, true}, {"I64", 8, 13, false},
};

const StoredType* find_stored(const std::string& name) {
  for (const auto& t : kStoredTypes)
    if (name == t.name) return &t;
  return nullptr;
}

const StoredType& stored_for(DType d) {
  switch (d) {
    case DType::f32: return *find_stored("F32");
    case DType::bf16: return *find_stored("BF16");
    case DType::f64: return *find_stored("F64");
    case DType::i32: return *find_stored("I32");
    case DType::i64: return *find_stored("I64");
  }
  throw Error("safetensors: unknown dtype");
}

// The tensor dtype a stored type loads into natively (F16 has none: it is decoded to f32).
DType native_dtype(const std::string& stored) {
  if (stored == "F32" || stored == "F16") return DType::f32;
  if (stored == "F64") return DType::f64;
  if (stored == "BF16") return DType::bf16;
  if (stored == "I32") return DType::i32;
  return DType::i64;
}

bool is_float(DType d) { return d == DType::f32 || d == DType::f64 || d == DType::bf16; }

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw Error("safetensors file " + path + ": " + what, ErrorKind::bad_input);
}

std::string range_str(uint64_t b, uint64_t e) {
  std::string s = "[";
  s += std::to_string(b);
  s += ", ";
  s += std::to_string(e);
  return s + ")";
}

// A JSON value that must be a non-negative integer.
uint64_t get_uint(const std::string& path, const nlohmann::json& v, const std::string& what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) bad(path, what + " is negative (" + json_excerpt(v) + ")");
  bad(path, what + " is not a non-negative integer (" + json_excerpt(v) + ")");
}

SafetensorsFile::Entry parse_entry(const std::string& path, const std::string& name,
                                   const nlohmann::json& j, uint64_t data_bytes) {
  const std::string who = "tensor '" + text_excerpt(name) + "'";
  if (!j.is_object()) bad(path, who + " is not a JSON object");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!j.contains(field)) bad(path, who + " has no \"" + field + "\"");
  SafetensorsFile::Entry e;

  if (!j["dtype"].is_string()) bad(path, who + " has a dtype that is not a string (" + json_excerpt(j["dtype"]) + ")");
  e.dtype = j["dtype"].get<std::string>();
  const StoredType* st = find_stored(e.dtype);
  if (!st) bad(path, who + " has dtype '" + text_excerpt(e.dtype) + "'; diffuse reads F32, F64, BF16, F16, I32 and I64");

  const auto& shape = j["shape"];
  if (!shape.is_array()) bad(path, who + " has a shape that is not an array (" + json_excerpt(shape) + ")");
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : shape) {
    uint64_t dim = get_uint(path, d, who + " shape " + json_excerpt(shape) + " dimension");
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      bad(path, who + " has an absurd dimension " + std::to_string(dim));
    e.shape.push_back(static_cast<int64_t>(dim));
    overflow |= __builtin_mul_overflow(numel, dim, &numel);
  }
  uint64_t nbytes = 0;
  overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(st->size), &nbytes);
  if (overflow) bad(path, who + " shape " + json_excerpt(shape) + " overflows a 64-bit byte count");

  const auto& off = j["data_offsets"];
  if (!off.is_array() || off.size() != 2)
    bad(path, who + " data_offsets must be [begin, end], got " + json_excerpt(off));
  e.begin = get_uint(path, off[0], who + " data_offsets begin");
  e.end = get_uint(path, off[1], who + " data_offsets end");
  if (e.end < e.begin) bad(path, who + " data_offsets " + json_excerpt(off) + " end before they begin");
  if (e.end > data_bytes)
    bad(path, who + " data_offsets " + json_excerpt(off) + " run past the end of the data section (" +
                  std::to_string(data_bytes) + " bytes)");
  if (e.end - e.begin != nbytes)
    bad(path, who + " is " + e.dtype + shape_str(e.shape) + ", which needs " + std::to_string(nbytes) +
                  " bytes, but data_offsets " + json_excerpt(off) + " hold " + std::to_string(e.end - e.begin));
  return e;
}

// Sorted by offset, the tensors must cover [0, data_bytes) exactly once.
void check_tiling(const std::string& path, const std::map<std::string, SafetensorsFile::Entry>& entries,
                  uint64_t data_bytes) {
  std::vector<std::pair<const std::string*, const SafetensorsFile::Entry*>> order;
  for (const auto& [name, e] : entries) order.push_back({&name, &e});
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second->begin, a.second->end) < std::tie(b.second->begin, b.second->end);
  });
  uint64_t covered = 0;
  const std::string* prev = nullptr;
  for (const auto& [name, e] : order) {
    if (e->begin < covered)
      bad(path, "tensors '" + text_excerpt(*prev) + "' and '" + text_excerpt(*name) + "' overlap (tensor '" +
                    text_excerpt(*name) + "' at " +
                    range_str(e->begin, e->end) + " starts before byte " + std::to_string(covered) + ")");
    if (e->begin > covered)
      bad(path, "bytes " + range_str(covered, e->begin) + " of the data section belong to no tensor" +
                    (prev ? " (between '" + text_excerpt(*prev) + "' and '" + text_excerpt(*name) + "')"
                         : " (before '" + text_excerpt(*name) + "')"));
    covered = e->end;
    prev = name;
  }
  if (covered != data_bytes)
    bad(path, "the data section has " + std::to_string(data_bytes) + " bytes but the tensors cover only " +
                  std::to_string(covered) + " (trailing bytes)");
}

}  // namespace

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr) ::munmap(addr, size);
  }
};

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    throw Error("cannot open safetensors file " + path + ": " + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    bad(path, "not a regular file");
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < 8) {
    ::close(fd);
    bad(path, "file is " + std::to_string(file_bytes) + " bytes, too short for the 8-byte header length");
  }
  auto mapping = std::make_shared<Mapping>();
  void* addr = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);
  if (addr == MAP_FAILED) bad(path, std::string("cannot map the file: ") + std::strerror(map_err));
  mapping->addr = addr;
  mapping->size = file_bytes;
  const auto* bytes = static_cast<const unsigned char*>(addr);

  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes, 8);
  if (header_bytes > kMaxHeaderBytes)
    bad(path, "header length " + std::to_string(header_bytes) + " is absurd (limit " +
                  std::to_string(kMaxHeaderBytes) + ")");
  if (8 + header_bytes > file_bytes)
    bad(path, "header length " + std::to_string(header_bytes) + " runs past the end of the file (" +
                  std::to_string(file_bytes) + " bytes)");
  const uint64_t data_bytes = file_bytes - 8 - header_bytes;

  // parse_json_input refuses deep nesting and a key named twice (which would silently shadow).
  const nlohmann::json header = parse_json_input(
      std::string_view(reinterpret_cast<const char*>(bytes + 8), header_bytes), "safetensors file " + path + ": header",
      kMaxHeaderBytes);
  if (!header.is_object()) bad(path, "header is not a JSON object");

  SafetensorsFile f;
  f.path_ = path;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) bad(path, "__metadata__ is not a JSON object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string())
          bad(path, "__metadata__ value of '" + text_excerpt(k) + "' is not a string (" + json_excerpt(v) + ")");
        f.metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    f.entries_[name] = parse_entry(path, name, value, data_bytes);
  }
  check_tiling(path, f.entries_, data_bytes);
  f.data_ = bytes + 8 + header_bytes;
  f.mapping_ = std::move(mapping);
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw Error("safetensors file " + path_ + " has no tensor named '" + name + "'");
  return it->second;
}

Shape SafetensorsFile::shape(const std::string& name) const { return entry(name).shape; }
std::string SafetensorsFile::dtype(const std::string& name) const { return entry(name).dtype; }

const unsigned char* SafetensorsFile::raw_bytes(const std::string& name, size_t* nbytes) const {
  const Entry& e = entry(name);
  if (nbytes) *nbytes = e.end - e.begin;
  return data_ + e.begin;
}

Tensor SafetensorsFile::get(const std::string& name, DType want) const {
  const Entry& e = entry(name);
  DType native = native_dtype(e.dtype);
  if (is_float(native) && !is_float(want))
    throw Error("safetensors file " + path_ + ": tensor '" + name + "' is " + e.dtype +
                " and cannot be loaded as " + dtype_name(want));
  const unsigned char* src = data_ + e.begin;
  Tensor t = Tensor::empty(e.shape, native);
  if (e.dtype == "F16") {
    float* dst = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = f16_to_float(h);
    }
  } else if (e.end > e.begin) {
    std::memcpy(t.raw(), src, e.end - e.begin);
  }
  return t.to(want);
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    // Zero or subnormal: mantissa · 2^-24, exact in f32.
    float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf or NaN (payload kept)
  } else {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);  // rebias 15 → 127
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t exponent = (x >> 23) & 0xffu;
  uint32_t mantissa = x & 0x7fffffu;
  if (exponent == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mantissa ? 0x200u | (mantissa >> 13) : 0));
  const int e = static_cast<int>(exponent) - 127 + 15;  // the half's biased exponent
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);  // beyond the largest half: infinity
  uint32_t half, rest, halfway;
  if (e <= 0) {  // a half subnormal (or zero): (1.mantissa · 2^23) >> (14 − e) units of 2^-24
    if (e < -10) return static_cast<uint16_t>(sign);
    mantissa |= 0x800000u;
    const int shift = 14 - e;
    half = mantissa >> shift;
    rest = mantissa & ((1u << shift) - 1);
    halfway = 1u << (shift - 1);
  } else {
    half = (static_cast<uint32_t>(e) << 10) | (mantissa >> 13);
    rest = mantissa & 0x1fffu;
    halfway = 0x1000u;
  }
  if (rest > halfway || (rest == halfway && (half & 1u))) ++half;  // to nearest even; a carry rounds up the exponent
  return static_cast<uint16_t>(sign | half);
}

namespace {

// The writer behind save_safetensors and save_safetensors_f16.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata, bool f32_as_f16) {
  struct Item {
    std::string name;
    Tensor host;
    const StoredType* type;
    std::vector<uint16_t> half;  // the F16 encoding of an f32 tensor stored as F16
    size_t nbytes() const { return type->size * static_cast<size_t>(host.numel()); }
    const void* bytes() const { return half.empty() ? host.raw() : static_cast<const void*>(half.data()); }
  };
  std::vector<Item> items;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    const std::string who = "cannot write safetensors file " + path + ": tensor '" + name + "'";
    if (name == "__metadata__") throw Error(who + " uses the reserved name __metadata__");
    if (!seen.insert(name).second) throw Error(who + " appears twice");
    if (!t.defined()) throw Error(who + " is undefined");
    Item item{name, t.detach().to(Device::cpu), &stored_for(t.dtype()), {}};
    if (f32_as_f16 && t.dtype() == DType::f32) {
      item.type = find_stored("F16");
      const float* src = item.host.data<float>();
      item.half.resize(static_cast<size_t>(item.host.numel()));
      for (size_t i = 0; i < item.half.size(); ++i) {
        item.half[i] = float_to_f16(src[i]);
        if ((item.half[i] & 0x7c00u) == 0x7c00u && std::isfinite(src[i]))
          throw Error(who + " holds " + std::to_string(src[i]) + ", beyond the F16 range (±65504)");
      }
    }
    items.push_back(std::move(item));
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.type->rank != b.type->rank ? a.type->rank > b.type->rank : a.name < b.name;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const Item& it : items) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = it.type->name;
    entry["shape"] = it.host.shape();
    entry["data_offsets"] = {offset, offset + it.nbytes()};
    header[it.name] = entry;
    offset += it.nbytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a name that is not valid UTF-8
    throw Error("cannot write safetensors file " + path + ": " + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // so the data section starts 8-byte aligned

  AtomicFile out(path);
  uint64_t header_bytes = text.size();
  out.write(&header_bytes, 8);
  out.write(text);
  for (const Item& it : items)
    if (it.nbytes()) out.write(it.bytes(), it.nbytes());
  out.commit();
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_safetensors(path, tensors, metadata, /*f32_as_f16=*/false);
}

void save_safetensors_f16(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                          const std::map<std::string, std::string>& metadata) {
  write_safetensors(path, tensors, metadata, /*f32_as_f16=*/true);
}

}  // namespace diffuse
