// llmprune generate MODEL --prompt "...": streams generated text to stdout.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cli/common.h"
#include "core/fs.h"
#include "core/error.h"
#include "model/generate.h"
#include "tokenizer/tokenizer.h"

namespace llmprune::cli {
namespace {

struct GenArgs {
  std::string model, prompt;
  int max_tokens = 64;
  float temperature = 0.0f, top_p = 1.0f;
  uint64_t seed = 0;
  bool no_bos = false, stats = false, specials = false;
};

void run_generate(const GenArgs& a) {
  if (a.max_tokens <= 0) throw UserError("--max-tokens must be positive");
  if (a.temperature < 0) throw UserError("--temperature must be >= 0");
  if (a.top_p <= 0 || a.top_p > 1) throw UserError("--top-p must be in (0, 1]");
  Model m = Model::load(a.model);
  auto tok = load_model_tokenizer(a.model);
  auto body = a.specials ? tok->encode_with_specials(a.prompt) : tok->encode(a.prompt);
  // BOS + prompt, or the family's framing (ChatGLM2/3: [gMASK] sop + prompt; v1: prompt + [gMASK] <sop>).
  std::vector<int32_t> ids = a.no_bos ? body : tok->prompt_ids(body);
  Runner r(m);
  GenerateOptions o;
  o.max_tokens = a.max_tokens;
  o.temperature = a.temperature;
  o.top_p = a.top_p;
  o.seed = a.seed;
  o.eos_id = tok->eos_id();
  StreamDecoder dec(*tok, ids);
  std::fputs(a.prompt.c_str(), stdout);
  std::fflush(stdout);
  auto t0 = std::chrono::steady_clock::now();
  auto out = generate(r, ids, o, [&](int32_t id) {
    if (id == tok->eos_id()) return;
    std::fputs(dec.push(id).c_str(), stdout);
    std::fflush(stdout);
  });
  std::fputs("\n", stdout);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (a.stats)
    std::fprintf(stderr, "%zu prompt tokens, %zu generated in %.2fs (%.1f tokens/s)\n", ids.size(), out.size(), secs,
                 double(out.size()) / secs);
}

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt (greedy at temperature 0)");
  auto a = std::make_shared<GenArgs>();
  cmd->add_option("MODEL", a->model, "model directory or .gguf file")->required();
  cmd->add_option("--prompt,-p", a->prompt, "prompt text")->required();
  cmd->add_option("--max-tokens,-n", a->max_tokens, "tokens to generate")->capture_default_str();
  cmd->add_option("--temperature,-t", a->temperature, "sampling temperature; 0 = greedy")->capture_default_str();
  cmd->add_option("--top-p", a->top_p, "nucleus sampling mass")->capture_default_str();
  cmd->add_option("--seed", a->seed, "random seed")->capture_default_str();
  cmd->add_flag("--no-bos", a->no_bos, "the prompt's tokens alone: no BOS, no family framing (ChatGLM: [gMASK] sop)");
  cmd->add_flag("--stats", a->stats, "print speed on stderr");
  cmd->add_flag("--specials", a->specials,
                "read the family's special tokens spelled in the prompt (ChatGLM3: <|user|>, <|assistant|>) as their ids");
  cmd->callback([a] { run_generate(*a); });
}

AutoRegister reg(register_generate);

}  // namespace
}  // namespace llmprune::cli
