// Tensor: a shared handle to storage plus a shape and dtype — the currency of nn/.
// Contiguous only (docs/design.md §3): a view (reshape, a batch slice) shares storage and differs only
// in offset and shape. Activations are NHWC. Autograd state lives in an optional AutogradMeta;
// ops that record on the tape are in nn/ops.h, the tape itself in nn/autograd.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "diffuse/error.h"
#include "nn/allocator.h"
#include "nn/shape.h"

namespace diffuse {

enum class DType : uint8_t { f32, bf16, f64, i32, i64 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// Owns one allocation; returns it to its allocator when the last tensor using it goes away. Made
// with make_storage (nn/object_pool.h blocks for the shared_ptr), like AutogradMeta with make_meta.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Allocator* allocator = nullptr;
  Storage(size_t nbytes, Allocator* alloc);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct AutogradMeta;
std::shared_ptr<AutogradMeta> make_meta();

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32,
                     Device device = Device::cpu);
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu) {
    return full(shape, 1.0, dtype, device);
  }
  // Host tensor from values (converted to dtype).
  static Tensor from(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f32);
  // Host tensor of normals / uniforms from the Philox generator (seed, stream, block offset).
  static Tensor randn(const Shape& shape, uint64_t seed, uint32_t stream = 0, uint64_t offset = 0,
                      DType dtype = DType::f32);
  static Tensor rand(const Shape& shape, uint64_t seed, uint32_t stream = 0, uint64_t offset = 0,
                     DType dtype = DType::f32);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  std::string describe() const;  // "f32[2, 8, 8, 32] cpu"

  void* raw() const;
  template <typename T>
  T* data() const;  // checks T against dtype

  // Views sharing storage (no autograd; the differentiable reshape is ops::reshape).
  Tensor view(const Shape& shape) const;
  Tensor slice0(int64_t begin, int64_t end) const;  // rows [begin, end) of dim 0

  // Copies.
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;  // host conversion
  void copy_from(const Tensor& src);  // same shape, any device pair, same dtype
  void fill(double value);
  std::vector<double> to_vector() const;  // host copy as doubles (any device)
  double item() const;                     // a one-element tensor's value

  // Autograd.
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on);
  Tensor grad() const;
  void set_grad(const Tensor& g);
  void zero_grad();
  Tensor detach() const;  // same storage, no autograd state
  void backward() const;  // scalar loss; see nn/autograd.h
  const std::shared_ptr<AutogradMeta>& meta() const { return meta_; }
  std::shared_ptr<AutogradMeta>& meta() { return meta_; }

  bool same_storage(const Tensor& o) const { return storage_ == o.storage_; }
  // Whether this handle is the only one on its storage (no other tensor, view, saved copy or grad
  // shares it): a write through it in place is then seen by nothing else.
  bool sole_user() const { return storage_ != nullptr && storage_.use_count() == 1; }

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_;
  DType dtype_ = DType::f32;
  std::shared_ptr<AutogradMeta> meta_;
};

template <typename T>
struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<uint16_t> { static constexpr DType value = DType::bf16; };

template <typename T>
T* Tensor::data() const {
  if (dtype_of<T>::value != dtype_)
    throw Error("tensor " + describe() + " accessed as " + dtype_name(dtype_of<T>::value));
  return static_cast<T*>(raw());
}

}  // namespace diffuse
