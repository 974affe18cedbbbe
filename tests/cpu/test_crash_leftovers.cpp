// Issue 13, class 6: what a killed or limited run leaves behind. Temporaries of dead processes
// are removed at the next start or resume and nothing else is touched; a write past the file-size
// limit (RLIMIT_FSIZE) fails with one error naming the file instead of SIGXFSZ killing the
// process, and the file that was there before is intact.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>

#include "engine/checkpoint.h"
#include "nn/atomic_file.h"
#include "nn/safetensors.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using Catch::Contains;
using test::slurp;
using test::TempDir;
using test::write_bytes;
namespace fs = std::filesystem;

namespace {

// The pid of a child that has exited and been reaped: a process that is certainly gone.
pid_t dead_pid() {
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  REQUIRE(pid > 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return pid;
}

void make_dir_with_file(const fs::path& dir) {
  fs::create_directories(dir / "model" / "unet");
  write_bytes((dir / "model" / "unet" / "config.json").string(), "{}");
}

}  // namespace

TEST_CASE("stale temporaries of dead processes are removed, live ones and other names are kept", "[crash]") {
  TempDir run;
  const fs::path ck = run.path() / "checkpoints";
  const std::string dead = std::to_string(dead_pid()), live = std::to_string(getpid());
  // A checkpoint half-written by a killed run, and one being written by a live process.
  make_dir_with_file(ck / ("step-5.tmp-" + dead));
  make_dir_with_file(ck / ("step-6.tmp-" + live));
  make_dir_with_file(ck / "step-4");
  write_bytes((ck / "step-4" / "state.json").string(), "{}");
  // Names that are not exactly a checkpoint temporary, or not a directory: never touched.
  for (const std::string& name : std::vector<std::string>{"step-7.tmp-x" + dead, "step-.tmp-" + dead, "stepX-8.tmp-" + dead, "step-9.old-" + dead,
                                  "step-10.tmp-" + dead + "-0", "notes"})
    make_dir_with_file(ck / name);
  write_bytes((ck / ("step-11.tmp-" + dead)).string(), "a file, not a directory");
  fs::create_directory_symlink(ck / "step-4", ck / ("step-12.tmp-" + dead));
  // AtomicFile temporaries in the run directory and samples/: <name>.tmp-<pid>-<n>.
  fs::create_directories(run.path() / "samples");
  write_bytes(run.file("config.json.tmp-" + dead + "-0"), "{");
  write_bytes(run.file("config.json.tmp-" + live + "-1"), "{");
  write_bytes(run.file("metrics.jsonl.tmp-" + dead), "no counter: not ours");
  write_bytes(run.file(".tmp-" + dead + "-0"), "no name before .tmp");
  write_bytes((run.path() / "samples" / ("step-2.png.tmp-" + dead + "-3")).string(), "png");
  write_bytes((run.path() / "samples" / "step-2.png").string(), "png");

  std::vector<std::string> removed = remove_stale_temporaries(run.path().string());
  std::sort(removed.begin(), removed.end());
  CHECK(removed == std::vector<std::string>{run.file("checkpoints/step-5.tmp-" + dead),
                                            run.file("config.json.tmp-" + dead + "-0"),
                                            run.file("samples/step-2.png.tmp-" + dead + "-3")});
  CHECK_FALSE(fs::exists(ck / ("step-5.tmp-" + dead)));
  for (const std::string& name : std::vector<std::string>{"step-6.tmp-" + live, "step-4", "step-7.tmp-x" + dead, "step-.tmp-" + dead,
                                  "stepX-8.tmp-" + dead, "step-9.old-" + dead, "step-10.tmp-" + dead + "-0", "notes",
                                  "step-11.tmp-" + dead, "step-12.tmp-" + dead})
    CHECK(fs::exists(fs::symlink_status(ck / name)));
  CHECK(fs::exists(ck / "step-4" / "model" / "unet" / "config.json"));  // not through the symlink either
  CHECK(fs::exists(run.file("config.json.tmp-" + live + "-1")));
  CHECK(fs::exists(run.file("metrics.jsonl.tmp-" + dead)));
  CHECK(fs::exists(run.file(".tmp-" + dead + "-0")));
  CHECK(fs::exists(run.path() / "samples" / "step-2.png"));
  CHECK(find_latest_checkpoint(run.path().string()) == (ck / "step-4").string());
  // Nothing left to remove the second time; a run directory without checkpoints is fine.
  CHECK(remove_stale_temporaries(run.path().string()).empty());
  CHECK(remove_stale_temporaries(run.file("no-such-run")).empty());
}

TEST_CASE("find_latest_checkpoint ignores a step number too large for an integer", "[crash]") {
  TempDir run;
  const fs::path ck = run.path() / "checkpoints";
  for (const char* name : {"step-3", "step-99999999999999999999999"}) {
    fs::create_directories(ck / name);
    write_bytes((ck / name / "state.json").string(), "{}");
  }
  CHECK(find_latest_checkpoint(run.path().string()) == (ck / "step-3").string());
}

// Run by the next case in a child limited to 64 KiB files: with SIGXFSZ at its default action the
// child would die of the signal (exit 128 + 25) instead of reaching the checks.
TEST_CASE("crash child: writes past the file-size limit fail with one error naming the file", "[.crash-child-fsize]") {
  const char* env = std::getenv("CRASH_DIR");
  REQUIRE(env != nullptr);  // a child: never a silent pass
  const std::string dir = env;
  const rlimit cap{64 << 10, 64 << 10};
  REQUIRE(setrlimit(RLIMIT_FSIZE, &cap) == 0);
  const std::string p = dir + "/state.json";
  CHECK_THROWS_WITH(write_file_atomic(p, std::string(1 << 20, 'x')),
                    Contains("cannot write " + p) && Contains("File too large") && Contains("ulimit -f, is 65536 bytes"));
  CHECK(slurp(p) == "{\"step\": 1}");
  const std::string st = dir + "/weights.safetensors";
  CHECK_THROWS_WITH(save_safetensors(st, {{"w", Tensor::zeros({64, 1024})}}), Contains(st) && Contains("File too large"));
  CHECK(slurp(st) == "old weights");
  // A small write still works under the limit.
  write_file_atomic(dir + "/small.json", "{}");
  CHECK(slurp(dir + "/small.json") == "{}");
}

TEST_CASE("a write past RLIMIT_FSIZE is an error naming the file, and the old file is intact", "[crash]") {
  TempDir dir;
  write_bytes(dir.file("state.json"), "{\"step\": 1}");
  write_bytes(dir.file("weights.safetensors"), "old weights");
  const test::RunResult r =
      test::run_self("crash child: writes past the file-size limit fail with one error naming the file", {{"CRASH_DIR", dir.path().string()}});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Contains("All tests passed") && Contains("1 test case"));
  // No temporaries left behind by the failed writes.
  CHECK(dir.entries() == std::vector<std::string>{"small.json", "state.json", "weights.safetensors"});
}

