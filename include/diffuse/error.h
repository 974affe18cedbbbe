// diffuse::Error — the one exception type every layer throws for a failure a user can cause.
// This header is a leaf (standard library only) so that kernels/, nn/, engine/ and the public
// API all share the same type; embedding programs catch `diffuse::Error` and print what().
// Each error carries a kind, so a caller (the CLI's exit code, docs/cli.md) can tell a mistake in
// the request from a failure while running without reading the message.
#pragma once
#include <stdexcept>
#include <string>

namespace diffuse {

enum class ErrorKind : unsigned char {
  runtime,             // a failure while running: a NaN loss, out of memory, a CUDA error, ...
  bad_input,           // a file or directory the request names is missing, corrupt or unusable
  usage,               // a bad option value, a missing required option, an unknown flag
  device_unavailable,  // the device asked for (Device::cuda) is not there in this build or machine
};

class Error : public std::runtime_error {
 public:
  // `throw Error(message)` is a runtime failure; name another kind when the cause is known.
  explicit Error(const std::string& message, ErrorKind kind = ErrorKind::runtime)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace diffuse
