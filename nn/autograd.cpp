// The tape: record() appends, run_backward() replays newest-first and empties it.
#include "nn/autograd.h"

#include "nn/op_profile.h"
#include "nn/ops.h"

namespace diffuse {

namespace {
thread_local bool t_grad_enabled = true;
thread_local std::vector<Node> t_tape;

std::shared_ptr<AutogradMeta> meta_of(Tensor& t) {
  if (!t.meta()) t.meta() = make_meta();
  auto& m = t.meta();
  m->shape = t.shape();
  m->dtype = t.dtype();
  m->device = t.device();
  return m;
}

// Adds g into meta's grad: on the CPU in place when nothing else holds the grad's storage (a grad
// handed to two inputs, a view of it, a copy the caller kept: each is one more user, and then the
// sum goes to a new tensor, so nothing another holder sees ever changes). In place saves a buffer
// and the write to fresh memory; which case applies depends on the tape alone, so every step
// allocates alike. CUDA keeps the new tensor: its binary kernels declare a and out __restrict__.
void accumulate(AutogradMeta& m, const Tensor& g) {
  if (g.shape() != m.shape)
    throw Error("autograd: grad " + g.describe() + " for a tensor of shape " + shape_str(m.shape));
  if (!m.grad.defined()) {
    m.grad = g.detach();
  } else if (g.dtype() == DType::bf16) {
    // bf16 grads (CUDA attention, conv2d, linear) have no bf16 add kernel: sum in f32, round back,
    // on the grads' device (ops::cast: no host round trip, nothing that stops a graph capture).
    m.grad = ops::cast(ops::add(ops::cast(m.grad, DType::f32), ops::cast(g, DType::f32)), DType::bf16).detach();
  } else if (m.grad.sole_user() && m.grad.dtype() == g.dtype() && m.grad.device() == Device::cpu &&
             g.device() == Device::cpu) {
    ops::add_in_place(m.grad, g);
  } else {
    m.grad = ops::add(m.grad, g).detach();
  }
}
}  // namespace

bool grad_enabled() { return t_grad_enabled; }
NoGrad::NoGrad() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGrad::~NoGrad() { t_grad_enabled = previous_; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

void record(const char* name, std::initializer_list<const Tensor*> inputs, std::initializer_list<Tensor*> outputs,
            BackwardFn backward) {
  Node node;
  node.name = name;
  node.inputs.reserve(inputs.size());
  node.outputs.reserve(outputs.size());
  for (const Tensor* t : inputs)
    node.inputs.push_back(t && t->defined() && t->requires_grad() ? t->meta() : nullptr);
  for (Tensor* t : outputs) {
    auto m = meta_of(*t);
    m->requires_grad = true;
    m->is_leaf = false;
    node.outputs.push_back(m);
  }
  node.backward = std::move(backward);
  t_tape.push_back(std::move(node));
}

void run_backward(const Tensor& root, const Tensor& seed_grad, GradReadyHook* hook) {
  if (!root.requires_grad()) throw Error("backward(): the loss does not depend on anything that requires grad");
  NoGrad no_grad;
  const op_profile::BackwardScope profile_backward;  // the op profile names backward's calls
  accumulate(*root.meta(), seed_grad);
  std::vector<Node> tape;
  tape.swap(t_tape);  // handed back, emptied but with its capacity, once the replay is done
  if (hook) {  // how many nodes feed each leaf: its grad is final when the last of them has run
    for (Node& node : tape)
      for (auto& in : node.inputs)
        if (in && in->is_leaf) in->pending_uses = 0;
    for (Node& node : tape)
      for (auto& in : node.inputs)
        if (in && in->is_leaf) ++in->pending_uses;
  }
  for (auto it = tape.rbegin(); it != tape.rend(); ++it) {
    Node& node = *it;
    bool any = false;
    for (auto& o : node.outputs) any = any || o->grad.defined();
    if (any) {
      TensorList gouts;
      gouts.reserve(node.outputs.size());
      for (auto& o : node.outputs)
        gouts.push_back(o->grad.defined() ? o->grad : Tensor::zeros(o->shape, o->dtype, o->device));
      TensorList gins;
      {
        const op_profile::NodeScope profile_node(node.name);  // "<node> backward" in an op profile
        gins = node.backward(gouts);
      }
      if (gins.size() != node.inputs.size())
        throw Error(std::string("autograd: backward of ") + node.name + " returned the wrong number of grads");
      for (size_t i = 0; i < gins.size(); ++i)
        if (node.inputs[i] && node.inputs[i]->requires_grad && gins[i].defined()) accumulate(*node.inputs[i], gins[i]);
    }
    // Free what this node held: intermediate grads and saved tensors.
    for (auto& o : node.outputs)
      if (!o->is_leaf) o->grad = Tensor();
    if (hook)
      for (auto& in : node.inputs)
        if (in && in->is_leaf && --in->pending_uses == 0) hook->grad_ready(*in);
    node = Node();
  }
  tape.clear();
  t_tape.swap(tape);
}

void clear_tape() { t_tape.clear(); }
size_t tape_size() { return t_tape.size(); }

}  // namespace diffuse
