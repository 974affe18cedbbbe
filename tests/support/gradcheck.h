// Test helpers: compare tensors, and check an op's backward against central finite differences
// in f64 (docs/design.md §11). `check_gradients` perturbs every element of every input that needs grad.
#pragma once
#include <functional>
#include <vector>

#include "nn/tensor.h"

namespace diffuse::test {

// max |a-b| / max(1, |b|) over elements (a relative error that does not explode near zero).
double max_rel_error(const Tensor& a, const Tensor& b);
double max_abs_error(const Tensor& a, const Tensor& b);

// A scalar that depends on every element of y with distinct weights: sum(y * r), r ~ N(0,1) fixed
// by `seed`. Turns an op with a tensor output into a loss for gradient checks.
Tensor weighted_sum(const Tensor& y, uint64_t seed = 1234);

using ScalarFn = std::function<Tensor(const std::vector<Tensor>& inputs)>;

// For each input with requires_grad set, compares the analytic gradient of f with central
// differences (step eps). Fails the current Catch2 test (with input index, element and values)
// where |analytic - numeric| > tol * max(1, |numeric|).
void check_gradients(const ScalarFn& f, std::vector<Tensor> inputs, double eps = 1e-6, double tol = 1e-6);

// The same check for inputs too large to perturb element by element: for each input with
// requires_grad set, the analytic directional derivative Σ grad·u along a random direction u
// (N(0, 1), fixed by `seed`) against the central difference (f(x + eps·u) − f(x − eps·u)) / 2eps.
void check_directional_derivatives(const ScalarFn& f, std::vector<Tensor> inputs, uint64_t seed = 77,
                                   double eps = 1e-5, double tol = 1e-6);

}  // namespace diffuse::test
