// `diffuse report RUN [RUN ...] --out FILE.html`: one page that compares training runs (engine/report.h):
// their curves overlaid, one colour per run, and the options that differ between them highlighted.
// The page links the runs' sample grids relative to FILE.html, so it opens offline from where it
// is written. Each run must have config.json and metrics.jsonl; a run still training is shown as
// it is now (the run's own RUN/report.html is the live one).
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>

#include "diffuse/error.h"
#include "engine/report.h"
#include "tools/commands.h"
#include "tools/option_flags.h"

namespace diffuse::cli {

int cmd_report(int argc, char** argv) {
  cxxopts::Options cli("diffuse report", "Write one HTML page comparing training runs: curves overlaid, differing options highlighted.");
  cli.positional_help("RUN [RUN ...] --out FILE.html");
  cli.add_options()
    ("runs", "run directories (each with config.json and metrics.jsonl)", cxxopts::value<std::vector<std::string>>())
    ("out", "the HTML file to write (replaced atomically)", cxxopts::value<std::string>());
  add_help_flags(cli, /*has_option_tables=*/false);
  cli.parse_positional({"runs"});
  auto args = parse_flags(cli, argc, argv);
  if (answer_help(args, cli, "")) return 0;
  if (!args.count("runs")) throw Error("RUN is required: diffuse report RUN [RUN ...] --out FILE.html", ErrorKind::usage);
  if (!args.count("out")) throw Error("--out is required: diffuse report RUN [RUN ...] --out FILE.html", ErrorKind::usage);
  const std::string out = args["out"].as<std::string>();
  // Refused before reading any run: a folder that is not there, or an --out that is a folder.
  const std::filesystem::path folder = std::filesystem::path(out).parent_path();
  std::error_code ec;
  if (!folder.empty() && !std::filesystem::is_directory(folder, ec))
    throw Error("--out " + out + ": " + folder.string() + " is not a folder", ErrorKind::bad_input);
  if (std::filesystem::is_directory(out, ec)) throw Error("--out " + out + ": is a folder, not a file", ErrorKind::bad_input);
  std::vector<ReportRun> runs;
  for (const std::string& dir : args["runs"].as<std::vector<std::string>>()) runs.push_back(load_report_run(dir));
  try {
    write_report(runs, out, /*live=*/false);
  } catch (const Error& e) {
    throw Error("--out " + out + ": " + e.what(), ErrorKind::bad_input);
  }
  std::cout << "report " << out << " (" << runs.size() << " run" << (runs.size() == 1 ? "" : "s") << ")\n";
  return 0;
}

}  // namespace diffuse::cli
