// `--resume` keeps the run (issue 14, docs/design.md §9): the saved options come back, a kept option
// given with another value is refused naming it and both values (exit 2, before any work), and the
// options meant to change (steps, the intervals, the grid size) are applied, logged and saved.
// The merge itself is tested in-process; the CLI and the library each once end to end.
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "diffuse/diffuse.h"
#include "engine/options.h"
#include "nn/atomic_file.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

json saved_run() {
  TrainRequest r;
  r.out = "runs/x";
  r.lr = 1e-3;
  r.batch = 8;
  r.steps = 20;
  r.sample_every = 10;
  r.checkpoint_every = 5;
  return options::train_options_json(r);
}

options::GivenExplicitly only(std::vector<std::string> members) {
  return [members](const char* m) { return std::find(members.begin(), members.end(), m) != members.end(); };
}

json run_train_options(const std::string& run) { return json::parse(read_file(run + "/config.json"))["train"]; }

}  // namespace

TEST_CASE("a resumed request takes back every saved option not given", "[resume]") {
  TrainRequest given;
  given.out = "runs/x";
  given.resume = true;
  given.steps = 30;
  auto r = options::resume_train_request(given, saved_run(), "runs/x/config.json", options::Naming::flag,
                                         only({"out", "resume", "steps"}));
  CHECK(r.request.lr == 1e-3);
  CHECK(r.request.batch == 8);
  CHECK(r.request.sample_every == 10);
  CHECK(r.request.checkpoint_every == 5);
  CHECK(r.request.steps == 30);
  CHECK(r.request.resume);
  REQUIRE(r.changes.size() == 1);
  CHECK(r.changes[0] == "steps = 30 (the run had 20)");
}

TEST_CASE("a kept option given with another value is refused naming it and both values", "[resume]") {
  TrainRequest given;
  given.out = "runs/x";  // lr stays at its default 1e-4, typed explicitly on the command line
  try {
    options::resume_train_request(given, saved_run(), "runs/x/config.json", options::Naming::flag, only({"lr"}));
    FAIL("accepted a changed --lr");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::usage);
    CHECK_THAT(e.what(), Catch::Contains("--lr 0.0001 differs from the run's 0.001 (runs/x/config.json)"));
  }
  // The same value given again is fine.
  given.lr = 1e-3;
  CHECK_NOTHROW(
      options::resume_train_request(given, saved_run(), "runs/x/config.json", options::Naming::flag, only({"lr"})));
}

TEST_CASE("the library's rule: a field at its default is restored, another value is refused", "[resume]") {
  TrainRequest given;
  given.out = "runs/x";
  given.steps = 25;
  auto r = options::resume_train_request(given, saved_run(), "s", options::Naming::field, options::fields_set_in(given));
  CHECK(r.request.lr == 1e-3);
  CHECK(r.request.batch == 8);
  CHECK(r.request.steps == 25);
  // may-change fields are the call's own: sample_every 0 (its default) is applied and reported
  CHECK(r.request.sample_every == 0);
  CHECK(r.changes.size() == 3);  // steps, sample_every and checkpoint_every (both 0 now)
  given.batch = 4;
  CHECK_THROWS_WITH(
      options::resume_train_request(given, saved_run(), "s", options::Naming::field, options::fields_set_in(given)),
      Catch::Contains("TrainRequest::batch 4 differs from the run's 8"));
}

TEST_CASE("an older run's file without a key keeps the given value, a wrong type names the key", "[resume]") {
  json saved = saved_run();
  saved.erase("sample_count");
  TrainRequest given;
  given.sample_count = 4;
  auto r = options::resume_train_request(given, saved, "s", options::Naming::flag, only({}));
  CHECK(r.request.sample_count == 4);
  saved["batch"] = "eight";
  CHECK_THROWS_WITH(options::resume_train_request(given, saved, "s", options::Naming::flag, only({})),
                    Catch::Contains("\"batch\""));
}

TEST_CASE("diffuse train --resume keeps the run's settings and logs what it changes", "[resume][cli]") {
  TempDir dir;
  const std::string straight = dir.file("straight"), run = dir.file("run");
  auto first = [](const std::string& out, const std::string& steps) {
    return std::vector<std::string>{"train", "--data", "fashion-mnist", "--max-images", "32", "--config", "tiny",
                                    "--out", out, "--steps", steps, "--batch", "2", "--lr", "1e-3",
                                    "--checkpoint-every", "1", "--seed", "5"};
  };
  REQUIRE(run_cli(first(straight, "3")).exit_code == 0);
  auto r = run_cli(first(run, "2"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);

  // A kept option typed with another value (here the default): refused before any work, exit 2.
  auto refused = run_cli({"train", "--out", run, "--resume", "--steps", "3", "--lr", "1e-4"});
  INFO(refused.output);
  CHECK(refused.exit_code == 2);
  CHECK_THAT(refused.output, Catch::Contains("--lr 0.0001 differs from the run's 0.001"));
  CHECK_FALSE(fs::exists(run + "/checkpoints/step-3"));

  // Only --steps and --checkpoint-every given: everything else comes back from config.json, so the
  // result is the straight run's, bit for bit; the changes are logged and saved.
  auto resumed = run_cli({"train", "--out", run, "--resume", "--steps", "3", "--checkpoint-every", "3"});
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("resumed with steps = 3 (the run had 2)"));
  CHECK_THAT(resumed.output, Catch::Contains("resumed with checkpoint_every = 3 (the run had 1)"));
  const std::string weights = "/checkpoints/step-3/model/unet/diffusion_pytorch_model.safetensors";
  CHECK(read_file(straight + weights) == read_file(run + weights));
  const json saved = run_train_options(run);
  CHECK(saved["lr"] == 1e-3);
  CHECK(saved["batch"] == 2);
  CHECK(saved["steps"] == 3);
  CHECK(saved["checkpoint_every"] == 3);
}

TEST_CASE("diffuse::train with resume restores the saved options and reports a changed step count", "[resume]") {
  TempDir dir;
  TrainRequest req;
  req.out = dir.file("run");
  req.max_images = 32;
  req.batch = 2;
  req.lr = 1e-3;
  req.steps = 1;
  req.seed = 7;
  REQUIRE_NOTHROW(train(req));

  TrainRequest again;  // only out, resume and the new total
  again.out = req.out;
  again.resume = true;
  again.steps = 2;
  std::vector<std::string> events;
  train(again, [&](const TrainUpdate& u) {
    if (!u.event.empty()) events.push_back(u.event);
    return true;
  });
  CHECK(std::find(events.begin(), events.end(), "resumed with steps = 2 (the run had 1)") != events.end());
  const json saved = run_train_options(req.out);
  CHECK(saved["lr"] == 1e-3);
  CHECK(saved["batch"] == 2);
  CHECK(saved["max_images"] == 32);

  again.steps = 3;
  again.batch = 4;
  try {
    train(again);
    FAIL("accepted a changed batch");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::usage);
    CHECK_THAT(e.what(), Catch::Contains("TrainRequest::batch 4 differs from the run's 2"));
  }
}
