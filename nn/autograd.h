// Reverse-mode autograd on a tape (docs/design.md §4). A differentiable op whose inputs need grad
// (and with grad mode on) pushes one Node: the metas of its inputs and outputs and a backward
// function holding what it saved. backward() walks the tape newest-first, accumulates grads into
// inputs, frees each node (and its saved tensors) as soon as it has run, and clears the tape.
// Only leaves (tensors the user marked requires_grad, e.g. parameters) keep .grad afterwards.
// Every block a node needs (its lists, its closure, the grads' list) comes from the object pool
// (nn/object_pool.h) and the tape keeps its capacity, so a steady-state step records and replays
// without touching the heap.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "nn/object_pool.h"
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
  // Nodes of the running backward that still have to pass a grad into this leaf (counted only
  // when run_backward has a GradReadyHook).
  int64_t pending_uses = 0;
};

using TensorList = std::vector<Tensor, PoolAllocator<Tensor>>;
using MetaList = std::vector<std::shared_ptr<AutogradMeta>, PoolAllocator<std::shared_ptr<AutogradMeta>>>;

// Receives the grads of the node's outputs (never undefined: missing ones are zeros) and returns
// one grad per input (undefined where the input needs none). A move-only std::function whose
// closure lives in a pool block.
class BackwardFn {
 public:
  BackwardFn() = default;
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, BackwardFn>>>
  BackwardFn(F&& f) {  // NOLINT: implicit, so record() takes a lambda as it is
    using Closure = std::decay_t<F>;
    static_assert(alignof(Closure) <= 16, "the object pool's blocks are 16-byte aligned");
    static constexpr Vtable vtable{
        [](void* c, const TensorList& g) { return (*static_cast<Closure*>(c))(g); },
        [](void* c) {
          static_cast<Closure*>(c)->~Closure();
          pool_deallocate(c, sizeof(Closure));
        }};
    void* block = pool_allocate(sizeof(Closure));
    new (block) Closure(std::forward<F>(f));
    closure_ = block;
    vtable_ = &vtable;
  }
  BackwardFn(BackwardFn&& o) noexcept : closure_(std::exchange(o.closure_, nullptr)), vtable_(o.vtable_) {}
  BackwardFn& operator=(BackwardFn&& o) noexcept {
    if (this != &o) {
      reset();
      closure_ = std::exchange(o.closure_, nullptr);
      vtable_ = o.vtable_;
    }
    return *this;
  }
  BackwardFn(const BackwardFn&) = delete;
  BackwardFn& operator=(const BackwardFn&) = delete;
  ~BackwardFn() { reset(); }

  TensorList operator()(const TensorList& grad_outputs) const { return vtable_->call(closure_, grad_outputs); }
  void reset() {
    if (closure_) vtable_->destroy(std::exchange(closure_, nullptr));
  }

 private:
  struct Vtable {
    TensorList (*call)(void* closure, const TensorList& grad_outputs);
    void (*destroy)(void* closure);
  };
  void* closure_ = nullptr;
  const Vtable* vtable_ = nullptr;
};

struct Node {
  const char* name = "";
  MetaList inputs;   // null entries: input needs no grad
  MetaList outputs;
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
void record(const char* name, std::initializer_list<const Tensor*> inputs, std::initializer_list<Tensor*> outputs,
            BackwardFn backward);

// Told, during run_backward, when a leaf's grad is final: right after the last node of the tape
// that feeds that leaf has run (a shared/tied leaf after its last contribution). The grad may be
// undefined (nothing flowed into it). Leaves the tape never reaches are not reported. Used by the
// data-parallel gradient all-reduce to start reducing while the rest of backward runs
// (nn/collective.h, GradientSync).
class GradReadyHook {
 public:
  virtual void grad_ready(AutogradMeta& leaf) = 0;

 protected:
  ~GradReadyHook() = default;
};

// Runs the tape backwards from `root` seeded with `seed_grad` (ones for a scalar loss).
void run_backward(const Tensor& root, const Tensor& seed_grad, GradReadyHook* hook = nullptr);

// Discards every recorded node (a forward whose backward will not run).
void clear_tape();
size_t tape_size();

}  // namespace diffuse
