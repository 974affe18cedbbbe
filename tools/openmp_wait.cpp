// See openmp_wait.h.
#include "tools/openmp_wait.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace diffuse::cli {

void default_to_passive_openmp_waits(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (::setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  ::execv("/proc/self/exe", argv);  // returns only on failure
  std::fprintf(stderr, "diffuse: could not restart with OMP_WAIT_POLICY=passive (%s); idle threads may spin\n",
               std::strerror(errno));
}

}  // namespace diffuse::cli
