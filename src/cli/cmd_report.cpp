// llmprune report RUN_DIR... --out report.html: one self-contained HTML page (inline SVG, no
// scripts, no network) showing what was pruned. Conventions in docs/report.md.
#include <cstdio>
#include <filesystem>

#include "cli/common.h"
#include "core/error.h"
#include "core/fs.h"
#include "report/report.h"

namespace llmprune::cli {
namespace {

struct ReportArgs {
  std::vector<std::string> runs;
  std::string out, title;
};

void run_report(const ReportArgs& a) {
  if (a.out.empty()) throw UserError("--out FILE is required");
  if (std::filesystem::is_directory(a.out)) throw UserError(a.out + ": is a directory (give the HTML file to write)");
  ReportOptions o;
  if (!a.title.empty()) o.title = a.title;
  size_t bytes = write_report(a.runs, a.out, o);
  std::printf("wrote %s (%zu run%s, %s)\n", a.out.c_str(), a.runs.size(), a.runs.size() == 1 ? "" : "s",
              human_bytes(double(bytes)).c_str());
}

void register_report(CLI::App& app) {
  auto* cmd = app.add_subcommand("report", "Self-contained HTML report (inline SVG charts) of one or more prune runs");
  auto a = std::make_shared<ReportArgs>();
  cmd->add_option("RUN_DIR", a->runs,
                  "prune --out directories (NAME=DIR labels a run); each holds pruning.json, importance.json, eval*.json")
      ->required();
  cmd->add_option("--out,-o", a->out, "HTML file to write (atomically)")->required();
  cmd->add_option("--title", a->title, "page title");
  cmd->callback([a] { run_report(*a); });
}

AutoRegister reg(register_report);

}  // namespace
}  // namespace llmprune::cli
