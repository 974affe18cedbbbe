// DIFFUSE_LAUNCH in the emulated-device build (-DDIFFUSE_CUDA=EMULATED; kernels/compat.cuh's third
// mode): the launch is checked and queued on its stream as a real launch is, and the grid runs
// under the SIMT emulator only when the host synchronises with that stream. What a real launch
// reports at once is reported here at once, as a diffuse::Error naming the launch site: a bad
// block, grid or shared-memory size (the same messages as run_grid), an unknown stream, a device
// that has already failed, and (stricter than CUDA, which would only fault inside the kernel) a
// pointer argument that is neither null nor device memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "diffuse/error.h"
#include "kernels/emulated_device/kernel_queue.h"
#include "kernels/emulator/runtime.h"

namespace diffuse::emulator {

namespace detail {

// "kernel (foo_kernel<float, 4>)" as the macro stringises a parenthesised template: drop the
// parentheses so reports name the kernel as written.
inline std::string kernel_display_name(const char* stringised) {
  std::string n = stringised;
  if (n.size() >= 2 && n.front() == '(' && n.back() == ')') n = n.substr(1, n.size() - 2);
  return n;
}

// Throws unless every pointer-typed parameter in `params` is null or points into device memory.
// Pointers inside struct parameters (e.g. optim's tensor tables) cannot be seen here; the kernel
// itself faults on them if they are host addresses outside every allocation.
template <typename Tuple, size_t... I>
void check_pointer_params(const std::string& kernel, const char* file, int line, const Tuple& params,
                          std::index_sequence<I...>) {
  auto check_one = [&](size_t index, const auto& value) {
    using T = std::decay_t<decltype(value)>;
    if constexpr (std::is_pointer_v<T>) {
      const void* p = static_cast<const void*>(value);
      if (p && !::diffuse::emulated_device::is_device_pointer(p)) {
        char addr[32];
        std::snprintf(addr, sizeof(addr), "%p", p);
        throw Error("DIFFUSE_LAUNCH at " + std::string(file) + ":" + std::to_string(line) + ": kernel " + kernel +
                    " argument " + std::to_string(index) + " is " + addr +
                    ", not device memory (a host pointer passed to a kernel)");
      }
    }
  };
  (check_one(I, std::get<I>(params)), ...);
}

}  // namespace detail

// Backs DIFFUSE_LAUNCH in the emulated-device build. `name` is the kernel as the macro wrote it.
// The arguments are converted to the kernel's parameter types now (as a CUDA launch copies them)
// and kept by value in the queued closure, so the caller's variables may change or die after
// the launch returns.
template <typename... P, typename... A>
void launch_on_device(const char* name, const char* file, int line, void (*kernel)(P...), dim3 grid, dim3 block,
                      size_t dynamic_smem_bytes, void* stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "DIFFUSE_LAUNCH: argument count differs from the kernel's");
  detail::check_launch(file, line, grid, block, dynamic_smem_bytes);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;  // launches nothing (compat.cuh)
  const std::string kernel_name = detail::kernel_display_name(name);
  emulated_device::prepare_dynamic_smem(reinterpret_cast<const void*>(kernel), dynamic_smem_bytes,
                                        kernel_name.c_str(), file, line);
  std::tuple<P...> params(std::forward<A>(args)...);
  detail::check_pointer_params(kernel_name, file, line, params, std::index_sequence_for<P...>{});

  struct Call {
    void (*kernel)(P...);
    std::tuple<P...> params;
    static void run(void* self) {
      Call* c = static_cast<Call*>(self);
      std::apply(c->kernel, c->params);
    }
  };
  emulated_device::enqueue_kernel(
      stream, kernel_name.c_str(), file, line,
      [call = Call{kernel, std::move(params)}, file, line, grid, block, dynamic_smem_bytes]() mutable {
        detail::run_grid(file, line, grid, block, dynamic_smem_bytes, &Call::run, &call);
      });
}

}  // namespace diffuse::emulator
