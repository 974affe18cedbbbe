// diffuse::Error — the one exception type every layer throws for a failure a user can cause.
// This header is a leaf (standard library only) so that kernels/, nn/, engine/ and the public
// API all share the same type; embedding programs catch `diffuse::Error` and print what().
#pragma once
#include <stdexcept>
#include <string>

namespace diffuse {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace diffuse