TEST_CASE("train removes a killed run's checkpoint temporary at resume and checks state.json's numbers", "[crash][train]") {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
    WARN("dataset-fashion-mnist is not installed: skipping");
    return;
  }
  TempDir dir;
  const std::string run = dir.file("run");
  const std::vector<std::string> args{"train", "--data", "fashion-mnist", "--max-images", "8", "--config", "tiny", "--out",
                                      run, "--steps", "1", "--batch", "2", "--seed", "3"};
  const test::RunResult first = test::run_cli(args);
  REQUIRE(first.exit_code == 0);
  // What a run killed while writing step 2 leaves, and a live writer's temporary.
  const std::string dead = std::to_string(dead_pid()), live = std::to_string(getpid());
  const fs::path ck = fs::path(run) / "checkpoints";
  make_dir_with_file(ck / ("step-2.tmp-" + dead));
  make_dir_with_file(ck / ("step-2.tmp-" + live));
  std::vector<std::string> resume = args;
  resume[10] = "2";
  resume.push_back("--resume");
  const test::RunResult again = test::run_cli(resume);
  INFO(again.output);
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.output, Contains("removed " + (ck / ("step-2.tmp-" + dead)).string()));
  CHECK_FALSE(fs::exists(ck / ("step-2.tmp-" + dead)));
  CHECK(fs::exists(ck / ("step-2.tmp-" + live)));
  CHECK(fs::exists(ck / "step-2" / "state.json"));

  // state.json's integers are range-checked, and its nesting bounded, before any weights load.
  const std::string state = (ck / "step-2" / "state.json").string();
  const std::string good = slurp(state);
  resume[10] = "3";
  write_bytes(state, "{\"step\": 1e300, \"batch_epoch\": 0, \"batch_index\": 0, \"dropout_offset\": 0, "
                     "\"ema_optimization_step\": 2, \"adam_step_count\": 2}");
  test::RunResult bad = test::run_cli(resume);
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains(state) && Contains("step") && Contains("is not an integer"));
  write_bytes(state, std::string(100000, '[') + std::string(100000, ']'));
  bad = test::run_cli(resume);
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains(state) && Contains("deeper"));
  write_bytes(state, good);
  CHECK(test::run_cli(resume).exit_code == 0);
}
