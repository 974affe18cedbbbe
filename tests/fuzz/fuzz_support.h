// Shared by the libFuzzer targets in tests/fuzz/ (docs/hardening.md): every target feeds the bytes
// libFuzzer gives it to one of diffuse's real entry points for untrusted files, through a real file
// on disk when the entry point takes a path. A diffuse::Error is the expected answer to a bad input;
// anything else — another exception, a crash, a sanitizer report, an allocation over libFuzzer's
// -malloc_limit_mb — escapes and is a finding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "diffuse/error.h"

namespace diffuse::fuzz {

// A directory private to this process (under $TMPDIR), created on first use, removed at exit.
const std::string& scratch_dir();

// Writes `size` bytes to scratch_dir()/relative (parent directories created), replacing whatever
// was there; returns the full path.
std::string write_input(const std::string& relative, const uint8_t* data, size_t size);

// Empties scratch_dir()/relative (a directory), creating it if needed; returns the full path.
std::string fresh_dir(const std::string& relative);

// What every error a user can see must be (issue 13): one line of at most kMaxErrorBytes of valid
// UTF-8. Aborts, printing the message, when it is not.
inline constexpr size_t kMaxErrorBytes = 4096;
void check_error_message(const Error& e);

// Runs body(); a diffuse::Error is the expected outcome of a bad input and only has its message
// checked, anything else propagates (an uncaught exception aborts: libFuzzer reports a crash).
template <class Body>
void expect_only_diffuse_errors(Body&& body) {
  try {
    body();
  } catch (const Error& e) {
    check_error_message(e);
  }
}

}  // namespace diffuse::fuzz
