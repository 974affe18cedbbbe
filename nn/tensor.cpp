// Tensor construction, views, copies and conversions. Element-wise math lives in ops; this file
// only moves bytes and converts dtypes on the host.
#include "nn/tensor.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "kernels/bf16.h"
#include "kernels/philox.h"
#include "nn/autograd.h"
#include "nn/object_pool.h"

namespace diffuse {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f64: return "f64";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

[[noreturn]] void Shape::throw_rank_too_high() {
  throw Error("a shape has at most " + std::to_string(kMaxRank) + " dimensions");
}

std::shared_ptr<AutogradMeta> make_meta() { return std::allocate_shared<AutogradMeta>(PoolAllocator<AutogradMeta>()); }

Storage::Storage(size_t nbytes, Allocator* alloc) : bytes(nbytes), allocator(alloc) {
  data = allocator->allocate(nbytes);
}
Storage::~Storage() {
  if (data) allocator->deallocate(data, bytes);
}

namespace {

Allocator* allocator_for(Device d) { return d == Device::cpu ? &host_allocator() : device_allocator(); }

double read_host(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::bf16: return kernels::bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::f64: return static_cast<const double*>(p)[i];
    case DType::i32: return static_cast<const int32_t*>(p)[i];
    case DType::i64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
  }
  return 0;
}

void write_host(void* p, DType t, int64_t i, double v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = kernels::float_to_bf16(static_cast<float>(v)); break;
    case DType::f64: static_cast<double*>(p)[i] = v; break;
    case DType::i32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DType::i64: static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v); break;
  }
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    if (d < 0) throw Error("negative dimension in shape " + shape_str(shape));
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.storage_ = std::allocate_shared<Storage>(PoolAllocator<Storage>(), t.nbytes(), allocator_for(device));
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  if (value == 0.0 && !std::signbit(value) && device != Device::cpu) {  // zeros: a memset on the device
    Tensor t = empty(shape, dtype, device);
    t.fill(0.0);
    return t;
  }
  Tensor host = empty(shape, dtype, Device::cpu);
  host.fill(value);
  return device == Device::cpu ? host : host.to(device);
}

Tensor Tensor::from(const std::vector<double>& values, const Shape& shape, DType dtype) {
  if (static_cast<int64_t>(values.size()) != shape_numel(shape))
    throw Error("Tensor::from: " + std::to_string(values.size()) + " values for shape " + shape_str(shape));
  Tensor t = empty(shape, dtype);
  for (size_t i = 0; i < values.size(); ++i) write_host(t.raw(), dtype, static_cast<int64_t>(i), values[i]);
  return t;
}

Tensor Tensor::randn(const Shape& shape, uint64_t seed, uint32_t stream, uint64_t offset, DType dtype) {
  Tensor t = empty(shape, dtype);
  int64_t n = t.numel();
  float block[4];
  for (int64_t i = 0; i < n; ++i) {
    if (i % 4 == 0) philox::normals4(seed, stream, offset + static_cast<uint64_t>(i) / 4, block);
    write_host(t.raw(), dtype, i, block[i % 4]);
  }
  return t;
}

Tensor Tensor::rand(const Shape& shape, uint64_t seed, uint32_t stream, uint64_t offset, DType dtype) {
  Tensor t = empty(shape, dtype);
  int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i)
    write_host(t.raw(), dtype, i, philox::uniform_at(seed, stream, offset, static_cast<uint64_t>(i)));
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  int j = i < 0 ? i + n : i;
  if (j < 0 || j >= n) throw Error("dimension " + std::to_string(i) + " out of range for " + describe());
  return shape_[j];
}

Device Tensor::device() const { return storage_ ? storage_->allocator->device() : Device::cpu; }

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return std::string(dtype_name(dtype_)) + shape_str(shape_) + " " + device_name(device());
}

void* Tensor::raw() const {
  if (!storage_) throw Error("use of an undefined tensor");
  return static_cast<char*>(storage_->data) + offset_;
}

Tensor Tensor::view(const Shape& shape) const {
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) throw Error("view: more than one -1 in " + shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) s[infer] = known == 0 ? 0 : numel() / known;
  if (shape_numel(s) != numel())
    throw Error("view: cannot view " + describe() + " as " + shape_str(shape));
  Tensor t = detach();
  t.shape_ = s;
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  if (ndim() == 0 || begin < 0 || end > shape_[0] || begin > end)
    throw Error("slice0: rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " + describe());
  Tensor t = detach();
  int64_t row = shape_[0] ? numel() / shape_[0] : 0;
  t.offset_ += static_cast<size_t>(begin * row) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor t = empty(shape_, dtype_, d);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype_) return *this;
  Tensor src = device() == Device::cpu ? *this : to(Device::cpu);
  Tensor t = empty(shape_, dt);
  int64_t n = numel();
  for (int64_t i = 0; i < n; ++i) write_host(t.raw(), dt, i, read_host(src.raw(), dtype_, i));
  return device() == Device::cpu ? t : t.to(device());
}

void Tensor::copy_from(const Tensor& src) {
  if (src.shape_ != shape_ || src.dtype_ != dtype_)
    throw Error("copy_from: " + src.describe() + " into " + describe());
  Device sd = src.device(), dd = device();
  Allocator* a = (sd == Device::cuda || dd == Device::cuda) ? device_allocator() : &host_allocator();
  a->copy(raw(), dd, src.raw(), sd, nbytes());
}

void Tensor::fill(double value) {
  if (device() != Device::cpu && value == 0.0 && !std::signbit(value)) {  // zero bits: +0 in every dtype
    device_allocator()->zero(raw(), nbytes());
    return;
  }
  if (device() != Device::cpu) {
    copy_from(full(shape_, value, dtype_, Device::cpu));
    return;
  }
  int64_t n = numel();
  for (int64_t i = 0; i < n; ++i) write_host(raw(), dtype_, i, value);
}

std::vector<double> Tensor::to_vector() const {
  Tensor h = to(Device::cpu);
  std::vector<double> v(static_cast<size_t>(numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = read_host(h.raw(), dtype_, static_cast<int64_t>(i));
  return v;
}

double Tensor::item() const {
  if (numel() != 1) throw Error("item() of " + describe() + ", which is not one element");
  return read_host(to(Device::cpu).raw(), dtype_, 0);
}

bool Tensor::requires_grad() const { return meta_ && meta_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  if (on) {
    if (!meta_) meta_ = make_meta();
    meta_->requires_grad = true;
    meta_->shape = shape_;
    meta_->dtype = dtype_;
    meta_->device = device();
  } else if (meta_) {
    meta_->requires_grad = false;
  }
  return *this;
}

Tensor Tensor::grad() const { return meta_ ? meta_->grad : Tensor(); }

void Tensor::set_grad(const Tensor& g) {
  if (!meta_) set_requires_grad(true);
  meta_->grad = g;
}

void Tensor::zero_grad() {
  if (meta_) meta_->grad = Tensor();
}

Tensor Tensor::detach() const {
  Tensor t = *this;
  t.meta_.reset();
  return t;
}

void Tensor::backward() const {
  if (numel() != 1) throw Error("backward() needs a one-element loss, got " + describe());
  run_backward(*this, Tensor::ones(shape_, dtype_, device()));
}

}  // namespace diffuse
