// AddressSanitizer's fiber annotations for the interleaver's stack switches (docs/hardening.md).
// ASan keeps its own idea of which stack a thread runs on. When frames are left by an exception (a
// failing kernel thread, or Boost unwinding a suspended fiber) it clears their redzones only on the
// stack it knows; on a fiber's stack it would warn and leave them, and report false overflows when
// the next block reuses that stack. So every switch is announced: asan_*_switch before it, on the
// side being left, and asan_arrived_* after it, on the side arrived at. Without ASan all of this
// compiles to nothing.
#pragma once
#include <cstddef>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DIFFUSE_EMU_ASAN 1
#endif
#endif
#if !defined(DIFFUSE_EMU_ASAN) && defined(__SANITIZE_ADDRESS__)
#define DIFFUSE_EMU_ASAN 1
#endif
#ifdef DIFFUSE_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace diffuse::emulator::detail {

#ifdef DIFFUSE_EMU_ASAN
// The interleaver's stack (learned when a fiber first arrives from it) and its fake stack (ASan's
// frames for detect_stack_use_after_return) saved while a fiber runs. One grid runs at a time.
inline const void* g_asan_interleaver_bottom = nullptr;
inline size_t g_asan_interleaver_size = 0;
inline void* g_asan_interleaver_fake_stack = nullptr;

// On the interleaver, about to switch to the fiber whose stack is [bottom, bottom + size).
inline void asan_interleaver_switch(const void* bottom, size_t size) {
  __sanitizer_start_switch_fiber(&g_asan_interleaver_fake_stack, bottom, size);
}
// On the interleaver, back from a fiber.
inline void asan_arrived_on_interleaver() {
  __sanitizer_finish_switch_fiber(g_asan_interleaver_fake_stack, nullptr, nullptr);
}
// On a fiber, about to switch to the interleaver. `fake_stack_save` keeps the fiber's fake stack
// until it is resumed; nullptr when the fiber ends for good.
inline void asan_fiber_switch(void** fake_stack_save) {
  __sanitizer_start_switch_fiber(fake_stack_save, g_asan_interleaver_bottom, g_asan_interleaver_size);
}
// On a fiber, arrived from the interleaver (fake_stack: what asan_fiber_switch saved; nullptr at
// the fiber's start).
inline void asan_arrived_on_fiber(void* fake_stack) {
  __sanitizer_finish_switch_fiber(fake_stack, &g_asan_interleaver_bottom, &g_asan_interleaver_size);
}
// After a failed block: the unwound fibers' stacks are clean again before they are reused.
inline void asan_unpoison_stack(const void* bottom, size_t size) { __asan_unpoison_memory_region(bottom, size); }
#else
inline void asan_interleaver_switch(const void*, size_t) {}
inline void asan_arrived_on_interleaver() {}
inline void asan_fiber_switch(void**) {}
inline void asan_arrived_on_fiber(void*) {}
inline void asan_unpoison_stack(const void*, size_t) {}
#endif

}  // namespace diffuse::emulator::detail
