// Helpers shared by the emulator's tests: the three thread orders and the text of the
// diffuse::Error a launch throws, with directories dropped from paths so that tests can look for
// "file.cpp:LINE" whatever the build's source directory is.
#pragma once
#include <string>

#include "diffuse/error.h"
#include "kernels/emulator/runtime.h"

namespace diffuse::test {

inline const emulator::ThreadOrder kAllOrders[] = {emulator::ThreadOrder::fwd, emulator::ThreadOrder::rev,
                                                   emulator::ThreadOrder::shuffle};

// "at /a/b/x.cpp:7 ..." -> "at x.cpp:7 ...".
inline std::string without_dirs(const std::string& message) {
  std::string out, word;
  for (char c : message + " ") {
    if (c != ' ') {
      word += c;
      continue;
    }
    size_t slash = word.rfind('/');
    out += (slash == std::string::npos ? word : word.substr(slash + 1)) + c;
    word.clear();
  }
  out.pop_back();
  return out;
}

// The message of the diffuse::Error that `launch` throws (directories dropped), or "" if none.
template <typename F>
std::string error_of(F&& launch) {
  try {
    launch();
  } catch (const Error& e) {
    return without_dirs(e.what());
  }
  return "";
}

}  // namespace diffuse::test
