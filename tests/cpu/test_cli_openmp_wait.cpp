// The CLI's default OpenMP wait policy (tools/openmp_wait.h): with OMP_WAIT_POLICY unset the
// process restarts itself with passive waiting, and a value the user set is left alone.
// `diffuse info` reports the policy the running process has.
#include <catch2/catch.hpp>

#include "support/process.h"

using namespace diffuse::test;

TEST_CASE("cli: idle OpenMP threads wait passively unless OMP_WAIT_POLICY says otherwise", "[cli]") {
  RunResult unset = run({"/usr/bin/env", "-u", "OMP_WAIT_POLICY", DIFFUSE_CLI_PATH, "info"});
  INFO(unset.output);
  CHECK(unset.exit_code == 0);
  CHECK(unset.output.find("openmp wait policy: passive\n") != std::string::npos);

  RunResult chosen = run({DIFFUSE_CLI_PATH, "info"}, "", {{"OMP_WAIT_POLICY", "active"}});
  INFO(chosen.output);
  CHECK(chosen.exit_code == 0);
  CHECK(chosen.output.find("openmp wait policy: active\n") != std::string::npos);

  // The arguments survive the restart: a bad flag is still reported as such.
  RunResult bad = run({"/usr/bin/env", "-u", "OMP_WAIT_POLICY", DIFFUSE_CLI_PATH, "train", "--bogus"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.output.find("bogus") != std::string::npos);
}
