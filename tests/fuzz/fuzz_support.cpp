// The scratch files and the error-message check behind fuzz_support.h.
#include "fuzz/fuzz_support.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace diffuse::fuzz {

namespace fs = std::filesystem;

namespace {

std::string make_scratch_dir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/diffuse-fuzz-XXXXXX";
  if (!mkdtemp(pattern.data())) {
    std::perror("diffuse fuzz: mkdtemp");
    std::abort();
  }
  return pattern;
}

}  // namespace

const std::string& scratch_dir() {
  // On the heap and never freed: the atexit handler runs after the destructors of statics built
  // before it was registered, so a static std::string would already be gone there.
  static const std::string* dir = [] {
    auto* d = new std::string(make_scratch_dir());
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(*dir, ec);
    });
    return d;
  }();
  return *dir;
}

std::string write_input(const std::string& relative, const uint8_t* data, size_t size) {
  fs::path path = fs::path(scratch_dir()) / relative;
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out.flush()) {
    std::fprintf(stderr, "diffuse fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path.string();
}

std::string fresh_dir(const std::string& relative) {
  fs::path path = fs::path(scratch_dir()) / relative;
  fs::remove_all(path);
  fs::create_directories(path);
  return path.string();
}

namespace {

// Length of the UTF-8 sequence starting at s[i] (1-4), or 0 when it is not well-formed
// (overlong forms, surrogates and code points above U+10FFFF included).
size_t utf8_sequence_length(const std::string& s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b = byte(i);
  if (b < 0x80) return 1;
  size_t n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC2 ? 2 : 0;
  if (n == 0 || b > 0xF4 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  unsigned char b1 = byte(i + 1);
  if (b == 0xE0 && b1 < 0xA0) return 0;  // overlong
  if (b == 0xED && b1 >= 0xA0) return 0;  // surrogate
  if (b == 0xF0 && b1 < 0x90) return 0;  // overlong
  if (b == 0xF4 && b1 >= 0x90) return 0;  // above U+10FFFF
  return n;
}

// Prints the message's first 300 bytes with control and non-ASCII bytes as \xNN, so that the log
// stays text whatever the message holds.
[[noreturn]] void bad_message(const char* why, const std::string& message) {
  std::fprintf(stderr, "diffuse fuzz: an error message %s (%zu bytes); its first 300 bytes:\n", why, message.size());
  for (size_t i = 0; i < message.size() && i < 300; ++i) {
    unsigned char ch = static_cast<unsigned char>(message[i]);
    if (ch >= 0x20 && ch < 0x7F) std::fputc(ch, stderr);
    else std::fprintf(stderr, "\\x%02X", ch);
  }
  std::fputc('\n', stderr);
  std::abort();
}

}  // namespace

void check_error_message(const Error& e) {
  std::string message = e.what();
  if (message.empty()) bad_message("is empty", message);
  if (message.size() > kMaxErrorBytes) bad_message("is longer than fuzz_support.h's kMaxErrorBytes", message);
  if (message.find('\n') != std::string::npos) bad_message("spans several lines", message);
  for (size_t i = 0; i < message.size();) {
    size_t n = utf8_sequence_length(message, i);
    if (n == 0) bad_message("is not valid UTF-8", message);
    i += n;
  }
}

}  // namespace diffuse::fuzz
