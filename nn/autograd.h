// Reverse-mode autograd on a tape (docs/design.md §4). A differentiable op whose inputs need grad
// (and with grad mode on) pushes one Node: the metas of its inputs and outputs and a backward
// function holding what it saved. backward() walks the tape newest-first, accumulates grads into
// inputs, frees each node (and its saved tensors) as soon as it has run, and clears the tape.
// Only leaves (tensors the user marked requires_grad, e.g. parameters) keep .grad afterwards.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "nn/tensor.h"

namespace diffuse {

struct AutogradMeta {
  bool requires_grad = false;
  bool is_leaf = true;
  Tensor grad;
  // Shape/dtype/device of the tensor, for a zero grad when an output received none.
  Shape shape;
  DType dtype = DType::f32;
  Device device = Device::cpu;
};

// Receives the grads of the node's outputs (never undefined: missing ones are zeros) and returns
// one grad per input (undefined where the input needs none).
using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

struct Node {
  const char* name = "";
  std::vector<std::shared_ptr<AutogradMeta>> inputs;   // null entries: input needs no grad
  std::vector<std::shared_ptr<AutogradMeta>> outputs;
  BackwardFn backward;
};

// Grad mode (thread-local). NoGrad turns recording off for its scope, e.g. while sampling.
bool grad_enabled();
class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and any defined input requires grad.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);

// Records a node: marks each output as a non-leaf requiring grad and pushes the node.
// Call only when any_requires_grad(...) was true.
void record(const char* name, const std::vector<const Tensor*>& inputs,
            const std::vector<Tensor*>& outputs, BackwardFn backward);

// Runs the tape backwards from `root` seeded with `seed_grad` (ones for a scalar loss).
void run_backward(const Tensor& root, const Tensor& seed_grad);

// Discards every recorded node (a forward whose backward will not run).
void clear_tape();
size_t tape_size();

}  // namespace diffuse
