// See op_checks.h.
#include "nn/op_checks.h"

namespace diffuse::ops::detail {

void fail(const char* op, const std::string& what) { throw Error(std::string(op) + ": " + what); }

void check_defined(const char* op, const Tensor& t, const char* name) {
  if (!t.defined()) fail(op, std::string(name) + " is undefined");
}

void check_same(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    if (t->device() != first->device() || t->dtype() != first->dtype())
      fail(op, "tensors disagree in dtype or device: " + first->describe() + " and " + t->describe());
  }
}

void check_float(const char* op, const Tensor& t) {
  bool ok = t.dtype() == DType::f32 || (t.device() == Device::cpu ? t.dtype() == DType::f64 : t.dtype() == DType::bf16);
  if (!ok) fail(op, "unsupported dtype for " + t.describe());
}

void check_rank(const char* op, const Tensor& t, int rank, const char* name) {
  if (t.ndim() != rank)
    fail(op, std::string(name) + " must have rank " + std::to_string(rank) + ", got " + t.describe());
}

}  // namespace diffuse::ops::detail
