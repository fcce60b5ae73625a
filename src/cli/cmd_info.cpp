// llmprune info MODEL: architecture, per-layer sizes, parameter counts by role, dtype, size on disk.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/fs.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace llmprune::cli {
namespace {

struct InfoArgs {
  std::string model;
  bool json = false;
};

void run_info(const InfoArgs& a) {
  Model m = Model::load(a.model);
  ParamCounts p = count_params(m);
  uintmax_t disk = 0;
  for (auto& f : m.files) disk += std::filesystem::file_size(f);
  std::string tok_kind = "none";
  int tok_vocab = 0;
  try {
    auto tok = load_model_tokenizer(a.model);
    tok_kind = tok->kind();
    tok_vocab = tok->vocab_size();
  } catch (const std::exception& e) {
    tok_kind = std::string("unavailable (") + e.what() + ")";
  }
  // The projections carrying a bias (layer 0; biases are all-or-nothing per role).
  std::vector<std::string> biases;
  for (int r = 0; r < kNumLayerRoles; r++) {
    const RoleDesc& d = role_desc(*m.arch, Role(r));
    if (d.is_bias && !m.layers[0].w[size_t(r)].empty()) biases.push_back(role_desc(*m.arch, d.bias_of).name);
  }
  // The eps's name follows the family's norm (ChatGLM-6B v1: LayerNorm), not LLaMA's key.
  const char* eps_label = m.arch->norm == NormKind::LayerNorm ? "layer_norm_eps" : "rms_norm_eps";
  if (a.json) {
    nlohmann::json j;
    j["biases"] = biases;
    j["model"] = a.model;
    j["model_type"] = m.cfg.model_type;
    j["hidden_size"] = m.cfg.hidden;
    j["num_layers"] = m.cfg.n_layer;
    j["vocab_size"] = m.cfg.vocab;
    j["head_dim"] = m.cfg.head_dim;
    j["tied_embeddings"] = m.cfg.tied;
    j["dtype"] = dtype_name(m.storage_dtype());
    j["uniform"] = m.cfg.uniform();
    j["rope_theta"] = m.cfg.rope_theta;
    j[eps_label] = m.cfg.rms_eps;
    j["tokenizer"] = tok_kind;
    j["size_on_disk"] = disk;
    j["params"] = {{"total", p.total}, {"embed", p.embed}, {"lm_head", p.lm_head}, {"attention", p.attention}, {"mlp", p.mlp}, {"norms", p.norms}};
    for (auto& l : m.cfg.layers)
      j["layers"].push_back({{"heads", l.n_head}, {"kv_heads", l.n_kv_head}, {"mlp", l.d_ff}});
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("model        %s\n", a.model.c_str());
  std::printf("architecture %s (%s), %d layers, hidden %d, head_dim %d, vocab %d\n", m.arch->family.c_str(),
              m.cfg.model_type.c_str(), m.cfg.n_layer, m.cfg.hidden, m.cfg.head_dim, m.cfg.vocab);
  std::printf("attention    %s; rope_theta %g%s; %s %g; %s embeddings\n",
              m.cfg.layers[0].n_kv_head == m.cfg.layers[0].n_head ? "MHA" : "GQA", m.cfg.rope_theta,
              m.cfg.rope_scaling.type.empty() ? "" : (" (" + m.cfg.rope_scaling.type + " scaling)").c_str(), eps_label, m.cfg.rms_eps,
              m.cfg.tied ? "tied" : "untied");
  std::string bias_list;
  for (auto& b : biases) bias_list += (bias_list.empty() ? "" : ", ") + b;
  std::printf("biases       %s\n", biases.empty() ? "none" : bias_list.c_str());
  std::printf("dtype        %s; size on disk %s in %zu file(s)\n", dtype_name(m.storage_dtype()).c_str(),
              human_bytes(double(disk)).c_str(), m.files.size());
  std::printf("tokenizer    %s (%d pieces)\n", tok_kind.c_str(), tok_vocab);
  std::printf("\nparameters   %s total (%lld)\n", format_count(double(p.total)).c_str(), (long long)p.total);
  auto row = [&](const char* name, int64_t n) {
    std::printf("  %-10s %10s  %5.1f%%\n", name, format_count(double(n)).c_str(), 100.0 * double(n) / double(p.total));
  };
  row("embed", p.embed);
  if (!m.cfg.tied) row("lm_head", p.lm_head);
  row("attention", p.attention);
  row("mlp", p.mlp);
  row("norms", p.norms);
  std::printf("\n layer  heads  kv_heads  mlp_width\n");
  for (size_t l = 0; l < m.cfg.layers.size(); l++) {
    auto& lc = m.cfg.layers[l];
    std::printf(" %5zu  %5d  %8d  %9d\n", l, lc.n_head, lc.n_kv_head, lc.d_ff);
  }
  if (!m.cfg.uniform()) std::printf("(ragged: layers differ in size)\n");
}

void register_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Architecture, per-layer sizes, parameter counts, dtype and size on disk");
  auto a = std::make_shared<InfoArgs>();
  cmd->add_option("MODEL", a->model, "model directory (HF layout) or .gguf file")->required();
  cmd->add_flag("--json", a->json, "print JSON");
  cmd->callback([a] { run_info(*a); });
}

AutoRegister reg(register_info);

}  // namespace
}  // namespace llmprune::cli
