// `diffuse train`: trains a UNet on a dataset into a run directory through the public API
// (diffuse::train, include/diffuse/diffuse.h), with a live progress bar on a terminal and plain
// log lines when piped. Its flags are TrainRequest's option table (engine/options.h) plus the
// CLI's own --log-every. With --resume, the run's saved options come back and a flag that would
// change a kept one is refused before any work (engine/options.h resume_train_request). Ctrl-C
// stops after the current step (on CUDA, the next step whose status is read back: --status-every)
// and writes a checkpoint, so --resume can continue (exit code 130). Under `mpirun -np K` every
// rank runs this command and rank 0 alone prints (docs/distributed.md).
#include <csignal>
#include <cstdio>
#include <cxxopts.hpp>
#include <iostream>

#include "diffuse/diffuse.h"
#include "engine/options.h"
#include "engine/report.h"
#include "nn/collective.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/option_flags.h"
#include "tools/progress.h"

namespace diffuse::cli {

namespace {

volatile std::sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

// What only the command line has: the library reports every step to its callback.
struct TrainCliOptions {
  int64_t log_every = 10;
};

const options::Table<TrainCliOptions>& cli_table() {
  static const options::Table<TrainCliOptions> table{
      "TrainCliOptions",
      {{"log-every", DIFFUSE_OPTION_FIELD(TrainCliOptions, log_every), options::Saved::no,
        "log line interval when stdout is not a terminal (a live bar otherwise)", options::positive()}}};
  return table;
}

}  // namespace

int cmd_train(int argc, char** argv) {
  cxxopts::Options cli("diffuse train", "Train a diffusion UNet on a dataset.");
  add_flags(cli, options::train_table());
  add_flags(cli, cli_table());
  add_help_flags(cli);
  auto args = parse_flags(cli, argc, argv);
  if (answer_help(args, cli,
                  options::kMarkdownHeader + options::markdown_rows(options::train_table()) +
                      options::markdown_rows(cli_table())))
    return 0;
  TrainRequest request;
  TrainCliOptions own;
  read_flags(args, options::train_table(), request);
  read_flags(args, cli_table(), own);
  if (args.count("print-options")) {
    nlohmann::json values;
    add_values(options::train_table(), request, values);
    add_values(cli_table(), own, values);
    std::cout << values.dump(2) << "\n";
    return 0;
  }
  if (request.resume) {  // the run's saved options, with the flags given on this command line
    auto on_command_line = [&](const char* member) {
      for (const auto& o : options::train_table().rows)
        if (std::string(o.member) == member) return args.count(o.flag) > 0;
      return false;
    };
    // The library merges again (fields_set_in): it then finds only the may-change options
    // different, reports each as an event, and this command prints them.
    request = options::resume_train_request(request, options::saved_train_options(request.out),
                                            request.out + "/config.json", options::Naming::flag, on_command_line)
                  .request;
  }
  options::validate(request, options::Naming::flag);
  options::check_run_directory(request, options::Naming::flag);
  options::check(cli_table(), own, options::Naming::flag);

  // Under mpirun only rank 0 speaks (the library calls back on rank 0 alone): one progress display.
  const bool speaks = collective::world().rank() == 0;
  const std::string report = report_path(request.out);  // the run's live page (engine/report.h)
  bool report_announced = false;  // at the first update: a run refused before training starts has no page
  Progress progress("train", request.steps, stdout_is_terminal(), own.log_every);
  std::signal(SIGINT, on_sigint);
  TrainSummary r = train(request, [&](const TrainUpdate& p) {
    if (!report_announced) {
      std::printf("train: report %s (reloads itself while the run trains)\n", report.c_str());
      report_announced = true;
    }
    if (!p.event.empty()) {
      if (stdout_is_terminal()) std::printf("\n");
      std::printf("train step %lld: %s\n", static_cast<long long>(p.step), p.event.c_str());
      return true;
    }
    char fields[96];
    std::snprintf(fields, sizeof fields, "loss %.4f  lr %.2e  grad %.3f", p.loss, p.lr, p.grad_norm);
    progress.update(p.step, fields, p.images_per_second, p.seconds);
    return g_interrupted == 0;
  });
  std::signal(SIGINT, SIG_DFL);
  if (!speaks) return r.cancelled ? 130 : 0;
  progress.finish(std::string(r.cancelled ? "interrupted" : "finished") + " at step " + std::to_string(r.last_step) +
                  ", last loss " + std::to_string(r.final_loss) +
                  (r.checkpoint.empty() ? "" : ", checkpoint " + r.checkpoint));
  if (report_announced) std::printf("train: report %s\n", report.c_str());
  return r.cancelled ? 130 : 0;
}

}  // namespace diffuse::cli
