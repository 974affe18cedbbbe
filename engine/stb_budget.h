// A per-thread memory budget for stb_image's decoders (docs/formats.md "Limits"). stb_image grows
// some buffers as the data asks (a PNG's inflated IDAT stream has no upper bound in stb), so a
// 1 MB file declaring a 1 x 1 image could still make it allocate gigabytes. engine/stb_impl.cpp
// routes stb_image's malloc/realloc/free through this budget; image_decode_bmp.cpp opens one scope
// per decode, sized from the header's width x height, and reports a decode that ran out of budget
// as a file that needs more memory than its declared size allows.
#pragma once
#include <cstddef>

namespace diffuse::stb_budget {

// While a Scope is alive on this thread, stb_image's allocations on this thread fail (return
// null, which stb reports as a decode failure) once more than `bytes` are held at a time.
class Scope {
 public:
  explicit Scope(size_t bytes);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
  bool exceeded() const;  // an allocation was refused in this scope
};

// The allocator stb_image is compiled with (engine/stb_impl.cpp); a size header precedes each block.
void* allocate(size_t bytes);
void* reallocate(void* p, size_t bytes);
void release(void* p);

}  // namespace diffuse::stb_budget
