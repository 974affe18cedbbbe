// The one translation unit that compiles stb_image (decoding BMP for datasets and tests; PNG and
// JPEG go through libpng and libjpeg-turbo, engine/image_decode.h) and stb_image_write (PNG/BMP/JPEG
// output). Every other file includes the headers only. Only the BMP decoder is compiled in (a TGA,
// GIF, PSD, HDR, PIC or PNM file cannot be decoded at all, whatever its name), and stb_image
// allocates through the per-thread budget of engine/stb_budget.h so that no file can make it
// allocate more than its declared size needs.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "engine/stb_budget.h"

namespace diffuse::stb_budget {

namespace {

// The budget of the innermost open scope on this thread; limit 0 means no scope is open.
struct State {
  size_t limit = 0, held = 0;
  bool exceeded = false;
};
thread_local State state;

constexpr size_t kHeader = 16;  // keeps stb's blocks 16-byte aligned, like malloc's

size_t block_size(void* p) {
  size_t bytes;
  std::memcpy(&bytes, static_cast<char*>(p) - kHeader, sizeof bytes);
  return bytes;
}

bool admit(size_t add, size_t remove) {
  if (state.limit == 0) return true;
  const size_t after = state.held - std::min(state.held, remove);
  if (add > state.limit || after > state.limit - add) {
    state.exceeded = true;
    return false;
  }
  return true;
}

void account(size_t add, size_t remove) {
  if (state.limit == 0) return;
  state.held = state.held - std::min(state.held, remove) + add;
}

}  // namespace

Scope::Scope(size_t bytes) { state = State{bytes == 0 ? 1 : bytes, 0, false}; }
Scope::~Scope() { state = State{}; }
bool Scope::exceeded() const { return state.exceeded; }

void* allocate(size_t bytes) {
  if (bytes > SIZE_MAX - kHeader || !admit(bytes, 0)) return nullptr;
  char* p = static_cast<char*>(std::malloc(bytes + kHeader));
  if (!p) return nullptr;
  std::memcpy(p, &bytes, sizeof bytes);
  account(bytes, 0);
  return p + kHeader;
}

void* reallocate(void* old, size_t bytes) {
  if (!old) return allocate(bytes);
  const size_t old_bytes = block_size(old);
  if (bytes > SIZE_MAX - kHeader || !admit(bytes, old_bytes)) return nullptr;
  char* p = static_cast<char*>(std::realloc(static_cast<char*>(old) - kHeader, bytes + kHeader));
  if (!p) return nullptr;
  std::memcpy(p, &bytes, sizeof bytes);
  account(bytes, old_bytes);
  return p + kHeader;
}

void release(void* p) {
  if (!p) return;
  account(0, block_size(p));
  std::free(static_cast<char*>(p) - kHeader);
}

}  // namespace diffuse::stb_budget

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"  // stbi__is_16_main with only the BMP decoder in
#define STBI_ONLY_BMP
#define STBI_MALLOC(bytes) diffuse::stb_budget::allocate(bytes)
#define STBI_REALLOC(p, bytes) diffuse::stb_budget::reallocate(p, bytes)
#define STBI_FREE(p) diffuse::stb_budget::release(p)
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG  // readable failure reasons, e.g. "Corrupt BMP"
#include "stb_image.h"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb_image_write.h"
#pragma GCC diagnostic pop
