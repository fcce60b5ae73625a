// llmprune: structural pruning of LLaMA-family models. Subcommands live in cli/cmd_*.cpp.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>

#include "cli/common.h"
#include "core/error.h"
#include "core/fs.h"
#include "model/gguf_model.h"

namespace llmprune::cli {

std::vector<Register>& registry() {
  static std::vector<Register> r;
  return r;
}

void add_compute_option(CLI::App* cmd, std::string& value) {
  cmd->add_option("--compute", value,
                  "fp32 | bf16: GEMMs of the forward/backward passes with bf16 inputs and fp32 sums (norms, softmax, "
                  "loss and gradient statistics stay fp32)")
      ->capture_default_str();
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    size_t a = cur.find_first_not_of(" \t"), b = cur.find_last_not_of(" \t");
    if (a != std::string::npos) out.push_back(cur.substr(a, b - a + 1));
    cur.clear();
  };
  for (char c : s) {
    if (c == ',') flush();
    else cur.push_back(c);
  }
  flush();
  return out;
}

std::string format_count(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 1e3) std::snprintf(buf, sizeof buf, "%.1fK", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

}  // namespace llmprune::cli

int main(int argc, char** argv) {
  using namespace llmprune;
  CLI::App app{"llmprune " LLMPRUNE_VERSION " - structural pruning of LLaMA-family models (LLM-Pruner and beyond)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("llmprune ") + LLMPRUNE_VERSION);
  for (auto reg : cli::registry()) reg(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "llmprune: error: %s (see --help)\n", e.what());
    return 2;
  } catch (const UserError& e) {
    std::fprintf(stderr, "llmprune: error: %s\n", e.what());
    return 2;
  } catch (const RuntimeError& e) {
    std::fprintf(stderr, "llmprune: error: %s\n", name_output_paths(e.what()).c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "llmprune: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llmprune: error: %s\n", name_output_paths(e.what()).c_str());
    return 1;
  }
  return 0;
}
