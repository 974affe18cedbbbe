// Argument checks shared by the op implementations: every failure is one diffuse::Error line that
// names the op and the offending tensors' dtype, shape and device.
#pragma once
#include <initializer_list>
#include <string>

#include "nn/tensor.h"

namespace diffuse::ops::detail {

[[noreturn]] void fail(const char* op, const std::string& what);
void check_defined(const char* op, const Tensor& t, const char* name);
// All defined tensors share the first one's device and (floating) dtype.
void check_same(const char* op, std::initializer_list<const Tensor*> ts);
void check_float(const char* op, const Tensor& t);  // f32 or f64 on the CPU; f32/bf16 on CUDA
void check_rank(const char* op, const Tensor& t, int rank, const char* name);

}  // namespace diffuse::ops::detail
